"""Frame records -> per-frame columns: what each frame is, decoded once.

``decode_records`` fills a :class:`Decoded` (numpy columns, one entry per frame record) in two
ways:

* **fast path, vectorized** (numpy over all frames at once): Ethernet frames with at most one
  VLAN tag carrying an unfragmented IPv4 packet without options whose lengths are all consistent
  and whose transport is TCP (data offset sane), UDP or ICMP. Each frame's first 64 bytes are
  copied into one (frames x 64) array and the fields read as its columns.
* **slow path, per frame** (dpkt for the IP layer): everything else, in three steps per frame:
  the link layer (``_link_layer``: Ethernet with any number of tags, Linux cooked v1/v2, raw IP,
  BSD loopback), the network layer (``_ipv4``, ``_ipv6``, ``_arp``) and the transport layer
  (``_transport``: ports, flags, payload; later IPv4 fragments get their first fragment's ports).
  A frame that cannot be decoded is never fatal: its step returns a skip reason (a string),
  which ``Decoded.skips`` collects.
"""
from __future__ import annotations

import struct

import dpkt
import numpy as np

from .capture import Records
from .wire import (
    ETH_ARP,
    ETH_IP,
    ETH_IP6,
    ETH_VLAN,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    N_ARP,
    N_IP4,
    N_IP6,
    N_OTHER,
    NOMAC,
    RAW_IP_LINKTYPES,
    T_ARP,
    T_ICMP,
    T_ICMP6,
    T_OTHER,
    T_TCP,
    T_UDP,
    V6_BASE,
)

__all__ = ["Decoded", "decode_records"]

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


def _decode_one(d: Decoded, i: int, lt: int, raw: bytes, off: int, cap: int, wire: int,
                frags: dict):
    """Decode one frame; return a skip reason (str) or the tuple of decoded fields
    (``smac, dmac, sip, dip, sport, dport, proto, tcode, ntype, flags, pay_off, pay_len,
    flowable, frag, vlan, ivlan``, the order ``_slow_path`` stores them in)."""
    buf = bytes(raw[off:off + cap])
    link = _link_layer(lt, buf)
    if link.__class__ is str:
        return link
    smac, dmac, vlan, ivlan, etype, l2 = link
    payload = buf[l2:] if l2 else buf
    snapped = wire > len(buf)   # the capture cut the frame short (snaplen): tolerate short payloads
    if etype == ETH_IP:
        net = _ipv4(payload, off + l2, snapped)
    elif etype == ETH_IP6:
        net = _ipv6(d, payload, off + l2, snapped)
    elif etype == ETH_ARP:
        if len(payload) < 28:
            return "truncated-arp"
        d.arp[i] = _arp(payload)
        return (smac, dmac, -1, -1, -1, -1, 0, T_ARP, N_ARP, -1, 0, -1, False, 0, vlan, ivlan)
    else:
        return (smac, dmac, -1, -1, -1, -1, 0, T_OTHER, N_OTHER, -1, 0, -1, False, 0, vlan,
                ivlan)
    if net.__class__ is str:
        return net
    return _transport(net, frags, smac, dmac, vlan, ivlan)


def _link_layer(lt: int, buf: bytes):
    """``(smac, dmac, vlan, inner vlan, ethertype, header length)`` of a frame of link type
    ``lt``, or a skip reason. EtherType -1: not IP, IPv6 or ARP (802.3 length field, LLC...)."""
    n = len(buf)
    smac = dmac = NOMAC
    vlan = ivlan = -1
    if lt == LINKTYPE_ETHERNET:
        if n < 14:
            return "truncated-ethernet"
        dmac = int.from_bytes(buf[0:6], "big")
        smac = int.from_bytes(buf[6:12], "big")
        etype = _u16(buf, 12)[0]
        l2 = 14
        while etype in ETH_VLAN:                       # 802.1Q / 802.1ad / QinQ tags
            if n < l2 + 4:
                return "truncated-vlan"
            tag = _u16(buf, l2)[0] & 0x0FFF
            if vlan < 0:                               # the outer tag, then the next one
                vlan = tag
            elif ivlan < 0:
                ivlan = tag
            etype = _u16(buf, l2 + 2)[0]
            l2 += 4
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
    elif lt in RAW_IP_LINKTYPES:
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
    return smac, dmac, vlan, ivlan, etype, l2


def _ipv4(payload: bytes, base: int, snapped: bool):
    """``(sip, dip, proto, l4, ntype, frag, l4off, ip id)`` of an IPv4 packet at file offset
    ``base``, or a skip reason. ``frag``: 0 whole, 1 first fragment, 2 a later one."""
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
    flags_offset = _u16(payload, 6)[0]           # (not dpkt's bit-field properties: slower)
    frag = 2 if flags_offset & 0x1FFF else (1 if flags_offset & 0x2000 else 0)
    return (int.from_bytes(ip.src, "big"), int.from_bytes(ip.dst, "big"), ip.p, ip.data, N_IP4,
            frag, base + hl, ip.id)


def _ipv6(d: Decoded, payload: bytes, base: int, snapped: bool):
    """As ``_ipv4`` for IPv6: addresses become ids (``Decoded.v6``); a fragment header leaves
    ``proto`` 44 ("other"); app fields are read only without extension headers."""
    if len(payload) < 40:
        return "truncated-ip6"
    if payload[0] >> 4 != 6:
        return "bad-ip-version"
    ip = _IP6(payload)
    if 40 + ip.plen > len(payload) and ip.plen and not snapped:
        return "bad-ip-length"
    proto = ip.p
    l4off = base + 40 if payload[6] == proto else -1
    return (_v6id(d, ip.src), _v6id(d, ip.dst), proto, ip.data, N_IP6, 0, l4off, 0)


def _arp(payload: bytes) -> tuple:
    """``(operation, sender ip, sender mac, target ip)`` of an ARP packet (Ethernet/IPv4 only;
    others are operation "other" without addresses)."""
    a = _ARP(payload)
    if a.hln == 6 and a.pln == 4:
        op = "request" if a.op == 1 else "reply" if a.op == 2 else "other"
        return (op, int.from_bytes(a.spa, "big"), _mac_int(a.sha), int.from_bytes(a.tpa, "big"))
    return ("other", -1, NOMAC, -1)


def _transport(net: tuple, frags: dict, smac: int, dmac: int, vlan: int, ivlan: int):
    """The decoded-fields tuple of an IP packet (see ``_decode_one``), or a skip reason.

    A first IPv4 fragment's ports are kept in ``frags`` by (source, destination, protocol, IP
    id), so that its later fragments join its flow."""
    sip, dip, proto, l4, ntype, frag, l4off, ipid = net
    sport = dport = flags = -1
    pay_off, pay_len = 0, -1
    flowable = False
    if frag == 2:                                       # a later IPv4 fragment
        tcode = {6: T_TCP, 17: T_UDP, 1: T_ICMP}.get(proto, T_OTHER)
        first = frags.get((sip, dip, proto, ipid))
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
        frags[(sip, dip, proto, ipid)] = (sport, dport)
    if pay_off < 0:
        pay_len = -1
    return (smac, dmac, sip, dip, sport, dport, proto, tcode, ntype, flags, pay_off, pay_len,
            flowable, frag, vlan, ivlan)
