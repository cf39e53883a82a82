// SPDX-License-Identifier: MIT
/*
 * actions.c - compact and drain, the operator's two ways of taking lent frames back.
 *
 * Each finds the lent frames in scope and schedules their moves to ordinary memory
 * (hv/vacate.c), one job per pool; the result counts frames scheduled, and the moves
 * complete in the background.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "vcmad.h"

static int scan_pool(struct vcmad *d, struct vcma_pool *p, bool all, uint32_t guest, struct vcmad_vacate_pool *r)
{
	const struct vcma_fmap *fm = &p->fm;
	uint64_t lent = fm->count[VCMA_FRAME_LENT_FREE] + fm->count[VCMA_FRAME_LENT_USED], *idx = NULL;
	size_t n = 0;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	r->pool = p->index;
	/* the per-state counts make the common case (nothing lent) O(1) per pool */
	if (lent && !(idx = malloc(lent * sizeof(*idx))))
		return -ENOMEM;
	for (uint64_t i = 0; lent && i < fm->nframes && n < lent; i++) {
		struct vcma_frame_info fi;

		if (vcma_fmap_get(fm, i, &fi) || (fi.state != VCMA_FRAME_LENT_FREE && fi.state != VCMA_FRAME_LENT_USED))
			continue;
		if (!all && fi.guest != guest)
			continue;
		if (fi.state == VCMA_FRAME_LENT_FREE)
			r->lent_free++;
		else
			r->lent_used++;
		idx[n++] = i;
	}
	if (n)
		rc = vcmad_vacate_evict_frames(d, p, idx, n, &r->scheduled);
	free(idx);
	r->largest_free = vcma_fmap_largest_free_run(fm);
	return rc;
}

static int finish(struct vcmad_vacate_result *res, int rc)
{
	for (uint32_t i = 0; i < res->npools; i++) {
		res->lent_found += res->pool[i].lent_free + res->pool[i].lent_used;
		res->scheduled += res->pool[i].scheduled;
	}
	return rc;
}

int vcmad_compact(struct vcmad *d, const char *pool, struct vcmad_vacate_result *res)
{
	int rc = 0, r;

	memset(res, 0, sizeof(*res));
	for (uint32_t i = 0; i < d->core.npools; i++) {
		struct vcma_pool *p = d->core.pool[i];

		if (pool && strcmp(p->cfg.name, pool))
			continue;
		r = scan_pool(d, p, true, 0, &res->pool[res->npools++]);
		if (r && !rc)
			rc = r;
		if (!r)
			p->relend_hold_until = vcma_now_ns() + VCMAD_COMPACT_HOLD_NS; /* keep it for the demand ahead */
	}
	if (pool && !res->npools)
		return -ENOENT;
	return finish(res, rc);
}

int vcmad_drain(struct vcmad *d, uint32_t guest, struct vcmad_vacate_result *res)
{
	struct vcmad_guest *g = vcmad_guest_find(d, guest);
	int rc = 0, r;

	memset(res, 0, sizeof(*res));
	for (uint32_t i = 0; i < d->core.npools; i++) {
		r = scan_pool(d, d->core.pool[i], false, guest, &res->pool[res->npools++]);
		if (r && !rc)
			rc = r;
	}
	if (g && !rc)
		g->no_lend = true; /* and it is not lent pool frames again */
	return finish(res, rc);
}
