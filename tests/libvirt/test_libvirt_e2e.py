#!/usr/bin/env python3
"""vcmad with libvirt for real: the embedded QEMU driver (qemu:///embed?root=DIR) in
vcmad's own process, Debian's kernel under TCG, vcma.ko and virtio-mem in the guests.

  discovery  a domain defined with vcma metadata becomes a guest vcmad expects (its
             ivshmem socket appears) without any [guest] section
  attach     vcmactl attach gives the running domain its ivshmem device live; vcma.ko
             in it allocates 4 MiB and fills it; the host hashes the same bytes
  lifecycle  cam1's QEMU is killed (-9): its region is reclaimed (time from the kill to
             no region, and to libvirt's STOPPED event, which vcmad logs as a crash);
             detach of the stopped domain removes the device and the metadata, and
             vcmad forgets it
  lending    a second domain with lend='yes' and a virtio-mem device: vcmad lends it
             idle capacity of a lendable pool through libvirt (the guest plugs it into
             ZONE_MOVABLE), memhog fills the guest's memory, then an allocation of the
             whole pool makes vcmad ask it back: the guest unplugs, migrating memhog's
             pages, the allocation is served, and memhog counts zero bad words before,
             during and after; when ivi stops, what it was lent is the pools' again
  Any WARNING, BUG or Oops in either guest's console fails the test.

usage: test_libvirt_e2e.py VCMAD VCMACTL SOURCE_ROOT
Exit 77 (skip) only when libvirt, QEMU, the guest kernel or its headers cannot be had,
or vcmad is built without libvirt.
"""
import atexit
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import lvharness  # noqa: E402
from vcmatest import Vcmad, check, ctl, fail, log, poll_until, set_tools, skip, vcmactl  # noqa: E402

VCMAD, VCMACTL, ROOT = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20

if "libvirt: yes" not in subprocess.run([VCMAD, "--version"], capture_output=True, text=True).stdout:
    skip("vcmad is built without libvirt (apt-get install libvirt-dev; meson option libvirt)")
need = lvharness.missing_packages()
if need:
    skip("missing packages: %s (scripts/setup-deps.sh --for tests installs them)" % " ".join(need))
if lvharness.qemu_user_missing():
    skip("no libvirt-qemu user: root embed needs it (scripts/setup-deps.sh --for tests adds it)")

root = lvharness.EmbedRoot()
lvharness.subreaper(root)  # destroyed QEMUs are reaped at once (see lvharness.subreaper)
atexit.register(root.kill_qemus)

CAM_INIT = r"""echo VCMA-BOOTED
n=0
until grep -qs 0x1110 /sys/bus/pci/devices/*/device; do
  sleep 0.2; n=$((n+1)); [ $n -eq 300 ] && echo VCMA-NO-DEVICE && poweroff -f
done
echo VCMA-DEVICE
insmod /vcma.ko; echo "VCMA-EXIT insmod $?"
/vcma-e2e hold 4; echo "VCMA-EXIT hold $?"
"""
# 384 MiB of boot RAM leave about 330 MB of MemTotal; 450000 kB means about 128 MiB
# are plugged (vcmad may have started lending before /init reads MemTotal)
LENDER_INIT = r"""echo "LENDER-BOOTED $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
n=0
while [ $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) -lt 450000 ]; do
  sleep 0.2; n=$((n+1)); [ $n -eq 600 ] && echo LENDER-NO-PLUG && break
done
echo "LENDER-PLUGGED $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
/memhog fill %d
""" % 200

cam = lvharness.build_vcma_guest(ROOT, CAM_INIT)
lender = lvharness.build_lender_guest(LENDER_INIT)
cam_log, lender_log = root.path("cam1-console.log"), root.path("ivi-console.log")
cam_xml, lender_xml = root.path("cam1.xml"), root.path("ivi.xml")
with open(cam_xml, "w") as f:
    f.write(lvharness.vcma_guest_xml("cam1", cam["kernel"], cam["initrd"], cam_log, vcma_class="camera",
                                     metadata={"quota": "16M"}))
with open(lender_xml, "w") as f:
    # 384 MiB of boot RAM and up to 256 MiB plugged: memhog's 440 MiB needs what is lent
    f.write(lvharness.lender_guest_xml("ivi", lender["kernel"], lender["initrd"], lender_log, memory_mib=384,
                                       vmem_mib=256))

CONFIG = """
[daemon]
relend_idle_ms = 100
[machine]
memory = 1G
[pool main]
size = 64M
[pool lend]
size = 128M
lendable = yes
[libvirt]
uri = %s
""" % root.uri

d = Vcmad(VCMAD, CONFIG)


def lv():
    return ctl(d, "status")["libvirt"]


def must(*args):
    r = vcmactl(d, *args)
    if r.returncode != 0:
        fail("vcmactl %s exited %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r.stdout


def regions_of(name):
    return [r for r in ctl(d, "regions")["regions"] if r.get("guest_name") == name]


def lender_info(name):
    for e in ctl(d, "stats").get("balloon", {}).get("lenders", []):
        if e["name"] == name:
            return e
    return None


def console_problems(slog, allowed=()):
    return [p for p in slog.problems() if not any(a in p for a in allowed)]


try:
    poll_until(lambda: lv()["connected"], 30) or fail("vcmad did not connect to %s" % root.uri)

    # --- discovery: defined with metadata -> expected (socket), no [guest] section
    must("domain", "define", cam_xml)
    sock = os.path.join(d.rundir, "cam1.ivshmem")
    check(poll_until(lambda: os.path.exists(sock), 10), "cam1 discovered: its ivshmem socket %s exists" % sock)
    check(lv()["domains"] == 1, "vcmad serves 1 libvirt domain (status says %d)" % lv()["domains"])

    # --- attach live: the running domain gets its device, vcma.ko serves a region
    must("domain", "start", "cam1")
    must("domain", "define", lender_xml)
    must("domain", "start", "ivi")
    cam_con, ivi_con = lvharness.SerialLog(cam_log), lvharness.SerialLog(lender_log)
    check(cam_con.expect("VCMA-BOOTED", 120) is not None, "cam1 boots")
    t0 = time.monotonic()
    out = must("attach", "cam1", "--class", "camera")
    log("vcmactl attach cam1 took %.0f ms: %s" % ((time.monotonic() - t0) * 1000, out.strip()))
    check(cam_con.expect("VCMA-DEVICE", 60) is not None, "cam1 sees the hot-plugged ivshmem device")
    m = cam_con.expect(r"VCMA-CHECK handle=(0x[0-9a-f]+) size=(\d+) .* fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", 60)
    check(m is not None, "vcma.ko in cam1 allocated and filled a region:\n" + cam_con.dump(30))
    handle, size, fnv, expect = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    check(size == 4 * MiB and fnv == expect, "the guest read back its pattern (%s vs %s)" % (fnv, expect))
    host = ctl(d, "hash", handle)
    check(int(host["fnv1a64"], 16) == int(fnv, 16),
          "the host hashes the region's bytes as the guest wrote them (%s vs %s)" % (host["fnv1a64"], fnv))
    g = {x["name"]: x for x in ctl(d, "guests")["guests"]}
    check(g.get("cam1", {}).get("domain") == "cam1" and g["cam1"]["class"] == "camera",
          "vcmactl guests shows cam1 as a libvirt domain of class camera")
    check(g["cam1"]["max_bytes"] == 16 * MiB, "cam1's quota is its metadata's 16M (attach kept it): %d"
          % g["cam1"]["max_bytes"])

    # --- lending through libvirt: idle capacity of pool lend goes to ivi's virtio-mem
    m = ivi_con.expect(r"LENDER-BOOTED (\d+)", 120)
    check(m is not None, "ivi boots")
    boot_kib = int(m.group(1))
    check(poll_until(lambda: (lender_info("ivi") or {}).get("plugged_bytes", 0) >= 128 * MiB, 60),
          "vcmad lends ivi capacity and the guest plugs it: %s" % lender_info("ivi"))
    m = ivi_con.expect(r"LENDER-PLUGGED (\d+)", 120)
    check(m is not None and int(m.group(1)) >= 450000,
          "ivi's MemTotal grew with the plugged memory (%d kB when /init ran, %s kB now)" % (boot_kib, m and m.group(1)))
    # 200 MiB: the movable zone (what is plugged) fills first; the rest fits in boot RAM,
    # so everything lent can be unplugged by migrating memhog's pages out
    m = ivi_con.expect(r"MEMHOG pass=\d+ bad=0 mib=\d+ inrange=(\d+)", 120)
    check(m is not None and int(m.group(1)) > 0,
          "memhog runs in ivi with bad=0, %s of its pages in the plugged memory" % (m and m.group(1)))
    before = lender_info("ivi")
    log("lent to ivi: %d MiB plugged" % (before["plugged_bytes"] >> 20))

    # an allocation of all of pool lend needs what ivi holds: it must unplug
    t0 = time.monotonic()
    r = vcmactl(d, "--json", "alloc", "--pool", "lend", "128M", timeout=120)
    took = time.monotonic() - t0
    check(r.returncode == 0, "alloc of 128 MiB in pool lend is served after ivi gives back: %s" % r.stderr.strip())
    after = lender_info("ivi")
    log("take-back through libvirt: %.2f s for %d MiB (asked %d MiB, came back %d MiB)"
        % (took, before["plugged_bytes"] >> 20, after["asked_bytes"] >> 20, after["came_back_bytes"] >> 20))
    check(after["came_back_bytes"] - before["came_back_bytes"] >= 128 * MiB,
          "ivi gave back the 128 MiB of pool lend it was lent: %s" % after)
    passes_before = len([x for x in ivi_con.lines if x.startswith("MEMHOG pass=")])
    check(poll_until(lambda: ivi_con.expect(r"MEMHOG pass=\d+", 0.5) is not None and
                     len([x for x in ivi_con.lines if x.startswith("MEMHOG pass=")]) >= passes_before + 2, 120),
          "memhog keeps running after the unplug")
    last = [x for x in ivi_con.lines if x.startswith("MEMHOG pass=")][-1]
    log("memhog after the take-back: %s" % last)
    bad = [x for x in ivi_con.lines if x.startswith("MEMHOG pass=") and " bad=0" not in x]
    check(not bad, "memhog: zero bad words on every pass (%d passes)" %
          len([x for x in ivi_con.lines if x.startswith("MEMHOG pass=")]) + ("" if not bad else ": " + bad[0]))
    must("free", ctl(d, "regions", "--guest", "vcmactl")["regions"][0]["handle"])

    # --- lifecycle: cam1's QEMU crashes (kill -9): its region is reclaimed at once
    check(len(regions_of("cam1")) == 1, "cam1 holds its region before the crash")
    with open(os.path.join(root.root, "run", "qemu", "cam1.pid")) as f:
        qemu_pid = int(f.read().split()[0])
    mark, stops = d.log_mark(), lv()["stops"]
    t0 = time.monotonic()
    os.kill(qemu_pid, 9)
    check(poll_until(lambda: not regions_of("cam1"), 10), "cam1's region is reclaimed after its QEMU died")
    t_reclaimed = time.monotonic() - t0
    check(poll_until(lambda: lv()["stops"] > stops, 10), "vcmad hears libvirt's STOPPED event")
    t_event = time.monotonic() - t0
    logged = d.log_since(mark)
    ev = re.search(r"region\(s\) reclaimed ([0-9.]+) ms after libvirt's event", logged)
    log("kill -9 of cam1's QEMU -> region reclaimed %.0f ms later (%s); libvirt's STOPPED event seen by %.0f ms"
        % (t_reclaimed * 1000, "by the event, %s ms after it" % ev.group(1) if ev else
           "by the ivshmem hang-up, before the event", t_event * 1000))
    check("domain cam1 failed (its QEMU died)" in logged, "vcmad logs the crash as the domain's stop:\n" + logged)

    # --- detach the stopped domain: device and metadata gone, vcmad forgets it
    must("detach", "cam1")
    check(poll_until(lambda: not os.path.exists(sock), 10), "cam1's socket is gone after detach")
    check(lv()["domains"] == 1 and "cam1" not in {x["name"] for x in ctl(d, "guests")["guests"]},
          "vcmad forgot cam1 after the detach (ivi, which lends, is the one libvirt domain left)")

    for name, con, allowed in (("cam1", cam_con, ()), ("ivi", ivi_con, ())):
        p = console_problems(con, allowed)
        check(not p, "%s's console has no WARNING/BUG/Oops: %s" % (name, p[:3]))
    must("domain", "destroy", "ivi")
    check(poll_until(lambda: lender_info("ivi") is None and
                     all(p["frames"]["lent_free"] + p["frames"]["lent_used"] == 0 for p in ctl(d, "stats")["pools"]),
                     10), "a lender that stops gives its lent capacity back to the pools at once")
    must("domain", "undefine", "ivi")
    must("domain", "undefine", "cam1")
finally:
    if d.alive():
        text = d.stop()
        check("stopped cleanly" in text, "vcmad stops cleanly")
log("OK")
