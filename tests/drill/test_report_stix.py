"""``drill report RUN --stix FILE`` on the suite's README drill (the shared ``drill_run``): the
bundle parses back with the ``stix2`` library (strict: no custom content), and says what the
run holds -- every ATT&CK technique the playbook played or a detector claimed is an
attack-pattern with its ATT&CK id, the attacker's address is an indicator with a valid STIX
pattern, every alert is counted in a sighting, and every reference points into the bundle."""
from __future__ import annotations

import json

import stix2
from helpers import cli
from stix2patterns.validator import run_validator

from cyberrange.report.content import attack_id
from cyberrange.store import open_store

REF_KEYS = ("created_by_ref", "sighting_of_ref", "source_ref", "target_ref")


def _alerts(run_dir):
    run_id = json.loads((run_dir / "manifest.json").read_text())["run_id"]
    with open_store(run_dir / "store.duckdb", read_only=True) as store:
        return store.read("alerts", run_id).to_pylist()


def test_stix_bundle_of_a_real_drill(drill_run, tmp_path):
    run_dir, _ = drill_run
    out = tmp_path / "run.stix.json"
    r = cli("drill", "report", run_dir, "--stix", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"STIX 2.1 bundle: {out}" in r.stdout

    bundle = stix2.parse(out.read_text(), allow_custom=False)
    assert bundle.type == "bundle"
    objs = {o.id: o for o in bundle.objects}
    by_type: dict[str, list] = {}
    for o in bundle.objects:
        by_type.setdefault(o.type, []).append(o)
        assert o.spec_version == "2.1"
        for key in REF_KEYS:
            if key in o:
                assert o[key] in objs, (o.id, key, o[key])
        for ref in o.get("where_sighted_refs", []):
            assert objs[ref].type == "identity"
    (identity,) = by_type["identity"]
    assert identity.identity_class == "system"

    # attack-patterns: the playbook's techniques and every technique an alert claimed
    card = json.loads((run_dir / "scorecard.json").read_text())
    alerts = _alerts(run_dir)
    played = {attack_id(s["technique"]) for s in card["steps"]} - {None}
    claimed = {attack_id(a["threat.technique.id"]) for a in alerts} - {None, "unknown"}
    detected = {attack_id(s["technique"]) for s in card["steps"] if s["detected"]}
    assert detected and detected <= played
    patterns = {}
    for ap in by_type["attack-pattern"]:
        (ref,) = ap.external_references
        assert ref.source_name == ("mitre-ics-attack" if ref.external_id.startswith("T0")
                                   else "mitre-attack")
        assert ref.url.startswith("https://attack.mitre.org/techniques/T")
        patterns[ref.external_id] = ap
    assert set(patterns) == played | claimed, (sorted(patterns), played, claimed)

    # indicators: the attacker's address(es) from the ledger, each a valid STIX pattern
    from cyberrange.attack.ledger import read_ledger
    ledger = read_ledger(run_dir / "ledger.jsonl")      # both spellings (the file has ECS names)
    actors = {rec["actor_ip"] for rec in ledger if rec.get("actor_ip")}
    indicated = {}
    for ind in by_type["indicator"]:
        assert run_validator(ind.pattern, stix_version="2.1") == [], ind.pattern
        assert ind.pattern_type == "stix"
        value = ind.pattern.split("'")[1]
        indicated[value] = ind
    assert actors and actors <= set(indicated)

    # sightings: each technique a detector claimed is sighted, and every alert with an ATT&CK
    # id is counted exactly once among the technique sightings
    sightings = by_type["sighting"]
    sighted = {objs[s.sighting_of_ref].external_references[0].external_id
               for s in sightings if objs[s.sighting_of_ref].type == "attack-pattern"}
    assert claimed and claimed == sighted
    with_id = [a for a in alerts if attack_id(a["threat.technique.id"]) in patterns]
    assert sum(s.count for s in sightings
               if objs[s.sighting_of_ref].type == "attack-pattern") == len(with_id)
    for s in sightings:
        assert s.count >= 1 and s.first_seen <= s.last_seen
    # the attacker's address is sighted (the scan and brute-force alerts name it)
    assert any(objs[s.sighting_of_ref].type == "indicator"
               and objs[s.sighting_of_ref].pattern.split("'")[1] in actors for s in sightings)

    # the same run gives the same bundle (ids and content are derived, not random)
    again = tmp_path / "again.stix.json"
    assert cli("drill", "report", run_dir, "--stix", again).returncode == 0
    assert again.read_text() == out.read_text()
