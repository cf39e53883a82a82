// SPDX-License-Identifier: MIT
/* Frame map: transitions, all-or-nothing failures, counts, summaries, garbage input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fmap.h"

static enum vcma_frame_state state_of(const struct vcma_fmap *fm, uint64_t i)
{
	struct vcma_frame_info fi;

	assert_int_equal(vcma_fmap_get(fm, i, &fi), 0);
	return fi.state;
}

static void test_init_rejects_garbage(void **unused)
{
	struct vcma_fmap fm;

	assert_int_equal(vcma_fmap_init(&fm, 0, 0, 1, 16), -EINVAL);
	assert_int_equal(vcma_fmap_init(&fm, 0, VCMA_FMAP_MAX_FRAMES + 1, 1, 16), -EINVAL);
	assert_int_equal(vcma_fmap_init(&fm, UINT64_MAX - 10, 100, 1, 16), -EINVAL);
	assert_int_equal(vcma_fmap_init(&fm, 0, 100, 0, 16), -EINVAL);
	assert_int_equal(vcma_fmap_init(&fm, 0, 100, 1, 70000), -EINVAL);
}

static void test_fresh_map_is_free(void **unused)
{
	struct vcma_fmap fm;

	assert_int_equal(vcma_fmap_init(&fm, 1000, 1000, 1, 16), 0);
	assert_int_equal(fm.count[VCMA_FRAME_FREE], 1000);
	assert_int_equal(vcma_fmap_largest_free_run(&fm), 1000);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	assert_int_equal(fm.ngran, 4);
	vcma_fmap_fini(&fm);
}

static void test_lend_cycle(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_frame_info fi;

	assert_int_equal(vcma_fmap_init(&fm, 0, 512, 1, 16), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 10, 7, 0x1234, false), 0);
	assert_int_equal(vcma_fmap_get(&fm, 10, &fi), 0);
	assert_int_equal(fi.state, VCMA_FRAME_LENT_FREE);
	assert_int_equal(fi.guest, 7);
	assert_int_equal(fi.gfn, 0x1234);
	/* lending twice, or lending garbage, fails and changes nothing */
	assert_int_equal(vcma_fmap_lend(&fm, 10, 8, 1, true), -EBUSY);
	assert_int_equal(vcma_fmap_lend(&fm, 512, 8, 1, true), -EINVAL);
	assert_int_equal(vcma_fmap_lend(&fm, 11, 0x10000, 1, true), -EINVAL);
	assert_int_equal(vcma_fmap_lend(&fm, 11, 1, VCMA_GFN_MAX + 1, true), -EINVAL);
	assert_int_equal(vcma_fmap_set_used(&fm, 10, true), 0);
	assert_int_equal(state_of(&fm, 10), VCMA_FRAME_LENT_USED);
	assert_int_equal(fm.count[VCMA_FRAME_LENT_USED], 1);
	assert_int_equal(fm.count[VCMA_FRAME_LENT_FREE], 0);
	assert_int_equal(vcma_fmap_set_used(&fm, 11, true), -EBUSY);
	assert_int_equal(vcma_fmap_largest_free_run(&fm), 501);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	assert_int_equal(vcma_fmap_unlend(&fm, 10), 0);
	assert_int_equal(vcma_fmap_unlend(&fm, 10), -EBUSY);
	assert_int_equal(fm.count[VCMA_FRAME_FREE], 512);
	assert_int_equal(vcma_fmap_largest_free_run(&fm), 512);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

static void test_claim_commit_release(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_frame_info fi;

	assert_int_equal(vcma_fmap_init(&fm, 0, 1024, 1, 16), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 300, 2, 99, true), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 256, 256), 0);
	assert_int_equal(fm.nclaimed, 256);
	/* a claimed frame is blocked: no second claim, no lending into it */
	assert_int_equal(vcma_fmap_claim(&fm, 500, 20), -EBUSY);
	assert_int_equal(vcma_fmap_lend(&fm, 257, 2, 1, false), -EBUSY);
	/* commit refuses while a lent frame is still in the window */
	assert_int_equal(vcma_fmap_commit_region(&fm, 256, 256, 3), -EBUSY);
	assert_int_equal(vcma_fmap_unlend(&fm, 300), 0);
	assert_int_equal(vcma_fmap_get(&fm, 300, &fi), 0);
	assert_true(fi.claimed);
	assert_int_equal(vcma_fmap_commit_region(&fm, 256, 256, 3), 0);
	assert_int_equal(fm.nclaimed, 0);
	assert_int_equal(fm.count[VCMA_FRAME_REGION], 256);
	assert_int_equal(vcma_fmap_get(&fm, 400, &fi), 0);
	assert_int_equal(fi.state, VCMA_FRAME_REGION);
	assert_int_equal(fi.guest, 3);
	assert_int_equal(vcma_fmap_largest_free_run(&fm), 512);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	/* release must cover region frames only, all or nothing */
	assert_int_equal(vcma_fmap_release_region(&fm, 255, 2), -EBUSY);
	assert_int_equal(fm.count[VCMA_FRAME_REGION], 256);
	assert_int_equal(vcma_fmap_release_region(&fm, 256, 256), 0);
	assert_int_equal(fm.count[VCMA_FRAME_FREE], 1024);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

static void test_unclaim_rolls_back(void **unused)
{
	struct vcma_fmap fm;

	assert_int_equal(vcma_fmap_init(&fm, 0, 100, 1, 16), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 5, 1, 5, false), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 0, 10), 0);
	assert_int_equal(vcma_fmap_unclaim(&fm, 0, 11), -EBUSY); /* frame 10 is not claimed */
	assert_int_equal(vcma_fmap_unclaim(&fm, 0, 10), 0);
	assert_int_equal(state_of(&fm, 5), VCMA_FRAME_LENT_FREE);
	assert_int_equal(fm.nclaimed, 0);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

static void test_reserve(void **unused)
{
	struct vcma_fmap fm;

	assert_int_equal(vcma_fmap_init(&fm, 0, 300, 1, 16), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 50, 1, 5, false), 0);
	assert_int_equal(vcma_fmap_reserve(&fm, 40, 20), -EBUSY);
	assert_int_equal(fm.count[VCMA_FRAME_RESERVED], 0);
	assert_int_equal(vcma_fmap_reserve(&fm, 100, 20), 0);
	assert_int_equal(fm.count[VCMA_FRAME_RESERVED], 20);
	assert_int_equal(vcma_fmap_unreserve(&fm, 99, 2), -EBUSY);
	assert_int_equal(vcma_fmap_unreserve(&fm, 100, 20), 0);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

static void test_range_garbage(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_frame_info fi;

	assert_int_equal(vcma_fmap_init(&fm, 0, 300, 1, 16), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 0, 0), -EINVAL);
	assert_int_equal(vcma_fmap_claim(&fm, 299, 2), -EINVAL);
	assert_int_equal(vcma_fmap_claim(&fm, 1, UINT64_MAX), -EINVAL);
	assert_int_equal(vcma_fmap_reserve(&fm, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(vcma_fmap_release_region(&fm, 2, UINT64_MAX - 1), -EINVAL);
	assert_int_equal(vcma_fmap_get(&fm, 300, &fi), -EINVAL);
	assert_int_equal(vcma_fmap_collect_lent(&fm, 10, 0, NULL, 0), -EINVAL);
	assert_int_equal(vcma_fmap_window_cost(&fm, 299, 5), UINT64_MAX);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

static void test_collect_lent(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_vacate_item it[4];

	assert_int_equal(vcma_fmap_init(&fm, 0, 1000, 1, 16), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 63, 1, 630, false), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 64, 2, 640, true), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 700, 3, 7000, true), 0);
	assert_int_equal(vcma_fmap_collect_lent(&fm, 0, 1000, it, 4), 3);
	assert_int_equal(it[0].idx, 63);
	assert_int_equal(it[0].state, VCMA_FRAME_LENT_FREE);
	assert_int_equal(it[1].idx, 64);
	assert_int_equal(it[1].guest, 2);
	assert_int_equal(it[1].gfn, 640);
	assert_int_equal(it[2].idx, 700);
	/* counts all, fills only max */
	assert_int_equal(vcma_fmap_collect_lent(&fm, 64, 700, it, 1), 2);
	assert_int_equal(it[0].idx, 64);
	assert_int_equal(vcma_fmap_collect_lent(&fm, 65, 600, it, 4), 0);
	assert_int_equal(vcma_fmap_window_cost(&fm, 0, 128), 17);
	vcma_fmap_fini(&fm);
}

/* Summaries across superblock boundaries: a pool of several superblocks. */
static void test_runs_across_superblocks(void **unused)
{
	struct vcma_fmap fm;
	const uint64_t sb = VCMA_FMAP_SUPER_FRAMES;

	assert_int_equal(vcma_fmap_init(&fm, 0, 3 * sb + 77, 1, 16), 0);
	assert_int_equal(vcma_fmap_largest_free_run(&fm), 3 * sb + 77);
	assert_int_equal(vcma_fmap_reserve(&fm, sb / 2, 1), 0);
	assert_int_equal(vcma_fmap_reserve(&fm, 2 * sb + 100, 1), 0);
	assert_int_equal(vcma_fmap_largest_free_run(&fm), 2 * sb + 100 - sb / 2 - 1);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

/* Changes inside a batch leave exactly the summaries that the same changes made one
 * by one leave: a twin map takes every operation unbatched. */
static void test_batch_matches_unbatched(void **unused)
{
	struct vcma_fmap a, b;
	const uint64_t n = 3 * VCMA_FMAP_SUPER_FRAMES + 300;
	uint64_t rng = 0x9e3779b97f4a7c15ull;

	assert_int_equal(vcma_fmap_init(&a, 0, n, 1, 16), 0);
	assert_int_equal(vcma_fmap_init(&b, 0, n, 1, 16), 0);
	for (int round = 0; round < 200; round++) {
		vcma_fmap_batch_begin(&a);
		if (round % 3 == 0)
			vcma_fmap_batch_begin(&a); /* nested: only the outer end recomputes */
		for (int k = 0; k < 100; k++) {
			uint64_t idx, op;
			struct vcma_frame_info fi;

			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			idx = (rng >> 8) % n;
			op = rng & 3;
			/* a run of 1..64 frames now and then, like a commit of consecutive frames */
			for (uint64_t i = idx; i < n && i < idx + (op == 3 ? (rng >> 40) % 64 + 1 : 1); i++) {
				assert_int_equal(vcma_fmap_get(&b, i, &fi), 0);
				if (fi.state == VCMA_FRAME_FREE && !fi.claimed) {
					assert_int_equal(vcma_fmap_lend(&a, i, 1, i, op & 1), 0);
					assert_int_equal(vcma_fmap_lend(&b, i, 1, i, op & 1), 0);
				} else if (op == 0) {
					assert_int_equal(vcma_fmap_unlend(&a, i), 0);
					assert_int_equal(vcma_fmap_unlend(&b, i), 0);
				} else {
					assert_int_equal(vcma_fmap_set_used(&a, i, op == 1), 0);
					assert_int_equal(vcma_fmap_set_used(&b, i, op == 1), 0);
				}
				/* frame states and counts are exact inside a batch */
				assert_int_equal(state_of(&a, i), state_of(&b, i));
			}
		}
		if (round % 3 == 0) {
			vcma_fmap_batch_end(&a);
			assert_int_equal(a.batch, 1);
		}
		vcma_fmap_batch_end(&a);
		assert_int_equal(a.batch, 0);
		assert_memory_equal(a.count, b.count, sizeof(a.count));
		assert_memory_equal(a.gsum, b.gsum, a.ngran * sizeof(*a.gsum));
		assert_memory_equal(a.gcost, b.gcost, a.ngran * sizeof(*a.gcost));
		assert_memory_equal(a.ssum, b.ssum, a.nsuper * sizeof(*a.ssum));
		assert_int_equal(vcma_fmap_check(&a), 0);
	}
	vcma_fmap_batch_end(&a); /* an unmatched end is ignored */
	assert_int_equal(a.batch, 0);
	vcma_fmap_fini(&a);
	vcma_fmap_fini(&b);
}

/* Known-zero frames: only marked while FREE (claimed or not); lost when lent, reserved,
 * unclaimed or released;
 * taken (and lost) when a region is handed out, so they are never skipped twice. */
static void test_zero_tracking(void **unused)
{
	struct vcma_fmap fm;

	assert_int_equal(vcma_fmap_init(&fm, 0, 1024, 1, 16), 0);
	assert_false(vcma_fmap_take_zeroed(&fm, 0, 256)); /* nothing known at start */
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 0, 512), 0);
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 0, 1025), -EINVAL);

	/* a region committed from known-zero frames: the take says so, once */
	assert_int_equal(vcma_fmap_claim(&fm, 0, 256), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 0, 256, 7), 0);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	assert_true(vcma_fmap_take_zeroed(&fm, 0, 256));
	assert_false(vcma_fmap_take_zeroed(&fm, 0, 256));

	/* marking needs FREE frames: not a region, not a lent frame */
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 0, 256), -EBUSY);
	assert_int_equal(vcma_fmap_lend(&fm, 300, 3, 42, true), 0);
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 256, 256), -EBUSY);
	assert_int_equal(vcma_fmap_unlend(&fm, 300), 0);

	/* a claimed window's FREE frames may be marked by its claimer (a vacate clears
	 * them as it empties them); the run query sees where the mark stops; the region
	 * committed there finds them known zero; an unclaim would have lost them */
	vcma_fmap_take_zeroed(&fm, 256, 256); /* forget the first mark */
	assert_int_equal(vcma_fmap_claim(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 256, 100), 0);
	{
		bool zero = false;

		assert_int_equal(vcma_fmap_zeroed_run(&fm, 256, 256, &zero), 100);
		assert_true(zero);
		assert_int_equal(vcma_fmap_zeroed_run(&fm, 356, 156, &zero), 156);
		assert_false(zero);
		assert_int_equal(vcma_fmap_zeroed_run(&fm, 300, 10, &zero), 10); /* bounded by n */
		assert_true(zero);
		assert_int_equal(vcma_fmap_zeroed_run(&fm, 1000, 100, &zero), 100); /* outside: not zero */
		assert_false(zero);
	}
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 356, 156), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 256, 256, 9), 0);
	assert_true(vcma_fmap_take_zeroed(&fm, 256, 256));
	assert_int_equal(vcma_fmap_release_region(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_unclaim(&fm, 256, 256), 0);
	assert_false(vcma_fmap_take_zeroed(&fm, 256, 256));

	/* release loses the mark even where a region kept it (its owner wrote there) */
	assert_int_equal(vcma_fmap_claim(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 256, 256, 7), 0);
	assert_int_equal(vcma_fmap_release_region(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 256, 256), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 256, 256, 8), 0);
	assert_false(vcma_fmap_take_zeroed(&fm, 256, 256));
	assert_int_equal(vcma_fmap_release_region(&fm, 256, 256), 0);

	/* one frame lent and given back spoils the whole window */
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 512, 256), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 600, 3, 42, true), 0);
	assert_int_equal(vcma_fmap_unlend(&fm, 600), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 512, 256), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 512, 256, 7), 0);
	assert_false(vcma_fmap_take_zeroed(&fm, 512, 256));
	assert_int_equal(vcma_fmap_release_region(&fm, 512, 256), 0);

	/* so does a claim that ends without a commit (a vacate's destination, copied into) */
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 512, 256), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 512, 256), 0);
	assert_int_equal(vcma_fmap_unclaim(&fm, 512, 256), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 512, 256), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 512, 256, 7), 0);
	assert_false(vcma_fmap_take_zeroed(&fm, 512, 256));
	assert_int_equal(vcma_fmap_release_region(&fm, 512, 256), 0);

	/* reserving loses it too */
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 768, 256), 0);
	assert_int_equal(vcma_fmap_reserve(&fm, 800, 1), 0);
	assert_int_equal(vcma_fmap_check(&fm), 0);
	assert_int_equal(vcma_fmap_unreserve(&fm, 800, 1), 0);
	assert_int_equal(vcma_fmap_claim(&fm, 768, 256), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 768, 256, 7), 0);
	assert_false(vcma_fmap_take_zeroed(&fm, 768, 256));
	assert_int_equal(vcma_fmap_check(&fm), 0);
	vcma_fmap_fini(&fm);
}

/* What a scrubber may zero: FREE, unclaimed, not known zero, found run by run and
 * checked against a frame-by-frame reference. */
static void test_next_unzeroed(void **unused)
{
	struct vcma_fmap fm;
	uint64_t len, at;

	assert_int_equal(vcma_fmap_init(&fm, 0, 1000, 1, 16), 0); /* a partial last granule */
	at = vcma_fmap_next_unzeroed(&fm, 0, 1000, &len);
	assert_true(at == 0 && len == 1000); /* nothing known zero at start */
	at = vcma_fmap_next_unzeroed(&fm, 0, 5000, &len);
	assert_true(at == 0 && len == 1000); /* end capped at the pool's end */
	assert_int_equal(vcma_fmap_mark_zeroed(&fm, 0, 1000), 0);
	at = vcma_fmap_next_unzeroed(&fm, 0, 1000, &len);
	assert_true(at == 1000 && len == 0);

	/* a region released, a lent frame given back, a claimed one, a reserved one */
	assert_int_equal(vcma_fmap_claim(&fm, 64, 70), 0);
	assert_int_equal(vcma_fmap_commit_region(&fm, 64, 70, 7), 0);
	assert_int_equal(vcma_fmap_release_region(&fm, 64, 70), 0); /* 64..133 not zero */
	assert_int_equal(vcma_fmap_lend(&fm, 300, 3, 1, true), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 301, 3, 2, false), 0);
	assert_int_equal(vcma_fmap_unlend(&fm, 300), 0); /* 300 not zero, 301 lent */
	assert_int_equal(vcma_fmap_claim(&fm, 100, 10), 0); /* 100..109 claimed */
	assert_int_equal(vcma_fmap_reserve(&fm, 990, 10), 0);

	at = vcma_fmap_next_unzeroed(&fm, 0, 1000, &len);
	assert_true(at == 64 && len == 36);
	at = vcma_fmap_next_unzeroed(&fm, 100, 1000, &len);
	assert_true(at == 110 && len == 24);
	at = vcma_fmap_next_unzeroed(&fm, 120, 125, &len);
	assert_true(at == 120 && len == 5); /* cut at end */
	at = vcma_fmap_next_unzeroed(&fm, 134, 1000, &len);
	assert_true(at == 300 && len == 1);
	at = vcma_fmap_next_unzeroed(&fm, 301, 1000, &len);
	assert_true(at == 1000 && len == 0);

	/* against the reference, from every start */
	for (uint64_t i = 0; i < 1000; i++) {
		uint64_t ref = i, rlen = 0;

		for (;; ref++) {
			struct vcma_frame_info fi;

			if (ref >= 1000)
				break;
			assert_int_equal(vcma_fmap_get(&fm, ref, &fi), 0);
			if (fi.state == VCMA_FRAME_FREE && !fi.claimed && !(fm.zeroed[ref >> 6] >> (ref & 63) & 1))
				break;
		}
		while (ref + rlen < 1000) {
			struct vcma_frame_info fi;
			uint64_t k = ref + rlen;

			assert_int_equal(vcma_fmap_get(&fm, k, &fi), 0);
			if (!(fi.state == VCMA_FRAME_FREE && !fi.claimed && !(fm.zeroed[k >> 6] >> (k & 63) & 1)))
				break;
			rlen++;
		}
		at = vcma_fmap_next_unzeroed(&fm, i, 1000, &len);
		assert_int_equal(at, ref);
		assert_int_equal(len, rlen);
	}
	/* marking what it found leaves nothing */
	for (uint64_t i = 0; (at = vcma_fmap_next_unzeroed(&fm, i, 1000, &len)) < 1000; i = at + len)
		assert_int_equal(vcma_fmap_mark_zeroed(&fm, at, len), 0);
	at = vcma_fmap_next_unzeroed(&fm, 0, 1000, &len);
	assert_true(at == 1000 && len == 0);
	vcma_fmap_fini(&fm);
}

static void test_metadata_budget(void **unused)
{
	struct vcma_fmap fm;

	assert_int_equal(vcma_fmap_init(&fm, 0, 1u << 20, 1, 16), 0);
	assert_true(vcma_fmap_metadata_bytes(&fm) <= 16ull * (1u << 20));
	vcma_fmap_fini(&fm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_rejects_garbage),
		cmocka_unit_test(test_fresh_map_is_free),
		cmocka_unit_test(test_lend_cycle),
		cmocka_unit_test(test_claim_commit_release),
		cmocka_unit_test(test_unclaim_rolls_back),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_range_garbage),
		cmocka_unit_test(test_collect_lent),
		cmocka_unit_test(test_runs_across_superblocks),
		cmocka_unit_test(test_batch_matches_unbatched),
		cmocka_unit_test(test_zero_tracking),
		cmocka_unit_test(test_next_unzeroed),
		cmocka_unit_test(test_metadata_budget),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
