#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora in tests/fuzz/corpus/ (checked in; rerun after changing an
input format). Usage: tests/fuzz/gen_corpus.py [OUTDIR]"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')

# ---- struct vcma_req (proto/vcma_proto.h) ----
HELLO, ALLOC, FREE, QUERY = 1, 2, 3, 4


def req(op, id=1, flags=0, handle=0, length=0, arg0=0, arg1=0, name=b''):
    return struct.pack('<QIIQQQQ16s', id, op, flags, handle, length, arg0, arg1, name)


GOOD = [
    req(HELLO, id=1, arg0=1 << 16, arg1=3),
    req(ALLOC, id=2, length=1 << 20, arg0=0, name=b'main'),
    req(ALLOC, id=3, length=4096, arg0=18),
    req(FREE, id=4, handle=7),
    req(QUERY, id=5, handle=7),
    req(QUERY, id=6, name=b'123456789012345'),
]
BAD = [
    req(9),                                  # unknown op
    req(HELLO, flags=1),                     # flags
    req(ALLOC, length=4096, arg0=19),        # order above 18
    req(ALLOC, length=4096, name=b'a b'),    # bad character
    req(QUERY, name=b'x\0y'),                # garbage after NUL
    req(FREE, handle=1, name=b'main'),       # unused field
    req(HELLO, arg0=1 << 32 | 1 << 16),      # HELLO arg0 bits 32..63
]

# ---- fuzz_ring.c's guest program (see the comment at its top) ----
(OP_WRITE, OP_SLOT, OP_REQ, OP_PROD_ADD, OP_PROD_SET, OP_RSP_EVT, OP_PROCESS, OP_EVENT,
 OP_CONS_SET, OP_CONS_ADD, OP_EVT_EVT, OP_PENDING, OP_STATE) = range(13)


def op_req(kind, id, x):
    return bytes([OP_REQ, kind]) + struct.pack('<Q', id) + bytes([x])


def op_process(budget, handler_bytes):
    return bytes([OP_PROCESS, budget - 1]) + bytes(handler_bytes)


def op_event(type, handle=0):
    return bytes([OP_EVENT]) + struct.pack('<IIQQQ', type, 0, handle, 0, 0)


def op_slot(k, data):
    return bytes([OP_SLOT, k]) + data


def u32(op, v):
    return bytes([op]) + struct.pack('<I', v)


RING = {
    # 64 slots: HELLO, ALLOC from "main", QUERY, FREE, answered in one turn; a notice
    'hello_alloc': bytes([3]) + u32(OP_RSP_EVT, 1) + u32(OP_EVT_EVT, 1) + op_req(0, 1, 3) + op_req(1, 2, 1)
    + op_req(3, 3, 1) + op_req(2, 4, 1) + op_process(64, [0, 0, 0, 0]) + op_event(1) + bytes([OP_PENDING]),
    # 8 slots: more requests than the budget, then the rest
    'budget': bytes([0]) + b''.join(op_req(1, i, i) for i in range(6)) + op_process(4, [0] * 4)
    + op_process(8, [0] * 2) + op_process(8, []),
    # a request slot written raw and published: valid, then one with an unknown op
    'raw_slots': bytes([1]) + op_slot(0, GOOD[1]) + op_slot(1, BAD[0]) + bytes([OP_PROD_ADD, 2])
    + op_process(16, [0]) + op_req(0, 9, 0) + op_process(16, [0]),
    # req_prod far ahead of the responses: overflow
    'overflow': bytes([2]) + u32(OP_PROD_SET, 1000) + op_process(32, []),
    # a racing guest: while the host answers request 0 it rewrites slot 1 (already
    # published); while it answers request 1 the host posts an event; then one more
    'race': bytes([0]) + op_req(0, 1, 0) + op_req(2, 2, 0)
    + op_process(8, [0x10, OP_SLOT, 1] + list(GOOD[3]) + [0x20] + list(struct.pack('<IIQQQ', 2, 0, 5, 0, 0)))
    + op_req(1, 3, 1) + op_process(8, [0x10, OP_PROD_ADD, 0]),
    # event ring: fill it, drop one, consume, post again
    'events': bytes([0]) + b''.join(op_event(2, i) for i in range(65)) + bytes([OP_CONS_ADD, 10])
    + op_event(3) + u32(OP_CONS_SET, 0xfffffff0) + op_event(3),
    # the guest scribbles on the control page and the ring header, then asks
    'scribble': bytes([3]) + bytes([OP_WRITE, 40, 0, 16]) + b'\xff' * 16
    + bytes([OP_WRITE, 0x04, 0x10, 8]) + b'\xee' * 8
    + bytes([OP_WRITE, 0x10, 0x10, 48]) + b'\xdd' * 48 + op_req(3, 1, 0) + op_process(1, [0])
    + bytes([OP_STATE, 3]) + op_event(1),
}

CONFIG = {
    'example.conf': open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../docs/examples/vcmad.conf'),
                         'rb').read(),
    'full.conf': b'# comment\n[daemon]\nruntime_dir = /tmp/x\nbackend = sim\nmax_guests = 8\n'
    b'[limits]\nmax_regions_per_guest = 10\nmax_bytes_per_guest = 64M\nrequest_rate = 500\n'
    b'request_burst = 50\nmax_ram_per_guest = 128M\nring_slots = 32\n'
    b'[machine]\nmemory = 1G  # trailing comment\n'
    b'[pool main]\nsize = 25%\nquota = 8M\nlendable = yes\ncost_lent_free = 2\ncost_lent_used = 9\n'
    b'[ pool   cam ]\nsize = max(16M,1.5%)\nmode = exclusive\nbind = class:camera\nbase = 0x40000000\n'
    b'[pool dsp]\nsize = 64MiB\nmode = exclusive\nbind = guest:vm1\nalign_order = 4\nmin_request = 1\n'
    b'quota = 12.5%\n',
    'xen.conf': b'[daemon]\nbackend = xen\n[pool cam]\nsize = 64M\nmax_region = 8M\naddress_bits = 32\n'
    b'bind = class:camera\n[guest cam]\nbackend = xen\nclass = camera\nattach = manual\n'
    b'[guest big]\nbackend = xen\nlender = yes\n',
    'override.conf': b'[pool main]\nsize = 10%\n\0main=min(1G,50%)',
    'errors.conf': b'[limits]\nring_slots = 48\n',
    'nopool.conf': b'[daemon]\nmax_guests = 4096\n[machine]\nmemory = 16M\n',
    # the longest line accepted (1023 bytes) and the most pools accepted (64)
    'longline.conf': b'[daemon]\n#' + b'x' * 1022 + b'\nmax_guests = 2\n',
    'maxpools.conf': b''.join(b'[pool p%d]\nsize=%dM\n' % (i, i + 1) for i in range(64)),
}


# ---- fuzz_vmm.c: byte 0 (misalignment, ram_frames width), ram_frames, a VMM message ----
PAUSED, REMAPPED, REPORT, REUSE, PIN, DIRTY, TRACKING, DROPPED = 20, 21, 22, 23, 24, 25, 26, 27


def vmm_msg(type, seq=0, status=0, runs=(), magic=0x4d495356, version=1, count=None, pad=0):
    return (struct.pack('<IHHIiII', magic, version, type, seq, status, len(runs) if count is None else count, pad)
            + b''.join(struct.pack('<QQQ', *r) for r in runs))


def vmm_in(msg, frames=1024, misalign=0):
    if frames < 1 << 16:
        return bytes([misalign]) + struct.pack('<H', frames) + msg
    return bytes([0x80 | misalign]) + struct.pack('<Q', frames) + msg


VMM = {
    'report': vmm_in(vmm_msg(REPORT, runs=[(0, 0, 16), (100, 0, 924)])),
    'reuse': vmm_in(vmm_msg(REUSE, seq=3, runs=[(5, 0, 1)]), misalign=3),
    'pin': vmm_in(vmm_msg(PIN, seq=4, runs=[(0, 0, 256), (512, 0, 8), (256, 0, 1)])),
    'paused': vmm_in(vmm_msg(PAUSED, seq=7)),
    'remapped': vmm_in(vmm_msg(REMAPPED, seq=7, status=5, runs=[(3, 0x12345, 2)]), frames=1 << 40, misalign=5),
    'report_full': vmm_in(vmm_msg(REPORT, runs=[(i * 8, 0, 8) for i in range(128)])),
    'bad_magic': vmm_in(vmm_msg(REPORT, magic=0x4d495357)),
    'bad_pad': vmm_in(vmm_msg(REPORT, pad=1)),
    'bad_count': vmm_in(vmm_msg(REPORT, runs=[(0, 0, 1)], count=2)),
    'bad_wrap': vmm_in(vmm_msg(PIN, runs=[(1, 0, (1 << 64) - 1)]), frames=1 << 63),
    'bad_tail': vmm_in(vmm_msg(REUSE, runs=[(1023, 0, 2)])),
    'bad_mfn': vmm_in(vmm_msg(REPORT, runs=[(0, 1, 1)])),
    'bad_type': vmm_in(vmm_msg(11, runs=[])),
    'bad_overlap': vmm_in(vmm_msg(PIN, runs=[(0, 0, 16), (32, 0, 1), (15, 0, 2)])),
    'short': vmm_in(b'VSIM\x01\x00\x16\x00'),
    'dirty': vmm_in(vmm_msg(DIRTY, seq=9, runs=[(0, 0, 3), (10, 0, 1)])),
    'dirty_full': vmm_in(vmm_msg(DIRTY, seq=9, runs=[(i * 4, 0, 1) for i in range(128)])),
    'dirty_err': vmm_in(vmm_msg(DIRTY, seq=9, status=5)),
    'bad_dirty_err_full': vmm_in(vmm_msg(DIRTY, seq=9, status=5, runs=[(i * 4, 0, 1) for i in range(128)])),
    'bad_dirty_overlap': vmm_in(vmm_msg(DIRTY, seq=9, runs=[(0, 0, 3), (2, 0, 1)])),
    'tracking': vmm_in(vmm_msg(TRACKING, seq=8, status=95)),
    'dropped': vmm_in(vmm_msg(DROPPED, seq=8)),
    'bad_dropped_runs': vmm_in(vmm_msg(DROPPED, seq=8, runs=[(0, 0, 1)])),
    'bad_tracking_status': vmm_in(vmm_msg(TRACKING, seq=8, status=-1)),
}


# ---- fuzz_reattach.c: byte 0 picks the check, then its parameters and the message ----
def reattach_msg(role=2, flags=0x7, guest_id=3, nruns=2, ram=1 << 22, token=b'\x11' * 16, name=b'vm1',
                 version=1, type=5):
    return (struct.pack('<IHHIIIIQ', 0x4d495356, version, type, role, flags, guest_id, nruns, ram) + token +
            name.ljust(32, b'\0'))


def p2m_msg(runs, nruns=None, type=3, pad=0):
    body = b''.join(struct.pack('<QQQ', *r) for r in runs)
    return struct.pack('<IHHII', 0x4d495356, 1, type, len(runs) if nruns is None else nruns, pad) + \
        body.ljust(24 * 128, b'\0')


def reattach_in(msg, max_ram=1 << 32, misalign=0):
    return bytes([0, misalign]) + struct.pack('<Q', max_ram) + msg


def p2m_msg_in(msg, room=128, misalign=0):
    return bytes([1, misalign]) + struct.pack('<I', room) + msg


def p2m_in(runs, ram=1024, machine=1 << 20):
    return bytes([2]) + struct.pack('<QQ', ram, machine) + b''.join(struct.pack('<QQQ', *r) for r in runs)


REATTACH = {
    'vmm': reattach_in(reattach_msg()),
    'guest': reattach_in(reattach_msg(role=1, flags=4, nruns=0, ram=0), misalign=3),
    'bad_version': reattach_in(reattach_msg(version=2)),
    'bad_flags': reattach_in(reattach_msg(flags=0x80)),
    'bad_name': reattach_in(reattach_msg(name=b'a b')),
    'bad_ram': reattach_in(reattach_msg(ram=(1 << 22) + 1)),
    'too_many_runs': reattach_in(reattach_msg(nruns=1025)),
    'p2m_msg': p2m_msg_in(p2m_msg([(0, 5, 512), (512, 9000, 512)])),
    'p2m_msg_room': p2m_msg_in(p2m_msg([(0, 5, 512), (512, 9000, 512)]), room=1),
    'p2m_msg_tail': p2m_msg_in(p2m_msg([(0, 5, 1)], nruns=0)),
    'p2m_msg_type': p2m_msg_in(p2m_msg([(0, 5, 1)], type=6), misalign=7),
    'p2m': p2m_in([(0, 5, 512), (512, 9000, 512)]),
    'p2m_gap': p2m_in([(0, 5, 512), (513, 9000, 511)]),
    'p2m_wrap': p2m_in([(0, (1 << 64) - 8, 16), (16, 0, 1008)]),
    'p2m_short': p2m_in([(0, 5, 1000)]),
}


def write(sub, name, data):
    d = os.path.join(OUT, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


for i, r in enumerate(GOOD):
    write('reqcheck', 'good%d' % i, r)
for i, r in enumerate(BAD):
    write('reqcheck', 'bad%d' % i, r)
write('reqcheck', 'mixed', b''.join(GOOD + BAD))
for name, data in RING.items():
    write('ring', name, data)
for name, data in CONFIG.items():
    write('config', name, data)
for name, data in VMM.items():
    write('vmm', name, data)
for name, data in REATTACH.items():
    write('reattach', name, data)
