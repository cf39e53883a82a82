#!/usr/bin/env python3
"""End to end with a real guest: vcma.ko in Debian's stock kernel under QEMU (TCG),
two ivshmem-doorbell devices served by vcmad.

In the guest: 1, 2, 4 and 8 MiB regions through dma-bufs (pattern written, re-read
through a new mapping; the host hashes the same bytes with vcmactl hash), error paths,
the handle/dma-buf lifetime, the in-kernel API and a dma-buf import by another driver
(vcma_kapi_test.ko); the device unbound under a mapped region and rebound; then a
hostile program unbinds the second device and writes garbage to its rings: vcmad cuts
it off and the first device is still served. Outside Xen the module registers no
xenbus frontend and says nothing about Xen. Any WARNING, BUG or Oops in the guest's
dmesg fails the test, as does vcmad not exiting cleanly.

usage: test_qemu_e2e.py VCMAD VCMACTL SOURCE_ROOT
Exit 77 (skip) only when QEMU, the guest kernel, its headers or busybox cannot be had;
without the huge pages for hugepages = on the good device runs on an ordinary memfd
and the test says so (partial).
"""
import atexit
import contextlib
import errno
import os
import re
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

from vcmatest import Vcmad, check, ctl, guests, hugepages, log, partial, poll_until, set_tools  # noqa: E402
import guestbuild  # noqa: E402

VCMAD, VCMACTL, ROOT = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20
GOOD, EVIL, FOREIGN = "0000:00:04.0", "0000:00:05.0", "0000:00:06.0"

CONFIG = """
[daemon]
max_guests = 8
[machine]
memory = 512M
[pool main]
size = 64M
[guest good]
backend = qemu
%s
[guest evil]
backend = qemu
"""
HUGE_NEED = 64  # the good device's BAR2 (128 MiB) in 2 MiB pages: QEMU maps all of it

INIT = r"""echo VCMA-BOOTED
insmod /vcma.ko; echo "VCMA-EXIT insmod $?"
[ -e /sys/bus/pci/devices/%(foreign)s/driver ] && echo VCMA-FOREIGN bound || echo VCMA-FOREIGN unbound
[ -e /sys/bus/xen/drivers/vcma ] && echo VCMA-XENBUS registered || echo VCMA-XENBUS none
/vcma-e2e check; echo "VCMA-EXIT check $?"
insmod /vcma_kapi_test.ko; echo "VCMA-EXIT kapi_load $?"
dmesg | grep 'vcma_kapi_test: handle='
/vcma-e2e import; echo "VCMA-EXIT import $?"
read answer
rmmod vcma_kapi_test; echo "VCMA-EXIT kapi_unload $?"
/vcma-hostile %(evil)s; echo "VCMA-EXIT hostile $?"
/vcma-e2e alloc 2; echo "VCMA-EXIT alloc $?"
/vcma-e2e unbind %(good)s; echo "VCMA-EXIT unbind $?"
/vcma-e2e posted %(good)s; echo "VCMA-EXIT posted $?"
/vcma-e2e stress 4 40; echo "VCMA-EXIT stress $?"
/vcma-e2e race 300; echo "VCMA-EXIT race $?"
/vcma-e2e kill; echo "VCMA-EXIT kill $?"
/vcma-e2e shutdown; echo "VCMA-EXIT shutdown $?"
rmmod vcma; echo "VCMA-EXIT rmmod $?"
echo VCMA-DMESG-BEGIN
dmesg
echo VCMA-DMESG-END
poweroff -f
""" % {"evil": EVIL, "good": GOOD, "foreign": FOREIGN}

parts = guestbuild.prepare(ROOT)  # exits 77 when the parts cannot be had
# the good device on hugetlbfs (hugepages = on) when huge pages can be reserved here;
# they go back when the test is done, however it ends
huge = contextlib.ExitStack()
atexit.register(huge.close)
free_huge = huge.enter_context(hugepages(HUGE_NEED))
HUGE = free_huge >= HUGE_NEED
if HUGE:
    log("the good device's BAR2 is a hugetlbfs memfd (%d huge pages reserved for the test)" % HUGE_NEED)
else:
    huge.close()
    partial("hugepages = on not tested: the good device's BAR2 is an ordinary memfd (%d of %d huge pages free)"
            % (free_huge, HUGE_NEED))
d = Vcmad(VCMAD, CONFIG % ("hugepages = on" if HUGE else ""))


def regions_of(name):
    return {int(r["handle"], 16): r for r in ctl(d, "regions")["regions"] if r["guest_name"] == name}


def left_after_free(name, handles=None):
    """vcma.ko posts FREE without waiting for the answer (PROTOCOL.md 5.4), so vcmad may
    take it a moment after the guest moved on: give it 5 s. Returns what is still held
    (of handles, or of all the guest's regions); the caller checks it is nothing."""
    left = []

    def none_left():
        left[:] = [h for h in regions_of(name) if handles is None or h in handles]
        return not left

    poll_until(none_left, 5)
    return left


# A third ivshmem device that is not vcmad's: plain shared memory holding garbage.
foreign = os.path.join(d.rundir, "foreign.shm")
with open(foreign, "wb") as f:
    f.write(bytes(range(256)) * (MiB // 256))
vm = guestbuild.boot(parts, INIT, [(os.path.join(d.rundir, "good.ivshmem"), GOOD),
                                   (os.path.join(d.rundir, "evil.ivshmem"), EVIL)],
                     extra=["-object", "memory-backend-file,id=foreign,mem-path=%s,size=1M,share=on" % foreign,
                            "-device", "ivshmem-plain,memdev=foreign,addr=0x6"],
                     # Debian's kernel has no KASAN; SLUB poisoning and red zones make a
                     # use after free or overrun in vcma.ko fault (Oops) instead of passing
                     append="slub_debug=FZP")
try:
    vm.expect(r"VCMA-BOOTED", 120)
    check(vm.expect(r"VCMA-EXIT insmod (\d+)", 60).group(1) == "0", "vcma.ko loads in Debian's stock kernel")
    attached = guests(d)
    check(attached.get("good", {}).get("role") == "qemu" and attached.get("evil", {}).get("role") == "qemu",
          "both ivshmem devices attached to vcmad as qemu guests")
    check(vm.expect(r"VCMA-FOREIGN (\w+)", 30).group(1) == "unbound",
          "vcma.ko left the foreign ivshmem device (no vcma control page) unclaimed")
    check(vm.expect(r"VCMA-XENBUS (\w+)", 30).group(1) == "none",
          "and, outside Xen, registered no xenbus frontend")

    m = vm.expect(r"VCMA-POOL id=(\d+) size=(\d+) free=(\d+)", 60)
    check(int(m.group(1)) == attached["good"]["id"] and int(m.group(2)) == 64 * MiB,
          "QUERY from guest userspace: vcmad's id for this guest, pool of 64 MiB")

    sizes = []
    while len(sizes) < 4:
        m = vm.expect(r"VCMA-CHECK handle=(0x[0-9a-f]+) size=(\d+) offset=(0x[0-9a-f]+) dma=(0x[0-9a-f]+) "
                      r"fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", 120)
        h, size, off, dma, fnv, expect = (int(m.group(i), 16) if i != 2 else int(m.group(i)) for i in range(1, 7))
        regs = regions_of("good")
        host = int(ctl(d, "hash", hex(h))["fnv1a64"], 16)
        committed = guests(d)["good"]["committed_bytes"]
        ok = (fnv == expect and host == fnv and h in regs and regs[h]["size_bytes"] == size
              and off % min(size, MiB) == 0 and dma % 4096 == 0 and committed >= size
              and (not HUGE or committed % (2 * MiB) == 0))
        vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
        check(ok, "%d MiB region %#x at window offset %#x: the guest's bytes re-read through a new dma-buf "
              "mapping, and vcmactl hash on the host, match the pattern (%#018x)%s"
              % (size // MiB, h, off, fnv, "; held in huge pages" if HUGE else ""))
        sizes.append(size)
    check(sizes == [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB], "allocated 1, 2, 4 and 8 MiB")
    for _ in range(4):
        vm.expect(r"VCMA-FREED handle=", 60)
    left = left_after_free("good")
    vm.send_line("VCMA-OK" if not left else "VCMA-FAIL")
    check(not left, "closing the dma-bufs and VCMA_IOC_FREE returned every region to vcmad %s" % (list(left) or ""))
    check(vm.expect(r"VCMA-ERRORS (\w+)", 60).group(1) == "ok",
          "error paths: EINVAL, ENOENT, ENODEV, E2BIG/ENOSPC as PROTOCOL.md 5.6 says")

    m = vm.expect(r"VCMA-HELD handle=(0x[0-9a-f]+)", 60)
    held = int(m.group(1), 16)
    ok = held in regions_of("good")
    vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
    check(ok, "after VCMA_IOC_FREE the region lives on while its dma-buf is mapped")
    vm.expect(r"VCMA-RELEASED handle=", 60)
    ok = not left_after_free("good", [held])
    vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
    check(ok, "unmapping and closing the dma-buf freed it at vcmad")
    vm.expect(r"VCMA-DONE", 60)
    check(vm.expect(r"VCMA-EXIT check (\d+)", 60).group(1) == "0", "vcma-e2e check exited 0")

    # the in-kernel API, as another guest driver would use it
    check(vm.expect(r"VCMA-EXIT kapi_load (\d+)", 60).group(1) == "0", "vcma_kapi_test.ko loads")
    m = vm.expect(r"vcma_kapi_test: handle=(0x[0-9a-f]+) size=(\d+) dma=(0x[0-9a-f]+) fnv=(0x[0-9a-f]+)", 30)
    h, fnv = int(m.group(1), 16), int(m.group(4), 16)
    host = int(ctl(d, "hash", hex(h))["fnv1a64"], 16)
    check(int(m.group(2)) == MiB and host == fnv and guestbuild.pattern_fnv(MiB) == fnv,
          "vcma_region_alloc: a kernel driver's 1 MiB region holds its pattern, as vcmad sees it")
    m = vm.expect(r"VCMA-IMPORT dma_addr=(0x[0-9a-f]+) size=(\d+) expect=(0x[0-9a-f]+) imported: "
                  r"dma=(0x[0-9a-f]+) len=(\d+) nents=(\d+) fnv=(0x[0-9a-f]+)", 60)
    check(m.group(1) == m.group(4) and m.group(2) == m.group(5) and m.group(6) == "1"
          and int(m.group(3), 16) == int(m.group(7), 16),
          "another driver attaches a /dev/vcma dma-buf: one contiguous DMA segment at the region's address, "
          "and vmap reads the pattern userspace wrote")
    check(vm.expect(r"VCMA-EXIT import (\d+)", 30).group(1) == "0", "vcma-e2e import exited 0")
    vm.send_line("go")
    check(vm.expect(r"VCMA-EXIT kapi_unload (\d+)", 60).group(1) == "0" and not left_after_free("good", [h]),
          "unloading it freed the region through vcma_region_free")

    # a hostile program in the guest, on the second device's BAR
    m = vm.expect(r"HOSTILE-STATE (\d+)", 90)
    check(m.group(1) == "4", "the hostile program sees its control page go DEAD")
    check(vm.expect(r"VCMA-EXIT hostile (\d+)", 30).group(1) == "0", "vcma-hostile exited 0")
    check("guest" in d.logtext() and re.search(r"guest \d+ \(evil\): protocol violation", d.logtext()),
          "vcmad logged the violation and cut the hostile device off")
    check("evil" not in guests(d), "the hostile device is gone from vcmactl guests")
    m = vm.expect(r"VCMA-CHECK handle=(0x[0-9a-f]+) size=(\d+) offset=(0x[0-9a-f]+) dma=(0x[0-9a-f]+) "
                  r"fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", 60)
    h, fnv = int(m.group(1), 16), int(m.group(5), 16)
    ok = int(ctl(d, "hash", hex(h))["fnv1a64"], 16) == fnv == int(m.group(6), 16)
    vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
    check(ok, "the good device is still served after that: 2 MiB allocated and checked")
    check(vm.expect(r"VCMA-EXIT alloc (\d+)", 60).group(1) == "0", "vcma-e2e alloc exited 0")

    # the device goes away under an open, mapped region, and comes back
    m = vm.expect(r"VCMA-OPEN handle=(0x[0-9a-f]+) handle_only=(0x[0-9a-f]+)", 60)
    h, hc = int(m.group(1), 16), int(m.group(2), 16)
    ok = h in regions_of("good") and hc in regions_of("good")
    vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
    check(ok, "a region open and mapped in guest userspace, and one held by its handle alone (dma-buf closed)")
    m = vm.expect(r"VCMA-UNBOUND signal=(\d+) remap_errno=(\d+) alloc_errno=(\d+) free_errno=(\d+)", 60)
    ok = h not in regions_of("good") and hc not in regions_of("good")
    vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
    check(m.group(1) == "7" and m.group(2) == "19" and m.group(3) == "19" and m.group(4) == "0" and ok,
          "unbinding the device revoked the mapping (SIGBUS), the dma-buf and the open file fail with "
          "ENODEV, the handle-only region's FREE just lets go, and vcmad has both regions back")
    m = vm.expect(r"VCMA-CHECK handle=(0x[0-9a-f]+) size=(\d+) offset=(0x[0-9a-f]+) dma=(0x[0-9a-f]+) "
                  r"fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", 60)
    h, fnv = int(m.group(1), 16), int(m.group(5), 16)
    ok = int(ctl(d, "hash", hex(h))["fnv1a64"], 16) == fnv == int(m.group(6), 16)
    vm.send_line("VCMA-OK" if ok else "VCMA-FAIL")
    vm.expect(r"VCMA-REBOUND ok", 60)
    check(ok and vm.expect(r"VCMA-EXIT unbind (\d+)", 60).group(1) == "0",
          "rebinding takes over the connected ring: a 2 MiB region allocated and checked")

    # a FREE in flight (vcmad stopped) when the device goes away
    m = vm.expect(r"VCMA-POSTED-HELD handle=(0x[0-9a-f]+)", 60)
    h = int(m.group(1), 16)
    d.proc.send_signal(signal.SIGSTOP)
    try:
        vm.send_line("VCMA-OK")
        vm.expect(r"VCMA-POSTED-FREED", 30)
        # the thing under test: the guest's unbind waits for the FREE's answer as long as
        # vcmad is stopped (a second here), and must not give up or go on without it
        time.sleep(1)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    m = vm.expect(r"VCMA-POSTED-UNBOUND after_ms=(\d+)", 20)
    check(int(m.group(1)) >= 900 and not left_after_free("good", [h]),
          "unbinding with a FREE posted to a stopped vcmad waited for its answer (%s ms), and vcmad freed it"
          % m.group(1))
    vm.expect(r"VCMA-POSTED-REBOUND ok", 60)
    check(vm.expect(r"VCMA-EXIT posted (\d+)", 60).group(1) == "0",
          "the driver bound again took over the idle ring: ALLOC and FREE work")

    # several processes at once: one ring, one in-flight table
    m = vm.expect(r"VCMA-STRESS procs=(\d+) n=(\d+) failed=(\d+)", 300)
    check(m.group(3) == "0" and vm.expect(r"VCMA-EXIT stress (\d+)", 30).group(1) == "0",
          "4 processes x 40 allocations of 1-4 MiB at once: every region verified and freed")
    check(not left_after_free("good"), "and none is left at vcmad")
    m = vm.expect(r"VCMA-RACE n=(\d+) frees=(\d+) child_frees=(\d+) bad=(\d+)", 120)
    n, frees, child_frees, bad = (int(x) for x in m.groups())
    check(bad == 0 and frees + child_frees == n and child_frees > 0 and not left_after_free("good")
          and vm.expect(r"VCMA-EXIT race (\d+)", 30).group(1) == "0",
          "two processes racing QUERY and FREE on the same handles: every answer whole, exactly one FREE of "
          "each of %d handles succeeded (%d by the racer), none left at vcmad" % (n, child_frees))
    # a process killed while its ALLOC waits on a stopped vcmad
    vm.expect(r"VCMA-KILL-READY", 60)
    g0 = guests(d)["good"]
    d.proc.send_signal(signal.SIGSTOP)
    try:
        vm.send_line("VCMA-OK")
        m = vm.expect(r"VCMA-KILLED after_ms=(\d+) signal=(\d+)", 20)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    check(m.group(2) == str(int(signal.SIGKILL)) and int(m.group(1)) < 5000,
          "a process killed while its ALLOC waits on a stopped vcmad dies at once (%s ms, not the 30 s "
          "request timeout)" % m.group(1))

    def made_and_freed():
        g = guests(d)["good"]
        return g["alloc_ok"] == g0["alloc_ok"] + 1 and g["frees"] == g0["frees"] + 1 and not regions_of("good")

    check(poll_until(made_and_freed, 5),
          "vcmad made the region after all, and vcma.ko FREEd it: nobody would ever have used it")
    vm.send_line("VCMA-OK")
    vm.expect(r"VCMA-KILL-AFTER ok", 60)
    check(vm.expect(r"VCMA-EXIT kill (\d+)", 30).group(1) == "0", "the ring works on: QUERY, ALLOC and FREE")

    g = guests(d)["good"]
    check(g["stray_reclaims"] == 0, "vcma.ko wrote nothing outside its regions (vcmad's audit found no stray memory)")

    # vcmad stops while the guest is up
    vm.expect(r"VCMA-SHUTDOWN-READY", 60)
    d.stop()
    vm.send_line("VCMA-OK")
    m = vm.expect(r"VCMA-AFTER-SHUTDOWN query_errno=(\d+) alloc_errno=(\d+)", 60)
    check(m.group(1) == m.group(2) == str(errno.ESHUTDOWN),
          "vcmad stopped cleanly with QEMU attached; the guest's calls then fail with ESHUTDOWN")
    check(vm.expect(r"VCMA-EXIT rmmod (\d+)", 60).group(1) == "0", "rmmod vcma: clean unload")

    dmesg = vm.dmesg(60)
    bad = guestbuild.dmesg_problems(dmesg)
    check(any(FOREIGN in line and "without a vcma control page (magic 0x3020100)" in line for line in dmesg),
          "and said in dmesg why: no vcma control page, magic 0x3020100")
    check(any("its caller was killed while vcmad made it" in line for line in dmesg),
          "and said so in dmesg")
    xen = [line for line in dmesg if re.search(r"xenbus|vcma.*xen|xen.*vcma", line, re.I)]
    check(dmesg and not xen, "and said nothing about Xen%s" % "".join("\n  " + line for line in xen))
    refused = [line for line in dmesg if re.search(r"failed at vcmad|not sent|malformed ALLOC answer", line)]
    check(dmesg and not refused, "vcmad took every FREE vcma.ko posted, and every answer was well-formed%s"
          % "".join("\n  " + line for line in refused))
    check(dmesg and not bad, "no WARNING, BUG or Oops in the guest's dmesg (%d lines)%s"
          % (len(dmesg), "".join("\n  " + line for line in bad)))
    vm.wait_exit(60)
finally:
    vm.kill()
    if d.proc.poll() is None:  # the test stops it itself; this is for a failure on the way
        d.proc.kill()
        d.proc.wait()
    huge.close()  # the memfds are closed: give the huge pages back
print("PASS")
