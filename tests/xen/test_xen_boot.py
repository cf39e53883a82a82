#!/usr/bin/env python3
"""xen-boot: the Xen harness works (tests/xen/xenvm.py). Real Xen 4.17 and a Debian dom0
boot under QEMU (TCG); dom0 creates a PV domU (memory 128 MiB, maxmem 256 MiB) whose
init prints a marker and the md5 of a file baked into its image. Checked: the dom0
script's status comes back through isa-debug-exit; `xl info` says Xen 4.17; `xl list`
lists the domU under the id `xl domid` gives, with 128 MiB; xenstore has
/local/domain/<id>/name; the marker and the right md5 are in its console log, collected
to the host; writing memory/target 32 MiB lower makes Xen's tot_pages (`xl list`) go
down by 32 MiB; `xl destroy` removes it; and no kernel log (Xen's, dom0's, the domU's,
the serial console) has a WARNING, BUG, Oops, panic or Xen assertion.

Each check prints "PASS: ..." or "FAIL: ..."; the test ends with "PASS" or fails.
usage: test_xen_boot.py SOURCE_ROOT
Exit 77 (skip) only when Xen, QEMU, the kernel or busybox cannot be installed here.
"""
import hashlib
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import xenvm  # noqa: E402
from vcmatest import fail, log, tmpdir  # noqa: E402

ROOT = sys.argv[1]
NAME = "smoke"
MEM, MAXMEM, SHRINK = 128, 256, 32  # MiB

env = xenvm.prepare(ROOT)  # exits 77 when Xen cannot be had
work = tmpdir("vcma-xen-boot-")
run = xenvm.XenRun(env, work)

payload = os.path.join(work, "payload")
with open(payload, "wb") as f:
    f.write(os.urandom(256 * 1024))
with open(payload, "rb") as f:
    payload_md5 = hashlib.md5(f.read()).hexdigest()

# the domU stays up (blocked on a FIFO nobody writes) until dom0 destroys it
run.domU_image(NAME, r"""
echo "XENBOOT-UP $(cut -d' ' -f1 /proc/uptime)"
echo "XENBOOT-SUM $(md5sum /payload)"
mkfifo /tmp/hold
read -r _ </tmp/hold
""", files=[(payload, "/payload")])

DOM0 = r"""
NAME=%(name)s
up() { cut -d' ' -f1 /proc/uptime; }
xen_fact dom0_up "$(up)"
xl info | tee /run/xl-info
xen_fact xen_version "$(awk '$1 == "xen_version" { print $3 }' /run/xl-info)"

xen_create $NAME %(mem)d %(maxmem)d || exit 10
xen_fact created "$(up)"
D=$(xen_domid $NAME) || exit 11
xen_fact domid "$D"
xl list | tee /run/xl-list
xen_fact listed "$(awk -v n=$NAME '$1 == n { print $2, $3 }' /run/xl-list)"
xen_fact xs_name "$(xenstore-read /local/domain/$D/name)"
xen_wait_console $NAME '^XENBOOT-SUM ' 120 && xen_fact domU_up "$(up)"

# the balloon: a target 32 MiB lower, and Xen's tot_pages (xl list) must follow
T=$(xenstore-read /local/domain/$D/memory/target)
M=$(xen_mem_mib $NAME)
xen_fact target_before "$T"
xen_fact mem_before "$M"
xenstore-write /local/domain/$D/memory/target $((T - %(shrink)d * 1024))
xen_fact target_after "$(xenstore-read /local/domain/$D/memory/target)"
shrunk() { [ "$(xen_mem_mib $NAME)" -le $((M - %(shrink)d)) ]; }
xen_poll 60 shrunk
xen_fact mem_after "$(xen_mem_mib $NAME)"

xen_destroy $NAME || exit 12
xl list
if xl domid $NAME >/dev/null 2>&1; then xen_fact gone no; else xen_fact gone yes; fi
if xenstore-read /local/domain/$D/name >/dev/null 2>&1; then xen_fact xs_gone no; else xen_fact xs_gone yes; fi
exit 0
""" % {"name": NAME, "mem": MEM, "maxmem": MAXMEM, "shrink": SHRINK}

res = run.boot(DOM0, timeout=240)
log("Xen run: %s, %.1f s wall; dom0 script started at dom0 uptime %s s, domU created at %s s, up at %s s"
    % (res.status, res.seconds, res.facts.get("dom0_up"), res.facts.get("created"), res.facts.get("domU_up")))

failed = []


def verdict(ok, msg):
    print(("PASS: " if ok else "FAIL: ") + msg, flush=True)
    if not ok:
        failed.append(msg)


def num(key):
    try:
        return int(res.facts.get(key, ""))
    except ValueError:
        return None


verdict(res.status == "exited" and res.rc == 0,
        "Xen and dom0 booted, the dom0 script ran and its status 0 came back through isa-debug-exit "
        "(status %s, rc %s)" % (res.status, res.rc))
verdict(res.facts.get("xen_version", "").startswith("4.17."),
        "xl info: xen_version 4.17 (%r)" % res.facts.get("xen_version"))
domid = num("domid")
verdict(domid is not None and domid > 0, "xl domid %s: a domU id (%r)" % (NAME, res.facts.get("domid")))
verdict(res.facts.get("listed") == "%s %d" % (domid, MEM),
        "xl list: %s with id %s and %d MiB (%r)" % (NAME, domid, MEM, res.facts.get("listed")))
verdict(res.facts.get("xs_name") == NAME,
        "xenstore /local/domain/%s/name is %s (%r)" % (domid, NAME, res.facts.get("xs_name")))
console = res.logs.get("domU:" + NAME, "")
sums = [line.split()[1] for line in console.splitlines() if line.startswith("XENBOOT-SUM ") and len(line.split()) > 1]
verdict(any(line.startswith("XENBOOT-UP ") for line in console.splitlines()) and sums == [payload_md5],
        "the domU's console log (xenconsoled, collected to the host) has its marker and the md5 of its "
        "payload, %s (%r)" % (payload_md5, sums))
t0, t1, m0, m1 = num("target_before"), num("target_after"), num("mem_before"), num("mem_after")
verdict(t0 == MEM * 1024 and t1 == t0 - SHRINK * 1024,
        "memory/target %s KiB, written %s KiB" % (t0, t1))
verdict(m0 == MEM and m1 is not None and 0 < m1 <= m0 - SHRINK,
        "the balloon gave %d MiB back: xl list (tot_pages) %s MiB -> %s MiB" % (SHRINK, m0, m1))
verdict(res.facts.get("gone") == "yes" and res.facts.get("xs_gone") == "yes",
        "xl destroy: %s is gone from xl list and xenstore (%s, %s)"
        % (NAME, res.facts.get("gone"), res.facts.get("xs_gone")))
missing = [k for k in ("serial", "dom0", "xen", "domU:" + NAME) if not res.logs.get(k)]
verdict(not missing, "every log collected: serial, dom0 dmesg, xl dmesg, the domU's console (missing: %s)"
        % (", ".join(missing) or "none"))
problems = res.kernel_problems()
verdict(not problems, "no WARNING, BUG, Oops, panic or Xen assertion in any log%s"
        % "".join("\n  %s: %s" % p for p in problems))

if failed:
    print(res.explain())
    print("the run's files are kept in " + work)
    fail("%d of the checks failed" % len(failed))
shutil.rmtree(work, ignore_errors=True)
print("PASS")
