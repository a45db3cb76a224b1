"""Column helpers the vectorised detector families share (numpy views of Arrow columns).

Not a family module: the registry skips it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ts_us", "int_col", "codes", "scatter_max", "stable_id"]


def ts_us(table: pa.Table, name: str) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch."""
    col = table.column(name)
    col = pc.cast(col.cast(pa.timestamp("us", tz="UTC")), pa.int64())
    return col.to_numpy(zero_copy_only=False)


def int_col(table: pa.Table, name: str, fill: int = 0) -> np.ndarray:
    return pc.fill_null(table.column(name), fill).to_numpy(zero_copy_only=False).astype(np.int64)


def codes(table: pa.Table, name: str) -> tuple[np.ndarray, list]:
    """Dictionary codes of a string column (nulls -> -1) and the dictionary."""
    enc = pc.dictionary_encode(table.column(name)).combine_chunks()
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return idx, enc.dictionary.to_pylist()


def scatter_max(flows: pa.Table, flow_ids, values: np.ndarray) -> np.ndarray:
    """Per flow row of ``flows``: the largest of ``values`` whose ``flow_ids`` name it (0 if
    none) -- how a family that scores events (queries, windows) scores flows."""
    out = np.zeros(flows.num_rows)
    if flows.num_rows == 0 or len(values) == 0:
        return out
    idx = pc.index_in(flow_ids, value_set=flows.column("cyberrange.flow_id").combine_chunks())
    idx = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    ok = idx >= 0
    np.maximum.at(out, idx[ok], np.asarray(values, dtype=np.float64)[ok])
    return out


def stable_id(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()
