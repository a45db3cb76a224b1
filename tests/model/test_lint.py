"""Lint findings (cyberrange.model.lint) and ``cyberrange topo check``: each finding has a test
topology in tests/data/lint/ that triggers it and one (``*_ok.yaml``) that does not."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT

from cyberrange.model.lint import lint
from cyberrange.model.loader import load_topology
from cyberrange.model.topology import MissionThread

LINT = ROOT / "tests" / "data" / "lint"
FOB = ROOT / "topologies" / "fob.yaml"


def findings(name: str):
    return lint(load_topology(LINT / name))


def codes(fs) -> list[str]:
    return [f.code for f in fs]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cyberrange.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("stem,code", [
    ("unreachable_zone", "unreachable-zone"),
    ("shadowed_rule", "shadowed-rule"),
    ("rule_never_matches", "rule-never-matches"),
    ("mission_blocked", "mission-blocked"),
    ("redundant_rule", "redundant-rule"),
])
def test_each_finding_has_a_trigger_and_a_clean_twin(stem, code):
    bad = findings(f"{stem}.yaml")
    assert code in codes(bad), [str(f) for f in bad]
    ok = findings(f"{stem}_ok.yaml")
    assert ok == [], [str(f) for f in ok]          # the clean twin has no finding at all
    for f in bad:                                     # every finding points into its file
        assert f.ref.file.endswith(f"{stem}.yaml") and f.ref.line > 1


def test_unreachable_zone_says_why():
    fs = {f.details["zone"]: f for f in findings("unreachable_zone.yaml")}
    assert set(fs) == {"vault", "island"}
    assert "has no router" in fs["island"].message
    assert "fw default deny" in fs["vault"].message
    assert fs["vault"].ref.line == 8 and fs["vault"].severity == "warning"


def test_shadowed_rule_names_the_covering_rules():
    fs = [f for f in findings("shadowed_rule.yaml") if f.code == "shadowed-rule"]
    by_rule = {f.details["rule"]: f for f in fs}
    assert by_rule[3].details["covered_by"] == [2]
    assert by_rule[4].details["covered_by"] == [1]
    assert "fully covered by rule 1" in by_rule[4].message
    assert by_rule[5].details["covered_by"] == [1, 2]
    assert "'deny' is never applied" in by_rule[5].message
    assert set(by_rule) == {3, 4, 5}                  # rule 6 (icmp) is not shadowed


def test_rule_never_matches_reasons():
    fs = {f.details["rule"]: f for f in findings("rule_never_matches.yaml")
          if f.code == "rule-never-matches"}
    assert set(fs) == {2, 3, 4}
    assert "both on fw's users side" in fs[2].message
    assert "192.168.0.0/16 holds no address" in fs[3].message.replace("(", "").replace(")", "")
    assert "transit side" in fs[4].message


def test_mission_blocked_names_pair_and_rule():
    (f,) = [f for f in findings("mission_blocked.yaml") if f.code == "mission-blocked"]
    assert f.severity == "error"
    assert "user1 -> web tcp/8080" in f.message and "fw default deny" in f.message
    assert sorted(map(tuple, f.details["pairs"])) == [("user1", "web"), ("user2", "web")]


def test_mission_blocked_on_a_model_set_in_code():
    """Missions set in Python (v1 file): the FOB firewall denies ops -> c2-server ssh."""
    t = load_topology(FOB)
    t.missions = {"ssh-admin": MissionThread("ssh-admin", ["ops-ws1", "ops-ws2"], ["c2-server"],
                                             "tcp", 22),
                  "cop": MissionThread("cop", ["ops-ws1"], ["c2-server"], "tcp", 8080)}
    fs = [f for f in lint(t) if f.code == "mission-blocked"]
    assert len(fs) == 1
    assert "ops-ws1 -> c2-server tcp/22" in fs[0].message
    assert "fob-fw rule 4" in fs[0].message and "(and 1 more pair)" in fs[0].message


def test_fob_is_clean_but_for_one_info():
    fs = lint(load_topology(FOB))
    assert [(f.code, f.details.get("rule")) for f in fs] == [("redundant-rule", 4)]


def test_cli_check_exit_codes_and_json():
    r = cli("topo", "check", LINT / "mission_blocked.yaml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "mission-blocked" in r.stdout and "failed:" in r.stderr
    r = cli("topo", "check", LINT / "shadowed_rule.yaml", "--json")
    assert r.returncode == 0, r.stderr                # warnings do not fail the check
    doc = json.loads(r.stdout)
    assert doc["ok"] is True
    assert {f["code"] for f in doc["findings"]} == {"shadowed-rule", "redundant-rule"}
    assert all(f["file"].endswith("shadowed_rule.yaml") and f["line"] for f in doc["findings"])
    r = cli("topo", "check", LINT / "mission_blocked.yaml", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    r = cli("topo", "check", LINT / "nope.yaml")
    assert r.returncode == 2
