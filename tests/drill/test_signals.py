"""Signals at every phase of a real drill, as an impatient user (or a supervisor) sends them.

- Ctrl-C twice and SIGTERM twice: the first stops the drill, the second arrives during the
  teardown and is acknowledged; the teardown finishes: 0 kernel objects left.
- Ctrl-C three times: the third forces the quit and prints the exact `cyberrange down`
  command; that command removes the rest.
- SIGKILL while the twin is built, while the attack runs, during the teardown and during the
  analysis: `cyberrange down` (by run id, or --stale) removes what is left.
In every case the manifest ends in a final state, with a teardown summary.

Signals go to the drill's whole process group (``killpg``), as a terminal's Ctrl-C does, so
the commands the teardown runs (``ip link del``) receive them too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import PY, ROOT, cli, needs_twin

from cyberrange.run import FINAL_STATUSES
from cyberrange.twin.state import leftovers, nothing_left, live_states

pytestmark = needs_twin
REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"

# the second step waits a minute: the signals land while the drill is in its attack phase
PLAYBOOK = """version: 1
name: slow-sweep
topology: reach-test
steps:
  - id: sweep
    technique: T1018
    actor: user1
    targets: [servers]
    params: {timeout: 0.5}
  - id: later
    technique: T1018
    actor: user1
    targets: [mgmt]
    params: {timeout: 0.5}
    timing: {delay: 60}
"""
QUICK = PLAYBOOK.replace("delay: 60", "delay: 0")


class Drill:
    """``cyberrange drill run`` in its own process group, watched from outside."""

    def __init__(self, tmp_path, playbook=PLAYBOOK):
        pb = tmp_path / "pb.yaml"
        pb.write_text(playbook)
        self.runs = tmp_path / "runs"
        self.proc = subprocess.Popen(
            [PY, "-m", "cyberrange.cli.main", "drill", "run", str(REACH), str(pb), "--runs-dir",
             str(self.runs), "--warmup", "0", "--cooldown", "0"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.state = None

    def wait_state(self, status: str | None, timeout: float = 120):
        """Wait until this drill's twin has a state file (with ``status``, if given)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            mine = [s for s in live_states() if s.owner_pid == self.proc.pid]
            if mine and (status is None or mine[0].status == status):
                self.state = mine[0]
                return self.state
            assert self.proc.poll() is None, self.output()
            time.sleep(0.02)
        raise AssertionError(f"no twin state {status!r} within {timeout} s")

    def wait_ledger(self, timeout: float = 60):
        """Wait until the first attack step has been written (the attack phase is on)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.stat().st_size for p in self.runs.glob("*/ledger.jsonl")):
                return
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError("the attack did not start")

    def signal(self, sig):
        os.killpg(self.proc.pid, sig)

    def stubborn(self):
        """A process in a node that ignores SIGTERM: the teardown then takes its full grace
        period (2 s), so that a signal sent during the teardown lands in it for sure."""
        ns = self.state.namespaces["user1"]
        subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                          " print('ready', flush=True); time.sleep(120)"],
                         stdout=subprocess.PIPE, start_new_session=True).stdout.readline()

    def output(self, timeout: float = 120) -> str:
        out, _ = self.proc.communicate(timeout=timeout)
        return out

    @property
    def run_dir(self):
        (d,) = [p for p in self.runs.iterdir() if p.is_dir()]
        return d

    def manifest(self) -> dict:
        return json.loads((self.run_dir / "manifest.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_second_signal_during_the_teardown_is_acknowledged_and_the_teardown_finishes(
        tmp_path, sig):
    d = Drill(tmp_path)
    st = d.wait_state("up")
    d.wait_ledger()
    d.stubborn()
    d.signal(sig)
    time.sleep(0.5)                          # the teardown is under way (it takes 2 s)
    d.signal(sig)
    out = d.output()
    assert d.proc.returncode == 128 + sig, out
    assert "still cleaning up" in out, out
    assert "Traceback" not in out, out
    assert nothing_left(st.prefix), leftovers(st.prefix)
    assert not [s for s in live_states() if s.prefix == st.prefix], "state file left"
    m = d.manifest()
    assert m["status"] == "interrupted"
    assert m["teardown"]["complete"] is True and m["teardown"]["left"] == 0, m["teardown"]
    assert "interrupted: the twin was removed" in out, out


# the second step scans slowly (about 30 s): Ctrl-C lands while it runs
RUNNING = PLAYBOOK.replace("""  - id: later
    technique: T1018
    actor: user1
    targets: [mgmt]
    params: {timeout: 0.5}
    timing: {delay: 60}""", """  - id: later
    technique: T1046
    actor: user1
    targets: [web, ssh]
    params: {ports: [%s], timeout: 0.5, rate: 5}""" % ", ".join(map(str, range(1000, 1150))))


def test_ctrl_c_while_a_step_runs_keeps_that_steps_ledger_record(tmp_path):
    """The agents are stopped and their record written before the teardown, with what they
    sent: the playbook runs in a worker thread (a signal interrupting a thread join once let
    the teardown start while a step was still running), and an agent takes the terminal's
    SIGINT as a stop (it used to die of it without a result: a ``stopped`` record with no
    packets although probes had gone out)."""
    d = Drill(tmp_path, RUNNING)
    st = d.wait_state("up")
    d.wait_ledger()                          # the sweep is written: the scan has begun
    time.sleep(4.0)
    d.signal(signal.SIGINT)
    out = d.output()
    assert d.proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert nothing_left(st.prefix), leftovers(st.prefix)
    from cyberrange.attack.ledger import read_ledger
    ledger = read_ledger(d.run_dir / "ledger.jsonl")
    later = [r for r in ledger if r["step_id"] == "later"]
    assert later and later[0]["outcome"] == "stopped", ledger
    assert later[0]["packets_sent"] > 0, json.dumps(later[0])
    assert d.manifest()["status"] == "interrupted"


def test_a_third_ctrl_c_forces_the_quit_and_names_the_command_that_finishes_the_job(tmp_path):
    d = Drill(tmp_path)
    st = d.wait_state("up")
    d.wait_ledger()
    d.stubborn()
    for _ in range(3):
        d.signal(signal.SIGINT)
        time.sleep(0.3)
    out = d.output()
    assert d.proc.returncode == 130, out
    m = d.manifest()
    command = f"cyberrange down {m['run_id']}"
    assert command in out, out
    assert m["status"] == "interrupted" and m["teardown"]["complete"] is False, m["teardown"]
    assert m["teardown"]["cleanup"] == command
    r = cli("down", m["run_id"])
    assert r.returncode == 0, r.stderr
    assert nothing_left(st.prefix), leftovers(st.prefix)
    m = d.manifest()
    assert m["status"] == "interrupted"
    assert m["teardown"]["complete"] is True and m["teardown"]["by"] == "cyberrange down"


@pytest.mark.parametrize("phase", ["build", "attack", "teardown"])
def test_sigkill_then_down_leaves_nothing_and_a_final_manifest(tmp_path, phase):
    d = Drill(tmp_path)
    if phase == "build":
        st = d.wait_state("building")
    else:
        st = d.wait_state("up")
        d.wait_ledger()
        if phase == "teardown":
            d.stubborn()
            d.signal(signal.SIGINT)
            time.sleep(0.5)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.output()
    # the owner is gone: `status` says so, and the next `down --stale` does the rest
    r = cli("status")
    assert st.prefix in r.stdout and "orphaned" in r.stdout, r.stdout
    r = cli("down", "--stale")
    assert r.returncode == 0, r.stderr
    assert nothing_left(st.prefix), leftovers(st.prefix)
    m = d.manifest()
    assert m["status"] in FINAL_STATUSES, m["status"]
    assert m["status"] == ("interrupted" if phase == "teardown" else "killed")
    assert m["teardown"]["complete"] is True and m["teardown"]["by"] == "cyberrange down"


def test_sigkill_during_the_analysis_is_finalised_by_the_next_command(tmp_path):
    d = Drill(tmp_path, QUICK)
    st = d.wait_state("up")
    deadline = time.time() + 120
    while [s for s in live_states() if s.prefix == st.prefix]:   # until the twin is gone
        assert time.time() < deadline and d.proc.poll() is None
        time.sleep(0.02)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.output()
    assert d.manifest()["status"] == "running"
    r = cli("status")
    assert d.manifest()["run_id"] in r.stdout, r.stdout
    r = cli("down", "--stale")
    assert r.returncode == 0, r.stderr
    m = d.manifest()
    assert m["status"] == "killed" and "died" in m["error"]
    assert nothing_left(st.prefix), leftovers(st.prefix)
