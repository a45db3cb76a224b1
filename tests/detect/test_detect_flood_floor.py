"""udp-flood's trained floor (issue 15 item 2; docs/detectors/flood.md "Floor"): a low-rate UDP
flood at a host quiet in the baseline alerts, the busiest benign UDP of the tuning drills does
not, and a multicast/broadcast group the baseline never saw keeps the absolute threshold. The
shipped instance is used as configured in detectors/flood.yaml."""
from __future__ import annotations

import pytest
from baseline_scenarios import (
    ATT,
    BASE_S,
    DNS,
    FILES,
    T0,
    WS,
    benign,
    flood,
    flow,
    train_and_test,
)

from cyberrange.detect.flood import is_group
from cyberrange.detect.registry import load_detectors

START = T0 + BASE_S + 30          # after the baseline window
NEW_DNS = "10.40.5.54"            # a resolver that was silent during the warm-up


def run(rows, trained=True):
    (d,) = [d for d in load_detectors("detectors") if d.name == "udp-flood"]
    base, whole = train_and_test(rows)
    if trained:
        d.fit(base)
    return d.detect(whole, None), d


def queries(t0, dst, per_second, src=WS):
    """Answered one-datagram DNS queries, ``per_second[i]`` of them in second i."""
    rows = []
    for s, n in enumerate(per_second):
        rows += [flow(t0 + s + k / n, src, dst, 53, transport="udp", spk=1, dpk=1, sbytes=75,
                      duration=0.004) for k in range(n)]
    return rows


def test_a_60_pps_flood_at_a_quiet_host_alerts_when_trained():
    rows = benign() + flood(START, 60, seconds=3, dst=FILES, port=9, mode="udp")
    (a,), d = run(rows)
    assert d.min_pps == 50
    assert a.destination_ip == FILES and a.evidence["threshold"] == 50
    assert a.evidence["baseline"]["peak_pps"] == 0 and a.evidence["value"] == pytest.approx(60)
    assert run(rows, trained=False)[0] == []                  # untrained: 1,000 datagrams/s


def test_a_two_second_flood_at_60_pps_is_enough():
    rows = benign() + flood(START, 60, seconds=2, dst=FILES, port=9, mode="udp")
    assert len(run(rows)[0]) == 1


def test_under_the_floor_is_quiet():
    rows = benign() + flood(START, 40, seconds=5, dst=FILES, port=9, mode="udp")
    assert run(rows)[0] == []


@pytest.mark.parametrize("dst", [DNS, NEW_DNS])
def test_the_busiest_benign_dns_burst_of_the_tuning_drills_is_quiet(dst):
    """Tuning drills: the busiest benign UDP receiver (a brigade resolver, baseline peak 11/s)
    got 17 datagrams in one second and 13 in two seconds running. Ten seconds alternating 17
    and 13 -- and 2.5x that -- stay under the floor, at a resolver of the baseline and at one
    the warm-up never saw (its threshold is the floor itself)."""
    for scale in (1.0, 2.5):
        burst = queries(START, dst, [round(n * scale) for n in [17, 13] * 5])
        assert run(benign() + burst)[0] == [], scale


def test_an_unseen_multicast_group_keeps_the_absolute_threshold():
    group = "224.0.0.251"                                     # mDNS: every host's chatter
    storm = flood(START, 200, seconds=5, dst=group, port=5353, mode="udp")
    assert run(benign() + storm)[0] == []                     # not the floor: 1,000
    (a,), _ = run(benign() + flood(START, 1200, seconds=3, dst=group, port=5353, mode="udp"))
    assert a.evidence["threshold"] == 1000
    # a group seen in the baseline is relative to its own rate like any host
    seen = [flow(T0 + i, ATT, group, 5353, transport="udp", spk=2, dpk=0) for i in range(50)]
    (a,), _ = run(benign() + seen + storm)
    assert a.evidence["threshold"] == 50


@pytest.mark.parametrize("ip, group", [
    ("224.0.0.251", True), ("239.255.255.250", True), ("255.255.255.255", True),
    ("ff02::fb", True), ("10.40.5.255", False), ("10.40.5.53", False), ("not-an-ip", False),
    (None, False)])
def test_is_group(ip, group):
    assert is_group(ip) is group


def test_bench_measures_what_an_alert_needs_and_refuses_evaluation_splits():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from flood_floor import run_dirs, sustained
    assert sustained([(0, 17.0), (1, 13.0), (2, 5.0)], 2, 5) == 13.0   # 2 bins reach 13
    assert sustained([(0, 60.0), (10, 60.0)], 2, 5) == 0.0             # too far apart
    assert sustained([(0, 60.0), (10, 60.0)], 1, 5) == 60.0
    for split in ("/work/runs-benign/eval", "/work/runs-envelope/eval2/x"):
        with pytest.raises(SystemExit):
            run_dirs([split])
