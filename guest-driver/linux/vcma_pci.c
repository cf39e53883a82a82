// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_pci.c - vcma.ko's ivshmem transport: QEMU's ivshmem-doorbell device (PCI
 * 1af4:1110) with vcmad as its ivshmem server (PROTOCOL.md 9.2).
 *
 * BAR0 holds the doorbell, BAR2 the shared area (control page and rings at 0) and the
 * DMA window. A device whose BAR2 does not start with a vcma control page belongs to
 * some other ivshmem user and is left alone. A region is a range of the window: BAR
 * memory without struct page, so a device gets it from dma_map_resource() and
 * userspace through remap_pfn_range(); BAR2 stays mapped in the kernel until the
 * device's last reference, so a region's kernel address never dangles.
 */
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/pci.h>
#include <linux/slab.h>

#include "vcma.h"

#define VCMA_DOORBELL 12 /* BAR0: (peer << 16) | vector; vcmad is peer 0 */

struct vcma_pci {
	struct vcma_dev vdev;
	struct pci_dev *pdev;
	void __iomem *regs;        /* BAR0: doorbell at 12 */
	phys_addr_t shm_phys;      /* BAR2 */
};

static struct vcma_pci *to_pci(struct vcma_dev *dev)
{
	return container_of(dev, struct vcma_pci, vdev);
}

static phys_addr_t region_phys(struct vcma_region *r)
{
	return to_pci(r->dev)->shm_phys + r->dev->ctrl.window_off + r->offset;
}

static void pci_kick(struct vcma_dev *dev)
{
	writel(0, to_pci(dev)->regs + VCMA_DOORBELL);
}

static int pci_check_layout(struct vcma_dev *dev)
{
	const struct vcma_ctrl *c = &dev->ctrl;

	if (!c->window_size || c->window_size % PAGE_SIZE || c->window_off % PAGE_SIZE) {
		dev_err(dev->dev, "no usable DMA window in BAR2\n");
		return -ENODEV;
	}
	return 0;
}

/* gpa = bus = the region's offset in the window (9.2): it must lie inside it. */
static int pci_region_install(struct vcma_region *r, const struct vcma_rsp *rsp, u64 length,
			      unsigned int align_order)
{
	const struct vcma_ctrl *c = &r->dev->ctrl;

	if (rsp->bus > c->window_size || rsp->length > c->window_size - rsp->bus)
		return -EIO;
	r->dma_addr = region_phys(r); /* no IOMMU in front of guest devices: bus = guest-physical */
	r->vaddr = (u8 *)r->dev->shm + c->window_off + rsp->bus;
	return 0;
}

static int pci_region_mmap(struct vcma_region *r, struct vm_area_struct *vma)
{
	return remap_pfn_range(vma, vma->vm_start, (region_phys(r) >> PAGE_SHIFT) + vma->vm_pgoff,
			       vma->vm_end - vma->vm_start, vma->vm_page_prot);
}

static int pci_region_map_dma(struct vcma_region *r, struct device *dma_dev, enum dma_data_direction dir,
			      dma_addr_t *addr)
{
	*addr = dma_map_resource(dma_dev, region_phys(r), r->size, dir, 0);
	return dma_mapping_error(dma_dev, *addr) ? -EIO : 0;
}

static void pci_region_unmap_dma(struct vcma_region *r, struct device *dma_dev, enum dma_data_direction dir,
				 dma_addr_t addr)
{
	dma_unmap_resource(dma_dev, addr, r->size, dir, 0);
}

static void pci_release(struct vcma_dev *dev)
{
	struct vcma_pci *p = to_pci(dev);

	if (dev->shm)
		memunmap(dev->shm);
	kfree(p);
}

static const struct vcma_transport vcma_pci_transport = {
	.kick = pci_kick,
	.check_layout = pci_check_layout,
	.region_install = pci_region_install,
	.region_mmap = pci_region_mmap,
	.region_map_dma = pci_region_map_dma,
	.region_unmap_dma = pci_region_unmap_dma,
	.release = pci_release,
};

static irqreturn_t vcma_irq(int irq, void *data)
{
	vcma_ring_poll(data);
	return IRQ_HANDLED;
}

static int vcma_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vcma_pci *p;
	struct vcma_dev *dev;
	u32 magic;
	int err;

	err = pcim_enable_device(pdev);
	if (err)
		return err;
	if (pci_resource_len(pdev, 2) < 2 * PAGE_SIZE || !(pci_resource_flags(pdev, 0) & IORESOURCE_MEM))
		return -ENODEV;
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	dev = &p->vdev;
	vcma_dev_init(dev, &vcma_pci_transport, &pdev->dev);
	p->pdev = pdev;
	p->shm_phys = pci_resource_start(pdev, 2);
	dev->shm_len = pci_resource_len(pdev, 2);
	/* not devm: the mapping lives as long as the device's last reference, so a
	 * kernel importer's vmap of a region stays valid after removal (zeros by then) */
	dev->shm = memremap(p->shm_phys, dev->shm_len, MEMREMAP_WB);
	if (!dev->shm) {
		err = -ENOMEM;
		goto fail;
	}
	magic = READ_ONCE(((struct vcma_ctrl *)dev->shm)->magic);
	if (magic != VCMA_PROTO_MAGIC) {
		dev_info(&pdev->dev, "ivshmem device without a vcma control page (magic %#x): not ours\n", magic);
		err = -ENODEV;
		goto fail;
	}
	/* BAR2 stays mapped write-back only: an uncached iomap beside it would conflict */
	err = pcim_iomap_regions(pdev, BIT(0), KBUILD_MODNAME);
	if (!err)
		err = pci_request_region(pdev, 2, KBUILD_MODNAME);
	if (err)
		goto fail;
	p->regs = pcim_iomap_table(pdev)[0];
	pci_set_master(pdev); /* QEMU drops MSI-X writes from a device that is not bus master */
	err = pci_alloc_irq_vectors(pdev, 1, 2, PCI_IRQ_MSIX);
	if (err < 0)
		goto fail;
	err = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, 0), vcma_irq, 0, KBUILD_MODNAME, dev);
	if (err)
		goto fail;
	pci_set_drvdata(pdev, dev);
	/* irqs raised before MSI-X was on are lost: the attach looks at the rings itself */
	err = vcma_ring_attach(dev);
	if (err) {
		dev_err(&pdev->dev, "cannot attach to vcmad: %d\n", err);
		goto fail_ring;
	}
	err = vcma_misc_register(dev);
	if (err)
		goto fail_ring;
	dev_info(&pdev->dev, "vcma guest %u: DMA window %llu MiB at %pa, features %#llx\n", dev->ctrl.guest_id,
		 dev->ctrl.window_size >> 20, &p->shm_phys, dev->features);
	return 0;
fail_ring:
	vcma_ring_fail(dev, -ENODEV);
	dev->gone = -ENODEV;
	devm_free_irq(&pdev->dev, pci_irq_vector(pdev, 0), dev);
	cancel_work_sync(&dev->free_work);
fail:
	vcma_dev_put(dev);
	return err;
}

static void vcma_remove(struct pci_dev *pdev)
{
	struct vcma_dev *dev = pci_get_drvdata(pdev);

	vcma_misc_deregister(dev);
	/* the ring still works: held regions are FREEd now, and posted FREEs answered,
	 * so that a driver bound next takes over an idle ring */
	vcma_dev_shutdown(dev, true, -ENODEV);
	vcma_ring_fail(dev, -ENODEV);
	/* the irq handler looks at nothing once gone is set; devres frees it and unmaps
	 * the BARs after this returns, while late holders keep only the husk */
	devm_free_irq(&pdev->dev, pci_irq_vector(pdev, 0), dev);
	cancel_work_sync(&dev->free_work); /* nothing is left for it: the drain FREEd all */
	vcma_dev_put(dev);
}

static const struct pci_device_id vcma_ids[] = {
	{ PCI_DEVICE(0x1af4, 0x1110) }, /* ivshmem */
	{}
};
MODULE_DEVICE_TABLE(pci, vcma_ids);

static struct pci_driver vcma_driver = {
	.name = KBUILD_MODNAME,
	.id_table = vcma_ids,
	.probe = vcma_probe,
	.remove = vcma_remove,
};

int vcma_pci_register(void)
{
	return pci_register_driver(&vcma_driver);
}

void vcma_pci_unregister(void)
{
	pci_unregister_driver(&vcma_driver);
}
