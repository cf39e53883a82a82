// SPDX-License-Identifier: MIT
/*
 * hold_regions - a libvcma guest that allocates regions and holds them until told to
 * let go, for tests and benchmarks that kill guests (test_reclaim.py,
 * bench/bench-reclaim.py).
 *
 *   hold_regions SOCKET NAME POOL SIZE COUNT
 *
 * Attaches as NAME, allocates COUNT regions of SIZE bytes (K/M suffix) from POOL and
 * prints "region HANDLE SIZE" for each, then "ready", flushed. Then it reads stdin:
 * "free" (or EOF) frees every region it holds with an awaited FREE, detaches and exits
 * 0 if every FREE succeeded, else 1. Exit 99: it could not attach or allocate.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vcma.h"

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	if (*end == 'K' || *end == 'k') {
		v <<= 10;
		end++;
	} else if (*end == 'M' || *end == 'm') {
		v <<= 20;
		end++;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	struct vcma *v = NULL;
	uint64_t size, count, *handles;
	char line[64];
	int rc, failed = 0;

	if (argc != 6 || parse_size(argv[4], &size) || parse_size(argv[5], &count) || !size || !count ||
	    count > 65536) {
		fprintf(stderr, "usage: hold_regions SOCKET NAME POOL SIZE COUNT\n");
		return 99;
	}
	handles = calloc(count, sizeof(*handles));
	if (!handles) {
		fprintf(stderr, "hold_regions: out of memory\n");
		return 99;
	}
	rc = vcma_attach(argv[1], argv[2], NULL, &v);
	if (rc) {
		fprintf(stderr, "hold_regions: attach %s: %s\n", argv[2], vcma_strerror(rc));
		return 99;
	}
	for (uint64_t i = 0; i < count; i++) {
		struct vcma_region_info r;

		rc = vcma_alloc(v, size, 0, 0, argv[3], &r);
		if (rc) {
			fprintf(stderr, "hold_regions: %s: region %" PRIu64 " of %" PRIu64 " bytes: %s\n", argv[2], i,
				size, vcma_strerror(rc));
			return 99;
		}
		handles[i] = r.handle;
		printf("region %#" PRIx64 " %" PRIu64 "\n", r.handle, r.size);
	}
	printf("ready\n");
	if (fflush(stdout))
		return 99;
	while (fgets(line, sizeof(line), stdin) && strcmp(line, "free\n"))
		;
	for (uint64_t i = 0; i < count; i++) {
		rc = vcma_free_sync(v, handles[i]);
		if (rc) {
			fprintf(stderr, "hold_regions: %s: free %#" PRIx64 ": %s\n", argv[2], handles[i], vcma_strerror(rc));
			failed = 1;
		}
	}
	vcma_detach(v);
	free(handles);
	return failed;
}
