// SPDX-License-Identifier: MIT
/*
 * pool_config.c - table-driven parsing and validation of a pool's policy.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fmap.h"
#include "vcma_name.h"
#include "pool_config.h"
#include "errmsg.h"

static int bad(char *err, size_t errlen, const char *key, const char *value, const char *expected)
{
	vcma_seterr(err, errlen, "%s: invalid value '%s' (%s)", key, value, expected);
	return -EINVAL;
}

int vcma_parse_bytes(const char *s, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned int d = (unsigned int)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	switch (*p) {
	case 'K': case 'k': mul = 1ull << 10; p++; break;
	case 'M': case 'm': mul = 1ull << 20; p++; break;
	case 'G': case 'g': mul = 1ull << 30; p++; break;
	case 'T': case 't': mul = 1ull << 40; p++; break;
	default: break;
	}
	if (mul > 1 && (*p == 'i' || *p == 'I') && (p[1] == 'B' || p[1] == 'b'))
		p += 2; /* accept "MiB" */
	else if (mul > 1 && (*p == 'B' || *p == 'b'))
		p++;    /* and "MB", meaning the same binary unit */
	if (*p)
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -EINVAL;
	*out = v * mul;
	return 0;
}

/* "12", "12.5" followed by '%'; returns the percentage x 1000 in 1..100000. */
static int parse_percent(const char *s, size_t len, uint32_t *milli)
{
	uint64_t whole = 0, frac = 0, scale = 1000;
	size_t i = 0;

	if (len < 2 || s[len - 1] != '%' || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	len--;
	for (; i < len && isdigit((unsigned char)s[i]); i++) {
		whole = whole * 10 + (uint64_t)(s[i] - '0');
		if (whole > 100)
			return -EINVAL;
	}
	if (i < len && s[i] == '.') {
		i++;
		if (i == len)
			return -EINVAL;
		for (; i < len && isdigit((unsigned char)s[i]); i++) {
			if (scale == 1)
				return -EINVAL; /* more than three decimals */
			scale /= 10;
			frac += (uint64_t)(s[i] - '0') * scale;
		}
	}
	if (i != len)
		return -EINVAL;
	whole = whole * 1000 + frac;
	if (whole == 0 || whole > 100000)
		return -EINVAL;
	*milli = (uint32_t)whole;
	return 0;
}

static int parse_size_expr(const char *v, struct vcma_size_expr *e)
{
	size_t len = strlen(v);
	char tmp[64];

	memset(e, 0, sizeof(*e));
	if ((!strncmp(v, "min(", 4) || !strncmp(v, "max(", 4)) && len > 5 && v[len - 1] == ')') {
		const char *comma = strchr(v, ',');
		size_t alen;

		if (!comma || len >= sizeof(tmp))
			return -EINVAL;
		alen = (size_t)(comma - (v + 4));
		memcpy(tmp, v + 4, alen);
		tmp[alen] = '\0';
		if (vcma_parse_bytes(tmp, &e->bytes) || e->bytes == 0)
			return -EINVAL;
		if (parse_percent(comma + 1, (size_t)(v + len - 1 - (comma + 1)), &e->percent_milli))
			return -EINVAL;
		e->kind = v[1] == 'i' ? VCMA_SIZE_MIN : VCMA_SIZE_MAX;
		return 0;
	}
	if (len && v[len - 1] == '%') {
		if (parse_percent(v, len, &e->percent_milli))
			return -EINVAL;
		e->kind = VCMA_SIZE_PERCENT;
		return 0;
	}
	if (vcma_parse_bytes(v, &e->bytes) || e->bytes == 0)
		return -EINVAL;
	e->kind = VCMA_SIZE_BYTES;
	return 0;
}

static int parse_uint(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	uint64_t x = 0;

	if (!isdigit((unsigned char)*v))
		return -EINVAL;
	for (; *v; v++) {
		if (!isdigit((unsigned char)*v))
			return -EINVAL;
		x = x * 10 + (uint64_t)(*v - '0');
		if (x > hi)
			return -EINVAL;
	}
	if (x < lo)
		return -EINVAL;
	*out = x;
	return 0;
}

#define SIZE_EXPECT "expected a size like 256M, a percentage like 10%, min(256M,10%) or max(256M,10%)"

static int set_size(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	struct vcma_size_expr e;

	if (parse_size_expr(v, &e))
		return bad(err, errlen, k, v, SIZE_EXPECT);
	c->size = e;
	return 0;
}

static int set_base(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	uint64_t b = 0;
	int rc;

	if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X') && v[2]) {
		rc = 0;
		for (const char *p = v + 2; *p && !rc; p++) {
			int d = isdigit((unsigned char)*p) ? *p - '0' :
				isxdigit((unsigned char)*p) ? tolower((unsigned char)*p) - 'a' + 10 : -1;

			if (d < 0 || b >> 60)
				rc = -EINVAL;
			else
				b = b << 4 | (uint64_t)d;
		}
	} else {
		rc = vcma_parse_bytes(v, &b);
	}
	if (rc)
		return bad(err, errlen, k, v, "expected a machine address like 0x40000000, 4096 or 512M");
	if (b & (VCMA_PAGE_SIZE - 1))
		return bad(err, errlen, k, v, "must be a multiple of the 4096-byte page size");
	c->has_base = true;
	c->base = b;
	return 0;
}

static int set_align(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	uint64_t x;

	if (parse_uint(v, 0, VCMA_FMAP_MAX_ORDER, &x))
		return bad(err, errlen, k, v, "expected a page order from 0 to 18");
	c->align_order = (uint32_t)x;
	return 0;
}

static int set_min_request(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	uint64_t x;

	if (parse_uint(v, 1, 1u << 20, &x))
		return bad(err, errlen, k, v, "expected a number of pages from 1 to 1048576");
	c->min_request = (uint32_t)x;
	c->min_request_set = true;
	return 0;
}

static int set_mode(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	if (!strcmp(v, "shared"))
		c->mode = VCMA_POOL_SHARED;
	else if (!strcmp(v, "exclusive"))
		c->mode = VCMA_POOL_EXCLUSIVE;
	else
		return bad(err, errlen, k, v, "expected shared or exclusive");
	return 0;
}

static int set_bind(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	const char *name;
	enum vcma_bind_kind kind;

	if (!strncmp(v, "guest:", 6)) {
		kind = VCMA_BIND_GUEST;
		name = v + 6;
	} else if (!strncmp(v, "class:", 6)) {
		kind = VCMA_BIND_CLASS;
		name = v + 6;
	} else {
		return bad(err, errlen, k, v, "expected guest:NAME or class:NAME");
	}
	if (!vcma_name_str_ok(name, VCMA_BIND_NAME_MAX))
		return bad(err, errlen, k, v, "NAME must be 1-63 characters of A-Z a-z 0-9 _ - .");
	c->bind_kind = kind;
	snprintf(c->bind_name, sizeof(c->bind_name), "%s", name);
	return 0;
}

static int set_lendable(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true"))
		c->lendable = 1;
	else if (!strcmp(v, "no") || !strcmp(v, "false"))
		c->lendable = 0;
	else
		return bad(err, errlen, k, v, "expected yes or no");
	return 0;
}

static int set_quota(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	size_t len = strlen(v);
	uint32_t milli;
	uint64_t bytes;

	if (!strcmp(v, "none")) {
		c->quota_kind = VCMA_QUOTA_NONE;
		return 0;
	}
	if (len && v[len - 1] == '%') {
		if (parse_percent(v, len, &milli))
			return bad(err, errlen, k, v, "expected a share of the pool from 0.001% to 100%");
		c->quota_kind = VCMA_QUOTA_PERCENT;
		c->quota_percent_milli = milli;
		return 0;
	}
	if (vcma_parse_bytes(v, &bytes) || bytes == 0)
		return bad(err, errlen, k, v, "expected bytes like 64M, a share like 25%, or none");
	c->quota_kind = VCMA_QUOTA_BYTES;
	c->quota_bytes = bytes;
	return 0;
}

static int set_cost(uint32_t *dst, const char *k, const char *v, char *err, size_t errlen)
{
	uint64_t x;

	if (parse_uint(v, 1, 65535, &x))
		return bad(err, errlen, k, v, "expected a weight from 1 to 65535");
	*dst = (uint32_t)x;
	return 0;
}

static int set_cost_lf(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	return set_cost(&c->cost_lent_free, k, v, err, errlen);
}

static int set_cost_lu(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	return set_cost(&c->cost_lent_used, k, v, err, errlen);
}

static int set_max_region(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	uint64_t bytes;

	if (vcma_parse_bytes(v, &bytes) || bytes < VCMA_PAGE_SIZE || (bytes & (bytes - 1)) ||
	    bytes > (uint64_t)VCMA_PAGE_SIZE << 18)
		return bad(err, errlen, k, v, "expected a power of two from 4K to 1G");
	c->max_region = bytes;
	return 0;
}

static int set_address_bits(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen)
{
	uint64_t x;

	if (parse_uint(v, 20, 52, &x))
		return bad(err, errlen, k, v, "expected address bits from 20 to 52 (32: below 4 GiB)");
	c->address_bits = (uint32_t)x;
	return 0;
}

static const struct {
	const char *key;
	int (*set)(struct vcma_pool_config *c, const char *k, const char *v, char *err, size_t errlen);
} keys[] = {
	{ "size", set_size },
	{ "base", set_base },
	{ "align_order", set_align },
	{ "min_request", set_min_request },
	{ "mode", set_mode },
	{ "bind", set_bind },
	{ "lendable", set_lendable },
	{ "quota", set_quota },
	{ "cost_lent_free", set_cost_lf },
	{ "cost_lent_used", set_cost_lu },
	{ "max_region", set_max_region },
	{ "address_bits", set_address_bits },
};

int vcma_pool_config_init(struct vcma_pool_config *c, const char *name, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if (!name || !vcma_name_str_ok(name, VCMA_POOL_NAME_MAX)) {
		vcma_seterr(err, errlen, "pool name: invalid value '%s' (1-31 characters of A-Z a-z 0-9 _ - .)",
		       name ? name : "");
		return -EINVAL;
	}
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->align_order = VCMA_DEFAULT_ALIGN_ORDER;
	c->min_request = VCMA_DEFAULT_MIN_REQUEST;
	c->mode = VCMA_POOL_SHARED;
	c->lendable = -1;
	c->cost_lent_free = VCMA_DEFAULT_COST_LENT_FREE;
	c->cost_lent_used = VCMA_DEFAULT_COST_LENT_USED;
	return 0;
}

int vcma_pool_config_set(struct vcma_pool_config *c, const char *key, const char *value, char *err,
			 size_t errlen)
{
	if (!key || !value) {
		vcma_seterr(err, errlen, "missing key or value");
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(keys[i].key, key))
			return keys[i].set(c, key, value, err, errlen);
	vcma_seterr(err, errlen, "%s: unknown key (value '%s')", key, value);
	return -EINVAL;
}

int vcma_pool_config_override_size(struct vcma_pool_config *c, const char *value, char *err, size_t errlen)
{
	struct vcma_size_expr e;

	if (!value || parse_size_expr(value, &e))
		return bad(err, errlen, "size override", value ? value : "", SIZE_EXPECT);
	c->size_override = e;
	return 0;
}

int vcma_pool_config_validate(const struct vcma_pool_config *c, char *err, size_t errlen)
{
	if (c->size.kind == VCMA_SIZE_UNSET && c->size_override.kind == VCMA_SIZE_UNSET) {
		vcma_seterr(err, errlen, "pool %s: size: missing (every pool needs a size)", c->name);
		return -EINVAL;
	}
	if (c->mode == VCMA_POOL_EXCLUSIVE && c->bind_kind == VCMA_BIND_NONE) {
		vcma_seterr(err, errlen, "pool %s: bind: missing (an exclusive pool is bound to guest:NAME or class:NAME)",
		       c->name);
		return -EINVAL;
	}
	if (c->mode == VCMA_POOL_SHARED && c->bind_kind != VCMA_BIND_NONE) {
		vcma_seterr(err, errlen, "pool %s: bind: '%s' needs mode = exclusive", c->name, c->bind_name);
		return -EINVAL;
	}
	if (c->mode == VCMA_POOL_EXCLUSIVE && c->lendable == 1) {
		vcma_seterr(err, errlen, "pool %s: lendable: 'yes' is not allowed for an exclusive pool", c->name);
		return -EINVAL;
	}
	if (c->cost_lent_free >= c->cost_lent_used) {
		vcma_seterr(err, errlen, "pool %s: cost_lent_free: '%u' must be below cost_lent_used (%u)", c->name,
		       c->cost_lent_free, c->cost_lent_used);
		return -EINVAL;
	}
	return 0;
}

static uint64_t percent_of(uint64_t total, uint32_t milli)
{
	/* floor(total * milli / 100000) without overflow: milli <= 100000 */
	return total / 100000u * milli + total % 100000u * milli / 100000u;
}

int vcma_pool_config_resolve_size(const struct vcma_pool_config *c, uint64_t host_bytes, uint64_t *bytes,
				  char *err, size_t errlen)
{
	const struct vcma_size_expr *e = c->size_override.kind != VCMA_SIZE_UNSET ? &c->size_override : &c->size;
	uint64_t abs = e->bytes, pct = percent_of(host_bytes, e->percent_milli), v;

	switch (e->kind) {
	case VCMA_SIZE_BYTES: v = abs; break;
	case VCMA_SIZE_PERCENT: v = pct; break;
	case VCMA_SIZE_MIN: v = abs < pct ? abs : pct; break;
	case VCMA_SIZE_MAX: v = abs > pct ? abs : pct; break;
	default:
		vcma_seterr(err, errlen, "pool %s: size: missing", c->name);
		return -EINVAL;
	}
	v &= ~(uint64_t)(VCMA_PAGE_SIZE - 1);
	if (v == 0) {
		vcma_seterr(err, errlen, "pool %s: size: resolves to less than one page on a host of %llu bytes", c->name,
		       (unsigned long long)host_bytes);
		return -EINVAL;
	}
	if (v > host_bytes) {
		vcma_seterr(err, errlen, "pool %s: size: resolves to %llu bytes, more than the host's %llu", c->name,
		       (unsigned long long)v, (unsigned long long)host_bytes);
		return -EINVAL;
	}
	*bytes = v;
	return 0;
}

uint64_t vcma_pool_config_quota(const struct vcma_pool_config *c, uint64_t pool_bytes)
{
	switch (c->quota_kind) {
	case VCMA_QUOTA_BYTES: return c->quota_bytes;
	case VCMA_QUOTA_PERCENT: return percent_of(pool_bytes, c->quota_percent_milli);
	default: return UINT64_MAX;
	}
}

const char *vcma_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned int u = 0;
	uint64_t div = 1;

	while (u + 1 < sizeof(unit) / sizeof(unit[0]) && bytes >= div * 1024) {
		div *= 1024;
		u++;
	}
	if (bytes % div == 0)
		snprintf(buf, len, "%llu %s", (unsigned long long)(bytes / div), unit[u]);
	else
		snprintf(buf, len, "%.1f %s", (double)bytes / (double)div, unit[u]);
	return buf;
}
