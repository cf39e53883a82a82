/* SPDX-License-Identifier: MIT */
/*
 * region.h - the region table: daemon-issued handles (generation << 32 | slot),
 * scoped to the owning guest.
 *
 * A handle that is stale (its slot was freed or reused), belongs to another guest, or
 * is garbage is -ENOENT on every call; the table never trusts a handle as an index
 * before checking slot bounds and generation. Slots are reused through a free list;
 * the generation of a slot is bumped on free so old handles never match again.
 */
#ifndef VCMA_CORE_REGION_H
#define VCMA_CORE_REGION_H

#include <stdint.h>

struct vcma_region {
	uint64_t handle;
	uint32_t guest;
	uint32_t pool;   /* index in the core's pool array */
	uint64_t mfn;    /* first machine frame */
	uint64_t nframes;
	uint64_t gpa;    /* guest-physical base, set by the transport; 0 if none */
	uint32_t flags;
};

struct vcma_region_slot {
	uint32_t gen;     /* generation of the current/next occupant, >= 1 */
	uint32_t live;    /* 1 if r is a live region */
	uint32_t next_free;
	struct vcma_region r;
};

struct vcma_regions {
	struct vcma_region_slot *slot;
	uint32_t nslots, cap;
	uint32_t free_head; /* UINT32_MAX when empty */
	uint32_t nlive;
	uint32_t max_slots; /* hard bound on the table */
	uint32_t gen_floor;  /* generation new slots start at (1; above every restored one) */
	uint32_t free_stale; /* regions were restored: the free list is rebuilt first */
	uint32_t max_gen;    /* the highest generation issued (or restored): vcmad records it */
};

#define VCMA_REGIONS_DEFAULT_MAX (1u << 20)

int vcma_regions_init(struct vcma_regions *t, uint32_t max_slots);
void vcma_regions_fini(struct vcma_regions *t);

/* Insert a copy of *r (handle field ignored); the new handle is stored in r->handle.
 * -ENOSPC when max_slots regions are live, -ENOMEM. */
int vcma_regions_insert(struct vcma_regions *t, struct vcma_region *r);
/* Insert *r under the handle it carries (a region taken back from vcmad's record after
 * a restart): its slot must be free (-EEXIST otherwise), gen >= 1. Slots created on
 * the way are free, and every slot made from now on starts above r's generation, so
 * no handle issued before the restart is issued again to another region. */
int vcma_regions_insert_at(struct vcma_regions *t, const struct vcma_region *r);
/* The live region `handle` of `guest`, or NULL. */
const struct vcma_region *vcma_regions_lookup(const struct vcma_regions *t, uint32_t guest,
					      uint64_t handle);
/* Remove; *out gets the removed region. -ENOENT if not a live handle of guest. */
int vcma_regions_remove(struct vcma_regions *t, uint32_t guest, uint64_t handle,
			struct vcma_region *out);
/* Set the guest-physical base of a live region. */
int vcma_regions_set_gpa(struct vcma_regions *t, uint32_t guest, uint64_t handle, uint64_t gpa);

/* Iterate: returns the next live region after *cursor (start with 0), or NULL. */
const struct vcma_region *vcma_regions_next(const struct vcma_regions *t, uint32_t *cursor);

#endif
