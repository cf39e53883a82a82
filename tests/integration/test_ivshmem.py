#!/usr/bin/env python3
"""vcmad as QEMU's ivshmem server, driven by a client that does what QEMU's
ivshmem-doorbell device and a guest driver do (no QEMU needed; tests/qemu boots the
real thing): the handshake QEMU expects, BAR2's layout, requests over the ring with
doorbell and irq eventfds, regions in the DMA window checked through vcmactl hash,
memory punched on free, one connection per guest, detach on disconnect, and a
hostile guest cut off while another is served.

usage: test_ivshmem.py VCMAD VCMACTL
"""
import json
import mmap
import os
import select
import re
import socket
import struct
import subprocess
import sys
import time

from vcmatest import Vcmad, check, fail

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
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
check(r.returncode == 2 and "guest g: no backend (expected 'backend = qemu')" in r.stderr,
      "a [guest] section without backend = qemu is refused with the reason")


def ctl(*args):
    r = subprocess.run([VCMACTL, "-s", os.path.join(d.rundir, "vcmad-ctl.sock"), "--json", *args],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        fail("vcmactl %s: %s" % (" ".join(args), r.stderr))
    return json.loads(r.stdout)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


class FakeQemu:
    """The ivshmem-doorbell device's side of the server protocol, plus a guest
    driver's use of the ring."""

    def __init__(self, name):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(os.path.join(d.rundir, name + ".ivshmem"))
        self.s.settimeout(5)
        self.msgs = []
        # QEMU reads until the shm message, then the peers' eventfds
        for _ in range(6):
            data, fds, _, _ = socket.recv_fds(self.s, 8, 1)
            if len(data) != 8:
                fail("%s: short handshake message %r" % (name, data))
            self.msgs.append((struct.unpack("<q", data)[0], fds[0] if fds else None))
        self.shm_fd = self.msgs[2][1]
        self.kick_fd = self.msgs[3][1]
        self.irq_fd = self.msgs[4][1]
        self.size = os.fstat(self.shm_fd).st_size
        self.m = mmap.mmap(self.shm_fd, self.size)
        (self.magic, _, _, _, self.state, _, _, _, self.guest_id, self.req_off, self.slots, _, _,
         self.window_off, self.window_size) = struct.unpack_from("<IHHIIQQIIIIIIQQ", self.m, 0)
        self.n = 0

    def shape(self):
        return [(v, fd is not None) for v, fd in self.msgs]

    def irq_pending(self, timeout):
        return bool(select.select([self.irq_fd], [], [], timeout)[0])

    def call(self, op, handle=0, length=0, a0=0, a1=0, name=b""):
        slot = self.req_off + 64 + (self.n % self.slots) * 64
        struct.pack_into("<QIIQQQQ16s", self.m, slot, 1000 + self.n, op, 0, handle, length, a0, a1, name)
        self.n += 1
        struct.pack_into("<I", self.m, self.req_off, self.n)
        os.write(self.kick_fd, struct.pack("<Q", 1))  # the doorbell: QEMU writes vcmad's eventfd
        if not self.irq_pending(5):
            fail("no irq for request %d" % self.n)
        os.read(self.irq_fd, 8)
        if struct.unpack_from("<I", self.m, self.req_off + 8)[0] != self.n:
            fail("irq without a response")
        rid, status, _, handle, gpa, bus, length, v0, v1 = struct.unpack_from("<QiIQQQQQQ", self.m, slot)
        struct.pack_into("<I", self.m, self.req_off + 12, self.n + 1)  # rsp_event: irq me for the next one
        if rid != 1000 + self.n - 1:
            fail("response id %d for request %d" % (rid, 1000 + self.n - 1))
        return status, handle, gpa, bus, length, v0, v1

    def window(self, off, n):
        return self.m[self.window_off + off:self.window_off + off + n]

    def close(self):
        self.m.close()
        for _, fd in self.msgs:
            if fd is not None:
                os.close(fd)
        self.s.close()


# A control client stalled half-way through a request must not hold up QEMU, which
# reads the handshake synchronously while it realizes the device.
stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
stalled.connect(os.path.join(d.rundir, "vcmad-ctl.sock"))
stalled.sendall(b'{"version":1,"id":5,"cmd":"sta')
q = FakeQemu("cam0")
check(q.magic == 0x414d4356, "QEMU gets its handshake while a control client is stalled mid-request")
stalled.settimeout(5)
stalled.sendall(b'tus"}\n')
check(json.loads(stalled.makefile().readline()).get("id") == 5, "and the stalled client is answered once it finishes")
stalled.close()
check(q.shape() == [(0, False), (1, False), (-1, True), (0, True), (1, True), (1, True)],
      "handshake: version 0, peer id 1, -1 with the memfd, vcmad's doorbell fd (peer 0), two irq fds: %s"
      % q.shape())
check(q.size & (q.size - 1) == 0 and q.size >= q.window_off + q.window_size,
      "BAR2 is a power of two (%d MiB) holding the window" % (q.size >> 20))
check(q.magic == 0x414d4356 and q.state == 1 and q.window_off == 2 * MiB and q.window_size == 176 * MiB,
      "control page at BAR2 offset 0: READY, window at 2 MiB spanning the pools (176 MiB)")
seals = 0
try:
    import fcntl
    seals = fcntl.fcntl(q.shm_fd, 1034)  # F_GET_SEALS
except OSError:
    pass
check(seals & 0x6 == 0x6, "the memfd is sealed against shrinking and growing")

st, *_ = q.call(1, a0=1 << 16, a1=3)
check(st == 0, "HELLO over the doorbell answered OK with an irq")
guests = {g["name"]: g for g in ctl("guests")["guests"]}
check(guests.get("cam0", {}).get("role") == "qemu" and guests["cam0"]["class"] == "camera",
      "vcmactl guests: cam0 is a qemu guest of class camera")

# a region: contiguous in the window; the guest writes, the host hashes the same bytes
st, h, gpa, bus, length, _, _ = q.call(2, length=4 * MiB, name=b"camera")
check(st == 0 and length == 4 * MiB and gpa == bus and bus % (4 * MiB) == 0 and bus + length <= q.window_size,
      "ALLOC 4 MiB from the camera pool: gpa = bus = window offset %#x" % bus)
committed0 = os.fstat(q.shm_fd).st_blocks * 512  # the shared area so far: nothing else is committed
check(q.window(bus, length) == bytes(length), "the region reads as zeros")
pattern = bytes((i * 7 + (i >> 12)) & 0xff for i in range(length))
q.m[q.window_off + bus:q.window_off + bus + length] = pattern
check(os.fstat(q.shm_fd).st_blocks * 512 - committed0 >= length,
      "writing the region commits its memory in the memfd (%d KiB)" % (os.fstat(q.shm_fd).st_blocks // 2))
g = {x["name"]: x for x in ctl("guests")["guests"]}["cam0"]
check(g["bar_bytes"] == q.size and g["window_bytes"] == q.window_size
      and g["committed_bytes"] == os.fstat(q.shm_fd).st_blocks * 512,
      "vcmactl guests shows BAR2's size and the memory it holds (%d KiB)" % (g["committed_bytes"] >> 10))
hr = ctl("hash", hex(h))
check(int(hr["fnv1a64"], 16) == fnv1a64(pattern) and hr["size_bytes"] == length,
      "vcmactl hash sees the guest's bytes (fnv1a64 %s)" % hr["fnv1a64"])

# hash reads at most 64 MiB while vcmad's loop waits
st, hb, *_ = q.call(2, length=72 * MiB, name=b"big")
r = subprocess.run([VCMACTL, "-s", os.path.join(d.rundir, "vcmad-ctl.sock"), "hash", hex(hb)],
                   capture_output=True, text=True)
check(st == 0 and r.returncode == 1 and "(EFBIG)" in r.stderr, "vcmactl hash of a 72 MiB region: EFBIG, exit 1")
check(q.call(3, handle=hb)[0] == 0, "FREE it")

# a shared-pool region lands at its pool's offset in the window
st, h2, _, bus2, len2, _, _ = q.call(2, length=2 * MiB, name=b"main")
regions = {int(r["handle"], 16): r for r in ctl("regions", "--guest", "cam0")["regions"]}
check(st == 0 and regions[h2]["pool"] == "main" and regions[h]["pool"] == "camera" and bus2 + len2 <= 176 * MiB,
      "ALLOC 2 MiB from the shared pool lands at that pool's place in the window")

# the guest scribbles on a page outside its regions; an ALLOC there gets zeros anyway
q.m[q.window_off + bus2:q.window_off + bus2 + len2] = b"\x55" * len2
before = os.fstat(q.shm_fd).st_blocks * 512
st, *_ = q.call(3, handle=h2)
check(st == 0, "FREE the shared-pool region")
check(before - os.fstat(q.shm_fd).st_blocks * 512 >= len2, "FREE gives the region's memory back to the host")
check(q.window(bus2, len2) == bytes(len2), "freed memory is punched: zeros")
q.m[q.window_off + bus2:q.window_off + bus2 + 4096] = b"\xaa" * 4096
st, h3, _, bus3, len3, _, _ = q.call(2, length=2 * MiB, name=b"main")
check(st == 0 and bus3 == bus2 and q.window(bus3, len3) == bytes(len3),
      "a new region over bytes the guest scribbled there reads as zeros")

# the guest writes outside its regions: in the window's free part and past the window;
# vcmad's audit (once a second) gives that memory back and leaves the regions alone
q.m[q.window_off + bus3:q.window_off + bus3 + len3] = b"\x33" * len3
held = os.fstat(q.shm_fd).st_blocks * 512
stray_off = q.window_off + q.window_size - 16 * MiB
q.m[stray_off:stray_off + 8 * MiB] = b"\xee" * (8 * MiB)
q.m[q.size - MiB:q.size] = b"\xee" * MiB
deadline = time.time() + 5
while os.fstat(q.shm_fd).st_blocks * 512 > held and time.time() < deadline:
    time.sleep(0.1)
check(os.fstat(q.shm_fd).st_blocks * 512 <= held, "vcmad released it within seconds (%d KiB committed, %d before)"
      % (os.fstat(q.shm_fd).st_blocks // 2, held >> 10))
check(q.m[stray_off:stray_off + 8 * MiB] == bytes(8 * MiB) and q.m[q.size - MiB:q.size] == bytes(MiB),
      "the stray bytes read as zeros")
check(int(ctl("hash", hex(h))["fnv1a64"], 16) == fnv1a64(pattern) and q.window(bus3, len3) == b"\x33" * len3,
      "the guest's regions kept their bytes")
g = {x["name"]: x for x in ctl("guests")["guests"]}["cam0"]
check(g["stray_reclaims"] >= 1 and g["stray_bytes"] >= 9 * MiB,
      "vcmactl guests counts the 9 MiB committed and released: %d reclaim(s), %d KiB"
      % (g["stray_reclaims"], g["stray_bytes"] >> 10))
check(re.search(r"guest \d+ \(cam0\) wrote outside its regions: \d+ KiB released", d.logtext()),
      "and vcmad logged it")

# one QEMU per guest socket
s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s2.connect(os.path.join(d.rundir, "cam0.ivshmem"))
s2.settimeout(5)
check(s2.recv(8) == b"", "a second connection to an attached guest's socket is closed at once")
s2.close()

# a hostile guest: ring index overflow -> DEAD, final irq, connection closed
e = FakeQemu("evil")
st, *_ = e.call(1, a0=1 << 16, a1=3)
struct.pack_into("<I", e.m, e.req_off, e.n + 1000)
os.write(e.kick_fd, struct.pack("<Q", 1))
check(e.irq_pending(5), "the hostile guest gets its final irq")
check(struct.unpack_from("<I", e.m, 12)[0] == 4, "and its control page says DEAD")
check(e.s.recv(8) == b"", "vcmad closed the hostile guest's connection")
check("evil" not in {g["name"] for g in ctl("guests")["guests"]}, "the hostile guest is gone from vcmactl guests")
check("protocol violation: request ring overflow" in d.logtext(), "vcmad logged why it cut the guest off")
st, h4, *_ = q.call(2, length=1 * MiB)
check(st == 0, "cam0 is still served after the hostile guest was cut off")
e.close()

# hugetlbfs backing: regions in huge pages, committed only while held
NR = "/proc/sys/vm/nr_hugepages"


def huge_free():
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("HugePages_Free")).split()[1])


need = q.size // (2 * MiB)  # QEMU's mapping reserves huge pages for the whole BAR
try:
    with open(NR) as f:
        nr0 = int(f.read())
    with open(NR, "w") as f:
        f.write(str(nr0 + need))
    have_huge = huge_free() >= need
except OSError:
    have_huge = False
if not have_huge:
    print("skip: hugepages = on: cannot reserve %d huge pages here (needs root and free memory)" % need)
else:
    try:
        hq = FakeQemu("huge")
        st, *_ = hq.call(1, a0=1 << 16, a1=3)
        free0 = huge_free()
        st, hh, _, hbus, hlen, _, _ = hq.call(2, length=2 * MiB, name=b"main")
        hq.m[hq.window_off + hbus:hq.window_off + hbus + hlen] = b"\x77" * hlen
        hr = ctl("hash", hex(hh))
        check(st == 0 and int(hr["fnv1a64"], 16) == fnv1a64(b"\x77" * hlen),
              "hugepages = on: a 2 MiB region in a huge-page memfd, bytes checked by hash")
        check(huge_free() == free0 - 1, "writing it took one huge page")
        hstray = hq.window_off + hq.window_size - 8 * MiB
        hq.m[hstray:hstray + 4 * MiB] = b"\xee" * (4 * MiB)
        deadline = time.time() + 5
        while huge_free() != free0 - 1 and time.time() < deadline:
            time.sleep(0.1)
        check(huge_free() == free0 - 1 and hq.window(hbus, hlen) == b"\x77" * hlen,
              "two huge pages written outside the region are released by the audit; the region keeps its bytes")
        st, *_ = hq.call(3, handle=hh)
        check(st == 0 and huge_free() == free0 and hq.window(hbus, hlen) == bytes(hlen),
              "FREE punched the huge page back: zeros, and the page is free again")
        # two 1 MiB regions sharing one huge page: the page goes back with the last
        strays0 = {x["name"]: x for x in ctl("guests")["guests"]}["huge"]["stray_reclaims"]
        st1, ha, _, abus, alen, _, _ = hq.call(2, length=MiB, name=b"main")
        st2, hb2, _, bbus, blen, _, _ = hq.call(2, length=MiB, name=b"main")
        check(st1 == 0 and st2 == 0 and abus // (2 * MiB) == bbus // (2 * MiB),
              "two 1 MiB regions in one huge page (window offsets %#x, %#x)" % (abus, bbus))
        hq.m[hq.window_off + abus:hq.window_off + abus + alen] = b"\x11" * alen
        hq.m[hq.window_off + bbus:hq.window_off + bbus + blen] = b"\x22" * blen
        check(huge_free() == free0 - 1, "writing both takes one huge page")
        check(hq.call(3, handle=ha)[0] == 0 and huge_free() == free0 - 1
              and hq.window(bbus, blen) == b"\x22" * blen and hq.window(abus, alen) == bytes(alen),
              "freeing one zeroes its half; the page stays for the other, whose bytes are intact")
        check(hq.call(3, handle=hb2)[0] == 0 and huge_free() == free0,
              "freeing the other gives the whole huge page back")
        time.sleep(1.2)  # an audit period
        g = {x["name"]: x for x in ctl("guests")["guests"]}["huge"]
        check(g["stray_reclaims"] == strays0, "and vcmad's audit found nothing more to clean up")
        hq.close()
    finally:
        with open(NR, "w") as f:
            f.write(str(nr0))

# QEMU goes away: the guest detaches and its regions are freed; a new QEMU attaches
gid = q.guest_id
q.close()
deadline = time.time() + 5
while time.time() < deadline and ctl("regions")["count"]:
    time.sleep(0.05)
check(ctl("regions")["count"] == 0, "QEMU's disconnect detached cam0 and freed its regions")
q = FakeQemu("cam0")
check(q.guest_id != gid and q.call(1, a0=1 << 16, a1=3)[0] == 0, "a new QEMU attaches to the same socket")
st, *_ = q.call(2, length=8 * MiB, name=b"camera")
check(st == 0, "and allocates")
q.close()

log = d.stop()
check(not os.path.exists(os.path.join(d.rundir, "cam0.ivshmem")), "vcmad removed its ivshmem sockets")
print("PASS")
