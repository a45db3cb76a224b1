"""The one real drill the drill tests share."""
from __future__ import annotations

import subprocess

import pytest
from helpers import ROOT, can_build_twin


@pytest.fixture(scope="session")
def drill_run(tmp_path_factory):
    """One real drill for the whole suite: the README's default drill (``scripts/setup.sh
    drill``), with the run folder redirected. ``(run_dir, output)``. Tests that damage or
    re-score a run work on a copy (``shutil.copytree``), so every module shares this drill."""
    if can_build_twin() is not None:
        pytest.skip(f"twin: {can_build_twin()}")
    runs = tmp_path_factory.mktemp("runs")
    r = subprocess.run(["bash", "scripts/setup.sh", "drill", "--runs-dir", str(runs)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir, r.stdout + r.stderr
