"""A harness for tests that run real guests under libvirt: the embedded QEMU driver
(qemu:///embed?root=DIR, no daemon, no system service), Debian's stock kernel under
TCG, an initramfs per guest, serial consoles in files. python3-libvirt.

The pieces, in the order a test uses them:

  ensure_libvirt()          import libvirt (re-exec under /usr/bin/python3 when the
                            interpreter running us cannot: Debian's python3-libvirt is
                            for the system Python); returns the module
  subreaper(*roots)         make this process the reaper of the QEMUs libvirt
                            daemonizes for these embed roots (and every EmbedRoot), so
                            a destroyed QEMU is reaped at once (see the function)
  EmbedRoot(base=None)      a fresh embed root: .root, .uri, .backing_dir, .qemu_conf
  start_event_loop()        libvirt's default event loop on a daemon thread (once)
  open_embed(root)          a virConnect on root (starts the event loop first)
  Events(conn)              lifecycle, device-removed and virtio-mem size events,
                            recorded with their arrival time; .wait(pred, timeout)
  build_vcma_guest(src, init_script)    vcma.ko, vcma-e2e, vcma-hostile, initramfs
  build_lender_guest(init_script)       virtio_mem modules + memhog, initramfs
  vcma_guest_xml(...), lender_guest_xml(...), shmem_xml(...)   domain/device XML
  virtio_mem_element(dom), set_virtio_mem_requested(dom, mib), virtio_mem_sizes(dom)
  SerialLog(path)           a guest's serial console file, read line by line:
                            .expect(pattern, timeout), .problems(), .dump()
  start_domains(root, xmls) define and start domains from a child process that exits,
                            leaving the root to another process (vcmad)
  cleanup(conn)             destroy and undefine every domain, close the connection

Nothing here asserts; the test decides. Fatal setup problems raise HarnessError."""
import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

HERE = os.path.dirname(os.path.abspath(__file__))
QEMU_DIR = os.path.join(HERE, "..", "qemu")
sys.path.insert(0, QEMU_DIR)

import guestbuild  # noqa: E402
import mkinitramfs  # noqa: E402
import qemuvm  # noqa: E402
import vcmatest  # noqa: E402

VCMA_NS = "https://vcma.dev/xmlns/libvirt/1"
MiB = 1 << 20
# virtio_mem and what it needs, in load order (Debian's .ko files are not compressed)
VIRTIO_MEM_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                      "virtio_pci", "virtio_mem")
APPLETS = mkinitramfs.APPLETS + ("head", "tail", "free", "uname", "kill", "wc")

libvirt = None


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------- libvirt, the process

def ensure_libvirt():
    """The libvirt module. Debian's python3-libvirt is built for /usr/bin/python3; when
    another interpreter runs us (a pyenv shim first in PATH, say) and cannot import it,
    re-exec the same command line under /usr/bin/python3. Raises ImportError when even
    that cannot import it (the caller skips)."""
    global libvirt
    if libvirt is not None:
        return libvirt
    try:
        import libvirt as lv
    except ImportError:
        sysp = "/usr/bin/python3"
        if (os.path.exists(sysp) and os.path.realpath(sys.executable) != os.path.realpath(sysp)
                and not os.environ.get("LVHARNESS_REEXEC")):
            os.environ["LVHARNESS_REEXEC"] = "1"
            sys.stdout.flush()
            os.execv(sysp, [sysp] + sys.argv)
        raise
    libvirt = lv
    return lv


PR_SET_CHILD_SUBREAPER = 36
_reap_roots = []


def _pids_in(dirs):
    pids = set()
    for d in dirs:
        for dirpath, _, files in os.walk(d):
            for f in files:
                if f.endswith(".pid"):
                    try:
                        with open(os.path.join(dirpath, f)) as fh:
                            pids.add(int(fh.read().split()[0]))
                    except (OSError, ValueError, IndexError):
                        pass
    return pids


def subreaper(*roots):
    """Make this process a child subreaper and reap, on a thread, the QEMUs of the given
    embed roots (EmbedRoots or directories; EmbedRoots made later are added) that end
    up its children.

    Why: libvirt daemonizes QEMU (a double fork), so QEMU's parent is init or the
    nearest subreaper; when QEMU dies, libvirt polls every 200 ms until its pid is gone
    (virProcessKillPainfully) and only then emits STOPPED. Under an init that reaps
    late (this container's PID 1 takes about 1 s) destroy -> STOPPED takes 1.2-1.6 s;
    with a prompt reaper about 0.2 s. A vcmad the test starts is our descendant, so its
    QEMUs come to us too.

    Which zombies are QEMUs to reap: pids seen in a *.pid file under a root (libvirt
    has QEMU write its pid there; QEMU removes the file as it exits, so the files are
    read every 0.2 s while it runs), and, as a fallback, a zombie named
    qemu-system-x86 that nobody else reaped within 1 s. Any other child is left to
    whoever started it: libvirt waits for its own forks (the intermediate process of
    the double fork, named after the libvirt thread that forked it, "qemu-..."
    included; the parent half of a QEMU -daemonize probe, named qemu-system-x86),
    subprocess for its own. Returns True if it could be set."""
    for r in roots:
        _reap_roots.append(r.root if isinstance(r, EmbedRoot) else r)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return False
    known = set()

    def scan():
        while True:
            known.update(_pids_in(list(_reap_roots)))
            time.sleep(0.2)

    def comm(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            return ""

    def reap():
        first_seen = {}
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            if info is None:
                continue
            pid = info.si_pid
            if pid not in known:
                known.update(_pids_in(list(_reap_roots)))
            seen = first_seen.setdefault(pid, time.monotonic())
            if pid in known or (comm(pid) == "qemu-system-x86" and time.monotonic() - seen > 1):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                known.discard(pid)
                first_seen.pop(pid, None)
                continue
            time.sleep(0.01)  # someone else's child: its owner waits for it

    threading.Thread(target=scan, name="qemu-pid-scan", daemon=True).start()
    threading.Thread(target=reap, name="qemu-reaper", daemon=True).start()
    return True


_loop_started = False


def start_event_loop():
    """Register libvirt's default event loop implementation and run it on a daemon
    thread, once per process. Must come before the first virConnectOpen: an embed
    connection refuses to open without one ("An event loop implementation must be
    registered"), and events are delivered from this thread."""
    global _loop_started
    lv = ensure_libvirt()
    if _loop_started:
        return
    lv.virEventRegisterDefaultImpl()

    def run():
        while True:
            lv.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _loop_started = True


QEMU_CONF = """# written by tests/libvirt/lvharness.py
# QEMU's stdout/stderr to a file, not to virtlogd (there is none running)
stdio_handler = "file"
# no cgroups: root embed would otherwise create /sys/fs/cgroup/*/machine
cgroup_controllers = [ ]
# QEMU as root, so it can read the test's kernel, initramfs and sockets
user = "root"
group = "root"
# leave the files alone: QEMU is root, so nothing needs relabelling, and libvirt would
# otherwise chown the kernel image and record its owner in xattrs (remember_owner);
# no AppArmor/SELinux profiles in a host's /etc for a test's QEMU either
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# no private mount namespace for QEMU: under a chroot (a fresh-machine run) libvirt
# cannot make one ("Failed disable mount propagation out of the root filesystem")
namespaces = [ ]
# virtio-mem access='shared' and file memory backing go here
memory_backing_dir = "%s"
"""


class EmbedRoot:
    """A fresh root for qemu:///embed: DIR/etc/qemu.conf (see QEMU_CONF), DIR/ram for
    memory backing. One process at a time may hold a connection to it ("Failed to
    acquire pid file '<root>/run/qemu/driver.pid'" for the next one)."""

    def __init__(self, base=None):
        self.dir = vcmatest.tmpdir("vcma-lv-", dir=base)
        self.root = os.path.join(self.dir, "embed")
        self.backing_dir = os.path.join(self.root, "ram")
        os.makedirs(os.path.join(self.root, "etc"))
        os.makedirs(self.backing_dir)
        self.qemu_conf = os.path.join(self.root, "etc", "qemu.conf")
        with open(self.qemu_conf, "w") as f:
            f.write(QEMU_CONF % self.backing_dir)
        self.uri = "qemu:///embed?root=" + self.root
        _reap_roots.append(self.root)

    def path(self, *names):
        """A path in the scratch directory beside the root (for logs, sockets)."""
        return os.path.join(self.dir, *names)

    def kill_qemus(self):
        """SIGKILL every QEMU still running for this root (pids from its run/qemu/*.pid):
        the last resort of a cleanup, since embed QEMUs outlive the process that
        started them. Returns the pids killed."""
        killed = []
        for pid in _pids_in([os.path.join(self.root, "run")]):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"qemu-system" not in f.read().split(b"\0")[0]:
                        continue
                os.kill(pid, 9)
                killed.append(pid)
            except OSError:
                pass
        return killed

    def remove(self):
        """kill_qemus(), then delete the scratch directory."""
        self.kill_qemus()
        shutil.rmtree(self.dir, ignore_errors=True)


def open_embed(root):
    """A connection to the embed root (an EmbedRoot or a URI). Starts the event loop."""
    start_event_loop()
    uri = root.uri if isinstance(root, EmbedRoot) else root
    return libvirt.open(uri)


def start_domains(root, xmls, timeout=120):
    """Define and start domains (XML strings) from a child process that then exits, and
    return their names. For a test whose embed root another process (vcmad) is to
    hold: only one process at a time may, and a process that has had a connection to
    the root keeps holding the QEMU monitors after virConnectClose (the next process's
    reconnect then times out: "cannot acquire state change lock (held by
    monitor=init-NAME)"); once the process that started them has exited, the next
    one reconnects to the running QEMUs (its first calls may race that reconnect)."""
    uri = root.uri if isinstance(root, EmbedRoot) else root
    names = [ET.fromstring(x).findtext("name") for x in xmls]
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "start", uri] + list(xmls),
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise HarnessError("starting %s in a child process failed:\n%s%s" % (names, r.stdout, r.stderr))
    return names


def cleanup(conn):
    """Destroy and undefine every domain of the connection, then close it: embed QEMUs
    outlive the process that started them. Right after a connection reconnected to
    running QEMUs a destroy can kill QEMU yet fail ("domain is not running"): errors
    are ignored here, and EmbedRoot.remove() kills what is left."""
    if conn is None:
        return
    try:
        for dom in conn.listAllDomains():
            try:
                if dom.isActive():
                    dom.destroy()
            except libvirt.libvirtError:
                pass
            try:
                dom.undefine()
            except libvirt.libvirtError:
                pass
        conn.close()
    except libvirt.libvirtError:
        pass


# ---------------------------------------------------------------- events

class Events:
    """Domain events of a connection, recorded as (monotonic time, kind, domain name,
    details): kind "lifecycle" with (event, detail) as libvirt's numbers,
    "device-removed" and "device-added" with the alias, "memory-size" with (alias,
    size in KiB). wait(pred, timeout) returns the first event since mark() (or all
    of them, since=0) that pred accepts, or None."""

    def __init__(self, conn):
        self.cond = threading.Condition()
        self.log = []
        self.conn = conn
        self.ids = []
        lv = libvirt
        reg = conn.domainEventRegisterAny
        self.ids.append(reg(None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                            lambda c, d, ev, det, o: self._add("lifecycle", d, (ev, det)), None))
        self.ids.append(reg(None, lv.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                            lambda c, d, alias, o: self._add("device-removed", d, alias), None))
        self.ids.append(reg(None, lv.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                            lambda c, d, alias, o: self._add("device-added", d, alias), None))
        self.ids.append(reg(None, lv.VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE,
                            lambda c, d, alias, size, o: self._add("memory-size", d, (alias, size)), None))

    def _add(self, kind, dom, details):
        with self.cond:
            self.log.append((time.monotonic(), kind, dom.name(), details))
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.log)

    def wait(self, pred, timeout, since=0, on_idle=None):
        """on_idle: called about every 50 ms while waiting (to keep reading a console,
        say), outside the lock."""
        deadline = time.monotonic() + timeout
        i = since
        while True:
            with self.cond:
                while i < len(self.log):
                    if pred(self.log[i]):
                        return self.log[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.05) if on_idle else left)
                if i < len(self.log):
                    continue
            if on_idle:
                on_idle()

    def stopped(self, name):
        """A predicate for wait(): the domain's STOPPED lifecycle event."""
        return lambda e: e[1] == "lifecycle" and e[2] == name and e[3][0] == libvirt.VIR_DOMAIN_EVENT_STOPPED

    def started(self, name):
        return lambda e: e[1] == "lifecycle" and e[2] == name and e[3][0] == libvirt.VIR_DOMAIN_EVENT_STARTED

    def memory_size(self, name, kib):
        """The domain's virtio-mem size event reporting exactly kib KiB."""
        return lambda e: e[1] == "memory-size" and e[2] == name and e[3][1] == kib

    def removed(self, name, alias):
        return lambda e: e[1] == "device-removed" and e[2] == name and e[3] == alias

    def close(self):
        for i in self.ids:
            try:
                self.conn.domainEventDeregisterAny(i)
            except libvirt.libvirtError:
                pass
        self.ids = []


# ---------------------------------------------------------------- guests

def kernel():
    """Debian's newest installed kernel image and its version."""
    k = qemuvm.newest_kernel()
    return k, os.path.basename(k)[len("vmlinuz-"):]


def missing_packages():
    """What the libvirt tests need that is not installed (Debian package names)."""
    need = guestbuild.missing_packages(kbuild=True)
    try:
        ensure_libvirt()
    except ImportError:
        need.append("python3-libvirt")
    if not glob.glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"):
        need.append("libvirt-daemon-driver-qemu")
    return need


def qemu_user_missing():
    """Root embed resolves the libvirt-qemu user and group before reading qemu.conf
    ("Failed to parse user 'libvirt-qemu'"); setup-deps.sh --for tests adds them."""
    if os.geteuid() != 0:
        return False
    import grp
    import pwd
    try:
        pwd.getpwnam("libvirt-qemu")
        grp.getgrnam("libvirt-qemu")
        return False
    except KeyError:
        return True


INIT_HEAD = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
"""


def build_vcma_guest(src_root, init_script, parts=None):
    """An initramfs for a vcma guest: vcma.ko, vcma_kapi_test.ko, /vcma-e2e and
    /vcma-hostile (tests/qemu/guestbuild.py builds them, installing what is missing,
    exiting 77 when it cannot), and /init = mount /proc, /sys, /dev, then init_script.
    parts: guestbuild.prepare()'s result, to build once for several initramfs. Returns
    parts with "initrd" and "kernel" added."""
    parts = dict(parts or guestbuild.prepare(src_root))
    init = INIT_HEAD + init_script
    c = mkinitramfs.base(init, applets=APPLETS)
    for p in guestbuild.PROGRAMS:
        with open(parts[p], "rb") as f:
            c.file(p, f.read(), 0o755)
    for k in ("vcma.ko", "vcma_kapi_test.ko"):
        with open(parts[k], "rb") as f:
            c.file(k, f.read(), 0o644)
    parts["initrd"] = os.path.join(parts["dir"], "vcma-initramfs-%d.cpio.gz" % len(os.listdir(parts["dir"])))
    mkinitramfs.write(c, parts["initrd"])
    parts["kernel"] = kernel()[0]
    return parts


def build_memhog(out_dir):
    src = os.path.join(QEMU_DIR, "guest", "memhog.c")
    dst = os.path.join(out_dir, "memhog")
    r = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", dst, src],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise HarnessError("building memhog:\n" + r.stdout + r.stderr)
    return dst


def build_lender_guest(init_script, out_dir=None):
    """An initramfs for a virtio-mem lender: the virtio_mem modules of the guest kernel
    in /modules, loaded in order by /init before init_script runs, and /memhog
    (tests/qemu/guest/memhog.c, static). Returns {"dir", "initrd", "kernel",
    "memhog"}."""
    out_dir = out_dir or vcmatest.tmpdir("vcma-lender-")
    kpath, kver = kernel()
    mods = []
    for m in VIRTIO_MEM_MODULES:
        found = glob.glob("/lib/modules/%s/kernel/drivers/**/%s.ko" % (kver, m), recursive=True)
        if not found:
            raise HarnessError("no %s.ko for kernel %s under /lib/modules" % (m, kver))
        mods.append((m, found[0]))
    load = "".join("insmod /modules/%s.ko || echo \"LV-INSMOD-FAILED %s\"\n" % (m, m) for m, _ in mods)
    c = mkinitramfs.base(INIT_HEAD + load + init_script, applets=APPLETS)
    for m, path in mods:
        with open(path, "rb") as f:
            c.file("modules/%s.ko" % m, f.read(), 0o644)
    memhog = build_memhog(out_dir)
    with open(memhog, "rb") as f:
        c.file("memhog", f.read(), 0o755)
    initrd = os.path.join(out_dir, "lender-initramfs.cpio.gz")
    mkinitramfs.write(c, initrd)
    return {"dir": out_dir, "initrd": initrd, "kernel": kpath, "memhog": memhog}


def _metadata(attrs):
    a = "".join(" %s=%s" % (k, quoteattr(str(v))) for k, v in attrs.items())
    return "<metadata><vcma:guest xmlns:vcma='%s'%s/></metadata>" % (VCMA_NS, a)


# loglevel=5: the console shows warnings (WARNING:, page allocation failures) but not
# every info line; panic=-1 reboots, which on_reboot turns into the domain stopping
BASE_CMDLINE = "console=ttyS0 panic=-1 loglevel=5"


def _domain(name, memory_kib_xml, os_xml, serial_log, metadata, devices_extra="", cpu_xml=""):
    return """<domain type='qemu'>
  <name>%(name)s</name>
  %(metadata)s
  %(memory)s
  <vcpu>1</vcpu>
  %(cpu)s
  %(os)s
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path=%(serial)s/><target port='0'/></serial>
    <memballoon model='none'/>
    %(extra)s
  </devices>
</domain>
""" % {"name": name, "metadata": metadata, "memory": memory_kib_xml, "cpu": cpu_xml, "os": os_xml,
       "serial": quoteattr(serial_log), "extra": devices_extra}


def _os(kernel_path, initrd, cmdline):
    return """<os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>%s</cmdline>
  </os>""" % (kernel_path, initrd, cmdline)


def vcma_guest_xml(name, kernel_path, initrd, serial_log, memory_mib=256, cmdline="", vcma_class="camera",
                   metadata=None, pcihole64_gib=None):
    """A vcma guest: Debian's kernel and the initramfs, i440fx with ACPI (PCI hot-plug
    of the <shmem> vcmad attaches live), serial console to serial_log, no balloon, the
    vcma metadata element (class=vcma_class, plus any metadata attributes), and no
    <shmem>. pcihole64_gib: size the 64-bit PCI hole (hot-plugged BARs beyond about
    2 GiB in total need it on i440fx)."""
    attrs = {"class": vcma_class}
    attrs.update(metadata or {})
    extra = ""
    if pcihole64_gib:
        extra = ("<controller type='pci' index='0' model='pci-root'><pcihole64 unit='GiB'>%d</pcihole64>"
                 "</controller>" % pcihole64_gib)
    return _domain(name, "<memory unit='MiB'>%d</memory>" % memory_mib,
                   _os(kernel_path, initrd, (BASE_CMDLINE + " " + cmdline).strip()), serial_log,
                   _metadata(attrs), extra)


def lender_guest_xml(name, kernel_path, initrd, serial_log, memory_mib=384, vmem_mib=256, requested_mib=0,
                     block_mib=2, cmdline="", metadata=None):
    """A virtio-mem lender: memory_mib of boot RAM in NUMA cell 0, a virtio-mem device
    of up to vmem_mib (block block_mib, requested requested_mib, access='shared': a
    file in the root's memory_backing_dir), maxMemory with one slot, and
    memhp_default_state=online_movable so what is plugged is onlined into ZONE_MOVABLE
    (without it the guest leaves it offline while QEMU reports it plugged). Metadata
    lend='yes' (plus any metadata attributes). libvirt rewrites <memory> to boot RAM +
    vmem_mib."""
    attrs = {"lend": "yes"}
    attrs.update(metadata or {})
    memory = ("<maxMemory slots='1' unit='MiB'>%d</maxMemory>\n  <memory unit='MiB'>%d</memory>"
              % (memory_mib + vmem_mib + 1024, memory_mib))
    cpu = ("<cpu><numa><cell id='0' cpus='0' memory='%d' unit='MiB'/></numa></cpu>" % memory_mib)
    dev = """<memory model='virtio-mem' access='shared'>
      <target>
        <size unit='MiB'>%d</size>
        <node>0</node>
        <block unit='MiB'>%d</block>
        <requested unit='MiB'>%d</requested>
      </target>
    </memory>""" % (vmem_mib, block_mib, requested_mib)
    cmd = (BASE_CMDLINE + " memhp_default_state=online_movable " + cmdline).strip()
    return _domain(name, memory, _os(kernel_path, initrd, cmd), serial_log, _metadata(attrs), dev, cpu)


def shmem_xml(name, socket_path, vectors=2):
    """A <shmem> ivshmem-doorbell device on a server socket. The model is an element:
    as an attribute (model='ivshmem-doorbell') libvirt ignores it, falls back to the
    legacy ivshmem and fails ("ivshmem device is not supported with this QEMU
    binary"). QEMU (the domain's user) must be able to connect to the socket."""
    return ("<shmem name=%s>\n  <model type='ivshmem-doorbell'/>\n  <server path=%s/>\n"
            "  <msi vectors='%d' ioeventfd='on'/>\n</shmem>\n" % (quoteattr(name), quoteattr(socket_path), vectors))


def virtio_mem_element(dom, flags=0):
    """The domain's (first) virtio-mem <memory> element, from the live XML by default."""
    root = ET.fromstring(dom.XMLDesc(flags))
    for m in root.iter("memory"):
        if m.get("model") == "virtio-mem":
            return m
    raise HarnessError("%s has no virtio-mem device" % dom.name())


def _kib(el):
    if el is None:
        return None
    units = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1 << 20,
             "gib": 1 << 20}
    return int(int(el.text) * units[(el.get("unit") or "KiB").lower()])


def virtio_mem_sizes(dom):
    """(requested, current) of the virtio-mem device in KiB, from the live XML. current
    is right only on a connection that has seen the size-change events (a fresh embed
    process that reconnected reads 0)."""
    t = virtio_mem_element(dom).find("target")
    return _kib(t.find("requested")), _kib(t.find("current"))


def set_virtio_mem_requested(dom, mib):
    """Ask the guest to plug or unplug to mib MiB: virDomainUpdateDeviceFlags with the
    full live <memory> element and the new <requested> (a partial element fails:
    "missing element or attribute './size'"), AFFECT_LIVE. Asynchronous: returns at
    once; the guest plugs or unplugs, and MEMORY_DEVICE_SIZE_CHANGE events (at most
    about one a second per device) report the progress. Returns the call's duration."""
    m = virtio_mem_element(dom)
    t = m.find("target")
    req = t.find("requested")
    req.set("unit", "KiB")
    req.text = str(mib * 1024)
    cur = t.find("current")
    if cur is not None:
        t.remove(cur)
    t0 = time.monotonic()
    dom.updateDeviceFlags(ET.tostring(m, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return time.monotonic() - t0


def device_alias(dom, tag, pred=lambda el: True):
    """The alias libvirt gave the first live device <tag> that pred accepts, or None."""
    root = ET.fromstring(dom.XMLDesc(0))
    dev = root.find("devices")
    for el in dev.findall(tag):
        if pred(el):
            a = el.find("alias")
            return a.get("name") if a is not None else None
    return None


# ---------------------------------------------------------------- serial console

class SerialLog:
    """A guest's serial console file (libvirt opens it in append mode; it need not exist
    yet). read_line(timeout) returns the next complete line or None; expect(pattern,
    timeout) the first match in a line after the last one matched, or None on timeout;
    lines holds everything read so far, times when each was read (a line is timed
    well only while someone keeps reading: see Events.wait's on_idle)."""

    def __init__(self, path):
        self.path = path
        self.f = None
        self.buf = b""
        self.lines = []
        self.times = []  # time.monotonic() when each line was read
        self.pos = 0

    def _read(self):
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return b""
        return self.f.read()

    def read_line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            data = self._read()
            if data:
                self.buf += data
                continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode(errors="replace").rstrip("\r")
        self.lines.append(text)
        self.times.append(time.monotonic())
        return text

    def expect(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self.pos < len(self.lines):
                line = self.lines[self.pos]
                self.pos += 1
                m = rx.search(line)
                if m:
                    return m
            if self.read_line(max(0.0, deadline - time.monotonic())) is None:
                return None

    def drain(self):
        """Read every complete line there is now."""
        while self.read_line(0) is not None:
            pass

    def problems(self):
        """Console lines that report a kernel problem (WARNING:, BUG:, Oops, ...)."""
        self.drain()
        return guestbuild.dmesg_problems(self.lines)

    def dump(self, last=200):
        self.drain()
        return "\n".join(self.lines[-last:])


def _main(argv):
    """lvharness.py start URI XML...: define and start each domain, then exit."""
    if len(argv) < 3 or argv[0] != "start":
        print("usage: lvharness.py start URI XML...", file=sys.stderr)
        return 2
    conn = open_embed(argv[1])
    for x in argv[2:]:
        conn.defineXML(x).create()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
