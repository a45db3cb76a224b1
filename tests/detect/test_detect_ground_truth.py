"""Detectors never see ground truth: not by import, not by reading the run folder, not through
the records they are given. Fails if any detector module (present or future) reaches for the
ledger, the scorer, the attack library or a label."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import pyarrow as pa
from helpers import ROOT

from cyberrange.detect import registry
from cyberrange.detect.base import Detector
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.telemetry.pcap import parse_pcaps

DETECT = ROOT / "cyberrange" / "detect"
FORBIDDEN_MODULES = ("cyberrange.score", "cyberrange.attack", "cyberrange.run", "cyberrange.drill",
                     "cyberrange.report", "cyberrange.twin")
FORBIDDEN_WORDS = ("ledger", "scorecard", "step_id", "ground truth")


def _imports(tree: ast.AST, module: str) -> list[str]:
    out = []
    pkg = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:          # relative: resolve against the package
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                out.append(f"{base}.{node.module}" if node.module else base)
            else:
                out.append(node.module or "")
    return out


def _strings_outside_docstrings(tree: ast.AST) -> list[str]:
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_no_detector_module_imports_ground_truth_or_names_it_in_code():
    modules = sorted(DETECT.glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        tree = ast.parse(path.read_text())
        module = f"cyberrange.detect.{path.stem}"
        for name in _imports(tree, module):
            assert not name.startswith(FORBIDDEN_MODULES), f"{path.name} imports {name}"
        for text in _strings_outside_docstrings(tree):
            for word in FORBIDDEN_WORDS:
                assert word not in text.lower(), f"{path.name}: string {text!r} names {word!r}"


def test_records_given_to_detectors_carry_no_label(tmp_path):
    """A spy detector of every input kind receives only telemetry columns."""
    seen = {}

    class Spy(Detector):
        family = "spy-ground-truth"
        needs_packets = True
        trainable = True

        def fit(self, flows, packets=None):
            seen["fit"] = (flows.schema.names, packets.schema.names if packets else [])

        def detect(self, flows, packets=None):
            seen["detect"] = (flows.schema.names, packets.schema.names)
            return []

    packets, flows, _ = parse_pcaps([(str(ROOT / "tests/data/pcaps/mixed.pcap"), "s1")], "r1")
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        store.write("packets", packets)
        store.write("flows", flows)
        registry.run_detectors(store, "r1", [Spy("spy")], baseline_s=5)
    from cyberrange.telemetry.schema import RECORD_SCHEMAS
    for stage in ("fit", "detect"):
        fcols, pcols = seen[stage]
        assert set(fcols) <= set(RECORD_SCHEMAS["flows"].names)
        assert set(pcols) <= set(RECORD_SCHEMAS["packets"].names)
        for col in fcols + pcols:
            assert not any(w in col for w in ("label", "step", "ledger", "technique", "attack"))


DRIVER = r"""
import json, sys
opened, out = [], sys.argv[1]
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        opened.append(str(args[0]))
from cyberrange.cli import main as cli_main
cli_main._register()                       # the CLI's own modules (attack list etc.) load here
cli_main._register = lambda: None
before = set(sys.modules)
sys.addaudithook(hook)
try:
    cli_main.main(sys.argv[2:])
except SystemExit as e:
    code = e.code
mods = sorted(m for m in set(sys.modules) - before if m.startswith("cyberrange"))
json.dump({"opened": opened, "modules": mods, "code": code}, open(out, "w"))
"""


def test_detecting_a_run_never_opens_its_ledger_or_imports_the_scorer(tmp_path):
    """`cyberrange detect run RUN` with every configured detector, under an audit hook: no
    file of ground truth is opened, no scoring or attack module is loaded to detect."""
    run = tmp_path / "r1"
    run.mkdir()
    packets, flows, _ = parse_pcaps([(str(ROOT / "tests/data/pcaps/mixed.pcap"), "s1")], "r1")
    with DuckDBStore(run / "store.duckdb") as store:
        store.write("packets", packets)
        store.write("flows", flows)
    (run / "manifest.json").write_text(json.dumps({"run_id": "r1", "status": "done",
                                                   "baseline_s": 1}))
    (run / "ledger.jsonl").write_text(json.dumps({"step_id": "s", "flows": []}) + "\n")
    (run / "scorecard.json").write_text("{}")
    report = tmp_path / "audit.json"
    r = subprocess.run([sys.executable, "-c", DRIVER, str(report), "detect", "run", str(run),
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    audit = json.loads(report.read_text())
    assert audit["code"] == 0, r.stderr
    assert any(p.endswith("manifest.json") for p in audit["opened"])      # the hook works
    assert not [p for p in audit["opened"] if "ledger" in p or "scorecard" in p]
    leaked = [m for m in audit["modules"] if m.startswith(("cyberrange.score",
                                                           "cyberrange.attack"))]
    assert not leaked, leaked
    assert pa is not None
