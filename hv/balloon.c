// SPDX-License-Identifier: MIT
/*
 * balloon.c - lending (balloon.h): which capacity goes to which lender and back.
 * The lenders do their part through their ops: the Xen balloon adapter below (over
 * the backend's mem ops lender_room/lend/reclaim/unlend), virtio-mem in vmem.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balloon.h"
#include "log.h"
#include "vcmad.h"

_Static_assert(VCMAD_BALLOON_GUEST_BASE + VCMAD_BALLOON_MAX_LENDERS - 1 <= VCMA_GUEST_MAX,
	       "lender ids fit in the frame map");

/* ---- the Xen balloon lender: an adapter over the backend's mem ops ---- */

static int xen_room(struct vcmad *d, struct vcmad_lender *l, uint64_t *frames)
{
	const struct vcmad_mem_ops *mem = d->be.type->mem;
	uint32_t dom = 0;

	if (!mem->lend || !mem->lender_room)
		return -EOPNOTSUPP;
	l->present = !mem->lender_room(&d->be, l->name, &dom, frames);
	if (l->present && l->dom != dom && l->lent) {
		/* a new domain of that name: what the old one had went with it */
		log_info("balloon: lender %s is a new domain (%u)", l->name, dom);
	}
	if (!l->present)
		return -ENOENT;
	l->dom = dom;
	return 0;
}

static int xen_lend(struct vcmad *d, struct vcmad_lender *l, uint64_t mfn, uint64_t count)
{
	return d->be.type->mem->lend(&d->be, mfn, count, l->dom);
}

static int xen_reclaim(struct vcmad *d, struct vcmad_lender *l, const uint64_t *mfns, uint64_t count,
		       uint64_t deadline_ns, void (*done)(void *arg, uint64_t held), void *arg)
{
	if (!d->be.type->mem->reclaim)
		return -EOPNOTSUPP;
	return d->be.type->mem->reclaim(&d->be, mfns, count, l->dom, deadline_ns, done, arg);
}

static void xen_unlend(struct vcmad *d, struct vcmad_lender *l)
{
	if (!l->lent || !l->present || !d->be.type->mem->unlend)
		return;
	d->be.type->mem->unlend(&d->be, l->dom, l->lent);
	log_info("balloon: %s (domain %u) gives back the %llu MiB it was lent: vcmad stops", l->name, l->dom,
		 (unsigned long long)(l->lent >> 8));
	l->lent = 0;
}

static const struct vcmad_lender_ops xen_lender_ops = {
	.kind = "balloon", .room = xen_room, .lend = xen_lend, .reclaim = xen_reclaim, .unlend = xen_unlend,
};

/* ---- lenders ---- */

void vcmad_balloon_init(struct vcmad *d)
{
	memset(&d->balloon, 0, sizeof(d->balloon));
	/* Xen lenders need no loop: they are there from the start, in config order */
	for (uint32_t i = 0; i < d->conf.nguests; i++)
		if (d->conf.guests[i].lender == VCMAD_LENDER_BALLOON &&
		    vcmad_lender_register(d, &d->conf.guests[i], &xen_lender_ops, NULL, VCMAD_RECLAIM_TIMEOUT_NS, NULL))
			log_warn("balloon: lender %s: no slot for it", d->conf.guests[i].name);
}

struct vcmad_lender *vcmad_lender_find(struct vcmad *d, const char *name)
{
	for (uint32_t i = 0; i < d->balloon.nlenders; i++)
		if (d->balloon.lender[i].ops && !strcmp(d->balloon.lender[i].name, name))
			return &d->balloon.lender[i];
	return NULL;
}

int vcmad_lender_register(struct vcmad *d, const struct vcmad_guest_conf *gc, const struct vcmad_lender_ops *ops,
			  void *priv, uint64_t reclaim_timeout_ns, struct vcmad_lender **out)
{
	struct vcmad_balloon *b = &d->balloon;
	uint32_t i;

	if (vcmad_lender_find(d, gc->name))
		return -EEXIST;
	for (i = 0; i < VCMAD_BALLOON_MAX_LENDERS && b->lender[i].ops; i++)
		;
	if (i == VCMAD_BALLOON_MAX_LENDERS)
		return -ENOSPC;
	b->lender[i] = (struct vcmad_lender){ .ops = ops, .priv = priv, .reclaim_timeout_ns = reclaim_timeout_ns };
	snprintf(b->lender[i].name, sizeof(b->lender[i].name), "%s", gc->name);
	if (i >= b->nlenders)
		b->nlenders = i + 1;
	if (out)
		*out = &b->lender[i];
	return 0;
}

int vcmad_lender_remove(struct vcmad *d, const char *name)
{
	struct vcmad_balloon *b = &d->balloon;
	struct vcmad_lender *l = vcmad_lender_find(d, name);
	uint32_t li;
	uint64_t freed = 0;

	if (!l)
		return -ENOENT;
	if (!l->ops->remove)
		return -EOPNOTSUPP;
	li = (uint32_t)(l - b->lender);
	l->ops->remove(d, l); /* reclaims in flight end here, all held */
	/* what it still holds in the core is the pools' again */
	for (uint32_t pi = 0; pi < d->core.npools; pi++) {
		struct vcma_pool *p = d->core.pool[pi];

		vcma_fmap_batch_begin(&p->fm);
		for (uint64_t idx = 0; idx < p->fm.nframes; idx++) {
			struct vcma_frame_info fi;

			if (!vcma_fmap_get(&p->fm, idx, &fi) && fi.state == VCMA_FRAME_LENT_FREE &&
			    fi.guest == VCMAD_BALLOON_GUEST(li) && !vcma_pool_unlend(p, idx))
				freed++;
		}
		vcma_fmap_batch_end(&p->fm);
	}
	log_info("lender %s removed: the %llu KiB it was lent are the pools' again", l->name,
		 (unsigned long long)(freed * 4));
	memset(l, 0, sizeof(*l));
	while (b->nlenders && !b->lender[b->nlenders - 1].ops)
		b->nlenders--;
	vcmad_relend_kick(d);
	return 0;
}

uint64_t vcmad_balloon_lent(const struct vcmad *d)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < d->balloon.nlenders; i++)
		n += d->balloon.lender[i].lent;
	return n;
}

/* ---- lending ---- */

static bool unit_free(const struct vcma_pool *p, uint64_t idx)
{
	for (uint64_t i = 0; i < VCMAD_BALLOON_UNIT; i++) {
		struct vcma_frame_info fi;

		if (vcma_fmap_get(&p->fm, idx + i, &fi) || fi.state != VCMA_FRAME_FREE || fi.claimed)
			return false;
	}
	return true;
}

/* The lender with the most room for one more unit, or -1. */
static int pick_lender(struct vcmad_balloon *b, const uint64_t *room)
{
	int best = -1;

	for (uint32_t i = 0; i < b->nlenders; i++)
		if (b->lender[i].ops && b->lender[i].present && room[i] >= VCMAD_BALLOON_UNIT &&
		    (best < 0 || room[i] > room[best]))
			best = (int)i;
	return best;
}

/* Lend the free unit at idx of p to lender li: true if lent. */
static bool lend_unit(struct vcmad *d, struct vcma_pool *p, uint64_t idx, uint32_t li, uint64_t *room)
{
	struct vcmad_balloon *b = &d->balloon;
	struct vcmad_lender *l = &b->lender[li];
	int rc = 0;

	vcma_fmap_batch_begin(&p->fm);
	for (uint64_t i = 0; i < VCMAD_BALLOON_UNIT && !rc; i++)
		rc = vcma_pool_lend(p, idx + i, VCMAD_BALLOON_GUEST(li), 0, false);
	vcma_fmap_batch_end(&p->fm);
	if (!rc)
		rc = l->ops->lend(d, l, p->fm.base + idx, VCMAD_BALLOON_UNIT);
	if (rc) {
		struct vcma_frame_info fi;

		for (uint64_t i = 0; i < VCMAD_BALLOON_UNIT; i++)
			if (!vcma_fmap_get(&p->fm, idx + i, &fi) && fi.state == VCMA_FRAME_LENT_FREE)
				vcma_pool_unlend(p, idx + i);
		log_warn("balloon: cannot lend 2 MiB of pool %s to %s: %s", p->cfg.name, l->name, strerror(-rc));
		room[li] = 0; /* not this round */
		return false;
	}
	l->lent += VCMAD_BALLOON_UNIT;
	room[li] -= VCMAD_BALLOON_UNIT;
	l->st.lends++;
	l->st.lent_total += VCMAD_BALLOON_UNIT;
	b->lends++;
	b->lent_frames_total += VCMAD_BALLOON_UNIT;
	return true;
}

static void log_lent(const struct vcmad_lender *l)
{
	if (l->ops == &xen_lender_ops)
		log_info("balloon: %llu MiB of idle pool capacity lent to %s (domain %u)",
			 (unsigned long long)(l->lent >> 8), l->name, l->dom);
	else
		log_info("%s: %llu MiB of idle pool capacity lent to %s", l->ops->kind,
			 (unsigned long long)(l->lent >> 8), l->name);
}

bool vcmad_balloon_lend(struct vcmad *d)
{
	struct vcmad_balloon *b = &d->balloon;
	uint64_t room[VCMAD_BALLOON_MAX_LENDERS] = { 0 };
	bool lent = false, any = false;

	for (uint32_t i = 0; i < b->nlenders; i++) {
		struct vcmad_lender *l = &b->lender[i];

		if (l->ops && !l->ops->room(d, l, &room[i]))
			any = true;
		else
			room[i] = 0;
	}
	if (!any)
		return false;
	for (uint32_t pi = 0; pi < d->core.npools; pi++) {
		struct vcma_pool *p = d->core.pool[pi];

		if (p->cfg.lendable != 1 || p->fm.nframes < VCMAD_BALLOON_UNIT)
			continue;
		/* from the top: regions pack toward the bottom */
		for (uint64_t idx = (p->fm.nframes / VCMAD_BALLOON_UNIT - 1) * VCMAD_BALLOON_UNIT;; idx -= VCMAD_BALLOON_UNIT) {
			int li = pick_lender(b, room);

			if (li < 0)
				goto out;
			if (unit_free(p, idx) && lend_unit(d, p, idx, (uint32_t)li, room))
				lent = true;
			if (!idx)
				break;
		}
	}
out:
	if (lent)
		for (uint32_t i = 0; i < b->nlenders; i++)
			if (b->lender[i].ops && b->lender[i].lent)
				log_lent(&b->lender[i]);
	return lent;
}

/* ---- taking back ---- */

/* One window's reclaim, across the lenders it holds slots of. */
struct window {
	struct vcmad *d;
	struct vcma_pool *p;
	uint64_t start, count, t0;
	uint32_t pending;
	bool short_;
	int (*done)(void *arg, int err);
	void *arg;
};

struct part {
	struct window *w;
	uint32_t lender;
	uint64_t n;
	uint64_t slots[];
};

static void finish(struct window *w)
{
	struct vcmad_balloon *b = &w->d->balloon;
	uint64_t ns = vcmad_now(w->d) - w->t0;

	b->reclaims++;
	b->reclaim_ns_total += ns;
	if (ns > b->reclaim_ns_max)
		b->reclaim_ns_max = ns;
	if (w->short_)
		b->reclaims_short++;
	log_info("balloon: %llu KiB of pool %s taken back from lenders in %.1f ms%s", (unsigned long long)(w->count * 4),
		 w->p->cfg.name, (double)ns / 1e6, w->short_ ? ", short: the allocation is answered BUSY" : "");
	w->done(w->arg, w->short_ ? -EBUSY : 0);
	free(w);
}

static void count_part(struct vcmad_lender *l, uint64_t asked, uint64_t held, uint64_t ns)
{
	l->st.reclaims++;
	l->st.asked += asked;
	l->st.came_back += held;
	l->st.reclaim_ns_total += ns;
	if (ns > l->st.reclaim_ns_max)
		l->st.reclaim_ns_max = ns;
	if (held < asked)
		l->st.reclaims_short++;
}

static void part_done(void *arg, uint64_t held)
{
	struct part *pt = arg;
	struct window *w = pt->w;
	struct vcmad_lender *l = &w->d->balloon.lender[pt->lender];

	if (held > pt->n)
		held = pt->n;
	vcma_fmap_batch_begin(&w->p->fm);
	for (uint64_t i = 0; i < held; i++)
		vcma_pool_unlend(w->p, pt->slots[i] - w->p->fm.base);
	vcma_fmap_batch_end(&w->p->fm);
	l->lent -= held < l->lent ? held : l->lent;
	w->d->balloon.reclaimed_frames += held;
	count_part(l, pt->n, held, vcmad_now(w->d) - w->t0);
	if (held < pt->n) {
		w->short_ = true;
		if (l->ops == &xen_lender_ops)
			log_warn("balloon: lender %s (domain %u) gave back %llu of %llu pages in time", l->name, l->dom,
				 (unsigned long long)held, (unsigned long long)pt->n);
		else
			log_warn("%s: lender %s gave back %llu of %llu KiB asked in %.1f ms; the rest stays lent",
				 l->ops->kind, l->name, (unsigned long long)(held * 4), (unsigned long long)(pt->n * 4),
				 (double)(vcmad_now(w->d) - w->t0) / 1e6);
	} else if (l->ops != &xen_lender_ops) {
		log_info("%s: lender %s gave back the %llu KiB asked in %.1f ms", l->ops->kind, l->name,
			 (unsigned long long)(held * 4), (double)(vcmad_now(w->d) - w->t0) / 1e6);
	}
	free(pt);
	if (!--w->pending)
		finish(w);
}

static bool lenders_frame(const struct vcmad_balloon *b, const struct vcma_frame_info *fi, uint32_t *li)
{
	if (fi->state != VCMA_FRAME_LENT_FREE || fi->guest < VCMAD_BALLOON_GUEST_BASE)
		return false;
	*li = fi->guest - VCMAD_BALLOON_GUEST_BASE;
	return *li < b->nlenders && b->lender[*li].ops;
}

uint64_t vcmad_balloon_window_lent(const struct vcmad *d, const struct vcma_pool *p, uint64_t start, uint64_t count)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < count; i++) {
		struct vcma_frame_info fi;
		uint32_t li;

		if (!vcma_fmap_get(&p->fm, start + i, &fi) && lenders_frame(&d->balloon, &fi, &li))
			n++;
	}
	return n;
}

int vcmad_balloon_reclaim(struct vcmad *d, struct vcma_pool *p, uint64_t start, uint64_t count,
			  int (*done)(void *arg, int err), void *arg)
{
	struct vcmad_balloon *b = &d->balloon;
	struct window *w;
	struct part *parts[VCMAD_BALLOON_MAX_LENDERS] = { 0 };
	int rc = 0;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct window){ .d = d, .p = p, .start = start, .count = count, .t0 = vcmad_now(d), .done = done,
			      .arg = arg };
	for (uint64_t i = 0; i < count; i++) {
		struct vcma_frame_info fi;
		uint32_t li;

		if (vcma_fmap_get(&p->fm, start + i, &fi) || !lenders_frame(b, &fi, &li))
			continue; /* not lent, or lent to a VM: the caller's */
		if (!parts[li]) {
			parts[li] = calloc(1, sizeof(struct part) + count * sizeof(uint64_t));
			if (!parts[li]) {
				rc = -ENOMEM;
				goto fail;
			}
			parts[li]->w = w;
			parts[li]->lender = li;
		}
		parts[li]->slots[parts[li]->n++] = p->fm.base + start + i;
	}
	for (uint32_t li = 0; li < b->nlenders; li++)
		if (parts[li])
			w->pending++;
	if (!w->pending) {
		rc = -EINVAL;
		goto fail;
	}
	/* every part is started; one that cannot start ends at once as short */
	for (uint32_t li = 0, started = 0, total = w->pending; li < b->nlenders; li++) {
		struct vcmad_lender *l = &b->lender[li];

		if (!parts[li])
			continue;
		started++;
		rc = l->ops->reclaim(d, l, parts[li]->slots, parts[li]->n, vcmad_now(d) + l->reclaim_timeout_ns,
				     part_done, parts[li]);
		if (rc) {
			log_warn("%s: cannot ask %s for its pages back: %s", l->ops->kind, l->name, strerror(-rc));
			count_part(l, parts[li]->n, 0, 0);
			if (started == total && w->pending == 1) {
				/* nothing else runs: fail synchronously, nothing started */
				free(parts[li]);
				free(w);
				return rc;
			}
			w->short_ = true;
			free(parts[li]);
			w->pending--;
		}
		parts[li] = NULL;
	}
	return 0;
fail:
	for (uint32_t li = 0; li < VCMAD_BALLOON_MAX_LENDERS; li++)
		free(parts[li]);
	free(w);
	return rc;
}

void vcmad_balloon_fini(struct vcmad *d)
{
	struct vcmad_balloon *b = &d->balloon;

	for (uint32_t i = 0; i < b->nlenders; i++) {
		struct vcmad_lender *l = &b->lender[i];

		if (!l->ops)
			continue;
		l->ops->unlend(d, l);
		if (l->ops->remove)
			l->ops->remove(d, l);
		memset(l, 0, sizeof(*l));
	}
	b->nlenders = 0;
}

/* A dead lender's frames went back to Xen with it: hold frames for its slots again.
 * The run is claimed meanwhile, so no allocation reclaims it a second time. */
struct orphan {
	struct vcmad *d;
	struct vcma_pool *p;
	uint64_t idx, n;
};

static int orphan_done(void *arg, int err)
{
	struct orphan *o = arg;

	vcma_fmap_unclaim(&o->p->fm, o->idx, o->n);
	if (err)
		log_warn("balloon: capacity lent to a domain that died is not all held again yet");
	vcmad_relend_kick(o->d); /* lend it anew, when quiet */
	free(o);
	return 0;
}

/* One reclaim per run of the unclaimed slots of lender li in pool p. */
static void hold_again(struct vcmad *d, struct vcma_pool *p, uint32_t li)
{
	for (uint64_t idx = 0; idx < p->fm.nframes;) {
		struct vcma_frame_info fi;
		struct orphan *o;
		uint64_t end = idx;

		while (end < p->fm.nframes && !vcma_fmap_get(&p->fm, end, &fi) && fi.state == VCMA_FRAME_LENT_FREE &&
		       !fi.claimed && fi.guest == VCMAD_BALLOON_GUEST(li))
			end++;
		if (end == idx) {
			idx++;
			continue;
		}
		o = malloc(sizeof(*o));
		if (o && !vcma_fmap_claim(&p->fm, idx, end - idx)) {
			*o = (struct orphan){ .d = d, .p = p, .idx = idx, .n = end - idx };
			if (vcmad_balloon_reclaim(d, p, idx, end - idx, orphan_done, o)) {
				vcma_fmap_unclaim(&p->fm, idx, end - idx);
				free(o);
				log_warn("balloon: cannot hold the capacity lent to %s again", d->balloon.lender[li].name);
			}
		} else {
			free(o);
		}
		idx = end;
	}
}

void vcmad_balloon_domains_changed(struct vcmad *d)
{
	struct vcmad_balloon *b = &d->balloon;
	const struct vcmad_mem_ops *mem = d->be.type->mem;

	for (uint32_t li = 0; li < b->nlenders; li++) {
		struct vcmad_lender *l = &b->lender[li];
		uint64_t room;
		uint32_t dom;

		if (l->ops != &xen_lender_ops || !l->lent ||
		    (!mem->lender_room(&d->be, l->name, &dom, &room) && dom == l->dom))
			continue;
		log_info("balloon: lender %s (domain %u) is gone: its %llu MiB are held again", l->name, l->dom,
			 (unsigned long long)(l->lent >> 8));
		l->present = false;
		/* the backend holds at once */
		for (uint32_t pi = 0; pi < d->core.npools; pi++)
			hold_again(d, d->core.pool[pi], li);
	}
}
