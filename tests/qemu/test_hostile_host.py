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
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import proto  # noqa: E402
from proto import CTRL, REQ, RING_HDR, RSP, Op, State, Status  # noqa: E402
from vcmatest import check, poll_until, tmpdir  # noqa: E402
import guestbuild  # noqa: E402

ROOT = sys.argv[1]
MiB = 1 << 20
HELLO, ALLOC, FREE = Op.HELLO, Op.ALLOC, Op.FREE
REQ_OFF, SLOTS = proto.PAGE, 64
EVT_OFF = REQ_OFF + proto.page_round(proto.ring_bytes(SLOTS))  # the event ring: the first page past the request ring
WINDOW_OFF, WINDOW_SIZE, BAR = proto.IVSHMEM_WINDOW_OFF, 4 * MiB, 8 * MiB
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
        CTRL.pack_into(self.m, 0, state=State.READY, host_features=proto.FEATURES_KNOWN, generation=1, guest_id=7,
                       req_off=REQ_OFF, req_slots=SLOTS, evt_off=EVT_OFF, evt_slots=SLOTS, window_off=WINDOW_OFF,
                       window_size=WINDOW_SIZE, max_outstanding=32, max_regions=16, max_bytes=(1 << 64) - 1)
        RING_HDR.put(self.m, REQ_OFF, "req_event", 1)  # kick me at the first request
        proto.EVT_HDR.put(self.m, EVT_OFF, "evt_event", 1)
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
        fds = {"shm": self.shm, "kick": self.kick, "irq": self.irq[0], "irq1": self.irq[1]}
        for v, _, what in proto.IVSHMEM_HANDSHAKE:
            socket.send_fds(c, [proto.IVSHMEM_MSG.pack(v)], [fds[what]] if what else [])

    def _respond(self, rid, **rsp):
        RSP.pack_into(self.m, proto.slot_offset(REQ_OFF, self.rsp_prod, SLOTS), id=rid, **rsp)
        self.rsp_prod += 1
        RING_HDR.put(self.m, REQ_OFF, "rsp_prod", self.rsp_prod)

    def _take(self, req):
        with self.lock:
            self.seen.append((req.op, req.handle))
        if req.op == HELLO:
            features = req.arg1 & proto.FEATURES_KNOWN
            CTRL.put(self.m, 0, "guest_features", features)
            CTRL.put(self.m, 0, "state", State.CONNECTED)
            self._respond(req.id, val0=features, val1=proto.VERSION)
        elif req.op == ALLOC:
            what = self.plan.pop(0) if self.plan else "good"
            if what == "outside":  # a region starting at the window's end
                self._respond(req.id, handle=BAD_HANDLE, gpa=WINDOW_SIZE, bus=WINDOW_SIZE, length=req.length)
            elif what == "good":
                self._respond(req.id, handle=GOOD_HANDLE, length=req.length)
            else:  # answers for 1000 requests that were never sent
                self.rsp_prod += 1000
                RING_HDR.put(self.m, REQ_OFF, "rsp_prod", self.rsp_prod)
        elif req.op == FREE:
            self._respond(req.id, status=Status.OK if req.handle == BAD_HANDLE else Status.NO_REGION,
                          handle=req.handle)
        else:
            self._respond(req.id, status=Status.INVALID)

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
                prod = RING_HDR.get(self.m, REQ_OFF, "req_prod")
                while self.req_cons < prod:  # a test peer: this guest is not the one under test
                    req = REQ.unpack(self.m, proto.slot_offset(REQ_OFF, self.req_cons, SLOTS))  # copied once
                    self.req_cons += 1
                    self._take(req)
                RING_HDR.put(self.m, REQ_OFF, "req_event", self.req_cons + 1)
                if RING_HDR.get(self.m, REQ_OFF, "req_prod") == self.req_cons:
                    break
            os.write(self.irq[0], (1).to_bytes(8, "little"))

    def requests(self):
        with self.lock:
            return list(self.seen)

    def wait_for(self, req, timeout=5):
        """Has req come (a posted FREE arrives a moment after the guest moved on)?"""
        return poll_until(lambda: req in self.requests(), timeout)


parts = guestbuild.prepare(ROOT)  # exits 77 when the parts cannot be had
sock = os.path.join(tmpdir("vcma-hostile-host-"), "host.ivshmem")
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
