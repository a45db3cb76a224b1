"""beacon family: the rhythm test of short series (synthetic arrivals, no twin) -- a slow,
jittered beacon with only 5-7 check-ins is flagged, human-like irregular traffic is not, and the
chance it is judged by is exact; the baseline's shared services are known-good."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import beacon_envelope as env

from cyberrange.detect.base import SettingError
from cyberrange.detect.beacon import BeaconDetector, log10_p_random

EMPTY = env._table([], env.PACKET_RECORD_SCHEMA)


def beacon(interval, jitter, count, seed, sizes=(0.05,)):
    rows = env.Rows()
    rng = np.random.default_rng(seed)
    t = env.T0 + 5
    for _ in range(count):
        rows.flow(t, env.IMPLANT, env.C2, 443, 600 * (1 + rng.uniform(-sizes[0], sizes[0])))
        t += interval * (1 + rng.uniform(-jitter, jitter))
    return rows.table()


def flagged(table, **settings) -> list:
    return BeaconDetector("c2-beacon", **settings).detect(table, EMPTY)


@pytest.mark.parametrize("k", [3, 5, 6])
def test_chance_for_random_arrivals_is_exact(k):
    """log10_p_random is the exact chance that k exponential intervals are as regular: checked
    against 200,000 simulated Poisson series at three spreads."""
    rng = np.random.default_rng(k)
    x = rng.exponential(1.0, (200_000, k))
    spread = (x.max(1) - x.min(1)) / (x.max(1) + x.min(1))
    for s0 in (0.1, 0.3, 0.5):
        p = 10 ** float(log10_p_random(np.array([k]), np.array([s0]))[0])
        seen = float(np.mean(spread <= s0))
        assert seen == pytest.approx(p, rel=0.1, abs=2e-4), (k, s0, p, seen)
    # one interval says nothing; clockwork is very unlikely for random arrivals
    assert log10_p_random(np.array([1]), np.array([0.0]))[0] == 0.0
    assert log10_p_random(np.array([6]), np.array([0.0]))[0] < -10


def test_45s_beacon_with_30pct_jitter_and_7_checkins_is_flagged():
    """7 check-ins (what a 45 s beacon makes in under 5 minutes) at +-30 %: the RITA score needs
    8, the rhythm test catches it (simulated recall 0.97 at a chance of 1 in 1000)."""
    hits = []
    for seed in range(20):
        alerts = flagged(beacon(45, 0.3, 7, seed))
        hits.append(len(alerts) == 1)
        if alerts:
            ev = alerts[0].evidence
            assert ev["route"] == "rhythm" and ev["p_random"] <= 0.001
            assert ev["connections"] == 7 and ev["thresholds"]["rhythm_p"] == 0.001
            assert 0 <= ev["interval_spread"] < 0.3 and "rhythm of the first 7" in \
                alerts[0].message
    assert sum(hits) >= 18, hits


def test_6_checkins_at_20pct_flagged_and_4_checkins_never():
    """The envelope edge: 6 check-ins carry a rhythm up to +-20 % jitter; 4 check-ins cannot be
    told from random arrivals, not even a perfect clock (rhythm_min_connections 5)."""
    assert sum(bool(flagged(beacon(45, 0.2, 6, seed))) for seed in range(20)) >= 18
    for seed in range(5):
        assert flagged(beacon(45, 0.0, 4, seed)) == []
        (m,) = BeaconDetector("c2-beacon").near_misses(beacon(45, 0.0, 4, seed), EMPTY)
        assert {"check": "connections >= rhythm_min_connections", "value": 4, "needed": 5,
                "short_by": 1} in m["failed"]


def human_visits(rng, n):
    """A person's visits to one server: random (Poisson) gaps of about a minute."""
    rows = env.Rows()
    t = env.T0 + rng.uniform(0, 30)
    for _ in range(n):
        rows.flow(t, "10.60.4.20", "10.60.1.5", 443, 600 * (1 + rng.uniform(-0.05, 0.05)))
        t += rng.exponential(60.0)
    return rows.table()


def human_sessions(rng):
    """Bursts of a few requests (a page and its parts) minutes apart: clumped, not periodic."""
    rows = env.Rows()
    t = env.T0
    for _ in range(int(rng.integers(2, 4))):
        t += rng.uniform(30, 400)
        for _ in range(int(rng.integers(2, 5))):
            rows.flow(t, "10.60.4.21", "10.60.1.6", 443, 600)
            t += rng.uniform(0.2, 6)
    return rows.table()


def test_human_like_irregular_traffic_is_not_flagged():
    """1,500 series of 5-7 random visits (same-size requests, the harsh case): the chance of a
    false rhythm is 1 in 1000 per series by construction, so at most a handful; clumped sessions
    never."""
    rng = np.random.default_rng(11)
    det = BeaconDetector("c2-beacon")
    false = sum(bool(det.detect(human_visits(rng, int(rng.integers(5, 8))), EMPTY))
                for _ in range(1500))
    assert false <= 6, false
    assert not any(det.detect(human_sessions(rng), EMPTY) for _ in range(300))


def test_rhythm_needs_same_size_checkins_and_can_be_turned_off():
    # perfect timing, request sizes all over the place: not a check-in
    assert flagged(beacon(30, 0.0, 7, 1, sizes=(0.9,))) == []
    assert flagged(beacon(30, 0.0, 7, 1)) != []
    assert flagged(beacon(30, 0.0, 7, 1), rhythm_p=0) == []      # off: RITA's 8 again
    with pytest.raises(SettingError):
        BeaconDetector("c2-beacon", rhythm_p=1.5)


def test_shared_service_of_the_baseline_is_known_good():
    """A server port 3 sources used in the baseline (a COP server every client reports to) is
    the network's own; a port only the implant used is not."""
    base = env.Rows()
    for i, src in enumerate(("10.60.4.30", "10.60.4.31", "10.60.4.32")):
        base.flow(env.T0 + i, src, "10.60.1.9", 8080, 500)
    base.flow(env.T0 + 4, env.IMPLANT, env.C2, 443, 600)
    base.flow(env.T0 + 5, "10.60.4.30", env.C2, 443, 600)
    rows = env.Rows()
    for k in range(10):
        rows.flow(env.T0 + 60 + 5 * k, "10.60.4.40", "10.60.1.9", 8080, 500)
        rows.flow(env.T0 + 61 + 30 * k, env.IMPLANT, env.C2, 443, 600)
    det = BeaconDetector("c2-beacon")
    det.fit(base.table(), EMPTY)
    assert [a.destination_ip for a in det.detect(rows.table(), EMPTY)] == [env.C2]
    (m,) = [m for m in det.near_misses(rows.table(), EMPTY) if "10.60.1.9" in m["channel"]]
    assert {"check": "not known-good", "value": "service of the baseline"} in m["failed"]
    off = BeaconDetector("c2-beacon", baseline_peers=0)
    off.fit(base.table(), EMPTY)
    assert {a.destination_ip for a in off.detect(rows.table(), EMPTY)} == {env.C2, "10.60.1.9"}
