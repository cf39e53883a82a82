// SPDX-License-Identifier: MIT
/*
 * hostile_xen.c - a hostile frontend of the Xen split device "vcma", written from
 * PROTOCOL.md §9.3 alone, run in a PV domU without vcma.ko: it drives its device's
 * xenstore nodes, grants and event channel from userspace (/dev/xen/xenbus,
 * /dev/xen/gntalloc, /dev/xen/evtchn) and attacks vcmad with them.
 *
 *   hostile-xen SCENARIO...   runs each scenario on device 0 in turn, resetting the
 *                             device between them (frontend Closed, then Initialising)
 *
 * Scenarios (each prints "HOSTILE name ok: ..." or "HOSTILE name FAIL: ..."):
 *   bad-ref      ring-ref0 is not a decimal: vcmad refuses the device, says why
 *   few-refs     fewer refs than area-pages: refused
 *   bad-gref     refs that grant nothing: refused (cannot map)
 *   bad-port     an event channel that is not ours: refused (cannot bind)
 *   overflow     a valid connection, then req_prod far beyond the ring: cut off
 *   kick-flood   a valid connection, then notifications as fast as possible for
 *                3 s: vcmad stays responsive (the host test checks the other
 *                guest meanwhile) and cuts the flood off or absorbs it
 *   scribble     rewrite the control page (state, slots) after connecting, then a
 *                valid HELLO: vcmad never reads its control page back
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>

#include "vcma_barrier.h"
#include "vcma_proto.h"
#include "vcma_xen.h"

enum { ST_INITIALISING = 1, ST_INITWAIT, ST_INITIALISED, ST_CONNECTED, ST_CLOSING, ST_CLOSED };

static struct xs_handle *xs;
static xengntshr_handle *xgs;
static xenevtchn_handle *xce;
static char fdir[96], bdir[96];
static unsigned int me;
static int failures;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *rd(const char *dir, const char *node)
{
	char path[160];
	unsigned int len;

	snprintf(path, sizeof(path), "%s/%s", dir, node);
	return xs_read(xs, XBT_NULL, path, &len);
}

static int rd_int(const char *dir, const char *node)
{
	char *v = rd(dir, node);
	int x = v ? atoi(v) : -1;

	free(v);
	return x;
}

static void wr(const char *dir, const char *node, const char *val)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/%s", dir, node);
	if (!xs_write(xs, XBT_NULL, path, val, (unsigned int)strlen(val)))
		fprintf(stderr, "hostile-xen: write %s: %s\n", path, strerror(errno));
}

static void wr_int(const char *dir, const char *node, long v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%ld", v);
	wr(dir, node, buf);
}

/* Wait up to secs for the backend's state to be one of a or b. */
static int wait_backend(int a, int b, double secs)
{
	double end = now_s() + secs;
	int st;

	do {
		st = rd_int(bdir, "state");
		if (st == a || st == b)
			return st;
		usleep(20000);
	} while (now_s() < end);
	return st;
}

static void result(const char *name, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void result(const char *name, bool ok, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("HOSTILE %s %s: %s\n", name, ok ? "ok" : "FAIL", buf);
	fflush(stdout);
	failures += !ok;
}

/* Start over: Closed, then Initialising; the backend answers InitWait. */
static int reset_device(void)
{
	wr_int(fdir, "state", ST_CLOSED);
	wait_backend(ST_CLOSED, ST_CLOSED, 5);
	wr_int(fdir, "state", ST_INITIALISING);
	return wait_backend(ST_INITWAIT, ST_INITWAIT, 10) == ST_INITWAIT ? 0 : -1;
}

/* A refusal: state Closed and an error node naming the reason. */
static void expect_refusal(const char *name, const char *reason)
{
	int st = wait_backend(ST_CLOSED, ST_CONNECTED, 10);
	char *err = rd(bdir, VCMA_XEN_KEY_ERROR);

	result(name, st == ST_CLOSED && err && strstr(err, reason), "backend state %d, error '%s'", st,
	       err ? err : "(none)");
	free(err);
}

struct conn {
	void *area;
	uint32_t pages, refs[VCMA_XEN_MAX_AREA_PAGES];
	int port;
};

/* Grant the area and bind a port, as a frontend does; publish them unless told not
 * to (then the caller writes its own nodes). */
static int share(struct conn *c, bool publish)
{
	int p = rd_int(bdir, VCMA_XEN_KEY_AREA_PAGES);
	char node[24];

	if (p < 1 || p > (int)VCMA_XEN_MAX_AREA_PAGES)
		return -1;
	c->pages = (uint32_t)p;
	c->area = xengntshr_share_pages(xgs, 0, (int)c->pages, c->refs, 1);
	if (!c->area)
		return -1;
	c->port = xenevtchn_bind_unbound_port(xce, 0);
	if (c->port < 0)
		return -1;
	if (!publish)
		return 0;
	for (uint32_t i = 0; i < c->pages; i++) {
		snprintf(node, sizeof(node), VCMA_XEN_KEY_RING_REF "%u", i);
		wr_int(fdir, node, c->refs[i]);
	}
	wr_int(fdir, VCMA_XEN_KEY_EVTCHN, c->port);
	wr_int(fdir, "state", ST_INITIALISED);
	return 0;
}

static void unshare(struct conn *c)
{
	if (c->port >= 0)
		xenevtchn_unbind(xce, (evtchn_port_t)c->port);
	if (c->area)
		xengntshr_unshare(xgs, c->area, c->pages);
	memset(c, 0, sizeof(*c));
	c->port = -1;
}

static void scenario(const char *name)
{
	struct conn c = { .port = -1 };
	char node[24];

	if (reset_device()) {
		result(name, false, "the backend did not come back to InitWait (state %d)", rd_int(bdir, "state"));
		return;
	}
	if (!strcmp(name, "bad-ref")) {
		wr(fdir, VCMA_XEN_KEY_RING_REF "0", "12ab");
		wr_int(fdir, VCMA_XEN_KEY_EVTCHN, 1);
		wr_int(fdir, "state", ST_INITIALISED);
		expect_refusal(name, "ring-ref0");
	} else if (!strcmp(name, "few-refs")) {
		if (share(&c, false))
			goto io;
		wr_int(fdir, VCMA_XEN_KEY_RING_REF "0", c.refs[0]);
		for (uint32_t i = 1; i < c.pages; i++) {
			char path[160];

			snprintf(path, sizeof(path), "%s/" VCMA_XEN_KEY_RING_REF "%u", fdir, i);
			xs_rm(xs, XBT_NULL, path);
		}
		wr_int(fdir, VCMA_XEN_KEY_EVTCHN, c.port);
		wr_int(fdir, "state", ST_INITIALISED);
		expect_refusal(name, c.pages > 1 ? "ring-ref1" : "ring-ref0");
	} else if (!strcmp(name, "bad-gref")) {
		if (share(&c, false))
			goto io;
		for (uint32_t i = 0; i < c.pages; i++) {
			snprintf(node, sizeof(node), VCMA_XEN_KEY_RING_REF "%u", i);
			wr_int(fdir, node, 4000000 + (long)i); /* never granted */
		}
		wr_int(fdir, VCMA_XEN_KEY_EVTCHN, c.port);
		wr_int(fdir, "state", ST_INITIALISED);
		expect_refusal(name, "cannot map");
	} else if (!strcmp(name, "bad-port")) {
		if (share(&c, false))
			goto io;
		for (uint32_t i = 0; i < c.pages; i++) {
			snprintf(node, sizeof(node), VCMA_XEN_KEY_RING_REF "%u", i);
			wr_int(fdir, node, c.refs[i]);
		}
		wr_int(fdir, VCMA_XEN_KEY_EVTCHN, 4000); /* not an unbound port of ours */
		wr_int(fdir, "state", ST_INITIALISED);
		expect_refusal(name, "cannot bind");
	} else {
		/* the attacks on a live ring: connect properly first */
		volatile struct vcma_ctrl *ctrl;
		struct vcma_ring_hdr *rh;

		if (share(&c, true))
			goto io;
		if (wait_backend(ST_CONNECTED, ST_CLOSED, 10) != ST_CONNECTED) {
			result(name, false, "the backend did not connect (state %d)", rd_int(bdir, "state"));
			goto out;
		}
		ctrl = c.area;
		rh = (struct vcma_ring_hdr *)((char *)c.area + vcma_read_once(&ctrl->req_off));
		if (!strcmp(name, "overflow")) {
			vcma_store_release(&rh->req_prod, 0x7fffffffu);
			xenevtchn_notify(xce, (evtchn_port_t)c.port);
			result(name, wait_backend(ST_CLOSED, ST_CLOSED, 10) == ST_CLOSED &&
					     vcma_load_acquire(&ctrl->state) == VCMA_STATE_DEAD,
			       "backend state %d, control page state %u", rd_int(bdir, "state"),
			       vcma_load_acquire(&ctrl->state));
		} else if (!strcmp(name, "kick-flood")) {
			double end = now_s() + 3;
			unsigned long n = 0;

			while (now_s() < end && rd_int(bdir, "state") == ST_CONNECTED)
				for (int i = 0; i < 2000; i++, n++)
					xenevtchn_notify(xce, (evtchn_port_t)c.port);
			/* either way is fine for vcmad; the other guest's service is what the
			 * host test checks */
			result(name, true, "%lu notifications in %.1f s; backend state %d, control page state %u", n,
			       3.0, rd_int(bdir, "state"), vcma_load_acquire(&ctrl->state));
		} else if (!strcmp(name, "scribble")) {
			memset((void *)ctrl, 0xff, 128);
			xenevtchn_notify(xce, (evtchn_port_t)c.port);
			usleep(200000);
			/* the host keeps its own copy: still connected, the ring still served */
			result(name, rd_int(bdir, "state") == ST_CONNECTED, "backend state %d after the control page was "
			       "overwritten", rd_int(bdir, "state"));
		} else {
			result(name, false, "no such scenario");
		}
	}
out:
	unshare(&c);
	return;
io:
	result(name, false, "cannot grant the area or allocate a port: %s", strerror(errno));
	unshare(&c);
}

int main(int argc, char **argv)
{
	char *dom;
	unsigned int len;

	setvbuf(stdout, NULL, _IOLBF, 0);
	xs = xs_open(0);
	xgs = xengntshr_open(NULL, 0);
	xce = xenevtchn_open(NULL, 0);
	if (!xs || !xgs || !xce) {
		fprintf(stderr, "hostile-xen: cannot open xenstore, gntalloc or evtchn: %s\n", strerror(errno));
		return 2;
	}
	dom = xs_read(xs, XBT_NULL, "domid", &len);
	if (!dom) {
		fprintf(stderr, "hostile-xen: cannot read my domid\n");
		return 2;
	}
	me = (unsigned int)atoi(dom);
	free(dom);
	snprintf(fdir, sizeof(fdir), "/local/domain/%u/device/" VCMA_XEN_DEVICE_TYPE "/0", me);
	{
		char *b = rd(fdir, "backend");

		if (!b) {
			fprintf(stderr, "hostile-xen: no vcma device in %s\n", fdir);
			return 2;
		}
		snprintf(bdir, sizeof(bdir), "%s", b);
		free(b);
	}
	for (int i = 1; i < argc; i++)
		scenario(argv[i]);
	wr_int(fdir, "state", ST_CLOSED);
	printf("HOSTILE done: %d failure(s)\n", failures);
	return failures ? 1 : 0;
}
