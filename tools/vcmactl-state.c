// SPDX-License-Identifier: MIT
/*
 * vcmactl-state.c - vcmactl state verify DIR: checks vcmad's state directory offline
 * (hv/store), without vcmad and without changing DIR.
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
