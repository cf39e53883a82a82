// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_xen_mem.c - regions on Xen PV (PROTOCOL.md 9.3.1): an extent of 2^k machine
 * frames that vcmad populated into this domain, at bus = its machine address.
 *
 * Install: n pseudo-physical frames with no memory behind them come from
 * xen_alloc_unpopulated_pages(); they need not be contiguous. First
 * the M2P entry of each machine frame is pointed at its pfn (MMU_MACHPHYS_UPDATE,
 * batched): Xen refuses a frame that is not this domain's, so a host that names
 * another domain's memory, MMIO or nothing at all gets -EIO here instead of the BUG_ON
 * in __xenmem_reservation_va_mapping_update(). A frame that is already one of this
 * domain's pages (the M2P names a pfn whose p2m entry names the frame) is refused
 * before, as its M2P entry must not be overwritten. Then the p2m entries and the
 * kernel's direct mapping (__xenmem_reservation_va_mapping_update), then one vmap.
 *
 * FREE: vunmap (and the lazy vmap TLB entries), p2m and direct mapping reset, then the
 * FREE goes out, then the pfns go back. User mappings are special PTEs on the machine
 * frames (VM_PFNMAP: get_user_pages() cannot pin them past the region's life), gone
 * before the region is let go. Devices DMA to bus: a PV guest's devices see machine
 * addresses, and the extent is machine-contiguous.
 */
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include <xen/interface/xen.h>
#include <xen/mem-reservation.h>
#include <xen/page.h>
#include <xen/xen.h>
#include <xen/xen-ops.h>

#include <asm/xen/hypercall.h>
#include <asm/xen/page.h>

#include "vcma.h"
#include "vcma_xen.h"

#define M2P_BATCH (PAGE_SIZE / sizeof(struct mmu_update))

struct vcma_xen_region {
	unsigned long npages;
	struct page **pages;       /* pages[i] is machine frame mfn + i */
	void *vaddr;               /* vmap of pages */
};

/* A frame this domain already has a page for (its M2P entry points back at it). */
static bool frame_in_physmap(unsigned long mfn)
{
	unsigned long pfn = mfn_to_pfn_no_overrides(mfn);

	/* the raw p2m entry: identity and foreign frames carry a flag, so never match */
	return pfn != ~0UL && __pfn_to_mfn(pfn) == mfn;
}

/* M2P of mfn + i := pfn of pages[i]; Xen checks that each frame is this domain's. */
static int set_m2p(struct vcma_dev *dev, struct page **pages, unsigned long mfn, unsigned long n)
{
	struct mmu_update *u;
	unsigned long done, i, cnt;
	int ok, err = 0;

	u = kmalloc_array(M2P_BATCH, sizeof(*u), GFP_KERNEL);
	if (!u)
		return -ENOMEM;
	for (done = 0; done < n && !err; done += cnt) {
		cnt = min(n - done, (unsigned long)M2P_BATCH);
		for (i = 0; i < cnt; i++) {
			u[i].ptr = ((u64)(mfn + done + i) << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
			u[i].val = page_to_pfn(pages[done + i]);
		}
		ok = 0;
		err = HYPERVISOR_mmu_update(u, cnt, &ok, DOMID_SELF);
		if (err < 0) {
			dev_err(dev->dev, "machine frame %#lx is not this domain's: Xen refused its M2P entry (%d)\n",
				mfn + done + (ok > 0 ? ok : 0), err);
			err = -EIO;
		}
		cond_resched();
	}
	kfree(u);
	return err;
}

static void free_region(struct vcma_xen_region *xr)
{
	kvfree(xr->pages);
	kfree(xr);
}

int vcma_xen_region_install(struct vcma_region *r, const struct vcma_rsp *rsp, u64 length,
			    unsigned int align_order)
{
	struct vcma_dev *dev = r->dev;
	struct vcma_xen_region *xr;
	unsigned long n, mfn, i;
	xen_pfn_t *frames;
	u64 align;
	int err;

	/* 2^k pages, k <= 18; gpa = bus; aligned to the length and to the order asked for */
	if (!is_power_of_2(rsp->length) || rsp->length > (u64)PAGE_SIZE << VCMA_XEN_MAX_ORDER)
		return -EIO;
	align = max_t(u64, rsp->length, (u64)PAGE_SIZE << align_order);
	if (rsp->gpa != rsp->bus || rsp->bus & (align - 1))
		return -EIO;
	n = rsp->length >> PAGE_SHIFT;
	mfn = rsp->bus >> PAGE_SHIFT;
	for (i = 0; i < n; i++) {
		if (frame_in_physmap(mfn + i)) {
			dev_err(dev->dev, "machine frame %#lx is already a page of this domain\n", mfn + i);
			return -EIO;
		}
	}

	xr = kzalloc(sizeof(*xr), GFP_KERNEL);
	if (!xr)
		return -ENOMEM;
	xr->npages = n;
	xr->pages = kvcalloc(n, sizeof(*xr->pages), GFP_KERNEL);
	frames = kvmalloc_array(n, sizeof(*frames), GFP_KERNEL);
	err = -ENOMEM;
	if (!xr->pages || !frames)
		goto fail;
	err = xen_alloc_unpopulated_pages(n, xr->pages);
	if (err)
		goto fail;
	err = set_m2p(dev, xr->pages, mfn, n);
	if (err)
		goto fail_pages;
	for (i = 0; i < n; i++)
		frames[i] = mfn + i;
	/* cannot fail for frames Xen just agreed are ours */
	__xenmem_reservation_va_mapping_update(n, xr->pages, frames);
	kvfree(frames);
	frames = NULL;
	xr->vaddr = vmap(xr->pages, n, VM_MAP, PAGE_KERNEL);
	if (!xr->vaddr) {
		err = -ENOMEM;
		__xenmem_reservation_va_mapping_reset(n, xr->pages);
		goto fail_pages;
	}
	r->priv = xr;
	r->vaddr = xr->vaddr;
	r->dma_addr = rsp->bus;
	return 0;
fail_pages:
	xen_free_unpopulated_pages(n, xr->pages);
fail:
	kvfree(frames);
	free_region(xr);
	return err;
}

/* Before FREE: no mapping of the frames is left, the p2m forgets them (9.3.1). */
void vcma_xen_region_unmap(struct vcma_region *r)
{
	struct vcma_xen_region *xr = r->priv;

	vunmap(xr->vaddr);
	vm_unmap_aliases(); /* vunmap leaves TLB entries for a lazy flush */
	__xenmem_reservation_va_mapping_reset(xr->npages, xr->pages);
}

/* After FREE: the pfns, without memory again, go back. */
void vcma_xen_region_release(struct vcma_region *r)
{
	struct vcma_xen_region *xr = r->priv;

	xen_free_unpopulated_pages(xr->npages, xr->pages);
	free_region(xr);
}

/*
 * User mappings map the machine frames themselves, as privcmd maps frames: special
 * PTEs written with mmu_update (VM_PFNMAP | VM_IO, set by the caller: get_user_pages
 * cannot pin them past the region's life). Not remap_pfn_range(): PAT sees these
 * pfns as memory hotplugged outside System RAM and, without MTRRs in a PV guest,
 * makes them UC-, whose cache bits Xen refuses in a PV domU's page tables.
 */
int vcma_xen_region_mmap(struct vcma_region *r, struct vm_area_struct *vma)
{
	unsigned long n = vma_pages(vma);
	int mapped;

	mapped = xen_remap_domain_gfn_range(vma, vma->vm_start, PFN_DOWN(r->dma_addr) + vma->vm_pgoff, n,
					    vma->vm_page_prot, DOMID_SELF, NULL);
	if (mapped < 0)
		return mapped;
	return mapped == n ? 0 : -EFAULT;
}
