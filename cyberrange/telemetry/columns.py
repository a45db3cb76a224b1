"""Arrow columns from the decoder's integer codes, for the packet and flow tables.

Text (addresses, flag letters, names) is made once per distinct value and spread with a
dictionary array, never once per row: a capture has few distinct addresses and many packets.
"""
from __future__ import annotations

import socket
import struct

import numpy as np
import pyarrow as pa

from .wire import NOMAC, V6_BASE


def const_strings(value, n: int, typ=pa.string()) -> pa.Array:
    """A column holding one value n times (built without an n-long Python list)."""
    if n == 0:
        return pa.array([], typ)
    return pa.repeat(pa.scalar(value, typ), n)


def ip_strings(d, ids: np.ndarray) -> pa.Array:
    """Address ids of a ``decode.Decoded`` -> strings (null for -1), each distinct address
    converted once."""
    return coded_strings(ids, lambda u: _ip_text(d, u))


def _ip_text(d, uniq: np.ndarray) -> list:
    inv6 = None
    out = []
    pack = struct.Struct(">I").pack
    ntoa = socket.inet_ntoa
    for v in uniq.tolist():
        if v < 0:
            out.append(None)
        elif v < V6_BASE:
            out.append(ntoa(pack(v)))
        else:
            if inv6 is None:
                inv6 = {k: r for r, k in d.v6.items()}
            out.append(socket.inet_ntop(socket.AF_INET6, inv6[v]))
    return out


def mac_strings(ids: np.ndarray) -> pa.Array:
    """48-bit MAC integers -> ``aa:bb:..`` strings (null for NOMAC)."""
    def text(uniq):
        return [None if v == NOMAC else v.to_bytes(6, "big").hex(":") for v in uniq.tolist()]
    return coded_strings(ids, text)


def coded_strings(values: np.ndarray, to_text) -> pa.Array:
    """A string column from integer codes: ``to_text(distinct codes)`` gives their texts."""
    if len(values) == 0:
        return pa.array([], pa.string())
    uniq, inv = np.unique(values, return_inverse=True)
    words = to_text(uniq)
    dictionary = pa.array(words, pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(inv.astype(np.int32)), dictionary
                                          ).cast(pa.string())


def int_column(values: np.ndarray, typ) -> pa.Array:
    """An integer column with -1 meaning null."""
    mask = values < 0
    return pa.array(values, typ, mask=mask if mask.any() else None)


def table_strings(table: list, codes: np.ndarray) -> pa.Array:
    """Strings from a small lookup table (``TRANSPORTS``, ``FLAG_LETTERS``); code -1 is null."""
    if len(codes) == 0:
        return pa.array([], pa.string())
    words = pa.array(list(table) + [None], pa.string())
    c = np.where(codes < 0, len(table), codes).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(c), words).cast(pa.string())


def sparse_strings(n: int, rows: np.ndarray, values: list) -> pa.Array:
    """A string column of n nulls with ``values`` at ``rows``."""
    codes = np.full(n, -1, np.int32)
    if len(rows):
        codes[rows] = np.arange(len(rows), dtype=np.int32)
    mask = codes < 0
    idx = pa.array(np.where(mask, 0, codes).astype(np.int32), mask=mask)
    dictionary = pa.array(values if values else [None], pa.string())
    return pa.DictionaryArray.from_arrays(idx, dictionary).cast(pa.string())
