/* SPDX-License-Identifier: MIT */
/*
 * conf.h - vcmad's configuration: an INI-style file, table-driven, every error as
 * "file:line: key: message". Command-line overrides are applied on top.
 *
 *   [daemon]   runtime_dir, backend, max_guests, poll_us, lend_share,
 *              pause_timeout_ms, max_pause_us, precopy, relend_idle_ms, lazy_free_ms, ctl_group
 *   [limits]   max_regions_per_guest, max_bytes_per_guest, request_rate,
 *              request_burst, max_ram_per_guest, ring_slots
 *   [machine]  memory            (sim backend: simulated machine memory; Xen: ignored)
 *   [pool NAME] any key of pool_config.h
 *   [guest NAME] a guest vcmad knows by name, and the identity it gets:
 *              backend = qemu: class, socket, hugepages; a QEMU guest vcmad serves
 *                over ivshmem-doorbell (hv/link/ivshmem.c); its socket is its name;
 *                lender = virtio-mem, qmp, vmem_device, lend_max, reclaim_timeout_ms:
 *                idle pool capacity is lent to it through its virtio-mem device (vmem.h)
 *              backend = sim: class, users, vmm; a client of the sim attach socket
 *                may take this name only if its uid is root, vcmad's, or in users
 *              backend = xen: class, attach, lender; the Xen domain of that name (PROTOCOL.md
 *                §9.3), its vcma device made by vcmad when it appears (attach = auto)
 *   [libvirt]  uri, socket_group: libvirt domains that opt in with vcma metadata
 *              become QEMU guests at run time (hv/libvirt.c)
 */
#ifndef VCMA_HV_CONF_H
#define VCMA_HV_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core.h"

#define VCMAD_DEFAULT_CONFIG "/etc/vcma/vcmad.conf"
#define VCMAD_DEFAULT_RUNTIME_DIR "/run/vcma"
#define VCMAD_DEFAULT_STATE_DIR "/var/lib/vcma"

struct vcmad_limits {
	uint32_t max_regions;  /* live regions per guest */
	uint64_t max_bytes;    /* region bytes per guest */
	uint32_t rate;         /* sustained requests per second per guest */
	uint32_t burst;        /* requests a guest may send at once above the rate */
	uint64_t max_ram;      /* RAM a simulated VM may ask vcmad to back */
	uint32_t ring_slots;   /* request ring slots (power of two, 8..1024) */
};

#define VCMAD_MAX_CONF_GUESTS 64u
#define VCMAD_GUEST_NAME_MAX 32u /* NUL included, as the sim transport's names */
#define VCMAD_GUEST_MAX_USERS 8u
#define VCMAD_RESERVED_GUEST_NAME "vcmactl" /* the owner of vcmactl's test allocations */

enum vcmad_guest_kind { VCMAD_GUEST_NONE, VCMAD_GUEST_QEMU, VCMAD_GUEST_SIM, VCMAD_GUEST_XEN };

/* How a guest borrows idle pool capacity (balloon.h), if it does. */
enum vcmad_lender_kind {
	VCMAD_LENDER_NONE,
	VCMAD_LENDER_BALLOON, /* xen, lender = yes: its balloon driver (the backend's lend ops) */
	VCMAD_LENDER_VMEM,    /* qemu, lender = virtio-mem: its virtio-mem device (vmem.h) */
};

#define VCMAD_VMEM_DEFAULT_LEND_MAX (256ull << 20)
/* Under TCG a guest with a full movable zone unplugs about 64 MiB/s (measured,
 * docs/KVM.md): all of the default lend_max in ~4 s; 10 s leaves room for a busy vCPU. */
#define VCMAD_VMEM_DEFAULT_RECLAIM_TIMEOUT_MS 10000u
#define VCMAD_VMEM_DEVICE_MAX 64u
/* One [guest NAME] section. */
struct vcmad_guest_conf {
	char name[VCMAD_GUEST_NAME_MAX];
	enum vcmad_guest_kind kind;          /* from `backend`; NONE until given */
	char devclass[VCMAD_GUEST_NAME_MAX]; /* "" = none */
	uint64_t quota;                      /* region bytes it may hold (0: [limits] max_bytes_per_guest) */
	/* qemu */
	char socket[108];                    /* "" = $runtime_dir/NAME.ivshmem */
	bool hugepages;                      /* back BAR2 with hugetlbfs (2 MiB pages) */
	char socket_group[33];               /* the socket's group (QEMU's, under libvirt); "" = vcmad's */
	bool libvirt;                        /* a libvirt domain of that name, found by discovery */
	/* sim */
	uint32_t nusers;
	uint32_t users[VCMAD_GUEST_MAX_USERS]; /* uids that may attach as NAME, beside root and vcmad's */
	bool vmm;                              /* may attach as a VMM (maps machine memory) */
	bool vmm_set;
	/* xen */
	bool manual_attach;                    /* attach = manual: only vcmactl attach --xen */
	bool attach_set;
	/* lending (xen: lender = yes; qemu: lender = virtio-mem and the keys below) */
	enum vcmad_lender_kind lender;
	bool lender_set;
	char qmp[108];                         /* QEMU's QMP socket (vmem_qmp.c); "" = another driver */
	char vmem_device[VCMAD_VMEM_DEVICE_MAX]; /* the virtio-mem device's QOM id */
	uint64_t lend_max;                     /* bytes lent at most (0 = VCMAD_VMEM_DEFAULT_LEND_MAX) */
	uint32_t reclaim_timeout_ms;           /* a take-back waits this long (0 = the default) */
};

/* [libvirt]: where libvirt-managed guests come from (hv/libvirt.c). */
struct vcmad_libvirt_conf {
	char uri[256];         /* "" = no libvirt */
	char socket_group[33]; /* group of the ivshmem sockets made for domains: QEMU's */
};

struct vcmad_conf {
	char runtime_dir[256];
	/* where ownership is recorded (durable.h); "" = not set: VCMAD_DEFAULT_STATE_DIR
	 * with the default runtime_dir, else RUNTIME_DIR/state (vcmad_conf_state_dir);
	 * "none" = not recorded */
	char state_dir[256];
	char backend[16];
	uint32_t max_guests;
	uint32_t poll_us; /* spin this long for more requests after serving some (0 = off) */
	uint32_t lend_share;       /* % of a VM's RAM backed by lendable pool frames */
	uint32_t pause_timeout_ms; /* a VMM must answer PAUSE within this */
	uint32_t max_pause_us;     /* target bound on one guest pause while vacating */
	bool precopy;              /* use what a VMM offers: drops, one-trip pauses, pre-copy */
	uint32_t relend_idle_ms;   /* quiet time before pages move back onto idle pool frames */
	uint32_t lazy_free_ms;     /* PROTOCOL.md §4.9: look at a guest's ring unkicked this long after its turn (0 = off) */
	uint32_t shutdown_grace_ms; /* on SIGTERM, how long guests get to detach */
	uint32_t reattach_grace_ms; /* after a restart, how long guests taken back get to reattach */
	char ctl_group[33]; /* may use the control socket besides root; "" = root only */
	char attach_group[33]; /* may connect to the sim attach socket besides root; "" = root only */
	bool open_attach;      /* unconfigured names may attach (as plain guests, no class) */
	uint64_t machine_bytes;
	char machine_file[256]; /* sim: where machine memory lives when state is recorded; "" = RUNTIME_DIR/machine.mem */
	struct vcmad_limits limits;
	uint32_t npools;
	struct vcma_pool_config pool[VCMA_MAX_POOLS];
	uint32_t nguests;
	struct vcmad_guest_conf guests[VCMAD_MAX_CONF_GUESTS];
	struct vcmad_libvirt_conf libvirt;
};

void vcmad_conf_defaults(struct vcmad_conf *c);
/* Parse text (name is used in messages). */
int vcmad_conf_parse(struct vcmad_conf *c, const char *text, const char *name, char *err, size_t errlen);
/* Read and parse a file. */
int vcmad_conf_load(struct vcmad_conf *c, const char *path, char *err, size_t errlen);
/* "NAME=SIZE": override one pool's size. */
int vcmad_conf_override_pool_size(struct vcmad_conf *c, const char *arg, char *err, size_t errlen);
/* Cross-checks after all input: pools valid, at least one pool. */
int vcmad_conf_validate(const struct vcmad_conf *c, char *err, size_t errlen);
/* mkdir -p: missing parents 0755, path itself mode. 0 or -errno. */
int vcmad_mkdir_p(const char *path, mode_t mode);
/* The state directory in effect: "" when ownership is not recorded. */
const char *vcmad_conf_state_dir(const struct vcmad_conf *c, char *buf, size_t len);
/* The [guest NAME] section of that name, or NULL. */
const struct vcmad_guest_conf *vcmad_conf_guest(const struct vcmad_conf *c, const char *name);
/* How many [guest] sections have this backend. */
uint32_t vcmad_conf_count_guests(const struct vcmad_conf *c, enum vcmad_guest_kind kind);

#endif
