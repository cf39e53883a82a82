/* SPDX-License-Identifier: MIT */
/*
 * libvirt.h - libvirt-managed guests ([libvirt] uri): discovery, attach, lifecycle.
 * vcmad's loop side; every libvirt call is on the worker thread (libvirt_worker.h).
 *
 *   discovery  a domain whose <metadata> holds <vcma:guest class=... lend=.../>
 *              (VCMAD_LV_XMLNS) becomes a run-time [guest NAME] backend = qemu
 *              (vcmad_guest_expect: the ivshmem link makes $runtime_dir/NAME.ivshmem,
 *              group [libvirt] socket_group); metadata removed or domain undefined:
 *              forgotten (detached first if attached)
 *   attach     vcmactl attach DOMAIN [--class C]: the guest is expected, then the
 *              worker sets the metadata and adds the <shmem> device, live (if the
 *              domain runs) and persistent; detach removes both
 *   lifecycle  STOPPED (destroyed, shut down, crashed: kill -9 arrives as
 *              STOPPED/FAILED) detaches the domain's guest at once: its regions are
 *              reclaimed; the time from libvirt's event to reclaimed is counted
 *   domains    vcmactl domain define|start|destroy|undefine: with an embed URI vcmad
 *              is the only process that can reach its domains
 *
 * Built only with libvirt (meson option libvirt); without it, a [libvirt] uri is an
 * error at start that says so.
 */
#ifndef VCMA_HV_LIBVIRT_H
#define VCMA_HV_LIBVIRT_H

#include <stddef.h>
#include <stdint.h>

struct json_object;
struct vcmad;

enum vcmad_lv_request { VCMAD_LVR_ATTACH, VCMAD_LVR_DETACH, VCMAD_LVR_DEFINE, VCMAD_LVR_START,
			VCMAD_LVR_DESTROY, VCMAD_LVR_UNDEFINE };

/* The answer to a request, from the loop: err 0 with res (owned by the callee), or a
 * negative errno with msg. */
typedef void (*vcmad_lv_done_fn)(void *arg, int err, const char *msg, struct json_object *res);

#ifdef VCMA_HAVE_LIBVIRT
int vcmad_libvirt_start(struct vcmad *d);
void vcmad_libvirt_stop(struct vcmad *d);
/* Start a request for vcmactl; 0 (done follows) or -errno with msg (no callback).
 * domain for all but DEFINE; xml for DEFINE; devclass for ATTACH ("" = none). */
int vcmad_libvirt_request(struct vcmad *d, enum vcmad_lv_request rq, const char *domain, const char *devclass,
			  const char *xml, vcmad_lv_done_fn done, void *arg, char *msg, size_t len);
/* arg is going away: its pending requests are answered to nobody. */
void vcmad_libvirt_cancel(struct vcmad *d, void *arg);
/* vcmactl status/stats: {"uri", "connected", "domains", "stops", ...}; NULL without libvirt. */
struct json_object *vcmad_libvirt_json(struct vcmad *d);
#else
static inline int vcmad_libvirt_start(struct vcmad *d)
{
	(void)d;
	return 0;
}
static inline void vcmad_libvirt_stop(struct vcmad *d)
{
	(void)d;
}
static inline int vcmad_libvirt_request(struct vcmad *d, enum vcmad_lv_request rq, const char *domain,
					const char *devclass, const char *xml, vcmad_lv_done_fn done, void *arg,
					char *msg, size_t len)
{
	(void)d, (void)rq, (void)domain, (void)devclass, (void)xml, (void)done, (void)arg;
	if (len)
		*msg = '\0';
	return -EOPNOTSUPP;
}
static inline void vcmad_libvirt_cancel(struct vcmad *d, void *arg)
{
	(void)d, (void)arg;
}
static inline struct json_object *vcmad_libvirt_json(struct vcmad *d)
{
	(void)d;
	return NULL;
}
#endif

#endif
