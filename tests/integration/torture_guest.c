// SPDX-License-Identifier: MIT
/*
 * torture_guest - the guest of the crash-torture test (test_crash_torture.py): a libvcma
 * client that allocates and frees regions of 1-8 MiB at random, fills each with a
 * pattern and checks it, and writes down every step in a log that outlives it and
 * vcmad, so that the test can hold the state directory a killed vcmad left against
 * what this guest was told.
 *
 *   torture_guest SOCKET NAME POOL SEED LOG [MAX_HELD [MAX_SECONDS]]
 *
 * It attaches as a VMM of one page of RAM (only a VMM gets machine memory, where its
 * regions are; it never touches that page) and answers the VMM channel the simplest
 * way (PAUSED, REMAPPED 0: nothing of its RAM is mapped). Its guest part is libvcma on
 * the ring fds with a mapper that maps a region's machine memory. Each step, chosen by
 * a PRNG seeded with SEED: allocate 1-8 MiB (while fewer than MAX_HELD, default 6, are
 * held), check that it reads as zeros and write the pattern (a function of SEED, handle
 * and word index), or verify one held region and free it, posted (vcma_free, answered
 * by a later vcma_flush) or awaited (vcma_free_sync). Between steps it sleeps 0-3 ms, so vcmad has idle moments
 * to lend frames back to the VMs.
 *
 * The log (appended with write(2), one line per event, so it survives this process
 * and vcmad being killed):
 *   START guest_id seed
 *   ANSWERED handle size bus us  after an ALLOC was answered OK (hex handle and bus;
 *                                us: how long the call took, microseconds)
 *   NOTZERO handle words         a new region that did not read as zeros (PROTOCOL.md §6)
 *   REFUSED size errno           an ALLOC refused (no room now: normal)
 *   FREEING handle               before its FREE is posted or sent
 *   FREED handle us how          after the FREE was answered OK; how: sync
 *                                (vcma_free_sync, us its time) or flush (posted, at
 *                                the vcma_flush that waited us for it)
 *   BADPATTERN handle words      a held region whose pattern did not check out
 *   ERROR what errno             an unexpected failure
 *   END errno                    why the workload stopped (vcmad gone: ECONNRESET...)
 *   VERIFIED n bad               then: the n regions still held (not FREEING) checked,
 *                                bad of them not intact; the memory is still mapped from
 *                                the machine memory fd vcmad gave, so it survives vcmad
 * Exit 0 when the run ended because vcmad went away (or MAX_SECONDS, default 120,
 * passed) and every pattern checked out; 1 if a pattern did not or something
 * unexpected failed; 2 usage; 3 could not attach.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_sim.h"
#include "vcma_status.h"

#define PAGE 4096u
#define MiB (1ull << 20)
#define MAX_HELD_LIMIT 64
#define MAX_POSTED 64

struct held {
	uint64_t handle, size, bus;
	volatile uint64_t *map;
};

static int log_fd = -1;
static int sock = -1, irq_fd = -1, machine_fd = -1;
static struct vcma_ctrl *ctrl;
static atomic_bool host_gone;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	char line[160];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(log_fd, line, (size_t)n) != n)
		fprintf(stderr, "torture_guest: cannot write the log: %s\n", strerror(errno));
}

static inline uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state += 0x9e3779b97f4a7c15ull;
	return mix64(rng_state);
}

static uint64_t seed;

static inline uint64_t word(uint64_t handle, uint64_t i)
{
	return mix64(seed ^ mix64(handle ^ 0x70c7c7e5ull)) + i * 0x9e3779b97f4a7c15ull;
}

static void fill(const struct held *h)
{
	for (uint64_t i = 0; i < h->size / 8; i++)
		h->map[i] = word(h->handle, i);
}

/* words of a new region that are not zero */
static uint64_t nonzero(const struct held *h)
{
	uint64_t bad = 0;

	for (uint64_t i = 0; i < h->size / 8; i++)
		bad += h->map[i] != 0;
	return bad;
}

/* words of h that do not hold the pattern */
static uint64_t check(const struct held *h)
{
	uint64_t bad = 0;

	for (uint64_t i = 0; i < h->size / 8; i++)
		bad += h->map[i] != word(h->handle, i);
	return bad;
}

/* ---- the VMM side: attach, then answer the channel until vcmad goes ---- */

static int send_msg(uint16_t type, uint32_t seq, int32_t status)
{
	struct vcma_sim_msg m = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = type, .seq = seq, .status = status,
	};

	return send(sock, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m) ? 0 : -errno;
}

static void *vmm_thread(void *arg)
{
	static union {
		struct vcma_sim_msg m;
		unsigned char buf[VCMA_SIM_MSG_MAX];
	} u;
	uint64_t one = 1;

	(void)arg;
	for (;;) {
		ssize_t n = recv(sock, u.buf, sizeof(u.buf), MSG_TRUNC);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if ((size_t)n < sizeof(u.m) || u.m.magic != VCMA_SIM_MAGIC)
			continue;
		switch (u.m.type) {
		case VCMA_SIM_MSG_PAUSE:
			send_msg(VCMA_SIM_MSG_PAUSED, u.m.seq, 0);
			break;
		case VCMA_SIM_MSG_REMAP:
		case VCMA_SIM_MSG_REMAP_RESUME:
			/* nothing of the page is mapped here: nothing to remap */
			send_msg(VCMA_SIM_MSG_REMAPPED, u.m.seq, 0);
			break;
		case VCMA_SIM_MSG_DROP:
			send_msg(VCMA_SIM_MSG_DROPPED, u.m.seq, 0);
			break;
		default: /* RESUME, and what a VMM without ONE_TRIP / DIRTY_LOG is not sent */
			break;
		}
	}
	/* vcmad is gone: report the device dead, as vcma-simvm does, so that libvcma's
	 * calls fail at once with -ECONNRESET */
	atomic_store(&host_gone, true);
	vcma_store_release(&ctrl->state, (uint32_t)VCMA_STATE_DEAD);
	if (write(irq_fd, &one, sizeof(one)) < 0)
		fprintf(stderr, "torture_guest: cannot raise the irq: %s\n", strerror(errno));
	return NULL;
}

static int attach_vmm(const char *path, const char *name, int fds[4], struct vcma_sim_attach_rsp *rsp)
{
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_VMM, .flags = 0, .ram_bytes = PAGE,
	};
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(8 * sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = rsp, .iov_len = sizeof(*rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf) };
	struct vcma_sim_p2m *p2m;
	int got = 0;
	ssize_t n;

	if (strlen(path) >= sizeof(sa.sun_path) || strlen(name) >= sizeof(a.name))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	strcpy(a.name, name);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) ||
	    send(sock, &a, sizeof(a), MSG_NOSIGNAL) != (ssize_t)sizeof(a))
		return -errno;
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (got < 4)
				fds[got++] = fd;
			else
				close(fd);
		}
	}
	if (n != (ssize_t)sizeof(*rsp) || rsp->magic != VCMA_SIM_MAGIC || rsp->type != VCMA_SIM_MSG_ATTACH_RSP)
		return -EIO;
	if (rsp->status != VCMA_ST_OK)
		return vcma_status_errno(rsp->status) ? vcma_status_errno(rsp->status) : -EIO;
	if (got != 4 || rsp->ram_frames != 1 || !rsp->nruns)
		return -EIO;
	/* the p2m of the one page: not needed, never mapped */
	p2m = malloc(sizeof(*p2m));
	if (!p2m)
		return -ENOMEM;
	for (uint32_t have = 0; have < rsp->nruns; have += p2m->nruns) {
		n = recv(sock, p2m, sizeof(*p2m), 0);
		if (n != (ssize_t)sizeof(*p2m) || p2m->type != VCMA_SIM_MSG_P2M || !p2m->nruns) {
			free(p2m);
			return n < 0 ? -errno : -EIO;
		}
	}
	free(p2m);
	return 0;
}

static uint64_t machine_bytes;

static int map_region(void *ctx, uint64_t gpa, uint64_t bus, uint64_t size, void **addr)
{
	void *p;

	(void)ctx;
	(void)gpa;
	if (!size || bus > machine_bytes || size > machine_bytes - bus)
		return -EINVAL;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, machine_fd, (off_t)bus);
	if (p == MAP_FAILED)
		return -errno;
	*addr = p;
	return 0;
}

static void unmap_region(void *ctx, void *addr, uint64_t size)
{
	(void)ctx;
	munmap(addr, size);
}

/* ---- the workload ---- */

static bool refusal(int rc)
{
	return rc == -ENOSPC || rc == -EBUSY || rc == -EDQUOT || rc == -ENOBUFS || rc == -ENOMEM;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int main(int argc, char **argv)
{
	struct held held[MAX_HELD_LIMIT];
	uint64_t posted[MAX_POSTED];
	unsigned int nheld = 0, nposted = 0, max_held = 6, bad = 0;
	struct vcma_sim_attach_rsp rsp;
	struct vcma *v = NULL;
	int fds[4] = { -1, -1, -1, -1 }, rc = 0, shm_fd;
	unsigned long max_s = 120;
	const char *pool;
	pthread_t thr;
	uint64_t t0;
	char *end;

	if (argc < 6 || argc > 8) {
		fprintf(stderr, "usage: torture_guest SOCKET NAME POOL SEED LOG [MAX_HELD [MAX_SECONDS]]\n");
		return 2;
	}
	pool = argv[3];
	seed = strtoull(argv[4], &end, 0);
	if (*end)
		return 2;
	if (argc > 6 && (sscanf(argv[6], "%u", &max_held) != 1 || !max_held || max_held > MAX_HELD_LIMIT))
		return 2;
	if (argc > 7 && sscanf(argv[7], "%lu", &max_s) != 1)
		return 2;
	rng_state = seed;
	log_fd = open(argv[5], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		fprintf(stderr, "torture_guest: %s: %s\n", argv[5], strerror(errno));
		return 2;
	}
	rc = attach_vmm(argv[1], argv[2], fds, &rsp);
	if (rc) {
		fprintf(stderr, "torture_guest: attach %s: %s\n", argv[2], strerror(-rc));
		return 3;
	}
	machine_fd = fds[3];
	machine_bytes = rsp.machine_bytes;
	shm_fd = dup(fds[0]);
	irq_fd = dup(fds[2]);
	ctrl = shm_fd < 0 ? MAP_FAILED : mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
	if (irq_fd < 0 || ctrl == MAP_FAILED) {
		fprintf(stderr, "torture_guest: mapping the control page: %s\n", strerror(errno));
		return 3;
	}
	if (pthread_create(&thr, NULL, vmm_thread, NULL)) {
		fprintf(stderr, "torture_guest: cannot start the VMM thread\n");
		return 3;
	}
	rc = vcma_attach_fds(fds[0], (size_t)rsp.shm_size, fds[1], fds[2], &v);
	if (rc) {
		fprintf(stderr, "torture_guest: HELLO: %s\n", vcma_strerror(rc));
		return 3;
	}
	vcma_set_mapper(v, map_region, unmap_region, NULL);
	logf_("START %u %" PRIu64, vcma_guest_id(v), seed);

	t0 = now_us();
	for (;;) {
		uint64_t r = rnd();
		struct timespec think = { 0, (long)(r % 3000000) };

		uint64_t t;

		if (now_us() - t0 >= (uint64_t)max_s * 1000000u) {
			rc = -ETIMEDOUT;
			break;
		}
		if (nheld < max_held && (nheld == 0 || (r >> 32) % 100 < 55)) {
			uint64_t size = ((r >> 40) % 8 + 1) * MiB;
			struct vcma_region_info ri;

			t = now_us();
			rc = vcma_alloc(v, size, 0, VCMA_ALLOC_MAP, pool, &ri);
			t = now_us() - t;
			if (refusal(rc)) {
				logf_("REFUSED %" PRIu64 " %d", size, -rc);
			} else if (rc) {
				break;
			} else {
				logf_("ANSWERED %#" PRIx64 " %" PRIu64 " %#" PRIx64 " %" PRIu64, ri.handle, ri.size, ri.bus,
				      t);
				uint64_t nz;

				held[nheld] = (struct held){ ri.handle, ri.size, ri.bus, ri.map };
				nz = nonzero(&held[nheld]);
				if (nz) {
					logf_("NOTZERO %#" PRIx64 " %" PRIu64, ri.handle, nz);
					bad++;
				}
				fill(&held[nheld++]);
			}
		} else if (nheld) {
			unsigned int i = (unsigned int)((r >> 32) % nheld);
			struct held h = held[i];
			uint64_t badw = check(&h);

			if (badw) {
				logf_("BADPATTERN %#" PRIx64 " %" PRIu64, h.handle, badw);
				bad++;
			}
			held[i] = held[--nheld];
			logf_("FREEING %#" PRIx64, h.handle);
			if ((r >> 20) & 1 && nposted < MAX_POSTED) {
				rc = vcma_free(v, h.handle);
				if (rc)
					break;
				posted[nposted++] = h.handle;
			} else {
				t = now_us();
				rc = vcma_free_sync(v, h.handle);
				if (rc)
					break;
				logf_("FREED %#" PRIx64 " %" PRIu64 " sync", h.handle, now_us() - t);
			}
		}
		if (nposted && ((r >> 24) % 4 == 0 || nposted == MAX_POSTED)) {
			t = now_us();
			rc = vcma_flush(v, NULL);
			if (rc)
				break;
			t = now_us() - t;
			for (unsigned int k = 0; k < nposted; k++)
				logf_("FREED %#" PRIx64 " %" PRIu64 " flush", posted[k], t);
			nposted = 0;
		}
		nanosleep(&think, NULL);
	}
	logf_("END %d", -rc);
	if (rc != -ETIMEDOUT && !atomic_load(&host_gone) && rc != -ECONNRESET) {
		logf_("ERROR workload %d", -rc);
		fprintf(stderr, "torture_guest: unexpected: %s\n", vcma_strerror(rc));
	}
	/* what is still held is still mapped: the machine memory outlives vcmad */
	{
		unsigned int nbad = 0;

		for (unsigned int i = 0; i < nheld; i++) {
			uint64_t badw = check(&held[i]);

			if (badw) {
				logf_("BADPATTERN %#" PRIx64 " %" PRIu64, held[i].handle, badw);
				nbad++;
			}
		}
		logf_("VERIFIED %u %u", nheld, nbad);
		bad += nbad;
	}
	if (atomic_load(&host_gone))
		vcma_set_timeout(v, 1); /* nobody will answer the frees of detach */
	vcma_detach(v);
	shutdown(sock, SHUT_RDWR);
	pthread_join(thr, NULL);
	if (bad)
		return 1;
	return rc == -ECONNRESET || rc == -ETIMEDOUT || atomic_load(&host_gone) ? 0 : 1;
}
