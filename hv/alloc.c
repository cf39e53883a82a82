// SPDX-License-Identifier: MIT
/*
 * alloc.c - the allocation path every requester takes (alloc.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "balloon.h"
#include "durable.h"
#include "log.h"
#include "relend.h"
#include "vacate.h"
#include "vcmad.h"

/* An allocation waiting for its window to be vacated. */
struct vcmad_alloc {
	struct vcmad_requester *rq; /* NULL once the requester is gone */
	struct vcmad *d;
	uint64_t tag;
	uint64_t bytes;
	struct vcma_alloc_plan plan;
	struct vcmad_job *job;
	bool then_vacate;         /* lenders' capacity first, then VMs' pages */
	struct vcmad_alloc *next; /* in rq->waiting */
};

static void settle(struct vcmad *d, struct vcmad_requester *rq);

void vcmad_requester_init(struct vcmad_requester *rq, struct vcmad *d, const struct vcmad_requester_ops *ops,
			  uint32_t owner, const char *name, const char *devclass)
{
	*rq = (struct vcmad_requester){
		.d = d, .ops = ops, .owner = owner, .name = name, .devclass = devclass,
		.max_regions = d->conf.limits.max_regions, .max_bytes = d->conf.limits.max_bytes,
	};
}

static int free_region(struct vcmad_requester *rq, uint64_t handle, bool busy);

/* The committed region becomes rq's (take), or the error is final. */
static int grant(struct vcmad_requester *rq, struct vcma_region *r)
{
	struct vcmad *d = rq->d;
	int rc = rq->ops->take(rq, r);

	if (rc) {
		struct vcma_region copy = *r;

		vcma_core_free(&d->core, rq->owner, r->handle);
		if (rc == -ENOMEM || rc == -ENOSPC) {
			log_info("%s: no memory for a region of %llu KiB now: %s", rq->name,
				 (unsigned long long)(copy.nframes * 4), strerror(-rc));
			return rc; /* the guest hears NO_MEMORY or NO_SPACE */
		}
		log_err("%s: cannot hand over the region at mfn %#llx: %s", rq->name, (unsigned long long)copy.mfn,
			strerror(-rc));
		if (rc == -ENXIO)
			vcmad_pool_retire(d, copy.mfn, copy.nframes, "the backend lost them");
		return -EIO;
	}
	vcma_regions_set_gpa(&d->core.regions, rq->owner, r->handle, r->gpa);
	rq->nregions++;
	rq->bytes += r->nframes << VCMA_PAGE_SHIFT;
	if (vcmad_durable_region_new(d, r)) {
		/* it cannot be recorded (the state directory is full): not granted */
		free_region(rq, r->handle, false);
		return -ENOSPC;
	}
	return 0;
}

/* A grant whose answer waited for the turn's commit (durable.h): answered, or taken
 * back (NO_SPACE: it could not be recorded), or freed (nobody waits for it now). */
static void held_answer(void *arg, uint64_t tag, const struct vcma_region *r, int outcome)
{
	struct vcmad_requester *rq = arg;

	if (outcome)
		free_region(rq, r->handle, false);
	if (outcome == -ECANCELED)
		return;
	if (outcome)
		rq->failed++;
	else
		rq->ok++;
	rq->ops->answer(rq, tag, outcome, outcome ? NULL : r);
}

static void answer(struct vcmad_requester *rq, uint64_t tag, int err, const struct vcma_region *r)
{
	/* a region is on disk before its owner hears of it: after this turn's commit */
	if (!err && vcmad_durable_hold(rq->d, rq, tag, r, held_answer))
		return;
	if (err)
		rq->failed++;
	else
		rq->ok++;
	rq->ops->answer(rq, tag, err, err ? NULL : r);
}

static void unwait(struct vcmad_alloc *a)
{
	struct vcmad_requester *rq = a->rq;

	if (!rq)
		return;
	for (struct vcmad_alloc **pp = &rq->waiting; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	rq->pending--;
	rq->pending_bytes -= a->bytes;
	a->rq = NULL;
}

/* The window's vacate job ended: commit the region, or give the window up. */
static int window_done(void *arg, int err)
{
	struct vcmad_alloc *a = arg;
	struct vcmad_requester *rq = a->rq;
	struct vcmad *d = a->d;
	struct vcma_region r;

	unwait(a);
	if (!err && !rq) {
		log_info("vacate: window in pool %s vacated for a requester that left: released",
			 a->plan.pool->cfg.name);
		err = -ESHUTDOWN; /* nobody to give the region to */
	}
	if (!err) {
		err = vcma_core_alloc_finish(&d->core, &a->plan, &r);
		if (err == -EBUSY) {
			log_err("vacate: window in pool %s still holds a lent frame after all moves",
				a->plan.pool->cfg.name);
			err = -EIO;
		}
	}
	if (err && a->plan.pool)
		vcma_core_alloc_abort(&d->core, &a->plan);
	if (!err)
		err = grant(rq, &r);
	if (rq)
		answer(rq, a->tag, err, &r);
	free(a);
	return err;
}

/* The lenders gave their part of the window back: VMs' lent pages are vacated next. */
static int lenders_done(void *arg, int err)
{
	struct vcmad_alloc *a = arg;
	int rc;

	if (err)
		return window_done(a, err);
	rc = vcmad_vacate_window(a->d, a->plan.pool, a->plan.w.start, a->plan.w.count, window_done, a, &a->job);
	return rc ? window_done(a, rc) : 0;
}

/* Start bringing the window's lent frames back: from lenders (balloon.h) and from
 * VMs whose pages sit on them (vacate.h). */
static int start_window(struct vcmad *d, struct vcmad_alloc *a)
{
	const struct vcma_alloc_plan *plan = &a->plan;
	uint64_t lent = plan->w.nlent_free + plan->w.nlent_used;
	uint64_t lenders = d->balloon.nlenders ? vcmad_balloon_window_lent(d, plan->pool, plan->w.start, plan->w.count)
					       : 0;

	/* the hypervisor owns memory (Xen): everything lent is in lenders' balloons */
	if (d->be.type->holds_frames)
		return vcmad_balloon_reclaim(d, plan->pool, plan->w.start, plan->w.count, window_done, a);
	if (!lenders)
		return vcmad_vacate_window(d, plan->pool, plan->w.start, plan->w.count, window_done, a, &a->job);
	a->then_vacate = lenders < lent;
	return vcmad_balloon_reclaim(d, plan->pool, plan->w.start, plan->w.count,
				     a->then_vacate ? lenders_done : window_done, a);
}

int vcmad_alloc(struct vcmad_requester *rq, uint64_t tag, const struct vcma_alloc_req *req)
{
	struct vcmad *d = rq->d;
	struct vcma_requester who = { .guest = rq->owner, .name = rq->name, .devclass = rq->devclass };
	uint64_t bytes = (req->bytes + VCMA_PAGE_SIZE - 1) & ~(uint64_t)(VCMA_PAGE_SIZE - 1);
	struct vcma_alloc_plan plan;
	struct vcma_region r;
	int rc;

	if (d->stop) {
		answer(rq, tag, -ESHUTDOWN, NULL);
		return 0;
	}
	if (vcmad_durable_may_grant(d)) {
		answer(rq, tag, -ENOSPC, NULL); /* the state directory is full: nothing can be recorded */
		return 0;
	}
	if (d->restore.vms_waiting) {
		/* after a restart, until every VM taken back is back: a frame a VMM moved a
		 * page to may not be recorded as its own yet (restore.h) */
		answer(rq, tag, -EBUSY, NULL);
		return 0;
	}
	vcmad_relend_busy(d); /* relending waits for quiet */
	/* limits count what is promised as well as what is granted: allocations waiting
	 * for a vacate hold their share (bytes + pending_bytes <= max_bytes) */
	if (rq->nregions + rq->pending >= rq->max_regions || bytes > rq->max_bytes - rq->bytes - rq->pending_bytes) {
		answer(rq, tag, -ENOBUFS, NULL);
		return 0;
	}
	if (d->held.n) {
		/* regions freed earlier in this turn are held (vcmad_free_hold): when the
		 * pool has no window of FREE frames without them, they are released now
		 * and the search runs again, so the memory just freed serves this ALLOC
		 * as it would have without the hold */
		rc = vcma_core_alloc_try(&d->core, &who, req, &plan);
		if (!rc && plan.w.nlent_free + plan.w.nlent_used)
			vcma_core_alloc_drop(&d->core, &plan);
		if (rc || plan.w.nlent_free + plan.w.nlent_used) {
			d->held.released_early++;
			settle(d, NULL);
			rc = vcma_core_alloc_begin(&d->core, &who, req, &plan);
		}
	} else {
		rc = vcma_core_alloc_begin(&d->core, &who, req, &plan);
	}
	if (rc == -ENOSPC && vcmad_vacate_relend_yield(d)) {
		/* relending had claimed idle frames to fill them: they are this ALLOC's
		 * (relending gives way; it comes back when the host is quiet again) */
		rc = vcma_core_alloc_begin(&d->core, &who, req, &plan);
	}
	if (!rc && plan.w.nlent_free + plan.w.nlent_used) {
		/* lent frames in the window: answer when they are vacated */
		struct vcmad_alloc *a = calloc(1, sizeof(*a));

		rc = -ENOMEM;
		if (a) {
			*a = (struct vcmad_alloc){ .rq = rq, .d = d, .tag = tag, .bytes = plan.w.count << VCMA_PAGE_SHIFT,
						   .plan = plan, .next = rq->waiting };
			rq->waiting = a;
			rq->pending++;
			rq->pending_bytes += a->bytes;
			rc = start_window(d, a);
			if (!rc)
				return VCMAD_ALLOC_WAITING; /* window_done may have answered already */
			unwait(a);
			free(a);
		}
		vcma_core_alloc_abort(&d->core, &plan);
	} else if (!rc) {
		rc = vcma_core_alloc_finish(&d->core, &plan, &r);
		if (rc == -EBUSY)
			vcma_core_alloc_abort(&d->core, &plan);
		if (!rc)
			rc = grant(rq, &r);
	}
	answer(rq, tag, rc, &r);
	return 0;
}

/* Release the held regions (of rq only, unless NULL): their frames become FREE and
 * the requester zeroes what it held, as a FREE does without the hold. */
static void settle(struct vcmad *d, struct vcmad_requester *rq)
{
	struct vcmad_held *h = &d->held;
	uint32_t kept = 0;

	for (uint32_t i = 0; i < h->n; i++) {
		struct vcmad_requester *owner = h->ent[i].rq;
		struct vcma_region r = h->ent[i].r;
		int rc;

		if (rq && owner != rq) {
			h->ent[kept++] = h->ent[i];
			continue;
		}
		rc = vcma_core_release_held(&d->core, r.mfn, r.nframes);
		if (rc) {
			/* they stay REGION: out of every search, never handed out unzeroed */
			log_err("%s: cannot release the %llu frame(s) held at mfn %#llx: %s", owner->name,
				(unsigned long long)r.nframes, (unsigned long long)r.mfn, strerror(-rc));
			continue;
		}
		owner->ops->release(owner, &r);
	}
	h->n = kept;
}

void vcmad_free_hold(struct vcmad *d)
{
	d->held.depth++;
}

void vcmad_free_settle(struct vcmad *d)
{
	if (d->held.depth && --d->held.depth)
		return;
	settle(d, NULL);
}

void vcmad_free_release_held(struct vcmad *d)
{
	if (d->held.n)
		d->held.released_early++;
	settle(d, NULL);
}

/* busy: a FREE the requester asked for (relending waits for quiet after it); not
 * when a requester's regions go with it. */
static int free_region(struct vcmad_requester *rq, uint64_t handle, bool busy)
{
	struct vcmad *d = rq->d;
	const struct vcma_region *r = vcma_core_lookup(&d->core, rq->owner, handle);
	struct vcma_region copy;
	bool hold = busy && d->held.depth && d->held.n < VCMAD_HELD_MAX;
	int rc;

	if (!r)
		return -ENOENT;
	copy = *r;
	rc = hold ? vcma_core_free_held(&d->core, rq->owner, handle) : vcma_core_free(&d->core, rq->owner, handle);
	if (rc)
		return rc;
	vcmad_durable_region_gone(d, handle);
	if (hold) {
		/* its frames stay REGION until settle() releases and zeroes them */
		d->held.ent[d->held.n].rq = rq;
		d->held.ent[d->held.n].r = copy;
		d->held.n++;
		d->held.frees++;
	} else {
		/* release the memory; the next owner gets zeros either way */
		rq->ops->release(rq, &copy);
	}
	rq->nregions--;
	rq->bytes -= copy.nframes << VCMA_PAGE_SHIFT;
	if (busy)
		vcmad_relend_busy(d); /* its frames are idle; relending waits for quiet */
	else
		vcmad_relend_kick(d);
	return 0;
}

int vcmad_free(struct vcmad_requester *rq, uint64_t handle)
{
	return free_region(rq, handle, true);
}

void vcmad_alloc_drop(struct vcmad_requester *rq, uint64_t tag)
{
	vcmad_durable_drop(rq->d, rq, tag); /* granted, its answer held for the commit: freed */
	for (struct vcmad_alloc *a = rq->waiting; a; a = a->next)
		if (a->tag == tag) {
			unwait(a); /* the job goes on and lets its window go (window_done) */
			return;
		}
}

static void drop_waiting(struct vcmad_requester *rq)
{
	while (rq->waiting) {
		struct vcmad_alloc *a = rq->waiting;

		/* the job goes on and lets its window go when it ends (window_done) */
		unwait(a);
	}
}

int vcmad_requester_gone(struct vcmad_requester *rq)
{
	struct vcmad *d = rq->d;
	int freed = 0;

	settle(d, rq); /* what it freed this turn, before its link lets go of it */
	drop_waiting(rq);
	vcmad_durable_forget(rq->d, rq);
	for (uint32_t cursor = 0;;) {
		const struct vcma_region *r = vcma_regions_next(&d->core.regions, &cursor);

		if (!r)
			break;
		if (r->guest == rq->owner && !free_region(rq, r->handle, false))
			freed++;
	}
	return freed;
}

void vcmad_requester_abandon(struct vcmad_requester *rq)
{
	settle(rq->d, rq);
	drop_waiting(rq);
	vcmad_durable_forget(rq->d, rq);
}

void vcmad_pool_retire(struct vcmad *d, uint64_t mfn, uint64_t n, const char *why)
{
	struct vcma_pool *p = vcma_core_pool_of(&d->core, mfn);
	int rc = p ? vcma_fmap_reserve(&p->fm, mfn - p->fm.base, n) : -ENOENT;

	if (rc)
		log_err("pool %s: cannot retire %llu frame(s) at %#llx (%s): %s", p ? p->cfg.name : "?",
			(unsigned long long)n, (unsigned long long)mfn, why, strerror(-rc));
	else
		log_warn("pool %s: %llu KiB retired for good (%s): the pool is that much smaller", p->cfg.name,
			 (unsigned long long)(n * 4), why);
}
