// SPDX-License-Identifier: MIT
/*
 * loop.c - epoll dispatch.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"

int vcma_loop_init(struct vcma_loop *l)
{
	l->stop = false;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	return l->epfd < 0 ? -errno : 0;
}

void vcma_loop_fini(struct vcma_loop *l)
{
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
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

int vcma_loop_once(struct vcma_loop *l, int timeout_ms)
{
	struct epoll_event ev[32];
	int n = epoll_wait(l->epfd, ev, 32, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct vcma_watch *w = ev[i].data.ptr;

		w->fn(w, ev[i].events);
	}
	return n;
}
