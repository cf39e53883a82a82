// SPDX-License-Identifier: MIT
/*
 * fuzz_config.c - vcmad.conf parsing (hv/conf.c over hv/core/pool_config.c).
 *
 * Input: the config text, optionally followed by a NUL and a --pool-size argument
 * ("NAME=SIZE"). Each part is copied into its own exactly-sized heap buffer so that
 * ASan sees any read past its terminator. The target aborts when:
 *   - vcmad_conf_parse returns anything but 0 or -EINVAL;
 *   - a failure's message is empty, unterminated, or does not start with "fuzz.conf:";
 *   - a success leaves a value outside the range its key accepts (conf.c, pool_config.h);
 *   - parsing the same text twice gives a different result or message;
 *   - vcmad_conf_validate, --pool-size, resolve_size or quota break their contracts.
 * Sanitizers catch the rest (overflows, UB, leaks).
 */
#include <errno.h>

#include "conf.h"
#include "fuzz_common.h"

#define NAME "fuzz.conf"

static char *dup_part(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		abort();
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static bool terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static bool good_name(const char *s, size_t max)
{
	size_t n = strnlen(s, max);

	if (n == 0 || n >= max)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '-' || *s == '.'))
			return false;
	return true;
}

static void check_size_expr(const struct vcma_size_expr *e, const char *pool, const char *what)
{
	switch (e->kind) {
	case VCMA_SIZE_UNSET:
		break;
	case VCMA_SIZE_BYTES:
		FUZZ_CHECK(e->bytes > 0, "pool %s: %s: zero bytes", pool, what);
		break;
	case VCMA_SIZE_PERCENT:
		FUZZ_CHECK(e->percent_milli >= 1 && e->percent_milli <= 100000, "pool %s: %s: percent %u", pool,
			   what, e->percent_milli);
		break;
	case VCMA_SIZE_MIN:
	case VCMA_SIZE_MAX:
		FUZZ_CHECK(e->bytes > 0, "pool %s: %s: zero bytes", pool, what);
		FUZZ_CHECK(e->percent_milli >= 1 && e->percent_milli <= 100000, "pool %s: %s: percent %u", pool,
			   what, e->percent_milli);
		break;
	default:
		fuzz_fail("pool %s: %s: kind %d", pool, what, (int)e->kind);
	}
}

static void check_pool(const struct vcma_pool_config *p)
{
	FUZZ_CHECK(good_name(p->name, sizeof(p->name)), "bad pool name accepted");
	check_size_expr(&p->size, p->name, "size");
	check_size_expr(&p->size_override, p->name, "size_override");
	FUZZ_CHECK(!p->has_base || !(p->base & (VCMA_PAGE_SIZE - 1)), "pool %s: base %#llx", p->name,
		   (unsigned long long)p->base);
	FUZZ_CHECK(p->align_order <= 18, "pool %s: align_order %u", p->name, p->align_order);
	FUZZ_CHECK(p->min_request >= 1 && p->min_request <= (1u << 20), "pool %s: min_request %u", p->name,
		   p->min_request);
	FUZZ_CHECK(p->mode == VCMA_POOL_SHARED || p->mode == VCMA_POOL_EXCLUSIVE, "pool %s: mode", p->name);
	FUZZ_CHECK(p->bind_kind <= VCMA_BIND_CLASS, "pool %s: bind_kind", p->name);
	FUZZ_CHECK(p->bind_kind == VCMA_BIND_NONE ? p->bind_name[0] == '\0' :
						    good_name(p->bind_name, sizeof(p->bind_name)),
		   "pool %s: bind_name", p->name);
	FUZZ_CHECK(p->lendable >= -1 && p->lendable <= 1, "pool %s: lendable %d", p->name, p->lendable);
	FUZZ_CHECK(p->quota_kind <= VCMA_QUOTA_PERCENT, "pool %s: quota_kind", p->name);
	FUZZ_CHECK(p->quota_kind != VCMA_QUOTA_BYTES || p->quota_bytes > 0, "pool %s: quota 0", p->name);
	FUZZ_CHECK(p->quota_kind != VCMA_QUOTA_PERCENT ||
			   (p->quota_percent_milli >= 1 && p->quota_percent_milli <= 100000),
		   "pool %s: quota percent %u", p->name, p->quota_percent_milli);
	FUZZ_CHECK(p->cost_lent_free >= 1 && p->cost_lent_free <= 65535 && p->cost_lent_used >= 1 &&
			   p->cost_lent_used <= 65535,
		   "pool %s: costs", p->name);
	FUZZ_CHECK(!p->max_region || (p->max_region >= VCMA_PAGE_SIZE && !(p->max_region & (p->max_region - 1)) &&
				      p->max_region <= (uint64_t)VCMA_PAGE_SIZE << 18),
		   "pool %s: max_region %llu", p->name, (unsigned long long)p->max_region);
	FUZZ_CHECK(!p->address_bits || (p->address_bits >= 20 && p->address_bits <= 52), "pool %s: address_bits %u",
		   p->name, p->address_bits);
}

static void check_conf(const struct vcmad_conf *c)
{
	FUZZ_CHECK(terminated(c->runtime_dir, sizeof(c->runtime_dir)) && c->runtime_dir[0] == '/' &&
			   strlen(c->runtime_dir) < 224,
		   "runtime_dir");
	FUZZ_CHECK(!strcmp(c->backend, "sim") || !strcmp(c->backend, "xen"), "backend");
	FUZZ_CHECK(c->max_guests >= 1 && c->max_guests <= 4096, "max_guests %u", c->max_guests);
	FUZZ_CHECK(c->machine_bytes >= (16ull << 20) && c->machine_bytes <= (1ull << 40) &&
			   !(c->machine_bytes % VCMA_PAGE_SIZE),
		   "machine memory %llu", (unsigned long long)c->machine_bytes);
	FUZZ_CHECK(c->limits.max_regions >= 1 && c->limits.max_regions <= 65536, "max_regions");
	FUZZ_CHECK(c->limits.max_bytes >= VCMA_PAGE_SIZE, "max_bytes");
	FUZZ_CHECK(c->limits.rate >= 1 && c->limits.rate <= 10000000, "rate");
	FUZZ_CHECK(c->limits.burst >= 1 && c->limits.burst <= 1000000, "burst");
	FUZZ_CHECK(c->limits.max_ram >= VCMA_PAGE_SIZE && !(c->limits.max_ram % VCMA_PAGE_SIZE), "max_ram");
	FUZZ_CHECK(c->limits.ring_slots >= 8 && c->limits.ring_slots <= 1024 &&
			   !(c->limits.ring_slots & (c->limits.ring_slots - 1)),
		   "ring_slots %u", c->limits.ring_slots);
	FUZZ_CHECK(c->npools <= VCMA_MAX_POOLS, "npools %u", c->npools);
	for (uint32_t i = 0; i < c->npools; i++) {
		check_pool(&c->pool[i]);
		for (uint32_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(c->pool[i].name, c->pool[j].name), "pool %s twice", c->pool[i].name);
	}
}

static void check_err(int rc, const char *err, size_t cap, const char *prefix, const char *what)
{
	FUZZ_CHECK(rc == 0 || rc == -EINVAL, "%s returned %d", what, rc);
	if (!rc)
		return;
	FUZZ_CHECK(terminated(err, cap), "%s: unterminated message", what);
	FUZZ_CHECK(err[0], "%s: -EINVAL with an empty message", what);
	FUZZ_CHECK(!strncmp(err, prefix, strlen(prefix)), "%s: message '%s' does not start with '%s'", what, err,
		   prefix);
}

static void check_resolved(struct vcmad_conf *c)
{
	static const uint64_t hosts[] = { 0, 4096, 16ull << 20, 1ull << 40, UINT64_MAX };
	char err[512], buf[32], tiny[4];

	for (uint32_t i = 0; i < c->npools; i++) {
		const struct vcma_pool_config *p = &c->pool[i];

		for (size_t h = 0; h < sizeof(hosts) / sizeof(hosts[0]) + 1; h++) {
			uint64_t host = h ? hosts[h - 1] : c->machine_bytes, bytes = 0, quota;
			int rc;

			err[0] = '\0';
			rc = vcma_pool_config_resolve_size(p, host, &bytes, err, sizeof(err));
			check_err(rc, err, sizeof(err), "pool ", "resolve_size");
			if (rc)
				continue;
			FUZZ_CHECK(bytes && bytes <= host && !(bytes % VCMA_PAGE_SIZE), "pool %s: resolved %llu on %llu",
				   p->name, (unsigned long long)bytes, (unsigned long long)host);
			quota = vcma_pool_config_quota(p, bytes);
			FUZZ_CHECK(p->quota_kind != VCMA_QUOTA_PERCENT || quota <= bytes, "pool %s: quota %llu > %llu",
				   p->name, (unsigned long long)quota, (unsigned long long)bytes);
			FUZZ_CHECK(p->quota_kind != VCMA_QUOTA_NONE || quota == UINT64_MAX, "pool %s: no quota", p->name);
			vcma_format_bytes(bytes, buf, sizeof(buf));
			FUZZ_CHECK(terminated(buf, sizeof(buf)) && buf[0], "format_bytes");
			vcma_format_bytes(quota, tiny, sizeof(tiny));
			FUZZ_CHECK(terminated(tiny, sizeof(tiny)), "format_bytes (short buffer)");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = size ? memchr(data, '\0', size) : NULL;
	size_t tlen = nul ? (size_t)(nul - data) : size;
	char *text = dup_part(data, tlen), *ovr = NULL;
	struct vcmad_conf *c = malloc(sizeof(*c)), *again = malloc(sizeof(*again));
	char err[512], err2[512];
	int rc, rc2;

	if (!c || !again)
		abort();
	if (nul) {
		const uint8_t *o = nul + 1, *end = data + size, *nul2 = memchr(o, '\0', (size_t)(end - o));

		ovr = dup_part(o, (size_t)((nul2 ? nul2 : end) - o));
	}

	vcmad_conf_defaults(c);
	check_conf(c);
	memset(err, 0x5a, sizeof(err));
	err[0] = '\0';
	rc = vcmad_conf_parse(c, text, NAME, err, sizeof(err));
	check_err(rc, err, sizeof(err), NAME ":", "vcmad_conf_parse");

	/* the same text parses the same way */
	vcmad_conf_defaults(again);
	memset(err2, 0x5a, sizeof(err2));
	err2[0] = '\0';
	rc2 = vcmad_conf_parse(again, text, NAME, err2, sizeof(err2));
	FUZZ_CHECK(rc2 == rc, "second parse returned %d, first %d", rc2, rc);
	FUZZ_CHECK(rc ? !strcmp(err, err2) : !memcmp(c, again, sizeof(*c)), "second parse differs");

	if (!rc) {
		check_conf(c);
		if (ovr) {
			err[0] = '\0';
			rc = vcmad_conf_override_pool_size(c, ovr, err, sizeof(err));
			check_err(rc, err, sizeof(err), "--pool-size: ", "override_pool_size");
			check_conf(c);
		}
		err[0] = '\0';
		rc = vcmad_conf_validate(c, err, sizeof(err));
		FUZZ_CHECK(rc == 0 || rc == -EINVAL, "vcmad_conf_validate returned %d", rc);
		FUZZ_CHECK(!rc || err[0], "vcmad_conf_validate: -EINVAL with an empty message");
		FUZZ_CHECK(rc || c->npools > 0, "validated a config without pools");
		for (uint32_t i = 0; !rc && i < c->nguests; i++)
			FUZZ_CHECK((c->guests[i].kind == VCMAD_GUEST_XEN) == !strcmp(c->backend, "xen"),
				   "validated guest %s of another backend than the daemon's", c->guests[i].name);
		check_resolved(c);
	}
	free(again);
	free(c);
	free(ovr);
	free(text);
	return 0;
}
