// SPDX-License-Identifier: MIT
/*
 * simvm-dirty.c - the dirty log of guest RAM (simvm-dirty.h): userfaultfd write-protect
 * in asynchronous mode, read and cleared with the PAGEMAP_SCAN ioctl (Linux 6.7).
 *
 * TRACK write-protects the pages (UFFDIO_WRITEPROTECT; WP_UNPOPULATED puts a marker on
 * pages not yet mapped, so they count too). In async mode a write to a protected page is
 * resolved by the kernel in the fault itself: it drops the protection and the page is
 * "written", no message, no thread of ours involved. A read is PAGEMAP_SCAN over the
 * tracked runs with PM_SCAN_WP_MATCHING: the kernel reports the written pages and
 * protects them again under the page table lock, so a write either lands before the
 * read (reported now) or after it (reported next time), never in between.
 *
 * Why this and not the alternatives this kernel (6.x, no soft-dirty) offers:
 *  - synchronous uffd-wp with a fault-handler thread: every first write after a read
 *    blocks the vCPU until our thread wakes, records the page and unprotects it: a
 *    context switch per page, on hosts with two cores; and clearing needs its own
 *    UFFDIO_WRITEPROTECT per range, racing with the writes it should catch.
 *  - mprotect + SIGSEGV: protection per page splits the RAM mapping into one VMA per
 *    page (vm.max_map_count, which guest RAM already counts against), a signal per
 *    first write, bookkeeping in a signal handler, and more splits to re-protect.
 *  - soft-dirty (clear_refs + pagemap bit 55): CONFIG_MEM_SOFT_DIRTY is not in these
 *    kernels, and clear_refs clears the whole process, not a range.
 * Async uffd-wp costs a vCPU one minor fault on its first write to a page after each
 * read, and a read costs one ioctl per run of tracked gfns.
 *
 * A mapping replaced with mmap(MAP_FIXED) (a remap) is a new VMA without registration:
 * PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC then fails with EPERM on it, so every remap
 * re-registers (dlog_reregister). A registered page that was never protected reads as
 * written, which only over-reports.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>

#include "simvm-dirty.h"

/* Newer than Debian 12's linux-libc-dev (6.1): as in Linux 6.7's include/uapi/linux/ */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
struct page_region {
	__u64 start;
	__u64 end; /* exclusive */
	__u64 categories;
};
#define PM_SCAN_WP_MATCHING (1 << 0)   /* write-protect the pages matched */
#define PM_SCAN_CHECK_WPASYNC (1 << 1) /* fail on a page without async uffd-wp */
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end; /* written by the kernel: where the walk stopped */
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#endif
_Static_assert(sizeof(struct pm_scan_arg) == 96, "struct pm_scan_arg as in Linux 6.7");
_Static_assert(sizeof(struct page_region) == 24, "struct page_region as in Linux 6.7");

#define DLOG_PAGE 4096ull
#define DLOG_VEC 256 /* page_regions per PAGEMAP_SCAN call */
#define DLOG_FEATURES (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)

struct dlog {
	int uffd;
	int pagemap; /* /proc/self/pagemap */
	uint8_t *base;
	uint64_t frames;
	uint64_t *tracked; /* bit per gfn */
	uint64_t ntracked;
	int err;           /* sticky: a re-registration failed, the log is broken */
	struct page_region vec[DLOG_VEC];
};

static inline uint64_t dlog_addr(const struct dlog *d, uint64_t gfn)
{
	return (uint64_t)(uintptr_t)d->base + gfn * DLOG_PAGE;
}

static inline bool dlog_range_ok(const struct dlog *d, uint64_t gfn, uint64_t count)
{
	return count && gfn < d->frames && count <= d->frames - gfn;
}

/* ---- the bitmap of tracked gfns ---- */

static void bits_set(struct dlog *d, uint64_t gfn, uint64_t count, bool on)
{
	for (uint64_t g = gfn; g < gfn + count; g++) {
		uint64_t *w = &d->tracked[g / 64], bit = 1ull << (g % 64);

		if (!!(*w & bit) == on)
			continue;
		*w ^= bit;
		d->ntracked += on ? 1 : (uint64_t)-1;
	}
}

/* the first gfn >= from whose bit equals `on`, or frames */
static uint64_t bits_next(const struct dlog *d, uint64_t from, bool on)
{
	uint64_t i = from / 64, words = (d->frames + 63) / 64;

	if (from >= d->frames)
		return d->frames;
	for (uint64_t w = (on ? d->tracked[i] : ~d->tracked[i]) & (~0ull << (from % 64));; ) {
		if (w) {
			uint64_t g = i * 64 + (uint64_t)__builtin_ctzll(w);

			return g < d->frames ? g : d->frames;
		}
		if (++i == words)
			return d->frames;
		w = on ? d->tracked[i] : ~d->tracked[i];
	}
}

/* ---- the kernel's side ---- */

static int uffd_new(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	/* vm.unprivileged_userfaultfd = 0 still lets anyone handle user-mode faults only,
	 * and ours are all user mode: the vCPUs write guest RAM, the kernel never does */
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	return fd < 0 ? -errno : fd;
}

static int uffd_wp(const struct dlog *d, uint64_t gfn, uint64_t count, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = dlog_addr(d, gfn), .len = count * DLOG_PAGE },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};
	int rc;

	do
		rc = ioctl(d->uffd, UFFDIO_WRITEPROTECT, &wp);
	while (rc && errno == EAGAIN); /* the mm is changing under us: try again */
	return rc ? -errno : 0;
}

static int uffd_register(const struct dlog *d, uint64_t gfn, uint64_t count)
{
	struct uffdio_register reg = {
		.range = { .start = dlog_addr(d, gfn), .len = count * DLOG_PAGE },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};

	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg))
		return -errno;
	if (!(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)))
		return -EOPNOTSUPP;
	return 0;
}

int dlog_open(struct dlog **out, void *base, uint64_t frames, char *why, size_t len)
{
	struct uffdio_api api = { .api = UFFD_API, .features = DLOG_FEATURES };
	struct dlog *d;
	int rc;

	*out = NULL;
	if (!frames || (uintptr_t)base % DLOG_PAGE) {
		snprintf(why, len, "no guest RAM to log");
		return -EINVAL;
	}
	d = calloc(1, sizeof(*d));
	if (!d || !(d->tracked = calloc((frames + 63) / 64, sizeof(uint64_t)))) {
		free(d);
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	d->base = base;
	d->frames = frames;
	d->pagemap = -1;
	d->uffd = uffd_new();
	if (d->uffd < 0) {
		rc = d->uffd;
		snprintf(why, len, "userfaultfd(2): %s", strerror(-rc));
		goto err_free;
	}
	if (ioctl(d->uffd, UFFDIO_API, &api)) {
		rc = -errno;
		snprintf(why, len, "UFFDIO_API with WP_ASYNC, WP_UNPOPULATED, WP_HUGETLBFS_SHMEM: %s", strerror(-rc));
		goto err_uffd;
	}
	rc = uffd_register(d, 0, frames);
	if (rc) {
		snprintf(why, len, "UFFDIO_REGISTER (write-protect mode) of guest RAM: %s", strerror(-rc));
		goto err_uffd;
	}
	d->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (d->pagemap < 0) {
		rc = -errno;
		snprintf(why, len, "/proc/self/pagemap: %s", strerror(-rc));
		goto err_uffd; /* closing the uffd unregisters the range */
	}
	*out = d;
	return 0;

err_uffd:
	close(d->uffd);
err_free:
	free(d->tracked);
	free(d);
	return rc;
}

void dlog_close(struct dlog *d)
{
	if (!d)
		return;
	close(d->pagemap);
	close(d->uffd); /* unregisters guest RAM and drops the write-protection */
	free(d->tracked);
	free(d);
}

int dlog_track(struct dlog *d, uint64_t gfn, uint64_t count)
{
	int rc;

	if (!dlog_range_ok(d, gfn, count))
		return -EINVAL;
	if (d->err)
		return d->err;
	/* protect first: from the moment a gfn is tracked, its writes must be logged */
	rc = uffd_wp(d, gfn, count, true);
	if (rc)
		return rc;
	bits_set(d, gfn, count, true);
	return 0;
}

int dlog_untrack(struct dlog *d, uint64_t gfn, uint64_t count)
{
	if (!dlog_range_ok(d, gfn, count))
		return -EINVAL;
	bits_set(d, gfn, count, false);
	/* unprotected, a write no longer takes a (cheap) fault; not needed for correctness */
	return d->err ? 0 : uffd_wp(d, gfn, count, false);
}

int dlog_reregister(struct dlog *d, uint64_t gfn, uint64_t count)
{
	int rc;

	if (!dlog_range_ok(d, gfn, count))
		return -EINVAL;
	rc = uffd_register(d, gfn, count);
	if (rc && !d->err)
		d->err = rc;
	return rc;
}

/* Scan [gfn, end) (all tracked): report the written pages and protect them again. */
static int64_t scan_run(struct dlog *d, uint64_t gfn, uint64_t end, dlog_emit_fn emit, void *ctx,
			uint64_t *pend_gfn, uint64_t *pend_n)
{
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = dlog_addr(d, gfn),
		.end = dlog_addr(d, end),
		.vec = (uint64_t)(uintptr_t)d->vec,
		.vec_len = DLOG_VEC,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	int64_t pages = 0;

	for (;;) {
		long n = ioctl(d->pagemap, PAGEMAP_SCAN, &a);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (long i = 0; i < n; i++) {
			const struct page_region *r = &d->vec[i];
			uint64_t g, c;

			if (r->start < a.start || r->end > a.end || r->end <= r->start || (r->start | r->end) % DLOG_PAGE)
				return -EIO; /* not what we asked for */
			g = (r->start - (uint64_t)(uintptr_t)d->base) / DLOG_PAGE;
			c = (r->end - r->start) / DLOG_PAGE;
			pages += (int64_t)c;
			/* runs come sorted; join those that continue each other (two VMAs, two calls) */
			if (*pend_n && *pend_gfn + *pend_n == g) {
				*pend_n += c;
				continue;
			}
			if (*pend_n) {
				int rc = emit(ctx, *pend_gfn, *pend_n);

				if (rc < 0)
					return rc;
			}
			*pend_gfn = g;
			*pend_n = c;
		}
		if (a.walk_end >= a.end)
			return pages;
		if (a.walk_end < a.start || (n == 0 && a.walk_end == a.start))
			return -EIO; /* no progress */
		a.start = a.walk_end; /* the vector was full: go on where the walk stopped */
	}
}

int64_t dlog_read(struct dlog *d, dlog_emit_fn emit, void *ctx)
{
	uint64_t pend_gfn = 0, pend_n = 0;
	int64_t pages = 0;

	if (d->err)
		return d->err;
	for (uint64_t g = bits_next(d, 0, true); g < d->frames;) {
		uint64_t end = bits_next(d, g, false);
		int64_t n = scan_run(d, g, end, emit, ctx, &pend_gfn, &pend_n);

		if (n < 0)
			return n;
		pages += n;
		g = bits_next(d, end, true);
	}
	if (pend_n) {
		int rc = emit(ctx, pend_gfn, pend_n);

		if (rc < 0)
			return rc;
	}
	return pages;
}

uint64_t dlog_ntracked(const struct dlog *d)
{
	return d->ntracked;
}

int dlog_is_tracked(const struct dlog *d, uint64_t gfn)
{
	return gfn < d->frames && (d->tracked[gfn / 64] >> (gfn % 64)) & 1;
}

/* ---- the probe ---- */

struct probe_ctx {
	uint64_t gfn[4], count[4];
	unsigned int n;
};

static int probe_emit(void *p, uint64_t gfn, uint64_t count)
{
	struct probe_ctx *c = p;

	if (c->n == 4)
		return -E2BIG;
	c->gfn[c->n] = gfn;
	c->count[c->n++] = count;
	return 0;
}

int dlog_probe(char *why, size_t len)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	const uint64_t frames = 8;
	struct probe_ctx pc = { .n = 0 };
	struct dlog *d = NULL;
	uint8_t *m = MAP_FAILED;
	int fd, mfd = -1, rc;
	int64_t n;

	/* what the kernel offers (an API call without features answers with them all) */
	fd = uffd_new();
	if (fd < 0) {
		if (fd == -ENOSYS)
			snprintf(why, len, "the kernel has no userfaultfd (CONFIG_USERFAULTFD)");
		else if (fd == -EPERM)
			snprintf(why, len, "userfaultfd(2) is not permitted here (vm.unprivileged_userfaultfd = 0?)");
		else
			snprintf(why, len, "userfaultfd(2) failed: %s", strerror(-fd));
		return fd;
	}
	rc = ioctl(fd, UFFDIO_API, &api) ? -errno : 0;
	close(fd);
	if (rc) {
		snprintf(why, len, "UFFDIO_API failed: %s", strerror(-rc));
		return rc;
	}
	if (!(api.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) {
		snprintf(why, len, "userfaultfd cannot write-protect shared memory (no WP_HUGETLBFS_SHMEM: kernel < 5.19?)");
		return -EOPNOTSUPP;
	}
	if (!(api.features & UFFD_FEATURE_WP_UNPOPULATED)) {
		snprintf(why, len, "userfaultfd lacks WP_UNPOPULATED (kernel < 6.4?)");
		return -EOPNOTSUPP;
	}
	if (!(api.features & UFFD_FEATURE_WP_ASYNC)) {
		snprintf(why, len, "userfaultfd lacks WP_ASYNC (kernel < 6.7?)");
		return -EOPNOTSUPP;
	}

	/* end to end, on the kind of memory guest RAM is: a shared memfd mapping */
	mfd = memfd_create("vcma-simvm-probe", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, (off_t)(frames * DLOG_PAGE))) {
		rc = -errno;
		snprintf(why, len, "cannot make a memfd to test on: %s", strerror(-rc));
		goto out;
	}
	m = mmap(NULL, frames * DLOG_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED) {
		rc = -errno;
		snprintf(why, len, "cannot map a memfd to test on: %s", strerror(-rc));
		goto out;
	}
	m[0] = 1; /* one page present before the track, the others not */
	rc = dlog_open(&d, m, frames, why, len);
	if (rc)
		goto out;
	rc = dlog_track(d, 0, frames);
	if (rc) {
		snprintf(why, len, "UFFDIO_WRITEPROTECT of shared memory failed: %s", strerror(-rc));
		goto out;
	}
	m[3 * DLOG_PAGE] = 1;
	m[4 * DLOG_PAGE + 17] = 1;
	n = dlog_read(d, probe_emit, &pc);
	if (n == -ENOTTY || n == -EINVAL) {
		rc = (int)n;
		snprintf(why, len, "/proc/self/pagemap has no PAGEMAP_SCAN (kernel < 6.7?)");
		goto out;
	}
	if (n < 0) {
		rc = (int)n;
		snprintf(why, len, "PAGEMAP_SCAN failed: %s", strerror(-rc));
		goto out;
	}
	if (n != 2 || pc.n != 1 || pc.gfn[0] != 3 || pc.count[0] != 2 || (pc.n = 0, dlog_read(d, probe_emit, &pc)) != 0) {
		rc = -EIO;
		snprintf(why, len, "a test of userfaultfd write-protect and PAGEMAP_SCAN logged the wrong pages");
		goto out;
	}
	rc = 0;
out:
	dlog_close(d);
	if (m != MAP_FAILED)
		munmap(m, frames * DLOG_PAGE);
	if (mfd >= 0)
		close(mfd);
	return rc;
}
