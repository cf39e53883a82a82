/* memhog: a checksumming workload for a virtio-mem lender guest (tests/libvirt).
 *
 *   memhog MIB [PASSES]
 *
 * Fills MIB MiB of anonymous memory with mix(word index), then verifies all of it
 * again and again (PASSES times, 0 = forever), printing after each pass:
 *
 *   MEMHOG pass=N bad=B inrange=P pages=T ms=M
 *
 * bad: words that did not hold their pattern (it is rewritten, so a later pass counts
 * only new damage); inrange: pages of the buffer whose physical address lies inside the
 * guest's virtio-mem device region (from /proc/iomem and /proc/self/pagemap; -1 when
 * that cannot be read), which shows the load sits in memory the host may take back and
 * that a shrink migrated it out. Written once "MEMHOG ready" is printed. */
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

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
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

int main(int argc, char **argv)
{
	long pagesz = sysconf(_SC_PAGESIZE);
	size_t mib, words, pages;
	long passes;
	uint64_t *buf;

	if (argc < 2 || (mib = strtoul(argv[1], NULL, 0)) == 0) {
		fprintf(stderr, "usage: memhog MIB [PASSES]\n");
		return 2;
	}
	passes = argc > 2 ? strtol(argv[2], NULL, 0) : 0;
	words = mib << 17;
	pages = (mib << 20) / pagesz;
	setvbuf(stdout, NULL, _IOLBF, 0);
	buf = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("memhog: mmap");
		return 1;
	}
	for (size_t i = 0; i < words; i++)
		buf[i] = mix(i);
	printf("MEMHOG ready mib=%zu inrange=%ld pages=%zu\n", mib, count_in_range(buf, pages, pagesz), pages);
	for (long pass = 1; passes == 0 || pass <= passes; pass++) {
		long t0 = now_ms();
		size_t bad = 0;

		for (size_t i = 0; i < words; i++) {
			if (buf[i] != mix(i)) {
				bad++;
				buf[i] = mix(i);
			}
		}
		printf("MEMHOG pass=%ld bad=%zu inrange=%ld pages=%zu ms=%ld\n", pass, bad,
		       count_in_range(buf, pages, pagesz), pages, now_ms() - t0);
	}
	return 0;
}
