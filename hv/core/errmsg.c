// SPDX-License-Identifier: MIT
/*
 * errmsg.c - error messages into caller buffers.
 */
#include <stdarg.h>
#include <stdio.h>

#include "errmsg.h"

void vcma_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
