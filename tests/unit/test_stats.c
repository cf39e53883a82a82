// SPDX-License-Identifier: MIT
/* Latency histogram: bucket edges, quantiles, clamping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stats.h"

static void test_buckets(void **unused)
{
	assert_int_equal(vcma_hist_bucket(0), 0);
	assert_int_equal(vcma_hist_bucket(1), 0);
	assert_int_equal(vcma_hist_bucket(2), 1);
	assert_int_equal(vcma_hist_bucket(3), 1);
	assert_int_equal(vcma_hist_bucket(1024), 10);
	assert_int_equal(vcma_hist_bucket(2047), 10);
	assert_int_equal(vcma_hist_bucket(UINT64_MAX), VCMA_HIST_BUCKETS - 1);
}

static void test_quantiles(void **unused)
{
	struct vcma_hist h = { 0 };

	assert_int_equal(vcma_hist_quantile(&h, 0.5), 0);
	for (int i = 0; i < 99; i++)
		vcma_hist_record(&h, 1000); /* bucket 9: [512, 1024) */
	vcma_hist_record(&h, 1000000);
	assert_int_equal(h.count, 100);
	assert_int_equal(h.max_ns, 1000000);
	assert_int_equal(h.sum_ns, 99 * 1000 + 1000000);
	/* median lies in the bucket of 1000 ns, whose upper edge is 1024 */
	assert_int_equal(vcma_hist_quantile(&h, 0.5), 1024);
	assert_int_equal(vcma_hist_quantile(&h, 0.99), 1024);
	/* the top quantile is clamped to the real maximum */
	assert_int_equal(vcma_hist_quantile(&h, 1.0), 1000000);
	assert_int_equal(vcma_hist_quantile(&h, 7.0), 1000000);
}

static void test_clock_moves(void **unused)
{
	uint64_t a = vcma_now_ns(), b = vcma_now_ns();

	assert_true(a > 0);
	assert_true(b >= a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_quantiles),
		cmocka_unit_test(test_clock_moves),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
