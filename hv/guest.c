// SPDX-License-Identifier: MIT
/*
 * guest.c - one attached guest, whatever its link: its ring, its limits, its
 * requests; the guest table and the guests vcmad expects by name (guest.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "balloon.h"
#include "durable.h"
#include "guest.h"
#include "log.h"
#include "vacate.h"
#include "vcma_barrier.h"
#include "vcma_status.h"
#include "vcmad.h"
#include "vm.h"

#define GUEST_BUDGET 64u /* requests per turn, so no guest starves the others */

/* ---- the table ---- */

static void lazy_cb(struct vcma_timer *t);

int vcmad_guests_init(struct vcmad *d)
{
	struct vcmad_guests *gs = &d->guests;

	memset(gs, 0, sizeof(*gs));
	vcma_timer_init(&gs->lazy_timer, lazy_cb);
	gs->next_id = 1;
	gs->slot = calloc(d->conf.max_guests, sizeof(*gs->slot));
	return gs->slot ? 0 : -ENOMEM;
}

void vcmad_guests_fini(struct vcmad *d)
{
	struct vcmad_guests *gs = &d->guests;

	vcmad_guests_reap(d);
	for (uint32_t i = 0; i < gs->nknown; i++)
		free(gs->known[i]);
	free(gs->known);
	free(gs->slot);
	memset(gs, 0, sizeof(*gs));
}

struct vcmad_guest *vcmad_guest_find(struct vcmad *d, uint32_t id)
{
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guests.slot[i] && d->guests.slot[i]->id == id)
			return d->guests.slot[i];
	return NULL;
}

struct vcmad_guest *vcmad_guest_by_name(struct vcmad *d, const char *name)
{
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guests.slot[i] && !strcmp(d->guests.slot[i]->name, name))
			return d->guests.slot[i];
	return NULL;
}

/* A slot and an id. Every configured guest has a slot of its own; the others share
 * the rest of max_guests, so sim clients can never crowd out a configured guest. */
static int take_slot(struct vcmad *d, bool configured, uint32_t want, uint32_t *slot, uint32_t *id)
{
	struct vcmad_guests *gs = &d->guests;
	uint32_t i, others = 0;

	for (i = 0; i < d->conf.max_guests; i++)
		others += gs->slot[i] && !gs->slot[i]->conf;
	if (!configured && others + gs->nknown >= d->conf.max_guests)
		return -ENOSPC;
	for (i = 0; i < d->conf.max_guests && gs->slot[i]; i++)
		;
	if (i == d->conf.max_guests)
		return -ENOSPC;
	if (want) {
		if (want >= VCMAD_BALLOON_GUEST_BASE || vcmad_guest_find(d, want) || vcmad_vm_find(d, want))
			return -EEXIST;
		*slot = i;
		*id = want;
		if (gs->next_id <= want && want < VCMAD_BALLOON_GUEST_BASE - 1)
			gs->next_id = want + 1; /* new guests' ids follow the restored ones' */
		return 0;
	}
	/* ids above VCMAD_BALLOON_GUEST_BASE name balloon lenders in the frame map */
	for (uint32_t tries = 0; tries < VCMAD_BALLOON_GUEST_BASE; tries++) {
		uint32_t cand = gs->next_id;

		gs->next_id = gs->next_id >= VCMAD_BALLOON_GUEST_BASE - 1 ? 1 : gs->next_id + 1;
		if (!vcmad_guest_find(d, cand) && !vcmad_vm_find(d, cand)) {
			*slot = i;
			*id = cand;
			return 0;
		}
	}
	return -ENOSPC;
}

/* ---- allocations: the guest as a requester (alloc.h) ---- */

static struct vcmad_guest *guest_of_rq(struct vcmad_requester *rq)
{
	return (struct vcmad_guest *)((char *)rq - offsetof(struct vcmad_guest, rq));
}

static int rq_take(struct vcmad_requester *rq, struct vcma_region *r)
{
	struct vcmad_guest *g = guest_of_rq(rq);
	uint64_t bus;
	int rc = g->link->ops->place(g, r);

	if (!rc)
		g->link->ops->addr(g, r->mfn, &r->gpa, &bus);
	return rc;
}

static void rq_answer(struct vcmad_requester *rq, uint64_t tag, int err, const struct vcma_region *r)
{
	struct vcmad_guest *g = guest_of_rq(rq);
	struct vcma_rsp rsp = { .id = tag };

	rsp.status = vcma_errno_status(err);
	if (!err) {
		rsp.handle = r->handle;
		g->link->ops->addr(g, r->mfn, &rsp.gpa, &rsp.bus);
		rsp.length = r->nframes << VCMA_PAGE_SHIFT;
		g->stats.alloc_ok++;
	} else {
		g->stats.alloc_fail++;
	}
	if (g->sync_rsp && g->sync_id == tag) {
		*g->sync_rsp = rsp; /* answered while its request is being handled */
		g->sync_rsp = NULL;
		return;
	}
	vcmad_guest_respond(g, &rsp);
}

static void rq_release(struct vcmad_requester *rq, const struct vcma_region *r)
{
	struct vcmad_guest *g = guest_of_rq(rq);

	g->link->ops->clear(g, r);
}

static const struct vcmad_requester_ops guest_rq_ops = {
	.take = rq_take,
	.answer = rq_answer,
	.release = rq_release,
};

/* ---- lifecycle ---- */

/* A guest in a slot: id picked (want 0) or the one given (a restored guest's: -EEXIST
 * if taken); recorded as rec says, or as a new guest of l's kind. */
static struct vcmad_guest *guest_create(struct vcmad *d, struct vcmad_link *l, const char *name,
					const char *devclass, const struct vcmad_guest_conf *gc, uint32_t uid,
					uint32_t want, const struct vcmad_durable_guest *rec, int32_t *status)
{
	struct vcmad_guest *g = calloc(1, sizeof(*g));
	uint32_t slot;

	*status = VCMA_ST_NO_MEMORY;
	if (!g)
		return NULL;
	if (take_slot(d, gc != NULL, want, &slot, &g->id)) {
		*status = VCMA_ST_LIMIT;
		free(g);
		return NULL;
	}
	g->d = d;
	g->link = l;
	g->conf = gc;
	g->uid = uid;
	g->role = "guest";
	snprintf(g->name, sizeof(g->name), "%s", name);
	/* a configured guest's class is the config's */
	snprintf(g->devclass, sizeof(g->devclass), "%s", gc ? gc->devclass : devclass);
	vcmad_requester_init(&g->rq, d, &guest_rq_ops, g->id, g->name, g->devclass[0] ? g->devclass : NULL);
	if (gc && gc->quota && gc->quota < g->rq.max_bytes)
		g->rq.max_bytes = gc->quota; /* its own quota, below the global limit */
	g->tokens = d->conf.limits.burst;
	g->tokens_at = vcmad_now(d);
	d->guests.slot[slot] = g;
	d->guests.n++;
	if (rec) {
		vcmad_durable_guest_new(d, rec);
	} else {
		struct vcmad_durable_guest dg = { .id = g->id, .link = l->ops->kind, .uid = uid };

		snprintf(dg.name, sizeof(dg.name), "%s", g->name);
		snprintf(dg.class_name, sizeof(dg.class_name), "%s", g->devclass);
		vcmad_durable_guest_new(d, &dg);
	}
	*status = VCMA_ST_OK;
	return g;
}

struct vcmad_guest *vcmad_guest_new(struct vcmad *d, struct vcmad_link *l, const char *name, const char *devclass,
				    const struct vcmad_guest_conf *gc, uint32_t uid, int32_t *status)
{
	return guest_create(d, l, name, devclass, gc, uid, 0, NULL, status);
}

struct vcmad_guest *vcmad_guest_restore(struct vcmad *d, struct vcmad_link *l, const struct vcmad_durable_guest *rec,
					int32_t *status)
{
	return guest_create(d, l, rec->name, rec->class_name, vcmad_guest_known(d, rec->name), rec->uid, rec->id, rec,
			    status);
}

int vcmad_guest_ring_init(struct vcmad_guest *g, void *base, uint64_t size, uint64_t window_off, uint64_t window_size)
{
	const struct vcmad_limits *lim = &g->d->conf.limits;
	struct vcma_ring_params rp = {
		.req_slots = lim->ring_slots, .evt_slots = VCMA_DEFAULT_EVT_SLOTS,
		.max_regions = lim->max_regions, .max_bytes = g->rq.max_bytes,
		.window_off = window_off, .window_size = window_size,
		.guest_id = g->id, .generation = (uint32_t)(g->d->stats.attaches + 1),
		.no_lazy_free = !g->d->conf.lazy_free_ms,
	};

	return vcma_ring_host_init(&g->ring, base, size, &rp);
}

void vcmad_guest_started(struct vcmad_guest *g)
{
	g->d->stats.attaches++;
	/* requests may have been published before the link watched for kicks */
	vcmad_guest_run(g);
}

static void runq_remove(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	if (!g->queued)
		return;
	for (struct vcmad_guest **pp = &d->guests.runq; *pp; pp = &(*pp)->next_run)
		if (*pp == g) {
			*pp = g->next_run;
			break;
		}
	g->queued = false;
	g->next_run = NULL;
}

static void lazy_remove(struct vcmad_guest *g)
{
	if (!g->lazy_open)
		return;
	for (struct vcmad_guest **pp = &g->d->guests.lazy; *pp; pp = &(*pp)->next_lazy)
		if (*pp == g) {
			*pp = g->next_lazy;
			break;
		}
	g->lazy_open = false;
	g->next_lazy = NULL;
}

static void unslot(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	runq_remove(g);
	lazy_remove(g);
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guests.slot[i] == g)
			d->guests.slot[i] = NULL;
	d->guests.n--;
}

void vcmad_guest_discard(struct vcmad_guest *g)
{
	vcmad_durable_guest_gone(g->d, g->id);
	unslot(g);
	free(g->link_priv);
	free(g);
}

/* Out of the table; freed after this loop iteration, because later events of the
 * same epoll batch may still point at its watches. */
static void retire(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	unslot(g);
	g->dead = true;
	g->next_run = d->guests.zombies;
	d->guests.zombies = g;
}

void vcmad_guests_reap(struct vcmad *d)
{
	while (d->guests.zombies) {
		struct vcmad_guest *g = d->guests.zombies;

		d->guests.zombies = g->next_run;
		free(g->link_priv);
		free(g);
	}
}

void vcmad_guest_notify(struct vcmad_guest *g)
{
	int rc;

	if (g->dead)
		return;
	rc = g->link->ops->notify(g);
	if (rc == -EPERM)
		vcmad_guest_kill(g, "irq eventfd made blocking and held full");
	else if (rc)
		log_warn("guest %u (%s): irq: %s", g->id, g->name, strerror(-rc));
}

void vcmad_guest_kill(struct vcmad_guest *g, const char *why)
{
	struct vcmad *d = g->d;

	if (g->dead)
		return;
	d->stats.violations++;
	log_warn("guest %u (%s): protocol violation: %s; disconnecting", g->id, g->name, why);
	vcma_ring_host_set_state(&g->ring, VCMA_STATE_DEAD);
	g->link->ops->notify(g); /* the final irq; one the guest holds off is its loss */
	vcmad_guest_detach(g, "cut off");
}

void vcmad_guest_detach(struct vcmad_guest *g, const char *why)
{
	struct vcmad *d = g->d;
	uint64_t ram = g->vm ? g->vm->ctl.ram_frames : 0, seen = d->loop.woke_ns, now;
	int freed;

	if (g->dead)
		return;
	g->dead = true; /* nothing runs it from here on, whatever the calls below do */
	/* jobs that wait for this VM let go of it first; then what the guest asked for */
	if (g->vm)
		vcmad_vacate_vm_gone(g->vm);
	freed = vcmad_requester_gone(&g->rq);
	if (g->vm) {
		vcmad_vm_free(g->vm);
		g->vm = NULL;
	}
	vcmad_durable_guest_gone(d, g->id);
	g->link->ops->close(g, false);
	/* reclaimed: regions and RAM frames are free in the pools (zeroing them is the
	 * scrubber's, after); timed from the wake-up of the loop turn that saw it go */
	now = vcmad_now(d);
	if (freed > 0 || ram) {
		uint64_t ns = seen && seen <= now ? now - seen : 0;

		d->stats.reclaims++;
		d->stats.reclaimed_regions += (uint64_t)freed;
		d->stats.reclaimed_ram_frames += ram;
		d->stats.reclaim_last_ns = ns;
		vcma_hist_record(&d->stats.reclaim_latency, ns);
		log_info("guest %u (%s) detached (%s): %d region(s) freed, %llu RAM frame(s) reclaimed in %llu us",
			 g->id, g->name, why, freed, (unsigned long long)ram, (unsigned long long)(ns / 1000));
	} else {
		log_info("guest %u (%s) detached (%s): nothing to reclaim", g->id, g->name, why);
	}
	d->stats.detaches++;
	retire(g);
}

void vcmad_guest_abandon(struct vcmad_guest *g)
{
	if (g->dead)
		return;
	g->dead = true;
	log_info("guest %u (%s) left attached at exit: its %u region(s) and RAM stay as they are", g->id, g->name,
		 g->rq.nregions);
	if (g->vm) {
		vcmad_vacate_vm_gone(g->vm);
		vcmad_vm_abandon(g->vm); /* the bookkeeping goes, the memory stays */
		g->vm = NULL;
	}
	vcmad_requester_abandon(&g->rq);
	g->link->ops->close(g, true);
	retire(g);
}

uint32_t vcmad_guests_closing(struct vcmad *d)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < d->conf.max_guests; i++) {
		struct vcmad_guest *g = d->guests.slot[i];
		struct vcma_evt e = { .type = VCMA_EVT_SHUTDOWN };
		bool notify;

		if (!g || g->dead)
			continue;
		n++;
		vcma_ring_host_set_state(&g->ring, VCMA_STATE_CLOSING);
		if (g->features & VCMA_F_EVENTS)
			vcma_ring_host_post_event(&g->ring, &e, &notify);
		vcmad_guest_notify(g);
	}
	return n;
}

/* ---- requests ---- */

/* The wire name, already checked by vcma_req_check(): NUL-terminated or empty. */
static const char *wire_name(const struct vcma_req *q, char *buf)
{
	memcpy(buf, q->name, VCMA_NAME_LEN);
	buf[VCMA_NAME_LEN] = '\0';
	return buf[0] ? buf : NULL;
}

static void do_hello(struct vcmad_guest *g, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	uint32_t major = (uint32_t)(q->arg0 >> 16) & 0xffff;

	rsp->val[1] = (uint64_t)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR;
	if (major != VCMA_PROTO_MAJOR) {
		rsp->status = VCMA_ST_VERSION;
		return;
	}
	if (g->d->stop) {
		rsp->status = VCMA_ST_SHUTDOWN;
		return;
	}
	if (g->hello) {
		rsp->status = VCMA_ST_INVALID; /* features are negotiated once per attach */
		return;
	}
	g->features = q->arg1 & g->ring.ctrl->host_features;
	g->ring.ctrl->guest_features = g->features;
	g->hello = true;
	vcma_ring_host_set_state(&g->ring, VCMA_STATE_CONNECTED);
	rsp->val[0] = g->features;
	rsp->status = VCMA_ST_OK;
}

static int do_alloc(struct vcmad_guest *g, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	struct vcma_alloc_req req = { .bytes = q->length, .align_order = (unsigned int)q->arg0 };
	char name[VCMA_NAME_LEN + 1];

	req.pool = wire_name(q, name);
	if (req.pool && !(g->features & VCMA_F_NAMED_POOL)) {
		rsp->status = VCMA_ST_INVALID;
		return VCMA_RING_ANSWERED;
	}
	if (q->length == 0 || q->length > (1ull << 48)) {
		rsp->status = q->length ? VCMA_ST_TOO_BIG : VCMA_ST_INVALID;
		return VCMA_RING_ANSWERED;
	}
	if (g->link->ops->shape)
		g->link->ops->shape(g, &req);
	/* an answer that comes now fills rsp; one that waits for a vacate, or for the
	 * turn's commit (durable.h), is published later (vcmad_guest_respond) */
	g->sync_rsp = rsp;
	g->sync_id = q->id;
	vcmad_alloc(&g->rq, q->id, &req);
	if (g->sync_rsp) {
		g->sync_rsp = NULL;
		return VCMA_RING_DEFERRED;
	}
	return VCMA_RING_ANSWERED;
}

void vcmad_guest_respond(struct vcmad_guest *g, const struct vcma_rsp *rsp)
{
	bool notify;

	if (g->dead)
		return;
	if (vcma_ring_host_respond(&g->ring, rsp, &notify)) {
		log_err("guest %u (%s): no request waiting for a deferred answer", g->id, g->name);
		return;
	}
	if (notify)
		vcmad_guest_notify(g);
}

static void do_free(struct vcmad_guest *g, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	int rc = vcmad_free(&g->rq, q->handle);

	rsp->handle = q->handle;
	rsp->status = vcma_errno_status(rc);
	if (!rc)
		g->stats.frees++;
}

static void do_query(struct vcmad_guest *g, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	struct vcmad *d = g->d;

	g->stats.queries++;
	if (q->handle) {
		const struct vcma_region *r = vcma_core_lookup(&d->core, g->id, q->handle);

		if (!r) {
			rsp->status = VCMA_ST_NO_REGION;
			return;
		}
		rsp->handle = r->handle;
		g->link->ops->addr(g, r->mfn, &rsp->gpa, &rsp->bus);
		rsp->length = r->nframes << VCMA_PAGE_SHIFT;
		rsp->status = VCMA_ST_OK;
		return;
	}

	char name[VCMA_NAME_LEN + 1];
	const char *pname = wire_name(q, name);
	struct vcma_pool *p = NULL;
	struct vcma_pool_counts c;
	const struct vcma_guest_usage *u;
	struct vcma_requester who = { .guest = g->id, .name = g->name, .devclass = g->rq.devclass };

	if (pname && !(g->features & VCMA_F_NAMED_POOL)) {
		rsp->status = VCMA_ST_INVALID;
		return;
	}
	if (d->held.n)
		vcmad_free_release_held(d); /* a FREE taken before this QUERY is counted done */
	if (pname) {
		p = vcma_core_pool_by_name(&d->core, pname);
	} else {
		for (uint32_t i = 0; i < d->core.npools && !p; i++)
			if (d->core.pool[i]->cfg.mode == VCMA_POOL_SHARED)
				p = d->core.pool[i];
	}
	if (!p) {
		rsp->status = VCMA_ST_NO_POOL;
		return;
	}
	/* a pool bound to another guest or class is not this guest's to look at either */
	if (!vcma_pool_serves(p, &who)) {
		rsp->status = VCMA_ST_ACCESS;
		return;
	}
	vcma_pool_counts(p, &c);
	u = vcma_pool_usage(p, g->id);
	rsp->length = c.nframes << VCMA_PAGE_SHIFT;
	rsp->val[0] = (c.nframes - c.region - c.reserved) << VCMA_PAGE_SHIFT;
	rsp->val[1] = u ? u->bytes : 0;
	rsp->status = VCMA_ST_OK;
}

static int handle_req(void *ctx, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	struct vcmad_guest *g = ctx;

	g->stats.requests++;
	if (q->op == VCMA_OP_HELLO) {
		do_hello(g, q, rsp);
		return VCMA_RING_ANSWERED;
	}
	if (!g->hello) {
		rsp->status = VCMA_ST_NOT_READY;
		return VCMA_RING_ANSWERED;
	}
	if (g->d->stop) {
		rsp->status = VCMA_ST_SHUTDOWN;
		return VCMA_RING_ANSWERED;
	}
	switch (q->op) {
	case VCMA_OP_ALLOC: return do_alloc(g, q, rsp);
	case VCMA_OP_FREE: do_free(g, q, rsp); break;
	case VCMA_OP_QUERY: do_query(g, q, rsp); break;
	default: rsp->status = VCMA_ST_INTERNAL; break; /* vcma_req_check() let it through */
	}
	return VCMA_RING_ANSWERED;
}

static void refill(struct vcmad_guest *g)
{
	const struct vcmad_limits *l = &g->d->conf.limits;
	uint64_t now = vcmad_now(g->d);

	g->tokens += (double)(now - g->tokens_at) * 1e-9 * l->rate;
	if (g->tokens > l->burst)
		g->tokens = l->burst;
	g->tokens_at = now;
}

/* ---- PROTOCOL.md §4.9: looking at a ring without a kick ---- */

/* After a turn that took requests: req_poll stays open lazy_free_ms more. */
static void lazy_open(struct vcmad_guest *g, uint64_t now)
{
	struct vcmad *d = g->d;

	if (!(g->features & VCMA_F_LAZY_FREE) || !d->conf.lazy_free_ms || d->stop)
		return;
	g->lazy_until = now + (uint64_t)d->conf.lazy_free_ms * 1000000ull;
	if (g->lazy_open)
		return;
	g->lazy_open = true;
	g->next_lazy = d->guests.lazy;
	d->guests.lazy = g;
	vcma_ring_host_set_poll(&g->ring, true);
	if (!d->guests.lazy_timer.armed)
		vcma_timer_arm(&d->loop, &d->guests.lazy_timer, g->lazy_until);
}

/* The window's end (§4.9 host item 3): req_poll 0 and a full barrier, then what the
 * guest published meanwhile without a kick gets its turn now (not on the run queue:
 * a guest off the lazy list would not be taken before another requester). */
static void lazy_close(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	lazy_remove(g);
	vcma_ring_host_set_poll(&g->ring, false);
	if (g->dead || !vcma_ring_host_pending(&g->ring))
		return;
	d->guests.lazy_takes_closed++;
	runq_remove(g);
	vcmad_guest_run(g);
}

static void lazy_cb(struct vcma_timer *t)
{
	struct vcmad *d = (struct vcmad *)((char *)t - offsetof(struct vcmad, guests.lazy_timer));
	uint64_t now = vcmad_now(d), next = UINT64_MAX;
	struct vcmad_guest *g;

	/* a turn may detach guests and change the list: look again from the top after
	 * each window closed (a turn reopens its guest's, due after now) */
	for (;;) {
		for (g = d->guests.lazy; g; g = g->next_lazy)
			if (g->lazy_until <= now || d->stop)
				break;
		if (!g)
			break;
		lazy_close(g);
	}
	for (g = d->guests.lazy; g; g = g->next_lazy)
		if (g->lazy_until < next)
			next = g->lazy_until;
	if (next != UINT64_MAX)
		vcma_timer_arm(&d->loop, t, next);
}

void vcmad_guests_take_lazy(struct vcmad *d, const struct vcmad_guest *except)
{
	uint32_t pass;

	if (!d->guests.lazy || d->guests.in_lazy)
		return;
	d->guests.in_lazy = true;
	pass = ++d->guests.lazy_pass;
	/* a turn may detach guests and change the list: look again from the top after
	 * each, skipping the ones this pass ran */
	for (;;) {
		struct vcmad_guest *g;

		for (g = d->guests.lazy; g; g = g->next_lazy)
			if (g != except && !g->dead && g->lazy_pass != pass && vcma_ring_host_pending(&g->ring))
				break;
		if (!g)
			break;
		g->lazy_pass = pass;
		d->guests.lazy_takes_early++;
		runq_remove(g);
		vcmad_guest_run(g);
	}
	d->guests.in_lazy = false;
}

static void turn(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;
	const char *why;
	bool notify, more;
	int n;

	refill(g);
	n = vcma_ring_host_process(&g->ring, GUEST_BUDGET, handle_req, g, &notify, &more, &why);
	if (g->dead)
		return; /* a request's answer cut it off */
	if (n < 0) {
		vcmad_guest_kill(g, why);
		return;
	}
	if (notify)
		vcmad_guest_notify(g);
	if (g->dead)
		return; /* the notification cut it off */
	if (n) {
		d->last_active_ns = vcmad_now(d);
		lazy_open(g, d->last_active_ns);
	}
	g->tokens -= n ? n : 1; /* an empty kick costs a token too */
	if (g->tokens < 0) {
		vcmad_guest_kill(g, "flooding: requests above the configured request_rate/request_burst");
		return;
	}
	if (more && !g->queued) {
		g->queued = true;
		g->next_run = d->guests.runq;
		d->guests.runq = g;
	}
}

/* One turn. On a link that allows it, the FREEs the turn takes are held until its
 * answers and irq are out, and only then are their frames released and zeroed
 * (alloc.h). */
void vcmad_guest_run(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	if (g->dead)
		return;
	vcmad_guests_take_lazy(d, g);
	if (g->dead)
		return;
	if (!g->link->ops->hold_frees) {
		turn(g);
		return;
	}
	vcmad_free_hold(d);
	turn(g);
	vcmad_free_settle(d);
}

bool vcmad_guests_run_queued(struct vcmad *d)
{
	struct vcmad_guest *q = d->guests.runq;

	if (!q)
		return false;
	d->guests.runq = NULL;
	while (q) {
		struct vcmad_guest *g = q;

		q = g->next_run;
		g->queued = false;
		g->next_run = NULL;
		if (!g->dead)
			vcmad_guest_run(g);
	}
	return true;
}

void vcmad_guest_kicked(struct vcmad_guest *g)
{
	if (g->dead)
		return;
	g->stats.kicks++;
	if (!g->queued)
		vcmad_guest_run(g);
}

void vcmad_guest_kicks_read(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	if (g->dead || g->queued)
		return;
	vcma_mb(); /* the kick read before the ring's index */
	if (!vcma_ring_host_pending(&g->ring))
		return;
	g->queued = true;
	g->next_run = d->guests.runq;
	d->guests.runq = g;
}

/* ---- guests vcmad expects by name ---- */

const struct vcmad_guest_conf *vcmad_guest_known(const struct vcmad *d, const char *name)
{
	for (uint32_t i = 0; i < d->guests.nknown; i++)
		if (!strcmp(d->guests.known[i]->name, name))
			return d->guests.known[i];
	return NULL;
}

uint32_t vcmad_guests_known(const struct vcmad *d, enum vcmad_guest_kind kind)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < d->guests.nknown; i++)
		n += d->guests.known[i]->kind == kind;
	return n;
}

static struct vcmad_link *link_for(struct vcmad *d, enum vcmad_guest_kind kind)
{
	for (uint32_t i = 0; i < VCMAD_NLINKS; i++)
		if (d->links[i].ops && d->links[i].ops->kind == kind)
			return &d->links[i];
	return NULL;
}

int vcmad_guest_expect(struct vcmad *d, const struct vcmad_guest_conf *gc)
{
	struct vcmad_guests *gs = &d->guests;
	struct vcmad_link *l = link_for(d, gc->kind);
	struct vcmad_guest_conf *copy;
	int rc;

	if (vcmad_guest_known(d, gc->name))
		return -EEXIST;
	if (!l)
		return -EOPNOTSUPP;
	if (gs->nknown >= d->conf.max_guests)
		return -ENOSPC; /* each has a slot of its own */
	if (gs->nknown == gs->known_cap) {
		uint32_t cap = gs->known_cap ? 2 * gs->known_cap : 8;
		struct vcmad_guest_conf **k = realloc(gs->known, cap * sizeof(*k));

		if (!k)
			return -ENOMEM;
		gs->known = k;
		gs->known_cap = cap;
	}
	copy = malloc(sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	*copy = *gc;
	rc = l->ops->expect(l, copy);
	if (rc) {
		free(copy);
		return rc;
	}
	gs->known[gs->nknown++] = copy;
	return 0;
}

int vcmad_guest_forget(struct vcmad *d, const char *name)
{
	struct vcmad_guests *gs = &d->guests;

	for (uint32_t i = 0; i < gs->nknown; i++) {
		struct vcmad_guest_conf *gc = gs->known[i];
		struct vcmad_guest *g;

		if (strcmp(gc->name, name))
			continue;
		g = vcmad_guest_by_name(d, name);
		if (g && g->conf == gc)
			vcmad_guest_detach(g, "no longer expected");
		link_for(d, gc->kind)->ops->forget(link_for(d, gc->kind), gc);
		gs->known[i] = gs->known[--gs->nknown];
		free(gc);
		return 0;
	}
	return -ENOENT;
}
