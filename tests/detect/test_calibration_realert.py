"""Per-source alert suppression of the learned families (``realert``,
docs/detectors/learned-calibration.md "One alert per source and period"): the grouping itself,
the vectorised count the calibration's Monte Carlo and its quiet step use, and iforest raising
one alert for a source with three bursts. Synthetic events, no twin."""
from __future__ import annotations

import numpy as np
import pytest
from test_calibration import _events, _yaml
from test_detect import T0, table
from test_detect_iforest import benign

from cyberrange.detect._learned import (
    episode_count,
    episodes,
    quiet_threshold,
    scattered_budget,
    suppress,
)
from cyberrange.detect.iforest import IsolationForestDetector
from cyberrange.detect.registry import load_detector_file
from cyberrange.errors import UserError

S = 1_000_000


def _bursts(starts_s, source, size=6, step_s=0.5):
    t = [int((s + k * step_s) * S) for s in starts_s for k in range(size)]
    return t, [source] * len(t)


def test_three_bursts_of_one_source_are_one_alert_within_the_period():
    """Bursts at 0, 30 and 60 s (6 flagged events each, episodes of >= 5 within 10 s): three
    episodes; with realert 120 s one alert holding all 18 events, crossing at the first burst;
    with realert 50 s two (60 s is past the first alert's period); another source keeps its
    own alert."""
    t1, s1 = _bursts([0, 30, 60], "a")
    t2, s2 = _bursts([20], "b")
    t = np.asarray(t1 + t2, np.int64)
    src = s1 + s2
    flagged = np.ones(len(t), bool)
    eps = episodes(t, src, flagged, 10 * S, 5)
    assert [e.source for e in eps] == ["a", "a", "a", "b"]
    one = suppress(eps, t, 120 * S)
    assert [(e.source, len(e.rows)) for e in one] == [("a", 18), ("b", 6)]
    assert t[one[0].rows[one[0].crossed]] == t1[4]           # raised when burst 1 crossed
    two = suppress(episodes(t, src, flagged, 10 * S, 5), t, 50 * S)
    assert [(e.source, len(e.rows)) for e in two] == [("a", 12), ("a", 6), ("b", 6)]
    assert len(suppress(episodes(t, src, flagged, 10 * S, 5), t, 0)) == 4      # off


def test_an_episode_in_the_training_window_opens_no_period():
    """The first burst crossed inside the baseline the model learned from (no alert counts
    there): it stays alone, and the two bursts after the baseline make one alert of their own
    instead of vanishing into the baseline's."""
    t1, s1 = _bursts([0, 30, 60], "a")
    t = np.asarray(t1, np.int64)
    eps = episodes(t, s1, np.ones(len(t), bool), 10 * S, 5)
    got = suppress(eps, t, 120 * S, trained_until_us=int(t[5]))
    assert [(len(e.rows), e.merged) for e in got] == [(6, 1), (12, 2)]
    assert t[got[1].rows[got[1].crossed]] == t1[10]


@pytest.mark.parametrize("realert_s", [0, 15, 60])
def test_the_count_the_calibration_uses_is_the_detectors_grouping(realert_s):
    """``episode_count`` (the Monte Carlo's and the quiet step's count) equals the number of
    alerts ``suppress(episodes(...))`` gives, on random sources, times and flags."""
    rng = np.random.default_rng(21)
    for _ in range(60):
        n = 400
        t = np.sort(rng.integers(0, 90 * S, n))
        src = [f"h{i}" for i in rng.integers(0, 6, n)]
        flagged = rng.random(n) < rng.uniform(0.02, 0.6)
        codes = np.unique(src, return_inverse=True)[1]
        got = suppress(episodes(t, src, flagged, 10 * S, 5), t, realert_s * S)
        assert len(got) == episode_count(t, codes, flagged, 10 * S, 5, realert_s * S)
        assert sum(len(e.rows) for e in got) == sum(
            len(e.rows) for e in episodes(t, src, flagged, 10 * S, 5))


def test_monte_carlo_counts_alerts_after_suppression():
    """On a baseline long enough for a source to have two episodes within 120 s, the scattered
    budget with realert is larger than the one without (it counts fewer alerts per flagged
    share), and at that budget random flags on a longer run of the same kind raise <= the
    target alerts per 10k counted with the same suppression (and more without it)."""
    t, src = _events(300, 5, rate=20.0)
    plain = scattered_budget(t, list(src), 10 * S, 5, len(t), 10.0, 0.5, seed=1)
    p = scattered_budget(t, list(src), 10 * S, 5, len(t), 10.0, 0.5, seed=1,
                         realert_us=120 * S)
    assert p > plain * 1.02
    t2, src2 = _events(600, 6, rate=20.0)
    rng = np.random.default_rng(7)
    draws = [rng.random(len(t2)) < p for _ in range(100)]
    supp = [episode_count(t2, src2, f, 10 * S, 5, 120 * S) / len(t2) * 1e4 for f in draws]
    raw = [episode_count(t2, src2, f, 10 * S, 5) / len(t2) * 1e4 for f in draws]
    assert np.mean(supp) <= 10.0 * 1.25
    assert np.mean(raw) >= np.mean(supp)


def test_quiet_step_counts_a_chatty_source_once():
    """Held-out scores: one source with two high bursts 20 s apart. Allowed one alert: without
    suppression the threshold must rise above the second burst; with realert 120 s both bursts
    are one alert, so nothing needs raising."""
    t1, _ = _bursts([0, 20], "a")
    t = np.asarray(t1 + [int((40 + k) * S) for k in range(10)], np.int64)
    codes = np.array([0] * 12 + [1] * 10)
    scores = np.array([0.9] * 6 + [0.8] * 6 + [0.1] * 10)
    assert quiet_threshold(scores, t, codes, 10 * S, 5, allowed=1) == pytest.approx(0.8)
    assert quiet_threshold(scores, t, codes, 10 * S, 5, allowed=1,
                           realert_us=120 * S) == pytest.approx(0.1)


def _burst_rows(t0, n, i0):
    """``n`` slow one-way transfers of 10.10.2.66 (the synthetic baseline has none)."""
    rows = benign(t0, 1, seed=40 + i0)[:1] * n
    out = []
    for i, base in enumerate(rows):
        r = dict(base)
        fid = f"b{i0}-{i}"
        r.update({"source.ip": "10.10.2.66", "destination.ip": "203.0.113.9",
                  "destination.port": 8443, "cyberrange.flow_id": fid,
                  "network.community_id": f"1:{fid}", "source.packets": 300,
                  "source.bytes": 400_000, "destination.packets": 2, "destination.bytes": 120,
                  "event.duration": 30 * 10**9, "cyberrange.iat.mean_us": 100_000,
                  "cyberrange.iat.max_us": 900_000})
        r["@timestamp"] = r["event.start"] = int((t0 + i) * S)
        r["event.end"] = r["event.start"] + 30 * S
        out.append(r)
    return out


def test_iforest_raises_one_alert_for_a_source_with_three_bursts():
    """Three bursts of 8 unusual flows from one source, 30 s apart: three alerts with
    ``realert: 0``, one holding all 24 flows with the default (the evidence says so)."""
    base = table(benign(T0, 120, seed=11))
    later = benign(T0 + 120, 100, seed=13)
    bursts = [r for k, t in enumerate((130, 160, 190)) for r in _burst_rows(T0 + t, 8, k)]
    rows = table(later + bursts)
    hits = {}
    for realert in (0, None):
        det = IsolationForestDetector("flow-anomaly", **({} if realert is None
                                                          else {"realert": realert}))
        det.fit(base)
        hits[realert] = [a for a in det.detect(rows) if a.source_ip == "10.10.2.66"]
    assert len(hits[0]) == 3 and all(len(a.flow_ids) == 8 for a in hits[0])
    (one,) = hits[None]
    assert len(one.flow_ids) == 24 and one.evidence["episodes"] == 3
    assert one.evidence["realert_s"] == IsolationForestDetector.SETTINGS["realert"] > 60
    assert one.start == hits[0][0].start and one.end == hits[0][2].end


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_realert_is_checked(tmp_path, value):
    p = _yaml(tmp_path, "iforest", {"realert": value})
    with pytest.raises(UserError) as e:
        load_detector_file(p)
    assert e.value.line == 5 and "realert" in str(e.value)
