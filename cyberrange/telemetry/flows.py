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
import struct
from base64 import b64encode

import communityid
import numpy as np
import pyarrow as pa

from .schema import FLOW_RECORD_SCHEMA, FLOW_SCHEMA

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


# Zeek's ICMP type -> "port" mapping used by Community ID (request <-> reply; others one-way)
_CID_ICMP4 = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_CID_ICMP6 = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
              139: 140, 140: 139, 144: 145, 145: 144}


def community_id(proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int) -> str | None:
    """Community ID v1 (seed 0, base64) of a flow; addresses packed (4 or 16 bytes).

    A direct implementation of the spec (the reference package spends ~100 µs per call
    validating its input, which dominated scan-heavy captures); it is checked against the
    ``communityid`` package in the tests. For ICMP/ICMPv6 ``sport``/``dport`` are type/code,
    mapped the way Zeek and the spec do (request/reply pairs are bidirectional, other messages
    one-way); other protocols hash addresses and protocol only.
    """
    one_way = False
    if proto == 1 or proto == 58:
        mapper = _CID_ICMP4 if proto == 1 else _CID_ICMP6
        peer = mapper.get(sport)
        if peer is None:
            one_way = True
        else:
            dport = peer
    elif proto != 6 and proto != 17 and proto != 132:
        try:
            return _CID.calc(_FlowTuple(proto, saddr, daddr, sport, dport))
        except Exception:  # noqa: BLE001 - best effort
            return None
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        return None
    sp = sport.to_bytes(2, "big")
    dp = dport.to_bytes(2, "big")
    if one_way or saddr < daddr or (saddr == daddr and sp < dp):
        data = b"\0\0" + saddr + daddr + bytes((proto, 0)) + sp + dp
    else:
        data = b"\0\0" + daddr + saddr + bytes((proto, 0)) + dp + sp
    return "1:" + b64encode(_sha1(data).digest()).decode("ascii")


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
    return conn_state(f.ost, f.rst, f.opay, f.rpay, f.oflags, f.o_ack)


def conn_state(os_: int, rs: int, opay: int, rpay: int, oflags: int, o_ack: bool) -> str:
    """``zeek_conn_state`` from plain values: endpoint states, payload bytes per side, the
    originator's flags and whether it sent an ACK on a packet that was not a RST."""
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and opay == 0 and rpay == 0):
            return "REJ"
        if o_inactive:
            return "RSTRH"
        return "RSTR"
    if os_ == RESET:
        if r_inactive:
            # Zeek: history matches ^S[^HAFGIQ]*R -- the originator sent a SYN and then a RST,
            # with no ACK or FIN of its own in between
            if oflags & SYN and not o_ack and not oflags & FIN:
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


# ============================================================================================
# Vectorized flow building (what parse_pcap uses). ``FlowAssembler`` above is the packet-at-a-time
# reference implementation of the same rules; the tests check that both give the same flows.

_TRANSPORT_OF = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}
_REPLY_TO_REQUEST = np.full((2, 256), -1, np.int64)
for _rep, _req in ICMP4_REPLIES.items():
    _REPLY_TO_REQUEST[0, _rep] = _req
for _rep, _req in ICMP6_REPLIES.items():
    _REPLY_TO_REQUEST[1, _rep] = _req


def _tcp_endpoint_states(flow: list, orig: list, flags: list, nflows: int):
    """Run the endpoint state machine of ``FlowAssembler.add_tcp`` over (flow, from_orig, flags)."""
    ost = [INACTIVE] * nflows
    rstt = [INACTIVE] * nflows
    for f, o, fl in zip(flow, orig, flags):
        if o:
            st, other = ost[f], rstt[f]
        else:
            st, other = rstt[f], ost[f]
        if fl & SYN:
            if fl & ACK:
                if st == INACTIVE or st == PARTIAL:
                    st = SYN_ACK_SENT
            elif st == INACTIVE or st == PARTIAL:
                st = SYN_SENT
        elif fl & ACK and ((st == SYN_SENT and other == SYN_ACK_SENT)
                           or (st == SYN_ACK_SENT and other == SYN_SENT)):
            st = other = ESTABLISHED
        elif st == INACTIVE:
            st = PARTIAL
        if fl & FIN and st != RESET:
            st = CLOSED
        if fl & RST:
            st = RESET
        if o:
            ost[f], rstt[f] = st, other
        else:
            rstt[f], ost[f] = st, other
    return ost, rstt


def build_flows(d, ok_idx, observer: str, run_id: str, app, *, tcp_timeout: float = 60.0,
                udp_timeout: float = 30.0, icmp_timeout: float = 30.0):
    """Group decoded packets into bidirectional flows, all packets at once.

    ``d`` is a ``pcap.Decoded``; ``ok_idx`` the frame indices that became packet records.
    Returns ``(flow_table, pkt_flow, flow_ids, community_ids)`` where ``pkt_flow[k]`` is the row
    of the flow table that packet ``ok_idx[k]`` belongs to (-1: none).

    Same rules as ``FlowAssembler``: packets are grouped by their normalised 5-tuple (ICMP:
    requester, responder, request type and code), sorted stably so that each group keeps capture
    order; a group is cut where the gap to the group's previous packet exceeds the timeout, and
    (TCP) at a SYN without ACK that follows a FIN or RST of the current flow. The Zeek endpoint
    state machine runs only over the packets that can change a state (SYN/FIN/RST segments and
    the first plain segment of each side between two of them): a second plain segment from the
    same side is provably a no-op.
    """
    from .pcap import ip_strings  # circular at import time
    n_ok = len(ok_idx)
    N = len(d.ok)
    fidx = ok_idx[d.flowable[ok_idx]]
    m = len(fidx)
    if m == 0:
        return (FLOW_RECORD_SCHEMA.empty_table(), np.full(n_ok, -1, np.int64),
                pa.array([], pa.string()), pa.array([], pa.string()))
    ts_all = d.rec.ts
    proto = d.proto[fidx]
    sip, dip = d.sip[fidx], d.dip[fidx]
    sp, dp = d.sport[fidx], d.dport[fidx]
    is_icmp = (proto == 1) | (proto == 58)
    req_of = _REPLY_TO_REQUEST[(proto == 58).astype(np.int64), sp & 255]
    reply = is_icmp & (req_of >= 0) & (sp < 256)
    swap = ~is_icmp & ((sip > dip) | ((sip == dip) & (sp > dp)))
    a = np.where(is_icmp, np.where(reply, dip, sip), np.where(swap, dip, sip))
    b = np.where(is_icmp, np.where(reply, sip, dip), np.where(swap, sip, dip))
    ka = np.where(is_icmp, np.where(reply, req_of, sp), np.where(swap, dp, sp))
    kb = np.where(is_icmp, np.where(reply, 0, dp), np.where(swap, sp, dp))
    order = np.lexsort((kb, ka, b, a, proto))          # stable: capture order inside a group
    P, A, B, KA, KB = proto[order], a[order], b[order], ka[order], kb[order]
    TS = ts_all[fidx][order]
    F = d.flags[fidx][order]
    SIP, DIP, SP, DP = sip[order], dip[order], sp[order], dp[order]
    REPLY = reply[order]
    ICMP = is_icmp[order]
    W = d.rec.wirelen[fidx][order]
    PAY = np.maximum(d.pay_len[fidx][order], 0)
    pos = np.arange(m)

    newkey = np.ones(m, bool)
    newkey[1:] = ((P[1:] != P[:-1]) | (A[1:] != A[:-1]) | (B[1:] != B[:-1])
                  | (KA[1:] != KA[:-1]) | (KB[1:] != KB[:-1]))
    gap = np.zeros(m, np.int64)
    gap[1:] = TS[1:] - TS[:-1]
    tmo = np.where(P == 6, int(tcp_timeout * 1e6), np.where(P == 17, int(udp_timeout * 1e6),
                                                              int(icmp_timeout * 1e6)))
    split = newkey | (gap > tmo)
    # TCP port reuse: a SYN (no ACK) after a FIN or RST of the current flow starts a new flow
    has = F >= 0
    tcp = (P == 6) & has
    fr = tcp & ((F & (FIN | RST)) != 0)
    if fr.any():
        psyn = tcp & ((F & (SYN | ACK)) == SYN)
        lastfr = np.maximum.accumulate(np.where(fr, pos, -1))
        lastfr_before = np.empty(m, np.int64)
        lastfr_before[0] = -1
        lastfr_before[1:] = lastfr[:-1]
        base = np.maximum.accumulate(np.where(split, pos, -1))
        cand = np.flatnonzero(psyn & ~split & (lastfr_before >= base))
        last_syn = -1
        for k in cand.tolist():
            seg0 = base[k]
            if last_syn > seg0:
                seg0 = last_syn
            if lastfr_before[k] >= seg0:
                split[k] = True
                last_syn = k
    starts = np.flatnonzero(split)
    nf = len(starts)
    fo = np.cumsum(split) - 1                          # flow number of each sorted packet
    ends = np.empty(nf, np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = m - 1
    # originator: sender of the first packet; a SYN-ACK first gives it to the receiver
    Fs = F[starts]
    synack = (P[starts] == 6) & (Fs >= 0) & ((Fs & (SYN | ACK)) == (SYN | ACK))
    icf = ICMP[starts]
    oip = np.where(icf, A[starts], np.where(synack, DIP[starts], SIP[starts]))
    oport = np.where(icf, KA[starts], np.where(synack, DP[starts], SP[starts]))
    rip = np.where(icf, B[starts], np.where(synack, SIP[starts], DIP[starts]))
    rport = np.where(icf, KB[starts], np.where(synack, SP[starts], DP[starts]))
    from_orig = np.where(ICMP, ~REPLY, (SIP == oip[fo]) & (SP == oport[fo]))

    red = np.add.reduceat
    tot = ends - starts + 1
    opk = red(from_orig.astype(np.int64), starts)
    tby = red(W, starts)
    oby = red(np.where(from_orig, W, 0), starts)
    Fz = np.where(has, F, 0)
    oflags = np.bitwise_or.reduceat(np.where(from_orig, Fz, 0), starts)
    rflags = np.bitwise_or.reduceat(np.where(from_orig, 0, Fz), starts)
    opay = red(np.where(from_orig, PAY, 0), starts)
    rpay = red(np.where(from_orig, 0, PAY), starts)
    o_ack = red((from_orig & has & ((F & ACK) != 0) & ((F & RST) == 0)).astype(np.int64),
                starts) > 0
    start_ts = TS[starts]
    end_ts = TS[ends]
    # inter-arrival statistics (capture order, both directions)
    inner = ~split
    cnt = tot - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = red(np.where(inner, gap, 0), starts) / cnt
        dev = np.where(inner, gap - mean[fo], 0.0)
        std = np.sqrt(red(dev * dev, starts) / cnt)
    imin = np.minimum.reduceat(np.where(inner, gap, np.iinfo(np.int64).max), starts)
    imax = np.maximum.reduceat(np.where(inner, gap, np.iinfo(np.int64).min), starts)
    one = cnt == 0

    # Zeek conn_state for TCP flows
    tcp_flow = P[starts] == 6
    state_of: dict[int, str] = {}
    if tcp_flow.any():
        sfr = tcp & ((F & (SYN | FIN | RST)) != 0)
        plain = tcp & ~sfr
        seg = np.cumsum(sfr | split)
        key2 = seg * 2 + from_orig
        big = np.iinfo(np.int64).max
        firstpa = np.full(int(key2.max()) + 1, big, np.int64)
        np.minimum.at(firstpa, key2, np.where(plain & ((F & ACK) != 0), pos, big))
        keep = np.flatnonzero(sfr | (plain & (pos <= firstpa[key2])))
        ost, rstt = _tcp_endpoint_states(fo[keep].tolist(), from_orig[keep].tolist(),
                                         F[keep].tolist(), nf)
        opay_l, rpay_l, of_l, oa_l = opay.tolist(), rpay.tolist(), oflags.tolist(), o_ack.tolist()
        for k in np.flatnonzero(tcp_flow).tolist():
            state_of[k] = conn_state(ost[k], rstt[k], opay_l[k], rpay_l[k], of_l[k], oa_l[k])

    # output order: by start time, then capture order of the first packet
    first_frame = fidx[order[starts]]
    forder = np.lexsort((first_frame, start_ts))
    rank = np.empty(nf, np.int64)
    rank[forder] = np.arange(nf)
    frame_flow = np.full(N, -1, np.int64)
    frame_flow[fidx[order]] = rank[fo]
    pkt_flow = frame_flow[ok_idx]

    fP = P[starts][forder]
    f_oip, f_rip = oip[forder], rip[forder]
    f_oport, f_rport = oport[forder], rport[forder]
    f_start = start_ts[forder]
    oip_s = ip_strings(d, f_oip)
    rip_s = ip_strings(d, f_rip)
    transports = [_TRANSPORT_OF[p] for p in fP.tolist()]
    # flow ids and community ids (one sha1 each; community ids cached per 5-tuple)
    inv6 = {v: k for k, v in d.v6.items()}
    pack = struct.Struct(">I").pack

    def rawaddr(v):
        return pack(v) if v < (1 << 32) else inv6[v]

    fids, cids = [], []
    cache: dict[tuple, str | None] = {}
    obs = observer
    for tr, p, oi, op, ri, rp, st, ois, ris in zip(
            transports, fP.tolist(), f_oip.tolist(), f_oport.tolist(), f_rip.tolist(),
            f_rport.tolist(), f_start.tolist(), oip_s.to_pylist(), rip_s.to_pylist()):
        fids.append(_sha1(f"{obs}|{tr}|{ois}|{op}|{ris}|{rp}|{st}".encode()).hexdigest()[:16])
        key = (p, oi, ri, op, rp)
        c = cache.get(key)
        if c is None and key not in cache:
            c = cache[key] = community_id(p, rawaddr(oi), rawaddr(ri), op, rp)
        cids.append(c)
    fid_arr = pa.array(fids, pa.string())
    cid_arr = pa.array(cids, pa.string())

    ts_type = FLOW_RECORD_SCHEMA.field("@timestamp").type
    start_arr = pa.array(f_start, pa.int64()).cast(ts_type)
    f_opk, f_tot = opk[forder], tot[forder]
    f_oby, f_tby = oby[forder], tby[forder]
    tcp_rows = tcp_flow[forder]
    states = [state_of[k] for k in forder[tcp_rows].tolist()]
    state_col = np.full(nf, None, object)
    state_col[tcp_rows] = states
    oflag_codes = np.where(tcp_rows, oflags[forder] & 0x3F, -1)
    rflag_codes = np.where(tcp_rows, rflags[forder] & 0x3F, -1)

    def flagstr(codes):
        words = pa.array(FLAG_LETTERS + [None], pa.string())
        c = np.where(codes < 0, 64, codes).astype(np.int32)
        return pa.DictionaryArray.from_arrays(pa.array(c), words).cast(pa.string())

    def const(v):
        return pa.repeat(pa.scalar(v, pa.string()), nf)

    onef = one[forder]

    def fstat(x):
        return pa.array(np.where(onef, 0.0, x[forder]).astype(np.float64), pa.float64(),
                        mask=onef if onef.any() else None)

    vlan = d.vlan[first_frame[forder]]
    cols = {
        "@timestamp": start_arr,
        "event.kind": const("event"),
        "event.category": const("network"),
        "event.type": const("connection"),
        "event.dataset": const("cyberrange.flow"),
        "event.start": start_arr,
        "event.end": pa.array(end_ts[forder], pa.int64()).cast(ts_type),
        "event.duration": pa.array((end_ts[forder] - f_start) * 1000, pa.int64()),
        "observer.name": const(observer),
        "source.ip": oip_s,
        "source.port": pa.array(f_oport, pa.int32()),
        "source.packets": pa.array(f_opk, pa.int64()),
        "source.bytes": pa.array(f_oby, pa.int64()),
        "destination.ip": rip_s,
        "destination.port": pa.array(f_rport, pa.int32()),
        "destination.packets": pa.array(f_tot - f_opk, pa.int64()),
        "destination.bytes": pa.array(f_tby - f_oby, pa.int64()),
        "network.transport": pa.array(transports, pa.string()),
        "network.packets": pa.array(f_tot, pa.int64()),
        "network.bytes": pa.array(f_tby, pa.int64()),
        "network.community_id": cid_arr,
        "cyberrange.flow_id": fid_arr,
        "cyberrange.tcp_state": pa.array(state_col, pa.string()),
        "cyberrange.tcp_flags": flagstr(oflag_codes),
        "cyberrange.run_id": const(run_id),
        "network.vlan.id": pa.array(vlan, pa.int32(), mask=vlan < 0),
        "cyberrange.iat.mean_us": fstat(mean),
        "cyberrange.iat.std_us": fstat(std),
        "cyberrange.iat.min_us": fstat(imin.astype(np.float64)),
        "cyberrange.iat.max_us": fstat(imax.astype(np.float64)),
        "cyberrange.tcp_flags_responder": flagstr(rflag_codes),
    }
    cols.update(app.flow_columns(frame_flow, nf))
    arrays = [cols[f.name] if f.name in cols else pa.nulls(nf, f.type)
              for f in FLOW_RECORD_SCHEMA]
    return (pa.Table.from_arrays(arrays, schema=FLOW_RECORD_SCHEMA), pkt_flow, fid_arr, cid_arr)
