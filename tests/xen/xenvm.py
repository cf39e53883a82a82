"""Real Xen 4.17 under QEMU (TCG) for vcma's Xen tests: Debian's hypervisor, Debian's
kernel as a PV dom0 with a busybox initramfs holding the Xen tools, and PV domUs
created from dom0 with the same kernel. The recipe and its pitfalls are measured in
../shared/reference/xen-under-qemu.md (beside the repository); this module is that
recipe, reusable.

A test, in full:

    import xenvm
    env = xenvm.prepare(ROOT)          # installs what is missing, or exits 77 saying why
    run = xenvm.XenRun(env, tempfile.mkdtemp())       # memory=2048 (MiB), smp=2
    run.add_dom0_file(VCMAD, "/usr/sbin/vcmad")       # + every shared library it needs
    run.domU_image("g1", DOMU_INIT, files=[(VCMA_KO, "/vcma.ko")])
    res = run.boot(DOM0_SCRIPT, timeout=120)
    if res.status != "exited": fail(res.explain())
    res.rc                  # the dom0 script's exit status
    res.facts["domid"]      # what the script recorded with xen_fact
    res.logs                # {"serial", "dom0", "xen", "domU:g1", ...} -> text
    res.kernel_problems()   # [(log name, line)] of WARNING/BUG/Oops/... in any of them

XenRun(env, workdir, memory=2048, smp=2)
    workdir holds the images, QEMU's serial log and share/, the directory dom0 mounts
    over 9p at /mnt/host (files in, results out).
  .add_dom0_file(src, dest=None, mode=None)
    Bake a host file into dom0's initramfs at dest (default: src's path). A dynamically
    linked ELF brings the shared libraries ldd names, at the paths ldd names them, so
    host binaries built against libxen or json-c run in dom0 as they are.
  .add_dom0_module(*names)
    Kernel modules (by name, e.g. "xen-blkback") loaded in dom0 before the script, each
    after the modules it depends on (modules.dep).
  .domU_image(name, init_script, files=(), modules=())
    A busybox initramfs for a domU, share/domU/NAME.cpio.gz: /init mounts /proc, /sys,
    /dev, /dev/pts and /tmp, loads modules (by name, with their dependencies), runs
    init_script (sh), then powers the domU off. files: (src, dest[, mode]) tuples;
    dynamically linked ELF files bring their libraries as in dom0. Returns the image's
    path as dom0 sees it.
  .boot(dom0_script, timeout=120, xen_args="", dom0_args="") -> XenResult
    Boot Xen and dom0 (dom0_mem=512M,max:512M, quiet logs), start xenstored,
    xen-init-dom0 and xenconsoled --log=guest, run dom0_script (sh, in /mnt/host, its
    output to share/out/script.log), copy dom0's dmesg, `xl dmesg` and every domU
    console log to share/out, and power off with the script's status through
    isa-debug-exit. timeout bounds the whole boot (QEMU is killed then); the script
    has script_seconds(timeout) of it, so that a script that hangs still leaves every
    log. xen_args and dom0_args are appended to Xen's and dom0's command lines.
    boot() may be called again on the same run; each boot starts from an empty
    share/out.

XenResult
  .status   "exited": the script ran and .rc is its exit status;
            "setup-failed": dom0 could not get Xen's tools going (.setup_error says how);
            "script-timeout": the script was still running at its deadline,
            XenRun.script_seconds(timeout) after dom0 came up, and was stopped; the
            logs were collected all the same;
            "xen-rebooted": Xen rebooted the machine (a Xen or dom0 crash);
            "timeout": the boot did not end within the timeout and QEMU was killed
            (only the serial log and the script's output so far are there);
            "qemu-failed": QEMU did not run (its stderr is in .explain()).
  .rc       the script's exit status, or None unless status is "exited"
  .seconds  the boot's wall time; .cpu_seconds the CPU time QEMU used (the work done:
            other load on the host changes it less than the wall time)
  .output   the script's stdout and stderr
  .facts    {key: value} from the script's xen_fact lines (the last one of a key wins)
  .out      share/out on the host: whatever the script wrote to $XENVM_OUT
  .logs     {"serial": QEMU's serial console (Xen and dom0's console), "dom0": dom0's
            dmesg, "xen": `xl dmesg`, "domU:NAME": the console of domU NAME}; a log that
            was not collected (Xen crashed, timeout) is missing
  .kernel_problems(ignore=None) -> [(log name, line)]
            Linux's WARNING:, BUG:, Oops, Call Trace, general protection, refcount_t,
            KASAN, UBSAN, kernel panic, and Xen's "(XEN)" lines with Assertion, FATAL,
            Panic, Xen BUG/WARN or a crashed domain, in any log; ignore: a regex of
            lines a test expects (e.g. a domU it crashes on purpose).
  .explain() -> text for a failure message: status, rc, setup error, the ends of the
            script's output and the serial log.

In dom0 the script runs with PATH holding busybox, xl and the Xen daemons
(/usr/lib/xen-4.17/bin) and xenstore-read/-write/-ls/-rm/-chmod/-watch..., and with
    XENVM_SHARE=/mnt/host  XENVM_OUT=/mnt/host/out  XENVM_DOMU=/mnt/host/domU
    XENVM_KERNEL           the domU kernel (Debian's, the plain vmlinux ELF)
and these shell functions (tests/xen/xenvm.sh):
    xen_create [-i IMAGE] [-k KERNEL] [-x 'key = value']... NAME MEMORY [MAXMEM [EXTRA]]
        xl create a PV domU: MEMORY and MAXMEM in MiB, EXTRA appended to the kernel
        command line (after $XENVM_DOMU_CMDLINE: console=hvc0 rdinit=/init quiet
        loglevel=5 and two options that save seconds under TCG), IMAGE the
        ramdisk (default: the image domU_image() built under NAME), -x more xl config
        lines. Debian's kernel takes 58 MiB before it runs: give MEMORY 96 or more. Its
        console is logged to /var/log/xen/console/guest-NAME.log.
    xen_domid NAME                       print NAME's domain id
    xen_mem_mib NAME                     print NAME's memory as `xl list` shows it (MiB,
                                         from tot_pages)
    xen_console NAME                     print what the domain last created under NAME
                                         printed on its console so far
    xen_wait_console NAME REGEX [SECS]   wait (default 60 s) for a line of xen_console
                                         matching the extended regex; 1 and what the
                                         console says if none comes
    xen_poll SECS CMD...                 run CMD until it succeeds; 1 after SECS seconds
    xen_destroy NAME                     xl destroy NAME and wait until it is gone
    xen_fact KEY VALUE...                record a fact for the host (result.facts)
Each prints what went wrong to stderr (so to script.log) and returns non-zero on failure.
"""
import atexit
import glob
import gzip
import lzma
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "qemu"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import guestbuild  # noqa: E402
import mkinitramfs  # noqa: E402
import qemuvm  # noqa: E402
from vcmatest import skip  # noqa: E402

XEN_GZ = "/boot/xen-4.17-amd64.gz"
XEN_BIN = "/usr/lib/xen-4.17/bin"
XEN_TOOLS = ("xl", "xenstored", "xenconsoled", "xen-init-dom0", "libxl-save-helper")
# xen-privcmd first: xenfs needs it; then the 9p share over virtio-pci
DOM0_MODULES = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc",
                "virtio_pci", "9pnet_virtio", "9p")
XEN_CMDLINE = ("console=com1 com1=115200,8n1 dom0_mem=512M,max:512M loglvl=warning guest_loglvl=none "
               "bootscrub=false")
DOM0_CMDLINE = "console=hvc0 rdinit=/init quiet cryptomgr.notests"
XEN_PROBLEMS = re.compile(r"Assertion|FATAL|Panic|Xen BUG|Xen WARN|crashed|domain_crash")


def _libgcc_s():
    # pthread_cancel dlopens it, so ldd never names it, and xl aborts without it
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        if os.path.exists(os.path.join(d, "libgcc_s.so.1")):
            return os.path.join(d, "libgcc_s.so.1")
    return None


def _missing():
    need = guestbuild.missing_packages(kbuild=False)
    if not os.path.exists(XEN_GZ):
        need.append("xen-hypervisor-4.17-amd64")
    if not all(os.path.exists(os.path.join(XEN_BIN, t)) for t in XEN_TOOLS) or not os.path.exists("/usr/bin/xenstore"):
        need.append("xen-utils-4.17")
    if not os.path.exists("/usr/include/xenctrl.h"):
        need.append("libxen-dev")
    return need


class Env:
    """What prepare() found: the hypervisor, the kernel, its modules, busybox; and a
    cache directory for what every run shares (the unpacked hypervisor, the domU kernel)."""

    def __init__(self, root, cache):
        self.root = root
        self.cache = cache
        self.kernel = qemuvm.newest_kernel()
        self.kver = os.path.basename(self.kernel)[len("vmlinuz-"):]
        self.moddir = os.path.join("/lib/modules", self.kver)
        self.busybox = "/bin/busybox"
        self.libgcc_s = _libgcc_s()
        self.xen = os.path.join(cache, "xen")
        self._domu_kernel = None
        self._deps = None

    def domu_kernel(self):
        """Debian's kernel as the plain vmlinux ELF inside its bzImage, made once. Under
        TCG, libxenguest takes seconds to unpack a bzImage's XZ payload (or a gzip'd
        vmlinux) on every xl create; the plain ELF needs no unpacking."""
        if self._domu_kernel is None:
            path = os.path.join(self.cache, "vmlinux")
            with open(self.kernel, "rb") as f:
                bz = f.read()
            setup_sects = bz[0x1f1] or 4
            off, length = struct.unpack_from("<II", bz, 0x248)  # payload_offset, payload_length
            start = (setup_sects + 1) * 512 + off
            payload = bz[start:start + length]
            vmlinux = None
            if payload[:6] == b"\xfd7zXZ\x00":
                # the one-shot lzma.decompress() wants a stream end the kernel's build leaves out
                vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
            elif payload[:2] == b"\x1f\x8b":
                vmlinux = gzip.decompress(payload)
            with open(path, "wb") as f:
                # another compression: libxenguest unpacks the bzImage itself
                f.write(_trim_elf(vmlinux) if vmlinux and vmlinux[:4] == b"\x7fELF" else bz)
            self._domu_kernel = path
        return self._domu_kernel

    def modules(self, names):
        """The .ko paths of names and everything they depend on, each after its
        dependencies; built-in modules are left out, unknown ones are an error."""
        if self._deps is None:
            self._deps = {}
            with open(os.path.join(self.moddir, "modules.dep")) as f:
                for line in f:
                    path, _, deps = line.partition(":")
                    self._deps[_modname(path)] = (path, [_modname(d) for d in deps.split()])
            builtin = os.path.join(self.moddir, "modules.builtin")
            self._builtin = set()
            if os.path.exists(builtin):
                with open(builtin) as f:
                    self._builtin = {_modname(line.strip()) for line in f}
        order = []

        def visit(name):
            name = name.replace("-", "_")
            if name in self._builtin or any(_modname(p) == name for p in order):
                return
            if name not in self._deps:
                raise FileNotFoundError("module %s is not in %s/modules.dep" % (name, self.moddir))
            path, deps = self._deps[name]
            for d in reversed(deps):  # modprobe loads the last one first
                visit(d)
            order.append(os.path.join(self.moddir, path))

        for n in names:
            visit(n)
        return order


def _trim_elf(elf):
    """The same loadable image in fewer bytes: the zeros at the end of each PT_LOAD
    segment (.bss and the scratch areas after it, 27 of Debian's 66 MB) are left to the
    loader, which zero-fills p_memsz beyond p_filesz; the file ends with the last byte a
    segment needs, and the section headers, which no loader reads, go with it."""
    elf = bytearray(elf)
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    end = phoff + phentsize * phnum
    for i in range(phnum):
        ph = phoff + i * phentsize
        p_type, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, ph)
        if p_type == 1:  # PT_LOAD
            filesz = len(elf[offset:offset + filesz].rstrip(b"\0"))
            struct.pack_into("<Q", elf, ph + 32, filesz)
        end = max(end, offset + filesz)
    struct.pack_into("<Q", elf, 0x28, 0)          # e_shoff
    struct.pack_into("<HH", elf, 0x3c, 0, 0)      # e_shnum, e_shstrndx
    return bytes(elf[:end])


def _modname(path):
    return re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path)).replace("-", "_")


def prepare(root):
    """Check that Xen, QEMU, the kernel and busybox are here, installing what is missing
    (scripts/setup-deps.sh --for tests, as root); exit 77 naming what cannot be had.
    Returns the Env every XenRun of the test uses."""
    guestbuild.ensure_packages(root, _missing, "real Xen under QEMU")
    env = Env(root, tempfile.mkdtemp(prefix="vcma-xen-"))
    atexit.register(shutil.rmtree, env.cache, True)
    if not os.path.isdir(env.moddir):
        skip("no %s for the guest kernel %s (reinstall linux-image-amd64)" % (env.moddir, env.kernel))
    if env.libgcc_s is None:
        skip("no libgcc_s.so.1 (libgcc-s1), which xl needs in dom0")
    # QEMU's multiboot loader takes the ELF, not the .gz (with the .gz it hangs)
    with gzip.open(XEN_GZ, "rb") as src, open(env.xen, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return env


_ldd_cache = {}


def shared_libs(path):
    """The shared libraries a dynamically linked ELF file loads, as ldd resolves them
    (its interpreter included); [] for anything else (static, a script, a .ko)."""
    if path in _ldd_cache:
        return _ldd_cache[path]
    libs = []
    with open(path, "rb") as f:
        elf = f.read(4) == b"\x7fELF"
    if elf:
        r = subprocess.run(["ldd", path], capture_output=True, text=True)
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
                if m:
                    libs.append(m.group(1))
                elif "=> not found" in line:
                    raise FileNotFoundError("%s: ldd: %s" % (path, line.strip()))
    _ldd_cache[path] = libs
    return libs


def _add(cpio, src, dest, mode=None):
    """Add a host file and, if it is dynamically linked, its libraries."""
    if mode is None:
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
    with open(src, "rb") as f:
        cpio.file(dest, f.read(), mode)
    for lib in shared_libs(src):
        with open(lib, "rb") as f:
            cpio.file(lib, f.read(), 0o755)


def _add_modules(cpio, env, names):
    """Copy the modules (with dependencies) to /lib/xenvm/ and list their load order in
    /lib/xenvm/modules, which the init scripts read."""
    order = env.modules(names)
    for path in order:
        with open(path, "rb") as f:
            cpio.file("lib/xenvm/" + os.path.basename(path), f.read())
    cpio.file("lib/xenvm/modules", "".join(os.path.basename(p) + "\n" for p in order).encode())


# Common to dom0's and a domU's /init: busybox's applets, the kernel file systems, and
# the modules listed in /lib/xenvm/modules.
INIT_COMMON = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in $(cat /lib/xenvm/modules 2>/dev/null); do
    insmod /lib/xenvm/$m || XENVM_BAD="insmod $m"
done
"""

DOM0_INIT = INIT_COMMON + r"""
export PATH=$PATH:/usr/lib/xen-4.17/bin
xenvm_exit() {
    echo "XENVM-EXIT $1"
    printf "\\$(printf %o $1)" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null  # isa-debug-exit
    poweroff -f
}
xenvm_setup_failed() {
    echo "XENVM-SETUP-FAILED $*"
    dmesg | tail -n 30
    xenvm_exit 250
}
[ -n "$XENVM_BAD" ] && xenvm_setup_failed "$XENVM_BAD"
mkdir -p /run/xen /run/xenstored /run/lock /run/xenvm /mnt/host
mount -t xenfs xenfs /proc/xen || xenvm_setup_failed "mount xenfs"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostshare /mnt/host || xenvm_setup_failed "mount 9p"
xenstored --pid-file /run/xenstored.pid || xenvm_setup_failed "xenstored"
xen-init-dom0 >/run/xenvm/init-dom0.log 2>&1 || xenvm_setup_failed "xen-init-dom0: $(cat /run/xenvm/init-dom0.log)"
xenconsoled --log=guest --log-dir=/var/log/xen/console || xenvm_setup_failed "xenconsoled"
export XENVM_SHARE=/mnt/host XENVM_OUT=/mnt/host/out XENVM_DOMU=/mnt/host/domU
export XENVM_KERNEL=/mnt/host/domU/vmlinux
echo "XENVM-DOM0-UP $(cut -d' ' -f1 /proc/uptime)"
cd /mnt/host
. /mnt/host/xenvm.env  # XENVM_SCRIPT_SECS: the script's share of the host's timeout
T0=$(cut -d. -f1 /proc/uptime)
timeout $XENVM_SCRIPT_SECS sh -c '. /lib/xenvm/xenvm.sh && . /mnt/host/dom0.sh' </dev/null >/mnt/host/out/script.log 2>&1
RC=$?
# busybox timeout ends the script with SIGTERM, so with status 143
[ $RC = 143 ] && [ $(( $(cut -d. -f1 /proc/uptime) - T0 )) -ge $XENVM_SCRIPT_SECS ] &&
    echo "XENVM-SCRIPT-TIMEOUT after $XENVM_SCRIPT_SECS s"
echo "XENVM-SCRIPT-DONE $RC $(cut -d' ' -f1 /proc/uptime)"
cd /
dmesg >/mnt/host/out/dom0-dmesg.txt
xl dmesg >/mnt/host/out/xl-dmesg.txt 2>&1
mkdir -p /mnt/host/out/console
cp /var/log/xen/console/guest-*.log /mnt/host/out/console/ 2>/dev/null
xenvm_exit $RC
"""

DOMU_INIT_TAIL = r"""
[ -n "$XENVM_BAD" ] && echo "XENVM-DOMU-SETUP-FAILED $XENVM_BAD"
%s
poweroff -f
"""


class XenResult:
    def __init__(self, status, rc, seconds, cpu_seconds, workdir, setup_error=None, qemu_stderr=""):
        self.status, self.rc, self.seconds, self.cpu_seconds = status, rc, seconds, cpu_seconds
        self.setup_error, self.qemu_stderr = setup_error, qemu_stderr
        self.out = os.path.join(workdir, "share", "out")
        self.logs = {"serial": _read(os.path.join(workdir, "serial.log"))}
        for key, name in (("dom0", "dom0-dmesg.txt"), ("xen", "xl-dmesg.txt")):
            text = _read(os.path.join(self.out, name))
            if text is not None:
                self.logs[key] = text
        for path in sorted(glob.glob(os.path.join(self.out, "console", "guest-*.log"))):
            self.logs["domU:" + os.path.basename(path)[len("guest-"):-len(".log")]] = _read(path)
        self.output = _read(os.path.join(self.out, "script.log")) or ""
        self.facts = {}
        for line in (_read(os.path.join(self.out, "facts")) or "").splitlines():
            key, _, value = line.partition(" ")
            self.facts[key] = value

    def kernel_problems(self, ignore=None):
        rx_ignore = re.compile(ignore) if ignore else None
        found = []
        for name, text in self.logs.items():
            for line in text.splitlines():
                rx = XEN_PROBLEMS if "(XEN)" in line else guestbuild.PROBLEMS
                if rx.search(line) and not (rx_ignore and rx_ignore.search(line)):
                    found.append((name, line))
        return found

    def explain(self):
        text = "Xen run: %s" % self.status
        if self.rc is not None:
            text += ", the dom0 script exited %d" % self.rc
        text += " after %.1f s (QEMU used %.1f s of CPU)" % (self.seconds, self.cpu_seconds)
        if self.setup_error:
            text += "\ndom0 setup failed: " + self.setup_error
        if self.qemu_stderr.strip():
            text += "\nQEMU said: " + self.qemu_stderr.strip()[-2000:]
        text += "\n---- dom0 script output (last 60 lines) ----\n" + "\n".join(self.output.splitlines()[-60:])
        text += "\n---- serial console (last 60 lines) ----\n" + "\n".join(self.logs["serial"].splitlines()[-60:])
        return text + "\n---- end ----"


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").replace("\r", "")
    except FileNotFoundError:
        return None


class XenRun:
    def __init__(self, env, workdir, memory=2048, smp=2):
        self.env, self.workdir, self.memory, self.smp = env, workdir, memory, smp
        self.share = os.path.join(workdir, "share")
        os.makedirs(os.path.join(self.share, "domU"), exist_ok=True)
        self.dom0_files = []   # (src, dest, mode)
        self.dom0_modules = list(DOM0_MODULES)
        self._dom0_image = None

    def add_dom0_file(self, src, dest=None, mode=None):
        self.dom0_files.append((src, dest or src, mode))
        self._dom0_image = None

    def add_dom0_module(self, *names):
        self.dom0_modules += names
        self._dom0_image = None

    def domU_image(self, name, init_script, files=(), modules=()):
        c = mkinitramfs.base(INIT_COMMON + DOMU_INIT_TAIL % init_script, self.env.busybox, applets=("sh",))
        for spec in files:
            _add(c, spec[0], spec[1], spec[2] if len(spec) > 2 else None)
        _add_modules(c, self.env, modules)
        mkinitramfs.write(c, os.path.join(self.share, "domU", name + ".cpio.gz"))
        kernel = os.path.join(self.share, "domU", "vmlinux")
        if not os.path.exists(kernel):
            try:
                os.link(self.env.domu_kernel(), kernel)
            except OSError:  # another file system
                shutil.copyfile(self.env.domu_kernel(), kernel)
        return "/mnt/host/domU/%s.cpio.gz" % name

    def _build_dom0(self):
        path = os.path.join(self.workdir, "dom0.cpio.gz")
        c = mkinitramfs.base(DOM0_INIT, self.env.busybox, applets=("sh",))
        for tool in XEN_TOOLS:
            _add(c, os.path.join(XEN_BIN, tool), os.path.join(XEN_BIN, tool))
        for path_ in sorted(glob.glob("/usr/bin/xenstore*")):
            if os.path.islink(path_):  # xenstore-read, -write, ... -> xenstore
                c.symlink(path_, os.readlink(path_))
            else:
                _add(c, path_, path_)
        _add(c, self.env.libgcc_s, self.env.libgcc_s)
        for d in ("var/lib/xen", "var/lib/xenstored", "var/log/xen/console", "mnt/host"):
            c.dir(d)
        c.symlink("var/run", "../run")  # xl's lock files are under /var/run/xen
        c.file("etc/xen/xl.conf", b"")
        with open(os.path.join(HERE, "xenvm.sh"), "rb") as f:
            c.file("lib/xenvm/xenvm.sh", f.read())
        _add_modules(c, self.env, self.dom0_modules)
        for src, dest, mode in self.dom0_files:
            _add(c, src, dest, mode)
        mkinitramfs.write(c, path)
        self._dom0_image = path
        return path

    @staticmethod
    def script_seconds(timeout):
        """The dom0 script's own deadline within a boot's timeout: what is left once
        Xen and dom0 are up (up to a minute under load) and the logs are collected."""
        return int(max(timeout / 2, timeout - 60))

    def boot(self, dom0_script, timeout=120, xen_args="", dom0_args=""):
        initrd = self._dom0_image or self._build_dom0()
        out = os.path.join(self.share, "out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        with open(os.path.join(self.share, "dom0.sh"), "w") as f:
            f.write(dom0_script)
        with open(os.path.join(self.share, "xenvm.env"), "w") as f:
            f.write("XENVM_SCRIPT_SECS=%d\n" % self.script_seconds(timeout))
        serial = os.path.join(self.workdir, "serial.log")
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-cpu", "qemu64,+svm,+npt",
               "-m", str(self.memory), "-smp", str(self.smp), "-nographic", "-monitor", "none",
               "-serial", "stdio", "-no-reboot", "-nic", "none",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-virtfs", "local,path=%s,mount_tag=hostshare,security_model=none,id=hs" % self.share,
               "-kernel", self.env.xen, "-append", (XEN_CMDLINE + " " + xen_args).strip(),
               # -initrd is "module args,module args": a comma in args is written ",,"
               "-initrd", "%s %s,%s" % (self.env.kernel, (DOM0_CMDLINE + " " + dom0_args).strip().replace(",", ",,"),
                                        initrd)]
        t0, ru0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(serial, "wb") as log, open(os.path.join(self.workdir, "qemu.stderr"), "w+") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=err)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            err.seek(0)
            qemu_stderr = err.read()
        seconds = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        text = _read(serial) or ""
        exits = re.findall(r"^XENVM-EXIT (\d+)", text, re.M)
        setup = re.findall(r"^XENVM-SETUP-FAILED (.*)", text, re.M)
        rc = None
        if code is None:
            status = "timeout"
        elif setup:
            status = "setup-failed"
        elif re.search(r"^XENVM-SCRIPT-TIMEOUT", text, re.M):
            status = "script-timeout"
        elif code % 2 == 1 and (exits or code > 1):
            # isa-debug-exit: QEMU exits (value << 1) | 1; 1 alone is also QEMU's own
            # error status, so rc 0 counts only with dom0's XENVM-EXIT line
            status, rc = "exited", code >> 1
        elif code == 0:
            status = "xen-rebooted"  # Xen restarts the machine after a crash; -no-reboot ends QEMU
        else:
            status = "qemu-failed"
        return XenResult(status, rc, seconds, cpu, self.workdir, setup[0] if setup else None, qemu_stderr)
