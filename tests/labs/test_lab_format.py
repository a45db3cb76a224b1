"""Bad lab files (issue 16, item 6): each is refused with ONE line ``FILE:LINE:COL: ...``, exit 2,
and nothing is built (no run folder, no twin). No root needed: the refusal comes first.

Each case is the good lab below with one change; the line the error must name carries the
marker ``# <-`` (or is given)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
name: tiny
title: A tiny lab
level: beginner
minutes: 5
objectives: [Find the scanner]
techniques: [T1046]
topology: fob
scenario:
  benign: {intensity: 1, seed: 7}
  playbooks:
    - {file: attack_playbooks/recon_bruteforce.yaml, at: 2, seed: 3}
  stage:
    - {blue: rule-add, firewall: fob-fw, rule: "allow from ops-maint to c2-server proto tcp port 22"}
tasks:
  - id: scanner
    title: Which host scans?
    points: 10
    hints:
      - {text: look at SYNs, cost: 2}
    checks:
      - {type: answer, expect: 10.10.2.66, tries: 3}
  - id: block
    title: Block it
    points: 10
    checks:
      - {type: reach, from: ops-maint, to: ops-files, proto: tcp, port: 22, expect: closed}
      - {type: step, step: brute, outcome: blocked}
      - {type: mission, thread: cop, keep: true}
"""

# (id, old text, new text) — the new text carries "# <-" on the line the error must name
CASES = [
    ("unknown-key", "title: A tiny lab\n", "titel: A tiny lab  # <-\n"),
    ("bad-level", "level: beginner\n", "level: expert  # <-\n"),
    ("name-not-folder", "name: tiny\n", "name: other  # <-\n"),
    ("unknown-topology", "topology: fob\n", "topology: fobb  # <-\n"),
    ("playbook-outside", "{file: attack_playbooks/recon_bruteforce.yaml, at: 2, seed: 3}",
     "{file: ../../../../etc/passwd, at: 2}  # <-"),
    ("playbook-missing", "{file: attack_playbooks/recon_bruteforce.yaml, at: 2, seed: 3}",
     "{file: attack_playbooks/nope.yaml}  # <-"),
    ("duplicate-task", "  - id: block\n", "  - id: scanner  # <-\n"),
    ("reach-unknown-node", "from: ops-maint, to: ops-files, proto: tcp, port: 22, expect: closed}",
     "from: ops-mant, to: ops-files, proto: tcp, port: 22, expect: closed}  # <-"),
    ("unknown-step", "{type: step, step: brute, outcome: blocked}",
     "{type: step, step: brut, outcome: blocked}  # <-"),
    ("bad-regex", "{type: answer, expect: 10.10.2.66, tries: 3}",
     "{type: answer, pattern: \"10.10.(2\", tries: 3}  # <-"),
    ("unknown-mission", "{type: mission, thread: cop, keep: true}",
     "{type: mission, thread: coop}  # <-"),
    ("reach-no-port", "proto: tcp, port: 22, expect: closed}", "proto: tcp, expect: closed}  # <-"),
    ("negative-hint-cost", "{text: look at SYNs, cost: 2}", "{text: look at SYNs, cost: -2}  # <-"),
    ("stage-unknown-key", "{blue: rule-add, firewall: fob-fw, rule:",
     "{blue: rule-add, firewal: fob-fw, rule: \"x\"}  # <-\n    - {blue: rule-add, firewall: fob-fw, rule:"),
    ("stage-bad-rule", "ops-maint to c2-server proto tcp port 22\"}",
     "ops-mant to c2-server proto tcp port 22\"}  # <-"),
    ("duplicate-yaml-key", "minutes: 5\n", "minutes: 5\nminutes: 6  # <-\n"),
    ("only-keep-checks", ("      - {type: reach, from: ops-maint, to: ops-files, proto: tcp, "
                          "port: 22, expect: closed}\n"
                          "      - {type: step, step: brute, outcome: blocked}\n"), ""),
    ("bad-outcome", "outcome: blocked}", "outcome: stoped}  # <-"),
    ("check-unknown-type", "{type: mission, thread: cop, keep: true}",
     "{type: misson, thread: cop}  # <-"),
]


def _lab(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    d = tmp_path / "labs" / name
    d.mkdir(parents=True)
    (d / "lab.yaml").write_text(text)
    (d / "briefing.md").write_text("# Tiny\n")
    return d


def _cli(*argv, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cyberrange.cli.main", *argv], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_good_lab_loads(tmp_path):
    d = _lab(tmp_path, GOOD)
    r = _cli("lab", "check", str(d))
    assert r.returncode == 0, r.stderr
    assert "2 tasks, 4 checks, 1 playbooks, 1 staged" in r.stdout


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_lab_one_line_exit_2(tmp_path, case):
    name, old, new = case
    assert old in GOOD, name
    text = GOOD.replace(old, new, 1)
    d = _lab(tmp_path, text)
    if name == "only-keep-checks":             # the error names the task's checks: line
        want = text.splitlines().index("    checks:", text.splitlines().index("  - id: block")) + 2
    else:
        want = next(i for i, ln in enumerate(text.splitlines(), 1) if "# <-" in ln)
    r = _cli("lab", "check", str(d))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    m = re.match(r"^error: (\S+lab\.yaml):(\d+):(\d+): \S", lines[0])
    assert m, lines[0]
    assert int(m.group(2)) == want, lines[0]
    assert "Traceback" not in r.stderr


def test_bad_lab_builds_nothing(tmp_path):
    """`lab start` of a bad lab: the same one line, exit 2, no run folder, no twin."""
    from cyberrange.twin.state import live_states
    before = {s.prefix for s in live_states()}
    d = _lab(tmp_path, GOOD.replace("level: beginner\n", "level: expert\n"))
    runs = tmp_path / "runs"
    r = _cli("lab", "start", str(d), "--runs-dir", str(runs))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ":4:" in r.stderr
    assert not runs.exists() or not any(runs.iterdir())
    assert {s.prefix for s in live_states()} == before


def test_missing_briefing(tmp_path):
    d = _lab(tmp_path, GOOD)
    (d / "briefing.md").unlink()
    r = _cli("lab", "check", str(d))
    assert r.returncode == 2 and "briefing.md" in r.stderr
    assert re.match(r"^error: \S+lab\.yaml:\d+:\d+: ", r.stderr)


def test_bad_solution(tmp_path):
    d = _lab(tmp_path, GOOD)
    (d / "solution.yaml").write_text("steps:\n  - {wait_step: scan}\n"
                                     "  - {submit: {task: scaner, answer: x}}\n")
    r = _cli("lab", "check", str(d))
    assert r.returncode == 2, r.stdout
    assert re.match(r"^error: \S+solution\.yaml:3:\d+: no task 'scaner' \(did you mean "
                    r"'scanner'\?\)", r.stderr), r.stderr


def test_shipped_labs_check():
    """Every lab in labs/ loads, and so does its solution."""
    labs = sorted((ROOT / "labs").glob("*/lab.yaml"))
    assert labs
    for f in labs:
        r = _cli("lab", "check", str(f.parent))
        assert r.returncode == 0, (f, r.stderr)
