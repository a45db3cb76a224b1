"""Live ingest: records reach the store while the drill runs, not only at the end.

In live mode every sensor rotates its pcap every few seconds (``Sensors(rotate_s=...)``).
:class:`LiveIngest` is a background thread that, every ``interval`` seconds, takes each sensor's
*closed* files (tcpdump closes a file before it opens the next one, so every file but the newest
is complete) that it has not ingested yet, and appends each one's packet and flow records to the
run's DuckDB store (``ingest.load.load_captures``, as every other way captures reach a store).

Exactness, and the choice made here:

* **Packet records are exact** as soon as they are stored: a frame is in exactly one file, each
  closed file is ingested exactly once (the set of ingested files is kept), and a packet record
  depends on its frame only.
* **Flow records written live are provisional.** A connection that spans a rotation is split in
  two per-file pieces (and its later piece lacks the handshake). Carrying open-flow state from one
  file to the next would need the flow assembler's internals across calls; instead, when the
  drill ends, ``drill.analyse`` rebuilds the run's records from the pcaps, each sensor's files
  joined into one stream (``telemetry.files.join_pcaps``), exactly as a run without live mode does.
  So the final store of a live run equals a non-live run's on the same pcaps, and live mode costs
  one extra parse of the capture, spread over the drill. ``summary()`` (kept in the manifest
  under ``live``) says how many records were stored live and how far behind the capture it was.

The thread never touches tcpdump's open file, and stops within ``interval`` seconds of ``stop()``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from .load import load_captures

__all__ = ["LiveIngest"]


class LiveIngest(threading.Thread):
    """Append each closed pcap of each sensor to ``store_path`` during the drill."""

    def __init__(self, sensors, store_path: Path, run_id: str, interval: float = 0.5,
                 on_progress=None, on_records=None):
        super().__init__(name="cyberrange-live-ingest", daemon=True)
        from cyberrange.store import open_store
        self.sensors = sensors            # twin.sensors: .sensors, .closed_files(name), .sample()
        self.run_id = run_id
        self.interval = interval
        self.on_progress = on_progress
        self.on_records = on_records      # (packets, flows) of each ingested file: streaming
        Path(store_path).parent.mkdir(parents=True, exist_ok=True)
        if Path(store_path).exists():
            Path(store_path).unlink()
        self.store = open_store(store_path)
        self.done: dict[str, dict] = {}   # file -> {sensor, frames, packets, flows, at, lag_s}
        self.packets = 0
        self.flows = 0
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.t0 = time.time()

    # -- the thread ----------------------------------------------------------
    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)

    def poll(self) -> int:
        """Ingest every closed file not yet ingested; returns how many files were ingested.
        The records of every file of the poll go to ``on_records`` together, once: the
        streaming detectors then run once per poll, not once per closed file (with three
        sensors rotating together that was three runs of every detector over the same
        buffer)."""
        n = 0
        batch: list[tuple] = []
        for sensor in self.sensors.sensors:
            new = [f for f in self.sensors.closed_files(sensor.name) if str(f) not in self.done]
            if not new:
                continue
            # drops so far, sampled at the moment the file(s) closed: per-file kernel drops
            sample = self.sensors.sample(sensor.name) if hasattr(self.sensors, "sample") else {}
            for f in new:
                try:
                    packets, flows, stats = load_captures([(str(f), sensor.name)], self.run_id,
                                                          self.store, lock=self._lock)
                    self.packets += packets.num_rows
                    self.flows += flows.num_rows
                    if self.on_records is not None:
                        batch.append((packets, flows))
                except Exception as exc:  # noqa: BLE001 - live view only; the end rebuilds
                    self.errors.append(f"{f.name}: {type(exc).__name__}: {exc}")
                    stats = {"frames": None, "packets": 0, "flows": 0}
                self.done[str(f)] = {"sensor": sensor.name, "frames": stats.get("frames"),
                                     "packets": stats.get("packets"), "flows": stats.get("flows"),
                                     "at": round(time.time() - self.t0, 2),
                                     "lag_s": round(time.time() - f.stat().st_mtime, 2),
                                     "dropped_by_kernel_so_far": sample.get("dropped_by_kernel")}
                n += 1
        if batch:
            self._stream(batch)
        if n and self.on_progress:
            self.on_progress(self.progress())
        return n

    def _stream(self, batch: list[tuple]) -> None:
        import pyarrow as pa
        try:
            if len(batch) == 1:
                self.on_records(*batch[0])
                return
            packets = [p for p, _ in batch if p is not None]
            self.on_records(pa.concat_tables(packets, promote_options="default")
                            if packets else None,
                            pa.concat_tables([f for _, f in batch], promote_options="default"))
        except Exception as exc:  # noqa: BLE001 - live view only; the end rebuilds
            self.errors.append(f"streaming detection: {type(exc).__name__}: {exc}")

    # -- views ---------------------------------------------------------------
    def progress(self) -> dict:
        return {"files": len(self.done), "packets": self.packets, "flows": self.flows,
                "errors": len(self.errors)}

    def count(self, kind: str = "packets") -> int:
        """Records of this run in the store right now (read through the same connection)."""
        with self._lock:
            return self.store.count(kind, self.run_id)

    def stop(self) -> dict:
        """End the thread (the store stays open: ``poll()`` may still ingest the last files)."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=60)
        return self.summary()

    def close(self) -> None:
        self.stop()
        with self._lock:
            if self.store is not None:
                self.store.close()

    def summary(self) -> dict:
        lags = [d["lag_s"] for d in self.done.values() if d.get("lag_s") is not None]
        return {"files_ingested": len(self.done), "packets_stored_live": self.packets,
                "flows_stored_live_provisional": self.flows,
                "max_lag_s": max(lags) if lags else None, "errors": self.errors[:20],
                "files": {Path(k).name: v for k, v in list(self.done.items())[-500:]}}
