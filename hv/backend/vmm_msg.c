// SPDX-License-Identifier: MIT
/*
 * vmm_msg.c - check a message from a VMM before anything acts on it (see vmm_msg.h).
 * The message is read through memcpy: the receive buffer need not be aligned.
 */
#include <errno.h>
#include <string.h>

#include "vcma_sim.h"
#include "backend/vmm_msg.h"

static void run_at(const void *buf, uint32_t i, struct vcma_sim_run *r)
{
	memcpy(r, (const unsigned char *)buf + sizeof(struct vcma_sim_msg) + (size_t)i * sizeof(*r), sizeof(*r));
}

int vcmad_vmm_msg_check(const void *buf, size_t len, uint64_t ram_frames, const char **why)
{
	struct vcma_sim_msg m;
	struct vcma_sim_run r, o;

	*why = NULL;
	if (len < sizeof(m)) {
		*why = "unexpected message on the attach socket";
		return -EPROTO;
	}
	memcpy(&m, buf, sizeof(m));
	if (m.magic != VCMA_SIM_MAGIC || m.version != VCMA_SIM_VERSION || m.count > VCMA_SIM_MSG_RUNS ||
	    len != sizeof(m) + (size_t)m.count * sizeof(struct vcma_sim_run) || m.pad) {
		*why = "malformed VMM message";
		return -EPROTO;
	}
	switch (m.type) {
	case VCMA_SIM_MSG_PAUSED:
	case VCMA_SIM_MSG_REMAPPED:
	case VCMA_SIM_MSG_TRACKING:
	case VCMA_SIM_MSG_DROPPED:
		/* answers carry no runs; PAUSED no status, the others 0 or a positive errno */
		if (m.count || (m.type == VCMA_SIM_MSG_PAUSED ? m.status != 0 : m.status < 0)) {
			*why = m.count ? "an answer (PAUSED, REMAPPED, TRACKING, DROPPED) with runs"
				       : "an answer (PAUSED, REMAPPED, TRACKING, DROPPED) with a bad status";
			return -EPROTO;
		}
		return 0;
	case VCMA_SIM_MSG_DIRTY:
		/* a status only on the message that ends the answer (fewer than 128 runs) */
		if (m.status < 0 || (m.status && m.count == VCMA_SIM_MSG_RUNS)) {
			*why = "DIRTY with a bad status";
			return -EPROTO;
		}
		break;
	case VCMA_SIM_MSG_REPORT:
	case VCMA_SIM_MSG_REUSE:
	case VCMA_SIM_MSG_PIN:
		if (m.status) {
			*why = "REPORT, REUSE or PIN with a status";
			return -EPROTO;
		}
		break;
	default:
		*why = "unknown VMM message type";
		return -EPROTO;
	}
	for (uint32_t i = 0; i < m.count; i++) {
		run_at(buf, i, &r);
		if (!r.count || r.gfn >= ram_frames || r.count > ram_frames - r.gfn || r.mfn) {
			*why = "VMM message run outside the VM's RAM";
			return -EPROTO;
		}
	}
	/* Runs must be disjoint. PIN: every page it names becomes a move of the pin's
	 * job, and a page named twice would be copied to two destinations, one of which
	 * nothing would ever free. REPORT/REUSE: disjoint runs bound one message's work
	 * to the VM's RAM (overlapping ones could cost 128 times that). At most 128 runs:
	 * pairwise is cheap. All runs are inside RAM here, so the ends do not wrap. */
	for (uint32_t i = 1; i < m.count; i++) {
		run_at(buf, i, &r);
		for (uint32_t k = 0; k < i; k++) {
			run_at(buf, k, &o);
			if (r.gfn < o.gfn + o.count && o.gfn < r.gfn + r.count) {
				*why = "VMM message runs overlap";
				return -EPROTO;
			}
		}
	}
	return 0;
}
