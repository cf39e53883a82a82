// SPDX-License-Identifier: MIT
/*
 * fuzz_ctl.c - the control request parser (hv/ctl/request.c) and the response
 * envelope, as vcmad runs them on every line a control client sends.
 *
 * Input: one request line (no newline needed), copied into an exactly-sized heap
 * buffer so ASan sees any read past len. The target aborts when:
 *   - vcmad_ctl_parse returns anything but 0, -EINVAL, -EPROTO, -EMSGSIZE, -ENOMEM;
 *   - an error comes without a message, or with a message that is not printable ASCII;
 *   - a success holds a command or argument outside what the protocol allows;
 *   - parsing the same line twice gives a different result or message;
 *   - the response envelope is not one line of valid JSON (UTF-8 checked) with
 *     version 1, the right "ok", and the request's id echoed unchanged.
 * Sanitizers catch the rest (overflows, UB, leaks of the id reference).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ctl/ctl_proto.h"
#include "fuzz_common.h"

static bool good_name(const char *s, bool allow_empty)
{
	size_t n = strnlen(s, VCMAD_CTL_NAME_MAX);

	if (n == VCMAD_CTL_NAME_MAX || (!n && !allow_empty))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '-' || *s == '.'))
			return false;
	return true;
}

static void check_req(const struct vcmad_ctl_req *r)
{
	FUZZ_CHECK(r->cmd > VCMAD_CTL_NONE && r->cmd < VCMAD_CTL_NCMDS, "command %d out of range", (int)r->cmd);
	FUZZ_CHECK(vcmad_ctl_cmd_name(r->cmd), "command %d has no name", (int)r->cmd);
	FUZZ_CHECK(good_name(r->pool, true), "bad pool name accepted");
	FUZZ_CHECK(good_name(r->guest_name, true), "bad guest name accepted");
	FUZZ_CHECK(!r->guest_name[0] || r->has_guest, "guest name without has_guest");
	FUZZ_CHECK(r->bytes <= VCMAD_CTL_ALLOC_MAX, "bytes %llu above the maximum", (unsigned long long)r->bytes);
	FUZZ_CHECK(r->align_order <= VCMAD_CTL_ALIGN_ORDER_MAX, "align order %u", r->align_order);
	FUZZ_CHECK(r->width <= VCMAD_CTL_MAP_WIDTH_MAX, "width %u", r->width);
	switch (r->cmd) {
	case VCMAD_CTL_POOL:
		FUZZ_CHECK(r->pool[0] && r->width >= 1, "pool without a name or width");
		break;
	case VCMAD_CTL_ALLOC:
		FUZZ_CHECK(r->bytes >= 1, "alloc of 0 bytes accepted");
		break;
	case VCMAD_CTL_FREE:
	case VCMAD_CTL_HASH:
		FUZZ_CHECK(r->handle != 0, "%s of handle 0 accepted", vcmad_ctl_cmd_name(r->cmd));
		break;
	case VCMAD_CTL_DRAIN:
		FUZZ_CHECK(r->has_guest, "drain without a guest");
		break;
	default:
		FUZZ_CHECK(r->width == 0 && r->bytes == 0 && r->handle == 0, "argument set for %s",
			   vcmad_ctl_cmd_name(r->cmd));
	}
}

static const char *id_text(struct json_object *id)
{
	return id ? json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN) : "null";
}

static void check_envelope(const struct vcmad_ctl_req *r, int rc, const char *err)
{
	struct json_object *env = vcmad_ctl_response(r->id, NULL, rc, err), *back, *v;
	struct json_tokener *tok;
	const char *s;
	char *want;
	size_t n;

	if (!env)
		return; /* out of memory */
	s = json_object_to_json_string_length(env, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	FUZZ_CHECK(s && strlen(s) == n && !memchr(s, '\n', n), "response is not one line");
	tok = json_tokener_new_ex(64);
	if (!tok)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	back = json_tokener_parse_ex(tok, s, (int)n + 1);
	FUZZ_CHECK(back && json_tokener_get_error(tok) == json_tokener_success, "response is not valid JSON: %s", s);
	json_tokener_free(tok);
	FUZZ_CHECK(json_object_object_get_ex(back, "version", &v) && json_object_get_int(v) == VCMAD_CTL_VERSION,
		   "response version");
	FUZZ_CHECK(json_object_object_get_ex(back, "ok", &v) && json_object_get_boolean(v) == !rc, "response ok");
	FUZZ_CHECK(json_object_object_get_ex(back, "id", &v), "response without id");
	want = strdup(id_text(r->id));
	if (!want)
		abort();
	FUZZ_CHECK(!strcmp(want, id_text(v)), "id changed: %s became %s", want, id_text(v));
	free(want);
	if (rc) {
		struct json_object *e, *code;

		FUZZ_CHECK(json_object_object_get_ex(back, "error", &e) && json_object_object_get_ex(e, "code", &code) &&
				   strcmp(json_object_get_string(code), "EUNKNOWN"),
			   "error without a known code");
	}
	json_object_put(back);
	json_object_put(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vcmad_ctl_req r, r2;
	char err[256], err2[256];
	char *line = malloc(size ? size : 1);
	int rc, rc2;

	if (!line)
		abort();
	if (size)
		memcpy(line, data, size);
	rc = vcmad_ctl_parse(line, size, &r, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EPROTO || rc == -EMSGSIZE || rc == -ENOMEM, "rc %d", rc);
	FUZZ_CHECK(memchr(err, '\0', sizeof(err)), "message not terminated");
	if (rc) {
		FUZZ_CHECK(err[0], "error %d without a message", rc);
		for (const char *p = err; *p; p++)
			FUZZ_CHECK(*p >= 0x20 && *p < 0x7f, "message byte %#x is not printable ASCII", (unsigned char)*p);
	} else {
		check_req(&r);
	}
	rc2 = vcmad_ctl_parse(line, size, &r2, err2, sizeof(err2));
	FUZZ_CHECK(rc == rc2 && !strcmp(err, err2) && (rc || r.cmd == r2.cmd), "second parse differs: %d '%s' / %d '%s'",
		   rc, err, rc2, err2);
	vcmad_ctl_req_fini(&r2);
	check_envelope(&r, rc, err);
	vcmad_ctl_req_fini(&r);
	free(line);
	return 0;
}
