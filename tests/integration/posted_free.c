// SPDX-License-Identifier: MIT
/*
 * posted_free - libvcma's posted FREEs (vcma_free) against a real vcmad.
 *
 * Run by test_posted_free.py with vcmad's socket; the pools are sized for it:
 *   tight  4 MiB: one 4 MiB region at a time, so every ALLOC needs the memory the FREE
 *          posted just before it gave back (ring order, PROTOCOL.md §5.4)
 *   many  64 MiB: 200 small regions freed back to back through an 8-slot ring
 * With a mode after the socket, one part of PROTOCOL.md §4.9 (FREEs published without a
 * kick while the host's req_poll is open):
 *   pingpong   two guests take turns at the whole of pool tight, each ALLOC right after
 *              the other guest's posted FREE: vcmad takes that FREE first
 *   pairs N    N alloc+free pairs on pool many, then "done" on stdout; detaches when
 *              stdin closes (the test reads vcmad's kick count meanwhile)
 *   linger     one region of tight allocated and posted free, "freed" on stdout, then
 *              nothing until stdin closes: only the window's end can take that FREE
 * Exits 0 pass, 1 fail, 99 setup error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vcma.h"

#define MiB (1ull << 20)
#define NMANY 200

static int failures;

#define CHECK(cond, ...)                                                                          \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			fprintf(stderr, "posted_free: %s:%d: ", __FILE__, __LINE__);              \
			fprintf(stderr, __VA_ARGS__);                                             \
			fputc('\n', stderr);                                                      \
			failures++;                                                               \
		}                                                                                 \
	} while (0)

static struct vcma *attach(const char *sock, const char *name)
{
	struct vcma *v = NULL;
	int rc = vcma_attach(sock, name, NULL, &v);

	if (rc) {
		fprintf(stderr, "posted_free: attach %s: %s\n", name, vcma_strerror(rc));
		exit(99);
	}
	return v;
}

static uint64_t allocatable(struct vcma *v, const char *pool, uint64_t *mine)
{
	struct vcma_pool_info pi;
	int rc = vcma_query_pool(v, pool, &pi);

	CHECK(rc == 0, "query %s: %s", pool, vcma_strerror(rc));
	if (mine)
		*mine = pi.mine;
	return pi.allocatable;
}

/* A FREE posted, then an ALLOC that needs that very memory: it always succeeds. */
static void order(struct vcma *v)
{
	struct vcma_region_info r;
	int rc;

	for (int i = 0; i < 500; i++) {
		rc = vcma_alloc(v, 4 * MiB, 0, 0, "tight", &r);
		CHECK(rc == 0, "alloc %d after a posted free: %s", i, vcma_strerror(rc));
		if (rc)
			return;
		rc = vcma_free(v, r.handle);
		CHECK(rc == 0, "free %d: %s", i, vcma_strerror(rc));
	}
	/* a query is a later request too: it sees the pool whole */
	CHECK(allocatable(v, "tight", NULL) == 4 * MiB, "tight is not whole after the last posted free");
	rc = vcma_flush(v, NULL);
	CHECK(rc == 0, "flush: %s", vcma_strerror(rc));
}

/* The caller's mistakes come back at once; a clean run has nothing for vcma_flush(). */
static void errors(struct vcma *v, struct vcma *other)
{
	struct vcma_region_info r;
	uint64_t h = 1;
	int rc;

	CHECK(vcma_free(v, 0xdead0000beefull) == -ENOENT, "a stray handle is not -ENOENT at once");
	rc = vcma_alloc(v, 4 * MiB, 0, 0, "tight", &r);
	CHECK(rc == 0, "alloc: %s", vcma_strerror(rc));
	/* another guest's handle: not held by that attachment, so sent and refused */
	CHECK(vcma_free(other, r.handle) == -ENOENT, "another guest freed my region");
	CHECK(vcma_free(v, r.handle) == 0, "posted free");
	CHECK(vcma_free(v, r.handle) == -ENOENT, "a double free is not -ENOENT at once");
	CHECK(vcma_free_sync(v, r.handle) == -ENOENT, "free_sync of a freed region");
	rc = vcma_flush(v, &h);
	CHECK(rc == 0 && h == 0, "flush after a clean posted free: %s", vcma_strerror(rc));
	rc = vcma_alloc(v, 4 * MiB, 0, 0, "tight", &r);
	CHECK(rc == 0, "alloc: %s", vcma_strerror(rc));
	CHECK(vcma_free_sync(v, r.handle) == 0, "free_sync");
}

/* 200 frees back to back through an 8-slot ring: each waits for room, none overflows. */
static void ring_full(struct vcma *v)
{
	static struct vcma_region_info r[NMANY];
	uint64_t mine = 1;
	int rc, n = 0;

	for (; n < NMANY; n++) {
		rc = vcma_alloc(v, 64 << 10, 0, 0, "many", &r[n]);
		CHECK(rc == 0, "alloc %d: %s", n, vcma_strerror(rc));
		if (rc)
			break;
	}
	for (int i = 0; i < n; i++) {
		rc = vcma_free(v, r[i].handle);
		CHECK(rc == 0, "free %d: %s", i, vcma_strerror(rc));
	}
	rc = vcma_flush(v, NULL);
	CHECK(rc == 0, "flush: %s", vcma_strerror(rc));
	CHECK(allocatable(v, "many", &mine) == 64 * MiB && mine == 0, "many is not whole after %d posted frees", n);
}

/* vcma_detach() returns after every FREE, posted or its own, was answered. */
static void detach(const char *sock, struct vcma *watcher)
{
	struct vcma *v = attach(sock, "posted-detach");
	struct vcma_region_info r[3];
	uint64_t left;
	int rc;

	for (int i = 0; i < 3; i++) {
		rc = vcma_alloc(v, 8 * MiB, 0, 0, "many", &r[i]);
		CHECK(rc == 0, "alloc: %s", vcma_strerror(rc));
	}
	CHECK(vcma_free(v, r[0].handle) == 0, "posted free");
	/* another guest may or may not see the posted one back yet (vcma.h) */
	left = allocatable(watcher, "many", NULL);
	CHECK(left == 40 * MiB || left == 48 * MiB, "many has %llu MiB allocatable while 16-24 MiB are held",
	      (unsigned long long)(left / MiB));
	vcma_detach(v);
	CHECK(allocatable(watcher, "many", NULL) == 64 * MiB, "detach returned before its frees were taken");
}

/* Each ALLOC needs the whole pool, which the other guest's posted FREE just gave back. */
static void pingpong(struct vcma *a, struct vcma *b)
{
	struct vcma *g[2] = { a, b };
	struct vcma_region_info r;
	int rc;

	for (int i = 0; i < 400; i++) {
		rc = vcma_alloc(g[i & 1], 4 * MiB, 0, 0, "tight", &r);
		CHECK(rc == 0, "alloc %d right after the other guest's posted free: %s", i, vcma_strerror(rc));
		if (rc)
			return;
		rc = vcma_free(g[i & 1], r.handle);
		CHECK(rc == 0, "free %d: %s", i, vcma_strerror(rc));
	}
	CHECK(vcma_flush(a, NULL) == 0 && vcma_flush(b, NULL) == 0, "flush");
}

static void pairs(struct vcma *v, int n)
{
	struct vcma_region_info r;
	int rc;

	for (int i = 0; i < n; i++) {
		rc = vcma_alloc(v, MiB, 0, 0, "many", &r);
		CHECK(rc == 0, "alloc %d: %s", i, vcma_strerror(rc));
		if (rc)
			return;
		rc = vcma_free(v, r.handle);
		CHECK(rc == 0, "free %d: %s", i, vcma_strerror(rc));
	}
	CHECK(vcma_flush(v, NULL) == 0, "flush");
}

static void wait_stdin(void)
{
	char c;

	while (read(0, &c, 1) > 0)
		;
}

static int mode(const char *sock, int argc, char **argv)
{
	struct vcma *a = attach(sock, "lazy-a"), *b;
	struct vcma_region_info r;
	int rc;

	if (!strcmp(argv[2], "pingpong")) {
		b = attach(sock, "lazy-b");
		pingpong(a, b);
		vcma_detach(b);
	} else if (!strcmp(argv[2], "pairs") && argc == 4) {
		pairs(a, atoi(argv[3]));
		printf("done\n");
		fflush(stdout);
		wait_stdin();
	} else if (!strcmp(argv[2], "linger")) {
		rc = vcma_alloc(a, 4 * MiB, 0, 0, "tight", &r);
		CHECK(rc == 0, "alloc: %s", vcma_strerror(rc));
		CHECK(rc || vcma_free(a, r.handle) == 0, "posted free");
		printf("freed\n");
		fflush(stdout);
		wait_stdin();
	} else {
		fprintf(stderr, "posted_free: unknown mode %s\n", argv[2]);
		return 99;
	}
	vcma_detach(a);
	if (failures)
		fprintf(stderr, "posted_free: %d check(s) failed\n", failures);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct vcma *a, *b;

	if (argc > 2)
		return mode(argv[1], argc, argv);
	if (argc != 2) {
		fprintf(stderr, "usage: posted_free SOCKET [pingpong | pairs N | linger]\n");
		return 99;
	}
	a = attach(argv[1], "posted-a");
	b = attach(argv[1], "posted-b");
	order(a);
	errors(a, b);
	ring_full(a);
	detach(argv[1], b);
	vcma_detach(a);
	vcma_detach(b);
	if (failures)
		fprintf(stderr, "posted_free: %d check(s) failed\n", failures);
	return failures ? 1 : 0;
}
