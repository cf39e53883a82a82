// SPDX-License-Identifier: MIT
/*
 * proto_layout - what the C compiler makes of proto/vcma_proto.h and proto/vcma_sim.h,
 * for test_proto_layout.py to hold tests/integration/proto.py against. One line each:
 *
 *   struct NAME SIZEOF
 *   field  STRUCT MEMBER OFFSETOF SIZEOF
 *   tail   STRUCT MEMBER OFFSETOF          (a run array after the fields proto.py packs)
 *   enum   NAME VALUE                      (enumerators and flag bits)
 *   const  NAME VALUE                      (macros and derived sizes)
 *
 * Every struct proto.py describes is listed here with all of its members.
 */
#include <stddef.h>
#include <stdio.h>

#include "vcma_proto.h"
#include "vcma_sim.h"

#define S(t) printf("struct %s %zu\n", #t, sizeof(struct t))
#define F(t, m) printf("field %s %s %zu %zu\n", #t, #m, offsetof(struct t, m), sizeof(((struct t *)0)->m))
#define T(t, m) printf("tail %s %s %zu\n", #t, #m, offsetof(struct t, m))
#define E(n) printf("enum %s %lld\n", #n, (long long)(n))
#define C(n) printf("const %s %llu\n", #n, (unsigned long long)(n))

int main(void)
{
	/* ---- vcma_proto.h ---- */
	S(vcma_ctrl);
	F(vcma_ctrl, magic);
	F(vcma_ctrl, major);
	F(vcma_ctrl, minor);
	F(vcma_ctrl, hdr_size);
	F(vcma_ctrl, state);
	F(vcma_ctrl, host_features);
	F(vcma_ctrl, guest_features);
	F(vcma_ctrl, generation);
	F(vcma_ctrl, guest_id);
	F(vcma_ctrl, req_off);
	F(vcma_ctrl, req_slots);
	F(vcma_ctrl, evt_off);
	F(vcma_ctrl, evt_slots);
	F(vcma_ctrl, window_off);
	F(vcma_ctrl, window_size);
	F(vcma_ctrl, max_outstanding);
	F(vcma_ctrl, max_regions);
	F(vcma_ctrl, max_bytes);
	F(vcma_ctrl, reserved);

	S(vcma_ring_hdr);
	F(vcma_ring_hdr, req_prod);
	F(vcma_ring_hdr, req_event);
	F(vcma_ring_hdr, rsp_prod);
	F(vcma_ring_hdr, rsp_event);
	F(vcma_ring_hdr, req_poll);
	F(vcma_ring_hdr, pad);

	S(vcma_req);
	F(vcma_req, id);
	F(vcma_req, op);
	F(vcma_req, flags);
	F(vcma_req, handle);
	F(vcma_req, length);
	F(vcma_req, arg0);
	F(vcma_req, arg1);
	F(vcma_req, name);

	S(vcma_rsp);
	F(vcma_rsp, id);
	F(vcma_rsp, status);
	F(vcma_rsp, flags);
	F(vcma_rsp, handle);
	F(vcma_rsp, gpa);
	F(vcma_rsp, bus);
	F(vcma_rsp, length);
	F(vcma_rsp, val[0]);
	F(vcma_rsp, val[1]);

	S(vcma_evt_hdr);
	F(vcma_evt_hdr, evt_prod);
	F(vcma_evt_hdr, evt_event);
	F(vcma_evt_hdr, evt_cons);
	F(vcma_evt_hdr, pad);

	S(vcma_evt);
	F(vcma_evt, type);
	F(vcma_evt, flags);
	F(vcma_evt, handle);
	F(vcma_evt, arg0);
	F(vcma_evt, arg1);

	E(VCMA_STATE_INIT);
	E(VCMA_STATE_READY);
	E(VCMA_STATE_CONNECTED);
	E(VCMA_STATE_CLOSING);
	E(VCMA_STATE_DEAD);
	E(VCMA_F_EVENTS);
	E(VCMA_F_NAMED_POOL);
	E(VCMA_F_LAZY_FREE);
	E(VCMA_OP_HELLO);
	E(VCMA_OP_ALLOC);
	E(VCMA_OP_FREE);
	E(VCMA_OP_QUERY);
	E(VCMA_OP_MAX);
	E(VCMA_ST_OK);
	E(VCMA_ST_INVALID);
	E(VCMA_ST_USE_NORMAL);
	E(VCMA_ST_NO_POOL);
	E(VCMA_ST_ACCESS);
	E(VCMA_ST_QUOTA);
	E(VCMA_ST_NO_SPACE);
	E(VCMA_ST_TOO_BIG);
	E(VCMA_ST_BUSY);
	E(VCMA_ST_NO_REGION);
	E(VCMA_ST_NO_MEMORY);
	E(VCMA_ST_NOT_READY);
	E(VCMA_ST_VERSION);
	E(VCMA_ST_LIMIT);
	E(VCMA_ST_SHUTDOWN);
	E(VCMA_ST_INTERNAL);
	E(VCMA_ST_MAX);
	E(VCMA_EVT_SHUTDOWN);
	E(VCMA_EVT_REGION_GONE);
	E(VCMA_EVT_LENT_RECLAIM);

	C(VCMA_PROTO_MAGIC);
	C(VCMA_PROTO_MAJOR);
	C(VCMA_PROTO_MINOR);
	C(VCMA_PROTO_PAGE);
	C(VCMA_NAME_LEN);
	C(VCMA_F_KNOWN);
	C(VCMA_DEFAULT_REQ_SLOTS);
	C(VCMA_DEFAULT_EVT_SLOTS);
	C(VCMA_RING_BYTES(VCMA_DEFAULT_REQ_SLOTS));
	C(VCMA_EVT_BYTES(VCMA_DEFAULT_EVT_SLOTS));
	C(sizeof(union vcma_slot));

	/* ---- vcma_sim.h ---- */
	S(vcma_sim_attach);
	F(vcma_sim_attach, magic);
	F(vcma_sim_attach, version);
	F(vcma_sim_attach, type);
	F(vcma_sim_attach, role);
	F(vcma_sim_attach, flags);
	F(vcma_sim_attach, ram_bytes);
	F(vcma_sim_attach, name);
	F(vcma_sim_attach, devclass);

	S(vcma_sim_attach_rsp);
	F(vcma_sim_attach_rsp, magic);
	F(vcma_sim_attach_rsp, version);
	F(vcma_sim_attach_rsp, type);
	F(vcma_sim_attach_rsp, status);
	F(vcma_sim_attach_rsp, guest_id);
	F(vcma_sim_attach_rsp, shm_size);
	F(vcma_sim_attach_rsp, ram_frames);
	F(vcma_sim_attach_rsp, machine_bytes);
	F(vcma_sim_attach_rsp, window_gpa);
	F(vcma_sim_attach_rsp, nruns);
	F(vcma_sim_attach_rsp, nfds);

	S(vcma_sim_run);
	F(vcma_sim_run, gfn);
	F(vcma_sim_run, mfn);
	F(vcma_sim_run, count);

	S(vcma_sim_p2m);
	F(vcma_sim_p2m, magic);
	F(vcma_sim_p2m, version);
	F(vcma_sim_p2m, type);
	F(vcma_sim_p2m, nruns);
	F(vcma_sim_p2m, pad);
	T(vcma_sim_p2m, run);

	S(vcma_sim_token);
	F(vcma_sim_token, magic);
	F(vcma_sim_token, version);
	F(vcma_sim_token, type);
	F(vcma_sim_token, guest_id);
	F(vcma_sim_token, grace_ms);
	F(vcma_sim_token, token);

	S(vcma_sim_reattach);
	F(vcma_sim_reattach, magic);
	F(vcma_sim_reattach, version);
	F(vcma_sim_reattach, type);
	F(vcma_sim_reattach, role);
	F(vcma_sim_reattach, flags);
	F(vcma_sim_reattach, guest_id);
	F(vcma_sim_reattach, nruns);
	F(vcma_sim_reattach, ram_bytes);
	F(vcma_sim_reattach, token);
	F(vcma_sim_reattach, name);

	S(vcma_sim_msg);
	F(vcma_sim_msg, magic);
	F(vcma_sim_msg, version);
	F(vcma_sim_msg, type);
	F(vcma_sim_msg, seq);
	F(vcma_sim_msg, status);
	F(vcma_sim_msg, count);
	F(vcma_sim_msg, pad);
	T(vcma_sim_msg, run);

	E(VCMA_SIM_ROLE_GUEST);
	E(VCMA_SIM_ROLE_VMM);
	E(VCMA_SIM_MSG_ATTACH);
	E(VCMA_SIM_MSG_ATTACH_RSP);
	E(VCMA_SIM_MSG_P2M);
	E(VCMA_SIM_MSG_PAUSE);
	E(VCMA_SIM_MSG_REMAP);
	E(VCMA_SIM_MSG_RESUME);
	E(VCMA_SIM_MSG_REUSED);
	E(VCMA_SIM_MSG_PINNED);
	E(VCMA_SIM_MSG_PAUSED);
	E(VCMA_SIM_MSG_REMAPPED);
	E(VCMA_SIM_MSG_REPORT);
	E(VCMA_SIM_MSG_REUSE);
	E(VCMA_SIM_MSG_PIN);
	E(VCMA_SIM_MSG_TOKEN);
	E(VCMA_SIM_MSG_REATTACH);
	E(VCMA_SIM_MSG_REGIONS);

	C(VCMA_SIM_MAGIC);
	C(VCMA_SIM_VERSION);
	C(VCMA_SIM_NAME_LEN);
	C(VCMA_SIM_P2M_RUNS);
	C(VCMA_SIM_MSG_RUNS);
	C(VCMA_SIM_MSG_MAX);
	return 0;
}
