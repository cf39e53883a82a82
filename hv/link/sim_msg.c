// SPDX-License-Identifier: MIT
/*
 * sim_msg.c - checks of a reattaching client's messages (sim_msg.h).
 */
#include <errno.h>
#include <string.h>

#include "link/sim_msg.h"
#include "vcma_name.h"
#include "vcma_status.h"

#define PAGE 4096u

int vcmad_sim_reattach_check(const void *buf, size_t len, uint64_t max_ram, struct vcma_sim_reattach *out,
			     int32_t *status, const char **why)
{
	struct vcma_sim_reattach ra;
	bool vmm;

	*status = VCMA_ST_INVALID;
	if (len != sizeof(ra)) {
		*why = "a REATTACH of the wrong size";
		return -EPROTO;
	}
	memcpy(&ra, buf, sizeof(ra)); /* read once, then only the copy */
	if (ra.magic != VCMA_SIM_MAGIC || ra.type != VCMA_SIM_MSG_REATTACH) {
		*why = "not a REATTACH";
		return -EPROTO;
	}
	if (ra.version != VCMA_SIM_VERSION) {
		*status = VCMA_ST_VERSION;
		*why = "an unsupported sim transport version";
		return -EPROTO;
	}
	vmm = ra.role == VCMA_SIM_ROLE_VMM;
	if (!vmm && ra.role != VCMA_SIM_ROLE_GUEST) {
		*why = "no such role";
		return -EPROTO;
	}
	if (ra.flags & ~(vmm ? VCMA_SIM_F_ALL : VCMA_SIM_F_GUEST)) {
		*why = "flags the role does not have";
		return -EPROTO;
	}
	if (!vmm && (ra.nruns || ra.ram_bytes)) {
		*why = "a guest with RAM or a p2m";
		return -EPROTO;
	}
	if (vmm && (!ra.ram_bytes || ra.ram_bytes % PAGE || ra.ram_bytes > max_ram)) {
		*why = "a VMM's RAM size that is not a multiple of 4096 up to the host's limit";
		return -EPROTO;
	}
	if (vmm && (!ra.nruns || ra.nruns > ra.ram_bytes / PAGE)) {
		*why = "a VMM's p2m of no runs, or of more runs than pages";
		return -EPROTO;
	}
	if (!vcma_name_field_ok(ra.name, sizeof(ra.name), false)) {
		*why = "a malformed name";
		return -EPROTO;
	}
	*out = ra;
	*why = NULL;
	*status = VCMA_ST_OK;
	return 0;
}

int vcmad_sim_p2m_msg_check(const void *buf, size_t len, uint32_t room, struct vcma_sim_run *runs, uint32_t *n,
			    const char **why)
{
	struct vcma_sim_p2m m;
	static const struct vcma_sim_run zero;

	*n = 0;
	if (len != sizeof(m)) {
		*why = "a p2m message of the wrong size";
		return -EPROTO;
	}
	memcpy(&m, buf, sizeof(m));
	if (m.magic != VCMA_SIM_MAGIC || m.version != VCMA_SIM_VERSION || m.type != VCMA_SIM_MSG_P2M || m.pad) {
		*why = "not a p2m message";
		return -EPROTO;
	}
	if (!m.nruns || m.nruns > VCMA_SIM_P2M_RUNS || m.nruns > room) {
		*why = "a p2m message with no runs, or more than it may have";
		return -EPROTO;
	}
	for (uint32_t i = m.nruns; i < VCMA_SIM_P2M_RUNS; i++)
		if (memcmp(&m.run[i], &zero, sizeof(zero))) {
			*why = "a p2m message with entries past nruns";
			return -EPROTO;
		}
	memcpy(runs, m.run, m.nruns * sizeof(*runs));
	*n = m.nruns;
	*why = NULL;
	return 0;
}

int vcmad_sim_p2m_check(const struct vcma_sim_run *runs, uint32_t n, uint64_t ram_frames, uint64_t machine_frames,
			const char **why)
{
	uint64_t next = 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct vcma_sim_run *r = &runs[i];

		if (r->gfn != next || !r->count || r->count > ram_frames - next) {
			*why = "a p2m that does not cover the VM's RAM exactly once, in order";
			return -EINVAL;
		}
		if (r->mfn > machine_frames || r->count > machine_frames - r->mfn) {
			*why = "a p2m run outside machine memory";
			return -EINVAL;
		}
		next += r->count;
	}
	if (next != ram_frames) {
		*why = "a p2m that does not cover the VM's RAM";
		return -EINVAL;
	}
	*why = NULL;
	return 0;
}
