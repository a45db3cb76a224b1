"""The STIX 2.1 bundle (``cyberrange.report.stix``) from a crafted report: ATT&CK for ICS ids go
to ``mitre-ics-attack``, variants to their ATT&CK id, C2 servers and domains become indicators,
alerts are counted into sightings and an alert the bundle cannot place is noted. The bundle of a
real drill is checked in ``tests/drill/test_report_stix.py``."""
from __future__ import annotations

from types import SimpleNamespace

import stix2

from cyberrange.report import stix

T = 1_796_500_000.0


def _content(items):
    return {"run": {"run_id": "r1", "topology": "air-base", "playbook": "pb", "created": T},
            "t0": T,
            "steps": [{"attack_id": "T1046", "technique_name": "Network Service Discovery: "
                                                               "TCP connect scan"},
                      {"attack_id": "T0855", "technique_name": "Unauthorized Command Message "
                                                               "(Modbus register write)"},
                      {"attack_id": "T1071.004", "technique_name": None}],
            "alerts": {"items": items}}


LEDGER = [
    {"step_id": "scan", "technique": "T1046-connect", "actor": "ws2", "actor_ip": "10.0.0.66",
     "targets": ["10.0.1.0/24"], "start": T + 10, "outcome": "succeeded"},
    {"step_id": "write", "technique": "T0855", "actor": "hist", "actor_ip": "10.0.5.10",
     "targets": ["10.0.5.21:502"], "start": T + 20, "outcome": "succeeded"},
    {"step_id": "c2", "technique": "T1071.004", "actor": "ws1", "actor_ip": "10.0.0.10",
     "targets": ["10.9.9.9"], "start": T + 30, "outcome": "succeeded"},
    {"step_id": "never", "technique": "T1498", "actor": "x", "actor_ip": "10.0.0.99",
     "targets": [], "start": None, "outcome": "skipped"},
]


def _alert(det, tech, src, dst, t, true=True):
    return {"detector": det, "technique": tech, "source": src, "destination": dst,
            "time": t, "true": true}


def test_bundle_maps_domains_variants_indicators_and_sightings():
    items = [_alert("vertical-portscan", "T1046-connect", "10.0.0.66", None, T + 11),
             _alert("vertical-portscan", "T1046", "10.0.0.66", None, T + 15, true=False),
             _alert("modbus-allowlist", "T0855", "10.0.5.10", "10.0.5.21", T + 21),
             _alert("flow-anomaly", "unknown", "10.0.0.10", "10.9.9.9", T + 31),
             _alert("flow-anomaly", "unknown", "10.0.7.7", "10.0.7.8", T + 40, true=False)]
    playbook = SimpleNamespace(steps=[SimpleNamespace(technique="T1071.004",
                                                      params={"domain": "Wx-Update.example."})])
    bundle, notes = stix.build(_content(items), LEDGER, playbook)
    back = stix2.parse(bundle.serialize(), allow_custom=False)
    objs = {o.id: o for o in back.objects}
    aps = {o.external_references[0].external_id: o for o in back.objects
           if o.type == "attack-pattern"}
    assert set(aps) == {"T1046", "T0855", "T1071.004"}
    assert aps["T0855"].external_references[0].source_name == "mitre-ics-attack"
    assert aps["T0855"].name == "Unauthorized Command Message"
    assert aps["T1046"].external_references[0].source_name == "mitre-attack"
    assert aps["T1046"].name == "Network Service Discovery"
    assert aps["T1071.004"].external_references[0].url == \
        "https://attack.mitre.org/techniques/T1071/004/"
    patterns = {o.pattern: o for o in back.objects if o.type == "indicator"}
    assert set(patterns) == {"[ipv4-addr:value = '10.0.0.66']", "[ipv4-addr:value = '10.0.5.10']",
                             "[ipv4-addr:value = '10.0.0.10']", "[ipv4-addr:value = '10.9.9.9']",
                             "[domain-name:value = 'wx-update.example']"}      # not the skipped
    assert "C2" in patterns["[ipv4-addr:value = '10.9.9.9']"].name
    rels = {(objs[r.source_ref].pattern, objs[r.target_ref].external_references[0].external_id)
            for r in back.objects if r.type == "relationship"}
    assert ("[domain-name:value = 'wx-update.example']", "T1071.004") in rels
    assert ("[ipv4-addr:value = '10.0.0.66']", "T1046") in rels
    sightings = [s for s in back.objects if s.type == "sighting"]
    scan = [s for s in sightings if s.sighting_of_ref == aps["T1046"].id]
    assert len(scan) == 1 and scan[0].count == 2
    assert (scan[0].last_seen - scan[0].first_seen).total_seconds() == 4
    assert "1 true, 1 false" in scan[0].description
    c2 = [s for s in sightings if objs[s.sighting_of_ref].type == "indicator"
          and objs[s.sighting_of_ref].pattern.endswith("'10.9.9.9']")]
    assert len(c2) == 1 and c2[0].count == 1
    assert notes == [("1 alert(s) with neither an ATT&CK id nor an attacker address are in "
                      "no sighting")]
    again, _ = stix.build(_content(items), LEDGER, playbook)
    assert again.serialize() == bundle.serialize()


def test_bundle_of_a_run_without_alerts_or_playbook():
    bundle, notes = stix.build(_content([]), LEDGER[:1], None)
    assert stix.counts(bundle) == {"attack-pattern": 3, "identity": 1, "indicator": 1,
                                   "relationship": 1}
    assert notes == []
