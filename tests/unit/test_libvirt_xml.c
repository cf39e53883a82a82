// SPDX-License-Identifier: MIT
/*
 * test_libvirt_xml.c - the libvirt worker's pure helpers: the vcma metadata's
 * attributes, the <shmem> element vcmad attaches, and the virtio-mem update XML
 * (libvirt wants the whole live <memory> element with only <requested> changed).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "libvirt_worker.h"

static void test_attr(void **unused)
{
	char v[16];

	(void)unused;
	assert_int_equal(vcmad_lv_xml_attr("<guest class=\"camera\" lend='yes'/>", "class", v, sizeof(v)), 0);
	assert_string_equal(v, "camera");
	assert_int_equal(vcmad_lv_xml_attr("<guest class=\"camera\" lend='yes'/>", "lend", v, sizeof(v)), 0);
	assert_string_equal(v, "yes");
	/* a name that ends another attribute's name is not it */
	assert_int_equal(vcmad_lv_xml_attr("<guest subclass='x'/>", "class", v, sizeof(v)), -ENOENT);
	/* only the first element's attributes */
	assert_int_equal(vcmad_lv_xml_attr("<guest><x class='y'/></guest>", "class", v, sizeof(v)), -ENOENT);
	assert_int_equal(vcmad_lv_xml_attr("<guest class='0123456789abcdefXYZ'/>", "class", v, sizeof(v)),
			 -ENAMETOOLONG);
	assert_int_equal(vcmad_lv_xml_attr("<guest class='open", "class", v, sizeof(v)), -ENOENT);
}

static void test_meta(void **unused)
{
	char x[160];

	(void)unused;
	vcmad_lv_meta_xml(x, sizeof(x), NULL, "camera");
	assert_string_equal(x, "<guest class=\"camera\"/>");
	vcmad_lv_meta_xml(x, sizeof(x), NULL, "");
	assert_string_equal(x, "<guest/>");
	/* attach keeps what the domain said already (quota, lend), and its class unless given */
	vcmad_lv_meta_xml(x, sizeof(x), strdup("<guest class=\"video\" quota=\"64M\" lend=\"yes\"/>"), "");
	assert_string_equal(x, "<guest class=\"video\" quota=\"64M\" lend=\"yes\"/>");
	vcmad_lv_meta_xml(x, sizeof(x), strdup("<guest class=\"video\" quota=\"64M\"/>"), "camera");
	assert_string_equal(x, "<guest class=\"camera\" quota=\"64M\"/>");
}

static void test_shmem(void **unused)
{
	char x[512], small[40];

	(void)unused;
	assert_int_equal(vcmad_lv_shmem_xml(x, sizeof(x), "/run/vcma/cam1.ivshmem"), 0);
	/* the element form libvirt 9.0 reads (model as an attribute is silently ignored) */
	assert_non_null(strstr(x, "<model type='ivshmem-doorbell'/>"));
	assert_non_null(strstr(x, "<server path='/run/vcma/cam1.ivshmem'/>"));
	assert_non_null(strstr(x, "<msi vectors='2' ioeventfd='on'/>"));
	assert_int_equal(vcmad_lv_shmem_xml(small, sizeof(small), "/run/vcma/cam1.ivshmem"), -ENAMETOOLONG);
}

static void test_vmem(void **unused)
{
	static const char dom[] =
		"<domain><devices><memory model='dimm'><target><size unit='KiB'>1</size></target></memory>"
		"<memory model='virtio-mem' access='shared'><target><size unit='KiB'>262144</size>"
		"<node>0</node><block unit='KiB'>2048</block><requested unit='KiB'>131072</requested>"
		"<current unit='KiB'>131072</current></target><alias name='virtiomem0'/></memory>"
		"</devices></domain>";
	char *u;

	(void)unused;
	u = vcmad_lv_vmem_update_xml(dom, 65536);
	assert_non_null(u);
	assert_string_equal(u, "<memory model='virtio-mem' access='shared'><target><size unit='KiB'>262144</size>"
			       "<node>0</node><block unit='KiB'>2048</block><requested unit='KiB'>65536</requested>"
			       "<current unit='KiB'>131072</current></target><alias name='virtiomem0'/></memory>");
	free(u);
	errno = 0;
	assert_null(vcmad_lv_vmem_update_xml("<domain><memory model='dimm'></memory></domain>", 1));
	assert_int_equal(errno, ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attr),
		cmocka_unit_test(test_meta),
		cmocka_unit_test(test_shmem),
		cmocka_unit_test(test_vmem),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
