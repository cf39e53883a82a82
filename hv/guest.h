/* SPDX-License-Identifier: MIT */
/*
 * guest.h - an attached guest, whatever its link: its ring, its limits, its
 * requests; and the table of guests, with the guests vcmad expects by name.
 *
 * Requests reach the core only as validated private copies (ring.c). Limits:
 * live regions and bytes (alloc.h, counting what is promised), and a token bucket on
 * requests and kicks; a guest that runs the bucket dry is flooding and is cut off.
 * A guest detached inside a callback is freed only after the loop iteration
 * (vcmad_guests_reap): later events of the same epoll batch may still point at it.
 */
#ifndef VCMA_HV_GUEST_H
#define VCMA_HV_GUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"
#include "conf.h"
#include "ring.h"
#include "vcma_sim.h"

struct vcmad;
struct vcmad_link;
struct vcmad_vm;

struct vcmad_guest_stats {
	uint64_t requests, alloc_ok, alloc_fail, frees, queries, kicks;
	uint64_t stray_reclaims, stray_bytes; /* ivshmem: memory written outside regions, released */
};

struct vcmad_guest {
	struct vcmad *d;
	uint32_t id;
	char name[VCMA_SIM_NAME_LEN];
	char devclass[VCMA_SIM_NAME_LEN];
	const struct vcmad_guest_conf *conf; /* the guest vcmad expected, NULL if not configured */
	uint32_t uid;                        /* the peer's, at attach (SO_PEERCRED) */
	const char *role;                    /* "guest", "vmm" or "qemu", for vcmactl */
	struct vcmad_link *link;
	void *link_priv;
	struct vcmad_vm *vm; /* its RAM, when vcmad backs it (a simulated VM) */
	struct vcma_ring_host ring;
	bool hello;
	uint64_t features;
	struct vcmad_requester rq; /* its allocations and limits */
	struct vcma_rsp *sync_rsp; /* the ring slot of the request being handled */
	uint64_t sync_id;
	double tokens;
	uint64_t tokens_at;
	bool queued; /* on the run queue */
	bool dead;   /* detached; freed at the end of the loop iteration */
	struct vcmad_guest *next_run;
	/* PROTOCOL.md §4.9: req_poll is open until lazy_until (on d's lazy list) */
	bool lazy_open;
	uint32_t lazy_pass; /* the take_lazy pass that last ran it */
	uint64_t lazy_until;
	struct vcmad_guest *next_lazy;
	struct vcmad_guest_stats stats;
	uint8_t token[16]; /* sim: the reattach token it was given (PROTOCOL.md §9.1); all zero: none */
};

int vcmad_guests_init(struct vcmad *d);
void vcmad_guests_fini(struct vcmad *d);

/* A new guest on link l: a slot and an id (every configured guest has a slot of its
 * own; the others share the rest of max_guests), not yet serving. NULL with *status
 * (VCMA_ST_LIMIT, VCMA_ST_NO_MEMORY). */
struct vcmad_guest *vcmad_guest_new(struct vcmad *d, struct vcmad_link *l, const char *name, const char *devclass,
				    const struct vcmad_guest_conf *gc, uint32_t uid, int32_t *status);
/* A guest taken back after a restart (restore.c): the recorded id, name, class and
 * identity (rec), on link l (the restore link until it is back), not yet serving. */
struct vcmad_durable_guest;
struct vcmad_guest *vcmad_guest_restore(struct vcmad *d, struct vcmad_link *l, const struct vcmad_durable_guest *rec,
					int32_t *status);
/* Lay out its ring in shared memory [base, base+size), with an optional DMA window. */
int vcmad_guest_ring_init(struct vcmad_guest *g, void *base, uint64_t size, uint64_t window_off,
			  uint64_t window_size);
/* The attach is complete: count it and take what it published already. */
void vcmad_guest_started(struct vcmad_guest *g);
/* A guest that never started: give its slot back, free it (the link closed its I/O). */
void vcmad_guest_discard(struct vcmad_guest *g);

struct vcmad_guest *vcmad_guest_find(struct vcmad *d, uint32_t id);
struct vcmad_guest *vcmad_guest_by_name(struct vcmad *d, const char *name);

/* The link saw a kick: take requests (one turn). */
void vcmad_guest_kicked(struct vcmad_guest *g);
/* The link has read g's kicks after its turn: requests published since the turn's
 * last look at the ring (whose kick that read may have taken) get a turn soon. */
void vcmad_guest_kicks_read(struct vcmad_guest *g);
/* One turn: up to 64 requests; a guest with more goes on the run queue. */
void vcmad_guest_run(struct vcmad_guest *g);
/* PROTOCOL.md §4.9: guests whose req_poll window is open, with requests published
 * (without a kick), get their turn now, before vcmad serves another requester
 * (`except`, or a vcmactl command: NULL). */
void vcmad_guests_take_lazy(struct vcmad *d, const struct vcmad_guest *except);
/* Run the guests left on the run queue; true if any was. */
bool vcmad_guests_run_queued(struct vcmad *d);
void vcmad_guest_notify(struct vcmad_guest *g);
/* Answer a request that waited (a deferred ALLOC). */
void vcmad_guest_respond(struct vcmad_guest *g, const struct vcma_rsp *rsp);

/* Cut a guest off for breaking the protocol: log why, DEAD, final irq, detach. */
void vcmad_guest_kill(struct vcmad_guest *g, const char *why);
/* Detach: free its regions and RAM, close everything. */
void vcmad_guest_detach(struct vcmad_guest *g, const char *why);
/* vcmad exits with g attached: close everything, leave its memory as it is. */
void vcmad_guest_abandon(struct vcmad_guest *g);
/* Free the guests detached in this loop iteration. */
void vcmad_guests_reap(struct vcmad *d);
/* SIGTERM: every guest CLOSING, with a SHUTDOWN event; returns how many. */
uint32_t vcmad_guests_closing(struct vcmad *d);

/* Guests vcmad expects by name: the config's at start; libvirt discovery later adds
 * and removes them at run time. Expecting tells the guest's link (a QEMU guest gets
 * its socket); forgetting detaches the guest if attached, then tells the link. */
int vcmad_guest_expect(struct vcmad *d, const struct vcmad_guest_conf *gc);
int vcmad_guest_forget(struct vcmad *d, const char *name);
const struct vcmad_guest_conf *vcmad_guest_known(const struct vcmad *d, const char *name);
uint32_t vcmad_guests_known(const struct vcmad *d, enum vcmad_guest_kind kind);

#endif
