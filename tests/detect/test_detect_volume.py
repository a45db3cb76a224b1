"""volume family on synthetic flow records: uploads vs a host's baseline, backups, settings."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from records import records

from cyberrange.detect.base import SettingError
from cyberrange.detect.registry import FAMILIES, baseline_window
from cyberrange.detect.volume import VolumeDetector
from cyberrange.telemetry.schema import FLOW_RECORD_SCHEMA

T0 = 1_750_000_000.0
CLERK, FILES, CLOUD, WEB, BACKUP = ("10.80.2.12", "10.80.4.20", "10.81.250.10", "10.80.1.80",
                                    "10.80.3.20")
_n = iter(range(10**9))


def flow(t, src, dst, dport, sbytes, *, dbytes=400, observer="s1", transport="tcp",
         flags="SAFP", dpkts=4):
    fid = hashlib.sha1(f"{observer}|{next(_n)}".encode()).hexdigest()[:16]
    us = int(round(t * 1e6))
    row = {f.name: None for f in FLOW_RECORD_SCHEMA}
    row.update({"@timestamp": us, "event.start": us, "event.end": us + 50_000,
                "event.duration": 5 * 10**7, "observer.name": observer, "source.ip": src,
                "source.port": 40000 + next(_n) % 20000, "source.packets": 4 + sbytes // 1448,
                "source.bytes": sbytes, "destination.ip": dst, "destination.port": dport,
                "destination.packets": dpkts, "destination.bytes": dbytes,
                "network.transport": transport, "network.packets": 8, "network.bytes": sbytes + dbytes,
                "cyberrange.flow_id": fid, "cyberrange.tcp_state": "SF" if transport == "tcp" else None,
                "cyberrange.tcp_flags": flags if transport == "tcp" else None})
    return row


table = records


def office(t0=T0, seconds=300, hosts=(CLERK, "10.80.2.13", "10.80.2.14"), seed=1):
    """Benign: requests (~500 B up) every few seconds, a report every 5 s."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in hosts:
        t = t0 + rng.uniform(0, 3)
        while t < t0 + seconds:
            rows.append(flow(t, h, WEB, 80, int(rng.integers(300, 700)), dbytes=4096))
            t += rng.exponential(3)
        for i in range(int(seconds / 5)):
            rows.append(flow(t0 + i * 5 + 0.3, h, "10.80.1.10", 8080, 681))
    return rows


def upload(t0, src=CLERK, chunks=17, chunk=16384, every=0.2):
    return [flow(t0 + i * every, src, CLOUD, 443, chunk + 400, dbytes=200) for i in range(chunks)]


DET = "upload-volume"


def det(**kw):
    kw.setdefault("ignore_ports", [873])
    return VolumeDetector(DET, **kw)


def test_registered():
    assert FAMILIES["volume"] is VolumeDetector
    assert VolumeDetector.trainable and VolumeDetector.scores_flows


def test_bulk_upload_alert_trained():
    rows = office() + upload(T0 + 100)
    t = table(rows)
    d = det()
    d.fit(*baseline_window(t, None, 30))
    assert CLERK in d.baseline
    alerts = d.detect(t, None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1041" and a.rule_category == "volume" and a.source_ip == CLERK
    up_ids = {r["cyberrange.flow_id"] for r in rows if r["destination.ip"] == CLOUD}
    assert up_ids <= set(a.flow_ids)
    ev = a.evidence
    assert ev["feature"] == "bytes_out_per_window" and ev["value"] > 250_000
    assert ev["baseline"]["trained"] and ev["baseline"]["host_seen"] and ev["baseline"]["mean"] > 0
    assert ev["z"] >= 4 and ev["threshold"] >= 65536 and ev["top_peer"] == CLOUD
    # crossed by the 4th chunk (4 x 16.8 kB > 64 kB plus the host's usual bytes)
    assert T0 + 100 <= a.timestamp.timestamp() <= T0 + 100 + 5 * 0.2
    assert CLERK in a.message and "bytes" in a.message and "z =" in a.message


def test_office_traffic_quiet_trained_and_untrained():
    t = table(office(seconds=600))
    d = det()
    assert d.detect(t, None) == []
    d.fit(*baseline_window(t, None, 20))
    assert d.detect(t, None) == []
    assert float(d.score_flows(t, None).max()) < 4


def test_backups_on_ignored_port():
    rows = office() + [flow(T0 + 30 + i * 60, FILES, BACKUP, 873, 524_288) for i in range(4)]
    assert det().detect(table(rows), None) == []
    alerts = det(ignore_ports=[]).detect(table(rows), None)
    assert len(alerts) == 4 and {a.source_ip for a in alerts} == {FILES}


def test_host_baseline_raises_its_own_threshold():
    # a host that always uploads ~200 kB per 10 s is normal for itself ...
    rows = [flow(T0 + i, FILES, "10.80.3.30", 445, 20_000) for i in range(300)]
    t = table(rows)
    d = det()
    assert len(d.detect(t, None)) == 1              # untrained: above min_bytes
    d.fit(*baseline_window(t, None, 60))
    assert d.detect(t, None) == []


def test_floods_and_scans_are_not_transfers():
    syn = [flow(T0 + i * 0.01, "10.80.4.66", CLOUD, 443, 58_000, flags="SR") for i in range(50)]
    udp = [flow(T0 + i * 0.01, "10.80.4.66", CLOUD, 53, 50_000, transport="udp", dpkts=0,
                dbytes=0) for i in range(50)]
    assert det().detect(table(syn + udp), None) == []
    assert len(det(answered_only=False).detect(table(syn + udp), None)) == 1


def test_two_sensors_do_not_double():
    rows = upload(T0, chunks=3)                       # ~50 kB: below 64 kB
    copies = [dict(r, **{"observer.name": "s2", "cyberrange.flow_id": r["cyberrange.flow_id"] + "b"})
              for r in rows]
    assert det().detect(table(rows + copies), None) == []
    rows = upload(T0)
    copies = [dict(r, **{"observer.name": "s2", "cyberrange.flow_id": r["cyberrange.flow_id"] + "b"})
              for r in rows]
    alerts = det().detect(table(rows + copies), None)
    assert len(alerts) == 1 and len(alerts[0].flow_ids) == 34


def test_two_episodes_and_stable_ids():
    t = table(upload(T0) + upload(T0 + 120))
    a1, a2 = det().detect(t, None), det().detect(t, None)
    assert len(a1) == 2 and [a.alert_id for a in a1] == [a.alert_id for a in a2]


def test_score_flows():
    rows = office() + upload(T0 + 100)
    t = table(rows)
    s = det().score_flows(t, None)
    dst = t.column("destination.ip").to_pylist()
    assert len(s) == t.num_rows
    assert max(v for v, d in zip(s, dst) if d == CLOUD) >= 4
    src = t.column("source.ip").to_pylist()
    start = [r["event.start"] / 1e6 for r in rows]
    # a flow gets its host's window z-score: the clerk's other flows during the upload share it
    quiet = [v for v, h, ts in zip(s, src, start) if h != CLERK or not T0 + 100 <= ts <= T0 + 115]
    assert max(quiet) < 1


def test_empty():
    assert det().detect(table([]), None) == []
    assert len(det().score_flows(table([]), None)) == 0


@pytest.mark.parametrize("settings, key", [
    ({"window": 0}, "window"),
    ({"z": 0}, "z"),
    ({"min_bytes": 0}, "min_bytes"),
    ({"ignore_ports": [70000]}, "ignore_ports"),
    ({"transports": ["sctp"]}, "transports"),
    ({"answered_only": 1}, "answered_only"),
    ({"zscore": 3}, "zscore"),
])
def test_setting_errors(settings, key):
    with pytest.raises(SettingError) as exc:
        VolumeDetector("bad", **settings)
    assert exc.value.setting == key


def test_alert_lists_the_upload_not_the_everyday_flows_in_its_window():
    rows = office(hosts=(CLERK,)) + upload(T0 + 100)
    alerts = det().detect(table(rows), None)
    assert len(alerts) == 1
    up_ids = {r["cyberrange.flow_id"] for r in rows if r["destination.ip"] == CLOUD}
    assert set(alerts[0].flow_ids) == up_ids
    assert alerts[0].evidence["flows_in_window"] > len(up_ids)
    assert alerts[0].evidence["receiving_peers"] == [CLOUD]
    assert alerts[0].destination_ip == CLOUD
