// SPDX-License-Identifier: MIT
/*
 * vmem.c - a virtio-mem lender's accounting (vmem.h): plugged size = capacity lent.
 * The lender ops balloon.c calls, the requested size kept in step with what is lent,
 * take-backs queued in order and settled on the driver's reports or at their
 * deadlines. The device itself is the driver's (vmem_qmp.c, libvirt.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balloon.h"
#include "log.h"
#include "vcmad.h"
#include "vmem.h"

/* One take-back, in the order asked. */
struct vmem_reclaim {
	struct vmem_reclaim *next;
	uint64_t count; /* frames */
	uint64_t deadline_ns;
	void (*done)(void *arg, uint64_t held);
	void *arg;
};

struct vcmad_vmem {
	struct vcmad *d;
	struct vcmad_lender *l;
	const struct vcmad_vmem_driver_ops *ops;
	void *drv;
	uint64_t lend_max;   /* bytes */
	bool up;             /* reported since added or lost */
	bool lost_before;    /* a report now follows a loss */
	uint64_t plugged, requested, max, block; /* the driver's last report */
	uint64_t target;     /* what vmem last asked for */
	bool target_sent;
	struct vmem_reclaim *q;
	uint32_t pending;
	struct vcma_timer timer; /* settles the queue: at once, or at the head's deadline */
	uint64_t losts, restarts;
};

static const struct vcmad_lender_ops vmem_lender_ops;

static uint64_t frames_pending(const struct vcmad_vmem *v)
{
	uint64_t n = 0;

	for (const struct vmem_reclaim *r = v->q; r; r = r->next)
		n += r->count;
	return n;
}

/* The requested size for `frames` lent: whole blocks, at most the device's max. */
static uint64_t bytes_for(const struct vcmad_vmem *v, uint64_t frames)
{
	uint64_t b = frames << VCMA_PAGE_SHIFT;

	if (v->max && b > v->max)
		b = v->max;
	return b - b % v->block;
}

/* Ask the device for what is lent and not being taken back (plus `extra` frames
 * about to be lent). */
static void push_target(struct vcmad_vmem *v, uint64_t extra)
{
	uint64_t lent = v->l->lent + extra, pend = frames_pending(v);
	uint64_t t = bytes_for(v, lent > pend ? lent - pend : 0);
	int rc;

	if (!v->up || (v->target_sent && t == v->target))
		return;
	rc = v->ops->set_requested(v->drv, t);
	if (rc) {
		log_warn("virtio-mem: %s: cannot ask for a requested size of %llu MiB: %s", v->l->name,
			 (unsigned long long)(t >> 20), strerror(-rc));
		v->target_sent = false; /* again on the next report */
		return;
	}
	if (t < v->target)
		log_info("virtio-mem: %s: requested size %llu -> %llu MiB (plugged %llu MiB)", v->l->name,
			 (unsigned long long)(v->target >> 20), (unsigned long long)(t >> 20),
			 (unsigned long long)(v->plugged >> 20));
	v->target = t;
	v->target_sent = true;
}

/* How many of r's frames came back, with the plugged size where it is. */
static uint64_t held_of(const struct vcmad_vmem *v, const struct vmem_reclaim *r, uint64_t t)
{
	uint64_t excess;

	if (v->plugged <= t)
		return r->count;
	excess = (v->plugged - t + VCMA_PAGE_SIZE - 1) >> VCMA_PAGE_SHIFT;
	return excess < r->count ? r->count - excess : 0;
}

/* Take-backs that are done, or due, end; the device is asked for the rest. */
static void settle(struct vcmad_vmem *v)
{
	uint64_t now = vcmad_now(v->d);
	struct vmem_reclaim *r;

	while ((r = v->q)) {
		uint64_t lent = v->l->lent, t = bytes_for(v, lent > r->count ? lent - r->count : 0);
		uint64_t held;

		/* the device has been asked for at most t (its requested size says so),
		 * and has no more than that plugged: the guest cannot grow past it */
		if (v->up && v->requested <= t && v->plugged <= t)
			held = r->count;
		else if (!v->up || now >= r->deadline_ns)
			held = held_of(v, r, t);
		else
			break;
		v->q = r->next;
		v->pending--;
		r->done(r->arg, held); /* balloon.c: l->lent drops by held */
		free(r);
	}
	push_target(v, 0);
	if (v->q)
		vcma_timer_arm(&v->d->loop, &v->timer, v->q->deadline_ns);
	else
		vcma_timer_cancel(&v->d->loop, &v->timer);
}

static void timer_cb(struct vcma_timer *t)
{
	settle((struct vcmad_vmem *)((char *)t - offsetof(struct vcmad_vmem, timer)));
}

/* ---- lender ops ---- */

static int vm_room(struct vcmad *d, struct vcmad_lender *l, uint64_t *frames)
{
	struct vcmad_vmem *v = l->priv;
	uint64_t limit = v->lend_max;

	(void)d;
	if (!v->up)
		return -ENOENT;
	if (v->max && v->max < limit)
		limit = v->max;
	limit >>= VCMA_PAGE_SHIFT;
	*frames = v->q || l->lent >= limit ? 0 : limit - l->lent; /* not while taking back */
	return 0;
}

static int vm_lend(struct vcmad *d, struct vcmad_lender *l, uint64_t mfn, uint64_t count)
{
	struct vcmad_vmem *v = l->priv;
	int rc;

	if (!v->up)
		return -ENOTCONN;
	/* the frames hold no data of anyone's now: their host memory is released */
	rc = d->be.type->mem->zero(&d->be, mfn, count);
	if (rc)
		return rc;
	push_target(v, count);
	return v->target_sent ? 0 : -EIO;
}

static int vm_reclaim(struct vcmad *d, struct vcmad_lender *l, const uint64_t *mfns, uint64_t count,
		      uint64_t deadline_ns, void (*done)(void *arg, uint64_t held), void *arg)
{
	struct vcmad_vmem *v = l->priv;
	struct vmem_reclaim *r, **pp;

	(void)mfns; /* capacity, not particular frames: any of its blocks will do */
	if (!v->up)
		return -EBUSY; /* its device is out of reach: try later */
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct vmem_reclaim){ .count = count, .deadline_ns = deadline_ns, .done = done, .arg = arg };
	for (pp = &v->q; *pp; pp = &(*pp)->next)
		;
	*pp = r;
	v->pending++;
	log_info("virtio-mem: %s: %llu KiB asked back (%llu MiB lent, plugged %llu MiB), deadline %llu ms", l->name,
		 (unsigned long long)(count * 4), (unsigned long long)(l->lent >> 8),
		 (unsigned long long)(v->plugged >> 20), (unsigned long long)((deadline_ns - vcmad_now(d)) / 1000000));
	push_target(v, 0);
	/* settled from the loop (never before this returns): at once if already there */
	vcma_timer_arm(&d->loop, &v->timer, vcmad_now(d));
	return 0;
}

static void vm_unlend(struct vcmad *d, struct vcmad_lender *l)
{
	struct vcmad_vmem *v = l->priv;

	(void)d;
	if (v->up && l->lent) {
		log_info("virtio-mem: %s gives back the %llu MiB it was lent: vcmad stops", l->name,
			 (unsigned long long)(l->lent >> 8));
		v->ops->set_requested(v->drv, 0);
	}
}

static void vm_remove(struct vcmad *d, struct vcmad_lender *l)
{
	struct vcmad_vmem *v = l->priv;
	struct vmem_reclaim *r;

	while ((r = v->q)) {
		v->q = r->next;
		v->pending--;
		r->done(r->arg, r->count); /* the lender is gone: the capacity is vcmad's again */
		free(r);
	}
	if (v->up)
		v->ops->set_requested(v->drv, 0); /* no wait */
	vcma_timer_cancel(&d->loop, &v->timer);
	v->ops->close(v->drv);
	free(v);
	l->priv = NULL;
}

static const struct vcmad_lender_ops vmem_lender_ops = {
	.kind = "virtio-mem", .room = vm_room, .lend = vm_lend, .reclaim = vm_reclaim, .unlend = vm_unlend,
	.remove = vm_remove,
};

/* ---- the driver's side ---- */

int vcmad_vmem_lender_add(struct vcmad *d, const struct vcmad_guest_conf *gc, const struct vcmad_vmem_driver_ops *ops,
			  void *drv, struct vcmad_vmem **out)
{
	struct vcmad_vmem *v = calloc(1, sizeof(*v));
	uint64_t timeout_ms = gc->reclaim_timeout_ms ? gc->reclaim_timeout_ms : VCMAD_VMEM_DEFAULT_RECLAIM_TIMEOUT_MS;
	int rc;

	if (!v)
		return -ENOMEM;
	*v = (struct vcmad_vmem){ .d = d, .ops = ops, .drv = drv, .block = 2u << 20,
				  .lend_max = gc->lend_max ? gc->lend_max : VCMAD_VMEM_DEFAULT_LEND_MAX };
	vcma_timer_init(&v->timer, timer_cb);
	rc = vcmad_lender_register(d, gc, &vmem_lender_ops, v, timeout_ms * 1000000ull, &v->l);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* Its plugged size is below what vcmad counts lent, at the first report after a
 * loss: QEMU restarted and the guest has none of the difference. It is vcmad's. */
static void restarted(struct vcmad_vmem *v)
{
	struct vcmad *d = v->d;
	uint32_t li = (uint32_t)(v->l - d->balloon.lender);
	uint64_t have = v->plugged >> VCMA_PAGE_SHIFT, n = 0;

	if (v->q || v->l->lent <= have)
		return;
	for (uint32_t pi = 0; pi < d->core.npools && v->l->lent - n > have; pi++) {
		struct vcma_pool *p = d->core.pool[pi];

		for (uint64_t idx = 0; idx < p->fm.nframes && v->l->lent - n > have; idx++) {
			struct vcma_frame_info fi;

			if (!vcma_fmap_get(&p->fm, idx, &fi) && fi.state == VCMA_FRAME_LENT_FREE && !fi.claimed &&
			    fi.guest == VCMAD_BALLOON_GUEST(li) && !vcma_pool_unlend(p, idx))
				n++;
		}
	}
	v->l->lent -= n;
	v->restarts++;
	log_info("virtio-mem: %s is back with %llu MiB plugged: the %llu KiB more it was lent are the pools' again",
		 v->l->name, (unsigned long long)(v->plugged >> 20), (unsigned long long)(n * 4));
}

void vcmad_vmem_report(struct vcmad_vmem *v, uint64_t plugged, uint64_t requested, uint64_t max, uint64_t block)
{
	bool first = !v->up;

	v->plugged = plugged;
	v->requested = requested;
	v->max = max;
	v->block = block >= VCMA_PAGE_SIZE ? block : 2u << 20;
	if (first) {
		v->up = true;
		v->l->present = true;
		v->target_sent = false; /* the device is told what is lent */
		log_info("virtio-mem: %s is up: plugged %llu MiB, requested %llu MiB, max %llu MiB, block %llu KiB; "
			 "%llu MiB lent", v->l->name, (unsigned long long)(plugged >> 20),
			 (unsigned long long)(requested >> 20), (unsigned long long)(max >> 20),
			 (unsigned long long)(v->block >> 10), (unsigned long long)(v->l->lent >> 8));
		if (v->lost_before)
			restarted(v);
		vcmad_relend_kick(v->d); /* it may take capacity now */
	}
	settle(v);
}

void vcmad_vmem_lost(struct vcmad_vmem *v, const char *why)
{
	if (!v->up)
		return;
	v->up = false;
	v->lost_before = true;
	v->l->present = false;
	v->losts++;
	log_warn("virtio-mem: %s: lost its device (%s): %llu MiB stay lent; %u take-back(s) end short", v->l->name,
		 why, (unsigned long long)(v->l->lent >> 8), v->pending);
	settle(v);
}

void vcmad_vmem_get_info(const struct vcmad_vmem *v, struct vcmad_vmem_info *out)
{
	*out = (struct vcmad_vmem_info){ .up = v->up, .plugged = v->plugged, .requested = v->requested, .max = v->max,
					 .block = v->block, .target = v->target, .pending = v->pending,
					 .losts = v->losts, .restarts = v->restarts };
}

struct vcmad_vmem *vcmad_vmem_of(struct vcmad *d, const char *name)
{
	struct vcmad_lender *l = vcmad_lender_find(d, name);

	return l && l->ops == &vmem_lender_ops ? l->priv : NULL;
}
