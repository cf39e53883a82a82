// SPDX-License-Identifier: MIT
/*
 * sim.c - the simulated machine: one sparse memfd is machine memory. Pools and
 * ordinary memory are frame ranges of it; simulated VMs map their RAM from it
 * frame run by frame run as their p2m says.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"

#define SIM_PAGE 4096ull

static int sim_zero(struct vcma_backend *be, uint64_t mfn, uint64_t count)
{
	if (mfn + count > be->machine_bytes / SIM_PAGE)
		return -EINVAL;
	/* Punching a hole in shmem frees the pages; the next touch reads zeros. */
	if (fallocate(be->machine_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(mfn * SIM_PAGE),
		      (off_t)(count * SIM_PAGE)))
		return -errno;
	return 0;
}

static int sim_init(struct vcma_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools)
{
	uint64_t frames = bytes / SIM_PAGE, cursor = 0;
	int rc;

	be->machine_fd = -1;
	be->machine = NULL;
	vcma_memrange_init(&be->ordinary);
	be->machine_fd = memfd_create("vcma-machine", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (be->machine_fd < 0)
		return -errno;
	if (ftruncate(be->machine_fd, (off_t)bytes) ||
	    fcntl(be->machine_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		rc = -errno;
		goto fail;
	}
	be->machine = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, be->machine_fd, 0);
	if (be->machine == MAP_FAILED) {
		rc = -errno;
		be->machine = NULL;
		goto fail;
	}
	be->machine_bytes = bytes;
	/* ordinary memory = everything between the pools (pools are sorted by mfn) */
	for (uint32_t i = 0; i <= npools; i++) {
		uint64_t end = i < npools ? pools[i].mfn : frames;

		if (end > cursor && (rc = vcma_memrange_free(&be->ordinary, cursor, end - cursor)))
			goto fail;
		if (i < npools)
			cursor = pools[i].mfn + pools[i].count;
	}
	return 0;
fail:
	be->ops->fini(be);
	return rc;
}

static void sim_fini(struct vcma_backend *be)
{
	if (be->machine)
		munmap(be->machine, be->machine_bytes);
	if (be->machine_fd >= 0)
		close(be->machine_fd);
	be->machine = NULL;
	be->machine_fd = -1;
	vcma_memrange_fini(&be->ordinary);
}

static int sim_ram_alloc(struct vcma_backend *be, uint64_t frames, struct vcma_extent *runs, uint32_t max_runs)
{
	int n = vcma_memrange_alloc(&be->ordinary, frames, runs, max_runs);

	for (int i = 0; i < n; i++) {
		int rc = sim_zero(be, runs[i].start, runs[i].count);

		if (rc) {
			for (int j = 0; j < n; j++)
				vcma_memrange_free(&be->ordinary, runs[j].start, runs[j].count);
			return rc;
		}
	}
	return n;
}

/*
 * Freed ordinary memory is cleared in place, not punched: like a host's free RAM it
 * stays resident and zeroed, so the next owner (a VM's page moved off a pool frame,
 * copied while the VM is paused) does not take a page fault per page. Pool frames
 * are punched (sim_zero) when regions and lent frames are released.
 */
static void sim_ram_free(struct vcma_backend *be, const struct vcma_extent *runs, uint32_t nruns)
{
	for (uint32_t i = 0; i < nruns; i++) {
		int rc;

		if (runs[i].start + runs[i].count > be->machine_bytes / SIM_PAGE) {
			log_err("sim: freed guest RAM at mfn %#llx is outside machine memory",
				(unsigned long long)runs[i].start);
			continue;
		}
		memset(be->machine + runs[i].start * SIM_PAGE, 0, runs[i].count * SIM_PAGE);
		rc = vcma_memrange_free(&be->ordinary, runs[i].start, runs[i].count);
		if (rc)
			log_err("sim: guest RAM at mfn %#llx freed twice", (unsigned long long)runs[i].start);
	}
}

const struct vcma_backend_ops vcma_backend_sim = {
	.name = "sim",
	.init = sim_init,
	.fini = sim_fini,
	.zero = sim_zero,
	.ram_alloc = sim_ram_alloc,
	.ram_free = sim_ram_free,
};
