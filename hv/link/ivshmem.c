// SPDX-License-Identifier: MIT
/*
 * ivshmem.c - the ivshmem guest link: QEMU guests over ivshmem-doorbell, vcmad being
 * their ivshmem server (PROTOCOL.md §9.2). Debian ships no ivshmem-server; QEMU's
 * protocol is simple.
 *
 * One listening socket per expected QEMU guest and one memfd per connection, so a
 * guest sees vcmad and nothing else. The handshake is sent in full from the accept
 * callback: QEMU reads it synchronously while realizing the device, so an answer
 * that waited for anything would stall QEMU's main loop.
 *
 *   BAR2 = memfd:  [ control page | rings | ... ][ DMA window: pool span ][ pad to 2^n ]
 *                  0                            IVS_WINDOW_OFF
 *
 * The window mirrors the pools: window offset X is machine address win_mfn*4096 + X,
 * so the core's frame map decides placement for QEMU guests as for any other. Its
 * memory is committed only while a region holds it: punched when a region is
 * handed out (zeros, whatever the guest scribbled there) and when it is freed. A
 * once-a-second audit releases what a guest wrote outside its regions.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <json-c/json.h>
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

#include "durable.h"
#include "guest.h"
#include "log.h"
#include "restore.h"
#include "peerfd.h"
#include "scrub.h"
#include "vcmad.h"

#define IVS_WINDOW_OFF (2ull << 20) /* shared area padded to one huge page */
#define IVS_HUGE (2ull << 20)
#define IVS_AUDIT_NS 1000000000ull /* stray-memory audit period per guest */
#define IVSHMEM_PROTOCOL_VERSION 0
#define IVS_HOST_PEER 0 /* vcmad: the virtual peer a guest's doorbell reaches */
#define IVS_GUEST_PEER 1

/* One expected QEMU guest: its listening socket. */
struct listener {
	struct ivs_link *il;
	const struct vcmad_guest_conf *conf;
	char path[108];
	int fd;
	struct vcma_watch w;
	struct vcmad_guest *g; /* the attached guest, or NULL */
	struct listener *next;
};

struct ivs_link {
	struct vcmad *d;
	struct vcmad_link *l;
	uint64_t win_mfn, win_frames; /* the DMA window: the span of the pools */
	struct listener *listeners;
	struct vcma_timer audit;
};

/* Per guest; freed with its zombie. */
struct ivs_guest {
	struct vcmad_guest *g;
	struct listener *ls;
	int sock, kick_fd, irq_fd, shm_fd;
	struct vcma_watch sock_w, kick_w;
	void *shm;
	uint64_t shm_size;
	uint64_t audit_at, stray_logged_at; /* last stray-memory audit, last log of one */
	bool irq_stuck;
};

static struct ivs_guest *ig(const struct vcmad_guest *g)
{
	return g->link_priv;
}

static struct ivs_link *il_of(const struct vcmad_guest *g)
{
	return g->link->priv;
}

static uint64_t pow2ceil(uint64_t x)
{
	uint64_t p = 1;

	while (p < x)
		p <<= 1;
	return p;
}

static uint64_t bar_size(const struct ivs_link *il)
{
	return pow2ceil(IVS_WINDOW_OFF + (il->win_frames << VCMA_PAGE_SHIFT));
}

/* Offset of machine frame mfn in the DMA window. */
static uint64_t win_off(const struct ivs_link *il, uint64_t mfn)
{
	return (mfn - il->win_mfn) << VCMA_PAGE_SHIFT;
}

static int punch(struct ivs_guest *s, uint64_t off, uint64_t len)
{
	if (fallocate(s->shm_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		return -errno;
	return 0;
}

/* Does a live region of g hold any of the memfd's bytes [a, b)? */
static bool range_held(struct vcmad_guest *g, uint64_t a, uint64_t b)
{
	const struct vcma_region *r;
	uint32_t cur = 0;

	while ((r = vcma_regions_next(&g->d->core.regions, &cur))) {
		uint64_t off = IVS_WINDOW_OFF + win_off(il_of(g), r->mfn);

		if (r->guest == g->id && off < b && a < off + (r->nframes << VCMA_PAGE_SHIFT))
			return true;
	}
	return false;
}

/* Punch a region's range out of g's window: zeros, and no memory held. */
static int clear_range(struct vcmad_guest *g, uint64_t mfn, uint64_t n)
{
	struct ivs_guest *s = ig(g);
	uint64_t off = IVS_WINDOW_OFF + win_off(il_of(g), mfn), len = n << VCMA_PAGE_SHIFT;
	uint64_t page[2] = { off & ~(IVS_HUGE - 1), (off + len - 1) & ~(IVS_HUGE - 1) };
	int rc;

	if (s->shm_fd < 0)
		return 0; /* closing: the memfd is gone with the guest */
	/* hugetlbfs frees the whole huge pages in the range and only zeroes the partial
	 * ones at its ends: free those too when no live region of the guest uses them
	 * (a freed region is out of the table by now; a new one is in it) */
	rc = punch(s, off, len);
	if (rc || !s->ls->conf->hugepages)
		return rc;
	for (int i = 0; i < (page[1] != page[0] ? 2 : 1) && !rc; i++) {
		bool partial = page[i] < off || page[i] + IVS_HUGE > off + len;

		if (partial && !range_held(g, page[i], page[i] + IVS_HUGE))
			rc = punch(s, page[i], IVS_HUGE);
	}
	return rc;
}

static int ivs_place(struct vcmad_guest *g, const struct vcma_region *r)
{
	return clear_range(g, r->mfn, r->nframes);
}

/* gpa = bus = the region's offset in the DMA window (PROTOCOL.md §9.2); the guest
 * adds BAR2's address, which only it knows. */
static void ivs_addr(const struct vcmad_guest *g, uint64_t mfn, uint64_t *gpa, uint64_t *bus)
{
	*gpa = *bus = win_off(il_of(g), mfn);
}

static void ivs_clear(struct vcmad_guest *g, const struct vcma_region *r)
{
	int rc;

	if (g->dead)
		return; /* detaching: ivs_close hands the whole window to the scrubber */
	rc = clear_range(g, r->mfn, r->nframes);

	if (rc)
		log_warn("guest %u (%s): cannot release a freed region's memory: %s", g->id, g->name, strerror(-rc));
}

static int ivs_read(struct vcmad_guest *g, const struct vcma_region *r, uint64_t off, void *buf, size_t len)
{
	uint64_t size = r->nframes << VCMA_PAGE_SHIFT;

	if (off > size || len > size - off)
		return -EINVAL;
	memcpy(buf, (const uint8_t *)ig(g)->shm + IVS_WINDOW_OFF + win_off(il_of(g), r->mfn) + off, len);
	return 0;
}

static int ivs_notify(struct vcmad_guest *g)
{
	struct ivs_guest *s = ig(g);
	int rc;

	if (s->irq_fd < 0 || s->irq_stuck)
		return 0;
	rc = vcmad_peerfd_signal(s->irq_fd);
	if (rc == -EPERM)
		s->irq_stuck = true;
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

static uint64_t committed(const struct ivs_guest *s)
{
	struct stat st;

	return s->shm_fd < 0 || fstat(s->shm_fd, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

/* Bytes of [0, end) that hold memory (SEEK_DATA/SEEK_HOLE), rounded up to pages; end
 * itself when the file system cannot say. */
static uint64_t committed_below(const struct ivs_guest *s, uint64_t end)
{
	uint64_t total = 0;
	off_t at = 0;

	while ((uint64_t)at < end) {
		off_t data = lseek(s->shm_fd, at, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break;
		if (data < 0)
			return end;
		if ((uint64_t)data >= end)
			break;
		hole = lseek(s->shm_fd, data, SEEK_HOLE);
		if (hole < 0)
			return end;
		if ((uint64_t)hole > end)
			hole = (off_t)end;
		total += (uint64_t)(hole - data);
		at = hole;
	}
	return total;
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
			v[(*n)++] = (struct win_range){ IVS_WINDOW_OFF + win_off(il_of(g), r->mfn),
							r->nframes << VCMA_PAGE_SHIFT };
	qsort(v, *n, sizeof(*v), range_cmp);
	return v;
}

/* Punch everything from the window's start to the memfd's end that no region in v holds. */
static int punch_stray(struct ivs_guest *s, const struct win_range *v, size_t n)
{
	uint64_t at = IVS_WINDOW_OFF;
	int err = 0;

	for (size_t i = 0; i <= n && !err; i++) {
		uint64_t end = i < n ? v[i].off : s->shm_size;

		if (end > at)
			err = punch(s, at, end - at);
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
		uint64_t lo = v[i].off & ~(IVS_HUGE - 1);
		uint64_t hi = (v[i].off + v[i].len + IVS_HUGE - 1) & ~(IVS_HUGE - 1);

		if (lo < at)
			lo = at;
		if (hi > lo)
			total += hi - lo;
		if (hi > at)
			at = hi;
	}
	return total;
}

static void audit_one(struct vcmad_guest *g, uint64_t now)
{
	struct ivs_guest *s = ig(g);
	uint64_t before, after;
	struct win_range *v;
	size_t n;
	int rc;

	s->audit_at = now;
	before = committed(s);
	/* the usual case: no more than what the shared area holds and the regions' bytes
	 * (counting the shared area as its whole size would let stray bytes up to its unused
	 * part stay in the window: those written just after a punch were never released) */
	if (before <= IVS_WINDOW_OFF + g->rq.bytes &&
	    before <= committed_below(s, IVS_WINDOW_OFF) + g->rq.bytes)
		return;
	v = region_ranges(g, &n, &rc);
	if (!rc && s->ls->conf->hugepages && before <= IVS_WINDOW_OFF + huge_span(v, n)) {
		free(v); /* regions that share or only partly fill huge pages */
		return;
	}
	if (!rc)
		rc = punch_stray(s, v, n);
	free(v);
	after = committed(s);
	if (rc) {
		log_warn("guest %u (%s): cannot release memory written outside its regions: %s", g->id, g->name,
			 strerror(-rc));
		return;
	}
	g->stats.stray_reclaims++;
	g->stats.stray_bytes += before > after ? before - after : 0;
	/* the first time, then at most once a minute: a hostile guest may do this forever */
	if (g->stats.stray_reclaims == 1 || now - s->stray_logged_at >= 60 * IVS_AUDIT_NS) {
		s->stray_logged_at = now;
		log_warn("guest %u (%s) wrote outside its regions: %llu KiB released (%llu time(s) so far)", g->id,
			 g->name, (unsigned long long)((before > after ? before - after : 0) >> 10),
			 (unsigned long long)g->stats.stray_reclaims);
	}
}

/* Each attached guest once a second; the timer runs only while one is attached. */
static void audit_cb(struct vcma_timer *t)
{
	struct ivs_link *il = (struct ivs_link *)((char *)t - offsetof(struct ivs_link, audit));
	uint64_t now = vcmad_now(il->d);
	bool any = false;

	for (struct listener *ls = il->listeners; ls; ls = ls->next) {
		if (!ls->g || ls->g->dead)
			continue;
		any = true;
		if (now - ig(ls->g)->audit_at >= IVS_AUDIT_NS)
			audit_one(ls->g, now);
	}
	if (any)
		vcma_timer_arm(&il->d->loop, t, now + IVS_AUDIT_NS);
}

static void ivs_describe(struct vcmad_guest *g, struct json_object *o)
{
	json_object_object_add(o, "bar_bytes", json_object_new_uint64(ig(g)->shm_size));
	json_object_object_add(o, "window_bytes", json_object_new_uint64(il_of(g)->win_frames << VCMA_PAGE_SHIFT));
	json_object_object_add(o, "committed_bytes", json_object_new_uint64(committed(ig(g))));
	json_object_object_add(o, "stray_reclaims", json_object_new_uint64(g->stats.stray_reclaims));
	json_object_object_add(o, "stray_bytes", json_object_new_uint64(g->stats.stray_bytes));
}

/* ---- the connection ---- */

static void close_io(struct vcmad *d, struct ivs_guest *s)
{
	vcma_loop_del(&d->loop, &s->kick_w);
	vcma_loop_del(&d->loop, &s->sock_w);
	s->kick_w.fd = s->sock_w.fd = -1;
	if (s->shm)
		munmap(s->shm, s->shm_size);
	if (s->shm_fd >= 0)
		close(s->shm_fd);
	if (s->kick_fd >= 0)
		close(s->kick_fd);
	if (s->irq_fd >= 0)
		close(s->irq_fd);
	if (s->sock >= 0)
		close(s->sock);
	s->shm = NULL;
	s->shm_fd = s->kick_fd = s->irq_fd = s->sock = -1;
}

static void ivs_close(struct vcmad_guest *g, bool keep_memory)
{
	struct ivs_guest *s = ig(g);
	struct ivs_link *il = il_of(g);

	/* QEMU keeps its mapping until the VM stops: leave it nothing but zeros, unless
	 * vcmad exits with the guest attached (its regions stay valid, PROTOCOL.md §3).
	 * The memfd is this connection's alone, so the punch need not hold up the
	 * detach: the scrubber does it over the next turns, then closes it (scrub.h). */
	if (!keep_memory && s->shm_fd >= 0) {
		vcmad_scrub_release_file(g->d, s->shm_fd, s->shm, s->shm_size, IVS_WINDOW_OFF,
					 il->win_frames << VCMA_PAGE_SHIFT);
		s->shm_fd = -1;
		s->shm = NULL;
	}
	if (s->ls)
		s->ls->g = NULL;
	close_io(g->d, s);
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
	n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(le) ? 0 : -EIO;
}

/* version, peer id, shm, vcmad's doorbell eventfd, the guest's two irq eventfds */
static int handshake(struct ivs_guest *s, int irq1_fd)
{
	int rc = send_msg(s->sock, IVSHMEM_PROTOCOL_VERSION, -1);

	if (!rc)
		rc = send_msg(s->sock, IVS_GUEST_PEER, -1);
	if (!rc)
		rc = send_msg(s->sock, -1, s->shm_fd);
	if (!rc)
		rc = send_msg(s->sock, IVS_HOST_PEER, s->kick_fd);
	if (!rc)
		rc = send_msg(s->sock, IVS_GUEST_PEER, s->irq_fd);
	if (!rc)
		rc = send_msg(s->sock, IVS_GUEST_PEER, irq1_fd);
	return rc;
}

/* QEMU never talks after the handshake: a byte, EOF or an error is a detach. */
static bool qemu_gone(const struct ivs_guest *s)
{
	char b;
	ssize_t n = recv(s->sock, &b, 1, MSG_DONTWAIT | MSG_PEEK);

	return n >= 0 || (errno != EAGAIN && errno != EINTR);
}

static void sock_cb(struct vcma_watch *w, uint32_t events)
{
	struct ivs_guest *s = (struct ivs_guest *)((char *)w - offsetof(struct ivs_guest, sock_w));

	if (s->g->dead)
		return;
	if (!qemu_gone(s) && !(events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
		return;
	vcmad_guest_detach(s->g, "QEMU disconnected");
}

static void kick_cb(struct vcma_watch *w, uint32_t events)
{
	struct ivs_guest *s = (struct ivs_guest *)((char *)w - offsetof(struct ivs_guest, kick_w));
	uint64_t cnt;
	int rc;

	if (s->g->dead)
		return;
	rc = vcmad_peerfd_drain(s->kick_fd, &cnt);
	if (rc == -EPERM) {
		vcmad_guest_kill(s->g, "kick eventfd made blocking and drained by the guest");
		return;
	}
	if (rc) {
		vcmad_guest_detach(s->g, "kick eventfd failed");
		return;
	}
	vcmad_guest_kicked(s->g);
}

static int guest_io(struct ivs_link *il, struct listener *ls, struct vcmad_guest *g, struct ivs_guest *s,
		    int *irq1_fd)
{
	unsigned int mfd_flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	char name[64];

	if (ls->conf->hugepages)
		mfd_flags |= MFD_HUGETLB | MFD_HUGE_2MB;
	snprintf(name, sizeof(name), "vcma-ivshmem-%s", g->name);
	s->shm_size = bar_size(il);
	s->shm_fd = memfd_create(name, mfd_flags);
	if (s->shm_fd < 0)
		return -errno;
	if (ftruncate(s->shm_fd, (off_t)s->shm_size) ||
	    fcntl(s->shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		return -errno;
	/* NORESERVE: hugetlbfs would otherwise reserve huge pages for the whole BAR */
	s->shm = mmap(NULL, s->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, s->shm_fd, 0);
	if (s->shm == MAP_FAILED) {
		s->shm = NULL;
		return -errno;
	}
	s->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	*irq1_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->kick_fd < 0 || s->irq_fd < 0 || *irq1_fd < 0)
		return -errno;
	return vcmad_guest_ring_init(g, s->shm, IVS_WINDOW_OFF + (il->win_frames << VCMA_PAGE_SHIFT), IVS_WINDOW_OFF,
				     il->win_frames << VCMA_PAGE_SHIFT);
}

static void attach(struct listener *ls, int fd)
{
	struct ivs_link *il = ls->il;
	struct vcmad *d = il->d;
	struct ivs_guest *s = calloc(1, sizeof(*s));
	struct ucred cr = { .uid = (uid_t)-1 };
	socklen_t crlen = sizeof(cr);
	struct vcmad_guest *g;
	int32_t status;
	int irq1_fd = -1, rc;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen))
		cr.uid = (uid_t)-1;
	g = s ? vcmad_guest_new(d, il->l, ls->conf->name, ls->conf->devclass, ls->conf, cr.uid, &status) : NULL;
	if (!g) {
		/* a configured guest has a slot of its own: only memory can be short */
		d->stats.attach_refused++;
		log_err("guest %s: QEMU connected but vcmad cannot take it (out of memory); closing the connection",
			ls->conf->name);
		free(s);
		close(fd);
		return;
	}
	g->link_priv = s;
	g->role = "qemu";
	if (crlen == sizeof(cr) && cr.pid > 0)
		vcmad_durable_guest_identity(d, g->id, (uint32_t)cr.pid, 0); /* QEMU across a restart */
	s->g = g;
	s->ls = ls;
	s->sock = s->kick_fd = s->irq_fd = s->shm_fd = -1;
	s->sock_w.fd = s->kick_w.fd = -1;
	rc = guest_io(il, ls, g, s, &irq1_fd);
	if (rc) {
		log_warn("guest %s: cannot set up its shared memory%s: %s", g->name,
			 ls->conf->hugepages ? " on hugetlbfs (are huge pages reserved?)" : "", strerror(-rc));
		goto fail;
	}
	s->sock = fd;
	rc = handshake(s, irq1_fd);
	close(irq1_fd); /* QEMU holds vector 1; vcmad never raises it */
	irq1_fd = -1;
	if (rc) {
		log_warn("guest %s: ivshmem handshake failed: %s", g->name, strerror(-rc));
		goto fail;
	}
	ls->g = g;
	rc = vcma_loop_add(&d->loop, &s->kick_w, s->kick_fd, EPOLLIN, kick_cb);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &s->sock_w, fd, EPOLLIN | EPOLLRDHUP, sock_cb);
	if (rc) {
		log_warn("guest %s: %s", g->name, strerror(-rc));
		d->stats.attaches++;
		vcmad_guest_detach(g, "attach failed");
		return;
	}
	log_info("guest %u (%s%s%s) attached over ivshmem: BAR2 %llu MiB, DMA window %llu MiB at %#llx%s", g->id,
		 g->name, g->devclass[0] ? ", class " : "", g->devclass, (unsigned long long)(s->shm_size >> 20),
		 (unsigned long long)(il->win_frames >> 8), IVS_WINDOW_OFF, ls->conf->hugepages ? ", hugetlbfs" : "");
	s->audit_at = vcmad_now(d);
	if (!il->audit.armed)
		vcma_timer_arm(&d->loop, &il->audit, s->audit_at + IVS_AUDIT_NS);
	/* a guest driver that loaded before the handshake finished rang nothing */
	vcmad_guest_started(g);
	return;
fail:
	d->stats.attach_refused++;
	if (irq1_fd >= 0)
		close(irq1_fd);
	if (s->sock < 0)
		close(fd);
	close_io(d, s);
	vcmad_guest_discard(g);
}

static void accept_cb(struct vcma_watch *w, uint32_t events)
{
	struct listener *ls = (struct listener *)((char *)w - offsetof(struct listener, w));
	struct vcmad *d = ls->il->d;

	for (;;) {
		int fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("guest %s: accept: %s", ls->conf->name, strerror(errno));
			return;
		}
		if (d->closing) {
			d->stats.attach_refused++;
			log_warn("guest %s: QEMU connected while vcmad is shutting down; closing it", ls->conf->name);
			close(fd);
			continue;
		}
		if (ls->g && qemu_gone(ig(ls->g))) {
			/* a QEMU that reconnects at once: its old connection's EOF may still
			 * wait in this loop turn's events; the new one must not pay for that */
			vcmad_guest_detach(ls->g, "QEMU disconnected");
		}
		if (!ls->g && vcmad_restore_holding_name(d, ls->conf->name)) {
			/* vcmad restarted under a running QEMU: until that QEMU exits its
			 * regions are its own, and a second instance of the guest is refused */
			d->stats.attach_refused++;
			log_warn("guest %s: a QEMU connected while the one from before vcmad's restart still runs and "
				 "holds its regions; closing it (restart the guest: its QEMU exiting frees them)",
				 ls->conf->name);
			close(fd);
			continue;
		}
		if (ls->g) {
			/* one QEMU per guest: a second device on the same socket is refused */
			d->stats.attach_refused++;
			log_warn("guest %s: a second QEMU connected while guest %u is attached; closing it",
				 ls->conf->name, ls->g->id);
			close(fd);
			continue;
		}
		attach(ls, fd);
	}
}

/* ---- the link ---- */

/* chown path to group (QEMU's, so that it can connect). 0 or -errno. */
static int chgrp(const char *path, const char *group)
{
	struct group gr, *res = NULL;
	char buf[4096];
	int rc = getgrnam_r(group, &gr, buf, sizeof(buf), &res);

	if (rc || !res)
		return rc ? -rc : -ENOENT;
	return chown(path, (uid_t)-1, gr.gr_gid) ? -errno : 0;
}

static int listen_on(struct vcmad *d, struct listener *ls)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if ((ls->conf->socket[0] ? (size_t)snprintf(ls->path, sizeof(ls->path), "%s", ls->conf->socket)
				 : (size_t)snprintf(ls->path, sizeof(ls->path), "%s/%s.ivshmem", d->conf.runtime_dir,
						    ls->conf->name)) >= sizeof(ls->path))
		return -ENAMETOOLONG; /* vcmad_conf_validate() said so already */
	memcpy(sa.sun_path, ls->path, strlen(ls->path) + 1);
	if (unlink(ls->path) && errno != ENOENT) {
		rc = -errno;
		log_err("guest %s: cannot remove stale %s: %s", ls->conf->name, ls->path, strerror(errno));
		return rc;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* QEMU may run as another user (libvirt-qemu): the group decides, as for ctl */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(ls->path, 0660) || listen(fd, 4)) {
		rc = -errno;
		log_err("guest %s: cannot listen on %s: %s", ls->conf->name, ls->path, strerror(errno));
		close(fd);
		return rc;
	}
	if (ls->conf->socket_group[0] && (rc = chgrp(ls->path, ls->conf->socket_group))) {
		log_err("guest %s: cannot give %s to group %s: %s", ls->conf->name, ls->path, ls->conf->socket_group,
			strerror(-rc));
		close(fd);
		unlink(ls->path);
		return rc;
	}
	rc = vcma_loop_add(&d->loop, &ls->w, fd, EPOLLIN, accept_cb);
	if (rc) {
		close(fd);
		unlink(ls->path);
		return rc;
	}
	ls->fd = fd;
	return 0;
}

static int ivs_start(struct vcmad_link *l)
{
	struct vcmad *d = l->d;
	struct ivs_link *il = calloc(1, sizeof(*il));
	uint64_t lo = UINT64_MAX, hi = 0;

	if (!il)
		return -ENOMEM;
	il->d = d;
	il->l = l;
	vcma_timer_init(&il->audit, audit_cb);
	for (uint32_t i = 0; i < d->core.npools; i++) {
		const struct vcma_pool *p = d->core.pool[i];

		if (p->fm.base < lo)
			lo = p->fm.base;
		if (p->fm.base + p->fm.nframes > hi)
			hi = p->fm.base + p->fm.nframes;
	}
	il->win_mfn = lo;
	il->win_frames = hi - lo;
	l->priv = il;
	return 0;
}

static void listener_close(struct vcmad *d, struct listener *ls)
{
	if (ls->fd < 0)
		return;
	vcma_loop_del(&d->loop, &ls->w);
	close(ls->fd);
	unlink(ls->path);
	ls->fd = -1;
}

static void ivs_stop(struct vcmad_link *l)
{
	struct ivs_link *il = l->priv;

	if (!il)
		return;
	vcma_timer_cancel(&l->d->loop, &il->audit);
	while (il->listeners) {
		struct listener *ls = il->listeners;

		il->listeners = ls->next;
		listener_close(l->d, ls);
		free(ls);
	}
	free(il);
	l->priv = NULL;
}

static int ivs_expect(struct vcmad_link *l, const struct vcmad_guest_conf *gc)
{
	struct ivs_link *il = l->priv;
	struct listener *ls = calloc(1, sizeof(*ls));
	int rc;

	if (!ls)
		return -ENOMEM;
	ls->il = il;
	ls->conf = gc;
	ls->fd = -1;
	rc = listen_on(l->d, ls);
	if (rc) {
		free(ls);
		return rc;
	}
	ls->next = il->listeners;
	il->listeners = ls;
	log_info("guest %s: ivshmem server on %s (BAR2 %llu MiB)", gc->name, ls->path,
		 (unsigned long long)(bar_size(il) >> 20));
	return 0;
}

/* Its guest has been detached already (vcmad_guest_forget). */
static void ivs_forget(struct vcmad_link *l, const struct vcmad_guest_conf *gc)
{
	struct ivs_link *il = l->priv;

	for (struct listener **pp = &il->listeners; *pp; pp = &(*pp)->next) {
		struct listener *ls = *pp;

		if (ls->conf != gc)
			continue;
		*pp = ls->next;
		listener_close(l->d, ls);
		free(ls);
		return;
	}
}

const struct vcmad_link_ops vcmad_link_ivshmem = {
	.name = "ivshmem",
	.kind = VCMAD_GUEST_QEMU,
	.start = ivs_start,
	.stop = ivs_stop,
	.expect = ivs_expect,
	.forget = ivs_forget,
	.notify = ivs_notify,
	.place = ivs_place,
	.addr = ivs_addr,
	.clear = ivs_clear,
	.read = ivs_read,
	.close = ivs_close,
	.describe = ivs_describe,
};
