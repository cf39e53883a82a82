// SPDX-License-Identifier: MIT
/*
 * commands.c - what each control command answers, built from the daemon's state.
 *
 * Results are plain JSON objects; numbers are integers in their base unit (bytes,
 * frames, nanoseconds) so clients never parse units, and region handles are hex
 * strings because they use all 64 bits. Read-only commands never change state; alloc
 * and free act only for the vcmactl pseudo-guest (VCMAD_CTL_ADMIN_GUEST).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "alloc.h"
#include "balloon.h"
#include "vmem.h"
#include "ctl/ctl.h"
#include "evict.h"
#include "guest.h"
#include "libvirt.h"
#include "log.h"
#include "vcmad.h"
#include "vm.h"
#ifdef VCMA_HAVE_XEN
#include "backend/xen.h"
#include "link/xenbus.h"
#endif

#ifndef VCMA_VERSION
#define VCMA_VERSION "unknown"
#endif

static void setmsg(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void setmsg(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, len, fmt, ap);
	va_end(ap);
}

/* json-c stores a NULL value as JSON null, so a failed allocation of a leaf shows up
 * as null in the answer rather than as a crash; containers are checked. */
static void add_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

static void add_bool(struct json_object *o, const char *k, bool v)
{
	json_object_object_add(o, k, json_object_new_boolean(v));
}

static void add_hex(struct json_object *o, const char *k, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "0x%llx", (unsigned long long)v);
	add_str(o, k, buf);
}

/* ---- guests by id ---- */

struct gref {
	uint32_t id;
	const struct vcmad_guest *g;
};

struct gindex {
	struct gref *v;
	uint32_t n;
};

static int cmp_gref(const void *a, const void *b)
{
	const struct gref *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int gindex_build(struct vcmad *d, struct gindex *gi)
{
	gi->n = 0;
	gi->v = calloc(d->conf.max_guests ? d->conf.max_guests : 1, sizeof(*gi->v));
	if (!gi->v)
		return -ENOMEM;
	for (uint32_t i = 0; i < d->conf.max_guests; i++) {
		const struct vcmad_guest *g = d->guests.slot[i];

		if (g && !g->dead)
			gi->v[gi->n++] = (struct gref){ .id = g->id, .g = g };
	}
	qsort(gi->v, gi->n, sizeof(*gi->v), cmp_gref);
	return 0;
}

static const struct vcmad_guest *gindex_find(const struct gindex *gi, uint32_t id)
{
	struct gref key = { .id = id };
	const struct gref *r = bsearch(&key, gi->v, gi->n, sizeof(*gi->v), cmp_gref);

	return r ? r->g : NULL;
}

static const char *owner_name(const struct gindex *gi, uint32_t id)
{
	const struct vcmad_guest *g;

	if (id == VCMAD_CTL_ADMIN_GUEST)
		return VCMAD_CTL_ADMIN_NAME;
	g = gindex_find(gi, id);
	return g ? g->name : NULL;
}

/* The guest a request names (by id or name): its id, or -ENOENT. Names match live
 * guests first, then the vcmactl pseudo-guest. */
static int64_t resolve_guest(const struct gindex *gi, const struct vcmad_ctl_req *req, char *msg, size_t msglen)
{
	if (req->guest_name[0]) {
		for (uint32_t i = 0; i < gi->n; i++)
			if (!strcmp(gi->v[i].g->name, req->guest_name))
				return gi->v[i].id;
		if (!strcmp(req->guest_name, VCMAD_CTL_ADMIN_NAME))
			return VCMAD_CTL_ADMIN_GUEST;
		setmsg(msg, msglen, "no guest named '%s'", req->guest_name);
		return -ENOENT;
	}
	if (req->guest_id == VCMAD_CTL_ADMIN_GUEST || gindex_find(gi, req->guest_id))
		return req->guest_id;
	setmsg(msg, msglen, "no guest with id %u", req->guest_id);
	return -ENOENT;
}

/* ---- pools ---- */

static struct json_object *frames_json(const struct vcma_pool_counts *c)
{
	struct json_object *f = json_object_new_object();

	if (!f)
		return NULL;
	add_u64(f, "total", c->nframes);
	add_u64(f, "free", c->free);
	add_u64(f, "lent_free", c->lent_free);
	add_u64(f, "lent_used", c->lent_used);
	add_u64(f, "region", c->region);
	add_u64(f, "reserved", c->reserved);
	add_u64(f, "claimed", c->claimed);
	add_u64(f, "quarantined", c->quarantined);
	return f;
}

static struct json_object *pool_json(const struct vcmad *d, const struct vcma_pool *p)
{
	const struct vcma_pool_config *cfg = &p->cfg;
	struct json_object *o = json_object_new_object();
	struct vcma_pool_counts c;
	char bind[VCMA_BIND_NAME_MAX + 8];

	if (!o)
		return NULL;
	vcma_pool_counts(p, &c);
	add_str(o, "name", cfg->name);
	add_u64(o, "index", p->index);
	add_str(o, "mode", cfg->mode == VCMA_POOL_EXCLUSIVE ? "exclusive" : "shared");
	if (cfg->bind_kind == VCMA_BIND_NONE) {
		json_object_object_add(o, "bind", NULL);
	} else {
		snprintf(bind, sizeof(bind), "%s:%s", cfg->bind_kind == VCMA_BIND_GUEST ? "guest" : "class",
			 cfg->bind_name);
		add_str(o, "bind", bind);
	}
	add_bool(o, "lendable", cfg->lendable == 1);
	if (d->be.type->holds_frames) {
		/* the hypervisor picks the frames: slots, not a machine address */
		json_object_object_add(o, "base", NULL);
		add_str(o, "held_by", d->be.type->name);
	} else {
		add_u64(o, "base", p->fm.base << VCMA_PAGE_SHIFT);
	}
	add_u64(o, "max_region_bytes", cfg->max_region ? cfg->max_region : c.nframes << VCMA_PAGE_SHIFT);
	add_u64(o, "size_bytes", c.nframes << VCMA_PAGE_SHIFT);
	add_u64(o, "frame_bytes", VCMA_PAGE_SIZE);
	json_object_object_add(o, "frames", frames_json(&c));
	add_u64(o, "largest_free_run_frames", c.largest_free_run);
	add_u64(o, "largest_free_run_bytes", c.largest_free_run << VCMA_PAGE_SHIFT);
	add_u64(o, "regions", c.regions);
	if (p->quota == UINT64_MAX)
		json_object_object_add(o, "quota_bytes", NULL);
	else
		add_u64(o, "quota_bytes", p->quota);
	add_u64(o, "align_order", cfg->align_order);
	add_u64(o, "min_request_pages",
		cfg->mode == VCMA_POOL_SHARED || cfg->min_request_set ? cfg->min_request : 1);
	return o;
}

static struct json_object *cmd_pools(struct vcmad *d)
{
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array();

	if (!res || !arr) {
		json_object_put(res);
		json_object_put(arr);
		return NULL;
	}
	for (uint32_t i = 0; i < d->core.npools; i++)
		json_object_array_add(arr, pool_json(d, d->core.pool[i]));
	json_object_object_add(res, "pools", arr);
	return res;
}

static struct json_object *legend_json(void)
{
	struct json_object *l = json_object_new_object();

	if (!l)
		return NULL;
#define X(ch, text)                                 \
	do {                                        \
		char k[2] = { ch, '\0' };           \
		add_str(l, k, text);                \
	} while (0);
	VCMAD_CTL_MAP_LEGEND
#undef X
	return l;
}

static struct json_object *cmd_pool(struct vcmad *d, const struct vcmad_ctl_req *req, int *err, char *msg,
				    size_t msglen)
{
	struct vcma_pool *p = vcma_core_pool_by_name(&d->core, req->pool);
	struct json_object *o, *map, *usage;
	struct gindex gi;
	uint64_t fpc;
	char *buf;
	size_t n;

	if (!p) {
		*err = -ENOENT;
		setmsg(msg, msglen, "no pool named '%s'", req->pool);
		return NULL;
	}
	if (gindex_build(d, &gi)) {
		*err = -ENOMEM;
		return NULL;
	}
	o = pool_json(d, p);
	map = json_object_new_object();
	usage = json_object_new_array();
	buf = malloc(req->width + 1);
	if (!o || !map || !usage || !buf) {
		json_object_put(o);
		json_object_put(map);
		json_object_put(usage);
		free(buf);
		free(gi.v);
		*err = -ENOMEM;
		return NULL;
	}
	fpc = (p->fm.nframes + req->width - 1) / req->width;
	if (!fpc)
		fpc = 1;
	n = vcma_pool_fragmap(p, fpc, buf, req->width + 1);
	add_str(map, "text", buf);
	add_u64(map, "width", n);
	add_u64(map, "frames_per_char", fpc);
	add_u64(map, "bytes_per_char", fpc << VCMA_PAGE_SHIFT);
	json_object_object_add(map, "legend", legend_json());
	json_object_object_add(o, "map", map);
	for (uint32_t i = 0; i < p->nusage; i++) {
		const struct vcma_guest_usage *u = &p->usage[i];
		struct json_object *e;

		if (!u->regions && !u->bytes)
			continue;
		e = json_object_new_object();
		if (!e)
			continue;
		add_u64(e, "guest", u->guest);
		add_str(e, "name", owner_name(&gi, u->guest));
		add_u64(e, "regions", u->regions);
		add_u64(e, "bytes", u->bytes);
		json_object_array_add(usage, e);
	}
	json_object_object_add(o, "usage", usage);
	free(buf);
	free(gi.v);
	return o;
}

/* ---- status, guests, regions ---- */

static uint64_t region_bytes(struct vcmad *d)
{
	uint64_t frames = 0;

	for (uint32_t i = 0; i < d->core.npools; i++)
		frames += d->core.pool[i]->fm.count[VCMA_FRAME_REGION];
	return frames << VCMA_PAGE_SHIFT;
}

static struct json_object *cmd_status(struct vcmad_ctl *ctl)
{
	struct vcmad *d = ctl->d;
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	add_str(o, "version", VCMA_VERSION);
	add_u64(o, "protocol", VCMAD_CTL_VERSION);
	add_u64(o, "pid", (uint64_t)getpid());
	add_u64(o, "uptime_ns", vcmad_now(d) - ctl->start_ns);
	add_str(o, "backend", d->be.type ? d->be.type->name : "none");
	add_u64(o, "machine_bytes", d->conf.machine_bytes);
	add_str(o, "runtime_dir", d->conf.runtime_dir);
	add_u64(o, "pools", d->core.npools);
	add_u64(o, "guests", d->guests.n);
	add_u64(o, "max_guests", d->conf.max_guests);
	if (d->libvirt)
		json_object_object_add(o, "libvirt", vcmad_libvirt_json(d));
	add_u64(o, "regions", d->core.regions.nlive);
	add_u64(o, "region_bytes", region_bytes(d));
	add_u64(o, "attaches", d->stats.attaches);
	add_u64(o, "detaches", d->stats.detaches);
	add_u64(o, "violations", d->stats.violations);
	add_u64(o, "attach_refused", d->stats.attach_refused);
	return o;
}

static struct json_object *guest_json(uint32_t id, const char *name, const char *devclass, const char *role,
				      uint64_t ram_bytes, uint32_t nregions, uint64_t bytes,
				      const struct vcmad_guest_stats *st)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	add_u64(o, "id", id);
	add_str(o, "name", name);
	add_str(o, "class", devclass);
	add_str(o, "role", role);
	add_u64(o, "ram_bytes", ram_bytes);
	add_u64(o, "regions", nregions);
	add_u64(o, "bytes", bytes);
	add_u64(o, "requests", st->requests);
	add_u64(o, "alloc_ok", st->alloc_ok);
	add_u64(o, "alloc_fail", st->alloc_fail);
	add_u64(o, "frees", st->frees);
	add_u64(o, "queries", st->queries);
	add_u64(o, "kicks", st->kicks);
	add_u64(o, "stray_reclaims", st->stray_reclaims);
	add_u64(o, "stray_bytes", st->stray_bytes);
	return o;
}

static struct json_object *cmd_guests(struct vcmad_ctl *ctl, int *err)
{
	struct vcmad *d = ctl->d;
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array();
	struct gindex gi;

	if (!res || !arr || gindex_build(d, &gi)) {
		json_object_put(res);
		json_object_put(arr);
		*err = -ENOMEM;
		return NULL;
	}
	if (ctl->admin.nregions) {
		static const struct vcmad_guest_stats none;

		json_object_array_add(arr, guest_json(VCMAD_CTL_ADMIN_GUEST, VCMAD_CTL_ADMIN_NAME, "", "admin", 0,
						      ctl->admin.nregions, ctl->admin.bytes, &none));
	}
	for (uint32_t i = 0; i < gi.n; i++) {
		const struct vcmad_guest *g = gi.v[i].g;
		const struct vcmad_vm *vm = g->vm;
		struct json_object *o = guest_json(g->id, g->name, g->devclass, g->role,
						   vm ? vm->ctl.ram_frames << VCMA_PAGE_SHIFT : 0, g->rq.nregions,
						   g->rq.bytes, &g->stats);

		if (o) {
			/* configured: the identity comes from a [guest] section; pending: ALLOCs
			 * waiting for a vacate; unresponsive: left PAUSEs unanswered (vcmad(8)) */
			add_str(o, "link", g->link->ops->name);
			json_object_object_add(o, "configured", json_object_new_boolean(g->conf != NULL));
			if (g->conf && g->conf->libvirt)
				add_str(o, "domain", g->name); /* a libvirt domain, found by discovery */
			add_u64(o, "uid", g->uid);
			add_u64(o, "pending_allocs", g->rq.pending);
			add_u64(o, "pending_bytes", g->rq.pending_bytes);
			add_u64(o, "max_bytes", g->rq.max_bytes); /* its quota, or [limits] max_bytes_per_guest */
			json_object_object_add(o, "lending", json_object_new_boolean(vm && !vm->no_lend));
			json_object_object_add(o, "unresponsive", json_object_new_boolean(vm && vm->unresponsive));
			if (g->link->ops->describe)
				g->link->ops->describe((struct vcmad_guest *)g, o);
		}
		json_object_array_add(arr, o);
	}
	json_object_object_add(res, "guests", arr);
	free(gi.v);
	return res;
}

static struct json_object *region_json(struct vcmad *d, const struct gindex *gi, const struct vcma_region *r)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	add_hex(o, "handle", r->handle);
	add_u64(o, "guest", r->guest);
	add_str(o, "guest_name", owner_name(gi, r->guest));
	add_str(o, "pool", r->pool < d->core.npools ? d->core.pool[r->pool]->cfg.name : NULL);
	add_u64(o, "mfn", r->mfn);
	if (d->be.type->holds_frames) {
		/* r->mfn is a slot: the machine address is the link's (a guest's region) or
		 * the backend's (a held one, vcmactl's) */
		const struct vcmad_guest *g = r->guest != VCMAD_CTL_ADMIN_GUEST ? vcmad_guest_find(d, r->guest) : NULL;
		uint64_t gpa = 0, bus = 0, mfn;

		if (g)
			g->link->ops->addr(g, r->mfn, &gpa, &bus);
		else if (d->be.type->mem->machine_frame && !d->be.type->mem->machine_frame(&d->be, r->mfn, &mfn))
			bus = mfn << VCMA_PAGE_SHIFT;
		add_u64(o, "bus", bus);
	} else {
		add_u64(o, "bus", r->mfn << VCMA_PAGE_SHIFT);
	}
	add_u64(o, "gpa", r->gpa);
	add_u64(o, "size_bytes", r->nframes << VCMA_PAGE_SHIFT);
	add_u64(o, "frames", r->nframes);
	return o;
}

static struct json_object *cmd_regions(struct vcmad *d, const struct vcmad_ctl_req *req, int *err, char *msg,
				       size_t msglen)
{
	struct json_object *res, *arr;
	const struct vcma_pool *p = NULL;
	struct gindex gi;
	int64_t guest = -1;
	uint64_t bytes = 0;

	if (req->pool[0] && !(p = vcma_core_pool_by_name(&d->core, req->pool))) {
		*err = -ENOENT;
		setmsg(msg, msglen, "no pool named '%s'", req->pool);
		return NULL;
	}
	if (gindex_build(d, &gi)) {
		*err = -ENOMEM;
		return NULL;
	}
	if (req->has_guest) {
		int64_t g = resolve_guest(&gi, req, msg, msglen);

		if (g < 0) {
			*err = (int)g;
			free(gi.v);
			return NULL;
		}
		/* a name may be shared by several guests: then match names, not one id */
		if (!req->guest_name[0])
			guest = g;
	}
	res = json_object_new_object();
	arr = json_object_new_array();
	if (!res || !arr) {
		json_object_put(res);
		json_object_put(arr);
		free(gi.v);
		*err = -ENOMEM;
		return NULL;
	}
	for (uint32_t cursor = 0;;) {
		const struct vcma_region *r = vcma_regions_next(&d->core.regions, &cursor);
		const char *owner;

		if (!r)
			break;
		if (p && r->pool != p->index)
			continue;
		if (guest >= 0 && r->guest != (uint32_t)guest)
			continue;
		if (req->guest_name[0] && (!(owner = owner_name(&gi, r->guest)) || strcmp(owner, req->guest_name)))
			continue;
		json_object_array_add(arr, region_json(d, &gi, r));
		bytes += r->nframes << VCMA_PAGE_SHIFT;
	}
	add_u64(res, "count", json_object_array_length(arr));
	add_u64(res, "bytes", bytes);
	json_object_object_add(res, "regions", arr);
	free(gi.v);
	return res;
}

/* ---- admin allocations ---- */

/*
 * A test allocation is served as a guest's is (alloc.h): policy, search, and when
 * the cheapest window holds lent frames, vacating them; the answer then waits for the
 * job and this client takes no further request meanwhile.
 */
static struct json_object *cmd_alloc(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, const struct vcmad_ctl_req *req,
				     int *err, char *msg, size_t msglen)
{
	struct vcma_alloc_req ar = { .bytes = req->bytes, .align_order = req->align_order,
				     .pool = req->pool[0] ? req->pool : NULL };
	char sz[32];

	vcma_format_bytes(req->bytes, sz, sizeof(sz));
	snprintf(c->job_what, sizeof(c->job_what), "alloc %s%s%s", sz, ar.pool ? " in pool " : "",
		 ar.pool ? ar.pool : "");
	c->job_done = false;
	if (vcmad_alloc(&ctl->admin, (uintptr_t)c, &ar) == VCMAD_ALLOC_WAITING || !c->job_done) {
		/* answered when done (vcmad_ctl_alloc_done): after a vacate, or after the
		 * turn's commit (durable.h) */
		*err = -EINPROGRESS;
		return NULL;
	}
	c->job_done = false;
	return vcmad_ctl_alloc_answer(ctl, c, err, msg, msglen);
}

struct json_object *vcmad_ctl_alloc_answer(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, int *err, char *msg,
					   size_t msglen)
{
	struct vcmad *d = ctl->d;
	const char *why;
	struct gindex gi = { 0 };
	struct json_object *o;

	*err = c->job_err;
	if (!*err) {
		o = region_json(d, &gi, &c->job_r);
		if (!o)
			*err = -ENOMEM;
		return o;
	}
	switch (*err) {
	case -ENODEV: why = strstr(c->job_what, " in pool ") ? "no such pool" : vcma_core_strerror(*err); break;
	case -ENOBUFS:
		setmsg(msg, msglen,
		       "%s: vcmactl already holds %u region(s), the per-guest limit "
		       "([limits] max_regions_per_guest, max_bytes_per_guest)", c->job_what, ctl->admin.nregions);
		return NULL;
	case -ESHUTDOWN: why = "vcmad is shutting down"; break;
	case -EBUSY:
		why = d->restore.vms_waiting ? "vcmad restarted and hands nothing out until the VMs it took back have "
					       "reattached or been reclaimed (reattach_grace_ms)"
					     : vcma_core_strerror(*err);
		break;
	default: why = vcma_core_strerror(*err); break;
	}
	setmsg(msg, msglen, "%s: %s", c->job_what, why);
	return NULL;
}

static struct json_object *cmd_free(struct vcmad_ctl *ctl, const struct vcmad_ctl_req *req, int *err, char *msg,
				    size_t msglen)
{
	struct json_object *o;
	int rc = vcmad_free(&ctl->admin, req->handle);

	if (rc == -ENOENT) {
		/* say whose it is: the operator may have pasted a guest's handle */
		for (uint32_t cursor = 0;;) {
			const struct vcma_region *r = vcma_regions_next(&ctl->d->core.regions, &cursor);

			if (!r)
				break;
			if (r->handle == req->handle) {
				*err = -EPERM;
				setmsg(msg, msglen,
				       "region %#llx belongs to guest %u: vcmactl frees only its own allocations",
				       (unsigned long long)req->handle, r->guest);
				return NULL;
			}
		}
	}
	if (rc) {
		*err = rc;
		setmsg(msg, msglen, "free %#llx: %s", (unsigned long long)req->handle, vcma_core_strerror(rc));
		return NULL;
	}
	log_info("ctl: admin region %#llx freed", (unsigned long long)req->handle);
	o = json_object_new_object();
	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	add_hex(o, "handle", req->handle);
	return o;
}

/* ---- hash: a region's bytes as the host sees them ---- */

static uint64_t fnv1a64(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* A region's bytes as its owner sees them: through its guest's link, or for vcmactl's
 * own regions straight from machine memory. */
static int region_read(struct vcmad *d, const struct vcma_region *r, uint64_t off, void *buf, size_t len)
{
	struct vcmad_guest *g = vcmad_guest_find(d, r->guest);

	if (off > r->nframes << VCMA_PAGE_SHIFT || len > (r->nframes << VCMA_PAGE_SHIFT) - off)
		return -EINVAL;
	if (g && !g->dead)
		return g->link->ops->read(g, r, off, buf, len);
	return d->be.type->mem->read(&d->be, r->mfn, off, buf, len);
}

static struct json_object *cmd_hash(struct vcmad *d, const struct vcmad_ctl_req *req, int *err, char *msg,
				    size_t msglen)
{
	const struct vcma_region *r = NULL;
	struct json_object *o;
	uint64_t h = 0xcbf29ce484222325ull, size;
	uint8_t *buf;

	for (uint32_t cursor = 0; !r;) {
		const struct vcma_region *x = vcma_regions_next(&d->core.regions, &cursor);

		if (!x)
			break;
		if (x->handle == req->handle)
			r = x;
	}
	if (!r) {
		*err = -ENOENT;
		setmsg(msg, msglen, "no region %#llx", (unsigned long long)req->handle);
		return NULL;
	}
	size = r->nframes << VCMA_PAGE_SHIFT;
	if (size > VCMAD_CTL_HASH_MAX) {
		*err = -EFBIG;
		setmsg(msg, msglen, "region %#llx is %llu MiB: hash reads at most %llu MiB", (unsigned long long)r->handle,
		       (unsigned long long)(size >> 20), VCMAD_CTL_HASH_MAX >> 20);
		return NULL;
	}
	buf = malloc(1u << 20);
	if (!buf) {
		*err = -ENOMEM;
		return NULL;
	}
	for (uint64_t off = 0; off < size; off += 1u << 20) {
		size_t n = size - off < (1u << 20) ? (size_t)(size - off) : 1u << 20;

		*err = region_read(d, r, off, buf, n);
		if (*err) {
			free(buf);
			setmsg(msg, msglen, "region %#llx: its memory cannot be read: %s", (unsigned long long)r->handle,
			       strerror(-*err));
			return NULL;
		}
		h = fnv1a64(h, buf, n);
	}
	free(buf);
	o = json_object_new_object();
	if (!o) {
		*err = -ENOMEM;
		return NULL;
	}
	add_hex(o, "handle", r->handle);
	add_u64(o, "guest", r->guest);
	add_u64(o, "size_bytes", size);
	add_hex(o, "fnv1a64", h);
	return o;
}

/* ---- compact, drain ---- */

static struct json_object *vacate_json(struct vcmad *d, const struct vcmad_vacate_result *res)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();

	if (!o || !arr) {
		json_object_put(o);
		json_object_put(arr);
		return NULL;
	}
	for (uint32_t i = 0; i < res->npools; i++) {
		const struct vcmad_vacate_pool *vp = &res->pool[i];
		struct json_object *e = json_object_new_object();

		if (!e)
			continue;
		add_str(e, "name", d->core.pool[vp->pool]->cfg.name);
		add_u64(e, "lent_free", vp->lent_free);
		add_u64(e, "lent_used", vp->lent_used);
		add_u64(e, "scheduled", vp->scheduled);
		add_u64(e, "largest_free_run_bytes", vp->largest_free << VCMA_PAGE_SHIFT);
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "pools", arr);
	add_u64(o, "lent_found", res->lent_found);
	add_u64(o, "scheduled", res->scheduled);
	return o;
}

static struct json_object *cmd_vacate(struct vcmad_ctl *ctl, const struct vcmad_ctl_req *req, int *err, char *msg,
				      size_t msglen)
{
	struct vcmad *d = ctl->d;
	struct vcmad_vacate_result *res;
	struct json_object *o = NULL;
	struct gindex gi;
	int64_t guest = 0;
	int rc;

	if (d->be.type->holds_frames) {
		/* lent capacity is in lenders' balloons: it comes back when an allocation
		 * needs it (docs/XEN.md), not by moving VMs' pages */
		*err = -EOPNOTSUPP;
		setmsg(msg, msglen, "%s: not with the %s backend (lent capacity comes back on demand)",
		       req->cmd == VCMAD_CTL_DRAIN ? "drain" : "compact", d->be.type->name);
		return NULL;
	}
	res = malloc(sizeof(*res));
	if (!res || gindex_build(d, &gi)) {
		free(res);
		*err = -ENOMEM;
		return NULL;
	}
	if (req->cmd == VCMAD_CTL_DRAIN) {
		guest = resolve_guest(&gi, req, msg, msglen);
		if (guest < 0) {
			*err = (int)guest;
			goto out;
		}
		rc = vcmad_drain(d, (uint32_t)guest, res);
	} else {
		rc = vcmad_compact(d, req->pool[0] ? req->pool : NULL, res);
	}
	if (rc == -ENOENT) {
		setmsg(msg, msglen, "no pool named '%s'", req->pool);
	} else if (rc == -ENOMEM) {
		setmsg(msg, msglen, "%llu lent frame(s) found but not enough free ordinary memory to move them to; "
			       "nothing scheduled for the pool(s) concerned", (unsigned long long)res->lent_found);
	} else if (rc) {
		setmsg(msg, msglen, "%s", strerror(-rc));
	}
	if (rc) {
		*err = rc;
		goto out;
	}
	o = vacate_json(d, res);
	if (!o) {
		*err = -ENOMEM;
		goto out;
	}
	if (req->cmd == VCMAD_CTL_DRAIN) {
		add_u64(o, "guest", (uint64_t)guest);
		add_str(o, "guest_name", owner_name(&gi, (uint32_t)guest));
	}
	log_info("ctl: %s: %llu lent frame(s) found, %llu scheduled to move", req->cmd == VCMAD_CTL_DRAIN ? "drain" : "compact",
		 (unsigned long long)res->lent_found, (unsigned long long)res->scheduled);
out:
	free(gi.v);
	free(res);
	return o;
}

/* ---- stats ---- */

static struct json_object *hist_json(const struct vcma_hist *h)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();

	if (!o || !arr) {
		json_object_put(o);
		json_object_put(arr);
		return NULL;
	}
	add_u64(o, "count", h->count);
	add_u64(o, "sum_ns", h->sum_ns);
	add_u64(o, "max_ns", h->max_ns);
	add_u64(o, "p50_ns", vcma_hist_quantile(h, 0.5));
	add_u64(o, "p99_ns", vcma_hist_quantile(h, 0.99));
	/* bucket b counts [2^b, 2^(b+1)) ns, the last one everything above: le is null */
	for (unsigned int b = 0; b < VCMA_HIST_BUCKETS; b++) {
		struct json_object *e = json_object_new_object();

		if (!e)
			continue;
		if (b + 1 < VCMA_HIST_BUCKETS)
			add_u64(e, "le_ns", 1ull << (b + 1));
		else
			json_object_object_add(e, "le_ns", NULL);
		add_u64(e, "count", h->bucket[b]);
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "buckets", arr);
	return o;
}

/* A virtio-mem lender's device, as its driver last reported it. */
static void vmem_json(const struct vcmad *d, const struct vcmad_lender *l, struct json_object *e)
{
	struct vcmad_vmem *v = vcmad_vmem_of((struct vcmad *)d, l->name);
	struct vcmad_vmem_info vi;

	if (!v)
		return;
	vcmad_vmem_get_info(v, &vi);
	add_bool(e, "up", vi.up);
	add_u64(e, "plugged_bytes", vi.plugged);
	add_u64(e, "requested_bytes", vi.requested);
	add_u64(e, "asked_size_bytes", vi.target);
	add_u64(e, "max_bytes", vi.max);
	add_u64(e, "block_bytes", vi.block);
	add_u64(e, "pending", vi.pending);
	add_u64(e, "lost", vi.losts);
	add_u64(e, "restarts", vi.restarts);
}

/* Lending: lenders and what they hold, lends and reclaims. */
static struct json_object *balloon_json(const struct vcmad *d)
{
	const struct vcmad_balloon *b = &d->balloon;
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();

	if (!o || !arr) {
		json_object_put(o);
		json_object_put(arr);
		return NULL;
	}
	for (uint32_t i = 0; i < b->nlenders; i++) {
		const struct vcmad_lender *l = &b->lender[i];
		struct json_object *e;

		if (!l->ops || !(e = json_object_new_object()))
			continue;
		add_str(e, "name", l->name);
		add_str(e, "kind", l->ops->kind);
		add_bool(e, "present", l->present);
		add_u64(e, "domid", l->dom);
		add_u64(e, "lent_bytes", l->lent << VCMA_PAGE_SHIFT);
		add_u64(e, "lends", l->st.lends);
		add_u64(e, "lent_bytes_total", l->st.lent_total << VCMA_PAGE_SHIFT);
		add_u64(e, "asked_bytes", l->st.asked << VCMA_PAGE_SHIFT);
		add_u64(e, "came_back_bytes", l->st.came_back << VCMA_PAGE_SHIFT);
		add_u64(e, "reclaims", l->st.reclaims);
		add_u64(e, "reclaims_short", l->st.reclaims_short);
		add_u64(e, "reclaim_ns_max", l->st.reclaim_ns_max);
		add_u64(e, "reclaim_ns_total", l->st.reclaim_ns_total);
		vmem_json(d, l, e);
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "lenders", arr);
	add_u64(o, "lent_bytes", vcmad_balloon_lent(d) << VCMA_PAGE_SHIFT);
	add_u64(o, "lends", b->lends);
	add_u64(o, "lent_bytes_total", b->lent_frames_total << VCMA_PAGE_SHIFT);
	add_u64(o, "reclaims", b->reclaims);
	add_u64(o, "reclaimed_bytes", b->reclaimed_frames << VCMA_PAGE_SHIFT);
	add_u64(o, "reclaims_short", b->reclaims_short);
	add_u64(o, "reclaim_ns_max", b->reclaim_ns_max);
	add_u64(o, "reclaim_ns_mean", b->reclaims ? b->reclaim_ns_total / b->reclaims : 0);
	return o;
}

#ifdef VCMA_HAVE_XEN
/* The Xen backend's counters (backend/xen.h). */
static struct json_object *xen_json(const struct vcmad *d)
{
	struct vcmad_xen *x = vcmad_xen_of(&d->be);
	struct json_object *o = json_object_new_object();
	struct vcmad_xen_stats st;

	if (!o)
		return NULL;
	vcmad_xen_get_stats(x, &st);
	add_u64(o, "holder_domid", vcmad_xen_holder(x));
	add_u64(o, "held_bytes", st.holder_frames << VCMA_PAGE_SHIFT);
	add_u64(o, "lent_bytes", st.lent_frames << VCMA_PAGE_SHIFT);
	add_u64(o, "regions_given", st.given);
	add_u64(o, "regions_taken", st.taken);
	add_u64(o, "regions_moved", st.moved);
	add_u64(o, "give_ns_mean", st.given ? st.give_ns / st.given : 0);
	add_u64(o, "take_ns_mean", st.taken ? st.take_ns / st.taken : 0);
	add_u64(o, "lost_bytes", st.lost_frames << VCMA_PAGE_SHIFT);
	add_u64(o, "zeroed_bytes", st.zeroed_frames << VCMA_PAGE_SHIFT);
	add_u64(o, "zero_ns", st.zero_ns);
	add_u64(o, "populate_failed", st.populate_failed);
	add_u64(o, "reclaims", st.reclaims);
	add_u64(o, "reclaims_short", st.reclaims_short);
	add_u64(o, "reclaim_asked_bytes", st.reclaim_asked << VCMA_PAGE_SHIFT);
	return o;
}
#endif

static struct json_object *cmd_stats(struct vcmad_ctl *ctl)
{
	struct vcmad *d = ctl->d;
	struct json_object *res = json_object_new_object(), *arr = json_object_new_array(), *dm = json_object_new_object(),
			   *c = json_object_new_object();
	uint64_t requests = 0;

	if (!res || !arr || !dm || !c) {
		json_object_put(res);
		json_object_put(arr);
		json_object_put(dm);
		json_object_put(c);
		return NULL;
	}
	for (uint32_t i = 0; i < d->core.npools; i++) {
		const struct vcma_pool *p = d->core.pool[i];
		const struct vcma_pool_stats *s = &p->stats;
		struct json_object *e = json_object_new_object();
		struct vcma_pool_counts cnt;

		if (!e)
			continue;
		vcma_pool_counts(p, &cnt);
		add_str(e, "name", p->cfg.name);
		add_u64(e, "alloc_success", s->alloc_success);
		add_u64(e, "alloc_fail", s->alloc_fail);
		add_u64(e, "alloc_pages_success", s->alloc_pages_success);
		add_u64(e, "alloc_pages_fail", s->alloc_pages_fail);
		add_u64(e, "release_pages_success", s->release_pages_success);
		add_u64(e, "vacated_lent_free", s->vacated_lent_free);
		add_u64(e, "vacated_lent_used", s->vacated_lent_used);
		json_object_object_add(e, "frames", frames_json(&cnt));
		add_u64(e, "largest_free_run_bytes", cnt.largest_free_run << VCMA_PAGE_SHIFT);
		add_u64(e, "regions", cnt.regions);
		json_object_object_add(e, "alloc_latency", hist_json(&s->alloc_latency));
		json_object_array_add(arr, e);
	}
	json_object_object_add(res, "pools", arr);
	for (uint32_t i = 0; i < d->conf.max_guests; i++)
		if (d->guests.slot[i] && !d->guests.slot[i]->dead)
			requests += d->guests.slot[i]->stats.requests;
	add_u64(dm, "uptime_ns", vcmad_now(d) - ctl->start_ns);
	add_u64(dm, "guests", d->guests.n);
	add_u64(dm, "regions", d->core.regions.nlive);
	add_u64(dm, "attaches", d->stats.attaches);
	add_u64(dm, "detaches", d->stats.detaches);
	add_u64(dm, "violations", d->stats.violations);
	add_u64(dm, "attach_refused", d->stats.attach_refused);
	add_u64(dm, "guest_requests", requests);
	/* guests that went away holding regions or RAM: from the loop turn that saw them
	 * go to everything free in the pools; the zeroing after it (the scrubber) */
	add_u64(dm, "reclaims", d->stats.reclaims);
	add_u64(dm, "reclaimed_regions", d->stats.reclaimed_regions);
	add_u64(dm, "reclaimed_ram_frames", d->stats.reclaimed_ram_frames);
	add_u64(dm, "reclaim_last_ns", d->stats.reclaim_last_ns);
	json_object_object_add(dm, "reclaim_latency", hist_json(&d->stats.reclaim_latency));
	add_u64(dm, "scrub_pending_frames", d->scrub.pending_frames);
	add_u64(dm, "scrubbed_frames", d->scrub.scrubbed_frames);
	add_u64(dm, "scrub_errors", d->scrub.errors);
	add_u64(dm, "scrub_deferred", d->scrub.deferred);
	/* ownership recorded in the state directory (durable.h): turns committed and what
	 * a commit took, turns that failed, whole rewrites after one, answers held for a
	 * commit and grants taken back; stale: allocations refused now */
	add_u64(dm, "state_commits", d->durable.commits);
	add_u64(dm, "state_commit_ns_mean", d->durable.commits ? d->durable.commit_ns_total / d->durable.commits : 0);
	add_u64(dm, "state_commit_ns_max", d->durable.commit_ns_max);
	add_u64(dm, "state_failures", d->durable.failures);
	add_u64(dm, "state_resyncs", d->durable.resyncs);
	add_u64(dm, "state_answers_held", d->durable.held_total);
	add_u64(dm, "state_grants_taken_back", d->durable.refused);
	json_object_object_add(dm, "state_stale", json_object_new_boolean(d->durable.stale));
	/* guests taken back after a restart (restore.h): how many of each, how many came
	 * back and how many were reclaimed; waiting now, and VMs among them (nothing is
	 * handed out while restore_vms_waiting > 0) */
	add_u64(dm, "restored_guests", d->restore.restored_guests);
	add_u64(dm, "restored_regions", d->restore.restored_regions);
	add_u64(dm, "restored_vms", d->restore.restored_vms);
	add_u64(dm, "restore_back", d->restore.back);
	add_u64(dm, "restore_reclaimed", d->restore.reclaimed);
	add_u64(dm, "restore_waiting", d->restore.waiting);
	add_u64(dm, "restore_vms_waiting", d->restore.vms_waiting);
	/* FREEs whose frames were zeroed after their turn's answers (alloc.h) */
	/* turns for requests guests published without a kick (PROTOCOL.md §4.9) */
	add_u64(dm, "lazy_takes_closed", d->guests.lazy_takes_closed);
	add_u64(dm, "lazy_takes_early", d->guests.lazy_takes_early);
	add_u64(dm, "frees_held", d->held.frees);
	add_u64(dm, "frees_held_released_early", d->held.released_early);
	/* every VM pause for a vacate batch, PAUSE sent to RESUME sent */
	json_object_object_add(dm, "pause_latency", hist_json(&d->vacate.pause_hist));
	add_u64(dm, "vacate_jobs_ok", d->vacate.jobs_ok);
	add_u64(dm, "vacate_jobs_failed", d->vacate.jobs_failed);
	/* what VMMs that log writes or take drops were spared (ARCHITECTURE.md) */
	add_u64(dm, "drops", d->vacate.drops);
	add_u64(dm, "dropped_pages", d->vacate.dropped_pages);
	add_u64(dm, "precopy_batches", d->vacate.precopy_batches);
	add_u64(dm, "precopy_rounds", d->vacate.precopy_rounds);
	add_u64(dm, "precopy_pages", d->vacate.precopy_pages);
	add_u64(dm, "precopy_recopied", d->vacate.precopy_recopied);
	add_u64(dm, "precopy_final_pages", d->vacate.precopy_final_pages);
	add_u64(dm, "precopy_fallbacks", d->vacate.precopy_fallbacks);
	add_u64(dm, "reuses_held", d->vacate.reuses_held);
	/* relend's first copies spread over loop turns, and batches given up for another job */
	add_u64(dm, "copy_slices", d->vacate.copy_slices);
	add_u64(dm, "relend_gave_way", d->vacate.relend_gave_way);
	/* what one loop turn held the daemon: from finding work to the turn's end */
	json_object_object_add(dm, "loop_turn", hist_json(&d->stats.loop_turn));
	/* ordinary memory: free frames, and those promised to running vacate jobs */
	add_u64(dm, "ordinary_free_frames", d->be.type->mem->ram_free_frames(&d->be));
	add_u64(dm, "ordinary_reserved_frames", d->vacate.ord_reserved);
	add_u64(c, "clients", ctl->nclients);
	add_u64(c, "accepted", ctl->stats.accepted);
	add_u64(c, "refused", ctl->stats.refused);
	add_u64(c, "busy", ctl->stats.busy);
	add_u64(c, "requests", ctl->stats.requests);
	add_u64(c, "errors", ctl->stats.errors);
	add_u64(c, "dropped", ctl->stats.dropped);
	add_u64(c, "evicted", ctl->stats.evicted);
	json_object_object_add(dm, "ctl", c);
	json_object_object_add(res, "daemon", dm);
	if (d->balloon.nlenders)
		json_object_object_add(res, "balloon", balloon_json(d));
	if (d->libvirt)
		json_object_object_add(res, "libvirt", vcmad_libvirt_json(d));
#ifdef VCMA_HAVE_XEN
	if (vcmad_xen_of(&d->be))
		json_object_object_add(res, "xen", xen_json(d));
#endif
	return res;
}

/* xen-attach / xen-detach: make or remove a domain's vcma device (PROTOCOL.md §9.3). */
static struct json_object *cmd_xen(struct vcmad *d, const struct vcmad_ctl_req *req, int *err, char *msg,
				   size_t msglen)
{
#ifdef VCMA_HAVE_XEN
	struct json_object *res;
	uint32_t domid = 0, devid = 0;

	if (req->cmd == VCMAD_CTL_XEN_ATTACH)
		*err = vcmad_xenbus_attach(d, req->domain, &domid, &devid, msg, msglen);
	else
		*err = vcmad_xenbus_detach(d, req->domain, &domid, msg, msglen);
	if (*err)
		return NULL;
	log_info("ctl: %s of domain %u (%s)", req->cmd == VCMAD_CTL_XEN_ATTACH ? "xen-attach" : "xen-detach", domid,
		 req->domain);
	res = json_object_new_object();
	add_u64(res, "domid", domid);
	if (req->cmd == VCMAD_CTL_XEN_ATTACH)
		add_u64(res, "devid", devid);
	return res;
#else
	(void)d;
	(void)req;
	*err = -ENODEV;
	setmsg(msg, msglen, "this vcmad was built without Xen support (libxen-dev)");
	return NULL;
#endif
}

/* attach / detach / domain: a libvirt request, answered when the worker has done it
 * (-EINPROGRESS: the server holds the client's next lines until then). */
static struct json_object *cmd_libvirt(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c,
				       const struct vcmad_ctl_req *req, int *err, char *msg, size_t msglen)
{
	enum vcmad_lv_request rq = req->cmd == VCMAD_CTL_ATTACH   ? VCMAD_LVR_ATTACH
				   : req->cmd == VCMAD_CTL_DETACH ? VCMAD_LVR_DETACH
				   : !strcmp(req->action, "define") ? VCMAD_LVR_DEFINE
				   : !strcmp(req->action, "start")  ? VCMAD_LVR_START
				   : !strcmp(req->action, "destroy") ? VCMAD_LVR_DESTROY
								     : VCMAD_LVR_UNDEFINE;

	if (!c) {
		*err = -EINVAL;
		setmsg(msg, msglen, "libvirt requests come from a client");
		return NULL;
	}
	*err = vcmad_libvirt_request(ctl->d, rq, req->domain, req->devclass, req->xml, vcmad_ctl_lv_done, c, msg,
				     msglen);
	if (*err == -EOPNOTSUPP && !msg[0])
		setmsg(msg, msglen, "this vcmad was built without libvirt support (libvirt-dev)");
	if (!*err) {
		c->job_lv = true;
		*err = -EINPROGRESS;
	}
	return NULL;
}

struct json_object *vcmad_ctl_exec(struct vcmad_ctl *ctl, struct vcmad_ctl_client *c, const struct vcmad_ctl_req *req,
				   int *err, char *msg, size_t msglen)
{
	struct json_object *res = NULL;

	*err = 0;
	msg[0] = '\0';
	switch (req->cmd) {
	case VCMAD_CTL_STATUS: res = cmd_status(ctl); break;
	case VCMAD_CTL_POOLS: res = cmd_pools(ctl->d); break;
	case VCMAD_CTL_POOL: res = cmd_pool(ctl->d, req, err, msg, msglen); break;
	case VCMAD_CTL_GUESTS: res = cmd_guests(ctl, err); break;
	case VCMAD_CTL_REGIONS: res = cmd_regions(ctl->d, req, err, msg, msglen); break;
	case VCMAD_CTL_ALLOC: res = cmd_alloc(ctl, c, req, err, msg, msglen); break;
	case VCMAD_CTL_FREE: res = cmd_free(ctl, req, err, msg, msglen); break;
	case VCMAD_CTL_COMPACT:
	case VCMAD_CTL_DRAIN: res = cmd_vacate(ctl, req, err, msg, msglen); break;
	case VCMAD_CTL_STATS: res = cmd_stats(ctl); break;
	case VCMAD_CTL_HASH: res = cmd_hash(ctl->d, req, err, msg, msglen); break;
	case VCMAD_CTL_XEN_ATTACH:
	case VCMAD_CTL_XEN_DETACH: res = cmd_xen(ctl->d, req, err, msg, msglen); break;
	case VCMAD_CTL_ATTACH:
	case VCMAD_CTL_DETACH:
	case VCMAD_CTL_DOMAIN:
		res = cmd_libvirt(ctl, c, req, err, msg, msglen);
		if (*err == -EINPROGRESS)
			return NULL;
		break;
	default:
		*err = -EINVAL;
		setmsg(msg, msglen, "unknown command");
		return NULL;
	}
	if (!res && !*err)
		*err = -ENOMEM;
	if (*err && !msg[0])
		setmsg(msg, msglen, "%s", strerror(-*err));
	if (*err) {
		json_object_put(res);
		return NULL;
	}
	return res;
}
