// SPDX-License-Identifier: MIT
/*
 * vcma-demo - the contiguous-memory core at work, without a daemon.
 *
 * Builds a host with a shared lendable pool and a camera's exclusive pool, lends most
 * of the shared pool to three guests (some pages reported free, most in use), then
 * serves a stream of 1/2/4/8 MiB requests: each one searches for the cheapest window
 * and vacates the lent frames in it through a hook that stands in for the backend.
 * Prints pools, fragmentation maps, counters and latencies as it goes.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define MiB (1ull << 20)

struct demo {
	struct vcma_core core;
	uint64_t rng;
	uint64_t moved_copy, moved_drop;
};

static uint64_t rnd(struct demo *d)
{
	uint64_t z = (d->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Stand-in for the backend: LENT_FREE frames are dropped, LENT_USED ones copied. */
static int vacate(void *ctx, struct vcma_pool *pool, const struct vcma_vacate_item *items, size_t n)
{
	struct demo *d = ctx;

	for (size_t i = 0; i < n; i++) {
		int rc = vcma_pool_unlend(pool, items[i].idx);

		if (rc)
			return rc;
		if (items[i].state == VCMA_FRAME_LENT_USED)
			d->moved_copy++;
		else
			d->moved_drop++;
	}
	return 0;
}

static int add_pool(struct demo *d, const char *name, const char *const *kv, uint64_t host, uint64_t base_mfn)
{
	struct vcma_pool_config c;
	char err[256];
	uint64_t bytes;
	int rc;

	rc = vcma_pool_config_init(&c, name, err, sizeof(err));
	for (; !rc && kv[0]; kv += 2)
		rc = vcma_pool_config_set(&c, kv[0], kv[1], err, sizeof(err));
	if (!rc)
		rc = vcma_pool_config_validate(&c, err, sizeof(err));
	if (!rc)
		rc = vcma_pool_config_resolve_size(&c, host, &bytes, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "vcma-demo: %s\n", err);
		return rc;
	}
	rc = vcma_core_add_pool(&d->core, &c, base_mfn, bytes >> VCMA_PAGE_SHIFT);
	if (rc < 0)
		fprintf(stderr, "vcma-demo: pool %s: %s\n", name, strerror(-rc));
	return rc < 0 ? rc : 0;
}

static void print_pools(struct demo *d)
{
	printf("  %-8s %10s %10s %10s %10s %10s %14s\n", "pool", "size", "free", "lent-free", "lent-used", "regions",
	       "largest-free");
	for (uint32_t i = 0; i < d->core.npools; i++) {
		struct vcma_pool *p = d->core.pool[i];
		struct vcma_pool_counts c;
		char b[6][24];

		vcma_pool_counts(p, &c);
		printf("  %-8s %10s %10s %10s %10s %10s %14s\n", p->cfg.name,
		       vcma_format_bytes(c.nframes << VCMA_PAGE_SHIFT, b[0], 24),
		       vcma_format_bytes(c.free << VCMA_PAGE_SHIFT, b[1], 24),
		       vcma_format_bytes(c.lent_free << VCMA_PAGE_SHIFT, b[2], 24),
		       vcma_format_bytes(c.lent_used << VCMA_PAGE_SHIFT, b[3], 24),
		       vcma_format_bytes(c.region << VCMA_PAGE_SHIFT, b[4], 24),
		       vcma_format_bytes(c.largest_free_run << VCMA_PAGE_SHIFT, b[5], 24));
	}
}

static void print_map(struct demo *d, const char *name)
{
	struct vcma_pool *p = vcma_core_pool_by_name(&d->core, name);
	char map[130];
	uint64_t per = (p->fm.nframes + 127) / 128;

	vcma_pool_fragmap(p, per, map, sizeof(map));
	printf("  %-8s |%s|  (1 char = %llu KiB)\n", name, map, (unsigned long long)(per * 4));
}

int main(int argc, char **argv)
{
	static const char *const main_kv[] = { "size", "min(256M,25%)", "quota", "48M", NULL };
	static const char *const cam_kv[] = { "size", "32M", "mode", "exclusive", "bind", "class:camera", NULL };
	static const struct option opts[] = {
		{ "requests", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const uint64_t host = 2048 * MiB;
	const uint64_t sizes[] = { 1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB };
	struct vcma_requester guests[3] = {
		{ .guest = 1, .name = "ivi", .devclass = "display" },
		{ .guest = 2, .name = "cluster", .devclass = "camera" },
		{ .guest = 3, .name = "rear-seat", .devclass = "codec" },
	};
	struct demo d = { .rng = 1 };
	struct vcma_vacate_ops ops = { vacate, &d };
	struct vcma_region live[64];
	unsigned int nlive = 0, nreq = 200, ok[4] = { 0 }, tried[4] = { 0 };
	unsigned int nfail = 0, fail_n[8] = { 0 };
	int fail_rc[8] = { 0 };
	struct vcma_pool *mp;
	int c;

	while ((c = getopt_long(argc, argv, "n:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n': nreq = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 's': d.rng = strtoull(optarg, NULL, 0); break;
		case 'h':
			printf("usage: vcma-demo [--requests N] [--seed S]\n"
			       "Runs the vcma core on a simulated 2 GiB host and prints what it does.\n");
			return 0;
		default: return 2;
		}
	}
	if (vcma_core_init(&d.core) || add_pool(&d, "main", main_kv, host, 0x40000) ||
	    add_pool(&d, "camera", cam_kv, host, 0x80000))
		return 1;
	mp = vcma_core_pool_by_name(&d.core, "main");

	printf("vcma core demo: host %llu MiB, pools resolved from cma=-style sizes\n",
	       (unsigned long long)(host / MiB));
	print_pools(&d);

	/* Idle pool frames back the guests' RAM: lend 90%, a third reported free. */
	for (uint64_t i = 0; i < mp->fm.nframes; i++) {
		uint64_t r = rnd(&d) % 100;

		if (r < 90)
			vcma_pool_lend(mp, i, guests[r % 3].guest, 0x100000 + i, r % 3 != 0);
	}
	printf("\nafter lending idle frames to 3 guests:\n");
	print_pools(&d);
	print_map(&d, "main");

	printf("\nserving %u requests of 1/2/4/8 MiB (random frees in between):\n", nreq);
	for (unsigned int i = 0; i < nreq; i++) {
		unsigned int k = (unsigned int)(rnd(&d) % 4), g = (unsigned int)(rnd(&d) % 3);
		struct vcma_alloc_req req = { .bytes = sizes[k], .pool = "main" };
		int rc;

		if (nlive == 64 || (nlive && rnd(&d) % 3 == 0)) {
			unsigned int j = (unsigned int)(rnd(&d) % nlive);

			vcma_core_free(&d.core, live[j].guest, live[j].handle);
			live[j] = live[--nlive];
			/* the freed frames go back to the guests as lent memory */
			for (uint64_t f = 0; f < mp->fm.nframes; f += 1 + rnd(&d) % 4)
				vcma_pool_lend(mp, f, 1 + (uint32_t)(f % 3), 0x200000 + f, f % 2);
		}
		tried[k]++;
		rc = vcma_core_alloc(&d.core, &guests[g], &req, &ops, &live[nlive]);
		if (!rc) {
			ok[k]++;
			nlive++;
		} else {
			unsigned int j;

			for (j = 0; j < nfail && fail_rc[j] != rc; j++)
				;
			if (j == nfail && nfail < 8)
				fail_rc[nfail++] = rc;
			if (j < 8)
				fail_n[j]++;
		}
	}
	printf("  success by size: 1M %u/%u  2M %u/%u  4M %u/%u  8M %u/%u\n", ok[0], tried[0], ok[1], tried[1], ok[2],
	       tried[2], ok[3], tried[3]);
	for (unsigned int j = 0; j < nfail; j++)
		printf("  refused %u times: %s\n", fail_n[j], vcma_core_strerror(fail_rc[j]));
	printf("  lent frames vacated: %llu dropped (reported free), %llu copied (in use)\n",
	       (unsigned long long)d.moved_drop, (unsigned long long)d.moved_copy);

	/* A one-page request: the shared pool says use normal memory; the camera's own
	 * pool serves it. */
	{
		struct vcma_alloc_req one = { .bytes = 4096 };
		struct vcma_region r;
		int rc = vcma_core_alloc(&d.core, &guests[0], &one, &ops, &r);

		printf("\none-page request from ivi (shared pool): %s\n", vcma_core_strerror(rc));
		rc = vcma_core_alloc(&d.core, &guests[1], &one, &ops, &r);
		printf("one-page request from cluster (camera class): %s%s\n", vcma_core_strerror(rc),
		       rc ? "" : ", served by its exclusive pool");
	}

	printf("\nend state:\n");
	print_pools(&d);
	print_map(&d, "main");
	print_map(&d, "camera");
	printf("  legend: . free  l partly lent  L lent  # region  r region+other  ~ being vacated  x reserved\n");
	printf("\ncounters (main): alloc_success %llu alloc_fail %llu pages_success %llu released %llu\n",
	       (unsigned long long)mp->stats.alloc_success, (unsigned long long)mp->stats.alloc_fail,
	       (unsigned long long)mp->stats.alloc_pages_success, (unsigned long long)mp->stats.release_pages_success);
	printf("alloc latency (main, search + vacate bookkeeping): p50 <= %llu ns, p99 <= %llu ns, max %llu ns\n",
	       (unsigned long long)vcma_hist_quantile(&mp->stats.alloc_latency, 0.5),
	       (unsigned long long)vcma_hist_quantile(&mp->stats.alloc_latency, 0.99),
	       (unsigned long long)mp->stats.alloc_latency.max_ns);
	printf("metadata: %.2f bytes per frame\n",
	       (double)vcma_fmap_metadata_bytes(&mp->fm) / (double)mp->fm.nframes);
	if (vcma_fmap_check(&mp->fm)) {
		fprintf(stderr, "vcma-demo: frame map inconsistent\n");
		return 1;
	}
	vcma_core_fini(&d.core);
	return 0;
}
