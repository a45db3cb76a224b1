"""flood family on synthetic flow records: SYN and UDP floods, benign rates, settings."""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest
from records import records

from cyberrange.detect.base import SettingError
from cyberrange.detect.flood import FloodDetector
from cyberrange.detect.registry import FAMILIES
from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA

T0 = 1_750_000_000.0
ATTACKER, PORTAL, WS = "10.10.2.66", "10.20.0.10", "10.10.2.30"
_n = iter(range(10**9))


def flow(t, src, dst, dport, *, transport="tcp", state="SF", flags="SAFP", duration=0.1,
         spkts=5, sbytes=500, dpkts=5, dbytes=800, sport=None, observer="s1"):
    n = next(_n)
    fid = hashlib.sha1(f"{observer}|{n}".encode()).hexdigest()[:16]
    us = int(round(t * 1e6))
    row = {f.name: None for f in FLOW_RECORD_SCHEMA}
    row.update({
        "@timestamp": us, "event.start": us, "event.end": us + int(duration * 1e6),
        "event.duration": int(duration * 1e9), "observer.name": observer,
        "source.ip": src, "source.port": sport or 40000 + n % 20000, "source.packets": spkts,
        "source.bytes": sbytes, "destination.ip": dst, "destination.port": dport,
        "destination.packets": dpkts, "destination.bytes": dbytes, "network.transport": transport,
        "network.packets": spkts + dpkts, "network.bytes": sbytes + dbytes,
        "network.community_id": f"1:{fid}", "cyberrange.flow_id": fid,
        "cyberrange.tcp_state": state if transport == "tcp" else None,
        "cyberrange.tcp_flags": flags if transport == "tcp" else None})
    return row


table = records


def syn_flood(t0=T0, seconds=20, rate=5000, sources=16, observer="s1"):
    """What the library's T1499 leaves: `sources` 5-tuples, each a long SYN-only flow."""
    per = rate * seconds // sources
    return [flow(t0 + i * 1e-4, ATTACKER, PORTAL, 443, state="S0", flags="SR",
                 duration=seconds, spkts=per, sbytes=per * 58, dpkts=per // 2, dbytes=per * 29,
                 sport=50000 + i, observer=observer) for i in range(sources)]


def udp_flood(t0=T0, seconds=30, rate=10000, sources=16):
    per = rate * seconds // sources
    return [flow(t0 + i * 1e-4, ATTACKER, PORTAL, 443, transport="udp", duration=seconds,
                 spkts=per, sbytes=per * 554, dpkts=0, dbytes=0, sport=50000 + i)
            for i in range(sources)]


def benign(t0=T0, seconds=60):
    rows = []
    for i in range(seconds * 4):                                   # 4 web requests/s
        rows.append(flow(t0 + i / 4, WS, PORTAL, 443))
    for i in range(seconds * 2):                                   # 2 DNS queries/s
        rows.append(flow(t0 + i / 2, WS, "10.10.1.53", 53, transport="udp", spkts=1,
                         sbytes=80, dpkts=1, dbytes=120))
    for i in range(20):                                            # a client retrying a dead port
        rows.append(flow(t0 + i * 0.5, WS, PORTAL, 8443, state="S0", flags="S", spkts=3,
                         sbytes=180, dpkts=0, dbytes=0, duration=3))
    return rows


SYN = FloodDetector("syn-flood", mode="syn")
UDP = FloodDetector("udp-flood", mode="udp", pps=1000, bps=2_000_000)


def test_registered():
    assert FAMILIES["flood"] is FloodDetector


def test_syn_flood_one_alert_with_explanation():
    rows = syn_flood() + benign()
    alerts = SYN.detect(table(rows), None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1499" and a.rule_category == "flood"
    assert a.destination_ip == PORTAL and a.source_ip == ATTACKER
    assert sorted(a.flow_ids) == sorted(r["cyberrange.flow_id"] for r in syn_flood_rows(rows))
    ev = a.evidence
    assert ev["feature"] == "syn_pps" and ev["threshold"] == 500
    assert ev["value"] == pytest.approx(5000, rel=0.05)
    assert ev["hot_bins"] >= 19 and ev["target"] == f"{PORTAL}:443"
    # time to detect: the second hot bin (sustain 2), well within 2 s of the start
    assert T0 <= a.timestamp.timestamp() <= T0 + 2.0
    assert "SYN flood" in a.message and "5," in a.message and "500" in a.message
    assert 0.5 <= a.score <= 1.0


def syn_flood_rows(rows):
    return [r for r in rows if r["destination.port"] == 443 and r["cyberrange.tcp_flags"] == "SR"]


def test_spoofed_syn_flood_counts_half_open_flows():
    rows = [flow(T0 + i / 1000, f"10.9.{i // 250 % 250}.{i % 250}", PORTAL, 80, state="S0",
                 flags="S", spkts=1, sbytes=58, dpkts=1, dbytes=58, duration=0)
            for i in range(3000)]                                 # 1000 new flows/s for 3 s
    det = FloodDetector("syn", mode="syn", pps=0, flows=200)
    alerts = det.detect(table(rows), None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.evidence["feature"] == "half_open_flows_per_s" and a.source_ip is None
    assert a.evidence["sources"] > 1 and len(a.flow_ids) == 3000


def test_udp_flood_one_alert():
    rows = udp_flood() + benign()
    alerts = UDP.detect(table(rows), None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1498" and a.destination_ip == PORTAL
    assert a.evidence["feature"] in ("pps", "bytes_per_s")
    assert a.evidence["peak_pps"] == pytest.approx(10000, rel=0.05)
    assert len(a.flow_ids) == 16
    assert SYN.detect(table(udp_flood()), None) == []


def test_benign_rates_stay_quiet():
    t = table(benign())
    assert SYN.detect(t, None) == [] and UDP.detect(t, None) == []


def test_short_burst_below_sustain_is_quiet():
    rows = syn_flood(seconds=1, rate=3000)      # one second of SYNs: not sustained
    for r in rows:
        r["event.end"] = r["event.start"] + 500_000
    assert SYN.detect(table(rows), None) == []
    assert len(FloodDetector("x", mode="syn", sustain=1).detect(table(rows), None)) == 1


def test_two_sensors_do_not_double_the_rate():
    rows = syn_flood(rate=400, observer="s1") + syn_flood(rate=400, observer="s2")
    assert SYN.detect(table(rows), None) == []                 # 400/s, not 800/s
    rows = syn_flood(observer="s1") + syn_flood(observer="s2")
    alerts = SYN.detect(table(rows), None)
    assert len(alerts) == 1 and len(alerts[0].flow_ids) == 32
    assert alerts[0].evidence["value"] == pytest.approx(5000, rel=0.05)


def test_episodes_far_apart_are_two_alerts_and_ids_are_stable():
    rows = syn_flood(T0, seconds=5) + syn_flood(T0 + 60, seconds=5)
    a1 = SYN.detect(table(rows), None)
    a2 = SYN.detect(table(rows), None)
    assert len(a1) == 2
    assert [a.alert_id for a in a1] == [a.alert_id for a in a2]
    assert len({a.alert_id for a in a1}) == 2


def test_empty_and_no_match():
    assert SYN.detect(table([]), None) == []
    assert UDP.detect(table([flow(T0, WS, PORTAL, 443)]), None) == []


@pytest.mark.parametrize("settings, key", [
    ({"mode": "icmp"}, "mode"),
    ({"pps": -1}, "pps"),
    ({"mode": "syn", "bps": 1000}, "bps"),
    ({"pps": 0, "flows": 0}, "pps"),
    ({"sustain": 0}, "sustain"),
    ({"per_port": "yes"}, "per_port"),
    ({"treshold": 3}, "treshold"),
])
def test_setting_errors(settings, key):
    with pytest.raises(SettingError) as exc:
        FloodDetector("bad", **settings)
    assert exc.value.setting == key


def test_large_table_runs():
    """Not a timing test: a big synthetic table goes through without per-row Python."""
    rows = benign(seconds=600)
    t = table(rows)
    big = pa.concat_tables([t] * 20)
    assert SYN.detect(big, None) == []
