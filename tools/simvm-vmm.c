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
 *
 * The VMM thread is the socket's only reader; every writer holds send_lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "simvm-vm.h"

#define PARK_SPIN_NS 50000ull         /* spin this long before sleeping on the futex */
#define PARK_SLEEP_NS 100000000ull    /* futex sleeps re-check for a gone host this often */
#define PARK_STOP_TIMEOUT_NS 30000000000ull /* run over and still paused: give up then */
#define PIN_TIMEOUT_NS 60000000000ull

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
	atomic_store(&vm->next_seq, 1);
	return 0;
}

void vmm_channel_fini(struct vm *vm)
{
	pthread_mutex_destroy(&vm->send_lock);
	pthread_mutex_destroy(&vm->stats_lock);
	free(vm->ps.dur_ns);
	free(vm->ps.park_ns);
	free(vm->ps.resume_ns);
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
	if (sent && rc && !atomic_load(&vm->host_gone))
		msg("cannot send PAUSED: %s", strerror(-rc));
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

void vmm_pause_point(struct vm *vm)
{
	unsigned int s = atomic_load_explicit(&vm->pstate, memory_order_acquire), cur;
	uint64_t t0, stop_t0 = 0;
	bool slept = false, resumed = false;

	if (!(s & 1u) || nobody_resumes(vm))
		return;
	/* this vCPU's guest writes are done before it counts as parked (seq_cst) */
	atomic_fetch_add(&vm->parked, 1);
	try_ack(vm);
	t0 = now_ns();
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
	}
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

static int do_remap(struct vm *vm, const struct vcma_sim_run *run, uint32_t count)
{
	uint64_t machine_frames = vm->machine_bytes / PAGE;

	if (!all_parked(vm))
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
		if (mmap(vm->base + gfn * PAGE, n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, vm->machine_fd,
			 (off_t)(mfn * PAGE)) == MAP_FAILED) {
			int err = errno;

			msg("REMAP: cannot map gfn %#" PRIx64 "+%#" PRIx64 " to mfn %#" PRIx64 ": %s%s", gfn, n, mfn,
			    strerror(err), err == ENOMEM ? " (too many mappings? see vm.max_map_count)" : "");
			return err;
		}
		atomic_fetch_add(&vm->remap_calls, 1);
		atomic_fetch_add(&vm->remapped_pages, n);
	}
	return 0;
}

/* ---- the VMM thread ---- */

/*
 * vcmad is gone and nobody will answer the ring again. The VMM emulates the device, so
 * it reports the device dead the way the host would (state DEAD, then an irq): the
 * guest part's calls fail at once with -ECONNRESET instead of running into timeouts.
 */
static void device_gone(struct vm *vm)
{
	uint64_t one = 1;

	if (!vm->ctrl)
		return;
	vcma_store_release(&vm->ctrl->state, (uint32_t)VCMA_STATE_DEAD);
	if (write(vm->irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		msg("cannot raise the guest part's irq: %s", strerror(errno));
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
		on_resume(vm);
		break;
	case VCMA_SIM_MSG_REMAP: {
		int st = do_remap(vm, m->run, m->count), rc;

		if (st) {
			atomic_fetch_add(&vm->remap_refused, 1);
			if (st == EINVAL)
				msg("REMAP %u refused: %s", m->seq,
				    all_parked(vm) ? "a run outside guest RAM or machine memory" : "the VM is not paused");
		}
		rc = send_msg(vm, VCMA_SIM_MSG_REMAPPED, m->seq, st, NULL, 0);
		if (rc && !atomic_load(&vm->host_gone))
			msg("cannot send REMAPPED: %s", strerror(-rc));
		break;
	}
	case VCMA_SIM_MSG_REUSED:
		on_reused(vm, m->seq);
		break;
	case VCMA_SIM_MSG_PINNED:
		if (m->seq && m->seq == atomic_load(&vm->pin_seq) && !atomic_load(&vm->pin_done)) {
			atomic_store(&vm->pin_status, m->status);
			atomic_store(&vm->pin_done, true);
		} else {
			ignore(vm, KEY_STRAY_PINNED, m->type, n, "a PINNED for no outstanding PIN");
		}
		break;
	default:
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
		struct pollfd pfd[2] = { { .fd = vm->sock, .events = POLLIN }, { .fd = vm->wake_fd, .events = POLLIN } };
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
		if (poll(pfd, 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			msg("VMM thread: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (!pfd[0].revents)
			continue;
		n = recv(vm->sock, u->buf, sizeof(u->buf), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			if (!atomic_load(&vm->stop))
				msg("vcmad went away (%s): stopping", n ? strerror(errno) : "connection closed");
			atomic_store(&vm->host_gone, true);
			atomic_store(&vm->stop, true);
			device_gone(vm);
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
	}
	free(u);
	return NULL;
}

/* ---- pinning ---- */

int vmm_pin(struct vm *vm, uint64_t frames)
{
	struct vcma_sim_run r = { .gfn = 0, .mfn = 0, .count = frames };
	uint32_t seq = vmm_next_seq(vm);
	uint64_t deadline = now_ns() + PIN_TIMEOUT_NS;
	int rc;

	atomic_store(&vm->pin_done, false);
	atomic_store(&vm->pin_seq, seq);
	rc = send_msg(vm, VCMA_SIM_MSG_PIN, seq, 0, &r, 1);
	if (rc)
		return rc;
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
	rc = atomic_load(&vm->pin_status);
	if (!rc)
		vm->pinned_pages = frames;
	return rc;
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
}
