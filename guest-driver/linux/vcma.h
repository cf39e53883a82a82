/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vcma.h - vcma.ko's internals: one struct vcma_dev per ivshmem-doorbell device whose
 * BAR2 carries a vcma control page (PROTOCOL.md 9.2), and the regions it hands out.
 *
 *   vcma_pci.c   probe/remove: BAR mapping, layout check, MSI-X, HELLO
 *   vcma_ring.c  the guest side of the ring: submit, wait, take responses and events
 *   vcma_buf.c   regions: refcounting, dma-buf export, the in-kernel API
 *   vcma_dev.c   /dev/vcma: handles per open file, the ioctls
 */
#ifndef VCMA_KMOD_H
#define VCMA_KMOD_H

#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pci.h>
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

struct vcma_inflight {
	u64 id;
	bool used, done;
	bool posted;               /* nobody waits: the answer is checked and dropped */
	u32 op;
	struct vcma_rsp rsp;
};

struct vcma_dev {
	struct kref ref;
	struct pci_dev *pdev;
	void __iomem *regs;        /* BAR0: doorbell at 12 */
	void *shm;                 /* BAR2, write-back */
	phys_addr_t shm_phys;
	u64 shm_len;
	struct vcma_ctrl ctrl;     /* private copy, checked once */
	struct vcma_ring_hdr *rh;
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
	bool gone;                 /* removed: regions are husks */
	u64 features;
};

struct vcma_region {
	struct kref ref;           /* the file's handle, the dma-buf, a kernel user */
	struct vcma_dev *dev;      /* holds a device reference */
	struct list_head node;     /* dev->regions */
	u64 handle, offset, size;  /* offset in the DMA window */
	phys_addr_t phys;
	void *vaddr;
	struct dma_buf *dmabuf;
	bool orphan;               /* the device went away: freed at vcmad already */
};

/* vcma_ring.c */
int vcma_ring_attach(struct vcma_dev *dev);
int vcma_call(struct vcma_dev *dev, struct vcma_req *q, struct vcma_rsp *rsp);
int vcma_post(struct vcma_dev *dev, struct vcma_req *q);
void vcma_ring_drain(struct vcma_dev *dev);
void vcma_ring_free_abandoned(struct vcma_dev *dev);
void vcma_ring_free_work(struct work_struct *w);
void vcma_ring_poll(struct vcma_dev *dev);
void vcma_ring_fail(struct vcma_dev *dev, int err);

/* vcma_buf.c */
struct vcma_region *vcma_region_new(struct vcma_dev *dev, u64 length, unsigned int align_order,
				    const char *pool);
void vcma_region_put(struct vcma_region *r);
int vcma_region_export(struct vcma_region *r, struct dma_buf **out);
void vcma_dev_orphan_regions(struct vcma_dev *dev);
void vcma_dev_put(struct vcma_dev *dev);
struct vcma_dev *vcma_primary_get(void);
bool vcma_primary_claim(struct vcma_dev *dev);
void vcma_primary_release(struct vcma_dev *dev);

/* vcma_dev.c */
int vcma_misc_register(struct vcma_dev *dev);
void vcma_misc_deregister(struct vcma_dev *dev);
/* A pool name field: 1-15 of [A-Za-z0-9_.-] then NULs, or all zero (5.1). */
static inline int vcma_pool_name_ok(const char *name)
{
	return vcma_name_field_ok(name, VCMA_POOL_NAME_LEN, true);
}

#endif
