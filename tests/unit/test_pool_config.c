/* SPDX-License-Identifier: MIT */
/*
 * test_pool_config - the pool policy keys (docs/ARCHITECTURE.md, "Pool policy") as
 * pool_config.h states them: parsing of every key, defaults, cross-key validation,
 * size resolution against the host, quota, byte parsing and formatting, and the error
 * messages (key and value named, small buffers never overrun).
 *
 * Where the contract is silent (whitespace, lower-case suffixes, hex, "1.5G", case of
 * keywords, yes/no synonyms) nothing is asserted either way.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pool_config.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define TiB ((uint64_t)1 << 40)
#define PiB ((uint64_t)1 << 50)

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static char err[512];

/* ---------------------------------------------------------------- helpers */

static uint64_t pages_down(uint64_t b)
{
	return b & ~(uint64_t)(VCMA_PAGE_SIZE - 1);
}

/* floor(host * percent_milli / 100000) without overflowing 64 bits */
static uint64_t pct_of(uint64_t host, uint32_t percent_milli)
{
	uint64_t q = host / 100000u, r = host % 100000u;

	return q * percent_milli + r * percent_milli / 100000u;
}

static const char *stristr(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	for (; *hay; hay++) {
		size_t i;

		for (i = 0; i < n; i++)
			if (tolower((unsigned char)hay[i]) != tolower((unsigned char)needle[i]))
				break;
		if (i == n)
			return hay;
	}
	return n == 0 ? hay : NULL;
}

static void clear_err(void)
{
	memset(err, 0, sizeof(err));
}

static void init_ok(struct vcma_pool_config *c)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_init(c, "p0", err, sizeof(err));
	if (rc != 0)
		fail_msg("init(\"p0\"): rc %d, err \"%s\"", rc, err);
}

static void set_ok(struct vcma_pool_config *c, const char *key, const char *value)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_set(c, key, value, err, sizeof(err));
	if (rc != 0)
		fail_msg("set %s=\"%s\": expected 0, got %d, err \"%s\"", key, value, rc, err);
}

/* -EINVAL, and the message names the key and quotes the value. */
static void set_rejected(struct vcma_pool_config *c, const char *key, const char *value)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_set(c, key, value, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("set %s=\"%s\": expected -EINVAL, got %d", key, value, rc);
	if (err[0] == '\0')
		fail_msg("set %s=\"%s\": rejected with an empty message", key, value);
	if (!strstr(err, key))
		fail_msg("set %s=\"%s\": message \"%s\" does not name the key", key, value, err);
	if (!strstr(err, value))
		fail_msg("set %s=\"%s\": message \"%s\" does not contain the value", key, value,
			 err);
}

static void override_ok(struct vcma_pool_config *c, const char *value)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_override_size(c, value, err, sizeof(err));
	if (rc != 0)
		fail_msg("override \"%s\": expected 0, got %d, err \"%s\"", value, rc, err);
}

static void override_rejected(struct vcma_pool_config *c, const char *value)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_override_size(c, value, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("override \"%s\": expected -EINVAL, got %d", value, rc);
	if (!strstr(err, "size"))
		fail_msg("override \"%s\": message \"%s\" does not name size", value, err);
	if (!strstr(err, value))
		fail_msg("override \"%s\": message \"%s\" does not contain the value", value,
			 err);
}

static uint64_t resolve_ok(const struct vcma_pool_config *c, uint64_t host)
{
	uint64_t bytes = 0;
	int rc;

	clear_err();
	rc = vcma_pool_config_resolve_size(c, host, &bytes, err, sizeof(err));
	if (rc != 0)
		fail_msg("resolve(host %llu): expected 0, got %d, err \"%s\"",
			 (unsigned long long)host, rc, err);
	return bytes;
}

static void resolve_rejected(const struct vcma_pool_config *c, uint64_t host)
{
	uint64_t bytes = 0;
	int rc;

	clear_err();
	rc = vcma_pool_config_resolve_size(c, host, &bytes, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("resolve(host %llu): expected -EINVAL, got %d (bytes %llu)",
			 (unsigned long long)host, rc, (unsigned long long)bytes);
	if (!strstr(err, "size"))
		fail_msg("resolve(host %llu): message \"%s\" does not name size",
			 (unsigned long long)host, err);
}

/* size=value resolved on host; expected bytes */
static void expect_size(const char *value, uint64_t host, uint64_t expected)
{
	struct vcma_pool_config c;
	uint64_t got;

	init_ok(&c);
	set_ok(&c, "size", value);
	got = resolve_ok(&c, host);
	if (got != expected)
		fail_msg("size=%s on host %llu: expected %llu, got %llu", value,
			 (unsigned long long)host, (unsigned long long)expected,
			 (unsigned long long)got);
}

/* A size that is zero (or rounds to zero) or exceeds the host may be refused at set()
 * or at resolve(); it must be refused at one of them. */
static void expect_size_unusable(const char *value, uint64_t host)
{
	struct vcma_pool_config c;
	int rc;

	init_ok(&c);
	clear_err();
	rc = vcma_pool_config_set(&c, "size", value, err, sizeof(err));
	if (rc == 0) {
		resolve_rejected(&c, host);
		return;
	}
	if (rc != -EINVAL)
		fail_msg("size=%s: expected 0 or -EINVAL, got %d", value, rc);
	if (!strstr(err, "size") || !strstr(err, value))
		fail_msg("size=%s: message \"%s\" lacks key or value", value, err);
}

static bool expr_equal(const struct vcma_size_expr *a, const struct vcma_size_expr *b)
{
	return a->kind == b->kind && a->bytes == b->bytes && a->percent_milli == b->percent_milli;
}

/* The first field that differs, or NULL. */
static const char *config_diff(const struct vcma_pool_config *a, const struct vcma_pool_config *b)
{
	if (strcmp(a->name, b->name) != 0)
		return "name";
	if (!expr_equal(&a->size, &b->size))
		return "size";
	if (!expr_equal(&a->size_override, &b->size_override))
		return "size_override";
	if (a->has_base != b->has_base || a->base != b->base)
		return "base";
	if (a->align_order != b->align_order)
		return "align_order";
	if (a->min_request != b->min_request || a->min_request_set != b->min_request_set)
		return "min_request";
	if (a->mode != b->mode)
		return "mode";
	if (a->bind_kind != b->bind_kind || strcmp(a->bind_name, b->bind_name) != 0)
		return "bind";
	if (a->lendable != b->lendable)
		return "lendable";
	if (a->quota_kind != b->quota_kind || a->quota_bytes != b->quota_bytes ||
	    a->quota_percent_milli != b->quota_percent_milli)
		return "quota";
	if (a->cost_lent_free != b->cost_lent_free || a->cost_lent_used != b->cost_lent_used)
		return "cost_lent_*";
	return NULL;
}

static void validate_ok(const struct vcma_pool_config *c)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_validate(c, err, sizeof(err));
	if (rc != 0)
		fail_msg("validate: expected 0, got %d, err \"%s\"", rc, err);
}

static void validate_rejected(const struct vcma_pool_config *c, const char *names)
{
	int rc;

	clear_err();
	rc = vcma_pool_config_validate(c, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("validate: expected -EINVAL, got %d", rc);
	if (!strstr(err, names))
		fail_msg("validate: message \"%s\" does not name %s", err, names);
}

/* ---------------------------------------------------------- vcma_parse_bytes */

static void parse_bytes_ok(const char *s, uint64_t expected)
{
	uint64_t v = 0xdeadbeefull;
	int rc = vcma_parse_bytes(s, &v);

	if (rc != 0)
		fail_msg("parse_bytes(\"%s\"): expected 0, got %d", s, rc);
	if (v != expected)
		fail_msg("parse_bytes(\"%s\"): expected %llu, got %llu", s,
			 (unsigned long long)expected, (unsigned long long)v);
}

static void test_parse_bytes_plain(void **state)
{
	(void)state;
	parse_bytes_ok("0", 0);
	parse_bytes_ok("1", 1);
	parse_bytes_ok("4096", 4096);
	parse_bytes_ok("123456789", 123456789);
	parse_bytes_ok("18446744073709551615", UINT64_MAX);
}

static void test_parse_bytes_suffixes(void **state)
{
	(void)state;
	parse_bytes_ok("1K", KiB);
	parse_bytes_ok("512K", 512 * KiB);
	parse_bytes_ok("1M", MiB);
	parse_bytes_ok("256M", 256 * MiB);
	parse_bytes_ok("1G", GiB);
	parse_bytes_ok("3G", 3 * GiB);
	parse_bytes_ok("2T", 2 * TiB);
	parse_bytes_ok("0K", 0);
	parse_bytes_ok("4194304K", 4 * GiB);
	/* largest T value that fits: 2^64 - 2^40 */
	parse_bytes_ok("16777215T", (uint64_t)16777215 << 40);
}

static void test_parse_bytes_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"-1",
		"-4096",
		"12Q",
		"K",
		"M",
		"abc",
		"1KK",
		"1M1",
		"99999999999999999999",
		"18446744073709551616", /* UINT64_MAX + 1 */
		"20000000T",
		"16777216T",   /* exactly 2^64 */
		"17179869184G", /* exactly 2^64 */
		"18014398509481984K",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		uint64_t v = 0;
		int rc = vcma_parse_bytes(bad[i], &v);

		if (rc != -EINVAL)
			fail_msg("parse_bytes(\"%s\"): expected -EINVAL, got %d (value %llu)",
				 bad[i], rc, (unsigned long long)v);
	}
}

/* --------------------------------------------------------- vcma_format_bytes */

static void format_has(uint64_t bytes, const char *number, const char *unit)
{
	char buf[64];
	const char *s;
	size_t n = strlen(number);

	memset(buf, 'Z', sizeof(buf));
	s = vcma_format_bytes(bytes, buf, sizeof(buf));
	assert_ptr_equal(s, buf);
	assert_non_null(memchr(buf, '\0', sizeof(buf)));
	/* "4 KiB" or "4.0 KiB": the number, then a space or a decimal point, then the unit */
	if (strncmp(buf, number, n) != 0 || (buf[n] != ' ' && buf[n] != '.') ||
	    !strstr(buf, unit))
		fail_msg("format_bytes(%llu) = \"%s\", expected %s %s", (unsigned long long)bytes,
			 buf, number, unit);
}

static void test_format_bytes(void **state)
{
	char buf[64];
	(void)state;

	format_has(4096, "4", "KiB");
	format_has(512 * KiB, "512", "KiB");
	format_has(256 * MiB, "256", "MiB");
	format_has(GiB, "1", "GiB");
	format_has(8 * GiB, "8", "GiB");
	assert_string_equal(vcma_format_bytes(GiB + 512 * MiB, buf, sizeof(buf)), "1.5 GiB");
	assert_string_equal(vcma_format_bytes(MiB + 512 * KiB, buf, sizeof(buf)), "1.5 MiB");
}

static void test_format_bytes_small_buffer(void **state)
{
	char buf[32];
	(void)state;

	memset(buf, 'Z', sizeof(buf));
	assert_ptr_equal(vcma_format_bytes(GiB + 512 * MiB, buf, 4), buf);
	assert_non_null(memchr(buf, '\0', 4));
	for (size_t i = 4; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 'Z');
}

/* ------------------------------------------------------ vcma_pool_config_init */

static void test_init_defaults(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	memset(&c, 0xa5, sizeof(c)); /* init must not rely on a zeroed struct */
	init_ok(&c);
	assert_string_equal(c.name, "p0");
	assert_int_equal(c.size.kind, VCMA_SIZE_UNSET);
	assert_int_equal(c.size_override.kind, VCMA_SIZE_UNSET);
	assert_false(c.has_base);
	assert_int_equal(c.align_order, VCMA_DEFAULT_ALIGN_ORDER);
	assert_int_equal(c.align_order, 8);
	assert_int_equal(c.min_request, VCMA_DEFAULT_MIN_REQUEST);
	assert_int_equal(c.min_request, 2);
	assert_false(c.min_request_set);
	assert_int_equal(c.mode, VCMA_POOL_SHARED);
	assert_int_equal(c.bind_kind, VCMA_BIND_NONE);
	assert_string_equal(c.bind_name, "");
	assert_int_equal(c.lendable, -1);
	assert_int_equal(c.quota_kind, VCMA_QUOTA_NONE);
	assert_int_equal(c.cost_lent_free, VCMA_DEFAULT_COST_LENT_FREE);
	assert_int_equal(c.cost_lent_free, 1);
	assert_int_equal(c.cost_lent_used, VCMA_DEFAULT_COST_LENT_USED);
	assert_int_equal(c.cost_lent_used, 16);
	assert_true(vcma_pool_config_quota(&c, GiB) == UINT64_MAX);
}

static void test_init_valid_names(void **state)
{
	static const char *const good[] = {
		"a", "pool0", "A-b_c.9", "gpu.dma-0", "0123456789012345678901234567890", /* 31 */
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		struct vcma_pool_config c;
		int rc;

		clear_err();
		rc = vcma_pool_config_init(&c, good[i], err, sizeof(err));
		if (rc != 0)
			fail_msg("init(\"%s\"): expected 0, got %d, err \"%s\"", good[i], rc, err);
		assert_string_equal(c.name, good[i]);
	}
}

static void test_init_rejects_names(void **state)
{
	static const char *const bad[] = {
		"",
		"01234567890123456789012345678901", /* 32 */
		"0123456789012345678901234567890123456789012345678901234567890123456789",
		"a b",
		"a/b",
		"../etc",
		"a:b",
		"pool*",
		"tab\there",
		"new\nline",
		"caf\xc3\xa9",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;
		int rc;

		clear_err();
		rc = vcma_pool_config_init(&c, bad[i], err, sizeof(err));
		if (rc != -EINVAL)
			fail_msg("init(\"%s\"): expected -EINVAL, got %d", bad[i], rc);
		if (err[0] == '\0')
			fail_msg("init(\"%s\"): empty message", bad[i]);
		if (!stristr(err, "name"))
			fail_msg("init(\"%s\"): message \"%s\" does not say name", bad[i], err);
	}
	/* printable offending names are quoted in the message */
	for (size_t i = 1; i <= 7; i++) {
		struct vcma_pool_config c;

		clear_err();
		assert_int_equal(vcma_pool_config_init(&c, bad[i], err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i]))
			fail_msg("init(\"%s\"): message \"%s\" does not contain the name", bad[i],
				 err);
	}
}

/* ------------------------------------------------------------------- size */

static void test_size_absolute(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	assert_int_equal(c.size.kind, VCMA_SIZE_BYTES);
	assert_true(c.size.bytes == 256 * MiB);
	assert_true(resolve_ok(&c, 8 * GiB) == 256 * MiB);
	assert_true(resolve_ok(&c, 256 * MiB) == 256 * MiB); /* equal to host: fits */

	expect_size("4096", 8 * GiB, 4096);
	expect_size("512K", 8 * GiB, 512 * KiB);
	expect_size("2G", 8 * GiB, 2 * GiB);
	expect_size("1T", 2 * TiB, TiB);
	/* rounded down to whole pages */
	expect_size("6K", 8 * GiB, 4096);
	expect_size("1048577", 8 * GiB, MiB);
}

static void test_size_percent(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "10%");
	assert_int_equal(c.size.kind, VCMA_SIZE_PERCENT);
	assert_int_equal(c.size.percent_milli, 10000);
	assert_true(resolve_ok(&c, 8 * GiB) == pages_down(pct_of(8 * GiB, 10000)));
	assert_true(resolve_ok(&c, 8 * GiB) == 858992640u);
	assert_true(resolve_ok(&c, GiB) == 107372544u);

	init_ok(&c);
	set_ok(&c, "size", "12.5%");
	assert_int_equal(c.size.kind, VCMA_SIZE_PERCENT);
	assert_int_equal(c.size.percent_milli, 12500);
	assert_true(resolve_ok(&c, 8 * GiB) == GiB);

	init_ok(&c);
	set_ok(&c, "size", "0.5%");
	assert_int_equal(c.size.percent_milli, 500);
	assert_true(resolve_ok(&c, 8 * GiB) == pages_down(pct_of(8 * GiB, 500)));

	init_ok(&c);
	set_ok(&c, "size", "33.333%");
	assert_int_equal(c.size.percent_milli, 33333);
	assert_true(resolve_ok(&c, 3 * GiB) == pages_down(pct_of(3 * GiB, 33333)));

	expect_size("25%", GiB, 256 * MiB);
	expect_size("100%", GiB, GiB);
	expect_size("100%", GiB + 100, GiB); /* host not a page multiple */
	expect_size("50%", 6 * GiB + 3 * 4096, 3 * GiB + 4096);
}

/* Percentages of very large hosts must not overflow 64-bit intermediates. */
static void test_size_percent_large_host(void **state)
{
	(void)state;
	expect_size("50%", PiB, PiB / 2);
	expect_size("100%", PiB, PiB);
	expect_size("12.5%", 64 * PiB, 8 * PiB);
	expect_size("33.333%", PiB, pages_down(pct_of(PiB, 33333)));
}

static void test_size_min_max(void **state)
{
	struct vcma_pool_config c;
	const uint64_t ten_pct_1g = pages_down(pct_of(GiB, 10000));     /* < 256M */
	const uint64_t ten_pct_8g = pages_down(pct_of(8 * GiB, 10000)); /* > 256M */
	(void)state;

	assert_true(ten_pct_1g < 256 * MiB && ten_pct_8g > 256 * MiB);

	init_ok(&c);
	set_ok(&c, "size", "min(256M,10%)");
	assert_int_equal(c.size.kind, VCMA_SIZE_MIN);
	assert_true(c.size.bytes == 256 * MiB);
	assert_int_equal(c.size.percent_milli, 10000);
	assert_true(resolve_ok(&c, GiB) == ten_pct_1g);
	assert_true(resolve_ok(&c, 8 * GiB) == 256 * MiB);

	init_ok(&c);
	set_ok(&c, "size", "max(256M,10%)");
	assert_int_equal(c.size.kind, VCMA_SIZE_MAX);
	assert_true(c.size.bytes == 256 * MiB);
	assert_int_equal(c.size.percent_milli, 10000);
	assert_true(resolve_ok(&c, GiB) == 256 * MiB);
	assert_true(resolve_ok(&c, 8 * GiB) == ten_pct_8g);

	init_ok(&c);
	set_ok(&c, "size", "min(1G,12.5%)");
	assert_int_equal(c.size.kind, VCMA_SIZE_MIN);
	assert_true(c.size.bytes == GiB);
	assert_int_equal(c.size.percent_milli, 12500);
	assert_true(resolve_ok(&c, 4 * GiB) == 512 * MiB);
	assert_true(resolve_ok(&c, 16 * GiB) == GiB);

	/* the bigger side may exceed the host as long as min() picks the other one */
	expect_size("min(2G,10%)", GiB, ten_pct_1g);
	/* max() picking a side larger than the host is refused */
	init_ok(&c);
	set_ok(&c, "size", "max(256M,10%)");
	resolve_rejected(&c, 128 * MiB);
}

static void test_size_last_set_wins(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "min(256M,10%)");
	set_ok(&c, "size", "25%");
	assert_int_equal(c.size.kind, VCMA_SIZE_PERCENT);
	assert_true(resolve_ok(&c, 8 * GiB) == 2 * GiB);
	set_ok(&c, "size", "64M");
	assert_int_equal(c.size.kind, VCMA_SIZE_BYTES);
	assert_true(resolve_ok(&c, 8 * GiB) == 64 * MiB);
}

static void test_size_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"abc",
		"M",
		"-1",
		"-10%",
		"12Q",
		"%",
		"10%%",
		"101%",
		"100.001%",
		"1000%",
		"99999999999999999999",
		"20000000T",
		"99999999999999999999%",
		"min(256M)",
		"min(256M,10%",
		"min256M,10%)",
		"min(,10%)",
		"min(256M,)",
		"min()",
		"avg(256M,10%)",
		"min(256M,10%)x",
		"min(256M,101%)",
		"max(12Q,10%)",
		"max(256M,abc)",
		"min(20000000T,10%)",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "size", bad[i]);
	}
}

static void test_size_zero_and_too_large(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	expect_size_unusable("0", 8 * GiB);
	expect_size_unusable("0%", 8 * GiB);
	expect_size_unusable("0K", 8 * GiB);
	expect_size_unusable("min(0,10%)", 8 * GiB);
	expect_size_unusable("1000", 8 * GiB); /* less than a page: rounds to 0 */

	/* a valid expression that comes out as zero for this host */
	init_ok(&c);
	set_ok(&c, "size", "1%");
	resolve_rejected(&c, 64 * KiB); /* 655 bytes -> 0 pages */
	resolve_rejected(&c, 0);

	/* larger than the host */
	init_ok(&c);
	set_ok(&c, "size", "2G");
	resolve_rejected(&c, GiB);
	resolve_rejected(&c, 2 * GiB - 4096);
	assert_true(resolve_ok(&c, 2 * GiB) == 2 * GiB);
}

static void test_resolve_unset(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	resolve_rejected(&c, 8 * GiB);
}

/* --------------------------------------------------------------- override */

static void test_override_wins(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	override_ok(&c, "512M");
	assert_int_equal(c.size_override.kind, VCMA_SIZE_BYTES);
	assert_true(c.size_override.bytes == 512 * MiB);
	/* size itself is kept; the override wins at resolve */
	assert_int_equal(c.size.kind, VCMA_SIZE_BYTES);
	assert_true(c.size.bytes == 256 * MiB);
	assert_true(resolve_ok(&c, 8 * GiB) == 512 * MiB);

	/* a later `size` does not beat the override */
	set_ok(&c, "size", "128M");
	assert_true(resolve_ok(&c, 8 * GiB) == 512 * MiB);
	validate_ok(&c);
}

static void test_override_syntax(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	override_ok(&c, "10%");
	assert_int_equal(c.size_override.kind, VCMA_SIZE_PERCENT);
	assert_int_equal(c.size_override.percent_milli, 10000);
	assert_true(resolve_ok(&c, 8 * GiB) == pages_down(pct_of(8 * GiB, 10000)));

	override_ok(&c, "12.5%");
	assert_int_equal(c.size_override.percent_milli, 12500);
	assert_true(resolve_ok(&c, 8 * GiB) == GiB);

	override_ok(&c, "min(256M,10%)");
	assert_int_equal(c.size_override.kind, VCMA_SIZE_MIN);
	assert_true(resolve_ok(&c, GiB) == pages_down(pct_of(GiB, 10000)));
	assert_true(resolve_ok(&c, 8 * GiB) == 256 * MiB);

	override_ok(&c, "max(256M,10%)");
	assert_int_equal(c.size_override.kind, VCMA_SIZE_MAX);
	assert_true(resolve_ok(&c, GiB) == 256 * MiB);
	assert_true(resolve_ok(&c, 8 * GiB) == pages_down(pct_of(8 * GiB, 10000)));

	/* an override alone resolves too */
	init_ok(&c);
	override_ok(&c, "64M");
	assert_true(resolve_ok(&c, 8 * GiB) == 64 * MiB);
}

static void test_override_too_large(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	/* the override wins even when it does not fit: no silent fallback to `size` */
	init_ok(&c);
	set_ok(&c, "size", "256M");
	override_ok(&c, "2G");
	resolve_rejected(&c, GiB);
}

static void test_override_rejects(void **state)
{
	static const char *const bad[] = {
		"", "abc", "12Q", "-1", "101%", "99999999999999999999", "20000000T",
		"min(256M)", "avg(256M,10%)", "min(256M,10%)x",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_ok(&c, "size", "256M");
		override_rejected(&c, bad[i]);
		/* the rejected override does not take effect */
		assert_int_equal(c.size_override.kind, VCMA_SIZE_UNSET);
		assert_true(resolve_ok(&c, 8 * GiB) == 256 * MiB);
	}
}

/* ------------------------------------------------------------------- base */

static void test_base(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	assert_false(c.has_base);
	set_ok(&c, "base", "1G");
	assert_true(c.has_base);
	assert_true(c.base == GiB);
	set_ok(&c, "base", "4096");
	assert_true(c.base == 4096);
	set_ok(&c, "base", "256M");
	assert_true(c.base == 256 * MiB);
	set_ok(&c, "base", "8K");
	assert_true(c.base == 8 * KiB);
	set_ok(&c, "base", "4294967296");
	assert_true(c.base == 4 * GiB);
	set_ok(&c, "base", "68719476736");
	assert_true(c.base == 64 * GiB);
}

static void test_base_rejects(void **state)
{
	static const char *const bad[] = {
		"",     "junk", "4097",  "1000", "2049K", "1K",
		"-4096", "1G1", "12Q",  "99999999999999999999",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "base", bad[i]);
		assert_false(c.has_base);
	}
}

/* ------------------------------------------------------------ align_order */

static void test_align_order(void **state)
{
	struct vcma_pool_config c;
	char v[8];
	(void)state;

	init_ok(&c);
	assert_int_equal(c.align_order, 8);
	for (unsigned o = 0; o <= 18; o++) {
		snprintf(v, sizeof(v), "%u", o);
		set_ok(&c, "align_order", v);
		assert_int_equal(c.align_order, o);
	}
}

static void test_align_order_rejects(void **state)
{
	static const char *const bad[] = {
		"", "19", "20", "64", "100", "-1", "abc", "8x", "1M",
		"4294967304", /* 2^32 + 8: must not wrap to 8 */
		"99999999999999999999",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "align_order", bad[i]);
		assert_int_equal(c.align_order, 8);
	}
}

/* ------------------------------------------------------------ min_request */

static void test_min_request(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	assert_int_equal(c.min_request, 2);
	assert_false(c.min_request_set);
	set_ok(&c, "min_request", "1");
	assert_int_equal(c.min_request, 1);
	assert_true(c.min_request_set);
	set_ok(&c, "min_request", "2");
	assert_int_equal(c.min_request, 2);
	set_ok(&c, "min_request", "16");
	assert_int_equal(c.min_request, 16);
}

static void test_min_request_rejects(void **state)
{
	static const char *const bad[] = {
		"", "0", "-1", "abc", "2x", "4294967298" /* 2^32 + 2 */, "99999999999999999999",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "min_request", bad[i]);
		assert_int_equal(c.min_request, 2);
		assert_false(c.min_request_set);
	}
}

/* ------------------------------------------------------------ mode & bind */

static void test_mode(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	assert_int_equal(c.mode, VCMA_POOL_SHARED);
	set_ok(&c, "mode", "exclusive");
	assert_int_equal(c.mode, VCMA_POOL_EXCLUSIVE);
	set_ok(&c, "mode", "shared");
	assert_int_equal(c.mode, VCMA_POOL_SHARED);
}

static void test_mode_rejects(void **state)
{
	static const char *const bad[] = { "", "junk", "share", "sharedx", "exclusivex", "1" };
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "mode", bad[i]);
		assert_int_equal(c.mode, VCMA_POOL_SHARED);
	}
}

static void test_bind(void **state)
{
	struct vcma_pool_config c;
	char v[8 + VCMA_BIND_NAME_MAX];
	(void)state;

	init_ok(&c);
	set_ok(&c, "bind", "guest:vm1");
	assert_int_equal(c.bind_kind, VCMA_BIND_GUEST);
	assert_string_equal(c.bind_name, "vm1");
	set_ok(&c, "bind", "class:gpu");
	assert_int_equal(c.bind_kind, VCMA_BIND_CLASS);
	assert_string_equal(c.bind_name, "gpu");

	/* longest name that fits bind_name */
	strcpy(v, "guest:");
	memset(v + 6, 'g', VCMA_BIND_NAME_MAX - 1);
	v[6 + VCMA_BIND_NAME_MAX - 1] = '\0';
	set_ok(&c, "bind", v);
	assert_int_equal(c.bind_kind, VCMA_BIND_GUEST);
	assert_string_equal(c.bind_name, v + 6);
}

static void test_bind_rejects(void **state)
{
	char toolong[8 + VCMA_BIND_NAME_MAX + 1];
	const char *bad[] = {
		"", "foo", "guest:", "class:", "guest", "class", ":vm1", "host:vm1", toolong,
	};
	(void)state;

	strcpy(toolong, "class:");
	memset(toolong + 6, 'c', VCMA_BIND_NAME_MAX); /* one more than fits */
	toolong[6 + VCMA_BIND_NAME_MAX] = '\0';

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "bind", bad[i]);
		assert_int_equal(c.bind_kind, VCMA_BIND_NONE);
	}
}

/* --------------------------------------------------------------- lendable */

static void test_lendable(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	assert_int_equal(c.lendable, -1);
	set_ok(&c, "lendable", "no");
	assert_int_equal(c.lendable, 0);
	set_ok(&c, "lendable", "yes");
	assert_int_equal(c.lendable, 1);
}

static void test_lendable_rejects(void **state)
{
	static const char *const bad[] = { "", "maybe", "yess", "nope", "2", "-1" };
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "lendable", bad[i]);
		assert_int_equal(c.lendable, -1);
	}
}

/* ------------------------------------------------------------------ quota */

static void test_quota(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	assert_int_equal(c.quota_kind, VCMA_QUOTA_NONE);
	assert_true(vcma_pool_config_quota(&c, GiB) == UINT64_MAX);

	set_ok(&c, "quota", "64M");
	assert_int_equal(c.quota_kind, VCMA_QUOTA_BYTES);
	assert_true(c.quota_bytes == 64 * MiB);
	assert_true(vcma_pool_config_quota(&c, GiB) == 64 * MiB);
	assert_true(vcma_pool_config_quota(&c, 8 * GiB) == 64 * MiB);

	set_ok(&c, "quota", "25%");
	assert_int_equal(c.quota_kind, VCMA_QUOTA_PERCENT);
	assert_int_equal(c.quota_percent_milli, 25000);
	assert_true(vcma_pool_config_quota(&c, GiB) == 256 * MiB);
	assert_true(vcma_pool_config_quota(&c, 8 * GiB) == 2 * GiB);

	set_ok(&c, "quota", "12.5%");
	assert_int_equal(c.quota_percent_milli, 12500);
	assert_true(vcma_pool_config_quota(&c, 8 * MiB) == MiB);

	set_ok(&c, "quota", "100%");
	assert_true(vcma_pool_config_quota(&c, 8 * GiB) == 8 * GiB);

	set_ok(&c, "quota", "50%");
	assert_true(vcma_pool_config_quota(&c, PiB) == PiB / 2); /* no 64-bit overflow */

	set_ok(&c, "quota", "none");
	assert_int_equal(c.quota_kind, VCMA_QUOTA_NONE);
	assert_true(vcma_pool_config_quota(&c, GiB) == UINT64_MAX);
}

static void test_quota_rejects(void **state)
{
	static const char *const bad[] = {
		"", "junk", "-1", "-5%", "101%", "12Q", "99999999999999999999", "20000000T",
		"nonee", "%",
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_rejected(&c, "quota", bad[i]);
		assert_int_equal(c.quota_kind, VCMA_QUOTA_NONE);
	}
}

/* ------------------------------------------------------------------ costs */

static void test_costs(void **state)
{
	static const char *const keys[] = { "cost_lent_free", "cost_lent_used" };
	(void)state;

	for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
		struct vcma_pool_config c;
		uint32_t *field;

		init_ok(&c);
		field = k == 0 ? &c.cost_lent_free : &c.cost_lent_used;
		assert_int_equal(*field, k == 0 ? 1 : 16);
		set_ok(&c, keys[k], "1");
		assert_int_equal(*field, 1);
		set_ok(&c, keys[k], "100");
		assert_int_equal(*field, 100);
		set_ok(&c, keys[k], "65535");
		assert_int_equal(*field, 65535);
	}
}

static void test_costs_reject(void **state)
{
	static const char *const keys[] = { "cost_lent_free", "cost_lent_used" };
	static const char *const bad[] = {
		"", "0", "65536", "100000", "-1", "abc", "16x", "4294967297" /* 2^32 + 1 */,
		"99999999999999999999",
	};
	(void)state;

	for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
		for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
			struct vcma_pool_config c;

			init_ok(&c);
			set_rejected(&c, keys[k], bad[i]);
			assert_int_equal(c.cost_lent_free, 1);
			assert_int_equal(c.cost_lent_used, 16);
		}
	}
}

/* ------------------------------------------------------------ unknown key */

static void test_unknown_key(void **state)
{
	static const char *const keys[] = { "sizee", "colour", "cost_lent", "align", "" };
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
		struct vcma_pool_config c;
		int rc;

		init_ok(&c);
		clear_err();
		rc = vcma_pool_config_set(&c, keys[i], "1", err, sizeof(err));
		if (rc != -EINVAL)
			fail_msg("set unknown key \"%s\": expected -EINVAL, got %d", keys[i], rc);
		if (err[0] == '\0' || !strstr(err, keys[i]))
			fail_msg("unknown key \"%s\": message \"%s\" does not name it", keys[i],
				 err);
	}
}

/* -------------------------------------------------------------- validate */

static void test_validate_ok(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	/* shared, defaults */
	init_ok(&c);
	set_ok(&c, "size", "256M");
	validate_ok(&c);

	/* shared, everything set */
	set_ok(&c, "base", "1G");
	set_ok(&c, "align_order", "10");
	set_ok(&c, "min_request", "1");
	set_ok(&c, "lendable", "no");
	set_ok(&c, "quota", "25%");
	set_ok(&c, "cost_lent_free", "15");
	set_ok(&c, "cost_lent_used", "16");
	validate_ok(&c);
	set_ok(&c, "lendable", "yes");
	set_ok(&c, "cost_lent_free", "1");
	set_ok(&c, "cost_lent_used", "65535");
	validate_ok(&c);

	/* exclusive, bound to a guest, lendable left unset */
	init_ok(&c);
	set_ok(&c, "size", "64M");
	set_ok(&c, "mode", "exclusive");
	set_ok(&c, "bind", "guest:vm1");
	validate_ok(&c);
	set_ok(&c, "lendable", "no");
	validate_ok(&c);

	/* exclusive, bound to a class; bind given before mode */
	init_ok(&c);
	set_ok(&c, "size", "10%");
	set_ok(&c, "bind", "class:gpu");
	set_ok(&c, "mode", "exclusive");
	validate_ok(&c);
}

static void test_validate_missing_size(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	validate_rejected(&c, "size");

	init_ok(&c);
	set_ok(&c, "mode", "exclusive");
	set_ok(&c, "bind", "guest:vm1");
	validate_rejected(&c, "size");
}

static void test_validate_exclusive_needs_bind(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	set_ok(&c, "mode", "exclusive");
	validate_rejected(&c, "bind");
}

static void test_validate_bind_needs_exclusive(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	set_ok(&c, "bind", "guest:vm1");
	validate_rejected(&c, "bind");

	init_ok(&c);
	set_ok(&c, "size", "256M");
	set_ok(&c, "mode", "exclusive");
	set_ok(&c, "bind", "class:gpu");
	set_ok(&c, "mode", "shared");
	validate_rejected(&c, "bind");
}

static void test_validate_exclusive_not_lendable(void **state)
{
	struct vcma_pool_config c;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	set_ok(&c, "mode", "exclusive");
	set_ok(&c, "bind", "guest:vm1");
	set_ok(&c, "lendable", "yes");
	validate_rejected(&c, "lendable");
}

static void test_validate_costs_ordered(void **state)
{
	static const char *const pairs[][2] = {
		{ "16", "16" }, { "17", "16" }, { "65535", "1" }, { "2", "2" },
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(pairs); i++) {
		struct vcma_pool_config c;

		init_ok(&c);
		set_ok(&c, "size", "256M");
		set_ok(&c, "cost_lent_free", pairs[i][0]);
		set_ok(&c, "cost_lent_used", pairs[i][1]);
		validate_rejected(&c, "cost_lent");
	}
}

/* ------------------------------------------- rejected values change nothing */

static void test_rejected_value_leaves_config_unchanged(void **state)
{
	static const char *const bad[][2] = {
		{ "size", "12Q" },           { "size", "101%" },
		{ "size", "min(1G,10%" },    { "size", "min(1G,101%)" },
		{ "base", "4097" },          { "base", "junk" },
		{ "align_order", "19" },     { "min_request", "0" },
		{ "mode", "junk" },          { "bind", "guest:" },
		{ "bind", "foo" },           { "lendable", "maybe" },
		{ "quota", "101%" },         { "quota", "junk" },
		{ "cost_lent_free", "0" },   { "cost_lent_used", "65536" },
		{ "nosuchkey", "1" },
	};
	struct vcma_pool_config c, snap;
	unsigned failures = 0;
	(void)state;

	init_ok(&c);
	set_ok(&c, "size", "256M");
	set_ok(&c, "base", "1G");
	set_ok(&c, "align_order", "10");
	set_ok(&c, "min_request", "4");
	set_ok(&c, "mode", "exclusive");
	set_ok(&c, "bind", "guest:vm1");
	set_ok(&c, "lendable", "no");
	set_ok(&c, "quota", "64M");
	set_ok(&c, "cost_lent_free", "2");
	set_ok(&c, "cost_lent_used", "20");
	override_ok(&c, "512M");
	snap = c;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const char *changed;

		c = snap;
		clear_err();
		if (vcma_pool_config_set(&c, bad[i][0], bad[i][1], err, sizeof(err)) != -EINVAL)
			fail_msg("set %s=%s: expected -EINVAL", bad[i][0], bad[i][1]);
		changed = config_diff(&c, &snap);
		if (changed)
			print_error("rejected %s=\"%s\" changed %s\n", bad[i][0], bad[i][1],
				    changed);
		failures += changed != NULL;
	}
	c = snap;
	clear_err();
	assert_int_equal(vcma_pool_config_override_size(&c, "12Q", err, sizeof(err)), -EINVAL);
	if (config_diff(&c, &snap)) {
		print_error("rejected override \"12Q\" changed %s\n", config_diff(&c, &snap));
		failures++;
	}
	assert_int_equal(failures, 0);
	validate_ok(&c);
	assert_true(resolve_ok(&c, 8 * GiB) == 512 * MiB);
}

/* ---------------------------------------------------- error buffer safety */

#define GUARD 64

/* Every failing call, given an err buffer of errlen bytes inside a guarded area. */
static void failing_calls(char *e, size_t errlen)
{
	struct vcma_pool_config c, x, lend, scratch;
	uint64_t bytes = 0;

	init_ok(&c);
	set_ok(&c, "size", "2G");
	init_ok(&x);
	set_ok(&x, "size", "256M");
	set_ok(&x, "mode", "exclusive");
	init_ok(&lend);
	set_ok(&lend, "size", "256M");
	set_ok(&lend, "mode", "exclusive");
	set_ok(&lend, "bind", "guest:vm1");
	set_ok(&lend, "lendable", "yes");

	assert_int_equal(vcma_pool_config_set(&c, "size", "99999999999999999999", e, errlen),
			 -EINVAL);
	assert_int_equal(vcma_pool_config_set(&c, "align_order", "19", e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_set(&c, "bind", "guest:", e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_set(&c, "quota", "junkjunkjunkjunk", e, errlen),
			 -EINVAL);
	assert_int_equal(vcma_pool_config_set(&c, "no_such_key_at_all", "1", e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_override_size(&c, "12Q", e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_init(&scratch, "a very long bad pool name", e, errlen),
			 -EINVAL);
	assert_int_equal(vcma_pool_config_validate(&x, e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_validate(&lend, e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_resolve_size(&c, GiB, &bytes, e, errlen), -EINVAL);
	init_ok(&c);
	assert_int_equal(vcma_pool_config_validate(&c, e, errlen), -EINVAL);
	assert_int_equal(vcma_pool_config_resolve_size(&c, GiB, &bytes, e, errlen), -EINVAL);
}

static void check_small_err(size_t errlen)
{
	char buf[8 + GUARD];

	memset(buf, 'Z', sizeof(buf));
	failing_calls(buf, errlen);
	if (errlen > 0)
		assert_non_null(memchr(buf, '\0', errlen)); /* terminated inside the buffer */
	for (size_t i = errlen; i < sizeof(buf); i++)
		if (buf[i] != 'Z')
			fail_msg("errlen %zu: byte %zu written", errlen, i);
}

static void test_err_tiny_buffer(void **state)
{
	(void)state;
	check_small_err(8);
	check_small_err(1);
}

static void test_err_zero_length(void **state)
{
	(void)state;
	check_small_err(0); /* nothing written at all */
}

static void test_err_null(void **state)
{
	(void)state;
	failing_calls(NULL, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_bytes_plain),
		cmocka_unit_test(test_parse_bytes_suffixes),
		cmocka_unit_test(test_parse_bytes_rejects),
		cmocka_unit_test(test_format_bytes),
		cmocka_unit_test(test_format_bytes_small_buffer),
		cmocka_unit_test(test_init_defaults),
		cmocka_unit_test(test_init_valid_names),
		cmocka_unit_test(test_init_rejects_names),
		cmocka_unit_test(test_size_absolute),
		cmocka_unit_test(test_size_percent),
		cmocka_unit_test(test_size_percent_large_host),
		cmocka_unit_test(test_size_min_max),
		cmocka_unit_test(test_size_last_set_wins),
		cmocka_unit_test(test_size_rejects),
		cmocka_unit_test(test_size_zero_and_too_large),
		cmocka_unit_test(test_resolve_unset),
		cmocka_unit_test(test_override_wins),
		cmocka_unit_test(test_override_syntax),
		cmocka_unit_test(test_override_too_large),
		cmocka_unit_test(test_override_rejects),
		cmocka_unit_test(test_base),
		cmocka_unit_test(test_base_rejects),
		cmocka_unit_test(test_align_order),
		cmocka_unit_test(test_align_order_rejects),
		cmocka_unit_test(test_min_request),
		cmocka_unit_test(test_min_request_rejects),
		cmocka_unit_test(test_mode),
		cmocka_unit_test(test_mode_rejects),
		cmocka_unit_test(test_bind),
		cmocka_unit_test(test_bind_rejects),
		cmocka_unit_test(test_lendable),
		cmocka_unit_test(test_lendable_rejects),
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_quota_rejects),
		cmocka_unit_test(test_costs),
		cmocka_unit_test(test_costs_reject),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_validate_ok),
		cmocka_unit_test(test_validate_missing_size),
		cmocka_unit_test(test_validate_exclusive_needs_bind),
		cmocka_unit_test(test_validate_bind_needs_exclusive),
		cmocka_unit_test(test_validate_exclusive_not_lendable),
		cmocka_unit_test(test_validate_costs_ordered),
		cmocka_unit_test(test_rejected_value_leaves_config_unchanged),
		cmocka_unit_test(test_err_tiny_buffer),
		cmocka_unit_test(test_err_zero_length),
		cmocka_unit_test(test_err_null),
	};

	return cmocka_run_group_tests_name("pool_config", tests, NULL, NULL);
}
