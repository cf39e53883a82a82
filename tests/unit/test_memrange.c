// SPDX-License-Identifier: MIT
/* Ordinary-memory extent allocator: merge on free, double free, runs, exhaustion. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/memrange.h"

static void test_merge_and_alloc(void **unused)
{
	struct vcma_memrange m;
	struct vcma_extent out[4];

	vcma_memrange_init(&m);
	assert_int_equal(vcma_memrange_free(&m, 0, 100), 0);
	assert_int_equal(vcma_memrange_free(&m, 200, 100), 0);
	assert_int_equal(vcma_memrange_free(&m, 100, 100), 0); /* joins both */
	assert_int_equal(m.n, 1);
	assert_int_equal(m.free_frames, 300);
	assert_int_equal(vcma_memrange_free(&m, 50, 10), -EEXIST);
	assert_int_equal(vcma_memrange_free(&m, 299, 5), -EEXIST);
	assert_int_equal(vcma_memrange_alloc(&m, 120, out, 4), 1);
	assert_int_equal(out[0].start, 0);
	assert_int_equal(out[0].count, 120);
	assert_int_equal(m.free_frames, 180);
	vcma_memrange_fini(&m);
}

static void test_runs_and_exhaustion(void **unused)
{
	struct vcma_memrange m;
	struct vcma_extent out[3];

	vcma_memrange_init(&m);
	for (uint64_t i = 0; i < 5; i++)
		assert_int_equal(vcma_memrange_free(&m, i * 100, 10), 0);
	assert_int_equal(vcma_memrange_alloc(&m, 25, out, 3), 3);
	assert_int_equal(out[2].start, 200);
	assert_int_equal(out[2].count, 5);
	assert_int_equal(m.free_frames, 25);
	/* more runs than allowed, or more frames than free: nothing is taken */
	assert_int_equal(vcma_memrange_alloc(&m, 25, out, 2), -ENOMEM);
	assert_int_equal(vcma_memrange_alloc(&m, 26, out, 3), -ENOMEM);
	assert_int_equal(m.free_frames, 25);
	assert_int_equal(vcma_memrange_alloc(&m, 0, out, 3), -ENOMEM);
	assert_int_equal(vcma_memrange_free(&m, 0, 0), -EINVAL);
	assert_int_equal(vcma_memrange_free(&m, UINT64_MAX - 1, 5), -EINVAL);
	vcma_memrange_fini(&m);
}

/* A VM's recorded RAM taken back: exactly these frames, from the middle, an edge or a
 * whole extent; anything not free is refused and nothing changes. */
static void test_take(void **unused)
{
	struct vcma_memrange m;
	struct vcma_extent out[4];

	vcma_memrange_init(&m);
	assert_int_equal(vcma_memrange_free(&m, 0, 100), 0);
	assert_int_equal(vcma_memrange_free(&m, 200, 10), 0);
	assert_int_equal(vcma_memrange_take(&m, 40, 10), 0); /* middle: a split */
	assert_int_equal(m.n, 3);
	assert_int_equal(m.free_frames, 100);
	assert_int_equal(vcma_memrange_take(&m, 45, 1), -ENOENT); /* taken already */
	assert_int_equal(vcma_memrange_take(&m, 95, 10), -ENOENT); /* runs past the extent */
	assert_int_equal(vcma_memrange_take(&m, 150, 1), -ENOENT); /* never free */
	assert_int_equal(vcma_memrange_take(&m, 0, 5), 0);         /* front edge */
	assert_int_equal(vcma_memrange_take(&m, 95, 5), 0);        /* back edge */
	assert_int_equal(vcma_memrange_take(&m, 200, 10), 0);      /* a whole extent */
	assert_int_equal(vcma_memrange_take(&m, 0, 0), -EINVAL);
	assert_int_equal(m.free_frames, 80);
	assert_int_equal(m.n, 2);
	/* what is left is [5, 40) and [50, 95); freeing the taken frames merges back */
	assert_int_equal(vcma_memrange_alloc(&m, 80, out, 4), 2);
	assert_int_equal(out[0].start, 5);
	assert_int_equal(out[0].count, 35);
	assert_int_equal(out[1].start, 50);
	assert_int_equal(out[1].count, 45);
	vcma_memrange_fini(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_and_alloc),
		cmocka_unit_test(test_runs_and_exhaustion),
		cmocka_unit_test(test_take),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
