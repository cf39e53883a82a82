/* SPDX-License-Identifier: MIT */
/*
 * balloon.h - balloon lending, for a backend whose hypervisor owns machine memory
 * (Xen; docs/XEN.md): idle pool capacity backs lender domains' ordinary memory
 * through their balloon drivers, and comes back when an allocation needs it.
 *
 *   lend     after relend_idle_ms of quiet (relend.c's timer), free 2 MiB runs of
 *            lendable pools, from the top, go to the configured lenders
 *            ([guest NAME] lender = yes) with room: the backend releases the frames
 *            and raises the lender's memory target by as much
 *   reclaim  an allocation whose window holds lent slots: the backend lowers the
 *            lenders' targets and holds frames again as Xen has them free (at once
 *            when it has free memory, else as the balloons give pages back); the
 *            window is served when all are held, or answered BUSY after
 *            VCMAD_RECLAIM_TIMEOUT_NS
 *
 * Its state is struct vcmad_balloon in vcmad.h. In the core, lent slots are
 * LENT_FREE frames of the pseudo-guest VCMAD_BALLOON_GUEST(i) for lender i: the
 * window search counts their cost, and the maps show them as lent.
 */
#ifndef VCMA_HV_BALLOON_H
#define VCMA_HV_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

struct vcmad;
struct vcma_pool;

#define VCMAD_BALLOON_GUEST_BASE 0xfff0u /* ids 0xfff0..0xffff: the core's frame map keeps 16 bits */
#define VCMAD_BALLOON_GUEST(i) (VCMAD_BALLOON_GUEST_BASE + (i))
#define VCMAD_BALLOON_UNIT 512u                         /* frames lent at a time: 2 MiB */
#define VCMAD_RECLAIM_TIMEOUT_NS (3000ull * 1000000ull) /* a lender's balloon has this long */

void vcmad_balloon_init(struct vcmad *d);
/* Lend idle capacity (relend.c, when quiet). true if anything was lent. */
bool vcmad_balloon_lend(struct vcmad *d);
/* Take back the lent slots of the window [start, start+count) of pool p (claimed by
 * an allocation plan): done(arg, 0) once all are held and unlent in the core, or
 * done(arg, -EBUSY) after the timeout. From the loop, never before this returns 0.
 * -errno: nothing started. */
int vcmad_balloon_reclaim(struct vcmad *d, struct vcma_pool *p, uint64_t start, uint64_t count,
			  int (*done)(void *arg, int err), void *arg);
/* Domains died or came: a lender that is gone gets its lent capacity held again. */
void vcmad_balloon_domains_changed(struct vcmad *d);
/* vcmad stops: lenders give back what they were lent (targets lowered, no wait). */
void vcmad_balloon_fini(struct vcmad *d);
/* Frames lent to lenders now, all pools. */
uint64_t vcmad_balloon_lent(const struct vcmad *d);

#endif
