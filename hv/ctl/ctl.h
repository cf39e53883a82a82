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
 *   server.c    the socket: SO_PEERCRED check, buffering, bounds       (I/O)
 *   request.c   parse + validate a line, response envelopes             (pure, fuzzed)
 *   commands.c  one function per command, results from daemon state
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

#include "alloc.h"
#include "core.h"
#include "ctl/ctl_proto.h"
#include "evict.h"
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
	bool job_waiting, job_done;
	int job_err;
	struct vcma_region job_r;
	struct json_object *job_id; /* the request's id, echoed in the answer */
	char job_what[64];          /* "alloc 8 MiB in pool main", for the message */
	/* or a libvirt request (attach, detach, domain): its answer, as it came */
	bool job_lv;
	struct json_object *job_res;
	char job_msg[256];
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
	struct vcma_timer tick;         /* once a second while clients are connected */
	struct vcmad_requester admin;   /* vcmactl's test allocations */
	struct vcmad_ctl_stats stats;
};

/* commands.c: run a validated request. Returns the result object, or NULL with *err
 * (negative errno) and msg set. */
struct json_object *vcmad_ctl_exec(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, const struct vcmad_ctl_req *req,
				   int *err, char *msg, size_t msglen);
/* The operator's test allocations go the guests' way (alloc.h), as the requester
 * ctl->admin owning regions as VCMAD_CTL_ADMIN_GUEST (server.c); an allocation is
 * tagged with its client, which records the answer (c->job_*) when it comes (maybe
 * inside vcmad_ctl_exec) and sends it in request order. This builds the answer. */
struct json_object *vcmad_ctl_alloc_answer(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, int *err, char *msg,
					   size_t msglen);

/* A libvirt request of client arg ended (vcmad_lv_done_fn): answered in request order. */
void vcmad_ctl_lv_done(void *arg, int err, const char *msg, struct json_object *res);

/* vcmad's side of the control socket, for the daemon */
int vcmad_ctl_start(struct vcmad *d);
void vcmad_ctl_stop(struct vcmad *d);

#endif
