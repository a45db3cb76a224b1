"""The playbook engine (format version 2): facts, preconditions, scheduling, rate cap, outcomes.

Three layers:
- pure functions, no root (substitution, preconditions, schedule math, loader errors);
- the real runner against a stub agent (no root): every step "runs" a tiny Python script that
  logs the request it got and returns canned facts, so ordering, repeats, skips, actors from
  facts and containment are checked exactly;
- root: the real runner and agent in the namespace lab of tests/attack/test_attack_netns.py, ledger
  packet counts against tcpdump per 5-tuple.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT

from cyberrange.attack.ledger import read_ledger
from cyberrange.attack.facts import (
    FactUnavailable,
    expand_target,
    fact_text,
    precondition_failure,
    substitute,
)
from cyberrange.attack.playbook import Condition, Step, Timing, load_playbook
from cyberrange.attack.schedule import repeat_offsets, schedule, step_rng
from cyberrange.attack.runner import merge_facts, run_playbook
from cyberrange.errors import ContainmentError, UserError

from lab_netns import ATTACKER, LAB, T1, T2, T3, lab_topology
from nslab import actor_flows, lab_fixture, ledger_flows, needs_netns, packets_only

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


# ----------------------------------------------------------------------------- substitution
def test_whole_value_substitution_keeps_the_type():
    creds = substitute("#{brute.credentials}", FACTS)
    assert creds == FACTS["brute"]["credentials"] and isinstance(creds, list)
    creds[0]["user"] = "changed"                      # a copy: the facts stay as they were
    assert FACTS["brute"]["credentials"][0]["user"] == "admin"
    params = {"credentials": "#{brute.credentials}", "ports": [22, "#{sweep.hosts}"],
              "nested": {"who": "#{brute.compromised}"}, "n": 3}
    out = substitute(params, FACTS)
    assert out["credentials"] == FACTS["brute"]["credentials"]
    assert out["ports"] == [22, ["10.99.0.21", "10.99.0.22"]]       # no splicing
    assert out["nested"] == {"who": ["10.99.0.21"]} and out["n"] == 3


def test_substitution_inside_a_string_inserts_the_string_form():
    assert substitute("hosts: #{sweep.hosts}!", FACTS) == "hosts: 10.99.0.21,10.99.0.22!"
    assert substitute("#{ brute.compromised }", FACTS) == ["10.99.0.21"]   # spaces allowed
    assert fact_text({"b": 1, "a": 2}) == '{"a": 2, "b": 1}' and fact_text(3) == "3"
    assert fact_text(True) == "true"


def test_unavailable_facts_say_why():
    with pytest.raises(FactUnavailable, match=r"#\{gone.hosts\} is not available \(step 'gone' "
                                              r"was skipped\)"):
        substitute("#{gone.hosts}", FACTS, {"gone": "skipped"})
    with pytest.raises(FactUnavailable, match="step 'scan' produced hosts, open"):
        substitute("x #{scan.other}", FACTS)


def test_target_expansion():
    assert expand_target("#{sweep.hosts}", FACTS) == ["10.99.0.21", "10.99.0.22"]
    assert expand_target("#{sweep.hosts}:22", FACTS) == ["10.99.0.21:22", "10.99.0.22:22"]
    assert expand_target("#{brute.credentials}", FACTS) == ["10.99.0.21:22"]
    assert expand_target("#{scan.open}", FACTS) == []
    assert expand_target("lab", FACTS) == ["lab"]


def test_merge_facts_unites_lists():
    merged = merge_facts([{"hosts": ["a", "b"], "n": 1}, {"hosts": ["b", "c"], "n": 2},
                          {"creds": [{"u": 1}]}, {"creds": [{"u": 1}, {"u": 2}]}])
    assert merged == {"hosts": ["a", "b", "c"], "n": 2, "creds": [{"u": 1}, {"u": 2}]}


# ----------------------------------------------------------------------------- preconditions
def _step(**kw):
    return Step(id="s", name="s", technique="T1018", actor="a", targets=["x"], **kw)


def test_preconditions():
    assert precondition_failure(_step(requires=["#{sweep.hosts}"]), FACTS) is None
    assert precondition_failure(_step(requires=["#{scan.open}"]), FACTS) == \
        "requires #{scan.open}: it is empty"
    why = precondition_failure(_step(requires=["#{gone.x}"]), FACTS, {"gone": "skipped"})
    assert "step 'gone' was skipped" in why
    ok = Condition(fact="#{brute.credentials}", not_empty=True)
    assert precondition_failure(_step(when=[ok]), FACTS) is None
    empty = Condition(fact="#{scan.hosts}", not_empty=True)
    assert "it is empty" in precondition_failure(_step(when=[empty]), FACTS)
    must_be_empty = Condition(fact="#{sweep.hosts}", not_empty=False)
    assert "holds 10.99.0.21" in precondition_failure(_step(when=[must_be_empty]), FACTS)
    assert precondition_failure(_step(when=[Condition(fact="#{scan.open}", not_empty=False)]),
                                FACTS) is None
    three = Condition(fact="#{sweep.hosts}", min_count=3)
    assert "min_count 3: it has 2" in precondition_failure(_step(when=[three]), FACTS)
    has = Condition(fact="#{sweep.hosts}", contains="10.99.0.22", has_contains=True)
    assert precondition_failure(_step(when=[has]), FACTS) is None
    hasnt = Condition(fact="#{sweep.hosts}", contains="10.99.0.99", has_contains=True)
    assert "does not" in precondition_failure(_step(when=[hasnt]), FACTS)
    bare = Condition(fact="#{scan.open}")
    assert "it is empty" in precondition_failure(_step(when=[bare]), FACTS)


# ----------------------------------------------------------------------------- scheduling
def test_repeat_offsets_without_jitter():
    t = Timing(repeat=4, every=2.5)
    assert repeat_offsets(t, step_rng(0, "s")) == [0.0, 2.5, 5.0, 7.5]
    assert repeat_offsets(Timing(repeat=3), step_rng(0, "s")) == [0.0, 0.0, 0.0]
    assert repeat_offsets(Timing(), step_rng(0, "s")) == [0.0]


def test_jitter_is_deterministic_and_bounded():
    t = Timing(delay=10, repeat=50, every=4, jitter=0.25)
    s = _step(timing=t)
    a, b = schedule(s, seed=42), schedule(s, seed=42)
    assert a == b                                        # same seed, same plan
    assert schedule(s, seed=43) != a                     # another seed, another plan
    first, offsets = a
    assert 7.5 <= first <= 12.5 and first != 10
    gaps = [y - x for x, y in itertools.pairwise(offsets)]
    assert len(gaps) == 49 and all(3.0 <= g <= 5.0 for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 40         # really drawn
    # a step's plan does not depend on other steps (parallel steps stay deterministic)
    other = Step(id="other", name="o", technique="T1018", actor="a", targets=["x"], timing=t)
    assert schedule(other, 42) != a and schedule(s, 42) == a


def test_at_versus_delay():
    assert schedule(_step(timing=Timing(delay=3)), 0) == (3.0, [0.0])
    assert schedule(_step(timing=Timing(at=30, jitter=0.5)), 0)[0] == 30.0   # at: not jittered
    # v1-style step objects without timing: delay_s
    from lab_netns import Step as PlainStep
    assert schedule(PlainStep("p", "p", "T1018", "a", ["x"], delay_s=1.5), 0) == (1.5, [0.0])


# ----------------------------------------------------------------------------- loading v2
V2 = """
version: 2
name: v2
seed: 5
defaults: {max_rate: 2000}
steps:
  - id: sweep
    technique: T1018
    actor: attacker
    targets: [lab]
    timing: {delay: 1, repeat: 3, every: 2, jitter: 0.1, rate: 1500}
  - id: scan
    technique: T1046
    actor: attacker
    targets: ["#{sweep.hosts}:22", t3]
    parallel: true
    timing: {at: 4}
  - id: brute
    technique: T1110.001
    actor: attacker
    targets: ["#{scan.open}"]
    requires: ["#{scan.open}"]
    when: {fact: "#{scan.hosts}", min_count: 1}
  - id: pivot
    technique: T1021.004
    actor: "#{brute.compromised}"
    from: first
    targets: ["#{brute.compromised}"]
    params: {credentials: "#{brute.credentials}", user: "u-#{brute.compromised}"}
"""


def test_load_v2(tmp_path):
    pb = load_playbook(write(tmp_path, V2))
    assert (pb.version, pb.seed, pb.max_rate) == (2, 5, 2000)
    sweep, scan, brute, pivot = pb.steps
    assert sweep.timing == Timing(delay=1, repeat=3, every=2, jitter=0.1, rate=1500)
    assert sweep.params["rate"] == 1500 and sweep.delay_s == 1
    assert scan.parallel and scan.timing.at == 4 and scan.depends_on == ["sweep"]
    assert scan.params["rate"] == 500                        # catalog default, under the cap
    assert brute.requires == ["#{scan.open}"] and brute.when[0].min_count == 1
    assert pivot.actor_ref == ("brute", "compromised") and pivot.actor_from == "first"
    assert pivot.params["credentials"] == "#{brute.credentials}"
    assert pivot.depends_on == ["brute"]


def _load_error(tmp_path, text) -> str:
    with pytest.raises(UserError) as info:
        load_playbook(write(tmp_path, text))
    return str(info.value)


def test_rate_cap(tmp_path):
    base = ("version: 2\nname: r\n{defaults}steps:\n  - id: f\n    technique: T1498\n"
            "    actor: a\n    targets: [10.0.0.1]\n{extra}")
    msg = _load_error(tmp_path, base.format(defaults="", extra="    timing: {rate: 100001}\n"))
    assert ":8:" in msg and "100001 packets/s is above the per-step cap of 100000" in msg
    msg = _load_error(tmp_path, base.format(defaults="defaults: {max_rate: 50}\n",
                                            extra="    params: {rate: 51}\n"))
    assert ":9:" in msg and "params.rate: 51 packets/s is above the per-step cap of 50" in msg
    pb = load_playbook(write(tmp_path, base.format(defaults="defaults: {max_rate: 500000}\n",
                                                   extra="    timing: {rate: 400000}\n")))
    assert pb.steps[0].params["rate"] == 400000
    # rate 0 ("as fast as possible") becomes the cap; a default above the cap is capped
    pb = load_playbook(write(tmp_path, base.format(defaults="", extra="    params: {rate: 0}\n")))
    assert pb.steps[0].params["rate"] == 100000
    pb = load_playbook(write(tmp_path, base.format(defaults="defaults: {max_rate: 100}\n",
                                                   extra="")))
    assert pb.steps[0].params["rate"] == 100
    msg = _load_error(tmp_path, base.format(defaults="", extra="    timing: {rate: 5}\n"
                                            "    params: {rate: 6}\n"))
    assert "the rate is given twice" in msg


def test_loader_errors(tmp_path):
    head = "version: 2\nname: e\nsteps:\n  - {id: a, technique: T1110.001, actor: x, targets: [y]}\n"
    cases = [
        ("  - {id: b, technique: T1018, actor: x, targets: [y], requires: ['#{a.hostz}']}\n",
         ":5:", "step 'a' (T1110.001) produces no fact 'hostz'"),
        ("  - {id: b, technique: T1018, actor: '#{c.compromised}', targets: [y]}\n",
         ":5:", "no earlier step 'c'"),
        ("  - {id: b, technique: T1018, actor: 'x#{a.compromised}', targets: [y]}\n",
         ":5:", "bad actor"),
        ("  - {id: b, technique: T1018, actor: x, targets: [y], params: {timeout: '#{a.x}'}}\n",
         ":5:", "produces no fact 'x'"),
        ("  - {id: b, technique: T1018, actor: x, targets: [y], timing: {duration: 5}}\n",
         ":5:", "timing.duration: T1018 takes no duration"),
        ("  - {id: b, technique: T1018, actor: x, targets: ['#{a}']}\n",
         ":5:", "bad fact reference '#{a}'"),
        ("  - {id: b, technique: T1018, actor: x, targets: [y], when: {fact: '#{a.zz}'}}\n",
         ":5:", "produces no fact 'zz'"),
        ("  - {id: b, technique: T1018, actor: x, targets: [y], from: all}\n",
         ":5:", "step b: from: unknown from 'all' (expected one of: each, first)"),
    ]
    for extra, where, text in cases:
        msg = _load_error(tmp_path, head + extra)
        assert where in msg and text in msg, (extra, msg)


def test_v1_may_not_use_v2(tmp_path):
    msg = _load_error(tmp_path, "version: 1\nname: e\nsteps:\n"
                      "  - {id: a, technique: T1110.001, actor: x, targets: [y]}\n"
                      "  - {id: b, technique: T1021.004, actor: x, targets: [y],"
                      " params: {credentials: '#{a.credentials}'}}\n")
    assert ":5:" in msg and "facts in params need 'version: 2'" in msg


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
                  "error": None, "log": []}))
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
            self.topo = topo
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
