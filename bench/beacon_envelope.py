"""Beacon detection envelope on synthetic flow tables (no twin): recall per (interval, jitter)
and false alerts on benign-looking noise.

    .venv/bin/python bench/beacon_envelope.py                 # the current detector
    .venv/bin/python bench/beacon_envelope.py --before HEAD~3  # also the detector of a git ref

A beacon is ``count`` HTTP check-ins (one TCP connection each) at ``interval * (1 +- U(jitter))``,
with request sizes varying by +-5 %; it sits among the implant's own browsing. Noise: Poisson
visitors (8-60 visits, mean gap 3-400 s) and bursty sessions, all with the same shape of request
sizes; every alert on noise is a false alert. Ground truth is the generator's, never the detector's.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA, PACKET_RECORD_SCHEMA  # noqa: E402

T0 = 1_750_000_000.0
IMPLANT, C2 = "10.60.3.66", "10.61.250.10"
INTERVALS = (10, 30, 60, 120, 300)
JITTERS = (0.0, 0.2, 0.4, 0.5, 0.6)


def _table(rows, schema):
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        cols[f.name] = pa.array(vals, pa.int64()).cast(f.type) if pa.types.is_timestamp(f.type) \
            else pa.array(vals, f.type)
    return pa.table(cols, schema=schema)


class Rows:
    def __init__(self):
        self.rows, self.n = [], 0

    def flow(self, t, src, dst, dport, sbytes):
        self.n += 1
        fid = hashlib.sha1(f"{self.n}|{src}|{dst}".encode()).hexdigest()[:16]
        us = int(round(t * 1e6))
        self.rows.append({
            "@timestamp": us, "event.start": us, "event.end": us + 20_000,
            "event.duration": 2 * 10**7, "observer.name": "s1", "source.ip": src,
            "source.port": 40000 + self.n % 20000, "source.packets": 6, "source.bytes": int(sbytes),
            "destination.ip": dst, "destination.port": dport, "destination.packets": 5,
            "destination.bytes": 900, "network.transport": "tcp", "network.packets": 11,
            "network.bytes": int(sbytes) + 900, "network.community_id": f"1:{fid}",
            "cyberrange.flow_id": fid, "cyberrange.tcp_state": "SF",
            "cyberrange.tcp_flags": "SAFP"})

    def table(self):
        return _table(self.rows, FLOW_RECORD_SCHEMA)


def beacon(rows, rng, interval, jitter, count, t0=T0 + 5):
    t = t0
    for _ in range(count):
        rows.flow(t, IMPLANT, C2, 443, 600 * (1 + rng.uniform(-0.05, 0.05)))
        t += interval * (1 + rng.uniform(-jitter, jitter))


def noise(rows, rng, n_series=120, host_prefix="10.60.4."):
    """Benign-looking series: Poisson visitors and bursty sessions (no rhythm)."""
    for i in range(n_series):
        src = f"{host_prefix}{10 + i % 200}"
        dst = f"10.60.1.{1 + i % 50}"
        n = int(rng.integers(8, 61))
        mean = float(rng.choice([3, 10, 30, 60, 120, 400]))
        t = T0 + float(rng.uniform(0, 60))
        if i % 3 == 2:  # bursts of 2-6 requests, long pauses (a person reading pages)
            k = 0
            while k < n:
                for _ in range(int(rng.integers(2, 7))):
                    rows.flow(t, src, dst, 80, rng.choice([400, 420, 440, 610]))
                    t += float(rng.exponential(2.0))
                    k += 1
                t += float(rng.exponential(mean * 3))
        else:
            for _ in range(n):
                rows.flow(t, src, dst, 443, rng.choice([400, 420, 440, 610]))
                t += float(rng.exponential(mean))


def load_detector(ref: str | None):
    """The BeaconDetector class of the working tree, or of git ``ref`` (as a sibling module,
    so its relative imports resolve)."""
    if ref is None:
        from cyberrange.detect.beacon import BeaconDetector
        return BeaconDetector
    src = subprocess.run(["git", "show", f"{ref}:cyberrange/detect/beacon.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "_beacon_before.py"
    path.write_text(src)
    import cyberrange.detect  # noqa: F401  (parent package for the relative imports)
    spec = importlib.util.spec_from_file_location("cyberrange.detect._beacon_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.BeaconDetector


def envelope(cls, *, trials=20, count=10, intervals=INTERVALS, jitters=JITTERS, settings=None):
    """recall[(interval, jitter)] over ``trials`` beacons among noise, and false alerts."""
    recall, false_alerts, noise_series = {}, 0, 0
    empty = _table([], PACKET_RECORD_SCHEMA)
    for iv in intervals:
        for j in jitters:
            hit = 0
            for seed in range(trials):
                rng = np.random.default_rng(hash((iv, int(j * 100), seed)) % 2**32)
                rows = Rows()
                beacon(rows, rng, iv, j, count)
                # the implant's own browsing to another server, and a little noise
                noise(rows, rng, n_series=6, host_prefix="10.60.3.")
                det = cls("c2-beacon", **(settings or {}))
                alerts = det.detect(rows.table(), empty)
                hit += any(a.destination_ip == C2 for a in alerts)
                false_alerts += sum(a.destination_ip != C2 for a in alerts)
                noise_series += 6
            recall[(iv, j)] = hit / trials
    for seed in range(trials):
        rows = Rows()
        noise(rows, np.random.default_rng(10_000 + seed))
        noise_series += 120
        false_alerts += len(cls("c2-beacon", **(settings or {})).detect(rows.table(), empty))
    return recall, false_alerts, noise_series


def table_md(recall, intervals=INTERVALS, jitters=JITTERS, before=None) -> str:
    head = "| interval \\ jitter | " + " | ".join(f"±{j:.0%}" for j in jitters) + " |"
    lines = [head, "|---" * (len(jitters) + 1) + "|"]
    for iv in intervals:
        cells = []
        for j in jitters:
            now = f"{recall[(iv, j)]:.2f}"
            cells.append(f"{before[(iv, j)]:.2f} → {now}" if before else now)
        lines.append(f"| {iv} s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", metavar="GIT_REF", help="also measure the detector of this ref")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--count", type=int, default=10, help="check-ins per beacon")
    a = ap.parse_args(argv)
    before = None
    if a.before:
        before, fa_b, ns = envelope(load_detector(a.before), trials=a.trials, count=a.count)
        print(f"before ({a.before}): false alerts {fa_b} on {ns} noise series")
    now, fa, ns = envelope(load_detector(None), trials=a.trials, count=a.count)
    print(f"now: false alerts {fa} on {ns} noise series")
    print(f"recall, {a.count} check-ins, {a.trials} beacons per cell"
          + (" (before → now)" if before else ""))
    print(table_md(now, before=before))


if __name__ == "__main__":
    main()
