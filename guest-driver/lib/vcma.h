/* SPDX-License-Identifier: MIT */
/*
 * vcma.h - libvcma, the userspace guest client of the vcma protocol.
 *
 * A struct vcma is one attachment to vcmad: the shared control page and rings, a kick
 * eventfd (to the host) and an irq eventfd (from the host). Calls on one handle are
 * serialized internally; blocking calls wait on the irq eventfd, except vcma_free(),
 * which posts its FREE and does not wait for the answer (see below). Event-loop users
 * poll vcma_fd() and call vcma_complete() / vcma_next_event() when it is readable.
 * (Blocking calls wait in an epoll set of their own with the irq edge-triggered and
 * do not read the irq: a handle used both ways may find vcma_fd() readable with
 * nothing to do once after a blocking call; vcma_complete() clears it.) A
 * handle outlives a restart of vcmad ("Host restarts" below).
 *
 * Every function returns 0 or a count on success, a negative errno on failure;
 * vcma_strerror() turns it into text. Host status codes map to errno values:
 *   -EINVAL invalid request     -ERANGE below the pool's minimum: use normal memory
 *   -ENODEV no such pool        -EACCES pool bound to another guest/class
 *   -EDQUOT quota exhausted     -ENOSPC no contiguous window now
 *   -E2BIG  larger than pool    -EBUSY  window could not be vacated in time
 *   -ENOENT no such region      -ENOMEM host out of memory
 *   -ENOBUFS per-guest limit    -EPROTONOSUPPORT version mismatch
 *   -ESHUTDOWN host stopping    -ECONNRESET host cut this guest off / went away
 *   -ETIMEDOUT no answer in time  -EIO host-side failure or malformed answer
 *   -EAGAIN  (vcma_submit_*) too many requests in flight, above the rate limit, or
 *            reattaching after a host restart
 *   -EOPNOTSUPP VCMA_ALLOC_MAP without a mapper
 *
 * libvcma paces itself below vcmad's flood limit: 8000 requests/s with a burst of
 * 1024 by default ($VCMA_RATE, $VCMA_BURST; VCMA_RATE=0 turns pacing off).
 */
#ifndef VCMA_H
#define VCMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vcma;

struct vcma_region_info {
	uint64_t handle; /* daemon-issued, opaque */
	uint64_t gpa;    /* guest-physical base */
	uint64_t bus;    /* address for device DMA */
	uint64_t size;   /* bytes (a multiple of 4096) */
	void *map;       /* mapping in this process, or NULL */
};

struct vcma_pool_info {
	uint64_t size;        /* pool bytes */
	uint64_t allocatable; /* bytes not held by regions or reserved */
	uint64_t mine;        /* bytes this guest holds in the pool */
};

/* Flags for vcma_alloc(). */
#define VCMA_ALLOC_MAP (1u << 0) /* map the region here (needs a mapper, see below) */

/* Default socket: $VCMA_SOCKET, else /run/vcma/vcmad.sock. */
#define VCMA_DEFAULT_SOCKET "/run/vcma/vcmad.sock"

/* Connect to vcmad as a guest (no RAM of its own) and say HELLO. name: 1-31 chars
 * of [A-Za-z0-9_.-]; devclass may be NULL. */
int vcma_attach(const char *socket_path, const char *name, const char *devclass, struct vcma **out);

/* Attach to rings a VMM set up (vcma-simvm): takes ownership of the three fds, even
 * on failure. Says HELLO. */
int vcma_attach_fds(int shm_fd, size_t shm_size, int kick_fd, int irq_fd, struct vcma **out);

/*
 * Host restarts (docs/PROTOCOL.md §9.1 "Restart and reattach"). vcma_attach() asks the
 * host for a reattach token ($VCMA_REATTACH=0: it does not; a host older than the
 * reattach protocol refuses to give one, and the handle attaches without). When the
 * host's end of the connection goes away while the guest was not cut off (the state is
 * not DEAD; CLOSING counts: a clean shutdown keeps the guest too), a handle with a
 * token keeps its regions and their mappings and reattaches on its own, with backoff
 * (10 ms doubling to 500 ms) for the token's grace period, counted from when it
 * noticed. libvcma has no thread: the reattach runs inside the calls made on the
 * handle. The call that notices tries before it returns (up to its timeout); a call
 * finds the end itself when it starts (looking at most once a millisecond), and later
 * blocking calls wait for it up to their timeout (-ETIMEDOUT if it is not done; the
 * next call goes on) and then proceed on the new ring; vcma_submit_*() return -EAGAIN
 * and vcma_next_event() 0 until it is done; vcma_complete() takes the steps that are
 * due without sleeping between tries (the exchange with the host and the HELLO on the
 * new ring may keep it up to the timeout). An event loop needs nothing more than to
 * keep polling vcma_fd() (it stays the same fd) and calling in when it is readable.
 *
 * Calls in flight when the loss is seen (one that started within a millisecond of the
 * previous call and after the host died is in flight on the dead ring too), and calls
 * waiting for ring room or for posted FREEs, fail with -ECONNRESET (submissions
 * complete with it); events the old ring held unread are lost. Then the host's list of the guest's regions decides: a region
 * the handle holds and the host kept stays, with its handle and mapping; one the host
 * did not keep is forgotten and unmapped (there is no VCMA_EVENT_REGION_GONE for it);
 * one the host granted to a request that was never answered is freed; a FREE the host
 * did not take is sent again (vcma_flush() waits for a posted one). Features are
 * negotiated again (vcma_features()); vcma_guest_id() stays. If the host did not keep
 * the guest (NO_REGION, or another refusal) or the grace period passes, the handle is
 * dead with -ECONNRESET as when the host cuts a guest off: its regions are gone, and
 * their mappings go at vcma_detach().
 */
/* A region the host says the guest holds, after a reattach (a REGIONS run). */
struct vcma_held_region {
	uint64_t handle;
	uint64_t bus;  /* machine address: first frame * 4096 */
	uint64_t size; /* bytes */
};
/* vcma_attach_fds() handles, whose socket is the VMM's: the VMM reattached. Take the
 * new shared area and eventfds (owned as by vcma_attach_fds, even on failure), the
 * regions the host listed (any order), and say HELLO again: what this handle holds and
 * the host listed keeps its handle and mapping; what the host listed and this handle
 * does not hold is freed (a FREE posted on the old ring is sent again); what this
 * handle holds and the host did not list is forgotten (unmapped). Calls in flight or
 * waiting on the old rings fail with -ECONNRESET, as above; may be called from another
 * thread while one waits (it wakes and lets go), and calls made meanwhile wait and
 * then use the new rings. Returns 0; -EINVAL (no handle, or a vcma_attach() handle:
 * those reattach by themselves); else the handle is dead and its error comes back
 * (-EIO: the area fails §2.5, or the list names a held handle with another address or
 * size). One vcma_reattach_fds() at a time runs; others wait their turn. */
int vcma_reattach_fds(struct vcma *v, int shm_fd, size_t shm_size, int kick_fd, int irq_fd,
		      const struct vcma_held_region *held, size_t nheld);

/* Free every region this handle still holds (best effort), wait for the answers to
 * those FREEs and to every FREE vcma_free() posted (flush; their errors are dropped),
 * unmap, close. Waits at most the timeout (vcma_set_timeout) in all. */
void vcma_detach(struct vcma *v);

/* How a region becomes visible in this process: the platform maps guest-physical
 * memory (in the sim, the VMM maps machine memory at the region's gpa). */
typedef int (*vcma_map_fn)(void *ctx, uint64_t gpa, uint64_t bus, uint64_t size, void **addr);
typedef void (*vcma_unmap_fn)(void *ctx, void *addr, uint64_t size);
void vcma_set_mapper(struct vcma *v, vcma_map_fn map, vcma_unmap_fn unmap, void *ctx);

/* Milliseconds a blocking call waits for its answer (default 10000, or
 * $VCMA_TIMEOUT_MS); 0 waits forever. */
void vcma_set_timeout(struct vcma *v, unsigned int ms);

/* Blocking API. pool may be NULL (the host picks). align_order 0 = natural. */
int vcma_alloc(struct vcma *v, uint64_t bytes, unsigned int align_order, uint32_t flags, const char *pool,
	       struct vcma_region_info *out);

/*
 * vcma_free() posts the FREE of a region this handle holds: it publishes the request
 * and notifies the host, and returns without waiting for the answer (vcma.ko does the
 * same, docs/PROTOCOL.md §5.4). So a blocking free then alloc costs one round trip:
 * the alloc's wait collects the free's answer too. What the caller may rely on when it
 * returns 0:
 *  - the region is gone from this process: unmapped (VCMA_ALLOC_MAP), forgotten by the
 *    handle (detach will not free it again); stop device DMA to it before the call;
 *  - the host frees it before it takes any later request from this handle, so a
 *    vcma_alloc() (or query) made afterwards on this handle sees the memory freed;
 *  - the host frees it when it takes the request, which it does without waiting for
 *    another call: the FREE is notified, unless the host said it will look at the
 *    ring by itself (PROTOCOL.md §4.9; vcmad: within lazy_free_ms, and before it
 *    serves any other guest or vcmactl; $VCMA_LAZY_FREE=0 notifies every FREE); then
 *    the free costs no system call and the next call's kick carries it. Other guests
 *    see the memory back by the time vcma_flush() returns, maybe earlier, but not
 *    necessarily by the time vcma_free() returns.
 * Errors: a handle this handle does not hold (never allocated here, freed already,
 * reclaimed with VCMA_EVENT_REGION_GONE read) is not posted but sent and awaited, and
 * -ENOENT is returned now (handle 0 too), as are the attachment's sticky error,
 * -ESHUTDOWN, and -ETIMEDOUT if the ring stayed full for the whole timeout (at most
 * the ring's max_outstanding requests are in flight; a free waits for room, and a
 * region whose FREE could not be sent stays held and mapped). A posted FREE the host
 * refuses is kept and reported by vcma_flush(): -ENOENT (the host no longer held the
 * region, e.g. it reclaimed it: the memory is gone either way) or -ESHUTDOWN (vcmad was
 * stopping and kept the region until this handle detaches). If the attachment dies,
 * the host frees the guest's regions itself and every later call returns the error.
 * docs/PROTOCOL.md §4.8 gives the rules underneath.
 */
int vcma_free(struct vcma *v, uint64_t handle);
/* The old synchronous free: send FREE, wait for its answer, return its status. */
int vcma_free_sync(struct vcma *v, uint64_t handle);
/* Wait until every FREE vcma_free() posted is answered (up to the timeout). Returns 0,
 * or the first error of a posted FREE since the last vcma_flush() (then *handle, if
 * not NULL, is the handle it named, and the error is cleared), or -ETIMEDOUT, or the
 * attachment's error. After 0 every posted region is back in the host's pool. */
int vcma_flush(struct vcma *v, uint64_t *handle);
int vcma_query_region(struct vcma *v, uint64_t handle, struct vcma_region_info *out);
int vcma_query_pool(struct vcma *v, const char *pool, struct vcma_pool_info *out);

/* Event-loop API. vcma_fd() is an epoll fd, the same for the handle's whole life
 * (across reattaches): poll it for POLLIN, or add it to an epoll set, and call
 * vcma_complete() and/or vcma_next_event() whenever it is readable. It is readable when
 * responses or events are published, when the host's end of the connection goes away,
 * and during a reattach when the next try is due, when the host answered, or when the
 * grace period is over. Never read from it. */
int vcma_fd(const struct vcma *v);

struct vcma_completion {
	uint64_t cookie;              /* what the caller passed to vcma_submit_*() */
	int result;                   /* 0 or -errno */
	struct vcma_region_info region; /* ALLOC: the new region (map is NULL) */
};

int vcma_submit_alloc(struct vcma *v, uint64_t bytes, unsigned int align_order, const char *pool,
		      uint64_t cookie);
/* Posted FREEs take ring room too: vcma_submit_*() may see -EAGAIN until they are
 * answered (vcma_complete() harvests their answers as well). */
int vcma_submit_free(struct vcma *v, uint64_t handle, uint64_t cookie);
/* Harvest up to max completions without waiting for the host (except in a reattach,
 * above); returns how many, or the attachment's error when it is dead and none are
 * left. */
int vcma_complete(struct vcma *v, struct vcma_completion *c, int max);

/* Event types (the same values as VCMA_EVT_* in the protocol). */
#define VCMA_EVENT_SHUTDOWN 1u     /* vcmad is stopping */
#define VCMA_EVENT_REGION_GONE 2u  /* handle: the region was reclaimed */
#define VCMA_EVENT_LENT_RECLAIM 3u /* arg0 = gfn: a page reported free was dropped */

struct vcma_event {
	uint32_t type; /* VCMA_EVENT_* */
	uint64_t handle;
	uint64_t arg0, arg1;
};
/* Next host notice: 1 and *ev filled, 0 if none, -errno. */
int vcma_next_event(struct vcma *v, struct vcma_event *ev);

/* Guest id and negotiated features of this attachment. */
uint32_t vcma_guest_id(const struct vcma *v);
uint64_t vcma_features(const struct vcma *v);

const char *vcma_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
