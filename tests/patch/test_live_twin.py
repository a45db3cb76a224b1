"""Every shipped change set (topologies/changes/*.yaml) validated live, on real twins (root).

One `cyberrange validate` per topology validates all of that topology's change sets against
**one** baseline run of its rehearsal playbook (the baseline is shared, `--jobs` twins run at
once), with a short warm-up and cool-down. Each example must get its expected verdict for its
intended reason:

- a fix passes and shows its effect live (the step it is for goes from succeeded to not
  succeeded, or stays blocked for a defence-in-depth rule) with no live check failing;
- a must-fail change fails, and the live checks that fail are exactly the ones it is meant to
  break (a mission thread down, an attack step that now succeeds): nothing else, so a noisy
  probe cannot pass for the reason.

``CYBERRANGE_TEST_TWIN_JOBS`` (default 2) sets the twins at once: run the suite holding both
twin slots (`twinslot --exclusive`), or set it to 1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import yaml
from helpers import ROOT, needs_twin

pytestmark = needs_twin

CHANGES = ROOT / "topologies" / "changes"
JOBS = os.environ.get("CYBERRANGE_TEST_TWIN_JOBS", "2")
FOB_PB = "fob_patch_rehearsal.yaml"
BRIGADE_PB = "brigade_patch_rehearsal.yaml"
AIR_PB = "airbase_fuel_plc.yaml"

# change -> (topology, verdict, {step: (before, after)}, failing live checks). Step outcomes
# are what the change is for; for a FAIL, these live checks must fail, and only these or the
# ones in ALSO (a consequence of the same breakage, probed less often) may.
COP_SERVICE = f"service:c2-server:tcp/8080 ({FOB_PB})"
ALSO = {"fob_break_cop": {COP_SERVICE}, "fob_move_cop_port": {f"mission hq-cop-feed ({FOB_PB})"}}
EXPECTED = {
    "fob_close_ssh_ops_c2": ("fob", "PASS", {"ssh-c2": ("blocked", "blocked")}, set()),
    "fob_rotate_passwords": ("fob", "PASS", {"brute": ("succeeded", "failed")}, set()),
    "fob_restrict_dns": ("fob", "PASS", {"dns": ("succeeded", "blocked")}, set()),
    "fob_break_cop": ("fob", "FAIL", {}, {f"mission cop ({FOB_PB})"}),
    "fob_open_ssh_admin": ("fob", "FAIL", {"ssh-c2": ("blocked", "succeeded")},
                           {f"step {FOB_PB}:ssh-c2 (T1046-connect)"}),
    "fob_move_cop_port": ("fob", "FAIL", {}, {f"mission cop ({FOB_PB})"}),
    "brigade_restrict_intel": ("brigade", "PASS", {"intel": ("succeeded", "blocked")}, set()),
    "brigade_open_fires_to_bn": ("brigade", "FAIL", {"fdc": ("blocked", "succeeded")},
                                 {f"step {BRIGADE_PB}:fdc (T1046-connect)"}),
    "air_base_plc_firmware": ("air_base", "PASS", {"alarm": ("succeeded", "failed"),
                                                   "hold": ("succeeded", "skipped")}, set()),
}


def _air_playbook(tmp) -> str:
    """The shipped fuel-PLC playbook with its delays and the 5-minute hold cut short (the
    steps, actors, targets and writes are the same)."""
    pb = yaml.safe_load((ROOT / "attack_playbooks" / AIR_PB).read_text())
    for step in pb["steps"]:
        step.pop("timing", None)
        if step["id"] == "hold":
            step["params"].update(repeat=2, interval=1)
    out = tmp / AIR_PB
    out.write_text(yaml.safe_dump(pb, sort_keys=False))
    return str(out)


def _validate(topo: str, playbook: str, tmp) -> dict:
    changes = sorted(c for c, e in EXPECTED.items() if e[0] == topo)
    junit = tmp / f"{topo}.xml"
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "cyberrange.cli.main", "validate", f"topologies/{topo}.yaml",
         *[f"topologies/changes/{c}.yaml" for c in changes], "--playbook", playbook,
         "--runs-dir", str(tmp / "runs"), "--warmup", "3", "--cooldown", "1", "--jobs", JOBS,
         "--json", "--junit", str(junit)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - t0
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout)
    results = out.get("changes", [out])
    by_file = {res["change_file"].rsplit("/", 1)[-1][:-5]: res for res in results}
    assert sorted(by_file) == changes
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert len(suites) == len(changes)
    print(f"\nlive validation of {topo}: {len(changes)} change(s), {seconds:.0f} s")
    for name, res in by_file.items():        # the table of docs/patch-validation.md
        run = res["live"]["runs"][0]
        moved = [f"{s['step']} {s['before']}->{s['after']}" for s in run["steps"]
                 if s["change"] != "same"]
        fails = [c["reason"] for c in res["live"]["checks"] if c["status"] == "fail"]
        print(f"  {name}: {res['verdict']} | {'; '.join(moved) or '-'} | "
              f"{'; '.join(fails) or '-'} | baseline {run['seconds'][0]} s, "
              f"patched {run['seconds'][1]} s")
    return {"changes": by_file, "seconds": seconds, "rc": r.returncode}


@pytest.fixture(scope="module")
def validations(tmp_path_factory):
    """Run lazily, once per topology, the first time one of its examples is asked for."""
    tmp = tmp_path_factory.mktemp("live-examples")
    cache: dict = {}

    def get(topo: str) -> dict:
        if topo not in cache:
            pb = {"fob": str(CHANGES / "playbooks" / FOB_PB),
                  "brigade": str(CHANGES / "playbooks" / BRIGADE_PB),
                  "air_base": None}[topo] or _air_playbook(tmp)
            cache[topo] = _validate(topo, pb, tmp / topo)
        return cache[topo]
    return get


def test_every_shipped_change_set_has_an_expected_live_verdict():
    assert sorted(EXPECTED) == sorted(p.stem for p in CHANGES.glob("*.yaml"))


@pytest.mark.parametrize("change", list(EXPECTED))
def test_each_example_gets_its_verdict_live_for_its_reason(validations, change):
    topo, verdict, steps, failing = EXPECTED[change]
    v = validations(topo)
    res = v["changes"][change]
    assert res["verdict"] == verdict, res["reasons"]
    (run,) = res["live"]["runs"]
    table = {s["step"]: s for s in run["steps"]}
    for sid, (before, after) in steps.items():
        assert (table[sid]["before"], table[sid]["after"]) == (before, after), table[sid]
    live_fail = {c["name"] for c in res["live"]["checks"] if c["status"] == "fail"}
    assert failing <= live_fail <= failing | ALSO.get(change, set()), \
        [c for c in res["live"]["checks"] if c["status"] != "pass"]
    checks = {c["name"]: c for c in res["checks"]}
    for sid in steps:
        if f"expect blocked: {sid}" in checks:       # the change set's own expectation
            assert checks[f"expect blocked: {sid}"]["status"] == "pass"
    if verdict == "PASS":
        # no mission and no service lost availability on the patched twin
        assert not [c for c in res["live"]["checks"] if c["group"].startswith("live-")
                    and c["status"] == "fail"]
    else:
        for name in failing:       # the reason says what broke
            reason = checks[name]["reason"]
            assert ("-> 0%" in reason if name.startswith("mission") else
                    reason.startswith("regression: blocked -> succeeded")), reason
