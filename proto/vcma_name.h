/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_name.h - what a name is, once for every side: pool names on the ring
 * (PROTOCOL.md §5.1), guest and class names at attach (§9.1), and the names in
 * vcmad.conf and on the control socket. A name is 1 or more characters of
 * [A-Za-z0-9_.-]; fixed-size fields hold it NUL-terminated and NUL-padded.
 */
#ifndef VCMA_NAME_H
#define VCMA_NAME_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdbool.h>
#include <stddef.h>
#endif

static inline bool vcma_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
	       c == '.';
}

/* s[0..n) is a name: 1 to max-1 characters, all of the set (so it fits a buffer of
 * max bytes with its NUL). */
static inline bool vcma_name_ok(const char *s, size_t n, size_t max)
{
	if (!n || n >= max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!vcma_name_char(s[i]))
			return false;
	return true;
}

/* A NUL-terminated C string that is a name fitting a buffer of max bytes. */
static inline bool vcma_name_str_ok(const char *s, size_t max)
{
	size_t n = 0;

	while (n < max && s[n])
		n++;
	return n < max && vcma_name_ok(s, n, max);
}

/* A fixed field of size bytes as it travels: a name then NUL padding to the end, or
 * (allow_empty) all zero. Reads exactly size bytes of f, never a byte more. */
static inline bool vcma_name_field_ok(const char *f, size_t size, bool allow_empty)
{
	size_t n = 0;

	while (n < size && f[n])
		n++;
	if (n == size || (!n && !allow_empty))
		return false; /* no terminator, or empty where a name is required */
	for (size_t i = n; i < size; i++)
		if (f[i])
			return false; /* a byte after the first NUL */
	return !n || vcma_name_ok(f, n, size);
}

#endif
