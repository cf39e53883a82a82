// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_ring.c - the guest side of the vcma ring (PROTOCOL.md 4.2, 4.5, 4.6, 8.3).
 *
 * Callers sleep until their answer: a request takes a free in-flight entry and a
 * ring slot under dev->lock, the interrupt handler takes responses (each slot copied
 * once, the copy checked) and completes the entry with the matching id. A host that
 * answers an id not in flight, publishes an impossible index, goes DEAD or changes
 * generation fails every call from then on; so does one that does not answer within
 * VCMA_REQ_TIMEOUT. FREE is posted: nobody waits, the answer is checked and dropped.
 * A caller killed while it waits leaves its request posted; if it was an ALLOC that
 * succeeds after all, a work item FREEs the region nobody will know about.
 */
#include <linux/device.h>
#include <linux/sched.h>

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_guest_check.h"

/* Called with dev->lock held. */
static void fail_locked(struct vcma_dev *dev, int err)
{
	if (!dev->broken) {
		dev->broken = err;
		if (err != -ENODEV)
			dev_err(dev->dev, "host unusable (%d): failing every request\n", err);
	}
	wake_up_all(&dev->wq);
}

void vcma_ring_fail(struct vcma_dev *dev, int err)
{
	unsigned long flags;

	spin_lock_irqsave(&dev->lock, flags);
	fail_locked(dev, err);
	spin_unlock_irqrestore(&dev->lock, flags);
}

/* State and generation, re-read on every wake-up (3). */
static int state_check_locked(struct vcma_dev *dev)
{
	u32 st = smp_load_acquire(&((struct vcma_ctrl *)dev->shm)->state);

	if (READ_ONCE(((struct vcma_ctrl *)dev->shm)->generation) != dev->ctrl.generation)
		return -ECONNRESET;
	switch (st) {
	case VCMA_STATE_READY:
		return dev->connected ? -ECONNRESET : 0; /* before HELLO's answer, READY is normal */
	case VCMA_STATE_CONNECTED:
		return 0;
	case VCMA_STATE_CLOSING:
		return -ESHUTDOWN;
	default:
		return -ECONNRESET; /* DEAD, a value above it, or back to INIT/READY */
	}
}

static struct vcma_inflight *inflight_find(struct vcma_dev *dev, u64 id)
{
	for (u32 i = 0; i < dev->ninflight_max; i++)
		if (dev->inflight[i].used && !dev->inflight[i].done && dev->inflight[i].id == id)
			return &dev->inflight[i];
	return NULL;
}

static void take_events_locked(struct vcma_dev *dev)
{
	u32 prod = smp_load_acquire(&dev->eh->evt_prod);
	struct vcma_evt e;

	if (prod - dev->evt_cons > dev->ctrl.evt_slots) {
		fail_locked(dev, -EIO);
		return;
	}
	while (dev->evt_cons != prod) {
		vcma_copy_from_shared(&e, &dev->evs[dev->evt_cons & (dev->ctrl.evt_slots - 1)], sizeof(e));
		dev->evt_cons++;
		smp_store_release(&dev->eh->evt_cons, dev->evt_cons);
		if (e.type == VCMA_EVT_REGION_GONE)
			dev_warn_ratelimited(dev->dev, "vcmad reclaimed region %#llx\n", e.handle);
		else if (e.type == VCMA_EVT_SHUTDOWN)
			dev_info(dev->dev, "vcmad is shutting down\n");
	}
	WRITE_ONCE(dev->eh->evt_event, dev->evt_cons + 1);
}

/* The answer to an ALLOC whose caller is gone: a region it made is to be FREEd. */
static void abandon_locked(struct vcma_dev *dev, const struct vcma_rsp *rsp)
{
	if (rsp->status != VCMA_ST_OK || !rsp->handle)
		return;
	if (dev->nabandoned == VCMA_MAX_INFLIGHT) { /* cannot happen: one per in-flight entry */
		dev_warn_ratelimited(dev->dev, "region %#llx left at vcmad until detach\n", rsp->handle);
		return;
	}
	dev->abandoned[dev->nabandoned++] = rsp->handle;
	schedule_work(&dev->free_work);
}

/* Returns whether there was anything to take: a response, an event, a state change. */
static bool poll_locked(struct vcma_dev *dev)
{
	u32 rsp_cons = dev->rsp_cons, evt_cons = dev->evt_cons;
	struct vcma_rsp rsp;
	int err;
	u32 rp;

	if (dev->broken || !dev->rh) /* an irq before the ring was taken over finds nothing */
		return false;
	for (;;) {
		rp = smp_load_acquire(&dev->rh->rsp_prod);
		if (rp - dev->rsp_cons > dev->req_prod_pvt - dev->rsp_cons) {
			fail_locked(dev, -EIO); /* more answers than requests */
			return true;
		}
		while (dev->rsp_cons != rp) {
			struct vcma_inflight *f;

			vcma_copy_from_shared(&rsp, &dev->slots[dev->rsp_cons & (dev->ctrl.req_slots - 1)], sizeof(rsp));
			dev->rsp_cons++;
			f = inflight_find(dev, rsp.id);
			if (!f) {
				fail_locked(dev, -EIO); /* an id we never sent, or sent and had answered */
				return true;
			}
			if (f->posted) {
				if (f->op == VCMA_OP_ALLOC)
					abandon_locked(dev, &rsp);
				else if (rsp.status != VCMA_ST_OK)
					dev_warn_ratelimited(dev->dev, "request %llu (op %u) failed at vcmad: %d\n",
							     rsp.id, f->op, rsp.status);
				f->used = false;
				continue;
			}
			f->rsp = rsp;
			f->done = true;
		}
		if (dev->features & VCMA_F_EVENTS)
			take_events_locked(dev);
		err = state_check_locked(dev);
		if (err) {
			fail_locked(dev, err);
			return true;
		}
		WRITE_ONCE(dev->rh->rsp_event, dev->rsp_cons + 1);
		smp_mb();
		if (READ_ONCE(dev->rh->rsp_prod) == rp &&
		    (!(dev->features & VCMA_F_EVENTS) || READ_ONCE(dev->eh->evt_prod) == dev->evt_cons))
			break;
	}
	wake_up_all(&dev->wq);
	return dev->rsp_cons != rsp_cons || dev->evt_cons != evt_cons;
}

/* The irq: take what the host published. Returns whether there was anything. */
bool vcma_ring_poll(struct vcma_dev *dev)
{
	unsigned long flags;
	bool work = false;

	spin_lock_irqsave(&dev->lock, flags);
	if (!dev->gone)
		work = poll_locked(dev);
	spin_unlock_irqrestore(&dev->lock, flags);
	return work;
}

/* Publish *q if there is room: 0 with *slot set, -EAGAIN, or the device's error. */
static int try_submit(struct vcma_dev *dev, struct vcma_req *q, int *slot, bool posted)
{
	unsigned long flags;
	u32 old;
	int i, rc = -EAGAIN;

	spin_lock_irqsave(&dev->lock, flags);
	if (dev->broken) {
		rc = dev->broken;
		goto out;
	}
	if (dev->req_prod_pvt - dev->rsp_cons >= dev->ctrl.max_outstanding)
		goto out;
	for (i = 0; i < dev->ninflight_max && dev->inflight[i].used; i++)
		;
	if (i == dev->ninflight_max)
		goto out;
	q->id = dev->next_id++;
	dev->inflight[i] = (struct vcma_inflight){ .id = q->id, .op = q->op, .used = true, .posted = posted };
	memcpy(&dev->slots[dev->req_prod_pvt & (dev->ctrl.req_slots - 1)], q, sizeof(*q));
	old = dev->req_prod_pvt++;
	smp_store_release(&dev->rh->req_prod, dev->req_prod_pvt);
	smp_mb();
	if (vcma_need_notify(old, dev->req_prod_pvt, READ_ONCE(dev->rh->req_event)))
		dev->ops->kick(dev);
	*slot = i;
	rc = 0;
out:
	spin_unlock_irqrestore(&dev->lock, flags);
	return rc;
}

static bool answered(struct vcma_dev *dev, int slot, struct vcma_rsp *rsp, int *err)
{
	unsigned long flags;
	bool done;

	spin_lock_irqsave(&dev->lock, flags);
	done = dev->inflight[slot].done || dev->broken;
	if (dev->inflight[slot].done) {
		*rsp = dev->inflight[slot].rsp;
		*err = 0;
	} else {
		*err = dev->broken;
	}
	if (done)
		dev->inflight[slot].used = false;
	spin_unlock_irqrestore(&dev->lock, flags);
	return done;
}

/*
 * Wait for room in the ring, then publish *q. A call's caller may be killed while it
 * waits; a posted request is often sent by an exiting task (the last close of a
 * dma-buf), so it waits regardless.
 */
static int submit(struct vcma_dev *dev, struct vcma_req *q, int *slot, bool posted)
{
	long left;
	int err = 0;

	if (posted)
		left = wait_event_timeout(dev->wq, (err = try_submit(dev, q, slot, true)) != -EAGAIN, VCMA_REQ_TIMEOUT);
	else
		left = wait_event_killable_timeout(dev->wq, (err = try_submit(dev, q, slot, false)) != -EAGAIN,
						   VCMA_REQ_TIMEOUT);
	if (left < 0)
		return -EINTR;
	if (!left)
		return -ETIMEDOUT;
	return err;
}

/* The caller of the request in slot was killed: whatever the answer, nobody takes it. */
static void abandon(struct vcma_dev *dev, int slot)
{
	struct vcma_inflight *f = &dev->inflight[slot];
	unsigned long flags;

	spin_lock_irqsave(&dev->lock, flags);
	if (f->done) {
		if (f->op == VCMA_OP_ALLOC)
			abandon_locked(dev, &f->rsp);
		f->used = false;
	} else if (!dev->broken) {
		f->posted = true;
	} else {
		f->used = false;
	}
	spin_unlock_irqrestore(&dev->lock, flags);
}

/*
 * Send one request and sleep until its answer. Returns 0 with *rsp filled (its
 * status may still say no), or a negative errno when the host is unusable.
 */
int vcma_call(struct vcma_dev *dev, struct vcma_req *q, struct vcma_rsp *rsp)
{
	int slot = -1, err = 0;
	long left;

	err = submit(dev, q, &slot, false);
	if (err)
		return err;
	left = wait_event_killable_timeout(dev->wq, answered(dev, slot, rsp, &err), VCMA_REQ_TIMEOUT);
	if (left < 0) {
		abandon(dev, slot);
		return -EINTR;
	}
	if (!left) {
		/* a host that keeps a request longer than this is broken: the slot stays
		 * in flight, and nothing is sent again */
		vcma_ring_fail(dev, -ETIMEDOUT);
		return -ETIMEDOUT;
	}
	return err;
}

/*
 * Send one request without waiting for its answer (a FREE: nobody could act on a
 * refusal, and vcmad takes requests in ring order, so whatever the caller asks next
 * is answered after it). Sleeps only for room in the ring; the answer is checked
 * when it comes, and a failure is logged.
 */
int vcma_post(struct vcma_dev *dev, struct vcma_req *q)
{
	int slot;

	return submit(dev, q, &slot, true);
}

/* FREE the regions of killed callers' ALLOCs (process context). */
void vcma_ring_free_abandoned(struct vcma_dev *dev)
{
	struct vcma_req q = { .op = VCMA_OP_FREE };
	unsigned long flags;

	for (;;) {
		spin_lock_irqsave(&dev->lock, flags);
		if (!dev->nabandoned) {
			spin_unlock_irqrestore(&dev->lock, flags);
			return;
		}
		q.handle = dev->abandoned[--dev->nabandoned];
		spin_unlock_irqrestore(&dev->lock, flags);
		if (vcma_post(dev, &q))
			dev_warn(dev->dev, "region %#llx left at vcmad until detach\n", q.handle);
		else
			dev_info(dev->dev, "freed region %#llx: its caller was killed while vcmad made it\n",
				 q.handle);
	}
}

void vcma_ring_free_work(struct work_struct *w)
{
	struct vcma_dev *dev = container_of(w, struct vcma_dev, free_work);

	down_read(&dev->sem);
	if (!dev->gone) /* removal FREEs them itself before it sets gone */
		vcma_ring_free_abandoned(dev);
	up_read(&dev->sem);
}

static bool ring_idle(struct vcma_dev *dev)
{
	unsigned long flags;
	bool idle;

	spin_lock_irqsave(&dev->lock, flags);
	idle = dev->broken || (dev->rsp_cons == dev->req_prod_pvt && !dev->nabandoned);
	spin_unlock_irqrestore(&dev->lock, flags);
	return idle;
}

/*
 * Wait until every posted request is answered and every abandoned region FREEd (the
 * device is going away: a driver bound to it next takes over the ring only when
 * nothing is in flight). Call with dev->sem held for writing.
 */
void vcma_ring_drain(struct vcma_dev *dev)
{
	long left = VCMA_REQ_TIMEOUT;

	for (;;) {
		vcma_ring_free_abandoned(dev); /* the work item waits for the caller's lock */
		if (ring_idle(dev))
			return;
		left = wait_event_timeout(dev->wq, ring_idle(dev) || READ_ONCE(dev->nabandoned), left);
		if (!left) {
			vcma_ring_fail(dev, -ETIMEDOUT);
			return;
		}
	}
}

/* Check the control page, take over the ring, say HELLO (2.5, 3, 5.2). */
int vcma_ring_attach(struct vcma_dev *dev)
{
	struct vcma_ctrl *c = &dev->ctrl;
	struct vcma_req q = { .op = VCMA_OP_HELLO };
	struct vcma_ring_hdr *rh;
	struct vcma_rsp rsp;
	unsigned long flags;
	u32 st, prod;
	int err;

	st = smp_load_acquire(&((struct vcma_ctrl *)dev->shm)->state);
	vcma_copy_from_shared(c, dev->shm, sizeof(*c));
	switch (vcma_ctrl_check(c, dev->shm_len)) {
	case VCMA_CTRL_OK:
		break;
	case VCMA_CTRL_MAJOR:
		dev_err(dev->dev, "vcma protocol %u.%u: this driver speaks %u\n", c->major, c->minor,
			VCMA_PROTO_MAJOR);
		return -EPROTONOSUPPORT;
	default:
		dev_err(dev->dev, "the control page fails the checks of PROTOCOL.md 2.5\n");
		return -ENODEV;
	}
	if (dev->ops->check_layout) {
		err = dev->ops->check_layout(dev);
		if (err)
			return err;
	}
	if (st != VCMA_STATE_READY && st != VCMA_STATE_CONNECTED) {
		dev_err(dev->dev, "vcmad does not serve this device (state %u)\n", st);
		return -ENODEV;
	}
	/* a fresh area starts at 0; one already CONNECTED (the driver was reloaded)
	 * continues where it is, and only if nothing is in flight there */
	rh = vcma_req_ring(dev->shm, c);
	prod = READ_ONCE(rh->req_prod);
	if (READ_ONCE(rh->rsp_prod) != prod)
		return -EBUSY;
	spin_lock_irqsave(&dev->lock, flags);
	dev->slots = vcma_req_slots(rh);
	dev->eh = vcma_evt_ring(dev->shm, c);
	dev->evs = vcma_evt_slots(dev->eh);
	dev->ninflight_max = min(c->max_outstanding, VCMA_MAX_INFLIGHT);
	dev->next_id = 1;
	dev->req_prod_pvt = prod;
	dev->rsp_cons = prod;
	dev->evt_cons = READ_ONCE(dev->eh->evt_prod);
	dev->rh = rh; /* the irq handler looks at the ring from now on */
	spin_unlock_irqrestore(&dev->lock, flags);
	if (st == VCMA_STATE_CONNECTED) {
		dev->features = READ_ONCE(((struct vcma_ctrl *)dev->shm)->guest_features) & VCMA_F_KNOWN;
		dev->connected = true;
		dev_info(dev->dev, "taking over a connected ring (guest %u)\n", c->guest_id);
		return 0;
	}
	q.arg0 = (u64)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR;
	q.arg1 = VCMA_F_EVENTS | VCMA_F_NAMED_POOL;
	dev->features = 0;
	err = vcma_call(dev, &q, &rsp);
	if (err)
		return err;
	err = vcma_status_errno(rsp.status);
	if (err)
		return err;
	dev->features = rsp.val[0] & (VCMA_F_EVENTS | VCMA_F_NAMED_POOL);
	dev->connected = true;
	return 0;
}
