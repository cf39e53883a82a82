// SPDX-License-Identifier: GPL-2.0
/*
 * contig_mod - Linux's own contiguous allocator (alloc_contig_range(), the engine
 * under CMA and virtio-mem) measured in a guest, for bench/compare. At load time:
 *
 *  1. the copy floor in this guest: 8 MiB copied page by page (copy_page) to
 *     scattered destination pages, ns per MiB (median of 11);
 *  2. optionally pins pin_permille of the pages in use in ZONE_MOVABLE, in clusters
 *     of 16 pages, by taking a reference on them (what GUP does; migration cannot
 *     move a page while someone else holds a reference);
 *  3. for each of 1, 2, 4 and 8 MiB, rounds times: walks ZONE_MOVABLE's aligned
 *     windows (size-aligned, capped at 1 MiB as CMA is) from a random start, calls
 *     alloc_contig_range() on each until one succeeds or the zone is exhausted, frees
 *     the range, and records the time of the successful call and the windows tried;
 *  4. drops the pins and prints one line per size: the successful call's time and,
 *     req_, the request's from its first window (failed windows included):
 *     CONTIG size_mib=S ok=N fail=N windows=N p50_ns= p99_ns= max_ns= ns_per_mib_p50=
 *     req_ns_per_mib_p50=
 *
 * The module stays loaded (rmmod it); it holds nothing after init.
 */
#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/vmalloc.h>

static unsigned int rounds = 20;
module_param(rounds, uint, 0444);
MODULE_PARM_DESC(rounds, "allocations per size");
static unsigned int pin_permille;
module_param(pin_permille, uint, 0444);
MODULE_PARM_DESC(pin_permille, "pages in use in ZONE_MOVABLE to pin, per mille");
static char *tag = "run";
module_param(tag, charp, 0444);

#define CM_PIN_CLUSTER 16
#define CM_FLOOR_PAGES 2048 /* 8 MiB */
#define CM_FLOOR_REPS 11
#define CM_MAX_ROUNDS 256

static struct page **cm_pins;
static unsigned long cm_npins;

static int cm_cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static u64 cm_floor_ns_per_mib(void)
{
	struct page **src, **dst;
	u64 t[CM_FLOOR_REPS], res = 0;
	int i, r;

	src = kvcalloc(CM_FLOOR_PAGES, sizeof(*src), GFP_KERNEL);
	dst = kvcalloc(CM_FLOOR_PAGES, sizeof(*dst), GFP_KERNEL);
	if (!src || !dst)
		goto out;
	for (i = 0; i < CM_FLOOR_PAGES; i++) {
		src[i] = alloc_page(GFP_KERNEL);
		dst[i] = alloc_page(GFP_KERNEL);
		if (!src[i] || !dst[i])
			goto out_pages;
		memset(page_address(src[i]), 0x5a, PAGE_SIZE);
		memset(page_address(dst[i]), 0, PAGE_SIZE);
	}
	for (r = 0; r < CM_FLOOR_REPS; r++) {
		u64 t0 = ktime_get_ns();

		for (i = 0; i < CM_FLOOR_PAGES; i++)
			copy_page(page_address(dst[(i * 2654435761u) % CM_FLOOR_PAGES]), page_address(src[i]));
		t[r] = (ktime_get_ns() - t0) / (CM_FLOOR_PAGES * PAGE_SIZE >> 20);
		cond_resched();
	}
	sort(t, CM_FLOOR_REPS, sizeof(t[0]), cm_cmp_u64, NULL);
	res = t[CM_FLOOR_REPS / 2];
out_pages:
	for (i = 0; i < CM_FLOOR_PAGES; i++) {
		if (src[i])
			__free_page(src[i]);
		if (dst[i])
			__free_page(dst[i]);
	}
out:
	kvfree(src);
	kvfree(dst);
	return res;
}

static struct zone *cm_movable_zone(void)
{
	int nid;

	for_each_online_node(nid) {
		struct zone *z = &NODE_DATA(nid)->node_zones[ZONE_MOVABLE];

		if (populated_zone(z))
			return z;
	}
	return NULL;
}

/* A page in use by someone (the workload): on the LRU with a reference. */
static bool cm_in_use(unsigned long pfn)
{
	struct page *p = pfn_to_online_page(pfn);

	return p && PageLRU(p) && page_count(p) > 0;
}

static void cm_pin(struct zone *z)
{
	unsigned long pfn, end = zone_end_pfn(z), used = 0, want, max;

	for (pfn = z->zone_start_pfn; pfn < end; pfn++)
		used += cm_in_use(pfn);
	want = used * pin_permille / 1000;
	max = want + CM_PIN_CLUSTER;
	cm_pins = kvcalloc(max, sizeof(*cm_pins), GFP_KERNEL);
	if (!cm_pins)
		return;
	/* each cluster start is drawn at random among the zone's 16-page clusters */
	while (cm_npins < want) {
		unsigned long c = get_random_u32() % ((end - z->zone_start_pfn) / CM_PIN_CLUSTER), i;

		for (i = 0; i < CM_PIN_CLUSTER && cm_npins < max; i++) {
			pfn = z->zone_start_pfn + c * CM_PIN_CLUSTER + i;
			if (cm_in_use(pfn)) {
				struct page *p = pfn_to_online_page(pfn);

				if (get_page_unless_zero(p))
					cm_pins[cm_npins++] = p;
			}
		}
		cond_resched();
	}
	pr_info("CONTIG-PINS tag=%s used_pages=%lu pinned_pages=%lu\n", tag, used, cm_npins);
}

static void cm_unpin(void)
{
	while (cm_npins)
		put_page(cm_pins[--cm_npins]);
	kvfree(cm_pins);
	cm_pins = NULL;
}

static void cm_size(struct zone *z, unsigned int mib)
{
	unsigned long n = (unsigned long)mib << (20 - PAGE_SHIFT);
	unsigned long align = min_t(unsigned long, n, 1ul << (20 - PAGE_SHIFT));
	unsigned long first = ALIGN(z->zone_start_pfn, align), end = zone_end_pfn(z);
	unsigned long nwin = end > first + n ? (end - first - n) / align + 1 : 0;
	unsigned int r, ok = 0, fail = 0, k = 0;
	unsigned long windows = 0;
	u64 *t = kcalloc(rounds, sizeof(*t), GFP_KERNEL), *q = kcalloc(rounds, sizeof(*q), GFP_KERNEL);

	if (!t || !q || !nwin)
		goto out;
	for (r = 0; r < rounds; r++) {
		unsigned long start = get_random_u32() % nwin, w;
		u64 q0 = ktime_get_ns();
		bool got = false;

		for (w = 0; w < nwin && !got; w++) {
			unsigned long pfn = first + ((start + w) % nwin) * align;
			u64 t0 = ktime_get_ns();
			int rc = alloc_contig_range(pfn, pfn + n, MIGRATE_MOVABLE, GFP_KERNEL | __GFP_NOWARN);

			windows++;
			if (!rc) {
				t[k] = ktime_get_ns() - t0;
				q[k++] = ktime_get_ns() - q0; /* failed windows included, as cma_alloc() */
				free_contig_range(pfn, n);
				got = true;
			}
			cond_resched();
		}
		if (got)
			ok++;
		else
			fail++;
	}
	sort(t, k, sizeof(t[0]), cm_cmp_u64, NULL);
	sort(q, k, sizeof(q[0]), cm_cmp_u64, NULL);
out:
	pr_info("CONTIG tag=%s size_mib=%u ok=%u fail=%u windows=%lu p50_ns=%llu p99_ns=%llu max_ns=%llu ns_per_mib_p50=%llu req_ns_per_mib_p50=%llu\n",
		tag, mib, ok, fail, windows, k ? t[k / 2] : 0, k ? t[(k * 99) / 100] : 0, k ? t[k - 1] : 0,
		k ? t[k / 2] / mib : 0, k ? q[k / 2] / mib : 0);
	kfree(t);
	kfree(q);
}

static int __init cm_init(void)
{
	static const unsigned int sizes[] = { 1, 2, 4, 8 };
	struct zone *z = cm_movable_zone();
	unsigned int i;

	if (!z) {
		pr_err("CONTIG-ERROR no populated ZONE_MOVABLE (boot with movablecore=)\n");
		return -ENODEV;
	}
	rounds = clamp(rounds, 1u, (unsigned int)CM_MAX_ROUNDS);
	pr_info("CONTIG-ZONE tag=%s start_pfn=%lu pages=%lu free_pages=%lu\n", tag, z->zone_start_pfn,
		z->spanned_pages, zone_page_state(z, NR_FREE_PAGES));
	pr_info("CONTIG-FLOOR tag=%s ns_per_mib=%llu\n", tag, cm_floor_ns_per_mib());
	if (pin_permille)
		cm_pin(z);
	for (i = 0; i < ARRAY_SIZE(sizes); i++)
		cm_size(z, sizes[i]);
	cm_unpin();
	pr_info("CONTIG-DONE tag=%s\n", tag);
	return 0;
}

static void __exit cm_exit(void)
{
}

module_init(cm_init);
module_exit(cm_exit);
MODULE_LICENSE("GPL"); /* pfn_to_online_page() is GPL-only */
MODULE_DESCRIPTION("alloc_contig_range() success and time per MiB in ZONE_MOVABLE, for vcma's comparison");
