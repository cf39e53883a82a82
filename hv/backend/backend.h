/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the seam between vcmad and a hypervisor. The core never calls a
 * hypervisor; the daemon calls these, and only these touch machine memory.
 *
 * Frame numbers are machine frames (mfn). A backend owns the machine memory that is
 * not in a pool ("ordinary memory") and backs guests' RAM from it.
 */
#ifndef VCMA_HV_BACKEND_H
#define VCMA_HV_BACKEND_H

#include <stdint.h>

#include "memrange.h"

struct vcma_backend;

struct vcma_pool_range {
	uint64_t mfn, count;
};

struct vcma_backend_ops {
	const char *name;
	/* Machine memory of `bytes`, with the given pool ranges carved out of ordinary
	 * memory. */
	int (*init)(struct vcma_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools);
	void (*fini)(struct vcma_backend *be);
	/* Contents of [mfn, mfn+count) become zero (and need no memory until touched). */
	int (*zero)(struct vcma_backend *be, uint64_t mfn, uint64_t count);
	/* Back `frames` guest frames from ordinary memory: at most max_runs extents,
	 * zeroed. Returns the number of extents or -errno. */
	int (*ram_alloc)(struct vcma_backend *be, uint64_t frames, struct vcma_extent *runs, uint32_t max_runs);
	/* Give guest RAM back (zeroed first: it held the guest's data). */
	void (*ram_free)(struct vcma_backend *be, const struct vcma_extent *runs, uint32_t nruns);
};

struct vcma_backend {
	const struct vcma_backend_ops *ops;
	uint64_t machine_bytes;
	int machine_fd;      /* sim: the machine memory memfd */
	uint8_t *machine;    /* sim: vcmad's own mapping of it */
	struct vcma_memrange ordinary;
};

extern const struct vcma_backend_ops vcma_backend_sim;

#endif
