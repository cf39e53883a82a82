#!/usr/bin/env python3
"""A real virtio-mem lender: Debian's kernel under QEMU (TCG), its virtio-mem device
driven by vcmad over QMP ([guest ivi] lender = virtio-mem).

serve   vcmad lends 64 MiB of idle pool capacity (the device's plugged size grows to
        64 MiB, seen through a second QMP socket and vcmactl stats); memhog fills it
        (the Movable zone's free pages drop); `vcmactl alloc` of the whole pool
        needs it back: vcmad lowers the requested size, the guest migrates memhog's
        pages and unplugs, the region is served; memhog reports bad=0 on every pass
        before, during and after.
refuse  memhog fills nearly all of the guest's memory, so the unplug stalls: the
        allocation is answered BUSY within the deadline (3 s), the counters show
        what was asked and what came back, what did not stays lent (requested size
        restored), another pool's allocation is served meanwhile and memhog keeps
        passing with bad=0.
Any WARNING/BUG/Oops in the guest's dmesg fails (refuse: but the expected
page-allocation-failure warning of an unplug that cannot migrate).

usage: test_vmem.py serve|refuse VCMAD VCMACTL
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

from vcmatest import poll_until, Vcmad, check, ctl, fail, log, vcmactl, set_tools, wait_until  # noqa: E402
import vmemguest  # noqa: E402

MODE, VCMAD, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20
LEND = 64 if MODE == "serve" else 192
TIMEOUT_MS = 20000 if MODE == "serve" else 3000

parts = vmemguest.prepare()
qmp_vcmad = os.path.join(parts["dir"], "qmp-vcmad.sock")
qmp_test = os.path.join(parts["dir"], "qmp-test.sock")
CONFIG = """
[daemon]
relend_idle_ms = 100
[machine]
memory = 512M
[pool main]
size = %dM
lendable = yes
[pool cam]
size = 32M
lendable = no
[guest ivi]
backend = qemu
lender = virtio-mem
qmp = %s
vmem_device = vm0
lend_max = %dM
reclaim_timeout_ms = %d
""" % (LEND, qmp_vcmad, LEND, TIMEOUT_MS)
d = Vcmad(VCMAD, CONFIG)
vm = vmemguest.boot(parts, qmp_vcmad, qmp_test)
try:
    vm.expect(r"VMEM-BOOTED", 180)
    check(not any("VMEM-INSMOD-FAILED" in x for x in vm.lines), "virtio_mem and its dependencies load")
    q = vmemguest.Qmp(qmp_test)
    wait_until(lambda: q.size() == LEND * MiB, 120, "the guest's plugged size grows to %d MiB" % LEND)
    # vcmad learns the size by polling (every 20 ms while it changes, 250 ms once it
    # has been still for a second): give its view a moment to catch up with QEMU's
    poll_until(lambda: (vmemguest.lender(ctl(d, "stats"), "ivi") or {}).get("plugged_bytes") == LEND * MiB, 10)
    st = vmemguest.lender(ctl(d, "stats"), "ivi")
    check(st and st["kind"] == "virtio-mem" and st["lent_bytes"] == LEND * MiB and st["plugged_bytes"] == LEND * MiB,
          "vcmad lent %d MiB of idle pool capacity; QEMU reports that much plugged (%s)" % (LEND, st))
    f = ctl(d, "pool", "show", "main")["frames"]
    check(f["lent_free"] == LEND * 256, "the pool map shows the %d MiB lent" % LEND)
    vm.send_line("mem")
    m0 = vm.expect(r"VMEM-MEM MemTotal: +(\d+) kB movable_free=(\d+)", 30)
    check(int(m0.group(2)) * 4096 > (LEND - 8) * MiB, "the plugged memory is in ZONE_MOVABLE, free (%s pages)"
          % m0.group(2))

    hog = 100 if MODE == "serve" else 480
    vm.send_line("fill %d" % hog)
    vm.expect(r"MEMHOG filled mib=%d" % hog, 300)
    vm.expect(r"MEMHOG pass=1 bad=0", 300)
    vm.send_line("mem")
    m1 = vm.expect(r"VMEM-MEM MemTotal: +(\d+) kB movable_free=(\d+)", 60)
    check(int(m1.group(2)) * 4096 < 8 * MiB, "memhog's pages fill the plugged memory (Movable free: %s pages)"
          % m1.group(2))

    if MODE == "serve":
        t0 = time.monotonic()
        r = ctl(d, "alloc", "--pool", "main", "%dM" % LEND, timeout=TIMEOUT_MS / 1000 + 30)
        took = time.monotonic() - t0
        check(r["size_bytes"] == LEND * MiB, "the allocation that needed the lent capacity is served (%.2f s)" % took)
        check(q.size() == 0, "the guest unplugged it all: QMP size 0")
        st = vmemguest.lender(ctl(d, "stats"), "ivi")
        check(st["asked_bytes"] == LEND * MiB and st["came_back_bytes"] == LEND * MiB and st["reclaims_short"] == 0
              and st["lent_bytes"] == 0, "counters: asked %d MiB back, all came back, none short" % LEND)
        check("gave back the %d KiB asked" % (LEND * 1024) in d.logtext(), "vcmad's log says what came back")
    else:
        busy = subprocess.Popen([VCMACTL, "--socket", d.ctl_sock, "alloc", "--pool", "main", "%dM" % LEND],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()
        time.sleep(0.3)
        other = ctl(d, "alloc", "--pool", "cam", "16M", timeout=10)
        check(other["size_bytes"] == 16 * MiB and busy.poll() is None,
              "another pool's allocation is served while the lender is being asked (%.2f s)"
              % (time.monotonic() - t0))
        out = busy.communicate(timeout=30)[0]
        took = time.monotonic() - t0
        check(busy.returncode != 0 and "busy" in out.lower(), "the requester hears BUSY: %s" % out.strip())
        check(took < TIMEOUT_MS / 1000 + 2, "within the deadline (%.2f s, deadline %.1f s)" % (took, TIMEOUT_MS / 1000))
        st = vmemguest.lender(ctl(d, "stats"), "ivi")
        log("lender after the refusal: %s" % st)
        check(st["asked_bytes"] == LEND * MiB and st["came_back_bytes"] < LEND * MiB and st["reclaims_short"] == 1,
              "counters: asked %d MiB, %d MiB came back, 1 short" % (LEND, st["came_back_bytes"] // MiB))
        check(st["lent_bytes"] == LEND * MiB - st["came_back_bytes"], "what did not come back stays lent")
        wait_until(lambda: q.cmd("qom-get", path="vm0", property="requested-size") == st["lent_bytes"], 10,
                   "the requested size restored to what stays lent")
        f = ctl(d, "pool", "show", "main")["frames"]
        check(f["lent_free"] * 4096 == st["lent_bytes"] and f["claimed"] == 0,
              "the pool map agrees, and the window is let go")
    # memhog keeps passing after the take-back
    n = len(vmemguest.memhog_lines(vm.lines))
    vm.expect(r"MEMHOG pass=%d bad=" % (vmemguest.memhog_lines(vm.lines)[-1][0] + 2), 300)
    vm.send_line("kill")
    vm.expect(r"VMEM-KILLED", 60)
    passes = vmemguest.memhog_lines(vm.lines)
    check(len(passes) > n and all(bad == 0 for _, bad in passes),
          "memhog: %d passes, every one bad=0 (before, during and after)" % len(passes))
    vm.send_line("quit")
    dmesg = vm.dmesg(120)
    vm.wait_exit(60)
    bad = vmemguest.problems(dmesg, allow_alloc_failure=MODE == "refuse")
    check(not bad, "no WARNING/BUG/Oops in the guest's dmesg: %s" % bad[:5])
    if MODE == "refuse":
        log("the guest's page-allocation-failure warning %s" %
            ("is there (expected)" if any("page allocation failure" in x for x in dmesg) else "did not appear"))
except SystemExit:
    vm.kill()
    print(d.logtext()[-6000:])
    raise
except Exception as e:  # noqa: BLE001
    vm.fail("%s: %s" % (type(e).__name__, e))
d.stop()
print("PASS")
