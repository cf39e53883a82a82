// SPDX-License-Identifier: MIT
/*
 * hv/loop.c's timers on a clock the test steps: they run in time order, once, not
 * before they are due; a callback may re-arm itself or cancel another; the wait is
 * bounded by the earliest timer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "loop.h"

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
	return fake_now;
}

static char order[16];
static size_t norder;
static struct vcma_loop loop;
static struct vcma_timer ta, tb, tc;

static void fn_a(struct vcma_timer *t)
{
	order[norder++] = 'a';
}

static void fn_b(struct vcma_timer *t)
{
	order[norder++] = 'b';
	vcma_timer_cancel(&loop, &tc); /* a callback may cancel a timer due in the same run */
}

static void fn_c(struct vcma_timer *t)
{
	order[norder++] = 'c';
}

static int again;
static void fn_again(struct vcma_timer *t)
{
	order[norder++] = 'r';
	if (--again > 0)
		vcma_timer_arm(&loop, t, fake_now); /* due now again: runs on the next turn, not in this one */
}

static void setup_loop(void)
{
	memset(&loop, 0, sizeof(loop));
	loop.clock = fake_clock;
	assert_int_equal(vcma_loop_init(&loop), 0);
	memset(order, 0, sizeof(order));
	norder = 0;
	fake_now = 1000;
}

static void test_order_and_cancel(void **unused)
{
	setup_loop();
	vcma_timer_init(&ta, fn_a);
	vcma_timer_init(&tb, fn_b);
	vcma_timer_init(&tc, fn_c);
	vcma_timer_arm(&loop, &tc, 3000);
	vcma_timer_arm(&loop, &ta, 2000);
	vcma_timer_arm(&loop, &tb, 2500);
	vcma_loop_once(&loop, 0);
	assert_int_equal(norder, 0); /* nothing is due */
	fake_now = 2000;
	vcma_loop_once(&loop, 0);
	assert_string_equal(order, "a");
	assert_false(ta.armed);
	fake_now = 5000; /* b and c are due; b cancels c */
	vcma_loop_once(&loop, 0);
	assert_string_equal(order, "ab");
	vcma_loop_once(&loop, 0);
	assert_string_equal(order, "ab");
	/* re-arming moves a timer; cancelling an idle one is harmless */
	vcma_timer_arm(&loop, &ta, 9000);
	vcma_timer_arm(&loop, &ta, 6000);
	vcma_timer_cancel(&loop, &tc);
	fake_now = 6000;
	vcma_loop_once(&loop, 0);
	assert_string_equal(order, "aba");
	assert_null(loop.timers);
	vcma_loop_fini(&loop);
}

static void test_rearm_in_callback(void **unused)
{
	setup_loop();
	vcma_timer_init(&ta, fn_again);
	again = 3;
	vcma_timer_arm(&loop, &ta, 1000);
	vcma_loop_once(&loop, 0);
	assert_string_equal(order, "r");
	vcma_loop_once(&loop, 0);
	vcma_loop_once(&loop, 0);
	vcma_loop_once(&loop, 0);
	assert_string_equal(order, "rrr");
	vcma_loop_fini(&loop);
}

/* With the real clock: the wait ends when the earliest timer is due, not later. */
static void test_wait_bounded_by_timer(void **unused)
{
	struct timespec t0, t1;
	double ms;

	memset(&loop, 0, sizeof(loop));
	assert_int_equal(vcma_loop_init(&loop), 0);
	memset(order, 0, sizeof(order));
	norder = 0;
	vcma_timer_init(&ta, fn_a);
	vcma_timer_arm_in(&loop, &ta, 30 * 1000000ull);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!norder)
		vcma_loop_once(&loop, -1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms >= 29 && ms < 1000);
	vcma_loop_fini(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_cancel),
		cmocka_unit_test(test_rearm_in_callback),
		cmocka_unit_test(test_wait_bounded_by_timer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
