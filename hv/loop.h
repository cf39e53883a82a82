/* SPDX-License-Identifier: MIT */
/*
 * loop.h - a minimal epoll loop with timers. Single-threaded.
 *
 * A watch is embedded in its owner; its callback gets the watch and the epoll
 * events. A timer too: armed for an absolute time on the loop's clock, it runs once
 * (re-arm it from its callback to repeat). The clock is vcma_now_ns() unless a test
 * gives the loop its own, to step time instead of waiting for it.
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

struct vcma_timer;
typedef void (*vcma_timer_fn)(struct vcma_timer *t);

struct vcma_timer {
	uint64_t due; /* loop clock, ns */
	vcma_timer_fn fn;
	struct vcma_timer *next; /* in the loop's armed list, earliest first */
	uint64_t seq;            /* when it was armed, in the loop's count of arms */
	bool armed;
};

struct vcma_loop {
	int epfd;
	bool stop;
	uint64_t (*clock)(void);
	struct vcma_timer *timers; /* armed, earliest first */
	uint64_t arm_seq;
	uint64_t woke_ns; /* loop clock when the last epoll_wait returned: events of this turn were seen then */
};

int vcma_loop_init(struct vcma_loop *l);
void vcma_loop_fini(struct vcma_loop *l);
int vcma_loop_add(struct vcma_loop *l, struct vcma_watch *w, int fd, uint32_t events, vcma_watch_fn fn);
int vcma_loop_del(struct vcma_loop *l, struct vcma_watch *w);
uint64_t vcma_loop_now(const struct vcma_loop *l);

void vcma_timer_init(struct vcma_timer *t, vcma_timer_fn fn);
/* (Re-)arm t for `due` on the loop's clock; one that is due already runs on the
 * next vcma_loop_once(). */
void vcma_timer_arm(struct vcma_loop *l, struct vcma_timer *t, uint64_t due);
void vcma_timer_arm_in(struct vcma_loop *l, struct vcma_timer *t, uint64_t delay_ns);
void vcma_timer_cancel(struct vcma_loop *l, struct vcma_timer *t);

/* Wait for fd events up to the earliest timer (at most max_ms; -1 no bound, 0 do not
 * wait), dispatch them, then run the timers that are due. Returns the fd events
 * handled, or -errno. */
int vcma_loop_once(struct vcma_loop *l, int max_ms);

#endif
