// SPDX-License-Identifier: MIT
/*
 * verify.c - the store's ownership invariants, checked offline over every record
 * (vcmactl state verify; a restarting vcmad before it trusts the records).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct vec {
	void *a;
	size_t n, cap, size;
};

static int vec_push(struct vec *v, const void *x)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		void *a = realloc(v->a, cap * v->size);

		if (!a)
			return -ENOMEM;
		v->a = a;
		v->cap = cap;
	}
	memcpy((char *)v->a + v->n++ * v->size, x, v->size);
	return 0;
}

/* A range of machine frames and who holds it. */
struct owner {
	uint64_t mfn, end; /* [mfn, end) */
	uint8_t kind;      /* 'r' region, 'p' p2m run */
	uint32_t id32;     /* region: guest; p2m: vm */
	uint64_t id64;     /* region: handle; p2m: first gfn */
};

struct verify {
	struct vec pools, guests, regions, p2m, lenders;
	struct vcma_store_counts *counts;
	void (*violation)(void *ctx, const char *msg);
	void *ctx;
	int nviol;
};

static void viol(struct verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void viol(struct verify *v, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	v->nviol++;
	if (!v->violation)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	v->violation(v->ctx, msg);
}

static int on_meta(void *ctx, const struct vcma_store_meta *m)
{
	struct verify *v = ctx;

	v->counts->meta++;
	return 0;
}
static int on_pool(void *ctx, const struct vcma_store_pool *p)
{
	struct verify *v = ctx;

	v->counts->pools++;
	return vec_push(&v->pools, p);
}
static int on_guest(void *ctx, const struct vcma_store_guest *g)
{
	struct verify *v = ctx;

	v->counts->guests++;
	return vec_push(&v->guests, &g->id);
}
static int on_region(void *ctx, const struct vcma_store_region *r)
{
	struct verify *v = ctx;

	v->counts->regions++;
	return vec_push(&v->regions, r);
}
static int on_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	struct verify *v = ctx;

	v->counts->p2m++;
	return vec_push(&v->p2m, m);
}
static int on_lender(void *ctx, const struct vcma_store_lender *l)
{
	struct verify *v = ctx;

	v->counts->lenders++;
	return vec_push(&v->lenders, l);
}

/* Replay gives each type in ascending key order: pools and guests by id. */
static const struct vcma_store_pool *find_pool(struct verify *v, uint32_t id)
{
	size_t lo = 0, hi = v->pools.n;
	const struct vcma_store_pool *p = v->pools.a;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p[mid].id == id)
			return &p[mid];
		if (p[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static bool guest_known(struct verify *v, uint32_t id)
{
	const uint32_t *g = v->guests.a;
	size_t lo = 0, hi = v->guests.n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (g[mid] == id)
			return true;
		if (g[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static int owner_cmp(const void *a, const void *b)
{
	const struct owner *x = a, *y = b;

	return x->mfn < y->mfn ? -1 : x->mfn > y->mfn;
}

static const char *owner_name(const struct owner *o, char *buf, size_t n)
{
	if (o->kind == 'r')
		snprintf(buf, n, "region 0x%" PRIx64 " (guest %u)", o->id64, o->id32);
	else
		snprintf(buf, n, "p2m run of vm %u at gfn 0x%" PRIx64, o->id32, o->id64);
	return buf;
}

static void check_pools(struct verify *v)
{
	const struct vcma_store_pool *p = v->pools.a;

	for (size_t i = 0; i < v->pools.n; i++) {
		if (!p[i].frames || p[i].base_mfn + p[i].frames < p[i].base_mfn)
			viol(v, "pool %u (%s): %" PRIu64 " frames at mfn 0x%" PRIx64 " is empty or wraps", p[i].id,
			     p[i].name, p[i].frames, p[i].base_mfn);
		for (size_t j = 0; j < i; j++)
			if (p[i].base_mfn < p[j].base_mfn + p[j].frames && p[j].base_mfn < p[i].base_mfn + p[i].frames)
				viol(v, "pools %u (%s) and %u (%s) overlap", p[j].id, p[j].name, p[i].id, p[i].name);
	}
}

static int check_regions(struct verify *v, struct vec *own)
{
	const struct vcma_store_region *r = v->regions.a;

	for (size_t i = 0; i < v->regions.n; i++) {
		const struct vcma_store_pool *p = find_pool(v, r[i].pool);
		struct owner o = { r[i].first_mfn, r[i].first_mfn + r[i].frames, 'r', r[i].guest, r[i].handle };

		if (!guest_known(v, r[i].guest))
			viol(v, "region 0x%" PRIx64 ": owner guest %u is not a known guest", r[i].handle, r[i].guest);
		if (!r[i].frames || o.end < o.mfn) {
			viol(v, "region 0x%" PRIx64 ": %" PRIu64 " frames at mfn 0x%" PRIx64 " is empty or wraps",
			     r[i].handle, r[i].frames, r[i].first_mfn);
			continue;
		}
		if (!p)
			viol(v, "region 0x%" PRIx64 ": pool %u is not a known pool", r[i].handle, r[i].pool);
		else if (o.mfn < p->base_mfn || o.end > p->base_mfn + p->frames)
			viol(v, "region 0x%" PRIx64 ": mfn 0x%" PRIx64 "-0x%" PRIx64 " is outside its pool %u (%s: "
			     "0x%" PRIx64 "-0x%" PRIx64 ")", r[i].handle, o.mfn, o.end - 1, p->id, p->name, p->base_mfn,
			     p->base_mfn + p->frames - 1);
		if (vec_push(own, &o))
			return -ENOMEM;
	}
	return 0;
}

static int check_p2m(struct verify *v, struct vec *own)
{
	const struct vcma_store_p2m *m = v->p2m.a;
	uint64_t far_end = 0, far_gfn = 0;

	for (size_t i = 0; i < v->p2m.n; i++) {
		struct owner o = { m[i].mfn, m[i].mfn + m[i].count, 'p', m[i].vm, m[i].first_gfn };

		if (!guest_known(v, m[i].vm))
			viol(v, "p2m run of vm %u at gfn 0x%" PRIx64 ": vm %u is not a known guest", m[i].vm,
			     m[i].first_gfn, m[i].vm);
		if (!m[i].count || o.end < o.mfn || m[i].first_gfn + m[i].count < m[i].first_gfn) {
			viol(v, "p2m run of vm %u at gfn 0x%" PRIx64 ": %" PRIu64 " frames is empty or wraps", m[i].vm,
			     m[i].first_gfn, m[i].count);
			continue;
		}
		/* key order: one vm's runs by first gfn, so a gfn backed twice lies below the
		 * furthest end of the vm's earlier runs */
		if (!i || m[i - 1].vm != m[i].vm) {
			far_end = 0;
			far_gfn = 0;
		} else if (m[i].first_gfn < far_end) {
			viol(v, "vm %u: gfn 0x%" PRIx64 " is backed twice (runs at gfn 0x%" PRIx64 " and 0x%" PRIx64 ")",
			     m[i].vm, m[i].first_gfn, far_gfn, m[i].first_gfn);
		}
		if (m[i].first_gfn + m[i].count > far_end) {
			far_end = m[i].first_gfn + m[i].count;
			far_gfn = m[i].first_gfn;
		}
		if (vec_push(own, &o))
			return -ENOMEM;
	}
	return 0;
}

static void check_owners(struct verify *v, struct vec *own)
{
	struct owner *o = own->a;
	size_t far = 0; /* the range reaching furthest so far */

	if (own->n > 1) /* none: o is NULL, which qsort may not be given */
		qsort(o, own->n, sizeof(*o), owner_cmp);
	for (size_t i = 1; i < own->n; i++) {
		if (o[i].mfn < o[far].end) {
			char a[96], b[96];
			uint64_t end = o[i].end < o[far].end ? o[i].end : o[far].end;

			viol(v, "mfn 0x%" PRIx64 "-0x%" PRIx64 " owned twice: by %s and by %s", o[i].mfn, end - 1,
			     owner_name(&o[far], a, sizeof(a)), owner_name(&o[i], b, sizeof(b)));
		}
		if (o[i].end > o[far].end)
			far = i;
	}
}

static void check_lenders(struct verify *v)
{
	const struct vcma_store_lender *l = v->lenders.a;

	for (size_t i = 0; i < v->lenders.n; i++) {
		const struct vcma_store_pool *p = find_pool(v, l[i].pool);

		if (!guest_known(v, l[i].guest))
			viol(v, "lender guest %u pool %u: guest %u is not a known guest", l[i].guest, l[i].pool, l[i].guest);
		if (!p)
			viol(v, "lender guest %u pool %u: pool %u is not a known pool", l[i].guest, l[i].pool, l[i].pool);
		else if (l[i].frames > p->frames)
			viol(v, "lender guest %u pool %u: %" PRIu64 " frames lent, the pool has %" PRIu64, l[i].guest,
			     l[i].pool, l[i].frames, p->frames);
	}
}

int vcma_store_verify(struct vcma_store *s, struct vcma_store_counts *counts,
		      void (*violation)(void *ctx, const char *msg), void *ctx)
{
	static const struct vcma_store_replay_ops ops = { on_meta, on_pool, on_guest, on_region, on_p2m, on_lender };
	struct vcma_store_counts dummy;
	struct verify v = {
		.pools.size = sizeof(struct vcma_store_pool), .guests.size = sizeof(uint32_t),
		.regions.size = sizeof(struct vcma_store_region), .p2m.size = sizeof(struct vcma_store_p2m),
		.lenders.size = sizeof(struct vcma_store_lender),
		.counts = counts ? counts : &dummy, .violation = violation, .ctx = ctx,
	};
	struct vec own = { .size = sizeof(struct owner) };
	int rc;

	memset(v.counts, 0, sizeof(*v.counts));
	rc = vcma_store_replay(s, &ops, &v);
	if (rc)
		goto out;
	if (!v.counts->meta)
		viol(&v, "no meta record");
	check_pools(&v);
	rc = check_regions(&v, &own);
	if (!rc)
		rc = check_p2m(&v, &own);
	if (rc)
		goto out;
	check_owners(&v, &own);
	check_lenders(&v);
	rc = v.nviol;
out:
	free(own.a);
	free(v.pools.a);
	free(v.guests.a);
	free(v.regions.a);
	free(v.p2m.a);
	free(v.lenders.a);
	return rc;
}
