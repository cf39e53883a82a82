// SPDX-License-Identifier: MIT
/*
 * peerfd.c - reads and writes on eventfds a peer shares with vcmad, none of which
 * can block the daemon (peerfd.h says why and how).
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "peerfd.h"

#define WATCHDOG_SIG (SIGRTMIN + 3)

static _Thread_local timer_t wd_timer;
static _Thread_local bool wd_ready;
/* The timer runs (wd_armed) from the first guarded op until its signal finds no op in
 * progress (wd_in): arming and disarming per op cost two syscalls each time. */
static _Thread_local volatile sig_atomic_t wd_armed, wd_in;
static bool nowait_reads = true; /* until the kernel says RWF_NOWAIT is not for eventfds */

/* Its delivery makes a sleeping guarded op return EINTR (no SA_RESTART). Outside an op
 * it stops the timer; inside one it leaves it ticking every millisecond, so an op that
 * starts sleeping just after this signal is cut short by the next. (Other syscalls it
 * lands in return EINTR too: on vcmad's thread only epoll_wait blocks, and the loop
 * takes EINTR as an empty wake-up.) */
static void wd_handler(int sig)
{
	static const struct itimerspec off;
	int saved = errno;

	(void)sig;
	if (!wd_in && wd_armed) {
		timer_settime(wd_timer, 0, &off, NULL);
		wd_armed = 0;
	}
	errno = saved;
}

int vcmad_peerfd_init(void)
{
	struct sigaction sa;
	struct sigevent sev;

	if (wd_ready)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wd_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: interrupting the call is the point */
	if (sigaction(WATCHDOG_SIG, &sa, NULL))
		return -errno;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = WATCHDOG_SIG;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &wd_timer))
		return -errno;
	wd_ready = true;
	return 0;
}

void vcmad_peerfd_fini(void)
{
	if (wd_ready)
		timer_delete(wd_timer);
	wd_ready = false;
	wd_armed = 0;
}

/* Before a guarded op: the timer fires within VCMAD_PEERFD_WATCHDOG_MS and then every
 * millisecond while an op is in progress. wd_in is set before wd_armed is looked at,
 * so a signal in between keeps the timer going. */
static int wd_enter(void)
{
	struct itimerspec its = {
		.it_value = { 0, VCMAD_PEERFD_WATCHDOG_MS * 1000000L },
		.it_interval = { 0, 1000000L },
	};

	if (!wd_ready) {
		int rc = vcmad_peerfd_init();

		if (rc)
			return rc;
	}
	wd_in = 1;
	atomic_signal_fence(memory_order_seq_cst);
	if (wd_armed)
		return 0;
	if (timer_settime(wd_timer, 0, &its, NULL)) {
		wd_in = 0;
		return -errno;
	}
	wd_armed = 1;
	return 0;
}

static void wd_leave(void)
{
	atomic_signal_fence(memory_order_seq_cst);
	wd_in = 0;
}

int vcmad_peerfd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t n;
	int rc = wd_enter(), err;

	if (rc)
		return rc;
	n = write(fd, &one, sizeof(one));
	err = errno;
	wd_leave();
	if (n == (ssize_t)sizeof(one) || (n < 0 && err == EAGAIN))
		return 0;
	if (n < 0 && err == EINTR)
		return -EPERM;
	return n < 0 ? -err : -EIO;
}

void vcmad_peerfd_use_watchdog_reads(void)
{
	nowait_reads = false;
}

int vcmad_peerfd_drain(int fd, uint64_t *count)
{
	struct iovec iov = { .iov_base = count, .iov_len = sizeof(*count) };
	ssize_t n;
	int rc, err;

	*count = 0;
	if (nowait_reads) {
		n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
		if (n == (ssize_t)sizeof(*count))
			return 0;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n >= 0)
			return -EIO;
		if (errno != EOPNOTSUPP && errno != EINVAL)
			return -errno;
		nowait_reads = false; /* an old kernel: the watchdog from now on */
	}
	rc = wd_enter();
	if (rc)
		return rc;
	n = read(fd, count, sizeof(*count));
	err = errno;
	wd_leave();
	if (n == (ssize_t)sizeof(*count))
		return 0;
	*count = 0;
	if (n < 0 && err == EAGAIN)
		return 0;
	if (n < 0 && err == EINTR)
		return -EPERM;
	return n < 0 ? -err : -EIO;
}
