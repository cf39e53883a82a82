// SPDX-License-Identifier: MIT
/*
 * simvm-vmm.c - vcma-simvm's side of the VMM channel (proto/vcma_sim.h): lending and
 * vacating, free page reporting, pinning.
 *
 *   PAUSE    the VMM thread sets a pause request (pstate odd); each vCPU finishes the
 *            page operation it is on and parks at its next pause point: it spins for
 *            PARK_SPIN_NS (a resume then costs one cache-line transfer), then sleeps on
 *            the pstate futex. Whoever sees the last vCPU park (that vCPU, or the VMM
 *            thread when none is running) sends PAUSED, so an ack costs no wake-up.
 *   REMAP    while paused, one mmap(MAP_FIXED) per run as the host sent it (runs that
 *            continue each other in gfn and mfn are merged, never split: each mapping
 *            counts against vm.max_map_count), then REMAPPED.
 *   RESUME   always unparks; the pause is timed from PAUSE received to this.
 *   REUSED / PINNED  hand the answer to the vCPU or the main thread that waits for it.
 * With VCMA_SIM_F_ONE_TRIP:
 *   REMAP_RESUME  REMAP, then unpark as RESUME does (the pause ends here), then REMAPPED;
 *            a refused one stays parked (the host may have cleared the old frames and
 *            restores them) until the host's RESUME.
 *   DROP     map the runs like REMAP while the vCPUs run (they never touch reported
 *            pages), then DROPPED.
 *   A remap is all or nothing: if an mmap fails, the runs already mapped go back to the
 *   frames our own p2m (vm->p2m) still names; if that fails too the VM's memory is in no
 *   known state and we exit, which closes the connection (PROTOCOL.md §9.1).
 * With VCMA_SIM_F_DIRTY_LOG (simvm-dirty.c):
 *   TRACK / UNTRACK  start / stop logging writes to gfns; TRACKING answers TRACK.
 *   DIRTY_READ  read and clear the log, answered with DIRTY messages. During a pause it
 *            waits (the thread keeps serving the socket) until every vCPU is parked and
 *            PAUSED is out: whoever sends PAUSED wakes this thread through ack_fd.
 *   Every remap re-registers the new mapping with the log; a remap that worked stops
 *   logging the gfns it moved.
 * When the socket ends and vcmad gave a token (simvm-reattach.c reconnects):
 *   vmm_host_lost  host_epoch odd (nothing is sent), unpark as RESUME does (the pages
 *            stay where they were applied and answered), stop logging, drop a waiting
 *            DIRTY_READ, and answer each REUSE still waiting as REUSED would (no DROP
 *            can come any more).
 *   vmm_host_back  the new socket in, host_epoch even, PIN again what was pinned.
 *
 * The VMM thread is the socket's only reader and the only one that replaces it; every
 * writer holds send_lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "simvm-dirty.h"
#include "simvm-vm.h"

#define PARK_SPIN_NS 50000ull         /* spin this long before sleeping on the futex */
#define PARK_SLEEP_NS 100000000ull    /* futex sleeps re-check for a gone host this often */
#define PARK_STOP_TIMEOUT_NS 30000000000ull /* run over and still paused: give up then */
#define PIN_TIMEOUT_NS 60000000000ull
#define DREAD_WAIT_NS 10000000000ull  /* a DIRTY_READ waiting for parked vCPUs: give up then */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

static void futex_wait(atomic_uint *word, unsigned int val, uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

	syscall(SYS_futex, (unsigned int *)word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static void futex_wake_all(atomic_uint *word)
{
	syscall(SYS_futex, (unsigned int *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

int vmm_channel_init(struct vm *vm)
{
	int rc = pthread_mutex_init(&vm->send_lock, NULL);

	if (rc)
		return -rc;
	rc = pthread_mutex_init(&vm->stats_lock, NULL);
	if (rc) {
		pthread_mutex_destroy(&vm->send_lock);
		return -rc;
	}
	vm->ack_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->ack_fd < 0) {
		rc = errno;
		pthread_mutex_destroy(&vm->stats_lock);
		pthread_mutex_destroy(&vm->send_lock);
		return -rc;
	}
	atomic_store(&vm->next_seq, 1);
	return 0;
}

void vmm_channel_fini(struct vm *vm)
{
	pthread_mutex_destroy(&vm->send_lock);
	pthread_mutex_destroy(&vm->stats_lock);
	close(vm->ack_fd);
	free(vm->ps.dur_ns);
	free(vm->ps.park_ns);
	free(vm->ps.resume_ns);
}

bool vmm_lost_err(struct vm *vm, int rc)
{
	return vm->have_token && (rc == -ENOTCONN || rc == -EPIPE || rc == -ECONNRESET);
}

uint32_t vmm_next_seq(struct vm *vm)
{
	uint32_t s;

	do
		s = atomic_fetch_add(&vm->next_seq, 1);
	while (!s); /* 0 means "none" in the vCPUs' bookkeeping */
	return s;
}

/* ---- sending ---- */

static int send_locked(struct vm *vm, uint16_t type, uint32_t seq, int32_t status, const struct vcma_sim_run *runs,
		       uint32_t count)
{
	union {
		struct vcma_sim_msg m;
		unsigned char buf[VCMA_SIM_MSG_MAX];
	} u;
	size_t len = sizeof(u.m) + (size_t)count * sizeof(*runs);
	ssize_t n;

	if (count > VCMA_SIM_MSG_RUNS)
		return -EINVAL;
	if (vmm_host_away(vm))
		return -ENOTCONN; /* vcmad restarts: the VMM channel is not there */
	memset(&u.m, 0, sizeof(u.m));
	u.m.magic = VCMA_SIM_MAGIC;
	u.m.version = VCMA_SIM_VERSION;
	u.m.type = type;
	u.m.seq = seq;
	u.m.status = status;
	u.m.count = count;
	if (count)
		memcpy(u.buf + sizeof(u.m), runs, (size_t)count * sizeof(*runs));
	do
		n = send(vm->sock, u.buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

static int send_msg(struct vm *vm, uint16_t type, uint32_t seq, int32_t status, const struct vcma_sim_run *runs,
		    uint32_t count)
{
	int rc;

	pthread_mutex_lock(&vm->send_lock);
	rc = send_locked(vm, type, seq, status, runs, count);
	pthread_mutex_unlock(&vm->send_lock);
	return rc;
}

int vmm_send_gfns(struct vm *vm, uint16_t type, uint32_t seq, const uint64_t *gfns, uint64_t n)
{
	struct vcma_sim_run run[VCMA_SIM_MSG_RUNS];
	uint32_t nr = 0;
	int sent = 0, rc;

	for (uint64_t i = 0; i < n;) {
		uint64_t j = i + 1;

		while (j < n && gfns[j] == gfns[j - 1] + 1)
			j++;
		run[nr++] = (struct vcma_sim_run){ .gfn = gfns[i], .mfn = 0, .count = j - i };
		i = j;
		if (nr == VCMA_SIM_MSG_RUNS || i == n) {
			rc = send_msg(vm, type, seq, 0, run, nr);
			if (rc)
				return rc;
			sent++;
			nr = 0;
		}
	}
	return sent;
}

/* ---- pausing ---- */

static void push_sample(uint64_t **arr, size_t *n, size_t *cap, uint64_t v)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 1024;
		uint64_t *p = realloc(*arr, c * sizeof(*p));

		if (!p)
			return; /* a lost sample, not worth failing the run for */
		*arr = p;
		*cap = c;
	}
	(*arr)[(*n)++] = v;
}

static bool all_parked(struct vm *vm)
{
	return (atomic_load(&vm->pstate) & 1u) && atomic_load(&vm->parked) >= atomic_load(&vm->nactive);
}

/* Send PAUSED if it is owed and due. Any thread; cheap when nothing is owed. */
static void try_ack(struct vm *vm)
{
	uint64_t t = 0;
	bool sent = false;
	int rc = 0;

	if (vm->o->no_pause_ack || !all_parked(vm))
		return;
	if (vm->o->pause_delay_ms && now_ns() < atomic_load(&vm->ack_not_before))
		return; /* the VMM thread acks at the deadline */
	pthread_mutex_lock(&vm->send_lock);
	if (vm->ack_pending && all_parked(vm)) {
		vm->ack_pending = false;
		t = now_ns() - vm->pause_t0; /* all parked; the send is the host's to see */
		rc = send_locked(vm, VCMA_SIM_MSG_PAUSED, atomic_load(&vm->pause_seq), 0, NULL, 0);
		sent = true;
	}
	pthread_mutex_unlock(&vm->send_lock);
	if (sent && rc && !atomic_load(&vm->host_gone) && !vmm_lost_err(vm, rc))
		msg("cannot send PAUSED: %s", strerror(-rc));
	/* a DIRTY_READ may be waiting for this PAUSED (seq_cst: it set dread_wait before
	 * it looked at ack_pending, and we cleared that before we look here) */
	if (sent && atomic_load(&vm->dread_wait)) {
		uint64_t one = 1;

		if (write(vm->ack_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			msg("cannot wake the VMM thread: %s", strerror(errno));
	}
	if (sent) {
		pthread_mutex_lock(&vm->stats_lock);
		push_sample(&vm->ps.park_ns, &vm->ps.npark, &vm->ps.cap_park, t);
		pthread_mutex_unlock(&vm->stats_lock);
	}
}

void vmm_vcpu_enter(struct vm *vm)
{
	atomic_fetch_add(&vm->nactive, 1);
}

void vmm_vcpu_leave(struct vm *vm)
{
	atomic_fetch_sub(&vm->nactive, 1);
	try_ack(vm); /* the pause may have been waiting for this vCPU only */
}

/* The host is gone, the user wants out, or a run that is over waited too long. */
static bool nobody_resumes(struct vm *vm)
{
	return atomic_load_explicit(&vm->host_gone, memory_order_relaxed) || got_signal ||
	       atomic_load_explicit(&vm->park_gave_up, memory_order_relaxed);
}

/*
 * This vCPU is counted in parked and pstate was s (odd): wait for the resume, then
 * leave. A PAUSE that comes between its last look at pstate and the decrement may have
 * counted it as parked and been acked; so it looks once more after the decrement
 * (seq_cst: on_pause bumps pstate before it counts) and parks again for that pause.
 */
static void park(struct vm *vm, unsigned int s)
{
	unsigned int cur;
	uint64_t t0, stop_t0;
	bool slept, resumed;

again:
	try_ack(vm);
	t0 = now_ns();
	stop_t0 = 0;
	slept = resumed = false;
	for (;;) {
		while ((cur = atomic_load_explicit(&vm->pstate, memory_order_acquire)) == s && now_ns() - t0 < PARK_SPIN_NS)
			cpu_relax();
		if (cur == s) {
			slept = true;
			atomic_fetch_add(&vm->sleepers, 1);
			futex_wait(&vm->pstate, s, PARK_SLEEP_NS);
			atomic_fetch_sub(&vm->sleepers, 1);
			cur = atomic_load_explicit(&vm->pstate, memory_order_acquire);
		}
		if (cur != s) {
			s = cur;
			if (!(s & 1u)) {
				resumed = true;
				break;
			}
			try_ack(vm); /* resumed and paused again while this vCPU slept */
			continue;
		}
		/* still paused: leave only if nobody can resume us */
		if (nobody_resumes(vm))
			break;
		if (atomic_load(&vm->stop)) {
			uint64_t t = now_ns();

			if (!stop_t0) {
				stop_t0 = t;
			} else if (t - stop_t0 > PARK_STOP_TIMEOUT_NS) {
				atomic_store(&vm->park_gave_up, true);
				if (atomic_fetch_add(&vm->vcpu_errors, 1) == 0)
					msg("the run is over but the VM has been paused for %u s without a RESUME: giving up",
					    (unsigned int)(PARK_STOP_TIMEOUT_NS / 1000000000ull));
				break;
			}
		}
	}
	atomic_fetch_sub(&vm->parked, 1);
	if (resumed) {
		uint64_t t = now_ns() - atomic_load(&vm->resume_ns);

		pthread_mutex_lock(&vm->stats_lock);
		push_sample(&vm->ps.resume_ns, &vm->ps.nresume, &vm->ps.cap_resume, t);
		vm->ps.slept += slept;
		pthread_mutex_unlock(&vm->stats_lock);
		cur = atomic_load(&vm->pstate);
		if ((cur & 1u) && !nobody_resumes(vm)) {
			atomic_fetch_add(&vm->parked, 1);
			s = cur;
			goto again;
		}
	}
}

void vmm_pause_point(struct vm *vm)
{
	unsigned int s = atomic_load_explicit(&vm->pstate, memory_order_acquire);

	if (!(s & 1u) || nobody_resumes(vm))
		return;
	/* this vCPU's guest writes are done before it counts as parked (seq_cst) */
	atomic_fetch_add(&vm->parked, 1);
	park(vm, s);
}

/*
 * A vCPU with nothing to do (--write-rate) sleeps here as a halted vCPU would: it
 * touches no RAM, so it counts as parked and a pause need not wait for it. If a pause
 * is on when it wakes it stays parked until the resume.
 */
void vmm_idle(struct vm *vm, uint64_t ns)
{
	unsigned int s = atomic_load(&vm->pstate), cur;

	if (nobody_resumes(vm)) {
		struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

		nanosleep(&ts, NULL);
		return;
	}
	if (!(s & 1u)) {
		atomic_fetch_add(&vm->parked, 1);
		try_ack(vm); /* a PAUSE since our look may be waiting for this vCPU only */
		atomic_fetch_add(&vm->sleepers, 1);
		futex_wait(&vm->pstate, s, ns); /* a RESUME wakes it early: harmless */
		atomic_fetch_sub(&vm->sleepers, 1);
		cur = atomic_load(&vm->pstate);
		if ((cur & 1u) && !nobody_resumes(vm)) {
			park(vm, cur); /* straight from idle to parked, counted throughout */
			return;
		}
		atomic_fetch_sub(&vm->parked, 1);
	}
	vmm_pause_point(vm); /* a PAUSE that counted us just before the decrement */
}

static void on_pause(struct vm *vm, uint32_t seq)
{
	uint64_t t = now_ns();
	bool again;

	vm->pauses_seen++;
	if (vm->o->exit_after_pauses && vm->pauses_seen >= vm->o->exit_after_pauses) {
		static const char m[] = "vcma-simvm: exiting at PAUSE as asked (--exit-on-pause/--exit-after-pauses)\n";

		if (write(STDERR_FILENO, m, sizeof(m) - 1) < 0) {
			/* nothing to do: we are crashing on purpose */
		}
		_exit(0);
	}
	if (vm->o->pause_delay_ms)
		atomic_store(&vm->ack_not_before, t + (uint64_t)vm->o->pause_delay_ms * 1000000ull);
	pthread_mutex_lock(&vm->send_lock);
	again = atomic_load(&vm->pstate) & 1u;
	atomic_store(&vm->pause_seq, seq);
	vm->ack_pending = true;
	if (!again) {
		vm->pause_t0 = t;
		atomic_fetch_add(&vm->pstate, 1); /* odd: paused */
	}
	pthread_mutex_unlock(&vm->send_lock);
	if (again && !(atomic_fetch_or(&vm->logged_types, 1ull << 63) >> 63))
		msg("PAUSE %u while already paused (the host sends one at a time): staying paused (logged once)", seq);
	try_ack(vm);
}

static void on_resume(struct vm *vm)
{
	bool was;
	uint64_t t0 = 0;

	pthread_mutex_lock(&vm->send_lock);
	vm->ack_pending = false; /* no PAUSED after the RESUME it would belong to */
	was = atomic_load(&vm->pstate) & 1u;
	if (was) {
		t0 = vm->pause_t0;
		atomic_store(&vm->resume_ns, now_ns());
		atomic_fetch_add(&vm->pstate, 1); /* even: running */
	}
	pthread_mutex_unlock(&vm->send_lock);
	if (!was)
		return;
	if (atomic_load(&vm->sleepers))
		futex_wake_all(&vm->pstate);
	pthread_mutex_lock(&vm->stats_lock);
	push_sample(&vm->ps.dur_ns, &vm->ps.n, &vm->ps.cap, now_ns() - t0);
	pthread_mutex_unlock(&vm->stats_lock);
}

/* ---- remapping ---- */

/* Log once per kind what would otherwise repeat on every message. */
enum { ONCE_RELOG, ONCE_TRACK, ONCE_UNTRACK, ONCE_DREAD, ONCE_DREAD_LATE, ONCE_DREAD_TWICE };
static atomic_uint once_bits;

static bool first_time(unsigned int key)
{
	return !(atomic_fetch_or(&once_bits, 1u << key) & (1u << key));
}

/* mmap gfns [gfn, gfn + n) to frames [mfn, mfn + n); 0 or -errno */
static int map_gfns(struct vm *vm, uint64_t gfn, uint64_t mfn, uint64_t n)
{
	int rc;

	if (mmap(vm->base + gfn * PAGE, n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, vm->machine_fd,
		 (off_t)(mfn * PAGE)) == MAP_FAILED)
		return -errno;
	atomic_fetch_add(&vm->remap_calls, 1);
	/* a new mapping: the dirty log must know it before anything scans it */
	if (vm->dlog && (rc = dlog_reregister(vm->dlog, gfn, n)) && first_time(ONCE_RELOG))
		msg("dirty logging is broken: cannot register remapped RAM with the userfaultfd: %s; "
		    "TRACK and DIRTY_READ are answered with this error from now on", strerror(-rc));
	return 0;
}

/* Undo: map gfns [gfn, gfn + n) back to the frames vm->p2m names (it has not changed). */
static int map_back(struct vm *vm, uint64_t gfn, uint64_t n)
{
	for (uint64_t g = gfn; g < gfn + n;) {
		uint64_t k = 1;
		int rc;

		while (g + k < gfn + n && vm->p2m[g + k] == vm->p2m[g] + k)
			k++;
		rc = map_gfns(vm, g, vm->p2m[g], k);
		if (rc)
			return rc;
		g += k;
	}
	return 0;
}

/*
 * REMAP, REMAP_RESUME (need_parked) and DROP: map every run, or none (PROTOCOL.md §9.1,
 * all or nothing). Returns 0 with *pages moved, or a positive errno when nothing moved.
 * Runs that continue each other in gfn and mfn are merged, never split: each mapping
 * counts against vm.max_map_count.
 */
static int do_remap(struct vm *vm, const char *what, const struct vcma_sim_run *run, uint32_t count,
		    bool need_parked, uint64_t *pages)
{
	struct {
		uint64_t gfn, mfn, n;
	} map[VCMA_SIM_MSG_RUNS];
	uint64_t machine_frames = vm->machine_bytes / PAGE;
	uint32_t nmap = 0;

	*pages = 0;
	if (need_parked && !all_parked(vm))
		return EINVAL;
	/* check everything before mapping anything */
	for (uint32_t i = 0; i < count; i++) {
		const struct vcma_sim_run *r = &run[i];

		if (!r->count || r->gfn >= vm->ram_frames || r->count > vm->ram_frames - r->gfn ||
		    r->mfn >= machine_frames || r->count > machine_frames - r->mfn)
			return EINVAL;
	}
	for (uint32_t i = 0; i < count;) {
		uint64_t gfn = run[i].gfn, mfn = run[i].mfn, n = run[i].count;

		for (i++; i < count && run[i].gfn == gfn + n && run[i].mfn == mfn + n; i++)
			n += run[i].count;
		map[nmap].gfn = gfn;
		map[nmap].mfn = mfn;
		map[nmap++].n = n;
	}
	for (uint32_t i = 0; i < nmap; i++) {
		int err = -map_gfns(vm, map[i].gfn, map[i].mfn, map[i].n);

		if (!err)
			continue;
		msg("%s: cannot map gfn %#" PRIx64 "+%#" PRIx64 " to mfn %#" PRIx64 ": %s%s; mapping back the %u run(s) "
		    "before it", what, map[i].gfn, map[i].n, map[i].mfn, strerror(err),
		    err == ENOMEM ? " (too many mappings? see vm.max_map_count)" : "", i);
		/* a failed mmap(MAP_FIXED) may have unmapped its range already: that one too */
		for (uint32_t j = 0; j <= i; j++) {
			int rc = map_back(vm, map[j].gfn, map[j].n);

			if (rc) {
				msg("%s: cannot map gfn %#" PRIx64 "+%#" PRIx64 " back to its frames: %s; the VM's memory "
				    "is in no known state: exiting, which closes the VMM channel (PROTOCOL.md 9.1)",
				    what, map[j].gfn, map[j].n, strerror(-rc));
				shutdown(vm->sock, SHUT_RDWR);
				_exit(EXIT_FAIL);
			}
		}
		return err;
	}
	/* applied: our p2m follows, and the gfns moved are no longer logged */
	for (uint32_t i = 0; i < nmap; i++) {
		for (uint64_t k = 0; k < map[i].n; k++)
			vm->p2m[map[i].gfn + k] = map[i].mfn + k;
		if (vm->dlog)
			dlog_untrack(vm->dlog, map[i].gfn, map[i].n); /* only a hint to the kernel can fail */
		*pages += map[i].n;
	}
	return 0;
}

/* REMAP and REMAP_RESUME: the remap and its counters; 0 or a positive errno */
static int remap_msg(struct vm *vm, const struct vcma_sim_msg *m, const char *what)
{
	uint64_t pages = 0;
	int st;

	if (vm->o->refuse_remaps && ++vm->remaps_seen % vm->o->refuse_remaps == 0)
		st = EIO; /* --refuse-remaps: as a VMM whose mmap failed, before it touched anything */
	else
		st = do_remap(vm, what, m->run, m->count, true, &pages);

	if (st) {
		atomic_fetch_add(&vm->remap_refused, 1);
		if (st == EINVAL)
			msg("%s %u refused: %s", what, m->seq,
			    all_parked(vm) ? "a run outside guest RAM or machine memory" : "the VM is not paused");
	}
	atomic_fetch_add(&vm->remapped_pages, pages);
	return st;
}

static void answer(struct vm *vm, uint16_t type, const char *name, uint32_t seq, int status)
{
	int rc = send_msg(vm, type, seq, status, NULL, 0);

	if (rc && !atomic_load(&vm->host_gone) && !vmm_lost_err(vm, rc))
		msg("cannot send %s: %s", name, strerror(-rc));
}

/* ---- dirty logging ---- */

static bool runs_in_ram(const struct vm *vm, const struct vcma_sim_msg *m)
{
	for (uint32_t i = 0; i < m->count; i++) {
		const struct vcma_sim_run *r = &m->run[i];

		if (!r->count || r->gfn >= vm->ram_frames || r->count > vm->ram_frames - r->gfn)
			return false;
	}
	return true;
}

/* TRACK: 0 or a positive errno for TRACKING */
static int on_track(struct vm *vm, const struct vcma_sim_msg *m)
{
	int rc = 0;

	atomic_fetch_add(&vm->tracks, 1);
	if (!vm->dlog)
		rc = -EOPNOTSUPP;
	else if (!runs_in_ram(vm, m))
		rc = -EINVAL;
	for (uint32_t i = 0; !rc && i < m->count; i++) {
		rc = dlog_track(vm->dlog, m->run[i].gfn, m->run[i].count);
		if (rc) /* none of this message, then */
			for (uint32_t j = 0; j <= i; j++)
				dlog_untrack(vm->dlog, m->run[j].gfn, m->run[j].count);
	}
	if (rc) {
		atomic_fetch_add(&vm->tracks_refused, 1);
		if (first_time(ONCE_TRACK))
			msg("TRACK %u refused: %s (logged once)", m->seq,
			    rc == -EOPNOTSUPP ? "dirty logging is off"
			    : rc == -EINVAL   ? "a run outside guest RAM"
					      : strerror(-rc));
	}
	return -rc;
}

static void on_untrack(struct vm *vm, const struct vcma_sim_msg *m)
{
	atomic_fetch_add(&vm->untracks, 1);
	if (!vm->dlog)
		return;
	if (!runs_in_ram(vm, m)) {
		if (first_time(ONCE_UNTRACK))
			msg("UNTRACK %u with a run outside guest RAM: ignored (logged once)", m->seq);
		return;
	}
	for (uint32_t i = 0; i < m->count; i++)
		dlog_untrack(vm->dlog, m->run[i].gfn, m->run[i].count);
}

/* One DIRTY answer: full messages of exactly VCMA_SIM_MSG_RUNS runs, then the last. */
struct dirty_out {
	struct vm *vm;
	uint32_t seq, n;
	struct vcma_sim_run run[VCMA_SIM_MSG_RUNS];
};

static int dirty_emit(void *p, uint64_t gfn, uint64_t count)
{
	struct dirty_out *o = p;

	if (o->n == VCMA_SIM_MSG_RUNS) { /* full, and more follows: not the last message */
		int rc = send_msg(o->vm, VCMA_SIM_MSG_DIRTY, o->seq, 0, o->run, o->n);

		if (rc)
			return rc;
		o->n = 0;
	}
	o->run[o->n++] = (struct vcma_sim_run){ .gfn = gfn, .mfn = 0, .count = count };
	return 0;
}

/* Read the log and answer DIRTY_READ `seq` (err: answer that errno without reading). */
static void answer_dirty_read(struct vm *vm, uint32_t seq, int err)
{
	struct dirty_out *o = calloc(1, sizeof(*o));
	int64_t n = err ? -err : !vm->dlog ? -EOPNOTSUPP : !o ? -ENOMEM : 0;
	int rc = 0;

	if (o) {
		o->vm = vm;
		o->seq = seq;
	}
	if (!n)
		n = dlog_read(vm->dlog, dirty_emit, o);
	atomic_fetch_add(&vm->dirty_reads, 1);
	if (n < 0) {
		atomic_fetch_add(&vm->dirty_read_errors, 1);
		if (first_time(ONCE_DREAD))
			msg("DIRTY_READ %u failed: %s; vcmad counts every tracked page as written (logged once)", seq,
			    strerror((int)-n));
	} else {
		atomic_fetch_add(&vm->dirty_pages, (uint64_t)n);
	}
	if (o && o->n == VCMA_SIM_MSG_RUNS) {
		rc = send_msg(vm, VCMA_SIM_MSG_DIRTY, seq, 0, o->run, o->n);
		o->n = 0;
	}
	if (!rc) /* the last message: fewer than VCMA_SIM_MSG_RUNS runs, maybe none */
		rc = send_msg(vm, VCMA_SIM_MSG_DIRTY, seq, n < 0 ? (int32_t)-n : 0, o ? o->run : NULL, o ? o->n : 0);
	if (rc && !atomic_load(&vm->host_gone) && !vmm_lost_err(vm, rc))
		msg("cannot send DIRTY: %s", strerror(-rc));
	free(o);
}

/* Can the waiting DIRTY_READ be answered: not paused, or every vCPU parked and PAUSED out? */
static bool dread_due(struct vm *vm)
{
	bool owed;

	if (!(atomic_load(&vm->pstate) & 1u))
		return true;
	if (!all_parked(vm))
		return false;
	pthread_mutex_lock(&vm->send_lock);
	owed = vm->ack_pending;
	pthread_mutex_unlock(&vm->send_lock);
	return !owed;
}

/* Answer the waiting DIRTY_READ if it is due (or has waited too long). */
static void dread_poll(struct vm *vm)
{
	bool due, late;

	if (!vm->dread_pending)
		return;
	due = dread_due(vm);
	late = now_ns() - vm->dread_t0 > DREAD_WAIT_NS;
	if (!due && !late)
		return;
	atomic_store(&vm->dread_wait, false);
	vm->dread_pending = false;
	if (!due) {
		if (first_time(ONCE_DREAD_LATE))
			msg("DIRTY_READ %u: the VM did not finish pausing in %u s: answered ETIMEDOUT (logged once)",
			    vm->dread_seq, (unsigned int)(DREAD_WAIT_NS / 1000000000ull));
		answer_dirty_read(vm, vm->dread_seq, ETIMEDOUT);
		return;
	}
	answer_dirty_read(vm, vm->dread_seq, 0);
}

static void on_dirty_read(struct vm *vm, uint32_t seq)
{
	if (vm->dread_pending) { /* the host sends one at a time: the older one is stale */
		if (first_time(ONCE_DREAD_TWICE))
			msg("DIRTY_READ %u while %u waits: answering the older with ECANCELED (logged once)", seq,
			    vm->dread_seq);
		vm->dread_pending = false;
		answer_dirty_read(vm, vm->dread_seq, ECANCELED);
	}
	vm->dread_seq = seq;
	vm->dread_t0 = now_ns();
	vm->dread_pending = true;
	atomic_store(&vm->dread_wait, true); /* before dread_due looks at ack_pending */
	dread_poll(vm);
}

/* ---- the VMM thread ---- */

/*
 * vcmad is gone and nobody will answer the ring again. The VMM emulates the device, so
 * it reports the device dead the way the host would (state DEAD, then an irq): the
 * guest part's calls fail at once with -ECONNRESET instead of running into timeouts.
 * After a restart the guest part may be on its way to a newer ring: that one too.
 */
void vmm_device_gone(struct vm *vm)
{
	uint64_t one = 1;

	pthread_mutex_lock(&vm->reattach_lock);
	if (vm->ctrl) {
		vcma_store_release(&vm->ctrl->state, (uint32_t)VCMA_STATE_DEAD);
		if (write(vm->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			msg("cannot raise the guest part's irq: %s", strerror(errno));
	}
	vm->up->rings_dead(vm);
	pthread_mutex_unlock(&vm->reattach_lock);
}

/* Log what the host should not send once per kind (key: an unknown message type,
 * types from KEY_TYPES_ABOVE up sharing one, or a KEY_ value), count it, and go on. */
enum { KEY_TYPES_ABOVE = 59, KEY_MALFORMED = 60, KEY_STRAY_REUSED = 61, KEY_STRAY_PINNED = 62 };

static void ignore(struct vm *vm, unsigned int key, unsigned int type, ssize_t n, const char *why)
{
	uint64_t bit = 1ull << key; /* bit 63: PAUSE while paused */

	atomic_fetch_add(&vm->host_msgs_ignored, 1);
	if (!(atomic_fetch_or(&vm->logged_types, bit) & bit))
		msg("ignoring %s on the VMM channel (type %u, %zd bytes; logged once)", why, type, n);
}

static void on_reused(struct vm *vm, uint32_t seq)
{
	for (unsigned int i = 0; i < vm->nslices; i++) {
		struct vcpu *c = &vm->vcpu[i];

		if (seq && atomic_load(&c->reuse_seq) == seq && !atomic_load(&c->reuse_done)) {
			atomic_store_explicit(&c->reuse_done, true, memory_order_release);
			return;
		}
	}
	ignore(vm, KEY_STRAY_REUSED, VCMA_SIM_MSG_REUSED, (ssize_t)sizeof(struct vcma_sim_msg),
	       "a REUSED for no outstanding REUSE");
}

static void handle(struct vm *vm, const struct vcma_sim_msg *m, ssize_t n)
{
	switch (m->type) {
	case VCMA_SIM_MSG_PAUSE:
		on_pause(vm, m->seq);
		break;
	case VCMA_SIM_MSG_RESUME:
		vm->refused_parked = false; /* vcmad has copied the pages back */
		on_resume(vm);
		break;
	case VCMA_SIM_MSG_REMAP:
		answer(vm, VCMA_SIM_MSG_REMAPPED, "REMAPPED", m->seq, remap_msg(vm, m, "REMAP"));
		break;
	case VCMA_SIM_MSG_REMAP_RESUME: {
		int st;

		if (!(vm->flags & VCMA_SIM_F_ONE_TRIP))
			goto unknown; /* --no-one-trip: as a VMM that never heard of it */
		st = remap_msg(vm, m, "REMAP_RESUME");
		vm->refused_parked = st != 0;
		if (!st) {
			on_resume(vm);
		} else { /* refused: parked until RESUME (PROTOCOL.md §9.1), and its runs kept */
			memcpy(vm->refused_run, m->run, m->count * sizeof(*m->run));
			vm->nrefused = m->count;
			vm->refused_seq = m->seq;
		}
		atomic_fetch_add(&vm->remap_resumes, 1);
		answer(vm, VCMA_SIM_MSG_REMAPPED, "REMAPPED", m->seq, st);
		break;
	}
	case VCMA_SIM_MSG_DROP: {
		uint64_t pages;
		int st;

		if (!(vm->flags & VCMA_SIM_F_ONE_TRIP))
			goto unknown;
		st = do_remap(vm, "DROP", m->run, m->count, false, &pages);
		if (st) {
			atomic_fetch_add(&vm->drops_refused, 1);
			if (st == EINVAL)
				msg("DROP %u refused: a run outside guest RAM or machine memory", m->seq);
		} else {
			atomic_fetch_add(&vm->drops, 1);
			atomic_fetch_add(&vm->dropped_pages, pages);
		}
		answer(vm, VCMA_SIM_MSG_DROPPED, "DROPPED", m->seq, st);
		break;
	}
	/* dirty logging: asked for and not working, it is answered with an errno */
	case VCMA_SIM_MSG_TRACK:
		if (vm->o->no_dirty_log)
			goto unknown; /* --no-dirty-log: as a VMM that never heard of it */
		answer(vm, VCMA_SIM_MSG_TRACKING, "TRACKING", m->seq, on_track(vm, m));
		break;
	case VCMA_SIM_MSG_UNTRACK:
		if (vm->o->no_dirty_log)
			goto unknown;
		on_untrack(vm, m);
		break;
	case VCMA_SIM_MSG_DIRTY_READ:
		if (vm->o->no_dirty_log)
			goto unknown;
		on_dirty_read(vm, m->seq);
		break;
	case VCMA_SIM_MSG_REUSED:
		on_reused(vm, m->seq);
		break;
	case VCMA_SIM_MSG_PINNED:
		if (m->seq && m->seq == atomic_load(&vm->pin_seq) && !atomic_load(&vm->pin_done)) {
			bool resent;

			pthread_mutex_lock(&vm->send_lock);
			resent = vm->pin_resent;
			vm->pin_resent = false;
			pthread_mutex_unlock(&vm->send_lock);
			/* the PIN sent again after a reattach, main not waiting: ours to check */
			if (resent && m->status) {
				atomic_fetch_add(&vm->reattach_errors, 1);
				msg("the PIN sent again after the reattach failed: vcmad answered %s", strerror(m->status));
			}
			atomic_store(&vm->pin_status, m->status);
			atomic_store(&vm->pin_done, true);
		} else {
			ignore(vm, KEY_STRAY_PINNED, m->type, n, "a PINNED for no outstanding PIN");
		}
		break;
	default:
	unknown:
		ignore(vm, m->type < KEY_TYPES_ABOVE ? m->type : KEY_TYPES_ABOVE, m->type, n, "an unknown message");
		break;
	}
}

void *vmm_main(void *p)
{
	struct vm *vm = p;
	union {
		struct vcma_sim_msg m;
		unsigned char buf[VCMA_SIM_MSG_MAX];
	} *u = malloc(sizeof(*u));

	if (!u) {
		msg("VMM thread: out of memory");
		atomic_store(&vm->stop, true);
		return NULL;
	}
	/* until main says so (wake_fd) or the host goes: parked vCPUs of a run that is
	 * over still need their RESUME */
	for (;;) {
		struct pollfd pfd[3] = { { .fd = vm->sock, .events = POLLIN }, { .fd = vm->wake_fd, .events = POLLIN },
					 { .fd = vm->ack_fd, .events = POLLIN } };
		int timeout = -1;
		ssize_t n;

		/* --pause-delay-ms: the ack falls due while nothing else happens */
		if (vm->o->pause_delay_ms && !vm->o->no_pause_ack) {
			bool owed;

			pthread_mutex_lock(&vm->send_lock);
			owed = vm->ack_pending;
			pthread_mutex_unlock(&vm->send_lock);
			if (owed) {
				uint64_t t = now_ns(), due = atomic_load(&vm->ack_not_before);

				if (t >= due) {
					try_ack(vm);
					timeout = 1; /* not all parked yet: check again soon */
				} else {
					timeout = (int)((due - t + 999999) / 1000000);
				}
			}
		}
		/* a DIRTY_READ waits for the pause: woken through ack_fd, bounded */
		if (vm->dread_pending) {
			uint64_t t = now_ns(), due = vm->dread_t0 + DREAD_WAIT_NS;
			int ms = t >= due ? 0 : (int)((due - t + 999999) / 1000000);

			if (timeout < 0 || ms < timeout)
				timeout = ms;
		}
		if (poll(pfd, 3, timeout) < 0) {
			if (errno == EINTR)
				continue;
			msg("VMM thread: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[2].revents) {
			uint64_t v;

			if (read(vm->ack_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				msg("VMM thread: reading its wake-up: %s", strerror(errno));
		}
		dread_poll(vm);
		if (!pfd[0].revents)
			continue;
		n = recv(vm->sock, u->buf, sizeof(u->buf), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			const char *cause = n ? strerror(errno) : "connection closed";
			bool cut_off = vm->up->cut_off(vm);

			if (vm->have_token && !got_signal && !cut_off && !atomic_load(&vm->host_gone)) {
				int rc = vm->up->reattach(vm, cause);

				if (!rc)
					continue; /* on the new socket */
				if (rc != -ECANCELED)
					atomic_store(&vm->reattach_failed, true);
			} else if (cut_off) {
				msg("vcmad cut this VM off (its ring is DEAD; the reason is in vcmad's log): stopping");
			} else if (!atomic_load(&vm->stop)) {
				msg("vcmad went away (%s): stopping", cause);
			}
			atomic_store(&vm->host_gone, true);
			atomic_store(&vm->stop, true);
			vmm_device_gone(vm);
			if (atomic_load(&vm->sleepers))
				futex_wake_all(&vm->pstate); /* parked vCPUs leave */
			break;
		}
		if ((size_t)n < sizeof(u->m) || (size_t)n > sizeof(u->buf) || u->m.magic != VCMA_SIM_MAGIC ||
		    u->m.version != VCMA_SIM_VERSION || u->m.count > VCMA_SIM_MSG_RUNS ||
		    (size_t)n != sizeof(u->m) + (size_t)u->m.count * sizeof(struct vcma_sim_run)) {
			uint16_t type = 0;

			if (n >= 8)
				memcpy(&type, u->buf + 6, sizeof(type));
			ignore(vm, KEY_MALFORMED, type, n, "a malformed message");
			continue;
		}
		handle(vm, &u->m, n);
		dread_poll(vm); /* a RESUME ends the pause a DIRTY_READ waited for */
	}
	free(u);
	return NULL;
}

/* ---- pinning ---- */

/* PIN the first vm->pin_frames gfns (under send_lock); resent: after a reattach, with
 * nobody waiting for PINNED (the VMM thread checks it) */
static int send_pin_locked(struct vm *vm, bool resent)
{
	struct vcma_sim_run r = { .gfn = 0, .mfn = 0, .count = vm->pin_frames };
	uint32_t seq = vmm_next_seq(vm);

	atomic_store(&vm->pin_done, false);
	atomic_store(&vm->pin_seq, seq);
	vm->pin_resent = resent;
	return send_locked(vm, VCMA_SIM_MSG_PIN, seq, 0, &r, 1);
}

/* PINNED: 0, a positive errno from vcmad; or -errno (gone, signal, timeout). A PIN
 * vcmad never answered because it restarted is sent again and answered from there. */
static int pin_wait(struct vm *vm, uint64_t deadline)
{
	while (!atomic_load(&vm->pin_done)) {
		struct timespec ts = { 0, 200000 };

		if (atomic_load(&vm->host_gone))
			return -ECONNRESET;
		if (got_signal)
			return -EINTR;
		if (now_ns() > deadline)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
	}
	return atomic_load(&vm->pin_status);
}

int vmm_pin(struct vm *vm, uint64_t frames)
{
	uint64_t deadline = now_ns() + PIN_TIMEOUT_NS;
	int rc;

	/* vcmad away: the reattach sends it (vmm_host_back) */
	pthread_mutex_lock(&vm->send_lock);
	vm->pin_frames = frames;
	vm->pin_waiting = true;
	rc = vmm_host_away(vm) ? 0 : send_pin_locked(vm, false);
	pthread_mutex_unlock(&vm->send_lock);
	if (!rc || vmm_lost_err(vm, rc))
		rc = pin_wait(vm, deadline);
	pthread_mutex_lock(&vm->send_lock);
	vm->pin_waiting = false;
	pthread_mutex_unlock(&vm->send_lock);
	if (!rc)
		vm->pinned_pages = frames;
	return rc;
}

/* ---- a vcmad restart (simvm-reattach.c does the socket side) ---- */

/*
 * vcmad went away while the VM was parked after a refused REMAP_RESUME: it may have
 * cleared the old frames already, and only the new ones hold the pages (PROTOCOL.md
 * §9.1 "Noticing"). Apply the runs now, as the REMAP_RESUME would have, before the
 * vCPUs run again; retry what fails; if it cannot be done, say which pages are lost.
 */
#define REFUSED_TRIES 5

static void apply_refused(struct vm *vm)
{
	uint64_t pages = 0, t0 = now_ns();
	int st = EINVAL;

	vm->refused_parked = false;
	/* the vCPUs parked for that pause and stay parked until on_resume() */
	while (!all_parked(vm) && now_ns() - t0 < 1000000000ull) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < REFUSED_TRIES && st; i++) {
		if (i) {
			struct timespec ts = { 0, 10000000 };

			nanosleep(&ts, NULL);
		}
		st = do_remap(vm, "REMAP_RESUME refused before vcmad went away", vm->refused_run, vm->nrefused, true,
			      &pages);
	}
	if (!st) {
		atomic_fetch_add(&vm->remapped_pages, pages);
		msg("vcmad went away while the VM waited for its RESUME after refusing REMAP_RESUME %u: applied it "
		    "now (%" PRIu64 " page(s) onto their new frames) before the vCPUs run again", vm->refused_seq, pages);
		return;
	}
	for (uint32_t i = 0; i < vm->nrefused; i++)
		pages += vm->refused_run[i].count;
	atomic_fetch_add(&vm->reattach_errors, 1);
	msg("vcmad went away while the VM waited for its RESUME after refusing REMAP_RESUME %u, and it cannot be "
	    "applied now (%s, %d tries): the %" PRIu64 " page(s) of its runs may be lost (their old frames may be "
	    "cleared), from gfn %#" PRIx64, vm->refused_seq, strerror(st), REFUSED_TRIES, pages,
	    vm->refused_run[0].gfn);
}

void vmm_host_lost(struct vm *vm)
{
	uint64_t answered = 0;

	pthread_mutex_lock(&vm->send_lock);
	atomic_fetch_add(&vm->host_epoch, 1); /* odd: away; senders see it under the lock */
	pthread_mutex_unlock(&vm->send_lock);
	/* the guest part's ring is stale (it may be already, its move still under way) */
	pthread_mutex_lock(&vm->reattach_lock);
	if (!(atomic_load(&vm->ring_epoch) & 1u))
		atomic_fetch_add(&vm->ring_epoch, 1);
	pthread_mutex_unlock(&vm->reattach_lock);
	/* a pause nobody will end: its pages are where we applied them (and answered),
	 * except after a refused REMAP_RESUME */
	if (vm->refused_parked && (atomic_load(&vm->pstate) & 1u))
		apply_refused(vm);
	vm->refused_parked = false;
	on_resume(vm);
	if (vm->dlog)
		dlog_untrack(vm->dlog, 0, vm->ram_frames); /* only a hint to the kernel can fail */
	vm->dread_pending = false;
	atomic_store(&vm->dread_wait, false);
	/* REUSEs sent before the epoch changed: answered here (those after see -ENOTCONN
	 * and answer themselves); the host that could DROP their pages is gone */
	for (unsigned int i = 0; i < vm->nslices; i++) {
		struct vcpu *c = &vm->vcpu[i];

		if (atomic_load(&c->reuse_seq) && !atomic_load(&c->reuse_done)) {
			atomic_store_explicit(&c->reuse_done, true, memory_order_release);
			answered++;
		}
	}
	atomic_fetch_add(&vm->local_reuses, answered);
	/* a PIN the old vcmad never answered: PINNED comes from the next one */
}

void vmm_host_back(struct vm *vm, int sock)
{
	int old, rc = 0;

	pthread_mutex_lock(&vm->send_lock);
	old = vm->sock;
	vm->sock = sock;
	atomic_fetch_add(&vm->host_epoch, 1); /* even: back */
	/* pins are not recorded: PIN again (the main thread may still wait for PINNED) */
	if (vm->pin_frames)
		rc = send_pin_locked(vm, !vm->pin_waiting);
	pthread_mutex_unlock(&vm->send_lock);
	if (old >= 0 && close(old))
		msg("closing the old attach socket: %s", strerror(errno));
	if (rc && !vmm_lost_err(vm, rc))
		msg("cannot send the PIN again after the reattach: %s", strerror(-rc));
}

/* ---- summary ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* nearest rank; v sorted */
static double pct_us(const uint64_t *v, size_t n, unsigned int pct)
{
	size_t k;

	if (!n)
		return 0;
	k = (n * pct + 99) / 100;
	return (double)v[k ? k - 1 : 0] / 1e3;
}

void vmm_summary(struct vm *vm, struct vmm_summary *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&vm->stats_lock);
	if (vm->ps.n) {
		qsort(vm->ps.dur_ns, vm->ps.n, sizeof(uint64_t), cmp_u64);
		s->p50_us = pct_us(vm->ps.dur_ns, vm->ps.n, 50);
		s->p99_us = pct_us(vm->ps.dur_ns, vm->ps.n, 99);
		s->max_us = pct_us(vm->ps.dur_ns, vm->ps.n, 100);
	}
	if (vm->ps.npark) {
		qsort(vm->ps.park_ns, vm->ps.npark, sizeof(uint64_t), cmp_u64);
		s->park_p50_us = pct_us(vm->ps.park_ns, vm->ps.npark, 50);
		s->park_p99_us = pct_us(vm->ps.park_ns, vm->ps.npark, 99);
		s->park_max_us = pct_us(vm->ps.park_ns, vm->ps.npark, 100);
	}
	if (vm->ps.nresume) {
		qsort(vm->ps.resume_ns, vm->ps.nresume, sizeof(uint64_t), cmp_u64);
		s->resume_p50_us = pct_us(vm->ps.resume_ns, vm->ps.nresume, 50);
		s->resume_p99_us = pct_us(vm->ps.resume_ns, vm->ps.nresume, 99);
		s->resume_max_us = pct_us(vm->ps.resume_ns, vm->ps.nresume, 100);
	}
	s->pauses = vm->ps.n;
	s->acks = vm->ps.npark;
	s->unparks = vm->ps.nresume;
	s->slept = vm->ps.slept;
	pthread_mutex_unlock(&vm->stats_lock);
	s->remapped_pages = atomic_load(&vm->remapped_pages);
	s->remap_calls = atomic_load(&vm->remap_calls);
	s->remap_refused = atomic_load(&vm->remap_refused);
	s->host_msgs_ignored = atomic_load(&vm->host_msgs_ignored);
	s->remap_resumes = atomic_load(&vm->remap_resumes);
	s->drops = atomic_load(&vm->drops);
	s->dropped_pages = atomic_load(&vm->dropped_pages);
	s->drops_refused = atomic_load(&vm->drops_refused);
	s->tracks = atomic_load(&vm->tracks);
	s->tracks_refused = atomic_load(&vm->tracks_refused);
	s->untracks = atomic_load(&vm->untracks);
	s->dirty_reads = atomic_load(&vm->dirty_reads);
	s->dirty_read_errors = atomic_load(&vm->dirty_read_errors);
	s->dirty_pages = atomic_load(&vm->dirty_pages);
}
