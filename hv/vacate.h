/* SPDX-License-Identifier: MIT */
/*
 * vacate.h - the job engine that moves VMs' pages between machine frames while the
 * VMs run: out of a claimed window (an allocation), off pool frames (evict: compact,
 * drain, pin), or onto idle pool frames (relend). Per VM, in batches:
 *
 *   pick destinations (reserved up front, faulted in)            VM running
 *   PAUSE -> paused                                              vm.h, backend VM control
 *   copy pages in use (reported ones are dropped: destinations read as zeros)
 *   REMAP runs -> remapped; RESUME                               only now p2m and frame map change
 *
 * so a failure at any step leaves every page where its VM finds it. The batch size
 * adapts so one pause stays under max_pause_us. Jobs for different VMs run side by
 * side; two that need the same VM take turns. A VM that does not answer PAUSE in
 * time fails the batch (and after VCMAD_PAUSE_MISSES in a row is quarantined, vm.h);
 * one that does not answer REMAP while paused is cut off.
 */
#ifndef VCMA_HV_VACATE_H
#define VCMA_HV_VACATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "loop.h"

struct vcmad;
struct vcmad_job;
struct vcmad_vm;

/* One page to move: the page gfn of VM vm, now on machine frame src. */
struct vcmad_move {
	uint32_t vm;
	uint64_t gfn;
	uint64_t src;
};

/* done(arg, 0) when the job did everything, done(arg, -errno) when it gave up;
 * it returns the outcome to count (0, or why the job's purpose failed after all). */
typedef int (*vcmad_job_done_fn)(void *arg, int err);

void vcmad_vacate_init(struct vcmad *d);

/* Move every lent frame out of the claimed window [start, start+count) of pool p
 * to ordinary memory, which is reserved for all of them first (-ENOMEM at once, with
 * nothing moved). done runs when every frame of the window is FREE, or the job gave
 * up; *jobp stays valid until then. done may run before this returns. */
int vcmad_vacate_window(struct vcmad *d, struct vcma_pool *p, uint64_t start, uint64_t count,
			vcmad_job_done_fn done, void *arg, struct vcmad_job **jobp);
/* Whoever waited for j is gone: done is not called; the job still ends cleanly. */
void vcmad_job_forget(struct vcmad_job *j);
/* Move the pages mv[0..n) (taken over) off pool frames to ordinary memory; done
 * may be NULL. -ENOMEM when ordinary memory cannot take them all. */
int vcmad_vacate_evict(struct vcmad *d, struct vcmad_move *mv, size_t n, vcmad_job_done_fn done, void *arg);
/* Move the pages mv[0..n) (taken over) from ordinary memory onto idle frames of
 * pool p, from the top; gives way between batches to any other job. */
int vcmad_vacate_relend(struct vcmad *d, struct vcma_pool *p, struct vcmad_move *mv, size_t n);
/* Is a job other than relending in flight? */
bool vcmad_vacate_busy(const struct vcmad *d);
/* An allocation found no window: relend jobs whose batch has not gone to the VMM as a
 * REMAP give up now, unclaiming the idle pool frames they were filling. true if any
 * frame came free (search again). */
bool vcmad_vacate_relend_yield(struct vcmad *d);
/* Has a job sent PAUSE and is its PAUSED still due? (Not while only the last DIRTY is:
 * the VMM thread that reads the log may need the CPU vcmad would spin on.) */
bool vcmad_vacate_pause_pending(const struct vcmad *d);

/* The VM is going: jobs let go of it (its frames come back FREE with its detach). */
void vcmad_vacate_vm_gone(struct vcmad_vm *vm);
/* Shutdown: every job stops; waiting allocations are told -ESHUTDOWN. */
void vcmad_vacate_cancel_all(struct vcmad *d);
/* Free the jobs that ended in this loop iteration. */
void vcmad_vacate_reap(struct vcmad *d);

#endif
