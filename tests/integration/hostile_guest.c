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
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
	r->shm = mmap(NULL, rsp.shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	close(fds[0]);
	if (r->shm == MAP_FAILED)
		return -1;
	r->size = rsp.shm_size;
	r->kick = fds[1];
	r->irq = fds[2];
	r->ctrl = (struct vcma_ctrl *)r->shm;
	r->hdr = vcma_req_ring(r->shm, r->ctrl);
	r->slot = vcma_req_slots(r->hdr);
	r->slots = r->ctrl->req_slots;
	r->next_id = 1;
	return 0;
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
