// SPDX-License-Identifier: MIT
/*
 * crc32c.c - CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing by 8 over
 * tables built once. About 1.5 GB/s without SSE4.2, ample for records of ~100 bytes.
 */
#include <stdint.h>
#include <string.h>

#include "store.h"

static uint32_t crc32c_tab[8][256];
static int crc32c_ready;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc32c_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc32c_tab[t][i] = (crc32c_tab[t - 1][i] >> 8) ^ crc32c_tab[0][crc32c_tab[t - 1][i] & 0xff];
	crc32c_ready = 1; /* single-threaded users; a race would only build equal tables twice */
}

uint32_t vcma_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (!crc32c_ready)
		crc32c_init();
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo, hi;

		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		lo = __builtin_bswap32(lo);
		hi = __builtin_bswap32(hi);
#endif
		lo ^= crc;
		crc = crc32c_tab[7][lo & 0xff] ^ crc32c_tab[6][(lo >> 8) & 0xff] ^ crc32c_tab[5][(lo >> 16) & 0xff] ^
		      crc32c_tab[4][lo >> 24] ^ crc32c_tab[3][hi & 0xff] ^ crc32c_tab[2][(hi >> 8) & 0xff] ^
		      crc32c_tab[1][(hi >> 16) & 0xff] ^ crc32c_tab[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc32c_tab[0][(crc ^ *p++) & 0xff];
	return ~crc;
}
