"""Event stores: the EventStore interface and the backends behind ``open_store``.

``open_store("runs/r1/events.duckdb")`` or ``open_store("duckdb://runs/r1/events.duckdb")`` opens
(or creates) a DuckDB store; ``es://HOST:PORT`` (``ess://`` for TLS, options in the query) or an
Elasticsearch config file (``*.yaml`` with an ``elasticsearch:`` section) opens the
Elasticsearch backend (``es_store.py``).
"""
from __future__ import annotations

import os

from ..errors import UserError
from .base import EventStore

__all__ = ["EventStore", "open_store", "is_es_target"]


def is_es_target(target: str) -> bool:
    """Whether ``target`` names an Elasticsearch cluster (URL or config file)."""
    if target.startswith(("es://", "ess://", "elasticsearch://", "http://", "https://")):
        return True
    if target.endswith((".yaml", ".yml")) and os.path.isfile(target):
        with open(target, errors="replace") as fh:
            return any(line.startswith("elasticsearch:") for line in fh)
    return False


def open_store(url_or_path: str | os.PathLike, **kwargs) -> EventStore:
    """Open the store named by a path or URL: a path or ``duckdb://PATH`` -> DuckDBStore;
    ``es://``, ``ess://``, ``http(s)://`` or an ES config file -> ElasticsearchStore."""
    target = os.fspath(url_or_path)
    if is_es_target(target):
        from .es_store import ElasticsearchStore
        return ElasticsearchStore(target, **kwargs)
    if target.startswith("duckdb://"):
        target = target[len("duckdb://"):]
        if not target:
            raise UserError("duckdb:// needs a file path, e.g. duckdb://runs/r1/events.duckdb")
    elif "://" in target:
        scheme = target.split("://", 1)[0]
        raise UserError(f"unknown store scheme {scheme!r} (use a path, duckdb://PATH or es://...)")
    from .duckdb_store import DuckDBStore
    return DuckDBStore(target, **kwargs)
