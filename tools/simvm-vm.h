/* SPDX-License-Identifier: MIT */
/*
 * simvm-vm.h - vcma-simvm's shared state: the VM, its vCPUs and the options, shared
 * by vcma-simvm.c (attach, vCPU workload, allocation driver, output),
 * simvm-vmm.c (the VMM channel: pause/remap/resume, free page reporting, pinning) and
 * simvm-reattach.c (a vcmad restart: the token, reconnecting, the new ring).
 */
#ifndef SIMVM_VM_H
#define SIMVM_VM_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "vcma.h"
#include "vcma_sim.h"

#define PAGE 4096ull
#define PAGE_WORDS (PAGE / 8)
#define MAX_SIZES 16
#define MAX_LOGGED 10 /* corruption reports per kind, then only counted */
#define ATTACH_TIMEOUT_MS 10000 /* an attach (or reattach) answer, each message after it */

/* free page reporting: each vCPU rotates ROT_PAGES pages every ROT_OPS page operations */
#define ROT_OPS 4096u
#define ROT_PAGES 8u

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_ATTACH = 3 };

enum workload { WL_CHECKSUM, WL_IDLE };

struct opts {
	const char *socket, *name, *devclass, *pool;
	uint64_t ram;
	unsigned int vcpus;
	enum workload workload;
	uint64_t sizes[MAX_SIZES];
	unsigned int nsizes;
	unsigned int max_regions;
	unsigned int interval_ms;
	unsigned int count;           /* stop after this many allocation attempts, 0 = no limit */
	double duration;
	uint64_t seed;
	bool json;
	/* the VMM channel */
	unsigned int report_pct;      /* share of each vCPU's pages kept reported: 0..90, 0..100 idle */
	uint64_t pin_bytes;           /* pin the first pin_bytes of RAM */
	unsigned int pause_delay_ms;  /* fault injection: late PAUSED */
	bool no_pause_ack;            /* fault injection: never PAUSED */
	unsigned int exit_after_pauses; /* fault injection: _exit(0) at this PAUSE, 0 = never */
	unsigned int refuse_remaps;   /* fault injection: refuse every K-th remap, 0 = never */
	bool no_one_trip;             /* attach without VCMA_SIM_F_ONE_TRIP (an older VMM) */
	bool no_dirty_log;            /* attach without VCMA_SIM_F_DIRTY_LOG */
	unsigned int write_rate;      /* page writes per second per vCPU, 0 = as fast as it can */
	bool no_reattach;             /* attach without VCMA_SIM_F_REATTACH: stop when vcmad does */
};

/* A vCPU page (index inside the vCPU's slice) is in exactly one state. */
enum page_state {
	PG_USED = 0,     /* written and verified; in used[] */
	PG_REPORTED = 1, /* reported free: never touched; in rep[] */
	PG_REUSING = 2,  /* REUSE sent, REUSED not yet seen: never touched; in reusing[] */
};

struct vm;
struct ring_handoff; /* simvm-reattach.c */

struct vcpu {
	struct vm *vm;
	unsigned int idx;
	uint64_t first, npages; /* gfn slice */
	uint64_t pin_end;       /* pages [0, pin_end) of the slice are pinned */
	uint32_t *gen;          /* per page: last generation written, 0 = never */
	uint8_t *pstate;        /* per page: enum page_state */
	uint32_t *pos;          /* per page: index in used[] or rep[] */
	uint32_t *used, nused;  /* pages in use */
	uint32_t *rep, nrep;    /* pages reported (not counting reusing[]) */
	uint32_t reusing[ROT_PAGES];
	unsigned int nreusing;
	atomic_uint reuse_seq;  /* seq of the outstanding REUSE, 0 = none */
	atomic_bool reuse_done; /* set by the VMM thread on REUSED(reuse_seq) */
	uint64_t ops;           /* page operations since the start of the random phase */
	uint64_t pace_t0, pace_n; /* --write-rate: writes since pace_t0 */
	uint64_t rng;
	uint64_t written, verified, corrupt;
	uint64_t reports, reuses, reused_pages; /* REPORT / REUSE messages sent, pages taken back */
	unsigned int reported_epoch; /* host_epoch when rep[] was last REPORTed (this thread's) */
	pthread_t thr;
	bool started;
};

struct pause_stats {
	uint64_t *dur_ns;    /* PAUSE received -> unparked by RESUME, one per pause */
	uint64_t *park_ns;   /* PAUSE received -> all vCPUs parked (PAUSED sent next) */
	uint64_t *resume_ns; /* RESUME received -> a vCPU runs again, one per vCPU and pause */
	size_t n, npark, nresume, cap, cap_park, cap_resume;
	uint64_t slept;      /* unparks that had gone to sleep on the futex */
};

struct vm;

/*
 * What a lower part calls upward, registered by main (vcma-simvm.c) in vm.up: the VMM
 * thread (simvm-vmm.c) reaches the reattach (simvm-reattach.c), and the reattach the
 * guest part (vcma-simvm.c), only through these, so no file calls one that calls it.
 */
struct vm_up_ops {
	/* simvm-reattach.c, for the VMM thread */
	void (*rings_dead)(struct vm *vm);                 /* reattach_rings_dead */
	bool (*cut_off)(struct vm *vm);                    /* reattach_cut_off */
	int (*reattach)(struct vm *vm, const char *cause); /* vmm_reattach */
	/* vcma-simvm.c, for the reattach */
	unsigned int (*regions_back)(struct vm *vm, const struct vcma_held_region *regions, size_t n);
	void (*report_again_idle)(struct vm *vm);
};

struct vm {
	const struct opts *o;
	const struct vm_up_ops *up;
	int sock;
	int machine_fd;
	int wake_fd; /* wakes the VMM thread at exit */
	int irq_fd;  /* the VMM's copy of the guest part's irq eventfd (reattach_lock) */
	struct vcma_ctrl *ctrl; /* the VMM's view of the ring's control page (reattach_lock) */
	uint32_t guest_id;
	uint64_t shm_size, ram_frames, machine_bytes, window_gpa;
	struct vcma_sim_run *runs;
	uint32_t nruns;
	uint64_t *p2m; /* mfn per gfn, as this VMM has RAM mapped (the VMM thread's, once started) */
	uint32_t flags; /* VCMA_SIM_F_* sent at attach */
	struct dlog *dlog; /* the dirty log of RAM, NULL if off (VMM thread once started) */
	uint32_t nmaps;
	uint8_t *base;
	uint64_t span;
	struct vcma *v;

	atomic_bool stop;
	atomic_bool host_gone;
	pthread_t vmm_thr;
	bool vmm_started;

	/*
	 * Pausing. pstate is also the futex word parked vCPUs sleep on: bit 0 set while
	 * a pause is requested, and every change (pause or resume) adds 1, so a vCPU that
	 * parked on one value sees any later one. nactive counts vCPU threads that may
	 * touch guest RAM (set before a thread starts, dropped when it ends); the VM is
	 * paused when pstate is odd and parked == nactive.
	 */
	atomic_uint pstate;
	atomic_uint nactive;
	atomic_uint parked;
	atomic_uint sleepers;
	atomic_uint pause_seq;
	atomic_uint_fast64_t resume_ns; /* when the last RESUME unparked */
	atomic_uint_fast64_t ack_not_before; /* --pause-delay-ms: no PAUSED before this */
	bool ack_pending;                    /* under send_lock: PAUSED(pause_seq) is owed */
	uint64_t pause_t0;                   /* under send_lock: when PAUSE arrived */
	unsigned int pauses_seen;            /* VMM thread only */

	/* the socket is written by the VMM thread, the vCPUs and the main thread */
	pthread_mutex_t send_lock;
	atomic_uint next_seq; /* VMM -> host requests (REUSE, PIN) */

	/* PIN, waited for by the main thread; pin_frames (under send_lock, as pin_waiting
	 * and pin_resent) is sent again after a reattach, and PINNED to that one is checked
	 * by the VMM thread unless main still waits for it */
	atomic_uint pin_seq;
	atomic_bool pin_done;
	atomic_int pin_status;
	uint64_t pin_frames;
	bool pin_waiting, pin_resent;
	uint64_t pinned_pages;

	/*
	 * Restart and reattach (simvm-reattach.c). Two epochs, each odd while its part is
	 * cut off from vcmad and read anywhere:
	 *   host_epoch  the VMM channel (under send_lock): from the socket's end to the new
	 *               socket; nothing is sent meanwhile (-ENOTCONN);
	 *   ring_epoch  the guest part (under reattach_lock): from the socket's end until the
	 *               ring thread has moved libvcma to the newest ring.
	 * The VMM thread reconnects and queues the new ring in ring_next; the ring thread
	 * (ring_thr) hands it to libvcma, so the VMM thread keeps serving the channel while
	 * libvcma says HELLO. reattach_lock covers ring_next, ring_busy (the one being handed
	 * over), ctrl and irq_fd, and detaching: main sets it, wakes ring_cond and joins the
	 * ring thread before vcma_detach. token is main's until the VMM thread starts, then
	 * the VMM thread's.
	 */
	struct vcma_sim_token token;
	bool have_token;
	dev_t machine_dev;
	ino_t machine_ino;
	atomic_uint host_epoch, ring_epoch;
	pthread_mutex_t reattach_lock;
	pthread_cond_t ring_cond;
	struct ring_handoff *ring_next, *ring_busy;
	pthread_t ring_thr;
	bool ring_started;
	bool detaching;
	atomic_bool reattach_failed; /* the host did not take the VM back: exit EXIT_ATTACH */
	atomic_uint_fast64_t reattaches, reattach_errors, local_reuses;
	uint64_t calls_retried; /* main: guest part calls in flight across a restart, retried */

	/* counters of the channel */
	pthread_mutex_t stats_lock;
	struct pause_stats ps;
	atomic_uint_fast64_t remapped_pages, remap_calls, remap_refused, reports_init;
	uint64_t remaps_seen; /* REMAP and REMAP_RESUME messages (the VMM thread's own) */
	/* a REMAP_RESUME refused, the VM parked until RESUME: its runs, applied if vcmad goes
	 * away before that RESUME (PROTOCOL.md §9.1 "Noticing"; the VMM thread's own) */
	struct vcma_sim_run refused_run[VCMA_SIM_MSG_RUNS];
	uint32_t nrefused, refused_seq;
	bool refused_parked;
	atomic_uint_fast64_t host_msgs_ignored;
	atomic_uint_fast64_t remap_resumes, drops, dropped_pages, drops_refused;
	atomic_uint_fast64_t tracks, tracks_refused, untracks, dirty_reads, dirty_read_errors, dirty_pages;

	/* a DIRTY_READ that came during a pause waits (VMM thread) until every vCPU is
	 * parked and PAUSED is sent; whoever sends PAUSED then wakes it through ack_fd */
	int ack_fd;
	atomic_bool dread_wait;
	bool dread_pending;
	uint32_t dread_seq;
	uint64_t dread_t0;
	atomic_uint_fast64_t logged_types; /* bit per unknown message type already logged */

	struct vcpu *vcpu;
	unsigned int nslices; /* vcpu[] entries: the vCPUs, or one slice for the idle workload */

	/* allocation driver (main thread, the mapper it calls, and the VMM thread checking
	 * held[] after a reattach: held_lock covers held[], nheld and rec[]) */
	pthread_mutex_t held_lock;
	struct held *held;
	unsigned int nheld;
	struct region_record *rec;
	size_t nrec, rec_cap;
	struct size_stat *st;
	uint64_t errors;
	uint64_t not_zeroed;
	uint64_t pattern_logged;
	atomic_uint_fast64_t corrupt_logged;
	atomic_uint_fast64_t vcpu_errors; /* vCPUs that gave up waiting to be resumed */
	atomic_bool park_gave_up;         /* ... after which nobody parks any more */
	uint64_t held_at_end;
	uint64_t start_ns, end_ns;
};

extern volatile sig_atomic_t got_signal;

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: the PRNG and the hash behind every pattern */
static inline uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline uint64_t rnd(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return mix64(*s);
}

static inline bool stopping(struct vm *vm)
{
	return atomic_load_explicit(&vm->stop, memory_order_relaxed) || got_signal;
}

__attribute__((format(printf, 1, 2))) void msg(const char *fmt, ...);
/* SIGINT/SIGTERM handler: sets got_signal (simvm-log.c). */
void on_signal(int sig);
/* poll one fd for input: 0 readable, -ETIMEDOUT, -errno (simvm-log.c) */
int wait_readable(int fd, int ms);
/* Receive an attach response and up to 4 fds (*got of them, the caller's to close
 * whatever the result): its length or 0 (closed), or -errno. *trunc: cut short. */
ssize_t sim_recv_rsp(int sock, struct vcma_sim_attach_rsp *rsp, int fds[4], int *got, bool *trunc);

/* ---- simvm-vmm.c: the VMM channel ---- */

int vmm_channel_init(struct vm *vm);
void vmm_channel_fini(struct vm *vm);
void *vmm_main(void *vm);

/* vCPU side: park here between page operations while a pause is requested */
void vmm_pause_point(struct vm *vm);
/* vCPU side: sleep up to ns touching no RAM (a pause need not wait for it), then
 * vmm_pause_point */
void vmm_idle(struct vm *vm, uint64_t ns);
/* a vCPU thread is about to start (before pthread_create) / has stopped touching RAM */
void vmm_vcpu_enter(struct vm *vm);
void vmm_vcpu_leave(struct vm *vm);

uint32_t vmm_next_seq(struct vm *vm);
/* vcmad is away: odd host_epoch (simvm-reattach.c) */
static inline bool vmm_host_away(struct vm *vm)
{
	return atomic_load_explicit(&vm->host_epoch, memory_order_relaxed) & 1u;
}
/* the guest part is on a ring whose vcmad went away: odd ring_epoch */
static inline bool vmm_ring_stale(struct vm *vm)
{
	return atomic_load_explicit(&vm->ring_epoch, memory_order_relaxed) & 1u;
}
/* rc of a send says vcmad went away, and a reattach will follow: nothing to log */
bool vmm_lost_err(struct vm *vm, int rc);
/* Send `type` with the pages gfns[0..n) (sorted, distinct) as merged runs, at most
 * VCMA_SIM_MSG_RUNS per message, all with `seq`. Returns messages sent or -errno. */
int vmm_send_gfns(struct vm *vm, uint16_t type, uint32_t seq, const uint64_t *gfns, uint64_t n);
/* PIN the first `frames` gfns and wait for PINNED: 0, a positive errno from the host,
 * or -errno (host gone, timeout) */
int vmm_pin(struct vm *vm, uint64_t frames);

/* The socket ended and a reattach follows: take host_epoch and ring_epoch odd, unpark
 * the vCPUs, stop dirty logging, answer the waiting REUSEs (VMM thread). */
void vmm_host_lost(struct vm *vm);
/* vcmad is gone for good: every ring the guest part is on or is being moved to reads
 * DEAD, with an irq, as vcmad does to a guest it cuts off (so its calls fail at once). */
void vmm_device_gone(struct vm *vm);
/* Reattached: serve the channel on sock from now on (the old one is closed), host_epoch
 * even, and PIN again what was pinned (VMM thread). */
void vmm_host_back(struct vm *vm, int sock);

/* ---- simvm-reattach.c: a vcmad restart ---- */

/* Main, at attach, after the response: read the TOKEN (0, have_token set), or find the
 * p2m first (a vcmad without restart support: 0, have_token false); else -errno, why. */
int reattach_read_token(struct vm *vm, const char **why);
/* VMM thread, the socket ended (cause says how): reconnect and take the VM back. 0: the
 * channel is served on a new socket and the new ring is queued for the ring thread;
 * -ECANCELED: the run is over or a signal came; other -errno: vcmad did not take the VM
 * back within the grace period (logged). */
int vmm_reattach(struct vm *vm, const char *cause);
/* VMM thread, the socket ended: did vcmad cut the VM off (DEAD on the ring that came
 * with the socket, PROTOCOL.md §8.2) rather than go away? Then there is nothing to take
 * back. */
bool reattach_cut_off(struct vm *vm);
/* Main: start the ring thread (after the VMM thread; only with a token) / stop it and
 * wait for it (before vcma_detach; sets detaching). 0 or -errno. */
int reattach_ring_start(struct vm *vm);
void reattach_ring_stop(struct vm *vm);
/* Under reattach_lock: DEAD and an irq on the rings queued or being handed over. */
void reattach_rings_dead(struct vm *vm);

/* ---- vcma-simvm.c, for simvm-reattach.c ---- */

/* Ring thread, before the guest part takes the new ring: every region the driver holds
 * must be in regions[0..n) unchanged; one that is not is dropped (logged). Returns how
 * many were dropped. */
unsigned int vm_regions_back(struct vm *vm, const struct vcma_held_region *regions, size_t n);
/* VMM thread, after a reattach: REPORT again the pages of slices no vCPU thread runs
 * (the idle workload); vCPU threads do their own. */
void vm_report_again_idle(struct vm *vm);

/* summary */
struct vmm_summary {
	uint64_t pauses;
	double p50_us, p99_us, max_us;         /* pause durations */
	double park_p50_us, park_p99_us, park_max_us; /* PAUSE -> all parked (PAUSED) */
	double resume_p50_us, resume_p99_us, resume_max_us; /* RESUME -> a vCPU running */
	uint64_t acks, unparks, slept;
	uint64_t remapped_pages, remap_calls, remap_refused;
	uint64_t host_msgs_ignored;
	uint64_t remap_resumes, drops, dropped_pages, drops_refused;
	uint64_t tracks, tracks_refused, untracks, dirty_reads, dirty_read_errors, dirty_pages;
};
void vmm_summary(struct vm *vm, struct vmm_summary *s);

#endif
