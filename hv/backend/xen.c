// SPDX-License-Identifier: MIT
/*
 * xen.c - the Xen backend: pools held in a holder domain, regions moved between it
 * and guests (xen.h; docs/XEN.md says why).
 *
 * Per pool: nslots slots, slot i backed by machine frame mfn[i] while held[i]. At
 * start the holder gets the pool as extents of the chunk order (the pool's
 * max_region), zeroed. A region's window is 2^k slots inside one chunk:
 *
 *   give   raise the guest's max_pages; decrease the window out of the holder;
 *          populate order k into the guest, with the address bits of the window's
 *          zone, so Xen hands back the same (zero) frames; anything else Xen hands
 *          out is zeroed, and the window is held again
 *   take   zero the guest's frames; decrease them out of the guest; lower max_pages;
 *          populate the window back into the holder (Xen hands back the same frames)
 *
 * The holder's frames stay zero: they are zeroed when they enter it (unless they are
 * frames vcmad zeroed itself just before).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xentoollog.h>

#include "backend/xen.h"
#include "core.h"
#include "log.h"
#include "vcma_xen.h"

#define XEN_PAGE 4096ull
#define HOLDER_NAME "vcma-pool"
#define MAP_BATCH 1024u /* frames per foreign mapping */
#define RECLAIM_POLL_NS 10000000ull /* 10 ms between tries to hold a reclaim's frames */

struct xen_pool {
	uint64_t slot0, nslots;
	unsigned int chunk_order;
	unsigned int address_bits; /* 0: any */
	const char *name;
	uint64_t *mfn;  /* per slot */
	uint8_t *held;  /* per slot: 1 while the holder holds mfn[i] */
};

struct reclaim {
	struct vcmad_xen *x;
	uint32_t dom;
	uint64_t *slots, count, held;
	uint64_t deadline;
	struct vcma_timer t;
	void (*done)(void *arg, uint64_t held);
	void *arg;
	struct reclaim *next;
};

struct vcmad_xen {
	xentoollog_logger_stdiostream *xtl; /* libxc's own messages: critical only, vcmad says the rest */
	xc_interface *xch;
	xenforeignmemory_handle *fmem;
	struct xs_handle *xs;
	uint32_t self, holder;
	bool holder_made;
	uint64_t holder_max; /* pages the holder may hold */
	struct xen_pool pools[VCMA_MAX_POOLS];
	uint32_t npools;
	struct reclaim *reclaims; /* balloon reclaims under way */
	struct vcma_loop *loop;
	struct vcmad_xen_stats st;
};

static struct vcmad_xen *xp(const struct vcmad_backend *be)
{
	return be->priv;
}

struct vcmad_xen *vcmad_xen_of(const struct vcmad_backend *be)
{
	return be && be->type == &vcmad_backend_xen ? be->priv : NULL;
}

struct xentoollog_logger *vcmad_xen_logger(struct vcmad_xen *x)
{
	return (xentoollog_logger *)x->xtl;
}

uint32_t vcmad_xen_self(const struct vcmad_xen *x)
{
	return x->self;
}

uint32_t vcmad_xen_holder(const struct vcmad_xen *x)
{
	return x->holder;
}

struct xs_handle *vcmad_xen_xs(struct vcmad_xen *x)
{
	return x->xs;
}

void vcmad_xen_get_stats(const struct vcmad_xen *x, struct vcmad_xen_stats *st)
{
	*st = x->st;
}

static unsigned int fls64(uint64_t v)
{
	return v ? 64u - (unsigned int)__builtin_clzll(v) : 0;
}

/* Address bits that keep an allocation in mfn's zone or below (Xen's zones are the
 * bit widths of frame numbers), within the pool's own limit. */
static unsigned int zone_bits(const struct xen_pool *p, uint64_t mfn)
{
	unsigned int b = fls64(mfn) + 12;

	if (b < 13)
		b = 13;
	return p->address_bits && p->address_bits < b ? p->address_bits : b;
}

static struct xen_pool *pool_of(struct vcmad_xen *x, uint64_t slot)
{
	for (uint32_t i = 0; i < x->npools; i++)
		if (slot >= x->pools[i].slot0 && slot - x->pools[i].slot0 < x->pools[i].nslots)
			return &x->pools[i];
	return NULL;
}

int vcmad_xen_dominfo(struct vcmad_xen *x, uint32_t domid, struct vcmad_xen_dominfo *out)
{
	xc_domaininfo_t info;
	int n = xc_domain_getinfolist(x->xch, domid, 1, &info);

	memset(out, 0, sizeof(*out));
	if (n < 0)
		return -errno;
	if (n == 0 || info.domain != domid)
		return 0; /* no such domain (getinfolist gives the next one up) */
	out->exists = true;
	out->dying = info.flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown);
	out->translated = info.flags & XEN_DOMINF_hvm_guest;
	out->tot_pages = info.tot_pages;
	out->max_pages = info.max_pages;
	return 0;
}

/* ---- frames through foreign mappings ---- */

/* Zero (buf NULL) or read count frames of domid given by mfns (PV: the frames are
 * named by machine frame number), in batches. */
static int map_frames(struct vcmad_xen *x, uint32_t domid, const uint64_t *mfns, uint64_t count, uint64_t off,
		      void *buf, size_t len)
{
	xen_pfn_t arr[MAP_BATCH];
	int err[MAP_BATCH];
	uint64_t t0 = vcma_now_ns();

	for (uint64_t done = 0; done < count;) {
		uint32_t n = count - done > MAP_BATCH ? MAP_BATCH : (uint32_t)(count - done);
		uint8_t *p;

		for (uint32_t i = 0; i < n; i++)
			arr[i] = (xen_pfn_t)mfns[done + i];
		p = xenforeignmemory_map(x->fmem, domid, buf ? PROT_READ : PROT_READ | PROT_WRITE, n, arr, err);
		if (!p)
			return -errno;
		for (uint32_t i = 0; i < n; i++)
			if (err[i]) {
				int e = err[i] < 0 ? err[i] : -err[i];

				xenforeignmemory_unmap(x->fmem, p, n);
				return e;
			}
		if (!buf) {
			memset(p, 0, (size_t)n * XEN_PAGE);
		} else {
			uint64_t lo = done * XEN_PAGE, hi = lo + (uint64_t)n * XEN_PAGE;

			if (off < hi && off + len > lo) {
				uint64_t a = off > lo ? off : lo, b = off + len < hi ? off + len : hi;

				memcpy((uint8_t *)buf + (a - off), p + (a - lo), b - a);
			}
		}
		xenforeignmemory_unmap(x->fmem, p, n);
		done += n;
	}
	if (!buf) { /* zeroing: counted when done, with its time, mapping included */
		x->st.zeroed_frames += count;
		x->st.zero_ns += vcma_now_ns() - t0;
	}
	return 0;
}

static int zero_run(struct vcmad_xen *x, uint32_t domid, uint64_t mfn, uint64_t count)
{
	uint64_t *v = malloc(count * sizeof(*v));
	int rc;

	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < count; i++)
		v[i] = mfn + i;
	rc = map_frames(x, domid, v, count, 0, NULL, 0);
	free(v);
	return rc;
}

int vcmad_xen_read(struct vcmad_xen *x, uint32_t domid, uint64_t mfn, uint64_t off, void *buf, size_t len)
{
	uint64_t first = off / XEN_PAGE, last = (off + len + XEN_PAGE - 1) / XEN_PAGE;
	uint64_t *v;
	int rc;

	if (!len)
		return 0;
	v = malloc((last - first) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = first; i < last; i++)
		v[i - first] = mfn + i;
	rc = map_frames(x, domid, v, last - first, off - first * XEN_PAGE, buf, len);
	free(v);
	return rc;
}

/* ---- max_pages ---- */

static int add_max_pages(struct vcmad_xen *x, uint32_t domid, int64_t delta)
{
	struct vcmad_xen_dominfo di;
	int rc = vcmad_xen_dominfo(x, domid, &di);
	uint64_t target;

	if (rc)
		return rc;
	if (!di.exists)
		return -ESRCH;
	if (delta < 0 && di.max_pages < (uint64_t)-delta)
		target = di.tot_pages;
	else
		target = di.max_pages + (uint64_t)delta;
	if (target < di.tot_pages)
		target = di.tot_pages;
	if (xc_domain_setmaxmem(x->xch, domid, target * (XEN_PAGE / 1024)))
		return -errno;
	return 0;
}

/* ---- the holder ---- */

/* Release held slots [s, s+n) of p from the holder: one hypercall. On a partial
 * failure (never expected: the holder's frames are nobody else's) the frames that
 * went are marked so and the error returned. */
static int holder_release(struct vcmad_xen *x, struct xen_pool *p, uint64_t s, uint64_t n)
{
	xen_pfn_t *v = malloc(n * sizeof(*v));
	int done;

	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		v[i] = (xen_pfn_t)p->mfn[s + i];
	done = xc_domain_decrease_reservation(x->xch, x->holder, n, 0, v);
	free(v);
	if (done < 0)
		return errno ? -errno : -EIO;
	for (uint64_t i = 0; i < (uint64_t)done; i++)
		p->held[s + i] = 0;
	x->st.holder_frames -= (uint64_t)done;
	if ((uint64_t)done != n) {
		log_err("xen: pool %s: Xen released %d of %llu held frames", p->name, done, (unsigned long long)n);
		x->st.lost_frames += (uint64_t)done;
		return -EIO;
	}
	return 0;
}

/* Hold slots [s, s + 2^order) of p again: one extent of that order from the zone of
 * `hint` (the frames just released there, at the head of Xen's list), or single
 * frames when no such block is free. known_zero: Xen hands back frames vcmad zeroed
 * itself when it gets `hint` back. Returns 0, or -ENOMEM (nothing held). */
static int holder_refill(struct vcmad_xen *x, struct xen_pool *p, uint64_t s, unsigned int order, uint64_t hint,
			 bool known_zero)
{
	/* first the hint's zone (the same frames back), then anywhere the pool may be */
	const unsigned int bits[2] = { zone_bits(p, hint), p->address_bits };
	uint64_t n = 1ull << order;
	xen_pfn_t one = 0, *v;
	int rc;

	for (int i = 0; i < 2; i++) {
		if (xc_domain_populate_physmap_exact(x->xch, x->holder, 1, order, XENMEMF_address_bits(bits[i]), &one))
			continue;
		for (uint64_t j = 0; j < n; j++) {
			p->mfn[s + j] = one + j;
			p->held[s + j] = 1;
		}
		x->st.holder_frames += n;
		if (!(known_zero && one == hint) && (rc = zero_run(x, x->holder, one, n)))
			log_warn("xen: pool %s: cannot zero frames held again: %s", p->name, strerror(-rc));
		return 0;
	}
	/* no free block of this order: hold the capacity as single frames */
	v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (xc_domain_populate_physmap_exact(x->xch, x->holder, n, 0, XENMEMF_address_bits(p->address_bits), v)) {
		free(v);
		return -ENOMEM;
	}
	for (uint64_t j = 0; j < n; j++) {
		p->mfn[s + j] = v[j];
		p->held[s + j] = 1;
	}
	free(v);
	x->st.holder_frames += n;
	rc = map_frames(x, x->holder, p->mfn + s, n, 0, NULL, 0);
	if (rc)
		log_warn("xen: pool %s: cannot zero frames held again: %s", p->name, strerror(-rc));
	return 0;
}

/* A holder left behind by a vcmad that died: its frames are no region's. */
static void destroy_stale_holders(struct vcmad_xen *x)
{
	xc_domaininfo_t info[256];
	int n = xc_domain_getinfolist(x->xch, 1, 256, info);

	for (int i = 0; i < n; i++) {
		char path[64];
		unsigned int len = 0;
		char *name;

		snprintf(path, sizeof(path), "/local/domain/%u/name", info[i].domain);
		name = xs_read(x->xs, XBT_NULL, path, &len);
		if (name && len == strlen(HOLDER_NAME) && !memcmp(name, HOLDER_NAME, len)) {
			log_notice("xen: destroying domain %u, a pool holder an earlier vcmad left behind", info[i].domain);
			xc_domain_destroy(x->xch, info[i].domain);
			snprintf(path, sizeof(path), "/local/domain/%u", info[i].domain);
			xs_rm(x->xs, XBT_NULL, path);
		}
		free(name);
	}
}

static int make_holder(struct vcmad_xen *x, uint64_t pages)
{
	struct xen_domctl_createdomain cfg = {
		.max_vcpus = 1,
		.max_evtchn_port = 0,
		.max_grant_frames = -1,
		.max_maptrack_frames = -1,
		.grant_opts = XEN_DOMCTL_GRANT_version(1),
	};
	char path[64];
	uint32_t domid = 0;

	if (xc_domain_create(x->xch, &domid, &cfg))
		return -errno;
	x->holder = domid;
	x->holder_made = true;
	x->holder_max = pages;
	if (xc_domain_setmaxmem(x->xch, domid, pages * (XEN_PAGE / 1024)))
		return -errno;
	snprintf(path, sizeof(path), "/local/domain/%u/name", domid);
	if (!xs_write(x->xs, XBT_NULL, path, HOLDER_NAME, strlen(HOLDER_NAME)))
		log_warn("xen: cannot name the holder domain %u in xenstore: %s", domid, strerror(errno));
	return 0;
}

/* Largest power of two dividing n, capped. */
static unsigned int chunk_order_for(uint64_t nslots, uint64_t max_region)
{
	unsigned int o = 0;

	while (o < VCMA_XEN_MAX_ORDER && !(nslots & ((2ull << o) - 1)) && (2ull << o) <= nslots)
		o++;
	if (max_region) {
		unsigned int m = fls64(max_region >> 12) - 1;

		if (m < o)
			o = m;
	}
	return o;
}

static int hold_pool(struct vcmad_xen *x, struct xen_pool *p)
{
	uint64_t nchunks = p->nslots >> p->chunk_order, n = 1ull << p->chunk_order;
	xen_pfn_t *v = calloc(nchunks, sizeof(*v));
	unsigned long done;
	int rc;

	if (!v)
		return -ENOMEM;
	done = (unsigned long)xc_domain_populate_physmap(x->xch, x->holder, nchunks, p->chunk_order,
							  XENMEMF_address_bits(p->address_bits), v);
	if ((long)done < 0 || done != nchunks) {
		xc_physinfo_t pi = { 0 };

		xc_physinfo(x->xch, &pi);
		log_err("xen: pool %s: Xen gave %ld of %llu extents of %llu KiB%s (free memory %llu MiB): "
			"lower the pool's size or its max_region",
			p->name, (long)done < 0 ? 0L : (long)done, (unsigned long long)nchunks,
			(unsigned long long)(n * 4), p->address_bits ? " below the address limit" : "",
			(unsigned long long)(pi.free_pages >> 8));
		if ((long)done > 0)
			xc_domain_decrease_reservation_exact(x->xch, x->holder, done, p->chunk_order, v);
		free(v);
		return -ENOMEM;
	}
	for (uint64_t c = 0; c < nchunks; c++)
		for (uint64_t i = 0; i < n; i++) {
			p->mfn[c * n + i] = v[c] + i;
			p->held[c * n + i] = 1;
		}
	x->st.holder_frames += p->nslots;
	free(v);
	rc = map_frames(x, x->holder, p->mfn, p->nslots, 0, NULL, 0);
	if (rc)
		log_err("xen: pool %s: cannot zero its frames through a foreign mapping: %s", p->name, strerror(-rc));
	return rc;
}

/* ---- the backend's memory ops: pools are slots ---- */

static bool privcmd_present(void)
{
	return !access("/dev/xen/privcmd", F_OK) || !access("/proc/xen/privcmd", F_OK);
}

static int xen_probe(struct vcmad_backend *be, uint64_t *bytes)
{
	struct vcmad_xen *x = calloc(1, sizeof(*x));
	xc_physinfo_t pi = { 0 };
	unsigned int len = 0;
	char *dom;
	int rc;

	if (!x)
		return -ENOMEM;
	be->priv = x;
	x->loop = be->loop;
	if (!privcmd_present()) {
		log_err("backend xen: no /dev/xen/privcmd: vcmad is not running in a Xen domain (run it in dom0 "
			"with the xen-privcmd module loaded), or choose another backend");
		return -ENODEV;
	}
	x->xtl = xtl_createlogger_stdiostream(stderr, XTL_CRITICAL, 0);
	x->xch = xc_interface_open((xentoollog_logger *)x->xtl, NULL, 0);
	x->fmem = xenforeignmemory_open((xentoollog_logger *)x->xtl, 0);
	x->xs = xs_open(0);
	if (!x->xch || !x->fmem || !x->xs) {
		rc = errno ? -errno : -ENODEV;
		log_err("backend xen: cannot open %s: %s (is xenstored running, and is vcmad root in dom0?)",
			!x->xch ? "libxenctrl" : !x->fmem ? "the foreign memory interface" : "xenstore", strerror(-rc));
		return rc;
	}
	if (xc_physinfo(x->xch, &pi)) {
		rc = -errno;
		log_err("backend xen: cannot read Xen's physical memory info: %s", strerror(-rc));
		return rc;
	}
	dom = xs_read(x->xs, XBT_NULL, "domid", &len);
	x->self = dom ? (uint32_t)strtoul(dom, NULL, 10) : 0;
	free(dom);
	*bytes = pi.total_pages * XEN_PAGE;
	log_info("backend xen: Xen %d.%d, %llu MiB of machine memory, %llu MiB free; vcmad in domain %u",
		 xc_version(x->xch, XENVER_version, NULL) >> 16, xc_version(x->xch, XENVER_version, NULL) & 0xffff,
		 (unsigned long long)(pi.total_pages >> 8), (unsigned long long)(pi.free_pages >> 8), x->self);
	return 0;
}

static void xen_fini(struct vcmad_backend *be)
{
	struct vcmad_xen *x = xp(be);

	if (!x)
		return;
	while (x->reclaims) {
		struct reclaim *r = x->reclaims;

		x->reclaims = r->next;
		vcma_timer_cancel(be->loop, &r->t);
		free(r->slots);
		free(r);
	}
	if (x->holder_made) {
		char path[64];

		/* a dying domain's frames are scrubbed by Xen before reuse */
		if (xc_domain_destroy(x->xch, x->holder))
			log_warn("xen: cannot destroy the holder domain %u: %s", x->holder, strerror(errno));
		snprintf(path, sizeof(path), "/local/domain/%u", x->holder);
		xs_rm(x->xs, XBT_NULL, path);
	}
	for (uint32_t i = 0; i < x->npools; i++) {
		free(x->pools[i].mfn);
		free(x->pools[i].held);
	}
	if (x->xs)
		xs_close(x->xs);
	if (x->fmem)
		xenforeignmemory_close(x->fmem);
	if (x->xch)
		xc_interface_close(x->xch);
	if (x->xtl)
		xtl_logger_destroy((xentoollog_logger *)x->xtl);
	free(x);
	be->priv = NULL;
}

static int hold_all(struct vcmad_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools)
{
	struct vcmad_xen *x = xp(be);
	uint64_t total = 0;
	int rc;

	if (!x)
		return -ENODEV; /* probe failed */
	be->machine_bytes = bytes;
	if (npools > VCMA_MAX_POOLS)
		return -E2BIG;
	for (uint32_t i = 0; i < npools; i++) {
		struct xen_pool *p = &x->pools[i];

		p->slot0 = pools[i].mfn;
		p->nslots = pools[i].count;
		p->name = pools[i].cfg->name;
		p->address_bits = pools[i].cfg->address_bits;
		p->chunk_order = chunk_order_for(p->nslots, pools[i].cfg->max_region);
		if (pools[i].cfg->max_region && (pools[i].cfg->max_region >> 12) > (1ull << p->chunk_order)) {
			log_err("xen: pool %s: max_region %llu KiB does not divide the pool's %llu KiB",
				p->name, (unsigned long long)(pools[i].cfg->max_region >> 10),
				(unsigned long long)(p->nslots * 4));
			return -EINVAL;
		}
		/* a region must fit in one chunk, naturally aligned (xenbus rounds it up to
		 * a power of two) */
		pools[i].cfg->max_region = (uint64_t)XEN_PAGE << p->chunk_order;
		if (pools[i].cfg->align_order < p->chunk_order)
			pools[i].cfg->align_order = p->chunk_order;
		p->mfn = calloc(p->nslots, sizeof(*p->mfn));
		p->held = calloc(p->nslots, 1);
		x->npools++;
		if (!p->mfn || !p->held)
			return -ENOMEM;
		total += p->nslots;
	}
	destroy_stale_holders(x);
	rc = make_holder(x, total + 1024);
	if (rc) {
		log_err("xen: cannot create the pool holder domain: %s", strerror(-rc));
		return rc;
	}
	for (uint32_t i = 0; i < x->npools; i++) {
		struct xen_pool *p = &x->pools[i];

		rc = hold_pool(x, p);
		if (rc)
			return rc;
		log_info("xen: pool %s: %llu MiB held in domain %u as %llu extent(s) of %llu KiB from machine "
			 "address %#llx%s", p->name, (unsigned long long)(p->nslots >> 8), x->holder,
			 (unsigned long long)(p->nslots >> p->chunk_order), (unsigned long long)(4ull << p->chunk_order),
			 (unsigned long long)(p->mfn[0] << 12), p->address_bits ? " (address-limited)" : "");
	}
	return 0;
}

/* On error nothing is left: the holder is destroyed, its frames go back to Xen. */
static int xen_init(struct vcmad_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools)
{
	int rc = hold_all(be, bytes, pools, npools);

	if (rc)
		xen_fini(be);
	return rc;
}

/* Slots of a held range: each must be held (an admin region's, or free). */
static int held_frames(struct vcmad_xen *x, uint64_t slot, uint64_t count, struct xen_pool **pp)
{
	struct xen_pool *p = pool_of(x, slot);

	if (!p || count > p->nslots - (slot - p->slot0))
		return -EINVAL;
	for (uint64_t i = 0; i < count; i++)
		if (!p->held[slot - p->slot0 + i])
			return -EFAULT;
	*pp = p;
	return 0;
}

static int xen_zero(struct vcmad_backend *be, uint64_t slot, uint64_t count)
{
	struct vcmad_xen *x = xp(be);
	struct xen_pool *p;
	int rc = held_frames(x, slot, count, &p);

	return rc ? rc : map_frames(x, x->holder, p->mfn + (slot - p->slot0), count, 0, NULL, 0);
}

static int xen_read(struct vcmad_backend *be, uint64_t slot, uint64_t off, void *buf, size_t len)
{
	struct vcmad_xen *x = xp(be);
	uint64_t first = off / XEN_PAGE, n = (off + len + XEN_PAGE - 1) / XEN_PAGE - first;
	struct xen_pool *p;
	int rc = held_frames(x, slot + first, n, &p);

	return rc ? rc : map_frames(x, x->holder, p->mfn + (slot + first - p->slot0), n, off - first * XEN_PAGE, buf,
				    len);
}

static int xen_unsupported(struct vcmad_backend *be, uint64_t a, uint64_t b, uint64_t c)
{
	return -EOPNOTSUPP;
}

static int xen_copy(struct vcmad_backend *be, uint64_t dst, uint64_t src, uint64_t count)
{
	return xen_unsupported(be, dst, src, count);
}

static int xen_touch(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	return 0; /* held frames are populated */
}

static int xen_ram_alloc(struct vcmad_backend *be, uint64_t frames, struct vcma_extent *runs, uint32_t max_runs)
{
	return -EOPNOTSUPP; /* Xen backs its domains' RAM itself */
}

static void xen_ram_free(struct vcmad_backend *be, const struct vcma_extent *runs, uint32_t nruns)
{
}

static uint64_t xen_ram_free_frames(const struct vcmad_backend *be)
{
	xc_physinfo_t pi = { 0 };

	return xc_physinfo(xp(be)->xch, &pi) ? 0 : pi.free_pages;
}

static int xen_machine_frame(const struct vcmad_backend *be, uint64_t slot, uint64_t *mfn)
{
	struct vcmad_xen *x = xp(be);
	struct xen_pool *p = pool_of(x, slot);

	if (!p || !p->held[slot - p->slot0])
		return -ENOENT;
	*mfn = p->mfn[slot - p->slot0];
	return 0;
}

/* ---- regions ---- */

int vcmad_xen_max_order(struct vcmad_xen *x, uint64_t slot)
{
	struct xen_pool *p = pool_of(x, slot);

	return p ? (int)p->chunk_order : -EINVAL;
}

static int give(struct vcmad_xen *x, uint32_t domid, uint64_t slot, unsigned int order, uint64_t *mfn,
		bool *moved)
{
	uint64_t n = 1ull << order, s, want;
	bool contiguous = true;
	struct xen_pool *p;
	xen_pfn_t got = 0;
	int rc = held_frames(x, slot, n, &p);

	if (rc)
		return rc;
	if (order > p->chunk_order || (slot - p->slot0) & (n - 1))
		return -EINVAL;
	s = slot - p->slot0;
	want = p->mfn[s];
	for (uint64_t i = 1; i < n && contiguous; i++)
		contiguous = p->mfn[s + i] == want + i;
	contiguous = contiguous && !(want & (n - 1));
	rc = add_max_pages(x, domid, (int64_t)n);
	if (rc)
		return rc;
	rc = holder_release(x, p, s, n);
	if (rc)
		goto undo_max;
	if (xc_domain_populate_physmap_exact(x->xch, domid, 1, order, XENMEMF_address_bits(zone_bits(p, want)),
					     &got) &&
	    xc_domain_populate_physmap_exact(x->xch, domid, 1, order, XENMEMF_address_bits(p->address_bits), &got)) {
		x->st.populate_failed++;
		rc = -ENOMEM;
		goto refill;
	}
	*mfn = got;
	*moved = got != want;
	/* the holder's frames are zero; frames from anywhere else may hold anything */
	if (*moved) {
		x->st.moved++;
		if (contiguous)
			log_warn("xen: domain %u got frames at %#llx instead of its window's at %#llx: zeroing them, "
				 "holding the window again", domid, (unsigned long long)got << 12,
				 (unsigned long long)want << 12);
		else /* a window held as scattered frames (taken back from a balloon) */
			log_info("xen: domain %u got an extent at %#llx from Xen's free memory; the window was held as "
				 "single frames", domid, (unsigned long long)got << 12);
		rc = zero_run(x, domid, got, n);
		if (rc) {
			xen_pfn_t back = got;

			log_err("xen: cannot zero the frames given to domain %u: %s; taking them back", domid,
				strerror(-rc));
			xc_domain_decrease_reservation_exact(x->xch, domid, 1, order, &back);
			goto refill;
		}
		if (holder_refill(x, p, s, order, want, true)) {
			/* capacity is gone from the pool: the caller retires the slots at FREE */
			x->st.lost_frames += n;
		}
	}
	x->st.given++;
	return 0;
refill:
	if (holder_refill(x, p, s, order, want, true))
		x->st.lost_frames += n;
undo_max:
	add_max_pages(x, domid, -(int64_t)n);
	return rc;
}

static int take(struct vcmad_xen *x, uint32_t domid, uint64_t slot, unsigned int order, uint64_t mfn, bool moved,
		bool domain_gone)
{
	uint64_t n = 1ull << order;
	struct xen_pool *p = pool_of(x, slot);
	uint64_t s;

	if (!p || order > p->chunk_order)
		return -EINVAL;
	s = slot - p->slot0;
	if (!domain_gone) {
		xen_pfn_t v = (xen_pfn_t)mfn;
		int rc = zero_run(x, domid, mfn, n);

		if (rc)
			log_warn("xen: cannot zero a region of domain %u before releasing it: %s", domid, strerror(-rc));
		if (xc_domain_decrease_reservation_exact(x->xch, domid, 1, order, &v)) {
			rc = errno ? -errno : -EIO;
			log_err("xen: domain %u: cannot release its region at %#llx: %s", domid,
				(unsigned long long)mfn << 12, strerror(-rc));
			return rc;
		}
		add_max_pages(x, domid, -(int64_t)n);
	}
	x->st.taken++;
	if (moved)
		return p->held[s] ? 0 : 1;
	/* the frames were zeroed above and are at the head of Xen's list: same frames back */
	if (holder_refill(x, p, s, order, mfn, !domain_gone)) {
		x->st.lost_frames += n;
		log_warn("xen: pool %s: cannot hold %llu KiB again (Xen is short of memory): the pool is that much "
			 "smaller now", p->name, (unsigned long long)(n * 4));
		return 1;
	}
	return 0;
}

int vcmad_xen_give(struct vcmad_xen *x, uint32_t domid, uint64_t slot, unsigned int order, uint64_t *mfn,
		   bool *moved)
{
	uint64_t t0 = vcma_now_ns();
	int rc = give(x, domid, slot, order, mfn, moved);

	if (!rc)
		x->st.give_ns += vcma_now_ns() - t0;
	return rc;
}

int vcmad_xen_take(struct vcmad_xen *x, uint32_t domid, uint64_t slot, unsigned int order, uint64_t mfn,
		   bool moved, bool domain_gone)
{
	uint64_t t0 = vcma_now_ns();
	int rc = take(x, domid, slot, order, mfn, moved, domain_gone);

	if (rc >= 0)
		x->st.take_ns += vcma_now_ns() - t0;
	return rc;
}

/* ---- balloon lending ---- */


static int xs_read_kib(struct vcmad_xen *x, uint32_t dom, const char *node, uint64_t *kib)
{
	char path[64], *v, *end;
	unsigned int len = 0;

	snprintf(path, sizeof(path), "/local/domain/%u/memory/%s", dom, node);
	v = xs_read(x->xs, XBT_NULL, path, &len);
	if (!v)
		return -ENOENT;
	errno = 0;
	*kib = strtoull(v, &end, 10);
	if (errno || end == v || (size_t)(end - v) != len) {
		free(v);
		return -EINVAL;
	}
	free(v);
	return 0;
}

static int set_target(struct vcmad_xen *x, uint32_t dom, uint64_t kib)
{
	char path[64], val[24];

	snprintf(path, sizeof(path), "/local/domain/%u/memory/target", dom);
	snprintf(val, sizeof(val), "%llu", (unsigned long long)kib);
	return xs_write(x->xs, XBT_NULL, path, val, (unsigned int)strlen(val)) ? 0 : -errno;
}

static int domain_named(struct vcmad_xen *x, const char *name, uint32_t *dom)
{
	unsigned int n = 0;
	char **doms = xs_directory(x->xs, XBT_NULL, "/local/domain", &n);
	int rc = -ENOENT;

	for (unsigned int i = 0; doms && i < n && rc; i++) {
		char path[64], *v;
		unsigned int len = 0;

		snprintf(path, sizeof(path), "/local/domain/%s/name", doms[i]);
		v = xs_read(x->xs, XBT_NULL, path, &len);
		if (v && len == strlen(name) && !memcmp(v, name, len)) {
			*dom = (uint32_t)strtoul(doms[i], NULL, 10);
			rc = 0;
		}
		free(v);
	}
	free(doms);
	return rc;
}

static int xen_lender_room(struct vcmad_backend *be, const char *name, uint32_t *dom, uint64_t *pages)
{
	struct vcmad_xen *x = xp(be);
	struct vcmad_xen_dominfo di;
	uint64_t target, smax;
	int rc = domain_named(x, name, dom);

	if (rc)
		return rc;
	if (vcmad_xen_dominfo(x, *dom, &di) || !di.exists || di.dying || di.translated)
		return -ENOENT; /* PV lenders: a translated domain's balloon is not exercised here */
	if (xs_read_kib(x, *dom, "target", &target) || xs_read_kib(x, *dom, "static-max", &smax))
		return -ENOENT;
	*pages = smax > target ? (smax - target) / 4 : 0;
	return 0;
}

static int xen_lend(struct vcmad_backend *be, uint64_t slot, uint64_t count, uint32_t dom)
{
	struct vcmad_xen *x = xp(be);
	struct xen_pool *p;
	uint64_t target;
	int rc = held_frames(x, slot, count, &p);

	if (rc)
		return rc;
	if ((rc = xs_read_kib(x, dom, "target", &target)))
		return rc;
	if ((rc = add_max_pages(x, dom, (int64_t)count)))
		return rc;
	/* the frames are zero (held frames are): the lender's balloon gets nobody's data */
	rc = holder_release(x, p, slot - p->slot0, count);
	if (!rc)
		rc = set_target(x, dom, target + count * 4);
	if (rc) {
		add_max_pages(x, dom, -(int64_t)count);
		return rc;
	}
	x->st.lent_frames += count;
	return 0;
}

/* Hold frames for the reclaim's slots not held yet: one populate of single frames
 * (what the lender gave back is scattered), as many as Xen has. */
static void reclaim_hold(struct reclaim *r)
{
	struct vcmad_xen *x = r->x;
	uint64_t n = r->count - r->held;
	xen_pfn_t *v = calloc(n, sizeof(*v));
	int got;

	if (!v)
		return;
	got = xc_domain_populate_physmap(x->xch, x->holder, n, 0, 0, v);
	for (int i = 0; i < got; i++) {
		uint64_t slot = r->slots[r->held + (uint64_t)i];
		struct xen_pool *p = pool_of(x, slot);

		if (!p) /* cannot happen: the slots came from a pool */
			continue;
		if (p->address_bits && fls64(v[i]) + 12 > p->address_bits) {
			/* above the pool's limit: give it back, wait for a better one */
			xen_pfn_t back = v[i];

			xc_domain_decrease_reservation_exact(x->xch, x->holder, 1, 0, &back);
			got = i;
			break;
		}
		p->mfn[slot - p->slot0] = v[i];
		p->held[slot - p->slot0] = 1;
	}
	if (got > 0) {
		map_frames(x, x->holder, v, (uint64_t)got, 0, NULL, 0);
		r->held += (uint64_t)got;
		x->st.holder_frames += (uint64_t)got;
		x->st.lent_frames -= (uint64_t)got;
	}
	free(v);
}

static void reclaim_cb(struct vcma_timer *t)
{
	struct reclaim *r = (struct reclaim *)((char *)t - offsetof(struct reclaim, t));
	struct vcmad_xen *x = r->x;
	struct vcmad_xen_dominfo di;
	uint64_t now = vcma_loop_now(x->loop);
	bool gone = vcmad_xen_dominfo(x, r->dom, &di) || !di.exists || di.dying;

	/* Hold what Xen has free, up to what the slots need: at once when Xen has free
	 * memory (the lender's balloon gives as much back in its own time, its target
	 * is lower already), else as the balloon gives pages back. */
	reclaim_hold(r);
	if (r->held < r->count && now < r->deadline) {
		vcma_timer_arm(x->loop, t, now + RECLAIM_POLL_NS);
		return;
	}
	if (!gone)
		add_max_pages(x, r->dom, -(int64_t)r->held);
	for (struct reclaim **pp = &x->reclaims; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	x->st.reclaims++;
	if (r->held < r->count)
		x->st.reclaims_short++;
	r->done(r->arg, r->held);
	free(r->slots);
	free(r);
}

/* vcmad exits: what a lender was lent goes back to Xen (its target and max_pages
 * drop; its balloon gives the pages back in its own time). */
static void xen_unlend(struct vcmad_backend *be, uint32_t dom, uint64_t count)
{
	struct vcmad_xen *x = xp(be);
	uint64_t target;

	if (!xs_read_kib(x, dom, "target", &target))
		set_target(x, dom, target > count * 4 ? target - count * 4 : 0);
	add_max_pages(x, dom, -(int64_t)count);
	x->st.lent_frames -= count < x->st.lent_frames ? count : x->st.lent_frames;
}

static int xen_reclaim(struct vcmad_backend *be, const uint64_t *slots, uint64_t count, uint32_t dom,
		       uint64_t deadline_ns, void (*done)(void *arg, uint64_t held), void *arg)
{
	struct vcmad_xen *x = xp(be);
	struct reclaim *r = calloc(1, sizeof(*r));
	struct vcmad_xen_dominfo di;
	uint64_t target;

	if (!r || !(r->slots = malloc(count * sizeof(*slots)))) {
		free(r);
		return -ENOMEM;
	}
	memcpy(r->slots, slots, count * sizeof(*slots));
	*r = (struct reclaim){ .x = x, .dom = dom, .slots = r->slots, .count = count, .deadline = deadline_ns,
			       .done = done, .arg = arg };
	if (!vcmad_xen_dominfo(x, dom, &di) && di.exists && !di.dying) {
		if (!xs_read_kib(x, dom, "target", &target))
			set_target(x, dom, target > count * 4 ? target - count * 4 : 0);
		x->st.reclaim_asked += count;
	}
	vcma_timer_init(&r->t, reclaim_cb);
	r->next = x->reclaims;
	x->reclaims = r;
	vcma_timer_arm(be->loop, &r->t, vcma_loop_now(be->loop));
	return 0;
}

static const struct vcmad_mem_ops xen_mem_ops = {
	.probe = xen_probe,
	.init = xen_init,
	.fini = xen_fini,
	.zero = xen_zero,
	.copy = xen_copy,
	.touch = xen_touch,
	.read = xen_read,
	.ram_alloc = xen_ram_alloc,
	.ram_free = xen_ram_free,
	.ram_free_frames = xen_ram_free_frames,
	.machine_frame = xen_machine_frame,
	.lender_room = xen_lender_room,
	.lend = xen_lend,
	.reclaim = xen_reclaim,
	.unlend = xen_unlend,
};

const struct vcmad_backend_type vcmad_backend_xen = {
	.name = "xen",
	.mem = &xen_mem_ops,
	.vm = NULL,
	.holds_frames = true,
};
