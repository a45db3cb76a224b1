"""pcap -> packet and flow records (the fast path of telemetry).

``parse_pcap`` reads one capture file of one sensor and returns two Arrow tables whose columns are
``PACKET_RECORD_SCHEMA`` and ``FLOW_RECORD_SCHEMA`` (the core ``PACKET_SCHEMA`` / ``FLOW_SCHEMA``
columns first, then the added ones, see ``schema.py``), plus a small stats dict.

How a capture is read (docs/telemetry.md has the long version):

1. ``capture.read_capture`` loads the file and walks the record headers (classic pcap in either
   byte order, µs or ns; pcapng with any number of interfaces, each with its own link type and
   timestamp resolution). Nothing is decoded yet: the result is one array entry per frame.
2. **Fast path, vectorized** (numpy over all frames at once): Ethernet frames with at most one
   VLAN tag carrying an unfragmented IPv4 packet without options whose lengths are all
   consistent and whose transport is TCP (data offset sane), UDP or ICMP. Each frame's first
   64 bytes are copied into one (frames x 64) array and the fields read as its columns.
3. **Slow path, per frame** (dpkt for the IP layer): everything else - other link types (Linux
   cooked v1/v2, raw IP, BSD loopback), QinQ, IPv6, ARP, fragments, IP options that hide a
   short transport header, truncated and malformed frames. A frame that cannot be decoded is never
   fatal: it is counted in ``stats["skipped"][reason]`` and produces no record.
   ``packets + sum(skipped) == frames`` always holds.
4. Application fields (DNS, HTTP, Modbus/TCP) are read only from the few frames whose ports or
   first payload bytes say so.
5. ``flows.build_flows`` groups the packets into bidirectional flows with numpy sorting
   (see ``flows.py``).

Record conventions:

* Frames that decode but carry no IP (ARP, LLDP, ...) become packet records with null IPs;
  ARP has ``network.transport == "arp"`` (its addresses are in ``cyberrange.arp.*``), anything
  else ``"other"``. They belong to no flow.
* IPv4 fragments: the first fragment carries the transport header and is a normal record of its
  flow. A later fragment ("more") gets the ports of its first fragment (matched by source,
  destination, protocol and IP id) and joins the same flow; its ``tcp.flags`` is null. A later
  fragment whose first fragment was not seen has null ports and no flow.
* IP protocols other than TCP/UDP/ICMP/ICMPv6 are packet records with null ports and no flow.
* ``@timestamp`` is microseconds UTC (nanosecond captures are rounded to the microsecond).
* ``network.bytes`` is the frame length on the wire (pcap ``orig_len``), the same number tcpdump
  prints after ``length`` with ``-e``.
* ``tcp.flags`` spells the flags that are set in the fixed order **S A F R P U**
  (SYN, ACK, FIN, RST, PSH, URG): a SYN-ACK is ``"SA"``, a FIN-ACK ``"AF"``, a RST-ACK ``"AR"``,
  a data segment ``"AP"``. ECE/CWR are not shown.
* For ICMP ``source.port`` is the ICMP type and ``destination.port`` the ICMP code (as Zeek does).
"""
from __future__ import annotations

import socket
import struct
from collections import Counter
from typing import Iterable, Iterator

import dpkt
import numpy as np
import pyarrow as pa

from .app import AppFields, decode_app
from .capture import Records, read_capture
from .flows import FLAG_LETTERS, build_flows
from .schema import FLOW_RECORD_SCHEMA, PACKET_RECORD_SCHEMA

__all__ = ["parse_pcap", "parse_pcaps", "iter_frames", "FLAG_LETTERS", "decode_records"]

# pcap link types we understand
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_OLD = 12     # OpenBSD's DLT_RAW number, seen in some files
LINKTYPE_RAW_OLD2 = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet (with 802.1Q / 802.1ad / QinQ tags)",
    LINKTYPE_LINUX_SLL: "Linux cooked capture v1 (tcpdump -i any)",
    LINKTYPE_LINUX_SLL2: "Linux cooked capture v2",
    LINKTYPE_RAW: "raw IP (v4 or v6)",
    LINKTYPE_RAW_OLD: "raw IP (OpenBSD number 12)",
    LINKTYPE_RAW_OLD2: "raw IP (number 14)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_NULL: "BSD loopback (host byte order family)",
    LINKTYPE_LOOP: "OpenBSD loopback (network byte order family)",
}

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IP6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)

# transport codes (index into TRANSPORTS) and network type codes
T_OTHER, T_TCP, T_UDP, T_ICMP, T_ICMP6, T_ARP = range(6)
TRANSPORTS = ["other", "tcp", "udp", "icmp", "ipv6-icmp", "arp"]
N_OTHER, N_IP4, N_IP6, N_ARP = range(4)
NTYPES = ["other", "ipv4", "ipv6", "arp"]
FRAGS = [None, "first", "more"]
NOMAC = 1 << 48
V6_BASE = 1 << 32          # address ids: IPv4 = its 32-bit value, IPv6 = V6_BASE + n

_IP = dpkt.ip.IP
_IP6 = dpkt.ip6.IP6
_TCP = dpkt.tcp.TCP
_UDP = dpkt.udp.UDP
_ICMP = dpkt.icmp.ICMP
_ICMP6 = dpkt.icmp6.ICMP6
_ARP = dpkt.arp.ARP
_u16 = struct.Struct(">H").unpack_from
_u32le = struct.Struct("<I").unpack_from
_u32be = struct.Struct(">I").unpack_from


# --------------------------------------------------------------------------------------------
# decoded frames: one entry per record, as columns


class Decoded:
    """Per-frame columns (numpy) filled by the fast path and the slow path."""

    def __init__(self, rec: Records):
        n = len(rec)
        self.rec = rec
        self.ok = np.zeros(n, bool)
        self.slow_frames = 0
        self.skips: list[tuple[int, str]] = []
        self.smac = np.full(n, NOMAC, np.int64)
        self.dmac = np.full(n, NOMAC, np.int64)
        self.sip = np.full(n, -1, np.int64)
        self.dip = np.full(n, -1, np.int64)
        self.sport = np.full(n, -1, np.int64)
        self.dport = np.full(n, -1, np.int64)
        self.proto = np.zeros(n, np.int64)
        self.tcode = np.zeros(n, np.int8)
        self.ntype = np.zeros(n, np.int8)
        self.flags = np.full(n, -1, np.int64)
        self.pay_off = np.zeros(n, np.int64)
        self.pay_len = np.full(n, -1, np.int64)
        self.flowable = np.zeros(n, bool)
        self.frag = np.zeros(n, np.int8)
        self.vlan = np.full(n, -1, np.int64)
        self.ivlan = np.full(n, -1, np.int64)
        self.v6: dict[bytes, int] = {}                # IPv6 address -> id
        self.arp: dict[int, tuple] = {}               # index -> (op, sender ip id, sender mac, target ip id)


def decode_records(rec: Records, fast: bool = True) -> Decoded:
    """Decode every frame record: vectorized where the frame is plain, per frame otherwise."""
    d = Decoded(rec)
    n = len(rec)
    if n == 0:
        return d
    cap, wire = rec.caplen, rec.wirelen
    bad_len = cap > wire
    fastmask = np.zeros(n, bool)
    if fast:
        eth = np.flatnonzero((rec.linktype == LINKTYPE_ETHERNET) & (cap >= 34) & ~bad_len)
        if len(eth):
            fastmask[eth[_fast_ipv4(d, eth)]] = True
    for i in np.flatnonzero(bad_len).tolist():
        d.skips.append((i, "caplen-exceeds-length"))
    slow = np.flatnonzero(~fastmask & ~bad_len)
    if len(slow):
        _slow_path(d, slow)
    return d


HDR = 64          # bytes of each frame the fast path looks at (Ethernet + tag + IPv4 + TCP)


def _be(cols: np.ndarray) -> np.ndarray:
    """Big-endian unsigned integer from the byte columns of a (n, k) uint8 array."""
    v = cols[:, 0].astype(np.int64)
    for k in range(1, cols.shape[1]):
        v = (v << 8) | cols[:, k]
    return v


def _fast_ipv4(d: Decoded, idx: np.ndarray) -> np.ndarray:
    """Decode Ethernet/IPv4 TCP/UDP/ICMP frames at fixed offsets; return which of idx it did.

    Only frames without IP options qualify (so every field is at one of two fixed offsets:
    untagged or one VLAN tag); each frame's first 64 bytes are copied in one block per frame.
    """
    rec, buf = d.rec, d.rec.buf
    o = rec.off[idx]
    cap = rec.caplen[idx]
    h = np.lib.stride_tricks.sliding_window_view(buf, HDR)[o]      # (n, 64) copy
    et = _be(h[:, 12:14])
    tagged = (et == 0x8100) | (et == 0x88A8) | (et == 0x9100)
    sh = 4 * tagged                                                 # shift of the L3 header

    def col(k):                                                     # byte k of the untagged layout
        return np.where(tagged, h[:, k + 4], h[:, k]).astype(np.int64)

    et2 = np.where(tagged, _be(h[:, 16:18]), et)
    v0 = col(14)
    iplen = (col(16) << 8) | col(17)
    fo = ((col(20) << 8) | col(21)) & 0x3FFF
    proto = col(23)
    avail = cap - 14 - sh
    is_tcp = proto == 6
    is_udp = proto == 17
    is_icmp = proto == 1
    l4len = iplen - 20
    doff = (col(46) >> 4) << 2
    ok = ((et2 == ETH_IP) & (v0 == 0x45) & (iplen >= 20) & (iplen <= avail) & (fo == 0)
          & ((is_tcp & (l4len >= 20) & (doff >= 20) & (doff <= l4len))
             | (is_udp & (l4len >= 8)) | (is_icmp & (l4len >= 8))))
    sel = np.flatnonzero(ok)
    if len(sel) == 0:
        return sel
    i = idx[sel]
    h, tg = h[sel], tagged[sel]
    is_tcp, is_udp, is_icmp = is_tcp[sel], is_udp[sel], is_icmp[sel]
    doff, l4len = doff[sel], l4len[sel]

    def col2(k):
        return np.where(tg, h[:, k + 4], h[:, k]).astype(np.int64)

    def be2(k, n):
        return np.where(tg, _be(h[:, k + 4:k + 4 + n]), _be(h[:, k:k + n]))

    d.ok[i] = True
    d.dmac[i] = _be(h[:, 0:6])
    d.smac[i] = _be(h[:, 6:12])
    if tg.any():
        d.vlan[i[tg]] = _be(h[tg, 14:16]) & 0x0FFF
    d.sip[i] = be2(26, 4)
    d.dip[i] = be2(30, 4)
    d.proto[i] = proto[sel]
    d.ntype[i] = N_IP4
    d.tcode[i] = np.where(is_tcp, T_TCP, np.where(is_udp, T_UDP, T_ICMP))
    d.sport[i] = np.where(is_icmp, col2(34), be2(34, 2))
    d.dport[i] = np.where(is_icmp, col2(35), be2(36, 2))
    d.flags[i] = np.where(is_tcp, col2(47) & 0x3F, -1)
    hdr = np.where(is_tcp, doff, np.where(is_udp, 8, 4))
    d.pay_off[i] = rec.off[i] + 34 + 4 * tg + hdr
    d.pay_len[i] = l4len - hdr
    d.flowable[i] = True
    return sel


# --------------------------------------------------------------------------------------------
# the slow path: one frame at a time


def _slow_path(d: Decoded, idx: np.ndarray) -> None:
    rec = d.rec
    raw = rec.raw
    offs = rec.off[idx].tolist()
    caps = rec.caplen[idx].tolist()
    wires = rec.wirelen[idx].tolist()
    lts = rec.linktype[idx].tolist()
    frags: dict[tuple, tuple] = {}
    rows = []
    d.slow_frames += len(idx)
    for i, off, cap, wire, lt in zip(idx.tolist(), offs, caps, wires, lts):
        try:
            r = _decode_one(d, i, lt, raw, off, cap, wire, frags)
        except Exception as exc:  # noqa: BLE001 - one bad frame must never stop a capture
            r = "decode-error:" + type(exc).__name__
        if r.__class__ is str:
            d.skips.append((i, r))
        else:
            rows.append((i,) + r)
    if not rows:
        return
    cols = list(zip(*rows))
    ii = np.asarray(cols[0], np.int64)
    d.ok[ii] = True
    for name, k in (("smac", 1), ("dmac", 2), ("sip", 3), ("dip", 4), ("sport", 5), ("dport", 6),
                    ("proto", 7), ("tcode", 8), ("ntype", 9), ("flags", 10), ("pay_off", 11),
                    ("pay_len", 12), ("flowable", 13), ("frag", 14), ("vlan", 15),
                    ("ivlan", 16)):
        getattr(d, name)[ii] = cols[k]


def _mac_int(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _v6id(d: Decoded, rawaddr: bytes) -> int:
    v = d.v6.get(rawaddr)
    if v is None:
        v = d.v6[rawaddr] = V6_BASE + len(d.v6)
    return v


def _decode_one(d: Decoded, i: int, lt: int, raw: bytes, off: int, cap: int, wire: int, frags: dict):
    """Decode one frame; return a skip reason (str) or the tuple of decoded fields."""
    buf = bytes(raw[off:off + cap])
    n = len(buf)
    smac = dmac = NOMAC
    vlan = ivlan = -1
    # ---- link layer
    if lt == LINKTYPE_ETHERNET:
        if n < 14:
            return "truncated-ethernet"
        dmac = _mac_int(buf[0:6])
        smac = _mac_int(buf[6:12])
        etype = _u16(buf, 12)[0]
        l2 = 14
        tags = []
        while etype in ETH_VLAN:                       # 802.1Q / 802.1ad / QinQ tags
            if n < l2 + 4:
                return "truncated-vlan"
            tags.append(_u16(buf, l2)[0] & 0x0FFF)
            etype = _u16(buf, l2 + 2)[0]
            l2 += 4
        if tags:
            vlan = tags[0]
            if len(tags) > 1:
                ivlan = tags[1]
        if etype <= 1500:                              # 802.3 length field: LLC/SNAP, STP ...
            etype = -1
    elif lt == LINKTYPE_LINUX_SLL:
        if n < 16:
            return "truncated-sll"
        if _u16(buf, 4)[0] == 6:
            smac = _mac_int(buf[6:12])
        etype = _u16(buf, 14)[0]
        l2 = 16
    elif lt == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return "truncated-sll2"
        etype = _u16(buf, 0)[0]
        if buf[11] == 6:
            smac = _mac_int(buf[12:18])
        l2 = 20
    elif lt in (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if n < 1:
            return "truncated-ip"
        version = buf[0] >> 4
        etype = ETH_IP if version == 4 else ETH_IP6 if version == 6 else -1
        l2 = 0
    elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return "truncated-loopback"
        fam = (_u32be if lt == LINKTYPE_LOOP else _u32le)(buf, 0)[0]
        if fam > 0xFFFF:                               # written on a host of the other byte order
            fam = struct.unpack("<I", struct.pack(">I", fam))[0]
        etype = ETH_IP if fam == 2 else ETH_IP6 if fam in (10, 24, 28, 30) else -1
        l2 = 4
    else:
        return f"unsupported-linktype-{lt}"

    snapped = wire > n          # the capture cut the frame short (snaplen): tolerate short payloads
    payload = buf[l2:] if l2 else buf
    base = off + l2

    # ---- network layer
    if etype == ETH_IP:
        if len(payload) < 20:
            return "truncated-ip"
        if payload[0] >> 4 != 4:
            return "bad-ip-version"
        hl = (payload[0] & 0x0F) << 2
        if hl < 20 or hl > len(payload):
            return "bad-ip-header-length"
        ip = _IP(payload)
        if ip.len and ip.len < hl:
            return "bad-ip-length"
        if ip.len > len(payload) and not snapped:
            return "bad-ip-length"
        sip = int.from_bytes(ip.src, "big")
        dip = int.from_bytes(ip.dst, "big")
        proto = ip.p
        l4 = ip.data
        ntype = N_IP4
        mf = ip.mf
        offset = ip.offset
        frag = 2 if offset else (1 if mf else 0)
        l4off = base + hl
    elif etype == ETH_IP6:
        if len(payload) < 40:
            return "truncated-ip6"
        if payload[0] >> 4 != 6:
            return "bad-ip-version"
        ip = _IP6(payload)
        if 40 + ip.plen > len(payload) and ip.plen and not snapped:
            return "bad-ip-length"
        sip = _v6id(d, ip.src)
        dip = _v6id(d, ip.dst)
        proto = ip.p
        l4 = ip.data
        ntype = N_IP6
        frag = 0                                       # a v6 fragment header leaves p == 44: "other"
        l4off = base + 40 if payload[6] == proto else -1   # app fields only without ext headers
    elif etype == ETH_ARP:
        if len(payload) < 28:
            return "truncated-arp"
        a = _ARP(payload)
        if a.hln == 6 and a.pln == 4:
            op = "request" if a.op == 1 else "reply" if a.op == 2 else "other"
            d.arp[i] = (op, int.from_bytes(a.spa, "big"), _mac_int(a.sha),
                        int.from_bytes(a.tpa, "big"))
        else:
            d.arp[i] = ("other", -1, NOMAC, -1)
        return (smac, dmac, -1, -1, -1, -1, 0, T_ARP, N_ARP, -1, 0, -1, False, 0, vlan, ivlan)
    else:
        return (smac, dmac, -1, -1, -1, -1, 0, T_OTHER, N_OTHER, -1, 0, -1, False, 0, vlan,
                ivlan)

    # ---- transport layer
    sport = dport = flags = -1
    pay_off, pay_len = 0, -1
    flowable = False
    if frag == 2:                                       # a later IPv4 fragment
        tcode = {6: T_TCP, 17: T_UDP, 1: T_ICMP}.get(proto, T_OTHER)
        first = frags.get((sip, dip, proto, ip.id))
        if first is not None:
            sport, dport = first
            flowable = True
    elif proto == 6:
        if not isinstance(l4, _TCP):
            return "truncated-tcp"
        sport, dport = l4.sport, l4.dport
        flags = l4.flags & 0x3F
        tcode = T_TCP
        flowable = True
        pay_len = len(l4.data)
        pay_off = l4off + (l4.off << 2) if l4off >= 0 else -1
    elif proto == 17:
        if not isinstance(l4, _UDP):
            return "truncated-udp"
        sport, dport = l4.sport, l4.dport
        tcode = T_UDP
        flowable = True
        pay_len = len(l4.data)
        pay_off = l4off + 8 if l4off >= 0 else -1
    elif proto == 1 or proto == 58:
        if not isinstance(l4, (_ICMP, _ICMP6)):
            return "truncated-icmp"
        sport, dport = l4.type, l4.code
        tcode = T_ICMP if proto == 1 else T_ICMP6
        flowable = True
    else:
        tcode = T_OTHER
    if frag == 1 and flowable:
        frags[(sip, dip, proto, ip.id)] = (sport, dport)
    if pay_off < 0:
        pay_len = -1
    return (smac, dmac, sip, dip, sport, dport, proto, tcode, ntype, flags, pay_off, pay_len,
            flowable, frag, vlan, ivlan)


# --------------------------------------------------------------------------------------------
# public API


def iter_frames(path: str, skipped: Counter | None = None) -> Iterator[tuple[int, int, bytes, int]]:
    """Yield ``(linktype, ts_us, frame_bytes, wire_len)`` for every usable record of a capture."""
    rec = read_capture(path)
    if skipped is not None:
        skipped.update(rec.skipped)
    raw = rec.raw
    for lt, ts, off, cap, wire in zip(rec.linktype.tolist(), rec.ts.tolist(), rec.off.tolist(),
                                      rec.caplen.tolist(), rec.wirelen.tolist()):
        yield lt, ts, bytes(raw[off:off + cap]), wire


def parse_pcap(path: str, observer: str, run_id: str, *, tcp_timeout: float = 60.0,
               udp_timeout: float = 30.0, icmp_timeout: float = 30.0, fast: bool = True
               ) -> tuple[pa.Table, pa.Table, dict]:
    """Parse one capture file of sensor ``observer`` into ``(packets, flows, stats)``.

    ``stats`` holds ``frames`` (records in the file), ``packets`` (records produced), ``bytes``
    (sum of ``network.bytes``), ``flows``, ``skipped`` (``{reason: count}``), ``linktypes``
    (``{linktype: frames}``), ``format`` (pcap | pcapng) and ``slow_path`` (frames decoded one
    at a time). ``fast=False`` sends every frame through the slow path (for testing).
    """
    rec = read_capture(path)
    d = decode_records(rec, fast=fast)
    skipped = Counter(rec.skipped)
    app = decode_app(d)
    ok_idx = np.flatnonzero(d.ok)
    flows_tbl, pkt_flow, flow_ids, flow_cids = build_flows(
        d, ok_idx, observer, run_id, app, tcp_timeout=tcp_timeout, udp_timeout=udp_timeout,
        icmp_timeout=icmp_timeout)
    packets = _packet_table(d, ok_idx, pkt_flow, flow_ids, flow_cids, app, observer, run_id)
    for _, reason in d.skips:
        skipped[reason] += 1
    lts = Counter(rec.linktype.tolist())
    stats = {
        "frames": rec.frames,
        "packets": int(len(ok_idx)),
        "bytes": int(rec.wirelen[ok_idx].sum()) if len(ok_idx) else 0,
        "flows": flows_tbl.num_rows,
        "skipped": dict(skipped),
        "linktypes": {int(k): v for k, v in lts.items()},
        "format": rec.format,
        "slow_path": int(d.slow_frames),
    }
    return packets, flows_tbl, stats


def parse_pcaps(items: Iterable[tuple[str, str]], run_id: str, **kwargs
                ) -> tuple[pa.Table, pa.Table, dict]:
    """Parse several ``(path, observer)`` captures and concatenate the results.

    Flows are assembled per file (one file = one sensor); stats are summed, with the
    per-file stats kept under ``stats["files"]``.
    """
    pkt_tables, flow_tables, per_file = [], [], {}
    total = {"frames": 0, "packets": 0, "bytes": 0, "flows": 0, "skipped": Counter()}
    for path, observer in items:
        p, f, s = parse_pcap(path, observer, run_id, **kwargs)
        pkt_tables.append(p)
        flow_tables.append(f)
        per_file[str(path)] = s
        for key in ("frames", "packets", "bytes", "flows"):
            total[key] += s[key]
        total["skipped"].update(s["skipped"])
    packets = pa.concat_tables(pkt_tables) if pkt_tables else PACKET_RECORD_SCHEMA.empty_table()
    flows = pa.concat_tables(flow_tables) if flow_tables else FLOW_RECORD_SCHEMA.empty_table()
    total["skipped"] = dict(total["skipped"])
    total["files"] = per_file
    return packets, flows, total


# --------------------------------------------------------------------------------------------
# Arrow output


def _const(value, n: int, typ=pa.string()) -> pa.Array:
    """A column holding one value n times (built without an n-long Python list)."""
    if n == 0:
        return pa.array([], typ)
    return pa.repeat(pa.scalar(value, typ), n)


def ip_strings(d: Decoded, ids: np.ndarray) -> pa.Array:
    """Address ids -> strings (null for -1), converting each distinct address once."""
    return _dict_strings(ids, lambda u: _ip_text(d, u))


def _ip_text(d: Decoded, uniq: np.ndarray) -> list:
    inv6 = None
    out = []
    pack = struct.Struct(">I").pack
    ntoa = socket.inet_ntoa
    for v in uniq.tolist():
        if v < 0:
            out.append(None)
        elif v < V6_BASE:
            out.append(ntoa(pack(v)))
        else:
            if inv6 is None:
                inv6 = {k: r for r, k in d.v6.items()}
            out.append(socket.inet_ntop(socket.AF_INET6, inv6[v]))
    return out


def mac_strings(ids: np.ndarray) -> pa.Array:
    def text(uniq):
        return [None if v == NOMAC else v.to_bytes(6, "big").hex(":") for v in uniq.tolist()]
    return _dict_strings(ids, text)


def _dict_strings(values: np.ndarray, to_text) -> pa.Array:
    """A string column from integer codes: text is made once per distinct value."""
    if len(values) == 0:
        return pa.array([], pa.string())
    uniq, inv = np.unique(values, return_inverse=True)
    words = to_text(uniq)
    dictionary = pa.array(words, pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(inv.astype(np.int32)), dictionary
                                          ).cast(pa.string())


def _int_col(values: np.ndarray, typ) -> pa.Array:
    """An integer column with -1 meaning null."""
    mask = values < 0
    return pa.array(values, typ, mask=mask if mask.any() else None)


def _table_strings(table: list, codes: np.ndarray) -> pa.Array:
    """Strings from a small lookup table; code -1 is null."""
    if len(codes) == 0:
        return pa.array([], pa.string())
    words = pa.array(list(table) + [None], pa.string())
    c = np.where(codes < 0, len(table), codes).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(c), words).cast(pa.string())


def _packet_table(d: Decoded, ok: np.ndarray, pkt_flow: np.ndarray, flow_ids: pa.Array,
                  flow_cids: pa.Array, app: AppFields, observer: str, run_id: str) -> pa.Table:
    n = len(ok)
    if n == 0:
        return PACKET_RECORD_SCHEMA.empty_table()
    rec = d.rec
    ts_type = PACKET_RECORD_SCHEMA.field("@timestamp").type
    sport = d.sport[ok]
    dport = d.dport[ok]
    fl = pkt_flow
    flow_idx = pa.array(np.where(fl < 0, 0, fl).astype(np.int32),
                        mask=(fl < 0) if (fl < 0).any() else None)
    if len(flow_ids):
        fid = pa.DictionaryArray.from_arrays(flow_idx, flow_ids).cast(pa.string())
        cid = pa.DictionaryArray.from_arrays(flow_idx, flow_cids).cast(pa.string())
    else:
        fid = pa.nulls(n, pa.string())
        cid = pa.nulls(n, pa.string())
    cols = {
        "@timestamp": pa.array(rec.ts[ok], pa.int64()).cast(ts_type),
        "event.kind": _const("event", n),
        "event.dataset": _const("cyberrange.packet", n),
        "observer.name": _const(observer, n),
        "source.mac": mac_strings(d.smac[ok]),
        "destination.mac": mac_strings(d.dmac[ok]),
        "source.ip": ip_strings(d, d.sip[ok]),
        "destination.ip": ip_strings(d, d.dip[ok]),
        "source.port": _int_col(sport, pa.int32()),
        "destination.port": _int_col(dport, pa.int32()),
        "network.transport": _table_strings(TRANSPORTS, d.tcode[ok].astype(np.int64)),
        "network.type": _table_strings(NTYPES, d.ntype[ok].astype(np.int64)),
        "network.bytes": pa.array(rec.wirelen[ok], pa.int64()),
        "network.community_id": cid,
        "tcp.flags": _table_strings(FLAG_LETTERS, d.flags[ok]),
        "cyberrange.flow_id": fid,
        "cyberrange.run_id": _const(run_id, n),
        "network.vlan.id": _int_col(d.vlan[ok], pa.int32()),
        "network.inner.vlan.id": _int_col(d.ivlan[ok], pa.int32()),
        "cyberrange.ip.fragment": _table_strings(["first", "more"],
                                                 d.frag[ok].astype(np.int64) - 1),
    }
    # sparse fields: ARP and application layer, set on few rows
    pos = np.full(len(d.ok), -1, np.int64)
    pos[ok] = np.arange(n)
    sparse = app.packet_columns(d, pos, n)
    cols.update(sparse)
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type)
              for f in PACKET_RECORD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=PACKET_RECORD_SCHEMA)
