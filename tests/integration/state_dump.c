// SPDX-License-Identifier: MIT
/*
 * state_dump - print the records of a vcmad state directory (hv/store) as JSON lines,
 * for tests that hold the store against what its guests were told
 * (test_crash_torture.py). Read-only: opens the store as `vcmactl state verify` does.
 *
 *   state_dump DIR
 *
 * One object per record, in replay order:
 *   {"type":"meta","last_txn":N}
 *   {"type":"pool","id":N,"name":"...","base_mfn":N,"frames":N}
 *   {"type":"guest","id":N,"name":"...","link":N}
 *   {"type":"region","handle":N,"guest":N,"pool":N,"first_mfn":N,"frames":N,"flags":N}
 *   {"type":"p2m","vm":N,"first_gfn":N,"mfn":N,"count":N}
 *   {"type":"lender","guest":N,"pool":N,"frames":N}
 * Names are [A-Za-z0-9_.-] (vcmad checks them), printed as they are. Exit 0, or 1 with
 * a message on stderr when the store cannot be opened or replayed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "store.h"

static int on_meta(void *ctx, const struct vcma_store_meta *m)
{
	(void)ctx;
	printf("{\"type\":\"meta\",\"last_txn\":%" PRIu64 "}\n", m->last_txn);
	return 0;
}

static int on_pool(void *ctx, const struct vcma_store_pool *p)
{
	(void)ctx;
	printf("{\"type\":\"pool\",\"id\":%" PRIu32 ",\"name\":\"%.*s\",\"base_mfn\":%" PRIu64 ",\"frames\":%" PRIu64 "}\n",
	       p->id, (int)strnlen(p->name, sizeof(p->name)), p->name, p->base_mfn, p->frames);
	return 0;
}

static int on_guest(void *ctx, const struct vcma_store_guest *g)
{
	(void)ctx;
	printf("{\"type\":\"guest\",\"id\":%" PRIu32 ",\"name\":\"%.*s\",\"link\":%d}\n", g->id,
	       (int)strnlen(g->name, sizeof(g->name)), g->name, (int)g->link);
	return 0;
}

static int on_region(void *ctx, const struct vcma_store_region *r)
{
	(void)ctx;
	printf("{\"type\":\"region\",\"handle\":%" PRIu64 ",\"guest\":%" PRIu32 ",\"pool\":%" PRIu32
	       ",\"first_mfn\":%" PRIu64 ",\"frames\":%" PRIu64 ",\"flags\":%" PRIu32 "}\n",
	       r->handle, r->guest, r->pool, r->first_mfn, r->frames, r->flags);
	return 0;
}

static int on_p2m(void *ctx, const struct vcma_store_p2m *m)
{
	(void)ctx;
	printf("{\"type\":\"p2m\",\"vm\":%" PRIu32 ",\"first_gfn\":%" PRIu64 ",\"mfn\":%" PRIu64 ",\"count\":%" PRIu64
	       "}\n",
	       m->vm, m->first_gfn, m->mfn, m->count);
	return 0;
}

static int on_lender(void *ctx, const struct vcma_store_lender *l)
{
	(void)ctx;
	printf("{\"type\":\"lender\",\"guest\":%" PRIu32 ",\"pool\":%" PRIu32 ",\"frames\":%" PRIu64 "}\n", l->guest,
	       l->pool, l->frames);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct vcma_store_replay_ops ops = {
		.meta = on_meta, .pool = on_pool, .guest = on_guest, .region = on_region, .p2m = on_p2m,
		.lender = on_lender,
	};
	struct vcma_store_options opt = { .read_only = true };
	struct vcma_store *s;
	char err[512];
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: state_dump DIR\n");
		return 2;
	}
	rc = vcma_store_open(&s, argv[1], &opt, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "state_dump: %s: %s\n", argv[1], err);
		return 1;
	}
	rc = vcma_store_replay(s, &ops, NULL);
	if (rc)
		fprintf(stderr, "state_dump: %s: replay: %s\n", argv[1], vcma_store_error(s));
	vcma_store_close(s);
	if (fflush(stdout))
		return 1;
	return rc ? 1 : 0;
}
