"""password-spray, issue 15: a login client's pace is the upper confidence bound of its own
counts (``pace_confidence``), not the counts -- one login in a 30 s warm-up is a thin estimate.
Synthetic flows; the shapes of tests/detect/test_detect_bruteforce.py."""
from __future__ import annotations

import math

import pytest
from records import records as table
from test_detect_bruteforce import SERVERS, T0, attempt, spray_round

from cyberrange.detect.base import SettingError
from cyberrange.detect.bruteforce import BruteForceDetector, pace_bound
from cyberrange.detect.registry import load_detector_file

WS, PEER, ATT = "10.73.0.30", "10.73.0.31", "10.73.0.66"


def shipped() -> BruteForceDetector:
    return {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}["password-spray"]


def counted() -> BruteForceDetector:
    """The shipped settings without ``pace_confidence``: the pace as counted (before)."""
    return BruteForceDetector("counted", mode="spray", window=30, threshold=7,
                              novice_threshold=5, rate_alpha=1e-4, pace_history=600,
                              peer_prefix=24)


def poisson_cdf(n: int, mu: float) -> float:
    return sum(math.exp(-mu) * mu ** k / math.factorial(k) for k in range(n + 1))


def warm_up(logins: int) -> list[dict]:
    """30 s: WS logs in ``logins`` times, its one /24 peer once (as thin as WS), the
    attacker's foothold only browses."""
    rows = [attempt(T0 + 1 + 5 * i, WS, SERVERS[i % 3]) for i in range(logins)]
    rows += [attempt(T0 + 2, PEER, SERVERS[1]), attempt(T0 + 29.5, ATT, "10.73.0.99", port=80)]
    return rows


# 7 legitimate logins at 3 servers in 19 s: the shape of the benign evaluation split's last
# false alert (a client with one warm-up login and one peer with one)
GAPS = [0, 2.5, 5.1, 9.0, 12.4, 15.8, 19.0]


def test_the_bound_is_the_exact_poisson_upper_bound():
    assert pace_bound(0, 0.9) == pytest.approx(-math.log(0.1))          # 2.303
    assert pace_bound(1, 0.9) == pytest.approx(3.890, abs=1e-3)         # Garwood's table
    assert pace_bound(5, 0.95) == pytest.approx(10.513, abs=1e-3)
    assert pace_bound(1, 0.7) == pytest.approx(2.439, abs=1e-3)
    for n in range(8):
        assert pace_bound(n, 0) == n                                    # off: the count
        for conf in (0.5, 0.7, 0.9):
            mu = pace_bound(n, conf)
            assert mu > n                                               # never below the count
            assert poisson_cdf(n, mu) == pytest.approx(1 - conf, abs=1e-9)
            assert pace_bound(n + 1, conf) > mu
    assert pace_bound(1, 0.9) > pace_bound(1, 0.7) > pace_bound(1, 0.5)


def test_thresholds_by_warm_up_logins():
    """The table of docs/detectors/bruteforce.md: 0 logins is a foothold (5, either way)."""
    before, after = [], []
    for n in range(6):
        for det, out in ((counted(), before), (shipped(), after)):
            det.fit(table(warm_up(n)))
            out.append(det.threshold_of(WS))
    assert before == [5, 7, 10, 12, 14, 16]
    assert after == [5, 11, 14, 16, 18, 20]


def test_one_warm_up_login_and_a_burst_of_seven_is_not_a_spray():
    det = shipped()
    det.fit(table(warm_up(1)))
    assert det.peer_mean(WS) == pytest.approx(1.0)               # the peer is as thin
    day = [attempt(T0 + 100 + g, WS, SERVERS[i % 3]) for i, g in enumerate(GAPS)]
    assert det.detect(table(day)) == []
    assert det.threshold_of(WS) == 11
    before = counted()
    before.fit(table(warm_up(1)))
    assert before.threshold_of(WS) == 7
    (a,) = before.detect(table(day))                              # the false alert it was
    assert a.evidence["value"] == 7


def test_a_foothold_spray_of_five_is_still_caught():
    det = shipped()
    det.fit(table(warm_up(1)))
    rows = [attempt(T0 + 100 + i, ATT, SERVERS[i % 2]) for i in range(5)]   # 5 in 4 s
    (a,) = det.detect(table(rows))
    assert a.evidence["threshold"] == 5 and a.evidence["value"] == 5
    assert a.evidence["baseline"]["login_client"] is False
    assert "no login in the baseline" in a.message
    assert det.detect(table(rows[:4])) == []


def test_a_spray_well_above_the_clients_bound_is_still_caught():
    det = shipped()
    det.fit(table(warm_up(1)))
    (a,) = det.detect(table(spray_round(T0 + 100, servers=SERVERS[:2], users=7, pause=0.5,
                                        src=WS)))                 # 14 in 6.5 s
    assert a.evidence["threshold"] == 11 and a.evidence["value"] == 14
    assert a.timestamp.timestamp() == pytest.approx(T0 + 105)     # the 11th attempt
    base = a.evidence["baseline"]
    assert base["baseline_attempts"] == 1 and base["pace_confidence"] == 0.7
    assert base["expected_per_window"] == pytest.approx(2.44)
    assert "70% upper bound" in a.message
    assert det.detect(table(spray_round(T0 + 100, servers=SERVERS[:2], users=5, pause=0.5,
                                        src=WS))) == []           # 10 < 11


def test_the_history_count_is_bounded_too():
    """``pace_history``: the client's own attempts before the window set its pace as their
    upper bound as well (per window: bound(n) x window / history length). 24 logins in the
    300 s before the window: 2.4 per window as counted (11), below the warm-up's bound (2.44,
    11), but their own bound is 2.74 per window: 12."""
    det = shipped()
    det.fit(table(warm_up(1)))
    t, t_first = int((T0 + 330) * 1e6), int(T0 * 1e6)
    times = [int((T0 + 40 + 10 * i) * 1e6) for i in range(24)]  # 24 in T0+40..T0+270
    thr, mu = det.threshold_at(WS, t, times, t_first)
    assert mu == pytest.approx(pace_bound(24, 0.7) * 30 / 300) and thr == 12
    assert det.threshold_of(WS) == 11                              # the warm-up alone
    plain = counted()
    plain.fit(table(warm_up(1)))
    assert plain.threshold_at(WS, t, times, t_first) == (11, pytest.approx(2.4))
    few = times[:5]                                                # 5 in 300 s: the warm-up's
    assert det.threshold_at(WS, t, few, t_first) == (11, pytest.approx(det.expected(WS)))


@pytest.mark.parametrize("bad", [0.3, 1, 1.5, -0.1, "high", True])
def test_pace_confidence_setting(bad):
    with pytest.raises(SettingError) as e:
        BruteForceDetector("x", mode="spray", rate_alpha=1e-4, pace_confidence=bad)
    assert e.value.setting == "pace_confidence"
    assert BruteForceDetector("x", mode="spray", pace_confidence=0).pace_conf == 0
