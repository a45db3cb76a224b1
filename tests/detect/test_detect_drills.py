"""Every detector family in a real drill: it fires on its technique, and it stays quiet on a
benign-only drill.

Each playbook below runs once per session as a real drill (twin, benign traffic with a
warm-up that trainable detectors learn from (15 s), the playbook paced like tests/attack/test_playbooks.py,
sensors, parser, DuckDB, every detector in detectors/, scoring). One benign-only drill per
topology family used measures the false alerts. The drills run side by side (``drill`` below):
about 2 minutes in all on 2 cores (9 one after the other).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from background import Pool
from helpers import PY, ROOT, needs_twin
from pacing import compressed_copy

from cyberrange.detect.registry import load_detectors
from cyberrange.ecs import is_attack_id
from cyberrange.store import open_store

pytestmark = needs_twin

DETECTORS = load_detectors(ROOT / "detectors")
BY_FAMILY: dict[str, set[str]] = {}
for _d in DETECTORS:
    BY_FAMILY.setdefault(_d.family, set()).add(_d.name)
KIND = {d.name: d.kind for d in DETECTORS}

# family -> (playbook, topology, library techniques of the steps it must detect)
FIRES = {
    "portscan": ("recon_bruteforce", "fob", ["T1018", "T1046"]),
    "bruteforce": ("coalition_password_spray", "coalition_mpe", ["T1110.003"]),
    "arp": ("fob_ops_mitm", "fob", ["T1018-arp", "T1557.002"]),
    "flood": ("fob_satcom_dos", "fob", ["T1498", "T1499"]),
    "beacon": ("airbase_c2_beacon", "air_base", ["T1071.001"]),
    "modbus": ("airbase_fuel_plc", "air_base", ["T0861", "T0855", "T0831"]),
    "dnstunnel": ("depot_dns_exfil", "logistics_depot", ["T1048"]),
    "lateral": ("depot_intrusion_exfil", "logistics_depot", ["T1021.004"]),
    "volume": ("depot_insider_theft", "logistics_depot", ["T1041"]),
}
# Not the learned families (iforest: flow-anomaly, kitnet: packet-anomaly): calibrated to their
# false-alert target (10 per 10k benign flows, issue 15 item 7) they no longer reach the SATCOM
# floods after this drill's 15 s baseline (flow-anomaly: the flood's flows score 0.20 against a
# calibrated threshold of 0.30 on a recorded run; packet-anomaly missed both floods in the full
# suite of 2026-12-06, while the rule detectors caught them). What they still catch at their
# target is measured in docs/detectors/learned-calibration.md; both are still held to the
# quiet test below, and their contract to the unit tests (test_detect_iforest/kitnet).


def quiet_limit(kind: str, benign_flows: int) -> int:
    """False alerts an instance may raise on a benign-only drill: rule-based and statistical
    none; learned ones (their rate is stated, not promised: tens per 10k benign flows on the
    corpus, more after this drill's short 30 s baseline) at most 100 per 10k, and at least 6."""
    return 0 if kind in ("rule", "statistical") else max(6, int(benign_flows * 100 / 10_000))


# Slower pacing than the playbook test's where a detector needs more of the behaviour: a
# beacon is scored after 8 check-ins, so give it 12 (merged over pacing.COMPRESS).
PACING = {"airbase_c2_beacon": {"beacon": {"params": {"interval": 3}, "timing": {"duration": 36}}}}


class Drill:
    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.card = json.loads((run_dir / "scorecard.json").read_text())
        self.manifest = json.loads((run_dir / "manifest.json").read_text())
        with open_store(run_dir / "store.duckdb") as store:
            self.alerts = store.read("alerts", self.manifest["run_id"]).to_pylist()
        # the drills run side by side (below): none may have lost a packet to the contention
        rec = self.card["reconciliation"]
        assert rec["zero_loss"] and rec["verdict"] == "zero loss", (run_dir.name, rec["verdict"])


# The drills are separate twins, so they run side by side in the background (tests/support/background.py),
# all of them started when this module's first test asks for one, longest first. A drill mostly
# waits (warm-up, paced steps, benign-only traffic): 6 at a time take the 12 drills from ~9 min to
# ~2 min on 2 cores, with each scorecard still saying "zero loss" (checked in Drill) and the same
# benign flow counts (fob ~650, air_base ~335, logistics_depot ~280) as one at a time.
SLOTS = 6
# rough wall times alone (s), to start the longest first
LENGTH = {None: 95, "airbase_c2_beacon": 60}


def _needs(item) -> tuple[str, str | None] | None:
    """The drill (topology, playbook) a collected test of this module reads."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    if "family" in params:
        playbook, topology, _ = FIRES[params["family"]]
        return topology, playbook
    if "topology" in params:
        return params["topology"], None
    if item.originalname == "test_detectors_are_pure_functions_of_the_records":
        return "fob", "recon_bruteforce"
    if item.originalname == "test_sigma_lucene_query_matches_the_detector_flows_in_a_real_drill":
        return "air_base", "airbase_fuel_plc"
    return None


def _argv(topology: str, playbook: str | None, runs: Path) -> list:
    runs.mkdir(parents=True)
    args = ["drill", "run", ROOT / "topologies" / f"{topology}.yaml"]
    if playbook:
        args.append(compressed_copy(ROOT / "attack_playbooks" / f"{playbook}.yaml", runs,
                                    PACING.get(playbook)))
        warmup = 15
    else:
        args += ["--duration", "60", "--intensity", "2"]
        # the learned detectors' baseline: since the mission probes (issue 14) their short,
        # many-pair flows are part of benign traffic, and 15 s of them left flow-anomaly at
        # 8 false alerts on 778 air_base flows (103 per 10k, over the 100 stated below)
        warmup = 30
    return [PY, "-m", "cyberrange.cli.main", *args, "--runs-dir", runs, "--warmup", warmup,
            "--json"]


@pytest.fixture(scope="module")
def drill(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("detect-drills")
    pool = Pool(SLOTS)
    request.addfinalizer(pool.close)
    runs = lambda topology, playbook: base / (playbook or f"benign-{topology}")  # noqa: E731
    mine = [i for i in request.session.items if i.module is request.module]
    wanted = {k for k in map(_needs, mine) if k is not None}
    for key in sorted(wanted, key=lambda k: -LENGTH.get(k[1], 30)):
        pool.submit(key, _argv(*key, runs(*key)), cwd=ROOT)
    done: dict[tuple, Drill] = {}

    def get(topology: str, playbook: str | None = None) -> Drill:
        key = (topology, playbook)
        if key not in done:
            r = pool.result(key, None if key in pool.jobs else _argv(*key, runs(*key)), cwd=ROOT)
            assert r.returncode == 0, r.stderr[-3000:]
            (run_dir,) = [p.parent for p in runs(*key).glob("*/manifest.json")]
            done[key] = Drill(run_dir)
        return done[key]
    return get


def check_contract(alert: dict) -> None:
    ev = json.loads(alert["cyberrange.evidence"])
    assert {"feature", "value"} <= set(ev), ev
    assert "threshold" in ev or "baseline" in ev, ev
    assert alert["message"] and "\n" not in alert["message"]
    tid = alert["threat.technique.id"]       # an ATT&CK id; absent when a learned family
    assert is_attack_id(tid) or (tid is None and alert["rule.category"] in ("iforest", "kitnet"))
    assert alert["cyberrange.score"] == alert["cyberrange.score"]          # not NaN
    assert alert["cyberrange.flow_ids"] or "packets" in ev, ev


@pytest.mark.parametrize("family", sorted(FIRES))
def test_family_fires_on_its_technique_in_a_real_drill(family, drill):
    if family not in BY_FAMILY:
        pytest.fail(f"no instance of family {family!r} in detectors/")
    playbook, topology, techniques = FIRES[family]
    d = drill(topology, playbook)
    mine = BY_FAMILY[family]
    # steps that happened: not skipped, not stopped by a firewall (blocked), seen by a sensor
    steps = [s for s in d.card["steps"] if s["technique"] in techniques
             and s["outcome"] not in ("skipped", "blocked") and (
                 s["attack_flows"] or s["technique"].startswith(("T1018-arp", "T1557")))]
    assert {s["technique"] for s in steps} == set(techniques), d.card["steps"]
    missed = [(s["step_id"], s["technique"], s["detected_by"]) for s in steps
              if not mine & set(s["detected_by"])]
    assert not missed, f"{family} missed {missed}"
    own = [a for a in d.alerts if a["rule.name"] in mine]
    assert own
    for a in own:
        check_contract(a)


@pytest.mark.parametrize("topology", ["fob", "air_base", "logistics_depot"])
def test_every_detector_stays_quiet_on_a_benign_only_drill(topology, drill):
    d = drill(topology)
    assert d.card["steps"] == [] and d.card["flows"]["benign"] > 100
    per = {}
    for a in d.alerts:
        per.setdefault(a["rule.name"], []).append(a["message"])
    benign = d.card["flows"]["benign"]
    loud = {n: msgs for n, msgs in per.items() if len(msgs) > quiet_limit(KIND[n], benign)}
    assert not loud, loud
    assert d.card["alerts"]["true"] == 0


def test_detectors_are_pure_functions_of_the_records(drill):
    """Re-detecting a drill's store gives the alerts the drill stored, id for id (what the
    streaming runner and the ES same-alerts guarantee rest on), and every alert of every family
    keeps the explanation contract."""
    from cyberrange.detect.registry import run_detectors
    d = drill("fob", "recon_bruteforce")
    m = d.manifest
    with open_store(d.dir / "store.duckdb") as store:
        again = run_detectors(store, m["run_id"], load_detectors(ROOT / "detectors"), write=False,
                              baseline_s=m.get("baseline_s"), baseline_until=m.get("baseline_end"))
    assert sorted(again.column("cyberrange.alert_id").to_pylist()) == \
        sorted(a["cyberrange.alert_id"] for a in d.alerts)
    assert len(d.alerts) >= 3
    for a in d.alerts:
        check_contract(a)


def test_sigma_lucene_query_matches_the_detector_flows_in_a_real_drill(drill, tmp_path):
    """The Sigma export against the air base's Modbus drill (shared with the family test):
    ``detect export --sigma DIR --run RUN`` bakes in the allow-lists the modbus detector learned
    from the warm-up; each rule, converted to a Lucene query by pySigma's Elasticsearch backend
    and evaluated by the luqum parser over the run's flow documents as the ES store indexes them
    (``tests/support/lucene_eval.py``; no cluster here), must match exactly the flows of the
    alerts the drill stored for that check (T0855, T0861), and both must be non-empty."""
    from lucene_eval import Evaluator, flatten_types
    from sigma.backends.elasticsearch import LuceneBackend
    from sigma.collection import SigmaCollection
    from sigma.processing.pipeline import ProcessingPipeline

    from cyberrange.store.es_mappings import mappings_for
    from cyberrange.store.es_store import table_docs
    from cyberrange.telemetry.schema import RECORD_SCHEMAS
    run_dir = drill("air_base", "airbase_fuel_plc").dir
    run_id = json.loads((run_dir / "manifest.json").read_text())["run_id"]
    out = tmp_path / "sigma"
    r = subprocess.run([PY, "-m", "cyberrange.cli.main", "detect", "export", "--sigma", str(out),
                        "--run", str(run_dir)], capture_output=True, text=True, cwd=ROOT)
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
