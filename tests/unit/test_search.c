// SPDX-License-Identifier: MIT
/*
 * Window search: hand-built cases for each rule (cost order, lowest address among
 * equals, alignment on absolute mfns, blocked frames never inside), and a randomized
 * cross-check against brute force on pools that span several superblocks, where the
 * summaries' prefix/suffix joining matters.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "fmap.h"

static void test_free_first_fit(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_window w;

	assert_int_equal(vcma_fmap_init(&fm, 0, 4096, 1, 16), 0);
	assert_int_equal(vcma_fmap_search(&fm, 256, 8, &w), 0);
	assert_int_equal(w.start, 0);
	assert_int_equal(w.cost, 0);
	assert_int_equal(w.nfree, 256);
	/* block frame 0: the next aligned free window is at 256 */
	assert_int_equal(vcma_fmap_reserve(&fm, 0, 1), 0);
	assert_int_equal(vcma_fmap_search(&fm, 256, 8, &w), 0);
	assert_int_equal(w.start, 256);
	/* unaligned requests fit right after the blocked frame */
	assert_int_equal(vcma_fmap_search(&fm, 3, 0, &w), 0);
	assert_int_equal(w.start, 1);
	vcma_fmap_fini(&fm);
}

static void test_free_beats_lower_lent(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_window w;

	assert_int_equal(vcma_fmap_init(&fm, 0, 2048, 1, 16), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 5, 1, 5, false), 0);
	assert_int_equal(vcma_fmap_search(&fm, 512, 9, &w), 0);
	assert_int_equal(w.start, 512);
	assert_int_equal(w.cost, 0);
	vcma_fmap_fini(&fm);
}

static void test_lent_min_cost(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_window w;

	/* four 256-frame windows: used-heavy, blocked, one lent-used, two lent-free */
	assert_int_equal(vcma_fmap_init(&fm, 0, 1024, 1, 16), 0);
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(vcma_fmap_lend(&fm, i, 1, i, true), 0);
	assert_int_equal(vcma_fmap_reserve(&fm, 300, 1), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 600, 1, 600, true), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 800, 1, 800, false), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 801, 1, 801, false), 0);
	assert_int_equal(vcma_fmap_search(&fm, 256, 8, &w), 0);
	assert_int_equal(w.start, 768);
	assert_int_equal(w.cost, 2);
	assert_int_equal(w.nlent_free, 2);
	assert_int_equal(w.nlent_used, 0);
	assert_int_equal(w.nfree, 254);
	/* with equal costs the lowest wins */
	assert_int_equal(vcma_fmap_set_used(&fm, 600, false), 0);
	assert_int_equal(vcma_fmap_lend(&fm, 601, 1, 601, false), 0);
	assert_int_equal(vcma_fmap_search(&fm, 256, 8, &w), 0);
	assert_int_equal(w.start, 512);
	assert_int_equal(w.cost, 2);
	vcma_fmap_fini(&fm);
}

static void test_alignment_is_absolute(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_window w;

	/* pool starts at mfn 100: the first 64-aligned mfn is 128 = index 28 */
	assert_int_equal(vcma_fmap_init(&fm, 100, 1000, 1, 16), 0);
	assert_int_equal(vcma_fmap_search(&fm, 64, 6, &w), 0);
	assert_int_equal(w.start, 28);
	assert_int_equal((fm.base + w.start) % 64, 0);
	/* a request that fits only unaligned does not fit aligned */
	assert_int_equal(vcma_fmap_search(&fm, 1000, 0, &w), 0);
	assert_int_equal(vcma_fmap_search(&fm, 1000, 1, &w), 0); /* mfn 100 is even */
	assert_int_equal(vcma_fmap_search(&fm, 1000, 3, &w), -ENOSPC);
	vcma_fmap_fini(&fm);
}

static void test_no_window(void **unused)
{
	struct vcma_fmap fm;
	struct vcma_window w;

	assert_int_equal(vcma_fmap_init(&fm, 0, 512, 1, 16), 0);
	assert_int_equal(vcma_fmap_reserve(&fm, 200, 1), 0);
	assert_int_equal(vcma_fmap_search(&fm, 400, 0, &w), -ENOSPC);
	assert_int_equal(vcma_fmap_search(&fm, 0, 0, &w), -EINVAL);
	assert_int_equal(vcma_fmap_search(&fm, 513, 0, &w), -EINVAL);
	assert_int_equal(vcma_fmap_search(&fm, 1, VCMA_FMAP_MAX_ORDER + 1, &w), -EINVAL);
	assert_int_equal(vcma_fmap_search(&fm, 1, 0, NULL), -EINVAL);
	vcma_fmap_fini(&fm);
}

/* ---- randomized cross-check on multi-superblock pools ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t brute(const struct vcma_fmap *fm, uint64_t n, unsigned int order, uint64_t *cost)
{
	uint64_t a = 1ull << order, best = UINT64_MAX, at = UINT64_MAX;
	uint64_t *pb = calloc(fm->nframes + 1, sizeof(uint64_t));
	uint64_t *pc = calloc(fm->nframes + 1, sizeof(uint64_t));

	for (uint64_t i = 0; i < fm->nframes; i++) {
		struct vcma_frame_info fi;
		uint64_t b = 0, c = 0;

		vcma_fmap_get(fm, i, &fi);
		if (fi.claimed || fi.state == VCMA_FRAME_REGION || fi.state == VCMA_FRAME_RESERVED)
			b = 1;
		else if (fi.state == VCMA_FRAME_LENT_FREE)
			c = fm->cost_lf;
		else if (fi.state == VCMA_FRAME_LENT_USED)
			c = fm->cost_lu;
		pb[i + 1] = pb[i] + b;
		pc[i + 1] = pc[i] + c;
	}
	for (uint64_t p = 0; p + n <= fm->nframes; p++) {
		if ((fm->base + p) % a || pb[p + n] - pb[p])
			continue;
		if (pc[p + n] - pc[p] < best) {
			best = pc[p + n] - pc[p];
			at = p;
		}
	}
	free(pb);
	free(pc);
	*cost = best;
	return at;
}

static void test_random_multi_superblock(void **unused)
{
	const char *seed = getenv("VCMA_SEED");
	struct vcma_fmap fm;

	rng_state = seed ? strtoull(seed, NULL, 0) : 20261122;
	print_message("seed %llu\n", (unsigned long long)rng_state);
	for (int round = 0; round < 8; round++) {
		uint64_t nframes = VCMA_FMAP_SUPER_FRAMES * (1 + rnd() % 3) + rnd() % 700;

		/* odd rounds: a granule-aligned base, where n >= 256 at alignment >= 256
		 * takes the dense per-granule path */
		uint64_t base = round & 1 ? (rnd() % 16) << 8 : rnd() % 4096;

		assert_int_equal(vcma_fmap_init(&fm, base, nframes, 1 + (uint32_t)(rnd() % 3), 16), 0);
		/* a density that leaves both free and lent-only answers */
		for (int op = 0; op < 3000; op++) {
			uint64_t i = rnd() % nframes, len = 1 + rnd() % 300;

			if (i + len > nframes)
				len = nframes - i;
			switch (rnd() % 4) {
			case 0:
				vcma_fmap_reserve(&fm, i, len);
				break;
			case 1:
				vcma_fmap_unreserve(&fm, i, len);
				break;
			default:
				for (uint64_t k = 0; k < len; k += 1 + rnd() % 8)
					vcma_fmap_lend(&fm, i + k, 1, i + k, rnd() & 1);
				break;
			}
			if (op % 60)
				continue;
			assert_int_equal(vcma_fmap_check(&fm), 0);
			for (int q = 0; q < 4; q++) {
				uint64_t n = 1 + rnd() % (q < 2 ? 600 : 5000), cost, want;
				unsigned int order = (unsigned int)(q == 3 ? 8 + rnd() % 3 : rnd() % 10);
				struct vcma_window w;
				int rc;

				want = brute(&fm, n, order, &cost);
				rc = vcma_fmap_search(&fm, n, order, &w);
				if (want == UINT64_MAX) {
					assert_int_equal(rc, -ENOSPC);
					continue;
				}
				assert_int_equal(rc, 0);
				assert_int_equal(w.start, want);
				assert_int_equal(w.cost, cost);
			}
		}
		vcma_fmap_fini(&fm);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_free_first_fit),
		cmocka_unit_test(test_free_beats_lower_lent),
		cmocka_unit_test(test_lent_min_cost),
		cmocka_unit_test(test_alignment_is_absolute),
		cmocka_unit_test(test_no_window),
		cmocka_unit_test(test_random_multi_superblock),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
