/* SPDX-License-Identifier: MIT */
/*
 * vcma_internal.h - libvcma's private half: the attachment object and the ring engine.
 *
 *   struct vcma ─┬─ shared area (mmap of the ring memfd): read through the private
 *                │  geometry copied once at attach (docs/PROTOCOL.md §2.5)
 *                ├─ vl_req[]      in-flight table; a request's id names its entry
 *                ├─ done FIFO     finished async requests waiting for vcma_complete()
 *                └─ vl_region[]   regions this handle allocated (and maybe mapped)
 *
 * Locking: every public entry point takes v->lock; everything here runs under it.
 * Blocking calls keep the lock while they wait, so one handle serves one blocking call
 * at a time. Internal symbols use the vl_ prefix: the version script exports vcma_*.
 */
#ifndef VCMA_LIB_INTERNAL_H
#define VCMA_LIB_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_guest_check.h"
#include "vcma_proto.h"
#include "vcma_status.h"

#define VL_MAX_SLOTS VCMA_GUEST_MAX_SLOTS /* largest ring a guest accepts (§2.5) */
#define VL_MAX_ALIGN_ORDER 18u     /* ALLOC arg0 above this is a violation (§5.3) */
#define VL_MAX_REGIONS 65536u      /* bound on the region table whatever the host says */
#define VL_DEFAULT_TIMEOUT_MS 10000u
#define VL_ID_IDX_BITS 20u         /* id = seq << 20 | table index */
/*
 * Request pacing (§8.1: a guest MUST NOT exceed burst + rate*t requests, or the host
 * cuts it off for flooding). The control page does not say the host's bound, so the
 * default stays well under vcmad's default (20000/s, burst 4096): the host also charges a
 * kick that finds no request, which can cost up to one extra token per request.
 * VCMA_RATE / VCMA_BURST override; VCMA_RATE=0 turns pacing off.
 */
#define VL_DEFAULT_RATE 8000u
#define VL_DEFAULT_BURST 1024u

enum vl_req_state {
	VL_FREE = 0,
	VL_SENT,     /* published, a blocking caller waits for it */
	VL_ASYNC,    /* published by vcma_submit_*() */
	VL_ORPHAN,   /* its blocking caller timed out; the answer is dropped (an ALLOC is undone) */
	VL_INTERNAL, /* a FREE the library sent on its own; the answer is dropped */
	VL_POSTED,   /* a FREE vcma_free() posted: nobody waits; an error is kept for vcma_flush() */
	VL_DONE,     /* answered: a blocking caller's result is in rsp/result */
	VL_DONE_ASYNC, /* answered, queued for vcma_complete() */
};

struct vl_req {
	uint64_t id;
	uint32_t state;   /* enum vl_req_state */
	uint32_t op;
	uint64_t cookie;  /* async only */
	uint64_t bytes;   /* ALLOC: requested length */
	uint64_t handle;  /* FREE/QUERY: the handle asked about */
	int result;       /* 0 or -errno once answered */
	struct vcma_rsp rsp; /* private copy of the answer */
};

struct vl_region {
	uint64_t handle, gpa, bus, size;
	void *map; /* from the mapper, or NULL */
};

struct vcma {
	pthread_mutex_t lock;
	int sock; /* vcma_attach(): the attach socket, closed = detach; else -1 */
	int shm_fd, kick_fd, irq_fd;
	uint8_t *shm;
	uint64_t shm_size;

	/* pointers into the shared area, computed from the private geometry */
	struct vcma_ctrl *ctrl;
	struct vcma_ring_hdr *rh;
	union vcma_slot *slot;
	struct vcma_evt_hdr *eh;
	struct vcma_evt *evs;

	/* private geometry (never re-read) and private indices */
	uint32_t slots, evt_slots, max_outstanding;
	uint32_t generation, guest_id;
	uint64_t window_gpa; /* sim guest: gpa = window_gpa + bus; has_window says it is known */
	bool has_window;
	uint32_t req_prod_pvt, rsp_cons, evt_cons;
	uint64_t features;
	uint64_t host_version;

	int dead; /* 0, or the sticky error every call returns (-ECONNRESET, -EIO) */
	bool connected; /* HELLO accepted */
	unsigned int timeout_ms; /* 0 = wait forever */
	unsigned int spin_us;
	unsigned int rate, burst; /* requests per second, bucket size; rate 0 = unpaced */
	double tokens;
	uint64_t tokens_at;

	vcma_map_fn map;
	vcma_unmap_fn unmap;
	void *map_ctx;

	struct vl_req *req; /* [nreq] */
	uint32_t nreq;
	uint32_t nsent;  /* published and unanswered = req_prod_pvt - rsp_cons */
	uint32_t nasync; /* async requests not yet harvested by vcma_complete() */
	uint64_t seq;
	uint32_t *done;  /* FIFO of table indices, [nreq] */
	uint32_t done_head, done_tail, ndone;

	struct vl_region *region;
	uint32_t nregion, region_cap, region_max;
	uint32_t alloc_pending; /* ALLOCs in flight: table room is reserved for them */

	/* posted FREEs (vcma_free()): published, unanswered; their regions already left
	 * the table. nposted <= nsent <= max_outstanding. */
	uint32_t nposted;
	int posted_err;             /* first error of a posted FREE since vcma_flush(), or 0 */
	uint64_t posted_err_handle; /* the handle it named */
};

/*
 * vcma_copy_from_shared() stores through uint64_t *; reading a struct's u32 fields
 * after that breaks strict aliasing (GCC flags the fields as uninitialized). Copy into
 * a u64 buffer and memcpy() from there: the same single volatile read of each word.
 */
static inline void vl_copy_in(void *dst, const void *src, unsigned int len)
{
	uint64_t buf[8];

	if (len > sizeof(buf))
		len = sizeof(buf);
	vcma_copy_from_shared(buf, src, len);
	memcpy(dst, buf, len);
}

/* ring.c */
int vl_ring_init(struct vcma *v, const struct vcma_ctrl *c);
void vl_ring_fini(struct vcma *v);
/* 0 if a new request may be sent now, else -errno (dead, closing). */
int vl_usable(struct vcma *v);
bool vl_room(const struct vcma *v);
/* Publish q (its id is set here) in a free entry; returns the entry index or -errno. */
int vl_publish(struct vcma *v, struct vcma_req *q, uint32_t state, uint64_t cookie);
/* Consume every published response; -errno once the attachment is broken. */
int vl_harvest(struct vcma *v);
/* Harvest; if nothing came, sleep until an irq or the deadline (0 = none). */
int vl_wait(struct vcma *v, uint64_t deadline_ns);
/* Take a request token: 0, or -EAGAIN if none now (wait = false), or wait for one up
 * to the deadline (-ETIMEDOUT). */
int vl_pace(struct vcma *v, bool wait, uint64_t deadline_ns);
/* Publish q and wait for its answer (or -ETIMEDOUT); *rsp gets the answer. */
int vl_call(struct vcma *v, struct vcma_req *q, struct vcma_rsp *rsp);
/* Wait until a request may be published (room in the ring, a rate token): 0, or
 * -errno (dead, closing, -ETIMEDOUT at the deadline; 0 = none). Nothing is published;
 * under the lock the room stays until the caller publishes. */
int vl_reserve(struct vcma *v, uint64_t deadline_ns);
/* Post a FREE (VL_POSTED) after vl_reserve() succeeded: published, not awaited. */
int vl_post_free(struct vcma *v, uint64_t handle);
/* Wait until every posted FREE is answered: 0, or -errno (dead, -ETIMEDOUT). */
int vl_flush(struct vcma *v, uint64_t deadline_ns);
void vl_mark_dead(struct vcma *v, int err);
void vl_drain_irq(struct vcma *v);
int vl_check_sock(struct vcma *v);
uint64_t vl_now_ns(void);
uint64_t vl_deadline(const struct vcma *v);

/* regions */
struct vl_region *vl_region_find(struct vcma *v, uint64_t handle);
int vl_region_reserve(struct vcma *v);
void vl_region_add(struct vcma *v, const struct vcma_rsp *rsp);
void vl_region_del(struct vcma *v, uint64_t handle);

#endif
