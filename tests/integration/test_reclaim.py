#!/usr/bin/env python3
"""Dead guests (issue 16): a guest killed with SIGKILL has its regions and the pool
frames lent to its RAM given back, and they reach their next owner as zeros, while
the other guests go on untouched.

Three kinds of death, one after the other, beside two survivors in the same pool (a
checksumming vcma-simvm on lent RAM, a libvcma client holding two regions):
  * a libvcma client (hold_regions) holding 4 x 8 MiB regions;
  * a vcma-simvm whose 64 MiB of RAM is all lent pool frames, its driver allocating and
    freeing 8 MiB regions and writing patterns into them (stopped with SIGSTOP first,
    so the regions it holds can be counted, then killed);
  * a QEMU stand-in on the ivshmem link (ivshmem_peer.py) holding 2 x 8 MiB it wrote
    through its BAR (whose memfd the scrubber punches and closes after the detach);
    a new one attaches to the same socket afterwards.
After each: the pool's frame counts are exactly what they were before the guest came,
none of its regions is left, vcmad's reclaim counters moved by exactly what it held,
and the scrubber zeroed exactly its frames. Then a new guest takes every free frame
of the pool (1 MiB regions, all from known-zero frames, which vcmad hands out without
zeroing them again) and vcmactl hash reads each as zeros. No timing is asserted here:
bench/bench-reclaim.py measures death to reclaimed.
"""
import os
import signal
import subprocess
import sys

from vcmatest import (CtlConn, Vcmad, check, ctl, fail, frames, guests, log, set_tools, simvm, vm_summary,
                      wait_attached, wait_until)

VCMAD, SIMVM, VCMACTL, HOLD = sys.argv[1:5]
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ivshmem_peer.py")
set_tools(vcmactl=VCMACTL, simvm=SIMVM)
MiB = 1 << 20
FRAME = 4096

CONFIG = """
[daemon]
max_guests = 16
lend_share = 100%
[machine]
memory = 1G
[limits]
max_ram_per_guest = 128M
[pool main]
size = 256M
[guest q0]
backend = qemu
"""


def fnv1a64_zeros(n):
    """FNV-1a 64 of n zero bytes: xor with 0 changes nothing, so it is offset * prime^n."""
    return (0xcbf29ce484222325 * pow(0x100000001b3, n, 1 << 64)) % (1 << 64)


def daemon_stats(d):
    return ctl(d, "stats")["daemon"]


def regions_of(d, name):
    return [r for r in ctl(d, "regions")["regions"] if r["guest_name"] == name]


def handles_listed(d):
    return {int(r["handle"], 16) for r in ctl(d, "regions")["regions"]}


class Holder:
    """hold_regions NAME: a libvcma guest holding COUNT regions of SIZE until told to free them."""

    def __init__(self, d, name, size, count, pool="main"):
        self.name = name
        self.p = subprocess.Popen([HOLD, d.sock, name, pool, size, str(count)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.handles = []
        for line in self.p.stdout:
            if line.startswith("region "):
                self.handles.append(int(line.split()[1], 16))
            elif line.strip() == "ready":
                break
        else:
            fail("hold_regions %s did not get its %d region(s): exit %s, %s"
                 % (name, count, self.p.wait(), self.p.stderr.read().strip()))
        check(len(self.handles) == count, "%s holds its %d region(s)" % (name, count))

    def release(self):
        """Free every region (awaited FREEs) and exit; returns the exit status."""
        out, err = self.p.communicate("free\n", timeout=30)
        if self.p.returncode:
            log("hold_regions %s: %s" % (self.name, err.strip()))
        return self.p.returncode


def check_reclaimed(d, what, name, base, st0, nregions, region_frames, ram_frames, scrubbed=None):
    """After `name` died: frames exactly as in `base`, none of its regions left, counters
    moved by what it held, the scrubber done with exactly its frames (region_frames +
    ram_frames pool frames, unless scrubbed says otherwise)."""
    if scrubbed is None:
        scrubbed = region_frames + ram_frames
    f = wait_until(lambda f: f == base, 30, "%s's frames back (before it came: %s)" % (what, base),
                   probe=lambda: frames(d))
    check(f == base, "%s killed: pool main's frame counts are exactly as before it attached (%s)" % (what, f))
    check(name not in guests(d) and not regions_of(d, name), "%s killed: it is detached and none of its regions is "
          "left" % what)
    st = wait_until(lambda s: s["scrub_pending_frames"] == 0, 30, "the scrubber to finish",
                    probe=lambda: daemon_stats(d))
    check(st["reclaims"] == st0["reclaims"] + 1 and st["reclaimed_regions"] == st0["reclaimed_regions"] + nregions
          and st["reclaimed_ram_frames"] == st0["reclaimed_ram_frames"] + ram_frames,
          "%s killed: one reclaim of %d region(s) and %d RAM frame(s) counted" % (what, nregions, ram_frames))
    check(st["reclaim_latency"]["count"] == st0["reclaim_latency"]["count"] + 1 and st["reclaim_last_ns"] > 0,
          "%s killed: its reclaim time is recorded (%.3f ms inside vcmad, not asserted)"
          % (what, st["reclaim_last_ns"] / 1e6))
    check(st["scrubbed_frames"] - st0["scrubbed_frames"] == scrubbed and st["scrub_errors"] == 0,
          "%s killed: the scrubber zeroed exactly %d pool frame(s) of its own, without error" % (what, scrubbed))
    return st


d = Vcmad(VCMAD, CONFIG)
empty = frames(d)

# ---- the survivors: a checksumming VM on lent RAM, a libvcma guest with two regions
keep_vm = simvm(d, "keepvm", "--ram", "32M", "--vcpus", "1", "--alloc", "none", "--duration", "600", "--seed", "7")
keep = Holder(d, "keep", "4M", 2)
wait_attached(d, "keepvm", "keep")
base = wait_until(lambda f: f["lent_used"] + f["lent_free"] == 32 * MiB // FRAME and f["region"] == 2048, 30,
                  "the survivors' RAM and regions in the pool", probe=lambda: frames(d))
check(set(keep.handles) <= handles_listed(d), "survivor keep's 2 regions are listed")
st0 = daemon_stats(d)

# ---- a libvcma client holding 4 x 8 MiB is killed
victim = Holder(d, "victim", "8M", 4)
f = frames(d)
check(f["region"] == base["region"] + 4 * 2048 and f["free"] == base["free"] - 4 * 2048,
      "victim's 4 x 8 MiB are regions in pool main (%s)" % f)
victim.p.kill()
victim.p.wait()
st0 = check_reclaimed(d, "the libvcma client", "victim", base, st0, 4, 4 * 2048, 0)

# ---- a simvm on lent RAM, its driver writing patterns into 8 MiB regions, is killed
vm = simvm(d, "victimvm", "--ram", "64M", "--vcpus", "1", "--alloc", "8M", "--max-regions", "4", "--duration",
           "600", "--seed", "11", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_until(lambda g: "victimvm" in g and g["victimvm"]["regions"] >= 3, 30, "victimvm to hold regions",
           probe=lambda: guests(d))
os.kill(vm.pid, signal.SIGSTOP)  # its driver churns regions: stop it to count what it holds
held = wait_until(lambda pair: pair[0] == pair[1], 10, "victimvm's regions to stay put once stopped",
                  probe=lambda: (guests(d)["victimvm"]["regions"], guests(d)["victimvm"]["regions"]))[0]
f = frames(d)
check(f["lent_used"] + f["lent_free"] == base["lent_used"] + base["lent_free"] + 64 * MiB // FRAME
      and f["region"] == base["region"] + held * 2048,
      "victimvm's 64 MiB of RAM are lent pool frames and its %d region(s) are in the pool (%s)" % (held, f))
vm.kill()
vm.wait()
st0 = check_reclaimed(d, "the simvm", "victimvm", base, st0, held, held * 2048, 64 * MiB // FRAME)

# ---- a QEMU stand-in on the ivshmem link, 2 x 8 MiB written through its BAR, is killed
q = subprocess.Popen([sys.executable, PEER, os.path.join(d.rundir, "q0.ivshmem"), "main", "8", "2"],
                     stdout=subprocess.PIPE, text=True)
check(q.stdout.readline().strip() == "ready", "the QEMU stand-in q0 holds 2 x 8 MiB it wrote")
f = frames(d)
check(f["region"] == base["region"] + 2 * 2048, "q0's regions are in pool main (%s)" % f)
q.kill()
q.wait()
# its regions live in its own BAR memfd, not in machine memory: no pool frame to zero
st0 = check_reclaimed(d, "the QEMU stand-in", "q0", base, st0, 2, 2 * 2048, 0, scrubbed=0)


def q0_memfds():
    """vcmad's open fds on a q0 BAR memfd (memfd:vcma-ivshmem-q0)."""
    fds = os.path.join("/proc", str(d.proc.pid), "fd")
    n = 0
    for fd in os.listdir(fds):
        try:
            n += "vcma-ivshmem-q0" in os.readlink(os.path.join(fds, fd))
        except OSError:
            pass
    return n


check(q0_memfds() == 0, "with the scrubber done, vcmad holds no fd on the dead QEMU's BAR memfd (punched and closed)")
q = subprocess.Popen([sys.executable, PEER, os.path.join(d.rundir, "q0.ivshmem"), "main", "8", "1"],
                     stdout=subprocess.PIPE, text=True)
check(q.stdout.readline().strip() == "ready" and q0_memfds() == 1,
      "a new QEMU on q0's socket attaches and allocates (vcmad holds its new BAR memfd)")
q.kill()
q.wait()
wait_until(lambda f: f == base, 30, "the second QEMU's region back", probe=lambda: frames(d))
st0 = daemon_stats(d)

# ---- every free frame of the pool, handed out again, reads as zeros
free = frames(d)["free"]
n = free // 256
filler = Holder(d, "filler", "1M", n)
f = frames(d)
check(f["free"] == free - n * 256, "filler took %d of the %d free frames in 1 MiB regions (%s)" % (n * 256, free, f))
zero = fnv1a64_zeros(MiB)
c = CtlConn(d, timeout=30)
bad = []
for i, h in enumerate(filler.handles):
    r = c.ask(b'{"version":1,"id":%d,"cmd":"hash","handle":"%#x"}' % (i, h))
    if not r or not r.get("ok") or int(r["result"]["fnv1a64"], 16) != zero:
        bad.append((hex(h), r))
c.close()
check(not bad, "all %d MiB handed out after the deaths read as zeros (vcmactl hash)%s"
      % (n, "" if not bad else ": not %s" % bad[:3]))
check(filler.release() == 0, "filler frees its regions")

# ---- the survivors were not touched
check(set(keep.handles) <= handles_listed(d) and len(regions_of(d, "keep")) == 2,
      "survivor keep still holds its 2 regions")
check(keep.release() == 0, "survivor keep frees them over its ring, which still works")
check("keepvm" in guests(d), "survivor keepvm is still attached")
keep_vm.send_signal(signal.SIGTERM)
s = vm_summary(keep_vm, "keepvm")
check(s["corruptions"] == 0 and s["errors"] == 0,
      "survivor keepvm's checksummed RAM is intact: %d pages verified, 0 corrupt" % s["vcpu_pages_verified"])
f = wait_until(lambda f: f == empty, 30, "pool main empty", probe=lambda: frames(d))
check(f == empty, "with everyone gone pool main is as it started (%s)" % f)
d.stop()
print("PASS")
