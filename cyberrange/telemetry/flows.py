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

``build_flows`` applies these rules to all packets of a capture at once (numpy), in named steps:
``_sorted_packets`` (normalised keys, stable sort), ``_flow_starts`` (where a flow begins),
``_flow_sums`` (per-flow counts, flags, inter-arrival times), ``_tcp_states`` (Zeek's
conn_state) and ``_flow_table`` (ids and the Arrow table). ``flow_reference.FlowAssembler`` is
the packet-at-a-time statement of the same rules, which the tests hold this code to.
"""
from __future__ import annotations

import hashlib
import struct
from base64 import b64encode
from dataclasses import dataclass

import communityid
import numpy as np
import pyarrow as pa

from .columns import const_strings, ip_strings, table_strings
from .schema import FLOW_RECORD_SCHEMA
from .wire import ACK, FIN, FLAG_LETTERS, RST, SYN

__all__ = ["FLAG_LETTERS", "build_flows", "community_id", "conn_state", "flow_id"]

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


def flow_id(observer: str, proto: str, oip: str, oport, rip: str, rport, start_us: int) -> str:
    """The stable flow id: first 16 hex of sha1 over observer, 5-tuple and start (µs)."""
    text = f"{observer}|{proto}|{oip}|{oport}|{rip}|{rport}|{start_us}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


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



# ============================================================================================
# Vectorized flow building (what parse_pcap uses)

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



@dataclass
class _Sorted:
    """The flowable packets sorted by flow key, stably (capture order inside a key); each array
    has one entry per packet in that order. ``fidx[order]`` are their frame indices."""
    fidx: np.ndarray
    order: np.ndarray
    P: np.ndarray          # IP protocol
    A: np.ndarray          # the key: address a, address b, port or type a, port or code b
    B: np.ndarray
    KA: np.ndarray
    KB: np.ndarray
    TS: np.ndarray         # timestamp (µs)
    F: np.ndarray          # TCP flags (-1: none)
    SIP: np.ndarray
    DIP: np.ndarray
    SP: np.ndarray
    DP: np.ndarray
    REPLY: np.ndarray      # an ICMP reply (its receiver is the requester)
    ICMP: np.ndarray
    W: np.ndarray          # bytes on the wire
    PAY: np.ndarray        # payload bytes (0 where unknown)

    @property
    def has_flags(self) -> np.ndarray:
        return self.F >= 0


@dataclass
class _Flows:
    """Per-flow values in sort order (``starts[k]``: the sorted position of flow k's first
    packet), plus ``fo`` (the flow of each sorted packet) and ``from_orig`` (per packet)."""
    starts: np.ndarray
    ends: np.ndarray
    fo: np.ndarray
    from_orig: np.ndarray
    oip: np.ndarray
    oport: np.ndarray
    rip: np.ndarray
    rport: np.ndarray
    tot: np.ndarray
    opk: np.ndarray
    tby: np.ndarray
    oby: np.ndarray
    oflags: np.ndarray
    rflags: np.ndarray
    opay: np.ndarray
    rpay: np.ndarray
    o_ack: np.ndarray
    start_ts: np.ndarray
    end_ts: np.ndarray
    iat: dict                 # mean, std, min, max of the inter-arrival gaps; one: single packet
    tcp_flow: np.ndarray | None = None
    state_of: dict | None = None


def build_flows(d, ok_idx, observer: str, run_id: str, app, *, tcp_timeout: float = 60.0,
                udp_timeout: float = 30.0, icmp_timeout: float = 30.0):
    """Group decoded packets into bidirectional flows, all packets at once.

    ``d`` is a ``decode.Decoded``; ``ok_idx`` the frame indices that became packet records.
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
    n_ok = len(ok_idx)
    fidx = ok_idx[d.flowable[ok_idx]]
    if len(fidx) == 0:
        return (FLOW_RECORD_SCHEMA.empty_table(), np.full(n_ok, -1, np.int64),
                pa.array([], pa.string()), pa.array([], pa.string()))
    s = _sorted_packets(d, fidx)
    split, gap = _flow_starts(s, tcp_timeout, udp_timeout, icmp_timeout)
    f = _flow_sums(s, split, gap)
    _tcp_states(s, split, f)
    # output order: by start time, then capture order of the first packet
    nf = len(f.starts)
    first_frame = fidx[s.order[f.starts]]
    forder = np.lexsort((first_frame, f.start_ts))
    rank = np.empty(nf, np.int64)
    rank[forder] = np.arange(nf)
    frame_flow = np.full(len(d.ok), -1, np.int64)
    frame_flow[fidx[s.order]] = rank[f.fo]
    pkt_flow = frame_flow[ok_idx]
    table, fid_arr, cid_arr = _flow_table(d, s, f, forder, first_frame, frame_flow, observer,
                                          run_id, app)
    return table, pkt_flow, fid_arr, cid_arr


def _sorted_packets(d, fidx: np.ndarray) -> _Sorted:
    """Normalise each packet's key (both directions alike; an ICMP reply keyed as its request)
    and sort by it, stably."""
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
    return _Sorted(fidx=fidx, order=order, P=proto[order], A=a[order], B=b[order],
                   KA=ka[order], KB=kb[order], TS=d.rec.ts[fidx][order],
                   F=d.flags[fidx][order], SIP=sip[order], DIP=dip[order], SP=sp[order],
                   DP=dp[order], REPLY=reply[order], ICMP=is_icmp[order],
                   W=d.rec.wirelen[fidx][order], PAY=np.maximum(d.pay_len[fidx][order], 0))


def _flow_starts(s: _Sorted, tcp_timeout: float, udp_timeout: float, icmp_timeout: float):
    """``(split, gap)``: whether each sorted packet starts a flow (a new key, an idle gap over
    the timeout, TCP port reuse), and its gap to the previous packet (µs)."""
    P, TS, F = s.P, s.TS, s.F
    m = len(P)
    newkey = np.ones(m, bool)
    newkey[1:] = ((P[1:] != P[:-1]) | (s.A[1:] != s.A[:-1]) | (s.B[1:] != s.B[:-1])
                  | (s.KA[1:] != s.KA[:-1]) | (s.KB[1:] != s.KB[:-1]))
    gap = np.zeros(m, np.int64)
    gap[1:] = TS[1:] - TS[:-1]
    tmo = np.where(P == 6, int(tcp_timeout * 1e6), np.where(P == 17, int(udp_timeout * 1e6),
                                                              int(icmp_timeout * 1e6)))
    split = newkey | (gap > tmo)
    # TCP port reuse: a SYN (no ACK) after a FIN or RST of the current flow starts a new flow
    tcp = (P == 6) & s.has_flags
    fr = tcp & ((F & (FIN | RST)) != 0)
    if fr.any():
        pos = np.arange(m)
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
    return split, gap


def _flow_sums(s: _Sorted, split: np.ndarray, gap: np.ndarray) -> _Flows:
    """Originator, packet, byte, flag and payload sums, and inter-arrival statistics per flow."""
    P, F, SIP, DIP, SP, DP = s.P, s.F, s.SIP, s.DIP, s.SP, s.DP
    m = len(P)
    starts = np.flatnonzero(split)
    nf = len(starts)
    fo = np.cumsum(split) - 1                          # flow number of each sorted packet
    ends = np.empty(nf, np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = m - 1
    # originator: sender of the first packet; a SYN-ACK first gives it to the receiver
    Fs = F[starts]
    synack = (P[starts] == 6) & (Fs >= 0) & ((Fs & (SYN | ACK)) == (SYN | ACK))
    icf = s.ICMP[starts]
    oip = np.where(icf, s.A[starts], np.where(synack, DIP[starts], SIP[starts]))
    oport = np.where(icf, s.KA[starts], np.where(synack, DP[starts], SP[starts]))
    rip = np.where(icf, s.B[starts], np.where(synack, SIP[starts], DIP[starts]))
    rport = np.where(icf, s.KB[starts], np.where(synack, SP[starts], DP[starts]))
    from_orig = np.where(s.ICMP, ~s.REPLY, (SIP == oip[fo]) & (SP == oport[fo]))

    red = np.add.reduceat
    W, PAY, has = s.W, s.PAY, s.has_flags
    Fz = np.where(has, F, 0)
    tot = ends - starts + 1
    # inter-arrival statistics (capture order, both directions)
    inner = ~split
    cnt = tot - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = red(np.where(inner, gap, 0), starts) / cnt
        dev = np.where(inner, gap - mean[fo], 0.0)
        std = np.sqrt(red(dev * dev, starts) / cnt)
    iat = {"mean": mean, "std": std,
           "min": np.minimum.reduceat(np.where(inner, gap, np.iinfo(np.int64).max), starts),
           "max": np.maximum.reduceat(np.where(inner, gap, np.iinfo(np.int64).min), starts),
           "one": cnt == 0}
    return _Flows(
        starts=starts, ends=ends, fo=fo, from_orig=from_orig,
        oip=oip, oport=oport, rip=rip, rport=rport, tot=tot,
        opk=red(from_orig.astype(np.int64), starts),
        tby=red(W, starts),
        oby=red(np.where(from_orig, W, 0), starts),
        oflags=np.bitwise_or.reduceat(np.where(from_orig, Fz, 0), starts),
        rflags=np.bitwise_or.reduceat(np.where(from_orig, 0, Fz), starts),
        opay=red(np.where(from_orig, PAY, 0), starts),
        rpay=red(np.where(from_orig, 0, PAY), starts),
        o_ack=red((from_orig & has & ((F & ACK) != 0) & ((F & RST) == 0)).astype(np.int64),
                  starts) > 0,
        start_ts=s.TS[starts], end_ts=s.TS[ends], iat=iat)


def _tcp_states(s: _Sorted, split: np.ndarray, f: _Flows) -> None:
    """Zeek's conn_state of every TCP flow into ``f.state_of`` (flow -> state), ``f.tcp_flow``
    which flows are TCP. Only the packets that can change an endpoint state are replayed."""
    P, F = s.P, s.F
    f.tcp_flow = P[f.starts] == 6
    f.state_of = {}
    if not f.tcp_flow.any():
        return
    pos = np.arange(len(P))
    tcp = (P == 6) & s.has_flags
    sfr = tcp & ((F & (SYN | FIN | RST)) != 0)
    plain = tcp & ~sfr
    seg = np.cumsum(sfr | split)
    key2 = seg * 2 + f.from_orig
    big = np.iinfo(np.int64).max
    firstpa = np.full(int(key2.max()) + 1, big, np.int64)
    np.minimum.at(firstpa, key2, np.where(plain & ((F & ACK) != 0), pos, big))
    keep = np.flatnonzero(sfr | (plain & (pos <= firstpa[key2])))
    ost, rstt = _tcp_endpoint_states(f.fo[keep].tolist(), f.from_orig[keep].tolist(),
                                     F[keep].tolist(), len(f.starts))
    opay_l, rpay_l = f.opay.tolist(), f.rpay.tolist()
    of_l, oa_l = f.oflags.tolist(), f.o_ack.tolist()
    for k in np.flatnonzero(f.tcp_flow).tolist():
        f.state_of[k] = conn_state(ost[k], rstt[k], opay_l[k], rpay_l[k], of_l[k], oa_l[k])


def _flow_table(d, s: _Sorted, f: _Flows, forder: np.ndarray, first_frame: np.ndarray,
                frame_flow: np.ndarray, observer: str, run_id: str, app):
    """``(table, flow ids, community ids)``: the flows as FLOW_RECORD_SCHEMA rows in output
    order ``forder``."""
    nf = len(f.starts)
    fP = s.P[f.starts][forder]
    f_oip, f_rip = f.oip[forder], f.rip[forder]
    f_oport, f_rport = f.oport[forder], f.rport[forder]
    f_start = f.start_ts[forder]
    oip_s = ip_strings(d, f_oip)
    rip_s = ip_strings(d, f_rip)
    transports = [_TRANSPORT_OF[p] for p in fP.tolist()]
    fid_arr, cid_arr = _flow_ids(d, observer, transports, fP, f_oip, f_oport, f_rip, f_rport,
                                 f_start, oip_s, rip_s)
    ts_type = FLOW_RECORD_SCHEMA.field("@timestamp").type
    start_arr = pa.array(f_start, pa.int64()).cast(ts_type)
    f_opk, f_tot = f.opk[forder], f.tot[forder]
    f_oby, f_tby = f.oby[forder], f.tby[forder]
    tcp_rows = f.tcp_flow[forder]
    states = [f.state_of[k] for k in forder[tcp_rows].tolist()]
    state_col = np.full(nf, None, object)
    state_col[tcp_rows] = states
    oflag_codes = np.where(tcp_rows, f.oflags[forder] & 0x3F, -1)
    rflag_codes = np.where(tcp_rows, f.rflags[forder] & 0x3F, -1)

    def const(v):
        return const_strings(v, nf)

    onef = f.iat["one"][forder]

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
        "event.end": pa.array(f.end_ts[forder], pa.int64()).cast(ts_type),
        "event.duration": pa.array((f.end_ts[forder] - f_start) * 1000, pa.int64()),
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
        "cyberrange.tcp_flags": table_strings(FLAG_LETTERS, oflag_codes),
        "cyberrange.run_id": const(run_id),
        "network.vlan.id": pa.array(vlan, pa.int32(), mask=vlan < 0),
        "cyberrange.iat.mean_us": fstat(f.iat["mean"]),
        "cyberrange.iat.std_us": fstat(f.iat["std"]),
        "cyberrange.iat.min_us": fstat(f.iat["min"].astype(np.float64)),
        "cyberrange.iat.max_us": fstat(f.iat["max"].astype(np.float64)),
        "cyberrange.tcp_flags_responder": table_strings(FLAG_LETTERS, rflag_codes),
    }
    cols.update(app.flow_columns(frame_flow, nf))
    arrays = [cols[c.name] if c.name in cols else pa.nulls(nf, c.type)
              for c in FLOW_RECORD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FLOW_RECORD_SCHEMA), fid_arr, cid_arr


def _flow_ids(d, observer: str, transports: list, fP, f_oip, f_oport, f_rip, f_rport, f_start,
              oip_s: pa.Array, rip_s: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Flow ids (one sha1 each, as ``flow_id``) and community ids (cached per 5-tuple)."""
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
    return pa.array(fids, pa.string()), pa.array(cids, pa.string())
