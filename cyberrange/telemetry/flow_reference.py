"""The packet-at-a-time reference of the flow rules in ``flows.py``.

``FlowAssembler`` takes packets one by one and keeps a ``Flow`` per normalised 5-tuple, exactly
as the rules in ``flows.py``'s docstring say; ``flows.build_flows`` (what ``parse_pcap`` uses)
applies the same rules to all packets at once with numpy. It is slower by two orders of
magnitude and is kept as the specification the tests hold the vectorized code to
(``tests/telemetry/test_telemetry_corpus.py``): both must give the same flow records.
"""
from __future__ import annotations

import pyarrow as pa

from .columns import const_strings
from .flows import (  # the rules, shared with the vectorized code
    CLOSED,
    ESTABLISHED,
    ICMP4_REPLIES,
    ICMP6_REPLIES,
    INACTIVE,
    PARTIAL,
    RESET,
    SYN_ACK_SENT,
    SYN_SENT,
    community_id,
    conn_state,
    flow_id,
)
from .schema import FLOW_SCHEMA
from .wire import ACK, FIN, FLAG_LETTERS, RST, SYN

__all__ = ["Flow", "FlowAssembler", "zeek_conn_state"]


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

    def count(self, from_orig: bool, nbytes: int) -> None:
        """One more packet of ``nbytes`` from the originator or from the responder."""
        if from_orig:
            self.opk += 1
            self.oby += nbytes
        else:
            self.rpk += 1
            self.rby += nbytes


def zeek_conn_state(f: Flow) -> str:
    """Zeek's conn_state from the endpoint states (transcribed from base/protocols/conn)."""
    return conn_state(f.ost, f.rst, f.opay, f.rpay, f.oflags, f.o_ack)


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
        f.count(from_orig, nbytes)
        if from_orig:
            f.opay += paylen
            f.oflags |= flags
            if flags & ACK and not flags & RST:
                f.o_ack = True
            st, other = f.ost, f.rst
        else:
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
        f.count(sip == f.oip and sport == f.oport, nbytes)
        return f.fid, f.cid

    # ---------------------------------------------------------------- ICMP
    def add_icmp(self, ts, sip, dip, itype, code, sraw, draw, nbytes, proto_num=1):
        replies = ICMP4_REPLIES if proto_num == 1 else ICMP6_REPLIES
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
        f.count(from_orig, nbytes)
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
            return const_strings(v, n)

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
