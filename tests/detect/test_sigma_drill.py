"""The Sigma export against a real drill: the air base's Modbus attack (``airbase_fuel_plc``:
an unknown client reads both fuel PLCs, then writes a setpoint), paced as in
``test_detect_drills.py``. ``detect export --sigma DIR --run RUN`` bakes in the allow-lists the
modbus detector learned from the drill's warm-up; each rule is converted to an Elasticsearch
Lucene query with pySigma's Elasticsearch backend, and the query -- parsed by the luqum Lucene
parser and evaluated over the run's flow documents as the ES store indexes them
(``tests/support/lucene_eval.py``; no cluster here) -- must match exactly the flows of the
alerts the drill stored for that check (T0855, T0861), and both must be non-empty.

One drill (air_base, ~1 min with its twin); the suite's shared drill (fob, recon_bruteforce)
has no Modbus traffic, so its detector and its rules would both match nothing."""
from __future__ import annotations

import json

import pytest
from helpers import ROOT, cli, needs_twin
from lucene_eval import Evaluator, flatten_types
from pacing import compressed_copy
from sigma.backends.elasticsearch import LuceneBackend
from sigma.collection import SigmaCollection
from sigma.processing.pipeline import ProcessingPipeline

from cyberrange.store import open_store
from cyberrange.store.es_mappings import mappings_for
from cyberrange.store.es_store import table_docs
from cyberrange.telemetry.schema import RECORD_SCHEMAS

pytestmark = needs_twin


@pytest.fixture(scope="module")
def fuel_drill(tmp_path_factory):
    runs = tmp_path_factory.mktemp("sigma-drill")
    pb = compressed_copy(ROOT / "attack_playbooks" / "airbase_fuel_plc.yaml", runs)
    r = cli("drill", "run", ROOT / "topologies" / "air_base.yaml", pb, "--runs-dir", runs,
            "--warmup", "15", "--json", timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (run_dir,) = [p.parent for p in runs.glob("*/manifest.json")]
    return run_dir


def test_sigma_lucene_query_matches_the_detector_flows_in_a_real_drill(fuel_drill, tmp_path):
    run_dir = fuel_drill
    run_id = json.loads((run_dir / "manifest.json").read_text())["run_id"]
    out = tmp_path / "sigma"
    r = cli("detect", "export", "--sigma", out, "--run", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["modbus-allowlist-clients.yml",
                                                     "modbus-allowlist-writers.yml"]
    with open_store(run_dir / "store.duckdb", read_only=True) as store:
        flows = store.read("flows", run_id, columns=list(RECORD_SCHEMAS["flows"].names))
        alerts = store.read("alerts", run_id).to_pylist()
    want: dict[str, set] = {}
    for a in alerts:
        if a["rule.name"] == "modbus-allowlist":
            want.setdefault(a["threat.technique.id"], set()).update(a["cyberrange.flow_ids"])
    docs = [json.loads(body) for _, body in table_docs("flows", flows, "cyberrange-flows")]
    ev = Evaluator(flatten_types(mappings_for(RECORD_SCHEMAS["flows"])["properties"]))
    backend = LuceneBackend(ProcessingPipeline())
    for path in sorted(out.iterdir()):
        collection = SigmaCollection.from_yaml(path.read_text())
        assert not collection.errors
        (query,) = backend.convert(collection)
        technique = collection.rules[0].custom_attributes["cyberrange"]["technique"]
        got = {d["cyberrange"]["flow_id"] for d in docs if ev.matches(query, d)}
        print(f"{path.name}: {len(got)} of {len(docs)} flows matched, detector "
              f"{len(want.get(technique, ()))}: {query[:160]}")
        assert got, (path.name, query)
        assert got == want.get(technique, set()), (path.name, query, len(got),
                                                   len(want.get(technique, ())))
