// SPDX-License-Identifier: MIT
/*
 * bench-vacate - what a guest waits for in vcma_alloc() when the window it gets has to
 * be vacated first, beside the floor measured in the same run.
 *
 * Rows: 1, 2, 4 and 8 MiB allocations whose window is
 *   (a) FREE pool frames                       (no simulated VM attached yet)
 *   (b) all LENT_FREE: lent to a VM that reported every page free: dropped, no copy
 *   (c) all LENT_USED: lent to a running VM: pause, copy, remap, resume
 * with the p50 and p99 of vcma_alloc() as this process sees it (it is the allocating
 * guest, through libvcma), and the floor, measured here in one process: the same bytes
 * copied page by page (4 KiB at a time, as vcmad copies) between two MAP_SHARED memfd
 * mappings into populated destination pages, plus remapping them (mmap MAP_FIXED|
 * MAP_SHARED of the destination memfd over the "guest" mapping): one call for the
 * whole window (a contiguous destination, the best case), and one call per page to
 * scattered destination offsets.
 *
 * Then the lent VMs' pauses (vcma-simvm --json), the pages vcmad vacated for the
 * allocations (vcmactl --json stats), and the targets, each PASS or MISS.
 *
 * Windows are made deterministic by one VM whose RAM is exactly the pool, with
 * lend_share 100%: the pool is fully lent; after each free vcmad relends the freed
 * frames back to the VM (relend_idle_ms later), and the next allocation waits until
 * `vcmactl pool show` says the pool is fully lent again in the wanted state.
 *
 * vcmad, vcma-simvm and vcmactl are children of this process, in a temporary runtime
 * directory removed on exit; their paths default to ../hv/vcmad, ../tools/vcma-simvm
 * and ../tools/vcmactl next to this binary.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vcma.h"

#define PAGE ((uint64_t)4096)
#define MiB ((uint64_t)1 << 20)
#define NSIZES 4
#define POOL_MIB 64
#define MACHINE_MIB 512
#define RELEND_IDLE_MS 20
#define WAIT_LENT_MS 20000 /* a pool not fully lent again by then is a failure */

enum kind { K_FREE, K_LENT_FREE, K_LENT_USED, NKINDS };

static const uint64_t sizes[NSIZES] = { 1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB };
static const char *const kind_name[NKINDS] = { "(a) FREE", "(b) LENT_FREE", "(c) LENT_USED" };

/* ---- children and the temporary directory: cleaned up on every exit path ---- */

static struct {
	char dir[64], run[96];
	volatile pid_t vcmad, vm;
} st;

/* files this program creates in st.dir, for the signal handler's cleanup */
static char tmp_path[8][160];
static int ntmp_path;

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d))) {
			char sub[PATH_MAX];

			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			if (e->d_type == DT_DIR)
				remove_tree(sub);
			else
				unlink(sub);
		}
		closedir(d);
	}
	rmdir(path);
}

static void kill_child(volatile pid_t *pid)
{
	pid_t p = *pid;

	if (p > 0) {
		kill(p, SIGKILL);
		waitpid(p, NULL, 0);
	}
	*pid = 0;
}

static void cleanup(void)
{
	kill_child(&st.vm);
	kill_child(&st.vcmad);
	if (st.dir[0]) {
		remove_tree(st.dir);
		st.dir[0] = '\0';
	}
}

/* Async-signal-safe: kill, waitpid, unlink and rmdir only, on names known beforehand. */
static void on_signal(int sig)
{
	if (st.vm > 0)
		kill(st.vm, SIGKILL);
	if (st.vcmad > 0)
		kill(st.vcmad, SIGKILL);
	if (st.vm > 0)
		waitpid(st.vm, NULL, 0);
	if (st.vcmad > 0)
		waitpid(st.vcmad, NULL, 0);
	if (st.dir[0]) {
		static const char *const runfiles[] = { "vcmad.sock", "vcmad-ctl.sock" };

		for (int i = 0; i < ntmp_path; i++)
			unlink(tmp_path[i]);
		for (unsigned int i = 0; i < sizeof(runfiles) / sizeof(runfiles[0]); i++) {
			char p[160];
			size_t n = strlen(st.run), m = strlen(runfiles[i]);

			if (n + 1 + m < sizeof(p)) {
				memcpy(p, st.run, n);
				p[n] = '/';
				memcpy(p + n + 1, runfiles[i], m + 1);
				unlink(p);
			}
		}
		rmdir(st.run);
		rmdir(st.dir);
	}
	_exit(128 + sig);
}

static __attribute__((format(printf, 1, 2), noreturn)) void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("bench-vacate: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1); /* cleanup() runs from atexit */
}

/* A file in the temporary directory, remembered for the signal handler's cleanup. */
static const char *tmpfile_path(const char *name)
{
	if (ntmp_path == (int)(sizeof(tmp_path) / sizeof(tmp_path[0])))
		fail("internal: too many temporary files");
	snprintf(tmp_path[ntmp_path], sizeof(tmp_path[0]), "%s/%s", st.dir, name);
	return tmp_path[ntmp_path++];
}

/* The last lines of a child's log, for a failure message. */
static void show_tail(const char *what, const char *path)
{
	char buf[4096];
	FILE *f = fopen(path, "r");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (n)
		fprintf(stderr, "---- last output of %s (%s) ----\n%s%s----\n", what, path, buf,
			buf[n - 1] == '\n' ? "" : "\n");
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* fork + exec argv with stdout and stderr to files (NULL: /dev/null). */
static pid_t spawn(char *const argv[], const char *out, const char *err)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		int o = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int e = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		/* never outlive the bench, even if it is SIGKILLed */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		if (o < 0 || e < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0)
			_exit(127);
		execv(argv[0], argv);
		dprintf(STDERR_FILENO, "bench-vacate: cannot execute %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

/* Wait up to ms for pid to exit: its wait status, or -1 if it is still running. */
static int wait_exit(pid_t pid, unsigned int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0)
			return 0;
		if (now_ns() > end)
			return -1;
		sleep_ms(2);
	}
}

/* SIGTERM, then SIGKILL after ms; the wait status. */
static int stop_child(volatile pid_t *pid, unsigned int ms, const char *what)
{
	int status;

	if (*pid <= 0)
		return 0;
	kill(*pid, SIGTERM);
	status = wait_exit(*pid, ms);
	if (status < 0) {
		fprintf(stderr, "bench-vacate: %s did not exit within %u ms of SIGTERM: killed\n", what, ms);
		kill(*pid, SIGKILL);
		waitpid(*pid, &status, 0);
	}
	*pid = 0;
	return status;
}

static bool child_gone(volatile pid_t *pid, int *status)
{
	if (*pid > 0 && waitpid(*pid, status, WNOHANG) == *pid) {
		*pid = 0;
		return true;
	}
	return false;
}

/* ---- vcmactl ---- */

static char vcmactl_path[PATH_MAX], ctl_sock[PATH_MAX];
static const char *vcmactl_err;

/* vcmactl --socket CTL --json ARGS...: its stdout in buf (NUL-terminated); fails on error. */
static void vcmactl(char *buf, size_t cap, const char *a1, const char *a2, const char *a3)
{
	char *argv[] = { vcmactl_path, "--socket", ctl_sock, "--json", (char *)a1, (char *)a2, (char *)a3, NULL };
	int fd[2], status;
	size_t n = 0;
	uint64_t end = now_ns() + 15000000000ull;
	pid_t pid, parent = getpid();

	if (pipe2(fd, O_CLOEXEC))
		fail("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		int e = open(vcmactl_err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		if (e < 0 || dup2(fd[1], STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0)
			_exit(127);
		execv(argv[0], argv);
		dprintf(STDERR_FILENO, "bench-vacate: cannot execute %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fd[1]);
	for (;;) {
		struct pollfd p = { .fd = fd[0], .events = POLLIN };
		uint64_t t = now_ns();
		ssize_t r;

		if (t > end || poll(&p, 1, (int)((end - t) / 1000000ull) + 1) == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			close(fd[0]);
			fail("vcmactl %s %s %s: no answer within 15 s", a1, a2 ? a2 : "", a3 ? a3 : "");
		}
		r = read(fd[0], buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			fail("vcmactl %s: more output than expected (%zu bytes)", a1, n);
	}
	buf[n] = '\0';
	close(fd[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		show_tail("vcmactl", vcmactl_err);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
			fail("could not run vcmactl (%s); pass --vcmactl PATH", vcmactl_path);
		fail("vcmactl %s %s %s failed (status %#x)", a1, a2 ? a2 : "", a3 ? a3 : "", status);
	}
}

/* ---- a few numbers out of JSON we produced ourselves (vcmactl, vcma-simvm) ---- */

/* The value after "key": in [s, e); NULL if the key is not there. */
static const char *jfind(const char *s, const char *e, const char *key)
{
	char pat[80];
	size_t n = (size_t)snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *p = s;

	while (p < e && (p = memmem(p, (size_t)(e - p), pat, n))) {
		const char *v = p + n;

		while (v < e && (*v == ' ' || *v == '\t' || *v == '\n'))
			v++;
		if (v < e && *v == ':') {
			for (v++; v < e && (*v == ' ' || *v == '\t' || *v == '\n'); v++)
				;
			return v;
		}
		p += n;
	}
	return NULL;
}

static bool jnum(const char *s, const char *e, const char *key, double *out)
{
	const char *v = jfind(s, e, key);
	char *end;

	if (!v || v >= e)
		return false;
	*out = strtod(v, &end);
	return end != v;
}

static uint64_t jnum_or_fail(const char *s, const char *e, const char *key, const char *what)
{
	double x;

	if (!jnum(s, e, key, &x))
		fail("no \"%s\" in %s: %.*s", key, what, (int)(e - s > 400 ? 400 : e - s), s);
	return (uint64_t)x;
}

/* The object that is the value of "key", as [*os, *oe). */
static bool jobj(const char *s, const char *e, const char *key, const char **os, const char **oe)
{
	const char *v = jfind(s, e, key);
	int depth = 0;
	bool str = false;

	if (!v || v >= e || *v != '{')
		return false;
	for (const char *p = v; p < e; p++) {
		if (str) {
			if (*p == '\\')
				p++;
			else if (*p == '"')
				str = false;
		} else if (*p == '"') {
			str = true;
		} else if (*p == '{' || *p == '[') {
			depth++;
		} else if ((*p == '}' || *p == ']') && !--depth) {
			*os = v;
			*oe = p + 1;
			return true;
		}
	}
	return false;
}

struct frames {
	uint64_t total, free, lent_free, lent_used, region, claimed;
};

static void pool_frames(struct frames *f)
{
	char buf[16384];
	const char *os, *oe, *e;

	vcmactl(buf, sizeof(buf), "pool", "show", "main");
	e = buf + strlen(buf);
	if (!jobj(buf, e, "frames", &os, &oe))
		fail("vcmactl pool show main: no \"frames\" object in: %.400s", buf);
	f->total = jnum_or_fail(os, oe, "total", "vcmactl pool show");
	f->free = jnum_or_fail(os, oe, "free", "vcmactl pool show");
	f->lent_free = jnum_or_fail(os, oe, "lent_free", "vcmactl pool show");
	f->lent_used = jnum_or_fail(os, oe, "lent_used", "vcmactl pool show");
	f->region = jnum_or_fail(os, oe, "region", "vcmactl pool show");
	f->claimed = jnum_or_fail(os, oe, "claimed", "vcmactl pool show");
}

static bool pool_ready(const struct frames *f, enum kind k)
{
	uint64_t want = k == K_FREE ? f->free : k == K_LENT_FREE ? f->lent_free : f->lent_used;

	return f->total && want == f->total && !f->claimed;
}

/* Counters of pool main from vcmactl stats, and vcmad's pause histogram if it has one. */
struct host_stats {
	uint64_t vacated_lent_free, vacated_lent_used, alloc_success, alloc_fail;
	bool pause_found;
	char pause_key[48];
	double pause_count, pause_p50_us, pause_p99_us, pause_max_us;
};

static void host_stats(struct host_stats *h)
{
	static char buf[1 << 20];
	const char *e, *ps, *pe, *p;

	memset(h, 0, sizeof(*h));
	vcmactl(buf, sizeof(buf), "stats", NULL, NULL);
	e = buf + strlen(buf);
	/* the first (only) pool's counters */
	ps = jfind(buf, e, "pools");
	if (!ps || !(p = memchr(ps, '{', (size_t)(e - ps))) || !jnum(p, e, "vacated_lent_used", &(double){ 0 }))
		fail("vcmactl stats: no pool counters in: %.400s", buf);
	h->vacated_lent_free = jnum_or_fail(p, e, "vacated_lent_free", "vcmactl stats");
	h->vacated_lent_used = jnum_or_fail(p, e, "vacated_lent_used", "vcmactl stats");
	h->alloc_success = jnum_or_fail(p, e, "alloc_success", "vcmactl stats");
	h->alloc_fail = jnum_or_fail(p, e, "alloc_fail", "vcmactl stats");
	/* pause latency: any object under a key starting with "pause" that has
	 * p50_ns / p99_ns / max_ns (vcmad keeps such a histogram; stats may expose it) */
	for (p = buf; (p = memmem(p, (size_t)(e - p), "\"pause", 6)); p += 6) {
		const char *q = memchr(p + 1, '"', (size_t)(e - p - 1));
		double p50, p99, mx, cnt = -1;
		size_t n;

		if (!q)
			break;
		n = (size_t)(q - p - 1);
		if (n >= sizeof(h->pause_key))
			continue;
		memcpy(h->pause_key, p + 1, n);
		h->pause_key[n] = '\0';
		if (!jobj(p, e, h->pause_key, &ps, &pe))
			continue;
		if (jnum(ps, pe, "p50_ns", &p50) && jnum(ps, pe, "p99_ns", &p99) && jnum(ps, pe, "max_ns", &mx)) {
			jnum(ps, pe, "count", &cnt);
			h->pause_found = true;
			h->pause_count = cnt;
			h->pause_p50_us = p50 / 1e3;
			h->pause_p99_us = p99 / 1e3;
			h->pause_max_us = mx / 1e3;
			return;
		}
	}
	h->pause_key[0] = '\0';
}

/* ---- statistics ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct dist {
	double p50, p99, max; /* us */
	size_t n;
};

static struct dist summarize(uint64_t *v, size_t n)
{
	struct dist d = { 0, 0, 0, n };

	if (!n)
		return d;
	qsort(v, n, sizeof(*v), cmp_u64);
	d.p50 = (double)v[n / 2] / 1000.0;
	d.p99 = (double)v[(size_t)((double)n * 0.99)] / 1000.0;
	d.max = (double)v[n - 1] / 1000.0;
	return d;
}

/* ---- the floor: copy page by page + remap, in this process ---- */

struct floor_res {
	struct dist contig;    /* copy + one mmap for the window */
	struct dist scattered; /* copy + one mmap per page, scattered destination offsets */
	struct dist copy;      /* the copy part of contig (populated destination) */
	struct dist copy_cold; /* copy into punched (sparse) destination pages */
	struct dist remap1;    /* the remap part of contig */
	struct dist remapn;    /* the remap part of scattered */
};

static void floor_one(uint64_t bytes, size_t iters, size_t warm, struct floor_res *fr)
{
	size_t np = (size_t)(bytes / PAGE), total = iters + warm;
	int src = memfd_create("floor-src", MFD_CLOEXEC), dst = memfd_create("floor-dst", MFD_CLOEXEC);
	uint64_t *t_all = calloc(total, 8), *t_sc = calloc(total, 8), *t_copy = calloc(total, 8),
		 *t_cold = calloc(total, 8), *t_r1 = calloc(total, 8), *t_rn = calloc(total, 8);
	size_t *perm = calloc(np, sizeof(*perm));
	uint8_t *hs, *hd, *guest;
	uint64_t rng = 0x9e3779b97f4a7c15ull;

	if (src < 0 || dst < 0 || ftruncate(src, (off_t)bytes) || ftruncate(dst, (off_t)bytes))
		fail("floor: memfd: %s", strerror(errno));
	if (!t_all || !t_sc || !t_copy || !t_cold || !t_r1 || !t_rn || !perm)
		fail("out of memory");
	/* the host's views of source and destination (as vcmad maps machine memory) and
	 * the guest's view, which the remap switches from source to destination pages */
	hs = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, src, 0);
	hd = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, dst, 0);
	guest = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, src, 0);
	if (hs == MAP_FAILED || hd == MAP_FAILED || guest == MAP_FAILED)
		fail("floor: mmap: %s", strerror(errno));
	memset(hd, 1, bytes); /* both populated */
	for (size_t i = 0; i < bytes; i++)
		hs[i] = (uint8_t)(i * 131 >> 7);
	for (size_t i = 0; i < np; i++)
		perm[i] = i;
	for (size_t i = np - 1; i > 0; i--) { /* Fisher-Yates */
		size_t j, x;

		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		j = (size_t)((rng >> 33) % (i + 1));
		x = perm[i];
		perm[i] = perm[j];
		perm[j] = x;
	}
	for (size_t it = 0; it < total; it++) {
		uint64_t t0, t1, t2;

		/* contiguous: copy into populated destination pages, then one remap call */
		if (mmap(guest, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, src, 0) == MAP_FAILED)
			fail("floor: mmap: %s", strerror(errno));
		t0 = now_ns();
		for (size_t i = 0; i < np; i++)
			memcpy(hd + i * PAGE, hs + i * PAGE, PAGE);
		t1 = now_ns();
		if (mmap(guest, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, dst, 0) == MAP_FAILED)
			fail("floor: remap: %s", strerror(errno));
		t2 = now_ns();
		t_all[it] = t2 - t0;
		t_copy[it] = t1 - t0;
		t_r1[it] = t2 - t1;

		/* scattered: each page to a random destination page, one remap call per page */
		if (mmap(guest, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, src, 0) == MAP_FAILED)
			fail("floor: mmap: %s", strerror(errno));
		t0 = now_ns();
		for (size_t i = 0; i < np; i++)
			memcpy(hd + perm[i] * PAGE, hs + i * PAGE, PAGE);
		t1 = now_ns();
		for (size_t i = 0; i < np; i++)
			if (mmap(guest + i * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, dst,
				 (off_t)(perm[i] * PAGE)) == MAP_FAILED)
				fail("floor: per-page remap: %s", strerror(errno));
		t2 = now_ns();
		t_sc[it] = t2 - t0;
		t_rn[it] = t2 - t1;

		/* for the notes: the same copy into punched destination pages (vcmad's
		 * ordinary memory is punched when freed, so its copies fault pages in) */
		if (fallocate(dst, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes))
			fail("floor: fallocate: %s", strerror(errno));
		t0 = now_ns();
		for (size_t i = 0; i < np; i++)
			memcpy(hd + i * PAGE, hs + i * PAGE, PAGE);
		t_cold[it] = now_ns() - t0;
	}
	fr->contig = summarize(t_all + warm, iters);
	fr->scattered = summarize(t_sc + warm, iters);
	fr->copy = summarize(t_copy + warm, iters);
	fr->copy_cold = summarize(t_cold + warm, iters);
	fr->remap1 = summarize(t_r1 + warm, iters);
	fr->remapn = summarize(t_rn + warm, iters);
	munmap(hs, bytes);
	munmap(hd, bytes);
	munmap(guest, bytes);
	close(src);
	close(dst);
	free(t_all);
	free(t_sc);
	free(t_copy);
	free(t_cold);
	free(t_r1);
	free(t_rn);
	free(perm);
}

/* ---- vcmad and the lent VM ---- */

static char vcmad_path[PATH_MAX], simvm_path[PATH_MAX], guest_sock[PATH_MAX];
static const char *vcmad_log, *vm_out, *vm_err;

static void start_vcmad(void)
{
	const char *conf = tmpfile_path("vcmad.conf");
	char *argv[] = { vcmad_path, "-c", (char *)conf, NULL };
	FILE *f = fopen(conf, "w");
	int status;

	if (!f)
		fail("%s: %s", conf, strerror(errno));
	/* pause_timeout_ms: generous, so a noisy host shows up as slow pauses, not
	 * as failed allocations */
	fprintf(f,
		"[daemon]\nruntime_dir = %s\nlend_share = 100%%\nrelend_idle_ms = %d\npause_timeout_ms = 2000\n"
		"[limits]\nrequest_rate = 10000000\nrequest_burst = 1000000\nmax_ram_per_guest = 1G\n"
		"[machine]\nmemory = %dM\n[pool main]\nsize = %dM\n",
		st.run, RELEND_IDLE_MS, MACHINE_MIB, POOL_MIB);
	fclose(f);
	vcmad_log = tmpfile_path("vcmad.log");
	st.vcmad = spawn(argv, NULL, vcmad_log);
	for (int i = 0; i < 1000 && (access(guest_sock, F_OK) || access(ctl_sock, F_OK)); i++) {
		if (child_gone(&st.vcmad, &status)) {
			show_tail("vcmad", vcmad_log);
			fail("vcmad (%s) exited at start (status %#x)", vcmad_path, status);
		}
		sleep_ms(10);
	}
	if (access(guest_sock, F_OK) || access(ctl_sock, F_OK)) {
		show_tail("vcmad", vcmad_log);
		fail("vcmad (%s) did not create %s and %s within 10 s", vcmad_path, guest_sock, ctl_sock);
	}
}

/* Poll until pool main is entirely in state k (FREE, LENT_FREE or LENT_USED). */
static void wait_pool(enum kind k, const char *why)
{
	uint64_t end = now_ns() + (uint64_t)WAIT_LENT_MS * 1000000ull;
	struct frames f;
	int status;

	for (;;) {
		pool_frames(&f);
		if (pool_ready(&f, k))
			return;
		if (child_gone(&st.vcmad, &status)) {
			show_tail("vcmad", vcmad_log);
			fail("vcmad exited (status %#x) %s", status, why);
		}
		if (child_gone(&st.vm, &status)) {
			show_tail("vcma-simvm", vm_err);
			fail("the lent VM (%s) exited (status %#x) %s", simvm_path, status, why);
		}
		if (now_ns() > end) {
			show_tail("vcmad", vcmad_log);
			fail("pool main is not all %s %s after %d ms: %" PRIu64 " frames: %" PRIu64 " free, %" PRIu64
			     " lent free, %" PRIu64 " lent used, %" PRIu64 " region, %" PRIu64 " claimed",
			     kind_name[k] + 4, why, WAIT_LENT_MS, f.total, f.free, f.lent_free, f.lent_used, f.region,
			     f.claimed);
		}
		sleep_ms(5);
	}
}

static void start_vm(enum kind k)
{
	char ram[32];
	char *argv[16];
	int a = 0;

	snprintf(ram, sizeof(ram), "%dM", POOL_MIB);
	vm_out = tmpfile_path(k == K_LENT_FREE ? "vm-free.json" : "vm-used.json");
	vm_err = tmpfile_path(k == K_LENT_FREE ? "vm-free.log" : "vm-used.log");
	argv[a++] = simvm_path;
	argv[a++] = "--socket";
	argv[a++] = guest_sock;
	argv[a++] = "--name";
	argv[a++] = k == K_LENT_FREE ? "lent-free" : "lent-used";
	argv[a++] = "--ram";
	argv[a++] = ram;
	argv[a++] = "--workload";
	argv[a++] = "idle";
	argv[a++] = "--alloc";
	argv[a++] = "none";
	argv[a++] = "--duration";
	argv[a++] = "100000";
	argv[a++] = "--json";
	if (k == K_LENT_FREE) {
		argv[a++] = "--report";
		argv[a++] = "100";
	}
	argv[a] = NULL;
	st.vm = spawn(argv, vm_out, vm_err);
}

struct vm_stats {
	uint64_t pauses, remapped_pages, remap_calls, reported_pages, errors, corruptions;
	double p50_us, p99_us, max_us;
};

/* SIGTERM the VM; it prints its --json summary and exits. */
static void stop_vm(struct vm_stats *s, const char *name)
{
	static char buf[1 << 20];
	int status = stop_child(&st.vm, 10000, name);
	const char *e, *ps, *pe;
	FILE *f = fopen(vm_out, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

	if (f)
		fclose(f);
	buf[n] = '\0';
	e = buf + n;
	if (!WIFEXITED(status) || WEXITSTATUS(status) || !jobj(buf, e, "pauses", &ps, &pe)) {
		show_tail(name, vm_err);
		fail("%s (vcma-simvm) ended with status %#x and %s", name, status,
		     n ? "no pause summary in its --json output" : "no --json output");
	}
	s->pauses = jnum_or_fail(ps, pe, "count", name);
	if (!jnum(ps, pe, "p50_us", &s->p50_us) || !jnum(ps, pe, "p99_us", &s->p99_us) ||
	    !jnum(ps, pe, "max_us", &s->max_us))
		fail("%s: no p50_us/p99_us/max_us in its pause summary: %.*s", name, (int)(pe - ps), ps);
	s->remapped_pages = jnum_or_fail(buf, e, "remapped_pages", name);
	s->remap_calls = jnum_or_fail(buf, e, "remap_calls", name);
	s->reported_pages = jnum_or_fail(buf, e, "reported_pages", name);
	s->errors = jnum_or_fail(buf, e, "errors", name);
	s->corruptions = jnum_or_fail(buf, e, "corruptions", name);
}

/* ---- the allocating guest: this process ---- */

struct cell {
	uint64_t *t; /* ns per vcma_alloc() */
	size_t n, failed;
	int first_err;
	struct dist d;
};

/* rounds of 1, 2, 4, 8 MiB (interleaved, so drift in the host's load spreads evenly
 * over the sizes); the first `warm` rounds are not recorded */
static void measure(struct vcma *v, enum kind k, size_t iters, size_t warm, struct cell cells[NSIZES])
{
	for (size_t round = 0; round < warm + iters; round++) {
		for (int s = 0; s < NSIZES; s++) {
			struct vcma_region_info r;
			uint64_t t0, t;
			int rc;

			if (k != K_FREE)
				wait_pool(k, "before an allocation");
			t0 = now_ns();
			rc = vcma_alloc(v, sizes[s], 0, 0, "main", &r);
			t = now_ns() - t0;
			if (rc) {
				if (!cells[s].failed++)
					cells[s].first_err = rc;
				fprintf(stderr, "bench-vacate: %s %" PRIu64 " MiB: vcma_alloc: %s\n", kind_name[k],
					sizes[s] / MiB, vcma_strerror(rc));
				continue;
			}
			if (r.size != sizes[s])
				fail("vcma_alloc(%" PRIu64 ") returned %" PRIu64 " bytes", sizes[s], r.size);
			rc = vcma_free(v, r.handle);
			if (rc)
				fail("vcma_free: %s", vcma_strerror(rc));
			if (round >= warm)
				cells[s].t[cells[s].n++] = t;
			if (k != K_FREE)
				sleep_ms(RELEND_IDLE_MS); /* vcmad relends only after this much quiet */
		}
	}
	if (k != K_FREE) /* the last free's relend too: the VM's counts then add up */
		wait_pool(k, "after the last free");
	for (int s = 0; s < NSIZES; s++)
		cells[s].d = summarize(cells[s].t, cells[s].n);
}

/* ---- main ---- */

static void sibling(char *out, size_t n, const char *argv0, const char *rel)
{
	const char *slash = strrchr(argv0, '/');

	if (slash)
		snprintf(out, n, "%.*s/%s", (int)(slash - argv0), argv0, rel);
	else
		snprintf(out, n, "./%s", rel);
}

static void need_exec(const char *path, const char *what, const char *opt)
{
	if (access(path, X_OK))
		fail("%s not found or not executable at %s: %s (build it: meson compile -C build-release; or pass %s PATH)",
		     what, path, strerror(errno), opt);
}

static const char *fmt_us(char *buf, size_t n, const struct cell *c, bool p99)
{
	if (!c->d.n)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%.0f", p99 ? c->d.p99 : c->d.p50);
	return buf;
}

static const char *verdict(bool ok)
{
	return ok ? "PASS" : "MISS";
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vcmad", required_argument, NULL, 'd' },   { "simvm", required_argument, NULL, 'm' },
		{ "vcmactl", required_argument, NULL, 'c' }, { "iterations", required_argument, NULL, 'n' },
		{ "quick", no_argument, NULL, 'q' },         { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	size_t iters = 50, warm = 3;
	struct floor_res fl[NSIZES];
	struct cell cells[NKINDS][NSIZES];
	struct vm_stats vs[NKINDS];
	struct host_stats h0, h1, h2;
	struct sigaction sa;
	struct vcma *v;
	uint64_t moved[NKINDS][2];
	uint64_t t_start = now_ns();
	int c, rc;

	sibling(vcmad_path, sizeof(vcmad_path), argv[0], "../hv/vcmad");
	sibling(simvm_path, sizeof(simvm_path), argv[0], "../tools/vcma-simvm");
	sibling(vcmactl_path, sizeof(vcmactl_path), argv[0], "../tools/vcmactl");
	while ((c = getopt_long(argc, argv, "d:m:c:n:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'd': snprintf(vcmad_path, sizeof(vcmad_path), "%s", optarg); break;
		case 'm': snprintf(simvm_path, sizeof(simvm_path), "%s", optarg); break;
		case 'c': snprintf(vcmactl_path, sizeof(vcmactl_path), "%s", optarg); break;
		case 'n': iters = strtoull(optarg, NULL, 10); break;
		case 'q': iters = 10; warm = 2; break;
		case 'h':
			printf("usage: bench-vacate [--vcmad PATH] [--simvm PATH] [--vcmactl PATH] [--iterations N] "
			       "[--quick]\n"
			       "vcma_alloc latency for 1-8 MiB windows of free, lent-free and lent-used frames,\n"
			       "beside the copy+remap floor measured in the same run (default 50 iterations,\n"
			       "--quick 10).\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc || iters < 5 || iters > 100000) {
		fprintf(stderr, "bench-vacate: bad arguments (--iterations: 5..100000); try --help\n");
		return 2;
	}
	need_exec(vcmad_path, "vcmad", "--vcmad");
	need_exec(simvm_path, "vcma-simvm", "--simvm");
	need_exec(vcmactl_path, "vcmactl", "--vcmactl");

	memset(cells, 0, sizeof(cells));
	for (int k = 0; k < NKINDS; k++)
		for (int s = 0; s < NSIZES; s++)
			if (!(cells[k][s].t = calloc(iters, sizeof(uint64_t))))
				fail("out of memory");

	/* the bench's vcmad allows 10M requests/s: libvcma need not pace itself */
	setenv("VCMA_RATE", "0", 0);
	snprintf(st.dir, sizeof(st.dir), "/tmp/vcma-bench-vacate-XXXXXX");
	if (!mkdtemp(st.dir)) {
		st.dir[0] = '\0';
		fail("mkdtemp: %s", strerror(errno));
	}
	snprintf(st.run, sizeof(st.run), "%s/run", st.dir);
	snprintf(guest_sock, sizeof(guest_sock), "%s/vcmad.sock", st.run);
	snprintf(ctl_sock, sizeof(ctl_sock), "%s/vcmad-ctl.sock", st.run);
	vcmactl_err = tmpfile_path("vcmactl.err");
	atexit(cleanup);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* the floor, in this process, before any child runs */
	for (int s = 0; s < NSIZES; s++)
		floor_one(sizes[s], iters, warm, &fl[s]);

	start_vcmad();
	rc = vcma_attach(guest_sock, "bench-vacate", NULL, &v);
	if (rc) {
		show_tail("vcmad", vcmad_log);
		fail("attach to %s: %s", guest_sock, vcma_strerror(rc));
	}

	/* (a): nothing is lent yet, every window is FREE */
	wait_pool(K_FREE, "at the start");
	host_stats(&h0);
	measure(v, K_FREE, iters, warm, cells[K_FREE]);

	/* (c): one idle VM on the whole pool, its pages in use (never reported) */
	start_vm(K_LENT_USED);
	wait_pool(K_LENT_USED, "after the VM attached");
	measure(v, K_LENT_USED, iters, warm, cells[K_LENT_USED]);
	host_stats(&h1);
	stop_vm(&vs[K_LENT_USED], "the lent-used VM");
	wait_pool(K_FREE, "after the lent-used VM detached");

	/* (b): one idle VM on the whole pool that reported every page free */
	start_vm(K_LENT_FREE);
	wait_pool(K_LENT_FREE, "after the VM attached and reported its pages");
	measure(v, K_LENT_FREE, iters, warm, cells[K_LENT_FREE]);
	host_stats(&h2);
	stop_vm(&vs[K_LENT_FREE], "the lent-free VM");

	vcma_detach(v);
	rc = stop_child(&st.vcmad, 10000, "vcmad");
	if (!WIFEXITED(rc) || WEXITSTATUS(rc))
		fprintf(stderr, "bench-vacate: vcmad exited with status %#x\n", rc);
	moved[K_LENT_USED][0] = h1.vacated_lent_used - h0.vacated_lent_used;
	moved[K_LENT_USED][1] = h1.vacated_lent_free - h0.vacated_lent_free;
	moved[K_LENT_FREE][0] = h2.vacated_lent_used - h1.vacated_lent_used;
	moved[K_LENT_FREE][1] = h2.vacated_lent_free - h1.vacated_lent_free;

	/* what vcmad logged: warnings and errors are worth a look */
	{
		FILE *f = fopen(vcmad_log, "r");
		char line[512], first[512] = "";
		unsigned int nwarn = 0;

		while (f && fgets(line, sizeof(line), f))
			if (strstr(line, ": warning: ") || strstr(line, ": error: ") || strstr(line, ": crit: "))
				if (!nwarn++)
					snprintf(first, sizeof(first), "%s", line);
		if (f)
			fclose(f);
		if (nwarn)
			fprintf(stderr, "bench-vacate: vcmad logged %u warning(s)/error(s); the first: %s", nwarn, first);
	}

	/* ---- tables ---- */
	printf("bench-vacate: vcma_alloc latency in us as the allocating guest sees it (libvcma in this process,\n"
	       "vcmad sim backend); %zu allocations per cell after %zu warm-up round(s); pool %d MiB, fully lent to\n"
	       "one idle vcma-simvm VM (lend_share 100%%) for (b) and (c) and relent after every free\n",
	       iters, warm, POOL_MIB);
	printf("%-7s %9s | %-19s | %-19s | %-19s | %-19s\n", "", "(a) FREE", "(b) LENT_FREE", "(c) LENT_USED",
	       "floor: copy + remap", "ratio of p50s");
	printf("%-7s %9s | %9s %9s | %9s %9s | %9s %9s | %9s %9s\n", "size", "p50", "p50", "p99", "p50", "p99",
	       "1 call", "per page", "(c)/floor", "(c)/(b)");
	for (int s = 0; s < NSIZES; s++) {
		char a[16], b50[16], b99[16], c50[16], c99[16], r1[16], r2[16];
		const struct cell *cb = &cells[K_LENT_FREE][s], *cc = &cells[K_LENT_USED][s];

		if (cc->d.n && cb->d.n) {
			snprintf(r1, sizeof(r1), "%.1fx", cc->d.p50 / fl[s].contig.p50);
			snprintf(r2, sizeof(r2), "%.1fx", cc->d.p50 / cb->d.p50);
		} else {
			snprintf(r1, sizeof(r1), "-");
			snprintf(r2, sizeof(r2), "-");
		}
		printf("%3" PRIu64 " MiB %9s | %9s %9s | %9s %9s | %9.0f %9.0f | %9s %9s\n", sizes[s] / MiB,
		       fmt_us(a, sizeof(a), &cells[K_FREE][s], false), fmt_us(b50, sizeof(b50), cb, false),
		       fmt_us(b99, sizeof(b99), cb, true), fmt_us(c50, sizeof(c50), cc, false),
		       fmt_us(c99, sizeof(c99), cc, true), fl[s].contig.p50, fl[s].scattered.p50, r1, r2);
	}
	for (int k = 0; k < NKINDS; k++)
		for (int s = 0; s < NSIZES; s++)
			if (cells[k][s].failed)
				printf("  %s %" PRIu64 " MiB: %zu allocation(s) failed (first: %s), not in the numbers\n",
				       kind_name[k], sizes[s] / MiB, cells[k][s].failed, vcma_strerror(cells[k][s].first_err));
	printf("floor (p50, this process): page-by-page memcpy into populated destination pages of a second memfd,\n"
	       "then mmap(MAP_FIXED|MAP_SHARED) of the destination over the (unpopulated) guest view: one call for\n"
	       "the window, or one call per page to scattered destination offsets. No pause, no messages, no zeroing.\n");
	printf("p99 of %zu samples%s. Floor parts, p50 us:\n", iters,
	       iters < 100 ? " (fewer than 100: it is the maximum)" : "");
	printf("  %-7s %12s %14s %12s %12s\n", "size", "copy", "copy, punched", "remap 1", "remap/page");
	printf("  %-7s %12s %14s %12s %12s\n", "", "(populated)", "destination", "call", "scattered");
	for (int s = 0; s < NSIZES; s++)
		printf("  %3" PRIu64 " MiB %12.0f %14.0f %12.0f %12.0f\n", sizes[s] / MiB, fl[s].copy.p50,
		       fl[s].copy_cold.p50, fl[s].remap1.p50, fl[s].remapn.p50);
	printf("  (vcmad's ordinary memory is punched when freed, so its copies go to punched destinations)\n");

	printf("\nlent VM pauses (vcma-simvm --json: PAUSE received to RESUME; the VM is idle, so no vCPU parks)\n");
	printf("%-34s %7s %9s %9s %9s %11s %11s %13s\n", "", "pauses", "p50 us", "p99 us", "max us", "pages", "remap",
	       "pages vacated");
	printf("%-34s %7s %9s %9s %9s %11s %11s %13s\n", "", "", "", "", "", "remapped", "calls", "for allocs");
	for (int k = K_LENT_USED; k >= K_LENT_FREE; k--) {
		char vac[32];

		snprintf(vac, sizeof(vac), "%" PRIu64 "%s", moved[k][k == K_LENT_USED ? 0 : 1],
			 moved[k][k == K_LENT_USED ? 1 : 0] ? "+" : "");
		printf("%-34s %7" PRIu64 " %9.1f %9.1f %9.1f %11" PRIu64 " %11" PRIu64 " %13s\n",
		       k == K_LENT_USED ? "(c) VM, pages in use" : "(b) VM, every page reported free", vs[k].pauses,
		       vs[k].p50_us, vs[k].p99_us, vs[k].max_us, vs[k].remapped_pages, vs[k].remap_calls, vac);
	}
	{
		uint64_t want[NKINDS] = { 0, 0, 0 };
		size_t failed = 0;

		for (int k = K_LENT_FREE; k <= K_LENT_USED; k++)
			for (int s = 0; s < NSIZES; s++) {
				want[k] += (iters + warm - cells[k][s].failed) * (sizes[s] / PAGE);
				failed += cells[k][s].failed;
			}
		printf("pauses and remaps include relending: after each free vcmad moves the pages back onto the pool\n"
		       "with the same pause/copy/remap/resume (so pages remapped = 2 x pages vacated). \"vacated for\n"
		       "allocs\" is vcmactl stats' vacated_lent_used for (c), vacated_lent_free for (b), over the phase\n"
		       "(expected %" PRIu64 " and %" PRIu64 ": every round, warm-up included).\n",
		       want[K_LENT_USED], want[K_LENT_FREE]);
		if (moved[K_LENT_USED][0] != want[K_LENT_USED] || moved[K_LENT_USED][1] ||
		    moved[K_LENT_FREE][1] != want[K_LENT_FREE] || moved[K_LENT_FREE][0])
			printf("WARNING: the windows were not what they should be: (c) vacated %" PRIu64 " used + %" PRIu64
			       " free, (b) %" PRIu64 " used + %" PRIu64 " free page(s)%s\n",
			       moved[K_LENT_USED][0], moved[K_LENT_USED][1], moved[K_LENT_FREE][0], moved[K_LENT_FREE][1],
			       failed ? " (failed allocations may have moved some)" : "");
	}
	if (h2.pause_found)
		printf("vcmad (vcmactl stats \"%s\", PAUSE sent to RESUME sent, all VMs, whole run): %.0f pauses, p50 %.1f us,"
		       " p99 %.1f us, max %.1f us\n",
		       h2.pause_key, h2.pause_count, h2.pause_p50_us, h2.pause_p99_us, h2.pause_max_us);
	else
		printf("vcmad: vcmactl --json stats exposes no pause histogram (vcmad keeps one, unexported)\n");
	for (int k = K_LENT_FREE; k <= K_LENT_USED; k++)
		if (vs[k].errors || vs[k].corruptions)
			printf("WARNING: %s VM reported %" PRIu64 " error(s), %" PRIu64 " corruption(s)\n",
			       k == K_LENT_USED ? "(c)" : "(b)", vs[k].errors, vs[k].corruptions);

	/* ---- targets ---- */
	printf("\ntarget (c) p50 <= 3x floor (1 remap call):");
	for (int s = 0; s < NSIZES; s++) {
		const struct cell *cc = &cells[K_LENT_USED][s];
		double r = cc->d.n ? cc->d.p50 / fl[s].contig.p50 : 0;

		printf("%s %" PRIu64 " MiB %s (%.1fx)", s ? "," : "", sizes[s] / MiB, verdict(cc->d.n && r <= 3.0), r);
	}
	printf("\ntarget (b) >= 10x faster than (c), c_p50/b_p50 >= 10:");
	for (int s = 0; s < NSIZES; s++) {
		const struct cell *cb = &cells[K_LENT_FREE][s], *cc = &cells[K_LENT_USED][s];
		double r = cb->d.n && cc->d.n ? cc->d.p50 / cb->d.p50 : 0;

		printf("%s %" PRIu64 " MiB %s (%.1fx)", s ? "," : "", sizes[s] / MiB, verdict(cb->d.n && cc->d.n && r >= 10.0),
		       r);
	}
	printf("\ntarget guest pause p99 <= 1 ms: (c) VM %s (%.0f us), (b) VM %s (%.0f us)",
	       verdict(vs[K_LENT_USED].pauses && vs[K_LENT_USED].p99_us <= 1000.0), vs[K_LENT_USED].p99_us,
	       verdict(vs[K_LENT_FREE].pauses && vs[K_LENT_FREE].p99_us <= 1000.0), vs[K_LENT_FREE].p99_us);
	if (h2.pause_found)
		printf(", vcmad %s (%.0f us)", verdict(h2.pause_p99_us <= 1000.0), h2.pause_p99_us);
	printf("\n(run took %.1f s)\n", (double)(now_ns() - t_start) / 1e9);
	for (int k = 0; k < NKINDS; k++)
		for (int s = 0; s < NSIZES; s++)
			free(cells[k][s].t);
	return 0;
}
