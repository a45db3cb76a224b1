"""ECS names (issue 18): ``threat.technique.id`` holds a real ATT&CK id or nothing, variants go
to ``cyberrange.technique.variant``, the ledger is written in ECS names and a ledger of either
spelling reads the same, scores the same and goes to Elasticsearch in ECS names."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from cyberrange.attack.ledger import (
    ECS_KEYS,
    append_record,
    legacy_record,
    make_record,
    read_ledger,
    to_ecs,
)
from cyberrange.detect.base import Alert, alerts_to_table
from cyberrange.ecs import is_attack_id, split_technique, technique_id
from cyberrange.store.es_mappings import kind_mappings
from cyberrange.telemetry.schema import ALERT_SCHEMA, FLOW_RECORD_SCHEMA

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
STEPS = [
    {"run_id": "r1", "step_id": "sweep", "name": "sweep", "technique": "T1018-arp", "actor": "a",
     "actor_ip": "10.0.0.5", "targets": ["10.0.0.9", "10.0.0.10"], "start": 1.0e9,
     "end": 1.0e9 + 2, "outcome": "succeeded", "flows": [], "facts": {"hosts": ["10.0.0.9"]},
     "arp_frames": 4},
    {"run_id": "r1", "step_id": "scan", "name": "scan", "technique": "T1046-connect",
     "actor": "a", "actor_ip": "10.0.0.5", "targets": ["10.0.0.9"], "start": 1.0e9 + 5,
     "end": 1.0e9 + 8, "outcome": "blocked", "blocked_reason": "reset",
     "flows": [{"src": "10.0.0.5", "dst": "10.0.0.9", "proto": "tcp", "sport": 40000,
                "dport": 22, "packets": 2, "bytes": 120}]},
    {"run_id": "r1", "step_id": "replay", "name": "replay", "technique": "replay", "actor": "a",
     "actor_ip": "10.0.0.5", "targets": [], "start": 1.0e9 + 9, "end": 1.0e9 + 9,
     "outcome": "skipped", "skipped_reason": "no capture"},
    {"run_id": "r1", "step_id": "brute", "name": "brute", "technique": "T1110.001", "actor": "a",
     "actor_ip": "10.0.0.5", "targets": ["10.0.0.9"], "start": 1.0e9 + 10, "end": 1.0e9 + 12,
     "outcome": "succeeded",
     "flows": [{"src": "10.0.0.5", "dst": "10.0.0.9", "proto": "tcp", "sport": 40001,
                "dport": 22, "packets": 9, "bytes": 900}]},
]


@pytest.mark.parametrize("value, ok", [
    ("T1046", True), ("T1110.001", True), ("T0855", True), ("T1046-connect", False),
    ("unknown", False), ("", False), (None, False), ("T104", False), ("t1046", False),
    ("T1046.01", False), ("T1046.001x", False)])
def test_is_attack_id(value, ok):
    assert is_attack_id(value) is ok


def test_split_technique_puts_variants_in_their_own_field():
    assert split_technique("T1046") == ("T1046", None)
    assert split_technique("T1046-connect") == ("T1046", "T1046-connect")
    assert split_technique("T1557.002") == ("T1557.002", None)
    assert split_technique("replay") == (None, "replay")
    assert split_technique("unknown") == (None, None)
    assert technique_id("unknown") is None and technique_id("T1046-udp") == "T1046"


def test_alert_rows_hold_attack_ids_only():
    learned = Alert(T, T, T, "flow-anomaly", "iforest", "unknown", "10.0.0.5", None, "odd", 0.9)
    rule = Alert(T, T, T, "vertical-portscan", "portscan", "T1046", "10.0.0.5", "10.0.0.9",
                 "12 ports", 1.5)
    variant = Alert(T, T, T, "x", "portscan", "T1046-udp", "10.0.0.5", None, "udp", 1.0,
                    evidence={"ports": 9})
    rows = alerts_to_table([learned, rule, variant]).to_pylist()
    by = {r["rule.name"]: r for r in rows}
    assert by["flow-anomaly"]["threat.technique.id"] is None         # left out, not "unknown"
    assert by["vertical-portscan"]["threat.technique.id"] == "T1046"
    assert by["x"]["threat.technique.id"] == "T1046"
    assert json.loads(by["x"]["cyberrange.evidence"]) == {"ports": 9,
                                                          "technique_variant": "T1046-udp"}
    assert variant.evidence == {"ports": 9}                            # the alert is unchanged


def test_every_shipped_detector_claims_an_attack_id_or_nothing():
    from helpers import ROOT

    from cyberrange.detect.registry import FAMILIES, load_detectors
    dets = load_detectors(ROOT / "detectors")
    assert len(FAMILIES) >= 10 and len(dets) >= 15
    for det in dets:                  # as configured (a mode may change the technique)
        tid, variant = split_technique(det.technique)
        assert variant is None, (det.name, det.technique)
        assert tid is None or is_attack_id(tid), (det.name, det.technique)


def test_the_ledger_is_written_in_ecs_names_and_reads_in_both(tmp_path):
    path = tmp_path / "ledger.jsonl"
    for s in STEPS:
        append_record(path, make_record(**s))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(list(rec) == list(ECS_KEYS) for rec in lines)          # only ECS names, in order
    sweep, scan, replay, brute = lines
    assert (sweep["threat.technique.id"], sweep["cyberrange.technique.variant"]) == \
        ("T1018", "T1018-arp")
    assert (replay["threat.technique.id"], replay["cyberrange.technique.variant"]) == \
        (None, "replay")
    assert (brute["threat.technique.id"], brute["cyberrange.technique.variant"]) == \
        ("T1110.001", None)
    assert [r["event.outcome"] for r in lines] == ["success", "failure", "unknown", "success"]
    assert scan["source.ip"] == "10.0.0.5" and scan["destination.ip"] == ["10.0.0.9"]
    assert scan["source.packets"] == 2 and scan["cyberrange.blocked_reason"] == "reset"
    assert scan["event.start"] == 1.0e9 + 5 and brute["source.bytes"] == 900
    old = tmp_path / "old.jsonl"                  # the same steps as a run written before
    old.write_text("".join(json.dumps(make_legacy(s)) + "\n" for s in STEPS))
    new_read, old_read = read_ledger(path), read_ledger(old)
    assert new_read == old_read                   # one reader: both spellings in both cases
    for rec, s in zip(new_read, STEPS):
        assert rec["technique"] == s["technique"] and rec["actor_ip"] == s["actor_ip"]
        assert rec["threat.technique.id"] == split_technique(s["technique"])[0]
    # a record of today also holds the actor's MAC (source.mac; null here: none was given)
    assert [legacy_record(x) for x in lines] == [dict(make_legacy(s), actor_mac=None)
                                                 for s in STEPS]


def make_legacy(step: dict) -> dict:
    """A record as the ledger was written before ECS names."""
    rec = make_record(**step)
    return {k: rec[k] for k in ("run_id", "step_id", "name", "technique", "actor", "actor_ip",
                                "targets", "start", "end", "outcome", "packets_sent",
                                "bytes_sent", "flows", "facts", "error", "repeat",
                                "skipped_reason", "blocked_reason", "arp_frames")}


def test_scoring_is_the_same_over_an_old_and_a_new_ledger(tmp_path):
    from records import records

    from cyberrange.score.score import score_run
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    for s in STEPS:
        append_record(new, make_record(**s))
    old.write_text("".join(json.dumps(make_legacy(s)) + "\n" for s in STEPS))
    us = int(1.0e9 * 1e6)
    flows = records([{"@timestamp": us + 10_100_000 + i * 1000, "event.start": us + 10_100_000,
                      "event.end": us + 10_200_000, "observer.name": "s1",
                      "source.ip": "10.0.0.5", "source.port": 40001 + i,
                      "destination.ip": "10.0.0.9", "destination.port": 22,
                      "network.transport": "tcp", "source.packets": 9, "network.packets": 9,
                      "cyberrange.flow_id": f"f{i}", "cyberrange.run_id": "r1"}
                     for i in range(1)], FLOW_RECORD_SCHEMA)
    at = datetime.fromtimestamp(1.0e9 + 11, timezone.utc)
    alerts = alerts_to_table([Alert(at, at, at, "login-bruteforce", "bruteforce", "T1110.001",
                                    "10.0.0.5", "10.0.0.9", "9 tries", 1.2, flow_ids=["f0"])],
                             "r1")
    a = score_run(read_ledger(new), flows, alerts)
    b = score_run(read_ledger(old), flows, alerts)
    assert a == b
    assert any(s["step_id"] == "brute" and s["detected"] for s in a["steps"]), a["steps"]


def test_ledger_documents_for_elasticsearch_use_the_mapped_ecs_names():
    from cyberrange.store.es_store import ledger_docs
    docs = ledger_docs([make_record(**s) for s in STEPS[:2]], "r1", "cyberrange-ledger")
    (_, body), _ = docs
    doc = json.loads(body)
    assert doc["threat"]["technique"]["id"] == "T1018"
    assert doc["cyberrange"]["technique"]["variant"] == "T1018-arp"
    assert doc["source"]["ip"] == "10.0.0.5" and doc["event"]["outcome"] == "success"
    assert doc["cyberrange"]["run_id"] == "r1" and doc["@timestamp"].endswith("Z")
    assert "step_id" not in doc and "technique" not in doc           # old names stay home
    props = kind_mappings("ledger")["properties"]

    def mapped(name):
        node = {"properties": props}
        for part in name.split("."):
            node = node["properties"][part]
        return node
    for key in ECS_KEYS + ("@timestamp", "event.kind", "event.dataset"):
        assert mapped(key), key                   # every field of a ledger document is mapped
    assert mapped("source.ip")["type"] == "ip" and mapped("destination.ip")["type"] == "ip"
    assert to_ecs(make_record(**STEPS[0]))["destination.ip"] == ["10.0.0.9", "10.0.0.10"]


def test_alert_schema_field_is_mapped_as_keyword():
    assert "threat.technique.id" in ALERT_SCHEMA.names
    assert kind_mappings("alerts")["properties"]["threat"]["properties"]["technique"][
        "properties"]["id"]["type"] == "keyword"
