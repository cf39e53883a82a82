// SPDX-License-Identifier: MIT
/*
 * request.c - parse and validate one control request; build response envelopes.
 * Pure functions on bytes, so the fuzz target runs exactly what the daemon runs.
 *
 * json-c parses (strict, UTF-8 validated, nesting bounded); this file only checks
 * the shape: an object, version 1, a known command, and for that command exactly the
 * arguments it takes, each of the right type and range. Unknown arguments are errors
 * so a misspelt option is never silently ignored.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ctl/ctl_proto.h"
#include "errmsg.h"
#include "vcma_name.h"

enum {
	ARG_POOL = 1u << 0,
	ARG_GUEST = 1u << 1,
	ARG_BYTES = 1u << 2,
	ARG_ALIGN = 1u << 3,
	ARG_HANDLE = 1u << 4,
	ARG_WIDTH = 1u << 5,
	ARG_DOMAIN = 1u << 6,
	ARG_CLASS = 1u << 7,
	ARG_ACTION = 1u << 8,
	ARG_XML = 1u << 9,
	ARG_COUNT = 10
};

static const char *const arg_name[ARG_COUNT] = { "pool",   "guest", "bytes",  "align",  "handle",
						  "width", "domain", "class", "action", "xml" };

static const struct {
	const char *name;
	uint32_t allowed, required;
} cmd_tab[VCMAD_CTL_NCMDS] = {
	[VCMAD_CTL_STATUS] = { "status", 0, 0 },
	[VCMAD_CTL_POOLS] = { "pools", 0, 0 },
	[VCMAD_CTL_POOL] = { "pool", ARG_POOL | ARG_WIDTH, ARG_POOL },
	[VCMAD_CTL_GUESTS] = { "guests", 0, 0 },
	[VCMAD_CTL_REGIONS] = { "regions", ARG_GUEST | ARG_POOL, 0 },
	[VCMAD_CTL_ALLOC] = { "alloc", ARG_POOL | ARG_BYTES | ARG_ALIGN, ARG_BYTES },
	[VCMAD_CTL_FREE] = { "free", ARG_HANDLE, ARG_HANDLE },
	[VCMAD_CTL_COMPACT] = { "compact", ARG_POOL, 0 },
	[VCMAD_CTL_DRAIN] = { "drain", ARG_GUEST, ARG_GUEST },
	[VCMAD_CTL_STATS] = { "stats", 0, 0 },
	[VCMAD_CTL_HASH] = { "hash", ARG_HANDLE, ARG_HANDLE },
	[VCMAD_CTL_XEN_ATTACH] = { "xen-attach", ARG_DOMAIN, ARG_DOMAIN },
	[VCMAD_CTL_XEN_DETACH] = { "xen-detach", ARG_DOMAIN, ARG_DOMAIN },
	[VCMAD_CTL_ATTACH] = { "attach", ARG_DOMAIN | ARG_CLASS, ARG_DOMAIN },
	[VCMAD_CTL_DETACH] = { "detach", ARG_DOMAIN, ARG_DOMAIN },
	[VCMAD_CTL_DOMAIN] = { "domain", ARG_ACTION | ARG_DOMAIN | ARG_XML, ARG_ACTION },
};

const char *vcmad_ctl_cmd_name(enum vcmad_ctl_cmd cmd)
{
	return cmd > VCMAD_CTL_NONE && cmd < VCMAD_CTL_NCMDS ? cmd_tab[cmd].name : NULL;
}

/* Client text quoted in a message: printable ASCII only and short, so a message
 * never carries control characters or half of a UTF-8 sequence. */
static const char *show(const char *s, size_t n, char *buf, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 4 < len; i++)
		buf[o++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	if (o < n) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

/* A non-negative JSON integer (json-c keeps integers beyond INT64_MAX as uint64). */
static bool get_u64(struct json_object *v, uint64_t *out)
{
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return false;
	*out = json_object_get_uint64(v);
	return true;
}

static int get_name(struct json_object *v, const char *what, char *dst, char *err, size_t errlen)
{
	char q[48];
	const char *s;
	size_t n;

	if (!json_object_is_type(v, json_type_string)) {
		vcma_seterr(err, errlen, "'%s' must be a string", what);
		return -EINVAL;
	}
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	if (!vcma_name_ok(s, n, VCMAD_CTL_NAME_MAX)) {
		vcma_seterr(err, errlen, "'%s': invalid name '%s' (1-31 characters of A-Z a-z 0-9 _ . -)", what,
		       show(s, n, q, sizeof(q)));
		return -EINVAL;
	}
	memcpy(dst, s, n + 1);
	return 0;
}

static int parse_handle(struct json_object *v, uint64_t *out, char *err, size_t errlen)
{
	char q[48];

	if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		size_t n = (size_t)json_object_get_string_len(v);
		char *end;

		errno = 0;
		*out = 0;
		if (n && n < 24 && s[0] >= '0' && s[0] <= '9' && strlen(s) == n)
			*out = strtoull(s, &end, 0);
		if (!n || n >= 24 || errno || strlen(s) != n || s[0] < '0' || s[0] > '9' || *end) {
			vcma_seterr(err, errlen, "'handle': expected a number such as 0x100000001, got '%s'",
			       show(s, n, q, sizeof(q)));
			return -EINVAL;
		}
	} else if (!get_u64(v, out)) {
		vcma_seterr(err, errlen, "'handle' must be a string such as \"0x100000001\" or a non-negative integer");
		return -EINVAL;
	}
	if (!*out) {
		vcma_seterr(err, errlen, "'handle': 0 is never a valid handle");
		return -EINVAL;
	}
	return 0;
}

static int parse_arg(struct vcmad_ctl_req *r, unsigned int a, struct json_object *v, char *err, size_t errlen)
{
	uint64_t x;

	switch (1u << a) {
	case ARG_POOL:
		return get_name(v, "pool", r->pool, err, errlen);
	case ARG_GUEST:
		r->has_guest = true;
		if (json_object_is_type(v, json_type_string))
			return get_name(v, "guest", r->guest_name, err, errlen);
		if (!get_u64(v, &x) || x > UINT32_MAX) {
			vcma_seterr(err, errlen, "'guest' must be a guest id (0 to 4294967295) or a guest name");
			return -EINVAL;
		}
		r->guest_id = (uint32_t)x;
		return 0;
	case ARG_BYTES:
		if (!get_u64(v, &x) || !x || x > VCMAD_CTL_ALLOC_MAX) {
			vcma_seterr(err, errlen, "'bytes' must be an integer from 1 to 2^48");
			return -EINVAL;
		}
		r->bytes = x;
		return 0;
	case ARG_ALIGN:
		if (!get_u64(v, &x) || x < 4096 || x > (4096ull << VCMAD_CTL_ALIGN_ORDER_MAX) || (x & (x - 1))) {
			vcma_seterr(err, errlen, "'align' must be a power of two from 4096 to 1073741824 (bytes)");
			return -EINVAL;
		}
		r->align_order = (uint32_t)__builtin_ctzll(x) - 12;
		return 0;
	case ARG_HANDLE:
		return parse_handle(v, &r->handle, err, errlen);
	case ARG_WIDTH:
		if (!get_u64(v, &x) || !x || x > VCMAD_CTL_MAP_WIDTH_MAX) {
			vcma_seterr(err, errlen, "'width' must be an integer from 1 to %u", VCMAD_CTL_MAP_WIDTH_MAX);
			return -EINVAL;
		}
		r->width = (uint32_t)x;
		return 0;
	case ARG_DOMAIN:
		if (json_object_is_type(v, json_type_string))
			return get_name(v, "domain", r->domain, err, errlen);
		if (!get_u64(v, &x) || x > 0x7fef) {
			vcma_seterr(err, errlen, "'domain' must be a Xen domain id (0 to 32751) or a domain name");
			return -EINVAL;
		}
		snprintf(r->domain, sizeof(r->domain), "%u", (unsigned int)x);
		return 0;
	case ARG_CLASS:
		return get_name(v, "class", r->devclass, err, errlen);
	case ARG_ACTION: {
		static const char *const acts[] = { "define", "start", "destroy", "undefine" };
		const char *act = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";

		for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++)
			if (!strcmp(act, acts[i]) && strlen(act) == (size_t)json_object_get_string_len(v)) {
				snprintf(r->action, sizeof(r->action), "%s", acts[i]);
				return 0;
			}
		vcma_seterr(err, errlen, "'action' must be one of define, start, destroy, undefine");
		return -EINVAL;
	}
	case ARG_XML: {
		size_t n;

		if (!json_object_is_type(v, json_type_string)) {
			vcma_seterr(err, errlen, "'xml' must be a string (the domain XML)");
			return -EINVAL;
		}
		n = (size_t)json_object_get_string_len(v);
		if (!n || n > VCMAD_CTL_XML_MAX || strlen(json_object_get_string(v)) != n) {
			vcma_seterr(err, errlen, "'xml' must hold 1 to %u bytes of domain XML, without NUL",
				    VCMAD_CTL_XML_MAX);
			return -EINVAL;
		}
		free(r->xml);
		r->xml = strdup(json_object_get_string(v));
		if (!r->xml) {
			vcma_seterr(err, errlen, "out of memory");
			return -ENOMEM;
		}
		return 0;
	}
	}
	return -EINVAL;
}

static int check_object(struct json_object *o, struct vcmad_ctl_req *out, char *err, size_t errlen)
{
	struct json_object *v;
	uint32_t seen = 0;
	const char *cmd;
	char q[48];
	uint64_t ver;

	if (json_object_object_get_ex(o, "id", &v) && v)
		out->id = json_object_get(v);
	if (!json_object_object_get_ex(o, "version", &v)) {
		vcma_seterr(err, errlen, "missing 'version' (this vcmad speaks version %d)", VCMAD_CTL_VERSION);
		return -EINVAL;
	}
	if (!json_object_is_type(v, json_type_int)) {
		vcma_seterr(err, errlen, "'version' must be the integer %d", VCMAD_CTL_VERSION);
		return -EINVAL;
	}
	if (!get_u64(v, &ver) || ver != VCMAD_CTL_VERSION) {
		vcma_seterr(err, errlen, "unsupported protocol version %lld (this vcmad speaks version %d)",
		       (long long)json_object_get_int64(v), VCMAD_CTL_VERSION);
		return -EPROTO;
	}
	if (!json_object_object_get_ex(o, "cmd", &v)) {
		vcma_seterr(err, errlen, "missing 'cmd'");
		return -EINVAL;
	}
	if (!json_object_is_type(v, json_type_string)) {
		vcma_seterr(err, errlen, "'cmd' must be a string");
		return -EINVAL;
	}
	cmd = json_object_get_string(v);
	for (int c = VCMAD_CTL_NONE + 1; c < VCMAD_CTL_NCMDS; c++)
		if (!strcmp(cmd, cmd_tab[c].name) && strlen(cmd) == (size_t)json_object_get_string_len(v))
			out->cmd = (enum vcmad_ctl_cmd)c;
	if (out->cmd == VCMAD_CTL_NONE) {
		vcma_seterr(err, errlen, "unknown command '%s'",
		       show(cmd, (size_t)json_object_get_string_len(v), q, sizeof(q)));
		return -EINVAL;
	}
	json_object_object_foreach(o, key, val)
	{
		unsigned int a;
		int rc;

		if (!strcmp(key, "version") || !strcmp(key, "id") || !strcmp(key, "cmd"))
			continue;
		for (a = 0; a < ARG_COUNT; a++)
			if (!strcmp(key, arg_name[a]))
				break;
		if (a == ARG_COUNT || !(cmd_tab[out->cmd].allowed & (1u << a))) {
			vcma_seterr(err, errlen, "%s: unknown argument '%s'", cmd_tab[out->cmd].name,
			       show(key, strlen(key), q, sizeof(q)));
			return -EINVAL;
		}
		rc = parse_arg(out, a, val, err, errlen);
		if (rc)
			return rc;
		seen |= 1u << a;
	}
	for (unsigned int a = 0; a < ARG_COUNT; a++)
		if ((cmd_tab[out->cmd].required & (1u << a)) && !(seen & (1u << a))) {
			vcma_seterr(err, errlen, "%s: missing argument '%s'", cmd_tab[out->cmd].name, arg_name[a]);
			return -EINVAL;
		}
	if (out->cmd == VCMAD_CTL_POOL && !out->width)
		out->width = VCMAD_CTL_MAP_WIDTH;
	if (out->cmd == VCMAD_CTL_DOMAIN) {
		bool define = !strcmp(out->action, "define");

		if (define && (!out->xml || (seen & ARG_DOMAIN))) {
			vcma_seterr(err, errlen, "domain define: needs 'xml' (the domain XML) and no 'domain'");
			return -EINVAL;
		}
		if (!define && (!(seen & ARG_DOMAIN) || out->xml)) {
			vcma_seterr(err, errlen, "domain %s: needs 'domain' (a name) and no 'xml'", out->action);
			return -EINVAL;
		}
	}
	return 0;
}

int vcmad_ctl_parse(const char *line, size_t len, struct vcmad_ctl_req *out, char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *o;
	enum json_tokener_error jerr;
	char *buf;
	size_t end;
	int rc;

	memset(out, 0, sizeof(*out));
	vcma_seterr(err, errlen, "%s", "");
	if (len > VCMAD_CTL_LINE_MAX) {
		vcma_seterr(err, errlen, "request too large (more than %u bytes)", VCMAD_CTL_LINE_MAX);
		return -EMSGSIZE;
	}
	if (memchr(line, '\0', len)) {
		vcma_seterr(err, errlen, "malformed request: contains a NUL byte");
		return -EINVAL;
	}
	/* json-c needs the terminating NUL to know the input ends (a bare number) */
	buf = malloc(len + 1);
	tok = json_tokener_new_ex(VCMAD_CTL_DEPTH_MAX);
	if (!buf || !tok) {
		free(buf);
		if (tok)
			json_tokener_free(tok);
		vcma_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(buf, line, len);
	buf[len] = '\0';
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, buf, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o || jerr != json_tokener_success) {
		if (!o && jerr == json_tokener_success)
			vcma_seterr(err, errlen, "malformed request: expected a JSON object, got null");
		else if (len == 0 || strspn(buf, " \t\r\n") == len)
			vcma_seterr(err, errlen, "malformed request: empty line");
		else
			vcma_seterr(err, errlen, "malformed request: not valid JSON (%s at byte %zu)",
			       json_tokener_error_desc(jerr), end);
		free(buf);
		json_object_put(o);
		return -EINVAL;
	}
	if (end < len && strspn(buf + end, " \t\r\n") != len - end) {
		vcma_seterr(err, errlen, "malformed request: text after the JSON object at byte %zu", end);
		rc = -EINVAL;
	} else if (!json_object_is_type(o, json_type_object)) {
		vcma_seterr(err, errlen, "malformed request: expected a JSON object, got %s",
		       json_type_to_name(json_object_get_type(o)));
		rc = -EINVAL;
	} else {
		rc = check_object(o, out, err, errlen);
	}
	json_object_put(o);
	free(buf);
	return rc;
}

void vcmad_ctl_req_fini(struct vcmad_ctl_req *req)
{
	json_object_put(req->id);
	req->id = NULL;
	free(req->xml);
	req->xml = NULL;
}

const char *vcmad_ctl_errname(int err)
{
	static const struct {
		int e;
		const char *name;
	} tab[] = {
		{ EINVAL, "EINVAL" }, { EPROTO, "EPROTO" },   { EMSGSIZE, "EMSGSIZE" },     { ENOENT, "ENOENT" },
		{ EACCES, "EACCES" }, { EPERM, "EPERM" },     { ENOSPC, "ENOSPC" },         { E2BIG, "E2BIG" },
		{ ERANGE, "ERANGE" }, { ENODEV, "ENODEV" },   { EDQUOT, "EDQUOT" },         { EBUSY, "EBUSY" },
		{ ENOMEM, "ENOMEM" }, { EUSERS, "EUSERS" },   { EIO, "EIO" },               { ENOSYS, "ENOSYS" },
		{ EAGAIN, "EAGAIN" }, { EEXIST, "EEXIST" },   { EOPNOTSUPP, "EOPNOTSUPP" }, { ETIMEDOUT, "ETIMEDOUT" },
		{ EDOM, "EDOM" },     { ENOBUFS, "ENOBUFS" },   { EFBIG, "EFBIG" },           { ESHUTDOWN, "ESHUTDOWN" },
		{ ENOTCONN, "ENOTCONN" },
	};

	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (tab[i].e == err)
			return tab[i].name;
	return "EUNKNOWN";
}

struct json_object *vcmad_ctl_response(struct json_object *id, struct json_object *result, int err,
				       const char *msg)
{
	struct json_object *o = json_object_new_object(), *e;

	if (!o) {
		json_object_put(result);
		return NULL;
	}
	json_object_object_add(o, "version", json_object_new_int(VCMAD_CTL_VERSION));
	json_object_object_add(o, "id", json_object_get(id));
	json_object_object_add(o, "ok", json_object_new_boolean(!err));
	if (!err) {
		if (!result)
			result = json_object_new_object();
		json_object_object_add(o, "result", result);
		return o;
	}
	json_object_put(result);
	e = json_object_new_object();
	if (!e) {
		json_object_put(o);
		return NULL;
	}
	json_object_object_add(e, "code", json_object_new_string(vcmad_ctl_errname(err)));
	json_object_object_add(e, "message", json_object_new_string(msg && *msg ? msg : strerror(err < 0 ? -err : err)));
	json_object_object_add(o, "error", e);
	return o;
}
