"""The playbook engine's pure parts (format version 2), no root and no twin: fact
substitution, preconditions, schedule math, loading and the loader's errors. The runner (stub
agent, then the real agent in a namespace lab) is in test_playbook_engine.py.
"""
from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from cyberrange.attack.facts import (
    FactUnavailable,
    expand_target,
    fact_text,
    precondition_failure,
    substitute,
)
from cyberrange.attack.playbook import Condition, Step, Timing, load_playbook
from cyberrange.attack.runner import merge_facts
from cyberrange.attack.schedule import repeat_offsets, schedule, step_rng
from cyberrange.errors import UserError

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
