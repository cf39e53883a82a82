// SPDX-License-Identifier: MIT
/*
 * fmap.c - frame state map: entries, bitmaps, granule and superblock summaries.
 *
 * Entry layout (64 bits): state:3 | claimed:1 | guest:16 | gfn:44.
 * Bitmaps have one bit per frame, padded to whole granules; padding frames are
 * blocked so no run or window ever crosses the end of the pool.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fmap.h"
#include "fmap_internal.h"

#define ENT_STATE_MASK 0x7ull
#define ENT_CLAIMED (1ull << 3)
#define ENT_GUEST_SHIFT 4
#define ENT_GFN_SHIFT 20

static inline uint64_t ent_make(enum vcma_frame_state st, bool claimed, uint32_t guest, uint64_t gfn)
{
	return (uint64_t)st | (claimed ? ENT_CLAIMED : 0) | ((uint64_t)(guest & 0xffff) << ENT_GUEST_SHIFT) |
	       (gfn << ENT_GFN_SHIFT);
}

static inline enum vcma_frame_state ent_state(uint64_t e)
{
	return (enum vcma_frame_state)(e & ENT_STATE_MASK);
}

static inline bool ent_claimed(uint64_t e)
{
	return e & ENT_CLAIMED;
}

static inline void bit_set(uint64_t *bm, uint64_t i)
{
	bm[i >> 6] |= 1ull << (i & 63);
}

static inline void bit_clear(uint64_t *bm, uint64_t i)
{
	bm[i >> 6] &= ~(1ull << (i & 63));
}

static inline bool bit_test(const uint64_t *bm, uint64_t i)
{
	return bm[i >> 6] >> (i & 63) & 1;
}

/* Run summary of bits set over k words, LSB first. */
/* Set or clear bits [a, b) of bm, a word at a time. */
static void bits_assign(uint64_t *bm, uint64_t a, uint64_t b, bool set)
{
	while (a < b) {
		unsigned int off = (unsigned int)(a & 63);
		uint64_t k = b - a < 64 - off ? b - a : 64 - off;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << off;

		if (set)
			bm[a >> 6] |= mask;
		else
			bm[a >> 6] &= ~mask;
		a += k;
	}
}

static struct vcma_runsum runsum_words(const uint64_t *w, unsigned int k)
{
	struct vcma_runsum r = { 0, 0, 0 };
	uint32_t cur = 0;
	unsigned int i;

	for (i = 0; i < k && w[i] == ~0ull; i++)
		r.pre += 64;
	if (i < k)
		r.pre += (uint32_t)__builtin_ctzll(~w[i]);
	for (i = k; i > 0 && w[i - 1] == ~0ull; i--)
		r.suf += 64;
	if (i > 0)
		r.suf += (uint32_t)__builtin_clzll(~w[i - 1]);

	for (i = 0; i < k; i++) {
		uint64_t x = w[i];
		unsigned int pos = 0;

		if (x == ~0ull) {
			cur += 64;
			if (cur > r.max)
				r.max = cur;
			continue;
		}
		while (pos < 64) {
			unsigned int len;

			if (x & 1) {
				len = (unsigned int)__builtin_ctzll(~x);
				cur += len;
				if (cur > r.max)
					r.max = cur;
			} else {
				len = x ? (unsigned int)__builtin_ctzll(x) : 64 - pos;
				cur = 0;
			}
			pos += len;
			x = pos < 64 ? x >> len : 0;
		}
	}
	return r;
}

static inline uint32_t max3(uint32_t a, uint32_t b, uint32_t c)
{
	uint32_t m = a > b ? a : b;
	return m > c ? m : c;
}

/* Append run summary b (length blen) to a (length alen). */
static inline struct vcma_runsum runsum_join(struct vcma_runsum a, uint64_t alen, struct vcma_runsum b,
					     uint64_t blen)
{
	struct vcma_runsum r;

	r.pre = a.pre == alen ? (uint32_t)(alen + b.pre) : a.pre;
	r.suf = b.suf == blen ? (uint32_t)(blen + a.suf) : b.suf;
	r.max = max3(a.max, b.max, a.suf + b.pre);
	return r;
}

static void granule_compute(const struct vcma_fmap *fm, uint64_t g, struct vcma_fsum *s)
{
	const uint64_t *bl = fm->blocked + g * FMAP_GWORDS;
	const uint64_t *lf = fm->lf + g * FMAP_GWORDS;
	const uint64_t *lu = fm->lu + g * FMAP_GWORDS;
	uint64_t fr[FMAP_GWORDS], ub[FMAP_GWORDS];
	uint32_t nb = 0, nlf = 0, nlu = 0;

	for (unsigned int i = 0; i < FMAP_GWORDS; i++) {
		nb += (uint32_t)__builtin_popcountll(bl[i]);
		nlf += (uint32_t)__builtin_popcountll(lf[i] & ~bl[i]);
		nlu += (uint32_t)__builtin_popcountll(lu[i] & ~bl[i]);
		fr[i] = ~(bl[i] | lf[i] | lu[i]);
		ub[i] = ~bl[i];
	}
	s->nblocked = nb;
	s->nlf = nlf;
	s->nlu = nlu;
	s->cost = nlf * fm->cost_lf + nlu * fm->cost_lu;
	s->mincost = nb ? UINT32_MAX : s->cost;
	s->free = runsum_words(fr, FMAP_GWORDS);
	s->unblocked = runsum_words(ub, FMAP_GWORDS);
	s->gfree = s->free.pre == VCMA_FMAP_GRANULE ? (struct vcma_runsum){ 1, 1, 1 } : (struct vcma_runsum){ 0, 0, 0 };
	s->gunblocked = nb == 0 ? (struct vcma_runsum){ 1, 1, 1 } : (struct vcma_runsum){ 0, 0, 0 };
}

static void granule_update(struct vcma_fmap *fm, uint64_t g)
{
	granule_compute(fm, g, &fm->gsum[g]);
	fm->gcost[g] = fm->gsum[g].nblocked ? UINT32_MAX : fm->gsum[g].cost;
}

static void super_compute(const struct vcma_fmap *fm, uint64_t sb, struct vcma_fsum *s)
{
	uint64_t g0 = sb << VCMA_FMAP_SUPER_SHIFT;
	uint64_t g1 = fmap_super_gend(fm, sb);
	uint64_t len = 0;

	memset(s, 0, sizeof(*s));
	s->mincost = UINT32_MAX;
	for (uint64_t g = g0; g < g1; g++) {
		const struct vcma_fsum *gs = &fm->gsum[g];

		s->nblocked += gs->nblocked;
		s->nlf += gs->nlf;
		s->nlu += gs->nlu;
		s->cost += gs->cost;
		if (gs->mincost < s->mincost)
			s->mincost = gs->mincost;
		s->free = runsum_join(s->free, len, gs->free, VCMA_FMAP_GRANULE);
		s->unblocked = runsum_join(s->unblocked, len, gs->unblocked, VCMA_FMAP_GRANULE);
		s->gfree = runsum_join(s->gfree, g - g0, gs->gfree, 1);
		s->gunblocked = runsum_join(s->gunblocked, g - g0, gs->gunblocked, 1);
		len += VCMA_FMAP_GRANULE;
	}
}

/* Recompute summaries after frames [lo, hi] (inclusive) changed. */
static void refresh(struct vcma_fmap *fm, uint64_t lo, uint64_t hi)
{
	uint64_t g0 = lo >> VCMA_FMAP_GRANULE_SHIFT, g1 = hi >> VCMA_FMAP_GRANULE_SHIFT;

	if (fm->batch) {
		for (uint64_t g = g0; g <= g1; g++)
			bit_set(fm->gdirty, g);
		return;
	}

	for (uint64_t g = g0; g <= g1; g++)
		granule_update(fm, g);
	for (uint64_t sb = g0 >> VCMA_FMAP_SUPER_SHIFT; sb <= g1 >> VCMA_FMAP_SUPER_SHIFT; sb++)
		super_compute(fm, sb, &fm->ssum[sb]);
}

int vcma_fmap_init(struct vcma_fmap *fm, uint64_t base, uint64_t nframes, uint32_t cost_lf, uint32_t cost_lu)
{
	uint64_t nwords;

	memset(fm, 0, sizeof(*fm));
	if (nframes == 0 || nframes > VCMA_FMAP_MAX_FRAMES)
		return -EINVAL;
	if (base > (1ull << 52) || nframes > (1ull << 52) - base)
		return -EINVAL;
	if (cost_lf == 0 || cost_lu == 0 || cost_lf > 0xffff || cost_lu > 0xffff)
		return -EINVAL;

	fm->base = base;
	fm->nframes = nframes;
	fm->ngran = (nframes + VCMA_FMAP_GRANULE - 1) >> VCMA_FMAP_GRANULE_SHIFT;
	fm->nsuper = (fm->ngran + (1u << VCMA_FMAP_SUPER_SHIFT) - 1) >> VCMA_FMAP_SUPER_SHIFT;
	fm->cost_lf = cost_lf;
	fm->cost_lu = cost_lu;
	nwords = fm->ngran * FMAP_GWORDS;

	fm->ent = calloc(nframes, sizeof(*fm->ent));
	fm->blocked = calloc(nwords, sizeof(uint64_t));
	fm->lf = calloc(nwords, sizeof(uint64_t));
	fm->lu = calloc(nwords, sizeof(uint64_t));
	fm->zeroed = calloc(nwords, sizeof(uint64_t));
	fm->gsum = calloc(fm->ngran, sizeof(*fm->gsum));
	fm->gcost = calloc(fm->ngran, sizeof(*fm->gcost));
	fm->ssum = calloc(fm->nsuper, sizeof(*fm->ssum));
	fm->gdirty = calloc((fm->ngran + 63) / 64, sizeof(uint64_t));
	if (!fm->ent || !fm->blocked || !fm->lf || !fm->lu || !fm->zeroed || !fm->gsum || !fm->gcost || !fm->ssum || !fm->gdirty) {
		vcma_fmap_fini(fm);
		return -ENOMEM;
	}
	for (uint64_t i = nframes; i < fm->ngran * VCMA_FMAP_GRANULE; i++)
		bit_set(fm->blocked, i);
	for (uint64_t g = 0; g < fm->ngran; g++)
		granule_update(fm, g);
	for (uint64_t sb = 0; sb < fm->nsuper; sb++)
		super_compute(fm, sb, &fm->ssum[sb]);
	fm->count[VCMA_FRAME_FREE] = nframes;
	return 0;
}

void vcma_fmap_batch_begin(struct vcma_fmap *fm)
{
	fm->batch++;
}

void vcma_fmap_batch_end(struct vcma_fmap *fm)
{
	uint64_t last_sb = UINT64_MAX;

	if (!fm->batch || --fm->batch)
		return;
	for (uint64_t w = 0; w < (fm->ngran + 63) / 64; w++) {
		while (fm->gdirty[w]) {
			uint64_t g = w * 64 + (uint64_t)__builtin_ctzll(fm->gdirty[w]), sb = g >> VCMA_FMAP_SUPER_SHIFT;

			fm->gdirty[w] &= fm->gdirty[w] - 1;
			granule_update(fm, g);
			/* granules come in ascending order: a superblock is done when the
			 * next dirty granule is in another one */
			if (sb != last_sb && last_sb != UINT64_MAX)
				super_compute(fm, last_sb, &fm->ssum[last_sb]);
			last_sb = sb;
		}
	}
	if (last_sb != UINT64_MAX)
		super_compute(fm, last_sb, &fm->ssum[last_sb]);
}

void vcma_fmap_fini(struct vcma_fmap *fm)
{
	free(fm->ent);
	free(fm->blocked);
	free(fm->lf);
	free(fm->lu);
	free(fm->zeroed);
	free(fm->gsum);
	free(fm->gcost);
	free(fm->ssum);
	free(fm->gdirty);
	memset(fm, 0, sizeof(*fm));
}

static inline bool range_ok(const struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	return n > 0 && idx < fm->nframes && n <= fm->nframes - idx;
}

int vcma_fmap_get(const struct vcma_fmap *fm, uint64_t idx, struct vcma_frame_info *fi)
{
	uint64_t e;

	if (idx >= fm->nframes)
		return -EINVAL;
	e = fm->ent[idx];
	fi->state = ent_state(e);
	fi->claimed = ent_claimed(e);
	fi->guest = (uint32_t)(e >> ENT_GUEST_SHIFT) & 0xffff;
	fi->gfn = e >> ENT_GFN_SHIFT;
	return 0;
}

/* Number of set bits of bm in [a, b). */
uint64_t fmap_count_bits(const uint64_t *bm, uint64_t a, uint64_t b)
{
	uint64_t c = 0;

	while (a < b) {
		uint64_t off = a & 63, take = 64 - off;
		uint64_t mask;

		if (take > b - a)
			take = b - a;
		mask = (take == 64 ? ~0ull : ((1ull << take) - 1)) << off;
		c += (uint64_t)__builtin_popcountll(bm[a >> 6] & mask);
		a += take;
	}
	return c;
}

/* Every frame in range has state `st` and claimed bit `claimed` (-1: either). */
static bool range_all(const struct vcma_fmap *fm, uint64_t idx, uint64_t n, enum vcma_frame_state st,
		      int claimed)
{
	for (uint64_t i = idx; i < idx + n; i++) {
		uint64_t e = fm->ent[i];

		if (ent_state(e) != st)
			return false;
		if (claimed >= 0 && ent_claimed(e) != (bool)claimed)
			return false;
	}
	return true;
}

int vcma_fmap_reserve(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (!range_ok(fm, idx, n))
		return -EINVAL;
	if (!range_all(fm, idx, n, VCMA_FRAME_FREE, 0))
		return -EBUSY;
	for (uint64_t i = idx; i < idx + n; i++) {
		fm->ent[i] = ent_make(VCMA_FRAME_RESERVED, false, 0, 0);
		bit_set(fm->blocked, i);
	}
	bits_assign(fm->zeroed, idx, idx + n, false);
	fm->count[VCMA_FRAME_FREE] -= n;
	fm->count[VCMA_FRAME_RESERVED] += n;
	refresh(fm, idx, idx + n - 1);
	return 0;
}

int vcma_fmap_unreserve(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (!range_ok(fm, idx, n))
		return -EINVAL;
	if (!range_all(fm, idx, n, VCMA_FRAME_RESERVED, -1))
		return -EBUSY;
	for (uint64_t i = idx; i < idx + n; i++) {
		fm->ent[i] = ent_make(VCMA_FRAME_FREE, false, 0, 0);
		bit_clear(fm->blocked, i);
	}
	fm->count[VCMA_FRAME_RESERVED] -= n;
	fm->count[VCMA_FRAME_FREE] += n;
	refresh(fm, idx, idx + n - 1);
	return 0;
}

int vcma_fmap_lend(struct vcma_fmap *fm, uint64_t idx, uint32_t guest, uint64_t gfn, bool used)
{
	enum vcma_frame_state st = used ? VCMA_FRAME_LENT_USED : VCMA_FRAME_LENT_FREE;

	if (idx >= fm->nframes || guest > VCMA_GUEST_MAX || gfn > VCMA_GFN_MAX)
		return -EINVAL;
	if (fm->ent[idx] != ent_make(VCMA_FRAME_FREE, false, 0, 0))
		return -EBUSY;
	fm->ent[idx] = ent_make(st, false, guest, gfn);
	bit_set(used ? fm->lu : fm->lf, idx);
	bit_clear(fm->zeroed, idx); /* the guest writes it */
	fm->count[VCMA_FRAME_FREE]--;
	fm->count[st]++;
	refresh(fm, idx, idx);
	return 0;
}

int vcma_fmap_set_used(struct vcma_fmap *fm, uint64_t idx, bool used)
{
	enum vcma_frame_state from, to;
	uint64_t e;

	if (idx >= fm->nframes)
		return -EINVAL;
	e = fm->ent[idx];
	from = ent_state(e);
	if (from != VCMA_FRAME_LENT_FREE && from != VCMA_FRAME_LENT_USED)
		return -EBUSY;
	to = used ? VCMA_FRAME_LENT_USED : VCMA_FRAME_LENT_FREE;
	if (from == to)
		return 0;
	fm->ent[idx] = (e & ~ENT_STATE_MASK) | (uint64_t)to;
	if (used) {
		bit_clear(fm->lf, idx);
		bit_set(fm->lu, idx);
	} else {
		bit_clear(fm->lu, idx);
		bit_set(fm->lf, idx);
	}
	fm->count[from]--;
	fm->count[to]++;
	refresh(fm, idx, idx);
	return 0;
}

int vcma_fmap_unlend(struct vcma_fmap *fm, uint64_t idx)
{
	enum vcma_frame_state from;
	uint64_t e;

	if (idx >= fm->nframes)
		return -EINVAL;
	e = fm->ent[idx];
	from = ent_state(e);
	if (from != VCMA_FRAME_LENT_FREE && from != VCMA_FRAME_LENT_USED)
		return -EBUSY;
	fm->ent[idx] = ent_make(VCMA_FRAME_FREE, ent_claimed(e), 0, 0);
	bit_clear(fm->lf, idx);
	bit_clear(fm->lu, idx);
	fm->count[from]--;
	fm->count[VCMA_FRAME_FREE]++;
	refresh(fm, idx, idx);
	return 0;
}

int vcma_fmap_claim(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (!range_ok(fm, idx, n))
		return -EINVAL;
	if (fmap_count_bits(fm->blocked, idx, idx + n))
		return -EBUSY;
	for (uint64_t i = idx; i < idx + n; i++) {
		fm->ent[i] |= ENT_CLAIMED;
		bit_set(fm->blocked, i);
	}
	fm->nclaimed += n;
	refresh(fm, idx, idx + n - 1);
	return 0;
}

int vcma_fmap_unclaim(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (!range_ok(fm, idx, n))
		return -EINVAL;
	for (uint64_t i = idx; i < idx + n; i++)
		if (!ent_claimed(fm->ent[i]))
			return -EBUSY;
	/* Claimed frames are FREE or lent: claim needs unblocked frames and nothing
	 * turns a claimed frame into a REGION or RESERVED one but commit. */
	for (uint64_t i = idx; i < idx + n; i++) {
		fm->ent[i] &= ~ENT_CLAIMED;
		bit_clear(fm->blocked, i);
	}
	/* whoever claimed them may have written there (a vacate's destinations) */
	bits_assign(fm->zeroed, idx, idx + n, false);
	fm->nclaimed -= n;
	refresh(fm, idx, idx + n - 1);
	return 0;
}

int vcma_fmap_commit_region(struct vcma_fmap *fm, uint64_t idx, uint64_t n, uint32_t guest)
{
	if (!range_ok(fm, idx, n) || guest > VCMA_GUEST_MAX)
		return -EINVAL;
	if (!range_all(fm, idx, n, VCMA_FRAME_FREE, 1))
		return -EBUSY;
	for (uint64_t i = idx; i < idx + n; i++)
		fm->ent[i] = ent_make(VCMA_FRAME_REGION, false, guest, 0);
	fm->nclaimed -= n;
	fm->count[VCMA_FRAME_FREE] -= n;
	fm->count[VCMA_FRAME_REGION] += n;
	/* No refresh: the summaries are made of the blocked, lf and lu bits only, and
	 * none changes (claimed FREE -> REGION: blocked before and after). */
	return 0;
}

int vcma_fmap_release_region(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (!range_ok(fm, idx, n))
		return -EINVAL;
	if (!range_all(fm, idx, n, VCMA_FRAME_REGION, -1))
		return -EBUSY;
	for (uint64_t i = idx; i < idx + n; i++) {
		fm->ent[i] = ent_make(VCMA_FRAME_FREE, false, 0, 0);
		bit_clear(fm->blocked, i);
	}
	bits_assign(fm->zeroed, idx, idx + n, false); /* they hold the owner's data */
	fm->count[VCMA_FRAME_REGION] -= n;
	fm->count[VCMA_FRAME_FREE] += n;
	refresh(fm, idx, idx + n - 1);
	return 0;
}

int vcma_fmap_mark_zeroed(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	if (!range_ok(fm, idx, n))
		return -EINVAL;
	if (!range_all(fm, idx, n, VCMA_FRAME_FREE, -1))
		return -EBUSY;
	bits_assign(fm->zeroed, idx, idx + n, true);
	return 0;
}

uint64_t vcma_fmap_zeroed_run(const struct vcma_fmap *fm, uint64_t idx, uint64_t n, bool *zero)
{
	uint64_t len = 1;

	*zero = false;
	if (!n || !range_ok(fm, idx, n))
		return n;
	*zero = bit_test(fm->zeroed, idx);
	while (len < n && bit_test(fm->zeroed, idx + len) == *zero)
		len++;
	return len;
}

bool vcma_fmap_take_zeroed(struct vcma_fmap *fm, uint64_t idx, uint64_t n)
{
	bool all;

	if (!range_ok(fm, idx, n))
		return false;
	all = fmap_count_bits(fm->zeroed, idx, idx + n) == n;
	bits_assign(fm->zeroed, idx, idx + n, false);
	return all;
}

/* Bits of word w set for frames FREE, unclaimed and not known zero. Frames past the
 * end of the pool are blocked, so they never count. */
static inline uint64_t unzeroed_word(const struct vcma_fmap *fm, uint64_t w)
{
	return ~(fm->blocked[w] | fm->lf[w] | fm->lu[w] | fm->zeroed[w]);
}

uint64_t vcma_fmap_next_unzeroed(const struct vcma_fmap *fm, uint64_t idx, uint64_t end, uint64_t *len)
{
	uint64_t start;

	*len = 0;
	if (end > fm->nframes)
		end = fm->nframes;
	/* find the first candidate bit at or after idx */
	while (idx < end) {
		uint64_t bits = unzeroed_word(fm, idx >> 6) >> (idx & 63);

		if (bits) {
			idx += (uint64_t)__builtin_ctzll(bits);
			break;
		}
		idx = (idx | 63) + 1;
	}
	if (idx >= end)
		return end;
	start = idx;
	/* and the first non-candidate after it */
	while (idx < end) {
		uint64_t bits = ~unzeroed_word(fm, idx >> 6) >> (idx & 63);

		if (bits) {
			idx += (uint64_t)__builtin_ctzll(bits);
			break;
		}
		idx = (idx | 63) + 1;
	}
	if (idx > end)
		idx = end;
	*len = idx - start;
	return start;
}

uint64_t vcma_fmap_largest_free_run(const struct vcma_fmap *fm)
{
	struct vcma_runsum acc = { 0, 0, 0 };
	uint64_t len = 0;

	for (uint64_t sb = 0; sb < fm->nsuper; sb++) {
		uint64_t slen = (fmap_super_gend(fm, sb) - (sb << VCMA_FMAP_SUPER_SHIFT)) << VCMA_FMAP_GRANULE_SHIFT;

		acc = runsum_join(acc, len, fm->ssum[sb].free, slen);
		len += slen;
	}
	return acc.max;
}

int vcma_fmap_check(const struct vcma_fmap *fm)
{
	uint64_t count[VCMA_FRAME_NSTATES] = { 0 }, nclaimed = 0;

	for (uint64_t i = 0; i < fm->ngran * VCMA_FMAP_GRANULE; i++) {
		bool bl = true, lf = false, lu = false;

		if (i < fm->nframes) {
			uint64_t e = fm->ent[i];
			enum vcma_frame_state st = ent_state(e);

			if (st >= VCMA_FRAME_NSTATES)
				return -EIO;
			count[st]++;
			nclaimed += ent_claimed(e);
			bl = st == VCMA_FRAME_REGION || st == VCMA_FRAME_RESERVED || ent_claimed(e);
			lf = st == VCMA_FRAME_LENT_FREE;
			lu = st == VCMA_FRAME_LENT_USED;
			if (ent_claimed(e) && st != VCMA_FRAME_FREE && !lf && !lu)
				return -EIO;
			if (bit_test(fm->zeroed, i) && st != VCMA_FRAME_FREE && st != VCMA_FRAME_REGION)
				return -EIO;
		}
		if (bit_test(fm->blocked, i) != bl || bit_test(fm->lf, i) != lf || bit_test(fm->lu, i) != lu)
			return -EIO;
	}
	if (memcmp(count, fm->count, sizeof(count)) || nclaimed != fm->nclaimed)
		return -EIO;
	for (uint64_t g = 0; g < fm->ngran; g++) {
		struct vcma_fsum s;

		granule_compute(fm, g, &s);
		if (memcmp(&s, &fm->gsum[g], sizeof(s)))
			return -EIO;
		if (fm->gcost[g] != (s.nblocked ? UINT32_MAX : s.cost))
			return -EIO;
	}
	for (uint64_t sb = 0; sb < fm->nsuper; sb++) {
		struct vcma_fsum s;

		super_compute(fm, sb, &s);
		if (memcmp(&s, &fm->ssum[sb], sizeof(s)))
			return -EIO;
	}
	return 0;
}

size_t vcma_fmap_metadata_bytes(const struct vcma_fmap *fm)
{
	return fm->nframes * sizeof(*fm->ent) + 4 * fm->ngran * FMAP_GWORDS * sizeof(uint64_t) +
	       fm->ngran * (sizeof(*fm->gsum) + sizeof(*fm->gcost)) + fm->nsuper * sizeof(*fm->ssum) +
	       (fm->ngran + 63) / 64 * sizeof(uint64_t) + sizeof(*fm);
}

int64_t vcma_fmap_collect_lent(const struct vcma_fmap *fm, uint64_t idx, uint64_t n,
			       struct vcma_vacate_item *items, size_t max)
{
	int64_t total = 0;

	if (!range_ok(fm, idx, n) || (max && !items))
		return -EINVAL;
	for (uint64_t i = idx; i < idx + n;) {
		uint64_t w = (fm->lf[i >> 6] | fm->lu[i >> 6]) >> (i & 63);

		if (!w) {
			i = (i | 63) + 1;
			continue;
		}
		i += (uint64_t)__builtin_ctzll(w);
		if (i >= idx + n)
			break;
		if ((size_t)total < max) {
			uint64_t e = fm->ent[i];
			struct vcma_vacate_item *it = &items[total];

			it->idx = i;
			it->state = ent_state(e);
			it->guest = (uint32_t)(e >> ENT_GUEST_SHIFT) & 0xffff;
			it->gfn = e >> ENT_GFN_SHIFT;
		}
		total++;
		i++;
	}
	return total;
}
