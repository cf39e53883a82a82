/* SPDX-License-Identifier: MIT */
/*
 * xenbus.h - what the xenbus link offers beside its link ops: attaching a Xen
 * domain by hand (vcmactl attach --xen), which creates its vcma device the way a
 * toolstack creates a split device (PROTOCOL.md §9.3).
 */
#ifndef VCMA_HV_LINK_XENBUS_H
#define VCMA_HV_LINK_XENBUS_H

#include <stddef.h>
#include <stdint.h>

struct vcmad;

/* Create the vcma device of domain `who` (a domid or a domain name): 0 with *domid
 * and *devid, or -errno with a message in msg (-ENODEV: vcmad is not on Xen). */
int vcmad_xenbus_attach(struct vcmad *d, const char *who, uint32_t *domid, uint32_t *devid, char *msg,
			size_t msglen);
/* Close and remove the domain's vcma devices: 0, or -errno with a message. */
int vcmad_xenbus_detach(struct vcmad *d, const char *who, uint32_t *domid, char *msg, size_t msglen);

#endif
