/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_test_pattern.h - the test pattern and hash shared by vcma_kapi_test.ko and the
 * guest test programs (tests/qemu/guest/); tests/qemu/guestbuild.py has the same in
 * Python and vcmactl hash computes the same FNV-1a on the host.
 *
 *   word i of a region of `size` bytes = splitmix64(size ^ VCMA_TP_GOLDEN + i)
 *   hash = FNV-1a 64 over the bytes (little-endian words)
 */
#ifndef VCMA_TEST_PATTERN_H
#define VCMA_TEST_PATTERN_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stddef.h>
#include <stdint.h>
#endif

#define VCMA_TP_GOLDEN 0x9e3779b97f4a7c15ull
#define VCMA_TP_FNV0 0xcbf29ce484222325ull

static inline uint64_t vcma_tp_splitmix64(uint64_t x)
{
	uint64_t z = x + VCMA_TP_GOLDEN;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t vcma_tp_fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = (const unsigned char *)p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

/* Fill a region of size bytes (a multiple of 8) with its pattern. */
static inline void vcma_tp_fill(uint64_t *w, uint64_t size)
{
	uint64_t seed = size ^ VCMA_TP_GOLDEN;

	for (uint64_t i = 0; i < size / 8; i++)
		w[i] = vcma_tp_splitmix64(seed + i); /* x86: little-endian already */
}

#endif
