// SPDX-License-Identifier: MIT
/* Region handles: issue, lookup scoped to the guest, stale/foreign/garbage handles. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "region.h"

static struct vcma_region mk(uint32_t guest, uint64_t mfn)
{
	struct vcma_region r = { .guest = guest, .mfn = mfn, .nframes = 4 };

	return r;
}

static void test_insert_lookup_scoped(void **unused)
{
	struct vcma_regions t;
	struct vcma_region a = mk(1, 100), b = mk(2, 200);

	assert_int_equal(vcma_regions_init(&t, 16), 0);
	assert_int_equal(vcma_regions_insert(&t, &a), 0);
	assert_int_equal(vcma_regions_insert(&t, &b), 0);
	assert_int_not_equal(a.handle, 0);
	assert_int_not_equal(a.handle, b.handle);
	assert_non_null(vcma_regions_lookup(&t, 1, a.handle));
	assert_int_equal(vcma_regions_lookup(&t, 1, a.handle)->mfn, 100);
	/* foreign: guest 2 cannot see or free guest 1's region */
	assert_null(vcma_regions_lookup(&t, 2, a.handle));
	assert_int_equal(vcma_regions_remove(&t, 2, a.handle, NULL), -ENOENT);
	assert_int_equal(vcma_regions_set_gpa(&t, 2, a.handle, 5), -ENOENT);
	assert_int_equal(t.nlive, 2);
	vcma_regions_fini(&t);
}

static void test_stale_handle_never_matches(void **unused)
{
	struct vcma_regions t;
	struct vcma_region a = mk(1, 100), c = mk(1, 300);

	assert_int_equal(vcma_regions_init(&t, 16), 0);
	assert_int_equal(vcma_regions_insert(&t, &a), 0);
	assert_int_equal(vcma_regions_remove(&t, 1, a.handle, NULL), 0);
	assert_int_equal(vcma_regions_remove(&t, 1, a.handle, NULL), -ENOENT);
	/* the slot is reused with a new generation */
	assert_int_equal(vcma_regions_insert(&t, &c), 0);
	assert_int_equal((uint32_t)c.handle, (uint32_t)a.handle);
	assert_int_not_equal(c.handle, a.handle);
	assert_null(vcma_regions_lookup(&t, 1, a.handle));
	assert_int_equal(vcma_regions_lookup(&t, 1, c.handle)->mfn, 300);
	vcma_regions_fini(&t);
}

static void test_garbage_handles(void **unused)
{
	struct vcma_regions t;
	struct vcma_region a = mk(1, 100);
	const uint64_t junk[] = { 0, 1, UINT64_MAX, 0xffffffffull, 1ull << 32, (2ull << 32) | 0 };

	assert_int_equal(vcma_regions_init(&t, 16), 0);
	assert_int_equal(vcma_regions_insert(&t, &a), 0);
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		if (junk[i] == a.handle)
			continue;
		assert_null(vcma_regions_lookup(&t, 1, junk[i]));
		assert_int_equal(vcma_regions_remove(&t, 1, junk[i], NULL), -ENOENT);
	}
	assert_int_equal(t.nlive, 1);
	vcma_regions_fini(&t);
}

static void test_bound_and_iterate(void **unused)
{
	struct vcma_regions t;
	struct vcma_region r[5];
	const struct vcma_region *it;
	uint32_t cursor = 0, seen = 0;

	assert_int_equal(vcma_regions_init(&t, 4), 0);
	for (int i = 0; i < 4; i++) {
		r[i] = mk((uint32_t)i, (uint64_t)i * 10);
		assert_int_equal(vcma_regions_insert(&t, &r[i]), 0);
	}
	r[4] = mk(9, 90);
	assert_int_equal(vcma_regions_insert(&t, &r[4]), -ENOSPC);
	assert_int_equal(vcma_regions_remove(&t, 2, r[2].handle, NULL), 0);
	while ((it = vcma_regions_next(&t, &cursor))) {
		assert_int_not_equal(it->guest, 2);
		seen++;
	}
	assert_int_equal(seen, 3);
	assert_int_equal(vcma_regions_insert(&t, &r[4]), 0);
	vcma_regions_fini(&t);
	assert_int_equal(vcma_regions_init(&t, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_insert_lookup_scoped),
		cmocka_unit_test(test_stale_handle_never_matches),
		cmocka_unit_test(test_garbage_handles),
		cmocka_unit_test(test_bound_and_iterate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
