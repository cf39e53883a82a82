#!/usr/bin/env python3
"""The libvirt harness (lvharness.py) against real libvirt, standalone (no vcmad): the
embedded QEMU driver as root, Debian's kernel under TCG.

1. A vcma guest (vcma.ko, vcma-e2e, vcma metadata, no <shmem>) is defined and started
   and boots on its serial log; its metadata reads back.
2. A <shmem> ivshmem-doorbell device on a small ivshmem server written here is attached
   live: the server gets QEMU's connection, the live XML has the device, the guest sees
   PCI 1af4:1110. It is detached: DEVICE_REMOVED, the server sees the disconnect, the
   guest sees it gone.
3. The domain is destroyed: the STOPPED lifecycle event arrives (timed).
4. A lender guest with a virtio-mem device (requested 0) boots; its requested size is
   raised through virDomainUpdateDeviceFlags: MEMORY_DEVICE_SIZE_CHANGE reports it
   plugged and the guest's MemTotal grows. memhog fills memory (part of it in the
   plugged range) and checks it on every pass; the size is lowered to 0 under that
   load: the event reports 0, memhog's pages left the range, and no pass ever saw a
   bad word.
Any WARNING, BUG or Oops on either console fails the test.

usage: test_lvharness.py SOURCE_ROOT
Exit 77 (skip) only when libvirt, QEMU, the guest kernel or its headers cannot be had,
or when not run as root (the embed root's qemu.conf runs QEMU as root).
"""
import array
import atexit
import os
import re
import shutil
import socket
import struct
import sys
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "qemu"))

import guestbuild  # noqa: E402
import lvharness as H  # noqa: E402
from vcmatest import check, fail, log, skip  # noqa: E402

ROOT = sys.argv[1]
MiB = 1 << 20
T_START = time.monotonic()

if os.geteuid() != 0:
    skip("not root: the embed root runs QEMU as root (user = \"root\" in its qemu.conf)")
guestbuild.ensure_packages(ROOT, H.missing_packages, "the libvirt harness test")  # may re-exec, may exit 77
lv = H.ensure_libvirt()
if H.qemu_user_missing():
    import subprocess
    subprocess.run([os.path.join(ROOT, "scripts", "setup-deps.sh"), "--for", "tests"], check=False)
    if H.qemu_user_missing():
        skip("no libvirt-qemu user and group, and setup-deps.sh could not add them: root embed cannot start")


class IvshmemServer:
    """QEMU's ivshmem server protocol, the part one client needs: version 0, the
    client's id, -1 with the shared memory, the server as peer 0 with its vectors, then
    the client's own vectors. Records connects and disconnects with their times."""

    def __init__(self, path, size=4 * MiB, vectors=2):
        self.path = path
        self.vectors = vectors
        self.memfd = os.memfd_create("lv-ivshmem")
        os.ftruncate(self.memfd, size)
        os.pwrite(self.memfd, b"hello from the lvharness server\0", 0)
        self.server_vecs = [os.eventfd(0) for _ in range(vectors)]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.listen(4)
        self.events = []  # (monotonic time, "connect"|"disconnect", peer id)
        self.cond = threading.Condition()
        self.next_id = 1
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _send(c, value, fd=None):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd is not None else []
        c.sendmsg([struct.pack("<q", value)], anc)

    def _note(self, what, peer):
        with self.cond:
            self.events.append((time.monotonic(), what, peer))
            self.cond.notify_all()

    def _accept(self):
        while True:
            c, _ = self.sock.accept()
            peer = self.next_id
            self.next_id += 1
            self._send(c, 0)
            self._send(c, peer)
            self._send(c, -1, self.memfd)
            for v in self.server_vecs:
                self._send(c, 0, v)
            own = [os.eventfd(0) for _ in range(self.vectors)]
            for v in own:
                self._send(c, peer, v)
            self._note("connect", peer)
            threading.Thread(target=self._serve, args=(c, peer, own), daemon=True).start()

    def _serve(self, c, peer, own):
        while c.recv(64):
            pass
        c.close()
        for v in own:
            os.close(v)
        self._note("disconnect", peer)

    def wait(self, what, timeout, since=0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[since:]:
                    if e[1] == what:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


VCMA_INIT = r"""echo LV-BOOTED
insmod /vcma.ko; echo "LV-EXIT insmod $?"
prev=none
while :; do
  cur=
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)" = "0x1af4:0x1110" ] && cur="$cur ${d##*/}"
  done
  [ "$cur" != "$prev" ] && { echo "LV-IVSHMEM [$cur ]"; prev=$cur; }
  sleep 0.2
done
"""

MEMHOG_MIB = 160
LENDER_INIT = r"""memtotal() { set -- $(grep MemTotal /proc/meminfo); echo $2; }
base=$(memtotal)
echo "LV-BOOTED memtotal=$base"
( prev=$base; while :; do m=$(memtotal); [ "$m" != "$prev" ] && { echo "LV-MEMTOTAL $m"; prev=$m; }; sleep 0.2; done ) &
while [ $(memtotal) -le $base ]; do sleep 0.2; done
echo "LV-PLUGGED memtotal=$(memtotal)"
/memhog fill %d
echo "LV-MEMHOG-EXIT $?"
""" % MEMHOG_MIB

# ---------------------------------------------------------------- set up

t = time.monotonic()
vcma_parts = H.build_vcma_guest(ROOT, VCMA_INIT)  # exits 77 if the guest parts cannot be had
lender_parts = H.build_lender_guest(LENDER_INIT, vcma_parts["dir"])
log("guest parts built in %.1f s (kernel %s)" % (time.monotonic() - t, vcma_parts["kernel"]))

reaper = H.subreaper()
log("subreaper: %s" % ("on, QEMUs are reaped at once" if reaper else "could not be set"))
root = H.EmbedRoot()
conn = None
consoles = []


def teardown():
    H.cleanup(conn)
    root.kill_qemus()  # the scratch directory stays for a failed run's post-mortem


atexit.register(teardown)


def die(msg, console=None):
    for c in ([console] if console else consoles):
        print("---- console %s ----\n%s\n---- end of console ----" % (c.path, c.dump()))
    fail(msg)


t = time.monotonic()
conn = H.open_embed(root)
log("embed connection to %s opened in %.2f s" % (root.root, time.monotonic() - t))
ev = H.Events(conn)

# ---------------------------------------------------------------- 1. vcma guest boots

serial = root.path("vcma1.console")
con = H.SerialLog(serial)
consoles.append(con)
xml = H.vcma_guest_xml("vcma1", vcma_parts["kernel"], vcma_parts["initrd"], serial)
dom = conn.defineXML(xml)
t0 = time.monotonic()
dom.create()
t_create = time.monotonic() - t0
check(ev.wait(ev.started("vcma1"), 10) is not None, "vcma1: STARTED event")
if not con.expect(r"^LV-BOOTED", 90):
    die("vcma1 did not boot within 90 s", con)
t_boot = time.monotonic() - t0
log("vcma1: virDomainCreate %.2f s, start to LV-BOOTED on the serial log %.1f s" % (t_create, t_boot))
m = con.expect(r"^LV-EXIT insmod (\d+)", 30)
check(m is not None and m.group(1) == "0", "vcma1: vcma.ko loads in Debian's kernel")
check(con.expect(r"^LV-IVSHMEM \[ \]", 30) is not None, "vcma1: no ivshmem device before the attach")
md = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, H.VCMA_NS, 0)
check(ET.fromstring(md).get("class") == "camera", "vcma1: the vcma metadata reads back (%s)" % md)
check("<shmem" not in dom.XMLDesc(0), "vcma1: defined without <shmem>")

# ---------------------------------------------------------------- 2. live attach, detach

srv = IvshmemServer(root.path("vcma1.ivshmem"))
shm = H.shmem_xml("vcma-vcma1", srv.path)
t0 = time.monotonic()
dom.attachDeviceFlags(shm, lv.VIR_DOMAIN_AFFECT_LIVE)
t_attach = time.monotonic() - t0
conn_ev = srv.wait("connect", 10)
check(conn_ev is not None, "attach: QEMU connected to the ivshmem server (%.3f s after the call)"
      % ((conn_ev[0] - t0) if conn_ev else -1))
live = ET.fromstring(dom.XMLDesc(0))
shmems = live.findall("devices/shmem")
check(len(shmems) == 1 and shmems[0].find("model").get("type") == "ivshmem-doorbell"
      and shmems[0].find("server").get("path") == srv.path,
      "attach: the live XML has the ivshmem-doorbell <shmem> on the server's socket")
alias = shmems[0].find("alias").get("name")
addr = shmems[0].find("address")
pci = "0000:%02x:%02x.%x" % (int(addr.get("bus"), 16), int(addr.get("slot"), 16), int(addr.get("function"), 16))
check("<shmem" not in dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE), "attach: live only, the persistent XML has no <shmem>")
m = con.expect(r"^LV-IVSHMEM \[ (\S+) \]", 30)
t_seen = time.monotonic() - t0
check(m is not None and m.group(1) == pci, "attach: the guest sees PCI 1af4:1110 at %s (%s)"
      % (pci, m.group(0) if m else "nothing"))
log("attach: virDomainAttachDeviceFlags %.3f s, guest saw the device %.1f s after the call" % (t_attach, t_seen))

mark = ev.mark()
t0 = time.monotonic()
dom.detachDeviceFlags(shm, lv.VIR_DOMAIN_AFFECT_LIVE)
t_detach = time.monotonic() - t0
rm = ev.wait(ev.removed("vcma1", alias), 30, mark)
check(rm is not None, "detach: DEVICE_REMOVED for %s (%.2f s after the call)" % (alias, (rm[0] - t0) if rm else -1))
check(srv.wait("disconnect", 10) is not None, "detach: the ivshmem server saw QEMU disconnect")
check(con.expect(r"^LV-IVSHMEM \[ \]", 30) is not None, "detach: the guest no longer sees the device")
check("<shmem" not in dom.XMLDesc(0), "detach: gone from the live XML")
log("detach: virDomainDetachDeviceFlags returned in %.3f s" % t_detach)

# ---------------------------------------------------------------- 3. destroy -> STOPPED

mark = ev.mark()
t0 = time.monotonic()
dom.destroy()
t_destroy_ret = time.monotonic() - t0
st = ev.wait(ev.stopped("vcma1"), 10, mark)
check(st is not None and st[3][1] == lv.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, "destroy: STOPPED/DESTROYED event")
t_stopped = st[0] - t0
log("destroy: virDomainDestroy returned in %.3f s, STOPPED %.3f s after the call" % (t_destroy_ret, t_stopped))
probs = con.problems()
check(not probs, "vcma1: no WARNING/BUG/Oops on the console%s" % (": " + "; ".join(probs[:5]) if probs else ""))
dom.undefine()

# ---------------------------------------------------------------- 4. virtio-mem lender

serial = root.path("lender1.console")
con = H.SerialLog(serial)
consoles.append(con)
xml = H.lender_guest_xml("lender1", lender_parts["kernel"], lender_parts["initrd"], serial,
                         memory_mib=384, vmem_mib=256, requested_mib=0)
dom = conn.defineXML(xml)
t0 = time.monotonic()
dom.create()
m = con.expect(r"^LV-BOOTED memtotal=(\d+)", 90)
if not m:
    die("lender1 did not boot within 90 s", con)
base_kib = int(m.group(1))
log("lender1: start to LV-BOOTED %.1f s, MemTotal %d kB" % (time.monotonic() - t0, base_kib))
check(not [ln for ln in con.lines if "LV-INSMOD-FAILED" in ln], "lender1: the virtio_mem modules load")
md = ET.fromstring(dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, H.VCMA_NS, 0))
check(md.get("lend") == "yes", "lender1: metadata lend='yes'")
req, cur = H.virtio_mem_sizes(dom)
check(req == 0 and not cur, "lender1: virtio-mem requested 0, nothing plugged (requested %s, current %s)"
      % (req, cur))
vmem_alias = H.virtio_mem_element(dom).find("alias").get("name")

PLUG = 128
mark = ev.mark()
t0 = time.monotonic()
t_call = H.set_virtio_mem_requested(dom, PLUG)
e = ev.wait(ev.memory_size("lender1", PLUG * 1024), 30, mark)
check(e is not None and e[3][0] == vmem_alias, "plug: MEMORY_DEVICE_SIZE_CHANGE reports %d MiB plugged (%.2f s)"
      % (PLUG, (e[0] - t0) if e else -1))
t_plug = e[0] - t0
m = con.expect(r"^LV-PLUGGED memtotal=(\d+)", 30)
check(m is not None and int(m.group(1)) - base_kib == PLUG * 1024,
      "plug: MemTotal grew by %d MiB (%s kB -> %s kB)" % (PLUG, base_kib, m.group(1) if m else "?"))
req, cur = H.virtio_mem_sizes(dom)
check(req == PLUG * 1024 and cur == PLUG * 1024, "plug: live XML requested = current = %d KiB" % (PLUG * 1024))
log("plug: virDomainUpdateDeviceFlags %.3f s, size event for %d MiB %.2f s after the call" % (t_call, PLUG, t_plug))

passes = []
rx_pass = r"^MEMHOG pass=(\d+) bad=(\d+) mib=\d+ inrange=(-?\d+) pages=(\d+) ms=(\d+)"


def next_pass(timeout):
    m = con.expect(rx_pass, timeout)
    if not m:
        die("no memhog pass within %d s" % timeout, con)
    p = tuple(int(x) for x in m.groups())
    passes.append(p)
    return p


m = con.expect(r"^MEMHOG filled mib=\d+ inrange=(-?\d+)", 60)
if not m:
    die("memhog did not start", con)
p = next_pass(60)
check(p[2] > 0, "load: %d of memhog's %d pages sit in the plugged virtio-mem range (a pass takes %d ms)"
      % (p[2], p[3], p[4]))

mark = ev.mark()
t0 = time.monotonic()
H.set_virtio_mem_requested(dom, 0)
e = ev.wait(ev.memory_size("lender1", 0), 60, mark, on_idle=con.drain)
if e is None:
    die("unplug under load: no size event reporting 0 within 60 s (events: %s)"
        % [x for x in ev.log[mark:] if x[1] == "memory-size"], con)
t_unplug = e[0] - t0
steps = [(round(x[0] - t0, 2), x[3][1]) for x in ev.log[mark:] if x[1] == "memory-size"]
check(True, "unplug under load: size %d -> 0 MiB, event for 0 after %.2f s (events: %s)" % (PLUG, t_unplug, steps))
m = con.expect(r"^LV-MEMTOTAL %d$" % base_kib, 30)
check(m is not None, "unplug: the guest's MemTotal is back to %d kB" % base_kib)
con.drain()
con.pos = len(con.lines)  # what follows was printed after the unplug completed
next_pass(60)
p = next_pass(60)  # so this pass started after it
check(p[2] == 0, "unplug: none of memhog's pages are in the virtio-mem range any more (inrange=%d)" % p[2])
passes = [tuple(int(x) for x in m.groups()) for m in (re.search(rx_pass, ln) for ln in con.lines) if m]
during = [ln for ln, tm in zip(con.lines, con.times) if t0 < tm <= e[0] and re.search(rx_pass, ln)]
check(len(during) >= 1, "memhog: %d passes ran during the unplug" % len(during))
check(all(x[1] == 0 for x in passes), "memhog: zero bad words in all %d passes (before, during and after the unplug)"
      % len(passes))
req, cur = H.virtio_mem_sizes(dom)
check(req == 0 and cur == 0, "unplug: live XML requested = current = 0")

mark = ev.mark()
t0 = time.monotonic()
dom.destroy()
st = ev.wait(ev.stopped("lender1"), 10, mark)
check(st is not None, "lender1: destroyed, STOPPED after %.3f s" % ((st[0] - t0) if st else -1))
probs = con.problems()
check(not probs, "lender1: no WARNING/BUG/Oops on the console%s" % (": " + "; ".join(probs[:5]) if probs else ""))
dom.undefine()

ev.close()
H.cleanup(conn)
conn = None
root.remove()
shutil.rmtree(vcma_parts["dir"], ignore_errors=True)
log("timings: boot %.1f s, attach %.3f s (guest sees it %.1f s), detach %.3f s, destroy->STOPPED %.3f s, "
    "plug %d MiB %.2f s, unplug under load %.2f s; total %.0f s"
    % (t_boot, t_attach, t_seen, t_detach, t_stopped, PLUG, t_plug, t_unplug, time.monotonic() - T_START))
print("PASS")
