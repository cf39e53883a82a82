/* SPDX-License-Identifier: MIT */
/*
 * vcmad.h - the daemon object: init / start / run / stop / fini, so tests and main.c
 * drive the same code. Single-threaded: one epoll loop owns every guest.
 *
 *   vcmad ─┬─ vcma_core        pools + regions (hv/core)
 *          ├─ vcma_backend     machine memory (hv/backend: sim)
 *          ├─ listen socket    sim transport attach (hv/transport/sim.c)
 *          ├─ vcmad_ivs[]      one ivshmem server socket per [guest] (hv/transport/ivshmem.c)
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
struct vcmad_ctl;
struct vcmad_ivs;
struct vcmad_job;

struct vcmad_guest_stats {
	uint64_t requests, alloc_ok, alloc_fail, frees, queries, kicks;
	uint64_t stray_reclaims, stray_bytes; /* qemu: memory written outside regions, released */
};

struct vcmad_guest {
	struct vcmad *d;
	uint32_t id;
	uint32_t role; /* enum vcma_sim_role */
	char name[VCMA_SIM_NAME_LEN];
	char devclass[VCMA_SIM_NAME_LEN];
	const struct vcmad_guest_conf *conf; /* its [guest NAME] section, NULL if unconfigured */
	uint32_t uid;                        /* the peer's, at attach (SO_PEERCRED); qemu: QEMU's */
	int sock;
	struct vcma_watch sock_w;
	int kick_fd;
	struct vcma_watch kick_w;
	int irq_fd;
	bool irq_stuck; /* the peer made irq_fd blocking and full: never written again */
	int shm_fd;
	void *shm;
	uint64_t shm_size;
	struct vcmad_ivs *ivs; /* qemu guest: its ivshmem server socket; NULL for sim */
	uint64_t audit_at, stray_logged_at; /* qemu guest: last stray-memory audit, last log of one */
	struct vcma_ring_host ring;
	bool hello;
	uint64_t features;
	uint32_t nregions;
	uint64_t bytes;
	uint32_t pending_allocs; /* ALLOCs waiting for a vacate */
	uint64_t pending_bytes;  /* their bytes: limits count what is promised */
	bool no_lend;            /* drained or unresponsive: never back with pool frames again */
	uint32_t pause_misses;   /* PAUSEs in a row it did not answer in time */
	bool unresponsive;       /* VCMAD_PAUSE_MISSES of them: its pool frames quarantined */
	double tokens;
	uint64_t tokens_at;
	uint64_t ram_frames;     /* VMM: guest RAM, gfn 0 .. ram_frames-1 (see p2m) */
	uint64_t window_gpa;
	uint64_t *p2m;    /* VMM: mfn backing each gfn */
	uint8_t *gflags;  /* VMM: VCMAD_GFN_* per gfn */
	uint32_t vm_seq;  /* seq of the last PAUSE sent */
	struct vcmad_job *pauser; /* the job holding this VM paused, or NULL */
	uint64_t paused_at;
	struct vcma_hist pause_hist; /* PAUSE sent -> RESUME sent, ns */
	bool queued; /* on the run queue */
	bool dead;   /* detached; freed at the end of the loop iteration */
	struct vcmad_guest *next_run;
	struct vcmad_guest_stats stats;
};

/* An accepted connection that has not sent its attach message yet. */
struct vcmad_conn {
	struct vcmad *d;
	int fd;
	uint32_t uid, gid; /* the peer's credentials when it connected */
	int32_t pid;
	struct vcma_watch w;
	uint64_t deadline_ns;
	struct vcmad_conn *next;
};

struct vcmad_stats {
	uint64_t attaches, detaches, violations, attach_refused;
	uint64_t conns_refused; /* closed at once: too many connections waiting to attach */
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
	struct vcmad_ivs *ivs;       /* [nivs] ivshmem server sockets, one per qemu [guest] */
	uint32_t nivs;
	uint64_t win_mfn, win_frames; /* qemu guests' DMA window: the span of the pools */
	struct vcmad_guest *runq;
	struct vcmad_guest *zombies; /* detached, linked by next_run */
	struct vcmad_stats stats;
	struct vcmad_ctl *ctl; /* control socket (hv/ctl), NULL until started */
	struct vcmad_job *jobs;      /* vacate jobs in flight */
	struct vcmad_job *done_jobs; /* finished, freed after the loop iteration */
	uint32_t vacate_batch;       /* pages per pause, adapted to max_pause_us */
	uint64_t pause_ns_per_page;  /* moving average: what a pause costs per page moved */
	uint64_t ord_reserved;       /* ordinary frames promised to running vacate jobs */
	struct vcma_hist pause_hist; /* every guest pause, ns */
	uint64_t vacate_jobs_ok, vacate_jobs_failed;
	uint64_t last_alloc_ns;      /* last ALLOC or FREE served: relend waits for quiet */
	bool relend_dirty;           /* something changed since relending last found nothing */
	uint64_t last_active_ns; /* when a guest last had requests served */
	bool stop;
	bool closing;           /* stop seen: guests told, waiting for them to detach */
	uint64_t closing_until; /* then exit anyway */
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
/* Unmap the shared area and close the guest's fds and socket (idempotent). */
void vcmad_guest_close_io(struct vcmad_guest *g);
/* Cut a guest off for breaking the protocol: log why, mark DEAD, kick, detach. */
void vcmad_guest_kill(struct vcmad_guest *g, const char *why);
/* Detach: free its regions and RAM, close everything. */
void vcmad_guest_detach(struct vcmad_guest *g, const char *why);
/* vcmad exits with g attached: close everything but leave its memory as it is. */
void vcmad_guest_abandon(struct vcmad_guest *g);
void vcmad_guest_notify(struct vcmad_guest *g);

/* Guest id and d->guest[] slot for a new guest: 0 / -ENOSPC when full. Every
 * configured guest ([guest NAME]) has a slot of its own; the others share the rest
 * of max_guests, so sim clients can never crowd out a configured guest. */
int vcmad_guest_slot(struct vcmad *d, bool configured, uint32_t *slot, uint32_t *id);
struct vcmad_guest *vcmad_guest_by_name(struct vcmad *d, const char *name);
/* Give a committed region to g: clear its memory, record where g sees it, count it,
 * fill an OK response. On error the region is freed again. */
int vcmad_guest_take_region(struct vcmad_guest *g, struct vcma_region *r, struct vcma_rsp *rsp);

/* transport/ivshmem.c: QEMU guests over ivshmem-doorbell, vcmad as the server */
int vcmad_ivshmem_listen(struct vcmad *d);
void vcmad_ivshmem_close(struct vcmad *d);
/* Offset of machine frame mfn in a qemu guest's DMA window. */
uint64_t vcmad_ivshmem_offset(const struct vcmad *d, uint64_t mfn);
/* Punch a region's range out of g's window: zeros, and no memory held. */
int vcmad_ivshmem_clear(struct vcmad_guest *g, uint64_t mfn, uint64_t n);
/* A qemu guest detaches: punch its whole window, free its socket for a new QEMU. */
void vcmad_ivshmem_detached(struct vcmad_guest *g);
/* The same without touching its memory (vcmad exits with the guest attached). */
void vcmad_ivshmem_forget(struct vcmad_guest *g);
/* Host memory a qemu guest's memfd holds now (its BAR2: shared area, regions, strays). */
uint64_t vcmad_ivshmem_committed(const struct vcmad_guest *g);
/* Release memory qemu guests wrote outside their regions (each guest once a second). */
void vcmad_ivshmem_audit(struct vcmad *d);
/* Read [off, off+len) of a region's bytes as the guest sees them. */
int vcmad_region_read(struct vcmad *d, const struct vcma_region *r, uint64_t off, void *buf, size_t len);

/* transport/sim.c */
int vcmad_sim_listen(struct vcmad *d);
void vcmad_sim_accept_cb(struct vcma_watch *w, uint32_t events);
void vcmad_sim_reap_conns(struct vcmad *d, bool all);

#define VCMAD_GFN_PINNED 1u   /* never back with a lendable pool frame */
#define VCMAD_GFN_REPORTED 2u /* the guest reported the page free */
#define VCMAD_GFN_QUARANTINED 4u /* its pool frame is claimed while the VM is unresponsive */

/* A VMM that leaves this many PAUSEs in a row unanswered is unresponsive: it is lent
 * no more pool frames, and those it holds are claimed (no window search picks them)
 * until it detaches, so allocations go around it instead of waiting on it. */
#define VCMAD_PAUSE_MISSES 3u

/* lend.c: guest RAM from pools and ordinary memory, and the VMM channel. */
int vcmad_lend_ram(struct vcmad_guest *g);
void vcmad_lend_release(struct vcmad_guest *g);
int vcmad_lend_p2m_runs(struct vcmad_guest *g, struct vcma_sim_run **runs, uint32_t *nruns);
struct vcma_pool *vcmad_pool_of(struct vcmad *d, uint64_t mfn);
/* A message from a VMM: 0, or -EPROTO with *why (the caller cuts the VM off). */
int vcmad_vmm_message(struct vcmad_guest *g, const void *buf, size_t len, const char **why);
int vcmad_vmm_send(struct vcmad_guest *g, uint16_t type, uint32_t seq, int32_t status,
		   const struct vcma_sim_run *runs, uint32_t n);

/* vacate.c: move lent frames out of a claimed window by pause, copy, remap, resume. */
int vcmad_vacate_start(struct vcmad_guest *req, uint64_t req_id, const struct vcma_alloc_plan *plan);
/* The same for vcmad's own requesters: done(arg, 0, region) or done(arg, -errno, NULL)
 * when the job ends, unless vcmad_vacate_forget() was called first. The plan is
 * committed (the region belongs to plan's requester) or aborted before done runs.
 * *jobp is valid until done runs or the job is forgotten. done may run before
 * vcmad_vacate_start_cb returns. */
typedef void (*vcmad_alloc_done_fn)(void *arg, int err, const struct vcma_region *r);
int vcmad_vacate_start_cb(struct vcmad *d, const struct vcma_alloc_plan *plan, vcmad_alloc_done_fn done, void *arg,
			  struct vcmad_job **jobp);
void vcmad_vacate_forget(struct vcmad_job *j);
void vcmad_vacate_paused(struct vcmad_guest *vm, uint32_t seq);
void vcmad_vacate_remapped(struct vcmad_guest *vm, uint32_t seq, int32_t status);
void vcmad_vacate_guest_gone(struct vcmad_guest *g);
void vcmad_vacate_tick(struct vcmad *d);
void vcmad_vacate_reap(struct vcmad *d);
void vcmad_vacate_cancel_all(struct vcmad *d);
/* A message to g's VMM could not be sent (err < 0): a closed socket is a detach,
 * a full one (the VMM stopped reading) cuts it off. */
void vcmad_vmm_send_failed(struct vcmad_guest *g, const char *what, int err);
/* Milliseconds until the loop must run vacate_tick again (-1: no deadline). */
int vcmad_vacate_timeout_ms(struct vcmad *d);
/* Around many frame map changes in a row: summaries are recomputed once at the
 * end (vcma_fmap_batch_begin); no allocation or search may run in between. */
static inline void vcmad_pools_batch_begin(struct vcmad *d)
{
	for (uint32_t i = 0; i < d->core.npools; i++)
		vcma_fmap_batch_begin(&d->core.pool[i]->fm);
}

static inline void vcmad_pools_batch_end(struct vcmad *d)
{
	for (uint32_t i = 0; i < d->core.npools; i++)
		vcma_fmap_batch_end(&d->core.pool[i]->fm);
}

/* Pool frames were freed or guest pages left a pool: relending may have work. */
static inline void vcmad_relend_kick(struct vcmad *d)
{
	d->relend_dirty = true;
}
/* Schedule moving the pages on lent frames idx[] of pool p to ordinary memory. */
int vcmad_vacate_evict_frames(struct vcmad *d, struct vcma_pool *p, const uint64_t *idx, size_t n,
			      uint64_t *scheduled);
/* PIN from a VMM: mark the pages, move those on pool frames off, then PINNED. */
int vcmad_pin(struct vcmad_guest *g, uint32_t seq, const struct vcma_sim_run *runs, uint32_t nruns);

#define VCMAD_COMPACT_HOLD_NS (30ull * 1000000000ull) /* no relending after a compaction */
#define VCMAD_RELEND_MAX 8192u                        /* pages per relend job */
/* answer a deferred request of g */
void vcmad_guest_respond(struct vcmad_guest *g, const struct vcma_rsp *rsp);

/* ctl/ctl.c: the operator's control socket; stop is a no-op if start failed. */
int vcmad_ctl_start(struct vcmad *d);
void vcmad_ctl_stop(struct vcmad *d);
/* Once a second: close control clients stalled in the middle of a request line. */
void vcmad_ctl_tick(struct vcmad *d);

/* sd_notify(3) without libsystemd: 0 if sent or NOTIFY_SOCKET unset. */
int vcmad_sd_notify(const char *msg);

#endif
