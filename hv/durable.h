/* SPDX-License-Identifier: MIT */
/*
 * durable.h - vcmad's ownership, on disk before anyone can observe it (issue 16): the
 * glue between the daemon's state and the store (store/store.h) in [daemon] state_dir.
 *
 * What is recorded, and by whom:
 *   pools      at start (vcmad_durable_open): their geometry
 *   guests     attach and detach (guest.c)
 *   regions    grant and free (alloc.c)
 *   VMs' p2m   every change of a gfn's backing marks its chunk of VCMAD_DURABLE_CHUNK
 *              gfns (vm.c, vacate.c: vcmad_durable_p2m); the turn's end rewrites each
 *              marked chunk as runs (consecutive gfns on consecutive mfns, never
 *              crossing a chunk)
 *
 * Group commit: the changes of one loop turn are one store transaction, committed
 * with one fsync by vcmad_durable_turn_end(), which the loop calls after everything
 * else in the turn. An allocation granted during the turn is not answered at once:
 * alloc.c hands its answer to vcmad_durable_hold(), and it goes out only after the
 * commit. So a region is durable before its owner hears of it, and one fsync covers
 * every guest served in the turn. FREEs are answered at once: a region recorded
 * after it was freed is a leak at worst, and its record is gone in the same turn's
 * commit, before any later turn can record its frames as someone else's.
 *
 * In sync or stale: a turn that cannot be committed (full disk: ENOSPC; I/O error)
 * makes the store stale. The regions granted in that turn are taken back and their
 * answers become NO_SPACE; while stale nothing more is granted (NO_SPACE at once),
 * and every turn tries to write the whole state anew in one transaction; when that
 * commits the store is in sync again. What was committed before is never touched.
 *
 * Restart (taking guests back from the store) is not built yet: a store that holds a
 * previous run's guests, regions or p2m is moved aside at start (DIR/previous-TXN/,
 * logged with its counts) and vcmad starts afresh, as it did before the store.
 * Single-threaded: vcmad's loop only.
 */
#ifndef VCMAD_DURABLE_H
#define VCMAD_DURABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/region.h"

struct vcmad;
struct vcmad_vm;
struct vcmad_guest;
struct vcmad_requester;

#define VCMAD_DURABLE_CHUNK 4096u /* gfns per p2m chunk (16 MiB) */

/* Open (or create) the store in d->conf.state_dir and record the pools; "" = off (every
 * call below then does nothing and nothing is held). -errno with a message logged. */
int vcmad_durable_open(struct vcmad *d);
void vcmad_durable_close(struct vcmad *d);
bool vcmad_durable_on(const struct vcmad *d);

/* May a region be granted now? -ENOSPC while the store is stale. */
int vcmad_durable_may_grant(struct vcmad *d);
/* A region was granted to (-ENOSPC: it could not be recorded; the caller takes it
 * back) or freed by its requester. */
int vcmad_durable_region_new(struct vcmad *d, const struct vcma_region *r);
void vcmad_durable_region_gone(struct vcmad *d, uint64_t handle);
/* Hold the answer to a granted allocation until the turn commits: true if held (the
 * caller must not answer), false if the store is off (answer now). */
bool vcmad_durable_hold(struct vcmad_requester *rq, uint64_t tag, const struct vcma_region *r);
/* The requester goes away: its held answers are dropped (its regions go with it). */
void vcmad_durable_forget(struct vcmad_requester *rq);
/* Nobody waits for the answer to rq's allocation tag any more: if it is held, its
 * region is freed and nothing is answered. */
void vcmad_durable_drop(struct vcmad_requester *rq, uint64_t tag);

void vcmad_durable_guest_new(struct vcmad *d, const struct vcmad_guest *g);
void vcmad_durable_guest_gone(struct vcmad *d, uint32_t id);

/* The backing of gfns [gfn, gfn+n) of vm changed (or the VM is new: all of it). */
void vcmad_durable_p2m(struct vcmad_vm *vm, uint64_t gfn, uint64_t n);
/* The VM goes away: its p2m records go, or stay (keep: vcmad exits and the VM keeps
 * its memory); its struct holds no durable state after. */
void vcmad_durable_vm_gone(struct vcmad_vm *vm, bool keep);

/* End of a loop turn: write the marked p2m chunks, commit, then answer what was held
 * (or take it back: NO_SPACE). */
void vcmad_durable_turn_end(struct vcmad *d);

#endif
