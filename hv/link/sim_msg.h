/* SPDX-License-Identifier: MIT */
/*
 * sim_msg.h - the checks a reattaching client's messages pass before vcmad acts on
 * them (PROTOCOL.md §9.1 "Restart and reattach"). Pure, so that they can be fuzzed
 * alone (tests/fuzz/fuzz_reattach.c). Each reads only its arguments and writes only
 * its outputs; a failure gives a constant string for the log in *why.
 */
#ifndef VCMA_HV_SIM_MSG_H
#define VCMA_HV_SIM_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "vcma_sim.h"

/*
 * A REATTACH as received (len bytes at buf, any alignment). Accepted (0, *out the
 * message) when it is exactly sizeof(struct vcma_sim_reattach) with the sim magic and
 * type REATTACH, version VCMA_SIM_VERSION, and:
 *   - role GUEST: flags 0 or VCMA_SIM_F_REATTACH, nruns 0, ram_bytes 0;
 *   - role VMM: flags within VCMA_SIM_F_ALL, ram_bytes > 0, a multiple of 4096, at most
 *     max_ram, and 1 <= nruns <= ram_bytes / 4096 (a p2m has at most a run per page);
 *   - the name is 1..31 characters of [A-Za-z0-9_.-], NUL-terminated and NUL-padded.
 * Otherwise -EPROTO with *status VCMA_ST_VERSION (another version) or VCMA_ST_INVALID.
 */
int vcmad_sim_reattach_check(const void *buf, size_t len, uint64_t max_ram, struct vcma_sim_reattach *out,
			     int32_t *status, const char **why);

/*
 * One P2M message of a reattaching VMM, room runs still expected. Accepted (0) when it
 * is exactly sizeof(struct vcma_sim_p2m) with the sim magic, version, type P2M, pad 0,
 * 1 <= nruns <= min(VCMA_SIM_P2M_RUNS, room), and the entries from nruns on all zero;
 * its runs are copied to runs[0 .. *n). Otherwise -EPROTO.
 */
int vcmad_sim_p2m_msg_check(const void *buf, size_t len, uint32_t room, struct vcma_sim_run *runs, uint32_t *n,
			    const char **why);

/*
 * A whole p2m (n runs) for a VM of ram_frames frames in machine memory of
 * machine_frames: runs sorted by gfn, each count > 0, together covering
 * 0 .. ram_frames-1 exactly once (each run starts where the last ended), and every
 * run's frames inside machine memory (mfn + count <= machine_frames, no wrap-around).
 * 0, or -EINVAL.
 */
int vcmad_sim_p2m_check(const struct vcma_sim_run *runs, uint32_t n, uint64_t ram_frames, uint64_t machine_frames,
			const char **why);

#endif
