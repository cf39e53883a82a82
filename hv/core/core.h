/* SPDX-License-Identifier: MIT */
/*
 * core.h - the contiguous-memory core: pools and regions, the allocation flow.
 *
 *   vcma_core ─┬─ vcma_pool[]   policy (pool_config.h) + frames (fmap.h)
 *              │                + per-guest usage + counters (stats.h)
 *              └─ vcma_regions  handles scoped to guests (region.h)
 *
 * No I/O, no threads, no hypervisor calls: moving lent frames out of a window is the
 * caller's vacate hook (the daemon's backend). Locking: the caller serializes all
 * calls on one core. Every function returns 0 / a count, or -errno; none aborts.
 */
#ifndef VCMA_CORE_CORE_H
#define VCMA_CORE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fmap.h"
#include "pool_config.h"
#include "region.h"
#include "stats.h"

#define VCMA_MAX_POOLS 64u
#define VCMA_POOL_MAX_GUESTS 4096u /* distinct guests with usage in one pool */

/* Who is asking. name and devclass may be NULL. */
struct vcma_requester {
	uint32_t guest;
	const char *name;
	const char *devclass;
};

/* A guest's share of a pool. The quota counts what is promised as well as what is
 * granted: an allocation holds its bytes in `promised` from begin (its window is
 * claimed) until finish moves them to `bytes`, or abort drops them. */
struct vcma_guest_usage {
	uint32_t guest;
	uint64_t bytes;    /* in live regions */
	uint32_t regions;
	uint64_t promised; /* in allocations begun and not yet finished or aborted */
	uint32_t pending;
};

struct vcma_pool {
	struct vcma_pool_config cfg;
	uint32_t index;
	uint64_t quota; /* resolved per-guest bytes, UINT64_MAX = none */
	struct vcma_fmap fm;
	struct vcma_pool_stats stats;
	struct vcma_guest_usage *usage; /* unsorted, small */
	uint32_t nusage, usage_cap;
	uint64_t relend_hold_until; /* vcmad: no relending before this (ns) */
	uint64_t quarantined;       /* vcmad: of the claimed frames, those held for an unresponsive VM */
};

/* Called with the lent frames of a claimed window; must return every one of them to
 * FREE (vcma_pool_unlend()) and return 0, or return -errno. On error, frames it did
 * return stay FREE; the rest stay lent; the allocation fails. */
struct vcma_vacate_ops {
	int (*vacate)(void *ctx, struct vcma_pool *pool, const struct vcma_vacate_item *items,
		      size_t n);
	void *ctx;
};

struct vcma_core {
	struct vcma_pool *pool[VCMA_MAX_POOLS];
	uint32_t npools;
	struct vcma_regions regions;
};

int vcma_core_init(struct vcma_core *core);
void vcma_core_fini(struct vcma_core *core);

/* Add a pool of nframes at machine frame base_mfn; cfg must validate. Returns the
 * pool index (>= 0) or -errno (-EEXIST for a duplicate name). */
int vcma_core_add_pool(struct vcma_core *core, const struct vcma_pool_config *cfg,
		       uint64_t base_mfn, uint64_t nframes);
struct vcma_pool *vcma_core_pool_by_name(struct vcma_core *core, const char *name);
/* The pool machine frame mfn belongs to, or NULL (ordinary memory). */
struct vcma_pool *vcma_core_pool_of(struct vcma_core *core, uint64_t mfn);
/* Around many frame map changes in a row, in any pools: summaries are recomputed
 * once at the end (vcma_fmap_batch_begin); no search may run in between. */
void vcma_core_batch_begin(struct vcma_core *core);
void vcma_core_batch_end(struct vcma_core *core);
/* May who allocate from (and learn about) p: shared, or bound to its name or class? */
bool vcma_pool_serves(const struct vcma_pool *p, const struct vcma_requester *who);

/* Alignment order a request of nframes gets in pool p with an explicit minimum
 * explicit_order (0 for none). */
unsigned int vcma_pool_align_order(const struct vcma_pool *p, uint64_t nframes,
				   unsigned int explicit_order);

struct vcma_alloc_req {
	uint64_t bytes;
	unsigned int align_order; /* explicit minimum, 0 = natural */
	uint32_t flags;
	const char *pool; /* NULL: the requester's exclusive pool if any, else the first shared one */
};

/*
 * Allocate a region. Errors:
 *   -EINVAL  zero or unrepresentable size, bad alignment order
 *   -ERANGE  below the shared pool's minimum request: use normal memory
 *   -ENODEV  no such pool / no pool serves this requester
 *   -EACCES  exclusive pool bound to someone else
 *   -EDQUOT  the guest's quota in this pool would be exceeded
 *   -E2BIG   larger than the whole pool
 *   -ENOSPC  no window free of regions and reserved frames
 *   -EUSERS  the pool already tracks VCMA_POOL_MAX_GUESTS guests
 *   -EBUSY   the window holds lent frames and there is no vacate hook
 *   other    what the vacate hook returned
 */
int vcma_core_alloc(struct vcma_core *core, const struct vcma_requester *who,
		    const struct vcma_alloc_req *req, const struct vcma_vacate_ops *ops,
		    struct vcma_region *out);
/*
 * The same flow in steps, for callers that vacate asynchronously (vcmad):
 *   begin   policy checks, search, claim: the errors above; 0 with *plan holding a
 *           claimed window with plan->w.nlent_free + nlent_used lent frames
 *   ...     the caller returns every lent frame of the window to FREE
 *           (vcma_pool_unlend), over as many loop turns as it likes
 *   finish  commit the region: 0, or -EBUSY if a frame is still lent (plan stays
 *           claimed), or -ENOMEM/-ENOSPC (plan dropped, counted as failed)
 *   abort   give the window up (frames already vacated stay FREE); counted as failed
 * Claimed frames are invisible to every other search, so plans for disjoint windows
 * proceed side by side.
 */
struct vcma_alloc_plan {
	struct vcma_pool *pool; /* NULL once finished or aborted */
	struct vcma_window w;
	uint32_t guest;
	uint32_t flags;
	uint64_t t0;
};
int vcma_core_alloc_begin(struct vcma_core *core, const struct vcma_requester *who,
			  const struct vcma_alloc_req *req, struct vcma_alloc_plan *plan);
int vcma_core_alloc_finish(struct vcma_core *core, struct vcma_alloc_plan *plan, struct vcma_region *out);
void vcma_core_alloc_abort(struct vcma_core *core, struct vcma_alloc_plan *plan);
/* begin and abort for a look that may be repeated (vcmad releases memory it held and
 * looks again): the same, except that a failure is not counted in the pool's stats. */
int vcma_core_alloc_try(struct vcma_core *core, const struct vcma_requester *who,
			const struct vcma_alloc_req *req, struct vcma_alloc_plan *plan);
void vcma_core_alloc_drop(struct vcma_core *core, struct vcma_alloc_plan *plan);

/* Free a region of guest. -ENOENT for a stale, foreign or garbage handle. */
/* Take back a region recorded before a restart, under its own handle and frames (all
 * FREE: -EEXIST if any is not, -ERANGE outside its pool). */
int vcma_core_restore_region(struct vcma_core *core, const struct vcma_region *r);
int vcma_core_free(struct vcma_core *core, uint32_t guest, uint64_t handle);
/*
 * A free in two steps, for a caller that releases the memory later (vcmad: after the
 * answers of the guest's turn are out, alloc.h): free_held forgets the region (the
 * handle is gone, the guest's usage drops) but leaves its frames REGION, so no search
 * can hand them out; release_held makes them FREE then. Between the two the pool's
 * REGION count includes the held frames. Errors as vcma_core_free(); release_held:
 * -ENOENT outside every pool, -EIO if the frames are not REGION.
 */
int vcma_core_free_held(struct vcma_core *core, uint32_t guest, uint64_t handle);
int vcma_core_release_held(struct vcma_core *core, uint64_t mfn, uint64_t nframes);
/* Free every region of guest (it detached or died); returns how many. */
int vcma_core_release_guest(struct vcma_core *core, uint32_t guest);
const struct vcma_region *vcma_core_lookup(const struct vcma_core *core, uint32_t guest,
					   uint64_t handle);

/* Zero tracking by machine frame (fmap.h): [mfn, mfn+n) must lie in one pool.
 * mark: -ENOENT outside every pool, else as vcma_fmap_mark_zeroed(); take: false
 * outside every pool. */
int vcma_core_mark_zeroed(struct vcma_core *core, uint64_t mfn, uint64_t n);
bool vcma_core_take_zeroed(struct vcma_core *core, uint64_t mfn, uint64_t n);
/* vcma_fmap_zeroed_run() by machine frame: n, *zero false, outside every pool. */
uint64_t vcma_core_zeroed_run(struct vcma_core *core, uint64_t mfn, uint64_t n, bool *zero);

/* Frame lending, with the pool's counters kept: see fmap.h for the transitions. */
int vcma_pool_lend(struct vcma_pool *p, uint64_t idx, uint32_t guest, uint64_t gfn, bool used);
int vcma_pool_set_used(struct vcma_pool *p, uint64_t idx, bool used);
int vcma_pool_unlend(struct vcma_pool *p, uint64_t idx);

/* Live counters of a pool. */
struct vcma_pool_counts {
	uint64_t nframes, free, lent_free, lent_used, region, reserved;
	uint64_t claimed;     /* by allocations vacating their windows */
	uint64_t quarantined; /* lent to unresponsive VMs, kept out of allocations */
	uint64_t largest_free_run;
	uint32_t regions;
};
void vcma_pool_counts(const struct vcma_pool *p, struct vcma_pool_counts *c);
const struct vcma_guest_usage *vcma_pool_usage(const struct vcma_pool *p, uint32_t guest);

/* Map of a pool, one character per block of frames_per_char frames, written to buf
 * (NUL-terminated, at most len-1 characters; returns characters written):
 *   '.' all free   'l' some lent, no region   'L' all lent
 *   '#' all region 'r' region mixed with free/lent   'x' holds reserved frames */
size_t vcma_pool_fragmap(const struct vcma_pool *p, uint64_t frames_per_char, char *buf,
			 size_t len);

/* Human-readable text for a core error code (negative errno). */
const char *vcma_core_strerror(int err);

#endif
