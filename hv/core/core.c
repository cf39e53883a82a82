// SPDX-License-Identifier: MIT
/*
 * core.c - pools, per-guest usage, and the allocation flow:
 * policy -> search -> claim -> vacate (caller's hook) -> commit -> handle.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

int vcma_core_init(struct vcma_core *core)
{
	memset(core, 0, sizeof(*core));
	return vcma_regions_init(&core->regions, VCMA_REGIONS_DEFAULT_MAX);
}

static void pool_destroy(struct vcma_pool *p)
{
	if (!p)
		return;
	vcma_fmap_fini(&p->fm);
	free(p->usage);
	free(p);
}

void vcma_core_fini(struct vcma_core *core)
{
	for (uint32_t i = 0; i < core->npools; i++)
		pool_destroy(core->pool[i]);
	vcma_regions_fini(&core->regions);
	memset(core, 0, sizeof(*core));
}

struct vcma_pool *vcma_core_pool_by_name(struct vcma_core *core, const char *name)
{
	for (uint32_t i = 0; name && i < core->npools; i++)
		if (!strcmp(core->pool[i]->cfg.name, name))
			return core->pool[i];
	return NULL;
}

struct vcma_pool *vcma_core_pool_of(struct vcma_core *core, uint64_t mfn)
{
	for (uint32_t i = 0; i < core->npools; i++) {
		struct vcma_pool *p = core->pool[i];

		if (mfn >= p->fm.base && mfn < p->fm.base + p->fm.nframes)
			return p;
	}
	return NULL;
}

int vcma_core_mark_zeroed(struct vcma_core *core, uint64_t mfn, uint64_t n)
{
	struct vcma_pool *p = vcma_core_pool_of(core, mfn);

	return p ? vcma_fmap_mark_zeroed(&p->fm, mfn - p->fm.base, n) : -ENOENT;
}

bool vcma_core_take_zeroed(struct vcma_core *core, uint64_t mfn, uint64_t n)
{
	struct vcma_pool *p = vcma_core_pool_of(core, mfn);

	return p && vcma_fmap_take_zeroed(&p->fm, mfn - p->fm.base, n);
}

uint64_t vcma_core_zeroed_run(struct vcma_core *core, uint64_t mfn, uint64_t n, bool *zero)
{
	struct vcma_pool *p = vcma_core_pool_of(core, mfn);

	*zero = false;
	return p ? vcma_fmap_zeroed_run(&p->fm, mfn - p->fm.base, n, zero) : n;
}

void vcma_core_batch_begin(struct vcma_core *core)
{
	for (uint32_t i = 0; i < core->npools; i++)
		vcma_fmap_batch_begin(&core->pool[i]->fm);
}

void vcma_core_batch_end(struct vcma_core *core)
{
	for (uint32_t i = 0; i < core->npools; i++)
		vcma_fmap_batch_end(&core->pool[i]->fm);
}

int vcma_core_add_pool(struct vcma_core *core, const struct vcma_pool_config *cfg, uint64_t base_mfn,
		       uint64_t nframes)
{
	struct vcma_pool *p;
	int rc;

	if (vcma_pool_config_validate(cfg, NULL, 0))
		return -EINVAL;
	if (vcma_core_pool_by_name(core, cfg->name))
		return -EEXIST;
	if (core->npools >= VCMA_MAX_POOLS)
		return -ENOSPC;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	if (p->cfg.lendable < 0)
		p->cfg.lendable = p->cfg.mode == VCMA_POOL_SHARED;
	rc = vcma_fmap_init(&p->fm, base_mfn, nframes, cfg->cost_lent_free, cfg->cost_lent_used);
	if (rc) {
		free(p);
		return rc;
	}
	p->quota = vcma_pool_config_quota(cfg, nframes << VCMA_PAGE_SHIFT);
	p->index = core->npools;
	core->pool[core->npools++] = p;
	return (int)p->index;
}

static unsigned int order_base_2(uint64_t n)
{
	return n <= 1 ? 0 : 64u - (unsigned int)__builtin_clzll(n - 1);
}

unsigned int vcma_pool_align_order(const struct vcma_pool *p, uint64_t nframes, unsigned int explicit_order)
{
	unsigned int natural = order_base_2(nframes);

	if (natural > p->cfg.align_order)
		natural = p->cfg.align_order;
	return explicit_order > natural ? explicit_order : natural;
}

static struct vcma_guest_usage *usage_find(const struct vcma_pool *p, uint32_t guest)
{
	for (uint32_t i = 0; i < p->nusage; i++)
		if (p->usage[i].guest == guest)
			return &p->usage[i];
	return NULL;
}

const struct vcma_guest_usage *vcma_pool_usage(const struct vcma_pool *p, uint32_t guest)
{
	return usage_find(p, guest);
}

static struct vcma_guest_usage *usage_get(struct vcma_pool *p, uint32_t guest, int *err)
{
	struct vcma_guest_usage *u = usage_find(p, guest);

	*err = 0;
	if (!u) {
		if (p->nusage >= VCMA_POOL_MAX_GUESTS) {
			*err = -EUSERS;
			return NULL;
		}
		if (p->nusage == p->usage_cap) {
			uint32_t cap = p->usage_cap ? p->usage_cap * 2 : 8;
			struct vcma_guest_usage *nu = realloc(p->usage, cap * sizeof(*nu));

			if (!nu) {
				*err = -ENOMEM;
				return NULL;
			}
			p->usage = nu;
			p->usage_cap = cap;
		}
		u = &p->usage[p->nusage++];
		memset(u, 0, sizeof(*u));
		u->guest = guest;
	}
	return u;
}

/* An entry with nothing granted or promised goes away. */
static void usage_put(struct vcma_pool *p, struct vcma_guest_usage *u)
{
	if (!u->regions && !u->pending)
		*u = p->usage[--p->nusage];
}

static void usage_sub(struct vcma_pool *p, uint32_t guest, uint64_t bytes)
{
	struct vcma_guest_usage *u = usage_find(p, guest);

	if (!u)
		return;
	u->bytes -= bytes < u->bytes ? bytes : u->bytes;
	if (u->regions)
		u->regions--;
	usage_put(p, u);
}

/* begin: bytes promised; finish: promised -> granted; abort: promise dropped */
static void usage_unpromise(struct vcma_pool *p, uint32_t guest, uint64_t bytes)
{
	struct vcma_guest_usage *u = usage_find(p, guest);

	if (!u)
		return;
	u->promised -= bytes < u->promised ? bytes : u->promised;
	if (u->pending)
		u->pending--;
	usage_put(p, u);
}

static bool names_match(const char *bound, const char *who)
{
	return who && !strcmp(bound, who);
}

bool vcma_pool_serves(const struct vcma_pool *p, const struct vcma_requester *who)
{
	if (p->cfg.mode == VCMA_POOL_SHARED)
		return true;
	if (p->cfg.bind_kind == VCMA_BIND_GUEST)
		return names_match(p->cfg.bind_name, who->name);
	return names_match(p->cfg.bind_name, who->devclass);
}

static struct vcma_pool *pick_pool(struct vcma_core *core, const struct vcma_requester *who, const char *name,
				   int *err)
{
	struct vcma_pool *p;

	if (name) {
		p = vcma_core_pool_by_name(core, name);
		*err = !p ? -ENODEV : !vcma_pool_serves(p, who) ? -EACCES : 0;
		return *err ? NULL : p;
	}
	for (uint32_t i = 0; i < core->npools; i++)
		if (core->pool[i]->cfg.mode == VCMA_POOL_EXCLUSIVE && vcma_pool_serves(core->pool[i], who))
			return core->pool[i];
	for (uint32_t i = 0; i < core->npools; i++)
		if (core->pool[i]->cfg.mode == VCMA_POOL_SHARED)
			return core->pool[i];
	*err = -ENODEV;
	return NULL;
}

/* Ask the hook to vacate the lent frames of the claimed window; check it did. */
static int vacate_window(struct vcma_pool *p, const struct vcma_window *w, const struct vcma_vacate_ops *ops)
{
	uint64_t nlent = w->nlent_free + w->nlent_used;
	struct vcma_vacate_item *items;
	int64_t got;
	int rc;

	if (!ops || !ops->vacate)
		return -EBUSY;
	items = calloc(nlent, sizeof(*items));
	if (!items)
		return -ENOMEM;
	got = vcma_fmap_collect_lent(&p->fm, w->start, w->count, items, nlent);
	if (got != (int64_t)nlent) {
		free(items);
		return -EIO;
	}
	rc = ops->vacate(ops->ctx, p, items, nlent);
	for (uint64_t i = 0; i < nlent; i++) {
		struct vcma_frame_info fi;

		vcma_fmap_get(&p->fm, items[i].idx, &fi);
		if (fi.state != VCMA_FRAME_FREE) {
			if (!rc)
				rc = -EIO; /* the hook said yes but left a frame lent */
			continue;
		}
		if (items[i].state == VCMA_FRAME_LENT_FREE)
			p->stats.vacated_lent_free++;
		else
			p->stats.vacated_lent_used++;
	}
	free(items);
	return rc;
}

static int plan_in_pool(struct vcma_pool *p, const struct vcma_requester *who, const struct vcma_alloc_req *req,
			uint64_t nframes, struct vcma_alloc_plan *plan)
{
	const struct vcma_guest_usage *u;
	unsigned int order;
	int rc;

	/* seed 000: a shared pool skips tiny requests; a device's own pool serves any
	 * size unless its operator set a minimum */
	if ((p->cfg.mode == VCMA_POOL_SHARED || p->cfg.min_request_set) && nframes < p->cfg.min_request)
		return -ERANGE;
	if (nframes > p->fm.nframes ||
	    (p->cfg.max_region && nframes > p->cfg.max_region >> VCMA_PAGE_SHIFT))
		return -E2BIG;
	/* what the guest holds and what it has been promised: allocations waiting for
	 * a vacate count, so a batch of them cannot pass the quota together */
	u = usage_find(p, who->guest);
	if ((u ? u->bytes + u->promised : 0) + (nframes << VCMA_PAGE_SHIFT) > p->quota)
		return -EDQUOT;
	order = vcma_pool_align_order(p, nframes, req->align_order);
	rc = vcma_fmap_search(&p->fm, nframes, order, &plan->w);
	if (rc)
		return rc;
	return vcma_fmap_claim(&p->fm, plan->w.start, nframes);
}

static int alloc_begin(struct vcma_core *core, const struct vcma_requester *who, const struct vcma_alloc_req *req,
		       struct vcma_alloc_plan *plan, bool count_fail)
{
	uint64_t nframes = 0;
	struct vcma_pool *p;
	int rc = 0;

	if (!who || !req || !plan || who->guest > VCMA_GUEST_MAX)
		return -EINVAL;
	memset(plan, 0, sizeof(*plan));
	p = pick_pool(core, who, req->pool, &rc);
	if (!p)
		return rc;
	if (req->bytes == 0 || req->bytes > (VCMA_FMAP_MAX_FRAMES << VCMA_PAGE_SHIFT) ||
	    req->align_order > VCMA_FMAP_MAX_ORDER) {
		rc = -EINVAL;
	} else {
		nframes = (req->bytes + VCMA_PAGE_SIZE - 1) >> VCMA_PAGE_SHIFT;
		rc = plan_in_pool(p, who, req, nframes, plan);
	}
	if (!rc) {
		struct vcma_guest_usage *u = usage_get(p, who->guest, &rc);

		if (u) {
			u->promised += nframes << VCMA_PAGE_SHIFT;
			u->pending++;
		} else {
			vcma_fmap_unclaim(&p->fm, plan->w.start, plan->w.count);
		}
	}
	if (rc) {
		if (count_fail) {
			p->stats.alloc_fail++;
			p->stats.alloc_pages_fail += nframes;
		}
		return rc;
	}
	plan->pool = p;
	plan->guest = who->guest;
	plan->flags = req->flags;
	plan->t0 = vcma_now_ns();
	return 0;
}

int vcma_core_alloc_begin(struct vcma_core *core, const struct vcma_requester *who, const struct vcma_alloc_req *req,
			  struct vcma_alloc_plan *plan)
{
	return alloc_begin(core, who, req, plan, true);
}

int vcma_core_alloc_try(struct vcma_core *core, const struct vcma_requester *who, const struct vcma_alloc_req *req,
			struct vcma_alloc_plan *plan)
{
	return alloc_begin(core, who, req, plan, false);
}

static void alloc_abort(struct vcma_alloc_plan *plan, bool count_fail)
{
	struct vcma_pool *p = plan->pool;

	if (!p)
		return;
	vcma_fmap_unclaim(&p->fm, plan->w.start, plan->w.count);
	usage_unpromise(p, plan->guest, plan->w.count << VCMA_PAGE_SHIFT);
	if (count_fail) {
		p->stats.alloc_fail++;
		p->stats.alloc_pages_fail += plan->w.count;
	}
	plan->pool = NULL;
}

void vcma_core_alloc_abort(struct vcma_core *core, struct vcma_alloc_plan *plan)
{
	alloc_abort(plan, true);
}

void vcma_core_alloc_drop(struct vcma_core *core, struct vcma_alloc_plan *plan)
{
	alloc_abort(plan, false);
}

int vcma_core_alloc_finish(struct vcma_core *core, struct vcma_alloc_plan *plan, struct vcma_region *out)
{
	struct vcma_pool *p = plan->pool;
	uint64_t n = plan->w.count;
	struct vcma_region r;
	int rc;

	if (!p)
		return -EINVAL;
	/* every lent frame must have been vacated: the window is all FREE now */
	rc = vcma_fmap_commit_region(&p->fm, plan->w.start, n, plan->guest);
	if (rc)
		return rc == -EBUSY ? -EBUSY : rc;
	memset(&r, 0, sizeof(r));
	r.guest = plan->guest;
	r.pool = p->index;
	r.mfn = p->fm.base + plan->w.start;
	r.nframes = n;
	r.flags = plan->flags;
	rc = vcma_regions_insert(&core->regions, &r);
	if (!rc) {
		struct vcma_guest_usage *u = usage_find(p, plan->guest);

		/* the promise made at begin becomes the region */
		u->bytes += n << VCMA_PAGE_SHIFT;
		u->regions++;
	}
	usage_unpromise(p, plan->guest, n << VCMA_PAGE_SHIFT);
	if (rc) {
		vcma_fmap_release_region(&p->fm, plan->w.start, n);
		p->stats.alloc_fail++;
		p->stats.alloc_pages_fail += n;
		plan->pool = NULL;
		return rc;
	}
	p->stats.alloc_success++;
	p->stats.alloc_pages_success += n;
	vcma_hist_record(&p->stats.alloc_latency, vcma_now_ns() - plan->t0);
	plan->pool = NULL;
	*out = r;
	return 0;
}

int vcma_core_restore_region(struct vcma_core *core, const struct vcma_region *r)
{
	struct vcma_pool *p = r->pool < core->npools ? core->pool[r->pool] : NULL;
	struct vcma_guest_usage *u;
	uint64_t idx;
	int rc;

	if (!p || !r->nframes || r->mfn < p->fm.base || r->nframes > p->fm.nframes ||
	    r->mfn - p->fm.base > p->fm.nframes - r->nframes)
		return -ERANGE;
	idx = r->mfn - p->fm.base;
	u = usage_get(p, r->guest, &rc);
	if (!u)
		return rc;
	rc = vcma_fmap_claim(&p->fm, idx, r->nframes);
	if (!rc) {
		rc = vcma_fmap_commit_region(&p->fm, idx, r->nframes, r->guest);
		if (rc)
			vcma_fmap_unclaim(&p->fm, idx, r->nframes);
	}
	if (!rc) {
		rc = vcma_regions_insert_at(&core->regions, r);
		if (rc)
			vcma_fmap_release_region(&p->fm, idx, r->nframes);
	}
	if (rc) {
		usage_put(p, u);
		return rc == -EBUSY ? -EEXIST : rc;
	}
	u->bytes += r->nframes << VCMA_PAGE_SHIFT;
	u->regions++;
	return 0;
}

int vcma_core_alloc(struct vcma_core *core, const struct vcma_requester *who, const struct vcma_alloc_req *req,
		    const struct vcma_vacate_ops *ops, struct vcma_region *out)
{
	struct vcma_alloc_plan plan;
	int rc;

	if (!out)
		return -EINVAL;
	rc = vcma_core_alloc_begin(core, who, req, &plan);
	if (rc)
		return rc;
	if (plan.w.nlent_free + plan.w.nlent_used) {
		rc = vacate_window(plan.pool, &plan.w, ops);
		if (rc) {
			vcma_core_alloc_abort(core, &plan);
			return rc;
		}
	}
	rc = vcma_core_alloc_finish(core, &plan, out);
	if (rc == -EBUSY) {
		vcma_core_alloc_abort(core, &plan);
		return -EIO; /* the window still holds a lent frame: the hook lied */
	}
	return rc;
}

static int core_free(struct vcma_core *core, uint32_t guest, uint64_t handle, bool hold)
{
	const struct vcma_region *r = vcma_regions_lookup(&core->regions, guest, handle);
	struct vcma_region copy;
	struct vcma_pool *p;
	int rc;

	if (!r || r->pool >= core->npools)
		return -ENOENT;
	copy = *r;
	p = core->pool[copy.pool];
	if (!hold) {
		rc = vcma_fmap_release_region(&p->fm, copy.mfn - p->fm.base, copy.nframes);
		if (rc)
			return -EIO; /* the frame map disagrees with the table: keep the region */
		p->stats.release_pages_success += copy.nframes;
	}
	vcma_regions_remove(&core->regions, guest, handle, NULL);
	usage_sub(p, guest, copy.nframes << VCMA_PAGE_SHIFT);
	return 0;
}

int vcma_core_free(struct vcma_core *core, uint32_t guest, uint64_t handle)
{
	return core_free(core, guest, handle, false);
}

int vcma_core_free_held(struct vcma_core *core, uint32_t guest, uint64_t handle)
{
	return core_free(core, guest, handle, true);
}

int vcma_core_release_held(struct vcma_core *core, uint64_t mfn, uint64_t nframes)
{
	struct vcma_pool *p = vcma_core_pool_of(core, mfn);

	if (!p)
		return -ENOENT;
	if (vcma_fmap_release_region(&p->fm, mfn - p->fm.base, nframes))
		return -EIO;
	p->stats.release_pages_success += nframes;
	return 0;
}

int vcma_core_release_guest(struct vcma_core *core, uint32_t guest)
{
	const struct vcma_region *r;
	uint32_t cursor = 0;
	int n = 0;

	while ((r = vcma_regions_next(&core->regions, &cursor))) {
		if (r->guest != guest)
			continue;
		if (!vcma_core_free(core, guest, r->handle))
			n++;
	}
	return n;
}

const struct vcma_region *vcma_core_lookup(const struct vcma_core *core, uint32_t guest, uint64_t handle)
{
	return vcma_regions_lookup(&core->regions, guest, handle);
}

int vcma_pool_lend(struct vcma_pool *p, uint64_t idx, uint32_t guest, uint64_t gfn, bool used)
{
	if (!p->cfg.lendable)
		return -EPERM;
	return vcma_fmap_lend(&p->fm, idx, guest, gfn, used);
}

int vcma_pool_set_used(struct vcma_pool *p, uint64_t idx, bool used)
{
	return vcma_fmap_set_used(&p->fm, idx, used);
}

int vcma_pool_unlend(struct vcma_pool *p, uint64_t idx)
{
	return vcma_fmap_unlend(&p->fm, idx);
}

void vcma_pool_counts(const struct vcma_pool *p, struct vcma_pool_counts *c)
{
	const struct vcma_fmap *fm = &p->fm;
	uint32_t regions = 0;

	for (uint32_t i = 0; i < p->nusage; i++)
		regions += p->usage[i].regions;
	c->nframes = fm->nframes;
	c->free = fm->count[VCMA_FRAME_FREE];
	c->lent_free = fm->count[VCMA_FRAME_LENT_FREE];
	c->lent_used = fm->count[VCMA_FRAME_LENT_USED];
	c->region = fm->count[VCMA_FRAME_REGION];
	c->reserved = fm->count[VCMA_FRAME_RESERVED];
	c->quarantined = p->quarantined <= fm->nclaimed ? p->quarantined : fm->nclaimed;
	c->claimed = fm->nclaimed - c->quarantined;
	c->largest_free_run = vcma_fmap_largest_free_run(fm);
	c->regions = regions;
}

size_t vcma_pool_fragmap(const struct vcma_pool *p, uint64_t frames_per_char, char *buf, size_t len)
{
	const struct vcma_fmap *fm = &p->fm;
	size_t out = 0;

	if (!len)
		return 0;
	if (!frames_per_char)
		frames_per_char = 1;
	for (uint64_t b = 0; b < fm->nframes && out + 1 < len; b += frames_per_char) {
		uint64_t end = b + frames_per_char < fm->nframes ? b + frames_per_char : fm->nframes;
		uint64_t cnt[VCMA_FRAME_NSTATES] = { 0 }, claimed = 0, total = end - b;
		char ch;

		for (uint64_t i = b; i < end; i++) {
			struct vcma_frame_info fi;

			vcma_fmap_get(fm, i, &fi);
			cnt[fi.state]++;
			claimed += fi.claimed;
		}
		uint64_t lent = cnt[VCMA_FRAME_LENT_FREE] + cnt[VCMA_FRAME_LENT_USED];

		if (cnt[VCMA_FRAME_RESERVED])
			ch = 'x';
		else if (claimed)
			ch = '~';
		else if (cnt[VCMA_FRAME_REGION] == total)
			ch = '#';
		else if (cnt[VCMA_FRAME_REGION])
			ch = 'r';
		else if (lent == total)
			ch = 'L';
		else if (lent)
			ch = 'l';
		else
			ch = '.';
		buf[out++] = ch;
	}
	buf[out] = '\0';
	return out;
}

const char *vcma_core_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case -EINVAL: return "invalid argument";
	case -ERANGE: return "request below the pool's minimum: use normal memory";
	case -ENODEV: return "no pool serves this request";
	case -EACCES: return "pool is bound to another guest or device class";
	case -EDQUOT: return "per-guest quota exceeded";
	case -ENOSPC:
		return "no contiguous window: every candidate holds regions, reserved frames or an unresponsive VM's frames";
	case -E2BIG: return "request larger than the pool or its max_region";
	case -EBUSY: return "window holds lent frames that did not come back in time (a lender or VM did not give them up)";
	case -ENOENT: return "no such region";
	case -ENOMEM: return "out of memory";
	case -EUSERS: return "too many guests in this pool";
	case -EPERM: return "pool is not lendable";
	case -EIO: return "internal inconsistency";
	case -ETIMEDOUT: return "timed out";
	default: return "error";
	}
}
