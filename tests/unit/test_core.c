// SPDX-License-Identifier: MIT
/*
 * The allocation flow: pool choice and policy (minimum request, exclusive binding,
 * quota), alignment, vacating through the hook and rolling back when it fails,
 * handles, counters, the fragmentation map.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core.h"

#define MiB (1ull << 20)

static void add_pool(struct vcma_core *core, const char *name, const char *const *kv, uint64_t base,
		     uint64_t nframes)
{
	struct vcma_pool_config c;
	char err[256];

	assert_int_equal(vcma_pool_config_init(&c, name, err, sizeof(err)), 0);
	for (; kv && kv[0]; kv += 2)
		assert_int_equal(vcma_pool_config_set(&c, kv[0], kv[1], err, sizeof(err)), 0);
	assert_int_equal(vcma_pool_config_validate(&c, err, sizeof(err)), 0);
	assert_true(vcma_core_add_pool(core, &c, base, nframes) >= 0);
}

static int setup(void **state)
{
	static struct vcma_core core;
	static const char *const shared[] = { "size", "64M", "quota", "8M", NULL };
	static const char *const cam[] = { "size", "16M", "mode", "exclusive", "bind", "class:camera",
					   "max_region", "4M", NULL };

	assert_int_equal(vcma_core_init(&core), 0);
	add_pool(&core, "main", shared, 0x10000, 16384);
	add_pool(&core, "cam", cam, 0x40000, 4096);
	*state = &core;
	return 0;
}

static int teardown(void **state)
{
	vcma_core_fini(*state);
	return 0;
}

static const struct vcma_requester guest1 = { .guest = 1, .name = "ivi", .devclass = "display" };
static const struct vcma_requester guest2 = { .guest = 2, .name = "cluster", .devclass = "camera" };

static int alloc(struct vcma_core *core, const struct vcma_requester *who, uint64_t bytes, const char *pool,
		 const struct vcma_vacate_ops *ops, struct vcma_region *r)
{
	struct vcma_alloc_req req = { .bytes = bytes, .pool = pool };

	return vcma_core_alloc(core, who, &req, ops, r);
}

static void test_policy(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_region r;
	struct vcma_pool *main_pool = vcma_core_pool_by_name(core, "main");

	/* one page from a shared pool: use normal memory */
	assert_int_equal(alloc(core, &guest1, 4096, NULL, NULL, &r), -ERANGE);
	assert_int_equal(alloc(core, &guest1, 1, NULL, NULL, &r), -ERANGE);
	/* the camera class's own pool serves a single page, and is its default */
	assert_int_equal(alloc(core, &guest2, 4096, NULL, NULL, &r), 0);
	assert_int_equal(r.pool, vcma_core_pool_by_name(core, "cam")->index);
	/* but it is not someone else's */
	assert_int_equal(alloc(core, &guest1, 2 * MiB, "cam", NULL, &r), -EACCES);
	assert_int_equal(alloc(core, &guest1, 2 * MiB, "nope", NULL, &r), -ENODEV);
	assert_int_equal(alloc(core, &guest1, 0, NULL, NULL, &r), -EINVAL);
	assert_int_equal(alloc(core, &guest1, 65 * MiB, NULL, NULL, &r), -E2BIG);
	/* larger than the pool's max_region, though it would fit */
	assert_int_equal(alloc(core, &guest2, 4 * MiB + 4096, "cam", NULL, &r), -E2BIG);
	/* quota 8M per guest in main */
	assert_int_equal(alloc(core, &guest1, 6 * MiB, NULL, NULL, &r), 0);
	assert_int_equal(alloc(core, &guest1, 4 * MiB, NULL, NULL, &r), -EDQUOT);
	assert_int_equal(alloc(core, &guest1, 2 * MiB, NULL, NULL, &r), 0);
	assert_int_equal(vcma_pool_usage(main_pool, 1)->bytes, 8 * MiB);
	assert_int_equal(vcma_pool_usage(main_pool, 1)->regions, 2);
	/* failures were counted; 4 failed requests in main */
	assert_int_equal(main_pool->stats.alloc_success, 2);
	assert_int_equal(main_pool->stats.alloc_fail, 5);
	assert_int_equal(main_pool->stats.alloc_pages_success, 2048);
	assert_int_equal(main_pool->stats.alloc_latency.count, 2);
	assert_string_equal(vcma_core_strerror(-ERANGE), "request below the pool's minimum: use normal memory");
}

static void test_alignment(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct vcma_alloc_req req = { .bytes = 12 * 4096 };
	struct vcma_region r;

	/* natural order of 3 frames is 2; of 4096 frames is 12, capped at 8 */
	assert_int_equal(vcma_pool_align_order(p, 3, 0), 2);
	assert_int_equal(vcma_pool_align_order(p, 4096, 0), 8);
	assert_int_equal(vcma_pool_align_order(p, 1, 0), 0);
	/* an explicit order is honoured above the cap */
	assert_int_equal(vcma_pool_align_order(p, 4096, 12), 12);
	/* a blocker at frame 0 pushes a 12-frame request to the next 16-frame boundary */
	assert_int_equal(vcma_fmap_reserve(&p->fm, 0, 1), 0);
	assert_int_equal(vcma_core_alloc(core, &guest1, &req, NULL, &r), 0);
	assert_int_equal(r.mfn % 16, 0);
	assert_int_equal(r.mfn, 0x10000 + 16);
	req.bytes = 8 * 4096;
	req.align_order = 10;
	assert_int_equal(vcma_core_alloc(core, &guest1, &req, NULL, &r), 0);
	assert_int_equal(r.mfn % 1024, 0);
	req.align_order = VCMA_FMAP_MAX_ORDER + 1;
	assert_int_equal(vcma_core_alloc(core, &guest1, &req, NULL, &r), -EINVAL);
}

struct hook {
	int calls;
	size_t seen;
	size_t stop_after; /* unlend this many, then fail */
	int fail_rc;
	int lie;           /* return 0 without unlending */
};

static int vacate(void *ctx, struct vcma_pool *pool, const struct vcma_vacate_item *items, size_t n)
{
	struct hook *h = ctx;

	h->calls++;
	h->seen = n;
	if (h->lie)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (i == h->stop_after)
			return h->fail_rc;
		assert_int_equal(vcma_pool_unlend(pool, items[i].idx), 0);
	}
	return 0;
}

static void lend_everything(struct vcma_pool *p)
{
	for (uint64_t i = 0; i < p->fm.nframes; i++)
		assert_int_equal(vcma_pool_lend(p, i, 5, 1000 + i, i % 3 == 0), 0);
}

static void test_vacate_success(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct hook h = { .stop_after = SIZE_MAX };
	struct vcma_vacate_ops ops = { vacate, &h };
	struct vcma_region r;
	struct vcma_pool_counts c;

	lend_everything(p);
	assert_int_equal(alloc(core, &guest1, 1 * MiB, NULL, NULL, &r), -EBUSY);
	assert_int_equal(p->fm.nclaimed, 0);
	assert_int_equal(alloc(core, &guest1, 1 * MiB, NULL, &ops, &r), 0);
	assert_int_equal(h.calls, 1);
	assert_int_equal(h.seen, 256);
	vcma_pool_counts(p, &c);
	assert_int_equal(c.region, 256);
	assert_int_equal(c.lent_free + c.lent_used, 16384 - 256);
	assert_int_equal(c.claimed, 0);
	assert_int_equal(p->stats.vacated_lent_free + p->stats.vacated_lent_used, 256);
	assert_int_equal(vcma_fmap_check(&p->fm), 0);
}

static void test_vacate_failure_rolls_back(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct hook h = { .stop_after = 100, .fail_rc = -ETIMEDOUT };
	struct vcma_vacate_ops ops = { vacate, &h };
	struct vcma_region r;
	struct vcma_pool_counts c;
	uint64_t fails = p->stats.alloc_fail;

	lend_everything(p);
	assert_int_equal(alloc(core, &guest1, 2 * MiB, NULL, &ops, &r), -ETIMEDOUT);
	vcma_pool_counts(p, &c);
	/* the 100 frames moved stay FREE, the rest stay lent, nothing is claimed */
	assert_int_equal(c.free, 100);
	assert_int_equal(c.lent_free + c.lent_used, 16384 - 100);
	assert_int_equal(c.claimed, 0);
	assert_int_equal(c.region, 0);
	assert_int_equal(p->stats.alloc_fail, fails + 1);
	assert_int_equal(p->stats.alloc_pages_fail, 512);
	/* a hook that claims success without vacating is caught */
	h.lie = 1;
	assert_int_equal(alloc(core, &guest1, 2 * MiB, NULL, &ops, &r), -EIO);
	assert_int_equal(p->fm.nclaimed, 0);
	assert_int_equal(vcma_fmap_check(&p->fm), 0);
}

static void test_free_and_release(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct vcma_region a, b, c;
	struct vcma_pool_counts cnt;

	assert_int_equal(alloc(core, &guest1, 1 * MiB, NULL, NULL, &a), 0);
	assert_int_equal(alloc(core, &guest1, 2 * MiB, NULL, NULL, &b), 0);
	assert_int_equal(alloc(core, &guest2, 2 * MiB, "main", NULL, &c), 0);
	assert_non_null(vcma_core_lookup(core, 1, a.handle));
	assert_null(vcma_core_lookup(core, 2, a.handle));
	assert_int_equal(vcma_core_free(core, 2, a.handle), -ENOENT); /* foreign */
	assert_int_equal(vcma_core_free(core, 1, a.handle), 0);
	assert_int_equal(vcma_core_free(core, 1, a.handle), -ENOENT); /* stale */
	assert_int_equal(vcma_core_free(core, 1, 0xdeadbeefdeadbeefull), -ENOENT);
	assert_int_equal(p->stats.release_pages_success, 256);
	assert_int_equal(vcma_core_release_guest(core, 1), 1);
	assert_null(vcma_core_lookup(core, 1, b.handle));
	assert_non_null(vcma_core_lookup(core, 2, c.handle));
	assert_null(vcma_pool_usage(p, 1));
	vcma_pool_counts(p, &cnt);
	assert_int_equal(cnt.region, 512);
	assert_int_equal(cnt.regions, 1);
	assert_int_equal(vcma_fmap_check(&p->fm), 0);
}

static void test_fragmap(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct vcma_region r;
	char map[80];

	assert_int_equal(alloc(core, &guest1, 1 * MiB, NULL, NULL, &r), 0);
	assert_int_equal(vcma_pool_lend(p, 256 + 5, 3, 1, false), 0);
	for (uint64_t i = 512; i < 768; i++)
		assert_int_equal(vcma_pool_lend(p, i, 3, i, true), 0);
	assert_int_equal(vcma_fmap_reserve(&p->fm, 1024 + 7, 1), 0);
	/* 16384 frames, 256 per character: 64 characters */
	assert_int_equal(vcma_pool_fragmap(p, 256, map, sizeof(map)), 64);
	assert_int_equal(strncmp(map, "#lL.x...", 8), 0);
	assert_int_equal(strspn(map + 5, "."), 59);
	/* truncated to the buffer */
	assert_int_equal(vcma_pool_fragmap(p, 256, map, 3), 2);
	assert_string_equal(map, "#l");
	/* a non-lendable pool refuses to lend */
	assert_int_equal(vcma_pool_lend(vcma_core_pool_by_name(core, "cam"), 0, 1, 1, false), -EPERM);
}

/* The stepwise flow: two plans in one pool at once get disjoint windows; finish
 * refuses while a frame is lent; abort keeps what was vacated. */
static void test_plans_side_by_side(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct vcma_alloc_req req = { .bytes = 1 * MiB };
	struct vcma_alloc_plan a, b;
	struct vcma_vacate_item it[256];
	struct vcma_region r;
	int64_t n;

	lend_everything(p);
	assert_int_equal(vcma_core_alloc_begin(core, &guest1, &req, &a), 0);
	assert_int_equal(vcma_core_alloc_begin(core, &guest2, &(struct vcma_alloc_req){ .bytes = 1 * MiB, .pool = "main" },
					       &b), 0);
	assert_true(a.w.start + a.w.count <= b.w.start || b.w.start + b.w.count <= a.w.start);
	assert_int_equal(a.w.nlent_free + a.w.nlent_used, 256);
	assert_int_equal(p->fm.nclaimed, 512);
	assert_int_equal(vcma_core_alloc_finish(core, &a, &r), -EBUSY);
	n = vcma_fmap_collect_lent(&p->fm, a.w.start, a.w.count, it, 256);
	assert_int_equal(n, 256);
	for (int64_t i = 0; i < n; i++)
		assert_int_equal(vcma_pool_unlend(p, it[i].idx), 0);
	assert_int_equal(vcma_core_alloc_finish(core, &a, &r), 0);
	assert_int_equal(r.mfn, p->fm.base + a.w.start);
	assert_null(a.pool);
	/* b gives up after vacating 10 frames: those stay FREE, nothing stays claimed */
	n = vcma_fmap_collect_lent(&p->fm, b.w.start, b.w.count, it, 256);
	for (int64_t i = 0; i < 10; i++)
		assert_int_equal(vcma_pool_unlend(p, it[i].idx), 0);
	vcma_core_alloc_abort(core, &b);
	assert_int_equal(p->fm.nclaimed, 0);
	assert_int_equal(p->fm.count[VCMA_FRAME_FREE], 10);
	assert_int_equal(p->stats.alloc_success, 1);
	assert_int_equal(p->stats.alloc_fail, 1);
	assert_int_equal(vcma_fmap_check(&p->fm), 0);
}

/* The quota counts what is promised: plans begun and not finished hold their bytes,
 * so a batch of allocations that all wait for a vacate cannot pass it together. */
static void test_quota_counts_promises(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct vcma_alloc_req req = { .bytes = 2 * MiB };
	struct vcma_alloc_plan plan[5];
	struct vcma_region r, mine;

	/* quota 8M: four 2 MiB plans in flight fill it, the fifth is refused */
	for (int i = 0; i < 4; i++)
		assert_int_equal(vcma_core_alloc_begin(core, &guest1, &req, &plan[i]), 0);
	assert_int_equal(vcma_core_alloc_begin(core, &guest1, &req, &plan[4]), -EDQUOT);
	assert_int_equal(vcma_pool_usage(p, 1)->promised, 8 * MiB);
	assert_int_equal(vcma_pool_usage(p, 1)->pending, 4);
	assert_int_equal(vcma_pool_usage(p, 1)->bytes, 0);
	/* another guest's quota is its own */
	assert_int_equal(alloc(core, &guest2, 2 * MiB, "main", NULL, &r), 0);
	/* finish turns a promise into a region; abort gives one back */
	assert_int_equal(vcma_core_alloc_finish(core, &plan[0], &mine), 0);
	assert_int_equal(vcma_pool_usage(p, 1)->bytes, 2 * MiB);
	assert_int_equal(vcma_pool_usage(p, 1)->promised, 6 * MiB);
	vcma_core_alloc_abort(core, &plan[1]);
	assert_int_equal(vcma_pool_usage(p, 1)->promised, 4 * MiB);
	assert_int_equal(vcma_core_alloc_begin(core, &guest1, &req, &plan[1]), 0);
	assert_int_equal(vcma_core_alloc_begin(core, &guest1, &req, &plan[4]), -EDQUOT);
	for (int i = 1; i < 4; i++)
		vcma_core_alloc_abort(core, &plan[i]);
	assert_int_equal(vcma_pool_usage(p, 1)->promised, 0);
	assert_int_equal(vcma_pool_usage(p, 1)->pending, 0);
	/* with its region freed and nothing promised, the guest has no usage entry */
	assert_int_equal(vcma_core_free(core, 1, mine.handle), 0);
	assert_null(vcma_pool_usage(p, 1));
}

/* A region recorded before a restart comes back under its handle and frames, counts
 * against its guest's quota, and frees like any other; frames not free, or outside
 * the pool, are refused with nothing changed. */
static void test_restore_region(void **state)
{
	struct vcma_core *core = *state;
	struct vcma_pool *p = vcma_core_pool_by_name(core, "main");
	struct vcma_region r = { .handle = (uint64_t)5 << 32 | 2, .guest = 1, .pool = p->index,
				 .mfn = p->fm.base + 1024, .nframes = 512 };
	struct vcma_region clash = r, out = r, fresh;
	struct vcma_pool_counts cnt;

	assert_int_equal(vcma_core_restore_region(core, &r), 0);
	assert_non_null(vcma_core_lookup(core, 1, r.handle));
	assert_int_equal(vcma_core_lookup(core, 1, r.handle)->mfn, p->fm.base + 1024);
	assert_int_equal(vcma_pool_usage(p, 1)->bytes, 2 * MiB);
	assert_int_equal(vcma_pool_usage(p, 1)->regions, 1);
	/* overlapping frames, another handle: refused, nothing changed */
	clash.handle = (uint64_t)1 << 32 | 9;
	clash.mfn += 256;
	assert_int_equal(vcma_core_restore_region(core, &clash), -EEXIST);
	out.handle = (uint64_t)1 << 32 | 10;
	out.mfn = p->fm.base + p->fm.nframes - 10; /* runs past the pool */
	assert_int_equal(vcma_core_restore_region(core, &out), -ERANGE);
	vcma_pool_counts(p, &cnt);
	assert_int_equal(cnt.region, 512);
	assert_int_equal(cnt.regions, 1);
	assert_int_equal(vcma_fmap_check(&p->fm), 0);
	/* the quota (8M) counts it: 6M more fit, 7M do not */
	assert_int_equal(alloc(core, &guest1, 7 * MiB, "main", NULL, &fresh), -EDQUOT);
	assert_int_equal(alloc(core, &guest1, 6 * MiB, "main", NULL, &fresh), 0);
	assert_true((fresh.handle >> 32) > 5); /* no handle from before the restart again */
	assert_int_equal(vcma_core_free(core, 1, r.handle), 0);
	assert_null(vcma_core_lookup(core, 1, r.handle));
	assert_int_equal(vcma_fmap_check(&p->fm), 0);
}

static void test_bad_pools(void **unused)
{
	struct vcma_core core;
	struct vcma_pool_config c;

	assert_int_equal(vcma_core_init(&core), 0);
	assert_int_equal(vcma_pool_config_init(&c, "x", NULL, 0), 0);
	assert_int_equal(vcma_core_add_pool(&core, &c, 0, 100), -EINVAL); /* no size */
	assert_int_equal(vcma_pool_config_set(&c, "size", "1M", NULL, 0), 0);
	assert_int_equal(vcma_core_add_pool(&core, &c, 0, 256), 0);
	assert_int_equal(vcma_core_add_pool(&core, &c, 256, 256), -EEXIST);
	vcma_core_fini(&core);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alignment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vacate_success, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vacate_failure_rolls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_and_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fragmap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plans_side_by_side, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_counts_promises, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_region, setup, teardown),
		cmocka_unit_test(test_bad_pools),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
