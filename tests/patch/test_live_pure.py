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


def test_expect_blocked_passes_a_step_already_blocked_and_warns_on_a_missing_one(tmp_path):
    cs = _change(tmp_path, "  - {op: remove-node, node: cp-ws2}\n")
    cs.blocked_steps = ["ssh", "brute", "nowhere", "read"]
    before = _card({"ssh": "blocked", "brute": "succeeded", "read": "succeeded"}, {}, {})
    after = _card({"ssh": "blocked", "brute": "failed", "read": "succeeded"}, {}, {})
    checks = {c.name: c for c in compare([PlaybookRuns("pb.yaml", before, after, ("a", "b"),
                                                       (1.0, 1.0))], cs)}
    assert checks["expect blocked: ssh"].status == "pass"
    assert "already was blocked before" in checks["expect blocked: ssh"].reason
    assert checks["expect blocked: brute"].reason == "fix: succeeded -> failed"
    assert checks["expect blocked: nowhere"].status == "warn"
    assert checks["expect blocked: read"].status == "fail"


def test_an_availability_drop_fails_only_when_the_probes_show_it(tmp_path):
    from cyberrange.patch.live import drop_p_value
    assert drop_p_value(7, 7, 6, 7) == 0.5                    # one lost probe of 7: chance
    assert drop_p_value(7, 7, 0, 7) < 0.001                   # all lost: a broken thread
    assert drop_p_value(None, None, 0, 7) == 0.0              # no counts: taken as it is

    def card(ok, n):
        return {"steps": [], "availability": {"threads": {"cop": {
            "kind": "mission", "availability": ok / n, "ok": ok, "probes": n}}}}
    cs = _change(tmp_path, "  - {op: remove-node, node: cp-ws2}\n")
    noisy = compare([PlaybookRuns("pb.yaml", card(7, 7), card(6, 7), ("a", "b"), (1, 1))], cs)
    broken = compare([PlaybookRuns("pb.yaml", card(7, 7), card(0, 7), ("a", "b"), (1, 1))], cs)
    assert [c.status for c in noisy] == ["warn"] and "too few probes" in noisy[0].reason
    assert [c.status for c in broken] == ["fail"] and "(7/7 -> 0/7)" in broken[0].reason


def test_several_changes_share_one_baseline_drill_per_playbook(tmp_path, monkeypatch):
    """The orchestration of live_validate_many, with the drill replaced by a recorder (the
    twins themselves run in tests/patch/test_live_twin.py)."""
    from cyberrange.drill import DrillOptions
    from cyberrange.patch import live
    ran = []

    def fake_drill(job, opts, ui):
        ran.append(job)
        outcome = "failed" if job.change == "fob-rotate-passwords" else "succeeded"
        return live.DrillDone(f"run{len(ran)}", {"steps": [
            {"step_id": "brute", "technique": "T1110.001", "outcome": outcome}]}, 1.0)
    monkeypatch.setattr(live, "_drill", fake_drill)
    sets = [load_change(CHANGES / c) for c in ("fob_rotate_passwords.yaml",
                                               "fob_restrict_dns.yaml")]
    out = live.live_validate_many(ROOT / "topologies" / "fob.yaml", sets, ["a.yaml", "b.yaml"],
                                  DrillOptions(), tmp_path, workers=1)
    assert sum(j.change is None for j in ran) == 2 and len(ran) == 6   # 2 baselines + 2 x 2
    assert [len(r.pairs) for r in out] == [2, 2]
    assert out[0].pairs[0].runs[0] == out[1].pairs[0].runs[0]           # the same baseline run
    checks = {c.name: c.status for c in out[0].checks}
    assert checks["step a.yaml:brute (T1110.001)"] == "pass"
    assert checks["expect blocked: brute"] == "pass"
    assert (tmp_path / "fob-restrict-dns" / "fob.patched.yaml").is_file()


def test_validate_takes_several_change_sets_and_reports_each(tmp_path):
    import json
    import subprocess
    import sys
    import xml.etree.ElementTree as ET
    junit = tmp_path / "v.xml"
    r = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "validate",
                        "topologies/fob.yaml", "topologies/changes/fob_restrict_dns.yaml",
                        "topologies/changes/fob_break_cop.yaml", "--static-only", "--json",
                        "--junit", str(junit)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "FAIL"
    assert [(c["change"], c["verdict"]) for c in out["changes"]] == [
        ("fob-restrict-dns", "PASS"), ("fob-break-cop", "FAIL")]
    assert "fob-break-cop: FAIL (mission cop)" in r.stderr
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["patch-validation.fob-restrict-dns",
                                               "patch-validation.fob-break-cop"]
    dup = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "validate",
                          "topologies/fob.yaml", "topologies/changes/fob_break_cop.yaml",
                          "topologies/changes/fob_break_cop.yaml", "--static-only"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert dup.returncode == 2 and "two change sets are named 'fob-break-cop'" in dup.stderr
