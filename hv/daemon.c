// SPDX-License-Identifier: MIT
/*
 * daemon.c - vcmad's lifecycle: lay out machine memory and pools, listen, serve,
 * shut down cleanly.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "peerfd.h"
#include "vcmad.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define AUTO_POOL_ALIGN 512ull /* frames: auto-placed pools start on 2 MiB boundaries */

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
	struct placed pl[VCMA_MAX_POOLS];
	struct vcma_pool_range ranges[VCMA_MAX_POOLS];
	char err[256];
	int rc;

	memset(d, 0, sizeof(*d));
	d->conf = *conf;
	d->listen_fd = d->signal_fd = -1;
	d->be.machine_fd = -1;
	d->loop.epfd = -1;
	d->next_id = 1;
	d->vacate_batch = 256;
	if (vcmad_conf_validate(&d->conf, err, sizeof(err))) {
		log_err("%s", err);
		return -EINVAL;
	}
	rc = vcma_core_init(&d->core);
	if (rc)
		return rc;
	rc = place_pools(d, pl);
	if (rc)
		goto fail_core;
	for (uint32_t i = 0; i < d->conf.npools; i++) {
		ranges[i].mfn = pl[i].mfn;
		ranges[i].count = pl[i].frames;
	}
	d->be.ops = &vcma_backend_sim;
	rc = d->be.ops->init(&d->be, d->conf.machine_bytes, ranges, d->conf.npools);
	if (rc) {
		log_err("sim backend: cannot create %llu MiB of machine memory: %s",
			(unsigned long long)(d->conf.machine_bytes >> 20), strerror(-rc));
		d->be.ops = NULL;
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
			log_info("pool %s: %llu MiB at machine address %#llx, %s%s", d->conf.pool[i].name,
				 (unsigned long long)(pl[j].frames >> 8), (unsigned long long)(pl[j].mfn << 12),
				 d->conf.pool[i].mode == VCMA_POOL_SHARED ? "shared" : "exclusive to ",
				 d->conf.pool[i].mode == VCMA_POOL_SHARED ? "" : d->conf.pool[i].bind_name);
		}
	}
	d->guest = calloc(d->conf.max_guests, sizeof(*d->guest));
	if (!d->guest) {
		rc = -ENOMEM;
		goto fail_be;
	}
	return 0;
fail_be:
	d->be.ops->fini(&d->be);
	d->be.ops = NULL;
fail_core:
	vcma_core_fini(&d->core);
	return rc;
}

static int mkdir_p(const char *path)
{
	char buf[256];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return -errno;
	return 0;
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
	rc = mkdir_p(d->conf.runtime_dir);
	if (rc) {
		log_err("cannot create runtime directory %s: %s", d->conf.runtime_dir, strerror(-rc));
		return rc;
	}
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
	rc = vcmad_sim_listen(d);
	if (rc)
		return rc;
	rc = vcmad_ivshmem_listen(d);
	if (rc)
		return rc;
	rc = vcmad_ctl_start(d);
	if (rc)
		return rc;
	d->started = true;
	d->last_alloc_ns = vcma_now_ns(); /* relending waits for quiet from now on */
	log_notice("serving on %s (backend %s, %llu MiB machine memory, %u pool(s))", d->sock_path, d->be.ops->name,
		   (unsigned long long)(d->conf.machine_bytes >> 20), d->core.npools);
	rc = vcmad_sd_notify("READY=1\nSTATUS=serving");
	if (rc)
		log_warn("sd_notify: %s", strerror(-rc));
	return 0;
}

void vcmad_request_stop(struct vcmad *d)
{
	d->stop = true;
}

static void free_zombies(struct vcmad *d)
{
	while (d->zombies) {
		struct vcmad_guest *g = d->zombies;

		d->zombies = g->next_run;
		free(g);
	}
}

/*
 * Adaptive polling: for poll_us after the last served request, look at the rings
 * instead of sleeping, so a guest that follows up quickly is served without a
 * wake-up (about 20 us each way in a VM, machine-floors.md section 2).
 */
static void spin_for_requests(struct vcmad *d)
{
	uint64_t end = d->last_active_ns + (uint64_t)d->conf.poll_us * 1000;

	while (vcma_now_ns() < end && !d->runq) {
		for (uint32_t i = 0; i < d->conf.max_guests; i++) {
			struct vcmad_guest *g = d->guest[i];

			if (g && !g->dead && !g->queued && vcma_ring_host_pending(&g->ring))
				vcmad_guest_run(g);
		}
		if (d->guest && vcma_loop_once(&d->loop, 0) != 0)
			return; /* some fd is ready: handle it in the main loop */
		cpu_relax();
	}
}

/*
 * SIGTERM: every guest goes CLOSING and gets a SHUTDOWN event (PROTOCOL.md §3);
 * from now on each request is answered SHUTDOWN and no guest attaches, but regions
 * stay valid until their guest detaches. vcmad waits up to shutdown_grace_ms for the
 * guests to go, then exits without touching what the others still hold.
 */
static void begin_closing(struct vcmad *d)
{
	uint32_t n = 0;

	d->closing = true;
	d->closing_until = vcma_now_ns() + (uint64_t)d->conf.shutdown_grace_ms * 1000000ull;
	vcmad_sd_notify("STOPPING=1");
	/* allocations waiting for a vacate are answered SHUTDOWN; windows released */
	vcmad_vacate_cancel_all(d);
	for (uint32_t i = 0; i < d->conf.max_guests; i++) {
		struct vcmad_guest *g = d->guest[i];
		struct vcma_evt e = { .type = VCMA_EVT_SHUTDOWN };
		bool notify;

		if (!g || g->dead)
			continue;
		n++;
		vcma_ring_host_set_state(&g->ring, VCMA_STATE_CLOSING);
		if (g->features & VCMA_F_EVENTS)
			vcma_ring_host_post_event(&g->ring, &e, &notify);
		vcmad_guest_notify(g);
	}
	if (n)
		log_notice("closing: %u guest(s) attached; waiting up to %u ms for them to detach", n,
			   d->conf.shutdown_grace_ms);
}

int vcmad_run(struct vcmad *d)
{
	for (;;) {
		int rc;

		if (d->stop && !d->closing)
			begin_closing(d);
		if (d->closing) {
			uint64_t now = vcma_now_ns();

			if (!d->nguests)
				break;
			if (now >= d->closing_until) {
				log_notice("closing: %u guest(s) still attached after %u ms; leaving them what they hold",
					   d->nguests, d->conf.shutdown_grace_ms);
				break;
			}
		}
		if (d->conf.poll_us && !d->runq && !d->closing)
			spin_for_requests(d);
		/* with vacate jobs in flight, wake up often enough to time out VMs */
		int tmo = d->runq ? 0 : d->closing ? 50 : vcmad_vacate_timeout_ms(d);

		/* at least once a second regardless: connection and zombie reaping */
		rc = vcma_loop_once(&d->loop, tmo < 0 || tmo > 1000 ? 1000 : tmo);

		if (rc < 0) {
			log_err("epoll: %s", strerror(-rc));
			return rc;
		}
		/* guests left with requests after their turn get another one */
		struct vcmad_guest *q = d->runq;

		d->runq = NULL;
		while (q) {
			struct vcmad_guest *g = q;

			q = g->next_run;
			g->queued = false;
			g->next_run = NULL;
			if (!g->dead)
				vcmad_guest_run(g);
		}
		vcmad_vacate_tick(d);
		vcmad_vacate_reap(d);
		free_zombies(d);
		vcmad_sim_reap_conns(d, false);
		vcmad_ivshmem_audit(d);
		vcmad_ctl_tick(d);
	}
	return 0;
}

void vcmad_fini(struct vcmad *d)
{
	if (!d->closing)
		vcmad_sd_notify("STOPPING=1");
	vcmad_vacate_cancel_all(d);
	/* guests still attached keep what they hold: vcmad's exit hands their memory to
	 * nobody else, so their regions stay valid until they let go (§3, CLOSING) */
	for (uint32_t i = 0; d->guest && i < d->conf.max_guests; i++)
		if (d->guest[i])
			vcmad_guest_abandon(d->guest[i]);
	free_zombies(d);
	vcmad_sim_reap_conns(d, true);
	vcmad_ivshmem_close(d);
	vcmad_ctl_stop(d);
	if (d->listen_fd >= 0) {
		vcma_loop_del(&d->loop, &d->listen_w);
		close(d->listen_fd);
		if (d->started)
			unlink(d->sock_path);
	}
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	vcma_loop_fini(&d->loop);
	vcmad_peerfd_fini();
	free(d->guest);
	if (d->be.ops)
		d->be.ops->fini(&d->be);
	vcma_core_fini(&d->core);
	d->guest = NULL;
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
