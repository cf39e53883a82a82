#!/usr/bin/env python3
"""Build a gzip'd newc cpio initramfs in pure Python: busybox (static) with its
applets linked, an /init script, and the given files.

usage: mkinitramfs.py -o OUT.cpio.gz --init INIT.sh [--file SRC:DEST[:MODE]]...
"""
import argparse
import gzip
import os
import stat

APPLETS = ("sh", "mount", "umount", "insmod", "rmmod", "lsmod", "cat", "echo", "dmesg", "sleep", "ls",
           "grep", "poweroff", "mkdir", "read", "true", "false", "test", "[")


class Cpio:
    """A newc archive being written. Parent directories of a file or link are added as
    needed, and a name added twice keeps its first entry."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1
        self.names = set()

    def _entry(self, name, mode, data=b"", nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.out += hdr.encode() + name_b
        self.out += b"\0" * ((4 - len(self.out) % 4) % 4)
        self.out += data
        self.out += b"\0" * ((4 - len(self.out) % 4) % 4)

    def _new(self, name):
        """True if name is not in the archive yet; adds its missing parent directories."""
        name = name.strip("/")
        if name in self.names:
            return False
        parent = os.path.dirname(name)
        if parent:
            self.dir(parent)
        self.names.add(name)
        return True

    def dir(self, name):
        if self._new(name):
            self._entry(name.strip("/"), stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name, data, mode=0o644):
        if self._new(name):
            self._entry(name.strip("/"), stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        if self._new(name):
            self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def base(init_text, busybox="/bin/busybox", applets=APPLETS):
    """A Cpio holding /bin, /dev, /proc, /sys, /tmp, busybox with the given applets
    linked, and /init (init_text, a script)."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        c.dir(d)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    for a in applets:
        if a != "read":  # a shell builtin
            c.symlink("bin/" + a, "busybox")
    c.file("init", init_text.encode(), 0o755)
    return c


def write(c, out):
    """Finish the archive and write it gzip'd (level 1: the kernel unpacks it in no time)."""
    with gzip.open(out, "wb", compresslevel=1) as f:
        f.write(c.finish())


def build(out, files, init, busybox="/bin/busybox"):
    """files: "SRC:DEST[:MODE]" strings (MODE octal, default 0644)."""
    with open(init) as f:
        c = base(f.read(), busybox)
    for spec in files:
        parts = spec.split(":")
        src, dest = parts[0], parts[1].lstrip("/")
        mode = int(parts[2], 8) if len(parts) > 2 else 0o644
        with open(src, "rb") as f:
            c.file(dest, f.read(), mode)
    write(c, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--busybox", default="/bin/busybox")
    a = ap.parse_args()
    build(a.output, a.file, a.init, a.busybox)


if __name__ == "__main__":
    main()
