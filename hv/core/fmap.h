/* SPDX-License-Identifier: MIT */
/*
 * fmap.h - frame state map of one pool, with the summaries the window search walks.
 *
 * A pool is nframes machine frames starting at mfn `base`. Each frame has a state
 * (enum vcma_frame_state), a claimed bit, and for lent frames the (guest, gfn) it
 * backs. Frames are grouped in granules of 256 and superblocks of 64 granules; each
 * keeps counts and run summaries so a search skips what cannot hold a window.
 *
 * Ownership: the fmap owns its arrays. Locking: none; the pool's owner serializes.
 * Every mutator validates the transition and returns -errno on a wrong one, leaving
 * the map untouched.
 */
#ifndef VCMA_CORE_FMAP_H
#define VCMA_CORE_FMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vcma_frame_state {
	VCMA_FRAME_FREE = 0,
	VCMA_FRAME_LENT_FREE = 1,
	VCMA_FRAME_LENT_USED = 2,
	VCMA_FRAME_REGION = 3,
	VCMA_FRAME_RESERVED = 4,
	VCMA_FRAME_NSTATES
};

#define VCMA_FMAP_GRANULE_SHIFT 8u /* 256 frames = 1 MiB */
#define VCMA_FMAP_GRANULE (1u << VCMA_FMAP_GRANULE_SHIFT)
#define VCMA_FMAP_SUPER_SHIFT 6u /* 64 granules = 64 MiB */
#define VCMA_FMAP_SUPER_FRAMES (VCMA_FMAP_GRANULE << VCMA_FMAP_SUPER_SHIFT)
#define VCMA_FMAP_MAX_ORDER 18u /* largest alignment order accepted: 1 GiB */
#define VCMA_FMAP_MAX_FRAMES (1ull << 36) /* 256 TiB of 4 KiB frames */
#define VCMA_GUEST_MAX 0xffffu
#define VCMA_GFN_MAX ((1ull << 44) - 1)

/* Run summary over one predicate: runs touching the start/end, longest inside. */
struct vcma_runsum {
	uint32_t pre;
	uint32_t suf;
	uint32_t max;
};

/* Per granule and per superblock. Invariant (checked by vcma_fmap_check()): every
 * field equals what recomputing it from the bitmaps gives. */
struct vcma_fsum {
	uint32_t nblocked; /* REGION, RESERVED, claimed, or past the end */
	uint32_t nlf;      /* LENT_FREE, not claimed */
	uint32_t nlu;      /* LENT_USED, not claimed */
	uint32_t cost;     /* nlf * cost_lf + nlu * cost_lu */
	uint32_t mincost;  /* lowest cost of a granule without blocked frames, or UINT32_MAX */
	struct vcma_runsum free;      /* runs of FREE frames */
	struct vcma_runsum unblocked; /* runs of not-blocked frames */
	/* Runs of whole granules that are all FREE / all unblocked, counted in granules
	 * (a granule's own: 1 or 0). Lets a search for n >= 256 frames at alignment
	 * >= 256 skip superblocks holding long but misaligned runs. */
	struct vcma_runsum gfree;
	struct vcma_runsum gunblocked;
};

struct vcma_fmap {
	uint64_t base;    /* mfn of frame 0 */
	uint64_t nframes; /* frames in the pool */
	uint64_t ngran;   /* granules, last one padded with blocked frames */
	uint64_t nsuper;
	uint32_t cost_lf, cost_lu;
	uint64_t *ent;      /* [nframes] packed entry, see fmap.c */
	uint64_t *blocked;  /* [ngran*4] bit set: not usable by a window */
	uint64_t *lf;       /* [ngran*4] LENT_FREE (claimed or not) */
	uint64_t *lu;       /* [ngran*4] LENT_USED (claimed or not) */
	/* [ngran*4] known to read as zero: set by vcma_fmap_mark_zeroed() on FREE frames,
	 * cleared when a frame is lent, reserved, unclaimed or released, and taken by
	 * vcma_fmap_take_zeroed() when a region's owner is about to be given them. Set
	 * only on FREE or REGION frames (checked). */
	uint64_t *zeroed;
	struct vcma_fsum *gsum; /* [ngran] */
	uint32_t *gcost;        /* [ngran] granule cost, UINT32_MAX if it holds a blocked frame */
	struct vcma_fsum *ssum; /* [nsuper] */
	uint64_t count[VCMA_FRAME_NSTATES];
	uint64_t nclaimed;
	uint32_t batch;     /* open vcma_fmap_batch_begin()s: summaries deferred */
	uint64_t *gdirty;   /* [ngran/64] granules whose summaries a batch left stale */
};

/* What a frame is; returned by vcma_fmap_get(). */
struct vcma_frame_info {
	enum vcma_frame_state state;
	bool claimed;
	uint32_t guest; /* lent: the guest it backs; region: the owner */
	uint64_t gfn;   /* lent: the guest frame it backs */
};

int vcma_fmap_init(struct vcma_fmap *fm, uint64_t base, uint64_t nframes, uint32_t cost_lf,
		   uint32_t cost_lu);
void vcma_fmap_fini(struct vcma_fmap *fm);

int vcma_fmap_get(const struct vcma_fmap *fm, uint64_t idx, struct vcma_frame_info *fi);

/*
 * Many changes in a row (a vacate batch commits thousands of frames): between
 * batch_begin and batch_end the changes only mark their granules stale, and
 * batch_end recomputes each stale granule and superblock once. Frame states,
 * counts and vcma_fmap_get() stay exact inside a batch; the search summaries do
 * not, so no search may run inside one. Batches nest.
 */
void vcma_fmap_batch_begin(struct vcma_fmap *fm);
void vcma_fmap_batch_end(struct vcma_fmap *fm);

/* FREE -> RESERVED over [idx, idx+n), all or nothing. */
int vcma_fmap_reserve(struct vcma_fmap *fm, uint64_t idx, uint64_t n);
/* RESERVED -> FREE over [idx, idx+n), all or nothing. */
int vcma_fmap_unreserve(struct vcma_fmap *fm, uint64_t idx, uint64_t n);
/* FREE (unclaimed) -> LENT_FREE / LENT_USED backing (guest, gfn). */
int vcma_fmap_lend(struct vcma_fmap *fm, uint64_t idx, uint32_t guest, uint64_t gfn, bool used);
/* LENT_FREE <-> LENT_USED (the guest reported the page free or used it again). */
int vcma_fmap_set_used(struct vcma_fmap *fm, uint64_t idx, bool used);
/* LENT_* -> FREE (the guest page is now backed elsewhere). Keeps the claimed bit. */
int vcma_fmap_unlend(struct vcma_fmap *fm, uint64_t idx);
/* Claim / unclaim a window: no frame may be blocked (claim) / all must be claimed. */
int vcma_fmap_claim(struct vcma_fmap *fm, uint64_t idx, uint64_t n);
int vcma_fmap_unclaim(struct vcma_fmap *fm, uint64_t idx, uint64_t n);
/* Claimed and all FREE -> REGION owned by guest; clears the claim. */
int vcma_fmap_commit_region(struct vcma_fmap *fm, uint64_t idx, uint64_t n, uint32_t guest);
/* REGION -> FREE over [idx, idx+n). */
int vcma_fmap_release_region(struct vcma_fmap *fm, uint64_t idx, uint64_t n);

/*
 * Zero tracking, for callers whose zeroing costs (the sim backend punches holes): a
 * frame is *known zero* from a mark_zeroed() (its caller zeroed it while it was FREE)
 * until it is lent, reserved, unclaimed (a claim that ends without a commit may have
 * been a vacate's destination, copied into), released as a region, or taken. A
 * region committed
 * from known-zero frames holds no previous owner's data, so its owner need not be
 * given it zeroed again. The bits are a promise of the caller of mark_zeroed(), not
 * something the map can check.
 */
/* [idx, idx+n) all FREE: mark them known zero. -EBUSY otherwise. Claimed frames may be
 * marked by their claimer only (an allocation clears its window's frames as they are
 * vacated), which writes nothing there afterwards; unclaim() forgets the mark. */
int vcma_fmap_mark_zeroed(struct vcma_fmap *fm, uint64_t idx, uint64_t n);
/* From idx on (at most n frames): how many frames in a row are known zero (*zero true)
 * or all are not (*zero false). n for a range outside the pool, *zero false. */
uint64_t vcma_fmap_zeroed_run(const struct vcma_fmap *fm, uint64_t idx, uint64_t n, bool *zero);
/* Were all of [idx, idx+n) known zero? Clears the bits either way: the frames are
 * about to be written by their new owner. */
bool vcma_fmap_take_zeroed(struct vcma_fmap *fm, uint64_t idx, uint64_t n);
/* The first run inside [idx, end) of frames that are FREE, unclaimed and not known
 * zero (what may be zeroed now and then marked): returns its first frame and sets
 * *len, or returns end (and *len = 0) when there is none. end is capped at nframes. */
uint64_t vcma_fmap_next_unzeroed(const struct vcma_fmap *fm, uint64_t idx, uint64_t end, uint64_t *len);

/* Longest run of FREE frames anywhere in the pool. */
uint64_t vcma_fmap_largest_free_run(const struct vcma_fmap *fm);

/* Recompute every summary and count from the entries; 0 if all agree, -EIO if not. */
int vcma_fmap_check(const struct vcma_fmap *fm);

/* Bytes of metadata this map holds (entries, bitmaps, summaries). */
size_t vcma_fmap_metadata_bytes(const struct vcma_fmap *fm);

/* ---- window search (search.c) ---- */

struct vcma_window {
	uint64_t start; /* frame index in the pool */
	uint64_t count;
	uint64_t cost;
	uint64_t nfree, nlent_free, nlent_used;
};

/* Cheapest window of n frames whose first mfn is a multiple of 2^align_order; among
 * equal cost the lowest. 0 and *w filled, -ENOSPC if every candidate holds a blocked
 * frame, -EINVAL for n == 0, n > nframes or align_order > VCMA_FMAP_MAX_ORDER. */
int vcma_fmap_search(const struct vcma_fmap *fm, uint64_t n, unsigned int align_order,
		     struct vcma_window *w);

/* Cost of [idx, idx+n) as the search counts it, or UINT64_MAX if a frame is blocked. */
uint64_t vcma_fmap_window_cost(const struct vcma_fmap *fm, uint64_t idx, uint64_t n);

struct vcma_vacate_item {
	uint64_t idx; /* frame index in the pool */
	uint32_t guest;
	enum vcma_frame_state state; /* LENT_FREE or LENT_USED */
	uint64_t gfn;
};

/* List the lent frames in [idx, idx+n) in address order, at most max of them;
 * returns how many there are in total (may exceed max), or -EINVAL. */
int64_t vcma_fmap_collect_lent(const struct vcma_fmap *fm, uint64_t idx, uint64_t n,
			       struct vcma_vacate_item *items, size_t max);

#endif
