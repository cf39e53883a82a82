/* SPDX-License-Identifier: MIT */
/*
 * fmap_internal.h - helpers shared by fmap.c and search.c; not for other users.
 */
#ifndef VCMA_CORE_FMAP_INTERNAL_H
#define VCMA_CORE_FMAP_INTERNAL_H

#include <stdint.h>

#include "fmap.h"

#define FMAP_GWORDS (VCMA_FMAP_GRANULE / 64u) /* bitmap words per granule */

/* One past the last granule of superblock sb. */
static inline uint64_t fmap_super_gend(const struct vcma_fmap *fm, uint64_t sb)
{
	uint64_t end = (sb + 1) << VCMA_FMAP_SUPER_SHIFT;

	return end < fm->ngran ? end : fm->ngran;
}

/* Number of set bits of bm in [a, b). */
uint64_t fmap_count_bits(const uint64_t *bm, uint64_t a, uint64_t b);

#endif
