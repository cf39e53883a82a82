// SPDX-License-Identifier: MIT
/*
 * vcmad's loop, in-process, on a fake backend whose VM control the test answers by
 * hand and a clock the test steps: the vacate state machine, deterministic and in
 * milliseconds.
 *
 *   fake memory    machine memory in an anonymous mapping; ordinary memory from the
 *                  daemon's own extent allocator
 *   fake VM ops    record every PAUSE, REMAP and RESUME; the test answers (or not)
 *                  through the VM's event hooks, as a VMM would
 *   requesters     two fake ones (a "guest" and an "operator") on the one allocation
 *                  path (alloc.h)
 *
 * Cases: a PAUSE never answered (BUSY after pause_timeout_ms, then quarantine), a
 * REMAP refused, a VM that goes away mid-batch, relending that gives way to an
 * allocation, two requesters racing for the same window; pre-copy that converges and
 * one that falls back, and a DROP racing a REUSE.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "alloc.h"
#include "fake_machine.h"
#include "daemon.h"
#include "durable.h"
#include "evict.h"
#include "log.h"
#include "store/store.h"
#include "scrub.h"
#include "vacate.h"
#include "vm.h"

#define MiB (1ull << 20)
#define PAGE 4096ull

/* ---- fake VM control: what vcmad asked, for the test to answer ---- */

enum { OP_PAUSE, OP_REMAP, OP_RESUME, OP_PINNED, OP_REUSED, OP_REMAP_RESUME, OP_DROP, OP_TRACK, OP_UNTRACK,
       OP_DIRTY_READ };

struct vm_call {
	int op;
	uint32_t vm, seq;
	uint32_t nruns;
	struct vcmad_run runs[128];
};

static struct vm_call calls[4096];
static size_t ncalls;

static int record(struct vcmad_vm_ctl *vc, int op, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	assert_true(ncalls < sizeof(calls) / sizeof(calls[0]));
	calls[ncalls] = (struct vm_call){ .op = op, .vm = vc->id, .seq = seq, .nruns = n };
	if (n)
		memcpy(calls[ncalls].runs, runs, n * sizeof(*runs));
	ncalls++;
	return 0;
}

static int fv_pause(struct vcmad_vm_ctl *vc, uint32_t seq)
{
	return record(vc, OP_PAUSE, seq, NULL, 0);
}

static int fv_remap(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return record(vc, OP_REMAP, seq, runs, n);
}

static int fv_resume(struct vcmad_vm_ctl *vc, uint32_t seq)
{
	return record(vc, OP_RESUME, seq, NULL, 0);
}

static int fv_reused(struct vcmad_vm_ctl *vc, uint32_t seq)
{
	return record(vc, OP_REUSED, seq, NULL, 0);
}

static int fv_pinned(struct vcmad_vm_ctl *vc, uint32_t seq, int err)
{
	return record(vc, OP_PINNED, seq, NULL, 0);
}

static void fv_release(struct vcmad_vm_ctl *vc)
{
}

static int fv_remap_resume(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return record(vc, OP_REMAP_RESUME, seq, runs, n);
}

static int fv_drop(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return record(vc, OP_DROP, seq, runs, n);
}

static int fv_track(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return record(vc, OP_TRACK, seq, runs, n);
}

static int fv_untrack(struct vcmad_vm_ctl *vc, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	return record(vc, OP_UNTRACK, seq, runs, n);
}

static int fv_dirty_read(struct vcmad_vm_ctl *vc, uint32_t seq)
{
	return record(vc, OP_DIRTY_READ, seq, NULL, 0);
}

/* The new ops are used only for VMs whose flags (ctl.one_trip, ctl.dirty_log) a test
 * sets: every other VM is paused and remapped as a plain VMM's. */
static const struct vcmad_vm_ops fake_vm_ops = {
	.pause = fv_pause, .remap = fv_remap, .resume = fv_resume, .reused = fv_reused, .pinned = fv_pinned,
	.release = fv_release, .remap_resume = fv_remap_resume, .drop = fv_drop, .track = fv_track,
	.untrack = fv_untrack, .dirty_read = fv_dirty_read,
};

static const struct vcmad_backend_type fake_backend = { .name = "fake", .mem = &fake_mem_ops, .vm = &fake_vm_ops };

/* the last call of op vcmad made, or NULL */
static struct vm_call *last(int op)
{
	for (size_t i = ncalls; i-- > 0;)
		if (calls[i].op == op)
			return &calls[i];
	return NULL;
}

static size_t count(int op)
{
	size_t n = 0;

	for (size_t i = 0; i < ncalls; i++)
		n += calls[i].op == op;
	return n;
}

/* ---- fake requesters ---- */

struct answer {
	bool got;
	int err;
	struct vcma_region r;
};

struct fake_rq {
	struct vcmad_requester rq;
	struct answer a[8];
};

static int rq_take(struct vcmad_requester *rq, struct vcma_region *r)
{
	r->gpa = r->mfn << 12;
	return 0;
}

static void rq_answer(struct vcmad_requester *rq, uint64_t tag, int err, const struct vcma_region *r)
{
	struct fake_rq *f = (struct fake_rq *)rq;

	assert_true(tag < 8);
	assert_false(f->a[tag].got); /* one answer per request */
	f->a[tag] = (struct answer){ .got = true, .err = err };
	if (r)
		f->a[tag].r = *r;
}

static void rq_release(struct vcmad_requester *rq, const struct vcma_region *r)
{
}

static const struct vcmad_requester_ops fake_rq_ops = { .take = rq_take, .answer = rq_answer, .release = rq_release };

/* ---- the VM's owner: pins are not used here; loss is recorded ---- */

static int lost_count;
static bool lost_violation;

static void own_pin(void *owner, struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	fail_msg("no pin expected");
}

static void own_lost(void *owner, struct vcmad_vm *vm, const char *why, bool violation)
{
	lost_count++;
	lost_violation = violation;
	vcmad_vacate_vm_gone(vm);
	vcmad_vm_free(vm);
}

static const struct vcmad_vm_owner_ops owner_ops = { .pin = own_pin, .lost = own_lost };

/* ---- the daemon ---- */

static struct vcmad d;
static char dir[64];
static bool durable; /* record ownership in dir/run/state (answers wait for the turn's commit) */

static const char *const CONFIG = "[daemon]\n"
				  "lend_share = 100%%\n"
				  "pause_timeout_ms = 200\n"
				  "relend_idle_ms = 50\n"
				  "shutdown_grace_ms = 0\n"
				  "[machine]\n"
				  "memory = 64M\n"
				  "[pool main]\n"
				  "size = %s\n";

static void start(const char *pool_size, const char *extra)
{
	struct vcmad_conf c;
	char text[512], err[256];

	snprintf(dir, sizeof(dir), "/tmp/vcma-daemon-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(text, sizeof(text), CONFIG, pool_size);
	if (extra)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s", extra);
	vcmad_conf_defaults(&c);
	assert_int_equal(vcmad_conf_parse(&c, text, "test.conf", err, sizeof(err)), 0);
	snprintf(c.runtime_dir, sizeof(c.runtime_dir), "%s/run", dir);
	if (!durable)
		snprintf(c.state_dir, sizeof(c.state_dir), "none");
	assert_int_equal(vcmad_init_backend(&d, &c, &fake_backend), 0);
	d.loop.clock = fake_clock;
	assert_int_equal(vcmad_start(&d), 0);
	ncalls = 0;
	lost_count = 0;
}

static void stop(void)
{
	vcmad_fini(&d);
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void turn(void)
{
	assert_true(vcmad_run_once(&d, 0) >= 0);
}

static void advance_ms(uint64_t ms)
{
	fake_now_ns += ms * 1000000ull;
	turn();
}

static struct vcma_pool *pool(void)
{
	return d.core.pool[0];
}

static uint64_t lent_frames(void)
{
	return pool()->fm.count[VCMA_FRAME_LENT_FREE] + pool()->fm.count[VCMA_FRAME_LENT_USED];
}

static struct vcmad_vm *new_vm(uint32_t id, uint64_t bytes)
{
	struct vcmad_vm *vm;

	assert_int_equal(vcmad_vm_new(&d, id, "vm", bytes / PAGE, &owner_ops, NULL, &vm), 0);
	return vm;
}

static void new_rq(struct fake_rq *f, uint32_t owner)
{
	memset(f, 0, sizeof(*f));
	vcmad_requester_init(&f->rq, &d, &fake_rq_ops, owner, owner == VCMA_GUEST_MAX ? "operator" : "guest", NULL);
}

static int alloc(struct fake_rq *f, uint64_t tag, uint64_t bytes)
{
	struct vcma_alloc_req req = { .bytes = bytes };

	return vcmad_alloc(&f->rq, tag, &req);
}

/* Answer the VM's latest PAUSE and then its REMAP, as a VMM does. */
static void answer_batch(struct vcmad_vm *vm, int32_t remap_status)
{
	struct vm_call *p = last(OP_PAUSE);

	assert_non_null(p);
	vm->ctl.ev->paused(&vm->ctl, p->seq);
	assert_non_null(last(OP_REMAP));
	assert_int_equal(last(OP_REMAP)->seq, p->seq);
	vm->ctl.ev->remapped(&vm->ctl, p->seq, remap_status);
}

/* ---- cases ---- */

/* A PAUSE that is never answered: after pause_timeout_ms the allocation is answered
 * -ETIMEDOUT (BUSY on a ring), the VM is resumed and nothing moved; three in a row and
 * the VM is quarantined, after which an allocation fails at once. */
static void test_pause_timeout(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;

	start("8M", NULL);
	vm = new_vm(100, 8 * MiB);
	assert_int_equal(lent_frames(), 2048);
	new_rq(&g, 1);
	for (uint64_t t = 0; t < VCMAD_PAUSE_MISSES; t++) {
		assert_int_equal(alloc(&g, t, 4 * MiB), VCMAD_ALLOC_WAITING);
		assert_int_equal(count(OP_PAUSE), t + 1);
		advance_ms(199);
		assert_false(g.a[t].got); /* not yet */
		advance_ms(2);
		assert_true(g.a[t].got);
		assert_int_equal(g.a[t].err, -ETIMEDOUT);
		assert_int_equal(last(OP_RESUME)->seq, last(OP_PAUSE)->seq);
		assert_int_equal(count(OP_REMAP), 0);
		assert_int_equal(lent_frames(), 2048);
		assert_int_equal(pool()->fm.nclaimed - pool()->quarantined, 0); /* the window was let go */
		assert_int_equal(g.rq.pending, 0);
	}
	/* quarantined: its frames kept out of searches, no PAUSE, no wait */
	assert_true(vm->unresponsive);
	assert_int_equal(pool()->quarantined, 2048);
	assert_int_equal(alloc(&g, 3, 4 * MiB), 0);
	assert_int_equal(g.a[3].err, -ENOSPC);
	assert_int_equal(count(OP_PAUSE), VCMAD_PAUSE_MISSES);
	/* a late PAUSED for a PAUSE that timed out changes nothing */
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	assert_int_equal(count(OP_REMAP), 0);
	vcmad_vacate_vm_gone(vm);
	vcmad_vm_free(vm);
	assert_int_equal(pool()->fm.nclaimed, 0);
	assert_int_equal(pool()->quarantined, 0);
	stop();
}

/* A REMAP refused: the allocation fails -EIO, the VM is resumed, every page stays where
 * it was, and the scratch destinations go back to ordinary memory. */
static void test_remap_refused(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;
	uint64_t ordinary;

	start("8M", NULL);
	vm = new_vm(100, 8 * MiB);
	ordinary = fake_mem_ops.ram_free_frames(&d.be);
	new_rq(&g, 1);
	assert_int_equal(alloc(&g, 0, 2 * MiB), VCMAD_ALLOC_WAITING);
	answer_batch(vm, 5 /* EIO */);
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, -EIO);
	assert_int_equal(last(OP_RESUME)->seq, last(OP_PAUSE)->seq);
	assert_int_equal(lent_frames(), 2048);
	assert_int_equal(pool()->fm.nclaimed, 0);
	assert_int_equal(fake_mem_ops.ram_free_frames(&d.be), ordinary);
	assert_int_equal(d.vacate.ord_reserved, 0);
	for (uint64_t gfn = 0; gfn < vm->ctl.ram_frames; gfn++)
		assert_non_null(vcma_core_pool_of(&d.core, vm->p2m[gfn])); /* nothing moved */
	assert_int_equal(d.vacate.jobs_failed, 1);
	stop();
}

/* A VM that goes away while paused for a batch: the job lets go of it, its frames come
 * back FREE with its detach, and the allocation completes on them. */
static void test_vm_dies_mid_batch(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;

	start("8M", NULL);
	vm = new_vm(100, 8 * MiB);
	new_rq(&g, 1);
	assert_int_equal(alloc(&g, 0, 4 * MiB), VCMAD_ALLOC_WAITING);
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	assert_int_equal(count(OP_REMAP), 1);
	/* the VM is lost before it answers the REMAP (its socket closed) */
	vm->ctl.ev->lost(&vm->ctl, "connection closed", false);
	assert_int_equal(lost_count, 1);
	turn();
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(g.a[0].r.nframes, 1024);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_REGION], 1024);
	assert_int_equal(lent_frames(), 0);
	assert_int_equal(d.vacate.ord_reserved, 0);
	stop();
}

static size_t pauses_of(uint32_t vm)
{
	size_t n = 0;

	for (size_t i = 0; i < ncalls; i++)
		n += calls[i].op == OP_PAUSE && calls[i].vm == vm;
	return n;
}

/* Answer vm's last PAUSE and REMAP. */
static void answer_vm(struct vcmad_vm *vm, int32_t remap_status)
{
	struct vm_call *p = NULL;

	for (size_t i = ncalls; i-- > 0 && !p;)
		if (calls[i].op == OP_PAUSE && calls[i].vm == vm->ctl.id)
			p = &calls[i];
	assert_non_null(p);
	vm->ctl.ev->paused(&vm->ctl, p->seq);
	vm->ctl.ev->remapped(&vm->ctl, p->seq, remap_status);
}

/* Relending: pages on ordinary memory move onto idle pool frames once the host has
 * been quiet for relend_idle_ms, batch by batch; it gives way between batches to any
 * other job (here the operator draining another VM), and comes back when all is quiet. */
static void test_relend_gives_way(void **unused)
{
	struct vcmad_vacate_result res;
	struct vcmad_vm *a, *b;

	start("8M", NULL);
	b = new_vm(101, 4 * MiB); /* lent: half the pool */
	d.conf.lend_share = 0;
	a = new_vm(100, 8 * MiB); /* on ordinary memory */
	assert_int_equal(lent_frames(), 1024);
	d.vacate.batch = 256; /* pages per pause */
	advance_ms(10);
	assert_int_equal(count(OP_PAUSE), 0); /* not quiet for long enough */
	advance_ms(60);
	assert_int_equal(pauses_of(100), 1); /* relending a's pages began */
	answer_vm(a, 0);
	assert_int_equal(lent_frames(), 1024 + 256);
	assert_int_equal(pauses_of(100), 2); /* its next batch, straight on */
	/* the operator drains b: an evict job, on another VM, in parallel */
	assert_int_equal(vcmad_drain(&d, 101, &res), 0);
	assert_int_equal(res.scheduled, 1024);
	assert_int_equal(pauses_of(101), 1);
	answer_vm(a, 0);          /* relend's batch commits... */
	turn();
	assert_int_equal(pauses_of(100), 2); /* ...and relending stops there: it gave way */
	while (b->pauser) {
		answer_vm(b, 0);
		turn();
	}
	assert_int_equal(vcmad_vacate_busy(&d), false);
	assert_int_equal(d.vacate.jobs_ok, 2); /* relend's first job, the drain */
	/* quiet again: relending takes up the rest */
	advance_ms(60);
	assert_int_equal(pauses_of(100), 3);
	stop();
}

/* Two requesters at once for the only window: the first claims it and vacates; the
 * second cannot see a claimed window and is refused at once (no space), not queued
 * behind it; once the first frees, the second gets the same window. Two that fit side
 * by side share the VM, taking turns. */
static void test_requesters_race(void **unused)
{
	struct fake_rq g, op;
	struct vcmad_vm *vm;

	start("8M", NULL);
	vm = new_vm(100, 8 * MiB);
	new_rq(&g, 1);
	new_rq(&op, VCMA_GUEST_MAX);
	assert_int_equal(alloc(&g, 0, 8 * MiB), VCMAD_ALLOC_WAITING);
	assert_int_equal(alloc(&op, 0, 2 * MiB), 0);
	assert_int_equal(op.a[0].err, -ENOSPC);
	while (!g.a[0].got) {
		answer_batch(vm, 0);
		turn();
	}
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(vcmad_free(&g.rq, g.a[0].r.handle), 0);
	assert_int_equal(alloc(&op, 1, 2 * MiB), 0); /* free frames now: no vacate */
	assert_int_equal(op.a[1].err, 0);
	assert_int_equal(op.a[1].r.mfn, g.a[0].r.mfn);
	assert_int_equal(vcmad_free(&op.rq, op.a[1].r.handle), 0);
	stop();

	/* side by side: 2 x 4 MiB from an 8 MiB pool lent out to one VM */
	start("8M", NULL);
	vm = new_vm(100, 8 * MiB);
	new_rq(&g, 1);
	new_rq(&op, VCMA_GUEST_MAX);
	assert_int_equal(alloc(&g, 0, 4 * MiB), VCMAD_ALLOC_WAITING);
	assert_int_equal(alloc(&op, 0, 4 * MiB), VCMAD_ALLOC_WAITING);
	assert_int_equal(count(OP_PAUSE), 1); /* the second waits for the VM */
	for (int i = 0; i < 64 && !(g.a[0].got && op.a[0].got); i++) {
		if (vm->pauser)
			answer_batch(vm, 0);
		turn();
	}
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(op.a[0].err, 0);
	assert_true(g.a[0].r.mfn + 1024 <= op.a[0].r.mfn || op.a[0].r.mfn + 1024 <= g.a[0].r.mfn);
	assert_int_equal(lent_frames(), 0);
	assert_int_equal(d.vacate.ord_reserved, 0);
	stop();
}

/* ---- held FREEs (alloc.h): frames released and zeroed after the turn ---- */

/* A requester whose release() zeroes the region as a link's clear does, and whose
 * take() records whether the region it is given reads as zeros. */
static struct {
	uint64_t released;  /* regions released */
	uint64_t dirty;     /* regions handed out that did not read as zeros */
} zr;

static bool frames_zero(uint64_t mfn, uint64_t n)
{
	for (uint64_t f = mfn; f < mfn + n; f++) {
		const uint64_t *w = (const uint64_t *)fake_frame(&d.be, f);

		for (size_t i = 0; i < PAGE / 8; i++)
			if (w[i])
				return false;
	}
	return true;
}

static int zrq_take(struct vcmad_requester *rq, struct vcma_region *r)
{
	if (!frames_zero(r->mfn, r->nframes))
		zr.dirty++;
	r->gpa = r->mfn << 12;
	return 0;
}

static void zrq_release(struct vcmad_requester *rq, const struct vcma_region *r)
{
	zr.released++;
	memset(fake_frame(&d.be, r->mfn), 0, r->nframes * PAGE);
}

static const struct vcmad_requester_ops zero_rq_ops = { .take = zrq_take, .answer = rq_answer, .release = zrq_release };

static void new_zrq(struct fake_rq *f, uint32_t owner)
{
	memset(f, 0, sizeof(*f));
	memset(&zr, 0, sizeof(zr));
	vcmad_requester_init(&f->rq, &d, &zero_rq_ops, owner, "guest", NULL);
}

/* The region's memory, as its owner would write it. */
static void scribble(const struct vcma_region *r)
{
	memset(fake_frame(&d.be, r->mfn), 0xa5, r->nframes * PAGE);
}

/*
 * A FREE taken while a hold is open (a guest's turn) keeps its frames out of every
 * search until the hold ends, and releases (zeroes) them then: an ALLOC in the same
 * turn gets other frames, and the freed ones read as zeros when they are handed out
 * next. In a pool with no other room the ALLOC releases the held frames first, so it
 * still succeeds, with zeros.
 */
static void test_held_free(void **unused)
{
	struct fake_rq g;
	uint64_t a_mfn;

	/* room for two: the ALLOC after the FREE gets the other frames */
	start("8M", NULL);
	new_zrq(&g, 1);
	assert_int_equal(alloc(&g, 0, 4 * MiB), 0);
	assert_int_equal(g.a[0].err, 0);
	a_mfn = g.a[0].r.mfn;
	scribble(&g.a[0].r);
	vcmad_free_hold(&d);
	assert_int_equal(vcmad_free(&g.rq, g.a[0].r.handle), 0);
	assert_int_equal(zr.released, 0);                                 /* held */
	assert_int_equal(pool()->fm.count[VCMA_FRAME_REGION], 1024);      /* still out of reach */
	assert_null(vcma_core_lookup(&d.core, 1, g.a[0].r.handle));       /* but the handle is gone */
	assert_int_equal(g.rq.nregions, 0);
	assert_int_equal(alloc(&g, 1, 4 * MiB), 0);
	assert_int_equal(g.a[1].err, 0);
	assert_true(g.a[1].r.mfn != a_mfn);
	assert_int_equal(zr.released, 0);
	vcmad_free_settle(&d);
	assert_int_equal(zr.released, 1);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_REGION], 1024);      /* only the second */
	scribble(&g.a[1].r);
	vcmad_free_hold(&d);
	assert_int_equal(vcmad_free(&g.rq, g.a[1].r.handle), 0);
	assert_int_equal(alloc(&g, 2, 4 * MiB), 0);                       /* the first's frames again */
	assert_int_equal(g.a[2].err, 0);
	assert_int_equal(g.a[2].r.mfn, a_mfn);
	vcmad_free_settle(&d);
	assert_int_equal(zr.released, 2);
	assert_int_equal(zr.dirty, 0);
	assert_int_equal(vcmad_free(&g.rq, g.a[2].r.handle), 0);          /* no hold: at once */
	assert_int_equal(zr.released, 3);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_FREE], 2048);
	assert_int_equal(d.held.n, 0);
	stop();

	/* room for one: the ALLOC releases the held frames first, and gets them zeroed */
	start("4M", NULL);
	new_zrq(&g, 1);
	assert_int_equal(alloc(&g, 0, 4 * MiB), 0);
	assert_int_equal(g.a[0].err, 0);
	scribble(&g.a[0].r);
	vcmad_free_hold(&d);
	assert_int_equal(vcmad_free(&g.rq, g.a[0].r.handle), 0);
	assert_int_equal(zr.released, 0);
	assert_int_equal(alloc(&g, 1, 4 * MiB), 0);
	assert_int_equal(g.a[1].err, 0);
	assert_int_equal(g.a[1].r.mfn, g.a[0].r.mfn);
	assert_int_equal(zr.released, 1);
	assert_int_equal(zr.dirty, 0);
	assert_int_equal(pool()->stats.alloc_fail, 0); /* the first look is not a failure */
	vcmad_free_settle(&d);
	assert_int_equal(zr.released, 1);
	/* a requester that goes has what it freed in the turn released first */
	scribble(&g.a[1].r);
	vcmad_free_hold(&d);
	assert_int_equal(vcmad_free(&g.rq, g.a[1].r.handle), 0);
	assert_int_equal(vcmad_requester_gone(&g.rq), 0);
	assert_int_equal(zr.released, 2);
	assert_int_equal(d.held.n, 0);
	vcmad_free_settle(&d);
	assert_true(frames_zero(g.a[1].r.mfn, 1024));
	assert_int_equal(pool()->fm.count[VCMA_FRAME_FREE], 1024);
	stop();
}

/* ---- durable ownership (durable.h) ---- */

struct seen {
	uint64_t pools, guests, regions, handle, p2m_frames;
	uint64_t p2m[2048]; /* vm 100's mfn per gfn, as recorded (0: none) */
	bool twice;
};

static int seen_pool(void *ctx, const struct vcma_store_pool *p)
{
	((struct seen *)ctx)->pools++;
	return 0;
}

static int seen_region(void *ctx, const struct vcma_store_region *r)
{
	struct seen *s = ctx;

	s->regions++;
	s->handle = r->handle;
	return 0;
}

static int seen_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	struct seen *s = ctx;

	for (uint64_t k = 0; k < m->count; k++) {
		assert_true(m->first_gfn + k < 2048);
		s->twice |= s->p2m[m->first_gfn + k] != 0;
		s->p2m[m->first_gfn + k] = m->mfn + k;
		s->p2m_frames++;
	}
	return 0;
}

static void replay(struct seen *s)
{
	static const struct vcma_store_replay_ops ops = { .pool = seen_pool, .region = seen_region, .p2m = seen_p2m };

	memset(s, 0, sizeof(*s));
	assert_int_equal(vcma_store_replay(d.durable.store, &ops, s), 0);
}

/*
 * A granted allocation is answered only once its turn committed, and the store then
 * holds the region; a free takes it out; a VM's p2m is recorded as runs that cover
 * every gfn once, and follows a vacate. A turn that cannot be committed takes its
 * grants back (NO_SPACE), refuses allocations until the whole state is written anew,
 * and the next turn does that.
 */
static void test_durable_turns(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;
	struct seen s;
	uint64_t h;

	durable = true;
	start("16M", NULL);
	durable = false;
	assert_non_null(d.durable.store);
	new_rq(&g, 1);
	assert_int_equal(alloc(&g, 0, 1 * MiB), 0);
	assert_false(g.a[0].got); /* held until the turn commits */
	turn();
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, 0);
	replay(&s);
	assert_int_equal(s.pools, 1);
	assert_int_equal(s.regions, 1);
	assert_int_equal(s.handle, g.a[0].r.handle);
	h = g.a[0].r.handle;
	assert_int_equal(vcmad_free(&g.rq, h), 0);
	turn();
	replay(&s);
	assert_int_equal(s.regions, 0);

	/* a VM on half the pool: every gfn recorded once, where the p2m has it */
	vm = new_vm(100, 8 * MiB);
	turn();
	replay(&s);
	assert_int_equal(s.p2m_frames, 2048);
	assert_false(s.twice);
	for (uint64_t gfn = 0; gfn < 2048; gfn++)
		assert_int_equal(s.p2m[gfn], vm->p2m[gfn]);

	/* a turn that fails: its grant is taken back, allocations refused until resynced */
	assert_int_equal(alloc(&g, 1, 1 * MiB), 0);
	d.durable.turn_failed = true; /* as if a put of this turn had failed */
	turn();
	assert_true(g.a[1].got);
	assert_int_equal(g.a[1].err, -ENOSPC);
	assert_null(vcma_core_lookup(&d.core, 1, g.a[1].r.handle));
	assert_true(d.durable.stale);
	assert_int_equal(alloc(&g, 2, 1 * MiB), 0);
	assert_int_equal(g.a[2].err, -ENOSPC); /* at once, while stale */
	turn();
	assert_false(d.durable.stale);
	assert_int_equal(d.durable.resyncs, 1);
	assert_int_equal(alloc(&g, 3, 1 * MiB), 0);
	turn();
	assert_int_equal(g.a[3].err, 0);
	replay(&s);
	assert_int_equal(s.regions, 1);
	assert_int_equal(s.handle, g.a[3].r.handle);
	assert_int_equal(s.p2m_frames, 2048);
	vcmad_vacate_vm_gone(vm);
	vcmad_vm_free(vm);
	turn();
	replay(&s);
	assert_int_equal(s.p2m_frames, 0);
	stop();
}

/* ---- pre-copy, one-trip pauses, drops (PROTOCOL.md §9.1) ---- */

/* What the VM's page gfn holds now: the first word of the frame behind it. */
static uint64_t page_word(struct vcmad_vm *vm, uint64_t gfn)
{
	uint64_t w;

	memcpy(&w, fake_frame(&d.be, vm->p2m[gfn]), sizeof(w));
	return w;
}

/* The VM's vCPU writes v into page gfn (on whatever frame backs it now). */
static void vm_write(struct vcmad_vm *vm, uint64_t gfn, uint64_t v)
{
	memcpy(fake_frame(&d.be, vm->p2m[gfn]), &v, sizeof(v));
}

static uint64_t version[2048]; /* what each page of the test VM last had written */

static void write_all(struct vcmad_vm *vm)
{
	for (uint64_t g = 0; g < vm->ctl.ram_frames; g++) {
		version[g] = (g << 16) | 1;
		vm_write(vm, g, version[g]);
	}
}

static void dirty_answer(struct vcmad_vm *vm, const uint64_t *gfns, uint32_t n)
{
	struct vcmad_run r[8] = { { 0, 0, 0 } };

	assert_true(n <= 8);
	for (uint32_t i = 0; i < n; i++)
		r[i] = (struct vcmad_run){ gfns[i], 0, 1 };
	vm->ctl.ev->dirty(&vm->ctl, last(OP_DIRTY_READ)->seq, r, n, true, 0);
}

static void check_pages(struct vcmad_vm *vm)
{
	for (uint64_t g = 0; g < vm->ctl.ram_frames; g++)
		assert_int_equal(page_word(vm, g), version[g]);
}

/* vcmad with an 8 MiB pool (and extra config), fully lent to an 8 MiB VM whose VMM
 * takes one-trip pauses and drops, and logs writes if dirty_log; every page written;
 * requester g ready. */
static struct vcmad_vm *start_vm(const char *extra, bool dirty_log, struct fake_rq *g)
{
	struct vcmad_vm *vm;

	start("8M", extra);
	vm = new_vm(100, 8 * MiB);
	vm->ctl.one_trip = true;
	vm->ctl.dirty_log = dirty_log;
	write_all(vm);
	new_rq(g, 1);
	return vm;
}

/*
 * Pre-copy that converges: TRACK, everything copied while the VM runs, a round in
 * which the VM wrote 3 pages (copied again), then PAUSE and DIRTY_READ together; the
 * VM wrote 1 more page before it parked, copied in the pause; REMAP_RESUME is the
 * only message after PAUSED (no RESUME: one trip). Every page holds what the VM wrote
 * last, on its new frame.
 */
static void test_precopy_converges(void **unused)
{
	static const uint64_t w1[] = { 3, 100, 511 };
	struct fake_rq g;
	struct vcmad_vm *vm;
	uint64_t g4;

	vm = start_vm(NULL, true, &g);
	assert_int_equal(alloc(&g, 0, 2 * MiB), VCMAD_ALLOC_WAITING);
	assert_int_equal(count(OP_TRACK), 1);
	assert_int_equal(count(OP_PAUSE), 0); /* nothing paused yet */
	vm->ctl.ev->tracking(&vm->ctl, last(OP_TRACK)->seq, 0);
	assert_int_equal(d.vacate.precopy_pages, 512);
	assert_int_equal(count(OP_DIRTY_READ), 1);
	/* the VM runs and writes while the host copies */
	for (size_t i = 0; i < 3; i++) {
		uint64_t gfn = last(OP_TRACK)->runs[0].gfn + w1[i];

		version[gfn]++;
		vm_write(vm, gfn, version[gfn]);
	}
	{
		uint64_t gf[3];

		for (size_t i = 0; i < 3; i++)
			gf[i] = last(OP_TRACK)->runs[0].gfn + w1[i];
		dirty_answer(vm, gf, 3);
	}
	assert_int_equal(d.vacate.precopy_recopied, 3);
	assert_int_equal(count(OP_PAUSE), 1);
	assert_int_equal(count(OP_DIRTY_READ), 2); /* with the PAUSE, one trip */
	g4 = last(OP_TRACK)->runs[0].gfn + 42;
	version[g4]++;
	vm_write(vm, g4, version[g4]); /* before its vCPU parked */
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	assert_int_equal(count(OP_REMAP_RESUME), 0); /* the last DIRTY first */
	dirty_answer(vm, &g4, 1);
	assert_int_equal(d.vacate.precopy_final_pages, 1);
	assert_int_equal(count(OP_REMAP_RESUME), 1);
	assert_int_equal(last(OP_REMAP_RESUME)->seq, last(OP_PAUSE)->seq);
	vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 0);
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(count(OP_RESUME), 0);
	assert_int_equal(count(OP_REMAP), 0);
	assert_int_equal(count(OP_UNTRACK), 0);
	assert_int_equal(lent_frames(), 2048 - 512);
	check_pages(vm);
	assert_int_equal(d.vacate.precopy_fallbacks, 0);
	assert_int_equal(d.vacate.ord_reserved, 0);
	stop();
}

/*
 * Relending in slices: a relend batch's first copy goes RELEND_SLICE (256) pages per
 * loop turn, so a request arriving meanwhile waits one slice, not the batch; the rest
 * of the batch (DIRTY_READ, the pause) is as for any pre-copied one and every page
 * arrives intact. Then a relend that meets another job between slices (the operator
 * drains another VM) gives way at once: UNTRACK, nothing moved, its destinations
 * unclaimed, and it comes back when all is quiet.
 */
static void test_relend_slices(void **unused)
{
	struct vcmad_vacate_result res;
	struct vcmad_vm *a, *b;

	start("8M", NULL);
	d.conf.lend_share = 0;
	a = new_vm(100, 8 * MiB); /* all of it on ordinary memory */
	a->ctl.one_trip = a->ctl.dirty_log = true;
	write_all(a);
	assert_int_equal(lent_frames(), 0);
	advance_ms(60); /* quiet for relend_idle_ms: relending a's pages begins */
	assert_int_equal(count(OP_TRACK), 1);
	assert_int_equal(last(OP_TRACK)->runs[0].count, 2048);
	a->ctl.ev->tracking(&a->ctl, last(OP_TRACK)->seq, 0);
	for (uint64_t slice = 1; slice < 8; slice++) {
		assert_int_equal(d.vacate.precopy_pages, 256 * slice); /* one slice per turn */
		assert_int_equal(count(OP_DIRTY_READ), 0);
		turn();
	}
	assert_int_equal(d.vacate.precopy_pages, 2048);
	assert_int_equal(d.vacate.copy_slices, 7);
	assert_int_equal(count(OP_DIRTY_READ), 1); /* the first round, once all is copied */
	dirty_answer(a, NULL, 0);
	assert_int_equal(count(OP_PAUSE), 1);
	a->ctl.ev->paused(&a->ctl, last(OP_PAUSE)->seq);
	dirty_answer(a, NULL, 0);
	assert_int_equal(count(OP_REMAP_RESUME), 1);
	a->ctl.ev->remapped(&a->ctl, last(OP_REMAP_RESUME)->seq, 0);
	turn();
	assert_int_equal(lent_frames(), 2048); /* all of a on pool frames now */
	check_pages(a);
	assert_int_equal(pool()->fm.nclaimed, 0);
	assert_int_equal(d.vacate.relend_gave_way, 0);
	vcmad_vacate_vm_gone(a);
	vcmad_vm_free(a);
	stop();

	/* giving way between slices */
	start("8M", NULL);
	b = new_vm(101, 4 * MiB); /* lent: half the pool */
	d.conf.lend_share = 0;
	a = new_vm(100, 8 * MiB);
	a->ctl.one_trip = a->ctl.dirty_log = true;
	write_all(a);
	advance_ms(60);
	assert_int_equal(count(OP_TRACK), 1);
	assert_int_equal(last(OP_TRACK)->runs[0].count, 1024); /* the pool's idle half */
	assert_int_equal(pool()->fm.nclaimed, 1024);
	a->ctl.ev->tracking(&a->ctl, last(OP_TRACK)->seq, 0);
	assert_int_equal(d.vacate.precopy_pages, 256);
	assert_int_equal(vcmad_drain(&d, 101, &res), 0); /* another job */
	assert_int_equal(res.scheduled, 1024);
	turn();
	assert_int_equal(d.vacate.relend_gave_way, 1);
	assert_int_equal(d.vacate.precopy_pages, 256); /* no second slice */
	assert_int_equal(count(OP_UNTRACK), 1);
	assert_int_equal(last(OP_UNTRACK)->seq, a->seq);
	assert_null(a->pauser);
	assert_int_equal(pool()->fm.nclaimed, 0);
	for (uint64_t gfn = 0; gfn < a->ctl.ram_frames; gfn++)
		assert_null(vcma_core_pool_of(&d.core, a->p2m[gfn])); /* nothing of a moved */
	check_pages(a);
	while (b->pauser) {
		answer_vm(b, 0);
		turn();
	}
	assert_false(vcmad_vacate_busy(&d));
	assert_int_equal(lent_frames(), 0); /* b drained */
	advance_ms(60); /* quiet again: relending a takes up from the start */
	assert_int_equal(count(OP_TRACK), 2);
	assert_int_equal(last(OP_TRACK)->runs[0].count, 2048);
	stop();
}

/*
 * An allocation that finds the pool's idle frames claimed by a relend batch (TRACK sent,
 * or copying slice by slice) does not get ENOSPC: relending gives those frames up
 * (UNTRACK, nothing moved) and the allocation is served from them at once. A batch
 * whose REMAP_RESUME is out is left to commit.
 */
static void test_alloc_beats_relend(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *a;

	for (int phase = 0; phase < 3; phase++) {
		start("8M", NULL);
		d.conf.lend_share = 0;
		a = new_vm(100, 8 * MiB); /* on ordinary memory */
		a->ctl.one_trip = a->ctl.dirty_log = true;
		write_all(a);
		new_rq(&g, 1);
		advance_ms(60);
		assert_int_equal(count(OP_TRACK), 1);
		assert_int_equal(pool()->fm.nclaimed, 2048); /* every idle frame claimed by relend */
		if (phase >= 1) /* TRACKING in: the first slice copied */
			a->ctl.ev->tracking(&a->ctl, last(OP_TRACK)->seq, 0);
		if (phase == 2) {
			/* the batch's REMAP_RESUME is out: it commits, the ALLOC finds no room */
			while (count(OP_DIRTY_READ) == 0)
				turn();
			dirty_answer(a, NULL, 0);
			a->ctl.ev->paused(&a->ctl, last(OP_PAUSE)->seq);
			dirty_answer(a, NULL, 0);
			assert_int_equal(count(OP_REMAP_RESUME), 1);
			assert_int_equal(alloc(&g, 0, 2 * MiB), 0);
			assert_int_equal(g.a[0].err, -ENOSPC);
			assert_int_equal(count(OP_UNTRACK), 0);
			a->ctl.ev->remapped(&a->ctl, last(OP_REMAP_RESUME)->seq, 0);
			assert_int_equal(lent_frames(), 2048);
			check_pages(a);
		} else {
			assert_int_equal(alloc(&g, 0, 2 * MiB), 0); /* answered at once */
			assert_true(g.a[0].got);
			assert_int_equal(g.a[0].err, 0);
			assert_int_equal(g.a[0].r.nframes, 512);
			assert_int_equal(count(OP_UNTRACK), 1);
			assert_int_equal(d.vacate.relend_gave_way, 1);
			assert_int_equal(pool()->fm.nclaimed, 0);
			assert_int_equal(lent_frames(), 0); /* nothing of a moved */
			check_pages(a);
		}
		vcmad_vacate_vm_gone(a);
		vcmad_vm_free(a);
		stop();
	}
}

/* Does frame mfn read as zeros, every byte? */
static bool frame_zero(uint64_t mfn)
{
	const uint8_t *f = fake_frame(&d.be, mfn);

	for (size_t i = 0; i < PAGE; i++)
		if (f[i])
			return false;
	return true;
}

/* A 2 MiB allocation from the start_vm() VM, quiet, carried up to its REMAP_RESUME. */
static void up_to_remap_resume(struct vcmad_vm *vm, struct fake_rq *g)
{
	assert_int_equal(alloc(g, 0, 2 * MiB), VCMAD_ALLOC_WAITING);
	vm->ctl.ev->tracking(&vm->ctl, last(OP_TRACK)->seq, 0);
	dirty_answer(vm, NULL, 0);
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	dirty_answer(vm, NULL, 0);
	assert_int_equal(count(OP_REMAP_RESUME), 1);
}

/*
 * An allocation clears its window's old frames while the VMM remaps (one trip): they
 * read as zeros before REMAPPED arrives, and once it has, the region's frames are
 * known zero (its placement clears nothing again); the VM's pages are on their new
 * frames, intact.
 */
static void test_clear_ahead(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;
	struct vcmad_run w;

	vm = start_vm(NULL, true, &g);
	up_to_remap_resume(vm, &g);
	w = last(OP_TRACK)->runs[0];
	assert_int_equal(last(OP_TRACK)->nruns, 1);
	assert_int_equal(w.count, 512);
	for (uint64_t k = 0; k < w.count; k++)
		assert_true(frame_zero(vm->p2m[w.gfn + k])); /* still the old frames: not remapped yet */
	vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 0);
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(g.a[0].r.nframes, 512);
	assert_true(vcma_core_take_zeroed(&d.core, g.a[0].r.mfn, g.a[0].r.nframes));
	check_pages(vm);
	stop();
}

/*
 * A refused REMAP_RESUME after the old frames were cleared: the VMM stayed paused, the
 * host copies every page back and only then sends RESUME (same seq); the allocation
 * fails, nothing moved, and every page holds what the VM last wrote.
 */
static void test_clear_ahead_refused(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;
	size_t rr;

	vm = start_vm(NULL, true, &g);
	up_to_remap_resume(vm, &g);
	assert_int_equal(count(OP_RESUME), 0);
	rr = ncalls;
	vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 5 /* EIO */);
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, -EIO);
	assert_int_equal(count(OP_RESUME), 1);
	assert_true(last(OP_RESUME) >= &calls[rr]); /* after the refusal, not before */
	assert_int_equal(last(OP_RESUME)->seq, last(OP_PAUSE)->seq);
	assert_false(vm->paused);
	assert_int_equal(lent_frames(), 2048);
	for (uint64_t gfn = 0; gfn < vm->ctl.ram_frames; gfn++)
		assert_non_null(vcma_core_pool_of(&d.core, vm->p2m[gfn])); /* nothing moved */
	check_pages(vm);
	assert_int_equal(d.vacate.ord_reserved, 0);
	stop();
}

/*
 * A VM that wrote nothing in its last pre-copy's first round is paused at once after
 * the first copy (PAUSE and DIRTY_READ in one trip, no round while running). If it
 * wrote more than one pause may copy after all, the pause ends at once (RESUME), what
 * it wrote is copied while it runs, and the rounds go on: no pause over the budget.
 */
static void test_precopy_quiet(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;
	struct vcmad_run all;

	vm = start_vm("[daemon]\nmax_pause_us = 100\n", true, &g);
	/* the first batch: a round while running, in which the VM wrote nothing */
	assert_int_equal(alloc(&g, 0, 2 * MiB), VCMAD_ALLOC_WAITING);
	vm->ctl.ev->tracking(&vm->ctl, last(OP_TRACK)->seq, 0);
	assert_int_equal(count(OP_PAUSE), 0);
	dirty_answer(vm, NULL, 0);
	assert_int_equal(count(OP_PAUSE), 1);
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	dirty_answer(vm, NULL, 0);
	vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 0);
	assert_true(g.a[0].got && !g.a[0].err);
	assert_true(vm->quiet);
	/* the next: paused right after the first copy */
	assert_int_equal(alloc(&g, 1, 2 * MiB), VCMAD_ALLOC_WAITING);
	vm->ctl.ev->tracking(&vm->ctl, last(OP_TRACK)->seq, 0);
	assert_int_equal(count(OP_PAUSE), 2);
	assert_int_equal(count(OP_DIRTY_READ), 3); /* 2 for the first batch, this one with its PAUSE */
	/* ...but it burst: 200 of its 512 pages written before it parked, more than one
	 * pause may copy (120 at max_pause_us = 100) */
	all = last(OP_TRACK)->runs[0];
	assert_int_equal(last(OP_TRACK)->nruns, 1);
	all.count = 200;
	for (uint64_t k = 0; k < all.count; k++) {
		version[all.gfn + k]++;
		vm_write(vm, all.gfn + k, version[all.gfn + k]);
	}
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	vm->ctl.ev->dirty(&vm->ctl, last(OP_DIRTY_READ)->seq, &all, 1, true, 0);
	assert_int_equal(count(OP_RESUME), 1);          /* that pause ended at once */
	assert_int_equal(count(OP_REMAP_RESUME), 1);    /* nothing moved */
	assert_int_equal(count(OP_DIRTY_READ), 4);      /* a round while it runs */
	assert_false(vm->quiet);
	dirty_answer(vm, NULL, 0);
	assert_int_equal(count(OP_PAUSE), 3);
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	dirty_answer(vm, NULL, 0);
	vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 0);
	assert_true(g.a[1].got);
	assert_int_equal(g.a[1].err, 0);
	assert_int_equal(d.vacate.precopy_fallbacks, 0);
	check_pages(vm);
	stop();
}

/* A VMM that never answers TRACK (or DIRTY_READ): not a violation, nothing moved; after
 * pause_timeout_ms the batch is given up (UNTRACK) and the job pauses the VM instead. */
static void test_track_unanswered(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;

	vm = start_vm(NULL, true, &g);
	assert_int_equal(alloc(&g, 0, 2 * MiB), VCMAD_ALLOC_WAITING);
	assert_int_equal(count(OP_TRACK), 1);
	advance_ms(201);
	assert_int_equal(lost_count, 0);
	assert_int_equal(count(OP_UNTRACK), 1);
	assert_int_equal(d.vacate.precopy_fallbacks, 1);
	assert_int_equal(count(OP_PAUSE), 1);
	/* the late TRACKING changes nothing */
	vm->ctl.ev->tracking(&vm->ctl, last(OP_TRACK)->seq, 0);
	assert_int_equal(count(OP_DIRTY_READ), 0);
	while (!g.a[0].got) {
		vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
		vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 0);
		turn();
	}
	assert_int_equal(g.a[0].err, 0);
	check_pages(vm);
	stop();
}

/* Answer whatever the VM's control holder waits for, writing every tracked page
 * again in each round (a VM that writes faster than the copy). */
static void answer_busy(struct vcmad_vm *vm)
{
	struct vm_call *c = &calls[ncalls - 1];

	switch (c->op) {
	case OP_TRACK:
		vm->ctl.ev->tracking(&vm->ctl, c->seq, 0);
		break;
	case OP_DIRTY_READ: {
		struct vm_call *t = last(OP_TRACK);

		if (vm->paused)
			vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
		for (uint32_t r = 0; r < t->nruns; r++)
			for (uint64_t k = 0; k < t->runs[r].count; k++) {
				uint64_t gfn = t->runs[r].gfn + k;

				version[gfn]++;
				vm_write(vm, gfn, version[gfn]);
			}
		vm->ctl.ev->dirty(&vm->ctl, c->seq, t->runs, t->nruns, true, 0);
		break;
	}
	case OP_PAUSE:
		vm->ctl.ev->paused(&vm->ctl, c->seq);
		break;
	case OP_REMAP_RESUME:
		vm->ctl.ev->remapped(&vm->ctl, c->seq, 0);
		break;
	default:
		fail_msg("unexpected last call %d", c->op);
	}
}

/* A VM that writes every tracked page in every round: the dirty set does not shrink,
 * so pre-copy gives up (UNTRACK, counted) and the window is emptied by pause-and-copy
 * batches bounded by max_pause_us, still one trip each; nothing is lost. */
static void test_precopy_falls_back(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;

	vm = start_vm("[daemon]\nmax_pause_us = 50\n", true, &g);
	assert_int_equal(alloc(&g, 0, 2 * MiB), VCMAD_ALLOC_WAITING);
	for (int i = 0; i < 200 && !g.a[0].got; i++) {
		answer_busy(vm);
		turn();
	}
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(d.vacate.precopy_fallbacks, 1);
	assert_int_equal(count(OP_UNTRACK), 1);
	assert_int_equal(count(OP_TRACK), 1); /* not tried again for this job */
	assert_true(count(OP_PAUSE) > 1);     /* batches */
	assert_int_equal(count(OP_RESUME), 0);
	assert_int_equal(count(OP_REMAP), 0);
	check_pages(vm);
	stop();
}

/*
 * Reported pages are moved by a DROP while the VM runs. A REUSE that names one of
 * them while the DROP is in flight is recorded at once (its frame LENT_USED) but
 * answered only after DROPPED: the page then reads as zeros on its new frame. The
 * pages in use follow in a pause (this VMM logs no writes).
 */
static void test_drop_reuse_race(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm;
	struct vcmad_run rep = { 0, 0, 0 }, one;
	uint64_t gfn, old_mfn;

	vm = start_vm(NULL, false, &g);
	/* the first 256 pages backed by the pool's lowest frames are reported free */
	for (gfn = 0; gfn < vm->ctl.ram_frames && vm->p2m[gfn] != pool()->fm.base; gfn++)
		;
	assert_true(gfn + 256 <= vm->ctl.ram_frames);
	assert_int_equal(vm->p2m[gfn + 255], pool()->fm.base + 255);
	rep = (struct vcmad_run){ gfn, 0, 256 };
	vm->ctl.ev->report(&vm->ctl, &rep, 1, true, -1);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 256);
	assert_int_equal(alloc(&g, 0, 1 * MiB), VCMAD_ALLOC_WAITING); /* the cheapest window: those 256 */
	assert_int_equal(count(OP_DROP), 1);
	assert_int_equal(count(OP_PAUSE), 0);
	assert_int_equal(last(OP_DROP)->runs[0].gfn, gfn);
	/* the guest takes page gfn+7 back while the DROP is in flight */
	old_mfn = vm->p2m[gfn + 7];
	one = (struct vcmad_run){ gfn + 7, 0, 1 };
	vm->ctl.ev->report(&vm->ctl, &one, 1, false, 77);
	assert_int_equal(count(OP_REUSED), 0); /* not yet: the page is moving */
	assert_int_equal(d.vacate.reuses_held, 1);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 255);
	vm->ctl.ev->dropped(&vm->ctl, last(OP_DROP)->seq, 0);
	assert_int_equal(count(OP_REUSED), 1);
	assert_int_equal(last(OP_REUSED)->seq, 77);
	assert_true(g.a[0].got);
	assert_int_equal(g.a[0].err, 0);
	assert_int_equal(g.a[0].r.mfn, pool()->fm.base);
	assert_true(vm->p2m[gfn + 7] != old_mfn);
	assert_null(vcma_core_pool_of(&d.core, vm->p2m[gfn + 7])); /* on ordinary memory */
	assert_int_equal(page_word(vm, gfn + 7), 0);               /* a fresh zero page */
	assert_false(vm->gflags[gfn + 7] & (VCMAD_GFN_REPORTED | VCMAD_GFN_MOVING));
	assert_int_equal(d.vacate.drops, 1);
	assert_int_equal(d.vacate.dropped_pages, 256);
	assert_int_equal(count(OP_PAUSE), 0); /* nothing else in the window */
	/* a refused DROP: nothing moves, the REUSE is answered, the pages go in a pause */
	rep = (struct vcmad_run){ gfn + 256, 0, 256 };
	vm->ctl.ev->report(&vm->ctl, &rep, 1, true, -1);
	assert_int_equal(alloc(&g, 1, 1 * MiB), VCMAD_ALLOC_WAITING);
	assert_int_equal(count(OP_DROP), 2);
	one = (struct vcmad_run){ gfn + 300, 0, 1 };
	vm->ctl.ev->report(&vm->ctl, &one, 1, false, 78);
	assert_int_equal(count(OP_REUSED), 1);
	vm->ctl.ev->dropped(&vm->ctl, last(OP_DROP)->seq, 16 /* EBUSY */);
	assert_int_equal(count(OP_REUSED), 2);
	assert_int_equal(count(OP_PAUSE), 1);
	assert_int_equal(page_word(vm, gfn + 300), version[gfn + 300]); /* its own data, still */
	vm->ctl.ev->paused(&vm->ctl, last(OP_PAUSE)->seq);
	vm->ctl.ev->remapped(&vm->ctl, last(OP_REMAP_RESUME)->seq, 0);
	assert_true(g.a[1].got);
	assert_int_equal(g.a[1].err, 0);
	assert_int_equal(page_word(vm, gfn + 300), version[gfn + 300]); /* reused: copied */
	stop();
}

/* A VM dies: its pool frames are FREE at once and zeroed by the scrubber over the
 * next turns, 1 MiB at a time, not while another VM is held paused; a region handed
 * out of those frames before the scrubber got there keeps its new owner's bytes, and
 * what the scrubber zeroed is known zero. */
static void test_scrub_after_death(void **unused)
{
	struct fake_rq g;
	struct vcmad_vm *vm, *other;
	uint64_t base, turns = 0;
	bool bad = false;

	start("8M", NULL);
	vm = new_vm(100, 8 * MiB);
	base = pool()->fm.base;
	assert_int_equal(lent_frames(), 2048);
	for (uint64_t i = 0; i < 2048; i++)
		memset(fake_frame(&d.be, base + i), 0xab, PAGE); /* the VM's data */
	fake_zeroed_frames = 0;
	vcmad_vacate_vm_gone(vm);
	vcmad_vm_free(vm); /* its socket hung up */
	assert_int_equal(pool()->fm.count[VCMA_FRAME_FREE], 2048);
	assert_int_equal(fake_zeroed_frames, 0); /* nothing zeroed yet: that is the scrubber's */
	assert_int_equal(d.scrub.pending_frames, 2048);

	/* a region taken from those frames before the scrubber looked: its owner writes */
	new_rq(&g, 1);
	assert_int_equal(alloc(&g, 0, 4 * MiB), 0);
	assert_true(g.a[0].got && !g.a[0].err && g.a[0].r.mfn == base && g.a[0].r.nframes == 1024);
	for (uint64_t i = 0; i < 1024; i++)
		memset(fake_frame(&d.be, base + i), 0xcd, PAGE);

	/* another VM held paused: no zeroing meanwhile */
	other = new_vm(101, 1 * MiB);
	fake_zeroed_frames = 0;
	vcmad_vm_set_paused(other, true);
	advance_ms(1);
	advance_ms(1);
	assert_int_equal(fake_zeroed_frames, 0);
	assert_true(d.scrub.deferred >= 1);
	vcmad_vm_set_paused(other, false);

	while (d.scrub.pending_frames && turns < 100) {
		advance_ms(1);
		turns++;
		assert_true(fake_zeroed_frames <= turns * VCMAD_SCRUB_STEP_FRAMES);
	}
	assert_int_equal(d.scrub.pending_frames, 0);
	assert_false(d.scrub.timer.armed);
	/* 1024 went to the region, 256 were lent to the other VM (which zeroed them) */
	assert_int_equal(d.scrub.scrubbed_frames, 768);
	assert_int_equal(fake_zeroed_frames, 768);
	for (uint64_t i = 0; i < 1024; i++)
		bad |= fake_frame(&d.be, base + i)[0] != 0xcd || fake_frame(&d.be, base + i)[PAGE - 1] != 0xcd;
	assert_false(bad); /* the new owner's bytes */
	/* the VM's old frames: zero and known zero, but for the 256 lent again to the other VM */
	for (uint64_t i = 1024; i < 2048; i++) {
		struct vcma_frame_info fi;

		assert_int_equal(vcma_fmap_get(&pool()->fm, i, &fi), 0);
		if (fi.state == VCMA_FRAME_FREE)
			bad |= fake_frame(&d.be, base + i)[0] != 0 || fake_frame(&d.be, base + i)[PAGE - 1] != 0 ||
			       !(pool()->fm.zeroed[i >> 6] >> (i & 63) & 1);
	}
	assert_false(bad);
	assert_int_equal(lent_frames(), 256);
	vcmad_vm_free(other);
	stop();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pause_timeout),
		cmocka_unit_test(test_remap_refused),
		cmocka_unit_test(test_clear_ahead),
		cmocka_unit_test(test_durable_turns),
		cmocka_unit_test(test_clear_ahead_refused),
		cmocka_unit_test(test_vm_dies_mid_batch),
		cmocka_unit_test(test_relend_gives_way),
		cmocka_unit_test(test_requesters_race),
		cmocka_unit_test(test_held_free),
		cmocka_unit_test(test_precopy_converges),
		cmocka_unit_test(test_precopy_falls_back),
		cmocka_unit_test(test_drop_reuse_race),
		cmocka_unit_test(test_track_unanswered),
		cmocka_unit_test(test_precopy_quiet),
		cmocka_unit_test(test_scrub_after_death),
		cmocka_unit_test(test_relend_slices),
		cmocka_unit_test(test_alloc_beats_relend),
	};

	vcma_log_init(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
