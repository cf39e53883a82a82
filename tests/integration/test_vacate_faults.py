#!/usr/bin/env python3
"""Vacating when things go wrong: a VM that never answers PAUSE, no ordinary memory
left to move pages to, a VM that dies in the middle of being vacated, and an
allocation stuck behind a silent VM while allocations in another pool carry on. Each time
the allocation fails cleanly (or succeeds, when the dead VM's frames simply come
back), nothing stays claimed, no frame is lost, and the other guests carry on."""
import json
import sys

from vcmatest import (Vcmad, check, ctl, frames, lent, log, set_tools, simvm, vm_summary, wait_attached,
                      wait_until)

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL, simvm=SIMVM)


def allocate(d, size, *extra, n=3):
    r = simvm(d, "camera", "--ram", "4M", "--workload", "idle", "--alloc", size, "--max-regions", "1", "--count", n,
              "--duration", "30", *extra)
    return vm_summary(r, "the allocating guest")["sizes"][0]


def pool_full(d, what):
    """Wait until the VMs' RAM fills pool main: every frame lent, none claimed."""
    return wait_until(lambda f: lent(f) == f["total"] and f["claimed"] == 0, 30, what, probe=lambda: frames(d))


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
stuck = simvm(d, "stuck", "--ram", "32M", "--vcpus", "1", "--no-pause-ack", "--alloc", "none", "--duration", "4")
before = pool_full(d, "the stuck VM's RAM to fill pool main")
check(lent(before) == before["total"], "the stuck VM's RAM fills the pool")
z = allocate(d, "8M")
check(z["ok"] == 0 and z["refused"].get("EBUSY", 0) == z["attempts"],
      "allocations that need the stuck VM paused fail with EBUSY (%s)" % z["refused"])
after = frames(d)
# three PAUSEs in a row unanswered make the VM unresponsive: its frames are kept out of
# allocations (quarantined, vcmad(8)); otherwise nothing changed
check(after["quarantined"] == lent(before) and dict(after, quarantined=0) == dict(before, quarantined=0),
      "the pool is as before, nothing claimed, lost or half-moved; the silent VM's frames quarantined (%s)" % after)
s = vm_summary(stuck, "stuck")
check(s["corruptions"] == 0, "the stuck VM ran on, uncorrupted, and was resumed")
st = ctl(d, "stats")
log("stats: %s" % json.dumps(st)[:300])
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
big = simvm(d, "big", "--ram", "60M", "--vcpus", "1", "--alloc", "none", "--duration", "5")
wait_attached(d, "big")  # first: its RAM goes onto the pool
filler = simvm(d, "filler", "--ram", "24M", "--vcpus", "1", "--alloc", "none", "--duration", "5")
wait_attached(d, "big", "filler")
before = frames(d)
check(lent(before) == before["total"] and ctl(d, "stats")["daemon"]["ordinary_free_frames"] < 4096,
      "big's and filler's RAM fill the pool and leave less ordinary memory than 16 MiB (%s)" % before)
z = allocate(d, "16M")
check(z["ok"] == 0 and z["refused"].get("ENOMEM", 0) == z["attempts"],
      "with ordinary memory exhausted, a 16 MiB allocation is refused with ENOMEM (%s)" % z["refused"])
after = frames(d)
st = ctl(d, "stats")
dm, mp = st["daemon"], st["pools"][0]
check(dm["ordinary_reserved_frames"] == 0 and mp["alloc_fail"] == z["attempts"] and mp["vacated_lent_used"] == 0,
      "refused up front: nothing moved, no ordinary memory left reserved (free %d frames), %d failures counted"
      % (dm["ordinary_free_frames"], mp["alloc_fail"]))
check(after["claimed"] == 0 and lent(after) == lent(before),
      "nothing claimed, every lent page still in place (before %s, after %s)" % (before, after))
for p, n in ((big, "big"), (filler, "filler")):
    s = vm_summary(p, n)
    check(s["corruptions"] == 0, "%s ran on uncorrupted" % n)
d.stop()

# ---- 3. a VM killed in the middle of being vacated ----
# The bystander allocates from a pool of its own: were it to allocate in pool main, its
# first region would vacate the doomed VM's pages and kill it before the test's does.
d = Vcmad(VCMAD, """
[daemon]
lend_share = 100%
relend_idle_ms = 100000
[machine]
memory = 512M
[pool main]
size = 32M
[pool other]
size = 16M
lendable = no
""")
doomed = simvm(d, "doomed", "--ram", "32M", "--vcpus", "1", "--exit-on-pause", "--alloc", "none", "--duration", "10")
pool_full(d, "the doomed VM's RAM to fill pool main")
bystander = simvm(d, "bystander", "--ram", "16M", "--vcpus", "1", "--alloc", "1M", "--pool", "other",
                  "--max-regions", "2", "--duration", "3")
wait_attached(d, "doomed", "bystander")
mark = d.log_mark()
check(doomed.poll() is None, "the doomed VM is alive, its RAM all of pool main, when the allocation comes")
z = allocate(d, "8M", "--pool", "main", n=1)
check(z["ok"] == 1, "the allocation completes once the dead VM's frames come back")
doomed.communicate(timeout=30)
dm = ctl(d, "stats")["daemon"]
check(doomed.returncode == 0 and "(doomed) detached" in d.log_since(mark)
      and dm["vacate_jobs_ok"] == 1 and dm["vacate_jobs_failed"] == 0,
      "it was that allocation's vacate job that paused the doomed VM, which died of it (%d job ok, %d failed)"
      % (dm["vacate_jobs_ok"], dm["vacate_jobs_failed"]))
s = vm_summary(bystander, "bystander")
check(s["corruptions"] == 0 and s["errors"] == 0, "the bystander VM saw no error")
f = wait_until(lambda f: f["free"] == f["total"], 10, "the gone VMs' frames back in pool main", probe=lambda: frames(d))
check(f["claimed"] == 0 and lent(f) == 0 and f["free"] == f["total"],
      "no frame orphaned: with the VMs gone the pool is all free (%s)" % f)
text = d.stop()
check("doomed" in text and "detached" in text, "vcmad logged the dead VM's detach")

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
stuck = simvm(d, "stuck", "--ram", "32M", "--vcpus", "1", "--no-pause-ack", "--alloc", "none", "--duration", "10")
pool_full(d, "the silent VM's RAM to fill pool main")
waiting = simvm(d, "camera", "--ram", "4M", "--workload", "idle", "--alloc", "8M", "--pool", "main",
                "--max-regions", "1", "--count", "1", "--duration", "30")
# its ALLOC is waiting for the silent VM's PAUSED once a vacate job holds its window
wait_until(lambda f: f["claimed"] >= 2048, 10, "the ALLOC in pool main to wait on a vacate job (window claimed)",
           probe=lambda: frames(d))
other = simvm(d, "codec", "--ram", "4M", "--workload", "idle", "--alloc", "1M,2M", "--pool", "other",
              "--max-regions", "1", "--count", "50", "--duration", "30")
o = vm_summary(other, "codec", timeout=60)
still_waiting = waiting.poll() is None and frames(d)["claimed"] >= 2048
check(sum(z["ok"] for z in o["sizes"]) == 50,
      "50 allocations in pool other were served while the one in pool main waited")
check(still_waiting, "the allocation in pool main was still waiting for the silent VM when they were done")
w = vm_summary(waiting, "waiting")
check(w["sizes"][0]["refused"].get("EBUSY", 0) == 1, "and it then failed with EBUSY (%s)" % w["sizes"][0]["refused"])
s = vm_summary(stuck, "stuck")
check(s["corruptions"] == 0, "the silent VM was resumed and ran on uncorrupted")
d.stop()
print("PASS")
