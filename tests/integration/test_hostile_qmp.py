#!/usr/bin/env python3
"""vcmad's QMP driver (hv/vmem_qmp.c) against a hostile "QEMU": the test listens on the
QMP socket of a [guest] lender = virtio-mem and answers as QEMU would not.

  oversized   70 KiB without a newline: vcmad drops the connection (64 KiB bound)
  garbage     a greeting, then text that is not JSON: dropped
  no device   query-memory-devices without the configured device: dropped
  bad answer  the device's sizes are not numbers: dropped
  silent      connects and never greets: dropped after 10 s
  liar        a device claiming 8 EiB of max-size and a 1-byte block: vcmad lends no
              more than lend_max, and takes it all back when an allocation needs it

After each, vcmad reconnects on its own (backoff), logs why it dropped the peer, counts
the loss, and keeps serving: an allocation from a pool the lender has nothing of is
answered at once meanwhile.

usage: test_hostile_qmp.py VCMAD VCMACTL
"""
import json
import os
import socket
import subprocess
import sys
import time

from vcmatest import Vcmad, check, ctl, log, poll_until, set_tools, tmpdir

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20

tmp = tmpdir("vcma-qmp-")
path = os.path.join(tmp, "qmp.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(4)

d = Vcmad(VCMAD, """
[daemon]
relend_idle_ms = 100
[machine]
memory = 256M
[pool main]
size = 64M
lendable = yes
[pool cam]
size = 8M
lendable = no
[guest ivi]
backend = qemu
lender = virtio-mem
qmp = %s
vmem_device = vm0
lend_max = 32M
reclaim_timeout_ms = 5000
""" % path)


class Peer:
    """One connection from vcmad, answered by hand."""

    def __init__(self, timeout=20):
        srv.settimeout(timeout)
        self.c, _ = srv.accept()
        self.buf = b""

    def send(self, data):
        self.c.sendall(data if isinstance(data, bytes) else (json.dumps(data) + "\r\n").encode())

    def cmd(self, timeout=10):
        """The next command vcmad sends, parsed."""
        self.c.settimeout(timeout)
        while b"\n" not in self.buf:
            data = self.c.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def greet(self):
        self.send({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}})
        c = self.cmd()
        check(c and c.get("execute") == "qmp_capabilities", "vcmad negotiates capabilities first: %s" % c)

    def dropped(self, timeout):
        """True once vcmad closes its side."""
        self.c.settimeout(timeout)
        try:
            while self.c.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.c.close()


def lender():
    for e in ctl(d, "stats").get("balloon", {}).get("lenders", []):
        if e["name"] == "ivi":
            return e
    return None


def still_serving(what):
    t0 = time.monotonic()
    r = ctl(d, "alloc", "--pool", "cam", "1M")
    took = time.monotonic() - t0
    ctl(d, "free", r["handle"])
    check(took < 5, "%s: vcmad still serves an allocation meanwhile (%.0f ms)" % (what, took * 1000))


def expect_drop(p, what, reason, timeout=5):
    mark_ok = p.dropped(timeout)
    p.close()
    check(mark_ok, "%s: vcmad drops the connection" % what)
    check(poll_until(lambda: reason in d.logtext(), 5), "%s: vcmad logs why (%r)" % (what, reason))
    still_serving(what)


try:
    p = Peer()
    p.send(b"x" * (70 << 10))
    expect_drop(p, "oversized", "longer than 64 KiB")

    p = Peer()
    p.greet()
    p.send(b"}{ this is not JSON\r\n")
    expect_drop(p, "garbage", "a malformed QMP message")

    p = Peer()
    p.greet()
    p.send({"return": {}})
    c = p.cmd()
    check(c and c.get("execute") == "query-memory-devices", "then it asks for the devices: %s" % c)
    p.send({"return": []})  # answers query-memory-devices: no device of that id
    expect_drop(p, "no device", "no virtio-mem device of that id")

    p = Peer()
    p.greet()
    p.send({"return": {}})
    p.cmd()
    p.send({"return": [{"type": "virtio-mem", "data": {"id": "vm0", "size": "lots"}}]})  # not numbers
    expect_drop(p, "bad answer", "query-memory-devices: unexpected answer")

    p = Peer(timeout=30)
    t0 = time.monotonic()
    still_serving("silent (connected, no greeting)")
    ok = p.dropped(20)
    p.close()
    check(ok and 9 < time.monotonic() - t0 < 20, "silent: dropped after the 10 s greeting deadline (%.1f s)"
          % (time.monotonic() - t0))
    check("no QMP greeting within 10 s" in d.logtext(), "silent: vcmad logs why")

    # the liar: a device of 8 EiB with a 1-byte block; it answers everything as asked
    p = Peer(timeout=30)
    p.greet()
    p.send({"return": {}})
    c = p.cmd()
    huge = 1 << 63
    p.send({"return": [{"type": "virtio-mem", "data": {"id": "vm0", "memaddr": 1 << 32, "node": 0, "size": 0,
                                                      "requested-size": 0, "max-size": huge, "block-size": 1}}]})
    plugged = 0
    requested_max = 0
    took_back = None
    deadline = time.monotonic() + 60
    p.c.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            c = p.cmd(timeout=0.2)
        except socket.timeout:
            c = False
        if c is None:
            break
        if c:
            args = c.get("arguments", {})
            if c.get("execute") == "qom-set" and args.get("property") == "requested-size":
                requested_max = max(requested_max, args["value"])
                plugged = args["value"]  # obeys at once
                p.send({"return": {}})
            elif c.get("execute") == "qom-get":
                p.send({"return": plugged})
            else:
                p.send({"return": {}})
        e = lender()
        if e and took_back is None and e["lent_bytes"] >= 32 * MiB and plugged >= 32 * MiB:
            log("liar: lent %d MiB, device asked for at most %d MiB" % (e["lent_bytes"] >> 20, requested_max >> 20))
            check(e["lent_bytes"] == 32 * MiB and requested_max == 32 * MiB,
                  "liar: vcmad lends lend_max (32 MiB), not the 8 EiB the device claims")
            took_back = False
            # the whole pool: all that was lent must come back (answered on this thread)
            alloc = subprocess.Popen([VCMACTL, "--socket", d.ctl_sock, "--json", "alloc", "--pool", "main", "64M"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if took_back is False and alloc.poll() is not None:
            out, err = alloc.communicate()
            check(alloc.returncode == 0, "liar: the whole pool is served once the device gave it back: %s" % err)
            check(plugged == 0, "liar: vcmad asked the device down to 0 (it is at %d)" % plugged)
            ctl(d, "free", json.loads(out.strip().splitlines()[-1])["handle"])
            took_back = True
            break
    check(took_back is True, "liar: lent and taken back within 60 s")
    p.close()
    # only a device that was up can be lost (the others never got past the handshake)
    check(poll_until(lambda: lender()["lost"] == 1 and not lender()["up"], 10),
          "the liar's hang-up is counted as a loss: %s" % lender())
finally:
    text = d.stop()
    check("stopped cleanly" in text, "vcmad stops cleanly")
log("OK")
