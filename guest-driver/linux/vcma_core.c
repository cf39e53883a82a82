// SPDX-License-Identifier: GPL-2.0-only
/*
 * vcma_core.c - a vcma device's life, whatever its transport: set-up, references,
 * and the primary device that /dev/vcma and the in-kernel API use.
 *
 * A device is referenced by its transport while it is bound, by each region, by each
 * open /dev/vcma file and by the in-kernel API during a call. The last reference
 * hands it back to its transport, which unmaps what is left and frees it.
 */
#include <linux/device.h>
#include <linux/mutex.h>

#include "vcma.h"

static DEFINE_MUTEX(primary_lock);
static struct vcma_dev *primary; /* the device /dev/vcma and the kernel API use */

/* dev is zeroed, and embedded in the transport's own structure. */
void vcma_dev_init(struct vcma_dev *dev, const struct vcma_transport *ops, struct device *parent)
{
	kref_init(&dev->ref);
	dev->ops = ops;
	dev->dev = get_device(parent);
	spin_lock_init(&dev->lock);
	init_waitqueue_head(&dev->wq);
	init_rwsem(&dev->sem);
	INIT_WORK(&dev->free_work, vcma_ring_free_work);
	mutex_init(&dev->rlock);
	INIT_LIST_HEAD(&dev->regions);
}

static void dev_release(struct kref *ref)
{
	struct vcma_dev *dev = container_of(ref, struct vcma_dev, ref);
	struct device *parent = dev->dev;

	dev->ops->release(dev);
	put_device(parent);
}

void vcma_dev_put(struct vcma_dev *dev)
{
	kref_put(&dev->ref, dev_release);
}

struct vcma_dev *vcma_primary_get(void)
{
	struct vcma_dev *dev;

	mutex_lock(&primary_lock);
	dev = primary;
	if (dev)
		kref_get(&dev->ref);
	mutex_unlock(&primary_lock);
	return dev;
}

/* The first device to connect serves /dev/vcma and the kernel API. */
bool vcma_primary_claim(struct vcma_dev *dev)
{
	bool claimed = false;

	mutex_lock(&primary_lock);
	if (!primary) {
		primary = dev;
		claimed = true;
	}
	mutex_unlock(&primary_lock);
	return claimed;
}

void vcma_primary_release(struct vcma_dev *dev)
{
	mutex_lock(&primary_lock);
	if (primary == dev)
		primary = NULL;
	mutex_unlock(&primary_lock);
}
