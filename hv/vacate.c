// SPDX-License-Identifier: MIT
/*
 * vacate.c - move lent frames out of a claimed window, asynchronously.
 *
 * A job holds an allocation plan (a claimed window) and the list of moves: for each
 * lent frame in it, the (guest, gfn) it backs. Moves are done per VM in batches:
 *
 *   pick destinations (ordinary memory, contiguous runs first)      before pausing
 *   PAUSE -> PAUSED
 *   copy LENT_USED frames (LENT_FREE ones are dropped: destinations read as zeros)
 *   REMAP -> REMAPPED; only now the p2m and frame map change
 *   RESUME
 *
 * so a failure at any step leaves every page where the VM can find it: before
 * REMAPPED nothing changed but scratch destinations, which go back to the allocator.
 * The batch size adapts so one pause stays under max_pause_us. Jobs wait for each
 * other only when they need the same VM; everything else, including jobs in other
 * pools, proceeds between the steps of the loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vcma_status.h"
#include "vcmad.h"

#define MIN_BATCH 16u
#define MAX_BATCH 4096u

enum job_state { J_READY, J_WAIT_PAUSE, J_WAIT_REMAP, J_DONE };

enum job_kind {
	JOB_ALLOC,  /* empty a claimed window, then answer the ALLOC */
	JOB_EVICT,  /* move pages off pool frames: compact, drain, pin */
	JOB_RELEND, /* move pages from ordinary memory onto idle pool frames */
};

struct move {
	uint32_t guest;
	uint64_t gfn;
	uint64_t src; /* mfn now backing gfn */
};

struct vcmad_job {
	struct vcmad *d;
	struct vcmad_job *next;
	enum job_kind kind;
	struct vcma_pool *dst_pool; /* RELEND: where destinations come from */
	uint64_t scan_top;          /* RELEND: frames at and above this were looked at */
	uint32_t pin_guest, pin_seq; /* EVICT for a PIN: whom to answer */
	bool pin;
	struct vcma_alloc_plan plan;
	uint64_t reserved;  /* ordinary frames promised to the moves not yet in a batch */
	uint32_t req_guest; /* who asked (0 once it is gone) */
	vcmad_alloc_done_fn done; /* or, for vcmad's own requesters: whom to tell */
	void *done_arg;           /* NULL once the requester is gone */
	uint64_t req_id;
	struct move *mv;
	size_t nmv, next_mv;
	/* the batch in flight */
	uint32_t vm;        /* guest id of the paused VM */
	size_t b0, bn;
	uint64_t *dst;      /* [bn] destination mfns */
	struct vcma_sim_run runs[VCMA_SIM_MSG_RUNS];
	uint32_t nruns;
	uint32_t seq;
	uint64_t deadline;
	enum job_state st;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool move_valid(struct vcmad *d, const struct move *m, struct vcmad_guest **vmp)
{
	struct vcmad_guest *vm = vcmad_guest_find(d, m->guest);

	*vmp = vm;
	return vm && !vm->dead && vm->p2m && m->gfn < vm->ram_frames && vm->p2m[m->gfn] == m->src;
}

/* A job that moves pages to ordinary memory reserves a destination for every one of
 * them before it pauses anybody: a window that cannot be emptied fails at once,
 * with nothing moved, instead of halfway through. */
static int reserve_ordinary(struct vcmad *d, struct vcmad_job *j, size_t n)
{
	uint64_t avail = d->be.ordinary.free_frames;

	if (avail < d->ord_reserved || avail - d->ord_reserved < n)
		return -ENOMEM;
	d->ord_reserved += n;
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
	d->ord_reserved -= n;
}

static void reserve_drop(struct vcmad *d, struct vcmad_job *j)
{
	d->ord_reserved -= j->reserved;
	j->reserved = 0;
}

/* Does move m still make sense: its page is still where the job found it, and a
 * relend may still put it on a pool frame? */
static bool move_applies(const struct vcmad_job *j, const struct move *m, struct vcmad_guest **vmp)
{
	if (!move_valid(j->d, m, vmp))
		return false;
	return j->kind != JOB_RELEND || !((*vmp)->no_lend || ((*vmp)->gflags[m->gfn] & VCMAD_GFN_PINNED));
}

static void release_dst(struct vcmad_job *j)
{
	struct vcmad *d = j->d;

	vcmad_pools_batch_begin(d);
	for (size_t i = 0; j->dst && i < j->bn; i++) {
		struct vcma_extent e = { j->dst[i], 1 };

		if (j->kind == JOB_RELEND)
			vcma_fmap_unclaim(&j->dst_pool->fm, j->dst[i] - j->dst_pool->fm.base, 1);
		else
			d->be.ops->ram_free(&d->be, &e, 1);
	}
	vcmad_pools_batch_end(d);
	if (j->dst && j->kind != JOB_RELEND) {
		/* the moves will be retried (or the job ends): reserve their frames again */
		j->reserved += j->bn;
		d->ord_reserved += j->bn;
	}
	free(j->dst);
	j->dst = NULL;
	j->bn = 0;
}

static void complete(struct vcmad_job *j, int err)
{
	struct vcmad *d = j->d;
	struct vcmad_guest *g = j->req_guest ? vcmad_guest_find(d, j->req_guest) : NULL;
	struct vcma_rsp rsp = { .id = j->req_id };
	struct vcma_region r;

	if (j->dst)
		release_dst(j);
	reserve_drop(d, j);
	if (j->kind == JOB_RELEND && err == -ENOMEM)
		err = 0; /* no idle pool frame left: the pool is full again, the job is done */
	if (err)
		log_warn("vacate: %s job stopped after %zu of %zu page(s): %s",
			 j->kind == JOB_ALLOC ? "allocation" : j->kind == JOB_RELEND ? "relend" : "evict", j->next_mv,
			 j->nmv, strerror(-err));
	if (j->kind != JOB_ALLOC) {
		struct vcmad_guest *vm = j->pin ? vcmad_guest_find(d, j->pin_guest) : NULL;

		if (err)
			d->vacate_jobs_failed++;
		else
			d->vacate_jobs_ok++;
		if (vm && !vm->dead && vcmad_vmm_send(vm, VCMA_SIM_MSG_PINNED, j->pin_seq, err ? -err : 0, NULL, 0))
			log_warn("guest %u (%s): cannot answer PIN", vm->id, vm->name);
		goto done;
	}
	if (j->done) {
		/* vcmad's own requester (the control socket): same commit, its callback */
		if (!err && !j->done_arg) {
			log_info("vacate: window in pool %s vacated for a requester that left: released",
				 j->plan.pool->cfg.name);
			err = -ESHUTDOWN;
		}
		if (!err && (err = vcma_core_alloc_finish(&d->core, &j->plan, &r)) == -EBUSY)
			err = -EIO;
		if (err && j->plan.pool)
			vcma_core_alloc_abort(&d->core, &j->plan);
		if (!err)
			d->be.ops->zero(&d->be, r.mfn, r.nframes);
		if (err)
			d->vacate_jobs_failed++;
		else
			d->vacate_jobs_ok++;
		if (j->done_arg)
			j->done(j->done_arg, err, err ? NULL : &r);
		goto done;
	}
	if (g && g->dead)
		g = NULL;
	if (!err && !g)
		err = -ESHUTDOWN; /* nobody to give the region to */
	if (!err) {
		err = vcma_core_alloc_finish(&d->core, &j->plan, &r);
		if (err == -EBUSY) {
			log_err("vacate: window in pool %s still holds a lent frame after all moves",
				j->plan.pool->cfg.name);
			err = -EIO;
		}
	}
	if (err && j->plan.pool)
		vcma_core_alloc_abort(&d->core, &j->plan);
	if (!err)
		err = vcmad_guest_take_region(g, &r, &rsp);
	if (!err) {
		d->vacate_jobs_ok++;
	} else {
		d->vacate_jobs_failed++;
		if (g)
			g->stats.alloc_fail++;
	}
	if (g) {
		g->pending_allocs--;
		g->pending_bytes -= j->plan.w.count << VCMA_PAGE_SHIFT;
		rsp.status = vcma_errno_status(err);
		vcmad_guest_respond(g, &rsp);
	}
done:
	vcmad_relend_kick(d);
	j->st = J_DONE;
	for (struct vcmad_job **pp = &d->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	j->next = d->done_jobs;
	d->done_jobs = j;
}

/* A message to the VMM could not be sent. A closed connection is the VM going away
 * (it exited, perhaps in the middle of a pause): an ordinary detach. A full socket
 * means the VMM stopped reading: it is cut off, and its pages come back. */
void vcmad_vmm_send_failed(struct vcmad_guest *vm, const char *what, int err)
{
	char why[96];

	if (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN) {
		vcmad_guest_detach(vm, "connection closed");
		return;
	}
	snprintf(why, sizeof(why), "cannot send %s: %s", what,
		 err == -EAGAIN ? "the VMM stopped reading its socket" : strerror(-err));
	vcmad_guest_kill(vm, why);
}

static uint32_t merge_runs(struct vcmad_job *j, size_t upto)
{
	uint32_t n = 0;

	for (size_t i = 0; i < upto; i++) {
		const struct move *m = &j->mv[j->b0 + i];

		if (n && j->runs[n - 1].gfn + j->runs[n - 1].count == m->gfn &&
		    j->runs[n - 1].mfn + j->runs[n - 1].count == j->dst[i]) {
			j->runs[n - 1].count++;
			continue;
		}
		if (n == VCMA_SIM_MSG_RUNS)
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

/* Is an allocation, compaction, drain or pin waiting? */
static bool other_work(const struct vcmad *d)
{
	for (const struct vcmad_job *j = d->jobs; j; j = j->next)
		if (j->kind != JOB_RELEND)
			return true;
	return false;
}

/*
 * Before the pause, not during it: destinations must read as zeros (a reported page
 * is not copied; its destination is what the guest finds) and those that will
 * receive a copy are faulted in now. Ordinary memory comes from the allocator
 * zeroed; idle pool frames may still hold a vacated page, so relend clears them
 * (one call per run, sorted).
 */
static void prepare_dst(struct vcmad_job *j)
{
	struct vcmad *d = j->d;
	struct vcmad_guest *vm = vcmad_guest_find(d, j->mv[j->b0].guest);

	if (j->kind == JOB_RELEND)
		for (size_t i = 0, k; i < j->bn; i = k) {
			for (k = i + 1; k < j->bn && j->dst[k] == j->dst[k - 1] + 1; k++)
				;
			d->be.ops->zero(&d->be, j->dst[i], k - i);
		}
	for (size_t i = 0; vm && i < j->bn; i++)
		if (!(vm->gflags[j->mv[j->b0 + i].gfn] & VCMAD_GFN_REPORTED))
			*(volatile uint8_t *)(d->be.machine + (j->dst[i] << VCMA_PAGE_SHIFT)) = 0;
}

/* Advance a READY job: skip moves that no longer apply, then start the next batch. */
static void step(struct vcmad_job *j)
{
	struct vcmad *d = j->d;
	struct vcmad_guest *vm = NULL;
	struct vcma_extent ext[VCMA_SIM_MSG_RUNS];
	size_t bn;
	int n, rc;

	while (j->next_mv < j->nmv && (!move_applies(j, &j->mv[j->next_mv], &vm) ||
				       (vm->unresponsive && j->kind != JOB_ALLOC))) {
		/* the VM went away (its frames are FREE now), the page moved (another job
		 * took it), or it may no longer go onto a pool frame; or the VM does not
		 * answer PAUSE, and only an allocation needs its pages moved: no
		 * destination needed */
		j->next_mv++;
		if (j->kind != JOB_RELEND)
			reserve_take(d, j, 1);
	}
	if (j->next_mv == j->nmv) {
		complete(j, 0);
		return;
	}
	if (j->kind == JOB_RELEND && other_work(d)) {
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
	if (vm->pauser)
		return; /* another job has this VM paused: wait our turn */
	j->b0 = j->next_mv;
	/* a batch is consecutive moves of one VM that all still apply: one that no longer
	 * does (another job moved the page, or freed and reused its frame) ends the batch
	 * and is skipped when the next one forms */
	for (bn = 1; j->b0 + bn < j->nmv && bn < d->vacate_batch && j->mv[j->b0 + bn].guest == vm->id; bn++) {
		struct vcmad_guest *same;

		if (!move_applies(j, &j->mv[j->b0 + bn], &same))
			break;
	}
	j->dst = calloc(bn, sizeof(*j->dst));
	if (j->kind == JOB_RELEND) {
		/* idle frames of the pool, from the top, claimed until the batch commits */
		struct vcma_fmap *fm = &j->dst_pool->fm;

		uint64_t idx = j->scan_top;

		/* frames above scan_top were idle-and-claimed by earlier batches (now lent) or
		 * not idle then; frames freed up there since wait for the next relend job */
		j->bn = 0;
		while (j->dst && idx > 0 && j->bn < bn) {
			uint64_t hi = idx, lo;

			/* the next run of FREE, unclaimed frames below idx, claimed as one:
			 * claiming refreshes the map's summaries, so once per run, not per frame */
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
		n = j->bn ? 1 : -ENOMEM;
	} else {
		/* scattered ordinary memory: take fewer pages rather than fail; one REMAP
		 * carries at most VCMA_SIM_MSG_RUNS runs anyway */
		n = -ENOMEM;
		while (j->dst && bn && (n = vcma_memrange_alloc(&d->be.ordinary, bn, ext, VCMA_SIM_MSG_RUNS)) < 0 &&
		       d->be.ordinary.free_frames >= bn)
			bn /= 2;
		if (n >= 0) {
			j->bn = 0;
			for (int e = 0; e < n; e++)
				for (uint64_t k = 0; k < ext[e].count; k++)
					j->dst[j->bn++] = ext[e].start + k;
			reserve_take(d, j, j->bn);
		}
	}
	if (n < 0) {
		/* destinations exhausted */
		free(j->dst);
		j->dst = NULL;
		j->bn = 0;
		if (j->kind != JOB_RELEND)
			log_warn("vacate: no ordinary memory for %zu page(s) of guest %u", bn, vm->id);
		complete(j, -ENOMEM);
		return;
	}
	/* a REMAP message holds at most VCMA_SIM_MSG_RUNS runs: shrink the batch if the
	 * destinations are that scattered */
	while ((j->nruns = merge_runs(j, j->bn)) == UINT32_MAX) {
		size_t keep = j->bn / 2;

		for (size_t i = keep; i < j->bn; i++) {
			struct vcma_extent e1 = { j->dst[i], 1 };

			if (j->kind == JOB_RELEND)
				vcma_fmap_unclaim(&j->dst_pool->fm, j->dst[i] - j->dst_pool->fm.base, 1);
			else
				d->be.ops->ram_free(&d->be, &e1, 1);
		}
		if (j->kind != JOB_RELEND) {
			j->reserved += j->bn - keep;
			d->ord_reserved += j->bn - keep;
		}
		j->bn = keep;
	}
	prepare_dst(j);
	j->vm = vm->id;
	j->seq = ++vm->vm_seq;
	vm->pauser = j;
	vm->paused_at = vcma_now_ns();
	j->deadline = vm->paused_at + (uint64_t)d->conf.pause_timeout_ms * 1000000ull;
	j->st = J_WAIT_PAUSE;
	rc = vcmad_vmm_send(vm, VCMA_SIM_MSG_PAUSE, j->seq, 0, NULL, 0);
	if (rc) {
		vm->pauser = NULL;
		release_dst(j);
		j->st = J_READY;
		vcmad_vmm_send_failed(vm, "PAUSE", rc);
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

	if (!bn)
		return;
	per_page = ns / bn ? ns / bn : 1;
	d->pause_ns_per_page = d->pause_ns_per_page ? (3 * d->pause_ns_per_page + per_page) / 4 : per_page;
	if (ns > bound) {
		want = d->vacate_batch / 2;
	} else {
		want = bound * 6 / 10 / d->pause_ns_per_page;
		if (want > 2ull * d->vacate_batch)
			want = 2ull * d->vacate_batch;
	}
	d->vacate_batch = (uint32_t)(want < MIN_BATCH ? MIN_BATCH : want > MAX_BATCH ? MAX_BATCH : want);
}

static void resume(struct vcmad_job *j, struct vcmad_guest *vm)
{
	struct vcmad *d = j->d;
	uint64_t ns = vcma_now_ns() - vm->paused_at;

	if (vcmad_vmm_send(vm, VCMA_SIM_MSG_RESUME, j->seq, 0, NULL, 0))
		log_warn("guest %u (%s): cannot send RESUME", vm->id, vm->name);
	vm->pauser = NULL;
	vcma_hist_record(&vm->pause_hist, ns);
	vcma_hist_record(&d->pause_hist, ns);
	adapt_batch(d, ns, j->bn);
}

void vcmad_vacate_paused(struct vcmad_guest *vm, uint32_t seq)
{
	struct vcmad *d = vm->d;
	struct vcmad_job *j = vm->pauser;
	int rc;

	if (!j || j->st != J_WAIT_PAUSE || j->seq != seq)
		return; /* a late answer to a PAUSE that timed out */
	vm->pause_misses = 0;
	for (size_t i = 0; i < j->bn; i++) {
		const struct move *m = &j->mv[j->b0 + i];

		/* the state now, not when the job began: the guest may have reported
		 * the page free (or reused it) since; a reported page is dropped and its
		 * destination reads as zeros */
		if (!(vm->gflags[m->gfn] & VCMAD_GFN_REPORTED))
			memcpy(d->be.machine + (j->dst[i] << VCMA_PAGE_SHIFT), d->be.machine + (m->src << VCMA_PAGE_SHIFT),
			       VCMA_PAGE_SIZE);
		/* else: prepare_dst() left zeros */
	}
	j->st = J_WAIT_REMAP;
	j->deadline = vcma_now_ns() + (uint64_t)d->conf.pause_timeout_ms * 1000000ull;
	rc = vcmad_vmm_send(vm, VCMA_SIM_MSG_REMAP, j->seq, 0, j->runs, j->nruns);
	if (rc)
		vcmad_vmm_send_failed(vm, "REMAP", rc);
}

void vcmad_vacate_remapped(struct vcmad_guest *vm, uint32_t seq, int32_t status)
{
	struct vcmad *d = vm->d;
	struct vcmad_job *j = vm->pauser;

	if (!j || j->st != J_WAIT_REMAP || j->seq != seq)
		return;
	if (status) {
		log_warn("guest %u (%s): REMAP failed (%s); vacate abandoned", vm->id, vm->name, strerror(status));
		resume(j, vm);
		release_dst(j);
		complete(j, -EIO);
		return;
	}
	/* The VM runs on its new frames from here: resume it first. The bookkeeping
	 * below is the host's own and finishes before the loop reads another message
	 * from this VM, so nothing can see it half done; the old frames are no longer
	 * mapped by the VM. */
	resume(j, vm);
	vcmad_pools_batch_begin(d);
	for (size_t i = 0; i < j->bn; i++) {
		const struct move *m = &j->mv[j->b0 + i];
		struct vcma_pool *p = vcmad_pool_of(d, m->src);
		bool reported = vm->gflags[m->gfn] & VCMAD_GFN_REPORTED;

		vm->p2m[m->gfn] = j->dst[i];
		if (p) {
			vcma_pool_unlend(p, m->src - p->fm.base);
			if (reported)
				p->stats.vacated_lent_free++;
			else
				p->stats.vacated_lent_used++;
		}
		/* the old frame held the guest's page. An ordinary one goes back to the
		 * allocator (which zeroes it); a pool frame is now FREE, and every way out
		 * of FREE clears it (a region when it is handed out, lending at attach,
		 * relend's prepare_dst), so an allocation's window is cleared once, whole,
		 * when it completes, rather than page by page here */
		if (p) {
			if (j->kind != JOB_ALLOC)
				d->be.ops->zero(&d->be, m->src, 1);
		} else {
			struct vcma_extent e = { m->src, 1 };

			d->be.ops->ram_free(&d->be, &e, 1);
		}
		if (j->kind == JOB_RELEND) {
			struct vcma_fmap *fm = &j->dst_pool->fm;

			vcma_fmap_unclaim(fm, j->dst[i] - fm->base, 1);
			vcma_fmap_lend(fm, j->dst[i] - fm->base, vm->id, m->gfn, !reported);
		}
	}
	vcmad_pools_batch_end(d);
	free(j->dst);
	j->dst = NULL;
	j->next_mv = j->b0 + j->bn;
	j->bn = 0;
	j->st = J_READY;
	step(j);
}

static int cmp_move(const void *a, const void *b)
{
	const struct move *x = a, *y = b;

	if (x->guest != y->guest)
		return x->guest < y->guest ? -1 : 1;
	return x->gfn < y->gfn ? -1 : x->gfn > y->gfn;
}

/* A job for an allocation plan whose window holds lent frames; not yet started. */
static int alloc_job(struct vcmad *d, const struct vcma_alloc_plan *plan, struct vcmad_job **jp)
{
	uint64_t nlent = plan->w.nlent_free + plan->w.nlent_used;
	struct vcma_vacate_item *items = calloc(nlent, sizeof(*items));
	struct vcmad_job *j = calloc(1, sizeof(*j));
	int64_t got;

	if (!items || !j || !(j->mv = calloc(nlent, sizeof(*j->mv)))) {
		free(items);
		if (j)
			free(j->mv);
		free(j);
		return -ENOMEM;
	}
	got = vcma_fmap_collect_lent(&plan->pool->fm, plan->w.start, plan->w.count, items, nlent);
	for (int64_t i = 0; i < got && (uint64_t)i < nlent; i++) {
		j->mv[i].guest = items[i].guest;
		j->mv[i].gfn = items[i].gfn;
		j->mv[i].src = plan->pool->fm.base + items[i].idx;
	}
	free(items);
	j->nmv = got < 0 ? 0 : (size_t)got;
	if (reserve_ordinary(d, j, j->nmv)) {
		/* refused before anybody is paused: the window stays as it was */
		log_warn("vacate: window in pool %s needs %zu page(s) moved, more than the free ordinary memory",
			 plan->pool->cfg.name, j->nmv);
		free(j->mv);
		free(j);
		return -ENOMEM;
	}
	qsort(j->mv, j->nmv, sizeof(*j->mv), cmp_move);
	j->d = d;
	j->plan = *plan;
	j->st = J_READY;
	*jp = j;
	return 0;
}

static void job_go(struct vcmad_job *j)
{
	j->next = j->d->jobs;
	j->d->jobs = j;
	step(j);
}

int vcmad_vacate_start(struct vcmad_guest *req, uint64_t req_id, const struct vcma_alloc_plan *plan)
{
	struct vcmad_job *j;
	int rc = alloc_job(req->d, plan, &j);

	if (rc)
		return rc;
	j->req_guest = req->id;
	j->req_id = req_id;
	req->pending_allocs++;
	req->pending_bytes += plan->w.count << VCMA_PAGE_SHIFT;
	job_go(j);
	return 0;
}

int vcmad_vacate_start_cb(struct vcmad *d, const struct vcma_alloc_plan *plan, vcmad_alloc_done_fn done, void *arg,
			  struct vcmad_job **jobp)
{
	struct vcmad_job *j;
	int rc = alloc_job(d, plan, &j);

	if (rc)
		return rc;
	j->done = done;
	j->done_arg = arg;
	*jobp = j;
	job_go(j); /* may complete at once (and call done) when nothing is left to move */
	return 0;
}

void vcmad_vacate_forget(struct vcmad_job *j)
{
	j->done_arg = NULL;
}

static struct vcmad_job *job_new(struct vcmad *d, enum job_kind kind, struct move *mv, size_t n)
{
	struct vcmad_job *j = calloc(1, sizeof(*j));

	if (!j) {
		free(mv);
		return NULL;
	}
	if (kind != JOB_RELEND && reserve_ordinary(d, j, n)) {
		log_warn("vacate: %zu page(s) to move but not that much ordinary memory free", n);
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
	j->next = d->jobs;
	d->jobs = j;
	return j;
}

int vcmad_vacate_evict_frames(struct vcmad *d, struct vcma_pool *p, const uint64_t *idx, size_t n,
			      uint64_t *scheduled)
{
	struct move *mv = calloc(n ? n : 1, sizeof(*mv));
	size_t k = 0;

	*scheduled = 0;
	if (!mv)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct vcma_frame_info fi;

		if (vcma_fmap_get(&p->fm, idx[i], &fi) ||
		    (fi.state != VCMA_FRAME_LENT_FREE && fi.state != VCMA_FRAME_LENT_USED))
			continue;
		mv[k++] = (struct move){ fi.guest, fi.gfn, p->fm.base + idx[i] };
	}
	if (!k) {
		free(mv);
		return 0;
	}
	if (!job_new(d, JOB_EVICT, mv, k))
		return -ENOMEM;
	*scheduled = k;
	return 0;
}

int vcmad_pin(struct vcmad_guest *g, uint32_t seq, const struct vcma_sim_run *runs, uint32_t nruns)
{
	struct vcmad *d = g->d;
	struct vcmad_job *j;
	struct move *mv;
	uint64_t total = 0;
	size_t n = 0;

	for (uint32_t i = 0; i < nruns; i++)
		total += runs[i].count;
	mv = calloc(total ? total : 1, sizeof(*mv));
	if (!mv)
		return -ENOMEM;
	for (uint32_t i = 0; i < nruns; i++)
		for (uint64_t k = 0; k < runs[i].count; k++) {
			uint64_t gfn = runs[i].gfn + k;

			g->gflags[gfn] |= VCMAD_GFN_PINNED; /* relend skips it from now on */
			if (vcmad_pool_of(d, g->p2m[gfn]))
				mv[n++] = (struct move){ g->id, gfn, g->p2m[gfn] };
		}
	j = job_new(d, JOB_EVICT, mv, n);
	if (!j)
		return -ENOMEM;
	j->pin = true;
	j->pin_guest = g->id;
	j->pin_seq = seq;
	return 0;
}

/* When the host has been idle for a while, move guests' pages from ordinary memory
 * back onto idle frames of lendable pools, so pool memory does not sit idle. */
static uint64_t pool_room(const struct vcma_pool *p)
{
	if (!p->cfg.lendable || p->fm.count[VCMA_FRAME_FREE] < p->fm.nclaimed)
		return 0;
	return p->fm.count[VCMA_FRAME_FREE] - p->fm.nclaimed;
}

/* When relending may next find work: quiet for relend_idle_ms, and a pool with idle
 * frames that no compaction holds back. UINT64_MAX: not until something changes. */
static uint64_t relend_due_ns(const struct vcmad *d)
{
	uint64_t quiet = d->last_alloc_ns + (uint64_t)d->conf.relend_idle_ms * 1000000ull, due = UINT64_MAX;

	if (!d->relend_dirty)
		return UINT64_MAX;
	for (uint32_t i = 0; i < d->core.npools; i++) {
		const struct vcma_pool *p = d->core.pool[i];
		uint64_t t = quiet > p->relend_hold_until ? quiet : p->relend_hold_until;

		if (pool_room(p) && t < due)
			due = t;
	}
	return due;
}

int vcmad_vacate_timeout_ms(struct vcmad *d)
{
	uint64_t due, now;

	if (d->jobs)
		return 5; /* wake up often enough to time out silent VMs */
	due = relend_due_ns(d);
	if (due == UINT64_MAX)
		return -1;
	now = vcma_now_ns();
	if (due <= now)
		return 0;
	due = (due - now + 999999) / 1000000;
	return due > 60000 ? 60000 : (int)due;
}

static void maybe_relend(struct vcmad *d)
{
	uint64_t now = vcma_now_ns();

	if (d->jobs || d->stop || relend_due_ns(d) > now)
		return;
	d->relend_dirty = false; /* unless a pool below finds work */
	for (uint32_t i = 0; i < d->core.npools; i++) {
		struct vcma_pool *p = d->core.pool[i];
		uint64_t room = pool_room(p);
		struct move *mv;
		size_t n = 0;

		if (!room)
			continue;
		if (now < p->relend_hold_until) {
			d->relend_dirty = true; /* look again when the hold ends */
			continue;
		}
		if (room > VCMAD_RELEND_MAX)
			room = VCMAD_RELEND_MAX;
		mv = calloc(room, sizeof(*mv));
		if (!mv) {
			d->relend_dirty = true;
			return;
		}
		for (uint32_t k = 0; k < d->conf.max_guests && n < room; k++) {
			struct vcmad_guest *g = d->guest[k];

			if (!g || g->dead || !g->p2m || g->no_lend)
				continue;
			for (uint64_t gfn = 0; gfn < g->ram_frames && n < room; gfn++)
				if (!(g->gflags[gfn] & VCMAD_GFN_PINNED) && !vcmad_pool_of(d, g->p2m[gfn]))
					mv[n++] = (struct move){ g->id, gfn, g->p2m[gfn] };
		}
		if (!n) {
			free(mv);
			continue;
		}
		struct vcmad_job *j = job_new(d, JOB_RELEND, mv, n);

		if (j) {
			j->dst_pool = p;
			j->scan_top = p->fm.nframes;
		}
		d->relend_dirty = true; /* its completion looks for more */
		return; /* one job at a time */
	}
}

void vcmad_vacate_guest_gone(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;

	for (struct vcmad_job *j = d->jobs; j; j = j->next) {
		if (j->req_guest == g->id)
			j->req_guest = 0; /* its window is given up when the job ends */
		if (j->vm == g->id && (j->st == J_WAIT_PAUSE || j->st == J_WAIT_REMAP)) {
			/* the batch never committed: the scratch destinations go back; the
			 * VM's own frames are released by its detach */
			release_dst(j);
			j->st = J_READY;
			j->vm = 0;
		}
	}
	g->pauser = NULL;
}

/* A VMM missed VCMAD_PAUSE_MISSES PAUSEs in a row: claim every pool frame it holds
 * that no job has claimed, so searches go around them; stop lending to it. The
 * claims go when it detaches (vcmad_lend_release). */
static void quarantine(struct vcmad_guest *vm)
{
	struct vcmad *d = vm->d;
	uint64_t n = 0;

	vm->unresponsive = true;
	vm->no_lend = true;
	vcmad_pools_batch_begin(d);
	for (uint64_t gfn = 0; gfn < vm->ram_frames; gfn++) {
		struct vcma_pool *p = vcmad_pool_of(d, vm->p2m[gfn]);

		if (p && !vcma_fmap_claim(&p->fm, vm->p2m[gfn] - p->fm.base, 1)) {
			vm->gflags[gfn] |= VCMAD_GFN_QUARANTINED;
			p->quarantined++;
			n++;
		}
	}
	vcmad_pools_batch_end(d);
	log_warn("guest %u (%s) left %u PAUSEs in a row unanswered: unresponsive; its %llu pool frame(s) are kept out "
		 "of allocations until it detaches, and it is lent no more", vm->id, vm->name, VCMAD_PAUSE_MISSES,
		 (unsigned long long)n);
}

/* Each loop turn: time out silent VMs, move READY jobs along. */
void vcmad_vacate_tick(struct vcmad *d)
{
	uint64_t now = vcma_now_ns();
	struct vcmad_job *j, *next;

	maybe_relend(d);
	for (j = d->jobs; j; j = next) {
		struct vcmad_guest *vm;

		next = j->next;
		if (j->st == J_READY) {
			step(j);
			continue;
		}
		if (now < j->deadline)
			continue;
		vm = vcmad_guest_find(d, j->vm);
		if (j->st == J_WAIT_PAUSE && vm) {
			log_warn("guest %u (%s) did not answer PAUSE within %u ms; vacate abandoned", vm->id, vm->name,
				 d->conf.pause_timeout_ms);
			resume(j, vm); /* cancels the pause, whenever the VMM gets to it */
			release_dst(j);
			complete(j, -ETIMEDOUT);
			if (++vm->pause_misses == VCMAD_PAUSE_MISSES && !vm->unresponsive)
				quarantine(vm);
		} else if (j->st == J_WAIT_REMAP && vm) {
			vcmad_guest_kill(vm, "paused VM did not answer REMAP in time");
		}
	}
}

void vcmad_vacate_reap(struct vcmad *d)
{
	while (d->done_jobs) {
		struct vcmad_job *j = d->done_jobs;

		d->done_jobs = j->next;
		free(j->mv);
		free(j->dst);
		free(j);
	}
}

void vcmad_vacate_cancel_all(struct vcmad *d)
{
	while (d->jobs) {
		struct vcmad_job *j = d->jobs;
		struct vcmad_guest *vm = vcmad_guest_find(d, j->vm);

		if (vm && vm->pauser == j)
			resume(j, vm);
		release_dst(j);
		complete(j, -ESHUTDOWN);
	}
	vcmad_vacate_reap(d);
}
