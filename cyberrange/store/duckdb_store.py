"""DuckDB implementation of the EventStore: one embedded database file per run folder.

Packet and flow records live in the tables ``packet_records`` and ``flow_records``, which hold
every column of ``RECORD_SCHEMAS`` (core + added fields, see ``cyberrange.telemetry.schema``).
The views ``packets`` and ``flows`` show the core columns (``PACKET_SCHEMA`` / ``FLOW_SCHEMA``,
unchanged since the first version), so SQL written against them keeps working; ``alerts`` is a
table, and so are ``signals`` (weak signals, in the alert layout) and ``incidents``
(``cyberrange.detect.incidents``), and so are the run logs ``availability`` (mission probes) and
``link_events`` (DDIL link changes; ``runlogs.py``). The view ``arp_bindings`` lists the IP/MAC pairs ARP senders announced (``source.ip``,
``source.mac``, first and last seen, packets) per sensor and run. The dotted ECS names are kept
as column names (always quoted in SQL: ``SELECT "source.ip" FROM flows``).

A file written by an older version (``packets``/``flows`` as plain tables) is opened as it is:
the added columns are then simply not stored.

Writes go through DuckDB's Arrow ingestion (the table is registered as a view and copied with one
``INSERT ... SELECT``), which is orders of magnitude faster than row inserts
(``bench/store_ingest.py``).

The connection runs with ``TimeZone = 'UTC'`` so that timestamps come back as UTC.
"""
from __future__ import annotations

import os
import threading

import duckdb
import pyarrow as pa

from .base import EventStore
from .runlogs import STORE_RECORD_SCHEMAS, STORE_SCHEMAS

__all__ = ["DuckDBStore", "duckdb_type", "quote"]


def quote(name: str) -> str:
    """Quote an identifier for DuckDB (dotted names, ``@timestamp``)."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB column type for an Arrow type used in our schemas."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_list(t):
        return duckdb_type(t.value_type) + "[]"
    raise TypeError(f"no DuckDB type for Arrow type {t}")


WIDE = {"packets": "packet_records", "flows": "flow_records"}


class DuckDBStore(EventStore):
    """Event store in a DuckDB file (``":memory:"`` works too). Reopening a file keeps its data."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False):
        self.path = str(path)
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        self.con = duckdb.connect(self.path, read_only=read_only)
        self._read_only = read_only
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        self._lock = threading.Lock()
        # kind -> (table that holds the rows, schema of that table)
        self._where: dict[str, tuple[str, pa.Schema]] = {}
        self._existing = existing = {r[0]: r[1] for r in self.con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'main'").fetchall()}
        for kind, core in STORE_SCHEMAS.items():
            wide = WIDE.get(kind)
            if wide is None or existing.get(kind) == "BASE TABLE":
                self._where[kind] = (kind, core)            # alerts, or a file from before
                if not read_only:
                    self._create(kind, core)
            else:
                full = STORE_RECORD_SCHEMAS[kind]
                self._where[kind] = (wide, full)
                if not read_only:
                    self._create(wide, full)
                    cols = ", ".join(quote(f.name) for f in core)
                    self.con.execute(f"CREATE OR REPLACE VIEW {kind} AS SELECT {cols} FROM {wide}"
                                     ).fetchall()
        if not read_only and self._where["packets"][0] == "packet_records":
            self.con.execute(
                'CREATE OR REPLACE VIEW arp_bindings AS SELECT "cyberrange.run_id", '
                '"observer.name", "cyberrange.arp.sender_ip" AS "source.ip", '
                '"cyberrange.arp.sender_mac" AS "source.mac", min("@timestamp") AS first_seen, '
                'max("@timestamp") AS last_seen, count(*) AS packets FROM packet_records '
                'WHERE "cyberrange.arp.sender_ip" IS NOT NULL '
                'GROUP BY ALL').fetchall()

    def _create(self, table: str, schema: pa.Schema) -> None:
        cols = ", ".join(f"{quote(f.name)} {duckdb_type(f.type)}" for f in schema)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})").fetchall()
        have = {r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [table]).fetchall()}
        for f in schema:                                  # columns added since the file was made
            if f.name not in have:
                self.con.execute(f"ALTER TABLE {table} ADD COLUMN {quote(f.name)} "
                                 f"{duckdb_type(f.type)}").fetchall()

    def has(self, kind: str) -> bool:
        """Whether the file holds ``kind``: a file written before signals and incidents
        existed, opened read-only, does not (a writable one gets the tables on opening)."""
        _schema(kind)
        table = self._where[kind][0]
        return not self._read_only or table in self._existing

    def stored_schema(self, kind: str) -> pa.Schema:
        """Every column stored for ``kind`` (core + added fields)."""
        _schema(kind)
        return self._where[kind][1]

    # ------------------------------------------------------------------ EventStore
    def write(self, kind: str, table: pa.Table) -> int:
        """Append records. The core columns are required; added fields are optional (null)."""
        core = _schema(kind)
        target, schema = self._where[kind]
        if table.num_rows == 0:
            return 0
        missing = [n for n in core.names if n not in table.column_names]
        allowed = set(STORE_RECORD_SCHEMAS[kind].names)
        extra = [n for n in table.column_names if n not in allowed]
        if missing or extra:
            raise ValueError(f"{kind}: columns do not match the schema "
                             f"(missing {missing}, unknown {extra})")
        n = table.num_rows
        # columns that are absent or all null are left out of the INSERT (DuckDB fills NULL):
        # scanning a null Arrow column costs as much as a full one
        fields = [f for f in schema if f.name in table.column_names
                  and (f.name in core.names or table.column(f.name).null_count < n)]
        table = pa.Table.from_arrays([table.column(f.name) for f in fields],
                                     names=[f.name for f in fields]).cast(pa.schema(fields))
        with self._lock:
            view = f"_incoming_{kind}"
            self.con.register(view, table)
            try:
                cols = ", ".join(quote(f.name) for f in fields)
                self.con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {view}"
                                 ).fetchall()
            finally:
                self.con.unregister(view)
        return n

    def read(self, kind: str, run_id: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Records of ``kind``: the core columns, or ``columns`` (core or added fields)."""
        core = _schema(kind)
        target, schema = self._where[kind]
        names = list(columns) if columns else list(core.names)
        unknown = [n for n in names if n not in schema.names]
        if unknown:
            raise ValueError(f"{kind}: unknown columns {unknown}")
        sql = f"SELECT {', '.join(quote(n) for n in names)} FROM {target}"
        params: list = []
        if run_id is not None:
            sql += ' WHERE "cyberrange.run_id" = ?'
            params.append(run_id)
        sql += ' ORDER BY "@timestamp"'
        out = self.query(sql, params)
        out_schema = pa.schema([schema.field(n) for n in names])
        return out.cast(out_schema)

    def count(self, kind: str, run_id: str | None = None) -> int:
        _schema(kind)
        sql = f"SELECT count(*) FROM {self._where[kind][0]}"
        params: list = []
        if run_id is not None:
            sql += ' WHERE "cyberrange.run_id" = ?'
            params.append(run_id)
        with self._lock:
            return int(self.con.execute(sql, params).fetchall()[0][0])

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    # ------------------------------------------------------------------ extras
    def query(self, sql: str, params: list | tuple | dict | None = None) -> pa.Table:
        """Run SQL (with ``?`` or ``$name`` parameters) and return the result as Arrow."""
        with self._lock:
            rel = self.con.sql(sql, params=params or None)
            if rel is None:                     # a statement without a result (DDL, DELETE ...)
                return pa.table({})
            return rel.to_arrow_table()

    def delete(self, kind: str, run_id: str) -> int:
        """Remove the records of ``kind`` for one run (used to re-run detectors on a run)."""
        _schema(kind)
        n = self.count(kind, run_id)
        with self._lock:
            self.con.execute(f'DELETE FROM {self._where[kind][0]} WHERE "cyberrange.run_id" = ?',
                             [run_id]).fetchall()
        return n

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"


def _schema(kind: str) -> pa.Schema:
    try:
        return STORE_SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r} (one of {', '.join(STORE_SCHEMAS)})") from None
