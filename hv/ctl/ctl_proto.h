/* SPDX-License-Identifier: MIT */
/*
 * ctl_proto.h - the control protocol between vcmad and vcmactl, and its request
 * parser. Shared by the daemon (hv/ctl), the client (tools/vcmactl) and the fuzz
 * target; it needs nothing of the daemon.
 *
 * Transport: $runtime_dir/vcmad-ctl.sock, AF_UNIX SOCK_STREAM. One JSON object per
 * line each way, one response per request line, in order:
 *
 *   -> {"version":1,"id":7,"cmd":"pool","pool":"main","width":64}
 *   <- {"version":1,"id":7,"ok":true,"result":{...}}
 *   <- {"version":1,"id":7,"ok":false,"error":{"code":"ENOENT","message":"..."}}
 *
 * "id" is any JSON value and is echoed untouched (null when absent). A line longer
 * than VCMAD_CTL_LINE_MAX is answered EMSGSIZE and the connection is closed; every
 * other bad line is answered with an error and the connection stays open.
 */
#ifndef VCMA_HV_CTL_PROTO_H
#define VCMA_HV_CTL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

#define VCMAD_CTL_VERSION 1
#define VCMAD_CTL_SOCKET "vcmad-ctl.sock"
#define VCMAD_CTL_DEFAULT_SOCKET "/run/vcma/" VCMAD_CTL_SOCKET
#define VCMAD_CTL_LINE_MAX 65536u    /* bytes of one request, newline excluded */
#define VCMAD_CTL_DEPTH_MAX 16       /* JSON nesting */
#define VCMAD_CTL_NAME_MAX 32u       /* pool and guest names, NUL included */
#define VCMAD_CTL_MAP_WIDTH 64u      /* default characters of a fragmentation map */
#define VCMAD_CTL_MAP_WIDTH_MAX 1024u
#define VCMAD_CTL_ALLOC_MAX (1ull << 48)
#define VCMAD_CTL_ALIGN_ORDER_MAX 18u /* 1 GiB, as the core accepts */
#define VCMAD_CTL_HASH_MAX (64ull << 20) /* bytes hash reads in one request: the loop waits */
#define VCMAD_CTL_XML_MAX 60000u         /* domain define: bytes of domain XML */

/* The pseudo-guest that owns vcmactl's test allocations. Real guests start at 1. */
#define VCMAD_CTL_ADMIN_GUEST 0u
#define VCMAD_CTL_ADMIN_NAME "vcmactl"

/* The fragmentation map's alphabet (vcma_pool_fragmap), one block per character. */
#define VCMAD_CTL_MAP_LEGEND                                                           \
	X('.', "free")                                                                \
	X('l', "partly lent")                                                         \
	X('L', "lent")                                                                \
	X('#', "region")                                                              \
	X('r', "region and free or lent")                                             \
	X('~', "being vacated")                                                       \
	X('x', "reserved")

enum vcmad_ctl_cmd {
	VCMAD_CTL_NONE = 0,
	VCMAD_CTL_STATUS,
	VCMAD_CTL_POOLS,
	VCMAD_CTL_POOL,
	VCMAD_CTL_GUESTS,
	VCMAD_CTL_REGIONS,
	VCMAD_CTL_ALLOC,
	VCMAD_CTL_FREE,
	VCMAD_CTL_COMPACT,
	VCMAD_CTL_DRAIN,
	VCMAD_CTL_STATS,
	VCMAD_CTL_HASH,
	VCMAD_CTL_XEN_ATTACH,
	VCMAD_CTL_XEN_DETACH,
	VCMAD_CTL_ATTACH,  /* a libvirt domain: vcma metadata + <shmem> device */
	VCMAD_CTL_DETACH,
	VCMAD_CTL_DOMAIN,  /* define/start/destroy/undefine a libvirt domain */
	VCMAD_CTL_NCMDS
};

/* A validated request. Strings are NUL-terminated names of [A-Za-z0-9_.-]. */
struct vcmad_ctl_req {
	enum vcmad_ctl_cmd cmd;
	struct json_object *id;             /* echoed; NULL if absent; vcmad_ctl_req_fini() puts it */
	char pool[VCMAD_CTL_NAME_MAX];      /* "" when not given */
	bool has_guest;
	uint32_t guest_id;                  /* when guest_name is "" */
	char guest_name[VCMAD_CTL_NAME_MAX];
	uint64_t bytes;                     /* alloc */
	uint32_t align_order;               /* alloc: explicit alignment, 0 = natural */
	uint64_t handle;                    /* free, hash */
	uint32_t width;                     /* pool: map characters */
	char domain[VCMAD_CTL_NAME_MAX];    /* xen-attach, xen-detach: a domain name or decimal domid;
					     * attach, detach, domain: a libvirt domain name */
	char devclass[VCMAD_CTL_NAME_MAX];  /* attach: the guest's device class ("" = none) */
	char action[16];                    /* domain: define, start, destroy or undefine */
	char *xml;                          /* domain define: the domain XML (malloc'd) */
};

/*
 * Parse and validate one request line (len bytes, no newline; need not be
 * NUL-terminated). Returns 0 with *out filled, or a negative errno with a message in
 * err: -EINVAL for anything malformed (not JSON, not an object, bad UTF-8, wrong or
 * missing arguments, unknown command), -EPROTO for a version other than
 * VCMAD_CTL_VERSION, -ENOMEM. On error out->id still holds the request's id when one
 * could be read, so the error can be matched to it. Always call
 * vcmad_ctl_req_fini(out) afterwards. Pure: no state, no I/O.
 */
int vcmad_ctl_parse(const char *line, size_t len, struct vcmad_ctl_req *out, char *err, size_t errlen);
void vcmad_ctl_req_fini(struct vcmad_ctl_req *req);

/*
 * The response envelope for request id (may be NULL): with err == 0 it carries
 * result (owned: put by this call, NULL means {}); otherwise an error object with the
 * errno name of err and msg. Returns a new object or NULL on ENOMEM.
 */
struct json_object *vcmad_ctl_response(struct json_object *id, struct json_object *result, int err,
				       const char *msg);

/* "EINVAL" for -EINVAL or EINVAL; "EUNKNOWN" for what the protocol does not name. */
const char *vcmad_ctl_errname(int err);
/* The command's wire name, or NULL. */
const char *vcmad_ctl_cmd_name(enum vcmad_ctl_cmd cmd);

#endif
