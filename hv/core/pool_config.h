/* SPDX-License-Identifier: MIT */
/*
 * pool_config.h - a pool's policy: size (like Linux cma=), base, alignment cap,
 * largest region, address limit, minimum request, shared/exclusive binding, lending, per-guest quota, vacate weights.
 *
 * Keys are set one at a time from text (the daemon's config file, tests); each bad
 * value is rejected with a message naming the key and the value. resolve() turns the
 * size expression into bytes for a given host memory size.
 */
#ifndef VCMA_CORE_POOL_CONFIG_H
#define VCMA_CORE_POOL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VCMA_PAGE_SHIFT 12u
#define VCMA_PAGE_SIZE (1u << VCMA_PAGE_SHIFT)
#define VCMA_POOL_NAME_MAX 32u
#define VCMA_BIND_NAME_MAX 64u

#define VCMA_DEFAULT_ALIGN_ORDER 8u
#define VCMA_DEFAULT_MIN_REQUEST 2u
#define VCMA_DEFAULT_COST_LENT_FREE 1u
#define VCMA_DEFAULT_COST_LENT_USED 16u

/* A size as Linux cma= takes it: absolute, percentage of host memory, or min/max. */
enum vcma_size_kind {
	VCMA_SIZE_UNSET = 0,
	VCMA_SIZE_BYTES,
	VCMA_SIZE_PERCENT,
	VCMA_SIZE_MIN, /* min(bytes, percent) */
	VCMA_SIZE_MAX, /* max(bytes, percent) */
};

struct vcma_size_expr {
	enum vcma_size_kind kind;
	uint64_t bytes;
	uint32_t percent_milli; /* percent x 1000, e.g. 12.5% = 12500 */
};

enum vcma_pool_mode { VCMA_POOL_SHARED = 0, VCMA_POOL_EXCLUSIVE };
enum vcma_bind_kind { VCMA_BIND_NONE = 0, VCMA_BIND_GUEST, VCMA_BIND_CLASS };
enum vcma_quota_kind { VCMA_QUOTA_NONE = 0, VCMA_QUOTA_BYTES, VCMA_QUOTA_PERCENT };

struct vcma_pool_config {
	char name[VCMA_POOL_NAME_MAX];
	struct vcma_size_expr size;
	struct vcma_size_expr size_override; /* wins when set */
	bool has_base;
	uint64_t base; /* machine address, page aligned */
	uint32_t align_order;
	uint32_t min_request; /* pages; applies to exclusive pools only when set */
	bool min_request_set;
	enum vcma_pool_mode mode;
	enum vcma_bind_kind bind_kind;
	char bind_name[VCMA_BIND_NAME_MAX];
	int lendable; /* -1 unset, 0 no, 1 yes */
	enum vcma_quota_kind quota_kind;
	uint64_t quota_bytes;
	uint32_t quota_percent_milli;
	uint32_t cost_lent_free, cost_lent_used;
	uint64_t max_region;   /* bytes, a power of two; 0 = the pool's size (Xen: see XEN.md) */
	uint32_t address_bits; /* frames below 2^bits only (Xen: XENMEMF_address_bits); 0 = any */
};

/* Defaults for pool `name` (must be 1..31 chars of [A-Za-z0-9_.-]); -EINVAL if not. */
int vcma_pool_config_init(struct vcma_pool_config *c, const char *name, char *err, size_t errlen);

/* Set one key from text. -EINVAL (unknown key or bad value) with a message in err
 * naming the key and the value; a rejected value leaves the config unchanged. */
int vcma_pool_config_set(struct vcma_pool_config *c, const char *key, const char *value, char *err,
			 size_t errlen);

/* An explicit size that wins over `size` (the daemon's --pool-size NAME=SIZE). */
int vcma_pool_config_override_size(struct vcma_pool_config *c, const char *value, char *err,
				   size_t errlen);

/* Cross-key checks (exclusive needs bind, bind needs exclusive, exclusive is not
 * lendable, size given, cost_lent_free < cost_lent_used). */
int vcma_pool_config_validate(const struct vcma_pool_config *c, char *err, size_t errlen);

/* Pool size in bytes for a host with host_bytes of memory, rounded down to whole
 * pages; -EINVAL if it comes out as zero or larger than the host. */
int vcma_pool_config_resolve_size(const struct vcma_pool_config *c, uint64_t host_bytes,
				  uint64_t *bytes, char *err, size_t errlen);

/* Per-guest quota in bytes for a pool of pool_bytes; UINT64_MAX when none. */
uint64_t vcma_pool_config_quota(const struct vcma_pool_config *c, uint64_t pool_bytes);

/* Parse "256M", "4096", "1G", "512K", "2T" (binary units). -EINVAL on junk or
 * overflow. Exposed for the daemon's own keys. */
int vcma_parse_bytes(const char *s, uint64_t *out);

/* Format bytes as "1.5 GiB", "256 MiB", "4 KiB" into buf; returns buf. */
const char *vcma_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
