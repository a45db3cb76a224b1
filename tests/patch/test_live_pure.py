"""The parts of live validation that need no twin: the patched inputs written to files, the
detector operations, and the comparison of two scorecards."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology
from cyberrange.patch.changeset import load_change
from cyberrange.patch.files import write_patched_detectors, write_patched_topology
from cyberrange.patch.live import PlaybookRuns, compare, step_table

ROOT = Path(__file__).resolve().parents[2]
CHANGES = ROOT / "topologies" / "changes"


@pytest.mark.parametrize("topo,change", [("fob", "fob_restrict_dns.yaml"),
                                         ("air_base", "air_base_plc_firmware.yaml"),
                                         ("brigade", "brigade_restrict_intel.yaml")])
def test_the_patched_file_loads_to_the_patched_model(tmp_path, topo, change):
    tpath = ROOT / "topologies" / f"{topo}.yaml"
    cs = load_change(CHANGES / change)
    out = write_patched_topology(tpath, cs, tmp_path / "p.yaml")
    a, b = load_topology(out), load_topology(tpath, change=cs)
    for name, n in b.nodes.items():
        m = a.nodes[name]
        assert [str(i.ip) for i in m.interfaces] == [str(i.ip) for i in n.interfaces]
        assert [(r.action, r.proto, r.ports, [str(x) for x in r.src.networks])
                for r in m.rules] == [(r.action, r.proto, r.ports, [str(x) for x in r.src.networks])
                                      for r in n.rules]
        assert [(s.name, s.version) for s in m.software] == [(s.name, s.version) for s in n.software]
    assert sorted(a.missions) == sorted(b.missions)


def _change(tmp_path, body: str):
    p = tmp_path / "c.yaml"
    p.write_text("version: 1\nname: d\ntopology: fob\nchanges:\n" + body)
    return load_change(p)


def test_detector_operations_patch_a_copy_and_are_checked(tmp_path):
    cs = _change(tmp_path, "  - {op: set-detector, detector: login-bruteforce, "
                           "settings: {threshold: 9}}\n  - {op: set-detector, detector: arp-scan, "
                           "enabled: false}\n")
    out = write_patched_detectors(cs, ROOT / "detectors", tmp_path / "dets")
    entries = {e["name"]: e for f in out.glob("*.yaml")
               for e in yaml.safe_load(f.read_text())["detectors"]}
    assert entries["login-bruteforce"]["settings"]["threshold"] == 9
    assert entries["arp-scan"]["enabled"] is False
    original = yaml.safe_load((ROOT / "detectors" / "bruteforce.yaml").read_text())
    assert original["detectors"][0]["settings"].get("threshold") != 9
    from cyberrange.detect.registry import load_detectors
    names = {d.name for d in load_detectors(out)}
    assert "arp-scan" not in names and "login-bruteforce" in names


@pytest.mark.parametrize("body,words", [
    ("  - {op: set-detector, detector: login-brute, settings: {threshold: 9}}\n",
     "did you mean 'login-bruteforce'"),
    ("  - {op: set-detector, detector: login-bruteforce, settings: {treshold: 9}}\n",
     "treshold"),
])
def test_bad_detector_operations_point_into_the_change(tmp_path, body, words):
    cs = _change(tmp_path, body)
    with pytest.raises(UserError) as e:
        write_patched_detectors(cs, ROOT / "detectors", tmp_path / "dets")
    assert e.value.file == cs.file and e.value.line == 5 and words in e.value.message


def _card(outcomes: dict, detected: dict, availability: dict) -> dict:
    return {"steps": [{"step_id": k, "technique": "T0855", "outcome": v,
                       "detected": detected.get(k, False), "reason": None}
                      for k, v in outcomes.items()],
            "availability": {"threads": {k: {"kind": "mission", "availability": v}
                                         for k, v in availability.items()}}}


def test_compare_finds_fixes_regressions_lost_detection_and_availability(tmp_path):
    cs = _change(tmp_path, "  - {op: remove-node, node: cp-ws2}\n")
    cs.blocked_steps = ["alarm", "read"]
    before = _card({"read": "succeeded", "alarm": "succeeded", "scan": "blocked",
                    "beacon": "succeeded"}, {"beacon": True}, {"cop": 1.0, "dns": 1.0})
    after = _card({"read": "succeeded", "alarm": "failed", "scan": "succeeded",
                   "beacon": "succeeded"}, {}, {"cop": 0.5, "dns": 0.98})
    pair = PlaybookRuns("pb.yaml", before, after, ("a", "b"), (1.0, 1.0))
    rows = {r["step"]: r["change"] for r in step_table(pair)}
    assert rows == {"read": "same", "alarm": "fix", "scan": "regression", "beacon": "same"}
    checks = {c.name: c.status for c in compare([pair], cs)}
    assert checks["step pb.yaml:alarm (T0855)"] == "pass"
    assert checks["step pb.yaml:scan (T0855)"] == "fail"
    assert checks["detection pb.yaml:beacon (T0855)"] == "fail"
    assert checks["mission cop (pb.yaml)"] == "fail" and checks["mission dns (pb.yaml)"] == "pass"
    assert checks["expect blocked: alarm"] == "pass" and checks["expect blocked: read"] == "fail"
