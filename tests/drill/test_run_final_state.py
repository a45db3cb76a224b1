"""A run never ends as `done` with exit 0 when something failed, and a runs folder that cannot
be written is found before anything is built.

- a drill whose attack step ended in error: the scorecard is printed, the manifest says
  `failed` with the reason, the command exits 1;
- a read-only runs folder, and one on a full file system: one line, exit 2, no twin built;
- numeric options that would hang or corrupt a drill (negative, NaN, infinite): exit 2.
"""
from __future__ import annotations

import json
import subprocess

import pytest
from helpers import ROOT, cli, needs_twin

from cyberrange.twin.state import live_states

REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"

# the second step's timeout comes from a fact that is a list: a type error at run time, which
# the runner records as outcome `error` (the loader cannot know a fact's type in advance)
ERRORING = """version: 2
name: erroring
topology: reach-test
steps:
  - id: sweep
    technique: T1018
    actor: user1
    targets: [servers]
    params: {timeout: 0.5}
  - id: broken
    technique: T1018
    actor: user1
    targets: [mgmt]
    params: {timeout: "#{sweep.hosts}"}
"""


@needs_twin
def test_a_drill_with_an_errored_step_ends_failed_with_exit_1(tmp_path):
    pb = tmp_path / "pb.yaml"
    pb.write_text(ERRORING)
    runs = tmp_path / "runs"
    r = cli("drill", "run", REACH, pb, "--runs-dir", runs, "--warmup", "0", "--cooldown", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "1 of 2 attack step executions ended in error" in m["error"]
    assert m["teardown"]["complete"] is True
    assert (run_dir / "scorecard.json").exists()          # the score is still there to read
    assert "broken" in r.stderr.splitlines()[-1], r.stderr
    assert not (run_dir / ".reserve").exists()


@pytest.fixture
def tmpfs(tmp_path):
    """A 16 MiB tmpfs of the test's own, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _nothing_built(before: set[str]) -> bool:
    return {s.prefix for s in live_states()} <= before


@needs_twin
def test_a_read_only_runs_folder_is_refused_before_the_twin_is_built(tmpfs, tmp_path):
    pb = tmp_path / "pb.yaml"
    pb.write_text(ERRORING)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    before = {s.prefix for s in live_states()}
    r = cli("drill", "run", REACH, pb, "--runs-dir", tmpfs / "runs")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Read-only file system" in lines[0] and str(tmpfs) in lines[0]
    assert _nothing_built(before)


@needs_twin
def test_a_full_disk_is_refused_before_the_twin_is_built(tmpfs, tmp_path):
    pb = tmp_path / "pb.yaml"
    pb.write_text(ERRORING)
    runs = tmpfs / "runs"
    runs.mkdir()
    (tmpfs / "filler").write_bytes(b"\0" * (15 << 20))
    before = {s.prefix for s in live_states()}
    r = cli("drill", "run", REACH, pb, "--runs-dir", runs)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "MiB free" in lines[0] or "No space left" in lines[0], lines[0]
    assert _nothing_built(before)
    assert not [p for p in runs.iterdir() if not p.name.startswith(".")]


def test_a_manifest_is_finalised_on_a_full_disk_from_its_reserve(tmpfs):
    from cyberrange.run import RESERVE, Run
    run = Run.create(tmpfs, "full", {})
    assert (run.dir / RESERVE).stat().st_size > 0
    with open(tmpfs / "filler", "wb", buffering=0) as f:   # fill every byte that is left
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass
    run.manifest["padding"] = "x" * 50_000                 # a manifest that no longer fits
    with pytest.raises(OSError):
        run.save()
    run.finish("failed", error="disk full")
    assert json.loads(run.manifest_path.read_text())["status"] == "failed"
    assert not (run.dir / RESERVE).exists()


@pytest.mark.parametrize("option, value", [
    ("--warmup", "-5"), ("--warmup", "nan"), ("--cooldown", "inf"), ("--duration", "0"),
    ("--intensity", "-1"), ("--intensity", "nan"), ("--intensity", "0"), ("--rotate", "0"),
    ("--baseline", "-1"), ("--seed", "-3"), ("--seed", "1.5"),
])
def test_numeric_options_that_would_hang_or_corrupt_a_drill_exit_2(option, value, tmp_path):
    r = cli("drill", "run", REACH, "--runs-dir", tmp_path, option, value)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and option in lines[0], r.stderr
    assert not list(tmp_path.iterdir())
