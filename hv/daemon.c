// SPDX-License-Identifier: MIT
/*
 * daemon.c - vcmad's lifecycle: lay out machine memory and pools, listen, serve,
 * shut down cleanly.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "balloon.h"
#include "ctl/ctl.h"
#include "daemon.h"
#include "durable.h"
#include "guest.h"
#include "libvirt.h"
#include "log.h"
#include "peerfd.h"
#include "relend.h"
#include "restore.h"
#include "scrub.h"
#include "vacate.h"
#include "vm.h"
#include "vmem.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define AUTO_POOL_ALIGN 512ull /* frames: auto-placed pools start on 2 MiB boundaries */
#define SLOT_SPACING_SHIFT 32u /* holds_frames backends: pool i's slots start at (i+1) << 32 */

struct placed {
	uint32_t idx;
	uint64_t mfn, frames;
};

static int cmp_placed(const void *a, const void *b)
{
	const struct placed *x = a, *y = b;

	return x->mfn < y->mfn ? -1 : x->mfn > y->mfn;
}

/* Resolve pool sizes against machine memory and place them: explicit bases where
 * given, the rest packed downward from the top (where CMA puts its areas too). */
static int place_pools(struct vcmad *d, struct placed *pl)
{
	const struct vcmad_conf *c = &d->conf;
	uint64_t frames = c->machine_bytes >> VCMA_PAGE_SHIFT, top = frames;
	char err[256];

	for (uint32_t i = 0; i < c->npools; i++) {
		uint64_t bytes;

		if (vcma_pool_config_resolve_size(&c->pool[i], c->machine_bytes, &bytes, err, sizeof(err))) {
			log_err("%s", err);
			return -EINVAL;
		}
		pl[i].idx = i;
		pl[i].frames = bytes >> VCMA_PAGE_SHIFT;
		pl[i].mfn = UINT64_MAX;
		if (c->pool[i].has_base) {
			pl[i].mfn = c->pool[i].base >> VCMA_PAGE_SHIFT;
			if (pl[i].mfn + pl[i].frames > frames) {
				log_err("pool %s: base %#llx + size %llu MiB lies beyond machine memory (%llu MiB)",
					c->pool[i].name, (unsigned long long)c->pool[i].base,
					(unsigned long long)(bytes >> 20), (unsigned long long)(c->machine_bytes >> 20));
				return -EINVAL;
			}
		}
	}
	if (d->be.type && d->be.type->holds_frames) {
		/* the hypervisor picks frames: pools are slot ranges, far apart and aligned
		 * beyond any region, that the backend backs with frames it holds */
		for (uint32_t i = 0; i < c->npools; i++) {
			if (c->pool[i].has_base) {
				log_err("pool %s: base is a machine address, and on %s the hypervisor picks machine "
					"frames: remove it", c->pool[i].name, d->be.type->name);
				return -EINVAL;
			}
			pl[i].mfn = (uint64_t)(i + 1) << SLOT_SPACING_SHIFT;
		}
	}
	for (uint32_t i = 0; i < c->npools; i++) {
		if (pl[i].mfn != UINT64_MAX)
			continue;
		for (;;) {
			uint64_t start = top >= pl[i].frames ? (top - pl[i].frames) & ~(AUTO_POOL_ALIGN - 1) : UINT64_MAX;
			bool clash = false;

			if (start == UINT64_MAX) {
				log_err("pool %s: does not fit in machine memory beside the other pools", c->pool[i].name);
				return -ENOSPC;
			}
			for (uint32_t j = 0; j < c->npools; j++)
				if (j != i && pl[j].mfn != UINT64_MAX && start < pl[j].mfn + pl[j].frames &&
				    pl[j].mfn < start + pl[i].frames) {
					top = pl[j].mfn; /* slide below the explicit pool */
					clash = true;
				}
			if (!clash) {
				pl[i].mfn = start;
				top = start;
				break;
			}
		}
	}
	qsort(pl, c->npools, sizeof(*pl), cmp_placed);
	for (uint32_t i = 1; i < c->npools; i++)
		if (pl[i - 1].mfn + pl[i - 1].frames > pl[i].mfn) {
			log_err("pools %s and %s overlap", c->pool[pl[i - 1].idx].name, c->pool[pl[i].idx].name);
			return -EINVAL;
		}
	return 0;
}

int vcmad_init(struct vcmad *d, const struct vcmad_conf *conf)
{
	const struct vcmad_backend_type *bt = vcmad_backend_find(conf->backend);

#ifndef VCMA_HAVE_LIBVIRT
	if (conf->libvirt.uri[0]) {
		log_err("[libvirt] uri is set, but this vcmad is built without libvirt support "
			"(apt-get install libvirt-dev, then rebuild; meson option libvirt)");
		return -EOPNOTSUPP;
	}
#endif
	if (!bt) {
		log_err("backend %s is not built into this vcmad%s", conf->backend,
			!strcmp(conf->backend, "xen") ? " (it was built without libxen-dev: install it and rebuild)" : "");
		return -EINVAL;
	}
	return vcmad_init_backend(d, conf, bt);
}

int vcmad_init_backend(struct vcmad *d, const struct vcmad_conf *conf, const struct vcmad_backend_type *bt)
{
	struct placed pl[VCMA_MAX_POOLS];
	struct vcma_pool_range ranges[VCMA_MAX_POOLS];
	char err[256];
	int rc;

	memset(d, 0, sizeof(*d));
	d->conf = *conf;
	d->signal_fd = -1;
	d->loop.epfd = -1;
	if (vcmad_conf_validate(&d->conf, err, sizeof(err))) {
		log_err("%s", err);
		return -EINVAL;
	}
	rc = vcma_core_init(&d->core);
	if (rc)
		return rc;
	d->be.type = bt;
	d->be.loop = &d->loop;
	if (bt->mem->probe) {
		/* the hypervisor owns machine memory: reach it, and learn its size */
		uint64_t bytes = 0;

		rc = bt->mem->probe(&d->be, &bytes);
		if (rc) {
			bt->mem->fini(&d->be);
			d->be.type = NULL;
			goto fail_core;
		}
		d->conf.machine_bytes = bytes;
	}
	rc = place_pools(d, pl);
	if (rc) {
		if (bt->mem->probe)
			bt->mem->fini(&d->be);
		d->be.type = NULL;
		goto fail_core;
	}
	for (uint32_t i = 0; i < d->conf.npools; i++) {
		ranges[i].mfn = pl[i].mfn;
		ranges[i].count = pl[i].frames;
		ranges[i].cfg = &d->conf.pool[pl[i].idx];
	}
	/* With ownership recorded, machine memory must outlive vcmad as its record does:
	 * a file in the runtime directory (tmpfs: gone with the host, as RAM is). */
	{
		char state[256];

		vcmad_conf_state_dir(&d->conf, state, sizeof(state));
		if (state[0] && !bt->holds_frames && !bt->mem->probe) {
			rc = vcmad_mkdir_p(d->conf.runtime_dir, 0755);
			if (rc) {
				log_err("cannot create runtime directory %s: %s", d->conf.runtime_dir, strerror(-rc));
				d->be.type = NULL;
				goto fail_core;
			}
			if (d->conf.machine_file[0])
				snprintf(d->be.mem_file, sizeof(d->be.mem_file), "%s", d->conf.machine_file);
			else
				snprintf(d->be.mem_file, sizeof(d->be.mem_file), "%s/machine.mem", d->conf.runtime_dir);
		}
	}
	rc = bt->mem->init(&d->be, d->conf.machine_bytes, ranges, d->conf.npools);
	if (rc) {
		if (bt->holds_frames)
			log_err("%s backend: cannot hold the pools: %s", bt->name, strerror(-rc));
		else
			log_err("%s backend: cannot create %llu MiB of machine memory: %s", bt->name,
				(unsigned long long)(d->conf.machine_bytes >> 20), strerror(-rc));
		d->be.type = NULL;
		goto fail_core;
	}
	/* pools join the core in configuration order, so pool indices follow the file */
	for (uint32_t i = 0; i < d->conf.npools; i++) {
		for (uint32_t j = 0; j < d->conf.npools; j++) {
			if (pl[j].idx != i)
				continue;
			rc = vcma_core_add_pool(&d->core, &d->conf.pool[i], pl[j].mfn, pl[j].frames);
			if (rc < 0) {
				log_err("pool %s: %s", d->conf.pool[i].name, strerror(-rc));
				goto fail_be;
			}
			if (bt->holds_frames)
				log_info("pool %s: %llu MiB held by the %s backend, %s%s", d->conf.pool[i].name,
					 (unsigned long long)(pl[j].frames >> 8), bt->name,
					 d->conf.pool[i].mode == VCMA_POOL_SHARED ? "shared" : "exclusive to ",
					 d->conf.pool[i].mode == VCMA_POOL_SHARED ? "" : d->conf.pool[i].bind_name);
			else
				log_info("pool %s: %llu MiB at machine address %#llx, %s%s", d->conf.pool[i].name,
					 (unsigned long long)(pl[j].frames >> 8), (unsigned long long)(pl[j].mfn << 12),
					 d->conf.pool[i].mode == VCMA_POOL_SHARED ? "shared" : "exclusive to ",
					 d->conf.pool[i].mode == VCMA_POOL_SHARED ? "" : d->conf.pool[i].bind_name);
		}
	}
	rc = vcmad_guests_init(d);
	if (rc)
		goto fail_be;
	vcmad_vacate_init(d);
	vcmad_relend_init(d);
	vcmad_scrub_init(d);
	vcmad_balloon_init(d);
	d->links[0] = (struct vcmad_link){ .ops = &vcmad_link_sim, .d = d };
	d->links[1] = (struct vcmad_link){ .ops = &vcmad_link_ivshmem, .d = d };
#ifdef VCMA_HAVE_XEN
	d->links[2] = (struct vcmad_link){ .ops = &vcmad_link_xenbus, .d = d };
#endif
	return 0;
fail_be:
	bt->mem->fini(&d->be);
	d->be.type = NULL;
fail_core:
	vcma_core_fini(&d->core);
	return rc;
}

static void signal_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad *d = (struct vcmad *)((char *)w - offsetof(struct vcmad, signal_w));
	struct signalfd_siginfo si;

	while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			log_notice("%s received: shutting down", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			d->stop = true;
		}
	}
}

int vcmad_start(struct vcmad *d)
{
	sigset_t ss;
	int rc;

	rc = vcma_loop_init(&d->loop);
	if (rc)
		return rc;
	/* the watchdog that keeps a peer's eventfd from blocking this thread (peerfd.h) */
	rc = vcmad_peerfd_init();
	if (rc) {
		log_err("cannot set up the peer fd watchdog: %s", strerror(-rc));
		return rc;
	}
	rc = vcmad_mkdir_p(d->conf.runtime_dir, 0755);
	if (rc) {
		log_err("cannot create runtime directory %s: %s", d->conf.runtime_dir, strerror(-rc));
		return rc;
	}
	/* ownership is recorded from here on: before any guest can attach */
	rc = vcmad_durable_open(d);
	if (rc)
		return rc;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &ss, NULL))
		return -errno;
	sigdelset(&ss, SIGPIPE);
	d->signal_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	if (d->signal_fd < 0)
		return -errno;
	rc = vcma_loop_add(&d->loop, &d->signal_w, d->signal_fd, EPOLLIN, signal_cb);
	if (rc)
		return rc;
	d->relend.last_alloc_ns = vcmad_now(d); /* relending waits for quiet from now on */
	for (uint32_t i = 0; i < VCMAD_NLINKS; i++) {
		if (!d->links[i].ops)
			continue; /* not built in */
		rc = d->links[i].ops->start(&d->links[i]);
		if (rc)
			return rc;
	}
	/* the configured guests: a QEMU guest gets its socket now */
	for (uint32_t i = 0; i < d->conf.nguests; i++) {
		rc = vcmad_guest_expect(d, &d->conf.guests[i]);
		if (rc) {
			log_err("guest %s: %s", d->conf.guests[i].name, strerror(-rc));
			return rc;
		}
	}
	/* a previous run's guests, if it left any: before the loop runs, so nobody can
	 * attach first, and after the configured guests are known, so they get theirs */
	rc = vcmad_restore(d);
	if (rc)
		return rc;
	/* virtio-mem lenders connect to their devices from the loop */
	rc = vcmad_vmem_qmp_start(d);
	if (rc)
		return rc;
	rc = vcmad_ctl_start(d);
	if (rc)
		return rc;
	rc = vcmad_libvirt_start(d);
	if (rc)
		return rc;
	d->started = true;
	rc = vcmad_sd_notify("READY=1\nSTATUS=serving");
	if (rc)
		log_warn("sd_notify: %s", strerror(-rc));
	return 0;
}

void vcmad_request_stop(struct vcmad *d)
{
	d->stop = true;
}

/* The turn's work began at ns, unless it had begun already (stats loop_turn: from
 * there to the turn's end, however the work was found: the main epoll_wait or one of
 * the polls below, which also run handlers). With poll_us a turn includes the polling
 * after the requests it served. */
static void turn_begins(struct vcmad *d, uint64_t ns)
{
	if (!d->turn_start_ns)
		d->turn_start_ns = ns;
}

/*
 * Adaptive polling: for poll_us after the last served request, look at the rings
 * instead of sleeping, so a guest that follows up quickly is served without a
 * wake-up (about 20 us each way in a VM, machine-floors.md section 2).
 */
/* true if it served something: the turn's end (durable answers) must not wait for
 * the next event */
static bool spin_for_requests(struct vcmad *d)
{
	uint64_t end = d->last_active_ns + (uint64_t)d->conf.poll_us * 1000;
	bool served = false;

	while (vcmad_now(d) < end && !d->guests.runq) {
		for (uint32_t i = 0; i < d->conf.max_guests; i++) {
			struct vcmad_guest *g = d->guests.slot[i];

			if (g && !g->dead && !g->queued && vcma_ring_host_pending(&g->ring)) {
				turn_begins(d, vcmad_now(d));
				vcmad_guest_run(g);
				served = true;
			}
		}
		if (vcma_loop_once(&d->loop, 0) != 0) {
			turn_begins(d, d->loop.woke_ns);
			return true; /* handled: the turn ends in the main loop */
		}
		if (served && vcmad_durable_on(d))
			return true; /* its answers wait for the turn's commit */
		cpu_relax();
	}
	return served;
}

/*
 * A VM paused for a vacate is the costliest thing on the host, and a wake-up on this
 * machine can cost a pause as much as everything else in it: while a VM's PAUSED is
 * due, vcmad polls for it rather than sleeping, for at most half of max_pause_us. It
 * yields the CPU between looks: the VMM thread that must answer may be queued on this
 * very CPU (its wake-up of vcmad put vcmad there), and a spinner that does not yield
 * holds it off for a time slice. It stops once PAUSED is in: the last DIRTY that a
 * pre-copy pause still waits for needs the VMM thread's CPU for its scan. (Traced in
 * bench-vacate, 2 cores: with a plain spin the VMM read the DIRTY_READ waiting in its
 * socket 0.7-4 ms after it sent PAUSED, the tail of the idle VM's pauses. The VMM
 * polling for the REMAP_RESUME was tried too: a second spinner starved the others.)
 */
static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* (real time, not the loop's clock, which tests step by hand) */
static bool spin_while_paused(struct vcmad *d)
{
	uint64_t end = real_ns() + (uint64_t)d->conf.max_pause_us * 500;

	while (vcmad_vacate_pause_pending(d) && real_ns() < end) {
		if (vcma_loop_once(&d->loop, 0) != 0) {
			turn_begins(d, d->loop.woke_ns);
			return true; /* handled: the turn ends in the main loop */
		}
		sched_yield(); /* the VMM thread may be waiting for this very CPU */
	}
	return false;
}

/*
 * SIGTERM: every guest goes CLOSING and gets a SHUTDOWN event (PROTOCOL.md §3);
 * from now on each request is answered SHUTDOWN and no guest attaches, but regions
 * stay valid until their guest detaches. vcmad waits up to shutdown_grace_ms for the
 * guests to go, then exits without touching what the others still hold.
 */
static void begin_closing(struct vcmad *d)
{
	uint32_t n;

	d->closing = true;
	d->closing_until = vcmad_now(d) + (uint64_t)d->conf.shutdown_grace_ms * 1000000ull;
	vcmad_sd_notify("STOPPING=1");
	/* allocations waiting for a vacate are answered SHUTDOWN; windows released */
	vcmad_vacate_cancel_all(d);
	n = vcmad_guests_closing(d);
	if (n)
		log_notice("closing: %u guest(s) attached; waiting up to %u ms for them to detach", n,
			   d->conf.shutdown_grace_ms);
}

int vcmad_run_once(struct vcmad *d, int max_ms)
{
	int rc, tmo = max_ms;

	if (d->stop && !d->closing)
		begin_closing(d);
	if (d->closing) {
		uint64_t now = vcmad_now(d);

		if (!d->guests.n)
			return 0;
		if (now >= d->closing_until) {
			log_notice("closing: %u guest(s) still attached after %u ms; leaving them what they hold",
				   d->guests.n, d->conf.shutdown_grace_ms);
			return 0;
		}
		if (tmo < 0 || tmo > 50)
			tmo = 50;
	}
	if (d->conf.poll_us && !d->guests.runq && !d->closing && spin_for_requests(d))
		tmo = 0;
	if (!d->guests.runq && spin_while_paused(d))
		tmo = 0;
	if (d->guests.runq)
		tmo = 0;
	rc = vcma_loop_once(&d->loop, tmo);
	if (rc < 0) {
		log_err("epoll: %s", strerror(-rc));
		return rc;
	}
	/* guests left with requests after their turn get another one */
	vcmad_guests_run_queued(d);
	vcmad_vacate_reap(d);
	/* the turn's ownership changes on disk, then its held answers go out */
	vcmad_durable_turn_end(d);
	vcmad_guests_reap(d);
	turn_begins(d, d->loop.woke_ns);
	vcma_hist_record(&d->stats.loop_turn, vcmad_now(d) - d->turn_start_ns);
	d->turn_start_ns = 0;
	return 1;
}

int vcmad_run(struct vcmad *d)
{
	int rc;

	while ((rc = vcmad_run_once(d, -1)) > 0)
		;
	return rc;
}

void vcmad_fini(struct vcmad *d)
{
	if (!d->closing)
		vcmad_sd_notify("STOPPING=1");
	vcmad_vacate_cancel_all(d);
	/* guests still attached keep what they hold: vcmad's exit hands their memory to
	 * nobody else, so their regions stay valid until they let go (§3, CLOSING) */
	for (uint32_t i = 0; d->guests.slot && i < d->conf.max_guests; i++)
		if (d->guests.slot[i])
			vcmad_guest_abandon(d->guests.slot[i]);
	vcmad_guests_reap(d);
	vcmad_libvirt_stop(d);
	vcmad_ctl_stop(d);
	vcmad_balloon_fini(d);
	for (uint32_t i = 0; i < VCMAD_NLINKS; i++)
		if (d->links[i].ops && d->links[i].priv)
			d->links[i].ops->stop(&d->links[i]);
	vcma_timer_cancel(&d->loop, &d->relend.timer);
	vcma_timer_cancel(&d->loop, &d->guests.lazy_timer);
	vcmad_scrub_fini(d);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	vcma_loop_fini(&d->loop);
	vcmad_peerfd_fini();
	vcmad_guests_fini(d);
	while (d->vms)
		vcmad_vm_abandon(d->vms);
	vcmad_durable_close(d); /* what abandoned guests hold stays recorded */
	if (d->be.type)
		d->be.type->mem->fini(&d->be);
	vcma_core_fini(&d->core);
}

int vcmad_sd_notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	socklen_t salen;
	int fd, rc = 0;

	if (!path || !*path)
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
		rc = -errno;
	close(fd);
	return rc;
}
