"""beacon family on synthetic records: HTTP and DNS beacons, benign look-alikes, baseline, settings."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest
from records import records

from cyberrange.detect.base import SettingError
from cyberrange.detect.beacon import BeaconDetector, registered_domain
from cyberrange.detect.registry import FAMILIES, baseline_window
from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA, PACKET_RECORD_SCHEMA

T0 = 1_750_000_000.0
IMPLANT, C2, WS, WEB, DNS, LEGIT_C2 = ("10.60.3.66", "10.61.250.10", "10.60.3.20", "10.60.1.80",
                                       "10.60.1.53", "10.60.1.10")
_n = iter(range(10**9))


def fid_for(observer="s1"):
    return hashlib.sha1(f"{observer}|{next(_n)}".encode()).hexdigest()[:16]


def flow(t, src, dst, dport, *, transport="tcp", sbytes=420, dbytes=900, observer="s1",
         qname=None):
    fid = fid_for(observer)
    us = int(round(t * 1e6))
    row = {f.name: None for f in FLOW_RECORD_SCHEMA}
    row.update({
        "@timestamp": us, "event.start": us, "event.end": us + 20_000, "event.duration": 2 * 10**7,
        "observer.name": observer, "source.ip": src, "source.port": 40000 + next(_n) % 20000,
        "source.packets": 6, "source.bytes": sbytes, "destination.ip": dst,
        "destination.port": dport, "destination.packets": 5, "destination.bytes": dbytes,
        "network.transport": transport, "network.packets": 11, "network.bytes": sbytes + dbytes,
        "network.community_id": f"1:{fid}", "cyberrange.flow_id": fid,
        "cyberrange.tcp_state": "SF" if transport == "tcp" else None,
        "cyberrange.tcp_flags": "SAFP" if transport == "tcp" else None,
        "dns.question.name": qname, "dns.question.type": "TXT" if qname else None})
    return row


def query(t, src, dst, name, flow_id, qtype="TXT", observer="s1", nbytes=90):
    us = int(round(t * 1e6))
    row = {f.name: None for f in PACKET_RECORD_SCHEMA}
    row.update({"@timestamp": us, "observer.name": observer, "source.ip": src,
                "destination.ip": dst, "source.port": 53000, "destination.port": 53,
                "network.transport": "udp", "network.bytes": nbytes, "cyberrange.flow_id": flow_id,
                "dns.question.name": name, "dns.question.type": qtype})
    return row


table = records


def flows_t(rows):
    return table(rows, FLOW_RECORD_SCHEMA)


def pkts_t(rows):
    return table(rows, PACKET_RECORD_SCHEMA)


def http_beacon(t0=T0 + 30, n=12, interval=60.0, jitter=0.3, seed=41):
    rng = random.Random(seed)
    t, out = t0, []
    for _ in range(n):
        out.append(flow(t, IMPLANT, C2, 443))
        t += interval * (1 + rng.uniform(-jitter, jitter))
    return out


def browsing(t0=T0, seconds=900, mean=6.0, seed=1):
    """Poisson requests to one intranet server: the typical benign repeat visitor."""
    rng = np.random.default_rng(seed)
    t, out = t0, []
    while t < t0 + seconds:
        out.append(flow(t, WS, WEB, 80, sbytes=int(rng.choice([400, 420, 440]))))
        t += rng.exponential(mean)
    return out


def c2_reports(t0=T0, seconds=900, interval=5.0, seed=2):
    """The benign c2-report role: a COP client posting to the real C2 server, +-20 %."""
    rng = random.Random(seed)
    t, out = t0 + rng.uniform(0, interval), []
    while t < t0 + seconds:
        out.append(flow(t, WS, LEGIT_C2, 8080, sbytes=681))
        t += interval * (1 + rng.uniform(-0.2, 0.2))
    return out


def dns_polls(t0=T0 + 15, n=10, interval=30.0, jitter=0.2, seed=42, domain="wx-update.example"):
    """TXT polls through the resolver, all from one UDP socket (one flow)."""
    rng = random.Random(seed)
    f = flow(t0, IMPLANT, DNS, 53, transport="udp", sbytes=90 * n, qname=f"a1.s9.p.{domain}")
    t, pk = t0, []
    for i in range(n):
        pk.append(query(t, IMPLANT, DNS, f"{rng.getrandbits(32):08x}.s9.p.{domain}",
                        f["cyberrange.flow_id"]))
        t += interval * (1 + rng.uniform(-jitter, jitter))
    return [f], pk


def test_registered():
    assert FAMILIES["beacon"] is BeaconDetector
    assert BeaconDetector.trainable and BeaconDetector.scores_flows


def test_http_beacon_alert_and_explanation():
    rows = http_beacon() + browsing()
    det = BeaconDetector("c2-beacon")
    alerts = det.detect(flows_t(rows), pkts_t([]))
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1071.001" and a.rule_category == "beacon"
    assert (a.source_ip, a.destination_ip) == (IMPLANT, C2)
    beacon_ids = [r["cyberrange.flow_id"] for r in rows if r["destination.ip"] == C2]
    assert a.flow_ids == beacon_ids
    ev = a.evidence
    assert ev["feature"] == "beacon_score" and ev["threshold"] == 0.35
    assert ev["value"] >= 0.45 and ev["connections"] == 12
    assert 50 < ev["interval_median_s"] < 70 and ev["interval_jitter"] < 0.5
    assert ev["baseline"] == "untrained"
    assert IMPLANT in a.message and "443" in a.message and "every" in a.message
    # the running score crossed at or after the rhythm_min_connections-th check-in
    assert a.timestamp.timestamp() >= rows[4]["event.start"] / 1e6 - 1e-6
    assert a.score == pytest.approx(ev["value"], abs=1e-3)


def test_poisson_browsing_is_not_a_beacon():
    det = BeaconDetector("c2-beacon")
    for seed in range(20):
        assert det.detect(flows_t(browsing(seed=seed)), pkts_t([])) == []


def test_benign_c2_reports_known_from_baseline():
    rows = c2_reports() + http_beacon(t0=T0 + 60)
    t = flows_t(rows)
    det = BeaconDetector("c2-beacon")
    untrained = det.detect(t, pkts_t([]))
    assert {a.destination_ip for a in untrained} == {LEGIT_C2, C2}      # the known FP source
    base, _ = baseline_window(t, None, 20)
    det.fit(base, pkts_t([]))
    assert det.trained
    alerts = det.detect(t, pkts_t([]))
    assert [a.destination_ip for a in alerts] == [C2]
    assert alerts[0].evidence["baseline"] == "not in baseline"
    scores = det.score_flows(t, pkts_t([]))
    dst = t.column("destination.ip").to_pylist()
    assert max(s for s, d in zip(scores, dst) if d == LEGIT_C2) == 0.0
    assert min(s for s, d in zip(scores, dst) if d == C2) >= 0.45


def test_allow_list_and_ignored_ports():
    rows = c2_reports()
    assert BeaconDetector("b", allow=[LEGIT_C2]).detect(flows_t(rows), pkts_t([])) == []
    assert BeaconDetector("b", allow=["10.60.1.0/24"]).detect(flows_t(rows), pkts_t([])) == []
    assert BeaconDetector("b", ignore_ports=[8080]).detect(flows_t(rows), pkts_t([])) == []
    ntp = [flow(T0 + i * 64, WS, "10.60.1.123", 123, transport="udp", sbytes=90)
           for i in range(15)]
    assert BeaconDetector("b").detect(flows_t(ntp), pkts_t([])) == []


def test_bulk_transfers_are_not_check_ins():
    rows = [flow(T0 + i * 60, WS, "10.60.1.20", 8873, sbytes=512_000) for i in range(15)]
    assert BeaconDetector("b").detect(flows_t(rows), pkts_t([])) == []
    assert len(BeaconDetector("b", max_bytes=10**7).detect(flows_t(rows), pkts_t([]))) == 1


def test_dns_polls_grouped_by_domain_through_the_resolver():
    f, pk = dns_polls()
    # benign lookups of the base's own names, also via the resolver
    rng = np.random.default_rng(5)
    t = T0
    while t < T0 + 400:
        ff = flow(t, WS, DNS, 53, transport="udp", qname=f"web{rng.integers(9)}.base.mil")
        f.append(ff)
        pk.append(query(t, WS, DNS, ff["dns.question.name"], ff["cyberrange.flow_id"], "A"))
        t += rng.exponential(8)
    det = BeaconDetector("c2-beacon")
    alerts = det.detect(flows_t(f), pkts_t(pk))
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1071.004" and a.source_ip == IMPLANT
    assert a.destination_ip == DNS and "wx-update.example" in a.message
    assert a.evidence["connections"] == 10 and len(a.flow_ids) == 1


def test_dns_retries_are_not_check_ins():
    f, pk = dns_polls(n=6)
    pk += [dict(p, **{"@timestamp": p["@timestamp"] + 1_000_000}) for p in pk]   # retried
    det = BeaconDetector("c2-beacon", min_connections=6)
    alerts = det.detect(flows_t(f), pkts_t(pk))
    assert len(alerts) == 1 and alerts[0].evidence["connections"] == 6


def test_dns_from_flows_without_packets():
    rows = []
    for i in range(10):
        rows.append(flow(T0 + i * 30, IMPLANT, DNS, 53, transport="udp",
                         qname=f"{i:04x}.p.evil.example", sbytes=90))
    alerts = BeaconDetector("b").detect(flows_t(rows), None)
    assert len(alerts) == 1 and alerts[0].technique == "T1071.004"


def test_same_records_same_alert_ids():
    t = flows_t(http_beacon() + browsing())
    a1 = BeaconDetector("b").detect(t, pkts_t([]))
    a2 = BeaconDetector("b").detect(t, pkts_t([]))
    assert [a.alert_id for a in a1] == [a.alert_id for a in a2] and a1


def test_two_sensors_one_series():
    rows = http_beacon()
    copies = [dict(r, **{"observer.name": "s2", "cyberrange.flow_id": r["cyberrange.flow_id"] + "b"})
              for r in rows]
    alerts = BeaconDetector("b").detect(flows_t(rows + copies), pkts_t([]))
    assert len(alerts) == 1
    assert alerts[0].evidence["connections"] == 12 and len(alerts[0].flow_ids) == 24


def test_registered_domain():
    names = pa.array(["a.b.evil.example", "evil.example.", "HOST", "x.Base.MIL"])
    assert registered_domain(names, 2).to_pylist() == ["evil.example", "evil.example", "host",
                                                       "base.mil"]


def test_empty_tables():
    assert BeaconDetector("b").detect(flows_t([]), pkts_t([])) == []
    assert len(BeaconDetector("b").score_flows(flows_t([]), pkts_t([]))) == 0


@pytest.mark.parametrize("settings, key", [
    ({"threshold": 1.5}, "threshold"),
    ({"min_connections": 2}, "min_connections"),
    ({"ignore_ports": ["ntp"]}, "ignore_ports"),
    ({"allow": "10.0.0.1"}, "allow"),
    ({"dns": "yes"}, "dns"),
    ({"jitter": 0}, "jitter"),
    ({"burst": 1.5}, "burst"),
    ({"threshhold": 0.5}, "threshhold"),
])
def test_setting_errors(settings, key):
    with pytest.raises(SettingError) as exc:
        BeaconDetector("bad", **settings)
    assert exc.value.setting == key


def test_results_posted_right_after_a_check_in_do_not_break_the_rhythm():
    rows = http_beacon(n=11)
    last = rows[-1]["event.start"] / 1e6
    report = [flow(last + 0.4, IMPLANT, C2, 443, sbytes=760), flow(last + 0.5, IMPLANT, C2, 443,
                                                                  sbytes=770)]
    alerts = BeaconDetector("c2-beacon").detect(flows_t(rows + report), pkts_t([]))
    assert len(alerts) == 1
    assert {r["cyberrange.flow_id"] for r in report} <= set(alerts[0].flow_ids)
    assert alerts[0].evidence["interval_jitter"] < 0.5
    loose = BeaconDetector("c2-beacon", burst=0).detect(flows_t(rows + report), pkts_t([]))
    assert not loose or loose[0].evidence["interval_jitter"] > alerts[0].evidence["interval_jitter"]
