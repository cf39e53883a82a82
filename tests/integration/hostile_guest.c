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
 * Shared fds, limits, identity, shutdown (exit 0 when vcmad did what PROTOCOL.md says):
 *   irq-block      make the irq eventfd blocking and fill it to 2^64-2, then send a
 *                  request: vcmad must not block writing the irq; it cuts us off
 *   kick-steal     make the kick eventfd blocking; four threads take kicks from it
 *                  just after they become visible, while requests go in for 2 s:
 *                  vcmad must not block reading it, and we are still served after
 *   batch-quota    post ring_slots-1 ALLOCs of 8 MiB in one batch (the pool is lent
 *                  out, so they wait for vacates) and print how many got each status
 *   query-access   QUERY of an exclusive pool bound to a class we are not: ACCESS
 *   closing        a VMM with a region it wrote: on SIGTERM (sent by the test after
 *                  "ready") the state goes CLOSING, a SHUTDOWN event arrives, requests
 *                  get SHUTDOWN, the region's bytes stay; then detach
 *   closing-stay   the same, but stay attached: vcmad exits after its grace period
 *                  and the region's bytes are still there after it is gone
 *   identity       (run with --uid of an unprivileged user) claim a class, a QEMU
 *                  guest's name, the reserved name, the VMM role, a configured sim
 *                  guest's name, a name in use: each refused; a plain name and a
 *                  configured guest listing our uid attach
 *   identity-root  (as root) a configured guest's name with another class, vcmactl
 *                  and a QEMU guest's name are refused; the configured name attaches
 *                  with the configured class
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
 *   vmm-paused-runs, vmm-paused-status, vmm-remapped-status, vmm-report-status,
 *   vmm-dirty-status, vmm-dropped-runs, vmm-tracking-status, vmm-dirty-overlap
 *                    an answer with runs or a status the message may not carry
 * Not violations (the VMM must stay served):
 *   vmm-unsolicited  2000 PAUSED/REMAPPED/TRACKING/DROPPED/DIRTY with seqs vcmad never
 *                    sent: ignored by design
 *   vmm-flood        whole-RAM REPORTs and REUSEs as fast as vcmad takes them for 2 s:
 *                    not a violation (a per-turn page budget confines the cost to
 *                    this VMM); prints the rate it sustained
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
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
 * these are 0 or have bit 31 set), REMAPPED with random positive statuses: by design
 * they are ignored (late answers to a PAUSE that timed out look the same), so the
 * VMM must stay served. */
static int vmm_unsolicited(struct vmm *v)
{
	uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	unsigned int sent;

	for (sent = 0; sent < 2000; sent++) {
		uint64_t r = xorshift(&x);
		uint32_t seq = sent ? (uint32_t)r | 0x80000000u : 0;
		static const uint16_t types[] = { VCMA_SIM_MSG_PAUSED, VCMA_SIM_MSG_REMAPPED, VCMA_SIM_MSG_TRACKING,
						  VCMA_SIM_MSG_DROPPED, VCMA_SIM_MSG_DIRTY };
		uint16_t type = types[sent % 5];
		/* well-formed: no runs (DIRTY: one inside RAM); the answers but PAUSED may
		 * carry a positive errno */
		int32_t status = type != VCMA_SIM_MSG_PAUSED && (sent & 2) ? (int32_t)((r >> 32) & 0x7fffffff) : 0;
		struct vcma_sim_run one = { .gfn = (r >> 8) % v->frames, .mfn = 0, .count = 1 };

		if (vmm_send(v, type, seq, status, type == VCMA_SIM_MSG_DIRTY ? &one : NULL,
			     type == VCMA_SIM_MSG_DIRTY)) {
			fprintf(stderr, "hostile: vmm-unsolicited: send %u failed: %s\n", sent, strerror(errno));
			return 1;
		}
	}
	if (!vmm_served(v, 77, NULL)) {
		fprintf(stderr, "hostile: vmm-unsolicited: no longer served after %u unsolicited messages\n", sent);
		return 1;
	}
	printf("hostile: vmm-unsolicited: %u PAUSED/REMAPPED/TRACKING/DROPPED/DIRTY with seqs never sent were "
	       "ignored; still served\n",
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
	} else if (!strcmp(sc, "vmm-paused-runs")) {
		len = vmm_build(&u, VCMA_SIM_MSG_PAUSED, 0, 0, run, 1); /* an answer carries no runs */
	} else if (!strcmp(sc, "vmm-paused-status")) {
		len = vmm_build(&u, VCMA_SIM_MSG_PAUSED, 0, 5, NULL, 0);
	} else if (!strcmp(sc, "vmm-remapped-status")) {
		len = vmm_build(&u, VCMA_SIM_MSG_REMAPPED, 0, -1, NULL, 0); /* 0 or a positive errno */
	} else if (!strcmp(sc, "vmm-report-status")) {
		len = vmm_build(&u, VCMA_SIM_MSG_REPORT, 0, 1, run, 1);
	} else if (!strcmp(sc, "vmm-dirty-status")) {
		/* a status only on the part that ends the answer (fewer than 128 runs) */
		len = vmm_build(&u, VCMA_SIM_MSG_DIRTY, 3, 5, run, VCMA_SIM_MSG_RUNS);
	} else if (!strcmp(sc, "vmm-dropped-runs")) {
		len = vmm_build(&u, VCMA_SIM_MSG_DROPPED, 3, 0, run, 1);
	} else if (!strcmp(sc, "vmm-tracking-status")) {
		len = vmm_build(&u, VCMA_SIM_MSG_TRACKING, 3, -22, NULL, 0);
	} else if (!strcmp(sc, "vmm-dirty-overlap")) {
		run[1] = (struct vcma_sim_run){ .gfn = 0, .mfn = 0, .count = 2 };
		len = vmm_build(&u, VCMA_SIM_MSG_DIRTY, 3, 0, run, 2);
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

/* ---- shared fds: nothing a guest does to them may block vcmad ---- */

static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) ? -1 : 0;
}

static int scenario_irq_block(struct raw *r)
{
	uint64_t full = 0xfffffffffffffffeull;
	struct vcma_req q = { .id = 7, .op = VCMA_OP_QUERY };

	uint64_t v;

	if (hello(r) != VCMA_ST_OK)
		return 99;
	/* the irq counter at its maximum and the shared file description blocking: an
	 * eventfd write of 1 would sleep until somebody reads (first take the HELLO's irq) */
	if (read(r->irq, &v, sizeof(v)) != sizeof(v) || set_blocking(r->irq) ||
	    write(r->irq, &full, sizeof(full)) != sizeof(full)) {
		fprintf(stderr, "hostile: irq-block: cannot prepare the irq fd: %s\n", strerror(errno));
		return 99;
	}
	vcma_write_once(&r->hdr->rsp_event, r->cons + 1); /* ask for the irq the answer raises */
	vcma_mb();
	put(r, &q);
	if (!cut_off(r))
		return 1;
	printf("hostile: irq-block: cut off, vcmad did not block on the irq eventfd\n");
	return 0;
}

struct thief {
	int fd;
	volatile int stop;
	int running; /* atomic */
	unsigned long stolen;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Steal kicks in the window that hurts: after the kick is visible (vcmad's epoll may
 * have reported it) and before vcmad reads it. A reader blocked in read() would take
 * every kick before epoll could report it; so wait until the kick is visible, let a
 * few microseconds pass, then take it with a blocking read, which waits for the next
 * kick when vcmad was first. */
static void *thief_run(void *arg)
{
	struct thief *t = arg;
	uint64_t v, x = (uint64_t)(uintptr_t)&v ^ now_ns();

	while (!t->stop) {
		struct pollfd p = { .fd = t->fd, .events = POLLIN };
		uint64_t until;

		if (poll(&p, 1, 100) != 1)
			continue;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		for (until = now_ns() + x % 20000; now_ns() < until;)
			;
		if (read(t->fd, &v, sizeof(v)) == sizeof(v))
			__atomic_fetch_add(&t->stolen, 1, __ATOMIC_RELAXED);
	}
	__atomic_fetch_sub(&t->running, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int scenario_kick_steal(struct raw *r)
{
	struct thief t = { .fd = r->kick };
	pthread_t th[4];
	struct timespec t0, t1;
	unsigned long sent = 0, answered = 0;
	uint64_t one = 1;

	if (hello(r) != VCMA_ST_OK)
		return 99;
	if (set_blocking(r->kick))
		return 99;
	t.running = 4;
	for (int i = 0; i < 4; i++)
		if (pthread_create(&th[i], NULL, thief_run, &t))
			return 99;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		struct vcma_req q = { .op = VCMA_OP_QUERY };
		uint32_t rp = vcma_load_acquire(&r->hdr->rsp_prod);

		/* take whatever was answered; publish one more if there is room */
		while (r->cons != rp) {
			r->cons++;
			answered++;
		}
		if (r->prod - r->cons < r->slots) {
			q.id = r->next_id++;
			put(r, &q);
			sent++;
		} else {
			kick(r);
		}
		if (vcma_read_once(&r->ctrl->state) == VCMA_STATE_DEAD) {
			fprintf(stderr, "hostile: kick-steal: cut off (kicks stolen are not a violation)\n");
			return 1;
		}
		usleep(2000);
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while (t1.tv_sec - t0.tv_sec < 2);
	t.stop = 1;
	/* wake the thieves: vcmad may take a kick before they do, so kick until both left */
	for (int i = 0; i < 5000 && __atomic_load_n(&t.running, __ATOMIC_ACQUIRE); i++) {
		if (write(r->kick, &one, sizeof(one)) != sizeof(one))
			break;
		usleep(1000);
	}
	if (__atomic_load_n(&t.running, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "hostile: kick-steal: the reader threads did not stop\n");
		return 99;
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	fcntl(r->kick, F_SETFL, fcntl(r->kick, F_GETFL) | O_NONBLOCK);
	/* answers to what the thieves' stolen kicks hid arrive with the next kick */
	for (int i = 0; i < 300 && r->cons != r->prod; i++) {
		uint32_t rp;

		kick(r);
		usleep(10000);
		rp = vcma_load_acquire(&r->hdr->rsp_prod);
		while (r->cons != rp) {
			r->cons++;
			answered++;
		}
	}
	if (r->cons != r->prod || !still_served(r)) {
		fprintf(stderr, "hostile: kick-steal: not served after the thieves stopped (%lu of %lu answered)\n",
			answered, sent);
		return 1;
	}
	printf("hostile: kick-steal: %lu requests, %lu kicks stolen by blocking readers; all answered, still served\n",
	       sent, t.stolen);
	return 0;
}

/* ---- limits count what is promised ---- */

static int scenario_batch_quota(struct raw *r)
{
	uint32_t n = r->slots - 1, got = 0, st[32] = { 0 };
	uint64_t *handles = calloc(n, sizeof(*handles));
	uint32_t nh = 0;

	if (!handles || hello(r) != VCMA_ST_OK)
		return 99;
	for (uint32_t i = 0; i < n; i++) {
		struct vcma_req q = { .id = r->next_id++, .op = VCMA_OP_ALLOC, .length = 8ull << 20 };

		memcpy(&r->slot[r->prod & (r->slots - 1)].req, &q, sizeof(q));
		r->prod++;
	}
	vcma_store_release(&r->hdr->req_prod, r->prod); /* one batch, one kick */
	kick(r);
	for (int i = 0; i < 60000 && got < n; i++) {
		uint32_t rp = vcma_load_acquire(&r->hdr->rsp_prod);

		while (r->cons != rp && got < n) {
			struct vcma_rsp rsp;

			vcma_copy_from_shared(&rsp, &r->slot[r->cons & (r->slots - 1)].rsp, sizeof(rsp));
			r->cons++;
			got++;
			st[rsp.status >= 0 && rsp.status < 32 ? rsp.status : 31]++;
			if (rsp.status == VCMA_ST_OK)
				handles[nh++] = rsp.handle;
		}
		if (vcma_read_once(&r->ctrl->state) == VCMA_STATE_DEAD)
			return 1;
		usleep(1000);
	}
	printf("hostile: batch-quota: posted %u, answered %u: ok=%u quota=%u limit=%u nospace=%u busy=%u other=%u\n",
	       n, got, st[VCMA_ST_OK], st[VCMA_ST_QUOTA], st[VCMA_ST_LIMIT], st[VCMA_ST_NO_SPACE], st[VCMA_ST_BUSY],
	       got - st[VCMA_ST_OK] - st[VCMA_ST_QUOTA] - st[VCMA_ST_LIMIT] - st[VCMA_ST_NO_SPACE] - st[VCMA_ST_BUSY]);
	for (uint32_t i = 0; i < nh; i++) {
		struct vcma_req q = { .op = VCMA_OP_FREE, .handle = handles[i] };
		struct vcma_rsp rsp;

		if (call(r, &q, &rsp) != VCMA_ST_OK)
			return 1;
	}
	free(handles);
	return got == n ? 0 : 1;
}

static int scenario_query_access(struct raw *r)
{
	struct vcma_req q = { .op = VCMA_OP_QUERY };
	int fails = 0;

	if (hello(r) != VCMA_ST_OK)
		return 99;
	memcpy(q.name, "camera", 6);
	fails += expect_status(r, &q, VCMA_ST_ACCESS, "QUERY of a pool bound to class camera");
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_QUERY;
	memcpy(q.name, "main", 4);
	fails += expect_status(r, &q, VCMA_ST_OK, "QUERY of the shared pool");
	return fails ? 1 : 0;
}

/* ---- CLOSING: requests answered SHUTDOWN, regions valid until we detach ---- */

static uint64_t pattern_word(uint64_t i)
{
	return (i + 1) * 0x9e3779b97f4a7c15ull;
}

static int scenario_closing(bool stay)
{
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_VMM, .ram_bytes = 4ull << 20,
	};
	struct vcma_sim_attach_rsp arsp;
	struct vcma_req q;
	struct vcma_rsp rsp;
	struct raw r;
	int fds[8], nfds;
	uint64_t *win, words = (1ull << 20) / 8;
	struct vcma_evt_hdr *eh;
	bool shutdown_evt = false;

	snprintf(a.name, sizeof(a.name), "%s", stay ? "closing-stay" : "closing");
	memset(&r, 0, sizeof(r));
	if (attach_raw(&a, sizeof(a), &arsp, fds, &nfds, &r.sock) != VCMA_ST_OK || nfds != 4 || raw_map(&r, &arsp, fds))
		return 99;
	if (hello(&r) != VCMA_ST_OK)
		return 99;
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_ALLOC;
	q.length = 1ull << 20;
	if (call(&r, &q, &rsp) != VCMA_ST_OK)
		return 99;
	win = mmap(NULL, 1ull << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fds[3], (off_t)rsp.bus);
	if (win == MAP_FAILED)
		return 99;
	for (uint64_t i = 0; i < words; i++)
		win[i] = pattern_word(i);
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < 2000 && vcma_load_acquire(&r.ctrl->state) != VCMA_STATE_CLOSING; i++)
		usleep(10000);
	if (vcma_load_acquire(&r.ctrl->state) != VCMA_STATE_CLOSING) {
		fprintf(stderr, "hostile: closing: state %u, never CLOSING\n", vcma_read_once(&r.ctrl->state));
		return 1;
	}
	eh = (struct vcma_evt_hdr *)(r.shm + r.ctrl->evt_off);
	for (uint32_t i = 0; i < vcma_load_acquire(&eh->evt_prod); i++) {
		struct vcma_evt *e = (struct vcma_evt *)((uint8_t *)eh + 64 + 32 * (i & (r.ctrl->evt_slots - 1)));

		shutdown_evt |= e->type == VCMA_EVT_SHUTDOWN;
	}
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_ALLOC;
	q.length = 1ull << 20;
	if (!shutdown_evt || expect_status(&r, &q, VCMA_ST_SHUTDOWN, "ALLOC while CLOSING"))
		return 1;
	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_QUERY;
	q.handle = rsp.handle;
	if (expect_status(&r, &q, VCMA_ST_SHUTDOWN, "QUERY while CLOSING"))
		return 1;
	if (stay) {
		/* vcmad leaves after its grace period: the socket closes (after the p2m
		 * messages this VMM never read) */
		union vmm_buf u;
		ssize_t n;

		while ((n = recv_within(r.sock, u.b, sizeof(u.b), 30000)) > 0)
			;
		if (n != 0) {
			fprintf(stderr, "hostile: closing-stay: vcmad did not close the connection\n");
			return 1;
		}
	} else {
		usleep(300000);
	}
	for (uint64_t i = 0; i < words; i++)
		if (win[i] != pattern_word(i)) {
			fprintf(stderr, "hostile: closing: the region changed at byte %#llx while still ours\n",
				(unsigned long long)(i * 8));
			return 1;
		}
	printf("hostile: %s: CLOSING, SHUTDOWN event, requests answered SHUTDOWN, region intact%s\n",
	       stay ? "closing-stay" : "closing", stay ? " after vcmad exited" : "; detaching");
	return 0;
}

/* ---- identity: from the config and the peer's credentials, not the attach ---- */

static int try_attach(const char *name, const char *devclass, uint32_t role, int want, int *sock)
{
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH, .role = role,
		.ram_bytes = role == VCMA_SIM_ROLE_VMM ? 4ull << 20 : 0,
	};
	struct vcma_sim_attach_rsp rsp;
	int fds[8], nfds, st;

	snprintf(a.name, sizeof(a.name), "%s", name);
	snprintf(a.devclass, sizeof(a.devclass), "%s", devclass);
	st = attach_raw(&a, sizeof(a), &rsp, fds, &nfds, sock);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (st != want) {
		fprintf(stderr, "hostile: attach as %s%s%s%s: status %d, expected %d\n",
			role == VCMA_SIM_ROLE_VMM ? "VMM " : "", name, devclass[0] ? " class " : "", devclass, st, want);
		return 1;
	}
	printf("hostile: attach as %s%s%s%s: status %d as expected\n", role == VCMA_SIM_ROLE_VMM ? "VMM " : "", name,
	       devclass[0] ? " class " : "", devclass, st);
	if (st != VCMA_ST_OK && sock && *sock >= 0) {
		close(*sock);
		*sock = -1;
	}
	return 0;
}

static int scenario_identity(bool root)
{
	int fails = 0, s1 = -1, s2 = -1, s3 = -1;
	struct raw r;
	struct vcma_req q = { .op = VCMA_OP_QUERY };

	fails += try_attach("vcmactl", "", VCMA_SIM_ROLE_GUEST, VCMA_ST_ACCESS, NULL);
	fails += try_attach("cam0", "", VCMA_SIM_ROLE_GUEST, VCMA_ST_ACCESS, NULL);
	fails += try_attach("ivi", "camera", VCMA_SIM_ROLE_GUEST, VCMA_ST_ACCESS, NULL);
	if (root) {
		/* the configured name with its configured class: attached, and the class
		 * (display) is what the pools see */
		if (raw_attach(&r, "ivi") || hello(&r) != VCMA_ST_OK)
			return 1;
		memcpy(q.name, "camera", 6);
		fails += expect_status(&r, &q, VCMA_ST_ACCESS, "ivi: QUERY of the camera class's pool");
		memset(&q, 0, sizeof(q));
		q.op = VCMA_OP_QUERY;
		memcpy(q.name, "display", 7);
		fails += expect_status(&r, &q, VCMA_ST_OK, "ivi: QUERY of the display class's pool");
		fails += try_attach("ivi", "", VCMA_SIM_ROLE_GUEST, VCMA_ST_BUSY, NULL);
		return fails ? 1 : 0;
	}
	fails += try_attach("ivi", "", VCMA_SIM_ROLE_GUEST, VCMA_ST_ACCESS, NULL);
	fails += try_attach("anon-1", "camera", VCMA_SIM_ROLE_GUEST, VCMA_ST_ACCESS, NULL);
	fails += try_attach("anon-2", "", VCMA_SIM_ROLE_VMM, VCMA_ST_ACCESS, NULL);
	fails += try_attach("anon-3", "", VCMA_SIM_ROLE_GUEST, VCMA_ST_OK, &s1);
	fails += try_attach("anon-3", "", VCMA_SIM_ROLE_GUEST, VCMA_ST_BUSY, &s2);
	/* a configured guest that lists our uid: attaches, and gets its class */
	fails += try_attach("friend", "", VCMA_SIM_ROLE_VMM, VCMA_ST_OK, &s3);
	if (s3 >= 0)
		close(s3);
	if (raw_attach(&r, "friend2") || hello(&r) != VCMA_ST_OK)
		return 1;
	memcpy(q.name, "camera", 6);
	fails += expect_status(&r, &q, VCMA_ST_OK, "friend2 (configured class camera): QUERY of the camera pool");
	if (s1 >= 0)
		close(s1);
	return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct vcma_req q;
	struct vcma_rsp rsp;
	struct raw r;
	const char *sc;

	if (argc == 5 && !strcmp(argv[1], "--uid")) {
		/* be an unprivileged peer: the identity scenarios */
		uid_t uid = (uid_t)strtoul(argv[2], NULL, 10);

		if (setgroups(0, NULL) || setgid(uid) || setuid(uid)) {
			fprintf(stderr, "hostile: cannot become uid %u: %s\n", (unsigned int)uid, strerror(errno));
			return 99;
		}
		argv += 2;
		argc -= 2;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: hostile_guest [--uid UID] SOCKET SCENARIO\n");
		return 99;
	}
	sock_path = argv[1];
	sc = argv[2];
	if (!strcmp(sc, "bad-attach"))
		return scenario_bad_attach();
	if (!strcmp(sc, "closing") || !strcmp(sc, "closing-stay"))
		return scenario_closing(!strcmp(sc, "closing-stay"));
	if (!strcmp(sc, "identity") || !strcmp(sc, "identity-root"))
		return scenario_identity(!strcmp(sc, "identity-root"));
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

	if (!strcmp(sc, "irq-block"))
		return scenario_irq_block(&r);
	if (!strcmp(sc, "kick-steal"))
		return scenario_kick_steal(&r);
	if (!strcmp(sc, "batch-quota"))
		return scenario_batch_quota(&r);
	if (!strcmp(sc, "query-access"))
		return scenario_query_access(&r);
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
