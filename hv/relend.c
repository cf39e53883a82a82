// SPDX-License-Identifier: MIT
/*
 * relend.c - when the host has been quiet for relend_idle_ms, move VMs' pages from
 * ordinary memory back onto idle frames of lendable pools, so pool memory does not
 * sit idle (relend.h). One job at a time, up to VCMAD_RELEND_MAX pages; its end
 * kicks the timer again, which finds the rest.
 */
#include <errno.h>
#include <stdlib.h>

#include "balloon.h"
#include "relend.h"
#include "vacate.h"
#include "vcmad.h"
#include "vm.h"

static uint64_t pool_room(const struct vcma_pool *p)
{
	if (!p->cfg.lendable || p->fm.count[VCMA_FRAME_FREE] < p->fm.nclaimed)
		return 0;
	return p->fm.count[VCMA_FRAME_FREE] - p->fm.nclaimed;
}

/* When relending may next find work: quiet for relend_idle_ms, and a pool with idle
 * frames that no compaction holds back. UINT64_MAX: not until something changes. */
static uint64_t due_ns(const struct vcmad *d)
{
	uint64_t quiet = d->relend.last_alloc_ns + (uint64_t)d->conf.relend_idle_ms * 1000000ull, due = UINT64_MAX;

	if (!d->relend.dirty)
		return UINT64_MAX;
	for (uint32_t i = 0; i < d->core.npools; i++) {
		const struct vcma_pool *p = d->core.pool[i];
		uint64_t t = quiet > p->relend_hold_until ? quiet : p->relend_hold_until;

		if (pool_room(p) && t < due)
			due = t;
	}
	return due;
}

/* One pool's relend job: pages of lendable VMs now on ordinary memory, as many as the
 * pool has idle frames. false if there was nothing to move. */
static bool relend_pool(struct vcmad *d, struct vcma_pool *p, uint64_t room)
{
	struct vcmad_move *mv;
	size_t n = 0;

	if (room > VCMAD_RELEND_MAX)
		room = VCMAD_RELEND_MAX;
	mv = calloc(room, sizeof(*mv));
	if (!mv)
		return true; /* try again later */
	for (struct vcmad_vm *vm = d->vms; vm && n < room; vm = vm->next) {
		if (vm->no_lend || vm->ctl.lost)
			continue;
		for (uint64_t gfn = 0; gfn < vm->ctl.ram_frames && n < room; gfn++)
			if (!(vm->gflags[gfn] & VCMAD_GFN_PINNED) && !vcma_core_pool_of(&d->core, vm->p2m[gfn]))
				mv[n++] = (struct vcmad_move){ vm->ctl.id, gfn, vm->p2m[gfn] };
	}
	if (!n) {
		free(mv);
		return false;
	}
	vcmad_vacate_relend(d, p, mv, n);
	return true;
}

static void relend_cb(struct vcma_timer *t)
{
	struct vcmad *d = (struct vcmad *)((char *)t - offsetof(struct vcmad, relend.timer));
	uint64_t now = vcmad_now(d), due;

	if (d->vacate.jobs || d->stop || d->restore.vms_waiting)
		return; /* a job's end, or the last VM taken back after a restart, kicks the timer again */
	due = due_ns(d);
	if (due == UINT64_MAX)
		return;
	if (due > now) {
		vcma_timer_arm(&d->loop, t, due);
		return;
	}
	d->relend.dirty = false; /* unless a pool below finds work */
	if (d->be.type->holds_frames) {
		/* the hypervisor backs VMs' RAM: idle capacity goes to lenders' balloons
		 * instead, once (a FREE or a new lender kicks the timer again) */
		vcmad_balloon_lend(d);
		return;
	}
	/* lenders (virtio-mem) first, up to their lend_max; VMs' pages get the rest */
	if (d->balloon.nlenders)
		vcmad_balloon_lend(d);
	for (uint32_t i = 0; i < d->core.npools; i++) {
		struct vcma_pool *p = d->core.pool[i];
		uint64_t room = pool_room(p);

		if (!room)
			continue;
		if (now < p->relend_hold_until) {
			d->relend.dirty = true; /* look again when the hold ends */
			continue;
		}
		if (relend_pool(d, p, room)) {
			d->relend.dirty = true; /* its completion looks for more */
			return;                 /* one job at a time */
		}
	}
	if (d->relend.dirty)
		vcma_timer_arm(&d->loop, t, due_ns(d));
}

void vcmad_relend_init(struct vcmad *d)
{
	d->relend.dirty = false;
	d->relend.last_alloc_ns = vcmad_now(d);
	vcma_timer_init(&d->relend.timer, relend_cb);
}

void vcmad_relend_busy(struct vcmad *d)
{
	d->relend.last_alloc_ns = vcmad_now(d);
	vcmad_relend_kick(d);
}
