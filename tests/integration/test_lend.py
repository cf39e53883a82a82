#!/usr/bin/env python3
"""Lending and vacating with real processes: four simulated VMs whose RAM lives on a
lendable pool keep writing and verifying checksummed pages while a fifth guest
allocates and frees 1, 2, 4 and 8 MiB regions in that pool over a thousand times.
Every allocation must succeed (the pool always has enough free + lent frames), no
page may be corrupted by the pause/copy/remap moves, and once the host is idle the
pool must be fully lent again."""
import json
import subprocess
import sys
import time

from vcmatest import Vcmad, check, fail

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]

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


def pool(d, name="main"):
    r = subprocess.run([VCMACTL, "--socket", d.ctl, "--json", "pool", "show", name],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        fail("vcmactl pool show: " + r.stderr)
    return json.loads(r.stdout)


def frames(d):
    return pool(d)["frames"]


d = Vcmad(VCMAD, CONFIG)
d.ctl = d.sock.replace("vcmad.sock", "vcmad-ctl.sock")

vms = [subprocess.Popen([SIMVM, "--socket", d.sock, "--name", "vm%d" % i, "--ram", "32M", "--vcpus", "1",
                         "--alloc", "none", "--duration", "600", "--json", "--seed", str(i + 1)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
time.sleep(1.0)
f = frames(d)
check(f["lent_used"] + f["lent_free"] == f["total"], "the 4 VMs' RAM fills the pool: %d of %d frames lent"
      % (f["lent_used"] + f["lent_free"], f["total"]))

# vcmactl's test allocation is served as a guest's: its window is vacated first
r = subprocess.run([VCMACTL, "--socket", d.ctl, "--json", "alloc", "--pool", "main", "8M"], capture_output=True,
                   text=True, timeout=60)
check(r.returncode == 0, "vcmactl alloc 8M in the fully lent pool succeeds: %s" % r.stderr.strip())
reg = json.loads(r.stdout)
f = frames(d)
check(reg["size_bytes"] == 8 << 20 and f["region"] == 2048 and f["claimed"] == 0,
      "the test region holds 2048 frames vacated for it (frames now %s)" % f)
r = subprocess.run([VCMACTL, "--socket", d.ctl, "free", reg["handle"]], capture_output=True, text=True, timeout=30)
check(r.returncode == 0 and frames(d)["region"] == 0, "and vcmactl free gives them back")
# a control client that asks for a vacating allocation and hangs up at once: the
# window is released when the job ends, nothing is left claimed or allocated
import socket  # noqa: E402
time.sleep(1.0)  # relend_idle_ms: the pool fills up again
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(d.ctl)
s.sendall(b'{"version":1,"id":7,"cmd":"alloc","bytes":8388608,"pool":"main"}\n')
s.close()
deadline = time.time() + 30
while time.time() < deadline and "vacated for a requester that left" not in d.logtext():
    time.sleep(0.1)
check(d.logtext().count("ctl: alloc requested") == 2 and "vacated for a requester that left" in d.logtext(),
      "the hung-up client's allocation was taken and its vacate job stopped%s"
      % ("" if "vacated for a requester that left" in d.logtext() else ":\n" + d.logtext()[-1500:]))
time.sleep(0.2)
f = frames(d)
st_regions = json.loads(subprocess.run([VCMACTL, "--socket", d.ctl, "--json", "regions"], capture_output=True,
                                       text=True, timeout=30).stdout)
check(f["claimed"] == 0 and f["region"] == 0 and st_regions["count"] == 0,
      "a client gone while its allocation vacated leaves nothing claimed or allocated (%s)" % f)

# answers keep the order of requests: a status sent right behind a vacating alloc is
# answered after it
time.sleep(1.0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(d.ctl)
s.sendall(b'{"version":1,"id":1,"cmd":"alloc","bytes":4194304,"pool":"main"}\n{"version":1,"id":2,"cmd":"status"}\n')
buf = b""
s.settimeout(30)
while buf.count(b"\n") < 2:
    chunk = s.recv(65536)
    if not chunk:
        fail("vcmad closed the control connection")
    buf += chunk
s.close()
a1, a2 = (json.loads(x) for x in buf.split(b"\n")[:2])
check(a1["id"] == 1 and a1["ok"] and a1["result"]["size_bytes"] == 4 << 20 and a2["id"] == 2 and a2["ok"],
      "alloc then status on one connection: answered in that order, the alloc vacated its window")
r = subprocess.run([VCMACTL, "--socket", d.ctl, "free", a1["result"]["handle"]], capture_output=True, text=True,
                   timeout=30)
check(r.returncode == 0, "the test region is freed")

# the allocating guest: one region at a time, each one needs a window vacated
t0 = time.time()
alloc = subprocess.run([SIMVM, "--socket", d.sock, "--name", "camera", "--ram", "4M", "--workload", "idle",
                        "--alloc", "1M,2M,4M,8M", "--max-regions", "1", "--count", "1000", "--interval-ms", "10",
                        "--duration", "300",
                        "--json"], capture_output=True, text=True, timeout=400)
took = time.time() - t0
sys.stderr.write(alloc.stderr[-2000:])
check(alloc.returncode == 0, "the allocating guest finished without error")
s = json.loads(alloc.stdout)
attempts = sum(z["attempts"] for z in s["sizes"])
ok = sum(z["ok"] for z in s["sizes"])
check(attempts >= 1000, "%d allocations of 1-8 MiB were made" % attempts)
check(ok == attempts, "every one succeeded (%d of %d): free + lent frames always covered it" % (ok, attempts))
check(s["pattern_errors"] == 0, "every region's DMA pattern read back")

r = subprocess.run([VCMACTL, "--socket", d.ctl, "--json", "stats"], capture_output=True, text=True, timeout=30)
stats = json.loads(r.stdout)
st = [p for p in stats["pools"] if p["name"] == "main"][0]
pl = stats["daemon"]["pause_latency"]
check(pl["count"] > 0 and pl["p50_ns"] <= pl["p99_ns"] <= pl["max_ns"] and stats["daemon"]["vacate_jobs_failed"] == 1,
      "vcmad counted %d VM pauses (p50 %.0f us, p99 %.0f us, max %.0f us) and one failed vacate job, the abandoned one"
      % (pl["count"], pl["p50_ns"] / 1e3, pl["p99_ns"] / 1e3, pl["max_ns"] / 1e3))
print("allocation took %.1f s; pages vacated: %d used (copied), %d free (dropped)"
      % (took, st["vacated_lent_used"], st["vacated_lent_free"]))
check(st["vacated_lent_used"] >= 4 * 2048, "windows were really vacated: %d lent pages moved out"
      % st["vacated_lent_used"])

# idle: the daemon moves the VMs' pages back onto the pool
deadline = time.time() + 60
while time.time() < deadline:
    f = frames(d)
    if f["free"] == 0 and f["claimed"] == 0:
        break
    time.sleep(0.2)
dm = json.loads(subprocess.run([VCMACTL, "--socket", d.ctl, "--json", "stats"], capture_output=True, text=True,
                               timeout=30).stdout)["daemon"]
check(dm["ordinary_reserved_frames"] == 0, "idle, no ordinary memory is reserved for moves")
check(f["free"] == 0 and f["lent_used"] + f["lent_free"] == f["total"],
      "idle again, the pool is fully lent (free %d, lent %d of %d)" % (f["free"], f["lent_used"] + f["lent_free"],
                                                                      f["total"]))

for p in vms:
    p.terminate()
sums = []
for i, p in enumerate(vms):
    out, err = p.communicate(timeout=60)
    try:
        sums.append(json.loads(out))
    except ValueError:
        fail("vm%d printed no summary (exit %d): %s" % (i, p.returncode, err[-500:]))
for s in sums:
    check(s["corruptions"] == 0 and s["errors"] == 0,
          "%s: %d pages verified, no corruption through %d pauses and %d remapped pages"
          % (s["name"], s["vcpu_pages_verified"], s["pauses"]["count"], s["remapped_pages"]))
check(sum(s["remapped_pages"] for s in sums) > 0, "pages were really moved under the running VMs")
pauses = [s["pauses"] for s in sums]
print("pause p99 per VM (us): %s, max %s" % ([p["p99_us"] for p in pauses], [p["max_us"] for p in pauses]))
time.sleep(0.5)
f = frames(d)
check(f["free"] == f["total"], "with every VM gone, every pool frame is free (%d of %d)" % (f["free"], f["total"]))
log = d.stop()
check("protocol violation" not in log, "no VM was cut off")
print("PASS")
