// SPDX-License-Identifier: MIT
/*
 * ring.c - libvcma's ring engine: the guest side of docs/PROTOCOL.md §4.
 *
 * Every answer is copied out of shared memory once and only the copy is checked and
 * used (XSA-155, the netfront lesson: the guest does not trust the host either). The
 * private indices and geometry are never read back from shared memory. A host that
 * breaks the ring rules (§8.3) makes the attachment dead with -EIO; a DEAD state, a new
 * generation or a closed socket make it dead with -ECONNRESET. Dead is sticky. A closed
 * socket with a reattach token and the state not DEAD makes it lost instead (attach.c
 * takes it back): what was in flight fails with -ECONNRESET, and vl_lose() keeps the
 * FREEs among it to send again if the host still lists their regions.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "vcma_barrier.h"
#include "vcma_internal.h"

#define VL_IDX_MASK ((1ull << VL_ID_IDX_BITS) - 1)

uint64_t vl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t vl_deadline(const struct vcma *v)
{
	return v->timeout_ms ? vl_now_ns() + (uint64_t)v->timeout_ms * 1000000ull : 0;
}

void vl_lock(struct vcma *v)
{
	pthread_mutex_lock(&v->lock);
	while (atomic_load(&v->swaps))
		pthread_cond_wait(&v->swapped, &v->lock);
}

int vl_ring_init(struct vcma *v, const struct vcma_ctrl *c)
{
	/* at most max_outstanding entries are published, at most max_outstanding async ones
	 * wait for vcma_complete(), and one answered blocking call is being collected; after
	 * a reattach, the completions of the old ring not delivered yet come on top */
	uint32_t nreq = 2 * c->max_outstanding + 1 + v->ndone;
	struct vl_req *req = calloc(nreq, sizeof(*req));
	uint32_t *done = calloc(nreq, sizeof(*done));

	if (!req || !done) {
		free(req);
		free(done);
		return -ENOMEM;
	}
	/* only answered entries are left (vl_lose): the queued ones move, in order */
	for (uint32_t k = 0; k < v->ndone; k++) {
		req[k] = v->req[v->done[(v->done_head + k) % v->nreq]];
		done[k] = k;
	}
	free(v->req);
	free(v->done);
	v->req = req;
	v->done = done;
	v->nreq = nreq;
	v->done_head = 0;
	v->done_tail = v->ndone;
	v->nsent = 0;
	v->nposted = 0;
	v->alloc_pending = 0;

	v->ctrl = (struct vcma_ctrl *)v->shm;
	v->rh = (struct vcma_ring_hdr *)(v->shm + c->req_off);
	v->slot = vcma_req_slots(v->rh);
	v->eh = (struct vcma_evt_hdr *)(v->shm + c->evt_off);
	v->evs = vcma_evt_slots(v->eh);
	v->slots = c->req_slots;
	v->evt_slots = c->evt_slots;
	v->max_outstanding = c->max_outstanding;
	v->generation = c->generation;
	v->region_max = c->max_regions && c->max_regions < VL_MAX_REGIONS ? c->max_regions : VL_MAX_REGIONS;
	return 0;
}

void vl_ring_fini(struct vcma *v)
{
	free(v->req);
	free(v->done);
	free(v->region);
	free(v->refree);
	v->req = NULL;
	v->done = NULL;
	v->region = NULL;
	v->refree = NULL;
}

static void done_push(struct vcma *v, uint32_t idx)
{
	/* each queued entry is a distinct table entry, so the FIFO cannot overflow */
	v->done[v->done_tail] = idx;
	v->done_tail = (v->done_tail + 1) % v->nreq;
	v->ndone++;
}

static void entry_free(struct vl_req *e)
{
	memset(e, 0, sizeof(*e));
}

/* Every request in flight fails with err; async ones still get their completion, so
 * each submission is answered exactly once. With keep_frees, the FREEs nobody waits for
 * are owed again (a reattach); else they are dropped with the rest. */
static void fail_inflight(struct vcma *v, int err, bool keep_frees)
{
	for (uint32_t i = 0; i < v->nreq; i++) {
		struct vl_req *e = &v->req[i];

		switch (e->state) {
		case VL_SENT:
			e->result = err;
			e->state = VL_DONE;
			break;
		case VL_ASYNC:
			e->result = err;
			e->state = VL_DONE_ASYNC;
			done_push(v, i);
			break;
		case VL_INTERNAL:
		case VL_POSTED: /* always FREEs */
			if (keep_frees)
				vl_refree_add(v, e->handle, e->state == VL_POSTED);
			entry_free(e);
			break;
		case VL_ORPHAN: /* a FREE among them keeps its region in the table until answered */
			entry_free(e);
			break;
		default:
			break;
		}
	}
	v->nsent = 0;
	v->nposted = 0;
	v->alloc_pending = 0;
}

void vl_mark_dead(struct vcma *v, int err)
{
	if (v->dead)
		return;
	v->dead = err;
	/* the host frees a dead guest's regions itself (§8.2): nothing is owed */
	fail_inflight(v, err, false);
	v->nrefree = 0;
	vl_session_end(v);
	/* a closed socket would keep vcma_fd() readable for good */
	if (v->sock >= 0)
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, v->sock, NULL);
}

/* §3: read state and generation on every wake-up. 0, -ESHUTDOWN, or dead (or lost:
 * -ECONNRESET, and the old ring is not touched). */
static int state_check(struct vcma *v)
{
	uint32_t st, gen;

	if (v->dead)
		return v->dead;
	if (v->lost)
		return -ECONNRESET;
	st = vcma_load_acquire(&v->ctrl->state);
	gen = vcma_read_once(&v->ctrl->generation);
	if (gen != v->generation || st == VCMA_STATE_DEAD || st > VCMA_STATE_DEAD || st == VCMA_STATE_INIT ||
	    (st == VCMA_STATE_READY && v->connected)) {
		vl_mark_dead(v, -ECONNRESET);
		return v->dead;
	}
	return st == VCMA_STATE_CLOSING ? -ESHUTDOWN : 0;
}

int vl_usable(struct vcma *v)
{
	return state_check(v);
}

bool vl_room(const struct vcma *v)
{
	return v->nsent < v->max_outstanding;
}

static int kick(struct vcma *v)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is saturated, so a kick is pending already */
	if (write(v->kick_fd, &one, sizeof(one)) != (ssize_t)sizeof(one) && errno != EAGAIN && errno != EINTR)
		return -EIO;
	return 0;
}

/* Notify for what was published and not notified yet (§4.2 step 3 from req_notified,
 * §4.9 guest item 1). */
static void notify_published(struct vcma *v)
{
	if (vcma_need_notify(v->req_notified, v->req_prod_pvt, vcma_read_once(&v->rh->req_event)) && kick(v))
		vl_mark_dead(v, -EIO);
	v->req_notified = v->req_prod_pvt;
}

void vl_settle_kick(struct vcma *v)
{
	if (v->req_notified == v->req_prod_pvt || v->dead || v->lost)
		return;
	vcma_mb(); /* req_prod was published before; read req_event after it */
	notify_published(v);
}

int vl_publish(struct vcma *v, struct vcma_req *q, uint32_t state, uint64_t cookie)
{
	uint32_t idx;
	struct vl_req *e = NULL;

	if (v->dead)
		return v->dead;
	if (v->lost)
		return -ECONNRESET;
	if (!vl_room(v))
		return -EAGAIN;
	for (idx = 0; idx < v->nreq; idx++)
		if (v->req[idx].state == VL_FREE) {
			e = &v->req[idx];
			break;
		}
	if (!e)
		return -EAGAIN;
	e->id = (++v->seq << VL_ID_IDX_BITS) | idx;
	e->state = state;
	e->op = q->op;
	e->cookie = cookie;
	e->bytes = q->op == VCMA_OP_ALLOC ? q->length : 0;
	e->handle = q->handle;
	q->id = e->id;
	q->flags = 0;

	/* the whole slot, zeroes included (§4.2); the host reads it after req_prod */
	memcpy(&v->slot[v->req_prod_pvt & (v->slots - 1)].req, q, sizeof(*q));
	v->req_prod_pvt++;
	v->nsent++;
	if (q->op == VCMA_OP_ALLOC)
		v->alloc_pending++;
	if (state == VL_ASYNC)
		v->nasync++;
	vcma_store_release(&v->rh->req_prod, v->req_prod_pvt);
	vcma_mb(); /* publish req_prod before reading the host's req_event (or req_poll) */
	/* §4.9: a posted FREE needs no kick while the host says it will look by itself;
	 * req_notified stays below it, so the next notification covers it */
	if (state == VL_POSTED && q->op == VCMA_OP_FREE && (atomic_load(&v->features) & VCMA_F_LAZY_FREE) &&
	    vcma_read_once(&v->rh->req_poll))
		return (int)idx;
	notify_published(v);
	return (int)idx;
}

int vl_pace(struct vcma *v, bool wait, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = vl_now_ns();
		struct timespec ts;
		double need_ns;

		if (!v->rate)
			return 0;
		v->tokens += (double)(now - v->tokens_at) * 1e-9 * v->rate;
		if (v->tokens > v->burst)
			v->tokens = v->burst;
		v->tokens_at = now;
		if (v->tokens >= 1.0) {
			v->tokens -= 1.0;
			return 0;
		}
		if (!wait)
			return -EAGAIN;
		need_ns = (1.0 - v->tokens) * 1e9 / v->rate + 1;
		if (deadline_ns && now + (uint64_t)need_ns > deadline_ns)
			return -ETIMEDOUT;
		ts.tv_sec = (time_t)(need_ns / 1e9);
		ts.tv_nsec = (long)(need_ns - (double)ts.tv_sec * 1e9);
		nanosleep(&ts, NULL);
	}
}

/* A FREE the library sends on its own (an ALLOC nobody waits for any more, or a
 * malformed one). Best effort: without room the host reclaims it at detach. */
static void internal_free(struct vcma *v, uint64_t handle)
{
	struct vcma_req q;

	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_FREE;
	q.handle = handle;
	if (!v->dead && state_check(v) == 0 && vl_publish(v, &q, VL_INTERNAL, 0) >= 0 && v->rate)
		v->tokens -= 1.0; /* charged without waiting: these are rare */
}

/* §5.3: the checks an OK ALLOC answer must pass. */
static bool alloc_rsp_ok(const struct vcma *v, const struct vl_req *e, const struct vcma_rsp *r)
{
	if (!r->handle || !r->length || r->length % VCMA_PROTO_PAGE || r->length < e->bytes)
		return false;
	if (r->gpa % VCMA_PROTO_PAGE || r->bus % VCMA_PROTO_PAGE || r->gpa + r->length < r->gpa ||
	    r->bus + r->length < r->bus)
		return false;
	if (v->has_window && r->gpa != v->window_gpa + r->bus)
		return false;
	return true;
}

/* Match one answer (a private copy) to its request. -EIO: the host is broken. */
static int take(struct vcma *v, const struct vcma_rsp *r)
{
	uint64_t idx = r->id & VL_IDX_MASK, give_back = 0;
	struct vl_req *e;

	if (idx >= v->nreq)
		goto broken;
	e = &v->req[idx];
	if (e->id != r->id || (e->state != VL_SENT && e->state != VL_ASYNC && e->state != VL_ORPHAN &&
				e->state != VL_INTERNAL && e->state != VL_POSTED))
		goto broken;
	v->nsent--;
	e->rsp = *r;
	e->result = vcma_status_errno(r->status);
	if (e->op == VCMA_OP_ALLOC) {
		v->alloc_pending--;
		if (!e->result) {
			if (!alloc_rsp_ok(v, e, r)) {
				/* fails only this call (§8.3); give back whatever it names */
				e->result = -EIO;
				give_back = r->handle;
			} else if (e->state == VL_ORPHAN) {
				give_back = r->handle;
			} else {
				vl_region_add(v, r);
			}
		}
	} else if (e->state == VL_POSTED) {
		/* its region left the table when it was posted (a later ALLOC may already
		 * have been given the same handle back) */
		v->nposted--;
		if (e->result && !v->posted_err) {
			v->posted_err = e->result;
			v->posted_err_handle = e->handle;
		}
	} else if (e->op == VCMA_OP_FREE && (!e->result || e->result == -ENOENT)) {
		vl_region_del(v, e->handle);
	}
	switch (e->state) {
	case VL_SENT:
		e->state = VL_DONE;
		break;
	case VL_ASYNC:
		e->state = VL_DONE_ASYNC;
		done_push(v, (uint32_t)idx);
		break;
	default:
		entry_free(e);
		break;
	}
	/* after the entry settled: this may publish, or find the attachment dead */
	if (give_back)
		internal_free(v, give_back);
	return 0;
broken:
	vl_mark_dead(v, -EIO);
	return -EIO;
}

/* Take every published answer (§4.5): the count, or -EIO (the host is broken). */
static int harvest_ring(struct vcma *v)
{
	uint32_t rp;
	int rc, n = 0;

	/* read the producer index once; the slots it covers are read after it */
	rp = vcma_load_acquire(&v->rh->rsp_prod);
	if (rp - v->rsp_cons > v->req_prod_pvt - v->rsp_cons) {
		/* more answers than questions (also catches rsp_prod running backwards) */
		vl_mark_dead(v, -EIO);
		return -EIO;
	}
	while (v->rsp_cons != rp && !v->dead) {
		struct vcma_rsp r;

		vl_copy_in(&r, &v->slot[v->rsp_cons & (v->slots - 1)].rsp, sizeof(r));
		v->rsp_cons++;
		rc = take(v, &r);
		if (rc)
			return rc;
		n++;
	}
	return v->dead ? v->dead : n;
}

int vl_harvest(struct vcma *v)
{
	int rc = state_check(v);

	if (rc && rc != -ESHUTDOWN)
		return rc;
	return harvest_ring(v);
}

void vl_lose(struct vcma *v)
{
	uint32_t st;

	if (v->dead || v->lost)
		return;
	st = vcma_load_acquire(&v->ctrl->state);
	/* what the host answered before it went is done: an ALLOC answered OK is the
	 * caller's region. (Its unread events are lost with the ring; a region it took
	 * back is missing from the host's list, which is what the reattach goes by.) */
	if ((st == VCMA_STATE_CONNECTED || st == VCMA_STATE_CLOSING) &&
	    vcma_read_once(&v->ctrl->generation) == v->generation)
		harvest_ring(v);
	if (!v->dead)
		fail_inflight(v, -ECONNRESET, true);
}

void vl_drain_irq(struct vcma *v)
{
	uint64_t cnt;

	/* the fd is non-blocking: EAGAIN just means nothing was pending */
	if (read(v->irq_fd, &cnt, sizeof(cnt)) < 0)
		return;
}

void vl_wait_forget(struct vcma *v, int fd)
{
	if (fd < 0 || v->wait_ep < 0 || (fd != v->w_irq && fd != v->w_sock && fd != v->w_wake))
		return;
	epoll_ctl(v->wait_ep, EPOLL_CTL_DEL, fd, NULL);
	if (fd == v->w_irq)
		v->w_irq = -1;
	if (fd == v->w_sock)
		v->w_sock = -1;
	if (fd == v->w_wake)
		v->w_wake = -1;
}

/* Register what vl_wait waits for now (the fds change across a reattach); every fd
 * leaves the set before it is closed (vl_wait_forget). false: use poll() instead. */
static bool wait_set(struct vcma *v, int fd, int *reg, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	if (*reg == fd)
		return true;
	if (*reg >= 0)
		epoll_ctl(v->wait_ep, EPOLL_CTL_DEL, *reg, NULL);
	*reg = -1;
	if (fd < 0)
		return true;
	if (epoll_ctl(v->wait_ep, EPOLL_CTL_ADD, fd, &ev))
		return false;
	*reg = fd;
	return true;
}

static bool wait_sync(struct vcma *v)
{
	return v->wait_ep >= 0 && wait_set(v, v->irq_fd, &v->w_irq, EPOLLIN | EPOLLET) &&
	       wait_set(v, v->sock, &v->w_sock, EPOLLIN) && wait_set(v, v->wake_fd, &v->w_wake, EPOLLIN);
}

int vl_check_sock(struct vcma *v)
{
	char buf[256];
	ssize_t n;

	if (v->sock < 0 || v->dead)
		return v->dead ? v->dead : (v->lost ? -ECONNRESET : 0);
	n = recv(v->sock, buf, sizeof(buf), MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		vl_session_lost(v); /* the host closed: it detached us, or it went away */
	/* n > 0: vcmad sends nothing to a guest after attach; the datagram is dropped */
	return v->dead ? v->dead : (v->lost ? -ECONNRESET : 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* Sleep until an irq, the socket or the wake fd, at most ms (-1: no limit): > 0
 * woken (*sock_ready: the socket has something), 0 timed out, or -errno. One syscall:
 * the irq is edge-triggered, so nothing to read (the counter keeps counting;
 * vcma_complete() and vcma_next_event() still drain it for vcma_fd()'s level-triggered
 * set, and the irq of an answer found without waiting is one spurious wake-up later). */
static int wait_epoll(struct vcma *v, int ms, bool *sock_ready)
{
	struct epoll_event ev[3];
	int n = epoll_wait(v->wait_ep, ev, 3, ms);

	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++)
		*sock_ready |= v->sock >= 0 && ev[i].data.fd == v->sock;
	return n;
}

/* The same with poll(), when the epoll set could not be had: the irq is read. */
static int wait_poll(struct vcma *v, int ms, bool *sock_ready)
{
	struct pollfd pfd[3] = { { .fd = v->irq_fd, .events = POLLIN } };
	int n, nfds = 1, sock_i = -1;

	if (v->sock >= 0) {
		sock_i = nfds++;
		pfd[sock_i].fd = v->sock;
		pfd[sock_i].events = POLLIN;
	}
	if (v->wake_fd >= 0) {
		pfd[nfds].fd = v->wake_fd; /* drained by vcma_reattach_fds() once it has the lock */
		pfd[nfds].events = POLLIN;
		nfds++;
	}
	n = poll(pfd, (nfds_t)nfds, ms);
	if (n < 0)
		return -errno;
	if (pfd[0].revents)
		vl_drain_irq(v);
	*sock_ready = sock_i >= 0 && pfd[sock_i].revents;
	return n;
}

int vl_wait(struct vcma *v, uint64_t deadline_ns)
{
	bool sock_ready = false;
	uint64_t now;
	int n, ms;

	/* vcma_reattach_fds() is waiting for the lock: this ring is over */
	if (atomic_load(&v->swaps))
		return -ECONNRESET;
	/* whatever is waited for, posted FREEs published without a kick go with it (§4.9) */
	vl_settle_kick(v);
	n = vl_harvest(v);
	if (n)
		return n < 0 ? n : 0;
	if (v->spin_us) {
		uint64_t end = vl_now_ns() + (uint64_t)v->spin_us * 1000ull;

		do {
			for (int i = 0; i < 64; i++) {
				if (vcma_load_acquire(&v->rh->rsp_prod) != v->rsp_cons)
					return 0;
				cpu_relax();
			}
		} while (vl_now_ns() < end);
	}
	/* ring.h's final check: ask for an irq, then look again for answers (and a state
	 * change) that raced with it (§4.5 step 4) */
	vcma_write_once(&v->rh->rsp_event, v->rsp_cons + 1);
	vcma_mb();
	if (vcma_load_acquire(&v->rh->rsp_prod) != v->rsp_cons)
		return 0;
	n = state_check(v);
	if (n && n != -ESHUTDOWN)
		return n;

	now = vl_now_ns();
	if (!deadline_ns) {
		ms = -1;
	} else if (now >= deadline_ns) {
		return -ETIMEDOUT;
	} else {
		uint64_t left = (deadline_ns - now + 999999ull) / 1000000ull;

		ms = left > INT_MAX ? INT_MAX : (int)left;
	}
	n = wait_sync(v) ? wait_epoll(v, ms, &sock_ready) : wait_poll(v, ms, &sock_ready);
	if (n < 0)
		return n == -EINTR ? 0 : n;
	if (atomic_load(&v->swaps))
		return -ECONNRESET;
	if (n == 0)
		return deadline_ns && vl_now_ns() >= deadline_ns ? -ETIMEDOUT : 0;
	return sock_ready ? vl_check_sock(v) : 0;
}

/*
 * A wait that failed because the host went away (the handle is lost): the call that
 * noticed takes the handle back before it returns its error, up to its deadline, so a
 * caller that gives up on -ECONNRESET does not leave the reattach to a later call that
 * might come after the grace period. Returns rc.
 */
static int wait_failed(struct vcma *v, int rc, uint64_t deadline_ns)
{
	if (v->lost)
		vl_session_ready(v, deadline_ns, true);
	return rc;
}

int vl_call(struct vcma *v, struct vcma_req *q, struct vcma_rsp *rsp, uint64_t deadline)
{
	struct vl_req *e;
	int rc, idx;

	rc = vl_reserve(v, deadline);
	if (rc)
		return rc;
	idx = vl_publish(v, q, VL_SENT, 0);
	if (idx < 0)
		return idx;
	e = &v->req[idx];
	while (e->state == VL_SENT) {
		rc = vl_wait(v, deadline);
		if (rc && e->state == VL_SENT) {
			/* the answer may still come: keep the id reserved, drop the answer */
			e->state = VL_ORPHAN;
			return rc;
		}
	}
	/* VL_DONE: answered, or failed by vl_mark_dead() or vl_lose() */
	if (rsp)
		*rsp = e->rsp;
	rc = e->result;
	entry_free(e);
	return wait_failed(v, rc, deadline);
}

int vl_reserve(struct vcma *v, uint64_t deadline)
{
	int rc;

	for (;;) {
		rc = vl_session_ready(v, deadline, true);
		if (!rc)
			rc = vl_usable(v);
		if (rc)
			return rc;
		if (vl_room(v))
			break;
		/* the ring is full (posted FREEs, async requests): wait for answers */
		rc = vl_wait(v, deadline);
		if (rc)
			return wait_failed(v, rc, deadline);
	}
	return vl_pace(v, true, deadline);
}

int vl_post_free(struct vcma *v, uint64_t handle)
{
	struct vcma_req q;
	int idx;

	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_FREE;
	q.handle = handle;
	/* §5.4: the host takes it before anything published later, and notifying now
	 * (§4.2) lets it free the memory without waiting for the next call */
	idx = vl_publish(v, &q, VL_POSTED, 0);
	if (idx < 0)
		return idx;
	v->nposted++;
	return 0;
}

int vl_flush(struct vcma *v, uint64_t deadline)
{
	int rc = vl_session_ready(v, deadline, true);

	if (rc)
		return rc;
	/* FREEs still owed after a reattach go out as answers make room (none go out
	 * in CLOSING: the host frees them when the guest detaches) */
	while ((v->nposted || (v->nrefree && v->nsent)) && !v->dead) {
		rc = vl_wait(v, deadline);
		if (rc)
			return wait_failed(v, rc, deadline);
		vl_refree_send(v);
	}
	return v->dead;
}

void vl_refree_add(struct vcma *v, uint64_t handle, bool posted)
{
	if (v->nrefree == v->refree_cap) {
		uint32_t cap = v->refree_cap ? 2 * v->refree_cap : 16;
		struct vl_refree *r = realloc(v->refree, (size_t)cap * sizeof(*r));

		/* without memory the FREE is dropped: the region stays the guest's until it
		 * detaches, when the host frees it with the rest */
		if (!r)
			return;
		v->refree = r;
		v->refree_cap = cap;
	}
	v->refree[v->nrefree].handle = handle;
	v->refree[v->nrefree].posted = posted;
	v->nrefree++;
}

void vl_refree_send(struct vcma *v)
{
	while (v->nrefree && v->connected && state_check(v) == 0 && vl_room(v)) {
		struct vl_refree r = v->refree[--v->nrefree];
		struct vcma_req q;

		memset(&q, 0, sizeof(q));
		q.op = VCMA_OP_FREE;
		q.handle = r.handle;
		if (vl_publish(v, &q, r.posted ? VL_POSTED : VL_INTERNAL, 0) < 0) {
			v->nrefree++; /* still owed */
			return;
		}
		if (r.posted)
			v->nposted++;
		if (v->rate)
			v->tokens -= 1.0; /* charged without waiting, as internal FREEs are */
	}
}

/* ---- regions the library allocated ---- */

struct vl_region *vl_region_find(struct vcma *v, uint64_t handle)
{
	for (uint32_t i = 0; i < v->nregion; i++)
		if (v->region[i].handle == handle)
			return &v->region[i];
	return NULL;
}

/* Room in the table for one more ALLOC in flight, or -ENOBUFS / -ENOMEM. */
int vl_region_reserve(struct vcma *v)
{
	uint32_t need = v->nregion + v->alloc_pending + 1;

	if (need > v->region_max)
		return -ENOBUFS;
	if (need > v->region_cap) {
		uint32_t cap = v->region_cap ? v->region_cap : 16;
		struct vl_region *r;

		while (cap < need)
			cap *= 2;
		if (cap > v->region_max)
			cap = v->region_max;
		r = realloc(v->region, (size_t)cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		v->region = r;
		v->region_cap = cap;
	}
	return 0;
}

void vl_region_add(struct vcma *v, const struct vcma_rsp *rsp)
{
	struct vl_region *r;

	/* room was reserved before the ALLOC went out */
	if (v->nregion >= v->region_cap || vl_region_find(v, rsp->handle))
		return;
	r = &v->region[v->nregion++];
	r->handle = rsp->handle;
	r->gpa = rsp->gpa;
	r->bus = rsp->bus;
	r->size = rsp->length;
	r->map = NULL;
}

void vl_region_del(struct vcma *v, uint64_t handle)
{
	struct vl_region *r = vl_region_find(v, handle);

	if (r)
		*r = v->region[--v->nregion];
}

static int held_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct vcma_held_region *)a)->handle, y = ((const struct vcma_held_region *)b)->handle;

	return x < y ? -1 : x > y;
}

static int refree_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct vl_refree *)a)->handle, y = ((const struct vl_refree *)b)->handle;

	return x < y ? -1 : x > y;
}

/* The host's list, sorted by handle and checked: a private copy in *out. */
static int held_sorted(const struct vcma_held_region *held, size_t n, struct vcma_held_region **out)
{
	struct vcma_held_region *list = malloc(n * sizeof(*list));

	*out = list;
	if (!list)
		return -ENOMEM;
	memcpy(list, held, n * sizeof(*list));
	if (n > 1)
		qsort(list, n, sizeof(*list), held_cmp);
	for (size_t i = 0; i < n; i++)
		if (!list[i].handle || !list[i].size || list[i].size % VCMA_PROTO_PAGE || list[i].bus % VCMA_PROTO_PAGE ||
		    (i && list[i].handle == list[i - 1].handle))
			return -EIO;
	return 0;
}

/* Held regions the list names stay (known[] marks them); the others go, unmapped. */
static int held_keep(struct vcma *v, const struct vcma_held_region *list, size_t n, bool *known)
{
	for (uint32_t i = v->nregion; i-- > 0;) {
		struct vl_region *r = &v->region[i];
		struct vcma_held_region key = { .handle = r->handle };
		const struct vcma_held_region *h = n ? bsearch(&key, list, n, sizeof(*list), held_cmp) : NULL;

		if (h) {
			/* the same handle must be the same region (§9.1): else the host is broken */
			if (h->bus != r->bus || h->size != r->size)
				return -EIO;
			known[h - list] = true;
			continue;
		}
		if (r->map && v->unmap)
			v->unmap(v->map_ctx, r->map, r->size);
		*r = v->region[--v->nregion]; /* from the end: already visited */
	}
	return 0;
}

int vl_region_reconcile(struct vcma *v, const struct vcma_held_region *held, size_t n)
{
	struct vcma_held_region *list = NULL;
	struct vl_refree *owed = NULL;
	bool *known = NULL;
	size_t nowed = 0;
	int rc = 0;

	if (n) {
		known = calloc(n, sizeof(*known));
		owed = malloc(n * sizeof(*owed));
		rc = held_sorted(held, n, &list);
		if (!rc && (!known || !owed))
			rc = -ENOMEM;
		if (rc)
			goto out;
	}
	rc = held_keep(v, list, n, known);
	if (rc)
		goto out;
	/* listed and not held: an ALLOC the host granted and never answered, or a FREE it
	 * did not take; a FREE owed before (posted or not) stays what it was */
	if (v->nrefree > 1)
		qsort(v->refree, v->nrefree, sizeof(*v->refree), refree_cmp);
	for (size_t i = 0; i < n; i++) {
		struct vl_refree key = { .handle = list[i].handle };
		const struct vl_refree *old;

		if (known[i])
			continue;
		old = v->nrefree ? bsearch(&key, v->refree, v->nrefree, sizeof(*v->refree), refree_cmp) : NULL;
		owed[nowed].handle = list[i].handle;
		owed[nowed].posted = old && old->posted;
		nowed++;
	}
	/* owed FREEs the list leaves out took effect */
	free(v->refree);
	v->refree = owed;
	v->nrefree = (uint32_t)nowed;
	v->refree_cap = (uint32_t)n;
	owed = NULL;
out:
	free(list);
	free(known);
	free(owed);
	return rc;
}
