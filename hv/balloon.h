/* SPDX-License-Identifier: MIT */
/*
 * balloon.h - lending idle pool capacity to lenders: guests that take it as ordinary
 * memory and give it back when an allocation needs it. One policy (which capacity
 * goes to which lender, and back); each lender has its own ops, the seam:
 *
 *   balloon  a Xen domain's balloon driver, [guest NAME] lender = yes: the backend's
 *            mem ops lender_room/lend/reclaim/unlend (backend.h, docs/XEN.md)
 *   vmem     a QEMU guest's virtio-mem device, lender = virtio-mem (vmem.h): plugged
 *            size = capacity lent; its driver is QMP (vmem_qmp.c) or libvirt's
 *
 *   lend     after relend_idle_ms of quiet (relend.c's timer), free 2 MiB units of
 *            lendable pools, from the top, go to the lenders with room (ops->room):
 *            the core marks the unit lent, ops->lend makes it the lender's
 *   reclaim  an allocation whose window holds lent slots: each lender holding some
 *            is asked for them (ops->reclaim) with its deadline; the window is served
 *            when all came back, or answered BUSY (what did not come back stays lent)
 *   add/remove  Xen lenders come from the config (vcmad_balloon_init); virtio-mem
 *            lenders register through vmem.h, from the config (vcmad_vmem_qmp_start)
 *            or at run time (libvirt discovery: vcmad_vmem_lender_add)
 *
 * Its state is struct vcmad_balloon in vcmad.h. In the core, lent slots are
 * LENT_FREE frames of the pseudo-guest VCMAD_BALLOON_GUEST(i) for lender slot i: the
 * window search counts their cost, and the maps show them as lent.
 */
#ifndef VCMA_HV_BALLOON_H
#define VCMA_HV_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

struct vcmad;
struct vcma_pool;
struct vcmad_lender;
struct vcmad_guest_conf;

#define VCMAD_BALLOON_GUEST_BASE 0xfff0u /* ids 0xfff0..0xffff: the core's frame map keeps 16 bits */
#define VCMAD_BALLOON_GUEST(i) (VCMAD_BALLOON_GUEST_BASE + (i))
#define VCMAD_BALLOON_UNIT 512u                         /* frames lent at a time: 2 MiB */
#define VCMAD_RECLAIM_TIMEOUT_NS (3000ull * 1000000ull) /* a Xen lender's balloon has this long */

/* One kind of lender. Frames are the core's (slots when the backend holds_frames).
 * Every op is called from the loop and must not block. */
struct vcmad_lender_ops {
	const char *kind; /* "balloon", "virtio-mem": logs and stats */
	/* How many more frames it can take now; -ENOENT (or any error): not now. */
	int (*room)(struct vcmad *d, struct vcmad_lender *l, uint64_t *frames);
	/* [mfn, mfn+count) of one pool, lent to it in the core already: make them its.
	 * -errno: not lent (balloon.c unlends them in the core). */
	int (*lend)(struct vcmad *d, struct vcmad_lender *l, uint64_t mfn, uint64_t count);
	/* Ask for count lent frames back (mfns[] need not be contiguous): done(arg, held)
	 * from the loop once all came back (held == count), or at deadline_ns or when
	 * the lender is lost with held < count (mfns[0..held) came back). Not before this
	 * returns 0; -errno: nothing started, no callback. */
	int (*reclaim)(struct vcmad *d, struct vcmad_lender *l, const uint64_t *mfns, uint64_t count,
		       uint64_t deadline_ns, void (*done)(void *arg, uint64_t held), void *arg);
	/* vcmad exits: what it was lent goes back, no wait. */
	void (*unlend)(struct vcmad *d, struct vcmad_lender *l);
	/* Optional (run-time lenders): it is being removed. Reclaims in flight end now
	 * (done with everything held: the capacity is vcmad's again), its state is freed;
	 * no callback after. NULL: it cannot be removed. */
	void (*remove)(struct vcmad *d, struct vcmad_lender *l);
};

void vcmad_balloon_init(struct vcmad *d);
/* Lend idle capacity (relend.c, when quiet). true if anything was lent. */
bool vcmad_balloon_lend(struct vcmad *d);
/* Lent frames in [start, start+count) of pool p that are lenders' (0: none). */
uint64_t vcmad_balloon_window_lent(const struct vcmad *d, const struct vcma_pool *p, uint64_t start, uint64_t count);
/* Take back the lenders' lent slots of the window [start, start+count) of pool p
 * (claimed by an allocation plan; frames lent to others are left to the caller):
 * done(arg, 0) once all are held and unlent in the core, or done(arg, -EBUSY) after
 * a lender's deadline. From the loop, never before this returns 0. -errno: nothing
 * started. */
int vcmad_balloon_reclaim(struct vcmad *d, struct vcma_pool *p, uint64_t start, uint64_t count,
			  int (*done)(void *arg, int err), void *arg);
/* Domains died or came (Xen): a lender that is gone gets its lent capacity held again. */
void vcmad_balloon_domains_changed(struct vcmad *d);
/* vcmad stops: lenders give back what they were lent (no wait). */
void vcmad_balloon_fini(struct vcmad *d);
/* Frames lent to lenders now, all pools. */
uint64_t vcmad_balloon_lent(const struct vcmad *d);

/* A lender of kind ops with state priv, named gc->name (its [guest NAME] or libvirt
 * domain). Its slot index (the pseudo-guest id) in *slot. -EEXIST (that name lends
 * already), -ENOSPC (16 lenders). Relending is kicked: it may lend at once. */
int vcmad_lender_register(struct vcmad *d, const struct vcmad_guest_conf *gc, const struct vcmad_lender_ops *ops,
			  void *priv, uint64_t reclaim_timeout_ns, struct vcmad_lender **out);
/* Remove a run-time lender: reclaims in flight end, its lent capacity is vcmad's
 * again at once (the guest is told to give it back, no wait). -ENOENT, -EOPNOTSUPP
 * (a Xen balloon lender: it goes with its domain). */
int vcmad_lender_remove(struct vcmad *d, const char *name);
struct vcmad_lender *vcmad_lender_find(struct vcmad *d, const char *name);

#endif
