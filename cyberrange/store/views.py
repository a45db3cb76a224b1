"""Plain snake_case views over a run's DuckDB store, for people writing SQL by hand.

The store keeps the ECS names as column names (``"source.ip"``), which SQL must quote. These
views rename every column to snake_case so that no quoting is needed::

    SELECT source_ip, count(*) FROM flows GROUP BY source_ip

Renaming: ``@timestamp`` -> ``timestamp``, ``threat.technique.id`` -> ``technique_id``,
``cyberrange.technique.variant`` -> ``technique_variant``, ``threat.tactic.name`` ->
``tactic_name``; otherwise the ``cyberrange.`` prefix goes and dots become underscores
(``cyberrange.tcp_state`` -> ``tcp_state``, ``dns.question.name`` -> ``dns_question_name``).

The views live in an in-memory database that attaches the store file read-only, so they never
change the run's store and their names (``flows``, ``alerts``) may be the same as the store's
own tables. ``docs/hunting-queries.md`` lists them with example queries.

``availability`` (mission probes) comes from the store's table when it holds the run's probes,
else from the run's ``availability.jsonl``; ``link_events`` (DDIL link changes) from the store.
"""
from __future__ import annotations

import io
import json
import os
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from ..errors import UserError
from .runlogs import STORE_SCHEMAS

__all__ = ["RENAMES", "open_views", "snake", "view_columns"]

#: names that the general rule (drop ``cyberrange.``, dots -> underscores) would make awkward
RENAMES = {"@timestamp": "timestamp", "threat.technique.id": "technique_id",
           "cyberrange.technique.variant": "technique_variant",
           "threat.tactic.name": "tactic_name"}

#: view -> (store tables to take it from, first found; a WHERE clause or None; columns or None)
_DNS_COLS = ("@timestamp", "observer.name", "source.ip", "source.port", "destination.ip",
             "destination.port", "network.transport", "dns.question.name", "dns.question.type",
             "dns.response_code", "cyberrange.flow_id", "cyberrange.run_id")
_HTTP_COLS = ("@timestamp", "observer.name", "source.ip", "source.port", "destination.ip",
              "destination.port", "http.request.method", "url.domain", "url.path",
              "cyberrange.flow_id", "cyberrange.run_id")
VIEWS = {
    "packets": (("packet_records", "packets"), None, None),
    "flows": (("flow_records", "flows"), None, None),
    "alerts": (("alerts",), None, None),
    "signals": (("signals",), None, None),
    "incidents": (("incidents",), None, None),
    "dns": (("packet_records",), '"dns.question.name" IS NOT NULL', _DNS_COLS),
    "http": (("packet_records",), '"http.request.method" IS NOT NULL', _HTTP_COLS),
    "arp_bindings": (("arp_bindings",), None, None),
    "link_events": (("link_events",), None, None),
}


def snake(name: str) -> str:
    """The snake_case name of a column (module doc)."""
    if name in RENAMES:
        return RENAMES[name]
    return name.removeprefix("cyberrange.").replace(".", "_").replace("@", "")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: an old run's ``threat.technique.id`` ("unknown", a variant ``T1046-udp``) read as today's
#: (ATT&CK id or null; ``cyberrange/ecs.py``)
_TECHNIQUE = ("CASE WHEN regexp_full_match({c}, 'T[0-9]{{4}}([.][0-9]{{3}})?') THEN {c} "
              "WHEN regexp_matches({c}, '^T[0-9]{{4}}([.][0-9]{{3}})?-') "
              "THEN split_part({c}, '-', 1) END")


def _select(columns: list[str]) -> str:
    names = [snake(c) for c in columns]
    if len(set(names)) != len(names):                 # two columns would share a name
        names = [c.replace(".", "_").replace("@", "") for c in columns]
    return ", ".join(f"{_TECHNIQUE.format(c=_q(c)) if c == 'threat.technique.id' else _q(c)} "
                     f"AS {n}" for c, n in zip(columns, names))


def open_views(store_path: str | os.PathLike, ledger: list[dict] | None = None,
               availability: str | os.PathLike | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store attached read-only as ``store`` and the
    snake_case views (``VIEWS``; ``ledger`` and ``ledger_flows`` when ledger records are given,
    either spelling, see ``attack.ledger``; ``availability`` from a run's mission probes,
    ``availability.jsonl``, when its path is given: empty when the run has no such file)."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    path = str(store_path).replace("'", "''")
    try:
        con.execute(f"ATTACH '{path}' AS store (READ_ONLY)")
    except duckdb.Error as exc:
        con.close()
        raise UserError(f"not a readable DuckDB store ({str(exc).splitlines()[0]})",
                        file=str(store_path)) from None
    have: dict[str, list[str]] = {}
    for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = 'store' AND table_schema = 'main' "
            "ORDER BY table_name, ordinal_position").fetchall():
        have.setdefault(table, []).append(column)
    for view, (sources, where, wanted) in VIEWS.items():
        source = next((s for s in sources if s in have), None)
        if source is None and view in STORE_SCHEMAS:  # a store from before the kind existed
            source = f"_empty_{view}"
            con.register(source, STORE_SCHEMAS[view].empty_table())
            have[source] = STORE_SCHEMAS[view].names
        if source is None:
            continue
        cols = [c for c in (wanted or have[source]) if c in have[source]]
        where_from = _q(source) if source.startswith("_") else f"store.main.{_q(source)}"
        sql = f"CREATE VIEW {view} AS SELECT {_select(cols)} FROM {where_from}"
        con.execute(sql + (f" WHERE {where}" if where else ""))
    if ledger is not None:
        _ledger_views(con, ledger)
    if "availability" in have and con.execute(
            "SELECT count(*) FROM store.main.availability").fetchall()[0][0]:
        con.execute(f"CREATE VIEW availability AS SELECT {_AVAILABILITY_FROM_STORE} "
                    "FROM store.main.availability")
    elif availability is not None:                   # no probes in the run: an empty view
        _availability_view(con, availability)
    return con


#: the store's ``availability`` table under the view's names (those of the probe file's
#: fields, which queries and docs/hunting-queries.md use), then its other columns
_AVAILABILITY_FROM_STORE = (
    '"@timestamp" AS timestamp, "cyberrange.thread" AS thread, '
    '"cyberrange.src_node" AS source_node, "cyberrange.dst_node" AS destination_node, '
    '"destination.ip" AS destination_ip, "network.transport" AS network_transport, '
    'CAST("destination.port" AS BIGINT) AS destination_port, '
    '"event.outcome" = \'success\' AS ok, "cyberrange.latency_ms" AS latency_ms, '
    '"error.message" AS reason, "event.outcome" AS event_outcome, '
    '"cyberrange.run_id" AS run_id')


def _availability_view(con, path) -> None:
    """One row per mission probe (``blue/availability.py``) from the run's probe file, for a
    store that does not hold them (a run analysed before the store had them); lines that are
    not whole JSON objects (a probe file being written) are left out."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") if os.path.isfile(path) else \
            io.StringIO() as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if not isinstance(r, dict) or not isinstance(r.get("time"), (int, float)):
                continue
            rows.append({"timestamp": datetime.fromtimestamp(r["time"], timezone.utc),
                         "thread": r.get("thread"), "source_node": r.get("src"),
                         "destination_node": r.get("dst"), "destination_ip": r.get("dst_ip"),
                         "network_transport": r.get("proto"), "destination_port": r.get("port"),
                         "ok": bool(r.get("ok")), "latency_ms": r.get("latency_ms"),
                         "reason": r.get("reason")})
    schema = pa.schema([("timestamp", pa.timestamp("us", tz="UTC")), ("thread", pa.string()),
                        ("source_node", pa.string()), ("destination_node", pa.string()),
                        ("destination_ip", pa.string()), ("network_transport", pa.string()),
                        ("destination_port", pa.int64()), ("ok", pa.bool_()),
                        ("latency_ms", pa.float64()), ("reason", pa.string())])
    for r in rows:
        for k in ("destination_port",):
            r[k] = r[k] if isinstance(r[k], int) and not isinstance(r[k], bool) else None
        r["latency_ms"] = float(r["latency_ms"]) if isinstance(r["latency_ms"], (int, float)) \
            and not isinstance(r["latency_ms"], bool) else None
        for k in ("thread", "source_node", "destination_node", "destination_ip",
                  "network_transport", "reason"):
            r[k] = None if r[k] is None else str(r[k])
    con.register("_availability", pa.Table.from_pylist(rows, schema=schema))
    con.execute("CREATE VIEW availability AS SELECT *, CASE WHEN ok THEN 'success' ELSE "
                "'failure' END AS event_outcome, CAST(NULL AS VARCHAR) AS run_id "
                "FROM _availability")


def _ledger_views(con, records: list[dict]) -> None:
    from ..attack.ledger import ECS_KEYS, to_ecs

    def ts(x):
        return (datetime.fromtimestamp(x, timezone.utc)
                if isinstance(x, (int, float)) and not isinstance(x, bool) else None)
    steps, flows = [], []
    for rec in records:
        e = to_ecs(rec)
        row = {snake(k): e[k] for k in ECS_KEYS if k not in ("cyberrange.flows", "cyberrange.facts")}
        row["event_start"], row["event_end"] = ts(e["event.start"]), ts(e["event.end"])
        row["facts"] = json.dumps(e["cyberrange.facts"] or {}, sort_keys=True, default=str)
        steps.append(row)
        for f in e["cyberrange.flows"] or []:
            flows.append({"run_id": e["cyberrange.run_id"], "step_id": e["cyberrange.step.id"],
                          "technique_id": e["threat.technique.id"],
                          "event_start": row["event_start"], "event_end": row["event_end"],
                          "source_ip": f.get("src"),
                          "source_port": f.get("sport"), "destination_ip": f.get("dst"),
                          "destination_port": f.get("dport"), "network_transport": f.get("proto"),
                          "packets": f.get("packets"), "bytes": f.get("bytes")})
    tsf = pa.timestamp("us", tz="UTC")
    step_schema = pa.schema([
        (snake(k), {"event.start": tsf, "event.end": tsf, "destination.ip": pa.list_(pa.string()),
                    "source.packets": pa.int64(), "source.bytes": pa.int64(),
                    "cyberrange.repeat": pa.int64(), "cyberrange.arp_frames": pa.int64()
                    }.get(k, pa.string()))
        for k in ECS_KEYS if k not in ("cyberrange.flows", "cyberrange.facts")] +
        [("facts", pa.string())])
    flow_schema = pa.schema([("run_id", pa.string()), ("step_id", pa.string()),
                             ("technique_id", pa.string()), ("event_start", tsf),
                             ("event_end", tsf), ("source_ip", pa.string()),
                             ("source_port", pa.int64()), ("destination_ip", pa.string()),
                             ("destination_port", pa.int64()), ("network_transport", pa.string()),
                             ("packets", pa.int64()), ("bytes", pa.int64())])
    con.register("_ledger", pa.Table.from_pylist(steps, schema=step_schema))
    con.register("_ledger_flows", pa.Table.from_pylist(flows, schema=flow_schema))
    con.execute("CREATE VIEW ledger AS SELECT * FROM _ledger")
    con.execute("CREATE VIEW ledger_flows AS SELECT * FROM _ledger_flows")


def view_columns(con) -> dict[str, list[tuple[str, str]]]:
    """view -> [(column, type)] of the views ``open_views`` made."""
    out: dict[str, list[tuple[str, str]]] = {}
    for view, col, typ in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = 'memory' AND table_schema = 'main' "
            "AND table_name NOT LIKE '\\_%' ESCAPE '\\' "
            "ORDER BY table_name, ordinal_position").fetchall():
        out.setdefault(view, []).append((col, typ))
    return out
