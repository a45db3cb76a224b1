"""A playbook's link_events (DDIL) applied during a real drill (issue 19 item 2)."""
from __future__ import annotations

import json

from helpers import ROOT, cli, needs_twin

LINKS = ROOT / "tests" / "data" / "good" / "links.yaml"
JAM = ROOT / "tests" / "data" / "playbooks" / "links_jam.yaml"


def test_validate_checks_link_events_against_the_topology():
    r = cli("playbook", "check", JAM, "--topology", LINKS)
    assert r.returncode == 0, r.stderr


@needs_twin
def test_a_drill_applies_logs_and_undoes_its_link_events(tmp_path):
    r = cli("drill", "run", LINKS, JAM, "--runs-dir", tmp_path, "--warmup", "0",
            "--cooldown", "3", "--probe-interval", "0", "--no-benign")
    assert r.returncode in (0, 1), r.stderr[-2000:]
    run = next(p for p in tmp_path.iterdir() if (p / "manifest.json").exists())
    log = [json.loads(x) for x in (run / "logs" / "links.jsonl").read_text().splitlines()]
    states = [(x["zone"], x["state"]) for x in log]
    # jammed at 0, the radio degraded at 0, the jam lifted at 3, the radio back up at the end
    assert states == [("lossy", "jammed"), ("radio", "degraded"), ("lossy", "up"),
                      ("radio", "up")], states
    assert log[2]["t"] - log[0]["t"] >= 2.9
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["link_events"] == {"planned": 3, "applied": 4}
    assert "link lossy: jammed" in r.stderr + r.stdout
    # the after-action report shows them, with how long each lasted
    report = (run / "report.md").read_text()
    assert "## Link events" in report and "| lossy | jammed | — | 3." in report, report[-1500:]
    shown = cli("drill", "report", run, "--json")
    rows = json.loads(shown.stdout)["link_events"]
    assert [(x["zone"], x["state"]) for x in rows] == states
