/* SPDX-License-Identifier: MIT */
/*
 * sim_backend.h - what only the sim backend has, for the sim guest link (link/sim.c): the
 * machine memory a VMM maps, and the VMM channel, which rides on the VMM's attach
 * socket (PROTOCOL.md §9.1, "sim VMM channel").
 */
#ifndef VCMA_HV_BACKEND_SIM_H
#define VCMA_HV_BACKEND_SIM_H

#include <stdbool.h>

#include "backend/backend.h"
#include "loop.h"

struct vcmad_vm_ctl;

extern const struct vcmad_backend_type vcmad_backend_sim;

/* The sealed memfd of machine memory that VMMs map their RAM from, or -ENODEV when
 * be is not the sim backend. */
int vcmad_sim_memfd(const struct vcmad_backend *be);

/* The VMM channel's state. The link keeps it in its own per-guest state, which lives
 * until the end of the loop iteration its guest detaches in: epoll events of that
 * iteration may still point at the watch. */
struct vcmad_sim_vmm {
	struct vcmad_vm_ctl *vm; /* NULL once released */
	struct vcma_loop *loop;
	int sock;
	struct vcma_watch w;
	struct vcma_timer lost_t; /* a send failed: report the VM lost on the next turn */
	char why[96];
	bool violation;
};

/* From now on vm's VM control runs over sock (the VMM's attach socket, after the
 * attach response and the p2m): the backend reads it on loop, checks every message
 * (vmm_msg.h) and reports through vm->ev; a bad message or a closed socket is
 * reported lost. vm->ops->release stops it; the caller closes sock. */
int vcmad_sim_vmm_start(struct vcmad_sim_vmm *c, struct vcmad_vm_ctl *vm, struct vcma_loop *loop, int sock,
			uint32_t flags);

#endif
