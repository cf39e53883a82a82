// SPDX-License-Identifier: MIT
/*
 * loop.c - epoll dispatch and timers.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"
#include "stats.h" /* vcma_now_ns */

int vcma_loop_init(struct vcma_loop *l)
{
	l->stop = false;
	l->timers = NULL;
	if (!l->clock)
		l->clock = vcma_now_ns;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	return l->epfd < 0 ? -errno : 0;
}

void vcma_loop_fini(struct vcma_loop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
	while (l->timers) {
		struct vcma_timer *t = l->timers;

		l->timers = t->next;
		t->armed = false;
		t->next = NULL;
	}
}

int vcma_loop_add(struct vcma_loop *l, struct vcma_watch *w, int fd, uint32_t events, vcma_watch_fn fn)
{
	struct epoll_event ev = { .events = events, .data.ptr = w };

	w->fd = fd;
	w->fn = fn;
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

int vcma_loop_del(struct vcma_loop *l, struct vcma_watch *w)
{
	if (w->fd < 0)
		return 0;
	return epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL) ? -errno : 0;
}

uint64_t vcma_loop_now(const struct vcma_loop *l)
{
	return l->clock ? l->clock() : vcma_now_ns();
}

void vcma_timer_init(struct vcma_timer *t, vcma_timer_fn fn)
{
	t->due = 0;
	t->fn = fn;
	t->next = NULL;
	t->armed = false;
}

void vcma_timer_cancel(struct vcma_loop *l, struct vcma_timer *t)
{
	if (!t->armed)
		return;
	for (struct vcma_timer **pp = &l->timers; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->armed = false;
	t->next = NULL;
}

void vcma_timer_arm(struct vcma_loop *l, struct vcma_timer *t, uint64_t due)
{
	struct vcma_timer **pp = &l->timers;

	vcma_timer_cancel(l, t);
	/* a handful are armed at once: a sorted list is plenty */
	while (*pp && (*pp)->due <= due)
		pp = &(*pp)->next;
	t->due = due;
	t->seq = ++l->arm_seq;
	t->next = *pp;
	*pp = t;
	t->armed = true;
}

void vcma_timer_arm_in(struct vcma_loop *l, struct vcma_timer *t, uint64_t delay_ns)
{
	vcma_timer_arm(l, t, vcma_loop_now(l) + delay_ns);
}

/* Run the timers due now. A callback may arm or cancel any timer; one armed during
 * this run waits for the next (it sorts after every timer due now, so the run stops
 * at the first such). */
static void run_timers(struct vcma_loop *l)
{
	uint64_t now = vcma_loop_now(l), limit = l->arm_seq;

	while (l->timers && l->timers->due <= now && l->timers->seq <= limit) {
		struct vcma_timer *t = l->timers;

		l->timers = t->next;
		t->next = NULL;
		t->armed = false;
		t->fn(t);
	}
}

int vcma_loop_once(struct vcma_loop *l, int max_ms)
{
	struct epoll_event ev[32];
	int tmo = max_ms, n;

	if (l->timers) {
		uint64_t now = vcma_loop_now(l), ms;

		ms = l->timers->due <= now ? 0 : (l->timers->due - now + 999999) / 1000000;
		if (tmo < 0 || ms < (uint64_t)tmo)
			tmo = ms > 3600000 ? 3600000 : (int)ms;
	}
	n = epoll_wait(l->epfd, ev, 32, tmo);
	l->woke_ns = vcma_loop_now(l);
	if (n < 0) {
		if (errno != EINTR)
			return -errno;
		n = 0;
	}
	for (int i = 0; i < n; i++) {
		struct vcma_watch *w = ev[i].data.ptr;

		w->fn(w, ev[i].events);
	}
	run_timers(l);
	return n;
}
