// SPDX-License-Identifier: MIT
/*
 * bench-vacate - what a guest waits for in vcma_alloc() when the window it gets has to
 * be vacated first, beside the floor measured in the same run.
 *
 * Rows: 1, 2, 4 and 8 MiB allocations whose window is
 *   (a) FREE pool frames                       (no simulated VM attached yet)
 *   (b) all LENT_FREE: lent to an idle VM that reported every page free
 *   (c) all LENT_USED: lent to an idle VM whose pages are all in use
 * with (b) and (c) measured twice, under a vcmad with `precopy = no` (pause, copy, remap,
 * resume in batches) and one with `precopy = yes` (reported pages dropped without a
 * pause; in-use pages copied while the VM runs, writes logged, one short one-trip pause),
 * and the p50 and p99 of vcma_alloc() as this process sees it (it is the allocating
 * guest, through libvcma), and the floor, measured here in one process: the same bytes
 * copied page by page (4 KiB at a time, as vcmad copies) between two MAP_SHARED memfd
 * mappings into populated destination pages, plus remapping them (mmap MAP_FIXED|
 * MAP_SHARED of the destination memfd over the "guest" mapping): one call for the
 * whole window (a contiguous destination, the best case), and one call per page to
 * scattered destination offsets.
 *
 * Then the idle VMs' pauses (vcma-simvm --json, and vcmad's pause_latency), how their
 * pages moved (vcmactl --json stats), and a VM that writes into the window being
 * vacated: one checksumming vCPU at a few write rates (--write-rate), its RAM an 8 MiB
 * pool, 8 MiB allocations with pre-copy off and on: vcma_alloc() time, its pauses,
 * vcmad's pre-copy counters around each allocation, and the VM's corruption count.
 * Last, the targets, each PASS or MISS.
 *
 * Every phase has its own vcmad and VM, so their counters are the phase's alone.
 * Windows are made deterministic by one VM whose RAM is exactly the pool, with
 * lend_share 100%: the pool is fully lent; after each free vcmad relends the freed
 * frames back to the VM (relend_idle_ms later), and the next allocation waits until
 * the control socket's "pools" request says the pool is fully lent again in the wanted
 * state (asked on one connection every 5 ms; vcmactl, a process per look, is kept for
 * the counters read once per phase).
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
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
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
	char want[160];

	snprintf(want, sizeof(want), "%s/%s", st.dir, name);
	for (int i = 0; i < ntmp_path; i++) /* the same file again (vcmad and the VMs run more than once) */
		if (!strcmp(tmp_path[i], want))
			return tmp_path[i];
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

/*
 * The control socket spoken directly (hv/ctl/ctl_proto.h: one JSON line each way): the
 * pool is polled every few ms while vcmad relends, and a vcmactl process per poll took
 * the CPU the VM's VMM thread needed to answer relending's pauses (on two cores, the
 * harness showed up in the pause tail it measures). One connection per vcmad.
 */
static int ctl_fd = -1;

static void ctl_close(void)
{
	if (ctl_fd >= 0)
		close(ctl_fd);
	ctl_fd = -1;
}

static void ctl_query(char *buf, size_t cap, const char *request)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t end = now_ns() + 15000000000ull;
	size_t n = 0, len = strlen(request);

	if (ctl_fd < 0) {
		if (strlen(ctl_sock) >= sizeof(sa.sun_path))
			fail("%s: the path is too long for a socket address", ctl_sock);
		memcpy(sa.sun_path, ctl_sock, strlen(ctl_sock) + 1);
		ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (ctl_fd < 0 || connect(ctl_fd, (struct sockaddr *)&sa, sizeof(sa)))
			fail("connect to %s: %s", ctl_sock, strerror(errno));
	}
	for (size_t off = 0; off < len;) {
		ssize_t w = send(ctl_fd, request + off, len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("%s: sending %s: %s", ctl_sock, request, w ? strerror(errno) : "nothing sent");
		off += (size_t)w;
	}
	while (!n || buf[n - 1] != '\n') {
		struct pollfd p = { .fd = ctl_fd, .events = POLLIN };
		uint64_t t = now_ns();
		ssize_t r;

		if (t > end || poll(&p, 1, (int)((end - t) / 1000000ull) + 1) == 0)
			fail("%s: no answer to %s within 15 s", ctl_sock, request);
		if (n >= cap - 1)
			fail("%s: the answer to %s is longer than %zu bytes", ctl_sock, request, cap - 1);
		r = read(ctl_fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail("%s: reading the answer to %s: %s", ctl_sock, request, r ? strerror(errno) : "connection closed");
		n += (size_t)r;
	}
	buf[n] = '\0';
	if (!strstr(buf, "\"ok\":true"))
		fail("%s: %s was answered %.400s", ctl_sock, request, buf);
}

static void pool_frames(struct frames *f)
{
	char buf[16384];
	const char *os, *oe, *e, *main_pool;

	/* "pools", not "pool main": the same counts without drawing the fragmentation map */
	ctl_query(buf, sizeof(buf), "{\"version\":1,\"id\":1,\"cmd\":\"pools\"}\n");
	e = buf + strlen(buf);
	main_pool = strstr(buf, "\"name\":\"main\"");
	if (!main_pool || !jobj(main_pool, e, "frames", &os, &oe))
		fail("control request pools: no pool main with a \"frames\" object in: %.400s", buf);
	f->total = jnum_or_fail(os, oe, "total", "control request pools");
	f->free = jnum_or_fail(os, oe, "free", "control request pools");
	f->lent_free = jnum_or_fail(os, oe, "lent_free", "control request pools");
	f->lent_used = jnum_or_fail(os, oe, "lent_used", "control request pools");
	f->region = jnum_or_fail(os, oe, "region", "control request pools");
	f->claimed = jnum_or_fail(os, oe, "claimed", "control request pools");
}

static bool pool_ready(const struct frames *f, enum kind k)
{
	uint64_t want = k == K_FREE ? f->free : k == K_LENT_FREE ? f->lent_free : f->lent_used;

	return f->total && want == f->total && !f->claimed;
}

/*
 * What vcmactl --json stats says: pool main's vacate counters, vcmad's counters of how
 * it moved pages (drops, pre-copy), and its pause histogram ("pause_latency", PAUSE
 * sent to RESUME sent, every VM pause for any move: log2 buckets, so its quantiles are
 * bucket edges, "at most").
 */
#define HIST_BUCKETS 64

struct host_stats {
	uint64_t vacated_lent_free, vacated_lent_used;
	uint64_t drops, dropped_pages, pc_batches, pc_rounds, pc_pages, pc_recopied, pc_final, pc_fallbacks;
	uint64_t pause_count, pause_max_ns;
	uint64_t pause_bucket[HIST_BUCKETS];
	uint64_t turn_bucket[HIST_BUCKETS]; /* vcmad's loop turns ("loop_turn") */
};

/* The "buckets" of the histogram object [hs, he) into out[]: bucket b counts
 * [2^b, 2^(b+1)) ns. */
static void hist_buckets(const char *hs, const char *he, uint64_t out[HIST_BUCKETS])
{
	const char *p = jfind(hs, he, "buckets");
	int b = 0;

	while (p && b < HIST_BUCKETS && (p = jfind(p, he, "count")))
		out[b++] = (uint64_t)strtod(p, NULL);
}

static void host_stats(struct host_stats *h)
{
	static char buf[1 << 20];
	const char *e, *ds, *de, *ps, *pe, *p;

	memset(h, 0, sizeof(*h));
	vcmactl(buf, sizeof(buf), "stats", NULL, NULL);
	e = buf + strlen(buf);
	/* the first (only) pool's counters */
	ps = jfind(buf, e, "pools");
	if (!ps || !(p = memchr(ps, '{', (size_t)(e - ps))) || !jnum(p, e, "vacated_lent_used", &(double){ 0 }))
		fail("vcmactl stats: no pool counters in: %.400s", buf);
	h->vacated_lent_free = jnum_or_fail(p, e, "vacated_lent_free", "vcmactl stats");
	h->vacated_lent_used = jnum_or_fail(p, e, "vacated_lent_used", "vcmactl stats");
	if (!jobj(buf, e, "daemon", &ds, &de))
		fail("vcmactl stats: no \"daemon\" object in: %.400s", buf);
	h->drops = jnum_or_fail(ds, de, "drops", "vcmactl stats");
	h->dropped_pages = jnum_or_fail(ds, de, "dropped_pages", "vcmactl stats");
	h->pc_batches = jnum_or_fail(ds, de, "precopy_batches", "vcmactl stats");
	h->pc_rounds = jnum_or_fail(ds, de, "precopy_rounds", "vcmactl stats");
	h->pc_pages = jnum_or_fail(ds, de, "precopy_pages", "vcmactl stats");
	h->pc_recopied = jnum_or_fail(ds, de, "precopy_recopied", "vcmactl stats");
	h->pc_final = jnum_or_fail(ds, de, "precopy_final_pages", "vcmactl stats");
	h->pc_fallbacks = jnum_or_fail(ds, de, "precopy_fallbacks", "vcmactl stats");
	if (!jobj(ds, de, "pause_latency", &ps, &pe))
		fail("vcmactl stats: no \"pause_latency\" object in: %.400s", ds);
	h->pause_count = jnum_or_fail(ps, pe, "count", "vcmactl stats pause_latency");
	h->pause_max_ns = jnum_or_fail(ps, pe, "max_ns", "vcmactl stats pause_latency");
	hist_buckets(ps, pe, h->pause_bucket);
	if (!jobj(ds, de, "loop_turn", &ps, &pe))
		fail("vcmactl stats: no \"loop_turn\" object in: %.400s", ds);
	hist_buckets(ps, pe, h->turn_bucket);
}

/* b - a, for the counters (the histogram's max cannot be taken apart: b's is kept) */
static void host_stats_sub(struct host_stats *d, const struct host_stats *b, const struct host_stats *a)
{
	d->vacated_lent_free = b->vacated_lent_free - a->vacated_lent_free;
	d->vacated_lent_used = b->vacated_lent_used - a->vacated_lent_used;
	d->drops = b->drops - a->drops;
	d->dropped_pages = b->dropped_pages - a->dropped_pages;
	d->pc_batches = b->pc_batches - a->pc_batches;
	d->pc_rounds = b->pc_rounds - a->pc_rounds;
	d->pc_pages = b->pc_pages - a->pc_pages;
	d->pc_recopied = b->pc_recopied - a->pc_recopied;
	d->pc_final = b->pc_final - a->pc_final;
	d->pc_fallbacks = b->pc_fallbacks - a->pc_fallbacks;
	d->pause_count = b->pause_count - a->pause_count;
	d->pause_max_ns = b->pause_max_ns;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		d->pause_bucket[i] = b->pause_bucket[i] - a->pause_bucket[i];
		d->turn_bucket[i] = b->turn_bucket[i] - a->turn_bucket[i];
	}
}

static void host_stats_add(struct host_stats *s, const struct host_stats *d)
{
	s->vacated_lent_free += d->vacated_lent_free;
	s->vacated_lent_used += d->vacated_lent_used;
	s->drops += d->drops;
	s->dropped_pages += d->dropped_pages;
	s->pc_batches += d->pc_batches;
	s->pc_rounds += d->pc_rounds;
	s->pc_pages += d->pc_pages;
	s->pc_recopied += d->pc_recopied;
	s->pc_final += d->pc_final;
	s->pc_fallbacks += d->pc_fallbacks;
	s->pause_count += d->pause_count;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		s->pause_bucket[i] += d->pause_bucket[i];
		s->turn_bucket[i] += d->turn_bucket[i];
	}
}

/* A quantile of log2 buckets, us: the upper edge of its bucket (at most max_ns when
 * known), as vcmad computes it. q 1: the highest non-empty bucket's edge. */
static double bucket_q_us(const uint64_t bucket[HIST_BUCKETS], uint64_t max_ns, double q)
{
	uint64_t total = 0, want, seen = 0;

	for (int b = 0; b < HIST_BUCKETS; b++)
		total += bucket[b];
	if (!total)
		return 0;
	want = (uint64_t)(q * (double)total);
	if (!want)
		want = 1;
	for (int b = 0; b < HIST_BUCKETS; b++) {
		seen += bucket[b];
		if (seen >= want) {
			uint64_t edge = b < 63 ? 2ull << b : UINT64_MAX;

			return (double)(max_ns && edge > max_ns ? max_ns : edge) / 1e3;
		}
	}
	return (double)max_ns / 1e3;
}

/* A quantile of vcmad's pauses, us. */
static double pause_q_us(const struct host_stats *h, double q)
{
	return bucket_q_us(h->pause_bucket, h->pause_max_ns, q);
}

/* A quantile of vcmad's loop turns over a phase, us ("at most"). */
static double turn_q_us(const struct host_stats *h, double q)
{
	return bucket_q_us(h->turn_bucket, 0, q);
}

static uint64_t turn_count(const struct host_stats *h)
{
	uint64_t n = 0;

	for (int b = 0; b < HIST_BUCKETS; b++)
		n += h->turn_bucket[b];
	return n;
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

		/* for the notes: the same copy into punched destination pages, what a copy
		 * onto holes costs (relend's, onto idle pool frames); vcmad keeps free
		 * ordinary memory populated (cleared in place when freed), so an
		 * allocation's copies go to populated pages, as the floor's */
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

enum mode { M_OFF, M_ON, NMODES };
static const char *const mode_name[NMODES] = { "off", "on" };

static char vcmad_path[PATH_MAX], simvm_path[PATH_MAX], guest_sock[PATH_MAX];
static const char *vcmad_log, *vm_out, *vm_err;
static unsigned int vcmad_started, vcmad_warnings; /* over every vcmad of the run */
static char vcmad_first_warning[512];

/* A vcmad with [daemon] precopy = no (off) or yes (on), over a pool of pool_mib. */
static void start_vcmad(enum mode m, int pool_mib)
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
		"[daemon]\nruntime_dir = %s\nstate_dir = none\nlend_share = 100%%\nrelend_idle_ms = %d\npause_timeout_ms = 2000\n"
		"precopy = %s\n"
		"[limits]\nrequest_rate = 10000000\nrequest_burst = 1000000\nmax_ram_per_guest = 1G\n"
		"[machine]\nmemory = %dM\n[pool main]\nsize = %dM\n",
		st.run, RELEND_IDLE_MS, m == M_ON ? "yes" : "no", MACHINE_MIB, pool_mib);
	if (fclose(f))
		fail("%s: %s", conf, strerror(errno));
	/* the last vcmad removed its sockets; make sure, since their presence is the signal */
	unlink(guest_sock);
	unlink(ctl_sock);
	vcmad_log = tmpfile_path("vcmad.log");
	st.vcmad = spawn(argv, NULL, vcmad_log);
	vcmad_started++;
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

/* SIGTERM vcmad; what it logged at warning or worse is counted for the end of the run. */
static void stop_vcmad(void)
{
	FILE *f;
	char line[512];
	int rc;

	ctl_close(); /* before the SIGTERM: vcmad waits for no client */
	rc = stop_child(&st.vcmad, 10000, "vcmad");

	if (!WIFEXITED(rc) || WEXITSTATUS(rc))
		fprintf(stderr, "bench-vacate: vcmad exited with status %#x\n", rc);
	f = fopen(vcmad_log, "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, ": warning: ") || strstr(line, ": error: ") || strstr(line, ": crit: "))
			if (!vcmad_warnings++)
				snprintf(vcmad_first_warning, sizeof(vcmad_first_warning), "%s", line);
	if (f)
		fclose(f);
}

static struct vcma *attach_guest(void)
{
	struct vcma *v;
	int rc = vcma_attach(guest_sock, "bench-vacate", NULL, &v);

	if (rc) {
		show_tail("vcmad", vcmad_log);
		fail("attach to %s: %s", guest_sock, vcma_strerror(rc));
	}
	return v;
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

/* The lent VM: RAM exactly the pool, idle (every page in use, or every page reported
 * free) or one checksumming vCPU writing at write_rate pages/s (0: flat out). */
struct vm_spec {
	const char *name;
	int ram_mib;
	bool checksum, report_all;
	unsigned int write_rate;
};

static void start_vm(const struct vm_spec *sp)
{
	char ram[32], rate[32];
	char *argv[24];
	int a = 0;

	snprintf(ram, sizeof(ram), "%dM", sp->ram_mib);
	snprintf(rate, sizeof(rate), "%u", sp->write_rate);
	vm_out = tmpfile_path("vm.json");
	vm_err = tmpfile_path("vm.log");
	argv[a++] = simvm_path;
	argv[a++] = "--socket";
	argv[a++] = guest_sock;
	argv[a++] = "--name";
	argv[a++] = (char *)sp->name;
	argv[a++] = "--ram";
	argv[a++] = ram;
	argv[a++] = "--workload";
	argv[a++] = sp->checksum ? "checksum" : "idle";
	argv[a++] = "--alloc";
	argv[a++] = "none";
	argv[a++] = "--duration";
	argv[a++] = "100000";
	argv[a++] = "--json";
	if (sp->checksum) {
		argv[a++] = "--vcpus";
		argv[a++] = "1";
		argv[a++] = "--write-rate";
		argv[a++] = rate;
	}
	if (sp->report_all) {
		argv[a++] = "--report";
		argv[a++] = "100";
	}
	argv[a] = NULL;
	st.vm = spawn(argv, vm_out, vm_err);
}

struct vm_stats {
	uint64_t pauses, remapped_pages, remap_calls, reported_pages, errors, corruptions, written;
	uint64_t remap_resumes, drops, dropped_pages, tracks, dirty_pages;
	bool one_trip, dirty_log;
	int status; /* its wait status: 1 = it found corruption or another error */
	double p50_us, p99_us, max_us, duration_s;
};

static bool jtrue(const char *s, const char *e, const char *key)
{
	const char *v = jfind(s, e, key);

	return v && e - v >= 4 && !memcmp(v, "true", 4);
}

/* SIGTERM the VM; it verifies its pages, prints its --json summary and exits. */
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
	/* exit status 1 (corruption, errors) still comes with a summary: it is reported */
	if (!WIFEXITED(status) || WEXITSTATUS(status) > 1 || !jobj(buf, e, "pauses", &ps, &pe)) {
		show_tail(name, vm_err);
		fail("%s (vcma-simvm) ended with status %#x and %s", name, status,
		     n ? "no pause summary in its --json output" : "no --json output");
	}
	s->status = WEXITSTATUS(status);
	s->pauses = jnum_or_fail(ps, pe, "count", name);
	if (!jnum(ps, pe, "p50_us", &s->p50_us) || !jnum(ps, pe, "p99_us", &s->p99_us) ||
	    !jnum(ps, pe, "max_us", &s->max_us))
		fail("%s: no p50_us/p99_us/max_us in its pause summary: %.*s", name, (int)(pe - ps), ps);
	if (!jnum(buf, e, "duration_s", &s->duration_s))
		fail("%s: no duration_s in its --json output", name);
	s->remapped_pages = jnum_or_fail(buf, e, "remapped_pages", name);
	s->remap_calls = jnum_or_fail(buf, e, "remap_calls", name);
	s->reported_pages = jnum_or_fail(buf, e, "reported_pages", name);
	s->errors = jnum_or_fail(buf, e, "errors", name);
	s->corruptions = jnum_or_fail(buf, e, "corruptions", name);
	s->written = jnum_or_fail(buf, e, "vcpu_pages_written", name);
	s->remap_resumes = jnum_or_fail(buf, e, "remap_resumes", name);
	s->drops = jnum_or_fail(buf, e, "drops", name);
	s->dropped_pages = jnum_or_fail(buf, e, "dropped_pages", name);
	s->tracks = jnum_or_fail(buf, e, "tracks", name);
	s->dirty_pages = jnum_or_fail(buf, e, "dirty_pages", name);
	s->one_trip = jtrue(buf, e, "one_trip");
	s->dirty_log = jtrue(buf, e, "dirty_log");
	if (s->status)
		show_tail(name, vm_err);
}

/* ---- the allocating guest: this process ---- */

struct cell {
	uint64_t *t; /* ns per vcma_alloc() */
	size_t n, failed;
	int first_err;
	struct dist d;
};

static void cell_init(struct cell *c, size_t n)
{
	memset(c, 0, sizeof(*c));
	if (!(c->t = calloc(n, sizeof(uint64_t))))
		fail("out of memory");
}

static void alloc_failed(struct cell *c, int rc, const char *what, uint64_t bytes)
{
	if (!c->failed++)
		c->first_err = rc;
	fprintf(stderr, "bench-vacate: %s %" PRIu64 " MiB: vcma_alloc: %s\n", what, bytes / MiB, vcma_strerror(rc));
}

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
				alloc_failed(&cells[s], rc, kind_name[k], sizes[s]);
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

/* (b) or (c) on an idle VM, under its own vcmad (so its counters and pause histogram
 * are this phase's alone); (a) first, when free is given */
struct idle_phase {
	struct cell cells[NSIZES];
	struct vm_stats vm;
	struct host_stats h;
};

static void run_idle(enum mode m, enum kind k, size_t iters, size_t warm, struct cell free_cells[NSIZES],
		     struct idle_phase *ph)
{
	const struct vm_spec sp = {
		.name = k == K_LENT_FREE ? "lent-free" : "lent-used", .ram_mib = POOL_MIB, .report_all = k == K_LENT_FREE
	};
	char name[64];
	struct vcma *v;

	start_vcmad(m, POOL_MIB);
	v = attach_guest();
	if (free_cells) { /* nothing is lent yet: every window is FREE */
		wait_pool(K_FREE, "at the start");
		measure(v, K_FREE, iters, warm, free_cells);
	}
	start_vm(&sp);
	wait_pool(k, k == K_LENT_FREE ? "after the VM attached and reported its pages" : "after the VM attached");
	measure(v, k, iters, warm, ph->cells);
	host_stats(&ph->h);
	snprintf(name, sizeof(name), "the %s VM (pre-copy %s)", sp.name, mode_name[m]);
	stop_vm(&ph->vm, name);
	vcma_detach(v);
	stop_vcmad();
}

/* A VM that writes into the window being vacated: its RAM is the whole (small) pool,
 * so every 8 MiB window is all of it. */
#define HOT_POOL_MIB 8
#define HOT_SIZE ((uint64_t)HOT_POOL_MIB * MiB)

struct hot_row {
	unsigned int rate; /* pages/s asked of the one vCPU, 0 = flat out */
	enum mode m;
	struct cell c;
	struct vm_stats vm;
	struct host_stats alloc; /* vcmad's counters over the measured allocations only */
	size_t precopied, fell_back; /* measured allocations that pre-copied, that fell back */
};

static void run_hot(struct hot_row *h, size_t iters, size_t warm)
{
	const struct vm_spec sp = { .name = "writer", .ram_mib = HOT_POOL_MIB, .checksum = true, .write_rate = h->rate };
	char name[64];
	struct vcma *v;

	start_vcmad(h->m, HOT_POOL_MIB);
	v = attach_guest();
	start_vm(&sp);
	wait_pool(K_LENT_USED, "after the writing VM attached");
	for (size_t round = 0; round < warm + iters; round++) {
		struct host_stats s0, s1, d;
		struct vcma_region_info r;
		uint64_t t0, t;
		int rc;

		wait_pool(K_LENT_USED, "before an allocation");
		host_stats(&s0);
		t0 = now_ns();
		rc = vcma_alloc(v, HOT_SIZE, 0, 0, "main", &r);
		t = now_ns() - t0;
		if (rc) {
			alloc_failed(&h->c, rc, "writing VM", HOT_SIZE);
			continue;
		}
		host_stats(&s1); /* before the free: relending has not begun */
		rc = vcma_free(v, r.handle);
		if (rc)
			fail("vcma_free: %s", vcma_strerror(rc));
		if (round >= warm) {
			h->c.t[h->c.n++] = t;
			host_stats_sub(&d, &s1, &s0);
			host_stats_add(&h->alloc, &d);
			h->alloc.pause_max_ns = s1.pause_max_ns;
			h->precopied += d.pc_batches != 0;
			h->fell_back += d.pc_fallbacks != 0;
		}
		sleep_ms(RELEND_IDLE_MS);
	}
	wait_pool(K_LENT_USED, "after the last free");
	h->c.d = summarize(h->c.t, h->c.n);
	snprintf(name, sizeof(name), "the writing VM (%u pages/s, pre-copy %s)", h->rate, mode_name[h->m]);
	stop_vm(&h->vm, name);
	vcma_detach(v);
	stop_vcmad();
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

static const char *fmt_ratio(char *buf, size_t n, const struct cell *c, double base)
{
	if (!c->d.n || base <= 0)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%.1fx", c->d.p50 / base);
	return buf;
}

static const char *fmt_rate(char *buf, size_t n, unsigned int rate)
{
	if (rate)
		snprintf(buf, n, "%u/s %5.1f MiB/s", rate, (double)rate * (double)PAGE / (double)MiB);
	else
		snprintf(buf, n, "flat out");
	return buf;
}

static const char *verdict(bool ok)
{
	return ok ? "PASS" : "MISS";
}

/* "PASS (985 us)", or "PASS (no pauses)" */
static const char *pause_verdict(char *buf, size_t n, const struct vm_stats *s)
{
	if (!s->pauses)
		snprintf(buf, n, "PASS (no pauses)");
	else
		snprintf(buf, n, "%s (%.0f us)", verdict(s->p99_us <= 1000.0), s->p99_us);
	return buf;
}

static int parse_rates(const char *arg, unsigned int *rates, int max)
{
	int n = 0;

	for (const char *p = arg; *p && n < max;) {
		char *end;
		unsigned long x = strtoul(p, &end, 10);

		if (end == p || x > 10000000ul || (*end && *end != ','))
			return -1;
		rates[n++] = (unsigned int)x;
		p = *end ? end + 1 : end;
	}
	return n;
}

#define MAX_RATES 4

int main(int argc, char **argv)
{
	const char *tmpdir;
	static const struct option opts[] = {
		{ "vcmad", required_argument, NULL, 'd' },     { "simvm", required_argument, NULL, 'm' },
		{ "vcmactl", required_argument, NULL, 'c' },   { "iterations", required_argument, NULL, 'n' },
		{ "write-rates", required_argument, NULL, 'r' }, { "write-iterations", required_argument, NULL, 'w' },
		{ "quick", no_argument, NULL, 'q' },           { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* the writing VM's rows: one vCPU at 20000 and 100000 pages/s (78 and 391 MiB/s), and
	 * as fast as it can */
	unsigned int rates[MAX_RATES] = { 20000, 100000, 0 };
	int nrates = 3;
	size_t iters = 50, warm = 3, hot_iters = 20, hot_warm = 2;
	struct floor_res fl[NSIZES];
	struct cell free_cells[NSIZES];
	struct idle_phase used[NMODES], lfree[NMODES];
	struct hot_row hot[MAX_RATES * NMODES];
	struct sigaction sa;
	uint64_t t_start = now_ns();
	int c;

	sibling(vcmad_path, sizeof(vcmad_path), argv[0], "../hv/vcmad");
	sibling(simvm_path, sizeof(simvm_path), argv[0], "../tools/vcma-simvm");
	sibling(vcmactl_path, sizeof(vcmactl_path), argv[0], "../tools/vcmactl");
	while ((c = getopt_long(argc, argv, "d:m:c:n:r:w:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'd': snprintf(vcmad_path, sizeof(vcmad_path), "%s", optarg); break;
		case 'm': snprintf(simvm_path, sizeof(simvm_path), "%s", optarg); break;
		case 'c': snprintf(vcmactl_path, sizeof(vcmactl_path), "%s", optarg); break;
		case 'n': iters = strtoull(optarg, NULL, 10); break;
		case 'r':
			nrates = parse_rates(optarg, rates, MAX_RATES);
			if (nrates < 0) {
				fprintf(stderr, "bench-vacate: --write-rates: up to %d pages/s values, comma-separated "
						"(0 = flat out)\n", MAX_RATES);
				return 2;
			}
			break;
		case 'w': hot_iters = strtoull(optarg, NULL, 10); break;
		case 'q': iters = 10; warm = 2; hot_iters = 5; hot_warm = 1; break;
		case 'h':
			printf("usage: bench-vacate [--vcmad PATH] [--simvm PATH] [--vcmactl PATH] [--iterations N]\n"
			       "                    [--write-rates R,R,...] [--write-iterations N] [--quick]\n"
			       "vcma_alloc latency for 1-8 MiB windows of free, lent-free and lent-used frames of an idle\n"
			       "VM, with vcmad's pre-copy off and on, beside the copy+remap floor measured in the same run\n"
			       "(default 50 iterations, --quick 10); then 8 MiB windows of a VM whose one vCPU writes\n"
			       "into them at each rate (pages/s, 0 = flat out; default 20000,100000,0), pre-copy off and on\n"
			       "(default 20 iterations, --quick 5).\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc || iters < 5 || iters > 100000 || hot_iters < 3 || hot_iters > 100000) {
		fprintf(stderr, "bench-vacate: bad arguments (--iterations: 5..100000, --write-iterations: 3..100000); "
				"try --help\n");
		return 2;
	}
	need_exec(vcmad_path, "vcmad", "--vcmad");
	need_exec(simvm_path, "vcma-simvm", "--simvm");
	need_exec(vcmactl_path, "vcmactl", "--vcmactl");

	memset(used, 0, sizeof(used));
	memset(lfree, 0, sizeof(lfree));
	memset(hot, 0, sizeof(hot));
	for (int s = 0; s < NSIZES; s++) {
		cell_init(&free_cells[s], iters);
		for (int m = 0; m < NMODES; m++) {
			cell_init(&used[m].cells[s], iters);
			cell_init(&lfree[m].cells[s], iters);
		}
	}
	for (int i = 0; i < nrates * NMODES; i++) {
		hot[i].rate = rates[i / NMODES];
		hot[i].m = (enum mode)(i % NMODES);
		cell_init(&hot[i].c, hot_iters);
	}

	/* the bench's vcmad allows 10M requests/s: libvcma need not pace itself */
	setenv("VCMA_RATE", "0", 0);
	/* vcmad's runtime directory, and so the sim's machine memory (the VMs' RAM), on tmpfs
	 * as vcmad's default /run/vcma is: on a disk every punched page written again is a
	 * block allocation */
	{
		struct statfs sf;

		tmpdir = !statfs("/dev/shm", &sf) && sf.f_type == TMPFS_MAGIC ? "/dev/shm" : "/tmp";
	}
	snprintf(st.dir, sizeof(st.dir), "%s/vcma-bench-vacate-XXXXXX", tmpdir);
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

	/* (a) once; (c) and (b) with each configuration, one beside the other in time */
	run_idle(M_OFF, K_LENT_USED, iters, warm, free_cells, &used[M_OFF]);
	run_idle(M_ON, K_LENT_USED, iters, warm, NULL, &used[M_ON]);
	run_idle(M_OFF, K_LENT_FREE, iters, warm, NULL, &lfree[M_OFF]);
	run_idle(M_ON, K_LENT_FREE, iters, warm, NULL, &lfree[M_ON]);
	/* the writing VM */
	for (int i = 0; i < nrates * NMODES; i++)
		run_hot(&hot[i], hot_iters, hot_warm);

	/* ---- the idle VM: latency ---- */
	printf("bench-vacate: vcma_alloc latency in us as the allocating guest sees it (libvcma in this process,\n"
	       "vcmad sim backend); %zu allocations per cell after %zu warm-up round(s); pool %d MiB, fully lent to\n"
	       "one idle vcma-simvm VM (lend_share 100%%) for (b) and (c) and relent after every free.\n"
	       "pre-copy off: vcmad `precopy = no` (pause, copy, remap, resume in batches: the old way);\n"
	       "pre-copy on: `precopy = yes`, the default (reported pages dropped without a pause, in-use pages\n"
	       "copied while the VM runs with its writes logged, one-trip pauses). Each column its own vcmad.\n"
	       "vcmad's runtime directory (its machine memory: the VMs' RAM, the pools) is under %s%s.\n",
	       iters, warm, POOL_MIB, tmpdir, strcmp(tmpdir, "/tmp") ? " (tmpfs)" : " (no tmpfs at /dev/shm)");
	printf("%-7s %9s | %-36s | %-36s | %s\n", "", "(a) FREE", "            (b) LENT_FREE", "            (c) LENT_USED",
	       "floor: copy + remap");
	printf("%-7s %9s | %-18s%-18s | %-18s%-18s |\n", "", "", "    pre-copy off", "    on: dropped", "    pre-copy off",
	       "   on: pre-copied");
	printf("%-7s %9s | %8s %8s  %8s %8s | %8s %8s  %8s %8s | %9s %9s\n", "size", "p50", "p50", "p99", "p50", "p99",
	       "p50", "p99", "p50", "p99", "1 call", "per page");
	for (int s = 0; s < NSIZES; s++) {
		char a[16], x[4][16], y[4][16];

		for (int m = 0; m < NMODES; m++) {
			fmt_us(x[2 * m], 16, &lfree[m].cells[s], false);
			fmt_us(x[2 * m + 1], 16, &lfree[m].cells[s], true);
			fmt_us(y[2 * m], 16, &used[m].cells[s], false);
			fmt_us(y[2 * m + 1], 16, &used[m].cells[s], true);
		}
		printf("%3" PRIu64 " MiB %9s | %8s %8s  %8s %8s | %8s %8s  %8s %8s | %9.0f %9.0f\n", sizes[s] / MiB,
		       fmt_us(a, sizeof(a), &free_cells[s], false), x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3],
		       fl[s].contig.p50, fl[s].scattered.p50);
	}
	for (int s = 0; s < NSIZES; s++) {
		if (free_cells[s].failed)
			printf("  (a) FREE %" PRIu64 " MiB: %zu allocation(s) failed (first: %s), not in the numbers\n",
			       sizes[s] / MiB, free_cells[s].failed, vcma_strerror(free_cells[s].first_err));
		for (int m = 0; m < NMODES; m++) {
			const struct cell *cs[2] = { &lfree[m].cells[s], &used[m].cells[s] };

			for (int i = 0; i < 2; i++)
				if (cs[i]->failed)
					printf("  %s pre-copy %s %" PRIu64 " MiB: %zu allocation(s) failed (first: %s), not in "
					       "the numbers\n",
					       kind_name[i ? K_LENT_USED : K_LENT_FREE], mode_name[m], sizes[s] / MiB,
					       cs[i]->failed, vcma_strerror(cs[i]->first_err));
		}
	}
	printf("p50 / floor (1 call)  |     (b) LENT_FREE     |     (c) LENT_USED     |  (c) / (b), p50s\n");
	printf("%-21s | %10s %10s | %10s %10s | %10s %10s\n", "size", "off", "on", "off", "on", "off", "on");
	for (int s = 0; s < NSIZES; s++) {
		char r[6][16];

		for (int m = 0; m < NMODES; m++) {
			fmt_ratio(r[m], 16, &lfree[m].cells[s], fl[s].contig.p50);
			fmt_ratio(r[2 + m], 16, &used[m].cells[s], fl[s].contig.p50);
			fmt_ratio(r[4 + m], 16, &used[m].cells[s], lfree[m].cells[s].d.n ? lfree[m].cells[s].d.p50 : 0);
		}
		printf("%3" PRIu64 " MiB%-14s | %10s %10s | %10s %10s | %10s %10s\n", sizes[s] / MiB, "", r[0], r[1], r[2],
		       r[3], r[4], r[5]);
	}
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
	printf("  (vcmad keeps free ordinary memory populated, cleared in place when freed: an allocation's copies\n"
	       "  go to populated pages, as the floor's; relend's go to idle pool frames, holes, like the punched column)\n");

	/* ---- the idle VM: pauses and how the pages moved ---- */
	printf("\nidle VM pauses, over each phase (relending's included)\n");
	printf("%-31s | %-34s | %s\n", "", "VM: vcma-simvm --json", "vcmad: vcmactl stats pause_latency");
	printf("%-31s | %7s %8s %8s %8s | %7s %9s %9s %9s\n", "", "pauses", "p50 us", "p99 us", "max us", "pauses",
	       "p50 us", "p99 us", "max us");
	for (int k = K_LENT_USED; k >= K_LENT_FREE; k--)
		for (int m = 0; m < NMODES; m++) {
			const struct idle_phase *ph = k == K_LENT_USED ? &used[m] : &lfree[m];
			char lbl[64], p50[16], p99[16];

			snprintf(lbl, sizeof(lbl), "%s, pre-copy %s", k == K_LENT_USED ? "(c) pages in use" : "(b) reported free",
				 mode_name[m]);
			snprintf(p50, sizeof(p50), "<=%.0f", pause_q_us(&ph->h, 0.5));
			snprintf(p99, sizeof(p99), "<=%.0f", pause_q_us(&ph->h, 0.99));
			printf("%-31s | %7" PRIu64 " %8.1f %8.1f %8.1f | %7" PRIu64 " %9s %9s %9.1f\n", lbl, ph->vm.pauses,
			       ph->vm.p50_us, ph->vm.p99_us, ph->vm.max_us, ph->h.pause_count, ph->h.pause_count ? p50 : "-",
			       ph->h.pause_count ? p99 : "-", (double)ph->h.pause_max_ns / 1e3);
		}
	printf("VM: PAUSE received to RESUME (or REMAP_RESUME) received. vcmad: PAUSE sent to RESUME (or\n"
	       "REMAP_RESUME) sent; its quantiles are upper edges of log2 buckets, hence \"<=\". The VM is idle:\n"
	       "no vCPU has to park. Each row is its own vcmad and VM; %zu+%zu allocations of each size.\n",
	       iters, warm);

	printf("\nvcmad's loop turns over each phase (vcmactl stats loop_turn: from finding work to the turn's end)\n");
	printf("%-31s | %8s %9s %9s %9s\n", "", "turns", "p50 us", "p99 us", "max us");
	for (int k = K_LENT_USED; k >= K_LENT_FREE; k--)
		for (int m = 0; m < NMODES; m++) {
			const struct idle_phase *ph = k == K_LENT_USED ? &used[m] : &lfree[m];
			char lbl[64], q[3][16];

			snprintf(lbl, sizeof(lbl), "%s, pre-copy %s", k == K_LENT_USED ? "(c) pages in use" : "(b) reported free",
				 mode_name[m]);
			snprintf(q[0], sizeof(q[0]), "<=%.0f", turn_q_us(&ph->h, 0.5));
			snprintf(q[1], sizeof(q[1]), "<=%.0f", turn_q_us(&ph->h, 0.99));
			snprintf(q[2], sizeof(q[2]), "<=%.0f", turn_q_us(&ph->h, 1));
			printf("%-31s | %8" PRIu64 " %9s %9s %9s\n", lbl, turn_count(&ph->h), q[0], q[1], q[2]);
		}
	printf("A request (another guest's ALLOC) arriving during a turn waits for its end. The longest turns\n"
	       "hold an allocation's copy (up to 8 MiB, in one turn: its requester waits for it anyway) or a\n"
	       "relend slice (relending copies at most 256 pages a turn onto idle pool frames, which faults them in).\n");

	printf("\nhow the idle VM's pages moved (vcma-simvm --json; vcmactl --json stats over the phase)\n");
	printf("%-31s | %9s %9s %8s %8s | %8s %8s %8s %8s %8s %6s\n", "", "vacated", "moved", "REMAP_", "DROPs",
	       "pre-copy", "pre-", "DIRTY_", "copied", "in the", "fell");
	printf("%-31s | %9s %9s %8s %8s | %8s %8s %8s %8s %8s %6s\n", "", "for", "pages", "RESUMEs", "", "batches",
	       "copied", "READ", "again", "pause", "back");
	printf("%-31s | %9s %9s %8s %8s | %8s %8s %8s %8s %8s\n", "", "allocs", "(VM)", "(VM)", "(VM)", "", "pages",
	       "rounds", "pages", "pages");
	for (int k = K_LENT_USED; k >= K_LENT_FREE; k--)
		for (int m = 0; m < NMODES; m++) {
			const struct idle_phase *ph = k == K_LENT_USED ? &used[m] : &lfree[m];
			char lbl[64];

			snprintf(lbl, sizeof(lbl), "%s, pre-copy %s", k == K_LENT_USED ? "(c) pages in use" : "(b) reported free",
				 mode_name[m]);
			printf("%-31s | %9" PRIu64 " %9" PRIu64 " %8" PRIu64 " %8" PRIu64 " | %8" PRIu64 " %8" PRIu64
			       " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %6" PRIu64 "\n",
			       lbl, k == K_LENT_USED ? ph->h.vacated_lent_used : ph->h.vacated_lent_free,
			       ph->vm.remapped_pages + ph->vm.dropped_pages,
			       ph->vm.remap_resumes, ph->vm.drops, ph->h.pc_batches, ph->h.pc_pages, ph->h.pc_rounds,
			       ph->h.pc_recopied, ph->h.pc_final, ph->h.pc_fallbacks);
		}
	{
		uint64_t per_row = 0;
		bool bad = false;

		for (int s = 0; s < NSIZES; s++)
			per_row += (iters + warm) * (sizes[s] / PAGE);
		printf("Relending moves the pages back after each free the same way, so pages moved (the VM's remapped\n"
		       "plus dropped pages) = 2 x vacated. \"vacated for allocs\" is vcmactl stats' vacated_lent_used for\n"
		       "(c), vacated_lent_free for (b) (expected %" PRIu64 " per row: every round, warm-up included).\n",
		       per_row);
		for (int m = 0; m < NMODES; m++) {
			uint64_t want_c = per_row, want_b = per_row;

			for (int s = 0; s < NSIZES; s++) {
				want_c -= used[m].cells[s].failed * (sizes[s] / PAGE);
				want_b -= lfree[m].cells[s].failed * (sizes[s] / PAGE);
			}
			if (used[m].h.vacated_lent_used != want_c || used[m].h.vacated_lent_free ||
			    lfree[m].h.vacated_lent_free != want_b || lfree[m].h.vacated_lent_used)
				bad = true;
		}
		if (bad)
			printf("WARNING: the windows were not what they should be: (c) off/on vacated %" PRIu64 "/%" PRIu64
			       " used + %" PRIu64 "/%" PRIu64 " free, (b) %" PRIu64 "/%" PRIu64 " used + %" PRIu64 "/%" PRIu64
			       " free page(s)\n",
			       used[0].h.vacated_lent_used, used[1].h.vacated_lent_used, used[0].h.vacated_lent_free,
			       used[1].h.vacated_lent_free, lfree[0].h.vacated_lent_used, lfree[1].h.vacated_lent_used,
			       lfree[0].h.vacated_lent_free, lfree[1].h.vacated_lent_free);
	}
	for (int m = 0; m < NMODES; m++) {
		const struct vm_stats *vs[2] = { &used[m].vm, &lfree[m].vm };

		for (int i = 0; i < 2; i++) {
			if (vs[i]->errors || vs[i]->corruptions)
				printf("WARNING: %s VM, pre-copy %s, reported %" PRIu64 " error(s), %" PRIu64 " corruption(s)\n",
				       i ? "(b)" : "(c)", mode_name[m], vs[i]->errors, vs[i]->corruptions);
			if (m == M_ON && (!vs[i]->one_trip || !vs[i]->dirty_log))
				printf("WARNING: %s VM attached without %s%s%s: pre-copy on could not use it (see vcma-simvm's "
				       "first lines)\n",
				       i ? "(b)" : "(c)", vs[i]->one_trip ? "" : "ONE_TRIP",
				       !vs[i]->one_trip && !vs[i]->dirty_log ? " and " : "", vs[i]->dirty_log ? "" : "DIRTY_LOG");
		}
	}

	/* ---- the writing VM ---- */
	printf("\na VM writing into the window being vacated: vcma-simvm --workload checksum --vcpus 1 --ram %dM\n"
	       "--write-rate R on a pool of %d MiB (its RAM is the pool, so every %d MiB window is all of it and\n"
	       "every write lands in it); %zu allocations of %d MiB per row after %zu warm-up (p99 of %zu: the\n"
	       "maximum); its vCPU writes random pages (4 KiB each, checksummed) and verifies one op in four\n",
	       HOT_POOL_MIB, HOT_POOL_MIB, HOT_POOL_MIB, hot_iters, HOT_POOL_MIB, hot_warm, hot_iters);
	printf("%-22s %-8s | %-17s | %-34s | %s\n", "write rate asked", "", "vcma_alloc us", "VM pauses (vcma-simvm), us",
	       "vcmad pauses, allocs");
	printf("%-22s %-8s | %8s %8s | %7s %8s %8s %8s | %9s %6s %6s\n", "(pages/s per vCPU)", "pre-copy", "p50", "p99",
	       "pauses", "p50", "p99", "max", "per alloc", "p50<=", "p99<=");
	for (int i = 0; i < nrates * NMODES; i++) {
		const struct hot_row *h = &hot[i];
		char rt[40], a50[16], a99[16];
		double n = h->c.n ? (double)h->c.n : 1;

		printf("%-22s %-8s | %8s %8s | %7" PRIu64 " %8.1f %8.1f %8.1f | %9.1f %6.0f %6.0f\n",
		       h->m == M_OFF ? fmt_rate(rt, sizeof(rt), h->rate) : "", mode_name[h->m],
		       fmt_us(a50, sizeof(a50), &h->c, false), fmt_us(a99, sizeof(a99), &h->c, true), h->vm.pauses,
		       h->vm.p50_us, h->vm.p99_us, h->vm.max_us, (double)h->alloc.pause_count / n, pause_q_us(&h->alloc, 0.5),
		       pause_q_us(&h->alloc, 0.99));
	}
	printf("VM pauses are all of the VM's life, relending's included (after each free vcmad moves its pages\n"
	       "back onto the pool the same way); vcmad's count only the pauses inside the measured vcma_alloc()s\n"
	       "(vcmactl stats before and after each, log2 buckets).\n");
	printf("%-22s %-8s | %-35s | %-14s | %s\n", "", "", "pre-copy per alloc (vcmad, mean)", "allocations",
	       "the VM (vcma-simvm)");
	printf("%-22s %-8s | %8s %8s %8s %8s | %6s %7s | %9s %8s\n", "write rate asked", "pre-copy", "copied",
	       "DIRTY_", "copied", "in the", "pre-", "fell", "written", "corrupt");
	printf("%-22s %-8s | %8s %8s %8s %8s | %6s %7s | %9s %8s\n", "", "", "running", "READs", "again", "pause",
	       "copied", "back", "pages/s", "pages");
	for (int i = 0; i < nrates * NMODES; i++) {
		const struct hot_row *h = &hot[i];
		char rt[40];
		double n = h->c.n ? (double)h->c.n : 1;

		printf("%-22s %-8s | %8.0f %8.1f %8.0f %8.0f | %6zu %7zu | %9.0f %8" PRIu64 "\n",
		       h->m == M_OFF ? fmt_rate(rt, sizeof(rt), h->rate) : "", mode_name[h->m], (double)h->alloc.pc_pages / n,
		       (double)h->alloc.pc_rounds / n, (double)h->alloc.pc_recopied / n, (double)h->alloc.pc_final / n,
		       h->precopied, h->fell_back, h->vm.duration_s > 0 ? (double)h->vm.written / h->vm.duration_s : 0,
		       h->vm.corruptions);
	}
	printf("copied running: pages copied in the first pass while the VM ran (precopy_pages); DIRTY_READ rounds\n"
	       "while it ran, and the pages they named copied again (precopy_rounds, precopy_recopied); in the\n"
	       "pause: written since the last round, copied with the VM parked (precopy_final_pages). Pre-copy\n"
	       "converges when few enough are dirty for one pause (60%% of max_pause_us); it falls back to pausing\n"
	       "in batches (precopy_fallbacks) when the dirty set stops shrinking or after 8 rounds. allocations:\n"
	       "how many of the %zu pre-copied, how many fell back. written: the vCPU's page writes over its life.\n",
	       hot_iters);
	for (int i = 0; i < nrates * NMODES; i++) {
		const struct hot_row *h = &hot[i];

		if (h->c.failed)
			printf("  writing VM %u pages/s, pre-copy %s: %zu allocation(s) failed (first: %s), not in the numbers\n",
			       h->rate, mode_name[h->m], h->c.failed, vcma_strerror(h->c.first_err));
		if (h->m == M_ON && !h->vm.dirty_log)
			printf("WARNING: the writing VM (%u pages/s) attached without DIRTY_LOG: its pre-copy row is "
			       "pause-only\n",
			       h->rate);
		if (h->alloc.vacated_lent_used != (uint64_t)h->c.n * (HOT_SIZE / PAGE))
			printf("WARNING: writing VM %u pages/s, pre-copy %s: %" PRIu64 " pages vacated for the %zu "
			       "measured allocations, not %" PRIu64 "\n",
			       h->rate, mode_name[h->m], h->alloc.vacated_lent_used, h->c.n,
			       (uint64_t)h->c.n * (HOT_SIZE / PAGE));
	}

	/* ---- targets ---- */
	{
		const struct cell *c8 = &used[M_ON].cells[NSIZES - 1], *c8off = &used[M_OFF].cells[NSIZES - 1];
		double r8 = c8->d.n ? c8->d.p50 / fl[NSIZES - 1].contig.p50 : 0;
		char pv[3][40];
		uint64_t corrupt = 0, errors = 0;
		int nvm = 0, bad_vm = 0;

		printf("\ntarget (c) 8 MiB, pre-copy on: p50 <= 3x floor (1 remap call): %s (%.1fx; pre-copy off %.1fx)\n",
		       verdict(c8->d.n && r8 <= 3.0), r8, c8off->d.n ? c8off->d.p50 / fl[NSIZES - 1].contig.p50 : 0);
		printf("  (c) pre-copy on, other sizes:");
		for (int s = 0; s < NSIZES - 1; s++) {
			const struct cell *cc = &used[M_ON].cells[s];

			printf("%s %" PRIu64 " MiB %.1fx", s ? "," : "", sizes[s] / MiB,
			       cc->d.n ? cc->d.p50 / fl[s].contig.p50 : 0);
		}
		printf("\ntarget guest pause p99 <= 1 ms on the idle VM, pre-copy on: (c) VM %s, (b) VM %s\n",
		       pause_verdict(pv[0], sizeof(pv[0]), &used[M_ON].vm),
		       pause_verdict(pv[1], sizeof(pv[1]), &lfree[M_ON].vm));
		printf("  (vcmad p99 <= %.0f us for (c); pre-copy off: (c) VM %.0f us, (b) VM %.0f us)\n",
		       pause_q_us(&used[M_ON].h, 0.99), used[M_OFF].vm.p99_us, lfree[M_OFF].vm.p99_us);
		printf("target (b) >= 10x faster than (c), pre-copy on, c_p50/b_p50 >= 10:");
		for (int s = 0; s < NSIZES; s++) {
			const struct cell *cb = &lfree[M_ON].cells[s], *cc = &used[M_ON].cells[s];
			double r = cb->d.n && cc->d.n ? cc->d.p50 / cb->d.p50 : 0;

			printf("%s %" PRIu64 " MiB %s (%.1fx)", s ? "," : "", sizes[s] / MiB,
			       verdict(cb->d.n && cc->d.n && r >= 10.0), r);
		}
		for (int i = 0; i < nrates * NMODES; i++) {
			nvm++;
			corrupt += hot[i].vm.corruptions;
			errors += hot[i].vm.errors;
			bad_vm += hot[i].vm.status != 0;
		}
		printf("\ntarget the writing VMs find no corruption: %s (%" PRIu64 " corrupt page(s), %" PRIu64
		       " error(s), %d of %d VM(s) exited with an error)\n",
		       verdict(!corrupt && !errors && !bad_vm), corrupt, errors, bad_vm, nvm);
	}
	if (vcmad_warnings)
		printf("vcmad logged %u warning(s)/error(s) over its %u runs; the first: %s", vcmad_warnings, vcmad_started,
		       vcmad_first_warning);
	printf("(run took %.1f s)\n", (double)(now_ns() - t_start) / 1e9);
	for (int s = 0; s < NSIZES; s++) {
		free(free_cells[s].t);
		for (int m = 0; m < NMODES; m++) {
			free(used[m].cells[s].t);
			free(lfree[m].cells[s].t);
		}
	}
	for (int i = 0; i < nrates * NMODES; i++)
		free(hot[i].c.t);
	return 0;
}
