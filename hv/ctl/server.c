// SPDX-License-Identifier: MIT
/*
 * server.c - the control socket: who may connect, and moving lines in and out without
 * ever blocking the loop.
 *
 * Per client: an input buffer holding at most one request line and its newline, an
 * output queue, and the epoll interest derived from both. A turn handles at most
 * CTL_BUDGET requests; a client with complete lines left over goes on the run queue
 * and stops reading until they are answered, and the run queue's eventfd stays
 * readable until it is empty, so each pass of the loop serves the guests between two
 * turns of a busy control client. Output is never waited for: a client that does not
 * read is dropped once VCMAD_CTL_OUT_MAX of responses pile up.
 */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "alloc.h"
#include "ctl/ctl.h"
#include "guest.h"
#include "libvirt.h"
#include "log.h"
#include "vcmad.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

#define CTL_BUDGET 16u   /* requests per client per turn */
#define CTL_BACKLOG 16
#define CTL_IN_CAP (VCMAD_CTL_LINE_MAX + 1u)
#define CTL_OUT_KEEP (64u << 10) /* an idle client keeps at most this much output buffer */
/* Clients that hold a slot without using it: with all VCMAD_CTL_MAX_CLIENTS slots
 * taken, a new connection closes the client idle longest (waiting for input, nothing
 * in flight or unsent) once it has been idle CTL_EVICT_NS; and a request line left
 * unfinished for CTL_STALL_NS closes its client whatever the load. */
#define CTL_EVICT_NS (1000ull * 1000000ull)
#define CTL_STALL_NS (10000ull * 1000000ull)

static struct vcma_ratelimit refuse_rl, accept_rl;

static struct vcmad_ctl_client *client_of(struct vcma_watch *w)
{
	return (struct vcmad_ctl_client *)((char *)w - offsetof(struct vcmad_ctl_client, w));
}

static struct vcmad_ctl *ctl_of(struct vcma_watch *w)
{
	return (struct vcmad_ctl *)((char *)w - offsetof(struct vcmad_ctl, w));
}

/* ---- who may connect ---- */

/* Supplementary groups from /proc, for kernels without SO_PEERGROUPS. */
static bool proc_has_group(pid_t pid, gid_t gid)
{
	char path[64], line[4096];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = line, *end;

		if (strncmp(line, "Groups:", 7))
			continue;
		p += 7;
		for (;;) {
			unsigned long g;

			while (isspace((unsigned char)*p))
				p++;
			if (!isdigit((unsigned char)*p))
				break;
			g = strtoul(p, &end, 10);
			if (g == gid)
				found = true;
			p = end;
		}
		break;
	}
	fclose(f);
	return found;
}

static bool peer_in_group(int fd, pid_t pid, gid_t gid)
{
	gid_t buf[64], *g = buf;
	socklen_t len = sizeof(buf);
	bool found = false;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len)) {
		if (errno == ENOPROTOOPT)
			return proc_has_group(pid, gid);
		if (errno != ERANGE || !len)
			return false;
		g = malloc(len);
		if (!g)
			return false;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len)) {
			free(g);
			return false;
		}
	}
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (g[i] == gid)
			found = true;
	if (g != buf)
		free(g);
	return found;
}

/* root, vcmad's own uid (it could ptrace vcmad anyway), or a member of ctl_group */
static bool peer_allowed(const struct vcmad_ctl *ctl, int fd, const struct ucred *uc)
{
	if (uc->uid == 0 || uc->uid == geteuid())
		return true;
	if (!ctl->has_group)
		return false;
	return uc->gid == ctl->gid || peer_in_group(fd, uc->pid, ctl->gid);
}

static int resolve_group(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	size_t len = 16384;
	char *buf;
	int rc;

	for (;;) {
		buf = malloc(len);
		if (!buf)
			return -ENOMEM;
		rc = getgrnam_r(name, &gr, buf, len, &res);
		if (rc != ERANGE || len >= (1u << 20))
			break;
		free(buf);
		len *= 4;
	}
	if (!rc && res)
		*gid = res->gr_gid;
	free(buf);
	if (rc)
		return -rc;
	return res ? 0 : -ENOENT;
}

/* ---- clients ----
 *
 * A client is freed only from its own epoll callback (or at stop): later events of
 * the same epoll batch may still point at it. Work done elsewhere (the run queue)
 * that must end a client dooms it instead: shutdown() makes its socket report
 * EPOLLHUP, and its own callback frees it.
 */

static void dequeue(struct vcmad_ctl_client *c)
{
	if (!c->queued)
		return;
	for (struct vcmad_ctl_client **pp = &c->ctl->runq; *pp; pp = &(*pp)->next_run)
		if (*pp == c) {
			*pp = c->next_run;
			break;
		}
	c->queued = false;
	c->next_run = NULL;
}

static void client_close(struct vcmad_ctl_client *c)
{
	struct vcmad_ctl *ctl = c->ctl;

	dequeue(c);
	for (struct vcmad_ctl_client **pp = &ctl->clients; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	vcma_loop_del(&ctl->d->loop, &c->w);
	if (c->job_waiting && !c->job_done && !c->job_lv)
		vcmad_alloc_drop(&ctl->admin, (uintptr_t)c); /* the window is given up when the job ends */
	if (c->job_waiting && !c->job_done && c->job_lv)
		vcmad_libvirt_cancel(ctl->d, c); /* libvirt finishes it; nobody hears */
	json_object_put(c->job_id);
	json_object_put(c->job_res);
	if (close(c->fd))
		log_debug("ctl: close: %s", strerror(errno));
	ctl->nclients--;
	free(c->in);
	free(c->out);
	free(c);
}

/* No more I/O for c; its own callback frees it. why: logged as a drop, or NULL for
 * an ordinary end. */
static void doom(struct vcmad_ctl_client *c, const char *why)
{
	if (c->doomed)
		return;
	if (why) {
		c->ctl->stats.dropped++;
		log_warn("ctl: dropping client pid %d uid %u: %s", (int)c->pid, (unsigned int)c->uid, why);
	}
	c->doomed = true;
	dequeue(c);
	if (shutdown(c->fd, SHUT_RDWR) && errno != ENOTCONN)
		log_debug("ctl: shutdown: %s", strerror(errno));
}

static void enqueue(struct vcmad_ctl_client *c)
{
	struct vcmad_ctl *ctl = c->ctl;
	uint64_t one = 1;

	if (c->queued)
		return;
	c->queued = true;
	c->next_run = ctl->runq;
	ctl->runq = c;
	if (!ctl->run_armed) {
		if (write(ctl->run_fd, &one, sizeof(one)) != sizeof(one))
			log_warn("ctl: run queue eventfd: %s", strerror(errno));
		ctl->run_armed = true;
	}
}

static int out_append(struct vcmad_ctl_client *c, const char *s, size_t n)
{
	size_t need;

	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	need = c->out_len + n;
	if (need > c->out_cap && c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
		need = c->out_len + n;
	}
	if (need > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
	return 0;
}

/* Queue one response line; dooms the client on overflow or ENOMEM. */
static void respond(struct vcmad_ctl_client *c, struct json_object *id, struct json_object *result, int err,
		    const char *msg)
{
	struct json_object *env;
	const char *s;
	size_t n;
	int rc;

	if (c->out_len - c->out_off > VCMAD_CTL_OUT_MAX) {
		json_object_put(result);
		doom(c, "more than 1 MiB of responses unread");
		return;
	}
	env = vcmad_ctl_response(id, result, err, msg);
	if (!env) {
		doom(c, "out of memory");
		return;
	}
	s = json_object_to_json_string_length(env, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	rc = s ? out_append(c, s, n) : -ENOMEM;
	if (!rc)
		rc = out_append(c, "\n", 1);
	json_object_put(env);
	if (rc) {
		doom(c, "out of memory");
		return;
	}
	if (err)
		c->ctl->stats.errors++;
}

static bool mutates(enum vcmad_ctl_cmd cmd)
{
	return cmd == VCMAD_CTL_ALLOC || cmd == VCMAD_CTL_FREE || cmd == VCMAD_CTL_COMPACT || cmd == VCMAD_CTL_DRAIN;
}

static void handle_line(struct vcmad_ctl_client *c, const char *line, size_t len)
{
	struct vcmad_ctl *ctl = c->ctl;
	struct vcmad_ctl_req req;
	struct json_object *res = NULL;
	char msg[256];
	int err;

	ctl->stats.requests++;
	err = vcmad_ctl_parse(line, len, &req, msg, sizeof(msg));
	if (!err) {
		/* FREEs guests published without a kick are taken first (PROTOCOL.md §4.9):
		 * what vcmactl sees or asks for includes the memory they gave back */
		vcmad_guests_take_lazy(ctl->d, NULL);
		if (mutates(req.cmd))
			log_info("ctl: %s requested by pid %d uid %u", vcmad_ctl_cmd_name(req.cmd), (int)c->pid,
				 (unsigned int)c->uid);
		res = vcmad_ctl_exec(ctl, c, &req, &err, msg, sizeof(msg));
	} else {
		log_debug("ctl: bad request from pid %d: %s", (int)c->pid, msg);
	}
	if (err == -EINPROGRESS) {
		/* answered when the vacate job ends (vcmad_ctl_alloc_done) */
		c->job_waiting = true;
		c->job_id = req.id ? json_object_get(req.id) : NULL;
	} else {
		respond(c, req.id, res, err, msg);
	}
	vcmad_ctl_req_fini(&req);
}

/* c's alloc ended (maybe inside vcmad_ctl_exec): note the outcome; the answer goes
 * out from vcmad_ctl_exec, or on c's next turn, in request order. */
static void alloc_done(struct vcmad_ctl_client *c, int err, const struct vcma_region *r)
{
	c->job_done = true;
	c->job_err = err;
	if (r)
		c->job_r = *r;
	enqueue(c);
}

/* ---- the operator's test allocations as a requester (alloc.h) ---- */

/* the frames may hold a guest's old data */
static int admin_take(struct vcmad_requester *rq, struct vcma_region *r)
{
	struct vcmad *d = rq->d;

	r->gpa = 0;
	return vcmad_mem_clear(&d->be, r->mfn, r->nframes);
}

/* tag: the client that asked (vcmad_alloc_drop stops answers once it is gone) */
static void admin_answer(struct vcmad_requester *rq, uint64_t tag, int err, const struct vcma_region *r)
{
	struct vcmad *d = rq->d;

	if (!err)
		log_info("ctl: admin region %#llx: %llu KiB at mfn %#llx in pool %s", (unsigned long long)r->handle,
			 (unsigned long long)(r->nframes << 2), (unsigned long long)r->mfn,
			 d->core.pool[r->pool]->cfg.name);
	alloc_done((struct vcmad_ctl_client *)(uintptr_t)tag, err, r);
}

static void admin_release(struct vcmad_requester *rq, const struct vcma_region *r)
{
	struct vcmad *d = rq->d;

	d->be.type->mem->zero(&d->be, r->mfn, r->nframes); /* release the memory */
}

static const struct vcmad_requester_ops vcmad_ctl_admin_ops = {
	.take = admin_take,
	.answer = admin_answer,
	.release = admin_release,
};

/* Answer the pending alloc once its job is done; true if c may take more lines. */
static bool job_answered(struct vcmad_ctl_client *c)
{
	struct json_object *res;
	char msg[256] = "";
	int err;

	if (!c->job_waiting)
		return true;
	if (!c->job_done)
		return false;
	if (c->job_lv) {
		respond(c, c->job_id, c->job_res, c->job_err, c->job_msg);
		c->job_res = NULL; /* respond() took it */
	} else {
		res = vcmad_ctl_alloc_answer(c->ctl, c, &err, msg, sizeof(msg));
		respond(c, c->job_id, res, err, msg);
	}
	json_object_put(c->job_id);
	c->job_id = NULL;
	c->job_waiting = c->job_done = c->job_lv = false;
	return true;
}

void vcmad_ctl_lv_done(void *arg, int err, const char *msg, struct json_object *res)
{
	struct vcmad_ctl_client *c = arg;

	c->job_done = true;
	c->job_err = err;
	c->job_res = res;
	snprintf(c->job_msg, sizeof(c->job_msg), "%s", msg ? msg : "");
	enqueue(c);
}

static void set_events(struct vcmad_ctl_client *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = &c->w };

	if (c->events == ev)
		return;
	/* the loop has no "modify": change the interest of our own watch in place */
	if (epoll_ctl(c->ctl->d->loop.epfd, EPOLL_CTL_MOD, c->fd, &e))
		log_warn("ctl: epoll_ctl: %s", strerror(errno));
	else
		c->events = ev;
}

/* Send what the socket takes. */
static void flush(struct vcmad_ctl_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			log_debug("ctl: send to pid %d: %s", (int)c->pid, strerror(errno));
			doom(c, NULL);
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->out_cap > CTL_OUT_KEEP) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
}

/* Handle up to CTL_BUDGET buffered lines; *more if complete lines are left. */
static void process(struct vcmad_ctl_client *c, bool eof, bool *more)
{
	size_t start = 0;
	unsigned int done = 0;
	char *nl;

	*more = false;
	eof = eof || c->eof;
	if (!job_answered(c))
		return; /* nothing else until the pending alloc is answered */
	while (!c->closing && !c->doomed && !c->job_waiting && (nl = memchr(c->in + start, '\n', c->in_len - start))) {
		size_t len = (size_t)(nl - (c->in + start));

		if (done == CTL_BUDGET) {
			*more = true;
			break;
		}
		handle_line(c, c->in + start, len);
		start += len + 1;
		done++;
	}
	if (start) {
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
		c->active_at = c->line_since = vcmad_now(c->ctl->d); /* what is left began now */
	}
	if (c->closing || c->doomed || *more || c->job_waiting)
		return;
	if (c->in_len == CTL_IN_CAP) {
		char msg[96];

		snprintf(msg, sizeof(msg), "request too large: a request line may hold at most %u bytes",
			 VCMAD_CTL_LINE_MAX);
		log_warn("ctl: pid %d uid %u: %s; closing", (int)c->pid, (unsigned int)c->uid, msg);
		c->in_len = 0;
		c->closing = true;
		respond(c, NULL, NULL, -EMSGSIZE, msg);
		return;
	}
	if (eof) {
		/* a last request without a newline still counts */
		if (c->in_len)
			handle_line(c, c->in, c->in_len);
		c->in_len = 0;
		c->closing = true;
	}
}

/* One turn of a client: read (events from epoll, 0 from the run queue), answer,
 * send, and set what to wait for next. Never frees c. */
static void client_turn(struct vcmad_ctl_client *c, uint32_t events)
{
	bool eof = false, more;

	if (c->doomed)
		return;
	if (events & EPOLLERR) {
		doom(c, NULL);
		return;
	}
	if (!c->closing && !c->queued && (events & EPOLLIN) && c->in_len < CTL_IN_CAP) {
		ssize_t n = recv(c->fd, c->in + c->in_len, CTL_IN_CAP - c->in_len, MSG_DONTWAIT);

		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			doom(c, NULL);
			return;
		}
		if (n == 0)
			eof = true;
		if (n > 0) {
			if (!c->in_len)
				c->line_since = vcmad_now(c->ctl->d);
			c->in_len += (size_t)n;
		}
	} else if ((events & EPOLLHUP) && !(events & EPOLLIN)) {
		eof = true;
	}
	c->eof = c->eof || eof;
	if ((events & EPOLLHUP) && c->job_waiting && !c->job_done) {
		/* gone for good while its alloc waits: nobody to answer; the job lets the
		 * window go when it ends */
		doom(c, NULL);
		return;
	}
	dequeue(c);
	process(c, eof, &more);
	if (!c->doomed)
		flush(c);
	if (c->doomed)
		return;
	if (c->closing) {
		if (c->out_off == c->out_len)
			doom(c, NULL); /* everything said */
		else
			set_events(c, EPOLLOUT);
		return;
	}
	if (more)
		enqueue(c); /* the rest next loop iteration, after the guests' turns */
	/* after EOF there is nothing more to read: waiting for EPOLLIN would spin */
	set_events(c, (c->in_len < CTL_IN_CAP && !more && !c->eof ? EPOLLIN : 0) |
			      (c->out_off < c->out_len ? EPOLLOUT : 0));
}

static void client_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_ctl_client *c = client_of(w);

	client_turn(c, events);
	if (c->doomed)
		client_close(c);
}

static void run_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_ctl *ctl = (struct vcmad_ctl *)((char *)w - offsetof(struct vcmad_ctl, run_w));
	struct vcmad_ctl_client *q = ctl->runq;
	uint64_t cnt;

	ctl->runq = NULL;
	while (q) {
		struct vcmad_ctl_client *c = q;

		q = c->next_run;
		c->queued = false;
		c->next_run = NULL;
		client_turn(c, 0);
	}
	if (!ctl->runq) {
		if (read(ctl->run_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			log_warn("ctl: run queue eventfd: %s", strerror(errno));
		ctl->run_armed = false;
	}
}

/* Answer a connection we will not serve with one error line, then close it. */
static void refuse(int fd, int err, const char *msg)
{
	struct json_object *env = vcmad_ctl_response(NULL, NULL, err, msg);
	char sink[4096];
	const char *s;
	size_t n;

	if (env && (s = json_object_to_json_string_length(env, JSON_C_TO_STRING_PLAIN, &n))) {
		struct iovec iov[2] = { { .iov_base = (void *)s, .iov_len = n }, { .iov_base = "\n", .iov_len = 1 } };
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };

		if (sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("ctl: refusal not delivered: %s", strerror(errno));
	}
	json_object_put(env);
	/* discard what the client sent already: closing with unread input would reset
	 * the connection before the client reads the refusal */
	for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	if (close(fd))
		log_debug("ctl: close: %s", strerror(errno));
}

/* Clients not on their way out (doomed ones are freed by their own callback). */
static uint32_t live_clients(const struct vcmad_ctl *ctl)
{
	uint32_t n = 0;

	for (const struct vcmad_ctl_client *c = ctl->clients; c; c = c->next)
		n += !c->doomed;
	return n;
}

static bool idle(const struct vcmad_ctl_client *c)
{
	return !c->doomed && !c->closing && !c->queued && !c->job_waiting && c->out_off == c->out_len;
}

/* Make room: close the client idle longest, if one has been idle CTL_EVICT_NS. */
static bool evict_idle(struct vcmad_ctl *ctl)
{
	static struct vcma_ratelimit rl;
	struct vcmad_ctl_client *victim = NULL;
	uint64_t now = vcmad_now(ctl->d);

	for (struct vcmad_ctl_client *c = ctl->clients; c; c = c->next)
		if (idle(c) && now - c->active_at >= CTL_EVICT_NS && (!victim || c->active_at < victim->active_at))
			victim = c;
	if (!victim)
		return false;
	ctl->stats.evicted++;
	if (vcma_ratelimit_ok(&rl, 5, 10ull * 1000000000ull))
		log_warn("ctl: all %u client slots taken: closing pid %d uid %u, idle %llu ms%s", VCMAD_CTL_MAX_CLIENTS,
			 (int)victim->pid, (unsigned int)victim->uid,
			 (unsigned long long)((now - victim->active_at) / 1000000),
			 victim->in_len ? " with an unfinished request" : "");
	doom(victim, NULL);
	return true;
}

/* Once a second while clients are connected: close those stalled in the middle of a
 * request line. */
static void tick_cb(struct vcma_timer *t)
{
	struct vcmad_ctl *ctl = (struct vcmad_ctl *)((char *)t - offsetof(struct vcmad_ctl, tick));
	uint64_t now = vcmad_now(ctl->d);

	for (struct vcmad_ctl_client *c = ctl->clients; c; c = c->next)
		if (c->in_len && !c->doomed && !c->job_waiting && now - c->line_since >= CTL_STALL_NS)
			doom(c, "a request line unfinished for 10 s");
	if (ctl->clients)
		vcma_timer_arm(&ctl->d->loop, t, now + 1000000000ull);
}

static void accept_one(struct vcmad_ctl *ctl, int fd)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	struct vcmad_ctl_client *c;
	int rc;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) || len != sizeof(uc)) {
		log_warn("ctl: SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	if (!peer_allowed(ctl, fd, &uc)) {
		char msg[160];

		ctl->stats.refused++;
		snprintf(msg, sizeof(msg),
			 "permission denied: uid %u is neither root nor in the control group%s%s", (unsigned int)uc.uid,
			 ctl->has_group ? " " : " (none configured: [daemon] ctl_group)",
			 ctl->has_group ? ctl->d->conf.ctl_group : "");
		if (vcma_ratelimit_ok(&refuse_rl, 10, 10ull * 1000000000ull))
			log_warn("ctl: refused pid %d uid %u gid %u: not root or in the control group", (int)uc.pid,
				 (unsigned int)uc.uid, (unsigned int)uc.gid);
		refuse(fd, -EACCES, msg);
		return;
	}
	if (live_clients(ctl) >= VCMAD_CTL_MAX_CLIENTS && !evict_idle(ctl)) {
		ctl->stats.busy++;
		refuse(fd, -EBUSY, "too many control clients connected (16), all busy; try again later");
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->in = malloc(CTL_IN_CAP);
	if (!c || !c->in) {
		if (c)
			free(c);
		refuse(fd, -ENOMEM, "out of memory");
		return;
	}
	c->ctl = ctl;
	c->fd = fd;
	c->active_at = vcmad_now(ctl->d);
	c->pid = uc.pid;
	c->uid = uc.uid;
	c->events = EPOLLIN;
	rc = vcma_loop_add(&ctl->d->loop, &c->w, fd, EPOLLIN, client_cb);
	if (rc) {
		log_warn("ctl: epoll: %s", strerror(-rc));
		free(c->in);
		free(c);
		close(fd);
		return;
	}
	c->next = ctl->clients;
	ctl->clients = c;
	ctl->nclients++;
	ctl->stats.accepted++;
	if (!ctl->tick.armed)
		vcma_timer_arm(&ctl->d->loop, &ctl->tick, vcmad_now(ctl->d) + 1000000000ull);
	log_debug("ctl: client pid %d uid %u connected", (int)uc.pid, (unsigned int)uc.uid);
}

static void accept_cb(struct vcma_watch *w, uint32_t events)
{
	struct vcmad_ctl *ctl = ctl_of(w);

	for (unsigned int i = 0; i < VCMAD_CTL_MAX_CLIENTS; i++) {
		int fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == ECONNABORTED || errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    vcma_ratelimit_ok(&accept_rl, 5, 10ull * 1000000000ull))
				log_warn("ctl: accept: %s", strerror(errno));
			return;
		}
		accept_one(ctl, fd);
	}
}

/* ---- start / stop ---- */

int vcmad_ctl_start(struct vcmad *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vcmad_ctl *ctl;
	int fd, rc;

	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->d = d;
	ctl->fd = -1;
	vcma_timer_init(&ctl->tick, tick_cb);
	vcmad_requester_init(&ctl->admin, d, &vcmad_ctl_admin_ops, VCMAD_CTL_ADMIN_GUEST, VCMAD_CTL_ADMIN_NAME, NULL);
	ctl->start_ns = vcmad_now(ctl->d);
	ctl->run_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctl->run_fd < 0) {
		rc = -errno;
		free(ctl);
		return rc;
	}
	if (d->conf.ctl_group[0]) {
		rc = resolve_group(d->conf.ctl_group, &ctl->gid);
		if (rc) {
			log_err("ctl_group %s: %s", d->conf.ctl_group,
				rc == -ENOENT ? "no such group" : strerror(-rc));
			rc = rc == -ENOENT ? -EINVAL : rc;
			goto fail_ctl;
		}
		ctl->has_group = true;
	}
	if ((size_t)snprintf(ctl->path, sizeof(ctl->path), "%s/%s", d->conf.runtime_dir, VCMAD_CTL_SOCKET) >=
	    sizeof(sa.sun_path)) {
		log_err("control socket path %s/%s is too long", d->conf.runtime_dir, VCMAD_CTL_SOCKET);
		rc = -ENAMETOOLONG;
		goto fail_ctl;
	}
	memcpy(sa.sun_path, ctl->path, strlen(ctl->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		goto fail_ctl;
	}
	if (unlink(ctl->path) && errno != ENOENT) {
		rc = -errno;
		log_err("cannot remove stale %s: %s", ctl->path, strerror(errno));
		goto fail_fd;
	}
	/* peers are checked with SO_PEERCRED on accept, so the moment between bind and
	 * chmod/chown only decides who reaches that check */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(ctl->path, 0660) ||
	    (ctl->has_group && chown(ctl->path, (uid_t)-1, ctl->gid)) || listen(fd, CTL_BACKLOG)) {
		rc = -errno;
		log_err("cannot listen on %s: %s", ctl->path, strerror(errno));
		goto fail_unlink;
	}
	ctl->fd = fd;
	rc = vcma_loop_add(&d->loop, &ctl->run_w, ctl->run_fd, EPOLLIN, run_cb);
	if (rc)
		goto fail_unlink;
	rc = vcma_loop_add(&d->loop, &ctl->w, fd, EPOLLIN, accept_cb);
	if (rc) {
		vcma_loop_del(&d->loop, &ctl->run_w);
		goto fail_unlink;
	}
	d->ctl = ctl;
	log_info("control socket %s (root%s%s)", ctl->path, ctl->has_group ? " and group " : " only",
		 ctl->has_group ? d->conf.ctl_group : "");
	return 0;
fail_unlink:
	unlink(ctl->path);
fail_fd:
	close(fd);
fail_ctl:
	close(ctl->run_fd);
	free(ctl);
	return rc;
}

void vcmad_ctl_stop(struct vcmad *d)
{
	struct vcmad_ctl *ctl = d->ctl;
	int freed = 0;

	if (!ctl)
		return;
	while (ctl->clients)
		client_close(ctl->clients);
	vcma_loop_del(&d->loop, &ctl->w);
	vcma_loop_del(&d->loop, &ctl->run_w);
	close(ctl->fd);
	close(ctl->run_fd);
	unlink(ctl->path);
	vcma_timer_cancel(&d->loop, &ctl->tick);
	freed = vcmad_requester_gone(&ctl->admin);
	if (freed)
		log_info("ctl: %d vcmactl region(s) freed at shutdown", freed);
	free(ctl);
	d->ctl = NULL;
}
