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
 * Restart: a store that holds a previous run's guests, regions or p2m is kept for
 * restore.c to take back when the machine memory they live in was kept too
 * (be.mem_reopened: the sim backend's file); otherwise (the host restarted, or memory
 * that dies with vcmad) it is moved aside at start (DIR/previous-TXN/, or
 * previous-TXN.N/ when an earlier copy has that name, logged with its counts) and
 * vcmad starts afresh, machine memory zeroed.
 * Single-threaded: vcmad's loop only.
 */
#ifndef VCMAD_DURABLE_H
#define VCMAD_DURABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "core/region.h"

struct vcmad;

#define VCMAD_DURABLE_CHUNK 4096u /* gfns per p2m chunk (16 MiB) */

/* Open (or create) the store in the state directory (vcmad_conf_state_dir) and record
 * the pools; none = off (every call below then does nothing and nothing is held).
 * -errno with a message logged. */
int vcmad_durable_open(struct vcmad *d);
void vcmad_durable_close(struct vcmad *d);
bool vcmad_durable_on(const struct vcmad *d);

/* May a region be granted now? -ENOSPC while the store is stale. */
int vcmad_durable_may_grant(struct vcmad *d);
/* A region was granted (-ENOSPC: it could not be recorded; the caller takes it back)
 * or freed. */
int vcmad_durable_region_new(struct vcmad *d, const struct vcma_region *r);
void vcmad_durable_region_gone(struct vcmad *d, uint64_t handle);

/* What becomes of an answer held for the turn's commit: outcome 0 (recorded: answer
 * it), -ENOSPC (not recorded: take the region back, answer NO_SPACE) or -ECANCELED
 * (nobody waits for it any more: free the region, answer nothing). */
typedef void (*vcmad_durable_answer_fn)(void *rq, uint64_t tag, const struct vcma_region *r, int outcome);
/* Hold requester rq's answer to a granted allocation until the turn commits: true if
 * held (fn settles it), false if the store is off (answer now). */
bool vcmad_durable_hold(struct vcmad *d, void *rq, uint64_t tag, const struct vcma_region *r,
			vcmad_durable_answer_fn fn);
/* rq goes away: its held answers are dropped without a call (its regions go with it). */
void vcmad_durable_forget(struct vcmad *d, const void *rq);
/* Nobody waits for rq's answer to tag any more: if held, fn(-ECANCELED) now. */
void vcmad_durable_drop(struct vcmad *d, const void *rq, uint64_t tag);

/* A guest, as recorded (durable.c keeps a copy while it is attached). */
struct vcmad_durable_guest {
	uint32_t id;
	char name[32];
	char class_name[32];
	enum vcmad_guest_kind link;
	uint32_t uid; /* the peer's at attach (SO_PEERCRED) */
	uint32_t pid; /* QEMU: its process, and when it started (/proc/PID/stat field 22) */
	uint64_t start_time;
	uint32_t domid; /* Xen */
	uint8_t token[16]; /* sim: the reattach token (all zero: none) */
	bool used;
};
void vcmad_durable_guest_new(struct vcmad *d, const struct vcmad_durable_guest *g);
/* What identifies a guest again after a restart, once its link knows it: a QEMU's pid
 * (its start time is read here), a Xen domid. */
void vcmad_durable_guest_identity(struct vcmad *d, uint32_t id, uint32_t pid, uint32_t domid);
void vcmad_durable_guest_gone(struct vcmad *d, uint32_t id);
/* A sim guest's reattach token (a new one at each attach and reattach). */
void vcmad_durable_guest_token(struct vcmad *d, uint32_t id, const uint8_t token[16]);
/* Field 22 of /proc/PID/stat: when the process started (clock ticks after boot); with
 * the pid it names one process for good. 0 if there is no such process. */
uint64_t vcmad_proc_start_time(uint32_t pid);

/* The previous run's records (d->durable.previous), for restore.c: verified (the
 * ownership invariants; violations logged, their count returned, or -errno), then
 * replayed (store/store.h callbacks). */
struct vcma_store_replay_ops;
int vcmad_durable_verify(struct vcmad *d);
int vcmad_durable_replay(struct vcmad *d, const struct vcma_store_replay_ops *ops, void *ctx);
/* Restore is done (or failed, and vcmad exits): record the state anew. */
int vcmad_durable_restored(struct vcmad *d);

/* A VM's p2m, as durable.c records it (embedded in struct vcmad_vm; durable.c's). */
struct vcmad_durable_vm {
	struct vcmad *d;
	uint32_t id;
	uint64_t frames;
	const uint64_t *p2m;     /* the VM's, [frames] */
	uint64_t *rec, *dirty;   /* first gfns of the runs recorded; chunks to write */
	bool queued, registered;
	struct vcmad_durable_vm *next_dirty, *next;
};
/* A new VM with this p2m: all of it is written at the turn's end. */
void vcmad_durable_vm_new(struct vcmad *d, struct vcmad_durable_vm *dv, uint32_t id, uint64_t frames,
			  const uint64_t *p2m);
/* The backing of gfns [gfn, gfn+n) changed. */
void vcmad_durable_p2m(struct vcmad_durable_vm *dv, uint64_t gfn, uint64_t n);
/* The VM goes away: its p2m records go, or stay (keep: vcmad exits and the VM keeps
 * its memory). */
void vcmad_durable_vm_gone(struct vcmad_durable_vm *dv, bool keep);

/* End of a loop turn: write the marked p2m chunks, commit, then settle what was held. */
void vcmad_durable_turn_end(struct vcmad *d);

#endif
