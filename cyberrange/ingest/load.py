"""Captures -> packet and flow records -> an event store: the one way pcaps reach a store.

:func:`load_captures` parses captures and, given a store, appends their records to it. Every
caller goes through it:

* ``drill.analyse``: a run folder's ``pcaps/`` (each sensor's rotated files joined first);
* ``cyberrange.ingest``: capture files named on the command line, one sensor each;
* ``cyberrange detect run --pcap``: one file, into an in-memory store or ``--store``
  (``replace=True``: the run's earlier records and alerts go first);
* live mode (``ingest/live.py``): each closed file of a sensor as the drill runs, written
  under the ingest thread's lock.

The parsing itself is ``pcap.parse_pcaps``; what this module adds is where the captures come
from (a run folder or a list), errors that name the file, and the write.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from cyberrange.errors import UserError
from cyberrange.telemetry.files import capture_files, join_pcaps
from cyberrange.telemetry.pcap import parse_pcaps

__all__ = ["Loaded", "load_captures", "run_captures"]


@dataclass
class Loaded:
    """The records of some captures: ``packets, flows, stats = load_captures(...)`` works too.

    ``stats`` is ``parse_pcaps``'s (``frames``, ``packets``, ``bytes``, ``flows``, ``skipped``,
    per-file stats under ``files``); captures read from a run folder add ``sensors`` (the
    parser's counts per sensor, whatever number of files it wrote)."""

    packets: pa.Table
    flows: pa.Table
    stats: dict
    run_id: str

    def __iter__(self) -> Iterator:
        return iter((self.packets, self.flows, self.stats))

    def store_into(self, store, *, replace: bool = False, lock=None) -> None:
        """Append the packet and flow records to ``store`` (an ``EventStore``). ``replace``:
        first delete the run's packets, flows and alerts (alerts are made from the records they
        replace). ``lock``: held while writing (live mode shares the store with a reader)."""
        with lock if lock is not None else nullcontext():
            if replace:
                for kind in ("packets", "flows", "alerts"):
                    store.delete(kind, self.run_id)
            store.write("packets", self.packets)
            store.write("flows", self.flows)


def load_captures(captures: str | os.PathLike | Iterable[tuple[str | os.PathLike, str]],
                  run_id: str, store=None, *, replace: bool = False,
                  lock=None, **parse_kwargs) -> Loaded:
    """Parse ``captures`` into records of run ``run_id``; with ``store``, append them to it
    (see ``Loaded.store_into`` for ``replace`` and ``lock``).

    ``captures`` is a run folder's ``pcaps/`` folder (every sensor in it, see
    :func:`run_captures`) or ``(path, observer)`` pairs (each file its own stream of that
    sensor). A file that cannot be read is a UserError naming it; frames that cannot be decoded
    are counted in ``stats["skipped"]``, never an error. ``parse_kwargs`` go to ``parse_pcap``
    (flow timeouts)."""
    if isinstance(captures, (str, os.PathLike)):
        with run_captures(captures) as items:
            packets, flows, stats = _parse(items, run_id, parse_kwargs)
        stats["sensors"] = _per_sensor(items, stats)
    else:
        packets, flows, stats = _parse(list(captures), run_id, parse_kwargs)
    loaded = Loaded(packets, flows, stats, run_id)
    if store is not None:
        loaded.store_into(store, replace=replace, lock=lock)
    return loaded


@contextmanager
def run_captures(pcap_dir: str | os.PathLike) -> Iterator[list[tuple[Path, str]]]:
    """The ``(path, sensor)`` streams of a run's ``pcaps/`` folder, one per sensor.

    A rotating sensor's files are joined (in capture order, complete records only) into one
    hidden temporary pcap beside them, removed when the block ends, so that a flow that crossed
    a rotation is assembled once, exactly as in a single-file capture. Files that cannot be
    joined (pcapng, mixed link types) are streams of their own."""
    pcap_dir = Path(pcap_dir)
    items, temps = [], []
    try:
        for name, files in capture_files(pcap_dir).items():
            if len(files) == 1:
                items.append((files[0], name))
                continue
            joined = pcap_dir / f".joined-{name}.pcap"
            try:
                join_pcaps(files, joined)
            except ValueError:                      # not joinable (pcapng, mixed link types)
                joined.unlink(missing_ok=True)
                items += [(f, name) for f in files]
                continue
            temps.append(joined)
            items.append((joined, name))
        yield items
    finally:
        for t in temps:
            t.unlink(missing_ok=True)


def _parse(items: list, run_id: str, parse_kwargs: dict):
    """``parse_pcaps``, with a file that cannot be read named in a UserError."""
    try:
        return parse_pcaps(items, run_id, **parse_kwargs)
    except (ValueError, OSError) as exc:
        where = (items[0][0] if len(items) == 1 else getattr(exc, "filename", None)
                 or ", ".join(str(p) for p, _ in items))
        raise UserError(f"cannot read capture: {exc}", file=str(where)) from None


def _per_sensor(items: list, stats: dict) -> dict[str, dict]:
    """The parser's frames, packets and skipped frames summed per sensor."""
    per: dict[str, dict] = {}
    by_path = {str(p): n for p, n in items}
    for path, s in (stats.get("files") or {}).items():
        d = per.setdefault(by_path.get(str(path), Path(path).stem),
                           {"frames": 0, "packets": 0, "skipped": {}})
        d["frames"] += s.get("frames", 0)
        d["packets"] += s.get("packets", 0)
        for k, v in (s.get("skipped") or {}).items():
            d["skipped"][k] = d["skipped"].get(k, 0) + v
    return per
