// SPDX-License-Identifier: MIT
/*
 * scrub.c - zeroing pool frames after the fact (scrub.h says why it is safe).
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "scrub.h"
#include "vcmad.h"

static struct vcmad *of_timer(struct vcma_timer *t)
{
	return (struct vcmad *)((char *)t - offsetof(struct vcmad, scrub.timer));
}

/* Zero what of [mfn, mfn+n) is FREE, unclaimed and not known zero, at most *budget
 * frames; returns the frames of the range dealt with (examined), so the caller
 * advances by that much. */
static uint64_t scrub_range(struct vcmad *d, uint64_t mfn, uint64_t n, uint64_t *budget)
{
	struct vcmad_scrub *s = &d->scrub;
	struct vcma_pool *p = vcma_core_pool_of(&d->core, mfn);
	uint64_t idx, end, at, len;
	int rc;

	if (!p) {
		log_err("scrub: frame %#llx is in no pool", (unsigned long long)mfn);
		return n; /* dropped: only pool frames are ever queued */
	}
	idx = mfn - p->fm.base;
	end = n < p->fm.nframes - idx ? idx + n : p->fm.nframes; /* the rest is in the next pool */
	at = vcma_fmap_next_unzeroed(&p->fm, idx, end, &len);
	if (!len)
		return end - idx;
	if (len > *budget)
		len = *budget;
	*budget -= len;
	rc = d->be.type->mem->zero(&d->be, p->fm.base + at, len);
	if (!rc)
		rc = vcma_fmap_mark_zeroed(&p->fm, at, len);
	if (rc) {
		/* not marked: whoever takes these frames next zeroes them itself */
		if (!s->errors++)
			log_err("scrub: pool %s: cannot zero %llu frame(s) at %#llx: %s (the next owner's hand-out "
				"zeroes them)", p->cfg.name, (unsigned long long)len,
				(unsigned long long)(p->fm.base + at), strerror(-rc));
	} else {
		s->scrubbed_frames += len;
	}
	return at + len - idx;
}

#define FILE_CHUNK (2ull << 20) /* a huge page: hugetlbfs frees only whole ones */
#define PAGE_BYTES 4096ull

static void file_done(struct vcmad_scrub_file *f)
{
	if (f->map && munmap(f->map, f->map_size))
		log_err("scrub: munmap: %s", strerror(errno));
	if (close(f->fd))
		log_err("scrub: close: %s", strerror(errno));
	free(f);
}

/* Punch the next chunk of f that holds memory; true when f is done. */
static bool file_step(struct vcmad_scrub *s, struct vcmad_scrub_file *f)
{
	uint64_t from = f->pos, at, to;
	off_t data = lseek(f->fd, (off_t)f->pos, SEEK_DATA);

	if (data < 0 && errno != ENXIO)
		data = (off_t)f->pos; /* cannot tell: punch it all, chunk by chunk */
	if (data < 0 || (uint64_t)data >= f->end) {
		f->pos = f->end; /* nothing but holes left */
	} else {
		at = (uint64_t)data & ~(FILE_CHUNK - 1);
		if (at < f->pos)
			at = f->pos;
		to = at + FILE_CHUNK < f->end ? at + FILE_CHUNK : f->end;
		if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)(to - at)) &&
		    !s->errors++)
			log_err("scrub: cannot release a detached guest's memory: %s", strerror(errno));
		f->pos = to;
	}
	s->pending_frames -= (f->pos - from) / PAGE_BYTES;
	return f->pos >= f->end;
}

void vcmad_scrub_release_file(struct vcmad *d, int fd, void *map, size_t map_size, uint64_t off, uint64_t len)
{
	struct vcmad_scrub *s = &d->scrub;
	struct vcmad_scrub_file *f = calloc(1, sizeof(*f)), **pp;

	len &= ~(PAGE_BYTES - 1);
	if (!f) {
		/* punch it all now, as vcmad did before it had a scrubber */
		if (len && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
			log_err("scrub: cannot release a detached guest's memory: %s", strerror(errno));
		if (map && munmap(map, map_size))
			log_err("scrub: munmap: %s", strerror(errno));
		if (close(fd))
			log_err("scrub: close: %s", strerror(errno));
		return;
	}
	f->fd = fd;
	f->map = map;
	f->map_size = map_size;
	f->pos = off;
	f->end = off + len;
	for (pp = &s->files; *pp; pp = &(*pp)->next)
		;
	*pp = f;
	s->pending_frames += len / PAGE_BYTES;
	if (!s->timer.armed)
		vcma_timer_arm(&d->loop, &s->timer, vcma_loop_now(&d->loop));
}

/* A VM held paused by a vacate job waits for the loop: zeroing then would lengthen
 * its pause past max_pause_us. */
static bool vm_paused(const struct vcmad *d)
{
	return d->vms_paused > 0;
}

static void step(struct vcma_timer *t)
{
	struct vcmad *d = of_timer(t);
	struct vcmad_scrub *s = &d->scrub;
	uint64_t budget = VCMAD_SCRUB_STEP_FRAMES;

	if (vm_paused(d)) {
		s->deferred++;
		vcma_timer_arm(&d->loop, &s->timer, vcma_loop_now(&d->loop) + VCMAD_SCRUB_DEFER_NS);
		return;
	}
	if (s->files) {
		/* one chunk of a detached guest's memory per turn, then the frames' turn */
		struct vcmad_scrub_file *f = s->files;

		if (file_step(s, f)) {
			s->files = f->next;
			file_done(f);
		}
		budget = budget > FILE_CHUNK / PAGE_BYTES ? budget - FILE_CHUNK / PAGE_BYTES : 0;
	}

	while (budget && s->head < s->n) {
		struct vcmad_scrub_range *r = &s->q[s->head];
		uint64_t done = scrub_range(d, r->mfn, r->n, &budget);

		r->mfn += done;
		r->n -= done;
		s->pending_frames -= done;
		if (!r->n)
			s->head++;
	}
	if (s->head < s->n || s->files) {
		vcma_timer_arm(&d->loop, &s->timer, vcma_loop_now(&d->loop)); /* more next turn */
		return;
	}
	s->head = s->n = 0;
	if (s->cap > 64) { /* a big death's queue goes back */
		free(s->q);
		s->q = NULL;
		s->cap = 0;
	}
}

void vcmad_scrub_add(struct vcmad *d, uint64_t mfn, uint64_t n)
{
	struct vcmad_scrub *s = &d->scrub;

	if (!n)
		return;
	if (s->n > s->head && s->q[s->n - 1].mfn + s->q[s->n - 1].n == mfn) {
		s->q[s->n - 1].n += n;
	} else {
		if (s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 64;
			struct vcmad_scrub_range *q = realloc(s->q, cap * sizeof(*q));

			if (!q) {
				uint64_t budget = n;

				/* zero them now, as vcmad did before it had a scrubber */
				for (uint64_t done = 0; done < n && budget;)
					done += scrub_range(d, mfn + done, n - done, &budget);
				return;
			}
			s->q = q;
			s->cap = cap;
		}
		s->q[s->n].mfn = mfn;
		s->q[s->n].n = n;
		s->n++;
	}
	s->pending_frames += n;
	if (!s->timer.armed)
		vcma_timer_arm(&d->loop, &s->timer, vcma_loop_now(&d->loop));
}

void vcmad_scrub_init(struct vcmad *d)
{
	memset(&d->scrub, 0, sizeof(d->scrub));
	vcma_timer_init(&d->scrub.timer, step);
}

/* What is still queued stays as it is: vcmad's exit gives it to no one. */
void vcmad_scrub_fini(struct vcmad *d)
{
	vcma_timer_cancel(&d->loop, &d->scrub.timer);
	while (d->scrub.files) {
		struct vcmad_scrub_file *f = d->scrub.files;

		d->scrub.files = f->next;
		file_done(f);
	}
	free(d->scrub.q);
	d->scrub.q = NULL;
	d->scrub.n = d->scrub.cap = d->scrub.head = 0;
}
