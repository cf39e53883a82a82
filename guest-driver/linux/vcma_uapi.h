/* SPDX-License-Identifier: (GPL-2.0-only WITH Linux-syscall-note) OR MIT */
/*
 * vcma_uapi.h - /dev/vcma, the userspace interface of vcma.ko.
 *
 * A region is named by a handle, like a GEM handle, and carried by a dma-buf:
 *
 *   VCMA_IOC_ALLOC  allocate a contiguous region from vcmad; returns its handle and
 *                   a new dma-buf fd (O_RDWR | O_CLOEXEC): mmap it for CPU access,
 *                   pass it to another driver to attach it for DMA
 *   VCMA_IOC_FREE   drop the handle; the region goes back to vcmad once its dma-buf
 *                   is released too (every fd closed, every mapping and attachment gone)
 *   VCMA_IOC_QUERY  one region of this file (handle != 0), or a pool (handle == 0)
 *
 * Closing /dev/vcma drops every handle the file still holds, as FREE does.
 * Errors are the errno values of PROTOCOL.md §5.6 (e.g. ENOSPC, EDQUOT, E2BIG,
 * ERANGE for a request below the pool's minimum), ECONNRESET when vcmad cut the
 * guest off, ENODEV when the device is gone.
 */
#ifndef VCMA_UAPI_H
#define VCMA_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VCMA_DEV_PATH "/dev/vcma"
#define VCMA_POOL_NAME_LEN 16 /* NUL-padded; all zero = let vcmad choose */

struct vcma_ioc_alloc {
	__u64 length;      /* in: bytes wanted (rounded up to pages) */
	__u32 align_order; /* in: explicit alignment order 0..18 (0 = natural) */
	__u32 flags;       /* in: 0 */
	char pool[VCMA_POOL_NAME_LEN]; /* in: pool name, or all zero */
	__u64 handle;      /* out: region handle, != 0 */
	__u64 size;        /* out: region bytes */
	__u64 dma_addr;    /* out: the address a device in this guest DMAs to */
	__u64 offset;      /* out: the region's offset in the DMA window (vcmad's "bus") */
	__s32 fd;          /* out: dma-buf fd */
	__u32 pad;         /* 0 */
};

struct vcma_ioc_free {
	__u64 handle;
};

struct vcma_ioc_query {
	__u64 handle;      /* in: a region of this file, or 0 for a pool */
	char pool[VCMA_POOL_NAME_LEN]; /* in (pool query): name, or all zero = default pool */
	__u64 size;        /* out: region bytes, or pool bytes */
	__u64 dma_addr;    /* out (region) */
	__u64 offset;      /* out (region): offset in the DMA window */
	__u64 free_bytes;  /* out (pool): bytes that can still be allocated */
	__u64 guest_bytes; /* out (pool): bytes this guest holds in the pool */
	__u32 guest_id;    /* out: this guest's id at vcmad (as vcmactl shows it) */
	__u32 pad;         /* 0 */
};

#define VCMA_IOC_MAGIC 'V'
#define VCMA_IOC_ALLOC _IOWR(VCMA_IOC_MAGIC, 1, struct vcma_ioc_alloc)
#define VCMA_IOC_FREE _IOW(VCMA_IOC_MAGIC, 2, struct vcma_ioc_free)
#define VCMA_IOC_QUERY _IOWR(VCMA_IOC_MAGIC, 3, struct vcma_ioc_query)

#endif
