#!/usr/bin/env python3
"""Vacating when things go wrong: a VM that never answers PAUSE, no ordinary memory
left to move pages to, a VM that dies in the middle of being vacated, and an
allocation stuck behind a silent VM while allocations in another pool carry on. Each time
the allocation fails cleanly (or succeeds, when the dead VM's frames simply come
back), nothing stays claimed, no frame is lost, and the other guests carry on."""
import json
import subprocess
import sys
import time

from vcmatest import Vcmad, check, fail

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]


def ctl(d, *args):
    r = subprocess.run([VCMACTL, "--socket", d.sock.replace("vcmad.sock", "vcmad-ctl.sock"), "--json"] + list(args),
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        fail("vcmactl %s: %s" % (" ".join(args), r.stderr))
    return json.loads(r.stdout)


def frames(d):
    return ctl(d, "pool", "show", "main")["frames"]


def vm(d, name, *args):
    return subprocess.Popen([SIMVM, "--socket", d.sock, "--name", name, "--json"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(p, what):
    out, err = p.communicate(timeout=120)
    try:
        return p.returncode, json.loads(out)
    except ValueError:
        fail("%s printed no summary (exit %d): %s" % (what, p.returncode, err[-500:]))


def allocate(d, size, n=3):
    r = subprocess.run([SIMVM, "--socket", d.sock, "--name", "camera", "--ram", "4M", "--workload", "idle",
                        "--alloc", size, "--max-regions", "1", "--count", str(n), "--duration", "30", "--json"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail("the allocating guest failed: " + r.stderr[-500:])
    return json.loads(r.stdout)["sizes"][0]


# ---- 1. a VM that never answers PAUSE ----
d = Vcmad(VCMAD, """
[daemon]
lend_share = 100%
pause_timeout_ms = 200
relend_idle_ms = 100000
[machine]
memory = 512M
[pool main]
size = 32M
""")
stuck = vm(d, "stuck", "--ram", "32M", "--vcpus", "1", "--no-pause-ack", "--alloc", "none", "--duration", "4")
time.sleep(0.7)
before = frames(d)
check(before["lent_used"] + before["lent_free"] == before["total"], "the stuck VM's RAM fills the pool")
z = allocate(d, "8M")
check(z["ok"] == 0 and z["refused"].get("EBUSY", 0) == z["attempts"],
      "allocations that need the stuck VM paused fail with EBUSY (%s)" % z["refused"])
after = frames(d)
check(after == before, "the pool is exactly as before: nothing claimed, lost or half-moved")
rc, s = summary(stuck, "stuck")
check(rc == 0 and s["corruptions"] == 0, "the stuck VM ran on, uncorrupted, and was resumed")
st = ctl(d, "stats")
print("stats: %s" % json.dumps(st)[:300])
d.stop()

# ---- 2. no ordinary memory left for the pages ----
d = Vcmad(VCMAD, """
[daemon]
lend_share = 100%
relend_idle_ms = 100000
[machine]
memory = 96M
[limits]
max_ram_per_guest = 64M
[pool main]
size = 64M
""")
big = vm(d, "big", "--ram", "60M", "--vcpus", "1", "--alloc", "none", "--duration", "5")
time.sleep(0.7)
filler = vm(d, "filler", "--ram", "24M", "--vcpus", "1", "--alloc", "none", "--duration", "5")
time.sleep(0.7)
before = frames(d)
z = allocate(d, "16M")
check(z["ok"] == 0 and z["refused"].get("ENOMEM", 0) == z["attempts"],
      "with ordinary memory exhausted, a 16 MiB allocation is refused with ENOMEM (%s)" % z["refused"])
after = frames(d)
st = ctl(d, "stats")
dm, mp = st["daemon"], st["pools"][0]
check(dm["ordinary_reserved_frames"] == 0 and mp["alloc_fail"] == z["attempts"] and mp["vacated_lent_used"] == 0,
      "refused up front: nothing moved, no ordinary memory left reserved (free %d frames), %d failures counted"
      % (dm["ordinary_free_frames"], mp["alloc_fail"]))
check(after["claimed"] == 0 and after["lent_used"] + after["lent_free"] == before["lent_used"] + before["lent_free"],
      "nothing claimed, every lent page still in place (before %s, after %s)" % (before, after))
for p, n in ((big, "big"), (filler, "filler")):
    rc, s = summary(p, n)
    check(rc == 0 and s["corruptions"] == 0, "%s ran on uncorrupted" % n)
d.stop()

# ---- 3. a VM killed in the middle of being vacated ----
d = Vcmad(VCMAD, """
[daemon]
lend_share = 100%
relend_idle_ms = 100000
[machine]
memory = 512M
[pool main]
size = 32M
""")
doomed = vm(d, "doomed", "--ram", "32M", "--vcpus", "1", "--exit-on-pause", "--alloc", "none", "--duration", "10")
bystander = vm(d, "bystander", "--ram", "16M", "--vcpus", "1", "--alloc", "1M", "--max-regions", "2",
               "--duration", "3")
time.sleep(0.7)
z = allocate(d, "8M", n=1)
check(z["ok"] == 1, "the allocation completes once the dead VM's frames come back")
doomed.communicate(timeout=30)
rc, s = summary(bystander, "bystander")
check(rc == 0 and s["corruptions"] == 0 and s["errors"] == 0, "the bystander VM saw no error")
time.sleep(0.3)
f = frames(d)
check(f["claimed"] == 0 and f["lent_used"] + f["lent_free"] == 0 and f["free"] == f["total"],
      "no frame orphaned: with the VMs gone the pool is all free (%s)" % f)
log = d.stop()
check("doomed" in log and "detached" in log, "vcmad logged the dead VM's detach")

# ---- 4. an allocation stuck on a silent VM holds up nobody else ----
d = Vcmad(VCMAD, """
[daemon]
lend_share = 100%
pause_timeout_ms = 4000
relend_idle_ms = 100000
[machine]
memory = 512M
[pool main]
size = 32M
[pool other]
size = 32M
lendable = no
""")
stuck = vm(d, "stuck", "--ram", "32M", "--vcpus", "1", "--no-pause-ack", "--alloc", "none", "--duration", "10")
time.sleep(0.7)
waiting = subprocess.Popen([SIMVM, "--socket", d.sock, "--name", "camera", "--ram", "4M", "--workload", "idle",
                            "--alloc", "8M", "--pool", "main", "--max-regions", "1", "--count", "1", "--duration", "30",
                            "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(0.3)  # its ALLOC is now waiting for the stuck VM's PAUSED
other = subprocess.run([SIMVM, "--socket", d.sock, "--name", "codec", "--ram", "4M", "--workload", "idle",
                        "--alloc", "1M,2M", "--pool", "other", "--max-regions", "1", "--count", "50", "--duration", "30",
                        "--json"], capture_output=True, text=True, timeout=60)
still_waiting = waiting.poll() is None
o = json.loads(other.stdout)
check(other.returncode == 0 and sum(z["ok"] for z in o["sizes"]) == 50,
      "50 allocations in pool other were served while the one in pool main waited")
check(still_waiting, "the allocation in pool main was still waiting for the silent VM when they were done")
rc, w = summary(waiting, "waiting")
check(w["sizes"][0]["refused"].get("EBUSY", 0) == 1, "and it then failed with EBUSY (%s)" % w["sizes"][0]["refused"])
rc, s = summary(stuck, "stuck")
check(rc == 0 and s["corruptions"] == 0, "the silent VM was resumed and ran on uncorrupted")
d.stop()
print("PASS")
