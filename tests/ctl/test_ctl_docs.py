#!/usr/bin/env python3
"""The documentation says what the programs do: vcmactl --help and vcmactl(1) list the
same commands and options, vcmad --help and vcmad(8) the same options, vcmad(8)
every configuration key vcmad accepts, vcma(4) every ioctl, field and errno of the
guest driver, and the bash completion knows every command and option.

usage: test_ctl_docs.py VCMACTL VCMAD SOURCE_ROOT
"""
import os
import re
import subprocess
import sys

from vcmatest import check, fail

VCMACTL, VCMAD, ROOT = sys.argv[1], sys.argv[2], sys.argv[3]
MAN1 = os.path.join(ROOT, "docs/man/vcmactl.1.scd")
MAN8 = os.path.join(ROOT, "docs/man/vcmad.8.scd")
COMPLETION = os.path.join(ROOT, "tools/vcmactl.bash-completion")


def read(path):
    with open(path) as f:
        return f.read()


def section(text, name):
    m = re.search(r"^# %s\n(.*?)(?=^# |\Z)" % re.escape(name), text, re.M | re.S)
    if not m:
        fail("no section %s" % name)
    return m.group(1)


def helptext(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        fail("%s exited %d" % (" ".join(args), r.returncode))
    return r.stdout


def longopts(text):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text.replace("\\", "")))


# ---- vcmactl ----
man1 = read(MAN1)
man_cmds = re.findall(r"^\*([a-z]+)[* ]", section(man1, "COMMANDS"), re.M)
top = helptext(VCMACTL, "--help")
help_cmds = re.findall(r"^  ([a-z]+)\b", top.split("Commands:\n", 1)[1].split("\nOptions:", 1)[0], re.M)
check(man_cmds and man_cmds == help_cmds, "vcmactl --help and vcmactl(1) list the same commands in the same order: %s"
      % " ".join(help_cmds))
unmentioned = [c for c in man_cmds if not re.search(r"^  %s\b" % c, top, re.M)]
check(man_cmds and not unmentioned, "vcmactl --help mentions every command of the man page%s"
      % ("; not: %s" % unmentioned if unmentioned else ""))

help_opts = longopts(top)
per_cmd = {}
for c in help_cmds:
    per_cmd[c] = helptext(VCMACTL, c, "--help")
    help_opts |= longopts(per_cmd[c])
man_opts = longopts(section(man1, "OPTIONS") + section(man1, "COMMANDS"))
check(help_opts == man_opts, "the help texts and vcmactl(1) name the same options: %s" % " ".join(sorted(man_opts)))
undocumented = []
for c in help_cmds:
    m = re.search(r"^\*%s[* ].*?(?=^\*[a-z]+[* ]|\Z)" % c, section(man1, "COMMANDS"), re.M | re.S)
    own = longopts(per_cmd[c].split("Common options:")[0]) - {"--help", "--json", "--socket"}
    if not m or not own <= longopts(m.group(0)):
        undocumented.append("%s: %s" % (c, sorted(own - (longopts(m.group(0)) if m else set()))))
check(help_cmds and not undocumented, "each command's options are documented under that command%s"
      % ("; vcmactl(1) lacks %s" % undocumented if undocumented else ""))
for code in ("*0*", "*1*", "*2*"):
    if code not in section(man1, "EXIT STATUS"):
        fail("vcmactl(1) EXIT STATUS lacks %s" % code)
check("Exit status: 0 ok, 1 operation failed or vcmad unreachable, 2 usage error" in top,
      "vcmactl --help states the exit codes of the man page")
unexplained = [ch for ch in ".lL#r~x"
               if not re.search(r"^\|  %s$" % re.escape(ch), section(man1, "FRAGMENTATION MAP"), re.M)]
check(not unexplained, "vcmactl(1) explains every map character%s"
      % ("; its legend lacks %s" % unexplained if unexplained else ""))

# ---- vcmad ----
man8 = read(MAN8)
vhelp = helptext(VCMAD, "--help")
check(longopts(vhelp) == longopts(section(man8, "OPTIONS")), "vcmad --help and vcmad(8) OPTIONS name the same options")
conf_src = read(os.path.join(ROOT, "hv/conf.c"))
keys = set(re.findall(r'!strcmp\(k, "([a-z_]+)"\)', conf_src))
keys |= set(re.findall(r'\{ "([a-z_]+)", set_', read(os.path.join(ROOT, "hv/core/pool_config.c"))))
cfg = section(man8, "CONFIGURATION")
missing = sorted(k for k in keys if "*%s*" % k not in cfg)
check(len(keys) > 15 and not missing, "vcmad(8) documents every configuration key (%d)%s" % (
    len(keys), "; add to docs/man/vcmad.8.scd: %s" % " ".join(missing) if missing else ""))
for sec in ("[daemon]", "[limits]", "[machine]", "[pool NAME]"):
    if "## " + sec not in cfg:
        fail("vcmad(8) lacks the section %s" % sec)
for sig in ("SIGTERM", "SIGINT"):
    if sig not in section(man8, "SIGNALS"):
        fail("vcmad(8) SIGNALS lacks %s" % sig)
check("vcmad-ctl.sock" in section(man8, "SOCKETS") and "vcmad.sock" in section(man8, "SOCKETS"),
      "vcmad(8) documents both sockets")

# ---- vcma(4): the guest driver's ioctls, fields and errors ----
man4 = read(os.path.join(ROOT, "docs/man/vcma.4.scd"))
uapi = read(os.path.join(ROOT, "guest-driver/linux/vcma_uapi.h"))
iocs = re.findall(r"#define (VCMA_IOC_[A-Z]+) _IO", uapi)
missing = [i for i in iocs if "*%s*" % i not in section(man4, "IOCTLS")]
check(len(iocs) == 3 and not missing, "vcma(4) documents every ioctl of vcma_uapi.h %s" % (missing or iocs))
fields = set(re.findall(r"^\s+(?:__[us]\d+|char) (\w+)(?:\[[A-Z_]+\])?;", uapi, re.M)) - {"pad", "flags"}
missing = sorted(f for f in fields if "*%s*" % f not in section(man4, "IOCTLS"))
check(len(fields) > 10 and not missing, "vcma(4) documents every field of the ioctl structures%s"
      % ("; missing: %s" % missing if missing else ""))
status = read(os.path.join(ROOT, "proto/vcma_status.h"))  # the map vcma.ko uses
errnos = set(re.findall(r"-(E[A-Z0-9]+)", status[status.index("int vcma_status_errno"):
                                                  status.index("int32_t vcma_errno_status")]))
errnos |= {"ECONNRESET", "ENODEV", "ETIMEDOUT", "EINTR", "ESHUTDOWN"}  # from the ring's state checks and waits
errs = section(man4, "ERRORS")
missing = sorted(e for e in errnos if "*%s*" % e not in errs and e not in ("ENOMEM",))
check(len(errnos) > 12 and not missing and "ENOMEM" in errs,
      "vcma(4) documents every errno vcmad's statuses map to, and the driver's own%s"
      % ("; missing: %s" % missing if missing else ""))

# ---- vcmactl(1) PROTOCOL: the wire commands and their members, as vcmad parses them ----
request = read(os.path.join(ROOT, "hv/ctl/request.c"))


def args(expr):
    return set() if expr.strip() == "0" else {a.strip()[4:].lower() for a in expr.split("|")}


parsed = {m.group(1): (args(m.group(2)), args(m.group(3)))
          for m in re.finditer(r'\[VCMAD_CTL_\w+\] = \{ "(\w+)", ([\w |]+), ([\w |]+) \}', request)}
rows = re.findall(r"^\|  \*(\w+)\*\n:  (.*)\n:  .*$", section(man1, "PROTOCOL"), re.M)
documented = {}
for cmd, members in rows:
    names = re.findall(r"\*(\w+)\*(!?)", members)
    documented[cmd] = ({n for n, _ in names}, {n for n, bang in names if bang})
check(len(parsed) >= 11 and documented == parsed,
      "vcmactl(1) lists every wire command with the members vcmad takes and requires (%s%s)"
      % (" ".join(sorted(parsed)), "" if documented == parsed else "; man page: %s; vcmad: %s" % (documented, parsed)))

# ---- bash completion ----
comp = read(COMPLETION)
m = re.search(r'local cmds="([^"]*)"', comp)
check(m and m.group(1).split() == help_cmds, "the completion offers exactly the commands of --help")
missing = sorted(o for o in help_opts if o not in comp)
check(not missing, "the completion knows every option (missing: %s)" % missing)


def complete(*words):
    script = 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _vcmactl; echo "${COMPREPLY[*]}"'
    r = subprocess.run(["bash", "-c", script, "-", COMPLETION] + list(words), capture_output=True, text=True,
                       env=dict(os.environ, VCMA_CTL_SOCKET="/nonexistent"))
    if r.returncode != 0:
        fail("bash completion failed: %s" % r.stderr)
    return sorted(r.stdout.split())


check(complete("vcmactl", "po") == ["pool", "pools"], "completion: 'vcmactl po' -> pool pools")
check(complete("vcmactl", "--j") == ["--json"], "completion: global options")
check(complete("vcmactl", "stats", "--p") == ["--prometheus"], "completion: a command's options")
check(complete("vcmactl", "pool", "") == ["show"], "completion: pool -> show")
check(complete("vcmactl", "--json", "watch", "--") == ["--count", "--help", "--interval", "--json", "--socket"],
      "completion: watch options after a global option")
print("PASS")
