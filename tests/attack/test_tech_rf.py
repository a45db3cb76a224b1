"""RF jamming as a playbook step (CR-J0001, issue 19 item 2), without a twin: the catalogue
entry, the checks a playbook gets at load time (FILE:LINE:COL, did-you-mean), the scorer
leaving the step out of detection, and the Navigator / STIX handling of a custom id. The live
half (the link really jammed, the step succeeded) is in tests/drill/test_link_events.py."""
from __future__ import annotations

import textwrap

import pytest
from helpers import ROOT

from cyberrange.attack.agent import handle
from cyberrange.attack.catalog import TECHNIQUES
from cyberrange.attack.playbook import load_playbook
from cyberrange.attack.techniques import rf
from cyberrange.errors import UserError
from cyberrange.model.loader import load_topology

LINKS = ROOT / "tests" / "data" / "good" / "links.yaml"


@pytest.fixture(scope="module")
def topo():
    return load_topology(LINKS)


def _load(tmp_path, topo, step: str):
    path = tmp_path / "pb.yaml"
    path.write_text("version: 2\nname: jam\ntopology: links-test\nsteps:\n"
                    + textwrap.indent(textwrap.dedent(step).strip() + "\n", "  "))
    return load_playbook(path, topo), path


def _error(tmp_path, topo, step: str) -> str:
    with pytest.raises(UserError) as e:
        _load(tmp_path, topo, step)
    return str(e.value)


def test_the_catalogue_entry_is_a_documented_custom_id():
    t = TECHNIQUES["CR-J0001"]
    assert t.custom and t.runs_on == "twin" and t.family == "rf"
    assert "not observable by packet sensors" in t.unobservable
    assert set(t.related) == {"T1464", "T0814", "T0815"}
    assert not any(x.custom for x in TECHNIQUES.values() if x.id != "CR-J0001")
    assert all(x.runs_on == "agent" and x.unobservable is None
               for x in TECHNIQUES.values() if x.id != "CR-J0001")


def test_a_jam_step_loads_with_its_link_from_the_target_or_the_param(tmp_path, topo):
    pb, _ = _load(tmp_path, topo, """
        - {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {duration: 5}}""")
    assert pb.steps[0].params == {"link": "", "duration": 5, "mode": "jammed", "loss": 0,
                                  "delay": 0}
    assert rf.jam_link(pb.steps[0].params, pb.steps[0].targets, topo.zones) == "sat"
    pb, _ = _load(tmp_path, topo, """
        - id: jam
          technique: CR-J0001
          actor: lan1
          targets: [sat1, 10.60.2.0/24]
          timing: {duration: 2.5}
          params: {link: sat, mode: degraded, loss: 20, delay: 300}""")
    step = pb.steps[0]
    assert step.params["duration"] == 2.5
    assert rf.jam_link(step.params, step.targets, topo.zones) == "sat"
    assert rf.jam_values(step.params) == {"loss": 20.0, "delay": 300.0}


@pytest.mark.parametrize("step,line,col,words", [
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {link: sta}}",
     5, 80, "link 'sta' is not a zone or link of topology links-test (did you mean 'sat'?)"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat1]}",
     5, 58, "say which link to jam"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [lan1], params: {link: sat}}",
     5, 59, "target lan1 is not on link sat"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {duration: 601}}",
     5, 84, "at most 600 s"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {duration: 0}}",
     5, 84, "more than 0"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {mode: jamed}}",
     5, 80, "mode 'jamed' is not one of jammed, degraded"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {loss: 5}}",
     5, 80, "loss applies to mode degraded"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {mode: degraded}}",
     5, 80, "mode degraded needs loss (%) or delay (ms)"),
    (("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {mode: degraded, "
      "loss: 150}}"), 5, 96, "loss 150 %: at most 100"),
    ("- {id: jam, technique: CR-J0001, actor: sat1, targets: [sat], params: {lnk: sat}}",
     5, 74, "has no parameter 'lnk' (did you mean 'link'?)"),
])
def test_bad_jam_steps_are_one_line_at_the_key(tmp_path, topo, step, line, col, words):
    msg = _error(tmp_path, topo, step)
    assert words in msg, msg
    assert f"pb.yaml:{line}:{col}:" in msg and "\n" not in msg, msg


def test_the_agent_refuses_a_twin_side_technique():
    r = handle({"technique": "CR-J0001", "targets": ["10.60.2.1"], "params": {},
                "allowed": ["10.60.0.0/16"]})
    assert r["outcome"] == "error" and "runs against the twin itself" in r["error"]


class _Halt:
    def sleep_until(self, deadline):
        return True


class _Step:
    id, name, targets = "jam", "jam", ["nosuch"]


def test_a_link_outside_the_twin_is_refused_before_any_change(topo):
    """The containment guard: a link that is not the twin's ends the run, nothing changed."""
    from cyberrange.errors import ContainmentError

    class Control:
        def __getattr__(self, name):
            raise AssertionError(f"nothing may be changed ({name})")

    class Twin:
        def switch_run(self, *a, **k):
            raise AssertionError("nothing may be changed")
    twin = Twin()
    twin.topo, twin.link_control = topo, Control()
    spec = TECHNIQUES["CR-J0001"]
    with pytest.raises(ContainmentError, match="not a link of twin links-test"):
        rf.run_on_twin(spec, twin, {"targets": [], "params": {"link": "internet"},
                                    "allowed": ["10.60.0.0/16"]}, _Halt(), _Step())
    with pytest.raises(ContainmentError, match="outside the twin"):   # the twin's, not allowed
        rf.run_on_twin(spec, twin, {"targets": [], "params": {"link": "sat"},
                                    "allowed": ["10.60.1.0/24"]}, _Halt(), _Step())
    # an attached twin (attack run --twin) has no switch to change: error, not a crash
    r = rf.run_on_twin(spec, object(), {"params": {"link": "sat"}}, _Halt(), _Step())
    assert r["outcome"] == "error" and "--twin" in r["error"]


def test_the_observed_effect_rule():
    rec = {"notes": []}
    res = rf._outcome(rf.Result(start=0), "jammed", {}, 12, 12, rec, False)
    assert res.outcome == "succeeded"
    res = rf._outcome(rf.Result(start=0), "jammed", {}, 0, 0, rec, False)
    assert res.outcome == "failed" and "0 dropped" in res.facts["why"]
    res = rf._outcome(rf.Result(start=0), "degraded", {"delay": 300.0}, 0, 40,
                      {"notes": ["delay not emulated here"]}, False)
    assert res.outcome == "failed" and "not emulated" in res.facts["why"]
    res = rf._outcome(rf.Result(start=0), "degraded", {"delay": 300.0}, 0, 40, rec, False)
    assert res.outcome == "succeeded"
    assert rf._outcome(rf.Result(start=0), "jammed", {}, 9, 9, rec, True).outcome == "stopped"


def _ledger_jam(**kw) -> dict:
    from cyberrange.attack.ledger import make_record
    return make_record(**{"run_id": "r", "step_id": "jam", "name": "jam",
                          "technique": "CR-J0001", "actor": "sat1", "actor_ip": "10.60.2.1",
                          "targets": ["10.60.2.2"], "start": 100.0, "end": 103.0,
                          "outcome": "succeeded", "facts": {"link": "sat", "dropped": 7}, **kw})


def test_the_scorer_leaves_a_jam_out_of_detection_no_miss():
    from cyberrange.score.score import score_run
    from cyberrange.telemetry.schema import ALERT_SCHEMA, RECORD_SCHEMAS
    card = score_run([_ledger_jam()], RECORD_SCHEMAS["flows"].empty_table(),
                     ALERT_SCHEMA.empty_table(), run_id="r")
    row = card["steps"][0]
    assert row["observable"] is False and row["detected"] is False
    assert "not observable by packet sensors" in row["unobservable"]
    assert "CR-J0001" not in card["techniques"]


def test_navigator_leaves_a_custom_id_out_with_a_note_and_stix_keeps_it():
    from cyberrange.report import navigator, stix
    steps = [{"step_id": "jam", "technique": "CR-J0001", "attack_id": None, "observable": False,
              "detected": False, "outcome": "succeeded", "time_to_detect_s": None,
              "detected_by": [], "technique_name": "RF jamming of a tactical link"}]
    content = {"run": {"run_id": "r1", "topology": "links-test", "playbook": "jam",
                       "created": 1.7e9}, "steps": steps, "alerts": {"items": []}}
    layer = navigator.navigator(content)
    assert layer["techniques"] == []
    note = [m["value"] for m in layer["metadata"] if m["name"] == "left out"]
    assert note and "CR-J0001" in note[0] and "custom id" in note[0] and "T1464" in note[0]
    bundle, _notes = stix.build(content, [_ledger_jam()])
    pats = [o for o in bundle.objects if o.type == "attack-pattern"]
    assert len(pats) == 1 and pats[0].name == "RF jamming of a tactical link"
    refs = pats[0].external_references
    assert [(r.source_name, r.external_id) for r in refs] == [("cyberrange", "CR-J0001")]
    assert not any("mitre" in r.source_name or "url" in r for r in refs)
    rels = [o for o in bundle.objects if o.type == "relationship"]
    assert any(r.target_ref == pats[0].id for r in rels)      # the jammer's indicator -> it


def test_degraded_loss_on_a_relayed_link_counts_the_relays_drops(topo, tmp_path):
    """Without netem the link relay applies a degraded link's loss itself (no nftables drop):
    a drill on an unseen topology showed `degrade` succeeded with `dropped: 0`. The jam now
    reads the relay's own counter (its stats file) for the link's relayed ports."""
    import json
    import subprocess
    import time as _time

    stats = tmp_path / "linkemu.json"

    def write(lost, written):
        stats.write_text(json.dumps({"written": written, "directions": [
            {"link": "sat1/eth0", "way": "a>b", "lost": lost},
            {"link": "other/eth9", "way": "a>b", "lost": 1000}]}))

    class Twin:
        def switch_run(self, argv):
            return subprocess.CompletedProcess(argv, 1, "", "")

    class Control:
        table = "t"

        def __init__(self, twin):
            self.twin, self.changes = twin, []

        def ports(self, zone):
            itf = topo.nodes["sat1"].interfaces[0]
            return [("sat1", "k1", "p1", "eth0", itf), ("sat2", "k2", "p2", "eth0", itf)]

        def set(self, zone, state, values=None, reason=""):
            self.changes.append((state, values))
            return {"notes": []}

    class Halt:
        def sleep_until(self, deadline):
            write(12, _time.time() + 1)         # the relay dropped 7 during the jam
            return True

    twin = Twin()
    twin.topo, twin.relay_ports, twin.relay_stats = topo, {("sat1", "k1"): ("q1", "r1")}, stats
    twin.link_control = Control(twin)
    write(5, _time.time())
    side = rf.TwinSide(twin, "jam", "jam", Halt(), ["10.60.0.0/16"], ["sat"])
    res = rf.jam([], {"link": "sat", "duration": 1, "mode": "degraded", "loss": 40,
                      "delay": 0}, side)
    assert res.outcome == "succeeded" and res.facts["dropped"] == 7, res
    assert [c[0] for c in twin.link_control.changes] == ["degraded", "up"]
    assert rf.relay_lost(twin, ["sat1/eth0"]) == 12
    assert rf.relay_lost(object(), ["sat1/eth0"]) is None
