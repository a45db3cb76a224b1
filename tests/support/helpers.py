"""What many test modules share (on sys.path through pyproject's ``pythonpath``): the checkout's
root, this Python, the real command line, and the twin's requirements. Fixtures stay in the
conftest.py files; a test module imports these with ``from helpers import ...``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]          # tests/support/helpers.py -> the checkout
PY = sys.executable


def can_build_twin() -> str | None:
    """Why a twin cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("mnexec", "tcpdump", "nft", "brctl"):
        if not shutil.which(tool):
            return f"{tool} missing"
    # found, not imported: importing mininet.log changes the logger class of every logger made
    # later in this process (Elasticsearch's would print to stderr); cyberrange.twin.mnnodes
    # imports it under a guard when a twin is built
    import importlib.util
    if importlib.util.find_spec("mininet") is None:
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
