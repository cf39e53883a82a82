/* SPDX-License-Identifier: MIT */
/*
 * bench-search.c - the window search (vcma_fmap_search) on a large, fragmented pool,
 * against the scans Linux CMA and a naive allocator would do, measured in the same run.
 *
 * Pool: --frames frames (default 16M = 64 GiB of 4 KiB frames), base mfn 0, default
 * vacate weights. About 70 % of it is occupied by a fragmented mix of regions (1..64
 * frames, claim + commit) and single lent frames, half and half by frame count.
 * Requests of 256 / 512 / 1024 / 2048 frames, aligned as the core aligns them:
 * order min(ceil(log2 n), 8), i.e. 256 frames for every size here.
 *
 *   (A) free window exists: no aligned free window exists naturally; one is planted
 *       at a random aligned position (its frames released / unlent), both searches
 *       run, the window is restored. Baseline: Linux bitmap_find_next_zero_area_off()
 *       over a bitmap whose set bits are the frames that are not FREE, with
 *       align_mask = 2^order - 1, as cma_alloc() calls it. Layout A has short free
 *       runs only (like the bitmap of the floors' probe, no all-zero 64-bit word);
 *       layout A2 puts a tenth of the free frames into runs of 64..511 frames, so
 *       free runs longer than the request exist but none holds an aligned window.
 *   (B) only windows holding lent frames: lent zones (no regions) between fragmented
 *       zones; one window at a random candidate position is lightened to cost 1 (the
 *       floor once no free window exists) or cost 2 (the search cannot stop early).
 *       Baseline: a naive frame-by-frame cost scan of every aligned position; the
 *       Linux bitmap scan failing is timed for reference (CMA would then have to
 *       migrate window by window).
 *   (C) no window at all: every granule holds a region frame; -ENOSPC vs the Linux
 *       scan failing.
 *
 * Every timed answer is checked against its baseline; a disagreement is reported and
 * makes the program exit 2 (a benchmark must not time a wrong answer). Targets are
 * reported as PASS / MISS and do not change the exit status.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fmap.h"
#include "pool_config.h"

#define NSIZES 4
static const uint64_t g_sizes[NSIZES] = {256, 512, 1024, 2048};
#define MAX_WINDOW 2048u

#define REGION_GUEST 1u
#define LEND_GUEST 2u
#define OCCUPANCY 0.70
#define LINUX_STRUCT_PAGE 64.0

/* Targets from the issue. */
#define TARGET_FREE_MEDIAN_US 5.0
#define TARGET_FREE_SPEEDUP 10.0
#define TARGET_LENT_MEDIAN_US 100.0
#define TARGET_META_BYTES 16.0

#define BLOCKED_COST UINT32_MAX

#define barrier() __asm__ __volatile__("" ::: "memory")

enum { FREE = VCMA_FRAME_FREE, LF = VCMA_FRAME_LENT_FREE, LU = VCMA_FRAME_LENT_USED,
       REGION = VCMA_FRAME_REGION, RESERVED = VCMA_FRAME_RESERVED };

static int g_exit; /* 2 once vcma and a baseline (or the mirror) disagree */
static unsigned int g_pass, g_miss;

/* ---------------------------------------------------------------- utilities */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static inline uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* Uniform in [0, n); the modulo bias is < 2^-40 for every n used here. */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double secs_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e9;
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p) {
		fprintf(stderr, "bench-search: out of memory (%zu x %zu bytes)\n", n, sz);
		exit(1);
	}
	return p;
}

static void lib_error(const char *what, uint64_t idx, uint64_t n, int rc)
{
	fprintf(stderr,
		"bench-search: LIBRARY ERROR: %s(idx=%" PRIu64 ", n=%" PRIu64 ") = %d (%s) on a "
		"valid transition\n",
		what, idx, n, rc, strerror(rc < 0 ? -rc : rc));
	exit(2);
}

static const char *state_name(unsigned int s)
{
	static const char *const names[] = {"FREE", "LENT_FREE", "LENT_USED", "REGION",
					    "RESERVED"};
	return s < VCMA_FRAME_NSTATES ? names[s] : "?";
}

static unsigned int align_order_for(uint64_t n)
{
	unsigned int o = 0;
	while ((1ull << o) < n)
		o++;
	return o < VCMA_DEFAULT_ALIGN_ORDER ? o : VCMA_DEFAULT_ALIGN_ORDER;
}

/* ----------------------------------------------------- Linux baseline (lib/find_bit.c,
 * lib/bitmap.c), word at a time, 64-bit words; a set bit is a frame that is not FREE. */

static inline uint64_t find_next_bit(const uint64_t *addr, uint64_t size, uint64_t start)
{
	uint64_t idx, tmp;

	if (start >= size)
		return size;
	idx = start / 64;
	tmp = addr[idx] & (~0ull << (start & 63));
	while (!tmp) {
		if ((idx + 1) * 64 >= size)
			return size;
		idx++;
		tmp = addr[idx];
	}
	idx = idx * 64 + (uint64_t)__builtin_ctzll(tmp);
	return idx < size ? idx : size;
}

static inline uint64_t find_next_zero_bit(const uint64_t *addr, uint64_t size, uint64_t start)
{
	uint64_t idx, tmp;

	if (start >= size)
		return size;
	idx = start / 64;
	tmp = ~addr[idx] & (~0ull << (start & 63));
	while (!tmp) {
		if ((idx + 1) * 64 >= size)
			return size;
		idx++;
		tmp = ~addr[idx];
	}
	idx = idx * 64 + (uint64_t)__builtin_ctzll(tmp);
	return idx < size ? idx : size;
}

/* Returns the index of the area, or a value > size - nr when there is none (Linux
 * returns end = index + nr > size). */
static __attribute__((noinline)) uint64_t
bitmap_find_next_zero_area_off(const uint64_t *map, uint64_t size, uint64_t start, uint64_t nr,
			       uint64_t align_mask, uint64_t align_offset)
{
	uint64_t index, end, i;
again:
	index = find_next_zero_bit(map, size, start);
	/* __ALIGN_MASK(index + align_offset, align_mask) - align_offset */
	index = ((index + align_offset + align_mask) & ~align_mask) - align_offset;
	end = index + nr;
	if (end > size)
		return end;
	i = find_next_bit(map, end, index);
	if (i < end) {
		start = i + 1;
		goto again;
	}
	return index;
}

static inline bool linux_found(uint64_t ret, uint64_t size, uint64_t nr)
{
	return ret <= size - nr;
}

/* -------------------------------------------- naive cost scan: every aligned position,
 * frame by frame; a blocked frame ends the window and the scan resumes at the first
 * aligned position past it. Lowest cost wins, ties to the lowest address. */
static __attribute__((noinline)) bool naive_cost_scan(const uint8_t *st, uint64_t nframes,
						     uint64_t n, uint64_t align,
						     const uint32_t costtab[8], uint64_t *start,
						     uint64_t *cost)
{
	uint64_t best = UINT64_MAX, bstart = 0, mask = align - 1;

	for (uint64_t p = 0; p + n <= nframes;) {
		uint64_t c = 0, i;
		for (i = p; i < p + n; i++) {
			uint32_t w = costtab[st[i] & 7];
			if (w == BLOCKED_COST)
				break;
			c += w;
		}
		if (i < p + n) {
			p = (i + 1 + mask) & ~mask;
			continue;
		}
		if (c < best) {
			best = c;
			bstart = p;
			if (c == 0)
				break;
		}
		p += align;
	}
	if (best == UINT64_MAX)
		return false;
	*start = bstart;
	*cost = best;
	return true;
}

/* ------------------------------------------------------------- the pool + mirrors */

struct bench {
	struct vcma_fmap fm;
	bool live;
	uint64_t nframes;
	uint8_t *st;  /* mirror: state of every frame */
	uint64_t *bm; /* Linux bitmap: set = not FREE */
	uint64_t nwords;
	uint64_t cnt[VCMA_FRAME_NSTATES];
	uint32_t costtab[8];
};

static inline void mirror_set(struct bench *b, uint64_t i, uint8_t to)
{
	b->cnt[b->st[i]]--;
	b->cnt[to]++;
	b->st[i] = to;
	if (to == FREE)
		b->bm[i / 64] &= ~(1ull << (i & 63));
	else
		b->bm[i / 64] |= 1ull << (i & 63);
}

static void frame_to(struct bench *b, uint64_t i, uint8_t to)
{
	uint8_t from = b->st[i];
	int rc = 0;

	if (from == to)
		return;
	if ((from == LF || from == LU) && (to == LF || to == LU)) {
		rc = vcma_fmap_set_used(&b->fm, i, to == LU);
		if (rc)
			lib_error("vcma_fmap_set_used", i, 1, rc);
		mirror_set(b, i, to);
		return;
	}
	if (from == LF || from == LU) {
		rc = vcma_fmap_unlend(&b->fm, i);
		if (rc)
			lib_error("vcma_fmap_unlend", i, 1, rc);
	} else if (from == REGION) {
		rc = vcma_fmap_release_region(&b->fm, i, 1);
		if (rc)
			lib_error("vcma_fmap_release_region", i, 1, rc);
	}
	mirror_set(b, i, FREE);
	if (to == LF || to == LU) {
		rc = vcma_fmap_lend(&b->fm, i, LEND_GUEST, i, to == LU);
		if (rc)
			lib_error("vcma_fmap_lend", i, 1, rc);
	} else if (to == REGION) {
		rc = vcma_fmap_claim(&b->fm, i, 1);
		if (rc)
			lib_error("vcma_fmap_claim", i, 1, rc);
		rc = vcma_fmap_commit_region(&b->fm, i, 1, REGION_GUEST);
		if (rc)
			lib_error("vcma_fmap_commit_region", i, 1, rc);
	}
	mirror_set(b, i, to);
}

/* Bring [idx, idx+len) to want[], batching region runs into one range call. */
static void range_to(struct bench *b, uint64_t idx, uint64_t len, const uint8_t *want)
{
	uint64_t i = 0;

	while (i < len) {
		uint8_t from = b->st[idx + i], to = want[i];
		if (from == to) {
			i++;
			continue;
		}
		if ((from == REGION && to == FREE) || (from == FREE && to == REGION)) {
			uint64_t j = i + 1;
			int rc;
			while (j < len && b->st[idx + j] == from && want[j] == to)
				j++;
			if (to == FREE) {
				rc = vcma_fmap_release_region(&b->fm, idx + i, j - i);
				if (rc)
					lib_error("vcma_fmap_release_region", idx + i, j - i, rc);
			} else {
				rc = vcma_fmap_claim(&b->fm, idx + i, j - i);
				if (rc)
					lib_error("vcma_fmap_claim", idx + i, j - i, rc);
				rc = vcma_fmap_commit_region(&b->fm, idx + i, j - i, REGION_GUEST);
				if (rc)
					lib_error("vcma_fmap_commit_region", idx + i, j - i, rc);
			}
			for (uint64_t k = i; k < j; k++)
				mirror_set(b, idx + k, to);
			i = j;
			continue;
		}
		frame_to(b, idx + i, to);
		i++;
	}
}

static void bench_reset(struct bench *b)
{
	int rc;

	if (b->live)
		vcma_fmap_fini(&b->fm);
	memset(&b->fm, 0, sizeof b->fm);
	rc = vcma_fmap_init(&b->fm, 0, b->nframes, VCMA_DEFAULT_COST_LENT_FREE,
			    VCMA_DEFAULT_COST_LENT_USED);
	if (rc)
		lib_error("vcma_fmap_init", 0, b->nframes, rc);
	b->live = true;
	memset(b->st, FREE, b->nframes);
	memset(b->bm, 0, b->nwords * sizeof *b->bm);
	memset(b->cnt, 0, sizeof b->cnt);
	b->cnt[FREE] = b->nframes;
}

/* Compare the fmap with the mirror: vcma_fmap_check(), counts, every frame, the
 * largest free run. A difference is a library bug; it is reported and fails the run. */
static void verify_mirror(struct bench *b, const char *when)
{
	int rc = vcma_fmap_check(&b->fm);
	uint64_t bad = 0, run = 0, longest = 0;

	if (rc) {
		printf("!! %s: vcma_fmap_check() = %d: summaries disagree with the entries "
		       "(library bug)\n",
		       when, rc);
		g_exit = 2;
	}
	for (unsigned int s = 0; s < VCMA_FRAME_NSTATES; s++) {
		if (b->fm.count[s] != b->cnt[s]) {
			printf("!! %s: fmap count[%s] = %" PRIu64 ", expected %" PRIu64
			       " (library bug)\n",
			       when, state_name(s), b->fm.count[s], b->cnt[s]);
			g_exit = 2;
		}
	}
	if (b->fm.nclaimed) {
		printf("!! %s: fmap nclaimed = %" PRIu64 ", expected 0 (library bug)\n", when,
		       b->fm.nclaimed);
		g_exit = 2;
	}
	for (uint64_t i = 0; i < b->nframes; i++) {
		struct vcma_frame_info fi;
		rc = vcma_fmap_get(&b->fm, i, &fi);
		if (rc || fi.state != b->st[i] || fi.claimed) {
			if (bad++ < 5)
				printf("!! %s: frame %" PRIu64 ": vcma_fmap_get() = %d, state %s%s, "
				       "expected %s (library bug)\n",
				       when, i, rc, state_name(fi.state),
				       fi.claimed ? " claimed" : "", state_name(b->st[i]));
		}
		run = b->st[i] == FREE ? run + 1 : 0;
		if (run > longest)
			longest = run;
	}
	if (bad) {
		printf("!! %s: %" PRIu64 " frames differ from the mirror\n", when, bad);
		g_exit = 2;
	}
	if (vcma_fmap_largest_free_run(&b->fm) != longest) {
		printf("!! %s: vcma_fmap_largest_free_run() = %" PRIu64 ", expected %" PRIu64
		       " (library bug)\n",
		       when, vcma_fmap_largest_free_run(&b->fm), longest);
		g_exit = 2;
	}
}

/* ----------------------------------------------------------------- layouts */

struct scratch {
	uint8_t *item;  /* 0: one lent frame, 1..64: region of that many frames */
	uint32_t *gap;  /* free frames before item k */
	uint8_t *lay;   /* the layout being built */
};

/* Fill [start, start+len) of lay with regions (1..64 frames) and single lent frames,
 * half and half by frame count, density*len frames in all, the free frames spread
 * over the gaps at random (multinomial); with big_gaps, a tenth of the free frames
 * go into gaps of 64..511 frames, which may be longer than a request but misaligned. */
static uint64_t fill_mixed(struct scratch *sc, uint64_t start, uint64_t len, double density,
			   bool big_gaps, struct rng *r)
{
	uint64_t target = (uint64_t)(density * (double)len + 0.5), m = 0, sum = 0, f, pos;

	if (target > len)
		target = len;
	while (sum < target) {
		uint64_t sz;
		/* P(region) = 2/67 = 1/33.5: a region averages 32.5 frames, so region and
		 * lent frames come out even. */
		if (rng_below(r, 67) < 2) {
			sz = 1 + rng_below(r, 64);
			if (sz > target - sum)
				sz = target - sum;
			sc->item[m++] = (uint8_t)sz;
		} else {
			sz = 1;
			sc->item[m++] = 0;
		}
		sum += sz;
	}
	f = len - sum;
	memset(sc->gap, 0, (m + 1) * sizeof *sc->gap);
	if (big_gaps) {
		uint64_t fb = f / 10;
		while (fb >= 64) {
			uint64_t g = 64 + rng_below(r, 448);
			if (g > fb)
				g = fb;
			sc->gap[rng_below(r, m + 1)] += (uint32_t)g;
			fb -= g;
			f -= g;
		}
	}
	for (; f; f--)
		sc->gap[rng_below(r, m + 1)]++;
	pos = start;
	for (uint64_t k = 0; k <= m; k++) {
		pos += sc->gap[k];
		if (k == m)
			break;
		if (sc->item[k] == 0) {
			sc->lay[pos++] = rng_below(r, 2) ? LU : LF;
		} else {
			memset(sc->lay + pos, REGION, sc->item[k]);
			pos += sc->item[k];
		}
	}
	if (pos != start + len) {
		fprintf(stderr, "bench-search: internal error: layout filled %" PRIu64
				" of %" PRIu64 " frames\n",
			pos - start, len);
		exit(1);
	}
	return sum;
}

/* Give every full granule that is entirely FREE one frame of state `with` at a random
 * offset, so no aligned window of >= 256 frames is free. Returns how many. */
static uint64_t fixup_free_granules(uint8_t *lay, uint64_t nframes, uint8_t with, struct rng *r)
{
	uint64_t fixed = 0;

	for (uint64_t g = 0; (g + 1) * VCMA_FMAP_GRANULE <= nframes; g++) {
		const uint8_t *p = lay + g * VCMA_FMAP_GRANULE;
		uint64_t i = 0;
		while (i < VCMA_FMAP_GRANULE && p[i] == FREE)
			i++;
		if (i == VCMA_FMAP_GRANULE) {
			lay[g * VCMA_FMAP_GRANULE + rng_below(r, VCMA_FMAP_GRANULE)] = with;
			fixed++;
		}
	}
	return fixed;
}

static void layout_a(struct scratch *sc, uint64_t nframes, bool big_gaps, struct rng *r)
{
	memset(sc->lay, FREE, nframes);
	fill_mixed(sc, 0, nframes, OCCUPANCY, big_gaps, r);
	fixup_free_granules(sc->lay, nframes, LF, r);
}

/* Fragmented zones (1..48 granules) alternating with lent zones (1..16 granules, no
 * regions, half the frames lent, half of those in use); the fragmented zones are dense
 * enough that the whole pool is 70 % occupied. Returns the share of lent zones. */
static double layout_b(struct scratch *sc, uint64_t nframes, struct rng *r)
{
	uint64_t ngran = nframes / VCMA_FMAP_GRANULE, g = 0, nseg = 0, mixed = 0, occ = 0;
	uint64_t *seg = xcalloc(2 * (ngran + 2), sizeof *seg);
	double d;

	memset(sc->lay, FREE, nframes);
	while (g < ngran) {
		uint64_t lm = 1 + rng_below(r, 48), ll = 1 + rng_below(r, 16);
		if (lm > ngran - g)
			lm = ngran - g;
		seg[2 * nseg] = g * VCMA_FMAP_GRANULE;
		seg[2 * nseg + 1] = lm * VCMA_FMAP_GRANULE;
		nseg++;
		mixed += lm * VCMA_FMAP_GRANULE;
		g += lm;
		if (g >= ngran)
			break;
		if (ll > ngran - g)
			ll = ngran - g;
		for (uint64_t i = g * VCMA_FMAP_GRANULE; i < (g + ll) * VCMA_FMAP_GRANULE; i++) {
			uint64_t x = rng_below(r, 4);
			if (x >= 2) {
				sc->lay[i] = x == 3 ? LU : LF;
				occ++;
			}
		}
		g += ll;
	}
	/* the partial granule at the end, if any, joins the last fragmented zone */
	if (nframes % VCMA_FMAP_GRANULE) {
		uint64_t tail = nframes % VCMA_FMAP_GRANULE;
		if (nseg && seg[2 * (nseg - 1)] + seg[2 * (nseg - 1) + 1] == ngran * VCMA_FMAP_GRANULE) {
			seg[2 * (nseg - 1) + 1] += tail;
		} else {
			seg[2 * nseg] = ngran * VCMA_FMAP_GRANULE;
			seg[2 * nseg + 1] = tail;
			nseg++;
		}
		mixed += tail;
	}
	d = mixed ? (OCCUPANCY * (double)nframes - (double)occ) / (double)mixed : 0.0;
	if (d < 0.0)
		d = 0.0;
	if (d > 1.0)
		d = 1.0;
	for (uint64_t s = 0; s < nseg; s++)
		fill_mixed(sc, seg[2 * s], seg[2 * s + 1], d, false, r);
	fixup_free_granules(sc->lay, nframes, LU, r);
	free(seg);
	return 1.0 - (double)mixed / (double)nframes;
}

static void describe_layout(const struct bench *b, const char *name, double build_s,
			    double apply_s)
{
	uint64_t runs = 0, longest = 0, run = 0, ub = 0, ublongest = 0;
	double nf = (double)b->nframes;

	for (uint64_t i = 0; i < b->nframes; i++) {
		uint8_t s = b->st[i];
		if (s == FREE) {
			if (!run)
				runs++;
			run++;
			if (run > longest)
				longest = run;
		} else {
			run = 0;
		}
		ub = (s == REGION || s == RESERVED) ? 0 : ub + 1;
		if (ub > ublongest)
			ublongest = ub;
	}
	printf("layout %s  %.2f%% occupied: region %.2f%%, lent %.2f%% (lent_free %.2f%%, "
	       "lent_used %.2f%%)\n",
	       name, 100.0 * (nf - (double)b->cnt[FREE]) / nf, 100.0 * (double)b->cnt[REGION] / nf,
	       100.0 * (double)(b->cnt[LF] + b->cnt[LU]) / nf, 100.0 * (double)b->cnt[LF] / nf,
	       100.0 * (double)b->cnt[LU] / nf);
	printf("          %" PRIu64 " free runs, longest %" PRIu64 " frames; longest run without "
	       "region frames %" PRIu64 "; built in %.2f s, applied to the fmap in %.2f s "
	       "(%" PRIu64 " lends)\n",
	       runs, longest, ublongest, build_s, apply_s, b->cnt[LF] + b->cnt[LU]);
}

static void apply_layout(struct bench *b, struct scratch *sc, const char *name, double build_s)
{
	uint64_t t0;

	bench_reset(b);
	t0 = now_ns();
	range_to(b, 0, b->nframes, sc->lay);
	describe_layout(b, name, build_s, secs_since(t0));
	verify_mirror(b, name);
}

/* ----------------------------------------------------------------- statistics */

struct stat {
	double med, p99, max; /* microseconds */
	size_t n;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static struct stat summarize(uint64_t *ns, size_t n)
{
	struct stat s = {0, 0, 0, n};
	size_t k;

	if (!n)
		return s;
	qsort(ns, n, sizeof *ns, cmp_u64);
	s.med = (n & 1) ? (double)ns[n / 2] : ((double)ns[n / 2 - 1] + (double)ns[n / 2]) / 2.0;
	k = (size_t)((99 * n + 99) / 100); /* ceil(0.99 n) */
	s.p99 = (double)ns[k - 1];
	s.max = (double)ns[n - 1];
	s.med /= 1000.0;
	s.p99 /= 1000.0;
	s.max /= 1000.0;
	return s;
}

static const char *verdict(bool ok)
{
	if (ok)
		g_pass++;
	else
		g_miss++;
	return ok ? "PASS" : "MISS";
}

/* ----------------------------------------------------------------- scenarios */

struct opts {
	uint64_t nframes;
	uint64_t seed;
	uint64_t iters;
	bool quick;
};

static void scenario_a(struct bench *b, const struct opts *o, struct rng *r, const char *label,
		       const char *what)
{
	uint64_t *tv = xcalloc(o->iters, sizeof *tv), *tl = xcalloc(o->iters, sizeof *tl);
	uint8_t orig[MAX_WINDOW], want[MAX_WINDOW];

	memset(want, FREE, sizeof want);
	printf("\n(%s) free window exists%s: one aligned free window planted at a random "
	       "position, %" PRIu64 " positions per size\n",
	       label, what, o->iters);
	printf("    baseline: Linux bitmap_find_next_zero_area_off() from 0, word at a time, "
	       "align_mask = 2^order-1, %" PRIu64 " KiB bitmap (set = not FREE)\n",
	       b->nwords * 8 / 1024);
	printf("    window  align |  vcma_fmap_search   |  Linux bitmap scan   | speedup | "
	       "median <= %.0f µs | >= %.0fx\n",
	       TARGET_FREE_MEDIAN_US, TARGET_FREE_SPEEDUP);
	printf("    frames frames | median µs   p99 µs  | median µs    p99 µs  | (median)| "
	       "target          | target\n");

	for (int si = 0; si < NSIZES; si++) {
		uint64_t n = g_sizes[si], align, npos, done = 0;
		unsigned int order = align_order_for(n);
		struct vcma_window w;
		bool bad = false;
		int rc;

		align = 1ull << order;
		if (n > b->nframes) {
			printf("    %6" PRIu64 " %6" PRIu64 " | pool too small\n", n, align);
			continue;
		}
		npos = (b->nframes - n) / align + 1;

		/* nothing planted yet: neither search may find a free window */
		rc = vcma_fmap_search(&b->fm, n, order, &w);
		if (linux_found(bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n, align - 1, 0),
				b->nframes, n) ||
		    (rc == 0 && w.cost == 0)) {
			printf("!! (%s) n=%" PRIu64 ": a free window exists before planting: "
			       "vcma rc=%d start=%" PRIu64 " cost=%" PRIu64 "\n",
			       label, n, rc, rc ? 0 : w.start, rc ? 0 : w.cost);
			g_exit = 2;
		}

		for (uint64_t it = 0; it < o->iters; it++) {
			uint64_t p = rng_below(r, npos) * align, t0, t1, t2, lret = 0;
			memset(&w, 0, sizeof w);
			memcpy(orig, b->st + p, n);
			range_to(b, p, n, want);

			if (it & 1) {
				t0 = now_ns();
				barrier();
				lret = bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n,
								      align - 1, 0);
				barrier();
				t1 = now_ns();
				barrier();
				rc = vcma_fmap_search(&b->fm, n, order, &w);
				barrier();
				t2 = now_ns();
				tl[it] = t1 - t0;
				tv[it] = t2 - t1;
			} else {
				t0 = now_ns();
				barrier();
				rc = vcma_fmap_search(&b->fm, n, order, &w);
				barrier();
				t1 = now_ns();
				barrier();
				lret = bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n,
								      align - 1, 0);
				barrier();
				t2 = now_ns();
				tv[it] = t1 - t0;
				tl[it] = t2 - t1;
			}
			if (rc != 0 || w.start != p || w.cost != 0 || w.count != n ||
			    w.nfree != n || lret != p) {
				printf("!! (%s) n=%" PRIu64 " align=%" PRIu64 ": planted free window at "
				       "%" PRIu64 "; vcma_fmap_search rc=%d start=%" PRIu64
				       " count=%" PRIu64 " cost=%" PRIu64 " nfree=%" PRIu64
				       " nlf=%" PRIu64 " nlu=%" PRIu64 "; Linux scan %s %" PRIu64 "\n",
				       label, n, align, p, rc, w.start, w.count, w.cost, w.nfree,
				       w.nlent_free, w.nlent_used,
				       linux_found(lret, b->nframes, n) ? "found" : "no fit, ret",
				       lret);
				if (rc == 0)
					printf("   vcma_fmap_window_cost(%" PRIu64 ") = %" PRIu64
					       ", of the planted window = %" PRIu64 "\n",
					       w.start, vcma_fmap_window_cost(&b->fm, w.start, n),
					       vcma_fmap_window_cost(&b->fm, p, n));
				bad = true;
			}
			range_to(b, p, n, orig);
			if (bad)
				break;
			done++;
		}
		if (bad) {
			g_exit = 2;
			printf("    %6" PRIu64 " %6" PRIu64 " | MISMATCH: row not timed\n", n, align);
			continue;
		}
		{
			struct stat sv = summarize(tv, done), sl = summarize(tl, done);
			double sp = sv.med > 0 ? sl.med / sv.med : 0;
			printf("    %6" PRIu64 " %6" PRIu64 " | %9.2f %9.2f | %9.2f %9.2f | %6.1fx | "
			       "%-15s | %s\n",
			       n, align, sv.med, sv.p99, sl.med, sl.p99, sp,
			       verdict(sv.med <= TARGET_FREE_MEDIAN_US),
			       verdict(sp >= TARGET_FREE_SPEEDUP));
		}
		fflush(stdout);
	}
	free(tv);
	free(tl);
}

/* Aligned (granule) positions whose window of n frames holds no region/reserved frame. */
static uint64_t *candidates(const struct bench *b, uint64_t n, uint64_t align, uint64_t *ncand)
{
	uint64_t ngran = b->nframes / VCMA_FMAP_GRANULE, k = 0, per = align / VCMA_FMAP_GRANULE;
	uint64_t need = n / VCMA_FMAP_GRANULE, *c = xcalloc(ngran + 1, sizeof *c);
	uint32_t *runlen = xcalloc(ngran + 1, sizeof *runlen);

	for (uint64_t g = ngran; g-- > 0;) {
		const uint8_t *p = b->st + g * VCMA_FMAP_GRANULE;
		bool blocked = false;
		for (uint64_t i = 0; i < VCMA_FMAP_GRANULE; i++)
			blocked |= p[i] == REGION || p[i] == RESERVED;
		runlen[g] = blocked ? 0 : runlen[g + 1] + 1;
	}
	for (uint64_t g = 0; g < ngran; g += per ? per : 1)
		if (runlen[g] >= need)
			c[k++] = g * VCMA_FMAP_GRANULE;
	free(runlen);
	*ncand = k;
	return c;
}

static void scenario_b(struct bench *b, const struct opts *o, struct rng *r, uint64_t floor_k,
		       bool first)
{
	uint64_t *tv = xcalloc(o->iters, sizeof *tv), *tn = xcalloc(o->iters, sizeof *tn);
	uint64_t *tl = xcalloc(o->iters, sizeof *tl);
	uint8_t orig[MAX_WINDOW], want[MAX_WINDOW];

	printf("\n(B%" PRIu64 ") only windows holding lent frames: one candidate window at a random "
	       "position lightened to cost %" PRIu64 " (%" PRIu64 " lent_free frame%s)%s, "
	       "%" PRIu64 " positions per size\n",
	       floor_k, floor_k, floor_k, floor_k == 1 ? "" : "s",
	       floor_k == 1 ? ", the floor: a search may stop on it"
			    : ", above the floor: no early stop",
	       o->iters);
	if (first)
		printf("    baselines: naive frame-by-frame cost scan of every aligned position "
		       "(byte state array, resumes past a blocked frame);\n"
		       "               Linux bitmap scan, which fails here (CMA would then "
		       "migrate window by window)\n");
	printf("    window  cand |  vcma_fmap_search   |  naive cost scan     | speedup |  "
	       "Linux scan (no fit)  | median <= %.0f µs\n",
	       TARGET_LENT_MEDIAN_US);
	printf("    frames  wins | median µs   p99 µs  | median µs    p99 µs  | (median)| "
	       "median µs    p99 µs  | target\n");

	for (int si = 0; si < NSIZES; si++) {
		uint64_t n = g_sizes[si], align, ncand, *cand, done = 0, hits = 0;
		unsigned int order = align_order_for(n);
		bool bad = false;

		align = 1ull << order;
		cand = candidates(b, n, align, &ncand);
		if (!ncand || n > b->nframes) {
			printf("    %6" PRIu64 " %5" PRIu64 " | no candidate window in this pool\n", n,
			       ncand);
			free(cand);
			continue;
		}
		for (uint64_t it = 0; it < o->iters; it++) {
			uint64_t p = cand[rng_below(r, ncand)], t0, t1, t2, t3, lret = 0;
			uint64_t ns = 0, nc = 0;
			struct vcma_window w;
			bool nfound = false;
			int rc;

			memset(&w, 0, sizeof w);
			memcpy(orig, b->st + p, n);
			memset(want, FREE, n);
			for (uint64_t k = 0; k < floor_k; k++) {
				uint64_t off;
				do
					off = rng_below(r, n);
				while (want[off] != FREE);
				want[off] = LF;
			}
			range_to(b, p, n, want);

			/* The naive scan streams 16 MiB of state and goes first; vcma and the
			 * Linux scan then alternate, so each sees the same cache conditions. */
			t0 = now_ns();
			barrier();
			nfound = naive_cost_scan(b->st, b->nframes, n, align, b->costtab, &ns, &nc);
			barrier();
			t1 = now_ns();
			tn[it] = t1 - t0;
			if (it & 1) {
				t1 = now_ns();
				barrier();
				lret = bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n,
								      align - 1, 0);
				barrier();
				t2 = now_ns();
				barrier();
				rc = vcma_fmap_search(&b->fm, n, order, &w);
				barrier();
				t3 = now_ns();
				tl[it] = t2 - t1;
				tv[it] = t3 - t2;
			} else {
				t1 = now_ns();
				barrier();
				rc = vcma_fmap_search(&b->fm, n, order, &w);
				barrier();
				t2 = now_ns();
				barrier();
				lret = bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n,
								      align - 1, 0);
				barrier();
				t3 = now_ns();
				tv[it] = t2 - t1;
				tl[it] = t3 - t2;
			}
			if (!nfound || rc != 0 || w.start != ns || w.cost != nc || w.count != n ||
			    w.nfree + w.nlent_free + w.nlent_used != n ||
			    w.nlent_free * b->fm.cost_lf + w.nlent_used * b->fm.cost_lu != w.cost ||
			    linux_found(lret, b->nframes, n)) {
				printf("!! (B%" PRIu64 ") n=%" PRIu64 " align=%" PRIu64
				       ": window at %" PRIu64 " lightened to cost %" PRIu64
				       "; vcma_fmap_search rc=%d start=%" PRIu64 " count=%" PRIu64
				       " cost=%" PRIu64 " nfree=%" PRIu64 " nlf=%" PRIu64
				       " nlu=%" PRIu64 "; naive %s start=%" PRIu64 " cost=%" PRIu64
				       "; Linux scan %s\n",
				       floor_k, n, align, p, floor_k, rc, w.start, w.count, w.cost,
				       w.nfree, w.nlent_free, w.nlent_used,
				       nfound ? "found" : "none", ns, nc,
				       linux_found(lret, b->nframes, n) ? "FOUND a free window"
									 : "no fit");
				if (rc == 0)
					printf("   vcma_fmap_window_cost(%" PRIu64 ") = %" PRIu64 "\n",
					       w.start, vcma_fmap_window_cost(&b->fm, w.start, n));
				if (nfound)
					printf("   vcma_fmap_window_cost(%" PRIu64 ") = %" PRIu64 "\n", ns,
					       vcma_fmap_window_cost(&b->fm, ns, n));
				bad = true;
			}
			hits += ns == p;
			range_to(b, p, n, orig);
			if (bad)
				break;
			done++;
		}
		free(cand);
		if (bad) {
			g_exit = 2;
			printf("    %6" PRIu64 " %5" PRIu64 " | MISMATCH: row not timed\n", n, ncand);
			continue;
		}
		{
			struct stat sv = summarize(tv, done), sn = summarize(tn, done),
				    sl = summarize(tl, done);
			double sp = sv.med > 0 ? sn.med / sv.med : 0;
			printf("    %6" PRIu64 " %5" PRIu64 " | %9.2f %9.2f | %9.2f %9.2f | %6.0fx | "
			       "%9.2f %9.2f | %s\n",
			       n, ncand, sv.med, sv.p99, sn.med, sn.p99, sp, sl.med, sl.p99,
			       verdict(sv.med <= TARGET_LENT_MEDIAN_US));
			if (hits != done)
				printf("           (the planted window was the answer in %" PRIu64
				       " of %" PRIu64 " searches; a natural window was as cheap)\n",
				       hits, done);
		}
		fflush(stdout);
	}
	free(tv);
	free(tn);
	free(tl);
}

/* Put a region frame into every granule that has none: then no window exists. */
static void block_every_granule(struct bench *b, struct rng *r)
{
	for (uint64_t g = 0; (g + 1) * VCMA_FMAP_GRANULE <= b->nframes; g++) {
		const uint8_t *p = b->st + g * VCMA_FMAP_GRANULE;
		bool blocked = false;
		for (uint64_t i = 0; i < VCMA_FMAP_GRANULE; i++)
			blocked |= p[i] == REGION || p[i] == RESERVED;
		if (!blocked)
			frame_to(b, g * VCMA_FMAP_GRANULE + rng_below(r, VCMA_FMAP_GRANULE), REGION);
	}
}

static void scenario_c(struct bench *b, const struct opts *o)
{
	uint64_t *tv = xcalloc(o->iters, sizeof *tv), *tl = xcalloc(o->iters, sizeof *tl);

	printf("\n(C) no window at all (layout B with a region frame added to every granule "
	       "that had none), %" PRIu64 " searches per size\n",
	       o->iters);
	printf("    window  align |  vcma -ENOSPC       |  Linux scan (no fit) | speedup\n");
	printf("    frames frames | median µs   p99 µs  | median µs    p99 µs  | (median)\n");
	for (int si = 0; si < NSIZES; si++) {
		uint64_t n = g_sizes[si], align, done = 0, ns = 0, nc = 0;
		unsigned int order = align_order_for(n);
		bool bad = false;

		align = 1ull << order;
		if (n > b->nframes)
			continue;
		if (naive_cost_scan(b->st, b->nframes, n, align, b->costtab, &ns, &nc)) {
			printf("!! (C) n=%" PRIu64 ": layout still has a window at %" PRIu64
			       " (bench bug)\n",
			       n, ns);
			g_exit = 2;
			continue;
		}
		for (uint64_t it = 0; it < o->iters; it++) {
			struct vcma_window w;
			uint64_t t0, t1, t2, lret;
			int rc;

			if (it & 1) {
				t0 = now_ns();
				barrier();
				lret = bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n,
								      align - 1, 0);
				barrier();
				t1 = now_ns();
				barrier();
				rc = vcma_fmap_search(&b->fm, n, order, &w);
				barrier();
				t2 = now_ns();
				tl[it] = t1 - t0;
				tv[it] = t2 - t1;
			} else {
				t0 = now_ns();
				barrier();
				rc = vcma_fmap_search(&b->fm, n, order, &w);
				barrier();
				t1 = now_ns();
				barrier();
				lret = bitmap_find_next_zero_area_off(b->bm, b->nframes, 0, n,
								      align - 1, 0);
				barrier();
				t2 = now_ns();
				tv[it] = t1 - t0;
				tl[it] = t2 - t1;
			}
			if (rc != -ENOSPC || linux_found(lret, b->nframes, n)) {
				printf("!! (C) n=%" PRIu64 ": no window exists; vcma_fmap_search rc=%d "
				       "(expected -ENOSPC)",
				       n, rc);
				if (rc == 0)
					printf(" start=%" PRIu64 " cost=%" PRIu64
					       ", vcma_fmap_window_cost there = %" PRIu64,
					       w.start, w.cost, vcma_fmap_window_cost(&b->fm, w.start, n));
				printf("; Linux scan %s\n",
				       linux_found(lret, b->nframes, n) ? "FOUND one" : "no fit");
				bad = true;
				break;
			}
			done++;
		}
		if (bad) {
			g_exit = 2;
			printf("    %6" PRIu64 " %6" PRIu64 " | MISMATCH: row not timed\n", n, align);
			continue;
		}
		{
			struct stat sv = summarize(tv, done), sl = summarize(tl, done);
			printf("    %6" PRIu64 " %6" PRIu64 " | %9.2f %9.2f | %9.2f %9.2f | %6.1fx\n", n,
			       align, sv.med, sv.p99, sl.med, sl.p99, sv.med > 0 ? sl.med / sv.med : 0);
		}
		fflush(stdout);
	}
	free(tv);
	free(tl);
}

/* ----------------------------------------------------------------- main */

static int usage(FILE *f, int rc)
{
	fprintf(f,
		"usage: bench-search [--frames N] [--seed S] [--iterations I] [--quick]\n"
		"  --frames N       pool size in 4 KiB frames, K/M/G suffixes are binary "
		"(default 16M = 64 GiB)\n"
		"  --seed S         layout and position seed (default 1)\n"
		"  --iterations I   searches per table row (default 400)\n"
		"  --quick          smoke run: 1M frames, 20 iterations (explicit options win)\n"
		"Exit status: 0 (targets are reported, not enforced), 1 bad usage, 2 vcma and a\n"
		"baseline disagreed or the library misbehaved.\n");
	return rc;
}

static bool parse_u64(const char *s, uint64_t *out, bool suffix)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	if (suffix && *end) {
		unsigned int sh = 0;
		switch (*end) {
		case 'k': case 'K': sh = 10; break;
		case 'm': case 'M': sh = 20; break;
		case 'g': case 'G': sh = 30; break;
		default: return false;
		}
		if (v > (UINT64_MAX >> sh))
			return false;
		v <<= sh;
		end++;
	}
	if (*end)
		return false;
	*out = v;
	return true;
}

static int pin_one_cpu(void)
{
	cpu_set_t set;
	int cpu = -1;

	if (sched_getaffinity(0, sizeof set, &set))
		return -1;
	for (int c = CPU_SETSIZE - 1; c >= 0; c--) {
		if (CPU_ISSET(c, &set)) {
			cpu = c;
			break;
		}
	}
	if (cpu < 0)
		return -1;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set))
		return -1;
	return cpu;
}

int main(int argc, char **argv)
{
	struct opts o = {0, 1, 0, false};
	bool have_frames = false, have_iters = false;
	struct bench b;
	struct scratch sc;
	struct rng r;
	uint64_t t0, tstart = now_ns();
	double share, meta;
	int cpu;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL, *eq = strchr(a, '=');
		char key[32];
		size_t kl = eq ? (size_t)(eq - a) : strlen(a);

		if (kl >= sizeof key)
			return usage(stderr, 1);
		memcpy(key, a, kl);
		key[kl] = 0;
		if (!strcmp(key, "--help") || !strcmp(key, "-h"))
			return usage(stdout, 0);
		if (!strcmp(key, "--quick")) {
			o.quick = true;
			continue;
		}
		if (strcmp(key, "--frames") && strcmp(key, "--seed") && strcmp(key, "--iterations")) {
			fprintf(stderr, "bench-search: unknown option '%s'\n", a);
			return usage(stderr, 1);
		}
		v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
		if (!strcmp(key, "--frames")) {
			if (!parse_u64(v, &o.nframes, true)) {
				fprintf(stderr, "bench-search: bad --frames '%s'\n", v ? v : "");
				return 1;
			}
			have_frames = true;
		} else if (!strcmp(key, "--seed")) {
			if (!parse_u64(v, &o.seed, false)) {
				fprintf(stderr, "bench-search: bad --seed '%s'\n", v ? v : "");
				return 1;
			}
		} else {
			if (!parse_u64(v, &o.iters, false) || o.iters == 0 || o.iters > 100000000) {
				fprintf(stderr, "bench-search: bad --iterations '%s'\n", v ? v : "");
				return 1;
			}
			have_iters = true;
		}
	}
	if (!have_frames)
		o.nframes = o.quick ? (1ull << 20) : (16ull << 20);
	if (!have_iters)
		o.iters = o.quick ? 20 : 400;
	if (o.nframes < 2 * MAX_WINDOW || o.nframes > (1ull << 32)) {
		fprintf(stderr, "bench-search: --frames must be between %u and 4G (got %" PRIu64 ")\n",
			2 * MAX_WINDOW, o.nframes);
		return 1;
	}

	cpu = pin_one_cpu();
	rng_seed(&r, o.seed);

	memset(&b, 0, sizeof b);
	b.nframes = o.nframes;
	b.nwords = (o.nframes + 63) / 64;
	b.st = xcalloc(o.nframes, 1);
	b.bm = xcalloc(b.nwords, sizeof *b.bm);
	for (int s = 0; s < 8; s++)
		b.costtab[s] = BLOCKED_COST;
	b.costtab[FREE] = 0;
	b.costtab[LF] = VCMA_DEFAULT_COST_LENT_FREE;
	b.costtab[LU] = VCMA_DEFAULT_COST_LENT_USED;
	sc.item = xcalloc(o.nframes, 1);
	sc.gap = xcalloc(o.nframes + 1, sizeof *sc.gap);
	sc.lay = xcalloc(o.nframes, 1);

	printf("bench-search: vcma_fmap_search vs Linux CMA bitmap_find_next_zero_area_off%s\n",
	       o.quick ? " (--quick smoke run)" : "");
	printf("pool      %" PRIu64 " frames = %.2f GiB of 4 KiB frames, base mfn 0, weights "
	       "lent_free %u lent_used %u, alignment order min(ceil(log2 n), %u)\n",
	       o.nframes, (double)o.nframes / 262144.0, VCMA_DEFAULT_COST_LENT_FREE,
	       VCMA_DEFAULT_COST_LENT_USED, VCMA_DEFAULT_ALIGN_ORDER);
	if (cpu >= 0)
		printf("run       seed %" PRIu64 ", %" PRIu64 " searches per row, pinned to CPU %d, "
		       "CLOCK_MONOTONIC around each search\n",
		       o.seed, o.iters, cpu);
	else
		printf("run       seed %" PRIu64 ", %" PRIu64 " searches per row, NOT pinned "
		       "(sched_setaffinity failed), CLOCK_MONOTONIC around each search\n",
		       o.seed, o.iters);
	fflush(stdout);

	/* ---- layout A: short free runs only (as in the floors' bitmap probe) */
	t0 = now_ns();
	layout_a(&sc, o.nframes, false, &r);
	apply_layout(&b, &sc, "A", secs_since(t0));
	meta = (double)vcma_fmap_metadata_bytes(&b.fm) / (double)o.nframes;
	printf("metadata  vcma %.2f B/frame (%.1f MiB) | Linux %.0f B/frame struct page "
	       "(+%.3f B/frame CMA bitmap) | target <= %.0f B/frame: %s\n",
	       meta, (double)vcma_fmap_metadata_bytes(&b.fm) / 1048576.0, LINUX_STRUCT_PAGE,
	       1.0 / 8.0, TARGET_META_BYTES, verdict(meta <= TARGET_META_BYTES));
	fflush(stdout);
	scenario_a(&b, &o, &r, "A", "");
	verify_mirror(&b, "after (A)");

	/* ---- layout A2: a tenth of the free frames in runs of 64..511 frames, so runs
	 * longer than a request exist but none holds an aligned window */
	printf("\n");
	t0 = now_ns();
	layout_a(&sc, o.nframes, true, &r);
	apply_layout(&b, &sc, "A2", secs_since(t0));
	scenario_a(&b, &o, &r, "A2",
		   ", free runs up to 511 frames (longer than n but misaligned)");
	verify_mirror(&b, "after (A2)");

	/* ---- layout B */
	printf("\n");
	t0 = now_ns();
	share = layout_b(&sc, o.nframes, &r);
	apply_layout(&b, &sc, "B", secs_since(t0));
	printf("          lent zones (no regions, 50%% lent) cover %.1f%% of the pool\n",
	       100.0 * share);
	fflush(stdout);
	scenario_b(&b, &o, &r, 1, true);
	scenario_b(&b, &o, &r, 2, false);
	verify_mirror(&b, "after (B)");

	/* ---- C: layout B, every granule blocked */
	block_every_granule(&b, &r);
	verify_mirror(&b, "layout C");
	scenario_c(&b, &o);

	printf("\ntargets   %u PASS, %u MISS; total run time %.1f s\n", g_pass, g_miss,
	       secs_since(tstart));
	if (g_exit)
		printf("RESULT    vcma and a baseline DISAGREED (or the library misbehaved): see the "
		       "lines marked !!\n");
	vcma_fmap_fini(&b.fm);
	free(b.st);
	free(b.bm);
	free(sc.item);
	free(sc.gap);
	free(sc.lay);
	return g_exit;
}
