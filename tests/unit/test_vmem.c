// SPDX-License-Identifier: MIT
/*
 * The virtio-mem lender's accounting (vmem.c) under vcmad's loop, in-process, on a
 * fake backend and a stepped clock, with a fake driver the test answers by hand:
 * what vmem asks the device for, and what the device reports back.
 *
 * Cases: lend then take back in full; a take-back that ends short at its deadline
 * (partial progress, the rest stays lent, the requested size restored); the driver
 * lost mid-take-back, then back after a QEMU restart; the lender removed at run time
 * with a take-back in flight; a driver that is never up gets nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "alloc.h"
#include "balloon.h"
#include "daemon.h"
#include "fake_machine.h"
#include "log.h"
#include "vmem.h"

#define MiB (1ull << 20)
#define PAGE 4096ull

static const struct vcmad_backend_type fake_backend = { .name = "fake", .mem = &fake_mem_ops };

/* ---- the fake driver: what vmem asked for ---- */

struct fake_drv {
	uint64_t asked[64]; /* every set_requested, in order */
	uint32_t nasked;
	bool closed;
	int fail; /* set_requested answers this */
};

static int fd_set_requested(void *drv, uint64_t bytes)
{
	struct fake_drv *f = drv;

	if (f->fail)
		return f->fail;
	assert_true(f->nasked < 64);
	f->asked[f->nasked++] = bytes;
	return 0;
}

static void fd_close(void *drv)
{
	((struct fake_drv *)drv)->closed = true;
}

static const struct vcmad_vmem_driver_ops fake_drv_ops = { .set_requested = fd_set_requested, .close = fd_close };

static uint64_t last_asked(const struct fake_drv *f)
{
	assert_true(f->nasked > 0);
	return f->asked[f->nasked - 1];
}

/* ---- a requester ---- */

struct fake_rq {
	struct vcmad_requester rq;
	bool got;
	int err;
};

static int rq_take(struct vcmad_requester *rq, struct vcma_region *r)
{
	r->gpa = r->mfn << 12;
	return 0;
}

static void rq_answer(struct vcmad_requester *rq, uint64_t tag, int err, const struct vcma_region *r)
{
	struct fake_rq *f = (struct fake_rq *)rq;

	assert_false(f->got); /* one answer */
	f->got = true;
	f->err = err;
}

static void rq_release(struct vcmad_requester *rq, const struct vcma_region *r)
{
}

static const struct vcmad_requester_ops fake_rq_ops = { .take = rq_take, .answer = rq_answer, .release = rq_release };

/* ---- the daemon ---- */

static struct vcmad d;
static char dir[64];
static struct fake_drv drv;
static struct vcmad_vmem *vm;
static struct fake_rq g;

static void turn(void)
{
	assert_true(vcmad_run_once(&d, 0) >= 0);
}

static void advance_ms(uint64_t ms)
{
	fake_now_ns += ms * 1000000ull;
	turn();
}

static struct vcma_pool *pool(void)
{
	return d.core.pool[0];
}

static struct vcmad_lender *lender(void)
{
	return vcmad_lender_find(&d, "ivi");
}

/* A 16 MiB lendable pool, a lender "ivi" with lend_max 8M and a 1 s deadline, up
 * (its device reports 0 plugged): after relend_idle_ms it is lent 8 MiB. */
static void start(void)
{
	static const char *const text = "[daemon]\nrelend_idle_ms = 50\nshutdown_grace_ms = 0\n[machine]\n"
					"memory = 64M\n[pool main]\nsize = 16M\nlendable = yes\n";
	struct vcmad_guest_conf gc = { .name = "ivi", .kind = VCMAD_GUEST_QEMU, .lender = VCMAD_LENDER_VMEM,
				       .lend_max = 8 * MiB, .reclaim_timeout_ms = 1000 };
	struct vcmad_conf c;
	char err[256];

	snprintf(dir, sizeof(dir), "/tmp/vcma-vmem-XXXXXX");
	assert_non_null(mkdtemp(dir));
	vcmad_conf_defaults(&c);
	assert_int_equal(vcmad_conf_parse(&c, text, "test.conf", err, sizeof(err)), 0);
	snprintf(c.runtime_dir, sizeof(c.runtime_dir), "%s/run", dir);
	snprintf(c.state_dir, sizeof(c.state_dir), "none"); /* answers at once, not after a commit */
	assert_int_equal(vcmad_init_backend(&d, &c, &fake_backend), 0);
	d.loop.clock = fake_clock;
	assert_int_equal(vcmad_start(&d), 0);
	memset(&drv, 0, sizeof(drv));
	memset(&g, 0, sizeof(g));
	vcmad_requester_init(&g.rq, &d, &fake_rq_ops, 7, "guest", NULL);
	assert_int_equal(vcmad_vmem_lender_add(&d, &gc, &fake_drv_ops, &drv, &vm), 0);
	assert_int_equal(vcmad_vmem_lender_add(&d, &gc, &fake_drv_ops, &drv, &vm), -EEXIST);
	turn();
	assert_int_equal(lender()->lent, 0); /* not up: nothing lent */
	vcmad_vmem_report(vm, 0, 0, 256 * MiB, 2 * MiB);
	assert_int_equal(last_asked(&drv), 0); /* the first report is answered with what is lent */
	fake_zeroed_frames = 0;
	advance_ms(60);
	assert_int_equal(lender()->lent, 2048);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 2048);
	assert_int_equal(fake_zeroed_frames, 2048); /* its host memory was released */
	assert_int_equal(last_asked(&drv), 8 * MiB);
	vcmad_vmem_report(vm, 8 * MiB, 8 * MiB, 256 * MiB, 2 * MiB); /* the guest plugged it */
}

static void stop(void)
{
	char cmd[128];

	vcmad_fini(&d);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* The whole pool: its top 8 MiB are the lender's. */
static void alloc_all(void)
{
	struct vcma_alloc_req req = { .bytes = 16 * MiB };

	assert_int_equal(vcmad_alloc(&g.rq, 1, &req), VCMAD_ALLOC_WAITING);
	turn();
}

/* ---- cases ---- */

static void test_take_back_full(void **unused)
{
	start();
	alloc_all();
	assert_int_equal(last_asked(&drv), 0); /* requested size lowered by what is asked */
	vcmad_vmem_report(vm, 8 * MiB, 0, 256 * MiB, 2 * MiB); /* asked, not unplugged yet */
	advance_ms(100);
	vcmad_vmem_report(vm, 4 * MiB, 0, 256 * MiB, 2 * MiB);
	assert_false(g.got);
	advance_ms(100);
	vcmad_vmem_report(vm, 0, 0, 256 * MiB, 2 * MiB);
	assert_true(g.got);
	assert_int_equal(g.err, 0);
	assert_int_equal(lender()->lent, 0);
	assert_int_equal(lender()->st.asked, 2048);
	assert_int_equal(lender()->st.came_back, 2048);
	assert_int_equal(lender()->st.reclaims, 1);
	assert_int_equal(lender()->st.reclaims_short, 0);
	assert_int_equal(lender()->st.reclaim_ns_max, 200 * 1000000ull);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_REGION], 4096);
	stop();
}

/* Half comes back by the deadline: BUSY, the half stays lent and the device is
 * asked for it again. */
static void test_take_back_short(void **unused)
{
	start();
	alloc_all();
	vcmad_vmem_report(vm, 4 * MiB, 0, 256 * MiB, 2 * MiB);
	advance_ms(999);
	assert_false(g.got);
	advance_ms(2);
	assert_true(g.got);
	assert_int_equal(g.err, -EBUSY);
	assert_int_equal(lender()->lent, 1024);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 1024);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_FREE], 3072);
	assert_int_equal(last_asked(&drv), 4 * MiB); /* restored to what stays lent */
	assert_int_equal(lender()->st.asked, 2048);
	assert_int_equal(lender()->st.came_back, 1024);
	assert_int_equal(lender()->st.reclaims_short, 1);
	assert_int_equal(d.balloon.reclaims_short, 1);
	stop();
}

/* A take-back cannot complete on a stale report: the device must have seen the
 * lower requested size. */
static void test_needs_requested_seen(void **unused)
{
	start();
	vcmad_vmem_report(vm, 0, 8 * MiB, 256 * MiB, 2 * MiB); /* plug not done yet */
	alloc_all();
	assert_false(g.got); /* requested still 8M: the guest could still plug */
	vcmad_vmem_report(vm, 0, 0, 256 * MiB, 2 * MiB);
	assert_true(g.got);
	assert_int_equal(g.err, 0);
	stop();
}

/* The driver is lost mid-take-back: BUSY at once, the capacity stays lent; QEMU
 * comes back restarted (nothing plugged): the capacity is the pools' again. */
static void test_driver_lost(void **unused)
{
	struct vcmad_vmem_info info;

	start();
	alloc_all();
	vcmad_vmem_lost(vm, "test");
	assert_true(g.got);
	assert_int_equal(g.err, -EBUSY);
	assert_int_equal(lender()->lent, 2048);
	assert_false(lender()->present);
	vcmad_vmem_get_info(vm, &info);
	assert_false(info.up);
	assert_int_equal(info.losts, 1);
	/* nothing lent to it while it is down, and a take-back fails at once */
	advance_ms(100);
	assert_int_equal(lender()->lent, 2048);
	memset(&g, 0, sizeof(g));
	vcmad_requester_init(&g.rq, &d, &fake_rq_ops, 7, "guest", NULL);
	{
		struct vcma_alloc_req req = { .bytes = 16 * MiB };

		assert_int_equal(vcmad_alloc(&g.rq, 2, &req), 0);
	}
	assert_true(g.got);
	assert_int_equal(g.err, -EBUSY);
	vcmad_vmem_report(vm, 0, 0, 256 * MiB, 2 * MiB);
	assert_int_equal(lender()->lent, 0);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 0);
	vcmad_vmem_get_info(vm, &info);
	assert_int_equal(info.restarts, 1);
	stop();
}

/* Removed at run time with a take-back in flight: the allocation is served, the
 * device asked for 0, the driver closed, the slot free for another lender. */
static void test_removed(void **unused)
{
	struct vcmad_guest_conf gc = { .name = "other", .kind = VCMAD_GUEST_QEMU, .lender = VCMAD_LENDER_VMEM };
	struct fake_drv drv2 = { 0 };
	struct vcmad_vmem *v2;

	start();
	alloc_all();
	assert_false(g.got);
	assert_int_equal(vcmad_lender_remove(&d, "ivi"), 0);
	assert_true(g.got);
	assert_int_equal(g.err, 0);
	assert_true(drv.closed);
	assert_int_equal(last_asked(&drv), 0);
	assert_null(lender());
	assert_int_equal(d.balloon.nlenders, 0);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 0);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_REGION], 4096);
	assert_int_equal(vcmad_lender_remove(&d, "ivi"), -ENOENT);
	assert_int_equal(vcmad_vmem_lender_add(&d, &gc, &fake_drv_ops, &drv2, &v2), 0);
	assert_int_equal(d.balloon.nlenders, 1);
	assert_int_equal(vcmad_lender_remove(&d, "other"), 0);
	assert_true(drv2.closed);
	assert_int_equal(drv2.nasked, 0); /* never up: never asked */
	stop();
}

/* A lender removed with nothing in flight: what it was lent is free again at once. */
static void test_removed_idle(void **unused)
{
	start();
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 2048);
	assert_int_equal(vcmad_lender_remove(&d, "ivi"), 0);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_LENT_FREE], 0);
	assert_int_equal(pool()->fm.count[VCMA_FRAME_FREE], 4096);
	stop();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_take_back_full), cmocka_unit_test(test_take_back_short),
		cmocka_unit_test(test_needs_requested_seen), cmocka_unit_test(test_driver_lost),
		cmocka_unit_test(test_removed), cmocka_unit_test(test_removed_idle),
	};

	vcma_log_init(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
