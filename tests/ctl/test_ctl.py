#!/usr/bin/env python3
"""vcmactl and vcmad's control socket against a running vcmad with simulated VMs.

Every subcommand runs with --json (parsed and checked against what the VMs and the
test's own allocations hold) and as text (checked for the key facts); usage errors
exit 2 and failed operations exit 1; an unauthorized uid reaches vcmad and is refused
by it; malformed, oversized and piled-up requests get error responses or the
documented disconnect, and vcmad keeps answering throughout.

usage: test_ctl.py VCMAD VCMACTL [VCMA-SIMVM]
Without a simvm, without $VCMACTL_COMPLETION, without a group "nogroup" or not as root,
the parts that need them are left out, and the test says so (partial).
"""
import grp
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

from vcmatest import CtlConn, Vcmad, check, ctl, fail, partial, set_tools, simvm, vm_summary, wait_until

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
SIMVM = sys.argv[3] if len(sys.argv) > 3 else None
set_tools(vcmactl=VCMACTL, simvm=SIMVM)
COMPLETION = os.environ.get("VCMACTL_COMPLETION")
MiB = 1 << 20

try:
    CTL_GROUP = grp.getgrnam("nogroup")
except KeyError:
    CTL_GROUP = None

CONFIG = """
[daemon]
max_guests = 8
relend_idle_ms = 3600000
%s
[machine]
memory = 512M
[limits]
max_ram_per_guest = 64M
[pool main]
size = 128M
quota = 64M
[pool camera]
size = 16M
mode = exclusive
bind = class:camera
""" % ("ctl_group = %s" % CTL_GROUP.gr_name if CTL_GROUP else "")


def run(*args, env=None, preexec=None, binary=None):
    """Run vcmactl; returns (exit status, stdout, stderr)."""
    r = subprocess.run([binary or VCMACTL, "--socket", CTL] + list(args), capture_output=True, text=True,
                       timeout=60, env=env, preexec_fn=preexec)
    return r.returncode, r.stdout, r.stderr


def ok(*args):
    rc, out, err = run(*args)
    if rc != 0:
        fail("vcmactl %s exited %d: %s" % (" ".join(args), rc, err.strip()))
    return out


def js(*args):
    """vcmactl --json ARGS: exactly one JSON object per line; returns the last."""
    return ctl(d, *args)


def failed(expect_rc, *args):
    rc, out, err = run(*args)
    if rc != expect_rc:
        fail("vcmactl %s: expected exit %d, got %d (%s)" % (" ".join(args), expect_rc, rc, err.strip()))
    return err


def pool(result, name):
    for p in result["pools"]:
        if p["name"] == name:
            return p
    fail("no pool %s in %s" % (name, result))


def answers():
    r = CtlConn(d)
    rsp = r.ask(b'{"version":1,"id":"ping","cmd":"status"}')
    r.close()
    return rsp is not None and rsp.get("ok") is True and rsp.get("id") == "ping"


if not SIMVM:
    partial("no vcma-simvm: guests, their regions, drain and compact are not tested with VMs")
if not COMPLETION:
    partial("no $VCMACTL_COMPLETION: the bash completion is not tested against vcmad")
if not CTL_GROUP:
    partial("no group 'nogroup': ctl_group is not tested")
d = Vcmad(VCMAD, CONFIG)
CTL = d.ctl_sock
st = os.stat(CTL)
check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660, "control socket exists with mode 0660")
if CTL_GROUP:
    check(st.st_gid == CTL_GROUP.gr_gid, "control socket belongs to ctl_group %s" % CTL_GROUP.gr_name)

# ---- usage errors (exit 2) and an unreachable daemon (exit 1) ----
r = subprocess.run([VCMACTL], capture_output=True, text=True)
check(r.returncode == 2 and "Usage" in r.stderr, "no command: usage on stderr, exit 2")
USAGE_ERRORS = (["bogus"], ["pools", "extra"], ["pool", "show"], ["pool", "list", "main"], ["alloc"],
                ["alloc", "2Q"], ["alloc", "--align", "3M", "2M"], ["free", "nothex"], ["free"], ["drain"],
                ["hash"], ["hash", "0"], ["hash", "1", "2"],
                ["stats", "--prometheus", "--json"], ["watch", "--count", "0"], ["watch", "--interval", "x"],
                ["pool", "show", "main", "--width", "5000"], ["status", "--nope"], ["--nope", "status"])
wrong = [(args, rc, err.strip()) for args in USAGE_ERRORS for rc, _, err in [run(*args)] if rc != 2]
check(not wrong, "usage errors exit 2 (%d cases)%s" % (len(USAGE_ERRORS), "; not: %s" % wrong if wrong else ""))
r = subprocess.run([VCMACTL, "--socket", d.dir + "/nope.sock", "status"], capture_output=True, text=True)
check(r.returncode == 1 and "cannot connect" in r.stderr, "an unreachable socket exits 1, the reason on stderr")
r = subprocess.run([VCMACTL, "status"], capture_output=True, text=True,
                   env=dict(os.environ, VCMA_CTL_SOCKET=CTL))
check(r.returncode == 0 and "vcmad" in r.stdout, "$VCMA_CTL_SOCKET selects the socket")
COMMANDS = ("status", "pools", "pool", "guests", "regions", "alloc", "free", "compact", "drain", "hash", "stats",
            "watch")
wrong = []
for c in COMMANDS:
    r = subprocess.run([VCMACTL, c, "--help"], capture_output=True, text=True)
    if r.returncode != 0 or ("vcmactl [OPTION]... " + c) not in r.stdout:
        wrong.append("vcmactl %s --help: exit %d, %r" % (c, r.returncode, r.stdout[:200]))
check(not wrong, "every command has --help (%d)%s" % (len(COMMANDS), "".join("\n  " + w for w in wrong)))

# ---- status, pools, pool show before anything is allocated ----
s = js("status")
check(s["pools"] == 2 and s["guests"] == 0 and s["regions"] == 0 and s["backend"] == "sim"
      and s["machine_bytes"] == 512 * MiB and s["version"], "status --json: 2 pools, no guests, no regions, sim, 512 MiB")
out = ok("status")
check("backend     sim, 512 MiB machine memory" in out and re.search(r"regions\s+0, 0 B", out),
      "status: backend, machine memory and regions in the text")

p0 = js("pools")
main0, cam0 = pool(p0, "main"), pool(p0, "camera")
check(main0["size_bytes"] == 128 * MiB and main0["frames"]["total"] == 32768 and main0["frames"]["free"] == 32768
      and main0["largest_free_run_frames"] == 32768 and main0["quota_bytes"] == 64 * MiB and main0["mode"] == "shared"
      and main0["lendable"] is True and main0["bind"] is None, "pools --json: main is 128 MiB, all free, quota 64 MiB")
check(cam0["mode"] == "exclusive" and cam0["bind"] == "class:camera" and cam0["lendable"] is False
      and cam0["quota_bytes"] is None, "pools --json: camera is exclusive to class camera, not lendable")
out = ok("pools")
check(re.search(r"^main\s+shared\s+-\s+yes\s+128 MiB\s+128 MiB\s+0 B\s+0 B\s+128 MiB\s+0\s+64 MiB\s+0x", out, re.M)
      and re.search(r"^camera\s+exclusive\s+class:camera\s+no\s+16 MiB", out, re.M),
      "pools: one aligned row per pool with units")

# ---- guests and their regions (simulated VMs) ----
if SIMVM:
    def vm(name, *extra):
        return simvm(d, name, "--ram", "32M", "--vcpus", "1", "--workload", "idle", "--max-regions", "1",
                     "--interval-ms", "600000", "--duration", "60", *extra)

    def regions_made():
        if any(v.poll() is not None for v in vms):
            fail("a VM exited before allocating its region:\n" + d.logtext())
        return js("regions")["count"] >= 2

    vms = [vm("vm0", "--alloc", "4M"), vm("vm1", "--class", "camera", "--alloc", "2M")]
    wait_until(regions_made, 20, "the VMs to allocate their regions")
    g = js("guests")["guests"]
    byname = {x["name"]: x for x in g}
    check(sorted(byname) == ["vm0", "vm1"], "guests --json: vm0 and vm1")
    check(byname["vm0"]["ram_bytes"] == 32 * MiB and byname["vm0"]["regions"] == 1
          and byname["vm0"]["bytes"] == 4 * MiB and byname["vm0"]["alloc_ok"] >= 1 and byname["vm0"]["role"] == "vmm",
          "guests --json: vm0 has 32 MiB RAM and one 4 MiB region")
    check(byname["vm1"]["class"] == "camera" and byname["vm1"]["bytes"] == 2 * MiB,
          "guests --json: vm1 is class camera with 2 MiB")
    out = ok("guests")
    check(re.search(r"vm0\s+-\s+vmm\s+32 MiB\s+1\s+4 MiB", out) and re.search(r"vm1\s+camera\s+vmm\s+32 MiB\s+1\s+2 MiB", out)
          and "2 guest(s)" in out, "guests: names, class, role, RAM, regions and bytes in the table")

    r0 = js("regions", "--guest", "vm0")
    check(r0["count"] == 1 and r0["bytes"] == 4 * MiB and r0["regions"][0]["guest_name"] == "vm0"
          and r0["regions"][0]["pool"] == "main", "regions --guest vm0: its one 4 MiB region in main")
    reg = r0["regions"][0]
    check(main0["base"] <= reg["bus"] < main0["base"] + main0["size_bytes"] and reg["gpa"] != 0
          and reg["bus"] == reg["mfn"] << 12 and reg["handle"].startswith("0x"),
          "region: bus address inside pool main, a guest-physical address, hex handle")
    r1 = js("regions", "--pool", "camera")
    check(r1["count"] == 1 and r1["regions"][0]["guest_name"] == "vm1" and r1["regions"][0]["size_bytes"] == 2 * MiB,
          "regions --pool camera: vm1's region")
    check(js("regions", "--guest", str(byname["vm1"]["id"]))["regions"] == r1["regions"],
          "regions --guest ID selects the same region as --pool camera")
    out = ok("regions")
    check(reg["handle"] in out and "vm0" in out and "vm1" in out and "2 region(s), 6 MiB" in out,
          "regions: handles, owners and the total in the text")
    s = js("status")
    check(s["guests"] == 2 and s["regions"] == 2 and s["region_bytes"] == 6 * MiB and s["attaches"] >= 2,
          "status --json: 2 guests, 2 regions, 6 MiB")
    ps = js("pool", "show", "main")
    check(ps["frames"]["region"] == 1024 and ps["regions"] == 1 and "#" in ps["map"]["text"]
          and [u["name"] for u in ps["usage"]] == ["vm0"] and ps["usage"][0]["bytes"] == 4 * MiB,
          "pool show main --json: 1024 region frames, '#' in the map, vm0 holds 4 MiB")
    # lend_share defaults to 50%: half of each VM's RAM sits on pool frames
    lent = sum(p["frames"]["lent_free"] + p["frames"]["lent_used"] for p in js("pools")["pools"])
    check(lent > 0, "the VMs' RAM is partly lent from the pools (%d frames)" % lent)
    rc, out, err = run("--json", "drain", "vm0")
    check(rc == 0, "drain vm0 with %d lent frames in the pools succeeds" % lent)
    dr = json.loads(out)
    check(dr["guest_name"] == "vm0" and dr["scheduled"] == dr["lent_found"] > 0,
          "drain vm0 --json: every lent frame found was scheduled to move")
    now = wait_until(lambda n: n == lent - dr["lent_found"], 10, "vm0's pages to leave the pools",
                     probe=lambda: sum(p["frames"]["lent_free"] + p["frames"]["lent_used"]
                                       for p in js("pools")["pools"]))
    check(now == lent - dr["lent_found"], "after the drain vm0's %d pages left the pools (lent %d -> %d)"
          % (dr["lent_found"], lent, now))
    check(js("drain", "vm0")["lent_found"] == 0, "a second drain finds nothing of vm0's left")
    ps = js("pool", "show", "main")
    check(set(ps["map"]["text"]) & set("lL"), "pool show main --json: lent frames show as 'l'/'L' in the map")
    # compact main: vm1's pages on pool main leave it too, and it stays unlent
    left = ps["frames"]["lent_free"] + ps["frames"]["lent_used"]
    c = js("compact", "main")
    check(c["lent_found"] == left > 0 and c["scheduled"] == left and len(c["pools"]) == 1,
          "compact main --json: the %d lent frames left are scheduled to move" % left)
    f = wait_until(lambda f: f["free"] == 128 * MiB // 4096 - 1024, 10, "compact to empty pool main but vm0's region",
                   probe=lambda: js("pool", "show", "main")["frames"])
    check(f["lent_free"] + f["lent_used"] == 0 and f["free"] == f["total"] - 1024,
          "after compact, pool main holds no lent frame, only vm0's region: %s" % f)
    out = ok("compact", "main")
    check("main" in out and "0 lent frame(s) found in 1 pool(s), 0 scheduled to move" in out,
          "compact (text): nothing left to move, said in words")
    err = failed(1, "free", reg["handle"])
    check("EPERM" in err and "belongs to guest" in err, "free of a guest's region is refused (EPERM)")
    if COMPLETION:
        comp = subprocess.run(["bash", "-c", 'source "$1"; COMP_WORDS=(vcmactl --socket "$2" drain ""); COMP_CWORD=4; '
                               '_vcmactl; echo "${COMPREPLY[*]}"', "-", COMPLETION, CTL],
                              capture_output=True, text=True, env=dict(os.environ, PATH=os.path.dirname(VCMACTL)
                                                                        + ":" + os.environ["PATH"]))
        check(sorted(comp.stdout.split()) == ["vm0", "vm1"], "bash completion: drain completes guest names")
    for v in vms:
        v.send_signal(signal.SIGTERM)
    for v in vms:
        vm_summary(v, "a VM", timeout=30)
    s = wait_until(lambda s: s["guests"] == 0, 10, "the VMs to detach", probe=lambda: js("status"))
    check(s["regions"] == 0 and s["detaches"] >= 2, "after the VMs left: no regions, 2 detaches")
check(js("guests")["guests"] == [], "guests --json: none attached")

# ---- admin allocations: known state in, counts out ----
a = js("alloc", "--pool", "main", "2M")
check(a["guest"] == 0 and a["guest_name"] == "vcmactl" and a["size_bytes"] == 2 * MiB and a["frames"] == 512
      and a["pool"] == "main" and a["handle"].startswith("0x"), "alloc --json: a 2 MiB region owned by vcmactl (guest 0)")
main1 = pool(js("pools"), "main")
check(main1["frames"]["region"] == 512 and main1["frames"]["free"] == 32768 - 512 and main1["regions"] == 1,
      "pools --json: 512 region frames after the alloc")
check(main1["largest_free_run_frames"] == main0["largest_free_run_frames"] - 512,
      "pools --json: the largest free run shrank by 512 frames")
ps = js("pool", "show", "main", "--width", "64")
check(len(ps["map"]["text"]) == 64 and ps["map"]["frames_per_char"] == 512 and ps["map"]["text"][0] == "#"
      and set(ps["map"]["text"][1:]) == {"."}, "pool show --width 64 --json: '#' for the 2 MiB region, '.' for the rest")
check(set(ps["map"]["legend"]) == set(".lL#r~x"), "pool show --json: the legend names every map character")
check(ps["usage"] == [{"guest": 0, "name": "vcmactl", "regions": 1, "bytes": 2 * MiB}],
      "pool show --json: per-guest usage lists vcmactl's 2 MiB")
out = ok("pool", "show", "main")
check("#" in out and "legend:" in out and "region" in out and "largest free run: 126 MiB (32256 frames)" in out
      and "32256 free" in out and "512 region" in out and "vcmactl" in out,
      "pool show: map, legend, counts, largest free run and usage in the text")
rows = [line for line in out.splitlines() if re.match(r"\s+0x[0-9a-f]+  [.lL#r~x]+$", line)]
check(len(rows) >= 2 and "".join(row.split()[1] for row in rows).startswith("####")
      and len("".join(row.split()[1] for row in rows)) == 256,
      "pool show: the 256-character map is wrapped into address-prefixed rows")
rg = js("regions", "--guest", "vcmactl")
check(rg["count"] == 1 and rg["regions"][0]["handle"] == a["handle"] and rg["regions"][0]["gpa"] == 0,
      "regions --guest vcmactl: the test allocation")
check(a["handle"] in ok("regions", "--pool", "main"), "regions --pool main: the handle in the text")
gs = js("guests")["guests"]
check(len(gs) == 1 and gs[0]["role"] == "admin" and gs[0]["bytes"] == 2 * MiB, "guests --json: the vcmactl pseudo-guest")
out = ok("alloc", "--align", "4M", "1M")
m = re.search(r"allocated 1 MiB in pool main: handle (0x[0-9a-f]+) at bus address (0x[0-9a-f]+)", out)
check(m and int(m.group(2), 16) % (4 * MiB) == 0, "alloc --align 4M: the text names handle and a 4 MiB aligned address")
h2 = m.group(1)
hs = js("hash", a["handle"])
zeros = 0xcbf29ce484222325
for _ in range(2 * MiB):
    zeros = (zeros * 0x100000001b3) & 0xffffffffffffffff  # FNV-1a of a zero byte: xor is a no-op
check(hs["handle"] == a["handle"] and hs["guest"] == 0 and hs["size_bytes"] == 2 * MiB
      and int(hs["fnv1a64"], 16) == zeros, "hash --json: FNV-1a of the zeroed 2 MiB region")
check(re.search(r"region %s \(guest 0, 2 MiB\): fnv1a64 0x[0-9a-f]+" % a["handle"], ok("hash", a["handle"])),
      "hash: the text names region, owner, size and hash")
check("ENOENT" in failed(1, "hash", "0x7777"), "hash of an unknown handle: ENOENT, exit 1")
check("freed region " + h2 in ok("free", h2), "free: the text confirms")
f = js("free", a["handle"])
check(f["handle"] == a["handle"], "free --json: the handle")
main2 = pool(js("pools"), "main")
check(main2["frames"] == main0["frames"] and main2["largest_free_run_frames"] == main0["largest_free_run_frames"]
      and main2["regions"] == 0, "pools --json: counts restored after the frees")
err = failed(1, "free", a["handle"])
check("ENOENT" in err, "free of a freed handle: ENOENT, exit 1")
check("EACCES" in failed(1, "alloc", "--pool", "camera", "1M"), "alloc in an exclusive pool: EACCES, exit 1")
check("E2BIG" in failed(1, "alloc", "1G"), "alloc larger than the pool: E2BIG, exit 1")
check("ERANGE" in failed(1, "alloc", "4K"), "alloc below min_request: ERANGE (use normal memory), exit 1")
check("no such pool (ENODEV)" in failed(1, "alloc", "--pool", "nope", "1M"), "alloc in an unknown pool: ENODEV, exit 1")
check("ENOENT" in failed(1, "pool", "show", "nope"), "pool show of an unknown pool: ENOENT, exit 1")
check("ENOENT" in failed(1, "regions", "--guest", "nobody"), "regions --guest of an unknown guest: ENOENT")
check("ENOENT" in failed(1, "drain", "nobody"), "drain of an unknown guest: ENOENT")

# ---- compact ----
c = js("compact")
check([p["name"] for p in c["pools"]] == ["main", "camera"] and c["lent_found"] == 0 and c["scheduled"] == 0
      and pool(c, "main")["largest_free_run_bytes"] == 128 * MiB, "compact --json: both pools, nothing lent")
check(len(js("compact", "main")["pools"]) == 1, "compact POOL: one pool")
check("compact: 0 lent frame(s) found in 2 pool(s), 0 scheduled to move" in ok("compact"), "compact: the summary line")
check("ENOENT" in failed(1, "compact", "nope"), "compact of an unknown pool: ENOENT")

# ---- stats, as JSON, text and Prometheus ----
held = js("alloc", "3M")
st = js("stats")
sm = pool(st, "main")
h = sm["alloc_latency"]
check(sm["alloc_success"] >= 3 and sm["alloc_fail"] >= 2 and sm["release_pages_success"] >= 512 + 256
      and sm["alloc_pages_success"] >= 512 + 256 + 768, "stats --json: the allocations and frees are counted")
check(h["count"] == sm["alloc_success"] and sum(b["count"] for b in h["buckets"]) == h["count"]
      and 0 < h["p50_ns"] <= h["p99_ns"] and h["sum_ns"] > 0 and h["buckets"][-1]["le_ns"] is None,
      "stats --json: histogram buckets add up to the count, p50 <= p99")
check(st["daemon"]["ctl"]["requests"] > 20 and st["daemon"]["regions"] == 1, "stats --json: daemon and ctl counters")
out = ok("stats")
check(re.search(r"^main\s+%d\s+%d" % (sm["alloc_success"], sm["alloc_fail"]), out, re.M)
      and "allocation latency, pool main:" in out and "p99" in out and "daemon: up" in out,
      "stats: counters table and latency summaries in the text")
prom = ok("stats", "--prometheus")
types, samples = {}, {}
for line in prom.splitlines():
    if line.startswith("# TYPE "):
        _, _, name, typ = line.split(" ")
        types[name] = typ
    elif line.startswith("# HELP "):
        continue
    else:
        m = re.fullmatch(r'([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)', line)
        if not m:
            fail("not Prometheus text exposition: %r" % line)
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        fam = base if types.get(base) == "histogram" else m.group(1)
        if fam not in types:
            fail("sample before its # TYPE line: %r" % line)
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
check(types.get("vcma_pool_alloc_success_total") == "counter" and types.get("vcma_alloc_latency_seconds") == "histogram"
      and types.get("vcma_pool_frames") == "gauge", "stats --prometheus: HELP/TYPE lines for counters, gauges, histogram")
check(samples['vcma_pool_alloc_success_total{pool="main"}'] == sm["alloc_success"]
      and samples['vcma_pool_frames{pool="main",state="region"}'] == 768,
      "stats --prometheus: samples equal the JSON counters")
buckets = [(k, v) for k, v in samples.items() if k.startswith('vcma_alloc_latency_seconds_bucket{pool="main"')]
vals = [v for _, v in buckets]
check(vals == sorted(vals) and buckets[-1][0].endswith('le="+Inf"}') and vals[-1] == h["count"]
      and samples['vcma_alloc_latency_seconds_count{pool="main"}'] == vals[-1],
      "stats --prometheus: cumulative buckets ending in +Inf = _count")
pause = js("stats")["daemon"]["pause_latency"]
check(types.get("vcmad_vacate_pause_seconds") == "histogram"
      and samples['vcmad_vacate_pause_seconds_bucket{le="+Inf"}'] == pause["count"]
      and samples["vcmad_vacate_pause_seconds_count"] == pause["count"],
      "stats --prometheus: the VM pause histogram, unlabelled, +Inf = _count = JSON count (%d)" % pause["count"])
turns = js("stats")["daemon"]["loop_turn"]  # later than the exposition: every request takes turns
check(types.get("vcmad_loop_turn_seconds") == "histogram"
      and 0 < samples['vcmad_loop_turn_seconds_bucket{le="+Inf"}'] == samples["vcmad_loop_turn_seconds_count"]
      < turns["count"] and 0 < turns["p50_ns"] <= turns["p99_ns"] <= turns["max_ns"],
      "stats: vcmad's loop turns, a histogram in JSON and Prometheus (%d turns, max %d ns)"
      % (turns["count"], turns["max_ns"]))
ok("free", held["handle"])

# ---- watch ----
out = ok("watch", "--count", "2", "--interval", "0.1")
pics = out.split("\n\n" + "vcmad ")
check(out.count("POOL ") == 2 and len(pics) == 2 and out.count("legend:") == 2
      and re.search(r"^main\s+\.+$", out, re.M), "watch --count 2: two pictures with table and maps, blank-line separated")
lines = ok("--json", "watch", "--count", "3", "--interval", "0.05").splitlines()
check(len(lines) == 3 and all(len(json.loads(x)["pools"]) == 2 for x in lines), "watch --json --count 3: three pools results")

# ---- bash completion against the running vcmad ----
if COMPLETION:
    comp = subprocess.run(["bash", "-c", 'source "$1"; COMP_WORDS=(vcmactl --socket "$2" pool show ""); COMP_CWORD=5; '
                           '_vcmactl; echo "${COMPREPLY[*]}"', "-", COMPLETION, CTL],
                          capture_output=True, text=True,
                          env=dict(os.environ, PATH=os.path.dirname(VCMACTL) + ":" + os.environ["PATH"]))
    check(sorted(comp.stdout.split()) == ["camera", "main"], "bash completion: pool show completes pool names")

# ---- malformed requests on a raw connection: an error each, the connection stays ----
r = CtlConn(d)
BAD = [
    (b"not json", "EINVAL"),
    (b"[1,2,3]", "EINVAL"),
    (b'"status"', "EINVAL"),
    (b"null", "EINVAL"),
    (b"", "EINVAL"),
    (b'{"version":1,"cmd":"status"} trailing', "EINVAL"),
    (b'{"cmd":"status"}', "EINVAL"),
    (b'{"version":"1","cmd":"status"}', "EINVAL"),
    (b'{"version":2,"cmd":"status"}', "EPROTO"),
    (b'{"version":1}', "EINVAL"),
    (b'{"version":1,"cmd":"reboot"}', "EINVAL"),
    (b'{"version":1,"cmd":7}', "EINVAL"),
    (b'{"version":1,"cmd":"pool"}', "EINVAL"),
    (b'{"version":1,"cmd":"pool","pool":5}', "EINVAL"),
    (b'{"version":1,"cmd":"pool","pool":"../etc"}', "EINVAL"),
    (b'{"version":1,"cmd":"pool","pool":"main","width":0}', "EINVAL"),
    (b'{"version":1,"cmd":"pool","pool":"main","width":1e3}', "EINVAL"),
    (b'{"version":1,"cmd":"alloc"}', "EINVAL"),
    (b'{"version":1,"cmd":"alloc","bytes":"2M"}', "EINVAL"),
    (b'{"version":1,"cmd":"alloc","bytes":-4096}', "EINVAL"),
    (b'{"version":1,"cmd":"alloc","bytes":99999999999999999999999}', "EINVAL"),
    (b'{"version":1,"cmd":"alloc","bytes":4096,"align":3000}', "EINVAL"),
    (b'{"version":1,"cmd":"free","handle":true}', "EINVAL"),
    (b'{"version":1,"cmd":"free","handle":"0xzz"}', "EINVAL"),
    (b'{"version":1,"cmd":"free","handle":0}', "EINVAL"),
    (b'{"version":1,"cmd":"drain","guest":-1}', "EINVAL"),
    (b'{"version":1,"cmd":"status","pool":"main"}', "EINVAL"),
    (b'{"version":1,"cmd":"pool","pool":"\xff\xfe"}', "EINVAL"),
    (b'\x00\x01\x02\xff\xfe binary \x7f garbage', "EINVAL"),
    (b'{"version":1,"id":' + b"[" * 200 + b"]" * 200 + b',"cmd":"status"}', "EINVAL"),
]
wrong = []
for i, (req, code) in enumerate(BAD):
    rsp = r.ask(req)
    if rsp is None:
        fail("bad request %r: vcmad closed the connection" % req[:60])
    if rsp.get("ok") is not False or rsp.get("version") != 1 or rsp["error"]["code"] != code or not rsp["error"]["message"]:
        wrong.append("%r: expected error %s, got %r" % (req[:60], code, rsp))
check(not wrong, "%d malformed requests: one error response each, with code and message%s"
      % (len(BAD), "".join("\n  " + w for w in wrong)))
rsp = r.ask(b'{"version":1,"id":42,"cmd":"reboot"}')
check(rsp["id"] == 42 and "unknown command" in rsp["error"]["message"], "an error response echoes the request's id")
rid = {"a": [1, "x", None, True], "b": 1.5}
rsp = r.ask(json.dumps({"version": 1, "id": rid, "cmd": "status"}).encode())
check(rsp["ok"] and rsp["id"] == rid, "any JSON id is echoed untouched")
r.send(b'{"version":1,"id":1,"cmd":"status"}\n{"version":1,"id":2,"cmd":"pools"}\r\n{"version":1,"id":3,"cmd":"bad"}\n')
got = [r.line(), r.line(), r.line()]
check([x["id"] for x in got] == [1, 2, 3] and [x["ok"] for x in got] == [True, True, False],
      "pipelined requests are answered in order")
pad = b'{"version":1,"cmd":"status","id":"'
pad += b"x" * (65536 - len(pad) - 2) + b'"}'
check(len(pad) == 65536 and r.ask(pad)["ok"], "a 64 KiB request line is served")
rsp = r.ask(b'{"version":1,"id":"after","cmd":"status"}')
check(rsp["ok"] and rsp["id"] == "after", "the connection still serves after all the bad requests")
r.send(b'{"version":1,"cmd":"status","id":"' + b"y" * (100 << 10) + b'"}\n')
rsp = r.line()
check(rsp is not None and rsp["ok"] is False and rsp["error"]["code"] == "EMSGSIZE"
      and "request too large" in rsp["error"]["message"], "a 100 KiB line: EMSGSIZE, request too large")
check(r.closed(), "... and that connection is closed")
r.close()
r = CtlConn(d)
r.send(b'{"version":1,"id":"eof","cmd":"status"}')
r.s.shutdown(socket.SHUT_WR)
rsp = r.line()
check(rsp and rsp["id"] == "eof" and r.closed(), "a last request without newline before EOF is answered, then closed")
r.close()
check(answers(), "vcmad answers after the malformed requests")

# ---- bounds: too many clients, a client that does not read ----
conns = [CtlConn(d) for _ in range(16)]
for c in conns:
    check_rsp = c.ask(b'{"version":1,"cmd":"status"}')
    if not check_rsp or not check_rsp["ok"]:
        fail("one of 16 clients was not served")
extra = CtlConn(d)
rsp = extra.line()
check(rsp and rsp["error"]["code"] == "EBUSY" and extra.closed(), "a 17th client gets EBUSY and is closed")
extra.close()
for c in conns:
    c.close()
wait_until(lambda n: n <= 1, 10, "vcmad to notice 16 clients going away (clients, counting the stats request's own)",
           probe=lambda: js("stats")["daemon"]["ctl"]["clients"])
mark = d.log_mark()
hog = CtlConn(d)
hog.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
hog.s.settimeout(5)
req = b'{"version":1,"cmd":"pool","pool":"main","width":1024}\n' * 64
sent = 0
try:
    while sent < 64 << 20:
        hog.s.sendall(req)
        sent += len(req)
except (BrokenPipeError, ConnectionResetError, socket.timeout):
    pass
dropped = wait_until(lambda n: n >= 1, 10, "vcmad to drop a client that never reads (sent %d bytes)" % sent,
                     probe=lambda: js("stats")["daemon"]["ctl"]["dropped"])
hog.close()
check(dropped == 1 and re.search(r"ctl: dropping client pid \d+ uid \d+: more than 1 MiB of responses unread",
                                 d.log_since(mark)),
      "a client that asks without reading is dropped past 1 MiB of unread responses (%d KiB of requests sent)"
      % (sent >> 10))
check("dropping client" in d.logtext(), "the drop is logged")
check(answers(), "vcmad answers after the bounds were hit")

# ---- who may connect: SO_PEERCRED, ctl_group ----
if os.geteuid() != 0:
    partial("not root: vcmactl is not run as another user (SO_PEERCRED, ctl_group)")
else:
    os.chmod(d.dir, 0o711)
    os.chmod(d.rundir, 0o755)
    bindir = os.path.join(d.dir, "bin")
    os.mkdir(bindir)
    os.chmod(bindir, 0o755)
    ctl_copy = shutil.copy(VCMACTL, bindir)
    os.chmod(ctl_copy, 0o755)
    env = {"PATH": "/usr/bin:/bin", "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", ""),
           "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "")}

    def as_user(uid, gid, groups):
        def drop():
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
        return drop

    if CTL_GROUP:
        gid = CTL_GROUP.gr_gid
        rc, out, err = run("status", env=env, preexec=as_user(65534, gid, []), binary=ctl_copy)
        check(rc == 0 and "vcmad" in out, "uid 65534 with primary group %s (ctl_group) is served" % CTL_GROUP.gr_name)
        rc, out, err = run("--json", "pools", env=env, preexec=as_user(65534, 54321, [gid]), binary=ctl_copy)
        check(rc == 0 and json.loads(out)["pools"], "uid 65534 with %s as a supplementary group is served"
              % CTL_GROUP.gr_name)
    # The socket's mode is the first fence; open it so the connection reaches the
    # second, vcmad's own SO_PEERCRED check, which must refuse this peer.
    os.chmod(CTL, 0o666)
    before = js("stats")["daemon"]["ctl"]["refused"]
    rc, out, err = run("status", env=env, preexec=as_user(65534, 54321, []), binary=ctl_copy)
    check(rc == 1 and "permission denied" in err and "EACCES" in err and "uid 65534" in err,
          "uid 65534 outside ctl_group: vcmad accepts the connection and refuses it (%s)" % err.strip())
    check(js("stats")["daemon"]["ctl"]["refused"] == before + 1, "the refusal is counted by vcmad")
    check("ctl: refused pid" in d.logtext(), "the refusal is logged")
    check(answers(), "vcmad answers root after refusing")

check(d.alive(), "vcmad is still running")
d.stop()
check(not os.path.exists(CTL), "vcmad removed its control socket on shutdown")
print("PASS")
