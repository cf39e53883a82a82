// SPDX-License-Identifier: MIT
/*
 * fuzz_vmm.c - vcmad_vmm_msg_check() (hv/vmm_msg.c), the check every message a VMM
 * sends on its channel passes before vcmad acts on it, against the rules of
 * proto/vcma_sim.h.
 *
 * The input (little-endian):
 *   byte 0 (b): bits 0..2 misalign the message by that many bytes; bit 7 set: u64
 *           ram_frames follows, clear: u16 ram_frames follows
 *   then the message as the socket would deliver it: every remaining byte, in a heap
 *   buffer of exactly that size (so a read past its end is an ASan report)
 * The target aborts when:
 *   - the result is neither 0 nor -EPROTO, or why is not NULL exactly on success, or
 *     on failure is not a non-empty printable string;
 *   - the check changed the message, or answers the same input differently twice;
 *   - an accepted message breaks a promise: len exactly header + count runs, count
 *     <= VCMA_SIM_MSG_RUNS, magic, version, pad 0, a VMM -> host type, no runs in
 *     PAUSED/REMAPPED/TRACKING/DROPPED, every run with count > 0 inside [0, ram_frames) and mfn 0,
 *     runs disjoint;
 *   - it disagrees with ref_violation(), an independent reading of those rules, in
 *     either direction (or on which rule breaks first, for the log's sake).
 */
#include <errno.h>

#include "fuzz_common.h"
#include "vcma_sim.h"
#include "backend/vmm_msg.h"

struct run {
	uint64_t gfn, mfn, count;
};

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static struct run run_at(const uint8_t *msg, uint32_t i)
{
	const uint8_t *p = msg + 24 + 24 * (size_t)i;

	return (struct run){ le64(p), le64(p + 8), le64(p + 16) };
}

/* Which rule of proto/vcma_sim.h the message breaks (the first, in the order vcmad
 * logs them), or NULL. Byte offsets from the header's layout; a run's end may wrap. */
static const char *ref_violation(const uint8_t *msg, size_t len, uint64_t frames)
{
	uint32_t count;
	uint16_t type;

	if (len < 24)
		return "short";
	type = le16(msg + 6);
	count = le32(msg + 16);
	if (le32(msg) != 0x4d495356u || le16(msg + 4) != 1 || count > 128 || len != 24 + 24 * (uint64_t)count ||
	    le32(msg + 20))
		return "malformed";
	if (type < 20 || type > 27)
		return "type";
	/* answers PAUSED (20), REMAPPED (21), TRACKING (26), DROPPED (27): no runs;
	 * PAUSED status 0, the others 0 or a positive errno; REPORT, REUSE, PIN (22-24):
	 * status 0; DIRTY (25): 0, or a positive errno with fewer than 128 runs */
	bool answer = type == 20 || type == 21 || type == 26 || type == 27;
	int32_t status = (int32_t)le32(msg + 12);

	if (answer && count)
		return "answer-runs";
	if ((type == 20 && status) || (answer && status < 0))
		return "answer-status";
	if (type >= 22 && type <= 24 && status)
		return "status";
	if (type == 25 && (status < 0 || (status && count == 128)))
		return "dirty-status";
	for (uint32_t i = 0; i < count; i++) {
		struct run r = run_at(msg, i);

		if (r.count == 0 || r.gfn + r.count < r.gfn || r.gfn + r.count > frames || r.mfn)
			return "run";
	}
	if (type >= 22 && type <= 25) /* REPORT, REUSE, PIN, DIRTY */
		for (uint32_t i = 0; i < count; i++)
			for (uint32_t k = i + 1; k < count; k++) {
				struct run a = run_at(msg, i), b = run_at(msg, k);

				if (a.gfn < b.gfn + b.count && b.gfn < a.gfn + a.count)
					return "overlap";
			}
	return NULL;
}

/* the reason vcmad logs for each rule (hv/vmm_msg.c) */
static const char *const reason[][2] = {
	{ "short", "unexpected message on the attach socket" },
	{ "malformed", "malformed VMM message" },
	{ "type", "unknown VMM message type" },
	{ "answer-runs", "an answer (PAUSED, REMAPPED, TRACKING, DROPPED) with runs" },
	{ "answer-status", "an answer (PAUSED, REMAPPED, TRACKING, DROPPED) with a bad status" },
	{ "status", "REPORT, REUSE or PIN with a status" },
	{ "dirty-status", "DIRTY with a bad status" },
	{ "run", "VMM message run outside the VM's RAM" },
	{ "overlap", "VMM message runs overlap" },
};

static bool printable(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

static void check_accepted(const uint8_t *msg, size_t len, uint64_t frames)
{
	uint32_t count = le32(msg + 16);
	uint16_t type = le16(msg + 6);

	FUZZ_CHECK(len >= 24 && count <= VCMA_SIM_MSG_RUNS && len == 24 + 24 * (size_t)count,
		   "accepted %zu bytes with count %u", len, count);
	FUZZ_CHECK(le32(msg) == VCMA_SIM_MAGIC && le16(msg + 4) == VCMA_SIM_VERSION && !le32(msg + 20),
		   "accepted a bad magic, version or pad");
	FUZZ_CHECK(type == VCMA_SIM_MSG_PAUSED || type == VCMA_SIM_MSG_REMAPPED || type == VCMA_SIM_MSG_REPORT ||
			   type == VCMA_SIM_MSG_REUSE || type == VCMA_SIM_MSG_PIN || type == VCMA_SIM_MSG_DIRTY ||
			   type == VCMA_SIM_MSG_TRACKING || type == VCMA_SIM_MSG_DROPPED,
		   "accepted type %u", type);
	for (uint32_t i = 0; i < count; i++) {
		struct run r = run_at(msg, i);

		FUZZ_CHECK(r.count > 0 && r.gfn < frames && r.count <= frames - r.gfn,
			   "accepted run %u [%#llx, +%#llx) with RAM of %#llx frames", i, (unsigned long long)r.gfn,
			   (unsigned long long)r.count, (unsigned long long)frames);
		FUZZ_CHECK(!r.mfn, "accepted mfn %#llx in type %u", (unsigned long long)r.mfn, type);
	}
	FUZZ_CHECK(!count || (type != VCMA_SIM_MSG_PAUSED && type != VCMA_SIM_MSG_REMAPPED &&
			      type != VCMA_SIM_MSG_TRACKING && type != VCMA_SIM_MSG_DROPPED),
		   "accepted %u runs in an answer (type %u)", count, type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t b = fin_u8(&in), *mem, *msg, *copy;
	uint64_t frames = b & 0x80 ? fin_u64(&in) : fin_u16(&in);
	size_t off = b & 7, len = in.n;
	const char *why = (const char *)data, *why2 = (const char *)data; /* must be overwritten */
	const char *ref;
	int rc, rc2;

	/* exactly the message's bytes: ASan reports a read past their end */
	mem = malloc(off + len ? off + len : 1);
	copy = malloc(len ? len : 1);
	if (!mem || !copy)
		abort();
	msg = mem + off;
	if (len)
		memcpy(msg, in.p, len);
	if (len)
		memcpy(copy, in.p, len);
	rc = vcmad_vmm_msg_check(msg, len, frames, &why);
	FUZZ_CHECK(rc == 0 || rc == -EPROTO, "vcmad_vmm_msg_check returned %d", rc);
	FUZZ_CHECK(!len || !memcmp(msg, copy, len), "vcmad_vmm_msg_check changed its input");
	rc2 = vcmad_vmm_msg_check(msg, len, frames, &why2);
	FUZZ_CHECK(rc2 == rc && why2 == why, "the same message checked twice: %d (%s), then %d (%s)", rc,
		   why ? why : "ok", rc2, why2 ? why2 : "ok");
	if (rc) {
		FUZZ_CHECK(why && printable(why), "-EPROTO without a printable reason");
	} else {
		FUZZ_CHECK(why == NULL, "accepted, but why = %p", (const void *)why);
		check_accepted(msg, len, frames);
	}
	ref = ref_violation(msg, len, frames);
	if ((rc == 0) != (ref == NULL))
		fuzz_fail("vcmad_vmm_msg_check %s (%s) but vcma_sim.h says %s (%zu bytes, %#llx frames)",
			  rc ? "rejects" : "accepts", rc ? why : "ok", ref ? ref : "it conforms", len,
			  (unsigned long long)frames);
	for (size_t i = 0; ref && i < sizeof(reason) / sizeof(reason[0]); i++)
		if (!strcmp(reason[i][0], ref))
			FUZZ_CHECK(!strcmp(reason[i][1], why), "rule '%s' broken, but the reason given is '%s'", ref, why);
	free(mem);
	free(copy);
	return 0;
}
