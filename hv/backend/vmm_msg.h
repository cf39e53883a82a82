/* SPDX-License-Identifier: MIT */
/*
 * vmm_msg.h - the check every message from a VMM passes before vcmad acts on it
 * (the VMM channel of proto/vcma_sim.h). Pure, so that it can be fuzzed alone
 * (tests/fuzz/fuzz_vmm.c).
 */
#ifndef VCMA_HV_VMM_MSG_H
#define VCMA_HV_VMM_MSG_H

#include <stddef.h>
#include <stdint.h>

/*
 * One VMM -> host message as received: len bytes at buf (any alignment), from a VM
 * whose RAM is gfns 0 .. ram_frames-1. Accepted (0, *why = NULL) when:
 *   - magic, version are right and pad is 0;
 *   - count <= VCMA_SIM_MSG_RUNS and len is exactly the header plus count runs;
 *   - the type is one a VMM sends: PAUSED, REMAPPED, REPORT, REUSE, PIN, DIRTY,
 *     TRACKING or DROPPED;
 *   - PAUSED, REMAPPED, TRACKING and DROPPED have no runs; PAUSED has status 0, the
 *     others 0 or a positive errno; REPORT, REUSE and PIN have status 0; DIRTY 0, or
 *     a positive errno only with fewer than VCMA_SIM_MSG_RUNS runs (its last part);
 *   - every run has count > 0, mfn 0, and lies inside RAM (gfn + count <=
 *     ram_frames, no wrap-around);
 *   - the runs of a message do not overlap (a PIN's would each become a move of
 *     their own; a REPORT's would multiply its work).
 * Otherwise -EPROTO and *why, a constant string for the log: the caller cuts the VM
 * off. Reads only its arguments; writes only *why.
 */
int vcmad_vmm_msg_check(const void *buf, size_t len, uint64_t ram_frames, const char **why);

#endif
