"""Capture files -> arrays of record positions (classic pcap and pcapng), without decoding frames.

``read_capture(path)`` reads the whole file once, into a zero-padded ``numpy`` array (``buf``, so
that vectorized reads a few bytes past a short frame never leave the array; ``raw`` is a
memoryview of the same bytes without the padding), and returns a ``Records`` object with one
array entry per frame record: where its bytes start (``off``), how many were captured
(``caplen``), its length on the wire (``wirelen``), its timestamp in microseconds UTC (``ts``) and
its link type (``linktype``; pcapng files have one per interface).

Records the reader cannot use are counted in ``skipped`` and are not in the arrays:

* ``truncated-record``: the file ends inside a record header or record body (also garbage after
  the last record); reading stops there.
* ``bad-pcapng-block``: a pcapng block with an impossible length; reading stops there.

Every reader-level skip counts as one frame (the unreadable rest of the file is one record we
could not use), so ``packets + sum(skipped) == frames`` holds for any input.
* ``unknown-interface``: a pcapng packet block names an interface that was never described.
* ``bad-record-length``: a pcapng packet block whose captured length does not fit the block.

``frames`` counts every frame record the file holds, used or not.
"""
from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

PAD = 256            # zero bytes after the file: vectorized header reads never index out of range


@dataclass
class Records:
    raw: memoryview
    buf: np.ndarray
    off: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts: np.ndarray
    linktype: np.ndarray
    frames: int
    skipped: Counter = field(default_factory=Counter)
    format: str = "pcap"

    def __len__(self):
        return len(self.off)


def _empty(buf=None, raw=memoryview(b""), fmt="pcap", skipped=None, frames=0) -> Records:
    z = np.zeros(0, np.int64)
    if buf is None:
        buf = np.zeros(PAD, np.uint8)
    return Records(raw, buf, z, z.copy(), z.copy(), z.copy(), z.copy(), frames,
                   skipped if skipped is not None else Counter(), fmt)


def read_capture(path: str | os.PathLike) -> Records:
    """Read a capture file (pcap in either byte order, µs or ns; pcapng)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size == 0:
        return _empty()
    buf = np.zeros(size + PAD, np.uint8)              # one copy of the file, read in place
    with open(path, "rb") as fh:
        got = fh.readinto(memoryview(buf)[:size])
    raw = memoryview(buf)[:got]
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        return _read_pcapng(buf, raw, path)
    return _read_pcap(buf, raw, path)


def _read_pcap(buf: np.ndarray, raw: memoryview, path: str) -> Records:
    size = len(raw)
    if size < 24:
        raise UserError("not a pcap file (shorter than a pcap header)", file=path)
    magic = raw[:4]
    magic = bytes(magic)
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, nano = "<", False
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian, nano = ">", False
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, nano = "<", True
    elif magic == b"\xa1\xb2\x3c\x4d":
        endian, nano = ">", True
    else:
        raise UserError(f"not a pcap or pcapng file (magic {magic.hex()})", file=path)
    linktype = struct.unpack_from(endian + "I", raw, 20)[0] & 0x0FFFFFFF
    skipped: Counter = Counter()
    # walk the record headers: the only per-record Python work of the whole parser
    u32 = struct.Struct(endian + "I").unpack_from
    offs: list[int] = []
    app = offs.append
    off = 24
    lim = size - 16
    while off <= lim:
        app(off)
        off += 16 + u32(raw, off + 8)[0]
    if off > size:                     # the last record's body runs past the end of the file
        offs.pop()
        skipped["truncated-record"] += 1
    elif off < size:                   # a partial record header (or garbage) at the end
        skipped["truncated-record"] += 1
    frames = len(offs) + skipped["truncated-record"]
    if not offs:
        return _empty(buf, raw, "pcap", skipped, frames)
    o = np.asarray(offs, np.int64)
    hdr = np.lib.stride_tricks.sliding_window_view(buf, 16)[o].view(endian + "u4")
    sec = hdr[:, 0].astype(np.int64)
    frac = hdr[:, 1].astype(np.int64)
    ts = sec * 1_000_000 + ((frac + 500) // 1000 if nano else frac)
    return Records(raw, buf, o + 16, hdr[:, 2].astype(np.int64), hdr[:, 3].astype(np.int64), ts,
                   np.full(len(o), linktype, np.int64), frames, skipped, "pcap")


def _tsresol_units(v: int) -> int:
    """Units per second of a pcapng if_tsresol option value."""
    if v & 0x80:
        return 1 << (v & 0x7F)
    return 10 ** v


def _read_pcapng(buf: np.ndarray, raw: memoryview, path: str) -> Records:
    size = len(raw)
    skipped: Counter = Counter()
    offs, caps, wires, tss, lts = [], [], [], [], []
    frames = 0
    endian = "<"
    ifaces: list[tuple[int, int, int, int]] = []     # (linktype, units per second, offset s, snaplen)
    off = 0
    while off < size:
        if off + 12 > size:
            skipped["truncated-record"] += 1
            frames += 1
            break
        btype = struct.unpack_from(endian + "I", raw, off)[0]
        if raw[off:off + 4] == b"\x0a\x0d\x0d\x0a":        # section header: byte order, new interfaces
            bom = raw[off + 8:off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                if off == 0:
                    raise UserError("bad pcapng file: unknown byte-order magic", file=path)
                skipped["bad-pcapng-block"] += 1
                frames += 1
                break
            btype = 0x0A0D0D0A
            ifaces = []
        blen = struct.unpack_from(endian + "I", raw, off + 4)[0]
        if blen < 12 or blen % 4:
            if off == 0:
                raise UserError("bad pcapng file: bad section header length", file=path)
            skipped["bad-pcapng-block"] += 1
            frames += 1
            break
        if off + blen > size:
            skipped["truncated-record"] += 1
            frames += 1
            break
        if btype == 1 and blen >= 20:                       # interface description
            lt, _res, snap = struct.unpack_from(endian + "HHI", raw, off + 8)
            units, tsoff = 1_000_000, 0
            p, end = off + 16, off + blen - 4
            while p + 4 <= end:
                code, olen = struct.unpack_from(endian + "HH", raw, p)
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    units = _tsresol_units(raw[p + 4])
                elif code == 14 and olen >= 8:
                    tsoff = struct.unpack_from(endian + "q", raw, p + 4)[0]
                p += 4 + ((olen + 3) & ~3)
            ifaces.append((lt, units or 1_000_000, tsoff, snap))
        elif btype in (6, 2) and blen >= 32:                # enhanced / obsolete packet block
            frames += 1
            if btype == 6:
                ifid, tsh, tsl, cap, wire = struct.unpack_from(endian + "IIIII", raw, off + 8)
            else:
                ifid, _drops, tsh, tsl, cap, wire = struct.unpack_from(endian + "HHIIII", raw,
                                                                       off + 8)
            if ifid >= len(ifaces):
                skipped["unknown-interface"] += 1
            elif 28 + cap + 4 > blen:
                skipped["bad-record-length"] += 1
            else:
                lt, units, tsoff, _snap = ifaces[ifid]
                t = (tsh << 32) | tsl
                ts_us = (t * 1_000_000 + units // 2) // units if units != 1_000_000 else t
                offs.append(off + 28)
                caps.append(cap)
                wires.append(wire)
                tss.append(ts_us + tsoff * 1_000_000)
                lts.append(lt)
        elif btype == 3 and blen >= 16:                     # simple packet block: no timestamp
            frames += 1
            if not ifaces:
                skipped["unknown-interface"] += 1
            else:
                lt, _units, _tsoff, snap = ifaces[0]
                wire = struct.unpack_from(endian + "I", raw, off + 8)[0]
                cap = min(wire, blen - 16, snap or wire)
                offs.append(off + 12)
                caps.append(cap)
                wires.append(wire)
                tss.append(tss[-1] if tss else 0)
                lts.append(lt)
        off += blen
    if not offs:
        return _empty(buf, raw, "pcapng", skipped, frames)
    a = lambda x: np.asarray(x, np.int64)  # noqa: E731
    return Records(raw, buf, a(offs), a(caps), a(wires), a(tss), a(lts), frames, skipped,
                   "pcapng")
