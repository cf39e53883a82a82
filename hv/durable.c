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

#include "alloc.h"
#include "daemon.h"
#include "durable.h"
#include "guest.h"
#include "log.h"
#include "store/store.h"
#include "vcmad.h"
#include "vm.h"

#define CHUNK VCMAD_DURABLE_CHUNK
#define WORD_BITS 64u

struct vcmad_held_answer {
	struct vcmad_requester *rq;
	uint64_t tag;
	struct vcma_region r;
};

static struct vcma_store *st(const struct vcmad *d)
{
	return d->durable.store;
}

bool vcmad_durable_on(const struct vcmad *d)
{
	return st(d) != NULL;
}

static uint64_t mono_ns(void)
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
	return vcma_store_put_pool(st(d), &sp);
}

static int put_guest(struct vcmad *d, const struct vcmad_guest *g)
{
	struct vcma_store_guest sg = { .id = g->id, .sim_uid = g->uid };

	snprintf(sg.name, sizeof(sg.name), "%s", g->name);
	snprintf(sg.class_name, sizeof(sg.class_name), "%s", g->devclass);
	sg.link = g->link->ops->kind == VCMAD_GUEST_QEMU ? VCMA_STORE_LINK_QEMU
		  : g->link->ops->kind == VCMAD_GUEST_XEN ? VCMA_STORE_LINK_XEN : VCMA_STORE_LINK_SIM;
	return vcma_store_put_guest(st(d), &sg);
}

static int put_region(struct vcmad *d, const struct vcma_region *r)
{
	struct vcma_store_region sr = { .handle = r->handle, .guest = r->guest, .pool = r->pool,
					.first_mfn = r->mfn, .frames = r->nframes, .flags = r->flags };

	return vcma_store_put_region(st(d), &sr);
}

static bool bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / WORD_BITS] >> (i % WORD_BITS) & 1u;
}

static void bit_put(uint64_t *bm, uint64_t i, bool v)
{
	if (v)
		bm[i / WORD_BITS] |= 1ull << (i % WORD_BITS);
	else
		bm[i / WORD_BITS] &= ~(1ull << (i % WORD_BITS));
}

/* Rewrite chunk c of vm's p2m: its old runs go, the runs it has now are put. */
static int write_chunk(struct vcmad *d, struct vcmad_vm *vm, uint64_t c)
{
	uint64_t lo = c * CHUNK, hi = lo + CHUNK < vm->ctl.ram_frames ? lo + CHUNK : vm->ctl.ram_frames;
	int rc = 0;

	for (uint64_t g = lo; g < hi && !rc; g++)
		if (bit(vm->durable_rec, g)) {
			rc = vcma_store_del_p2m(st(d), vm->ctl.id, g);
			bit_put(vm->durable_rec, g, false);
		}
	for (uint64_t g = lo, e; g < hi && !rc; g = e) {
		struct vcma_store_p2m m = { .vm = vm->ctl.id, .first_gfn = g, .mfn = vm->p2m[g] };

		for (e = g + 1; e < hi && vm->p2m[e] == vm->p2m[e - 1] + 1; e++)
			;
		m.count = e - g;
		rc = vcma_store_put_p2m(st(d), &m);
		bit_put(vm->durable_rec, g, true);
	}
	return rc;
}

static uint64_t nchunks(const struct vcmad_vm *vm)
{
	return (vm->ctl.ram_frames + CHUNK - 1) / CHUNK;
}

static int vm_bitmaps(struct vcmad_vm *vm)
{
	if (vm->durable_rec)
		return 0;
	vm->durable_rec = calloc((vm->ctl.ram_frames + WORD_BITS - 1) / WORD_BITS, sizeof(uint64_t));
	vm->durable_dirty = calloc((nchunks(vm) + WORD_BITS - 1) / WORD_BITS, sizeof(uint64_t));
	return vm->durable_rec && vm->durable_dirty ? 0 : -ENOMEM;
}

/* ---- the whole state, anew (a fresh store, or after a turn that failed) ---- */

static int write_all(struct vcmad *d)
{
	uint32_t cursor = 0;
	const struct vcma_region *r;
	int rc = vcma_store_clear(st(d));

	for (uint32_t i = 0; i < d->core.npools && !rc; i++)
		rc = put_pool(d, d->core.pool[i]);
	for (uint32_t i = 0; d->guests.slot && i < d->conf.max_guests && !rc; i++)
		if (d->guests.slot[i] && !d->guests.slot[i]->dead)
			rc = put_guest(d, d->guests.slot[i]);
	while (!rc && (r = vcma_regions_next(&d->core.regions, &cursor)))
		rc = put_region(d, r);
	for (struct vcmad_vm *vm = d->vms; vm && !rc; vm = vm->next) {
		rc = vm_bitmaps(vm);
		if (rc)
			break;
		memset(vm->durable_rec, 0, (vm->ctl.ram_frames + WORD_BITS - 1) / WORD_BITS * sizeof(uint64_t));
		for (uint64_t c = 0; c < nchunks(vm) && !rc; c++)
			rc = write_chunk(d, vm, c);
		memset(vm->durable_dirty, 0, (nchunks(vm) + WORD_BITS - 1) / WORD_BITS * sizeof(uint64_t));
		vm->durable_queued = false;
	}
	d->durable.dirty_vms = NULL;
	return rc;
}

/* ---- open ---- */

struct prev_counts {
	uint64_t guests, regions, p2m, lenders;
};

static int count_guest(void *ctx, const struct vcma_store_guest *g)
{
	((struct prev_counts *)ctx)->guests++;
	return 0;
}

static int count_region(void *ctx, const struct vcma_store_region *r)
{
	((struct prev_counts *)ctx)->regions++;
	return 0;
}

static int count_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	((struct prev_counts *)ctx)->p2m++;
	return 0;
}

static int count_lender(void *ctx, const struct vcma_store_lender *l)
{
	((struct prev_counts *)ctx)->lenders++;
	return 0;
}

static void store_warn(void *ctx, const char *msg)
{
	log_warn("state: %s", msg);
}

/* A previous run's ownership: taking it back is not built yet, so it is kept aside,
 * whole, for the operator (and vcmactl state verify), and vcmad starts afresh. */
static int set_aside(struct vcmad *d, const struct prev_counts *pc)
{
	char from[320], to[320];
	struct vcma_store_info info;

	vcma_store_info(st(d), &info);
	vcma_store_close(d->durable.store);
	d->durable.store = NULL;
	snprintf(to, sizeof(to), "%s/previous-%llu", d->durable.dir, (unsigned long long)info.last_txn);
	if (mkdir(to, 0700) && errno != EEXIST) {
		log_err("state: cannot make %s: %s", to, strerror(errno));
		return -errno;
	}
	snprintf(from, sizeof(from), "%s/data.mdb", d->durable.dir);
	snprintf(to + strlen(to), sizeof(to) - strlen(to), "/data.mdb");
	if (rename(from, to)) {
		log_err("state: cannot move %s to %s: %s", from, to, strerror(errno));
		return -errno;
	}
	log_warn("state: %s held a previous run's ownership (transaction %llu: %llu guest(s), %llu region(s), %llu "
		 "p2m run(s), %llu lender(s)); taking guests back after a restart is not built yet, so it is kept as %s "
		 "and vcmad starts afresh", from, (unsigned long long)info.last_txn, (unsigned long long)pc->guests,
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
		.guest = count_guest, .region = count_region, .p2m = count_p2m, .lender = count_lender,
	};
	struct prev_counts pc = { 0 };
	int rc;

	vcmad_conf_state_dir(&d->conf, d->durable.dir, sizeof(d->durable.dir));
	if (!d->durable.dir[0])
		return 0;
	rc = lock_dir(d);
	if (!rc)
		rc = open_store(d);
	if (rc)
		return rc;
	rc = vcma_store_replay(st(d), &count_ops, &pc);
	if (rc) {
		log_err("state: %s", vcma_store_error(st(d)));
		vcmad_durable_close(d);
		return rc < 0 ? rc : -EIO;
	}
	if (pc.guests || pc.regions || pc.p2m || pc.lenders) {
		rc = set_aside(d, &pc);
		if (!rc)
			rc = open_store(d);
		if (rc)
			return rc;
	}
	rc = write_all(d);
	if (!rc)
		rc = vcma_store_commit(st(d));
	if (rc) {
		log_err("state: %s", vcma_store_error(st(d)));
		vcmad_durable_close(d);
		return rc;
	}
	log_info("state: recording ownership in %s", vcma_store_path(st(d)));
	return 0;
}

void vcmad_durable_close(struct vcmad *d)
{
	if (d->durable.locked && !st(d)) {
		close(d->durable.lock_fd);
		d->durable.locked = false;
	}
	if (!st(d))
		return;
	/* what the last turn changed is committed by its turn_end; nothing is open here
	 * but changes made while closing (guests leaving), committed now */
	if (vcma_store_in_turn(st(d)) && !d->durable.stale && vcma_store_commit(st(d)))
		log_warn("state: %s", vcma_store_error(st(d)));
	vcma_store_close(d->durable.store);
	d->durable.store = NULL;
	free(d->durable.held);
	d->durable.held = NULL;
	d->durable.nheld = d->durable.held_cap = 0;
	if (d->durable.locked)
		close(d->durable.lock_fd);
	d->durable.locked = false;
}

/* ---- changes ---- */

int vcmad_durable_may_grant(struct vcmad *d)
{
	return st(d) && d->durable.stale ? -ENOSPC : 0;
}

int vcmad_durable_region_new(struct vcmad *d, const struct vcma_region *r)
{
	int rc;

	if (!st(d) || d->durable.stale)
		return 0; /* stale: turn_end writes it all anew */
	rc = put_region(d, r);
	turn_failed(d, rc);
	return rc == -ENOSPC ? rc : 0; /* a full map fails this turn; other failures show at commit */
}

void vcmad_durable_region_gone(struct vcmad *d, uint64_t handle)
{
	if (st(d) && !d->durable.stale)
		turn_failed(d, vcma_store_del_region(st(d), handle));
}

void vcmad_durable_guest_new(struct vcmad *d, const struct vcmad_guest *g)
{
	if (st(d) && !d->durable.stale)
		turn_failed(d, put_guest(d, g));
}

void vcmad_durable_guest_gone(struct vcmad *d, uint32_t id)
{
	if (st(d) && !d->durable.stale)
		turn_failed(d, vcma_store_del_guest(st(d), id));
}

void vcmad_durable_p2m(struct vcmad_vm *vm, uint64_t gfn, uint64_t n)
{
	struct vcmad *d = vm->d;

	if (!st(d) || !n || gfn >= vm->ctl.ram_frames)
		return;
	if (vm_bitmaps(vm)) {
		turn_failed(d, -ENOMEM);
		return;
	}
	if (n > vm->ctl.ram_frames - gfn)
		n = vm->ctl.ram_frames - gfn;
	for (uint64_t c = gfn / CHUNK; c <= (gfn + n - 1) / CHUNK; c++)
		bit_put(vm->durable_dirty, c, true);
	if (!vm->durable_queued) {
		vm->durable_queued = true;
		vm->durable_next = d->durable.dirty_vms;
		d->durable.dirty_vms = vm;
	}
}

void vcmad_durable_vm_gone(struct vcmad_vm *vm, bool keep)
{
	struct vcmad *d = vm->d;

	if (vm->durable_queued)
		for (struct vcmad_vm **pp = &d->durable.dirty_vms; *pp; pp = &(*pp)->durable_next)
			if (*pp == vm) {
				*pp = vm->durable_next;
				break;
			}
	vm->durable_queued = false;
	if (!keep && st(d) && !d->durable.stale && vm->durable_rec)
		for (uint64_t g = 0; g < vm->ctl.ram_frames; g++)
			if (bit(vm->durable_rec, g))
				turn_failed(d, vcma_store_del_p2m(st(d), vm->ctl.id, g));
	free(vm->durable_rec);
	free(vm->durable_dirty);
	vm->durable_rec = vm->durable_dirty = NULL;
}

/* ---- held answers ---- */

bool vcmad_durable_hold(struct vcmad_requester *rq, uint64_t tag, const struct vcma_region *r)
{
	struct vcmad *d = rq->d;
	struct vcmad_durable *du = &d->durable;

	if (!st(d))
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
	du->held[du->nheld++] = (struct vcmad_held_answer){ rq, tag, *r };
	du->held_total++;
	return true;
}

void vcmad_durable_forget(struct vcmad_requester *rq)
{
	struct vcmad_durable *du = &rq->d->durable;

	for (size_t i = 0; i < du->nheld; i++)
		if (du->held[i].rq == rq)
			du->held[i].rq = NULL;
}

void vcmad_durable_drop(struct vcmad_requester *rq, uint64_t tag)
{
	struct vcmad_durable *du = &rq->d->durable;

	for (size_t i = 0; i < du->nheld; i++)
		if (du->held[i].rq == rq && du->held[i].tag == tag) {
			du->held[i].rq = NULL;
			vcmad_free(rq, du->held[i].r.handle);
		}
}

/* ---- the turn's end ---- */

static int write_dirty(struct vcmad *d)
{
	int rc = 0;

	while (d->durable.dirty_vms) {
		struct vcmad_vm *vm = d->durable.dirty_vms;

		d->durable.dirty_vms = vm->durable_next;
		vm->durable_queued = false;
		for (uint64_t c = 0; c < nchunks(vm); c++)
			if (bit(vm->durable_dirty, c)) {
				bit_put(vm->durable_dirty, c, false);
				if (!rc)
					rc = write_chunk(d, vm, c);
			}
	}
	return rc;
}

static void answer_held(struct vcmad *d, bool ok)
{
	struct vcmad_durable *du = &d->durable;
	size_t n = du->nheld;

	/* answers may start new work (and a nested turn end): take the list first */
	du->nheld = 0;
	for (size_t i = 0; i < n; i++) {
		struct vcmad_held_answer h = du->held[i];

		if (!h.rq)
			continue; /* its requester left; its regions went with it */
		if (ok) {
			vcmad_answer_granted(h.rq, h.tag, &h.r);
		} else {
			du->refused++;
			vcmad_take_back(h.rq, h.tag, &h.r);
		}
	}
}

void vcmad_durable_turn_end(struct vcmad *d)
{
	struct vcmad_durable *du = &d->durable;
	uint64_t t0;
	int rc;

	if (!st(d) || (!du->stale && !du->nheld && !du->dirty_vms && !vcma_store_in_turn(st(d))))
		return;
	t0 = mono_ns();
	if (du->stale) {
		/* a turn failed: nothing is recorded piecemeal until the whole state is */
		vcma_store_abort(st(d));
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
	rc = rc ? (vcma_store_commit(st(d)), rc) : vcma_store_commit(st(d));
	du->turn_failed = false;
	if (rc) {
		if (!du->stale)
			log_err("state: %s; allocations are refused (NO_SPACE) until the whole state is recorded again",
				vcma_store_error(st(d)));
		vcma_store_abort(st(d));
		du->failures++;
		du->stale = true;
		du->reopen = rc == -EIO || vcma_store_in_turn(st(d));
		answer_held(d, false);
		return;
	}
	if (du->stale) {
		log_notice("state: the whole state is recorded again (%s); allocations are served", vcma_store_path(st(d)));
		du->stale = false;
		du->resyncs++;
	}
	t0 = mono_ns() - t0;
	du->commits++;
	du->commit_ns_total += t0;
	if (t0 > du->commit_ns_max)
		du->commit_ns_max = t0;
	answer_held(d, true);
}
