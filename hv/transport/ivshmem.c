// SPDX-License-Identifier: MIT
/*
 * ivshmem.c - QEMU guests over ivshmem-doorbell, with vcmad as the ivshmem server
 * (PROTOCOL.md §9.2). Debian ships no ivshmem-server; QEMU's protocol is simple.
 *
 * One listening socket per [guest NAME] section and one memfd per connection, so a
 * guest sees vcmad and nothing else. The handshake is sent in full from the accept
 * callback: QEMU reads it synchronously while realizing the device, so an answer
 * that waited for anything would stall QEMU's main loop.
 *
 *   BAR2 = memfd:  [ control page | rings | ... ][ DMA window: pool span ][ pad to 2^n ]
 *                  0                            VCMAD_IVS_WINDOW_OFF
 *
 * The window mirrors the pools: window offset X is machine address win_mfn*4096 + X,
 * so the core's frame map decides placement for qemu guests as for any other. Its
 * memory is committed only while a region holds it: punched when a region is
 * handed out (zeros, whatever the guest scribbled there) and when it is freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
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
#include "vcmad.h"

#define VCMAD_IVS_WINDOW_OFF (2ull << 20) /* shared area padded to one huge page */
#define VCMAD_IVS_HUGE (2ull << 20)
#define VCMAD_IVS_AUDIT_NS 1000000000ull /* stray-memory audit period per guest */
#define IVSHMEM_PROTOCOL_VERSION 0
#define IVS_HOST_PEER 0 /* vcmad: the virtual peer a guest's doorbell reaches */
#define IVS_GUEST_PEER 1
#define IVS_GUEST_VECTORS 2 /* vector 0: irq; vector 1: reserved */

struct vcmad_ivs {
	struct vcmad *d;
	const struct vcmad_guest_conf *conf;
	char path[108];
	int fd;
	struct vcma_watch w;
	struct vcmad_guest *g; /* the attached guest, or NULL */
};

static uint64_t pow2ceil(uint64_t x)
{
	uint64_t p = 1;

	while (p < x)
		p <<= 1;
	return p;
}

static uint64_t bar_size(const struct vcmad *d)
{
	return pow2ceil(VCMAD_IVS_WINDOW_OFF + (d->win_frames << VCMA_PAGE_SHIFT));
}

uint64_t vcmad_ivshmem_offset(const struct vcmad *d, uint64_t mfn)
{
	return (mfn - d->win_mfn) << VCMA_PAGE_SHIFT;
}

static int punch(struct vcmad_guest *g, uint64_t off, uint64_t len)
{
	if (fallocate(g->shm_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		return -errno;
	return 0;
}

/* Does a live region of g hold any of the memfd's bytes [a, b)? */
static bool range_held(struct vcmad_guest *g, uint64_t a, uint64_t b)
{
	const struct vcma_region *r;
	uint32_t cur = 0;

	while ((r = vcma_regions_next(&g->d->core.regions, &cur))) {
		uint64_t off = VCMAD_IVS_WINDOW_OFF + vcmad_ivshmem_offset(g->d, r->mfn);

		if (r->guest == g->id && off < b && a < off + (r->nframes << VCMA_PAGE_SHIFT))
			return true;
	}
	return false;
}

int vcmad_ivshmem_clear(struct vcmad_guest *g, uint64_t mfn, uint64_t n)
{
	uint64_t off = VCMAD_IVS_WINDOW_OFF + vcmad_ivshmem_offset(g->d, mfn), len = n << VCMA_PAGE_SHIFT;
	uint64_t page[2] = { off & ~(VCMAD_IVS_HUGE - 1), (off + len - 1) & ~(VCMAD_IVS_HUGE - 1) };
	int rc;

	if (g->shm_fd < 0)
		return 0; /* detaching: the memfd is gone with the guest */
	/* hugetlbfs frees the whole huge pages in the range and only zeroes the partial
	 * ones at its ends: free those too when no live region of the guest uses them
	 * (a freed region is out of the table by now; a new one is in it) */
	rc = punch(g, off, len);
	if (rc || !g->ivs->conf->hugepages)
		return rc;
	for (int i = 0; i < (page[1] != page[0] ? 2 : 1) && !rc; i++) {
		bool partial = page[i] < off || page[i] + VCMAD_IVS_HUGE > off + len;

		if (partial && !range_held(g, page[i], page[i] + VCMAD_IVS_HUGE))
			rc = punch(g, page[i], VCMAD_IVS_HUGE);
	}
	return rc;
}

/* ---- stray memory: guest writes outside its regions (PROTOCOL.md 9.2, Memory) ---- */

struct win_range {
	uint64_t off, len; /* in the memfd */
};

static int range_cmp(const void *a, const void *b)
{
	const struct win_range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

uint64_t vcmad_ivshmem_committed(const struct vcmad_guest *g)
{
	struct stat st;

	return g->shm_fd < 0 || fstat(g->shm_fd, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

/* g's live regions as memfd ranges, sorted; NULL with *n = 0 when it has none. */
static struct win_range *region_ranges(struct vcmad_guest *g, size_t *n, int *err)
{
	const struct vcma_region *r;
	struct win_range *v;
	uint32_t cur = 0;
	size_t k = 0;

	*n = 0;
	*err = 0;
	while ((r = vcma_regions_next(&g->d->core.regions, &cur)))
		k += r->guest == g->id;
	if (!k)
		return NULL;
	v = calloc(k, sizeof(*v));
	if (!v) {
		*err = -ENOMEM;
		return NULL;
	}
	cur = 0;
	while ((r = vcma_regions_next(&g->d->core.regions, &cur)) && *n < k)
		if (r->guest == g->id)
			v[(*n)++] = (struct win_range){ VCMAD_IVS_WINDOW_OFF + vcmad_ivshmem_offset(g->d, r->mfn),
							r->nframes << VCMA_PAGE_SHIFT };
	qsort(v, *n, sizeof(*v), range_cmp);
	return v;
}

/* Punch everything from the window's start to the memfd's end that no region in v holds. */
static int punch_stray(struct vcmad_guest *g, const struct win_range *v, size_t n)
{
	uint64_t at = VCMAD_IVS_WINDOW_OFF;
	int err = 0;

	for (size_t i = 0; i <= n && !err; i++) {
		uint64_t end = i < n ? v[i].off : g->shm_size;

		if (end > at)
			err = punch(g, at, end - at);
		if (i < n && v[i].off + v[i].len > at)
			at = v[i].off + v[i].len;
	}
	return err;
}

/* What the regions in v may commit on hugetlbfs: whole huge pages, each counted once. */
static uint64_t huge_span(const struct win_range *v, size_t n)
{
	uint64_t total = 0, at = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t lo = v[i].off & ~(VCMAD_IVS_HUGE - 1);
		uint64_t hi = (v[i].off + v[i].len + VCMAD_IVS_HUGE - 1) & ~(VCMAD_IVS_HUGE - 1);

		if (lo < at)
			lo = at;
		if (hi > lo)
			total += hi - lo;
		if (hi > at)
			at = hi;
	}
	return total;
}

static void audit(struct vcmad_guest *g, uint64_t now)
{
	uint64_t before, after;
	struct win_range *v;
	size_t n;
	int rc;

	g->audit_at = now;
	before = vcmad_ivshmem_committed(g);
	/* the usual case, one fstat: no more than the shared area and the regions' bytes */
	if (before <= VCMAD_IVS_WINDOW_OFF + g->bytes)
		return;
	v = region_ranges(g, &n, &rc);
	if (!rc && g->ivs->conf->hugepages && before <= VCMAD_IVS_WINDOW_OFF + huge_span(v, n)) {
		free(v); /* regions that share or only partly fill huge pages */
		return;
	}
	if (!rc)
		rc = punch_stray(g, v, n);
	free(v);
	after = vcmad_ivshmem_committed(g);
	if (rc) {
		log_warn("guest %u (%s): cannot release memory written outside its regions: %s", g->id, g->name,
			 strerror(-rc));
		return;
	}
	g->stats.stray_reclaims++;
	g->stats.stray_bytes += before > after ? before - after : 0;
	/* the first time, then at most once a minute: a hostile guest may do this forever */
	if (g->stats.stray_reclaims == 1 || now - g->stray_logged_at >= 60 * VCMAD_IVS_AUDIT_NS) {
		g->stray_logged_at = now;
		log_warn("guest %u (%s) wrote outside its regions: %llu KiB released (%llu time(s) so far)", g->id,
			 g->name, (unsigned long long)((before > after ? before - after : 0) >> 10),
			 (unsigned long long)g->stats.stray_reclaims);
	}
}

void vcmad_ivshmem_audit(struct vcmad *d)
{
	uint64_t now = vcma_now_ns();

	for (uint32_t i = 0; d->guest && i < d->conf.max_guests; i++) {
		struct vcmad_guest *g = d->guest[i];

		if (g && !g->dead && g->ivs && g->shm_fd >= 0 && now - g->audit_at >= VCMAD_IVS_AUDIT_NS)
			audit(g, now);
	}
}

void vcmad_ivshmem_detached(struct vcmad_guest *g)
{
	struct vcmad *d = g->d;
	int rc;

	/* QEMU keeps its mapping until the VM stops: leave it nothing but zeros */
	rc = punch(g, VCMAD_IVS_WINDOW_OFF, d->win_frames << VCMA_PAGE_SHIFT);
	if (rc)
		log_warn("guest %u (%s): cannot release its window: %s", g->id, g->name, strerror(-rc));
	vcmad_ivshmem_forget(g);
}

void vcmad_ivshmem_forget(struct vcmad_guest *g)
{
	g->ivs->g = NULL;
	g->ivs = NULL;
}

int vcmad_region_read(struct vcmad *d, const struct vcma_region *r, uint64_t off, void *buf, size_t len)
{
	uint64_t size = r->nframes << VCMA_PAGE_SHIFT;
	struct vcmad_guest *g = vcmad_guest_find(d, r->guest);

	if (off > size || len > size - off)
		return -EINVAL;
	if (g && g->ivs) {
		memcpy(buf, (const uint8_t *)g->shm + VCMAD_IVS_WINDOW_OFF + vcmad_ivshmem_offset(d, r->mfn) + off,
		       len);
		return 0;
	}
	if (!d->be.machine)
		return -ENODEV;
	memcpy(buf, d->be.machine + (r->mfn << VCMA_PAGE_SHIFT) + off, len);
	return 0;
}

/* One message of the server protocol: a little-endian int64, maybe with an fd. */
static int send_msg(int sock, int64_t v, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	unsigned char le[8];
	struct iovec iov = { .iov_base = le, .iov_len = sizeof(le) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)((uint64_t)v >> (8 * i));
	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(le) ? 0 : -EIO;
}

/* version, peer id, shm, vcmad's doorbell eventfd, the guest's two irq eventfds */
static int handshake(struct vcmad_guest *g, int irq1_fd)
{
	int rc = send_msg(g->sock, IVSHMEM_PROTOCOL_VERSION, -1);

	if (!rc)
		rc = send_msg(g->sock, IVS_GUEST_PEER, -1);
	if (!rc)
		rc = send_msg(g->sock, -1, g->shm_fd);
	if (!rc)
		rc = send_msg(g->sock, IVS_HOST_PEER, g->kick_fd);
	if (!rc)
		rc = send_msg(g->sock, IVS_GUEST_PEER, g->irq_fd);
	if (!rc)
		rc = send_msg(g->sock, IVS_GUEST_PEER, irq1_fd);
	return rc;
}

/* QEMU never talks after the handshake: a byte, EOF or an error is a detach. */
static bool qemu_gone(struct vcmad_guest *g)
{
	char b;
	ssize_t n = recv(g->sock, &b, 1, MSG_DONTWAIT | MSG_PEEK);

	return n >= 0 || (errno != EAGAIN && errno != EINTR);
}

static void qemu_sock_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_guest *g = (struct vcmad_guest *)((char *)w - offsetof(struct vcmad_guest, sock_w));
	char b;

	if (g->dead)
		return;
	if (recv(g->sock, &b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN && !(events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
		return;
	vcmad_guest_detach(g, "QEMU disconnected");
}

static int guest_setup(struct vcmad_ivs *ivs, struct vcmad_guest *g, int *irq1_fd)
{
	struct vcmad *d = ivs->d;
	const struct vcmad_limits *lim = &d->conf.limits;
	struct vcma_ring_params rp = {
		.req_slots = lim->ring_slots, .evt_slots = VCMA_DEFAULT_EVT_SLOTS,
		.max_regions = lim->max_regions, .max_bytes = lim->max_bytes,
		.window_off = VCMAD_IVS_WINDOW_OFF, .window_size = d->win_frames << VCMA_PAGE_SHIFT,
		.guest_id = g->id, .generation = (uint32_t)(d->stats.attaches + 1),
	};
	unsigned int mfd_flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	char name[64];

	if (ivs->conf->hugepages)
		mfd_flags |= MFD_HUGETLB | MFD_HUGE_2MB;
	snprintf(name, sizeof(name), "vcma-ivshmem-%s", g->name);
	g->shm_size = bar_size(d);
	g->shm_fd = memfd_create(name, mfd_flags);
	if (g->shm_fd < 0)
		return -errno;
	if (ftruncate(g->shm_fd, (off_t)g->shm_size) ||
	    fcntl(g->shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		return -errno;
	/* NORESERVE: hugetlbfs would otherwise reserve huge pages for the whole BAR */
	g->shm = mmap(NULL, g->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, g->shm_fd, 0);
	if (g->shm == MAP_FAILED) {
		g->shm = NULL;
		return -errno;
	}
	g->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	g->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	*irq1_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->kick_fd < 0 || g->irq_fd < 0 || *irq1_fd < 0)
		return -errno;
	return vcma_ring_host_init(&g->ring, g->shm, VCMAD_IVS_WINDOW_OFF + rp.window_size, &rp);
}

static void attach(struct vcmad_ivs *ivs, int fd)
{
	struct vcmad *d = ivs->d;
	struct vcmad_guest *g;
	uint32_t slot;
	int irq1_fd = -1, rc;

	g = calloc(1, sizeof(*g));
	if (!g) {
		d->stats.attach_refused++;
		log_warn("guest %s: QEMU connected but vcmad is out of memory; closing the connection", ivs->conf->name);
		close(fd);
		return;
	}
	if (vcmad_guest_slot(d, true, &slot, &g->id)) {
		/* cannot happen: a configured guest has a slot of its own */
		d->stats.attach_refused++;
		log_err("guest %s: QEMU connected but no guest slot is free; closing the connection", ivs->conf->name);
		free(g);
		close(fd);
		return;
	}
	g->d = d;
	g->role = VCMA_SIM_ROLE_GUEST;
	g->sock = -1;
	g->kick_fd = g->irq_fd = g->shm_fd = -1;
	snprintf(g->name, sizeof(g->name), "%s", ivs->conf->name);
	g->conf = ivs->conf;
	snprintf(g->devclass, sizeof(g->devclass), "%s", ivs->conf->devclass);
	g->tokens = d->conf.limits.burst;
	g->tokens_at = vcma_now_ns();
	rc = guest_setup(ivs, g, &irq1_fd);
	if (rc) {
		log_warn("guest %s: cannot set up its shared memory%s: %s", g->name,
			 ivs->conf->hugepages ? " on hugetlbfs (are huge pages reserved?)" : "", strerror(-rc));
		goto fail;
	}
	g->sock = fd;
	rc = handshake(g, irq1_fd);
	close(irq1_fd); /* QEMU holds vector 1; vcmad never raises it */
	irq1_fd = -1;
	if (rc) {
		log_warn("guest %s: ivshmem handshake failed: %s", g->name, strerror(-rc));
		goto fail;
	}
	g->ivs = ivs;
	ivs->g = g;
	d->guest[slot] = g;
	d->nguests++;
	d->stats.attaches++;
	rc = vcma_loop_add(&d->loop, &g->kick_w, g->kick_fd, EPOLLIN, vcmad_guest_kick_cb);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &g->sock_w, fd, EPOLLIN | EPOLLRDHUP, qemu_sock_cb);
	if (rc) {
		log_warn("guest %s: %s", g->name, strerror(-rc));
		vcmad_guest_detach(g, "attach failed");
		return;
	}
	log_info("guest %u (%s%s%s) attached over ivshmem: BAR2 %llu MiB, DMA window %llu MiB at %#llx%s", g->id,
		 g->name, g->devclass[0] ? ", class " : "", g->devclass, (unsigned long long)(g->shm_size >> 20),
		 (unsigned long long)(d->win_frames >> 8), VCMAD_IVS_WINDOW_OFF,
		 ivs->conf->hugepages ? ", hugetlbfs" : "");
	/* a guest driver that loaded before the handshake finished rang nothing */
	vcmad_guest_run(g);
	return;
fail:
	d->stats.attach_refused++;
	if (irq1_fd >= 0)
		close(irq1_fd);
	if (g->sock < 0)
		close(fd);
	vcmad_guest_close_io(g);
	free(g);
}

static void accept_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_ivs *ivs = (struct vcmad_ivs *)((char *)w - offsetof(struct vcmad_ivs, w));

	for (;;) {
		int fd = accept4(ivs->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("guest %s: accept: %s", ivs->conf->name, strerror(errno));
			return;
		}
		if (ivs->d->closing) {
			ivs->d->stats.attach_refused++;
			log_warn("guest %s: QEMU connected while vcmad is shutting down; closing it", ivs->conf->name);
			close(fd);
			continue;
		}
		if (ivs->g && qemu_gone(ivs->g)) {
			/* a QEMU that reconnects at once: its old connection's EOF may still
			 * wait in this loop turn's events; the new one must not pay for that */
			vcmad_guest_detach(ivs->g, "QEMU disconnected");
		}
		if (ivs->g) {
			/* one QEMU per guest: a second device on the same socket is refused */
			ivs->d->stats.attach_refused++;
			log_warn("guest %s: a second QEMU connected while guest %u is attached; closing it",
				 ivs->conf->name, ivs->g->id);
			close(fd);
			continue;
		}
		attach(ivs, fd);
	}
}

static int listen_one(struct vcmad *d, struct vcmad_ivs *ivs)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if ((ivs->conf->socket[0] ? (size_t)snprintf(ivs->path, sizeof(ivs->path), "%s", ivs->conf->socket)
				  : (size_t)snprintf(ivs->path, sizeof(ivs->path), "%s/%s.ivshmem", d->conf.runtime_dir,
						     ivs->conf->name)) >= sizeof(ivs->path))
		return -ENAMETOOLONG; /* vcmad_conf_validate() said so already */
	memcpy(sa.sun_path, ivs->path, strlen(ivs->path) + 1);
	if (unlink(ivs->path) && errno != ENOENT) {
		rc = -errno;
		log_err("guest %s: cannot remove stale %s: %s", ivs->conf->name, ivs->path, strerror(errno));
		return rc;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* QEMU may run as another user (libvirt-qemu): the group decides, as for ctl */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(ivs->path, 0660) || listen(fd, 4)) {
		rc = -errno;
		log_err("guest %s: cannot listen on %s: %s", ivs->conf->name, ivs->path, strerror(errno));
		close(fd);
		return rc;
	}
	rc = vcma_loop_add(&d->loop, &ivs->w, fd, EPOLLIN, accept_cb);
	if (rc) {
		close(fd);
		unlink(ivs->path);
		return rc;
	}
	ivs->fd = fd;
	return 0;
}

int vcmad_ivshmem_listen(struct vcmad *d)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	int rc;

	d->nivs = vcmad_conf_count_guests(&d->conf, VCMAD_GUEST_QEMU);
	if (!d->nivs)
		return 0;
	for (uint32_t i = 0; i < d->core.npools; i++) {
		const struct vcma_pool *p = d->core.pool[i];

		if (p->fm.base < lo)
			lo = p->fm.base;
		if (p->fm.base + p->fm.nframes > hi)
			hi = p->fm.base + p->fm.nframes;
	}
	d->win_mfn = lo;
	d->win_frames = hi - lo;
	d->ivs = calloc(d->nivs, sizeof(*d->ivs));
	if (!d->ivs)
		return -ENOMEM;
	for (uint32_t i = 0, k = 0; i < d->conf.nguests; i++) {
		if (d->conf.guests[i].kind != VCMAD_GUEST_QEMU)
			continue;
		d->ivs[k].d = d;
		d->ivs[k].conf = &d->conf.guests[i];
		d->ivs[k].fd = -1;
		k++;
	}
	for (uint32_t i = 0; i < d->nivs; i++) {
		rc = listen_one(d, &d->ivs[i]);
		if (rc)
			return rc;
		log_info("guest %s: ivshmem server on %s (BAR2 %llu MiB)", d->ivs[i].conf->name, d->ivs[i].path,
			 (unsigned long long)(bar_size(d) >> 20));
	}
	return 0;
}

void vcmad_ivshmem_close(struct vcmad *d)
{
	for (uint32_t i = 0; d->ivs && i < d->nivs; i++) {
		struct vcmad_ivs *ivs = &d->ivs[i];

		if (ivs->fd < 0)
			continue;
		vcma_loop_del(&d->loop, &ivs->w);
		close(ivs->fd);
		unlink(ivs->path);
	}
	free(d->ivs);
	d->ivs = NULL;
}
