"""``detect export --sigma``: which detectors become Sigma rules and why the others cannot; the
rules are valid Sigma (parsed by pySigma), convert with pySigma's Elasticsearch backends
(Lucene and ES|QL), and the Lucene query -- parsed by the luqum Lucene parser and evaluated with
Elasticsearch's field semantics by ``tests/support/lucene_eval.py`` (no cluster here) --
matches the same flows as the detector, on synthetic records covering every branch of the
modbus checks. The same comparison on a real drill is in ``test_detect_drills.py`` (it shares the air base Modbus drill)."""
from __future__ import annotations

import json

import pytest
import yaml
from helpers import ROOT, cli
from lucene_eval import Evaluator, flatten_types
from sigma.backends.elasticsearch import ESQLBackend, LuceneBackend
from sigma.collection import SigmaCollection
from sigma.processing.pipeline import ProcessingPipeline
from test_detect_modbus import HIST, HMI, OFFICE, PLC1, PLC2, T0, build, modbus, polls

from cyberrange.detect import sigma as export_sigma
from cyberrange.detect.modbus import ModbusDetector
from cyberrange.detect.registry import load_detectors
from cyberrange.store.es_mappings import mappings_for
from cyberrange.store.es_store import table_docs
from cyberrange.telemetry.schema import RECORD_SCHEMAS

FLOW_TYPES = flatten_types(mappings_for(RECORD_SCHEMAS["flows"])["properties"])


def lucene(rule: dict) -> str:
    """The rule's Elasticsearch Lucene query (pySigma, no field mapping: the rules use ECS)."""
    collection = SigmaCollection.from_yaml(export_sigma.dump(rule))
    assert not collection.errors, collection.errors
    (query,) = LuceneBackend(ProcessingPipeline()).convert(collection)
    return query


def matched_flows(query: str, flows) -> set[str]:
    """Flow ids of the flow documents (as the ES store indexes them) the query matches."""
    ev = Evaluator(FLOW_TYPES)
    docs = [json.loads(body) for _, body in table_docs("flows", flows, "cyberrange-flows")]
    return {d["cyberrange"]["flow_id"] for d in docs if ev.matches(query, d)}


def alerted_flows(det, flows, pkts) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a in det.detect(flows, pkts):
        out.setdefault(a.technique, set()).update(a.flow_ids)
    return out


def test_shipped_detectors_export_modbus_only_and_every_other_has_a_reason():
    dets = load_detectors(ROOT / "detectors")
    rules, refused = export_sigma.export(dets, today="2026-12-06")
    assert list(rules) == ["modbus-allowlist-writers.yml"]     # untrained: clients check off
    parts = {(r["detector"], r["part"]) for r in refused}
    for d in dets:
        if d.family != "modbus":
            assert (d.name, "all") in parts, d.name
    assert ("modbus-allowlist", "hold") in parts and ("modbus-allowlist", "clients") in parts
    for r in refused:
        assert len(r["reason"]) > 40
        if r["family"] in export_sigma.REFUSED:
            assert any(w in r["reason"] for w in ("window", "baseline", "earlier", "state"))
    rule = rules["modbus-allowlist-writers.yml"]
    assert rule["tags"] == ["attack.t0855"] and rule["detection"]["condition"] == "selection"


def test_rules_are_valid_sigma_and_convert_to_lucene_and_esql():
    det = ModbusDetector("modbus-allowlist", writers=["10.60.4.0/28"], clients=[HIST])
    det.fit(*build(polls()))
    rules, _ = export_sigma.export([det], today="2026-12-06")
    assert set(rules) == {"modbus-allowlist-writers.yml", "modbus-allowlist-clients.yml"}
    for rule in rules.values():
        text = export_sigma.dump(rule)
        assert yaml.safe_load(text) == rule
        q = lucene(rule)
        assert "destination.port:502" in q and "network.transport:tcp" in q
        (esql,) = ESQLBackend(ProcessingPipeline()).convert(SigmaCollection.from_yaml(text))
        assert "cidr_match(source.ip" in esql
    clients = lucene(rules["modbus-allowlist-clients.yml"])
    assert f"source.ip:{HMI}" in clients and "10.60.4.0\\/28" in clients


@pytest.mark.parametrize("trained", [True, False], ids=["learned-lists", "configured-only"])
def test_lucene_query_matches_the_detector_flows_luqum_evaluator(trained):
    """Every branch: configured writer (CIDR), learned writer pair, learned client pair, a
    stranger reading, writing, and an unanswered SYN (no function codes), the learned writer
    writing to another PLC, UDP and another port (never Modbus)."""
    settings = {"writers": ["10.60.4.0/30"], "clients": ["10.60.3.128/25"]}
    det = ModbusDetector("modbus-allowlist", **settings)
    baseline = polls() + [modbus(T0 + 30, HMI, PLC1, [3, 6], writes=1)]
    if trained:
        det.fit(*build(baseline))
    conns = polls(T0 + 100, 20) + [
        modbus(T0 + 121, "10.60.4.2", PLC1, [16], writes=1),          # configured writer
        modbus(T0 + 122, HMI, PLC1, [3, 6], writes=1),                # learned writer pair
        modbus(T0 + 123, HMI, PLC2, [6], writes=1),                   # ... not for this PLC
        modbus(T0 + 124, HIST, PLC1, [3]),                            # stranger reads
        modbus(T0 + 125, HIST, PLC2, [5], writes=1),                  # stranger writes
        modbus(T0 + 126, OFFICE, PLC1, [], state="S0"),               # unanswered, no codes
        modbus(T0 + 127, "10.60.3.200", PLC1, [3]),                   # configured client
        modbus(T0 + 128, "10.60.3.200", PLC2, [15], writes=1),        # ... writing
    ]
    conns[-1][0][0]["network.transport"] = "udp"      # a UDP "502" flow is not Modbus/TCP
    other_port = dict(conns[-2][0][0], **{"destination.port": 503, "cyberrange.flow_id": "p503"})
    flows, pkts = build(conns + [([other_port], [])])
    det.checks = frozenset({"clients", "writers"})         # T0831 is not what is compared
    want = alerted_flows(det, flows, pkts)
    rules, _ = export_sigma.export([det], today="2026-12-06")
    got = {r["cyberrange"]["technique"]: matched_flows(lucene(r), flows) for r in rules.values()}
    assert set(got) == {"T0855", "T0861"}                 # configured clients: the check runs
    assert got == want
    assert len(want["T0855"]) == (2 if trained else 3) and len(want["T0861"]) >= 2


def test_evaluator_subset_and_its_limits():
    ev = Evaluator({"source.ip": "ip", "destination.port": "long", "dns.question.name":
                    "keyword", "cyberrange.modbus.function_codes": "long"})
    doc = {"source": {"ip": "10.1.2.3"}, "destination": {"port": 502},
           "cyberrange": {"modbus": {"function_codes": [3, 16]}},
           "dns": {"question": {"name": "a.b.example"}}}
    assert ev.matches("source.ip:10.1.0.0\\/16 AND destination.port:502", doc)
    assert not ev.matches("source.ip:10.2.0.0\\/16", doc)
    assert ev.matches("cyberrange.modbus.function_codes:(5 OR 16)", doc)      # any element
    assert ev.matches("NOT _exists_:tls.version AND _exists_:dns.question.name", doc)
    assert ev.matches("dns.question.name:*.example AND destination.port:[500 TO 502]", doc)
    assert not ev.matches("destination.port:{500 TO 502}", doc)
    assert not ev.matches("unmapped.field:x", doc)
    for unsupported in ("dns.question.name:exampl~1", "foo", "dns.question.name:/a.*/"):
        with pytest.raises(NotImplementedError):
            ev.matches(unsupported, doc)


def test_cli_detect_export_writes_rules_and_lists_what_it_cannot(tmp_path):
    out = tmp_path / "sigma"
    r = cli("detect", "export", "--sigma", out, "--detectors", ROOT / "detectors")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["modbus-allowlist-writers.yml"]
    assert "1 rule(s) written; not expressible as Sigma:" in r.stdout
    assert "vertical-portscan [portscan]: counts distinct" in r.stdout
    assert "modbus-allowlist (hold check) [modbus]" in r.stdout
    (rule,) = SigmaCollection.load_ruleset([str(out)]).rules
    assert rule.title.startswith("modbus-allowlist:")
    r = cli("detect", "export", "--sigma", out, "--detectors", ROOT / "detectors", "--json")
    doc = json.loads(r.stdout)
    assert [p.rsplit("/", 1)[1] for p in doc["rules"]] == ["modbus-allowlist-writers.yml"]
    assert {x["detector"] for x in doc["refused"]} >= {"vertical-portscan", "dns-tunnel"}
