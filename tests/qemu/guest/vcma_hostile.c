// SPDX-License-Identifier: MIT
/*
 * vcma_hostile.c - a hostile program in a QEMU guest: it takes an ivshmem device
 * away from vcma.ko, maps its BARs through sysfs and writes garbage to the request
 * ring, then rings the doorbell. vcmad must cut that device off (its control page
 * goes DEAD) and go on serving the others.
 *
 * usage: vcma-hostile PCI_ADDR        e.g. 0000:00:05.0
 * Prints HOSTILE-STATE <state>; exits 0 if the state became DEAD (4).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vcma_proto.h"

static void *map_bar(const char *addr, int bar, size_t len)
{
	char path[128];
	void *p;
	int fd;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource%d", addr, bar);
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	close(fd);
	return p;
}

int main(int argc, char **argv)
{
	volatile uint32_t *regs;
	struct vcma_ctrl c;
	volatile struct vcma_ctrl *ctrl;
	struct vcma_ring_hdr *rh;
	uint8_t *shm;
	uint32_t st = 0;
	char path[128];
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: vcma-hostile PCI_ADDR\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* take the device from the driver, if it has it */
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", argv[1]);
	if (access(path, F_OK) == 0) {
		fd = open("/sys/bus/pci/drivers/vcma/unbind", O_WRONLY);
		if (fd < 0 || write(fd, argv[1], strlen(argv[1])) < 0) {
			perror("unbind");
			return 1;
		}
		close(fd);
	}
	regs = map_bar(argv[1], 0, 4096);
	shm = map_bar(argv[1], 2, 1 << 20);
	ctrl = (volatile struct vcma_ctrl *)shm;
	memcpy(&c, (const void *)shm, sizeof(c));
	if (c.magic != VCMA_PROTO_MAGIC || c.req_off % 4096 || c.req_off >= (1 << 20) - 4096) {
		printf("HOSTILE-STATE bad-layout\n");
		return 1;
	}
	rh = (struct vcma_ring_hdr *)(shm + c.req_off);
	srand(1);
	/* garbage in every slot, an unknown op among it ... */
	for (uint32_t i = 0; i < 64 * c.req_slots && c.req_off + 64 + i < (1u << 20); i++)
		shm[c.req_off + 64 + i] = (uint8_t)rand();
	((union vcma_slot *)(rh + 1))[0].req.op = 0x7777;
	/* ... and a request index far beyond what the ring holds */
	__atomic_store_n(&rh->req_prod, rh->rsp_prod + 1000, __ATOMIC_RELEASE);
	regs[3] = 0; /* doorbell: (peer 0 << 16) | vector 0 */
	for (int i = 0; i < 1000; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		st = ctrl->state;
		if (st == VCMA_STATE_DEAD)
			break;
		nanosleep(&ts, NULL);
	}
	printf("HOSTILE-STATE %u\n", st);
	return st == VCMA_STATE_DEAD ? 0 : 1;
}
