// SPDX-License-Identifier: MIT
/*
 * The durable store (hv/store): every record type round trip, turns all or nothing,
 * replay order, CRC damage named, a torn newest transaction dropped, a full map and
 * (argument "full-disk", as root) a full tmpfs failing the turn with -ENOSPC while
 * everything committed before stays, and the offline invariant check.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <lmdb.h>

#include "store.h"
#include "store_format.h" /* the newer-format test writes a meta record by hand */

/* ---- fixtures ---- */

/* A failing sync, injected: this definition wins over liblmdb's for the store linked
 * into this program; with fail_sync 0 it calls LMDB's. */
static int fail_sync;

int mdb_env_sync(MDB_env *env, int force)
{
	static int (*real)(MDB_env *, int);

	if (fail_sync)
		return fail_sync;
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "mdb_env_sync");
	return real ? real(env, force) : EIO;
}

static char warned[4096];
static unsigned int nwarned;

static void warn_cb(void *ctx, const char *msg)
{
	snprintf(warned, sizeof(warned), "%s", msg);
	nwarned++;
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[4096];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static char *tmp_dir(void)
{
	const char *t = getenv("TMPDIR");
	char *d;

	assert_true(asprintf(&d, "%s/test-store-XXXXXX", t && *t ? t : "/tmp") > 0);
	assert_non_null(mkdtemp(d));
	return d;
}

static struct vcma_store *open_ok(const char *dir, uint64_t map_size, bool read_only)
{
	struct vcma_store_options o = { .map_size = map_size, .read_only = read_only, .warn = warn_cb };
	struct vcma_store *s = NULL;
	char err[1024];
	int rc = vcma_store_open(&s, dir, &o, err, sizeof(err));

	if (rc)
		fail_msg("open %s: %d %s", dir, rc, err);
	return s;
}

static int open_err(const char *dir, char *err, size_t n)
{
	struct vcma_store_options o = { .warn = warn_cb };
	struct vcma_store *s = NULL;
	int rc = vcma_store_open(&s, dir, &o, err, n);

	assert_null(s);
	return rc;
}

/* Everything a replay gives, in order. */
struct seen {
	char order[64][48];
	unsigned int n;
	struct vcma_store_meta meta;
	struct vcma_store_pool pool[8];
	struct vcma_store_guest guest[8];
	struct vcma_store_region region[4096];
	struct vcma_store_p2m p2m[8];
	struct vcma_store_lender lender[8];
	unsigned int npool, nguest, nregion, np2m, nlender;
};

static void note(struct seen *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct seen *s, const char *fmt, ...)
{
	va_list ap;

	if (s->n >= 64)
		return;
	va_start(ap, fmt);
	vsnprintf(s->order[s->n++], sizeof(s->order[0]), fmt, ap);
	va_end(ap);
}

static int on_meta(void *c, const struct vcma_store_meta *m)
{
	struct seen *s = c;

	s->meta = *m;
	note(s, "meta");
	return 0;
}
static int on_pool(void *c, const struct vcma_store_pool *p)
{
	struct seen *s = c;

	s->pool[s->npool++ % 8] = *p;
	note(s, "pool %u", p->id);
	return 0;
}
static int on_guest(void *c, const struct vcma_store_guest *g)
{
	struct seen *s = c;

	s->guest[s->nguest++ % 8] = *g;
	note(s, "guest %u", g->id);
	return 0;
}
static int on_region(void *c, const struct vcma_store_region *r)
{
	struct seen *s = c;

	s->region[s->nregion++ % 4096] = *r;
	note(s, "region %#llx", (unsigned long long)r->handle);
	return 0;
}
static int on_p2m(void *c, const struct vcma_store_p2m *m)
{
	struct seen *s = c;

	s->p2m[s->np2m++ % 8] = *m;
	note(s, "p2m %u %#llx", m->vm, (unsigned long long)m->first_gfn);
	return 0;
}
static int on_lender(void *c, const struct vcma_store_lender *l)
{
	struct seen *s = c;

	s->lender[s->nlender++ % 8] = *l;
	note(s, "lender %u %u", l->guest, l->pool);
	return 0;
}
static const struct vcma_store_replay_ops all_ops = { on_meta, on_pool, on_guest, on_region, on_p2m, on_lender };

static struct seen *replay(struct vcma_store *s)
{
	struct seen *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	if (vcma_store_replay(s, &all_ops, r))
		fail_msg("replay: %s", vcma_store_error(s));
	return r;
}

static struct vcma_store_region region(uint64_t handle, uint32_t guest, uint64_t mfn, uint64_t frames)
{
	struct vcma_store_region r = { .handle = handle, .guest = guest, .pool = 0, .first_mfn = mfn, .frames = frames };

	return r;
}

/* A pool 0 of 0x10000 frames at 0x100000 and guests 1 and 2: the base most tests build on. */
static void put_base(struct vcma_store *s)
{
	struct vcma_store_pool p = { .id = 0, .name = "camera", .base_mfn = 0x100000, .frames = 0x10000 };
	struct vcma_store_guest g1 = { .id = 1, .name = "vm1", .link = VCMA_STORE_LINK_SIM };
	struct vcma_store_guest g2 = { .id = 2, .name = "vm2", .link = VCMA_STORE_LINK_SIM };

	assert_int_equal(vcma_store_put_pool(s, &p), 0);
	assert_int_equal(vcma_store_put_guest(s, &g1), 0);
	assert_int_equal(vcma_store_put_guest(s, &g2), 0);
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	b = malloc((size_t)n);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void write_file(const char *path, const unsigned char *b, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Copies DIR's data.mdb into a new directory (the copy a test damages). */
static char *copy_store(const char *dir)
{
	char *d = tmp_dir(), p[4096];
	unsigned char *b;
	size_t len;

	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	b = read_file(p, &len);
	snprintf(p, sizeof(p), "%s/data.mdb", d);
	write_file(p, b, len);
	free(b);
	return d;
}

/* Flips every byte of each occurrence of the 8 bytes of v (little-endian, as the
 * record values hold them) in DIR/data.mdb; returns how many it found. */
static unsigned int damage(const char *dir, uint64_t v)
{
	unsigned char pat[8], *b;
	unsigned int found = 0;
	char p[4096];
	size_t len;

	for (int i = 0; i < 8; i++)
		pat[i] = (unsigned char)(v >> (8 * i));
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	b = read_file(p, &len);
	for (size_t o = 0; o + 8 <= len; o++) {
		if (memcmp(b + o, pat, 8))
			continue;
		b[o + 3] ^= 0x5a;
		found++;
	}
	write_file(p, b, len);
	free(b);
	return found;
}

/* ---- tests ---- */

static void test_crc32c(void **unused)
{
	/* the standard check value of CRC-32C, and the same over split buffers */
	assert_int_equal(vcma_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(vcma_crc32c(vcma_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	assert_int_equal(vcma_crc32c(0, "", 0), 0);
	assert_int_equal(vcma_crc32c_portable(0, "123456789", 9), 0xE3069283u);
	/* the instruction path (where the CPU has one) and the tables agree at every
	 * length and alignment */
	{
		unsigned char buf[320];

		srand(16);
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (unsigned char)rand();
		for (size_t off = 0; off < 8; off++)
			for (size_t len = 0; len + off <= sizeof(buf); len += 7)
				assert_int_equal(vcma_crc32c(0x1234u, buf + off, len),
						 vcma_crc32c_portable(0x1234u, buf + off, len));
	}
}

static void guest_equal(const struct vcma_store_guest *a, const struct vcma_store_guest *b)
{
	assert_int_equal(a->id, b->id);
	assert_string_equal(a->name, b->name);
	assert_string_equal(a->class_name, b->class_name);
	assert_int_equal(a->link, b->link);
	assert_int_equal(a->sim_uid, b->sim_uid);
	assert_memory_equal(a->sim_token, b->sim_token, VCMA_STORE_TOKEN_LEN);
	assert_int_equal(a->qemu_pid, b->qemu_pid);
	assert_int_equal(a->qemu_start_time, b->qemu_start_time);
	assert_int_equal(a->xen_domid, b->xen_domid);
}

static void test_round_trip(void **unused)
{
	char *dir = tmp_dir();
	struct vcma_store *s = open_ok(dir, 0, false);
	struct vcma_store_info info;
	struct vcma_store_pool p = { .id = 3, .name = "video", .base_mfn = 0x80000, .frames = 0x4000 };
	struct vcma_store_guest gs = { .id = 7, .name = "simvm-7", .class_name = "camera", .link = VCMA_STORE_LINK_SIM,
				       .sim_uid = 1000 };
	struct vcma_store_guest gq = { .id = 8, .name = "qemu-8", .link = VCMA_STORE_LINK_QEMU, .qemu_pid = 4242,
				       .qemu_start_time = 123456789012ull };
	struct vcma_store_guest gx = { .id = 9, .name = "domU", .link = VCMA_STORE_LINK_XEN, .xen_domid = 5 };
	struct vcma_store_region r = { .handle = 0x300000002ull, .guest = 7, .pool = 3, .first_mfn = 0x80100,
				       .frames = 512, .flags = 0x5 };
	struct vcma_store_p2m m = { .vm = 8, .first_gfn = 0x12345, .mfn = 0x81000, .count = 77 };
	struct vcma_store_lender l = { .guest = 8, .pool = 3, .frames = 77 };
	struct seen *seen;

	vcma_store_info(s, &info);
	assert_true(info.created);
	for (int i = 0; i < VCMA_STORE_TOKEN_LEN; i++)
		gs.sim_token[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(vcma_store_put_pool(s, &p), 0);
	assert_int_equal(vcma_store_put_guest(s, &gs), 0);
	assert_int_equal(vcma_store_put_guest(s, &gq), 0);
	assert_int_equal(vcma_store_put_guest(s, &gx), 0);
	assert_int_equal(vcma_store_put_region(s, &r), 0);
	assert_int_equal(vcma_store_put_p2m(s, &m), 0);
	assert_int_equal(vcma_store_put_lender(s, &l), 0);
	assert_true(vcma_store_in_turn(s));
	assert_int_equal(vcma_store_commit(s), 0);
	assert_false(vcma_store_in_turn(s));
	vcma_store_close(s);

	s = open_ok(dir, 0, false);
	vcma_store_info(s, &info);
	assert_false(info.created);
	assert_int_equal(info.dropped_txn, 0);
	seen = replay(s);
	assert_int_equal(seen->meta.format_version, VCMA_STORE_FORMAT);
	assert_int_equal(seen->meta.last_txn, info.last_txn);
	assert_true(seen->meta.created_ns > 0);
	assert_int_equal(seen->npool, 1);
	assert_int_equal(seen->pool[0].id, 3);
	assert_string_equal(seen->pool[0].name, "video");
	assert_int_equal(seen->pool[0].base_mfn, 0x80000);
	assert_int_equal(seen->pool[0].frames, 0x4000);
	assert_int_equal(seen->nguest, 3);
	guest_equal(&seen->guest[0], &gs);
	guest_equal(&seen->guest[1], &gq);
	guest_equal(&seen->guest[2], &gx);
	assert_int_equal(seen->nregion, 1);
	assert_int_equal(seen->region[0].handle, r.handle);
	assert_int_equal(seen->region[0].guest, r.guest);
	assert_int_equal(seen->region[0].pool, r.pool);
	assert_int_equal(seen->region[0].first_mfn, r.first_mfn);
	assert_int_equal(seen->region[0].frames, r.frames);
	assert_int_equal(seen->region[0].flags, r.flags);
	assert_int_equal(seen->np2m, 1);
	assert_int_equal(seen->p2m[0].vm, m.vm);
	assert_int_equal(seen->p2m[0].first_gfn, m.first_gfn);
	assert_int_equal(seen->p2m[0].mfn, m.mfn);
	assert_int_equal(seen->p2m[0].count, m.count);
	assert_int_equal(seen->nlender, 1);
	assert_int_equal(seen->lender[0].guest, l.guest);
	assert_int_equal(seen->lender[0].pool, l.pool);
	assert_int_equal(seen->lender[0].frames, l.frames);
	free(seen);

	/* a put replaces, a del removes; a missing record is -ENOENT and the turn goes on */
	l.frames = 5;
	assert_int_equal(vcma_store_put_lender(s, &l), 0);
	assert_int_equal(vcma_store_del_p2m(s, 8, 0x12345), 0);
	assert_int_equal(vcma_store_del_p2m(s, 8, 0x12345), -ENOENT);
	assert_int_equal(vcma_store_del_guest(s, 9), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	seen = replay(s);
	assert_int_equal(seen->np2m, 0);
	assert_int_equal(seen->nguest, 2);
	assert_int_equal(seen->lender[0].frames, 5);
	free(seen);
	vcma_store_close(s);
	rm_dir(dir);
	free(dir);
}

static void test_turn_all_or_nothing(void **unused)
{
	char *dir = tmp_dir();
	struct vcma_store *s = open_ok(dir, 0, false);
	struct vcma_store_region a = region(0x100000001ull, 1, 0x100000, 16), b = region(0x100000002ull, 1, 0x100010, 16),
				 c = region(0x100000003ull, 2, 0x100020, 16);
	struct vcma_store_info i1, i2;
	struct seen *seen;

	put_base(s);
	assert_int_equal(vcma_store_put_region(s, &a), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &i1);

	/* a turn aborted in the middle leaves nothing */
	assert_int_equal(vcma_store_put_region(s, &b), 0);
	assert_int_equal(vcma_store_del_region(s, a.handle), 0);
	assert_int_equal(vcma_store_put_region(s, &c), 0);
	vcma_store_abort(s);
	assert_false(vcma_store_in_turn(s));
	vcma_store_info(s, &i2);
	assert_int_equal(i2.last_txn, i1.last_txn);
	seen = replay(s);
	assert_int_equal(seen->nregion, 1);
	assert_int_equal(seen->region[0].handle, a.handle);
	free(seen);

	/* a commit without changes is no transaction */
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &i2);
	assert_int_equal(i2.last_txn, i1.last_txn);

	/* the next turn's records appear together, after a reopen too */
	assert_int_equal(vcma_store_put_region(s, &b), 0);
	assert_int_equal(vcma_store_put_region(s, &c), 0);
	assert_int_equal(vcma_store_del_region(s, a.handle), 0);
	/* no replay inside a turn: it would not see the turn */
	assert_int_equal(vcma_store_replay(s, &all_ops, NULL), -EBUSY);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &i2);
	assert_int_equal(i2.last_txn, i1.last_txn + 1);
	vcma_store_close(s);
	s = open_ok(dir, 0, false);
	seen = replay(s);
	assert_int_equal(seen->nregion, 2);
	assert_int_equal(seen->region[0].handle, b.handle);
	assert_int_equal(seen->region[1].handle, c.handle);
	assert_int_equal(seen->meta.last_txn, i2.last_txn);
	free(seen);

	/* a turn left open at close is aborted */
	assert_int_equal(vcma_store_del_region(s, b.handle), 0);
	vcma_store_close(s);
	s = open_ok(dir, 0, false);
	seen = replay(s);
	assert_int_equal(seen->nregion, 2);
	free(seen);
	vcma_store_close(s);
	rm_dir(dir);
	free(dir);
}

static void test_replay_order(void **unused)
{
	char *dir = tmp_dir();
	struct vcma_store *s = open_ok(dir, 0, false);
	struct vcma_store_lender l1 = { 2, 1, 3 }, l0 = { 2, 0, 3 }, l2 = { 1, 5, 3 };
	struct vcma_store_p2m m1 = { 2, 0x200, 0x500, 1 }, m2 = { 2, 0x1, 0x501, 1 }, m3 = { 1, 0x300, 0x502, 1 },
			      m4 = { 2, 0x10000000000ull, 0x503, 1 };
	struct vcma_store_region r1 = region(0x200000001ull, 1, 0x100000, 1), r2 = region(0x100000002ull, 1, 0x100001, 1),
				 r3 = region(0x1ull << 40, 1, 0x100002, 1), r4 = region(0x100ull, 1, 0x100003, 1);
	struct vcma_store_guest g3 = { .id = 300 }, g1 = { .id = 1 }, g2 = { .id = 0x10000 };
	struct vcma_store_pool p1 = { .id = 1, .frames = 1 }, p0 = { .id = 0, .frames = 1 };
	static const char *const want[] = {
		"meta", "pool 0", "pool 1", "guest 1", "guest 300", "guest 65536", "region 0x100",
		"region 0x100000002", "region 0x200000001", "region 0x10000000000", "p2m 1 0x300", "p2m 2 0x1",
		"p2m 2 0x200", "p2m 2 0x10000000000", "lender 1 5", "lender 2 0", "lender 2 1",
	};
	struct seen *seen;

	/* written in no order, over two turns */
	assert_int_equal(vcma_store_put_lender(s, &l1), 0);
	assert_int_equal(vcma_store_put_p2m(s, &m1), 0);
	assert_int_equal(vcma_store_put_region(s, &r1), 0);
	assert_int_equal(vcma_store_put_guest(s, &g3), 0);
	assert_int_equal(vcma_store_put_pool(s, &p1), 0);
	assert_int_equal(vcma_store_put_lender(s, &l0), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	assert_int_equal(vcma_store_put_p2m(s, &m4), 0);
	assert_int_equal(vcma_store_put_p2m(s, &m2), 0);
	assert_int_equal(vcma_store_put_region(s, &r3), 0);
	assert_int_equal(vcma_store_put_guest(s, &g2), 0);
	assert_int_equal(vcma_store_put_region(s, &r2), 0);
	assert_int_equal(vcma_store_put_guest(s, &g1), 0);
	assert_int_equal(vcma_store_put_p2m(s, &m3), 0);
	assert_int_equal(vcma_store_put_pool(s, &p0), 0);
	assert_int_equal(vcma_store_put_region(s, &r4), 0);
	assert_int_equal(vcma_store_put_lender(s, &l2), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	seen = replay(s);
	assert_int_equal(seen->n, sizeof(want) / sizeof(want[0]));
	for (unsigned int i = 0; i < seen->n; i++)
		assert_string_equal(seen->order[i], want[i]);
	free(seen);
	vcma_store_close(s);
	rm_dir(dir);
	free(dir);
}

/* A good store of three turns: base + region A (mfn 0xA11CE0...), then region B, then region C. */
#define MFN_A 0x1000a11ce0ull
#define MFN_C 0x1000c0ffe0ull
static char *three_turns(uint64_t *last_txn)
{
	char *dir = tmp_dir();
	struct vcma_store *s = open_ok(dir, 0, false);
	struct vcma_store_region a = region(0x100000001ull, 1, MFN_A, 1), b = region(0x100000002ull, 2, 0x100000, 8),
				 c = region(0x100000003ull, 2, MFN_C, 1);
	struct vcma_store_info info;

	put_base(s);
	assert_int_equal(vcma_store_put_region(s, &a), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	assert_int_equal(vcma_store_put_region(s, &b), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	assert_int_equal(vcma_store_put_region(s, &c), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &info);
	*last_txn = info.last_txn;
	vcma_store_close(s);
	return dir;
}

static void test_corrupt_old_record_refused(void **unused)
{
	uint64_t last;
	char *dir = three_turns(&last), *bad = copy_store(dir), err[2048];
	struct vcma_store *s;

	/* region A's bytes, in every page that holds them (each snapshot's copy) */
	assert_true(damage(bad, MFN_A) >= 1);
	nwarned = 0;
	assert_int_equal(open_err(bad, err, sizeof(err)), -EUCLEAN);
	assert_int_equal(nwarned, 0);
	assert_non_null(strstr(err, "record region 0x100000001: CRC mismatch"));
	assert_non_null(strstr(err, bad));
	assert_non_null(strstr(err, "/data.mdb"));
	assert_non_null(strstr(err, "damaged too"));
	/* read-only (vcmactl state verify) refuses the same way and leaves no copy behind */
	{
		struct vcma_store_options o = { .read_only = true, .warn = warn_cb };

		s = NULL;
		assert_int_equal(vcma_store_open(&s, bad, &o, err, sizeof(err)), -EUCLEAN);
		assert_non_null(strstr(err, "region 0x100000001"));
	}
	/* the original is untouched by all this */
	s = open_ok(dir, 0, false);
	vcma_store_close(s);
	rm_dir(bad);
	rm_dir(dir);
	free(bad);
	free(dir);
}

static void test_torn_newest_dropped(void **unused)
{
	uint64_t last;
	char *dir = three_turns(&last), *bad = copy_store(dir), *ro = copy_store(dir), p[4096], want[128];
	struct vcma_store_region d = region(0x100000004ull, 1, 0x100100, 4);
	struct vcma_store_info info;
	struct vcma_store *s;
	struct seen *seen;
	unsigned char *before, *after;
	size_t blen, alen;

	/* region C was written by the newest transaction only: one copy */
	assert_int_equal(damage(bad, MFN_C), 1);
	assert_int_equal(damage(ro, MFN_C), 1);

	/* read-only: the drop happens in a private copy; the directory is not changed */
	snprintf(p, sizeof(p), "%s/data.mdb", ro);
	before = read_file(p, &blen);
	nwarned = 0;
	s = open_ok(ro, 0, true);
	assert_int_equal(nwarned, 1);
	assert_non_null(strstr(warned, "read-only"));
	vcma_store_info(s, &info);
	assert_int_equal(info.dropped_txn, last);
	assert_int_equal(info.last_txn, last - 1);
	seen = replay(s);
	assert_int_equal(seen->nregion, 2);
	free(seen);
	assert_int_equal(vcma_store_put_region(s, &d), -EROFS);
	vcma_store_close(s);
	after = read_file(p, &alen);
	assert_int_equal(alen, blen);
	assert_memory_equal(after, before, blen);
	free(before);
	free(after);

	/* read-write: dropped with a warning naming the transaction and what it held */
	nwarned = 0;
	s = open_ok(bad, 0, false);
	assert_int_equal(nwarned, 1);
	snprintf(want, sizeof(want), "dropped transaction %llu, the newest, as torn", (unsigned long long)last);
	assert_non_null(strstr(warned, want));
	assert_non_null(strstr(warned, "record region 0x100000003: CRC mismatch"));
	assert_non_null(strstr(warned, "it changed: region 0x100000003 added"));
	assert_non_null(strstr(warned, bad));
	vcma_store_info(s, &info);
	assert_int_equal(info.dropped_txn, last);
	assert_int_equal(info.last_txn, last - 1);
	seen = replay(s);
	assert_int_equal(seen->nregion, 2);
	assert_int_equal(seen->region[0].handle, 0x100000001ull);
	assert_int_equal(seen->region[1].handle, 0x100000002ull);
	assert_int_equal(seen->meta.last_txn, last - 1);
	free(seen);
	snprintf(p, sizeof(p), "%s/data.mdb.torn-%llu", bad, (unsigned long long)last);
	assert_int_equal(access(p, R_OK), 0);

	/* the store goes on from there: the next transaction reuses the dropped id */
	assert_int_equal(vcma_store_put_region(s, &d), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &info);
	assert_int_equal(info.last_txn, last);
	vcma_store_close(s);
	nwarned = 0;
	s = open_ok(bad, 0, false);
	assert_int_equal(nwarned, 0);
	seen = replay(s);
	assert_int_equal(seen->nregion, 3);
	assert_int_equal(seen->region[2].handle, d.handle);
	free(seen);
	vcma_store_close(s);
	rm_dir(ro);
	rm_dir(bad);
	rm_dir(dir);
	free(ro);
	free(bad);
	free(dir);
}

/* A reader in another process (vcmactl state verify) holds the torn file's lock table
 * while vcmad drops the torn transaction: the next commit must still build on the
 * snapshot before it. */
static void test_torn_with_reader(void **unused)
{
	uint64_t last;
	char *dir = three_turns(&last), *bad = copy_store(dir), go;
	struct vcma_store_region d = region(0x100000004ull, 1, 0x100100, 4);
	struct vcma_store_info info;
	struct vcma_store *s;
	struct seen *seen;
	int up[2], down[2];
	pid_t pid;

	assert_int_equal(damage(bad, MFN_C), 1);
	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(down), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) { /* the reader: LMDB directly, as any reader of the file might */
		MDB_env *env;
		MDB_txn *txn;

		close(up[0]);
		close(down[1]); /* so a parent that fails and exits ends this reader too */
		if (mdb_env_create(&env) || mdb_env_open(env, bad, MDB_RDONLY, 0600) ||
		    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
			_exit(1);
		if (write(up[1], "r", 1) != 1 || read(down[0], &go, 1) != 1)
			_exit(1);
		mdb_txn_abort(txn);
		mdb_env_close(env);
		_exit(0);
	}
	close(up[1]);
	close(down[0]);
	assert_int_equal(read(up[0], &go, 1), 1);
	nwarned = 0;
	s = open_ok(bad, 0, false);
	assert_int_equal(nwarned, 1);
	vcma_store_info(s, &info);
	assert_int_equal(info.dropped_txn, last);
	assert_int_equal(vcma_store_put_region(s, &d), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &info);
	assert_int_equal(info.last_txn, last);
	seen = replay(s);
	assert_int_equal(seen->nregion, 3);
	assert_int_equal(seen->region[2].handle, d.handle);
	free(seen);
	vcma_store_close(s);
	assert_int_equal(write(down[1], "x", 1), 1);
	{
		int st;

		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	close(up[0]);
	close(down[1]);
	nwarned = 0;
	s = open_ok(bad, 0, false);
	assert_int_equal(nwarned, 0);
	seen = replay(s);
	assert_int_equal(seen->nregion, 3);
	assert_int_equal(seen->region[0].handle, 0x100000001ull);
	assert_int_equal(seen->region[1].handle, 0x100000002ull);
	assert_int_equal(seen->region[2].handle, d.handle);
	free(seen);
	vcma_store_close(s);
	rm_dir(bad);
	rm_dir(dir);
	free(bad);
	free(dir);
}

/* The likelier torn tail: the meta page reached the disk, a data page of the same
 * commit did not (reads as zeros). */
static void test_torn_page_of_zeros(void **unused)
{
	uint64_t last;
	char *dir = three_turns(&last), *bad = copy_store(dir), p[4096], want[64];
	unsigned char pat[8], *b;
	struct vcma_store *s;
	struct seen *seen;
	size_t len, off = 0, hits = 0;

	for (int i = 0; i < 8; i++)
		pat[i] = (unsigned char)(MFN_C >> (8 * i));
	snprintf(p, sizeof(p), "%s/data.mdb", bad);
	b = read_file(p, &len);
	for (size_t o = 0; o + 8 <= len; o++)
		if (!memcmp(b + o, pat, 8)) {
			off = o & ~(size_t)4095;
			hits++;
		}
	assert_int_equal(hits, 1);
	assert_true(off >= 2 * 4096); /* not a meta page */
	memset(b + off, 0, 4096);
	write_file(p, b, len);
	free(b);

	nwarned = 0;
	s = open_ok(bad, 0, false);
	assert_int_equal(nwarned, 1);
	snprintf(want, sizeof(want), "dropped transaction %llu", (unsigned long long)last);
	assert_non_null(strstr(warned, want));
	assert_non_null(strstr(warned, "LMDB cannot read it"));
	seen = replay(s);
	assert_int_equal(seen->nregion, 2);
	assert_int_equal(seen->meta.last_txn, last - 1);
	free(seen);
	vcma_store_close(s);
	rm_dir(bad);
	rm_dir(dir);
	free(bad);
	free(dir);
}

static void test_map_full(void **unused)
{
	char *dir = tmp_dir(), err[1024];
	struct vcma_store *s = open_ok(dir, 256 << 10, false); /* 64 pages */
	struct vcma_store_info i1, i2;
	struct seen *seen;
	int rc = 0;
	unsigned int i;

	put_base(s);
	for (i = 0; i < 10; i++) {
		struct vcma_store_region r = region(0x100000000ull + i, 1, 0x100000 + i, 1);

		assert_int_equal(vcma_store_put_region(s, &r), 0);
	}
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &i1);

	/* one turn far larger than the map: some put fails, and every later one of the turn */
	for (i = 10; i < 20000 && !rc; i++) {
		struct vcma_store_region r = region(0x100000000ull + i, 1, 0x100000 + i, 1);

		rc = vcma_store_put_region(s, &r);
	}
	assert_int_equal(rc, -ENOSPC);
	assert_true(i < 20000);
	assert_non_null(strstr(vcma_store_error(s), "map is full"));
	assert_non_null(strstr(vcma_store_error(s), "/data.mdb"));
	{
		struct vcma_store_region r = region(0x1ull << 40, 1, 0x10f000, 1);

		assert_int_equal(vcma_store_put_region(s, &r), -ENOSPC);
	}
	assert_true(vcma_store_in_turn(s));
	assert_int_equal(vcma_store_commit(s), -ENOSPC);
	assert_false(vcma_store_in_turn(s));
	vcma_store_info(s, &i2);
	assert_int_equal(i2.last_txn, i1.last_txn);
	seen = replay(s);
	assert_int_equal(seen->nregion, 10);
	free(seen);

	/* the store stays usable for a turn that fits */
	assert_int_equal(vcma_store_del_region(s, 0x100000000ull), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_close(s);
	s = open_ok(dir, 256 << 10, false);
	seen = replay(s);
	assert_int_equal(seen->nregion, 9);
	free(seen);
	vcma_store_close(s);
	(void)err;
	rm_dir(dir);
	free(dir);
}

/* The sync after a commit fails: the turn is in LMDB but maybe not on disk. The store
 * says so and refuses every change until it is opened again. */
static void test_sync_failure_poisons(void **unused)
{
	static const int errs[] = { EIO, ENOSPC };

	for (int e = 0; e < 2; e++) {
		char *dir = tmp_dir();
		struct vcma_store *s = open_ok(dir, 0, false);
		struct vcma_store_region a = region(0x100000001ull, 1, 0x100000, 16), b = region(0x100000002ull, 1, 0x100010, 1);
		struct vcma_store_info i1;
		struct seen *seen;

		put_base(s);
		assert_int_equal(vcma_store_commit(s), 0);
		vcma_store_info(s, &i1);
		assert_int_equal(vcma_store_put_region(s, &a), 0);
		fail_sync = errs[e];
		assert_int_equal(vcma_store_commit(s), -errs[e]);
		fail_sync = 0;
		assert_non_null(strstr(vcma_store_error(s), "sync of transaction"));
		assert_non_null(strstr(vcma_store_error(s), "unknown"));
		/* no change is taken any more, the sync works again or not */
		assert_int_equal(vcma_store_put_region(s, &b), -EIO);
		assert_non_null(strstr(vcma_store_error(s), "close and open the store again"));
		assert_int_equal(vcma_store_del_region(s, a.handle), -EIO);
		assert_int_equal(vcma_store_commit(s), -EIO);
		assert_false(vcma_store_in_turn(s));
		vcma_store_close(s);
		/* opened again, the store says what it holds: here the page cache kept the turn */
		s = open_ok(dir, 0, false);
		seen = replay(s);
		assert_int_equal(seen->nregion, 1);
		assert_int_equal(seen->region[0].handle, a.handle);
		assert_int_equal(seen->meta.last_txn, i1.last_txn + 1);
		free(seen);
		assert_int_equal(vcma_store_put_region(s, &b), 0);
		assert_int_equal(vcma_store_commit(s), 0);
		vcma_store_close(s);
		rm_dir(dir);
		free(dir);
	}
}

/* A store written by a newer format is refused, not misread. */
static void test_newer_format_refused(void **unused)
{
	char *dir = tmp_dir(), err[1024];
	struct vcma_store *s = open_ok(dir, 0, false);
	struct vcma_store_info info;
	struct vcma_rec_meta m;
	uint8_t key = VCMA_REC_META;
	MDB_val k = { 1, &key }, v = { sizeof(m), &m };
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	put_base(s);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_info(s, &info);
	vcma_store_close(s);

	memset(&m, 0, sizeof(m));
	m.h.type = VCMA_REC_META;
	m.h.len = sizeof(m); /* little-endian hosts only, as the test runs */
	m.h.txn = info.last_txn + 1;
	m.format_version = VCMA_STORE_FORMAT + 1;
	m.last_txn = info.last_txn + 1;
	m.h.crc = vcma_crc32c(vcma_crc32c(0, &key, 1), (uint8_t *)&m + 4, sizeof(m) - 4);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	nwarned = 0;
	assert_int_equal(open_err(dir, err, sizeof(err)), -EPROTO);
	assert_int_equal(nwarned, 0);
	assert_non_null(strstr(err, "record meta: format 2, this vcmad knows format 1"));
	assert_non_null(strstr(err, "/data.mdb"));
	rm_dir(dir);
	free(dir);
}

/* ---- verify ---- */

static char viols[8][512];
static int nviols;

static void viol_cb(void *ctx, const char *msg)
{
	if (nviols < 8)
		snprintf(viols[nviols], sizeof(viols[0]), "%s", msg);
	nviols++;
}

/* base + the given records in one turn; returns verify's result */
static int verify_with(const struct vcma_store_region *r, int nr, const struct vcma_store_p2m *m, int nm,
		       struct vcma_store_counts *counts)
{
	char *dir = tmp_dir();
	struct vcma_store *s = open_ok(dir, 0, false);
	int rc;

	put_base(s);
	for (int i = 0; i < nr; i++)
		assert_int_equal(vcma_store_put_region(s, &r[i]), 0);
	for (int i = 0; i < nm; i++)
		assert_int_equal(vcma_store_put_p2m(s, &m[i]), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	vcma_store_close(s);
	s = open_ok(dir, 0, true);
	nviols = 0;
	rc = vcma_store_verify(s, counts, viol_cb, NULL);
	assert_int_equal(rc, nviols);
	vcma_store_close(s);
	rm_dir(dir);
	free(dir);
	return rc;
}

static void test_verify_good(void **unused)
{
	struct vcma_store_region r[] = { region(0x100000001ull, 1, 0x100000, 16), region(0x100000002ull, 2, 0x100010, 16) };
	struct vcma_store_p2m m[] = { { 1, 0x0, 0x100020, 8 }, { 1, 0x8, 0x200000, 8 }, { 2, 0x0, 0x100028, 8 } };
	struct vcma_store_counts c;

	assert_int_equal(verify_with(r, 2, m, 3, &c), 0);
	assert_int_equal(c.meta, 1);
	assert_int_equal(c.pools, 1);
	assert_int_equal(c.guests, 2);
	assert_int_equal(c.regions, 2);
	assert_int_equal(c.p2m, 3);
	assert_int_equal(c.lenders, 0);
}

static void test_verify_frame_owned_twice(void **unused)
{
	struct vcma_store_region r[] = { region(0x100000001ull, 1, 0x100000, 16) };
	struct vcma_store_p2m m[] = { { 2, 0x40, 0x10000f, 4 } }; /* its first frame is the region's last */

	assert_int_equal(verify_with(r, 1, m, 1, NULL), 1);
	assert_non_null(strstr(viols[0], "mfn 0x10000f-0x10000f owned twice"));
	assert_non_null(strstr(viols[0], "region 0x100000001"));
	assert_non_null(strstr(viols[0], "vm 2 at gfn 0x40"));

	/* two regions */
	struct vcma_store_region r2[] = { region(0x100000001ull, 1, 0x100000, 16), region(0x100000002ull, 2, 0x100008, 1) };
	assert_int_equal(verify_with(r2, 2, NULL, 0, NULL), 1);
	assert_non_null(strstr(viols[0], "owned twice"));
}

static void test_verify_region_outside_pool(void **unused)
{
	struct vcma_store_region r[] = { region(0x100000001ull, 1, 0x10fff0, 32) }; /* pool ends at 0x10ffff */
	struct vcma_store_region r2[] = { { .handle = 0x100000002ull, .guest = 1, .pool = 9, .first_mfn = 0x100000,
					    .frames = 1 } };
	struct vcma_store_region r3[] = { region(0x100000003ull, 5, 0x100000, 1) };

	assert_int_equal(verify_with(r, 1, NULL, 0, NULL), 1);
	assert_non_null(strstr(viols[0], "region 0x100000001: mfn 0x10fff0-0x11000f is outside its pool 0"));
	assert_int_equal(verify_with(r2, 1, NULL, 0, NULL), 1);
	assert_non_null(strstr(viols[0], "pool 9 is not a known pool"));
	assert_int_equal(verify_with(r3, 1, NULL, 0, NULL), 1);
	assert_non_null(strstr(viols[0], "owner guest 5 is not a known guest"));
}

static void test_verify_gfn_backed_twice(void **unused)
{
	struct vcma_store_p2m m[] = { { 1, 0x10, 0x100000, 16 }, { 1, 0x18, 0x200000, 4 } };
	struct vcma_store_p2m ok[] = { { 1, 0x10, 0x100000, 16 }, { 2, 0x18, 0x200000, 4 } }; /* other vm: fine */
	struct vcma_store_p2m unk[] = { { 3, 0x0, 0x100000, 1 } };

	assert_int_equal(verify_with(NULL, 0, m, 2, NULL), 1);
	assert_non_null(strstr(viols[0], "vm 1: gfn 0x18 is backed twice"));
	assert_int_equal(verify_with(NULL, 0, ok, 2, NULL), 0);
	assert_int_equal(verify_with(NULL, 0, unk, 1, NULL), 1);
	assert_non_null(strstr(viols[0], "vm 3 is not a known guest"));
}

static void test_verify_lenders_and_pools(void **unused)
{
	char *dir = tmp_dir();
	struct vcma_store *s = open_ok(dir, 0, false);
	struct vcma_store_lender ok = { 1, 0, 0x100 }, nopool = { 2, 7, 1 }, toomuch = { 2, 0, 0x10001 };
	struct vcma_store_pool overlap = { .id = 1, .name = "other", .base_mfn = 0x10ff00, .frames = 0x1000 };
	struct vcma_store_counts c;

	put_base(s);
	assert_int_equal(vcma_store_put_lender(s, &ok), 0);
	assert_int_equal(vcma_store_put_lender(s, &nopool), 0);
	assert_int_equal(vcma_store_put_lender(s, &toomuch), 0);
	assert_int_equal(vcma_store_put_pool(s, &overlap), 0);
	assert_int_equal(vcma_store_commit(s), 0);
	nviols = 0;
	assert_int_equal(vcma_store_verify(s, &c, viol_cb, NULL), 3);
	assert_int_equal(c.lenders, 3);
	assert_int_equal(c.pools, 2);
	assert_non_null(strstr(viols[0], "pools 0 (camera) and 1 (other) overlap"));
	assert_non_null(strstr(viols[1], "lender guest 2 pool 0: 65537 frames lent, the pool has 65536"));
	assert_non_null(strstr(viols[2], "lender guest 2 pool 7: pool 7 is not a known pool"));
	vcma_store_close(s);
	rm_dir(dir);
	free(dir);
}

/* ---- full disk: a small tmpfs (root only) ---- */

static int full_disk(void)
{
	char *mnt = tmp_dir(), dir[4200];
	struct vcma_store_options o = { .warn = warn_cb };
	struct vcma_store *s = NULL;
	char err[1024];
	unsigned int committed = 0, i, turn;
	int rc = 0;
	struct seen *seen;

	if (mount("vcma-test", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k")) {
		printf("# SKIP full-disk: cannot mount a tmpfs on %s: %s (needs root)\n", mnt, strerror(errno));
		rmdir(mnt);
		free(mnt);
		return 77;
	}
	snprintf(dir, sizeof(dir), "%s/state", mnt);
	if (vcma_store_open(&s, dir, &o, err, sizeof(err))) {
		printf("not ok - open on the tmpfs: %s\n", err);
		rc = 1;
		goto out;
	}
	put_base(s);
	for (turn = 0; turn < 10000 && !rc; turn++) {
		for (i = 0; i < 50 && !rc; i++) {
			struct vcma_store_region r = region(0x100000000ull + turn * 50 + i, 1, 0x100000 + turn * 50 + i, 1);

			rc = vcma_store_put_region(s, &r);
		}
		if (!rc)
			rc = vcma_store_commit(s);
		else
			assert_int_equal(vcma_store_commit(s), rc);
		if (!rc)
			committed = (turn + 1) * 50;
	}
	printf("# tmpfs full after %u committed regions: %s\n", committed, vcma_store_error(s));
	if (rc != -ENOSPC || !committed || !strstr(vcma_store_error(s), "/data.mdb") ||
	    !strstr(vcma_store_error(s), "intact")) {
		printf("not ok - commit on a full tmpfs returned %d, not -ENOSPC with a message\n", rc);
		rc = 1;
		vcma_store_close(s);
		goto out;
	}
	seen = replay(s);
	rc = seen->nregion == committed ? 0 : 1;
	printf("%s - every committed region is still there after the full disk (%u of %u)\n", rc ? "not ok" : "ok",
	       seen->nregion, committed);
	free(seen);
	vcma_store_close(s);
	if (!rc) { /* and after a reopen */
		s = open_ok(dir, 0, false);
		seen = replay(s);
		rc = seen->nregion == committed ? 0 : 1;
		printf("%s - reopened: %u regions\n", rc ? "not ok" : "ok", seen->nregion);
		free(seen);
		vcma_store_close(s);
	}
out:
	rm_dir(dir);
	if (umount2(mnt, MNT_DETACH))
		printf("# umount %s: %s\n", mnt, strerror(errno));
	rmdir(mnt);
	free(mnt);
	return rc;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_turn_all_or_nothing),
		cmocka_unit_test(test_replay_order),
		cmocka_unit_test(test_corrupt_old_record_refused),
		cmocka_unit_test(test_torn_newest_dropped),
		cmocka_unit_test(test_torn_page_of_zeros),
		cmocka_unit_test(test_torn_with_reader),
		cmocka_unit_test(test_map_full),
		cmocka_unit_test(test_sync_failure_poisons),
		cmocka_unit_test(test_newer_format_refused),
		cmocka_unit_test(test_verify_good),
		cmocka_unit_test(test_verify_frame_owned_twice),
		cmocka_unit_test(test_verify_region_outside_pool),
		cmocka_unit_test(test_verify_gfn_backed_twice),
		cmocka_unit_test(test_verify_lenders_and_pools),
	};

	if (argc > 1 && !strcmp(argv[1], "full-disk"))
		return full_disk();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
