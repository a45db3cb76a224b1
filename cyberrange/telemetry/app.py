"""Application-layer fields read from the few packets that carry them: DNS, HTTP, Modbus/TCP, ARP.

Candidates are picked with numpy over all packets (ports, first payload bytes); only they are
decoded one by one, so the cost follows the number of DNS/HTTP/Modbus packets, not the capture.

* **DNS** (UDP or TCP port 53, mDNS 5353): first question name and type; for responses the
  response code. Messages that do not parse are ignored (the packet record stays).
* **HTTP** (TCP, payload starting with a request method): method, ``Host`` header without port
  (``url.domain``; the authority of an absolute-form target when there is no Host header) and the
  target without its query (``url.path``). Only the first line and headers of the segment are read.
* **Modbus/TCP** (TCP port 502, MBAP protocol id 0): unit id and function code of the first ADU
  in the segment. Flow records list the distinct function codes of requests (segments to port
  502) and the unit id of the first request.
* **ARP** (decoded by the slow path): operation, sender IP and MAC, target IP.
"""
from __future__ import annotations

import socket
import struct

import numpy as np
import pyarrow as pa

from .columns import sparse_strings
from .wire import NOMAC, T_TCP, T_UDP

DNS_PORTS = (53, 5353)
MODBUS_PORT = 502
HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN",
                b"TRAC")
_METHOD_CODES = np.array([int.from_bytes(m, "big") for m in HTTP_METHODS], np.int64)

DNS_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
             33: "SRV", 35: "NAPTR", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 52: "TLSA",
             64: "SVCB", 65: "HTTPS", 99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY",
             257: "CAA"}
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
              5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
              10: "NOTZONE"}


class AppFields:
    """Sparse per-frame application fields (frame index -> values)."""

    def __init__(self):
        self.dns: dict[int, tuple] = {}       # i -> (name, qtype, rcode | None)
        self.http: dict[int, tuple] = {}      # i -> (method, domain, path)
        self.mb_idx = np.zeros(0, np.int64)   # Modbus frames
        self.mb_fc = np.zeros(0, np.int64)
        self.mb_unit = np.zeros(0, np.int64)
        self.mb_req = np.zeros(0, bool)
        self.arp: dict[int, tuple] = {}

    # ------------------------------------------------------------------ packet columns
    def packet_columns(self, d, pos: np.ndarray, n: int) -> dict[str, pa.Array]:
        """Columns for the packet table; ``pos[i]`` is the row of frame i (-1: no row)."""
        out: dict[str, pa.Array] = {}
        if self.arp:
            idx = sorted(self.arp)
            vals = [self.arp[i] for i in idx]
            rows = pos[np.asarray(idx, np.int64)]
            for name, text in (("operation", lambda v: v[0]),
                               ("sender_ip", lambda v: _ip4(v[1])),
                               ("sender_mac", lambda v: None if v[2] == NOMAC
                                else v[2].to_bytes(6, "big").hex(":")),
                               ("target_ip", lambda v: _ip4(v[3]))):
                out[f"cyberrange.arp.{name}"] = sparse_strings(n, rows, [text(v) for v in vals])
        if self.dns:
            idx = sorted(self.dns)
            vals = [self.dns[i] for i in idx]
            rows = pos[np.asarray(idx, np.int64)]
            for k, name in enumerate(("dns.question.name", "dns.question.type",
                                      "dns.response_code")):
                out[name] = sparse_strings(n, rows, [v[k] for v in vals])
        if self.http:
            idx = sorted(self.http)
            vals = [self.http[i] for i in idx]
            rows = pos[np.asarray(idx, np.int64)]
            for k, name in enumerate(("http.request.method", "url.domain", "url.path")):
                out[name] = sparse_strings(n, rows, [v[k] for v in vals])
        if len(self.mb_idx):
            rows = pos[self.mb_idx]
            for name, v in (("cyberrange.modbus.function_code", self.mb_fc),
                            ("cyberrange.modbus.unit_id", self.mb_unit)):
                full = np.full(n, -1, np.int64)
                full[rows] = v
                out[name] = pa.array(full, pa.int32(), mask=full < 0)
        return out

    # ------------------------------------------------------------------ flow columns
    def flow_columns(self, frame_flow: np.ndarray, nf: int) -> dict[str, pa.Array]:
        """Per-flow values: the first seen in capture order (Modbus: all request codes)."""
        out: dict[str, pa.Array] = {}
        for table, names in ((self.dns, ("dns.question.name", "dns.question.type")),
                             (self.http, ("http.request.method", "url.domain", "url.path"))):
            if not table:
                continue
            first: dict[int, tuple] = {}
            for i in sorted(table):
                f = int(frame_flow[i])
                if f >= 0 and f not in first and table[i][0] is not None:
                    first[f] = table[i]
            rows = np.asarray(list(first), np.int64)
            for k, name in enumerate(names):
                out[name] = sparse_strings(nf, rows, [v[k] for v in first.values()])
        if self.dns:
            rc: dict[int, str] = {}
            for i in sorted(self.dns):
                f = int(frame_flow[i])
                code = self.dns[i][2]
                if f >= 0 and code is not None and f not in rc:
                    rc[f] = code
            out["dns.response_code"] = sparse_strings(nf, np.asarray(list(rc), np.int64),
                                                      list(rc.values()))
        if len(self.mb_idx):
            req = self.mb_req
            fl = frame_flow[self.mb_idx[req]]
            fcs = self.mb_fc[req]
            units = self.mb_unit[req]
            codes: dict[int, set] = {}
            unit: dict[int, int] = {}
            for f, c, u in zip(fl.tolist(), fcs.tolist(), units.tolist()):
                if f < 0:
                    continue
                codes.setdefault(f, set()).add(c)
                unit.setdefault(f, u)
            lists = [None] * nf
            for f, s in codes.items():
                lists[f] = sorted(s)
            out["cyberrange.modbus.function_codes"] = pa.array(lists, pa.list_(pa.int32()))
            full = np.full(nf, -1, np.int64)
            for f, u in unit.items():
                full[f] = u
            out["cyberrange.modbus.unit_id"] = pa.array(full, pa.int32(), mask=full < 0)
        return out


def _ip4(v: int):
    return None if v < 0 else socket.inet_ntoa(struct.pack(">I", v))


def decode_app(d) -> AppFields:
    """Find and decode the application-layer fields of a ``decode.Decoded``."""
    app = AppFields()
    app.arp = d.arp
    raw = d.rec.raw
    buf = d.rec.buf
    has = d.ok & (d.pay_len > 0)
    if not has.any():
        return app
    tc = d.tcode
    sp, dp = d.sport, d.dport
    po, pl = d.pay_off, d.pay_len
    is_tcp = has & (tc == T_TCP)
    is_udp = has & (tc == T_UDP)
    # DNS
    dns_port = np.isin(sp, DNS_PORTS) | np.isin(dp, DNS_PORTS)
    for i in np.flatnonzero((is_udp | is_tcp) & dns_port & (pl >= 12)).tolist():
        start, length = int(po[i]), int(pl[i])
        data = bytes(raw[start:start + length])
        if tc[i] == T_TCP:
            data = data[2:]
        r = _dns(data)
        if r is not None:
            app.dns[i] = r
    # HTTP requests
    cand = np.flatnonzero(is_tcp & (pl >= 4))
    if len(cand):
        p = po[cand]
        first4 = ((buf[p].astype(np.int64) << 24) | (buf[p + 1].astype(np.int64) << 16)
                  | (buf[p + 2].astype(np.int64) << 8) | buf[p + 3])
        for i in cand[np.isin(first4, _METHOD_CODES)].tolist():
            start, length = int(po[i]), int(pl[i])
            r = _http(bytes(raw[start:start + min(length, 8192)]))
            if r is not None:
                app.http[i] = r
    # Modbus/TCP
    mb = np.flatnonzero(is_tcp & ((sp == MODBUS_PORT) | (dp == MODBUS_PORT)) & (pl >= 8))
    if len(mb):
        p = po[mb]
        proto_id = (buf[p + 2].astype(np.int64) << 8) | buf[p + 3]
        keep = proto_id == 0
        mb, p = mb[keep], p[keep]
        app.mb_idx = mb
        app.mb_unit = buf[p + 6].astype(np.int64)
        app.mb_fc = buf[p + 7].astype(np.int64)
        app.mb_req = dp[mb] == MODBUS_PORT
    return app


def _dns_name(data: bytes, pos: int):
    """A (possibly compressed) domain name at pos -> (text, position after it)."""
    labels = []
    end = None
    jumps = 0
    n = len(data)
    while True:
        if pos >= n:
            return None, None
        ln = data[pos]
        if ln == 0:
            pos += 1
            break
        if ln & 0xC0 == 0xC0:                      # compression pointer
            if pos + 1 >= n or jumps > 20:
                return None, None
            if end is None:
                end = pos + 2
            pos = ((ln & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            continue
        if ln & 0xC0 or pos + 1 + ln > n:
            return None, None
        labels.append(data[pos + 1:pos + 1 + ln].decode("ascii", "backslashreplace"))
        pos += 1 + ln
    return ".".join(labels) or ".", (end if end is not None else pos)


def _dns(data: bytes):
    """(first question name, type, response code or None) of a DNS message, or None."""
    if len(data) < 12:
        return None
    flags = (data[2] << 8) | data[3]
    qdcount = (data[4] << 8) | data[5]
    if qdcount == 0 or (flags >> 11) & 0xF > 6:    # no question, or not a DNS opcode
        return None
    name, pos = _dns_name(data, 12)
    if name is None or pos + 4 > len(data):
        return None
    qtype = (data[pos] << 8) | data[pos + 1]
    rcode = DNS_RCODES.get(flags & 0xF, str(flags & 0xF)) if flags & 0x8000 else None
    return (name, DNS_TYPES.get(qtype, str(qtype)), rcode)


def _http(data: bytes):
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) < 2 or parts[0].rstrip(b" ") not in {m.rstrip(b" ") for m in HTTP_METHODS} \
            and not parts[0].isalpha():
        return None
    method = parts[0].decode("latin-1")
    if not method.isalpha() or not method.isupper():
        return None
    target = parts[1].decode("latin-1", "replace")
    host = None
    for ln in lines[1:]:
        name, sep, value = ln.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1", "replace")
            break
    path = target
    if "://" in target:                                # absolute form (proxies)
        rest = target.split("://", 1)[1]
        auth, slash, tail = rest.partition("/")
        if host is None:
            host = auth
        path = slash + tail
    path = path.split("?", 1)[0].split("#", 1)[0] or None
    if method == "CONNECT":
        host = host or target
        path = None
    if host:
        if host.startswith("["):                       # [v6]:port
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
    return (method, host or None, path)
