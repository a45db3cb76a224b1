"""A playbook's link_events (DDIL) and an RF jamming step (CR-J0001) applied during one real
drill (issue 19 item 2): both share this drill, so the suite builds one twin for them."""
from __future__ import annotations

import json
import time

from helpers import ROOT, cli, needs_twin

LINKS = ROOT / "tests" / "data" / "good" / "links.yaml"
JAM = ROOT / "tests" / "data" / "playbooks" / "links_jam.yaml"


def test_validate_checks_link_events_against_the_topology():
    r = cli("playbook", "check", JAM, "--topology", LINKS)
    assert r.returncode == 0, r.stderr


@needs_twin
def test_a_drill_applies_logs_and_undoes_its_link_events(tmp_path):
    t = time.monotonic()
    r = cli("drill", "run", LINKS, JAM, "--runs-dir", tmp_path, "--warmup", "0",
            "--cooldown", "3", "--probe-interval", "0", "--no-benign")
    took = time.monotonic() - t
    assert r.returncode in (0, 1), r.stderr[-2000:]
    run = next(p for p in tmp_path.iterdir() if (p / "manifest.json").exists())
    log = [json.loads(x) for x in (run / "logs" / "links.jsonl").read_text().splitlines()]
    states = [(x["zone"], x["state"]) for x in log]
    # the schedule: jammed at 0, the radio degraded at 0, the jam lifted at 3, the radio back
    # up at the end (the jamming step's changes on sat interleave with them)
    schedule = [s for s in states if s[0] != "sat"]
    assert schedule == [("lossy", "jammed"), ("radio", "degraded"), ("lossy", "up"),
                        ("radio", "up")], states
    lossy = [x for x in log if x["zone"] == "lossy"]
    assert lossy[1]["t"] - lossy[0]["t"] >= 2.9
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["link_events"] == {"planned": 3, "applied": 4}
    assert "link lossy: jammed" in r.stderr + r.stdout
    # the after-action report shows them, with how long each lasted
    report = (run / "report.md").read_text()
    assert "## Link events" in report and "| lossy | jammed | — | 3." in report, report[-1500:]
    shown = cli("drill", "report", run, "--json")
    rows = json.loads(shown.stdout)["link_events"]
    assert [(x["zone"], x["state"]) for x in rows] == states
    _check_jamming_step(run, log, r.stdout + r.stderr)
    print(f"drill with link events and a jamming step: {took:.1f} s")


def _check_jamming_step(run, log, screen):
    """The jamming step jammed sat for its duration then set it up, both changes naming the
    step; it succeeded because frames were dropped (the sweep across it); the scorecard
    leaves it out of detection (not observable, no miss); the live screen showed it."""
    sat = [x for x in log if x["zone"] == "sat"]
    assert [x["state"] for x in sat] == ["jammed", "up"], sat
    assert all("step jam-sat (CR-J0001" in x["reason"] for x in sat), sat
    assert sat[1]["t"] - sat[0]["t"] >= 2.9
    from cyberrange.attack.ledger import read_ledger
    ledger = read_ledger(run / "ledger.jsonl")
    jam = next(x for x in ledger if x["step_id"] == "jam-sat")
    assert jam["outcome"] == "succeeded", jam
    assert jam["facts"]["dropped"] > 0 and jam["facts"]["link"] == "sat", jam["facts"]
    assert jam["packets_sent"] == 0 and jam["flows"] == []
    card = json.loads((run / "scorecard.json").read_text())
    row = next(s for s in card["steps"] if s["step_id"] == "jam-sat")
    assert row["observable"] is False and not row["detected"], row
    assert "not observable by packet sensors" in row["unobservable"]
    assert "CR-J0001" not in card["techniques"]        # not in the detection counts: no miss
    assert "link sat: jammed" in screen and "step jam-sat" in screen, screen[-3000:]
    # the reports: the HTML's link section draws the jam, the Navigator layer leaves the
    # custom id out with a note, the STIX bundle has its attack-pattern
    html, layer, bundle = run / "r.html", run / "layer.json", run / "stix.json"
    r = cli("drill", "report", run, "--html", html, "--navigator", layer, "--stix", bundle)
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    assert 'id="links"' in page and 'class="cr-link-jammed"' in page and "jam ended" in page
    assert "not observable by packet sensors" in page
    assert "note: CR-J0001 (RF jamming of a tactical link): a custom id" in r.stdout + r.stderr
    assert "CR-J0001" not in json.dumps(json.loads(layer.read_text()).get("techniques"))
    pats = [o for o in json.loads(bundle.read_text())["objects"] if o["type"] == "attack-pattern"]
    assert any(p["external_references"] == [
        {"source_name": "cyberrange", "external_id": "CR-J0001",
         "description": "custom technique id of the cyberrange catalogue (docs/techniques.md)"}]
        for p in pats), pats
