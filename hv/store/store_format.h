/* SPDX-License-Identifier: MIT */
/*
 * store_format.h - the store's on-disk records (private to hv/store; tests and
 * tools go through store.h). Format version VCMA_STORE_FORMAT.
 *
 * Key: one type byte, then the record's ids big-endian, so LMDB's byte order is the
 * replay order (types in the order a restart needs them, ids ascending).
 *
 *   meta    01                          region  04 handle:8
 *   pool    02 id:4                     p2m     05 vm:4 first_gfn:8
 *   guest   03 id:4                     lender  06 guest:4 pool:4
 *
 * Value: a 16-byte header, then the type's fixed body, all little-endian with
 * explicit padding (zero on write, ignored on read). crc is CRC32C over the key, then
 * the value from `type` on (every byte after crc); txn is the LMDB transaction that
 * wrote the record.
 */
#ifndef VCMA_STORE_FORMAT_H
#define VCMA_STORE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum vcma_store_type {
	VCMA_REC_META = 1,
	VCMA_REC_POOL = 2,
	VCMA_REC_GUEST = 3,
	VCMA_REC_REGION = 4,
	VCMA_REC_P2M = 5,
	VCMA_REC_LENDER = 6,
};
#define VCMA_REC_KEY_MAX 13

struct vcma_rec_hdr {
	uint32_t crc;
	uint8_t type;     /* == the key's type byte */
	uint8_t pad0;
	uint16_t len;     /* sizeof the whole value */
	uint64_t txn;
};
_Static_assert(sizeof(struct vcma_rec_hdr) == 16, "record header");
_Static_assert(offsetof(struct vcma_rec_hdr, txn) == 8, "record header txn");

struct vcma_rec_meta {
	struct vcma_rec_hdr h;
	uint32_t format_version;
	uint32_t pad0;
	uint64_t created_ns;
	uint64_t last_txn;
	uint64_t handle_gen_floor; /* every region handle issued so far has a lower generation */
	uint64_t reserved;
};
_Static_assert(sizeof(struct vcma_rec_meta) == 56, "meta record");

struct vcma_rec_pool {
	struct vcma_rec_hdr h;
	uint32_t id;
	uint32_t pad0;
	uint64_t base_mfn;
	uint64_t frames;
	char name[VCMA_STORE_NAME_MAX];
};
_Static_assert(sizeof(struct vcma_rec_pool) == 72, "pool record");

struct vcma_rec_guest {
	struct vcma_rec_hdr h;
	uint32_t id;
	uint8_t link;
	uint8_t pad0[3];
	char name[VCMA_STORE_NAME_MAX];
	char class_name[VCMA_STORE_NAME_MAX];
	uint32_t sim_uid;
	uint32_t qemu_pid;
	uint64_t qemu_start_time;
	uint32_t xen_domid;
	uint32_t pad1;
	uint8_t sim_token[VCMA_STORE_TOKEN_LEN];
};
_Static_assert(sizeof(struct vcma_rec_guest) == 128, "guest record");
_Static_assert(offsetof(struct vcma_rec_guest, sim_token) == 112, "guest record token");

struct vcma_rec_region {
	struct vcma_rec_hdr h;
	uint64_t handle;
	uint32_t guest;
	uint32_t pool;
	uint64_t first_mfn;
	uint64_t frames;
	uint32_t flags;
	uint32_t pad0;
};
_Static_assert(sizeof(struct vcma_rec_region) == 56, "region record");

struct vcma_rec_p2m {
	struct vcma_rec_hdr h;
	uint32_t vm;
	uint32_t pad0;
	uint64_t first_gfn;
	uint64_t mfn;
	uint64_t count;
};
_Static_assert(sizeof(struct vcma_rec_p2m) == 48, "p2m record");

struct vcma_rec_lender {
	struct vcma_rec_hdr h;
	uint32_t guest;
	uint32_t pool;
	uint64_t frames;
};
_Static_assert(sizeof(struct vcma_rec_lender) == 32, "lender record");

/* The table-driven CRC32C that vcma_crc32c() uses without SSE4.2 (tests compare them). */
uint32_t vcma_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
