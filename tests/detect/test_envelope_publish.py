"""The published envelope as data, and corpus steps placed against it (pure: no twin).

envelope_publish: the envelope file written by ``bench/envelope.py eval``, read back (round
trip, bad files refused), compared with an earlier one, parsed from an earlier page's table.
corpus_envelope: a step's envelope parameters derived from the playbook it ran and its ledger,
and its place (inside / outside / no-envelope / unknown); the goal is never met without
evidence. envelope_goals: recall inside and "wider than before" on the envelope page.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from cyberrange.errors import UserError
from cyberrange.score import corpus_envelope as ce
from cyberrange.score import envelope_publish as ep
from cyberrange.score.envelope_goals import (
    recall_goal,
    recall_lines,
    wider_goal,
    wider_lines,
)

ROOT = Path(__file__).resolve().parents[2]


def _o(fam, detected, counted=True, **params):
    return {"family": fam, "technique": "T", "counted": counted, "detected": detected,
            "detected_rules": detected, "ttd": 1.0 if detected else None, "by": [],
            "params": params, "run_id": "r", "late": False}


def _outcomes():
    """guess: 2-5 guesses missed, 8+ caught (envelope guesses >= 8; pause, measured inside
    guesses >= 8: < 0.5 s, its one bin all caught -- over all steps it would mix both); valid-login: never caught (no envelope); sweep: >= 6 addresses at >=
    10/s; dns-beacon: every jitter measured caught (<= 0.75), interval < 8 s."""
    out = [_o("guess", False, guesses=g, pause=0.1) for g in (2, 3, 5)]
    out += [_o("guess", True, guesses=g, pause=0.1) for g in (8, 10, 12, 20, 30)]
    out += [_o("valid-login", False, commands=c) for c in (1, 2, 3)]
    out += [_o("sweep", True, addresses=a, rate=r) for a, r in ((6, 12), (14, 50), (30, 20),
                                                                 (62, 100))]
    out += [_o("dns-beacon", True, interval=3, jitter=j, count=5)
            for j in (0.1, 0.2, 0.4, 0.5, 0.7, 0.75)]
    return out


@pytest.fixture
def pub():
    return ep.published({"eval": {"outcomes": _outcomes(), "runs": [{}]}})


def test_published_envelopes_state_bound_direction_and_none(pub):
    g = pub["families"]["guess"]
    assert g["status"] == "envelope" and g["techniques"] == ["T1110.001"]
    ax = {a["param"]: a for a in g["axes"]}
    assert (ax["guesses"]["direction"], ax["guesses"]["bound"]) == (">=", 8)
    # the secondary axis is measured inside the main axis's envelope: the 2-5-guess misses
    # don't blur the pause bin (over all steps it would be 5/8 and have no envelope)
    assert (ax["pause"]["direction"], ax["pause"]["bound"]) == ("<", 0.5)
    # every bin of the jitter axis passed up to its hard (high) end: as far as measured
    d = {a["param"]: a for a in pub["families"]["dns-beacon"]["axes"]}
    assert (d["jitter"]["direction"], d["jitter"]["bound"]) == ("<=", 0.75)
    assert (d["interval"]["direction"], d["interval"]["bound"]) == ("<", 8)
    assert ce.classify(pub["families"]["dns-beacon"], {"interval": 3, "jitter": 0.8,
                                                       "count": 5})[1] == ["jitter 0.8 > 0.75 (fraction)"]
    v = pub["families"]["valid-login"]
    assert v["status"] == "none" and all(a["direction"] is None for a in v["axes"])
    assert pub["families"]["spray"]["status"] == "none"          # nothing drawn
    assert pub["families"]["spray"]["why"] == "no counted step in the evaluation split"


def test_published_file_round_trip_and_bad_files(pub, tmp_path):
    p = tmp_path / "data" / "envelopes.json"
    ep.write(p, pub)
    assert ep.load(p) == json.loads(json.dumps(pub))
    bad = json.loads(p.read_text())
    bad["families"]["guess"]["axes"][0]["direction"] = "~"
    p.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"families\.guess\.axes\[0\]\.direction"):
        ep.load(p)
    bad["families"]["guess"]["axes"][0].update(direction=">=", bound="eight")
    p.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"families\.guess\.axes\[0\]\.bound"):
        ep.load(p)
    p.write_text('{"version": 99}')
    with pytest.raises(UserError, match="version"):
        ep.load(p)


def test_known_corpus_steps_are_placed_against_the_envelope(pub):
    fams = pub["families"]
    # a single ICMP echo (the fob DoS playbook's recon step) is no sweep of >= 6 addresses
    echo = ce.derive("sweep", {"rate": 500.0, "timeout": 1.0}, [{"targets": ["10.20.0.10"]}],
                     ["10.20.0.10"])
    assert echo == {"addresses": 1, "rate": 500.0}
    assert ce.classify(fams["sweep"], echo) == ("outside", ["1 addresses < 6"], None)
    # three slow guesses at one account: outside guesses >= 8
    params = {"usernames": ["logistique"], "passwords": ["Winter2023!", "Spring2024!",
                                                         "Summer2024!"],
              "stop_on_success": True, "pause": 4.0, "ports": [22]}
    rec = {"targets": ["10.73.0.10"], "facts": {"credentials": [
        {"target": "10.73.0.10:22", "user": "logistique", "password": "Summer2024!"}]}}
    g = ce.derive("guess", params, [rec])
    assert g == {"guesses": 3, "pause": 4.0}
    status, misses, _ = ce.classify(fams["guess"], g)
    assert status == "outside" and misses == ["3 guesses < 8", "pause 4 >= 0.5 s between guesses"]
    # a lone valid login: its family has no envelope
    assert ce.classify(fams["valid-login"], {"commands": 3})[0] == "no-envelope"
    assert ce.classify(None, {})[0] == "no-envelope"
    # inside: 253 addresses at 200/s
    assert ce.classify(fams["sweep"], {"addresses": 253, "rate": 200.0})[0] == "inside"


def test_guesses_follow_the_technique_loop_and_cidrs_count_their_hosts():
    # 3 accounts x 4 passwords; 'clerk' found at the 3rd password with stop_on_success
    params = {"usernames": ["root", "admin", "clerk"], "stop_on_success": True,
              "passwords": ["password", "123456", "depot123", "Depot2024"], "pause": 0.05}
    rec = {"targets": ["10.80.4.20"], "facts": {"credentials": [
        {"target": "10.80.4.20:22", "user": "clerk", "password": "depot123"}]}}
    assert ce.derive("guess", params, [rec])["guesses"] == 4 + 4 + 3
    assert ce.derive("guess", {**params, "stop_on_success": False}, [rec])["guesses"] == 12
    # a /29 written in the playbook: 6 hosts as drawn, even with the actor's own address
    # missing from the ledger's expanded targets
    ips = [f"10.0.0.{i}" for i in range(1, 7) if i != 3]
    assert ce.derive("sweep", {"rate": 1.0}, [{"targets": ips}], ["10.0.0.0/29"]) == \
        {"addresses": 6, "rate": 1.0}
    with pytest.raises(ce.Unknown, match="params.usernames"):
        ce.derive("guess", {**params, "usernames": ["#{spray.users}"]}, [rec])
    with pytest.raises(ce.Unknown, match="no check-ins"):
        ce.derive("http-beacon", {"interval": 5, "jitter": 0.2, "count": 0}, [{"facts": {}}])


def _run(tmp_path, playbook: dict, records: list, sha=None) -> Path:
    run = tmp_path / "run1"
    run.mkdir()
    pb = tmp_path / "pb.yaml"
    pb.write_text(yaml.safe_dump(playbook, sort_keys=False))
    man = {"status": "done", "inputs": {"playbook": {
        "path": str(pb), "sha256": sha or hashlib.sha256(pb.read_bytes()).hexdigest()}}}
    (run / "manifest.json").write_text(json.dumps(man))
    base = {"run_id": "run1", "actor": "ws", "actor_ip": "10.73.0.66", "start": 1.0,
            "end": 2.0, "outcome": "succeeded", "flows": []}
    (run / "ledger.jsonl").write_text("".join(json.dumps({**base, **r}) + "\n" for r in records))
    return run


QUIET = {"version": 2, "name": "quiet", "steps": [
    {"id": "guess", "name": "g", "technique": "T1110.001", "actor": "ws", "targets": ["fra-log"],
     "params": {"protocol": "ssh", "ports": [22], "usernames": ["logistique"],
                "passwords": ["a", "b", "c"], "pause": 0.1}},
    {"id": "login", "name": "l", "technique": "T1021.004", "actor": "ws",
     "targets": ["fra-log"], "params": {"user": "u", "password": "p"}},
    {"id": "echo", "name": "e", "technique": "T1018", "actor": "ws", "targets": ["10.20.0.10"],
     "timing": {"rate": 50}}]}
QUIET_RECORDS = [
    {"step_id": "guess", "technique": "T1110.001", "targets": ["10.73.0.10"], "facts": {}},
    {"step_id": "login", "technique": "T1021.004", "targets": ["10.73.0.10"]},
    {"step_id": "echo", "technique": "T1018", "targets": ["10.20.0.10"]}]


def test_corpus_steps_from_a_run_folder_and_the_goal(pub, tmp_path):
    run = _run(tmp_path, QUIET, QUIET_RECORDS)
    ev = {"runs": [{"run_id": "run1", "dir": str(run)}], "totals": {"step_outcomes": [
        {"run_id": "run1", "step_id": s, "technique": t, "counted": True, "blocked": False,
         "detected": d, "late": False}
        for s, t, d in (("guess", "T1110.001", False), ("login", "T1021.004", False),
                        ("echo", "T1018", True))]}}
    rows = {r["step_id"]: r for r in ce.classify_corpus(ev, pub)}
    assert rows["guess"]["status"] == "outside" and rows["guess"]["params"]["guesses"] == 3
    assert rows["echo"]["params"] == {"addresses": 1, "rate": 50} \
        and rows["echo"]["misses"] == ["1 addresses < 6"]
    assert rows["login"]["status"] == "no-envelope"
    techs = ce.by_technique(list(rows.values()))
    assert techs["T1110.001"]["inside"] == 0 and techs["T1110.001"]["outside"] == 1
    _name, met, detail = ce.goal(techs)
    # nothing inside: not measured, never met
    assert met is None and detail.startswith("not measured")
    # a playbook edited since the run: unknown, and says why
    (tmp_path / "edited").mkdir()
    ev["runs"][0]["dir"] = str(_run(tmp_path / "edited", QUIET, QUIET_RECORDS, sha="0" * 64))
    assert {r["status"] for r in ce.classify_corpus(ev, pub)
            if r["step_id"] == "guess"} == {"unknown"}
    assert "SHA-256" in next(r["why"] for r in ce.classify_corpus(ev, pub)
                             if r["step_id"] == "guess")


def test_goal_never_met_without_evidence(pub):
    assert ce.goal({})[1] is None
    inside = {"family": "sweep", "counted": 2, "inside": 2, "outside": 0, "no-envelope": 0,
              "unknown": 0, "detected_inside": 2, "recall_inside": 1.0, "outside_steps": [],
              "unknown_steps": []}
    blind = {**inside, "family": "valid-login", "inside": 0, "no-envelope": 2,
             "detected_inside": 0, "recall_inside": None}
    _name, met, detail = ce.goal({"T1018": inside, "T1021.004": blind})
    assert met is False and "T1021.004 (valid-login: no envelope)" in detail
    assert ce.goal({"T1018": inside})[1] is True
    low = {**inside, "detected_inside": 1, "recall_inside": 0.5}
    assert ce.goal({"T1018": low})[1] is False
    # the envelope page's goals
    assert recall_goal([])["overall"] == "not measured"
    g = recall_goal(_outcomes())
    assert g["families"]["guess"]["status"] == "met"
    assert g["families"]["valid-login"]["status"] == "not measured"
    assert g["overall"] == "not measured in full"
    assert recall_lines(g)[0].startswith("- ✘ every family recall >= 0.9 inside its envelope")
    w = wider_goal(None, pub, None)
    assert w["overall"] == "not measured"
    assert "not measured (no earlier published envelope file" in wider_lines(w)[0]


def test_wider_than_before(pub):
    before = json.loads(json.dumps(pub))
    before["families"]["guess"]["axes"][0]["bound"] = 16          # was guesses >= 16
    before["families"]["sweep"]["axes"][0]["bound"] = 4           # was addresses >= 4
    moves = ep.compare(before, pub)
    assert moves["guess"]["verdict"] == "wider" and moves["guess"]["axes"]["guesses"] == "wider"
    assert moves["sweep"]["verdict"] == "narrower"
    assert moves["valid-login"]["verdict"] == "not measured"
    before["families"]["sweep"]["axes"][0]["bound"] = 6
    assert ep.compare(before, pub)["sweep"]["verdict"] == "same"
    w = wider_goal(before, pub, "test")
    assert w["overall"] == "not met" and "guess" in w["wider"]


def test_a_narrowing_says_what_it_gives_up_and_whether_that_held(pub):
    """An earlier envelope 'guesses >= 3' is cut to today's 'guesses >= 8': the steps between
    (3 and 5 guesses, both missed) are what the narrowing gives up, and the earlier envelope
    did not hold there; an earlier 'guesses >= 8, pause < 5' cut by nothing gives up nothing."""
    before = json.loads(json.dumps(pub))
    before["families"]["guess"]["axes"][0]["bound"] = 3
    w = wider_goal(before, pub, "test", _outcomes())
    g = w["families"]["guess"]
    assert g["verdict"] == "narrower"
    assert g["given_up"] == {"steps": 2, "detected": 0, "recall": 0.0, "held": False}
    line = [x for x in wider_lines(w) if x.startswith("- guess: the part given up")]
    assert line and "2 step(s)" in line[0] and "does **not** hold there" in line[0]
    # caught steps in the part given up: the earlier envelope held there (a real narrowing)
    outs = _outcomes() + [_o("guess", True, guesses=g, pause=0.1) for g in (4, 5, 6, 7) * 5]
    held = wider_goal(before, pub, "test", outs)["families"]["guess"]["given_up"]
    assert held["steps"] == 22 and held["held"] is True
    # without outcomes (an old caller) no family gets the evidence
    assert "given_up" not in wider_goal(before, pub, "test")["families"]["guess"]


TABLE = """| family | techniques | parameter [unit] | today | any | rules | tuning | n | d | ttd |
|---|---|---|---|---|---|---|---:|---:|---:|
| upload | T1041 | size [bytes], harder low | x | size >= 64 KiB bytes | none | none | 8 | 8 | 1 s |
| syn-flood | T1499 | pps [packets/s], harder low | x | pps >= 1,000 packets/s | none | none | 1 | 1 | 1 s |
| ″ | | duration [s], harder low | ″ | none (bin [4, ∞): recall 0.70) | x | x | 1 | 1 | 1 s |
| dns-beacon | T1071.004 | jitter [(fraction)], harder high | x | every jitter measured | x | x | 1 | 1 | 1 s |
"""


def test_before_from_an_earlier_pages_table(pub):
    b = ep.from_markdown(TABLE, "test")
    assert b["families"]["upload"]["axes"][0]["bound"] == 65536
    syn = b["families"]["syn-flood"]["axes"]
    assert (syn[0]["direction"], syn[0]["bound"]) == (">=", 1000)
    assert syn[1]["direction"] is None
    jit = b["families"]["dns-beacon"]["axes"][0]
    assert (jit["direction"], jit["bound"]) == ("<=", None)
    assert ep.axis_inside(jit, 0.8) is True
    with pytest.raises(ValueError):
        ep.from_markdown("no table", "test")


@pytest.mark.parametrize("topo", ["fob", "air_base", "logistics_depot", "naval_vessel",
                                  "coalition_mpe", "brigade"])
def test_derived_parameters_match_the_generators_plan(tmp_path, topo):
    """A drawn envelope drill, placed from its playbook and a ledger as the runner writes it
    (sweep CIDRs expanded without the actor): every axis parameter equals the plan's."""
    import ipaddress

    from cyberrange.score.envelope import draw_scenario
    from cyberrange.score.envelope_eval import axes
    scn = draw_scenario(9000, "eval", f"topologies/{topo}.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "envelope-playbook.yaml").write_text(scn.playbook_yaml())
    specs, why = ce.step_specs(run)
    assert why is None and set(specs) == set(scn.plan["steps"])
    checked = 0
    for sid, p in scn.plan["steps"].items():
        fam, st = p["family"], specs[sid]
        targets = []
        for t in st.targets:
            try:
                net = ipaddress.ip_network(t)
                targets += [str(h) for h in net.hosts()][1:] if net.num_addresses > 1 else [t]
            except ValueError:
                targets.append(t)
        facts = {"queries": p["params"].get("queries")} if fam == "dns-exfil" else {}
        if fam in ("http-beacon", "dns-beacon") and not st.params.get("count"):
            facts["beacons"] = p["params"]["count"]
        rec = {"targets": targets, "facts": facts, "actor": p["actor"], "start": 0.0, "end": 1.0}
        ledger = [rec]
        if fam == "valid-login":     # its hops run from the host it entered (by address)
            from cyberrange.model.loader import load_topology
            ip = str(load_topology(f"topologies/{topo}.yaml").nodes[p["targets"][0]]
                     .interfaces[0].ip)
            rec["facts"] = {"compromised": [ip]}
            ledger += [{"technique": "T1021.004", "outcome": "succeeded", "actor_ip": ip,
                        "start": 5.0 + k} for k, q in enumerate(scn.plan["steps"].values())
                       if q.get("part_of") == sid]
        if p.get("part_of"):
            continue
        got = ce.derive(fam, dict(st.params), [rec], st.targets,
                        {"ledger": ledger, "benign": None})
        for param, _, _ in axes(fam):
            if param == "new_plcs":     # derived from the run's benign plan, not drawn
                assert got[param] == len(p["targets"])      # no benign plan: every PLC new
                continue
            assert float(got[param]) == pytest.approx(float(p["params"][param])), (sid, param)
            checked += 1
    assert checked >= 6


def test_corpus_login_hops_are_later_logins_from_the_entered_host():
    """The quiet intrusion's login has one hop: a later successful SSH login run on the host
    it entered; the hop itself has none; a failed onward login is no hop."""
    login = {"step_id": "login", "technique": "T1021.004", "targets": ["10.73.0.10"],
             "facts": {"compromised": ["10.73.0.10"]}, "start": 10.0, "end": 12.0,
             "outcome": "succeeded", "actor_ip": "10.73.0.66"}
    hop = {"step_id": "hop", "technique": "T1021.004", "targets": ["10.73.0.20"],
           "facts": {"compromised": ["10.73.0.20"]}, "start": 20.0, "end": 21.0,
           "outcome": "succeeded", "actor_ip": "10.73.0.10"}
    ledger = [login, hop]
    p = {"commands": ["id"]}
    assert ce.derive("valid-login", p, [login], (), {"ledger": ledger, "benign": None})["hops"] == 1
    assert ce.derive("valid-login", p, [hop], (), {"ledger": ledger, "benign": None})["hops"] == 0
    # onto a host the entered one contacts every day: no new hop
    routine = {"plans": {"fra-log": {"activities": [{"targets": [{"ip": "10.73.0.20"}]}]}}}
    assert ce.derive("valid-login", p, [login], (),
                     {"ledger": [login, {**hop, "actor": "fra-log"}], "benign": routine}
                     )["hops"] == 0
    failed = {**hop, "outcome": "failed"}
    assert ce.derive("valid-login", p, [login], (),
                     {"ledger": [login, failed], "benign": None})["hops"] == 0
    with pytest.raises(ce.Unknown, match="ledger"):
        ce.derive("valid-login", p, [login])
    benign = {"plans": {"hmi": {"activities": [{"targets": [{"ip": "10.9.0.5", "type": "modbus"}]}]}}}
    read = {"targets": ["10.9.0.5"], "actor": "hmi"}
    got = ce.derive("modbus-read", {"count": 8}, [read], (), {"ledger": [], "benign": benign})
    assert got == {"registers": 8.0, "plcs": 1, "new_plcs": 0}
    got = ce.derive("modbus-read", {"count": 8}, [{**read, "actor": "ws"}], (),
                    {"ledger": [], "benign": benign})
    assert got["new_plcs"] == 1


def test_heldout_places_new_drills_against_the_published_file_and_never_passes_empty():
    """The held-out check reads the published envelope (it re-draws nothing): a step inside
    every axis with an envelope counts; a family below 0.9 inside is 'not held', one with
    fewer than 3 steps inside or no envelope is 'not measured', never held."""
    from cyberrange.score.envelope_heldout import heldout, heldout_lines
    pub = {"generated_by": "bench/envelope.py eval", "generated": "2026-12-06", "runs": 34,
           "families": {
               "guess": {"status": "envelope", "axes": [
                   {"param": "guesses", "direction": ">=", "bound": 8, "text": "guesses >= 8"},
                   {"param": "pause", "direction": "<=", "bound": 5.0, "text": "pause <= 5"}]},
               "scan": {"status": "envelope", "axes": [
                   {"param": "rate", "direction": None, "bound": None, "text": "none"},
                   {"param": "probes", "direction": ">=", "bound": 8, "text": "probes >= 8"}]},
               "valid-login": {"status": "none", "axes": []}}}

    def o(fam, det, **params):
        return {"family": fam, "counted": True, "detected": det, "ttd": 2.0 if det else None,
                "params": params, "run_id": "r", "step_id": f"{fam}-{len(params)}", "late": False}
    outs = ([o("guess", True, guesses=10, pause=1.0)] * 4 + [o("guess", False, guesses=3,
                                                                pause=1.0),
             o("guess", True, guesses=20, pause=9.0)]
            + [o("scan", True, rate=5, probes=12)] * 3 + [o("scan", False, rate=50, probes=9)]
            + [o("valid-login", False, hops=0)])
    res = heldout(outs, pub)
    g, s, v = (res["families"][f] for f in ("guess", "scan", "valid-login"))
    assert (g["counted"], g["inside"], g["detected"], g["status"]) == (6, 4, 4, "held")
    assert (s["inside"], s["detected"], s["status"]) == (4, 3, "not held")   # 0.75 < 0.9
    assert v["status"] == "not measured" and v["why"] == "no envelope published"
    assert res["overall"] == "not held" and res["below"] == ["scan"]
    assert [m["family"] for m in res["missed"]] == ["scan"]
    text = "\n".join(heldout_lines(res, pub, [{"counted": 11}]))
    assert "✘" in text and "| scan | probes >= 8 | 4 | 4 | 3 | 0.75 |" in text
    # too few inside: not measured, never held
    few = heldout(outs[:2], pub)
    assert few["families"]["guess"]["status"] == "not measured"
    assert few["overall"] == "not measured"
    assert heldout([], pub)["overall"] == "not measured"


def test_wider_compares_regions_a_new_bound_narrows_unless_it_covers_every_value():
    """An axis without an envelope constrains nothing, so a bound added where there was none
    narrows the region (an HTTP beacon's jitter < 0.3 where the earlier envelope said nothing
    of jitter), unless it covers every value measured (then: measured, the same region)."""
    def fam(*axes, status="envelope"):
        return {"techniques": ["T"], "status": status, "axes": list(axes)}

    def ax(param, direction=None, bound=None, all_=False):
        return {"param": param, "direction": direction, "bound": bound, "all": all_}
    before = {"families": {"b": fam(ax("interval", "<", 8), ax("jitter")),
                           "n": fam(ax("width"), status="none")}}
    after = {"families": {"b": fam(ax("interval", "<", 8), ax("jitter", "<", 0.3)),
                          "n": fam(ax("width", ">=", 12))}}
    got = ep.compare(before, after)
    assert got["b"]["verdict"] == "narrower" and got["b"]["axes"]["jitter"] == "narrower"
    assert got["n"]["verdict"] == "wider" and got["n"]["axes"]["width"] == "new"
    after["families"]["b"]["axes"][1] = ax("jitter", "<=", 0.8, all_=True)
    got = ep.compare(before, after)
    assert got["b"]["verdict"] == "same" and got["b"]["axes"]["jitter"] == "measured"
    after["families"]["b"]["axes"][0] = ax("interval", "<", 20)
    assert ep.compare(before, after)["b"]["verdict"] == "wider"
    after["families"]["b"]["axes"][0] = ax("interval")          # the bound is gone: lost
    assert ep.compare(before, after)["b"]["verdict"] == "narrower"
