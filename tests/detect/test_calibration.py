"""Calibration of the learned detectors for a false-alert target (cyberrange/detect/_learned.py):
the threshold read from held-out benign scores holds on new benign samples of the same
distribution; the episode models; the setting checks. Synthetic scores, no twin."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from test_detect import T0, table
from test_detect_iforest import benign

from cyberrange.detect._learned import (
    conservative_threshold,
    episode_count,
    episodes,
    event_budget,
    quiet_threshold,
    scattered_budget,
)
from cyberrange.detect.iforest import IsolationForestDetector
from cyberrange.detect.kitnet import KitNETDetector
from cyberrange.detect.registry import load_detector_file
from cyberrange.errors import UserError

DISTS = {"gamma": stats.gamma(2.0, scale=0.05), "normal": stats.norm(0.0, 1.0),
         "lognormal": stats.lognorm(0.5)}


@pytest.mark.parametrize("dist", sorted(DISTS))
def test_order_statistic_holds_on_fresh_samples(dist):
    """n = 2000 held-out scores, budget 0.5 %: over 300 draws the true exceedance probability
    of the threshold is <= the budget in >= 90 % of them (confidence 0.9), and the threshold
    is not absurdly high (median exceedance >= budget / 4)."""
    d, rng = DISTS[dist], np.random.default_rng(1)
    budget, ok, ex = 0.005, 0, []
    for _ in range(300):
        cal = conservative_threshold(d.rvs(2000, random_state=rng), budget, 0.9)
        assert cal.method == "order statistic" and cal.rank >= 1
        p = float(d.sf(cal.threshold))
        ok += p <= budget
        ex.append(p)
    assert ok / 300 >= 0.87             # 0.9 in theory; 3 points of Monte Carlo slack
    assert np.median(ex) >= budget / 4


@pytest.mark.parametrize("dist", ["gamma", "normal"])
def test_exponential_tail_when_the_baseline_is_short(dist):
    """150 held-out scores cannot bound a 0.2 % exceedance with any order statistic
    ((1 - p)^n = 0.74): the exponential tail extrapolates beyond the maximum, and holds on fresh
    samples of distributions whose tail is no heavier than exponential."""
    d, rng = DISTS[dist], np.random.default_rng(2)
    budget, ok = 0.002, 0
    for _ in range(300):
        x = d.rvs(150, random_state=rng)
        cal = conservative_threshold(x, budget, 0.9)
        assert cal.method == "exponential tail" and cal.threshold >= x.max()
        ok += d.sf(cal.threshold) <= budget
    assert ok / 300 >= 0.9


def test_threshold_on_held_out_scores_holds_for_new_events_in_a_run():
    """End to end on events: scores from one distribution, the threshold from a held-out
    sample, then the share of 200k new events above it <= the budget (at 0.9 confidence,
    so checked as the 95th percentile over 40 repetitions staying <= 1.3 x the budget)."""
    rng = np.random.default_rng(3)
    shares = []
    for _ in range(40):
        cal = conservative_threshold(rng.gamma(2.0, 0.05, 3000), 0.003, 0.9)
        shares.append(float((rng.gamma(2.0, 0.05, 200_000) > cal.threshold).mean()))
    assert np.quantile(shares, 0.5) <= 0.003 and np.quantile(shares, 0.95) <= 0.0039


def test_event_budget_bounds_alerts_by_events_per_alert():
    # 10 per 10k flows, 5 events per alert, 1000 flows carried by 4000 packets
    assert event_budget(10, 5, 1000, 4000) == pytest.approx(10 * 5 * 1000 / (10_000 * 4000))
    assert event_budget(10, 5, 1000, 0) == 1.0
    # the bound it rests on: alerts <= flagged events / min_events, whatever the grouping
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = 500
        t = np.sort(rng.integers(0, 60_000_000, n))
        src = [f"h{i}" for i in rng.integers(0, 8, n)]
        flagged = rng.random(n) < rng.uniform(0.01, 0.5)
        got = episodes(t, src, flagged, 10_000_000, 5)
        codes = np.unique(src, return_inverse=True)[1]
        assert len(got) == episode_count(t, codes, flagged, 10_000_000, 5)
        assert len(got) <= flagged.sum() / 5


def _events(seconds, seed, sources=12, rate=8.0):
    """Benign-like event times (us) and sources: bursts (a page load) and gaps."""
    rng = np.random.default_rng(seed)
    t, src = [], []
    for s in range(sources):
        now = rng.uniform(0, 2)
        while now < seconds:
            burst = rng.integers(1, 6)
            t += list(now + np.arange(burst) * 0.05)
            src += [s] * int(burst)
            now += rng.exponential(sources / rate * 3)
    order = np.argsort(t, kind="stable")
    return (np.asarray(t)[order] * 1e6).astype(np.int64), np.asarray(src)[order]


def test_scattered_budget_meets_the_target_on_a_longer_run():
    """The share p from 60 s of events, flagged at random in a 10x longer run of the same
    kind, raises <= the target alerts per 10k events (flows = events here) on average; and
    p is larger than the worst-case bound, which is the point of the model."""
    t, src = _events(60, 5)
    p = scattered_budget(t, list(src), 10_000_000, 5, len(t), 10.0, 0.5, seed=1)
    assert event_budget(10.0, 5, len(t), len(t)) < p < 0.5
    t2, src2 = _events(600, 6)
    rng = np.random.default_rng(7)
    rates = [episode_count(t2, src2, rng.random(len(t2)) < p, 10_000_000, 5) / len(t2) * 1e4
             for _ in range(100)]
    assert np.mean(rates) <= 10.0 * 1.25


def test_quiet_threshold_is_where_the_held_out_baseline_stops_alerting():
    t = np.arange(20, dtype=np.int64) * 1_000_000       # one event a second
    codes = np.array([0] * 10 + [1] * 10)
    scores = np.full(20, 0.1)
    scores[10:16] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]       # source 1: a burst of six
    q = quiet_threshold(scores, t, codes, 10_000_000, 5, allowed=0)
    assert q == pytest.approx(0.5)     # above 0.5 only four of the burst remain: no alert
    assert episode_count(t, codes, scores > q, 10_000_000, 5) == 0
    assert episode_count(t, codes, scores > 0.45, 10_000_000, 5) == 1
    # everything flagged: two alerts (ten events of each source)
    assert quiet_threshold(scores, t, codes, 10_000_000, 5, allowed=1) == pytest.approx(0.1)
    assert quiet_threshold(scores, t, codes, 10_000_000, 5, allowed=2) == float("-inf")


def _benign_rows(t0, seconds, seed):
    return benign(t0, seconds, seed=seed)


def test_iforest_meets_its_target_on_new_benign_flows_and_says_how():
    """Fitted on 2 minutes of synthetic benign flows, the default (target 10 per 10k) raises
    <= 10 false alerts per 10k on 20 minutes of new benign flows from the same process, and
    the in-sample 95 % rule it replaces raises more; the evidence names the method."""
    base = _benign_rows(T0, 120, 11)
    later = table(_benign_rows(T0 + 120, 1200, 12))
    det = IsolationForestDetector("flow-anomaly")
    det.fit(table(base))
    cal = det.model["calibration"]
    assert cal["target_per_10k"] == 10 and cal["held_out"] > 0 and cal["event_budget"] > 0
    assert cal["method"].startswith(("order statistic", "exponential tail"))
    false = len(det.detect(later))
    assert false / later.num_rows * 10_000 <= 10
    legacy = IsolationForestDetector("legacy", calibration="quantile")
    legacy.fit(table(base))
    assert det.model["threshold"] > legacy.model["threshold"]
    assert len(legacy.detect(later)) >= false


def test_iforest_target_still_catches_a_flow_kind_the_baseline_never_had():
    """Slow one-way transfers with inter-arrival times (the synthetic baseline has none) from
    one source: isolated at once, an alert under the default calibration."""
    base = _benign_rows(T0, 120, 11)
    rows = _benign_rows(T0 + 120, 60, 13)
    atk = []
    for i in range(8):
        r = dict(rows[0])
        r.update({"source.ip": "10.10.2.66", "destination.ip": "203.0.113.9",
                  "destination.port": 8443, "cyberrange.flow_id": f"atk{i}",
                  "network.community_id": f"1:atk{i}", "source.packets": 300,
                  "source.bytes": 400_000, "destination.packets": 2, "destination.bytes": 120,
                  "event.duration": 30 * 10**9, "cyberrange.iat.mean_us": 100_000,
                  "cyberrange.iat.max_us": 900_000})
        r["@timestamp"] = r["event.start"] = int((T0 + 150 + i) * 1e6)
        r["event.end"] = r["event.start"] + 30_000_000
        atk.append(r)
    det = IsolationForestDetector("flow-anomaly")
    det.fit(table(base))
    hits = [a for a in det.detect(table(rows + atk)) if a.source_ip == "10.10.2.66"]
    assert len(hits) == 1 and len(hits[0].flow_ids) == 8
    assert hits[0].evidence["calibration"]["target_per_10k"] == 10


def _yaml(tmp_path, family, settings):
    p = tmp_path / "x.yaml"
    p.write_text("detectors:\n  - name: learned\n    family: " + family + "\n    settings:\n"
                 + "".join(f"      {k}: {v}\n" for k, v in settings.items()))
    return p


@pytest.mark.parametrize("family", ["iforest", "kitnet"])
@pytest.mark.parametrize("value", ["0", "-5", "ten", "true"])
def test_a_target_of_zero_or_less_is_a_setting_error_at_its_line(tmp_path, family, value):
    p = _yaml(tmp_path, family, {"min_" + ("flows" if family == "iforest" else "packets"): 5,
                                 "false_alert_target": value})
    with pytest.raises(UserError) as e:
        load_detector_file(p)
    assert e.value.file == str(p) and e.value.line == 6
    assert str(e.value).startswith(f"{p}:6:") and "false_alert_target" in str(e.value)
    assert "> 0" in str(e.value)


@pytest.mark.parametrize("key,value", [("clustering", "sometimes"), ("confidence", 1.0),
                                       ("confidence", 0.2), ("folds", 1), ("max_share", 0.9),
                                       ("calibration", "magic")])
def test_other_calibration_settings_are_checked(tmp_path, key, value):
    p = _yaml(tmp_path, "iforest", {key: value})
    with pytest.raises(UserError) as e:
        load_detector_file(p)
    assert e.value.line == 5 and key in str(e.value)


def test_kitnet_reads_its_target_per_flow_and_falls_back_to_flow_ids():
    """Without flow records the per-packet budget uses the baseline packets' distinct flow
    ids; the calibration is recorded with the unit (log RMSE)."""
    from test_detect_kitnet import benign_packets, packets
    det = KitNETDetector("packet-anomaly", epochs=2)
    det.fit(None, packets(benign_packets(T0, 10)))
    cal = det.model["calibration"]
    assert cal["clustering"] == "worst" and cal["score"] == "log RMSE"
    assert 0 < cal["event_budget"] < 0.01 and det.model["threshold"] > 0
