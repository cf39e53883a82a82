/* SPDX-License-Identifier: MIT */
/*
 * scrub.h - zeroing pool frames after the fact. A guest that dies gives back its
 * regions and the pool frames lent to its RAM at once (they are FREE in the frame map
 * the moment its hang-up is seen), but zeroing them — on the sim backend a hole punch,
 * ~80 ms for 256 MiB of resident pages — is left to the scrubber, which works through
 * them 1 MiB per loop turn (a zero-delay timer, so guests are served between steps;
 * none while a vacate job holds a VM paused) and marks what it zeroed known zero
 * (core/fmap.h).
 *
 * Why this is safe: every path that hands a pool frame to a new owner zeroes it
 * unless it is known zero (a region: the link's place; lent RAM: vm.c at lend;
 * relend's destinations: cleared before the copy), and the scrubber zeroes only
 * frames that are FREE, unclaimed and not known zero at the moment it zeroes them
 * (vcma_fmap_next_unzeroed), in the same loop turn: a frame handed out meanwhile is
 * skipped. So the queue is only a list of places to look; losing it would cost host
 * memory and leave old bytes at rest in idle frames until their next owner, never
 * hand them to that owner. What can read bytes at rest in FREE frames: vcmad and
 * VMMs, which map all of machine memory and are trusted as QEMU is.
 */
#ifndef VCMA_HV_SCRUB_H
#define VCMA_HV_SCRUB_H

#include <stdint.h>

struct vcmad;

/* Frames zeroed per loop turn, at most: 1 MiB, ~0.3 ms of hole punching for resident
 * pages on the sim backend, so a guest's request waits at most that behind it. */
#define VCMAD_SCRUB_STEP_FRAMES 256u
/* While a vacate job holds a VM paused the scrubber waits this long and looks again. */
#define VCMAD_SCRUB_DEFER_NS 200000ull

void vcmad_scrub_init(struct vcmad *d);
void vcmad_scrub_fini(struct vcmad *d);

/* Pool frames [mfn, mfn+n) were just made FREE holding someone's bytes: zero them
 * soon. Adjacent calls coalesce. Out of memory for the queue: zeroed now instead. */
void vcmad_scrub_add(struct vcmad *d, uint64_t mfn, uint64_t n);

#endif
