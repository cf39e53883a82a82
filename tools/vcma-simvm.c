// SPDX-License-Identifier: MIT
/*
 * vcma-simvm - a simulated VM for the sim backend.
 *
 *   VMM part    connects to vcmad as role VMM (proto/vcma_sim.h), gets the ring fds,
 *               machine memory and the p2m, and maps guest RAM gfn by gfn from machine
 *               memory into one reserved guest-physical range (runs merged: the
 *               kernel caps a process's mappings, vm.max_map_count). Keeps the socket
 *               open (closing it detaches the VM); a thread reads it (pause/remap later).
 *   vCPUs       threads that each own a slice of guest RAM and keep writing pages of
 *               PRNG data with a checksum and verifying them, then verify every page.
 *   guest part  libvcma on the ring fds (vcma_attach_fds) with a mapper that maps a
 *               region's machine memory at its gpa; allocates and frees regions, writes
 *               a DMA-like pattern into each and verifies it before the free.
 *   restart     (simvm-reattach.c) when vcmad's end of the socket goes away, the VM keeps
 *               running on its mappings of machine memory (a file that outlives vcmad),
 *               and the VMM thread reattaches to the restarted vcmad; the guest part
 *               moves to the new ring, and its calls in flight across the restart are
 *               retried (counted in the summary, as are the reattaches).
 *
 * Exit: 0 ok, 1 corruption or unexpected error, 2 usage, 3 could not attach (or vcmad
 * did not take the VM back after a restart).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_name.h"
#include "vcma_sim.h"
#include "vcma_status.h"
#include "simvm-dirty.h"
#include "simvm-vm.h"

#define WRITE_RATE_MAX 1000000u
#define PACE_MAX_LAG_NS 20000000ull   /* --write-rate: a vCPU this far behind (a pause) starts afresh */
#define PACE_MAX_SLEEP_NS 100000000ull /* and sleeps at most this long at a time */

/* ---- refusals: normal outcomes, counted per size ---- */

static const struct {
	int err;
	const char *name;
} refusal[] = {
	{ ERANGE, "ERANGE" }, { EDQUOT, "EDQUOT" }, { ENOSPC, "ENOSPC" }, { EBUSY, "EBUSY" },
	{ E2BIG, "E2BIG" },   { ENOBUFS, "ENOBUFS" }, { ENOMEM, "ENOMEM" },
};
#define NREFUSAL (sizeof(refusal) / sizeof(refusal[0]))

struct size_stat {
	uint64_t bytes;
	uint64_t attempts, ok;
	uint64_t refused[NREFUSAL];
	uint64_t bytes_verified;
	uint64_t pattern_errors;
};

/* Every region ever obtained: lets a test check that concurrently live regions of
 * different guests never overlapped. alloc_ns is taken after ALLOC answered, free_ns
 * before FREE was sent, so [alloc_ns, free_ns] lies inside the host's lifetime. */
struct region_record {
	uint64_t handle, gpa, bus, size;
	uint64_t alloc_ns, free_ns;
};

struct held {
	uint64_t handle, gpa, bus, size;
	uint8_t *map;
	size_t rec;
	unsigned int size_idx;
};

/*
 * vcmad zeroes a VM's RAM and regions when it detaches it, before the VMM channel
 * reports EOF. A mismatch is therefore only corruption if vcmad is still there a
 * moment later (mismatches are rare, so the wait costs nothing in a good run). While
 * vcmad is away after a restart, only the outcome of the reattach tells: a VM taken
 * back must not have lost a byte, one that is not lost everything.
 */
static bool host_left(struct vm *vm)
{
	uint64_t t0 = now_ns();

	while (!atomic_load(&vm->host_gone) && !got_signal &&
	       (now_ns() - t0 < 200000000ull || (vmm_host_away(vm) && now_ns() - t0 < 60000000000ull))) {
		struct timespec ts = { 0, 4000000 };

		nanosleep(&ts, NULL);
	}
	return atomic_load(&vm->host_gone);
}

/* ---- vCPUs: checksummed pages of guest RAM ---- */

static inline uint64_t page_key(const struct vm *vm, uint64_t gfn, uint32_t gen)
{
	return mix64(vm->o->seed ^ mix64(gfn * 0x100000001b3ull) ^ ((uint64_t)gen << 40) ^ gen);
}

static inline uint64_t page_sum(const uint64_t *w, uint64_t key)
{
	uint64_t h = key;

	for (unsigned int i = 0; i < PAGE_WORDS - 1; i++)
		h = (h ^ w[i]) * 0x100000001b3ull;
	return h;
}

static void page_write(struct vcpu *c, uint64_t page)
{
	uint64_t gfn = c->first + page;
	uint64_t *w = (uint64_t *)(c->vm->base + gfn * PAGE);
	uint32_t gen = c->gen[page] + 1 ? c->gen[page] + 1 : 1;
	uint64_t key = page_key(c->vm, gfn, gen);

	for (unsigned int i = 0; i < PAGE_WORDS - 1; i++)
		w[i] = mix64(key + i);
	w[PAGE_WORDS - 1] = page_sum(w, key);
	c->gen[page] = gen;
	c->written++;
}

static void page_verify(struct vcpu *c, uint64_t page)
{
	uint64_t gfn = c->first + page;
	const volatile uint64_t *w = (const volatile uint64_t *)(c->vm->base + gfn * PAGE);
	uint32_t gen = c->gen[page];
	uint64_t key = page_key(c->vm, gfn, gen), h = key;
	unsigned int bad = 0, first_bad = 0;

	if (!gen)
		return;
	for (unsigned int i = 0; i < PAGE_WORDS - 1; i++) {
		uint64_t x = w[i];

		h = (h ^ x) * 0x100000001b3ull;
		if (x != mix64(key + i) && !bad++)
			first_bad = i;
	}
	if (w[PAGE_WORDS - 1] != h && !bad++)
		first_bad = PAGE_WORDS - 1;
	c->verified++;
	if (bad && !host_left(c->vm)) {
		c->corrupt++;
		if (atomic_fetch_add(&c->vm->corrupt_logged, 1) < MAX_LOGGED)
			msg("vCPU %u: CORRUPTION in gfn %#" PRIx64 " (generation %u): %u bad word(s), first at byte %u",
			    c->idx, gfn, gen, bad, first_bad * 8);
	}
}

/*
 * A vCPU's pages: used[] (written and verified), rep[] (reported free, never touched)
 * and reusing[] (REUSE sent, untouched until REUSED); pos[] is a page's index in
 * used[] or rep[]. Pages [0, pin_end) of the slice are pinned and never reported.
 */
static void list_del(uint32_t *list, uint32_t *n, uint32_t *pos, uint32_t page)
{
	uint32_t i = pos[page], last = list[--*n];

	list[i] = last;
	pos[last] = i;
}

static void list_add(uint32_t *list, uint32_t *n, uint32_t *pos, uint32_t page)
{
	pos[page] = *n;
	list[(*n)++] = page;
}

static int slice_init(struct vm *vm, struct vcpu *c, unsigned int idx, unsigned int nslices)
{
	uint64_t pin_frames = vm->o->pin_bytes / PAGE;

	c->vm = vm;
	c->idx = idx;
	c->first = vm->ram_frames * idx / nslices;
	c->npages = vm->ram_frames * (idx + 1) / nslices - c->first;
	c->pin_end = pin_frames <= c->first ? 0 : pin_frames - c->first < c->npages ? pin_frames - c->first : c->npages;
	c->rng = vm->o->seed ^ mix64(idx + 1);
	c->gen = calloc(c->npages, sizeof(*c->gen));
	c->pstate = calloc(c->npages, sizeof(*c->pstate));
	c->pos = calloc(c->npages, sizeof(*c->pos));
	c->used = calloc(c->npages, sizeof(*c->used));
	c->rep = calloc(c->npages, sizeof(*c->rep));
	if (!c->gen || !c->pstate || !c->pos || !c->used || !c->rep)
		return -ENOMEM;
	for (uint32_t page = 0; page < c->npages; page++)
		list_add(c->used, &c->nused, c->pos, page);
	return 0;
}

static void slice_free(struct vcpu *c)
{
	free(c->gen);
	free(c->pstate);
	free(c->pos);
	free(c->used);
	free(c->rep);
}

/*
 * Pick --report percent of the slice's (unpinned) pages as reported, in chunks of
 * 1..32 pages at random places, as a guest's free page reporting hands over free
 * buddy blocks of mixed orders. Nothing is sent here.
 */
static void slice_pick_reported(struct vcpu *c)
{
	uint64_t target = c->npages * c->vm->o->report_pct / 100, unpinned = c->npages - c->pin_end;

	if (target > unpinned)
		target = unpinned;
	if (target == unpinned) { /* all of them (--report 100, or a big --pin): nothing to pick */
		for (uint64_t p = c->pin_end; p < c->npages; p++) {
			list_del(c->used, &c->nused, c->pos, (uint32_t)p);
			c->pstate[p] = PG_REPORTED;
			list_add(c->rep, &c->nrep, c->pos, (uint32_t)p);
		}
		return;
	}
	while (c->nrep < target) {
		uint64_t r = rnd(&c->rng), len = 1ull << ((r >> 58) % 6);
		uint64_t start = c->pin_end + r % unpinned;

		for (uint64_t p = start; p < c->npages && p < start + len && c->nrep < target; p++) {
			if (c->pstate[p] != PG_USED)
				continue;
			list_del(c->used, &c->nused, c->pos, (uint32_t)p);
			c->pstate[p] = PG_REPORTED;
			list_add(c->rep, &c->nrep, c->pos, (uint32_t)p);
		}
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void sort_u64(uint64_t *v, unsigned int n)
{
	for (unsigned int i = 1; i < n; i++)
		for (unsigned int j = i; j && v[j - 1] > v[j]; j--) {
			uint64_t t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
}

/*
 * Rotation: stop using a few used pages (reported at once: from here on this vCPU
 * neither writes nor verifies them) and ask for as many reported ones back (REUSE;
 * they are written only after REUSED, with fresh data, their contents being garbage).
 */
static void rotate(struct vcpu *c)
{
	struct vm *vm = c->vm;
	uint64_t rep[ROT_PAGES], reuse[ROT_PAGES];
	unsigned int nrep = 0, want = c->nrep < ROT_PAGES ? c->nrep : ROT_PAGES;
	uint32_t seq;
	int rc;

	if (atomic_load(&c->reuse_seq) || !want || vmm_host_away(vm))
		return;
	for (unsigned int tries = 0; nrep < want && c->nused > 1 && tries < 4 * ROT_PAGES; tries++) {
		uint32_t page = c->used[rnd(&c->rng) % c->nused];

		if (page < c->pin_end)
			continue;
		list_del(c->used, &c->nused, c->pos, page);
		c->pstate[page] = PG_REPORTED;
		rep[nrep++] = c->first + page;
	}
	if (!nrep)
		return;
	/* take back as many from the pages reported before this rotation */
	for (unsigned int i = 0; i < nrep; i++) {
		uint32_t page = c->rep[rnd(&c->rng) % c->nrep];

		list_del(c->rep, &c->nrep, c->pos, page);
		c->pstate[page] = PG_REUSING;
		c->reusing[i] = page;
		reuse[i] = c->first + page;
	}
	c->nreusing = nrep;
	for (unsigned int i = 0; i < nrep; i++)
		list_add(c->rep, &c->nrep, c->pos, (uint32_t)(rep[i] - c->first));
	sort_u64(rep, nrep);
	sort_u64(reuse, nrep);
	rc = vmm_send_gfns(vm, VCMA_SIM_MSG_REPORT, 0, rep, nrep);
	if (rc > 0)
		c->reports += (uint64_t)rc;
	seq = vmm_next_seq(vm);
	atomic_store(&c->reuse_seq, seq); /* before the send: REUSED may beat send()'s return */
	rc = vmm_send_gfns(vm, VCMA_SIM_MSG_REUSE, seq, reuse, nrep);
	if (rc > 0)
		c->reuses++;
	else if (rc == -ENOTCONN) { /* vcmad is away: nobody can take the pages, use them */
		atomic_fetch_add(&vm->local_reuses, 1);
		atomic_store_explicit(&c->reuse_done, true, memory_order_release);
	} else if (!atomic_load(&vm->host_gone) && !stopping(vm) && !vmm_lost_err(vm, rc))
		msg("vCPU %u: cannot send REUSE: %s", c->idx, strerror(-rc));
}

/*
 * vcmad came back after a restart: it counts every page as in use (reported pages are
 * not recorded), so REPORT again what this slice keeps reported. Done by the thread that
 * owns the slice (or the VMM thread for a slice without one); epoch is the host_epoch
 * the reports are for.
 */
static void report_again(struct vcpu *c, unsigned int epoch)
{
	uint64_t *gfns;
	int rc;

	c->reported_epoch = epoch;
	if (!c->nrep)
		return;
	gfns = malloc(c->nrep * sizeof(*gfns));
	if (!gfns) {
		msg("vCPU %u: out of memory: its reported pages stay unreported after the reattach", c->idx);
		return;
	}
	for (uint32_t i = 0; i < c->nrep; i++)
		gfns[i] = c->first + c->rep[i];
	qsort(gfns, c->nrep, sizeof(*gfns), cmp_u64);
	/* if vcmad went away again, the next epoch brings us back here */
	rc = vmm_send_gfns(c->vm, VCMA_SIM_MSG_REPORT, 0, gfns, c->nrep);
	if (rc > 0)
		c->reports += (uint64_t)rc;
	else if (rc < 0 && !vmm_lost_err(c->vm, rc) && !atomic_load(&c->vm->host_gone))
		msg("vCPU %u: cannot REPORT its pages again after the reattach: %s", c->idx, strerror(-rc));
	free(gfns);
}

void vm_report_again_idle(struct vm *vm)
{
	unsigned int epoch = atomic_load(&vm->host_epoch);

	/* the idle workload's one slice: nobody changes it after the start */
	if (vm->o->workload == WL_IDLE)
		for (unsigned int i = 0; i < vm->nslices; i++)
			report_again(&vm->vcpu[i], epoch);
}

/* REUSED arrived: the pages are this vCPU's again; write them before any verify. */
static void take_back(struct vcpu *c)
{
	for (unsigned int i = 0; i < c->nreusing; i++) {
		uint32_t page = c->reusing[i];

		c->pstate[page] = PG_USED;
		list_add(c->used, &c->nused, c->pos, page);
		page_write(c, page);
	}
	c->reused_pages += c->nreusing;
	c->nreusing = 0;
	atomic_store(&c->reuse_done, false);
	atomic_store(&c->reuse_seq, 0);
}

/*
 * --write-rate: sleep (as an idle vCPU: a pause need not wait for it) until the next
 * page write is due. Writes are due at pace_t0 + pace_n / rate; a vCPU that fell more
 * than PACE_MAX_LAG_NS behind (it was paused, or starved) starts afresh instead of
 * writing a burst to catch up.
 */
static void pace(struct vcpu *c)
{
	struct vm *vm = c->vm;
	uint64_t rate = vm->o->write_rate;

	while (!stopping(vm)) {
		uint64_t t = now_ns(), due;

		if (!c->pace_t0 || t - c->pace_t0 > (uint64_t)1e9 * 3600) { /* start, or keep the product small */
			c->pace_t0 = t;
			c->pace_n = 0;
		}
		due = c->pace_t0 + c->pace_n * 1000000000ull / rate;
		if (t >= due) {
			if (t - due > PACE_MAX_LAG_NS) {
				c->pace_t0 = t;
				c->pace_n = 0;
			}
			return;
		}
		vmm_idle(vm, due - t < PACE_MAX_SLEEP_NS ? due - t : PACE_MAX_SLEEP_NS);
	}
}

#define VCPU_NICE 10
static atomic_bool nice_warned;

static void *vcpu_main(void *p)
{
	struct vcpu *c = p;
	struct vm *vm = c->vm;
	bool rotating = vm->o->report_pct > 0;

	/* A hypervisor stops a vCPU with an IPI, at once; our vCPUs stop only when
	 * they reach a pause point. Running them at a lower priority than the VMM
	 * thread (and vcmad) lets a PAUSE be seen promptly even on an oversubscribed
	 * host, as it would be on a real one. Raising one's nice value always works. */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), VCPU_NICE) && !atomic_exchange(&nice_warned, true))
		msg("cannot lower the vCPU threads' priority: %s", strerror(errno));

	/* first touch every page in use, so the final pass covers all of them */
	for (uint64_t page = 0; page < c->npages && !stopping(vm); page++) {
		vmm_pause_point(vm);
		if (c->pstate[page] == PG_USED)
			page_write(c, page);
	}
	while (!stopping(vm)) {
		uint64_t r = rnd(&c->rng);
		uint32_t page;

		vmm_pause_point(vm);
		if (atomic_load_explicit(&c->reuse_done, memory_order_acquire))
			take_back(c);
		if (rotating) {
			unsigned int epoch = atomic_load_explicit(&vm->host_epoch, memory_order_relaxed);

			if (epoch != c->reported_epoch && !(epoch & 1u))
				report_again(c, epoch);
			if (!(++c->ops % ROT_OPS))
				rotate(c);
		}
		if (!c->nused) {
			struct timespec ts = { 0, 1000000 };

			nanosleep(&ts, NULL);
			continue;
		}
		page = c->used[r % c->nused];
		if ((r >> 60) < 4) { /* one in four: verify */
			page_verify(c, page);
		} else {
			if (vm->o->write_rate) {
				pace(c);
				vmm_pause_point(vm); /* pace may return as a pause begins */
				if (stopping(vm))
					break;
			}
			page_write(c, page);
			c->pace_n++;
		}
	}
	/* the final pass: every page in use still holds what this vCPU last wrote */
	for (uint64_t page = 0; page < c->npages && !atomic_load(&vm->host_gone); page++) {
		vmm_pause_point(vm);
		if (c->pstate[page] == PG_USED)
			page_verify(c, page);
	}
	vmm_vcpu_leave(vm);
	return NULL;
}

/* ---- region patterns: what a device would DMA ---- */

static inline uint64_t region_word(uint32_t guest_id, uint64_t handle, uint64_t i)
{
	return mix64(mix64(((uint64_t)guest_id << 32) ^ handle ^ 0x5a17e5d0c0ffee00ull) + i);
}

/* Write the pattern; the region must arrive zeroed (docs/PROTOCOL.md §6). */
static void region_fill(struct vm *vm, const struct held *h)
{
	volatile uint64_t *w = (volatile uint64_t *)h->map;
	uint64_t n = h->size / 8, dirty = 0;

	for (uint64_t i = 0; i < n; i++) {
		if (w[i])
			dirty++;
		w[i] = region_word(vm->guest_id, h->handle, i);
	}
	if (dirty) {
		vm->not_zeroed++;
		vm->errors++;
		msg("region %#" PRIx64 " (bus %#" PRIx64 ", %" PRIu64 " KiB) was not zeroed: %" PRIu64 " dirty word(s)",
		    h->handle, h->bus, h->size >> 10, dirty);
	}
}

static bool region_verify(struct vm *vm, const struct held *h)
{
	const volatile uint64_t *w = (const volatile uint64_t *)h->map;
	uint64_t n = h->size / 8, bad = 0, first_bad = 0;

	for (uint64_t i = 0; i < n; i++)
		if (w[i] != region_word(vm->guest_id, h->handle, i) && !bad++)
			first_bad = i;
	vm->st[h->size_idx].bytes_verified += h->size;
	if (!bad || host_left(vm))
		return true;
	vm->st[h->size_idx].pattern_errors++;
	if (vm->pattern_logged++ < MAX_LOGGED)
		msg("PATTERN MISMATCH in region %#" PRIx64 " (bus %#" PRIx64 ", %" PRIu64 " KiB): %" PRIu64
		    " bad word(s), first at offset %#" PRIx64,
		    h->handle, h->bus, h->size >> 10, bad, first_bad * 8);
	return false;
}

/* ---- the mapper: regions appear at their guest-physical address ---- */

static int vm_map(void *ctx, uint64_t gpa, uint64_t bus, uint64_t size, void **addr)
{
	struct vm *vm = ctx;
	void *p;

	if (!size || size % PAGE || gpa % PAGE || bus % PAGE)
		return -EINVAL;
	/* above RAM, inside the reserved range, backed by machine memory */
	if (gpa < vm->ram_frames * PAGE || gpa > vm->span || size > vm->span - gpa || bus > vm->machine_bytes ||
	    size > vm->machine_bytes - bus) {
		msg("region at gpa %#" PRIx64 " bus %#" PRIx64 " size %#" PRIx64 " is outside guest-physical space",
		    gpa, bus, size);
		return -EINVAL;
	}
	if (gpa != vm->window_gpa + bus) {
		msg("region gpa %#" PRIx64 " is not window_gpa %#" PRIx64 " + bus %#" PRIx64, gpa, vm->window_gpa, bus);
		return -EINVAL;
	}
	pthread_mutex_lock(&vm->held_lock);
	for (unsigned int i = 0; i < vm->nheld; i++) {
		const struct held *h = &vm->held[i];

		if (bus < h->bus + h->size && h->bus < bus + size) {
			msg("region bus %#" PRIx64 "+%#" PRIx64 " overlaps held region %#" PRIx64 " at %#" PRIx64 "+%#" PRIx64,
			    bus, size, h->handle, h->bus, h->size);
			pthread_mutex_unlock(&vm->held_lock);
			return -EEXIST;
		}
	}
	pthread_mutex_unlock(&vm->held_lock);
	p = mmap(vm->base + gpa, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, vm->machine_fd, (off_t)bus);
	if (p == MAP_FAILED)
		return -errno;
	*addr = p;
	return 0;
}

static void vm_unmap(void *ctx, void *addr, uint64_t size)
{
	/* back to a hole: a stray access faults instead of reaching machine memory */
	if (mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
		msg("cannot unmap region at %p: %s", addr, strerror(errno));
}

/* ---- allocation driver ---- */

static int refusal_idx(int err)
{
	for (unsigned int i = 0; i < NREFUSAL; i++)
		if (refusal[i].err == -err)
			return (int)i;
	return -1;
}

static int record_add(struct vm *vm, const struct vcma_region_info *ri)
{
	if (vm->nrec == vm->rec_cap) {
		size_t cap = vm->rec_cap ? vm->rec_cap * 2 : 256;
		struct region_record *r = realloc(vm->rec, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		vm->rec = r;
		vm->rec_cap = cap;
	}
	vm->rec[vm->nrec] = (struct region_record){
		.handle = ri->handle, .gpa = ri->gpa, .bus = ri->bus, .size = ri->size, .alloc_ns = now_ns(),
	};
	return (int)vm->nrec++;
}

static void unexpected(struct vm *vm, const char *what, int rc)
{
	vm->errors++;
	msg("%s: %s (%s)", what, vcma_strerror(rc), strerror(-rc));
	atomic_store(&vm->stop, true);
}

/*
 * A guest part call that began at ring_epoch epoch0 failed with rc: was it in flight
 * across a vcmad restart? The new ring fails such calls with -ECONNRESET (and one that
 * outlasts its timeout while vcmad is away sees -ETIMEDOUT): not a failure of the run
 * but a call to make again. Unless vcmad did not come back.
 */
static bool crossed_restart(struct vm *vm, unsigned int epoch0, int rc)
{
	unsigned int epoch = atomic_load(&vm->ring_epoch);

	if ((rc != -ECONNRESET && rc != -ETIMEDOUT) || atomic_load(&vm->host_gone))
		return false;
	if (epoch == epoch0 && !(epoch & 1u))
		return false;
	vm->calls_retried++;
	return true;
}

/* 1: a region is held now, 0: refused, 2: to be retried (a vcmad restart), -1: error. */
static int do_alloc(struct vm *vm, uint64_t *rng)
{
	unsigned int si = (unsigned int)(rnd(rng) % vm->o->nsizes);
	struct size_stat *st = &vm->st[si];
	unsigned int epoch0 = atomic_load(&vm->ring_epoch);
	struct vcma_region_info ri;
	struct held *h;
	int rc, ref, rec;

	rc = vcma_alloc(vm->v, st->bytes, 0, VCMA_ALLOC_MAP, vm->o->pool, &ri);
	if (rc && crossed_restart(vm, epoch0, rc))
		return 2;
	st->attempts++;
	if (rc) {
		ref = refusal_idx(rc);
		if (ref < 0) {
			unexpected(vm, "alloc", rc);
			return -1;
		}
		st->refused[ref]++;
		return 0;
	}
	st->ok++;
	pthread_mutex_lock(&vm->held_lock);
	rec = record_add(vm, &ri);
	if (rec < 0 || ri.size < st->bytes) {
		if (rec >= 0)
			vm->rec[rec].free_ns = now_ns();
		pthread_mutex_unlock(&vm->held_lock);
		unexpected(vm, rec < 0 ? "alloc bookkeeping" : "alloc returned a short region", rec < 0 ? rec : -EIO);
		vcma_free(vm->v, ri.handle);
		return -1;
	}
	h = &vm->held[vm->nheld++];
	h->handle = ri.handle;
	h->gpa = ri.gpa;
	h->bus = ri.bus;
	h->size = ri.size;
	h->map = ri.map;
	h->rec = (size_t)rec;
	h->size_idx = si;
	region_fill(vm, h);
	region_verify(vm, h);
	pthread_mutex_unlock(&vm->held_lock);
	return 1;
}

static void do_free(struct vm *vm, unsigned int i)
{
	unsigned int epoch0 = atomic_load(&vm->ring_epoch);
	struct held h;
	int rc;

	pthread_mutex_lock(&vm->held_lock);
	if (i >= vm->nheld) { /* a reattach dropped it meanwhile */
		pthread_mutex_unlock(&vm->held_lock);
		return;
	}
	h = vm->held[i];
	region_verify(vm, &h);
	vm->held[i] = vm->held[--vm->nheld];
	vm->rec[h.rec].free_ns = now_ns();
	pthread_mutex_unlock(&vm->held_lock);
	/* a FREE that could not be posted across a restart leaves the region to libvcma,
	 * which frees what it still holds at detach */
	rc = vcma_free(vm->v, h.handle);
	if (rc && !crossed_restart(vm, epoch0, rc))
		unexpected(vm, "free", rc);
}

unsigned int vm_regions_back(struct vm *vm, const struct vcma_held_region *regions, size_t n)
{
	unsigned int lost = 0;

	pthread_mutex_lock(&vm->held_lock);
	for (unsigned int i = 0; i < vm->nheld;) {
		const struct held *h = &vm->held[i];
		const struct vcma_held_region *r = NULL;

		for (size_t k = 0; k < n && !r; k++)
			if (regions[k].handle == h->handle)
				r = &regions[k];
		if (r && r->bus == h->bus && r->size == h->size) {
			i++;
			continue;
		}
		if (r)
			msg("region %#" PRIx64 " came back changed after the restart: bus %#" PRIx64 "+%#" PRIx64
			    ", was %#" PRIx64 "+%#" PRIx64 ": dropped", h->handle, r->bus, r->size, h->bus, h->size);
		else
			msg("region %#" PRIx64 " (bus %#" PRIx64 ", %" PRIu64 " KiB), held before the restart, is not "
			    "among the regions vcmad kept: dropped", h->handle, h->bus, h->size >> 10);
		vm->rec[h->rec].free_ns = now_ns();
		vm->held[i] = vm->held[--vm->nheld];
		lost++;
	}
	pthread_mutex_unlock(&vm->held_lock);
	return lost;
}

static void sleep_ms(struct vm *vm, unsigned int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;

	while (!stopping(vm)) {
		uint64_t t = now_ns();
		struct timespec ts;

		if (t >= end)
			break;
		t = end - t > 50000000ull ? 50000000ull : end - t;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)t;
		nanosleep(&ts, NULL);
	}
}

/* While the guest part's ring is stale (and the run goes on, unless past_stop), wait
 * for the reattach or for its failure: a call made now would only wait on the old ring. */
static void wait_while_away(struct vm *vm, bool past_stop)
{
	while (vmm_ring_stale(vm) && !atomic_load(&vm->host_gone) && !got_signal && (past_stop || !stopping(vm))) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
}

/* regions the driver holds (a reattach may drop some from the VMM thread) */
static unsigned int held_count(struct vm *vm)
{
	unsigned int n;

	pthread_mutex_lock(&vm->held_lock);
	n = vm->nheld;
	pthread_mutex_unlock(&vm->held_lock);
	return n;
}

static void drive(struct vm *vm, uint64_t deadline)
{
	uint64_t rng = vm->o->seed ^ 0xa110ca7e;
	unsigned int attempts = 0;
	bool refused = false;

	while (!stopping(vm) && now_ns() < deadline && !(vm->o->count && attempts >= vm->o->count)) {
		unsigned int nheld = held_count(vm);

		if (!vm->o->nsizes) {
			sleep_ms(vm, (unsigned int)((deadline - now_ns()) / 1000000ull) + 1);
			continue;
		}
		/* allocate up to --max-regions, then free one and allocate again; after a
		 * refusal free one too, so a full pool or quota keeps the run moving */
		if (nheld < vm->o->max_regions && !(refused && nheld)) {
			int rc = do_alloc(vm, &rng);

			refused = rc == 0;
			attempts += rc != 2;
		} else {
			do_free(vm, (unsigned int)(rnd(&rng) % nheld)); /* gone meanwhile: skipped */
			refused = false;
		}
		wait_while_away(vm, false); /* after a call that failed across a restart */
		if (vm->o->interval_ms)
			sleep_ms(vm, vm->o->interval_ms);
	}
}

/* ---- VMM part: attach, p2m, guest RAM ---- */

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

/* 0, or -errno with *why set; fds[4] are ours on success. */
static int vmm_handshake(struct vm *vm, int fds[4], const char **why)
{
	const struct opts *o = vm->o;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_VMM, .flags = vm->flags, .ram_bytes = o->ram,
	};
	struct vcma_sim_attach_rsp rsp;
	int got = 0, rc;
	bool trunc;
	ssize_t n;

	for (int i = 0; i < 4; i++)
		fds[i] = -1;
	if (strlen(o->socket) >= sizeof(sa.sun_path)) {
		*why = "socket path too long";
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, o->socket, strlen(o->socket) + 1);
	vm->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (vm->sock < 0 || connect(vm->sock, (struct sockaddr *)&sa, sizeof(sa))) {
		*why = "connect";
		return -errno;
	}
	memcpy(a.name, o->name, strlen(o->name));
	if (o->devclass)
		memcpy(a.devclass, o->devclass, strlen(o->devclass));
	n = send(vm->sock, &a, sizeof(a), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(a)) {
		*why = "sending the attach message";
		return n < 0 ? -errno : -EIO;
	}
	*why = "waiting for the attach response";
	rc = wait_readable(vm->sock, ATTACH_TIMEOUT_MS);
	if (rc)
		return rc;
	n = sim_recv_rsp(vm->sock, &rsp, fds, &got, &trunc);
	if (n < 0) {
		close_fds(fds, 4);
		return (int)n;
	}
	*why = "malformed attach response";
	if (n == 0) {
		*why = "vcmad closed the connection without an answer";
		rc = -ECONNRESET;
	} else if (n != (ssize_t)sizeof(rsp) || trunc || rsp.magic != VCMA_SIM_MAGIC ||
		   rsp.version != VCMA_SIM_VERSION || rsp.type != VCMA_SIM_MSG_ATTACH_RSP) {
		rc = -EIO;
	} else if (rsp.status != VCMA_ST_OK) {
		*why = "vcmad refused the attach";
		rc = vcma_status_errno(rsp.status);
		if (!rc)
			rc = -EIO;
	} else if (rsp.nfds != 4 || got != 4) {
		*why = "attach response without the 4 fds of a VMM";
		rc = -EIO;
	} else if (rsp.ram_frames != o->ram / PAGE || !rsp.nruns || rsp.nruns > rsp.ram_frames ||
		   !rsp.machine_bytes || rsp.machine_bytes % PAGE || rsp.window_gpa % PAGE ||
		   rsp.window_gpa < o->ram || rsp.window_gpa > (1ull << 46) || rsp.machine_bytes > (1ull << 46)) {
		*why = "attach response with an impossible geometry";
		rc = -EIO;
	} else {
		rc = 0;
	}
	if (rc) {
		close_fds(fds, 4);
		return rc;
	}
	vm->guest_id = rsp.guest_id;
	vm->shm_size = rsp.shm_size;
	vm->ram_frames = rsp.ram_frames;
	vm->machine_bytes = rsp.machine_bytes;
	vm->window_gpa = rsp.window_gpa;
	vm->nruns = rsp.nruns;
	return 0;
}

/* Receive and check the p2m (docs/PROTOCOL.md §9.1): sorted, covering RAM once. */
static int recv_p2m(struct vm *vm, const char **why)
{
	struct vcma_sim_p2m *m = malloc(sizeof(*m));
	uint64_t next_gfn = 0, machine_frames = vm->machine_bytes / PAGE;
	uint32_t have = 0;
	int rc = 0;

	vm->runs = calloc(vm->nruns, sizeof(*vm->runs));
	if (!m || !vm->runs) {
		free(m);
		*why = "out of memory";
		return -ENOMEM;
	}
	while (have < vm->nruns && !rc) {
		ssize_t n;

		*why = "waiting for the p2m";
		rc = wait_readable(vm->sock, ATTACH_TIMEOUT_MS);
		if (rc)
			break;
		n = recv(vm->sock, m, sizeof(*m), MSG_TRUNC);
		*why = "malformed p2m message";
		if (n <= 0) {
			rc = n ? -errno : -ECONNRESET;
			break;
		}
		if (n != (ssize_t)sizeof(*m) || m->magic != VCMA_SIM_MAGIC || m->version != VCMA_SIM_VERSION ||
		    m->type != VCMA_SIM_MSG_P2M || !m->nruns || m->nruns > VCMA_SIM_P2M_RUNS || m->pad ||
		    m->nruns > vm->nruns - have) {
			rc = -EIO;
			break;
		}
		for (uint32_t i = 0; i < m->nruns; i++) {
			const struct vcma_sim_run *r = &m->run[i];

			if (r->gfn != next_gfn || !r->count || r->count > vm->ram_frames - next_gfn ||
			    r->mfn > machine_frames || r->count > machine_frames - r->mfn) {
				*why = "p2m runs that are unsorted, overlapping or outside machine memory";
				rc = -EIO;
				break;
			}
			vm->runs[have++] = *r;
			next_gfn += r->count;
		}
	}
	if (!rc && next_gfn != vm->ram_frames) {
		*why = "p2m does not cover guest RAM";
		rc = -EIO;
	}
	free(m);
	return rc;
}

/* Reserve guest-physical space and map RAM from machine memory, run by run. */
static int map_ram(struct vm *vm, const char **why)
{
	uint32_t i = 0;

	/* our own p2m, gfn by gfn: a remap that fails halfway maps back from it */
	vm->p2m = calloc(vm->ram_frames, sizeof(*vm->p2m));
	if (!vm->p2m) {
		*why = "out of memory";
		return -ENOMEM;
	}
	for (uint32_t r = 0; r < vm->nruns; r++)
		for (uint64_t k = 0; k < vm->runs[r].count; k++)
			vm->p2m[vm->runs[r].gfn + k] = vm->runs[r].mfn + k;
	vm->span = vm->window_gpa + vm->machine_bytes;
	vm->base = mmap(NULL, vm->span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->base == MAP_FAILED) {
		vm->base = NULL;
		*why = "reserving guest-physical address space";
		return -errno;
	}
	while (i < vm->nruns) {
		uint64_t gfn = vm->runs[i].gfn, mfn = vm->runs[i].mfn, count = vm->runs[i].count;

		/* vcmad sends merged runs; merge again in case it did not */
		for (i++; i < vm->nruns && vm->runs[i].gfn == gfn + count && vm->runs[i].mfn == mfn + count; i++)
			count += vm->runs[i].count;
		if (mmap(vm->base + gfn * PAGE, count * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 vm->machine_fd, (off_t)(mfn * PAGE)) == MAP_FAILED) {
			*why = errno == ENOMEM ? "mapping guest RAM (too many mappings? see vm.max_map_count)"
					       : "mapping guest RAM";
			return -errno;
		}
		vm->nmaps++;
	}
	return 0;
}

/* ---- output ---- */

static const char *fmt_size(uint64_t b, char buf[32])
{
	if (b && !(b % (1ull << 30)))
		snprintf(buf, 32, "%" PRIu64 " GiB", b >> 30);
	else if (b && !(b % (1ull << 20)))
		snprintf(buf, 32, "%" PRIu64 " MiB", b >> 20);
	else if (!(b % 1024))
		snprintf(buf, 32, "%" PRIu64 " KiB", b >> 10);
	else
		snprintf(buf, 32, "%" PRIu64 " B", b);
	return buf;
}

static const char *fmt_rate(unsigned int rate, char buf[32])
{
	snprintf(buf, 32, "%u pages/s per vCPU", rate);
	return buf;
}

/* what the summary adds up after the run */
struct totals {
	uint64_t written, verified, corrupt, pattern;
	uint64_t reported_pages, reports, reuses, reused_pages;
	struct vmm_summary vs;
};

static void print_text(struct vm *vm, const struct totals *t)
{
	const struct opts *o = vm->o;
	char buf[32];

	printf("vcma-simvm: guest %s, id %u, seed %" PRIu64 ", %.2f s%s\n", o->name, vm->guest_id, o->seed,
	       (double)(vm->end_ns - vm->start_ns) / 1e9,
	       atomic_load(&vm->host_gone) ? " (vcmad went away)" : "");
	printf("  vcmad restarts: %s; %" PRIu64 " reattach(es)%s, %" PRIu64 " REUSE(s) answered while vcmad was away, %"
	       PRIu64 " guest call(s) retried\n",
	       vm->have_token ? "survived" : (vm->flags & VCMA_SIM_F_REATTACH) ? "not survived (vcmad gave no token)"
										: "not survived (--no-reattach)",
	       (uint64_t)atomic_load(&vm->reattaches), atomic_load(&vm->reattach_failed) ? ", the last one refused" : "",
	       (uint64_t)atomic_load(&vm->local_reuses), vm->calls_retried);
	printf("  RAM %s in %u mapping(s) from %u p2m run(s); %u vCPU(s), workload %s\n", fmt_size(o->ram, buf),
	       vm->nmaps, vm->nruns, o->workload == WL_IDLE ? 0 : o->vcpus,
	       o->workload == WL_IDLE ? "idle" : "checksum");
	printf("  vCPU pages: %" PRIu64 " written, %" PRIu64 " verified, %" PRIu64 " corrupt\n", t->written,
	       t->verified, t->corrupt);
	printf("  pauses: %" PRIu64 ", p50 %.1f us, p99 %.1f us, max %.1f us (PAUSE to RESUME); parked after p50 %.1f us,"
	       " max %.1f us; running again after p50 %.1f us, max %.1f us (%" PRIu64 " of %" PRIu64 " from a futex sleep)\n",
	       t->vs.pauses, t->vs.p50_us, t->vs.p99_us, t->vs.max_us, t->vs.park_p50_us, t->vs.park_max_us,
	       t->vs.resume_p50_us, t->vs.resume_max_us, t->vs.slept, t->vs.unparks);
	printf("  remapped %" PRIu64 " page(s) in %" PRIu64 " mmap call(s), %" PRIu64 " REMAP(s) refused; %" PRIu64
	       " host message(s) ignored\n",
	       t->vs.remapped_pages, t->vs.remap_calls, t->vs.remap_refused, t->vs.host_msgs_ignored);
	printf("  one trip %s: %" PRIu64 " REMAP_RESUME(s), %" PRIu64 " DROP(s) of %" PRIu64 " page(s), %" PRIu64
	       " DROP(s) refused\n",
	       (vm->flags & VCMA_SIM_F_ONE_TRIP) ? "on" : "off", t->vs.remap_resumes, t->vs.drops, t->vs.dropped_pages,
	       t->vs.drops_refused);
	printf("  dirty log %s: %" PRIu64 " TRACK(s) (%" PRIu64 " refused), %" PRIu64 " UNTRACK(s), %" PRIu64
	       " DIRTY_READ(s) (%" PRIu64 " failed) reporting %" PRIu64 " page(s); write rate %s\n",
	       vm->dlog ? "on" : "off", t->vs.tracks, t->vs.tracks_refused, t->vs.untracks, t->vs.dirty_reads,
	       t->vs.dirty_read_errors, t->vs.dirty_pages, o->write_rate ? fmt_rate(o->write_rate, buf) : "unpaced");
	printf("  free page reporting: %" PRIu64 " page(s) reported now, %" PRIu64 " REPORT(s), %" PRIu64
	       " REUSE(s) taking back %" PRIu64 " page(s); %" PRIu64 " page(s) pinned\n",
	       t->reported_pages, t->reports, t->reuses, t->reused_pages, vm->pinned_pages);
	for (unsigned int i = 0; i < o->nsizes; i++) {
		const struct size_stat *st = &vm->st[i];
		bool any = false;

		printf("  alloc %8s: %" PRIu64 " attempts, %" PRIu64 " ok, refused:", fmt_size(st->bytes, buf), st->attempts,
		       st->ok);
		for (unsigned int r = 0; r < NREFUSAL; r++)
			if (st->refused[r]) {
				printf("%s %s %" PRIu64 " (%s)", any ? "," : "", refusal[r].name, st->refused[r],
				       vcma_strerror(-refusal[r].err));
				any = true;
			}
		printf("%s; %" PRIu64 " MiB verified, %" PRIu64 " pattern error(s)\n", any ? "" : " none",
		       st->bytes_verified >> 20, st->pattern_errors);
	}
	printf("  regions: %zu obtained, %" PRIu64 " held at the end (%s), %" PRIu64 " not zeroed\n", vm->nrec,
	       vm->held_at_end, atomic_load(&vm->host_gone) ? "reclaimed by vcmad" : "all freed before exit",
	       vm->not_zeroed);
	printf("  corruptions %" PRIu64 ", pattern errors %" PRIu64 ", errors %" PRIu64 ", reattaches %" PRIu64
	       ", calls retried %" PRIu64 "\n",
	       t->corrupt, t->pattern, vm->errors, (uint64_t)atomic_load(&vm->reattaches), vm->calls_retried);
}

static void print_json(struct vm *vm, const struct totals *t)
{
	const struct opts *o = vm->o;

	printf("{\"name\":\"%s\",\"guest_id\":%u,\"seed\":%" PRIu64 ",\"duration_s\":%.3f,\"host_gone\":%s,"
	       "\"ram_bytes\":%" PRIu64 ",\"mappings\":%u,\"p2m_runs\":%u,\"vcpus\":%u,"
	       "\"corruptions\":%" PRIu64 ",\"pattern_errors\":%" PRIu64 ",\"vcpu_pages_written\":%" PRIu64
	       ",\"vcpu_pages_verified\":%" PRIu64 ",\"regions_not_zeroed\":%" PRIu64 ",\"held_at_end\":%" PRIu64
	       ",\"errors\":%" PRIu64 ",",
	       o->name, vm->guest_id, o->seed, (double)(vm->end_ns - vm->start_ns) / 1e9,
	       atomic_load(&vm->host_gone) ? "true" : "false", o->ram, vm->nmaps, vm->nruns,
	       o->workload == WL_IDLE ? 0 : o->vcpus, t->corrupt, t->pattern, t->written, t->verified, vm->not_zeroed,
	       vm->held_at_end, vm->errors);
	printf("\"pauses\":{\"count\":%" PRIu64 ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"acks\":%" PRIu64
	       ",\"ack_p50_us\":%.1f,\"ack_p99_us\":%.1f,\"ack_max_us\":%.1f,\"unparks\":%" PRIu64
	       ",\"unpark_p50_us\":%.1f,\"unpark_p99_us\":%.1f,\"unpark_max_us\":%.1f,\"unparks_from_sleep\":%" PRIu64 "},"
	       "\"remapped_pages\":%" PRIu64 ",\"remap_calls\":%" PRIu64 ",\"remaps_refused\":%" PRIu64
	       ",\"reported_pages\":%" PRIu64 ",\"reports\":%" PRIu64 ",\"reuses\":%" PRIu64 ",\"reused_pages\":%" PRIu64
	       ",\"pinned_pages\":%" PRIu64 ",\"host_msgs_ignored\":%" PRIu64 ",",
	       t->vs.pauses, t->vs.p50_us, t->vs.p99_us, t->vs.max_us, t->vs.acks, t->vs.park_p50_us, t->vs.park_p99_us,
	       t->vs.park_max_us, t->vs.unparks, t->vs.resume_p50_us, t->vs.resume_p99_us, t->vs.resume_max_us,
	       t->vs.slept, t->vs.remapped_pages, t->vs.remap_calls, t->vs.remap_refused, t->reported_pages,
	       t->reports, t->reuses, t->reused_pages, vm->pinned_pages, t->vs.host_msgs_ignored);
	printf("\"reattach\":%s,\"reattaches\":%" PRIu64 ",\"reattach_failed\":%s,\"local_reuses\":%" PRIu64
	       ",\"calls_retried\":%" PRIu64 ",",
	       vm->have_token ? "true" : "false", (uint64_t)atomic_load(&vm->reattaches),
	       atomic_load(&vm->reattach_failed) ? "true" : "false", (uint64_t)atomic_load(&vm->local_reuses),
	       vm->calls_retried);
	printf("\"write_rate\":%u,\"one_trip\":%s,\"dirty_log\":%s,\"remap_resumes\":%" PRIu64 ",\"drops\":%" PRIu64
	       ",\"dropped_pages\":%" PRIu64 ",\"drops_refused\":%" PRIu64 ",\"tracks\":%" PRIu64
	       ",\"tracks_refused\":%" PRIu64 ",\"untracks\":%" PRIu64 ",\"dirty_reads\":%" PRIu64
	       ",\"dirty_read_errors\":%" PRIu64 ",\"dirty_pages\":%" PRIu64 ",\"sizes\":[",
	       o->write_rate, (vm->flags & VCMA_SIM_F_ONE_TRIP) ? "true" : "false", vm->dlog ? "true" : "false",
	       t->vs.remap_resumes, t->vs.drops, t->vs.dropped_pages, t->vs.drops_refused, t->vs.tracks,
	       t->vs.tracks_refused, t->vs.untracks, t->vs.dirty_reads, t->vs.dirty_read_errors, t->vs.dirty_pages);
	for (unsigned int i = 0; i < o->nsizes; i++) {
		const struct size_stat *st = &vm->st[i];
		bool first = true;

		printf("%s{\"bytes\":%" PRIu64 ",\"attempts\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"refused\":{", i ? "," : "",
		       st->bytes, st->attempts, st->ok);
		for (unsigned int r = 0; r < NREFUSAL; r++)
			if (st->refused[r]) {
				printf("%s\"%s\":%" PRIu64, first ? "" : ",", refusal[r].name, st->refused[r]);
				first = false;
			}
		printf("},\"bytes_verified\":%" PRIu64 ",\"pattern_errors\":%" PRIu64 "}", st->bytes_verified,
		       st->pattern_errors);
	}
	printf("],\"regions\":[");
	for (size_t i = 0; i < vm->nrec; i++) {
		const struct region_record *r = &vm->rec[i];

		printf("%s{\"handle\":%" PRIu64 ",\"gpa\":%" PRIu64 ",\"bus\":%" PRIu64 ",\"size\":%" PRIu64
		       ",\"alloc_ns\":%" PRIu64 ",\"free_ns\":%" PRIu64 "}",
		       i ? "," : "", r->handle, r->gpa, r->bus, r->size, r->alloc_ns, r->free_ns);
	}
	printf("]}\n");
}

/* ---- command line ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vcma-simvm --name NAME [OPTION]...\n"
		"A simulated VM for vcmad's sim backend: maps its RAM from machine memory as the p2m says,\n"
		"runs vCPU threads that write and verify checksummed pages, and through libvcma allocates\n"
		"regions, maps them at their guest-physical address and writes and verifies DMA-like patterns.\n"
		"\n"
		"  -s, --socket PATH       vcmad's socket (default $VCMA_SOCKET, else " VCMA_DEFAULT_SOCKET ")\n"
		"  -n, --name NAME         guest name, 1-31 of [A-Za-z0-9_.-] (required)\n"
		"  -c, --class CLASS       device class (default none)\n"
		"  -r, --ram SIZE          guest RAM, K/M/G suffix, a multiple of 4K (default 64M)\n"
		"  -p, --vcpus N           vCPU threads (default 2)\n"
		"  -w, --workload KIND     checksum (vCPUs write and verify RAM) or idle (default checksum)\n"
		"  -a, --alloc SIZES       region sizes to allocate, comma-separated (default 1M,2M,4M,8M);\n"
		"                          'none' or '' allocates nothing\n"
		"  -P, --pool NAME         pool to allocate from (default: vcmad picks)\n"
		"  -k, --max-regions K     regions held at once (default 4)\n"
		"  -i, --interval-ms N     pause between allocation steps (default 0)\n"
		"  -d, --duration SECONDS  run time, fractions allowed (default 5)\n"
		"      --count N           stop after N allocation attempts (or at --duration, first)\n"
		"  -S, --seed S            PRNG seed (default: from the clock and pid; printed)\n"
		"  -j, --json              print the summary as one JSON object on stdout\n"
		"  -h, --help              show this help and exit\n"
		"\n");
	fprintf(f,
		"The VMM channel (vcmad lends pool frames to the VM and vacates them: pause, copy, remap,\n"
		"resume; the vCPUs keep verifying every page they use across it):\n"
		"      --report PERCENT    free page reporting: each vCPU keeps this share of its pages\n"
		"                          reported free (0..90, default 0 = off) and rotates a few of them\n"
		"                          every 4096 page operations (REPORT some, REUSE as many back);\n"
		"                          with --workload idle, 0..100 of RAM is reported at the start\n"
		"                          and stays reported (100: every page not pinned)\n"
		"      --pin SIZE          pin the first SIZE bytes of RAM (PIN, wait for PINNED) before\n"
		"                          the workload starts (default 0)\n"
		"      --write-rate N      each vCPU writes N pages per second, paced by sleeping (it\n"
		"                          counts as parked while asleep); 0 = as fast as it can (default)\n"
		"      --no-one-trip       attach without ONE_TRIP: no REMAP_RESUME, no DROP (an older VMM)\n"
		"      --no-dirty-log      attach without DIRTY_LOG: no pre-copy, vacated by pausing\n"
		"                          (DIRTY_LOG is on where the kernel offers userfaultfd WP_ASYNC\n"
		"                          and PAGEMAP_SCAN, Linux 6.7; else one line says what is missing)\n"
		"      --no-reattach       attach without REATTACH: when vcmad goes away, stop (by default\n"
		"                          the VM keeps running on its RAM, reconnects with backoff 10 ms\n"
		"                          doubling to 500 ms for the grace period vcmad's token names, and\n"
		"                          takes its RAM and regions back from the restarted vcmad)\n"
		"Fault injection, for vcmad's tests:\n"
		"      --pause-delay-ms N  answer PAUSE only N ms after it arrived\n"
		"      --no-pause-ack      never answer PAUSE (vCPUs still park, and RESUME unparks)\n"
		"      --exit-on-pause     _exit(0) when the first PAUSE arrives, without answering\n"
		"      --exit-after-pauses K  the same at the K-th PAUSE\n"
		"      --refuse-remaps K   refuse every K-th REMAP or REMAP_RESUME (EIO, nothing mapped;\n"
		"                          a refused REMAP_RESUME stays paused until RESUME)\n"
		"\n"
		"Allocation refusals (ERANGE, EDQUOT, ENOSPC, EBUSY, E2BIG, ENOBUFS, ENOMEM) are counted, not\n"
		"errors. In --json output, regions[] lists every region obtained with its bus address, size\n"
		"and CLOCK_MONOTONIC times: alloc_ns after the allocation answered, free_ns before the free\n"
		"was sent.\n"
		"\n"
		"Guest part calls in flight across a vcmad restart fail with ECONNRESET (or time out while\n"
		"vcmad is away) and are made again: counted as 'calls retried', not as errors. The summary\n"
		"ends with the reattaches.\n"
		"\n"
		"Exit status: 0 ok, 1 corruption or unexpected error, 2 usage error, 3 could not attach, or\n"
		"vcmad did not take the VM back after a restart (its memory is gone).\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long x;
	unsigned int shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end || !x || x > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)x << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned int min, unsigned int max, unsigned int *out)
{
	char *end;
	unsigned long x;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	x = strtoul(s, &end, 10);
	if (errno || *end || x < min || x > max)
		return -1;
	*out = (unsigned int)x;
	return 0;
}

static bool name_ok(const char *s, size_t max, bool allow_empty)
{
	return *s ? vcma_name_str_ok(s, max + 1) : allow_empty;
}

static int parse_sizes(const char *s, struct opts *o)
{
	char buf[512], *save = NULL;

	o->nsizes = 0;
	if (!*s || !strcmp(s, "none"))
		return 0;
	if (strlen(s) >= sizeof(buf))
		return -1;
	memcpy(buf, s, strlen(s) + 1);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t x;

		if (o->nsizes == MAX_SIZES || parse_size(tok, &x) || x > (1ull << 40))
			return -1;
		o->sizes[o->nsizes++] = x;
	}
	return o->nsizes ? 0 : -1;
}

static __attribute__((format(printf, 1, 2))) int bad_usage(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("vcma-simvm: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("\nTry 'vcma-simvm --help'.\n", stderr);
	va_end(ap);
	return EXIT_USAGE;
}

enum {
	OPT_REPORT = 256, OPT_PIN, OPT_PAUSE_DELAY, OPT_NO_PAUSE_ACK, OPT_EXIT_ON_PAUSE, OPT_EXIT_AFTER_PAUSES, OPT_COUNT,
	OPT_WRITE_RATE, OPT_NO_ONE_TRIP, OPT_NO_DIRTY_LOG, OPT_REFUSE_REMAPS, OPT_NO_REATTACH,
};

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },    { "name", required_argument, NULL, 'n' },
		{ "class", required_argument, NULL, 'c' },     { "ram", required_argument, NULL, 'r' },
		{ "vcpus", required_argument, NULL, 'p' },     { "workload", required_argument, NULL, 'w' },
		{ "alloc", required_argument, NULL, 'a' },     { "pool", required_argument, NULL, 'P' },
		{ "max-regions", required_argument, NULL, 'k' }, { "interval-ms", required_argument, NULL, 'i' },
		{ "duration", required_argument, NULL, 'd' },  { "seed", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },            { "help", no_argument, NULL, 'h' },
		{ "report", required_argument, NULL, OPT_REPORT }, { "pin", required_argument, NULL, OPT_PIN },
		{ "pause-delay-ms", required_argument, NULL, OPT_PAUSE_DELAY },
		{ "no-pause-ack", no_argument, NULL, OPT_NO_PAUSE_ACK },
		{ "exit-on-pause", no_argument, NULL, OPT_EXIT_ON_PAUSE },
		{ "exit-after-pauses", required_argument, NULL, OPT_EXIT_AFTER_PAUSES },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "write-rate", required_argument, NULL, OPT_WRITE_RATE },
		{ "no-one-trip", no_argument, NULL, OPT_NO_ONE_TRIP },
		{ "no-dirty-log", no_argument, NULL, OPT_NO_DIRTY_LOG },
		{ "refuse-remaps", required_argument, NULL, OPT_REFUSE_REMAPS },
		{ "no-reattach", no_argument, NULL, OPT_NO_REATTACH },
		{ NULL, 0, NULL, 0 },
	};
	const char *env = getenv("VCMA_SOCKET");
	bool seeded = false;
	int c;

	memset(o, 0, sizeof(*o));
	o->socket = env && *env ? env : VCMA_DEFAULT_SOCKET;
	o->ram = 64ull << 20;
	o->vcpus = 2;
	o->workload = WL_CHECKSUM;
	parse_sizes("1M,2M,4M,8M", o);
	o->max_regions = 4;
	o->duration = 5.0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":s:n:c:r:p:w:a:P:k:i:d:S:jh", lo, NULL)) != -1) {
		switch (c) {
		case 's': o->socket = optarg; break;
		case 'n':
			if (!name_ok(optarg, VCMA_SIM_NAME_LEN - 1, false))
				return bad_usage("--name: expected 1-31 characters of [A-Za-z0-9_.-]");
			o->name = optarg;
			break;
		case 'c':
			if (!name_ok(optarg, VCMA_SIM_NAME_LEN - 1, true))
				return bad_usage("--class: expected up to 31 characters of [A-Za-z0-9_.-]");
			o->devclass = optarg;
			break;
		case 'r':
			if (parse_size(optarg, &o->ram) || o->ram % PAGE)
				return bad_usage("--ram: expected a size such as 64M, a multiple of 4K");
			break;
		case 'p':
			if (parse_uint(optarg, 1, 1024, &o->vcpus))
				return bad_usage("--vcpus: expected 1..1024");
			break;
		case 'w':
			if (!strcmp(optarg, "checksum"))
				o->workload = WL_CHECKSUM;
			else if (!strcmp(optarg, "idle"))
				o->workload = WL_IDLE;
			else
				return bad_usage("--workload: expected checksum or idle");
			break;
		case 'a':
			if (parse_sizes(optarg, o))
				return bad_usage("--alloc: expected sizes such as 1M,2M,4M,8M (at most %d), or none",
						 MAX_SIZES);
			break;
		case 'P':
			if (!name_ok(optarg, VCMA_NAME_LEN - 1, false))
				return bad_usage("--pool: expected 1-15 characters of [A-Za-z0-9_.-]");
			o->pool = optarg;
			break;
		case 'k':
			if (parse_uint(optarg, 1, 4096, &o->max_regions))
				return bad_usage("--max-regions: expected 1..4096");
			break;
		case 'i':
			if (parse_uint(optarg, 0, 3600000, &o->interval_ms))
				return bad_usage("--interval-ms: expected 0..3600000");
			break;
		case 'd': {
			char *end;

			errno = 0;
			o->duration = strtod(optarg, &end);
			if (errno || end == optarg || *end || !isfinite(o->duration) || o->duration < 0 ||
			    o->duration > 1e7)
				return bad_usage("--duration: expected seconds, e.g. 5 or 0.5");
			break;
		}
		case 'S': {
			char *end;

			errno = 0;
			o->seed = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end || *optarg == '-')
				return bad_usage("--seed: expected an unsigned integer");
			seeded = true;
			break;
		}
		case 'j': o->json = true; break;
		case 'h': usage(stdout); return -1;
		case OPT_REPORT:
			if (parse_uint(optarg, 0, 100, &o->report_pct))
				return bad_usage("--report: expected a percentage 0..100 (at most 90 with --workload checksum)");
			break;
		case OPT_PIN:
			if (strcmp(optarg, "0") && (parse_size(optarg, &o->pin_bytes) || o->pin_bytes % PAGE))
				return bad_usage("--pin: expected a size such as 4M, a multiple of 4K");
			if (!strcmp(optarg, "0"))
				o->pin_bytes = 0;
			break;
		case OPT_PAUSE_DELAY:
			if (parse_uint(optarg, 0, 3600000, &o->pause_delay_ms))
				return bad_usage("--pause-delay-ms: expected 0..3600000");
			break;
		case OPT_COUNT:
			if (parse_uint(optarg, 1, UINT32_MAX, &o->count))
				return bad_usage("--count: expected 1 or more");
			break;
		case OPT_WRITE_RATE:
			if (parse_uint(optarg, 0, WRITE_RATE_MAX, &o->write_rate))
				return bad_usage("--write-rate: expected page writes per second per vCPU, 0..%u (0 = unpaced)",
						 WRITE_RATE_MAX);
			break;
		case OPT_NO_ONE_TRIP: o->no_one_trip = true; break;
		case OPT_NO_DIRTY_LOG: o->no_dirty_log = true; break;
		case OPT_NO_REATTACH: o->no_reattach = true; break;
		case OPT_REFUSE_REMAPS:
			if (parse_uint(optarg, 1, UINT32_MAX, &o->refuse_remaps))
				return bad_usage("--refuse-remaps: expected 1 or more");
			break;
		case OPT_NO_PAUSE_ACK: o->no_pause_ack = true; break;
		case OPT_EXIT_ON_PAUSE: o->exit_after_pauses = 1; break;
		case OPT_EXIT_AFTER_PAUSES:
			if (parse_uint(optarg, 1, UINT32_MAX, &o->exit_after_pauses))
				return bad_usage("--exit-after-pauses: expected 1 or more");
			break;
		case ':':
			if (optopt > 0 && optopt < 256)
				return bad_usage("option '-%c' needs an argument", optopt);
			return bad_usage("option '%s' needs an argument", argv[optind - 1]);
		default:
			if (optopt)
				return bad_usage("unknown option '-%c'", optopt);
			return bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (!o->name)
		return bad_usage("--name is required");
	if (o->workload == WL_CHECKSUM && o->report_pct > 90)
		return bad_usage("--report: at most 90 with --workload checksum (its vCPUs need pages in use); "
				 "up to 100 with --workload idle");
	if (o->workload == WL_CHECKSUM && o->vcpus > o->ram / PAGE)
		return bad_usage("--vcpus: more vCPUs than RAM pages");
	if (o->pin_bytes > o->ram)
		return bad_usage("--pin: more than the RAM (--ram)");
	if (!seeded)
		o->seed = mix64(now_ns() ^ ((uint64_t)getpid() << 32));
	return 0;
}

/* ---- main ---- */

/* the lower parts' upward calls (simvm-vm.h) */
static const struct vm_up_ops up_ops = {
	.rings_dead = reattach_rings_dead,
	.cut_off = reattach_cut_off,
	.reattach = vmm_reattach,
	.regions_back = vm_regions_back,
	.report_again_idle = vm_report_again_idle,
};

int main(int argc, char **argv)
{
	struct opts o;
	struct vm vm;
	struct sigaction sa;
	const char *why = NULL;
	struct totals t;
	bool chan = false;
	int fds[4], rc, ret;

	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc < 0 ? EXIT_OK : rc;

	memset(&vm, 0, sizeof(vm));
	memset(&t, 0, sizeof(t));
	vm.o = &o;
	vm.up = &up_ops;
	vm.sock = vm.machine_fd = vm.wake_fd = vm.irq_fd = -1;
	vm.st = calloc(MAX_SIZES, sizeof(*vm.st));
	rc = vm.st ? vmm_channel_init(&vm) : -ENOMEM;
	if (rc) {
		msg("cannot start: %s", strerror(-rc));
		free(vm.st);
		return EXIT_FAIL;
	}
	rc = pthread_mutex_init(&vm.held_lock, NULL);
	if (!rc && (rc = pthread_mutex_init(&vm.reattach_lock, NULL)))
		pthread_mutex_destroy(&vm.held_lock);
	if (!rc && (rc = pthread_cond_init(&vm.ring_cond, NULL))) {
		pthread_mutex_destroy(&vm.reattach_lock);
		pthread_mutex_destroy(&vm.held_lock);
	}
	if (rc) {
		msg("cannot start: %s", strerror(rc));
		vmm_channel_fini(&vm);
		free(vm.st);
		return EXIT_FAIL;
	}
	chan = true;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* what this VMM can do beyond pause/remap/resume, said at attach */
	vm.flags = o.no_one_trip ? 0 : VCMA_SIM_F_ONE_TRIP;
	if (!o.no_reattach)
		vm.flags |= VCMA_SIM_F_REATTACH;
	if (!o.no_dirty_log) {
		char dwhy[256];

		/* guest RAM is mapped only after the attach: probe on the same kind of memory */
		if (dlog_probe(dwhy, sizeof(dwhy)))
			msg("dirty logging unavailable: %s; vcmad will vacate this VM by pausing it", dwhy);
		else
			vm.flags |= VCMA_SIM_F_DIRTY_LOG;
	}

	/* attach: the VMM side first, then the guest part on the ring fds */
	rc = vmm_handshake(&vm, fds, &why);
	if (rc == -EINVAL && (vm.flags & VCMA_SIM_F_REATTACH)) {
		/* as libvcma does: a vcmad older than restart support refuses the flag */
		msg("vcmad refused the attach as INVALID: once more without REATTACH (a vcmad that cannot keep VMs "
		    "across a restart?)");
		close(vm.sock);
		vm.sock = -1;
		vm.flags &= ~VCMA_SIM_F_REATTACH;
		rc = vmm_handshake(&vm, fds, &why);
	}
	if (!rc) {
		vm.machine_fd = fds[3];
		if (vm.flags & VCMA_SIM_F_REATTACH)
			rc = reattach_read_token(&vm, &why);
	}
	if (!rc)
		rc = recv_p2m(&vm, &why);
	if (!rc) {
		struct stat st;

		why = "machine memory";
		if (fstat(vm.machine_fd, &st)) {
			rc = -errno;
		} else if ((uint64_t)st.st_size != vm.machine_bytes) {
			rc = -EIO;
		} else {
			/* a reattach must bring the same file: these mappings stay */
			vm.machine_dev = st.st_dev;
			vm.machine_ino = st.st_ino;
		}
	}
	if (!rc)
		rc = map_ram(&vm, &why);
	if (!rc && (vm.flags & VCMA_SIM_F_DIRTY_LOG)) {
		char dwhy[256];
		int drc = dlog_open(&vm.dlog, vm.base, vm.ram_frames, dwhy, sizeof(dwhy));

		/* too late to take the flag back: TRACK is refused, and vcmad stops asking */
		if (drc)
			msg("dirty logging unavailable on guest RAM: %s; TRACK will be refused and vcmad will vacate "
			    "this VM by pausing it", dwhy);
	}
	if (!rc) {
		/* the VMM keeps its own view of the device: the control page and the irq */
		why = "mapping the ring's control page";
		vm.irq_fd = fcntl(fds[2], F_DUPFD_CLOEXEC, 0);
		if (vm.irq_fd < 0) {
			rc = -errno;
		} else if (vm.shm_size < VCMA_PROTO_PAGE) {
			rc = -EIO;
		} else {
			void *p = mmap(NULL, VCMA_PROTO_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);

			if (p == MAP_FAILED)
				rc = -errno;
			else
				vm.ctrl = p;
		}
	}
	if (!rc) {
		why = "libvcma attach on the ring";
		rc = vcma_attach_fds(fds[0], (size_t)vm.shm_size, fds[1], fds[2], &vm.v);
		fds[0] = fds[1] = fds[2] = -1; /* libvcma owns them now, even on failure */
		if (!rc && vcma_guest_id(vm.v) != vm.guest_id) {
			why = "guest id of the ring differs from the attach response";
			rc = -EIO;
		}
	} else {
		close_fds(fds, 3);
	}
	if (rc) {
		msg("cannot attach to vcmad at %s: %s: %s", o.socket, why, strerror(-rc));
		ret = EXIT_ATTACH;
		goto out;
	}
	vcma_set_mapper(vm.v, vm_map, vm_unmap, &vm);
	vm.held = calloc(o.max_regions, sizeof(*vm.held));
	vm.wake_fd = eventfd(0, EFD_CLOEXEC);
	rc = !vm.held ? ENOMEM : vm.wake_fd < 0 ? errno : 0;
	/* the vCPUs' slices of RAM, and the pages they start with reported (none sent yet);
	 * the idle workload has one slice without a thread if it reports */
	vm.nslices = o.workload == WL_CHECKSUM ? o.vcpus : o.report_pct ? 1 : 0;
	if (!rc && vm.nslices) {
		vm.vcpu = calloc(vm.nslices, sizeof(*vm.vcpu));
		if (!vm.vcpu)
			rc = ENOMEM;
		for (unsigned int i = 0; !rc && i < vm.nslices; i++) {
			rc = -slice_init(&vm, &vm.vcpu[i], i, vm.nslices);
			if (!rc)
				slice_pick_reported(&vm.vcpu[i]);
		}
	}
	if (!rc)
		rc = pthread_create(&vm.vmm_thr, NULL, vmm_main, &vm);
	if (rc) {
		msg("cannot start: %s", strerror(rc));
		ret = EXIT_FAIL;
		goto out;
	}
	vm.vmm_started = true;
	if (vm.have_token) {
		rc = reattach_ring_start(&vm);
		if (rc) {
			msg("cannot start: %s", strerror(-rc));
			ret = EXIT_FAIL;
			goto out;
		}
	}
	for (unsigned int i = 0; i < o.nsizes; i++)
		vm.st[i].bytes = o.sizes[i];

	/* pin first: pinned pages must leave lendable frames before the guest uses them */
	if (o.pin_bytes) {
		rc = vmm_pin(&vm, o.pin_bytes / PAGE);
		if (rc) {
			char buf[32];

			msg("cannot pin the first %s of RAM: %s%s", fmt_size(o.pin_bytes, buf),
			    rc > 0 ? "vcmad answered " : "", strerror(rc > 0 ? rc : -rc));
			ret = EXIT_FAIL;
			goto out;
		}
	}
	/* free page reporting: what the vCPUs start without */
	if (o.report_pct) {
		uint64_t n = 0, *gfns;

		for (unsigned int i = 0; i < vm.nslices; i++)
			n += vm.vcpu[i].nrep;
		gfns = malloc((n ? n : 1) * sizeof(*gfns));
		if (!gfns) {
			msg("out of memory");
			ret = EXIT_FAIL;
			goto out;
		}
		n = 0;
		for (unsigned int i = 0; i < vm.nslices; i++) {
			struct vcpu *c = &vm.vcpu[i];
			uint64_t from = n;

			/* a reattach from here on sends them again (report_again) */
			c->reported_epoch = atomic_load(&vm.host_epoch);
			for (uint32_t j = 0; j < c->nrep; j++)
				gfns[n++] = c->first + c->rep[j];
			qsort(gfns + from, n - from, sizeof(*gfns), cmp_u64); /* slices ascend: all sorted */
		}
		rc = vmm_send_gfns(&vm, VCMA_SIM_MSG_REPORT, 0, gfns, n);
		free(gfns);
		if (rc < 0 && vmm_lost_err(&vm, rc))
			rc = 0; /* vcmad is away: REPORTed again once it is back */
		if (rc < 0) {
			msg("cannot send the initial REPORT: %s", strerror(-rc));
			ret = EXIT_FAIL;
			goto out;
		}
		atomic_store(&vm.reports_init, (uint64_t)rc);
	}

	/* vCPUs */
	vm.start_ns = now_ns();
	for (unsigned int i = 0; o.workload == WL_CHECKSUM && i < vm.nslices; i++) {
		struct vcpu *c = &vm.vcpu[i];

		vmm_vcpu_enter(&vm); /* counted before it can run: a pause waits for it */
		if (pthread_create(&c->thr, NULL, vcpu_main, c)) {
			vmm_vcpu_leave(&vm);
			msg("cannot start vCPU %u", i);
			atomic_store(&vm.stop, true);
			vm.errors++;
			break;
		}
		c->started = true;
	}

	drive(&vm, vm.start_ns + (uint64_t)(o.duration * 1e9));

	/* stop: vCPUs make their final pass, then every region is checked and freed */
	atomic_store(&vm.stop, true);
	t.reports = atomic_load(&vm.reports_init);
	for (unsigned int i = 0; i < vm.nslices; i++) {
		struct vcpu *c = &vm.vcpu[i];

		if (c->started)
			pthread_join(c->thr, NULL);
		t.written += c->written;
		t.verified += c->verified;
		t.corrupt += c->corrupt;
		t.reported_pages += c->nrep + c->nreusing;
		t.reports += c->reports;
		t.reuses += c->reuses;
		t.reused_pages += c->reused_pages;
	}
	if (atomic_load(&vm.vcpu_errors))
		vm.errors++;
	/* the run ended while vcmad was away: free the regions on the ring it comes back
	 * with (the VMM thread gives up by itself when the grace period is over) */
	if (vmm_ring_stale(&vm) && !atomic_load(&vm.host_gone)) {
		msg("the run is over while vcmad is away: waiting for the reattach before freeing the regions");
		wait_while_away(&vm, true);
	}
	vm.held_at_end = held_count(&vm);
	if (atomic_load(&vm.host_gone)) {
		vm.errors++;
		pthread_mutex_lock(&vm.held_lock);
		for (unsigned int i = 0; i < vm.nheld; i++)
			vm.rec[vm.held[i].rec].free_ns = now_ns();
		vm.nheld = 0;
		pthread_mutex_unlock(&vm.held_lock);
		vcma_set_timeout(vm.v, 1); /* nobody will answer the frees in detach */
	}
	for (unsigned int n; (n = held_count(&vm));)
		do_free(&vm, n - 1);
	vm.end_ns = now_ns();
	for (unsigned int i = 0; i < o.nsizes; i++)
		t.pattern += vm.st[i].pattern_errors;
	vmm_summary(&vm, &t.vs);
	vm.errors += atomic_load(&vm.reattach_errors);

	if (o.json)
		print_json(&vm, &t);
	else
		print_text(&vm, &t);
	fflush(stdout);
	if (got_signal)
		msg("stopped by signal %d", (int)got_signal);
	ret = t.corrupt || t.pattern || vm.errors ? EXIT_FAIL : EXIT_OK;
	if (t.corrupt || t.pattern)
		msg("FAILED: %" PRIu64 " corrupt page(s), %" PRIu64 " pattern error(s)", t.corrupt, t.pattern);
	else if (atomic_load(&vm.reattach_failed))
		ret = EXIT_ATTACH; /* the VM's memory is gone with vcmad's restart */
out:
	atomic_store(&vm.stop, true);
	reattach_ring_stop(&vm); /* no new ring for the guest part from here on */
	vcma_detach(vm.v); /* unmaps and frees whatever is left */
	if (vm.vmm_started) {
		uint64_t one = 1;

		if (write(vm.wake_fd, &one, sizeof(one)) != sizeof(one))
			msg("cannot wake the VMM thread: %s", strerror(errno));
		pthread_join(vm.vmm_thr, NULL);
	}
	dlog_close(vm.dlog);
	for (unsigned int i = 0; vm.vcpu && i < vm.nslices; i++)
		slice_free(&vm.vcpu[i]);
	free(vm.vcpu);
	if (vm.base)
		munmap(vm.base, vm.span);
	if (vm.machine_fd >= 0)
		close(vm.machine_fd);
	if (vm.wake_fd >= 0)
		close(vm.wake_fd);
	if (vm.irq_fd >= 0)
		close(vm.irq_fd);
	if (vm.ctrl)
		munmap(vm.ctrl, VCMA_PROTO_PAGE);
	if (vm.sock >= 0)
		close(vm.sock); /* the VM detaches: vcmad reclaims its RAM */
	free(vm.runs);
	free(vm.p2m);
	free(vm.held);
	free(vm.rec);
	free(vm.st);
	if (chan) {
		pthread_cond_destroy(&vm.ring_cond);
		pthread_mutex_destroy(&vm.reattach_lock);
		pthread_mutex_destroy(&vm.held_lock);
		vmm_channel_fini(&vm);
	}
	return ret;
}
