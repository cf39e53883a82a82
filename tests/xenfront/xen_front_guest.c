/*
 * xen_front_guest.c - the guest side of test_xen_frontend.py, in a PV domU with
 * vcma.ko: one region through /dev/vcma, written with the test pattern through its
 * dma-buf mapping and re-read through a second one.
 *
 * usage: xen-front-guest alloc MIB         allocate, write, re-read, FREE
 *        xen-front-guest eio MIB           the allocation must fail with EIO
 *        xen-front-guest hold MIB GOFILE   allocate and write, then wait for GOFILE
 *                                          (the device goes away meanwhile) and say
 *                                          what the mapping and the file do then
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vcma_test_pattern.h"
#include "vcma_uapi.h"

static sigjmp_buf jb;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(jb, 1);
}

/* After the device went away: the mapping, a region QUERY, a pool QUERY, an ALLOC. */
static void after(int vfd, const struct vcma_ioc_alloc *a, volatile unsigned char *p)
{
	struct vcma_ioc_query q = { .handle = a->handle };
	struct vcma_ioc_alloc b = { .length = 1 << 20 };
	int rc, e;

	signal(SIGBUS, on_sigbus);
	if (sigsetjmp(jb, 1))
		printf("XG-AFTER mapping=sigbus\n");
	else
		printf("XG-AFTER mapping=readable:%u\n", p[0]);
	rc = ioctl(vfd, VCMA_IOC_QUERY, &q);
	printf("XG-AFTER region_query=%d\n", rc ? errno : 0);
	memset(&q, 0, sizeof(q));
	rc = ioctl(vfd, VCMA_IOC_QUERY, &q);
	e = errno;
	printf("XG-AFTER pool_query=%d\n", rc ? e : 0);
	rc = ioctl(vfd, VCMA_IOC_ALLOC, &b);
	e = errno;
	printf("XG-AFTER alloc=%d\n", rc ? e : 0);
}

int main(int argc, char **argv)
{
	struct vcma_ioc_alloc a = { 0 };
	struct vcma_ioc_free f = { 0 };
	struct stat st;
	uint64_t *want;
	void *p;
	int vfd;

	if (argc < 3 || (!strcmp(argv[1], "hold") && argc < 4))
		return 2;
	vfd = open("/dev/vcma", O_RDWR | O_CLOEXEC);
	if (vfd < 0) {
		printf("XG open errno=%d\n", errno);
		return 1;
	}
	a.length = strtoull(argv[2], NULL, 0) << 20;
	if (ioctl(vfd, VCMA_IOC_ALLOC, &a)) {
		printf("XG alloc errno=%d\n", errno);
		return !strcmp(argv[1], "eio") && errno == EIO ? 0 : 1;
	}
	if (!strcmp(argv[1], "eio")) {
		printf("XG alloc succeeded: handle=0x%llx\n", (unsigned long long)a.handle);
		return 1;
	}
	p = mmap(NULL, a.size, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd, 0);
	if (p == MAP_FAILED) {
		printf("XG mmap errno=%d\n", errno);
		return 1;
	}
	vcma_tp_fill(p, a.size);
	munmap(p, a.size);
	p = mmap(NULL, a.size, PROT_READ, MAP_SHARED, a.fd, 0);
	want = malloc(a.size);
	if (p == MAP_FAILED || !want) {
		printf("XG second mmap errno=%d\n", errno);
		return 1;
	}
	vcma_tp_fill(want, a.size);
	printf("XG-REGION handle=0x%llx size=%llu dma=0x%llx offset=0x%llx fnv=0x%016llx expect=0x%016llx\n",
	       (unsigned long long)a.handle, (unsigned long long)a.size, (unsigned long long)a.dma_addr,
	       (unsigned long long)a.offset, (unsigned long long)vcma_tp_fnv(VCMA_TP_FNV0, p, a.size),
	       (unsigned long long)vcma_tp_fnv(VCMA_TP_FNV0, want, a.size));
	free(want);
	fflush(stdout);
	if (!strcmp(argv[1], "hold")) {
		printf("XG-HOLD\n");
		fflush(stdout);
		while (stat(argv[3], &st))
			usleep(100000);
		after(vfd, &a, p);
		return 0;
	}
	munmap(p, a.size);
	close(a.fd);
	f.handle = a.handle;
	if (ioctl(vfd, VCMA_IOC_FREE, &f)) {
		printf("XG free errno=%d\n", errno);
		return 1;
	}
	return 0;
}
