// SPDX-License-Identifier: MIT
/*
 * stats.c - latency histogram with power-of-two nanosecond buckets.
 */
#include <time.h>

#include "stats.h"

unsigned int vcma_hist_bucket(uint64_t ns)
{
	unsigned int b = ns < 2 ? 0 : 63u - (unsigned int)__builtin_clzll(ns);

	return b < VCMA_HIST_BUCKETS ? b : VCMA_HIST_BUCKETS - 1;
}

void vcma_hist_record(struct vcma_hist *h, uint64_t ns)
{
	h->bucket[vcma_hist_bucket(ns)]++;
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

uint64_t vcma_hist_quantile(const struct vcma_hist *h, double q)
{
	uint64_t want, seen = 0;

	if (!h->count)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	want = (uint64_t)(q * (double)h->count);
	if (want == 0)
		want = 1;
	for (unsigned int b = 0; b < VCMA_HIST_BUCKETS; b++) {
		seen += h->bucket[b];
		if (seen >= want) {
			uint64_t edge = 2ull << b; /* upper edge of [2^b, 2^(b+1)) */

			return edge < h->max_ns ? edge : h->max_ns;
		}
	}
	return h->max_ns;
}

uint64_t vcma_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
