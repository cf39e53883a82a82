/* SPDX-License-Identifier: MIT */
/*
 * alloc.h - the one allocation path, for every requester: a guest's ring (guest.c)
 * and the operator's test allocations (ctl/). Policy and search are the core's; when
 * the cheapest window holds lent frames, a vacate job empties it first (vacate.h)
 * and the answer comes when the job ends.
 *
 *   vcmad_alloc()  limits (counting what is promised) -> core begin (policy, search,
 *                  claim) -> [vacate job] -> core finish -> rq->ops->take -> answer
 *
 * A requester says how a region becomes its own (take: clear the memory, record
 * where it sees it), how it is answered, and how a freed region is released. The
 * path keeps its counts: live regions and bytes, and ALLOCs waiting for a vacate,
 * which hold their share of max_regions / max_bytes until answered.
 */
#ifndef VCMA_HV_ALLOC_H
#define VCMA_HV_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

#include "core.h"

struct vcmad;
struct vcmad_requester;
struct vcmad_alloc;

struct vcmad_requester_ops {
	/* Region r is committed to the requester: make it ready (its memory zero as the
	 * requester sees it; fill r->gpa). 0, or -errno: the region is freed again and
	 * the allocation fails with that error. */
	int (*take)(struct vcmad_requester *rq, struct vcma_region *r);
	/* The answer to the allocation tagged `tag`: err 0 with the region, or -errno. */
	void (*answer)(struct vcmad_requester *rq, uint64_t tag, int err, const struct vcma_region *r);
	/* Region r was freed: release what it held in the requester's view. */
	void (*release)(struct vcmad_requester *rq, const struct vcma_region *r);
};

struct vcmad_requester {
	struct vcmad *d;
	const struct vcmad_requester_ops *ops;
	uint32_t owner; /* the guest id regions are recorded under */
	const char *name;
	const char *devclass; /* NULL: none */
	uint32_t max_regions;
	uint64_t max_bytes;
	/* counts */
	uint32_t nregions, pending; /* live; waiting for a vacate */
	uint64_t bytes, pending_bytes;
	uint64_t ok, failed;
	struct vcmad_alloc *waiting; /* allocations waiting for a vacate */
};

void vcmad_requester_init(struct vcmad_requester *rq, struct vcmad *d, const struct vcmad_requester_ops *ops,
			  uint32_t owner, const char *name, const char *devclass);

#define VCMAD_ALLOC_WAITING 1 /* answered later, when the vacate job ends */

/* Allocate for rq: 0 when answered already (ops->answer ran, OK or not),
 * VCMAD_ALLOC_WAITING when the window is being vacated. */
int vcmad_alloc(struct vcmad_requester *rq, uint64_t tag, const struct vcma_alloc_req *req);
/* Whoever waited for the allocation tagged `tag` is gone: it gets no answer, and its
 * window is released when its vacate job ends. */
void vcmad_alloc_drop(struct vcmad_requester *rq, uint64_t tag);
/* Free one of rq's regions: 0, -ENOENT (not rq's, stale, garbage), -EIO. */
int vcmad_free(struct vcmad_requester *rq, uint64_t handle);
/*
 * Held FREEs: between vcmad_free_hold() and vcmad_free_settle() (a guest's turn,
 * guest.c), vcmad_free() forgets the region at once (its handle, the requester's
 * counts and quota) but keeps its frames REGION, out of every search; settle makes
 * them FREE and has the requester release them (the sim link punches them then).
 * So a turn's answers and irq go out before the zeroing of what it freed, and no
 * frame can be handed to anyone before it is zeroed. An ALLOC that finds no window
 * of FREE frames while regions are held releases them first and looks again; a
 * requester that goes, or is abandoned, has its held regions released first, and a
 * pool QUERY releases them before it counts (a request after a FREE sees it done). Holds
 * nest; at most VCMAD_HELD_MAX regions are held, the FREEs beyond are released at once.
 */
void vcmad_free_hold(struct vcmad *d);
void vcmad_free_settle(struct vcmad *d);
/* Release the held regions now, the hold staying open (a pool QUERY counts them free). */
void vcmad_free_release_held(struct vcmad *d);
/* The requester is going: allocations waiting are dropped (their windows released
 * when their jobs end; no answer), every region freed. Returns how many. */
int vcmad_requester_gone(struct vcmad_requester *rq);

/* vcmad exits with rq attached: drop what waits, keep the regions as they are. */
void vcmad_requester_abandon(struct vcmad_requester *rq);

/* Frames of a pool that can no longer be handed out (the backend lost them): they
 * are reserved in the core, logged, and the pool is smaller from now on. They must
 * be free (no region holds them). */
void vcmad_pool_retire(struct vcmad *d, uint64_t mfn, uint64_t n, const char *why);

#endif
