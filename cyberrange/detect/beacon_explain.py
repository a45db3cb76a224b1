"""The beacon family's explanations (``beacon.py``): what every alert's evidence and every
near-miss carries -- the score's components, which test gave the score (the RITA-style score or
the rhythm test of the first connections), the thresholds -- and ``near_misses()`` (``detect run
--explain``) and ``signals()`` (weak signals for the incident correlator).

A mixin: it reads the detector's settings (``threshold``, ``min_conn``, ``rhythm_p``, ...) and
its ``_analyse()`` and ``_known()``.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .base import Alert, us_to_dt
from .beacon_stats import registered_domain
from .features import stable_id, ts_us


def _chance(failed: list, check: str, log10_p: float, needed: float) -> None:
    """Append a failed chance check (a chance above its setting, short by a factor)."""
    p = 10 ** float(log10_p)
    if p > needed:
        failed.append({"check": check, "value": float(f"{p:.3g}"), "needed": needed,
                       "short_by": f"{p / needed:.3g}x"})


class BeaconExplain:
    """Evidence, near-misses and weak signals of ``BeaconDetector``."""

    def _route(self, d, p) -> str:
        """Which test gave the series its score: ``rhythm`` (the first connections' rhythm,
        short series), ``new-peer`` (every interval's rhythm, a destination nobody used in the
        baseline) or ``rita`` (the RITA-style score)."""
        rita = d["rita"][p] if d["counts"][p] >= self.min_conn else 0.0
        rhythm = d["rhythm"][p] if d["counts"][p] >= self.rhythm_min else 0.0
        fresh = d["new_peer_score"][p] if d["counts"][p] >= self.new_peer_min else 0.0
        if fresh > max(rita, rhythm):
            return "new-peer"
        return "rhythm" if rhythm > rita else "rita"

    def _route_text(self, d, p) -> str:
        route = self._route(d, p)
        if route == "new-peer":
            return (f"; a destination nobody used in the baseline, rhythm of all "
                    f"{int(d['counts'][p])} connections: interval spread "
                    f"{d['spread_all'][p]:.2f}, a chance of {10 ** d['log10_p_all'][p]:.1e} "
                    f"for random arrivals")
        if route != "rhythm":
            return ""
        k = int(min(d["counts"][p], self.min_conn - 1))
        return (f"; rhythm of the first {k} connections: interval spread "
                f"{d['spread'][p]:.2f}, a chance of {10 ** d['log10_p'][p]:.1e} for random "
                f"arrivals")

    def _components(self, d, p) -> dict:
        """The parts of the score every alert and near-miss shows: the series' duration, the
        jitter allowance for its count, and the thresholds they were held to."""
        return {"duration_s": round(float(d["duration"][p]), 3),
                "jitter_allowed": round(float(d["allowed"][p]), 3),
                "thresholds": {"score": self.threshold, "min_connections": self.min_conn,
                               "min_interval_s": self.min_interval,
                               "jitter_allowed": round(float(d["allowed"][p]), 3),
                               "size_jitter": self.size_jitter, "full_count": self.full_count,
                               "max_bytes": self.max_bytes, "rhythm_p": self.rhythm_p,
                               "rhythm_min_connections": self.rhythm_min,
                               "new_peer_p": self.new_peer_p,
                               "new_peer_min_connections": self.new_peer_min}}

    @staticmethod
    def _measures(d: dict, p: int) -> dict:
        """The series' measured interval, size and part scores (alert evidence and
        near-misses alike)."""
        return {"interval_madm_s": round(float(d["madm_i"][p]), 3),
                "interval_bowley_skew": round(float(d["skew_i"][p]), 3),
                "interval_jitter": round(float(d["jit_i"][p]), 3),
                "size_jitter": round(float(d["jit_b"][p]), 3),
                "bytes_median": float(d["med_b"][p]),
                "timing_score": round(float(d["timing"][p]), 3),
                "size_score": round(float(d["sizes"][p]), 3),
                "count_score": round(float(d["count"][p]), 3),
                "rita_score": round(float(d["rita"][p]), 3),
                "interval_spread": round(float(d["spread"][p]), 3),
                "p_random": float(f"{10 ** float(d['log10_p'][p]):.3g}"),
                "rhythm_score": round(float(d["rhythm"][p]), 3),
                "new_peer": bool(d["new_peer"][p]),
                "interval_spread_all": round(float(d["spread_all"][p]), 3),
                "p_random_all": float(f"{10 ** float(d['log10_p_all'][p]):.3g}"),
                "new_peer_score": round(float(d["new_peer_score"][p]), 3)}

    def near_misses(self, flows: pa.Table, packets: pa.Table | None = None, *,
                    floor: float | None = None, limit: int = 20) -> list[dict]:
        """Series that did not alert although they look somewhat like beacons, with every score
        component and what failed by how much (``cyberrange detect run --explain``).

        A near-miss is a series with at least 4 connections, whose score without the count and
        interval gates reached ``floor`` (default half the threshold), and that raised no alert.
        ``failed`` lists each reason: ``{"check", "value", "needed", "short_by"}``. Sorted by
        score, at most ``limit``. Optional hook: the CLI asks every detector that has one.
        """
        floor = self.threshold / 2 if floor is None else floor
        out = []
        if flows.num_rows == 0 and (packets is None or packets.num_rows == 0):
            return out
        for part, labels, g, best, pick, d, sinv in self._analyse(flows, packets):
            for s in range(len(labels)):
                p = pick[s]
                if p < 0 or d["counts"][p] < 4 or d["raw"][p] < floor:
                    continue
                label = labels[s]
                failed: list = []

                def miss(check, value, needed, below=True, failed=failed):
                    short = (needed - value) if below else (value - needed)

                    def num(x):
                        return x if isinstance(x, int) else round(float(x), 3)
                    failed.append({"check": check, "value": num(value), "needed": num(needed),
                                   "short_by": num(short)})
                n, med = int(d["counts"][p]), float(d["med_i"][p])
                # the RITA-style score (long series) ...
                if n < self.min_conn:
                    miss("connections >= min_connections", n, self.min_conn)
                if med < self.min_interval:
                    miss("interval_median_s >= min_interval", med, self.min_interval)
                if d["jit_i"][p] >= d["allowed"][p]:
                    miss("interval_jitter < jitter_allowed", d["jit_i"][p], d["allowed"][p],
                         below=False)
                # ... and the rhythm test of the first connections (short series)
                if self.rhythm_p > 0:
                    if n < self.rhythm_min:
                        miss("connections >= rhythm_min_connections", n, self.rhythm_min)
                    _chance(failed, "p_random <= rhythm_p", d["log10_p"][p], self.rhythm_p)
                    if d["sizes"][p] <= 0:
                        miss("size_jitter < size_jitter setting", d["jit_b"][p],
                             self.size_jitter, below=False)
                # ... and the new-peer test (every interval; a destination new to the network)
                if self.new_peer_p > 0 and d["new_peer"][p]:
                    if n < self.new_peer_min:
                        miss("connections >= new_peer_min_connections", n, self.new_peer_min)
                    _chance(failed, "p_random_all <= new_peer_p", d["log10_p_all"][p],
                            self.new_peer_p)
                if best[s] < self.threshold:
                    miss("score >= threshold", max(best[s], 0.0), self.threshold)
                if d["med_b"][p] > self.max_bytes:
                    miss("bytes_median <= max_bytes", d["med_b"][p], self.max_bytes,
                         below=False)
                known = self._known(label)
                if known:
                    failed.append({"check": "not known-good", "value": self._known_why(label)})
                if not failed:
                    continue        # it alerted
                kind, src, dst, port, proto = label
                channel = f"{src} -> {dst} (DNS)" if kind == "dns" else \
                    f"{src} -> {dst}:{port}/{proto}"
                out.append({"rule.name": self.name, "channel": channel, "source.ip": src,
                            "destination": dst, "score": round(float(max(best[s], 0.0)), 3),
                            "score_ungated": round(float(d["raw"][p]), 3),
                            "connections": n, "interval_median_s": round(med, 3),
                            **self._measures(d, p), **self._components(d, p),
                            "failed": failed})
        out.sort(key=lambda m: (-m["score_ungated"], m["channel"]))
        return out[:limit]

    def signals(self, flows: pa.Table, packets: pa.Table | None = None) -> list[Alert]:
        """Weak signals for the incident correlator (docs/incidents.md): the near-misses that
        are neither known-good nor bulk transfers, each scored by how close it came:
        ``0.5 x min(1, ungated score / threshold) x min(1, connections / min_connections)``
        (at most 0.5: a rhythm short of a beacon is common in benign traffic)."""
        out = []
        for m in self.near_misses(flows, packets, limit=1_000_000):
            checks = {f["check"] for f in m["failed"]}
            if checks & {"not known-good", "bytes_median <= max_bytes"}:
                continue
            rows = self._channel_flows(flows, m)
            if rows is None or not rows.num_rows:
                continue
            t = ts_us(rows, "event.start")
            fids = list(dict.fromkeys(f for f in rows.column("cyberrange.flow_id").to_pylist()
                                      if f))
            closeness = min(1.0, m["score_ungated"] / self.threshold) * \
                min(1.0, m["connections"] / self.min_conn)
            why = "; ".join(f"{f['check']}: {f['value']}" + (
                f" (needed {f['needed']})" if "needed" in f else "") for f in m["failed"])
            dns = m["channel"].endswith("(DNS)")
            out.append(Alert(
                timestamp=us_to_dt(int(t.min())), start=us_to_dt(int(t.min())),
                end=us_to_dt(int(t.max())), rule_name=self.name, rule_category=self.family,
                technique="T1071.004" if dns else "T1071.001", source_ip=m["source.ip"],
                destination_ip=None if dns else m["destination"],
                message=f"{m['channel']}: {m['connections']} connections every "
                        f"{m['interval_median_s']} s, a rhythm short of a beacon ({why})",
                score=round(0.5 * closeness, 3), kind="signal", dataset="cyberrange.signal",
                evidence={"feature": "beacon_score_ungated", "value": m["score_ungated"],
                          "threshold": self.threshold, "channel": m["channel"],
                          "connections": m["connections"], "failed": m["failed"]},
                flow_ids=fids, alert_id=stable_id(self.name, "signal", m["channel"],
                                                  fids[0] if fids else "")))
        return out

    def _channel_flows(self, flows: pa.Table, m: dict) -> pa.Table | None:
        """The flows of a near-miss's series: its address pair, port and transport, or (DNS)
        its source's queries under the registered domain."""
        src = pc.fill_null(pc.equal(flows.column("source.ip"), m["source.ip"]), False)
        if m["channel"].endswith("(DNS)"):
            names = flows.column("dns.question.name") \
                if "dns.question.name" in flows.column_names else None
            if names is None:
                return None
            q = flows.filter(pc.and_(src, pc.is_valid(names)))
            if not q.num_rows:
                return q
            reg = registered_domain(q.column("dns.question.name").combine_chunks(),
                                    self.domain_labels)
            return q.filter(pc.fill_null(pc.equal(reg, m["destination"]), False))
        port, proto = m["channel"].rsplit(":", 1)[1].split("/")
        keep = pc.and_(src, pc.fill_null(pc.and_(
            pc.equal(flows.column("destination.ip"), m["destination"]),
            pc.and_(pc.equal(flows.column("destination.port"), int(port)),
                    pc.equal(flows.column("network.transport"), proto))), False))
        return flows.filter(keep)
