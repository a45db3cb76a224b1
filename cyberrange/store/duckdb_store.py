"""DuckDB implementation of the EventStore: one embedded database file per run folder.

Tables ``packets``, ``flows`` and ``alerts`` are created from the Arrow schemas in
``cyberrange.telemetry.schema``; the dotted ECS names are kept as column names (always quoted
in SQL: ``SELECT "source.ip" FROM flows``). Writes go through DuckDB's Arrow ingestion (the table
is registered as a view and copied with one ``INSERT ... SELECT``), which is orders of magnitude
faster than row inserts.

The connection runs with ``TimeZone = 'UTC'`` so that timestamps come back as UTC.
"""
from __future__ import annotations

import os
import threading

import duckdb
import pyarrow as pa

from ..telemetry.schema import SCHEMAS
from .base import EventStore

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


class DuckDBStore(EventStore):
    """Event store in a DuckDB file (``":memory:"`` works too). Reopening a file keeps its data."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False):
        self.path = str(path)
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        self.con = duckdb.connect(self.path, read_only=read_only)
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        self._lock = threading.Lock()
        if not read_only:
            for kind, schema in SCHEMAS.items():
                cols = ", ".join(f"{quote(f.name)} {duckdb_type(f.type)}" for f in schema)
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {kind} ({cols})").fetchall()

    # ------------------------------------------------------------------ EventStore
    def write(self, kind: str, table: pa.Table) -> int:
        schema = _schema(kind)
        if table.num_rows == 0:
            return 0
        missing = [n for n in schema.names if n not in table.column_names]
        extra = [n for n in table.column_names if n not in schema.names]
        if missing or extra:
            raise ValueError(f"{kind}: columns do not match the schema "
                             f"(missing {missing}, unknown {extra})")
        table = table.select(schema.names).cast(schema)
        with self._lock:
            view = f"_incoming_{kind}"
            self.con.register(view, table)
            try:
                cols = ", ".join(quote(n) for n in schema.names)
                self.con.execute(f"INSERT INTO {kind} ({cols}) SELECT {cols} FROM {view}").fetchall()
            finally:
                self.con.unregister(view)
        return table.num_rows

    def read(self, kind: str, run_id: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        schema = _schema(kind)
        names = list(columns) if columns else list(schema.names)
        unknown = [n for n in names if n not in schema.names]
        if unknown:
            raise ValueError(f"{kind}: unknown columns {unknown}")
        sql = f"SELECT {', '.join(quote(n) for n in names)} FROM {kind}"
        params: list = []
        if run_id is not None:
            sql += ' WHERE "cyberrange.run_id" = ?'
            params.append(run_id)
        sql += ' ORDER BY "@timestamp"'
        out = self.query(sql, params)
        target = pa.schema([schema.field(n) for n in names])
        return out.cast(target)

    def count(self, kind: str, run_id: str | None = None) -> int:
        _schema(kind)
        sql = f"SELECT count(*) FROM {kind}"
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
            self.con.execute(f'DELETE FROM {kind} WHERE "cyberrange.run_id" = ?', [run_id]).fetchall()
        return n

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"


def _schema(kind: str) -> pa.Schema:
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r} (one of {', '.join(SCHEMAS)})") from None
