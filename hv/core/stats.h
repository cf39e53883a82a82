/* SPDX-License-Identifier: MIT */
/*
 * stats.h - per-pool counters (the ones Linux CMA exposes in sysfs) and a latency
 * histogram with power-of-two nanosecond buckets. Plain structs: the owner of the
 * pool serializes updates.
 */
#ifndef VCMA_CORE_STATS_H
#define VCMA_CORE_STATS_H

#include <stdint.h>

#define VCMA_HIST_BUCKETS 40u /* bucket b holds [2^b, 2^(b+1)) ns; 0 holds [0, 2) */

struct vcma_hist {
	uint64_t bucket[VCMA_HIST_BUCKETS];
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
};

struct vcma_pool_stats {
	uint64_t alloc_success;         /* allocations that got a region */
	uint64_t alloc_fail;            /* allocations refused or failed */
	uint64_t alloc_pages_success;   /* frames handed out (Linux: alloc_pages_success) */
	uint64_t alloc_pages_fail;      /* frames asked for by failed allocations */
	uint64_t release_pages_success; /* frames returned by frees */
	uint64_t vacated_lent_free;     /* lent frames taken back without a copy */
	uint64_t vacated_lent_used;     /* lent frames moved by copy + remap */
	struct vcma_hist alloc_latency;
};

void vcma_hist_record(struct vcma_hist *h, uint64_t ns);
/* Value below which a fraction q (0..1) of samples fall, as the upper edge of the
 * bucket holding it; 0 for an empty histogram. */
uint64_t vcma_hist_quantile(const struct vcma_hist *h, double q);
/* Index of the bucket a value falls into. */
unsigned int vcma_hist_bucket(uint64_t ns);

uint64_t vcma_now_ns(void);

#endif
