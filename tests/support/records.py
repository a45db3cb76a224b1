"""Synthetic telemetry records for detector tests: dict rows -> Arrow tables of the record
schemas (what the parser and the store hand to detectors)."""
from __future__ import annotations

import pyarrow as pa

from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA, PACKET_RECORD_SCHEMA


def records(rows, schema: pa.Schema = FLOW_RECORD_SCHEMA) -> pa.Table:
    """A table of ``schema`` from dict rows keyed by column name; a missing key is null and
    timestamps are given as integer microseconds since the epoch."""
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        cols[f.name] = pa.array(vals, pa.int64()).cast(f.type) if pa.types.is_timestamp(f.type) \
            else pa.array(vals, f.type)
    return pa.table(cols, schema=schema)


def packet_records(rows) -> pa.Table:
    """``records`` with the packet record schema."""
    return records(rows, PACKET_RECORD_SCHEMA)
