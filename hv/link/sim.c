// SPDX-License-Identifier: MIT
/*
 * sim.c - the sim guest link: a SOCK_SEQPACKET socket in the runtime directory
 * (PROTOCOL.md §9.1).
 *
 * A client sends one struct vcma_sim_attach; vcmad decides who it may be
 * (identity()), and answers at once with the ring memfd and two eventfds, plus for a
 * VMM the machine memory and the p2m; the VMM channel then runs on the same socket,
 * read by the sim backend (backend/sim_vmm.c). A connection that says nothing within
 * ATTACH_TIMEOUT is closed, so a silent client cannot hold a slot; at most
 * MAX_PENDING_CONNS wait at once.
 *
 * Region addresses: bus = machine address; gpa = window_gpa + bus, window_gpa being
 * the guest's RAM size rounded up to 1 GiB (at least 1 GiB).
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
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "backend/sim_backend.h"
#include "evict.h"
#include "guest.h"
#include "log.h"
#include "peerfd.h"
#include "restore.h"
#include "link/sim_msg.h"
#include "scrub.h"
#include "vcma_name.h"
#include "vcma_sim.h"
#include "vcmad.h"
#include "vm.h"

#define ATTACH_TIMEOUT_NS (5ull * 1000000000ull)
#define MAX_PENDING_CONNS 64u

/* An accepted connection that has not sent its attach message yet. */
struct conn {
	struct sim_link *sl;
	int fd;
	uint32_t uid, gid; /* the peer's credentials when it connected */
	int32_t pid;
	struct vcma_watch w;
	uint64_t deadline_ns;
	struct conn *next;
	/* a VMM's REATTACH whose p2m messages are still coming in */
	bool reattaching;
	struct vcma_sim_reattach ra;
	struct vcma_sim_run *runs;
	uint32_t got;
};

struct sim_link {
	struct vcmad *d;
	struct vcmad_link *l;
	char path[108];
	int fd;
	struct vcma_watch w;
	struct conn *conns;
	uint32_t nconns;
	struct vcma_timer reap; /* the first attach deadline */
};

/* Per guest. Lives until the guest's zombie is freed (the VMM channel's watch is in
 * it, and events of the loop iteration it detached in may point there). */
struct sim_guest {
	struct vcmad_guest *g;
	int sock, kick_fd, irq_fd, shm_fd;
	struct vcma_watch sock_w, kick_w;
	void *shm;
	uint64_t shm_size;
	uint64_t window_gpa;
	bool irq_stuck; /* the peer made irq_fd blocking and full: never written again */
	struct vcmad_sim_vmm vmm;
};

static struct sim_guest *sg(const struct vcmad_guest *g)
{
	return g->link_priv;
}

static void collect(struct sim_link *sl, struct conn *c);
static void reattach_begin(struct sim_link *sl, struct conn *c, const void *msg, size_t len);

/* ---- guest I/O ---- */

static int sim_notify(struct vcmad_guest *g)
{
	struct sim_guest *s = sg(g);
	int rc;

	if (s->irq_fd < 0 || s->irq_stuck)
		return 0;
	rc = vcmad_peerfd_signal(s->irq_fd);
	if (rc == -EPERM)
		s->irq_stuck = true; /* no final irq either: it would stall again */
	return rc;
}

static void kick_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_guest *g = ((struct sim_guest *)((char *)w - offsetof(struct sim_guest, kick_w)))->g;
	uint64_t cnt;
	int rc;

	if (g->dead)
		return;
	/* the turn first, so its answers and irq wait for no syscall; the kicks are read
	 * after it, and requests published since are looked for then (a kick read here
	 * may be one that came after the turn's last look at the ring) */
	vcmad_guest_kicked(g);
	if (g->dead)
		return;
	/* never blocks, whatever the peer did to the fd; a kick it consumed itself reads
	 * as none, and the turn costs a token like any empty kick */
	rc = vcmad_peerfd_drain(sg(g)->kick_fd, &cnt);
	if (rc == -EPERM) {
		vcmad_guest_kill(g, "kick eventfd made blocking and drained by the guest");
		return;
	}
	if (rc) {
		vcmad_guest_detach(g, "kick eventfd failed");
		return;
	}
	vcmad_guest_kicks_read(g);
}

/* A plain guest says nothing after its attach: a byte is a violation, EOF a detach. */
static void sock_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_guest *g = ((struct sim_guest *)((char *)w - offsetof(struct sim_guest, sock_w)))->g;
	char b;
	ssize_t n;

	if (g->dead)
		return;
	n = recv(sg(g)->sock, &b, 1, MSG_DONTWAIT);
	if (n > 0)
		vcmad_guest_kill(g, "unexpected message on the attach socket");
	else if (n == 0 || (errno != EAGAIN && errno != EINTR) || (events & (EPOLLERR | EPOLLHUP)))
		vcmad_guest_detach(g, n == 0 ? "connection closed" : "connection error");
}

/*
 * Whatever the frames held before, the guest gets zeros: they are zeroed now, except
 * those known zero (core/fmap.h): zeroed when their last region was freed, which
 * spares the second hole-punch of a region freed and taken again at once, or cleared
 * by the vacate that emptied the window while the VM remapped (vacate.c).
 */
static int sim_place(struct vcmad_guest *g, const struct vcma_region *r)
{
	struct vcmad *d = g->d;
	uint64_t len;
	bool zero;
	int rc = 0;

	for (uint64_t off = 0; off < r->nframes && !rc; off += len) {
		len = vcma_core_zeroed_run(&d->core, r->mfn + off, r->nframes - off, &zero);
		if (!zero)
			rc = vcmad_mem_clear(&d->be, r->mfn + off, len);
	}
	vcma_core_take_zeroed(&d->core, r->mfn, r->nframes); /* the owner writes them next */
	return rc;
}

static void sim_addr(const struct vcmad_guest *g, uint64_t mfn, uint64_t *gpa, uint64_t *bus)
{
	*bus = mfn << VCMA_PAGE_SHIFT;
	*gpa = sg(g)->window_gpa + *bus;
}

/* Called after the core freed the region: its frames are FREE again (a FREE taken in
 * the guest's turn: once the turn's answers and irq are out, .hold_frees). Zeroing
 * them releases the memory and lets the next sim_place skip it. A dead guest's regions
 * (it is being detached) are left to the scrubber, so that its reclaim is not held up
 * by punching every region it had (scrub.h). */
static void sim_clear(struct vcmad_guest *g, const struct vcma_region *r)
{
	struct vcmad *d = g->d;

	if (g->dead) {
		vcmad_scrub_add(d, r->mfn, r->nframes);
		return;
	}
	if (d->be.type->mem->zero(&d->be, r->mfn, r->nframes))
		return; /* not known zero: the next owner's place zeroes it */
	if (vcma_core_mark_zeroed(&d->core, r->mfn, r->nframes))
		log_err("sim: region at mfn %#llx is not free after its release", (unsigned long long)r->mfn);
}

static int sim_read(struct vcmad_guest *g, const struct vcma_region *r, uint64_t off, void *buf, size_t len)
{
	struct vcmad *d = g->d;

	return d->be.type->mem->read(&d->be, r->mfn, off, buf, len);
}

static void close_io(struct vcmad *d, struct sim_guest *s)
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

/* The guest's struct (and ours in it) is freed with its zombie: keep ours until then. */
static void sim_close(struct vcmad_guest *g, bool keep_memory)
{
	close_io(g->d, sg(g));
}

/* ---- the VM of a VMM ---- */

static void vm_pin(void *owner, struct vcmad_vm *vm, uint32_t seq, const struct vcmad_run *runs, uint32_t n)
{
	vcmad_pin(vm, seq, runs, n);
}

static void vm_lost(void *owner, struct vcmad_vm *vm, const char *why, bool violation)
{
	struct vcmad_guest *g = owner;

	if (violation)
		vcmad_guest_kill(g, why);
	else
		vcmad_guest_detach(g, why);
}

static const struct vcmad_vm_owner_ops vm_owner = {
	.pin = vm_pin,
	.lost = vm_lost,
};

/* ---- attach ---- */

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
	n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(*rsp) ? 0 : -EIO;
}

static void refuse(struct vcmad *d, int fd, int32_t status, const char *why)
{
	static struct vcma_ratelimit rl;
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP, .status = status,
	};

	d->stats.attach_refused++;
	/* a client can be refused as fast as it connects: rate-limited */
	if (vcma_ratelimit_ok(&rl, 20, 10ull * 1000000000ull))
		log_warn("attach refused: %s", why);
	send_rsp(fd, &rsp, NULL, 0); /* best effort: the client may be gone */
}

/* runs as messages of type `type` in the P2M layout (P2M: {gfn, mfn, count}; REGIONS:
 * {handle, mfn, frames}), VCMA_SIM_P2M_RUNS a message, unused entries zero. */
static int send_runs(int sock, uint16_t type, const struct vcmad_run *runs, uint32_t nruns)
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
		m->type = type;
		for (; i < nruns && m->nruns < VCMA_SIM_P2M_RUNS; i++) {
			m->run[m->nruns].gfn = runs[i].gfn;
			m->run[m->nruns].mfn = runs[i].mfn;
			m->run[m->nruns].count = runs[i].count;
			m->nruns++;
		}
		n = send(sock, m, sizeof(*m), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n != (ssize_t)sizeof(*m))
			rc = n < 0 ? -errno : -EIO;
	}
	free(m);
	return rc;
}

/* Is this peer as trusted as vcmad itself (it could read vcmad's memory anyway)? */
static bool privileged(uint32_t uid)
{
	return uid == 0 || uid == (uint32_t)geteuid();
}

/*
 * Who the client may be (PROTOCOL.md §9.1, Identity): the name decides, and the
 * peer's credentials, never what the attach message claims about itself.
 *   - a name expected for a QEMU guest, or reserved: nobody;
 *   - a name expected as a sim guest ([guest NAME] backend = sim): a privileged peer
 *     or one of its users; the class is the config's; VMM only with vmm = yes;
 *   - any other name: a privileged peer as it says; others (with open_attach) as a
 *     plain guest without a class;
 *   - a name attached already: nobody (BUSY).
 * VCMA_ST_OK with *gc set (NULL: unconfigured), or a status with *why for the log.
 */
static int32_t identity(struct vcmad *d, uint32_t uid, const struct vcma_sim_attach *a,
			const struct vcmad_guest_conf **gc, const char **why)
{
	const struct vcmad_guest_conf *conf = vcmad_guest_known(d, a->name);
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

/* The guest's shared area (ring memfd, sealed) and eventfds. */
static int guest_io(struct vcmad_guest *g, struct sim_guest *s)
{
	const struct vcmad_limits *lim = &g->d->conf.limits;

	s->shm_size = vcma_ring_shm_size(lim->ring_slots, VCMA_DEFAULT_EVT_SLOTS);
	s->shm_fd = memfd_create("vcma-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (s->shm_fd < 0 || ftruncate(s->shm_fd, (off_t)s->shm_size) ||
	    fcntl(s->shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		return -errno;
	s->shm = mmap(NULL, s->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, s->shm_fd, 0);
	if (s->shm == MAP_FAILED) {
		s->shm = NULL;
		return -errno;
	}
	s->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->kick_fd < 0 || s->irq_fd < 0)
		return -errno;
	return vcmad_guest_ring_init(g, s->shm, s->shm_size, 0, 0);
}

/* Make the guest (and for a VMM its VM): NULL with *status on failure. */
static struct vcmad_guest *guest_make(struct vcmad *d, struct vcmad_link *l, const struct vcma_sim_attach *a,
				      const struct vcmad_guest_conf *gc, uint32_t uid, int32_t *status)
{
	struct sim_guest *s = calloc(1, sizeof(*s));
	struct vcmad_guest *g;
	int rc;

	*status = VCMA_ST_NO_MEMORY;
	if (!s)
		return NULL;
	s->sock = s->kick_fd = s->irq_fd = s->shm_fd = -1;
	s->sock_w.fd = s->kick_w.fd = -1;
	g = vcmad_guest_new(d, l, a->name, a->devclass, gc, uid, status);
	if (!g) {
		free(s);
		return NULL;
	}
	g->link_priv = s;
	s->g = g;
	g->role = a->role == VCMA_SIM_ROLE_VMM ? "vmm" : "guest";
	*status = VCMA_ST_NO_MEMORY;
	if (guest_io(g, s))
		goto fail;
	if (a->role == VCMA_SIM_ROLE_VMM) {
		rc = vcmad_vm_new(d, g->id, g->name, a->ram_bytes >> VCMA_PAGE_SHIFT, &vm_owner, g, &g->vm);
		if (rc < 0) {
			log_warn("attach %s: cannot back %llu MiB of guest RAM: %s", a->name,
				 (unsigned long long)(a->ram_bytes >> 20), strerror(-rc));
			goto fail;
		}
	}
	/* regions appear above RAM, at window_gpa + machine address */
	s->window_gpa = (a->ram_bytes + (1ull << 30) - 1) & ~((1ull << 30) - 1);
	if (s->window_gpa < (1ull << 30))
		s->window_gpa = 1ull << 30;
	*status = VCMA_ST_OK;
	return g;
fail:
	if (g->vm)
		vcmad_vm_free(g->vm);
	close_io(d, s);
	vcmad_guest_discard(g); /* frees s with it */
	return NULL;
}

/* A new reattach token for g, recorded, and sent (PROTOCOL.md §9.1, TOKEN). */
static int send_token(struct vcmad *d, int fd, struct vcmad_guest *g)
{
	struct vcma_sim_token t = { .magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_TOKEN,
				    .guest_id = g->id, .grace_ms = d->conf.reattach_grace_ms };
	ssize_t n;

	if (getrandom(g->token, sizeof(g->token), 0) != (ssize_t)sizeof(g->token))
		return -EIO;
	memcpy(t.token, g->token, sizeof(t.token));
	vcmad_durable_guest_token(d, g->id, g->token);
	n = send(fd, &t, sizeof(t), MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n != (ssize_t)sizeof(t))
		return n < 0 ? -errno : -EIO;
	return 0;
}

static int cmp_handle(const void *a, const void *b)
{
	const struct vcmad_run *x = a, *y = b;

	return x->gfn < y->gfn ? -1 : x->gfn > y->gfn;
}

/* g's regions as runs {handle, first mfn, frames}, sorted by handle (*out malloc'd). */
static int held_regions(struct vcmad *d, const struct vcmad_guest *g, struct vcmad_run **out, uint32_t *n)
{
	const struct vcma_region *r;
	uint32_t cursor = 0, k = 0;
	struct vcmad_run *v = calloc(g->rq.nregions + 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	while ((r = vcma_regions_next(&d->core.regions, &cursor)))
		if (r->guest == g->id && k < g->rq.nregions)
			v[k++] = (struct vcmad_run){ .gfn = r->handle, .mfn = r->mfn, .count = r->nframes };
	qsort(v, k, sizeof(*v), cmp_handle);
	*out = v;
	*n = k;
	return 0;
}

static void conn_unlink(struct sim_link *sl, struct conn *c)
{
	for (struct conn **pp = &sl->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	sl->nconns--;
	vcma_loop_del(&sl->d->loop, &c->w);
	free(c->runs);
	free(c);
}

/* The guest taken back is this client again (PROTOCOL.md §9.1 "Restart and reattach"):
 * a fresh ring, its regions, a VM's p2m as its VMM has it. */
static void reattach(struct sim_link *sl, int fd, uint32_t uid, const struct vcma_sim_reattach *ra,
		     const struct vcmad_run *runs, uint32_t nruns)
{
	struct vcmad *d = sl->d;
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP,
	};
	struct vcmad_guest *g = vcmad_restore_find(d, ra->guest_id);
	bool vmm = ra->role == VCMA_SIM_ROLE_VMM;
	struct vcmad_run *held = NULL;
	uint32_t nheld = 0, cursor = 0;
	const struct vcma_region *r;
	const char *why = "";
	struct sim_guest *s;
	char name[VCMA_SIM_NAME_LEN + 1];
	int fds[4], rc;

	memcpy(name, ra->name, VCMA_SIM_NAME_LEN);
	name[VCMA_SIM_NAME_LEN] = 0;
	if (d->closing) {
		refuse(d, fd, VCMA_ST_SHUTDOWN, "vcmad is shutting down");
		close(fd);
		return;
	}
	if (!g || !vcmad_restore_token_ok(g, ra->token) || strcmp(g->name, name) || g->uid != uid ||
	    vmm != (g->vm != NULL) || (vmm && ra->ram_bytes != g->vm->ctl.ram_frames << VCMA_PAGE_SHIFT)) {
		/* which of these did not match is not the client's business */
		refuse(d, fd, VCMA_ST_NO_REGION, "reattach: no guest taken back with that id, token and identity");
		close(fd);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		refuse(d, fd, VCMA_ST_NO_MEMORY, "reattach: out of memory");
		close(fd);
		return;
	}
	s->sock = fd;
	s->kick_fd = s->irq_fd = s->shm_fd = -1;
	s->sock_w.fd = s->kick_w.fd = -1;
	s->g = g;
	/* until it is taken (below) the guest stays on the restore link: a failure here
	 * reclaims it as one that never came back */
	rc = guest_io(g, s);
	if (rc)
		why = "cannot set up its ring";
	else if (vmm && (rc = vcmad_vm_adopt_p2m(g->vm, runs, nruns, &why)))
		rc = VCMA_ST_INVALID; /* its p2m: not the host's failure */
	if (rc) {
		refuse(d, fd, rc == VCMA_ST_INVALID ? VCMA_ST_INVALID : VCMA_ST_INTERNAL, why);
		close_io(d, s); /* fd too */
		free(s);
		vcmad_guest_detach(g, why);
		return;
	}
	/* taken back: with the last VM, what nobody owns is zeroed (restore.h) */
	vcmad_restore_take(g, sl->l, s);
	g->role = vmm ? "vmm" : "guest";
	if (vmm)
		vcmad_vm_set_owner(g->vm, &vm_owner, g);
	s->window_gpa = ((vmm ? ra->ram_bytes : 0) + (1ull << 30) - 1) & ~((1ull << 30) - 1);
	if (s->window_gpa < (1ull << 30))
		s->window_gpa = 1ull << 30;
	while ((r = vcma_regions_next(&d->core.regions, &cursor)))
		if (r->guest == g->id)
			vcma_regions_set_gpa(&d->core.regions, g->id, r->handle, s->window_gpa + (r->mfn << VCMA_PAGE_SHIFT));
	rc = held_regions(d, g, &held, &nheld);
	if (rc) {
		why = "out of memory";
		goto fail;
	}
	rsp.status = VCMA_ST_OK;
	rsp.guest_id = g->id;
	rsp.shm_size = s->shm_size;
	rsp.window_gpa = s->window_gpa;
	rsp.nruns = nheld;
	fds[0] = s->shm_fd;
	fds[1] = s->kick_fd;
	fds[2] = s->irq_fd;
	rsp.nfds = 3;
	if (vmm) {
		rsp.ram_frames = g->vm->ctl.ram_frames;
		rsp.machine_bytes = d->conf.machine_bytes;
		fds[3] = vcmad_sim_memfd(&d->be);
		rsp.nfds = 4;
	}
	rc = send_rsp(fd, &rsp, fds, rsp.nfds);
	if (!rc)
		rc = send_token(d, fd, g);
	if (!rc)
		rc = send_runs(fd, VCMA_SIM_MSG_REGIONS, held, nheld);
	free(held);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &s->kick_w, s->kick_fd, EPOLLIN, kick_cb);
	if (!rc)
		rc = vmm ? vcmad_sim_vmm_start(&s->vmm, &g->vm->ctl, &d->loop, fd, d->conf.precopy ? ra->flags : 0)
			 : vcma_loop_add(&d->loop, &s->sock_w, fd, EPOLLIN | EPOLLRDHUP, sock_cb);
	if (rc) {
		why = strerror(-rc);
		goto fail_sent;
	}
	log_info("guest %u (%s) reattached %llu ms after the restart: %u region(s)%s kept", g->id, g->name,
		 (unsigned long long)((vcmad_now(d) - d->restore.since_ns) / 1000000), nheld,
		 vmm ? " and its RAM" : "");
	vcmad_guest_started(g);
	return;
fail:
	refuse(d, fd, VCMA_ST_INTERNAL, why);
fail_sent:
	log_warn("reattach %s: %s", g->name, why);
	vcmad_guest_detach(g, "reattach failed"); /* closes fd with the guest's I/O */
}

/* A REATTACH arrived on c: a plain guest's is whole, a VMM's p2m follows. */
static void reattach_begin(struct sim_link *sl, struct conn *c, const void *msg, size_t len)
{
	struct vcmad *d = sl->d;
	const char *why;
	int32_t status;
	int fd = c->fd;

	if (vcmad_sim_reattach_check(msg, len, d->conf.limits.max_ram, &c->ra, &status, &why)) {
		conn_unlink(sl, c);
		refuse(d, fd, status, why);
		close(fd);
		return;
	}
	if (c->ra.role != VCMA_SIM_ROLE_VMM) {
		uint32_t uid = c->uid;
		struct vcma_sim_reattach copy = c->ra;

		conn_unlink(sl, c);
		reattach(sl, fd, uid, &copy, NULL, 0);
		return;
	}
	c->runs = calloc(c->ra.nruns, sizeof(*c->runs));
	if (!c->runs) {
		conn_unlink(sl, c);
		refuse(d, fd, VCMA_ST_NO_MEMORY, "reattach: out of memory");
		close(fd);
		return;
	}
	c->reattaching = true;
	c->got = 0;
	collect(sl, c);
}

/* Read what has come of a reattaching VMM's p2m; the whole of it makes the reattach. */
static void collect(struct sim_link *sl, struct conn *c)
{
	struct vcmad *d = sl->d;
	struct vcma_sim_p2m m;
	struct vcma_sim_run part[VCMA_SIM_P2M_RUNS];
	const char *why;
	uint32_t k;
	int fd = c->fd;

	while (c->got < c->ra.nruns) {
		ssize_t n = recv(fd, &m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return; /* more later (or the attach deadline closes it) */
		if (n <= 0 || vcmad_sim_p2m_msg_check(&m, (size_t)n, c->ra.nruns - c->got, part, &k, &why)) {
			conn_unlink(sl, c);
			if (n > 0)
				refuse(d, fd, VCMA_ST_INVALID, why);
			close(fd);
			return;
		}
		memcpy(&c->runs[c->got], part, k * sizeof(*part));
		c->got += k;
	}
	if (vcmad_sim_p2m_check(c->runs, c->got, c->ra.ram_bytes / VCMA_PAGE_SIZE, d->conf.machine_bytes / VCMA_PAGE_SIZE,
				&why)) {
		conn_unlink(sl, c);
		refuse(d, fd, VCMA_ST_INVALID, why);
		close(fd);
		return;
	}
	{
		struct vcma_sim_reattach ra = c->ra;
		struct vcmad_run *runs = calloc(c->got + 1, sizeof(*runs));
		uint32_t uid = c->uid, n = c->got;

		for (uint32_t i = 0; runs && i < n; i++)
			runs[i] = (struct vcmad_run){ c->runs[i].gfn, c->runs[i].mfn, c->runs[i].count };
		conn_unlink(sl, c);
		if (!runs) {
			refuse(d, fd, VCMA_ST_NO_MEMORY, "reattach: out of memory");
			close(fd);
			return;
		}
		reattach(sl, fd, uid, &ra, runs, n);
		free(runs);
	}
}

static void attach(struct sim_link *sl, struct conn *c)
{
	struct vcmad *d = sl->d;
	struct vcmad_link *l = sl->l;
	struct vcma_sim_attach a;
	struct vcma_sim_attach_rsp rsp = {
		.magic = VCMA_SIM_MAGIC, .version = VCMA_SIM_VERSION, .type = VCMA_SIM_MSG_ATTACH_RSP,
	};
	const struct vcmad_guest_conf *gc;
	struct vcmad_guest *g;
	struct sim_guest *s;
	struct vcmad_run *runs = NULL;
	uint32_t nruns = 0, uid = c->uid;
	int fd = c->fd, fds[4], rc;
	int32_t pid = c->pid, status;
	const char *why = "";
	char msg[160];
	ssize_t n;

	if (c->reattaching) {
		collect(sl, c);
		return;
	}
	n = recv(fd, &a, sizeof(a), MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n == (ssize_t)sizeof(struct vcma_sim_reattach) && a.magic == VCMA_SIM_MAGIC &&
	    a.type == VCMA_SIM_MSG_REATTACH) {
		reattach_begin(sl, c, &a, (size_t)n);
		return;
	}
	/* from here on the connection either becomes a guest or is closed */
	conn_unlink(sl, c);
	if (n != (ssize_t)sizeof(a)) {
		if (n != 0)
			refuse(d, fd, VCMA_ST_INVALID, "attach message of the wrong size");
		close(fd);
		return;
	}
	if (a.magic != VCMA_SIM_MAGIC || a.type != VCMA_SIM_MSG_ATTACH ||
	    (a.flags & ~(a.role == VCMA_SIM_ROLE_VMM ? VCMA_SIM_F_ALL : VCMA_SIM_F_GUEST))) {
		refuse(d, fd, VCMA_ST_INVALID, "bad magic, type or flags in attach message");
		close(fd);
		return;
	}
	if (a.version != VCMA_SIM_VERSION) {
		refuse(d, fd, VCMA_ST_VERSION, "unsupported sim transport version");
		close(fd);
		return;
	}
	if (!vcma_name_field_ok(a.name, sizeof(a.name), false) ||
	    !vcma_name_field_ok(a.devclass, sizeof(a.devclass), true) ||
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
	if (status == VCMA_ST_OK && a.role == VCMA_SIM_ROLE_VMM && vcmad_restore_holding(d)) {
		status = VCMA_ST_BUSY;
		why = "vcmad is waiting for the VMs it took back after a restart";
	}
	if (status == VCMA_ST_OK && a.role == VCMA_SIM_ROLE_VMM && vcmad_sim_memfd(&d->be) < 0) {
		status = VCMA_ST_ACCESS;
		why = "the backend has no simulated machine memory to map";
	}
	if (status != VCMA_ST_OK) {
		snprintf(msg, sizeof(msg), "pid %d uid %u may not attach as %s%s%s: %s", (int)pid, (unsigned int)uid,
			 a.role == VCMA_SIM_ROLE_VMM ? "VMM " : "", a.name, a.devclass[0] ? " with a class" : "", why);
		refuse(d, fd, status, msg);
		close(fd);
		return;
	}
	g = guest_make(d, l, &a, gc, uid, &status);
	if (!g) {
		refuse(d, fd, status, status == VCMA_ST_LIMIT ? "too many guests" : "out of resources");
		close(fd);
		return;
	}
	s = sg(g);
	s->sock = fd;
	rsp.status = VCMA_ST_OK;
	rsp.guest_id = g->id;
	rsp.shm_size = s->shm_size;
	rsp.window_gpa = s->window_gpa;
	fds[0] = s->shm_fd;
	fds[1] = s->kick_fd;
	fds[2] = s->irq_fd;
	rsp.nfds = 3;
	rc = 0;
	if (g->vm) {
		rc = vcmad_vm_p2m_runs(g->vm, &runs, &nruns);
		rsp.ram_frames = g->vm->ctl.ram_frames;
		rsp.machine_bytes = d->conf.machine_bytes;
		rsp.nruns = nruns;
		fds[3] = vcmad_sim_memfd(&d->be);
		rsp.nfds = 4;
	}
	if (!rc)
		rc = send_rsp(fd, &rsp, fds, rsp.nfds);
	if (!rc && (a.flags & VCMA_SIM_F_REATTACH))
		rc = send_token(d, fd, g);
	if (!rc && g->vm)
		rc = send_runs(fd, VCMA_SIM_MSG_P2M, runs, nruns);
	free(runs);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &s->kick_w, s->kick_fd, EPOLLIN, kick_cb);
	/* a VMM's socket carries its VMM channel, which the backend reads */
	if (!rc)
		rc = g->vm ? vcmad_sim_vmm_start(&s->vmm, &g->vm->ctl, &d->loop, fd, d->conf.precopy ? a.flags : 0)
			   : vcma_loop_add(&d->loop, &s->sock_w, fd, EPOLLIN | EPOLLRDHUP, sock_cb);
	if (rc) {
		log_warn("attach %s: %s", g->name, strerror(-rc));
		d->stats.attaches++;
		vcmad_guest_detach(g, "attach failed");
		return;
	}
	log_info("guest %u (%s%s%s) attached as %s%s%s%s", g->id, g->name, g->devclass[0] ? ", class " : "", g->devclass,
		 g->vm ? "VM" : "guest", g->vm ? " with RAM" : "",
		 g->vm && g->vm->ctl.one_trip ? ", one-trip pauses and drops" : "",
		 g->vm && g->vm->ctl.dirty_log ? ", dirty logging (pre-copy)" : "");
	vcmad_guest_started(g);
}

static void conn_cb(struct vcma_watch *w, uint32_t events)
{
	struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, w));

	attach(c->sl, c);
}

static void conn_close(struct sim_link *sl, struct conn *c)
{
	for (struct conn **pp = &sl->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	sl->nconns--;
	vcma_loop_del(&sl->d->loop, &c->w);
	close(c->fd);
	free(c->runs);
	free(c);
}

/* Close connections that never attached (all of them when `all`), and wait for the
 * next deadline. */
static void reap_conns(struct sim_link *sl, bool all)
{
	uint64_t now = vcmad_now(sl->d), next = UINT64_MAX;
	struct conn *c = sl->conns, *nx;

	for (; c; c = nx) {
		nx = c->next;
		if (all || now >= c->deadline_ns) {
			if (!all)
				log_warn("closing a connection that did not attach within 5 s");
			conn_close(sl, c);
		} else if (c->deadline_ns < next) {
			next = c->deadline_ns;
		}
	}
	if (next != UINT64_MAX)
		vcma_timer_arm(&sl->d->loop, &sl->reap, next);
}

static void reap_cb(struct vcma_timer *t)
{
	reap_conns((struct sim_link *)((char *)t - offsetof(struct sim_link, reap)), false);
}

static void accept_cb(struct vcma_watch *w, uint32_t events)
{
	struct sim_link *sl = (struct sim_link *)((char *)w - offsetof(struct sim_link, w));
	struct vcmad *d = sl->d;

	for (;;) {
		int fd = accept4(sl->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct ucred cr;
		socklen_t crlen = sizeof(cr);
		struct conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		c = sl->nconns < MAX_PENDING_CONNS ? calloc(1, sizeof(*c)) : NULL;
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
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen)) {
			log_warn("accept: SO_PEERCRED: %s", strerror(errno));
			close(fd);
			free(c);
			continue;
		}
		c->sl = sl;
		c->uid = cr.uid;
		c->gid = cr.gid;
		c->pid = cr.pid;
		c->fd = fd;
		c->deadline_ns = vcmad_now(d) + ATTACH_TIMEOUT_NS;
		if (vcma_loop_add(&d->loop, &c->w, fd, EPOLLIN | EPOLLRDHUP, conn_cb)) {
			close(fd);
			free(c);
			continue;
		}
		c->next = sl->conns;
		sl->conns = c;
		sl->nconns++;
		if (!sl->reap.armed)
			vcma_timer_arm(&d->loop, &sl->reap, c->deadline_ns);
	}
}

/* ---- the link ---- */

static int sim_start(struct vcmad_link *l)
{
	struct vcmad *d = l->d;
	struct sim_link *sl = calloc(1, sizeof(*sl));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if (!sl)
		return -ENOMEM;
	sl->d = d;
	sl->l = l;
	sl->fd = -1;
	vcma_timer_init(&sl->reap, reap_cb);
	l->priv = sl;
	if (vcmad_sim_memfd(&d->be) < 0) {
		/* its guests share simulated machine memory, which only the sim backend has */
		log_info("sim attach socket: not served with the %s backend", d->be.type->name);
		return 0;
	}
	if ((size_t)snprintf(sl->path, sizeof(sl->path), "%s/%s", d->conf.runtime_dir, VCMA_SIM_SOCKET) >=
	    sizeof(sa.sun_path)) {
		log_err("socket path %s/%s is too long", d->conf.runtime_dir, VCMA_SIM_SOCKET);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, sl->path, strlen(sl->path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (unlink(sl->path) && errno != ENOENT) {
		rc = -errno;
		log_err("cannot remove stale %s: %s", sl->path, strerror(errno));
		close(fd);
		return rc;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(sl->path, 0660) || listen(fd, 64)) {
		rc = -errno;
		log_err("cannot listen on %s: %s", sl->path, strerror(errno));
		close(fd);
		return rc;
	}
	if (d->conf.attach_group[0]) {
		/* who may connect at all; what a peer may attach as is decided per attach */
		struct group gr, *res = NULL;
		char buf[1024];

		if (getgrnam_r(d->conf.attach_group, &gr, buf, sizeof(buf), &res) || !res ||
		    chown(sl->path, (uid_t)-1, res->gr_gid)) {
			rc = res ? -errno : -ENOENT;
			log_err("attach_group %s: %s", d->conf.attach_group, res ? strerror(errno) : "no such group");
			close(fd);
			unlink(sl->path);
			return rc;
		}
	}
	sl->fd = fd;
	rc = vcma_loop_add(&d->loop, &sl->w, fd, EPOLLIN, accept_cb);
	if (!rc)
		log_notice("serving on %s (backend %s, %llu MiB machine memory, %u pool(s))", sl->path, d->be.type->name,
			   (unsigned long long)(d->conf.machine_bytes >> 20), d->core.npools);
	return rc;
}

static void sim_stop(struct vcmad_link *l)
{
	struct sim_link *sl = l->priv;

	if (!sl)
		return;
	reap_conns(sl, true);
	vcma_timer_cancel(&l->d->loop, &sl->reap);
	if (sl->fd >= 0) {
		vcma_loop_del(&l->d->loop, &sl->w);
		close(sl->fd);
		unlink(sl->path);
	}
	free(sl);
	l->priv = NULL;
}

/* A configured sim guest is only a name and an identity until it attaches. */
static int sim_expect(struct vcmad_link *l, const struct vcmad_guest_conf *gc)
{
	return 0;
}

static void sim_forget(struct vcmad_link *l, const struct vcmad_guest_conf *gc)
{
}

const struct vcmad_link_ops vcmad_link_sim = {
	.name = "sim",
	.kind = VCMAD_GUEST_SIM,
	.start = sim_start,
	.stop = sim_stop,
	.expect = sim_expect,
	.forget = sim_forget,
	.notify = sim_notify,
	.place = sim_place,
	.addr = sim_addr,
	.clear = sim_clear,
	.hold_frees = true,
	.read = sim_read,
	.close = sim_close,
	.describe = NULL,
};
