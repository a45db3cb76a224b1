"""Capture files -> a run folder that detectors and scoring can use, without a twin.

``ingest_pcaps`` makes a run of kind ``ingest``: the files are placed under ``RUN/pcaps/`` (one
sensor each, named after the file or ``observer``), parsed into the run's store
(``ingest.load.load_captures``, as drills do) and the run is sealed. The run has no ledger,
so ``cyberrange drill score RUN`` gives a scorecard without steps that still counts alerts and
flows. ``cyberrange ingest`` (``cli/ingest.py``) prints what this returns.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.telemetry.files import CAPTURE_MAGICS, PCAPNG_MAGIC

__all__ = ["ingest_pcaps"]


def _observer_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "pcap"
    return name


def _place(src: Path, dst: Path, mode: str) -> str:
    """Put the capture into the run: hard link (same file system), else copy; or symlink."""
    if mode == "symlink":
        dst.symlink_to(src.resolve())
        return "symlink"
    if mode == "link":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def _sources(files: list[str], observer: str | None) -> list[tuple[Path, str, str]]:
    """``(file, sensor name, suffix)`` of every capture, checked before a run folder is made."""
    if not files:
        raise UserError("no capture file given")
    if observer and len(files) > 1:
        raise UserError("--observer names one sensor; give one file, or leave it out "
                        "(each file is then a sensor named after the file)")
    srcs = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise UserError("no such file", file=f)
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head and head not in CAPTURE_MAGICS:
            raise UserError(f"not a pcap or pcapng file (magic {head.hex()})", file=f)
        srcs.append((p, _observer_name(observer or p.stem),
                     ".pcapng" if head == PCAPNG_MAGIC else ".pcap"))
    names = [n for _, n, _ in srcs]
    if len(set(names)) != len(names):
        raise UserError("two files would make the same sensor name: " + ", ".join(names))
    return srcs


def _summary_queries(store) -> tuple[list[dict], list[dict]]:
    """Top talkers (by bytes, both directions) and flows per transport, from the store."""
    talkers = store.query(
        'SELECT ip, sum(n) AS flows, sum(p) AS packets, sum(b) AS bytes FROM ('
        ' SELECT "source.ip" AS ip, count(*) AS n, sum("network.packets") AS p,'
        '   sum("network.bytes") AS b FROM flows GROUP BY 1'
        ' UNION ALL SELECT "destination.ip", count(*), sum("network.packets"),'
        '   sum("network.bytes") FROM flows GROUP BY 1)'
        ' GROUP BY ip ORDER BY bytes DESC, ip LIMIT 10').to_pylist()
    transports = store.query(
        'SELECT "network.transport" AS transport, count(*) AS flows FROM flows '
        'GROUP BY 1 ORDER BY 2 DESC').to_pylist()
    return talkers, transports


def ingest_pcaps(files: list[str], runs_dir: str = "runs", observer: str | None = None,
                 mode: str = "link", label: str | None = None):
    """Create a run from capture files and fill its store; returns ``(run, stats, summary)``.

    ``mode``: ``link`` (hard link, else copy), ``copy`` or ``symlink``."""
    from cyberrange.run import Run
    from cyberrange.store import open_store
    from cyberrange.ingest.load import load_captures
    srcs = _sources(files, observer)
    t0 = time.monotonic()
    run = Run.create(runs_dir, label or _observer_name("ingest-" + srcs[0][0].stem)[:40],
                     {f"pcap:{n}": str(p) for p, n, _ in srcs})
    pdir = run.dir / "pcaps"
    pdir.mkdir()
    (run.dir / "logs").mkdir(exist_ok=True)
    placed = {}
    items = []
    for p, n, suffix in srcs:
        dst = pdir / f"{n}{suffix}"            # what the drill analysis reads: pcaps/<sensor>.pcap
        placed[n] = {"source": str(p.resolve()), "how": _place(p, dst, mode)}
        items.append((dst, n))
    t1 = time.monotonic()
    loaded = load_captures(items, run.id)
    packets, flows, stats = loaded
    t2 = time.monotonic()
    with open_store(run.store_path) as store:
        loaded.store_into(store)
        talkers, transports = _summary_queries(store)
    t3 = time.monotonic()
    stats = dict(stats)
    stats["files"] = {Path(k).name: v for k, v in stats.get("files", {}).items()}
    # (not "sensors": that key holds tcpdump's counters of a drill's live sensors)
    run.manifest.update(kind="ingest", captures=placed,
                        telemetry={"packets": packets.num_rows, "flows": flows.num_rows,
                                   "parser": stats})
    run.manifest["timings"].update(copy_s=round(t1 - t0, 3), telemetry_s=round(t2 - t1, 3),
                                   store_s=round(t3 - t2, 3), total_s=round(t3 - t0, 3))
    run.seal()                          # `drill verify` can then tell a changed capture
    run.finish("ingested")
    summary = {"run_id": run.id, "run_dir": str(run.dir), "packets": packets.num_rows,
               "flows": flows.num_rows, "frames": stats["frames"], "bytes": stats["bytes"],
               "skipped": stats["skipped"], "top_talkers": talkers, "transports": transports,
               "timings": run.manifest["timings"]}
    return run, stats, summary
