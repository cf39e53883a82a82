// SPDX-License-Identifier: MIT
/*
 * bench-rtt - ALLOC+FREE round trips through libvcma to a real vcmad, beside the
 * floor measured in the same run: an eventfd ping-pong between two processes.
 *
 * Rows:
 *   floor       eventfd ping-pong, two processes (one request/response exchange)
 *   blocking    vcma_alloc(1 MiB) then vcma_free(), back to back, as applications do:
 *               the FREE is posted without a kick (PROTOCOL.md §4.9: vcmad's req_poll
 *               window is open), the next ALLOC's kick carries it and its wait collects
 *               the answer, so one exchange and one wake-up of vcmad per op
 *   kicked      the same with VCMA_LAZY_FREE=0: every posted FREE kicks vcmad (the
 *               code before §4.9), so two wake-ups of vcmad per op
 *   free_sync   vcma_alloc() then vcma_free_sync(): the old two exchanges per op
 *   pipelined   FREE of the previous region and ALLOC of the next in one kick
 *               (vcma_submit_*): one exchange per op
 * each again with polling (vcmad poll_us, VCMA_SPIN_US), and throughput from 8 guest
 * processes at once.
 *
 * Then the floor and the blocking row again with the placement fixed (sched_setaffinity),
 * since in a VM it decides the floor: both processes on one vCPU (a wake-up is a context
 * switch, ~5-7 us a round trip on the 2-core VM this was written on), and on two (a
 * wake-up is an IPI to a vCPU that may be halted, ~40-100 us there). Unpinned, the
 * scheduler picks either, and not always the same for the floor and the vcma rows of
 * one run. Needs 2 CPUs; --no-placement skips it.
 *
 * vcmad is started as a child with a temporary runtime directory; its path is
 * --vcmad (default: ../hv/vcmad next to this binary).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vcma.h"

#define MiB (1ull << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct dist {
	double p50, p99, mean;
};

static struct dist summarize(uint64_t *v, size_t n)
{
	struct dist d = { 0, 0, 0 };
	double sum = 0;

	qsort(v, n, sizeof(*v), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)v[i];
	d.p50 = (double)v[n / 2] / 1000.0;
	d.p99 = (double)v[(size_t)((double)n * 0.99)] / 1000.0;
	d.mean = sum / (double)n / 1000.0;
	return d;
}

/* vcmad binds its socket before it listens: the file may exist a moment before an
 * attach can succeed */
static int attach(const char *sock, const char *name, struct vcma **v)
{
	int rc = -ECONNREFUSED;

	for (int i = 0; i < 200 && (rc == -ECONNREFUSED || rc == -ENOENT); i++) {
		if (i)
			usleep(10000);
		rc = vcma_attach(sock, name, NULL, v);
	}
	return rc;
}

static void die(const char *what)
{
	fprintf(stderr, "bench-rtt: %s: %s\n", what, strerror(errno));
	exit(1);
}

static cpu_set_t all_cpus; /* the affinity the bench started with */

/* Run on CPU cpu only, or (cpu < 0) where the bench started. */
static void pin(int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	if (cpu >= 0)
		CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof(cpu_set_t), cpu >= 0 ? &one : &all_cpus))
		die("sched_setaffinity");
}

/* Floor: parent writes a, child reads a and writes b, parent reads b. The parent runs
 * on CPU me and the child on CPU peer (-1: unpinned). */
static struct dist floor_eventfd(size_t iters, size_t warm, int me, int peer)
{
	int a = eventfd(0, EFD_CLOEXEC), b = eventfd(0, EFD_CLOEXEC);
	uint64_t *t = calloc(iters, sizeof(*t)), v = 1;
	pid_t pid;

	if (a < 0 || b < 0 || !t)
		die("eventfd");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		if (peer >= 0)
			pin(peer);
		for (size_t i = 0; i < iters + warm; i++) {
			if (read(a, &v, sizeof(v)) != sizeof(v) || write(b, &v, sizeof(v)) != sizeof(v))
				_exit(1);
		}
		_exit(0);
	}
	if (me >= 0)
		pin(me);
	for (size_t i = 0; i < iters + warm; i++) {
		uint64_t t0 = now_ns();

		if (write(a, &v, sizeof(v)) != sizeof(v) || read(b, &v, sizeof(v)) != sizeof(v))
			die("ping-pong");
		if (i >= warm)
			t[i - warm] = now_ns() - t0;
	}
	waitpid(pid, NULL, 0);
	if (me >= 0)
		pin(-1);
	close(a);
	close(b);
	struct dist d = summarize(t, iters);

	free(t);
	return d;
}

static struct dist vcma_blocking(const char *sock, size_t iters, size_t warm, bool sync)
{
	struct vcma *v;
	uint64_t *t = calloc(iters, sizeof(*t));
	int rc = attach(sock, sync ? "bench-sync" : "bench-blocking", &v);

	if (rc || !t) {
		fprintf(stderr, "bench-rtt: attach: %s\n", vcma_strerror(rc));
		exit(1);
	}
	for (size_t i = 0; i < iters + warm; i++) {
		struct vcma_region_info r;
		uint64_t t0 = now_ns();

		rc = vcma_alloc(v, MiB, 0, 0, NULL, &r);
		if (!rc)
			rc = sync ? vcma_free_sync(v, r.handle) : vcma_free(v, r.handle);
		if (rc) {
			fprintf(stderr, "bench-rtt: alloc/free: %s\n", vcma_strerror(rc));
			exit(1);
		}
		if (i >= warm)
			t[i - warm] = now_ns() - t0;
	}
	rc = vcma_flush(v, NULL);
	if (rc) {
		fprintf(stderr, "bench-rtt: a posted free failed: %s\n", vcma_strerror(rc));
		exit(1);
	}
	vcma_detach(v);
	struct dist d = summarize(t, iters);

	free(t);
	return d;
}

/* Wait until `want` completions arrived; returns the last ALLOC's handle. */
static uint64_t harvest(struct vcma *v, int want, uint64_t *handle)
{
	struct vcma_completion c[4];
	int got = 0;

	while (got < want) {
		struct pollfd p = { .fd = vcma_fd(v), .events = POLLIN };
		int n = vcma_complete(v, c, 4);

		if (n < 0) {
			fprintf(stderr, "bench-rtt: complete: %s\n", vcma_strerror(n));
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			if (c[i].result) {
				fprintf(stderr, "bench-rtt: pipelined op %llu: %s\n", (unsigned long long)c[i].cookie,
					vcma_strerror(c[i].result));
				exit(1);
			}
			if (c[i].cookie & 1)
				*handle = c[i].region.handle;
		}
		got += n;
		if (got < want && !n && poll(&p, 1, 10000) <= 0) {
			fprintf(stderr, "bench-rtt: no completion within 10 s\n");
			exit(1);
		}
	}
	return *handle;
}

static struct dist vcma_pipelined(const char *sock, size_t iters, size_t warm)
{
	struct vcma *v;
	uint64_t *t = calloc(iters, sizeof(*t)), handle = 0;
	int rc = attach(sock, "bench-pipelined", &v);

	if (rc || !t) {
		fprintf(stderr, "bench-rtt: attach: %s\n", vcma_strerror(rc));
		exit(1);
	}
	/* cookies: odd = ALLOC, even = FREE */
	if (vcma_submit_alloc(v, MiB, 0, NULL, 1))
		exit(1);
	harvest(v, 1, &handle);
	for (size_t i = 0; i < iters + warm; i++) {
		uint64_t t0 = now_ns(), prev = handle;

		rc = vcma_submit_free(v, prev, 2);
		if (!rc)
			rc = vcma_submit_alloc(v, MiB, 0, NULL, 3);
		if (rc) {
			fprintf(stderr, "bench-rtt: submit: %s\n", vcma_strerror(rc));
			exit(1);
		}
		harvest(v, 2, &handle);
		if (i >= warm)
			t[i - warm] = now_ns() - t0;
	}
	vcma_free(v, handle);
	vcma_detach(v);
	struct dist d = summarize(t, iters);

	free(t);
	return d;
}

/* nguests processes, each allocating and freeing 1 MiB for `secs`; ops/s in total. */
static double throughput(const char *sock, int nguests, double secs)
{
	pid_t pid[64];
	int pipes[64][2];
	double total = 0;

	for (int g = 0; g < nguests; g++) {
		if (pipe(pipes[g]))
			die("pipe");
		pid[g] = fork();
		if (pid[g] < 0)
			die("fork");
		if (pid[g] == 0) {
			char name[32];
			struct vcma *v;
			uint64_t end = now_ns() + (uint64_t)(secs * 1e9), ops = 0;

			snprintf(name, sizeof(name), "tput%d", g);
			if (attach(sock, name, &v))
				_exit(1);
			while (now_ns() < end) {
				struct vcma_region_info r;

				if (vcma_alloc(v, MiB, 0, 0, NULL, &r) || vcma_free(v, r.handle))
					_exit(1);
				ops++;
			}
			vcma_detach(v);
			if (write(pipes[g][1], &ops, sizeof(ops)) != sizeof(ops))
				_exit(1);
			_exit(0);
		}
		close(pipes[g][1]);
	}
	for (int g = 0; g < nguests; g++) {
		uint64_t ops = 0;
		int st;

		if (read(pipes[g][0], &ops, sizeof(ops)) != sizeof(ops))
			fprintf(stderr, "bench-rtt: guest %d failed\n", g);
		close(pipes[g][0]);
		waitpid(pid[g], &st, 0);
		total += (double)ops;
	}
	return total / secs;
}

/* Start vcmad (poll_us, on CPU cpu unless -1) with its runtime in dir and its state
 * in state ("none": not recorded); its socket's path in sock. Exits if it does not
 * come up. */
static pid_t start_vcmad(const char *vcmad, const char *dir, const char *state, int poll_us, int cpu, char *conf,
			 size_t conflen, char *sock, size_t socklen)
{
	pid_t dpid;
	FILE *f;

	snprintf(conf, conflen, "%s/vcmad.conf", dir);
	snprintf(sock, socklen, "%s/run/vcmad.sock", dir);
	f = fopen(conf, "w");
	if (!f)
		die(conf);
	fprintf(f, "[daemon]\nruntime_dir = %s/run\nstate_dir = %s\npoll_us = %d\n[limits]\nrequest_rate = 10000000\n"
		   "request_burst = 1000000\n[machine]\nmemory = 1G\n[pool main]\nsize = 256M\n",
		dir, state, poll_us);
	fclose(f);
	dpid = fork();
	if (dpid < 0)
		die("fork");
	if (dpid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, 2);
		if (cpu >= 0)
			pin(cpu);
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* a bench that exits early takes vcmad along */
		execl(vcmad, vcmad, "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && access(sock, F_OK); i++)
		usleep(10000);
	if (access(sock, F_OK)) {
		fprintf(stderr, "bench-rtt: vcmad (%s) did not start\n", vcmad);
		kill(dpid, SIGKILL);
		exit(1);
	}
	return dpid;
}

static void stop_vcmad(pid_t dpid)
{
	kill(dpid, SIGTERM);
	waitpid(dpid, NULL, 0);
}

static void row(const char *label, const struct dist *d, const struct dist *floor)
{
	if (d == floor)
		printf("%-56s %9.2f %9.2f %9.2f %12s\n", label, d->p50, d->p99, d->mean, "1.00x");
	else
		printf("%-56s %9.2f %9.2f %9.2f %11.2fx\n", label, d->p50, d->p99, d->mean, d->p50 / floor->p50);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vcmad", required_argument, NULL, 'd' },
		{ "iterations", required_argument, NULL, 'n' },
		{ "guests", required_argument, NULL, 'g' },
		{ "seconds", required_argument, NULL, 's' },
		{ "quick", no_argument, NULL, 'q' },
		{ "no-placement", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char vcmad[PATH_MAX], dir[] = "/tmp/vcma-bench-XXXXXX", conf[PATH_MAX], sock[PATH_MAX + 32];
	size_t iters = 100000, warm = 2000;
	int nguests = 8, c, cpu[2] = { -1, -1 };
	bool placement = true;
	double secs = 3;
	pid_t dpid;

	snprintf(vcmad, sizeof(vcmad), "%s", argv[0]);
	{
		char *slash = strrchr(vcmad, '/');

		snprintf(slash ? slash + 1 : vcmad, sizeof(vcmad) - (size_t)(slash ? slash + 1 - vcmad : 0),
			 "../hv/vcmad");
	}
	while ((c = getopt_long(argc, argv, "d:n:g:s:qPh", opts, NULL)) != -1) {
		switch (c) {
		case 'd': snprintf(vcmad, sizeof(vcmad), "%s", optarg); break;
		case 'n': iters = strtoull(optarg, NULL, 10); break;
		case 'g': nguests = atoi(optarg); break;
		case 's': secs = atof(optarg); break;
		case 'q': iters = 5000; warm = 500; secs = 1; break;
		case 'P': placement = false; break;
		case 'h':
			printf("usage: bench-rtt [--vcmad PATH] [--iterations N] [--guests N] [--seconds S] [--quick] "
			       "[--no-placement]\n");
			return 0;
		default: return 2;
		}
	}
	if (iters < 100 || nguests < 1 || nguests > 64 || secs <= 0) {
		fprintf(stderr, "bench-rtt: bad arguments\n");
		return 2;
	}
	/* the bench's vcmad allows 10M requests/s: libvcma need not pace itself */
	setenv("VCMA_RATE", "0", 0);
	if (!mkdtemp(dir))
		die("mkdtemp");
	if (sched_getaffinity(0, sizeof(all_cpus), &all_cpus))
		die("sched_getaffinity");
	for (int i = 0, n = 0; i < CPU_SETSIZE && n < 2; i++)
		if (CPU_ISSET(i, &all_cpus))
			cpu[n++] = i;
	if (cpu[1] < 0)
		placement = false;

	struct dist fl = floor_eventfd(iters, warm, -1, -1);
	struct dist bl[2], sy[2], pl[2], kicked;
	double tp1 = 0, tpn = 0;

	/* pass 0: both sides block; pass 1: vcmad polls 50 us after serving and
	 * libvcma spins 50 us before blocking (adaptive polling) */
	for (int pass = 0; pass < 2; pass++) {
		if (pass)
			setenv("VCMA_SPIN_US", "50", 1);
		dpid = start_vcmad(vcmad, dir, "none", pass ? 50 : 0, -1, conf, sizeof(conf), sock, sizeof(sock));
		bl[pass] = vcma_blocking(sock, iters, warm, false);
		if (!pass) {
			setenv("VCMA_LAZY_FREE", "0", 1);
			kicked = vcma_blocking(sock, iters, warm, false);
			unsetenv("VCMA_LAZY_FREE");
		}
		sy[pass] = vcma_blocking(sock, iters, warm, true);
		pl[pass] = vcma_pipelined(sock, iters, warm);
		if (!pass) {
			tp1 = throughput(sock, 1, secs);
			tpn = throughput(sock, nguests, secs);
		}
		stop_vcmad(dpid);
		unsetenv("VCMA_SPIN_US");
	}

	/* the placement fixed: [0] bench, floor's child and vcmad on one CPU, [1] the
	 * floor's child and vcmad on another CPU than the bench */
	size_t piters = iters / 5 < 100 ? 100 : iters / 5;
	struct dist pfl[2], pbl[2];

	for (int two = 0; placement && two < 2; two++) {
		pfl[two] = floor_eventfd(piters, warm, cpu[0], cpu[two]);
		dpid = start_vcmad(vcmad, dir, "none", 0, cpu[two], conf, sizeof(conf), sock, sizeof(sock));
		pin(cpu[0]);
		pbl[two] = vcma_blocking(sock, piters, warm, false);
		pin(-1);
		stop_vcmad(dpid);
	}

	/* durability (vcmad(8) STATE): the same blocking op and throughput with ownership
	 * recorded, on the disk (/var/tmp: ext4 here, as /var/lib/vcma) and on tmpfs */
	static const char *const where[] = { "none", "/var/tmp", "/dev/shm" };
	struct dist dbl[3];
	double dtp1[3], dtpn[3];
	char states[3][PATH_MAX];

	for (int w = 0; w < 3; w++) {
		if (w) {
			snprintf(states[w], sizeof(states[w]), "%s/vcma-bench-state-XXXXXX", where[w]);
			if (!mkdtemp(states[w]))
				die(states[w]);
		} else {
			snprintf(states[w], sizeof(states[w]), "none");
		}
		dpid = start_vcmad(vcmad, dir, states[w], 0, -1, conf, sizeof(conf), sock, sizeof(sock));
		dbl[w] = vcma_blocking(sock, iters / 10 < 1000 ? iters : iters / 10, warm, false);
		dtp1[w] = throughput(sock, 1, secs);
		dtpn[w] = throughput(sock, nguests, secs);
		stop_vcmad(dpid);
		if (w) {
			char cmd[PATH_MAX + 16];

			snprintf(cmd, sizeof(cmd), "rm -rf '%s'", states[w]);
			if (system(cmd))
				fprintf(stderr, "bench-rtt: cannot remove %s\n", states[w]);
		}
	}
	unlink(conf);
	rmdir(dir);

	printf("bench-rtt: 1 MiB ALLOC+FREE through libvcma to vcmad (sim backend), %zu ops per row\n", iters);
	printf("%-56s %9s %9s %9s %12s\n", "", "p50 us", "p99 us", "mean us", "p50 / floor");
	row("floor: eventfd ping-pong, 2 processes", &fl, &fl);
	for (int pass = 0; pass < 2; pass++) {
		const char *how = pass ? " + polling" : "";
		char label[80];

		snprintf(label, sizeof(label), "vcma blocking%s: alloc, then free (posted, 1 trip)", how);
		row(label, &bl[pass], &fl);
		if (!pass)
			row("  the same, each posted FREE kicked (VCMA_LAZY_FREE=0)", &kicked, &fl);
		snprintf(label, sizeof(label), "vcma blocking%s: alloc, then free_sync (2 trips)", how);
		row(label, &sy[pass], &fl);
		snprintf(label, sizeof(label), "vcma pipelined%s: free+alloc per kick (1 trip)", how);
		row(label, &pl[pass], &fl);
	}
	printf("(+ polling: vcmad poll_us = 50, libvcma VCMA_SPIN_US = 50)\n");
	printf("blocking alloc+free (no polling): p50 %.2f us = %.2fx the floor's %.2f us in this run, target <= 1.20x: "
	       "%s\n",
	       bl[0].p50, bl[0].p50 / fl.p50, fl.p50, bl[0].p50 <= 1.2 * fl.p50 ? "PASS" : "MISS");
	printf("target p50 <= 1.2x floor: blocking %s, pipelined %s, blocking + polling %s, pipelined + polling %s\n",
	       bl[0].p50 <= 1.2 * fl.p50 ? "PASS" : "MISS", pl[0].p50 <= 1.2 * fl.p50 ? "PASS" : "MISS",
	       bl[1].p50 <= 1.2 * fl.p50 ? "PASS" : "MISS", pl[1].p50 <= 1.2 * fl.p50 ? "PASS" : "MISS");
	printf("throughput (blocking alloc+free, posted, no polling): 1 guest %.0f ops/s, %d guests at once %.0f ops/s\n", tp1,
	       nguests, tpn);
	printf("durability: blocking alloc+free (posted, no polling) with ownership recorded (vcmad state_dir), "
	       "%zu ops per row; ratio to not recorded, same run:\n", iters / 10 < 1000 ? iters : iters / 10);
	printf("%-44s %9s %9s %8s %14s %14s %7s\n", "state_dir", "p50 us", "p99 us", "p50 x", "1 guest ops/s",
	       "N guests ops/s", "x");
	for (int w = 0; w < 3; w++) {
		static const char *const what[] = { "none (not recorded)", "on disk (/var/tmp, ext4; one fsync a turn)",
						    "on tmpfs (/dev/shm)" };

		printf("%-44s %9.2f %9.2f %7.2fx %14.0f %14.0f %6.2fx\n", what[w], dbl[w].p50, dbl[w].p99,
		       dbl[w].p50 / dbl[0].p50, dtp1[w], dtpn[w], dtpn[w] / (dtpn[0] > 0 ? dtpn[0] : 1));
	}
	printf("(ops/s: alloc+free pairs per second, 1 guest and N = %d guests at once; x: N guests' ops/s to not "
	       "recorded; one commit covers every guest served in a loop turn)\n", nguests);
	if (placement) {
		printf("placement fixed (sched_setaffinity), %zu ops per row, no polling; p50 / the floor above it:\n",
		       piters);
		for (int two = 0; two < 2; two++) {
			char label[80];

			if (two)
				snprintf(label, sizeof(label), "two vCPUs (%d, %d): floor", cpu[0], cpu[1]);
			else
				snprintf(label, sizeof(label), "one vCPU (%d): floor", cpu[0]);
			row(label, &pfl[two], &pfl[two]);
			snprintf(label, sizeof(label), two ? "two vCPUs: vcma blocking, alloc + free (posted)"
							   : "one vCPU: vcma blocking, alloc + free (posted)");
			row(label, &pbl[two], &pfl[two]);
		}
	}
	return 0;
}
