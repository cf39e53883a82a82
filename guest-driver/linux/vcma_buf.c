// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_buf.c - regions: allocation at vcmad, refcounting, dma-buf export, and the
 * in-kernel API of vcma_kapi.h.
 *
 * A region is counted by its holders: a /dev/vcma handle, its dma-buf, a kernel
 * user. The last one to let go sends FREE. Where its memory comes from, and how the
 * CPU and devices reach it, is the transport's (struct vcma_transport): a device gets
 * it through a one-entry sg_table at the transport's DMA address, userspace through
 * the transport's mmap.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/iosys-map.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include "vcma.h"
#include "vcma_kapi.h"

static void region_release(struct kref *ref)
{
	struct vcma_region *r = container_of(ref, struct vcma_region, ref);
	struct vcma_dev *dev = r->dev;
	struct vcma_req q = { .op = VCMA_OP_FREE, .handle = r->handle };
	int err;

	/* every mapping is gone before FREE: the host may hand the memory on at once */
	if (dev->ops->region_unmap)
		dev->ops->region_unmap(r);
	/* posted, not awaited: the next request on this ring is answered after it */
	down_read(&dev->sem);
	if (!r->orphan && !dev->gone) {
		err = vcma_post(dev, &q);
		if (err)
			dev_warn(dev->dev, "FREE of region %#llx not sent: %d\n", r->handle, err);
	}
	mutex_lock(&dev->rlock);
	list_del(&r->node);
	mutex_unlock(&dev->rlock);
	up_read(&dev->sem);
	if (dev->ops->region_release)
		dev->ops->region_release(r);
	vcma_dev_put(dev);
	kfree(r);
}

void vcma_region_put(struct vcma_region *r)
{
	kref_put(&r->ref, region_release);
}

/* ALLOC at vcmad; the answer is checked as 5.3 says, then by the transport. */
struct vcma_region *vcma_region_new(struct vcma_dev *dev, u64 length, unsigned int align_order, const char *pool)
{
	struct vcma_req q = { .op = VCMA_OP_ALLOC, .length = length, .arg0 = align_order };
	struct vcma_region *r;
	struct vcma_rsp rsp;
	int err;

	if (!length || align_order > 18)
		return ERR_PTR(-EINVAL);
	/* a C string from a kernel caller, NUL-padded here as the wire wants it */
	if (pool && (strscpy((char *)q.name, pool, sizeof(q.name)) < 0 || !vcma_pool_name_ok((char *)q.name)))
		return ERR_PTR(-EINVAL);
	if (q.name[0] && !(dev->features & VCMA_F_NAMED_POOL))
		return ERR_PTR(-EINVAL);
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return ERR_PTR(-ENOMEM);
	r->dev = dev;
	down_read(&dev->sem);
	err = dev->gone ?: vcma_call(dev, &q, &rsp);
	if (!err)
		err = vcma_status_errno(rsp.status);
	if (!err) {
		r->handle = rsp.handle;
		r->offset = rsp.bus;
		r->size = rsp.length;
		if (!rsp.handle || rsp.length % PAGE_SIZE || rsp.length < length || rsp.bus % PAGE_SIZE ||
		    rsp.gpa % PAGE_SIZE)
			err = -EIO;
		else
			err = dev->ops->region_install(r, &rsp, length, align_order);
		if (err) {
			struct vcma_req f = { .op = VCMA_OP_FREE, .handle = rsp.handle };

			if (err == -EIO)
				dev_err(dev->dev, "malformed ALLOC answer (handle %#llx, %#llx+%#llx)\n", rsp.handle,
					rsp.bus, rsp.length);
			if (rsp.handle)
				vcma_post(dev, &f);
		}
	}
	if (err) {
		up_read(&dev->sem);
		kfree(r);
		return ERR_PTR(err);
	}
	kref_init(&r->ref);
	kref_get(&dev->ref);
	mutex_lock(&dev->rlock);
	list_add(&r->node, &dev->regions);
	mutex_unlock(&dev->rlock);
	up_read(&dev->sem);
	return r;
}

/*
 * The device is going away with regions still held: take the user mappings away, and
 * leave husks that fail every use until their holders let go. With free_at_host the
 * ring still works and the regions are FREEd now, while still mapped in the kernel:
 * the transport's memory must stay valid for an importer's vmap until the device's
 * last reference (ivshmem: BAR2 stays mapped, zeros by then). Without it the host
 * frees them itself as the connection closes (Xen), and a husk's memory goes back
 * when its last holder lets go. err (-ENODEV, -ECONNRESET) is what every call to
 * this device returns from now on.
 */
void vcma_dev_shutdown(struct vcma_dev *dev, bool free_at_host, int err)
{
	struct vcma_region *r;
	struct vcma_req q = { .op = VCMA_OP_FREE };

	down_write(&dev->sem); /* no call to vcmad is under way, and none starts */
	mutex_lock(&dev->rlock);
	list_for_each_entry(r, &dev->regions, node) {
		if (r->dmabuf)
			unmap_mapping_range(r->dmabuf->file->f_mapping, 0, 0, 1);
		q.handle = r->handle;
		if (free_at_host && !vcma_post(dev, &q))
			dev_warn(dev->dev, "region %#llx freed while still held\n", r->handle);
		r->orphan = true;
		WRITE_ONCE(r->vaddr, NULL);
	}
	mutex_unlock(&dev->rlock);
	/* these FREEs, those posted before, and abandoned ALLOCs' regions; the irq
	 * handler works until gone */
	if (free_at_host)
		vcma_ring_drain(dev);
	dev->gone = err;
	up_write(&dev->sem);
}

/* ---- dma-buf ---- */

static struct sg_table *buf_map(struct dma_buf_attachment *at, enum dma_data_direction dir)
{
	struct vcma_region *r = at->dmabuf->priv;
	struct sg_table *sgt;
	dma_addr_t addr;
	int err;

	if (READ_ONCE(r->orphan))
		return ERR_PTR(-ENODEV);
	sgt = kzalloc(sizeof(*sgt), GFP_KERNEL);
	if (!sgt)
		return ERR_PTR(-ENOMEM);
	err = sg_alloc_table(sgt, 1, GFP_KERNEL);
	if (err) {
		kfree(sgt);
		return ERR_PTR(err);
	}
	err = r->dev->ops->region_map_dma(r, at->dev, dir, &addr);
	if (err) {
		sg_free_table(sgt);
		kfree(sgt);
		return ERR_PTR(err);
	}
	sg_dma_address(sgt->sgl) = addr;
	sg_dma_len(sgt->sgl) = r->size;
	return sgt;
}

static void buf_unmap(struct dma_buf_attachment *at, struct sg_table *sgt, enum dma_data_direction dir)
{
	struct vcma_region *r = at->dmabuf->priv;

	if (r->dev->ops->region_unmap_dma)
		r->dev->ops->region_unmap_dma(r, at->dev, dir, sg_dma_address(sgt->sgl));
	sg_free_table(sgt);
	kfree(sgt);
}

static int buf_mmap(struct dma_buf *buf, struct vm_area_struct *vma)
{
	struct vcma_region *r = buf->priv;
	unsigned long len = vma->vm_end - vma->vm_start;
	int err;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL; /* device memory: no private copies */
	if (vma->vm_pgoff > r->size >> PAGE_SHIFT || len > r->size - (vma->vm_pgoff << PAGE_SHIFT))
		return -EINVAL;
	vma->vm_flags |= VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP;
	/* orphaning zaps the mappings under rlock: no mapping may appear behind it, or it
	 * would outlive the region into whatever vcmad hands out there next */
	mutex_lock(&r->dev->rlock);
	err = r->orphan ? -ENODEV : r->dev->ops->region_mmap(r, vma);
	mutex_unlock(&r->dev->rlock);
	return err;
}

static int buf_vmap(struct dma_buf *buf, struct iosys_map *map)
{
	struct vcma_region *r = buf->priv;

	if (READ_ONCE(r->orphan))
		return -ENODEV;
	iosys_map_set_vaddr(map, READ_ONCE(r->vaddr));
	return 0;
}

static void buf_release(struct dma_buf *buf)
{
	struct vcma_region *r = buf->priv;

	mutex_lock(&r->dev->rlock); /* orphaning looks at r->dmabuf under it */
	r->dmabuf = NULL;
	mutex_unlock(&r->dev->rlock);
	vcma_region_put(r);
}

static const struct dma_buf_ops vcma_dmabuf_ops = {
	.map_dma_buf = buf_map,
	.unmap_dma_buf = buf_unmap,
	.mmap = buf_mmap,
	.vmap = buf_vmap,
	.release = buf_release,
};

/* A dma-buf for r; it holds a reference of its own. */
int vcma_region_export(struct vcma_region *r, struct dma_buf **out)
{
	DEFINE_DMA_BUF_EXPORT_INFO(exp);
	struct dma_buf *buf;

	exp.ops = &vcma_dmabuf_ops;
	exp.size = r->size;
	exp.flags = O_RDWR | O_CLOEXEC;
	exp.priv = r;
	kref_get(&r->ref);
	buf = dma_buf_export(&exp);
	if (IS_ERR(buf)) {
		kref_put(&r->ref, region_release);
		return PTR_ERR(buf);
	}
	r->dmabuf = buf;
	*out = buf;
	return 0;
}

/* ---- in-kernel API ---- */

struct vcma_region *vcma_region_alloc(size_t size, unsigned int align_order, const char *pool)
{
	struct vcma_dev *dev = vcma_primary_get();
	struct vcma_region *r;

	if (!dev)
		return ERR_PTR(-ENODEV);
	r = vcma_region_new(dev, size, align_order, pool);
	vcma_dev_put(dev);
	return r;
}
EXPORT_SYMBOL_GPL(vcma_region_alloc);

void vcma_region_free(struct vcma_region *r)
{
	if (!IS_ERR_OR_NULL(r))
		vcma_region_put(r);
}
EXPORT_SYMBOL_GPL(vcma_region_free);

dma_addr_t vcma_region_dma_addr(const struct vcma_region *r)
{
	return r->dma_addr; /* no IOMMU in front of guest devices here */
}
EXPORT_SYMBOL_GPL(vcma_region_dma_addr);

void *vcma_region_vaddr(const struct vcma_region *r)
{
	return READ_ONCE(r->vaddr);
}
EXPORT_SYMBOL_GPL(vcma_region_vaddr);

size_t vcma_region_size(const struct vcma_region *r)
{
	return r->size;
}
EXPORT_SYMBOL_GPL(vcma_region_size);

u64 vcma_region_handle(const struct vcma_region *r)
{
	return r->handle;
}
EXPORT_SYMBOL_GPL(vcma_region_handle);
