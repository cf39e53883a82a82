// SPDX-License-Identifier: MIT
/*
 * sim_mem.c - the sim backend's machine memory: one sparse file. Pools and ordinary
 * memory are frame ranges of it; simulated VMs map their RAM from it frame run by frame
 * run as their p2m says (the VM control half is sim_vmm.c).
 *
 * Where: a sealed memfd when vcmad records no state (it dies with vcmad, as nothing
 * could take it back), else be->mem_file (RUNTIME_DIR/machine.mem, tmpfs): like
 * physical memory it outlives the daemon but not the host, so a restarted vcmad finds
 * every VM's RAM and every region where its record says. A file cannot be sealed;
 * only root and the VMMs vcmad hands it to (trusted as QEMU is) hold it, and the
 * file is flock()ed so two vcmads never share one.
 *
 * Pool frames are zeroed by punching holes when they go idle (a region freed, a lent
 * frame given back), so idle pool memory holds no host RAM; frames about to be used (a
 * region handed out, relend's destinations) are cleared in place where they hold
 * memory (sim_clear), since a hole would be faulted in again page by page.
 *
 * Ordinary memory is kept zeroed while it is free: the memfd starts sparse, and
 * ram_free clears frames in place before they go back (resident, so the next owner,
 * a page copied while its VM is paused, takes no page fault). So ram_alloc hands out
 * zeros without clearing anything (a VMM, which maps all of machine memory, could
 * scribble on free frames: a new VM's RAM is zeroed again by vm.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include "backend/sim_backend.h"
#include "log.h"

#define SIM_PAGE 4096ull

struct sim_mem {
	int fd;
	int lock_fd; /* the file's flock, on an open of its own: VMMs share fd's description */
	uint8_t *map; /* vcmad's own mapping of all of it */
	struct vcma_memrange ordinary;
};

static struct sim_mem *sm(const struct vcmad_backend *be)
{
	return be->priv;
}

static bool in_range(const struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	uint64_t frames = be->machine_bytes / SIM_PAGE;

	return mfn <= frames && count <= frames - mfn;
}

static int sim_zero(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	if (!in_range(be, mfn, count))
		return -EINVAL;
	/* Punching a hole in shmem frees the pages; the next touch reads zeros. */
	if (fallocate(sm(be)->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(mfn * SIM_PAGE),
		      (off_t)(count * SIM_PAGE)))
		return -errno;
	return 0;
}

/*
 * Clear in place what holds memory; leave holes as they are (they read as zero). The
 * memfd says which is which (SEEK_DATA/SEEK_HOLE count a swapped-out page as data),
 * so a frame a VMM wrote through its own mapping is cleared too.
 */
static int sim_clear(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	struct sim_mem *m = sm(be);
	off_t pos, end;

	if (!in_range(be, mfn, count))
		return -EINVAL;
	pos = (off_t)(mfn * SIM_PAGE);
	end = (off_t)((mfn + count) * SIM_PAGE);
	while (pos < end) {
		off_t data = lseek(m->fd, pos, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break; /* nothing but holes from pos to the end of the file */
		if (data < 0)
			return sim_zero(be, (uint64_t)pos / SIM_PAGE, (uint64_t)(end - pos) / SIM_PAGE);
		if (data >= end)
			break;
		hole = lseek(m->fd, data, SEEK_HOLE);
		if (hole < 0 || hole > end)
			hole = end;
		memset(m->map + data, 0, (size_t)(hole - data));
		pos = hole;
	}
	return 0;
}

static int sim_clear_held(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	if (!in_range(be, mfn, count))
		return -EINVAL;
	memset(sm(be)->map + mfn * SIM_PAGE, 0, count * SIM_PAGE);
	return 0;
}

static int sim_copy(struct vcmad_backend *be, uint64_t dst, uint64_t src, uint64_t count)
{
	if (!in_range(be, dst, count) || !in_range(be, src, count))
		return -EINVAL;
	memcpy(sm(be)->map + dst * SIM_PAGE, sm(be)->map + src * SIM_PAGE, count * SIM_PAGE);
	return 0;
}

static int sim_touch(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	if (!in_range(be, mfn, count))
		return -EINVAL;
	for (uint64_t i = 0; i < count; i++)
		*(volatile uint8_t *)(sm(be)->map + (mfn + i) * SIM_PAGE) = 0; /* the page reads as zero already */
	return 0;
}

static int sim_read(struct vcmad_backend *be, uint64_t mfn, uint64_t off, void *buf, size_t len)
{
	if (mfn > be->machine_bytes / SIM_PAGE || off > be->machine_bytes - mfn * SIM_PAGE ||
	    len > be->machine_bytes - mfn * SIM_PAGE - off)
		return -EINVAL;
	memcpy(buf, sm(be)->map + mfn * SIM_PAGE + off, len);
	return 0;
}

static void sim_fini(struct vcmad_backend *be)
{
	struct sim_mem *m = sm(be);

	if (!m)
		return;
	if (m->map)
		munmap(m->map, be->machine_bytes);
	if (m->fd >= 0)
		close(m->fd);
	if (m->lock_fd >= 0)
		close(m->lock_fd);
	vcma_memrange_fini(&m->ordinary);
	free(m);
	be->priv = NULL;
}

/* The machine memory file: kept as it is when it has the right size (an earlier run's,
 * for vcmad to take back or zero), else made anew. */
static int open_file(struct vcmad_backend *be, struct sim_mem *m, uint64_t bytes)
{
	struct stat st;
	int rc;

	m->fd = open(be->mem_file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (m->fd < 0) {
		rc = -errno;
		log_err("sim: cannot open machine memory %s: %s", be->mem_file, strerror(errno));
		return rc;
	}
	/* a lock on fd itself would be held by every VMM it is passed to, and outlive
	 * vcmad with them: the restarted vcmad could never take it */
	m->lock_fd = open(be->mem_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (m->lock_fd < 0)
		return -errno;
	if (flock(m->lock_fd, LOCK_EX | LOCK_NB)) {
		rc = -errno;
		log_err("sim: machine memory %s is in use by another vcmad (%s)", be->mem_file, strerror(errno));
		return rc == -EWOULDBLOCK ? -EBUSY : rc;
	}
	if (fstat(m->fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		log_err("sim: machine memory %s is not a regular file", be->mem_file);
		return -EINVAL;
	}
	be->mem_reopened = st.st_size == (off_t)bytes;
	if (!be->mem_reopened) {
		if (st.st_size)
			log_warn("sim: machine memory %s has %lld bytes, not %llu: made anew", be->mem_file,
				 (long long)st.st_size, (unsigned long long)bytes);
		if (ftruncate(m->fd, 0) || ftruncate(m->fd, (off_t)bytes))
			return -errno;
	}
	if (fchmod(m->fd, 0600))
		return -errno;
	{
		struct statfs fs;
		uint64_t held = (uint64_t)st.st_blocks * 512, room;

		if (fstatfs(m->fd, &fs))
			return -errno;
		/* a tmpfs that fills up makes the next page written fault (SIGBUS): it must
		 * have room for all of machine memory (on tmpfs nothing is reserved by this) */
		room = (uint64_t)fs.f_bavail * (uint64_t)fs.f_bsize + (be->mem_reopened ? held : 0);
		if (room < bytes) {
			log_err("sim: machine memory %s needs %llu MiB, and its filesystem has room for %llu MiB: give it "
				"more room, or set [machine] file elsewhere", be->mem_file, (unsigned long long)(bytes >> 20),
				(unsigned long long)(room >> 20));
			return -ENOSPC;
		}
		/* /run is tmpfs on a host; a runtime_dir on a disk makes every page written
		 * to machine memory a page the kernel writes back to that disk */
		if (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC && fs.f_type != RAMFS_MAGIC)
			log_warn("sim: machine memory %s is not on tmpfs (filesystem type %#lx): the kernel writes its "
				 "pages back to that disk; put runtime_dir (or [machine] file) on tmpfs, as /run is",
				 be->mem_file, (unsigned long)fs.f_type);
	}
	return 0;
}

static int sim_init(struct vcmad_backend *be, uint64_t bytes, const struct vcma_pool_range *pools, uint32_t npools)
{
	uint64_t frames = bytes / SIM_PAGE, cursor = 0;
	struct sim_mem *m = calloc(1, sizeof(*m));
	int rc;

	if (!m)
		return -ENOMEM;
	be->priv = m;
	m->fd = m->lock_fd = -1;
	vcma_memrange_init(&m->ordinary);
	if (be->mem_file[0]) {
		rc = open_file(be, m, bytes);
		if (rc)
			goto fail;
	} else {
		m->fd = memfd_create("vcma-machine", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (m->fd < 0) {
			rc = -errno;
			goto fail;
		}
		/* F_SEAL_SEAL too: a VMM that maps it cannot seal vcmad out of writing or
		 * punching it (PROTOCOL.md §8.4) */
		if (ftruncate(m->fd, (off_t)bytes) ||
		    fcntl(m->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
			rc = -errno;
			goto fail;
		}
	}
	m->map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (m->map == MAP_FAILED) {
		rc = -errno;
		m->map = NULL;
		goto fail;
	}
	be->machine_bytes = bytes;
	/* ordinary memory = everything between the pools (pools are sorted by mfn) */
	for (uint32_t i = 0; i <= npools; i++) {
		uint64_t end = i < npools ? pools[i].mfn : frames;

		if (end > cursor && (rc = vcma_memrange_free(&m->ordinary, cursor, end - cursor)))
			goto fail;
		if (i < npools)
			cursor = pools[i].mfn + pools[i].count;
	}
	return 0;
fail:
	sim_fini(be);
	return rc;
}

/* Free ordinary memory is zero already (see the top of this file). */
static int sim_ram_alloc(struct vcmad_backend *be, uint64_t frames, struct vcma_extent *runs, uint32_t max_runs)
{
	return vcma_memrange_alloc(&sm(be)->ordinary, frames, runs, max_runs);
}

/*
 * Freed ordinary memory is cleared in place, not punched: like a host's free RAM it
 * stays resident and zeroed, so the next owner (a VM's page moved off a pool frame,
 * copied while the VM is paused) does not take a page fault per page. Pool frames
 * are punched (sim_zero) when regions and lent frames are released.
 */
static void sim_ram_free(struct vcmad_backend *be, const struct vcma_extent *runs, uint32_t nruns)
{
	struct sim_mem *m = sm(be);

	for (uint32_t i = 0; i < nruns; i++) {
		int rc;

		if (!in_range(be, runs[i].start, runs[i].count)) {
			log_err("sim: freed guest RAM at mfn %#llx is outside machine memory",
				(unsigned long long)runs[i].start);
			continue;
		}
		memset(m->map + runs[i].start * SIM_PAGE, 0, runs[i].count * SIM_PAGE);
		rc = vcma_memrange_free(&m->ordinary, runs[i].start, runs[i].count);
		if (rc)
			log_err("sim: guest RAM at mfn %#llx freed twice", (unsigned long long)runs[i].start);
	}
}

static int sim_ram_take(struct vcmad_backend *be, uint64_t mfn, uint64_t count)
{
	if (!in_range(be, mfn, count))
		return -EINVAL;
	return vcma_memrange_take(&sm(be)->ordinary, mfn, count);
}

static uint64_t sim_ram_free_frames(const struct vcmad_backend *be)
{
	return sm(be)->ordinary.free_frames;
}

int vcmad_sim_memfd(const struct vcmad_backend *be)
{
	return be->type == &vcmad_backend_sim && be->priv ? sm(be)->fd : -ENODEV;
}

static const struct vcmad_mem_ops sim_mem_ops = {
	.init = sim_init,
	.fini = sim_fini,
	.zero = sim_zero,
	.clear = sim_clear,
	.clear_held = sim_clear_held,
	.copy = sim_copy,
	.touch = sim_touch,
	.read = sim_read,
	.ram_alloc = sim_ram_alloc,
	.ram_free = sim_ram_free,
	.ram_free_frames = sim_ram_free_frames,
	.ram_take = sim_ram_take,
};

extern const struct vcmad_vm_ops vcmad_sim_vm_ops; /* sim_vmm.c */

const struct vcmad_backend_type vcmad_backend_sim = {
	.name = "sim",
	.mem = &sim_mem_ops,
	.vm = &vcmad_sim_vm_ops,
};
