// SPDX-License-Identifier: MIT
/*
 * actions.c - compact and drain, the operator's two ways of taking lent frames back.
 *
 * Each finds the lent frames in scope and hands them to vacate_frames(), which
 * schedules their moves to ordinary memory (hv/vacate.c). "moved" in the result
 * counts frames scheduled: the moves complete asynchronously within milliseconds.
 */
#include <errno.h>
#include <string.h>

#include "ctl.h"
#include "vcmad.h"

/*
 * Schedule the lent frames idx[] of pool p to move to ordinary memory. The moves run
 * asynchronously (pause, copy, remap, resume per VM, hv/vacate.c) and finish within
 * milliseconds; `pool show` reports the result. Returns frames scheduled.
 */
static uint64_t vacate_frames(struct vcmad *d, struct vcma_pool *p, const uint64_t *idx, size_t n)
{
	uint64_t scheduled = 0;

	if (vcmad_vacate_evict_frames(d, p, idx, n, &scheduled))
		return 0;
	return scheduled;
}

static void scan_pool(struct vcmad *d, struct vcma_pool *p, bool all, uint32_t guest, struct vcmad_vacate_pool *r)
{
	const struct vcma_fmap *fm = &p->fm;
	uint64_t batch[256];
	size_t nb = 0;

	memset(r, 0, sizeof(*r));
	r->pool = p->index;
	r->largest_free_before = vcma_fmap_largest_free_run(fm);
	/* the per-state counts make the common case (nothing lent) O(1) per pool */
	if (fm->count[VCMA_FRAME_LENT_FREE] + fm->count[VCMA_FRAME_LENT_USED]) {
		for (uint64_t i = 0; i < fm->nframes; i++) {
			struct vcma_frame_info fi;

			if (vcma_fmap_get(fm, i, &fi) || (fi.state != VCMA_FRAME_LENT_FREE &&
							  fi.state != VCMA_FRAME_LENT_USED))
				continue;
			if (!all && fi.guest != guest)
				continue;
			if (fi.state == VCMA_FRAME_LENT_FREE)
				r->lent_free++;
			else
				r->lent_used++;
			batch[nb++] = i;
			if (nb == sizeof(batch) / sizeof(batch[0])) {
				r->moved += vacate_frames(d, p, batch, nb);
				nb = 0;
			}
		}
		if (nb)
			r->moved += vacate_frames(d, p, batch, nb);
	}
	r->largest_free_after = vcma_fmap_largest_free_run(fm);
}

static int finish(struct vcmad_vacate_result *res)
{
	for (uint32_t i = 0; i < res->npools; i++) {
		res->lent_found += res->pool[i].lent_free + res->pool[i].lent_used;
		res->moved += res->pool[i].moved;
	}
	return res->moved < res->lent_found ? -EOPNOTSUPP : 0;
}

int vcmad_compact(struct vcmad *d, const char *pool, struct vcmad_vacate_result *res)
{
	memset(res, 0, sizeof(*res));
	for (uint32_t i = 0; i < d->core.npools; i++) {
		struct vcma_pool *p = d->core.pool[i];

		if (pool && strcmp(p->cfg.name, pool))
			continue;
		scan_pool(d, p, true, 0, &res->pool[res->npools++]);
	}
	if (pool && !res->npools)
		return -ENOENT;
	return finish(res);
}

int vcmad_drain(struct vcmad *d, uint32_t guest, struct vcmad_vacate_result *res)
{
	struct vcmad_guest *g = vcmad_guest_find(d, guest);

	memset(res, 0, sizeof(*res));
	if (g)
		g->no_lend = true; /* and it is not lent pool frames again */
	for (uint32_t i = 0; i < d->core.npools; i++)
		scan_pool(d, d->core.pool[i], false, guest, &res->pool[res->npools++]);
	return finish(res);
}
