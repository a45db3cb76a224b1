"""password-spray, issue 15: a login client whose warm-up held one login is held to the pace
of its subnet peers (``peer_prefix``) when they log in more -- one login is a thin estimate
of a workstation's pace. Synthetic flows; the shapes of tests/detect/test_detect_bruteforce.py."""
from __future__ import annotations

import pytest
from records import records as table
from test_detect_bruteforce import SERVERS, T0, attempt, spray_round

from cyberrange.detect.base import SettingError
from cyberrange.detect.bruteforce import BruteForceDetector
from cyberrange.detect.registry import load_detector_file

THIN, PEER, LONE, ATT = "10.73.0.30", "10.73.0.31", "10.73.9.30", "10.73.0.66"


def shipped() -> BruteForceDetector:
    return {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}["password-spray"]


def warm_up(peer_logins: int = 4) -> list[dict]:
    """30 s: THIN and LONE log in once each, THIN's /24 peer ``peer_logins`` times, and the
    attacker's foothold only browses."""
    rows = [attempt(T0 + 1, THIN, SERVERS[0]), attempt(T0 + 2, LONE, SERVERS[1]),
            attempt(T0 + 29.5, ATT, "10.73.0.99", port=80)]
    rows += [attempt(T0 + 3 + 6 * i, PEER, SERVERS[i % 3]) for i in range(peer_logins)]
    return rows


# 7 legitimate logins at 3 servers in 19 s: the shape of the benign evaluation split's one
# false alert (issue 15), made here for THIN and LONE alike
GAPS = [0, 2.5, 5.1, 9.0, 12.4, 15.8, 19.0]


def burst(src: str, t0: float) -> list[dict]:
    return [attempt(t0 + g, src, SERVERS[i % 3]) for i, g in enumerate(GAPS)]


def test_a_thin_client_is_held_to_its_busier_peers_pace():
    det = shipped()
    assert det.peer_prefix == 24
    det.fit(table(warm_up()))
    assert det.peer_mean(THIN) == pytest.approx(4.0)         # PEER's 4 logins, not its own 1
    assert det.expected(THIN) == pytest.approx(4.0)
    assert det.threshold_of(THIN) == 14
    assert det.threshold_of(ATT) == 5                        # no login in the baseline: unchanged
    assert det.detect(table(burst(THIN, T0 + 100))) == []
    off = BruteForceDetector("off", mode="spray", window=30, threshold=7, novice_threshold=5,
                             rate_alpha=1e-4, pace_history=600)
    off.fit(table(warm_up()))
    assert off.threshold_of(THIN) == 7                       # its own single login
    assert len(off.detect(table(burst(THIN, T0 + 100)))) == 1    # the false alert it was


def test_a_lone_or_busiest_client_keeps_its_own_pace():
    """Pooling only ever raises a threshold: LONE has no peer in its /24 and keeps its own
    pace (its one login's 70 % upper bound, 2.44: 11; without ``pace_confidence`` 7, and its
    burst alerts -- pooling is not a blanket raise); PEER, busier than THIN, keeps its own
    (4 logins, bound 5.89, above THIN's 1)."""
    det = shipped()
    det.fit(table(warm_up()))
    assert det.peer_mean(LONE) is None and det.threshold_of(LONE) == 11
    counted = BruteForceDetector("counted", mode="spray", window=30, threshold=7,
                                 novice_threshold=5, rate_alpha=1e-4, pace_history=600,
                                 peer_prefix=24)
    counted.fit(table(warm_up()))
    assert counted.peer_mean(LONE) is None and counted.threshold_of(LONE) == 7
    assert len(counted.detect(table(burst(LONE, T0 + 100)))) == 1
    assert counted.expected(PEER) == pytest.approx(4.0)
    assert det.peer_mean(PEER) == pytest.approx(1.0)
    assert det.expected(PEER) == pytest.approx(5.89, abs=0.01)
    quiet_peer = counted
    quiet_peer.fit(table(warm_up(peer_logins=1)))            # a peer as thin as THIN: no help
    assert quiet_peer.threshold_of(THIN) == 7


def test_a_spray_from_the_pooled_client_is_still_caught():
    det = shipped()
    det.fit(table(warm_up()))
    (a,) = det.detect(table(spray_round(T0 + 100, servers=SERVERS[:2], users=8, pause=0.5,
                                        src=THIN)))          # 16 attempts in 8 s
    assert a.evidence["threshold"] == 14
    assert a.evidence["baseline"]["baseline_attempts"] == 1
    assert a.evidence["baseline"]["peer_mean_attempts"] == pytest.approx(4.0)
    assert "subnet peers' pace" in a.message


def test_peer_prefix_setting():
    with pytest.raises(SettingError) as e:
        BruteForceDetector("x", mode="spray", peer_prefix=33)
    assert e.value.setting == "peer_prefix"
    det = BruteForceDetector("x", mode="spray", rate_alpha=1e-4, peer_prefix=16)
    det.fit(table(warm_up() + [attempt(T0 + 4, "10.73.200.5", SERVERS[2])] * 1))
    # /16: PEER (4), LONE (1) and 10.73.200.5 (1) are all THIN's peers
    assert det.peer_mean(THIN) == pytest.approx(2.0)
