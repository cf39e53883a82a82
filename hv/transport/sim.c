// SPDX-License-Identifier: MIT
/*
 * sim.c - the sim transport: a SOCK_SEQPACKET socket in the runtime directory.
 *
 * A client sends one struct vcma_sim_attach (proto/vcma_sim.h); vcmad answers at once
 * with the ring memfd and two eventfds (plus machine memory and the p2m for a VMM).
 * A connection that says nothing within ATTACH_TIMEOUT is closed, so a silent
 * client cannot hold a slot.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "vcma_name.h"
#include "vcmad.h"

#define ATTACH_TIMEOUT_NS (5ull * 1000000000ull)
#define MAX_PENDING_CONNS 64u

int vcmad_sim_listen(struct vcmad *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if ((size_t)snprintf(d->sock_path, sizeof(d->sock_path), "%s/%s", d->conf.runtime_dir, VCMA_SIM_SOCKET) >=
	    sizeof(sa.sun_path)) {
		log_err("socket path %s/%s is too long", d->conf.runtime_dir, VCMA_SIM_SOCKET);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, d->sock_path, strlen(d->sock_path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (unlink(d->sock_path) && errno != ENOENT) {
		rc = -errno;
		log_err("cannot remove stale %s: %s", d->sock_path, strerror(errno));
		close(fd);
		return rc;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(d->sock_path, 0660) || listen(fd, 64)) {
		rc = -errno;
		log_err("cannot listen on %s: %s", d->sock_path, strerror(errno));
		close(fd);
		return rc;
	}
	if (d->conf.attach_group[0]) {
		/* who may connect at all; what a peer may attach as is decided per attach */
		struct group gr, *res = NULL;
		char buf[1024];

		if (getgrnam_r(d->conf.attach_group, &gr, buf, sizeof(buf), &res) || !res ||
		    chown(d->sock_path, (uid_t)-1, res->gr_gid)) {
			rc = res ? -errno : -ENOENT;
			log_err("attach_group %s: %s", d->conf.attach_group, res ? strerror(errno) : "no such group");
			close(fd);
			unlink(d->sock_path);
			return rc;
		}
	}
	d->listen_fd = fd;
	return vcma_loop_add(&d->loop, &d->listen_w, fd, EPOLLIN, vcmad_sim_accept_cb);
}

static void conn_close(struct vcmad *d, struct vcmad_conn *c)
{
	for (struct vcmad_conn **pp = &d->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	vcma_loop_del(&d->loop, &c->w);
	close(c->fd);
	free(c);
}

/* Close connections that never attached (all of them when `all`). */
void vcmad_sim_reap_conns(struct vcmad *d, bool all)
{
	uint64_t now = vcma_now_ns();
	struct vcmad_conn *c = d->conns, *next;

	for (; c; c = next) {
		next = c->next;
		if (all || now > c->deadline_ns) {
			if (!all)
				log_warn("closing a connection that did not attach within 5 s");
			conn_close(d, c);
		}
	}
}

static int send_rsp(int fd, const struct vcma_sim_attach_rsp *rsp, const int *fds, unsigned int nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = (void *)rsp, .iov_len = sizeof(*rsp) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds) {
		struct cmsghdr *cm;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(*rsp) ? 0 : -EIO;
}

static void refuse(struct vcmad *d, int fd, int32_t status, const char *why)
{
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP, .status = status,
	};

	static struct vcma_ratelimit rl;

	d->stats.attach_refused++;
	/* a client can be refused as fast as it connects: rate-limited */
	if (vcma_ratelimit_ok(&rl, 20, 10ull * 1000000000ull))
		log_warn("attach refused: %s", why);
	send_rsp(fd, &rsp, NULL, 0); /* best effort: the client may be gone */
}

static int send_p2m(struct vcmad_guest *g, const struct vcma_sim_run *runs, uint32_t nruns)
{
	struct vcma_sim_p2m *m = calloc(1, sizeof(*m));
	uint32_t i = 0;
	int rc = 0;

	if (!m)
		return -ENOMEM;
	while (i < nruns && !rc) {
		ssize_t n;

		memset(m, 0, sizeof(*m));
		m->magic = VCMA_SIM_MAGIC;
		m->version = VCMA_SIM_VERSION;
		m->type = VCMA_SIM_MSG_P2M;
		for (; i < nruns && m->nruns < VCMA_SIM_P2M_RUNS; i++)
			m->run[m->nruns++] = runs[i];
		n = send(g->sock, m, sizeof(*m), MSG_NOSIGNAL);
		if (n != (ssize_t)sizeof(*m))
			rc = n < 0 ? -errno : -EIO;
	}
	free(m);
	return rc;
}

static struct vcmad_guest *guest_new(struct vcmad *d, int fd, const struct vcma_sim_attach *a,
				     const struct vcmad_guest_conf *gc, uint32_t uid, int32_t *status)
{
	const struct vcmad_limits *lim = &d->conf.limits;
	struct vcma_ring_params rp = {
		.req_slots = lim->ring_slots, .evt_slots = VCMA_DEFAULT_EVT_SLOTS,
		.max_regions = lim->max_regions, .max_bytes = lim->max_bytes,
	};
	struct vcmad_guest *g = calloc(1, sizeof(*g));
	uint32_t slot;
	int rc;

	*status = VCMA_ST_NO_MEMORY;
	if (!g)
		return NULL;
	g->d = d;
	g->sock = -1;
	g->kick_fd = g->irq_fd = g->shm_fd = -1;
	if (vcmad_guest_slot(d, gc != NULL, &slot, &g->id)) {
		*status = VCMA_ST_LIMIT;
		free(g);
		return NULL;
	}
	g->role = a->role;
	g->conf = gc;
	g->uid = uid;
	memcpy(g->name, a->name, sizeof(g->name));
	/* a configured guest's class is the config's (the attach may only repeat it) */
	if (gc)
		snprintf(g->devclass, sizeof(g->devclass), "%s", gc->devclass);
	else
		memcpy(g->devclass, a->devclass, sizeof(g->devclass));
	g->tokens = lim->burst;
	g->tokens_at = vcma_now_ns();
	g->shm_size = vcma_ring_shm_size(rp.req_slots, rp.evt_slots);
	g->shm_fd = memfd_create("vcma-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (g->shm_fd < 0 || ftruncate(g->shm_fd, (off_t)g->shm_size) ||
	    fcntl(g->shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		goto fail;
	g->shm = mmap(NULL, g->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, g->shm_fd, 0);
	if (g->shm == MAP_FAILED) {
		g->shm = NULL;
		goto fail;
	}
	g->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	g->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->kick_fd < 0 || g->irq_fd < 0)
		goto fail;
	rp.guest_id = g->id;
	rp.generation = (uint32_t)(d->stats.attaches + 1);
	if (vcma_ring_host_init(&g->ring, g->shm, g->shm_size, &rp))
		goto fail;
	if (a->role == VCMA_SIM_ROLE_VMM) {
		g->ram_frames = a->ram_bytes >> VCMA_PAGE_SHIFT;
		rc = vcmad_lend_ram(g);
		if (rc < 0) {
			*status = VCMA_ST_NO_MEMORY;
			log_warn("attach %s: cannot back %llu MiB of guest RAM: %s", a->name,
				 (unsigned long long)(a->ram_bytes >> 20), strerror(-rc));
			g->ram_frames = 0;
			goto fail;
		}
	}
	/* regions appear above RAM, at window_gpa + machine address */
	g->window_gpa = (a->ram_bytes + (1ull << 30) - 1) & ~((1ull << 30) - 1);
	if (g->window_gpa < (1ull << 30))
		g->window_gpa = 1ull << 30;
	g->sock = fd;
	d->guest[slot] = g;
	d->nguests++;
	*status = VCMA_ST_OK;
	return g;
fail:
	vcmad_lend_release(g);
	vcmad_guest_close_io(g); /* g->sock is still -1: the caller keeps the connection */
	free(g);
	return NULL;
}

/* Is this peer as trusted as vcmad itself (it could read vcmad's memory anyway)? */
static bool privileged(uint32_t uid)
{
	return uid == 0 || uid == (uint32_t)geteuid();
}

/*
 * Who the client may be (PROTOCOL.md §9.1, Identity): the name decides, and the
 * peer's credentials, never what the attach message claims about itself.
 *   - a name configured for a QEMU guest, or reserved: nobody;
 *   - a name configured as [guest NAME] backend = sim: a privileged peer or one of
 *     its users; the class is the config's; VMM only with vmm = yes;
 *   - any other name: a privileged peer as it says; others (with open_attach) as a
 *     plain guest without a class;
 *   - a name attached already: nobody (BUSY).
 * 0 with *gc set (NULL: unconfigured), or a status with *why for the log.
 */
static int32_t identity(struct vcmad *d, uint32_t uid, const struct vcma_sim_attach *a,
			const struct vcmad_guest_conf **gc, const char **why)
{
	const struct vcmad_guest_conf *conf = vcmad_conf_guest(&d->conf, a->name);
	bool priv = privileged(uid);

	*gc = conf;
	if (!strcmp(a->name, VCMAD_RESERVED_GUEST_NAME)) {
		*why = "the name is reserved for vcmactl";
		return VCMA_ST_ACCESS;
	}
	if (conf && conf->kind != VCMAD_GUEST_SIM) {
		*why = "the name belongs to a QEMU guest (its ivshmem socket is its identity)";
		return VCMA_ST_ACCESS;
	}
	if (conf) {
		bool listed = priv;

		for (uint32_t i = 0; i < conf->nusers && !listed; i++)
			listed = conf->users[i] == uid;
		if (!listed) {
			*why = "the peer's uid is not one of the guest's users";
			return VCMA_ST_ACCESS;
		}
		if (a->devclass[0] && strcmp(a->devclass, conf->devclass)) {
			*why = "the class differs from the one configured for the guest";
			return VCMA_ST_ACCESS;
		}
		if (a->role == VCMA_SIM_ROLE_VMM && !conf->vmm) {
			*why = "the guest is configured with vmm = no";
			return VCMA_ST_ACCESS;
		}
	} else if (!priv) {
		if (!d->conf.open_attach) {
			*why = "the name is not configured and open_attach = no";
			return VCMA_ST_ACCESS;
		}
		if (a->devclass[0]) {
			*why = "only a configured guest or a privileged peer may have a class";
			return VCMA_ST_ACCESS;
		}
		if (a->role == VCMA_SIM_ROLE_VMM) {
			*why = "only a configured guest or a privileged peer may attach as a VMM";
			return VCMA_ST_ACCESS;
		}
	}
	if (vcmad_guest_by_name(d, a->name)) {
		*why = "a guest of that name is attached";
		return VCMA_ST_BUSY;
	}
	return VCMA_ST_OK;
}

static void attach(struct vcmad *d, struct vcmad_conn *c)
{
	struct vcma_sim_attach a;
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP,
	};
	const struct vcmad_guest_conf *gc;
	struct vcmad_guest *g;
	int fd = c->fd, fds[4], rc;
	uint32_t uid = c->uid;
	int32_t pid = c->pid, status;
	const char *why;
	char msg[160];
	ssize_t n;

	n = recv(fd, &a, sizeof(a), MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* from here on the connection either becomes a guest or is closed */
	for (struct vcmad_conn **pp = &d->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	vcma_loop_del(&d->loop, &c->w);
	free(c);
	if (n != (ssize_t)sizeof(a)) {
		if (n != 0)
			refuse(d, fd, VCMA_ST_INVALID, "attach message of the wrong size");
		close(fd);
		return;
	}
	if (a.magic != VCMA_SIM_MAGIC || a.type != VCMA_SIM_MSG_ATTACH || a.flags) {
		refuse(d, fd, VCMA_ST_INVALID, "bad magic, type or flags in attach message");
		close(fd);
		return;
	}
	if (a.version != VCMA_SIM_VERSION) {
		refuse(d, fd, VCMA_ST_VERSION, "unsupported sim transport version");
		close(fd);
		return;
	}
	if (!vcma_name_field_ok(a.name, sizeof(a.name), false) || !vcma_name_field_ok(a.devclass, sizeof(a.devclass), true) ||
	    (a.role != VCMA_SIM_ROLE_GUEST && a.role != VCMA_SIM_ROLE_VMM) ||
	    (a.role == VCMA_SIM_ROLE_GUEST && a.ram_bytes) ||
	    (a.role == VCMA_SIM_ROLE_VMM &&
	     (!a.ram_bytes || a.ram_bytes % VCMA_PAGE_SIZE || a.ram_bytes > d->conf.limits.max_ram))) {
		refuse(d, fd, VCMA_ST_INVALID, "malformed attach (name, class, role or RAM size)");
		close(fd);
		return;
	}
	if (d->closing) {
		refuse(d, fd, VCMA_ST_SHUTDOWN, "vcmad is shutting down");
		close(fd);
		return;
	}
	status = identity(d, uid, &a, &gc, &why);
	if (status != VCMA_ST_OK) {
		snprintf(msg, sizeof(msg), "pid %d uid %u may not attach as %s%s%s: %s", (int)pid, (unsigned int)uid,
			 a.role == VCMA_SIM_ROLE_VMM ? "VMM " : "", a.name, a.devclass[0] ? " with a class" : "", why);
		refuse(d, fd, status, msg);
		close(fd);
		return;
	}
	g = guest_new(d, fd, &a, gc, uid, &status);
	if (!g) {
		refuse(d, fd, status, status == VCMA_ST_LIMIT ? "too many guests" : "out of resources");
		close(fd);
		return;
	}
	rsp.status = VCMA_ST_OK;
	rsp.guest_id = g->id;
	rsp.shm_size = g->shm_size;
	rsp.window_gpa = g->window_gpa;
	fds[0] = g->shm_fd;
	fds[1] = g->kick_fd;
	fds[2] = g->irq_fd;
	rsp.nfds = 3;
	struct vcma_sim_run *runs = NULL;
	uint32_t nruns = 0;

	rc = 0;
	if (g->role == VCMA_SIM_ROLE_VMM) {
		rc = vcmad_lend_p2m_runs(g, &runs, &nruns);
		rsp.ram_frames = g->ram_frames;
		rsp.machine_bytes = d->be.machine_bytes;
		rsp.nruns = nruns;
		fds[3] = d->be.machine_fd;
		rsp.nfds = 4;
	}
	if (!rc)
		rc = send_rsp(fd, &rsp, fds, rsp.nfds);
	if (!rc && g->role == VCMA_SIM_ROLE_VMM)
		rc = send_p2m(g, runs, nruns);
	free(runs);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &g->kick_w, g->kick_fd, EPOLLIN, vcmad_guest_kick_cb);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &g->sock_w, fd, EPOLLIN | EPOLLRDHUP, vcmad_guest_sock_cb);
	d->stats.attaches++;
	if (rc) {
		log_warn("attach %s: %s", g->name, strerror(-rc));
		vcmad_guest_detach(g, "attach failed");
		return;
	}
	log_info("guest %u (%s%s%s) attached as %s%s", g->id, g->name, g->devclass[0] ? ", class " : "", g->devclass,
		 g->role == VCMA_SIM_ROLE_VMM ? "VM" : "guest", g->role == VCMA_SIM_ROLE_VMM ? " with RAM" : "");
	/* requests may have been published before the kick eventfd was watched */
	vcmad_guest_run(g);
}

static void conn_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_conn *c = (struct vcmad_conn *)((char *)w - offsetof(struct vcmad_conn, w));

	attach(c->d, c);
}

void vcmad_sim_accept_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad *d = (struct vcmad *)((char *)w - offsetof(struct vcmad, listen_w));
	unsigned int pending = 0;

	for (struct vcmad_conn *c = d->conns; c; c = c->next)
		pending++;
	for (;;) {
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct vcmad_conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		c = pending < MAX_PENDING_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			/* a client may open connections faster than anyone reads logs */
			static struct vcma_ratelimit rl;

			d->stats.conns_refused++;
			if (vcma_ratelimit_ok(&rl, 1, 10ull * 1000000000ull))
				log_warn("too many connections waiting to attach (%u); closing new ones (%llu so far)",
					 MAX_PENDING_CONNS, (unsigned long long)d->stats.conns_refused);
			close(fd);
			continue;
		}
		struct ucred cr;
		socklen_t crlen = sizeof(cr);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen)) {
			log_warn("accept: SO_PEERCRED: %s", strerror(errno));
			close(fd);
			free(c);
			continue;
		}
		c->uid = cr.uid;
		c->gid = cr.gid;
		c->pid = cr.pid;
		c->d = d;
		c->fd = fd;
		c->deadline_ns = vcma_now_ns() + ATTACH_TIMEOUT_NS;
		if (vcma_loop_add(&d->loop, &c->w, fd, EPOLLIN | EPOLLRDHUP, conn_cb)) {
			close(fd);
			free(c);
			continue;
		}
		c->next = d->conns;
		d->conns = c;
		pending++;
	}
}
