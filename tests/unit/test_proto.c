// SPDX-License-Identifier: MIT
/*
 * The wire ABI of docs/PROTOCOL.md: every size, offset and constant of proto/, the
 * ring helpers (page rounding, power-of-two test, Xen's notify test across index
 * wraparound, the once-only copy) and the default layout a host computes.
 *
 * A failure here means the wire format changed: fix the code, or bump the protocol
 * version and docs/PROTOCOL.md together.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>

#include "vcma_barrier.h"
#include "vcma_name.h"
#include "vcma_proto.h"
#include "vcma_sim.h"
#include "vcma_status.h"
#include "vcma_xen.h"

#define FSZ(type, field) sizeof(((type *)0)->field)

/* offset and size of one field, as PROTOCOL.md's tables give them */
#define FIELD(type, field, off, size)                                                                              \
	do {                                                                                                       \
		assert_int_equal(offsetof(type, field), (off));                                                    \
		assert_int_equal(FSZ(type, field), (size));                                                        \
	} while (0)

static void test_ctrl_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct vcma_ctrl), 128);
	FIELD(struct vcma_ctrl, magic, 0, 4);
	FIELD(struct vcma_ctrl, major, 4, 2);
	FIELD(struct vcma_ctrl, minor, 6, 2);
	FIELD(struct vcma_ctrl, hdr_size, 8, 4);
	FIELD(struct vcma_ctrl, state, 12, 4);
	FIELD(struct vcma_ctrl, host_features, 16, 8);
	FIELD(struct vcma_ctrl, guest_features, 24, 8);
	FIELD(struct vcma_ctrl, generation, 32, 4);
	FIELD(struct vcma_ctrl, guest_id, 36, 4);
	FIELD(struct vcma_ctrl, req_off, 40, 4);
	FIELD(struct vcma_ctrl, req_slots, 44, 4);
	FIELD(struct vcma_ctrl, evt_off, 48, 4);
	FIELD(struct vcma_ctrl, evt_slots, 52, 4);
	FIELD(struct vcma_ctrl, window_off, 56, 8);
	FIELD(struct vcma_ctrl, window_size, 64, 8);
	FIELD(struct vcma_ctrl, max_outstanding, 72, 4);
	FIELD(struct vcma_ctrl, max_regions, 76, 4);
	FIELD(struct vcma_ctrl, max_bytes, 80, 8);
	FIELD(struct vcma_ctrl, reserved, 88, 40);
	assert_true(sizeof(struct vcma_ctrl) <= VCMA_PROTO_PAGE);
}

static void test_ring_hdr_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct vcma_ring_hdr), 64);
	FIELD(struct vcma_ring_hdr, req_prod, 0, 4);
	FIELD(struct vcma_ring_hdr, req_event, 4, 4);
	FIELD(struct vcma_ring_hdr, rsp_prod, 8, 4);
	FIELD(struct vcma_ring_hdr, rsp_event, 12, 4);
	FIELD(struct vcma_ring_hdr, req_poll, 16, 4);
	FIELD(struct vcma_ring_hdr, pad, 20, 44);
}

static void test_req_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct vcma_req), 64);
	FIELD(struct vcma_req, id, 0, 8);
	FIELD(struct vcma_req, op, 8, 4);
	FIELD(struct vcma_req, flags, 12, 4);
	FIELD(struct vcma_req, handle, 16, 8);
	FIELD(struct vcma_req, length, 24, 8);
	FIELD(struct vcma_req, arg0, 32, 8);
	FIELD(struct vcma_req, arg1, 40, 8);
	FIELD(struct vcma_req, name, 48, 16);
	assert_int_equal(FSZ(struct vcma_req, name), VCMA_NAME_LEN);
}

static void test_rsp_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct vcma_rsp), 64);
	FIELD(struct vcma_rsp, id, 0, 8);
	FIELD(struct vcma_rsp, status, 8, 4);
	FIELD(struct vcma_rsp, flags, 12, 4);
	FIELD(struct vcma_rsp, handle, 16, 8);
	FIELD(struct vcma_rsp, gpa, 24, 8);
	FIELD(struct vcma_rsp, bus, 32, 8);
	FIELD(struct vcma_rsp, length, 40, 8);
	FIELD(struct vcma_rsp, val, 48, 16);
	FIELD(struct vcma_rsp, val[1], 56, 8);
}

static void test_slot_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(union vcma_slot), 64);
	FIELD(union vcma_slot, req, 0, 64);
	FIELD(union vcma_slot, rsp, 0, 64);
	/* the id sits at the same place in both, so a slot's id survives the reuse */
	assert_int_equal(offsetof(union vcma_slot, req.id), offsetof(union vcma_slot, rsp.id));
}

static void test_evt_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct vcma_evt_hdr), 64);
	FIELD(struct vcma_evt_hdr, evt_prod, 0, 4);
	FIELD(struct vcma_evt_hdr, evt_event, 4, 4);
	FIELD(struct vcma_evt_hdr, evt_cons, 8, 4);
	FIELD(struct vcma_evt_hdr, pad, 12, 52);

	assert_int_equal(sizeof(struct vcma_evt), 32);
	FIELD(struct vcma_evt, type, 0, 4);
	FIELD(struct vcma_evt, flags, 4, 4);
	FIELD(struct vcma_evt, handle, 8, 8);
	FIELD(struct vcma_evt, arg0, 16, 8);
	FIELD(struct vcma_evt, arg1, 24, 8);
}

static void test_sim_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct vcma_sim_attach), 88);
	FIELD(struct vcma_sim_attach, magic, 0, 4);
	FIELD(struct vcma_sim_attach, version, 4, 2);
	FIELD(struct vcma_sim_attach, type, 6, 2);
	FIELD(struct vcma_sim_attach, role, 8, 4);
	FIELD(struct vcma_sim_attach, flags, 12, 4);
	FIELD(struct vcma_sim_attach, ram_bytes, 16, 8);
	FIELD(struct vcma_sim_attach, name, 24, 32);
	FIELD(struct vcma_sim_attach, devclass, 56, 32);

	assert_int_equal(sizeof(struct vcma_sim_attach_rsp), 56);
	FIELD(struct vcma_sim_attach_rsp, magic, 0, 4);
	FIELD(struct vcma_sim_attach_rsp, version, 4, 2);
	FIELD(struct vcma_sim_attach_rsp, type, 6, 2);
	FIELD(struct vcma_sim_attach_rsp, status, 8, 4);
	FIELD(struct vcma_sim_attach_rsp, guest_id, 12, 4);
	FIELD(struct vcma_sim_attach_rsp, shm_size, 16, 8);
	FIELD(struct vcma_sim_attach_rsp, ram_frames, 24, 8);
	FIELD(struct vcma_sim_attach_rsp, machine_bytes, 32, 8);
	FIELD(struct vcma_sim_attach_rsp, window_gpa, 40, 8);
	FIELD(struct vcma_sim_attach_rsp, nruns, 48, 4);
	FIELD(struct vcma_sim_attach_rsp, nfds, 52, 4);

	assert_int_equal(sizeof(struct vcma_sim_run), 24);
	FIELD(struct vcma_sim_run, gfn, 0, 8);
	FIELD(struct vcma_sim_run, mfn, 8, 8);
	FIELD(struct vcma_sim_run, count, 16, 8);

	assert_int_equal(sizeof(struct vcma_sim_p2m), 3088);
	FIELD(struct vcma_sim_p2m, magic, 0, 4);
	FIELD(struct vcma_sim_p2m, version, 4, 2);
	FIELD(struct vcma_sim_p2m, type, 6, 2);
	FIELD(struct vcma_sim_p2m, nruns, 8, 4);
	FIELD(struct vcma_sim_p2m, pad, 12, 4);
	FIELD(struct vcma_sim_p2m, run, 16, 24 * 128);
	/* all three messages start with the same magic/version/type header */
	assert_int_equal(offsetof(struct vcma_sim_attach_rsp, type), offsetof(struct vcma_sim_attach, type));
	assert_int_equal(offsetof(struct vcma_sim_p2m, type), offsetof(struct vcma_sim_attach, type));
}

static void test_constants(void **state)
{
	(void)state;
	assert_int_equal(VCMA_PROTO_MAGIC, 0x414d4356u);
	assert_int_equal(VCMA_PROTO_MAJOR, 1);
	assert_int_equal(VCMA_PROTO_MINOR, 1);
	assert_int_equal(VCMA_PROTO_PAGE, 4096);
	assert_int_equal(VCMA_NAME_LEN, 16);
	assert_int_equal(VCMA_SIM_MAGIC, 0x4d495356u);
	assert_int_equal(VCMA_SIM_VERSION, 1);
	assert_int_equal(VCMA_SIM_NAME_LEN, 32);
	assert_int_equal(VCMA_SIM_P2M_RUNS, 128);
	assert_string_equal(VCMA_SIM_SOCKET, "vcmad.sock");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	{
		/* the magics read as text in a hex dump of little-endian memory */
		uint32_t m = VCMA_PROTO_MAGIC, s = VCMA_SIM_MAGIC;

		assert_memory_equal(&m, "VCMA", 4);
		assert_memory_equal(&s, "VSIM", 4);
	}
#endif
}

static void test_enums(void **state)
{
	(void)state;
	assert_int_equal(VCMA_STATE_INIT, 0);
	assert_int_equal(VCMA_STATE_READY, 1);
	assert_int_equal(VCMA_STATE_CONNECTED, 2);
	assert_int_equal(VCMA_STATE_CLOSING, 3);
	assert_int_equal(VCMA_STATE_DEAD, 4);

	assert_int_equal(VCMA_F_EVENTS, 1);
	assert_int_equal(VCMA_F_NAMED_POOL, 2);
	assert_int_equal(VCMA_F_LAZY_FREE, 4);
	assert_int_equal(VCMA_F_KNOWN, 7);

	assert_int_equal(VCMA_OP_HELLO, 1);
	assert_int_equal(VCMA_OP_ALLOC, 2);
	assert_int_equal(VCMA_OP_FREE, 3);
	assert_int_equal(VCMA_OP_QUERY, 4);
	assert_int_equal(VCMA_OP_MAX, 4);

	assert_int_equal(VCMA_ST_OK, 0);
	assert_int_equal(VCMA_ST_INVALID, 1);
	assert_int_equal(VCMA_ST_USE_NORMAL, 2);
	assert_int_equal(VCMA_ST_NO_POOL, 3);
	assert_int_equal(VCMA_ST_ACCESS, 4);
	assert_int_equal(VCMA_ST_QUOTA, 5);
	assert_int_equal(VCMA_ST_NO_SPACE, 6);
	assert_int_equal(VCMA_ST_TOO_BIG, 7);
	assert_int_equal(VCMA_ST_BUSY, 8);
	assert_int_equal(VCMA_ST_NO_REGION, 9);
	assert_int_equal(VCMA_ST_NO_MEMORY, 10);
	assert_int_equal(VCMA_ST_NOT_READY, 11);
	assert_int_equal(VCMA_ST_VERSION, 12);
	assert_int_equal(VCMA_ST_LIMIT, 13);
	assert_int_equal(VCMA_ST_SHUTDOWN, 14);
	assert_int_equal(VCMA_ST_INTERNAL, 15);
	assert_int_equal(VCMA_ST_MAX, 15);

	assert_int_equal(VCMA_EVT_SHUTDOWN, 1);
	assert_int_equal(VCMA_EVT_REGION_GONE, 2);
	assert_int_equal(VCMA_EVT_LENT_RECLAIM, 3);

	assert_int_equal(VCMA_SIM_ROLE_GUEST, 1);
	assert_int_equal(VCMA_SIM_ROLE_VMM, 2);
	assert_int_equal(VCMA_SIM_MSG_ATTACH, 1);
	assert_int_equal(VCMA_SIM_MSG_ATTACH_RSP, 2);
	assert_int_equal(VCMA_SIM_MSG_P2M, 3);
}

static void test_hello_version_word(void **state)
{
	(void)state;
	/* HELLO arg0 and the response's val[1]: major << 16 | minor */
	assert_int_equal((uint64_t)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR, 0x00010001);
}

static void test_default_slots_and_bytes(void **state)
{
	(void)state;
	assert_true(vcma_is_pow2(VCMA_DEFAULT_REQ_SLOTS));
	assert_true(vcma_is_pow2(VCMA_DEFAULT_EVT_SLOTS));
	assert_int_equal(VCMA_DEFAULT_REQ_SLOTS, 64);
	assert_int_equal(VCMA_DEFAULT_EVT_SLOTS, 64);
	assert_int_equal(VCMA_RING_BYTES(64), 64 + 64 * 64);
	assert_int_equal(VCMA_RING_BYTES(64), 4160);
	assert_int_equal(VCMA_EVT_BYTES(64), 64 + 64 * 32);
	assert_int_equal(VCMA_EVT_BYTES(64), 2112);
	assert_int_equal(VCMA_RING_BYTES(1), 128);
	assert_int_equal(VCMA_EVT_BYTES(1), 96);
	assert_int_equal(VCMA_RING_BYTES(0), 64);
}

static void test_page_round(void **state)
{
	(void)state;
	assert_int_equal(vcma_page_round(0), 0);
	assert_int_equal(vcma_page_round(1), 4096);
	assert_int_equal(vcma_page_round(4095), 4096);
	assert_int_equal(vcma_page_round(4096), 4096);
	assert_int_equal(vcma_page_round(4097), 8192);
	assert_int_equal(vcma_page_round(VCMA_RING_BYTES(64)), 8192);
	assert_int_equal(vcma_page_round(VCMA_EVT_BYTES(64)), 4096);
	assert_int_equal(vcma_page_round(0xfffff000ull), 0xfffff000u);
	assert_int_equal(vcma_page_round(0xffffe001ull), 0xfffff000u);
}

static void test_is_pow2(void **state)
{
	(void)state;
	assert_false(vcma_is_pow2(0));
	assert_true(vcma_is_pow2(1));
	assert_true(vcma_is_pow2(2));
	assert_false(vcma_is_pow2(3));
	assert_true(vcma_is_pow2(64));
	assert_false(vcma_is_pow2(96));
	assert_true(vcma_is_pow2(1u << 31));
	assert_false(vcma_is_pow2((1u << 31) + 1));
	assert_false(vcma_is_pow2(0xffffffffu));
}

static void test_need_notify(void **state)
{
	(void)state;
	/* nothing published: never */
	assert_false(vcma_need_notify(5, 5, 5));
	assert_false(vcma_need_notify(5, 5, 6));
	/* one published: only an event index of exactly new crosses */
	assert_true(vcma_need_notify(0, 1, 1));
	assert_false(vcma_need_notify(0, 1, 0)); /* peer asked for index 0: already passed */
	assert_false(vcma_need_notify(0, 1, 2)); /* peer wants a later one */
	/* a batch old -> new notifies for event in (old, new] */
	assert_false(vcma_need_notify(10, 14, 10));
	assert_true(vcma_need_notify(10, 14, 11));
	assert_true(vcma_need_notify(10, 14, 12));
	assert_true(vcma_need_notify(10, 14, 14));
	assert_false(vcma_need_notify(10, 14, 15));
	assert_false(vcma_need_notify(10, 14, 9));
	/* free-running 32-bit indices wrap */
	assert_true(vcma_need_notify(0xfffffffeu, 2, 0xffffffffu));
	assert_true(vcma_need_notify(0xfffffffeu, 2, 0));
	assert_true(vcma_need_notify(0xfffffffeu, 2, 1));
	assert_true(vcma_need_notify(0xfffffffeu, 2, 2));
	assert_false(vcma_need_notify(0xfffffffeu, 2, 3));
	assert_false(vcma_need_notify(0xfffffffeu, 2, 0xfffffffeu));
	assert_false(vcma_need_notify(0xfffffffeu, 2, 0x80000000u));
	assert_true(vcma_need_notify(0xffffffffu, 0, 0));
	assert_false(vcma_need_notify(0xffffffffu, 0, 1));
	/* a stale event far behind (the peer is not waiting) */
	assert_false(vcma_need_notify(1000, 1001, 3));
}

static void test_copy_from_shared(void **state)
{
	uint8_t src[96], dst[96];

	(void)state;
	for (unsigned int i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(0xa5 ^ i);
	memset(dst, 0xee, sizeof(dst));
	vcma_copy_from_shared(dst, src, 64);
	assert_memory_equal(dst, src, 64);
	for (unsigned int i = 64; i < sizeof(dst); i++)
		assert_int_equal(dst[i], 0xee); /* not a byte past len */

	memset(dst, 0xee, sizeof(dst));
	vcma_copy_from_shared(dst, src, 0);
	assert_int_equal(dst[0], 0xee);
	vcma_copy_from_shared(dst, src, 8);
	assert_memory_equal(dst, src, 8);
	assert_int_equal(dst[8], 0xee);

	/* the way the host takes a request: one whole-slot copy */
	{
		union vcma_slot s;
		struct vcma_req q;

		memset(&s, 0, sizeof(s));
		s.req.id = 0x1122334455667788ull;
		s.req.op = VCMA_OP_ALLOC;
		s.req.length = 3u << 20;
		memcpy(s.req.name, "video", 5);
		vcma_copy_from_shared(&q, &s.req, sizeof(q));
		assert_memory_equal(&q, &s.req, sizeof(q));
		assert_int_equal(q.id, 0x1122334455667788ull);
	}
}

/* The layout a host computes for given slot counts (docs/PROTOCOL.md, "Layout"). */
struct layout {
	uint32_t req_off, evt_off;
	uint64_t total;
};

static struct layout compute_layout(uint32_t req_slots, uint32_t evt_slots)
{
	struct layout l;

	l.req_off = VCMA_PROTO_PAGE;
	l.evt_off = l.req_off + vcma_page_round(VCMA_RING_BYTES((uint64_t)req_slots));
	l.total = (uint64_t)l.evt_off + vcma_page_round(VCMA_EVT_BYTES((uint64_t)evt_slots));
	return l;
}

static void test_default_layout(void **state)
{
	static uint64_t shm[0x4000 / 8]; /* 8-aligned, as shared memory is page aligned */
	struct layout l = compute_layout(VCMA_DEFAULT_REQ_SLOTS, VCMA_DEFAULT_EVT_SLOTS);
	struct vcma_ctrl *c = (struct vcma_ctrl *)shm;
	uint8_t *base = (uint8_t *)shm;
	struct vcma_ring_hdr *rh;
	struct vcma_evt_hdr *eh;

	(void)state;
	assert_int_equal(l.req_off, 0x1000);
	assert_int_equal(l.evt_off, 0x3000);
	assert_int_equal(l.total, 0x4000);
	assert_int_equal(l.req_off % VCMA_PROTO_PAGE, 0);
	assert_int_equal(l.evt_off % VCMA_PROTO_PAGE, 0);
	assert_true(l.req_off + VCMA_RING_BYTES(VCMA_DEFAULT_REQ_SLOTS) <= l.evt_off);
	assert_true(l.evt_off + VCMA_EVT_BYTES(VCMA_DEFAULT_EVT_SLOTS) <= l.total);

	memset(shm, 0, sizeof(shm));
	c->magic = VCMA_PROTO_MAGIC;
	c->req_off = l.req_off;
	c->req_slots = VCMA_DEFAULT_REQ_SLOTS;
	c->evt_off = l.evt_off;
	c->evt_slots = VCMA_DEFAULT_EVT_SLOTS;

	rh = vcma_req_ring(base, c);
	eh = vcma_evt_ring(base, c);
	assert_ptr_equal(rh, base + 0x1000);
	assert_ptr_equal(vcma_req_slots(rh), base + 0x1040);
	assert_ptr_equal(&vcma_req_slots(rh)[1], base + 0x1080);
	assert_ptr_equal(&vcma_req_slots(rh)[63] + 1, base + 0x2040);
	assert_ptr_equal(eh, base + 0x3000);
	assert_ptr_equal(vcma_evt_slots(eh), base + 0x3040);
	assert_ptr_equal(&vcma_evt_slots(eh)[63] + 1, base + 0x3840);
	assert_true((uint8_t *)(&vcma_evt_slots(eh)[63] + 1) <= base + l.total);
	/* index 64 wraps to slot 0 */
	assert_ptr_equal(&vcma_req_slots(rh)[64u & (VCMA_DEFAULT_REQ_SLOTS - 1)], vcma_req_slots(rh));

	/* other slot counts the host may pick */
	l = compute_layout(8, 8);
	assert_int_equal(l.evt_off, 0x2000);
	assert_int_equal(l.total, 0x3000);
	l = compute_layout(1024, 64);
	assert_int_equal(l.evt_off, 0x1000 + 0x11000);
	assert_int_equal(l.total, 0x12000 + 0x1000);
}

/*
 * One guest and one host driving a 4-slot ring through the 32-bit wrap with the
 * header's primitives, exactly as PROTOCOL.md's procedures say, including both
 * overflow checks.
 */
static void test_ring_round_trip_across_wrap(void **state)
{
	static uint64_t shm[0x3000 / 8];
	uint8_t *base = (uint8_t *)shm;
	struct vcma_ctrl *c = (struct vcma_ctrl *)shm;
	struct vcma_ring_hdr *rh;
	union vcma_slot *slot;
	const uint32_t n = 4, start = 0xfffffffau;
	uint32_t req_prod_pvt = start, rsp_cons = start;  /* guest */
	uint32_t req_cons = start, rsp_prod_pvt = start;  /* host */
	uint64_t next_id = 100, answered = 0;
	int kicks = 0, irqs = 0;

	(void)state;
	memset(shm, 0, sizeof(shm));
	c->req_off = VCMA_PROTO_PAGE;
	c->req_slots = n;
	rh = vcma_req_ring(base, c);
	slot = vcma_req_slots(rh);
	rh->req_prod = rh->rsp_prod = start;
	rh->req_event = rh->rsp_event = start + 1;

	for (int round = 0; round < 6; round++) {
		/* guest: fill every free slot, publish, maybe kick */
		uint32_t old = req_prod_pvt;

		while (req_prod_pvt - rsp_cons < n) {
			union vcma_slot *s = &slot[req_prod_pvt & (n - 1)];

			memset(s, 0, sizeof(*s));
			s->req.id = next_id++;
			s->req.op = VCMA_OP_QUERY;
			req_prod_pvt++;
		}
		vcma_store_release(&rh->req_prod, req_prod_pvt);
		vcma_mb();
		kicks += vcma_need_notify(old, req_prod_pvt, vcma_read_once(&rh->req_event));

		/* host: read the index once, check it, copy each request once, answer */
		{
			uint32_t prod = vcma_load_acquire(&rh->req_prod), rold = rsp_prod_pvt;

			assert_false(prod - rsp_prod_pvt > n);
			while (req_cons != prod) {
				struct vcma_req q;
				struct vcma_rsp r;

				vcma_copy_from_shared(&q, &slot[req_cons & (n - 1)].req, sizeof(q));
				req_cons++;
				memset(&r, 0, sizeof(r));
				r.id = q.id;
				r.status = VCMA_ST_OK;
				memcpy(&slot[rsp_prod_pvt & (n - 1)].rsp, &r, sizeof(r));
				rsp_prod_pvt++;
			}
			vcma_store_release(&rh->rsp_prod, rsp_prod_pvt);
			vcma_mb();
			irqs += vcma_need_notify(rold, rsp_prod_pvt, vcma_read_once(&rh->rsp_event));
			vcma_write_once(&rh->req_event, req_cons + 1);
			vcma_mb();
		}

		/* guest: consume responses, check ids, re-arm */
		{
			uint32_t rp = vcma_load_acquire(&rh->rsp_prod);

			assert_false(rp - rsp_cons > n);
			assert_false(rp - rsp_cons > req_prod_pvt - rsp_cons);
			while (rsp_cons != rp) {
				struct vcma_rsp r;

				vcma_copy_from_shared(&r, &slot[rsp_cons & (n - 1)].rsp, sizeof(r));
				rsp_cons++;
				assert_int_equal(r.id, 100 + answered);
				answered++;
			}
			vcma_write_once(&rh->rsp_event, rsp_cons + 1);
			vcma_mb();
		}
	}
	assert_int_equal(answered, 24);
	assert_int_equal(rsp_cons, start + 24); /* crossed 0xffffffff -> 0 */
	assert_true(rsp_cons < start);
	assert_int_equal(kicks, 6); /* the host re-armed req_event every round */
	assert_int_equal(irqs, 6);

	/* a host that sees req_prod run more than a ring ahead has a violation */
	assert_true((uint32_t)(rsp_prod_pvt + n + 1) - rsp_prod_pvt > n);
	assert_false((uint32_t)(rsp_prod_pvt + n) - rsp_prod_pvt > n);
	/* a garbage req_prod behind the host's index reads as a huge count: caught too */
	assert_true((uint32_t)(rsp_prod_pvt - 1) - rsp_prod_pvt > n);
}

/* §5.6: every status has its errno, and the host maps each of those back to it. */
static void test_status_errno(void **unused)
{
	static const struct {
		int32_t st;
		int err;
	} tab[] = {
		{ VCMA_ST_OK, 0 },	      { VCMA_ST_INVALID, -EINVAL },	{ VCMA_ST_USE_NORMAL, -ERANGE },
		{ VCMA_ST_NO_POOL, -ENODEV }, { VCMA_ST_ACCESS, -EACCES },	{ VCMA_ST_QUOTA, -EDQUOT },
		{ VCMA_ST_NO_SPACE, -ENOSPC }, { VCMA_ST_TOO_BIG, -E2BIG },	{ VCMA_ST_BUSY, -EBUSY },
		{ VCMA_ST_NO_REGION, -ENOENT }, { VCMA_ST_NO_MEMORY, -ENOMEM }, { VCMA_ST_NOT_READY, -EIO },
		{ VCMA_ST_VERSION, -EPROTONOSUPPORT }, { VCMA_ST_LIMIT, -ENOBUFS }, { VCMA_ST_SHUTDOWN, -ESHUTDOWN },
		{ VCMA_ST_INTERNAL, -EIO },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		assert_int_equal(vcma_status_errno(tab[i].st), tab[i].err);
		if (tab[i].err != -EIO)
			assert_int_equal(vcma_errno_status(tab[i].err), tab[i].st);
	}
	assert_int_equal(vcma_status_errno(VCMA_ST_MAX + 1), -EIO); /* a later minor version's */
	assert_int_equal(vcma_status_errno(-1), -EIO);
	assert_int_equal(vcma_errno_status(-EIO), VCMA_ST_INTERNAL);
	assert_int_equal(vcma_errno_status(-ETIMEDOUT), VCMA_ST_BUSY);
	assert_int_equal(vcma_errno_status(-EUSERS), VCMA_ST_NO_MEMORY);
	assert_int_equal(vcma_errno_status(-EXDEV), VCMA_ST_INTERNAL);
}

/* §5.1 and §9.1: what a name is, in a C string and in a fixed field. */
static void test_names(void **unused)
{
	char f[16];

	assert_true(vcma_name_str_ok("main", 16));
	assert_true(vcma_name_str_ok("a.b-c_9", 16));
	assert_false(vcma_name_str_ok("", 16));
	assert_false(vcma_name_str_ok("a b", 16));
	assert_false(vcma_name_str_ok("../x", 16));
	assert_false(vcma_name_str_ok("0123456789abcdef", 16)); /* 16 characters need 17 bytes */
	assert_true(vcma_name_str_ok("0123456789abcde", 16));
	assert_false(vcma_name_ok("ab\0c", 4, 16)); /* a NUL inside is not a character of a name */
	memset(f, 0, sizeof(f));
	assert_true(vcma_name_field_ok(f, sizeof(f), true));
	assert_false(vcma_name_field_ok(f, sizeof(f), false));
	memcpy(f, "video", 5);
	assert_true(vcma_name_field_ok(f, sizeof(f), false));
	f[9] = 'x'; /* garbage after the terminator */
	assert_false(vcma_name_field_ok(f, sizeof(f), true));
	memset(f, 'm', sizeof(f)); /* no terminator */
	assert_false(vcma_name_field_ok(f, sizeof(f), true));
	memset(f, 0, sizeof(f));
	f[0] = '/';
	assert_false(vcma_name_field_ok(f, sizeof(f), true));
}

/* PROTOCOL.md 9.3: the xenbus names, the area limit and the node value syntax. */
static void test_xen_nodes(void **unused)
{
	unsigned int v = 7;

	(void)unused;
	assert_string_equal(VCMA_XEN_DEVICE_TYPE, "vcma");
	assert_int_equal(VCMA_XEN_MAX_AREA_PAGES, 32);
	/* the largest ring vcmad allows (1024 slots) fits */
	assert_true(VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES(1024)) +
		    vcma_page_round(VCMA_EVT_BYTES(VCMA_DEFAULT_EVT_SLOTS)) <= VCMA_XEN_MAX_AREA_PAGES * VCMA_PROTO_PAGE);
	assert_string_equal(VCMA_XEN_KEY_AREA_PAGES, "area-pages");
	assert_string_equal(VCMA_XEN_KEY_RING_REF, "ring-ref");
	assert_string_equal(VCMA_XEN_KEY_EVTCHN, "event-channel");
	assert_string_equal(VCMA_XEN_KEY_ERROR, "error");
	assert_int_equal(VCMA_XEN_MAX_ORDER, 18);
	/* a default area fits in the limit */
	assert_true(VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES(VCMA_DEFAULT_REQ_SLOTS)) +
		    vcma_page_round(VCMA_EVT_BYTES(VCMA_DEFAULT_EVT_SLOTS)) <= VCMA_XEN_MAX_AREA_PAGES * VCMA_PROTO_PAGE);

	assert_int_equal(vcma_xen_parse_u32("0", 1, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(vcma_xen_parse_u32("16", 2, 16, &v), 0);
	assert_int_equal(v, 16);
	assert_int_equal(vcma_xen_parse_u32("4294967295", 10, 0xffffffffUL, &v), 0);
	assert_int_equal(v, 0xffffffffu);
	v = 7;
	assert_int_equal(vcma_xen_parse_u32("17", 2, 16, &v), -1);          /* above max */
	assert_int_equal(vcma_xen_parse_u32("4294967296", 10, ~0UL, &v), -1); /* above u32 */
	assert_int_equal(vcma_xen_parse_u32("04", 2, 16, &v), -1);          /* leading zero */
	assert_int_equal(vcma_xen_parse_u32(" 4", 2, 16, &v), -1);          /* blank */
	assert_int_equal(vcma_xen_parse_u32("4 ", 2, 16, &v), -1);
	assert_int_equal(vcma_xen_parse_u32("-4", 2, 16, &v), -1);          /* sign */
	assert_int_equal(vcma_xen_parse_u32("", 0, 16, &v), -1);
	assert_int_equal(vcma_xen_parse_u32(NULL, 1, 16, &v), -1);
	assert_int_equal(vcma_xen_parse_u32("12345678901", 11, ~0UL, &v), -1);
	assert_int_equal(vcma_xen_parse_u32("4\0", 2, 16, &v), -1);         /* NUL inside the length */
	assert_int_equal(v, 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctrl_layout),
		cmocka_unit_test(test_ring_hdr_layout),
		cmocka_unit_test(test_req_layout),
		cmocka_unit_test(test_rsp_layout),
		cmocka_unit_test(test_slot_layout),
		cmocka_unit_test(test_evt_layout),
		cmocka_unit_test(test_sim_layout),
		cmocka_unit_test(test_constants),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_hello_version_word),
		cmocka_unit_test(test_default_slots_and_bytes),
		cmocka_unit_test(test_page_round),
		cmocka_unit_test(test_is_pow2),
		cmocka_unit_test(test_need_notify),
		cmocka_unit_test(test_copy_from_shared),
		cmocka_unit_test(test_default_layout),
		cmocka_unit_test(test_ring_round_trip_across_wrap),
		cmocka_unit_test(test_status_errno),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_xen_nodes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
