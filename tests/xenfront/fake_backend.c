/*
 * fake_backend.c - a test double of vcmad's Xen backend for dom0, written from
 * PROTOCOL.md 9.3 alone, to drive vcma.ko's frontend under real Xen
 * (test_xen_frontend.py). It is not vcmad: one guest, one device, a fixed 4-page
 * layout, no pools, and it cuts every corner a test allows.
 *
 * usage: fake_backend DOMID PAGES MODE SECONDS
 *   PAGES     area-pages to offer (the layout needs 4; fewer fails the guest's 2.5 check)
 *   MODE      good      HELLO; ALLOC populates 2^k machine frames into the domain and
 *                       answers bus = gpa = their machine address; FREE decreases them
 *             foreign   the first ALLOC is answered with frames populated and freed
 *                       again (not the domain's)
 *             twice     the second ALLOC is answered with the first region's frames
 *             misalign  the first ALLOC is answered one page off its alignment
 *   SECONDS   then it closes by itself (the backend going away under the guest)
 *
 * It hashes a region's frames through a foreign mapping when the guest FREEs it
 * (what the guest wrote is in the machine frames it was given), and when the
 * frontend closes it detaches: decreases what is left, unmaps the area, state 6.
 * Every line it prints starts with "BACK ".
 */
#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xengnttab.h>
#include <xenstore.h>

#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_test_pattern.h"
#include "vcma_xen.h"

#define MAXR 64

static struct xs_handle *xs;
static xc_interface *xch;
static xenforeignmemory_handle *fmem;
static unsigned int domid;
static char fe[128], be[128];
static struct {
	uint64_t handle;
	xen_pfn_t mfn;
	unsigned int order;
} reg[MAXR];
static uint64_t next_handle = 0x100;
static int nalloc;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("BACK ");
	vprintf(fmt, ap);
	printf("\n");
	fflush(stdout);
	va_end(ap);
}

static char *rd(const char *dir, const char *key)
{
	char path[256];
	unsigned int len;

	snprintf(path, sizeof(path), "%s/%s", dir, key);
	return xs_read(xs, XBT_NULL, path, &len);
}

static void wr(const char *dir, const char *key, const char *val)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, key);
	xs_write(xs, XBT_NULL, path, val, strlen(val));
}

static int fe_state(void)
{
	char *s = rd(fe, "state");
	int v = s ? atoi(s) : 0;

	free(s);
	return v;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t tot_pages(void)
{
	xc_domaininfo_t info;

	if (xc_domain_getinfolist(xch, domid, 1, &info) != 1)
		return 0;
	return info.tot_pages;
}

static int populate(unsigned int order, xen_pfn_t *mfn)
{
	uint64_t tot = tot_pages();
	xen_pfn_t a = 0x100000 + ((xen_pfn_t)nalloc << 18);

	if (xc_domain_setmaxmem(xch, domid, (tot + (1ull << order) + 1024) * 4)) {
		say("setmaxmem: %s", strerror(errno));
		return -1;
	}
	if (xc_domain_populate_physmap_exact(xch, domid, 1, order, 0, &a)) {
		say("populate order %u: %s", order, strerror(errno));
		return -1;
	}
	*mfn = a;
	nalloc++;
	return 0;
}

static void depopulate(xen_pfn_t mfn, unsigned int order)
{
	xen_pfn_t a = mfn;

	if (xc_domain_decrease_reservation_exact(xch, domid, 1, order, &a))
		say("decrease mfn %#lx order %u: %s", (unsigned long)mfn, order, strerror(errno));
}

static uint64_t hash_frames(xen_pfn_t mfn, unsigned int order)
{
	unsigned long n = 1ul << order, i;
	xen_pfn_t *arr = calloc(n, sizeof(*arr));
	int *err = calloc(n, sizeof(*err));
	uint64_t h = 0;
	void *p;

	for (i = 0; i < n; i++)
		arr[i] = mfn + i;
	p = xenforeignmemory_map(fmem, domid, PROT_READ, n, arr, err);
	if (p) {
		h = vcma_tp_fnv(VCMA_TP_FNV0, p, n * 4096);
		xenforeignmemory_unmap(fmem, p, n);
	} else {
		say("foreign map of %#lx: %s", (unsigned long)mfn, strerror(errno));
	}
	free(arr);
	free(err);
	return h;
}

int main(int argc, char **argv)
{
	unsigned int pages, i, refs[VCMA_XEN_MAX_AREA_PAGES], port, nreq = 0;
	const char *mode;
	double deadline;
	xengnttab_handle *xgt;
	xenevtchn_handle *xce;
	xenevtchn_port_or_error_t lport;
	struct vcma_ctrl *c;
	struct vcma_ring_hdr *rh;
	union vcma_slot *slots;
	struct vcma_evt_hdr *eh;
	uint32_t req_cons = 0, rsp_prod = 0;
	uint8_t *area;
	char buf[32], *s;

	if (argc != 5)
		return 2;
	domid = atoi(argv[1]);
	pages = atoi(argv[2]);
	mode = argv[3];
	deadline = now() + atoi(argv[4]);
	snprintf(fe, sizeof(fe), "/local/domain/%u/device/vcma/0", domid);
	snprintf(be, sizeof(be), "/local/domain/0/backend/vcma/%u/0", domid);
	xs = xs_open(0);
	xch = xc_interface_open(NULL, NULL, 0);
	fmem = xenforeignmemory_open(NULL, 0);
	xgt = xengnttab_open(NULL, 0);
	xce = xenevtchn_open(NULL, 0);
	if (!xs || !xch || !fmem || !xgt || !xce) {
		say("open: %s", strerror(errno));
		return 1;
	}
	snprintf(buf, sizeof(buf), "%u", pages);
	wr(be, "area-pages", buf);
	wr(be, "state", "2");
	say("InitWait, area-pages %u", pages);
	while (fe_state() != 3) {
		if (now() > deadline) {
			say("frontend never Initialised (state %d)", fe_state());
			return 1;
		}
		usleep(50000);
	}
	for (i = 0; i < pages; i++) {
		char key[32];

		snprintf(key, sizeof(key), "ring-ref%u", i);
		s = rd(fe, key);
		if (!s || vcma_xen_parse_u32(s, strlen(s), 0xffffffffu, &refs[i])) {
			say("bad %s", key);
			return 1;
		}
		free(s);
	}
	s = rd(fe, "event-channel");
	if (!s || vcma_xen_parse_u32(s, strlen(s), 0xffffffffu, &port)) {
		say("bad event-channel");
		return 1;
	}
	free(s);
	area = xengnttab_map_domain_grant_refs(xgt, pages, domid, refs, PROT_READ | PROT_WRITE);
	lport = xenevtchn_bind_interdomain(xce, domid, port);
	if (!area || lport < 0) {
		say("map/bind: %s", strerror(errno));
		return 1;
	}
	say("mapped %u refs (first %u), port %u", pages, refs[0], port);
	/* the layout of 2.5 with 64 + 64 slots: 4 pages */
	c = (struct vcma_ctrl *)area;
	memset(area, 0, pages * 4096);
	c->magic = VCMA_PROTO_MAGIC;
	c->major = 1;
	c->hdr_size = 128;
	c->host_features = VCMA_F_EVENTS | VCMA_F_NAMED_POOL;
	c->generation = 1;
	c->guest_id = 7;
	c->req_off = 4096;
	c->req_slots = 64;
	c->evt_off = 4096 + 8192;
	c->evt_slots = 64;
	c->max_outstanding = 64;
	c->max_regions = 256;
	c->max_bytes = UINT64_MAX;
	rh = (struct vcma_ring_hdr *)(area + c->req_off);
	slots = (union vcma_slot *)(rh + 1);
	eh = (struct vcma_evt_hdr *)(area + c->evt_off);
	rh->req_event = rh->rsp_event = eh->evt_event = 1;
	vcma_store_release(&c->state, VCMA_STATE_READY);
	wr(be, "state", "4");
	say("Connected");

	for (;;) {
		struct pollfd pfd = { .fd = xenevtchn_fd(xce), .events = POLLIN };
		int st = fe_state(), fired = 0;
		uint32_t prod;

		if (st == 5 || st == 6 || st == 0 || now() > deadline) {
			say("frontend state %d: detaching", st);
			break;
		}
		if (poll(&pfd, 1, 100) > 0) {
			xenevtchn_port_or_error_t p = xenevtchn_pending(xce);

			if (p >= 0)
				xenevtchn_unmask(xce, p);
		}
		prod = vcma_load_acquire(&rh->req_prod);
		while (req_cons != prod) {
			struct vcma_req q;
			struct vcma_rsp r = { 0 };

			vcma_copy_from_shared(&q, &slots[req_cons & 63], sizeof(q));
			req_cons++;
			nreq++;
			r.id = q.id;
			if (q.op == VCMA_OP_HELLO) {
				r.val[0] = q.arg1 & c->host_features;
				r.val[1] = 1u << 16;
				c->guest_features = r.val[0];
				vcma_store_release(&c->state, VCMA_STATE_CONNECTED);
				say("HELLO features %#llx", (unsigned long long)r.val[0]);
			} else if (q.op == VCMA_OP_ALLOC) {
				uint64_t pg = (q.length + 4095) / 4096;
				unsigned int order = 0, k;
				xen_pfn_t mfn;

				while ((1ull << order) < pg)
					order++;
				if (order < q.arg0)
					order = q.arg0;
				k = MAXR;
				for (i = 0; i < MAXR; i++)
					if (!reg[i].handle) {
						k = i;
						break;
					}
				if (!strcmp(mode, "twice") && nalloc == 1 && reg[0].handle) {
					r.status = VCMA_ST_OK;
					r.handle = next_handle++;
					r.bus = r.gpa = (uint64_t)reg[0].mfn << 12;
					r.length = 4096ull << reg[0].order;
					nalloc++;
					say("ALLOC answered with region %#llx's frames again: handle %#llx",
					    (unsigned long long)reg[0].handle, (unsigned long long)r.handle);
				} else if (k == MAXR || populate(order, &mfn)) {
					r.status = VCMA_ST_NO_MEMORY;
				} else if (!strcmp(mode, "foreign") && nalloc == 1) {
					depopulate(mfn, order);
					r.status = VCMA_ST_OK;
					r.handle = next_handle++;
					r.bus = r.gpa = (uint64_t)mfn << 12;
					r.length = 4096ull << order;
					say("ALLOC answered with freed frames %#lx order %u: handle %#llx", (unsigned long)mfn,
					    order, (unsigned long long)r.handle);
				} else {
					reg[k].handle = next_handle++;
					reg[k].mfn = mfn;
					reg[k].order = order;
					r.status = VCMA_ST_OK;
					r.handle = reg[k].handle;
					r.bus = r.gpa = (uint64_t)mfn << 12;
					if (!strcmp(mode, "misalign") && nalloc == 1)
						r.bus = r.gpa = r.bus + 4096;
					r.length = 4096ull << order;
					say("ALLOC handle %#llx mfn %#lx order %u tot_pages %llu", (unsigned long long)r.handle,
					    (unsigned long)mfn, order, (unsigned long long)tot_pages());
				}
			} else if (q.op == VCMA_OP_FREE) {
				r.handle = q.handle;
				r.status = VCMA_ST_NO_REGION;
				for (i = 0; i < MAXR; i++) {
					if (reg[i].handle && reg[i].handle == q.handle) {
						uint64_t h = hash_frames(reg[i].mfn, reg[i].order);

						depopulate(reg[i].mfn, reg[i].order);
						say("FREE handle %#llx mfn %#lx fnv %#018llx tot_pages %llu",
						    (unsigned long long)q.handle, (unsigned long)reg[i].mfn,
						    (unsigned long long)h, (unsigned long long)tot_pages());
						reg[i].handle = 0;
						r.status = VCMA_ST_OK;
					}
				}
				if (r.status)
					say("FREE of unknown handle %#llx", (unsigned long long)q.handle);
			} else if (q.op == VCMA_OP_QUERY) {
				r.status = VCMA_ST_OK;
				r.length = 64ull << 20;
				r.val[0] = 32ull << 20;
			} else {
				r.status = VCMA_ST_INVALID;
			}
			memcpy(&slots[rsp_prod & 63], &r, sizeof(r));
			rsp_prod++;
			fired = 1;
		}
		if (fired) {
			vcma_store_release(&rh->rsp_prod, rsp_prod);
			vcma_mb();
			xenevtchn_notify(xce, lport);
		}
		vcma_write_once(&rh->req_event, req_cons + 1);
	}
	for (i = 0; i < MAXR; i++) {
		if (reg[i].handle) {
			say("detach: region %#llx mfn %#lx freed while the guest holds it", (unsigned long long)reg[i].handle,
			    (unsigned long)reg[i].mfn);
			depopulate(reg[i].mfn, reg[i].order);
		}
	}
	xenevtchn_unbind(xce, lport);
	xengnttab_unmap(xgt, area, pages);
	wr(be, "state", "6");
	say("Closed after %u requests, tot_pages %llu", nreq, (unsigned long long)tot_pages());
	return 0;
}
