#!/usr/bin/env python3
"""Several simulated VMs against vcmad: their regions never overlap while live, every
byte they wrote reads back (vCPU RAM and region patterns), frees return the frames,
a one-page request to a shared pool is told to use normal memory, and quota
exhaustion is refused with a clear error. A VM whose pool holds one region frees
(posted, vcma_free) and allocates again back to back: every ALLOC gets the memory the
FREE before it gave back, and the patterns it writes there verify. Two VMs that take
turns with one pool's memory each find it zeroed after the other wrote its pattern
there (vcmad zeroes a region when it is freed and skips zeroing it again when it is
handed out from frames known zero: no owner's data reaches the next). A VM whose pool
has room for two does the same: the FREE's frames are held until its turn's answers
are out and zeroed then (the ALLOC of the same turn gets the other frames), and every
region still arrives zeroed."""
import sys

from vcmatest import Vcmad, check, ctl, query_pool, set_tools, simvm, vm_summary

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(simvm=SIMVM, vcmactl=VCMACTL)

CONFIG = """
[daemon]
max_guests = 16
[machine]
memory = 768M
[limits]
max_ram_per_guest = 64M
[pool main]
size = 192M
quota = 40M
[pool camera]
size = 16M
mode = exclusive
bind = class:camera
[pool reuse]
size = 8M
mode = exclusive
bind = guest:reuse
[pool handoff]
size = 4M
mode = exclusive
bind = class:handoff
[pool relay]
size = 16M
mode = exclusive
bind = guest:relay
"""


d = Vcmad(VCMAD, CONFIG)
pool_bytes, free_before, _ = query_pool(d.sock, "main")
check(pool_bytes == 192 << 20 and free_before == pool_bytes, "pool main is 192 MiB and all allocatable before the VMs")

# four VMs at once, each with vCPUs writing/verifying its RAM and a driver
# allocating 1-8 MiB regions and writing/verifying DMA patterns in them
vms = [simvm(d, "vm%d" % i, "--ram", "32M", "--vcpus", "2", "--alloc", "1M,2M,4M,8M",
             "--max-regions", "4", "--duration", "4", "--seed", str(i + 1)) for i in range(4)]
sums = [vm_summary(p, "vm%d" % i) for i, p in enumerate(vms)]

for s in sums:
    name = s["name"]
    check(s["corruptions"] == 0 and s["pattern_errors"] == 0 and s["errors"] == 0,
          "%s: no corruption in RAM or regions, no unexpected error" % name)
    ok = sum(z["ok"] for z in s["sizes"])
    check(ok >= 10, "%s: %d regions allocated, written and verified" % (name, ok))
    check(s["vcpu_pages_verified"] > 0, "%s: vCPUs verified %d pages" % (name, s["vcpu_pages_verified"]))

# no two regions of different VMs overlapped in machine memory while both were live
regions = [(s["guest_id"], r) for s in sums for r in s["regions"]]
overlaps = 0
for i in range(len(regions)):
    gi, a = regions[i]
    for j in range(i + 1, len(regions)):
        gj, b = regions[j]
        live_together = a["alloc_ns"] < b["free_ns"] and b["alloc_ns"] < a["free_ns"]
        share_memory = a["bus"] < b["bus"] + b["size"] and b["bus"] < a["bus"] + a["size"]
        if live_together and share_memory:
            overlaps += 1
check(len(regions) >= 40, "%d regions across the VMs to compare" % len(regions))
check(overlaps == 0, "no two live regions ever shared a frame")

_, free_after, mine = query_pool(d.sock, "main")
check(free_after == pool_bytes, "every frame went back to the pool after the VMs exited")

# one page from the shared pool: use normal memory; the camera's own pool serves it
s = vm_summary(simvm(d, "tiny", "--ram", "8M", "--workload", "idle", "--alloc", "4K", "--duration", "0.5"), "tiny")
z = s["sizes"][0]
check(z["attempts"] > 0 and z["ok"] == 0 and z["refused"].get("ERANGE", 0) == z["attempts"],
      "one-page requests to the shared pool are answered 'use normal memory' (ERANGE)")
s = vm_summary(simvm(d, "cam", "--class", "camera", "--ram", "8M", "--workload", "idle", "--alloc", "4K",
                     "--duration", "0.5"), "cam")
check(s["sizes"][0]["ok"] > 0, "the camera class gets one-page regions from its exclusive pool")

# quota: 40M per guest in main; 8M regions, up to 8 held -> the sixth is refused
p = simvm(d, "greedy", "--ram", "8M", "--workload", "idle", "--alloc", "8M", "--max-regions", "8", "--duration", "1",
          as_json=False)
out, _ = p.communicate(timeout=60)
check(p.returncode == 0, "the greedy VM finishes normally")
check("quota" in out.lower(), "quota exhaustion is reported in words: %s" %
      [line for line in out.splitlines() if "8 MiB" in line or "8M" in line][:2])
s = vm_summary(simvm(d, "greedy2", "--ram", "8M", "--workload", "idle", "--alloc", "8M", "--max-regions", "8",
                     "--duration", "1"), "greedy2")
check(s["sizes"][0]["refused"].get("EDQUOT", 0) > 0, "the sixth 8 MiB region is refused with EDQUOT")
check(s["sizes"][0]["ok"] >= 5, "five 8 MiB regions fit the 40 MiB quota")

# posted FREEs: one 8 MiB region at a time in an 8 MiB pool, so each ALLOC needs the
# memory the vcma_free() just before it posted; none is refused, every pattern verifies
s = vm_summary(simvm(d, "reuse", "--ram", "8M", "--vcpus", "1", "--pool", "reuse", "--alloc", "8M",
                     "--max-regions", "1", "--count", "25", "--duration", "60"), "reuse")
z = s["sizes"][0]
check(s["corruptions"] == 0 and s["pattern_errors"] == 0 and s["errors"] == 0,
      "reuse: no corruption in RAM or regions, no unexpected error")
check(z["ok"] >= 20 and z["ok"] == z["attempts"] and sum(z["refused"].values()) == 0,
      "reuse: %d of %d ALLOCs right after a posted FREE got its memory (refused: %s)"
      % (z["ok"], z["attempts"], z["refused"]))

# the same with room for two 8 MiB regions: a FREE's frames are held, out of reach,
# until the answers of its turn are out, and zeroed then; the ALLOC right after it
# gets the other frames, and the held ones come back zeroed for the next
held0 = ctl(d, "stats")["daemon"]["frees_held"]
s = vm_summary(simvm(d, "relay", "--ram", "8M", "--vcpus", "1", "--pool", "relay", "--alloc", "8M",
                     "--max-regions", "1", "--count", "25", "--duration", "60"), "relay")
z = s["sizes"][0]
held = ctl(d, "stats")["daemon"]["frees_held"] - held0
check(s["regions_not_zeroed"] == 0 and s["corruptions"] == 0 and s["pattern_errors"] == 0 and s["errors"] == 0,
      "relay: every region arrived zeroed (%d not), its patterns verified" % s["regions_not_zeroed"])
check(z["ok"] >= 20 and z["ok"] == z["attempts"] and held >= z["ok"] - 1,
      "relay: %d ALLOCs right after a posted FREE, %d FREEs held until their turn's answers were out"
      % (z["ok"], held))

# two owners in turn on the same 4 MiB: each region must arrive zeroed although the
# other VM's pattern was there (simvm counts a region that is not as an error). They
# run one after the other: side by side, one of them could hold the pool throughout.
pair = []
for i in range(2):
    p = simvm(d, "hand%d" % i, "--class", "handoff", "--ram", "8M", "--vcpus", "1", "--pool", "handoff",
              "--alloc", "4M", "--max-regions", "1", "--count", "20", "--duration", "30", "--seed", str(i + 7))
    pair.append(vm_summary(p, "hand%d" % i))
for s in pair:
    check(s["regions_not_zeroed"] == 0 and s["pattern_errors"] == 0 and s["errors"] == 0,
          "%s: every region arrived zeroed (%d not), its patterns verified" % (s["name"], s["regions_not_zeroed"]))
oks = [s["sizes"][0]["ok"] for s in pair]
check(min(oks) >= 5, "handoff: both VMs had the pool's memory in turn (%s regions)" % oks)

text = d.stop()
check("protocol violation" not in text, "no well-behaved VM was cut off")
print("PASS")
