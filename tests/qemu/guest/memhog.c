// SPDX-License-Identifier: MIT
/*
 * memhog - a checksumming workload for a guest that lends memory (virtio-mem):
 *
 *   memhog fill MIB [PASSES]
 *                       fill MIB of anonymous memory with mix(word index), then
 *                       re-verify all of it (PASSES times, 0 or none: forever),
 *                       printing "MEMHOG filled mib=MIB inrange=P pages=T" and after
 *                       every pass "MEMHOG pass=N bad=B mib=MIB inrange=P pages=T ms=M"
 *                       (B: words that differed, rewritten so a later pass counts only
 *                       new damage; P: pages of the buffer inside the virtio-mem
 *                       device's region, from /proc/iomem and /proc/self/pagemap, -1
 *                       when unreadable: the load sits in memory the host may take
 *                       back, and an unplug migrates it out)
 *   memhog copy MIB     the copy floor: memcpy of MIB (warm), printing
 *                       "MEMHOG-COPY mib=MIB ns=NS" (best of 5)
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

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

/* The virtio-mem device's region: the top-level /proc/iomem entry named virtioN
 * (the lender guest has no other virtio device). 0 if there is none. */
static int vmem_range(uint64_t *start, uint64_t *end)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[256];
	int found = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		char name[128];

		if (line[0] == ' ')
			continue;
		if (sscanf(line, "%llx-%llx : %127[^\n]", &s, &e, name) == 3 && !strncmp(name, "virtio", 6)) {
			*start = s;
			*end = e + 1;
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

static long count_in_range(const uint64_t *buf, size_t pages, long pagesz)
{
	static uint64_t ent[4096];
	uint64_t start, end;
	long n = 0;
	int fd;

	if (!vmem_range(&start, &end))
		return 0;
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return -1;
	for (size_t p = 0; p < pages && n >= 0;) {
		size_t want = pages - p < 4096 ? pages - p : 4096;
		off_t off = (off_t)(((uintptr_t)buf / pagesz) + p) * 8;
		ssize_t got = pread(fd, ent, want * 8, off);

		if (got <= 0 || got % 8) {
			n = -1;
			break;
		}
		for (size_t i = 0; i < (size_t)got / 8; i++) {
			if (ent[i] & (1ull << 63)) {
				uint64_t pa = (ent[i] & ((1ull << 55) - 1)) * (uint64_t)pagesz;

				if (pa >= start && pa < end)
					n++;
			}
		}
		p += (size_t)got / 8;
	}
	close(fd);
	return n;
}

static int fill(unsigned mib, long passes)
{
	long pagesz = sysconf(_SC_PAGESIZE);
	size_t words = (size_t)mib << 17, pages = ((size_t)mib << 20) / (size_t)pagesz;
	uint64_t *w = map(words * 8);

	for (size_t i = 0; i < words; i++)
		w[i] = mix(i);
	printf("MEMHOG filled mib=%u inrange=%ld pages=%zu\n", mib, count_in_range(w, pages, pagesz), pages);
	fflush(stdout);
	for (long pass = 1; passes <= 0 || pass <= passes; pass++) {
		uint64_t t0 = now_ns();
		unsigned long bad = 0;

		for (size_t i = 0; i < words; i++)
			if (w[i] != mix(i)) {
				bad++;
				w[i] = mix(i);
			}
		printf("MEMHOG pass=%ld bad=%lu mib=%u inrange=%ld pages=%zu ms=%llu\n", pass, bad, mib,
		       count_in_range(w, pages, pagesz), pages, (unsigned long long)((now_ns() - t0) / 1000000));
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
	unsigned mib = argc >= 3 ? (unsigned)strtoul(argv[2], NULL, 10) : 0;

	if (mib && !strcmp(argv[1], "fill") && argc <= 4)
		return fill(mib, argc == 4 ? strtol(argv[3], NULL, 10) : 0);
	if (mib && !strcmp(argv[1], "copy") && argc == 3)
		return copy(mib);
	fprintf(stderr, "usage: memhog fill MIB [PASSES] | memhog copy MIB\n");
	return 2;
}
