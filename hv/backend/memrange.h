/* SPDX-License-Identifier: MIT */
/*
 * memrange.h - extent allocator for ordinary (non-pool) machine memory: a sorted
 * array of free [start, start+count) frame ranges, merged on free.
 */
#ifndef VCMA_HV_MEMRANGE_H
#define VCMA_HV_MEMRANGE_H

#include <stdint.h>

struct vcma_extent {
	uint64_t start, count;
};

struct vcma_memrange {
	struct vcma_extent *ext;
	uint32_t n, cap;
	uint64_t free_frames;
};

void vcma_memrange_init(struct vcma_memrange *m);
void vcma_memrange_fini(struct vcma_memrange *m);
/* Return [start, start+count) to the free set; -EEXIST if any of it is free already. */
int vcma_memrange_free(struct vcma_memrange *m, uint64_t start, uint64_t count);
/* Take `frames` frames as at most max_runs extents, lowest addresses first; fills
 * out[] and returns the number of extents, or -ENOMEM (nothing taken). */
int vcma_memrange_alloc(struct vcma_memrange *m, uint64_t frames, struct vcma_extent *out, uint32_t max_runs);
/* Take exactly [start, start+count) (a VM's RAM taken back after a restart): -ENOENT
 * unless all of it is free; -ENOMEM when splitting an extent needs memory. */
int vcma_memrange_take(struct vcma_memrange *m, uint64_t start, uint64_t count);

#endif
