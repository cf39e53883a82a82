#!/usr/bin/env python3
"""vcmad as QEMU's ivshmem server, driven by a client that does what QEMU's
ivshmem-doorbell device and a guest driver do (no QEMU needed; tests/qemu boots the
real thing): the handshake QEMU expects, BAR2's layout, requests over the ring with
doorbell and irq eventfds, regions in the DMA window checked through vcmactl hash,
memory punched on free, one connection per guest, detach on disconnect, and a
hostile guest cut off while another is served.

usage: test_ivshmem.py VCMAD VCMACTL
"""
import fcntl
import mmap
import os
import re
import select
import socket
import subprocess
import sys
import time

import proto
from proto import Op, State
from vcmatest import (CtlConn, RingClient, Vcmad, check, ctl, fail, guests, hugepages, hugepages_free, partial,
                      set_tools, sim_attach_raw, vcmactl, wait_until)

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20

CONFIG = """
[daemon]
max_guests = 8
[machine]
memory = 512M
[pool main]
size = 64M
[pool camera]
size = 16M
mode = exclusive
bind = class:camera
[pool big]
size = 96M
mode = exclusive
bind = guest:cam0
[guest cam0]
backend = qemu
class = camera
[guest evil]
backend = qemu
[guest huge]
backend = qemu
hugepages = on
"""

d = Vcmad(VCMAD, CONFIG)
r = subprocess.run([VCMAD, "--check-config", "-c", d.conf], capture_output=True, text=True)
check(r.returncode == 0 and "3 QEMU guest(s)" in r.stdout, "vcmad --check-config counts the [guest] sections")
bad = os.path.join(d.dir, "bad.conf")
with open(bad, "w") as f:
    f.write("[pool a]\nsize = 4M\n[guest g]\nclass = x\n")
r = subprocess.run([VCMAD, "--check-config", "-c", bad], capture_output=True, text=True)
check(r.returncode == 2 and "guest g: no backend (expected 'backend = qemu', 'backend = sim' or 'backend = xen')" in r.stderr,
      "a [guest] section without a backend is refused with the reason")


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


class FakeQemu(RingClient):
    """The ivshmem-doorbell device's side of the server protocol (PROTOCOL.md 9.2),
    plus a guest driver's use of the ring (RingClient)."""

    def __init__(self, name):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(os.path.join(d.rundir, name + ".ivshmem"))
        self.s.settimeout(5)
        self.msgs = []
        # QEMU reads until the shm message, then the peers' eventfds
        for _ in proto.IVSHMEM_HANDSHAKE:
            data, fds, _, _ = socket.recv_fds(self.s, proto.IVSHMEM_MSG.size, 1)
            if len(data) != proto.IVSHMEM_MSG.size:
                fail("%s: short handshake message %r" % (name, data))
            self.msgs.append((proto.IVSHMEM_MSG.unpack(data)[0], fds[0] if fds else None))
        fd = {what: self.msgs[i][1] for i, (_, _, what) in enumerate(proto.IVSHMEM_HANDSHAKE) if what}
        self.shm_fd = fd["shm"]
        self.size = os.fstat(self.shm_fd).st_size
        super().__init__(mmap.mmap(self.shm_fd, self.size), fd["kick"], fd["irq"])
        self.magic, self.guest_id = self.ctrl.magic, self.ctrl.guest_id
        self.window_off, self.window_size = self.ctrl.window_off, self.ctrl.window_size

    def shape(self):
        return [(v, fd is not None) for v, fd in self.msgs]

    def committed(self):
        """Bytes of BAR2's memfd that hold memory."""
        return os.fstat(self.shm_fd).st_blocks * 512

    def window(self, off, n):
        return self.m[self.window_off + off:self.window_off + off + n]

    def fill(self, off, data):
        """Write data into the window at off, as the guest would."""
        self.m[self.window_off + off:self.window_off + off + len(data)] = data

    def close(self):
        self.m.close()
        for _, fd in self.msgs:
            if fd is not None:
                os.close(fd)
        self.s.close()


# A control client stalled half-way through a request must not hold up QEMU, which
# reads the handshake synchronously while it realizes the device.
stalled = CtlConn(d, timeout=5)
stalled.send(b'{"version":1,"id":5,"cmd":"sta')
q = FakeQemu("cam0")
check(q.magic == proto.MAGIC, "QEMU gets its handshake while a control client is stalled mid-request")
stalled.send(b'tus"}\n')
check(stalled.line().get("id") == 5, "and the stalled client is answered once it finishes")
stalled.close()
check(q.shape() == [(v, has_fd) for v, has_fd, _ in proto.IVSHMEM_HANDSHAKE]
      == [(0, False), (1, False), (-1, True), (0, True), (1, True), (1, True)],
      "handshake: version 0, peer id 1, -1 with the memfd, vcmad's doorbell fd (peer 0), two irq fds: %s"
      % q.shape())
check(q.size & (q.size - 1) == 0 and q.size >= q.window_off + q.window_size,
      "BAR2 is a power of two (%d MiB) holding the window" % (q.size >> 20))
check(q.magic == proto.MAGIC and q.state() == State.READY and q.window_off == proto.IVSHMEM_WINDOW_OFF == 2 * MiB
      and q.window_size == 176 * MiB,
      "control page at BAR2 offset 0: READY, window at 2 MiB spanning the pools (176 MiB)")
seals = fcntl.fcntl(q.shm_fd, fcntl.F_GET_SEALS)
check(seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) == fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW,
      "the memfd is sealed against shrinking and growing")

check(q.hello().status == 0, "HELLO over the doorbell answered OK with an irq")
g = guests(d)
check(g.get("cam0", {}).get("role") == "qemu" and g["cam0"]["class"] == "camera",
      "vcmactl guests: cam0 is a qemu guest of class camera")

# a region: contiguous in the window; the guest writes, the host hashes the same bytes
a = q.call(Op.ALLOC, length=4 * MiB, name="camera")
h, bus, length = a.handle, a.bus, a.length
check(a.status == 0 and length == 4 * MiB and a.gpa == bus and bus % (4 * MiB) == 0 and bus + length <= q.window_size,
      "ALLOC 4 MiB from the camera pool: gpa = bus = window offset %#x" % bus)
committed0 = q.committed()  # the shared area so far: nothing else is committed
check(q.window(bus, length) == bytes(length), "the region reads as zeros")
pattern = bytes((i * 7 + (i >> 12)) & 0xff for i in range(length))
q.fill(bus, pattern)
check(q.committed() - committed0 >= length,
      "writing the region commits its memory in the memfd (%d KiB)" % (q.committed() >> 10))
g = guests(d)["cam0"]
check(g["bar_bytes"] == q.size and g["window_bytes"] == q.window_size and g["committed_bytes"] == q.committed(),
      "vcmactl guests shows BAR2's size and the memory it holds (%d KiB)" % (g["committed_bytes"] >> 10))
hr = ctl(d, "hash", hex(h))
check(int(hr["fnv1a64"], 16) == fnv1a64(pattern) and hr["size_bytes"] == length,
      "vcmactl hash sees the guest's bytes (fnv1a64 %s)" % hr["fnv1a64"])

# hash reads at most 64 MiB while vcmad's loop waits
b = q.call(Op.ALLOC, length=72 * MiB, name="big")
r = vcmactl(d, "hash", hex(b.handle))
check(b.status == 0 and r.returncode == 1 and "(EFBIG)" in r.stderr, "vcmactl hash of a 72 MiB region: EFBIG, exit 1")
check(q.call(Op.FREE, handle=b.handle).status == 0, "FREE it")

# a shared-pool region lands at its pool's offset in the window
a2 = q.call(Op.ALLOC, length=2 * MiB, name="main")
h2, bus2, len2 = a2.handle, a2.bus, a2.length
regions = {int(r["handle"], 16): r for r in ctl(d, "regions", "--guest", "cam0")["regions"]}
check(a2.status == 0 and regions[h2]["pool"] == "main" and regions[h]["pool"] == "camera" and bus2 + len2 <= 176 * MiB,
      "ALLOC 2 MiB from the shared pool lands at that pool's place in the window")

# the guest scribbles on a page outside its regions; an ALLOC there gets zeros anyway
q.fill(bus2, b"\x55" * len2)
before = q.committed()
check(q.call(Op.FREE, handle=h2).status == 0, "FREE the shared-pool region")
check(before - q.committed() >= len2, "FREE gives the region's memory back to the host")
check(q.window(bus2, len2) == bytes(len2), "freed memory is punched: zeros")
q.fill(bus2, b"\xaa" * 4096)
a3 = q.call(Op.ALLOC, length=2 * MiB, name="main")
bus3, len3 = a3.bus, a3.length
check(a3.status == 0 and bus3 == bus2 and q.window(bus3, len3) == bytes(len3),
      "a new region over bytes the guest scribbled there reads as zeros")

# the guest writes outside its regions: in the window's free part and past the window;
# vcmad's audit (once a second) gives that memory back and leaves the regions alone
q.fill(bus3, b"\x33" * len3)
held = q.committed()
stray_off = q.window_off + q.window_size - 16 * MiB
q.m[stray_off:stray_off + 8 * MiB] = b"\xee" * (8 * MiB)
q.m[q.size - MiB:q.size] = b"\xee" * MiB
wait_until(lambda c: c <= held, 5, "vcmad's audit to release the stray memory (%d KiB held before)" % (held >> 10),
           probe=q.committed)
check(q.committed() <= held, "vcmad released it within seconds (%d KiB committed, %d before)"
      % (q.committed() >> 10, held >> 10))
check(q.m[stray_off:stray_off + 8 * MiB] == bytes(8 * MiB) and q.m[q.size - MiB:q.size] == bytes(MiB),
      "the stray bytes read as zeros")
check(int(ctl(d, "hash", hex(h))["fnv1a64"], 16) == fnv1a64(pattern) and q.window(bus3, len3) == b"\x33" * len3,
      "the guest's regions kept their bytes")
g = guests(d)["cam0"]
check(g["stray_reclaims"] >= 1 and g["stray_bytes"] >= 9 * MiB,
      "vcmactl guests counts the 9 MiB committed and released: %d reclaim(s), %d KiB"
      % (g["stray_reclaims"], g["stray_bytes"] >> 10))
# logged the first time and then at most once a minute: the first may be the audit that
# caught the bytes scribbled over the freed region above, before the mark
check(re.search(r"guest \d+ \(cam0\) wrote outside its regions: \d+ KiB released", d.logtext()),
      "and vcmad logged it")
# a little stray memory is released too: less than the unused part of the shared area
# before the window (which the audit once counted whole, so that stray bytes written
# just after one of its punches stayed for good). Reading the holes above committed
# zero pages (shmem allocates on a read fault): the audit releases those first.
wait_until(lambda c: c <= held, 5, "vcmad's audit to release the pages the reads committed (%d KiB before)"
           % (held >> 10), probe=q.committed)
q.m[stray_off:stray_off + 512 * 1024] = b"\x77" * (512 * 1024)
wrote = q.committed()
check(wrote >= held + 512 * 1024 or wrote <= held,  # or an audit was quicker than this look
      "512 KiB written in the window's free part commit memory (%d KiB, %d before)" % (wrote >> 10, held >> 10))
wait_until(lambda c: c <= held, 5, "vcmad's audit to release 512 KiB of stray memory (%d KiB held before)"
           % (held >> 10), probe=q.committed)
check(q.m[stray_off:stray_off + 512 * 1024] == bytes(512 * 1024), "and they read as zeros")

# one QEMU per guest socket
s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s2.connect(os.path.join(d.rundir, "cam0.ivshmem"))
s2.settimeout(5)
check(s2.recv(8) == b"", "a second connection to an attached guest's socket is closed at once")
s2.close()

# a hostile guest: ring index overflow -> DEAD, final irq, connection closed
e = FakeQemu("evil")
e.hello()
mark = d.log_mark()
e.set_ring("req_prod", e.n + 1000)
e.kick()
check(e.irq_pending(5), "the hostile guest gets its final irq")
check(e.state() == State.DEAD, "and its control page says DEAD")
check(e.s.recv(8) == b"", "vcmad closed the hostile guest's connection")
check("evil" not in guests(d), "the hostile guest is gone from vcmactl guests")
check(re.search(r"guest \d+ \(evil\): protocol violation: request ring overflow", d.log_since(mark)),
      "vcmad logged why it cut the guest off")
check(q.call(Op.ALLOC, length=1 * MiB).status == 0, "cam0 is still served after the hostile guest was cut off")
e.close()

# hugetlbfs backing: regions in huge pages, committed only while held
need = q.size // (2 * MiB)  # QEMU's mapping reserves huge pages for the whole BAR
with hugepages(need) as free_huge:
    if free_huge < need:
        partial("hugepages = on not tested: %d huge pages free, %d needed (needs root and free memory)"
                % (free_huge, need))
    else:
        hq = FakeQemu("huge")
        hq.hello()
        free0 = hugepages_free()
        a = hq.call(Op.ALLOC, length=2 * MiB, name="main")
        hh, hbus, hlen = a.handle, a.bus, a.length
        hq.fill(hbus, b"\x77" * hlen)
        hr = ctl(d, "hash", hex(hh))
        check(a.status == 0 and int(hr["fnv1a64"], 16) == fnv1a64(b"\x77" * hlen),
              "hugepages = on: a 2 MiB region in a huge-page memfd, bytes checked by hash")
        check(hugepages_free() == free0 - 1, "writing it took one huge page")
        hstray = hq.window_off + hq.window_size - 8 * MiB
        hq.m[hstray:hstray + 4 * MiB] = b"\xee" * (4 * MiB)
        wait_until(lambda n: n == free0 - 1, 5, "vcmad's audit to release the two stray huge pages",
                   probe=hugepages_free)
        check(hugepages_free() == free0 - 1 and hq.window(hbus, hlen) == b"\x77" * hlen,
              "two huge pages written outside the region are released by the audit; the region keeps its bytes")
        st = hq.call(Op.FREE, handle=hh).status
        check(st == 0 and hugepages_free() == free0 and hq.window(hbus, hlen) == bytes(hlen),
              "FREE punched the huge page back: zeros, and the page is free again")
        # two 1 MiB regions sharing one huge page: the page goes back with the last
        strays0 = guests(d)["huge"]["stray_reclaims"]
        ra = hq.call(Op.ALLOC, length=MiB, name="main")
        rb = hq.call(Op.ALLOC, length=MiB, name="main")
        check(ra.status == 0 and rb.status == 0 and ra.bus // (2 * MiB) == rb.bus // (2 * MiB),
              "two 1 MiB regions in one huge page (window offsets %#x, %#x)" % (ra.bus, rb.bus))
        hq.fill(ra.bus, b"\x11" * ra.length)
        hq.fill(rb.bus, b"\x22" * rb.length)
        check(hugepages_free() == free0 - 1, "writing both takes one huge page")
        check(hq.call(Op.FREE, handle=ra.handle).status == 0 and hugepages_free() == free0 - 1
              and hq.window(rb.bus, rb.length) == b"\x22" * rb.length
              and hq.window(ra.bus, ra.length) == bytes(ra.length),
              "freeing one zeroes its half; the page stays for the other, whose bytes are intact")
        check(hq.call(Op.FREE, handle=rb.handle).status == 0 and hugepages_free() == free0,
              "freeing the other gives the whole huge page back")
        time.sleep(1.2)  # the thing under test: a whole audit period (1 s) passes and finds nothing
        check(guests(d)["huge"]["stray_reclaims"] == strays0, "and vcmad's audit found nothing more to clean up")
        hq.close()

# QEMU goes away: the guest detaches and its regions are freed; a new QEMU attaches
gid = q.guest_id
q.close()
wait_until(lambda: ctl(d, "regions")["count"] == 0, 5, "vcmad to free cam0's regions after QEMU's disconnect")
check(ctl(d, "regions")["count"] == 0, "QEMU's disconnect detached cam0 and freed its regions")
q = FakeQemu("cam0")
check(q.guest_id != gid and q.hello().status == 0, "a new QEMU attaches to the same socket")
check(q.call(Op.ALLOC, length=8 * MiB, name="camera").status == 0, "and allocates")
q.close()

# a QEMU that reconnects at once is served: its old connection's EOF is seen first
refused = 0
mark = d.log_mark()
for i in range(50):
    r = FakeQemu("evil")
    r.close()
    r2 = FakeQemu("evil")  # right behind the close
    refused += r2.magic != proto.MAGIC
    r2.close()
check(refused == 0 and "a second QEMU connected" not in d.log_since(mark),
      "50 immediate reconnects to one guest's socket: every one got its handshake")

# the eventfds QEMU holds share vcmad's open file descriptions: making the irq eventfd
# blocking and filling it must not block vcmad (PROTOCOL.md 8.4); the guest is cut off
q = FakeQemu("cam0")
q.hello()
e = FakeQemu("evil")
e.hello()
mark = d.log_mark()
os.set_blocking(e.irq_fd, True)
os.write(e.irq_fd, (0xfffffffffffffffe).to_bytes(8, "little"))
slot = proto.slot_offset(e.req_off, e.n, e.slots)
proto.REQ.pack_into(e.m, slot, id=77, op=Op.QUERY)
e.n += 1
e.set_ring("rsp_event", e.n)  # ask for the irq that cannot be raised
e.set_ring("req_prod", e.n)
e.kick()
wait_until(lambda: e.state() == State.DEAD, 5, "vcmad to cut off the guest that holds its irq eventfd full")
check("irq eventfd made blocking and held full" in d.log_since(mark), "vcmad logged why")
check(q.call(Op.ALLOC, length=1 * MiB).status == 0, "cam0 is served meanwhile")
e.close()
# and a kick eventfd made blocking and drained by QEMU's side costs vcmad nothing
e = FakeQemu("evil")
e.hello()
os.set_blocking(e.kick_fd, True)
for i in range(200):
    e.kick()
    try:
        # RWF_NOWAIT: the fd is blocking now, and vcmad may read the kick first (a
        # plain read here would then wait forever: the test's hang, not vcmad's)
        os.preadv(e.kick_fd, [bytearray(8)], -1, os.RWF_NOWAIT)
    except BlockingIOError:
        pass
check(e.call(Op.QUERY, name="main").status == 0 and q.call(Op.QUERY, name="main").status == 0,
      "kicks drained behind vcmad's back: both guests still answered")
e.close()
q.close()
d.stop()

# max_guests full of sim guests: a configured QEMU guest still has its slot
d = Vcmad(VCMAD, """
[daemon]
max_guests = 2
[machine]
memory = 128M
[pool main]
size = 32M
[guest cam0]
backend = qemu
""")
sims = [sim_attach_raw(d.sock, "s%d" % i, refused_ok=True) for i in range(2)]
check(sims[0][1].status == proto.Status.OK and sims[1][1].status == proto.Status.LIMIT,
      "max_guests = 2 with one QEMU guest configured: one sim guest attaches, the next gets LIMIT (%s)"
      % [x[1].status for x in sims])
q = FakeQemu("cam0")
check(q.hello().status == 0, "the QEMU guest attaches into the slot kept for it")
q.close()
d.stop()
check(not os.path.exists(os.path.join(d.rundir, "cam0.ivshmem")), "vcmad removed its ivshmem sockets")
print("PASS")
