/* SPDX-License-Identifier: MIT */
/*
 * fuzz_common.h - what every libFuzzer target here shares: the entry point's
 * prototype, a failure report that aborts (libFuzzer then saves the input), and a
 * byte reader that turns the input into a little program. Reads past the end give
 * zeros, so every input is a valid program.
 */
#ifndef VCMA_FUZZ_COMMON_H
#define VCMA_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* An invariant broke: say which, then abort so that libFuzzer keeps the input. */
static void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fuzz invariant violated: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define FUZZ_CHECK(cond, ...)                  \
	do {                                   \
		if (!(cond))                   \
			fuzz_fail(__VA_ARGS__); \
	} while (0)

struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline bool fin_empty(const struct fuzz_in *in)
{
	return in->n == 0;
}

static inline uint8_t fin_u8(struct fuzz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static inline uint16_t fin_u16(struct fuzz_in *in)
{
	uint16_t v = fin_u8(in);

	return (uint16_t)(v | (uint16_t)fin_u8(in) << 8);
}

static inline uint32_t fin_u32(struct fuzz_in *in)
{
	uint32_t v = 0;

	for (unsigned int i = 0; i < 4; i++)
		v |= (uint32_t)fin_u8(in) << (8 * i);
	return v;
}

static inline uint64_t fin_u64(struct fuzz_in *in)
{
	uint64_t v = fin_u32(in);

	return v | (uint64_t)fin_u32(in) << 32;
}

/* len bytes into dst; what the input lacks is zero. */
static inline void fin_bytes(struct fuzz_in *in, void *dst, size_t len)
{
	size_t k = len < in->n ? len : in->n;

	if (k)
		memcpy(dst, in->p, k);
	memset((uint8_t *)dst + k, 0, len - k);
	in->p += k;
	in->n -= k;
}

#endif
