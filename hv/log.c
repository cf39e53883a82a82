// SPDX-License-Identifier: MIT
/*
 * log.c - stderr logging with syslog priorities.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "stats.h"

static int log_max = LOG_INFO;
static int log_journal = -1;

void vcma_log_init(int max_priority)
{
	log_max = max_priority;
	log_journal = getenv("JOURNAL_STREAM") != NULL;
}

void vcma_log(int prio, const char *fmt, ...)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error", "warning", "notice", "info",
					     "debug" };
	char buf[1024];
	va_list ap;

	if (prio > log_max)
		return;
	if (log_journal < 0)
		log_journal = getenv("JOURNAL_STREAM") != NULL;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (log_journal)
		fprintf(stderr, "<%d>%s\n", prio, buf);
	else
		fprintf(stderr, "vcmad: %s: %s\n", names[prio & 7], buf);
}

int vcma_ratelimit_ok(struct vcma_ratelimit *rl, uint32_t burst, uint64_t interval_ns)
{
	uint64_t now = vcma_now_ns();

	if (now - rl->window_start > interval_ns) {
		if (rl->suppressed)
			vcma_log(LOG_WARNING, "%u similar messages suppressed", rl->suppressed);
		rl->window_start = now;
		rl->printed = 0;
		rl->suppressed = 0;
	}
	if (rl->printed < burst) {
		rl->printed++;
		return 1;
	}
	rl->suppressed++;
	return 0;
}
