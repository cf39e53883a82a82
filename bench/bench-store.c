// SPDX-License-Identifier: MIT
/*
 * bench-store: what the durable store (hv/store) costs.
 *
 *  1. Replay of N ownership records (default 1 M: regions and p2m runs): open (which
 *     validates every record's CRC), replay, and the invariant check, with data.mdb
 *     warm in the page cache and cold (its pages dropped with POSIX_FADV_DONTNEED).
 *  2. ALLOC+FREE of a 2 MiB region in hv/core alone, then with the region recorded:
 *     a put + commit after the alloc and a del + commit after the free, each commit a
 *     turn of its own (the worst case: one guest request per loop turn), committed
 *       - with MDB_NOSYNC and no fsync (what the store's bookkeeping costs),
 *       - with group commit: MDB_NOSYNC commit + one mdb_env_sync (what vcmad will do),
 *       - with LMDB's own syncs (data pages, then the meta page: two fsyncs),
 *       - with group commit when 8 guests' requests share each turn (time per pair).
 *
 * usage: bench-store [--dir DIR] [--records N] [--pairs N] [--quick]
 * (--quick: 100 k records, 200 pairs: a smoke run)
 * DIR defaults to a new directory under /var/tmp (a real disk, not tmpfs); the
 * output says which file system it is. Never run by the test suite.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "core.h"
#include "pool_config.h"
#include "store.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench-store: %s: %s\n", what, why);
	exit(1);
}

static const char *fs_name(const char *dir)
{
	struct statfs f;

	if (statfs(dir, &f))
		return "unknown";
	switch ((unsigned long)f.f_type) {
	case 0x01021994: return "tmpfs (memory, not a disk)";
	case 0xEF53: return "ext2/3/4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x794c7630: return "overlayfs";
	default: return "other";
	}
}

static void rm_store(const char *dir)
{
	char p[4224];

	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/lock.mdb", dir);
	unlink(p);
}

static struct vcma_store *store_open(const char *dir, bool no_sync, bool lmdb_sync)
{
	struct vcma_store_options o = { .no_sync = no_sync, .lmdb_sync = lmdb_sync, .map_size = 4ull << 30 };
	struct vcma_store *s;
	char err[1024];

	if (vcma_store_open(&s, dir, &o, err, sizeof(err)))
		die("open", err);
	return s;
}

/* ---- 1. replay ---- */

static int count_region(void *ctx, const struct vcma_store_region *r)
{
	(*(uint64_t *)ctx)++;
	return 0;
}

static int count_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	(*(uint64_t *)ctx)++;
	return 0;
}

static void drop_cache(const char *dir)
{
	char p[4224];
	int fd;

	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fdatasync(fd) || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) || close(fd))
		die(p, strerror(errno));
}

static void bench_replay(const char *dir, uint64_t nrec)
{
	struct vcma_store_pool pool = { .id = 0, .name = "main", .base_mfn = 0x100000, .frames = 1ull << 32 };
	struct vcma_store *s = store_open(dir, true, false);
	struct vcma_store_replay_ops ops;
	struct vcma_store_counts c;
	uint64_t t0, n = 0, guests = 64;
	double t_open[2], t_replay[2], t_verify[2], mb;
	char p[4224];
	FILE *f;

	if (vcma_store_put_pool(s, &pool))
		die("put", vcma_store_error(s));
	for (uint32_t g = 1; g <= guests; g++) {
		struct vcma_store_guest gu = { .id = g, .link = VCMA_STORE_LINK_SIM };

		snprintf(gu.name, sizeof(gu.name), "vm%u", g);
		if (vcma_store_put_guest(s, &gu))
			die("put", vcma_store_error(s));
	}
	/* half regions of 4 frames, half p2m runs of 4 frames, interleaved in the pool */
	for (uint64_t i = 0; i < nrec; i++) {
		uint32_t g = (uint32_t)(i % guests) + 1;
		int rc;

		if (i & 1) {
			struct vcma_store_p2m m = { g, (i / guests) * 4, 0x100000 + i * 4, 4 };

			rc = vcma_store_put_p2m(s, &m);
		} else {
			struct vcma_store_region r = { ((i / 2 + 1) << 32) | (i & 0xffff), g, 0, 0x100000 + i * 4, 4, 0 };

			rc = vcma_store_put_region(s, &r);
		}
		if (rc)
			die("put", vcma_store_error(s));
		if (i % 10000 == 9999 && vcma_store_commit(s))
			die("commit", vcma_store_error(s));
	}
	if (vcma_store_commit(s))
		die("commit", vcma_store_error(s));
	vcma_store_close(s);
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	f = fopen(p, "rb");
	if (!f || fseek(f, 0, SEEK_END))
		die(p, strerror(errno));
	mb = (double)ftell(f) / (1 << 20);
	fclose(f);

	memset(&ops, 0, sizeof(ops));
	ops.region = count_region;
	ops.p2m = count_p2m;
	for (int cold = 1; cold >= 0; cold--) {
		if (cold)
			drop_cache(dir);
		t0 = now_ns();
		s = store_open(dir, true, false);
		t_open[cold] = (double)(now_ns() - t0) / 1e9;
		n = 0;
		t0 = now_ns();
		if (vcma_store_replay(s, &ops, &n))
			die("replay", vcma_store_error(s));
		t_replay[cold] = (double)(now_ns() - t0) / 1e9;
		if (n != nrec)
			die("replay", "wrong record count");
		t0 = now_ns();
		if (vcma_store_verify(s, &c, NULL, NULL) != 0)
			die("verify", "violations in a consistent store");
		t_verify[cold] = (double)(now_ns() - t0) / 1e9;
		vcma_store_close(s);
	}
	printf("1. replay of %llu ownership records (%llu regions + %llu p2m runs, 4 frames each; data.mdb %.0f MiB)\n",
	       (unsigned long long)nrec, (unsigned long long)c.regions, (unsigned long long)c.p2m, mb);
	printf("   %-32s %10s %10s\n", "", "cold", "warm");
	printf("   %-32s %9.3fs %9.3fs\n", "open (validates every CRC)", t_open[1], t_open[0]);
	printf("   %-32s %9.3fs %9.3fs   (%.1f M records/s warm; target < 1 s)\n", "replay (CRC + decode + callback)",
	       t_replay[1], t_replay[0], (double)nrec / t_replay[0] / 1e6);
	printf("   %-32s %9.3fs %9.3fs\n", "verify (replay + invariants)", t_verify[1], t_verify[0]);
	printf("   %-32s %9.3fs %9.3fs\n\n", "restart total: open + replay", t_open[1] + t_replay[1],
	       t_open[0] + t_replay[0]);
	rm_store(dir);
}

/* ---- 2. ALLOC+FREE ---- */

enum mode { M_NONE, M_NOSYNC, M_GROUP, M_LMDB, M_GROUP8, M_COUNT };
static const char *const mode_name[] = {
	"hv/core only, not recorded", "recorded, MDB_NOSYNC, no fsync", "recorded, group commit (1 fsync)",
	"recorded, LMDB syncs (2 fsyncs)", "group commit, 8 guests per turn",
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct result {
	double mean_ns, p50_ns, p99_ns;
	uint64_t pairs;
};

static struct result bench_pairs(const char *dir, enum mode m, uint64_t pairs)
{
	struct vcma_core core;
	struct vcma_pool_config cfg;
	struct vcma_requester who = { .guest = 1, .name = "vm1" };
	struct vcma_alloc_req req = { .bytes = 2u << 20 };
	struct vcma_store *s = NULL;
	struct result res = { .pairs = pairs };
	unsigned int batch = m == M_GROUP8 ? 8 : 1;
	uint64_t *lat, total = 0;
	char err[256];

	pairs -= pairs % batch;
	res.pairs = pairs;
	lat = calloc(pairs, sizeof(*lat));
	if (!lat)
		die("calloc", strerror(ENOMEM));
	if (vcma_core_init(&core) || vcma_pool_config_init(&cfg, "main", err, sizeof(err)) ||
	    vcma_pool_config_set(&cfg, "size", "1G", err, sizeof(err)) || vcma_pool_config_validate(&cfg, err, sizeof(err)) ||
	    vcma_core_add_pool(&core, &cfg, 0x100000, 1u << 18) < 0)
		die("core", err);
	if (m != M_NONE) {
		struct vcma_store_pool p = { .id = 0, .name = "main", .base_mfn = 0x100000, .frames = 1u << 18 };
		struct vcma_store_guest g = { .id = 1, .name = "vm1", .link = VCMA_STORE_LINK_SIM };

		s = store_open(dir, m == M_NOSYNC, m == M_LMDB);
		if (vcma_store_put_pool(s, &p) || vcma_store_put_guest(s, &g) || vcma_store_commit(s))
			die("store", vcma_store_error(s));
	}
	for (uint64_t i = 0; i < pairs; i += batch) {
		struct vcma_region r[8];
		uint64_t t0 = now_ns(), dt;

		for (unsigned int b = 0; b < batch; b++) {
			int rc = vcma_core_alloc(&core, &who, &req, NULL, &r[b]);

			if (rc)
				die("alloc", strerror(-rc));
			if (s) {
				struct vcma_store_region sr = { r[b].handle, r[b].guest, r[b].pool, r[b].mfn, r[b].nframes,
								r[b].flags };

				if (vcma_store_put_region(s, &sr))
					die("record alloc", vcma_store_error(s));
			}
		}
		if (s && vcma_store_commit(s))
			die("commit alloc", vcma_store_error(s));
		for (unsigned int b = 0; b < batch; b++) {
			int rc = vcma_core_free(&core, 1, r[b].handle);

			if (rc)
				die("free", strerror(-rc));
			if (s && vcma_store_del_region(s, r[b].handle))
				die("record free", vcma_store_error(s));
		}
		if (s && vcma_store_commit(s))
			die("commit free", vcma_store_error(s));
		dt = (now_ns() - t0) / batch; /* per pair: each guest waits for the whole turn */
		for (unsigned int b = 0; b < batch; b++)
			lat[i + b] = dt;
		total += dt * batch;
	}
	qsort(lat, pairs, sizeof(*lat), cmp_u64);
	res.mean_ns = (double)total / (double)pairs;
	res.p50_ns = (double)lat[pairs / 2];
	res.p99_ns = (double)lat[pairs * 99 / 100];
	free(lat);
	vcma_store_close(s);
	vcma_core_fini(&core);
	rm_store(dir);
	return res;
}

static void fmt_t(double ns, char *buf, size_t n)
{
	if (ns < 1e4)
		snprintf(buf, n, "%.2f us", ns / 1e3);
	else if (ns < 1e6)
		snprintf(buf, n, "%.1f us", ns / 1e3);
	else
		snprintf(buf, n, "%.2f ms", ns / 1e6);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "records", required_argument, NULL, 'r' },
		{ "pairs", required_argument, NULL, 'p' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char tmpl[] = "/var/tmp/bench-store-XXXXXX", sub[4200];
	const char *dir = NULL;
	uint64_t nrec = 1000000, pairs = 1000;
	struct result r[M_COUNT];
	int o;

	while ((o = getopt_long(argc, argv, "d:r:p:qh", opts, NULL)) != -1) {
		switch (o) {
		case 'd': dir = optarg; break;
		case 'r': nrec = strtoull(optarg, NULL, 0); break;
		case 'p': pairs = strtoull(optarg, NULL, 0); break;
		case 'q':
			nrec = 100000;
			pairs = 200;
			break;
		case 'h':
			printf("usage: bench-store [--dir DIR] [--records N] [--pairs N] [--quick]\n");
			return 0;
		default: return 2;
		}
	}
	if (!nrec || pairs < 100)
		die("usage", "--records must be > 0, --pairs >= 100");
	if (!dir) {
		dir = mkdtemp(tmpl);
		if (!dir)
			die(tmpl, strerror(errno));
	}
	snprintf(sub, sizeof(sub), "%s/state", dir);
	printf("bench-store: state directory %s on %s; %s\n\n", sub, fs_name(dir), MDB_VERSION_STRING);
	bench_replay(sub, nrec);

	r[M_NONE] = bench_pairs(sub, M_NONE, pairs * 100);
	r[M_NOSYNC] = bench_pairs(sub, M_NOSYNC, pairs * 20);
	r[M_GROUP] = bench_pairs(sub, M_GROUP, pairs);
	r[M_LMDB] = bench_pairs(sub, M_LMDB, pairs);
	r[M_GROUP8] = bench_pairs(sub, M_GROUP8, pairs * 4);
	printf("2. ALLOC+FREE of a 2 MiB region; the ALLOC's record is committed in one turn, the FREE's in the next\n"
	       "   (one guest per turn, except the last row: 8 guests' requests share each turn, per pair)\n");
	printf("   %-34s %8s %10s %10s %10s %9s\n", "", "pairs", "mean", "p50", "p99", "x core");
	for (int m = 0; m < M_COUNT; m++) {
		char a[32], b[32], c[32];

		fmt_t(r[m].mean_ns, a, sizeof(a));
		fmt_t(r[m].p50_ns, b, sizeof(b));
		fmt_t(r[m].p99_ns, c, sizeof(c));
		printf("   %-34s %8llu %10s %10s %10s %9.1f\n", mode_name[m], (unsigned long long)r[m].pairs, a, b, c,
		       r[m].mean_ns / r[M_NONE].mean_ns);
	}
	printf("   group commit vs LMDB syncs: %.2fx; per fsync'd commit (half a pair): %.2f ms\n",
	       r[M_LMDB].mean_ns / r[M_GROUP].mean_ns, r[M_GROUP].mean_ns / 2e6);
	rmdir(sub);
	if (dir == tmpl && rmdir(dir))
		fprintf(stderr, "bench-store: %s: %s\n", dir, strerror(errno));
	return 0;
}
