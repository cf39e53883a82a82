// SPDX-License-Identifier: MIT
/*
 * fake_machine.c - the stepped clock and fake machine memory of fake_machine.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "backend/memrange.h"
#include "fake_machine.h"

#define PAGE FAKE_PAGE

uint64_t fake_now_ns = 1000000000ull;
uint64_t fake_zeroed_frames;

uint64_t fake_clock(void)
{
	return fake_now_ns;
}

/* ---- fake machine memory ---- */

struct fake_mem {
	uint8_t *map;
	struct vcma_memrange ordinary;
};

static struct fake_mem *fm_of(const struct vcmad_backend *be)
{
	return be->priv;
}

uint8_t *fake_frame(const struct vcmad_backend *be, uint64_t mfn)
{
	return fm_of(be)->map + mfn * PAGE;
}

static int fk_init(struct vcmad_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools)
{
	struct fake_mem *m = calloc(1, sizeof(*m));
	uint64_t cursor = 0;

	m->map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(m->map != MAP_FAILED);
	vcma_memrange_init(&m->ordinary);
	for (uint32_t i = 0; i <= npools; i++) {
		uint64_t end = i < npools ? pools[i].mfn : bytes / PAGE;

		if (end > cursor)
			vcma_memrange_free(&m->ordinary, cursor, end - cursor);
		if (i < npools)
			cursor = pools[i].mfn + pools[i].count;
	}
	be->priv = m;
	be->machine_bytes = bytes;
	return 0;
}

static void fk_fini(struct vcmad_backend *be)
{
	struct fake_mem *m = fm_of(be);

	munmap(m->map, be->machine_bytes);
	vcma_memrange_fini(&m->ordinary);
	free(m);
}

static int fk_zero(struct vcmad_backend *be, uint64_t mfn, uint64_t n)
{
	memset(fm_of(be)->map + mfn * PAGE, 0, n * PAGE);
	fake_zeroed_frames += n;
	return 0;
}

static int fk_copy(struct vcmad_backend *be, uint64_t dst, uint64_t src, uint64_t n)
{
	memcpy(fm_of(be)->map + dst * PAGE, fm_of(be)->map + src * PAGE, n * PAGE);
	return 0;
}

static int fk_touch(struct vcmad_backend *be, uint64_t mfn, uint64_t n)
{
	return 0;
}

static int fk_read(struct vcmad_backend *be, uint64_t mfn, uint64_t off, void *buf, size_t len)
{
	memcpy(buf, fm_of(be)->map + mfn * PAGE + off, len);
	return 0;
}

static int fk_ram_alloc(struct vcmad_backend *be, uint64_t frames, struct vcma_extent *runs, uint32_t max)
{
	return vcma_memrange_alloc(&fm_of(be)->ordinary, frames, runs, max);
}

static void fk_ram_free(struct vcmad_backend *be, const struct vcma_extent *runs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		fk_zero(be, runs[i].start, runs[i].count);
		vcma_memrange_free(&fm_of(be)->ordinary, runs[i].start, runs[i].count);
	}
}

static uint64_t fk_ram_free_frames(const struct vcmad_backend *be)
{
	return fm_of(be)->ordinary.free_frames;
}

const struct vcmad_mem_ops fake_mem_ops = {
	.init = fk_init, .fini = fk_fini, .zero = fk_zero, .copy = fk_copy, .touch = fk_touch, .read = fk_read,
	.ram_alloc = fk_ram_alloc, .ram_free = fk_ram_free, .ram_free_frames = fk_ram_free_frames,
};

