"""Tune the incident correlator's settings on a TUNING split, then measure them on held-out runs.

    # tune: sweep incidents.Settings over the tuning runs, print the best and the current ones
    .venv/bin/python bench/incident_tuning.py tune \\
        --attack /work/runs-corpus-2026-12-06/tuning --envelope /work/runs-envelope/tuning \\
        --benign /work/runs-benign/tuning/* --json tuning.json
    # measure: the shipped settings (incidents.Settings defaults) on held-out runs, no sweep
    .venv/bin/python bench/incident_tuning.py measure \\
        --attack /work/runs-corpus-2026-12-06/eval --benign /work/runs-benign/eval/*

No twin: every run's stored records are re-scored by the detectors of ``--detectors`` exactly as
``detect eval`` does (``score.evaluate._load_run``: trainable detectors learn from the run's own
warm-up, the warm-up is left out), once per run; then only the correlator runs per setting.

**Three kinds of run.** ``--attack``: playbook drills -- a run counts as recalled when some true
incident exists (``detect eval``'s incident recall). ``--envelope``: envelope drills (many
actors and techniques in one run) -- what counts is the share of observable steps tied into
some incident. ``--benign``: benign-only drills -- every incident is false.

**Known benign patterns.** ``tune`` adds the benign patterns earlier tuning runs showed that are
no longer stored (``known_benign``: an operator's day) as benign runs.

**Rules blind.** Every attack run is also scored as if every rule and statistical detector had
missed it (only learned alerts and signals left): with a rule alert any settings raise an
incident, so these copies are what tells the settings apart on the attack side.

**What the settings decide.** A rule or statistical alert raises an incident whatever the
settings; the settings decide (a) which groups of signals and learned anomalies are raised,
(b) how observations are grouped. So false incidents are split into *by rule* (a rule false
alert: the detectors' problem, constant here) and *by signals* (raised without a rule alert: the
correlator's problem), and the sweep minimises, in order: false incidents raised by signals
(tuning runs of every kind), attack runs not recalled, envelope steps not in an incident,
attack runs whose steps are split over several incidents, rules-blind runs not recalled and
their steps not in an incident, then the distance to the current defaults (no change without
evidence).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa
import pyarrow.compute as pc

from cyberrange.detect.incidents import (
    Settings,
    correlate,
    learned_categories,
    observations,
)
from cyberrange.score.evaluate import _after, _load_run, expand_runs
from cyberrange.score.incidents import _observation_steps
from cyberrange.score.score import group_steps, observable
from cyberrange.telemetry.schema import ALERT_SCHEMA

#: the sweep: every combination of these values (the other settings stay as shipped)
GRID = {
    "threshold": [0.5, 0.6, 0.7, 0.8, 0.9],
    "min_detectors": [2, 3],
    "stage_bonus": [0.15, 0.25, 0.35],
    "stage_floor": [0.2, 0.3, 0.4, 0.5],
    "progression": [True, False],
    "learned_weight": [0.3, 0.4, 0.5],
    "link_window_s": [120.0, 300.0, 900.0, 1800.0],
    "pivot_window_s": [300.0, 900.0, 1800.0, 3600.0],
}


@dataclasses.dataclass
class Case:
    """One run, scored by the detectors once: what the correlator and the scoring need."""
    name: str
    kind: str                   # attack | envelope | benign
    playbook: str | None
    alerts: pa.Table
    signals: pa.Table
    tied: dict                  # observation id -> step ids (ground truth, score/ side)
    steps: set                  # observable step ids


def load(paths: list[str], kind: str, detectors) -> list[Case]:
    runs = expand_runs(paths, note=lambda t: print(f"note: {t}", file=sys.stderr))
    out = []
    for run in runs:
        if run.manifest.get("status") != "done":
            print(f"note: skipping {run.dir}: status {run.manifest.get('status')}",
                  file=sys.stderr)
            continue
        t0 = time.monotonic()
        rd = _load_run(run, detectors, None, 0.0)
        start = rd.window_start_us
        names = [d.name for d in detectors]
        alerts = pa.concat_tables([_after(rd.alerts[n], start) for n in names]) \
            if names else ALERT_SCHEMA.empty_table()
        signals = pa.concat_tables([_after(rd.signals[n], start) for n in names]) \
            if names else ALERT_SCHEMA.empty_table()
        flows = _after(rd.flows, start)
        tied = _observation_steps(rd.ledger, flows, [alerts, signals], 2.0)
        steps = {s["step_id"] for s in group_steps(rd.ledger) if observable(s)}
        out.append(Case(run.dir.name, kind if steps or kind == "benign" else "benign",
                        rd.playbook, alerts, signals, dict(tied), steps))
        if kind == "attack" and steps:
            out.append(blind(out[-1]))
        print(f"  {kind:8} {run.dir.name}: {alerts.num_rows} alerts, {signals.num_rows} "
              f"signals, {len(steps)} steps ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return out


def known_benign() -> list[Case]:
    """Benign patterns earlier tuning runs showed that are no longer stored (docs/incidents.md):
    an operator's day -- one workstation's logins read as a spray-like round, as a few guesses
    and as a first-seen admin edge, plus a faint rhythm (a beacon near-miss of 0.25) to the
    same server. tests/detect/test_incidents.py holds the same case."""
    from datetime import datetime, timedelta, timezone

    from cyberrange.detect.base import Alert, alerts_to_table
    t0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    ws, srv = "10.73.0.66", "10.73.0.10"
    day = []
    for t, rule, tech, dst, score in ((0, "password-spray", "T1110.003", None, 0.8),
                                      (1, "login-bruteforce", "T1110.001", srv, 0.6),
                                      (2, "first-seen-admin-edge", "T1078", srv, 0.5),
                                      (9, "c2-beacon", "T1071.001", srv, 0.25)):
        a = Alert(timestamp=t0 + timedelta(seconds=t), start=t0 + timedelta(seconds=t),
                  end=t0 + timedelta(seconds=t + 1), rule_name=rule, rule_category=rule,
                  technique=tech, source_ip=ws, destination_ip=dst, message="", score=score,
                  flow_ids=[f"{rule}-{t}"])
        a.kind, a.dataset = "signal", "cyberrange.signal"
        day.append(a)
    return [Case("known: an operator's day", "benign", None, alerts_to_table([]),
                 alerts_to_table(day), {}, set())]


def blind(case: Case) -> Case:
    """The run as if every rule and statistical detector had missed it: only the learned
    detectors' alerts and the weak signals are left -- the case the settings decide alone
    (with a rule alert, any settings raise the incident)."""
    keep = pc.is_in(case.alerts.column("rule.category"),
                    value_set=pa.array(sorted(learned_categories()), pa.string()))
    return dataclasses.replace(case, name=case.name + " (rules blind)", kind="blind",
                               alerts=case.alerts.filter(keep))


def outcome(case: Case, s: Settings) -> dict:
    """What the correlator with ``s`` makes of one run, against its ground truth."""
    incs = correlate(observations(case.alerts, case.signals, s), s)
    covered, true_n, false_rule, false_sig, best = set(), 0, 0, 0, 0
    for inc in incs:
        mine = set()
        for o in inc.observations:
            mine |= case.tied.get(o.id, set())
        mine &= case.steps
        if mine:
            true_n += 1
            covered |= mine
            best = max(best, len(mine))
        elif any(o.raises for o in inc.observations):
            false_rule += 1
        else:
            false_sig += 1
    return {"incidents": len(incs), "true": true_n, "false_rule": false_rule,
            "false_signals": false_sig, "steps": len(case.steps), "covered": len(covered),
            "recalled": bool(true_n), "whole": bool(case.steps) and best == len(case.steps)}


def tally(cases: list[Case], s: Settings) -> dict:
    t = defaultdict(int)
    per_pb: dict = defaultdict(lambda: [0, 0])
    rows = []
    for c in cases:
        o = outcome(c, s)
        rows.append({"run": c.name, "kind": c.kind, "playbook": c.playbook, **o})
        t["false_signals"] += o["false_signals"]
        t["false_rule"] += o["false_rule"]
        if c.kind == "benign":
            t["benign_runs"] += 1
            t["benign_incidents"] += o["incidents"]
        elif c.kind == "attack":
            t["attack_runs"] += 1
            t["recalled"] += o["recalled"]
            t["whole"] += o["whole"]
            per_pb[c.playbook][0] += o["recalled"]
            per_pb[c.playbook][1] += 1
        elif c.kind == "blind":
            t["blind_runs"] += 1
            t["blind_recalled"] += o["recalled"]
            t["blind_steps"] += o["steps"]
            t["blind_covered"] += o["covered"]
        else:
            t["env_steps"] += o["steps"]
            t["env_covered"] += o["covered"]
    return {"totals": dict(t), "per_playbook": {k: f"{a}/{b}" for k, (a, b) in
                                                sorted(per_pb.items())}, "runs": rows}


def _key(t: dict) -> tuple:
    tt = t["totals"]
    return (tt.get("false_signals", 0), tt.get("attack_runs", 0) - tt.get("recalled", 0),
            tt.get("env_steps", 0) - tt.get("env_covered", 0),
            tt.get("attack_runs", 0) - tt.get("whole", 0),
            tt.get("blind_runs", 0) - tt.get("blind_recalled", 0),
            tt.get("blind_steps", 0) - tt.get("blind_covered", 0))


def sweep(cases: list[Case]) -> tuple[Settings, dict, int]:
    """The best settings of GRID (``_key``, then the fewest changes from the shipped ones),
    and for every knob the values that reach the same best result (the others at the best):
    how wide the tuning data leave each choice."""
    base = Settings()
    results = {}
    for combo in itertools.product(*GRID.values()):
        s = dataclasses.replace(base, **dict(zip(GRID, combo)))
        dist = sum(getattr(s, k) != getattr(base, k) for k in GRID)
        results[combo] = (_key(tally(cases, s)), dist)
    best_combo = min(results, key=lambda c: results[c])
    best_key = results[best_combo][0]
    best = dataclasses.replace(base, **dict(zip(GRID, best_combo)))
    ties = {}
    for i, k in enumerate(GRID):
        ties[k] = [v for v in GRID[k] if results[best_combo[:i] + (v,) + best_combo[i + 1:]][0]
                   == best_key]
    return best, ties, len(results)


def _show(label: str, t: dict) -> None:
    tt = t["totals"]
    print(f"{label}: attack runs recalled {tt.get('recalled', 0)}/{tt.get('attack_runs', 0)} "
          f"(whole intrusion in one incident: {tt.get('whole', 0)}); envelope steps in incidents "
          f"{tt.get('env_covered', 0)}/{tt.get('env_steps', 0)}; false incidents raised by "
          f"signals {tt.get('false_signals', 0)}, by a rule false alert {tt.get('false_rule', 0)}; "
          f"incidents per benign run {tt.get('benign_incidents', 0)}/{tt.get('benign_runs', 0)}; "
          f"rules blind: runs recalled {tt.get('blind_recalled', 0)}/{tt.get('blind_runs', 0)}, "
          f"steps in incidents {tt.get('blind_covered', 0)}/{tt.get('blind_steps', 0)}")
    if t["per_playbook"]:
        print("  per playbook: " + ", ".join(f"{k} {v}" for k, v in t["per_playbook"].items()))
    for r in t["runs"]:
        if r["false_signals"] or r["false_rule"] or (r["kind"] in ("attack", "blind")
                                                     and not r["recalled"]) \
                or (r["kind"] == "envelope" and r["covered"] < r["steps"]):
            print(f"  {r['kind']} {r['run']}: {r['incidents']} incidents, {r['true']} true, "
                  f"false by rule {r['false_rule']}, by signals {r['false_signals']}, steps "
                  f"{r['covered']}/{r['steps']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["tune", "measure"])
    ap.add_argument("--attack", nargs="*", default=[], help="playbook drills (folders of runs)")
    ap.add_argument("--envelope", nargs="*", default=[], help="envelope drills")
    ap.add_argument("--benign", nargs="*", default=[], help="benign-only drills")
    ap.add_argument("--detectors", default=str(ROOT / "detectors"))
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    from cyberrange.detect.registry import load_detectors
    dets = load_detectors(a.detectors)
    cases = (load(a.attack, "attack", dets) if a.attack else []) + \
        (load(a.envelope, "envelope", dets) if a.envelope else []) + \
        (load(a.benign, "benign", dets) if a.benign else [])
    if a.action == "tune":
        cases += known_benign()
    current = Settings()
    now = tally(cases, current)
    _show(f"shipped settings {dataclasses.asdict(current)}", now)
    out = {"action": a.action, "settings": dataclasses.asdict(current), "result": now}
    if a.action == "tune":
        t0 = time.monotonic()
        best, ties, tried = sweep(cases)
        res = tally(cases, best)
        changed = {k: (getattr(current, k), getattr(best, k)) for k in Settings.names()
                   if getattr(current, k) != getattr(best, k)}
        _show(f"best of {tried} settings ({time.monotonic() - t0:.0f} s); changed "
              f"{changed or 'nothing'}", res)
        print("  values as good as the best, per knob (the others at the best): "
              + "; ".join(f"{k} {v}" for k, v in ties.items()))
        out.update(best=dataclasses.asdict(best), best_result=res, changed=changed,
                   tried=tried, ties=ties)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
