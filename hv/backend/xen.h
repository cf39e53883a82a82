/* SPDX-License-Identifier: MIT */
/*
 * xen.h - the Xen backend ([daemon] backend = xen), for the xenbus guest link
 * (link/xenbus.c). docs/XEN.md says what Xen allows and why vcmad does this:
 *
 *   Xen owns machine memory and picks frames. vcmad holds each pool's capacity in a
 *   holder domain of its own (never run) as extents of the pool's largest region
 *   order; the core places regions on pool *slots*, and slot i is backed by the
 *   machine frame the holder holds for it. Giving a region to a guest moves the
 *   window's frames from the holder to the guest (decrease, then populate with the
 *   window's own zone: Xen hands the same frames back); taking it back reverses it.
 *
 * Built only with libxen-dev (meson option xen); vcmad_xen_of() is NULL otherwise.
 */
#ifndef VCMA_HV_BACKEND_XEN_H
#define VCMA_HV_BACKEND_XEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

struct vcmad_xen;
struct xs_handle;

extern const struct vcmad_backend_type vcmad_backend_xen;

struct vcmad_xen_stats {
	uint64_t given, taken;     /* regions moved into guests, and back */
	uint64_t give_ns, take_ns; /* time spent in those (Xen's populate/decrease, zeroing) */
	uint64_t moved;            /* Xen gave a guest other frames than its window's */
	uint64_t lost_frames;      /* window frames the holder could not hold again */
	uint64_t zeroed_frames;    /* zeroed through a foreign mapping */
	uint64_t zero_ns;          /* time spent on it (mapping, memset, unmapping) */
	uint64_t populate_failed;  /* a guest's populate found no block of its order */
	uint64_t holder_frames;    /* held now, all pools */
	uint64_t lent_frames;      /* released to lenders' balloons now */
	uint64_t reclaims, reclaims_short; /* balloon reclaims, and those that ended short */
	uint64_t reclaim_asked;    /* pages asked back from lenders */
};

struct vcmad_xen_dominfo {
	bool exists, dying, translated; /* translated: PVH or HVM */
	uint64_t tot_pages, max_pages;
};

/* be's Xen state, or NULL when be is another backend (or Xen is not built in). */
struct vcmad_xen *vcmad_xen_of(const struct vcmad_backend *be);
uint32_t vcmad_xen_self(const struct vcmad_xen *x);   /* vcmad's own domid */
/* The Xen libraries' logger vcmad uses: their critical messages only (vcmad says the rest). */
struct xentoollog_logger *vcmad_xen_logger(struct vcmad_xen *x);
uint32_t vcmad_xen_holder(const struct vcmad_xen *x); /* the holder domain */
struct xs_handle *vcmad_xen_xs(struct vcmad_xen *x);  /* xenstore, for the link */
void vcmad_xen_get_stats(const struct vcmad_xen *x, struct vcmad_xen_stats *st);
int vcmad_xen_dominfo(struct vcmad_xen *x, uint32_t domid, struct vcmad_xen_dominfo *out);

/* Largest region order of the pool holding slot (its chunk order), or -EINVAL. */
int vcmad_xen_max_order(struct vcmad_xen *x, uint64_t slot);

/*
 * Give domain domid the frames of pool slots [slot, slot + 2^order): raise its
 * max_pages, release the window from the holder, populate one extent of that order
 * into domid. *mfn: the extent's first machine frame; *moved: Xen chose other frames
 * than the window's (the window is held again meanwhile). The frames read as zero.
 * On error nothing changed (the window is held as before): -ENOMEM when Xen has no
 * free block of that order, other -errno.
 */
int vcmad_xen_give(struct vcmad_xen *x, uint32_t domid, uint64_t slot, unsigned int order, uint64_t *mfn,
		   bool *moved);
/*
 * Take the region back: zero it and release it from domid (unless domain_gone: Xen
 * took it back already), lower max_pages, and hold the window's frames again
 * (unless moved: they are held). Returns 0; or 1 when the holder could not hold the
 * window again: the caller retires those slots; or -errno when the region could
 * not be released (it stays the guest's).
 */
int vcmad_xen_take(struct vcmad_xen *x, uint32_t domid, uint64_t slot, unsigned int order, uint64_t mfn,
		   bool moved, bool domain_gone);
/* Read len bytes at byte off of domid's frames from mfn on (a PV guest's own). */
int vcmad_xen_read(struct vcmad_xen *x, uint32_t domid, uint64_t mfn, uint64_t off, void *buf, size_t len);

#endif
