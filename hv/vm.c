// SPDX-License-Identifier: MIT
/*
 * vm.c - VMs whose RAM vcmad backs: lend_share of it from idle frames of lendable
 * pools (taken from the top of each pool, since regions pack toward the bottom), the
 * rest from ordinary memory; the p2m that says which; and what the VM's hypervisor
 * side reports (pause and remap done, free page reporting, pins), dispatched to whom
 * it concerns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "durable.h"
#include "log.h"
#include "scrub.h"
#include "vcmad.h"
#include "vm.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Return ordinary frames (any order) to the backend as merged runs. */
static void free_ordinary(struct vcmad *d, uint64_t *mfns, uint64_t n)
{
	qsort(mfns, n, sizeof(*mfns), cmp_u64);
	for (uint64_t i = 0; i < n;) {
		uint64_t j = i + 1;

		while (j < n && mfns[j] == mfns[j - 1] + 1)
			j++;
		struct vcma_extent e = { mfns[i], j - i };

		d->be.type->mem->ram_free(&d->be, &e, 1);
		i = j;
	}
}

/* ---- what the backend reports ---- */

static struct vcmad_vm *vm_of(struct vcmad_vm_ctl *vc)
{
	return (struct vcmad_vm *)((char *)vc - offsetof(struct vcmad_vm, ctl));
}

static void ev_paused(struct vcmad_vm_ctl *vc, uint32_t seq)
{
	struct vcmad_vm *vm = vm_of(vc);

	if (vm->pauser)
		vm->pauser_ops->paused(vm->pauser, vm, seq);
	/* else: a late answer to a PAUSE that timed out */
}

static void ev_remapped(struct vcmad_vm_ctl *vc, uint32_t seq, int32_t status)
{
	struct vcmad_vm *vm = vm_of(vc);

	if (vm->pauser)
		vm->pauser_ops->remapped(vm->pauser, vm, seq, status);
}

/* answers nobody waits for (late, or never asked) are ignored by their seq */
static void ev_tracking(struct vcmad_vm_ctl *vc, uint32_t seq, int32_t status)
{
	struct vcmad_vm *vm = vm_of(vc);

	if (vm->pauser)
		vm->pauser_ops->tracking(vm->pauser, vm, seq, status);
}

static void ev_dirty(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n, bool last,
		     int32_t status)
{
	struct vcmad_vm *vm = vm_of(vc);

	if (vm->pauser)
		vm->pauser_ops->dirty(vm->pauser, vm, seq, runs, n, last, status);
}

static void ev_dropped(struct vcmad_vm_ctl *vc, uint32_t seq, int32_t status)
{
	struct vcmad_vm *vm = vm_of(vc);

	if (vm->pauser)
		vm->pauser_ops->dropped(vm->pauser, vm, seq, status);
}

/* REPORT / REUSE: LENT_USED <-> LENT_FREE for gfns on pool frames. */
static void mark_reported(struct vcmad_vm *vm, uint64_t gfn, bool reported)
{
	struct vcmad *d = vm->d;
	uint64_t mfn = vm->p2m[gfn];
	struct vcma_pool *p;

	if (!(vm->gflags[gfn] & VCMAD_GFN_REPORTED) == !reported)
		return; /* no change: a repeated REPORT or REUSE costs a flag test */
	p = vcma_core_pool_of(&d->core, mfn);
	if (reported)
		vm->gflags[gfn] |= VCMAD_GFN_REPORTED;
	else
		vm->gflags[gfn] &= (uint8_t)~VCMAD_GFN_REPORTED;
	if (p && vcma_pool_set_used(p, mfn - p->fm.base, !reported))
		log_err("guest %u: gfn %#llx on pool %s frame %#llx is not lent", vm->ctl.id, (unsigned long long)gfn,
			p->cfg.name, (unsigned long long)mfn);
}

static void ev_report(struct vcmad_vm_ctl *vc, const struct vcmad_run *runs, uint32_t n, bool reported, int64_t seq)
{
	struct vcmad_vm *vm = vm_of(vc);
	bool moving = false;

	vcma_core_batch_begin(&vm->d->core);
	for (uint32_t i = 0; i < n; i++)
		for (uint64_t k = 0; k < runs[i].count; k++) {
			mark_reported(vm, runs[i].gfn + k, reported);
			moving |= vm->gflags[runs[i].gfn + k] & VCMAD_GFN_MOVING;
		}
	vcma_core_batch_end(&vm->d->core);
	if (seq < 0)
		return;
	if (!moving) {
		vm->ctl.ops->reused(&vm->ctl, (uint32_t)seq);
		return;
	}
	/* a page of it is in a DROP in flight: recorded now (its frame is LENT_USED), but
	 * the guest may touch it only once it sits on one frame: answered after DROPPED */
	if (vm->nreuse_wait == VCMAD_REUSE_WAIT_MAX) {
		vc->ev->lost(vc, "more REUSEs waiting for a DROP than the protocol allows", true);
		return;
	}
	if (!vm->reuse_wait && !(vm->reuse_wait = calloc(VCMAD_REUSE_WAIT_MAX, sizeof(*vm->reuse_wait)))) {
		vc->ev->lost(vc, "out of memory for a REUSE waiting on a DROP", false);
		return;
	}
	vm->reuse_wait[vm->nreuse_wait++] = (uint32_t)seq;
	vm->d->vacate.reuses_held++;
}

void vcmad_vm_reuse_flush(struct vcmad_vm *vm)
{
	for (uint32_t i = 0; i < vm->nreuse_wait && !vm->ctl.lost; i++)
		vm->ctl.ops->reused(&vm->ctl, vm->reuse_wait[i]);
	vm->nreuse_wait = 0;
}

static void ev_pin(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	struct vcmad_vm *vm = vm_of(vc);

	vm->owner->pin(vm->owner_arg, vm, seq, runs, n);
}

static void ev_lost(struct vcmad_vm_ctl *vc, const char *why, bool violation)
{
	struct vcmad_vm *vm = vm_of(vc);

	vm->ctl.lost = true;
	vm->owner->lost(vm->owner_arg, vm, why, violation);
}

static const struct vcmad_vm_events vm_events = {
	.paused = ev_paused,
	.remapped = ev_remapped,
	.report = ev_report,
	.pin = ev_pin,
	.tracking = ev_tracking,
	.dirty = ev_dirty,
	.dropped = ev_dropped,
	.lost = ev_lost,
};

/* ---- RAM ---- */

/* Back gfns [0, want) from idle frames of lendable pools, top down; returns how many. */
static uint64_t lend_from_pools(struct vcmad_vm *vm, uint64_t want)
{
	struct vcmad *d = vm->d;
	uint64_t gfn = 0;

	/* within a pool in ascending order, so gfns and mfns run together and the VM
	 * maps few runs */
	for (uint32_t i = 0; i < d->core.npools && gfn < want; i++) {
		struct vcma_pool *p = d->core.pool[i];
		uint64_t lo = p->fm.nframes, got = 0;
		struct vcma_frame_info fi;

		if (!p->cfg.lendable)
			continue;
		while (lo > 0 && gfn + got < want) {
			lo--;
			if (!vcma_fmap_get(&p->fm, lo, &fi) && fi.state == VCMA_FRAME_FREE && !fi.claimed)
				got++;
		}
		vcma_fmap_batch_begin(&p->fm);
		for (uint64_t idx = lo; idx < p->fm.nframes && gfn < want; idx++) {
			if (vcma_pool_lend(p, idx, vm->ctl.id, gfn, true))
				continue; /* not FREE, or claimed */
			vm->p2m[gfn++] = p->fm.base + idx;
		}
		vcma_fmap_batch_end(&p->fm);
	}
	return gfn;
}

/* Give the VM's frames back: pool frames FREE (zeroed by the scrubber right after:
 * the guest's data must not outlive it) and unquarantined, ordinary ones to the backend. */
static void release_ram(struct vcmad_vm *vm)
{
	struct vcmad *d = vm->d;
	uint64_t *ord, nord = 0;

	if (!vm->p2m)
		return;
	vcmad_relend_kick(d); /* its pool frames are idle now */
	ord = malloc(vm->ctl.ram_frames * sizeof(*ord) + 1);
	vcma_core_batch_begin(&d->core);
	for (uint64_t gfn = 0; gfn < vm->ctl.ram_frames; gfn++) {
		uint64_t mfn = vm->p2m[gfn];
		struct vcma_pool *p = vcma_core_pool_of(&d->core, mfn);

		if (p) {
			if (vcma_pool_unlend(p, mfn - p->fm.base))
				log_err("guest %u: gfn %#llx: pool %s frame %#llx was not lent", vm->ctl.id,
					(unsigned long long)gfn, p->cfg.name, (unsigned long long)mfn);
			if ((vm->gflags[gfn] & VCMAD_GFN_QUARANTINED) && !vcma_fmap_unclaim(&p->fm, mfn - p->fm.base, 1))
				p->quarantined--; /* the VM was unresponsive */
			vcmad_scrub_add(d, mfn, 1); /* zeroed soon after: scrub.h */
		} else if (ord) {
			ord[nord++] = mfn;
		}
	}
	vcma_core_batch_end(&d->core);
	if (ord) {
		free_ordinary(d, ord, nord);
		free(ord);
	} else {
		log_err("guest %u: out of memory releasing RAM: %llu frames leak", vm->ctl.id,
			(unsigned long long)vm->ctl.ram_frames);
	}
}

void vcmad_vm_set_paused(struct vcmad_vm *vm, bool paused)
{
	if (vm->paused != paused)
		vm->d->vms_paused = paused ? vm->d->vms_paused + 1 : vm->d->vms_paused - 1;
	vm->paused = paused;
}

static void vm_unlink_free(struct vcmad_vm *vm)
{
	vcmad_vm_set_paused(vm, false);
	for (struct vcmad_vm **pp = &vm->d->vms; *pp; pp = &(*pp)->next)
		if (*pp == vm) {
			*pp = vm->next;
			break;
		}
	free(vm->p2m);
	free(vm->gflags);
	free(vm->reuse_wait);
	free(vm);
}

int vcmad_vm_new(struct vcmad *d, uint32_t id, const char *name, uint64_t ram_frames,
		 const struct vcmad_vm_owner_ops *owner, void *owner_arg, struct vcmad_vm **out)
{
	const struct vcmad_mem_ops *mem = d->be.type->mem;
	struct vcmad_vm *vm = calloc(1, sizeof(*vm));
	uint64_t want = ram_frames * d->conf.lend_share / 100, gfn;
	struct vcma_extent *runs = NULL;
	int n;

	if (!d->be.type->vm)
		return -EOPNOTSUPP; /* this backend does not move VMs' RAM */
	if (!vm)
		return -ENOMEM;
	vm->d = d;
	vm->ctl.id = id;
	vm->ctl.name = name;
	vm->ctl.ram_frames = ram_frames;
	vm->ctl.ev = &vm_events;
	vm->ctl.ops = d->be.type->vm;
	vm->owner = owner;
	vm->owner_arg = owner_arg;
	vm->p2m = calloc(ram_frames, sizeof(*vm->p2m));
	vm->gflags = calloc(ram_frames, 1);
	if (!vm->p2m || !vm->gflags) {
		free(vm->p2m);
		free(vm->gflags);
		free(vm);
		return -ENOMEM;
	}
	vm->next = d->vms;
	d->vms = vm;
	gfn = lend_from_pools(vm, want);
	if (gfn < ram_frames) {
		/* the rest from ordinary memory; frames promised to running vacate jobs are
		 * not ours to take */
		uint64_t avail = mem->ram_free_frames(&d->be);
		bool room = avail >= d->vacate.ord_reserved && avail - d->vacate.ord_reserved >= ram_frames - gfn;

		runs = room ? calloc(65536, sizeof(*runs)) : NULL;
		n = runs ? mem->ram_alloc(&d->be, ram_frames - gfn, runs, 65536) : -ENOMEM;
		if (n < 0) {
			free(runs);
			vm->ctl.ram_frames = gfn; /* release what was lent */
			release_ram(vm);
			vm_unlink_free(vm);
			return n;
		}
		for (int r = 0; r < n; r++) {
			mem->zero(&d->be, runs[r].start, runs[r].count); /* whatever is there is not the VM's */
			for (uint64_t k = 0; k < runs[r].count; k++)
				vm->p2m[gfn++] = runs[r].start + k;
		}
		free(runs);
	}
	vcmad_relend_kick(d); /* pages on ordinary memory may go onto idle pool frames */
	/* pool frames may hold a former region's bytes */
	for (uint64_t i = 0; i < ram_frames; i++)
		if (vcma_core_pool_of(&d->core, vm->p2m[i]))
			mem->zero(&d->be, vm->p2m[i], 1);
	vcmad_durable_vm_new(d, &vm->durable, vm->ctl.id, ram_frames, vm->p2m);
	*out = vm;
	return 0;
}

/* Back gfn with machine frame mfn, taken from whoever has it free: a pool frame is lent
 * (used), an ordinary frame taken from the backend. -EEXIST if it is not free. */
static int take_frame(struct vcmad_vm *vm, uint64_t gfn, uint64_t mfn)
{
	struct vcmad *d = vm->d;
	struct vcma_pool *p = vcma_core_pool_of(&d->core, mfn);

	if (p)
		return vcma_pool_lend(p, mfn - p->fm.base, vm->ctl.id, gfn, true) ? -EEXIST : 0;
	if (!d->be.type->mem->ram_take)
		return -EOPNOTSUPP;
	return d->be.type->mem->ram_take(&d->be, mfn, 1) ? -EEXIST : 0;
}

int vcmad_vm_restore(struct vcmad *d, uint32_t id, const char *name, uint64_t ram_frames, uint64_t *p2m,
		     struct vcmad_vm **out)
{
	struct vcmad_vm *vm = calloc(1, sizeof(*vm));
	int rc = 0;

	if (!d->be.type->vm || !d->be.type->mem->ram_take) {
		free(vm);
		free(p2m);
		return -EOPNOTSUPP;
	}
	if (!vm || !(vm->gflags = calloc(ram_frames, 1))) {
		free(vm);
		free(p2m);
		return -ENOMEM;
	}
	vm->d = d;
	vm->ctl.id = id;
	vm->ctl.name = name;
	vm->ctl.ev = &vm_events;
	vm->ctl.ops = d->be.type->vm;
	vm->p2m = p2m;
	vm->no_lend = true; /* until its VMM is back */
	vm->next = d->vms;
	d->vms = vm;
	vcma_core_batch_begin(&d->core);
	for (uint64_t gfn = 0; gfn < ram_frames && !rc; gfn++) {
		rc = take_frame(vm, gfn, p2m[gfn]);
		if (!rc)
			vm->ctl.ram_frames = gfn + 1; /* what release_ram gives back on failure */
	}
	vcma_core_batch_end(&d->core);
	if (rc) {
		release_ram(vm);
		vm_unlink_free(vm);
		return rc;
	}
	vcmad_durable_vm_new(d, &vm->durable, id, ram_frames, vm->p2m);
	*out = vm;
	return 0;
}

int vcmad_vm_adopt_p2m(struct vcmad_vm *vm, const struct vcmad_run *runs, uint32_t n, const char **why)
{
	struct vcmad *d = vm->d;
	uint64_t next = 0, moved = 0;

	*why = "";
	for (uint32_t i = 0; i < n; i++) {
		if (runs[i].gfn != next || !runs[i].count || runs[i].count > vm->ctl.ram_frames - next) {
			*why = "its p2m does not cover its RAM exactly once, in order";
			return -EINVAL;
		}
		if (runs[i].mfn > d->be.machine_bytes >> VCMA_PAGE_SHIFT ||
		    runs[i].count > (d->be.machine_bytes >> VCMA_PAGE_SHIFT) - runs[i].mfn) {
			*why = "its p2m runs outside machine memory";
			return -EINVAL;
		}
		next += runs[i].count;
	}
	if (next != vm->ctl.ram_frames) {
		*why = "its p2m does not cover its RAM";
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n; i++)
		for (uint64_t k = 0; k < runs[i].count; k++) {
			uint64_t gfn = runs[i].gfn + k, mfn = runs[i].mfn + k, old = vm->p2m[gfn];
			struct vcma_pool *p;

			if (mfn == old)
				continue;
			/* the VMM applied a remap vcmad had not recorded: its frame is the newer,
			 * if nobody else holds it */
			if (mfn >= d->be.machine_bytes >> VCMA_PAGE_SHIFT || take_frame(vm, gfn, mfn)) {
				*why = "its p2m puts a page on a frame someone else holds";
				return -EEXIST;
			}
			p = vcma_core_pool_of(&d->core, old);
			if (p) {
				vcma_pool_unlend(p, old - p->fm.base);
				vcmad_scrub_add(d, old, 1);
			} else {
				free_ordinary(d, &old, 1);
			}
			vm->p2m[gfn] = mfn;
			vcmad_durable_p2m(&vm->durable, gfn, 1);
			moved++;
		}
	if (moved)
		log_notice("VM %u (%s): %llu page(s) were moved before vcmad restarted and not recorded: taken as the "
			   "VMM has them", vm->ctl.id, vm->ctl.name, (unsigned long long)moved);
	return 0;
}

void vcmad_vm_set_owner(struct vcmad_vm *vm, const struct vcmad_vm_owner_ops *owner, void *owner_arg)
{
	vm->owner = owner;
	vm->owner_arg = owner_arg;
	vm->no_lend = false;
	vcmad_relend_kick(vm->d);
}

void vcmad_vm_free(struct vcmad_vm *vm)
{
	if (vm->ctl.ops && vm->ctl.ops->release)
		vm->ctl.ops->release(&vm->ctl);
	release_ram(vm);
	vcmad_durable_vm_gone(&vm->durable, false);
	vm_unlink_free(vm);
}

void vcmad_vm_abandon(struct vcmad_vm *vm)
{
	if (vm->ctl.ops && vm->ctl.ops->release)
		vm->ctl.ops->release(&vm->ctl);
	vcmad_durable_vm_gone(&vm->durable, true); /* the VM keeps its memory: its p2m stays recorded */
	vm_unlink_free(vm);
}

struct vcmad_vm *vcmad_vm_find(struct vcmad *d, uint32_t id)
{
	for (struct vcmad_vm *vm = d->vms; vm; vm = vm->next)
		if (vm->ctl.id == id)
			return vm;
	return NULL;
}

int vcmad_vm_p2m_runs(const struct vcmad_vm *vm, struct vcmad_run **out, uint32_t *nout)
{
	struct vcmad_run *runs = NULL;
	uint32_t n = 0, cap = 0;

	for (uint64_t gfn = 0; gfn < vm->ctl.ram_frames; gfn++) {
		if (n && runs[n - 1].gfn + runs[n - 1].count == gfn && runs[n - 1].mfn + runs[n - 1].count == vm->p2m[gfn]) {
			runs[n - 1].count++;
			continue;
		}
		if (n == cap) {
			struct vcmad_run *nr;

			cap = cap ? cap * 2 : 64;
			nr = realloc(runs, cap * sizeof(*nr));
			if (!nr) {
				free(runs);
				return -ENOMEM;
			}
			runs = nr;
		}
		runs[n].gfn = gfn;
		runs[n].mfn = vm->p2m[gfn];
		runs[n].count = 1;
		n++;
	}
	*out = runs;
	*nout = n;
	return 0;
}

/* ---- pausing ---- */

int vcmad_vm_hold(struct vcmad_vm *vm, void *pauser, const struct vcmad_vm_pauser_ops *ops)
{
	if (vm->pauser || vm->ctl.lost)
		return -EBUSY;
	vm->pauser = pauser;
	vm->pauser_ops = ops;
	return 0;
}

int vcmad_vm_pause(struct vcmad_vm *vm, void *pauser, const struct vcmad_vm_pauser_ops *ops)
{
	bool took = !vm->pauser;
	int rc;

	if ((vm->pauser && vm->pauser != pauser) || vm->paused || vm->ctl.lost)
		return -EBUSY;
	vm->pauser = pauser;
	vm->pauser_ops = ops;
	vm->paused_at = vcmad_now(vm->d);
	vm->pause_seq = ++vm->seq;
	/* paused from now on: a synchronous backend answers (and the pauser may remap
	 * and resume) before the call returns */
	vcmad_vm_set_paused(vm, true);
	rc = vm->ctl.ops->pause(&vm->ctl, vm->pause_seq);
	if (rc && vm->paused && vm->pauser == pauser) {
		vcmad_vm_set_paused(vm, false);
		if (took) {
			vm->pauser = NULL;
			vm->pauser_ops = NULL;
		}
	}
	return rc;
}

uint64_t vcmad_vm_unpause(struct vcmad_vm *vm, bool send)
{
	uint64_t ns;

	if (!vm->paused)
		return 0;
	ns = vcmad_now(vm->d) - vm->paused_at;
	if (send && vm->ctl.ops->resume(&vm->ctl, vm->pause_seq))
		log_warn("guest %u (%s): cannot send RESUME", vm->ctl.id, vm->ctl.name);
	vcmad_vm_set_paused(vm, false);
	vcma_hist_record(&vm->pause_hist, ns);
	vcma_hist_record(&vm->d->vacate.pause_hist, ns);
	return ns;
}

void vcmad_vm_still_paused(struct vcmad_vm *vm)
{
	vcmad_vm_set_paused(vm, true);
	vm->paused_at = vcmad_now(vm->d); /* the pause's tail is recorded as one more */
}

void vcmad_vm_let_go(struct vcmad_vm *vm)
{
	vm->pauser = NULL;
	vm->pauser_ops = NULL;
}

uint64_t vcmad_vm_resume(struct vcmad_vm *vm)
{
	uint64_t ns = vcmad_vm_unpause(vm, true);

	vcmad_vm_let_go(vm);
	return ns;
}

static void quarantine(struct vcmad_vm *vm)
{
	struct vcmad *d = vm->d;
	uint64_t n = 0;

	vm->unresponsive = true;
	vm->no_lend = true;
	vcma_core_batch_begin(&d->core);
	for (uint64_t gfn = 0; gfn < vm->ctl.ram_frames; gfn++) {
		struct vcma_pool *p = vcma_core_pool_of(&d->core, vm->p2m[gfn]);

		if (p && !vcma_fmap_claim(&p->fm, vm->p2m[gfn] - p->fm.base, 1)) {
			vm->gflags[gfn] |= VCMAD_GFN_QUARANTINED;
			p->quarantined++;
			n++;
		}
	}
	vcma_core_batch_end(&d->core);
	log_warn("guest %u (%s) left %u PAUSEs in a row unanswered: unresponsive; its %llu pool frame(s) are kept out "
		 "of allocations until it detaches, and it is lent no more", vm->ctl.id, vm->ctl.name, VCMAD_PAUSE_MISSES,
		 (unsigned long long)n);
}

void vcmad_vm_pause_missed(struct vcmad_vm *vm)
{
	if (++vm->pause_misses == VCMAD_PAUSE_MISSES && !vm->unresponsive)
		quarantine(vm);
}
