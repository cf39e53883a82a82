/* SPDX-License-Identifier: MIT */
/*
 * test_model.c - seeded randomized model test of hv/core against a brute-force reference.
 *
 * Phase 1 (fmap): random small pools (1..3000 frames, some up to 40k to cross
 * superblocks), random unaligned bases and vacate weights. Every mutator is applied
 * to the library and to a plain per-frame array; the model decides whether the call
 * is legal (the transition rules of fmap.h), the library must return 0 exactly then
 * and a negative errno otherwise, leaving the map untouched. Searches, window costs,
 * lent-frame lists and the largest free run are compared with brute force.
 *
 * Phase 2 (core): a vcma_core with 2-3 pools, several guests, random allocations
 * (with vacate hooks that succeed, fail half-way or lie), frees with valid, stale,
 * foreign and garbage handles, lending, and guest release. Every allocation must land
 * on the window brute force picks; counters, stats and per-guest usage must agree
 * with a tally kept here.
 *
 * Seed: env VCMA_SEED (any strtoull base-0 number), else a fixed default; printed
 * first so a failure reproduces. VCMA_MODEL_SCALE (integer >= 1) multiplies the
 * number of operations for longer soaks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "fmap.h"

#define DEFAULT_SEED 0x5eed0fc0ffee2024ull
#define PHASE1_OPS 110000ull
#define PHASE2_OPS 100000ull

/* ------------------------------------------------------------------------------------ */
/* Failure reporting                                                                    */

static uint64_t g_seed = DEFAULT_SEED;
static uint64_t g_scale = 1;
static const char *g_phase = "";
static uint64_t g_op;      /* library operations issued in the current phase */
static uint64_t g_steps;   /* random steps of the main loops (each one or more ops) */
static uint64_t g_ops_total;
static char g_ctx[320];    /* the operation being checked */
static char g_pool_ctx[160];

static void set_ctx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_ctx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g_ctx, sizeof(g_ctx), fmt, ap);
	va_end(ap);
}

#define CHECK(cond, ...)                                                                      \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			fprintf(stderr,                                                       \
				"\nMODEL FAILURE %s:%d: %s\n  seed=0x%016" PRIx64 " (VCMA_SEED)" \
				" phase=%s op#%" PRIu64 "\n  pool: %s\n  op: %s\n  ",          \
				__FILE__, __LINE__, #cond, g_seed, g_phase, g_op, g_pool_ctx,   \
				g_ctx);                                                       \
			fprintf(stderr, __VA_ARGS__);                                         \
			fprintf(stderr, "\n");                                                \
			fail_msg("model mismatch, seed 0x%016" PRIx64, g_seed);              \
		}                                                                             \
	} while (0)

/* What the run exercised, printed per phase so a weak run is visible. */
static struct {
	uint64_t ok, rejected;
	uint64_t search_free, search_lent, search_nospc, search_inval;
	uint64_t wcost, wcost_blocked, collect, collect_truncated;
	uint64_t alloc_plain, alloc_vacated, alloc_hook_fail, alloc_hook_lie, alloc_busy,
		alloc_nospc, alloc_refused, alloc_garbage;
	uint64_t free_ok, free_enoent, released;
} cov;

static void expect_ret(int ret, bool legal)
{
	if (legal)
		cov.ok++;
	else
		cov.rejected++;
	if (legal)
		CHECK(ret == 0, "expected success (legal per model), got %d", ret);
	else
		CHECK(ret < 0 && ret > -4096, "expected a negative errno (illegal per model), got %d",
		      ret);
}

/* ------------------------------------------------------------------------------------ */
/* PRNG: splitmix64                                                                     */

struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}

/* inclusive */
static uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	if (hi - lo == UINT64_MAX)
		return rng_next(r);
	return lo + rng_below(r, hi - lo + 1);
}

static bool rng_chance(struct rng *r, uint64_t num, uint64_t den)
{
	return rng_below(r, den) < num;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static unsigned int ilog2_floor(uint64_t v)
{
	unsigned int k = 0;

	while (v > 1) {
		v >>= 1;
		k++;
	}
	return k;
}

/* smallest k with 2^k >= v (v >= 1) */
static unsigned int ilog2_ceil(uint64_t v)
{
	unsigned int k = 0;

	while (k < 64 && (1ull << k) < v)
		k++;
	return k;
}

/* ------------------------------------------------------------------------------------ */
/* Reference model of one frame map                                                     */

struct mf {
	uint8_t state;
	uint8_t claimed;
	uint32_t guest;
	uint64_t gfn;
};

struct fmodel {
	uint64_t base, n;
	uint32_t clf, clu;
	struct mf *f;
	uint64_t count[VCMA_FRAME_NSTATES];
	uint64_t nclaimed;
	bool dirty;
	/* prefix sums over [0, p): blocked, cost, FREE, LENT_FREE, LENT_USED */
	uint64_t *pblk, *pcost, *pnf, *pnlf, *pnlu;
};

static void model_init(struct fmodel *m, uint64_t base, uint64_t n, uint32_t clf, uint32_t clu)
{
	memset(m, 0, sizeof(*m));
	m->base = base;
	m->n = n;
	m->clf = clf;
	m->clu = clu;
	m->f = calloc(n, sizeof(*m->f));
	m->pblk = calloc(n + 1, sizeof(uint64_t));
	m->pcost = calloc(n + 1, sizeof(uint64_t));
	m->pnf = calloc(n + 1, sizeof(uint64_t));
	m->pnlf = calloc(n + 1, sizeof(uint64_t));
	m->pnlu = calloc(n + 1, sizeof(uint64_t));
	assert_non_null(m->f);
	assert_non_null(m->pblk);
	assert_non_null(m->pcost);
	assert_non_null(m->pnf);
	assert_non_null(m->pnlf);
	assert_non_null(m->pnlu);
	m->count[VCMA_FRAME_FREE] = n;
	m->dirty = true;
}

static void model_fini(struct fmodel *m)
{
	free(m->f);
	free(m->pblk);
	free(m->pcost);
	free(m->pnf);
	free(m->pnlf);
	free(m->pnlu);
	memset(m, 0, sizeof(*m));
}

static bool mf_blocked(const struct mf *f)
{
	return f->state == VCMA_FRAME_REGION || f->state == VCMA_FRAME_RESERVED || f->claimed;
}

static bool mf_lent(const struct mf *f)
{
	return f->state == VCMA_FRAME_LENT_FREE || f->state == VCMA_FRAME_LENT_USED;
}

static bool mf_free_run(const struct mf *f)
{
	return f->state == VCMA_FRAME_FREE && !f->claimed;
}

static void mset(struct fmodel *m, uint64_t i, unsigned int state, bool claimed, uint32_t guest,
		 uint64_t gfn)
{
	struct mf *f = &m->f[i];

	m->count[f->state]--;
	m->nclaimed -= f->claimed;
	f->state = (uint8_t)state;
	f->claimed = claimed;
	f->guest = guest;
	f->gfn = gfn;
	m->count[state]++;
	m->nclaimed += claimed;
	m->dirty = true;
}

static bool range_ok(const struct fmodel *m, uint64_t idx, uint64_t n)
{
	return n >= 1 && idx < m->n && n <= m->n - idx;
}

static void model_prefix(struct fmodel *m)
{
	if (!m->dirty)
		return;
	for (uint64_t i = 0; i < m->n; i++) {
		const struct mf *f = &m->f[i];
		uint64_t c = 0;

		if (f->state == VCMA_FRAME_LENT_FREE)
			c = m->clf;
		else if (f->state == VCMA_FRAME_LENT_USED)
			c = m->clu;
		m->pblk[i + 1] = m->pblk[i] + mf_blocked(f);
		m->pcost[i + 1] = m->pcost[i] + c;
		m->pnf[i + 1] = m->pnf[i] + (f->state == VCMA_FRAME_FREE);
		m->pnlf[i + 1] = m->pnlf[i] + (f->state == VCMA_FRAME_LENT_FREE);
		m->pnlu[i + 1] = m->pnlu[i] + (f->state == VCMA_FRAME_LENT_USED);
	}
	m->dirty = false;
}

/* The reference search: every aligned start, least cost, lowest address. */
static int brute_search(struct fmodel *m, uint64_t n, unsigned int order, struct vcma_window *w)
{
	uint64_t step, p0, best = 0, bestc = UINT64_MAX;
	bool found = false;

	if (n == 0 || n > m->n || order > VCMA_FMAP_MAX_ORDER)
		return -EINVAL;
	model_prefix(m);
	step = 1ull << order;
	p0 = (step - (m->base & (step - 1))) & (step - 1);
	for (uint64_t p = p0; p < m->n && n <= m->n - p; p += step) {
		uint64_t c;

		if (m->pblk[p + n] != m->pblk[p])
			continue;
		c = m->pcost[p + n] - m->pcost[p];
		if (!found || c < bestc) {
			found = true;
			bestc = c;
			best = p;
			if (c == 0)
				break;
		}
	}
	if (!found)
		return -ENOSPC;
	memset(w, 0, sizeof(*w));
	w->start = best;
	w->count = n;
	w->cost = bestc;
	w->nfree = m->pnf[best + n] - m->pnf[best];
	w->nlent_free = m->pnlf[best + n] - m->pnlf[best];
	w->nlent_used = m->pnlu[best + n] - m->pnlu[best];
	return 0;
}

static uint64_t brute_window_cost(struct fmodel *m, uint64_t idx, uint64_t n)
{
	if (!range_ok(m, idx, n))
		return UINT64_MAX;
	model_prefix(m);
	if (m->pblk[idx + n] != m->pblk[idx])
		return UINT64_MAX;
	return m->pcost[idx + n] - m->pcost[idx];
}

static uint64_t brute_largest_free(const struct fmodel *m)
{
	uint64_t best = 0, cur = 0;

	for (uint64_t i = 0; i < m->n; i++) {
		if (mf_free_run(&m->f[i])) {
			if (++cur > best)
				best = cur;
		} else {
			cur = 0;
		}
	}
	return best;
}

static size_t brute_collect(const struct fmodel *m, uint64_t idx, uint64_t n,
			    struct vcma_vacate_item *items, size_t max)
{
	size_t k = 0;

	for (uint64_t i = idx; i < idx + n && i < m->n; i++) {
		const struct mf *f = &m->f[i];

		if (!mf_lent(f))
			continue;
		if (k < max) {
			items[k].idx = i;
			items[k].guest = f->guest;
			items[k].state = (enum vcma_frame_state)f->state;
			items[k].gfn = f->gfn;
		}
		k++;
	}
	return k;
}

static const char *state_name(unsigned int s)
{
	static const char *const names[] = {"FREE", "LENT_FREE", "LENT_USED", "REGION",
					    "RESERVED"};

	return s < VCMA_FRAME_NSTATES ? names[s] : "?";
}

/* ------------------------------------------------------------------------------------ */
/* Comparing library and model                                                          */

static void cmp_frame(const struct vcma_fmap *fm, const struct fmodel *m, uint64_t i)
{
	struct vcma_frame_info fi;
	const struct mf *f = &m->f[i];
	int ret;

	memset(&fi, 0, sizeof(fi));
	ret = vcma_fmap_get(fm, i, &fi);
	CHECK(ret == 0, "vcma_fmap_get(%" PRIu64 ") = %d", i, ret);
	CHECK((unsigned int)fi.state == f->state && fi.claimed == (bool)f->claimed,
	      "frame %" PRIu64 ": library %s%s, model %s%s", i, state_name(fi.state),
	      fi.claimed ? "+claimed" : "", state_name(f->state), f->claimed ? "+claimed" : "");
	if (mf_lent(f))
		CHECK(fi.guest == f->guest && fi.gfn == f->gfn,
		      "frame %" PRIu64 " (%s): library guest %u gfn 0x%" PRIx64
		      ", model guest %u gfn 0x%" PRIx64,
		      i, state_name(f->state), fi.guest, fi.gfn, f->guest, f->gfn);
	if (f->state == VCMA_FRAME_REGION)
		CHECK(fi.guest == f->guest, "region frame %" PRIu64 ": library owner %u, model %u",
		      i, fi.guest, f->guest);
}

static void cmp_counts(const struct vcma_fmap *fm, const struct fmodel *m)
{
	for (unsigned int s = 0; s < VCMA_FRAME_NSTATES; s++)
		CHECK(fm->count[s] == m->count[s], "count[%s]: library %" PRIu64 ", model %" PRIu64,
		      state_name(s), fm->count[s], m->count[s]);
	CHECK(fm->nclaimed == m->nclaimed, "nclaimed: library %" PRIu64 ", model %" PRIu64,
	      fm->nclaimed, m->nclaimed);
}

static void cmp_all(const struct vcma_fmap *fm, const struct fmodel *m)
{
	int ret;

	cmp_counts(fm, m);
	for (uint64_t i = 0; i < m->n; i++)
		cmp_frame(fm, m, i);
	ret = vcma_fmap_check(fm);
	CHECK(ret == 0, "vcma_fmap_check() = %d", ret);
}

static void cmp_largest(const struct vcma_fmap *fm, const struct fmodel *m)
{
	uint64_t got = vcma_fmap_largest_free_run(fm), exp = brute_largest_free(m);

	CHECK(got == exp, "largest_free_run: library %" PRIu64 ", brute force %" PRIu64, got, exp);
}

/* Frames [idx, idx+n) clamped to the pool, plus one neighbour on each side. */
static void cmp_local(const struct vcma_fmap *fm, const struct fmodel *m, uint64_t idx, uint64_t n)
{
	uint64_t lo, hi;

	cmp_counts(fm, m);
	if (idx >= m->n || n == 0)
		return;
	lo = idx ? idx - 1 : 0;
	hi = n > m->n - idx ? m->n : idx + n;
	if (hi < m->n)
		hi++;
	if (hi - lo > 4096)
		hi = lo + 4096;
	for (uint64_t i = lo; i < hi; i++)
		cmp_frame(fm, m, i);
}

/* ------------------------------------------------------------------------------------ */
/* Picking frames and runs                                                              */

enum pred { P_FREE_UNCL, P_RESERVED, P_REGION, P_CLAIMED, P_LENT, P_UNBLOCKED, P_LENT_UNCL };

static bool pred_ok(const struct mf *f, enum pred p)
{
	switch (p) {
	case P_FREE_UNCL:
		return mf_free_run(f);
	case P_RESERVED:
		return f->state == VCMA_FRAME_RESERVED;
	case P_REGION:
		return f->state == VCMA_FRAME_REGION;
	case P_CLAIMED:
		return f->claimed;
	case P_LENT:
		return mf_lent(f);
	case P_UNBLOCKED:
		return !mf_blocked(f);
	case P_LENT_UNCL:
		return mf_lent(f) && !f->claimed;
	}
	return false;
}

static bool pick_frame(struct rng *r, const struct fmodel *m, enum pred p, uint64_t *out)
{
	uint64_t s = rng_below(r, m->n);

	for (uint64_t k = 0; k < m->n; k++) {
		uint64_t i = s + k;

		if (i >= m->n)
			i -= m->n;
		if (pred_ok(&m->f[i], p)) {
			*out = i;
			return true;
		}
	}
	return false;
}

/* A run of frames satisfying p starting at a picked frame, capped at maxlen, then
 * half the time a random sub-range of it. */
static bool pick_run(struct rng *r, const struct fmodel *m, enum pred p, uint64_t maxlen,
		     uint64_t *idx, uint64_t *n)
{
	uint64_t i, len = 0;

	if (!pick_frame(r, m, p, &i))
		return false;
	while (i + len < m->n && len < maxlen && pred_ok(&m->f[i + len], p))
		len++;
	if (rng_chance(r, 1, 2) && len > 1) {
		uint64_t a = rng_below(r, len);
		uint64_t b = rng_range(r, a + 1, len);

		*idx = i + a;
		*n = b - a;
	} else {
		*idx = i;
		*n = len;
	}
	return true;
}

static void random_range(struct rng *r, const struct fmodel *m, uint64_t *idx, uint64_t *n)
{
	*idx = rng_below(r, m->n);
	*n = rng_chance(r, 3, 4) ? rng_range(r, 1, 16) : rng_range(r, 1, 300);
}

static uint32_t rand_guest(struct rng *r)
{
	switch (rng_below(r, 16)) {
	case 0:
		return VCMA_GUEST_MAX - 1;
	case 1:
		return 1;
	default:
		return (uint32_t)rng_range(r, 1, 200);
	}
}

static uint64_t rand_gfn(struct rng *r)
{
	switch (rng_below(r, 16)) {
	case 0:
		return VCMA_GFN_MAX;
	case 1:
		return 0;
	default:
		return rng_below(r, VCMA_GFN_MAX + 1);
	}
}

/* A garbage range: out of the pool, empty, huge, or wrapping around 2^64. */
static void garbage_range(struct rng *r, const struct fmodel *m, uint64_t *idx, uint64_t *n)
{
	uint64_t N = m->n;

	switch (rng_below(r, 8)) {
	case 0:
		*idx = N + rng_below(r, 1000);
		*n = rng_range(r, 1, 4);
		break;
	case 1:
		*idx = rng_below(r, N);
		*n = 0;
		break;
	case 2:
		*idx = rng_below(r, N);
		*n = UINT64_MAX;
		break;
	case 3: /* idx + n wraps to a small number */
		*idx = rng_below(r, N);
		*n = UINT64_MAX - *idx + 1 + rng_below(r, 8);
		break;
	case 4:
		*idx = UINT64_MAX - rng_below(r, 3);
		*n = rng_range(r, 1, 4);
		break;
	case 5: /* just past the end, often from a frame near it */
		*idx = rng_chance(r, 1, 2) ? N - rng_range(r, 1, min_u64(N, 8)) : rng_below(r, N);
		*n = N - *idx + (rng_chance(r, 1, 2) ? 1 : rng_range(r, 1, 4));
		break;
	case 6:
		*idx = rng_next(r);
		*n = rng_next(r);
		if (range_ok(m, *idx, *n))
			*n = 0;
		break;
	default:
		*idx = VCMA_FMAP_MAX_FRAMES + rng_below(r, 10);
		*n = 1ull << 40;
		break;
	}
}

/* ------------------------------------------------------------------------------------ */
/* Phase 1: fmap                                                                        */

struct fctx {
	struct vcma_fmap fm;
	struct fmodel m;
	struct rng *r;
	uint64_t every_largest, every_full; /* O(n) checks run less often on big pools */
};

static void f_after(struct fctx *c, uint64_t idx, uint64_t n)
{
	g_op++;
	cmp_local(&c->fm, &c->m, idx, n);
	if (g_op % c->every_largest == 0)
		cmp_largest(&c->fm, &c->m);
	if (g_op % c->every_full == 0)
		cmp_all(&c->fm, &c->m);
}

static void f_reserve(struct fctx *c, uint64_t idx, uint64_t n)
{
	struct fmodel *m = &c->m;
	bool legal = range_ok(m, idx, n);
	int ret;

	set_ctx("fmap_reserve(idx=%" PRIu64 ", n=%" PRIu64 ")", idx, n);
	for (uint64_t i = idx; legal && i < idx + n; i++)
		legal = mf_free_run(&m->f[i]);
	ret = vcma_fmap_reserve(&c->fm, idx, n);
	expect_ret(ret, legal);
	if (legal)
		for (uint64_t i = idx; i < idx + n; i++)
			mset(m, i, VCMA_FRAME_RESERVED, false, 0, 0);
	f_after(c, idx, n);
}

static void f_unreserve(struct fctx *c, uint64_t idx, uint64_t n)
{
	struct fmodel *m = &c->m;
	bool legal = range_ok(m, idx, n);
	int ret;

	set_ctx("fmap_unreserve(idx=%" PRIu64 ", n=%" PRIu64 ")", idx, n);
	for (uint64_t i = idx; legal && i < idx + n; i++)
		legal = m->f[i].state == VCMA_FRAME_RESERVED;
	ret = vcma_fmap_unreserve(&c->fm, idx, n);
	expect_ret(ret, legal);
	if (legal)
		for (uint64_t i = idx; i < idx + n; i++)
			mset(m, i, VCMA_FRAME_FREE, false, 0, 0);
	f_after(c, idx, n);
}

static void f_lend(struct fctx *c, uint64_t idx, uint32_t guest, uint64_t gfn, bool used)
{
	struct fmodel *m = &c->m;
	bool legal = idx < m->n && guest <= VCMA_GUEST_MAX && gfn <= VCMA_GFN_MAX &&
		     mf_free_run(&m->f[idx]);
	int ret;

	set_ctx("fmap_lend(idx=%" PRIu64 ", guest=%u, gfn=0x%" PRIx64 ", used=%d)", idx, guest,
		gfn, used);
	ret = vcma_fmap_lend(&c->fm, idx, guest, gfn, used);
	expect_ret(ret, legal);
	if (legal)
		mset(m, idx, used ? VCMA_FRAME_LENT_USED : VCMA_FRAME_LENT_FREE, false, guest, gfn);
	f_after(c, idx, 1);
}

static void f_set_used(struct fctx *c, uint64_t idx, bool used)
{
	struct fmodel *m = &c->m;
	unsigned int target = used ? VCMA_FRAME_LENT_USED : VCMA_FRAME_LENT_FREE;
	bool same = false, legal = false;
	int ret;

	set_ctx("fmap_set_used(idx=%" PRIu64 ", used=%d)", idx, used);
	if (idx < m->n && mf_lent(&m->f[idx])) {
		same = m->f[idx].state == target;
		legal = !same;
	}
	ret = vcma_fmap_set_used(&c->fm, idx, used);
	if (same) {
		/* Not specified whether re-setting the current state is a no-op or an error;
		 * either way the frame must not change. */
		CHECK(ret <= 0 && ret > -4096, "set_used to the current state returned %d", ret);
	} else {
		expect_ret(ret, legal);
	}
	if (legal) {
		struct mf f = m->f[idx];

		mset(m, idx, target, f.claimed, f.guest, f.gfn);
	}
	f_after(c, idx, 1);
}

static void f_unlend(struct fctx *c, uint64_t idx)
{
	struct fmodel *m = &c->m;
	bool legal = idx < m->n && mf_lent(&m->f[idx]);
	int ret;

	set_ctx("fmap_unlend(idx=%" PRIu64 ")", idx);
	ret = vcma_fmap_unlend(&c->fm, idx);
	expect_ret(ret, legal);
	if (legal)
		mset(m, idx, VCMA_FRAME_FREE, m->f[idx].claimed, 0, 0);
	f_after(c, idx, 1);
}

static void f_claim(struct fctx *c, uint64_t idx, uint64_t n)
{
	struct fmodel *m = &c->m;
	bool legal = range_ok(m, idx, n);
	int ret;

	set_ctx("fmap_claim(idx=%" PRIu64 ", n=%" PRIu64 ")", idx, n);
	for (uint64_t i = idx; legal && i < idx + n; i++)
		legal = !mf_blocked(&m->f[i]);
	ret = vcma_fmap_claim(&c->fm, idx, n);
	expect_ret(ret, legal);
	if (legal)
		for (uint64_t i = idx; i < idx + n; i++) {
			struct mf f = m->f[i];

			mset(m, i, f.state, true, f.guest, f.gfn);
		}
	f_after(c, idx, n);
}

static void f_unclaim(struct fctx *c, uint64_t idx, uint64_t n)
{
	struct fmodel *m = &c->m;
	bool legal = range_ok(m, idx, n);
	int ret;

	set_ctx("fmap_unclaim(idx=%" PRIu64 ", n=%" PRIu64 ")", idx, n);
	for (uint64_t i = idx; legal && i < idx + n; i++)
		legal = m->f[i].claimed;
	ret = vcma_fmap_unclaim(&c->fm, idx, n);
	expect_ret(ret, legal);
	if (legal)
		for (uint64_t i = idx; i < idx + n; i++) {
			struct mf f = m->f[i];

			mset(m, i, f.state, false, f.guest, f.gfn);
		}
	f_after(c, idx, n);
}

static void f_commit(struct fctx *c, uint64_t idx, uint64_t n, uint32_t guest)
{
	struct fmodel *m = &c->m;
	bool legal = range_ok(m, idx, n) && guest <= VCMA_GUEST_MAX;
	int ret;

	set_ctx("fmap_commit_region(idx=%" PRIu64 ", n=%" PRIu64 ", guest=%u)", idx, n, guest);
	for (uint64_t i = idx; legal && i < idx + n; i++)
		legal = m->f[i].claimed && m->f[i].state == VCMA_FRAME_FREE;
	ret = vcma_fmap_commit_region(&c->fm, idx, n, guest);
	expect_ret(ret, legal);
	if (legal)
		for (uint64_t i = idx; i < idx + n; i++)
			mset(m, i, VCMA_FRAME_REGION, false, guest, 0);
	f_after(c, idx, n);
}

static void f_release(struct fctx *c, uint64_t idx, uint64_t n)
{
	struct fmodel *m = &c->m;
	bool legal = range_ok(m, idx, n);
	int ret;

	set_ctx("fmap_release_region(idx=%" PRIu64 ", n=%" PRIu64 ")", idx, n);
	for (uint64_t i = idx; legal && i < idx + n; i++)
		legal = m->f[i].state == VCMA_FRAME_REGION;
	ret = vcma_fmap_release_region(&c->fm, idx, n);
	expect_ret(ret, legal);
	if (legal)
		for (uint64_t i = idx; i < idx + n; i++)
			mset(m, i, VCMA_FRAME_FREE, false, 0, 0);
	f_after(c, idx, n);
}

static int f_search(struct fctx *c, uint64_t n, unsigned int order, struct vcma_window *out)
{
	struct fmodel *m = &c->m;
	struct vcma_window w, e;
	int rl, re;

	set_ctx("fmap_search(n=%" PRIu64 ", order=%u)", n, order);
	memset(&w, 0, sizeof(w));
	rl = vcma_fmap_search(&c->fm, n, order, &w);
	re = brute_search(m, n, order, &e);
	if (re == 0 && rl == 0) {
		CHECK(w.start == e.start && w.cost == e.cost,
		      "library window start %" PRIu64 " (mfn 0x%" PRIx64 ") cost %" PRIu64
		      " (brute cost of that window %" PRIu64 "), brute force start %" PRIu64
		      " (mfn 0x%" PRIx64 ") cost %" PRIu64,
		      w.start, m->base + w.start, w.cost, brute_window_cost(m, w.start, n), e.start,
		      m->base + e.start, e.cost);
		CHECK(w.count == n && w.nfree == e.nfree && w.nlent_free == e.nlent_free &&
			      w.nlent_used == e.nlent_used,
		      "window counts: library count %" PRIu64 " free %" PRIu64 " lf %" PRIu64
		      " lu %" PRIu64 ", brute %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      w.count, w.nfree, w.nlent_free, w.nlent_used, n, e.nfree, e.nlent_free,
		      e.nlent_used);
	} else {
		CHECK(rl == re,
		      "library returned %d (window start %" PRIu64 " cost %" PRIu64
		      "), brute force %d (start %" PRIu64 " cost %" PRIu64 ")",
		      rl, w.start, w.cost, re, re == 0 ? e.start : 0, re == 0 ? e.cost : 0);
	}
	if (re == 0 && e.cost == 0)
		cov.search_free++;
	else if (re == 0)
		cov.search_lent++;
	else if (re == -ENOSPC)
		cov.search_nospc++;
	else
		cov.search_inval++;
	if (out)
		*out = e;
	f_after(c, 0, 0);
	return re;
}

static void f_window_cost(struct fctx *c, uint64_t idx, uint64_t n)
{
	uint64_t got, exp;

	set_ctx("fmap_window_cost(idx=%" PRIu64 ", n=%" PRIu64 ")", idx, n);
	got = vcma_fmap_window_cost(&c->fm, idx, n);
	if (n != 0) { /* an empty window's cost is not specified */
		exp = brute_window_cost(&c->m, idx, n);
		cov.wcost++;
		cov.wcost_blocked += exp == UINT64_MAX;
		CHECK(got == exp, "window cost: library %" PRIu64 ", brute force %" PRIu64, got,
		      exp);
	}
	f_after(c, 0, 0);
}

static void f_collect(struct fctx *c, uint64_t idx, uint64_t n, size_t max)
{
	struct fmodel *m = &c->m;
	size_t cap = max + 1, total;
	struct vcma_vacate_item *got = calloc(cap, sizeof(*got));
	struct vcma_vacate_item *exp;
	struct vcma_vacate_item canary;
	int64_t ret;

	assert_non_null(got);
	memset(&canary, 0x5a, sizeof(canary));
	memcpy(&got[max], &canary, sizeof(canary));
	set_ctx("fmap_collect_lent(idx=%" PRIu64 ", n=%" PRIu64 ", max=%zu)", idx, n, max);
	ret = vcma_fmap_collect_lent(&c->fm, idx, n, got, max);
	CHECK(memcmp(&got[max], &canary, sizeof(canary)) == 0,
	      "collect_lent wrote past max=%zu items", max);
	if (n == 0) {
		CHECK(ret <= 0, "collect_lent of an empty window returned %" PRId64, ret);
	} else if (idx >= m->n || idx + n < idx) {
		CHECK(ret < 0, "collect_lent out of the pool returned %" PRId64, ret);
	} else {
		uint64_t clamped = n > m->n - idx ? m->n - idx : n;
		bool partial = clamped != n;

		total = brute_collect(m, idx, clamped, NULL, 0);
		exp = calloc(total + 1, sizeof(*exp));
		assert_non_null(exp);
		brute_collect(m, idx, clamped, exp, total);
		if (partial) {
			/* Past the end: -EINVAL expected; a clamped answer is tolerated. */
			CHECK(ret < 0 || (uint64_t)ret == total,
			      "collect_lent past the end returned %" PRId64, ret);
		} else {
			CHECK(ret >= 0 && (uint64_t)ret == total,
			      "collect_lent returned %" PRId64 ", brute force %zu lent frames", ret,
			      total);
		}
		cov.collect++;
		cov.collect_truncated += total > max;
		if (ret >= 0) {
			for (size_t k = 0; k < total && k < max; k++)
				CHECK(got[k].idx == exp[k].idx && got[k].guest == exp[k].guest &&
					      got[k].state == exp[k].state && got[k].gfn == exp[k].gfn,
				      "item %zu: library idx %" PRIu64 " guest %u %s gfn 0x%" PRIx64
				      ", expected idx %" PRIu64 " guest %u %s gfn 0x%" PRIx64,
				      k, got[k].idx, got[k].guest, state_name(got[k].state),
				      got[k].gfn, exp[k].idx, exp[k].guest, state_name(exp[k].state),
				      exp[k].gfn);
		}
		free(exp);
	}
	free(got);
	f_after(c, 0, 0);
}

/* Request sizes for searches: small, medium, powers of two, around the largest free
 * run (the boundary between the free and the lent pass), the whole pool, too big. */
static uint64_t gen_search_n(struct rng *r, const struct fmodel *m)
{
	uint64_t cap = min_u64(m->n, 600), v;

	switch (rng_below(r, 20)) {
	case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7:
		return rng_range(r, 1, min_u64(cap, 16));
	case 8: case 9: case 10: case 11: case 12:
		return rng_range(r, 1, cap);
	case 13: case 14:
		return 1ull << rng_below(r, ilog2_floor(cap) + 1);
	case 15: case 16:
		v = brute_largest_free(m) + rng_below(r, 3);
		v = v > 1 ? v - 1 : 1;
		return v;
	case 17:
		return m->n - rng_below(r, min_u64(m->n, 4));
	case 18:
		return m->n + 1 + rng_below(r, 100);
	default:
		return rng_chance(r, 1, 2) ? UINT64_MAX : m->n + (1ull << rng_below(r, 40));
	}
}

static unsigned int gen_order(struct rng *r)
{
	switch (rng_below(r, 40)) {
	case 0:
		return 19;
	case 1:
		return (unsigned int)rng_range(r, 20, 200);
	case 2:
		return UINT32_MAX;
	case 3: case 4:
		return (unsigned int)rng_range(r, 11, 18);
	default:
		return rng_chance(r, 2, 3) ? (unsigned int)rng_below(r, 4)
					   : (unsigned int)rng_below(r, 11);
	}
}

static unsigned int gen_valid_order(struct rng *r)
{
	return rng_chance(r, 2, 3) ? (unsigned int)rng_below(r, 4) : (unsigned int)rng_below(r, 11);
}

/* Search, claim, vacate, commit, as vcma_core_alloc does it, one call at a time. */
static void f_allocflow(struct fctx *c)
{
	struct fmodel *m = &c->m;
	struct rng *r = c->r;
	uint64_t n = rng_chance(r, 3, 4) ? rng_range(r, 1, min_u64(m->n, 32))
					 : rng_range(r, 1, min_u64(m->n, 400));
	unsigned int order = gen_valid_order(r);
	struct vcma_window w;

	if (f_search(c, n, order, &w) != 0)
		return;
	/* the brute-force window holds no blocked frame, so the claim is legal */
	f_claim(c, w.start, n);
	CHECK(m->f[w.start].claimed, "claim of the searched window did not take");
	f_collect(c, w.start, n, (size_t)n);
	if (rng_chance(r, 1, 8))
		return; /* stays in flight */
	for (uint64_t i = w.start; i < w.start + n; i++) {
		if (!mf_lent(&m->f[i]))
			continue;
		if (rng_chance(r, 1, 10))
			f_set_used(c, i, m->f[i].state == VCMA_FRAME_LENT_FREE);
		f_unlend(c, i);
		if (rng_chance(r, 1, 10)) /* a claimed FREE frame is never lent */
			f_lend(c, i, rand_guest(r), rand_gfn(r), rng_chance(r, 1, 2));
	}
	if (rng_chance(r, 1, 10)) {
		f_unclaim(c, w.start, n); /* allocation abandoned */
		return;
	}
	f_commit(c, w.start, n, rand_guest(r));
}

static void f_garbage(struct fctx *c)
{
	struct rng *r = c->r;
	struct fmodel *m = &c->m;
	uint64_t idx, n, bad_idx = m->n + (rng_chance(r, 1, 2) ? rng_below(r, 4)
								 : rng_below(r, 1ull << 62));
	struct vcma_frame_info fi;
	int ret;

	garbage_range(r, m, &idx, &n);
	switch (rng_below(r, 17)) {
	case 0:
		f_reserve(c, idx, n);
		break;
	case 1:
		f_unreserve(c, idx, n);
		break;
	case 2:
		f_claim(c, idx, n);
		break;
	case 3:
		f_unclaim(c, idx, n);
		break;
	case 4:
		f_commit(c, idx, n, rand_guest(r));
		break;
	case 5:
		f_release(c, idx, n);
		break;
	case 6:
		f_lend(c, bad_idx, rand_guest(r), rand_gfn(r), rng_chance(r, 1, 2));
		break;
	case 7: /* guest id does not fit */
		if (!pick_frame(r, m, P_FREE_UNCL, &idx))
			idx = rng_below(r, m->n);
		f_lend(c, idx, VCMA_GUEST_MAX + 1 + (uint32_t)rng_below(r, 1u << 20), rand_gfn(r),
		       rng_chance(r, 1, 2));
		break;
	case 8: /* gfn does not fit */
		if (!pick_frame(r, m, P_FREE_UNCL, &idx))
			idx = rng_below(r, m->n);
		f_lend(c, idx, rand_guest(r),
		       rng_chance(r, 1, 2) ? UINT64_MAX : VCMA_GFN_MAX + 1 + rng_below(r, 1000),
		       rng_chance(r, 1, 2));
		break;
	case 9:
		f_set_used(c, bad_idx, rng_chance(r, 1, 2));
		break;
	case 10:
		f_unlend(c, bad_idx);
		break;
	case 11: /* a committable window, but the owner does not fit */
		if (pick_run(r, m, P_CLAIMED, 64, &idx, &n))
			f_commit(c, idx, n, VCMA_GUEST_MAX + 1 + (uint32_t)rng_below(r, 1000));
		break;
	case 12:
		set_ctx("fmap_get(idx=%" PRIu64 ")", bad_idx);
		memset(&fi, 0, sizeof(fi));
		ret = vcma_fmap_get(&c->fm, bad_idx, &fi);
		CHECK(ret < 0 && ret > -4096, "get out of the pool returned %d", ret);
		f_after(c, 0, 0);
		break;
	case 13:
		f_search(c, 0, gen_valid_order(r), NULL);
		break;
	case 14:
		f_search(c, m->n + 1 + rng_below(r, 1ull << 40), gen_valid_order(r), NULL);
		break;
	case 15:
		f_window_cost(c, idx, n);
		break;
	default:
		f_collect(c, idx, n, 8);
		break;
	}
}

enum fop {
	FO_LEND, FO_LEND_RUN, FO_SET_USED, FO_UNLEND, FO_UNLEND_RUN, FO_RESERVE, FO_UNRESERVE,
	FO_CLAIM, FO_UNCLAIM, FO_COMMIT, FO_RELEASE, FO_SEARCH, FO_WCOST, FO_COLLECT,
	FO_ALLOCFLOW, FO_GARBAGE, FO_N
};

static unsigned int pick_weighted(struct rng *r, const unsigned int *w, unsigned int n)
{
	unsigned int sum = 0, x;

	for (unsigned int i = 0; i < n; i++)
		sum += w[i];
	x = (unsigned int)rng_below(r, sum);
	for (unsigned int i = 0; i < n; i++) {
		if (x < w[i])
			return i;
		x -= w[i];
	}
	return n - 1;
}

static void f_step(struct fctx *c, const unsigned int *weights)
{
	struct rng *r = c->r;
	struct fmodel *m = &c->m;
	uint64_t idx, n;
	struct vcma_window w;

	g_steps++;
	switch (pick_weighted(r, weights, FO_N)) {
	case FO_LEND:
		if (rng_chance(r, 3, 10) || !pick_frame(r, m, P_FREE_UNCL, &idx))
			idx = rng_below(r, m->n);
		f_lend(c, idx, rand_guest(r), rand_gfn(r), rng_chance(r, 1, 2));
		break;
	case FO_LEND_RUN:
		if (pick_run(r, m, P_FREE_UNCL, rng_range(r, 1, 64), &idx, &n)) {
			uint32_t g = rand_guest(r);
			uint64_t gfn = rng_below(r, VCMA_GFN_MAX - 1000);
			bool used = rng_chance(r, 1, 2);

			for (uint64_t i = idx; i < idx + n; i++) {
				if (rng_chance(r, 1, 4))
					used = !used;
				f_lend(c, i, g, gfn + (i - idx), used);
			}
		}
		break;
	case FO_SET_USED:
		if (rng_chance(r, 8, 10) && pick_frame(r, m, P_LENT, &idx)) {
			bool to_used = m->f[idx].state == VCMA_FRAME_LENT_FREE;

			f_set_used(c, idx, rng_chance(r, 9, 10) ? to_used : !to_used);
		} else {
			f_set_used(c, rng_below(r, m->n), rng_chance(r, 1, 2));
		}
		break;
	case FO_UNLEND:
		if (rng_chance(r, 2, 10) || !pick_frame(r, m, P_LENT, &idx))
			idx = rng_below(r, m->n);
		f_unlend(c, idx);
		break;
	case FO_UNLEND_RUN:
		idx = rng_below(r, m->n);
		n = rng_range(r, 1, 64);
		for (uint64_t i = idx; i < idx + n && i < m->n; i++)
			if (mf_lent(&m->f[i]))
				f_unlend(c, i);
		break;
	case FO_RESERVE:
		if (rng_chance(r, 1, 2) || !pick_run(r, m, P_FREE_UNCL, rng_range(r, 1, 40), &idx, &n))
			random_range(r, m, &idx, &n);
		f_reserve(c, idx, n);
		break;
	case FO_UNRESERVE:
		if (rng_chance(r, 3, 10) || !pick_run(r, m, P_RESERVED, 200, &idx, &n))
			random_range(r, m, &idx, &n);
		f_unreserve(c, idx, n);
		break;
	case FO_CLAIM:
		switch (rng_below(r, 10)) {
		case 0: case 1: case 2: case 3:
			n = rng_range(r, 1, min_u64(m->n, 64));
			if (f_search(c, n, gen_valid_order(r), &w) == 0)
				f_claim(c, w.start, n);
			break;
		case 4: case 5: case 6:
			if (pick_run(r, m, P_UNBLOCKED, rng_range(r, 1, 64), &idx, &n))
				f_claim(c, idx, n);
			break;
		default:
			random_range(r, m, &idx, &n);
			f_claim(c, idx, n);
			break;
		}
		break;
	case FO_UNCLAIM:
		if (rng_chance(r, 3, 10) || !pick_run(r, m, P_CLAIMED, 600, &idx, &n))
			random_range(r, m, &idx, &n);
		f_unclaim(c, idx, n);
		break;
	case FO_COMMIT:
		if (rng_chance(r, 7, 10) && pick_run(r, m, P_CLAIMED, 600, &idx, &n)) {
			if (rng_chance(r, 6, 10))
				for (uint64_t i = idx; i < idx + n; i++)
					if (mf_lent(&m->f[i]))
						f_unlend(c, i);
		} else {
			random_range(r, m, &idx, &n);
		}
		f_commit(c, idx, n, rand_guest(r));
		break;
	case FO_RELEASE:
		if (rng_chance(r, 1, 4) || !pick_run(r, m, P_REGION, 600, &idx, &n))
			random_range(r, m, &idx, &n);
		f_release(c, idx, n);
		break;
	case FO_SEARCH:
		f_search(c, gen_search_n(r, m), gen_order(r), NULL);
		break;
	case FO_WCOST:
		switch (rng_below(r, 10)) {
		case 0: case 1: case 2: case 3: case 4:
			idx = rng_below(r, m->n);
			n = rng_range(r, 1, min_u64(m->n - idx, 700));
			break;
		case 5: case 6: case 7:
			n = rng_range(r, 1, min_u64(m->n, 64));
			if (f_search(c, n, gen_valid_order(r), &w) == 0)
				idx = w.start;
			else
				idx = rng_below(r, m->n - n + 1);
			break;
		case 8:
			random_range(r, m, &idx, &n);
			break;
		default:
			garbage_range(r, m, &idx, &n);
			break;
		}
		f_window_cost(c, idx, n);
		break;
	case FO_COLLECT:
		idx = rng_below(r, m->n);
		n = rng_range(r, 1, min_u64(m->n - idx, 700));
		if (rng_chance(r, 1, 10))
			n += rng_range(r, 1, 5); /* past the end */
		f_collect(c, idx, n, rng_chance(r, 6, 10) ? (size_t)n : (size_t)rng_below(r, n + 1));
		break;
	case FO_ALLOCFLOW:
		f_allocflow(c);
		break;
	default:
		f_garbage(c);
		break;
	}
}

static const unsigned int fop_base_weights[FO_N] = {
	[FO_LEND] = 14, [FO_LEND_RUN] = 5, [FO_SET_USED] = 8, [FO_UNLEND] = 8,
	[FO_UNLEND_RUN] = 2, [FO_RESERVE] = 3, [FO_UNRESERVE] = 3, [FO_CLAIM] = 4,
	[FO_UNCLAIM] = 3, [FO_COMMIT] = 4, [FO_RELEASE] = 5, [FO_SEARCH] = 20,
	[FO_WCOST] = 5, [FO_COLLECT] = 4, [FO_ALLOCFLOW] = 6, [FO_GARBAGE] = 3,
};

static void f_run_pool(struct rng *r, uint64_t budget)
{
	struct fctx c;
	uint64_t N, base, nops, u;
	uint32_t clf, clu;
	unsigned int weights[FO_N];
	int ret;

	memset(&c, 0, sizeof(c));
	c.r = r;

	u = rng_below(r, 100);
	if (u < 10)
		N = rng_range(r, 1, 64);
	else if (u < 16)
		N = rng_range(r, 250, 520); /* around granule edges */
	else if (u < 24) /* whole granules: no padding after the last frame */
		N = rng_range(r, 1, 12) * VCMA_FMAP_GRANULE + (rng_chance(r, 1, 2) ? 0 : rng_range(r, 0, 2) - 1);
	else if (u < 27) /* whole superblocks */
		N = rng_range(r, 1, 2) * VCMA_FMAP_SUPER_FRAMES + (rng_chance(r, 1, 2) ? 0 : rng_range(r, 0, 2) - 1);
	else if (u < 82)
		N = rng_range(r, 1, 3000);
	else if (u < 94)
		N = rng_range(r, 3000, 17000); /* the first superblock edge is 16384 */
	else
		N = rng_range(r, 16000, 40000);

	u = rng_below(r, 100);
	if (u < 30)
		base = rng_below(r, 1ull << 40);
	else if (u < 42)
		base = 0;
	else if (u < 60)
		base = rng_range(r, 1, 5000);
	else if (u < 80)
		base = rng_below(r, 1ull << 20) << rng_range(r, 8, 20);
	else
		base = ((1 + rng_below(r, 1ull << 16)) << 18) - rng_range(r, 1, 300);

	u = rng_below(r, 100);
	if (u < 20) {
		clf = 1;
		clu = 2;
	} else if (u < 35) {
		clf = VCMA_DEFAULT_COST_LENT_FREE;
		clu = VCMA_DEFAULT_COST_LENT_USED;
	} else if (u < 45) {
		clf = 65534;
		clu = 65535;
	} else {
		clf = (uint32_t)rng_range(r, 1, 1000);
		clu = (uint32_t)rng_range(r, clf + 1, rng_chance(r, 1, 2) ? clf + 20 : 65535);
	}

	snprintf(g_pool_ctx, sizeof(g_pool_ctx),
		 "fmap base=0x%" PRIx64 " nframes=%" PRIu64 " cost_lf=%u cost_lu=%u", base, N, clf,
		 clu);
	set_ctx("fmap_init");
	ret = vcma_fmap_init(&c.fm, base, N, clf, clu);
	CHECK(ret == 0, "vcma_fmap_init returned %d", ret);
	CHECK(c.fm.base == base && c.fm.nframes == N && c.fm.cost_lf == clf && c.fm.cost_lu == clu,
	      "fmap fields after init: base 0x%" PRIx64 " nframes %" PRIu64 " costs %u/%u",
	      c.fm.base, c.fm.nframes, c.fm.cost_lf, c.fm.cost_lu);
	model_init(&c.m, base, N, clf, clu);
	cmp_all(&c.fm, &c.m);
	cmp_largest(&c.fm, &c.m);
	c.every_largest = N / 500 > 4 ? N / 500 : 4;
	c.every_full = N / 60 > 50 ? N / 60 : 50;

	for (unsigned int i = 0; i < FO_N; i++)
		weights[i] = fop_base_weights[i];
	weights[FO_LEND] = (unsigned int)rng_range(r, 2, 28);
	weights[FO_LEND_RUN] = (unsigned int)rng_range(r, 0, 10);
	weights[FO_UNLEND] = (unsigned int)rng_range(r, 2, 20);
	weights[FO_RESERVE] = (unsigned int)rng_range(r, 0, 6);
	weights[FO_ALLOCFLOW] = (unsigned int)rng_range(r, 2, 12);
	weights[FO_RELEASE] = (unsigned int)rng_range(r, 2, 10);

	/* Preload: a few reserved holes, then lend a share of the pool. */
	{
		unsigned int holes = (unsigned int)rng_below(r, 4);
		unsigned int density = (unsigned int)rng_below(r, 5); /* x 1/4 */
		uint64_t idx, n;

		for (unsigned int h = 0; h < holes; h++)
			if (pick_run(r, &c.m, P_FREE_UNCL, rng_range(r, 1, 300), &idx, &n))
				f_reserve(&c, idx, n);
		for (uint64_t i = 0; i < N && density; i++)
			if (mf_free_run(&c.m.f[i]) && rng_below(r, 4) < density)
				f_lend(&c, i, rand_guest(r), rand_gfn(r), rng_chance(r, 1, 2));
	}

	nops = N > 3000 ? rng_range(r, 2000, 4000) : rng_range(r, 300, 3000);
	if (nops > budget)
		nops = budget;
	for (uint64_t k = 0; k < nops; k++)
		f_step(&c, weights);

	cmp_all(&c.fm, &c.m);
	cmp_largest(&c.fm, &c.m);
	vcma_fmap_fini(&c.fm);
	model_fini(&c.m);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_fmap_init_garbage(void **state)
{
	struct vcma_fmap fm;
	int ret;

	(void)state;
	g_phase = "fmap-init";
	snprintf(g_pool_ctx, sizeof(g_pool_ctx), "-");

	set_ctx("fmap_init(base=0, nframes=0)");
	memset(&fm, 0, sizeof(fm));
	ret = vcma_fmap_init(&fm, 0, 0, 1, 16);
	if (ret == 0)
		vcma_fmap_fini(&fm);
	CHECK(ret < 0, "an empty pool was accepted");

	set_ctx("fmap_init(base=0, nframes=MAX_FRAMES+1)");
	memset(&fm, 0, sizeof(fm));
	ret = vcma_fmap_init(&fm, 0, VCMA_FMAP_MAX_FRAMES + 1, 1, 16);
	if (ret == 0)
		vcma_fmap_fini(&fm);
	CHECK(ret < 0, "a pool above VCMA_FMAP_MAX_FRAMES was accepted");

	set_ctx("fmap_init(base=UINT64_MAX-5, nframes=10)");
	memset(&fm, 0, sizeof(fm));
	ret = vcma_fmap_init(&fm, UINT64_MAX - 5, 10, 1, 16);
	if (ret == 0)
		vcma_fmap_fini(&fm);
	CHECK(ret < 0, "a pool whose mfns wrap around 2^64 was accepted");
}

static void test_fmap_model(void **state)
{
	struct rng r = {g_seed ^ 0x243f6a8885a308d3ull};
	uint64_t target = PHASE1_OPS * g_scale;
	unsigned int pools = 0;
	double t0 = now_s();

	(void)state;
	g_phase = "fmap";
	g_op = 0;
	g_steps = 0;
	while (g_steps < target) {
		f_run_pool(&r, target - g_steps + 1);
		pools++;
	}
	g_ops_total += g_op;
	print_message("fmap phase: %" PRIu64 " random steps, %" PRIu64
		      " library operations on %u pools in %.2f s\n",
		      g_steps, g_op, pools, now_s() - t0);
	print_message("  mutators: %" PRIu64 " legal, %" PRIu64 " rejected; searches: %" PRIu64
		      " free, %" PRIu64 " lent, %" PRIu64 " -ENOSPC, %" PRIu64 " -EINVAL\n",
		      cov.ok, cov.rejected, cov.search_free, cov.search_lent, cov.search_nospc,
		      cov.search_inval);
	print_message("  window costs: %" PRIu64 " (%" PRIu64 " blocked); collect_lent: %" PRIu64
		      " (%" PRIu64 " truncated)\n",
		      cov.wcost, cov.wcost_blocked, cov.collect, cov.collect_truncated);
	memset(&cov, 0, sizeof(cov));
}

/* ------------------------------------------------------------------------------------ */
/* Phase 2: core                                                                        */

#define NGUEST 6u
#define CPOOLS_MAX 3u
#define NSTALE 512u
#define EXCL_BIND "vm3"

struct cpool {
	struct vcma_pool *p;
	uint32_t index;
	struct fmodel m;
	char name[8];
	bool exclusive;
	bool min_req_applies; /* shared pools, or exclusive ones with min_request set */
	bool lendable;        /* exclusive pools never are */
	uint32_t min_req, align_cap;
	uint64_t quota; /* UINT64_MAX: none */
	uint32_t nregions;
	/* our tally of the pool's stats */
	uint64_t a_succ, a_pages, rel_pages, a_fail, a_pages_fail;
};

struct creg {
	uint64_t handle;
	uint32_t guest, pool;
	uint64_t idx, n;
};

struct cstale {
	uint64_t handle;
	uint32_t guest;
};

struct cstate {
	struct vcma_core core;
	struct cpool pool[CPOOLS_MAX];
	uint32_t npools;
	struct creg *reg;
	size_t nreg, capreg;
	struct cstale stale[NSTALE];
	size_t nstale, stale_pos;
	uint64_t *issued; /* open-addressing set of every handle issued by this core */
	size_t nissued, capissued;
	struct rng *r;
	uint64_t every_largest, every_full;
};

enum hook_mode { HOOK_OK, HOOK_FAIL, HOOK_LIE, HOOK_NONE, HOOK_NULLFN };

struct hookctx {
	struct cpool *cp;
	struct rng *r;
	enum hook_mode mode;
	uint64_t wstart, wn;
	struct vcma_vacate_item *exp;
	size_t nexp;
	size_t k; /* how many items the hook really vacates */
	uint64_t *done;
	size_t ndone;
	unsigned int calls;
	bool poke; /* try to lend a claimed frame from inside the hook */
};

static int item_cmp(const void *a, const void *b)
{
	const struct vcma_vacate_item *x = a, *y = b;

	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int hook_vacate(void *ctx, struct vcma_pool *pool, const struct vcma_vacate_item *items,
		       size_t n)
{
	struct hookctx *h = ctx;
	struct fmodel *m = &h->cp->m;
	struct vcma_pool_counts pc;
	struct vcma_frame_info fi;
	size_t *perm;
	int ret;

	h->calls++;
	CHECK(h->calls == 1, "vacate hook called %u times for one allocation", h->calls);
	CHECK(pool == h->cp->p, "vacate hook got another pool than %s", h->cp->name);
	CHECK(n == h->nexp, "vacate hook got %zu items, the brute-force window holds %zu lent frames",
	      n, h->nexp);
	{
		/* the hook's order is not part of the contract: compare sorted by frame */
		struct vcma_vacate_item *got = calloc(n + 1, sizeof(*got));

		assert_non_null(got);
		if (n)
			memcpy(got, items, n * sizeof(*got));
		qsort(got, n, sizeof(*got), item_cmp);
		for (size_t k = 0; k < n; k++)
			CHECK(got[k].idx == h->exp[k].idx && got[k].guest == h->exp[k].guest &&
				      got[k].state == h->exp[k].state && got[k].gfn == h->exp[k].gfn,
			      "vacate item %zu (sorted): got idx %" PRIu64 " guest %u %s gfn 0x%" PRIx64
			      ", expected idx %" PRIu64 " guest %u %s gfn 0x%" PRIx64,
			      k, got[k].idx, got[k].guest, state_name(got[k].state), got[k].gfn,
			      h->exp[k].idx, h->exp[k].guest, state_name(h->exp[k].state),
			      h->exp[k].gfn);
		free(got);
	}
	for (uint64_t i = h->wstart; i < h->wstart + h->wn; i++) {
		memset(&fi, 0, sizeof(fi));
		ret = vcma_fmap_get(&pool->fm, i, &fi);
		CHECK(ret == 0 && fi.claimed && (unsigned int)fi.state == m->f[i].state,
		      "inside the vacate hook, frame %" PRIu64 " is %s%s (model %s, must be claimed)",
		      i, state_name(fi.state), fi.claimed ? "+claimed" : "",
		      state_name(m->f[i].state));
	}
	memset(&pc, 0, sizeof(pc));
	vcma_pool_counts(pool, &pc);
	CHECK(pc.claimed == h->wn, "inside the vacate hook, %" PRIu64 " frames claimed, window %" PRIu64,
	      pc.claimed, h->wn);

	perm = calloc(n + 1, sizeof(*perm));
	assert_non_null(perm);
	for (size_t k = 0; k < n; k++)
		perm[k] = k;
	for (size_t k = n; k > 1; k--) {
		size_t j = (size_t)rng_below(h->r, k), t = perm[k - 1];

		perm[k - 1] = perm[j];
		perm[j] = t;
	}
	for (size_t k = 0; k < h->k && k < n; k++) {
		uint64_t idx = items[perm[k]].idx;

		ret = vcma_pool_unlend(pool, idx);
		CHECK(ret == 0, "vcma_pool_unlend(%" PRIu64 ") of a claimed lent frame in the hook = %d",
		      idx, ret);
		h->done[h->ndone++] = idx;
		memset(&fi, 0, sizeof(fi));
		ret = vcma_fmap_get(&pool->fm, idx, &fi);
		CHECK(ret == 0 && fi.state == VCMA_FRAME_FREE && fi.claimed,
		      "after unlend in the hook, frame %" PRIu64 " is %s%s", idx, state_name(fi.state),
		      fi.claimed ? "+claimed" : "");
		if (h->poke && k == 0) {
			ret = vcma_pool_lend(pool, idx, 1, 1, false);
			CHECK(ret < 0, "lending claimed FREE frame %" PRIu64 " from the hook returned %d",
			      idx, ret);
			memset(&fi, 0, sizeof(fi));
			vcma_fmap_get(&pool->fm, idx, &fi);
			CHECK(fi.state == VCMA_FRAME_FREE && fi.claimed,
			      "a refused lend changed claimed frame %" PRIu64, idx);
		}
	}
	free(perm);
	return h->mode == HOOK_FAIL ? -EIO : 0;
}

static uint64_t c_usage_bytes(const struct cstate *cs, uint32_t pool, uint32_t guest,
			      uint32_t *nregions)
{
	uint64_t bytes = 0;
	uint32_t nr = 0;

	for (size_t i = 0; i < cs->nreg; i++)
		if (cs->reg[i].pool == pool && cs->reg[i].guest == guest) {
			bytes += cs->reg[i].n * VCMA_PAGE_SIZE;
			nr++;
		}
	if (nregions)
		*nregions = nr;
	return bytes;
}

static void c_check_pool(struct cstate *cs, struct cpool *cp, bool largest)
{
	struct vcma_pool_counts pc;
	const struct fmodel *m = &cp->m;
	const struct vcma_pool_stats *st = &cp->p->stats;

	(void)cs;
	memset(&pc, 0, sizeof(pc));
	vcma_pool_counts(cp->p, &pc);
	CHECK(pc.nframes == m->n && pc.free == m->count[VCMA_FRAME_FREE] &&
		      pc.lent_free == m->count[VCMA_FRAME_LENT_FREE] &&
		      pc.lent_used == m->count[VCMA_FRAME_LENT_USED] &&
		      pc.region == m->count[VCMA_FRAME_REGION] &&
		      pc.reserved == m->count[VCMA_FRAME_RESERVED] && pc.claimed == 0 &&
		      pc.regions == cp->nregions,
	      "pool %s counts: library nframes %" PRIu64 " free %" PRIu64 " lf %" PRIu64
	      " lu %" PRIu64 " region %" PRIu64 " reserved %" PRIu64 " claimed %" PRIu64
	      " regions %u; model %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
	      "/%" PRIu64 "/0/%u",
	      cp->name, pc.nframes, pc.free, pc.lent_free, pc.lent_used, pc.region, pc.reserved,
	      pc.claimed, pc.regions, m->n, m->count[VCMA_FRAME_FREE],
	      m->count[VCMA_FRAME_LENT_FREE], m->count[VCMA_FRAME_LENT_USED],
	      m->count[VCMA_FRAME_REGION], m->count[VCMA_FRAME_RESERVED], cp->nregions);
	if (largest) {
		uint64_t exp = brute_largest_free(m);

		CHECK(pc.largest_free_run == exp,
		      "pool %s largest_free_run: library %" PRIu64 ", brute force %" PRIu64, cp->name,
		      pc.largest_free_run, exp);
	}
	cmp_counts(&cp->p->fm, m);
	CHECK(st->alloc_success == cp->a_succ && st->alloc_pages_success == cp->a_pages &&
		      st->release_pages_success == cp->rel_pages && st->alloc_fail == cp->a_fail &&
		      st->alloc_pages_fail == cp->a_pages_fail,
	      "pool %s stats: library alloc_success %" PRIu64 " alloc_pages_success %" PRIu64
	      " release_pages_success %" PRIu64 " alloc_fail %" PRIu64 " alloc_pages_fail %" PRIu64
	      "; tally %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64,
	      cp->name, st->alloc_success, st->alloc_pages_success, st->release_pages_success,
	      st->alloc_fail, st->alloc_pages_fail, cp->a_succ, cp->a_pages, cp->rel_pages,
	      cp->a_fail, cp->a_pages_fail);
}

static void c_check_usage(struct cstate *cs)
{
	for (uint32_t k = 0; k < cs->npools; k++) {
		struct cpool *cp = &cs->pool[k];

		for (uint32_t g = 0; g <= NGUEST + 1; g++) {
			uint32_t nr;
			uint64_t bytes = c_usage_bytes(cs, k, g, &nr);
			const struct vcma_guest_usage *u = vcma_pool_usage(cp->p, g);

			if (!u)
				CHECK(bytes == 0 && nr == 0,
				      "pool %s guest %u: no usage entry, model %" PRIu64 " bytes in %u regions",
				      cp->name, g, bytes, nr);
			else
				CHECK(u->guest == g && u->bytes == bytes && u->regions == nr,
				      "pool %s guest %u: usage guest %u %" PRIu64 " bytes %u regions, model %" PRIu64
				      " bytes %u regions",
				      cp->name, g, u->guest, u->bytes, u->regions, bytes, nr);
		}
	}
}

static int creg_cmp(const void *a, const void *b)
{
	const struct creg *x = a, *y = b;
	uint64_t mx = 0, my = 0;

	/* pools are placed 4 GiB-frames apart, see c_setup */
	mx = ((uint64_t)x->pool << 40) + x->idx;
	my = ((uint64_t)y->pool << 40) + y->idx;
	return mx < my ? -1 : mx > my;
}

static void c_full(struct cstate *cs)
{
	struct creg *sorted;
	uint32_t cursor = 0;
	size_t seen = 0;
	const struct vcma_region *it;

	for (uint32_t k = 0; k < cs->npools; k++) {
		snprintf(g_pool_ctx, sizeof(g_pool_ctx), "core pool %s", cs->pool[k].name);
		cmp_all(&cs->pool[k].p->fm, &cs->pool[k].m);
		c_check_pool(cs, &cs->pool[k], true);
	}
	snprintf(g_pool_ctx, sizeof(g_pool_ctx), "core");
	c_check_usage(cs);
	CHECK(cs->core.regions.nlive == cs->nreg, "region table holds %u live regions, model %zu",
	      cs->core.regions.nlive, cs->nreg);

	for (size_t i = 0; i < cs->nreg; i++) {
		const struct creg *rg = &cs->reg[i];
		const struct cpool *cp = &cs->pool[rg->pool];
		const struct vcma_region *lr = vcma_core_lookup(&cs->core, rg->guest, rg->handle);
		uint32_t other = rg->guest % NGUEST + 1;

		CHECK(lr != NULL, "live region handle 0x%" PRIx64 " of guest %u not found", rg->handle,
		      rg->guest);
		CHECK(lr->handle == rg->handle && lr->guest == rg->guest && lr->pool == rg->pool &&
			      lr->mfn == cp->m.base + rg->idx && lr->nframes == rg->n,
		      "region 0x%" PRIx64 ": library guest %u pool %u mfn 0x%" PRIx64 " n %" PRIu64
		      ", model guest %u pool %u mfn 0x%" PRIx64 " n %" PRIu64,
		      rg->handle, lr->guest, lr->pool, lr->mfn, lr->nframes, rg->guest, rg->pool,
		      cp->m.base + rg->idx, rg->n);
		CHECK(vcma_core_lookup(&cs->core, other, rg->handle) == NULL,
		      "region 0x%" PRIx64 " of guest %u visible to guest %u", rg->handle, rg->guest,
		      other);
		for (uint64_t f = rg->idx; f < rg->idx + rg->n; f++) {
			struct vcma_frame_info fi;
			int ret;

			memset(&fi, 0, sizeof(fi));
			ret = vcma_fmap_get(&cp->p->fm, f, &fi);
			CHECK(ret == 0 && fi.state == VCMA_FRAME_REGION && fi.guest == rg->guest &&
				      !fi.claimed,
			      "frame %" PRIu64 " of region 0x%" PRIx64 " (guest %u) reads %s guest %u",
			      f, rg->handle, rg->guest, state_name(fi.state), fi.guest);
		}
	}

	/* no frame in two regions */
	sorted = calloc(cs->nreg + 1, sizeof(*sorted));
	assert_non_null(sorted);
	if (cs->nreg)
		memcpy(sorted, cs->reg, cs->nreg * sizeof(*sorted));
	qsort(sorted, cs->nreg, sizeof(*sorted), creg_cmp);
	for (size_t i = 1; i < cs->nreg; i++)
		if (sorted[i].pool == sorted[i - 1].pool)
			CHECK(sorted[i - 1].idx + sorted[i - 1].n <= sorted[i].idx,
			      "regions 0x%" PRIx64 " [%" PRIu64 ", +%" PRIu64 ") and 0x%" PRIx64
			      " [%" PRIu64 ", +%" PRIu64 ") overlap in pool %u",
			      sorted[i - 1].handle, sorted[i - 1].idx, sorted[i - 1].n, sorted[i].handle,
			      sorted[i].idx, sorted[i].n, sorted[i].pool);
	free(sorted);

	while ((it = vcma_regions_next(&cs->core.regions, &cursor)) != NULL) {
		bool found = false;

		for (size_t i = 0; i < cs->nreg && !found; i++)
			found = cs->reg[i].handle == it->handle && cs->reg[i].guest == it->guest;
		CHECK(found, "region table iterates handle 0x%" PRIx64 " of guest %u, not live in the model",
		      it->handle, it->guest);
		CHECK(++seen <= cs->nreg, "region iteration yields more than %zu regions", cs->nreg);
	}
	CHECK(seen == cs->nreg, "region iteration yields %zu regions, model %zu", seen, cs->nreg);
}

static void c_after(struct cstate *cs)
{
	g_op++;
	snprintf(g_pool_ctx, sizeof(g_pool_ctx), "core");
	for (uint32_t k = 0; k < cs->npools; k++)
		c_check_pool(cs, &cs->pool[k], g_op % cs->every_largest == 0);
	c_check_usage(cs);
	CHECK(cs->core.regions.nlive == cs->nreg, "region table holds %u live regions, model %zu",
	      cs->core.regions.nlive, cs->nreg);
	if (g_op % cs->every_full == 0)
		c_full(cs);
}

static void c_push_stale(struct cstate *cs, uint64_t handle, uint32_t guest)
{
	cs->stale[cs->stale_pos].handle = handle;
	cs->stale[cs->stale_pos].guest = guest;
	cs->stale_pos = (cs->stale_pos + 1) % NSTALE;
	if (cs->nstale < NSTALE)
		cs->nstale++;
}

static uint64_t hash64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* Record a newly issued handle; false if it was issued before. */
static bool c_issue(struct cstate *cs, uint64_t handle)
{
	size_t mask, i;

	if (2 * (cs->nissued + 1) > cs->capissued) {
		uint64_t *old = cs->issued;
		size_t oldcap = cs->capissued;

		cs->capissued = oldcap ? oldcap * 2 : 1024;
		cs->issued = calloc(cs->capissued, sizeof(*cs->issued));
		assert_non_null(cs->issued);
		cs->nissued = 0;
		for (size_t k = 0; k < oldcap; k++)
			if (old[k])
				c_issue(cs, old[k]);
		free(old);
	}
	mask = cs->capissued - 1;
	for (i = hash64(handle) & mask; cs->issued[i]; i = (i + 1) & mask)
		if (cs->issued[i] == handle)
			return false;
	cs->issued[i] = handle;
	cs->nissued++;
	return true;
}

static long c_find_reg(const struct cstate *cs, uint32_t guest, uint64_t handle)
{
	for (size_t i = 0; i < cs->nreg; i++)
		if (cs->reg[i].handle == handle && cs->reg[i].guest == guest)
			return (long)i;
	return -1;
}

/* The model side of freeing region i (the library call was made by the caller). */
static void c_model_free(struct cstate *cs, size_t i)
{
	struct creg rg = cs->reg[i];
	struct cpool *cp = &cs->pool[rg.pool];

	for (uint64_t f = rg.idx; f < rg.idx + rg.n; f++)
		mset(&cp->m, f, VCMA_FRAME_FREE, false, 0, 0);
	cp->nregions--;
	cp->rel_pages += rg.n;
	cs->reg[i] = cs->reg[--cs->nreg];
	c_push_stale(cs, rg.handle, rg.guest);
}

static struct cpool *c_resolve(struct cstate *cs, const char *pname,
			       const struct vcma_requester *who)
{
	if (pname) {
		for (uint32_t k = 0; k < cs->npools; k++)
			if (strcmp(cs->pool[k].name, pname) == 0)
				return &cs->pool[k];
		return NULL;
	}
	if (who->name && strcmp(who->name, EXCL_BIND) == 0)
		for (uint32_t k = 0; k < cs->npools; k++)
			if (cs->pool[k].exclusive)
				return &cs->pool[k];
	for (uint32_t k = 0; k < cs->npools; k++)
		if (!cs->pool[k].exclusive)
			return &cs->pool[k];
	return NULL;
}

static unsigned int c_expected_order(const struct cpool *cp, uint64_t n, unsigned int explicit_order)
{
	unsigned int nat = ilog2_ceil(n);

	if (nat > cp->align_cap)
		nat = cp->align_cap;
	return nat > explicit_order ? nat : explicit_order;
}

static uint64_t c_gen_n(struct rng *r, const struct cpool *cp)
{
	uint64_t N = cp ? cp->m.n : 1000, u = rng_below(r, 100);

	if (u < 4)
		return 1;
	if (u < 40)
		return rng_range(r, 2, 8);
	if (u < 70)
		return rng_range(r, 1, 64);
	if (u < 88)
		return rng_range(r, 65, min_u64(400, N > 65 ? N : 65));
	if (u < 97)
		return 1ull << rng_below(r, 10);
	if (u < 99)
		return N - rng_below(r, min_u64(N, 4));
	return N + 1 + rng_below(r, 10);
}

/* Stats after a refused request: the docs do not say whether policy refusals count as
 * failures; accept either, then follow the library. */
static void c_resync_fail_stats(struct cpool *cp)
{
	const struct vcma_pool_stats *st = &cp->p->stats;

	CHECK(st->alloc_fail >= cp->a_fail && st->alloc_fail - cp->a_fail <= 1,
	      "pool %s alloc_fail moved from %" PRIu64 " to %" PRIu64 " on one refused request",
	      cp->name, cp->a_fail, st->alloc_fail);
	CHECK(st->alloc_pages_fail >= cp->a_pages_fail &&
		      (st->alloc_fail != cp->a_fail || st->alloc_pages_fail == cp->a_pages_fail),
	      "pool %s alloc_pages_fail moved from %" PRIu64 " to %" PRIu64 " without a failure",
	      cp->name, cp->a_pages_fail, st->alloc_pages_fail);
	cp->a_fail = st->alloc_fail;
	cp->a_pages_fail = st->alloc_pages_fail;
}

static void c_alloc(struct cstate *cs)
{
	struct rng *r = cs->r;
	uint32_t g = (uint32_t)rng_range(r, 1, NGUEST);
	char gname[16];
	struct vcma_requester who;
	const char *pname;
	struct cpool *cp;
	uint64_t n, bytes, u;
	unsigned int explicit_order = 0;
	bool garbage = false;
	int allowed[8];
	size_t na = 0;
	struct hookctx h;
	struct vcma_vacate_ops ops, *opsp;
	struct vcma_alloc_req req;
	struct vcma_region out;
	int ret;

	snprintf(gname, sizeof(gname), "vm%u", g);
	memset(&who, 0, sizeof(who));
	who.guest = g;
	who.name = rng_chance(r, 9, 10) ? gname : NULL;
	u = rng_below(r, 20);
	if (u < 16)
		pname = cs->pool[rng_below(r, cs->npools)].name;
	else if (u < 19)
		pname = NULL;
	else
		pname = "nope";
	cp = c_resolve(cs, pname, &who);
	if (cp && cp->exclusive && rng_chance(r, 4, 5)) { /* mostly its owner asks */
		g = 3;
		snprintf(gname, sizeof(gname), "vm%u", g);
		who.guest = g;
		who.name = gname;
	}

	n = c_gen_n(r, cp);
	bytes = n * VCMA_PAGE_SIZE;
	u = rng_below(r, 100);
	if (u < 15)
		explicit_order = (unsigned int)rng_range(r, 1, 12);
	else if (u < 17)
		explicit_order = (unsigned int)rng_range(r, 13, VCMA_FMAP_MAX_ORDER);
	else if (u < 19)
		explicit_order = (unsigned int)rng_range(r, VCMA_FMAP_MAX_ORDER + 1, 200);
	u = rng_below(r, 100);
	if (u == 0) {
		bytes = 0;
		n = 0;
	} else if (u == 3) { /* the owner would not fit the frame map */
		who.guest = VCMA_GUEST_MAX + 1 + (uint32_t)rng_below(r, 1u << 20);
		garbage = true;
	} else if (u == 1) {
		bytes = UINT64_MAX - rng_below(r, 4096);
		garbage = true;
	} else if (u == 2) {
		bytes = 1ull << rng_range(r, 40, 63);
		garbage = true;
	}

	memset(&h, 0, sizeof(h));
	h.r = r;
	h.cp = cp;
	u = rng_below(r, 100);
	h.mode = u < 68 ? HOOK_OK : u < 82 ? HOOK_FAIL : u < 88 ? HOOK_LIE : u < 94 ? HOOK_NONE
										   : HOOK_NULLFN;
	h.poke = rng_chance(r, 1, 4);
	memset(&ops, 0, sizeof(ops));
	ops.vacate = h.mode == HOOK_NULLFN ? NULL : hook_vacate;
	ops.ctx = &h;
	opsp = h.mode == HOOK_NONE ? NULL : &ops;

	memset(&req, 0, sizeof(req));
	req.bytes = bytes;
	req.align_order = explicit_order;
	req.pool = pname;
	memset(&out, 0, sizeof(out));

	if (bytes == 0 || explicit_order > VCMA_FMAP_MAX_ORDER)
		allowed[na++] = -EINVAL;
	if (!cp) {
		allowed[na++] = -ENODEV;
	} else {
		if (cp->exclusive && !(who.name && strcmp(who.name, EXCL_BIND) == 0))
			allowed[na++] = -EACCES;
		if (cp->min_req_applies && n < cp->min_req)
			allowed[na++] = -ERANGE;
		if (n > cp->m.n)
			allowed[na++] = -E2BIG;
		if (cp->quota != UINT64_MAX &&
		    (bytes > cp->quota || c_usage_bytes(cs, cp->index, g, NULL) > cp->quota - bytes))
			allowed[na++] = -EDQUOT;
	}
	set_ctx("core_alloc(guest=%u name=%s pool=%s bytes=0x%" PRIx64 " (%" PRIu64
		" frames) align_order=%u hook=%d)",
		who.guest, who.name ? who.name : "NULL", pname ? pname : "NULL", bytes, n, explicit_order,
		(int)h.mode);
	if (cp)
		snprintf(g_pool_ctx, sizeof(g_pool_ctx),
			 "core pool %s base=0x%" PRIx64 " nframes=%" PRIu64 " costs %u/%u cap %u "
			 "min_request %u quota 0x%" PRIx64 "%s%s",
			 cp->name, cp->m.base, cp->m.n, cp->m.clf, cp->m.clu, cp->align_cap, cp->min_req,
			 cp->quota, cp->exclusive ? " exclusive" : "", cp->lendable ? "" : " not-lendable");

	if (na > 0 || garbage) {
		ret = vcma_core_alloc(&cs->core, &who, &req, opsp, &out);
		if (garbage) {
			CHECK(ret < 0 && ret > -4096, "garbage request returned %d", ret);
		} else {
			bool ok = false;

			for (size_t i = 0; i < na; i++)
				ok |= ret == allowed[i];
			CHECK(ok, "refused request returned %d, expected %d%s", ret, allowed[0],
			      na > 1 ? " (or another policy error that applies)" : "");
		}
		CHECK(h.calls == 0, "vacate hook called for a refused request");
		if (garbage)
			cov.alloc_garbage++;
		else
			cov.alloc_refused++;
		if (cp)
			c_resync_fail_stats(cp);
		c_after(cs);
		return;
	}

	{
		unsigned int order = c_expected_order(cp, n, explicit_order);
		unsigned int lo = vcma_pool_align_order(cp->p, n, explicit_order);
		struct vcma_window e;
		int re;
		uint64_t lent, vac_lf0, vac_lu0, dlf, dlu, done_lf = 0, done_lu = 0;

		CHECK(lo == order,
		      "vcma_pool_align_order(n=%" PRIu64 ", explicit=%u) = %u, expected %u (cap %u)",
		      n, explicit_order, lo, order, cp->align_cap);
		re = brute_search(&cp->m, n, order, &e);
		if (re == 0) {
			h.wstart = e.start;
			h.wn = n;
			h.nexp = brute_collect(&cp->m, e.start, n, NULL, 0);
			h.exp = calloc(h.nexp + 1, sizeof(*h.exp));
			h.done = calloc(h.nexp + 1, sizeof(*h.done));
			assert_non_null(h.exp);
			assert_non_null(h.done);
			brute_collect(&cp->m, e.start, n, h.exp, h.nexp);
			if (h.mode == HOOK_OK)
				h.k = h.nexp;
			else if (h.mode == HOOK_FAIL)
				h.k = (size_t)rng_below(r, h.nexp + 1);
			else if (h.mode == HOOK_LIE)
				h.k = (size_t)rng_below(r, h.nexp ? h.nexp : 1);
		}
		vac_lf0 = cp->p->stats.vacated_lent_free;
		vac_lu0 = cp->p->stats.vacated_lent_used;
		ret = vcma_core_alloc(&cs->core, &who, &req, opsp, &out);
		CHECK(re == 0 || re == -ENOSPC, "brute force search = %d", re);
		if (re == -ENOSPC) {
			cov.alloc_nospc++;
			CHECK(ret == -ENOSPC,
			      "brute force finds no window of %" PRIu64 " frames at order %u, library returned %d "
			      "(region 0x%" PRIx64 " mfn 0x%" PRIx64 ")",
			      n, order, ret, out.handle, out.mfn);
			CHECK(h.calls == 0, "vacate hook called without a window");
			cp->a_fail++;
			cp->a_pages_fail += n;
		} else {
			int want;

			lent = e.nlent_free + e.nlent_used;
			if (lent == 0)
				want = 0;
			else if (h.mode == HOOK_NONE || h.mode == HOOK_NULLFN)
				want = -EBUSY;
			else if (h.mode == HOOK_OK)
				want = 0;
			else if (h.mode == HOOK_FAIL)
				want = -EIO;
			else
				want = INT32_MIN; /* lying hook: any error */
			if (want == INT32_MIN)
				CHECK(ret < 0 && ret > -4096,
				      "the hook returned 0 but left %zu of %" PRIu64 " lent frames lent; "
				      "alloc returned %d",
				      h.nexp - h.k, lent, ret);
			else
				CHECK(ret == want,
				      "alloc returned %d (mfn 0x%" PRIx64 " n %" PRIu64 "), expected %d; "
				      "brute-force window start %" PRIu64 " (mfn 0x%" PRIx64 ") cost %" PRIu64
				      " lent %" PRIu64 ", order %u",
				      ret, out.mfn, out.nframes, want, e.start, cp->m.base + e.start,
				      e.cost, lent, order);
			CHECK(h.calls == (lent && opsp && ops.vacate ? 1u : 0u),
			      "vacate hook called %u times, window holds %" PRIu64 " lent frames", h.calls,
			      lent);
			for (size_t i = 0; i < h.ndone; i++) {
				done_lf += cp->m.f[h.done[i]].state == VCMA_FRAME_LENT_FREE;
				done_lu += cp->m.f[h.done[i]].state == VCMA_FRAME_LENT_USED;
				mset(&cp->m, h.done[i], VCMA_FRAME_FREE, false, 0, 0);
			}
			/* vacated_*: frames taken back. On success exactly the window's lent
			 * frames; on failure whether vacated frames count is not specified,
			 * but never more than were vacated. */
			dlf = cp->p->stats.vacated_lent_free - vac_lf0;
			dlu = cp->p->stats.vacated_lent_used - vac_lu0;
			if (ret == 0)
				CHECK(dlf == e.nlent_free && dlu == e.nlent_used,
				      "vacated_lent_free/used moved by %" PRIu64 "/%" PRIu64
				      ", window held %" PRIu64 "/%" PRIu64,
				      dlf, dlu, e.nlent_free, e.nlent_used);
			else
				CHECK(dlf <= done_lf && dlu <= done_lu,
				      "vacated_lent_free/used moved by %" PRIu64 "/%" PRIu64
				      " on a failed allocation that vacated %" PRIu64 "/%" PRIu64,
				      dlf, dlu, done_lf, done_lu);
			if (lent == 0)
				cov.alloc_plain++;
			else if (want == 0)
				cov.alloc_vacated++;
			else if (want == -EBUSY)
				cov.alloc_busy++;
			else if (want == -EIO)
				cov.alloc_hook_fail++;
			else
				cov.alloc_hook_lie++;
			if (ret == 0) {
				CHECK(out.handle != 0 && out.guest == g && out.pool == cp->index &&
					      out.mfn == cp->m.base + e.start && out.nframes == n,
				      "region: handle 0x%" PRIx64 " guest %u pool %u mfn 0x%" PRIx64
				      " n %" PRIu64 "; expected guest %u pool %u mfn 0x%" PRIx64
				      " (start %" PRIu64 ", cost %" PRIu64 ") n %" PRIu64,
				      out.handle, out.guest, out.pool, out.mfn, out.nframes, g, cp->index,
				      cp->m.base + e.start, e.start, e.cost, n);
				CHECK((out.mfn & ((1ull << order) - 1)) == 0,
				      "region mfn 0x%" PRIx64 " not aligned to order %u", out.mfn, order);
				CHECK(c_issue(cs, out.handle),
				      "handle 0x%" PRIx64 " was issued before (a stale handle would match the "
				      "new region)", out.handle);
				for (size_t i = 0; i < cs->nreg; i++) {
					const struct creg *o = &cs->reg[i];

					CHECK(!(o->handle == out.handle),
					      "new handle 0x%" PRIx64 " equals a live one", out.handle);
					if (o->pool == cp->index)
						CHECK(o->idx + o->n <= e.start || e.start + n <= o->idx,
						      "new region [%" PRIu64 ", +%" PRIu64
						      ") overlaps region 0x%" PRIx64 " [%" PRIu64 ", +%" PRIu64 ")",
						      e.start, n, o->handle, o->idx, o->n);
				}
				for (uint64_t f = e.start; f < e.start + n; f++)
					mset(&cp->m, f, VCMA_FRAME_REGION, false, g, 0);
				if (cs->nreg == cs->capreg) {
					cs->capreg = cs->capreg ? cs->capreg * 2 : 64;
					cs->reg = realloc(cs->reg, cs->capreg * sizeof(*cs->reg));
					assert_non_null(cs->reg);
				}
				cs->reg[cs->nreg].handle = out.handle;
				cs->reg[cs->nreg].guest = g;
				cs->reg[cs->nreg].pool = cp->index;
				cs->reg[cs->nreg].idx = e.start;
				cs->reg[cs->nreg].n = n;
				cs->nreg++;
				cp->nregions++;
				cp->a_succ++;
				cp->a_pages += n;
				{
					const struct vcma_region *lr =
						vcma_core_lookup(&cs->core, g, out.handle);

					CHECK(lr && lr->mfn == out.mfn && lr->nframes == n,
					      "lookup of the new region 0x%" PRIx64 " failed", out.handle);
				}
			} else {
				cp->a_fail++;
				cp->a_pages_fail += n;
			}
			cmp_local(&cp->p->fm, &cp->m, e.start, n);
		}
		free(h.exp);
		free(h.done);
	}
	c_after(cs);
}

static void c_free(struct cstate *cs, uint32_t guest, uint64_t handle, const char *kind)
{
	long ri = c_find_reg(cs, guest, handle);
	int ret;

	set_ctx("core_free(guest=%u, handle=0x%" PRIx64 ") [%s]", guest, handle, kind);
	snprintf(g_pool_ctx, sizeof(g_pool_ctx), "core");
	ret = vcma_core_free(&cs->core, guest, handle);
	if (ri >= 0) {
		struct creg rg = cs->reg[ri];

		CHECK(ret == 0, "freeing a live region returned %d", ret);
		cov.free_ok++;
		c_model_free(cs, (size_t)ri);
		CHECK(vcma_core_lookup(&cs->core, guest, handle) == NULL,
		      "freed handle still looks up");
		cmp_local(&cs->pool[rg.pool].p->fm, &cs->pool[rg.pool].m, rg.idx, rg.n);
	} else {
		CHECK(ret == -ENOENT, "expected -ENOENT, got %d", ret);
		cov.free_enoent++;
		CHECK(vcma_core_lookup(&cs->core, guest, handle) == NULL,
		      "a handle that is not guest %u's looks up", guest);
	}
	c_after(cs);
}

static uint32_t c_other_guest(struct rng *r, uint32_t owner)
{
	uint32_t g;

	switch (rng_below(r, 8)) {
	case 0:
		return 0;
	case 1:
		return owner + 0x10000u; /* same low 16 bits */
	case 2:
		return UINT32_MAX;
	default:
		do
			g = (uint32_t)rng_range(r, 1, NGUEST + 1);
		while (g == owner);
		return g;
	}
}

static void c_free_garbage(struct cstate *cs)
{
	struct rng *r = cs->r;
	uint64_t h;
	uint32_t g = (uint32_t)rng_range(r, 1, NGUEST);
	uint64_t live = cs->nreg ? cs->reg[rng_below(r, cs->nreg)].handle : 0x100000000ull;

	switch (rng_below(r, 8)) {
	case 0:
		h = 0;
		break;
	case 1:
		h = rng_next(r);
		break;
	case 2:
		h = live ^ (1ull << (32 + rng_below(r, 32))); /* another generation */
		break;
	case 3:
		h = (live & 0xffffffff00000000ull) | ((live + 1 + rng_below(r, 3)) & 0xffffffffull);
		break;
	case 4:
		h = (live & 0xffffffff00000000ull) | 0xffffffffull;
		break;
	case 5:
		h = live & 0xffffffffull; /* generation 0 */
		break;
	case 6:
		h = UINT64_MAX;
		break;
	default:
		h = (live & 0xffffffff00000000ull) |
		    (cs->core.regions.nslots + rng_below(r, 1000)); /* slot past the table */
		break;
	}
	c_free(cs, g, h, "garbage");
}

static void c_lookup(struct cstate *cs)
{
	struct rng *r = cs->r;

	set_ctx("core_lookup");
	if (cs->nstale && rng_chance(r, 1, 2)) {
		const struct cstale *s = &cs->stale[rng_below(r, cs->nstale)];

		if (c_find_reg(cs, s->guest, s->handle) < 0)
			CHECK(vcma_core_lookup(&cs->core, s->guest, s->handle) == NULL,
			      "stale handle 0x%" PRIx64 " of guest %u looks up", s->handle, s->guest);
	}
	if (cs->nreg) {
		const struct creg *rg = &cs->reg[rng_below(r, cs->nreg)];
		uint32_t other = c_other_guest(r, rg->guest);
		const struct vcma_region *lr = vcma_core_lookup(&cs->core, rg->guest, rg->handle);

		CHECK(lr && lr->handle == rg->handle && lr->guest == rg->guest,
		      "live handle 0x%" PRIx64 " of guest %u does not look up", rg->handle, rg->guest);
		CHECK(vcma_core_lookup(&cs->core, other, rg->handle) == NULL,
		      "handle 0x%" PRIx64 " of guest %u looks up for guest %u", rg->handle, rg->guest,
		      other);
	}
	c_after(cs);
}

static void c_release_guest(struct cstate *cs, uint32_t g)
{
	int expect = 0, ret;

	for (size_t i = 0; i < cs->nreg; i++)
		expect += cs->reg[i].guest == g;
	set_ctx("core_release_guest(guest=%u) with %d regions", g, expect);
	snprintf(g_pool_ctx, sizeof(g_pool_ctx), "core");
	ret = vcma_core_release_guest(&cs->core, g);
	CHECK(ret == expect, "release_guest returned %d, guest had %d regions", ret, expect);
	cov.released += (uint64_t)expect;
	for (size_t i = cs->nreg; i-- > 0;)
		if (cs->reg[i].guest == g)
			c_model_free(cs, i);
	c_after(cs);
}

/* Mostly a lendable pool; now and then any pool, to see a refusal. */
static struct cpool *c_lendable_pool(struct cstate *cs)
{
	for (int tries = 0; tries < 8; tries++) {
		struct cpool *cp = &cs->pool[rng_below(cs->r, cs->npools)];

		if (cp->lendable || rng_chance(cs->r, 1, 10))
			return cp;
	}
	return &cs->pool[0];
}

static void c_lend(struct cstate *cs, struct cpool *cp, uint64_t idx, uint32_t guest, uint64_t gfn,
		   bool used)
{
	struct fmodel *m = &cp->m;
	bool legal = cp->lendable && idx < m->n && guest <= VCMA_GUEST_MAX && gfn <= VCMA_GFN_MAX &&
		     mf_free_run(&m->f[idx]);
	int ret;

	set_ctx("pool_lend(pool=%s, idx=%" PRIu64 ", guest=%u, gfn=0x%" PRIx64 ", used=%d)",
		cp->name, idx, guest, gfn, used);
	ret = vcma_pool_lend(cp->p, idx, guest, gfn, used);
	expect_ret(ret, legal);
	if (legal)
		mset(m, idx, used ? VCMA_FRAME_LENT_USED : VCMA_FRAME_LENT_FREE, false, guest, gfn);
	cmp_local(&cp->p->fm, m, idx, 1);
	c_after(cs);
}

static void c_set_used(struct cstate *cs, struct cpool *cp, uint64_t idx, bool used)
{
	struct fmodel *m = &cp->m;
	unsigned int target = used ? VCMA_FRAME_LENT_USED : VCMA_FRAME_LENT_FREE;
	bool same = false, legal = false;
	int ret;

	set_ctx("pool_set_used(pool=%s, idx=%" PRIu64 ", used=%d)", cp->name, idx, used);
	if (idx < m->n && mf_lent(&m->f[idx])) {
		same = m->f[idx].state == target;
		legal = !same;
	}
	ret = vcma_pool_set_used(cp->p, idx, used);
	if (same)
		CHECK(ret <= 0 && ret > -4096, "set_used to the current state returned %d", ret);
	else
		expect_ret(ret, legal);
	if (legal)
		mset(m, idx, target, false, m->f[idx].guest, m->f[idx].gfn);
	cmp_local(&cp->p->fm, m, idx, 1);
	c_after(cs);
}

static void c_unlend(struct cstate *cs, struct cpool *cp, uint64_t idx)
{
	struct fmodel *m = &cp->m;
	bool legal = idx < m->n && mf_lent(&m->f[idx]);
	int ret;

	set_ctx("pool_unlend(pool=%s, idx=%" PRIu64 ")", cp->name, idx);
	ret = vcma_pool_unlend(cp->p, idx);
	expect_ret(ret, legal);
	if (legal)
		mset(m, idx, VCMA_FRAME_FREE, false, 0, 0);
	cmp_local(&cp->p->fm, m, idx, 1);
	c_after(cs);
}

static void c_config_set(struct vcma_pool_config *cfg, const char *key, const char *value)
{
	char err[256] = "";
	int ret = vcma_pool_config_set(cfg, key, value, err, sizeof(err));

	CHECK(ret == 0, "vcma_pool_config_set(%s, %s) = %d: %s", key, value, ret, err);
}

static void c_setup(struct cstate *cs, struct rng *r)
{
	char err[256], val[64];
	int ret;

	memset(cs, 0, sizeof(*cs));
	cs->r = r;
	snprintf(g_pool_ctx, sizeof(g_pool_ctx), "core setup");
	set_ctx("core_init");
	ret = vcma_core_init(&cs->core);
	CHECK(ret == 0, "vcma_core_init = %d", ret);
	cs->npools = rng_chance(r, 1, 2) ? 3 : 2;
	for (uint32_t k = 0; k < cs->npools; k++) {
		struct cpool *cp = &cs->pool[k];
		struct vcma_pool_config cfg;
		uint64_t N = k == 2 ? rng_range(r, 64, 1024) : rng_range(r, 300, 2500);
		uint64_t base = ((uint64_t)(k + 1) << 32) + rng_below(r, 1u << 20);
		uint32_t clf, clu;
		uint64_t u = rng_below(r, 10);

		if (u < 3) {
			clf = 1;
			clu = 2;
		} else if (u < 5) {
			clf = VCMA_DEFAULT_COST_LENT_FREE;
			clu = VCMA_DEFAULT_COST_LENT_USED;
		} else {
			clf = (uint32_t)rng_range(r, 1, 500);
			clu = (uint32_t)rng_range(r, clf + 1, 65535);
		}
		snprintf(cp->name, sizeof(cp->name), "p%c", 'a' + (int)k);
		cp->index = k;
		set_ctx("pool_config(%s)", cp->name);
		memset(&cfg, 0, sizeof(cfg));
		err[0] = 0;
		ret = vcma_pool_config_init(&cfg, cp->name, err, sizeof(err));
		CHECK(ret == 0, "vcma_pool_config_init = %d: %s", ret, err);
		snprintf(val, sizeof(val), "%" PRIu64 "K", N * 4);
		c_config_set(&cfg, "size", val);
		cp->align_cap = (uint32_t)rng_below(r, 11);
		snprintf(val, sizeof(val), "%u", cp->align_cap);
		c_config_set(&cfg, "align_order", val);
		cp->min_req = VCMA_DEFAULT_MIN_REQUEST;
		cp->min_req_applies = k != 2;
		if (k != 2 || rng_chance(r, 1, 2)) {
			cp->min_req = (uint32_t)rng_range(r, 1, 3);
			snprintf(val, sizeof(val), "%u", cp->min_req);
			c_config_set(&cfg, "min_request", val);
			cp->min_req_applies = true;
		}
		snprintf(val, sizeof(val), "%u", clf);
		c_config_set(&cfg, "cost_lent_free", val);
		snprintf(val, sizeof(val), "%u", clu);
		c_config_set(&cfg, "cost_lent_used", val);
		cp->quota = UINT64_MAX;
		cp->lendable = k != 2;
		if (k == 1 && rng_chance(r, 1, 4)) {
			cp->lendable = false;
			c_config_set(&cfg, "lendable", "no");
		}
		if (k == 1) {
			cp->quota = (N * VCMA_PAGE_SIZE / rng_range(r, 2, 4)) & ~(uint64_t)(VCMA_PAGE_SIZE - 1);
			if (cp->quota == 0)
				cp->quota = VCMA_PAGE_SIZE;
			snprintf(val, sizeof(val), "%" PRIu64 "K", cp->quota / 1024);
			c_config_set(&cfg, "quota", val);
		}
		if (k == 2) {
			cp->exclusive = true;
			c_config_set(&cfg, "mode", "exclusive");
			c_config_set(&cfg, "bind", "guest:" EXCL_BIND);
		}
		err[0] = 0;
		ret = vcma_pool_config_validate(&cfg, err, sizeof(err));
		CHECK(ret == 0, "vcma_pool_config_validate(%s) = %d: %s", cp->name, ret, err);
		set_ctx("core_add_pool(%s, base=0x%" PRIx64 ", nframes=%" PRIu64 ")", cp->name, base, N);
		ret = vcma_core_add_pool(&cs->core, &cfg, base, N);
		CHECK(ret == (int)k, "vcma_core_add_pool = %d, expected index %u", ret, k);
		cp->p = cs->core.pool[k];
		CHECK(cp->p != NULL && vcma_core_pool_by_name(&cs->core, cp->name) == cp->p,
		      "pool %s not found after add", cp->name);
		CHECK(cp->p->fm.base == base && cp->p->fm.nframes == N && cp->p->fm.cost_lf == clf &&
			      cp->p->fm.cost_lu == clu && cp->p->index == k,
		      "pool %s: fm base 0x%" PRIx64 " nframes %" PRIu64 " costs %u/%u index %u",
		      cp->name, cp->p->fm.base, cp->p->fm.nframes, cp->p->fm.cost_lf,
		      cp->p->fm.cost_lu, cp->p->index);
		CHECK(cp->p->quota == cp->quota, "pool %s quota %" PRIu64 ", configured %" PRIu64,
		      cp->name, cp->p->quota, cp->quota);
		model_init(&cp->m, base, N, clf, clu);
		/* a few reserved holes, set on the frame map directly as the daemon would */
		for (unsigned int h = (unsigned int)rng_below(r, 3); h > 0; h--) {
			uint64_t idx, n;

			if (!pick_run(r, &cp->m, P_FREE_UNCL, rng_range(r, 1, 40), &idx, &n))
				continue;
			set_ctx("fmap_reserve(%s, idx=%" PRIu64 ", n=%" PRIu64 ")", cp->name, idx, n);
			ret = vcma_fmap_reserve(&cp->p->fm, idx, n);
			CHECK(ret == 0, "reserve = %d", ret);
			for (uint64_t i = idx; i < idx + n; i++)
				mset(&cp->m, i, VCMA_FRAME_RESERVED, false, 0, 0);
		}
	}
	{
		struct vcma_pool_config dup;

		set_ctx("core_add_pool(duplicate name pa)");
		ret = vcma_pool_config_init(&dup, "pa", err, sizeof(err));
		CHECK(ret == 0, "config init = %d", ret);
		c_config_set(&dup, "size", "64K");
		ret = vcma_core_add_pool(&cs->core, &dup, 1ull << 44, 16);
		CHECK(ret == -EEXIST, "adding a second pool named pa returned %d", ret);
		CHECK(cs->core.npools == cs->npools, "core has %u pools, expected %u", cs->core.npools,
		      cs->npools);
	}
	cs->every_largest = 3;
	cs->every_full = 97;
	c_full(cs);

	/* Lend a share of each shared pool up front, so that windows must be vacated. */
	for (uint32_t k = 0; k < cs->npools; k++) {
		struct cpool *cp = &cs->pool[k];
		unsigned int density = (unsigned int)rng_range(r, rng_chance(r, 1, 4) ? 0 : 3, 4);

		if (!cp->lendable)
			continue;
		for (uint64_t i = 0; i < cp->m.n && density; i++)
			if (mf_free_run(&cp->m.f[i]) && rng_below(r, 4) < density)
				c_lend(cs, cp, i, (uint32_t)rng_range(r, 1, NGUEST), rand_gfn(r),
				       rng_chance(r, 1, 2));
	}
}

enum cop {
	CO_ALLOC, CO_FREE, CO_FREE_STALE, CO_FREE_FOREIGN, CO_FREE_GARBAGE, CO_LEND, CO_LEND_RUN,
	CO_SET_USED, CO_UNLEND, CO_RELEASE_GUEST, CO_LOOKUP, CO_N
};

static void c_step(struct cstate *cs, const unsigned int *weights)
{
	struct rng *r = cs->r;
	struct cpool *cp;
	uint64_t idx, n;

	g_steps++;
	switch (pick_weighted(r, weights, CO_N)) {
	case CO_ALLOC:
		c_alloc(cs);
		break;
	case CO_FREE:
		if (!cs->nreg) {
			c_alloc(cs);
			break;
		}
		{
			const struct creg *rg = &cs->reg[rng_below(r, cs->nreg)];

			c_free(cs, rg->guest, rg->handle, "valid");
		}
		break;
	case CO_FREE_STALE:
		if (!cs->nstale) {
			c_free_garbage(cs);
			break;
		}
		{
			const struct cstale *s = &cs->stale[rng_below(r, cs->nstale)];

			c_free(cs, rng_chance(r, 3, 4) ? s->guest : (uint32_t)rng_range(r, 1, NGUEST),
			       s->handle, "stale");
		}
		break;
	case CO_FREE_FOREIGN:
		if (!cs->nreg) {
			c_free_garbage(cs);
			break;
		}
		{
			const struct creg *rg = &cs->reg[rng_below(r, cs->nreg)];

			c_free(cs, c_other_guest(r, rg->guest), rg->handle, "foreign");
		}
		break;
	case CO_FREE_GARBAGE:
		c_free_garbage(cs);
		break;
	case CO_LEND:
		cp = c_lendable_pool(cs);
		if (rng_chance(r, 1, 10))
			idx = cp->m.n + rng_below(r, 100);
		else if (rng_chance(r, 2, 10) || !pick_frame(r, &cp->m, P_FREE_UNCL, &idx))
			idx = rng_below(r, cp->m.n);
		c_lend(cs, cp, idx, (uint32_t)rng_range(r, 1, NGUEST), rand_gfn(r), rng_chance(r, 1, 2));
		break;
	case CO_LEND_RUN:
		cp = c_lendable_pool(cs);
		if (pick_run(r, &cp->m, P_FREE_UNCL, rng_range(r, 1, 48), &idx, &n)) {
			uint32_t g = (uint32_t)rng_range(r, 1, NGUEST);
			uint64_t gfn = rng_below(r, 1ull << 30);

			for (uint64_t i = idx; i < idx + n; i++)
				c_lend(cs, cp, i, g, gfn + i - idx, rng_chance(r, 1, 3));
		}
		break;
	case CO_SET_USED:
		cp = c_lendable_pool(cs);
		if (rng_chance(r, 8, 10) && pick_frame(r, &cp->m, P_LENT, &idx))
			c_set_used(cs, cp, idx,
				   rng_chance(r, 9, 10) == (cp->m.f[idx].state == VCMA_FRAME_LENT_FREE));
		else
			c_set_used(cs, cp, rng_below(r, cp->m.n + 10), rng_chance(r, 1, 2));
		break;
	case CO_UNLEND:
		cp = c_lendable_pool(cs);
		if (rng_chance(r, 2, 10) || !pick_frame(r, &cp->m, P_LENT, &idx))
			idx = rng_below(r, cp->m.n + 10);
		c_unlend(cs, cp, idx);
		break;
	case CO_RELEASE_GUEST:
		c_release_guest(cs, (uint32_t)rng_range(r, 1, NGUEST + 1));
		break;
	default:
		c_lookup(cs);
		break;
	}
}

static void test_core_model(void **state)
{
	struct rng r = {g_seed ^ 0x13198a2e03707344ull};
	uint64_t target = PHASE2_OPS * g_scale;
	unsigned int cores = 0;
	double t0 = now_s();

	(void)state;
	g_phase = "core";
	g_op = 0;
	g_steps = 0;
	while (g_steps < target) {
		struct cstate *cs = calloc(1, sizeof(*cs));
		unsigned int weights[CO_N] = {
			[CO_ALLOC] = 26, [CO_FREE] = 12, [CO_FREE_STALE] = 3, [CO_FREE_FOREIGN] = 3,
			[CO_FREE_GARBAGE] = 3, [CO_LEND] = 12, [CO_LEND_RUN] = 4, [CO_SET_USED] = 6,
			[CO_UNLEND] = 8, [CO_RELEASE_GUEST] = 1, [CO_LOOKUP] = 3,
		};
		uint64_t nops = rng_range(&r, 1000, 5000);

		assert_non_null(cs);
		weights[CO_LEND] = (unsigned int)rng_range(&r, 4, 30);
		weights[CO_LEND_RUN] = (unsigned int)rng_range(&r, 0, 12);
		weights[CO_UNLEND] = (unsigned int)rng_range(&r, 1, 12);
		weights[CO_FREE] = (unsigned int)rng_range(&r, 6, 24);
		c_setup(cs, &r);
		for (uint64_t k = 0; k < nops && g_steps < target; k++)
			c_step(cs, weights);
		c_full(cs);
		for (uint32_t g = 1; g <= NGUEST; g++)
			c_release_guest(cs, g);
		CHECK(cs->nreg == 0 && cs->core.regions.nlive == 0,
		      "%u regions live after every guest was released", cs->core.regions.nlive);
		c_full(cs);
		vcma_core_fini(&cs->core);
		for (uint32_t k = 0; k < cs->npools; k++)
			model_fini(&cs->pool[k].m);
		free(cs->reg);
		free(cs->issued);
		free(cs);
		cores++;
	}
	g_ops_total += g_op;
	print_message("core phase: %" PRIu64 " random steps, %" PRIu64
		      " library operations on %u cores in %.2f s\n",
		      g_steps, g_op, cores, now_s() - t0);
	print_message("  mutators: %" PRIu64 " legal, %" PRIu64 " rejected\n", cov.ok, cov.rejected);
	print_message("  allocs: %" PRIu64 " without lent frames, %" PRIu64 " vacated, %" PRIu64
		      " hook failed, %" PRIu64 " hook lied, %" PRIu64 " -EBUSY, %" PRIu64
		      " -ENOSPC, %" PRIu64 " refused by policy, %" PRIu64 " garbage\n",
		      cov.alloc_plain, cov.alloc_vacated, cov.alloc_hook_fail, cov.alloc_hook_lie,
		      cov.alloc_busy, cov.alloc_nospc, cov.alloc_refused, cov.alloc_garbage);
	print_message("  frees: %" PRIu64 " ok, %" PRIu64 " -ENOENT, %" PRIu64
		      " released with their guest\n",
		      cov.free_ok, cov.free_enoent, cov.released);
	print_message("total: %" PRIu64 " operations, seed 0x%016" PRIx64 "\n", g_ops_total, g_seed);
}

static int parse_env_u64(const char *name, uint64_t *out)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end) {
		fprintf(stderr, "test-model: bad %s=%s\n", name, s);
		return -1;
	}
	*out = v;
	return 1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fmap_init_garbage),
		cmocka_unit_test(test_fmap_model),
		cmocka_unit_test(test_core_model),
	};

	if (parse_env_u64("VCMA_SEED", &g_seed) < 0 || parse_env_u64("VCMA_MODEL_SCALE", &g_scale) < 0)
		return 99;
	if (g_scale == 0)
		g_scale = 1;
	printf("test-model: seed 0x%016" PRIx64 " (reproduce with VCMA_SEED=0x%016" PRIx64 ")\n",
	       g_seed, g_seed);
	fflush(stdout);
	return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
