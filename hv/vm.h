/* SPDX-License-Identifier: MIT */
/*
 * vm.h - a VM whose RAM vcmad backs: its p2m (which machine frame backs each guest
 * frame), lending (RAM on idle pool frames first), and the events its hypervisor
 * side reports. The VM-control half of the backend (backend.h) pauses and remaps it.
 *
 *   vcmad_vm ─┬─ ctl: id, name, ram_frames; the backend's VM control (ops, be_priv)
 *             │        and the events it reports to vm.c (ev)
 *             ├─ p2m[gfn], gflags[gfn]   in vcmad; the VMM maps what the p2m says
 *             ├─ owner (who attached it: a guest link) + owner_arg
 *             └─ pauser (the vacate job holding it paused), pause statistics
 *
 * Invariant: a pool frame backs at most one gfn, and is LENT_* for (vm id, gfn) in
 * its pool's frame map exactly while p2m[gfn] points at it. Pinned gfns are never on
 * pool frames. A VM's id is its guest's id: lent frames carry it in the frame map.
 */
#ifndef VCMA_HV_VM_H
#define VCMA_HV_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "durable.h"
#include "core.h"

struct vcmad;
struct vcmad_vm;

#define VCMAD_GFN_PINNED 1u      /* never back with a lendable pool frame */
#define VCMAD_GFN_REPORTED 2u    /* the guest reported the page free */
#define VCMAD_GFN_QUARANTINED 4u /* its pool frame is claimed while the VM is unresponsive */
#define VCMAD_GFN_MOVING 8u      /* in a DROP in flight: a REUSE of it waits for DROPPED */

/* REUSEs waiting for a DROP to end (PROTOCOL.md §9.1): more is a violation. */
#define VCMAD_REUSE_WAIT_MAX 256u

/* A VMM that leaves this many PAUSEs in a row unanswered is unresponsive: it is lent
 * no more pool frames, and those it holds are claimed (no window search picks them)
 * until it detaches, so allocations go around it instead of waiting on it. */
#define VCMAD_PAUSE_MISSES 3u

/* Who holds a VM's control (a vacate job: paused, tracking or dropping): told what
 * the VM answers. */
struct vcmad_vm_pauser_ops {
	void (*paused)(void *pauser, struct vcmad_vm *vm, uint32_t seq);
	void (*remapped)(void *pauser, struct vcmad_vm *vm, uint32_t seq, int32_t status);
	void (*tracking)(void *pauser, struct vcmad_vm *vm, uint32_t seq, int32_t status);
	void (*dirty)(void *pauser, struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n,
		      bool last, int32_t status);
	void (*dropped)(void *pauser, struct vcmad_vm *vm, uint32_t seq, int32_t status);
};

/* Who attached the VM (its guest link): told what only it can act on. */
struct vcmad_vm_owner_ops {
	/* The VM asks for its pages to be pinned (moved off pool frames); answer with
	 * vm->ops->pinned. */
	void (*pin)(void *owner, struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	/* The VM is gone (violation: cut it off, with why) or its control is broken. */
	void (*lost)(void *owner, struct vcmad_vm *vm, const char *why, bool violation);
};

struct vcmad_vm {
	struct vcmad_vm_ctl ctl; /* what the backend's VM control sees: id, name, ram_frames,
				    events, ops, the backend's state, lost */
	struct vcmad *d;
	uint64_t *p2m;   /* mfn backing each gfn */
	uint8_t *gflags; /* VCMAD_GFN_* per gfn */
	const struct vcmad_vm_owner_ops *owner;
	void *owner_arg;
	/* VM control in progress */
	uint32_t seq;        /* of the last PAUSE, TRACK, DIRTY_READ or DROP */
	uint32_t pause_seq;  /* of the last PAUSE (its RESUME carries it) */
	void *pauser;        /* the job holding its control (paused or not), or NULL */
	bool paused;         /* PAUSE sent, RESUME (or REMAP_RESUME) not yet */
	bool no_dirty_log;   /* answered TRACKING with an errno: vacated by pausing only */
	bool quiet;          /* wrote nothing in its last pre-copy's first round: pause at once */
	uint32_t *reuse_wait; /* REUSEs to answer when the DROP in flight ends */
	uint32_t nreuse_wait;
	const struct vcmad_vm_pauser_ops *pauser_ops;
	uint64_t paused_at;
	struct vcma_hist pause_hist; /* PAUSE sent -> RESUME sent, ns */
	/* lending policy */
	bool no_lend;          /* drained or unresponsive: never back with pool frames again */
	uint32_t pause_misses; /* PAUSEs in a row it did not answer in time */
	bool unresponsive;     /* VCMAD_PAUSE_MISSES of them: its pool frames quarantined */
	struct vcmad_vm *next; /* in d's VM list */
	struct vcmad_durable_vm durable; /* its p2m as recorded (durable.h) */
};

/*
 * A VM of ram_frames frames for guest id: its RAM lent lend_share from idle frames of
 * lendable pools (from the top of each pool), the rest from ordinary memory, zeroed.
 * The owner is told about pins and loss. *out, or -errno (nothing allocated).
 */
int vcmad_vm_new(struct vcmad *d, uint32_t id, const char *name, uint64_t ram_frames,
		 const struct vcmad_vm_owner_ops *owner, void *owner_arg, struct vcmad_vm **out);
/*
 * Taking VMs back after a restart (restore.c). vcmad_vm_restore: VM id's RAM where the
 * record's p2m (malloc'd, ram_frames entries, taken over even on failure) puts it:
 * pool frames lent used, ordinary frames taken from the backend; -EEXIST if a frame
 * is not free. No owner (nobody is told about pins or loss) and no lending until
 * vcmad_vm_set_owner. vcmad_vm_adopt_p2m: the VMM reattached with its p2m; where it
 * differs (a remap it applied that vcmad had not recorded) its frame is taken if free
 * and the recorded one released; else -EEXIST / -EINVAL with *why (the caller cuts the
 * VM off: what was adopted so far is the VM's and goes with it).
 */
int vcmad_vm_restore(struct vcmad *d, uint32_t id, const char *name, uint64_t ram_frames, uint64_t *p2m,
		     struct vcmad_vm **out);
int vcmad_vm_adopt_p2m(struct vcmad_vm *vm, const struct vcmad_run *runs, uint32_t n, const char **why);
void vcmad_vm_set_owner(struct vcmad_vm *vm, const struct vcmad_vm_owner_ops *owner, void *owner_arg);
/* The VM is gone: its pool frames back to FREE (zeroed), its ordinary memory back to
 * the backend, quarantined frames unclaimed; the backend's state released. */
void vcmad_vm_free(struct vcmad_vm *vm);
/* The same, but its memory is left as it is (vcmad exits with the VM attached). */
void vcmad_vm_abandon(struct vcmad_vm *vm);
struct vcmad_vm *vcmad_vm_find(struct vcmad *d, uint32_t id);
/* The p2m as runs of consecutive gfns on consecutive mfns (*runs malloc'd). */
int vcmad_vm_p2m_runs(const struct vcmad_vm *vm, struct vcmad_run **runs, uint32_t *n);

/* vm->paused, with d->vms_paused kept. */
void vcmad_vm_set_paused(struct vcmad_vm *vm, bool paused);
/* Take the VM's control (it must have no holder: -EBUSY) without pausing it. */
int vcmad_vm_hold(struct vcmad_vm *vm, void *pauser, const struct vcmad_vm_pauser_ops *ops);
/* Send PAUSE (taking the control if nobody holds it). */
int vcmad_vm_pause(struct vcmad_vm *vm, void *pauser, const struct vcmad_vm_pauser_ops *ops);
/* The pause ends now: as part of REMAP_RESUME (sent by the caller), or with a RESUME
 * sent here (send). Records the pause's length and returns it (ns); 0 if not paused. */
uint64_t vcmad_vm_unpause(struct vcmad_vm *vm, bool send);
/* A REMAP_RESUME was refused: the VMM stayed paused (PROTOCOL.md §9.1) and waits for
 * a RESUME under the same seq (vcmad_vm_unpause(vm, true) or vcmad_vm_resume()). */
void vcmad_vm_still_paused(struct vcmad_vm *vm);
/* Resume it (if paused) and let its control go. Returns the pause's length (ns). */
uint64_t vcmad_vm_resume(struct vcmad_vm *vm);
/* Let the control go; a pause must have ended. */
void vcmad_vm_let_go(struct vcmad_vm *vm);
/* A DROP ended: answer the REUSEs that waited for it. */
void vcmad_vm_reuse_flush(struct vcmad_vm *vm);
/* The VM missed a PAUSE; after VCMAD_PAUSE_MISSES in a row it is quarantined. */
void vcmad_vm_pause_missed(struct vcmad_vm *vm);

#endif
