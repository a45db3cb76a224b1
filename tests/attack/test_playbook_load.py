"""The shipped playbook loads; every malformed playbook in tests/data/bad/pb_*.yaml gives one
FILE:LINE:COL error (first line of each file: ``# expect: LINE: substring``)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import ROOT

from cyberrange.attack.playbook import load_playbook, playbook_schema
from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology

FOB = ROOT / "topologies" / "fob.yaml"
PLAYBOOK = ROOT / "attack_playbooks" / "recon_bruteforce.yaml"
BAD = sorted((ROOT / "tests" / "data" / "bad").glob("pb_*.yaml"))


@pytest.fixture(scope="module")
def fob():
    return load_topology(FOB)


def test_shipped_playbook(fob):
    pb = load_playbook(PLAYBOOK, fob)
    assert (pb.name, pb.topology, pb.file) == ("recon-bruteforce", "fob", str(PLAYBOOK))
    assert [s.id for s in pb.steps] == ["sweep", "scan", "brute"]
    sweep, scan, brute = pb.steps
    assert sweep.technique == "T1018" and sweep.actor == "ops-maint"
    assert sweep.targets == ["ops-lan", "cp-lan"] and sweep.delay_s == 3.0
    assert sweep.params == {"timeout": 1.0, "rate": 500}            # rate from the catalog
    assert scan.targets == ["#{sweep.hosts}"] and scan.fact_refs == [("sweep", "hosts")]
    assert scan.params["rate"] == 400 and 8080 in scan.params["ports"]
    assert brute.params["stop_on_success"] is True and brute.params["ports"] == [22, 23, 2222]
    assert brute.params["pause"] == 0.05
    assert sweep.src.line == 13 and sweep.src.file == str(PLAYBOOK)


def test_loads_without_topology():
    pb = load_playbook(PLAYBOOK)
    assert len(pb.steps) == 3


def test_schema_valid_and_accepts_playbook():
    schema = json.loads(json.dumps(playbook_schema()))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(PLAYBOOK.read_text()))


def expectation(path: Path) -> tuple[int, str]:
    m = re.match(r"# expect: (\d+): (.*)", path.read_text().splitlines()[0])
    assert m, f"{path} lacks a first line '# expect: LINE: substring'"
    return int(m[1]), m[2].strip()


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_enough_bad_files():
    assert len(BAD) >= 6


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_load_error(path, fob, monkeypatch):
    monkeypatch.chdir(ROOT)
    line, substring = expectation(path)
    with pytest.raises(UserError) as info:
        load_playbook(rel(path), fob)
    message = str(info.value)
    assert message.startswith(f"{rel(path)}:{line}:"), message
    assert substring in message, message


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_cli_error(path):
    line, substring = expectation(path)
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "playbook", "check",
                           rel(path), "--topology", "topologies/fob.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {rel(path)}:{line}:"), lines[0]
    assert substring in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_ok():
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "playbook", "check",
                           str(PLAYBOOK), "--topology", str(FOB)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "recon-bruteforce" in proc.stdout


def test_without_topology_names_are_not_checked(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: p\nsteps:\n"
                 "  - {id: a, technique: T1018, actor: someone, targets: [somewhere, 10.0.0.0/8]}\n")
    pb = load_playbook(p)
    assert pb.steps[0].targets == ["somewhere", "10.0.0.0/8"] and pb.topology is None
    p.write_text("version: 1\nname: p\nsteps:\n"
                 "  - {id: a, technique: T1018, actor: x, targets: [10.0.0.1/8]}\n")
    with pytest.raises(UserError, match=r":4:51: bad target '10.0.0.1/8'.*host bits"):
        load_playbook(p)


def test_bool_is_not_a_number(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nname: p\nsteps:\n"
                 "  - id: a\n    technique: T1018\n    actor: x\n    targets: [y]\n"
                 "    params: {timeout: true}\n")
    with pytest.raises(UserError, match=r":8:23: .*expected a number, got bool True"):
        load_playbook(p)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_attack_validate_error(path):
    """The same one-line FILE:LINE error and exit 2 through ``cyberrange playbook check``."""
    line, substring = expectation(path)
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "playbook", "check",
                           rel(path), "--topology", "topologies/fob.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {rel(path)}:{line}:"), lines[0]
    assert substring in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_attack_validate_ok():
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "playbook", "check",
                           str(PLAYBOOK), "--topology", str(FOB)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "recon-bruteforce" in proc.stdout and "sweep" in proc.stdout
    assert "from facts" in proc.stdout          # scan's targets are all facts


def test_v1_shipped_playbook_has_v2_defaults(fob):
    pb = load_playbook(PLAYBOOK, fob)
    assert pb.version == 1 and pb.seed == 0 and pb.max_rate == 100000
    sweep = pb.steps[0]
    assert sweep.timing.repeat == 1 and sweep.timing.at is None and not sweep.parallel
    assert sweep.requires == [] and sweep.when == [] and sweep.actor_ref is None
