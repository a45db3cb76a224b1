"""arp family on synthetic packet records: poisoning, scans, benign ARP, settings, explanations."""
from __future__ import annotations

import pyarrow as pa
import pytest
from records import packet_records

from cyberrange.detect.arp import ArpDetector
from cyberrange.detect.base import SettingError, alerts_to_table
from cyberrange.detect.registry import load_detector_file
from cyberrange.telemetry.schema import (
    ALERT_SCHEMA,
    FLOW_RECORD_SCHEMA,
)

T0 = 1_750_000_000.0
GW, WS1, WS2, FILES, MAINT = "10.10.2.1", "10.10.2.10", "10.10.2.11", "10.10.2.20", "10.10.2.66"
MAC = {GW: "02:00:00:00:00:01", WS1: "02:00:00:00:00:10", WS2: "02:00:00:00:00:11",
       FILES: "02:00:00:00:00:20", MAINT: "02:00:00:00:00:66"}
BCAST = "ff:ff:ff:ff:ff:ff"
NO_FLOWS = FLOW_RECORD_SCHEMA.empty_table()


def arp(t, op, sip, smac, tip, eth_src=None, eth_dst=BCAST, observer="ops-span"):
    return {"@timestamp": int(round(t * 1e6)), "event.kind": "event",
            "event.dataset": "cyberrange.packet", "observer.name": observer,
            "source.mac": eth_src or smac, "destination.mac": eth_dst,
            "network.transport": "arp", "network.type": "arp", "network.bytes": 42,
            "cyberrange.arp.operation": op, "cyberrange.arp.sender_ip": sip,
            "cyberrange.arp.sender_mac": smac, "cyberrange.arp.target_ip": tip}


def ip_packet(t, src, dst, smac, observer="ops-span"):
    return {"@timestamp": int(round(t * 1e6)), "observer.name": observer, "source.mac": smac,
            "destination.mac": MAC[GW], "source.ip": src, "destination.ip": dst,
            "network.transport": "udp", "network.type": "ipv4", "network.bytes": 80}


packets = packet_records


def benign_arp(t0=T0, seconds=30):
    """Hosts asking for each other and answering, every couple of seconds."""
    rows = []
    pairs = [(WS1, GW), (WS2, GW), (WS1, FILES), (WS2, FILES), (FILES, GW)]
    for i in range(seconds // 2):
        a, b = pairs[i % len(pairs)]
        t = t0 + 2 * i
        rows.append(arp(t, "request", a, MAC[a], b))
        rows.append(arp(t + 0.001, "reply", b, MAC[b], a, eth_dst=MAC[a]))
    return rows


def poison(t0, rounds=5, interval=2.0, victims=(WS1, GW)):
    """The T1557.002 shape: the attacker learns the victims' MACs, then sends each victim a
    gratuitous-shaped reply mapping the other victim to its own MAC."""
    a, b = victims
    rows = [arp(t0 - 1, "request", MAINT, MAC[MAINT], a),
            arp(t0 - 1, "request", MAINT, MAC[MAINT], b)]
    for i in range(rounds):
        t = t0 + i * interval
        rows.append(arp(t, "reply", b, MAC[MAINT], b, eth_dst=MAC[a]))
        rows.append(arp(t + 0.001, "reply", a, MAC[MAINT], a, eth_dst=MAC[b]))
    return rows


SPOOF = ArpDetector("arp-spoofing", mode="spoof")
SCAN = ArpDetector("arp-scan", mode="scan", window=10, threshold=16)


def test_poisoning_alert_per_spoofed_ip_names_the_attacker():
    det = ArpDetector("arp-spoofing", mode="spoof")
    det.fit(NO_FLOWS, packets(benign_arp()))
    pk = packets(benign_arp(T0 + 30, 60) + poison(T0 + 40))
    alerts = det.detect(NO_FLOWS, pk)
    assert sorted(a.destination_ip for a in alerts) == [GW, WS1]   # two victims, two claims
    a = next(a for a in alerts if a.destination_ip == GW)
    assert a.technique == "T1557.002" and a.rule_category == "arp"
    assert a.source_ip == MAINT                         # the attacker's own IP, not a victim's
    assert a.flow_ids == [] and a.evidence["packets"] == 5
    assert a.evidence["feature"] == "ip_mac_binding_change" and a.evidence["value"] == 5
    assert a.evidence["baseline"] == {GW: MAC[GW]}
    assert a.evidence["spoofed_ips"] == [GW] and a.evidence["mac"] == MAC[MAINT]
    assert a.evidence["unsolicited_replies"] == 5 and a.evidence["threshold"] == 1
    assert a.timestamp.timestamp() == pytest.approx(T0 + 40)
    assert MAC[MAINT] in a.message and GW in a.message and "poisoning" in a.message
    assert 0 < a.score <= 1


def test_untrained_learns_bindings_from_the_run():
    pk = packets(benign_arp(T0, 20) + poison(T0 + 30, rounds=3, victims=(WS2, FILES)))
    alerts = SPOOF.detect(NO_FLOWS, pk)
    assert {a.source_ip for a in alerts} == {MAINT}
    assert sorted(a.destination_ip for a in alerts) == [WS2, FILES]


def test_one_spoofed_ip_goes_to_destination():
    rows = benign_arp() + [arp(T0 + 40, "reply", GW, MAC[MAINT], WS1, eth_dst=MAC[WS1])]
    rows += [arp(T0 + 39, "request", MAINT, MAC[MAINT], WS1)]
    (a,) = SPOOF.detect(NO_FLOWS, packets(rows))
    assert a.destination_ip == GW and a.source_ip == MAINT


def test_owner_falls_back_to_ip_packets():
    rows = benign_arp() + [ip_packet(T0 + 5, MAINT, GW, MAC[MAINT])]
    rows += [arp(T0 + 40, "reply", GW, MAC[MAINT], WS1, eth_dst=MAC[WS1])]
    (a,) = SPOOF.detect(NO_FLOWS, packets(rows))
    assert a.source_ip == MAINT


def test_benign_arp_and_announcements_are_quiet():
    rows = benign_arp(T0, 120)
    # gratuitous announcements of a host's own binding, and a DAD probe
    rows += [arp(T0 + 50, "reply", WS1, MAC[WS1], WS1), arp(T0 + 51, "request", WS2, MAC[WS2], WS2),
             arp(T0 + 52, "request", "0.0.0.0", MAC[FILES], FILES)]
    pk = packets(rows)
    assert SPOOF.detect(NO_FLOWS, pk) == [] and SCAN.detect(NO_FLOWS, pk) == []


def test_two_sensors_count_a_frame_once_and_ignored_ips():
    rows = benign_arp() + poison(T0 + 40, rounds=2)
    rows += [dict(r, **{"observer.name": "cp-span", "@timestamp": r["@timestamp"] + 30})
             for r in rows]
    alerts = SPOOF.detect(NO_FLOWS, packets(rows))
    assert [a.evidence["packets"] for a in alerts] == [2, 2]
    det = ArpDetector("x", mode="spoof", ignore_ips=[f"{GW}/32", WS1])
    assert det.detect(NO_FLOWS, packets(rows)) == []


def test_mac_claiming_many_ips():
    rows = benign_arp()
    rows += [arp(T0 + 40 + i, "reply", f"10.10.2.{100 + i}", MAC[MAINT], WS1, eth_dst=MAC[WS1])
             for i in range(4)]
    (a,) = SPOOF.detect(NO_FLOWS, packets(rows))
    assert a.evidence["feature"] == "ips_claimed_per_mac" and a.evidence["value"] == 4
    assert "claimed 4 IP addresses" in a.message


def test_episodes_far_apart_are_two_alerts_with_distinct_ids():
    rows = benign_arp() + poison(T0 + 40, rounds=2) + poison(T0 + 200, rounds=2)
    alerts = SPOOF.detect(NO_FLOWS, packets(rows))
    assert len(alerts) == 4 and len({a.alert_id for a in alerts}) == 4
    again = SPOOF.detect(NO_FLOWS, packets(rows))
    assert [a.alert_id for a in again] == [a.alert_id for a in alerts]     # stable


def arp_scan(t0, n=254, rate=100.0, src=MAINT):
    targets = [ip for ip in (f"10.10.2.{i + 1}" for i in range(n + 1)) if ip != src][:n]
    return [arp(t0 + i / rate, "request", src, MAC[src], ip) for i, ip in enumerate(targets)]


def test_arp_scan_alert():
    pk = packets(benign_arp() + arp_scan(T0 + 40))
    (a,) = SCAN.detect(NO_FLOWS, pk)
    assert a.technique == "T1018" and a.source_ip == MAINT and a.flow_ids == []
    assert a.evidence["feature"] == "distinct_arp_targets" and a.evidence["value"] == 254
    assert a.evidence["threshold"] == 16 and a.evidence["packets"] == 254
    assert a.timestamp.timestamp() == pytest.approx(T0 + 40 + 15 / 100.0)
    assert "ARP scan" in a.message and "254" in a.message


def test_arp_scan_lists_the_probes_that_followed():
    import hashlib
    rows = []
    for i, ip in enumerate(["10.10.2.1", "10.10.2.2", "10.10.2.3", "10.10.3.9"]):
        us = int((T0 + 41 + i * 0.01) * 1e6)
        rows.append({"@timestamp": us, "event.start": us, "source.ip": MAINT,
                     "source.port": 8, "destination.ip": ip, "network.transport": "icmp",
                     "cyberrange.flow_id": hashlib.sha1(ip.encode()).hexdigest()[:16]})
    # the scanner's own conversation with a host it ARPed (its file server answers): not a probe
    us = int((T0 + 41.5) * 1e6)
    rows.append({"@timestamp": us, "event.start": us, "source.ip": MAINT, "source.port": 40001,
                 "destination.ip": "10.10.2.4", "destination.port": 445,
                 "network.transport": "tcp", "cyberrange.tcp_state": "SF",
                 "cyberrange.tcp_flags": "SAFP", "source.packets": 9, "destination.packets": 9,
                 "cyberrange.flow_id": "conversation0001"})
    cols = {f.name: (pa.array([r.get(f.name) for r in rows], pa.int64()).cast(f.type)
                     if pa.types.is_timestamp(f.type) else
                     pa.array([r.get(f.name) for r in rows], f.type)) for f in FLOW_RECORD_SCHEMA}
    flows = pa.table(cols, schema=FLOW_RECORD_SCHEMA)
    (a,) = SCAN.detect(flows, packets(arp_scan(T0 + 40)))
    assert len(a.flow_ids) == 3 and a.evidence["flows"] == 3     # 10.10.3.9 was not ARPed
    assert "conversation0001" not in a.flow_ids


def test_busy_asker_in_baseline_needs_twice_its_peak():
    det = ArpDetector("arp-scan", mode="scan", window=10, threshold=16)
    det.fit(NO_FLOWS, packets(arp_scan(T0, n=20, rate=10, src=GW)))      # gateway: 20 in 2 s
    assert det.detect(NO_FLOWS, packets(arp_scan(T0 + 100, n=30, src=GW))) == []
    assert len(det.detect(NO_FLOWS, packets(arp_scan(T0 + 100, n=60, src=GW)))) == 1


def test_no_packets_no_alerts():
    assert SPOOF.detect(NO_FLOWS, None) == []
    assert SCAN.detect(NO_FLOWS, packets([])) == []


def test_settings_errors():
    with pytest.raises(SettingError) as e:
        ArpDetector("x", mode="sniff")
    assert e.value.setting == "mode"
    with pytest.raises(SettingError) as e:
        ArpDetector("x", mode="scan", threshold=1)
    assert e.value.setting == "threshold"
    with pytest.raises(SettingError) as e:
        ArpDetector("x", ignore_ips=["not-an-ip"])
    assert e.value.setting == "ignore_ips"
    with pytest.raises(SettingError) as e:
        ArpDetector("x", treshold=3)
    assert "threshold" in str(e.value)


def test_shipped_instances_and_alert_table():
    dets = {d.name: d for d in load_detector_file("detectors/arp.yaml")}
    assert dets["arp-spoofing"].mode == "spoof" and dets["arp-scan"].mode == "scan"
    pk = packets(benign_arp() + arp_scan(T0 + 40) + poison(T0 + 60))
    alerts = [a for d in dets.values() for a in d.detect(NO_FLOWS, pk)]
    t = alerts_to_table(alerts, "r1")
    # the fast scan is seen by arp-scan and by arp-slow-scan (its 10-minute window holds it too)
    assert t.schema.equals(ALERT_SCHEMA) and t.num_rows == 4
    assert set(t.column("threat.technique.id").to_pylist()) == {"T1018", "T1557.002"}


def test_router_resolving_for_a_remote_sweep_names_the_sweeper():
    router, remote = "10.10.1.1", "10.10.2.66"
    rmac = "02:00:00:00:01:01"
    rows = []
    for i in range(40):
        target = f"10.10.1.{50 + i}"
        t = T0 + 40 + i * 0.01
        rows.append(ip_packet(t - 0.001, remote, target, MAC[MAINT], observer="ops-span"))
        rows.append(arp(t, "request", router, rmac, target, observer="cp-span"))
    (a,) = SCAN.detect(NO_FLOWS, packets(rows))
    assert a.source_ip == remote and a.evidence["on_behalf_of"] == remote
    assert a.evidence["mac_ip"] == router and a.evidence["triggered_targets"] == 40
    assert "on behalf of 10.10.2.66" in a.message
