// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_main.c - vcma.ko: a guest driver for vcma, the host's contiguous memory
 * service. Module init and exit register each transport's driver; the first device
 * that connects, whichever its transport, serves /dev/vcma and the in-kernel API.
 */
#include <linux/module.h>

#include "vcma.h"

static int __init vcma_init(void)
{
	int err;

	err = vcma_pci_register();
	if (err)
		return err;
	err = vcma_xen_register(); /* only in a Xen guest */
	if (err)
		vcma_pci_unregister();
	return err;
}

static void __exit vcma_exit(void)
{
	vcma_xen_unregister();
	vcma_pci_unregister();
}

module_init(vcma_init);
module_exit(vcma_exit);

MODULE_DESCRIPTION("vcma: contiguous DMA regions from the host's vcmad over ivshmem-doorbell or Xen xenbus");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(DMA_BUF);
