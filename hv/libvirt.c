// SPDX-License-Identifier: MIT
/*
 * libvirt.c - libvirt-managed guests, the loop's side (libvirt.h). What libvirt says
 * arrives as messages from the worker thread (libvirt_worker.c); what vcmactl asks
 * goes to it the same way. Nothing here calls libvirt.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "balloon.h"
#include "guest.h"
#include "libvirt.h"
#include "libvirt_worker.h"
#include "log.h"
#include "pool_config.h"
#include "vcma_name.h"
#include "vcmad.h"
#include "vmem.h"

struct pending {
	uint64_t token;
	enum vcmad_lv_request rq;
	char name[VCMAD_LV_NAME_MAX];
	bool expected_here; /* ATTACH expected the guest: forgotten again if it fails */
	vcmad_lv_done_fn done;
	void *arg; /* NULL: its requester went away */
	struct pending *next;
};

/* A libvirt domain lending through its virtio-mem device: the vmem driver (vmem.h).
 * Sizes come from the domain's XML when it is found or starts, and from libvirt's
 * MEMORY_DEVICE_SIZE_CHANGE events (QEMU sends at most one a second, and one when
 * the size settles); the requested size is what libvirt last accepted. */
struct lv_vmem {
	struct vcmad_libvirt *lv;
	char name[VCMAD_LV_NAME_MAX];
	struct vcmad_vmem *v;
	uint64_t plugged, requested, max, block;
	uint64_t asked;   /* sent to libvirt, not yet accepted */
	bool up;          /* the domain runs: reports go to vmem */
	struct lv_vmem *next;
};

struct vcmad_libvirt {
	struct vcmad *d;
	struct lv_vmem *vmems;
	struct vcmad_lv_worker *w;
	struct vcma_watch watch;
	bool connected;
	char why[256]; /* why not connected */
	struct pending *pending;
	uint64_t next_token;
	/* counters */
	uint64_t domains_found, stops, stop_reclaims, stop_regions;
	uint64_t stop_ns_last, stop_ns_max, stop_ns_total;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *rq_name(enum vcmad_lv_request rq)
{
	static const char *const n[] = { "attach", "detach", "define", "start", "destroy", "undefine" };

	return n[rq];
}

/* The socket a QEMU guest of this conf listens on, as the ivshmem link makes it. */
static void socket_of(const struct vcmad *d, const struct vcmad_guest_conf *gc, char *out, size_t len)
{
	int n = gc->socket[0] ? snprintf(out, len, "%s", gc->socket)
			      : snprintf(out, len, "%s/%s.ivshmem", d->conf.runtime_dir, gc->name);

	if (n < 0 || (size_t)n >= len)
		out[0] = '\0'; /* vcmad_conf_validate() and expect() keep paths short */
}

/* A domain's guest configuration. -EINVAL if its name or class is not a vcma name
 * that fits (libvirt allows longer names than vcma's 31 characters): cut short, it
 * would name another guest, its socket or its pools. */
static int lv_conf(const struct vcmad *d, const char *name, const char *devclass, struct vcmad_guest_conf *gc)
{
	memset(gc, 0, sizeof(*gc));
	if (!vcma_name_str_ok(name, sizeof(gc->name)) || (devclass[0] && !vcma_name_str_ok(devclass, sizeof(gc->devclass))))
		return -EINVAL;
	/* quota: set by the caller from the metadata */
	memcpy(gc->name, name, strlen(name) + 1);
	memcpy(gc->devclass, devclass, strlen(devclass) + 1);
	snprintf(gc->socket_group, sizeof(gc->socket_group), "%s", d->conf.libvirt.socket_group);
	gc->kind = VCMAD_GUEST_QEMU;
	gc->libvirt = true;
	return 0;
}

/* Expect domain name as a QEMU guest (quota 0: the global limit). 0, -EEXIST (known
 * already), other -errno. */
static int expect(struct vcmad *d, const char *name, const char *devclass, uint64_t quota)
{
	struct vcmad_guest_conf gc;
	char sock[108];
	int rc;

	if (!strcmp(name, VCMAD_RESERVED_GUEST_NAME) || lv_conf(d, name, devclass, &gc))
		return -EINVAL;
	gc.quota = quota;
	if (strlen(d->conf.runtime_dir) + strlen(name) + sizeof("/.ivshmem") > sizeof(gc.socket))
		return -ENAMETOOLONG;
	rc = vcmad_guest_expect(d, &gc);
	if (!rc) {
		socket_of(d, &gc, sock, sizeof(sock));
		log_info("libvirt: domain %s is a vcma guest%s%s: its ivshmem server is %s", name,
			 devclass[0] ? " of class " : "", devclass, sock);
	}
	return rc;
}

static void forget(struct vcmad *d, const char *name, const char *why)
{
	const struct vcmad_guest_conf *gc = vcmad_guest_known(d, name);

	if (!gc || !gc->libvirt)
		return;
	log_info("libvirt: domain %s is no longer a vcma guest: %s", name, why);
	vcmad_guest_forget(d, name);
}

/* ---- virtio-mem lenders through libvirt (vmem.h's driver) ---- */

static struct lv_vmem *vmem_find(struct vcmad_libvirt *lv, const char *name)
{
	for (struct lv_vmem *x = lv->vmems; x; x = x->next)
		if (!strcmp(x->name, name))
			return x;
	return NULL;
}

static void vmem_report(struct lv_vmem *x)
{
	if (x->up && x->v)
		vcmad_vmem_report(x->v, x->plugged, x->requested, x->max, x->block);
}

static int vmem_set_requested(void *drv, uint64_t bytes)
{
	struct lv_vmem *x = drv;
	struct vcmad_lv_msg *m = vcmad_lv_msg_new(VCMAD_LV_VMEM_SET);

	if (!m)
		return -ENOMEM;
	snprintf(m->name, sizeof(m->name), "%s", x->name);
	m->bytes = bytes;
	x->asked = bytes;
	vcmad_lv_post(x->lv->w, m); /* DONE (token 0) says whether libvirt took it */
	return 0;
}

static void vmem_close(void *drv)
{
	struct lv_vmem *x = drv;

	for (struct lv_vmem **pp = &x->lv->vmems; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	free(x);
}

static const struct vcmad_vmem_driver_ops lv_vmem_ops = {
	.set_requested = vmem_set_requested,
	.close = vmem_close,
};

/* A lender that stops: QEMU's memory went with it, so what it was lent is the pools'
 * again at once (the lender is removed; it is added again when the domain starts). */
static void vmem_stopped(struct vcmad_libvirt *lv, const char *name)
{
	if (vmem_find(lv, name)) {
		log_info("libvirt: domain %s stopped: the capacity it was lent is the pools' again", name);
		vcmad_lender_remove(lv->d, name); /* closes its driver state */
	}
}

/* A domain that lends (metadata lend='yes' and a virtio-mem device) as it is now. */
static void vmem_domain(struct vcmad_libvirt *lv, const struct vcmad_lv_msg *m)
{
	struct lv_vmem *x = vmem_find(lv, m->name);
	bool lends = m->opted && m->lend && m->has_vmem && m->vmem_max && m->vmem_block;

	if (lends && !m->active) {
		vmem_stopped(lv, m->name); /* defined or changed while not running: lends when it runs */
		return;
	}
	if (!lends) {
		if (x) {
			log_info("libvirt: domain %s no longer lends through virtio-mem", m->name);
			vcmad_lender_remove(lv->d, m->name); /* closes x */
		} else if (m->opted && m->lend) {
			log_warn("libvirt: domain %s: lend='yes' but no virtio-mem device with a size and block", m->name);
		}
		return;
	}
	if (!x) {
		struct vcmad_guest_conf gc;
		int rc;

		x = calloc(1, sizeof(*x));
		if (!x)
			return;
		x->lv = lv;
		snprintf(x->name, sizeof(x->name), "%s", m->name);
		if (lv_conf(lv->d, m->name, m->devclass, &gc)) {
			log_warn("libvirt: domain %s cannot lend: its name or class is not 1-31 of A-Z a-z 0-9 _ . -",
				 m->name);
			free(x);
			return;
		}
		gc.lender = VCMAD_LENDER_VMEM;
		gc.lend_max = m->vmem_max;
		rc = vcmad_vmem_lender_add(lv->d, &gc, &lv_vmem_ops, x, &x->v);
		if (rc) {
			log_warn("libvirt: domain %s cannot lend: %s", m->name, strerror(-rc));
			free(x);
			return;
		}
		x->next = lv->vmems;
		lv->vmems = x;
		log_info("libvirt: domain %s lends through its virtio-mem device (up to %llu MiB, %llu KiB blocks)",
			 m->name, (unsigned long long)(m->vmem_max >> 20), (unsigned long long)(m->vmem_block >> 10));
	}
	x->max = m->vmem_max;
	x->block = m->vmem_block;
	if (!x->up) {
		/* a fresh connection reads <current> as 0 until QEMU reports a change
		 * (libvirt 9.0): vmem hears 0 plugged, and its first request makes QEMU say */
		x->plugged = m->bytes;
		x->requested = m->vmem_requested;
		x->up = true;
		vmem_report(x);
	}
}

static void vmem_size(struct vcmad_libvirt *lv, const struct vcmad_lv_msg *m)
{
	struct lv_vmem *x = vmem_find(lv, m->name);

	if (!x)
		return;
	x->plugged = m->bytes;
	vmem_report(x);
}

static void vmem_set_done(struct vcmad_libvirt *lv, const struct vcmad_lv_msg *m)
{
	struct lv_vmem *x = vmem_find(lv, m->name);

	if (!x)
		return;
	if (m->err) {
		log_warn("libvirt: domain %s: cannot set its virtio-mem size to %llu MiB: %s", m->name,
			 (unsigned long long)(m->bytes >> 20), m->msg);
		return; /* vmem asks again on the next report */
	}
	x->requested = m->bytes;
	vmem_report(x);
}

static void on_domain(struct vcmad_libvirt *lv, const struct vcmad_lv_msg *m)
{
	struct vcmad *d = lv->d;
	const struct vcmad_guest_conf *gc = vcmad_guest_known(d, m->name);
	uint64_t quota = 0;
	int rc;

	vmem_domain(lv, m);
	if (!m->opted) {
		forget(d, m->name, "its vcma metadata is gone");
		return;
	}
	if (gc && !gc->libvirt) {
		log_debug("libvirt: domain %s: a [guest] section configures it; its metadata is not read", m->name);
		return;
	}
	if (m->quota[0] && (vcma_parse_bytes(m->quota, &quota) || !quota || quota % VCMA_PAGE_SIZE)) {
		log_warn("libvirt: domain %s: not served: quota '%s' is not a size such as 64M (a multiple of 4K)",
			 m->name, m->quota);
		forget(d, m->name, "its vcma metadata is invalid");
		return;
	}
	if (gc && (strcmp(gc->devclass, m->devclass) || gc->quota != quota)) {
		struct vcmad_guest *g = vcmad_guest_by_name(d, m->name);

		if (g) {
			log_notice("libvirt: domain %s: class %s, quota %llu MiB take effect when its guest attaches again",
				   m->name, m->devclass[0] ? m->devclass : "(none)", (unsigned long long)(quota >> 20));
			return;
		}
		vcmad_guest_forget(d, m->name);
		gc = NULL;
	}
	if (gc)
		return;
	rc = expect(d, m->name, m->devclass, quota);
	if (rc == -EINVAL)
		log_warn("libvirt: domain %s: not served: its name or class is not 1-31 of A-Z a-z 0-9 _ . - "
			 "(or is reserved)", m->name);
	else if (rc)
		log_warn("libvirt: domain %s: not served: %s", m->name, strerror(-rc));
	else
		lv->domains_found++;
}

static const char *stop_reason(int detail)
{
	switch (detail) {
	case 0: return "shut down";
	case 1: return "destroyed";
	case 2: return "crashed";
	case 3: return "migrated";
	case 4: return "saved";
	case 5: return "failed (its QEMU died)";
	case 6: return "snapshot";
	default: return "stopped";
	}
}

static void on_stopped(struct vcmad_libvirt *lv, const struct vcmad_lv_msg *m)
{
	struct vcmad *d = lv->d;
	struct vcmad_guest *g = vcmad_guest_by_name(d, m->name);
	uint32_t nregions;
	uint64_t ns;

	lv->stops++;
	vmem_stopped(lv, m->name);
	if (!g || !g->conf || !g->conf->libvirt) {
		if (vcmad_guest_known(d, m->name))
			log_info("libvirt: domain %s %s; no guest attached (its QEMU's hang-up detached it already)",
				 m->name, stop_reason(m->detail));
		return;
	}
	nregions = g->rq.nregions;
	vcmad_guest_detach(g, "its libvirt domain stopped");
	ns = mono_ns() - m->t_ns;
	lv->stop_reclaims++;
	lv->stop_regions += nregions;
	lv->stop_ns_last = ns;
	lv->stop_ns_total += ns;
	if (ns > lv->stop_ns_max)
		lv->stop_ns_max = ns;
	log_info("libvirt: domain %s %s: guest detached, %u region(s) reclaimed %.3f ms after libvirt's event",
		 m->name, stop_reason(m->detail), nregions, (double)ns / 1e6);
}

static struct pending *take_pending(struct vcmad_libvirt *lv, uint64_t token)
{
	for (struct pending **pp = &lv->pending; *pp; pp = &(*pp)->next)
		if ((*pp)->token == token) {
			struct pending *p = *pp;

			*pp = p->next;
			return p;
		}
	return NULL;
}

static void on_done(struct vcmad_libvirt *lv, const struct vcmad_lv_msg *m)
{
	struct vcmad *d = lv->d;
	struct pending *p;
	struct json_object *res = NULL;

	if (m->req_op == VCMAD_LV_VMEM_SET) {
		vmem_set_done(lv, m);
		return;
	}
	p = take_pending(lv, m->token);
	if (!p)
		return;
	if (m->err) {
		log_warn("libvirt: %s %s: %s", rq_name(p->rq), p->name, m->msg);
		if (p->expected_here)
			vcmad_guest_forget(d, p->name);
	} else {
		log_info("libvirt: %s %s: done", rq_name(p->rq), m->name);
		if (p->rq == VCMAD_LVR_DETACH)
			forget(d, p->name, "vcmactl detach");
		res = json_object_new_object();
		if (res) {
			json_object_object_add(res, "domain", json_object_new_string(m->name));
			if (p->rq == VCMAD_LVR_ATTACH || p->rq == VCMAD_LVR_DETACH)
				json_object_object_add(res, "socket", json_object_new_string(m->sock));
		}
	}
	if (p->arg)
		p->done(p->arg, m->err, m->msg, res);
	else
		json_object_put(res);
	free(p);
}

static void on_message(struct vcmad_libvirt *lv, struct vcmad_lv_msg *m)
{
	switch (m->op) {
	case VCMAD_LV_CONNECTED:
		lv->connected = true;
		lv->why[0] = '\0';
		log_notice("libvirt: connected to %s", m->msg);
		break;
	case VCMAD_LV_LOST:
		if (lv->connected || strcmp(lv->why, m->msg))
			log_warn("libvirt: %s; trying again every %d s (libvirt domains are not discovered meanwhile)",
				 m->msg, VCMAD_LV_RETRY_S);
		lv->connected = false;
		snprintf(lv->why, sizeof(lv->why), "%s", m->msg);
		break;
	case VCMAD_LV_DOMAIN:
		on_domain(lv, m);
		break;
	case VCMAD_LV_GONE:
		if (vmem_find(lv, m->name))
			vcmad_lender_remove(lv->d, m->name);
		forget(lv->d, m->name, "its domain was undefined");
		break;
	case VCMAD_LV_VMEM_SIZE:
		vmem_size(lv, m);
		break;
	case VCMAD_LV_STOPPED:
		on_stopped(lv, m);
		break;
	case VCMAD_LV_DONE:
		on_done(lv, m);
		break;
	default:
		break;
	}
}

static void on_worker(struct vcma_watch *wt, uint32_t events)
{
	struct vcmad_libvirt *lv = (struct vcmad_libvirt *)((char *)wt - offsetof(struct vcmad_libvirt, watch));
	struct vcmad_lv_msg *m = vcmad_lv_take(lv->w), *next;

	(void)events;
	for (; m; m = next) {
		next = m->next;
		on_message(lv, m);
		vcmad_lv_msg_free(m);
	}
}

int vcmad_libvirt_start(struct vcmad *d)
{
	struct vcmad_libvirt *lv;
	int fd, rc;

	if (!d->conf.libvirt.uri[0])
		return 0;
	lv = calloc(1, sizeof(*lv));
	if (!lv)
		return -ENOMEM;
	lv->d = d;
	lv->next_token = 1;
	snprintf(lv->why, sizeof(lv->why), "connecting");
	lv->w = vcmad_lv_worker_start(d->conf.libvirt.uri, &fd);
	if (!lv->w) {
		rc = -errno;
		log_err("libvirt: cannot start the libvirt thread: %s", strerror(errno));
		free(lv);
		return rc;
	}
	rc = vcma_loop_add(&d->loop, &lv->watch, fd, EPOLLIN, on_worker);
	if (rc) {
		vcmad_lv_worker_stop(lv->w);
		free(lv);
		return rc;
	}
	d->libvirt = lv;
	log_info("libvirt: connecting to %s (on its own thread)", d->conf.libvirt.uri);
	return 0;
}

void vcmad_libvirt_stop(struct vcmad *d)
{
	struct vcmad_libvirt *lv = d->libvirt;

	if (!lv)
		return;
	/* lenders first: each asks its device for 0 (posted before the worker's QUIT) */
	while (lv->vmems)
		if (vcmad_lender_remove(d, lv->vmems->name))
			vmem_close(lv->vmems);
	vcma_loop_del(&d->loop, &lv->watch);
	vcmad_lv_worker_stop(lv->w);
	while (lv->pending) {
		struct pending *p = lv->pending;

		lv->pending = p->next;
		if (p->arg)
			p->done(p->arg, -ESHUTDOWN, "vcmad is shutting down", NULL);
		free(p);
	}
	free(lv);
	d->libvirt = NULL;
}

int vcmad_libvirt_request(struct vcmad *d, enum vcmad_lv_request rq, const char *domain, const char *devclass,
			  const char *xml, vcmad_lv_done_fn done, void *arg, char *msg, size_t len)
{
	static const enum vcmad_lv_op ops[] = { VCMAD_LV_ATTACH, VCMAD_LV_DETACH, VCMAD_LV_DEFINE,
						VCMAD_LV_START, VCMAD_LV_DESTROY, VCMAD_LV_UNDEFINE };
	struct vcmad_libvirt *lv = d->libvirt;
	struct vcmad_lv_msg *m;
	struct pending *p;
	bool expected_here = false;

	if (!lv) {
		snprintf(msg, len, "vcmad has no libvirt connection: set [libvirt] uri in vcmad.conf");
		return -EOPNOTSUPP;
	}
	m = vcmad_lv_msg_new(ops[rq]);
	p = calloc(1, sizeof(*p));
	if (!m || !p) {
		vcmad_lv_msg_free(m);
		free(p);
		return -ENOMEM;
	}
	if (rq == VCMAD_LVR_DEFINE) {
		m->xml = strdup(xml ? xml : "");
		if (!m->xml) {
			vcmad_lv_msg_free(m);
			free(p);
			return -ENOMEM;
		}
	} else {
		snprintf(m->name, sizeof(m->name), "%s", domain);
	}
	if (rq == VCMAD_LVR_ATTACH || rq == VCMAD_LVR_DETACH) {
		const struct vcmad_guest_conf *gc = vcmad_guest_known(d, domain);

		if (rq == VCMAD_LVR_ATTACH && !gc) {
			int rc = expect(d, domain, devclass ? devclass : "", 0);

			if (rc) {
				snprintf(msg, len, "cannot serve domain %s: %s", domain,
					 rc == -EINVAL ? "its name or class is not 1-31 of A-Z a-z 0-9 _ . -"
						       : strerror(-rc));
				vcmad_lv_msg_free(m);
				free(p);
				return rc;
			}
			expected_here = true;
			gc = vcmad_guest_known(d, domain);
		}
		if (gc && gc->kind != VCMAD_GUEST_QEMU) {
			snprintf(msg, len, "guest %s is configured, and not as a QEMU guest", domain);
			vcmad_lv_msg_free(m);
			free(p);
			return -EINVAL;
		}
		if (gc) {
			socket_of(d, gc, m->sock, sizeof(m->sock));
		} else {
			struct vcmad_guest_conf tmp;

			if (lv_conf(d, domain, "", &tmp)) {
				snprintf(msg, len, "no vcma guest %s: its name is not 1-31 of A-Z a-z 0-9 _ . -", domain);
				vcmad_lv_msg_free(m);
				free(p);
				return -EINVAL;
			}
			socket_of(d, &tmp, m->sock, sizeof(m->sock));
		}
		snprintf(m->devclass, sizeof(m->devclass), "%s", gc ? gc->devclass : "");
	}
	p->token = m->token = lv->next_token++;
	p->rq = rq;
	p->done = done;
	p->arg = arg;
	p->expected_here = expected_here;
	snprintf(p->name, sizeof(p->name), "%s", domain ? domain : "(new)");
	p->next = lv->pending;
	lv->pending = p;
	vcmad_lv_post(lv->w, m);
	return 0;
}

void vcmad_libvirt_cancel(struct vcmad *d, void *arg)
{
	if (!d->libvirt)
		return;
	for (struct pending *p = d->libvirt->pending; p; p = p->next)
		if (p->arg == arg)
			p->arg = NULL;
}

struct json_object *vcmad_libvirt_json(struct vcmad *d)
{
	struct vcmad_libvirt *lv = d->libvirt;
	struct json_object *o;
	uint32_t n = 0;

	if (!lv)
		return NULL;
	o = json_object_new_object();
	if (!o)
		return NULL;
	for (uint32_t i = 0; i < d->guests.nknown; i++)
		n += d->guests.known[i]->libvirt;
	json_object_object_add(o, "uri", json_object_new_string(d->conf.libvirt.uri));
	json_object_object_add(o, "connected", json_object_new_boolean(lv->connected));
	if (!lv->connected)
		json_object_object_add(o, "why", json_object_new_string(lv->why));
	json_object_object_add(o, "domains", json_object_new_uint64(n));
	json_object_object_add(o, "domains_found", json_object_new_uint64(lv->domains_found));
	json_object_object_add(o, "stops", json_object_new_uint64(lv->stops));
	json_object_object_add(o, "stop_reclaims", json_object_new_uint64(lv->stop_reclaims));
	json_object_object_add(o, "stop_regions", json_object_new_uint64(lv->stop_regions));
	json_object_object_add(o, "stop_reclaim_ns_last", json_object_new_uint64(lv->stop_ns_last));
	json_object_object_add(o, "stop_reclaim_ns_max", json_object_new_uint64(lv->stop_ns_max));
	json_object_object_add(o, "stop_reclaim_ns_total", json_object_new_uint64(lv->stop_ns_total));
	return o;
}
