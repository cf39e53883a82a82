#!/usr/bin/env python3
"""vcma on Xen against the same ring trip on QEMU, and the balloon-style take-back
against the balloon alone, all measured in one run:

  Xen     real Xen 4.17 + Debian dom0 under QEMU (TCG), vcmad in dom0 on the xen
          backend; a PV domU with vcma.ko over xenbus runs vcma-e2e bench-sizes:
          the ring trip (VCMA_IOC_QUERY), then ALLOC+FREE of 1, 2 and 4 MiB (each an
          extent moved from vcmad's holder domain into the guest and back)
  QEMU    the same guest program with vcma.ko over ivshmem-doorbell, vcmad on the sim
          backend (Debian's kernel under QEMU TCG on this host)

  take-back (in the Xen boot) pool lend (32 MiB, lendable) is lent to a lender
          domU's balloon while idle; `vcmactl alloc --pool lend 8M` then needs 8 MiB
          of it back: vcmad lowers the lender's target and holds frames again, at
          once while Xen has free memory, and as the balloon gives pages back once a
          paused filler domain has taken all of Xen's free memory. Beside it, from the
          same dom0: the same alloc from pool main (held, no take-back), and the
          balloon alone (bench/xen_dom0_tools.c: the lender's target lowered by
          8 MiB, tot_pages polled every millisecond until Xen counts them gone).

Absolute times under TCG are far above KVM or bare metal (every guest instruction is
emulated, and Xen runs nested in it); the ratios within one column are what carry over.

usage: bench-xen.py VCMAD VCMACTL SOURCE_ROOT [--quick]
Exit 77 when Xen, QEMU or the guest kernel cannot be had (then it says why).
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile

VCMAD, VCMACTL, ROOT = sys.argv[1:4]
QUICK = "--quick" in sys.argv[4:]
N = 30 if QUICK else 200      # ring trips and ALLOC+FREE per size
K = 2 if QUICK else 5         # take-backs, and balloon-alone rounds

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "qemu"))
sys.path.insert(0, os.path.join(ROOT, "tests", "xen"))
from vcmatest import Vcmad, fail  # noqa: E402
import guestbuild  # noqa: E402
import xenvm  # noqa: E402

BENCH_RE = r"VCMA-BENCH op=(\w+) n=(\d+) p50_us=([\d.]+) p99_us=([\d.]+) mean_us=([\d.]+)"
OPS = [("query", "ring trip (QUERY pool)"), ("alloc_free_1m", "ALLOC+FREE 1 MiB"),
       ("alloc_free_2m", "ALLOC+FREE 2 MiB"), ("alloc_free_4m", "ALLOC+FREE 4 MiB")]

ver = subprocess.run([VCMAD, "--version"], capture_output=True, text=True).stdout
if not re.search(r"^backends:.* xen\b", ver, re.M):
    fail("%s was built without the Xen backend; install libxen-dev (scripts/setup-deps.sh --for bench) and "
         "rebuild" % VCMAD)
env = xenvm.prepare(ROOT)            # exits 77 saying why, when Xen cannot be had
parts = guestbuild.prepare(ROOT)     # vcma.ko and vcma-e2e for Debian's kernel

# ---- Xen ----
work = tempfile.mkdtemp(prefix="vcma-bench-xen-")
tools = os.path.join(work, "xen-dom0-tools")
r = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", tools,
                    os.path.join(ROOT, "bench", "xen_dom0_tools.c"), "-lxenctrl", "-lxenstore"],
                   capture_output=True, text=True)
if r.returncode:
    fail("building bench/xen_dom0_tools.c:\n" + r.stdout + r.stderr)

run = xenvm.XenRun(env, work, memory=2048)
run.add_dom0_file(VCMAD, "/usr/sbin/vcmad")
run.add_dom0_file(VCMACTL, "/usr/sbin/vcmactl")
run.add_dom0_file(tools, "/usr/bin/xen-dom0-tools")
run.domU_image("lend1", "while true; do sleep 1; done\n")
run.domU_image("filler", "while true; do sleep 1; done\n")  # paused as soon as it is created
run.domU_image("bench", r"""
insmod /vcma.ko || echo "BENCH insmod failed"
i=0; while [ ! -e /dev/vcma ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
/vcma-e2e bench-sizes %d
echo "BENCH rc=$?"
""" % N, files=[(parts["vcma.ko"], "/vcma.ko"), (parts["vcma-e2e"], "/vcma-e2e", 0o755)])

DOM0 = r"""
K=%d
mkdir -p /etc/vcma /run/vcma
cat >/etc/vcma/vcmad.conf <<EOF
[daemon]
backend = xen
relend_idle_ms = 200
[pool main]
size = 64M
max_region = 8M
lendable = no
[pool lend]
size = 32M
max_region = 8M
lendable = yes
[guest bench]
backend = xen
[guest lend1]
backend = xen
lender = yes
attach = manual
EOF
num() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
lent() { vcmactl --json stats | sed 's/.*"balloon"//' | num lent_bytes; }
vcmad -c /etc/vcma/vcmad.conf >$XENVM_OUT/vcmad.log 2>&1 &
VP=$!
xen_poll 30 test -S /run/vcma/vcmad-ctl.sock || exit 10

vcmactl --json stats | sed 's/.*"xen"://' >$XENVM_OUT/xen0.json
xen_create bench 128 || exit 11
xen_poll 600 grep -q '^BENCH rc=' /var/log/xen/console/guest-bench.log || exit 12
vcmactl --json stats | sed 's/.*"xen"://' >$XENVM_OUT/xen.json
xen_destroy bench

xen_create lend1 96 256 || exit 13
all_lent() { [ "$(lent)" -ge $((32 << 20)) ]; }
xen_poll 120 all_lent || exit 14
D=$(xen_domid lend1)
i=0
while [ $i -lt $K ]; do
	i=$((i+1))
	xen_poll 60 all_lent || exit 15
	xen-dom0-tools timeit vcmactl alloc --pool main 8M >/tmp/a 2>>$XENVM_OUT/held.txt || exit 16
	vcmactl free $(sed -n 's/.*handle \(0x[0-9a-f]*\).*/\1/p' /tmp/a | head -1) >/dev/null
	xen-dom0-tools timeit vcmactl alloc --pool lend 8M >/tmp/a 2>>$XENVM_OUT/takeback.txt || exit 17
	vcmactl free $(sed -n 's/.*handle \(0x[0-9a-f]*\).*/\1/p' /tmp/a | head -1) >/dev/null
done

# Xen's memory all handed out (as on a host whose domains use it all): a paused filler
# domain takes what is free, so capacity comes back only as the balloon gives it
xfree() { xl info | awk '$1 == "free_memory" { print $3 }'; }
F=$(xfree)
for slack in 6 10 16 24 32 48; do
	xen_create filler $((F - slack)) >/dev/null 2>&1 && break
	xl destroy filler >/dev/null 2>&1
done
xl pause filler || exit 18
F0=$(xfree)
echo "$F0" >$XENVM_OUT/free_full.txt
i=0
while [ $i -lt $K ]; do
	i=$((i+1))
	xen_poll 60 all_lent || exit 19
	# the lender's balloon has taken what it was lent: Xen is full again
	full() { [ "$(xfree)" -le $((F0 + 1)) ]; }
	xen_poll 60 full || echo "not full: $(xfree) MiB free" >>$XENVM_OUT/takeback_full.txt
	xen-dom0-tools timeit vcmactl alloc --pool lend 8M >/tmp/a 2>>$XENVM_OUT/takeback_full.txt || exit 20
	vcmactl free $(sed -n 's/.*handle \(0x[0-9a-f]*\).*/\1/p' /tmp/a | head -1) >/dev/null
done
xl destroy filler
vcmactl --json stats | sed 's/.*"balloon"//' >$XENVM_OUT/balloon.json

# the balloon alone: lower the target by 8 MiB, until Xen counts 8 MiB fewer pages
i=0
while [ $i -lt $K ]; do
	i=$((i+1))
	xen-dom0-tools balloon $D 8192 2>>$XENVM_OUT/balloon.txt
done
xen_destroy lend1
kill $VP
wait $VP
""" % K

res = run.boot(DOM0, timeout=1500 if not QUICK else 900)
if res.status != "exited" or res.rc != 0:
    print(open(os.path.join(res.out, "vcmad.log")).read()[-3000:] if os.path.exists(
        os.path.join(res.out, "vcmad.log")) else "")
    fail("the Xen boot did not run to its end:\n" + res.explain())
xen = {m.group(1): (float(m.group(3)), float(m.group(4))) for m in re.finditer(BENCH_RE, res.logs.get("domU:bench", ""))}
xen_mean = {m.group(1): float(m.group(5)) for m in re.finditer(BENCH_RE, res.logs.get("domU:bench", ""))}


def times(name):
    path = os.path.join(res.out, name)
    return [float(x) for x in re.findall(r"TIMEIT ms=([\d.]+) rc=0", open(path).read())] if os.path.exists(path) else []


held, takeback, balloon = times("held.txt"), times("takeback.txt"), times("balloon.txt")
takeback_full = times("takeback_full.txt")
free_full = open(os.path.join(res.out, "free_full.txt")).read().strip() if os.path.exists(
    os.path.join(res.out, "free_full.txt")) else "?"
bj = open(os.path.join(res.out, "balloon.json")).read() if os.path.exists(os.path.join(res.out, "balloon.json")) else ""

# ---- QEMU, the same guest program ----
d = Vcmad(VCMAD, """
[daemon]
max_guests = 4
[machine]
memory = 512M
[pool main]
size = 64M
[guest bench]
backend = qemu
""")
vm = guestbuild.boot(parts, "insmod /vcma.ko\n/vcma-e2e bench-sizes %d\necho \"VCMA-EXIT bench $?\"\npoweroff -f\n" % N,
                     [(os.path.join(d.rundir, "bench.ivshmem"), "0000:00:04.0")])
qemu = {}
try:
    for _ in OPS:
        m = vm.expect(BENCH_RE, 900)
        qemu[m.group(1)] = (float(m.group(3)), float(m.group(4)))
    if vm.expect(r"VCMA-EXIT bench (\d+)", 60).group(1) != "0":
        fail("vcma-e2e bench-sizes failed on QEMU")
    vm.wait_exit(60)
finally:
    vm.kill()
d.stop()

missing = [k for k, _ in OPS if k not in xen or k not in qemu]
if missing or len(takeback) < K or len(held) < K or len(balloon) < K or len(takeback_full) < K:
    fail("missing results: %s; xen %s qemu %s take-back %s held %s balloon %s"
         % (missing, xen, qemu, takeback, held, balloon))

print("guest userspace -> vcma.ko -> vcmad, %d iterations each (both under QEMU TCG on this host)" % N)
print("%-24s %12s %12s %12s %12s %10s" % ("operation", "Xen p50 us", "Xen p99 us", "QEMU p50 us", "QEMU p99 us",
                                           "Xen/QEMU"))
for key, label in OPS:
    print("%-24s %12.1f %12.1f %12.1f %12.1f %9.2fx" % (label, xen[key][0], xen[key][1], qemu[key][0], qemu[key][1],
                                                       xen[key][0] / qemu[key][0]))
print("Xen ALLOC+FREE of 2^k pages: one populate of order k into the guest and one decrease (and the holder's");
print("matching decrease/populate), the guest installing the frames (M2P, p2m) and removing them;")
print("QEMU's: a window of the sim pool mapped into BAR2 and unmapped.")
for key, _ in OPS[1:]:
    print("  %s: %.2fx the ring trip on Xen, %.2fx on QEMU" % (key, xen[key][0] / xen["query"][0],
                                                            qemu[key][0] / qemu["query"][0]))
xj = open(os.path.join(res.out, "xen.json")).read() if os.path.exists(os.path.join(res.out, "xen.json")) else ""
g = re.search(r'"give_ns_mean":(\d+).*?"take_ns_mean":(\d+)', xj)
x0 = open(os.path.join(res.out, "xen0.json")).read() if os.path.exists(os.path.join(res.out, "xen0.json")) else ""


def num(text, key):
    m = re.search(r'"%s":(\d+)' % key, text)
    return int(m.group(1)) if m else 0


if g:
    mean = statistics.mean(xen_mean[k] for k, _ in OPS[1:])
    part = (int(g.group(1)) + int(g.group(2))) / 1e3
    given = num(xj, "regions_given") - num(x0, "regions_given")
    zero = (num(xj, "zero_ns") - num(x0, "zero_ns")) / 1e3 / given if given else 0
    print("vcmad's Xen work per ALLOC+FREE (populate into the guest + decrease, zeroing; mean over the three sizes):")
    print("  %.1f us of the %.1f us mean ALLOC+FREE (%.0f%%), of which zeroing the frames at FREE %.1f us;"
          % (part, mean, 100 * part / mean, zero))
    print("  the rest is the guest (installing and removing the frames: M2P, p2m and its direct map page by")
    print("  page, vmap) and the ring trips")
print()
print("taking 8 MiB back from a lender's balloon (Xen, from dom0, %d rounds; ms)" % K)
print("%-52s %8s %8s %8s" % ("", "median", "min", "max"))
for label, xs in [("vcmactl alloc 8M, pool held (no take-back)", held),
                  ("vcmactl alloc 8M, pool lent, Xen has free memory", takeback),
                  ("vcmactl alloc 8M, pool lent, Xen full (%s MiB free)" % free_full, takeback_full),
                  ("baseline: the balloon alone (target -8 MiB, 1 ms polls)", balloon)]:
    print("%-52s %8.1f %8.1f %8.1f" % (label, statistics.median(xs), min(xs), max(xs)))
m = re.search(r'"reclaims":(\d+).*?"reclaim_ns_max":(\d+).*?"reclaim_ns_mean":(\d+)', bj)
if m:
    print("vcmad's own count: %s take-backs, mean %.1f ms, longest %.1f ms (vcmactl stats)"
          % (m.group(1), int(m.group(3)) / 1e6, int(m.group(2)) / 1e6))
for label, xs in [("Xen has free memory", takeback), ("Xen full", takeback_full)]:
    over = statistics.median(xs) - statistics.median(held)
    print("take-back cost over a held alloc, %s: %.1f ms, %.2fx the balloon alone"
          % (label, over, over / statistics.median(balloon)))
print("with free memory vcmad holds frames at once and the lender's balloon returns as much later;")
print("full, it holds them as the balloon gives pages back (vcmad looks every 10 ms)")
print("caveat: TCG emulates every instruction of Xen, dom0 and the guests; absolute times are not a real host's")
