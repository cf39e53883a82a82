"""The wire layouts the Python tests speak by hand, described once.

proto/vcma_proto.h (the shared area: control page, request ring, event ring) and
proto/vcma_sim.h (the sim transport's attach socket and VMM channel) as named
little-endian struct layouts and constants, plus QEMU's ivshmem server handshake
(PROTOCOL.md 9.2, not in a header). test_proto_layout.py compares every layout,
offset, size and constant here with what the C compiler makes of the headers
(tests/integration/proto_layout.c), so a test packing these cannot drift from the
protocol unnoticed.

A Layout packs and unpacks by field name:
    RSP.unpack(m, slot).status              REQ.pack_into(m, slot, id=7, op=Op.ALLOC)
    CTRL.get(m, 0, "state")                 RING_HDR.put(m, req_off, "req_prod", 3)
"""
import collections
import enum
import struct

PAGE = 4096


class Layout:
    """A C struct as a sequence of (name, struct code[, C member]) fields, packed
    little-endian without padding: the headers' structs are naturally aligned, and the
    layout test proves it. `tail` names a run array that follows the fields (a flexible
    array member, or a fixed one of `tail_count` entries), not packed by this layout."""

    def __init__(self, cname, fields, defaults=None, tail=None, tail_count=0):
        self.cname = cname
        self.fields = []
        self.cmember = {}
        self.offsets = {}
        self._fmt = {}
        off = 0
        for f in fields:
            name, code = f[0], f[1]
            self.fields.append(name)
            self.cmember[name] = f[2] if len(f) > 2 else name
            self._fmt[name] = struct.Struct("<" + code)
            self.offsets[name] = off
            off += self._fmt[name].size
        self.struct = struct.Struct("<" + "".join(f[1] for f in fields))
        self.size = self.struct.size
        assert self.size == off
        self.defaults = dict(defaults or {})
        self.tail, self.tail_count = tail, tail_count
        self.tuple = collections.namedtuple(cname, self.fields)

    def sizeof(self, name):
        return self._fmt[name].size

    def code(self, name):
        """The struct module's code of one field ("I", "Q", "16s", ...)."""
        return self._fmt[name].format.lstrip("<")

    def _values(self, kw):
        unknown = set(kw) - set(self.fields)
        if unknown:
            raise TypeError("%s has no field(s) %s" % (self.cname, sorted(unknown)))
        vals = []
        for name in self.fields:
            v = kw.get(name, self.defaults.get(name))
            if v is None:
                v = b"" if self._fmt[name].format.endswith("s") else 0
            if isinstance(v, str):
                v = v.encode()
            vals.append(v)
        return vals

    def pack(self, **kw):
        """Bytes of the struct; fields not given are the layout's default or zero."""
        return self.struct.pack(*self._values(kw))

    def pack_into(self, buf, off, **kw):
        self.struct.pack_into(buf, off, *self._values(kw))

    def unpack(self, buf, off=0):
        return self.tuple(*self.struct.unpack_from(buf, off))

    def get(self, buf, base, name):
        """One field of the struct at base."""
        return self._fmt[name].unpack_from(buf, base + self.offsets[name])[0]

    def put(self, buf, base, name, value):
        self._fmt[name].pack_into(buf, base + self.offsets[name], value)

    def off(self, name):
        return self.offsets[name]


# ======================= proto/vcma_proto.h: the shared area =======================

MAGIC = 0x414d4356  # VCMA_PROTO_MAGIC, "VCMA"
MAJOR, MINOR = 1, 1
VERSION = MAJOR << 16 | MINOR  # HELLO's arg0
NAME_LEN = 16                  # pool names on the wire, NUL-padded
DEFAULT_REQ_SLOTS = 64
DEFAULT_EVT_SLOTS = 64


class State(enum.IntEnum):
    """enum vcma_ctrl_state (ctrl.state)."""
    INIT = 0
    READY = 1
    CONNECTED = 2
    CLOSING = 3
    DEAD = 4


class Feature(enum.IntFlag):
    """VCMA_F_* (ctrl.host_features, HELLO's arg1)."""
    EVENTS = 1 << 0
    NAMED_POOL = 1 << 1
    LAZY_FREE = 1 << 2


FEATURES_KNOWN = Feature.EVENTS | Feature.NAMED_POOL | Feature.LAZY_FREE


class Op(enum.IntEnum):
    """enum vcma_op (req.op)."""
    HELLO = 1
    ALLOC = 2
    FREE = 3
    QUERY = 4


class Status(enum.IntEnum):
    """enum vcma_status (rsp.status)."""
    OK = 0
    INVALID = 1
    USE_NORMAL = 2
    NO_POOL = 3
    ACCESS = 4
    QUOTA = 5
    NO_SPACE = 6
    TOO_BIG = 7
    BUSY = 8
    NO_REGION = 9
    NO_MEMORY = 10
    NOT_READY = 11
    VERSION = 12
    LIMIT = 13
    SHUTDOWN = 14
    INTERNAL = 15


class Evt(enum.IntEnum):
    """enum vcma_evt_type (evt.type)."""
    SHUTDOWN = 1
    REGION_GONE = 2
    LENT_RECLAIM = 3


# struct vcma_ctrl: the control page at offset 0 of the shared area
CTRL = Layout("vcma_ctrl", [
    ("magic", "I"), ("major", "H"), ("minor", "H"), ("hdr_size", "I"), ("state", "I"),
    ("host_features", "Q"), ("guest_features", "Q"), ("generation", "I"), ("guest_id", "I"),
    ("req_off", "I"), ("req_slots", "I"), ("evt_off", "I"), ("evt_slots", "I"),
    ("window_off", "Q"), ("window_size", "Q"),
    ("max_outstanding", "I"), ("max_regions", "I"), ("max_bytes", "Q"),
    ("reserved", "40s"),
], defaults={"magic": MAGIC, "major": MAJOR, "minor": MINOR, "hdr_size": 128})

# struct vcma_ring_hdr: at ctrl.req_off, followed by req_slots 64-byte slots
RING_HDR = Layout("vcma_ring_hdr", [
    ("req_prod", "I"), ("req_event", "I"), ("rsp_prod", "I"), ("rsp_event", "I"), ("req_poll", "I"), ("pad", "44s"),
])

# struct vcma_req and struct vcma_rsp share a slot (union vcma_slot)
REQ = Layout("vcma_req", [
    ("id", "Q"), ("op", "I"), ("flags", "I"), ("handle", "Q"), ("length", "Q"),
    ("arg0", "Q"), ("arg1", "Q"), ("name", "%ds" % NAME_LEN),
])
RSP = Layout("vcma_rsp", [
    ("id", "Q"), ("status", "i"), ("flags", "I"), ("handle", "Q"), ("gpa", "Q"), ("bus", "Q"),
    ("length", "Q"), ("val0", "Q", "val[0]"), ("val1", "Q", "val[1]"),
])
SLOT_SIZE = 64  # sizeof(union vcma_slot)

# struct vcma_evt_hdr: at ctrl.evt_off, followed by evt_slots struct vcma_evt
EVT_HDR = Layout("vcma_evt_hdr", [
    ("evt_prod", "I"), ("evt_event", "I"), ("evt_cons", "I"), ("pad", "52s"),
])
EVT = Layout("vcma_evt", [
    ("type", "I"), ("flags", "I"), ("handle", "Q"), ("arg0", "Q"), ("arg1", "Q"),
])


def slot_offset(req_off, index, slots):
    """Where request/response index `index` lives: ring header, then slot index & (slots - 1)."""
    return req_off + RING_HDR.size + (index & (slots - 1)) * SLOT_SIZE


def page_round(n):
    """vcma_page_round(): n rounded up to whole pages."""
    return (n + PAGE - 1) & ~(PAGE - 1)


def ring_bytes(slots):
    """VCMA_RING_BYTES(slots)."""
    return RING_HDR.size + slots * SLOT_SIZE


def evt_bytes(slots):
    """VCMA_EVT_BYTES(slots)."""
    return EVT_HDR.size + slots * EVT.size


# ======================= proto/vcma_sim.h: the sim transport =======================

SIM_MAGIC = 0x4d495356  # VCMA_SIM_MAGIC, "VSIM"
SIM_VERSION = 1
SIM_NAME_LEN = 32
SIM_P2M_RUNS = 128   # runs per struct vcma_sim_p2m
SIM_MSG_RUNS = 128   # runs per VMM channel message
SIM_FD_SHM, SIM_FD_KICK, SIM_FD_IRQ, SIM_FD_MACHINE = 0, 1, 2, 3  # the attach answer's fds, in order


class SimRole(enum.IntEnum):
    """enum vcma_sim_role."""
    GUEST = 1
    VMM = 2


class SimMsg(enum.IntEnum):
    """enum vcma_sim_msg_type and enum vcma_sim_vmm_msg: the type field of every sim message."""
    ATTACH = 1
    ATTACH_RSP = 2
    P2M = 3
    TOKEN = 4
    REATTACH = 5
    REGIONS = 6
    # host -> VMM
    PAUSE = 10
    REMAP = 11
    RESUME = 12
    REUSED = 13
    PINNED = 14
    # VMM -> host
    PAUSED = 20
    REMAPPED = 21
    REPORT = 22
    REUSE = 23
    PIN = 24


_SIM_HDR = {"magic": SIM_MAGIC, "version": SIM_VERSION}

SIM_ATTACH = Layout("vcma_sim_attach", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("role", "I"), ("flags", "I"), ("ram_bytes", "Q"),
    ("name", "%ds" % SIM_NAME_LEN), ("devclass", "%ds" % SIM_NAME_LEN),
], defaults=dict(_SIM_HDR, type=SimMsg.ATTACH))

SIM_ATTACH_RSP = Layout("vcma_sim_attach_rsp", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("status", "i"), ("guest_id", "I"),
    ("shm_size", "Q"), ("ram_frames", "Q"), ("machine_bytes", "Q"), ("window_gpa", "Q"),
    ("nruns", "I"), ("nfds", "I"),
], defaults=dict(_SIM_HDR, type=SimMsg.ATTACH_RSP))

SIM_F_REATTACH = 0x4  # attach flag, either role: send a TOKEN, keep the guest across a host restart

SIM_TOKEN = Layout("vcma_sim_token", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("guest_id", "I"), ("grace_ms", "I"), ("token", "16s"),
], defaults=dict(_SIM_HDR, type=SimMsg.TOKEN))

SIM_REATTACH = Layout("vcma_sim_reattach", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("role", "I"), ("flags", "I"), ("guest_id", "I"),
    ("nruns", "I"), ("ram_bytes", "Q"), ("token", "16s"), ("name", "%ds" % SIM_NAME_LEN),
], defaults=dict(_SIM_HDR, type=SimMsg.REATTACH))

SIM_RUN = Layout("vcma_sim_run", [("gfn", "Q"), ("mfn", "Q"), ("count", "Q")])

# struct vcma_sim_p2m: this header, then nruns (at most SIM_P2M_RUNS) runs
SIM_P2M = Layout("vcma_sim_p2m", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("nruns", "I"), ("pad", "I"),
], defaults=dict(_SIM_HDR, type=SimMsg.P2M), tail="run", tail_count=SIM_P2M_RUNS)

# struct vcma_sim_msg: the VMM channel; this header, then count (at most SIM_MSG_RUNS) runs
SIM_MSG = Layout("vcma_sim_msg", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("seq", "I"), ("status", "i"), ("count", "I"),
    ("pad", "I"),
], defaults=_SIM_HDR, tail="run", tail_count=0)


def sim_attach(name, role=SimRole.GUEST, ram_bytes=0, devclass=b"", flags=0):
    """The attach message a client sends first on vcmad.sock."""
    return SIM_ATTACH.pack(role=role, ram_bytes=ram_bytes, name=name, devclass=devclass, flags=flags)


def sim_runs(data, off, n):
    """n struct vcma_sim_run from data at off, as (gfn, mfn, count) tuples."""
    return [tuple(SIM_RUN.unpack(data, off + i * SIM_RUN.size)) for i in range(n)]


def sim_msg(type, seq=0, status=0, runs=()):
    """A VMM channel message: header and runs ((gfn, mfn, count) tuples)."""
    return SIM_MSG.pack(type=type, seq=seq, status=status, count=len(runs)) + \
        b"".join(SIM_RUN.pack(gfn=g, mfn=m, count=c) for g, m, c in runs)


def parse_sim_msg(data):
    """A VMM channel message: (header namedtuple, [(gfn, mfn, count), ...])."""
    h = SIM_MSG.unpack(data)
    return h, sim_runs(data, SIM_MSG.size, h.count)


def parse_p2m(data):
    """One struct vcma_sim_p2m message: [(gfn, mfn, count), ...]."""
    h = SIM_P2M.unpack(data)
    return sim_runs(data, SIM_P2M.size, h.nruns)


# ================= QEMU's ivshmem server protocol (PROTOCOL.md 9.2) =================
# Version 0, fixed by QEMU: every message is one little-endian int64, some with an fd in
# SCM_RIGHTS. vcmad is virtual peer 0 (the doorbell reaches it), the guest is peer 1.

IVSHMEM_MSG = struct.Struct("<q")
IVSHMEM_VERSION = 0
IVSHMEM_HOST_PEER = 0
IVSHMEM_GUEST_PEER = 1
IVSHMEM_SHM = -1            # the message that carries the memfd
IVSHMEM_VECTORS = 2         # vector 0: irq; vector 1: reserved
IVSHMEM_WINDOW_OFF = 2 << 20  # the DMA window's offset in BAR2

# The handshake in order: (value, carries an fd, what the fd is)
IVSHMEM_HANDSHAKE = (
    (IVSHMEM_VERSION, False, None),
    (IVSHMEM_GUEST_PEER, False, None),   # the guest's own peer id
    (IVSHMEM_SHM, True, "shm"),          # BAR2
    (IVSHMEM_HOST_PEER, True, "kick"),   # vcmad's doorbell eventfd (one vector)
    (IVSHMEM_GUEST_PEER, True, "irq"),   # the guest's vector 0
    (IVSHMEM_GUEST_PEER, True, "irq1"),  # the guest's vector 1
)

# ================= what test_proto_layout.py checks against the headers =================

LAYOUTS = (CTRL, RING_HDR, REQ, RSP, EVT_HDR, EVT, SIM_ATTACH, SIM_ATTACH_RSP, SIM_TOKEN, SIM_REATTACH, SIM_RUN, SIM_P2M,
           SIM_MSG)

# Python enum -> the C prefix of its members' names
ENUMS = {State: "VCMA_STATE_", Feature: "VCMA_F_", Op: "VCMA_OP_", Status: "VCMA_ST_", Evt: "VCMA_EVT_",
         SimRole: "VCMA_SIM_ROLE_", SimMsg: "VCMA_SIM_MSG_"}

# C macro -> its value here
CONSTANTS = {
    "VCMA_PROTO_MAGIC": MAGIC, "VCMA_PROTO_MAJOR": MAJOR, "VCMA_PROTO_MINOR": MINOR, "VCMA_PROTO_PAGE": PAGE,
    "VCMA_NAME_LEN": NAME_LEN, "VCMA_F_KNOWN": int(FEATURES_KNOWN),
    "VCMA_DEFAULT_REQ_SLOTS": DEFAULT_REQ_SLOTS, "VCMA_DEFAULT_EVT_SLOTS": DEFAULT_EVT_SLOTS,
    "VCMA_RING_BYTES(VCMA_DEFAULT_REQ_SLOTS)": ring_bytes(DEFAULT_REQ_SLOTS),
    "VCMA_EVT_BYTES(VCMA_DEFAULT_EVT_SLOTS)": evt_bytes(DEFAULT_EVT_SLOTS),
    "sizeof(union vcma_slot)": SLOT_SIZE,
    "VCMA_SIM_MAGIC": SIM_MAGIC, "VCMA_SIM_VERSION": SIM_VERSION, "VCMA_SIM_NAME_LEN": SIM_NAME_LEN,
    "VCMA_SIM_P2M_RUNS": SIM_P2M_RUNS, "VCMA_SIM_MSG_RUNS": SIM_MSG_RUNS,
    "VCMA_SIM_MSG_MAX": SIM_MSG.size + SIM_MSG_RUNS * SIM_RUN.size,
}
