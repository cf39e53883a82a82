// SPDX-License-Identifier: MIT
/* vcmad.conf parsing: every section and key, file:line errors, overrides. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "conf.h"

static char err[512];

static int parse(struct vcmad_conf *c, const char *text)
{
	vcmad_conf_defaults(c);
	err[0] = '\0';
	return vcmad_conf_parse(c, text, "t.conf", err, sizeof(err));
}

static void test_defaults_and_full_file(void **unused)
{
	struct vcmad_conf c;
	const char *text = "# comment\n"
			   "[daemon]\nruntime_dir = /tmp/x\nbackend = sim\nmax_guests = 8\n"
			   "[limits]\nmax_regions_per_guest = 10\nmax_bytes_per_guest = 64M\nrequest_rate = 500\n"
			   "request_burst = 50\nmax_ram_per_guest = 128M\nring_slots = 32\n"
			   "[machine]\nmemory = 1G  # trailing comment\n"
			   "[pool main]\nsize = 25%\nquota = 8M\n"
			   "[ pool   cam ]\nsize = 16M\nmode = exclusive\nbind = class:camera\n";

	vcmad_conf_defaults(&c);
	assert_string_equal(c.runtime_dir, "/run/vcma");
	assert_int_equal(c.limits.ring_slots, 64);
	assert_int_equal(c.lazy_free_ms, 10);
	assert_int_equal(parse(&c, text), 0);
	assert_string_equal(c.runtime_dir, "/tmp/x");
	assert_int_equal(c.max_guests, 8);
	assert_int_equal(c.limits.max_regions, 10);
	assert_int_equal(c.limits.max_bytes, 64ull << 20);
	assert_int_equal(c.limits.rate, 500);
	assert_int_equal(c.limits.burst, 50);
	assert_int_equal(c.limits.max_ram, 128ull << 20);
	assert_int_equal(c.limits.ring_slots, 32);
	assert_int_equal(c.machine_bytes, 1ull << 30);
	assert_int_equal(c.npools, 2);
	assert_string_equal(c.pool[1].name, "cam");
	assert_int_equal(c.pool[1].mode, VCMA_POOL_EXCLUSIVE);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
}

static void expect_error(const char *text, const char *needle)
{
	struct vcmad_conf c;

	assert_int_equal(parse(&c, text), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not contain '%s'", err, needle);
}

static void test_errors_name_file_line_key(void **unused)
{
	expect_error("[daemon]\nmax_guests = 0\n", "t.conf:2: max_guests: invalid value '0'");
	expect_error("[daemon]\nbackend = kvm\n", "t.conf:2: backend: invalid value 'kvm'");
	expect_error("[daemon]\nlazy_free_ms = 1001\n", "t.conf:2: lazy_free_ms: invalid value '1001'");
	expect_error("[daemon]\nruntime_dir = relative\n", "runtime_dir: invalid value 'relative'");
	expect_error("\n\n[limits]\nring_slots = 48\n", "t.conf:4: ring_slots: invalid value '48'");
	expect_error("[limits]\nmax_bytes_per_guest = lots\n", "max_bytes_per_guest: invalid value 'lots'");
	expect_error("[machine]\nmemory = 1M\n", "t.conf:2: memory: invalid value '1M'");
	expect_error("[machine]\ncolor = blue\n", "t.conf:2: color: unknown key");
	expect_error("size = 1M\n", "t.conf:1: size: key outside of any section");
	expect_error("[bogus]\n", "t.conf:1: unknown section '[bogus]'");
	expect_error("[daemon\n", "t.conf:1: malformed section header");
	expect_error("[daemon]\njust words\n", "t.conf:2: expected 'key = value'");
	expect_error("[pool a]\nsize = 1M\n[pool a]\n", "t.conf:3: pool 'a' defined twice");
	expect_error("[pool a]\nsize = 12Q\n", "t.conf:2: pool a: size: invalid value '12Q'");
	expect_error("[pool bad/name]\n", "t.conf:1: pool name: invalid value 'bad/name'");
}

static void test_validate_and_override(void **unused)
{
	struct vcmad_conf c;

	assert_int_equal(parse(&c, "[machine]\nmemory = 64M\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "at least one pool"));
	assert_int_equal(parse(&c, "[pool a]\nmode = exclusive\nsize = 1M\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "bind"));
	assert_int_equal(parse(&c, "[pool a]\nsize = 1M\n"), 0);
	assert_int_equal(vcmad_conf_override_pool_size(&c, "a=2M", err, sizeof(err)), 0);
	assert_int_equal(c.pool[0].size_override.bytes, 2ull << 20);
	assert_int_equal(vcmad_conf_override_pool_size(&c, "b=2M", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no pool named 'b'"));
	assert_int_equal(vcmad_conf_override_pool_size(&c, "a=junk", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "junk"));
	assert_int_equal(vcmad_conf_override_pool_size(&c, "noequals", err, sizeof(err)), -EINVAL);
}

static void test_qemu_guests(void **unused)
{
	struct vcmad_conf c;

	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest cam0]\nbackend = qemu\nclass = camera\n"
				   "hugepages = on\n[guest dsp]\nbackend = qemu\nsocket = /run/x/dsp.sock\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(c.nguests, 2);
	assert_string_equal(c.guests[0].name, "cam0");
	assert_string_equal(c.guests[0].devclass, "camera");
	assert_true(c.guests[0].hugepages);
	assert_string_equal(c.guests[0].socket, "");
	assert_false(c.guests[1].hugepages);
	assert_string_equal(c.guests[1].socket, "/run/x/dsp.sock");

	expect_error("[guest g]\nbackend = kvm\n", "t.conf:2: backend: invalid value 'kvm' (expected qemu");
	expect_error("[guest g]\nbackend = qemu\nclass = a b\n", "t.conf:3: class: invalid value 'a b'");
	expect_error("[guest g]\nsocket = rel\n", "t.conf:2: socket: invalid value 'rel'");
	expect_error("[guest g]\nhugepages = yes\n", "t.conf:2: hugepages: invalid value 'yes'");
	expect_error("[guest g]\nram = 1G\n", "t.conf:2: ram: unknown key");
	expect_error("[guest bad/name]\n", "t.conf:1: guest name 'bad/name'");
	expect_error("[guest g]\n[guest g]\n", "t.conf:2: guest 'g' defined twice");

	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest g]\nclass = x\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest g: no backend"));
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest g]\nbackend = qemu\nsocket = /s\n"
				   "[guest h]\nbackend = qemu\nsocket = /s\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guests g and h: the same socket /s"));
	assert_int_equal(parse(&c, "[daemon]\nmax_guests = 1\n[pool a]\nsize = 4M\n[guest g]\nbackend = qemu\n"
				   "[guest h]\nbackend = qemu\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "2 [guest] sections but max_guests = 1"));
}

static void test_sim_guests(void **unused)
{
	struct vcmad_conf c;

	assert_int_equal(parse(&c, "[daemon]\nattach_group = nogroup\nopen_attach = no\n[pool a]\nsize = 4M\n"
				   "[guest ivi]\nbackend = sim\nclass = display\nusers = 1000, root,65534\nvmm = no\n"
				   "[guest cl]\nusers = 7\nbackend = sim\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	assert_string_equal(c.attach_group, "nogroup");
	assert_false(c.open_attach);
	assert_int_equal(c.nguests, 2);
	assert_int_equal(c.guests[0].kind, VCMAD_GUEST_SIM);
	assert_string_equal(c.guests[0].devclass, "display");
	assert_int_equal(c.guests[0].nusers, 3);
	assert_int_equal(c.guests[0].users[0], 1000);
	assert_int_equal(c.guests[0].users[1], 0);
	assert_int_equal(c.guests[0].users[2], 65534);
	assert_false(c.guests[0].vmm);
	assert_true(c.guests[1].vmm); /* a sim guest may be a VMM unless told otherwise */
	assert_int_equal(vcmad_conf_count_guests(&c, VCMAD_GUEST_SIM), 2);
	assert_int_equal(vcmad_conf_count_guests(&c, VCMAD_GUEST_QEMU), 0);
	assert_ptr_equal(vcmad_conf_guest(&c, "cl"), &c.guests[1]);
	assert_null(vcmad_conf_guest(&c, "nope"));

	/* keys of the other backend, in either order */
	expect_error("[guest g]\nbackend = sim\nsocket = /s\n", "t.conf:3: socket: invalid value '/s' (a key of backend = qemu");
	expect_error("[guest g]\nhugepages = on\nbackend = sim\n", "t.conf:3: backend: invalid value 'sim' (the section");
	expect_error("[guest g]\nbackend = qemu\nusers = root\n", "t.conf:3: users: invalid value 'root' (a key of backend = sim");
	expect_error("[guest g]\nbackend = sim\nusers = no-such-user-here\n", "t.conf:3: users: invalid value");
	expect_error("[guest g]\nbackend = sim\nusers = 1,2,3,4,5,6,7,8,9\n", "at most 8 users");
	expect_error("[guest g]\nbackend = sim\nvmm = maybe\n", "t.conf:3: vmm: invalid value 'maybe'");
	expect_error("[guest vcmactl]\nbackend = sim\n", "t.conf:1: guest name 'vcmactl' is reserved");
	expect_error("[daemon]\nopen_attach = 1\n", "t.conf:2: open_attach: invalid value '1'");
	expect_error("[daemon]\nattach_group = -x\n", "t.conf:2: attach_group: invalid value '-x'");
}

static void test_xen_guests(void **unused)
{
	struct vcmad_conf c;

	assert_int_equal(parse(&c, "[daemon]\nbackend = xen\n[pool a]\nsize = 64M\nmax_region = 8M\n"
				   "address_bits = 32\n[guest cam]\nbackend = xen\nclass = camera\n"
				   "[guest ivi]\nbackend = xen\nattach = manual\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	assert_string_equal(c.backend, "xen");
	assert_int_equal(c.pool[0].max_region, 8ull << 20);
	assert_int_equal(c.pool[0].address_bits, 32);
	assert_int_equal(c.guests[0].kind, VCMAD_GUEST_XEN);
	assert_false(c.guests[0].manual_attach);
	assert_true(c.guests[1].manual_attach);
	assert_int_equal(vcmad_conf_count_guests(&c, VCMAD_GUEST_XEN), 2);

	/* Xen guests need the Xen backend, and the Xen backend serves only them */
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest g]\nbackend = xen\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest g: backend = xen guests need [daemon] backend = xen"));
	assert_int_equal(parse(&c, "[daemon]\nbackend = xen\n[pool a]\nsize = 4M\n[guest g]\nbackend = qemu\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest g: backend = qemu guests need [daemon] backend = sim"));

	expect_error("[daemon]\nbackend = kvm\n", "t.conf:2: backend: invalid value 'kvm' (expected sim");
	expect_error("[guest g]\nbackend = xen\nattach = later\n", "t.conf:3: attach: invalid value 'later'");
	expect_error("[guest g]\nbackend = xen\nsocket = /s\n", "(a key of backend = qemu, in a backend = xen section");
	expect_error("[guest g]\nattach = auto\nbackend = sim\n", "t.conf:3: backend: invalid value 'sim' (the section");
	expect_error("[pool a]\nmax_region = 3M\n", "t.conf:2: pool a: max_region: invalid value '3M'");
	expect_error("[pool a]\nmax_region = 2G\n", "t.conf:2: pool a: max_region: invalid value '2G'");
	expect_error("[pool a]\naddress_bits = 12\n", "t.conf:2: pool a: address_bits: invalid value '12'");
}

static void test_libvirt(void **unused)
{
	struct vcmad_conf c;

	(void)unused;
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[libvirt]\nuri = qemu:///embed?root=/var/lib/vcma/lv\n"
				   "socket_group = kvm\n[guest cam]\nbackend = qemu\nsocket_group = kvm\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	assert_string_equal(c.libvirt.uri, "qemu:///embed?root=/var/lib/vcma/lv");
	assert_string_equal(c.libvirt.socket_group, "kvm");
	assert_string_equal(c.guests[0].socket_group, "kvm");
	assert_false(c.guests[0].libvirt); /* only discovery makes libvirt guests */
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest cam]\nbackend = qemu\nquota = 64M\n"), 0);
	assert_int_equal(c.guests[0].quota, 64ull << 20);
	expect_error("[guest g]\nquota = 3000\n", "t.conf:2: quota: invalid value '3000' (expected a size");
	/* no libvirt unless asked for */
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n"), 0);
	assert_string_equal(c.libvirt.uri, "");
	/* libvirt domains are QEMU guests: the sim backend's */
	assert_int_equal(parse(&c, "[daemon]\nbackend = xen\n[pool a]\nsize = 4M\n[libvirt]\nuri = xen:///system\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "[libvirt] uri: libvirt domains are QEMU guests"));

	expect_error("[libvirt]\nuri = system\n", "t.conf:2: uri: invalid value 'system' (expected a libvirt URI");
	expect_error("[libvirt]\nuri = qemu:///sys\ttem\n", "t.conf:2: uri: invalid value");
	expect_error("[libvirt]\nsocket_group = -x\n", "t.conf:2: socket_group: invalid value '-x'");
	expect_error("[libvirt]\nclass = camera\n", "t.conf:2: class: unknown key in this section");
	expect_error("[guest g]\nbackend = sim\nsocket_group = kvm\n", "(a key of backend = qemu, in a backend = sim");
}

/* lender = virtio-mem: a QEMU guest's device; lender = yes stays Xen's balloon. */
static void test_vmem_lenders(void **unused)
{
	struct vcmad_conf c;
	const struct vcmad_guest_conf *g;

	assert_int_equal(parse(&c, "[pool a]\nsize = 64M\nlendable = yes\n[guest ivi]\nlender = virtio-mem\n"
				   "backend = qemu\nqmp = /run/ivi/qmp.sock\nvmem_device = vm0\nlend_max = 128M\n"
				   "reclaim_timeout_ms = 2500\n[guest cam]\nbackend = qemu\nlender = virtio-mem\n"
				   "qmp = /run/cam.qmp\nvmem_device = mem.1\n"),
			 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	g = vcmad_conf_guest(&c, "ivi");
	assert_int_equal(g->lender, VCMAD_LENDER_VMEM);
	assert_string_equal(g->qmp, "/run/ivi/qmp.sock");
	assert_string_equal(g->vmem_device, "vm0");
	assert_int_equal(g->lend_max, 128ull << 20);
	assert_int_equal(g->reclaim_timeout_ms, 2500);
	g = vcmad_conf_guest(&c, "cam");
	assert_int_equal(g->lend_max, 0); /* the defaults, filled in when the lender is added */
	assert_int_equal(g->reclaim_timeout_ms, 0);

	/* Xen's lender = yes is unchanged */
	assert_int_equal(parse(&c, "[daemon]\nbackend = xen\n[pool a]\nsize = 4M\n[guest d]\nbackend = xen\n"
				   "lender = yes\n"),
			 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(c.guests[0].lender, VCMAD_LENDER_BALLOON);

	/* the lender kind has to fit the backend, in either order */
	expect_error("[guest g]\nbackend = qemu\nlender = yes\n", "t.conf:3: lender: invalid value 'yes' (lender = yes "
		     "is a Xen domain's balloon");
	expect_error("[guest g]\nbackend = xen\nlender = virtio-mem\n",
		     "t.conf:3: lender: invalid value 'virtio-mem' (lender = virtio-mem needs backend = qemu)");
	expect_error("[guest g]\nlender = virtio-mem\nbackend = xen\n",
		     "t.conf:3: backend: invalid value 'xen' (the section already has a key of another backend)");
	expect_error("[guest g]\nbackend = qemu\nlender = maybe\n", "t.conf:3: lender: invalid value 'maybe' (expected yes");
	expect_error("[guest g]\nbackend = sim\nqmp = /q\n", "(a key of backend = qemu, in a backend = sim section)");
	expect_error("[guest g]\nbackend = qemu\nqmp = q.sock\n", "t.conf:3: qmp: invalid value 'q.sock' (expected the "
		     "absolute path");
	expect_error("[guest g]\nbackend = qemu\nvmem_device = a/b\n", "t.conf:3: vmem_device: invalid value 'a/b'");
	expect_error("[guest g]\nbackend = qemu\nlend_max = 3M\n", "t.conf:3: lend_max: invalid value '3M' (expected a "
		     "size in 2 MiB units");
	expect_error("[guest g]\nbackend = qemu\nreclaim_timeout_ms = 5\n",
		     "t.conf:3: reclaim_timeout_ms: invalid value '5' (expected milliseconds from 100 to 600000)");

	/* a virtio-mem lender needs its socket and device; its keys need it */
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest g]\nbackend = qemu\nlender = virtio-mem\nqmp = /q\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest g: lender = virtio-mem needs qmp = PATH"));
	assert_int_equal(parse(&c, "[pool a]\nsize = 4M\n[guest g]\nbackend = qemu\nlend_max = 64M\n"), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest g: qmp, vmem_device, lend_max and reclaim_timeout_ms are for lender = virtio-mem"));
}

static void test_load_missing_file(void **unused)
{
	struct vcmad_conf c;

	vcmad_conf_defaults(&c);
	assert_int_equal(vcmad_conf_load(&c, "/nonexistent/vcmad.conf", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/vcmad.conf: cannot open"));
}

static void test_example_config_is_valid(void **unused)
{
	struct vcmad_conf c;

	vcmad_conf_defaults(&c);
	assert_int_equal(vcmad_conf_load(&c, VCMA_SOURCE_DIR "/docs/examples/vcmad.conf", err, sizeof(err)), 0);
	assert_int_equal(vcmad_conf_validate(&c, err, sizeof(err)), 0);
	assert_int_equal(c.npools, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_full_file),
		cmocka_unit_test(test_errors_name_file_line_key),
		cmocka_unit_test(test_validate_and_override),
		cmocka_unit_test(test_qemu_guests),
		cmocka_unit_test(test_sim_guests),
		cmocka_unit_test(test_xen_guests),
		cmocka_unit_test(test_libvirt),
		cmocka_unit_test(test_vmem_lenders),
		cmocka_unit_test(test_load_missing_file),
		cmocka_unit_test(test_example_config_is_valid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
