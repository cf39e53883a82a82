/* SPDX-License-Identifier: MIT */
/*
 * link_ops.h - a guest link: how guests reach vcmad and see their regions. Each link
 * shares a ring area (proto/, ring.h) with each of its guests and carries kicks
 * and irqs; the guest itself (guest.h) is the same whatever the link.
 *
 *   sim      the attach socket: libvcma guests and simulated VMs (link/sim.c)
 *   ivshmem  QEMU guests, vcmad as their ivshmem-doorbell server (link/ivshmem.c)
 *   xenbus   Xen guests, vcmad the backend of their split device "vcma" (link/xenbus.c)
 *
 * A link serves the [guest NAME] sections of its kind: vcmad expects them at start,
 * and can expect or forget more at run time (vcmad_guest_expect/forget, guest.h).
 * Link-private state lives in the link (priv) and in each guest (g->link_priv, one
 * malloc'd block, freed with the guest after the loop iteration it was closed in:
 * epoll events of that iteration may still point at watches in it).
 * docs/ARCHITECTURE.md, "Adding a guest link", walks through writing one.
 */
#ifndef VCMA_HV_LINK_OPS_H
#define VCMA_HV_LINK_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "core.h"

struct json_object;
struct vcmad;
struct vcmad_guest;
struct vcmad_link;

struct vcmad_link_ops {
	const char *name;
	enum vcmad_guest_kind kind; /* the [guest] sections it serves; NONE: none */
	/* Open what guests connect to; stop closes it (and detaches nobody). */
	int (*start)(struct vcmad_link *l);
	void (*stop)(struct vcmad_link *l);
	/* A guest of this kind becomes known, or stops being known (after its detach). */
	int (*expect)(struct vcmad_link *l, const struct vcmad_guest_conf *gc);
	void (*forget)(struct vcmad_link *l, const struct vcmad_guest_conf *gc);
	/* Raise g's irq: 0, or -EPERM when the peer holds it so that raising it would
	 * block (a violation), other -errno (logged). */
	int (*notify)(struct vcmad_guest *g);
	/* Optional: fit an ALLOC to what the link can hand out before it is placed
	 * (xenbus: a power of two of pages, naturally aligned). */
	void (*shape)(struct vcmad_guest *g, struct vcma_alloc_req *req);
	/* Region r is g's from now: make its memory as g sees it zero. -ENOMEM or
	 * -ENOSPC: the memory cannot be had now (the guest hears so); -ENXIO: and the
	 * window's slots are lost for good (vcmad retires them); other: INTERNAL. */
	int (*place)(struct vcmad_guest *g, const struct vcma_region *r);
	/* Where g finds the region at machine frame mfn (gpa), and where g's devices
	 * DMA to it (bus). */
	void (*addr)(const struct vcmad_guest *g, uint64_t mfn, uint64_t *gpa, uint64_t *bus);
	/* Region r was freed: release what it held in g's view. */
	void (*clear)(struct vcmad_guest *g, const struct vcma_region *r);
	/* clear may wait until the answers of the guest's turn are out (alloc.h,
	 * vcmad_free_hold): nobody the guest can ask sees the difference. */
	bool hold_frees;
	/* Read bytes of r as g sees them. */
	int (*read)(struct vcmad_guest *g, const struct vcma_region *r, uint64_t off, void *buf, size_t len);
	/* g is going: close its fds and shared area. keep_memory: vcmad exits, so what g
	 * holds is left as it is; otherwise it is released. */
	void (*close)(struct vcmad_guest *g, bool keep_memory);
	/* Add the link's own facts about g for vcmactl guests (may be NULL). */
	void (*describe)(struct vcmad_guest *g, struct json_object *o);
};

struct vcmad_link {
	const struct vcmad_link_ops *ops;
	struct vcmad *d;
	void *priv;
};

#define VCMAD_NLINKS 3u
extern const struct vcmad_link_ops vcmad_link_sim, vcmad_link_ivshmem;
#ifdef VCMA_HAVE_XEN
extern const struct vcmad_link_ops vcmad_link_xenbus;
#endif

#endif
