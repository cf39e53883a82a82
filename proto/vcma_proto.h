/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_proto.h - the vcma shared-ring protocol, one layout for every transport.
 *
 * Shared verbatim by vcmad, libvcma and vcma.ko. docs/PROTOCOL.md is the normative
 * text; this header is its machine-readable half.
 *
 *   offset 0            control page (struct vcma_ctrl, rest of the page reserved)
 *   ctrl.req_off        request ring: 64-byte header + req_slots x 64-byte slots
 *   ctrl.evt_off        event ring:   64-byte header + evt_slots x 32-byte slots
 *   ctrl.window_off     DMA window (ivshmem only; 0 elsewhere)
 *
 * All fields are little-endian and naturally aligned. Indices are free-running
 * 32-bit counters masked with (slots - 1) on use; slot counts are powers of two.
 * Requests and their responses share the request ring's slots, as in Xen's ring.h:
 * the response to the request taken from slot i is written to slot rsp_prod & mask.
 * Notification suppression follows ring.h: a side that wants a kick for index k
 * stores k in the matching *_event field.
 */
#ifndef VCMA_PROTO_H
#define VCMA_PROTO_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdint.h>
#endif

#define VCMA_PROTO_MAGIC 0x414d4356u /* "VCMA" */
#define VCMA_PROTO_MAJOR 1u
#define VCMA_PROTO_MINOR 1u
#define VCMA_PROTO_PAGE 4096u

/* ---- control page ---- */

enum vcma_ctrl_state {
	VCMA_STATE_INIT = 0,      /* host is setting up: do not touch the rings */
	VCMA_STATE_READY = 1,     /* host serves; guest sends HELLO first */
	VCMA_STATE_CONNECTED = 2, /* HELLO accepted */
	VCMA_STATE_CLOSING = 3,   /* host is shutting down: no new requests */
	VCMA_STATE_DEAD = 4,      /* host cut this guest off (protocol violation) */
};

/* Feature bits (host_features offered, guest_features accepted at HELLO). */
#define VCMA_F_EVENTS (1ull << 0)     /* host posts notices on the event ring */
#define VCMA_F_NAMED_POOL (1ull << 1) /* ALLOC and QUERY may name a pool */
#define VCMA_F_LAZY_FREE (1ull << 2)  /* 1.1: the host writes req_poll (a posted FREE may skip its kick) */
#define VCMA_F_KNOWN (VCMA_F_EVENTS | VCMA_F_NAMED_POOL | VCMA_F_LAZY_FREE)

struct vcma_ctrl {
	uint32_t magic;          /* VCMA_PROTO_MAGIC */
	uint16_t major, minor;   /* host's protocol version */
	uint32_t hdr_size;       /* sizeof(struct vcma_ctrl) as the host knows it */
	uint32_t state;          /* enum vcma_ctrl_state, written by the host */
	uint64_t host_features;
	uint64_t guest_features; /* accepted subset, written by the host at HELLO */
	uint32_t generation;     /* bumped on every (re)attach: discard in-flight state */
	uint32_t guest_id;
	uint32_t req_off, req_slots; /* request ring offset (page aligned), slot count */
	uint32_t evt_off, evt_slots; /* event ring offset (page aligned), slot count */
	uint64_t window_off;     /* DMA window in this memory, 0 if none */
	uint64_t window_size;
	uint32_t max_outstanding; /* most requests a guest may have unanswered (<= req_slots) */
	uint32_t max_regions;     /* live regions allowed to this guest */
	uint64_t max_bytes;       /* region bytes allowed to this guest */
	uint8_t reserved[40];     /* zero */
};

/* ---- request ring ---- */

struct vcma_ring_hdr {
	uint32_t req_prod;  /* guest: requests published */
	uint32_t req_event; /* host: kick me when req_prod reaches this */
	uint32_t rsp_prod;  /* host: responses published */
	uint32_t rsp_event; /* guest: kick me when rsp_prod reaches this */
	uint32_t req_poll;  /* host, VCMA_F_LAZY_FREE: nonzero = I will look at req_prod without a kick */
	uint8_t pad[44];
};

enum vcma_op {
	VCMA_OP_HELLO = 1, /* arg0 = major << 16 | minor, arg1 = features wanted */
	VCMA_OP_ALLOC = 2, /* length = bytes, arg0 = alignment order (0 = natural), name = pool */
	VCMA_OP_FREE = 3,  /* handle */
	VCMA_OP_QUERY = 4, /* handle != 0: that region; handle == 0: usage in pool `name` */
	VCMA_OP_MAX = 4,
};

#define VCMA_NAME_LEN 16u /* pool names on the wire, NUL-padded */

struct vcma_req {
	uint64_t id;     /* chosen by the guest, echoed in the response, never interpreted */
	uint32_t op;     /* enum vcma_op */
	uint32_t flags;  /* none defined: must be 0 */
	uint64_t handle;
	uint64_t length;
	uint64_t arg0;
	uint64_t arg1;
	uint8_t name[VCMA_NAME_LEN];
};

/* Protocol status codes: never host errno values. */
enum vcma_status {
	VCMA_ST_OK = 0,
	VCMA_ST_INVALID = 1,    /* well-formed but unacceptable value (e.g. length 0) */
	VCMA_ST_USE_NORMAL = 2, /* below the pool's minimum: use ordinary memory */
	VCMA_ST_NO_POOL = 3,    /* no such pool, or none serves this guest */
	VCMA_ST_ACCESS = 4,     /* pool bound to another guest or device class */
	VCMA_ST_QUOTA = 5,      /* the guest's quota in the pool is exhausted */
	VCMA_ST_NO_SPACE = 6,   /* no contiguous window can be made now */
	VCMA_ST_TOO_BIG = 7,    /* larger than the pool */
	VCMA_ST_BUSY = 8,       /* window could not be vacated in time; retry later */
	VCMA_ST_NO_REGION = 9,  /* no such region for this guest */
	VCMA_ST_NO_MEMORY = 10, /* the host ran out of memory */
	VCMA_ST_NOT_READY = 11, /* HELLO first */
	VCMA_ST_VERSION = 12,   /* major version not supported */
	VCMA_ST_LIMIT = 13,     /* per-guest region or byte limit reached */
	VCMA_ST_SHUTDOWN = 14,  /* the host is shutting down */
	VCMA_ST_INTERNAL = 15,  /* host-side failure; the request had no effect */
	VCMA_ST_MAX = 15,
};

struct vcma_rsp {
	uint64_t id;     /* the request's id */
	int32_t status;  /* enum vcma_status */
	uint32_t flags;  /* 0 */
	uint64_t handle; /* ALLOC: new region; FREE/QUERY: the region asked about */
	uint64_t gpa;    /* guest-physical base of the region */
	uint64_t bus;    /* address a device uses for DMA */
	uint64_t length; /* region bytes (ALLOC/QUERY region), pool bytes (QUERY pool) */
	uint64_t val[2]; /* HELLO: features, version; QUERY pool: allocatable bytes, guest's bytes */
};

union vcma_slot {
	struct vcma_req req;
	struct vcma_rsp rsp;
};

/* ---- event ring (host -> guest notices) ---- */

struct vcma_evt_hdr {
	uint32_t evt_prod;  /* host: events published */
	uint32_t evt_event; /* guest: kick me when evt_prod reaches this */
	uint32_t evt_cons;  /* guest: events consumed; the host never overruns it */
	uint8_t pad[52];
};

enum vcma_evt_type {
	VCMA_EVT_SHUTDOWN = 1,    /* host is stopping; regions stay valid until detach */
	VCMA_EVT_REGION_GONE = 2, /* handle: the operator or host reclaimed it */
	VCMA_EVT_LENT_RECLAIM = 3,/* arg0 = gfn: the page's contents were dropped (it was reported free) */
};

struct vcma_evt {
	uint32_t type;
	uint32_t flags;
	uint64_t handle;
	uint64_t arg0;
	uint64_t arg1;
};

/* ---- layout checks: the ABI never changes by accident ---- */

_Static_assert(sizeof(struct vcma_ctrl) == 128, "vcma_ctrl is 128 bytes");
_Static_assert(__builtin_offsetof(struct vcma_ctrl, host_features) == 16, "ctrl.host_features");
_Static_assert(__builtin_offsetof(struct vcma_ctrl, generation) == 32, "ctrl.generation");
_Static_assert(__builtin_offsetof(struct vcma_ctrl, req_off) == 40, "ctrl.req_off");
_Static_assert(__builtin_offsetof(struct vcma_ctrl, window_off) == 56, "ctrl.window_off");
_Static_assert(__builtin_offsetof(struct vcma_ctrl, max_bytes) == 80, "ctrl.max_bytes");
_Static_assert(sizeof(struct vcma_ring_hdr) == 64, "ring header is 64 bytes (Xen-compatible)");
_Static_assert(__builtin_offsetof(struct vcma_ring_hdr, req_poll) == 16, "ring.req_poll");
_Static_assert(sizeof(struct vcma_req) == 64, "request slot is 64 bytes");
_Static_assert(__builtin_offsetof(struct vcma_req, handle) == 16, "req.handle");
_Static_assert(__builtin_offsetof(struct vcma_req, name) == 48, "req.name");
_Static_assert(sizeof(struct vcma_rsp) == 64, "response slot is 64 bytes");
_Static_assert(__builtin_offsetof(struct vcma_rsp, status) == 8, "rsp.status");
_Static_assert(__builtin_offsetof(struct vcma_rsp, val) == 48, "rsp.val");
_Static_assert(sizeof(union vcma_slot) == 64, "slot is 64 bytes");
_Static_assert(sizeof(struct vcma_evt_hdr) == 64, "event header is 64 bytes");
_Static_assert(sizeof(struct vcma_evt) == 32, "event slot is 32 bytes");

/* ---- default layout used by vcmad ---- */

#define VCMA_DEFAULT_REQ_SLOTS 64u
#define VCMA_DEFAULT_EVT_SLOTS 64u
/* 64-bit on every target: a hostile slot count must not wrap a size check. */
#define VCMA_RING_BYTES(slots) \
	((uint64_t)sizeof(struct vcma_ring_hdr) + (uint64_t)(slots) * (uint64_t)sizeof(union vcma_slot))
#define VCMA_EVT_BYTES(slots) ((uint64_t)sizeof(struct vcma_evt_hdr) + (uint64_t)(slots) * (uint64_t)sizeof(struct vcma_evt))

static inline uint64_t vcma_page_round(uint64_t bytes)
{
	return (bytes + VCMA_PROTO_PAGE - 1) & ~(uint64_t)(VCMA_PROTO_PAGE - 1);
}

static inline int vcma_is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

/* Ring accessors by offset: callers validated the offsets against the shared size. */
static inline struct vcma_ring_hdr *vcma_req_ring(void *base, const struct vcma_ctrl *c)
{
	return (struct vcma_ring_hdr *)((char *)base + c->req_off);
}

static inline union vcma_slot *vcma_req_slots(struct vcma_ring_hdr *h)
{
	return (union vcma_slot *)(h + 1);
}

static inline struct vcma_evt_hdr *vcma_evt_ring(void *base, const struct vcma_ctrl *c)
{
	return (struct vcma_evt_hdr *)((char *)base + c->evt_off);
}

static inline struct vcma_evt *vcma_evt_slots(struct vcma_evt_hdr *h)
{
	return (struct vcma_evt *)(h + 1);
}

/* Xen's RING_PUSH_*_AND_CHECK_NOTIFY test: did publishing old -> new cross event? */
static inline int vcma_need_notify(uint32_t old_prod, uint32_t new_prod, uint32_t event)
{
	return (uint32_t)(new_prod - event) < (uint32_t)(new_prod - old_prod);
}

#endif
