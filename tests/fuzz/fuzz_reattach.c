// SPDX-License-Identifier: MIT
/*
 * fuzz_reattach.c - the checks of a reattaching client's messages (hv/link/sim_msg.c,
 * PROTOCOL.md §9.1 "Restart and reattach") against an independent reading of the
 * rules.
 *
 * The input (little-endian): byte 0 picks the check (mod 3), then
 *   0  REATTACH: u8 misalignment (mod 8), u64 max_ram, the message (every remaining byte)
 *   1  P2M message: u8 misalignment (mod 8), u32 room, the message (every remaining byte)
 *   2  a whole p2m: u64 ram_frames, u64 machine_frames, then runs of 24 bytes
 *      {gfn, mfn, count} (a partial last one is dropped), at most 4096
 * Every message is in a heap buffer of exactly its size (a read past its end is an
 * ASan report). The target aborts when a check:
 *   - returns something but 0 or its one error, sets *why on success or not on failure,
 *     or gives a status that is not OK / INVALID / VERSION as it must;
 *   - changes its input, or answers the same input differently twice;
 *   - accepts what the reference refuses, or refuses what it accepts;
 *   - hands out (*out, runs, *n) anything but the bytes it accepted.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "link/sim_msg.h"
#include "vcma_status.h"

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static bool name_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
	       c == '.';
}

/* A name field of 32 bytes: 1..31 name characters, then only NULs. */
static bool ref_name(const uint8_t *f)
{
	unsigned int n = 0;

	while (n < 32 && f[n])
		n++;
	if (n == 0 || n == 32)
		return false;
	for (unsigned int i = 0; i < n; i++)
		if (!name_char(f[i]))
			return false;
	for (unsigned int i = n; i < 32; i++)
		if (f[i])
			return false;
	return true;
}

/* 0 accepted, 1 refused as INVALID, 2 refused as VERSION: from the offsets of
 * PROTOCOL.md's table, not from the struct. */
static int ref_reattach(const uint8_t *m, size_t len, uint64_t max_ram)
{
	uint32_t role, flags, nruns;
	uint64_t ram;

	if (len != 80 || rd32(m) != 0x4d495356 || rd16(m + 6) != 5)
		return 1;
	if (rd16(m + 4) != 1)
		return 2;
	role = rd32(m + 8);
	flags = rd32(m + 12);
	nruns = rd32(m + 20);
	ram = rd64(m + 24);
	if (role == 1) {
		if ((flags & ~0x4u) || nruns || ram)
			return 1;
	} else if (role == 2) {
		if ((flags & ~0x7u) || !ram || ram % 4096 || ram > max_ram || !nruns || nruns > ram / 4096)
			return 1;
	} else {
		return 1;
	}
	return ref_name(m + 48) ? 0 : 1;
}

static bool ref_p2m_msg(const uint8_t *m, size_t len, uint32_t room)
{
	uint32_t n;

	if (len != 16 + 24 * 128 || rd32(m) != 0x4d495356 || rd16(m + 4) != 1 || rd16(m + 6) != 3 || rd32(m + 12))
		return false;
	n = rd32(m + 8);
	if (!n || n > 128 || n > room)
		return false;
	for (size_t i = 16 + 24 * (size_t)n; i < len; i++)
		if (m[i])
			return false;
	return true;
}

static bool ref_p2m(const struct vcma_sim_run *r, uint32_t n, uint64_t ram, uint64_t mach)
{
	/* in 128-bit arithmetic: no wrap-around to reason about */
	unsigned __int128 next = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (r[i].gfn != next || !r[i].count || (unsigned __int128)r[i].gfn + r[i].count > ram)
			return false;
		if ((unsigned __int128)r[i].mfn + r[i].count > mach)
			return false;
		next += r[i].count;
	}
	return next == ram;
}

static void fuzz_reattach(struct fuzz_in *in)
{
	unsigned int mis = fin_u8(in) % 8;
	uint64_t max_ram = fin_u64(in);
	size_t len = in->n;
	uint8_t *buf = malloc(len + mis + 1), *copy = malloc(len + 1);
	struct vcma_sim_reattach out, out2;
	const char *why = "", *why2 = "";
	int32_t st = -1, st2 = -1;
	int rc, rc2, want;

	memcpy(buf + mis, in->p, len);
	memcpy(copy, in->p, len);
	rc = vcmad_sim_reattach_check(buf + mis, len, max_ram, &out, &st, &why);
	rc2 = vcmad_sim_reattach_check(buf + mis, len, max_ram, &out2, &st2, &why2);
	FUZZ_CHECK(!memcmp(buf + mis, copy, len), "reattach: the check changed its input");
	FUZZ_CHECK(rc == rc2 && st == st2, "reattach: two answers to one input");
	FUZZ_CHECK(rc == 0 || rc == -EPROTO, "reattach: returned %d", rc);
	FUZZ_CHECK(rc ? (why && *why) : !why, "reattach: why does not match the result");
	want = ref_reattach(copy, len, max_ram);
	FUZZ_CHECK((rc == 0) == (want == 0), "reattach: the check says %d, the reference %d", rc, want);
	if (!rc) {
		FUZZ_CHECK(st == VCMA_ST_OK && !memcmp(&out, copy, sizeof(out)), "reattach: *out is not what was accepted");
	} else {
		FUZZ_CHECK(st == (want == 2 ? VCMA_ST_VERSION : VCMA_ST_INVALID), "reattach: status %d for reference %d",
			   st, want);
	}
	free(buf);
	free(copy);
}

static void fuzz_p2m_msg(struct fuzz_in *in)
{
	unsigned int mis = fin_u8(in) % 8;
	uint32_t room = fin_u32(in), n = 99;
	size_t len = in->n;
	uint8_t *buf = malloc(len + mis + 1), *copy = malloc(len + 1);
	struct vcma_sim_run runs[VCMA_SIM_P2M_RUNS];
	const char *why = "";
	bool want;
	int rc;

	memcpy(buf + mis, in->p, len);
	memcpy(copy, in->p, len);
	rc = vcmad_sim_p2m_msg_check(buf + mis, len, room, runs, &n, &why);
	FUZZ_CHECK(!memcmp(buf + mis, copy, len), "p2m message: the check changed its input");
	FUZZ_CHECK(rc == 0 || rc == -EPROTO, "p2m message: returned %d", rc);
	FUZZ_CHECK(rc ? (why && *why && n == 0) : !why, "p2m message: why or n does not match the result");
	want = ref_p2m_msg(copy, len, room);
	FUZZ_CHECK((rc == 0) == want, "p2m message: the check says %d, the reference %d", rc, want);
	if (!rc) {
		FUZZ_CHECK(n == rd32(copy + 8) && n <= room, "p2m message: %u runs handed out", n);
		FUZZ_CHECK(!memcmp(runs, copy + 16, n * sizeof(*runs)), "p2m message: runs differ from the message");
	}
	free(buf);
	free(copy);
}

static void fuzz_p2m(struct fuzz_in *in)
{
	uint64_t ram = fin_u64(in), mach = fin_u64(in);
	uint32_t n = 0;
	struct vcma_sim_run *runs = malloc(4096 * sizeof(*runs) + 1), *copy;
	const char *why = "";
	bool want;
	int rc;

	while (in->n >= 24 && n < 4096) {
		runs[n].gfn = fin_u64(in);
		runs[n].mfn = fin_u64(in);
		runs[n].count = fin_u64(in);
		n++;
	}
	copy = malloc(n * sizeof(*runs) + 1);
	memcpy(copy, runs, n * sizeof(*runs));
	rc = vcmad_sim_p2m_check(runs, n, ram, mach, &why);
	FUZZ_CHECK(!memcmp(copy, runs, n * sizeof(*runs)), "p2m: the check changed its input");
	FUZZ_CHECK(rc == 0 || rc == -EINVAL, "p2m: returned %d", rc);
	FUZZ_CHECK(rc ? (why && *why) : !why, "p2m: why does not match the result");
	want = ref_p2m(runs, n, ram, mach);
	FUZZ_CHECK((rc == 0) == want, "p2m: the check says %d, the reference %d (%u runs, ram %llu, machine %llu)", rc,
		   want, n, (unsigned long long)ram, (unsigned long long)mach);
	free(runs);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };

	switch (fin_u8(&in) % 3) {
	case 0: fuzz_reattach(&in); break;
	case 1: fuzz_p2m_msg(&in); break;
	default: fuzz_p2m(&in); break;
	}
	return 0;
}
