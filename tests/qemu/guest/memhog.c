// SPDX-License-Identifier: MIT
/*
 * memhog - a checksumming workload for a guest that lends memory (virtio-mem):
 *
 *   memhog fill MIB     fill MIB of anonymous memory with mix(word index), then
 *                       re-verify all of it, forever, printing after every pass
 *                       "MEMHOG pass=N bad=B mib=MIB" (B: words that differ)
 *   memhog copy MIB     the copy floor: memcpy of MIB (warm), printing
 *                       "MEMHOG-COPY mib=MIB ns=NS" (best of 5)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED) {
		perror("memhog: mmap");
		exit(2);
	}
	return p;
}

static int fill(unsigned mib)
{
	size_t words = (size_t)mib << 17;
	uint64_t *w = map(words * 8);

	for (size_t i = 0; i < words; i++)
		w[i] = mix(i);
	printf("MEMHOG filled mib=%u\n", mib);
	fflush(stdout);
	for (unsigned long pass = 1;; pass++) {
		unsigned long bad = 0;

		for (size_t i = 0; i < words; i++)
			bad += w[i] != mix(i);
		printf("MEMHOG pass=%lu bad=%lu mib=%u\n", pass, bad, mib);
		fflush(stdout);
	}
	return 0;
}

static int copy(unsigned mib)
{
	size_t bytes = (size_t)mib << 20;
	char *a = map(bytes), *b = map(bytes);
	uint64_t best = UINT64_MAX;

	memset(a, 0x5a, bytes);
	for (int i = 0; i < 5; i++) {
		uint64_t t = now_ns();

		memcpy(b, a, bytes);
		t = now_ns() - t;
		if (t < best)
			best = t;
	}
	printf("MEMHOG-COPY mib=%u ns=%llu check=%d\n", mib, (unsigned long long)best, b[bytes - 1]);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned mib = argc == 3 ? (unsigned)strtoul(argv[2], NULL, 10) : 0;

	if (mib && !strcmp(argv[1], "fill"))
		return fill(mib);
	if (mib && !strcmp(argv[1], "copy"))
		return copy(mib);
	fprintf(stderr, "usage: memhog fill MIB | memhog copy MIB\n");
	return 2;
}
