// SPDX-License-Identifier: MIT
/*
 * api.c - libvcma's public calls (vcma.h) on top of the ring engine.
 *
 * Each call takes the handle's mutex for its whole duration (vl_lock); a blocking call
 * keeps it while it waits for the host, so calls on one handle run one at a time (use
 * one handle per thread, or the async API, for concurrency). The mapper runs under the
 * mutex too and must not call back into libvcma for the same handle.
 *
 * A handle whose host went away is taken back (vl_ready) at the start of each call:
 * blocking calls wait for it up to their timeout, event-loop calls take the steps that
 * are due and do not sleep.
 *
 * Arguments are checked before anything is sent: the host disconnects a guest that
 * puts a malformed name, an alignment order above 18 or garbage in an unused field on
 * the ring (docs/PROTOCOL.md §8.2), so such calls fail here with -EINVAL instead.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "vcma_barrier.h"
#include "vcma_internal.h"
#include "vcma_name.h"

/* Pool names on the wire: empty, or 1..15 of [A-Za-z0-9_.-], NUL-padded (§5.1). */
static int wire_name(uint8_t name[VCMA_NAME_LEN], const char *pool)
{
	size_t n;

	memset(name, 0, VCMA_NAME_LEN);
	if (!pool)
		return 0;
	n = strnlen(pool, VCMA_NAME_LEN);
	if (!vcma_name_ok(pool, n, VCMA_NAME_LEN))
		return -EINVAL;
	memcpy(name, pool, n);
	return 0;
}

static int alloc_req(struct vcma_req *q, uint64_t bytes, unsigned int align_order, const char *pool)
{
	memset(q, 0, sizeof(*q));
	if (!bytes || align_order > VL_MAX_ALIGN_ORDER)
		return -EINVAL;
	q->op = VCMA_OP_ALLOC;
	q->length = bytes;
	q->arg0 = align_order;
	return wire_name(q->name, pool);
}

static void info_from(struct vcma_region_info *out, const struct vcma_rsp *r, void *map)
{
	out->handle = r->handle;
	out->gpa = r->gpa;
	out->bus = r->bus;
	out->size = r->length;
	out->map = map;
}

/* Unmap a region the library mapped; the caller is about to free it. */
static void region_unmap(struct vcma *v, uint64_t handle)
{
	struct vl_region *r = vl_region_find(v, handle);

	if (r && r->map) {
		if (v->unmap)
			v->unmap(v->map_ctx, r->map, r->size);
		r->map = NULL;
	}
}

static int free_locked(struct vcma *v, uint64_t handle)
{
	struct vcma_req q;

	region_unmap(v, handle);
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_FREE;
	q.handle = handle;
	return vl_call(v, &q, NULL, vl_deadline(v));
}

int vcma_alloc(struct vcma *v, uint64_t bytes, unsigned int align_order, uint32_t flags, const char *pool,
	       struct vcma_region_info *out)
{
	struct vcma_region_info info;
	struct vcma_req q;
	struct vcma_rsp r;
	uint64_t deadline;
	int rc;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!v || (flags & ~VCMA_ALLOC_MAP))
		return -EINVAL;
	rc = alloc_req(&q, bytes, align_order, pool);
	if (rc)
		return rc;
	vl_lock(v);
	deadline = vl_deadline(v);
	if ((flags & VCMA_ALLOC_MAP) && !v->map) {
		rc = -EOPNOTSUPP; /* nothing was asked of the host */
		goto out;
	}
	rc = vl_ready(v, deadline, true);
	if (!rc)
		rc = vl_usable(v);
	if (!rc)
		rc = vl_region_reserve(v);
	if (!rc)
		rc = vl_call(v, &q, &r, deadline);
	if (rc)
		goto out;
	info_from(&info, &r, NULL);
	if (flags & VCMA_ALLOC_MAP) {
		struct vl_region *reg = vl_region_find(v, r.handle); /* recorded when it arrived */
		void *addr = NULL;

		rc = v->map(v->map_ctx, r.gpa, r.bus, r.length, &addr);
		if (rc > 0)
			rc = -rc;
		if (!rc && !addr)
			rc = -EIO;
		if (rc) {
			free_locked(v, r.handle); /* nothing leaks; if this fails, detach retries */
			goto out;
		}
		if (reg)
			reg->map = addr;
		info.map = addr;
	}
	if (out)
		*out = info;
out:
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/*
 * A posted FREE (vcma.h): only for a region this handle holds, so the caller's
 * mistakes (a handle it never had, or freed already) still get their -ENOENT now.
 * The room and the rate token come first: a FREE that cannot be sent in time leaves
 * the region held and mapped, as if the call had not been made.
 */
int vcma_free(struct vcma *v, uint64_t handle)
{
	uint64_t deadline;
	int rc;


	if (!v)
		return -EINVAL;
	vl_lock(v);
	deadline = vl_deadline(v);
	/* a reattach first: it may forget the region (the host no longer has it) */
	rc = vl_ready(v, deadline, true);
	if (rc)
		goto out;
	if (!handle || !vl_region_find(v, handle)) {
		rc = free_locked(v, handle);
		goto out;
	}
	rc = vl_reserve(v, deadline);
	if (rc)
		goto out;
	region_unmap(v, handle);
	vl_region_del(v, handle);
	rc = vl_post_free(v, handle); /* fails only if the attachment is dead: so is the region */
out:
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int vcma_free_sync(struct vcma *v, uint64_t handle)
{
	int rc;

	if (!v)
		return -EINVAL;
	vl_lock(v);
	rc = free_locked(v, handle);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int vcma_flush(struct vcma *v, uint64_t *handle)
{
	int rc;

	if (handle)
		*handle = 0;
	if (!v)
		return -EINVAL;
	vl_lock(v);
	rc = vl_flush(v, vl_deadline(v));
	if (!rc && v->posted_err) {
		rc = v->posted_err;
		if (handle)
			*handle = v->posted_err_handle;
		v->posted_err = 0;
		v->posted_err_handle = 0;
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int vcma_query_region(struct vcma *v, uint64_t handle, struct vcma_region_info *out)
{
	struct vcma_req q;
	struct vcma_rsp r;
	int rc;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!v || !out || !handle)
		return -EINVAL;
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_QUERY;
	q.handle = handle;
	vl_lock(v);
	rc = vl_call(v, &q, &r, vl_deadline(v));
	if (!rc) {
		struct vl_region *reg = vl_region_find(v, handle);

		if (r.handle != handle || !r.length || r.length % VCMA_PROTO_PAGE || r.gpa % VCMA_PROTO_PAGE ||
		    r.bus % VCMA_PROTO_PAGE)
			rc = -EIO;
		else
			info_from(out, &r, reg ? reg->map : NULL);
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int vcma_query_pool(struct vcma *v, const char *pool, struct vcma_pool_info *out)
{
	struct vcma_req q;
	struct vcma_rsp r;
	int rc;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!v || !out)
		return -EINVAL;
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_QUERY;
	rc = wire_name(q.name, pool);
	if (rc)
		return rc;
	vl_lock(v);
	rc = vl_call(v, &q, &r, vl_deadline(v));
	if (!rc) {
		out->size = r.length;
		out->allocatable = r.val[0];
		out->mine = r.val[1];
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}

void vcma_set_mapper(struct vcma *v, vcma_map_fn map, vcma_unmap_fn unmap, void *ctx)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->lock);
	v->map = map;
	v->unmap = unmap;
	v->map_ctx = ctx;
	pthread_mutex_unlock(&v->lock);
}

void vcma_set_timeout(struct vcma *v, unsigned int ms)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->lock);
	v->timeout_ms = ms;
	pthread_mutex_unlock(&v->lock);
}

int vcma_fd(const struct vcma *v)
{
	return v ? v->epfd : -EINVAL;
}

uint32_t vcma_guest_id(const struct vcma *v)
{
	return v ? v->guest_id : 0; /* a reattach keeps it */
}

uint64_t vcma_features(const struct vcma *v)
{
	return v ? atomic_load(&v->features) : 0;
}

/* ---- event-loop API ---- */

static int submit(struct vcma *v, struct vcma_req *q, uint64_t cookie)
{
	/* -EAGAIN while a reattach is under way: come back when vcma_fd() is readable */
	int rc = vl_ready(v, 0, false);

	if (!rc)
		rc = vl_usable(v);
	if (rc)
		return rc;
	if (!vl_room(v) || v->nasync >= v->max_outstanding)
		return -EAGAIN;
	if (q->op == VCMA_OP_ALLOC) {
		rc = vl_region_reserve(v);
		if (rc)
			return rc;
	}
	rc = vl_pace(v, false, 0); /* -EAGAIN: over the request rate, try again shortly */
	if (rc)
		return rc;
	rc = vl_publish(v, q, VL_ASYNC, cookie);
	return rc < 0 ? rc : 0;
}

int vcma_submit_alloc(struct vcma *v, uint64_t bytes, unsigned int align_order, const char *pool, uint64_t cookie)
{
	struct vcma_req q;
	int rc;

	if (!v)
		return -EINVAL;
	rc = alloc_req(&q, bytes, align_order, pool);
	if (rc)
		return rc;
	vl_lock(v);
	rc = submit(v, &q, cookie);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

int vcma_submit_free(struct vcma *v, uint64_t handle, uint64_t cookie)
{
	struct vcma_req q;
	int rc;

	if (!v)
		return -EINVAL;
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_FREE;
	q.handle = handle;
	vl_lock(v);
	region_unmap(v, handle);
	rc = submit(v, &q, cookie);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

static int deliver(struct vcma *v, struct vcma_completion *c, int max)
{
	int n = 0;

	while (n < max && v->ndone) {
		uint32_t idx = v->done[v->done_head];
		struct vl_req *e = &v->req[idx];
		struct vcma_completion *o = &c[n++];

		v->done_head = (v->done_head + 1) % v->nreq;
		v->ndone--;
		v->nasync--;
		memset(o, 0, sizeof(*o));
		o->cookie = e->cookie;
		o->result = e->result;
		if (e->op == VCMA_OP_ALLOC && !e->result)
			info_from(&o->region, &e->rsp, NULL);
		else if (e->op == VCMA_OP_FREE)
			o->region.handle = e->handle;
		memset(e, 0, sizeof(*e));
	}
	return n;
}

int vcma_complete(struct vcma *v, struct vcma_completion *c, int max)
{
	int n = 0;

	if (!v || max < 0 || (max && !c))
		return -EINVAL;
	if (!max)
		return 0;
	vl_lock(v);
	vl_drain_irq(v);
	vl_check_sock(v); /* the host gone: what was in flight completes with -ECONNRESET */
	vl_ready(v, 0, false); /* a lost handle: the reattach steps that are due */
	for (;;) {
		if (!v->lost)
			vl_harvest(v); /* a broken host fails the requests it leaves in flight */
		n += deliver(v, c + n, max - n);
		if (n == max || v->dead || v->lost)
			break;
		/* re-arm, then look again for answers that raced with it */
		vcma_write_once(&v->rh->rsp_event, v->rsp_cons + 1);
		vcma_mb();
		if (vcma_load_acquire(&v->rh->rsp_prod) == v->rsp_cons)
			break;
	}
	if (!n && v->dead)
		n = v->dead;
	pthread_mutex_unlock(&v->lock);
	return n;
}

int vcma_next_event(struct vcma *v, struct vcma_event *ev)
{
	struct vcma_evt e;
	uint32_t prod;
	int rc;

	if (!v || !ev)
		return -EINVAL;
	memset(ev, 0, sizeof(*ev));
	vl_lock(v);
	vl_drain_irq(v);
	vl_check_sock(v);
	rc = vl_ready(v, 0, false);
	if (rc == -EAGAIN) {
		rc = 0; /* reattaching: nothing to read now (the old ring's events are gone) */
		goto out;
	}
	if (!rc)
		rc = vl_usable(v);
	if (rc && rc != -ESHUTDOWN)
		goto out;
	rc = 0;
	prod = vcma_load_acquire(&v->eh->evt_prod);
	if (prod == v->evt_cons) {
		vcma_write_once(&v->eh->evt_event, v->evt_cons + 1);
		vcma_mb();
		prod = vcma_load_acquire(&v->eh->evt_prod);
		if (prod == v->evt_cons)
			goto out;
	}
	if (prod - v->evt_cons > v->evt_slots) {
		vl_mark_dead(v, -EIO);
		rc = -EIO;
		goto out;
	}
	vl_copy_in(&e, &v->evs[v->evt_cons & (v->evt_slots - 1)], sizeof(e));
	v->evt_cons++;
	/* the slot is copied before the host may reuse it */
	vcma_store_release(&v->eh->evt_cons, v->evt_cons);
	ev->type = e.type;
	ev->handle = e.handle;
	ev->arg0 = e.arg0;
	ev->arg1 = e.arg1;
	if (e.type == VCMA_EVT_REGION_GONE) {
		/* the memory already belongs to someone else: drop the mapping now */
		region_unmap(v, e.handle);
		vl_region_del(v, e.handle);
	}
	rc = 1;
out:
	pthread_mutex_unlock(&v->lock);
	return rc;
}

const char *vcma_strerror(int err)
{
	if (err == INT_MIN)
		return "unknown error";
	switch (err < 0 ? -err : err) {
	case 0: return "success";
	case EINVAL: return "invalid request";
	case ERANGE: return "below the pool's minimum request size: use normal memory";
	case ENODEV: return "no such pool, or none serves this guest";
	case EACCES: return "pool bound to another guest or device class";
	case EDQUOT: return "quota in the pool exhausted";
	case ENOSPC: return "no contiguous window available now";
	case E2BIG: return "larger than the pool";
	case EBUSY: return "window could not be vacated in time; retry later";
	case ENOENT: return "no such region (or no such socket)";
	case ENOMEM: return "out of memory";
	case ENOBUFS: return "per-guest region or byte limit reached";
	case EPROTONOSUPPORT: return "protocol version not supported by the host";
	case ESHUTDOWN: return "host is shutting down";
	case ECONNRESET: return "host cut this guest off or went away";
	case ETIMEDOUT: return "no answer from the host in time";
	case EIO: return "host-side failure or malformed answer";
	case EOPNOTSUPP: return "cannot map regions: no mapper set";
	case EAGAIN: return "too many requests outstanding or too fast: harvest completions, retry";
	case EBADF: return "bad file descriptor";
	case ENAMETOOLONG: return "socket path too long";
	case ECONNREFUSED: return "vcmad is not listening on the socket";
	default: return strerror(err < 0 ? -err : err);
	}
}

_Static_assert(VCMA_EVENT_SHUTDOWN == VCMA_EVT_SHUTDOWN && VCMA_EVENT_REGION_GONE == VCMA_EVT_REGION_GONE &&
		       VCMA_EVENT_LENT_RECLAIM == VCMA_EVT_LENT_RECLAIM,
	       "public event numbers match the protocol");
