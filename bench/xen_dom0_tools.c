// SPDX-License-Identifier: MIT
/*
 * xen_dom0_tools.c - bench-xen.py's measuring tools in dom0 (built by it, with
 * libxenctrl and libxenstore):
 *
 *   timeit CMD [ARG]...   run CMD; print "TIMEIT ms=... rc=..." on stderr
 *   balloon DOMID KIB     the balloon alone, the baseline of vcmad's take-back: lower
 *                         DOMID's memory/target by KIB, poll its tot_pages through
 *                         libxenctrl every millisecond (vcmad looks every 10 ms) until
 *                         it is KIB lower, print "TIMEIT ms=... rc=0" (rc=1 after 10 s),
 *                         then put the target back and wait until it has grown again
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xenstore.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int timeit(char **argv)
{
	double t0 = now_ms();
	int st = 0;
	pid_t p = fork();

	if (p < 0)
		return 127;
	if (!p) {
		execvp(argv[0], argv);
		_exit(127);
	}
	waitpid(p, &st, 0);
	fprintf(stderr, "TIMEIT ms=%.2f rc=%d\n", now_ms() - t0, WIFEXITED(st) ? WEXITSTATUS(st) : 128);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static long tot_pages(xc_interface *xch, uint32_t dom)
{
	xc_domaininfo_t info;

	if (xc_domain_getinfolist(xch, dom, 1, &info) != 1 || info.domain != dom)
		return -1;
	return (long)info.tot_pages;
}

static int set_target(struct xs_handle *xs, const char *path, unsigned long kib)
{
	char v[32];

	snprintf(v, sizeof(v), "%lu", kib);
	return xs_write(xs, XBT_NULL, path, v, strlen(v)) ? 0 : -1;
}

/* until tot_pages is at most `want` (down) or at least `want` (up), or 10 s */
static int wait_pages(xc_interface *xch, uint32_t dom, long want, int down)
{
	double end = now_ms() + 10000;

	for (;;) {
		long t = tot_pages(xch, dom);

		if (t < 0)
			return -1;
		if (down ? t <= want : t >= want)
			return 0;
		if (now_ms() > end)
			return -1;
		usleep(1000);
	}
}

static int balloon(uint32_t dom, unsigned long kib)
{
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	struct xs_handle *xs = xs_open(0);
	char path[64], *v;
	unsigned int len;
	unsigned long target;
	long start;
	double t0;
	int rc;

	if (!xch || !xs) {
		fprintf(stderr, "balloon: cannot open libxenctrl or xenstore\n");
		return 1;
	}
	snprintf(path, sizeof(path), "/local/domain/%u/memory/target", dom);
	v = xs_read(xs, XBT_NULL, path, &len);
	if (!v || (target = strtoul(v, NULL, 10)) <= kib || (start = tot_pages(xch, dom)) < 0) {
		fprintf(stderr, "balloon: domain %u has no target above %lu KiB\n", dom, kib);
		return 1;
	}
	free(v);
	t0 = now_ms();
	if (set_target(xs, path, target - kib))
		return 1;
	rc = wait_pages(xch, dom, start - (long)(kib / 4), 1);
	fprintf(stderr, "TIMEIT ms=%.2f rc=%d\n", now_ms() - t0, rc ? 1 : 0);
	set_target(xs, path, target);
	wait_pages(xch, dom, start, 0);
	xs_close(xs);
	xc_interface_close(xch);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "timeit"))
		return timeit(argv + 2);
	if (argc == 4 && !strcmp(argv[1], "balloon"))
		return balloon((uint32_t)strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
	fprintf(stderr, "usage: xen-dom0-tools timeit CMD [ARG]... | balloon DOMID KIB\n");
	return 2;
}
