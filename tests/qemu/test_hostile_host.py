#!/usr/bin/env python3
"""vcma.ko against a hostile host (PROTOCOL.md 5.3 and 8.3): the guest trusts the
host's shared memory no more than vcmad trusts a guest's.

This test is its own ivshmem server, written from PROTOCOL.md alone (a second
implementation of the host side, so it also checks the spec): it lays out the shared
area as 2.5 says, answers HELLO, and then answers the guest's ALLOCs with, in turn,
a region outside the DMA window (the call must fail with EIO and the driver must FREE
the handle), a good region (whose posted FREE it refuses: the driver must log it),
and a response index that runs 1000 ahead (the driver must call the host broken,
fail the call with EIO, and send nothing more). vcma.ko must then unload cleanly,
with no WARNING, BUG or Oops in the guest's dmesg (slub_debug on).

usage: test_hostile_host.py SOURCE_ROOT
Exit 77 (skip) only when QEMU, the guest kernel, its headers or busybox cannot be had.
"""
import errno
import mmap
import os
import select
import socket
import struct
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

from vcmatest import check  # noqa: E402
import guestbuild  # noqa: E402

ROOT = sys.argv[1]
MiB = 1 << 20
MAGIC, READY, CONNECTED = 0x414d4356, 1, 2
HELLO, ALLOC, FREE = 1, 2, 3
OK, NO_REGION = 0, 9
REQ_OFF, SLOTS, EVT_OFF = 4096, 64, 4096 + 8192
WINDOW_OFF, WINDOW_SIZE, BAR = 2 * MiB, 4 * MiB, 8 * MiB
BAD_HANDLE, GOOD_HANDLE = 0x200000002, 0x100000001

INIT = r"""insmod /vcma.ko; echo "VCMA-EXIT insmod $?"
/vcma-e2e try 1
/vcma-e2e try 1
/vcma-e2e try 1
/vcma-e2e try 1
rmmod vcma; echo "VCMA-EXIT rmmod $?"
echo VCMA-DMESG-BEGIN
dmesg
echo VCMA-DMESG-END
poweroff -f
"""


class HostileHost:
    """One ivshmem-doorbell device's server; ALLOC answers follow self.plan."""

    def __init__(self, path):
        self.plan = ["outside", "good", "wild"]
        self.seen = []    # (op, handle) of every request taken
        self.lock = threading.Lock()
        self.shm = os.memfd_create("hostile-host", os.MFD_CLOEXEC)
        os.ftruncate(self.shm, BAR)
        self.m = mmap.mmap(self.shm, BAR)
        struct.pack_into("<IHHIIQQIIIIIIQQIIQ", self.m, 0, MAGIC, 1, 0, 128, READY, 3, 0, 1, 7,
                         REQ_OFF, SLOTS, EVT_OFF, SLOTS, WINDOW_OFF, WINDOW_SIZE, 32, 16, (1 << 64) - 1)
        struct.pack_into("<I", self.m, REQ_OFF + 4, 1)  # req_event: kick me at the first request
        struct.pack_into("<I", self.m, EVT_OFF + 4, 1)
        self.kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.irq = [os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)]
        self.req_cons = self.rsp_prod = 0
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ls.bind(path)
        self.ls.listen(1)
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _handshake(self, c):
        for v, fd in ((0, None), (1, None), (-1, self.shm), (0, self.kick), (1, self.irq[0]), (1, self.irq[1])):
            socket.send_fds(c, [struct.pack("<q", v)], [fd] if fd is not None else [])

    def _respond(self, rid, status=OK, handle=0, gpa=0, bus=0, length=0, v0=0, v1=0):
        slot = REQ_OFF + 64 + (self.rsp_prod % SLOTS) * 64
        struct.pack_into("<QiIQQQQQQ", self.m, slot, rid, status, 0, handle, gpa, bus, length, v0, v1)
        self.rsp_prod += 1
        struct.pack_into("<I", self.m, REQ_OFF + 8, self.rsp_prod)

    def _take(self, req):
        rid, op, _, handle, length, _, arg1, _ = req
        with self.lock:
            self.seen.append((op, handle))
        if op == HELLO:
            struct.pack_into("<Q", self.m, 24, arg1 & 3)
            struct.pack_into("<I", self.m, 12, CONNECTED)
            self._respond(rid, v0=arg1 & 3, v1=1 << 16)
        elif op == ALLOC:
            what = self.plan.pop(0) if self.plan else "good"
            if what == "outside":  # a region starting at the window's end
                self._respond(rid, handle=BAD_HANDLE, gpa=WINDOW_SIZE, bus=WINDOW_SIZE, length=length)
            elif what == "good":
                self._respond(rid, handle=GOOD_HANDLE, length=length)
            else:  # answers for 1000 requests that were never sent
                self.rsp_prod += 1000
                struct.pack_into("<I", self.m, REQ_OFF + 8, self.rsp_prod)
        elif op == FREE:
            self._respond(rid, status=OK if handle == BAD_HANDLE else NO_REGION, handle=handle)
        else:
            self._respond(rid, status=1)

    def _serve(self):
        c, _ = self.ls.accept()
        self._handshake(c)
        self.conn = c
        while not self.stop:
            if not select.select([self.kick], [], [], 0.2)[0]:
                continue
            try:
                os.read(self.kick, 8)
            except BlockingIOError:
                continue
            while True:
                prod = struct.unpack_from("<I", self.m, REQ_OFF)[0]
                while self.req_cons < prod:  # a test peer: this guest is not the one under test
                    slot = REQ_OFF + 64 + (self.req_cons % SLOTS) * 64
                    req = struct.unpack_from("<QIIQQQQ16s", self.m, slot)  # copied once
                    self.req_cons += 1
                    self._take(req)
                struct.pack_into("<I", self.m, REQ_OFF + 4, self.req_cons + 1)
                if struct.unpack_from("<I", self.m, REQ_OFF)[0] == self.req_cons:
                    break
            os.write(self.irq[0], struct.pack("<Q", 1))

    def requests(self):
        with self.lock:
            return list(self.seen)

    def wait_for(self, req, timeout=5):
        """Has req come (a posted FREE arrives a moment after the guest moved on)?"""
        deadline = time.time() + timeout
        while req not in self.requests() and time.time() < deadline:
            time.sleep(0.05)
        return req in self.requests()


parts = guestbuild.prepare(ROOT)  # exits 77 when the parts cannot be had
sock = os.path.join(tempfile.mkdtemp(prefix="vcma-hostile-host-"), "host.ivshmem")
host = HostileHost(sock)
vm = guestbuild.boot(parts, INIT, [(sock, "0000:00:04.0")], append="slub_debug=FZP")
try:
    check(vm.expect(r"VCMA-EXIT insmod (\d+)", 120).group(1) == "0" and host.requests()[:1] == [(HELLO, 0)],
          "vcma.ko attaches to a server written from PROTOCOL.md alone (HELLO answered)")

    e = int(vm.expect(r"VCMA-TRY errno=(\d+)", 60).group(1))
    check(e == errno.EIO and host.wait_for((FREE, BAD_HANDLE)),
          "an ALLOC answered with a region outside the DMA window fails with EIO, and the driver FREEs the handle")

    e = int(vm.expect(r"VCMA-TRY errno=(\d+)", 60).group(1))
    check(e == 0 and host.wait_for((FREE, GOOD_HANDLE)),
          "a good answer works; the driver posts its FREE, which this host refuses")

    e = int(vm.expect(r"VCMA-TRY errno=(\d+)", 60).group(1))
    sent = len(host.requests())
    check(e == errno.EIO, "a response index 1000 ahead of the requests: the call fails with EIO")
    e = int(vm.expect(r"VCMA-TRY errno=(\d+)", 60).group(1))
    check(e == errno.EIO and len(host.requests()) == sent,
          "and the host is broken from then on: the next call fails with EIO and sends nothing")
    check(vm.expect(r"VCMA-EXIT rmmod (\d+)", 60).group(1) == "0", "rmmod vcma: clean unload from a broken host")

    dmesg = vm.dmesg(60)
    said = "\n".join(dmesg)
    check("malformed ALLOC answer" in said and "failed at vcmad" in said and "host unusable (-5)" in said,
          "dmesg says what was wrong: the malformed answer, the refused FREE, the broken host")
    bad = guestbuild.dmesg_problems(dmesg)
    check(dmesg and not bad, "no WARNING, BUG or Oops in the guest's dmesg (%d lines)%s"
          % (len(dmesg), "".join("\n  " + line for line in bad)))
    vm.wait_exit(60)
finally:
    vm.kill()
    host.stop = True
print("PASS")
