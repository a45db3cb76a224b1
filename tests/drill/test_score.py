"""Scoring against a hand-made ledger: labels, detection, time to detect, precision/recall."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from cyberrange.errors import UserError
from cyberrange.score.score import label_flows, load_ledger, packet_reconciliation, score_run
from cyberrange.telemetry.schema import ALERT_SCHEMA, FLOW_SCHEMA, PACKET_SCHEMA

T0 = 1_750_000_000.0
ATT, V, WS, SRV = "10.10.2.66", "10.10.2.20", "10.10.2.30", "10.10.1.10"
HOSTS = ["10.10.2.101", "10.10.2.102", "10.10.2.103"]

LEDGER = [
    {"run_id": "r1", "step_id": "sweep", "name": "ping sweep", "technique": "T1018",
     "actor": "ops-maint", "actor_ip": ATT, "targets": HOSTS, "start": T0, "end": T0 + 2,
     "outcome": "succeeded", "packets_sent": 3, "bytes_sent": 126,
     "flows": [{"src": ATT, "dst": h, "proto": "icmp", "sport": 8, "dport": 0, "packets": 1,
                "bytes": 42} for h in HOSTS], "facts": {"hosts": HOSTS}},
    {"run_id": "r1", "step_id": "scan", "name": "SYN scan", "technique": "T1046",
     "actor": "ops-maint", "actor_ip": ATT, "targets": [V], "start": T0 + 5, "end": T0 + 8,
     "outcome": "succeeded", "packets_sent": 4, "bytes_sent": 240,
     "flows": [{"src": ATT, "dst": V, "proto": "tcp", "sport": 50000, "dport": p, "packets": 1,
                "bytes": 60} for p in (21, 22, 23, 80)], "facts": {}},
    {"run_id": "r1", "step_id": "brute", "name": "guess passwords", "technique": "T1110.001",
     "actor": "ops-maint", "actor_ip": ATT, "targets": [f"{V}:22"], "start": T0 + 10,
     "end": T0 + 12, "outcome": "failed", "packets_sent": 30, "bytes_sent": 3000,
     "flows": [{"src": ATT, "dst": V, "proto": "tcp", "sport": 41000 + i, "dport": 22,
                "packets": 10, "bytes": 1000} for i in range(3)], "facts": {}},
]


def flow(t, src, sport, dst, dport, transport="tcp", observer="s1", cid=None):
    us = int(round(t * 1e6))
    fid = f"{observer}-{src}-{sport}-{dst}-{dport}-{us}"
    return {"@timestamp": us, "event.kind": "event", "event.category": "network",
            "event.type": "connection", "event.dataset": "cyberrange.flow", "event.start": us,
            "event.end": us, "event.duration": 0, "observer.name": observer,
            "source.ip": src, "source.port": sport, "source.packets": 1, "source.bytes": 60,
            "destination.ip": dst, "destination.port": dport, "destination.packets": 0,
            "destination.bytes": 0, "network.transport": transport, "network.packets": 1,
            "network.bytes": 60,
            "network.community_id": cid or f"1:{transport}-{src}-{sport}-{dst}-{dport}",
            "cyberrange.flow_id": fid, "cyberrange.tcp_state": None, "cyberrange.tcp_flags": None,
            "cyberrange.run_id": "r1"}


def to_table(rows, schema):
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array(vals, pa.int64()).cast(f.type)
        else:
            cols[f.name] = pa.array(vals, f.type)
    return pa.table(cols, schema=schema)


def make_flows():
    rows = [flow(T0 + 0.1 * i, ATT, 8, h, 0, "icmp") for i, h in enumerate(HOSTS)]
    scan = [flow(T0 + 5 + 0.01 * i, ATT, 50000, V, p) for i, p in enumerate((21, 22, 23, 80))]
    rows += scan
    rows += [dict(r, **{"observer.name": "s2", "cyberrange.flow_id": "s2" + r["cyberrange.flow_id"]})
             for r in scan]                                       # a second sensor sees the scan
    rows += [flow(T0 + 10, ATT, 41000, V, 22), flow(T0 + 10.5, ATT, 41001, V, 22),
             flow(T0 + 11, V, 22, ATT, 41002)]                   # reversed: SYN-ACK seen first
    rows += [flow(T0 + i, WS, 33000 + i, SRV, 443) for i in range(4)]
    rows += [flow(T0 + 100, ATT, 41000, V, 22)]                   # same 5-tuple, outside window
    return rows


def alert(t, rule, fids, start=None):
    us = int(round(t * 1e6))
    return {"@timestamp": us, "event.kind": "alert", "event.dataset": "cyberrange.alert",
            "event.start": us if start is None else int(start * 1e6), "event.end": us,
            "rule.name": rule, "rule.category": "x", "threat.technique.id": "T0000",
            "source.ip": ATT, "destination.ip": None, "message": "m", "cyberrange.score": 0.5,
            "cyberrange.evidence": "{}", "cyberrange.flow_ids": fids,
            "cyberrange.alert_id": f"{rule}-{t}", "cyberrange.run_id": "r1"}


def fids_of(rows, pred):
    return [r["cyberrange.flow_id"] for r in rows if pred(r)]


@pytest.fixture
def scenario():
    rows = make_flows()
    flows = to_table(rows, FLOW_SCHEMA)
    sweep = fids_of(rows, lambda r: r["network.transport"] == "icmp")
    scan = fids_of(rows, lambda r: r["source.port"] == 50000)
    benign = fids_of(rows, lambda r: r["destination.port"] == 443)
    alerts = to_table([
        alert(T0 + 0.5, "horizontal-sweep", sweep),
        alert(T0 + 5.2, "vertical-portscan", scan),
        alert(T0 + 20, "noisy", benign[:1]),
    ], ALERT_SCHEMA)
    return rows, flows, alerts


def test_labels_both_directions_and_time_window(scenario):
    rows, flows, _ = scenario
    labels = label_flows(LEDGER, flows)
    by = {r["cyberrange.flow_id"]: lab for r, lab in zip(rows, labels)}
    assert sum(1 for x in labels if x == "brute") == 3            # incl. the reversed one
    assert by[rows[-1]["cyberrange.flow_id"]] is None             # outside the step window
    assert labels.count("scan") == 8 and labels.count("sweep") == 3


def test_score_run(scenario):
    _, flows, alerts = scenario
    card = score_run(LEDGER, flows, alerts)
    json.dumps(card)                                              # ready for scorecard.json
    assert card["run_id"] == "r1"
    steps = {s["step_id"]: s for s in card["steps"]}
    assert steps["sweep"]["detected"] and steps["sweep"]["time_to_detect_s"] == pytest.approx(0.5)
    assert steps["sweep"]["detected_by"] == ["horizontal-sweep"]
    assert steps["scan"]["detected"] and steps["scan"]["time_to_detect_s"] == pytest.approx(0.2)
    assert steps["scan"]["attack_flows"] == 4                     # deduplicated across sensors
    assert not steps["brute"]["detected"] and steps["brute"]["time_to_detect_s"] is None
    assert steps["brute"]["outcome"] == "failed" and steps["brute"]["attack_flows"] == 3

    f = card["flows"]
    assert (f["total"], f["attack"], f["benign"]) == (15, 10, 5)
    assert (f["flagged"], f["flagged_attack"], f["flagged_benign"]) == (8, 7, 1)
    assert f["precision"] == pytest.approx(7 / 8) and f["recall"] == pytest.approx(0.7)
    assert card["flows_per_observer"]["s1"]["total"] == 15
    assert card["flows_per_observer"]["s2"] == {
        "total": 4, "attack": 4, "benign": 0, "flagged": 4, "flagged_attack": 4,
        "flagged_benign": 0, "precision": 1.0, "recall": 1.0}

    a = card["alerts"]
    assert (a["total"], a["true"], a["false"]) == (3, 2, 1)
    assert a["by_detector"]["noisy"] == {"total": 1, "true": 0, "false": 1}
    assert a["by_detector"]["vertical-portscan"] == {"total": 1, "true": 1, "false": 0}
    assert card["techniques"] == {"T1018": {"steps": 1, "detected": 1},
                                  "T1046": {"steps": 1, "detected": 1},
                                  "T1110.001": {"steps": 1, "detected": 0}}


def test_time_to_detect_clipped_and_earliest(scenario):
    rows, flows, _ = scenario
    scan = fids_of(rows, lambda r: r["source.port"] == 50000)
    alerts = to_table([alert(T0 + 7, "late", scan[:1]), alert(T0 + 4, "early", scan[1:2])],
                      ALERT_SCHEMA)
    card = score_run(LEDGER, flows, alerts)
    step = next(s for s in card["steps"] if s["step_id"] == "scan")
    # "early" crossed its threshold before the step began; it detects the step only once the
    # step's flow (starting 0.01 s after the step) joins its evidence, so not at 0 but at 0.01 s
    assert step["time_to_detect_s"] == pytest.approx(0.01, abs=1e-3)
    assert step["detected_by"] == ["early", "late"]


def test_no_alerts_precision_null(scenario):
    _, flows, _ = scenario
    card = score_run(LEDGER, flows, ALERT_SCHEMA.empty_table())
    assert card["flows"]["precision"] is None and card["flows"]["recall"] == 0.0
    assert card["alerts"] == {"total": 0, "true": 0, "false": 0, "by_detector": {}}
    assert not any(s["detected"] for s in card["steps"])


def test_load_ledger(tmp_path):
    p = tmp_path / "ledger.jsonl"
    p.write_text("\n".join(json.dumps(s) for s in LEDGER) + "\n")
    # the old names read back as written, beside the ECS names (attack/ledger.py)
    assert [{k: r[k] for k in s} for r, s in zip(load_ledger(p), LEDGER)] == LEDGER
    assert [r["source.ip"] for r in load_ledger(p)] == [s["actor_ip"] for s in LEDGER]
    p.write_text(json.dumps(LEDGER[0]) + "\n{oops\n")
    with pytest.raises(UserError) as e:
        load_ledger(p)
    assert e.value.line == 2


def packet(t, src, sport, dst, dport, transport="tcp", observer="s1"):
    return {"@timestamp": int(t * 1e6), "event.kind": "event", "event.dataset": "cyberrange.packet",
            "observer.name": observer, "source.ip": src, "destination.ip": dst,
            "source.port": sport, "destination.port": dport, "network.transport": transport,
            "network.type": "ipv4", "network.bytes": 60, "cyberrange.run_id": "r1"}


def make_packets(drop_host=None):
    pk = []
    for i, h in enumerate(HOSTS):
        if h != drop_host:
            pk.append(packet(T0 + 0.1 * i, ATT, 8, h, 0, "icmp"))
            pk.append(packet(T0 + 0.1 * i + 0.001, h, 0, ATT, 0, "icmp"))     # echo reply
    for obs in ("s1", "s2"):
        for i, p in enumerate((21, 22, 23, 80)):
            pk.append(packet(T0 + 5 + 0.01 * i, ATT, 50000, V, p, observer=obs))
            pk.append(packet(T0 + 5 + 0.01 * i + 0.001, V, p, ATT, 50000, observer=obs))
    for i in range(3):
        for k in range(10):
            pk.append(packet(T0 + 10 + 0.5 * i + 0.01 * k, ATT, 41000 + i, V, 22))
    return to_table(pk, PACKET_SCHEMA)


def test_packet_reconciliation_equal():
    rows = packet_reconciliation(LEDGER, make_packets())
    assert len(rows) == 3 + 4 + 3
    assert all(r["ledger_packets"] == r["stored_packets"] for r in rows), rows
    scan = [r for r in rows if r["step_id"] == "scan"]
    assert all(r["stored_packets"] == 1 for r in scan)            # max over sensors, not sum
    only_s2 = packet_reconciliation(LEDGER, make_packets(), observer="s2")
    assert [r["stored_packets"] for r in only_s2 if r["step_id"] == "scan"] == [1, 1, 1, 1]
    assert all(r["stored_packets"] == 0 for r in only_s2 if r["step_id"] != "scan")


def test_packet_reconciliation_mismatch():
    rows = packet_reconciliation(LEDGER, make_packets(drop_host=HOSTS[2]))
    bad = [r for r in rows if r["ledger_packets"] != r["stored_packets"]]
    assert len(bad) == 1
    assert (bad[0]["step_id"], bad[0]["dst"], bad[0]["proto"], bad[0]["sport"], bad[0]["dport"],
            bad[0]["ledger_packets"], bad[0]["stored_packets"]) == \
        ("sweep", HOSTS[2], "icmp", 8, 0, 1, 0)


def test_pipeline_pcap_to_scorecard(tmp_path):
    """pcap -> records -> DuckDB -> shipped detectors -> scorecard, on a small crafted drill."""
    from scapy.all import Ether, ICMP, IP, TCP, Raw, wrpcap

    from cyberrange.detect.registry import load_detectors, run_detectors
    from cyberrange.store import open_store
    from cyberrange.telemetry.pcap import parse_pcap

    pk, clock = [], [T0]

    def add(p, dt=0.002):
        p.time = clock[0]
        clock[0] += dt
        pk.append(p)

    ledger = []
    hosts = [f"10.10.2.{i}" for i in range(10, 22)]
    start, fl = clock[0], []
    for h in hosts:                                                   # ping sweep
        add(Ether() / IP(src=ATT, dst=h) / ICMP(type=8))
        add(Ether() / IP(src=h, dst=ATT) / ICMP(type=0))
        fl.append({"src": ATT, "dst": h, "proto": "icmp", "sport": 8, "dport": 0, "packets": 1})
    ledger.append({"step_id": "sweep", "technique": "T1018", "start": start, "end": clock[0],
                   "outcome": "succeeded", "flows": fl})
    clock[0] += 30
    start, fl = clock[0], []
    for p in range(20, 60):                                           # SYN scan of one host
        add(Ether() / IP(src=ATT, dst=V) / TCP(sport=61000, dport=p, flags="S"))
        add(Ether() / IP(src=V, dst=ATT) / TCP(sport=p, dport=61000, flags="RA"))
        fl.append({"src": ATT, "dst": V, "proto": "tcp", "sport": 61000, "dport": p, "packets": 1})
    ledger.append({"step_id": "scan", "technique": "T1046", "start": start, "end": clock[0],
                   "outcome": "succeeded", "flows": fl})
    clock[0] += 30
    start, fl = clock[0], []
    for i in range(12):                                               # password guessing
        sp = 45000 + i
        for src, dst, a, b, flags, data in [
                (ATT, V, sp, 22, "S", b""), (V, ATT, 22, sp, "SA", b""),
                (ATT, V, sp, 22, "A", b""), (V, ATT, 22, sp, "PA", b"login: "),
                (ATT, V, sp, 22, "PA", b"root:guess\n"), (V, ATT, 22, sp, "PA", b"denied\n"),
                (V, ATT, 22, sp, "FA", b""), (ATT, V, sp, 22, "FA", b""),
                (V, ATT, 22, sp, "A", b"")]:
            add(Ether() / IP(src=src, dst=dst) / TCP(sport=a, dport=b, flags=flags) / Raw(data))
        fl.append({"src": ATT, "dst": V, "proto": "tcp", "sport": sp, "dport": 22, "packets": 4})
        clock[0] += 0.2
    ledger.append({"step_id": "brute", "technique": "T1110.001", "start": start, "end": clock[0],
                   "outcome": "failed", "flows": fl})
    for i in range(24):                                               # benign logins every 5 s
        clock[0] = T0 + i * 5
        for src, dst, a, b, flags in [(WS, SRV, 50000 + i, 22, "S"), (SRV, WS, 22, 50000 + i, "SA"),
                                      (WS, SRV, 50000 + i, 22, "A"), (WS, SRV, 50000 + i, 22, "FA"),
                                      (SRV, WS, 22, 50000 + i, "FA"), (WS, SRV, 50000 + i, 22, "A")]:
            add(Ether() / IP(src=src, dst=dst) / TCP(sport=a, dport=b, flags=flags))
    pk.sort(key=lambda p: p.time)
    wrpcap(str(tmp_path / "s.pcap"), pk)

    packets, flows, stats = parse_pcap(str(tmp_path / "s.pcap"), "sensor-ops", "r1")
    assert stats["skipped"] == {}
    with open_store(tmp_path / "events.duckdb") as store:
        store.write("packets", packets)
        store.write("flows", flows)
        # the three shipped instances this crafted drill is about (the other families see
        # too little here: an untrained beacon detector rightly finds the 5 s logins regular)
        three = {"horizontal-sweep", "login-bruteforce", "vertical-portscan"}
        alerts = run_detectors(store, "r1", [d for d in load_detectors("detectors")
                                             if d.name in three])
        card = score_run(ledger, store.read("flows", "r1"), store.read("alerts", "r1"))
        recon = packet_reconciliation(ledger, store.read("packets", "r1"))
    assert sorted(alerts.column("rule.name").to_pylist()) == \
        ["horizontal-sweep", "login-bruteforce", "vertical-portscan"]
    steps = {s["step_id"]: s for s in card["steps"]}
    assert all(s["detected"] for s in steps.values())
    assert steps["sweep"]["detected_by"] == ["horizontal-sweep"]
    assert steps["scan"]["detected_by"] == ["vertical-portscan"]
    assert steps["brute"]["detected_by"] == ["login-bruteforce"]
    assert 0 < steps["brute"]["time_to_detect_s"] < 2
    assert card["flows"]["flagged_benign"] == 0 and card["flows"]["recall"] == 1.0
    assert card["alerts"]["false"] == 0
    assert all(r["ledger_packets"] == r["stored_packets"] for r in recon)


def test_repeated_step_is_scored_once_over_all_its_executions(scenario):
    from cyberrange.score.score import group_steps
    first = dict(LEDGER[0], outcome="failed", repeat=0)
    second = dict(LEDGER[0], outcome="succeeded", repeat=1, start=LEDGER[0]["start"] + 1,
                  end=LEDGER[0]["end"] + 1)
    grouped = group_steps([first, second, *LEDGER[1:]])
    assert [g["step_id"] for g in grouped] == [s["step_id"] for s in LEDGER]
    g = grouped[0]
    assert g["executions"] == 2 and g["outcome"] == "succeeded"
    assert g["start"] == first["start"] and g["end"] == second["end"]


def test_flowless_step_is_detected_by_a_packet_evidence_alert_from_its_actor(scenario):
    """ARP steps send no IP packets: an alert without flows from the actor, in the step's
    window, detects them and counts as true; the same alert from another host or outside the
    window does not."""
    rows, flows, _ = scenario
    arp = {"run_id": "r1", "step_id": "poison", "name": "ARP poisoning", "technique": "T1557.002",
           "actor": "ops-maint", "actor_ip": ATT, "targets": [V], "start": T0 + 30,
           "end": T0 + 40, "outcome": "succeeded", "packets_sent": 0, "bytes_sent": 0,
           "flows": [], "facts": {}}
    ledger = LEDGER + [arp]

    def one(t, src=ATT, fids=()):
        a = alert(t, "arp-spoof", list(fids))
        a["source.ip"] = src
        return to_table([a], ALERT_SCHEMA)

    card = score_run(ledger, flows, one(T0 + 31))
    step = next(s for s in card["steps"] if s["step_id"] == "poison")
    assert step["detected"] and step["detected_by"] == ["arp-spoof"]
    assert step["time_to_detect_s"] == pytest.approx(1.0)
    assert card["alerts"]["true"] == 1 and card["alerts"]["false"] == 0
    for alerts in (one(T0 + 31, src=WS), one(T0 + 80)):
        card = score_run(ledger, flows, alerts)
        step = next(s for s in card["steps"] if s["step_id"] == "poison")
        assert not step["detected"] and card["alerts"]["false"] == 1
    # an alert WITH flows from the actor in the window is matched by its flows, not by actor
    benign = fids_of(rows, lambda r: r["destination.port"] == 443)
    card = score_run(ledger, flows, one(T0 + 31, fids=benign[:1]))
    assert not next(s for s in card["steps"] if s["step_id"] == "poison")["detected"]


def test_the_scorecard_table_shows_a_late_detection_as_late_not_as_detected():
    """A step detected only after its end + late_s is 'late (when)' in the terminal, neither
    'yes' (it does not count for recall) nor a bare 'no' (something did see it)."""
    from rich.console import Console

    from cyberrange.report.terminal import scorecard_table
    base = {"technique": "T1046", "outcome": "succeeded", "detected_by": [], "attack_flows": 5,
            "time_to_detect_s": None}
    card = {"steps": [dict(base, step_id="late-one", detected=False, detected_late=True,
                           late_detect_s=31.2),
                      dict(base, step_id="missed-one", detected=False, detected_late=False)]}
    con = Console(width=140, record=True)
    con.print(scorecard_table(card))
    rows = {line.split()[0]: line for line in con.export_text().splitlines()
            if line.strip().startswith(("late-one", "missed-one"))}
    assert "late (31.2 s)" in rows["late-one"] and " yes " not in rows["late-one"]
    assert "late" not in rows["missed-one"].replace("missed-one", "") and " no " in rows["missed-one"]


def test_arp_scan_step_is_matched_by_actor_and_time_whatever_benign_flows_the_alert_lists(
        scenario):
    """Issue 15: an ARP scan has no IP flow of its own. ``arp-scan`` lists the IP flows that
    followed the requests; from a busy workstation those are its own benign flows, and the alert
    used to detect nothing and count as false. Now it is matched by actor and time when it
    claims the step's technique and none of its flows belongs to an attack step; an alert whose
    source IP is unknown is matched by the MAC of its evidence when the ledger records the
    actor's MAC."""
    rows, flows, _ = scenario
    arp = {"run_id": "r1", "step_id": "arp-scan", "name": "ARP scan", "technique": "T1018-arp",
           "actor": "ops-maint", "actor_ip": ATT, "targets": HOSTS, "start": T0 + 30,
           "end": T0 + 40, "outcome": "succeeded", "packets_sent": 0, "bytes_sent": 0,
           "flows": [], "facts": {}, "arp_frames": 60}
    ledger = LEDGER + [arp]
    benign = fids_of(rows, lambda r: r["destination.port"] == 443)
    sweep = fids_of(rows, lambda r: r["network.transport"] == "icmp")

    def one(t, fids, tech="T1018", src=ATT, mac=None):
        a = alert(t, "arp-scan", list(fids))
        a.update({"source.ip": src, "threat.technique.id": tech,
                  "cyberrange.evidence": json.dumps({"mac": mac} if mac else {})})
        return to_table([a], ALERT_SCHEMA)

    def arp_step(card):
        return next(s for s in card["steps"] if s["step_id"] == "arp-scan")

    card = score_run(ledger, flows, one(T0 + 32, benign[:2]))
    assert arp_step(card)["detected"] and arp_step(card)["detected_by"] == ["arp-scan"]
    assert arp_step(card)["time_to_detect_s"] == pytest.approx(2.0)
    assert card["alerts"]["true"] == 1 and card["alerts"]["false"] == 0
    # not matched: another technique, another host, outside the window, or an alert that
    # holds another step's attack flows (it is true by them, and detects that step only)
    for alerts in (one(T0 + 32, benign[:2], tech="T1110.003"),
                   one(T0 + 32, benign[:2], src=WS), one(T0 + 90, benign[:2])):
        card = score_run(ledger, flows, alerts)
        assert not arp_step(card)["detected"] and card["alerts"]["false"] == 1
    card = score_run(ledger, flows, one(T0 + 32, sweep))
    assert not arp_step(card)["detected"] and card["alerts"]["true"] == 1
    # a step with flows of its own is still matched by its flows only
    card = score_run(ledger, flows, one(T0 + 6, benign[:1], tech="T1046"))
    assert not next(s for s in card["steps"] if s["step_id"] == "scan")["detected"]
    # the scanner's IP unknown (a MAC that never used one): matched by the MAC when the ledger
    # has it, and not otherwise
    mac = "02:aa:bb:cc:dd:ee"
    no_ip = one(T0 + 32, [], src=None, mac=mac.upper())
    assert not arp_step(score_run(ledger, flows, no_ip))["detected"]
    card = score_run(LEDGER + [dict(arp, actor_mac=mac)], flows, no_ip)
    assert arp_step(card)["detected"] and card["alerts"]["true"] == 1
    other = one(T0 + 32, [], src=None, mac="02:00:00:00:00:01")
    assert not arp_step(score_run(LEDGER + [dict(arp, actor_mac=mac)], flows, other))["detected"]
