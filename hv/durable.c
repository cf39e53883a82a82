// SPDX-License-Identifier: MIT
/*
 * durable.c - the daemon's ownership recorded in the store, one transaction per loop
 * turn, answers to allocations held until it commits (durable.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "durable.h"
#include "log.h"
#include "store/store.h"
#include "vcmad.h"

#define CHUNK VCMAD_DURABLE_CHUNK
#define WORD_BITS 64u

struct vcmad_held_answer {
	void *rq; /* NULL: dropped */
	uint64_t tag;
	struct vcma_region r;
	vcmad_durable_answer_fn fn;
};

static struct vcma_store *store_of(const struct vcmad *d)
{
	return d->durable.store;
}

bool vcmad_durable_on(const struct vcmad *d)
{
	return store_of(d) != NULL;
}

static uint64_t durable_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A put or del failed inside the turn: the turn will not commit (the store says why
 * once, at the commit). */
static void turn_failed(struct vcmad *d, int rc)
{
	if (rc && rc != -ENOENT)
		d->durable.turn_failed = true;
}

/* ---- what each piece of state looks like on disk ---- */

static int put_pool(struct vcmad *d, const struct vcma_pool *p)
{
	struct vcma_store_pool sp = { .id = p->index, .base_mfn = p->fm.base, .frames = p->fm.nframes };

	snprintf(sp.name, sizeof(sp.name), "%s", p->cfg.name);
	return vcma_store_put_pool(store_of(d), &sp);
}

static int put_guest(struct vcmad *d, const struct vcmad_durable_guest *g)
{
	struct vcma_store_guest sg = { .id = g->id, .sim_uid = g->uid, .qemu_pid = g->pid,
				       .qemu_start_time = g->start_time, .xen_domid = g->domid };

	memcpy(sg.sim_token, g->token, sizeof(sg.sim_token));
	snprintf(sg.name, sizeof(sg.name), "%s", g->name);
	snprintf(sg.class_name, sizeof(sg.class_name), "%s", g->class_name);
	sg.link = g->link == VCMAD_GUEST_QEMU  ? VCMA_STORE_LINK_QEMU
		  : g->link == VCMAD_GUEST_XEN ? VCMA_STORE_LINK_XEN
					       : VCMA_STORE_LINK_SIM;
	return vcma_store_put_guest(store_of(d), &sg);
}

static int put_region(struct vcmad *d, const struct vcma_region *r)
{
	struct vcma_store_region sr = { .handle = r->handle, .guest = r->guest, .pool = r->pool,
					.first_mfn = r->mfn, .frames = r->nframes, .flags = r->flags };

	return vcma_store_put_region(store_of(d), &sr);
}

static bool rec_test(const uint64_t *bm, uint64_t i)
{
	return bm[i / WORD_BITS] >> (i % WORD_BITS) & 1u;
}

static void rec_put(uint64_t *bm, uint64_t i, bool v)
{
	if (v)
		bm[i / WORD_BITS] |= 1ull << (i % WORD_BITS);
	else
		bm[i / WORD_BITS] &= ~(1ull << (i % WORD_BITS));
}

/* Rewrite chunk c of vm's p2m: its old runs go, the runs it has now are put. */
static int write_chunk(struct vcmad *d, struct vcmad_durable_vm *vm, uint64_t c)
{
	uint64_t lo = c * CHUNK, hi = lo + CHUNK < vm->frames ? lo + CHUNK : vm->frames;
	int rc = 0;

	for (uint64_t g = lo; g < hi && !rc; g++)
		if (rec_test(vm->rec, g)) {
			rc = vcma_store_del_p2m(store_of(d), vm->id, g);
			rec_put(vm->rec, g, false);
		}
	for (uint64_t g = lo, e; g < hi && !rc; g = e) {
		struct vcma_store_p2m m = { .vm = vm->id, .first_gfn = g, .mfn = vm->p2m[g] };

		for (e = g + 1; e < hi && vm->p2m[e] == vm->p2m[e - 1] + 1; e++)
			;
		m.count = e - g;
		rc = vcma_store_put_p2m(store_of(d), &m);
		rec_put(vm->rec, g, true);
	}
	return rc;
}

static uint64_t nchunks(const struct vcmad_durable_vm *vm)
{
	return (vm->frames + CHUNK - 1) / CHUNK;
}

static int vm_bitmaps(struct vcmad_durable_vm *vm)
{
	if (vm->rec)
		return 0;
	vm->rec = calloc((vm->frames + WORD_BITS - 1) / WORD_BITS, sizeof(uint64_t));
	vm->dirty = calloc((nchunks(vm) + WORD_BITS - 1) / WORD_BITS, sizeof(uint64_t));
	return vm->rec && vm->dirty ? 0 : -ENOMEM;
}

/* ---- the whole state, anew (a fresh store, or after a turn that failed) ---- */

static int write_all(struct vcmad *d)
{
	uint32_t cursor = 0;
	const struct vcma_region *r;
	int rc = vcma_store_clear(store_of(d));

	for (uint32_t i = 0; i < d->core.npools && !rc; i++)
		rc = put_pool(d, d->core.pool[i]);
	for (uint32_t i = 0; d->durable.guests && i < d->conf.max_guests && !rc; i++)
		if (d->durable.guests[i].used)
			rc = put_guest(d, &d->durable.guests[i]);
	while (!rc && (r = vcma_regions_next(&d->core.regions, &cursor)))
		rc = put_region(d, r);
	for (struct vcmad_durable_vm *vm = d->durable.vms; vm && !rc; vm = vm->next) {
		rc = vm_bitmaps(vm);
		if (rc)
			break;
		memset(vm->rec, 0, (vm->frames + WORD_BITS - 1) / WORD_BITS * sizeof(uint64_t));
		for (uint64_t c = 0; c < nchunks(vm) && !rc; c++)
			rc = write_chunk(d, vm, c);
		memset(vm->dirty, 0, (nchunks(vm) + WORD_BITS - 1) / WORD_BITS * sizeof(uint64_t));
		vm->queued = false;
	}
	d->durable.dirty_vms = NULL;
	return rc;
}

/* ---- open ---- */

struct prev_counts {
	uint64_t guests, regions, p2m, lenders;
};

static int prev_guest(void *ctx, const struct vcma_store_guest *g)
{
	((struct prev_counts *)ctx)->guests++;
	return 0;
}

static int prev_region(void *ctx, const struct vcma_store_region *r)
{
	((struct prev_counts *)ctx)->regions++;
	return 0;
}

static int prev_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	((struct prev_counts *)ctx)->p2m++;
	return 0;
}

static int prev_lender(void *ctx, const struct vcma_store_lender *l)
{
	((struct prev_counts *)ctx)->lenders++;
	return 0;
}

static void store_warn(void *ctx, const char *msg)
{
	log_warn("state: %s", msg);
}

/* A previous run's ownership that cannot be taken back (its machine memory is gone):
 * kept aside, whole, for the operator (and vcmactl state verify); vcmad starts afresh. */
static int set_aside(struct vcmad *d, const struct prev_counts *pc)
{
	char from[320], to[320];
	struct vcma_store_info info;

	vcma_store_info(store_of(d), &info);
	vcma_store_close(d->durable.store);
	d->durable.store = NULL;
	/* a new store counts its transactions from 1 again: earlier runs' copies may have
	 * the same number, and none of them is overwritten */
	for (unsigned int n = 0;; n++) {
		if (n)
			snprintf(to, sizeof(to), "%s/previous-%llu.%u", d->durable.dir, (unsigned long long)info.last_txn, n);
		else
			snprintf(to, sizeof(to), "%s/previous-%llu", d->durable.dir, (unsigned long long)info.last_txn);
		if (!mkdir(to, 0700))
			break;
		if (errno != EEXIST || n == 9999) {
			log_err("state: cannot make %s: %s", to, strerror(errno));
			return errno == EEXIST ? -EEXIST : -errno;
		}
	}
	snprintf(from, sizeof(from), "%s/data.mdb", d->durable.dir);
	snprintf(to + strlen(to), sizeof(to) - strlen(to), "/data.mdb");
	if (rename(from, to)) {
		log_err("state: cannot move %s to %s: %s", from, to, strerror(errno));
		return -errno;
	}
	log_warn("state: %s held a previous run's ownership (transaction %llu: %llu guest(s), %llu region(s), %llu "
		 "p2m run(s), %llu lender(s)), but the machine memory it describes was not kept (the host restarted, "
		 "or this backend's memory does not outlive vcmad): kept as %s, and vcmad starts afresh", from, (unsigned long long)info.last_txn, (unsigned long long)pc->guests,
		 (unsigned long long)pc->regions, (unsigned long long)pc->p2m, (unsigned long long)pc->lenders, to);
	return 0;
}

/* One vcmad per state directory: a second one would take the first one's records for
 * a previous run's. */
static int lock_dir(struct vcmad *d)
{
	char path[300], pid[32];
	int fd;

	fd = vcmad_mkdir_p(d->durable.dir, 0700);
	if (fd) {
		log_err("state: cannot make the state directory %s: %s", d->durable.dir, strerror(-fd));
		return fd;
	}
	snprintf(path, sizeof(path), "%s/vcmad.lock", d->durable.dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_err("state: cannot open %s: %s", path, strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int e = errno;
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);

		pid[n > 0 ? n : 0] = 0;
		log_err("state: %s is in use by another vcmad%s%s (%s); give each vcmad its own state_dir", d->durable.dir,
			pid[0] ? ", pid " : "", pid, strerror(e));
		close(fd);
		return -EBUSY;
	}
	snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) || pwrite(fd, pid, strlen(pid), 0) < 0)
		log_warn("state: cannot write %s: %s", path, strerror(errno));
	d->durable.lock_fd = fd;
	d->durable.locked = true;
	return 0;
}

static int open_store(struct vcmad *d)
{
	struct vcma_store_options opt = { .warn = store_warn };
	char err[512];
	int rc;

	rc = vcma_store_open(&d->durable.store, d->durable.dir, &opt, err, sizeof(err));
	if (rc) {
		d->durable.store = NULL;
		log_err("state: %s", err);
		return rc;
	}
	return 0;
}

int vcmad_durable_open(struct vcmad *d)
{
	static const struct vcma_store_replay_ops count_ops = {
		.guest = prev_guest, .region = prev_region, .p2m = prev_p2m, .lender = prev_lender,
	};
	struct prev_counts pc = { 0 };
	int rc;

	vcmad_conf_state_dir(&d->conf, d->durable.dir, sizeof(d->durable.dir));
	if (!d->durable.dir[0])
		return 0;
	d->durable.guests = calloc(d->conf.max_guests, sizeof(*d->durable.guests));
	if (!d->durable.guests)
		return -ENOMEM;
	rc = lock_dir(d);
	if (!rc)
		rc = open_store(d);
	if (rc)
		return rc;
	rc = vcma_store_replay(store_of(d), &count_ops, &pc);
	if (rc) {
		log_err("state: %s", vcma_store_error(store_of(d)));
		vcmad_durable_close(d);
		return rc < 0 ? rc : -EIO;
	}
	if ((pc.guests || pc.regions || pc.p2m || pc.lenders) && d->be.mem_reopened) {
		/* restore.c takes it back, then calls vcmad_durable_restored() */
		d->durable.previous = true;
		log_info("state: %s holds a previous run's ownership (%llu guest(s), %llu region(s), %llu p2m run(s)) "
			 "and its machine memory was kept: taking it back", vcma_store_path(store_of(d)),
			 (unsigned long long)pc.guests, (unsigned long long)pc.regions, (unsigned long long)pc.p2m);
		return 0;
	}
	if (pc.guests || pc.regions || pc.p2m || pc.lenders) {
		rc = set_aside(d, &pc);
		if (!rc)
			rc = open_store(d);
		if (rc)
			return rc;
	}
	if (d->be.mem_reopened) {
		/* nothing in it is anyone's any more */
		rc = d->be.type->mem->zero(&d->be, 0, d->be.machine_bytes >> VCMA_PAGE_SHIFT);
		if (rc)
			log_warn("state: cannot zero the kept machine memory: %s", strerror(-rc));
	}
	return vcmad_durable_restored(d);
}

int vcmad_durable_restored(struct vcmad *d)
{
	int rc;

	d->durable.previous = false;
	rc = write_all(d);
	vcma_store_set_handle_floor(store_of(d), (uint64_t)d->core.regions.max_gen + 1);
	if (!rc)
		rc = vcma_store_commit(store_of(d));
	if (rc) {
		log_err("state: %s", vcma_store_error(store_of(d)));
		vcmad_durable_close(d);
		return rc;
	}
	log_info("state: recording ownership in %s", vcma_store_path(store_of(d)));
	return 0;
}

void vcmad_durable_close(struct vcmad *d)
{
	if (!store_of(d)) {
		if (d->durable.locked)
			close(d->durable.lock_fd);
		d->durable.locked = false;
		free(d->durable.guests);
		d->durable.guests = NULL;
		return;
	}
	/* what the last turn changed is committed by its turn_end; nothing is open here
	 * but changes made while closing (guests leaving), committed now */
	if (vcma_store_in_turn(store_of(d)) && !d->durable.stale && vcma_store_commit(store_of(d)))
		log_warn("state: %s", vcma_store_error(store_of(d)));
	vcma_store_close(d->durable.store);
	d->durable.store = NULL;
	free(d->durable.held);
	d->durable.held = NULL;
	d->durable.nheld = d->durable.held_cap = 0;
	free(d->durable.guests);
	d->durable.guests = NULL;
	if (d->durable.locked)
		close(d->durable.lock_fd);
	d->durable.locked = false;
}

/* ---- changes ---- */

int vcmad_durable_may_grant(struct vcmad *d)
{
	return store_of(d) && d->durable.stale ? -ENOSPC : 0;
}

int vcmad_durable_region_new(struct vcmad *d, const struct vcma_region *r)
{
	int rc;

	if (!store_of(d) || d->durable.stale)
		return 0; /* stale: turn_end writes it all anew */
	rc = put_region(d, r);
	turn_failed(d, rc);
	return rc == -ENOSPC ? rc : 0; /* a full map fails this turn; other failures show at commit */
}

void vcmad_durable_region_gone(struct vcmad *d, uint64_t handle)
{
	if (store_of(d) && !d->durable.stale)
		turn_failed(d, vcma_store_del_region(store_of(d), handle));
}

void vcmad_durable_guest_new(struct vcmad *d, const struct vcmad_durable_guest *g)
{
	if (!store_of(d))
		return;
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (!d->durable.guests[i].used) {
			d->durable.guests[i] = *g;
			d->durable.guests[i].used = true;
			break;
		}
	if (!d->durable.stale)
		turn_failed(d, put_guest(d, g));
}

void vcmad_durable_guest_gone(struct vcmad *d, uint32_t id)
{
	if (!store_of(d))
		return;
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->durable.guests[i].used && d->durable.guests[i].id == id)
			d->durable.guests[i].used = false;
	if (!d->durable.stale)
		turn_failed(d, vcma_store_del_guest(store_of(d), id));
}

uint64_t vcmad_proc_start_time(uint32_t pid)
{
	char path[64], buf[1024], *p;
	uint64_t t = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	/* after ") ": field 3 (state) ... field 22 (starttime) */
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (p)
		t = strtoull(p + 1, NULL, 10);
	return t;
}

/* The recorded copy of guest id, or NULL (not recorded, or the store is off). */
static struct vcmad_durable_guest *recorded_guest(struct vcmad *d, uint32_t id)
{
	if (!store_of(d))
		return NULL;
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->durable.guests[i].used && d->durable.guests[i].id == id)
			return &d->durable.guests[i];
	return NULL;
}

void vcmad_durable_guest_identity(struct vcmad *d, uint32_t id, uint32_t pid, uint32_t domid)
{
	struct vcmad_durable_guest *g = recorded_guest(d, id);

	if (!g)
		return;
	g->pid = pid;
	g->start_time = pid ? vcmad_proc_start_time(pid) : 0;
	g->domid = domid;
	if (!d->durable.stale)
		turn_failed(d, put_guest(d, g));
}

void vcmad_durable_guest_token(struct vcmad *d, uint32_t id, const uint8_t token[16])
{
	struct vcmad_durable_guest *g = recorded_guest(d, id);

	if (!g)
		return;
	memcpy(g->token, token, sizeof(g->token));
	if (!d->durable.stale)
		turn_failed(d, put_guest(d, g));
}

static void verify_violation(void *ctx, const char *msg)
{
	log_err("state: %s: %s", (const char *)ctx, msg);
}

int vcmad_durable_verify(struct vcmad *d)
{
	struct vcma_store_counts c;

	return vcma_store_verify(store_of(d), &c, verify_violation, (void *)vcma_store_path(store_of(d)));
}

int vcmad_durable_replay(struct vcmad *d, const struct vcma_store_replay_ops *ops, void *ctx)
{
	int rc = vcma_store_replay(store_of(d), ops, ctx);

	if (rc < 0)
		log_err("state: %s", vcma_store_error(store_of(d)));
	return rc;
}

void vcmad_durable_vm_new(struct vcmad *d, struct vcmad_durable_vm *dv, uint32_t id, uint64_t frames,
			  const uint64_t *p2m)
{
	*dv = (struct vcmad_durable_vm){ .d = d, .id = id, .frames = frames, .p2m = p2m };
	if (!store_of(d))
		return;
	dv->registered = true;
	dv->next = d->durable.vms;
	d->durable.vms = dv;
	vcmad_durable_p2m(dv, 0, frames);
}

void vcmad_durable_p2m(struct vcmad_durable_vm *vm, uint64_t gfn, uint64_t n)
{
	struct vcmad *d = vm->d;

	if (!vm->registered || !store_of(d) || !n || gfn >= vm->frames)
		return;
	if (vm_bitmaps(vm)) {
		turn_failed(d, -ENOMEM);
		return;
	}
	if (n > vm->frames - gfn)
		n = vm->frames - gfn;
	for (uint64_t c = gfn / CHUNK; c <= (gfn + n - 1) / CHUNK; c++)
		rec_put(vm->dirty, c, true);
	if (!vm->queued) {
		vm->queued = true;
		vm->next_dirty = d->durable.dirty_vms;
		d->durable.dirty_vms = vm;
	}
}

static void unlink_vm(struct vcmad_durable_vm **head, struct vcmad_durable_vm *vm, bool dirty_list)
{
	for (struct vcmad_durable_vm **pp = head; *pp; pp = dirty_list ? &(*pp)->next_dirty : &(*pp)->next)
		if (*pp == vm) {
			*pp = dirty_list ? vm->next_dirty : vm->next;
			return;
		}
}

void vcmad_durable_vm_gone(struct vcmad_durable_vm *vm, bool keep)
{
	struct vcmad *d = vm->d;

	if (!vm->registered)
		return;
	if (vm->queued)
		unlink_vm(&d->durable.dirty_vms, vm, true);
	unlink_vm(&d->durable.vms, vm, false);
	vm->queued = vm->registered = false;
	if (!keep && store_of(d) && !d->durable.stale && vm->rec)
		for (uint64_t g = 0; g < vm->frames; g++)
			if (rec_test(vm->rec, g))
				turn_failed(d, vcma_store_del_p2m(store_of(d), vm->id, g));
	free(vm->rec);
	free(vm->dirty);
	vm->rec = vm->dirty = NULL;
}

/* ---- held answers ---- */

bool vcmad_durable_hold(struct vcmad *d, void *rq, uint64_t tag, const struct vcma_region *r,
			vcmad_durable_answer_fn fn)
{
	struct vcmad_durable *du = &d->durable;

	if (!store_of(d))
		return false;
	if (du->nheld == du->held_cap) {
		size_t cap = du->held_cap ? du->held_cap * 2 : 16;
		struct vcmad_held_answer *n = realloc(du->held, cap * sizeof(*n));

		if (!n) {
			/* cannot wait for the commit: commit now, for this one */
			vcmad_durable_turn_end(d);
			return false;
		}
		du->held = n;
		du->held_cap = cap;
	}
	du->held[du->nheld++] = (struct vcmad_held_answer){ rq, tag, *r, fn };
	du->held_total++;
	return true;
}

void vcmad_durable_forget(struct vcmad *d, const void *rq)
{
	struct vcmad_durable *du = &d->durable;

	for (size_t i = 0; i < du->nheld; i++)
		if (du->held[i].rq == rq)
			du->held[i].rq = NULL;
}

void vcmad_durable_drop(struct vcmad *d, const void *rq, uint64_t tag)
{
	struct vcmad_durable *du = &d->durable;

	for (size_t i = 0; i < du->nheld; i++)
		if (du->held[i].rq == rq && du->held[i].tag == tag) {
			struct vcmad_held_answer h = du->held[i];

			du->held[i].rq = NULL;
			h.fn(h.rq, h.tag, &h.r, -ECANCELED);
		}
}

/* ---- the turn's end ---- */

static int write_dirty(struct vcmad *d)
{
	int rc = 0;

	while (d->durable.dirty_vms) {
		struct vcmad_durable_vm *vm = d->durable.dirty_vms;

		d->durable.dirty_vms = vm->next_dirty;
		vm->queued = false;
		for (uint64_t c = 0; c < nchunks(vm); c++)
			if (rec_test(vm->dirty, c)) {
				rec_put(vm->dirty, c, false);
				if (!rc)
					rc = write_chunk(d, vm, c);
			}
	}
	return rc;
}

static void answer_held(struct vcmad *d, bool ok)
{
	struct vcmad_durable *du = &d->durable;
	struct vcmad_held_answer *list = du->held;
	size_t n = du->nheld, cap = du->held_cap;

	/* answers may start new work (and hold more): take the list first */
	du->held = NULL;
	du->nheld = du->held_cap = 0;
	for (size_t i = 0; i < n; i++) {
		struct vcmad_held_answer h = list[i];

		if (!h.rq)
			continue; /* its requester left; its regions went with it */
		if (!ok)
			du->refused++;
		h.fn(h.rq, h.tag, &h.r, ok ? 0 : -ENOSPC);
	}
	if (!du->held) {
		du->held = list; /* keep the room for the next turn */
		du->held_cap = cap;
	} else {
		free(list);
	}
}

void vcmad_durable_turn_end(struct vcmad *d)
{
	struct vcmad_durable *du = &d->durable;
	uint64_t t0;
	int rc;

	if (!store_of(d) || (!du->stale && !du->nheld && !du->dirty_vms && !vcma_store_in_turn(store_of(d))))
		return;
	t0 = durable_now_ns();
	if (du->stale) {
		/* a turn failed: nothing is recorded piecemeal until the whole state is */
		vcma_store_abort(store_of(d));
		rc = 0;
		if (du->reopen) {
			vcma_store_close(du->store);
			du->store = NULL;
			rc = open_store(d);
			if (rc) {
				du->reopen = true;
				answer_held(d, false);
				return; /* store NULL would turn durability off: keep trying */
			}
			du->reopen = false;
		}
		rc = write_all(d);
	} else {
		rc = write_dirty(d);
	}
	if (!rc && du->turn_failed)
		rc = -EIO;
	/* a handle answered after this commit was issued below this: a restarted vcmad
	 * issues none of them again (restore.c) */
	vcma_store_set_handle_floor(store_of(d), (uint64_t)d->core.regions.max_gen + 1);
	rc = rc ? (vcma_store_commit(store_of(d)), rc) : vcma_store_commit(store_of(d));
	du->turn_failed = false;
	if (rc) {
		if (!du->stale)
			log_err("state: %s; allocations are refused (NO_SPACE) until the whole state is recorded again",
				vcma_store_error(store_of(d)));
		vcma_store_abort(store_of(d));
		du->failures++;
		du->stale = true;
		du->reopen = rc == -EIO || vcma_store_in_turn(store_of(d));
		answer_held(d, false);
		return;
	}
	if (du->stale) {
		log_notice("state: the whole state is recorded again (%s); allocations are served", vcma_store_path(store_of(d)));
		du->stale = false;
		du->resyncs++;
	}
	t0 = durable_now_ns() - t0;
	du->commits++;
	du->commit_ns_total += t0;
	if (t0 > du->commit_ns_max)
		du->commit_ns_max = t0;
	answer_held(d, true);
}
