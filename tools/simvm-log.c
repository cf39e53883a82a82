// SPDX-License-Identifier: MIT
/*
 * simvm-log.c - what every part of vcma-simvm shares: its messages, and the signal
 * that asks it to stop (simvm-vm.h).
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>

#include "simvm-vm.h"

volatile sig_atomic_t got_signal;

void on_signal(int sig)
{
	got_signal = sig;
}

void msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("vcma-simvm: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}
