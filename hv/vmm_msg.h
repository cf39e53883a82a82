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
 *   - every run has count > 0 and lies inside RAM (gfn + count <= ram_frames, no
 *     wrap-around); its mfn is 0 except in PAUSED and REMAPPED (which vcmad ignores);
 *   - the type is one a VMM sends: PAUSED, REMAPPED, REPORT, REUSE or PIN;
 *   - the runs of a PIN do not overlap (each would become a move of its own).
 * Otherwise -EPROTO and *why, a constant string for the log: the caller cuts the VM
 * off. Reads only its arguments; writes only *why.
 */
int vcmad_vmm_msg_check(const void *buf, size_t len, uint64_t ram_frames, const char **why);

#endif
