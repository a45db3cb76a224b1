"""Run logs read from a run folder into store tables: mission probes (``availability.jsonl``)
and DDIL link changes (``logs/links.jsonl``). Their columns, the file reader's checks and the
writing into a store are ``cyberrange/store/runlogs.py``; the rows are built here, above both
the scorer (``score/availability.py`` owns the probes' reader) and the watch
(``blue/watch_links.defender_view``: one rule for what the defender sees of a link change), so
that the store never imports either.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..score.availability import availability_table, read_probes
from ..store.runlogs import (
    AVAILABILITY_FILE,
    AVAILABILITY_SCHEMA,
    LINK_EVENT_SCHEMA,
    LINK_VALUES,
    LINKS_FILE,
    as_number,
    read_link_events,
)
from .watch_links import defender_view

__all__ = ["link_events_table", "run_log_tables"]


def link_events_table(records: list[dict], run_id: str) -> pa.Table:
    """One row per change, in file order; ``event.end`` is the same link's next change."""
    rows = []
    for k, r in enumerate(records):
        t = float(r["t"])
        end = next((float(x["t"]) for x in records[k + 1:] if x["zone"] == r["zone"]), None)
        values = r.get("values") or {}
        notes = r.get("notes")
        row = {"@timestamp": _us(t), "event.end": None if end is None else _us(end),
               "cyberrange.link.observed_state": defender_view(r)["state"],
               "event.duration": None if end is None else round((end - t) * 1e9),
               "cyberrange.link.name": r["zone"], "cyberrange.link.state": r["state"],
               "cyberrange.notes": [str(x) for x in notes] if isinstance(notes, list) else [],
               "cyberrange.reason": r.get("reason") if isinstance(r.get("reason"), str)
               else None,
               "cyberrange.run_id": run_id}
        for key, col in LINK_VALUES.items():
            row[col] = as_number(values.get(key))
        rows.append(row)
    arrays = []
    for f in LINK_EVENT_SCHEMA:
        vals = [row[f.name] for row in rows]
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(vals, pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(vals, f.type))
    return pa.Table.from_arrays(arrays, schema=LINK_EVENT_SCHEMA)


def _us(t: float) -> int:
    return round(t * 1_000_000)


def run_log_tables(run_dir, run_id: str) -> dict[str, pa.Table | None]:
    """``{"availability": table, "link_events": table}`` of a run folder; None for a file the
    run does not have (probing off, no DDIL schedule or jamming, a run from before). Bad lines
    are UserErrors naming file:line:key (``read_link_events``, ``score.availability.read_probes``)."""
    run_dir = Path(run_dir)
    out: dict[str, pa.Table | None] = {"availability": None, "link_events": None}
    probes = run_dir / AVAILABILITY_FILE
    if probes.is_file():
        out["availability"] = availability_table(read_probes(probes), run_id) \
            .cast(AVAILABILITY_SCHEMA)
    links = run_dir / LINKS_FILE
    if links.is_file():
        out["link_events"] = link_events_table(read_link_events(links), run_id)
    return out
