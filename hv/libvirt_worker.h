/* SPDX-License-Identifier: MIT */
/*
 * libvirt_worker.h - the thread that owns vcmad's libvirt connection. Every libvirt
 * call is made on it, never on vcmad's loop: a libvirt call may wait (for a QEMU
 * that is starting, for the monitor, for a remote daemon), and a QEMU that is
 * starting waits for its ivshmem handshake, which only vcmad's loop answers.
 *
 *   loop ── vcmad_lv_post(msg) ─────────▶ queue ─▶ worker: libvirt calls
 *   loop ◀─ vcmad_lv_take() ◀─ queue ◀─ eventfd ◀─ worker: results, domain events
 *
 * The worker runs libvirt's default event loop (virEventRunDefaultImpl) and wakes on
 * an eventfd registered in it. Messages are malloc'd; whoever takes one frees it
 * (vcmad_lv_msg_free). The worker connects (and reconnects after a loss, every
 * VCMAD_LV_RETRY_S) on its own, and reports each domain that opts in with vcma
 * metadata (VCMAD_LV_XMLNS) as it finds it.
 */
#ifndef VCMA_HV_LIBVIRT_WORKER_H
#define VCMA_HV_LIBVIRT_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#define VCMAD_LV_XMLNS "https://vcma.dev/xmlns/libvirt/1"
#define VCMAD_LV_XMLNS_PREFIX "vcma"
#define VCMAD_LV_SHMEM_NAME "vcma"  /* the <shmem name=...> vcmad attaches */
#define VCMAD_LV_RETRY_S 5
#define VCMAD_LV_NAME_MAX 64u       /* libvirt domain names vcmad handles (guests: 31) */

enum vcmad_lv_op {
	/* loop -> worker: requests (answered with VCMAD_LV_DONE, same token) */
	VCMAD_LV_ATTACH,   /* name, devclass, sock: metadata + <shmem>, live and persistent */
	VCMAD_LV_DETACH,   /* name: both removed */
	VCMAD_LV_DEFINE,   /* xml */
	VCMAD_LV_START,    /* name */
	VCMAD_LV_DESTROY,  /* name */
	VCMAD_LV_UNDEFINE, /* name */
	VCMAD_LV_VMEM_SET, /* name, bytes: the virtio-mem device's requested size */
	VCMAD_LV_QUIT,     /* the worker disconnects and ends */
	/* worker -> loop */
	VCMAD_LV_CONNECTED, /* msg: the URI; the domains found follow */
	VCMAD_LV_LOST,      /* msg: why (connect failed, connection closed) */
	VCMAD_LV_DOMAIN,    /* a domain as it is now: name, opted, devclass, quota, active, lend,
			     * has_vmem with bytes (plugged), vmem_requested, vmem_max, vmem_block */
	VCMAD_LV_GONE,      /* name: undefined */
	VCMAD_LV_STOPPED,   /* name, detail (libvirt's STOPPED detail), t_ns */
	VCMAD_LV_VMEM_SIZE, /* name, bytes: plugged size (MEMORY_DEVICE_SIZE_CHANGE or read) */
	VCMAD_LV_DONE,      /* token, req_op, err (0 or -errno), msg */
};

struct vcmad_lv_msg {
	struct vcmad_lv_msg *next;
	enum vcmad_lv_op op, req_op;
	uint64_t token;                   /* the requester's, echoed in DONE */
	char name[VCMAD_LV_NAME_MAX];
	char devclass[32];
	char quota[24];                   /* DOMAIN: the metadata's quota attribute ("" = none) */
	char sock[108];
	char *xml;                        /* DEFINE: the domain XML (freed with the message) */
	bool opted, active, lend, has_shmem, has_vmem;
	uint64_t bytes, vmem_max, vmem_block; /* VMEM_*, DOMAIN: virtio-mem sizes */
	uint64_t vmem_requested;              /* DOMAIN: its <requested> */
	int detail;
	uint64_t t_ns;                    /* CLOCK_MONOTONIC when libvirt told the worker */
	int err;
	char msg[256];
};

struct vcmad_lv_worker;

struct vcmad_lv_msg *vcmad_lv_msg_new(enum vcmad_lv_op op);
void vcmad_lv_msg_free(struct vcmad_lv_msg *m);
/* Start the worker on uri. *fd becomes readable when messages wait for the loop
 * (read it empty with vcmad_lv_take). NULL with errno when no thread could start. */
struct vcmad_lv_worker *vcmad_lv_worker_start(const char *uri, int *fd);
/* Hand m to the worker (it frees it). */
void vcmad_lv_post(struct vcmad_lv_worker *w, struct vcmad_lv_msg *m);
/* The messages waiting for the loop, oldest first (NULL: none); clears the fd. */
struct vcmad_lv_msg *vcmad_lv_take(struct vcmad_lv_worker *w);
/* Stop the worker, join it, free what is left. */
void vcmad_lv_worker_stop(struct vcmad_lv_worker *w);

/* Pure helpers (unit-tested): the value of attribute attr of the first element in
 * xml (single or double quotes); 0, or -ENOENT, -ENAMETOOLONG. */
int vcmad_lv_xml_attr(const char *xml, const char *attr, char *out, size_t len);
/* The metadata element attach writes: old's (libvirt's string, freed here; NULL:
 * none) class, quota and lend kept, class replaced by devclass unless "". Written
 * in double quotes, as libvirt writes them (a '"' in a value comes as &quot;). */
void vcmad_lv_meta_xml(char *out, size_t len, char *old, const char *devclass);
/* The <shmem> element vcmad attaches for a guest on socket sock. */
int vcmad_lv_shmem_xml(char *out, size_t len, const char *sock);
/* xml with the virtio-mem <memory> device's <requested> set to kib: a new string
 * holding just that <memory> element (what virDomainUpdateDeviceFlags wants), or
 * NULL with errno (ENOENT: no virtio-mem device). */
char *vcmad_lv_vmem_update_xml(const char *domxml, uint64_t kib);

#endif
