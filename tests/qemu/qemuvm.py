"""A QEMU (TCG) guest on a serial console: Debian's stock kernel, an initramfs, and
ivshmem-doorbell devices connected to vcmad's sockets. The test reads the console
line by line, answers on it, and gets the whole transcript on failure."""
import glob
import os
import re
import select
import subprocess
import sys
import time


def newest_kernel():
    ks = glob.glob("/boot/vmlinuz-*-amd64")
    if not ks:
        raise FileNotFoundError("no /boot/vmlinuz-*-amd64 (apt-get install linux-image-amd64)")
    return sorted(ks, key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p)])[-1]


class QemuVM:
    def __init__(self, initrd, devices, memory="512M", kernel=None, append="", extra=()):
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", memory, "-smp", "1", "-nographic",
               "-no-reboot", "-nic", "none", "-serial", "stdio", "-monitor", "none",
               "-kernel", kernel or newest_kernel(), "-initrd", initrd,
               "-append", "console=ttyS0 panic=-1 quiet loglevel=3 " + append]
        for i, (sock, addr) in enumerate(devices):
            slot = int(addr.split(":")[2].split(".")[0], 16)
            cmd += ["-chardev", "socket,path=%s,id=ivs%d" % (sock, i),
                    "-device", "ivshmem-doorbell,chardev=ivs%d,vectors=2,addr=0x%x" % (i, slot)]
        cmd += list(extra)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.buf = b""
        self.lines = []   # every console line so far
        self.pos = 0      # lines before this were consumed by expect()

    def _fill(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                return False
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                return False
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                return False
            self.buf += data
        return True

    def read_line(self, timeout):
        deadline = time.time() + timeout
        if not self._fill(deadline):
            return None
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode(errors="replace").rstrip("\r")
        self.lines.append(text)
        return text

    def expect(self, pattern, timeout):
        """The first match of pattern in a console line after the last one matched."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            while self.pos < len(self.lines):
                line = self.lines[self.pos]
                self.pos += 1
                m = rx.search(line)
                if m:
                    return m
            if self.read_line(max(0.0, deadline - time.time())) is None:
                self.fail("no console line matching %r within %d s" % (pattern, timeout))

    def send_line(self, text):
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def dmesg(self, timeout):
        """The kernel log the guest printed between VCMA-DMESG-BEGIN and -END."""
        self.expect(r"^VCMA-DMESG-BEGIN", timeout)
        start = self.pos
        self.expect(r"^VCMA-DMESG-END", timeout)
        return self.lines[start:self.pos - 1]

    def wait_exit(self, timeout):
        deadline = time.time() + timeout
        while self.proc.poll() is None and time.time() < deadline:
            self.read_line(0.2)
        if self.proc.poll() is None:
            self.fail("QEMU did not power off within %d s" % timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def fail(self, msg):
        self.kill()
        print("---- guest console ----")
        print("\n".join(self.lines[-200:]))
        print("---- end of console ----")
        from vcmatest import fail  # the test's temporary directories are kept
        fail(msg)
