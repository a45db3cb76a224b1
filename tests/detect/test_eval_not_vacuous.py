"""An evaluation that cannot pass vacuously (issue 15, item 5), on crafted run folders: a run
whose attack steps errored is not evaluable for recall (exit 1, never "every goal met"); a goal
without evidence prints "not measured", never ✔; an alert later than ``late_s`` after a step's
end detects it late, not on time (recall counts on-time only); steps are unseen only when none
of their packets was captured."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from helpers import cli
from rich.console import Console
from test_detect_cli import ATT, T0, craft_run

from cyberrange.detect.base import Alert
from cyberrange.report.evaluation import goals, print_evaluation
from cyberrange.score.evaluate import evaluate
from cyberrange.score.score import LATE_S, score_run
from cyberrange.telemetry.schema import ALERT_SCHEMA

SCAN_START, SCAN_END = T0 + 30, T0 + 30.5          # craft_run's scan step


def _ledger(folder):
    from cyberrange.attack.ledger import legacy_record      # edited and written back: old names
    return [legacy_record(json.loads(line))
            for line in (folder / "ledger.jsonl").read_text().splitlines()]


def _rewrite(folder, ledger=None, **manifest):
    if ledger is not None:
        (folder / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ledger))
    m = json.loads((folder / "manifest.json").read_text())
    m.update(manifest)
    (folder / "manifest.json").write_text(json.dumps(m))


def _flows(folder):
    from cyberrange.store.duckdb_store import DuckDBStore
    with DuckDBStore(folder / "store.duckdb") as store:
        return store.read("flows", folder.name)


def _ts(t):
    return datetime.fromtimestamp(t, tz=timezone.utc)


class AtDelay:
    """A stand-in detector: one alert holding every flow of the attacker, ``delay`` seconds
    after the scan step's end (the alert's own time, as a window pushed over its threshold by
    later traffic would give)."""
    family, kind, technique = "test", "rule", "T1046"
    trainable = needs_packets = scores_flows = False
    settings: dict = {}

    def __init__(self, delay):
        self.delay, self.name = delay, f"at-{delay:g}s"

    def detect(self, flows, packets=None):
        fids = [f for f, s in zip(flows.column("cyberrange.flow_id").to_pylist(),
                                  flows.column("source.ip").to_pylist()) if s == ATT]
        if not fids:
            return []
        t = _ts(SCAN_END + self.delay)
        return [Alert(t, _ts(SCAN_START), t, self.name, "test", "T1046", ATT, None, "m", 1.0,
                      flow_ids=fids)]


def _alert_at(t, fids):
    us = int(round(t * 1e6))
    return {"@timestamp": us, "event.kind": "alert", "event.dataset": "cyberrange.alert",
            "event.start": us, "event.end": us, "rule.name": "slow", "rule.category": "x",
            "threat.technique.id": "T1046", "source.ip": ATT, "destination.ip": None,
            "message": "m", "cyberrange.score": 0.5, "cyberrange.evidence": "{}",
            "cyberrange.flow_ids": fids, "cyberrange.alert_id": f"a{t}",
            "cyberrange.run_id": "r"}


def _alerts(rows):
    cols = {}
    for f in ALERT_SCHEMA:
        vals = [r.get(f.name) for r in rows]
        cols[f.name] = (pa.array(vals, pa.int64()).cast(f.type) if pa.types.is_timestamp(f.type)
                        else pa.array(vals, f.type))
    return pa.table(cols, schema=ALERT_SCHEMA)


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory):
    return craft_run(tmp_path_factory.mktemp("runs") / "scan", scan=True)


# -- on time or late (score_run) --------------------------------------------------------------

@pytest.mark.parametrize("delay, on_time", [(0.0, True), (LATE_S - 1, True),
                                            (LATE_S + 15, False)])
def test_alert_after_end_plus_late_s_is_late_not_detected(scan_run, delay, on_time):
    flows = _flows(scan_run)
    fids = [f for f, s in zip(flows.column("cyberrange.flow_id").to_pylist(),
                              flows.column("source.ip").to_pylist()) if s == ATT]
    card = score_run(_ledger(scan_run), flows, _alerts([_alert_at(SCAN_END + delay, fids)]))
    (step,) = card["steps"]
    assert card["late_s"] == LATE_S
    assert step["detected"] is on_time and step["detected_on_time"] is on_time
    assert step["detected_late"] is (not on_time)
    assert card["techniques"]["T1046"] == {"steps": 1, "detected": int(on_time)}
    if on_time:
        assert step["time_to_detect_s"] == pytest.approx(0.5 + delay, abs=0.01)
        assert step["detected_by"] == ["slow"] and step["late_by"] == []
    else:                           # not on time: no time to detect, listed as late
        assert step["time_to_detect_s"] is None and step["detected_by"] == []
        assert step["late_by"] == ["slow"]
        assert step["late_detect_s"] == pytest.approx(0.5 + delay, abs=0.01)
    assert card["alerts"]["true"] == 1          # the alert still holds attack flows


def test_late_s_is_a_parameter(scan_run):
    flows = _flows(scan_run)
    fids = flows.column("cyberrange.flow_id").to_pylist()
    alerts = _alerts([_alert_at(SCAN_END + 25, fids)])
    assert not score_run(_ledger(scan_run), flows, alerts)["steps"][0]["detected"]
    assert score_run(_ledger(scan_run), flows, alerts, late_s=30)["steps"][0]["detected"]


# -- detect eval: late steps are listed, not in recall ------------------------------------------

def test_eval_counts_on_time_only_and_lists_the_late(scan_run):
    ev = evaluate([scan_run], [AtDelay(2.0), AtDelay(LATE_S + 15)]).to_dict()
    (row,) = ev["techniques"]
    assert (row["steps"], row["detected"], row["late"]) == (1, 1, 0)
    assert row["detected_by"] == {"at-2s": 1}   # the late one detected nothing
    ev = evaluate([scan_run], [AtDelay(LATE_S + 15)]).to_dict()
    (row,) = ev["techniques"]
    assert (row["steps"], row["detected"], row["late"], row["recall"]) == (1, 0, 1, 0.0)
    assert ev["totals"]["late_steps"][0]["step_id"] == "scan"
    assert ev["totals"]["late_steps"][0]["late_by"] == ["at-25s"]
    text = _printed(ev)
    assert "late scan scan (T1046): by at-25s 25.5 s after its start" in text
    # the time-to-detect goal has no on-time detection behind it: not measured, never ✔
    (ttd,) = [line for line in text.splitlines() if "median time to detect" in line]
    assert "✔" not in ttd and "not measured" in ttd


def _printed(ev) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    print_evaluation(ev, console)
    return console.export_text()


# -- goals without evidence ---------------------------------------------------------------------

def _ev(techniques=(), detectors=(), benign=0):
    return {"runs": [], "techniques": list(techniques), "detectors": list(detectors),
            "coverage": {}, "totals": {"runs": 1, "flows": benign, "benign_flows": benign,
                                       "attack_flows": 0, "flow_rows_scored": 0, "steps": 0,
                                       "detected": 0, "skipped_runs": []}}


def _tech(tech, steps, detected, ttd):
    return {"technique": tech, "attack_id": tech, "runs": 1, "steps": steps, "unobservable": 0,
            "blocked": 0, "blocked_detected": 0, "detected": detected, "late": 0,
            "recall": detected / steps if steps else None, "precision": None,
            "false_per_10k": 0.0, "median_ttd_s": ttd, "detected_by": {}}


RULE = {"detector": "vertical-portscan", "family": "portscan", "kind": "rule", "alerts": 0,
        "true": 0, "false": 0, "false_per_10k": 0.0, "precision": None, "steps_detected": 0,
        "median_ttd_s": None, "roc_auc": None, "pr_auc": None, "flows_per_s": None}


def test_goals_without_evidence_are_not_measured():
    # nothing at all: no observable step, no benign flow, nothing detected
    g = goals(_ev(detectors=[dict(RULE, false_per_10k=None)]))
    assert [met for _, met, _ in g] == [None, None, None]
    assert all("not measured" in detail for _, _, detail in g)
    text = _printed(_ev(detectors=[dict(RULE, false_per_10k=None)]))
    assert "✔" not in text and text.count("not measured") == 3
    # steps that were all missed: recall is measured (and failed), TTD is not measured
    g = dict((goal.split()[1], (met, d)) for goal, met, d in
             goals(_ev([_tech("T1046", 3, 0, None)], [RULE], benign=23_118)))
    assert g["technique"] == (False, "below: T1046 0.00 (0/3); overall recall 0.00 "
                                     "(0/3 steps, 1 technique)")
    assert g["detectors:"] == (True, "all met, 0 on 23,118 benign flows (95 % upper bound "
                                     "1.30 per 10k)")
    assert g["time"][0] is None and "no scan, flood or brute-force step detected" in g["time"][1]


def test_goals_with_evidence_show_it():
    g = goals(_ev([_tech("T1046", 20, 19, 1.5), _tech("T1110.001", 2, 2, 3.0)],
                  [RULE, dict(RULE, detector="iforest", kind="learned", false_per_10k=30.0)],
                  benign=23_118))
    (recall, fa, ttd) = g
    assert recall[1] and "recall 0.95 (21/22 steps, 2 techniques)" in recall[2]
    assert fa[1] and "on 23,118 benign flows" in fa[2]
    assert ttd[1] and "over 21 detected steps of 2 techniques" in ttd[2]


def test_the_rule_false_alert_goal_is_zero_and_needs_20000_benign_flows():
    (_, fa, _) = goals(_ev([_tech("T1046", 2, 2, 1.0)], [RULE], benign=5_000))
    assert fa[1] is None and "not measured: 0 false alerts but only on 5,000" in fa[2]
    noisy = dict(RULE, detector="password-spray", false=1, false_per_10k=0.42)
    (_, fa, _) = goals(_ev([_tech("T1046", 2, 2, 1.0)], [RULE, noisy], benign=23_950))
    assert fa[1] is False and "password-spray 1 false alerts on 23,950" in fa[2]


# -- runs whose attack steps errored, or sent nothing -------------------------------------------

def test_eval_of_an_errored_drill_is_not_evaluable_exit_1(tmp_path):
    run = craft_run(tmp_path / "runs" / "crashed", scan=True)
    ledger = [dict(r, outcome="error", error="actor namespace gone", packets_sent=0, flows=[])
              for r in _ledger(run)]
    _rewrite(run, ledger, status="failed",
             error="1 of 1 attack steps ended in error (scan; the reasons are in ledger.jsonl)")
    r = cli("detect", "eval", run, "--only", "vertical-portscan")
    assert r.returncode == 1, r.stdout + r.stderr
    text = " ".join(r.stdout.split())               # rich wraps at the terminal's width
    assert "status 'failed': 1 of 1 attack steps ended in error" in text
    assert "not evaluable for recall" in text
    assert "✔" not in text and "all met" not in text and text.count("not measured") >= 3
    assert "no run could be evaluated" in r.stderr


def test_eval_of_a_drill_whose_steps_sent_nothing_measures_no_recall(tmp_path):
    run = craft_run(tmp_path / "runs" / "stopped", scan=True)
    # the step was stopped before it sent anything: nothing of it was captured
    ledger = [dict(r, outcome="stopped", packets_sent=0, flows=[], start=T0 + 58, end=T0 + 58.1)
              for r in _ledger(run)]
    _rewrite(run, ledger)
    out = tmp_path / "ev.json"
    r = cli("detect", "eval", run, "--only", "vertical-portscan", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    ev = json.loads(out.read_text())
    (row,) = ev["techniques"]
    assert (row["steps"], row["unobservable"], row["recall"]) == (0, 1, None)
    (line,) = [x for x in r.stdout.splitlines() if "technique recall" in x]
    assert "not measured (0 observable attack steps)" in line and "✔" not in line
    (line,) = [x for x in r.stdout.splitlines() if "median time to detect" in x]
    assert "not measured" in line and "✔" not in line


def test_a_cut_short_step_whose_packets_were_captured_is_counted_not_unseen(scan_run):
    # the scan ended in error half-way, but its packets are in the store: missed or detected,
    # never unseen (an errored step whose packets no sensor captured would be unseen)
    run_ledger = [dict(r, outcome="error", error="agent died") for r in _ledger(scan_run)]
    from cyberrange.score.evaluate import RunData, _Corpus
    corpus = _Corpus([])
    corpus.add_run(RunData(scan_run, "scan", None, None, "drill", 0.0, run_ledger,
                           _flows(scan_run)))
    t = corpus.techniques["T1046"]
    assert (t["counted"], t["unobservable"], t["detected"]) == (1, 0, 0)
