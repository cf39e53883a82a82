// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_kapi_test.c - what another guest driver does with vcma:
 *
 * - it uses vcma.ko's in-kernel API the way it would use dma_alloc_coherent(): at load
 *   it allocates a region, fills it with the test pattern and prints its hash (the
 *   host compares it with vcmactl hash); at unload it frees the region;
 * - it imports a dma-buf from /dev/vcma as a device driver would: write the fd number
 *   to /dev/vcma_import_test, and it attaches its own device, maps the attachment,
 *   vmaps the buffer and hashes it; reading the file gives
 *   "dma=0x... len=... nents=... fnv=0x...".
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/iosys-map.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "vcma_kapi.h"
#include "vcma_test_pattern.h"

static unsigned int size_mb = 1;
module_param(size_mb, uint, 0444);
MODULE_PARM_DESC(size_mb, "region size in MiB (default 1)");

static struct vcma_region *region;

static DEFINE_MUTEX(import_lock);
static char import_result[160];

static int import_fd(int fd, struct device *dev)
{
	struct dma_buf_attachment *at;
	struct iosys_map map;
	struct sg_table *sgt;
	struct dma_buf *buf;
	int err;

	buf = dma_buf_get(fd);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	at = dma_buf_attach(buf, dev);
	if (IS_ERR(at)) {
		err = PTR_ERR(at);
		goto put;
	}
	sgt = dma_buf_map_attachment(at, DMA_BIDIRECTIONAL);
	if (IS_ERR(sgt)) {
		err = PTR_ERR(sgt);
		goto detach;
	}
	err = dma_buf_vmap(buf, &map);
	if (!err) {
		snprintf(import_result, sizeof(import_result), "dma=0x%llx len=%u nents=%u fnv=0x%016llx\n",
			 (unsigned long long)sg_dma_address(sgt->sgl), sg_dma_len(sgt->sgl), sgt->nents,
			 vcma_tp_fnv(VCMA_TP_FNV0, map.vaddr, buf->size));
		dma_buf_vunmap(buf, &map);
	}
	dma_buf_unmap_attachment(at, sgt, DMA_BIDIRECTIONAL);
detach:
	dma_buf_detach(buf, at);
put:
	dma_buf_put(buf);
	return err;
}

static struct miscdevice import_misc;

static ssize_t import_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	int fd, err;

	err = kstrtoint_from_user(ubuf, len, 10, &fd);
	if (err)
		return err;
	mutex_lock(&import_lock);
	import_result[0] = '\0';
	err = import_fd(fd, import_misc.this_device);
	mutex_unlock(&import_lock);
	return err ? err : len;
}

static ssize_t import_read(struct file *f, char __user *ubuf, size_t len, loff_t *off)
{
	ssize_t n;

	mutex_lock(&import_lock);
	n = simple_read_from_buffer(ubuf, len, off, import_result, strlen(import_result));
	mutex_unlock(&import_lock);
	return n;
}

static const struct file_operations import_fops = {
	.owner = THIS_MODULE,
	.write = import_write,
	.read = import_read,
	.llseek = noop_llseek,
};

static struct miscdevice import_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vcma_import_test",
	.fops = &import_fops,
	.mode = 0600,
};

static int __init kapi_test_init(void)
{
	size_t size = (size_t)size_mb << 20;
	u64 h;
	int err;

	region = vcma_region_alloc(size, 0, NULL);
	if (IS_ERR(region))
		return PTR_ERR(region);
	vcma_tp_fill(vcma_region_vaddr(region), size);
	h = vcma_tp_fnv(VCMA_TP_FNV0, vcma_region_vaddr(region), size);
	pr_info("vcma_kapi_test: handle=0x%llx size=%zu dma=0x%llx fnv=0x%016llx\n", vcma_region_handle(region),
		vcma_region_size(region), (unsigned long long)vcma_region_dma_addr(region), h);
	err = misc_register(&import_misc);
	if (err) {
		vcma_region_free(region);
		return err;
	}
	/* the importing "device": direct DMA, as a device without an IOMMU has */
	import_misc.this_device->coherent_dma_mask = DMA_BIT_MASK(64);
	import_misc.this_device->dma_mask = &import_misc.this_device->coherent_dma_mask;
	return 0;
}

static void __exit kapi_test_exit(void)
{
	misc_deregister(&import_misc);
	vcma_region_free(region);
	pr_info("vcma_kapi_test: freed\n");
}

module_init(kapi_test_init);
module_exit(kapi_test_exit);
MODULE_DESCRIPTION("vcma in-kernel API test: a 1 MiB region with a known pattern");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(DMA_BUF);
