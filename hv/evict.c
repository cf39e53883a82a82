// SPDX-License-Identifier: MIT
/*
 * evict.c - compact, drain and pin: lent frames scheduled to move to ordinary memory
 * as vacate jobs (evict.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "relend.h"
#include "log.h"
#include "vacate.h"
#include "vcmad.h"
#include "vm.h"

static int scan_pool(struct vcmad *d, struct vcma_pool *p, bool all, uint32_t guest, struct vcmad_vacate_pool *r)
{
	const struct vcma_fmap *fm = &p->fm;
	uint64_t lent = fm->count[VCMA_FRAME_LENT_FREE] + fm->count[VCMA_FRAME_LENT_USED];
	struct vcmad_move *mv = NULL;
	size_t n = 0;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	r->pool = p->index;
	/* the per-state counts make the common case (nothing lent) O(1) per pool */
	if (lent && !(mv = malloc(lent * sizeof(*mv))))
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
		mv[n++] = (struct vcmad_move){ fi.guest, fi.gfn, fm->base + i };
	}
	if (n) {
		rc = vcmad_vacate_evict(d, mv, n, NULL, NULL);
		if (!rc)
			r->scheduled = n;
	} else {
		free(mv);
	}
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
			p->relend_hold_until = vcmad_now(d) + VCMAD_COMPACT_HOLD_NS; /* keep it for the demand ahead */
	}
	if (pool && !res->npools)
		return -ENOENT;
	return finish(res, rc);
}

int vcmad_drain(struct vcmad *d, uint32_t guest, struct vcmad_vacate_result *res)
{
	struct vcmad_vm *vm = vcmad_vm_find(d, guest);
	int rc = 0, r;

	memset(res, 0, sizeof(*res));
	for (uint32_t i = 0; i < d->core.npools; i++) {
		r = scan_pool(d, d->core.pool[i], false, guest, &res->pool[res->npools++]);
		if (r && !rc)
			rc = r;
	}
	if (vm && !rc)
		vm->no_lend = true; /* and it is not lent pool frames again */
	return finish(res, rc);
}

/* The pin's job ended: tell the VM. */
struct pin_wait {
	struct vcmad *d;
	uint32_t vm, seq;
};

static int pinned(void *arg, int err)
{
	struct pin_wait *w = arg;
	struct vcmad_vm *vm = vcmad_vm_find(w->d, w->vm);

	if (vm && !vm->ctl.lost && vm->ctl.ops->pinned(&vm->ctl, w->seq, err))
		log_warn("guest %u (%s): cannot answer PIN", vm->ctl.id, vm->ctl.name);
	free(w);
	return err;
}

void vcmad_pin(struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t nruns)
{
	struct vcmad *d = vm->d;
	struct pin_wait *w = malloc(sizeof(*w));
	struct vcmad_move *mv;
	uint64_t total = 0;
	size_t n = 0;

	for (uint32_t i = 0; i < nruns; i++)
		total += runs[i].count;
	mv = calloc(total ? total : 1, sizeof(*mv));
	if (!mv || !w) {
		free(mv);
		free(w);
		vm->ctl.ops->pinned(&vm->ctl, seq, -ENOMEM);
		return;
	}
	for (uint32_t i = 0; i < nruns; i++)
		for (uint64_t k = 0; k < runs[i].count; k++) {
			uint64_t gfn = runs[i].gfn + k;

			vm->gflags[gfn] |= VCMAD_GFN_PINNED; /* relend skips it from now on */
			if (vcma_core_pool_of(&d->core, vm->p2m[gfn]))
				mv[n++] = (struct vcmad_move){ vm->ctl.id, gfn, vm->p2m[gfn] };
		}
	*w = (struct pin_wait){ d, vm->ctl.id, seq };
	if (vcmad_vacate_evict(d, mv, n, pinned, w)) {
		free(w);
		vm->ctl.ops->pinned(&vm->ctl, seq, -ENOMEM);
	}
}
