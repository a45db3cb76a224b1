"""Streaming detection: detectors run while a drill runs, over records as they reach the store.

``StreamingDetection.feed(packets, flows)`` takes each new batch (the live ingest calls it for
every closed pcap), keeps the last ``horizon_s`` seconds of records, re-runs every detector
over that buffer and returns only the alerts it has not reported before. Families need no
streaming code of their own: detectors are pure functions of their records (the contract in
``base.py``), so an episode seen again gives the same alert again and is reported once.

* An episode is the same alert when its ``alert_id`` was reported, or when the same detector
  already reported the same (source, destination, technique) and this alert starts no later
  than ``merge_gap_s`` after the reported one's last evidence (a long episode whose first
  flows left the horizon gets a new id; it is still one alert).
* Each detector sees as far back as it needs (``lookback_s``): at least ``horizon_s``, twice
  its longest ``*window`` setting (a slow scan counted over 600 s sees 1,200 s), and for
  beacons ``BEACON_LOOKBACK_S`` (eight check-ins at up to 225 s apart); a detector may state
  its own ``lookback_s``. At most ``MAX_LOOKBACK_S``; packets (for the families that read
  them) at most ``MAX_PACKET_LOOKBACK_S``. Before this a 120 s horizon for every family hid
  every beacon slower than one check-in per 15 s and every slow scan from the live view.
* Trainable detectors learn once, from the records of the first ``baseline_s`` seconds, as
  soon as the stream has passed them; before that they do not run (an untrained model would
  only alert on the baseline it is about to learn from).

Live flow records are provisional (a flow that crosses a pcap rotation is two records until the
final store is rebuilt), so a streaming alert's flow ids may differ from the final alert's: the
scorecard is computed on the final store; streaming is for the operator watching the drill.
"""
from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, Detector

__all__ = ["StreamingDetection", "lookback_s"]

BEACON_LOOKBACK_S = 1800.0
MAX_LOOKBACK_S = 3600.0
MAX_PACKET_LOOKBACK_S = 600.0


def lookback_s(det: Detector, horizon_s: float) -> float:
    """How many seconds of records ``det`` is given in the live stream (see the module doc)."""
    own = getattr(det, "lookback_s", None)
    if isinstance(own, (int, float)) and not isinstance(own, bool) and own > 0:
        return min(float(own), MAX_LOOKBACK_S)
    need = float(horizon_s)
    if det.family == "beacon":
        need = max(need, BEACON_LOOKBACK_S)
    for key, value in det.settings.items():
        if key.endswith("window") and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            need = max(need, 2.0 * float(value))
    return min(need, MAX_LOOKBACK_S)


def _packet_lookback_s(det: Detector, horizon_s: float) -> float:
    return min(lookback_s(det, horizon_s), max(MAX_PACKET_LOOKBACK_S, horizon_s))


def _us(table: pa.Table, name: str = "@timestamp"):
    return table.column(name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())


class StreamingDetection:
    def __init__(self, detectors: list[Detector], *, horizon_s: float = 120.0,
                 baseline_s: float | None = None, merge_gap_s: float = 60.0, on_alert=None):
        self.detectors = detectors
        self.horizon_us = int(horizon_s * 1_000_000)
        self.lookback_us = {id(d): (int(lookback_s(d, horizon_s) * 1_000_000),
                                    int(_packet_lookback_s(d, horizon_s) * 1_000_000))
                            for d in detectors}
        self.flow_keep_us = max((b[0] for b in self.lookback_us.values()),
                                default=self.horizon_us)
        self.packet_keep_us = max((self.lookback_us[id(d)][1] for d in detectors
                                   if d.needs_packets), default=self.horizon_us)
        self.newest: int | None = None
        self.baseline_s = baseline_s or 0.0
        self.baseline_until: float | None = None   # epoch s: set when the warm-up's end is known
        self.merge_gap_us = int(merge_gap_s * 1_000_000)
        self.on_alert = on_alert
        self.need_packets = any(d.needs_packets for d in detectors)
        self.flows: list[pa.Table] = []
        self.packets: list[pa.Table] = []
        self.baseline_flows: list[pa.Table] = []
        self.baseline_packets: list[pa.Table] = []
        self.t0: int | None = None          # µs of the first record seen
        self.trained = not any(d.trainable for d in detectors) or not self.baseline_s
        self.seen_ids: set[str] = set()
        self.episodes: dict[tuple, int] = {}   # (rule, src, dst, technique) -> last end µs
        self.alerts: list[Alert] = []
        self.reported: list[dict] = []        # {alert_id, rule, seen_at, lag_s}
        self.batches = 0
        self.seconds = 0.0

    # -- input ---------------------------------------------------------------------------------
    def feed(self, packets: pa.Table | None, flows: pa.Table) -> list[Alert]:
        """Add a batch of records; return the alerts not reported before (also to on_alert)."""
        t_start = time.perf_counter()
        self.batches += 1
        tables = [t for t in (flows, packets) if t is not None and t.num_rows]
        if not tables:
            return []
        first = min(pc.min(_us(t)).as_py() for t in tables)
        self.t0 = first if self.t0 is None else min(self.t0, first)
        self.flows.append(flows)
        if self.need_packets and packets is not None:
            self.packets.append(packets)
        if not self.trained:
            self.baseline_flows.append(flows)
            if packets is not None and self.need_packets:
                self.baseline_packets.append(packets)
        newest = max(pc.max(_us(t)).as_py() for t in tables)
        self._trim(newest)
        end = int(self.baseline_until * 1_000_000) if self.baseline_until is not None else \
            self.t0 + int(self.baseline_s * 1_000_000)
        if not self.trained and newest >= end:
            self._train()
        new = self._detect()
        self.seconds += time.perf_counter() - t_start
        return new

    # -- internals -----------------------------------------------------------------------------
    def _trim(self, newest: int) -> None:
        self.newest = newest if self.newest is None else max(self.newest, newest)
        for buf, keep in ((self.flows, self.flow_keep_us), (self.packets, self.packet_keep_us)):
            if not buf:
                continue
            table = pa.concat_tables(buf, promote_options="default")
            buf[:] = [table.filter(pc.greater_equal(_us(table), self.newest - keep))]

    def _train(self) -> None:
        from .registry import baseline_window
        flows = pa.concat_tables(self.baseline_flows, promote_options="default")
        packets = pa.concat_tables(self.baseline_packets, promote_options="default") \
            if self.baseline_packets else None
        flows, packets = baseline_window(flows, packets, self.baseline_s, self.baseline_until)
        for det in self.detectors:
            if det.trainable:
                det.fit(flows, packets if det.needs_packets else None)
        self.trained = True
        self.baseline_flows, self.baseline_packets = [], []

    def _detect(self) -> list[Alert]:
        if not self.flows:
            return []
        flows = self.flows[0] if len(self.flows) == 1 else \
            pa.concat_tables(self.flows, promote_options="default")
        packets = None
        if self.packets:
            packets = self.packets[0] if len(self.packets) == 1 else \
                pa.concat_tables(self.packets, promote_options="default")
        new: list[Alert] = []
        cuts: dict[tuple, pa.Table | None] = {}     # (which, look-back µs) -> the records

        def since(which: str, table, back: int):
            if table is None:
                return None
            if (which, back) not in cuts:
                cuts[which, back] = table.filter(pc.greater_equal(_us(table), self.newest - back))
            return cuts[which, back]
        for det in self.detectors:
            if det.trainable and not self.trained:
                continue
            back_f, back_p = self.lookback_us[id(det)]
            f = since("flows", flows, back_f)
            p = since("packets", packets, back_p) if det.needs_packets else None
            for a in det.detect(f, p if det.needs_packets else None):
                if self._is_new(a):
                    new.append(a)
        now = time.time()
        for a in sorted(new, key=lambda a: a.timestamp):
            self.alerts.append(a)
            self.reported.append({"alert_id": a.alert_id, "rule": a.rule_name,
                                  "technique": a.technique, "source": a.source_ip,
                                  "seen_at": now,
                                  "lag_s": round(now - a.timestamp.timestamp(), 2)})
            if self.on_alert:
                self.on_alert(a)
        return new

    def _is_new(self, a: Alert) -> bool:
        end = int(a.end.timestamp() * 1_000_000)
        start = int(a.start.timestamp() * 1_000_000)
        key = (a.rule_name, a.source_ip, a.destination_ip, a.technique)
        if a.alert_id in self.seen_ids:
            self.episodes[key] = max(self.episodes.get(key, end), end)
            return False
        self.seen_ids.add(a.alert_id)
        last = self.episodes.get(key)
        self.episodes[key] = end if last is None else max(last, end)
        return last is None or start > last + self.merge_gap_us

    def summary(self) -> dict:
        lags = [r["lag_s"] for r in self.reported]
        return {"alerts": len(self.reported), "batches": self.batches,
                "seconds": round(self.seconds, 2),
                "median_lag_s": sorted(lags)[len(lags) // 2] if lags else None,
                "reported": self.reported}
