/* SPDX-License-Identifier: MIT */
/*
 * vcma_sim.h - the sim transport's attach handshake (userspace only).
 *
 * A client connects to vcmad's SOCK_SEQPACKET socket ($rundir/vcmad.sock) and sends
 * one struct vcma_sim_attach. vcmad answers with one struct vcma_sim_attach_rsp whose
 * SCM_RIGHTS carry, in order:
 *   [0] the shared ring memory (memfd, rsp.shm_size bytes: control page + rings)
 *   [1] kick eventfd  (guest -> host: "requests published")
 *   [2] irq eventfd   (host -> guest: "responses or events published")
 *   [3] machine memory (memfd) - role VMM only
 * A VMM then receives rsp.nruns p2m runs in struct vcma_sim_p2m messages, at most
 * VCMA_SIM_P2M_RUNS per message, each run mapping [gfn, gfn+count) to
 * [mfn, mfn+count).
 *
 * The connection lives as long as the guest: closing it detaches the guest, and
 * vcmad reclaims its regions and memory. On a VMM connection both sides then speak
 * the VMM channel below (pause/remap for vacating, free page reporting).
 *
 * Role GUEST is the guest driver alone (libvcma's vcma_attach()). Role VMM is a
 * simulated VM's hypervisor-facing side (vcma-simvm): it is trusted the way QEMU is
 * trusted with its guest's memory, and it passes the ring fds to its guest part.
 */
#ifndef VCMA_SIM_H
#define VCMA_SIM_H

#include <stdint.h>

#define VCMA_SIM_MAGIC 0x4d495356u /* "VSIM" */
#define VCMA_SIM_VERSION 1u
#define VCMA_SIM_SOCKET "vcmad.sock"
#define VCMA_SIM_NAME_LEN 32u

enum vcma_sim_role {
	VCMA_SIM_ROLE_GUEST = 1,
	VCMA_SIM_ROLE_VMM = 2,
};

enum vcma_sim_msg_type {
	VCMA_SIM_MSG_ATTACH = 1,
	VCMA_SIM_MSG_ATTACH_RSP = 2,
	VCMA_SIM_MSG_P2M = 3,
	VCMA_SIM_MSG_TOKEN = 4,    /* host -> client: how to reattach after a host restart */
	VCMA_SIM_MSG_REATTACH = 5, /* client -> host: take back what a restarted host kept */
	VCMA_SIM_MSG_REGIONS = 6,  /* host -> client: the regions it holds, after a reattach */
};

/* What a VMM can do beyond PAUSE/REMAP/RESUME (attach flags; a GUEST sends 0). */
#define VCMA_SIM_F_ONE_TRIP 0x1u  /* REMAP_RESUME and DROP */
#define VCMA_SIM_F_DIRTY_LOG 0x2u /* TRACK, UNTRACK, DIRTY_READ: it logs writes to RAM */
/* Either role: the client will reattach if the host restarts (a TOKEN follows the response). */
#define VCMA_SIM_F_REATTACH 0x4u
#define VCMA_SIM_F_ALL (VCMA_SIM_F_ONE_TRIP | VCMA_SIM_F_DIRTY_LOG | VCMA_SIM_F_REATTACH)
#define VCMA_SIM_F_GUEST VCMA_SIM_F_REATTACH /* the only flag role GUEST may set */

struct vcma_sim_attach {
	uint32_t magic;   /* VCMA_SIM_MAGIC */
	uint16_t version; /* VCMA_SIM_VERSION */
	uint16_t type;    /* VCMA_SIM_MSG_ATTACH */
	uint32_t role;    /* enum vcma_sim_role */
	uint32_t flags;   /* VMM: VCMA_SIM_F_*; GUEST: 0 */
	uint64_t ram_bytes; /* VMM: guest RAM to back, a multiple of 4096; GUEST: 0 */
	char name[VCMA_SIM_NAME_LEN];     /* guest name, NUL-terminated, [A-Za-z0-9_.-] */
	char devclass[VCMA_SIM_NAME_LEN]; /* device class, may be empty */
};

struct vcma_sim_attach_rsp {
	uint32_t magic;
	uint16_t version;
	uint16_t type;      /* VCMA_SIM_MSG_ATTACH_RSP */
	int32_t status;     /* enum vcma_status; no fds unless VCMA_ST_OK */
	uint32_t guest_id;
	uint64_t shm_size;  /* bytes of fd [0] */
	uint64_t ram_frames; /* VMM: guest RAM frames, gfn 0 .. ram_frames-1 */
	uint64_t machine_bytes; /* VMM: size of fd [3] */
	uint64_t window_gpa; /* guest-physical base above RAM where regions appear */
	uint32_t nruns;      /* VMM: p2m runs that follow */
	uint32_t nfds;       /* fds attached */
};

struct vcma_sim_run {
	uint64_t gfn;
	uint64_t mfn;
	uint64_t count;
};

#define VCMA_SIM_P2M_RUNS 128u

/*
 * ---- restart and reattach (docs/PROTOCOL.md §9.1 "Restart and reattach") ----
 *
 * A client that set VCMA_SIM_F_REATTACH gets one TOKEN right after the response (before
 * any P2M). If vcmad restarts, the connection ends without DEAD; the restarted vcmad
 * keeps the guest's regions (and a VMM's RAM) for grace_ms. The client then connects
 * again and sends one REATTACH (a VMM follows it with its own p2m as P2M messages,
 * client -> host). The host answers with an ATTACH_RSP (status, fresh ring fds; a VMM
 * gets the machine memory again) whose nruns counts the regions it holds, then a new
 * TOKEN, then the regions as REGIONS messages (struct vcma_sim_p2m, run = {handle,
 * first machine frame, frames}). The old ring is gone: the client lays its ring state
 * anew on the new area and sends HELLO.
 */
struct vcma_sim_token {
	uint32_t magic;
	uint16_t version;
	uint16_t type;     /* VCMA_SIM_MSG_TOKEN */
	uint32_t guest_id; /* what to reattach as */
	uint32_t grace_ms; /* a restarted host keeps the guest this long after it starts */
	uint8_t token[16]; /* secret: whoever shows it (and the same uid) is this guest */
};

struct vcma_sim_reattach {
	uint32_t magic;
	uint16_t version;
	uint16_t type;     /* VCMA_SIM_MSG_REATTACH */
	uint32_t role;     /* as at the attach */
	uint32_t flags;    /* VMM: VCMA_SIM_F_* it can do now (REATTACH implied); GUEST: 0 or REATTACH */
	uint32_t guest_id; /* from the last TOKEN */
	uint32_t nruns;    /* VMM: p2m runs that follow in P2M messages (its RAM, exactly once); GUEST: 0 */
	uint64_t ram_bytes; /* VMM: as at the attach; GUEST: 0 */
	uint8_t token[16];  /* from the last TOKEN */
	char name[VCMA_SIM_NAME_LEN]; /* as at the attach */
};

struct vcma_sim_p2m {
	uint32_t magic;
	uint16_t version;
	uint16_t type;   /* VCMA_SIM_MSG_P2M */
	uint32_t nruns;  /* in this message */
	uint32_t pad;
	struct vcma_sim_run run[VCMA_SIM_P2M_RUNS];
};

/*
 * ---- the VMM channel: lending and vacating (role VMM only) ----
 *
 * After the p2m, the attach socket carries these messages both ways; each is one
 * SOCK_SEQPACKET datagram: struct vcma_sim_msg followed by `count` runs (at most
 * VCMA_SIM_MSG_RUNS). For REPORT/REUSE/PIN the runs' mfn is 0.
 *
 * host -> VMM
 *   PAUSE    seq            park every vCPU (let it finish the page it is on), then PAUSED
 *   REMAP    seq, runs      while paused: map [gfn, gfn+count) to machine [mfn, ...), then
 *                           REMAPPED with status 0 or a positive errno
 *   RESUME   seq            unpark the vCPUs; no answer
 *   REUSED   seq            the REUSE with this seq is recorded: the pages may be written
 *   PINNED   seq, status    the PIN with this seq is done: no pinned page is on a pool frame
 *   -- VCMA_SIM_F_ONE_TRIP --
 *   REMAP_RESUME seq, runs  while paused: REMAP, then unpark (as RESUME), then REMAPPED
 *   DROP     seq, runs      paused or not: map reported pages (not reused) to fresh frames,
 *                           then DROPPED
 *   -- VCMA_SIM_F_DIRTY_LOG --
 *   TRACK    seq, runs      log writes to these gfns from now on, then TRACKING
 *   UNTRACK  seq, runs      stop logging them; no answer
 *   DIRTY_READ seq          DIRTY: the logged gfns written since TRACK or the last read
 *                           (and clear that); during a pause only once every vCPU is parked
 * VMM -> host
 *   PAUSED   seq            all vCPUs are parked
 *   REMAPPED seq, status    (REMAP and REMAP_RESUME: all runs applied, or none)
 *   REPORT   runs           the guest does not use these pages (free page reporting): their
 *                           contents may be dropped at any time, they read back as zeros or
 *                           stale data, until a REUSE for them is answered
 *   REUSE    seq, runs      the guest wants to use these reported pages again; it does not
 *                           touch them before REUSED
 *   PIN      seq, runs      the guest will pin these pages (DMA): never back them with a
 *                           lendable pool frame; answered by PINNED
 *   DIRTY    seq, status, runs  one answer to DIRTY_READ: messages of exactly 128 runs, then
 *                           one of fewer (maybe 0) that ends it; status on the last: 0, or a
 *                           positive errno (no log: every tracked gfn counts as written)
 *   TRACKING seq, status    0: every write from now on is logged; errno: it cannot log
 *   DROPPED  seq, status    (all runs applied, or none)
 *
 * The host sends PAUSE, then REMAP(s), then RESUME (or one REMAP_RESUME), never two
 * PAUSEs at once. A VMM that does not answer PAUSE within the host's pause timeout gets
 * a RESUME for that seq (it must unpark whenever it sees RESUME, paused or not) and the
 * vacate fails. docs/PROTOCOL.md §9.1 has the ordering rules (pre-copy, drops, REUSE).
 */
enum vcma_sim_vmm_msg {
	VCMA_SIM_MSG_PAUSE = 10,
	VCMA_SIM_MSG_REMAP = 11,
	VCMA_SIM_MSG_RESUME = 12,
	VCMA_SIM_MSG_REUSED = 13,
	VCMA_SIM_MSG_PINNED = 14,
	VCMA_SIM_MSG_REMAP_RESUME = 15,
	VCMA_SIM_MSG_DROP = 16,
	VCMA_SIM_MSG_TRACK = 17,
	VCMA_SIM_MSG_UNTRACK = 18,
	VCMA_SIM_MSG_DIRTY_READ = 19,
	VCMA_SIM_MSG_PAUSED = 20,
	VCMA_SIM_MSG_REMAPPED = 21,
	VCMA_SIM_MSG_REPORT = 22,
	VCMA_SIM_MSG_REUSE = 23,
	VCMA_SIM_MSG_PIN = 24,
	VCMA_SIM_MSG_DIRTY = 25,
	VCMA_SIM_MSG_TRACKING = 26,
	VCMA_SIM_MSG_DROPPED = 27,
};

#define VCMA_SIM_MSG_RUNS 128u

struct vcma_sim_msg {
	uint32_t magic;   /* VCMA_SIM_MAGIC */
	uint16_t version; /* VCMA_SIM_VERSION */
	uint16_t type;    /* enum vcma_sim_vmm_msg */
	uint32_t seq;
	int32_t status;   /* REMAPPED, PINNED, DIRTY, TRACKING, DROPPED: 0 or a positive errno */
	uint32_t count;   /* runs that follow */
	uint32_t pad;
	struct vcma_sim_run run[];
};

#define VCMA_SIM_MSG_MAX (sizeof(struct vcma_sim_msg) + VCMA_SIM_MSG_RUNS * sizeof(struct vcma_sim_run))

_Static_assert(sizeof(struct vcma_sim_msg) == 24, "sim VMM message header size");
_Static_assert(sizeof(struct vcma_sim_attach) == 88, "sim attach size");
_Static_assert(sizeof(struct vcma_sim_attach_rsp) == 56, "sim attach response size");
_Static_assert(sizeof(struct vcma_sim_p2m) == 16 + 24 * VCMA_SIM_P2M_RUNS, "sim p2m size");
_Static_assert(sizeof(struct vcma_sim_token) == 32, "sim token size");
_Static_assert(sizeof(struct vcma_sim_reattach) == 80, "sim reattach size");

#endif
