// SPDX-License-Identifier: MIT
/*
 * fuzz_ring.c - the host side of the shared ring (hv/transport/ring.c) against a
 * hostile guest that owns all of the shared memory.
 *
 * The input is a little program for the guest (byte values, little-endian):
 *
 *   byte 0: request slots = 8 << (b & 3); event slots are 64. The area is 16 KiB.
 *   then ops, op = byte % OP_COUNT:
 *     0 WRITE    u16 off, u8 len (% 65), len bytes: raw bytes anywhere in the area
 *     1 SLOT     u8 k, 64 bytes: request slot k & mask
 *     2 REQ      u8 kind, u64 id, u8 x: a conforming request at req_prod, then req_prod++
 *     3 PROD_ADD u8 d: req_prod += d
 *     4 PROD_SET u32
 *     5 RSP_EVT  u32: rsp_event
 *     6 PROCESS  u8 b: budget 1 + b % 96 (may exceed the ring); the handler then
 *                takes one byte per request: low nibble = response status, high
 *                nibble 1 = the guest runs one more guest op meanwhile (a racing
 *                guest), 2 = the host posts an event meanwhile
 *     7 EVENT    32 bytes: vcma_ring_host_post_event
 *     8 CONS_SET u32: evt_cons    9 CONS_ADD u8    10 EVT_EVT u32: evt_event
 *     11 PENDING vcma_ring_host_pending
 *     12 STATE   u8: vcma_ring_host_set_state(b % 5)
 *
 * A -EPROTO kills the guest as the daemon does (state DEAD, one more event), and the
 * next op re-attaches: a fresh area and vcma_ring_host_init with the next generation.
 *
 * The target keeps `shadow`, the contents the area must have: every guest write goes
 * to both, and the host's writes that PROTOCOL.md §4 allows are applied to the shadow
 * by the model below. After every host call the area must equal the shadow byte for
 * byte (so the host wrote nothing outside response slots, req_event, rsp_prod, event
 * slots, evt_prod and state), and canaries around the area must be intact. Also:
 *   - the handler only sees requests that pass vcma_req_check, equal to the slot
 *     contents at the time it was taken, with a zeroed response carrying the id;
 *   - process returns -EPROTO (with a reason) or 0..budget; its private req_cons and
 *     rsp_prod_pvt move forward by exactly what it took/answered, never more than
 *     the budget; an overflow (req_prod - rsp_prod_pvt > slots) is always -EPROTO
 *     before anything is taken; a request that fails the check is always -EPROTO;
 *   - *more is true exactly when requests remain; *notify follows vcma_need_notify;
 *   - post_event drops (-ENOSPC, counted) exactly when evt_prod_pvt - evt_cons >= 64
 *     and otherwise writes slot evt_prod_pvt & 63 only.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "ring.h"
#include "vcma_barrier.h"

#define AREA (16u * 1024u)
#define GUARD 256u
#define CANARY 0xa5
#define EVT_SLOTS 64u
#define MAX_STEPS 4096u
#define MAX_ATTACH 4u
#define MAX_NEST 4u

enum {
	OP_WRITE, OP_SLOT, OP_REQ, OP_PROD_ADD, OP_PROD_SET, OP_RSP_EVT, OP_PROCESS, OP_EVENT,
	OP_CONS_SET, OP_CONS_ADD, OP_EVT_EVT, OP_PENDING, OP_STATE, OP_COUNT
};

struct fz {
	struct fuzz_in in;
	uint8_t *raw, *area, *shadow;
	struct vcma_ring_host r;
	uint32_t slots, generation;
	uint32_t req_off, evt_off; /* the layout init chose, in the host's private view */
	unsigned int nest;
	/* the process() call in progress */
	bool in_process;
	uint32_t old_cons, old_rsp, ncalls;
	bool pending;
	struct vcma_rsp pend;
	uint32_t pend_idx;
};

/* ---- the area and its shadow ---- */

static size_t slot_off(const struct fz *f, uint32_t k)
{
	return f->req_off + sizeof(struct vcma_ring_hdr) + (size_t)(k & (f->slots - 1)) * sizeof(union vcma_slot);
}

static size_t req_field(const struct fz *f, size_t field)
{
	return f->req_off + field;
}

static size_t evt_field(const struct fz *f, size_t field)
{
	return f->evt_off + field;
}

static uint32_t shadow_u32(const struct fz *f, size_t off)
{
	uint32_t v;

	memcpy(&v, f->shadow + off, sizeof(v));
	return v;
}

static void shadow_put(struct fz *f, size_t off, const void *src, size_t len)
{
	memcpy(f->shadow + off, src, len);
}

static void shadow_put_u32(struct fz *f, size_t off, uint32_t v)
{
	shadow_put(f, off, &v, sizeof(v));
}

/* The guest writes: the area and the shadow alike. */
static void guest_write(struct fz *f, size_t off, const void *src, size_t len)
{
	if (off >= AREA)
		return;
	if (len > AREA - off)
		len = AREA - off;
	memcpy(f->area + off, src, len);
	memcpy(f->shadow + off, src, len);
}

static void guest_put_u32(struct fz *f, size_t off, uint32_t v)
{
	guest_write(f, off, &v, sizeof(v));
}

static void check_area(const struct fz *f, const char *after)
{
	for (size_t i = 0; i < GUARD; i++) {
		FUZZ_CHECK(f->raw[i] == CANARY, "%s: canary before the area overwritten at -%zu", after, GUARD - i);
		FUZZ_CHECK(f->raw[GUARD + AREA + i] == CANARY, "%s: canary after the area overwritten at +%zu", after,
			   i);
	}
	if (memcmp(f->area, f->shadow, AREA)) {
		size_t i = 0;

		while (f->area[i] == f->shadow[i])
			i++;
		fuzz_fail("%s: host wrote byte %zu of the area (req ring at %u, event ring at %u): %#x, expected %#x",
			  after, i, f->req_off, f->evt_off, f->area[i], f->shadow[i]);
	}
}

/* ---- attach ---- */

static void attach(struct fz *f, uint32_t slots)
{
	struct vcma_ring_params p = {
		.req_slots = slots,
		.evt_slots = EVT_SLOTS,
		.guest_id = 7,
		.generation = ++f->generation,
		.max_regions = 256,
		.max_bytes = UINT64_MAX,
	};
	int rc;

	memset(f->area, 0, AREA);
	rc = vcma_ring_host_init(&f->r, f->area, AREA, &p);
	FUZZ_CHECK(rc == 0, "vcma_ring_host_init(%u slots) = %d", slots, rc);
	f->slots = slots;
	f->req_off = f->r.ctrl->req_off;
	f->evt_off = f->r.ctrl->evt_off;
	FUZZ_CHECK((uint8_t *)f->r.slot == f->area + slot_off(f, 0), "slot array not where the control page says");
	FUZZ_CHECK((uint8_t *)f->r.evh == f->area + f->evt_off, "event ring not where the control page says");
	FUZZ_CHECK(f->evt_off + VCMA_EVT_BYTES(EVT_SLOTS) <= AREA, "event ring past the area");
	FUZZ_CHECK(f->r.req_cons == 0 && f->r.rsp_prod_pvt == 0 && f->r.evt_prod_pvt == 0, "indices after init");
	FUZZ_CHECK(f->r.ctrl->state == VCMA_STATE_READY, "state after init %u", f->r.ctrl->state);
	/* PROTOCOL.md §4.1 "Initial values": req_event = rsp_event = evt_event = 1, other indices 0 */
	FUZZ_CHECK(f->r.req->req_event == 1 && f->r.req->rsp_event == 1 && f->r.evh->evt_event == 1,
		   "initial *_event %u %u %u", f->r.req->req_event, f->r.req->rsp_event, f->r.evh->evt_event);
	FUZZ_CHECK(!f->r.req->req_prod && !f->r.req->rsp_prod && !f->r.evh->evt_prod && !f->r.evh->evt_cons,
		   "initial indices not zero");
	memcpy(f->shadow, f->area, AREA);
	check_area(f, "init");
}

/* ---- host calls, each checked against the model ---- */

static void guest_op(struct fz *f, unsigned int op);

static void do_post_event(struct fz *f, const struct vcma_evt *e)
{
	uint32_t cons = shadow_u32(f, evt_field(f, offsetof(struct vcma_evt_hdr, evt_cons)));
	uint32_t old = f->r.evt_prod_pvt;
	uint64_t dropped = f->r.events_dropped;
	bool notify = true;
	int rc = vcma_ring_host_post_event(&f->r, e, &notify);

	if (old - cons >= EVT_SLOTS) {
		FUZZ_CHECK(rc == -ENOSPC, "post_event with %u unconsumed events returned %d", old - cons, rc);
		FUZZ_CHECK(f->r.events_dropped == dropped + 1, "dropped event not counted");
		FUZZ_CHECK(f->r.evt_prod_pvt == old && !notify, "dropped event moved evt_prod or notified");
	} else {
		uint32_t evt_event = shadow_u32(f, evt_field(f, offsetof(struct vcma_evt_hdr, evt_event)));

		FUZZ_CHECK(rc == 0, "post_event with room (%u of %u used) returned %d", old - cons, EVT_SLOTS, rc);
		FUZZ_CHECK(f->r.evt_prod_pvt == old + 1 && f->r.events_dropped == dropped, "evt_prod_pvt/dropped");
		FUZZ_CHECK(notify == !!vcma_need_notify(old, old + 1, evt_event), "event notify %d", notify);
		shadow_put(f, f->evt_off + sizeof(struct vcma_evt_hdr) + (size_t)(old & (EVT_SLOTS - 1)) * sizeof(*e),
			   e, sizeof(*e));
		shadow_put_u32(f, evt_field(f, offsetof(struct vcma_evt_hdr, evt_prod)), old + 1);
	}
	check_area(f, "post_event");
}

/* The host wrote the previous response when our handler returned. */
static void apply_pending(struct fz *f)
{
	if (!f->pending)
		return;
	shadow_put(f, slot_off(f, f->pend_idx), &f->pend, sizeof(f->pend));
	f->pending = false;
}

static int handler(void *ctx, const struct vcma_req *q, struct vcma_rsp *rsp)
{
	struct fz *f = ctx;
	uint32_t i = f->ncalls++;
	const char *why = NULL;
	struct vcma_rsp zero;
	uint8_t b;

	FUZZ_CHECK(f->in_process, "handler called outside process");
	apply_pending(f);
	FUZZ_CHECK(vcma_req_check(q, &why) == 0, "handler got request %u that fails vcma_req_check: %s", i,
		   why ? why : "?");
	FUZZ_CHECK(!memcmp(q, f->shadow + slot_off(f, f->old_cons + i), sizeof(*q)),
		   "request %u is not the contents of slot %u when it was taken", i, (f->old_cons + i) & (f->slots - 1));
	FUZZ_CHECK(f->r.req_cons == f->old_cons + i + 1, "req_cons %u in handler %u (started at %u)", f->r.req_cons, i,
		   f->old_cons);
	memset(&zero, 0, sizeof(zero));
	zero.id = q->id;
	FUZZ_CHECK(!memcmp(rsp, &zero, sizeof(zero)), "response %u not zeroed with the request's id", i);

	b = fin_u8(&f->in);
	rsp->status = b & 0x0f;
	rsp->handle = q->handle ^ 0x5a5a5a5a5a5a5a5aull;
	rsp->gpa = q->length;
	rsp->bus = q->arg0;
	rsp->length = q->arg1;
	rsp->val[0] = q->op;
	rsp->val[1] = i;
	f->pend = *rsp;
	f->pend_idx = f->old_rsp + i;
	f->pending = true;

	/* meanwhile, on another vCPU / host thread */
	if (f->nest < MAX_NEST) {
		f->nest++;
		if ((b >> 4) == 1) {
			unsigned int op = fin_u8(&f->in) % OP_COUNT;

			if (op != OP_PROCESS && op != OP_EVENT && op != OP_PENDING && op != OP_STATE)
				guest_op(f, op);
		} else if ((b >> 4) == 2) {
			struct vcma_evt e;

			fin_bytes(&f->in, &e, sizeof(e));
			do_post_event(f, &e);
		}
		f->nest--;
	}
	return VCMA_RING_ANSWERED;
}

/* Returns false when the guest was cut off. */
static bool do_process(struct fz *f, uint32_t budget)
{
	size_t prod_off = req_field(f, offsetof(struct vcma_ring_hdr, req_prod));
	size_t rsp_prod_off = req_field(f, offsetof(struct vcma_ring_hdr, rsp_prod));
	size_t req_event_off = req_field(f, offsetof(struct vcma_ring_hdr, req_event));
	uint32_t prod0 = shadow_u32(f, prod_off), took, answered;
	bool notify = true, more = true;
	const char *why = (const char *)f;
	int rc;

	f->old_cons = f->r.req_cons;
	f->old_rsp = f->r.rsp_prod_pvt;
	f->ncalls = 0;
	f->pending = false;
	FUZZ_CHECK(f->old_cons == f->old_rsp, "a live guest with req_cons %u != rsp_prod_pvt %u", f->old_cons,
		   f->old_rsp);
	f->in_process = true;
	rc = vcma_ring_host_process(&f->r, budget, handler, f, &notify, &more, &why);
	f->in_process = false;
	apply_pending(f);

	took = f->r.req_cons - f->old_cons;
	answered = f->r.rsp_prod_pvt - f->old_rsp;
	FUZZ_CHECK(rc == -EPROTO || (rc >= 0 && (uint32_t)rc <= budget), "process(budget %u) returned %d", budget, rc);
	FUZZ_CHECK(answered == f->ncalls, "rsp_prod_pvt moved by %u for %u handler calls", answered, f->ncalls);
	FUZZ_CHECK(answered <= budget && took <= budget, "took %u, answered %u on a budget of %u", took, answered,
		   budget);
	FUZZ_CHECK(f->ncalls <= f->slots, "answered %u on a ring of %u", f->ncalls, f->slots);

	if (prod0 - f->old_rsp > f->slots)
		FUZZ_CHECK(rc == -EPROTO && took == 0, "req_prod %u against rsp_prod_pvt %u (ring %u) is no overflow (%d)",
			   prod0, f->old_rsp, f->slots, rc);

	if (rc == -EPROTO) {
		FUZZ_CHECK(why && *why, "-EPROTO without a reason");
		FUZZ_CHECK(took == 0 || took == answered + 1, "-EPROTO: took %u, answered %u", took, answered);
		if (took) {
			/* the request it refused: the slot as it was when taken */
			struct vcma_req q;
			const char *w2;

			memcpy(&q, f->shadow + slot_off(f, f->r.req_cons - 1), sizeof(q));
			FUZZ_CHECK(vcma_req_check(&q, &w2) == -EPROTO && !strcmp(w2, why),
				   "-EPROTO (%s) for a request that checks as %s", why, w2 ? w2 : "ok");
		} else {
			FUZZ_CHECK(prod0 - f->old_rsp > f->slots, "-EPROTO (%s) with nothing taken and no overflow", why);
		}
		/* nothing published on the way out: rsp_prod and req_event as they were */
		check_area(f, "process (-EPROTO)");
		return false;
	}

	FUZZ_CHECK(why == NULL, "success with a reason set");
	FUZZ_CHECK(took == (uint32_t)rc && answered == (uint32_t)rc, "returned %d, took %u, answered %u", rc, took,
		   answered);
	FUZZ_CHECK(took <= prod0 - f->old_cons, "took %u of %u published", took, prod0 - f->old_cons);
	if (rc > 0) {
		uint32_t rsp_event = shadow_u32(f, req_field(f, offsetof(struct vcma_ring_hdr, rsp_event)));

		shadow_put_u32(f, rsp_prod_off, f->r.rsp_prod_pvt);
		FUZZ_CHECK(notify == !!vcma_need_notify(f->old_rsp, f->r.rsp_prod_pvt, rsp_event),
			   "notify %d for %u..%u, rsp_event %u", notify, f->old_rsp, f->r.rsp_prod_pvt, rsp_event);
	} else {
		FUZZ_CHECK(!notify, "notify without responses");
	}
	if (f->r.req_cons == prod0) {
		/* final check: re-armed req_event */
		shadow_put_u32(f, req_event_off, f->r.req_cons + 1);
		FUZZ_CHECK(more == (shadow_u32(f, prod_off) != f->r.req_cons), "more %d after the final check", more);
	} else {
		FUZZ_CHECK(more, "budget reached with requests left, but no more");
	}
	/* *more false must mean nothing is left to take (§4.3 step 4) */
	FUZZ_CHECK(more || shadow_u32(f, prod_off) == f->r.req_cons, "no more, but req_prod %u != req_cons %u",
		   shadow_u32(f, prod_off), f->r.req_cons);
	check_area(f, "process");
	return true;
}

static void kill_guest(struct fz *f)
{
	struct vcma_evt e = { .type = VCMA_EVT_SHUTDOWN };
	uint32_t st = VCMA_STATE_DEAD;

	vcma_ring_host_set_state(&f->r, VCMA_STATE_DEAD);
	shadow_put(f, offsetof(struct vcma_ctrl, state), &st, sizeof(st));
	check_area(f, "set_state(DEAD)");
	do_post_event(f, &e); /* the daemon may still post to a dead guest on shutdown */
}

/* ---- the guest's program ---- */

static const char *const pool_names[] = { "", "main", "camera", "a.b-c_9", "123456789012345" };

static void make_req(struct fz *f, struct vcma_req *q)
{
	uint8_t kind = fin_u8(&f->in), x;

	memset(q, 0, sizeof(*q));
	q->id = fin_u64(&f->in);
	x = fin_u8(&f->in);
	q->op = 1u + kind % 4u;
	switch (q->op) {
	case VCMA_OP_HELLO:
		q->arg0 = VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR;
		q->arg1 = x & 3;
		break;
	case VCMA_OP_ALLOC:
		q->length = (uint64_t)(x + 1) << 12;
		q->arg0 = (kind >> 2) % 19u;
		memcpy(q->name, pool_names[x % 5], strlen(pool_names[x % 5]));
		break;
	case VCMA_OP_FREE:
		q->handle = x;
		break;
	default:
		if (kind & 4)
			q->handle = x + 1u;
		else
			memcpy(q->name, pool_names[x % 5], strlen(pool_names[x % 5]));
		break;
	}
}

static void guest_op(struct fz *f, unsigned int op)
{
	size_t prod_off = req_field(f, offsetof(struct vcma_ring_hdr, req_prod));
	uint8_t buf[64];

	switch (op) {
	case OP_WRITE: {
		uint16_t off = (uint16_t)(fin_u16(&f->in) % AREA);
		uint8_t len = fin_u8(&f->in) % 65;

		fin_bytes(&f->in, buf, len);
		guest_write(f, off, buf, len);
		break;
	}
	case OP_SLOT: {
		uint8_t k = fin_u8(&f->in);

		fin_bytes(&f->in, buf, sizeof(buf));
		guest_write(f, slot_off(f, k), buf, sizeof(buf));
		break;
	}
	case OP_REQ: {
		struct vcma_req q;
		uint32_t prod = shadow_u32(f, prod_off);

		make_req(f, &q);
		guest_write(f, slot_off(f, prod), &q, sizeof(q));
		guest_put_u32(f, prod_off, prod + 1);
		break;
	}
	case OP_PROD_ADD:
		guest_put_u32(f, prod_off, shadow_u32(f, prod_off) + fin_u8(&f->in));
		break;
	case OP_PROD_SET:
		guest_put_u32(f, prod_off, fin_u32(&f->in));
		break;
	case OP_RSP_EVT:
		guest_put_u32(f, req_field(f, offsetof(struct vcma_ring_hdr, rsp_event)), fin_u32(&f->in));
		break;
	case OP_CONS_SET:
		guest_put_u32(f, evt_field(f, offsetof(struct vcma_evt_hdr, evt_cons)), fin_u32(&f->in));
		break;
	case OP_CONS_ADD: {
		size_t off = evt_field(f, offsetof(struct vcma_evt_hdr, evt_cons));

		guest_put_u32(f, off, shadow_u32(f, off) + fin_u8(&f->in));
		break;
	}
	case OP_EVT_EVT:
		guest_put_u32(f, evt_field(f, offsetof(struct vcma_evt_hdr, evt_event)), fin_u32(&f->in));
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f;
	unsigned int attaches = 1;
	uint32_t slots;

	memset(&f, 0, sizeof(f));
	f.in.p = data;
	f.in.n = size;
	f.raw = malloc(GUARD + AREA + GUARD);
	f.shadow = malloc(AREA);
	if (!f.raw || !f.shadow)
		abort();
	memset(f.raw, CANARY, GUARD + AREA + GUARD);
	f.area = f.raw + GUARD;
	slots = 8u << (fin_u8(&f.in) & 3);
	attach(&f, slots);

	for (unsigned int step = 0; step < MAX_STEPS && !fin_empty(&f.in); step++) {
		unsigned int op = fin_u8(&f.in) % OP_COUNT;

		switch (op) {
		case OP_PROCESS:
			if (!do_process(&f, 1u + fin_u8(&f.in) % 96u)) {
				kill_guest(&f);
				if (attaches++ == MAX_ATTACH)
					goto out;
				attach(&f, slots);
			}
			break;
		case OP_EVENT: {
			struct vcma_evt e;

			fin_bytes(&f.in, &e, sizeof(e));
			do_post_event(&f, &e);
			break;
		}
		case OP_PENDING: {
			uint32_t n = vcma_ring_host_pending(&f.r);

			FUZZ_CHECK(n <= f.slots, "pending %u on a ring of %u", n, f.slots);
			check_area(&f, "pending");
			break;
		}
		case OP_STATE: {
			uint32_t st = fin_u8(&f.in) % 5u;

			vcma_ring_host_set_state(&f.r, (enum vcma_ctrl_state)st);
			shadow_put(&f, offsetof(struct vcma_ctrl, state), &st, sizeof(st));
			check_area(&f, "set_state");
			break;
		}
		default:
			guest_op(&f, op);
			break;
		}
	}
out:
	free(f.shadow);
	free(f.raw);
	return 0;
}
