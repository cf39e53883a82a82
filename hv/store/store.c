// SPDX-License-Identifier: MIT
/*
 * store.c - the durable store on LMDB: record encoding, turns (group commit),
 * validation at open, dropping a torn newest transaction, replay.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "store.h"
#include "store_format.h"

#define STORE_FILE "data.mdb"
#define STORE_BAD_NAMES 4 /* damaged records named in a message; the rest are counted */

/* LMDB 0.9.24's meta pages (pages 0 and 1 of data.mdb; lmdb's MDB_page + MDB_meta on
 * LP64): the only bytes of LMDB's format this file reads or writes, to open the
 * snapshot before the newest (0.9.24 has no MDB_PREVSNAPSHOT). */
#define LMDB_META_MAGIC_OFF 16   /* page header (16) + mm_magic */
#define LMDB_META_VERSION_OFF 20 /* mm_version */
#define LMDB_META_PSIZE_OFF 40   /* mm_dbs[FREE_DBI].md_pad: the page size */
#define LMDB_META_TXNID_OFF 144  /* mm_txnid */
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u

struct vcma_store {
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *txn;      /* this turn's write transaction; NULL between turns */
	uint64_t txn_id;   /* its id: 0.9.24 has no mdb_txn_id(), so last committed + 1 */
	int turn_err;      /* a failure inside this turn, returned until commit/abort */
	bool poisoned;     /* a sync failed: the disk's state is unknown until reopened */
	uint64_t created_ns;
	uint64_t handle_floor; /* written in every commit's meta record */
	struct vcma_store_options opt;
	struct vcma_store_info info;
	char dir[PATH_MAX];
	char path[PATH_MAX + 16]; /* DIR/data.mdb */
	char err[1024];
};

/* ---- helpers ---- */

static int turn_begin(struct vcma_store *s);

static void be32_put(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void be64_put(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static uint32_t be32_get(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint64_t be64_get(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

/* snprintf for messages: a path longer than the buffer is cut, never overrun */
static void msgf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
}

static int store_fail(struct vcma_store *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int store_fail(struct vcma_store *s, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return rc;
}

/* LMDB's codes as -errno. */
static int lmdb_errno(int rc)
{
	switch (rc) {
	case 0: return 0;
	case MDB_MAP_FULL: return -ENOSPC;
	case MDB_NOTFOUND: return -ENOENT;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID: return -EUCLEAN;
	case MDB_VERSION_MISMATCH: return -EPROTO;
	case MDB_READERS_FULL: return -EBUSY;
	case MDB_TXN_FULL: return -E2BIG;
	case MDB_MAP_RESIZED: return -EAGAIN;
	case MDB_PANIC:
	case MDB_BAD_TXN: return -EIO;
	default: return rc > 0 ? -rc : -EIO;
	}
}

static size_t key_len_of(uint8_t type)
{
	switch (type) {
	case VCMA_REC_META: return 1;
	case VCMA_REC_POOL:
	case VCMA_REC_GUEST: return 5;
	case VCMA_REC_REGION:
	case VCMA_REC_LENDER: return 9;
	case VCMA_REC_P2M: return 13;
	default: return 0;
	}
}

static size_t val_len_of(uint8_t type)
{
	switch (type) {
	case VCMA_REC_META: return sizeof(struct vcma_rec_meta);
	case VCMA_REC_POOL: return sizeof(struct vcma_rec_pool);
	case VCMA_REC_GUEST: return sizeof(struct vcma_rec_guest);
	case VCMA_REC_REGION: return sizeof(struct vcma_rec_region);
	case VCMA_REC_P2M: return sizeof(struct vcma_rec_p2m);
	case VCMA_REC_LENDER: return sizeof(struct vcma_rec_lender);
	default: return 0;
	}
}

/* "region 0x100000002", "p2m vm 3 gfn 0x1000": a record named by its key. */
static const char *key_name(const uint8_t *k, size_t len, char *buf, size_t n)
{
	uint8_t t = len ? k[0] : 0;

	if (!len || key_len_of(t) != len) {
		int o = snprintf(buf, n, "unknown record (key");
		for (size_t i = 0; i < len && i < 16 && o > 0 && (size_t)o < n; i++)
			o += snprintf(buf + o, n - (size_t)o, " %02x", k[i]);
		if (o > 0 && (size_t)o < n)
			snprintf(buf + o, n - (size_t)o, ")");
		return buf;
	}
	switch (t) {
	case VCMA_REC_META: snprintf(buf, n, "meta"); break;
	case VCMA_REC_POOL: snprintf(buf, n, "pool %u", be32_get(k + 1)); break;
	case VCMA_REC_GUEST: snprintf(buf, n, "guest %u", be32_get(k + 1)); break;
	case VCMA_REC_REGION: snprintf(buf, n, "region 0x%llx", (unsigned long long)be64_get(k + 1)); break;
	case VCMA_REC_P2M:
		snprintf(buf, n, "p2m vm %u gfn 0x%llx", be32_get(k + 1), (unsigned long long)be64_get(k + 5));
		break;
	case VCMA_REC_LENDER: snprintf(buf, n, "lender guest %u pool %u", be32_get(k + 1), be32_get(k + 5)); break;
	}
	return buf;
}

static uint32_t rec_crc(const uint8_t *key, size_t klen, const void *val, size_t vlen)
{
	return vcma_crc32c(vcma_crc32c(0, key, klen), (const uint8_t *)val + 4, vlen - 4);
}

/* A record as read: key bytes and an aligned copy of the value. */
union rec {
	struct vcma_rec_hdr h;
	struct vcma_rec_meta meta;
	struct vcma_rec_pool pool;
	struct vcma_rec_guest guest;
	struct vcma_rec_region region;
	struct vcma_rec_p2m p2m;
	struct vcma_rec_lender lender;
};

/*
 * Checks one record: its key's shape, its value's size, type and CRC, that it was
 * written by a transaction that exists, and that the ids in the value are the key's.
 * 0 and *r filled, or -EUCLEAN with why.
 */
static int rec_decode(const MDB_val *k, const MDB_val *v, uint64_t last_txn, union rec *r, char *why, size_t n)
{
	const uint8_t *key = k->mv_data;
	uint8_t t = k->mv_size ? key[0] : 0;
	size_t vlen = val_len_of(t);
	uint32_t crc;
	bool ids_ok = true;

	if (!k->mv_size || key_len_of(t) != k->mv_size)
		return snprintf(why, n, "unknown key type or length (%zu bytes)", k->mv_size), -EUCLEAN;
	if (v->mv_size != vlen)
		return snprintf(why, n, "value is %zu bytes, expected %zu", v->mv_size, vlen), -EUCLEAN;
	memcpy(r, v->mv_data, vlen); /* LMDB aligns values to 2 bytes only */
	crc = rec_crc(key, k->mv_size, r, vlen);
	if (le32toh(r->h.crc) != crc)
		return snprintf(why, n, "CRC mismatch (stored 0x%08x, computed 0x%08x)", le32toh(r->h.crc), crc), -EUCLEAN;
	if (r->h.type != t || le16toh(r->h.len) != vlen)
		return snprintf(why, n, "header says type %u, %u bytes", r->h.type, le16toh(r->h.len)), -EUCLEAN;
	if (!le64toh(r->h.txn) || le64toh(r->h.txn) > last_txn)
		return snprintf(why, n, "written by transaction %llu, the file's newest is %llu",
				(unsigned long long)le64toh(r->h.txn), (unsigned long long)last_txn), -EUCLEAN;
	switch (t) {
	case VCMA_REC_POOL: ids_ok = le32toh(r->pool.id) == be32_get(key + 1); break;
	case VCMA_REC_GUEST: ids_ok = le32toh(r->guest.id) == be32_get(key + 1); break;
	case VCMA_REC_REGION: ids_ok = le64toh(r->region.handle) == be64_get(key + 1); break;
	case VCMA_REC_P2M:
		ids_ok = le32toh(r->p2m.vm) == be32_get(key + 1) && le64toh(r->p2m.first_gfn) == be64_get(key + 5);
		break;
	case VCMA_REC_LENDER:
		ids_ok = le32toh(r->lender.guest) == be32_get(key + 1) && le32toh(r->lender.pool) == be32_get(key + 5);
		break;
	}
	if (!ids_ok)
		return snprintf(why, n, "the value's ids differ from the key's"), -EUCLEAN;
	return 0;
}

/* ---- walking a snapshot ---- */

typedef int (*walk_fn)(void *ctx, const MDB_val *k, const MDB_val *v);

#define WALK_FREE_DB 1 /* walk LMDB's own free-page list (dbi 0, as mdb_stat -f does) */

/* Every record of env's newest snapshot in key order; fn's nonzero return stops.
 * An LMDB error is returned as -errno with *lmdb_rc set. */
static int walk_db(MDB_env *env, int which, walk_fn fn, void *ctx, int *lmdb_rc)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_dbi dbi;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	*lmdb_rc = 0;
	rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc)
		goto out;
	dbi = 0;
	rc = which == WALK_FREE_DB ? 0 : mdb_dbi_open(txn, NULL, 0, &dbi);
	if (rc)
		goto out_txn;
	rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		goto out_txn;
	while (!(rc = mdb_cursor_get(cur, &k, &v, op))) {
		int r = fn(ctx, &k, &v);

		op = MDB_NEXT;
		if (r) {
			mdb_cursor_close(cur);
			mdb_txn_abort(txn);
			return r;
		}
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
out_txn:
	mdb_txn_abort(txn);
out:
	*lmdb_rc = rc;
	return lmdb_errno(rc);
}

static int walk(MDB_env *env, walk_fn fn, void *ctx, int *lmdb_rc)
{
	return walk_db(env, 0, fn, ctx, lmdb_rc);
}

static uint64_t env_last_txn(MDB_env *env)
{
	MDB_envinfo ei;

	if (mdb_env_info(env, &ei))
		return 0;
	return ei.me_last_txnid;
}

/* What validating one snapshot found. */
struct check {
	uint64_t last_txn;     /* LMDB's newest transaction in this file */
	uint64_t records;
	uint64_t nbad;
	bool meta_found;
	uint32_t format;
	uint64_t meta_last_txn, created_ns, handle_floor;
	uint8_t last_good[VCMA_REC_KEY_MAX]; /* key of the last record that checked out */
	size_t last_good_len;
	char bad[768];         /* the first damaged records, named, with why */
};

static void check_bad(struct check *c, const char *name, const char *why)
{
	size_t o = strlen(c->bad);

	if (c->nbad++ < STORE_BAD_NAMES && o < sizeof(c->bad))
		snprintf(c->bad + o, sizeof(c->bad) - o, "%s%s: %s", o ? "; " : "", name, why);
}

static int check_one(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct check *c = ctx;
	union rec r;
	char why[160], name[96];

	c->records++;
	if (rec_decode(k, v, c->last_txn, &r, why, sizeof(why))) {
		char what[112];

		snprintf(what, sizeof(what), "record %s", key_name(k->mv_data, k->mv_size, name, sizeof(name)));
		check_bad(c, what, why);
		return 0;
	}
	/* named only if a later page is unreadable: no formatting per record */
	c->last_good_len = k->mv_size;
	memcpy(c->last_good, k->mv_data, k->mv_size); /* a decoded key is at most KEY_MAX */
	if (r.h.type == VCMA_REC_META) {
		c->meta_found = true;
		c->format = le32toh(r.meta.format_version);
		c->meta_last_txn = le64toh(r.meta.last_txn);
		c->created_ns = le64toh(r.meta.created_ns);
		c->handle_floor = le64toh(r.meta.handle_gen_floor);
	}
	return 0;
}

/* Validates env's newest snapshot into *c: 0 (c->nbad tells), or -errno from LMDB
 * (counted as damage too: a page it cannot read). */
/* LMDB's free-page list: a transaction's torn pages may be there as well as in the
 * records, and the next write transaction would trust it. Each entry: key a
 * transaction id, value a page list (count, then page numbers). */
struct free_check {
	uint64_t last_txn, last_pgno;
	char why[160];
};

static int free_one(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct free_check *f = ctx;
	uint64_t txn = 0, count, pg;

	if (k->mv_size == sizeof(size_t))
		memcpy(&txn, k->mv_data, sizeof(size_t));
	if (!txn || txn > f->last_txn)
		return snprintf(f->why, sizeof(f->why), "an entry of transaction %llu (key %zu bytes)",
				(unsigned long long)txn, k->mv_size), 1;
	if (v->mv_size < sizeof(size_t) || v->mv_size % sizeof(size_t))
		return snprintf(f->why, sizeof(f->why), "transaction %llu's entry is %zu bytes", (unsigned long long)txn,
				v->mv_size), 1;
	count = 0;
	memcpy(&count, v->mv_data, sizeof(size_t));
	if ((count + 1) * sizeof(size_t) > v->mv_size)
		return snprintf(f->why, sizeof(f->why), "transaction %llu's entry counts %llu pages in %zu bytes",
				(unsigned long long)txn, (unsigned long long)count, v->mv_size), 1;
	for (uint64_t i = 1; i <= count; i++) {
		pg = 0;
		memcpy(&pg, (const char *)v->mv_data + i * sizeof(size_t), sizeof(size_t));
		if (pg < 2 || pg > f->last_pgno)
			return snprintf(f->why, sizeof(f->why), "transaction %llu's entry names page %llu (the file has %llu)",
					(unsigned long long)txn, (unsigned long long)pg,
					(unsigned long long)f->last_pgno + 1), 1;
	}
	return 0;
}

/* Validates env's newest snapshot into *c (c->nbad tells): every record, the meta
 * record's claim to be the last commit, and LMDB's free-page list. A page LMDB cannot
 * read counts as damage. */
static void check_snapshot(MDB_env *env, struct check *c)
{
	struct free_check f = { 0 };
	MDB_envinfo ei;
	char why[200], where[128];
	int rc, lrc;

	memset(c, 0, sizeof(*c));
	c->last_txn = env_last_txn(env);
	rc = walk(env, check_one, c, &lrc);
	if (rc) {
		snprintf(why, sizeof(why), "LMDB cannot read it: %s", mdb_strerror(lrc));
		char name[96];

		if (c->last_good_len)
			snprintf(where, sizeof(where), "the records after %s",
				 key_name(c->last_good, c->last_good_len, name, sizeof(name)));
		else
			snprintf(where, sizeof(where), "the records from the first");
		check_bad(c, where, why);
		return;
	}
	if (c->records && !c->meta_found) {
		check_bad(c, "record meta", "missing");
	} else if (c->meta_found && c->meta_last_txn != c->last_txn && !c->nbad) {
		snprintf(why, sizeof(why), "says transaction %llu committed last, the file's newest is %llu",
			 (unsigned long long)c->meta_last_txn, (unsigned long long)c->last_txn);
		check_bad(c, "record meta", why);
	}
	if (mdb_env_info(env, &ei))
		return;
	f.last_txn = c->last_txn;
	f.last_pgno = ei.me_last_pgno;
	rc = walk_db(env, WALK_FREE_DB, free_one, &f, &lrc);
	if (rc < 0) {
		snprintf(why, sizeof(why), "LMDB cannot read it: %s", mdb_strerror(lrc));
		check_bad(c, "LMDB's free-page list", why);
	} else if (rc) {
		check_bad(c, "LMDB's free-page list", f.why);
	}
}

/* ---- opening ---- */

static int env_open(MDB_env **out, const char *path, unsigned int flags, uint64_t map_size)
{
	MDB_env *env;
	int rc;

	rc = mdb_env_create(&env);
	if (rc)
		return lmdb_errno(rc);
	rc = mdb_env_set_mapsize(env, map_size);
	if (!rc)
		rc = mdb_env_set_maxreaders(env, 16);
	if (!rc)
		rc = mdb_env_open(env, path, flags, 0600);
	if (rc) {
		mdb_env_close(env);
		return rc == EACCES || rc == EROFS ? -rc : lmdb_errno(rc);
	}
	*out = env;
	return 0;
}

static int copy_file(int in, int out)
{
	static char buf[1 << 20];
	ssize_t n;

	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (ssize_t o = 0; o < n;) {
			ssize_t w = write(out, buf + o, (size_t)(n - o));

			if (w < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			o += w;
		}
	}
	return 0;
}

/*
 * Copies src to dst with transaction `newest` taken out: of LMDB's two meta pages, the
 * one naming `newest` gets transaction id 0, so LMDB opens the other, `newest - 1`.
 * Its pages are intact: LMDB reuses a page only once no snapshot newer than the one
 * that freed it is older than the last committed, so transaction N never overwrote a
 * page of N - 1.
 */
static int copy_prev(const char *src, const char *dst, uint64_t newest, char *why, size_t n)
{
	unsigned char m[2][LMDB_META_TXNID_OFF + 8];
	uint32_t magic, version, psize;
	uint64_t txn[2], zero = 0;
	int in, out, rc = 0, slot = -1;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		rc = -errno;
		msgf(why, n, "%s: %s", src, strerror(-rc));
		return rc;
	}
	out = open(dst, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		rc = -errno;
		msgf(why, n, "%s: %s", dst, strerror(errno));
		goto out_in;
	}
	rc = copy_file(in, out);
	if (rc) {
		msgf(why, n, "copying %s to %s: %s", src, dst, strerror(-rc));
		goto out_out;
	}
	if (pread(out, m[0], sizeof(m[0]), 0) != (ssize_t)sizeof(m[0]))
		goto bad_meta;
	memcpy(&psize, m[0] + LMDB_META_PSIZE_OFF, 4);
	if (psize < 512 || psize > (1u << 16) || (psize & (psize - 1)) ||
	    pread(out, m[1], sizeof(m[1]), psize) != (ssize_t)sizeof(m[1]))
		goto bad_meta;
	for (int i = 0; i < 2; i++) {
		memcpy(&magic, m[i] + LMDB_META_MAGIC_OFF, 4);
		memcpy(&version, m[i] + LMDB_META_VERSION_OFF, 4);
		memcpy(&txn[i], m[i] + LMDB_META_TXNID_OFF, 8);
		if (magic != LMDB_MAGIC || version != LMDB_DATA_VERSION)
			goto bad_meta;
		if (txn[i] == newest)
			slot = i;
	}
	if (slot < 0 || txn[!slot] + 1 != newest) {
		rc = -ENOENT;
		msgf(why, n, "its meta pages hold transactions %llu and %llu: no snapshot before %llu",
			 (unsigned long long)txn[0], (unsigned long long)txn[1], (unsigned long long)newest);
		goto out_out;
	}
	if (pwrite(out, &zero, 8, (off_t)slot * psize + LMDB_META_TXNID_OFF) != 8 || fsync(out)) {
		rc = -errno;
		msgf(why, n, "%s: %s", dst, strerror(errno));
		goto out_out;
	}
	goto out_out;
bad_meta:
	rc = -EUCLEAN;
	msgf(why, n, "its meta pages are not LMDB 0.9 meta pages");
out_out:
	if (close(out) && !rc) {
		rc = -errno;
		msgf(why, n, "%s: %s", dst, strerror(errno));
	}
	if (rc)
		unlink(dst);
out_in:
	close(in);
	return rc;
}

/* What the dropped transaction changed: records added, changed and removed between
 * the previous snapshot (prev) and the torn one (torn), by key. */
struct diff_side {
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;
};

static int diff_open(MDB_env *env, struct diff_side *d)
{
	MDB_dbi dbi;
	int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &d->txn);

	if (rc)
		return rc;
	rc = mdb_dbi_open(d->txn, NULL, 0, &dbi);
	if (!rc)
		rc = mdb_cursor_open(d->txn, dbi, &d->cur);
	if (rc) {
		mdb_txn_abort(d->txn);
		return rc;
	}
	d->rc = mdb_cursor_get(d->cur, &d->k, &d->v, MDB_FIRST);
	return 0;
}

static void diff_close(struct diff_side *d)
{
	mdb_cursor_close(d->cur);
	mdb_txn_abort(d->txn);
}

static void describe_drop(MDB_env *torn, MDB_env *prev, char *out, size_t n)
{
	struct diff_side a, b; /* a: prev, b: torn */
	unsigned long changes = 0, shown = 0;
	size_t o = 0;
	char name[96];

	out[0] = 0;
	if (diff_open(prev, &a))
		return;
	if (diff_open(torn, &b)) {
		diff_close(&a);
		return;
	}
	while ((!a.rc || !b.rc) && (!b.rc || b.rc == MDB_NOTFOUND)) {
		const char *what = NULL;
		const MDB_val *k;
		int cmp;

		if (a.rc)
			cmp = 1;
		else if (b.rc)
			cmp = -1;
		else
			cmp = mdb_cmp(a.txn, 1, &a.k, &b.k); /* dbi 1: LMDB's main database */
		k = cmp <= 0 ? &a.k : &b.k;
		if (cmp < 0)
			what = "removed";
		else if (cmp > 0)
			what = "added";
		else if (a.v.mv_size != b.v.mv_size || memcmp(a.v.mv_data, b.v.mv_data, a.v.mv_size))
			what = "changed";
		if (what && !(k->mv_size == 1 && ((uint8_t *)k->mv_data)[0] == VCMA_REC_META)) {
			changes++;
			if (shown < 6 && o < n) {
				o += (size_t)snprintf(out + o, n - o, "%s%s %s", shown ? ", " : "",
						      key_name(k->mv_data, k->mv_size, name, sizeof(name)), what);
				shown++;
			}
		}
		if (cmp <= 0)
			a.rc = mdb_cursor_get(a.cur, &a.k, &a.v, MDB_NEXT);
		if (cmp >= 0)
			b.rc = mdb_cursor_get(b.cur, &b.k, &b.v, MDB_NEXT);
	}
	if (changes > shown && o < n)
		o += (size_t)snprintf(out + o, n - o, " and %lu more", changes - shown);
	if (b.rc && b.rc != MDB_NOTFOUND && o < n)
		snprintf(out + o, n - o, "%sunreadable from there on (%s)", changes ? "; " : "", mdb_strerror(b.rc));
	else if (!changes)
		snprintf(out, n, "no record");
	diff_close(&a);
	diff_close(&b);
}

static void default_warn(void *ctx, const char *msg)
{
	fprintf(stderr, "vcma-store: warning: %s\n", msg);
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	return rc;
}

static unsigned int env_flags(const struct vcma_store *s)
{
	if (s->opt.read_only)
		return MDB_RDONLY;
	return s->opt.lmdb_sync ? 0 : MDB_NOSYNC;
}

/*
 * The newest snapshot did not validate (*newest). If the one before it does, the
 * newest transaction is torn: drop it (read-write: replace data.mdb by a copy without
 * it, keeping the torn file as data.mdb.torn-N; read-only: read the copy) and warn.
 * Otherwise refuse, naming the damaged records and the file.
 */
static int store_rollback(struct vcma_store *s, const struct check *newest)
{
	char copy[PATH_MAX + 64], kept[PATH_MAX + 64], why[256], changed[512], msg[1536];
	uint64_t n = newest->last_txn;
	struct check prev;
	MDB_env *penv = NULL, *tenv = NULL;
	int rc;

	mdb_env_close(s->env);
	s->env = NULL;
	if (s->opt.read_only) {
		const char *tmp = getenv("TMPDIR");
		int fd;

		snprintf(copy, sizeof(copy), "%s/vcma-store-prev-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		fd = mkstemp(copy);
		if (fd < 0 || close(fd))
			return store_fail(s, -errno, "%s: corrupt: %s; no private copy for the snapshot before it "
					  "(%s: %s)", s->path, newest->bad, copy, strerror(errno));
	} else {
		snprintf(copy, sizeof(copy), "%s.rollback", s->path);
	}
	rc = n ? copy_prev(s->path, copy, n, why, sizeof(why)) : -ENOENT;
	if (!n)
		msgf(why, sizeof(why), "it is the first");
	if (!rc) {
		rc = env_open(&penv, copy, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, s->opt.map_size);
		if (rc)
			msgf(why, sizeof(why), "LMDB cannot open it: %s", strerror(-rc));
	}
	if (!rc) {
		check_snapshot(penv, &prev);
		if (prev.nbad) {
			rc = -EUCLEAN;
			msgf(why, sizeof(why), "it is damaged too");
		} else if (prev.meta_found && prev.format != VCMA_STORE_FORMAT) {
			rc = -EUCLEAN;
			msgf(why, sizeof(why), "its meta record has format %u", prev.format);
		}
	}
	if (rc) {
		if (penv)
			mdb_env_close(penv);
		unlink(copy);
		return store_fail(s, -EUCLEAN, "%s: corrupt: %s (%llu damaged record%s; the newest transaction is %llu, "
				  "and the snapshot before it cannot replace it: %s); refusing to use it",
				  s->path, newest->bad, (unsigned long long)newest->nbad, newest->nbad == 1 ? "" : "s",
				  (unsigned long long)n, why);
	}
	if (!env_open(&tenv, s->path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, s->opt.map_size)) {
		describe_drop(tenv, penv, changed, sizeof(changed));
		mdb_env_close(tenv);
	} else {
		msgf(changed, sizeof(changed), "unknown");
	}
	msgf(kept, sizeof(kept), "%s.torn-%llu", s->path, (unsigned long long)n);
	msgf(msg, sizeof(msg), "%s: dropped transaction %llu, the newest, as torn: %s; it changed: %s; "
		 "resuming from transaction %llu%s%s%s", s->path, (unsigned long long)n, newest->bad, changed,
		 (unsigned long long)n - 1, s->opt.read_only ? " (read-only: " : "; the torn file is kept as ",
		 s->opt.read_only ? s->dir : kept, s->opt.read_only ? " is unchanged)" : "");
	if (s->opt.read_only) {
		unlink(copy); /* the open environment keeps the copy */
		s->env = penv;
	} else {
		char lock[PATH_MAX + 16];

		mdb_env_close(penv);
		msgf(lock, sizeof(lock), "%s/lock.mdb", s->dir);
		/* A reader elsewhere (vcmactl state verify) would keep the old lock table,
		 * whose last transaction is the torn one, and LMDB would build the next
		 * transaction on it: a new lock file makes this open the first again. */
		if ((unlink(kept) && errno != ENOENT) || link(s->path, kept) || rename(copy, s->path) ||
		    (unlink(lock) && errno != ENOENT) || (rc = fsync_dir(s->dir))) {
			rc = rc ? rc : -errno;
			unlink(copy);
			return store_fail(s, rc, "%s: cannot drop the torn transaction %llu: %s", s->path,
					  (unsigned long long)n, strerror(-rc));
		}
		rc = env_open(&s->env, s->dir, env_flags(s), s->opt.map_size);
		if (rc)
			return store_fail(s, rc, "%s: %s", s->path, strerror(-rc));
	}
	s->info.dropped_txn = n;
	s->info.records = prev.records;
	s->opt.warn(s->opt.warn_ctx, msg);
	return 0;
}

static uint64_t store_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int vcma_store_open(struct vcma_store **out, const char *dir, const struct vcma_store_options *opt,
		    char *err, size_t errlen)
{
	struct vcma_store *s;
	struct check c;
	MDB_txn *txn;
	struct stat st;
	unsigned int flags;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "%s: %s", dir, strerror(ENOMEM));
		return -ENOMEM;
	}
	if (opt)
		s->opt = *opt;
	if (!s->opt.map_size)
		s->opt.map_size = VCMA_STORE_DEFAULT_MAP_SIZE;
	if (!s->opt.warn)
		s->opt.warn = default_warn;
	if (strlen(dir) >= sizeof(s->dir)) {
		rc = store_fail(s, -ENAMETOOLONG, "%s: %s", dir, strerror(ENAMETOOLONG));
		goto fail;
	}
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->path, sizeof(s->path), "%s/" STORE_FILE, dir);

	if (s->opt.read_only) {
		if (stat(s->path, &st)) {
			rc = store_fail(s, -errno, "%s: %s (no store in %s)", s->path, strerror(errno), dir);
			goto fail;
		}
	} else if (mkdir(dir, 0700) && errno != EEXIST) {
		rc = store_fail(s, -errno, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	flags = env_flags(s);
	if (s->opt.read_only) { /* use vcmad's lock file if there is one, never create one */
		char lock[PATH_MAX + 16];

		snprintf(lock, sizeof(lock), "%s/lock.mdb", dir);
		if (access(lock, R_OK | W_OK))
			flags |= MDB_NOLOCK;
	}
	rc = env_open(&s->env, dir, flags, s->opt.map_size);
	if (rc) {
		rc = store_fail(s, rc, "%s: %s%s", s->path, rc == -EUCLEAN ? "not an LMDB file, or its meta pages are damaged: " : "",
				strerror(-rc));
		goto fail;
	}
	check_snapshot(s->env, &c);
	s->info.records = c.records;
	if (c.nbad) {
		rc = store_rollback(s, &c);
		if (rc)
			goto fail;
		check_snapshot(s->env, &c);
		if (c.nbad) { /* cannot happen: the copy validated */
			rc = store_fail(s, -EUCLEAN, "%s: corrupt after dropping transaction %llu: %s", s->path,
					(unsigned long long)s->info.dropped_txn, c.bad);
			goto fail;
		}
	}
	if (c.meta_found && c.format != VCMA_STORE_FORMAT) {
		rc = store_fail(s, -EPROTO, "%s: record meta: format %u, this vcmad knows format %u", s->path, c.format,
				VCMA_STORE_FORMAT);
		goto fail;
	}
	s->created_ns = c.created_ns;
	s->handle_floor = c.handle_floor;
	s->info.last_txn = c.last_txn;
	if (!s->opt.read_only) {
		rc = mdb_txn_begin(s->env, NULL, 0, &txn);
		if (!rc) {
			rc = mdb_dbi_open(txn, NULL, 0, &s->dbi);
			if (!rc)
				rc = mdb_txn_commit(txn);
			else
				mdb_txn_abort(txn);
		}
		if (rc) {
			rc = store_fail(s, lmdb_errno(rc), "%s: %s", s->path, mdb_strerror(rc));
			goto fail;
		}
		s->info.last_txn = env_last_txn(s->env);
	}
	if (!c.meta_found && !s->opt.read_only) { /* a new store: its meta record is its first turn */
		s->created_ns = store_now_ns();
		rc = turn_begin(s);
		if (!rc)
			rc = vcma_store_commit(s);
		if (rc)
			goto fail;
		s->info.created = true;
	}
	*out = s;
	return 0;
fail:
	snprintf(err, errlen, "%s", s->err);
	if (s->env)
		mdb_env_close(s->env);
	free(s);
	return rc;
}

void vcma_store_close(struct vcma_store *s)
{
	if (!s)
		return;
	vcma_store_abort(s);
	mdb_env_close(s->env);
	free(s);
}

const char *vcma_store_error(const struct vcma_store *s) { return s->err; }
const char *vcma_store_path(const struct vcma_store *s) { return s->path; }
void vcma_store_info(const struct vcma_store *s, struct vcma_store_info *info) { *info = s->info; }
bool vcma_store_in_turn(const struct vcma_store *s) { return s->txn || s->turn_err; }

/* ---- turns ---- */

static int turn_begin(struct vcma_store *s)
{
	int rc;

	if (s->poisoned)
		return store_fail(s, -EIO, "%s: an earlier sync failed; close and open the store again", s->path);
	if (s->opt.read_only)
		return store_fail(s, -EROFS, "%s: opened read-only", s->path);
	if (s->turn_err)
		return s->turn_err; /* the message of the failure stays */
	if (s->txn)
		return 0;
	rc = mdb_txn_begin(s->env, NULL, 0, &s->txn);
	if (rc) {
		s->txn = NULL;
		return store_fail(s, lmdb_errno(rc), "%s: cannot begin a transaction: %s", s->path, mdb_strerror(rc));
	}
	s->txn_id = env_last_txn(s->env) + 1;
	return 0;
}

/* A failure inside the turn: the transaction is gone, the turn fails as a whole. */
static int turn_fail(struct vcma_store *s, int lrc, const char *what, const uint8_t *key, size_t klen)
{
	char name[96];
	int rc = lmdb_errno(lrc);

	mdb_txn_abort(s->txn);
	s->txn = NULL;
	s->turn_err = rc;
	if (lrc == MDB_MAP_FULL)
		store_fail(s, rc, "%s: %s record %s: the map is full (map size %llu bytes); this turn is dropped, "
			   "transaction %llu and before are intact", s->path, what, key_name(key, klen, name, sizeof(name)),
			   (unsigned long long)s->opt.map_size, (unsigned long long)s->txn_id - 1);
	else
		store_fail(s, rc, "%s: %s record %s: %s; this turn is dropped, transaction %llu and before are intact",
			   s->path, what, key_name(key, klen, name, sizeof(name)), mdb_strerror(lrc),
			   (unsigned long long)s->txn_id - 1);
	return rc;
}

static int turn_put(struct vcma_store *s, const uint8_t *key, size_t klen, void *val, size_t vlen)
{
	struct vcma_rec_hdr *h = val;
	MDB_val k = { klen, (void *)key }, v = { vlen, val };
	int rc = turn_begin(s);

	if (rc)
		return rc;
	h->type = key[0];
	h->pad0 = 0;
	h->len = htole16((uint16_t)vlen);
	h->txn = htole64(s->txn_id);
	h->crc = htole32(rec_crc(key, klen, val, vlen));
	rc = mdb_put(s->txn, s->dbi, &k, &v, 0);
	return rc ? turn_fail(s, rc, "writing", key, klen) : 0;
}

static int turn_del(struct vcma_store *s, const uint8_t *key, size_t klen)
{
	MDB_val k = { klen, (void *)key };
	char name[96];
	int rc = turn_begin(s);

	if (rc)
		return rc;
	rc = mdb_del(s->txn, s->dbi, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return store_fail(s, -ENOENT, "%s: no record %s to delete", s->path, key_name(key, klen, name, sizeof(name)));
	return rc ? turn_fail(s, rc, "deleting", key, klen) : 0;
}

static void name_put(char *dst, const char *src)
{
	memset(dst, 0, VCMA_STORE_NAME_MAX);
	memcpy(dst, src, strnlen(src, VCMA_STORE_NAME_MAX - 1));
}

int vcma_store_put_pool(struct vcma_store *s, const struct vcma_store_pool *p)
{
	struct vcma_rec_pool r = { .id = htole32(p->id), .base_mfn = htole64(p->base_mfn), .frames = htole64(p->frames) };
	uint8_t k[5] = { VCMA_REC_POOL };

	be32_put(k + 1, p->id);
	name_put(r.name, p->name);
	return turn_put(s, k, sizeof(k), &r, sizeof(r));
}

int vcma_store_put_guest(struct vcma_store *s, const struct vcma_store_guest *g)
{
	struct vcma_rec_guest r = {
		.id = htole32(g->id), .link = (uint8_t)g->link, .sim_uid = htole32(g->sim_uid),
		.qemu_pid = htole32(g->qemu_pid), .qemu_start_time = htole64(g->qemu_start_time),
		.xen_domid = htole32(g->xen_domid),
	};
	uint8_t k[5] = { VCMA_REC_GUEST };

	be32_put(k + 1, g->id);
	name_put(r.name, g->name);
	name_put(r.class_name, g->class_name);
	memcpy(r.sim_token, g->sim_token, sizeof(r.sim_token));
	return turn_put(s, k, sizeof(k), &r, sizeof(r));
}

int vcma_store_put_region(struct vcma_store *s, const struct vcma_store_region *g)
{
	struct vcma_rec_region r = {
		.handle = htole64(g->handle), .guest = htole32(g->guest), .pool = htole32(g->pool),
		.first_mfn = htole64(g->first_mfn), .frames = htole64(g->frames), .flags = htole32(g->flags),
	};
	uint8_t k[9] = { VCMA_REC_REGION };

	be64_put(k + 1, g->handle);
	return turn_put(s, k, sizeof(k), &r, sizeof(r));
}

int vcma_store_put_p2m(struct vcma_store *s, const struct vcma_store_p2m *m)
{
	struct vcma_rec_p2m r = { .vm = htole32(m->vm), .first_gfn = htole64(m->first_gfn), .mfn = htole64(m->mfn),
				  .count = htole64(m->count) };
	uint8_t k[13] = { VCMA_REC_P2M };

	be32_put(k + 1, m->vm);
	be64_put(k + 5, m->first_gfn);
	return turn_put(s, k, sizeof(k), &r, sizeof(r));
}

int vcma_store_put_lender(struct vcma_store *s, const struct vcma_store_lender *l)
{
	struct vcma_rec_lender r = { .guest = htole32(l->guest), .pool = htole32(l->pool), .frames = htole64(l->frames) };
	uint8_t k[9] = { VCMA_REC_LENDER };

	be32_put(k + 1, l->guest);
	be32_put(k + 5, l->pool);
	return turn_put(s, k, sizeof(k), &r, sizeof(r));
}

int vcma_store_del_pool(struct vcma_store *s, uint32_t id)
{
	uint8_t k[5] = { VCMA_REC_POOL };

	be32_put(k + 1, id);
	return turn_del(s, k, sizeof(k));
}

int vcma_store_del_guest(struct vcma_store *s, uint32_t id)
{
	uint8_t k[5] = { VCMA_REC_GUEST };

	be32_put(k + 1, id);
	return turn_del(s, k, sizeof(k));
}

int vcma_store_del_region(struct vcma_store *s, uint64_t handle)
{
	uint8_t k[9] = { VCMA_REC_REGION };

	be64_put(k + 1, handle);
	return turn_del(s, k, sizeof(k));
}

int vcma_store_del_p2m(struct vcma_store *s, uint32_t vm, uint64_t first_gfn)
{
	uint8_t k[13] = { VCMA_REC_P2M };

	be32_put(k + 1, vm);
	be64_put(k + 5, first_gfn);
	return turn_del(s, k, sizeof(k));
}

int vcma_store_del_lender(struct vcma_store *s, uint32_t guest, uint32_t pool)
{
	uint8_t k[9] = { VCMA_REC_LENDER };

	be32_put(k + 1, guest);
	be32_put(k + 5, pool);
	return turn_del(s, k, sizeof(k));
}

void vcma_store_set_handle_floor(struct vcma_store *s, uint64_t floor)
{
	if (floor > s->handle_floor)
		s->handle_floor = floor;
}

int vcma_store_commit(struct vcma_store *s)
{
	struct vcma_rec_meta m = { .format_version = htole32(VCMA_STORE_FORMAT) };
	uint8_t k[1] = { VCMA_REC_META };
	int rc;

	if (s->turn_err) {
		rc = s->turn_err;
		s->turn_err = 0;
		return rc;
	}
	if (!s->txn)
		return s->poisoned ? store_fail(s, -EIO, "%s: an earlier sync failed; close and open the store again",
						s->path) : 0;
	/* every commit says it was the last: a newest snapshot whose meta disagrees is torn */
	m.created_ns = htole64(s->created_ns);
	m.last_txn = htole64(s->txn_id);
	m.handle_gen_floor = htole64(s->handle_floor);
	rc = turn_put(s, k, sizeof(k), &m, sizeof(m));
	if (rc) {
		s->turn_err = 0;
		return rc;
	}
	rc = mdb_txn_commit(s->txn);
	s->txn = NULL;
	if (rc) {
		int e = lmdb_errno(rc);

		if (e != -ENOSPC) /* a failed meta write leaves LMDB unusable (MDB_PANIC) */
			s->poisoned = true;
		return store_fail(s, e, "%s: commit of transaction %llu failed: %s; this turn is dropped, transaction "
				  "%llu and before are intact", s->path, (unsigned long long)s->txn_id, mdb_strerror(rc),
				  (unsigned long long)s->txn_id - 1);
	}
	if (!s->opt.no_sync && !s->opt.lmdb_sync) {
		rc = mdb_env_sync(s->env, 1);
		if (rc) {
			s->poisoned = true;
			return store_fail(s, rc == ENOSPC ? -ENOSPC : -EIO,
					  "%s: sync of transaction %llu failed: %s; whether it reached the disk is unknown "
					  "(transaction %llu and before are there); close and open the store again",
					  s->path, (unsigned long long)s->txn_id, mdb_strerror(rc),
					  (unsigned long long)s->txn_id - 1);
		}
	}
	s->info.last_txn = s->txn_id;
	return 0;
}

int vcma_store_clear(struct vcma_store *s)
{
	int rc = turn_begin(s);

	if (rc)
		return rc;
	rc = mdb_drop(s->txn, s->dbi, 0);
	return rc ? turn_fail(s, rc, "clearing", (const uint8_t *)"", 0) : 0;
}

void vcma_store_abort(struct vcma_store *s)
{
	if (s->txn)
		mdb_txn_abort(s->txn);
	s->txn = NULL;
	s->turn_err = 0;
}

/* ---- replay ---- */

struct replay {
	struct vcma_store *s;
	const struct vcma_store_replay_ops *ops;
	void *ctx;
	uint64_t last_txn;
};

static void name_get(char *dst, const char *src)
{
	memcpy(dst, src, VCMA_STORE_NAME_MAX);
	dst[VCMA_STORE_NAME_MAX - 1] = 0;
}

static int replay_one(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct replay *rp = ctx;
	const struct vcma_store_replay_ops *ops = rp->ops;
	union rec r;
	char why[160], name[96];

	if (rec_decode(k, v, rp->last_txn, &r, why, sizeof(why)))
		return store_fail(rp->s, -EUCLEAN, "%s: record %s: %s", rp->s->path,
				  key_name(k->mv_data, k->mv_size, name, sizeof(name)), why);
	switch (r.h.type) {
	case VCMA_REC_META: {
		struct vcma_store_meta m = { le32toh(r.meta.format_version), le64toh(r.meta.created_ns),
					     le64toh(r.meta.last_txn), le64toh(r.meta.handle_gen_floor) };
		return ops->meta ? ops->meta(rp->ctx, &m) : 0;
	}
	case VCMA_REC_POOL: {
		struct vcma_store_pool p = { .id = le32toh(r.pool.id), .base_mfn = le64toh(r.pool.base_mfn),
					     .frames = le64toh(r.pool.frames) };
		name_get(p.name, r.pool.name);
		return ops->pool ? ops->pool(rp->ctx, &p) : 0;
	}
	case VCMA_REC_GUEST: {
		struct vcma_store_guest g = {
			.id = le32toh(r.guest.id), .link = r.guest.link, .sim_uid = le32toh(r.guest.sim_uid),
			.qemu_pid = le32toh(r.guest.qemu_pid), .qemu_start_time = le64toh(r.guest.qemu_start_time),
			.xen_domid = le32toh(r.guest.xen_domid),
		};
		name_get(g.name, r.guest.name);
		name_get(g.class_name, r.guest.class_name);
		memcpy(g.sim_token, r.guest.sim_token, sizeof(g.sim_token));
		return ops->guest ? ops->guest(rp->ctx, &g) : 0;
	}
	case VCMA_REC_REGION: {
		struct vcma_store_region g = {
			.handle = le64toh(r.region.handle), .guest = le32toh(r.region.guest), .pool = le32toh(r.region.pool),
			.first_mfn = le64toh(r.region.first_mfn), .frames = le64toh(r.region.frames),
			.flags = le32toh(r.region.flags),
		};
		return ops->region ? ops->region(rp->ctx, &g) : 0;
	}
	case VCMA_REC_P2M: {
		struct vcma_store_p2m m = { le32toh(r.p2m.vm), le64toh(r.p2m.first_gfn), le64toh(r.p2m.mfn),
					    le64toh(r.p2m.count) };
		return ops->p2m ? ops->p2m(rp->ctx, &m) : 0;
	}
	case VCMA_REC_LENDER: {
		struct vcma_store_lender l = { le32toh(r.lender.guest), le32toh(r.lender.pool), le64toh(r.lender.frames) };
		return ops->lender ? ops->lender(rp->ctx, &l) : 0;
	}
	}
	return 0;
}

int vcma_store_replay(struct vcma_store *s, const struct vcma_store_replay_ops *ops, void *ctx)
{
	struct replay rp = { s, ops, ctx, env_last_txn(s->env) };
	int rc, lrc;

	if (s->txn)
		return store_fail(s, -EBUSY, "%s: replay inside a turn (commit or abort it first)", s->path);
	s->err[0] = 0;
	rc = walk(s->env, replay_one, &rp, &lrc);
	if (rc && lrc)
		store_fail(s, rc, "%s: reading records: %s", s->path, mdb_strerror(lrc));
	else if (rc && !s->err[0])
		store_fail(s, rc, "%s: replay stopped by its caller: %s", s->path, strerror(rc < 0 ? -rc : rc));
	return rc;
}
