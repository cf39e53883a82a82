// SPDX-License-Identifier: MIT
/*
 * fuzz_reqcheck.c - vcma_req_check() against the request rules of docs/PROTOCOL.md.
 *
 * The input is a sequence of 64-byte requests (a short tail is zero-padded). Each is
 * copied into an aligned struct vcma_req and checked. The target aborts when:
 *   - the result is neither 0 nor -EPROTO, or why is not set exactly when it fails;
 *   - the check changed the request;
 *   - an accepted request breaks a promise (op 1..4, flags 0, ALLOC order <= 18,
 *     ALLOC/QUERY names NUL-terminated from [A-Za-z0-9_.-], NUL-padded);
 *   - it disagrees with ref_violation(), an independent reading of PROTOCOL.md
 *     §5.1-5.5 and §8.2, in either direction (accepting a violation, or rejecting a
 *     conforming request).
 */
#include <errno.h>

#include "fuzz_common.h"
#include "ring.h"

static bool zero_from(const uint8_t *n, unsigned int from)
{
	for (unsigned int i = from; i < VCMA_NAME_LEN; i++)
		if (n[i])
			return false;
	return true;
}

static bool name_char(uint8_t ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
	       ch == '-' || ch == '.';
}

/* §5.1 "Names": all 16 bytes zero, or 1..15 allowed characters then NULs to byte 15. */
static bool ref_name_ok(const uint8_t *n)
{
	unsigned int len = 0;

	while (len < VCMA_NAME_LEN && n[len])
		len++;
	if (len == VCMA_NAME_LEN)
		return false;
	for (unsigned int i = 0; i < len; i++)
		if (!name_char(n[i]))
			return false;
	return zero_from(n, len);
}

/* NULL if the request conforms, else which rule it breaks. */
static const char *ref_violation(const struct vcma_req *q)
{
	if (q->op < 1 || q->op > 4)
		return "op outside 1..4";
	if (q->flags)
		return "flags";
	switch (q->op) {
	case VCMA_OP_HELLO: /* §5.2: handle, length, name zero; arg0 bits 32..63 zero (§8.2) */
		if (q->handle || q->length || !zero_from(q->name, 0))
			return "HELLO unused field";
		if (q->arg0 >> 32)
			return "HELLO arg0 bits 32..63 set";
		return NULL;
	case VCMA_OP_ALLOC: /* §5.3: handle, arg1 zero; arg0 0..18; name none or valid */
		if (q->handle || q->arg1)
			return "ALLOC unused field";
		if (q->arg0 > 18)
			return "ALLOC order above 18";
		if (!ref_name_ok(q->name))
			return "ALLOC name";
		return NULL;
	case VCMA_OP_FREE: /* §5.4: length, arg0, arg1, name zero */
		if (q->length || q->arg0 || q->arg1 || !zero_from(q->name, 0))
			return "FREE unused field";
		return NULL;
	default: /* §5.5 QUERY: length, arg0, arg1 zero; handle != 0 => name zero */
		if (q->length || q->arg0 || q->arg1)
			return "QUERY unused field";
		if (q->handle ? !zero_from(q->name, 0) : !ref_name_ok(q->name))
			return "QUERY name";
		return NULL;
	}
}

static void hexdump(const struct vcma_req *q)
{
	const uint8_t *b = (const uint8_t *)q;

	for (unsigned int i = 0; i < sizeof(*q); i++)
		fprintf(stderr, "%02x%s", b[i], i % 16 == 15 ? "\n" : " ");
}

static void check_one(const struct vcma_req *q)
{
	struct vcma_req before = *q;
	const char *why = (const char *)q; /* anything but NULL: the check must set it */
	const char *ref = ref_violation(q);
	int rc = vcma_req_check(q, &why);

	FUZZ_CHECK(rc == 0 || rc == -EPROTO, "vcma_req_check returned %d", rc);
	FUZZ_CHECK(!memcmp(&before, q, sizeof(*q)), "vcma_req_check changed its input");
	if (rc) {
		FUZZ_CHECK(why && *why, "-EPROTO without a reason");
	} else {
		FUZZ_CHECK(why == NULL, "accepted, but why = %p", (const void *)why);
		FUZZ_CHECK(q->op >= VCMA_OP_HELLO && q->op <= VCMA_OP_MAX, "accepted op %u", q->op);
		FUZZ_CHECK(q->flags == 0, "accepted flags %#x", q->flags);
		if (q->op == VCMA_OP_ALLOC) {
			FUZZ_CHECK(q->arg0 <= 18, "accepted ALLOC order %llu", (unsigned long long)q->arg0);
			FUZZ_CHECK(ref_name_ok(q->name), "accepted a malformed ALLOC name");
		}
		if (q->op == VCMA_OP_QUERY)
			FUZZ_CHECK(ref_name_ok(q->name), "accepted a malformed QUERY name");
	}
	if ((rc == 0) != (ref == NULL)) {
		hexdump(q);
		fuzz_fail("vcma_req_check %s (%s) but PROTOCOL.md says %s", rc ? "rejects" : "accepts",
			  rc ? why : "ok", ref ? ref : "it conforms");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };

	do {
		struct vcma_req q;

		fin_bytes(&in, &q, sizeof(q));
		check_one(&q);
	} while (!fin_empty(&in));
	return 0;
}
