/* SPDX-License-Identifier: MIT */
/*
 * store.h - vcmad's durable ownership store: an LMDB environment in the state
 * directory holding pools, guests, regions, each VM's p2m runs and lent capacity, so
 * that a restarted vcmad knows who owns which frame (issue 16).
 *
 * Ownership: one struct vcma_store per state directory, owned by one thread (vcmad's
 * loop); nothing here locks. Writes are grouped in turns: the first put/del of a loop
 * turn opens a write transaction, vcma_store_commit() makes the turn durable with one
 * fsync (MDB_NOSYNC commit, then mdb_env_sync), vcma_store_abort() forgets it. A turn
 * is all or nothing: after any failure inside it every further put/del of the turn
 * fails with the same error until it is committed (which returns the error) or aborted.
 *
 * Every record's value carries a CRC32C over its key and value and the id of the
 * transaction that wrote it. Opening validates every record; a newest transaction
 * whose records do not check out while the one before it does (a torn tail: the
 * group commit's single fsync does not order data pages before the meta page) is
 * dropped with a warning naming it; any other damage refuses with a message naming
 * the record and the file. Records are replayed in key order: meta, pools, guests,
 * regions (by handle), p2m runs (by vm, gfn), lenders (by guest, pool).
 *
 * Every function returns 0 (or a count) or -errno; vcma_store_error() then says why.
 */
#ifndef VCMA_STORE_H
#define VCMA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VCMA_STORE_FORMAT 1                    /* meta.format_version written today */
#define VCMA_STORE_DEFAULT_MAP_SIZE (1ull << 30) /* address space reserved, not disk */
#define VCMA_STORE_NAME_MAX 32                 /* names: up to 31 bytes + NUL */
#define VCMA_STORE_TOKEN_LEN 16

struct vcma_store;

/* Where a guest came from, and what identifies it again after a restart. */
enum vcma_store_link {
	VCMA_STORE_LINK_SIM = 1,  /* vcma-simvm / libvcma on the attach socket: uid + token */
	VCMA_STORE_LINK_QEMU = 2, /* QEMU ivshmem: pid + start time (/proc/PID/stat field 22) */
	VCMA_STORE_LINK_XEN = 3,  /* Xen xenbus: domid */
};

struct vcma_store_meta {
	uint32_t format_version;
	uint64_t created_ns;  /* CLOCK_REALTIME when the store was made */
	uint64_t last_txn;    /* the transaction that last committed (every commit updates it) */
	uint64_t handle_gen_floor; /* every region handle issued so far has a lower generation */
};

struct vcma_store_pool {
	uint32_t id; /* the core's pool index */
	char name[VCMA_STORE_NAME_MAX];
	uint64_t base_mfn, frames;
};

struct vcma_store_guest {
	uint32_t id;
	char name[VCMA_STORE_NAME_MAX];
	char class_name[VCMA_STORE_NAME_MAX];
	enum vcma_store_link link;
	uint32_t sim_uid;                          /* LINK_SIM */
	uint8_t sim_token[VCMA_STORE_TOKEN_LEN];   /* LINK_SIM: the 128-bit reattach token */
	uint32_t qemu_pid;                         /* LINK_QEMU */
	uint64_t qemu_start_time;                  /* LINK_QEMU: clock ticks after boot */
	uint32_t xen_domid;                        /* LINK_XEN */
};

struct vcma_store_region {
	uint64_t handle;
	uint32_t guest, pool;
	uint64_t first_mfn, frames;
	uint32_t flags;
};

/* guest frames [first_gfn, first_gfn + count) of VM vm are backed by
 * machine frames [mfn, mfn + count) */
struct vcma_store_p2m {
	uint32_t vm; /* a guest id */
	uint64_t first_gfn, mfn, count;
};

struct vcma_store_lender {
	uint32_t guest, pool;
	uint64_t frames; /* pool frames lent to this guest */
};

struct vcma_store_options {
	uint64_t map_size;  /* 0: VCMA_STORE_DEFAULT_MAP_SIZE */
	bool read_only;     /* never writes DIR (uses DIR/lock.mdb if it is there, creates
	                     * none); a torn tail is dropped in a private copy in $TMPDIR */
	bool no_sync;       /* commit without fsync (benchmarks: what durability costs) */
	bool lmdb_sync;     /* commit with LMDB's own syncs (data, then meta: two fsyncs) */
	/* start-up warnings (a dropped torn tail); NULL: stderr */
	void (*warn)(void *ctx, const char *msg);
	void *warn_ctx;
};

/* What the last open found; see vcma_store_info(). */
struct vcma_store_info {
	uint64_t last_txn;      /* LMDB's last committed transaction (after any drop) */
	uint64_t dropped_txn;   /* a torn newest transaction that was dropped, else 0 */
	bool created;           /* the store was empty and has just been made */
	uint64_t records;       /* records validated at open */
};

/*
 * Opens (creating if needed and not read_only) the store in DIR (DIR/data.mdb,
 * DIR/lock.mdb), validates it, and drops a torn newest transaction. On failure returns
 * -errno (-EUCLEAN: corrupt records, -EPROTO: a format it does not know) and writes a
 * message naming the file (and record) to err.
 */
int vcma_store_open(struct vcma_store **out, const char *dir, const struct vcma_store_options *opt,
		    char *err, size_t errlen);
void vcma_store_close(struct vcma_store *s); /* aborts an open turn */
const char *vcma_store_error(const struct vcma_store *s);
const char *vcma_store_path(const struct vcma_store *s); /* DIR/data.mdb */
void vcma_store_info(const struct vcma_store *s, struct vcma_store_info *info);

/* Changes of this turn (a put replaces the record with the same key). */
int vcma_store_put_pool(struct vcma_store *s, const struct vcma_store_pool *p);
int vcma_store_put_guest(struct vcma_store *s, const struct vcma_store_guest *g);
int vcma_store_put_region(struct vcma_store *s, const struct vcma_store_region *r);
int vcma_store_put_p2m(struct vcma_store *s, const struct vcma_store_p2m *m);
int vcma_store_put_lender(struct vcma_store *s, const struct vcma_store_lender *l);
/* -ENOENT when there is no such record (the turn stays usable) */
int vcma_store_del_pool(struct vcma_store *s, uint32_t id);
int vcma_store_del_guest(struct vcma_store *s, uint32_t id);
int vcma_store_del_region(struct vcma_store *s, uint64_t handle);
int vcma_store_del_p2m(struct vcma_store *s, uint32_t vm, uint64_t first_gfn);
int vcma_store_del_lender(struct vcma_store *s, uint32_t guest, uint32_t pool);

/* Delete every record in this turn (the commit writes meta anew): a turn that rewrites
 * the whole state starts with it. */
int vcma_store_clear(struct vcma_store *s);
bool vcma_store_in_turn(const struct vcma_store *s);
/*
 * Makes the turn durable: 0 (also when nothing changed), -ENOSPC (map or disk full:
 * the turn is gone, everything committed before is intact, the store stays usable),
 * -EIO or -ENOSPC from the sync (whether the turn reached the disk is unknown; the
 * store refuses every change with -EIO until it is closed and opened again, which
 * tells), -EIO when LMDB failed writing its meta page (the same).
 */
int vcma_store_commit(struct vcma_store *s);
/* What the next commit's meta record says of region handles (never lowered): every
 * handle issued before that commit has a lower generation. Starts at the opened
 * store's. */
void vcma_store_set_handle_floor(struct vcma_store *s, uint64_t floor);
void vcma_store_abort(struct vcma_store *s);

/* Replay: every record in key order, CRC-checked. A callback's nonzero return stops
 * the replay and is returned; NULL callbacks skip their type. */
struct vcma_store_replay_ops {
	int (*meta)(void *ctx, const struct vcma_store_meta *m);
	int (*pool)(void *ctx, const struct vcma_store_pool *p);
	int (*guest)(void *ctx, const struct vcma_store_guest *g);
	int (*region)(void *ctx, const struct vcma_store_region *r);
	int (*p2m)(void *ctx, const struct vcma_store_p2m *m);
	int (*lender)(void *ctx, const struct vcma_store_lender *l);
};
int vcma_store_replay(struct vcma_store *s, const struct vcma_store_replay_ops *ops, void *ctx);

/*
 * Offline check of the ownership invariants over every record: each machine frame
 * owned at most once across regions and p2m runs, regions inside their pools and
 * owned by known guests, p2m runs and lenders of known guests (and pools), no gfn of
 * a VM backed twice, no empty or overflowing range. Calls violation() once per
 * problem (NULL: count only). Returns the number of violations, or -errno.
 */
struct vcma_store_counts {
	uint64_t meta, pools, guests, regions, p2m, lenders;
};
int vcma_store_verify(struct vcma_store *s, struct vcma_store_counts *counts,
		      void (*violation)(void *ctx, const char *msg), void *ctx);

/* CRC32C (Castagnoli), as iSCSI and ext4 use: crc = vcma_crc32c(crc, buf, len),
 * starting from 0. */
uint32_t vcma_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
