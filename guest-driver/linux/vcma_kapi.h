/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vcma_kapi.h - vcma.ko's in-kernel API, for guest drivers that need a contiguous
 * DMA buffer the way they would call dma_alloc_coherent():
 *
 *	struct vcma_region *r = vcma_region_alloc(SZ_4M, 0, NULL);
 *	if (IS_ERR(r))
 *		return PTR_ERR(r);
 *	program_device(vcma_region_dma_addr(r), vcma_region_size(r));
 *	memset(vcma_region_vaddr(r), 0, vcma_region_size(r));
 *	...
 *	vcma_region_free(r);	// after the device stopped DMA to it
 *
 * Allocation sleeps (it waits for vcmad's answer): process context only. Free sends
 * the FREE without waiting for the answer (it may sleep for room in the ring); vcmad
 * takes it before any later request. Errors are
 * ERR_PTR(-errno) as in vcma_uapi.h. A region outlives the device only as a husk:
 * if the vcma device goes away first, vaddr is NULL and free just releases memory.
 */
#ifndef VCMA_KAPI_H
#define VCMA_KAPI_H

#include <linux/types.h>

struct vcma_region;

struct vcma_region *vcma_region_alloc(size_t size, unsigned int align_order, const char *pool);
void vcma_region_free(struct vcma_region *r);
dma_addr_t vcma_region_dma_addr(const struct vcma_region *r);
void *vcma_region_vaddr(const struct vcma_region *r);
size_t vcma_region_size(const struct vcma_region *r);
u64 vcma_region_handle(const struct vcma_region *r);

#endif
