"""Capture files in a run folder: which files each sensor wrote, their frames, and joining them.

A run folder keeps its captures under ``pcaps/``: ``<sensor>.pcap`` for a single-file sensor, a
folder ``pcaps/<sensor>/`` of ``<sensor>-%Y%m%d%H%M%S.pcap`` files for a rotating one (tcpdump's
``-C`` appends 1, 2, ... to a file of the same second). An ingested run holds the files it was
given, one sensor each (``.pcapng`` too).

* :func:`capture_files` lists a run's files per sensor, in capture order (:func:`rotation_key`);
* :func:`count_frames` walks a classic pcap's record headers (frames, and whether it ends in a
  record cut short);
* :func:`join_pcaps` concatenates one sensor's files into one stream, so that flows that cross a
  rotation are assembled once;
* :func:`tcpdump_counters` reads the counters tcpdump writes to its log.

These helpers are what analysis needs of the captures: drill analysis (``ingest.load``),
the reconciliation (``score/reconcile.py``) and the sensors that write the files
(``twin/sensors.py``) all use them. Standard library only.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

__all__ = [
    "CAPTURE_MAGICS",
    "CAPTURE_NAME",
    "PCAPNG_MAGIC",
    "capture_files",
    "count_frames",
    "join_pcaps",
    "rotation_key",
    "tcpdump_counters",
]

#: classic pcap magic -> struct byte order (either byte order, microseconds or nanoseconds)
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"                 # a pcapng section header block
CAPTURE_MAGICS = (*PCAP_MAGICS, PCAPNG_MAGIC)      # the first four bytes of any capture we read
CAPTURE_NAME = re.compile(r"\.pcap(ng)?\d*$")      # <sensor>.pcap, rotated <sensor>-<t>.pcap3


def rotation_key(path: Path) -> tuple:
    """Sort key of a rotated file: (name up to .pcap, -C counter). ``x.pcap`` < ``x.pcap1``."""
    m = re.match(r"^(.*\.pcap)(\d*)$", Path(path).name)
    if not m:
        return (Path(path).name, 0)
    return (m.group(1), int(m.group(2) or 0))


def capture_files(pcap_dir: Path) -> dict[str, list[Path]]:
    """Every sensor's capture files in ``pcap_dir``, in capture order.

    ``<sensor>.pcap`` is a single-file sensor; a folder ``<sensor>/`` holds a rotating one.
    Hidden files (joined streams being written) are ignored."""
    pcap_dir = Path(pcap_dir)
    out: dict[str, list[Path]] = {}
    if not pcap_dir.is_dir():
        return out
    for p in sorted(pcap_dir.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix in (".pcap", ".pcapng"):
            out.setdefault(p.stem, []).append(p)
        elif p.is_dir():
            files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                     and CAPTURE_NAME.search(f.name)]
            if files:
                out.setdefault(p.name, []).extend(sorted(files, key=rotation_key))
    return out


def count_frames(path: Path) -> dict:
    """Walk a classic pcap's record headers: ``{frames, bytes, complete_end, truncated}``.

    ``complete_end`` is the offset just after the last complete record; ``truncated`` is true
    when bytes follow it (a record cut short). pcapng and unknown files: ``frames`` None."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(24)
        endian = PCAP_MAGICS.get(head[:4])
        if endian is None or len(head) < 24:
            return {"frames": None, "bytes": size, "complete_end": 0, "truncated": size > 0}
        rec = struct.Struct(endian + "IIII")
        frames, off, buf = 0, 24, b""          # off: file offset of buf[0]
        while True:                            # large chunks; only the headers are looked at
            chunk = fh.read(1 << 22)
            if not chunk:
                break
            buf += chunk
            pos, n = 0, len(buf)
            while pos + 16 <= n:
                end = pos + 16 + rec.unpack_from(buf, pos)[2]
                if end > n:
                    break
                pos = end
                frames += 1
            off += pos
            buf = buf[pos:]
    return {"frames": frames, "bytes": size, "complete_end": off, "truncated": off < size}


def join_pcaps(files: list[Path], out: Path) -> dict:
    """Concatenate classic pcaps of one sensor (same link type) into ``out``: the first file's
    header, then every complete record of every file in order. A cut-short tail of a file is
    left out (it would misalign the next file) and counted. Returns ``{frames, files,
    truncated_files}``."""
    frames, truncated = 0, 0
    header = None
    with open(out, "wb") as dst:
        for f in files:
            c = count_frames(f)
            if c["frames"] is None:
                raise ValueError(f"{f}: not a classic pcap; cannot join")
            with open(f, "rb") as src:
                h = src.read(24)
                if header is None:
                    header = h
                    dst.write(h)
                elif h[:4] != header[:4] or h[20:24] != header[20:24]:
                    raise ValueError(f"{f}: byte order, resolution or link type differs")
                remaining = c["complete_end"] - 24
                while remaining > 0:
                    chunk = src.read(min(remaining, 1 << 22))
                    if not chunk:
                        break
                    dst.write(chunk)
                    remaining -= len(chunk)
            frames += c["frames"]
            truncated += bool(c["truncated"])
    return {"frames": frames, "files": len(files), "truncated_files": truncated}


def tcpdump_counters(text: str) -> dict:
    """The LAST statistics block tcpdump wrote to its stderr log (on SIGUSR1 or at exit)."""
    out = {}
    for key, pat in (("captured", r"(\d+) packets? captured"),
                     ("received_by_filter", r"(\d+) packets? received by filter"),
                     ("dropped_by_kernel", r"(\d+) packets? dropped by kernel")):
        found = re.findall(pat, text)
        out[key] = int(found[-1]) if found else None
    return out
