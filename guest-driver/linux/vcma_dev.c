// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_dev.c - /dev/vcma: VCMA_IOC_ALLOC / FREE / QUERY (vcma_uapi.h).
 *
 * Each open file holds handles, as GEM does: a handle and the region's dma-buf each
 * keep the region; FREE or closing the file drops the handle, and the region goes
 * back to vcmad once the dma-buf is released too.
 */
#include <linux/ctype.h>
#include <linux/dma-buf.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "vcma.h"
#include "vcma_uapi.h"

struct vcma_file {
	struct vcma_dev *dev;
	struct xarray handles; /* handle -> struct vcma_region */
};

static int vcma_open(struct inode *inode, struct file *f)
{
	struct vcma_file *vf = kzalloc(sizeof(*vf), GFP_KERNEL);

	if (!vf)
		return -ENOMEM;
	vf->dev = vcma_primary_get();
	if (!vf->dev) {
		kfree(vf);
		return -ENODEV;
	}
	xa_init(&vf->handles);
	f->private_data = vf;
	return 0;
}

static int vcma_release(struct inode *inode, struct file *f)
{
	struct vcma_file *vf = f->private_data;
	struct vcma_region *r;
	unsigned long h;

	xa_for_each(&vf->handles, h, r)
		vcma_region_put(r);
	xa_destroy(&vf->handles);
	vcma_dev_put(vf->dev);
	kfree(vf);
	return 0;
}

static long ioc_alloc(struct vcma_file *vf, void __user *uarg)
{
	struct vcma_ioc_alloc a;
	struct vcma_region *r;
	struct dma_buf *buf;
	int fd, err;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.flags || a.pad || !vcma_pool_name_ok(a.pool))
		return -EINVAL;
	r = vcma_region_new(vf->dev, a.length, a.align_order, a.pool[0] ? a.pool : NULL);
	if (IS_ERR(r))
		return PTR_ERR(r);
	err = vcma_region_export(r, &buf);
	if (err) {
		vcma_region_put(r);
		return err;
	}
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		err = fd;
		goto put_buf;
	}
	a.handle = r->handle;
	a.size = r->size;
	a.dma_addr = r->dma_addr;
	a.offset = r->offset;
	a.fd = fd;
	err = xa_insert(&vf->handles, r->handle, r, GFP_KERNEL);
	if (err)
		goto put_fd;
	if (copy_to_user(uarg, &a, sizeof(a))) {
		/* another thread may have freed the handle meanwhile: its reference went with it */
		bool ours = xa_erase(&vf->handles, r->handle) == r;

		put_unused_fd(fd);
		dma_buf_put(buf);
		if (ours)
			vcma_region_put(r);
		return -EFAULT;
	}
	fd_install(fd, buf->file); /* the dma-buf's reference now belongs to the fd */
	return 0;
put_fd:
	put_unused_fd(fd);
put_buf:
	dma_buf_put(buf);
	vcma_region_put(r);
	return err;
}

static long ioc_free(struct vcma_file *vf, void __user *uarg)
{
	struct vcma_ioc_free a;
	struct vcma_region *r;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	r = xa_erase(&vf->handles, a.handle);
	if (!r)
		return -ENOENT;
	vcma_region_put(r);
	return 0;
}

static long ioc_query(struct vcma_file *vf, void __user *uarg)
{
	struct vcma_dev *dev = vf->dev;
	struct vcma_req q = { .op = VCMA_OP_QUERY };
	struct vcma_ioc_query a;
	struct vcma_region *r;
	struct vcma_rsp rsp;
	int err;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.pad || !vcma_pool_name_ok(a.pool) || (a.handle && a.pool[0]))
		return -EINVAL;
	a.guest_id = dev->ctrl.guest_id;
	if (a.handle) {
		/* under the lock FREE erases with: the handle's reference keeps r meanwhile */
		xa_lock(&vf->handles);
		r = xa_load(&vf->handles, a.handle);
		if (r) {
			a.size = r->size;
			a.dma_addr = r->dma_addr;
			a.offset = r->offset;
		}
		xa_unlock(&vf->handles);
		if (!r)
			return -ENOENT;
		a.free_bytes = a.guest_bytes = 0;
	} else {
		if (a.pool[0] && !(dev->features & VCMA_F_NAMED_POOL))
			return -EINVAL;
		memcpy(q.name, a.pool, sizeof(q.name));
		down_read(&dev->sem);
		err = dev->gone ?: vcma_call(dev, &q, &rsp);
		up_read(&dev->sem);
		if (!err)
			err = vcma_status_errno(rsp.status);
		if (err)
			return err;
		a.size = rsp.length;
		a.free_bytes = rsp.val[0];
		a.guest_bytes = rsp.val[1];
		a.dma_addr = a.offset = 0;
	}
	return copy_to_user(uarg, &a, sizeof(a)) ? -EFAULT : 0;
}

static long vcma_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct vcma_file *vf = f->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case VCMA_IOC_ALLOC: return ioc_alloc(vf, uarg);
	case VCMA_IOC_FREE: return ioc_free(vf, uarg);
	case VCMA_IOC_QUERY: return ioc_query(vf, uarg);
	default: return -ENOTTY;
	}
}

static const struct file_operations vcma_fops = {
	.owner = THIS_MODULE,
	.open = vcma_open,
	.release = vcma_release,
	.unlocked_ioctl = vcma_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice vcma_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vcma",
	.fops = &vcma_fops,
	.mode = 0600,
};

int vcma_misc_register(struct vcma_dev *dev)
{
	int err;

	if (!vcma_primary_claim(dev))
		return 0; /* another device serves /dev/vcma */
	vcma_misc.parent = dev->dev;
	err = misc_register(&vcma_misc);
	if (err)
		vcma_primary_release(dev);
	return err;
}

void vcma_misc_deregister(struct vcma_dev *dev)
{
	struct vcma_dev *p = vcma_primary_get();

	if (p)
		vcma_dev_put(p);
	if (p != dev)
		return;
	misc_deregister(&vcma_misc); /* no new opens; open files keep their device */
	vcma_primary_release(dev);
}
