/* SPDX-License-Identifier: MIT */
/*
 * daemon.h - vcmad's lifecycle: init / start / run / stop / fini, so tests and main.c
 * drive the same code. The daemon's state is struct vcmad (vcmad.h).
 */
#ifndef VCMA_HV_DAEMON_H
#define VCMA_HV_DAEMON_H

#include "vcmad.h"

/* Build pools, machine memory and the core from conf, on the backend it names. */
int vcmad_init(struct vcmad *d, const struct vcmad_conf *conf);
/* The same on a given backend (tests bring a fake one). */
int vcmad_init_backend(struct vcmad *d, const struct vcmad_conf *conf, const struct vcmad_backend_type *bt);
/* Listen on every link, the control socket; install signal handling. */
int vcmad_start(struct vcmad *d);
/* Serve until SIGTERM/SIGINT (or vcmad_request_stop()) and every guest has gone. */
int vcmad_run(struct vcmad *d);
/* One turn of the loop, waiting at most max_ms (tests step the daemon with it).
 * Returns 1 while serving, 0 once shut down, or -errno. */
int vcmad_run_once(struct vcmad *d, int max_ms);
void vcmad_request_stop(struct vcmad *d);
/* Detach what is left, remove the sockets, free everything. */
void vcmad_fini(struct vcmad *d);

/* sd_notify(3) without libsystemd: 0 if sent or NOTIFY_SOCKET unset. */
int vcmad_sd_notify(const char *msg);


#endif
