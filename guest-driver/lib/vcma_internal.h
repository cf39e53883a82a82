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
 * Locking: every public entry point takes v->lock (vl_lock); everything here runs under
 * it. Blocking calls keep the lock while they wait, so one handle serves one blocking
 * call at a time. The one exception is vcma_reattach_fds(), which another thread may
 * call while a call waits: it raises v->swaps and writes v->wake_fd first, so the
 * waiting call gives up (-ECONNRESET) and lets go of the lock, and calls that take the
 * lock meanwhile wait on v->swapped until the new rings are in place.
 *
 * Host restarts (docs/PROTOCOL.md §9.1 "Restart and reattach"): a vcma_attach() handle
 * with a token whose socket ends while the state is not DEAD is *lost*: what was in
 * flight has failed, the regions stay, and whichever call comes next reconnects
 * (vl_ready, attach.c) until the token's grace period ends. Internal symbols use the
 * vl_ prefix: the version script exports vcma_*.
 */
#ifndef VCMA_LIB_INTERNAL_H
#define VCMA_LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
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
#define VL_BACKOFF_FIRST_MS 10u    /* reattach: the wait after the first failed try, */
#define VL_BACKOFF_MAX_MS 500u     /* doubling up to this */
#define VL_SOCK_LOOK_NS 1000000ull /* a call looks at the socket (a syscall) at most this often */
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

/* A FREE the library owes the host after a reattach: a region the host still lists
 * that this handle no longer holds (a FREE in flight when the host died, or an ALLOC
 * in flight that the host granted). */
struct vl_refree {
	uint64_t handle;
	bool posted; /* a FREE vcma_free() posted: vcma_flush() waits for it, reports its error */
};

struct vl_session_ops;

struct vcma {
	const struct vl_session_ops *session; /* attach.c's: restart and reattach (below) */
	pthread_mutex_t lock;
	pthread_cond_t swapped;   /* broadcast when a vcma_reattach_fds() is done */
	pthread_mutex_t swap_lock; /* one vcma_reattach_fds() at a time */
	atomic_uint swaps;        /* vcma_reattach_fds() calls that want the lock */
	int sock; /* vcma_attach(): the attach socket, closed = detach; else -1 */
	int shm_fd, kick_fd, irq_fd;
	int epfd;    /* vcma_fd(): epoll set of irq_fd, sock, timer_fd, try_sock; never changes */
	int wake_fd; /* vcma_attach_fds() handles: vcma_reattach_fds() wakes a waiting call; else -1 */
	/* blocking calls' own epoll set (vl_wait): irq_fd edge-triggered (an irq needs no
	 * read to clear it), sock and wake_fd; w_*: the fds registered in it (-1: none) */
	int wait_ep, w_irq, w_sock, w_wake;
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
	uint32_t req_notified; /* req_prod up to which notification is settled (PROTOCOL.md §4.9) */
	bool no_lazy_free;     /* VCMA_LAZY_FREE=0: do not ask for VCMA_F_LAZY_FREE */
	_Atomic uint64_t features; /* a reattach negotiates them again; vcma_features() reads without the lock */
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

	/* FREEs owed after a reattach, sent once the new ring has room (vl_refree_send) */
	struct vl_refree *refree;
	uint32_t nrefree, refree_cap;

	/* restart and reattach: vcma_attach() handles that hold a token */
	char path[108];   /* the socket to connect to again (sun_path) */
	char name[32];    /* the name attached as */
	bool has_token;
	uint8_t token[16];
	uint32_t token_guest_id, grace_ms;
	uint64_t sock_looked; /* monotonic ns: when vl_ready() last looked at the socket */
	bool lost;        /* the host's end went away (state not DEAD): reattaching */
	bool in_reattach; /* the reattach itself is running (its HELLO must not start another) */
	uint64_t lost_at, next_try; /* monotonic ns: when the loss was seen, the next connect */
	uint32_t backoff_ms;
	int timer_fd;     /* in epfd: readable when the next try is due or the grace ends; else -1 */
	int try_sock;     /* a connection whose REATTACH waits for its answer, or -1 */
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
/* Take v->lock, waiting while a vcma_reattach_fds() wants it. */
void vl_lock(struct vcma *v);
/* The ring geometry of the checked control page c (v->shm is its area). Undelivered
 * completions from an earlier ring move to the new table; nothing is in flight. */
int vl_ring_init(struct vcma *v, const struct vcma_ctrl *c);
void vl_ring_fini(struct vcma *v);
/* 0 if a new request may be sent now, else -errno (dead, closing, lost). */
int vl_usable(struct vcma *v);
bool vl_room(const struct vcma *v);
/* Publish q (its id is set here) in a free entry; returns the entry index or -errno. */
int vl_publish(struct vcma *v, struct vcma_req *q, uint32_t state, uint64_t cookie);
/* Kick for requests published without one (posted FREEs, PROTOCOL.md §4.9) if the
 * host's req_event asks for it; every wait does this first. */
void vl_settle_kick(struct vcma *v);
/* Consume every published response; -errno once the attachment is broken. */
int vl_harvest(struct vcma *v);
/* Harvest; if nothing came, sleep until an irq or the deadline (0 = none). */
int vl_wait(struct vcma *v, uint64_t deadline_ns);
/* Take a request token: 0, or -EAGAIN if none now (wait = false), or wait for one up
 * to the deadline (-ETIMEDOUT). */
int vl_pace(struct vcma *v, bool wait, uint64_t deadline_ns);
/* Publish q and wait for its answer until the deadline (-ETIMEDOUT; 0 = none); *rsp
 * gets the answer. */
int vl_call(struct vcma *v, struct vcma_req *q, struct vcma_rsp *rsp, uint64_t deadline_ns);
/* Wait until a request may be published (room in the ring, a rate token): 0, or
 * -errno (dead, closing, -ETIMEDOUT at the deadline; 0 = none). Nothing is published;
 * under the lock the room stays until the caller publishes. */
int vl_reserve(struct vcma *v, uint64_t deadline_ns);
/* Post a FREE (VL_POSTED) after vl_reserve() succeeded: published, not awaited. */
int vl_post_free(struct vcma *v, uint64_t handle);
/* Wait until every posted FREE is answered: 0, or -errno (dead, -ETIMEDOUT). */
int vl_flush(struct vcma *v, uint64_t deadline_ns);
void vl_mark_dead(struct vcma *v, int err);
/* The host that served the ring is gone but kept the guest: take the answers it
 * published, fail what is left in flight with -ECONNRESET, and note the FREEs among it
 * (vl_refree_add). Nothing is published on this ring afterwards. */
void vl_lose(struct vcma *v);
void vl_drain_irq(struct vcma *v);
/* fd (irq_fd, sock or wake_fd) is about to be closed: out of vl_wait's set. */
void vl_wait_forget(struct vcma *v, int fd);
/* The attach socket: EOF makes the handle lost (a token, state not DEAD) or dead
 * (-ECONNRESET). Returns 0 or -ECONNRESET. */
int vl_check_sock(struct vcma *v);
/* Owe the host a FREE of handle (see struct vl_refree). */
void vl_refree_add(struct vcma *v, uint64_t handle, bool posted);
/* Publish owed FREEs while the ring has room; never waits. */
void vl_refree_send(struct vcma *v);
uint64_t vl_now_ns(void);
uint64_t vl_deadline(const struct vcma *v);

/* attach.c: restart and reattach */
/* A lost handle reattaches here: wait = true tries (and sleeps between tries) until
 * the deadline (0 = none), false takes the steps that are due without sleeping. Owed
 * FREEs go out once attached. 0 once attached, -EAGAIN (not waiting) or -ETIMEDOUT
 * while still reattaching, the sticky error once dead. */
int vl_ready(struct vcma *v, uint64_t deadline_ns, bool wait);
/* The socket of a handle that noticed its host gone: lost (with a token and the state
 * not DEAD) or dead. */
void vl_notice_lost(struct vcma *v);
/* End a reattach in progress (the handle died): close its connection, stop its timer. */
void vl_reattach_end(struct vcma *v);

/*
 * How the ring layer (ring.c) reaches the session above it (attach.c, which owns the
 * connection and its reattach) without naming it: attach.c sets v->session when it
 * makes a handle, so the layers stay one above the other. The three are the ones
 * above; a handle without a session (none today) is never lost.
 */
struct vl_session_ops {
	int (*ready)(struct vcma *v, uint64_t deadline_ns, bool wait);
	void (*notice_lost)(struct vcma *v);
	void (*reattach_end)(struct vcma *v);
};

static inline int vl_session_ready(struct vcma *v, uint64_t deadline_ns, bool wait)
{
	return v->session ? v->session->ready(v, deadline_ns, wait) : v->dead;
}

static inline void vl_session_lost(struct vcma *v)
{
	if (v->session)
		v->session->notice_lost(v);
}

static inline void vl_session_end(struct vcma *v)
{
	if (v->session)
		v->session->reattach_end(v);
}

/* regions */
struct vl_region *vl_region_find(struct vcma *v, uint64_t handle);
int vl_region_reserve(struct vcma *v);
void vl_region_add(struct vcma *v, const struct vcma_rsp *rsp);
void vl_region_del(struct vcma *v, uint64_t handle);
/* After a reattach: held[n] (any order) is what the host says this guest holds. A held
 * region it lists stays as it is; one it does not is forgotten (unmapped); one it lists
 * that this handle does not hold becomes a FREE owed (posted, if the one owed before
 * was). 0, -EIO (the list contradicts a held region, or repeats one) or -ENOMEM. */
int vl_region_reconcile(struct vcma *v, const struct vcma_held_region *held, size_t n);

#endif
