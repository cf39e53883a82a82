// SPDX-License-Identifier: MIT
/*
 * conf.c - vcmad.conf parsing.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "conf.h"
#include "errmsg.h"
#include "vcma_name.h"

void vcmad_conf_defaults(struct vcmad_conf *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->runtime_dir, sizeof(c->runtime_dir), "%s", VCMAD_DEFAULT_RUNTIME_DIR);
	snprintf(c->backend, sizeof(c->backend), "sim");
	c->max_guests = 64;
	c->open_attach = true;
	c->lend_share = 50;
	c->pause_timeout_ms = 200;
	c->max_pause_us = 1000;
	c->precopy = true;
	c->relend_idle_ms = 200;
	c->lazy_free_ms = 10;
	c->shutdown_grace_ms = 2000;
	c->reattach_grace_ms = 5000;
	c->machine_bytes = 1ull << 30;
	c->limits.max_regions = 256;
	c->limits.max_bytes = UINT64_MAX;
	c->limits.rate = 20000;
	c->limits.burst = 4096;
	c->limits.max_ram = 4ull << 30;
	c->limits.ring_slots = 64;
}

enum section { SEC_NONE, SEC_DAEMON, SEC_LIMITS, SEC_MACHINE, SEC_POOL, SEC_GUEST, SEC_LIBVIRT };

static int parse_u64(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long x;

	if (!isdigit((unsigned char)*v))
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno || *end || x < lo || x > hi)
		return -EINVAL;
	*out = x;
	return 0;
}

/* A group name, or none (""). */
static int set_group(char *dst, size_t len, const char *v, const char **msg)
{
	size_t n = strlen(v);

	if (!strcmp(v, "none")) {
		dst[0] = '\0';
		return 0;
	}
	if (v[0] == '-' || !vcma_name_ok(v, n, len)) {
		*msg = "expected a group name (1-32 of A-Z a-z 0-9 _ . -), or none";
		return -EINVAL;
	}
	memcpy(dst, v, n + 1);
	return 0;
}

/* One key of a non-pool section; returns 0, or -EINVAL with msg set. */
static int set_key(struct vcmad_conf *c, enum section sec, const char *k, const char *v, const char **msg)
{
	uint64_t x;

	*msg = NULL;
	if (sec == SEC_DAEMON && !strcmp(k, "runtime_dir")) {
		if (v[0] != '/' || strlen(v) >= sizeof(c->runtime_dir) - 32) {
			*msg = "expected an absolute path shorter than 224 characters";
			return -EINVAL;
		}
		snprintf(c->runtime_dir, sizeof(c->runtime_dir), "%s", v);
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "state_dir")) {
		if ((v[0] != '/' && strcmp(v, "none")) || strlen(v) >= sizeof(c->state_dir) - 32) {
			*msg = "expected an absolute path shorter than 224 characters, or none";
			return -EINVAL;
		}
		snprintf(c->state_dir, sizeof(c->state_dir), "%s", v);
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "backend")) {
		if (strcmp(v, "sim") && strcmp(v, "xen")) {
			*msg = "expected sim (simulated machine memory and VMs) or xen (vcmad in dom0)";
			return -EINVAL;
		}
		snprintf(c->backend, sizeof(c->backend), "%s", v);
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "max_guests")) {
		if (parse_u64(v, 1, 4096, &x)) {
			*msg = "expected a number from 1 to 4096";
			return -EINVAL;
		}
		c->max_guests = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "lend_share")) {
		size_t n = strlen(v);
		char num[16];

		if (n == 0 || n >= sizeof(num) || v[n - 1] != '%') {
			*msg = "expected a percentage from 0% to 100%";
			return -EINVAL;
		}
		memcpy(num, v, n - 1);
		num[n - 1] = '\0';
		if (parse_u64(num, 0, 100, &x)) {
			*msg = "expected a percentage from 0% to 100%";
			return -EINVAL;
		}
		c->lend_share = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "pause_timeout_ms")) {
		if (parse_u64(v, 1, 60000, &x)) {
			*msg = "expected milliseconds from 1 to 60000";
			return -EINVAL;
		}
		c->pause_timeout_ms = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "max_pause_us")) {
		if (parse_u64(v, 50, 1000000, &x)) {
			*msg = "expected microseconds from 50 to 1000000";
			return -EINVAL;
		}
		c->max_pause_us = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "precopy")) {
		if (strcmp(v, "yes") && strcmp(v, "no")) {
			*msg = "expected yes or no";
			return -EINVAL;
		}
		c->precopy = !strcmp(v, "yes");
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "relend_idle_ms")) {
		if (parse_u64(v, 1, 3600000, &x)) {
			*msg = "expected milliseconds from 1 to 3600000";
			return -EINVAL;
		}
		c->relend_idle_ms = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "lazy_free_ms")) {
		if (parse_u64(v, 0, 1000, &x)) {
			*msg = "expected milliseconds from 0 (off) to 1000";
			return -EINVAL;
		}
		c->lazy_free_ms = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "shutdown_grace_ms")) {
		if (parse_u64(v, 0, 600000, &x)) {
			*msg = "expected milliseconds from 0 to 600000";
			return -EINVAL;
		}
		c->shutdown_grace_ms = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "reattach_grace_ms")) {
		if (parse_u64(v, 0, 3600000, &x)) {
			*msg = "expected milliseconds from 0 to 3600000";
			return -EINVAL;
		}
		c->reattach_grace_ms = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_DAEMON && !strcmp(k, "poll_us")) {
		if (parse_u64(v, 0, 100000, &x)) {
			*msg = "expected microseconds from 0 (off) to 100000";
			return -EINVAL;
		}
		c->poll_us = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_LIBVIRT && !strcmp(k, "uri")) {
		size_t n = strlen(v);

		if (!n || n >= sizeof(c->libvirt.uri) || !strstr(v, "://")) {
			*msg = "expected a libvirt URI such as qemu:///system or qemu:///embed?root=/var/lib/vcma/libvirt";
			return -EINVAL;
		}
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)v[i] <= 0x20 || v[i] == 0x7f) {
				*msg = "a URI has no spaces or control characters";
				return -EINVAL;
			}
		memcpy(c->libvirt.uri, v, n + 1);
		return 0;
	}
	if (sec == SEC_LIBVIRT && !strcmp(k, "socket_group"))
		return set_group(c->libvirt.socket_group, sizeof(c->libvirt.socket_group), v, msg);
	if (sec == SEC_DAEMON && !strcmp(k, "ctl_group"))
		return set_group(c->ctl_group, sizeof(c->ctl_group), v, msg);
	if (sec == SEC_DAEMON && !strcmp(k, "attach_group"))
		return set_group(c->attach_group, sizeof(c->attach_group), v, msg);
	if (sec == SEC_DAEMON && !strcmp(k, "open_attach")) {
		if (strcmp(v, "yes") && strcmp(v, "no")) {
			*msg = "expected yes or no";
			return -EINVAL;
		}
		c->open_attach = !strcmp(v, "yes");
		return 0;
	}
	if (sec == SEC_MACHINE && !strcmp(k, "memory")) {
		if (vcma_parse_bytes(v, &x) || x < (16ull << 20) || x > (1ull << 40) || x % VCMA_PAGE_SIZE) {
			*msg = "expected a page-aligned size from 16M to 1T";
			return -EINVAL;
		}
		c->machine_bytes = x;
		return 0;
	}
	if (sec == SEC_MACHINE && !strcmp(k, "file")) {
		if (v[0] != '/' || strlen(v) >= sizeof(c->machine_file) - 1) {
			*msg = "expected an absolute path shorter than 255 characters";
			return -EINVAL;
		}
		snprintf(c->machine_file, sizeof(c->machine_file), "%s", v);
		return 0;
	}
	if (sec == SEC_LIMITS && !strcmp(k, "max_regions_per_guest")) {
		if (parse_u64(v, 1, 65536, &x)) {
			*msg = "expected a number from 1 to 65536";
			return -EINVAL;
		}
		c->limits.max_regions = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_LIMITS && !strcmp(k, "max_bytes_per_guest")) {
		if (!strcmp(v, "none")) {
			c->limits.max_bytes = UINT64_MAX;
			return 0;
		}
		if (vcma_parse_bytes(v, &x) || x < VCMA_PAGE_SIZE) {
			*msg = "expected a size like 256M, or none";
			return -EINVAL;
		}
		c->limits.max_bytes = x;
		return 0;
	}
	if (sec == SEC_LIMITS && !strcmp(k, "request_rate")) {
		if (parse_u64(v, 1, 10000000, &x)) {
			*msg = "expected requests per second from 1 to 10000000";
			return -EINVAL;
		}
		c->limits.rate = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_LIMITS && !strcmp(k, "request_burst")) {
		if (parse_u64(v, 1, 1000000, &x)) {
			*msg = "expected a number from 1 to 1000000";
			return -EINVAL;
		}
		c->limits.burst = (uint32_t)x;
		return 0;
	}
	if (sec == SEC_LIMITS && !strcmp(k, "max_ram_per_guest")) {
		if (vcma_parse_bytes(v, &x) || x < VCMA_PAGE_SIZE || x % VCMA_PAGE_SIZE) {
			*msg = "expected a page-aligned size like 512M";
			return -EINVAL;
		}
		c->limits.max_ram = x;
		return 0;
	}
	if (sec == SEC_LIMITS && !strcmp(k, "ring_slots")) {
		if (parse_u64(v, 8, 1024, &x) || (x & (x - 1))) {
			*msg = "expected a power of two from 8 to 1024";
			return -EINVAL;
		}
		c->limits.ring_slots = (uint32_t)x;
		return 0;
	}
	*msg = "unknown key";
	return -EINVAL;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* users = a comma-separated list of user names or numeric uids */
static int set_users(struct vcmad_guest_conf *g, const char *v, const char **msg)
{
	char buf[512], *save = NULL;

	if (strlen(v) >= sizeof(buf)) {
		*msg = "too long";
		return -EINVAL;
	}
	memcpy(buf, v, strlen(v) + 1);
	g->nusers = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t uid;

		t = trim(t);
		if (g->nusers == VCMAD_GUEST_MAX_USERS) {
			*msg = "at most 8 users";
			return -EINVAL;
		}
		if (!parse_u64(t, 0, UINT32_MAX - 1, &uid)) {
			g->users[g->nusers++] = (uint32_t)uid;
			continue;
		}
		struct passwd pw, *res = NULL;
		char pwbuf[1024];

		if (!vcma_name_str_ok(t, 33) || getpwnam_r(t, &pw, pwbuf, sizeof(pwbuf), &res) || !res) {
			*msg = "expected user names or uids, comma-separated (a name here is not a user)";
			return -EINVAL;
		}
		g->users[g->nusers++] = (uint32_t)res->pw_uid;
	}
	if (!g->nusers) {
		*msg = "expected user names or uids, comma-separated";
		return -EINVAL;
	}
	return 0;
}

/* Keys that belong to one backend, and whether g has one of another backend's. */
static enum vcmad_guest_kind key_kind(const char *k)
{
	if (!strcmp(k, "socket") || !strcmp(k, "hugepages") || !strcmp(k, "socket_group") || !strcmp(k, "qmp") || !strcmp(k, "vmem_device") ||
	    !strcmp(k, "lend_max") || !strcmp(k, "reclaim_timeout_ms"))
		return VCMAD_GUEST_QEMU;
	if (!strcmp(k, "users") || !strcmp(k, "vmm"))
		return VCMAD_GUEST_SIM;
	if (!strcmp(k, "attach"))
		return VCMAD_GUEST_XEN;
	return VCMAD_GUEST_NONE;
}

static bool has_keys_of_other(const struct vcmad_guest_conf *g, enum vcmad_guest_kind kind)
{
	bool qemu = g->socket[0] || g->hugepages || g->socket_group[0] || g->qmp[0] || g->vmem_device[0] || g->lend_max ||
		    g->reclaim_timeout_ms || g->lender == VCMAD_LENDER_VMEM;
	bool sim = g->nusers || g->vmm_set, xen = g->attach_set || g->lender == VCMAD_LENDER_BALLOON;

	return (qemu && kind != VCMAD_GUEST_QEMU) || (sim && kind != VCMAD_GUEST_SIM) || (xen && kind != VCMAD_GUEST_XEN);
}

static const char *const kind_names[] = { "", "qemu", "sim", "xen" };

/* lender = yes (xen: the balloon), virtio-mem (qemu) or no. */
static int set_lender(struct vcmad_guest_conf *g, const char *v, const char **msg)
{
	enum vcmad_lender_kind lk = !strcmp(v, "yes")          ? VCMAD_LENDER_BALLOON
				    : !strcmp(v, "virtio-mem") ? VCMAD_LENDER_VMEM
							       : VCMAD_LENDER_NONE;
	enum vcmad_guest_kind need = lk == VCMAD_LENDER_VMEM ? VCMAD_GUEST_QEMU : VCMAD_GUEST_XEN;

	if (lk == VCMAD_LENDER_NONE && strcmp(v, "no")) {
		*msg = "expected yes (xen: idle pool capacity backs the domain's balloon), virtio-mem (qemu: through "
		       "its virtio-mem device) or no";
		return -EINVAL;
	}
	if (lk != VCMAD_LENDER_NONE && g->kind != VCMAD_GUEST_NONE && g->kind != need) {
		*msg = lk == VCMAD_LENDER_VMEM ? "lender = virtio-mem needs backend = qemu"
					       : "lender = yes is a Xen domain's balloon: it needs backend = xen "
						 "(QEMU guests: lender = virtio-mem)";
		return -EINVAL;
	}
	g->lender = lk;
	g->lender_set = true;
	return 0;
}

/* The virtio-mem lender's keys: qmp, vmem_device, lend_max, reclaim_timeout_ms. */
static int set_vmem_key(struct vcmad_guest_conf *g, const char *k, const char *v, const char **msg)
{
	uint64_t x;

	if (!strcmp(k, "qmp")) {
		if (v[0] != '/' || strlen(v) >= sizeof(g->qmp)) {
			*msg = "expected the absolute path of QEMU's QMP socket, shorter than 108 characters";
			return -EINVAL;
		}
		memcpy(g->qmp, v, strlen(v) + 1);
		return 0;
	}
	if (!strcmp(k, "vmem_device")) {
		if (!vcma_name_str_ok(v, sizeof(g->vmem_device))) {
			*msg = "expected the virtio-mem device's QOM id (-device virtio-mem-pci,id=...: 1-63 of A-Z a-z "
			       "0-9 _ . -)";
			return -EINVAL;
		}
		memcpy(g->vmem_device, v, strlen(v) + 1);
		return 0;
	}
	if (!strcmp(k, "lend_max")) {
		if (vcma_parse_bytes(v, &x) || x < (2ull << 20) || x > (1ull << 40) || x % (2ull << 20)) {
			*msg = "expected a size in 2 MiB units from 2M to 1T, like 256M";
			return -EINVAL;
		}
		g->lend_max = x;
		return 0;
	}
	if (parse_u64(v, 100, 600000, &x)) { /* reclaim_timeout_ms */
		*msg = "expected milliseconds from 100 to 600000";
		return -EINVAL;
	}
	g->reclaim_timeout_ms = (uint32_t)x;
	return 0;
}

/* One key of a [guest NAME] section. A key of another backend is refused, in
 * whichever order the section gives `backend` and its keys. */
static int set_guest_key(struct vcmad_guest_conf *g, const char *k, const char *v, const char **msg)
{
	enum vcmad_guest_kind kk = key_kind(k);

	if (!strcmp(k, "backend")) {
		enum vcmad_guest_kind kind = !strcmp(v, "qemu") ? VCMAD_GUEST_QEMU
					     : !strcmp(v, "sim") ? VCMAD_GUEST_SIM
					     : !strcmp(v, "xen") ? VCMAD_GUEST_XEN : VCMAD_GUEST_NONE;

		if (kind == VCMAD_GUEST_NONE) {
			*msg = "expected qemu (a QEMU guest over ivshmem), sim (a client of the sim attach socket) or "
			       "xen (a Xen domain over xenbus)";
			return -EINVAL;
		}
		if (has_keys_of_other(g, kind)) {
			*msg = "the section already has a key of another backend";
			return -EINVAL;
		}
		g->kind = kind;
		return 0;
	}
	if (kk != VCMAD_GUEST_NONE && g->kind != VCMAD_GUEST_NONE && kk != g->kind) {
		static char buf[96];

		snprintf(buf, sizeof(buf), "a key of backend = %s, in a backend = %s section", kind_names[kk],
			 kind_names[g->kind]);
		*msg = buf;
		return -EINVAL;
	}
	if (!strcmp(k, "lender"))
		return set_lender(g, v, msg);
	if (!strcmp(k, "attach")) {
		if (strcmp(v, "auto") && strcmp(v, "manual")) {
			*msg = "expected auto (vcmad makes the domain's vcma device when it appears) or manual "
			       "(vcmactl attach --xen)";
			return -EINVAL;
		}
		g->manual_attach = !strcmp(v, "manual");
		g->attach_set = true;
		return 0;
	}
	if (!strcmp(k, "qmp") || !strcmp(k, "vmem_device") || !strcmp(k, "lend_max") ||
	    !strcmp(k, "reclaim_timeout_ms"))
		return set_vmem_key(g, k, v, msg);
	if (!strcmp(k, "users"))
		return set_users(g, v, msg);
	if (!strcmp(k, "vmm")) {
		if (strcmp(v, "yes") && strcmp(v, "no")) {
			*msg = "expected yes or no";
			return -EINVAL;
		}
		g->vmm = !strcmp(v, "yes");
		g->vmm_set = true;
		return 0;
	}
	if (!strcmp(k, "quota")) {
		uint64_t x;

		if (vcma_parse_bytes(v, &x) || x < VCMA_PAGE_SIZE || x % VCMA_PAGE_SIZE) {
			*msg = "expected a size such as 64M, a multiple of 4K";
			return -EINVAL;
		}
		g->quota = x;
		return 0;
	}
	if (!strcmp(k, "class")) {
		if (!vcma_name_str_ok(v, sizeof(g->devclass))) {
			*msg = "expected a device class name (1-31 of A-Z a-z 0-9 _ . -)";
			return -EINVAL;
		}
		memcpy(g->devclass, v, strlen(v) + 1);
		return 0;
	}
	if (!strcmp(k, "socket")) {
		if (v[0] != '/' || strlen(v) >= sizeof(g->socket)) {
			*msg = "expected an absolute path shorter than 108 characters";
			return -EINVAL;
		}
		memcpy(g->socket, v, strlen(v) + 1);
		return 0;
	}
	if (!strcmp(k, "socket_group"))
		return set_group(g->socket_group, sizeof(g->socket_group), v, msg);
	if (!strcmp(k, "hugepages")) {
		if (strcmp(v, "on") && strcmp(v, "off")) {
			*msg = "expected on or off";
			return -EINVAL;
		}
		g->hugepages = !strcmp(v, "on");
		return 0;
	}
	*msg = "unknown key";
	return -EINVAL;
}

int vcmad_conf_parse(struct vcmad_conf *c, const char *text, const char *name, char *err, size_t errlen)
{
	enum section sec = SEC_NONE;
	struct vcma_pool_config *pool = NULL;
	struct vcmad_guest_conf *guest = NULL;
	unsigned int lineno = 0;
	const char *p = text;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char line[1024], *s, *eq, *k, *v;

		lineno++;
		if (len >= sizeof(line)) {
			vcma_seterr(err, errlen, "%s:%u: line too long", name, lineno);
			return -EINVAL;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		p = nl ? nl + 1 : p + len;
		if ((s = strchr(line, '#')))
			*s = '\0';
		s = trim(line);
		if (!*s)
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');

			if (!end || end[1]) {
				vcma_seterr(err, errlen, "%s:%u: malformed section header '%s'", name, lineno, s);
				return -EINVAL;
			}
			*end = '\0';
			s = trim(s + 1);
			pool = NULL;
			guest = NULL;
			if (!strcmp(s, "daemon")) {
				sec = SEC_DAEMON;
			} else if (!strcmp(s, "limits")) {
				sec = SEC_LIMITS;
			} else if (!strcmp(s, "machine")) {
				sec = SEC_MACHINE;
			} else if (!strcmp(s, "libvirt")) {
				sec = SEC_LIBVIRT;
			} else if (!strncmp(s, "pool", 4) && isspace((unsigned char)s[4])) {
				char perr[200];
				const char *pname = trim(s + 5);

				for (uint32_t i = 0; i < c->npools; i++)
					if (!strcmp(c->pool[i].name, pname)) {
						vcma_seterr(err, errlen, "%s:%u: pool '%s' defined twice", name, lineno, pname);
						return -EINVAL;
					}
				if (c->npools >= VCMA_MAX_POOLS) {
					vcma_seterr(err, errlen, "%s:%u: more than %u pools", name, lineno, VCMA_MAX_POOLS);
					return -EINVAL;
				}
				pool = &c->pool[c->npools];
				if (vcma_pool_config_init(pool, pname, perr, sizeof(perr))) {
					vcma_seterr(err, errlen, "%s:%u: %s", name, lineno, perr);
					return -EINVAL;
				}
				c->npools++;
				sec = SEC_POOL;
			} else if (!strncmp(s, "guest", 5) && isspace((unsigned char)s[5])) {
				const char *gname = trim(s + 6);

				if (!vcma_name_str_ok(gname, VCMAD_GUEST_NAME_MAX)) {
					vcma_seterr(err, errlen, "%s:%u: guest name '%s': expected 1-31 of A-Z a-z 0-9 _ . -",
						    name, lineno, gname);
					return -EINVAL;
				}
				if (vcmad_conf_guest(c, gname)) {
					vcma_seterr(err, errlen, "%s:%u: guest '%s' defined twice", name, lineno, gname);
					return -EINVAL;
				}
				if (!strcmp(gname, VCMAD_RESERVED_GUEST_NAME)) {
					vcma_seterr(err, errlen, "%s:%u: guest name '%s' is reserved (vcmactl's own allocations)",
						    name, lineno, gname);
					return -EINVAL;
				}
				if (c->nguests >= VCMAD_MAX_CONF_GUESTS) {
					vcma_seterr(err, errlen, "%s:%u: more than %u guests", name, lineno,
						    VCMAD_MAX_CONF_GUESTS);
					return -EINVAL;
				}
				guest = &c->guests[c->nguests++];
				memset(guest, 0, sizeof(*guest));
				guest->vmm = true;
				memcpy(guest->name, gname, strlen(gname) + 1);
				sec = SEC_GUEST;
			} else {
				vcma_seterr(err, errlen, "%s:%u: unknown section '[%s]'", name, lineno, s);
				return -EINVAL;
			}
			continue;
		}
		eq = strchr(s, '=');
		if (!eq) {
			vcma_seterr(err, errlen, "%s:%u: expected 'key = value', got '%s'", name, lineno, s);
			return -EINVAL;
		}
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		if (sec == SEC_NONE) {
			vcma_seterr(err, errlen, "%s:%u: %s: key outside of any section", name, lineno, k);
			return -EINVAL;
		}
		if (sec == SEC_POOL) {
			char perr[200];

			if (vcma_pool_config_set(pool, k, v, perr, sizeof(perr))) {
				vcma_seterr(err, errlen, "%s:%u: pool %s: %s", name, lineno, pool->name, perr);
				return -EINVAL;
			}
			continue;
		}
		const char *msg;

		if (sec == SEC_GUEST ? set_guest_key(guest, k, v, &msg) : set_key(c, sec, k, v, &msg)) {
			if (!strcmp(msg, "unknown key"))
				vcma_seterr(err, errlen, "%s:%u: %s: unknown key in this section", name, lineno, k);
			else
				vcma_seterr(err, errlen, "%s:%u: %s: invalid value '%s' (%s)", name, lineno, k, v, msg);
			return -EINVAL;
		}
	}
	return 0;
}

int vcmad_conf_load(struct vcmad_conf *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf;
	size_t n;
	int rc;

	if (!f) {
		rc = -errno;
		vcma_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return rc;
	}
	buf = malloc(1 << 20);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, (1 << 20) - 1, f);
	if (ferror(f) || !feof(f)) {
		vcma_seterr(err, errlen, "%s: %s", path, ferror(f) ? "read error" : "larger than 1 MiB");
		fclose(f);
		free(buf);
		return -EINVAL;
	}
	fclose(f);
	buf[n] = '\0';
	if (memchr(buf, '\0', n)) {
		vcma_seterr(err, errlen, "%s: contains a NUL byte", path);
		free(buf);
		return -EINVAL;
	}
	rc = vcmad_conf_parse(c, buf, path, err, errlen);
	free(buf);
	return rc;
}

int vcmad_conf_override_pool_size(struct vcmad_conf *c, const char *arg, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');
	char name[VCMA_POOL_NAME_MAX], perr[200];
	size_t len;

	if (!eq || eq == arg || (len = (size_t)(eq - arg)) >= sizeof(name)) {
		vcma_seterr(err, errlen, "--pool-size: expected NAME=SIZE, got '%s'", arg);
		return -EINVAL;
	}
	memcpy(name, arg, len);
	name[len] = '\0';
	for (uint32_t i = 0; i < c->npools; i++) {
		if (strcmp(c->pool[i].name, name))
			continue;
		if (vcma_pool_config_override_size(&c->pool[i], eq + 1, perr, sizeof(perr))) {
			vcma_seterr(err, errlen, "--pool-size: %s", perr);
			return -EINVAL;
		}
		return 0;
	}
	vcma_seterr(err, errlen, "--pool-size: no pool named '%s' in the configuration", name);
	return -EINVAL;
}

/* A virtio-mem lender has its QMP socket and device; its keys mean nothing without it. */
static int check_vmem(const struct vcmad_guest_conf *g, char *err, size_t errlen)
{
	bool keys = g->qmp[0] || g->vmem_device[0] || g->lend_max || g->reclaim_timeout_ms;

	if (g->lender != VCMAD_LENDER_VMEM && keys) {
		vcma_seterr(err, errlen, "guest %s: qmp, vmem_device, lend_max and reclaim_timeout_ms are for "
			    "lender = virtio-mem, which the section does not say", g->name);
		return -EINVAL;
	}
	if (g->lender == VCMAD_LENDER_VMEM && (!g->qmp[0] || !g->vmem_device[0])) {
		vcma_seterr(err, errlen, "guest %s: lender = virtio-mem needs qmp = PATH (QEMU's -qmp unix socket) and "
			    "vmem_device = ID (its -device virtio-mem-pci,id=ID)", g->name);
		return -EINVAL;
	}
	return 0;
}

int vcmad_conf_validate(const struct vcmad_conf *c, char *err, size_t errlen)
{
	if (!c->npools) {
		vcma_seterr(err, errlen, "no [pool NAME] section: vcmad needs at least one pool");
		return -EINVAL;
	}
	for (uint32_t i = 0; i < c->npools; i++)
		if (vcma_pool_config_validate(&c->pool[i], err, errlen))
			return -EINVAL;
	for (uint32_t i = 0; i < c->nguests; i++) {
		const struct vcmad_guest_conf *g = &c->guests[i];

		if (g->kind == VCMAD_GUEST_NONE) {
			vcma_seterr(err, errlen,
				    "guest %s: no backend (expected 'backend = qemu', 'backend = sim' or 'backend = xen')",
				    g->name);
			return -EINVAL;
		}
		/* Xen guests live on the Xen backend, and only they do */
		if ((g->kind == VCMAD_GUEST_XEN) != !strcmp(c->backend, "xen")) {
			vcma_seterr(err, errlen, "guest %s: backend = %s guests need [daemon] backend = %s", g->name,
				    kind_names[g->kind], g->kind == VCMAD_GUEST_XEN ? "xen" : "sim");
			return -EINVAL;
		}
		if (g->kind != VCMAD_GUEST_QEMU)
			continue;
		if (check_vmem(g, err, errlen))
			return -EINVAL;
		if (!g->socket[0] &&
		    strlen(c->runtime_dir) + 1 + strlen(g->name) + sizeof(".ivshmem") > sizeof(g->socket)) {
			vcma_seterr(err, errlen, "guest %s: socket path %s/%s.ivshmem is too long: set 'socket'",
				    g->name, c->runtime_dir, g->name);
			return -EINVAL;
		}
		for (uint32_t j = 0; j < i; j++)
			if (g->socket[0] && !strcmp(g->socket, c->guests[j].socket)) {
				vcma_seterr(err, errlen, "guests %s and %s: the same socket %s", c->guests[j].name,
					    g->name, g->socket);
				return -EINVAL;
			}
	}
	if (c->libvirt.uri[0] && strcmp(c->backend, "sim")) {
		vcma_seterr(err, errlen, "[libvirt] uri: libvirt domains are QEMU guests, served on backend = sim, "
					 "not backend = %s", c->backend);
		return -EINVAL;
	}
	/* every configured guest has a slot of its own (vcmad_guest_slot) */
	if (c->nguests > c->max_guests) {
		vcma_seterr(err, errlen, "%u [guest] sections but max_guests = %u", c->nguests, c->max_guests);
		return -EINVAL;
	}
	return 0;
}

const struct vcmad_guest_conf *vcmad_conf_guest(const struct vcmad_conf *c, const char *name)
{
	for (uint32_t i = 0; i < c->nguests; i++)
		if (!strcmp(c->guests[i].name, name))
			return &c->guests[i];
	return NULL;
}

uint32_t vcmad_conf_count_guests(const struct vcmad_conf *c, enum vcmad_guest_kind kind)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < c->nguests; i++)
		n += c->guests[i].kind == kind;
	return n;
}

const char *vcmad_conf_state_dir(const struct vcmad_conf *c, char *buf, size_t len)
{
	if (!strcmp(c->state_dir, "none"))
		snprintf(buf, len, "%s", "");
	else if (c->state_dir[0])
		snprintf(buf, len, "%s", c->state_dir);
	else if (!strcmp(c->runtime_dir, VCMAD_DEFAULT_RUNTIME_DIR))
		snprintf(buf, len, "%s", VCMAD_DEFAULT_STATE_DIR);
	else /* a second instance, or a test: never share the first one's */
		snprintf(buf, len, "%s/state", c->runtime_dir);
	return buf;
}

int vcmad_mkdir_p(const char *path, mode_t mode)
{
	char buf[256];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}
