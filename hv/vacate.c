// SPDX-License-Identifier: MIT
/*
 * vacate.c - the job engine (vacate.h): moves of VMs' pages, per VM, in batches of
 * pause, copy, remap, resume.
 *
 * A job is a list of moves sorted by (VM, gfn). A batch is moves of one VM that still
 * apply; before it pauses anybody it has its destinations (ordinary memory reserved
 * when the job began, or for relend idle pool frames claimed from the top) faulted
 * in. Only REMAPPED (or DROPPED) changes the p2m and the frame map: before it, every
 * page is where its VM has it mapped, and a failure just hands the scratch
 * destinations back.
 *
 * A batch is one of three kinds (ARCHITECTURE.md, "Vacating like live migration"):
 *   B_DROP     reported pages of a ONE_TRIP VM: DROP while it runs, nothing copied
 *   B_PRECOPY  in-use pages of a DIRTY_LOG VM: TRACK, copy, DIRTY_READ rounds, then
 *              one pause that copies what was written last (PAUSE + DIRTY_READ sent
 *              together, REMAP_RESUME)
 *   B_PAUSE    pause, copy, remap, resume, sized to max_pause_us (one trip when the
 *              VMM takes REMAP_RESUME)
 */
#include <errno.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "durable.h"
#include "log.h"
#include "vacate.h"
#include "vcmad.h"
#include "vm.h"

#define MIN_BATCH 16u
#define MAX_BATCH 4096u
#define MAX_RUNS 128u       /* runs per REMAP */
#define PRECOPY_MAX 4096u   /* pages tracked at once */
#define PRECOPY_ROUNDS 8u   /* DIRTY_READs while running before giving up on converging */
#define MOVED UINT64_MAX    /* src of a move already made */
#define COPY_NS_MIN 250u    /* a 4 KiB copy costs at least this (ns) */
#define RELEND_SLICE 256u   /* relend's first pre-copy pass: pages per loop turn */

/* J_COPY: relend's first pre-copy pass, a slice per loop turn (the slice timer) */
enum job_state { J_READY, J_WAIT_DROP, J_WAIT_TRACK, J_COPY, J_WAIT_DIRTY, J_WAIT_PAUSE, J_WAIT_REMAP, J_DONE };

enum batch_kind { B_PAUSE, B_DROP, B_PRECOPY };

enum job_kind {
	JOB_WINDOW, /* empty a claimed window for an allocation */
	JOB_EVICT,  /* move pages off pool frames: compact, drain, pin */
	JOB_RELEND, /* move pages from ordinary memory onto idle pool frames */
};

struct vcmad_job {
	struct vcmad *d;
	struct vcmad_job *next;
	enum job_kind kind;
	struct vcma_pool *dst_pool; /* RELEND: where destinations come from */
	uint64_t scan_top;          /* RELEND: frames at and above this were looked at */
	uint64_t reserved;          /* ordinary frames promised to the moves not yet in a batch */
	vcmad_job_done_fn done;     /* NULL once nobody waits */
	void *done_arg;
	struct vcmad_move *mv;
	size_t nmv, next_mv;
	bool no_drop;    /* a DROP was refused: reported pages go through pauses */
	bool no_precopy; /* pre-copy did not converge: pause-and-copy batches from here */
	/* the batch in flight */
	struct vcmad_vm *vm; /* whose control this job holds (paused, tracked, dropping) */
	enum batch_kind bk;
	size_t *bi, bn; /* [bn] the batch's moves (indices into mv, ascending) */
	uint64_t *dst;  /* [bn] destination mfns */
	uint8_t *dirty; /* B_PRECOPY: [bn] written since it was last copied */
	size_t ndirty, last_dirty;
	uint32_t rounds;
	uint64_t copy_ns; /* B_PRECOPY: what copying one page cost in the first round */
	size_t copied;          /* B_PRECOPY: pages [0, copied) had their first copy */
	uint64_t copy_total_ns; /* ... which took this long */
	bool prepared; /* prepare_dst done for this batch */
	bool got_paused, got_dirty, one_trip_sent;
	/* WINDOW, one trip: the old frames were cleared while the VMM remapped (tried: some
	 * may have been; ahead: all were, so the owner's placement may skip them) */
	bool clear_tried, cleared_ahead;
	uint64_t pause_ns;
	struct vcmad_run runs[MAX_RUNS];
	uint32_t nruns;
	uint32_t seq;  /* of the PAUSE, TRACK or DROP in flight (REMAP reuses the PAUSE's) */
	uint32_t dseq; /* of the DIRTY_READ in flight */
	struct vcma_timer deadline; /* the VM did not answer in time */
	struct vcma_timer slice;    /* J_COPY: the next slice, next loop turn */
	enum job_state st;
};

static inline struct vcmad_move *bmv(const struct vcmad_job *j, size_t i)
{
	return &j->mv[j->bi[i]];
}

static void step(struct vcmad_job *j);
static void batch_abandon(struct vcmad_job *j);

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static const struct vcmad_mem_ops *mem(const struct vcmad *d)
{
	return d->be.type->mem;
}

static void kick_waiting(struct vcmad *d)
{
	if (d->vacate.jobs)
		vcma_timer_arm(&d->loop, &d->vacate.step, vcmad_now(d));
}

/* Is move m still to be made: its VM is there and has the page where the job found
 * it (another job may have moved it, or the VM may have gone), and a relend may
 * still put it on a pool frame? */
static bool move_applies(const struct vcmad_job *j, const struct vcmad_move *m, struct vcmad_vm **vmp)
{
	struct vcmad_vm *vm = vcmad_vm_find(j->d, m->vm);

	*vmp = vm;
	if (!vm || m->gfn >= vm->ctl.ram_frames || vm->p2m[m->gfn] != m->src)
		return false;
	return j->kind != JOB_RELEND || !(vm->no_lend || (vm->gflags[m->gfn] & VCMAD_GFN_PINNED));
}

/* A job that moves pages to ordinary memory reserves a destination for every one of
 * them before it pauses anybody: a window that cannot be emptied fails at once,
 * with nothing moved, instead of halfway through. */
static int reserve_ordinary(struct vcmad *d, struct vcmad_job *j, size_t n)
{
	uint64_t avail = mem(d)->ram_free_frames(&d->be);

	if (avail < d->vacate.ord_reserved || avail - d->vacate.ord_reserved < n)
		return -ENOMEM;
	d->vacate.ord_reserved += n;
	j->reserved = n;
	return 0;
}

/* Reservation <-> frames in hand: a batch takes n frames out of the reserve, a batch
 * given up puts them back. */
static void reserve_take(struct vcmad *d, struct vcmad_job *j, uint64_t n)
{
	if (n > j->reserved)
		n = j->reserved;
	j->reserved -= n;
	d->vacate.ord_reserved -= n;
}

static void reserve_drop(struct vcmad *d, struct vcmad_job *j)
{
	d->vacate.ord_reserved -= j->reserved;
	j->reserved = 0;
}

/* Give one destination back: an idle pool frame unclaimed, or ordinary memory freed
 * and its reservation restored (the move will be retried, or the job ends). */
static void drop_dst(struct vcmad_job *j, uint64_t mfn)
{
	struct vcmad *d = j->d;

	if (j->kind == JOB_RELEND) {
		vcma_fmap_unclaim(&j->dst_pool->fm, mfn - j->dst_pool->fm.base, 1);
	} else {
		struct vcma_extent e = { mfn, 1 };

		mem(d)->ram_free(&d->be, &e, 1);
		j->reserved++;
		d->vacate.ord_reserved++;
	}
}

static void batch_free(struct vcmad_job *j)
{
	free(j->dst);
	free(j->bi);
	free(j->dirty);
	j->dst = NULL;
	j->bi = NULL;
	j->dirty = NULL;
	j->bn = 0;
	j->prepared = false;
	j->clear_tried = j->cleared_ahead = false;
}

static void release_dst(struct vcmad_job *j)
{
	vcma_core_batch_begin(&j->d->core);
	for (size_t i = 0; j->dst && i < j->bn; i++)
		drop_dst(j, j->dst[i]);
	vcma_core_batch_end(&j->d->core);
	batch_free(j);
}

static const char *kind_name(const struct vcmad_job *j)
{
	return j->kind == JOB_WINDOW ? "allocation" : j->kind == JOB_RELEND ? "relend" : "evict";
}

static void complete(struct vcmad_job *j, int err)
{
	struct vcmad *d = j->d;

	vcma_timer_cancel(&d->loop, &j->deadline);
	vcma_timer_cancel(&d->loop, &j->slice);
	if (j->dst || j->bi)
		release_dst(j);
	reserve_drop(d, j);
	if (j->kind == JOB_RELEND && err == -ENOMEM)
		err = 0; /* no idle pool frame left: the pool is full again, the job is done */
	if (err)
		log_warn("vacate: %s job stopped after %zu of %zu page(s): %s", kind_name(j), j->next_mv, j->nmv,
			 strerror(-err));
	j->st = J_DONE;
	for (struct vcmad_job **pp = &d->vacate.jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	j->next = d->vacate.done_jobs;
	d->vacate.done_jobs = j;
	vcmad_relend_kick(d);
	kick_waiting(d); /* a job that gave way or waited for this one's VM */
	if (j->done) {
		vcmad_job_done_fn done = j->done;

		j->done = NULL;
		err = done(j->done_arg, err);
	}
	if (err)
		d->vacate.jobs_failed++;
	else
		d->vacate.jobs_ok++;
}

static uint32_t merge_runs(struct vcmad_job *j, size_t upto)
{
	uint32_t n = 0;

	for (size_t i = 0; i < upto; i++) {
		const struct vcmad_move *m = bmv(j, i);

		if (n && j->runs[n - 1].gfn + j->runs[n - 1].count == m->gfn &&
		    j->runs[n - 1].mfn + j->runs[n - 1].count == j->dst[i]) {
			j->runs[n - 1].count++;
			continue;
		}
		if (n == MAX_RUNS)
			return UINT32_MAX;
		j->runs[n].gfn = m->gfn;
		j->runs[n].mfn = j->dst[i];
		j->runs[n].count = 1;
		n++;
	}
	return n;
}

static bool frame_idle(const struct vcma_fmap *fm, uint64_t idx)
{
	struct vcma_frame_info fi;

	return !vcma_fmap_get(fm, idx, &fi) && fi.state == VCMA_FRAME_FREE && !fi.claimed;
}

bool vcmad_vacate_busy(const struct vcmad *d)
{
	for (const struct vcmad_job *j = d->vacate.jobs; j; j = j->next)
		if (j->kind != JOB_RELEND)
			return true;
	return false;
}

bool vcmad_vacate_relend_yield(struct vcmad *d)
{
	bool freed = false;

	for (struct vcmad_job *j = d->vacate.jobs, *next; j; j = next) {
		next = j->next;
		/* a REMAP (or DROP) sent may be applied whatever happens here: that batch
		 * commits; every earlier state gives up with nothing moved */
		if (j->kind != JOB_RELEND || j->st == J_WAIT_REMAP || j->st == J_WAIT_DROP)
			continue;
		freed = freed || j->bn;
		if (j->vm) {
			d->vacate.relend_gave_way++;
			batch_abandon(j);
		}
		complete(j, 0);
	}
	return freed;
}

bool vcmad_vacate_pause_pending(const struct vcmad *d)
{
	for (const struct vcmad_job *j = d->vacate.jobs; j; j = j->next)
		if (j->st == J_WAIT_PAUSE && j->vm && j->vm->paused && !j->got_paused)
			return true;
	return false;
}

/*
 * Before the pause, not during it: destinations must read as zeros (a reported page
 * is not copied; its destination is what the guest finds) and those that will
 * receive a copy are faulted in now. Ordinary memory comes from the backend zeroed;
 * idle pool frames may still hold a vacated page, so relend clears them (one call
 * per run, sorted).
 */
static void prepare_dst(struct vcmad_job *j)
{
	struct vcmad *d = j->d;

	if (j->prepared)
		return;
	j->prepared = true;
	if (j->kind == JOB_RELEND)
		for (size_t i = 0, k; i < j->bn; i = k) {
			for (k = i + 1; k < j->bn && j->dst[k] == j->dst[k - 1] + 1; k++)
				;
			vcmad_mem_clear(&d->be, j->dst[i], k - i);
		}
	if (j->bk == B_PRECOPY)
		return; /* copied while the VM runs: a fault then costs no pause */
	for (size_t i = 0; i < j->bn; i++)
		if (!(j->vm->gflags[bmv(j, i)->gfn] & VCMAD_GFN_REPORTED))
			mem(d)->touch(&d->be, j->dst[i], 1);
}

/* Destinations for up to bn pages: idle pool frames from the top (relend), claimed
 * until the batch commits; or ordinary memory, taking fewer pages rather than fail
 * (one REMAP carries at most MAX_RUNS runs anyway). j->bn pages, or -ENOMEM. */
static int pick_dst(struct vcmad_job *j, size_t bn)
{
	struct vcmad *d = j->d;

	j->dst = calloc(bn, sizeof(*j->dst));
	j->bn = 0;
	if (!j->dst)
		return -ENOMEM;
	if (j->kind == JOB_RELEND) {
		struct vcma_fmap *fm = &j->dst_pool->fm;
		uint64_t idx = j->scan_top;

		/* frames above scan_top were idle-and-claimed by earlier batches (now lent)
		 * or not idle then; frames freed up there since wait for the next relend */
		while (idx > 0 && j->bn < bn) {
			uint64_t hi = idx, lo;

			/* the next run of FREE, unclaimed frames below idx, claimed as one:
			 * claiming refreshes the map's summaries, so once per run */
			if (!frame_idle(fm, --idx))
				continue;
			for (lo = idx; lo > 0 && hi - lo < bn - j->bn && frame_idle(fm, lo - 1); lo--)
				;
			idx = lo;
			if (vcma_fmap_claim(fm, lo, hi - lo))
				continue;
			for (uint64_t k = lo; k < hi; k++)
				j->dst[j->bn++] = fm->base + k;
		}
		j->scan_top = idx;
		qsort(j->dst, j->bn, sizeof(*j->dst), cmp_u64);
		return j->bn ? 0 : -ENOMEM;
	}
	struct vcma_extent ext[MAX_RUNS];
	int n = -ENOMEM;

	while (bn && (n = mem(d)->ram_alloc(&d->be, bn, ext, MAX_RUNS)) < 0 && mem(d)->ram_free_frames(&d->be) >= bn)
		bn /= 2;
	if (n < 0)
		return -ENOMEM;
	for (int e = 0; e < n; e++)
		for (uint64_t k = 0; k < ext[e].count; k++)
			j->dst[j->bn++] = ext[e].start + k;
	reserve_take(d, j, j->bn);
	return 0;
}

static const struct vcmad_vm_pauser_ops pauser_ops;
static void adapt_batch(struct vcmad *d, uint64_t ns, size_t bn);
static size_t pause_budget(const struct vcmad_job *j);
static void next_round(struct vcmad_job *j);

static void arm_deadline(struct vcmad_job *j)
{
	vcma_timer_arm_in(&j->d->loop, &j->deadline, (uint64_t)j->d->conf.pause_timeout_ms * 1000000ull);
}

static bool can_drop(const struct vcmad_job *j, const struct vcmad_vm *vm)
{
	return j->d->conf.precopy && vm->ctl.one_trip && vm->ctl.ops->drop && !j->no_drop;
}

static bool can_track(const struct vcmad_job *j, const struct vcmad_vm *vm)
{
	return j->d->conf.precopy && vm->ctl.dirty_log && vm->ctl.ops->track && !vm->no_dirty_log && !j->no_precopy;
}

/*
 * The next batch for vm, from next_mv on: its kind and its moves (j->bi, j->bn).
 * Reported pages go first, in DROPs, when the VMM takes them; the rest is pre-copied
 * when the VMM logs writes, else paused for in batches sized to max_pause_us.
 */
static int form_batch(struct vcmad_job *j, struct vcmad_vm *vm)
{
	struct vcmad_vm *same;
	size_t cap, i;

	j->bk = can_track(j, vm) ? B_PRECOPY : B_PAUSE;
	if (can_drop(j, vm))
		for (i = j->next_mv; i < j->nmv && j->mv[i].vm == vm->ctl.id; i++)
			if (move_applies(j, &j->mv[i], &same) && (vm->gflags[j->mv[i].gfn] & VCMAD_GFN_REPORTED)) {
				j->bk = B_DROP;
				break;
			}
	cap = j->bk == B_PAUSE ? j->d->vacate.batch : PRECOPY_MAX;
	j->bi = calloc(cap, sizeof(*j->bi));
	if (!j->bi)
		return -ENOMEM;
	j->bn = 0;
	for (i = j->next_mv; i < j->nmv && j->mv[i].vm == vm->ctl.id && j->bn < cap; i++) {
		if (!move_applies(j, &j->mv[i], &same))
			continue; /* moved already (a DROP, another job): skipped */
		if (j->bk == B_DROP && !(vm->gflags[j->mv[i].gfn] & VCMAD_GFN_REPORTED))
			continue;
		j->bi[j->bn++] = i;
	}
	return 0;
}

/* The batch's gfns as runs (mfn 0), for TRACK and UNTRACK: never more runs than
 * the batch's REMAP has. */
static uint32_t gfn_runs(const struct vcmad_job *j, struct vcmad_run *out)
{
	uint32_t n = 0;

	for (size_t i = 0; i < j->bn; i++) {
		uint64_t gfn = bmv(j, i)->gfn;

		if (n && out[n - 1].gfn + out[n - 1].count == gfn) {
			out[n - 1].count++;
			continue;
		}
		out[n++] = (struct vcmad_run){ gfn, 0, 1 };
	}
	return n;
}

/* Stop logging the batch's pages (pre-copy given up); no answer. */
static void untrack(struct vcmad_job *j)
{
	struct vcmad_run runs[MAX_RUNS];

	if (j->bk == B_PRECOPY && j->vm && !j->vm->ctl.lost)
		j->vm->ctl.ops->untrack(&j->vm->ctl, j->vm->seq, runs, gfn_runs(j, runs));
}

/* The batch is given up with nothing moved: the VM resumed if paused, its control
 * let go, the destinations handed back. */
static void batch_abandon(struct vcmad_job *j)
{
	struct vcmad_vm *vm = j->vm;

	vcma_timer_cancel(&j->d->loop, &j->deadline);
	vcma_timer_cancel(&j->d->loop, &j->slice);
	if (vm) {
		untrack(j);
		for (size_t i = 0; j->bk == B_DROP && i < j->bn; i++)
			vm->gflags[bmv(j, i)->gfn] &= (uint8_t)~VCMAD_GFN_MOVING;
		uint64_t ns = vcmad_vm_resume(vm);

		if (j->bk == B_PAUSE && ns)
			adapt_batch(j->d, ns, j->bn);
		if (j->bk == B_DROP)
			vcmad_vm_reuse_flush(vm);
	}
	release_dst(j);
	j->vm = NULL;
	j->st = J_READY;
	kick_waiting(j->d);
}

/* Advance a READY job: skip moves that no longer apply, then start the next batch. */
static void step(struct vcmad_job *j)
{
	struct vcmad *d = j->d;
	struct vcmad_vm *vm = NULL;
	int rc;

	while (j->next_mv < j->nmv && (!move_applies(j, &j->mv[j->next_mv], &vm) ||
				       (vm->unresponsive && j->kind != JOB_WINDOW))) {
		/* made by this job already (its destination was taken then); or the VM
		 * went away (its frames are FREE now), the page moved (another job took it),
		 * or it may no longer go onto a pool frame; or the VM does not answer PAUSE,
		 * and only an allocation needs its pages moved: no destination needed */
		if (j->kind != JOB_RELEND && j->mv[j->next_mv].src != MOVED)
			reserve_take(d, j, 1);
		j->next_mv++;
	}
	if (j->next_mv == j->nmv) {
		complete(j, 0);
		return;
	}
	if (j->kind == JOB_RELEND && vcmad_vacate_busy(d)) {
		/* relending is what the host does when it has nothing better to do: it
		 * gives way between batches; the rest waits for the next quiet spell */
		complete(j, 0);
		return;
	}
	if (vm->unresponsive) {
		/* an allocation cannot have its window without this VM's pages: give up
		 * now rather than after another PAUSE timeout */
		complete(j, -EBUSY);
		return;
	}
	if (vm->pauser || vm->ctl.lost)
		return; /* another job has its control, or it is going: wait (kick_waiting) */
	if (form_batch(j, vm) || pick_dst(j, j->bn)) {
		batch_free(j);
		if (j->kind != JOB_RELEND)
			log_warn("vacate: no ordinary memory for a batch of guest %u", vm->ctl.id);
		complete(j, -ENOMEM);
		return;
	}
	/* a REMAP holds at most MAX_RUNS runs: shrink the batch if the destinations are
	 * that scattered */
	while ((j->nruns = merge_runs(j, j->bn)) == UINT32_MAX) {
		size_t keep = j->bn / 2;

		for (size_t i = keep; i < j->bn; i++)
			drop_dst(j, j->dst[i]);
		j->bn = keep;
	}
	j->vm = vm;
	if (j->bk != B_PAUSE) {
		struct vcmad_run runs[MAX_RUNS];

		vcmad_vm_hold(vm, j, &pauser_ops);
		j->seq = ++vm->seq;
		arm_deadline(j);
		if (j->bk == B_DROP) {
			/* the VMM maps the destinations as they are: they must read as zeros first */
			prepare_dst(j);
			for (size_t i = 0; i < j->bn; i++)
				vm->gflags[bmv(j, i)->gfn] |= VCMAD_GFN_MOVING;
			j->st = J_WAIT_DROP;
			rc = vm->ctl.ops->drop(&vm->ctl, j->seq, j->runs, j->nruns);
		} else {
			/* TRACK first: the VMM write-protects while the destinations are prepared
			 * here; TRACKING is read (and the copy starts) only after both */
			j->dirty = calloc(j->bn, 1);
			j->st = J_WAIT_TRACK;
			rc = j->dirty ? vm->ctl.ops->track(&vm->ctl, j->seq, runs, gfn_runs(j, runs)) : -ENOMEM;
			if (!rc)
				prepare_dst(j);
		}
		if (rc)
			batch_abandon(j); /* the VM is reported lost (or no memory): wait for that */
		return;
	}
	prepare_dst(j);
	j->st = J_WAIT_PAUSE;
	j->got_paused = false;
	j->seq = vm->seq + 1; /* the seq of this PAUSE: a synchronous backend answers at once */
	arm_deadline(j);
	rc = vcmad_vm_pause(vm, j, &pauser_ops);
	if (rc && j->st == J_WAIT_PAUSE) {
		/* the backend reports the VM lost; until then the job waits */
		vcma_timer_cancel(&d->loop, &j->deadline);
		release_dst(j);
		j->st = J_READY;
		j->vm = NULL;
	}
}

/*
 * Keep a pause under max_pause_us: track what a pause costs per page (a moving
 * average that counts the fixed part of a pause too, so it errs on the safe side)
 * and size the next batch to fill 60% of the bound. A pause over the bound halves
 * the batch at once; growth is at most 2x per pause, so one fast pause (the VM's
 * vCPUs happened to be parked already) does not make the next one overshoot.
 */
static void adapt_batch(struct vcmad *d, uint64_t ns, size_t bn)
{
	uint64_t bound = (uint64_t)d->conf.max_pause_us * 1000, per_page, want;
	struct vcmad_vacate *v = &d->vacate;

	if (!bn)
		return;
	per_page = ns / bn ? ns / bn : 1;
	v->ns_per_page = v->ns_per_page ? (3 * v->ns_per_page + per_page) / 4 : per_page;
	if (ns > bound) {
		want = v->batch / 2;
	} else {
		want = bound * 6 / 10 / v->ns_per_page;
		if (want > 2ull * v->batch)
			want = 2ull * v->batch;
	}
	v->batch = (uint32_t)(want < MIN_BATCH ? MIN_BATCH : want > MAX_BATCH ? MAX_BATCH : want);
}

static void resume(struct vcmad_job *j)
{
	struct vcmad *d = j->d;
	uint64_t ns = vcmad_vm_resume(j->vm);

	if (j->bk == B_PAUSE)
		adapt_batch(d, ns, j->bn);
	j->vm = NULL;
	kick_waiting(d); /* jobs waiting for this VM */
}

/* Copy the batch's pages in use (all, or those marked dirty) to their destinations.
 * The state now, not when the job began: the guest may have reported a page free
 * (or reused it) since; a reported page is dropped and its destination reads as
 * zeros (prepare_dst) or as an earlier copy of the page. Returns pages copied. */
/* Do the batch's page i's contents move with it (it is not a reported page)? Then
 * copy_pages copies it, reading its old frame through the backend. */
static bool carries_data(const struct vcmad_job *j, size_t i)
{
	return !(j->vm->gflags[bmv(j, i)->gfn] & VCMAD_GFN_REPORTED);
}

static size_t copy_span(struct vcmad_job *j, size_t from, size_t to, bool only_dirty)
{
	struct vcmad *d = j->d;
	size_t n = 0;

	for (size_t i = from; i < to; i++) {
		const struct vcmad_move *m = bmv(j, i);

		if ((only_dirty && !j->dirty[i]) || !carries_data(j, i))
			continue;
		mem(d)->copy(&d->be, j->dst[i], m->src, 1);
		n++;
	}
	return n;
}

static size_t copy_pages(struct vcmad_job *j, bool only_dirty)
{
	return copy_span(j, 0, j->bn, only_dirty);
}

/* Each run of consecutive old frames of the batch, as [first, first+count). */
static void for_src_runs(struct vcmad_job *j, void (*fn)(struct vcmad_job *j, uint64_t mfn, uint64_t n))
{
	for (size_t i = 0, k; i < j->bn; i = k) {
		for (k = i + 1; k < j->bn && bmv(j, k)->src == bmv(j, k - 1)->src + 1; k++)
			;
		fn(j, bmv(j, i)->src, k - i);
	}
}

/*
 * An allocation's window must reach its owner cleared. Its old frames are cleared here,
 * while the VMM remaps and resumes (one trip), instead of after REMAPPED: the VM is
 * parked and never reads them again once the remap is done. A VMM that refuses
 * REMAP_RESUME stays paused (PROTOCOL.md §9.1), and restore() copies the pages back from
 * their new frames, which hold every byte, before it is resumed.
 */
static void clear_ahead(struct vcmad_job *j)
{
	j->clear_tried = j->cleared_ahead = j->kind == JOB_WINDOW;
	if (!j->clear_tried)
		return;
	/* runs of consecutive old frames; a page that was copied was just read, so its
	 * frame holds memory and is cleared without looking for holes */
	for (size_t i = 0, k; i < j->bn; i = k) {
		bool held = carries_data(j, i);
		uint64_t mfn = bmv(j, i)->src;
		int rc;

		for (k = i + 1; k < j->bn && bmv(j, k)->src == bmv(j, k - 1)->src + 1 && carries_data(j, k) == held; k++)
			;
		rc = held ? vcmad_mem_clear_held(&j->d->be, mfn, k - i) : vcmad_mem_clear(&j->d->be, mfn, k - i);
		if (rc)
			j->cleared_ahead = false; /* the owner's placement clears what is not marked */
	}
}

static void restore(struct vcmad_job *j)
{
	struct vcmad *d = j->d;

	for (size_t i = 0; i < j->bn; i++) {
		const struct vcmad_move *m = bmv(j, i);

		/* a reported page was not copied: its old frame now reads as zeros, as its
		 * new one would have */
		if (!(j->vm->gflags[m->gfn] & VCMAD_GFN_REPORTED))
			mem(d)->copy(&d->be, m->src, j->dst[i], 1);
	}
	j->clear_tried = j->cleared_ahead = false;
}

static void mark_run(struct vcmad_job *j, uint64_t mfn, uint64_t n)
{
	vcma_core_mark_zeroed(&j->d->core, mfn, n);
}

/* Paused, and copied: move the pages. A VMM that takes REMAP_RESUME resumes itself
 * and answers after (one round trip per pause); the pause ends as it is sent. */
static void send_remap(struct vcmad_job *j)
{
	struct vcmad_vm *vm = j->vm;
	int rc;

	j->st = J_WAIT_REMAP;
	arm_deadline(j);
	j->one_trip_sent = j->d->conf.precopy && vm->ctl.one_trip && vm->ctl.ops->remap_resume;
	if (j->one_trip_sent) {
		j->pause_ns = vcmad_vm_unpause(vm, false);
		rc = vm->ctl.ops->remap_resume(&vm->ctl, j->seq, j->runs, j->nruns);
		if (!rc)
			clear_ahead(j);
	} else {
		rc = vm->ctl.ops->remap(&vm->ctl, j->seq, j->runs, j->nruns);
	}
	if (rc)
		vcma_timer_cancel(&j->d->loop, &j->deadline); /* the VM is reported lost; its detach ends the batch */
}

static void job_paused(void *pauser, struct vcmad_vm *vm, uint32_t seq)
{
	struct vcmad_job *j = pauser;

	if (j->st != J_WAIT_PAUSE || j->seq != seq || j->got_paused)
		return; /* a late answer to a PAUSE that timed out */
	vm->pause_misses = 0;
	j->got_paused = true;
	if (j->bk == B_PRECOPY && !j->got_dirty)
		return; /* the last DIRTY comes next */
	vcma_timer_cancel(&j->d->loop, &j->deadline);
	if (j->bk == B_PRECOPY) {
		vm->quiet = !j->ndirty;
		if (j->ndirty > pause_budget(j)) {
			/* the VM wrote more than one pause may copy (it was quiet before, or
			 * it burst): resume it at once and go on copying while it runs */
			vcmad_vm_unpause(vm, true);
			j->d->vacate.precopy_rounds++;
			j->d->vacate.precopy_recopied += copy_pages(j, true);
			next_round(j);
			return;
		}
		j->d->vacate.precopy_final_pages += copy_pages(j, true);
	} else {
		copy_pages(j, false);
	}
	send_remap(j);
}

/* The batch moved (REMAPPED or DROPPED 0): the p2m and the frame map follow. The
 * bookkeeping is the host's own and finishes before the loop reads another message
 * from this VM, so nothing can see it half done; the old frames are no longer mapped
 * by the VM. */
static void commit(struct vcmad_job *j)
{
	struct vcmad *d = j->d;
	struct vcmad_vm *vm = j->vm;

	vcma_core_batch_begin(&d->core);
	for (size_t i = 0; i < j->bn; i++) {
		struct vcmad_move *m = bmv(j, i);
		struct vcma_pool *p = vcma_core_pool_of(&d->core, m->src);
		bool reported = vm->gflags[m->gfn] & VCMAD_GFN_REPORTED;

		vm->p2m[m->gfn] = j->dst[i];
		vcmad_durable_p2m(&vm->durable, m->gfn, 1);
		if (p) {
			vcma_pool_unlend(p, m->src - p->fm.base);
			if (reported)
				p->stats.vacated_lent_free++;
			else
				p->stats.vacated_lent_used++;
		}
		/* the old frame held the guest's page. An ordinary one goes back to the
		 * backend (which zeroes it); a pool frame is now FREE, and every way out
		 * of FREE clears it (a region when it is handed out, lending at attach,
		 * relend's prepare_dst), so an allocation's window is cleared once, whole,
		 * when it completes, rather than page by page here (or batch by batch
		 * while the VMM remaps, one trip: clear_ahead) */
		if (p) {
			if (j->kind != JOB_WINDOW)
				mem(d)->zero(&d->be, m->src, 1);
		} else {
			struct vcma_extent e = { m->src, 1 };

			mem(d)->ram_free(&d->be, &e, 1);
		}
		if (j->kind == JOB_RELEND) {
			struct vcma_fmap *fm = &j->dst_pool->fm;

			vcma_fmap_unclaim(fm, j->dst[i] - fm->base, 1);
			vcma_fmap_lend(fm, j->dst[i] - fm->base, vm->ctl.id, m->gfn, !reported);
		}
	}
	if (j->cleared_ahead)
		for_src_runs(j, mark_run); /* FREE, claimed by this window: its owner needs no second clear */
	for (size_t i = 0; i < j->bn; i++)
		bmv(j, i)->src = MOVED;
	vcma_core_batch_end(&d->core);
	batch_free(j);
}

static void job_remapped(void *pauser, struct vcmad_vm *vm, uint32_t seq, int32_t status)
{
	struct vcmad_job *j = pauser;
	struct vcmad *d = j->d;
	uint64_t ns;

	if (j->st != J_WAIT_REMAP || j->seq != seq)
		return;
	vcma_timer_cancel(&d->loop, &j->deadline);
	/* the VM runs from here (on its new frames, or on its old ones if refused) */
	ns = j->one_trip_sent ? j->pause_ns : vcmad_vm_unpause(vm, true);
	if (j->bk == B_PAUSE)
		adapt_batch(d, ns, j->bn);
	if (status) {
		log_warn("guest %u (%s): REMAP failed (%s); vacate abandoned", vm->ctl.id, vm->ctl.name, strerror(status));
		if (j->one_trip_sent) {
			/* it stayed paused: put its bytes back, then batch_abandon() resumes it */
			vcmad_vm_still_paused(vm);
			if (j->clear_tried)
				restore(j);
		}
		batch_abandon(j);
		complete(j, -EIO);
		return;
	}
	commit(j);
	vcmad_vm_let_go(vm);
	j->vm = NULL;
	j->st = J_READY;
	kick_waiting(d); /* jobs waiting for this VM */
	step(j);
}

static void job_dropped(void *pauser, struct vcmad_vm *vm, uint32_t seq, int32_t status)
{
	struct vcmad_job *j = pauser;
	struct vcmad *d = j->d;
	size_t n = j->bn;

	if (j->st != J_WAIT_DROP || j->seq != seq)
		return;
	if (status) {
		/* nothing moved: these pages go through pauses like the rest */
		log_warn("guest %u (%s): DROP refused (%s); its reported pages will be moved in pauses", vm->ctl.id,
			 vm->ctl.name, strerror(status));
		j->no_drop = true;
		batch_abandon(j);
		step(j);
		return;
	}
	vcma_timer_cancel(&d->loop, &j->deadline);
	for (size_t i = 0; i < j->bn; i++)
		vm->gflags[bmv(j, i)->gfn] &= (uint8_t)~VCMAD_GFN_MOVING;
	commit(j);
	d->vacate.drops++;
	d->vacate.dropped_pages += n;
	/* REUSEs of these pages waited for this: they now read as zeros */
	vcmad_vm_reuse_flush(vm);
	vcmad_vm_let_go(vm);
	j->vm = NULL;
	j->st = J_READY;
	kick_waiting(d);
	step(j);
}

static void dirty_read(struct vcmad_job *j)
{
	struct vcmad_vm *vm = j->vm;

	memset(j->dirty, 0, j->bn);
	j->ndirty = 0;
	j->got_dirty = false;
	j->dseq = ++vm->seq;
	if (vm->ctl.ops->dirty_read(&vm->ctl, j->dseq))
		vcma_timer_cancel(&j->d->loop, &j->deadline); /* the VM is reported lost */
}

/* Pre-copy gave up: the VM writes faster than the copy. The old way from here. */
static void fall_back(struct vcmad_job *j)
{
	struct vcmad_vm *vm = j->vm;

	log_info("guest %u (%s): pre-copy did not converge (%zu of %zu page(s) written again after %u round(s)); "
		 "pausing in batches instead", vm->ctl.id, vm->ctl.name, j->ndirty, j->bn, j->rounds);
	j->d->vacate.precopy_fallbacks++;
	j->no_precopy = true;
	batch_abandon(j);
	step(j);
}

/* Pages one pause may copy within the pause budget, at this batch's copy rate. */
static size_t pause_budget(const struct vcmad_job *j)
{
	/* a page copy costs at least COPY_NS_MIN, whatever a coarse clock says */
	uint64_t bound = (uint64_t)j->d->conf.max_pause_us * 1000 * 6 / 10,
		 per = j->copy_ns > COPY_NS_MIN ? j->copy_ns : COPY_NS_MIN;
	uint64_t n = bound / 2 / per; /* half: the pause also holds the round trip and the remap */

	return n ? n : 1;
}

static void go_pause(struct vcmad_job *j)
{
	struct vcmad_vm *vm = j->vm;

	j->got_paused = false;
	j->st = J_WAIT_PAUSE;
	j->seq = vm->seq + 1;
	arm_deadline(j);
	if (vcmad_vm_pause(vm, j, &pauser_ops)) {
		vcma_timer_cancel(&j->d->loop, &j->deadline); /* the VM is reported lost */
		return;
	}
	/* with PAUSE, in the same trip: answered once every vCPU is parked */
	dirty_read(j);
}

/* A round ended with the VM running and what it wrote copied: pause for the rest if
 * few enough are left, give up if the dirty set stopped shrinking, or read again. */
static void next_round(struct vcmad_job *j)
{
	j->rounds++;
	if (j->ndirty <= pause_budget(j)) {
		go_pause(j);
	} else if (j->rounds >= PRECOPY_ROUNDS || j->ndirty * 10 >= j->last_dirty * 9) {
		fall_back(j);
	} else {
		j->last_dirty = j->ndirty;
		j->st = J_WAIT_DIRTY;
		arm_deadline(j);
		dirty_read(j);
	}
}

/*
 * The batch's first copy, while the VM runs and its writes are logged: at once for an
 * allocation or an eviction; RELEND_SLICE pages per loop turn for relend, whose faults
 * on idle pool frames would otherwise hold the loop for milliseconds, giving way
 * between slices to any other job (ARCHITECTURE.md, "Relending in slices").
 */
static void copy_first(struct vcmad_job *j)
{
	struct vcmad *d = j->d;
	size_t to = j->kind == JOB_RELEND && j->bn - j->copied > RELEND_SLICE ? j->copied + RELEND_SLICE : j->bn;
	uint64_t t0 = vcmad_now(d);

	d->vacate.precopy_pages += copy_span(j, j->copied, to, false);
	j->copy_total_ns += vcmad_now(d) - t0;
	j->copied = to;
	if (to < j->bn) {
		d->vacate.copy_slices++;
		vcma_timer_arm(&d->loop, &j->slice, vcmad_now(d)); /* runs next turn */
		return;
	}
	j->copy_ns = j->copy_total_ns / (j->bn ? j->bn : 1);
	j->rounds = 0;
	j->last_dirty = j->bn;
	if (j->vm->quiet) {
		/* it wrote nothing during its last batch's first round: pause for the rest
		 * at once (PAUSE and DIRTY_READ in one trip); if it wrote more than one
		 * pause may copy after all, job_paused resumes it and the rounds go on */
		go_pause(j);
		return;
	}
	j->st = J_WAIT_DIRTY;
	arm_deadline(j);
	dirty_read(j);
}

static void slice_cb(struct vcma_timer *t)
{
	struct vcmad_job *j = (struct vcmad_job *)((char *)t - offsetof(struct vcmad_job, slice));

	if (j->st != J_COPY || !j->vm)
		return;
	if (vcmad_vacate_busy(j->d)) {
		/* another job came (an allocation, an eviction): relending gives way now,
		 * not after the batch; nothing moved, the rest waits for the next quiet */
		j->d->vacate.relend_gave_way++;
		batch_abandon(j);
		step(j);
		return;
	}
	copy_first(j);
}

static void job_tracking(void *pauser, struct vcmad_vm *vm, uint32_t seq, int32_t status)
{
	struct vcmad_job *j = pauser;

	if (j->st != J_WAIT_TRACK || j->seq != seq)
		return;
	vcma_timer_cancel(&j->d->loop, &j->deadline);
	if (status) {
		log_info("guest %u (%s) cannot log writes (%s): it is vacated by pausing it", vm->ctl.id, vm->ctl.name,
			 strerror(status));
		vm->no_dirty_log = true;
		j->bk = B_PAUSE; /* nothing is tracked: no UNTRACK */
		batch_abandon(j);
		step(j);
		return;
	}
	prepare_dst(j); /* done already, unless the backend answered TRACK at once */
	/* every write from now on is logged: copy everything while the VM runs */
	j->d->vacate.precopy_batches++;
	j->copied = 0;
	j->copy_total_ns = 0;
	j->st = J_COPY;
	copy_first(j);
}

static ssize_t batch_index(const struct vcmad_job *j, uint64_t gfn)
{
	size_t lo = 0, hi = j->bn;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t g = bmv(j, mid)->gfn;

		if (g == gfn)
			return (ssize_t)mid;
		if (g < gfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static void job_dirty(void *pauser, struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n,
		      bool last, int32_t status)
{
	struct vcmad_job *j = pauser;
	struct vcmad *d = j->d;

	(void)vm;
	if ((j->st != J_WAIT_DIRTY && j->st != J_WAIT_PAUSE) || j->bk != B_PRECOPY || j->dseq != seq || j->got_dirty)
		return;
	/* gfns outside the batch are not ours to care about: ignored */
	for (uint32_t r = 0; r < n; r++)
		for (uint64_t k = 0; k < runs[r].count; k++) {
			ssize_t i = batch_index(j, runs[r].gfn + k);

			if (i >= 0 && !j->dirty[i]) {
				j->dirty[i] = 1;
				j->ndirty++;
			}
		}
	if (!last)
		return;
	if (status) {
		/* no log: every page counts as written */
		memset(j->dirty, 1, j->bn);
		j->ndirty = j->bn;
	}
	j->got_dirty = true;
	if (j->st == J_WAIT_PAUSE) {
		if (j->got_paused) {
			j->got_paused = false;
			job_paused(j, vm, j->seq);
		}
		return;
	}
	vcma_timer_cancel(&d->loop, &j->deadline);
	/* a round while the VM ran: copy what was written during it, then decide */
	if (!j->rounds)
		vm->quiet = !j->ndirty;
	d->vacate.precopy_rounds++;
	d->vacate.precopy_recopied += copy_pages(j, true);
	next_round(j);
}

static const struct vcmad_vm_pauser_ops pauser_ops = {
	.paused = job_paused,
	.remapped = job_remapped,
	.tracking = job_tracking,
	.dirty = job_dirty,
	.dropped = job_dropped,
};

/* The VM did not answer in time. */
static void deadline_cb(struct vcma_timer *t)
{
	struct vcmad_job *j = (struct vcmad_job *)((char *)t - offsetof(struct vcmad_job, deadline));
	struct vcmad *d = j->d;
	struct vcmad_vm *vm = j->vm;

	if (!vm)
		return;
	if (j->st == J_WAIT_PAUSE && !j->got_paused) {
		log_warn("guest %u (%s) did not answer PAUSE within %u ms; vacate abandoned", vm->ctl.id, vm->ctl.name,
			 d->conf.pause_timeout_ms);
		batch_abandon(j); /* RESUME cancels the pause, whenever the VMM gets to it */
		complete(j, -ETIMEDOUT);
		vcmad_vm_pause_missed(vm);
	} else if (j->st == J_WAIT_TRACK || j->st == J_WAIT_DIRTY || j->st == J_WAIT_PAUSE) {
		/* its log is late, not its memory: nothing moved, so the batch is given up
		 * (UNTRACK follows the TRACK on the channel; a late answer is ignored by its
		 * seq) and this job pauses the VM in batches instead */
		log_warn("guest %u (%s) did not answer %s within %u ms; pausing it in batches instead", vm->ctl.id,
			 vm->ctl.name, j->st == J_WAIT_TRACK ? "TRACK" : "DIRTY_READ", d->conf.pause_timeout_ms);
		d->vacate.precopy_fallbacks++;
		j->no_precopy = true;
		batch_abandon(j);
		step(j);
	} else {
		/* a REMAP or DROP not answered: its memory state is unknown, the owner cuts
		 * it off, which ends the batch */
		vm->ctl.ev->lost(&vm->ctl, j->st == J_WAIT_DROP ? "VM did not answer DROP in time"
								  : "paused VM did not answer REMAP in time", true);
	}
}

static int cmp_move(const void *a, const void *b)
{
	const struct vcmad_move *x = a, *y = b;

	if (x->vm != y->vm)
		return x->vm < y->vm ? -1 : 1;
	return x->gfn < y->gfn ? -1 : x->gfn > y->gfn;
}

static void step_waiting_cb(struct vcma_timer *t)
{
	struct vcmad *d = (struct vcmad *)((char *)t - offsetof(struct vcmad, vacate.step));
	struct vcmad_job *j, *next;

	for (j = d->vacate.jobs; j; j = next) {
		next = j->next;
		if (j->st == J_READY)
			step(j);
	}
}

void vcmad_vacate_init(struct vcmad *d)
{
	memset(&d->vacate, 0, sizeof(d->vacate));
	d->vacate.batch = 256;
	vcma_timer_init(&d->vacate.step, step_waiting_cb);
}

/* A job of kind over mv[0..n) (taken over); ordinary memory reserved for evictions
 * and allocations. Not started yet. */
static struct vcmad_job *job_new(struct vcmad *d, enum job_kind kind, struct vcmad_move *mv, size_t n)
{
	struct vcmad_job *j = calloc(1, sizeof(*j));

	if (!j) {
		free(mv);
		return NULL;
	}
	if (kind != JOB_RELEND && reserve_ordinary(d, j, n)) {
		free(mv);
		free(j);
		return NULL;
	}
	qsort(mv, n, sizeof(*mv), cmp_move);
	j->d = d;
	j->kind = kind;
	j->mv = mv;
	j->nmv = n;
	j->st = J_READY;
	vcma_timer_init(&j->deadline, deadline_cb);
	vcma_timer_init(&j->slice, slice_cb);
	return j;
}

static void job_go(struct vcmad_job *j)
{
	j->next = j->d->vacate.jobs;
	j->d->vacate.jobs = j;
	step(j);
}

int vcmad_vacate_window(struct vcmad *d, struct vcma_pool *p, uint64_t start, uint64_t count,
			vcmad_job_done_fn done, void *arg, struct vcmad_job **jobp)
{
	struct vcma_vacate_item *items = calloc(count, sizeof(*items));
	struct vcmad_move *mv = calloc(count, sizeof(*mv));
	struct vcmad_job *j;
	int64_t got;

	if (!items || !mv) {
		free(items);
		free(mv);
		return -ENOMEM;
	}
	got = vcma_fmap_collect_lent(&p->fm, start, count, items, count);
	for (int64_t i = 0; i < got; i++)
		mv[i] = (struct vcmad_move){ items[i].guest, items[i].gfn, p->fm.base + items[i].idx };
	free(items);
	j = job_new(d, JOB_WINDOW, mv, got < 0 ? 0 : (size_t)got);
	if (!j) {
		/* refused before anybody is paused: the window stays as it was */
		log_warn("vacate: window in pool %s needs %lld page(s) moved, more than the free ordinary memory",
			 p->cfg.name, (long long)got);
		return -ENOMEM;
	}
	j->done = done;
	j->done_arg = arg;
	*jobp = j;
	job_go(j); /* may complete at once when nothing is left to move */
	return 0;
}

void vcmad_job_forget(struct vcmad_job *j)
{
	j->done = NULL;
}

int vcmad_vacate_evict(struct vcmad *d, struct vcmad_move *mv, size_t n, vcmad_job_done_fn done, void *arg)
{
	struct vcmad_job *j = job_new(d, JOB_EVICT, mv, n);

	if (!j) {
		log_warn("vacate: %zu page(s) to move but not that much ordinary memory free", n);
		return -ENOMEM;
	}
	j->done = done;
	j->done_arg = arg;
	job_go(j);
	return 0;
}

int vcmad_vacate_relend(struct vcmad *d, struct vcma_pool *p, struct vcmad_move *mv, size_t n)
{
	struct vcmad_job *j = job_new(d, JOB_RELEND, mv, n);

	if (!j)
		return -ENOMEM;
	j->dst_pool = p;
	j->scan_top = p->fm.nframes;
	job_go(j);
	return 0;
}

void vcmad_vacate_vm_gone(struct vcmad_vm *vm)
{
	struct vcmad *d = vm->d;

	for (struct vcmad_job *j = d->vacate.jobs; j; j = j->next) {
		if (j->vm != vm)
			continue;
		/* the batch never committed: the scratch destinations go back; the VM's
		 * own frames are released by its detach */
		vcma_timer_cancel(&d->loop, &j->deadline);
		vcma_timer_cancel(&d->loop, &j->slice);
		release_dst(j);
		j->st = J_READY;
		j->vm = NULL;
	}
	vm->pauser = NULL;
	vm->pauser_ops = NULL;
	vcmad_vm_set_paused(vm, false);
	kick_waiting(d);
}

void vcmad_vacate_reap(struct vcmad *d)
{
	while (d->vacate.done_jobs) {
		struct vcmad_job *j = d->vacate.done_jobs;

		d->vacate.done_jobs = j->next;
		free(j->mv);
		batch_free(j);
		free(j);
	}
}

void vcmad_vacate_cancel_all(struct vcmad *d)
{
	while (d->vacate.jobs) {
		struct vcmad_job *j = d->vacate.jobs;

		if (j->vm && j->vm->pauser == j)
			resume(j);
		release_dst(j);
		complete(j, -ESHUTDOWN);
	}
	vcma_timer_cancel(&d->loop, &d->vacate.step);
	vcmad_vacate_reap(d);
}
