// SPDX-License-Identifier: MIT
/*
 * guest.c - one attached guest: its ring, its limits, its requests.
 *
 * Requests reach the core only as validated private copies (ring.c). Limits checked
 * here: live regions and bytes per guest (VCMA_ST_LIMIT), and a token bucket on
 * requests and kicks; a guest that runs the bucket dry is flooding and is cut off.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "peerfd.h"
#include "vcma_status.h"
#include "vcmad.h"

#define GUEST_BUDGET 64u /* requests per turn, so no guest starves the others */
#define VMM_PAGE_BUDGET 65536u /* pages named by a VMM's messages per turn, likewise */

struct vcmad_guest *vcmad_guest_find(struct vcmad *d, uint32_t id)
{
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guest[i] && d->guest[i]->id == id)
			return d->guest[i];
	return NULL;
}

struct vcmad_guest *vcmad_guest_by_name(struct vcmad *d, const char *name)
{
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guest[i] && !strcmp(d->guest[i]->name, name))
			return d->guest[i];
	return NULL;
}

int vcmad_guest_slot(struct vcmad *d, bool configured, uint32_t *slot, uint32_t *id)
{
	uint32_t i, others = 0;

	for (i = 0; i < d->conf.max_guests; i++)
		others += d->guest[i] && !d->guest[i]->conf;
	if (!configured && others >= d->conf.max_guests - d->conf.nguests)
		return -ENOSPC;
	for (i = 0; i < d->conf.max_guests && d->guest[i]; i++)
		;
	if (i == d->conf.max_guests)
		return -ENOSPC;
	for (uint32_t tries = 0; tries < VCMA_GUEST_MAX; tries++) {
		uint32_t cand = d->next_id;

		d->next_id = d->next_id >= VCMA_GUEST_MAX ? 1 : d->next_id + 1;
		if (!vcmad_guest_find(d, cand)) {
			*slot = i;
			*id = cand;
			return 0;
		}
	}
	return -ENOSPC;
}

void vcmad_guest_notify(struct vcmad_guest *g)
{
	int rc;

	if (g->irq_fd < 0 || g->irq_stuck)
		return;
	/* a full counter on a non-blocking fd is an irq already pending, which is all
	 * an irq means; a write that would sleep is the peer's doing (peerfd.h) */
	rc = vcmad_peerfd_signal(g->irq_fd);
	if (rc == -EPERM) {
		g->irq_stuck = true; /* no final irq either: it would stall again */
		vcmad_guest_kill(g, "irq eventfd made blocking and held full");
	} else if (rc) {
		log_warn("guest %u (%s): irq eventfd: %s", g->id, g->name, strerror(-rc));
	}
}

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

/* Where region r appears to g: sim, above its RAM at window_gpa + machine address;
 * qemu, at its offset in BAR2's DMA window (gpa = bus, PROTOCOL.md §9.2). */
static void region_addr(const struct vcmad_guest *g, uint64_t mfn, uint64_t *gpa, uint64_t *bus)
{
	if (g->ivs) {
		*gpa = *bus = vcmad_ivshmem_offset(g->d, mfn);
		return;
	}
	*bus = mfn << VCMA_PAGE_SHIFT;
	*gpa = g->window_gpa + *bus;
}

/* Clear a region's memory: the machine frames, and for a qemu guest its window range. */
static int region_clear(struct vcmad_guest *g, uint64_t mfn, uint64_t n)
{
	struct vcmad *d = g->d;
	int rc = d->be.ops->zero(&d->be, mfn, n);

	if (!rc && g->ivs)
		rc = vcmad_ivshmem_clear(g, mfn, n);
	return rc;
}

int vcmad_guest_take_region(struct vcmad_guest *g, struct vcma_region *r, struct vcma_rsp *rsp)
{
	struct vcmad *d = g->d;
	uint64_t bus;
	int rc;

	/* whatever the frames (or the guest's window) held before, the guest gets zeros */
	rc = region_clear(g, r->mfn, r->nframes);
	if (rc) {
		log_err("guest %u (%s): cannot clear region at mfn %#llx: %s", g->id, g->name,
			(unsigned long long)r->mfn, strerror(-rc));
		vcma_core_free(&d->core, g->id, r->handle);
		return -EIO;
	}
	region_addr(g, r->mfn, &r->gpa, &bus);
	vcma_regions_set_gpa(&d->core.regions, g->id, r->handle, r->gpa);
	g->nregions++;
	g->bytes += r->nframes << VCMA_PAGE_SHIFT;
	g->stats.alloc_ok++;
	rsp->status = VCMA_ST_OK;
	rsp->handle = r->handle;
	rsp->gpa = r->gpa;
	rsp->bus = bus;
	rsp->length = r->nframes << VCMA_PAGE_SHIFT;
	return 0;
}

static int do_alloc(struct vcmad_guest *g, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	struct vcmad *d = g->d;
	struct vcma_requester who = { .guest = g->id, .name = g->name, .devclass = g->devclass[0] ? g->devclass : NULL };
	struct vcma_alloc_req req = { .bytes = q->length, .align_order = (unsigned int)q->arg0 };
	struct vcma_alloc_plan plan;
	struct vcma_region r;
	char name[VCMA_NAME_LEN + 1];
	uint64_t bytes = (q->length + VCMA_PAGE_SIZE - 1) & ~(uint64_t)(VCMA_PAGE_SIZE - 1);
	int rc;

	req.pool = wire_name(q, name);
	if (req.pool && !(g->features & VCMA_F_NAMED_POOL)) {
		rsp->status = VCMA_ST_INVALID;
		return VCMA_RING_ANSWERED;
	}
	if (q->length == 0 || q->length > (1ull << 48)) {
		rsp->status = q->length ? VCMA_ST_TOO_BIG : VCMA_ST_INVALID;
		return VCMA_RING_ANSWERED;
	}
	/* limits count what is promised as well as what is granted: ALLOCs waiting for
	 * a vacate hold their share (g->bytes + g->pending_bytes <= max_bytes) */
	if (g->nregions + g->pending_allocs >= d->conf.limits.max_regions ||
	    bytes > d->conf.limits.max_bytes - g->bytes - g->pending_bytes) {
		rsp->status = VCMA_ST_LIMIT;
		g->stats.alloc_fail++;
		return VCMA_RING_ANSWERED;
	}
	rc = vcma_core_alloc_begin(&d->core, &who, &req, &plan);
	if (!rc && plan.w.nlent_free + plan.w.nlent_used) {
		/* lent frames in the window: answer when they are vacated */
		rc = vcmad_vacate_start(g, q->id, &plan);
		if (!rc)
			return VCMA_RING_DEFERRED;
		vcma_core_alloc_abort(&d->core, &plan);
	} else if (!rc) {
		rc = vcma_core_alloc_finish(&d->core, &plan, &r);
		if (rc == -EBUSY)
			vcma_core_alloc_abort(&d->core, &plan);
	}
	if (!rc)
		rc = vcmad_guest_take_region(g, &r, rsp);
	if (rc) {
		rsp->status = vcma_errno_status(rc);
		g->stats.alloc_fail++;
		return VCMA_RING_ANSWERED;
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

static int free_region(struct vcmad_guest *g, uint64_t handle)
{
	struct vcmad *d = g->d;
	const struct vcma_region *r = vcma_core_lookup(&d->core, g->id, handle);
	uint64_t mfn, n;
	int rc;

	if (!r)
		return -ENOENT;
	mfn = r->mfn;
	n = r->nframes;
	rc = vcma_core_free(&d->core, g->id, handle);
	if (rc)
		return rc;
	/* release the memory; the next owner gets zeros either way */
	region_clear(g, mfn, n);
	g->nregions--;
	g->bytes -= n << VCMA_PAGE_SHIFT;
	return 0;
}

static void do_free(struct vcmad_guest *g, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	int rc = free_region(g, q->handle);

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
		region_addr(g, r->mfn, &rsp->gpa, &rsp->bus);
		rsp->length = r->nframes << VCMA_PAGE_SHIFT;
		rsp->status = VCMA_ST_OK;
		return;
	}

	char name[VCMA_NAME_LEN + 1];
	const char *pname = wire_name(q, name);
	struct vcma_pool *p = NULL;
	struct vcma_pool_counts c;
	const struct vcma_guest_usage *u;

	if (pname && !(g->features & VCMA_F_NAMED_POOL)) {
		rsp->status = VCMA_ST_INVALID;
		return;
	}
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
	struct vcma_requester who = { .guest = g->id, .name = g->name, .devclass = g->devclass[0] ? g->devclass : NULL };

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
	if (q->op == VCMA_OP_ALLOC || q->op == VCMA_OP_FREE) {
		g->d->last_alloc_ns = vcma_now_ns();
		vcmad_relend_kick(g->d);
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
	uint64_t now = vcma_now_ns();

	g->tokens += (double)(now - g->tokens_at) * 1e-9 * l->rate;
	if (g->tokens > l->burst)
		g->tokens = l->burst;
	g->tokens_at = now;
}

/* One turn: up to GUEST_BUDGET requests. */
void vcmad_guest_run(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;
	const char *why;
	bool notify, more;
	int n;

	refill(g);
	n = vcma_ring_host_process(&g->ring, GUEST_BUDGET, handle_req, g, &notify, &more, &why);
	if (n < 0) {
		vcmad_guest_kill(g, why);
		return;
	}
	if (notify)
		vcmad_guest_notify(g);
	if (g->dead)
		return; /* the notification cut it off */
	if (n)
		d->last_active_ns = vcma_now_ns();
	g->tokens -= n ? n : 1; /* an empty kick costs a token too */
	if (g->tokens < 0) {
		vcmad_guest_kill(g, "flooding: requests above the configured request_rate/request_burst");
		return;
	}
	if (more && !g->queued) {
		g->queued = true;
		g->next_run = d->runq;
		d->runq = g;
	}
}

void vcmad_guest_kick_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_guest *g = (struct vcmad_guest *)((char *)w - offsetof(struct vcmad_guest, kick_w));
	uint64_t cnt;
	int rc;

	if (g->dead)
		return;
	/* never blocks, whatever the peer did to the fd; a kick it consumed itself
	 * reads as none, and the turn below costs a token like any empty kick */
	rc = vcmad_peerfd_drain(g->kick_fd, &cnt);
	if (rc == -EPERM) {
		vcmad_guest_kill(g, "kick eventfd made blocking and drained by the guest");
		return;
	}
	if (rc) {
		vcmad_guest_detach(g, "kick eventfd failed");
		return;
	}
	g->stats.kicks++;
	if (!g->queued)
		vcmad_guest_run(g);
}

void vcmad_guest_sock_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_guest *g = (struct vcmad_guest *)((char *)w - offsetof(struct vcmad_guest, sock_w));
	static char buf[VCMA_SIM_MSG_MAX + 8];
	const char *why;
	ssize_t n;

	if (g->dead)
		return;
	/* drain: a VMM may have sent several messages; but per turn at most 64, and
	 * only until they named VMM_PAGE_BUDGET pages: what is left waits for the next
	 * turn (level-triggered), so a VMM that floods its channel delays itself only */
	for (uint64_t i = 0, pages = 0; i < 64 && pages < VMM_PAGE_BUDGET && !g->dead; i++) {
		n = recv(g->sock, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			vcmad_guest_detach(g, n == 0 ? "connection closed" : "connection error");
			return;
		}
		if ((size_t)n > VCMA_SIM_MSG_MAX) {
			vcmad_guest_kill(g, "oversized message on the attach socket");
			return;
		}
		if (vcmad_vmm_message(g, buf, (size_t)n, &why)) {
			vcmad_guest_kill(g, why);
			return;
		}
		/* checked: the runs are inside RAM and disjoint */
		for (uint32_t r = 0; r < ((const struct vcma_sim_msg *)buf)->count; r++)
			pages += ((const struct vcma_sim_msg *)buf)->run[r].count;
	}
	if (!g->dead && (events & (EPOLLERR | EPOLLHUP)))
		vcmad_guest_detach(g, "connection closed");
}

void vcmad_guest_close_io(struct vcmad_guest *g)
{
	if (g->shm)
		munmap(g->shm, g->shm_size);
	if (g->shm_fd >= 0)
		close(g->shm_fd);
	if (g->kick_fd >= 0)
		close(g->kick_fd);
	if (g->irq_fd >= 0)
		close(g->irq_fd);
	if (g->sock >= 0)
		close(g->sock);
	g->shm = NULL;
	g->shm_fd = g->kick_fd = g->irq_fd = g->sock = -1;
}

void vcmad_guest_kill(struct vcmad_guest *g, const char *why)
{
	struct vcmad *d = g->d;

	if (g->dead)
		return;
	d->stats.violations++;
	log_warn("guest %u (%s): protocol violation: %s; disconnecting", g->id, g->name, why);
	vcma_ring_host_set_state(&g->ring, VCMA_STATE_DEAD);
	vcmad_guest_notify(g);
	vcmad_guest_detach(g, "cut off");
}

/* Off the run queue and out of the guest table; freed after this loop iteration,
 * because later events of the same epoll batch may still point at its watches. */
static void guest_unlink(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	for (struct vcmad_guest **pp = &d->runq; *pp; pp = &(*pp)->next_run)
		if (*pp == g) {
			*pp = g->next_run;
			break;
		}
	vcma_loop_del(&d->loop, &g->kick_w);
	vcma_loop_del(&d->loop, &g->sock_w);
	vcmad_guest_close_io(g);
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guest[i] == g)
			d->guest[i] = NULL;
	d->nguests--;
	g->dead = true;
	g->next_run = d->zombies;
	d->zombies = g;
}

void vcmad_guest_abandon(struct vcmad_guest *g)
{
	if (g->dead)
		return;
	vcmad_vacate_guest_gone(g);
	log_info("guest %u (%s) left attached at exit: its %u region(s) and RAM stay as they are", g->id, g->name,
		 g->nregions);
	/* the bookkeeping goes, the memory stays: no region freed, nothing zeroed */
	free(g->p2m);
	free(g->gflags);
	g->p2m = NULL;
	g->gflags = NULL;
	if (g->ivs)
		vcmad_ivshmem_forget(g);
	guest_unlink(g);
}

void vcmad_guest_detach(struct vcmad_guest *g, const char *why)
{
	struct vcmad *d = g->d;
	int freed;

	if (g->dead)
		return;
	/* jobs that wait for this guest, or that it asked for, let go of it first */
	vcmad_vacate_guest_gone(g);
	/* off the run queue first: nothing may run this guest again */
	for (struct vcmad_guest **pp = &d->runq; *pp; pp = &(*pp)->next_run)
		if (*pp == g) {
			*pp = g->next_run;
			g->queued = false;
			break;
		}
	freed = 0;
	for (uint32_t cursor = 0;;) {
		const struct vcma_region *r = vcma_regions_next(&d->core.regions, &cursor);

		if (!r)
			break;
		if (r->guest == g->id && !free_region(g, r->handle))
			freed++;
	}
	vcmad_lend_release(g);
	if (g->ivs)
		vcmad_ivshmem_detached(g);
	log_info("guest %u (%s) detached (%s): %d region(s) freed, %llu RAM frame(s) reclaimed", g->id, g->name, why,
		 freed, (unsigned long long)g->ram_frames);
	d->stats.detaches++;
	guest_unlink(g);
}
