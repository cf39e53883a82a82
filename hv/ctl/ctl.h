/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - vcmad's control socket, the daemon side: the operator's view of pools,
 * guests and regions, and a few actions. vcmactl is the client; the protocol is in
 * ctl_proto.h.
 *
 *   vcmad_ctl ─┬─ listen socket   $runtime_dir/vcmad-ctl.sock, 0660, group ctl_group
 *              ├─ client[]        at most VCMAD_CTL_MAX_CLIENTS: input line buffer,
 *              │                  output queue, peer credentials
 *              └─ run queue       clients with requests left after their turn, served
 *                                 on the next loop iteration (an eventfd wakes it)
 *
 *   ctl.c       the socket: SO_PEERCRED check, buffering, bounds       (I/O)
 *   request.c   parse + validate a line, response envelopes             (pure, fuzzed)
 *   commands.c  one function per command, results from daemon state
 *   actions.c   compact and drain: thin, the vacate machinery comes with lending
 *
 * Who may connect: uid 0, vcmad's own uid, and members of [daemon] ctl_group (primary
 * or supplementary group of the peer at connect time). Others get one EACCES
 * response and are closed.
 *
 * Single-threaded on the daemon's loop; nothing here blocks. A client's unread output
 * is bounded (VCMAD_CTL_OUT_MAX): one that keeps asking without reading is dropped.
 */
#ifndef VCMA_HV_CTL_H
#define VCMA_HV_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core.h"
#include "ctl_proto.h"
#include "loop.h"

struct vcmad;

#define VCMAD_CTL_MAX_CLIENTS 16u
#define VCMAD_CTL_OUT_MAX (1u << 20) /* unread response bytes before a client is dropped */

struct vcmad_ctl_client {
	struct vcmad_ctl *ctl;
	int fd;
	struct vcma_watch w;
	uint32_t events; /* epoll interest */
	pid_t pid;
	uid_t uid;
	char *in; /* VCMAD_CTL_LINE_MAX + 1 bytes: one line and its newline */
	size_t in_len;
	char *out;
	size_t out_off, out_len, out_cap;
	bool closing; /* no more requests: close once out is flushed */
	bool doomed;  /* shut down; freed by its own epoll callback */
	bool queued;  /* on the run queue: complete lines left after its turn */
	bool eof;     /* the peer closed its side; lines left are still answered */
	uint64_t active_at;  /* connected, or last request taken (ns): idle since */
	uint64_t line_since; /* the unfinished line in `in` began (ns) */
	/* an alloc waiting for lent frames to be vacated: no further line is taken until
	 * it is answered, so answers keep the order of requests */
	struct vcmad_job *job;     /* the vacate job, while it runs */
	bool job_waiting, job_done;
	int job_err;
	struct vcma_region job_r;
	struct json_object *job_id; /* the request's id, echoed in the answer */
	char job_what[64];          /* "alloc 8 MiB in pool main", for the message */
	struct vcmad_ctl_client *next, *next_run;
};

struct vcmad_ctl_stats {
	uint64_t accepted, refused, busy, requests, errors, dropped, evicted;
};

struct vcmad_ctl {
	struct vcmad *d;
	int fd;
	struct vcma_watch w;
	char path[108];
	bool has_group;
	gid_t gid;
	uint64_t start_ns;
	struct vcmad_ctl_client *clients;
	uint32_t nclients;
	struct vcmad_ctl_client *runq; /* clients with requests left over from their turn */
	int run_fd;                    /* eventfd, readable while runq is not empty */
	struct vcma_watch run_w;
	bool run_armed;
	uint64_t ticked_at;     /* vcmad_ctl_tick's last sweep */
	uint32_t admin_regions; /* held by VCMAD_CTL_ADMIN_GUEST */
	uint64_t admin_bytes;
	struct vcmad_ctl_stats stats;
};

/* commands.c: run a validated request. Returns the result object, or NULL with *err
 * (negative errno) and msg set. */
struct json_object *vcmad_ctl_exec(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, const struct vcmad_ctl_req *req,
				   int *err, char *msg, size_t msglen);
/* An ALLOC whose window holds lent frames: vcmad_ctl_exec returns NULL with *err =
 * -EINPROGRESS and c->job set; vcmad_ctl_alloc_done (ctl.c) records the outcome, and
 * vcmad_ctl_alloc_answer builds the answer on the client's next turn. */
void vcmad_ctl_alloc_done(void *client, int err, const struct vcma_region *r);
struct json_object *vcmad_ctl_alloc_answer(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, int *err, char *msg,
					   size_t msglen);
/* Free one admin region (zeroing its frames); -ENOENT if it is not one. */
int vcmad_ctl_admin_free(struct vcmad_ctl *ctl, uint64_t handle);

/*
 * actions.c: take lent frames back from the guests. A lent frame backs a guest page;
 * moving it means backing that page with ordinary memory and returning the frame to
 * FREE (hv/vacate.c: pause, copy, remap, resume per VM).
 *
 * Both find the lent frames in scope and schedule every one to move, as one vacate
 * job per pool; the moves complete in the background (`pool show` counts frames
 * still being vacated). A job reserves ordinary memory for all its pages up front:
 * when there is not enough, nothing is scheduled for that pool and the call returns
 * -ENOMEM. compact keeps the pool from being relent for VCMAD_COMPACT_HOLD_NS;
 * drain keeps the guest off every pool from then on.
 */
struct vcmad_vacate_pool {
	uint32_t pool;                 /* index in the core */
	uint64_t lent_free, lent_used; /* frames in scope found lent */
	uint64_t scheduled;            /* of those, scheduled to move out */
	uint64_t largest_free;         /* frames, when the request was answered */
};

struct vcmad_vacate_result {
	uint32_t npools;
	struct vcmad_vacate_pool pool[VCMA_MAX_POOLS];
	uint64_t lent_found, scheduled;
};

/* Compact one pool (name) or all (NULL): vacate every lent frame so free space joins
 * up. -ENOENT for an unknown pool. */
int vcmad_compact(struct vcmad *d, const char *pool, struct vcmad_vacate_result *res);
/* Move the lent frames backing `guest`'s pages out of every pool. */
int vcmad_drain(struct vcmad *d, uint32_t guest, struct vcmad_vacate_result *res);

#endif
