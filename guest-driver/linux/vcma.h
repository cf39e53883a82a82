/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vcma.h - vcma.ko's internals: one struct vcma_dev per connection to vcmad, whatever
 * carries it, and the regions it hands out.
 *
 *   vcma_main.c     module init and exit: the transports' drivers
 *   vcma_core.c     a device's life: references, the primary device
 *   vcma_ring.c     the guest side of the ring: submit, wait, take responses and events
 *   vcma_buf.c      regions: refcounting, dma-buf export, the in-kernel API
 *   vcma_dev.c      /dev/vcma: handles per open file, the ioctls
 *
 * Transports (struct vcma_transport): how the shared area is shared, how the host is
 * kicked, where a region's memory comes from and how the CPU and devices see it.
 *
 *   vcma_pci.c      QEMU ivshmem-doorbell (PROTOCOL.md 9.2): BAR2 holds the area and
 *                   the DMA window
 *   vcma_xen.c      Xen xenbus frontend "vcma" (9.3): granted area, event channel
 *   vcma_xen_mem.c  regions on Xen PV (9.3.1): machine frames populated into this domain
 */
#ifndef VCMA_KMOD_H
#define VCMA_KMOD_H

#include <linux/dma-direction.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "vcma_name.h"
#include "vcma_proto.h"
#include "vcma_status.h"
#include "vcma_uapi.h"

#define VCMA_MAX_INFLIGHT 64u
#define VCMA_REQ_TIMEOUT (30 * HZ)

struct device;
struct dma_buf;
struct vm_area_struct;
struct vcma_dev;
struct vcma_region;

/*
 * What a transport does for the transport-neutral code. Every hook but the optional
 * ones is set.
 */
struct vcma_transport {
	/* Tell the host that requests were published. Under dev->lock, irqs off. */
	void (*kick)(struct vcma_dev *dev);
	/* Optional: the copied control page passed 2.5; what else must hold before
	 * HELLO (the ivshmem DMA window). 0 or -errno. */
	int (*check_layout)(struct vcma_dev *dev);
	/*
	 * An OK ALLOC answer passed 5.3's checks (handle, length, page alignment): make
	 * the region's memory usable. Sets r->dma_addr and r->vaddr, and r->priv if it
	 * needs one. Returns 0; -EIO when the answer does not fit this transport (the
	 * caller logs it as malformed); or another -errno. On failure nothing is left
	 * installed, and the caller FREEs the handle.
	 */
	int (*region_install)(struct vcma_region *r, const struct vcma_rsp *rsp, u64 length,
			      unsigned int align_order);
	/* Optional: before FREE (or before letting go of a husk): every CPU mapping of
	 * the region's memory is removed. User mappings are gone by then. */
	void (*region_unmap)(struct vcma_region *r);
	/* Optional: after FREE was posted (or could not be): what install took, back. */
	void (*region_release)(struct vcma_region *r);
	/* Map [vm_pgoff, +len) of the region into a checked VM_SHARED vma, under
	 * dev->rlock. */
	int (*region_mmap)(struct vcma_region *r, struct vm_area_struct *vma);
	/* The address a device DMAs to, and its undoing (optional). */
	int (*region_map_dma)(struct vcma_region *r, struct device *dma_dev, enum dma_data_direction dir,
			      dma_addr_t *addr);
	void (*region_unmap_dma)(struct vcma_region *r, struct device *dma_dev, enum dma_data_direction dir,
				 dma_addr_t addr);
	/* The device's last reference is gone: unmap what is left, free the container. */
	void (*release)(struct vcma_dev *dev);
};

struct vcma_inflight {
	u64 id;
	bool used, done;
	bool posted;               /* nobody waits: the answer is checked and dropped */
	u32 op;
	struct vcma_rsp rsp;
};

struct vcma_dev {
	struct kref ref;
	const struct vcma_transport *ops;
	struct device *dev;        /* the bus device: logs, /dev/vcma's parent (referenced) */
	void *shm;                 /* the shared area, write-back */
	u64 shm_len;
	struct vcma_ctrl ctrl;     /* private copy, checked once */
	struct vcma_ring_hdr *rh;  /* set with the ring under lock: irqs before it find nothing */
	union vcma_slot *slots;
	struct vcma_evt_hdr *eh;
	struct vcma_evt *evs;

	spinlock_t lock;           /* ring indices, in-flight table, broken */
	u32 req_prod_pvt, rsp_cons, evt_cons, ninflight_max;
	u64 next_id;
	int broken;                /* 0, or the error every call now gets */
	bool connected;            /* HELLO answered: READY from now on means reset */
	struct vcma_inflight inflight[VCMA_MAX_INFLIGHT];
	wait_queue_head_t wq;

	u64 abandoned[VCMA_MAX_INFLIGHT]; /* regions whose ALLOC's caller was killed: to FREE */
	u32 nabandoned;            /* under lock */
	struct work_struct free_work;

	struct rw_semaphore sem;   /* read: a call to vcmad; write: the device goes away */
	struct mutex rlock;        /* the regions list */
	struct list_head regions;
	int gone;                  /* 0, or the error every call gets once the device went
				    * away (-ENODEV removed, -ECONNRESET Xen backend closed):
				    * regions are husks, the shared area is not touched */
	u64 features;
};

struct vcma_region {
	struct kref ref;           /* the file's handle, the dma-buf, a kernel user */
	struct vcma_dev *dev;      /* holds a device reference */
	struct list_head node;     /* dev->regions */
	u64 handle, offset, size;  /* offset: vcmad's bus address (window offset on ivshmem) */
	dma_addr_t dma_addr;       /* what a device in this guest DMAs to */
	void *vaddr;               /* kernel mapping; NULL once orphaned */
	void *priv;                /* the transport's */
	struct dma_buf *dmabuf;
	bool orphan;               /* the device went away: freed at vcmad already, or by
				    * the host's detach */
};

/* vcma_core.c */
void vcma_dev_init(struct vcma_dev *dev, const struct vcma_transport *ops, struct device *parent);
void vcma_dev_put(struct vcma_dev *dev);
struct vcma_dev *vcma_primary_get(void);
bool vcma_primary_claim(struct vcma_dev *dev);
void vcma_primary_release(struct vcma_dev *dev);

/* vcma_ring.c */
int vcma_ring_attach(struct vcma_dev *dev);
int vcma_call(struct vcma_dev *dev, struct vcma_req *q, struct vcma_rsp *rsp);
int vcma_post(struct vcma_dev *dev, struct vcma_req *q);
void vcma_ring_drain(struct vcma_dev *dev);
void vcma_ring_free_abandoned(struct vcma_dev *dev);
void vcma_ring_free_work(struct work_struct *w);
bool vcma_ring_poll(struct vcma_dev *dev);
void vcma_ring_fail(struct vcma_dev *dev, int err);

/* vcma_buf.c */
struct vcma_region *vcma_region_new(struct vcma_dev *dev, u64 length, unsigned int align_order,
				    const char *pool);
void vcma_region_put(struct vcma_region *r);
int vcma_region_export(struct vcma_region *r, struct dma_buf **out);
void vcma_dev_shutdown(struct vcma_dev *dev, bool free_at_host, int err);

/* vcma_dev.c */
int vcma_misc_register(struct vcma_dev *dev);
void vcma_misc_deregister(struct vcma_dev *dev);

/* vcma_pci.c */
int vcma_pci_register(void);
void vcma_pci_unregister(void);

/* vcma_xen.c, vcma_xen_mem.c: in a kernel with a xenbus frontend and a PV MMU */
#define VCMA_HAVE_XEN (IS_ENABLED(CONFIG_XEN_XENBUS_FRONTEND) && IS_ENABLED(CONFIG_XEN_HAVE_PVMMU))
#if VCMA_HAVE_XEN
int vcma_xen_register(void);
void vcma_xen_unregister(void);
int vcma_xen_region_install(struct vcma_region *r, const struct vcma_rsp *rsp, u64 length,
			    unsigned int align_order);
void vcma_xen_region_unmap(struct vcma_region *r);
void vcma_xen_region_release(struct vcma_region *r);
int vcma_xen_region_mmap(struct vcma_region *r, struct vm_area_struct *vma);
#else
static inline int vcma_xen_register(void)
{
	return 0; /* a kernel without them: ivshmem only */
}

static inline void vcma_xen_unregister(void)
{
}
#endif

/* A pool name field: 1-15 of [A-Za-z0-9_.-] then NULs, or all zero (5.1). */
static inline int vcma_pool_name_ok(const char *name)
{
	return vcma_name_field_ok(name, VCMA_POOL_NAME_LEN, true);
}

#endif
