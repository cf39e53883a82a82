/* SPDX-License-Identifier: MIT */
/*
 * vcmad.h - the daemon object: init / start / run / stop / fini, so tests and main.c
 * drive the same code. Single-threaded: one epoll loop owns every guest.
 *
 *   vcmad ─┬─ vcma_core        pools + regions (hv/core)
 *          ├─ vcma_backend     machine memory (hv/backend: sim)
 *          ├─ listen socket    sim transport attach (hv/transport/sim.c)
 *          └─ vcmad_guest[]    one per attached guest: ring, eventfds, limits
 */
#ifndef VCMA_HV_VCMAD_H
#define VCMA_HV_VCMAD_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "conf.h"
#include "core.h"
#include "loop.h"
#include "ring.h"
#include "vcma_sim.h"

struct vcmad;

struct vcmad_guest_stats {
	uint64_t requests, alloc_ok, alloc_fail, frees, queries, kicks;
};

struct vcmad_guest {
	struct vcmad *d;
	uint32_t id;
	uint32_t role; /* enum vcma_sim_role */
	char name[VCMA_SIM_NAME_LEN];
	char devclass[VCMA_SIM_NAME_LEN];
	int sock;
	struct vcma_watch sock_w;
	int kick_fd;
	struct vcma_watch kick_w;
	int irq_fd;
	int shm_fd;
	void *shm;
	uint64_t shm_size;
	struct vcma_ring_host ring;
	bool hello;
	uint64_t features;
	uint32_t nregions;
	uint64_t bytes;
	double tokens;
	uint64_t tokens_at;
	struct vcma_extent *ram; /* VMM: guest RAM runs, in gfn order */
	uint32_t nram;
	uint64_t ram_frames;
	uint64_t window_gpa;
	bool queued; /* on the run queue */
	bool dead;   /* detached; freed at the end of the loop iteration */
	struct vcmad_guest *next_run;
	struct vcmad_guest_stats stats;
};

/* An accepted connection that has not sent its attach message yet. */
struct vcmad_conn {
	struct vcmad *d;
	int fd;
	struct vcma_watch w;
	uint64_t deadline_ns;
	struct vcmad_conn *next;
};

struct vcmad_stats {
	uint64_t attaches, detaches, violations, attach_refused;
};

struct vcmad {
	struct vcmad_conf conf;
	struct vcma_core core;
	struct vcma_backend be;
	struct vcma_loop loop;
	char sock_path[300];
	int listen_fd;
	struct vcma_watch listen_w;
	int signal_fd;
	struct vcma_watch signal_w;
	struct vcmad_guest **guest; /* [conf.max_guests] */
	uint32_t nguests;
	uint32_t next_id;
	struct vcmad_conn *conns;
	struct vcmad_guest *runq;
	struct vcmad_guest *zombies; /* detached, linked by next_run */
	struct vcmad_stats stats;
	uint64_t last_active_ns; /* when a guest last had requests served */
	bool stop;
	bool started;
};

/* Build pools, machine memory and the core from conf. */
int vcmad_init(struct vcmad *d, const struct vcmad_conf *conf);
/* Create the runtime directory and listening socket, install signal handling. */
int vcmad_start(struct vcmad *d);
/* Serve until SIGTERM/SIGINT (or vcmad_request_stop()). */
int vcmad_run(struct vcmad *d);
void vcmad_request_stop(struct vcmad *d);
/* Tell guests, detach them, remove the socket, free everything. */
void vcmad_fini(struct vcmad *d);

/* guest.c */
struct vcmad_guest *vcmad_guest_find(struct vcmad *d, uint32_t id);
void vcmad_guest_kick_cb(struct vcma_watch *w, uint32_t events);
void vcmad_guest_sock_cb(struct vcma_watch *w, uint32_t events);
void vcmad_guest_run(struct vcmad_guest *g);
/* Cut a guest off for breaking the protocol: log why, mark DEAD, kick, detach. */
void vcmad_guest_kill(struct vcmad_guest *g, const char *why);
/* Detach: free its regions and RAM, close everything. */
void vcmad_guest_detach(struct vcmad_guest *g, const char *why);
void vcmad_guest_notify(struct vcmad_guest *g);

/* transport/sim.c */
int vcmad_sim_listen(struct vcmad *d);
void vcmad_sim_accept_cb(struct vcma_watch *w, uint32_t events);
void vcmad_sim_reap_conns(struct vcmad *d, bool all);

/* sd_notify(3) without libsystemd: 0 if sent or NOTIFY_SOCKET unset. */
int vcmad_sd_notify(const char *msg);

#endif
