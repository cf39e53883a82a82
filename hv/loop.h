/* SPDX-License-Identifier: MIT */
/*
 * loop.h - a minimal epoll loop. A watch is embedded in its owner; the callback
 * gets the watch and the epoll events. Single-threaded.
 */
#ifndef VCMA_HV_LOOP_H
#define VCMA_HV_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct vcma_watch;
typedef void (*vcma_watch_fn)(struct vcma_watch *w, uint32_t events);

struct vcma_watch {
	int fd;
	vcma_watch_fn fn;
};

struct vcma_loop {
	int epfd;
	bool stop;
};

int vcma_loop_init(struct vcma_loop *l);
void vcma_loop_fini(struct vcma_loop *l);
int vcma_loop_add(struct vcma_loop *l, struct vcma_watch *w, int fd, uint32_t events, vcma_watch_fn fn);
int vcma_loop_del(struct vcma_loop *l, struct vcma_watch *w);
/* Wait up to timeout_ms (-1 forever) and dispatch; returns events handled or -errno. */
int vcma_loop_once(struct vcma_loop *l, int timeout_ms);

#endif
