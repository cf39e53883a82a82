// SPDX-License-Identifier: MIT
/*
 * balloon.c - balloon lending (balloon.h): which capacity goes to which lender and
 * back; the backend does the hypervisor's part (backend.h: lender_room, lend,
 * reclaim).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balloon.h"
#include "log.h"
#include "vcmad.h"

_Static_assert(VCMAD_BALLOON_GUEST_BASE + VCMAD_BALLOON_MAX_LENDERS - 1 <= VCMA_GUEST_MAX,
	       "lender ids fit in the frame map");

void vcmad_balloon_init(struct vcmad *d)
{
	struct vcmad_balloon *b = &d->balloon;

	memset(b, 0, sizeof(*b));
	for (uint32_t i = 0; i < d->conf.nguests && b->nlenders < VCMAD_BALLOON_MAX_LENDERS; i++)
		if (d->conf.guests[i].lender)
			b->lender[b->nlenders++].name = d->conf.guests[i].name;
}

uint64_t vcmad_balloon_lent(const struct vcmad *d)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < d->balloon.nlenders; i++)
		n += d->balloon.lender[i].lent;
	return n;
}

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
		if (b->lender[i].present && room[i] >= VCMAD_BALLOON_UNIT && (best < 0 || room[i] > room[best]))
			best = (int)i;
	return best;
}

bool vcmad_balloon_lend(struct vcmad *d)
{
	const struct vcmad_mem_ops *mem = d->be.type->mem;
	struct vcmad_balloon *b = &d->balloon;
	uint64_t room[VCMAD_BALLOON_MAX_LENDERS] = { 0 };
	bool lent = false;

	if (!mem->lend || !b->nlenders)
		return false;
	for (uint32_t i = 0; i < b->nlenders; i++) {
		struct vcmad_lender *l = &b->lender[i];
		uint32_t dom = 0;

		l->present = !mem->lender_room(&d->be, l->name, &dom, &room[i]);
		if (l->present && l->dom != dom && l->lent) {
			/* a new domain of that name: what the old one had went with it */
			log_info("balloon: lender %s is a new domain (%u)", l->name, dom);
		}
		if (l->present)
			l->dom = dom;
	}
	for (uint32_t pi = 0; pi < d->core.npools; pi++) {
		struct vcma_pool *p = d->core.pool[pi];

		if (p->cfg.lendable != 1 || p->fm.nframes < VCMAD_BALLOON_UNIT)
			continue;
		/* from the top: regions pack toward the bottom */
		for (uint64_t idx = (p->fm.nframes / VCMAD_BALLOON_UNIT - 1) * VCMAD_BALLOON_UNIT;; idx -= VCMAD_BALLOON_UNIT) {
			int li = pick_lender(b, room);
			int rc = 0;

			if (li < 0)
				return lent;
			if (unit_free(p, idx)) {
				vcma_fmap_batch_begin(&p->fm);
				for (uint64_t i = 0; i < VCMAD_BALLOON_UNIT && !rc; i++)
					rc = vcma_pool_lend(p, idx + i, VCMAD_BALLOON_GUEST((uint32_t)li), 0, false);
				vcma_fmap_batch_end(&p->fm);
				if (!rc)
					rc = mem->lend(&d->be, p->fm.base + idx, VCMAD_BALLOON_UNIT, b->lender[li].dom);
				if (rc) {
					struct vcma_frame_info fi;

					for (uint64_t i = 0; i < VCMAD_BALLOON_UNIT; i++)
						if (!vcma_fmap_get(&p->fm, idx + i, &fi) && fi.state == VCMA_FRAME_LENT_FREE)
							vcma_pool_unlend(p, idx + i);
					log_warn("balloon: cannot lend 2 MiB of pool %s to %s: %s", p->cfg.name,
						 b->lender[li].name, strerror(-rc));
					room[li] = 0; /* not this round */
				} else {
					b->lender[li].lent += VCMAD_BALLOON_UNIT;
					room[li] -= VCMAD_BALLOON_UNIT;
					b->lends++;
					b->lent_frames_total += VCMAD_BALLOON_UNIT;
					lent = true;
				}
			}
			if (!idx)
				break;
		}
	}
	if (lent)
		for (uint32_t i = 0; i < b->nlenders; i++)
			if (b->lender[i].lent)
				log_info("balloon: %llu MiB of idle pool capacity lent to %s (domain %u)",
					 (unsigned long long)(b->lender[i].lent >> 8), b->lender[i].name, b->lender[i].dom);
	return lent;
}

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

static void part_done(void *arg, uint64_t held)
{
	struct part *pt = arg;
	struct window *w = pt->w;
	struct vcmad_lender *l = &w->d->balloon.lender[pt->lender];

	vcma_fmap_batch_begin(&w->p->fm);
	for (uint64_t i = 0; i < held; i++)
		vcma_pool_unlend(w->p, pt->slots[i] - w->p->fm.base);
	vcma_fmap_batch_end(&w->p->fm);
	l->lent -= held < l->lent ? held : l->lent;
	w->d->balloon.reclaimed_frames += held;
	if (held < pt->n) {
		w->short_ = true;
		log_warn("balloon: lender %s (domain %u) gave back %llu of %llu pages in time", l->name, l->dom,
			 (unsigned long long)held, (unsigned long long)pt->n);
	}
	free(pt);
	if (!--w->pending)
		finish(w);
}

int vcmad_balloon_reclaim(struct vcmad *d, struct vcma_pool *p, uint64_t start, uint64_t count,
			  int (*done)(void *arg, int err), void *arg)
{
	struct vcmad_balloon *b = &d->balloon;
	struct window *w;
	struct part *parts[VCMAD_BALLOON_MAX_LENDERS] = { 0 };
	int rc = 0;

	if (!d->be.type->mem->reclaim)
		return -EOPNOTSUPP;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct window){ .d = d, .p = p, .start = start, .count = count, .t0 = vcmad_now(d), .done = done,
			      .arg = arg };
	for (uint64_t i = 0; i < count; i++) {
		struct vcma_frame_info fi;
		uint32_t li;

		if (vcma_fmap_get(&p->fm, start + i, &fi) || fi.state != VCMA_FRAME_LENT_FREE)
			continue;
		li = fi.guest - VCMAD_BALLOON_GUEST_BASE;
		if (fi.guest < VCMAD_BALLOON_GUEST_BASE || li >= b->nlenders) {
			rc = -EINVAL; /* lent by someone else: not a balloon's */
			goto fail;
		}
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
		if (!parts[li])
			continue;
		started++;
		rc = d->be.type->mem->reclaim(&d->be, parts[li]->slots, parts[li]->n, b->lender[li].dom,
					      vcmad_now(d) + VCMAD_RECLAIM_TIMEOUT_NS, part_done, parts[li]);
		if (rc) {
			log_warn("balloon: cannot ask %s for its pages back: %s", b->lender[li].name, strerror(-rc));
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

		if (!l->lent || !l->present || !d->be.type->mem->unlend)
			continue;
		d->be.type->mem->unlend(&d->be, l->dom, l->lent);
		log_info("balloon: %s (domain %u) gives back the %llu MiB it was lent: vcmad stops", l->name, l->dom,
			 (unsigned long long)(l->lent >> 8));
		l->lent = 0;
	}
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

void vcmad_balloon_domains_changed(struct vcmad *d)
{
	struct vcmad_balloon *b = &d->balloon;
	const struct vcmad_mem_ops *mem = d->be.type->mem;

	for (uint32_t li = 0; li < b->nlenders; li++) {
		struct vcmad_lender *l = &b->lender[li];
		uint64_t room;
		uint32_t dom;

		if (!l->lent || (!mem->lender_room(&d->be, l->name, &dom, &room) && dom == l->dom))
			continue;
		log_info("balloon: lender %s (domain %u) is gone: its %llu MiB are held again", l->name, l->dom,
			 (unsigned long long)(l->lent >> 8));
		l->present = false;
		/* one reclaim per run of its unclaimed slots; the backend holds at once */
		for (uint32_t pi = 0; pi < d->core.npools; pi++) {
			struct vcma_pool *p = d->core.pool[pi];

			for (uint64_t idx = 0; idx < p->fm.nframes;) {
				struct vcma_frame_info fi;
				struct orphan *o;
				uint64_t end = idx;

				while (end < p->fm.nframes && !vcma_fmap_get(&p->fm, end, &fi) &&
				       fi.state == VCMA_FRAME_LENT_FREE && !fi.claimed && fi.guest == VCMAD_BALLOON_GUEST(li))
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
						log_warn("balloon: cannot hold the capacity lent to %s again", l->name);
					}
				} else {
					free(o);
				}
				idx = end;
			}
		}
	}
}
