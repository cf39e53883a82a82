// SPDX-License-Identifier: MIT
/*
 * vmem_qmp.c - the QMP driver of a virtio-mem lender (vmem.h) for plain QEMU:
 * a non-blocking client of QEMU's QMP unix socket on vcmad's loop.
 *
 *   connect   greeting, qmp_capabilities, query-memory-devices (the device's size,
 *             requested-size, max-size, block-size): the first report
 *   resize    qom-set <dev> requested-size; the answer updates what is requested
 *   progress  qom-get <dev> size every 20 ms while plugged != requested (250 ms
 *             after a second without change), and MEMORY_DEVICE_SIZE_CHANGE
 *             events (QEMU throttles them to 1/s): each a report
 *   loss      EOF, an error, a malformed or oversized message, no greeting or a
 *             command unanswered for 10 s: vmem hears lost, and the driver reconnects with
 *             backoff (100 ms doubling to 5 s)
 *
 * QMP answers a monitor's commands in order, so outstanding commands are a FIFO.
 * Nothing here blocks: QEMU may be stuck, vcmad is not.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "conf.h"
#include "log.h"
#include "vcmad.h"
#include "vmem.h"

#define QMP_IN_MAX (64u << 10)     /* a message longer than this is a broken peer */
#define QMP_OUT_MAX 4096u
#define QMP_FIFO 8u
#define QMP_POLL_NS (20ull * 1000000ull)
#define QMP_POLL_SLOW_NS (250ull * 1000000ull)
#define QMP_IDLE_NS (1000ull * 1000000ull)   /* the watchdog looks this often when idle */
#define QMP_ANSWER_NS (10000ull * 1000000ull) /* a command unanswered this long: QEMU is stuck */
#define QMP_BACKOFF_MIN_MS 100u
#define QMP_BACKOFF_MAX_MS 5000u

enum qmp_state { Q_DOWN, Q_GREETING, Q_CAPS, Q_QUERY, Q_READY };
enum qmp_cmd { C_CAPS, C_QUERY, C_SET, C_GET };

struct qmp {
	struct vcmad *d;
	struct vcmad_vmem *v;
	char name[VCMAD_GUEST_NAME_MAX];
	char path[108];
	char dev[VCMAD_VMEM_DEVICE_MAX];
	int fd;
	struct vcma_watch w;
	uint32_t events;
	enum qmp_state st;
	char in[QMP_IN_MAX];
	size_t inlen;
	char out[QMP_OUT_MAX];
	size_t outlen;
	struct { enum qmp_cmd cmd; uint64_t arg, sent_ns; } fifo[QMP_FIFO];
	uint32_t nfifo;
	uint64_t seq;
	struct vcma_timer retry, poll;
	uint32_t backoff_ms;
	char warned[96]; /* the reason of the current outage, logged once ("": none yet) */
	const char *broken; /* a failure found inside a call from vmem: down from the loop */
	uint64_t want;     /* requested size vmem asked for */
	bool set_inflight, get_inflight;
	uint64_t plugged, requested, max, block;
	uint64_t changed_ns; /* the plugged size last changed */
	uint64_t connected_ns; /* the connection was made: the greeting is due within QMP_ANSWER_NS */
};

static void qmp_down(struct qmp *q, const char *why);

static void arm_retry(struct qmp *q)
{
	vcma_timer_arm_in(&q->d->loop, &q->retry, (uint64_t)q->backoff_ms * 1000000ull);
	q->backoff_ms = q->backoff_ms * 2 > QMP_BACKOFF_MAX_MS ? QMP_BACKOFF_MAX_MS : q->backoff_ms * 2;
}

static int set_events(struct qmp *q, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = &q->w };

	if (ev == q->events)
		return 0;
	if (epoll_ctl(q->d->loop.epfd, EPOLL_CTL_MOD, q->fd, &e))
		return -errno;
	q->events = ev;
	return 0;
}

static int flush(struct qmp *q)
{
	while (q->outlen) {
		ssize_t n = send(q->fd, q->out, q->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return set_events(q, EPOLLIN | EPOLLOUT);
		if (n < 0)
			return -errno;
		memmove(q->out, q->out + n, q->outlen - (size_t)n);
		q->outlen -= (size_t)n;
	}
	return set_events(q, EPOLLIN);
}

/* Queue one command; the answer comes in FIFO order. */
static int send_cmd(struct qmp *q, enum qmp_cmd cmd, uint64_t arg)
{
	char buf[512];
	int n;

	if (q->nfifo == QMP_FIFO)
		return -EBUSY;
	switch (cmd) {
	case C_CAPS:
		n = snprintf(buf, sizeof(buf), "{\"execute\":\"qmp_capabilities\",\"id\":%llu}\n",
			     (unsigned long long)++q->seq);
		break;
	case C_QUERY:
		n = snprintf(buf, sizeof(buf), "{\"execute\":\"query-memory-devices\",\"id\":%llu}\n",
			     (unsigned long long)++q->seq);
		break;
	case C_SET:
		n = snprintf(buf, sizeof(buf),
			     "{\"execute\":\"qom-set\",\"arguments\":{\"path\":\"%s\",\"property\":\"requested-size\","
			     "\"value\":%llu},\"id\":%llu}\n",
			     q->dev, (unsigned long long)arg, (unsigned long long)++q->seq);
		break;
	default:
		n = snprintf(buf, sizeof(buf),
			     "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"%s\",\"property\":\"size\"},\"id\":%llu}\n",
			     q->dev, (unsigned long long)++q->seq);
	}
	if (n < 0 || (size_t)n >= sizeof(buf) || q->outlen + (size_t)n > sizeof(q->out))
		return -ENOBUFS;
	memcpy(q->out + q->outlen, buf, (size_t)n);
	q->outlen += (size_t)n;
	q->fifo[q->nfifo].cmd = cmd;
	q->fifo[q->nfifo].arg = arg;
	q->fifo[q->nfifo].sent_ns = vcmad_now(q->d);
	q->nfifo++;
	return flush(q);
}

static void report(struct qmp *q)
{
	vcmad_vmem_report(q->v, q->plugged, q->requested, q->max, q->block);
}

/* Poll fast while the device moves toward what is asked, slowly once it stopped. */
static void arm_poll(struct qmp *q)
{
	uint64_t now = vcmad_now(q->d), in = QMP_IDLE_NS;

	if (q->st == Q_READY && (q->plugged != q->requested || q->want != q->requested))
		in = now - q->changed_ns < QMP_IDLE_NS ? QMP_POLL_NS : QMP_POLL_SLOW_NS;
	vcma_timer_arm(&q->d->loop, &q->poll, now + in);
}

static void send_set(struct qmp *q)
{
	int rc;

	if (q->set_inflight || q->want == q->requested)
		return;
	rc = send_cmd(q, C_SET, q->want);
	if (rc) {
		/* maybe inside vmem's report: the loss is told from the loop */
		q->broken = "cannot send qom-set";
		vcma_timer_arm(&q->d->loop, &q->poll, vcmad_now(q->d));
	} else {
		q->set_inflight = true;
	}
}

static bool u64_of(struct json_object *o, const char *key, uint64_t *out)
{
	struct json_object *x;

	if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_int))
		return false;
	*out = json_object_get_uint64(x);
	return true;
}

/* query-memory-devices: our device's sizes. */
static int take_devices(struct qmp *q, struct json_object *ret)
{
	size_t n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;

	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(ret, i), *type, *data, *id;

		if (!json_object_object_get_ex(e, "type", &type) || !json_object_object_get_ex(e, "data", &data) ||
		    strcmp(json_object_get_string(type), "virtio-mem") || !json_object_object_get_ex(data, "id", &id) ||
		    strcmp(json_object_get_string(id), q->dev))
			continue;
		if (!u64_of(data, "size", &q->plugged) || !u64_of(data, "requested-size", &q->requested) ||
		    !u64_of(data, "max-size", &q->max) || !u64_of(data, "block-size", &q->block))
			return -EPROTO;
		return 0;
	}
	return -ENODEV;
}

static void on_return(struct qmp *q, struct json_object *msg, bool error)
{
	struct json_object *ret = NULL;
	enum qmp_cmd cmd;
	uint64_t arg, x;
	int rc;

	if (!q->nfifo) {
		qmp_down(q, "an answer to no command");
		return;
	}
	cmd = q->fifo[0].cmd;
	arg = q->fifo[0].arg;
	memmove(q->fifo, q->fifo + 1, --q->nfifo * sizeof(q->fifo[0]));
	json_object_object_get_ex(msg, "return", &ret);
	switch (cmd) {
	case C_CAPS:
		if (error || send_cmd(q, C_QUERY, 0))
			qmp_down(q, "qmp_capabilities refused");
		else
			q->st = Q_QUERY;
		return;
	case C_QUERY:
		rc = error ? -EPROTO : take_devices(q, ret);
		if (rc) {
			qmp_down(q, rc == -ENODEV ? "no virtio-mem device of that id (vmem_device)"
						  : "query-memory-devices: unexpected answer");
			return;
		}
		q->st = Q_READY;
		q->backoff_ms = QMP_BACKOFF_MIN_MS;
		q->warned[0] = '\0';
		q->want = q->requested;
		q->changed_ns = vcmad_now(q->d);
		log_info("virtio-mem: %s: QMP %s connected, device %s", q->name, q->path, q->dev);
		report(q); /* vmem answers with set_requested */
		if (q->st == Q_READY)
			arm_poll(q);
		return;
	case C_SET:
		q->set_inflight = false;
		if (error) {
			struct json_object *e, *desc;
			const char *why = json_object_object_get_ex(msg, "error", &e) &&
							  json_object_object_get_ex(e, "desc", &desc)
						  ? json_object_get_string(desc)
						  : "?";

			log_warn("virtio-mem: %s: qom-set requested-size %llu refused: %s", q->name,
				 (unsigned long long)arg, why);
			q->want = q->requested; /* vmem asks again on the next report */
		} else {
			q->requested = arg;
		}
		send_set(q);
		if (q->st == Q_READY)
			report(q);
		return;
	case C_GET:
		q->get_inflight = false;
		if (error || !ret || !json_object_is_type(ret, json_type_int)) {
			qmp_down(q, "qom-get size: unexpected answer");
			return;
		}
		x = json_object_get_uint64(ret);
		if (x != q->plugged)
			q->changed_ns = vcmad_now(q->d);
		q->plugged = x;
		report(q);
		return;
	}
}

static void on_event(struct qmp *q, struct json_object *msg)
{
	struct json_object *ev, *data, *id;
	uint64_t size;

	if (!json_object_object_get_ex(msg, "event", &ev) ||
	    strcmp(json_object_get_string(ev), "MEMORY_DEVICE_SIZE_CHANGE") ||
	    !json_object_object_get_ex(msg, "data", &data) || !json_object_object_get_ex(data, "id", &id) ||
	    strcmp(json_object_get_string(id), q->dev) || !u64_of(data, "size", &size) || q->st != Q_READY)
		return;
	if (size != q->plugged)
		q->changed_ns = vcmad_now(q->d);
	q->plugged = size;
	report(q);
}

static void on_message(struct qmp *q, const char *line, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *msg = tok ? json_tokener_parse_ex(tok, line, (int)len) : NULL;
	struct json_object *x;

	if (!msg || !json_object_is_type(msg, json_type_object)) {
		json_tokener_free(tok);
		json_object_put(msg);
		qmp_down(q, "a malformed QMP message");
		return;
	}
	json_tokener_free(tok);
	if (q->st == Q_GREETING) {
		if (!json_object_object_get_ex(msg, "QMP", &x) || send_cmd(q, C_CAPS, 0))
			qmp_down(q, "no QMP greeting");
		else
			q->st = Q_CAPS;
	} else if (json_object_object_get_ex(msg, "return", &x)) {
		on_return(q, msg, false);
	} else if (json_object_object_get_ex(msg, "error", &x)) {
		on_return(q, msg, true);
	} else if (json_object_object_get_ex(msg, "event", &x)) {
		on_event(q, msg);
	}
	json_object_put(msg);
}

static void qmp_cb(struct vcma_watch *w, uint32_t events)
{
	struct qmp *q = (struct qmp *)((char *)w - offsetof(struct qmp, w));

	if ((events & EPOLLOUT) && flush(q)) {
		qmp_down(q, "cannot write to the QMP socket");
		return;
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		ssize_t n = recv(q->fd, q->in + q->inlen, sizeof(q->in) - q->inlen, MSG_DONTWAIT);
		char *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			qmp_down(q, n ? "read error" : "QEMU closed the QMP socket");
			return;
		}
		q->inlen += (size_t)n;
		while (q->st != Q_DOWN && (nl = memchr(q->in, '\n', q->inlen))) {
			size_t len = (size_t)(nl - q->in) + 1;

			on_message(q, q->in, len);
			if (q->st == Q_DOWN)
				return;
			memmove(q->in, q->in + len, q->inlen - len);
			q->inlen -= len;
		}
		if (q->inlen == sizeof(q->in)) {
			qmp_down(q, "a QMP message longer than 64 KiB");
			return;
		}
	}
}

static void qmp_close_fd(struct qmp *q)
{
	if (q->fd < 0)
		return;
	vcma_loop_del(&q->d->loop, &q->w);
	close(q->fd);
	q->fd = -1;
	q->st = Q_DOWN;
	q->inlen = q->outlen = 0;
	q->nfifo = 0;
	q->set_inflight = q->get_inflight = false;
	q->broken = NULL;
	vcma_timer_cancel(&q->d->loop, &q->poll);
}

static void qmp_down(struct qmp *q, const char *why)
{
	bool was_ready = q->st == Q_READY;

	qmp_close_fd(q);
	/* each new reason once: a QEMU that is not up yet is not logged every retry */
	if (strncmp(q->warned, why, sizeof(q->warned) - 1)) {
		log_warn("virtio-mem: %s: QMP %s: %s; reconnecting", q->name, q->path, why);
		snprintf(q->warned, sizeof(q->warned), "%s", why);
	}
	if (was_ready)
		vcmad_vmem_lost(q->v, why);
	arm_retry(q);
}

static void retry_cb(struct vcma_timer *t)
{
	struct qmp *q = (struct qmp *)((char *)t - offsetof(struct qmp, retry));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	memcpy(sa.sun_path, q->path, strlen(q->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		qmp_down(q, strerror(errno));
		return;
	}
	/* a unix connect does not wait for the peer to accept; EAGAIN is a full backlog */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		const char *why = strerror(errno);

		close(fd);
		qmp_down(q, why);
		return;
	}
	q->fd = fd;
	rc = vcma_loop_add(&q->d->loop, &q->w, fd, EPOLLIN, qmp_cb);
	if (rc) {
		close(fd);
		q->fd = -1;
		qmp_down(q, strerror(-rc));
		return;
	}
	q->events = EPOLLIN;
	q->st = Q_GREETING;
	q->connected_ns = vcmad_now(q->d);
	vcma_timer_arm_in(&q->d->loop, &q->poll, QMP_IDLE_NS);
}

/* Progress polling, and the watchdog on unanswered commands. */
static void poll_cb(struct vcma_timer *t)
{
	struct qmp *q = (struct qmp *)((char *)t - offsetof(struct qmp, poll));
	uint64_t now = vcmad_now(q->d);

	if (q->broken) {
		qmp_down(q, q->broken);
		return;
	}
	if (q->nfifo && now - q->fifo[0].sent_ns > QMP_ANSWER_NS) {
		qmp_down(q, "QEMU does not answer (10 s)");
		return;
	}
	if (q->st == Q_GREETING && now - q->connected_ns > QMP_ANSWER_NS) {
		qmp_down(q, "no QMP greeting within 10 s");
		return;
	}
	if (q->st != Q_READY) {
		if (q->st != Q_DOWN)
			vcma_timer_arm_in(&q->d->loop, &q->poll, QMP_IDLE_NS);
		return;
	}
	if (!q->get_inflight && (q->plugged != q->requested || q->want != q->requested)) {
		if (send_cmd(q, C_GET, 0)) {
			qmp_down(q, "cannot send qom-get");
			return;
		}
		q->get_inflight = true;
	}
	arm_poll(q);
}

/* ---- driver ops (vmem.h) ---- */

static int qmp_set_requested(void *drv, uint64_t bytes)
{
	struct qmp *q = drv;

	if (q->st != Q_READY)
		return -ENOTCONN;
	q->want = bytes;
	q->changed_ns = vcmad_now(q->d);
	send_set(q);
	if (q->broken)
		return -EIO;
	arm_poll(q);
	return 0;
}

static void qmp_close(void *drv)
{
	struct qmp *q = drv;

	/* a qom-set just queued (requested size 0 at removal) goes out if it can */
	if (q->fd >= 0 && q->outlen)
		(void)send(q->fd, q->out, q->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
	qmp_close_fd(q);
	vcma_timer_cancel(&q->d->loop, &q->retry);
	free(q);
}

static const struct vcmad_vmem_driver_ops qmp_ops = { .set_requested = qmp_set_requested, .close = qmp_close };

int vcmad_vmem_qmp_add(struct vcmad *d, const struct vcmad_guest_conf *gc)
{
	struct qmp *q = calloc(1, sizeof(*q));
	int rc;

	if (!q)
		return -ENOMEM;
	q->d = d;
	q->fd = -1;
	q->backoff_ms = QMP_BACKOFF_MIN_MS;
	snprintf(q->name, sizeof(q->name), "%s", gc->name);
	snprintf(q->path, sizeof(q->path), "%s", gc->qmp);
	snprintf(q->dev, sizeof(q->dev), "%s", gc->vmem_device);
	vcma_timer_init(&q->retry, retry_cb);
	vcma_timer_init(&q->poll, poll_cb);
	rc = vcmad_vmem_lender_add(d, gc, &qmp_ops, q, &q->v);
	if (rc) {
		free(q);
		return rc;
	}
	vcma_timer_arm(&d->loop, &q->retry, vcmad_now(d)); /* connect from the loop */
	return 0;
}

int vcmad_vmem_qmp_start(struct vcmad *d)
{
	for (uint32_t i = 0; i < d->conf.nguests; i++) {
		const struct vcmad_guest_conf *gc = &d->conf.guests[i];
		int rc;

		if (gc->lender != VCMAD_LENDER_VMEM)
			continue;
		rc = gc->qmp[0] ? vcmad_vmem_qmp_add(d, gc) : -EINVAL; /* vcmad_conf_validate() wants qmp */
		if (rc) {
			log_err("lender %s: %s", gc->name, strerror(-rc));
			return rc;
		}
		log_info("lender %s added (virtio-mem over QMP, %s)", gc->name, gc->qmp);
	}
	return 0;
}
