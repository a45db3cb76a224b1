"""``playbook check`` and ``attack validate`` are one command: the same verdict (exit code,
output, error line) on every shipped playbook and on every bad playbook of the test data, with
and without a topology. In process (no root, no twin)."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from cyberrange.cli.main import main
from cyberrange.model.loader import load_topology

SHIPPED = sorted((ROOT / "attack_playbooks").glob("*.yaml"))
BAD = sorted((ROOT / "tests" / "data" / "bad").glob("pb_*.yaml"))
TOPOLOGIES = {load_topology(p).name: p for p in sorted((ROOT / "topologies").glob("*.yaml"))}
FOB = ROOT / "topologies" / "fob.yaml"


def _topology_of(path: Path) -> Path:
    """The topology a shipped playbook names (``topology:``), else the FOB."""
    for line in path.read_text().splitlines():
        if line.startswith("topology:"):
            return TOPOLOGIES.get(line.split(":", 1)[1].strip(), FOB)
    return FOB


def _verdict(capsys, monkeypatch, *argv) -> tuple[int, str, str]:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as done:
        main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return done.value.code, out, err


@pytest.mark.parametrize("path", SHIPPED + BAD, ids=lambda p: p.stem)
@pytest.mark.parametrize("with_topology", [True, False], ids=["topology", "alone"])
def test_same_verdict(capsys, monkeypatch, path, with_topology):
    extra = ["--topology", _topology_of(path)] if with_topology else []
    rel = path.relative_to(ROOT)
    a = _verdict(capsys, monkeypatch, "playbook", "check", rel, *extra)
    b = _verdict(capsys, monkeypatch, "attack", "validate", rel, *extra)
    note = "note: `cyberrange attack validate` is deprecated and will be removed: use " \
           "`cyberrange playbook check`\n"
    assert b[2].startswith(note)          # the old name: one line first, then the same
    assert a == (b[0], b[1], b[2][len(note):])
    code, _out, err = a
    if path in SHIPPED:
        assert code == 0, err
    elif with_topology:
        assert code == 2 and err.startswith(f"error: {rel}:"), err
