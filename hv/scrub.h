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
 *
 * A QEMU guest's regions are not machine frames but its BAR's memfd, one per
 * connection and never given to anyone else: at its detach the link hands the memfd
 * over whole (vcmad_scrub_release_file) instead of punching it region by region; the
 * scrubber punches what holds memory 2 MiB per turn, then closes it. Until then only
 * that guest's QEMU, if it still runs, can see its own old bytes.
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

/* A detached guest's own shared memory (a QEMU guest's BAR: its memfd, which nobody
 * is given again): punch [off, off+len) of fd, what holds memory, a 2 MiB chunk per
 * loop turn (whole huge pages on hugetlbfs), then munmap map (map_size bytes; NULL:
 * none) and close fd. Takes fd and map: out of memory, they are punched and closed now. */
void vcmad_scrub_release_file(struct vcmad *d, int fd, void *map, size_t map_size, uint64_t off, uint64_t len);

#endif
