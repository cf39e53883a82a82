// SPDX-License-Identifier: MIT
/*
 * vcma-replay - replay a cockpit trace (bench/compare/cockpit.py) against a running
 * vcmad, as the trace's devices: one libvcma attachment per requester, named after
 * it with ".dev" appended (the guests' RAM is lent by vcma-simvm VMs the caller
 * started under the requesters' own names).
 *
 * Reads the trace on stdin-named file, writes one line per event on stdout:
 *   A <id> <ok 0|1> <errno name or -> <ns> <bus> <bytes>   an allocation, timed around vcma_alloc()
 *   S <label> <n> <bus:bytes>...                         a sample: the live regions; then it
 *                                                        waits for one line on stdin (the caller
 *                                                        samples vcmad meanwhile)
 *   P <done> <total>                                     progress, every 50 allocations
 *   END
 * With --floor it prints instead the copy floor: ns per MiB to copy memory page by page
 * (4 KiB memcpy, as vcmad copies) between two MAP_SHARED memfd mappings into populated
 * pages: "FLOOR <ns per MiB p50> <ns per MiB min>".
 *
 * usage: vcma-replay --socket PATH TRACE | vcma-replay --floor
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vcma.h"

#define MAX_REQ 8
#define MAX_BUF 65536
#define PAGE 4096u
#define MiB (1u << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static _Noreturn void die(const char *what, int err)
{
	fprintf(stderr, "vcma-replay: %s: %s\n", what, err ? strerror(err) : "bad input");
	exit(1);
}

static const char *errname(int e)
{
	switch (e) {
	case ENOSPC: return "ENOSPC";
	case ENOMEM: return "ENOMEM";
	case EBUSY: return "EBUSY";
	case EDQUOT: return "EDQUOT";
	case ERANGE: return "ERANGE";
	case ETIMEDOUT: return "ETIMEDOUT";
	case E2BIG: return "E2BIG";
	case ENOBUFS: return "ENOBUFS";
	default: return "EOTHER";
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int floor_run(void)
{
	enum { BYTES = 8 * MiB, REPS = 31 };
	int sfd = memfd_create("floor-src", MFD_CLOEXEC), dfd = memfd_create("floor-dst", MFD_CLOEXEC);
	uint64_t t[REPS];
	uint8_t *s, *d;

	if (sfd < 0 || dfd < 0 || ftruncate(sfd, BYTES) || ftruncate(dfd, BYTES))
		die("memfd", errno);
	s = mmap(NULL, BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, sfd, 0);
	d = mmap(NULL, BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, dfd, 0);
	if (s == MAP_FAILED || d == MAP_FAILED)
		die("mmap", errno);
	memset(s, 0x5a, BYTES);
	memset(d, 0, BYTES);
	for (int r = 0; r < REPS; r++) {
		uint64_t t0 = now_ns();

		/* scattered destination pages, as migration targets are */
		for (unsigned int p = 0; p < BYTES / PAGE; p++)
			memcpy(d + (size_t)((p * 2654435761u) % (BYTES / PAGE)) * PAGE, s + (size_t)p * PAGE, PAGE);
		t[r] = (now_ns() - t0) / (BYTES / MiB);
	}
	qsort(t, REPS, sizeof(t[0]), cmp_u64);
	printf("FLOOR %" PRIu64 " %" PRIu64 "\n", t[REPS / 2], t[0]);
	return 0;
}

struct buf {
	uint64_t handle, bus, size;
	int live;
};

static struct buf bufs[MAX_BUF];

int main(int argc, char **argv)
{
	char names[MAX_REQ][32], line[256];
	struct vcma *v[MAX_REQ];
	int nreq = 0, done = 0, total = 0;
	const char *sock = NULL, *path = NULL;
	FILE *f;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--floor"))
			return floor_run();
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			sock = argv[++i];
		else
			path = argv[i];
	}
	if (!sock || !path) {
		fprintf(stderr, "usage: vcma-replay --socket PATH TRACE | vcma-replay --floor\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	f = fopen(path, "r");
	if (!f)
		die(path, errno);
	while (fgets(line, sizeof(line), f))
		total += line[0] == 'A';
	rewind(f);
	while (fgets(line, sizeof(line), f)) {
		char req[32], phase[32], label[64];
		unsigned long id, ms;
		uint64_t bytes;
		int r = -1, rc;

		if (line[0] == 'A') {
			struct vcma_region_info ri;
			uint64_t t0;

			if (sscanf(line, "A %lu %31s %" SCNu64 " %31s", &id, req, &bytes, phase) != 4 || id >= MAX_BUF)
				die("trace line", 0);
			for (int i = 0; i < nreq; i++)
				if (!strcmp(names[i], req))
					r = i;
			if (r < 0) {
				char dev[40];

				if (nreq == MAX_REQ)
					die("too many requesters", 0);
				snprintf(dev, sizeof(dev), "%s.dev", req);
				rc = vcma_attach(sock, dev, NULL, &v[nreq]);
				if (rc)
					die("vcma_attach", -rc);
				vcma_set_timeout(v[nreq], 60000);
				snprintf(names[nreq], sizeof(names[nreq]), "%s", req);
				r = nreq++;
			}
			t0 = now_ns();
			rc = vcma_alloc(v[r], bytes, 0, 0, "main", &ri);
			t0 = now_ns() - t0;
			if (!rc)
				bufs[id] = (struct buf){ ri.handle, ri.bus, ri.size, r + 1 };
			printf("A %lu %d %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", id, !rc, rc ? errname(-rc) : "-", t0,
			       rc ? 0 : ri.bus, bytes);
			if (++done % 50 == 0)
				printf("P %d %d\n", done, total);
		} else if (line[0] == 'F') {
			if (sscanf(line, "F %lu", &id) != 1 || id >= MAX_BUF)
				die("trace line", 0);
			if (bufs[id].live) {
				rc = vcma_free(v[bufs[id].live - 1], bufs[id].handle);
				if (rc)
					die("vcma_free", -rc);
				bufs[id].live = 0;
			}
		} else if (line[0] == 'W') {
			if (sscanf(line, "W %lu", &ms) != 1)
				die("trace line", 0);
			usleep((useconds_t)ms * 1000);
		} else if (line[0] == 'S') {
			int n = 0;

			if (sscanf(line, "S %63s", label) != 1)
				die("trace line", 0);
			for (int i = 0; i < MAX_BUF; i++)
				n += bufs[i].live != 0;
			printf("S %s %d", label, n);
			for (int i = 0; i < MAX_BUF; i++)
				if (bufs[i].live)
					printf(" %" PRIu64 ":%" PRIu64, bufs[i].bus, bufs[i].size);
			printf("\n");
			if (!fgets(label, sizeof(label), stdin))
				die("the caller went away", 0);
		}
	}
	fclose(f);
	for (int i = 0; i < nreq; i++)
		vcma_detach(v[i]);
	printf("END\n");
	return 0;
}
