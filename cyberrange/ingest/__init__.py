"""Captures into a store: the one way records reach a store, above ``telemetry/`` (pcap ->
records) and ``store/`` (records -> DuckDB or Elasticsearch), below ``drill``.

- ``load.load_captures``: a run folder's ``pcaps/`` or named files -> records -> a store
  (drill analysis, ``detect run --pcap``, and the two below);
- ``runs.ingest_pcaps``: capture files from elsewhere -> a new run folder (``cyberrange ingest``);
- ``live.LiveIngest``: each closed capture file while a drill runs (``drill run --live``).
"""
from __future__ import annotations

from cyberrange.ingest.runs import ingest_pcaps

__all__ = ["ingest_pcaps"]
