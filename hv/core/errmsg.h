/* SPDX-License-Identifier: MIT */
/*
 * errmsg.h - the one way vcma's parsers fill a caller's error buffer.
 */
#ifndef VCMA_ERRMSG_H
#define VCMA_ERRMSG_H

#include <stddef.h>

/* Format into err[errlen] (always terminated); a NULL or empty buffer is ignored. */
void vcma_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
