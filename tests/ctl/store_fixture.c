// SPDX-License-Identifier: MIT
/*
 * store-fixture DIR KIND: makes a state directory for test_ctl_state.py.
 *   good         pool, two guests, two regions, a p2m run, a lender: no violation
 *   owned-twice  good + a p2m run over one of region 0x100000001's frames
 *   outside      good + a region past the end of its pool
 *   corrupt      good + a lender update, then one byte of region 0x100000001 (older than
 *                the newest transaction) damaged in every copy
 *   torn         good + a last transaction (region 0x100000003) whose record is damaged
 * Exits 0, or 99 with the reason (a setup error, as the test conventions say).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define MFN_A 0x1000a11ce0ull /* region 0x100000001 (in pool 1) */
#define MFN_T 0x1000c0ffe0ull /* region 0x100000003, the torn one */

static int die(const char *what, const char *why)
{
	fprintf(stderr, "store-fixture: %s: %s\n", what, why);
	return 99;
}

/* Flips one byte of every occurrence of v's 8 little-endian bytes in DIR/data.mdb. */
static int damage(const char *dir, uint64_t v)
{
	unsigned char pat[8], *b;
	char p[4200];
	FILE *f;
	long n;
	int found = 0;

	for (int i = 0; i < 8; i++)
		pat[i] = (unsigned char)(v >> (8 * i));
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	f = fopen(p, "r+b");
	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0)
		return -1;
	b = malloc((size_t)n);
	rewind(f);
	if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
		return -1;
	for (long o = 0; o + 8 <= n; o++)
		if (!memcmp(b + o, pat, 8)) {
			b[o + 3] ^= 0x5a;
			found++;
		}
	rewind(f);
	if (fwrite(b, 1, (size_t)n, f) != (size_t)n || fclose(f))
		return -1;
	free(b);
	return found;
}

int main(int argc, char **argv)
{
	struct vcma_store_pool pool = { .id = 0, .name = "main", .base_mfn = 0x1000a00000ull, .frames = 0x100000 };
	struct vcma_store_guest g1 = { .id = 1, .name = "vm1", .link = VCMA_STORE_LINK_SIM, .sim_uid = 0 };
	struct vcma_store_guest g2 = { .id = 2, .name = "qemu1", .link = VCMA_STORE_LINK_QEMU, .qemu_pid = 1234 };
	struct vcma_store_region ra = { 0x100000001ull, 1, 0, MFN_A, 16, 0 };
	struct vcma_store_region rb = { 0x100000002ull, 2, 0, MFN_A + 16, 16, 0 };
	struct vcma_store_p2m m = { 1, 0x0, MFN_A + 64, 32 };
	struct vcma_store_lender l = { 1, 0, 32 };
	struct vcma_store *s;
	const char *kind;
	char err[2048];
	int rc = 0;

	if (argc != 3)
		return die("usage", "store-fixture DIR good|owned-twice|outside|corrupt|torn");
	kind = argv[2];
	if (vcma_store_open(&s, argv[1], NULL, err, sizeof(err)))
		return die("open", err);
	vcma_store_put_pool(s, &pool);
	vcma_store_put_guest(s, &g1);
	vcma_store_put_guest(s, &g2);
	vcma_store_put_region(s, &ra);
	vcma_store_put_region(s, &rb);
	vcma_store_put_p2m(s, &m);
	vcma_store_put_lender(s, &l);
	if (vcma_store_commit(s))
		return die("commit", vcma_store_error(s));
	if (!strcmp(kind, "owned-twice")) {
		struct vcma_store_p2m bad = { 2, 0x100, MFN_A + 8, 4 };

		rc = vcma_store_put_p2m(s, &bad);
	} else if (!strcmp(kind, "outside")) {
		struct vcma_store_region bad = { 0x200000001ull, 2, 0, pool.base_mfn + pool.frames - 8, 16, 0 };

		rc = vcma_store_put_region(s, &bad);
	} else if (!strcmp(kind, "torn")) {
		struct vcma_store_region t = { 0x100000003ull, 2, 0, MFN_T, 1, 0 };

		rc = vcma_store_put_region(s, &t);
	} else if (!strcmp(kind, "corrupt")) { /* region 0x100000001 is then older than the newest turn */
		l.frames = 16;
		rc = vcma_store_put_lender(s, &l);
	} else if (strcmp(kind, "good")) {
		return die(kind, "unknown kind");
	}
	if (rc || (vcma_store_in_turn(s) && vcma_store_commit(s)))
		return die("commit", vcma_store_error(s));
	vcma_store_close(s);
	if (!strcmp(kind, "corrupt") && damage(argv[1], MFN_A) < 1)
		return die("corrupt", "region 0x100000001's bytes not found in data.mdb");
	if (!strcmp(kind, "torn") && damage(argv[1], MFN_T) != 1)
		return die("torn", "region 0x100000003's bytes not found once in data.mdb");
	return 0;
}
