"""Every malformed topology in tests/data/bad/topo_*.yaml gives one FILE:LINE:COL error.

Each bad file starts with ``# expect: LINE: substring``: the error must point at that line and
contain that text, both from the library and from the real CLI (exit 2, one stderr line, no
traceback).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology
from cyberrange.model.yamlsrc import parse_yaml

BAD = sorted((ROOT / "tests" / "data" / "bad").glob("topo_*.yaml"))


def expectation(path: Path) -> tuple[int, str]:
    m = re.match(r"# expect: (\d+): (.*)", path.read_text().splitlines()[0])
    assert m, f"{path} lacks a first line '# expect: LINE: substring'"
    return int(m[1]), m[2].strip()


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_enough_bad_files():
    assert len(BAD) >= 14


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_load_error(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    line, substring = expectation(path)
    with pytest.raises(UserError) as info:
        load_topology(rel(path))
    message = str(info.value)
    assert message.startswith(f"{rel(path)}:{line}:"), message
    assert substring in message, message
    assert "\n" not in message


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_cli_error(path):
    line, substring = expectation(path)
    proc = subprocess.run([sys.executable, "-m", "cyberrange.cli.main", "topo", "check", rel(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {rel(path)}:{line}:"), lines[0]
    assert substring in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_topology(tmp_path / "nope.yaml")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing here\n")
    with pytest.raises(UserError, match=r":1:1: a topology file must be a mapping"):
        load_topology(p)


def test_positions_of_keys_and_values():
    doc = parse_yaml("a:\n  b: [1, 2]\n  c: {d: x}\n", "f.yaml")
    assert doc.data == {"a": {"b": [1, 2], "c": {"d": "x"}}}
    assert doc.pos(("a", "b"), key=True) == (2, 3)
    assert doc.pos(("a", "b", 1)) == (2, 10)
    assert doc.pos(("a", "c", "d")) == (3, 10)
    assert doc.pos(("a", "zzz")) == doc.pos(("a",))      # unknown path: nearest ancestor


def test_yaml_keys_stay_text_and_merge_keys_work():
    doc = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\non: 1\n")
    assert doc.data["other"] == {"x": 1, "y": 3}
    assert "on" in doc.data


def test_duplicate_key_points_at_second():
    with pytest.raises(UserError) as info:
        parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert str(info.value) == "f.yaml:3:1: duplicate key 'a' (first given at line 1)"


def test_too_many_nodes(tmp_path):
    nodes = "\n".join(f"  - {{name: h{i}, kind: host, zone: a}}" for i in range(1001))
    p = tmp_path / "big.yaml"
    p.write_text(f"version: 1\nname: big\nclassification: SECRET\nzones:\n"
                 f"  a: {{subnet: 10.0.0.0/16}}\nnodes:\n{nodes}\n")
    with pytest.raises(UserError, match="at most 1000"):
        load_topology(p)
