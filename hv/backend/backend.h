/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the hypervisor backend: the only code that touches machine memory or
 * controls a VM. The core never calls a hypervisor, and nothing else in vcmad maps,
 * reads or writes machine memory.
 *
 * A backend has two halves:
 *
 *   memory (struct vcmad_mem_ops)   machine memory: the pools are frame ranges of it;
 *                                   the rest is "ordinary" memory the backend hands
 *                                   out to back VMs' RAM. Zero, copy and read frames.
 *   VM control (struct vcmad_vm_ops) pause a VM, remap runs of its guest frames to
 *                                   other machine frames, resume it. Completions come
 *                                   back through the VM's event hooks (vc->ev): an
 *                                   asynchronous hypervisor (the sim's VMM channel)
 *                                   calls them later from the loop, a synchronous one
 *                                   (Xen) before the op returns.
 *
 * Frames are machine frame numbers (mfn, 4 KiB). A backend is chosen by name
 * ([daemon] backend in vcmad.conf) from vcmad_backends[]. docs/ARCHITECTURE.md,
 * "Adding a backend", walks through writing one.
 */
#ifndef VCMA_HV_BACKEND_H
#define VCMA_HV_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/memrange.h"
#include "loop.h"
#include "pool_config.h"

struct vcmad_backend;
struct vcmad_vm_ctl;

/* A pool as vcmad placed it: machine frames, or (holds_frames) slots. A backend
 * may narrow cfg->max_region and raise cfg->align_order to what it can serve. */
struct vcma_pool_range {
	uint64_t mfn, count;
	struct vcma_pool_config *cfg;
};

/* A run of guest frames and the machine frames they go to. */
struct vcmad_run {
	uint64_t gfn, mfn, count;
};

struct vcmad_mem_ops {
	/* Optional, for a hypervisor that owns machine memory (Xen): check that it is
	 * reachable and say how large machine memory is, before pools are placed; an
	 * error here is vcmad's exit, with the reason logged. */
	int (*probe)(struct vcmad_backend *be, uint64_t *bytes);
	/* Machine memory of `bytes`, with the pool ranges (sorted by mfn) carved out of
	 * ordinary memory. On error nothing is left allocated. */
	int (*init)(struct vcmad_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools);
	void (*fini)(struct vcmad_backend *be);
	/* [mfn, mfn+count) reads as zero from now on (and needs no memory until touched). */
	int (*zero)(struct vcmad_backend *be, uint64_t mfn, uint64_t count);
	/* Optional: the same as zero for frames about to be used (a region handed out,
	 * relend's destinations), but pages that hold memory keep it, cleared in place: a
	 * hole punched there would be faulted in again page by page, at several times the
	 * cost of the clearing. NULL: zero is used (vcmad_mem_clear). */
	int (*clear)(struct vcmad_backend *be, uint64_t mfn, uint64_t count);
	/* Optional: clear, for frames the caller knows hold memory (it has just copied
	 * every one of them through copy): cleared in place without looking for holes
	 * (finding them cost the sim as much as the clearing, ~130 us per 8 MiB). A frame
	 * that was a hole after all is cleared too, at the cost of its memory. NULL: clear
	 * (vcmad_mem_clear_held). */
	int (*clear_held)(struct vcmad_backend *be, uint64_t mfn, uint64_t count);
	/* Copy count frames from src to dst (ranges do not overlap). */
	int (*copy)(struct vcmad_backend *be, uint64_t dst, uint64_t src, uint64_t count);
	/* Make [mfn, mfn+count) cheap to write: fault it in now, before a VM is paused. */
	int (*touch)(struct vcmad_backend *be, uint64_t mfn, uint64_t count);
	/* Read len bytes at byte offset off of the frames from mfn on. */
	int (*read)(struct vcmad_backend *be, uint64_t mfn, uint64_t off, void *buf, size_t len);
	/* Take `frames` frames of ordinary memory: at most max_runs extents, which read
	 * as zero unless someone wrote to free memory. Returns the number of extents or
	 * -errno (nothing taken). */
	int (*ram_alloc)(struct vcmad_backend *be, uint64_t frames, struct vcma_extent *runs, uint32_t max_runs);
	/* Give ordinary frames back (zeroed first: they held a guest's data). */
	void (*ram_free)(struct vcmad_backend *be, const struct vcma_extent *runs, uint32_t nruns);
	/* Ordinary frames free now. */
	uint64_t (*ram_free_frames)(const struct vcmad_backend *be);
	/* Optional (needed to take VMs back after a restart): take exactly these ordinary
	 * frames, recorded as a VM's RAM. -ENOENT if any is not free. */
	int (*ram_take)(struct vcmad_backend *be, uint64_t mfn, uint64_t count);
	/* holds_frames only: the machine frame backing a held slot (0, or -ENOENT when
	 * the slot's frame is not held: it is a guest's). */
	int (*machine_frame)(const struct vcmad_backend *be, uint64_t slot, uint64_t *mfn);

	/* Balloon lending (optional, holds_frames): idle capacity backs a lender
	 * domain's ordinary memory through its balloon driver (balloon.h).
	 * lender_room: the domain of that name (*dom) and how many more pages its
	 * balloon can take; -ENOENT when no such domain runs. */
	int (*lender_room)(struct vcmad_backend *be, const char *name, uint32_t *dom, uint64_t *pages);
	/* Lend held slots [slot, slot+count) of one pool to dom: release their frames
	 * and raise its memory target by as much. Nothing changed on error. */
	int (*lend)(struct vcmad_backend *be, uint64_t slot, uint64_t count, uint32_t dom);
	/* Take count lent slots back from dom (slots[] need not be contiguous): lower
	 * its target; hold frames for the slots again as the hypervisor has them free (at
	 * once if it has free memory; else as dom's balloon gives pages back). done(arg, held) comes from the loop once all are held, or at
	 * deadline_ns with held < count (slots[0..held) are held). 0, or -errno (no
	 * callback). */
	int (*reclaim)(struct vcmad_backend *be, const uint64_t *slots, uint64_t count, uint32_t dom,
		       uint64_t deadline_ns, void (*done)(void *arg, uint64_t held), void *arg);
	/* vcmad exits: count pages lent to dom go back (its target drops), no wait. */
	void (*unlend)(struct vcmad_backend *be, uint32_t dom, uint64_t count);
};

/* What a backend reports about a VM (vc->ev, set by whoever made the VM: vm.c). */
struct vcmad_vm_events {
	void (*paused)(struct vcmad_vm_ctl *vc, uint32_t seq);
	void (*remapped)(struct vcmad_vm_ctl *vc, uint32_t seq, int32_t status);
	/* free page reporting: runs the guest does not use (reported) or wants back (not);
	 * a REUSE is answered with ops->reused(seq) once recorded (seq < 0: none) */
	void (*report)(struct vcmad_vm_ctl *vc, const struct vcmad_run *runs, uint32_t n, bool reported, int64_t seq);
	void (*pin)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	/* dirty logging (ops->track): logging started (status 0) or cannot be (an errno);
	 * one part of the answer to dirty_read: the gfns written (runs, mfn 0), last set
	 * on the final part, status a positive errno there when the log could not be read */
	void (*tracking)(struct vcmad_vm_ctl *vc, uint32_t seq, int32_t status);
	void (*dirty)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n, bool last,
		      int32_t status);
	/* ops->drop done (0: every run moved) or refused (an errno: none moved) */
	void (*dropped)(struct vcmad_vm_ctl *vc, uint32_t seq, int32_t status);
	/* the VM is gone (violation: cut it off, with why) or its control is broken */
	void (*lost)(struct vcmad_vm_ctl *vc, const char *why, bool violation);
};

/* The part of a VM its backend's VM control sees (the rest is vm.h's). */
struct vcmad_vm_ctl {
	uint32_t id;         /* the guest id its frames are lent under */
	const char *name;
	uint64_t ram_frames; /* gfn 0 .. ram_frames-1 */
	const struct vcmad_vm_events *ev;
	const struct vcmad_vm_ops *ops;
	void *be_priv;       /* the backend's own state for this VM */
	bool one_trip;       /* ops->remap_resume and ops->drop work for this VM */
	bool dirty_log;      /* ops->track, untrack and dirty_read work for this VM */
	bool lost;           /* its control broke; a lost event is on its way */
};

struct vcmad_vm_ops {
	/* Park every vCPU; then vc->ev->paused(vc, seq). */
	int (*pause)(struct vcmad_vm_ctl *vc, uint32_t seq);
	/* Only while paused: map each run's guest frames to its machine frames; then
	 * vc->ev->remapped(vc, seq, 0 or a positive errno). */
	int (*remap)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	/* Unpark the vCPUs (also cancels a pause not yet acknowledged). No completion. */
	int (*resume)(struct vcmad_vm_ctl *vc, uint32_t seq);
	/* vc->one_trip only. remap_resume: remap, then resume, then ev->remapped (all
	 * runs or none moved). drop: remap reported pages while the VM runs, then
	 * ev->dropped (all or none). */
	int (*remap_resume)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	int (*drop)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	/* vc->dirty_log only (Xen's log-dirty mode has the same shape). track: log writes
	 * to the runs' gfns from now on, then ev->tracking; untrack: stop, no answer;
	 * dirty_read: ev->dirty with what was written since track or the last read (and
	 * clear it); while a pause is outstanding, answered with every vCPU parked. */
	int (*track)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	int (*untrack)(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n);
	int (*dirty_read)(struct vcmad_vm_ctl *vc, uint32_t seq);
	/* Answers to what the VM asked through vc->ev: a REUSE recorded; a PIN done
	 * (err 0) or failed (a negative errno). */
	int (*reused)(struct vcmad_vm_ctl *vc, uint32_t seq);
	int (*pinned)(struct vcmad_vm_ctl *vc, uint32_t seq, int err);
	/* The VM is going (detached or cut off): drop the backend's state for it. */
	void (*release)(struct vcmad_vm_ctl *vc);
};

struct vcmad_backend_type {
	const char *name;
	const struct vcmad_mem_ops *mem;
	const struct vcmad_vm_ops *vm; /* NULL: VMs' RAM is not the backend's to move */
	/* The hypervisor picks machine frames (Xen): a pool is a range of slots that
	 * the backend backs with frames it holds; `mem` works on slots; a region reaches
	 * its guest through the backend's own calls (backend/xen.h), and its machine
	 * address is the one the link reports. */
	bool holds_frames;
};

struct vcmad_backend {
	const struct vcmad_backend_type *type;
	uint64_t machine_bytes;
	/* Machine memory that outlives vcmad (set before init; "" = none): the sim backend
	 * keeps it in this file, and init says whether it found it there from an earlier
	 * run, contents kept (reopened), or made it anew (all zero). */
	char mem_file[256];
	bool mem_reopened;
	struct vcma_loop *loop; /* vcmad's: timers for work that takes a while */
	void *priv;             /* the backend's own state */
};

/* [mfn, mfn+count) reads as zero from now on and is about to be used. */
static inline int vcmad_mem_clear(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	return be->type->mem->clear ? be->type->mem->clear(be, mfn, count) : be->type->mem->zero(be, mfn, count);
}

/* The same, for frames the caller knows hold memory (mem ops' clear_held). */
static inline int vcmad_mem_clear_held(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	return be->type->mem->clear_held ? be->type->mem->clear_held(be, mfn, count) : vcmad_mem_clear(be, mfn, count);
}

/* The backends built in, and the one of a name (NULL if none). */
extern const struct vcmad_backend_type *const vcmad_backends[];
const struct vcmad_backend_type *vcmad_backend_find(const char *name);

#endif
