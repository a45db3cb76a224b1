"""Bidirectional flow assembly from decoded packets (one sensor at a time).

A flow is keyed by its normalised 5-tuple, so both directions land in the same record.

* **Originator** (``source.*`` of the flow): the sender of the first packet seen, except that a
  TCP flow whose first packet is a SYN-ACK is given to the receiver of that SYN-ACK (the host that
  must have sent the SYN).
* **ICMP**: request/reply types pair into one flow whose originator is the requester and whose
  ports are the request's type/code, as Zeek does (echo 8/0, timestamp 13/14, information 15/16,
  address mask 17/18, router solicitation/advertisement 10/9; ICMPv6 echo 128/129, RS/RA 133/134,
  NS/NA 135/136). Other ICMP messages (unreachable, time exceeded, ...) are one-way flows keyed by
  sender, receiver, type and code.
* **End of a flow**: an idle gap longer than the timeout (TCP 60 s, UDP and ICMP 30 s by default),
  or, for TCP, a new SYN (without ACK) after the flow saw a FIN or a RST (port reuse).
* ``cyberrange.flow_id`` = first 16 hex digits of
  ``sha1("observer|proto|orig ip|orig port|resp ip|resp port|start-µs")``.
* ``cyberrange.tcp_state`` = Zeek's ``conn_state``, computed from the per-endpoint TCP states
  the same way Zeek's ``base/protocols/conn/main.zeek`` does (see ``zeek_conn_state``).
* ``cyberrange.tcp_flags`` = union of the flags the originator sent, letters in the fixed order
  S A F R P U.
* Byte counts are frame lengths on the wire (what the sensor saw), not IP payload.
"""
from __future__ import annotations

import hashlib
from base64 import b64encode

import communityid
import pyarrow as pa

from .schema import FLOW_SCHEMA

# ---- TCP flags
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ORDER = ((SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"))
#: FLAG_LETTERS[bits & 0x3f] -> "SA", "AF", ... in the fixed order S A F R P U
FLAG_LETTERS = ["".join(ch for bit, ch in _ORDER if bits & bit) for bits in range(64)]

# ---- per-endpoint TCP states (Zeek's TCP_INACTIVE ... TCP_RESET)
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# ---- ICMP request -> reply types
ICMP4_PAIRS = {8: 0, 13: 14, 15: 16, 17: 18, 10: 9}
ICMP6_PAIRS = {128: 129, 133: 134, 135: 136}
ICMP4_REPLIES = {v: k for k, v in ICMP4_PAIRS.items()}
ICMP6_REPLIES = {v: k for k, v in ICMP6_PAIRS.items()}

_CID = communityid.CommunityID()
_FlowTuple = communityid.FlowTuple
_sha1 = hashlib.sha1


def community_id(proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int) -> str | None:
    """Community ID v1 (seed 0, base64) of a flow; addresses packed (4 or 16 bytes).

    TCP and UDP take a direct implementation of the spec (the reference package spends ~100 µs per
    call validating its input, which dominated scan-heavy captures); it is checked against the
    ``communityid`` package in the tests. ICMP/ICMPv6 (type/code mapping, one-way messages) go
    through the package itself.
    """
    if proto == 6 or proto == 17:
        sp = sport.to_bytes(2, "big")
        dp = dport.to_bytes(2, "big")
        if saddr < daddr or (saddr == daddr and sp < dp):
            data = b"\0\0" + saddr + daddr + bytes((proto, 0)) + sp + dp
        else:
            data = b"\0\0" + daddr + saddr + bytes((proto, 0)) + dp + sp
        return "1:" + b64encode(_sha1(data).digest()).decode("ascii")
    try:
        return _CID.calc(_FlowTuple(proto, saddr, daddr, sport, dport))
    except Exception:  # noqa: BLE001 - best effort for odd ICMP types
        return None


class Flow:
    """Mutable state of one flow while packets are added."""

    __slots__ = ("fid", "cid", "transport", "oip", "oport", "rip", "rport", "start", "last",
                 "opk", "oby", "rpk", "rby", "oflags", "rflags", "ost", "rst", "opay", "rpay",
                 "closed", "o_ack", "proto_num")

    def __init__(self, fid, cid, transport, oip, oport, rip, rport, start, proto_num):
        self.fid = fid
        self.cid = cid
        self.transport = transport
        self.oip, self.oport, self.rip, self.rport = oip, oport, rip, rport
        self.start = self.last = start
        self.opk = self.oby = self.rpk = self.rby = 0
        self.oflags = self.rflags = 0
        self.ost = self.rst = INACTIVE
        self.opay = self.rpay = 0
        self.closed = False
        self.o_ack = False          # originator sent an ACK on a packet that was not a RST
        self.proto_num = proto_num


def flow_id(observer: str, proto: str, oip: str, oport, rip: str, rport, start_us: int) -> str:
    """The stable flow id: first 16 hex of sha1 over observer, 5-tuple and start (µs)."""
    text = f"{observer}|{proto}|{oip}|{oport}|{rip}|{rport}|{start_us}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def zeek_conn_state(f: Flow) -> str:
    """Zeek's conn_state from the endpoint states (transcribed from base/protocols/conn)."""
    os_, rs = f.ost, f.rst
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and f.opay == 0 and f.rpay == 0):
            return "REJ"
        if o_inactive:
            return "RSTRH"
        return "RSTR"
    if os_ == RESET:
        if r_inactive:
            # Zeek: history matches ^S[^HAFGIQ]*R -- the originator sent a SYN and then a RST,
            # with no ACK or FIN of its own in between
            if f.oflags & SYN and not f.o_ack and not f.oflags & FIN:
                return "RSTOS0"
            return "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


class FlowAssembler:
    """Collects packets of one sensor into flows; ``add_*`` return ``(flow_id, community_id)``."""

    def __init__(self, observer: str, run_id: str, *, tcp_timeout: float = 60.0,
                 udp_timeout: float = 30.0, icmp_timeout: float = 30.0):
        self.observer = observer
        self.run_id = run_id
        self.tcp_timeout = int(tcp_timeout * 1_000_000)
        self.udp_timeout = int(udp_timeout * 1_000_000)
        self.icmp_timeout = int(icmp_timeout * 1_000_000)
        self.active: dict[tuple, Flow] = {}
        self.flows: list[Flow] = []
        self._cids: dict[tuple, str] = {}

    # ---------------------------------------------------------------- creation helpers
    def _new(self, key, transport, proto_num, oip, oport, rip, rport, oraw, rraw, ts):
        cid = self._cids.get(key)
        if cid is None:
            cid = self._cids[key] = community_id(proto_num, oraw, rraw, oport, rport)
        fid = flow_id(self.observer, transport, oip, oport, rip, rport, ts)
        f = Flow(fid, cid, transport, oip, oport, rip, rport, ts, proto_num)
        self.active[key] = f
        self.flows.append(f)
        return f

    # ---------------------------------------------------------------- TCP
    def add_tcp(self, ts, sip, sport, dip, dport, sraw, draw, nbytes, flags, paylen):
        if (sip, sport) <= (dip, dport):
            key = (6, sip, sport, dip, dport)
        else:
            key = (6, dip, dport, sip, sport)
        f = self.active.get(key)
        if f is not None and (ts - f.last > self.tcp_timeout
                              or (f.closed and flags & (SYN | ACK) == SYN)):
            f = None
        if f is None:
            if flags & (SYN | ACK) == (SYN | ACK):     # first seen is a SYN-ACK: receiver originated
                f = self._new(key, "tcp", 6, dip, dport, sip, sport, draw, sraw, ts)
            else:
                f = self._new(key, "tcp", 6, sip, sport, dip, dport, sraw, draw, ts)
        f.last = ts
        from_orig = sip == f.oip and sport == f.oport
        if from_orig:
            f.opk += 1
            f.oby += nbytes
            f.opay += paylen
            f.oflags |= flags
            if flags & ACK and not flags & RST:
                f.o_ack = True
            st, other = f.ost, f.rst
        else:
            f.rpk += 1
            f.rby += nbytes
            f.rpay += paylen
            f.rflags |= flags
            st, other = f.rst, f.ost
        # endpoint state machine (a reduced version of Zeek's TCP analyzer)
        if flags & SYN:
            if flags & ACK:
                if st in (INACTIVE, PARTIAL):
                    st = SYN_ACK_SENT
            elif st in (INACTIVE, PARTIAL):
                st = SYN_SENT
        else:
            if flags & ACK and ((st == SYN_SENT and other == SYN_ACK_SENT)
                                or (st == SYN_ACK_SENT and other == SYN_SENT)):
                st = other = ESTABLISHED                 # three-way handshake completed
            elif st == INACTIVE:
                st = PARTIAL                             # midstream traffic, no SYN seen
        if flags & FIN and st != RESET:
            st = CLOSED
            f.closed = True
        if flags & RST:
            st = RESET
            f.closed = True
        if from_orig:
            f.ost, f.rst = st, other
        else:
            f.rst, f.ost = st, other
        return f.fid, f.cid

    # ---------------------------------------------------------------- UDP
    def add_udp(self, ts, sip, sport, dip, dport, sraw, draw, nbytes):
        if (sip, sport) <= (dip, dport):
            key = (17, sip, sport, dip, dport)
        else:
            key = (17, dip, dport, sip, sport)
        f = self.active.get(key)
        if f is None or ts - f.last > self.udp_timeout:
            f = self._new(key, "udp", 17, sip, sport, dip, dport, sraw, draw, ts)
        f.last = ts
        if sip == f.oip and sport == f.oport:
            f.opk += 1
            f.oby += nbytes
        else:
            f.rpk += 1
            f.rby += nbytes
        return f.fid, f.cid

    # ---------------------------------------------------------------- ICMP
    def add_icmp(self, ts, sip, dip, itype, code, sraw, draw, nbytes, proto_num=1):
        pairs, replies = (ICMP4_PAIRS, ICMP4_REPLIES) if proto_num == 1 else \
            (ICMP6_PAIRS, ICMP6_REPLIES)
        transport = "icmp" if proto_num == 1 else "ipv6-icmp"
        if itype in replies:                             # a reply: the receiver is the requester
            from_orig = False
            oip, rip, oraw, rraw = dip, sip, draw, sraw
            otype, ocode = replies[itype], 0
        else:
            from_orig = True
            oip, rip, oraw, rraw = sip, dip, sraw, draw
            otype, ocode = itype, code
        key = (proto_num, oip, rip, otype, ocode)
        f = self.active.get(key)
        if f is None or ts - f.last > self.icmp_timeout:
            f = self._new(key, transport, proto_num, oip, otype, rip, ocode, oraw, rraw, ts)
        f.last = ts
        if from_orig:
            f.opk += 1
            f.oby += nbytes
        else:
            f.rpk += 1
            f.rby += nbytes
        return f.fid, f.cid

    # ---------------------------------------------------------------- output
    def table(self) -> pa.Table:
        """All flows as an Arrow table with FLOW_SCHEMA columns, ordered by start."""
        flows = sorted(self.flows, key=lambda f: f.start)
        n = len(flows)
        start = [f.start for f in flows]
        end = [f.last for f in flows]
        ts_type = FLOW_SCHEMA.field("@timestamp").type

        def const(v):
            return pa.repeat(pa.scalar(v, pa.string()), n) if n else pa.array([], pa.string())

        tcp_state, tcp_flags = [], []
        for f in flows:
            if f.transport == "tcp":
                tcp_state.append(zeek_conn_state(f))
                tcp_flags.append(FLAG_LETTERS[f.oflags & 0x3F])
            else:
                tcp_state.append(None)
                tcp_flags.append(None)
        start_arr = pa.array(start, pa.int64()).cast(ts_type)
        cols = [
            start_arr,
            const("event"),
            const("network"),
            const("connection"),
            const("cyberrange.flow"),
            start_arr,
            pa.array(end, pa.int64()).cast(ts_type),
            pa.array([(e - s) * 1000 for s, e in zip(start, end)], pa.int64()),
            const(self.observer),
            pa.array([f.oip for f in flows], pa.string()),
            pa.array([f.oport for f in flows], pa.int32()),
            pa.array([f.opk for f in flows], pa.int64()),
            pa.array([f.oby for f in flows], pa.int64()),
            pa.array([f.rip for f in flows], pa.string()),
            pa.array([f.rport for f in flows], pa.int32()),
            pa.array([f.rpk for f in flows], pa.int64()),
            pa.array([f.rby for f in flows], pa.int64()),
            pa.array([f.transport for f in flows], pa.string()),
            pa.array([f.opk + f.rpk for f in flows], pa.int64()),
            pa.array([f.oby + f.rby for f in flows], pa.int64()),
            pa.array([f.cid for f in flows], pa.string()),
            pa.array([f.fid for f in flows], pa.string()),
            pa.array(tcp_state, pa.string()),
            pa.array(tcp_flags, pa.string()),
            const(self.run_id),
        ]
        return pa.Table.from_arrays(cols, schema=FLOW_SCHEMA)
