// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_kapi_test.c - a guest driver using vcma.ko's in-kernel API the way it would
 * use dma_alloc_coherent(): at load it allocates a region, fills it with the test
 * pattern and prints its hash (the host compares it with vcmactl hash); at unload it
 * frees the region.
 */
#include <linux/module.h>
#include <linux/slab.h>

#include "vcma_kapi.h"

static unsigned int size_mb = 1;
module_param(size_mb, uint, 0444);
MODULE_PARM_DESC(size_mb, "region size in MiB (default 1)");

static struct vcma_region *region;

static u64 splitmix64(u64 x)
{
	u64 z = x + 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int __init kapi_test_init(void)
{
	size_t size = (size_t)size_mb << 20;
	u64 seed = size ^ 0x9e3779b97f4a7c15ull, h = 0xcbf29ce484222325ull;
	u64 *w;
	u8 *b;

	region = vcma_region_alloc(size, 0, NULL);
	if (IS_ERR(region))
		return PTR_ERR(region);
	w = vcma_region_vaddr(region);
	for (size_t i = 0; i < size / 8; i++)
		w[i] = cpu_to_le64(splitmix64(seed + i));
	b = vcma_region_vaddr(region);
	for (size_t i = 0; i < size; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	pr_info("vcma_kapi_test: handle=0x%llx size=%zu dma=0x%llx fnv=0x%016llx\n", vcma_region_handle(region),
		vcma_region_size(region), (unsigned long long)vcma_region_dma_addr(region), h);
	return 0;
}

static void __exit kapi_test_exit(void)
{
	vcma_region_free(region);
	pr_info("vcma_kapi_test: freed\n");
}

module_init(kapi_test_init);
module_exit(kapi_test_exit);
MODULE_DESCRIPTION("vcma in-kernel API test: a 1 MiB region with a known pattern");
MODULE_LICENSE("GPL");
