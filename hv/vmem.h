/* SPDX-License-Identifier: MIT */
/*
 * vmem.h - a virtio-mem lender (balloon.h's lender ops for [guest NAME]
 * lender = virtio-mem): idle pool capacity lent to a KVM/QEMU guest through its
 * virtio-mem device. The device's plugged size is the capacity lent.
 *
 *   lend     a 2 MiB unit of pool frames is zeroed (mem->zero: its host memory is
 *            released) and the device's requested size raised by as much
 *   reclaim  the requested size is lowered by the frames asked back (rounded to the
 *            block size); once the plugged size has dropped to it, they came back.
 *            At the deadline (reclaim_timeout_ms), or when the driver is lost, the
 *            take-back ends with what came back so far (held < count): the rest
 *            stays lent and the requested size is restored to match it
 *   restart  a driver that reconnects and reports a plugged size below what is lent
 *            (QEMU restarted: its guest has none of it) gives the difference back
 *
 * vmem.c does the accounting; a *driver* talks to the device: vmem_qmp.c for plain
 * QEMU (a QMP socket), libvirt.c for libvirt domains. All on vcmad's loop, one thread.
 *
 * Writing a driver
 * ----------------
 * 1. Create your driver state `drv`, then register it:
 *        struct vcmad_vmem *v;
 *        rc = vcmad_vmem_lender_add(d, gc, &my_ops, drv, &v);
 *    gc names the lender (gc->name) and gives lend_max and reclaim_timeout_ms
 *    (0: the defaults); gc->qmp and gc->vmem_device are not read. On error nothing
 *    is registered and the driver is not called (free drv yourself).
 * 2. When the device is reachable, and whenever you learn its sizes (connected,
 *    a size-change event, a poll answer), call
 *        vcmad_vmem_report(v, plugged, requested, max, block);
 *    in bytes: plugged = the device's `size`, requested = its `requested-size`,
 *    max = its `max-size`, block = its `block-size`. The first report after
 *    registering or after vcmad_vmem_lost() means "ready": vmem answers it with a
 *    set_requested() of what it lends (possibly from inside the report call).
 *    Report often while the plugged size differs from what you were last asked to
 *    request (vmem_qmp.c polls every 20 ms: size-change events are throttled to 1/s
 *    by QEMU); a take-back completes only on a report.
 * 3. When the device cannot be reached any more (socket closed, domain stopped),
 *    call vcmad_vmem_lost(v, why). Take-backs in flight end short at once; what is
 *    lent stays lent until a report says otherwise (or the lender is removed). Call
 *    report again when it is back.
 * 4. vmem calls your ops (never from inside your own report/lost call except
 *    set_requested, which may be called from inside report):
 *      set_requested(drv, bytes)  ask the device for `bytes` (a multiple of the
 *                                 reported block, <= max). Must not block: send it
 *                                 and return 0, or -errno when it cannot be sent
 *                                 now (vmem asks again on the next report).
 *      close(drv)                 the lender is removed or vcmad stops: stop, free
 *                                 drv. After close, never call report or lost again.
 * 5. To remove the lender (domain undefined, forgotten), call
 *    vcmad_lender_remove(d, gc->name): vmem asks the device for 0 bytes (no wait),
 *    ends take-backs in flight as complete (the capacity is vcmad's again), then
 *    calls close(drv).
 */
#ifndef VCMA_HV_VMEM_H
#define VCMA_HV_VMEM_H

#include <stdbool.h>
#include <stdint.h>

struct vcmad;
struct vcmad_vmem;
struct vcmad_guest_conf;

struct vcmad_vmem_driver_ops {
	int (*set_requested)(void *drv, uint64_t bytes);
	void (*close)(void *drv);
};

/* Register a virtio-mem lender driven by ops/drv; *out is what the driver reports
 * to. 0, or -EEXIST (that name lends already), -ENOSPC (no lender slot), -ENOMEM. */
int vcmad_vmem_lender_add(struct vcmad *d, const struct vcmad_guest_conf *gc, const struct vcmad_vmem_driver_ops *ops,
			  void *drv, struct vcmad_vmem **out);

/* driver -> vmem (bytes; see above) */
void vcmad_vmem_report(struct vcmad_vmem *v, uint64_t plugged, uint64_t requested, uint64_t max, uint64_t block);
void vcmad_vmem_lost(struct vcmad_vmem *v, const char *why);

/* What the driver last reported and vmem asked for (stats, tests). */
struct vcmad_vmem_info {
	bool up;                      /* reported since registered or lost */
	uint64_t plugged, requested;  /* as reported */
	uint64_t max, block;
	uint64_t target;              /* what vmem last asked for */
	uint32_t pending;             /* take-backs in flight */
	uint64_t losts, restarts;     /* driver lost; plugged below lent at a report after a loss */
};
void vcmad_vmem_get_info(const struct vcmad_vmem *v, struct vcmad_vmem_info *out);
/* The lender's vmem state, or NULL if it is not virtio-mem. */
struct vcmad_vmem *vcmad_vmem_of(struct vcmad *d, const char *name);

/* The QMP driver (vmem_qmp.c): a lender for gc with gc->qmp and gc->vmem_device. */
int vcmad_vmem_qmp_add(struct vcmad *d, const struct vcmad_guest_conf *gc);
/* The loop runs: every configured [guest] with lender = virtio-mem becomes a lender
 * through the QMP driver (it connects from the loop). 0, or the first error (logged). */
int vcmad_vmem_qmp_start(struct vcmad *d);

#endif
