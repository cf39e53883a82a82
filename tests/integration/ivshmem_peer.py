#!/usr/bin/env python3
"""A QEMU stand-in for test_reclaim.py and bench/bench-reclaim.py: what QEMU's ivshmem-doorbell device and vcma.ko
do on the wire (as tests/integration/test_ivshmem.py's FakeQemu), in a process of its
own so it can be killed. Connects to SOCKET, says HELLO, allocates COUNT regions of
SIZE_MIB from POOL, writes every byte of each (the pages become resident in the BAR's
memfd, as a device's DMA would make them), prints "ready" and waits to be killed.

usage: ivshmem_peer.py SOCKET POOL SIZE_MIB COUNT [outlive]

With "outlive" it also does what QEMU does when its ivshmem server goes away: nothing
(it keeps its BAR and runs on) until killed; without, it exits then.
"""
import mmap
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proto  # noqa: E402
from proto import Op  # noqa: E402
from vcmatest import RingClient  # noqa: E402

path, pool, size_mib, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
outlive = sys.argv[5:] == ["outlive"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
msgs = []
for _ in proto.IVSHMEM_HANDSHAKE:
    data, fds, _, _ = socket.recv_fds(s, proto.IVSHMEM_MSG.size, 1)
    msgs.append(fds[0] if fds else None)
fd = {what: msgs[i] for i, (_, _, what) in enumerate(proto.IVSHMEM_HANDSHAKE) if what}
m = mmap.mmap(fd["shm"], os.fstat(fd["shm"]).st_size)
ring = RingClient(m, fd["kick"], fd["irq"])
if ring.hello().status:
    sys.exit("HELLO refused")
chunk = b"\xa5" * (1 << 20)
for i in range(count):
    r = ring.call(Op.ALLOC, length=size_mib << 20, name=pool)
    if r.status:
        sys.exit("ALLOC %d MiB: status %d" % (size_mib, r.status))
    for off in range(0, r.length, len(chunk)):
        at = ring.ctrl.window_off + r.bus + off
        m[at:at + len(chunk)] = chunk
print("ready", flush=True)
s.recv(1)  # vcmad never sends after the handshake: wait here until killed
while outlive:
    signal.pause()  # vcmad went away; QEMU runs on with its BAR
