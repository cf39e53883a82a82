// SPDX-License-Identifier: MIT
/*
 * simvm-reattach.c - vcma-simvm across a vcmad restart (docs/PROTOCOL.md §9.1, "sim:
 * restart and reattach").
 *
 *   attach     reattach_read_token(): the TOKEN comes right after the ATTACH_RSP and
 *              before the P2M (a vcmad without restart support sends the P2M at once:
 *              then the VM stops with vcmad, as before).
 *   lost       the VMM thread sees the socket end (vmm_main) and calls vmm_reattach():
 *              vmm_host_lost() (simvm-vmm.c) unparks, stops dirty logging, answers the
 *              waiting REUSEs, and nothing is sent from then on. RAM stays mapped: it is
 *              the machine memory file, which outlives vcmad.
 *   reconnect  backoff 10 ms doubling to 500 ms, until grace_ms after the loss. Each try
 *              sends REATTACH and the p2m as this VMM has it mapped, and reads
 *              ATTACH_RSP, TOKEN and REGIONS. No listener, BUSY, SHUTDOWN, a connection
 *              closed or timed out without an answer: try again. NO_REGION, INVALID,
 *              any other status, a malformed answer, another machine memory file: the
 *              VM's memory is gone, and vcma-simvm stops (exit 3).
 *   OK         the channel moves to the new socket at once (vmm_host_back: PIN again)
 *              and the VMM thread serves it as before: vcmad may PAUSE or DROP right
 *              away. The new ring goes to the ring thread, which checks the driver's
 *              regions against REGIONS (vm_regions_back) and moves the guest part with
 *              vcma_reattach_fds(): its calls in flight fail with -ECONNRESET and are
 *              retried. If vcmad goes away again before the ring thread took the
 *              ring, the newer one replaces it; a handover that fails (vcmad went away
 *              again during libvcma's HELLO) leaves libvcma's handle dead: the end.
 *
 * The VMM thread runs reconnecting; main reads the token (before the VMM thread starts)
 * and starts and stops the ring thread. The p2m does not change while vcmad is away:
 * only the VMM thread remaps, on vcmad's word.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "vcma.h"
#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_sim.h"
#include "vcma_status.h"
#include "simvm-vm.h"

#define BACKOFF_FIRST_NS 10000000ull  /* PROTOCOL.md: 10 ms, */
#define BACKOFF_MAX_NS 500000000ull   /* doubling to 500 ms */
#define RSP_MIN_WAIT_MS 1000          /* a try started near the end of the grace still waits this long */

static const char *status_name(int32_t st)
{
	static const char *const name[] = {
		[VCMA_ST_OK] = "OK", [VCMA_ST_INVALID] = "INVALID", [VCMA_ST_USE_NORMAL] = "USE_NORMAL",
		[VCMA_ST_NO_POOL] = "NO_POOL", [VCMA_ST_ACCESS] = "ACCESS", [VCMA_ST_QUOTA] = "QUOTA",
		[VCMA_ST_NO_SPACE] = "NO_SPACE", [VCMA_ST_TOO_BIG] = "TOO_BIG", [VCMA_ST_BUSY] = "BUSY",
		[VCMA_ST_NO_REGION] = "NO_REGION", [VCMA_ST_NO_MEMORY] = "NO_MEMORY", [VCMA_ST_NOT_READY] = "NOT_READY",
		[VCMA_ST_VERSION] = "VERSION", [VCMA_ST_LIMIT] = "LIMIT", [VCMA_ST_SHUTDOWN] = "SHUTDOWN",
		[VCMA_ST_INTERNAL] = "INTERNAL",
	};

	return st >= 0 && st <= VCMA_ST_MAX ? name[st] : "an unknown status";
}

/* ---- at attach ---- */

int reattach_read_token(struct vm *vm, const char **why)
{
	struct {
		uint32_t magic;
		uint16_t version, type;
	} hdr;
	struct vcma_sim_token t;
	ssize_t n;
	int rc;

	*why = "waiting for the reattach token";
	rc = wait_readable(vm->sock, ATTACH_TIMEOUT_MS);
	if (rc)
		return rc;
	do
		n = recv(vm->sock, &hdr, sizeof(hdr), MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0) {
		*why = "vcmad closed the connection after the attach response";
		return -ECONNRESET;
	}
	if (n == (ssize_t)sizeof(hdr) && hdr.magic == VCMA_SIM_MAGIC && hdr.version == VCMA_SIM_VERSION &&
	    hdr.type == VCMA_SIM_MSG_P2M) {
		msg("vcmad sent no reattach token (it does not keep VMs across a restart): this VM stops if vcmad does");
		return 0;
	}
	*why = "malformed reattach token";
	n = recv(vm->sock, &t, sizeof(t), MSG_TRUNC);
	if (n < 0)
		return -errno;
	if (n != (ssize_t)sizeof(t) || t.magic != VCMA_SIM_MAGIC || t.version != VCMA_SIM_VERSION ||
	    t.type != VCMA_SIM_MSG_TOKEN)
		return -EIO;
	if (t.guest_id != vm->guest_id) {
		*why = "reattach token for another guest id than the attach response's";
		return -EIO;
	}
	vm->token = t;
	vm->have_token = true;
	return 0;
}

/* ---- one try ---- */

/* what an OK answer brought */
struct back {
	int sock;
	int fds[4]; /* ring area, kick, irq, machine memory */
	struct vcma_sim_attach_rsp rsp;
	struct vcma_sim_token token;
	struct vcma_held_region *regions;
	uint32_t nregions;
};

static void back_init(struct back *b)
{
	memset(b, 0, sizeof(*b));
	b->sock = -1;
	for (int i = 0; i < 4; i++)
		b->fds[i] = -1;
}

static void back_release(struct back *b)
{
	for (int i = 0; i < 4; i++)
		if (b->fds[i] >= 0)
			close(b->fds[i]);
	if (b->sock >= 0)
		close(b->sock); /* vcmad detaches whatever it gave this connection */
	free(b->regions);
	back_init(b);
}

/* The p2m as this VMM has RAM mapped now, as maximal runs sorted by gfn. */
static struct vcma_sim_run *p2m_runs(const struct vm *vm, uint32_t *nruns)
{
	struct vcma_sim_run *runs;
	uint32_t n = 0;

	for (int pass = 0; pass < 2; pass++) {
		runs = pass ? calloc(n ? n : 1, sizeof(*runs)) : NULL;
		if (pass && !runs)
			return NULL;
		n = 0;
		for (uint64_t g = 0; g < vm->ram_frames;) {
			uint64_t k = 1;

			while (g + k < vm->ram_frames && vm->p2m[g + k] == vm->p2m[g] + k)
				k++;
			if (pass)
				runs[n] = (struct vcma_sim_run){ .gfn = g, .mfn = vm->p2m[g], .count = k };
			n++;
			g += k;
		}
	}
	*nruns = n;
	return runs;
}

static int send_dgram(int sock, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(sock, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

/* REATTACH, then the p2m in P2M messages of exactly sizeof(struct vcma_sim_p2m) */
static int send_reattach(struct vm *vm, int sock, const struct vcma_sim_run *runs, uint32_t nruns)
{
	struct vcma_sim_reattach ra = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_REATTACH,
		.role = VCMA_SIM_ROLE_VMM, .flags = vm->flags, .guest_id = vm->token.guest_id, .nruns = nruns,
		.ram_bytes = vm->o->ram,
	};
	struct vcma_sim_p2m *m;
	int rc;

	memcpy(ra.token, vm->token.token, sizeof(ra.token));
	memcpy(ra.name, vm->o->name, strlen(vm->o->name));
	rc = send_dgram(sock, &ra, sizeof(ra));
	if (rc)
		return rc;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	for (uint32_t i = 0; i < nruns && !rc; i += VCMA_SIM_P2M_RUNS) {
		uint32_t k = nruns - i < VCMA_SIM_P2M_RUNS ? nruns - i : VCMA_SIM_P2M_RUNS;

		memset(m, 0, sizeof(*m)); /* entries from nruns on are zero */
		m->magic = VCMA_SIM_MAGIC;
		m->version = VCMA_SIM_VERSION;
		m->type = VCMA_SIM_MSG_P2M;
		m->nruns = k;
		memcpy(m->run, runs + i, k * sizeof(*runs));
		rc = send_dgram(sock, m, sizeof(*m));
	}
	free(m);
	return rc;
}

/* TOKEN and REGIONS after an OK; 0, or -EIO with why set */
static int recv_token_regions(struct vm *vm, struct back *b, char *why, size_t len)
{
	uint64_t machine_frames = vm->machine_bytes / PAGE, prev = 0;
	struct vcma_sim_p2m *m;
	uint32_t have = 0;
	ssize_t n;
	int rc;

	rc = wait_readable(b->sock, ATTACH_TIMEOUT_MS);
	n = rc ? rc : recv(b->sock, &b->token, sizeof(b->token), MSG_TRUNC);
	if (n != (ssize_t)sizeof(b->token) || b->token.magic != VCMA_SIM_MAGIC || b->token.version != VCMA_SIM_VERSION ||
	    b->token.type != VCMA_SIM_MSG_TOKEN || b->token.guest_id != vm->token.guest_id) {
		snprintf(why, len, "no well-formed TOKEN for guest %u after the OK (%s)", vm->token.guest_id,
			 n < 0 ? strerror((int)-n) : n == 0 ? "connection closed" : "malformed");
		return -EIO;
	}
	b->nregions = b->rsp.nruns;
	b->regions = calloc(b->nregions ? b->nregions : 1, sizeof(*b->regions));
	m = malloc(sizeof(*m));
	if (!b->regions || !m) {
		free(m);
		snprintf(why, len, "out of memory for %u regions", b->nregions);
		return -ENOMEM;
	}
	while (have < b->nregions) {
		rc = wait_readable(b->sock, ATTACH_TIMEOUT_MS);
		n = rc ? rc : recv(b->sock, m, sizeof(*m), MSG_TRUNC);
		if (n != (ssize_t)sizeof(*m) || m->magic != VCMA_SIM_MAGIC || m->version != VCMA_SIM_VERSION ||
		    m->type != VCMA_SIM_MSG_REGIONS || !m->nruns || m->nruns > VCMA_SIM_P2M_RUNS || m->pad ||
		    m->nruns > b->nregions - have) {
			snprintf(why, len, "REGIONS message %u of %u: %s", have / VCMA_SIM_P2M_RUNS + 1,
				 (b->nregions + VCMA_SIM_P2M_RUNS - 1) / VCMA_SIM_P2M_RUNS,
				 n < 0 ? strerror((int)-n) : n == 0 ? "connection closed" : "malformed");
			free(m);
			return -EIO;
		}
		for (uint32_t i = 0; i < m->nruns; i++) {
			const struct vcma_sim_run *r = &m->run[i]; /* {handle, first frame, frames} */

			if (!r->gfn || (have && r->gfn <= prev) || !r->count || r->mfn >= machine_frames ||
			    r->count > machine_frames - r->mfn) {
				snprintf(why, len, "REGIONS run {handle %#" PRIx64 ", frame %#" PRIx64 ", %" PRIu64
					 " frames}: unsorted, repeated or outside machine memory", r->gfn, r->mfn, r->count);
				free(m);
				return -EIO;
			}
			b->regions[have++] = (struct vcma_held_region){
				.handle = r->gfn, .bus = r->mfn * PAGE, .size = r->count * PAGE,
			};
			prev = r->gfn;
		}
	}
	free(m);
	return 0;
}

/* The answer is OK: is it the VM this VMM has mapped? 0, or -EIO with why set */
static int check_ok(struct vm *vm, struct back *b, int got, char *why, size_t len)
{
	const struct vcma_sim_attach_rsp *r = &b->rsp;
	struct stat st;

	if (r->nfds != 4 || got != 4) {
		snprintf(why, len, "OK with %d fd(s) (nfds %u), not the 4 of a VMM", got, r->nfds);
		return -EIO;
	}
	if (r->guest_id != vm->token.guest_id || r->ram_frames != vm->ram_frames ||
	    r->machine_bytes != vm->machine_bytes || r->window_gpa != vm->window_gpa) {
		snprintf(why, len, "OK for another VM: guest %u, %" PRIu64 " RAM frames, machine %#" PRIx64 " bytes, window "
			 "at %#" PRIx64 " (this one: %u, %" PRIu64 ", %#" PRIx64 ", %#" PRIx64 ")", r->guest_id,
			 r->ram_frames, r->machine_bytes, r->window_gpa, vm->token.guest_id, vm->ram_frames,
			 vm->machine_bytes, vm->window_gpa);
		return -EIO;
	}
	if (r->shm_size < VCMA_PROTO_PAGE || r->shm_size > SIZE_MAX || r->nruns > vm->machine_bytes / PAGE) {
		snprintf(why, len, "OK with an impossible ring size %#" PRIx64 " or %u regions", r->shm_size, r->nruns);
		return -EIO;
	}
	/* RAM stays mapped from the file we have: the host's must be that file */
	if (fstat(b->fds[3], &st)) {
		snprintf(why, len, "fstat of the machine memory fd: %s", strerror(errno));
		return -EIO;
	}
	if (st.st_dev != vm->machine_dev || st.st_ino != vm->machine_ino || (uint64_t)st.st_size != vm->machine_bytes) {
		snprintf(why, len, "vcmad sent another machine memory file (dev %#jx inode %ju, %jd bytes; RAM is mapped "
			 "from dev %#jx inode %ju): this VM's RAM is not in it", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino,
			 (intmax_t)st.st_size, (uintmax_t)vm->machine_dev, (uintmax_t)vm->machine_ino);
		return -EIO;
	}
	return 0;
}

/*
 * One try: 0 with b filled (the caller's to release), -EAGAIN to try again, or another
 * -errno: vcmad answered that it does not have the VM, or answered nonsense. why says
 * what happened either way.
 */
static int try_reattach(struct vm *vm, const struct vcma_sim_run *runs, uint32_t nruns, uint64_t deadline,
			struct back *b, char *why, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { ATTACH_TIMEOUT_MS / 1000, (ATTACH_TIMEOUT_MS % 1000) * 1000 };
	uint64_t t = now_ns();
	int got = 0, ms, rc, sent;
	bool trunc;
	ssize_t n;

	b->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (b->sock < 0) {
		snprintf(why, len, "socket: %s", strerror(errno));
		return -EAGAIN;
	}
	memcpy(sa.sun_path, vm->o->socket, strlen(vm->o->socket) + 1); /* its length was checked at attach */
	if (connect(b->sock, (struct sockaddr *)&sa, sizeof(sa))) {
		snprintf(why, len, "connect: %s", strerror(errno));
		return -EAGAIN;
	}
	/* a host that takes the connection but reads nothing costs a try, not the VM */
	if (setsockopt(b->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
		snprintf(why, len, "setsockopt SO_SNDTIMEO: %s", strerror(errno));
		return -EAGAIN;
	}
	sent = send_reattach(vm, b->sock, runs, nruns);
	if (sent && sent != -EPIPE && sent != -ECONNRESET) {
		snprintf(why, len, "sending REATTACH and the p2m: %s", strerror(-sent));
		return sent == -ENOMEM ? -ENOMEM : -EAGAIN;
	}
	/* the host may have answered (BUSY, INVALID) before it closed: read that first */
	ms = deadline > t ? (int)((deadline - t) / 1000000ull) : 0;
	ms = ms < RSP_MIN_WAIT_MS ? RSP_MIN_WAIT_MS : ms > ATTACH_TIMEOUT_MS ? ATTACH_TIMEOUT_MS : ms;
	rc = wait_readable(b->sock, ms);
	if (rc) {
		snprintf(why, len, "no answer to REATTACH: %s", strerror(-rc));
		return -EAGAIN;
	}
	n = sim_recv_rsp(b->sock, &b->rsp, b->fds, &got, &trunc);
	if (n <= 0) {
		snprintf(why, len, "vcmad closed the connection without an answer%s%s", n ? ": " : "",
			 n ? strerror((int)-n) : "");
		return -EAGAIN;
	}
	if (n != (ssize_t)sizeof(b->rsp) || trunc || b->rsp.magic != VCMA_SIM_MAGIC ||
	    b->rsp.version != VCMA_SIM_VERSION || b->rsp.type != VCMA_SIM_MSG_ATTACH_RSP) {
		snprintf(why, len, "malformed answer to REATTACH (%zd bytes)", n);
		return -EIO;
	}
	switch (b->rsp.status) {
	case VCMA_ST_OK:
		break;
	case VCMA_ST_BUSY:
		snprintf(why, len, "vcmad answered BUSY (still starting, or it sees the old connection)");
		return -EAGAIN;
	case VCMA_ST_SHUTDOWN: /* it keeps the records for its next start */
		snprintf(why, len, "vcmad answered SHUTDOWN (stopping again)");
		return -EAGAIN;
	case VCMA_ST_NO_REGION:
		snprintf(why, len, "vcmad answered NO_REGION: it did not keep this VM (not kept across the restart, "
			 "reclaimed after its grace period, or the token is not this VM's)");
		return -ENOENT;
	case VCMA_ST_INVALID:
		snprintf(why, len, "vcmad answered INVALID: a malformed REATTACH, or a p2m it cannot adopt; it "
			 "reclaims the VM");
		return -EINVAL;
	default:
		snprintf(why, len, "vcmad answered %s (%d)", status_name(b->rsp.status), b->rsp.status);
		rc = vcma_status_errno(b->rsp.status);
		return rc && rc != -EAGAIN ? rc : -EIO;
	}
	rc = check_ok(vm, b, got, why, len);
	if (!rc)
		rc = recv_token_regions(vm, b, why, len);
	return rc;
}

/* ---- the whole reattach ---- */

/* Wait ns before the next try: 0, or -ECANCELED when main wants out (the run is over and
 * it detaches, or a signal came). */
static int backoff(struct vm *vm, uint64_t ns)
{
	uint64_t end = now_ns() + ns;

	for (;;) {
		struct pollfd pfd = { .fd = vm->wake_fd, .events = POLLIN };
		uint64_t t = now_ns();
		bool detaching;

		pthread_mutex_lock(&vm->reattach_lock);
		detaching = vm->detaching;
		pthread_mutex_unlock(&vm->reattach_lock);
		if (got_signal || detaching)
			return -ECANCELED;
		if (t >= end)
			return 0;
		/* wake_fd is left readable for vmm_main, which leaves on it */
		if (poll(&pfd, 1, (int)((end - t + 999999ull) / 1000000ull)) > 0)
			return -ECANCELED;
	}
}

/* ---- the guest part's move to the new ring (the ring thread) ---- */

/* A new ring for the guest part, and the VMM's own view of it (as at attach). */
struct ring_handoff {
	int fds[3]; /* area, kick, irq: libvcma's once handed over */
	uint64_t shm_size;
	struct vcma_held_region *regions;
	uint32_t nregions;
	struct vcma_ctrl *ctrl;
	int irq;
	unsigned int host_epoch; /* of the vcmad that gave it: the ring is stale once it changed */
};

static void handoff_free(struct ring_handoff *h)
{
	if (!h)
		return;
	for (int i = 0; i < 3; i++)
		if (h->fds[i] >= 0)
			close(h->fds[i]);
	if (h->ctrl)
		munmap(h->ctrl, VCMA_PROTO_PAGE);
	if (h->irq >= 0)
		close(h->irq);
	free(h->regions);
	free(h);
}

/* The VMM's own view of a ring: DEAD and an irq (as vcmad does to a guest it cut off). */
static void ring_dead(struct vcma_ctrl *ctrl, int irq_fd)
{
	uint64_t one = 1;

	vcma_store_release(&ctrl->state, (uint32_t)VCMA_STATE_DEAD);
	if (write(irq_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		msg("cannot raise the guest part's irq: %s", strerror(errno));
}

void reattach_rings_dead(struct vm *vm)
{
	if (vm->ring_busy)
		ring_dead(vm->ring_busy->ctrl, vm->ring_busy->irq);
	if (vm->ring_next)
		ring_dead(vm->ring_next->ctrl, vm->ring_next->irq);
}

bool reattach_cut_off(struct vm *vm)
{
	const struct vcma_ctrl *c;
	bool dead;

	/* the ring that came with the socket: the newest one */
	pthread_mutex_lock(&vm->reattach_lock);
	c = vm->ring_next ? vm->ring_next->ctrl : vm->ring_busy ? vm->ring_busy->ctrl : vm->ctrl;
	dead = c && vcma_load_acquire(&c->state) == VCMA_STATE_DEAD;
	pthread_mutex_unlock(&vm->reattach_lock);
	return dead;
}

/* From b (OK, checked): the handoff for the ring thread, with the VMM's view. */
static struct ring_handoff *handoff_new(struct back *b)
{
	struct ring_handoff *h = calloc(1, sizeof(*h));

	if (!h) {
		errno = ENOMEM;
		return NULL;
	}
	h->irq = -1;
	for (int i = 0; i < 3; i++) {
		h->fds[i] = b->fds[i];
		b->fds[i] = -1;
	}
	h->shm_size = b->rsp.shm_size;
	h->regions = b->regions;
	h->nregions = b->nregions;
	b->regions = NULL;
	h->ctrl = mmap(NULL, VCMA_PROTO_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, h->fds[0], 0);
	if (h->ctrl == MAP_FAILED)
		h->ctrl = NULL;
	else
		h->irq = fcntl(h->fds[2], F_DUPFD_CLOEXEC, 0);
	if (!h->ctrl || h->irq < 0) {
		int err = errno;

		handoff_free(h);
		errno = err;
		return NULL;
	}
	return h;
}

/* The guest part cannot move (libvcma's handle is dead now): vcmad has the VM, the VM
 * cannot use it. As NO_REGION. */
static void ring_fatal(struct vm *vm, struct ring_handoff *h, int rc)
{
	msg("cannot reattach: the guest part cannot take the new ring: %s (%s); stopping", vcma_strerror(rc),
	    strerror(-rc));
	atomic_store(&vm->reattach_failed, true);
	atomic_store(&vm->host_gone, true);
	atomic_store(&vm->stop, true);
	ring_dead(h->ctrl, h->irq); /* wherever libvcma is now, it sees the device gone */
	if (vm->ctrl)
		ring_dead(vm->ctrl, vm->irq_fd);
}

static void *ring_main(void *p)
{
	struct vm *vm = p;

	pthread_mutex_lock(&vm->reattach_lock);
	for (;;) {
		struct ring_handoff *h;
		unsigned int lost;
		int rc;

		while (!vm->ring_next && !vm->detaching)
			pthread_cond_wait(&vm->ring_cond, &vm->reattach_lock);
		if (vm->detaching)
			break;
		h = vm->ring_busy = vm->ring_next;
		vm->ring_next = NULL;
		pthread_mutex_unlock(&vm->reattach_lock);

		/* before libvcma forgets (unmaps) what the list does not name */
		lost = vm->up->regions_back(vm, h->regions, h->nregions);
		atomic_fetch_add(&vm->reattach_errors, lost);
		/* wakes the guest part's calls waiting on the old ring: -ECONNRESET */
		rc = vcma_reattach_fds(vm->v, h->fds[0], (size_t)h->shm_size, h->fds[1], h->fds[2], h->regions,
				       h->nregions);
		h->fds[0] = h->fds[1] = h->fds[2] = -1; /* libvcma's now, even on failure */

		pthread_mutex_lock(&vm->reattach_lock);
		vm->ring_busy = NULL;
		if (!rc) {
			struct vcma_ctrl *old = vm->ctrl;
			int old_irq = vm->irq_fd;

			vm->ctrl = h->ctrl;
			vm->irq_fd = h->irq;
			h->ctrl = old;
			h->irq = old_irq;
			/* unless vcmad went away again meanwhile: then it is stale already */
			if (atomic_load(&vm->host_epoch) == h->host_epoch && (atomic_load(&vm->ring_epoch) & 1u))
				atomic_fetch_add(&vm->ring_epoch, 1);
		} else if (!atomic_load(&vm->host_gone)) {
			/* a handle that failed stays dead (vcma.h), even if vcmad went away again
			 * during its HELLO and a newer ring is queued: nothing more to hand over */
			ring_fatal(vm, h, rc);
		}
		handoff_free(h);
	}
	pthread_mutex_unlock(&vm->reattach_lock);
	return NULL;
}

int reattach_ring_start(struct vm *vm)
{
	int rc = pthread_create(&vm->ring_thr, NULL, ring_main, vm);

	if (rc)
		return -rc;
	vm->ring_started = true;
	return 0;
}

void reattach_ring_stop(struct vm *vm)
{
	pthread_mutex_lock(&vm->reattach_lock);
	vm->detaching = true;
	pthread_cond_broadcast(&vm->ring_cond);
	pthread_mutex_unlock(&vm->reattach_lock);
	if (vm->ring_started)
		pthread_join(vm->ring_thr, NULL);
	vm->ring_started = false;
	pthread_mutex_lock(&vm->reattach_lock);
	handoff_free(vm->ring_next); /* queued after the run was over */
	vm->ring_next = NULL;
	pthread_mutex_unlock(&vm->reattach_lock);
}

/* OK and checked: the channel moves to the new socket at once (vcmad may PAUSE or DROP
 * right away), and the new ring is queued for the ring thread. */
static int come_back(struct vm *vm, struct back *b, uint64_t t_lost, unsigned int tries)
{
	struct ring_handoff *h = handoff_new(b);
	uint32_t nregions;

	if (!h) {
		msg("cannot reattach: taking the new ring: %s", strerror(errno));
		back_release(b);
		return -ENOMEM;
	}
	pthread_mutex_lock(&vm->reattach_lock);
	if (vm->detaching) {
		pthread_mutex_unlock(&vm->reattach_lock);
		handoff_free(h);
		back_release(b);
		msg("not reattaching: the run is over");
		return -ECANCELED;
	}
	if (vm->ring_next) /* never handed over: its vcmad is gone already */
		handoff_free(vm->ring_next);
	h->host_epoch = atomic_load(&vm->host_epoch) + 1; /* vmm_host_back, below, sets it */
	nregions = h->nregions;
	vm->ring_next = h; /* the ring thread's from here on */
	pthread_cond_signal(&vm->ring_cond);
	pthread_mutex_unlock(&vm->reattach_lock);

	close(b->fds[3]); /* the machine memory file RAM is mapped from already */
	b->fds[3] = -1;
	vm->token = b->token; /* the old one is spent */
	vmm_host_back(vm, b->sock);
	b->sock = -1;
	atomic_fetch_add(&vm->reattaches, 1);
	msg("reattached to vcmad as guest %u after %.0f ms away (try %u): %u region(s) back", vm->token.guest_id,
	    (double)(now_ns() - t_lost) / 1e6, tries, nregions);
	vm->up->report_again_idle(vm);
	back_release(b);
	return 0;
}

int vmm_reattach(struct vm *vm, const char *cause)
{
	uint64_t t_lost = now_ns(), deadline = t_lost + (uint64_t)vm->token.grace_ms * 1000000ull;
	uint64_t delay = BACKOFF_FIRST_NS;
	struct vcma_sim_run *runs;
	unsigned int tries = 0;
	char why[512] = "";
	struct back b;
	uint32_t nruns;
	int rc;

	vmm_host_lost(vm);
	msg("vcmad went away (%s): the VM keeps running; reattaching as guest %u for up to %u ms", cause,
	    vm->token.guest_id, vm->token.grace_ms);
	runs = p2m_runs(vm, &nruns);
	if (!runs) {
		msg("cannot reattach: out of memory");
		return -ENOMEM;
	}
	back_init(&b);
	for (;;) {
		uint64_t t = now_ns();

		if (tries && t >= deadline) {
			msg("vcmad did not take the VM back within the grace period (%u ms, %u tries; the last: %s): "
			    "its RAM and regions are gone", vm->token.grace_ms, tries, why);
			rc = -ETIMEDOUT;
			break;
		}
		rc = backoff(vm, t >= deadline ? 0 : deadline - t < delay ? deadline - t : delay);
		if (rc) {
			msg("not reattaching: %s", got_signal ? "stopped by a signal" : "the run is over");
			break;
		}
		tries++;
		rc = try_reattach(vm, runs, nruns, deadline, &b, why, sizeof(why));
		if (rc != -EAGAIN)
			break;
		back_release(&b);
		delay = delay * 2 < BACKOFF_MAX_NS ? delay * 2 : BACKOFF_MAX_NS;
	}
	free(runs);
	if (!rc)
		return come_back(vm, &b, t_lost, tries);
	if (rc != -ETIMEDOUT && rc != -ECANCELED)
		msg("cannot reattach: %s; the VM's RAM and regions are gone", why);
	back_release(&b);
	return rc;
}
