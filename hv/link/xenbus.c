// SPDX-License-Identifier: MIT
/*
 * xenbus.c - the xenbus guest link: vcmad is the backend of the Xen split device
 * "vcma" (PROTOCOL.md §9.3); vcma.ko in a PV domU is its frontend.
 *
 *   /local/domain/B/backend/vcma/D/N/   watched ("be"): a device appears, or goes
 *   /local/domain/D/device/vcma/N/state watched per device ("fe:D:N:gen")
 *   @releaseDomain                      a domain died: its devices detach
 *   @introduceDomain                    a domain appeared: configured ones get a device
 *
 * Per device: InitWait (area-pages written) -> the frontend's Initialised (refs and
 * port read once, checked, mapped, bound) -> Connected (a guest on the ring) ->
 * Closed when the frontend closes or dies. What the frontend writes is parsed
 * strictly (vcma_xen_parse_u32); anything malformed refuses the device with an
 * `error` node and state Closed.
 *
 * Regions are the Xen backend's business (backend/xen.h): place() moves the
 * window's frames into the domain, clear() takes them back. Per guest the link keeps
 * each region's machine frame and whether Xen moved it.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

#include "backend/xen.h"
#include "balloon.h"
#include "durable.h"
#include "guest.h"
#include "link/xenbus.h"
#include "log.h"
#include "vcma_name.h"
#include "vcma_xen.h"
#include "vcmad.h"

enum { XB_INITIALISING = 1, XB_INITWAIT, XB_INITIALISED, XB_CONNECTED, XB_CLOSING, XB_CLOSED };

#define XB_MAX_DEVICES 256u /* devices the link tracks; the toolstack makes them */
#define XB_MAX_REFUSALS 8u  /* restarts of a device whose frontend keeps failing */

struct xb_dev {
	struct xb_link *xl;
	uint32_t domid, devid, gen;
	char bpath[96], fpath[96], token[48];
	int state;             /* the backend state vcmad wrote last */
	bool watching;         /* the frontend's state node */
	struct vcmad_guest *g; /* while connected */
	void *area;
	uint32_t pages;
	int lport;             /* bound local port, or -1 */
	uint32_t refusals;     /* a frontend that keeps failing is not restarted forever */
	struct xb_dev *next;
};

struct xb_region {
	uint64_t slot, mfn;
	uint8_t order;
	bool used, moved;
};

/* Per guest (g->link_priv); freed with its zombie. */
struct xb_guest {
	struct xb_dev *dev; /* NULL once closed */
	uint32_t domid, devid;
	uint32_t nregs;
	struct xb_region regs[];
};

struct xb_link {
	struct vcmad *d;
	struct vcmad_link *l;
	struct vcmad_xen *x;
	struct xs_handle *xs;
	xengnttab_handle *xgt;
	xenevtchn_handle *xce;
	struct vcma_watch xs_w, evt_w;
	char base[64]; /* /local/domain/B/backend/vcma */
	uint32_t self, area_pages, ndevs, gen;
	struct xb_dev *devs;
};

static struct xb_guest *xg(const struct vcmad_guest *g)
{
	return g->link_priv;
}

static struct xb_link *xl_of(const struct vcmad_guest *g)
{
	return g->link->priv;
}

/* ---- xenstore helpers ---- */

/* Read a node into buf (NUL-terminated); -1 if absent or longer than the buffer. */
static int xs_get(struct xb_link *xl, const char *dir, const char *node, char *buf, size_t len)
{
	char path[160];
	unsigned int n = 0;
	char *v;

	snprintf(path, sizeof(path), "%s/%s", dir, node);
	v = xs_read(xl->xs, XBT_NULL, path, &n);
	if (!v)
		return -1;
	if (n >= len) {
		free(v);
		return -1;
	}
	memcpy(buf, v, n);
	buf[n] = '\0';
	free(v);
	return (int)n;
}

static int xs_get_u32(struct xb_link *xl, const char *dir, const char *node, unsigned long max, unsigned int *out)
{
	char buf[VCMA_XEN_MAX_DECIMAL + 2];
	int n = xs_get(xl, dir, node, buf, sizeof(buf));

	return n < 0 ? -1 : vcma_xen_parse_u32(buf, (unsigned int)n, max, out);
}

static bool xs_put(struct xb_link *xl, xs_transaction_t t, const char *dir, const char *node, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static bool xs_put(struct xb_link *xl, xs_transaction_t t, const char *dir, const char *node, const char *fmt, ...)
{
	char path[160], val[160];
	va_list ap;

	snprintf(path, sizeof(path), "%s/%s", dir, node);
	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	return xs_write(xl->xs, t, path, val, (unsigned int)strlen(val));
}

static void set_state(struct xb_dev *dv, int state)
{
	dv->state = state;
	if (!xs_put(dv->xl, XBT_NULL, dv->bpath, "state", "%d", state))
		log_warn("xen: domain %u device %u: cannot write its backend state: %s", dv->domid, dv->devid,
			 strerror(errno));
}

/* ---- devices ---- */

static struct xb_dev *dev_find(struct xb_link *xl, uint32_t domid, uint32_t devid)
{
	for (struct xb_dev *dv = xl->devs; dv; dv = dv->next)
		if (dv->domid == domid && dv->devid == devid)
			return dv;
	return NULL;
}

static void unmap_area(struct xb_dev *dv)
{
	struct xb_link *xl = dv->xl;

	if (dv->area)
		xengnttab_unmap(xl->xgt, dv->area, dv->pages);
	dv->area = NULL;
	if (dv->lport >= 0)
		xenevtchn_unbind(xl->xce, (evtchn_port_t)dv->lport);
	dv->lport = -1;
}

/* The device goes away from vcmad: its guest detaches, its watch ends. */
static void dev_drop(struct xb_dev *dv, const char *why)
{
	struct xb_link *xl = dv->xl;

	if (dv->g)
		vcmad_guest_detach(dv->g, why); /* calls xb_close: dv->g = NULL */
	unmap_area(dv);
	if (dv->watching)
		xs_unwatch(xl->xs, dv->fpath, dv->token);
	for (struct xb_dev **pp = &xl->devs; *pp; pp = &(*pp)->next)
		if (*pp == dv) {
			*pp = dv->next;
			break;
		}
	xl->ndevs--;
	free(dv);
}

/* Refuse the device: say why in its backend directory and close it. */
static void refuse(struct xb_dev *dv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(struct xb_dev *dv, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_warn("xen: domain %u device %u refused: %s", dv->domid, dv->devid, why);
	dv->xl->d->stats.attach_refused++;
	dv->refusals++;
	unmap_area(dv);
	xs_put(dv->xl, XBT_NULL, dv->bpath, VCMA_XEN_KEY_ERROR, "vcma: %s", why);
	set_state(dv, XB_CLOSED);
}

/* The name a domain's guest gets: its xenstore name when it is a valid one. */
static void domain_name(struct xb_link *xl, uint32_t domid, char *name, size_t len)
{
	char dir[48], buf[VCMA_SIM_NAME_LEN + 1];

	snprintf(dir, sizeof(dir), "/local/domain/%u", domid);
	if (xs_get(xl, dir, "name", buf, sizeof(buf)) > 0 && vcma_name_str_ok(buf, VCMA_SIM_NAME_LEN) &&
	    strcmp(buf, VCMAD_RESERVED_GUEST_NAME))
		snprintf(name, len, "%s", buf);
	else
		snprintf(name, len, "dom%u", domid);
}

static void connect(struct xb_dev *dv)
{
	struct xb_link *xl = dv->xl;
	struct vcmad *d = xl->d;
	struct vcmad_xen_dominfo di;
	uint32_t refs[VCMA_XEN_MAX_AREA_PAGES];
	char name[VCMA_SIM_NAME_LEN + 1];
	const struct vcmad_guest_conf *gc;
	unsigned int remote;
	struct vcmad_guest *g;
	struct xb_guest *s;
	int32_t status;
	int port;

	if (vcmad_xen_dominfo(xl->x, dv->domid, &di) || !di.exists || di.dying) {
		refuse(dv, "domain %u is gone", dv->domid);
		return;
	}
	if (di.translated) {
		refuse(dv, "domain %u is translated (PVH/HVM): Xen gives it no machine addresses", dv->domid);
		return;
	}
	/* what the frontend wrote: read once, parsed strictly */
	for (uint32_t i = 0; i < xl->area_pages; i++) {
		char node[24];
		unsigned int ref;

		snprintf(node, sizeof(node), VCMA_XEN_KEY_RING_REF "%u", i);
		if (xs_get_u32(xl, dv->fpath, node, 0xffffffffUL, &ref)) {
			refuse(dv, "%s is missing or not a decimal grant reference", node);
			return;
		}
		refs[i] = ref;
	}
	if (xs_get_u32(xl, dv->fpath, VCMA_XEN_KEY_EVTCHN, 0xffffffffUL, &remote)) {
		refuse(dv, VCMA_XEN_KEY_EVTCHN " is missing or not a decimal port");
		return;
	}
	domain_name(xl, dv->domid, name, sizeof(name));
	gc = vcmad_guest_known(d, name);
	if (gc && gc->kind != VCMAD_GUEST_XEN)
		gc = NULL;
	if (!gc && !d->conf.open_attach) {
		refuse(dv, "domain %u (%s) has no [guest %s] section and open_attach = no", dv->domid, name, name);
		return;
	}
	if (vcmad_guest_by_name(d, name)) {
		refuse(dv, "guest %s is attached already (one vcma device per domain)", name);
		return;
	}
	dv->area = xengnttab_map_domain_grant_refs(xl->xgt, xl->area_pages, dv->domid, refs, PROT_READ | PROT_WRITE);
	if (!dv->area) {
		refuse(dv, "cannot map the %u granted pages: %s", xl->area_pages, strerror(errno));
		return;
	}
	dv->pages = xl->area_pages;
	port = xenevtchn_bind_interdomain(xl->xce, dv->domid, (evtchn_port_t)remote);
	if (port < 0) {
		refuse(dv, "cannot bind event channel %u: %s", remote, strerror(errno));
		return;
	}
	dv->lport = port;
	g = vcmad_guest_new(d, xl->l, name, gc ? gc->devclass : "", gc, 0, &status);
	if (!g) {
		refuse(dv, "no guest slot (%s)", status == VCMA_ST_LIMIT ? "max_guests reached" : "out of memory");
		return;
	}
	s = calloc(1, sizeof(*s) + d->conf.limits.max_regions * sizeof(s->regs[0]));
	if (!s) {
		vcmad_guest_discard(g);
		refuse(dv, "out of memory");
		return;
	}
	s->dev = dv;
	s->domid = dv->domid;
	s->devid = dv->devid;
	s->nregs = d->conf.limits.max_regions;
	g->link_priv = s;
	g->role = "xen";
	vcmad_durable_guest_identity(d, g->id, 0, dv->domid);
	if (vcmad_guest_ring_init(g, dv->area, (uint64_t)dv->pages * VCMA_PROTO_PAGE, 0, 0)) {
		g->link_priv = NULL;
		free(s);
		vcmad_guest_discard(g);
		refuse(dv, "the ring does not fit in %u pages", dv->pages);
		return;
	}
	dv->g = g;
	set_state(dv, XB_CONNECTED);
	log_info("guest %u (%s%s%s) attached over xenbus: domain %u device %u, %u page(s), event channel %u", g->id,
		 g->name, g->devclass[0] ? ", class " : "", g->devclass, dv->domid, dv->devid, dv->pages, remote);
	vcmad_guest_started(g);
}

/* The frontend's state changed (or the device is new). */
static void frontend_changed(struct xb_dev *dv)
{
	unsigned int fe;

	if (xs_get_u32(dv->xl, dv->fpath, "state", XB_CLOSED, &fe))
		fe = XB_CLOSED; /* gone, or garbage: as closed */
	switch (fe) {
	case XB_INITIALISING:
		if (dv->state != XB_CLOSED || dv->g)
			break;
		if (dv->refusals >= XB_MAX_REFUSALS) {
			if (dv->refusals++ == XB_MAX_REFUSALS)
				log_warn("xen: domain %u device %u: refused %u times, not restarted again (vcmactl "
					 "detach --xen and attach --xen to try again)", dv->domid, dv->devid,
					 XB_MAX_REFUSALS);
			break;
		}
		/* a frontend that starts over (its driver reloaded) */
		xs_put(dv->xl, XBT_NULL, dv->bpath, VCMA_XEN_KEY_ERROR, "%s", "");
		xs_put(dv->xl, XBT_NULL, dv->bpath, VCMA_XEN_KEY_AREA_PAGES, "%u", dv->xl->area_pages);
		set_state(dv, XB_INITWAIT);
		break;
	case XB_INITIALISED:
	case XB_CONNECTED:
		if (dv->state == XB_INITWAIT)
			connect(dv);
		break;
	default: /* InitWait (not a frontend state), Closing, Closed, unknown */
		if (dv->g)
			vcmad_guest_detach(dv->g, "frontend closed");
		unmap_area(dv);
		if (dv->state != XB_CLOSED && fe >= XB_CLOSING)
			set_state(dv, XB_CLOSED);
		break;
	}
}

static void dev_new(struct xb_link *xl, uint32_t domid, uint32_t devid)
{
	char fpath[96], want[96];
	unsigned int feid;
	struct xb_dev *dv;

	{
		char bpath[96];

		snprintf(bpath, sizeof(bpath), "%s/%u/%u", xl->base, domid, devid);
		if (xs_get(xl, bpath, "frontend", fpath, sizeof(fpath)) < 0 ||
		    xs_get_u32(xl, bpath, "frontend-id", 0x7fefU, &feid))
			return; /* not complete yet: the toolstack writes it in a transaction */
		snprintf(want, sizeof(want), "/local/domain/%u/device/" VCMA_XEN_DEVICE_TYPE "/%u", domid, devid);
		if (feid != domid || strcmp(fpath, want)) {
			log_warn("xen: %s names frontend %s of domain %u, not %s: ignored", bpath, fpath, feid, want);
			return;
		}
		if (xl->ndevs >= XB_MAX_DEVICES) {
			log_warn("xen: %s: more than %u vcma devices: ignored", bpath, XB_MAX_DEVICES);
			return;
		}
		dv = calloc(1, sizeof(*dv));
		if (!dv)
			return;
		dv->xl = xl;
		dv->domid = domid;
		dv->devid = devid;
		dv->gen = ++xl->gen;
		dv->lport = -1;
		snprintf(dv->bpath, sizeof(dv->bpath), "%s", bpath);
		snprintf(dv->fpath, sizeof(dv->fpath), "%s", want);
	}
	snprintf(dv->token, sizeof(dv->token), "fe:%u:%u:%u", domid, devid, dv->gen);
	dv->next = xl->devs;
	xl->devs = dv;
	xl->ndevs++;
	xs_put(xl, XBT_NULL, dv->bpath, VCMA_XEN_KEY_AREA_PAGES, "%u", xl->area_pages);
	set_state(dv, XB_INITWAIT);
	{
		char path[112];

		snprintf(path, sizeof(path), "%s/state", dv->fpath);
		dv->watching = xs_watch(xl->xs, path, dv->token);
		if (!dv->watching)
			log_warn("xen: cannot watch %s: %s", path, strerror(errno));
	}
	log_info("xen: domain %u device %u: backend waiting for its frontend", domid, devid);
	/* the watch fires once at once; frontend_changed runs then */
}

/* Something under our backend directory changed: a device came or went. */
static void backend_changed(struct xb_link *xl, const char *path)
{
	size_t bl = strlen(xl->base);
	unsigned int domid, devid;
	const char *p, *slash;
	struct xb_dev *dv;
	char comp[12], bpath[96];

	if (strncmp(path, xl->base, bl) || path[bl] != '/')
		return; /* the base itself (the watch's first firing): scan it */
	p = path + bl + 1;
	slash = strchr(p, '/');
	if (!slash || (size_t)(slash - p) >= sizeof(comp))
		return;
	memcpy(comp, p, (size_t)(slash - p));
	comp[slash - p] = '\0';
	if (vcma_xen_parse_u32(comp, (unsigned int)strlen(comp), 0x7fefU, &domid))
		return;
	p = slash + 1;
	slash = strchr(p, '/');
	{
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n >= sizeof(comp))
			return;
		memcpy(comp, p, n);
		comp[n] = '\0';
	}
	if (vcma_xen_parse_u32(comp, (unsigned int)strlen(comp), 0xffffU, &devid))
		return;
	dv = dev_find(xl, domid, devid);
	snprintf(bpath, sizeof(bpath), "%s/%u/%u", xl->base, domid, devid);
	if (dv) {
		char buf[96];

		/* our own writes land here too: only a device whose nodes are gone goes */
		if (xs_get(xl, bpath, "frontend", buf, sizeof(buf)) < 0)
			dev_drop(dv, "its device was removed");
		return;
	}
	dev_new(xl, domid, devid);
}

static void scan_backend(struct xb_link *xl)
{
	unsigned int ndom = 0;
	char **doms = xs_directory(xl->xs, XBT_NULL, xl->base, &ndom);

	for (unsigned int i = 0; doms && i < ndom; i++) {
		char dir[96], path[128];
		unsigned int ndev = 0;
		char **devs;

		snprintf(dir, sizeof(dir), "%s/%s", xl->base, doms[i]);
		devs = xs_directory(xl->xs, XBT_NULL, dir, &ndev);
		for (unsigned int j = 0; devs && j < ndev; j++) {
			snprintf(path, sizeof(path), "%s/%s/frontend", dir, devs[j]);
			backend_changed(xl, path);
		}
		free(devs);
	}
	free(doms);
}

/* ---- making devices (the toolstack's part) ---- */

static int make_device(struct xb_link *xl, uint32_t domid, uint32_t *devid_out, char *msg, size_t msglen)
{
	struct xs_permissions fe_perm[2] = { { .id = domid, .perms = XS_PERM_NONE },
					     { .id = xl->self, .perms = XS_PERM_READ } };
	struct xs_permissions be_perm[2] = { { .id = xl->self, .perms = XS_PERM_NONE },
					     { .id = domid, .perms = XS_PERM_READ } };
	char fpath[96], bpath[96], dir[96];
	uint32_t devid = 0;

	/* the first device number neither side uses */
	for (;; devid++) {
		char buf[4];

		snprintf(fpath, sizeof(fpath), "/local/domain/%u/device/" VCMA_XEN_DEVICE_TYPE "/%u", domid, devid);
		snprintf(bpath, sizeof(bpath), "%s/%u/%u", xl->base, domid, devid);
		if (xs_get(xl, fpath, "state", buf, sizeof(buf)) < 0 && xs_get(xl, bpath, "state", buf, sizeof(buf)) < 0)
			break;
		if (devid >= 15) {
			snprintf(msg, msglen, "domain %u has 16 vcma devices already", domid);
			return -EBUSY;
		}
	}
	for (int tries = 0; tries < 16; tries++) {
		xs_transaction_t t = xs_transaction_start(xl->xs);
		bool ok;

		if (!t)
			break;
		snprintf(dir, sizeof(dir), "/local/domain/%u/device/" VCMA_XEN_DEVICE_TYPE, domid);
		ok = xs_mkdir(xl->xs, t, fpath) && xs_set_permissions(xl->xs, t, fpath, fe_perm, 2) &&
		     xs_put(xl, t, fpath, "backend", "%s", bpath) && xs_put(xl, t, fpath, "backend-id", "%u", xl->self) &&
		     xs_put(xl, t, fpath, "state", "%d", XB_INITIALISING) && xs_mkdir(xl->xs, t, bpath) &&
		     xs_set_permissions(xl->xs, t, bpath, be_perm, 2) && xs_put(xl, t, bpath, "frontend", "%s", fpath) &&
		     xs_put(xl, t, bpath, "frontend-id", "%u", domid) && xs_put(xl, t, bpath, "online", "1") &&
		     xs_put(xl, t, bpath, "state", "%d", XB_INITIALISING);
		if (!ok) {
			int e = errno;

			xs_transaction_end(xl->xs, t, true);
			snprintf(msg, msglen, "cannot write the device nodes of domain %u: %s", domid, strerror(e));
			return -e;
		}
		if (xs_transaction_end(xl->xs, t, false)) {
			*devid_out = devid;
			log_info("xen: domain %u: vcma device %u made (%s)", domid, devid, fpath);
			return 0;
		}
		if (errno != EAGAIN)
			break;
	}
	snprintf(msg, msglen, "cannot commit the device nodes of domain %u: %s", domid, strerror(errno));
	return -EIO;
}

/* A domain id from "7" or from a domain's name. */
static int resolve_domain(struct xb_link *xl, const char *who, uint32_t *domid)
{
	unsigned int n = 0, v;
	char **doms;

	if (!vcma_xen_parse_u32(who, (unsigned int)strlen(who), 0x7fefU, &v)) {
		*domid = v;
		return 0;
	}
	doms = xs_directory(xl->xs, XBT_NULL, "/local/domain", &n);
	for (unsigned int i = 0; doms && i < n; i++) {
		char dir[48], name[64];

		if (vcma_xen_parse_u32(doms[i], (unsigned int)strlen(doms[i]), 0x7fefU, &v))
			continue;
		snprintf(dir, sizeof(dir), "/local/domain/%u", v);
		if (xs_get(xl, dir, "name", name, sizeof(name)) > 0 && !strcmp(name, who)) {
			*domid = v;
			free(doms);
			return 0;
		}
	}
	free(doms);
	return -ENOENT;
}

static bool domain_has_device(struct xb_link *xl, uint32_t domid)
{
	for (struct xb_dev *dv = xl->devs; dv; dv = dv->next)
		if (dv->domid == domid)
			return true;
	return false;
}

/* Configured guests (attach = auto) get their device when their domain exists. */
static void auto_attach(struct xb_link *xl)
{
	struct vcmad *d = xl->d;

	for (uint32_t i = 0; i < d->conf.nguests; i++) {
		const struct vcmad_guest_conf *gc = &d->conf.guests[i];
		struct vcmad_xen_dominfo di;
		uint32_t domid, devid;
		char msg[128];

		if (gc->kind != VCMAD_GUEST_XEN || gc->manual_attach || !vcmad_guest_known(d, gc->name) ||
		    resolve_domain(xl, gc->name, &domid) || domain_has_device(xl, domid))
			continue;
		if (vcmad_xen_dominfo(xl->x, domid, &di) || !di.exists || di.dying)
			continue;
		if (make_device(xl, domid, &devid, msg, sizeof(msg)))
			log_warn("xen: guest %s: %s", gc->name, msg);
	}
}

/* vcmactl attach/detach --xen WHO: the xenbus link and WHO's domid, or why not. */
static int ctl_target(struct vcmad *d, const char *who, struct xb_link **xlp, uint32_t *domid, char *msg,
		      size_t msglen)
{
	struct xb_link *xl = NULL;

	for (uint32_t i = 0; i < VCMAD_NLINKS; i++)
		if (d->links[i].ops == &vcmad_link_xenbus)
			xl = d->links[i].priv;
	if (!xl) {
		snprintf(msg, msglen, "vcmad is not running with the Xen backend");
		return -ENODEV;
	}
	if (resolve_domain(xl, who, domid)) {
		snprintf(msg, msglen, "no Xen domain named or numbered '%s'", who);
		return -ENOENT;
	}
	*xlp = xl;
	return 0;
}

int vcmad_xenbus_attach(struct vcmad *d, const char *who, uint32_t *domid, uint32_t *devid, char *msg,
			size_t msglen)
{
	struct xb_link *xl;
	struct vcmad_xen_dominfo di;
	int rc = ctl_target(d, who, &xl, domid, msg, msglen);

	if (rc)
		return rc;
	if (vcmad_xen_dominfo(xl->x, *domid, &di) || !di.exists || di.dying) {
		snprintf(msg, msglen, "domain %u does not exist", *domid);
		return -ENOENT;
	}
	if (*domid == xl->self || *domid == vcmad_xen_holder(xl->x)) {
		snprintf(msg, msglen, "domain %u is vcmad's own or its pool holder", *domid);
		return -EINVAL;
	}
	if (domain_has_device(xl, *domid)) {
		snprintf(msg, msglen, "domain %u has a vcma device already", *domid);
		return -EEXIST;
	}
	return make_device(xl, *domid, devid, msg, msglen);
}

int vcmad_xenbus_detach(struct vcmad *d, const char *who, uint32_t *domid, char *msg, size_t msglen)
{
	struct xb_link *xl;
	bool found = false;
	int rc = ctl_target(d, who, &xl, domid, msg, msglen);

	if (rc)
		return rc;
	for (struct xb_dev *dv = xl->devs, *next; dv; dv = next) {
		char fpath[96];

		next = dv->next;
		if (dv->domid != *domid)
			continue;
		found = true;
		snprintf(fpath, sizeof(fpath), "%s", dv->fpath);
		set_state(dv, XB_CLOSING);
		dev_drop(dv, "detached by vcmactl");
		xs_rm(xl->xs, XBT_NULL, fpath);
	}
	{
		char bdir[80];

		snprintf(bdir, sizeof(bdir), "%s/%u", xl->base, *domid);
		xs_rm(xl->xs, XBT_NULL, bdir);
	}
	if (!found) {
		snprintf(msg, msglen, "domain %u has no vcma device", *domid);
		return -ENOENT;
	}
	return 0;
}

/* Domains died: their devices go (Xen took their frames back already). */
static void domains_released(struct xb_link *xl)
{
	for (struct xb_dev *dv = xl->devs, *next; dv; dv = next) {
		struct vcmad_xen_dominfo di;
		char bdir[80];

		next = dv->next;
		if (vcmad_xen_dominfo(xl->x, dv->domid, &di) || (di.exists && !di.dying))
			continue;
		snprintf(bdir, sizeof(bdir), "%s/%u", xl->base, dv->domid);
		log_info("xen: domain %u died: its vcma device %u goes", dv->domid, dv->devid);
		dev_drop(dv, "its domain died");
		xs_rm(xl->xs, XBT_NULL, bdir);
	}
}

/* ---- events ---- */

static void xs_cb(struct vcma_watch *w, uint32_t events)
{
	struct xb_link *xl = (struct xb_link *)((char *)w - offsetof(struct xb_link, xs_w));
	char **ev;

	while ((ev = xs_check_watch(xl->xs))) {
		const char *path = ev[XS_WATCH_PATH], *token = ev[XS_WATCH_TOKEN];
		unsigned int domid, devid, gen;

		if (!strcmp(token, "be")) {
			if (!strcmp(path, xl->base))
				scan_backend(xl);
			else
				backend_changed(xl, path);
		} else if (!strcmp(token, "rel")) {
			domains_released(xl);
			vcmad_balloon_domains_changed(xl->d);
		} else if (!strcmp(token, "intro")) {
			auto_attach(xl);
			vcmad_relend_kick(xl->d); /* a lender may have come */
		} else if (sscanf(token, "fe:%u:%u:%u", &domid, &devid, &gen) == 3) {
			struct xb_dev *dv = dev_find(xl, domid, devid);

			if (dv && dv->gen == gen)
				frontend_changed(dv);
		}
		free(ev);
	}
}

static struct xb_dev *dev_by_port(struct xb_link *xl, int port)
{
	for (struct xb_dev *dv = xl->devs; dv; dv = dv->next)
		if (dv->lport == port)
			return dv;
	return NULL;
}

static void evt_cb(struct vcma_watch *w, uint32_t events)
{
	struct xb_link *xl = (struct xb_link *)((char *)w - offsetof(struct xb_link, evt_w));

	/* the fd is vcmad's own and non-blocking: pending() returns -1/EAGAIN when done */
	for (int budget = 256; budget > 0; budget--) {
		xenevtchn_port_or_error_t port = xenevtchn_pending(xl->xce);
		struct xb_dev *dv;

		if (port < 0)
			return;
		xenevtchn_unmask(xl->xce, (evtchn_port_t)port);
		dv = dev_by_port(xl, port);
		if (dv && dv->g && !dv->g->dead)
			vcmad_guest_kicked(dv->g);
	}
}

/* ---- the link ops ---- */

static int xb_notify(struct vcmad_guest *g)
{
	struct xb_guest *s = xg(g);

	if (!s->dev || s->dev->lport < 0)
		return -ENOTCONN;
	return xenevtchn_notify(xl_of(g)->xce, (evtchn_port_t)s->dev->lport) ? -errno : 0;
}

static unsigned int order_of(uint64_t n)
{
	unsigned int o = 0;

	while ((1ull << o) < n)
		o++;
	return o;
}

static void xb_shape(struct vcmad_guest *g, struct vcma_alloc_req *req)
{
	uint64_t pages = (req->bytes + VCMA_PAGE_SIZE - 1) >> VCMA_PAGE_SHIFT;
	unsigned int o = order_of(pages);

	if (o > VCMA_XEN_MAX_ORDER)
		return; /* the core says TOO_BIG */
	req->bytes = (uint64_t)VCMA_PAGE_SIZE << o;
	if (req->align_order < o)
		req->align_order = o;
}

static struct xb_region *reg_find(struct xb_guest *s, uint64_t slot)
{
	for (uint32_t i = 0; i < s->nregs; i++)
		if (s->regs[i].used && s->regs[i].slot == slot)
			return &s->regs[i];
	return NULL;
}

static int xb_place(struct vcmad_guest *g, const struct vcma_region *r)
{
	struct xb_guest *s = xg(g);
	struct xb_region *e = NULL;
	uint64_t mfn = 0;
	bool moved = false;
	int rc;

	for (uint32_t i = 0; !e && i < s->nregs; i++)
		if (!s->regs[i].used)
			e = &s->regs[i];
	if (!e || (r->nframes & (r->nframes - 1)))
		return -EINVAL;
	rc = vcmad_xen_give(xl_of(g)->x, s->domid, r->mfn, order_of(r->nframes), &mfn, &moved);
	if (rc)
		return rc == -ENOMEM ? -ENOMEM : rc == -EFAULT ? -ENXIO : rc;
	*e = (struct xb_region){ .slot = r->mfn, .mfn = mfn, .order = (uint8_t)order_of(r->nframes), .used = true,
				 .moved = moved };
	return 0;
}

static void xb_addr(const struct vcmad_guest *g, uint64_t slot, uint64_t *gpa, uint64_t *bus)
{
	struct xb_region *e = reg_find(xg(g), slot);

	*gpa = *bus = e ? e->mfn << VCMA_PAGE_SHIFT : 0;
}

static void xb_clear(struct vcmad_guest *g, const struct vcma_region *r)
{
	struct xb_guest *s = xg(g);
	struct xb_region *e = reg_find(s, r->mfn);
	struct vcmad_xen_dominfo di;
	bool gone;
	int rc;

	if (!e)
		return;
	gone = vcmad_xen_dominfo(xl_of(g)->x, s->domid, &di) || !di.exists;
	rc = vcmad_xen_take(xl_of(g)->x, s->domid, e->slot, e->order, e->mfn, e->moved, gone);
	if (rc)
		vcmad_pool_retire(g->d, r->mfn, r->nframes,
				  rc > 0 ? "Xen could not give the pool its frames back" : "the guest's region could not be released");
	e->used = false;
}

static int xb_read(struct vcmad_guest *g, const struct vcma_region *r, uint64_t off, void *buf, size_t len)
{
	struct xb_region *e = reg_find(xg(g), r->mfn);

	return e ? vcmad_xen_read(xl_of(g)->x, xg(g)->domid, e->mfn, off, buf, len) : -ENOENT;
}

static void xb_close(struct vcmad_guest *g, bool keep_memory)
{
	struct xb_guest *s = xg(g);
	struct xb_dev *dv = s ? s->dev : NULL;

	if (!dv)
		return;
	dv->g = NULL;
	s->dev = NULL;
	unmap_area(dv);
	/* the frontend hears it: Closing when vcmad exits under it, Closed otherwise */
	set_state(dv, keep_memory ? XB_CLOSING : XB_CLOSED);
}

static void xb_describe(struct vcmad_guest *g, struct json_object *o)
{
	struct xb_guest *s = xg(g);
	uint32_t moved = 0;

	for (uint32_t i = 0; i < s->nregs; i++)
		moved += s->regs[i].used && s->regs[i].moved;
	json_object_object_add(o, "domid", json_object_new_int64(s->domid));
	json_object_object_add(o, "devid", json_object_new_int64(s->devid));
	json_object_object_add(o, "area_pages", json_object_new_int64(s->dev ? s->dev->pages : 0));
	json_object_object_add(o, "regions_moved", json_object_new_int64(moved));
}

static int xb_start(struct vcmad_link *l)
{
	struct vcmad *d = l->d;
	struct vcmad_xen *x = vcmad_xen_of(&d->be);
	struct xb_link *xl;
	uint64_t bytes = VCMA_PROTO_PAGE + vcma_page_round(VCMA_RING_BYTES(d->conf.limits.ring_slots)) +
			 vcma_page_round(VCMA_EVT_BYTES(VCMA_DEFAULT_EVT_SLOTS));
	int rc;

	if (!x)
		return 0; /* another backend: no Xen guests */
	xl = calloc(1, sizeof(*xl));
	if (!xl)
		return -ENOMEM;
	l->priv = xl;
	xl->d = d;
	xl->l = l;
	xl->x = x;
	xl->xs = vcmad_xen_xs(x);
	xl->self = vcmad_xen_self(x);
	xl->area_pages = (uint32_t)(bytes / VCMA_PROTO_PAGE);
	xl->xs_w.fd = xl->evt_w.fd = -1;
	if (xl->area_pages > VCMA_XEN_MAX_AREA_PAGES) {
		log_err("xen: ring_slots = %u needs a %u-page area, more than xenbus's %u", d->conf.limits.ring_slots,
			xl->area_pages, VCMA_XEN_MAX_AREA_PAGES);
		return -EINVAL;
	}
	snprintf(xl->base, sizeof(xl->base), "/local/domain/%u/backend/" VCMA_XEN_DEVICE_TYPE, xl->self);
	/* a frontend's bad refs and ports are refusals vcmad logs itself, not library noise */
	xl->xgt = xengnttab_open(vcmad_xen_logger(x), 0);
	xl->xce = xenevtchn_open(vcmad_xen_logger(x), 0);
	if (!xl->xgt || !xl->xce) {
		rc = errno ? -errno : -ENODEV;
		log_err("xen: cannot open %s: %s (load xen-gntdev and xen-evtchn)", !xl->xgt ? "/dev/xen/gntdev"
			: "/dev/xen/evtchn", strerror(-rc));
		return rc;
	}
	/* grant mappings are vcmad's own business: a guest can have at most what fits */
	xengnttab_set_max_grants(xl->xgt, VCMA_XEN_MAX_AREA_PAGES * XB_MAX_DEVICES);
	if (fcntl(xenevtchn_fd(xl->xce), F_SETFL, fcntl(xenevtchn_fd(xl->xce), F_GETFL) | O_NONBLOCK))
		return -errno;
	rc = vcma_loop_add(&d->loop, &xl->evt_w, xenevtchn_fd(xl->xce), EPOLLIN, evt_cb);
	if (!rc)
		rc = vcma_loop_add(&d->loop, &xl->xs_w, xs_fileno(xl->xs), EPOLLIN, xs_cb);
	if (rc)
		return rc;
	if (!xs_watch(xl->xs, xl->base, "be") || !xs_watch(xl->xs, "@releaseDomain", "rel") ||
	    !xs_watch(xl->xs, "@introduceDomain", "intro")) {
		rc = -errno;
		log_err("xen: cannot watch xenstore: %s", strerror(errno));
		return rc;
	}
	log_info("xen: xenbus backend for device type %s at %s (%u-page areas)", VCMA_XEN_DEVICE_TYPE, xl->base,
		 xl->area_pages);
	vcmad_relend_kick(d); /* lenders running already */
	return 0;
}

static void xb_stop(struct vcmad_link *l)
{
	struct xb_link *xl = l->priv;

	if (!xl)
		return;
	while (xl->devs)
		dev_drop(xl->devs, "vcmad stopped");
	if (xl->xs) {
		xs_unwatch(xl->xs, xl->base, "be");
		xs_unwatch(xl->xs, "@releaseDomain", "rel");
		xs_unwatch(xl->xs, "@introduceDomain", "intro");
	}
	if (xl->xs_w.fd >= 0)
		vcma_loop_del(&l->d->loop, &xl->xs_w);
	if (xl->evt_w.fd >= 0)
		vcma_loop_del(&l->d->loop, &xl->evt_w);
	if (xl->xce)
		xenevtchn_close(xl->xce);
	if (xl->xgt)
		xengnttab_close(xl->xgt);
	free(xl);
	l->priv = NULL;
}

static int xb_expect(struct vcmad_link *l, const struct vcmad_guest_conf *gc)
{
	if (l->priv && !gc->manual_attach)
		auto_attach(l->priv);
	return 0;
}

static void xb_forget(struct vcmad_link *l, const struct vcmad_guest_conf *gc)
{
}

const struct vcmad_link_ops vcmad_link_xenbus = {
	.name = "xenbus",
	.kind = VCMAD_GUEST_XEN,
	.start = xb_start,
	.stop = xb_stop,
	.expect = xb_expect,
	.forget = xb_forget,
	.notify = xb_notify,
	.shape = xb_shape,
	.place = xb_place,
	.addr = xb_addr,
	.clear = xb_clear,
	.read = xb_read,
	.close = xb_close,
	.describe = xb_describe,
};
