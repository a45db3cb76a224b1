"""Mission availability from a run's probes (``availability.jsonl``) alone: the scorecard's
``availability`` section and the store's ``availability`` table.

Per thread (a mission thread, or ``service:<node>:<proto>/<port>``), from its probes in time
order:

* ``probes``, ``ok`` and ``availability`` = ok / probes;
* ``first_down``: the time (epoch) of its first failed probe, null when none failed;
* ``down_s``: seconds the thread was down. It is down from a failed probe until its next ok
  probe (a probe of any of its pairs); down at its last probe, it stays down until the last
  probe of the whole file (the end of probing);
* ``latency_ms``: median latency of its ok probes.

``overall`` is the mean availability of the threads (each thread counts once, whatever its
number of probes or pairs); ``missions`` the same over mission threads only. ``start`` and
``end`` are the first and last probe times. The probes are written by
``blue/availability.py`` (format: docs/blue-team.md, "Mission availability").
"""
from __future__ import annotations

import math
from pathlib import Path
from statistics import median

import pyarrow as pa

from cyberrange.errors import UserError
from cyberrange.store.runlogs import AVAILABILITY_SCHEMA as STORE_AVAILABILITY_SCHEMA
from cyberrange.store.runlogs import json_lines

__all__ = [
    "FILE",
    "TABLE",
    "availability_section",
    "availability_table",
    "read_probes",
    "run_availability",
    "write_table",
]

FILE = "availability.jsonl"
TABLE = "availability"
_FIELDS = {"time": (int, float), "thread": (str,), "src": (str,), "dst": (str,),
           "ok": (bool,)}


def read_probes(path) -> list[dict]:
    """The probes of ``availability.jsonl``, checked: a line that is not a JSON object with a
    numeric ``time``, string ``thread``/``src``/``dst`` and boolean ``ok`` is a UserError
    naming the file and line (a file cut short in its last line, as a killed drill leaves it,
    loses only that line)."""
    out: list[dict] = []
    for n, rec in json_lines(path):
        for key, types in _FIELDS.items():
            v = rec.get(key)
            if not isinstance(v, types) or (key == "time" and (isinstance(v, bool)
                                                             or not math.isfinite(v))):
                raise UserError(f"{path}:{n}: '{key}' must be "
                                f"{'/'.join(t.__name__ for t in types)}")
        out.append(rec)
    return out


def availability_section(probes: list[dict], interval_s: float | None = None,
                         threads: dict | None = None) -> dict:
    """The scorecard's ``availability`` section. ``threads`` (optional: the plan the drill
    recorded, ``manifest["availability"]["threads"]``) adds threads that got no probe at all
    (availability null) and the kind of each thread; without it a thread is a service when its
    name starts with ``service:``."""
    threads = threads or {}
    probes = sorted(probes, key=lambda p: p["time"])
    end = probes[-1]["time"] if probes else None
    by_thread: dict[str, list[dict]] = {name: [] for name in threads}
    for p in probes:
        by_thread.setdefault(p["thread"], []).append(p)
    rows = {}
    for name, ps in by_thread.items():
        kind = (threads.get(name) or {}).get("kind") or \
            ("service" if name.startswith("service:") else "mission")
        rows[name] = _thread_row(ps, end, kind)

    def mean(kind=None):
        vals = [r["availability"] for r in rows.values()
                if r["availability"] is not None and (kind is None or r["kind"] == kind)]
        return round(sum(vals) / len(vals), 4) if vals else None
    return {"interval_s": interval_s, "threads": rows, "overall": mean(),
            "missions": mean("mission"), "probes": len(probes),
            "start": probes[0]["time"] if probes else None, "end": end}


def _thread_row(ps: list[dict], end: float | None, kind: str) -> dict:
    ok = sum(1 for p in ps if p["ok"])
    first_down, down_s, down_since = None, 0.0, None
    for p in ps:
        if not p["ok"]:
            if first_down is None:
                first_down = p["time"]
            if down_since is None:
                down_since = p["time"]
        elif down_since is not None:
            down_s += p["time"] - down_since
            down_since = None
    if down_since is not None and end is not None:
        down_s += end - down_since
    lat = [p["latency_ms"] for p in ps if p["ok"] and isinstance(p.get("latency_ms"), (int, float))]
    return {"kind": kind, "probes": len(ps), "ok": ok,
            "availability": round(ok / len(ps), 4) if ps else None,
            "first_down": first_down, "down_s": round(down_s, 3),
            "latency_ms": round(median(lat), 3) if lat else None}


# the store's table of mission probes (one schema for the scorer and the store)
AVAILABILITY_SCHEMA = STORE_AVAILABILITY_SCHEMA


def availability_table(probes: list[dict], run_id: str) -> pa.Table:
    """One row per probe, ECS names like the store's other tables."""
    cols = {
        "@timestamp": [int(p["time"] * 1_000_000) for p in probes],
        "cyberrange.thread": [p["thread"] for p in probes],
        "cyberrange.src_node": [p["src"] for p in probes],
        "cyberrange.dst_node": [p["dst"] for p in probes],
        "destination.ip": [p.get("dst_ip") for p in probes],
        "network.transport": [p.get("proto") for p in probes],
        "destination.port": [p.get("port") if isinstance(p.get("port"), int) else None
                             for p in probes],
        "event.outcome": ["success" if p["ok"] else "failure" for p in probes],
        "cyberrange.latency_ms": [float(p["latency_ms"]) if isinstance(
            p.get("latency_ms"), (int, float)) else None for p in probes],
        "error.message": [p.get("reason") if isinstance(p.get("reason"), str) else None
                          for p in probes],
        "cyberrange.run_id": [run_id] * len(probes),
    }
    arrays = [pa.array(cols["@timestamp"], pa.int64()).cast(AVAILABILITY_SCHEMA[0].type)]
    arrays += [pa.array(cols[f.name], f.type) for f in list(AVAILABILITY_SCHEMA)[1:]]
    return pa.Table.from_arrays(arrays, schema=AVAILABILITY_SCHEMA)


def write_table(db_path, table: pa.Table) -> int:
    """Replace this run's rows of the ``availability`` table in the DuckDB file ``db_path``
    (the run's store; the EventStore kinds are packets, flows and alerts, so this table is
    written beside them with DuckDB's Arrow ingestion)."""
    import duckdb
    con = duckdb.connect(str(db_path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        cols = ", ".join(f'"{f.name}" {_sql_type(f.type)}' for f in table.schema)
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})")
        runs = set(table.column("cyberrange.run_id").to_pylist())
        for rid in runs:
            con.execute(f'DELETE FROM {TABLE} WHERE "cyberrange.run_id" = ?', [rid])
        con.register("_incoming_availability", table)
        con.execute(f"INSERT INTO {TABLE} SELECT * FROM _incoming_availability")
        con.unregister("_incoming_availability")
    finally:
        con.close()
    return table.num_rows


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    return {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.float64(): "DOUBLE"}[t]


def run_availability(run_dir, manifest: dict, store_path=None) -> dict | None:
    """The section of a run folder (None when the drill recorded no probes: probing off, or a
    run from before); with ``store_path`` the table is written into that store too."""
    path = Path(run_dir) / FILE
    plan = manifest.get("availability") or {}
    if not path.exists():
        return None
    probes = read_probes(path)
    if store_path is not None:
        write_table(store_path, availability_table(probes, manifest.get("run_id") or ""))
    return availability_section(probes, plan.get("interval_s"), plan.get("threads"))
