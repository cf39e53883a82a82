/* SPDX-License-Identifier: MIT */
/*
 * vcmad.h - the daemon's state: what each subsystem keeps, in one struct that every
 * subsystem's functions take. Types only; what each subsystem does is in its own
 * header. Single-threaded: one epoll loop owns everything (libvirt's calls run on a
 * worker thread that shares nothing of this but messages: libvirt_worker.h).
 *
 *   vcmad ─┬─ vcma_core        pools + regions                       (core/)
 *          ├─ vcmad_backend    machine memory + VM control: sim, xen (backend/)
 *          ├─ vcmad_link[]     guest links: sim, ivshmem, xenbus     (link/)
 *          ├─ vcmad_guests     attached and expected guests          (guest.h)
 *          ├─ vcmad_vm list    VMs whose RAM vcmad backs             (vm.h)
 *          ├─ vcmad_vacate     jobs moving lent pages                (vacate.h)
 *          ├─ vcmad_relend     idle pool frames back to VMs' RAM     (relend.h)
 *          ├─ vcmad_scrub      zeroing frames a dead guest gave back (scrub.h)
 *          ├─ vcmad_balloon    idle capacity to lenders: Xen balloons, virtio-mem
 *          │                   devices (balloon.h, vmem.h)
 *          ├─ vcmad_libvirt    libvirt-managed guests (a worker thread) (libvirt.h)
 *          └─ vcmad_ctl        the operator's control socket         (ctl/)
 *
 * The lower subsystems (core, backend, vm, vacate) never call the upper ones (links,
 * guests, ctl) but through the hooks those register.
 */
#ifndef VCMA_HV_VCMAD_H
#define VCMA_HV_VCMAD_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "conf.h"
#include "core.h"
#include "link_ops.h"
#include "loop.h"

struct vcmad_ctl;
struct vcmad_libvirt;
struct vcmad_guest;
struct vcmad_job;
struct vcmad_vm;

/* The guest table (guest.h). */
struct vcmad_guests {
	struct vcmad_guest **slot; /* [max_guests] */
	uint32_t n;
	uint32_t next_id;
	struct vcmad_guest *runq;
	struct vcmad_guest *zombies; /* detached, linked by next_run */
	/* PROTOCOL.md §4.9: guests whose req_poll window is open, linked by next_lazy;
	 * the timer closes each lazy_free_ms after its last turn */
	struct vcmad_guest *lazy;
	struct vcma_timer lazy_timer;
	uint32_t lazy_pass;
	bool in_lazy;
	uint64_t lazy_takes_closed; /* turns for requests found when a window closed */
	uint64_t lazy_takes_early;  /* turns for requests found before another requester's */
	struct vcmad_guest_conf **known; /* expected guests: the config's and run-time ones */
	uint32_t nknown, known_cap;
};

/* The vacate engine (vacate.h). */
struct vcmad_vacate {
	struct vcmad_job *jobs;      /* in flight */
	struct vcmad_job *done_jobs; /* finished, freed after the loop iteration */
	uint32_t batch;              /* pages per pause, adapted to max_pause_us */
	uint64_t ns_per_page;        /* moving average: what a pause costs per page moved */
	uint64_t ord_reserved;       /* ordinary frames promised to running jobs */
	struct vcma_hist pause_hist; /* every VM pause, ns */
	uint64_t jobs_ok, jobs_failed;
	/* what VMMs that offer more than pause/remap were spared (PROTOCOL.md §9.1) */
	uint64_t drops, dropped_pages;         /* DROPs done: reported pages moved without a pause */
	uint64_t precopy_batches, precopy_rounds; /* batches pre-copied; DIRTY_READs while running */
	uint64_t precopy_pages, precopy_recopied; /* pages pre-copied; copied again (written meanwhile) */
	uint64_t precopy_final_pages;          /* copied inside the final pause */
	uint64_t precopy_fallbacks;            /* did not converge: pause-and-copy batches instead */
	uint64_t reuses_held;                  /* REUSEs answered only after the DROP they raced */
	uint64_t copy_slices;                  /* relend's first copies: loop turns given back midway */
	uint64_t relend_gave_way;              /* relend batches given up between slices for another job */
	struct vcma_timer step; /* jobs waiting for their turn get one */
};

/* Relending (relend.h). */
struct vcmad_relend {
	bool dirty;            /* something changed since relending last found nothing */
	uint64_t last_alloc_ns; /* last ALLOC or FREE served: relending waits for quiet */
	struct vcma_timer timer;
};

/* Lending idle capacity (balloon.h). */
#define VCMAD_BALLOON_MAX_LENDERS 16u

struct vcmad_lender_ops;

/* One lender's counters (frames). */
struct vcmad_lender_stats {
	uint64_t lends, lent_total;       /* lend operations, frames lent over time */
	uint64_t asked, came_back;        /* frames asked back, and those that came back in time */
	uint64_t reclaims, reclaims_short; /* take-backs, and those that ended short */
	uint64_t reclaim_ns_total, reclaim_ns_max;
};

struct vcmad_lender {
	const struct vcmad_lender_ops *ops; /* NULL: the slot is free */
	void *priv;                         /* the lender kind's state (vmem.c) */
	char name[32];                      /* its [guest NAME] section or libvirt domain */
	uint32_t dom;                       /* Xen: its domain id */
	bool present;                       /* it runs (Xen: its domain; vmem: its driver is up) */
	uint64_t lent;                      /* frames lent to it now */
	uint64_t reclaim_timeout_ns;
	struct vcmad_lender_stats st;
};

struct vcmad_balloon {
	struct vcmad_lender lender[VCMAD_BALLOON_MAX_LENDERS];
	uint32_t nlenders;                      /* slots in use are below this */
	uint64_t lends, lent_frames_total;      /* lend operations, frames lent over time */
	uint64_t reclaims, reclaimed_frames;    /* windows that needed lent capacity back */
	uint64_t reclaims_short;                /* ... and did not get all of it in time */
	uint64_t reclaim_ns_total, reclaim_ns_max;
};

/* Zeroing pool frames after the fact (scrub.h). */
struct vcmad_scrub_range {
	uint64_t mfn, n;
};

struct vcmad_scrub_file {
	struct vcmad_scrub_file *next;
	int fd;
	void *map;
	size_t map_size;
	uint64_t pos, end; /* bytes of fd still to punch */
};

struct vcmad_scrub {
	struct vcmad_scrub_file *files; /* detached guests' own memory, oldest first */
	struct vcmad_scrub_range *q; /* ranges to look at, from head to n */
	size_t n, cap, head;
	uint64_t pending_frames;  /* frames queued, not looked at yet (and pages of files) */
	uint64_t scrubbed_frames; /* frames zeroed and marked known zero */
	uint64_t errors;          /* zeroing that failed (the frames' next owner zeroes them) */
	uint64_t deferred;        /* steps put off because a VM was paused */
	struct vcma_timer timer;
};

/* Regions freed in a guest's turn whose frames wait until the turn's answers are out
 * (alloc.h, vcmad_free_hold). */
#define VCMAD_HELD_MAX 64u /* a turn takes at most 64 requests (guest.c) */

struct vcmad_requester;

struct vcmad_held {
	uint32_t depth; /* open holds: FREEs are held while it is nonzero */
	uint32_t n;
	uint64_t frees;          /* FREEs held so far */
	uint64_t released_early; /* holds ended early: an ALLOC needed the frames, a QUERY counted them */
	struct {
		struct vcmad_requester *rq;
		struct vcma_region r;
	} ent[VCMAD_HELD_MAX];
};

struct vcmad_stats {
	uint64_t attaches, detaches, violations, attach_refused;
	uint64_t conns_refused; /* closed at once: too many connections waiting to attach */
	/* detaches that gave something back (regions, RAM): how long from the loop's wake-up
	 * that saw the guest go (its hang-up, its loss, a violation) to its regions and RAM
	 * frames free in the pools */
	uint64_t reclaims, reclaimed_regions, reclaimed_ram_frames;
	uint64_t reclaim_last_ns;
	struct vcma_hist reclaim_latency;
	struct vcma_hist loop_turn; /* every loop turn: from finding work to the turn's end, ns */
};

struct vcmad_held_answer;
struct vcmad_durable_guest;
struct vcmad_durable_vm;
struct vcma_store;

/* Ownership recorded in the state directory (durable.h). */
struct vcmad_durable {
	struct vcma_store *store; /* NULL: not recorded */
	bool stale;               /* a turn failed to commit: nothing granted until all is recorded anew */
	bool reopen;              /* ...and the store must be opened again first (a failed sync) */
	bool turn_failed;         /* a put or del of this turn failed */
	int lock_fd;              /* DIR/vcmad.lock, held while running (locked) */
	bool locked;
	bool previous;            /* the store holds a previous run's guests, for restore.c to take back */
	char dir[256];
	struct vcmad_held_answer *held; /* answers to allocations granted this turn */
	size_t nheld, held_cap;
	struct vcmad_durable_guest *guests; /* [max_guests]: the guests recorded */
	struct vcmad_durable_vm *vms;       /* every VM's p2m record state */
	struct vcmad_durable_vm *dirty_vms; /* those with p2m chunks to write this turn */
	uint64_t commits, commit_ns_total, commit_ns_max, failures, resyncs, held_total, refused;
};

/* Guests taken back after a restart (restore.h). */
struct vcmad_restore {
	struct vcmad_link link;   /* the restored guests' link until they are back */
	struct vcma_timer grace;  /* reclaims the sim guests not back in time */
	uint32_t waiting;         /* restored guests not back yet */
	uint32_t vms_waiting;     /* of them, VMs: nothing is handed out while > 0 */
	uint64_t since_ns;        /* when the restart took them back */
	/* counts for vcmactl stats */
	uint64_t restored_guests, restored_regions, restored_vms, back, reclaimed;
};

struct vcmad {
	struct vcmad_conf conf;
	struct vcma_core core;
	struct vcmad_backend be;
	struct vcma_loop loop;
	struct vcmad_link links[VCMAD_NLINKS];
	struct vcmad_guests guests;
	struct vcmad_vm *vms;
	uint32_t vms_paused; /* VMs paused for a vacate now (vm.c keeps it; scrub.c reads it) */
	struct vcmad_vacate vacate;
	struct vcmad_relend relend;
	struct vcmad_scrub scrub;
	struct vcmad_balloon balloon;
	struct vcmad_held held;
	struct vcmad_ctl *ctl; /* control socket (hv/ctl), NULL until started */
	struct vcmad_restore restore; /* guests taken back after a restart (restore.h) */
	struct vcmad_libvirt *libvirt; /* [libvirt] uri set and built with libvirt; else NULL */
	int signal_fd;
	struct vcma_watch signal_w;
	struct vcmad_stats stats;
	struct vcmad_durable durable;
	uint64_t last_active_ns; /* when a guest last had requests served (adaptive polling) */
	uint64_t turn_start_ns;  /* when this loop turn's work began (0: not yet; stats loop_turn) */
	bool stop;
	bool closing;           /* stop seen: guests told, waiting for them to detach */
	uint64_t closing_until; /* then exit anyway */
	bool started;
};

static inline uint64_t vcmad_now(const struct vcmad *d)
{
	return vcma_loop_now(&d->loop);
}

/* Pool frames were freed, or guest pages left a pool: relending may have work
 * (relend.c looks when its timer fires). */
static inline void vcmad_relend_kick(struct vcmad *d)
{
	d->relend.dirty = true;
	if (!d->relend.timer.armed)
		vcma_timer_arm(&d->loop, &d->relend.timer, vcma_loop_now(&d->loop));
}

#endif
