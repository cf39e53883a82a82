// SPDX-License-Identifier: MIT
/*
 * tools/simvm-dirty.c: vcma-simvm's dirty log of guest RAM (async userfaultfd
 * write-protect + PAGEMAP_SCAN). Guest RAM here is built as vcma-simvm builds it: a
 * reserved range with MAP_SHARED memfd mappings laid over it with MAP_FIXED. Each case
 * writes known pages and checks that a read names exactly those, as sorted disjoint
 * runs, and that a second read names none. Skipped (77) where the kernel lacks it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "simvm-dirty.h"

#define PG 4096ull
#define FRAMES 1024ull     /* guest RAM of the fixture */
#define MACHINE (2 * FRAMES) /* machine memory: frames [FRAMES, 2 * FRAMES) are spare */

struct ram {
	int mfd;
	uint8_t *base;
	struct dlog *d;
};

/* what a read emitted */
struct got {
	uint64_t gfn[4096], count[4096];
	unsigned int n;
	uint64_t pages;
	uint8_t page[FRAMES];
	int fail_at; /* emit fails (-E2BIG) at this run, 0 = never */
};

static int emit(void *p, uint64_t gfn, uint64_t count)
{
	struct got *g = p;

	if (g->fail_at && g->n + 1 == (unsigned int)g->fail_at)
		return -E2BIG;
	assert_true(count > 0);
	assert_true(gfn + count <= FRAMES);
	/* sorted, disjoint, maximal: each run starts after the end of the previous one */
	if (g->n)
		assert_true(gfn > g->gfn[g->n - 1] + g->count[g->n - 1]);
	assert_true(g->n < 4096);
	g->gfn[g->n] = gfn;
	g->count[g->n++] = count;
	g->pages += count;
	for (uint64_t i = gfn; i < gfn + count; i++)
		g->page[i] = 1;
	return 0;
}

static int64_t read_log(struct ram *r, struct got *g)
{
	int64_t n;

	memset(g, 0, sizeof(*g));
	n = dlog_read(r->d, emit, g);
	if (n >= 0)
		assert_int_equal((uint64_t)n, g->pages);
	return n;
}

static void touch(struct ram *r, uint64_t gfn)
{
	((volatile uint8_t *)r->base)[gfn * PG + (gfn * 37) % PG] = (uint8_t)(gfn | 1);
}

static int setup(void **state)
{
	struct ram *r = calloc(1, sizeof(*r));
	char why[256];

	assert_non_null(r);
	r->mfd = memfd_create("test-dirty", MFD_CLOEXEC);
	assert_true(r->mfd >= 0);
	assert_int_equal(ftruncate(r->mfd, (off_t)(MACHINE * PG)), 0);
	r->base = mmap(NULL, 2 * FRAMES * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(r->base != MAP_FAILED);
	/* RAM in runs of 16 pages whose frames are scattered, as a p2m has them */
	for (uint64_t g = 0; g < FRAMES; g += 16) {
		uint64_t mfn = ((g / 16) * 7 % (FRAMES / 16)) * 16;

		assert_true(mmap(r->base + g * PG, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->mfd,
				 (off_t)(mfn * PG)) != MAP_FAILED);
	}
	assert_int_equal(dlog_open(&r->d, r->base, FRAMES, why, sizeof(why)), 0);
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct ram *r = *state;

	dlog_close(r->d);
	munmap(r->base, 2 * FRAMES * PG);
	close(r->mfd);
	free(r);
	return 0;
}

static void exactly_the_written_pages(void **state)
{
	struct ram *r = *state;
	static struct got g;

	assert_int_equal(dlog_track(r->d, 0, FRAMES), 0);
	assert_int_equal(dlog_ntracked(r->d), FRAMES);
	/* nothing written since the track, although most pages were never touched */
	assert_int_equal(read_log(r, &g), 0);
	touch(r, 1);
	touch(r, 2);
	touch(r, 3);
	touch(r, 15); /* 15 and 16 lie in two mappings: still one run */
	touch(r, 16);
	touch(r, 500);
	touch(r, FRAMES - 1);
	assert_int_equal(read_log(r, &g), 7);
	assert_int_equal(g.n, 4);
	assert_int_equal(g.gfn[0], 1);
	assert_int_equal(g.count[0], 3);
	assert_int_equal(g.gfn[1], 15);
	assert_int_equal(g.count[1], 2);
	assert_int_equal(g.gfn[2], 500);
	assert_int_equal(g.count[2], 1);
	assert_int_equal(g.gfn[3], FRAMES - 1);
	assert_int_equal(g.count[3], 1);
	/* read and cleared */
	assert_int_equal(read_log(r, &g), 0);
	touch(r, 2);
	touch(r, 2);
	assert_int_equal(read_log(r, &g), 1);
	assert_int_equal(g.gfn[0], 2);
	assert_int_equal(dlog_untrack(r->d, 0, FRAMES), 0);
	assert_int_equal(dlog_ntracked(r->d), 0);
}

static void only_tracked_pages(void **state)
{
	struct ram *r = *state;
	static struct got g;

	touch(r, 40); /* before the track: clean once tracked */
	assert_int_equal(dlog_track(r->d, 32, 32), 0);
	assert_int_equal(dlog_track(r->d, 100, 4), 0);
	assert_int_equal(dlog_ntracked(r->d), 36);
	assert_true(dlog_is_tracked(r->d, 32) && dlog_is_tracked(r->d, 103));
	assert_false(dlog_is_tracked(r->d, 31) || dlog_is_tracked(r->d, 64) || dlog_is_tracked(r->d, 104));
	assert_int_equal(read_log(r, &g), 0);
	touch(r, 5);
	touch(r, 31);
	touch(r, 32);
	touch(r, 63);
	touch(r, 64);
	touch(r, 101);
	touch(r, 104);
	assert_int_equal(read_log(r, &g), 3);
	assert_true(g.page[32] && g.page[63] && g.page[101]);
	/* untracked: writes are no longer reported */
	assert_int_equal(dlog_untrack(r->d, 32, 16), 0);
	assert_int_equal(dlog_ntracked(r->d), 20);
	touch(r, 33);
	touch(r, 50);
	assert_int_equal(read_log(r, &g), 1);
	assert_int_equal(g.gfn[0], 50);
	/* tracking again: clean at the track */
	assert_int_equal(dlog_track(r->d, 32, 16), 0);
	assert_int_equal(read_log(r, &g), 0);
	assert_int_equal(dlog_untrack(r->d, 0, FRAMES), 0);
}

/* More runs than one PAGEMAP_SCAN call returns (its vector holds 256): the walk goes on. */
static void many_runs(void **state)
{
	struct ram *r = *state;
	static struct got g;

	assert_int_equal(dlog_track(r->d, 0, FRAMES), 0);
	for (uint64_t i = 0; i < FRAMES; i += 2)
		touch(r, i);
	assert_int_equal(read_log(r, &g), FRAMES / 2);
	assert_int_equal(g.n, FRAMES / 2);
	for (unsigned int i = 0; i < g.n; i++) {
		assert_int_equal(g.gfn[i], 2 * i);
		assert_int_equal(g.count[i], 1);
	}
	assert_int_equal(read_log(r, &g), 0);
	/* an emit that fails stops the read with its error */
	touch(r, 10);
	touch(r, 20);
	memset(&g, 0, sizeof(g));
	g.fail_at = 2;
	assert_int_equal(dlog_read(r->d, emit, &g), -E2BIG);
	assert_int_equal(dlog_untrack(r->d, 0, FRAMES), 0);
}

/* A remap replaces a mapping: without re-registering the scan fails (EPERM); after it the
 * remapped pages read as written once (safe), then are logged as before. */
static void remap_reregisters(void **state)
{
	struct ram *r = *state;
	static struct got g;

	assert_int_equal(dlog_track(r->d, 0, 64), 0);
	assert_int_equal(read_log(r, &g), 0);
	assert_true(mmap(r->base + 7 * PG, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->mfd,
			 (off_t)((FRAMES + 7) * PG)) != MAP_FAILED);
	assert_int_equal(read_log(r, &g), -EPERM);
	assert_int_equal(dlog_reregister(r->d, 7, 2), 0);
	assert_true(dlog_is_tracked(r->d, 7) && dlog_is_tracked(r->d, 8));
	touch(r, 30);
	assert_int_equal(read_log(r, &g), 3);
	assert_true(g.page[7] && g.page[8] && g.page[30]);
	assert_int_equal(read_log(r, &g), 0);
	touch(r, 8);
	assert_int_equal(read_log(r, &g), 1);
	assert_int_equal(g.gfn[0], 8);
	/* the new frame is what the page shows */
	assert_int_equal(r->base[8 * PG + (8 * 37) % PG], 9);
	assert_int_equal(dlog_untrack(r->d, 0, 64), 0);
}

static void bad_ranges(void **state)
{
	struct ram *r = *state;

	assert_int_equal(dlog_track(r->d, 0, 0), -EINVAL);
	assert_int_equal(dlog_track(r->d, FRAMES, 1), -EINVAL);
	assert_int_equal(dlog_track(r->d, FRAMES - 1, 2), -EINVAL);
	assert_int_equal(dlog_track(r->d, 1, UINT64_MAX), -EINVAL);
	assert_int_equal(dlog_untrack(r->d, FRAMES, 1), -EINVAL);
	assert_int_equal(dlog_reregister(r->d, 0, FRAMES + 1), -EINVAL);
	assert_int_equal(dlog_ntracked(r->d), 0);
}

/*
 * Writes racing reads: a writer thread notes the reader's round, writes a random page
 * and then marks it with that round; each round the reader publishes its number, takes
 * the marks, then reads. A write that starts after round r was published comes after
 * every read before R_r, and a mark taken in round k was set after its write, so the
 * write came before R_k: some read from R_r to R_k must name the page (a write racing
 * a read's write-protect counts for the read it raced, which the copy then follows).
 * How long the writer sleeps between its write and its mark does not matter.
 */
struct racer {
	struct ram *r;
	atomic_uint round;
	atomic_uint mark[FRAMES]; /* 1 + the round a write started in, 0 = none */
	atomic_bool stop;
};

static void *writer(void *p)
{
	struct racer *x = p;
	uint64_t s = 1;

	while (!atomic_load(&x->stop)) {
		unsigned int r0 = atomic_load(&x->round);
		uint64_t g;

		s = s * 6364136223846793005ull + 1442695040888963407ull;
		g = (s >> 33) % FRAMES;
		touch(x->r, g);
		atomic_store(&x->mark[g], r0 + 1);
	}
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void writes_racing_reads(void **state)
{
	static struct racer x;
	static struct got now;
	static unsigned int taken[FRAMES];
	static int reported[FRAMES]; /* the last round whose read named the page, -1 = none */
	pthread_t t;
	uint64_t checked = 0;

	x.r = *state;
	atomic_store(&x.stop, false);
	atomic_store(&x.round, 0);
	for (uint64_t g = 0; g < FRAMES; g++) {
		atomic_store(&x.mark[g], 0);
		reported[g] = -1;
	}
	assert_int_equal(dlog_track(x.r->d, 0, FRAMES), 0);
	assert_int_equal(pthread_create(&t, NULL, writer, &x), 0);
	/* at least 300 rounds, and until 1000 marked writes were checked: on a loaded
	 * machine the writer thread may start late or get little CPU beside this loop (a
	 * fresh-machine run saw 2000 rounds pass with fewer checked), so from round 300 on
	 * each round also sleeps a little, for at most 20 s in all */
	uint64_t deadline = now_ms() + 20000;

	for (int round = 0; round < 300 || (checked < 1000 && now_ms() < deadline); round++) {
		if (round >= 300)
			usleep(200);
		atomic_store(&x.round, (unsigned int)round);
		for (uint64_t g = 0; g < FRAMES; g++)
			taken[g] = atomic_exchange(&x.mark[g], 0);
		assert_true(read_log(x.r, &now) >= 0);
		for (uint64_t g = 0; g < FRAMES; g++)
			if (now.page[g])
				reported[g] = round;
		for (uint64_t g = 0; g < FRAMES; g++) {
			if (!taken[g])
				continue;
			checked++;
			if (reported[g] < (int)taken[g] - 1)
				fail_msg("round %d: gfn %" PRIu64 " was written after round %u began and no read since named it",
					 round, (uint64_t)g, taken[g] - 1);
		}
	}
	atomic_store(&x.stop, true);
	pthread_join(t, NULL);
	assert_true(checked >= 1000);
	assert_int_equal(dlog_untrack(x.r->d, 0, FRAMES), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(exactly_the_written_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(only_tracked_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(many_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(remap_reregisters, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(writes_racing_reads, setup, teardown),
	};
	char why[256];
	int rc = dlog_probe(why, sizeof(why));

	if (rc == -EIO) { /* the kernel has it all, and our log got it wrong */
		printf("FAIL: the probe: %s\n", why);
		return 1;
	}
	if (rc) {
		printf("SKIP: dirty logging unavailable: %s\n", why);
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
