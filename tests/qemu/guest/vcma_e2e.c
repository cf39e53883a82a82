// SPDX-License-Identifier: MIT
/*
 * vcma_e2e.c - the guest half of the QEMU end-to-end test and benchmark, a static
 * program in the initramfs. It talks to the host harness over the serial console:
 * it prints VCMA-* lines and, where the host must look first, waits for a line
 * starting with VCMA-OK.
 *
 *   vcma-e2e check       1, 2, 4, 8 MiB through dma-bufs, error paths, lifetime
 *   vcma-e2e alloc MB    one region, checked by the host, freed
 *   vcma-e2e unbind PCI  unbind the device under an open, mapped region; rebind
 *   vcma-e2e posted PCI  unbind while a posted FREE waits for a stopped vcmad; rebind
 *   vcma-e2e import      hand a dma-buf to another driver (vcma_kapi_test.ko), which
 *                        attaches, maps and reads it
 *   vcma-e2e stress P N  P processes, N allocations each, 1-4 MiB, verified
 *   vcma-e2e race N      two processes QUERY and FREE the same handles at once
 *   vcma-e2e try MB      ALLOC (and FREE): print the errno, whatever the host answers
 *   vcma-e2e kill        a process killed while its ALLOC waits on a stopped vcmad
 *   vcma-e2e shutdown    wait while the host stops vcmad, then see every call fail
 *   vcma-e2e bench N     ioctl floor, QUERY round trip, ALLOC+FREE (and + QUERY): p50/p99
 *
 * The pattern and its hash are vcma_test_pattern.h's (guest-driver/linux/), which
 * tests/qemu/guestbuild.py repeats in Python.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vcma_test_pattern.h"
#include "vcma_uapi.h"

#define MiB (1ull << 20)

static int vfd;

static void die(const char *what)
{
	printf("VCMA-ERROR %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The pattern's hash, from the generator alone. */
static uint64_t pattern_fnv(uint64_t size)
{
	uint64_t seed = size ^ VCMA_TP_GOLDEN, h = VCMA_TP_FNV0;

	for (uint64_t i = 0; i < size / 8; i++) {
		uint64_t w = vcma_tp_splitmix64(seed + i);

		h = vcma_tp_fnv(h, &w, 8); /* x86: little-endian */
	}
	return h;
}

static int hold_mode; /* hold: no host on stdin (a console that is a file) */

static void wait_ok(void)
{
	char line[128];

	fflush(stdout);
	if (hold_mode)
		return;
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "VCMA-OK", 7))
			return;
		if (!strncmp(line, "VCMA-FAIL", 9))
			exit(1);
	}
	exit(1); /* EOF */
}

static int alloc(uint64_t len, uint32_t align, const char *pool, struct vcma_ioc_alloc *a)
{
	memset(a, 0, sizeof(*a));
	a->length = len;
	a->align_order = align;
	if (pool) /* NUL-padded; a name of 16 or more characters is the driver's to refuse */
		memcpy(a->pool, pool, strnlen(pool, sizeof(a->pool)));
	return ioctl(vfd, VCMA_IOC_ALLOC, a) ? -errno : 0;
}

static int vfree(uint64_t handle)
{
	struct vcma_ioc_free f = { .handle = handle };

	return ioctl(vfd, VCMA_IOC_FREE, &f) ? -errno : 0;
}

/* A region of size bytes (from pool, NULL: the default), mapped read-write through
 * its dma-buf; dies on failure. */
static void *alloc_mapped(uint64_t size, const char *pool, struct vcma_ioc_alloc *a)
{
	void *p;

	if (alloc(size, 0, pool, a))
		die("VCMA_IOC_ALLOC");
	p = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (p == MAP_FAILED)
		die("mmap of the dma-buf");
	return p;
}

/* Allocate, write the pattern, re-map, hash; the host checks the same bytes. */
static struct vcma_ioc_alloc checked_region(uint64_t size, const char *pool)
{
	struct vcma_ioc_alloc a;
	void *p;

	p = alloc_mapped(size, pool, &a);
	vcma_tp_fill(p, size);
	munmap(p, a.size);
	p = mmap(NULL, a.size, PROT_READ, MAP_SHARED, a.fd, 0);
	if (p == MAP_FAILED)
		die("second mmap of the dma-buf");
	printf("VCMA-CHECK handle=0x%llx size=%llu offset=0x%llx dma=0x%llx fnv=0x%016llx expect=0x%016llx\n",
	       (unsigned long long)a.handle, (unsigned long long)a.size, (unsigned long long)a.offset,
	       (unsigned long long)a.dma_addr, (unsigned long long)vcma_tp_fnv(VCMA_TP_FNV0, p, a.size),
	       (unsigned long long)pattern_fnv(size));
	munmap(p, a.size);
	wait_ok();
	return a;
}

static void release(struct vcma_ioc_alloc *a)
{
	close(a->fd);
	if (vfree(a->handle))
		die("VCMA_IOC_FREE");
	printf("VCMA-FREED handle=0x%llx\n", (unsigned long long)a->handle);
}

static int check_errors(void)
{
	struct vcma_ioc_alloc a;
	struct vcma_ioc_query q;
	uint64_t h;
	int ok = 1, rc;

	ok &= alloc(0, 0, NULL, &a) == -EINVAL;
	ok &= alloc(MiB, 19, NULL, &a) == -EINVAL;
	ok &= alloc(MiB, 0, "bad/name", &a) == -EINVAL;
	ok &= vfree(0x7777) == -ENOENT;
	ok &= alloc(MiB, 0, "nosuchpool", &a) == -ENODEV;
	rc = alloc(1ull << 40, 0, NULL, &a);
	ok &= rc == -E2BIG || rc == -ENOSPC;
	if (alloc(MiB, 0, NULL, &a))
		return 0;
	h = a.handle;
	close(a.fd);
	ok &= vfree(h) == 0;
	memset(&q, 0, sizeof(q));
	q.handle = h;
	ok &= ioctl(vfd, VCMA_IOC_QUERY, &q) && errno == ENOENT;
	ok &= ioctl(vfd, _IO('V', 99)) && errno == ENOTTY;
	return ok;
}

static void lifetime(void)
{
	struct vcma_ioc_alloc a;
	void *p;

	p = alloc_mapped(MiB, NULL, &a);
	if (vfree(a.handle))
		die("VCMA_IOC_FREE");
	memset(p, 0x5a, a.size); /* still ours: the dma-buf holds it */
	printf("VCMA-HELD handle=0x%llx\n", (unsigned long long)a.handle);
	wait_ok();
	munmap(p, a.size);
	close(a.fd);
	printf("VCMA-RELEASED handle=0x%llx\n", (unsigned long long)a.handle);
	wait_ok();
}

static sigjmp_buf fault_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(fault_jmp, sig);
}

static void sysfs_write(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0 || write(fd, val, strlen(val)) < 0)
		die(path);
	close(fd);
}

/* The device goes away while a region is open and mapped: the mapping is revoked
 * (SIGBUS), the dma-buf is a husk, vcmad has the region back; a rebind takes over
 * the ring and serves again. */
static void unbind_test(const char *addr)
{
	struct vcma_ioc_alloc a, b, c;
	volatile uint8_t *p;
	int faulted, remap_err, alloc_err, free_c;

	p = alloc_mapped(MiB, NULL, &a);
	memset((void *)p, 0x33, a.size);
	if (alloc(MiB, 0, NULL, &c)) /* and one held by its handle alone */
		die("VCMA_IOC_ALLOC");
	close(c.fd);
	printf("VCMA-OPEN handle=0x%llx handle_only=0x%llx\n", (unsigned long long)a.handle,
	       (unsigned long long)c.handle);
	wait_ok();
	sysfs_write("/sys/bus/pci/drivers/vcma/unbind", addr);
	signal(SIGBUS, on_sigbus);
	signal(SIGSEGV, on_sigbus);
	faulted = sigsetjmp(fault_jmp, 1);
	if (!faulted)
		(void)p[4096];
	signal(SIGBUS, SIG_DFL);
	signal(SIGSEGV, SIG_DFL);
	remap_err = mmap(NULL, a.size, PROT_READ, MAP_SHARED, a.fd, 0) == MAP_FAILED ? errno : 0;
	alloc_err = -alloc(MiB, 0, NULL, &b);
	munmap((void *)p, a.size);
	close(a.fd);
	vfree(a.handle);
	free_c = -vfree(c.handle); /* a husk: dropping the handle just lets go */
	close(vfd);
	printf("VCMA-UNBOUND signal=%d remap_errno=%d alloc_errno=%d free_errno=%d\n", faulted, remap_err, alloc_err,
	       free_c);
	wait_ok();
	sysfs_write("/sys/bus/pci/drivers/vcma/bind", addr);
	vfd = open(VCMA_DEV_PATH, O_RDWR | O_CLOEXEC);
	if (vfd < 0)
		die("open " VCMA_DEV_PATH " after rebind");
	b = checked_region(2 * MiB, NULL);
	release(&b);
	printf("VCMA-REBOUND ok\n");
}

static void import_test(void)
{
	struct vcma_ioc_alloc a;
	uint64_t *w;
	char num[16], res[160];
	ssize_t n;
	int fd;

	w = alloc_mapped(2 * MiB, NULL, &a);
	vcma_tp_fill(w, a.size);
	munmap(w, a.size);
	fd = open("/dev/vcma_import_test", O_RDWR);
	if (fd < 0)
		die("open /dev/vcma_import_test");
	snprintf(num, sizeof(num), "%d", a.fd);
	if (write(fd, num, strlen(num)) < 0)
		die("import");
	n = pread(fd, res, sizeof(res) - 1, 0);
	if (n <= 0)
		die("read the import result");
	res[n] = '\0';
	res[strcspn(res, "\n")] = '\0';
	close(fd);
	printf("VCMA-IMPORT dma_addr=0x%llx size=%llu expect=0x%016llx imported: %s\n", (unsigned long long)a.dma_addr,
	       (unsigned long long)a.size, (unsigned long long)pattern_fnv(a.size), res);
	release(&a);
}

/* Concurrent callers share the ring and the in-flight table: each child allocates,
 * fills, verifies and frees, and reports failure by its exit status. */
static int stress_child(int seed, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t size = MiB << ((seed + i) % 3), salt = (uint64_t)seed << 40 | (uint64_t)i, *w;
		struct vcma_ioc_alloc a;
		int rc = alloc(size, 0, NULL, &a);

		if (rc == -ENOSPC || rc == -EBUSY)
			continue; /* the pool is shared by the siblings: full is an answer, not a bug */
		if (rc)
			return 1;
		w = mmap(NULL, a.size, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd, 0);
		if (w == MAP_FAILED)
			return 1;
		for (uint64_t k = 0; k < a.size / 8; k += 512)
			w[k] = vcma_tp_splitmix64(salt + k);
		for (uint64_t k = 0; k < a.size / 8; k += 512)
			if (w[k] != vcma_tp_splitmix64(salt + k))
				return 1;
		munmap(w, a.size);
		close(a.fd);
		if (vfree(a.handle))
			return 1;
	}
	return 0;
}

static void stress(int procs, int n)
{
	int bad = 0, st;

	for (int p = 0; p < procs; p++) {
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (!pid)
			_exit(stress_child(p + 1, n));
	}
	while (wait(&st) > 0)
		bad += !WIFEXITED(st) || WEXITSTATUS(st);
	printf("VCMA-STRESS procs=%d n=%d failed=%d\n", procs, n, bad);
}

/*
 * Two processes sharing one /dev/vcma file race on the same handle: the parent
 * allocates and frees it, the child keeps querying and now and then frees it too.
 * Every QUERY must see the region whole or not at all, and exactly one FREE of each
 * handle may succeed.
 */
struct race {
	volatile uint64_t handle, size; /* the parent's current region; 0 between rounds */
	volatile int stop;
	volatile long frees, bad;       /* the child's successful FREEs, wrong answers */
};

static void race_child(struct race *sh)
{
	struct vcma_ioc_query q;
	unsigned int k = 0;

	while (!sh->stop) {
		uint64_t h = sh->handle, size = sh->size;

		if (!h)
			continue;
		memset(&q, 0, sizeof(q));
		q.handle = h;
		if (!ioctl(vfd, VCMA_IOC_QUERY, &q)) {
			if (q.size != size || q.dma_addr % 4096)
				sh->bad++;
		} else if (errno != ENOENT) {
			sh->bad++;
		}
		if (++k % 16 == 0) {
			int rc = vfree(h);

			if (!rc)
				sh->frees++;
			else if (rc != -ENOENT)
				sh->bad++;
		}
	}
	_exit(0);
}

static void race_test(int n)
{
	struct race *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	long frees = 0, bad = 0;
	pid_t pid;
	int st;

	if (sh == MAP_FAILED)
		die("mmap");
	memset(sh, 0, sizeof(*sh));
	pid = fork();
	if (pid < 0)
		die("fork");
	if (!pid)
		race_child(sh);
	for (int i = 0; i < n; i++) {
		struct vcma_ioc_alloc a;
		int rc;

		if (alloc(MiB << (i % 2), 0, NULL, &a))
			die("VCMA_IOC_ALLOC");
		close(a.fd);
		sh->size = a.size;
		__sync_synchronize();
		sh->handle = a.handle;
		if (i % 3) /* one vCPU: let the child run against this handle a while */
			usleep(50 * (i % 3));
		rc = vfree(a.handle);
		if (!rc)
			frees++;
		else if (rc != -ENOENT)
			bad++;
		sh->handle = 0;
		__sync_synchronize();
	}
	sh->stop = 1;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		bad++;
	printf("VCMA-RACE n=%d frees=%ld child_frees=%ld bad=%ld\n", n, frees, sh->frees, bad + sh->bad);
	munmap(sh, sizeof(*sh));
}

/* vcmad stops under us: its CLOSING state turns every call into ESHUTDOWN. */
static void shutdown_test(void)
{
	struct vcma_ioc_query q = { 0 };
	struct vcma_ioc_alloc a;
	int qerr, aerr;

	printf("VCMA-SHUTDOWN-READY\n");
	wait_ok();
	qerr = ioctl(vfd, VCMA_IOC_QUERY, &q) ? errno : 0;
	aerr = -alloc(MiB, 0, NULL, &a);
	printf("VCMA-AFTER-SHUTDOWN query_errno=%d alloc_errno=%d\n", qerr, aerr);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/*
 * A FREE posted while the host holds vcmad stopped, then the device unbound: removal
 * waits for vcmad's answer (the host resumes it), and the driver bound again takes
 * over a ring with nothing in flight.
 */
static void op_alloc_free(void);

static void posted_test(const char *addr)
{
	struct vcma_ioc_alloc a;
	double t0;

	if (alloc(MiB, 0, NULL, &a))
		die("VCMA_IOC_ALLOC");
	printf("VCMA-POSTED-HELD handle=0x%llx\n", (unsigned long long)a.handle);
	wait_ok(); /* vcmad is stopped now */
	close(a.fd);
	if (vfree(a.handle)) /* posted: returns without vcmad's answer */
		die("VCMA_IOC_FREE");
	close(vfd);
	printf("VCMA-POSTED-FREED\n");
	fflush(stdout);
	t0 = now_us();
	sysfs_write("/sys/bus/pci/drivers/vcma/unbind", addr);
	printf("VCMA-POSTED-UNBOUND after_ms=%.0f\n", (now_us() - t0) / 1000);
	sysfs_write("/sys/bus/pci/drivers/vcma/bind", addr);
	vfd = open(VCMA_DEV_PATH, O_RDWR | O_CLOEXEC);
	if (vfd < 0)
		die("open " VCMA_DEV_PATH " after rebind");
	op_alloc_free();
	printf("VCMA-POSTED-REBOUND ok\n");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *op, double *t, int n)
{
	double sum = 0;

	for (int i = 0; i < n; i++)
		sum += t[i];
	qsort(t, n, sizeof(*t), cmp_double);
	printf("VCMA-BENCH op=%s n=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", op, n, t[n / 2],
	       t[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], sum / n);
}

static void op_nop(void)
{
	ioctl(vfd, _IO('V', 99)); /* ENOTTY: the syscall alone */
}

static void op_query(void)
{
	struct vcma_ioc_query q;

	memset(&q, 0, sizeof(q));
	if (ioctl(vfd, VCMA_IOC_QUERY, &q))
		die("VCMA_IOC_QUERY");
}

static uint64_t op_size = MiB; /* the region size of op_alloc_free */

static void op_alloc_free(void)
{
	struct vcma_ioc_alloc a;

	if (alloc(op_size, 0, NULL, &a))
		die("VCMA_IOC_ALLOC");
	close(a.fd);
	if (vfree(a.handle))
		die("VCMA_IOC_FREE");
}

static void op_alloc_free_query(void)
{
	op_alloc_free();
	op_query(); /* answered after vcmad took the posted FREE */
}

static void bench(int n)
{
	static const struct {
		const char *name;
		void (*op)(void);
	} ops[] = {
		{ "nop", op_nop },
		{ "query", op_query },
		{ "alloc_free", op_alloc_free },
		{ "alloc_free_query", op_alloc_free_query },
	};
	double *t = calloc(n, sizeof(*t));

	if (!t)
		die("calloc");
	for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
		for (int i = 0; i < n; i++) {
			double t0 = now_us();

			ops[k].op();
			t[i] = now_us() - t0;
		}
		report(ops[k].name, t, n);
	}
	free(t);
}

/* The ring trip, then ALLOC+FREE of 1, 2 and 4 MiB (op=alloc_free_1m ...). */
static void bench_sizes(int n)
{
	double *t = calloc(n, sizeof(*t));

	if (!t)
		die("calloc");
	for (int i = 0; i < n; i++) {
		double t0 = now_us();

		op_query();
		t[i] = now_us() - t0;
	}
	report("query", t, n);
	for (int k = 0; k < 3; k++) {
		char name[32];

		op_size = MiB << k;
		for (int i = 0; i < n; i++) {
			double t0 = now_us();

			op_alloc_free();
			t[i] = now_us() - t0;
		}
		snprintf(name, sizeof(name), "alloc_free_%dm", 1 << k);
		report(name, t, n);
	}
	op_size = MiB;
	free(t);
}

/*
 * A process killed while its ALLOC waits on a stopped vcmad dies at once; when vcmad
 * answers after all, the driver FREEs the region nobody will know about, and the
 * ring works on.
 */
static void kill_test(void)
{
	struct vcma_ioc_query q = { 0 };
	struct vcma_ioc_alloc a;
	double t0;
	pid_t pid;
	int st;

	printf("VCMA-KILL-READY\n");
	wait_ok(); /* vcmad is stopped now */
	pid = fork();
	if (pid < 0)
		die("fork");
	if (!pid) {
		alloc(MiB, 0, NULL, &a); /* sleeps for the answer */
		_exit(0);
	}
	usleep(300 * 1000);
	t0 = now_us();
	kill(pid, SIGKILL);
	if (waitpid(pid, &st, 0) != pid)
		die("waitpid");
	printf("VCMA-KILLED after_ms=%.0f signal=%d\n", (now_us() - t0) / 1000, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	wait_ok(); /* vcmad runs again */
	if (ioctl(vfd, VCMA_IOC_QUERY, &q))
		die("VCMA_IOC_QUERY after the kill");
	op_alloc_free();
	printf("VCMA-KILL-AFTER ok\n");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	vfd = open(VCMA_DEV_PATH, O_RDWR | O_CLOEXEC);
	if (vfd < 0)
		die("open " VCMA_DEV_PATH);
	if (argc == 2 && !strcmp(argv[1], "check")) {
		struct vcma_ioc_alloc r[4];
		struct vcma_ioc_query q = { 0 };

		if (ioctl(vfd, VCMA_IOC_QUERY, &q))
			die("VCMA_IOC_QUERY");
		printf("VCMA-POOL id=%u size=%llu free=%llu\n", q.guest_id, (unsigned long long)q.size,
		       (unsigned long long)q.free_bytes);
		for (int i = 0; i < 4; i++)
			r[i] = checked_region(MiB << i, NULL);
		for (int i = 0; i < 4; i++)
			release(&r[i]);
		wait_ok(); /* the host looks at its regions before the next ones come */
		if (check_errors())
			printf("VCMA-ERRORS ok\n");
		else
			printf("VCMA-ERRORS failed\n");
		lifetime();
		printf("VCMA-DONE\n");
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "alloc")) {
		struct vcma_ioc_alloc a = checked_region(strtoull(argv[2], NULL, 0) * MiB, NULL);

		release(&a);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "hold")) {
		/* a region filled with the pattern and kept until the guest dies: the host
		 * checks it (vcmactl hash) and reclaims it when the VM goes */
		hold_mode = 1;
		checked_region(strtoull(argv[2], NULL, 0) * MiB, NULL);
		printf("VCMA-HOLDING\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	if (argc == 4 && !strcmp(argv[1], "pool")) {
		struct vcma_ioc_alloc a = checked_region(strtoull(argv[3], NULL, 0) * MiB, argv[2]);

		release(&a);
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "stress")) {
		stress(atoi(argv[2]), atoi(argv[3]));
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "shutdown")) {
		shutdown_test();
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "import")) {
		import_test();
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "unbind")) {
		unbind_test(argv[2]);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "kill")) {
		kill_test();
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "try")) {
		struct vcma_ioc_alloc a;
		int rc = alloc(strtoull(argv[2], NULL, 0) * MiB, 0, NULL, &a);

		if (!rc) {
			close(a.fd);
			rc = vfree(a.handle);
		}
		printf("VCMA-TRY errno=%d\n", -rc);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "race")) {
		race_test(atoi(argv[2]));
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "posted")) {
		posted_test(argv[2]);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "bench-sizes")) {
		bench_sizes(atoi(argv[2]) > 0 ? atoi(argv[2]) : 100);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "bench")) {
		bench(atoi(argv[2]) > 0 ? atoi(argv[2]) : 100);
		return 0;
	}
	fprintf(stderr, "usage: vcma-e2e check | alloc MB | hold MB | pool NAME MB | unbind PCI_ADDR | import | stress P N | shutdown | bench N | bench-sizes N\n");
	return 2;
}
