"""Live validation on real twins (root): the PLC firmware upgrade of the air base, rehearsed
with the fuel-PLC playbook on the baseline and the patched twin. The writes from the historian
(alarm, hold) must go from succeeded to blocked or failed, the reads and the HMI's mission
thread must keep working, and the verdict is PASS. One test, two drills."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import yaml
from helpers import ROOT, needs_twin

pytestmark = needs_twin


def _short_playbook(tmp_path) -> str:
    """The shipped fuel-PLC playbook with its delays and the 5-minute hold cut short (the
    steps, actors, targets and writes are the same)."""
    pb = yaml.safe_load((ROOT / "attack_playbooks" / "airbase_fuel_plc.yaml").read_text())
    for step in pb["steps"]:
        step.pop("timing", None)
        if step["id"] == "hold":
            step["params"].update(repeat=2, interval=1)
    out = tmp_path / "airbase_fuel_plc.yaml"
    out.write_text(yaml.safe_dump(pb, sort_keys=False))
    return str(out)


def test_plc_firmware_upgrade_blocks_the_historian_writes_live(tmp_path):
    junit = tmp_path / "v.xml"
    playbook = _short_playbook(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "cyberrange.cli.main", "validate", "topologies/air_base.yaml",
         "topologies/changes/air_base_plc_firmware.yaml",
         "--playbook", playbook, "--runs-dir",
         str(tmp_path / "runs"), "--warmup", "5", "--json", "--junit", str(junit)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["verdict"] == "PASS"
    (run,) = out["live"]["runs"]
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["alarm"]["before"] == "succeeded" and steps["alarm"]["change"] == "fix"
    assert steps["hold"]["before"] == "succeeded" and steps["hold"]["change"] == "fix"
    assert steps["read"]["after"] == "succeeded"          # reads are still allowed
    live = {c["name"]: c for c in out["live"]["checks"]}
    assert live["mission fuel-control (airbase_fuel_plc.yaml)"]["status"] == "pass"
    cases = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    assert len(cases) == len(out["checks"]) and not [c for c in cases if c.find("failure") is not None]
