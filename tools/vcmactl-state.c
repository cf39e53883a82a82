// SPDX-License-Identifier: MIT
/*
 * vcmactl-state.c - vcmactl state verify|show DIR: checks vcmad's state directory, or
 * lists what it records, offline (hv/store), without vcmad and without changing DIR.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "store.h"
#include "vcmactl.h"

#define STATE_VIOLATIONS_SHOWN 100 /* printed; the rest are counted */

struct state_out {
	bool json;
	struct json_object *viols;
	char warning[2048];
	unsigned long nviol;
};

static void state_warn(void *ctx, const char *msg)
{
	struct state_out *o = ctx;

	snprintf(o->warning, sizeof(o->warning), "%s", msg);
}

static void state_violation(void *ctx, const char *msg)
{
	struct state_out *o = ctx;

	if (o->nviol++ >= STATE_VIOLATIONS_SHOWN)
		return;
	if (o->json)
		json_object_array_add(o->viols, json_object_new_string(msg));
	else
		printf("violation: %s\n", msg);
}

int vcmactl_state_verify(const char *dir, bool json)
{
	struct state_out o = { .json = json };
	struct vcma_store_options opt = { .read_only = true, .warn = state_warn, .warn_ctx = &o };
	struct vcma_store_counts c;
	struct vcma_store_info info;
	struct vcma_store *s;
	char err[2048];
	int rc;

	rc = vcma_store_open(&s, dir, &opt, err, sizeof(err));
	if (rc) {
		if (json) {
			struct json_object *r = json_object_new_object();

			json_object_object_add(r, "dir", json_object_new_string(dir));
			json_object_object_add(r, "ok", json_object_new_boolean(0));
			json_object_object_add(r, "error", json_object_new_string(err));
			puts(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
			json_object_put(r);
		}
		fprintf(stderr, "vcmactl: state verify: %s\n", err);
		return VCMACTL_FAILED;
	}
	vcma_store_info(s, &info);
	if (json)
		o.viols = json_object_new_array();
	else if (o.warning[0])
		printf("warning: %s\n", o.warning);
	rc = vcma_store_verify(s, &c, state_violation, &o);
	if (rc < 0) {
		fprintf(stderr, "vcmactl: state verify: %s\n", vcma_store_error(s));
		json_object_put(o.viols);
		vcma_store_close(s);
		return VCMACTL_FAILED;
	}
	if (json) {
		struct json_object *r = json_object_new_object(), *n = json_object_new_object();

		json_object_object_add(r, "dir", json_object_new_string(dir));
		json_object_object_add(r, "file", json_object_new_string(vcma_store_path(s)));
		json_object_object_add(r, "last_txn", json_object_new_uint64(info.last_txn));
		json_object_object_add(r, "dropped_txn", info.dropped_txn ? json_object_new_uint64(info.dropped_txn) : NULL);
		json_object_object_add(r, "warning", o.warning[0] ? json_object_new_string(o.warning) : NULL);
		json_object_object_add(n, "meta", json_object_new_uint64(c.meta));
		json_object_object_add(n, "pools", json_object_new_uint64(c.pools));
		json_object_object_add(n, "guests", json_object_new_uint64(c.guests));
		json_object_object_add(n, "regions", json_object_new_uint64(c.regions));
		json_object_object_add(n, "p2m_runs", json_object_new_uint64(c.p2m));
		json_object_object_add(n, "lenders", json_object_new_uint64(c.lenders));
		json_object_object_add(r, "records", n);
		json_object_object_add(r, "violations", json_object_new_uint64(o.nviol));
		json_object_object_add(r, "violation_list", o.viols);
		json_object_object_add(r, "ok", json_object_new_boolean(rc == 0));
		puts(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
		json_object_put(r);
	} else {
		if (o.nviol > STATE_VIOLATIONS_SHOWN)
			printf("violation: ... and %lu more\n", o.nviol - STATE_VIOLATIONS_SHOWN);
		printf("state %s: last transaction %" PRIu64 "%s\n", vcma_store_path(s), info.last_txn,
		       info.dropped_txn ? " (the torn one after it would be dropped at start-up)" : "");
		printf("records: %" PRIu64 " meta, %" PRIu64 " pools, %" PRIu64 " guests, %" PRIu64 " regions, %" PRIu64
		       " p2m runs, %" PRIu64 " lenders\n", c.meta, c.pools, c.guests, c.regions, c.p2m, c.lenders);
		if (rc)
			printf("FAILED: %d violation%s\n", rc, rc == 1 ? "" : "s");
		else
			printf("OK: every frame owned at most once, regions inside their pools, no gfn backed twice\n");
	}
	vcma_store_close(s);
	return rc ? VCMACTL_FAILED : VCMACTL_OK;
}

/* ---- state show ---- */

struct show {
	bool json;
	struct json_object *pools, *guests, *regions, *vms;
	uint32_t vm;             /* the VM whose runs are being summed (text) */
	uint64_t vm_runs, vm_frames;
};

static const char *link_name(uint32_t link)
{
	return link == VCMA_STORE_LINK_SIM ? "sim" : link == VCMA_STORE_LINK_QEMU ? "qemu"
		: link == VCMA_STORE_LINK_XEN ? "xen" : "?";
}

static int show_pool(void *ctx, const struct vcma_store_pool *p)
{
	struct show *o = ctx;

	if (o->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "id", json_object_new_uint64(p->id));
		json_object_object_add(j, "name", json_object_new_string(p->name));
		json_object_object_add(j, "base_mfn", json_object_new_uint64(p->base_mfn));
		json_object_object_add(j, "frames", json_object_new_uint64(p->frames));
		json_object_array_add(o->pools, j);
	} else {
		printf("pool %u %s: mfn %#" PRIx64 ", %" PRIu64 " frames\n", p->id, p->name, p->base_mfn, p->frames);
	}
	return 0;
}

static int show_guest(void *ctx, const struct vcma_store_guest *g)
{
	struct show *o = ctx;

	if (o->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "id", json_object_new_uint64(g->id));
		json_object_object_add(j, "name", json_object_new_string(g->name));
		json_object_object_add(j, "class", json_object_new_string(g->class_name));
		json_object_object_add(j, "link", json_object_new_string(link_name(g->link)));
		json_object_object_add(j, "uid", json_object_new_uint64(g->sim_uid));
		json_object_object_add(j, "pid", json_object_new_uint64(g->qemu_pid));
		json_object_object_add(j, "start_time", json_object_new_uint64(g->qemu_start_time));
		json_object_object_add(j, "domid", json_object_new_uint64(g->xen_domid));
		json_object_array_add(o->guests, j);
	} else {
		printf("guest %u %s (%s link%s%s)", g->id, g->name, link_name(g->link), g->class_name[0] ? ", class " : "",
		       g->class_name);
		if (g->link == VCMA_STORE_LINK_QEMU)
			printf(": pid %u, started at tick %" PRIu64, g->qemu_pid, g->qemu_start_time);
		else if (g->link == VCMA_STORE_LINK_XEN)
			printf(": domid %u", g->xen_domid);
		else
			printf(": uid %u", g->sim_uid);
		printf("\n");
	}
	return 0;
}

static int show_region(void *ctx, const struct vcma_store_region *r)
{
	struct show *o = ctx;

	if (o->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "handle", json_object_new_uint64(r->handle));
		json_object_object_add(j, "guest", json_object_new_uint64(r->guest));
		json_object_object_add(j, "pool", json_object_new_uint64(r->pool));
		json_object_object_add(j, "mfn", json_object_new_uint64(r->first_mfn));
		json_object_object_add(j, "frames", json_object_new_uint64(r->frames));
		json_object_array_add(o->regions, j);
	} else {
		printf("region %#" PRIx64 ": guest %u, pool %u, mfn %#" PRIx64 ", %" PRIu64 " frames\n", r->handle, r->guest,
		       r->pool, r->first_mfn, r->frames);
	}
	return 0;
}

static void vm_flush(struct show *o)
{
	if (!o->vm_runs)
		return;
	if (o->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "vm", json_object_new_uint64(o->vm));
		json_object_object_add(j, "runs", json_object_new_uint64(o->vm_runs));
		json_object_object_add(j, "frames", json_object_new_uint64(o->vm_frames));
		json_object_array_add(o->vms, j);
	} else {
		printf("vm %u: %" PRIu64 " frames in %" PRIu64 " p2m run(s)\n", o->vm, o->vm_frames, o->vm_runs);
	}
	o->vm_runs = o->vm_frames = 0;
}

/* runs come sorted by (vm, gfn): one line per VM */
static int show_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	struct show *o = ctx;

	if (o->vm_runs && m->vm != o->vm)
		vm_flush(o);
	o->vm = m->vm;
	o->vm_runs++;
	o->vm_frames += m->count;
	return 0;
}

int vcmactl_state_show(const char *dir, bool json)
{
	static const struct vcma_store_replay_ops ops = {
		.pool = show_pool, .guest = show_guest, .region = show_region, .p2m = show_p2m,
	};
	struct vcma_store_options opt = { .read_only = true, .warn = state_warn };
	struct state_out w = { .json = json };
	struct show o = { .json = json };
	struct vcma_store_info info;
	struct vcma_store *s;
	char err[2048];
	int rc;

	opt.warn_ctx = &w;
	rc = vcma_store_open(&s, dir, &opt, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "vcmactl: state show: %s\n", err);
		return VCMACTL_FAILED;
	}
	vcma_store_info(s, &info);
	if (json) {
		o.pools = json_object_new_array();
		o.guests = json_object_new_array();
		o.regions = json_object_new_array();
		o.vms = json_object_new_array();
	} else {
		if (w.warning[0])
			printf("warning: %s\n", w.warning);
		printf("state %s: last transaction %" PRIu64 "\n", vcma_store_path(s), info.last_txn);
	}
	rc = vcma_store_replay(s, &ops, &o);
	vm_flush(&o);
	if (rc) {
		fprintf(stderr, "vcmactl: state show: %s\n", vcma_store_error(s));
		if (json) {
			json_object_put(o.pools);
			json_object_put(o.guests);
			json_object_put(o.regions);
			json_object_put(o.vms);
		}
		vcma_store_close(s);
		return VCMACTL_FAILED;
	}
	if (json) {
		struct json_object *r = json_object_new_object();

		json_object_object_add(r, "dir", json_object_new_string(dir));
		json_object_object_add(r, "last_txn", json_object_new_uint64(info.last_txn));
		json_object_object_add(r, "warning", w.warning[0] ? json_object_new_string(w.warning) : NULL);
		json_object_object_add(r, "pools", o.pools);
		json_object_object_add(r, "guests", o.guests);
		json_object_object_add(r, "regions", o.regions);
		json_object_object_add(r, "vms", o.vms);
		puts(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
		json_object_put(r);
	}
	vcma_store_close(s);
	return VCMACTL_OK;
}
