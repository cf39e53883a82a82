// SPDX-License-Identifier: MIT
/* The guest's RAM workload for bench/compare/run_kernel.py: maps SIZE MiB of anonymous
 * memory, touches every page, prints "WORKLOAD-READY", then keeps rewriting pages
 * until killed. usage: workload MIB */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64, n = mib << 20, i;
	unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned long x = 1;

	if (m == MAP_FAILED) {
		perror("workload: mmap");
		return 1;
	}
	for (i = 0; i < n; i += 4096)
		m[i] = (unsigned char)i;
	printf("WORKLOAD-READY %zu MiB\n", mib);
	fflush(stdout);
	for (;;) {
		x = x * 6364136223846793005ul + 1442695040888963407ul;
		m[(x >> 20) % (n / 4096) * 4096] ^= 1;
	}
}
