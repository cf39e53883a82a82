#!/usr/bin/env python3
"""xen-e2e: vcmad in a real Xen dom0 serves machine-contiguous regions to a PV domU
running vcma.ko over xenbus, lends idle pool capacity to another domU's balloon and
takes it back, and survives a hostile frontend (docs/XEN.md, PROTOCOL.md §9.3).

One boot of Xen 4.17 + Debian dom0 under QEMU (TCG), 6 GiB so that machine memory
reaches above 4 GiB. In dom0, vcmad (backend xen) holds pool main (64 MiB, regions up
to 8 MiB, lendable) and pool low (16 MiB, address_bits = 32, not lendable). Then:

  lend1  a PV domU (128 MiB, maxmem 256) whose init checksums a file once a second;
         vcmad lends it the idle pool capacity (its target and tot_pages rise)
  cam    a PV domU with vcma.ko (its xenbus frontend) running vcma-e2e: regions of
         1, 2, 4 and 8 MiB through /dev/vcma, each filled with a pattern through its
         dma-buf mapping. For each, dom0 checks that vcmactl lists it for cam with the
         bus address the guest saw, aligned to its size, and that vcmad's hash of the
         machine frames bus/4096 .. +n (read through a foreign mapping, frame by frame
         in machine order) equals the guest's hash of its mapping: the bytes written on
         one side are read on the other, and the extent is machine-contiguous. The
         first region needs capacity the lender holds: its balloon is asked for it
         back (a reclaim is counted) and its checksums never change. Then a region
         from pool low lies below 4 GiB while cam holds memory above it (its regions
         from pool main, which Xen gives from the top).
  evil   a PV domU running hostile-xen, a frontend written from PROTOCOL.md alone,
         while cam holds a region and waits: malformed nodes, refs that grant
         nothing, a port that is not its own, a scribbled control page, a ring
         overflow, a flood of notifications. vcmad refuses or cuts it off as §9.3
         says, answers vcmactl throughout, and cam goes on with its checks after it.

At the end every domU is destroyed and dom0 checks that every region and every lent
page came back (pool capacity all held again, no guest, no region), that vcmad exits
cleanly and its holder domain is gone. Any WARNING/BUG/Oops in any kernel's log, or a
Xen assertion, fails the test.

usage: test_xen_e2e.py SOURCE_ROOT VCMAD VCMACTL
Exit 77 (skip) only when Xen, QEMU, the kernel, its headers or busybox cannot be had.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import xenvm  # noqa: E402
from vcmatest import fail, log, tmpdir  # noqa: E402

ROOT, VCMAD, VCMACTL = sys.argv[1:4]
sys.path.insert(0, os.path.join(ROOT, "tests", "qemu"))
import guestbuild  # noqa: E402

failures = []


def check(ok, what):
    print(("PASS: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)
    return ok


ver = subprocess.run([VCMAD, "--version"], capture_output=True, text=True).stdout
if not re.search(r"^backends:.* xen\b", ver, re.M):
    fail("%s was built without the Xen backend (%s); install libxen-dev "
         "(scripts/setup-deps.sh --for tests) and reconfigure the build" % (VCMAD, ver.strip().replace("\n", "; ")))
env = xenvm.prepare(ROOT)
parts = guestbuild.prepare(ROOT)  # vcma.ko and vcma-e2e for the guest kernel
work = tmpdir("vcma-xen-e2e-")
hostile = os.path.join(work, "hostile-xen")
r = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-I", os.path.join(ROOT, "proto"),
                    "-o", hostile, os.path.join(HERE, "guest", "hostile_xen.c"),
                    "-lxenstore", "-lxengnttab", "-lxenevtchn"], capture_output=True, text=True)
if r.returncode:
    fail("building hostile-xen:\n" + r.stdout + r.stderr)

run = xenvm.XenRun(env, work, memory=6144)
run.add_dom0_file(VCMAD, "/usr/sbin/vcmad")
run.add_dom0_file(VCMACTL, "/usr/sbin/vcmactl")
run.domU_image("lend1", r"""
i=0
while true; do
	i=$((i+1))
	echo "LEND-HB $i sum=$(md5sum /bin/busybox | cut -c1-32) mem=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
	sleep 1
done
""")
run.domU_image("cam", r"""
insmod /vcma.ko || echo "CAM insmod failed"
i=0; while [ ! -e /dev/vcma ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
/vcma-e2e check
echo "CAM e2e rc=$?"
/vcma-e2e pool low 2
echo "CAM pool rc=$?"
read -r _ </dev/hvc0
""", files=[(parts["vcma.ko"], "/vcma.ko"), (parts["vcma-e2e"], "/vcma-e2e", 0o755)])
run.domU_image("evil", r"""
/hostile-xen bad-ref few-refs bad-gref bad-port scribble overflow kick-flood
echo "EVIL rc=$?"
read -r _ </dev/hvc0
""", files=[(hostile, "/hostile-xen", 0o755)], modules=["xen-gntalloc", "xen-evtchn"])

DOM0 = r"""
mkdir -p /etc/vcma /run/vcma
cat >/etc/vcma/vcmad.conf <<EOF
[daemon]
backend = xen
relend_idle_ms = 300
[pool main]
size = 64M
max_region = 8M
[pool low]
size = 16M
max_region = 4M
address_bits = 32
lendable = no
[guest cam]
backend = xen
class = camera
[guest evil]
backend = xen
[guest lend1]
backend = xen
lender = yes
attach = manual
EOF
j() { vcmactl --json "$@"; }
num() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
vcmad -c /etc/vcma/vcmad.conf >$XENVM_OUT/vcmad.log 2>&1 &
VP=$!
xen_poll 30 test -S /run/vcma/vcmad-ctl.sock || exit 10

xen_create lend1 128 256 || exit 11
xen_wait_console lend1 '^LEND-HB 2 ' 120 || exit 12
lent() { [ "$(j stats | sed 's/.*"balloon"//' | num lent_bytes)" -ge $((64 << 20)) ]; }
xen_poll 60 lent && xen_fact lent_before "$(j stats | sed 's/.*"balloon"//' | num lent_bytes)"
xen_fact lend1_target "$(xenstore-read /local/domain/$(xen_domid lend1)/memory/target)"
grown() { [ "$(xen_mem_mib lend1)" -ge 190 ]; }
xen_poll 30 grown
xen_fact lend1_mib "$(xen_mem_mib lend1)"

xen_create cam 128 256 || exit 13
CAM=$(xen_domid cam)
TTY=$(xenstore-read /local/domain/$CAM/console/tty)
xen_fact cam_domid "$CAM"
n=0
answer() { echo VCMA-OK >$TTY; }
while [ $n -lt 4 ]; do
	checks() { [ "$(grep -c '^VCMA-CHECK' /var/log/xen/console/guest-cam.log 2>/dev/null)" -gt $n ]; }
	xen_poll 120 checks || { xen_fact check_missing $n; break; }
	n=$((n+1))
	L=$(grep '^VCMA-CHECK' /var/log/xen/console/guest-cam.log | sed -n "${n}p")
	H=$(echo "$L" | sed 's/.*handle=\(0x[0-9a-f]*\).*/\1/')
	R=$(j regions | tr '{' '\n' | grep "\"handle\":\"$H\"")
	xen_fact check$n "$L"
	xen_fact region$n "bus=$(echo "$R" | num bus) size=$(echo "$R" | num size_bytes) guest=$(echo "$R" | grep -o '"guest_name":"[^"]*"' | cut -d'"' -f4)"
	xen_fact hash$n "$(vcmactl hash $H)"
	if [ $n -eq 2 ]; then
		# cam holds a region and waits for our answer while evil attacks
		xen_create evil 128 || exit 14
		flood() { grep -q 'HOSTILE kick-flood\|EVIL rc' /var/log/xen/console/guest-evil.log 2>/dev/null; }
		ok=0; tot=0
		while ! grep -q 'EVIL rc' /var/log/xen/console/guest-evil.log 2>/dev/null; do
			tot=$((tot+1)); vcmactl status >/dev/null 2>&1 && ok=$((ok+1))
			[ $tot -ge 600 ] && break
			sleep 0.2
		done
		xen_fact ctl_during_evil "$ok/$tot"
		xen_fact evil "$(grep -c '^HOSTILE .* ok:' /var/log/xen/console/guest-evil.log) ok, $(grep -c '^HOSTILE .* FAIL:' /var/log/xen/console/guest-evil.log) failed"
		xen_fact evil_rc "$(sed -n 's/^EVIL rc=//p' /var/log/xen/console/guest-evil.log)"
		xen_fact violations "$(j stats | num violations)"
		xen_fact refused "$(j stats | num attach_refused)"
	fi
	answer
done
# the guest frees its four regions; then the lifetime of a region under its dma-buf
lines() { [ "$(grep -c "^$1" /var/log/xen/console/guest-cam.log)" -ge "$2" ]; }
ncam() { j regions | tr '{' '\n' | grep -c '"guest_name":"cam"'; }
xen_poll 60 lines VCMA-FREED 4 && xen_fact freed_left "$(ncam)"
answer
xen_poll 60 lines VCMA-HELD 1
H=$(sed -n 's/^VCMA-HELD handle=\(0x[0-9a-f]*\).*/\1/p' /var/log/xen/console/guest-cam.log | head -1)
xen_fact held_listed "$(j regions | grep -c "\"handle\":\"$H\"")"
answer
xen_poll 60 lines VCMA-RELEASED 1
gone() { [ "$(j regions | grep -c "\"handle\":\"$H\"")" = 0 ]; }
xen_poll 10 gone
xen_fact released_listed "$(j regions | grep -c "\"handle\":\"$H\"")"
answer
done_() { grep -q '^VCMA-DONE' /var/log/xen/console/guest-cam.log; }
xen_poll 120 done_ || xen_fact cam_done no
low() { grep -q '^VCMA-CHECK' /var/log/xen/console/guest-cam.log && [ "$(grep -c '^VCMA-CHECK' /var/log/xen/console/guest-cam.log)" -ge 5 ]; }
if xen_poll 60 low; then
	L=$(grep '^VCMA-CHECK' /var/log/xen/console/guest-cam.log | sed -n 5p)
	H=$(echo "$L" | sed 's/.*handle=\(0x[0-9a-f]*\).*/\1/')
	xen_fact check5 "$L"
	xen_fact region5 "bus=$(j regions | tr '{' '\n' | grep "\"handle\":\"$H\"" | num bus)"
	xen_fact hash5 "$(vcmactl hash $H)"
	answer
fi
xen_poll 60 grep -q '^CAM pool rc' /var/log/xen/console/guest-cam.log
xen_fact cam_lines "$(grep -c '^VCMA' /var/log/xen/console/guest-cam.log)"
# cam's own RAM: the machine frames of its first pages (xl debug-keys cannot say; the
# M2P can: vcmad's view is the holder's, so ask Xen through xl list -l? use max mfn of dom)
xen_fact balloon "$(j stats | sed 's/.*"balloon"//' | tr -d '\n' | head -c 600)"
xen_fact xen "$(j stats | sed 's/.*"xen"://' | tr -d '\n' | head -c 600)"
xen_fact guests_before "$(j status | num guests)"

for d in evil cam lend1; do xen_destroy $d || xen_fact destroy_failed $d; done
empty() { [ "$(j status | num guests)" = 0 ] && [ "$(j status | num regions)" = 0 ]; }
xen_poll 30 empty
held() { [ "$(j stats | sed 's/.*"xen"://' | num held_bytes)" -eq $((80 << 20)) ]; }
xen_poll 30 held
xen_fact after "guests=$(j status | num guests) regions=$(j status | num regions) held=$(j stats | sed 's/.*"xen"://' | num held_bytes) lent=$(j stats | sed 's/.*"balloon"//' | num lent_bytes)"
xen_fact pools "$(j pools | tr '{' '\n' | grep -o '"name":"[a-z]*"\|"free":[0-9]*' | tr '\n' ' ')"
kill $VP
wait $VP
xen_fact vcmad_rc $?
xen_fact holder_gone "$(xl list | grep -c vcma-pool)"
"""

res = run.boot(DOM0, timeout=900)
if not check(res.status == "exited" and res.rc == 0, "the dom0 script ran to its end: " + res.explain()[-300:]):
    print(res.explain())
f = res.facts
log("facts: %s" % f)

def hash_of(line):
    """The hash in a `vcmactl hash` line ("... fnv1a64 0x..."), or None."""
    m = re.search(r"fnv1a64 (0x[0-9a-f]+)", line or "")
    return int(m.group(1), 16) if m else None


# lending: the lender got the idle capacity
check(int(f.get("lent_before", "0")) >= 64 << 20, "vcmad lent pool main's 64 MiB to lend1's balloon (%s)"
      % f.get("lent_before"))

# the four regions
for i, mib in enumerate((1, 2, 4, 8), start=1):
    line = f.get("check%d" % i, "")
    m = re.search(r"handle=(0x[0-9a-f]+) size=(\d+) offset=0x([0-9a-f]+) dma=0x([0-9a-f]+) fnv=(0x[0-9a-f]+) "
                  r"expect=(0x[0-9a-f]+)", line)
    if not check(m is not None, "region %d (%d MiB): the guest reported it: %s" % (i, mib, line)):
        continue
    size, dma, fnv, expect = int(m.group(2)), int(m.group(4), 16), m.group(5), m.group(6)
    reg = f.get("region%d" % i, "")
    bus = int(re.search(r"bus=(\d+)", reg).group(1)) if "bus=" in reg and re.search(r"bus=(\d+)", reg) else -1
    check(size == mib << 20, "region %d is %d MiB" % (i, mib))
    check("guest=cam" in reg, "vcmactl lists region %d for guest cam (%s)" % (i, reg))
    check(bus == dma and bus > 0, "region %d: the guest's DMA address is vcmad's bus address (%#x, %#x)" % (i, dma, bus))
    check(bus % size == 0, "region %d: machine address %#x aligned to its size" % (i, bus))
    check(fnv == expect, "region %d: the guest read back its pattern through the dma-buf mapping" % i)
    check(hash_of(f.get("hash%d" % i)) == int(fnv, 16),
          "region %d: vcmad's hash of machine frames %#x.. in order equals the guest's (%s vs %s)"
          % (i, bus >> 12, f.get("hash%d" % i), fnv))

# DMA32
m5 = re.search(r"dma=0x([0-9a-f]+)", f.get("check5", ""))
check(m5 is not None and int(m5.group(1), 16) + (2 << 20) <= 1 << 32,
      "a region from pool low (address_bits = 32) lies below 4 GiB: %s" % f.get("check5"))
fnv5 = re.findall(r"fnv=(0x[0-9a-f]+)", f.get("check5", ""))
check(bool(fnv5) and hash_of(f.get("hash5")) == int(fnv5[0], 16), "pool low's region: vcmad reads what the guest wrote")
high = [int(x, 16) for x in re.findall(r"dma=0x([0-9a-f]+)", " ".join(f.get("check%d" % i, "") for i in (1, 2, 3, 4)))]
check(any(a >= 1 << 32 for a in high), "pool main's regions lie above 4 GiB here (Xen allocates from the top): %s"
      % [hex(a) for a in high])

# the reclaim
bal = f.get("balloon", "")
rec = re.search(r'"reclaims":(\d+)', bal)
check(rec is not None and int(rec.group(1)) >= 1, "an allocation took capacity back from lend1's balloon (%s)"
      % bal[:200])
hb = re.findall(r"^LEND-HB \d+ sum=([0-9a-f]+) mem=(\d+)", res.logs.get("domU:lend1", ""), re.M)
check(len(hb) >= 5 and len({s for s, _ in hb}) == 1,
      "lend1's checksum never changed over %d heartbeats while its memory was lent and taken back" % len(hb))
check(int(f.get("lend1_target", "0")) >= (128 + 64) << 10 and int(f.get("lend1_mib", "0")) >= 190,
      "lend1's balloon took the lent capacity: target %s KiB, %s MiB in Xen's count (started with 128)"
      % (f.get("lend1_target"), f.get("lend1_mib")))

# the hostile frontend
check(f.get("evil_rc") == "0" and f.get("evil", "").startswith("7 ok"),
      "hostile-xen: every scenario got what PROTOCOL.md 9.3 says (%s, rc %s)" % (f.get("evil"), f.get("evil_rc")))
ok, tot = (f.get("ctl_during_evil", "0/1").split("/") + ["1"])[:2]
check(int(ok) == int(tot) and int(tot) > 0, "vcmactl status answered every time during the attack (%s)"
      % f.get("ctl_during_evil"))
check(int(f.get("violations", "0")) >= 1, "the ring overflow was a violation (%s)" % f.get("violations"))
check(int(f.get("refused", "0")) >= 4, "the malformed devices were refused (%s)" % f.get("refused"))
cam_log = res.logs.get("domU:cam", "")
check("VCMA-ERRORS ok" in cam_log, "cam's error paths after the attack: EINVAL, ENOENT, ENODEV, E2BIG/ENOSPC "
      "as PROTOCOL.md 5.6 says")
check(f.get("freed_left") == "0", "after cam's four FREEs vcmad lists none of its regions (%s)" % f.get("freed_left"))
check(f.get("held_listed") == "1" and f.get("released_listed") == "0",
      "a region freed while its dma-buf is mapped lives on until the mapping goes (%s, then %s)"
      % (f.get("held_listed"), f.get("released_listed")))
check("CAM e2e rc=0" in cam_log and "CAM pool rc=0" in cam_log, "vcma-e2e check and pool exited 0 in cam")

# everything came back
after = f.get("after", "")
check(after.startswith("guests=0 regions=0 held=%d lent=0" % (80 << 20)),
      "after the domUs were destroyed: no guest, no region, all 80 MiB of capacity held, none lent (%s)" % after)
check(f.get("vcmad_rc") == "0", "vcmad stopped cleanly")
check(f.get("holder_gone") == "0", "the holder domain is gone after vcmad stopped")

# a sanitized vcmad (the sanitizer pass) reports into its log; its exit status alone
# would miss a UBSan report, which does not stop it by default
vlog = open(os.path.join(res.out, "vcmad.log"), errors="replace").read() if os.path.exists(
    os.path.join(res.out, "vcmad.log")) else ""
reports = [ln for ln in vlog.splitlines() if "runtime error:" in ln or "Sanitizer" in ln]
check(not reports, "no sanitizer report in vcmad's log: %s" % reports[:3])
problems = res.kernel_problems()
check(not problems, "no WARNING/BUG/Oops in any kernel log, no Xen assertion: %s" % problems[:5])
log("boot took %.0f s" % res.seconds)
if failures:
    print("vcmad's log:\n" + open(os.path.join(res.out, "vcmad.log")).read()[-4000:] if os.path.exists(
        os.path.join(res.out, "vcmad.log")) else "")
    fail("%d check(s) failed (above); the run's files are kept" % len(failures))
print("PASS")
