// SPDX-License-Identifier: MIT
/*
 * lend.c - a simulated VM's RAM: lend_share of it from idle frames of lendable pools
 * (taken from the top of each pool, since regions pack toward the bottom), the rest
 * from ordinary memory; the p2m that says which; and the VMM channel messages that
 * change it (proto/vcma_sim.h).
 *
 * Invariant: a pool frame backs at most one gfn and is LENT_* for (guest, gfn) in its
 * pool's frame map exactly while g->p2m[gfn] points at it. Pinned gfns are never on
 * pool frames.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "vcmad.h"
#include "vmm_msg.h"

struct vcma_pool *vcmad_pool_of(struct vcmad *d, uint64_t mfn)
{
	for (uint32_t i = 0; i < d->core.npools; i++) {
		struct vcma_pool *p = d->core.pool[i];

		if (mfn >= p->fm.base && mfn < p->fm.base + p->fm.nframes)
			return p;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Return ordinary frames (any order) to the allocator as merged runs, zeroed. */
static void free_ordinary(struct vcmad *d, uint64_t *mfns, uint64_t n)
{
	qsort(mfns, n, sizeof(*mfns), cmp_u64);
	for (uint64_t i = 0; i < n;) {
		uint64_t j = i + 1;

		while (j < n && mfns[j] == mfns[j - 1] + 1)
			j++;
		struct vcma_extent e = { mfns[i], j - i };

		d->be.ops->ram_free(&d->be, &e, 1);
		i = j;
	}
}

int vcmad_lend_ram(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;
	uint64_t frames = g->ram_frames, want = frames * d->conf.lend_share / 100, gfn = 0;
	struct vcma_extent *runs = NULL;
	int n;

	g->p2m = calloc(frames, sizeof(*g->p2m));
	g->gflags = calloc(frames, 1);
	if (!g->p2m || !g->gflags)
		return -ENOMEM;
	/* pool frames first, from the top of each lendable pool; within a pool in
	 * ascending order, so gfns and mfns run together and the VM maps few runs */
	for (uint32_t i = 0; i < d->core.npools && gfn < want; i++) {
		struct vcma_pool *p = d->core.pool[i];
		uint64_t lo = p->fm.nframes, got = 0;
		struct vcma_frame_info fi;

		if (!p->cfg.lendable)
			continue;
		while (lo > 0 && gfn + got < want) {
			lo--;
			if (!vcma_fmap_get(&p->fm, lo, &fi) && fi.state == VCMA_FRAME_FREE && !fi.claimed)
				got++;
		}
		vcma_fmap_batch_begin(&p->fm);
		for (uint64_t idx = lo; idx < p->fm.nframes && gfn < want; idx++) {
			if (vcma_pool_lend(p, idx, g->id, gfn, true))
				continue; /* not FREE, or claimed */
			g->p2m[gfn++] = p->fm.base + idx;
		}
		vcma_fmap_batch_end(&p->fm);
	}
	/* the rest from ordinary memory */
	if (gfn < frames) {
		/* frames promised to running vacate jobs are not ours to take */
		bool room = d->be.ordinary.free_frames >= d->ord_reserved &&
			    d->be.ordinary.free_frames - d->ord_reserved >= frames - gfn;

		runs = room ? calloc(65536, sizeof(*runs)) : NULL;
		n = runs ? d->be.ops->ram_alloc(&d->be, frames - gfn, runs, 65536) : -ENOMEM;
		if (n < 0) {
			free(runs);
			g->ram_frames = gfn; /* release what was lent */
			vcmad_lend_release(g);
			g->ram_frames = 0;
			return n;
		}
		for (int r = 0; r < n; r++)
			for (uint64_t k = 0; k < runs[r].count; k++)
				g->p2m[gfn++] = runs[r].start + k;
		free(runs);
	}
	vcmad_relend_kick(d); /* pages on ordinary memory may go onto idle pool frames */
	/* pool frames may hold a former region's bytes */
	for (uint64_t i = 0; i < frames; i++)
		if (vcmad_pool_of(d, g->p2m[i]))
			d->be.ops->zero(&d->be, g->p2m[i], 1);
	return 0;
}

void vcmad_lend_release(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;
	uint64_t *ord, nord = 0;

	if (!g->p2m)
		return;
	vcmad_relend_kick(d); /* its pool frames are idle now */
	ord = malloc(g->ram_frames * sizeof(*ord) + 1);
	vcmad_pools_batch_begin(d);
	for (uint64_t gfn = 0; gfn < g->ram_frames; gfn++) {
		uint64_t mfn = g->p2m[gfn];
		struct vcma_pool *p = vcmad_pool_of(d, mfn);

		if (p) {
			if (vcma_pool_unlend(p, mfn - p->fm.base))
				log_err("guest %u: gfn %#llx: pool %s frame %#llx was not lent", g->id,
					(unsigned long long)gfn, p->cfg.name, (unsigned long long)mfn);
			if ((g->gflags[gfn] & VCMAD_GFN_QUARANTINED) && !vcma_fmap_unclaim(&p->fm, mfn - p->fm.base, 1))
				p->quarantined--; /* the VM was unresponsive */
			d->be.ops->zero(&d->be, mfn, 1); /* the guest's data must not outlive it */
		} else if (ord) {
			ord[nord++] = mfn;
		}
	}
	vcmad_pools_batch_end(d);
	if (ord) {
		free_ordinary(d, ord, nord);
		free(ord);
	} else {
		log_err("guest %u: out of memory releasing RAM: %llu frames leak", g->id,
			(unsigned long long)g->ram_frames);
	}
	free(g->p2m);
	free(g->gflags);
	g->p2m = NULL;
	g->gflags = NULL;
}

int vcmad_lend_p2m_runs(struct vcmad_guest *g, struct vcma_sim_run **out, uint32_t *nout)
{
	struct vcma_sim_run *runs = NULL;
	uint32_t n = 0, cap = 0;

	for (uint64_t gfn = 0; gfn < g->ram_frames; gfn++) {
		if (n && runs[n - 1].gfn + runs[n - 1].count == gfn && runs[n - 1].mfn + runs[n - 1].count == g->p2m[gfn]) {
			runs[n - 1].count++;
			continue;
		}
		if (n == cap) {
			struct vcma_sim_run *nr;

			cap = cap ? cap * 2 : 64;
			nr = realloc(runs, cap * sizeof(*nr));
			if (!nr) {
				free(runs);
				return -ENOMEM;
			}
			runs = nr;
		}
		runs[n].gfn = gfn;
		runs[n].mfn = g->p2m[gfn];
		runs[n].count = 1;
		n++;
	}
	*out = runs;
	*nout = n;
	return 0;
}

int vcmad_vmm_send(struct vcmad_guest *g, uint16_t type, uint32_t seq, int32_t status, const struct vcma_sim_run *runs,
		   uint32_t n)
{
	char buf[VCMA_SIM_MSG_MAX];
	struct vcma_sim_msg *m = (struct vcma_sim_msg *)buf;
	size_t len = sizeof(*m) + n * sizeof(*runs);
	ssize_t rc;

	if (n > VCMA_SIM_MSG_RUNS)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->magic = VCMA_SIM_MAGIC;
	m->version = VCMA_SIM_VERSION;
	m->type = type;
	m->seq = seq;
	m->status = status;
	m->count = n;
	if (n)
		memcpy(m->run, runs, n * sizeof(*runs));
	rc = send(g->sock, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (rc != (ssize_t)len)
		return rc < 0 ? -errno : -EIO;
	return 0;
}

/* Report / reuse: LENT_USED <-> LENT_FREE for gfns on pool frames. */
static void mark_reported(struct vcmad_guest *g, uint64_t gfn, bool reported)
{
	struct vcmad *d = g->d;
	uint64_t mfn = g->p2m[gfn];
	struct vcma_pool *p;

	if (!(g->gflags[gfn] & VCMAD_GFN_REPORTED) == !reported)
		return; /* no change: a repeated REPORT or REUSE costs a flag test */
	p = vcmad_pool_of(d, mfn);
	if (reported)
		g->gflags[gfn] |= VCMAD_GFN_REPORTED;
	else
		g->gflags[gfn] &= (uint8_t)~VCMAD_GFN_REPORTED;
	if (p && vcma_pool_set_used(p, mfn - p->fm.base, !reported))
		log_err("guest %u: gfn %#llx on pool %s frame %#llx is not lent", g->id, (unsigned long long)gfn,
			p->cfg.name, (unsigned long long)mfn);
}

int vcmad_vmm_message(struct vcmad_guest *g, const void *buf, size_t len, const char **why)
{
	const struct vcma_sim_msg *m = buf;
	int rc;

	*why = NULL;
	if (g->role != VCMA_SIM_ROLE_VMM) {
		*why = "unexpected message on the attach socket";
		return -EPROTO;
	}
	/* everything below may rely on what it checks (vmm_msg.h) */
	if (vcmad_vmm_msg_check(buf, len, g->ram_frames, why))
		return -EPROTO;
	switch (m->type) {
	case VCMA_SIM_MSG_PAUSED:
		vcmad_vacate_paused(g, m->seq);
		return 0;
	case VCMA_SIM_MSG_REMAPPED:
		vcmad_vacate_remapped(g, m->seq, m->status);
		return 0;
	case VCMA_SIM_MSG_REPORT:
	case VCMA_SIM_MSG_REUSE:
		vcmad_pools_batch_begin(g->d);
		for (uint32_t i = 0; i < m->count; i++)
			for (uint64_t k = 0; k < m->run[i].count; k++)
				mark_reported(g, m->run[i].gfn + k, m->type == VCMA_SIM_MSG_REPORT);
		vcmad_pools_batch_end(g->d);
		if (m->type == VCMA_SIM_MSG_REUSE && (rc = vcmad_vmm_send(g, VCMA_SIM_MSG_REUSED, m->seq, 0, NULL, 0)))
			vcmad_vmm_send_failed(g, "REUSED", rc);
		return 0;
	case VCMA_SIM_MSG_PIN:
		if (vcmad_pin(g, m->seq, m->run, m->count) &&
		    (rc = vcmad_vmm_send(g, VCMA_SIM_MSG_PINNED, m->seq, ENOMEM, NULL, 0)))
			vcmad_vmm_send_failed(g, "PINNED", rc);
		return 0;
	default:
		*why = "unknown VMM message type";
		return -EPROTO;
	}
}
