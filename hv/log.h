/* SPDX-License-Identifier: MIT */
/*
 * log.h - vcmad's logging: one line per message to stderr, prefixed with its
 * syslog priority ("<3>") when stderr goes to the journal, so journald files it
 * under the right level; plain "vcmad: error: ..." otherwise. Never daemonizes.
 */
#ifndef VCMA_HV_LOG_H
#define VCMA_HV_LOG_H

#include <stdint.h>
#include <syslog.h>

void vcma_log_init(int max_priority);
void vcma_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* At most `burst` messages per `interval_ns` from one call site; the rest are
 * counted and reported with the next message that passes. */
struct vcma_ratelimit {
	uint64_t window_start;
	uint32_t printed, suppressed;
};
int vcma_ratelimit_ok(struct vcma_ratelimit *rl, uint32_t burst, uint64_t interval_ns);

#define log_err(...) vcma_log(LOG_ERR, __VA_ARGS__)
#define log_warn(...) vcma_log(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) vcma_log(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) vcma_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...) vcma_log(LOG_DEBUG, __VA_ARGS__)

#endif
