/* SPDX-License-Identifier: MIT */
/*
 * ring.h - the host side of the vcma ring (proto/vcma_proto.h) over any shared
 * memory: lay out the control page and rings, take requests, publish responses and
 * events. Transport-independent: the sim and qemu transports both use it.
 *
 * Every request is copied out of shared memory exactly once and only the copy is
 * checked and used (XSA-155). The host's own indices live here, never re-read from
 * shared memory. A violation is reported with a reason; the caller cuts the guest off.
 */
#ifndef VCMA_HV_RING_H
#define VCMA_HV_RING_H

#include <stdbool.h>
#include <stdint.h>

#include "vcma_proto.h"

struct vcma_ring_host {
	uint8_t *base;
	uint64_t size;
	struct vcma_ctrl *ctrl;
	struct vcma_ring_hdr *req;
	union vcma_slot *slot;
	struct vcma_evt_hdr *evh;
	struct vcma_evt *evs;
	uint32_t slots, evt_slots;   /* private copies of the geometry */
	uint32_t req_cons, rsp_prod_pvt, evt_prod_pvt;
	uint64_t events_dropped;
};

struct vcma_ring_params {
	uint32_t req_slots, evt_slots; /* powers of two */
	uint32_t guest_id, generation;
	uint32_t max_regions;
	uint64_t max_bytes;
	uint64_t window_off, window_size; /* 0 unless the transport has a DMA window */
	bool no_lazy_free; /* do not offer VCMA_F_LAZY_FREE (the host never opens req_poll) */
};

/* Bytes of shared memory the control page and both rings need. */
uint64_t vcma_ring_shm_size(uint32_t req_slots, uint32_t evt_slots);

/* Lay out a zeroed shared area and mark it READY. -EINVAL if it does not fit. */
int vcma_ring_host_init(struct vcma_ring_host *r, void *base, uint64_t size, const struct vcma_ring_params *p);

/* Check one request copy; 0, or -EPROTO with *why naming the violation. */
int vcma_req_check(const struct vcma_req *q, const char **why);

/* Fill *rsp and return VCMA_RING_ANSWERED, or keep the request and return
 * VCMA_RING_DEFERRED to answer it later with vcma_ring_host_respond(). */
enum { VCMA_RING_ANSWERED = 0, VCMA_RING_DEFERRED = 1 };
typedef int (*vcma_req_fn)(void *ctx, const struct vcma_req *q, struct vcma_rsp *rsp);

/*
 * Take and answer up to `budget` requests. Returns how many, or -EPROTO with *why set.
 * *notify: the guest asked to be kicked for the responses published. *more: requests
 * remain (budget reached, or new ones arrived while re-arming req_event).
 */
int vcma_ring_host_process(struct vcma_ring_host *r, uint32_t budget, vcma_req_fn fn, void *ctx, bool *notify,
			   bool *more, const char **why);

/* Answer a deferred request. Responses take slots in the order they are published;
 * a deferred request's slot was consumed, so there is always room. -EINVAL if no
 * request is waiting for an answer. */
int vcma_ring_host_respond(struct vcma_ring_host *r, const struct vcma_rsp *rsp, bool *notify);

/* Requests published but not yet taken (a hint for rate accounting). */
uint32_t vcma_ring_host_pending(const struct vcma_ring_host *r);

/* PROTOCOL.md §4.9 (VCMA_F_LAZY_FREE): open (on) or close the window in which the
 * host looks at req_prod without a kick. Closing stores 0 and runs a full barrier:
 * the caller then looks at the ring (vcma_ring_host_pending) for what the guest
 * published without a kick. The host never reads req_poll back. */
void vcma_ring_host_set_poll(struct vcma_ring_host *r, bool on);

/* Post a notice; -ENOSPC (and counted) when the guest has not consumed room for it. */
int vcma_ring_host_post_event(struct vcma_ring_host *r, const struct vcma_evt *e, bool *notify);

void vcma_ring_host_set_state(struct vcma_ring_host *r, enum vcma_ctrl_state st);

#endif
