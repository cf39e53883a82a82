// SPDX-License-Identifier: MIT
/*
 * attach.c - getting an attachment: the sim socket handshake (proto/vcma_sim.h), the
 * shared-area checks of docs/PROTOCOL.md §2.5, HELLO; and taking it apart again.
 *
 * The control page is copied into private memory once, checked, and only the copy's
 * geometry is used from then on. Environment: VCMA_SOCKET (default socket),
 * VCMA_TIMEOUT_MS (default timeout, also for the attach itself), VCMA_SPIN_US (spin on
 * rsp_prod this long before sleeping; 0 = off), VCMA_RATE and VCMA_BURST (request
 * pacing, see vcma_internal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

static struct vcma *vl_new(int sock, int shm_fd, int kick_fd, int irq_fd)
{
	struct vcma *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	if (pthread_mutex_init(&v->lock, NULL)) {
		free(v);
		return NULL;
	}
	v->sock = sock;
	v->shm_fd = shm_fd;
	v->kick_fd = kick_fd;
	v->irq_fd = irq_fd;
	v->timeout_ms = env_uint("VCMA_TIMEOUT_MS", VL_DEFAULT_TIMEOUT_MS, 86400000u);
	v->spin_us = env_uint("VCMA_SPIN_US", 0, 1000000u);
	v->rate = env_uint("VCMA_RATE", VL_DEFAULT_RATE, 100000000u);
	v->burst = env_uint("VCMA_BURST", VL_DEFAULT_BURST, 100000000u);
	if (!v->burst)
		v->burst = 1;
	v->tokens = v->burst;
	v->tokens_at = vl_now_ns();
	return v;
}

static void vl_destroy(struct vcma *v)
{
	if (v->shm)
		munmap(v->shm, (size_t)v->shm_size);
	close_fd(v->shm_fd);
	close_fd(v->kick_fd);
	close_fd(v->irq_fd);
	close_fd(v->sock);
	vl_ring_fini(v);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

/* §2.5 on the private copy. 0, -EPROTONOSUPPORT (major) or -EIO. */
static int ctrl_check(const struct vcma_ctrl *c, uint64_t size)
{
	switch (vcma_ctrl_check(c, size)) {
	case VCMA_CTRL_OK: return 0;
	case VCMA_CTRL_MAJOR: return -EPROTONOSUPPORT;
	default: return -EIO;
	}
}

static int hello(struct vcma *v, uint32_t initial_state)
{
	struct vcma_req q;
	struct vcma_rsp r;
	int rc;

	memset(&q, 0, sizeof(q));
	q.op = VCMA_OP_HELLO;
	q.arg0 = (uint64_t)VCMA_PROTO_MAJOR << 16 | VCMA_PROTO_MINOR;
	q.arg1 = VCMA_F_KNOWN;
	rc = vl_call(v, &q, &r);
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

/* Map the area, wait for READY, check the control page, start the ring, HELLO. */
static int attach_area(struct vcma *v, size_t shm_size)
{
	uint64_t deadline = vl_deadline(v), words[sizeof(struct vcma_ctrl) / 8];
	struct vcma_ctrl c;
	struct stat st;
	uint32_t state;
	int rc;

	if (v->shm_fd < 0 || v->kick_fd < 0 || v->irq_fd < 0)
		return -EBADF;
	if (fstat(v->shm_fd, &st))
		return -errno;
	if (shm_size < VCMA_PROTO_PAGE || st.st_size < 0 || (uint64_t)st.st_size != (uint64_t)shm_size)
		return -EIO;
	/* never block in read() or write() on the notification fds */
	for (int i = 0; i < 2; i++) {
		int fd = i ? v->irq_fd : v->kick_fd, fl = fcntl(fd, F_GETFL);

		if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK)))
			return -errno;
	}
	v->shm = mmap(NULL, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->shm_fd, 0);
	if (v->shm == MAP_FAILED) {
		v->shm = NULL;
		return -errno;
	}
	v->shm_size = shm_size;

	/* INIT: the host is still writing the layout; touch nothing else (§3) */
	for (;;) {
		state = vcma_load_acquire(&((struct vcma_ctrl *)v->shm)->state);
		if (state != VCMA_STATE_INIT)
			break;
		if (deadline && vl_now_ns() >= deadline)
			return -ETIMEDOUT;
		usleep(1000);
	}
	/* the copy is ordered after the acquire of state, and is all we use */
	vcma_copy_from_shared(words, v->shm, sizeof(words));
	memcpy(&c, words, sizeof(c));
	switch (state) {
	case VCMA_STATE_READY:
	case VCMA_STATE_CONNECTED:
		break;
	case VCMA_STATE_CLOSING:
		return -ESHUTDOWN;
	default:
		return -ECONNRESET; /* DEAD, or anything above it */
	}
	rc = ctrl_check(&c, v->shm_size);
	if (rc)
		return rc;
	rc = vl_ring_init(v, &c);
	if (rc)
		return rc;
	/* a fresh area starts at 0; one already CONNECTED continues where it is, and
	 * only if nothing is in flight there */
	v->req_prod_pvt = vcma_read_once(&v->rh->req_prod);
	v->rsp_cons = v->req_prod_pvt;
	if (vcma_read_once(&v->rh->rsp_prod) != v->req_prod_pvt)
		return -EBUSY;
	v->evt_cons = vcma_read_once(&v->eh->evt_cons);
	return hello(v, state);
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
	rc = attach_area(v, shm_size);
	if (rc) {
		vl_destroy(v);
		return rc;
	}
	*out = v;
	return 0;
}

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

/* Receive the attach response and its fds. The fds are ours on success only. */
static int recv_attach_rsp(int sock, unsigned int timeout_ms, struct vcma_sim_attach_rsp *rsp, int fds[3])
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * VL_MAX_RECV_FDS)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = rsp, .iov_len = sizeof(*rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf) };
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	int got[VL_MAX_RECV_FDS], ngot = 0, rc;
	ssize_t n;

	do
		rc = poll(&pfd, 1, timeout_ms ? (int)timeout_ms : -1);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -errno;
	if (rc == 0)
		return -ETIMEDOUT;
	memset(rsp, 0, sizeof(*rsp));
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNRESET ? -ECONNRESET : -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (ngot < VL_MAX_RECV_FDS)
				got[ngot++] = fd;
			else
				close(fd);
		}
	}
	if (n == 0)
		rc = -ECONNRESET; /* closed without an answer: refused */
	else if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n != (ssize_t)sizeof(*rsp))
		rc = -EIO;
	else if (rsp->magic != VCMA_SIM_MAGIC || rsp->version != VCMA_SIM_VERSION || rsp->type != VCMA_SIM_MSG_ATTACH_RSP)
		rc = -EIO;
	else if (rsp->status != VCMA_ST_OK)
		rc = vcma_status_errno(rsp->status);
	else if (rsp->nfds != 3 || ngot < 3)
		rc = -EIO;
	else
		rc = 0;
	for (int i = 0; i < ngot; i++) {
		if (!rc && i < 3)
			fds[i] = got[i];
		else
			close(got[i]); /* extras, or everything on failure */
	}
	return rc;
}

int vcma_attach(const char *socket_path, const char *name, const char *devclass, struct vcma **out)
{
	struct vcma_sim_attach a;
	struct vcma_sim_attach_rsp rsp;
	unsigned int timeout_ms = env_uint("VCMA_TIMEOUT_MS", VL_DEFAULT_TIMEOUT_MS, 86400000u);
	struct vcma *v;
	int sock, fds[3], rc;
	ssize_t n;

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
	sock = sock_connect(socket_path);
	if (sock < 0)
		return sock;

	memset(&a, 0, sizeof(a));
	a.magic = VCMA_SIM_MAGIC;
	a.version = VCMA_SIM_VERSION;
	a.type = VCMA_SIM_MSG_ATTACH;
	a.role = VCMA_SIM_ROLE_GUEST;
	memcpy(a.name, name, strlen(name));
	if (devclass)
		memcpy(a.devclass, devclass, strlen(devclass));
	n = send(sock, &a, sizeof(a), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(a)) {
		rc = n < 0 ? (errno == EPIPE ? -ECONNRESET : -errno) : -EIO;
		close(sock);
		return rc;
	}
	rc = recv_attach_rsp(sock, timeout_ms, &rsp, fds);
	if (rc) {
		close(sock);
		return rc;
	}
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
	if (rsp.shm_size > SIZE_MAX) {
		vl_destroy(v);
		return -EIO;
	}
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

void vcma_detach(struct vcma *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->lock);
	/* no mapping may outlive the attachment: the host hands the memory on */
	for (uint32_t i = 0; i < v->nregion; i++) {
		struct vl_region *r = &v->region[i];

		if (r->map && v->unmap)
			v->unmap(v->map_ctx, r->map, r->size);
		r->map = NULL;
	}
	/* best effort: post a FREE for every region, then wait for them and for the FREEs
	 * vcma_free() posted before; stop at the first sign the host is not answering (a
	 * silent host costs one timeout in all). Their errors are nobody's any more. */
	if (v->connected && !v->dead) {
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
