#!/usr/bin/env python3
"""proto.py against the headers: every struct, member offset and size, enumerator and
constant tests/integration/proto.py describes must be what the C compiler makes of
proto/vcma_proto.h and proto/vcma_sim.h (as printed by proto_layout, built from them),
and every member the C side lists must be described. The comparison is also run on a
deliberately wrong layout, which it must reject.

usage: test_proto_layout.py PROTO_LAYOUT
"""
import subprocess
import sys

import proto
from vcmatest import check, fail, log

r = subprocess.run([sys.argv[1]], capture_output=True, text=True, timeout=30)
if r.returncode != 0:
    fail("proto_layout exited %d: %s" % (r.returncode, r.stderr))

structs, fields, tails, enums, consts = {}, {}, {}, {}, {}
for line in r.stdout.splitlines():
    kind, *rest = line.split()
    if kind == "struct":
        structs[rest[0]] = int(rest[1])
    elif kind == "field":
        fields.setdefault(rest[0], []).append((rest[1], int(rest[2]), int(rest[3])))
    elif kind == "tail":
        tails[rest[0]] = (rest[1], int(rest[2]))
    elif kind == "enum":
        enums[rest[0]] = int(rest[1])
    elif kind == "const":
        consts[" ".join(rest[:-1])] = int(rest[-1])
    else:
        fail("proto_layout printed %r" % line)


def layout_problems(lay):
    """How lay disagrees with the C struct of the same name (an empty list: it agrees)."""
    if lay.cname not in structs:
        return ["struct %s: not printed by proto_layout.c (add it there)" % lay.cname]
    bad = []
    run = proto.SIM_RUN.size
    want = lay.size + lay.tail_count * run if lay.tail else lay.size
    if structs[lay.cname] != want:
        bad.append("sizeof(struct %s) is %d, proto.py makes it %d" % (lay.cname, structs[lay.cname], want))
    if lay.tail and tails.get(lay.cname) != (lay.tail, lay.size):
        bad.append("struct %s: %s starts at %s in C, after %d bytes in proto.py"
                   % (lay.cname, lay.tail, tails.get(lay.cname), lay.size))
    c = {m: (off, size) for m, off, size in fields.get(lay.cname, [])}
    py = {lay.cmember[f]: (lay.off(f), lay.sizeof(f)) for f in lay.fields}
    for m in sorted(set(c) | set(py), key=lambda m: c.get(m, py.get(m))):
        if m not in c:
            bad.append("%s.%s: proto.py has it, the header (or proto_layout.c) does not" % (lay.cname, m))
        elif m not in py:
            bad.append("%s.%s: in the header at offset %d, missing from proto.py" % (lay.cname, m, c[m][0]))
        elif c[m] != py[m]:
            bad.append("%s.%s: offset %d size %d in C, offset %d size %d in proto.py"
                       % ((lay.cname, m) + c[m] + py[m]))
    return bad


described = set()
for lay in proto.LAYOUTS:
    bad = layout_problems(lay)
    if bad:
        fail("struct %s disagrees with the header:\n  %s" % (lay.cname, "\n  ".join(bad)))
    described.add(lay.cname)
    log("struct %s: %d bytes%s, %d members" % (lay.cname, structs[lay.cname], " (with run[])" if lay.tail else "",
                                               len(lay.fields)))
check(described == set(structs), "proto.py describes every struct proto_layout prints, and each agrees "
      "with the header in size, member offsets and member sizes (%d structs)" % len(structs))

# enumerators: both ways, per enum (the *_MAX markers are not values)
for cls, prefix in proto.ENUMS.items():
    py = {prefix + m.name: int(m) for m in cls}
    c = {n: v for n, v in enums.items() if n.startswith(prefix) and not n.endswith("_MAX")}
    if py != c:
        fail("%s disagrees with the header's %s*: only in proto.py %s, only in C %s"
             % (cls.__name__, prefix, sorted(set(py.items()) - set(c.items())),
                sorted(set(c.items()) - set(py.items()))))
left = set(enums) - {n for p in proto.ENUMS.values() for n in enums if n.startswith(p)}
check(not left, "every enumerator matches its proto.py enum (%d), none unclaimed %s" % (len(enums), sorted(left)))

# constants
diff = {k: (v, consts.get(k)) for k, v in proto.CONSTANTS.items() if consts.get(k) != v}
check(not diff, "proto.py's constants equal the header's: %s" % (diff or ", ".join(sorted(proto.CONSTANTS))))
check(set(consts) == set(proto.CONSTANTS), "and it describes every constant proto_layout prints %s"
      % sorted(set(consts) ^ set(proto.CONSTANTS)))

# the comparison itself: a layout with two members swapped, or one missing, is refused
order = list(proto.CTRL.fields)
i, j = order.index("req_off"), order.index("req_slots")
order[i], order[j] = order[j], order[i]
swapped = proto.Layout("vcma_ctrl", [(f, proto.CTRL.code(f)) for f in order])
short = proto.Layout("vcma_sim_msg", [(f, proto.SIM_MSG.code(f)) for f in proto.SIM_MSG.fields if f != "status"],
                     tail="run")
check(layout_problems(swapped) and layout_problems(short),
      "the comparison refuses a control page with req_off and req_slots swapped (%s) and a VMM message "
      "header without status" % layout_problems(swapped)[0])
print("PASS")
