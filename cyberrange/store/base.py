"""The EventStore interface. DuckDB (embedded, default) and Elasticsearch implement it.

Records travel as Arrow tables whose columns follow ``cyberrange.telemetry.schema``.
Kinds: ``packets``, ``flows``, ``alerts``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import pyarrow as pa


class EventStore(ABC):
    """Append-only store of event records for one or more runs."""

    @abstractmethod
    def write(self, kind: str, table: pa.Table) -> int:
        """Append records of ``kind``; return how many were stored."""

    @abstractmethod
    def read(self, kind: str, run_id: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """All records of ``kind`` (for one run if given), ordered by ``@timestamp``."""

    @abstractmethod
    def count(self, kind: str, run_id: str | None = None) -> int:
        """How many records of ``kind`` are stored."""

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
