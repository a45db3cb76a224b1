"""The blue scorecard (issue 14 item 5, ``score/blue.py`` and ``score/blue_rules.py``).

Most tests take the suite's real drill (``drill_run``, the README's fob drill: sweep, scan and
brute force from ops-maint), write a crafted ``actions.jsonl`` and ``availability.jsonl`` around
its real ledger windows into a folder of their own, and score that with the real store's flows
(``run_blue``). One test re-scores two copies of the run folder with the real command line
(``drill score``). The first tests need no drill: the matching alone, on the fob topology, and
the formula on crafted step rows.
"""
from __future__ import annotations

import ipaddress
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT, cli

from cyberrange.model.loader import load_topology
from cyberrange.score.availability import availability_section
from cyberrange.score.blue import (
    CONTAIN_HALF_LIFE_S,
    FLOW_PENALTY_MAX,
    FLOW_PENALTY_SCALE,
    NODE_PENALTY,
    THREAD_PENALTY,
    WEIGHTS,
    blue_section,
    run_blue,
    score_parts,
)
from cyberrange.score.blue_rules import Action, Resolver, nft_rule, parse_actions, stops

FOB = ROOT / "topologies" / "fob.yaml"
BASE = {"twin": "x", "objects": [], "applied_s": 0.01, "trigger": None, "reason": None,
        "reverts": None, "result": "applied"}


def act(id_, t, action, params, actor="alice", **kw) -> dict:
    return dict(BASE, id=id_, time=t, action=action, params=params, actor=actor, **kw)


def ip(text):
    return ipaddress.ip_address(text)


@pytest.fixture(scope="module")
def fob():
    return Resolver(load_topology(FOB))


# -- the matching, without a drill ---------------------------------------------------------------
def test_nft_text_of_a_rule_add_is_read_back_with_its_addresses():
    r = nft_rule('ip saddr { 10.10.2.66/32 } ip daddr { 10.10.1.0/24, 10.10.3.80/32 } '
                 'tcp dport { 22, 8000-8099 } drop comment "cyberrange-blue A3"')
    assert not r.allow and r.proto == "tcp" and r.ports == [(22, 22), (8000, 8099)]
    assert r.matches(ip("10.10.2.66"), ip("10.10.1.10"), "tcp", 8050)
    assert r.matches(ip("10.10.2.66"), ip("10.10.3.80"), "tcp", 22)
    assert not r.matches(ip("10.10.2.66"), ip("10.10.1.10"), "udp", 22)
    assert not r.matches(ip("10.10.2.66"), ip("10.10.1.10"), "tcp", 23)
    assert not r.matches(ip("10.10.2.10"), ip("10.10.1.10"), "tcp", 22)
    anyr = nft_rule("meta l4proto icmp accept")
    assert anyr.allow and anyr.src is None and anyr.matches(ip("1.2.3.4"), ip("5.6.7.8"),
                                                            "icmp", None)


def _parsed(records, res):
    notes = []
    acts = parse_actions(records, res, notes)
    assert not notes, notes
    return acts


def test_a_block_stops_both_directions_and_a_firewall_block_only_what_crosses_it(fob):
    """A block is stateless (a base chain): blocking c2-server's packets stops a connection
    others open to it. On a firewall it stops only what is routed through that firewall."""
    a, fw = _parsed([act("A1", 10, "block", {"src": "c2-server", "dst": "any", "proto": "any",
                                              "at": "port"}),
                     act("A2", 10, "block", {"src": "ops-maint", "dst": "any", "proto": "tcp",
                                              "port": 22, "at": "firewall",
                                              "firewalls": ["fob-fw"]})], fob)
    ws1_c2 = ("tcp", ip("10.10.2.10"), 40000, ip("10.10.1.10"), 8080)
    assert stops(a, ws1_c2, 11, [a, fw], fob)                      # its answers are dropped
    to_c2 = ("tcp", ip("10.10.2.66"), 40000, ip("10.10.1.10"), 22)
    to_files = ("tcp", ip("10.10.2.66"), 40000, ip("10.10.2.20"), 22)   # same LAN
    assert stops(fw, to_c2, 11, [a, fw], fob)
    assert not stops(fw, to_files, 11, [a, fw], fob)
    arp = ("arp", ip("10.10.2.66"), None, ip("10.10.1.10"), None)
    assert not stops(a, arp, 11, [a, fw], fob)                     # IP rules never stop ARP


def test_isolation_spares_its_management_hosts_and_stops_arp(fob):
    (iso,) = _parsed([act("A1", 10, "isolate", {"node": "ops-maint", "allow": ["cp-ws1"]})],
                     fob)
    assert stops(iso, ("arp", ip("10.10.2.66"), None, ip("10.10.2.20"), None), 11, [iso], fob)
    assert stops(iso, ("tcp", ip("10.10.2.10"), 1, ip("10.10.2.66"), 22), 11, [iso], fob)
    assert not stops(iso, ("tcp", ip("10.10.1.11"), 1, ip("10.10.2.66"), 22), 11, [iso], fob)


def test_a_rule_add_is_evaluated_in_the_firewalls_rule_order(fob):
    """``first`` rule-adds come in the order applied, before the model's rules; ``last`` ones
    after them: a deny shadowed by an earlier allow, or by a model rule that matches first,
    stops nothing."""
    def rule_add(id_, text, position="first"):
        return act(id_, 10, "rule-add", {"firewall": "fob-fw", "rule": text,
                                         "position": position})
    allow, deny = _parsed([rule_add("A1", "allow from ops-maint to any"),
                           rule_add("A2", "deny from ops-maint to c2-server")], fob)
    flow = ("tcp", ip("10.10.2.66"), 40000, ip("10.10.1.10"), 22)
    assert not stops(deny, flow, 11, [allow, deny], fob)
    assert stops(deny, flow, 11, [deny], fob)
    (late,) = _parsed([rule_add("A3", "deny from ops-maint to c2-server proto tcp port 8080",
                                "last")], fob)
    cop = ("tcp", ip("10.10.2.66"), 40000, ip("10.10.1.10"), 8080)
    assert not stops(late, cop, 11, [late], fob)          # the model allows the COP port first
    (late_dmz,) = _parsed([rule_add("A4", "deny from ops-maint to dmz", "last")], fob)
    # routed through fob-fw (ops-lan -> transit -> comms-rtr), where the model's "allow ops-lan
    # to [dmz, hq-lan]" matches first
    assert not stops(late_dmz, ("tcp", ip("10.10.2.66"), 1, ip("10.10.3.80"), 80), 11,
                     [late_dmz], fob)


def test_an_action_whose_names_cannot_be_resolved_is_left_out_with_a_note():
    notes = []
    acts = parse_actions([act("A1", 10, "block", {"src": "cp-lan", "dst": "any"})],
                         Resolver(None, {"ops-maint": "10.10.2.66"}), notes)
    assert acts == [] and "A1" in notes[0] and "cp-lan" in notes[0]


# -- the formula, on crafted rows ----------------------------------------------------------------
def row(step_id, *, detected=True, contained=False, ttc=None, start=100.0, observable=True,
        prevented=False, after=False):
    return {"step_id": step_id, "observable": observable, "detected": detected,
            "contained": contained, "time_to_contain_s": ttc, "start": start,
            "contained_at": start + (ttc or 0) if contained else None, "actors": ["red"],
            "prevented": prevented, "after_containment": after}


def test_parts_renormalise_over_what_was_measured_and_never_count_a_missing_part_as_perfect():
    rows = [row("a", contained=True, ttc=60.0), row("b", detected=False, contained=True,
                                                      ttc=0.0, start=200, prevented=True,
                                                      after=True)]
    p = score_parts(rows, True, {"missions": 0.5, "overall": 0.9})
    assert p["detection"]["value"] == 0.5
    assert p["containment"]["value"] == pytest.approx((0.5 + 1.0) / 2)   # one half-life
    assert p["prevention"]["value"] == 1.0 and p["availability"]["value"] == 0.5
    assert all(q["measured"] and q["weight"] == WEIGHTS[n] for n, q in p.items())
    # nobody acted (no action log): containment and prevention are not measured, not 0 or 1
    p = score_parts(rows, False, None)
    assert [n for n, q in p.items() if q["measured"]] == ["detection"]
    assert p["containment"]["value"] is None and p["containment"]["weight"] == 0
    card = {"steps": [], "availability": {"missions": 0.8, "overall": 0.9, "threads": {}}}
    sec = blue_section(card, [], None, [], [])              # no attack steps, an empty log
    assert [n for n, q in sec["parts"].items() if q["measured"]] == ["availability"]
    assert sec["score"] == 80.0
    assert blue_section({"steps": []}, [], None, None, None) is None        # nothing at all
    sec = blue_section({"steps": []}, [], None, [], None)   # a log, but nothing to measure
    assert sec["score"] is None and not any(q["measured"] for q in sec["parts"].values())


# -- on the real drill ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drill(drill_run, tmp_path_factory):
    """The drill's folder copied, its ledger, scorecard, manifest and flows."""
    from cyberrange.run import Run
    src, _ = drill_run
    copy = tmp_path_factory.mktemp("blue-score") / "run"
    shutil.copytree(src, copy)
    run = Run.open(str(copy))
    store = run.open_store(need=("flows",))
    try:
        flows = store.read("flows", run.id)
    finally:
        store.close()
    card = json.loads((copy / "scorecard.json").read_text())
    return {"dir": copy, "ledger": run.ledger(), "card": card, "manifest": run.manifest,
            "flows": flows, "steps": {s["step_id"]: s for s in card["steps"]}}


def score(drill, tmp_path, actions=None, probes=None, monkeypatch=None, ledger=None,
          card=None) -> dict | None:
    """``run_blue`` on a folder holding only the crafted files (and the twin's dns-hosts)."""
    d = tmp_path / "crafted"
    (d / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(drill["dir"] / "config" / "dns-hosts", d / "config" / "dns-hosts")
    card = json.loads(json.dumps(card or drill["card"]))
    card.pop("availability", None)
    if actions is not None:
        (d / "actions.jsonl").write_text("".join(json.dumps(a) + "\n" for a in actions))
    if probes is not None:
        (d / "availability.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
        card["availability"] = availability_section(probes)
    if monkeypatch is not None:
        monkeypatch.chdir(ROOT)             # the manifest names topologies/fob.yaml
    return run_blue(d, drill["manifest"], ledger or drill["ledger"], drill["flows"], card)


def steps_of(sec) -> dict:
    return {s["step_id"]: s for s in sec["steps"]}


def test_containment_time_is_the_action_time_minus_the_step_start(drill, tmp_path, monkeypatch):
    led = drill["ledger"]
    actor, first, brute = led[0]["actor"], led[0], led[-1]
    t = brute["start"] + 2.5
    sec = score(drill, tmp_path, [act("A1", t, "block", {"src": actor, "dst": "any",
                                                          "proto": "any", "at": "port"},
                                      actor="auto:contain")], monkeypatch=monkeypatch)
    assert sec["resolved_with"] == "topology" and not sec["notes"]
    for step_id, s in steps_of(sec).items():
        start = min(r["start"] for r in led if r["step_id"] == step_id)
        assert s["contained"] and s["contained_by"] == "A1", s
        assert s["time_to_contain_s"] == pytest.approx(t - start, abs=1e-3)
        assert s["contained_at_s"] == pytest.approx(t - first["start"], abs=1e-3)
        assert s["detected"] == drill["steps"][step_id]["detected"]      # reused as scored
        assert s["time_to_detect_s"] == drill["steps"][step_id]["time_to_detect_s"]
    assert sec["actions"] == {"total": 1, "applied": 1, "refused": 0, "failed": 0, "auto": 1,
                              "manual": 0, "undos": 0}
    # no probes, and no step began after the containment: detection and containment only,
    # renormalised over their 60 points
    p = sec["parts"]
    assert [n for n, q in p.items() if q["measured"]] == ["detection", "containment"]
    assert sec["penalty"]["total"] == 0          # the attacker's own traffic is no collateral
    assert sec["score"] == round(100 * (30 * p["detection"]["value"]
                                        + 30 * p["containment"]["value"]) / 60, 1)
    # in force before the brute force began: contained at once (0 s); the brute force still
    # succeeded here (the block is only in the log), so it was not prevented
    early = score(drill, tmp_path, [act("A1", brute["start"] - 1, "block",
                                        {"src": actor, "dst": "any", "at": "port"})],
                  monkeypatch=monkeypatch)
    b = steps_of(early)[brute["step_id"]]
    assert b["time_to_contain_s"] == 0.0 and b["after_containment"] and not b["prevented"]
    # undone before the brute force began: it contains nothing after
    gone = score(drill, tmp_path, [act("A1", first["start"] - 5, "block",
                                       {"src": actor, "dst": "any", "at": "port"}),
                                   act("A2", first["start"] - 4, "unblock", {"id": "A1"},
                                       reverts="A1")], monkeypatch=monkeypatch)
    assert not any(s["contained"] for s in gone["steps"])


def test_a_step_that_ended_blocked_under_containment_is_prevented(drill, tmp_path,
                                                                   monkeypatch):
    led = [dict(r) for r in drill["ledger"]]
    brute = led[-1]
    brute.update(outcome="blocked", blocked_reason="connection timed out")
    card = json.loads(json.dumps(drill["card"]))
    card["steps"][-1]["outcome"] = "blocked"
    sec = score(drill, tmp_path, [act("A1", brute["start"] - 1, "isolate",
                                      {"node": led[0]["actor"], "allow": []})],
                monkeypatch=monkeypatch, ledger=led, card=card)
    b = steps_of(sec)[brute["step_id"]]
    assert b["contained"] and b["prevented"] and b["contained_by"] == "A1"
    assert sec["parts"]["prevention"]["value"] == 1.0
    assert sec["parts"]["prevention"]["steps"] == 1


def test_an_action_that_does_not_match_the_actors_flows_does_not_contain(drill, tmp_path,
                                                                        monkeypatch):
    led = drill["ledger"]
    actor, brute = led[0]["actor"], led[-1]
    dsts = {f["dst"] for f in brute["flows"]}
    (target,) = dsts                                 # the README drill: one login service
    node = load_topology(FOB).node_by_ip(target).name
    t = led[0]["start"] - 1
    wrong = [act("A1", t, "block", {"src": "ops-ws1", "dst": "any", "at": "port"}),
             act("A2", t, "block", {"src": actor, "dst": "dmz-web", "at": "port"}),
             act("A3", t, "block", {"src": actor, "dst": "any", "proto": "udp", "at": "port"}),
             # the firewall is not between ops-maint and its LAN neighbour
             act("A4", t, "block", {"src": actor, "dst": node, "at": "firewall",
                                    "firewalls": ["fob-fw"]}),
             act("A5", t, "rule-add", {"firewall": "fob-fw", "position": "first",
                                       "rule": f"deny from {actor} to {node}"})]
    sec = score(drill, tmp_path, wrong, monkeypatch=monkeypatch)
    assert not steps_of(sec)[brute["step_id"]]["contained"]
    assert sec["parts"]["containment"]["measured"] and sec["parts"]["containment"]["value"] < 1
    # isolating the brute force's target contains it (and only the steps aimed at it alone)
    sec = score(drill, tmp_path, [act("A1", t, "isolate", {"node": node, "allow": []})],
                monkeypatch=monkeypatch)
    steps = steps_of(sec)
    assert steps[brute["step_id"]]["contained"]
    assert not steps[led[0]["step_id"]]["contained"]             # the sweep went elsewhere too
    assert [a["node"] for a in sec["collateral"]["actions_on_non_attackers"]] == [node]


def _benign_pair(drill):
    """The commonest (src, dst, proto, dport) of the benign flows not touching the actor."""
    from cyberrange.score.score import label_flows
    f = drill["flows"]
    labels = label_flows(drill["ledger"], f, drill["card"].get("slack_s", 2.0))
    cols = {n: f.column(n).to_pylist() for n in
            ("source.ip", "destination.ip", "network.transport", "destination.port",
             "source.port", "network.community_id", "event.start")}
    actor_ip = drill["ledger"][0]["actor_ip"]
    pairs = Counter((cols["source.ip"][i], cols["destination.ip"][i],
                     cols["network.transport"][i], cols["destination.port"][i])
                    for i in range(f.num_rows) if labels[i] is None
                    and cols["network.transport"][i] in ("tcp", "udp")
                    and actor_ip not in (cols["source.ip"][i], cols["destination.ip"][i]))
    pair = pairs.most_common(1)[0][0]
    src, dst, proto, port = pair
    conns = {(cols["network.community_id"][i], round(cols["event.start"][i].timestamp()))
             for i in range(f.num_rows) if labels[i] is None
             and cols["network.transport"][i] == proto
             and ((cols["source.ip"][i], cols["destination.ip"][i],
                   cols["destination.port"][i]) == (src, dst, port)
                  or (cols["source.ip"][i], cols["destination.ip"][i],
                      cols["source.port"][i]) == (dst, src, port))}
    return pair, len(conns)


def test_benign_flows_matching_a_block_are_collateral(drill, tmp_path, monkeypatch):
    (src, dst, proto, port), n = _benign_pair(drill)
    assert n >= 2
    t0 = min(r["start"] for r in drill["ledger"]) - 600       # in force over the whole run
    sec = score(drill, tmp_path, [act("A1", t0, "block", {"src": src, "dst": dst,
                                                           "proto": proto, "port": port,
                                                           "at": "port"})],
                monkeypatch=monkeypatch)
    c = sec["collateral"]
    assert c["benign_flows_blocked"] == n and c["benign_flows_blocked_by_action"] == {"A1": n}
    assert c["benign_flows_blocked_attackers"] == 0
    assert c["benign_pairs_blocked"][0] == {"src": src, "dst": dst, "proto": proto,
                                            "port": port, "flows": n}
    want = round(FLOW_PENALTY_MAX * (1 - math.exp(-n / FLOW_PENALTY_SCALE)), 2)
    assert sec["penalty"]["benign_flows"] == want
    assert not any(s["contained"] for s in sec["steps"])
    # blocking the attacker only: its benign flows (if any) are counted but not penalised,
    # and no attack flow ever counts as collateral
    sec = score(drill, tmp_path, [act("A1", t0, "isolate", {"node": drill["ledger"][0]["actor"],
                                                             "allow": []})],
                monkeypatch=monkeypatch)
    c = sec["collateral"]
    assert c["benign_flows_blocked"] == c["benign_flows_blocked_attackers"]
    assert sec["penalty"]["benign_flows"] == 0 and sec["penalty"]["non_attacker_nodes"] == 0


def probes_around(led, broken: dict[str, tuple[float, float]]) -> list[dict]:
    """Two mission threads probed every second over the drill; each fails in its window."""
    out, t = [], led[0]["start"] - 5
    threads = {"cop": ("ops-ws1", "c2-server", "10.10.1.10", "tcp", 8080),
               "web-portal": ("ops-ws1", "dmz-web", "10.10.3.80", "tcp", 80)}
    while t < led[-1]["end"] + 5:
        for name, (s, d, dip, proto, port) in threads.items():
            lo, hi = broken.get(name, (0, 0))
            ok = not lo <= t < hi
            out.append({"time": t, "thread": name, "src": s, "dst": d, "dst_ip": dip,
                        "proto": proto, "port": port, "ok": ok,
                        "latency_ms": 1.0 if ok else None, "reason": None if ok else "timeout"})
        t += 1.0
    return out


def test_isolating_a_node_a_mission_thread_uses_costs_that_thread(drill, tmp_path,
                                                                  monkeypatch):
    led = drill["ledger"]
    t_iso, t_rel = led[0]["start"] + 0.5, led[0]["start"] + 6.5
    # cop down while c2-server is isolated; web-portal down during the scan, for its own
    # reasons (no action stops it: not blue's doing)
    probes = probes_around(led, {"cop": (t_iso, t_rel),
                                 "web-portal": (led[1]["start"], led[1]["start"] + 3)})
    # down from its first failed probe (probes 1 s apart) until the release, not until the
    # next probe after it: seconds down while the isolation was in force
    lost = t_rel - min(p["time"] for p in probes if p["thread"] == "cop" and not p["ok"])
    sec = score(drill, tmp_path, [act("A1", t_iso, "isolate", {"node": "c2-server",
                                                                "allow": ["cp-ws1"]}),
                                  act("A2", t_rel, "release", {"id": "A1"}, reverts="A1")],
                probes, monkeypatch=monkeypatch)
    c = sec["collateral"]
    assert c["availability_lost_s"] == {"cop": pytest.approx(lost, abs=1e-3)}
    assert c["availability_lost_by_action"] == {"A1": {"cop": pytest.approx(lost, abs=1e-3)}}
    assert c["mission_threads_down"] == ["cop"]
    assert [a["node"] for a in c["actions_on_non_attackers"]] == ["c2-server"]
    assert sec["penalty"]["mission_threads"] == THREAD_PENALTY
    assert sec["penalty"]["non_attacker_nodes"] == NODE_PENALTY
    avail = sec["parts"]["availability"]
    assert avail["measured"] and avail["value"] == availability_section(probes)["missions"]


def test_no_blue_data_is_null_and_without_blue_actions_there_is_no_score(
        drill, tmp_path, monkeypatch):
    """No action log and no probes: null. Probes but nobody on duty: the parts that could be
    measured (detection, availability), no overall score (an absent defender must not outscore
    an idle one, whose containment is measured and 0). An empty log or a response playbook
    is someone on duty."""
    assert score(drill, tmp_path, monkeypatch=monkeypatch) is None
    led = drill["ledger"]
    probes = probes_around(led, {})
    sec = score(drill, tmp_path, probes=probes, monkeypatch=monkeypatch)
    measured = {n for n, p in sec["parts"].items() if p["measured"]}
    assert measured == {"detection", "availability"}
    assert sec["score"] is None and sec["on_duty"] is False
    assert not any(s["contained"] for s in sec["steps"])
    assert any("no blue actions" in n for n in sec["notes"])
    idle = score(drill, tmp_path, actions=[], probes=probes, monkeypatch=monkeypatch)
    det = idle["parts"]["detection"]["value"]
    assert idle["parts"]["containment"]["measured"] and idle["parts"]["containment"]["value"] == 0
    assert not idle["parts"]["prevention"]["measured"]          # nothing was ever contained
    assert idle["score"] == round(100 * (30 * det + 30 * 0 + 20 * 1.0) / 80, 1)
    responder = dict(drill["manifest"], inputs=dict(drill["manifest"]["inputs"],
                                                    respond={"path": "r.yaml", "sha256": "0"}))
    d = tmp_path / "crafted"
    (d / "actions.jsonl").unlink()
    sec = run_blue(d, responder, led, drill["flows"], dict(drill["card"], availability=None))
    assert sec["on_duty"] and sec["parts"]["containment"]["measured"]


def test_drill_score_writes_and_shows_the_blue_scorecard(drill, tmp_path):
    """The real command line on two copies: one with a crafted action log, one a plain red
    drill without probes (blue is null, and the terminal says so)."""
    led = drill["ledger"]
    blue, plain = tmp_path / "blue", tmp_path / "plain"
    for copy in (blue, plain):
        shutil.copytree(drill["dir"], copy)
    (blue / "actions.jsonl").write_text(json.dumps(act(
        "A1", led[-1]["start"] + 1.25, "block", {"src": led[0]["actor"], "dst": "any",
                                                  "proto": "any", "at": "port"},
        actor="auto:contain-scanner")) + "\n")
    (plain / "availability.jsonl").unlink(missing_ok=True)
    r = cli("drill", "score", blue, plain, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    card = json.loads((blue / "scorecard.json").read_text())
    b = {s["step_id"]: s for s in card["blue"]["steps"]}[led[-1]["step_id"]]
    assert b["contained"] and b["contained_by"] == "A1"
    assert b["time_to_contain_s"] == pytest.approx(1.25, abs=1e-3)
    assert isinstance(card["blue"]["score"], float) and 0 <= card["blue"]["score"] <= 100
    assert json.loads((plain / "scorecard.json").read_text())["blue"] is None
    assert "Blue scorecard:" in r.stdout and "blue score" in r.stdout
    assert r.stdout.count("no blue actions and no availability probes") == 1
    from cyberrange.report.blue import summary_lines
    assert summary_lines(card["blue"])[0].startswith(f"[bold]blue score {card['blue']['score']:.1f}")


def test_parsed_actions_keep_their_window(fob):
    acts = _parsed([act("A1", 10, "isolate", {"node": "ops-maint"}),
                    act("A2", 12, "release", {"id": "A1"}, reverts="A1"),
                    act("A3", 13, "isolate", {"node": "nosuch"}, result="refused")], fob)
    assert [(a.id, a.t0, a.t1) for a in acts] == [("A1", 10, 12)]
    assert isinstance(acts[0], Action)


def test_time_constant_is_documented():
    doc = (Path(ROOT) / "docs" / "blue-team.md").read_text()
    assert "## Blue scorecard" in doc and f"{CONTAIN_HALF_LIFE_S:g} s" in doc
