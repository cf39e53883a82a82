// SPDX-License-Identifier: MIT
/* The control request parser: every command and argument, every way to get it wrong,
 * and the response envelope. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <json-c/json.h>

#include "ctl/ctl_proto.h"

static char err[256];

static int parse(const char *line, struct vcmad_ctl_req *r)
{
	err[0] = 'X';
	return vcmad_ctl_parse(line, strlen(line), r, err, sizeof(err));
}

static void test_commands(void **unused)
{
	struct vcmad_ctl_req r;

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"status\"}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_STATUS);
	assert_null(r.id);
	vcmad_ctl_req_fini(&r);

	assert_int_equal(parse(" {\"cmd\":\"pool\",\"version\":1,\"id\":7,\"pool\":\"main\"}\r ", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_POOL);
	assert_string_equal(r.pool, "main");
	assert_int_equal(r.width, VCMAD_CTL_MAP_WIDTH);
	assert_int_equal(json_object_get_int(r.id), 7);
	vcmad_ctl_req_fini(&r);
	assert_null(r.id);

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"pool\",\"pool\":\"a.b-c_9\",\"width\":1024}", &r), 0);
	assert_int_equal(r.width, 1024);
	vcmad_ctl_req_fini(&r);

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"alloc\",\"bytes\":2097152,\"align\":4194304,\"pool\":\"main\"}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_ALLOC);
	assert_int_equal(r.bytes, 2097152);
	assert_int_equal(r.align_order, 10);
	vcmad_ctl_req_fini(&r);

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"free\",\"handle\":\"0x100000003\"}", &r), 0);
	assert_int_equal(r.handle, 0x100000003ull);
	vcmad_ctl_req_fini(&r);
	assert_int_equal(parse("{\"version\":1,\"cmd\":\"free\",\"handle\":4294967299}", &r), 0);
	assert_int_equal(r.handle, 0x100000003ull);
	vcmad_ctl_req_fini(&r);

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"regions\",\"guest\":\"vm0\",\"pool\":\"main\"}", &r), 0);
	assert_true(r.has_guest);
	assert_string_equal(r.guest_name, "vm0");
	vcmad_ctl_req_fini(&r);
	assert_int_equal(parse("{\"version\":1,\"cmd\":\"drain\",\"guest\":4294967295}", &r), 0);
	assert_int_equal(r.guest_id, UINT32_MAX);
	assert_string_equal(r.guest_name, "");
	vcmad_ctl_req_fini(&r);

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"xen-attach\",\"domain\":\"cam-vm\"}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_XEN_ATTACH);
	assert_string_equal(r.domain, "cam-vm");
	vcmad_ctl_req_fini(&r);
	assert_int_equal(parse("{\"version\":1,\"cmd\":\"xen-detach\",\"domain\":32751}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_XEN_DETACH);
	assert_string_equal(r.domain, "32751");
	vcmad_ctl_req_fini(&r);

	assert_int_equal(parse("{\"version\":1,\"cmd\":\"attach\",\"domain\":\"cam1\",\"class\":\"camera\"}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_ATTACH);
	assert_string_equal(r.domain, "cam1");
	assert_string_equal(r.devclass, "camera");
	vcmad_ctl_req_fini(&r);
	assert_int_equal(parse("{\"version\":1,\"cmd\":\"detach\",\"domain\":\"cam1\"}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_DETACH);
	vcmad_ctl_req_fini(&r);
	assert_int_equal(parse("{\"version\":1,\"cmd\":\"domain\",\"action\":\"define\",\"xml\":\"<domain/>\"}", &r), 0);
	assert_int_equal(r.cmd, VCMAD_CTL_DOMAIN);
	assert_string_equal(r.action, "define");
	assert_string_equal(r.xml, "<domain/>");
	vcmad_ctl_req_fini(&r);
	assert_null(r.xml);
	assert_int_equal(parse("{\"version\":1,\"cmd\":\"domain\",\"action\":\"destroy\",\"domain\":\"cam1\"}", &r), 0);
	assert_string_equal(r.action, "destroy");
	assert_string_equal(r.domain, "cam1");
	vcmad_ctl_req_fini(&r);

	for (int c = VCMAD_CTL_NONE + 1; c < VCMAD_CTL_NCMDS; c++)
		assert_non_null(vcmad_ctl_cmd_name((enum vcmad_ctl_cmd)c));
	assert_null(vcmad_ctl_cmd_name(VCMAD_CTL_NONE));
}

static void test_errors(void **unused)
{
	static const struct {
		const char *line;
		int rc;
		const char *msg;
	} bad[] = {
		{ "", -EINVAL, "empty" },
		{ "   ", -EINVAL, "empty" },
		{ "nope", -EINVAL, "not valid JSON" },
		{ "{", -EINVAL, "not valid JSON" },
		{ "[]", -EINVAL, "expected a JSON object, got array" },
		{ "null", -EINVAL, "got null" },
		{ "12", -EINVAL, "got int" },
		{ "{\"version\":1,\"cmd\":\"status\"}{}", -EINVAL, "" },
		{ "{\"version\":1,\"cmd\":\"status\"} x", -EINVAL, "" },
		{ "{\"cmd\":\"status\"}", -EINVAL, "missing 'version'" },
		{ "{\"version\":true,\"cmd\":\"status\"}", -EINVAL, "'version' must be" },
		{ "{\"version\":2,\"cmd\":\"status\"}", -EPROTO, "version 2" },
		{ "{\"version\":-1,\"cmd\":\"status\"}", -EPROTO, "version -1" },
		{ "{\"version\":1}", -EINVAL, "missing 'cmd'" },
		{ "{\"version\":1,\"cmd\":null}", -EINVAL, "'cmd' must be a string" },
		{ "{\"version\":1,\"cmd\":\"halt\"}", -EINVAL, "unknown command 'halt'" },
		{ "{\"version\":1,\"cmd\":\"status\\u0000\"}", -EINVAL, "unknown command" },
		{ "{\"version\":1,\"cmd\":\"status\",\"pool\":\"main\"}", -EINVAL, "unknown argument 'pool'" },
		{ "{\"version\":1,\"cmd\":\"pool\"}", -EINVAL, "missing argument 'pool'" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"\"}", -EINVAL, "invalid name" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"a/b\"}", -EINVAL, "invalid name 'a/b'" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"abcdefghijabcdefghijabcdefghij12\"}", -EINVAL, "invalid name" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"m\\u0000x\"}", -EINVAL, "invalid name 'm?x'" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"main\",\"width\":1025}", -EINVAL, "'width'" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"main\",\"width\":2.5}", -EINVAL, "'width'" },
		{ "{\"version\":1,\"cmd\":\"alloc\"}", -EINVAL, "missing argument 'bytes'" },
		{ "{\"version\":1,\"cmd\":\"alloc\",\"bytes\":0}", -EINVAL, "'bytes'" },
		{ "{\"version\":1,\"cmd\":\"alloc\",\"bytes\":281474976710657}", -EINVAL, "'bytes'" },
		{ "{\"version\":1,\"cmd\":\"alloc\",\"bytes\":18446744073709551616}", -EINVAL, "'bytes'" },
		{ "{\"version\":1,\"cmd\":\"alloc\",\"bytes\":4096,\"align\":2048}", -EINVAL, "'align'" },
		{ "{\"version\":1,\"cmd\":\"alloc\",\"bytes\":4096,\"align\":2147483648}", -EINVAL, "'align'" },
		{ "{\"version\":1,\"cmd\":\"free\",\"handle\":\"\"}", -EINVAL, "'handle'" },
		{ "{\"version\":1,\"cmd\":\"free\",\"handle\":\"-1\"}", -EINVAL, "'handle'" },
		{ "{\"version\":1,\"cmd\":\"free\",\"handle\":\"0x1 \"}", -EINVAL, "'handle'" },
		{ "{\"version\":1,\"cmd\":\"free\",\"handle\":\"0x10000000000000000\"}", -EINVAL, "'handle'" },
		{ "{\"version\":1,\"cmd\":\"free\",\"handle\":[1]}", -EINVAL, "'handle'" },
		{ "{\"version\":1,\"cmd\":\"drain\"}", -EINVAL, "missing argument 'guest'" },
		{ "{\"version\":1,\"cmd\":\"drain\",\"guest\":4294967296}", -EINVAL, "'guest'" },
		{ "{\"version\":1,\"cmd\":\"drain\",\"guest\":{}}", -EINVAL, "'guest'" },
		{ "{\"version\":1,\"cmd\":\"xen-attach\"}", -EINVAL, "missing argument 'domain'" },
		{ "{\"version\":1,\"cmd\":\"xen-attach\",\"domain\":32752}", -EINVAL, "'domain' must be a Xen domain id" },
		{ "{\"version\":1,\"cmd\":\"xen-attach\",\"domain\":-1}", -EINVAL, "'domain' must be" },
		{ "{\"version\":1,\"cmd\":\"xen-attach\",\"domain\":\"a b\"}", -EINVAL, "invalid name 'a b'" },
		{ "{\"version\":1,\"cmd\":\"xen-detach\",\"domain\":\"d\",\"guest\":1}", -EINVAL, "unknown argument 'guest'" },
		{ "{\"version\":1,\"cmd\":\"status\",\"domain\":1}", -EINVAL, "unknown argument 'domain'" },
		{ "{\"version\":1,\"cmd\":\"attach\"}", -EINVAL, "missing argument 'domain'" },
		{ "{\"version\":1,\"cmd\":\"attach\",\"domain\":\"d\",\"class\":\"a b\"}", -EINVAL, "invalid name 'a b'" },
		{ "{\"version\":1,\"cmd\":\"detach\",\"domain\":\"d\",\"class\":\"c\"}", -EINVAL, "unknown argument 'class'" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"domain\":\"d\"}", -EINVAL, "missing argument 'action'" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"reboot\",\"domain\":\"d\"}", -EINVAL, "'action' must be one of" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"define\"}", -EINVAL, "needs 'xml'" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"define\",\"xml\":\"<d/>\",\"domain\":\"d\"}", -EINVAL, "no 'domain'" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"start\"}", -EINVAL, "needs 'domain'" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"start\",\"domain\":\"d\",\"xml\":\"<d/>\"}", -EINVAL, "no 'xml'" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"define\",\"xml\":\"\"}", -EINVAL, "'xml' must hold" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"define\",\"xml\":\"a\\u0000b\"}", -EINVAL, "'xml' must hold" },
		{ "{\"version\":1,\"cmd\":\"domain\",\"action\":\"define\",\"xml\":7}", -EINVAL, "'xml' must be a string" },
		{ "{\"version\":1,\"cmd\":\"pool\",\"pool\":\"\xc3\x28\"}", -EINVAL, "not valid JSON" },
		{ "{\"version\":1,\"id\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]],\"cmd\":\"status\"}", -EINVAL, "not valid JSON" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vcmad_ctl_req r;
		int rc = parse(bad[i].line, &r);

		if (rc != bad[i].rc || !strstr(err, bad[i].msg) || !err[0])
			fail_msg("%s: rc %d, '%s'; expected %d, '%s'", bad[i].line, rc, err, bad[i].rc, bad[i].msg);
		vcmad_ctl_req_fini(&r);
	}
}

static void test_bytes(void **unused)
{
	static const char nul[] = "{\"version\":1,\0\"cmd\":\"status\"}";
	struct vcmad_ctl_req r;
	char big[VCMAD_CTL_LINE_MAX + 2];

	/* a NUL inside the line */
	assert_int_equal(vcmad_ctl_parse(nul, sizeof(nul) - 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "NUL"));
	vcmad_ctl_req_fini(&r);
	/* too long */
	memset(big, ' ', sizeof(big));
	assert_int_equal(vcmad_ctl_parse(big, sizeof(big), &r, err, sizeof(err)), -EMSGSIZE);
	vcmad_ctl_req_fini(&r);
	/* not NUL-terminated: only len bytes are read */
	assert_int_equal(vcmad_ctl_parse("{\"version\":1,\"cmd\":\"status\"}garbage", 28, &r, err, sizeof(err)), 0);
	vcmad_ctl_req_fini(&r);
	/* a null error buffer is fine */
	assert_int_equal(vcmad_ctl_parse("x", 1, &r, NULL, 0), -EINVAL);
	vcmad_ctl_req_fini(&r);
}

static void test_id_on_error(void **unused)
{
	struct vcmad_ctl_req r;

	assert_int_equal(parse("{\"version\":1,\"id\":\"abc\",\"cmd\":\"nope\"}", &r), -EINVAL);
	assert_string_equal(json_object_get_string(r.id), "abc");
	vcmad_ctl_req_fini(&r);
	assert_int_equal(parse("{\"version\":9,\"id\":{\"k\":[1,2]},\"cmd\":\"status\"}", &r), -EPROTO);
	assert_non_null(r.id);
	vcmad_ctl_req_fini(&r);
}

static void test_response(void **unused)
{
	struct json_object *id = json_object_new_string("q"), *res = json_object_new_object(), *o, *v, *e;

	json_object_object_add(res, "n", json_object_new_int(3));
	o = vcmad_ctl_response(id, res, 0, NULL);
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "version", &v) && json_object_get_int(v) == 1);
	assert_true(json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v));
	assert_true(json_object_object_get_ex(o, "id", &v) && !strcmp(json_object_get_string(v), "q"));
	assert_true(json_object_object_get_ex(o, "result", &v) && json_object_object_get_ex(v, "n", &e));
	json_object_put(o);

	o = vcmad_ctl_response(NULL, NULL, -ENOENT, "no pool named 'x'");
	assert_true(json_object_object_get_ex(o, "id", &v) && v == NULL);
	assert_true(json_object_object_get_ex(o, "ok", &v) && !json_object_get_boolean(v));
	assert_true(json_object_object_get_ex(o, "error", &e));
	assert_true(json_object_object_get_ex(e, "code", &v) && !strcmp(json_object_get_string(v), "ENOENT"));
	assert_true(json_object_object_get_ex(e, "message", &v) && !strcmp(json_object_get_string(v), "no pool named 'x'"));
	json_object_put(o);
	json_object_put(id);

	assert_string_equal(vcmad_ctl_errname(-EMSGSIZE), "EMSGSIZE");
	assert_string_equal(vcmad_ctl_errname(EACCES), "EACCES");
	assert_string_equal(vcmad_ctl_errname(-12345), "EUNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_id_on_error),
		cmocka_unit_test(test_response),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
