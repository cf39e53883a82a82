// SPDX-License-Identifier: MIT
/*
 * hostile_guest - a guest that breaks the vcma protocol on purpose, one way per
 * scenario, talking raw shared memory (no libvcma). It checks that vcmad cut it off:
 * ctrl.state turns DEAD and the attach socket is closed by the host. Exit 0 when
 * vcmad reacted as the protocol says, 1 when it did not, 99 on setup errors.
 *
 *   hostile_guest SOCKET SCENARIO
 *
 * Scenarios that must get the guest disconnected:
 *   overflow    req_prod published two rings ahead
 *   backwards   req_prod moved backwards after a request
 *   unknown-op  op 77
 *   flags       nonzero flags
 *   reserved    FREE with garbage in unused fields
 *   name        ALLOC whose pool name is not NUL-terminated
 *   align       ALLOC with alignment order 40
 *   flood       requests far above the configured rate (config sets it low)
 *   kickstorm   kicks with no requests, far above the rate
 *   socket      garbage on the attach socket after attaching
 * Scenarios that must only get status codes (and stay connected):
 *   oversized   ALLOC of 2^60 bytes -> TOO_BIG; length 0 -> INVALID; no HELLO -> NOT_READY
 *   stale       FREE of a freed, a foreign-looking and a garbage handle -> NO_REGION
 * The neighbour that must see no error while the others misbehave:
 *   good        allocate and free 1-4 MiB for 3 s, every answer OK
 * Attach-level abuse (refused, never attached):
 *   bad-attach  wrong magic, short message, oversized message, bad name, RAM for a guest
 *
 * Hostile VMMs: attach with role VMM and 4 MiB of RAM, read the p2m, say HELLO on the
 * ring, check that REPORT/REUSE is answered, then break the VMM channel. Cut off (ring
 * DEAD, socket closed by the host):
 *   vmm-magic, vmm-version, vmm-pad   a bad header field
 *   vmm-short        less than a header
 *   vmm-length       count 2, one run sent
 *   vmm-count        count 2^32-1 in a full-size message
 *   vmm-oversized    129 runs: longer than any VMM message
 *   vmm-type         type 99
 *   vmm-hosttype     REMAP, a host -> VMM type
 *   vmm-gfn          REPORT of gfn ram_frames
 *   vmm-tail         REUSE of the last page and one beyond
 *   vmm-zero         REUSE run of 0 pages
 *   vmm-wrap         PIN of gfn 1, 2^64-1 pages (gfn + count wraps)
 *   vmm-mfn          REPORT run with an mfn
 *   vmm-pin-overlap  PIN whose runs overlap
 * Not violations (the VMM must stay served):
 *   vmm-unsolicited  2000 PAUSED/REMAPPED with seqs vcmad never sent: ignored by design
 *   vmm-flood        whole-RAM REPORTs and REUSEs as fast as vcmad takes them for 2 s:
 *                    not a violation (a per-turn page budget confines the cost to
 *                    this VMM); prints the rate it sustained
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_sim.h"

struct raw {
	int sock, kick, irq;
	uint8_t *shm;
	uint64_t size;
	struct vcma_ctrl *ctrl;
	struct vcma_ring_hdr *hdr;
	union vcma_slot *slot;
	uint32_t slots, prod, cons;
	uint64_t next_id;
};

static const char *sock_path;

static int connect_sock(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send raw bytes as the attach message; return the response status, or -1. */
static int attach_raw(const void *msg, size_t len, struct vcma_sim_attach_rsp *rsp, int *fds, int *nfds, int *sock)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { .iov_base = rsp, .iov_len = sizeof(*rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int fd = connect_sock();
	ssize_t n;

	*nfds = 0;
	if (fd < 0)
		return -1;
	if (send(fd, msg, len, 0) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	if (n != (ssize_t)sizeof(*rsp)) {
		close(fd);
		return -1;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_type == SCM_RIGHTS) {
			*nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(cm), sizeof(int) * (size_t)*nfds);
		}
	if (sock)
		*sock = fd;
	else
		close(fd);
	return rsp->status;
}

/* The ring from an attach response: fds [0] shm, [1] kick, [2] irq. */
static int raw_map(struct raw *r, const struct vcma_sim_attach_rsp *rsp, const int *fds)
{
	r->shm = mmap(NULL, rsp->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	close(fds[0]);
	if (r->shm == MAP_FAILED)
		return -1;
	r->size = rsp->shm_size;
	r->kick = fds[1];
	r->irq = fds[2];
	r->ctrl = (struct vcma_ctrl *)r->shm;
	r->hdr = vcma_req_ring(r->shm, r->ctrl);
	r->slot = vcma_req_slots(r->hdr);
	r->slots = r->ctrl->req_slots;
	r->next_id = 1;
	return 0;
}

static int raw_attach(struct raw *r, const char *name)
{
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_GUEST,
	};
	struct vcma_sim_attach_rsp rsp;
	int fds[8], nfds;

	snprintf(a.name, sizeof(a.name), "%s", name);
	memset(r, 0, sizeof(*r));
	if (attach_raw(&a, sizeof(a), &rsp, fds, &nfds, &r->sock) != VCMA_ST_OK || nfds != 3) {
		fprintf(stderr, "hostile: attach failed\n");
		return -1;
	}
	return raw_map(r, &rsp, fds);
}

static void kick(struct raw *r)
{
	uint64_t one = 1;

	if (write(r->kick, &one, sizeof(one)) != sizeof(one)) {
		/* a closed or full kick fd is what a cut-off guest sees; the state
		 * check that follows tells */
	}
}

static void put(struct raw *r, const struct vcma_req *q)
{
	memcpy(&r->slot[r->prod & (r->slots - 1)].req, q, sizeof(*q));
	vcma_store_release(&r->hdr->req_prod, ++r->prod);
	kick(r);
}

/* Wait for the response to the last request; 0 and *out, -1 on timeout/death. */
static int wait_rsp(struct raw *r, struct vcma_rsp *out)
{
	for (int i = 0; i < 2000; i++) {
		uint32_t rp = vcma_load_acquire(&r->hdr->rsp_prod);

		if (rp != r->cons) {
			vcma_copy_from_shared(out, &r->slot[r->cons & (r->slots - 1)].rsp, sizeof(*out));
			r->cons++;
			return 0;
		}
		if (vcma_read_once(&r->ctrl->state) == VCMA_STATE_DEAD)
			return -1;
		usleep(1000);
	}
	return -1;
}

static int call(struct raw *r, struct vcma_req *q, struct vcma_rsp *rsp)
{
	q->id = r->next_id++;
	put(r, q);
	if (wait_rsp(r, rsp))
		return -1;
	if (rsp->id != q->id) {
		fprintf(stderr, "hostile: response id %llu for request %llu\n", (unsigned long long)rsp->id,
			(unsigned long long)q->id);
		return -1;
	}
	return rsp->status;
}

static int hello(struct raw *r)
{
	struct vcma_req q = { .op = VCMA_OP_HELLO, .arg0 = VCMA_PROTO_MAJOR << 16, .arg1 = VCMA_F_KNOWN };
	struct vcma_rsp rsp;

	return call(r, &q, &rsp);
}

/* Did vcmad cut us off? ctrl.state DEAD and the socket closed, within 3 s. */
static bool cut_off(struct raw *r)
{
	struct pollfd p = { .fd = r->sock, .events = POLLIN };
	char buf[16];

	for (int i = 0; i < 300 && vcma_read_once(&r->ctrl->state) != VCMA_STATE_DEAD; i++)
		usleep(10000);
	if (vcma_read_once(&r->ctrl->state) != VCMA_STATE_DEAD) {
		fprintf(stderr, "hostile: ctrl.state is %u, not DEAD\n", vcma_read_once(&r->ctrl->state));
		return false;
	}
	if (poll(&p, 1, 3000) != 1 || recv(r->sock, buf, sizeof(buf), MSG_DONTWAIT) != 0) {
		fprintf(stderr, "hostile: the host did not close the attach socket\n");
		return false;
	}
	return true;
}

static bool still_served(struct raw *r)
{
	struct vcma_req q = { .op = VCMA_OP_QUERY };
	struct vcma_rsp rsp;

	return call(r, &q, &rsp) == VCMA_ST_OK && vcma_read_once(&r->ctrl->state) == VCMA_STATE_CONNECTED;
}

static int expect_status(struct raw *r, struct vcma_req *q, int want, const char *what)
{
	struct vcma_rsp rsp;
	int st = call(r, q, &rsp);

	if (st != want) {
		fprintf(stderr, "hostile: %s: status %d, expected %d\n", what, st, want);
		return 1;
	}
	printf("hostile: %s -> status %d as expected\n", what, st);
	return 0;
}

static int scenario_bad_attach(void)
{
	struct vcma_sim_attach good = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_GUEST, .name = "bad",
	}, a;
	struct vcma_sim_attach_rsp rsp;
	char big[4096];
	int fds[8], nfds, fails = 0;

	a = good;
	a.magic = 0xdeadbeef;
	fails += attach_raw(&a, sizeof(a), &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	fails += attach_raw(&good, 10, &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	memset(big, 'A', sizeof(big));
	memcpy(big, &good, sizeof(good));
	fails += attach_raw(big, sizeof(big), &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	a = good;
	memset(a.name, 'x', sizeof(a.name)); /* not terminated */
	fails += attach_raw(&a, sizeof(a), &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	a = good;
	snprintf(a.name, sizeof(a.name), "../etc");
	fails += attach_raw(&a, sizeof(a), &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	a = good;
	a.ram_bytes = 1 << 20; /* RAM for a plain guest */
	fails += attach_raw(&a, sizeof(a), &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	a = good;
	a.role = VCMA_SIM_ROLE_VMM;
	a.ram_bytes = (1ull << 40) + 4096; /* beyond max_ram_per_guest */
	fails += attach_raw(&a, sizeof(a), &rsp, fds, &nfds, NULL) != VCMA_ST_INVALID || nfds;
	a = good;
	a.version = 99;
	fails += attach_raw(&a, sizeof(a), &rsp, fds, &nfds, NULL) != VCMA_ST_VERSION || nfds;
	printf("hostile: bad-attach: %d of 8 attempts not refused as expected\n", fails);
	return fails ? 1 : 0;
}

/* ---- hostile VMMs: role VMM with 4 MiB of RAM, misbehaving on the VMM channel ---- */

#define VMM_RAM (4ull << 20)

union vmm_buf {
	struct vcma_sim_msg m;
	uint8_t b[VCMA_SIM_MSG_MAX + sizeof(struct vcma_sim_run)]; /* room for one run too many */
};

struct vmm {
	struct raw r; /* the ring, as the VM's guest part would use it */
	uint64_t frames;
};

/* One datagram within ms: its length (0: the host closed the socket), or -1. */
static ssize_t recv_within(int fd, void *buf, size_t len, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, ms) != 1)
		return -1;
	n = recv(fd, buf, len, MSG_DONTWAIT | MSG_TRUNC);
	return n < 0 ? -1 : n;
}

/* Attach as a VMM, read the p2m (it must cover RAM), say HELLO on the ring. */
static int vmm_attach(struct vmm *v, const char *name)
{
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_VMM, .ram_bytes = VMM_RAM,
	};
	struct vcma_sim_attach_rsp rsp;
	struct vcma_sim_p2m *p2m = malloc(sizeof(*p2m));
	struct timeval tv = { .tv_sec = 5 };
	uint64_t gfn = 0;
	uint32_t have = 0;
	int fds[8], nfds, st;

	snprintf(a.name, sizeof(a.name), "%s", name);
	memset(v, 0, sizeof(*v));
	st = attach_raw(&a, sizeof(a), &rsp, fds, &nfds, &v->r.sock);
	if (st != VCMA_ST_OK || nfds != 4 || !p2m) {
		fprintf(stderr, "hostile: VMM attach failed (status %d, %d fds)\n", st, nfds);
		free(p2m);
		return -1;
	}
	close(fds[3]); /* machine memory: this VMM never touches guest RAM */
	if (raw_map(&v->r, &rsp, fds) || rsp.ram_frames != VMM_RAM / VCMA_PROTO_PAGE || !rsp.nruns) {
		fprintf(stderr, "hostile: VMM attach response unusable\n");
		free(p2m);
		return -1;
	}
	v->frames = rsp.ram_frames;
	while (have < rsp.nruns) {
		ssize_t n = recv_within(v->r.sock, p2m, sizeof(*p2m), 5000);

		if (n != (ssize_t)sizeof(*p2m) || p2m->magic != VCMA_SIM_MAGIC || p2m->type != VCMA_SIM_MSG_P2M ||
		    !p2m->nruns || p2m->nruns > VCMA_SIM_P2M_RUNS || p2m->nruns > rsp.nruns - have)
			break;
		for (uint32_t i = 0; i < p2m->nruns && gfn != UINT64_MAX; i++)
			gfn = p2m->run[i].gfn == gfn ? gfn + p2m->run[i].count : UINT64_MAX;
		have += p2m->nruns;
	}
	free(p2m);
	if (have != rsp.nruns || gfn != v->frames) {
		fprintf(stderr, "hostile: VMM got a bad p2m (%u of %u runs, up to gfn %#llx)\n", have, rsp.nruns,
			(unsigned long long)gfn);
		return -1;
	}
	/* a flooding VMM must not block for ever should vcmad stop reading */
	if (setsockopt(v->r.sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		return -1;
	if (hello(&v->r) != VCMA_ST_OK) {
		fprintf(stderr, "hostile: VMM: HELLO on the ring failed\n");
		return -1;
	}
	return 0;
}

/* A well-formed VMM -> host message in u; returns its length. */
static size_t vmm_build(union vmm_buf *u, uint16_t type, uint32_t seq, int32_t status,
			const struct vcma_sim_run *runs, uint32_t n)
{
	memset(&u->m, 0, sizeof(u->m));
	u->m.magic = VCMA_SIM_MAGIC;
	u->m.version = VCMA_SIM_VERSION;
	u->m.type = type;
	u->m.seq = seq;
	u->m.status = status;
	u->m.count = n;
	if (n)
		memcpy(u->b + sizeof(u->m), runs, n * sizeof(*runs));
	return sizeof(u->m) + n * sizeof(*runs);
}

static int vmm_send_raw(struct vmm *v, const void *buf, size_t len)
{
	return send(v->r.sock, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

static int vmm_send(struct vmm *v, uint16_t type, uint32_t seq, int32_t status, const struct vcma_sim_run *runs,
		    uint32_t n)
{
	union vmm_buf u;

	return vmm_send_raw(v, u.b, vmm_build(&u, type, seq, status, runs, n));
}

/* Still served? REPORT one page and REUSE it: the REUSED for seq must come (host
 * messages in between, such as a PAUSE, go unanswered), and the ring must answer a
 * QUERY. *ms: how long the REUSED took. */
static bool vmm_served(struct vmm *v, uint32_t seq, double *ms)
{
	struct vcma_sim_run run = { .gfn = v->frames / 2, .mfn = 0, .count = 1 };
	struct timespec t0, t;
	union vmm_buf u;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (vmm_send(v, VCMA_SIM_MSG_REPORT, 0, 0, &run, 1) || vmm_send(v, VCMA_SIM_MSG_REUSE, seq, 0, &run, 1)) {
		fprintf(stderr, "hostile: cannot send REPORT/REUSE: %s\n", strerror(errno));
		return false;
	}
	for (;;) {
		ssize_t n = recv_within(v->r.sock, u.b, sizeof(u.b), 5000);

		if (n <= 0) {
			fprintf(stderr, "hostile: %s waiting for REUSED %u\n", n ? "timed out" : "socket closed", seq);
			return false;
		}
		if (n >= (ssize_t)sizeof(u.m) && u.m.type == VCMA_SIM_MSG_REUSED && u.m.seq == seq)
			break;
	}
	clock_gettime(CLOCK_MONOTONIC, &t);
	if (ms)
		*ms = (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
	if (!still_served(&v->r)) {
		fprintf(stderr, "hostile: the ring no longer answers\n");
		return false;
	}
	return true;
}

/* Cut off? ctrl.state DEAD within 3 s, and the socket closed by the host once what it
 * sent before (a PAUSE, say) is read. */
static bool vmm_cut_off(struct vmm *v)
{
	union vmm_buf u;

	for (int i = 0; i < 300 && vcma_read_once(&v->r.ctrl->state) != VCMA_STATE_DEAD; i++)
		usleep(10000);
	if (vcma_read_once(&v->r.ctrl->state) != VCMA_STATE_DEAD) {
		fprintf(stderr, "hostile: ctrl.state is %u, not DEAD\n", vcma_read_once(&v->r.ctrl->state));
		return false;
	}
	for (int i = 0; i < 64; i++) {
		ssize_t n = recv_within(v->r.sock, u.b, sizeof(u.b), 3000);

		if (n == 0)
			return true;
		if (n < 0)
			break;
	}
	fprintf(stderr, "hostile: the host did not close the VMM socket\n");
	return false;
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* PAUSED and REMAPPED nobody asked for, with seqs vcmad never sent (it counts from 1;
 * these are 0 or have bit 31 set), random statuses, some with runs: by design they
 * are ignored (late answers to a PAUSE that timed out look the same), so the VMM must
 * stay served. */
static int vmm_unsolicited(struct vmm *v)
{
	uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	unsigned int sent;

	for (sent = 0; sent < 2000; sent++) {
		uint64_t r = xorshift(&x);
		struct vcma_sim_run run = { .gfn = (r >> 8) % v->frames, .mfn = r >> 40, .count = 1 };
		uint32_t seq = sent ? (uint32_t)r | 0x80000000u : 0;
		uint16_t type = sent & 1 ? VCMA_SIM_MSG_REMAPPED : VCMA_SIM_MSG_PAUSED;

		if (vmm_send(v, type, seq, sent & 2 ? (int32_t)(r >> 32) : 0, &run, sent % 8 == 0)) {
			fprintf(stderr, "hostile: vmm-unsolicited: send %u failed: %s\n", sent, strerror(errno));
			return 1;
		}
	}
	if (!vmm_served(v, 77, NULL)) {
		fprintf(stderr, "hostile: vmm-unsolicited: no longer served after %u unsolicited messages\n", sent);
		return 1;
	}
	printf("hostile: vmm-unsolicited: %u PAUSED/REMAPPED with seqs never sent were ignored; still served\n",
	       sent);
	return 0;
}

/* REPORTs and REUSEs of the whole of RAM, alternately (each one changes every page:
 * the most work one message can ask for, its runs being disjoint), as fast as the
 * socket takes them for 2 s. Not a violation: vcmad reads a VMM's channel only up to
 * a page budget per turn, so the flood delays this VMM alone; the test watches that
 * vcmad and its neighbours carry on. Prints what happened; exit 0 either way. */
static int vmm_flood(struct vmm *v)
{
	struct vcma_sim_run run[1];
	struct timespec t0, t;
	union vmm_buf u;
	unsigned long sent = 0;
	double secs = 0, ms = 0;

	run[0] = (struct vcma_sim_run){ .gfn = 0, .mfn = 0, .count = v->frames };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (secs < 2 && !vmm_send(v, sent & 1 ? VCMA_SIM_MSG_REUSE : VCMA_SIM_MSG_REPORT, 0, 0, run, 1)) {
		sent++;
		/* take the REUSED answers: a VMM that stops reading is cut off */
		while (recv(v->r.sock, u.b, sizeof(u.b), MSG_DONTWAIT) > 0)
			;
		clock_gettime(CLOCK_MONOTONIC, &t);
		secs = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
	}
	if (vcma_read_once(&v->r.ctrl->state) == VCMA_STATE_DEAD) {
		printf("hostile: vmm-flood: cut off after %lu REPORTs\n", sent);
		return vmm_cut_off(v) ? 0 : 1;
	}
	if (!vmm_served(v, 99, &ms)) {
		fprintf(stderr, "hostile: vmm-flood: neither served nor cut off after %lu REPORTs\n", sent);
		return 1;
	}
	printf("hostile: vmm-flood: %lu REPORTs (%.0f/s, %.1fM page updates) and still served: REUSE answered "
	       "in %.1f ms\n", sent, (double)sent / secs, (double)sent * (double)v->frames / 1e6, ms);
	return 0;
}

/* The violations: after a good REPORT/REUSE round trip, one bad message, and vcmad
 * must cut the VMM off. The rest: not violations, the VMM must stay served. */
static int scenario_vmm(const char *sc)
{
	struct vcma_sim_run run[VCMA_SIM_MSG_RUNS + 1];
	union vmm_buf u;
	struct vmm v;
	size_t len;

	if (vmm_attach(&v, sc))
		return 99;
	if (!strcmp(sc, "vmm-unsolicited"))
		return vmm_unsolicited(&v);
	if (!strcmp(sc, "vmm-flood"))
		return vmm_flood(&v);
	if (!vmm_served(&v, 1, NULL))
		return 99;
	for (unsigned int i = 0; i <= VCMA_SIM_MSG_RUNS; i++)
		run[i] = (struct vcma_sim_run){ .gfn = i, .mfn = 0, .count = 1 };
	len = vmm_build(&u, VCMA_SIM_MSG_REPORT, 0, 0, run, 1);
	if (!strcmp(sc, "vmm-magic")) {
		u.m.magic = VCMA_SIM_MAGIC ^ 0x01000000u;
	} else if (!strcmp(sc, "vmm-version")) {
		u.m.version = VCMA_SIM_VERSION + 1;
	} else if (!strcmp(sc, "vmm-short")) {
		len = 10; /* less than a header */
	} else if (!strcmp(sc, "vmm-length")) {
		u.m.count = 2; /* one run sent */
	} else if (!strcmp(sc, "vmm-count")) {
		len = vmm_build(&u, VCMA_SIM_MSG_REPORT, 0, 0, run, VCMA_SIM_MSG_RUNS);
		u.m.count = UINT32_MAX; /* a full-size message claiming 2^32-1 runs */
	} else if (!strcmp(sc, "vmm-oversized")) {
		len = vmm_build(&u, VCMA_SIM_MSG_REPORT, 0, 0, run, VCMA_SIM_MSG_RUNS + 1);
	} else if (!strcmp(sc, "vmm-pad")) {
		u.m.pad = 1;
	} else if (!strcmp(sc, "vmm-type")) {
		u.m.type = 99;
	} else if (!strcmp(sc, "vmm-hosttype")) {
		len = vmm_build(&u, VCMA_SIM_MSG_REMAP, 5, 0, NULL, 0); /* host -> VMM only */
	} else if (!strcmp(sc, "vmm-gfn")) {
		run[0] = (struct vcma_sim_run){ .gfn = v.frames, .mfn = 0, .count = 1 };
		len = vmm_build(&u, VCMA_SIM_MSG_REPORT, 0, 0, run, 1);
	} else if (!strcmp(sc, "vmm-tail")) {
		run[1] = (struct vcma_sim_run){ .gfn = v.frames - 1, .mfn = 0, .count = 2 };
		len = vmm_build(&u, VCMA_SIM_MSG_REUSE, 6, 0, run, 2);
	} else if (!strcmp(sc, "vmm-zero")) {
		run[0].count = 0;
		len = vmm_build(&u, VCMA_SIM_MSG_REUSE, 7, 0, run, 1);
	} else if (!strcmp(sc, "vmm-wrap")) {
		run[0] = (struct vcma_sim_run){ .gfn = 1, .mfn = 0, .count = UINT64_MAX }; /* gfn + count wraps to 0 */
		len = vmm_build(&u, VCMA_SIM_MSG_PIN, 8, 0, run, 1);
	} else if (!strcmp(sc, "vmm-mfn")) {
		run[0].mfn = 0x1000; /* REPORT/REUSE/PIN runs carry mfn 0 */
		len = vmm_build(&u, VCMA_SIM_MSG_REPORT, 0, 0, run, 1);
	} else if (!strcmp(sc, "vmm-pin-overlap")) {
		run[0] = (struct vcma_sim_run){ .gfn = 0, .mfn = 0, .count = 16 };
		run[1] = (struct vcma_sim_run){ .gfn = 32, .mfn = 0, .count = 4 };
		run[2] = (struct vcma_sim_run){ .gfn = 8, .mfn = 0, .count = 16 };
		len = vmm_build(&u, VCMA_SIM_MSG_PIN, 9, 0, run, 3);
	} else {
		fprintf(stderr, "hostile: unknown scenario '%s'\n", sc);
		return 99;
	}
	if (vmm_send_raw(&v, u.b, len)) {
		fprintf(stderr, "hostile: %s: send: %s\n", sc, strerror(errno));
		return 99;
	}
	if (!vmm_cut_off(&v))
		return 1;
	printf("hostile: %s: cut off as expected\n", sc);
	return 0;
}

int main(int argc, char **argv)
{
	struct vcma_req q;
	struct vcma_rsp rsp;
	struct raw r;
	const char *sc;

	if (argc != 3) {
		fprintf(stderr, "usage: hostile_guest SOCKET SCENARIO\n");
		return 99;
	}
	sock_path = argv[1];
	sc = argv[2];
	if (!strcmp(sc, "bad-attach"))
		return scenario_bad_attach();
	if (!strncmp(sc, "vmm-", 4))
		return scenario_vmm(sc);
	if (raw_attach(&r, sc))
		return 99;

	if (!strcmp(sc, "oversized") || !strcmp(sc, "stale")) {
		int fails = 0;

		if (!strcmp(sc, "oversized")) {
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_ALLOC;
			q.length = 1 << 20;
			fails += expect_status(&r, &q, VCMA_ST_NOT_READY, "ALLOC before HELLO");
			if (hello(&r) != VCMA_ST_OK)
				return 1;
			q.length = 1ull << 60;
			fails += expect_status(&r, &q, VCMA_ST_TOO_BIG, "ALLOC of 2^60 bytes");
			q.length = 0;
			fails += expect_status(&r, &q, VCMA_ST_INVALID, "ALLOC of 0 bytes");
			q.length = 1ull << 40;
			fails += expect_status(&r, &q, VCMA_ST_TOO_BIG, "ALLOC larger than the pool");
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_HELLO;
			q.arg0 = 7u << 16;
			fails += expect_status(&r, &q, VCMA_ST_VERSION, "HELLO with major version 7");
			q.arg0 = VCMA_PROTO_MAJOR << 16;
			fails += expect_status(&r, &q, VCMA_ST_INVALID, "a second HELLO");
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_QUERY;
			memcpy(q.name, "nosuchpool", 10);
			fails += expect_status(&r, &q, VCMA_ST_NO_POOL, "QUERY of an unknown pool");
		} else {
			uint64_t h;

			if (hello(&r) != VCMA_ST_OK)
				return 1;
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_ALLOC;
			q.length = 1 << 20;
			q.id = r.next_id++;
			put(&r, &q);
			if (wait_rsp(&r, &rsp) || rsp.status != VCMA_ST_OK)
				return 1;
			h = rsp.handle;
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_FREE;
			q.handle = h;
			fails += expect_status(&r, &q, VCMA_ST_OK, "FREE of a live region");
			fails += expect_status(&r, &q, VCMA_ST_NO_REGION, "FREE of the same (stale) handle");
			q.handle = h + 1;
			fails += expect_status(&r, &q, VCMA_ST_NO_REGION, "FREE of a neighbouring slot");
			q.handle = 0xffffffffffffffffull;
			fails += expect_status(&r, &q, VCMA_ST_NO_REGION, "FREE of a garbage handle");
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_QUERY;
			q.handle = 0x100000001ull;
			fails += expect_status(&r, &q, VCMA_ST_NO_REGION, "QUERY of a foreign-looking handle");
		}
		if (!still_served(&r)) {
			fprintf(stderr, "hostile: %s: no longer served\n", sc);
			fails++;
		}
		return fails ? 1 : 0;
	}

	if (hello(&r) != VCMA_ST_OK) {
		fprintf(stderr, "hostile: HELLO failed\n");
		return 99;
	}
	if (!strcmp(sc, "good")) {
		/* the well-behaved neighbour: allocate and free for 3 s, every answer OK */
		struct timespec t0, t;
		unsigned long rounds = 0;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_ALLOC;
			q.length = (1ull << 20) << (rounds % 3);
			if (call(&r, &q, &rsp) != VCMA_ST_OK) {
				fprintf(stderr, "hostile: good guest: ALLOC failed (%d) after %lu rounds\n", rsp.status, rounds);
				return 1;
			}
			memset(&q, 0, sizeof(q));
			q.op = VCMA_OP_FREE;
			q.handle = rsp.handle;
			if (call(&r, &q, &rsp) != VCMA_ST_OK) {
				fprintf(stderr, "hostile: good guest: FREE failed after %lu rounds\n", rounds);
				return 1;
			}
			rounds++;
			usleep(1500); /* ~1000 requests/s: well inside the test's rate limit of 2000/s */
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while (t.tv_sec - t0.tv_sec < 3);
		printf("hostile: good guest: %lu alloc/free rounds, no error\n", rounds);
		return 0;
	}
	memset(&q, 0, sizeof(q));
	q.id = 42;
	if (!strcmp(sc, "overflow")) {
		q.op = VCMA_OP_QUERY;
		memcpy(&r.slot[0].req, &q, sizeof(q));
		vcma_store_release(&r.hdr->req_prod, r.prod + 2 * r.slots);
		kick(&r);
	} else if (!strcmp(sc, "backwards")) {
		q.op = VCMA_OP_QUERY;
		put(&r, &q);
		wait_rsp(&r, &rsp);
		vcma_store_release(&r.hdr->req_prod, r.prod - 5);
		kick(&r);
	} else if (!strcmp(sc, "unknown-op")) {
		q.op = 77;
		put(&r, &q);
	} else if (!strcmp(sc, "flags")) {
		q.op = VCMA_OP_QUERY;
		q.flags = 0x80;
		put(&r, &q);
	} else if (!strcmp(sc, "reserved")) {
		q.op = VCMA_OP_FREE;
		q.handle = 1;
		q.arg1 = 0x4141414141414141ull;
		put(&r, &q);
	} else if (!strcmp(sc, "name")) {
		q.op = VCMA_OP_ALLOC;
		q.length = 1 << 20;
		memset(q.name, 'm', sizeof(q.name));
		put(&r, &q);
	} else if (!strcmp(sc, "align")) {
		q.op = VCMA_OP_ALLOC;
		q.length = 1 << 20;
		q.arg0 = 40;
		put(&r, &q);
	} else if (!strcmp(sc, "flood") || !strcmp(sc, "kickstorm")) {
		bool storm = !strcmp(sc, "kickstorm");
		struct timespec t0, t;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		q.op = VCMA_OP_QUERY;
		for (;;) {
			if (vcma_read_once(&r.ctrl->state) == VCMA_STATE_DEAD)
				break;
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (t.tv_sec - t0.tv_sec > 10)
				break;
			if (storm) {
				kick(&r);
				continue;
			}
			/* keep the ring full: publish whatever room the host left */
			while (r.prod - vcma_load_acquire(&r.hdr->rsp_prod) < r.slots) {
				memcpy(&r.slot[r.prod & (r.slots - 1)].req, &q, sizeof(q));
				r.prod++;
			}
			vcma_store_release(&r.hdr->req_prod, r.prod);
			kick(&r);
		}
	} else if (!strcmp(sc, "socket")) {
		if (send(r.sock, "garbage", 7, 0) != 7)
			return 99;
	} else {
		fprintf(stderr, "hostile: unknown scenario '%s'\n", sc);
		return 99;
	}
	if (!cut_off(&r))
		return 1;
	printf("hostile: %s: cut off as expected\n", sc);
	return 0;
}
