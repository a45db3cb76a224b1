"""Event stores: the EventStore interface and the backends behind ``open_store``.

``open_store("runs/r1/events.duckdb")`` or ``open_store("duckdb://runs/r1/events.duckdb")`` opens
(or creates) a DuckDB store; ``es://...`` is reserved for the Elasticsearch backend.
"""
from __future__ import annotations

import os

from ..errors import UserError
from .base import EventStore

__all__ = ["EventStore", "open_store"]


def open_store(url_or_path: str | os.PathLike, **kwargs) -> EventStore:
    """Open the store named by a path or URL: a path or ``duckdb://PATH`` -> DuckDBStore."""
    target = os.fspath(url_or_path)
    if target.startswith(("es://", "ess://", "elasticsearch://")):
        raise UserError("Elasticsearch backend not available yet")
    if target.startswith("duckdb://"):
        target = target[len("duckdb://"):]
        if not target:
            raise UserError("duckdb:// needs a file path, e.g. duckdb://runs/r1/events.duckdb")
    elif "://" in target:
        scheme = target.split("://", 1)[0]
        raise UserError(f"unknown store scheme {scheme!r} (use a path, duckdb://PATH or es://...)")
    from .duckdb_store import DuckDBStore
    return DuckDBStore(target, **kwargs)
