"""lateral family on synthetic flows: new edges corroborated by probes, failures, pivots."""
from __future__ import annotations

import hashlib

import pytest
from records import records

from cyberrange.detect.base import SettingError, alerts_to_table
from cyberrange.detect.lateral import LateralDetector
from cyberrange.detect.registry import load_detector_file
from cyberrange.telemetry.schema import ALERT_SCHEMA

T0 = 1_750_000_000.0
ATT, WS, ADMIN, FILES, DB = "10.80.4.66", "10.80.4.30", "10.80.4.5", "10.80.4.20", "10.80.1.20"
_seq = iter(range(10**9))


def flow(t, src, dst, dport, state="SF", flags="SAFP", spk=14, sbytes=2400, dpk=12, dbytes=2600,
         duration=0.5, observer="admin-span"):
    n = next(_seq)
    fid = hashlib.sha1(f"{observer}|{n}".encode()).hexdigest()[:16]
    us = int(round(t * 1e6))
    return {"@timestamp": us, "event.start": us, "event.end": us + int(duration * 1e6),
            "event.duration": int(duration * 1e9), "observer.name": observer,
            "source.ip": src, "source.port": 40000 + n % 20000, "source.packets": spk,
            "source.bytes": sbytes, "destination.ip": dst, "destination.port": dport,
            "destination.packets": dpk, "destination.bytes": dbytes, "network.transport": "tcp",
            "network.packets": spk + dpk, "network.bytes": sbytes + dbytes,
            "network.community_id": f"1:{n}", "cyberrange.flow_id": fid,
            "cyberrange.tcp_state": state, "cyberrange.tcp_flags": flags}


table = records


def syn_scan(t0, src=ATT, hosts=(FILES, "10.80.4.21", "10.80.4.22"), ports=(22, 3389)):
    rows = []
    for i, (h, p) in enumerate((h, p) for h in hosts for p in ports):
        rows.append(flow(t0 + i * 0.02, src, h, p, state="REJ", flags="S", spk=1, sbytes=58,
                         dpk=1, dbytes=54, duration=0.0))
    return rows


def ssh(t0, src, dst, count=1, every=30.0, port=22, long=False):
    return [flow(t0 + i * every, src, dst, port, duration=20.0 if long else 0.5,
                 spk=60 if long else 14, dpk=60 if long else 12) for i in range(count)]


def baseline():
    return table(ssh(T0, ADMIN, FILES, 2) + ssh(T0 + 5, WS, DB, 1))


DET = LateralDetector("lateral-movement")


def trained(**kw):
    det = LateralDetector("lateral-movement", **kw)
    det.fit(baseline())
    return det


def test_scan_then_login_is_lateral_movement():
    det = trained()
    rows = syn_scan(T0 + 100) + ssh(T0 + 120, ATT, FILES, 1)
    (a,) = det.detect(table(rows))
    assert a.technique == "T1021.004" and a.rule_category == "lateral"
    assert (a.source_ip, a.destination_ip) == (ATT, FILES)
    assert a.evidence["feature"] == "new_remote_service_edge"
    assert a.evidence["value"] == f"{ATT}->{FILES}:22"
    assert a.evidence["corroboration"]["probes"] == 6
    assert a.evidence["baseline"]["trained"] is True and a.evidence["threshold"]["min_probes"] == 3
    assert len(a.flow_ids) == 1 and "6 probes of remote services" in a.message
    assert a.timestamp.timestamp() == pytest.approx(T0 + 120)


def test_guessing_burst_then_login():
    det = trained()
    rows = ssh(T0 + 100, ATT, FILES, 6, every=0.8) + ssh(T0 + 110, ATT, FILES, 1, long=True)
    (a,) = det.detect(table(rows))
    assert a.evidence["corroboration"]["short_sessions"] >= 4
    assert len(a.flow_ids) == 7                      # the whole episode of the edge
    assert a.timestamp.timestamp() == pytest.approx(T0 + 100 + 3 * 0.8)


def test_known_edges_admins_and_operators_are_quiet():
    det = trained()
    rows = ssh(T0 + 100, ADMIN, FILES, 5)             # baseline edge
    rows += ssh(T0 + 100, WS, FILES, 4, every=40)     # new edge, routine pace, no probes
    rows += ssh(T0 + 100, WS, DB, 3, every=25)        # baseline edge
    assert det.detect(table(rows)) == []
    det = trained(admin_sources=["10.80.4.0/28"])
    assert det.detect(table(syn_scan(T0 + 100, src=ADMIN) + ssh(T0 + 110, ADMIN, DB))) == []


def test_scan_without_session_and_banner_grab_are_not_sessions():
    det = trained()
    rows = syn_scan(T0 + 100)
    rows += [flow(T0 + 110, ATT, FILES, 22, state="RSTO", flags="SAR", spk=4, sbytes=230,
                  dpk=3, dbytes=260)]                # banner grab: too few bytes
    assert det.detect(table(rows)) == []


def test_new_edge_mode_and_untrained():
    det = LateralDetector("x", require="new-edge")
    (a,) = det.detect(table(ssh(T0, WS, FILES, 2)))
    assert a.evidence["corroboration"] == {} and a.evidence["baseline"]["trained"] is False
    assert len(a.flow_ids) == 2


def test_pivot_chain_when_enabled():
    rows = syn_scan(T0 + 100) + ssh(T0 + 120, ATT, FILES) + ssh(T0 + 150, FILES, DB)
    assert {a.source_ip for a in trained().detect(table(rows))} == {ATT}
    alerts = trained(pivot=True).detect(table(rows))
    piv = next(a for a in alerts if a.source_ip == FILES)
    assert piv.evidence["corroboration"]["entered_from"] == [ATT]


def test_rdp_and_episodes():
    det = trained()
    rows = syn_scan(T0 + 100) + ssh(T0 + 120, ATT, FILES, port=3389)
    rows += syn_scan(T0 + 2000) + ssh(T0 + 2010, ATT, FILES, port=3389)
    alerts = det.detect(table(rows))
    assert [a.technique for a in alerts] == ["T1021.001", "T1021.001"]
    assert len({a.alert_id for a in alerts}) == 2


def test_settings_errors():
    for kw, key in [({"require": "always"}, "require"), ({"admin_sources": ["x"]}, "admin_sources"),
                    ({"ports": [0]}, "ports"), ({"pivot": "yes"}, "pivot"),
                    ({"min_probes": 0}, "min_probes")]:
        with pytest.raises(SettingError) as e:
            LateralDetector("x", **kw)
        assert e.value.setting == key


def test_shipped_instances():
    dets = load_detector_file("detectors/lateral.yaml")
    assert [d.name for d in dets] == ["lateral-movement"]      # new-edge ships disabled
    dets[0].fit(baseline())
    alerts = dets[0].detect(table(syn_scan(T0 + 100) + ssh(T0 + 120, ATT, FILES)))
    assert alerts_to_table(alerts, "r1").schema.equals(ALERT_SCHEMA)


def test_probes_from_the_entered_host_after_entry():
    det = trained()
    rows = syn_scan(T0 + 100) + ssh(T0 + 120, ATT, FILES)
    inside = syn_scan(T0 + 130, src=FILES, hosts=(DB, "10.80.2.10"), ports=(22, 443, 8443))
    alerts = det.detect(table(rows + inside))
    assert [a.technique for a in alerts] == ["T1021.004", "T1046"]
    a = alerts[1]
    assert a.source_ip == FILES and a.evidence["feature"] == "probes_after_entry"
    assert a.evidence["value"] == 6 and a.evidence["entered_from"] == ATT
    assert len(a.flow_ids) == 6 and "new foothold" in a.message
    assert a.timestamp.timestamp() == pytest.approx(T0 + 130 + 2 * 0.02)
    # the same probes without the entry, or with the rule off, raise nothing
    assert trained().detect(table(inside)) == []
    assert len(trained(after_entry_probes=0).detect(table(rows + inside))) == 1


def test_a_busy_workstation_logging_in_again_and_again_is_its_day_not_a_burst_of_failures():
    """The benign false alert of issue 15: a workstation that logs in all day made 4 short
    (successful) logins to one server in 6 s, a server it had not logged in to in the warm-up;
    each login is a short session, so the 4th looked like a login after a burst of failures.
    With ``rate_alpha`` its own baseline pace sets how many it needs; a host that made no short
    session in the baseline (the guessing attacker) still needs only ``min_failures``."""
    base = table(ssh(T0, ADMIN, FILES, 2) + ssh(T0 + 2, WS, DB, 2, every=12))   # 2 in 30 s
    burst = ssh(T0 + 100, WS, FILES, 4, every=2.0)
    det = LateralDetector("lateral-movement", rate_alpha=1e-4)
    det.fit(base)
    assert det.min_failures_of(WS) == 6 and det.min_failures_of(ATT) == 4
    assert det.detect(table(burst)) == []
    plain = LateralDetector("lateral-movement")                 # the rule without the pace
    plain.fit(base)
    (a,) = plain.detect(table(burst))
    assert a.evidence["corroboration"]["short_sessions"] == 4
    # a real burst from the same workstation still counts: 7 guesses in 4 s, then the login
    rows = ssh(T0 + 100, WS, FILES, 7, every=0.6) + ssh(T0 + 106, WS, FILES, 1, long=True)
    (a,) = det.detect(table(rows))
    assert a.evidence["corroboration"]["short_sessions"] == 6
    assert a.evidence["threshold"]["min_failures"] == 6
    assert a.evidence["baseline"]["short_sessions"] == 2
    # the attacker's 6 guesses then a login: unchanged
    rows = ssh(T0 + 100, ATT, FILES, 6, every=0.8) + ssh(T0 + 110, ATT, FILES, 1, long=True)
    (a,) = det.detect(table(rows))
    assert a.timestamp.timestamp() == pytest.approx(T0 + 100 + 3 * 0.8)
    with pytest.raises(SettingError) as e:
        LateralDetector("x", rate_alpha=0.5)
    assert e.value.setting == "rate_alpha"
    shipped = load_detector_file("detectors/lateral.yaml")[0]
    assert shipped.rate_alpha == pytest.approx(1e-4)


def _seen_by(rows, sensors=("dmz-span", "core-span", "radio-span")):
    """Each row as every sensor on its path records it: one flow record per sensor, same
    connection (community id, start), a flow id of its own."""
    out = []
    for r in rows:
        for s in sensors:
            out.append({**r, "observer.name": s,
                        "cyberrange.flow_id": hashlib.sha1(
                            f"{s}|{r['cyberrange.flow_id']}".encode()).hexdigest()[:16]})
    return out


def test_one_connection_seen_by_three_sensors_counts_once():
    """A path with three sensors records every connection three times. One failed connection
    is one probe, not the three that corroboration asks for; a session is counted once in the
    message (found on a topology written outside the project: '9 sessions' for 3)."""
    det = trained()
    failed = flow(T0 + 100, WS, FILES, 22, state="REJ", flags="S", spk=1, sbytes=58, dpk=1,
                  dbytes=54, duration=0.0)
    rows = _seen_by([failed] + ssh(T0 + 110, WS, FILES, 3, every=20.0, long=True))
    assert det.detect(table(rows)) == []
    # three real probes, each seen three times: still corroborated, with the counts right
    rows = _seen_by(syn_scan(T0 + 100, src=ATT, hosts=(FILES,), ports=(22, 23, 3389))
                    + ssh(T0 + 120, ATT, FILES, 3, every=10.0, long=True))
    (a,) = det.detect(table(rows))
    assert a.evidence["corroboration"]["probes"] == 3
    assert a.evidence["sessions"] == 3 and a.evidence["flow_records"] == 9
    assert "opened 3 remote-service sessions" in a.message and len(a.flow_ids) == 9
