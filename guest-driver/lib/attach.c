// SPDX-License-Identifier: MIT
/*
 * attach.c - getting an attachment: the sim socket handshake (proto/vcma_sim.h), the
 * shared-area checks of docs/PROTOCOL.md §2.5, HELLO; getting it back after the host
 * restarted (§9.1 "Restart and reattach"); and taking it apart again.
 *
 * The control page is copied into private memory once, checked, and only the copy's
 * geometry is used from then on. Environment: VCMA_SOCKET (default socket),
 * VCMA_TIMEOUT_MS (default timeout, also for the attach itself), VCMA_SPIN_US (spin on
 * rsp_prod this long before sleeping; 0 = off), VCMA_RATE and VCMA_BURST (request
 * pacing, see vcma_internal.h), VCMA_REATTACH=0 (attach without a reattach token),
 * VCMA_LAZY_FREE=0 (every posted FREE kicks the host: PROTOCOL.md §4.9 not asked for),
 * VCMA_WAIT_POLL=1 (blocking calls sleep in poll() and read the irq, not in an epoll
 * set of their own with the irq edge-triggered).
 *
 * Reattaching has no thread of its own: a handle that lost its host (vl_notice_lost)
 * is taken back by the calls made on it (vl_ready), a step at a time. Between tries
 * the handle's timer_fd, in the epoll set vcma_fd() returns, wakes an event loop when
 * the next try is due; the connection being tried is in that set too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vcma_barrier.h"
#include "vcma_guest_check.h"
#include "vcma_internal.h"
#include "vcma_sim.h"
#include "vcma_name.h"

#define VL_MAX_RECV_FDS 8

static unsigned int env_uint(const char *name, unsigned int dflt, unsigned int max)
{
	const char *s = getenv(name);
	unsigned long x;
	char *end;

	if (!s || !*s)
		return dflt;
	errno = 0;
	x = strtoul(s, &end, 10);
	if (errno || *end || x > max)
		return dflt;
	return (unsigned int)x;
}

static void close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* A name of at most max characters, or (allow_empty) none. */
static bool name_ok(const char *s, size_t max, bool allow_empty)
{
	size_t n;

	if (!s || !*s)
		return allow_empty;
	n = strnlen(s, max + 1);
	return vcma_name_ok(s, n, max + 1);
}

/* Milliseconds for poll() until a deadline in monotonic ns (0 = none: -1). */
static int ms_left(uint64_t deadline_ns)
{
	uint64_t now = vl_now_ns(), left;

	if (!deadline_ns)
		return -1;
	if (now >= deadline_ns)
		return 0;
	left = (deadline_ns - now + 999999ull) / 1000000ull;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* ---- the handle and its fds ---- */

/* vcma_fd()'s epoll set: readable when any of its members is. */
static int ep_add(struct vcma *v, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

/* Out of the set before close(): a registration lives as long as the open file, which
 * a peer may hold too (a dup'd irq eventfd would keep waking the set). */
static void ep_del(struct vcma *v, int fd)
{
	if (fd >= 0)
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, fd, NULL);
	vl_wait_forget(v, fd);
}

static const struct vl_session_ops session_ops = {
	.ready = vl_ready,
	.notice_lost = vl_notice_lost,
	.reattach_end = vl_reattach_end,
};

static struct vcma *vl_new(int sock, int shm_fd, int kick_fd, int irq_fd)
{
	struct vcma *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->session = &session_ops;
	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (v->epfd < 0)
		goto err_free;
	/* -1: vl_wait polls instead (VCMA_WAIT_POLL=1 asks for that: tests, diagnosis) */
	v->wait_ep = env_uint("VCMA_WAIT_POLL", 0, 1) ? -1 : epoll_create1(EPOLL_CLOEXEC);
	v->w_irq = v->w_sock = v->w_wake = -1;
	if (pthread_mutex_init(&v->lock, NULL))
		goto err_epfd;
	if (pthread_mutex_init(&v->swap_lock, NULL))
		goto err_lock;
	if (pthread_cond_init(&v->swapped, NULL))
		goto err_swap_lock;
	atomic_init(&v->swaps, 0);
	v->sock = sock;
	v->shm_fd = shm_fd;
	v->kick_fd = kick_fd;
	v->irq_fd = irq_fd;
	v->wake_fd = -1;
	v->timer_fd = -1;
	v->try_sock = -1;
	v->timeout_ms = env_uint("VCMA_TIMEOUT_MS", VL_DEFAULT_TIMEOUT_MS, 86400000u);
	v->spin_us = env_uint("VCMA_SPIN_US", 0, 1000000u);
	v->no_lazy_free = !env_uint("VCMA_LAZY_FREE", 1, 1);
	v->rate = env_uint("VCMA_RATE", VL_DEFAULT_RATE, 100000000u);
	v->burst = env_uint("VCMA_BURST", VL_DEFAULT_BURST, 100000000u);
	if (!v->burst)
		v->burst = 1;
	v->tokens = v->burst;
	v->tokens_at = vl_now_ns();
	return v;

err_swap_lock:
	pthread_mutex_destroy(&v->swap_lock);
err_lock:
	pthread_mutex_destroy(&v->lock);
err_epfd:
	close_fd(v->wait_ep);
	close(v->epfd);
err_free:
	free(v);
	return NULL;
}

static void vl_destroy(struct vcma *v)
{
	if (v->shm)
		munmap(v->shm, (size_t)v->shm_size);
	close_fd(v->shm_fd);
	close_fd(v->kick_fd);
	close_fd(v->irq_fd);
	close_fd(v->sock);
	close_fd(v->try_sock);
	close_fd(v->timer_fd);
	close_fd(v->wake_fd);
	close_fd(v->epfd);
	close_fd(v->wait_ep);
	vl_ring_fini(v);
	pthread_cond_destroy(&v->swapped);
	pthread_mutex_destroy(&v->swap_lock);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

/* ---- a shared area: map, check, say HELLO ---- */

struct vl_area {
	int shm_fd, kick_fd, irq_fd;
	uint8_t *shm;
	uint64_t size;
	uint32_t state;        /* READY or CONNECTED, when it was checked */
	struct vcma_ctrl ctrl; /* the private copy (§2.5), checked */
};

/* §2.5 on the private copy. 0, -EPROTONOSUPPORT (major) or -EIO. */
static int ctrl_check(const struct vcma_ctrl *c, uint64_t size)
{
	switch (vcma_ctrl_check(c, size)) {
	case VCMA_CTRL_OK: return 0;
	case VCMA_CTRL_MAJOR: return -EPROTONOSUPPORT;
	default: return -EIO;
	}
}

/*
 * Map a's shared area, wait for READY and check its control page. The fds stay the
 * caller's; the mapping is a's on success only. 0, or -errno (-EIO: a bad layout,
 * -ECONNRESET: DEAD, -ESHUTDOWN: CLOSING, -ETIMEDOUT: still INIT at the deadline).
 */
static int area_open(struct vl_area *a, size_t shm_size, uint64_t deadline)
{
	uint64_t words[sizeof(struct vcma_ctrl) / 8];
	struct stat st;
	int rc;

	a->shm = NULL;
	if (a->shm_fd < 0 || a->kick_fd < 0 || a->irq_fd < 0)
		return -EBADF;
	if (fstat(a->shm_fd, &st))
		return -errno;
	if (shm_size < VCMA_PROTO_PAGE || st.st_size < 0 || (uint64_t)st.st_size != (uint64_t)shm_size)
		return -EIO;
	/* never block in read() or write() on the notification fds */
	for (int i = 0; i < 2; i++) {
		int fd = i ? a->irq_fd : a->kick_fd, fl = fcntl(fd, F_GETFL);

		if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK)))
			return -errno;
	}
	a->shm = mmap(NULL, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, a->shm_fd, 0);
	if (a->shm == MAP_FAILED) {
		a->shm = NULL;
		return -errno;
	}
	a->size = shm_size;

	/* INIT: the host is still writing the layout; touch nothing else (§3) */
	for (;;) {
		a->state = vcma_load_acquire(&((struct vcma_ctrl *)a->shm)->state);
		if (a->state != VCMA_STATE_INIT)
			break;
		if (deadline && vl_now_ns() >= deadline) {
			rc = -ETIMEDOUT;
			goto fail;
		}
		usleep(1000);
	}
	/* the copy is ordered after the acquire of state, and is all we use */
	vcma_copy_from_shared(words, a->shm, sizeof(words));
	memcpy(&a->ctrl, words, sizeof(a->ctrl));
	switch (a->state) {
	case VCMA_STATE_READY:
	case VCMA_STATE_CONNECTED:
		rc = ctrl_check(&a->ctrl, a->size);
		break;
	case VCMA_STATE_CLOSING:
		rc = -ESHUTDOWN;
		break;
	default:
		rc = -ECONNRESET; /* DEAD, or anything above it */
		break;
	}
	if (!rc)
		return 0;
fail:
	munmap(a->shm, (size_t)a->size);
	a->shm = NULL;
	return rc;
}

/* Whatever of a is still a's: its mapping and fds. */
static void area_close(struct vl_area *a)
{
	if (a->shm)
		munmap(a->shm, (size_t)a->size);
	a->shm = NULL;
	close_fd(a->shm_fd);
	close_fd(a->kick_fd);
	close_fd(a->irq_fd);
	a->shm_fd = a->kick_fd = a->irq_fd = -1;
}

/* The handle's area goes: out of the epoll set, unmapped, closed. */
static void area_drop(struct vcma *v)
{
	ep_del(v, v->irq_fd);
	if (v->shm)
		munmap(v->shm, (size_t)v->shm_size);
	v->shm = NULL;
	close_fd(v->shm_fd);
	close_fd(v->kick_fd);
	close_fd(v->irq_fd);
	v->shm_fd = v->kick_fd = v->irq_fd = -1;
}

/* a becomes the handle's area (a keeps nothing). */
static int area_take(struct vcma *v, struct vl_area *a)
{
	v->shm = a->shm;
	v->shm_size = a->size;
	v->ctrl = (struct vcma_ctrl *)v->shm; /* never left on the old, unmapped area */
	v->shm_fd = a->shm_fd;
	v->kick_fd = a->kick_fd;
	v->irq_fd = a->irq_fd;
	a->shm = NULL;
	a->shm_fd = a->kick_fd = a->irq_fd = -1;
	return ep_add(v, v->irq_fd);
}

static int hello(struct vcma *v, uint32_t initial_state)
{
	struct vcma_req q;
	struct vcma_rsp r;
	int rc;

	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_HELLO;
	q.arg0 = (uint64_t)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR;
	q.arg1 = VCMA_F_KNOWN & ~(v->no_lazy_free ? VCMA_F_LAZY_FREE : 0);
	rc = vl_call(v, &q, &r, vl_deadline(v));
	if (rc == -EINVAL && initial_state == VCMA_STATE_CONNECTED) {
		/* features are negotiated once per generation: take over the ones a
		 * previous user of this area agreed */
		v->features = vcma_read_once(&v->ctrl->guest_features) & VCMA_F_KNOWN;
		v->connected = true;
		return 0;
	}
	if (rc)
		return rc;
	v->features = r.val[0] & VCMA_F_KNOWN;
	v->host_version = r.val[1];
	v->connected = true;
	return 0;
}

/* The ring indices of the handle's new area, then HELLO. */
static int ring_start(struct vcma *v, uint32_t state)
{
	/* a fresh area starts at 0; one already CONNECTED continues where it is, and
	 * only if nothing is in flight there */
	v->req_prod_pvt = vcma_read_once(&v->rh->req_prod);
	v->rsp_cons = v->req_prod_pvt;
	v->req_notified = v->req_prod_pvt;
	if (vcma_read_once(&v->rh->rsp_prod) != v->req_prod_pvt)
		return -EBUSY;
	v->evt_cons = vcma_read_once(&v->eh->evt_cons);
	return hello(v, state);
}

/* The first area of a handle whose fds vl_new() took. */
static int attach_area(struct vcma *v, size_t shm_size)
{
	struct vl_area a = { .shm_fd = v->shm_fd, .kick_fd = v->kick_fd, .irq_fd = v->irq_fd };
	int rc = area_open(&a, shm_size, vl_deadline(v));

	if (rc)
		return rc;
	v->shm = a.shm;
	v->shm_size = a.size;
	v->guest_id = a.ctrl.guest_id; /* a reattach keeps it (adopt() checks) */
	rc = ep_add(v, v->irq_fd);
	if (!rc)
		rc = vl_ring_init(v, &a.ctrl);
	if (!rc)
		rc = ring_start(v, a.state);
	return rc;
}

int vcma_attach_fds(int shm_fd, size_t shm_size, int kick_fd, int irq_fd, struct vcma **out)
{
	struct vcma *v;
	int rc;

	if (out)
		*out = NULL;
	v = out ? vl_new(-1, shm_fd, kick_fd, irq_fd) : NULL;
	if (!v) {
		close_fd(shm_fd);
		close_fd(kick_fd);
		close_fd(irq_fd);
		return out ? -ENOMEM : -EINVAL;
	}
	/* what vcma_reattach_fds() wakes a call waiting on the old rings with */
	v->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	rc = v->wake_fd < 0 ? -errno : attach_area(v, shm_size);
	if (rc) {
		vl_destroy(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* ---- the sim socket ---- */

static int sock_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	int fd, rc;

	if (!len)
		return -EINVAL;
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* One datagram, whole. 0, or -errno (-ECONNRESET: the host is gone). */
static int send_msg(int sock, const void *msg, size_t len)
{
	ssize_t n = send(sock, msg, len, MSG_NOSIGNAL);

	if (n == (ssize_t)len)
		return 0;
	return n < 0 ? (errno == EPIPE ? -ECONNRESET : -errno) : -EIO;
}

/*
 * One datagram into buf within timeout_ms (-1: no limit), and the fds it carried
 * (fds[VL_MAX_RECV_FDS], *nfds of them; extras are closed). Returns its length, or
 * -ECONNRESET (closed), -ETIMEDOUT, -EIO (truncated; its fds closed) or -errno.
 */
static ssize_t recv_msg(int sock, void *buf, size_t len, int timeout_ms, int *fds, int *nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * VL_MAX_RECV_FDS)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf) };
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	ssize_t n;
	int rc;

	*nfds = 0;
	do
		rc = poll(&pfd, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -errno;
	if (rc == 0)
		return -ETIMEDOUT;
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
			if (*nfds < VL_MAX_RECV_FDS)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	if (n > 0 && !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		return n;
	for (int i = 0; i < *nfds; i++)
		close(fds[i]);
	*nfds = 0;
	return n == 0 ? -ECONNRESET : -EIO; /* closed without a word, or cut short */
}

/* One datagram of exactly len bytes without fds: 0 or -errno (as recv_msg; -EIO for
 * another length or fds). */
static int recv_fixed(int sock, void *buf, size_t len, int timeout_ms)
{
	int fds[VL_MAX_RECV_FDS], nfds;
	ssize_t n = recv_msg(sock, buf, len, timeout_ms, fds, &nfds);

	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (n < 0)
		return (int)n;
	return n == (ssize_t)len && !nfds ? 0 : -EIO;
}

/*
 * The answer to an ATTACH or a REATTACH: 0 once a well-formed one arrived, whatever
 * its status (the three fds are ours if it is OK; extras are closed). -ECONNRESET if
 * the host closed without one (refused), -ETIMEDOUT, -EIO (malformed) or -errno.
 */
static int recv_attach_rsp(int sock, int timeout_ms, struct vcma_sim_attach_rsp *rsp, int fds[3])
{
	int got[VL_MAX_RECV_FDS], ngot, rc = 0;
	ssize_t n;

	memset(rsp, 0, sizeof(*rsp));
	n = recv_msg(sock, rsp, sizeof(*rsp), timeout_ms, got, &ngot);
	if (n < 0)
		return (int)n;
	if (n != (ssize_t)sizeof(*rsp))
		rc = -EIO;
	else if (rsp->magic != VCMA_SIM_MAGIC || rsp->version != VCMA_SIM_VERSION || rsp->type != VCMA_SIM_MSG_ATTACH_RSP)
		rc = -EIO;
	else if (rsp->status == VCMA_ST_OK && (rsp->nfds != 3 || ngot < 3))
		rc = -EIO;
	for (int i = 0; i < ngot; i++) {
		if (!rc && rsp->status == VCMA_ST_OK && i < 3)
			fds[i] = got[i];
		else
			close(got[i]); /* extras, a refusal's, or everything on failure */
	}
	return rc;
}

/* The TOKEN right behind an OK answer to a client that set REATTACH. */
static int recv_token(int sock, int timeout_ms, uint32_t guest_id, struct vcma_sim_token *tok)
{
	int rc = recv_fixed(sock, tok, sizeof(*tok), timeout_ms);

	if (rc)
		return rc;
	if (tok->magic != VCMA_SIM_MAGIC || tok->version != VCMA_SIM_VERSION || tok->type != VCMA_SIM_MSG_TOKEN ||
	    tok->guest_id != guest_id)
		return -EIO;
	return 0;
}

/* One REGIONS run checked and appended to h[*got]: runs are sorted by handle. */
static int region_run(const struct vcma_sim_run *r, struct vcma_held_region *h, uint32_t *got)
{
	const uint64_t max_frames = UINT64_MAX / VCMA_PROTO_PAGE;

	if (!r->gfn || !r->count || r->count > max_frames || r->mfn > max_frames - r->count ||
	    (*got && r->gfn <= h[*got - 1].handle))
		return -EIO;
	h[*got].handle = r->gfn;
	h[*got].bus = r->mfn * VCMA_PROTO_PAGE;
	h[*got].size = r->count * VCMA_PROTO_PAGE;
	(*got)++;
	return 0;
}

/* The REGIONS messages after a reattach's TOKEN: nruns runs {handle, first machine
 * frame, frames}, as held regions in *out (malloc'd; NULL for none). 0 or -errno. */
static int recv_regions(int sock, uint32_t nruns, int timeout_ms, struct vcma_held_region **out)
{
	struct vcma_held_region *h = NULL;
	struct vcma_sim_p2m *m = NULL;
	uint32_t got = 0;
	int rc = 0;

	*out = NULL;
	if (!nruns)
		return 0;
	if (nruns > VL_MAX_REGIONS)
		return -EIO;
	m = malloc(sizeof(*m));
	h = calloc(nruns, sizeof(*h));
	if (!m || !h) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < nruns) {
		rc = recv_fixed(sock, m, sizeof(*m), timeout_ms);
		if (rc)
			goto out;
		if (m->magic != VCMA_SIM_MAGIC || m->version != VCMA_SIM_VERSION || m->type != VCMA_SIM_MSG_REGIONS ||
		    !m->nruns || m->nruns > VCMA_SIM_P2M_RUNS || m->nruns > nruns - got || m->pad) {
			rc = -EIO;
			goto out;
		}
		for (uint32_t i = 0; i < VCMA_SIM_P2M_RUNS && !rc; i++) {
			const struct vcma_sim_run *r = &m->run[i];

			if (i < m->nruns)
				rc = region_run(r, h, &got);
			else if (r->gfn || r->mfn || r->count)
				rc = -EIO; /* entries from nruns on are zero */
		}
		if (rc)
			goto out;
	}
	*out = h;
	h = NULL;
out:
	free(m);
	free(h);
	return rc;
}

/*
 * One attach on a new connection: 0 with *sockp, *rsp (OK), fds and, if a asked for
 * REATTACH, *tok; or -errno, with rsp->status the host's if it refused (0 else).
 */
static int attach_once(const char *path, const struct vcma_sim_attach *a, unsigned int timeout_ms, int *sockp,
		       struct vcma_sim_attach_rsp *rsp, int fds[3], struct vcma_sim_token *tok)
{
	int ms = timeout_ms ? (int)timeout_ms : -1, sock, rc;

	memset(rsp, 0, sizeof(*rsp));
	sock = sock_connect(path);
	if (sock < 0)
		return sock;
	rc = send_msg(sock, a, sizeof(*a));
	if (!rc)
		rc = recv_attach_rsp(sock, ms, rsp, fds);
	if (!rc && rsp->status != VCMA_ST_OK)
		rc = vcma_status_errno(rsp->status);
	if (!rc && (a->flags & VCMA_SIM_F_REATTACH)) {
		rc = recv_token(sock, ms, rsp->guest_id, tok);
		if (rc)
			for (int i = 0; i < 3; i++)
				close(fds[i]);
	}
	if (rc) {
		close(sock);
		return rc;
	}
	*sockp = sock;
	return 0;
}

/* Keep what a reattach needs: where, as whom, the token, and a timer for the tries. */
static int keep_token(struct vcma *v, const char *path, const char *name, const struct vcma_sim_token *tok)
{
	memcpy(v->path, path, strlen(path) + 1); /* sock_connect() checked the length */
	memcpy(v->name, name, strlen(name) + 1);
	memcpy(v->token, tok->token, sizeof(v->token));
	v->token_guest_id = tok->guest_id;
	v->grace_ms = tok->grace_ms;
	v->has_token = true;
	v->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (v->timer_fd < 0)
		return -errno;
	return ep_add(v, v->timer_fd);
}

int vcma_attach(const char *socket_path, const char *name, const char *devclass, struct vcma **out)
{
	struct vcma_sim_attach a;
	struct vcma_sim_attach_rsp rsp;
	struct vcma_sim_token tok;
	unsigned int timeout_ms = env_uint("VCMA_TIMEOUT_MS", VL_DEFAULT_TIMEOUT_MS, 86400000u);
	const char *reattach = getenv("VCMA_REATTACH");
	struct vcma *v;
	int sock, fds[3], rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!name_ok(name, VCMA_SIM_NAME_LEN - 1, false) || !name_ok(devclass, VCMA_SIM_NAME_LEN - 1, true))
		return -EINVAL;
	if (!socket_path) {
		socket_path = getenv("VCMA_SOCKET");
		if (!socket_path || !*socket_path)
			socket_path = VCMA_DEFAULT_SOCKET;
	}

	memset(&a, 0, sizeof(a));
	a.magic = VCMA_SIM_MAGIC;
	a.version = VCMA_SIM_VERSION;
	a.type = VCMA_SIM_MSG_ATTACH;
	a.role = VCMA_SIM_ROLE_GUEST;
	a.flags = reattach && !strcmp(reattach, "0") ? 0 : VCMA_SIM_F_REATTACH;
	memcpy(a.name, name, strlen(name));
	if (devclass)
		memcpy(a.devclass, devclass, strlen(devclass));
	rc = attach_once(socket_path, &a, timeout_ms, &sock, &rsp, fds, &tok);
	if (rc == -EINVAL && a.flags && rsp.status == VCMA_ST_INVALID) {
		/* a host older than the reattach protocol refuses the flag it does not know
		 * (INVALID, then it closes): attach once more without it, and without a
		 * token; a refusal for another reason comes back the same */
		a.flags = 0;
		rc = attach_once(socket_path, &a, timeout_ms, &sock, &rsp, fds, &tok);
	}
	if (rc)
		return rc;
	v = vl_new(sock, fds[0], fds[1], fds[2]);
	if (!v) {
		close(sock);
		for (int i = 0; i < 3; i++)
			close(fds[i]);
		return -ENOMEM;
	}
	v->timeout_ms = timeout_ms;
	v->window_gpa = rsp.window_gpa;
	v->has_window = true;
	rc = rsp.shm_size > SIZE_MAX ? -EIO : ep_add(v, sock);
	if (!rc && a.flags)
		rc = keep_token(v, socket_path, name, &tok);
	if (!rc)
		rc = attach_area(v, (size_t)rsp.shm_size);
	if (!rc && v->guest_id != rsp.guest_id)
		rc = -EIO;
	if (rc) {
		vl_destroy(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* ---- restart and reattach ---- */

static uint64_t grace_end(const struct vcma *v)
{
	return v->lost_at + (uint64_t)v->grace_ms * 1000000ull;
}

/* Make vcma_fd() readable at monotonic time at_ns (0: not at all). */
static void timer_arm(struct vcma *v, uint64_t at_ns)
{
	struct itimerspec its;
	uint64_t expirations;

	if (v->timer_fd < 0)
		return;
	/* read what expired already, so the set is quiet until the new time */
	if (read(v->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		return;
	memset(&its, 0, sizeof(its));
	if (at_ns) {
		its.it_value.tv_sec = (time_t)(at_ns / 1000000000ull);
		its.it_value.tv_nsec = (long)(at_ns % 1000000000ull);
	}
	timerfd_settime(v->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void try_close(struct vcma *v)
{
	ep_del(v, v->try_sock);
	close_fd(v->try_sock);
	v->try_sock = -1;
}

void vl_reattach_end(struct vcma *v)
{
	try_close(v);
	timer_arm(v, 0);
	v->lost = false;
}

void vl_notice_lost(struct vcma *v)
{
	uint32_t st;

	if (v->dead || v->lost)
		return;
	if (!v->shm) {
		vl_mark_dead(v, -ECONNRESET);
		return;
	}
	st = vcma_load_acquire(&v->ctrl->state);
	/* DEAD: cut off, nothing to take back. A handle that never finished its HELLO has
	 * nothing either, unless that HELLO was a reattach's (then it tries again). */
	if (!v->has_token || st >= VCMA_STATE_DEAD || (!v->connected && !v->in_reattach)) {
		vl_mark_dead(v, -ECONNRESET);
		return;
	}
	vl_lose(v);
	if (v->dead)
		return; /* the ring it left was broken: -EIO */
	ep_del(v, v->sock);
	close(v->sock);
	v->sock = -1;
	v->lost = true;
	v->connected = false;
	v->lost_at = v->next_try = vl_now_ns();
	v->backoff_ms = VL_BACKOFF_FIRST_MS;
	timer_arm(v, v->next_try); /* an event loop calls in at once */
}

/* A try failed: the next one after the backoff (10 ms, doubling to 500 ms). */
static void retry_later(struct vcma *v)
{
	uint64_t end = grace_end(v);

	try_close(v);
	v->next_try = vl_now_ns() + (uint64_t)v->backoff_ms * 1000000ull;
	v->backoff_ms = v->backoff_ms * 2 > VL_BACKOFF_MAX_MS ? VL_BACKOFF_MAX_MS : v->backoff_ms * 2;
	timer_arm(v, v->next_try < end ? v->next_try : end);
}

/* Connect again and send REATTACH: 0 (try_sock waits for the answer) or -errno. */
static int try_connect(struct vcma *v)
{
	struct vcma_sim_reattach m;
	int sock = sock_connect(v->path), rc;

	if (sock < 0)
		return sock;
	memset(&m, 0, sizeof(m));
	m.magic = VCMA_SIM_MAGIC;
	m.version = VCMA_SIM_VERSION;
	m.type = VCMA_SIM_MSG_REATTACH;
	m.role = VCMA_SIM_ROLE_GUEST;
	m.flags = VCMA_SIM_F_REATTACH;
	m.guest_id = v->token_guest_id;
	memcpy(m.token, v->token, sizeof(m.token));
	memcpy(m.name, v->name, sizeof(m.name));
	rc = send_msg(sock, &m, sizeof(m));
	if (!rc)
		rc = ep_add(v, sock); /* an event loop hears the answer */
	if (rc) {
		close(sock);
		return rc;
	}
	v->try_sock = sock;
	timer_arm(v, grace_end(v)); /* or learns that the grace is over */
	return 0;
}

/*
 * Put the new area a (checked) and connection sock (-1: none, vcma_reattach_fds) in
 * place of the old ones, reconcile the regions with the host's list, say HELLO and
 * send the FREEs owed. The handle owns a and sock from here on, whatever happens. 0;
 * -ECONNRESET with the handle lost again (the new connection ended during HELLO);
 * else the handle is dead and its error comes back.
 */
static int adopt(struct vcma *v, struct vl_area *a, int sock, const struct vcma_held_region *held, size_t nheld)
{
	int rc;

	area_drop(v);
	rc = area_take(v, a);
	v->sock = sock; /* in the epoll set since it was tried */
	v->lost = false;
	v->connected = false;
	if (!rc && a->ctrl.guest_id != v->guest_id)
		rc = -EIO; /* the same guest comes back (§9.1) */
	if (!rc)
		rc = vl_ring_init(v, &a->ctrl); /* a keeps its copy of the control page */
	if (!rc)
		rc = vl_region_reconcile(v, held, nheld);
	if (!rc)
		rc = ring_start(v, a->state);
	if (rc) {
		if (v->lost)
			return -ECONNRESET;
		vl_mark_dead(v, rc == -EIO ? -EIO : -ECONNRESET);
		return v->dead;
	}
	vl_refree_send(v);
	return 0;
}

/* What an OK answer brings after it: the new token (the old one is spent) and the
 * regions. 0, or -errno (-EIO: malformed). */
static int reattach_rest(struct vcma *v, const struct vcma_sim_attach_rsp *rsp, struct vcma_held_region **held)
{
	struct vcma_sim_token tok;
	int ms = ms_left(grace_end(v)), rc;

	/* the same guest, seen at the same guest-physical addresses */
	if (rsp->guest_id != v->token_guest_id || rsp->shm_size > SIZE_MAX || rsp->window_gpa != v->window_gpa)
		return -EIO;
	/* the host sends both right behind the answer */
	rc = recv_token(v->try_sock, ms, rsp->guest_id, &tok);
	if (!rc)
		rc = recv_regions(v->try_sock, rsp->nruns, ms, held);
	if (rc)
		return rc;
	memcpy(v->token, tok.token, sizeof(v->token));
	v->grace_ms = tok.grace_ms;
	return 0;
}

/*
 * OK: the host has the guest back on try_sock. Read what follows the answer, check the
 * new area and adopt it. 0: attached again; 1: go on trying; else the handle is dead
 * and its error comes back.
 */
static int take_back(struct vcma *v, const struct vcma_sim_attach_rsp *rsp, const int fds[3])
{
	struct vl_area a = { .shm_fd = fds[0], .kick_fd = fds[1], .irq_fd = fds[2] };
	struct vcma_held_region *held = NULL;
	int sock = v->try_sock, rc;

	rc = reattach_rest(v, rsp, &held);
	if (rc == -ECONNRESET) {
		/* the host ended the connection before it said everything (it died again):
		 * another try may find the guest kept. Any other failure ends it here:
		 * closing a connection the host took the guest back on is a detach. */
		area_close(&a);
		retry_later(v);
		return 1;
	}
	if (!rc)
		rc = area_open(&a, (size_t)rsp->shm_size, vl_deadline(v));
	if (rc) {
		area_close(&a);
		free(held);
		vl_mark_dead(v, rc == -EIO ? -EIO : -ECONNRESET);
		return v->dead;
	}
	v->try_sock = -1; /* the handle's socket from now on */
	rc = adopt(v, &a, sock, held, rsp->nruns);
	free(held);
	return rc == -ECONNRESET && v->lost ? 1 : rc;
}

/*
 * The answer on try_sock, waited for until the deadline (and the grace's end) if wait,
 * else taken only if it is there. 0: attached again. 1: go on (a new try is due, or
 * the grace may be over). -EAGAIN (not waiting) or -ETIMEDOUT: no answer yet. Else
 * the handle is dead: its error.
 */
static int try_answer(struct vcma *v, uint64_t deadline, bool wait)
{
	uint64_t end = grace_end(v), until = wait && deadline && deadline < end ? deadline : end;
	struct vcma_sim_attach_rsp rsp;
	int fds[3], rc;

	rc = recv_attach_rsp(v->try_sock, wait ? ms_left(until) : 0, &rsp, fds);
	if (rc == -ETIMEDOUT)
		return !wait ? -EAGAIN : vl_now_ns() >= end ? 1 : -ETIMEDOUT;
	if (rc == -EIO) {
		vl_mark_dead(v, -EIO); /* garbage for an answer: a broken host */
		return v->dead;
	}
	if (rc || rsp.status == VCMA_ST_BUSY || rsp.status == VCMA_ST_SHUTDOWN) {
		/* closed without an answer (a host still going down, or not up yet), "not
		 * yet" (BUSY) or a host stopping again, which keeps the guest's records
		 * (SHUTDOWN): within the grace period, again */
		retry_later(v);
		return 1;
	}
	if (rsp.status != VCMA_ST_OK) {
		/* NO_REGION: the host did not keep the guest, its regions are gone; INVALID,
		 * VERSION, INTERNAL...: it will not take it back either */
		vl_mark_dead(v, -ECONNRESET);
		return v->dead;
	}
	return take_back(v, &rsp, fds);
}

/* Sleep until the next try (or the grace's end, or the deadline). 0, or -ETIMEDOUT. */
static int wait_for_try(struct vcma *v, uint64_t deadline)
{
	uint64_t now = vl_now_ns(), until = v->next_try, end = grace_end(v);

	if (end < until)
		until = end;
	if (deadline && deadline < until) {
		if (now >= deadline)
			return -ETIMEDOUT;
		until = deadline;
	}
	if (until > now)
		poll(NULL, 0, ms_left(until));
	return 0;
}

/* See vl_ready(). */
static int reattach_run(struct vcma *v, uint64_t deadline, bool wait)
{
	int rc;

	while (v->lost) {
		if (vl_now_ns() >= grace_end(v)) {
			/* not taken back in time: the host reclaims the guest's regions */
			vl_mark_dead(v, -ECONNRESET);
			break;
		}
		if (v->try_sock < 0 && vl_now_ns() < v->next_try) {
			if (!wait)
				return -EAGAIN;
			rc = wait_for_try(v, deadline);
			if (rc)
				return rc;
			continue;
		}
		if (v->try_sock < 0 && try_connect(v)) {
			retry_later(v); /* nobody listening yet */
			continue;
		}
		rc = try_answer(v, deadline, wait);
		if (rc == 0) {
			timer_arm(v, 0);
			break;
		}
		if (rc != 1)
			return rc;
	}
	return v->dead;
}

/*
 * Has the host gone while nobody waited on the ring? Only the socket tells, and a call
 * that does not ask would put its request on a dead ring and fail. Asking costs a
 * syscall, so a call asks at most once a millisecond (a busy handle sees the end in its
 * waits anyway), and always in CLOSING, where calls fail with -ESHUTDOWN without
 * waiting. Only with a token: without one, the end is noticed as it always was.
 */
static void look_at_sock(struct vcma *v)
{
	uint64_t now;

	if (v->lost || v->sock < 0 || !v->has_token || !v->shm)
		return;
	now = vl_now_ns();
	if (now - v->sock_looked < VL_SOCK_LOOK_NS && vcma_load_acquire(&v->ctrl->state) != VCMA_STATE_CLOSING)
		return;
	v->sock_looked = now;
	vl_check_sock(v);
}

int vl_ready(struct vcma *v, uint64_t deadline, bool wait)
{
	int rc = 0;

	if (v->dead)
		return v->dead;
	look_at_sock(v);
	if (v->lost) {
		if (v->in_reattach)
			return -ECONNRESET; /* the reattach's own HELLO lost the new connection */
		v->in_reattach = true;
		rc = reattach_run(v, deadline, wait);
		v->in_reattach = false;
	}
	if (!rc)
		vl_refree_send(v);
	return rc;
}

/* A call waiting on the old irq fd holds v->lock: wake it, it fails and lets go. */
static void wake_waiter(struct vcma *v)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so it is readable already */
	if (write(v->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return;
}

static void unwake(struct vcma *v)
{
	uint64_t cnt;

	if (read(v->wake_fd, &cnt, sizeof(cnt)) < 0)
		return; /* EAGAIN: nothing was pending */
}

int vcma_reattach_fds(struct vcma *v, int shm_fd, size_t shm_size, int kick_fd, int irq_fd,
		      const struct vcma_held_region *held, size_t nheld)
{
	struct vl_area a = { .shm_fd = shm_fd, .kick_fd = kick_fd, .irq_fd = irq_fd };
	int rc;

	if (!v || v->wake_fd < 0 || (nheld && !held) || nheld > VL_MAX_REGIONS) {
		area_close(&a); /* a vcma_attach() handle reattaches by itself */
		return -EINVAL;
	}
	pthread_mutex_lock(&v->swap_lock);
	atomic_fetch_add(&v->swaps, 1);
	wake_waiter(v);
	pthread_mutex_lock(&v->lock);
	/* nobody else runs under the lock now; calls that come wait for it (vl_lock), and
	 * this one's own HELLO must not see a swap pending */
	atomic_fetch_sub(&v->swaps, 1);
	unwake(v);
	rc = v->dead;
	if (!rc) {
		vl_lose(v);
		rc = v->dead;
	}
	if (!rc) {
		rc = area_open(&a, shm_size, vl_deadline(v));
		if (rc)
			vl_mark_dead(v, rc == -EIO ? -EIO : -ECONNRESET);
		else
			rc = adopt(v, &a, -1, held, nheld);
	}
	area_close(&a); /* what adopt() did not take */
	pthread_cond_broadcast(&v->swapped);
	pthread_mutex_unlock(&v->lock);
	pthread_mutex_unlock(&v->swap_lock);
	return rc;
}

void vcma_detach(struct vcma *v)
{
	if (!v)
		return;
	vl_lock(v);
	/* no mapping may outlive the attachment: the host hands the memory on */
	for (uint32_t i = 0; i < v->nregion; i++) {
		struct vl_region *r = &v->region[i];

		if (r->map && v->unmap)
			v->unmap(v->map_ctx, r->map, r->size);
		r->map = NULL;
	}
	/* best effort: post a FREE for every region, then wait for them, for the FREEs
	 * vcma_free() posted before and for those a reattach owes (vl_flush sends them);
	 * stop at the first sign the host is not answering (a silent host costs one
	 * timeout in all). Their errors are nobody's any more. A lost handle sends
	 * nothing: the host reclaims what it kept when the grace period ends. */
	v->has_token = false; /* a host that goes away now just ends it */
	if (v->connected && !v->dead && !v->lost) {
		uint64_t deadline = vl_deadline(v);

		while (v->nregion) {
			uint64_t handle = v->region[0].handle;

			if (vl_reserve(v, deadline) || vl_post_free(v, handle))
				break;
			vl_region_del(v, handle);
		}
		vl_flush(v, deadline);
	}
	pthread_mutex_unlock(&v->lock);
	vl_destroy(v);
}
