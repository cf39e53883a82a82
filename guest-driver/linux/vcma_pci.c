// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_pci.c - vcma.ko: a guest driver for vcma, the host's contiguous memory
 * service, over QEMU's ivshmem-doorbell device (PCI 1af4:1110) with vcmad as its
 * ivshmem server (PROTOCOL.md 9.2).
 *
 * BAR0 holds the doorbell, BAR2 the shared area (control page and rings at 0) and the
 * DMA window. A device whose BAR2 does not start with a vcma control page belongs to
 * some other ivshmem user and is left alone.
 */
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>

#include "vcma.h"

static irqreturn_t vcma_irq(int irq, void *data)
{
	vcma_ring_poll(data);
	return IRQ_HANDLED;
}

static int vcma_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vcma_dev *dev;
	u32 magic;
	int err;

	err = pcim_enable_device(pdev);
	if (err)
		return err;
	if (pci_resource_len(pdev, 2) < 2 * PAGE_SIZE || !(pci_resource_flags(pdev, 0) & IORESOURCE_MEM))
		return -ENODEV;
	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	kref_init(&dev->ref);
	dev->pdev = pdev;
	spin_lock_init(&dev->lock);
	init_waitqueue_head(&dev->wq);
	init_rwsem(&dev->sem);
	INIT_WORK(&dev->free_work, vcma_ring_free_work);
	mutex_init(&dev->rlock);
	INIT_LIST_HEAD(&dev->regions);
	dev->shm_phys = pci_resource_start(pdev, 2);
	dev->shm_len = pci_resource_len(pdev, 2);
	/* not devm: the mapping lives as long as the device's last reference, so a
	 * kernel importer's vmap of a region stays valid after removal (zeros by then) */
	dev->shm = memremap(dev->shm_phys, dev->shm_len, MEMREMAP_WB);
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
	dev->regs = pcim_iomap_table(pdev)[0];
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
		 dev->ctrl.window_size >> 20, &dev->shm_phys, dev->features);
	return 0;
fail_ring:
	vcma_ring_fail(dev, -ENODEV);
	dev->gone = true;
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
	vcma_dev_orphan_regions(dev);
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
module_pci_driver(vcma_driver);

MODULE_DESCRIPTION("vcma: contiguous DMA regions from the host's vcmad over ivshmem-doorbell");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(DMA_BUF);
