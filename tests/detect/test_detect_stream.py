"""Streaming detection: batches in, each alert out once, trainable detectors learn once from
the baseline window before they run."""
from __future__ import annotations

from test_detect import ATTACKER, T0, VICTIM, WS, flow, logins, table, vertical_scan

from cyberrange.detect.base import Alert, Detector, us_to_dt
from cyberrange.detect.portscan import PortScanDetector
from cyberrange.detect.stream import StreamingDetection, lookback_s


def batches(rows, seconds, make=None):
    """Rows cut into consecutive batches of ``seconds`` by flow start (like pcap rotation)."""
    make = make or table
    rows = sorted(rows, key=lambda r: r["@timestamp"])
    out, cur, edge = [], [], rows[0]["@timestamp"] + seconds * 1e6
    for r in rows:
        while r["@timestamp"] >= edge:
            out.append(cur)
            cur, edge = [], edge + seconds * 1e6
        cur.append(r)
    out.append(cur)
    return [make(b) for b in out]


def test_a_scan_spread_over_batches_is_reported_once_when_it_crosses_the_threshold():
    det = PortScanDetector("vertical", mode="ports", window=10, threshold=12)
    rows = [flow(T0 + i, WS, "10.10.1.10", 443, state="SF", flags="SAF", packets=8)
            for i in range(30)]
    rows += vertical_scan(t0=T0 + 20, ports=range(1, 41), rate=4.0)    # 10 s of probes
    got = []
    stream = StreamingDetection([det], horizon_s=60, on_alert=got.append)
    per_batch = [len(stream.feed(None, b)) for b in batches(rows, 2.0)]
    assert len(got) == 1 and sum(per_batch) == 1
    # it came out in the batch that held the 12th distinct port (t = 20 + 11/4 s -> batch 11)
    assert per_batch.index(1) == int((20 + 11 / 4) // 2)
    batch_alerts = det.detect(table(rows))
    assert len(batch_alerts) == 1
    assert got[0].source_ip == batch_alerts[0].source_ip == ATTACKER
    assert got[0].timestamp == batch_alerts[0].timestamp
    s = stream.summary()
    assert s["alerts"] == 1 and s["batches"] == len(per_batch)


def test_an_episode_longer_than_the_horizon_stays_one_alert():
    det = PortScanDetector("vertical", mode="ports", window=10, threshold=12)
    rows = vertical_scan(t0=T0, ports=range(1, 301), rate=2.0)         # 150 s of probing
    got = []
    stream = StreamingDetection([det], horizon_s=30, merge_gap_s=60, on_alert=got.append)
    for b in batches(rows, 2.0):
        stream.feed(None, b)
    assert len(got) == 1


def test_a_second_episode_after_a_quiet_gap_is_a_new_alert():
    det = PortScanDetector("vertical", mode="ports", window=10, threshold=12)
    rows = vertical_scan(t0=T0, ports=range(1, 31), rate=10.0)
    rows += vertical_scan(t0=T0 + 300, ports=range(100, 130), rate=10.0)
    got = []
    stream = StreamingDetection([det], horizon_s=60, merge_gap_s=60, on_alert=got.append)
    for b in batches(rows, 5.0):
        stream.feed(None, b)
    assert len(got) == 2


class Learner(Detector):
    """Alerts on any login from a source not seen in the baseline."""
    family = "test-learner"
    trainable = True
    SETTINGS = {}

    def fit(self, flows, packets=None):
        self.trained = True
        self.fits = getattr(self, "fits", 0) + 1
        self.known = set(flows.column("source.ip").to_pylist())
        self.fit_span = (flows.column("@timestamp")[0].as_py(),
                         flows.column("@timestamp")[-1].as_py())

    def detect(self, flows, packets=None):
        assert self.trained, "ran before it learned"
        out = []
        for r in flows.to_pylist():
            if r["source.ip"] not in self.known:
                t = r["@timestamp"]
                us = int(t.timestamp() * 1e6)
                out.append(Alert(timestamp=us_to_dt(us), start=us_to_dt(us), end=us_to_dt(us),
                                 rule_name=self.name, rule_category=self.family, technique="X",
                                 source_ip=r["source.ip"], destination_ip=r["destination.ip"],
                                 message="new source", score=1.0,
                                 evidence={"feature": "source", "value": r["source.ip"],
                                           "baseline": sorted(self.known)},
                                 flow_ids=[r["cyberrange.flow_id"]]))
        return out


def test_trainable_detectors_learn_once_from_the_baseline_window_then_run():
    det = Learner("learner")
    rows = logins(T0, 20, 1.0, src=WS)                  # 20 s of a known admin
    rows += logins(T0 + 25, 3, 1.0, src=ATTACKER)       # then a newcomer
    got = []
    stream = StreamingDetection([det], horizon_s=120, baseline_s=15, on_alert=got.append)
    for b in batches(rows, 2.0):
        stream.feed(None, b)
    assert det.fits == 1
    lo, hi = det.fit_span
    assert (hi - lo).total_seconds() < 15                # only the baseline window
    assert det.known == {WS}
    # three per-flow alerts of the same detector, source and target 1 s apart: one episode
    assert {a.source_ip for a in got} == {ATTACKER} and len(got) == 1
    assert all(a.destination_ip == VICTIM for a in got)


def test_a_slow_beacon_is_seen_live_although_it_outlasts_the_horizon():
    """One check-in a minute: 8 check-ins take 7 minutes, far past the 120 s horizon; the
    beacon family looks back BEACON_LOOKBACK_S, so the live view raises it as the final store
    does, and the same detector held to the horizon alone (the old behaviour) does not."""
    from test_detect_beacon import browsing, flows_t, http_beacon

    from cyberrange.detect.beacon import BeaconDetector
    from cyberrange.detect.stream import BEACON_LOOKBACK_S, lookback_s
    rows = http_beacon(n=12, interval=60.0, jitter=0.3) + browsing(seconds=800)
    final = [a for a in BeaconDetector("c2-beacon").detect(flows_t(rows))]
    assert len(final) == 1

    def live(det):
        got = []
        stream = StreamingDetection([det], horizon_s=120, on_alert=got.append)
        for b in batches(rows, 10.0, flows_t):
            stream.feed(None, b)
        return got
    det = BeaconDetector("c2-beacon")
    assert lookback_s(det, 120) == BEACON_LOOKBACK_S
    got = live(det)
    assert len(got) == 1 and got[0].source_ip == final[0].source_ip
    held = BeaconDetector("c2-beacon")
    held.lookback_s = 120
    assert live(held) == []


def test_a_slow_scan_rule_gets_twice_its_window_live():
    det = PortScanDetector("slow", mode="ports", window=600, threshold=12)
    assert lookback_s(det, 120) == 1200
    rows = vertical_scan(t0=T0, ports=range(1, 41), rate=0.1)      # one probe every 10 s
    got = []
    stream = StreamingDetection([det], horizon_s=120, on_alert=got.append)
    for b in batches(rows, 10.0):
        stream.feed(None, b)
    assert len(got) == 1 and got[0].source_ip == ATTACKER
