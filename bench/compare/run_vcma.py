"""vcma on the trace: the real daemon (vcmad, sim backend), one vcma-simvm per guest
running its checksummed RAM workload on lent pool frames (free page reporting keeps
the share of its pages not in use reported; --pin pins the pinned share, which vcmad
moves off pool frames before answering PINNED), and vcma-replay as the guests' devices.

Every figure comes from what happened: each allocation's result and time from
vcma-replay, frame states at each sample from vcmactl, the live regions' addresses
for the largest allocatable window, the guests' pauses from vcma-simvm's summaries."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import accounting
import cockpit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
from vcmatest import Vcmad, ctl, fail, set_tools, simvm, vm_summary, wait_until  # noqa: E402

CONFIG = """[daemon]
lend_share = 100%%
relend_idle_ms = 20
pause_timeout_ms = 5000
[limits]
request_rate = 10000000
request_burst = 1000000
max_ram_per_guest = 1G
max_regions_per_guest = 256
[machine]
memory = %dM
[pool main]
size = %dM
"""


def largest_window(base, size, regions):
    """Longest run of the pool that no live region holds, in MiB: with pins moved off
    pool frames and lent frames vacatable, that is the largest window vcma can hand out."""
    ends = sorted((b - base, b - base + s) for b, s in regions)
    best, cur = 0, 0
    for lo, hi in ends:
        best = max(best, lo - cur)
        cur = max(cur, hi)
    return max(best, size - cur) / cockpit.MiB


def settle(d, f):
    """The pool is idle: wait until vcmad stops relending (no lent frame gained for a
    second, at most 30 s), so the sample shows what an idle pool gives the guests."""
    deadline, last, since = time.monotonic() + 30, -1, time.monotonic()
    while time.monotonic() < deadline:
        n = f["lent_free"] + f["lent_used"]
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 1.0 or n >= f["total"]:
            break
        time.sleep(0.1)
        f = ctl(d, "pool", "show", "main")["frames"]
    return f


def run(build, ops, pin_share, progress):
    set_tools(vcmactl=os.path.join(build, "tools", "vcmactl"), simvm=os.path.join(build, "tools", "vcma-simvm"))
    ram = sum(g[1] for g in cockpit.GUESTS)
    d = Vcmad(os.path.join(build, "hv", "vcmad"), CONFIG % (ram // cockpit.MiB + 512, cockpit.POOL // cockpit.MiB))
    vms = {}
    for name, gram, _peak, fill in cockpit.GUESTS:
        args = ["--ram", "%dM" % (gram // cockpit.MiB), "--vcpus", "1", "--alloc", "none", "--duration", "3600",
                "--report", str(int(round((1 - fill) * 100)))]
        pin = int(gram * pin_share) // cockpit.PAGE * cockpit.PAGE
        if pin:
            args += ["--pin", str(pin)]
        vms[name] = simvm(d, name, *args)
    # the guests' RAM covers the pool: wait until vcmad has lent all of it
    wait_until(lambda: (lambda f: f["lent_free"] + f["lent_used"] >= f["total"] * 0.95)(
        ctl(d, "pool", "show", "main")["frames"]), 60, "pool main lent to the guests")
    pool = ctl(d, "pools")["pools"][0]
    base, size = pool["base"], pool["size_bytes"]
    tf = tempfile.NamedTemporaryFile("w", suffix=".trace", delete=False)
    tf.write(cockpit.to_text(ops))
    tf.close()
    rp = subprocess.Popen([os.path.join(build, "bench", "vcma-replay"), "--socket", d.sock, tf.name],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    meta = {op[1]: op for op in ops if op[0] == "A"}
    allocs, samples, bus = [], [], {}
    for line in rp.stdout:
        w = line.split()
        if w[0] == "A":
            op = meta[int(w[1])]
            allocs.append((op[1], op[2], op[3], op[4], w[2] == "1", "" if w[3] == "-" else w[3],
                           float(w[4]), None, None, None))
            bus[op[1]] = int(w[5])
        elif w[0] == "S":
            regions = [tuple(int(x) for x in r.split(":")) for r in w[3:]]
            f = ctl(d, "pool", "show", "main")["frames"]
            if w[1] == "end":
                f = settle(d, f)
            samples.append((w[1], f["lent_free"] + f["lent_used"], f["total"] - f["region"], f["total"],
                            largest_window(base, size, regions)))
            rp.stdin.write("go\n")
            rp.stdin.flush()
        elif w[0] == "P":
            progress("vcma: %s/%s allocations" % (w[1], w[2]))
    if rp.wait() != 0:
        fail("vcma-replay exited %d (vcmad log:\n%s)" % (rp.returncode, d.logtext()[-3000:]))
    os.unlink(tf.name)
    stats = ctl(d, "stats")
    pauses = {}
    for name, p in vms.items():
        p.send_signal(signal.SIGTERM)
        s = vm_summary(p, "vcma-simvm " + name)
        if s["corruptions"] or s["errors"]:
            fail("guest %s saw %d corruption(s), %d error(s)" % (name, s["corruptions"], s["errors"]))
        pauses[name] = s["pauses"]
        pauses[name]["pinned_pages"] = s["pinned_pages"]
        pauses[name]["verified"] = s["vcpu_pages_verified"]
    d.stop()
    allocs = accounting.vcma_feasible(ops, allocs, bus, base, size)
    return {"allocs": allocs, "samples": samples, "pauses": pauses, "stats": stats["pools"][0]}
