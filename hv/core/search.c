// SPDX-License-Identifier: MIT
/*
 * search.c - cheapest aligned window of n frames.
 *
 * Both passes enumerate maximal runs of a predicate (FREE, or not blocked) in address
 * order, top-down over the summaries: a superblock or granule whose longest run is
 * shorter than n is not descended into, because only its prefix and suffix can be
 * part of a long enough run, and those are joined at the level above. Only runs of at
 * least n frames reach the callback.
 *
 * Free pass: the first run holding an aligned window is the answer (cost 0, lowest
 * address). Lent pass, only when the free pass failed: in every unblocked run, slide
 * the aligned window and keep its cost incrementally; stop at the lowest possible
 * cost, which is one lent frame since no all-free window exists.
 */
#include <errno.h>
#include <stdbool.h>

#include "fmap.h"
#include "fmap_internal.h"

enum walk_pred { PRED_FREE, PRED_UNBLOCKED };

struct walk {
	const struct vcma_fmap *fm;
	enum walk_pred pred;
	uint64_t n;     /* window length */
	uint64_t align; /* 2^order, absolute on mfns */
	int (*on_run)(struct walk *w, uint64_t s, uint64_t e);
	bool found;
	uint64_t best_start, best_cost, lower_bound;
	/* Granule mode: n >= 256 at alignment >= 256 on a pool whose base is granule
	 * aligned, so every window starts on a granule and covers k = n / 256 whole
	 * granules; a superblock with no k whole free (unblocked) granules in a row
	 * holds no window inside it. */
	bool gmode;
	uint64_t k;
};

static inline const struct vcma_runsum *sum_of(const struct walk *w, const struct vcma_fsum *s)
{
	return w->pred == PRED_FREE ? &s->free : &s->unblocked;
}

/* Can a window lie strictly inside the superblock summarized by s? */
static inline bool super_may_hold(const struct walk *w, const struct vcma_fsum *s)
{
	if (sum_of(w, s)->max < w->n)
		return false;
	if (!w->gmode)
		return true;
	return (w->pred == PRED_FREE ? s->gfree.max : s->gunblocked.max) >= w->k;
}

static inline uint64_t pred_word(const struct walk *w, uint64_t wi)
{
	const struct vcma_fmap *fm = w->fm;

	if (w->pred == PRED_FREE)
		return ~(fm->blocked[wi] | fm->lf[wi] | fm->lu[wi]);
	return ~fm->blocked[wi];
}

static inline int emit(struct walk *w, uint64_t s, uint64_t e)
{
	return e - s >= w->n ? w->on_run(w, s, e) : 0;
}

/* First bit in [i, end) of the granule's predicate words equal to `val`, or end. */
static uint64_t granule_next(const struct walk *w, uint64_t g, uint64_t i, uint64_t end, bool val)
{
	uint64_t wbase = g * FMAP_GWORDS;

	while (i < end) {
		uint64_t x = pred_word(w, wbase + (i >> 6));

		if (!val)
			x = ~x;
		x >>= i & 63;
		if (x) {
			i += (uint64_t)__builtin_ctzll(x);
			return i < end ? i : end;
		}
		i = (i | 63) + 1;
	}
	return end;
}

/* Runs strictly inside granule g (touching neither end). */
static int walk_granule(struct walk *w, uint64_t g)
{
	uint64_t gbase = g << VCMA_FMAP_GRANULE_SHIFT;
	uint64_t i = 0;

	while (i < VCMA_FMAP_GRANULE) {
		uint64_t j;

		i = granule_next(w, g, i, VCMA_FMAP_GRANULE, true);
		if (i == VCMA_FMAP_GRANULE)
			break;
		j = granule_next(w, g, i, VCMA_FMAP_GRANULE, false);
		if (i != 0 && j != VCMA_FMAP_GRANULE && emit(w, gbase + i, gbase + j))
			return 1;
		i = j;
	}
	return 0;
}

/* Runs strictly inside superblock sb (touching neither end). */
static int walk_super(struct walk *w, uint64_t sb)
{
	uint64_t g0 = sb << VCMA_FMAP_SUPER_SHIFT, g1 = fmap_super_gend(w->fm, sb);
	uint64_t sbase = g0 << VCMA_FMAP_GRANULE_SHIFT;
	uint64_t start = 0;
	bool open = false;

	for (uint64_t g = g0; g < g1; g++) {
		const struct vcma_runsum *s = sum_of(w, &w->fm->gsum[g]);
		uint64_t gbase = g << VCMA_FMAP_GRANULE_SHIFT;

		if (s->pre == VCMA_FMAP_GRANULE) {
			if (!open) {
				open = true;
				start = gbase;
			}
			continue;
		}
		if (open || s->pre) {
			uint64_t rs = open ? start : gbase;

			if (rs != sbase && emit(w, rs, gbase + s->pre))
				return 1;
		}
		open = false;
		if (s->max >= w->n && walk_granule(w, g))
			return 1;
		if (s->suf) {
			open = true;
			start = gbase + VCMA_FMAP_GRANULE - s->suf;
		}
	}
	return 0;
}

static int walk_runs(struct walk *w)
{
	const struct vcma_fmap *fm = w->fm;
	uint64_t start = 0;
	bool open = false;

	for (uint64_t sb = 0; sb < fm->nsuper; sb++) {
		const struct vcma_runsum *s = sum_of(w, &fm->ssum[sb]);
		uint64_t sbase = (sb << VCMA_FMAP_SUPER_SHIFT) << VCMA_FMAP_GRANULE_SHIFT;
		uint64_t slen = (fmap_super_gend(fm, sb) << VCMA_FMAP_GRANULE_SHIFT) - sbase;

		if (s->pre == slen) {
			if (!open) {
				open = true;
				start = sbase;
			}
			continue;
		}
		if ((open || s->pre) && emit(w, open ? start : sbase, sbase + s->pre))
			return 1;
		open = false;
		if (super_may_hold(w, &fm->ssum[sb]) && walk_super(w, sb))
			return 1;
		if (s->suf) {
			open = true;
			start = sbase + slen - s->suf;
		}
	}
	/* A run still open here ends at the pool's end: padding frames are blocked. */
	if (open && emit(w, start, fm->ngran << VCMA_FMAP_GRANULE_SHIFT))
		return 1;
	return 0;
}

/* First index >= s whose mfn is aligned. */
static inline uint64_t align_up(const struct walk *w, uint64_t s)
{
	uint64_t m = w->fm->base + s;

	return ((m + w->align - 1) & ~(w->align - 1)) - w->fm->base;
}

/* Cost of [a, b), which holds no blocked frame. */
static uint64_t range_cost(const struct vcma_fmap *fm, uint64_t a, uint64_t b)
{
	uint64_t lf = 0, lu = 0, cost = 0;

	while (a < b) {
		if (!(a & (VCMA_FMAP_GRANULE - 1)) && b - a >= VCMA_FMAP_GRANULE) {
			cost += fm->gsum[a >> VCMA_FMAP_GRANULE_SHIFT].cost;
			a += VCMA_FMAP_GRANULE;
			continue;
		}
		uint64_t off = a & 63, take = 64 - off, mask;

		if (take > b - a)
			take = b - a;
		mask = (take == 64 ? ~0ull : ((1ull << take) - 1)) << off;
		lf += (uint64_t)__builtin_popcountll(fm->lf[a >> 6] & mask);
		lu += (uint64_t)__builtin_popcountll(fm->lu[a >> 6] & mask);
		a += take;
	}
	return cost + lf * fm->cost_lf + lu * fm->cost_lu;
}

static int on_free_run(struct walk *w, uint64_t s, uint64_t e)
{
	uint64_t p = align_up(w, s);

	if (p < e && e - p >= w->n) {
		w->found = true;
		w->best_start = p;
		w->best_cost = 0;
		return 1;
	}
	return 0;
}

static int on_unblocked_run(struct walk *w, uint64_t s, uint64_t e)
{
	const struct vcma_fmap *fm = w->fm;
	uint64_t n = w->n, a = w->align;
	uint64_t p = align_up(w, s), c;

	if (p >= e || e - p < n)
		return 0;
	c = range_cost(fm, p, p + n);
	for (;;) {
		if (!w->found || c < w->best_cost) {
			w->found = true;
			w->best_cost = c;
			w->best_start = p;
			if (c <= w->lower_bound)
				return 1;
		}
		if (e - p < a || e - p - a < n)
			break;
		if (a >= n)
			c = range_cost(fm, p + a, p + a + n);
		else
			c = c + range_cost(fm, p + n, p + a + n) - range_cost(fm, p, p + a);
		p += a;
	}
	return 0;
}

/* Cost of the first r frames of granule g, or UINT64_MAX if one is blocked. */
static uint64_t granule_prefix_cost(const struct vcma_fmap *fm, uint64_t g, uint64_t r)
{
	if (g >= fm->ngran || fm->gsum[g].unblocked.pre < r)
		return UINT64_MAX;
	return range_cost(fm, g << VCMA_FMAP_GRANULE_SHIFT, (g << VCMA_FMAP_GRANULE_SHIFT) + r);
}

/*
 * Lent pass in granule mode: a dense walk over per-granule costs. Candidate starts
 * are every step-th granule; the k whole granules' costs slide along, a blocked
 * granule restarts the sum after it. A window starting in superblock S costs at least
 * S's cheapest whole unblocked granule (its first granule is one), so S is skipped
 * when that bound cannot beat the best window found so far; to find a good window
 * early, the superblock with the lowest bound is scanned first.
 */
static void scan_granules(struct walk *w, uint64_t g, uint64_t g_end)
{
	const struct vcma_fmap *fm = w->fm;
	const uint32_t *gc = fm->gcost;
	uint64_t k = w->k, r = w->n & (VCMA_FMAP_GRANULE - 1);
	uint64_t step = w->align >> VCMA_FMAP_GRANULE_SHIFT;
	uint64_t gb = fm->base >> VCMA_FMAP_GRANULE_SHIFT;
	uint64_t sum = 0;
	bool valid = false;

	g = ((gb + g + step - 1) & ~(step - 1)) - gb;
	while (g < g_end && g + k <= fm->ngran) {
		uint64_t sb = g >> VCMA_FMAP_SUPER_SHIFT, c, part;

		if (!valid) {
			uint64_t j, lb = fm->ssum[sb].mincost;

			if (lb == UINT32_MAX || (w->found && (lb > w->best_cost ||
			    (lb == w->best_cost && (g << VCMA_FMAP_GRANULE_SHIFT) > w->best_start)))) {
				g = ((gb + ((sb + 1) << VCMA_FMAP_SUPER_SHIFT) + step - 1) & ~(step - 1)) - gb;
				continue;
			}
			for (sum = 0, j = g; j < g + k && gc[j] != UINT32_MAX; j++)
				sum += gc[j];
			if (j < g + k) {
				g = ((gb + j + 1 + step - 1) & ~(step - 1)) - gb;
				continue;
			}
			valid = true;
		}
		part = r ? granule_prefix_cost(fm, g + k, r) : 0;
		if (part != UINT64_MAX) {
			c = sum + part;
			if (!w->found || c < w->best_cost ||
			    (c == w->best_cost && (g << VCMA_FMAP_GRANULE_SHIFT) < w->best_start)) {
				w->found = true;
				w->best_cost = c;
				w->best_start = g << VCMA_FMAP_GRANULE_SHIFT;
			}
		}
		/* slide to g + step; re-check the bound when entering a new superblock */
		if (step >= k || g + step + k > fm->ngran ||
		    ((g + step) >> VCMA_FMAP_SUPER_SHIFT) != sb) {
			valid = false;
			g += step;
			continue;
		}
		for (uint64_t j = g + k; j < g + k + step; j++) {
			if (gc[j] == UINT32_MAX) {
				valid = false;
				g = ((gb + j + 1 + step - 1) & ~(step - 1)) - gb;
				break;
			}
			sum += gc[j];
		}
		if (!valid)
			continue;
		for (uint64_t j = g; j < g + step; j++)
			sum -= gc[j];
		g += step;
	}
}

static void lent_pass_granules(struct walk *w)
{
	const struct vcma_fmap *fm = w->fm;
	uint64_t seed = UINT64_MAX;
	uint32_t lb = UINT32_MAX;

	for (uint64_t sb = 0; sb < fm->nsuper; sb++)
		if (fm->ssum[sb].mincost < lb) {
			lb = fm->ssum[sb].mincost;
			seed = sb;
		}
	if (seed == UINT64_MAX)
		return; /* no whole unblocked granule anywhere */
	scan_granules(w, seed << VCMA_FMAP_SUPER_SHIFT, (seed + 1) << VCMA_FMAP_SUPER_SHIFT);
	scan_granules(w, 0, fm->ngran);
}

int vcma_fmap_search(const struct vcma_fmap *fm, uint64_t n, unsigned int align_order, struct vcma_window *out)
{
	struct walk w = {
		.fm = fm,
		.n = n,
		.align = 1ull << (align_order <= VCMA_FMAP_MAX_ORDER ? align_order : 0),
	};

	if (n == 0 || n > fm->nframes || align_order > VCMA_FMAP_MAX_ORDER || !out)
		return -EINVAL;

	w.gmode = n >= VCMA_FMAP_GRANULE && w.align >= VCMA_FMAP_GRANULE && !(fm->base & (VCMA_FMAP_GRANULE - 1));
	w.k = n >> VCMA_FMAP_GRANULE_SHIFT;
	w.pred = PRED_FREE;
	w.on_run = on_free_run;
	walk_runs(&w);
	if (!w.found) {
		w.pred = PRED_UNBLOCKED;
		w.on_run = on_unblocked_run;
		w.lower_bound = fm->cost_lf < fm->cost_lu ? fm->cost_lf : fm->cost_lu;
		if (w.gmode)
			lent_pass_granules(&w);
		else
			walk_runs(&w);
	}
	if (!w.found)
		return -ENOSPC;

	out->start = w.best_start;
	out->count = n;
	out->cost = w.best_cost;
	out->nlent_free = fmap_count_bits(fm->lf, w.best_start, w.best_start + n);
	out->nlent_used = fmap_count_bits(fm->lu, w.best_start, w.best_start + n);
	out->nfree = n - out->nlent_free - out->nlent_used;
	return 0;
}

uint64_t vcma_fmap_window_cost(const struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (n == 0 || idx >= fm->nframes || n > fm->nframes - idx)
		return UINT64_MAX;
	if (fmap_count_bits(fm->blocked, idx, idx + n))
		return UINT64_MAX;
	return range_cost(fm, idx, idx + n);
}
