"""The playbook engine (format version 2): facts, preconditions, scheduling, rate cap, outcomes.

Two layers (the pure functions, no root: substitution, preconditions, schedule math, loader
errors, are in test_playbook_pure.py):
- the real runner against a stub agent (no root): every step "runs" a tiny Python script that
  logs the request it got and returns canned facts, so ordering, repeats, skips, actors from
  facts and containment are checked exactly;
- root: the real runner and agent in the namespace lab of tests/attack/test_attack_netns.py, ledger
  packet counts against tcpdump per 5-tuple.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT
from lab_netns import ATTACKER, LAB, T1, T2, T3, lab_topology
from nslab import actor_flows, lab_fixture, ledger_flows, needs_netns, packets_only

from cyberrange.attack.ledger import read_ledger
from cyberrange.attack.playbook import load_playbook
from cyberrange.attack.runner import run_playbook
from cyberrange.attack.schedule import schedule
from cyberrange.errors import ContainmentError

lab = lab_fixture(LAB)

FACTS = {
    "sweep": {"hosts": ["10.99.0.21", "10.99.0.22"]},
    "brute": {"credentials": [{"target": "10.99.0.21:22", "user": "admin", "password": "pw"}],
              "compromised": ["10.99.0.21"]},
    "scan": {"open": [], "hosts": []},
}


def write(tmp_path, text: str, name="pb.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


# ----------------------------------------------------------------------------- runner, stub agent
STUB = r"""
import json, sys, time
node, spec_path, log_path = sys.argv[1:4]
req = json.loads(sys.stdin.read())
with open(log_path, "a") as fh:
    fh.write(json.dumps({"node": node, "req": req, "t": time.time()}) + "\n")
spec = json.load(open(spec_path))
mine = spec["steps"].get(req["step"], {})
time.sleep(mine.get("sleep", 0))
src = spec["ips"][node]
flows = [{"src": src, "dst": t.split(":")[0], "proto": "icmp", "sport": 8, "dport": 0,
          "packets": 1, "bytes": 42} for t in req["targets"]]
print(json.dumps({"outcome": mine.get("outcome", "succeeded"), "start": time.time(),
                  "end": time.time(), "flows": flows, "facts": mine.get("facts", {}),
                  "error": mine.get("error"), "log": []}))
"""


class StubRunner:
    """A NodeRunner whose 'agent' logs its request and returns canned facts per step."""

    def __init__(self, tmp: Path, steps: dict, topo=None):
        self.spec, self.log = tmp / "spec.json", tmp / "agent-log.jsonl"
        topo = topo or lab_topology()
        self.spec.write_text(json.dumps({"steps": steps, "ips": {n: str(node.ip) for n, node
                                                                in topo.nodes.items()}}))
        self.script = tmp / "stub.py"
        self.script.write_text(STUB)

    def popen(self, node, argv, **kw):
        return subprocess.Popen([sys.executable, str(self.script), node, str(self.spec),
                                 str(self.log)], **kw)

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


CAMPAIGN = """
version: 2
name: campaign
seed: 7
steps:
  - id: sweep
    technique: T1018
    actor: attacker
    targets: [t1, t2]
    timing: {repeat: 3, every: 0.4, jitter: 0.2}
  - id: scan
    technique: T1046
    actor: attacker
    targets: ["#{sweep.hosts}"]
    timing: {rate: 800}
  - id: brute
    technique: T1110.001
    actor: attacker
    targets: ["#{scan.open}"]
    requires: ["#{scan.open}"]
  - id: pivot
    technique: T1021.004
    actor: attacker
    targets: ["#{brute.compromised}"]
    params: {credentials: "#{brute.credentials}", user: "op-#{brute.compromised}"}
    when: {fact: "#{brute.credentials}", not_empty: true}
  - id: inside
    technique: T1018
    actor: "#{brute.compromised}"
    targets: [t3]
  - id: nothing
    technique: T1110.001
    actor: attacker
    targets: ["#{sweep.hosts}"]
    requires: ["#{scan.hosts}"]
  - id: after
    technique: T1018
    actor: attacker
    targets: ["#{nothing.compromised}"]
"""

CAMPAIGN_FACTS = {
    "sweep": {"facts": {"hosts": [T1, T2]}},
    "scan": {"facts": {"open": [f"{T1}:22"], "hosts": []}},
    "brute": {"facts": {"credentials": [{"target": f"{T1}:22", "user": "admin",
                                         "password": "pw"}], "compromised": [T1, T2]}},
    "pivot": {"outcome": "blocked"},
}


def test_runner_campaign_with_stub_agent(tmp_path):
    pb = load_playbook(write(tmp_path, CAMPAIGN))
    stub = StubRunner(tmp_path, CAMPAIGN_FACTS)
    events = []
    ledger = tmp_path / "ledger.jsonl"
    records = run_playbook(pb, lab_topology(), stub, ledger, "run1",
                           on_event=lambda k, p: events.append((k, p)))
    assert read_ledger(ledger) == records
    got = [(r["step_id"], r["repeat"], r["actor"], r["outcome"]) for r in records]
    assert got[:6] == [("sweep", 0, "attacker", "succeeded"), ("sweep", 1, "attacker", "succeeded"),
                       ("sweep", 2, "attacker", "succeeded"), ("scan", 0, "attacker", "succeeded"),
                       ("brute", 0, "attacker", "succeeded"), ("pivot", 0, "attacker", "blocked")]
    # the pivot from both compromised hosts (in parallel: any order)
    assert sorted(got[6:8]) == [("inside", 0, "t1", "succeeded"), ("inside", 0, "t2", "succeeded")]
    assert got[8:] == [("nothing", 0, "attacker", "skipped"), ("after", 0, "attacker", "skipped")]
    nothing, after = records[8:]
    assert nothing["skipped_reason"] == "requires #{scan.hosts}: it is empty"
    assert "step 'nothing' was skipped" in after["skipped_reason"]
    assert nothing["packets_sent"] == 0 and nothing["flows"] == [] and nothing["targets"] == []
    assert all(r["skipped_reason"] is None for r in records[:8])
    assert [k for k, _ in events].count("step_end") == len(records) == 10
    assert [k for k, _ in events].count("step_start") == 8           # skipped: no agent

    calls = {(c["req"]["step"], c["node"]): c for c in stub.calls()}
    assert len(stub.calls()) == 8
    assert calls[("scan", "attacker")]["req"]["params"]["rate"] == 800
    assert calls[("scan", "attacker")]["req"]["max_rate"] == 100000
    assert calls[("scan", "attacker")]["req"]["targets"] == [T1, T2]
    pivot = calls[("pivot", "attacker")]["req"]
    assert pivot["params"]["credentials"] == CAMPAIGN_FACTS["brute"]["facts"]["credentials"]
    assert pivot["params"]["user"] == f"op-{T1},{T2}" and pivot["targets"] == [T1, T2]
    assert calls[("inside", "t1")]["req"]["targets"] == [T3]
    assert records[6]["actor_ip"] in (T1, T2)
    # ledger accounting from the agent, per record
    assert records[0]["flows"][0]["src"] == ATTACKER and records[0]["packets_sent"] == 2
    # repeats: every 0.4 s +-20 %, on an absolute schedule
    starts = sorted(c["t"] for c in stub.calls() if c["req"]["step"] == "sweep")
    _first, offsets = schedule(pb.steps[0], 7)
    for k in (1, 2):
        assert abs((starts[k] - starts[0]) - offsets[k]) < 0.15, (starts, offsets)
    assert 0.32 <= offsets[1] <= 0.48


def test_from_first_and_sequential_order(tmp_path):
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: first
        steps:
          - {id: brute, technique: T1110.001, actor: attacker, targets: [t1]}
          - {id: inside, technique: T1018, actor: "#{brute.compromised}", from: first,
             targets: [t3]}
          - {id: again, technique: T1018, actor: "#{brute.compromised}", targets: [t3],
             params: {from: first}}
        """))
    stub = StubRunner(tmp_path, {"brute": {"facts": {"compromised": [T2, T1],
                                                     "credentials": []}}})
    records = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert [(r["step_id"], r["actor"]) for r in records] == [
        ("brute", "attacker"), ("inside", "t2"), ("again", "t2")]
    assert "from" not in stub.calls()[-1]["req"]["params"]


def test_parallel_and_at(tmp_path):
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: par
        steps:
          - {id: a, technique: T1018, actor: attacker, targets: [t1]}
          - {id: b, technique: T1018, actor: t2, targets: [t1], parallel: true}
          - {id: c, technique: T1018, actor: attacker, targets: [t2], timing: {at: 0.3}}
          - {id: d, technique: T1018, actor: t1, targets: [t2], parallel: true,
             timing: {at: 1.6}}
        """))
    stub = StubRunner(tmp_path, {"a": {"sleep": 0.8}, "b": {"sleep": 0.8}})
    t0 = time.time()
    records = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    took = time.time() - t0
    start = {c["req"]["step"]: c["t"] - t0 for c in stub.calls()}
    assert abs(start["a"] - start["b"]) < 0.3              # b did not wait for a
    assert start["c"] >= start["a"] + 0.8                   # c waited for a and b (at 0.3 passed)
    assert start["d"] >= 1.6 - 0.05                         # at: from the playbook start
    assert took < 3.0 and len(records) == 4


def test_fact_target_outside_the_twin_stops_the_run(tmp_path):
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: leak
        steps:
          - {id: sweep, technique: T1018, actor: attacker, targets: [t1]}
          - {id: scan, technique: T1046, actor: attacker, targets: ["#{sweep.hosts}"]}
          - {id: never, technique: T1018, actor: attacker, targets: [t2]}
        """))
    stub = StubRunner(tmp_path, {"sweep": {"facts": {"hosts": [T1, "8.8.8.8"]}}})
    with pytest.raises(ContainmentError, match="step 'scan': target 8.8.8.8 is outside the twin"):
        run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert [c["req"]["step"] for c in stub.calls()] == ["sweep"]      # scan's agent never ran
    assert [r["step_id"] for r in read_ledger(tmp_path / "l.jsonl")] == ["sweep"]


def test_fact_actor_outside_the_twin_stops_the_run(tmp_path):
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: leak
        steps:
          - {id: brute, technique: T1110.001, actor: attacker, targets: [t1]}
          - {id: inside, technique: T1018, actor: "#{brute.compromised}", targets: [t2]}
        """))
    stub = StubRunner(tmp_path, {"brute": {"facts": {"compromised": ["192.0.2.7"]}}})
    with pytest.raises(ContainmentError, match="192.0.2.7 is outside the twin"):
        run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert len(stub.calls()) == 1


def test_static_target_outside_is_refused_before_any_step(tmp_path):
    from lab_netns import Playbook as PlainPlaybook
    from lab_netns import Step as PlainStep
    pb = PlainPlaybook("p", [PlainStep("a", "a", "T1018", "attacker", ["t1"]),
                             PlainStep("b", "b", "T1018", "attacker", ["8.8.8.8"])])
    stub = StubRunner(tmp_path, {})
    with pytest.raises(ContainmentError, match="nothing was sent"):
        run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert stub.calls() == [] and not (tmp_path / "l.jsonl").exists()


def test_wrong_param_type_after_substitution_is_an_error_outcome(tmp_path):
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: types
        steps:
          - {id: sweep, technique: T1018, actor: attacker, targets: [t1]}
          - id: pivot
            technique: T1021.004
            actor: attacker
            targets: ["#{sweep.hosts}"]
            params: {user: "#{sweep.hosts}", credentials: "#{sweep.hosts}"}
          - {id: next, technique: T1018, actor: attacker, targets: [t2]}
        """))
    stub = StubRunner(tmp_path, {"sweep": {"facts": {"hosts": [T1]}}})
    records = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert [r["outcome"] for r in records] == ["succeeded", "error", "succeeded"]
    assert records[1]["error"] == ("params.user: expected a string after fact substitution, "
                                   "got list '10.99.0.21'")
    assert [c["req"]["step"] for c in stub.calls()] == ["sweep", "next"]


def test_beacon_without_a_seed_runs(tmp_path):
    """T1071.001/.004 leave ``seed`` unset by default (None: a fresh jitter draw); the type check
    after fact substitution took that default for a wrong value and ended every beacon step
    written without ``params.seed`` in ``error`` (a drill on an unseen playbook found it), while
    ``playbook check`` accepted the file. Found only when no shipped playbook omitted it."""
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: beacons
        steps:
          - {id: poll, technique: T1071.004, actor: attacker, targets: [t1],
             params: {interval: 1, count: 2}}
          - {id: web, technique: T1071.001, actor: attacker, targets: [t2]}
        """))
    stub = StubRunner(tmp_path, {})
    records = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert [r["outcome"] for r in records] == ["succeeded", "succeeded"], records
    assert [c["req"]["params"]["seed"] for c in stub.calls()] == [None, None]


def test_a_failed_steps_reason_reaches_the_ledger_and_the_scorecard(tmp_path):
    """A technique that fails says why in ``error`` (ARP poisoning: nothing intercepted; Modbus:
    the PLC's exception); the runner kept ``error`` only for outcome ``error``, so the
    documented reason of a failed step was dropped before the ledger."""
    from cyberrange.score.score import step_reason
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: fails
        steps:
          - {id: write, technique: T0855, actor: attacker, targets: [t1]}
          - {id: sweep, technique: T1018, actor: attacker, targets: [t2]}
        """))
    why = "10.99.0.21:502: exception 1 (illegal function) for function 6"
    stub = StubRunner(tmp_path, {"write": {"outcome": "failed", "error": why},
                                 "sweep": {"outcome": "failed"}})
    records = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert [(r["outcome"], r["error"]) for r in records] == [("failed", why), ("failed", None)]
    (stored, plain) = read_ledger(tmp_path / "l.jsonl")
    assert step_reason(stored) == why and step_reason(plain) is None
    assert step_reason({"outcome": "succeeded", "error": "x"}) is None


def test_unknown_outcome_from_a_technique_is_an_error(tmp_path):
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: odd
        steps:
          - {id: a, technique: T1018, actor: attacker, targets: [t1]}
        """))
    stub = StubRunner(tmp_path, {"a": {"outcome": "maybe"}})
    (rec,) = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r")
    assert rec["outcome"] == "error" and "'maybe'" in rec["error"]


def test_stop_event_ends_waits(tmp_path):
    import threading
    pb = load_playbook(write(tmp_path, """
        version: 2
        name: stop
        steps:
          - {id: a, technique: T1018, actor: attacker, targets: [t1],
             timing: {repeat: 5, every: 10}}
        """))
    stub = StubRunner(tmp_path, {})
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.time()
    records = run_playbook(pb, lab_topology(), stub, tmp_path / "l.jsonl", "r", stop_event=stop)
    assert time.time() - t0 < 2 and len(records) == 1


def test_agent_refuses_rate_over_the_cap():
    from cyberrange.attack.agent import handle
    res = handle({"technique": "T1018", "targets": ["10.99.0.21"], "params": {"rate": 10},
                  "allowed": ["10.99.0.0/24"], "max_rate": 5})
    assert res["outcome"] == "error" and "above the step's cap" in res["error"]


def test_attack_run_command_with_a_stand_in_twin(tmp_path, monkeypatch):
    """``cyberrange attack run`` end to end with the twin replaced by the stub agent (no
    namespaces): run folder, ledger, manifest, outcome table."""
    from click.testing import CliRunner

    from cyberrange.cli.attack import attack
    from cyberrange.model.loader import load_topology
    from cyberrange.run import Run
    from cyberrange.twin import build
    root = ROOT
    fob = load_topology(root / "topologies" / "fob.yaml")
    stub = StubRunner(tmp_path, {"scan": {"facts": {"open": [], "hosts": []},
                                          "outcome": "blocked"}}, topo=fob)

    class FakeTwin:
        def __init__(self, topo, run_dir, run_id, log=None):
            self.topo, self.run_dir = topo, run_dir
            self.state = type("S", (), {"prefix": "crtx"})()
            self.timings, self.netem, self.warnings = {}, True, []

        def start(self, stage_cb=None):
            return self

        def popen(self, node, argv, **kw):
            return stub.popen(node, argv, **kw)

        def stop_sensors(self):
            return {}

        def stop(self):
            return {"namespaces": 0}

    monkeypatch.setattr(build, "Twin", FakeTwin)
    monkeypatch.setattr(build, "preflight", lambda *a, **k: None)
    pb = write(tmp_path, """
        version: 2
        name: run-cmd
        topology: fob
        steps:
          - {id: sweep, technique: T1018, actor: ops-maint, targets: [ops-lan],
             timing: {repeat: 2}}
          - {id: scan, technique: T1046, actor: ops-maint, targets: [ops-lan]}
          - {id: brute, technique: T1110.001, actor: ops-maint, targets: ["#{scan.open}"],
             requires: ["#{scan.open}"]}
        """)
    runs = tmp_path / "runs"
    res = CliRunner().invoke(attack, ["run", str(pb), "--topology",
                                      str(root / "topologies" / "fob.yaml"),
                                      "--runs-dir", str(runs)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    run = Run.open("latest", runs)
    recs = read_ledger(run.ledger_path)
    assert [(r["step_id"], r["repeat"], r["outcome"]) for r in recs] == [
        ("sweep", 0, "succeeded"), ("sweep", 1, "succeeded"), ("scan", 0, "blocked"),
        ("brute", 0, "skipped")]
    m = run.manifest
    assert m["kind"] == "attack" and m["status"] == "done" and m["playbook"] == "run-cmd"
    assert m["outcomes"] == {"succeeded": 2, "blocked": 1, "skipped": 1}
    assert "blocked" in res.output and "skipped" in res.output and "ledger:" in res.output


# ----------------------------------------------------------------------------- root: real agent
LAB_CAMPAIGN = """
version: 2
name: lab-campaign
seed: 3
steps:
  - id: sweep
    technique: T1018
    actor: attacker
    targets: [t1, t2]
    params: {timeout: 0.5}
    timing: {repeat: 3, every: 0.5, jitter: 0.2, rate: 200}
  - id: scan
    technique: T1046
    actor: attacker
    targets: ["#{sweep.hosts}"]
    params: {ports: [22, 80, 443], timeout: 0.5}
  - id: scan-far
    technique: T1046
    actor: attacker
    targets: [t3]
    params: {ports: [22, 80], timeout: 0.5}
    timing: {rate: 100}
  - id: brute
    technique: T1110.001
    actor: attacker
    targets: ["#{scan.open}"]
    requires: ["#{scan.open}"]
    params: {ports: [22], usernames: [admin], passwords: [x, admin123], pause: 0.01}
  - id: brute-far
    technique: T1110.001
    actor: attacker
    targets: ["#{scan-far.open}"]
    requires: ["#{scan-far.open}"]
  - id: inside
    technique: T1018
    actor: "#{brute.compromised}"
    targets: [t2]
    params: {timeout: 0.5}
    timing: {repeat: 2, every: 0.3}
"""


@needs_netns
def test_lab_campaign_ledger_equals_capture(lab, tmp_path):
    if not lab.firewall:
        pytest.skip("needs nft for the router's drop rule")
    lab.flush_neigh()
    pb = load_playbook(write(tmp_path, LAB_CAMPAIGN))
    ledger = tmp_path / "run" / "ledger.jsonl"
    cap_a = lab.capture("campaign-a", "pa")
    cap_t1 = lab.capture("campaign-t1", "p1")
    records = run_playbook(pb, lab_topology(), lab.runner(), ledger, "lab1")
    time.sleep(0.3)
    pkts_a, pkts_t1 = cap_a.stop_packets(settle=0), cap_t1.stop_packets(settle=0)
    assert read_ledger(ledger) == records
    got = [(r["step_id"], r["repeat"], r["actor"], r["outcome"]) for r in records]
    assert got == [("sweep", 0, "attacker", "succeeded"), ("sweep", 1, "attacker", "succeeded"),
                   ("sweep", 2, "attacker", "succeeded"), ("scan", 0, "attacker", "succeeded"),
                   ("scan-far", 0, "attacker", "blocked"), ("brute", 0, "attacker", "succeeded"),
                   ("brute-far", 0, "attacker", "skipped"), ("inside", 0, "t1", "succeeded"),
                   ("inside", 1, "t1", "succeeded")], got
    assert records[6]["skipped_reason"] == "requires #{scan-far.open}: it is empty"
    assert records[6]["packets_sent"] == 0
    assert sorted(records[3]["facts"]["open"]) == sorted([f"{T1}:22", f"{T2}:80"])
    assert records[5]["facts"]["compromised"] == [T1]
    # exact packet accounting per 5-tuple, for each actor on its own switch port
    from_attacker = [f for r in records if r["actor"] == "attacker" for f in r["flows"]]
    from_t1 = [f for r in records if r["actor"] == "t1" for f in r["flows"]]
    assert packets_only(actor_flows(pkts_a, ATTACKER)) == packets_only(ledger_flows(from_attacker))
    # t1's port also carries t1's answers to the attacker: keep what it sent to t2, the pivot
    t1_to_t2 = {k: v for k, v in actor_flows(pkts_t1, T1).items() if k[1] == T2}
    assert packets_only(t1_to_t2) == packets_only(ledger_flows(from_t1))
    assert sum(r["packets_sent"] for r in records[:3]) == 6       # 3 sweeps x 2 hosts
    assert all(f["src"] == T1 for f in from_t1) and len(from_t1) == 2     # one per repeat
