"""bruteforce family, mode spray (T1110.003), on synthetic flows; mode guess is covered in
tests/detect/test_detect.py."""
from __future__ import annotations

import hashlib

import pytest
from records import records

from cyberrange.detect.base import SettingError
from cyberrange.detect.bruteforce import BruteForceDetector
from cyberrange.detect.registry import load_detector_file

T0 = 1_750_000_000.0
ATT, WS = "10.73.0.66", "10.73.0.30"
SERVERS = ["10.73.0.10", "10.73.0.12", "10.73.0.14", "10.73.0.16"]
_seq = iter(range(10**9))


def attempt(t, src, dst, port=22, packets=25, duration=0.3, observer="fra-span", state="SF"):
    n = next(_seq)
    fid = hashlib.sha1(f"{observer}|{n}".encode()).hexdigest()[:16]
    us = round(t * 1e6)
    return {"@timestamp": us, "event.start": us, "event.end": us + int(duration * 1e6),
            "event.duration": int(duration * 1e9), "observer.name": observer,
            "source.ip": src, "source.port": 40000 + n % 20000, "source.packets": 13,
            "source.bytes": 2306, "destination.ip": dst, "destination.port": port,
            "destination.packets": packets - 13, "destination.bytes": 2500,
            "network.transport": "tcp", "network.packets": packets, "network.bytes": 4806,
            "network.community_id": f"1:{n}", "cyberrange.flow_id": fid,
            "cyberrange.tcp_state": state, "cyberrange.tcp_flags": "SAFPR"}


table = records


def spray_round(t0, servers=SERVERS[:2], users=4, pause=1.0, src=ATT):
    """One round of T1110.003: every account at every service once, ``pause`` apart."""
    rows, i = [], 0
    for dst in servers:
        for _ in range(users):
            rows.append(attempt(t0 + i * pause, src, dst))
            i += 1
    return rows


SPRAY = BruteForceDetector("password-spray", mode="spray", window=30, threshold=7)
GUESS = BruteForceDetector("login-bruteforce")


def test_spray_round_alert():
    rows = spray_round(T0)
    (a,) = SPRAY.detect(table(rows))
    assert a.technique == "T1110.003" and a.rule_category == "bruteforce"
    assert a.source_ip == ATT and a.destination_ip is None
    assert a.evidence["feature"] == "attempts_across_services" and a.evidence["value"] == 8
    assert a.evidence["threshold"] == 7 and a.evidence["min_targets"] == 2
    assert a.evidence["attempts_per_service"] == {f"{SERVERS[0]}:22": 4, f"{SERVERS[1]}:22": 4}
    assert a.timestamp.timestamp() == pytest.approx(T0 + 6.0)     # the 7th attempt
    assert len(a.flow_ids) == 8 and "password spraying" in a.message
    assert GUESS.detect(table(rows)) == []           # 4 per service: not guessing


def test_two_rounds_far_apart_two_alerts_stable_ids():
    rows = spray_round(T0) + spray_round(T0 + 1800)
    alerts = SPRAY.detect(table(rows))
    assert len(alerts) == 2 and len({a.alert_id for a in alerts}) == 2
    assert [a.alert_id for a in SPRAY.detect(table(rows))] == [a.alert_id for a in alerts]


def test_wide_spray_one_attempt_per_host():
    rows = spray_round(T0, servers=SERVERS + ["10.73.0.18", "10.73.0.20", "10.73.0.22"], users=1)
    (a,) = SPRAY.detect(table(rows))
    assert a.evidence["services"] == 7


def test_guessing_one_service_is_not_spraying():
    rows = [attempt(T0 + i * 0.3, ATT, SERVERS[0]) for i in range(30)]
    rows += [attempt(T0 + 2, ATT, SERVERS[1])]
    assert SPRAY.detect(table(rows)) == []           # 31 attempts on 2 services: 15 per service
    assert len(GUESS.detect(table(rows))) == 1


def test_operator_logins_and_two_sensors_are_quiet():
    rows = [attempt(T0 + i * 15, WS, SERVERS[i % 4]) for i in range(20)]   # one per 15 s
    dup = spray_round(T0 + 500, users=3)                                     # 6 sessions ...
    dup += [dict(r, **{"observer.name": "fra-span2",
                       "cyberrange.flow_id": r["cyberrange.flow_id"] + "x"}) for r in dup]
    assert SPRAY.detect(table(rows + dup)) == []                             # ... not 12


def test_scans_and_long_sessions_do_not_count():
    rows = [attempt(T0 + i * 0.5, ATT, SERVERS[i % 4], state="S0") for i in range(12)]
    rows += [attempt(T0 + i * 0.5, ATT, SERVERS[i % 4], duration=60) for i in range(12)]
    assert SPRAY.detect(table(rows)) == []


def test_settings_errors_and_shipped_instance():
    for kw, key in [({"mode": "stuff"}, "mode"), ({"mode": "spray", "min_targets": 1},
                                                   "min_targets"),
                    ({"max_per_target": -1}, "max_per_target"), ({"max_share": 0}, "max_share"),
                    ({"max_share": 1.5}, "max_share"), ({"rate_alpha": 0.5}, "rate_alpha")]:
        with pytest.raises(SettingError) as e:
            BruteForceDetector("x", **kw)
        assert e.value.setting == key
    dets = {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}
    assert dets["password-spray"].mode == "spray" and dets["login-bruteforce"].mode == "guess"
    assert len(dets["password-spray"].detect(table(spray_round(T0)))) == 1


def test_a_spray_of_six_accounts_per_service_is_caught():
    """Issue 15: 6 accounts x 2 services exceeded the old ``max_per_target: 5`` in every window
    and was left to login-bruteforce; the share rule (busiest service <= 75 % of the window)
    catches it at its 8th attempt, fast or slow, and still leaves guessing alone."""
    shipped = {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}["password-spray"]
    old = BruteForceDetector("old", mode="spray", window=30, threshold=7, max_per_target=5,
                             max_share=1.0)
    assert old.detect(table(spray_round(T0, users=6))) == []       # 6 per service in every window
    for pause in (1.0, 3.6):                 # 3.6 s: the slowest pause of the envelope's sprays
        rows = spray_round(T0, users=6, pause=pause)
        (a,) = shipped.detect(table(rows))
        assert a.evidence["attempts_per_service"] == {f"{SERVERS[0]}:22": 6,
                                                      f"{SERVERS[1]}:22": 6}
        assert a.timestamp.timestamp() == pytest.approx(T0 + 7 * pause)     # the 8th attempt
    # 8 accounts x 2 services at the slowest pace: 9 attempts per window, caught when the
    # second service holds a third of them
    (a,) = shipped.detect(table(spray_round(T0, users=8, pause=3.6)))
    assert a.timestamp.timestamp() == pytest.approx(T0 + 10 * 3.6)
    # guessing one service while the routine logins go to two others: not a spray
    rows = [attempt(T0 + i * 0.5, ATT, SERVERS[0]) for i in range(12)]
    rows += [attempt(T0 + 1, ATT, SERVERS[1]), attempt(T0 + 3, ATT, SERVERS[2])]
    assert shipped.detect(table(rows)) == []


def banner_check(t, src, dst, port=22):
    """A service health probe: connect, read the banner, close; the client sends no data."""
    return dict(attempt(t, src, dst, port, packets=10, duration=0.001),
                **{"cyberrange.tcp_flags": "SAF", "source.bytes": 404, "source.packets": 6})


def test_health_probes_of_login_services_are_not_attempts():
    """A mission-availability probe reads the login banner and closes without sending a name
    or a password (no PSH from the client): not a login attempt, for either mode."""
    probes = [banner_check(T0 + i * 2.0, WS, SERVERS[i % 3]) for i in range(12)]
    for mode in ("spray", "guess"):
        det = BruteForceDetector("x", mode=mode, threshold=7)
        assert det.detect(table(probes)) == []
    # four real attempts among them do not reach 7 by the probes' help
    rows = probes + [attempt(T0 + 1 + i * 2.0, WS, SERVERS[i % 2]) for i in range(4)]
    assert SPRAY.detect(table(rows)) == []
    assert len(SPRAY.detect(table(rows + spray_round(T0 + 10, users=2, src=WS)))) == 1


def test_a_busy_login_client_is_held_to_its_own_pace():
    """Issue 15: a workstation that logs in all day (2 logins in its 30 s warm-up) made 7 short
    logins at 3 servers within 30 s: its own chance burst, not a spray. ``rate_alpha`` sets its
    threshold to the count its baseline pace reaches with probability <= 1e-4 (10 for a pace of
    2; 14 with ``pace_confidence: 0.7``, the pace being 2 logins' upper bound, 3.62); a host
    with no login in the baseline keeps ``novice_threshold`` and a real spray from the busy
    workstation is still caught once it is bigger than the workstation's day."""
    shipped = {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}["password-spray"]
    base = table([attempt(T0, WS, SERVERS[0]), attempt(T0 + 14, WS, SERVERS[1]),
                  attempt(T0 + 29.5, ATT, "10.73.0.99", port=80)])
    shipped.fit(base)
    assert shipped.threshold_of(WS) == 14 and shipped.threshold_of(ATT) == 5
    assert shipped.expected(WS) == pytest.approx(3.616, abs=1e-3)   # baseline < a window
    counted = BruteForceDetector("x", mode="spray", window=30, threshold=7, novice_threshold=5,
                                 rate_alpha=1e-4)               # the pace as counted
    counted.fit(base)
    assert counted.threshold_of(WS) == 10 and counted.expected(WS) == pytest.approx(2.0)
    gaps = [0, 3.2, 5.0, 11.2, 14.5, 24.2, 28.4]                    # 7 in 28.4 s, 3 servers
    day = [attempt(T0 + 100 + g, WS, SERVERS[i % 3]) for i, g in enumerate(gaps)]
    assert shipped.detect(table(day)) == []
    untrained = {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}[
        "password-spray"]
    assert len(untrained.detect(table(day))) == 1                  # the false alert it was
    (a,) = shipped.detect(table(spray_round(T0 + 100, users=8, src=WS)))   # 16 in 15 s
    assert a.evidence["threshold"] == 14 and a.timestamp.timestamp() == pytest.approx(T0 + 113)
    assert a.evidence["baseline"]["baseline_attempts"] == 2
    assert a.evidence["baseline"]["pace_confidence"] == 0.7
    assert "a login client whose own pace is" in a.message and "70% upper bound" in a.message


def test_a_client_busier_than_its_warm_up_is_held_to_its_running_pace():
    """A 30 s warm-up is a thin estimate of a workstation's pace (tuning split: 2 logins in the
    warm-up, then 13 in 100 s). With ``pace_history`` the client's own attempts of the 10 min
    before the window count too; a spray well above that pace is still caught."""
    shipped = {d.name: d for d in load_detector_file("detectors/bruteforce.yaml")}["password-spray"]
    assert shipped.history_us == 600 * 10**6
    base = [attempt(T0, WS, SERVERS[0]), attempt(T0 + 14, WS, SERVERS[1]),
            attempt(T0 + 29.5, ATT, "10.73.0.99", port=80)]
    shipped.fit(table(base))
    assert shipped.threshold_of(WS) == 14
    steady = [attempt(T0 + 30 + i * 7.5, WS, SERVERS[i % 3]) for i in range(40)]   # 4 per 30 s
    burst = [attempt(T0 + 400 + g, WS, SERVERS[i % 3])
             for i, g in enumerate([0, 2, 4, 7, 9, 12, 15, 18, 22, 26])]           # 10 in 26 s
    rows = base + steady + burst
    assert shipped.detect(table(rows)) == []
    no_history = BruteForceDetector("x", mode="spray", window=30, threshold=7,
                                    novice_threshold=5, rate_alpha=1e-4)
    no_history.fit(table(base))
    assert len(no_history.detect(table(rows))) == 1          # 10 >= its warm-up's 10
    (a,) = shipped.detect(table(rows + spray_round(T0 + 500, users=8, src=WS)))   # 16 in 16 s
    assert a.evidence["baseline"]["pace_per_window"] > 3
    assert a.evidence["threshold"] > 10 and a.evidence["value"] >= a.evidence["threshold"]
