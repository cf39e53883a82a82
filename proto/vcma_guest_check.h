/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_guest_check.h - the guest's checks of the control page (PROTOCOL.md §2.5),
 * shared by libvcma and vcma.ko so both refuse the same layouts.
 *
 * Run on the guest's private copy of the control page, never on shared memory.
 */
#ifndef VCMA_GUEST_CHECK_H
#define VCMA_GUEST_CHECK_H

#include "vcma_proto.h"

#define VCMA_GUEST_MAX_SLOTS 65536u /* largest ring a guest accepts */

enum vcma_ctrl_verdict {
	VCMA_CTRL_OK = 0,
	VCMA_CTRL_BAD = 1,   /* malformed layout: detach without sending anything */
	VCMA_CTRL_MAJOR = 2, /* another major version */
};

static inline int vcma_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

static inline int vcma_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* `size` is the bytes of shared area the guest maps. */
static inline enum vcma_ctrl_verdict vcma_ctrl_check(const struct vcma_ctrl *c, uint64_t size)
{
	uint64_t req_len, evt_len;

	if (c->magic != VCMA_PROTO_MAGIC)
		return VCMA_CTRL_BAD;
	if (c->major != VCMA_PROTO_MAJOR)
		return VCMA_CTRL_MAJOR;
	if (c->hdr_size < sizeof(*c) || c->hdr_size > VCMA_PROTO_PAGE)
		return VCMA_CTRL_BAD;
	if (!vcma_is_pow2(c->req_slots) || c->req_slots > VCMA_GUEST_MAX_SLOTS || !vcma_is_pow2(c->evt_slots) ||
	    c->evt_slots > VCMA_GUEST_MAX_SLOTS)
		return VCMA_CTRL_BAD;
	if (c->max_outstanding < 1 || c->max_outstanding > c->req_slots)
		return VCMA_CTRL_BAD;
	if (c->req_off % VCMA_PROTO_PAGE || c->evt_off % VCMA_PROTO_PAGE || c->req_off < VCMA_PROTO_PAGE ||
	    c->evt_off < VCMA_PROTO_PAGE)
		return VCMA_CTRL_BAD;
	/* 64-bit arithmetic throughout: a 32-bit page_round of a huge ring wraps */
	req_len = VCMA_RING_BYTES((uint64_t)c->req_slots);
	evt_len = VCMA_EVT_BYTES((uint64_t)c->evt_slots);
	if (!vcma_range_ok(c->req_off, req_len, size) || !vcma_range_ok(c->evt_off, evt_len, size) ||
	    vcma_overlap(c->req_off, req_len, c->evt_off, evt_len))
		return VCMA_CTRL_BAD;
	if (c->window_size &&
	    (!vcma_range_ok(c->window_off, c->window_size, size) ||
	     vcma_overlap(c->window_off, c->window_size, 0, VCMA_PROTO_PAGE) ||
	     vcma_overlap(c->window_off, c->window_size, c->req_off, req_len) ||
	     vcma_overlap(c->window_off, c->window_size, c->evt_off, evt_len)))
		return VCMA_CTRL_BAD;
	return VCMA_CTRL_OK;
}

#endif
