"""Run logs in the store: mission availability probes and DDIL link events.

Two files of a run folder that are not telemetry become store kinds beside the records of
``cyberrange.telemetry.schema`` (``STORE_SCHEMAS`` lists every kind a store holds):

| kind | one row per | from |
|---|---|---|
| ``availability`` | mission probe (``blue/availability.py``) | ``availability.jsonl`` |
| ``link_events`` | state change of a link (``twin/ddil.py``) | ``logs/links.jsonl`` |

``run_log_tables(run_dir, run_id)`` reads both files of a run into Arrow tables of these
schemas; ``store_run_logs(store, tables)`` puts them into a store (replacing the run's earlier
rows). ``drill.analyse`` does both at the end of a drill, and ``cyberrange store push`` sends
the rows to Elasticsearch.

**Ground truth.** ``logs/links.jsonl`` is exercise control's record. A link event's
``cyberrange.reason`` says why the link changed, and for an adversary's jamming step it names
the step and its technique (``step jam-los (CR-J0001 ...)``); ``cyberrange.link.state``
``jammed`` names the cause: labels, like the ledger (which the Elasticsearch backend also holds,
``<prefix>-ledger``). ``cyberrange.link.observed_state`` is what the defender's monitoring
sees of the same change (``blue/watch_links.defender_view``: a jammed link is ``down``, a
degradation the twin could not emulate is ``up``): the field for a blue team's dashboard.
Detectors read flows and packets only (the incident correlator: alerts and signals), never
these kinds; ``tests/store/test_run_logs.py`` runs the detectors and the correlator over a
store that holds both and checks that neither kind is read. They are for after-action review,
the blue team's dashboards and availability scoring.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa

from ..errors import UserError
from ..telemetry.schema import RECORD_SCHEMAS, SCHEMAS, TS

__all__ = ["AVAILABILITY_FILE", "AVAILABILITY_SCHEMA", "LINKS_FILE", "LINK_EVENT_SCHEMA",
           "LINK_VALUES", "RUN_LOG_SCHEMAS", "STORE_RECORD_SCHEMAS", "STORE_SCHEMAS", "as_number",
           "json_lines", "read_link_events", "store_run_logs"]

AVAILABILITY_FILE = "availability.jsonl"
LINKS_FILE = "logs/links.jsonl"

#: one row per mission probe; ``cyberrange.score.availability`` uses this schema (its
#: ``write_table`` writes the table with a positional INSERT)
AVAILABILITY_SCHEMA = pa.schema([
    ("@timestamp", TS),                             # when the probe started
    ("cyberrange.thread", pa.string()),             # mission name | service:<node>:<proto>/<port>
    ("cyberrange.src_node", pa.string()),           # the probing node
    ("cyberrange.dst_node", pa.string()),
    ("destination.ip", pa.string()),
    ("network.transport", pa.string()),
    ("destination.port", pa.int32()),
    ("event.outcome", pa.string()),                 # success | failure (ECS)
    ("cyberrange.latency_ms", pa.float64()),
    ("error.message", pa.string()),                 # why a probe failed
    ("cyberrange.run_id", pa.string()),
])

#: one row per link state change (``logs/links.jsonl``: t, zone, state, values, reason, notes)
LINK_EVENT_SCHEMA = pa.schema([
    ("@timestamp", TS),                             # when the state changed
    ("event.end", TS),                              # the link's next change (null: none)
    ("event.duration", pa.int64()),                 # nanoseconds until then (ECS), or null
    ("cyberrange.link.name", pa.string()),          # the zone or point-to-point link
    ("cyberrange.link.state", pa.string()),         # up | down | jammed | degraded (control's)
    ("cyberrange.link.observed_state", pa.string()),  # up | degraded | down (the defender's)
    ("cyberrange.link.delay_ms", pa.float64()),     # degraded: the values set, else null
    ("cyberrange.link.jitter_ms", pa.float64()),
    ("cyberrange.link.loss_pct", pa.float64()),
    ("cyberrange.link.bandwidth_mbit", pa.float64()),
    ("cyberrange.notes", pa.list_(pa.string())),    # what could not be emulated here
    ("cyberrange.reason", pa.string()),             # why (ground truth for a jamming step)
    ("cyberrange.run_id", pa.string()),
])

RUN_LOG_SCHEMAS = {"availability": AVAILABILITY_SCHEMA, "link_events": LINK_EVENT_SCHEMA}
#: every kind a store holds: its core columns
STORE_SCHEMAS = {**SCHEMAS, **RUN_LOG_SCHEMAS}
#: every kind a store holds: every column it may carry
STORE_RECORD_SCHEMAS = {**RECORD_SCHEMAS, **RUN_LOG_SCHEMAS}

LINK_STATES = ("up", "down", "jammed", "degraded")        # twin.ddil.STATES
LINK_VALUES = {"delay": "cyberrange.link.delay_ms", "jitter": "cyberrange.link.jitter_ms",
           "loss": "cyberrange.link.loss_pct", "bandwidth": "cyberrange.link.bandwidth_mbit"}


def as_number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def json_lines(path):
    """``(line number, object)`` for every non-empty line of a JSON-lines run log; a line that is
    not a JSON object is a UserError naming the file and line, except a last line cut short
    (a killed drill leaves one), which is left out."""
    path = Path(path)
    lines = path.read_text(errors="replace").split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if n == len(lines):                     # the last line, without its newline
                return
            raise UserError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path}:{n}: not a JSON object")
        yield n, rec


def read_link_events(path) -> list[dict]:
    """The records of ``logs/links.jsonl``, checked: a line that is not a JSON object with a
    finite number ``t``, a string ``zone`` and a known ``state`` is a UserError naming the file, the
    line and the key (a last line cut short, as a killed drill leaves it, is left out)."""
    out = []
    for n, rec in json_lines(path):
        if as_number(rec.get("t")) is None:
            raise UserError(f"{path}:{n}: 't' must be a number (epoch seconds)")
        if not isinstance(rec.get("zone"), str):
            raise UserError(f"{path}:{n}: 'zone' must be a string")
        if rec.get("state") not in LINK_STATES:
            raise UserError(f"{path}:{n}: 'state' must be one of {', '.join(LINK_STATES)}")
        if not isinstance(rec.get("values") or {}, dict):
            raise UserError(f"{path}:{n}: 'values' must be an object")
        out.append(rec)
    return out


def store_run_logs(store, tables: dict[str, pa.Table | None], run_id: str) -> dict[str, int]:
    """Write the tables of ``run_log_tables`` into ``store``, replacing the run's earlier rows
    of each kind given; returns the rows written per kind."""
    out = {}
    for kind, table in tables.items():
        if table is None or not store.has(kind):
            continue
        store.delete(kind, run_id)
        out[kind] = store.write(kind, table)
    return out
