// SPDX-License-Identifier: MIT
/*
 * ring.c - host side of the request and event rings.
 */
#include <errno.h>
#include <string.h>

#include "ring.h"
#include "vcma_barrier.h"
#include "vcma_name.h"

uint64_t vcma_ring_shm_size(uint32_t req_slots, uint32_t evt_slots)
{
	return VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES((uint64_t)req_slots)) +
	       vcma_page_round(VCMA_EVT_BYTES((uint64_t)evt_slots));
}

int vcma_ring_host_init(struct vcma_ring_host *r, void *base, uint64_t size, const struct vcma_ring_params *p)
{
	uint64_t need = vcma_ring_shm_size(p->req_slots, p->evt_slots);
	struct vcma_ctrl *c = base;

	memset(r, 0, sizeof(*r));
	if (!vcma_is_pow2(p->req_slots) || !vcma_is_pow2(p->evt_slots) || size < need)
		return -EINVAL;
	if (p->window_size && (p->window_off < need || p->window_off > size || p->window_size > size - p->window_off))
		return -EINVAL;
	r->base = base;
	r->size = size;
	r->ctrl = c;
	r->slots = p->req_slots;
	r->evt_slots = p->evt_slots;

	vcma_write_once(&c->state, (uint32_t)VCMA_STATE_INIT);
	c->magic = VCMA_PROTO_MAGIC;
	c->major = VCMA_PROTO_MAJOR;
	c->minor = VCMA_PROTO_MINOR;
	c->hdr_size = sizeof(*c);
	c->host_features = p->no_lazy_free ? VCMA_F_KNOWN & ~VCMA_F_LAZY_FREE : VCMA_F_KNOWN;
	c->guest_features = 0;
	c->generation = p->generation;
	c->guest_id = p->guest_id;
	c->req_off = VCMA_PROTO_PAGE;
	c->req_slots = p->req_slots;
	c->evt_off = VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES((uint64_t)p->req_slots));
	c->evt_slots = p->evt_slots;
	c->window_off = p->window_off;
	c->window_size = p->window_size;
	c->max_outstanding = p->req_slots;
	c->max_regions = p->max_regions;
	c->max_bytes = p->max_bytes;
	memset(c->reserved, 0, sizeof(c->reserved));

	r->req = vcma_req_ring(base, c);
	r->slot = vcma_req_slots(r->req);
	r->evh = vcma_evt_ring(base, c);
	r->evs = vcma_evt_slots(r->evh);
	memset(r->req, 0, VCMA_RING_BYTES((uint64_t)p->req_slots));
	memset(r->evh, 0, VCMA_EVT_BYTES((uint64_t)p->evt_slots));
	/* as Xen's SHARED_RING_INIT: each side wants a kick for the first index */
	r->req->req_event = 1;
	r->req->rsp_event = 1;
	r->evh->evt_event = 1;
	/* the layout is complete before a guest can see READY */
	vcma_store_release(&c->state, (uint32_t)VCMA_STATE_READY);
	return 0;
}

void vcma_ring_host_set_state(struct vcma_ring_host *r, enum vcma_ctrl_state st)
{
	if (!r->ctrl)
		return; /* no area laid out (a guest taken back after a restart, not back yet) */
	vcma_store_release(&r->ctrl->state, (uint32_t)st);
}

static int name_empty(const uint8_t *name)
{
	for (unsigned int i = 0; i < VCMA_NAME_LEN; i++)
		if (name[i])
			return 0;
	return 1;
}

int vcma_req_check(const struct vcma_req *q, const char **why)
{
	*why = NULL;
	if (q->op < VCMA_OP_HELLO || q->op > VCMA_OP_MAX)
		*why = "unknown op";
	else if (q->flags)
		*why = "nonzero flags";
	else {
		switch (q->op) {
		case VCMA_OP_HELLO:
			if (q->handle || q->length || (q->arg0 >> 32) || !name_empty(q->name))
				*why = "HELLO with nonzero unused fields";
			break;
		case VCMA_OP_ALLOC:
			if (q->handle || q->arg1)
				*why = "ALLOC with nonzero unused fields";
			else if (q->arg0 > 18)
				*why = "ALLOC alignment order above 18";
			else if (!vcma_name_field_ok((const char *)q->name, VCMA_NAME_LEN, true))
				*why = "ALLOC with a malformed pool name";
			break;
		case VCMA_OP_FREE:
			if (q->length || q->arg0 || q->arg1 || !name_empty(q->name))
				*why = "FREE with nonzero unused fields";
			break;
		case VCMA_OP_QUERY:
			if (q->length || q->arg0 || q->arg1)
				*why = "QUERY with nonzero unused fields";
			else if (q->handle ? !name_empty(q->name) : !vcma_name_field_ok((const char *)q->name, VCMA_NAME_LEN, true))
				*why = "QUERY with a malformed pool name";
			break;
		}
	}
	return *why ? -EPROTO : 0;
}

int vcma_ring_host_respond(struct vcma_ring_host *r, const struct vcma_rsp *rsp, bool *notify)
{
	if (!r->ctrl) { /* no area laid out (a guest taken back after a restart, not back yet) */
		*notify = false;
		return -ENODEV;
	}
	uint32_t old = r->rsp_prod_pvt;

	*notify = false;
	if (r->rsp_prod_pvt == r->req_cons)
		return -EINVAL;
	memcpy(&r->slot[r->rsp_prod_pvt & (r->slots - 1)].rsp, rsp, sizeof(*rsp));
	r->rsp_prod_pvt++;
	vcma_store_release(&r->req->rsp_prod, r->rsp_prod_pvt);
	vcma_mb();
	*notify = vcma_need_notify(old, r->rsp_prod_pvt, vcma_read_once(&r->req->rsp_event));
	return 0;
}

void vcma_ring_host_set_poll(struct vcma_ring_host *r, bool on)
{
	if (!r->ctrl)
		return;
	vcma_write_once(&r->req->req_poll, on ? 1u : 0u);
	vcma_mb(); /* closing: the 0 is visible before the caller reads req_prod */
}

uint32_t vcma_ring_host_pending(const struct vcma_ring_host *r)
{
	uint32_t prod, n;

	if (!r->ctrl)
		return 0; /* no area laid out (a guest taken back after a restart, not back yet) */
	prod = vcma_load_acquire(&r->req->req_prod);
	n = prod - r->req_cons;

	return n > r->slots ? r->slots : n;
}

int vcma_ring_host_process(struct vcma_ring_host *r, uint32_t budget, vcma_req_fn fn, void *ctx, bool *notify,
			   bool *more, const char **why)
{
	uint32_t prod, old = r->rsp_prod_pvt, n = 0;

	*notify = false;
	*more = false;
	*why = NULL;
	if (!r->ctrl)
		return 0; /* no area laid out (a guest taken back after a restart, not back yet) */
	/* read the producer index once; the slots it covers are read after it */
	prod = vcma_load_acquire(&r->req->req_prod);
	if (prod - r->rsp_prod_pvt > r->slots) {
		*why = "request ring overflow: req_prod runs more than a ring ahead of the responses";
		return -EPROTO;
	}
	while (r->req_cons != prod && n < budget) {
		struct vcma_req q;
		struct vcma_rsp rsp;

		vcma_copy_from_shared(&q, &r->slot[r->req_cons & (r->slots - 1)].req, sizeof(q));
		r->req_cons++;
		if (vcma_req_check(&q, why))
			return -EPROTO;
		memset(&rsp, 0, sizeof(rsp));
		rsp.id = q.id;
		n++;
		if (fn(ctx, &q, &rsp) == VCMA_RING_DEFERRED)
			continue;
		/* requests up to req_cons were consumed, so slot rsp_prod_pvt is free */
		memcpy(&r->slot[r->rsp_prod_pvt & (r->slots - 1)].rsp, &rsp, sizeof(rsp));
		r->rsp_prod_pvt++;
	}
	if (r->rsp_prod_pvt != old) {
		/* the responses' bytes are visible before the index that covers them */
		vcma_store_release(&r->req->rsp_prod, r->rsp_prod_pvt);
		vcma_mb(); /* publish rsp_prod before reading the guest's rsp_event */
		*notify = vcma_need_notify(old, r->rsp_prod_pvt, vcma_read_once(&r->req->rsp_event));
	}
	if (r->req_cons != prod) {
		*more = true;
		return (int)n;
	}
	/* ring.h's final check: ask for a kick, then look again for requests that
	 * raced with it */
	vcma_write_once(&r->req->req_event, r->req_cons + 1);
	vcma_mb();
	*more = vcma_load_acquire(&r->req->req_prod) != r->req_cons;
	return (int)n;
}

int vcma_ring_host_post_event(struct vcma_ring_host *r, const struct vcma_evt *e, bool *notify)
{
	if (!r->ctrl) { /* no area laid out (a guest taken back after a restart, not back yet) */
		*notify = false;
		return -ENODEV;
	}
	uint32_t cons = vcma_read_once(&r->evh->evt_cons), old = r->evt_prod_pvt;

	*notify = false;
	/* a garbage evt_cons reads as a full ring: events are dropped, never overwritten */
	if (r->evt_prod_pvt - cons >= r->evt_slots) {
		r->events_dropped++;
		return -ENOSPC;
	}
	memcpy(&r->evs[r->evt_prod_pvt & (r->evt_slots - 1)], e, sizeof(*e));
	r->evt_prod_pvt++;
	vcma_store_release(&r->evh->evt_prod, r->evt_prod_pvt);
	vcma_mb();
	*notify = vcma_need_notify(old, r->evt_prod_pvt, vcma_read_once(&r->evh->evt_event));
	return 0;
}
