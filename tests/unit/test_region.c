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

/* Regions taken back after a restart keep their handles; what is issued after never
 * repeats a handle from before, even on slots that were free at the crash. */
static void test_insert_at(void **unused)
{
	struct vcma_regions t;
	struct vcma_region a = mk(1, 100), b = mk(2, 200), c = mk(1, 300), n;

	assert_int_equal(vcma_regions_init(&t, 16), 0);
	a.handle = (uint64_t)7 << 32 | 3;  /* slot 3, generation 7 */
	b.handle = (uint64_t)2 << 32 | 0;  /* slot 0, generation 2 */
	assert_int_equal(vcma_regions_insert_at(&t, &a), 0);
	assert_int_equal(vcma_regions_insert_at(&t, &b), 0);
	assert_int_equal(vcma_regions_lookup(&t, 1, a.handle)->mfn, 100);
	assert_int_equal(vcma_regions_lookup(&t, 2, b.handle)->mfn, 200);
	assert_null(vcma_regions_lookup(&t, 2, a.handle)); /* still scoped to its guest */
	/* a live slot, generation 0 or a garbage slot are refused */
	c.handle = a.handle;
	assert_int_equal(vcma_regions_insert_at(&t, &c), -EEXIST);
	c.handle = 5;
	assert_int_equal(vcma_regions_insert_at(&t, &c), -EINVAL);
	c.handle = (uint64_t)1 << 32 | 100;
	assert_int_equal(vcma_regions_insert_at(&t, &c), -ENOSPC);
	assert_int_equal(t.nlive, 2);
	/* new handles: free slots 1, 2, then 4..; generations above 7 */
	for (int i = 0; i < 4; i++) {
		n = mk(1, 1000 + i);
		assert_int_equal(vcma_regions_insert(&t, &n), 0);
		assert_true((uint32_t)n.handle != 0 && (uint32_t)n.handle != 3);
		assert_true((n.handle >> 32) > 7);
		assert_int_equal(vcma_regions_lookup(&t, 1, n.handle)->mfn, 1000 + i);
	}
	assert_int_equal(t.nlive, 6);
	/* freeing a restored region works as for any other */
	assert_int_equal(vcma_regions_remove(&t, 1, a.handle, NULL), 0);
	assert_null(vcma_regions_lookup(&t, 1, a.handle));
	vcma_regions_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_insert_lookup_scoped),
		cmocka_unit_test(test_stale_handle_never_matches),
		cmocka_unit_test(test_garbage_handles),
		cmocka_unit_test(test_bound_and_iterate),
		cmocka_unit_test(test_insert_at),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
