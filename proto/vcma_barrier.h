/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_barrier.h - every memory-ordering primitive the ring protocol uses, in one
 * place, for the kernel and for userspace. Each use site says what the peer must
 * see first.
 *
 *   vcma_load_acquire(p)      read an index the peer publishes; later reads of the
 *                             slots it covers are ordered after it (rmb)
 *   vcma_store_release(p, v)  publish an index; earlier writes to the slots it
 *                             covers are visible before it (wmb)
 *   vcma_mb()                 full barrier: between publishing an index and
 *                             re-reading the peer's *_event (ring.h's mb())
 *   vcma_read_once(p)         a single read the compiler may not repeat (XSA-155)
 */
#ifndef VCMA_BARRIER_H
#define VCMA_BARRIER_H

#ifdef __KERNEL__
#include <asm/barrier.h>
#include <linux/compiler.h>
#include <linux/string.h>

#define vcma_load_acquire(p) smp_load_acquire(p)
#define vcma_store_release(p, v) smp_store_release(p, v)
#define vcma_mb() smp_mb()
#define vcma_read_once(p) READ_ONCE(*(p))
#define vcma_write_once(p, v) WRITE_ONCE(*(p), v)
#else
#include <stdint.h>
#include <string.h>

#define vcma_load_acquire(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define vcma_store_release(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)
#define vcma_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define vcma_read_once(p) (*(const volatile __typeof__(*(p)) *)(p))
#define vcma_write_once(p, v) (*(volatile __typeof__(*(p)) *)(p) = (v))
#endif

/*
 * Copy len bytes (a multiple of 8, 8-aligned) out of shared memory exactly once:
 * the copy is what gets validated and used, never the shared original (XSA-155).
 */
static inline void vcma_copy_from_shared(void *dst, const void *src, unsigned int len)
{
	const volatile uint64_t *s = (const volatile uint64_t *)src;
	unsigned char *d = (unsigned char *)dst;

	/* each word is loaded once; memcpy stores it without aliasing the struct */
	for (unsigned int i = 0; i < len / 8; i++) {
		uint64_t w = s[i];

		memcpy(d + 8 * i, &w, sizeof(w));
	}
}

#endif
