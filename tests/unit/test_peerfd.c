// SPDX-License-Identifier: MIT
/*
 * hv/peerfd.c: an eventfd a peer shares with vcmad cannot block the daemon, whatever
 * the peer did to the shared file description. Each case sets the fd up as a hostile
 * peer would (O_NONBLOCK cleared, the counter full or empty) and checks that the
 * call returns, and what it says, well inside a second; a plain read(2) or write(2)
 * in any of them would sleep for ever.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "peerfd.h"

#define FULL 0xfffffffffffffffeull /* the largest value an eventfd holds */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* An eventfd as a hostile peer leaves it: blocking, holding `value`. */
static int hostile_fd(uint64_t value)
{
	int fd = eventfd(0, EFD_CLOEXEC); /* no EFD_NONBLOCK: the peer cleared it */

	assert_true(fd >= 0);
	if (value)
		assert_int_equal(write(fd, &value, sizeof(value)), sizeof(value));
	return fd;
}

static uint64_t counter(int fd)
{
	uint64_t v = 0;

	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	if (read(fd, &v, sizeof(v)) != sizeof(v))
		v = 0;
	return v;
}

static void drain_cases(void)
{
	uint64_t t0, cnt = 99;
	int fd = hostile_fd(0);

	/* empty and blocking: a plain read sleeps until the next kick; this returns */
	t0 = now_ms();
	assert_int_equal(vcmad_peerfd_drain(fd, &cnt), 0);
	assert_int_equal(cnt, 0);
	assert_true(now_ms() - t0 < 500);
	close(fd);
	/* kicks pending: read and cleared */
	fd = hostile_fd(5);
	assert_int_equal(vcmad_peerfd_drain(fd, &cnt), 0);
	assert_int_equal(cnt, 5);
	assert_int_equal(counter(fd), 0);
	close(fd);
}

static void test_drain_never_blocks(void **unused)
{
	assert_int_equal(vcmad_peerfd_init(), 0);
	drain_cases();
}

static void test_drain_through_watchdog(void **unused)
{
	int fd;
	uint64_t cnt, t0;

	/* the path kernels without RWF_NOWAIT for eventfds take: a blocking read cut
	 * short by the watchdog, which the caller treats as the peer's doing */
	assert_int_equal(vcmad_peerfd_init(), 0);
	vcmad_peerfd_use_watchdog_reads();
	fd = hostile_fd(0);
	t0 = now_ms();
	assert_int_equal(vcmad_peerfd_drain(fd, &cnt), -EPERM);
	assert_true(now_ms() - t0 < 500);
	close(fd);
	fd = hostile_fd(3);
	assert_int_equal(vcmad_peerfd_drain(fd, &cnt), 0);
	assert_int_equal(cnt, 3);
	close(fd);
}

static void test_signal(void **unused)
{
	uint64_t t0;
	int fd;

	assert_int_equal(vcmad_peerfd_init(), 0);
	/* the usual case: the irq is raised */
	fd = hostile_fd(0);
	assert_int_equal(vcmad_peerfd_signal(fd), 0);
	assert_int_equal(vcmad_peerfd_signal(fd), 0);
	assert_int_equal(counter(fd), 2);
	close(fd);
	/* full but non-blocking: an irq is pending already, which is all an irq means */
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_int_equal(write(fd, &(uint64_t){ FULL }, 8), 8);
	assert_int_equal(vcmad_peerfd_signal(fd), 0);
	close(fd);
	/* full and blocking: write(2) would sleep until the peer reads, which a hostile
	 * peer never does; the watchdog cuts it short and the caller hears -EPERM */
	fd = hostile_fd(FULL);
	t0 = now_ms();
	assert_int_equal(vcmad_peerfd_signal(fd), -EPERM);
	assert_true(now_ms() - t0 < 500);
	assert_int_equal(counter(fd), FULL); /* nothing was written */
	close(fd);
	/* and again: the watchdog re-arms for every call */
	fd = hostile_fd(FULL);
	assert_int_equal(vcmad_peerfd_signal(fd), -EPERM);
	close(fd);
	/* a closed fd is an ordinary error */
	assert_int_equal(vcmad_peerfd_signal(-1), -EBADF);
	vcmad_peerfd_fini();
}

/* The timer is not set per write: it runs from the first write until its signal finds
 * none in progress. A write that blocks is cut short whenever it starts: late in a run
 * of writes (the timer set long before), and after the timer stopped. */
static void test_signal_timer_lifetime(void **unused)
{
	uint64_t t0;
	int fd, ok;

	assert_int_equal(vcmad_peerfd_init(), 0);
	ok = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	/* writes for 3 watchdog periods: the timer fires among them and goes on */
	t0 = now_ms();
	while (now_ms() - t0 < 3 * VCMAD_PEERFD_WATCHDOG_MS)
		assert_int_equal(vcmad_peerfd_signal(ok), 0);
	fd = hostile_fd(FULL);
	t0 = now_ms();
	assert_int_equal(vcmad_peerfd_signal(fd), -EPERM);
	assert_true(now_ms() - t0 < 500);
	close(fd);
	/* idle: the signal that finds no write stops the timer (the sleep is cut short by
	 * it: that is the point); the next write sets it again */
	t0 = now_ms();
	while (now_ms() - t0 < 5 * VCMAD_PEERFD_WATCHDOG_MS)
		usleep(1000);
	fd = hostile_fd(FULL);
	t0 = now_ms();
	assert_int_equal(vcmad_peerfd_signal(fd), -EPERM);
	assert_true(now_ms() - t0 < 500);
	close(fd);
	assert_int_equal(vcmad_peerfd_signal(ok), 0);
	close(ok);
	vcmad_peerfd_fini();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drain_never_blocks),
		cmocka_unit_test(test_signal),
		cmocka_unit_test(test_signal_timer_lifetime),
		cmocka_unit_test(test_drain_through_watchdog),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
