"""The EventStore interface. DuckDB (embedded, default) and Elasticsearch implement it.

Records travel as Arrow tables whose columns follow ``cyberrange.telemetry.schema``.
Kinds: ``packets``, ``flows``, ``alerts``, ``signals`` (weak signals) and ``incidents``, and the
run logs ``availability`` and ``link_events`` (``runlogs.py``: columns in ``STORE_SCHEMAS``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import pyarrow as pa


class EventStore(ABC):
    """Store of event records for one or more runs: records are appended, and removed only a
    whole run and kind at a time (``delete``)."""

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

    @abstractmethod
    def delete(self, kind: str, run_id: str) -> int:
        """Remove the records of ``kind`` of one run; return how many there were (re-running
        the detectors on a run replaces its alerts, ``detect run --pcap --store`` its records)."""

    def has(self, kind: str) -> bool:
        """Whether the store can hold ``kind`` (a file written before a kind existed, opened
        read-only, cannot: reading it then gives no records, see ``read_or_empty``)."""
        return True

    def read_or_empty(self, kind: str, run_id: str | None = None) -> pa.Table:
        """``read``, or an empty table of the kind when the store does not hold it."""
        if not self.has(kind):
            from .runlogs import STORE_SCHEMAS
            return STORE_SCHEMAS[kind].empty_table()
        return self.read(kind, run_id)

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
