// SPDX-License-Identifier: MIT
/*
 * torture_guest - the guest of the crash-torture test (test_crash_torture.py): a libvcma
 * client that allocates and frees regions of 1-8 MiB at random, fills each with a
 * pattern and checks it, and writes down every step in a log that outlives it and
 * vcmad, so that the test can hold the state directory a killed vcmad left against
 * what this guest was told. It survives vcmad's restarts: it reattaches (docs/
 * PROTOCOL.md §9.1 "sim: restart and reattach") and goes on with the regions it held.
 *
 *   torture_guest SOCKET NAME POOL SEED LOG [MAX_HELD [MAX_SECONDS [hold]]]
 *
 * It attaches as a VMM of one page of RAM (only a VMM gets machine memory, where its
 * regions are; it never touches that page) asking for a reattach token, and answers the
 * VMM channel the simplest way (PAUSED, REMAPPED 0: nothing of its RAM is mapped; it
 * only notes where vcmad put the page, to send that p2m when it reattaches). Its guest
 * part is libvcma on the ring fds with a mapper that maps a region's machine memory.
 * Each step, chosen by a PRNG seeded with SEED: allocate 1-8 MiB (while fewer than
 * MAX_HELD, default 6, are held), check that it reads as zeros and write the pattern (a
 * function of SEED, handle and word index), or verify one held region and free it,
 * posted (vcma_free, answered by a later vcma_flush) or awaited (vcma_free_sync).
 * Between steps it sleeps 0-3 ms, so vcmad has idle moments to lend frames back to the
 * VMs.
 *
 * vcmad gone (the socket ends and the ring is not DEAD): the regions stay held and
 * mapped (machine memory is a file that outlives vcmad). The VMM thread connects again
 * with backoff (10 ms doubling to 500 ms) until the token's grace_ms after the loss,
 * sends REATTACH and its p2m, reads ATTACH_RSP, the new TOKEN and the REGIONS, hands
 * the new ring to libvcma (vcma_reattach_fds, from a thread of its own) and answers the
 * channel on the new socket. The workload's calls that fail with ECONNRESET or
 * ETIMEDOUT across the restart wait for the reattach and are made again (RETRY). After
 * each reattach every held region is checked (REATTACHED); with "hold", the workload
 * then waits for SIGUSR1 before it goes on, so that the test can compare what it holds
 * with what vcmad lists. If vcmad does not take it back within the grace, it stops as
 * when it is cut off (VERIFIED, exit as below). SIGTERM or SIGINT stop it: it verifies
 * and frees what it holds (vcma_detach) and exits.
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
 *                                (vcma_free_sync, us its time), flush (posted, at
 *                                the vcma_flush that waited us for it) or gone (a FREE
 *                                made again after a reattach found the region freed
 *                                already: it took effect before vcmad died)
 *   BADPATTERN handle words      a held region whose pattern did not check out
 *   LOST                         vcmad gone (the VMM thread saw the socket end)
 *   RETRY what handle errno      a call (alloc, free, free_sync, flush) failed across a
 *                                restart: made again once reattached (handle 0: none)
 *   LISTED handle bus size       after a REATTACH answered OK: each region vcmad says
 *                                the guest holds (hex), before libvcma takes them
 *   MISSING handle               a region held that vcmad did not list (lost by vcmad)
 *   BACK tries ms regions        reattached: after tries tries, ms after the loss;
 *                                regions: how many vcmad listed
 *   REATTACHED n bad             the workload saw the reattach: the n regions it held
 *                                (not FREEING) checked, bad of them not intact or lost
 *   GO                           (hold) the test said go on after a reattach
 *   ERROR what errno             an unexpected failure
 *   END errno                    why the workload stopped (vcmad gone for good:
 *                                ECONNRESET; MAX_SECONDS: ETIMEDOUT; a signal: 0)
 *   VERIFIED n bad               then: the n regions still held (not FREEING) checked,
 *                                bad of them not intact; the memory is still mapped from
 *                                the machine memory fd vcmad gave, so it survives vcmad
 * Exit 0 when the run ended because vcmad went away for good, MAX_SECONDS (default 120)
 * passed or a signal came, and every pattern checked out; 1 if a pattern did not or
 * something unexpected failed; 2 usage; 3 could not attach.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_sim.h"
#include "vcma_status.h"

#define PAGE 4096u
#define MiB (1ull << 20)
#define MAX_HELD_LIMIT 64
#define MAX_POSTED 64
#define MAX_LISTED 256
#define BACKOFF_FIRST_MS 10u
#define BACKOFF_MAX_MS 500u
#define RSP_TIMEOUT_MS 5000

struct held {
	uint64_t handle, size, bus;
	volatile uint64_t *map;
	bool missing; /* vcmad did not list it after a reattach: libvcma unmapped it */
};

static int log_fd = -1;
static const char *sock_path, *guest_name;
static struct vcma *v;
static uint64_t machine_bytes, p2m_mfn; /* where vcmad has the one page of RAM */
static struct vcma_sim_token token;
static atomic_bool have_token;
static atomic_int cur_sock = -1; /* the VMM channel now: shut down at the end */
static atomic_bool host_gone; /* for good: cut off, or not taken back within the grace */
static atomic_uint reattach_gen; /* reattaches handed to libvcma */
static atomic_uint go_count;      /* SIGUSR1s */
static volatile sig_atomic_t stop_sig;

/* the regions the workload holds: main changes them; the ring thread looks at them
 * (and marks what vcmad did not list) before libvcma forgets and unmaps those */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct held held[MAX_HELD_LIMIT];
static unsigned int nheld;

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

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000l };

	nanosleep(&ts, NULL);
}

/* ---- the VMM side: attach, answer the channel, reattach when vcmad comes back ---- */

/* the VMM's view of the ring libvcma uses now: marked DEAD when vcmad is gone for good */
static struct vcma_ctrl *ctrl;
static int irq_fd = -1;

static int send_msg(int sock, uint16_t type, uint32_t seq, int32_t status)
{
	struct vcma_sim_msg m = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = type, .seq = seq, .status = status,
	};

	return send(sock, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m) ? 0 : -errno;
}

/* note where vcmad moved the page (REMAP, REMAP_RESUME, DROP): the p2m to reattach with */
static void note_runs(const struct vcma_sim_msg *m, size_t len)
{
	if (len < sizeof(*m) || m->count > VCMA_SIM_MSG_RUNS || len < sizeof(*m) + m->count * sizeof(m->run[0]))
		return;
	for (uint32_t i = 0; i < m->count; i++)
		if (m->run[i].gfn == 0 && m->run[i].count >= 1)
			p2m_mfn = m->run[i].mfn;
}

/* Serve the channel until the socket ends. */
static void serve(int sock)
{
	static union {
		struct vcma_sim_msg m;
		unsigned char buf[VCMA_SIM_MSG_MAX];
	} u;

	for (;;) {
		ssize_t n = recv(sock, u.buf, sizeof(u.buf), MSG_TRUNC);

		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return;
		if ((size_t)n < sizeof(u.m) || u.m.magic != VCMA_SIM_MAGIC)
			continue;
		switch (u.m.type) {
		case VCMA_SIM_MSG_PAUSE:
			send_msg(sock, VCMA_SIM_MSG_PAUSED, u.m.seq, 0);
			break;
		case VCMA_SIM_MSG_REMAP:
		case VCMA_SIM_MSG_REMAP_RESUME:
			/* nothing of the page is mapped here: nothing to remap */
			note_runs(&u.m, (size_t)n);
			send_msg(sock, VCMA_SIM_MSG_REMAPPED, u.m.seq, 0);
			break;
		case VCMA_SIM_MSG_DROP:
			note_runs(&u.m, (size_t)n);
			send_msg(sock, VCMA_SIM_MSG_DROPPED, u.m.seq, 0);
			break;
		default: /* RESUME, and what a VMM without ONE_TRIP / DIRTY_LOG is not sent */
			break;
		}
	}
}

static int sock_open(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { RSP_TIMEOUT_MS / 1000, (RSP_TIMEOUT_MS % 1000) * 1000 };
	int s;

	strcpy(sa.sun_path, sock_path); /* its length was checked */
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) ||
	    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
		int err = errno;

		close(s);
		return -err;
	}
	return s;
}

/* The ATTACH_RSP and its fds: bytes received (or -errno); *got fds in fds[]. */
static ssize_t recv_rsp(int sock, struct vcma_sim_attach_rsp *rsp, int fds[4], int *got)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(8 * sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = rsp, .iov_len = sizeof(*rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf) };
	ssize_t n;

	*got = 0;
	memset(rsp, 0, sizeof(*rsp));
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*got < 4)
				fds[(*got)++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

static int recv_token(int sock, uint32_t guest_id, struct vcma_sim_token *t)
{
	ssize_t n;

	do
		n = recv(sock, t, sizeof(*t), MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n != (ssize_t)sizeof(*t) || t->magic != VCMA_SIM_MAGIC || t->version != VCMA_SIM_VERSION ||
	    t->type != VCMA_SIM_MSG_TOKEN || t->guest_id != guest_id)
		return -EIO;
	return 0;
}

static int attach_vmm(int *sockp, int fds[4], struct vcma_sim_attach_rsp *rsp)
{
	struct vcma_sim_attach a = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH,
		.role = VCMA_SIM_ROLE_VMM, .flags = VCMA_SIM_F_REATTACH, .ram_bytes = PAGE,
	};
	struct vcma_sim_p2m *p2m;
	int got = 0, sock, rc;
	ssize_t n;

	strcpy(a.name, guest_name);
	sock = sock_open();
	if (sock < 0)
		return sock;
	*sockp = sock;
	if (send(sock, &a, sizeof(a), MSG_NOSIGNAL) != (ssize_t)sizeof(a))
		return -errno;
	n = recv_rsp(sock, rsp, fds, &got);
	if (n < 0)
		return (int)n;
	if (n != (ssize_t)sizeof(*rsp) || rsp->magic != VCMA_SIM_MAGIC || rsp->type != VCMA_SIM_MSG_ATTACH_RSP)
		return -EIO;
	if (rsp->status != VCMA_ST_OK)
		return vcma_status_errno(rsp->status) ? vcma_status_errno(rsp->status) : -EIO;
	if (got != 4 || rsp->ram_frames != 1 || !rsp->nruns)
		return -EIO;
	/* the token comes before the p2m */
	rc = recv_token(sock, rsp->guest_id, &token);
	if (rc)
		return rc;
	atomic_store(&have_token, true);
	/* the p2m of the one page: never mapped, only remembered for a reattach */
	p2m = malloc(sizeof(*p2m));
	if (!p2m)
		return -ENOMEM;
	for (uint32_t have = 0; have < rsp->nruns; have += p2m->nruns) {
		n = recv(sock, p2m, sizeof(*p2m), 0);
		if (n != (ssize_t)sizeof(*p2m) || p2m->type != VCMA_SIM_MSG_P2M || !p2m->nruns ||
		    p2m->nruns > VCMA_SIM_P2M_RUNS) {
			free(p2m);
			return n < 0 ? -errno : -EIO;
		}
		for (uint32_t i = 0; i < p2m->nruns; i++)
			if (p2m->run[i].gfn == 0 && p2m->run[i].count >= 1)
				p2m_mfn = p2m->run[i].mfn;
	}
	free(p2m);
	/* the channel answers PAUSE at once from here on: no blocking reads any more */
	{
		struct timeval tv = { 0, 0 };

		setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return 0;
}

/* a new ring for libvcma, handed from the VMM thread to the ring thread */
struct handoff {
	int fds[3];
	uint64_t shm_size;
	struct vcma_held_region list[MAX_LISTED];
	uint32_t nlist;
};

static pthread_mutex_t hand_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hand_cond = PTHREAD_COND_INITIALIZER;
static struct handoff *hand_next;
static bool hand_quit;

static void handoff_free(struct handoff *h)
{
	if (!h)
		return;
	for (int i = 0; i < 3; i++)
		if (h->fds[i] >= 0)
			close(h->fds[i]);
	free(h);
}

/* the VMM's view of the ring: DEAD and an irq, so that libvcma's calls fail at once */
static void ring_dead(void)
{
	uint64_t one = 1;

	if (!ctrl)
		return;
	vcma_store_release(&ctrl->state, (uint32_t)VCMA_STATE_DEAD);
	if (write(irq_fd, &one, sizeof(one)) < 0)
		fprintf(stderr, "torture_guest: cannot raise the irq: %s\n", strerror(errno));
}

/*
 * One try: 0 with *sockp and h filled; 1 to try again (nobody listening, BUSY,
 * SHUTDOWN, no answer); -errno: vcmad will not take the guest back (why logged).
 */
static int try_reattach(int *sockp, struct handoff *h)
{
	struct vcma_sim_reattach ra = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_REATTACH,
		.role = VCMA_SIM_ROLE_VMM, .flags = VCMA_SIM_F_REATTACH, .guest_id = token.guest_id, .nruns = 1,
		.ram_bytes = PAGE,
	};
	struct vcma_sim_attach_rsp rsp;
	struct vcma_sim_token t;
	struct vcma_sim_p2m *m;
	int sock, fds[4] = { -1, -1, -1, -1 }, got = 0, rc;
	ssize_t n;

	memcpy(ra.token, token.token, sizeof(ra.token));
	strcpy(ra.name, guest_name);
	sock = sock_open();
	if (sock < 0)
		return 1;
	m = calloc(1, sizeof(*m)); /* the entries from nruns on are zero */
	if (!m) {
		close(sock);
		return -ENOMEM;
	}
	m->magic = VCMA_SIM_MAGIC;
	m->version = VCMA_SIM_VERSION;
	m->type = VCMA_SIM_MSG_P2M;
	m->nruns = 1;
	m->run[0] = (struct vcma_sim_run){ .gfn = 0, .mfn = p2m_mfn, .count = 1 };
	if (send(sock, &ra, sizeof(ra), MSG_NOSIGNAL) == (ssize_t)sizeof(ra))
		send(sock, m, sizeof(*m), MSG_NOSIGNAL); /* an answer may have come already: read it */
	n = recv_rsp(sock, &rsp, fds, &got);
	rc = 1;
	if (n <= 0)
		goto out; /* closed or no answer: again */
	if (n != (ssize_t)sizeof(rsp) || rsp.magic != VCMA_SIM_MAGIC || rsp.type != VCMA_SIM_MSG_ATTACH_RSP) {
		logf_("ERROR reattach-answer %d", EIO);
		rc = -EIO;
		goto out;
	}
	if (rsp.status == VCMA_ST_BUSY || rsp.status == VCMA_ST_SHUTDOWN)
		goto out;
	if (rsp.status != VCMA_ST_OK) {
		logf_("ERROR reattach-refused %d", rsp.status);
		rc = -ECONNREFUSED;
		goto out;
	}
	if (got != 4 || rsp.guest_id != token.guest_id || rsp.ram_frames != 1 || rsp.machine_bytes != machine_bytes ||
	    rsp.nruns > MAX_LISTED || (rc = recv_token(sock, token.guest_id, &t))) {
		logf_("ERROR reattach-ok-malformed %d", rc ? -rc : EIO);
		rc = -EIO;
		goto out;
	}
	h->nlist = 0;
	while (h->nlist < rsp.nruns) {
		n = recv(sock, m, sizeof(*m), MSG_TRUNC);
		if (n != (ssize_t)sizeof(*m) || m->magic != VCMA_SIM_MAGIC || m->type != VCMA_SIM_MSG_REGIONS ||
		    !m->nruns || m->nruns > VCMA_SIM_P2M_RUNS || m->nruns > rsp.nruns - h->nlist) {
			logf_("ERROR reattach-regions %d", n < 0 ? errno : EIO);
			rc = -EIO;
			goto out;
		}
		for (uint32_t i = 0; i < m->nruns; i++)
			h->list[h->nlist++] = (struct vcma_held_region){
				.handle = m->run[i].gfn, .bus = m->run[i].mfn * PAGE, .size = m->run[i].count * PAGE,
			};
	}
	token = t; /* the old one is spent */
	{
		struct timeval tv = { 0, 0 }; /* the channel: no timeout on reads any more */

		setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	for (int i = 0; i < 3; i++) {
		h->fds[i] = fds[i];
		fds[i] = -1;
	}
	h->shm_size = rsp.shm_size;
	*sockp = sock;
	sock = -1;
	rc = 0;
out:
	free(m);
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (sock >= 0)
		close(sock);
	return rc;
}

static void *vmm_thread(void *arg)
{
	int sock = *(int *)arg;

	for (;;) {
		uint64_t t_lost, delay = BACKOFF_FIRST_MS, left;
		unsigned int tries = 0;
		struct handoff *h;
		int rc = 1;

		bool dead;

		atomic_store(&cur_sock, sock);
		serve(sock);
		atomic_store(&cur_sock, -1);
		close(sock);
		sock = -1;
		/* cut off (DEAD), or nothing to come back with: the end */
		pthread_mutex_lock(&hand_lock);
		dead = vcma_load_acquire(&ctrl->state) == VCMA_STATE_DEAD;
		pthread_mutex_unlock(&hand_lock);
		if (!atomic_load(&have_token) || dead || stop_sig)
			break;
		logf_("LOST");
		t_lost = now_us();
		h = calloc(1, sizeof(*h));
		if (!h)
			break;
		h->fds[0] = h->fds[1] = h->fds[2] = -1;
		/* connect again with backoff until the token's grace after the loss */
		while (rc == 1 && !stop_sig) {
			left = token.grace_ms * 1000ull > now_us() - t_lost ? token.grace_ms * 1000ull - (now_us() - t_lost)
									   : 0;
			if (!left)
				break;
			sleep_ms((unsigned int)(delay * 1000 < left ? delay : (left + 999) / 1000));
			tries++;
			rc = try_reattach(&sock, h);
			delay = delay * 2 < BACKOFF_MAX_MS ? delay * 2 : BACKOFF_MAX_MS;
		}
		if (rc) {
			handoff_free(h);
			break;
		}
		logf_("BACK %u %" PRIu64 " %u", tries, (now_us() - t_lost) / 1000, h->nlist);
		for (uint32_t i = 0; i < h->nlist; i++)
			logf_("LISTED %#" PRIx64 " %#" PRIx64 " %" PRIu64, h->list[i].handle, h->list[i].bus,
			      h->list[i].size);
		pthread_mutex_lock(&hand_lock);
		handoff_free(hand_next); /* never handed over: its vcmad is gone already */
		hand_next = h;
		pthread_cond_signal(&hand_cond);
		pthread_mutex_unlock(&hand_lock);
		/* and the channel goes on on the new socket right away */
	}
	if (!atomic_load(&have_token))
		return NULL; /* the end of the run: closed by main */
	/* vcmad is gone for good: report the device dead, as vcma-simvm does, so that
	 * libvcma's calls fail at once with -ECONNRESET */
	atomic_store(&host_gone, true);
	pthread_mutex_lock(&hand_lock);
	ring_dead();
	pthread_mutex_unlock(&hand_lock);
	return NULL;
}

/* The ring thread: hands each new ring to libvcma (its HELLO may wait while the VMM
 * thread answers a PAUSE). */
static void *ring_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&hand_lock);
	for (;;) {
		struct handoff *h;
		struct vcma_ctrl *c;
		int irq, rc;

		while (!hand_next && !hand_quit)
			pthread_cond_wait(&hand_cond, &hand_lock);
		if (hand_quit)
			break;
		h = hand_next;
		hand_next = NULL;
		pthread_mutex_unlock(&hand_lock);

		c = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, h->fds[0], 0);
		irq = fcntl(h->fds[2], F_DUPFD_CLOEXEC, 0);
		/* before libvcma forgets (and unmaps) what the list does not name */
		pthread_mutex_lock(&held_lock);
		for (unsigned int i = 0; i < nheld; i++) {
			bool listed = false;

			for (uint32_t k = 0; k < h->nlist && !listed; k++)
				listed = h->list[k].handle == held[i].handle;
			if (!listed && !held[i].missing) {
				held[i].missing = true;
				logf_("MISSING %#" PRIx64, held[i].handle);
			}
		}
		rc = vcma_reattach_fds(v, h->fds[0], (size_t)h->shm_size, h->fds[1], h->fds[2], h->list, h->nlist);
		pthread_mutex_unlock(&held_lock);
		h->fds[0] = h->fds[1] = h->fds[2] = -1; /* libvcma's now, even on failure */
		handoff_free(h);

		pthread_mutex_lock(&hand_lock);
		if (rc || c == MAP_FAILED || irq < 0) {
			logf_("ERROR reattach-fds %d", rc ? -rc : errno);
			if (c != MAP_FAILED)
				munmap(c, PAGE);
			if (irq >= 0)
				close(irq);
			atomic_store(&host_gone, true);
			ring_dead();
			continue;
		}
		if (ctrl)
			munmap(ctrl, PAGE);
		if (irq_fd >= 0)
			close(irq_fd);
		ctrl = c;
		irq_fd = irq;
		atomic_fetch_add(&reattach_gen, 1);
	}
	pthread_mutex_unlock(&hand_lock);
	return NULL;
}

static int map_region(void *ctx, uint64_t gpa, uint64_t bus, uint64_t size, void **addr)
{
	int fd = *(int *)ctx;
	void *p;

	(void)gpa;
	if (!size || bus > machine_bytes || size > machine_bytes - bus)
		return -EINVAL;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)bus);
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

static bool hold_mode;
static unsigned int gen_seen, bad;

/* The reattach happened (reattach_gen moved on): check every region held; with hold,
 * wait for the test's SIGUSR1 (or the end). */
static void after_reattach(void)
{
	unsigned int gen = atomic_load(&reattach_gen), nbad = 0, n;

	if (gen == gen_seen)
		return;
	gen_seen = gen;
	pthread_mutex_lock(&held_lock);
	n = nheld;
	for (unsigned int i = 0; i < nheld;) {
		uint64_t badw;

		if (held[i].missing) {
			nbad++;
			held[i] = held[--nheld]; /* libvcma unmapped it */
			continue;
		}
		badw = check(&held[i]);
		if (badw) {
			logf_("BADPATTERN %#" PRIx64 " %" PRIu64, held[i].handle, badw);
			nbad++;
		}
		i++;
	}
	pthread_mutex_unlock(&held_lock);
	logf_("REATTACHED %u %u", n, nbad);
	bad += nbad;
	if (!hold_mode)
		return;
	while (atomic_load(&go_count) < gen && !stop_sig && !atomic_load(&host_gone))
		sleep_ms(2);
	logf_("GO");
}

/* A call failed with rc: true if it is to be made again (it failed across a restart
 * and the guest is back: logged RETRY), false if the workload stops. */
static bool again(const char *what, uint64_t handle, int rc)
{
	unsigned int gen0 = gen_seen;

	if ((rc != -ECONNRESET && rc != -ETIMEDOUT) || atomic_load(&host_gone))
		return false;
	logf_("RETRY %s %#" PRIx64 " %d", what, handle, -rc);
	/* the VMM thread gives up after the grace: host_gone then */
	while (atomic_load(&reattach_gen) == gen0 && !atomic_load(&host_gone) && !stop_sig)
		sleep_ms(2);
	if (atomic_load(&host_gone) || stop_sig)
		return false;
	after_reattach();
	return !atomic_load(&host_gone);
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		atomic_fetch_add(&go_count, 1);
	else
		stop_sig = sig;
}

int main(int argc, char **argv)
{
	uint64_t posted[MAX_POSTED];
	unsigned int nposted = 0, max_held = 6;
	struct vcma_sim_attach_rsp rsp;
	int fds[4] = { -1, -1, -1, -1 }, rc = 0, shm_fd, sock = -1, machine_fd;
	unsigned long max_s = 120;
	struct sigaction sa;
	const char *pool;
	pthread_t thr, rthr;
	uint64_t t0;
	char *end;

	if (argc < 6 || argc > 9 || (argc == 9 && strcmp(argv[8], "hold"))) {
		fprintf(stderr, "usage: torture_guest SOCKET NAME POOL SEED LOG [MAX_HELD [MAX_SECONDS [hold]]]\n");
		return 2;
	}
	sock_path = argv[1];
	guest_name = argv[2];
	pool = argv[3];
	seed = strtoull(argv[4], &end, 0);
	if (*end)
		return 2;
	if (argc > 6 && (sscanf(argv[6], "%u", &max_held) != 1 || !max_held || max_held > MAX_HELD_LIMIT))
		return 2;
	if (argc > 7 && sscanf(argv[7], "%lu", &max_s) != 1)
		return 2;
	hold_mode = argc > 8;
	if (strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path) || strlen(guest_name) >= VCMA_SIM_NAME_LEN)
		return 2;
	rng_state = seed;
	log_fd = open(argv[5], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		fprintf(stderr, "torture_guest: %s: %s\n", argv[5], strerror(errno));
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = attach_vmm(&sock, fds, &rsp);
	if (rc) {
		fprintf(stderr, "torture_guest: attach %s: %s\n", guest_name, strerror(-rc));
		return 3;
	}
	machine_fd = fds[3];
	machine_bytes = rsp.machine_bytes;
	shm_fd = dup(fds[0]);
	irq_fd = dup(fds[2]);
	ctrl = shm_fd < 0 ? MAP_FAILED : mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
	if (shm_fd >= 0)
		close(shm_fd);
	if (irq_fd < 0 || ctrl == MAP_FAILED) {
		fprintf(stderr, "torture_guest: mapping the control page: %s\n", strerror(errno));
		return 3;
	}
	if (pthread_create(&thr, NULL, vmm_thread, &sock) || pthread_create(&rthr, NULL, ring_thread, NULL)) {
		fprintf(stderr, "torture_guest: cannot start the VMM threads\n");
		return 3;
	}
	rc = vcma_attach_fds(fds[0], (size_t)rsp.shm_size, fds[1], fds[2], &v);
	if (rc) {
		fprintf(stderr, "torture_guest: HELLO: %s\n", vcma_strerror(rc));
		return 3;
	}
	vcma_set_mapper(v, map_region, unmap_region, &machine_fd);
	logf_("START %u %" PRIu64, vcma_guest_id(v), seed);

	t0 = now_us();
	for (;;) {
		uint64_t r = rnd();
		struct timespec think = { 0, (long)(r % 3000000) };
		uint64_t t;

		if (stop_sig) {
			rc = 0;
			break;
		}
		if (now_us() - t0 >= (uint64_t)max_s * 1000000u) {
			rc = -ETIMEDOUT;
			break;
		}
		after_reattach();
		if (nheld < max_held && (nheld == 0 || (r >> 32) % 100 < 55)) {
			uint64_t size = ((r >> 40) % 8 + 1) * MiB;
			struct vcma_region_info ri;

			do {
				t = now_us();
				rc = vcma_alloc(v, size, 0, VCMA_ALLOC_MAP, pool, &ri);
				t = now_us() - t;
			} while (rc && !refusal(rc) && again("alloc", 0, rc));
			if (refusal(rc)) {
				logf_("REFUSED %" PRIu64 " %d", size, -rc);
			} else if (rc) {
				break;
			} else {
				struct held *h;
				uint64_t nz;

				logf_("ANSWERED %#" PRIx64 " %" PRIu64 " %#" PRIx64 " %" PRIu64, ri.handle, ri.size, ri.bus,
				      t);
				pthread_mutex_lock(&held_lock);
				h = &held[nheld];
				*h = (struct held){ ri.handle, ri.size, ri.bus, ri.map, false };
				nz = nonzero(h);
				if (nz) {
					logf_("NOTZERO %#" PRIx64 " %" PRIu64, ri.handle, nz);
					bad++;
				}
				fill(h);
				nheld++;
				pthread_mutex_unlock(&held_lock);
			}
		} else if (nheld) {
			unsigned int i = (unsigned int)((r >> 32) % nheld);
			struct held h;
			uint64_t badw;

			pthread_mutex_lock(&held_lock);
			h = held[i];
			badw = h.missing ? 0 : check(&h);
			held[i] = held[--nheld];
			pthread_mutex_unlock(&held_lock);
			if (badw) {
				logf_("BADPATTERN %#" PRIx64 " %" PRIu64, h.handle, badw);
				bad++;
			}
			logf_("FREEING %#" PRIx64, h.handle);
			if ((r >> 20) & 1 && nposted < MAX_POSTED) {
				bool retried = false;

				while ((rc = vcma_free(v, h.handle)) && (!retried || rc != -ENOENT) &&
				       again("free", h.handle, rc))
					retried = true;
				if (rc == -ENOENT && retried) {
					/* the FREE took effect before vcmad died */
					logf_("FREED %#" PRIx64 " 0 gone", h.handle);
					rc = 0;
				} else if (rc) {
					break;
				} else {
					posted[nposted++] = h.handle;
				}
			} else {
				bool retried = false;

				do {
					t = now_us();
					rc = vcma_free_sync(v, h.handle);
				} while (rc && (!retried || rc != -ENOENT) && (retried = again("free_sync", h.handle, rc)));
				if (rc == -ENOENT && retried) {
					logf_("FREED %#" PRIx64 " %" PRIu64 " gone", h.handle, now_us() - t);
					rc = 0;
				} else if (rc) {
					break;
				} else {
					logf_("FREED %#" PRIx64 " %" PRIu64 " sync", h.handle, now_us() - t);
				}
			}
		}
		if (nposted && ((r >> 24) % 4 == 0 || nposted == MAX_POSTED)) {
			do {
				t = now_us();
				rc = vcma_flush(v, NULL);
			} while (rc && again("flush", 0, rc));
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
	if (rc && rc != -ETIMEDOUT && !atomic_load(&host_gone) && rc != -ECONNRESET) {
		logf_("ERROR workload %d", -rc);
		fprintf(stderr, "torture_guest: unexpected: %s\n", vcma_strerror(rc));
	}
	/* what is still held is still mapped: the machine memory outlives vcmad */
	{
		unsigned int nbad = 0;

		pthread_mutex_lock(&held_lock);
		for (unsigned int i = 0; i < nheld; i++) {
			uint64_t badw = held[i].missing ? 1 : check(&held[i]);

			if (badw) {
				logf_("BADPATTERN %#" PRIx64 " %" PRIu64, held[i].handle, badw);
				nbad++;
			}
		}
		logf_("VERIFIED %u %u", nheld, nbad);
		pthread_mutex_unlock(&held_lock);
		bad += nbad;
	}
	if (atomic_load(&host_gone))
		vcma_set_timeout(v, 1); /* nobody will answer the frees of detach */
	/* no more handoffs: the ring thread goes, then libvcma; then the VMM thread */
	pthread_mutex_lock(&hand_lock);
	hand_quit = true;
	pthread_cond_signal(&hand_cond);
	pthread_mutex_unlock(&hand_lock);
	pthread_join(rthr, NULL);
	vcma_detach(v);
	/* the VMM thread: closing the channel now is the end, not a restart (a try under
	 * way stops at stop_sig) */
	atomic_store(&have_token, false);
	stop_sig = stop_sig ? stop_sig : SIGTERM;
	for (;;) {
		struct timespec ts;
		int s = atomic_load(&cur_sock);

		if (s >= 0)
			shutdown(s, SHUT_RDWR);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10000000l;
		if (ts.tv_nsec >= 1000000000l) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000l;
		}
		if (!pthread_timedjoin_np(thr, NULL, &ts))
			break;
	}
	if (bad)
		return 1;
	return rc == 0 || rc == -ECONNRESET || rc == -ETIMEDOUT || atomic_load(&host_gone) ? 0 : 1;
}
