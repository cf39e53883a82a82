/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * vcma_status.h - protocol status codes <-> errno, once for every side.
 *
 * A guest (libvcma, vcma.ko, vcma-simvm) turns a response's status into the errno
 * its caller sees (PROTOCOL.md §5.6, the "libvcma" column); the host turns the
 * errno its allocator and backends return into the status it puts on the wire.
 * Both directions live here so they cannot drift apart.
 */
#ifndef VCMA_STATUS_H
#define VCMA_STATUS_H

#ifdef __KERNEL__
#include <linux/errno.h>
#else
#include <errno.h>
#endif

#include "vcma_proto.h"

/* A response's status as a negative errno (0 for OK); unknown statuses are -EIO. */
static inline int vcma_status_errno(int32_t status)
{
	switch (status) {
	case VCMA_ST_OK: return 0;
	case VCMA_ST_INVALID: return -EINVAL;
	case VCMA_ST_USE_NORMAL: return -ERANGE;
	case VCMA_ST_NO_POOL: return -ENODEV;
	case VCMA_ST_ACCESS: return -EACCES;
	case VCMA_ST_QUOTA: return -EDQUOT;
	case VCMA_ST_NO_SPACE: return -ENOSPC;
	case VCMA_ST_TOO_BIG: return -E2BIG;
	case VCMA_ST_BUSY: return -EBUSY;
	case VCMA_ST_NO_REGION: return -ENOENT;
	case VCMA_ST_NO_MEMORY: return -ENOMEM;
	case VCMA_ST_VERSION: return -EPROTONOSUPPORT;
	case VCMA_ST_LIMIT: return -ENOBUFS;
	case VCMA_ST_SHUTDOWN: return -ESHUTDOWN;
	case VCMA_ST_NOT_READY: /* a guest always says HELLO first: the host lost it */
	case VCMA_ST_INTERNAL:
	default: return -EIO;
	}
}

/* The host's side: the status for an errno from its allocator (0 is OK). Every errno
 * that vcma_status_errno() yields maps back to its status; the others are what the
 * host's own layers say for the same thing (a vacate that timed out is BUSY, a pool
 * tracking too many guests is out of memory); anything else is INTERNAL. */
static inline int32_t vcma_errno_status(int err)
{
	switch (err) {
	case 0: return VCMA_ST_OK;
	case -EINVAL: return VCMA_ST_INVALID;
	case -ERANGE: return VCMA_ST_USE_NORMAL;
	case -ENODEV: return VCMA_ST_NO_POOL;
	case -EACCES: return VCMA_ST_ACCESS;
	case -EDQUOT: return VCMA_ST_QUOTA;
	case -ENOSPC: return VCMA_ST_NO_SPACE;
	case -E2BIG: return VCMA_ST_TOO_BIG;
	case -EBUSY: case -ETIMEDOUT: return VCMA_ST_BUSY;
	case -ENOENT: return VCMA_ST_NO_REGION;
	case -ENOMEM: case -EUSERS: return VCMA_ST_NO_MEMORY;
	case -EPROTONOSUPPORT: return VCMA_ST_VERSION;
	case -ENOBUFS: return VCMA_ST_LIMIT;
	case -ESHUTDOWN: return VCMA_ST_SHUTDOWN;
	default: return VCMA_ST_INTERNAL;
	}
}

#endif
