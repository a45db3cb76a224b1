"""Shared fixtures. Twin tests build real Mininet twins and so need root."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def can_build_twin() -> str | None:
    """Why a twin cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("mnexec", "tcpdump", "nft", "brctl"):
        if not shutil.which(tool):
            return f"{tool} missing"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "mininet module missing"
    return None


needs_twin = pytest.mark.skipif(can_build_twin() is not None, reason=f"twin: {can_build_twin()}")


def run_probes(twin, node: str, probes: list[dict]) -> list[dict]:
    """Run connection probes from inside ``node`` (cyberrange.twin.probe)."""
    p = twin.popen(node, [PY, "-m", "cyberrange.twin.probe"], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(json.dumps(probes), timeout=60)
    assert p.returncode == 0, err
    return json.loads(out)


def cli(*args, cwd=ROOT, timeout=600, input=None):
    """Run the real command line, as a user would."""
    return subprocess.run([PY, "-m", "cyberrange.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, input=input)


def pytest_sessionfinish(session, exitstatus):
    """After the whole suite no kernel object of any twin made by it may remain."""
    if can_build_twin() is not None:
        return
    from cyberrange.twin.state import leftovers
    left = leftovers()
    if any(left.values()):
        print(f"\nLEFTOVER twin objects after the suite: {left}", file=sys.stderr)
        session.exitstatus = 1
