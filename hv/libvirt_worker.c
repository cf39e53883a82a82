// SPDX-License-Identifier: MIT
/*
 * libvirt_worker.c - the libvirt thread (libvirt_worker.h): the only code that calls
 * libvirt. It runs libvirt's default event loop; vcmad's loop reaches it through a
 * queue and an eventfd registered in that loop, and hears back the same way.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt_worker.h"
#include "log.h"

struct vcmad_lv_worker {
	char uri[256];
	pthread_t thread;
	pthread_mutex_t mu;
	struct vcmad_lv_msg *in_head, *in_tail;   /* loop -> worker */
	struct vcmad_lv_msg *out_head, *out_tail; /* worker -> loop */
	int in_fd, out_fd;                        /* eventfds */
	/* the worker's own */
	virConnectPtr conn;
	int cb_ids[4];
	int in_watch, retry_timer;
	bool quit, lost;
	unsigned int after_close_ticks;
	char why[200];
};

#define AFTER_CLOSE_TICKS 3 /* event loop iterations after the last close (run_on_after_close) */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct vcmad_lv_msg *vcmad_lv_msg_new(enum vcmad_lv_op op)
{
	struct vcmad_lv_msg *m = calloc(1, sizeof(*m));

	if (m)
		m->op = op;
	return m;
}

void vcmad_lv_msg_free(struct vcmad_lv_msg *m)
{
	if (m) {
		free(m->xml);
		free(m);
	}
}

static void wake(int fd)
{
	uint64_t one = 1;

	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void drain(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static void push(struct vcmad_lv_worker *w, struct vcmad_lv_msg **head, struct vcmad_lv_msg **tail,
		 struct vcmad_lv_msg *m, int fd)
{
	m->next = NULL;
	pthread_mutex_lock(&w->mu);
	if (*tail)
		(*tail)->next = m;
	else
		*head = m;
	*tail = m;
	pthread_mutex_unlock(&w->mu);
	wake(fd);
}

static struct vcmad_lv_msg *pop_all(struct vcmad_lv_worker *w, struct vcmad_lv_msg **head,
				    struct vcmad_lv_msg **tail, int fd)
{
	struct vcmad_lv_msg *m;

	drain(fd);
	pthread_mutex_lock(&w->mu);
	m = *head;
	*head = *tail = NULL;
	pthread_mutex_unlock(&w->mu);
	return m;
}

void vcmad_lv_post(struct vcmad_lv_worker *w, struct vcmad_lv_msg *m)
{
	push(w, &w->in_head, &w->in_tail, m, w->in_fd);
}

struct vcmad_lv_msg *vcmad_lv_take(struct vcmad_lv_worker *w)
{
	return pop_all(w, &w->out_head, &w->out_tail, w->out_fd);
}

static void tell(struct vcmad_lv_worker *w, struct vcmad_lv_msg *m)
{
	push(w, &w->out_head, &w->out_tail, m, w->out_fd);
}

/* ---- pure helpers ---- */

int vcmad_lv_xml_attr(const char *xml, const char *attr, char *out, size_t len)
{
	size_t an = strlen(attr);
	const char *end = strchr(xml, '>');

	for (const char *p = strstr(xml, attr); p && (!end || p < end); p = strstr(p + 1, attr)) {
		const char *q, *v;
		size_t n;

		if (p == xml || (p[-1] != ' ' && p[-1] != '\t' && p[-1] != '\n') || p[an] != '=' ||
		    (p[an + 1] != '\'' && p[an + 1] != '"'))
			continue;
		v = p + an + 2;
		q = strchr(v, p[an + 1]);
		if (!q)
			return -ENOENT;
		n = (size_t)(q - v);
		if (n >= len)
			return -ENAMETOOLONG;
		memcpy(out, v, n);
		out[n] = '\0';
		return 0;
	}
	return -ENOENT;
}

int vcmad_lv_shmem_xml(char *out, size_t len, const char *sock)
{
	int n = snprintf(out, len,
			 "<shmem name='" VCMAD_LV_SHMEM_NAME "'><model type='ivshmem-doorbell'/>"
			 "<server path='%s'/><msi vectors='2' ioeventfd='on'/></shmem>",
			 sock);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

void vcmad_lv_meta_xml(char *out, size_t len, char *old, const char *devclass)
{
	char cls[32] = "", quota[24] = "", lend[8] = "";

	if (old) {
		if (vcmad_lv_xml_attr(old, "class", cls, sizeof(cls)))
			cls[0] = '\0';
		if (vcmad_lv_xml_attr(old, "quota", quota, sizeof(quota)))
			quota[0] = '\0';
		if (vcmad_lv_xml_attr(old, "lend", lend, sizeof(lend)))
			lend[0] = '\0';
		free(old);
	}
	if (devclass[0])
		snprintf(cls, sizeof(cls), "%s", devclass);
	/* double quotes: libvirt writes attributes so, with a '"' inside as &quot; */
	if (snprintf(out, len, "<guest%s%s%s%s%s%s%s%s%s/>", cls[0] ? " class=\"" : "", cls, cls[0] ? "\"" : "",
		     quota[0] ? " quota=\"" : "", quota, quota[0] ? "\"" : "", lend[0] ? " lend=\"" : "", lend,
		     lend[0] ? "\"" : "") >= (int)len)
		snprintf(out, len, "<guest/>");
}

/* The virtio-mem <memory> element of domxml: [*start, *end) */
static int find_vmem(const char *domxml, const char **start, const char **end)
{
	const char *p = domxml;

	while ((p = strstr(p, "<memory "))) {
		const char *gt = strchr(p, '>'), *e;

		if (!gt)
			return -ENOENT;
		if ((strstr(p, "model='virtio-mem'") && strstr(p, "model='virtio-mem'") < gt) ||
		    (strstr(p, "model=\"virtio-mem\"") && strstr(p, "model=\"virtio-mem\"") < gt)) {
			e = strstr(gt, "</memory>");
			if (!e)
				return -ENOENT;
			*start = p;
			*end = e + strlen("</memory>");
			return 0;
		}
		p = gt;
	}
	return -ENOENT;
}

/* The number inside <tag unit='KiB'>N</tag> within [s, e), in KiB; 0 if absent. */
static uint64_t elem_kib(const char *s, const char *e, const char *tag)
{
	char open[32];
	const char *p, *gt;

	snprintf(open, sizeof(open), "<%s ", tag);
	p = strstr(s, open);
	if (!p || p >= e || !(gt = strchr(p, '>')) || gt >= e)
		return 0;
	if (!strstr(p, "unit='KiB'") && !strstr(p, "unit=\"KiB\""))
		return 0; /* libvirt writes KiB in the XML it gives out */
	return strtoull(gt + 1, NULL, 10);
}

char *vcmad_lv_vmem_update_xml(const char *domxml, uint64_t kib)
{
	const char *s, *e, *r, *rgt, *rend;
	char *out;
	size_t n;

	if (find_vmem(domxml, &s, &e)) {
		errno = ENOENT;
		return NULL;
	}
	r = strstr(s, "<requested ");
	if (!r || r >= e || !(rgt = strchr(r, '>')) || !(rend = strstr(rgt, "</requested>")) || rend >= e) {
		errno = ENOENT;
		return NULL;
	}
	n = (size_t)(e - s) + 64;
	out = malloc(n);
	if (!out)
		return NULL;
	snprintf(out, n, "%.*s<requested unit='KiB'>%llu</requested>%.*s", (int)(r - s), s, (unsigned long long)kib,
		 (int)(e - (rend + strlen("</requested>"))), rend + strlen("</requested>"));
	return out;
}

/* ---- libvirt side ---- */

static const char *lv_error(void)
{
	const char *m = virGetLastErrorMessage();

	return m ? m : "unknown libvirt error";
}

static void quiet(void *opaque, virErrorPtr err)
{
	(void)opaque;
	(void)err; /* errors are read where they happen and logged by the loop */
}

/* Report dom as it is now (one DOMAIN message). */
static void report_domain(struct vcmad_lv_worker *w, virDomainPtr dom)
{
	struct vcmad_lv_msg *m = vcmad_lv_msg_new(VCMAD_LV_DOMAIN);
	const char *name = virDomainGetName(dom);
	char *meta, *xml;

	if (!m || !name || strlen(name) >= sizeof(m->name)) {
		vcmad_lv_msg_free(m);
		return;
	}
	memcpy(m->name, name, strlen(name) + 1);
	m->active = virDomainIsActive(dom) == 1;
	meta = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VCMAD_LV_XMLNS, VIR_DOMAIN_AFFECT_CURRENT);
	if (meta) {
		char v[8];

		m->opted = true;
		if (vcmad_lv_xml_attr(meta, "class", m->devclass, sizeof(m->devclass)))
			m->devclass[0] = '\0';
		if (vcmad_lv_xml_attr(meta, "quota", m->quota, sizeof(m->quota)))
			m->quota[0] = '\0';
		m->lend = !vcmad_lv_xml_attr(meta, "lend", v, sizeof(v)) && !strcmp(v, "yes");
		free(meta);
	}
	xml = virDomainGetXMLDesc(dom, 0);
	if (xml) {
		const char *s, *e;

		m->has_shmem = strstr(xml, "ivshmem-doorbell") != NULL;
		if (!find_vmem(xml, &s, &e)) {
			m->has_vmem = true;
			m->vmem_max = elem_kib(s, e, "size") << 10;
			m->vmem_block = elem_kib(s, e, "block") << 10;
			m->bytes = elem_kib(s, e, "current") << 10;
			m->vmem_requested = elem_kib(s, e, "requested") << 10;
		}
		free(xml);
	}
	tell(w, m);
}

static void tell_named(struct vcmad_lv_worker *w, enum vcmad_lv_op op, virDomainPtr dom, int detail)
{
	struct vcmad_lv_msg *m = vcmad_lv_msg_new(op);
	const char *name = virDomainGetName(dom);

	if (!m || !name || strlen(name) >= sizeof(m->name)) {
		vcmad_lv_msg_free(m);
		return;
	}
	memcpy(m->name, name, strlen(name) + 1);
	m->detail = detail;
	m->t_ns = mono_ns();
	tell(w, m);
}

static int on_lifecycle(virConnectPtr c, virDomainPtr dom, int event, int detail, void *opaque)
{
	struct vcmad_lv_worker *w = opaque;

	(void)c;
	switch (event) {
	case VIR_DOMAIN_EVENT_STOPPED:
		tell_named(w, VCMAD_LV_STOPPED, dom, detail);
		break;
	case VIR_DOMAIN_EVENT_UNDEFINED:
		tell_named(w, VCMAD_LV_GONE, dom, detail);
		break;
	case VIR_DOMAIN_EVENT_DEFINED:
	case VIR_DOMAIN_EVENT_STARTED:
		report_domain(w, dom);
		break;
	default:
		break;
	}
	return 0;
}

static void on_metadata(virConnectPtr c, virDomainPtr dom, int type, const char *nsuri, void *opaque)
{
	(void)c;
	if (type == VIR_DOMAIN_METADATA_ELEMENT && nsuri && !strcmp(nsuri, VCMAD_LV_XMLNS))
		report_domain(opaque, dom);
}

static void on_vmem_size(virConnectPtr c, virDomainPtr dom, const char *alias, unsigned long long kib, void *opaque)
{
	struct vcmad_lv_worker *w = opaque;
	struct vcmad_lv_msg *m = vcmad_lv_msg_new(VCMAD_LV_VMEM_SIZE);
	const char *name = virDomainGetName(dom);

	(void)c;
	(void)alias;
	if (!m || !name || strlen(name) >= sizeof(m->name)) {
		vcmad_lv_msg_free(m);
		return;
	}
	memcpy(m->name, name, strlen(name) + 1);
	m->bytes = (uint64_t)kib << 10;
	m->t_ns = mono_ns();
	tell(w, m);
}

static void on_close(virConnectPtr c, int reason, void *opaque)
{
	struct vcmad_lv_worker *w = opaque;

	(void)c;
	w->lost = true;
	snprintf(w->why, sizeof(w->why), "the connection closed (reason %d)", reason);
}

static void disconnect(struct vcmad_lv_worker *w)
{
	if (!w->conn)
		return;
	for (unsigned int i = 0; i < 4; i++)
		if (w->cb_ids[i] >= 0)
			virConnectDomainEventDeregisterAny(w->conn, w->cb_ids[i]);
	virConnectUnregisterCloseCallback(w->conn, on_close);
	virConnectClose(w->conn);
	w->conn = NULL;
}

static void lost(struct vcmad_lv_worker *w, const char *why)
{
	struct vcmad_lv_msg *m = vcmad_lv_msg_new(VCMAD_LV_LOST);

	disconnect(w);
	if (m) {
		snprintf(m->msg, sizeof(m->msg), "%s", why);
		tell(w, m);
	}
	virEventUpdateTimeout(w->retry_timer, VCMAD_LV_RETRY_S * 1000);
}

static void try_connect(struct vcmad_lv_worker *w)
{
	static const int ids[4] = { VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
				    VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE, -1 };
	static const virConnectDomainEventGenericCallback cbs[4] = {
		VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), VIR_DOMAIN_EVENT_CALLBACK(on_metadata),
		VIR_DOMAIN_EVENT_CALLBACK(on_vmem_size), NULL
	};
	struct vcmad_lv_msg *m;
	virDomainPtr *doms = NULL;
	int n;

	virEventUpdateTimeout(w->retry_timer, -1);
	w->lost = false;
	w->conn = virConnectOpen(w->uri);
	if (!w->conn) {
		char why[256];

		snprintf(why, sizeof(why), "cannot connect: %s", lv_error());
		lost(w, why);
		return;
	}
	for (unsigned int i = 0; i < 4; i++)
		w->cb_ids[i] = ids[i] < 0 ? -1 : virConnectDomainEventRegisterAny(w->conn, NULL, ids[i], cbs[i], w, NULL);
	virConnectRegisterCloseCallback(w->conn, on_close, w, NULL);
	m = vcmad_lv_msg_new(VCMAD_LV_CONNECTED);
	if (m) {
		snprintf(m->msg, sizeof(m->msg), "%s", w->uri);
		tell(w, m);
	}
	n = virConnectListAllDomains(w->conn, &doms, 0);
	for (int i = 0; i < n; i++) {
		report_domain(w, doms[i]);
		virDomainFree(doms[i]);
	}
	free(doms);
}

static int run_request(struct vcmad_lv_worker *w, struct vcmad_lv_msg *m, char *msg, size_t len)
{
	virDomainPtr dom = NULL;
	int rc = 0;

	if (!w->conn) {
		if (snprintf(msg, len, "vcmad is not connected to libvirt (%s): %s", w->uri,
			     w->why[0] ? w->why : "connecting") >= (int)len)
			msg[len - 1] = '\0';
		return -ENOTCONN;
	}
	if (m->op == VCMAD_LV_DEFINE) {
		dom = virDomainDefineXML(w->conn, m->xml);
		if (!dom) {
			snprintf(msg, len, "define: %s", lv_error());
			return -EINVAL;
		}
		snprintf(m->name, sizeof(m->name), "%s", virDomainGetName(dom));
		virDomainFree(dom);
		return 0;
	}
	dom = virDomainLookupByName(w->conn, m->name);
	if (!dom) {
		snprintf(msg, len, "no libvirt domain named '%s'", m->name);
		return -ENOENT;
	}
	switch (m->op) {
	case VCMAD_LV_START:
		if (virDomainCreate(dom) < 0)
			rc = -EIO;
		break;
	case VCMAD_LV_DESTROY:
		if (virDomainDestroy(dom) < 0)
			rc = -EIO;
		break;
	case VCMAD_LV_UNDEFINE:
		if (virDomainUndefine(dom) < 0)
			rc = -EIO;
		break;
	case VCMAD_LV_ATTACH:
	case VCMAD_LV_DETACH: {
		unsigned int flags = VIR_DOMAIN_AFFECT_CONFIG | (virDomainIsActive(dom) == 1 ? VIR_DOMAIN_AFFECT_LIVE : 0);
		char shmem[512], meta[160], *xml = virDomainGetXMLDesc(dom, 0);
		bool has = xml && strstr(xml, m->sock) && strstr(xml, "ivshmem-doorbell");

		free(xml);
		if (vcmad_lv_shmem_xml(shmem, sizeof(shmem), m->sock)) {
			snprintf(msg, len, "socket path too long");
			rc = -ENAMETOOLONG;
			break;
		}
		if (m->op == VCMAD_LV_ATTACH) {
			vcmad_lv_meta_xml(meta, sizeof(meta), virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT,
										  VCMAD_LV_XMLNS, VIR_DOMAIN_AFFECT_CURRENT),
					  m->devclass);
			if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, meta, VCMAD_LV_XMLNS_PREFIX,
						 VCMAD_LV_XMLNS, flags) < 0) {
				snprintf(msg, len, "set vcma metadata: %s", lv_error());
				rc = -EIO;
			} else if (!has && virDomainAttachDeviceFlags(dom, shmem, flags) < 0) {
				snprintf(msg, len, "attach the ivshmem device: %s", lv_error());
				rc = -EIO;
			}
			m->has_shmem = !rc || has;
		} else {
			if (has && virDomainDetachDeviceFlags(dom, shmem, flags) < 0) {
				snprintf(msg, len, "detach the ivshmem device: %s", lv_error());
				rc = -EIO;
			} else if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, NULL, NULL, VCMAD_LV_XMLNS,
							flags) < 0) {
				snprintf(msg, len, "remove vcma metadata: %s", lv_error());
				rc = -EIO;
			}
			m->has_shmem = has && rc;
		}
		virDomainFree(dom);
		return rc;
	}
	case VCMAD_LV_VMEM_SET: {
		char *xml = virDomainGetXMLDesc(dom, 0), *upd = xml ? vcmad_lv_vmem_update_xml(xml, m->bytes >> 10) : NULL;

		if (!upd) {
			snprintf(msg, len, "domain %s has no virtio-mem device", m->name);
			rc = -ENODEV;
		} else if (virDomainUpdateDeviceFlags(dom, upd, VIR_DOMAIN_AFFECT_LIVE) < 0) {
			snprintf(msg, len, "set the virtio-mem requested size: %s", lv_error());
			rc = -EIO;
		}
		free(upd);
		free(xml);
		virDomainFree(dom);
		return rc;
	}
	default:
		rc = -EINVAL;
		break;
	}
	if (rc)
		snprintf(msg, len, "%s", lv_error());
	virDomainFree(dom);
	return rc;
}

static void on_requests(int watch, int fd, int events, void *opaque)
{
	struct vcmad_lv_worker *w = opaque;
	struct vcmad_lv_msg *m = pop_all(w, &w->in_head, &w->in_tail, fd), *next;

	(void)watch;
	(void)events;
	for (; m; m = next) {
		next = m->next;
		if (m->op == VCMAD_LV_QUIT) {
			w->quit = true;
			vcmad_lv_msg_free(m);
			continue;
		}
		if (w->quit) {
			vcmad_lv_msg_free(m);
			continue;
		}
		m->req_op = m->op;
		m->err = run_request(w, m, m->msg, sizeof(m->msg));
		m->op = VCMAD_LV_DONE;
		free(m->xml);
		m->xml = NULL;
		tell(w, m);
	}
}

static void on_retry(int timer, void *opaque)
{
	struct vcmad_lv_worker *w = opaque;

	(void)timer;
	if (!w->conn && !w->quit)
		try_connect(w);
}

static pthread_once_t impl_once = PTHREAD_ONCE_INIT;

static void register_impl(void)
{
	virSetErrorFunc(NULL, quiet);
	virEventRegisterDefaultImpl();
}

static void on_tick_after_close(int timer, void *opaque)
{
	(void)timer;
	((struct vcmad_lv_worker *)opaque)->after_close_ticks++;
}

/*
 * After the last virConnectClose the loop runs on a little: libvirt removes a closed
 * connection's callbacks (and frees what they hold) from the event loop's next
 * iterations, so "it is not safe to stop running the event loop immediately after
 * closing the connection" (virEventRegisterImpl's documentation). A timer due at once
 * makes each iteration return; AFTER_CLOSE_TICKS of them, so removals that a removal's own
 * cleanup asks for run too.
 */
static void run_on_after_close(struct vcmad_lv_worker *w)
{
	int t = virEventAddTimeout(0, on_tick_after_close, w, NULL);

	if (t < 0)
		return;
	while (w->after_close_ticks < AFTER_CLOSE_TICKS)
		if (virEventRunDefaultImpl() < 0)
			break;
	virEventRemoveTimeout(t); /* holds nothing to free: its removal may stay pending */
}

static void *worker_main(void *arg)
{
	struct vcmad_lv_worker *w = arg;

	w->in_watch = virEventAddHandle(w->in_fd, VIR_EVENT_HANDLE_READABLE, on_requests, w, NULL);
	w->retry_timer = virEventAddTimeout(-1, on_retry, w, NULL);
	try_connect(w);
	while (!w->quit) {
		if (virEventRunDefaultImpl() < 0) {
			lost(w, lv_error());
			break;
		}
		if (w->lost && w->conn)
			lost(w, w->why);
	}
	disconnect(w);
	virEventRemoveHandle(w->in_watch);
	virEventRemoveTimeout(w->retry_timer);
	run_on_after_close(w);
	return NULL;
}

struct vcmad_lv_worker *vcmad_lv_worker_start(const char *uri, int *fd)
{
	struct vcmad_lv_worker *w = calloc(1, sizeof(*w));
	int rc;

	if (!w)
		return NULL;
	snprintf(w->uri, sizeof(w->uri), "%s", uri);
	pthread_mutex_init(&w->mu, NULL);
	for (unsigned int i = 0; i < 4; i++)
		w->cb_ids[i] = -1;
	w->in_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	w->out_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->in_fd < 0 || w->out_fd < 0) {
		rc = errno;
		goto fail;
	}
	pthread_once(&impl_once, register_impl);
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	if (rc)
		goto fail;
	*fd = w->out_fd;
	return w;
fail:
	if (w->in_fd >= 0)
		close(w->in_fd);
	if (w->out_fd >= 0)
		close(w->out_fd);
	pthread_mutex_destroy(&w->mu);
	free(w);
	errno = rc;
	return NULL;
}

void vcmad_lv_worker_stop(struct vcmad_lv_worker *w)
{
	struct vcmad_lv_msg *m;

	if (!w)
		return;
	m = vcmad_lv_msg_new(VCMAD_LV_QUIT);
	if (m)
		vcmad_lv_post(w, m);
	pthread_join(w->thread, NULL);
	for (m = pop_all(w, &w->in_head, &w->in_tail, w->in_fd); m;) {
		struct vcmad_lv_msg *next = m->next;

		vcmad_lv_msg_free(m);
		m = next;
	}
	for (m = vcmad_lv_take(w); m;) {
		struct vcmad_lv_msg *next = m->next;

		vcmad_lv_msg_free(m);
		m = next;
	}
	close(w->in_fd);
	close(w->out_fd);
	pthread_mutex_destroy(&w->mu);
	free(w);
}
