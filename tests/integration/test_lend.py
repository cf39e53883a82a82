#!/usr/bin/env python3
"""Lending and vacating with real processes: four simulated VMs whose RAM lives on a
lendable pool keep writing and verifying checksummed pages while a fifth guest
allocates and frees 1, 2, 4 and 8 MiB regions in that pool over a thousand times.
Every allocation must succeed (the pool always has enough free + lent frames), no
page may be corrupted by the pause/copy/remap moves, and once the host is idle the
pool must be fully lent again."""
import json
import sys
import time

from vcmatest import (CtlConn, Vcmad, check, ctl, fail, frames, lent, log, set_tools, simvm, vcmactl, vm_summary,
                      wait_until)

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL, simvm=SIMVM)

CONFIG = """
[daemon]
max_guests = 16
lend_share = 100%
relend_idle_ms = 5
pause_timeout_ms = 2000
[machine]
memory = 1G
[limits]
max_ram_per_guest = 64M
[pool main]
size = 128M
"""


def fully_lent(d, what):
    """Wait until every frame of pool main is lent and none claimed (the VMs' RAM fills
    it; after a vacate, relending after relend_idle_ms fills it again)."""
    return wait_until(lambda f: lent(f) == f["total"] and f["claimed"] == 0, 30, what, probe=lambda: frames(d))


d = Vcmad(VCMAD, CONFIG)

# two of them report a share of their pages free (free page reporting): those are
# moved without a pause (DROP) while the pages in use are pre-copied
vms = [simvm(d, "vm%d" % i, "--ram", "32M", "--vcpus", "1", "--alloc", "none", "--duration", "600",
             "--seed", str(i + 1), *(["--report", "20"] if i % 2 else [])) for i in range(4)]
f = fully_lent(d, "the 4 VMs' RAM to fill pool main")
check(lent(f) == f["total"], "the 4 VMs' RAM fills the pool: %d of %d frames lent" % (lent(f), f["total"]))

# vcmactl's test allocation is served as a guest's: its window is vacated first
r = vcmactl(d, "--json", "alloc", "--pool", "main", "8M")
check(r.returncode == 0, "vcmactl alloc 8M in the fully lent pool succeeds: %s" % r.stderr.strip())
reg = json.loads(r.stdout)
f = frames(d)
check(reg["size_bytes"] == 8 << 20 and f["region"] == 2048 and f["claimed"] == 0,
      "the test region holds 2048 frames vacated for it (frames now %s)" % f)
r = vcmactl(d, "free", reg["handle"])
check(r.returncode == 0 and frames(d)["region"] == 0, "and vcmactl free gives them back")
# a control client that asks for a vacating allocation and hangs up at once: the
# window is released when the job ends, nothing is left claimed or allocated
fully_lent(d, "relending to fill the pool again after the free")
s = CtlConn(d)
s.send(b'{"version":1,"id":7,"cmd":"alloc","bytes":8388608,"pool":"main"}\n')
s.close()
wait_until(lambda: "vacated for a requester that left" in d.logtext(), 30,
           "vcmad to log the hung-up client's vacate job ending")
check(d.logtext().count("ctl: alloc requested") == 2 and "vacated for a requester that left" in d.logtext(),
      "the hung-up client's allocation was taken and its vacate job stopped")
f = wait_until(lambda f: f["claimed"] == 0 and f["region"] == 0, 10, "the abandoned window released",
               probe=lambda: frames(d))
st_regions = ctl(d, "regions")
check(f["claimed"] == 0 and f["region"] == 0 and st_regions["count"] == 0,
      "a client gone while its allocation vacated leaves nothing claimed or allocated (%s)" % f)

# answers keep the order of requests: a status sent right behind a vacating alloc is
# answered after it
fully_lent(d, "relending to fill the pool again after the abandoned vacate")


def vacated(d):
    """Pool frames vacated for allocations so far (relending moves pages the other way)."""
    p = [p for p in ctl(d, "stats")["pools"] if p["name"] == "main"][0]
    return p["vacated_lent_used"] + p["vacated_lent_free"]


vacated0 = vacated(d)
s = CtlConn(d, timeout=30)
s.send(b'{"version":1,"id":1,"cmd":"alloc","bytes":4194304,"pool":"main"}\n{"version":1,"id":2,"cmd":"status"}\n')
a1, a2 = s.line(), s.line()
s.close()
if a1 is None or a2 is None:
    fail("vcmad closed the control connection")
check(a1["id"] == 1 and a1["ok"] and a1["result"]["size_bytes"] == 4 << 20 and a2["id"] == 2 and a2["ok"]
      and vacated(d) - vacated0 == 1024,
      "alloc then status on one connection: answered in that order, the alloc vacated its window (1024 lent frames)")
r = vcmactl(d, "free", a1["result"]["handle"])
check(r.returncode == 0, "the test region is freed")

# the allocating guest: one region at a time, each one needs a window vacated
t0 = time.time()
alloc = simvm(d, "camera", "--ram", "4M", "--workload", "idle", "--alloc", "1M,2M,4M,8M", "--max-regions", "1",
              "--count", "1000", "--interval-ms", "10", "--duration", "300")
s = vm_summary(alloc, "the allocating guest", timeout=400)
took = time.time() - t0
check(alloc.returncode == 0, "the allocating guest finished without error")
attempts = sum(z["attempts"] for z in s["sizes"])
ok = sum(z["ok"] for z in s["sizes"])
check(attempts >= 1000, "%d allocations of 1-8 MiB were made" % attempts)
check(ok == attempts, "every one succeeded (%d of %d): free + lent frames always covered it" % (ok, attempts))
check(s["pattern_errors"] == 0, "every region's DMA pattern read back")
check(s["regions_not_zeroed"] == 0, "every region read as zeros when it was handed out, although its frames had "
      "just held the VMs' pages (cleared in place, not punched)")

stats = ctl(d, "stats")
st = [p for p in stats["pools"] if p["name"] == "main"][0]
pl = stats["daemon"]["pause_latency"]
check(pl["count"] > 0 and pl["p50_ns"] <= pl["p99_ns"] <= pl["max_ns"] and stats["daemon"]["vacate_jobs_failed"] == 1,
      "vcmad counted %d VM pauses (p50 %.0f us, p99 %.0f us, max %.0f us) and one failed vacate job, the abandoned one"
      % (pl["count"], pl["p50_ns"] / 1e3, pl["p99_ns"] / 1e3, pl["max_ns"] / 1e3))
log("allocation took %.1f s; pages vacated: %d used (copied), %d free (dropped)"
    % (took, st["vacated_lent_used"], st["vacated_lent_free"]))
check(st["vacated_lent_used"] >= 4 * 2048, "windows were really vacated: %d lent pages moved out"
      % st["vacated_lent_used"])
dm = stats["daemon"]
log("pre-copy: %d batches, %d pages copied while the VMs ran, %d copied again, %d in final pauses, %d rounds, "
    "%d fallbacks; %d drops of %d reported pages, %d REUSEs raced a DROP and waited for it"
    % (dm["precopy_batches"], dm["precopy_pages"], dm["precopy_recopied"], dm["precopy_final_pages"],
       dm["precopy_rounds"], dm["precopy_fallbacks"], dm["drops"], dm["dropped_pages"], dm["reuses_held"]))
check(dm["precopy_batches"] > 0 and dm["precopy_pages"] > 0,
      "the windows' pages in use were pre-copied while their VMs ran (%d batches)" % dm["precopy_batches"])
check(dm["drops"] > 0 and dm["dropped_pages"] > 0,
      "reported pages were moved without a pause (%d drops)" % dm["drops"])

# idle: the daemon moves the VMs' pages back onto the pool
f = wait_until(lambda f: f["free"] == 0 and f["claimed"] == 0, 60, "relending to refill pool main once idle",
               probe=lambda: frames(d))
dm = ctl(d, "stats")["daemon"]
check(dm["ordinary_reserved_frames"] == 0, "idle, no ordinary memory is reserved for moves")
check(f["free"] == 0 and lent(f) == f["total"],
      "idle again, the pool is fully lent (free %d, lent %d of %d)" % (f["free"], lent(f), f["total"]))

for p in vms:
    p.terminate()
sums = [vm_summary(p, "vm%d" % i, timeout=60) for i, p in enumerate(vms)]
for s in sums:
    check(s["corruptions"] == 0 and s["errors"] == 0,
          "%s: %d pages verified, no corruption through %d pauses and %d remapped pages"
          % (s["name"], s["vcpu_pages_verified"], s["pauses"]["count"], s["remapped_pages"]))
check(sum(s["remapped_pages"] for s in sums) > 0, "pages were really moved under the running VMs")
check(all(s["dirty_log"] and s["one_trip"] for s in sums), "every VM logged its writes and took one-trip pauses")
check(sum(s["dirty_pages"] for s in sums) > 0 and dm["precopy_recopied"] + dm["precopy_final_pages"] > 0,
      "the VMs wrote into the windows while they were pre-copied: %d pages logged dirty, %d copied again, "
      "%d in final pauses, and no page was corrupted" % (sum(s["dirty_pages"] for s in sums), dm["precopy_recopied"],
                                                          dm["precopy_final_pages"]))
pauses = [s["pauses"] for s in sums]
log("pause p99 per VM (us): %s, max %s" % ([p["p99_us"] for p in pauses], [p["max_us"] for p in pauses]))
f = wait_until(lambda f: f["free"] == f["total"], 10, "the gone VMs' frames back in pool main",
               probe=lambda: frames(d))
check(f["free"] == f["total"], "with every VM gone, every pool frame is free (%d of %d)" % (f["free"], f["total"]))
text = d.stop()
check("protocol violation" not in text, "no VM was cut off")
print("PASS")
