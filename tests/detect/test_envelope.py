"""Detection envelopes without a twin: the scenario draws (deterministic, disjoint splits, real
playbooks that pass ``playbook check``), and the binning / envelope arithmetic on hand-made
outcome lists (cyberrange/score/envelope.py, envelope_eval.py; docs/detection-envelopes.md)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from cyberrange.attack.runner import check_playbook
from cyberrange.score.envelope import (
    CHAIN,
    FAMILIES,
    FOCUS,
    SPLITS,
    draw_scenario,
    split_seeds,
    support_files,
)
from cyberrange.score.envelope_eval import (
    bin_outcomes,
    envelope,
    envelope_text,
    family_table,
    main_inside,
    step_outcomes,
    today_envelopes,
)

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))


def test_same_seed_same_playbook_other_seed_other_draws():
    topo = str(ROOT / "topologies" / "fob.yaml")
    a, b = draw_scenario(9001, "eval", topo), draw_scenario(9001, "eval", topo)
    assert a.playbook_yaml() == b.playbook_yaml() and a.plan == b.plan
    c = draw_scenario(9002, "eval", topo)
    assert c.plan["steps"] != a.plan["steps"]


def test_splits_are_disjoint_and_bounded():
    tuning, ev = set(split_seeds("tuning", 1000)), set(split_seeds("eval", 1000))
    assert len(tuning) == len(ev) == 1000 and not tuning & ev
    assert len(SPLITS) == 2
    with pytest.raises(ValueError):
        split_seeds("eval", 1001)
    with pytest.raises(ValueError):
        split_seeds("test", 3)
    assert split_seeds("eval", 3, start=100) == [9100, 9101, 9102]
    assert split_seeds("tuning", 1, start=999) == [1999]
    with pytest.raises(ValueError):
        split_seeds("tuning", 2, start=999)            # 2000 would be outside the split


def _check(scn, topo, folder):
    """``scn``'s playbook written into ``folder`` with the files it names, then checked like
    `playbook check` / `attack validate` do."""
    for rel, src in support_files(ROOT).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(src.read_bytes())
    path = folder / f"{scn.split}-{scn.seed}.yaml"
    path.write_text(scn.playbook_yaml())
    return check_playbook(str(path), str(topo))[0]


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=lambda p: p.stem)
def test_generated_playbooks_pass_playbook_check(topo, tmp_path):
    """Two draws per shipped topology and split, each checked like `playbook check` does:
    schema, catalogue, limits, the topology's names, the run-time constraints, containment."""
    for split, seed in (("eval", SPLITS["eval"] + 17), ("tuning", SPLITS["tuning"] + 5)):
        scn = draw_scenario(seed, split, str(topo))
        pb = _check(scn, topo, tmp_path)
        assert len(pb.steps) == len(scn.plan["steps"]) >= 3
        assert all(s.parallel and s.timing.at is not None for s in pb.steps)


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=lambda p: p.stem)
def test_rare_focus_playbooks_pass_attack_validate(topo, tmp_path):
    """The ``rare`` focus (ARP poisoning, banner grabs, Modbus reads/holds, replays, sprays,
    valid logins, beacons, exfiltration): every drawn step passes every run-time constraint
    the validator knows (two victims on the actor's link, a PLC behind a Modbus target, one
    target per replayed victim, the C2 domain the server answers), over several seeds."""
    fams = set()
    for k in range(4):
        scn = draw_scenario(SPLITS["eval"] + 300 + k, "eval", str(topo), focus="rare")
        pb = _check(scn, topo, tmp_path)
        assert len(pb.steps) == len(scn.plan["steps"])
        assert scn.plan["focus"] == "rare"
        fams |= {p["family"] for p in scn.plan["steps"].values()}
        actors = {p["actor"] for p in scn.plan["steps"].values()}
        for p in scn.plan["steps"].values():     # a poisoned actor would relay another step
            if p["family"] == "arp-poison":
                assert not set(p["targets"]) & actors
    assert fams <= set(FOCUS["rare"]) and {"arp-poison", "banner"} <= fams
    with pytest.raises(ValueError, match="unknown focus"):
        draw_scenario(9000, "eval", str(topo), focus="most")


def test_rare_focus_draws_the_kinds_that_were_missing():
    """Over a handful of rare-focus drills every new kind is drawn, beacons reach intervals
    past 40 s, and each drawn step records its family's main parameter."""
    rows = []
    names = ["logistics_depot", "air_base", "naval_vessel", "fob", "coalition_mpe"]
    for i in range(15):
        topo = ROOT / "topologies" / f"{names[i % len(names)]}.yaml"
        rows += draw_scenario(SPLITS["tuning"] + 200 + i, "tuning", str(topo),
                              focus="rare").plan["steps"].values()
    fams = {p["family"] for p in rows}
    assert {"arp-poison", "banner", "replay", "modbus-read", "modbus-hold", "modbus-write",
            "spray", "valid-login", "dns-beacon", "http-beacon", "dns-exfil"} <= fams
    # a hop is part of its login's draw (no parameters of its own); every other step
    # records its family's main parameter
    assert all(FAMILIES[p["family"]].main in p["params"] for p in rows if not p.get("part_of"))
    beacons = [p["params"]["interval"] for p in rows if FAMILIES[p["family"]].beacon]
    assert max(beacons) > 40 and min(beacons) < 8
    for p in rows:
        if p["family"] == "arp-poison":
            assert len(p["targets"]) == 2 and p["params"]["rounds"] >= 1
        if p["family"] == "replay":
            assert len(p["targets"]) == 2 and p["params"]["packets"] % 14 == 0


def test_each_step_has_its_own_actor_but_for_a_quiet_second_step():
    """Detectors key their windows by source: one actor does at most one scan-class step and
    one other step, the second after a quiet period longer than every short window (35 s+)."""
    for i, (topo, focus) in enumerate([(t, f) for t in TOPOLOGIES for f in FOCUS]):
        plan = draw_scenario(SPLITS["eval"] + 100 + i, "eval", str(topo), focus=focus).plan
        by_actor: dict = {}
        for p in plan["steps"].values():
            by_actor.setdefault(p["actor"], []).append(p)
        for steps in by_actor.values():
            if {p["family"] for p in steps} <= set(CHAIN) and len(steps) > 1:
                # focus ics/thin: one step of each Modbus family, past modbus-allowlist's windows
                assert focus in ("ics", "thin") and len({p["family"] for p in steps}) == len(steps)
                steps = sorted(steps, key=lambda p: p["at"])
                for a, b in itertools.pairwise(steps):
                    assert b["quiet_before"] >= 130 and b["at"] >= a["at"] + a["expected_s"] + 130
                continue
            assert len(steps) <= 2
            if len(steps) == 2:
                a, b = sorted(steps, key=lambda p: p["at"])
                if focus == "thin":     # no scan-class family: two others, not the same one
                    assert a["family"] != b["family"]
                else:
                    assert FAMILIES[a["family"]].scan_class != FAMILIES[b["family"]].scan_class
                assert b["quiet_before"] >= 35 and b["at"] >= a["at"] + a["expected_s"] + 35
        hit = {t for p in plan["steps"].values() if not FAMILIES[p["family"]].scan_class
               for t in p["targets"]}
        assert not hit & set(by_actor), "an actor is flooded or logged in to by another step"


def test_draws_cover_wide_ranges():
    """Over a split's worth of draws the main parameters span both sides of today's thresholds."""
    rows = []
    for i in range(24):
        topo = TOPOLOGIES[i % len(TOPOLOGIES)]
        rows += draw_scenario(SPLITS["tuning"] + i, "tuning", str(topo)).plan["steps"].values()
    rates = [p["params"]["rate"] for p in rows if p["family"] == "scan"]
    assert min(rates) < 0.5 and max(rates) > 20          # vertical-portscan's edge is 1.2/s
    pps = [p["params"]["pps"] for p in rows if p["family"] in ("udp-flood", "syn-flood")]
    assert min(pps) < 200 and max(pps) > 1500            # flood thresholds 500 / 1000 pps
    guesses = [p["params"]["guesses"] for p in rows if p["family"] == "guess"]
    assert min(guesses) < 8 <= max(guesses)              # login-bruteforce's threshold is 8
    protos = {p["params"]["protocol"] for p in rows if p["family"] == "scan"}
    assert {"tcp-syn", "udp"} <= protos


def _o(x, detected, rules=None, counted=True, ttd=1.0, family="scan", by=("slow-portscan",)):
    return {"family": family, "technique": "T1046", "params": {"rate": x}, "counted": counted,
            "detected": detected, "detected_rules": detected if rules is None else rules,
            "ttd": ttd if detected else None, "by": list(by) if detected else [],
            "run_id": "r", "why": None if counted else "blocked", "late": False}


def test_binning_counts_only_counted_steps_in_the_right_bins():
    outs = [_o(0.05, False), _o(0.3, False), _o(1, True, ttd=4), _o(3, True, ttd=2),
            _o(3, True, rules=False, ttd=6), _o(100, True), _o(100, False, counted=False)]
    bins = bin_outcomes(outs, "rate", [0.1, 2, 10])
    assert [b["n"] for b in bins] == [3, 2, 1]          # 0.05 falls into the first bin
    assert [b["detected"] for b in bins] == [1, 2, 1]
    assert bins[1]["recall"] == 1.0 and bins[1]["recall_rules"] == 0.5
    assert bins[1]["median_ttd"] == 4.0 and bins[0]["median_ttd"] == 4.0
    assert bins[2]["hi"] is None and bins[0]["by"] == {"slow-portscan": 1}


def test_envelope_from_the_easy_end_stops_at_the_first_failing_bin():
    outs = ([_o(0.2, False), _o(0.3, True)] + [_o(1, True)] * 3 + [_o(5, True)] * 2
            + [_o(50, True)] * 4)
    bins = bin_outcomes(outs, "rate", [0.1, 0.5, 2, 10])
    env = envelope(bins, "low")                 # low rates are hard: walk down from the top
    assert env["edge"] == 0.5 and env["bins"] == 3 and not env["all"]
    assert "recall 0.50" in env["stop"]
    assert envelope_text(env, "scan") == "rate >= 0.5 probes/s"
    # a bin with one step stops the envelope: not measured is not detected
    bins = bin_outcomes([_o(50, True)] * 3 + [_o(5, True)], "rate", [0.1, 2, 10])
    env = envelope(bins, "low")
    assert env["edge"] == 10 and "fewer than 2" in env["stop"]
    # nothing passes
    assert envelope(bin_outcomes([_o(50, False)] * 3, "rate", [0.1, 10]), "low")["bins"] == 0


def test_a_secondary_axis_is_measured_inside_the_main_axis_envelope():
    """guess: the main axis (guesses) has the envelope >= 8; its pause axis is measured over
    the steps inside it only, so short guessing runs (missed by design) don't blur it."""
    def g(n, pause, hit):
        return {"family": "guess", "technique": "T1110.001", "counted": True, "detected": hit,
                "detected_rules": hit, "ttd": 1.0 if hit else None, "by": [], "run_id": "r",
                "why": None, "late": False, "params": {"guesses": n, "pause": pause}}
    outs = [g(3, 0.1, False), g(4, 2.0, False), g(2, 0.1, False),
            g(10, 0.1, True), g(12, 0.2, True), g(20, 1.0, True), g(30, 2.0, True)]
    inside, given = main_inside(outs, "guess")
    assert given == "guesses >= 8 guesses" and {o["params"]["guesses"] for o in inside} == \
        {10, 12, 20, 30}
    t = family_table(outs, "guess", "pause")
    assert t["given"] == given and t["counted"] == 4 and t["detected"] == 4
    assert t["envelope"]["bins"] >= 2                    # every measured pause bin passes
    assert family_table(outs, "guess")["given"] is None  # the main axis: all steps
    # no envelope on the main axis: the secondary axis is measured over every step
    none = [g(3, 0.1, False), g(20, 0.1, False), g(30, 0.1, False)]
    assert main_inside(none, "guess") == (none, None)


def test_envelope_when_high_values_are_hard():
    outs = [dict(_o(0, True), params={"interval": x}) for x in (3, 4, 8, 9)] + \
        [dict(_o(0, False), params={"interval": x}) for x in (30, 35)]
    bins = bin_outcomes(outs, "interval", [2, 5, 10, 20])
    env = envelope(bins, "high")
    assert env["edge"] == 10 and env["side"] == "<"
    assert envelope_text(env, "http-beacon") == "interval < 10 s"
    ok = bin_outcomes(outs[:4], "interval", [2, 5])
    assert envelope(ok, "high")["all"] and envelope_text(envelope(ok, "high"), "http-beacon") \
        == "every interval measured"


def test_step_outcomes_join_the_plan_and_apply_the_counting_rule():
    plan = {"topology": "fob", "intensity": 2, "steps": {
        "scan-1": {"family": "scan", "technique": "T1046", "actor": "ops-ws1", "at": 3,
                   "params": {"rate": 2.0}},
        "arp-scan-2": {"family": "arp-scan", "technique": "T1018-arp", "actor": "ops-ws2",
                       "at": 3, "params": {"rate": 9.0}},
        "guess-3": {"family": "guess", "technique": "T1110.001", "actor": "ops-ws3", "at": 3,
                    "params": {"guesses": 4}},
        "sweep-4": {"family": "sweep", "technique": "T1018", "actor": "cp-ws1", "at": 3,
                    "params": {"addresses": 6}}}}
    ledger = [{"step_id": "scan-1", "flows": [{"proto": "tcp"}]},
              {"step_id": "arp-scan-2", "flows": []}, {"step_id": "guess-3", "flows": [{}]}]
    card = {"steps": [
        {"step_id": "scan-1", "outcome": "failed", "attack_flows": 5, "detected": True,
         "time_to_detect_s": 2.5, "detected_by": ["packet-anomaly"], "detected_late": False},
        {"step_id": "arp-scan-2", "outcome": "succeeded", "attack_flows": 0, "arp_frames": 14,
         "detected": False, "time_to_detect_s": None, "detected_by": [], "detected_late": True,
         "late_by": ["arp-scan"]},
        {"step_id": "guess-3", "outcome": "blocked", "attack_flows": 2, "detected": True,
         "time_to_detect_s": 0.1, "detected_by": ["login-bruteforce"]}]}
    rows = {r["step_id"]: r for r in step_outcomes(ledger, card, plan,
                                                   {"packet-anomaly": "learned"}, "run1")}
    assert rows["scan-1"]["counted"] and rows["scan-1"]["detected"]
    assert not rows["scan-1"]["detected_rules"]          # only a learned detector saw it
    assert rows["arp-scan-2"]["counted"] and rows["arp-scan-2"]["late"]
    assert not rows["arp-scan-2"]["detected"]
    assert not rows["guess-3"]["counted"] and rows["guess-3"]["why"] == "blocked"
    assert not rows["sweep-4"]["counted"] and rows["sweep-4"]["why"] == "not in ledger"
    t = family_table(list(rows.values()), "scan")
    assert (t["counted"], t["detected"], t["detected_rules"]) == (1, 1, 0)


def test_todays_envelopes_read_the_detector_yaml(tmp_path):
    today = today_envelopes(ROOT / "detectors")
    assert ">= 12 distinct ports in 10 s" in today["scan"]
    assert ">= 8 attempts in 20 s" in today["guess"]
    assert "lone valid login is not flagged" in today["valid-login"]
    (tmp_path / "p.yaml").write_text(
        "detectors:\n  - name: vertical-portscan\n    family: portscan\n    settings:\n"
        "      threshold: 20\n      window: 5\n      transports: [tcp]\n")
    mine = today_envelopes(tmp_path)
    assert ">= 20 distinct ports in 5 s (tcp): >= 20 probes at >= 4 probes/s" in mine["scan"]
    assert "`slow-portscan`: not configured" in mine["scan"]


def test_every_axis_has_bins_and_a_second_axis_gets_its_own_envelope():
    from cyberrange.score.envelope_eval import EDGES, axes, bin_outcomes, envelope
    for fam in FAMILIES:
        for k, (param, harder, _) in enumerate(axes(fam)):
            assert (fam if k == 0 else f"{fam}:{param}") in EDGES and harder in ("low", "high")
    # a fast scan of 3 probes is missed; scans of 12+ probes are seen at any rate
    outs = [dict(_o(r, d), params={"rate": r, "probes": p})
            for r, p, d in ((85, 3, False), (0.9, 21, True), (22, 12, True), (113, 25, True),
                            (3.5, 13, True))]
    by_rate = family_table(outs, "scan")
    by_probes = family_table(outs, "scan", "probes")
    assert by_rate["param"] == "rate" and by_probes["param"] == "probes"
    assert envelope_text(by_probes["envelope"], "scan", "probes") == "probes >= 12 probes"
    # over all steps the rate axis has no envelope ([10, inf): 2 of 3) ...
    all_rate = envelope(bin_outcomes(outs, "rate", EDGES["scan"]), "low")
    assert all_rate["bins"] == 0
    # ... so it is measured inside the probes envelope: there every rate bin with steps passes
    assert by_rate["given"] == "probes >= 12 probes" and by_rate["counted"] == 4
    # [10, inf) 2 of 2, [1, 10) one step: too few, the envelope stops there
    assert envelope_text(by_rate["envelope"], "scan", "rate") == "rate >= 10 probes/s"
    # a main axis with its own envelope is measured over all steps (no "given")
    outs2 = [dict(o, params={**o["params"], "rate": 0.5}) if o["params"]["probes"] == 3 else o
             for o in outs]
    t2 = family_table(outs2, "scan")
    assert t2["given"] is None and t2["counted"] == 5


# ---------------------------------------------------------------------------- time to detect
def _t(fam, x, ttd, detected=True, main=None):
    main = main or FAMILIES[fam].main
    return {"family": fam, "technique": "T", "params": {main: x}, "counted": True,
            "detected": detected, "detected_rules": detected, "ttd": ttd if detected else None,
            "by": [], "run_id": "r", "why": None, "late": False}


def test_ttd_goal_uses_only_steps_inside_the_envelope():
    from cyberrange.score.envelope_goals import inside_envelope, percentile, ttd_goal
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 90) == 5
    assert percentile([], 90) is None
    # guessing: >= 8 guesses passes (4 of 4), [2, 8) fails (1 of 3): only the big ones count
    outs = ([_t("guess", g, t) for g, t in ((9, 1.0), (12, 2.0), (20, 3.0), (30, 40.0))]
            + [_t("guess", 3, 60.0), _t("guess", 4, None, False), _t("guess", 5, None, False)])
    rows, texts = inside_envelope(outs, "guess")
    assert sorted(o["params"]["guesses"] for o in rows) == [9, 12, 20, 30]
    assert texts == ["guesses >= 8 guesses"]            # the pause axis has no envelope here
    g = ttd_goal(outs)
    fam = g["families"]["guess"]
    assert (fam["inside"], fam["detected"], fam["median"]) == (4, 4, 2.5)
    assert fam["p90"] == pytest.approx(28.9, abs=0.05)     # 3 + 0.7 * (40 - 3)
    assert g["groups"]["brute force"]["status"] == "met"
    # floods and scans have no step: never met without evidence
    assert g["groups"]["floods"]["status"] == "not measured"
    assert g["overall"] == "not measured in full"


def test_ttd_goal_not_met_partly_measured_and_too_few():
    from cyberrange.score.envelope_goals import ttd_goal
    slow = [_t("syn-flood", 2000, t) for t in (12.0, 15.0, 30.0)]
    assert ttd_goal(slow)["groups"]["floods"]["status"] == "not met"
    assert ttd_goal(slow)["overall"] == "not met"
    few = [_t("udp-flood", 2000, 0.1), _t("udp-flood", 3000, 0.2)]
    x = ttd_goal(few)["groups"]["floods"]
    assert x["status"] == "not measured" and "fewer than 3" in x["why"]
    # sweeps pass, scans have counted steps and no envelope: the scans' verdict says so
    outs = [_t("sweep", 20, 1.0)] * 3 + [_t("scan", 50, None, False)] * 3
    x = ttd_goal(outs)["groups"]["scans"]
    assert x["status"] == "partly measured" and "no envelope: scan" in x["why"]
    ok = ttd_goal([_t("sweep", 20, 1.0)] * 3)["groups"]["scans"]
    assert ok["status"] == "met" and ok["median"] == 1.0


def test_ics_focus_chains_the_modbus_families_on_the_hosts_that_reach_a_plc():
    """Only ecdis and ot-jump reach the ship's PLC: with focus ics each runs a write, a read
    and a hold, so one drill holds up to six Modbus steps instead of one or two."""
    plan = draw_scenario(SPLITS["eval"] + 101, "eval", str(ROOT / "topologies" /
                                                           "naval_vessel.yaml"), focus="ics").plan
    modbus = [p for p in plan["steps"].values() if p["family"] in CHAIN]
    by_actor = {}
    for p in modbus:
        by_actor.setdefault(p["actor"], set()).add(p["family"])
    assert set(by_actor) <= {"ecdis", "ot-jump"}
    assert any(fams == set(CHAIN) for fams in by_actor.values())
    assert plan["focus"] == "ics" and plan["generator"] >= 5


def test_ttd_goal_steps_must_be_inside_every_axis_that_has_an_envelope():
    """A scan's rate axis can have no envelope while its probe axis has one (a fast 3-probe
    scan is missed): the steps of >= 8 probes are then inside, at any rate."""
    from cyberrange.score.envelope_goals import inside_envelope, ttd_goal

    def scan(rate, probes, ttd, det=True):
        return dict(_t("scan", rate, ttd, det), params={"rate": rate, "probes": probes})
    outs = ([scan(50, 20, 0.5), scan(80, 12, 0.4), scan(60, 3, None, False),
             scan(0.5, 10, 30.0), scan(0.3, 9, 20.0), scan(5, 14, 1.0), scan(4, 15, 2.0)])
    rows, texts = inside_envelope(outs, "scan")
    # rate over all steps: [10, inf) has 2 of 3, no envelope; inside probes >= 8 every rate
    # from 0.1 passes ([0.1, 1) 2 of 2, [1, 10) 2 of 2, [10, inf) 2 of 2)
    assert texts == ["rate >= 0.1 probes/s", "probes >= 8 probes"]
    assert len(rows) == 6 and all(o["params"]["probes"] >= 8 for o in rows)
    fam = ttd_goal(outs)["families"]["scan"]
    assert fam["median"] == 1.5 and fam["status"] == "met"


def test_thin_focus_draws_only_its_families_with_their_full_ranges():
    """``thin`` (and a family list) draw only the listed families, over their whole ranges:
    over a few drills the main parameters land on both sides of the envelope's bin edges."""
    names = ["logistics_depot", "naval_vessel", "fob", "air_base", "coalition_mpe"]
    rows = []
    for i in range(10):
        topo = ROOT / "topologies" / f"{names[i % len(names)]}.yaml"
        plan = draw_scenario(SPLITS["eval"] + 200 + i, "eval", str(topo), focus="thin").plan
        assert plan["focus"] == "thin" and plan["generator"] >= 6
        rows += plan["steps"].values()
    assert {p["family"] for p in rows} == set(FOCUS["thin"])
    val = {f: [p["params"][FAMILIES[f].main] for p in rows if p["family"] == f]
           for f in FOCUS["thin"]}
    assert min(val["udp-flood"]) < 250 and max(val["udp-flood"]) >= 1000
    assert min(val["dns-beacon"]) < 8 and max(val["dns-beacon"]) >= 45
    assert min(val["upload"]) < 65536 and max(val["upload"]) >= 196608
    assert min(val["spray"]) < 12 <= max(val["spray"])
    assert min(val["modbus-hold"]) < 5 and max(val["modbus-hold"]) >= 20
    assert min(val["modbus-read"]) < 4 and max(val["modbus-read"]) >= 16
    fob = str(ROOT / "topologies" / "fob.yaml")
    listed = draw_scenario(SPLITS["tuning"] + 200, "tuning", fob, families=["spray"]).plan
    assert listed["focus"] == "families" and listed["families"] == ["spray"]
    assert {p["family"] for p in listed["steps"].values()} == {"spray"}
    with pytest.raises(ValueError, match="unknown family 'sprey'"):
        draw_scenario(9000, "eval", fob, families=["spray", "sprey"])


@pytest.mark.parametrize("focus", ["all", "thin"])
def test_two_floods_never_hit_one_target_at_once(focus):
    """The flood detectors key by destination: two floods of one host within a few seconds
    would share their alerts (a 40-pps flood caught thanks to a 4,000-pps one). Floods of one
    target are at least FLOOD_GAP apart, the later one's quiet period grown by the delay."""
    from cyberrange.score.envelope import FLOOD_GAP, FLOODS
    n = 0
    for i, topo in enumerate(TOPOLOGIES * 2):
        plan = draw_scenario(SPLITS["eval"] + 200 + i, "eval", str(topo), focus=focus).plan
        floods = [p for p in plan["steps"].values() if p["family"] in FLOODS]
        n += len(floods)
        for a, b in itertools.combinations(floods, 2):
            if set(a["targets"]) & set(b["targets"]):
                first, second = sorted((a, b), key=lambda p: p["at"])
                assert second["at"] >= first["at"] + first["expected_s"] + FLOOD_GAP - 0.1
    assert n >= 20


# ---------------------------------------------------------------------------- generator 7
def test_valid_login_hops_are_steps_of_their_own_that_the_plan_ties_to_the_login():
    """Generator 7: a valid login may hop onward from the host it entered. Each hop is a
    playbook step run on that host (the login's ``compromised`` fact, first host), the plan
    records it ``part_of`` the login, and no two valid logins of a drill share a host."""
    topo = str(ROOT / "topologies" / "coalition_mpe.yaml")
    seen = set()
    for seed in range(SPLITS["eval"] + 500, SPLITS["eval"] + 506):
        scn = draw_scenario(seed, "eval", topo, families=["valid-login"])
        steps = {s["id"]: s for s in scn.playbook["steps"]}
        logins = {sid: p for sid, p in scn.plan["steps"].items() if not p.get("part_of")}
        hosts = []
        for sid, p in logins.items():
            hops = [h for h, q in scn.plan["steps"].items() if q.get("part_of") == sid]
            assert p["params"]["hops"] == len(hops)
            seen.add(len(hops))
            hosts += p["targets"]
            for h in hops:
                assert steps[h]["actor"] == f"#{{{sid}.compromised}}" and steps[h]["from"] == "first"
                assert steps[h]["timing"]["at"] > steps[sid]["timing"]["at"]
                assert scn.plan["steps"][h]["actor"] == p["targets"][0]
                hosts += scn.plan["steps"][h]["targets"]
        assert len(hosts) == len(set(hosts))        # no host in two intrusions of one drill
    assert seen == {0, 1}


def _card_step(sid, outcome="succeeded", detected=False, ttd=None, by=(), late=()):
    return {"step_id": sid, "outcome": outcome, "attack_flows": 3, "detected": detected,
            "time_to_detect_s": ttd, "detected_by": list(by), "detected_late": bool(late),
            "late_by": list(late)}


def test_a_login_is_detected_when_its_hop_is_and_hops_count_what_succeeded():
    plan = {"topology": "coalition-mpe", "intensity": 1, "steps": {
        "valid-login-1": {"family": "valid-login", "technique": "T1021.004", "actor": "fra-ws2",
                          "targets": ["fra-log"], "params": {"commands": 2, "hops": 1}},
        "valid-login-1-hop1": {"family": "valid-login", "technique": "T1021.004",
                               "part_of": "valid-login-1", "actor": "fra-log",
                               "targets": ["fra-lno"], "params": {}},
        "valid-login-2": {"family": "valid-login", "technique": "T1021.004", "actor": "fra-ws1",
                          "targets": ["fra-x"], "params": {"commands": 1}}}}
    ledger = [{"step_id": "valid-login-1", "start": 100.0, "flows": [{}]},
              {"step_id": "valid-login-1-hop1", "start": 112.0, "flows": [{}]},
              {"step_id": "valid-login-2", "start": 100.0, "flows": [{}]}]
    card = {"steps": [_card_step("valid-login-1", late=["lateral-movement"]),
                      _card_step("valid-login-1-hop1", detected=True, ttd=1.5,
                                 by=["lateral-movement"]),
                      _card_step("valid-login-2")]}
    rows = {r["step_id"]: r for r in step_outcomes(ledger, card, plan, {}, "r")}
    assert set(rows) == {"valid-login-1", "valid-login-2"}          # the hop is no row
    one = rows["valid-login-1"]
    assert one["detected"] and one["detected_rules"] and not one["late"]
    assert one["ttd"] == 13.5 and one["by"] == ["lateral-movement"]
    assert one["params"]["hops"] == 1 and one["params"]["hops_drawn"] == 1
    assert one["params"]["hops_done"] == 1
    # a hop over the entered host's own routine edge (its benign day SSHes there) is no new hop
    routine = {"plans": {"fra-log": {"activities": [
        {"kind": "admin-ssh", "targets": [{"node": "fra-lno", "type": "ssh"}]}]}}}
    one = {r["step_id"]: r for r in step_outcomes(ledger, card, plan, {}, "r", routine)}[
        "valid-login-1"]
    assert one["params"]["hops"] == 0 and one["params"]["hops_done"] == 1
    # a plan drawn before generator 7 made no hop
    assert rows["valid-login-2"]["params"]["hops"] == 0 and not rows["valid-login-2"]["detected"]
    # a hop that failed is no hop, and its alert-free failure detects nothing
    card["steps"][1] = _card_step("valid-login-1-hop1", outcome="failed")
    one = {r["step_id"]: r for r in step_outcomes(ledger, card, plan, {}, "r")}["valid-login-1"]
    assert one["params"]["hops"] == 0 and one["params"]["hops_drawn"] == 1
    assert not one["detected"] and one["late"]


def test_modbus_reads_count_the_plcs_the_actor_never_polls():
    from cyberrange.score.envelope_eval import new_plcs
    benign = {"plans": {"hmi1": {"activities": [
        {"kind": "modbus-poll", "targets": [{"node": "plc1", "ip": "10.0.0.5", "type": "modbus"}]},
        {"kind": "dns", "targets": [{"node": "plc2", "type": "dns"}]}]}}}
    assert new_plcs(["plc1"], "hmi1", benign) == 0          # its own HMI
    assert new_plcs(["plc1", "plc2"], "hmi1", benign) == 1
    assert new_plcs(["plc1"], "ws1", benign) == 1
    assert new_plcs(["plc1"], "hmi1", None) == 1            # no benign plan: every PLC new
    plan = {"topology": "t", "intensity": 1, "steps": {"modbus-read-1": {
        "family": "modbus-read", "technique": "T0861", "actor": "hmi1", "targets": ["plc1"],
        "params": {"registers": 10, "plcs": 1}}}}
    rows = step_outcomes([{"step_id": "modbus-read-1", "flows": [{}]}],
                         {"steps": [_card_step("modbus-read-1")]}, plan, {}, "r", benign)
    assert rows[0]["params"]["new_plcs"] == 0
