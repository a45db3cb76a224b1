"""dnstunnel family on synthetic packet records: tunnels, TXT polling, benign lookups, settings."""
from __future__ import annotations

import base64
import hashlib
import random

import numpy as np
import pytest
from records import records

from cyberrange.detect.base import SettingError
from cyberrange.detect.dnstunnel import DnsTunnelDetector, shannon_entropy
from cyberrange.detect.registry import FAMILIES
from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA, PACKET_RECORD_SCHEMA

T0 = 1_750_000_000.0
IMPLANT, DNS, C2, WS = "10.80.4.66", "10.80.3.53", "10.81.250.10", "10.80.4.30"
_n = iter(range(10**9))


table = records


def udp_flow(t, src, dst, qname, observer="s1"):
    fid = hashlib.sha1(f"{observer}|{next(_n)}".encode()).hexdigest()[:16]
    us = int(round(t * 1e6))
    row = {f.name: None for f in FLOW_RECORD_SCHEMA}
    row.update({"@timestamp": us, "event.start": us, "event.end": us + 1000,
                "observer.name": observer, "source.ip": src, "destination.ip": dst,
                "source.port": 50000, "destination.port": 53, "network.transport": "udp",
                "source.bytes": 100, "destination.bytes": 120, "source.packets": 1,
                "destination.packets": 1, "cyberrange.flow_id": fid, "dns.question.name": qname})
    return row


def packet(t, src, dst, name, flow_id, qtype="A", response=False, observer="s1"):
    us = int(round(t * 1e6))
    row = {f.name: None for f in PACKET_RECORD_SCHEMA}
    row.update({"@timestamp": us, "observer.name": observer, "source.ip": dst if response else src,
                "destination.ip": src if response else dst, "network.transport": "udp",
                "source.port": 53 if response else 50000, "destination.port": 50000 if response
                else 53, "network.bytes": 60 + len(name), "cyberrange.flow_id": flow_id,
                "dns.question.name": name, "dns.question.type": qtype,
                "dns.response_code": "NOERROR" if response else None})
    return row


def tunnel(t0=T0 + 20, size=8000, rate=2.0, domain="cdn-telemetry.example", seed=99):
    """What the library's T1048 sends: base32 chunks of 180 chars, one UDP socket (one flow)."""
    rng = random.Random(seed)
    data = base64.b32encode(bytes(rng.getrandbits(8) for _ in range(size))).decode().lower()
    data = data.rstrip("=")
    chunks = [data[i:i + 180] for i in range(0, len(data), 180)]
    f = udp_flow(t0, IMPLANT, C2, None)
    pk = []
    for i, c in enumerate(chunks):
        labels = ".".join(c[j:j + 63] for j in range(0, len(c), 63))
        name = f"{labels}.{i:x}.ab12cd34.d.{domain}"
        t = t0 + i / rate
        pk.append(packet(t, IMPLANT, C2, name, f["cyberrange.flow_id"]))
        pk.append(packet(t + 0.002, IMPLANT, C2, name, f["cyberrange.flow_id"], response=True))
    f["dns.question.name"] = pk[0]["dns.question.name"]
    return [f], pk


def lookups(t0=T0, seconds=300, hosts=8, seed=3):
    """Benign: workstations resolving a handful of base host names, Poisson."""
    rng = np.random.default_rng(seed)
    names = [f"{n}.depot.mil" for n in ("wms-app", "wms-db", "track-srv", "depot-files",
                                        "supply-web", "mail", "dc1", "s4-ws1", "movcon-ws1")]
    flows, pk = [], []
    for h in range(hosts):
        t = t0 + rng.uniform(0, 5)
        while t < t0 + seconds:
            name = names[rng.integers(len(names))]
            f = udp_flow(t, f"10.80.4.{10 + h}", DNS, name)
            flows.append(f)
            pk.append(packet(t, f["source.ip"], DNS, name, f["cyberrange.flow_id"]))
            pk.append(packet(t + 0.001, f["source.ip"], DNS, name, f["cyberrange.flow_id"],
                             response=True))
            t += rng.exponential(2.0)
    return flows, pk


TUNNEL = DnsTunnelDetector("dns-tunnel")
TXT = DnsTunnelDetector("dns-c2-txt", window=600, min_distinct=3, length=0, entropy=0,
                        type_share=0.8, technique="T1071.004")


def test_registered():
    assert FAMILIES["dnstunnel"] is DnsTunnelDetector and DnsTunnelDetector.needs_packets


def test_tunnel_one_alert_with_explanation():
    tf, tp = tunnel()
    bf, bp = lookups()
    flows, pk = table(tf + bf, FLOW_RECORD_SCHEMA), table(tp + bp, PACKET_RECORD_SCHEMA)
    alerts = TUNNEL.detect(flows, pk)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1048" and a.rule_category == "dnstunnel"
    assert a.source_ip == IMPLANT and a.destination_ip == C2
    assert a.flow_ids == [tf[0]["cyberrange.flow_id"]]
    ev = a.evidence
    assert ev["domain"] == "cdn-telemetry.example"
    assert ev["feature"] in ("mean_subdomain_length", "mean_subdomain_entropy")
    assert ev["mean_subdomain_length"] > 180 and ev["mean_subdomain_entropy"] > 4.3
    assert ev["names"] == len(tp) // 2 and ev["threshold"] in (40, 4.0)
    # crossing at the 10th new name (2 queries/s)
    assert a.timestamp.timestamp() == pytest.approx(T0 + 20 + 9 / 2, abs=1e-3)
    assert "cdn-telemetry.example" in a.message and IMPLANT in a.message


def test_benign_lookups_are_quiet():
    bf, bp = lookups(hosts=30)
    flows, pk = table(bf, FLOW_RECORD_SCHEMA), table(bp, PACKET_RECORD_SCHEMA)
    assert TUNNEL.detect(flows, pk) == [] and TXT.detect(flows, pk) == []
    assert float(TUNNEL.score_flows(flows, pk).max()) < 0.5


def test_few_long_names_are_not_a_tunnel():
    tf, tp = tunnel(size=1000)           # 9 names only
    assert TUNNEL.detect(table(tf, FLOW_RECORD_SCHEMA), table(tp, PACKET_RECORD_SCHEMA)) == []


def test_txt_polling_instance():
    rng = random.Random(5)
    f = udp_flow(T0, IMPLANT, C2, None)
    pk = [packet(T0 + i * 120 * (1 + rng.uniform(-0.5, 0.5)), IMPLANT, C2,
                 f"{rng.getrandbits(32):08x}.s1.p.wx-update.example", f["cyberrange.flow_id"],
                 qtype="TXT") for i in range(5)]
    pk.sort(key=lambda r: r["@timestamp"])
    flows, pkts = table([f], FLOW_RECORD_SCHEMA), table(pk, PACKET_RECORD_SCHEMA)
    alerts = TXT.detect(flows, pkts)
    assert len(alerts) == 1
    assert alerts[0].technique == "T1071.004" and alerts[0].evidence["feature"] == "data_type_share"
    assert "DNS data channel" in alerts[0].message
    assert TUNNEL.detect(flows, pkts) == []


def test_tunnel_seen_by_two_sensors_counts_once_and_flags_both_copies():
    tf, tp = tunnel()
    tf2 = [dict(tf[0], **{"observer.name": "s2", "cyberrange.flow_id": "copy"})]
    tp2 = [dict(p, **{"observer.name": "s2", "cyberrange.flow_id": "copy"}) for p in tp]
    alerts = TUNNEL.detect(table(tf + tf2, FLOW_RECORD_SCHEMA),
                           table(tp + tp2, PACKET_RECORD_SCHEMA))
    assert len(alerts) == 1
    assert set(alerts[0].flow_ids) == {tf[0]["cyberrange.flow_id"], "copy"}
    assert alerts[0].evidence["names"] == len(tp) // 2


def test_allow_list():
    tf, tp = tunnel()
    det = DnsTunnelDetector("x", allow=["cdn-telemetry.example"])
    flows, pk = table(tf, FLOW_RECORD_SCHEMA), table(tp, PACKET_RECORD_SCHEMA)
    assert det.detect(flows, pk) == []
    assert det.score_flows(flows, pk).max() == 0.0


def test_score_flows_and_stable_ids():
    tf, tp = tunnel()
    bf, bp = lookups(seconds=60)
    flows, pk = table(tf + bf, FLOW_RECORD_SCHEMA), table(tp + bp, PACKET_RECORD_SCHEMA)
    s = TUNNEL.score_flows(flows, pk)
    assert len(s) == flows.num_rows and s[0] > 0.5 and s[1:].max() < 0.5
    assert [a.alert_id for a in TUNNEL.detect(flows, pk)] == \
        [a.alert_id for a in TUNNEL.detect(flows, pk)]


def test_flows_only_fallback():
    rows = [udp_flow(T0 + i, IMPLANT, C2, f"{'x' * 50}{i:04d}q7z9k.t.evil.example")
            for i in range(20)]
    alerts = TUNNEL.detect(table(rows, FLOW_RECORD_SCHEMA), None)
    assert len(alerts) == 1 and len(alerts[0].flow_ids) >= 10


def test_entropy():
    e = shannon_entropy(["aaaa", "abcd", "a.b.c.d", ""])
    assert e.tolist() == pytest.approx([0.0, 2.0, 2.0, 0.0])


@pytest.mark.parametrize("settings, key", [
    ({"window": 0}, "window"),
    ({"type_share": 2}, "type_share"),
    ({"length": 0, "entropy": 0, "type_share": 0}, "length"),
    ({"types": "TXT"}, "types"),
    ({"technique": "exfil"}, "technique"),
    ({"min_distinct": 2.5}, "min_distinct"),
    ({"lenght": 3}, "lenght"),
])
def test_setting_errors(settings, key):
    with pytest.raises(SettingError) as exc:
        DnsTunnelDetector("bad", **settings)
    assert exc.value.setting == key
