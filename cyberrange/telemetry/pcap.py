"""pcap -> packet and flow records (the fast path of telemetry).

``parse_pcap`` reads one capture file of one sensor and returns two Arrow tables whose columns are
exactly ``PACKET_SCHEMA`` and ``FLOW_SCHEMA`` (see ``schema.py``), plus a small stats dict.

How a frame is read:

* The file is memory-mapped and walked record by record (classic pcap, either byte order,
  microsecond or nanosecond magic). pcapng files are read through ``dpkt.pcapng.Reader``.
* Link layers: Ethernet (with up to two 802.1Q / 802.1ad tags), Linux cooked capture v1 (SLL) and
  v2 (SLL2), raw IP. The link header is taken apart by hand (it is a few fixed offsets); the IP layer
  and everything above it is decoded by dpkt.
* A frame that cannot be decoded is never fatal: it is counted in ``stats["skipped"][reason]``
  and produces no record. ``packets + sum(skipped) == frames`` always holds.
* Frames that decode but carry no IP (ARP, LLDP, ...) become packet records with null IPs;
  ARP has ``network.transport == "arp"``, anything else ``"other"``. They belong to no flow.
* IPv4 fragments after the first, and IP protocols other than TCP/UDP/ICMP, are packet records
  with null ports and no flow (``cyberrange.flow_id`` is null).

Field conventions:

* ``@timestamp`` is microseconds UTC (nanosecond captures are rounded to the microsecond).
* ``network.bytes`` is the frame length on the wire (pcap ``orig_len``), the same number tcpdump
  prints after ``length`` with ``-e``.
* ``tcp.flags`` spells the flags that are set in the fixed order **S A F R P U**
  (SYN, ACK, FIN, RST, PSH, URG): a SYN-ACK is ``"SA"``, a FIN-ACK ``"AF"``, a RST-ACK ``"AR"``,
  a data segment ``"AP"``. ECE/CWR are not shown.
* For ICMP ``source.port`` is the ICMP type and ``destination.port`` the ICMP code (as Zeek does).
"""
from __future__ import annotations

import mmap
import os
import socket
import struct
from collections import Counter
from typing import Iterable, Iterator

import dpkt
import pyarrow as pa

from ..errors import UserError
from .flows import FlowAssembler, FLAG_LETTERS
from .schema import FLOW_SCHEMA, PACKET_SCHEMA

__all__ = ["parse_pcap", "parse_pcaps", "iter_frames", "FLAG_LETTERS"]

# pcap link types we understand
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_OLD = 12     # OpenBSD's DLT_RAW number, seen in some files
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IP6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)

_IP = dpkt.ip.IP
_IP6 = dpkt.ip6.IP6
_TCP = dpkt.tcp.TCP
_UDP = dpkt.udp.UDP
_ICMP = dpkt.icmp.ICMP
_ICMP6 = dpkt.icmp6.ICMP6
_ARP = dpkt.arp.ARP
_UnpackError = dpkt.UnpackError

_u16 = struct.Struct(">H").unpack_from
_inet_ntoa = socket.inet_ntoa


# small caches: the same few addresses appear on almost every frame of a capture
_MAC_CACHE: dict = {}
_IP4_CACHE: dict = {}


def _inet6_ntoa(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


# --------------------------------------------------------------------------------------------
# reading capture files


def iter_frames(path: str, skipped: Counter | None = None) -> Iterator[tuple[int, int, bytes, int]]:
    """Yield ``(linktype, ts_us, frame_bytes, wire_len)`` for every record of a capture file.

    A record cut short at the end of the file is counted as ``skipped["truncated-record"]``.
    """
    if skipped is None:
        skipped = Counter()
    size = os.path.getsize(path)
    if size == 0:
        return
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head == b"\x0a\x0d\x0d\x0a":
            fh.seek(0)
            yield from _iter_pcapng(fh, skipped)
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield from _iter_pcap(mm, size, skipped, path)


def _iter_pcap(mm, size: int, skipped: Counter, path: str):
    if size < 24:
        raise UserError("not a pcap file (shorter than a pcap header)", file=path)
    magic = mm[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, scale = "<", 1
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian, scale = ">", 1
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, scale = "<", 1000           # nanosecond resolution
    elif magic == b"\xa1\xb2\x3c\x4d":
        endian, scale = ">", 1000
    else:
        raise UserError(f"not a pcap or pcapng file (magic {magic.hex()})", file=path)
    linktype = struct.unpack_from(endian + "I", mm, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII").unpack_from
    off = 24
    while off < size:
        if off + 16 > size:
            skipped["truncated-record"] += 1
            return
        sec, frac, caplen, wirelen = rec(mm, off)
        off += 16
        end = off + caplen
        if end > size:
            skipped["truncated-record"] += 1
            return
        if scale == 1:
            ts_us = sec * 1_000_000 + frac
        else:
            ts_us = sec * 1_000_000 + (frac + 500) // 1000
        yield linktype, ts_us, mm[off:end], wirelen
        off = end


def _iter_pcapng(fh, skipped: Counter):
    try:
        reader = dpkt.pcapng.Reader(fh)
    except (ValueError, _UnpackError) as exc:
        raise UserError(f"bad pcapng file: {exc}", file=getattr(fh, "name", None)) from None
    linktype = reader.datalink()
    it = iter(reader)
    while True:
        try:
            ts, buf = next(it)
        except StopIteration:
            return
        except (_UnpackError, struct.error, ValueError):
            skipped["truncated-record"] += 1
            return
        yield linktype, int(round(ts * 1_000_000)), bytes(buf), len(buf)


# --------------------------------------------------------------------------------------------
# parsing


class _Columns:
    """Packet records collected as one tuple per frame (a single append in the hot loop) and
    turned into Arrow columns once, at the end."""

    FIELDS = ("ts", "smac", "dmac", "sip", "dip", "sport", "dport", "transport", "ntype",
              "nbytes", "cid", "flags", "fid")

    def __init__(self):
        self.rows: list[tuple] = []
        self.append = self.rows.append

    def __len__(self):
        return len(self.rows)

    def table(self, observer: str, run_id: str) -> pa.Table:
        n = len(self.rows)
        if n == 0:
            return PACKET_SCHEMA.empty_table()
        (ts, smac, dmac, sip, dip, sport, dport, transport, ntype, nbytes, cid, flags,
         fid) = zip(*self.rows)
        cols = [
            pa.array(ts, pa.int64()).cast(PACKET_SCHEMA.field("@timestamp").type),
            _const("event", n),
            _const("cyberrange.packet", n),
            _const(observer, n),
            pa.array(smac, pa.string()),
            pa.array(dmac, pa.string()),
            pa.array(sip, pa.string()),
            pa.array(dip, pa.string()),
            pa.array(sport, pa.int32()),
            pa.array(dport, pa.int32()),
            pa.array(transport, pa.string()),
            pa.array(ntype, pa.string()),
            pa.array(nbytes, pa.int64()),
            pa.array(cid, pa.string()),
            pa.array(flags, pa.string()),
            pa.array(fid, pa.string()),
            _const(run_id, n),
        ]
        return pa.Table.from_arrays(cols, schema=PACKET_SCHEMA)


def _const(value: str, n: int) -> pa.Array:
    """A string column holding one value n times (built without an n-long Python list)."""
    if n == 0:
        return pa.array([], pa.string())
    return pa.repeat(pa.scalar(value, pa.string()), n)


def parse_pcap(path: str, observer: str, run_id: str, *, tcp_timeout: float = 60.0,
               udp_timeout: float = 30.0, icmp_timeout: float = 30.0
               ) -> tuple[pa.Table, pa.Table, dict]:
    """Parse one capture file of sensor ``observer`` into ``(packets, flows, stats)``.

    ``stats`` holds ``frames`` (records in the file), ``packets`` (records produced), ``bytes``
    (sum of ``network.bytes``), ``flows``, ``skipped`` (``{reason: count}``) and ``linktypes``.
    """
    skipped: Counter = Counter()
    cols = _Columns()
    flows = FlowAssembler(observer, run_id, tcp_timeout=tcp_timeout, udp_timeout=udp_timeout,
                          icmp_timeout=icmp_timeout)
    frames = 0
    total_bytes = 0
    linktypes: Counter = Counter()
    if len(_IP4_CACHE) > 100_000:
        _IP4_CACHE.clear()
    for linktype, ts_us, buf, wirelen in iter_frames(path, skipped):
        frames += 1
        linktypes[linktype] += 1
        try:
            reason = _decode_frame(linktype, ts_us, buf, wirelen, cols, flows)
        except Exception as exc:  # noqa: BLE001 - one bad frame must never stop a capture
            reason = "decode-error:" + type(exc).__name__
        if reason is not None:
            skipped[reason] += 1
        else:
            total_bytes += wirelen
    packets = cols.table(observer, run_id)
    flow_table = flows.table()
    stats = {
        "frames": frames,
        "packets": len(cols),
        "bytes": total_bytes,
        "flows": flow_table.num_rows,
        "skipped": dict(skipped),
        "linktypes": dict(linktypes),
    }
    return packets, flow_table, stats


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
    packets = pa.concat_tables(pkt_tables) if pkt_tables else PACKET_SCHEMA.empty_table()
    flows = pa.concat_tables(flow_tables) if flow_tables else FLOW_SCHEMA.empty_table()
    total["skipped"] = dict(total["skipped"])
    total["files"] = per_file
    return packets, flows, total


def _decode_frame(linktype: int, ts_us: int, buf, wirelen: int, cols: _Columns,
                  flows: FlowAssembler) -> str | None:
    """Decode one frame and append its record; return a skip reason, or None when recorded."""
    n = len(buf)
    smac = dmac = None
    # ---- link layer
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return "truncated-ethernet"
        macs = buf[0:12]
        pair = _MAC_CACHE.get(macs)
        if pair is None:
            pair = _MAC_CACHE[macs] = (macs[0:6].hex(":"), macs[6:12].hex(":"))
            if len(_MAC_CACHE) > 100_000:
                _MAC_CACHE.clear()
        dmac, smac = pair
        etype = _u16(buf, 12)[0]
        off = 14
        while etype in ETH_VLAN:                       # 802.1Q / QinQ tags
            if n < off + 4:
                return "truncated-vlan"
            etype = _u16(buf, off + 2)[0]
            off += 4
        if etype <= 1500:                              # 802.3 length field: LLC/SNAP, STP ...
            etype = -1
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return "truncated-sll"
        if _u16(buf, 4)[0] == 6:
            smac = buf[6:12].hex(":")
        etype = _u16(buf, 14)[0]
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return "truncated-sll2"
        etype = _u16(buf, 0)[0]
        if buf[11] == 6:
            smac = buf[12:18].hex(":")
        off = 20
    elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if n < 1:
            return "truncated-ip"
        version = buf[0] >> 4
        etype = ETH_IP if version == 4 else ETH_IP6 if version == 6 else -1
        off = 0
    else:
        return f"unsupported-linktype-{linktype}"

    snapped = wirelen > n          # the capture cut the frame short (snaplen): tolerate short payloads
    payload = buf[off:] if off else buf

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
        sip_raw, dip_raw = ip.src, ip.dst
        sip = _IP4_CACHE.get(sip_raw)
        if sip is None:
            sip = _IP4_CACHE[sip_raw] = _inet_ntoa(sip_raw)
        dip = _IP4_CACHE.get(dip_raw)
        if dip is None:
            dip = _IP4_CACHE[dip_raw] = _inet_ntoa(dip_raw)
        proto = ip.p
        l4 = ip.data
        ntype = "ipv4"
        fragment = ip.offset != 0
    elif etype == ETH_IP6:
        if len(payload) < 40:
            return "truncated-ip6"
        if payload[0] >> 4 != 6:
            return "bad-ip-version"
        ip = _IP6(payload)
        if 40 + ip.plen > len(payload) and ip.plen and not snapped:
            return "bad-ip-length"
        sip_raw, dip_raw = ip.src, ip.dst
        sip, dip = _inet6_ntoa(sip_raw), _inet6_ntoa(dip_raw)
        proto = ip.p
        l4 = ip.data
        ntype = "ipv6"
        fragment = False                               # a v6 fragment header leaves p == 44: "other"
    elif etype == ETH_ARP:
        if len(payload) < 28:
            return "truncated-arp"
        _ARP(payload)                                  # validate
        _append_l2(cols, ts_us, smac, dmac, "arp", "arp", wirelen)
        return None
    else:
        _append_l2(cols, ts_us, smac, dmac, "other", "other", wirelen)
        return None

    # ---- transport layer
    sport = dport = None
    flags = None
    if fragment:
        transport = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}.get(proto, "other")
        fid = cid = None
    elif proto == 6:
        if not isinstance(l4, _TCP):
            return "truncated-tcp"
        sport, dport = l4.sport, l4.dport
        fbits = l4.flags & 0x3F
        flags = FLAG_LETTERS[fbits]
        transport = "tcp"
        fid, cid = flows.add_tcp(ts_us, sip, sport, dip, dport, sip_raw, dip_raw, wirelen, fbits,
                                 len(l4.data))
    elif proto == 17:
        if not isinstance(l4, _UDP):
            return "truncated-udp"
        sport, dport = l4.sport, l4.dport
        transport = "udp"
        fid, cid = flows.add_udp(ts_us, sip, sport, dip, dport, sip_raw, dip_raw, wirelen)
    elif proto == 1 or proto == 58:
        if not isinstance(l4, (_ICMP, _ICMP6)):
            return "truncated-icmp"
        sport, dport = l4.type, l4.code
        transport = "icmp" if proto == 1 else "ipv6-icmp"
        fid, cid = flows.add_icmp(ts_us, sip, dip, sport, dport, sip_raw, dip_raw, wirelen,
                                  proto)
    else:
        transport = "other"
        fid = cid = None

    cols.append((ts_us, smac, dmac, sip, dip, sport, dport, transport, ntype, wirelen, cid, flags,
                 fid))
    return None


def _append_l2(cols: _Columns, ts_us, smac, dmac, transport, ntype, wirelen):
    cols.append((ts_us, smac, dmac, None, None, None, None, transport, ntype, wirelen, None, None,
                 None))
