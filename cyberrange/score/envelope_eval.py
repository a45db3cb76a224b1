"""Detection envelopes, part 2: recall against each drawn parameter (reads ground truth).

For every finished envelope drill the detectors are re-run on the stored records (exactly as
``detect eval`` does: ``evaluate._load_run``; the warm-up is the trainable detectors' baseline
and is left out for all), each step is scored against the ledger (``score_run``: detected *on
time*, i.e. by an alert no later than ``late_s`` = 10 s after the step's end) and joined with the
parameters drawn for it (the plan, ``envelope.json`` in the run folder). Then, per family:

* **bins** of the main parameter (``FAMILIES[f].main``, edges ``EDGES``): steps, detected,
  recall (any detector), recall of the rule and statistical detectors alone (learned detectors
  left out: they cost 15-50 false alerts per 10k benign flows), median time to detect;
* the **envelope**: from the easy end of the parameter (``harder`` says which end is hard)
  towards the hard end, the bins whose recall is >= 0.9 with at least ``MIN_N`` steps; the
  envelope ends at the first bin that fails (or has too few steps: not measured). It is
  reported as the edge of the last bin that passed ("rate >= 2.2 probes/s").

A step counts (is in recall) when packets of it were captured (attack flows in the store, or
ARP frames / success for a step without flows) and a firewall did not stop it (``blocked``):
the rule of ``evaluate._Corpus._add_steps``. Steps that do not count are listed by reason.
The page's curves and tables are drawn from these outcomes by ``envelope_report``.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pyarrow as pa

from .envelope import FAMILIES
from .envelope_today import today_envelopes
from .score import LATE_S, score_run

__all__ = [
    "EDGES",
    "MIN_N",
    "axis_rows",
    "benign_plan",
    "benign_targets",
    "bin_outcomes",
    "envelope",
    "evaluate_split",
    "family_table",
    "main_inside",
    "others_inside",
    "step_outcomes",
    "today_envelopes",
]

TARGET = 0.9
MIN_N = 2
#: bin edges of each family's main parameter (the last bin is open at the top)
EDGES = {    # bins around the thresholds (detectors/*.yaml; 4 added in session 26 where they fell to 4)
    "scan": [0.1, 1, 10], "sweep": [1, 6, 16], "arp-scan": [0.5, 1.6, 8], "guess": [2, 8, 16],
    "spray": [2, 7, 12], "udp-flood": [30, 250, 1000], "syn-flood": [30, 250, 1000],
    "http-beacon": [2, 8, 20, 45], "dns-beacon": [2, 8, 20, 45], "dns-exfil": [0.2, 1, 5],
    "upload": [4096, 65536, 196608], "modbus-write": [1, 3, 6], "valid-login": [0, 1],
    "modbus-read": [1, 4, 16], "modbus-hold": [0.5, 5, 20], "arp-poison": [1, 3, 10],
    "banner": [2, 4, 8, 12], "replay": [0.2, 1.4, 10],
    # the other axes (FAMILIES[f].also)
    "scan:probes": [1, 4, 8, 12], "sweep:rate": [0.5, 2, 10], "arp-scan:addresses": [1, 16, 64],
    "guess:pause": [0.05, 0.5, 2.5], "udp-flood:duration": [1, 2, 4],
    "syn-flood:duration": [1, 2, 4], "http-beacon:jitter": [0, 0.3, 0.6],
    "http-beacon:count": [3, 4, 8, 12], "dns-beacon:jitter": [0, 0.3, 0.6],
    "dns-beacon:count": [3, 8, 12], "dns-exfil:queries": [1, 10, 30],
    "modbus-hold:writes": [2, 3, 5], "arp-poison:interval": [0.3, 1, 3],
    "modbus-read:new_plcs": [0, 1],
}


# ---------------------------------------------------------------------------- per step
def _counts(s: dict, flowless: bool) -> tuple[bool, str | None]:
    """Whether a scored step is in recall, and why not (evaluate._Corpus._add_steps' rule;
    and a step that ended in ``error`` is left out: it did not run as drawn)."""
    if s["outcome"] == "error":
        return False, "error"
    captured = s["outcome"] != "skipped" and (
        s["attack_flows"] > 0 or (flowless and s.get("observable", True) and (
            s.get("arp_frames", 0) > 0 or s["outcome"] == "succeeded")))
    if not captured:
        return False, f"unseen ({s['outcome']})"
    if s["outcome"] == "blocked":
        return False, "blocked"
    return True, None


def _start(ledger: list, sid: str) -> float | None:
    t = [float(r["start"]) for r in ledger if r["step_id"] == sid and r.get("start") is not None]
    return min(t) if t else None


def benign_targets(benign: dict | None, host: str, key: str = "node",
                   service: str | None = None) -> set:
    """What ``host`` contacts in its benign day, by target ``key`` ("node" or "ip"), of one
    service type or any: the run's benign plan (``benign_plan``); none without one."""
    acts = ((benign or {}).get("plans") or {}).get(host, {}).get("activities", [])
    return {t.get(key) for a in acts for t in a.get("targets", [])
            if service is None or t.get("type") == service}


def benign_plan(run_dir) -> dict | None:
    """The run's ``logs/benign-plan.json``; None when it has none (no benign traffic)."""
    try:
        return json.loads((Path(run_dir) / "logs" / "benign-plan.json").read_text())
    except (OSError, ValueError):
        return None


def _merge_parts(row: dict, parts: list, by_id: dict, ledger: list, learned: set,
                 plan: dict, benign: dict | None) -> None:
    """A drawn step that several playbook steps make (valid-login and its hops from the entered
    host): it is detected on time when any of its steps is (each on its own time); its time to
    detect counts from its own start. ``hops`` becomes the hops that succeeded **onto a host the
    entered host never contacts in its benign day** (the run's benign plan): a hop over the
    entered host's own routine edge (a liaison laptop's daily SSH to the logistics server) is
    no first contact, which is what the pivot check keys on. ``hops_done`` counts every hop
    that succeeded (a failed or blocked hop made no onward session), ``hops_drawn`` the draw."""
    t0 = _start(ledger, row["step_id"])
    ttd = [row["ttd"]] if row["detected"] and row["ttd"] is not None else []
    done = new = 0
    for sid in parts:
        s = by_id.get(sid)
        if s is None:
            continue
        if s["outcome"] == "succeeded":
            done += 1
            hop = plan["steps"][sid]
            new += not set(hop["targets"]) <= benign_targets(benign, hop["actor"])
        if s["detected"]:
            row["detected"] = True
            row["by"] = sorted(set(row["by"]) | set(s["detected_by"]))
            t1 = _start(ledger, sid)
            if s["time_to_detect_s"] is not None and t0 is not None and t1 is not None:
                ttd.append(round(t1 - t0 + s["time_to_detect_s"], 3))
        elif s.get("detected_late"):
            row["late_by"] = sorted(set(row.get("late_by", [])) | set(s.get("late_by", [])))
    row["ttd"] = min(ttd) if ttd else None
    row["late"] = bool(row["late"] or row.get("late_by")) and not row["detected"]
    row["detected_rules"] = row["detected_rules"] or any(n not in learned for n in row["by"])
    row["params"]["hops_drawn"] = row["params"].get("hops", len(parts))
    row["params"]["hops_done"] = done
    row["params"]["hops"] = new


def new_plcs(targets, actor: str, benign: dict | None) -> int:
    """How many of the PLCs ``targets`` (names) the actor does not poll in its benign day
    (``logs/benign-plan.json`` of the run; no plan: every PLC is new)."""
    polled = benign_targets(benign, actor, service="modbus")
    return sum(1 for t in targets if t not in polled)


def step_outcomes(ledger: list, card: dict, plan: dict, kinds: dict, run_id: str,
                  benign: dict | None = None) -> list[dict]:
    """One row per planned step: its drawn parameters and what the detectors made of it.
    Steps ``part_of`` another (valid-login's hops) are merged into it (``_merge_parts``);
    valid-login drawn before generator 7 made no hop (``hops`` 0); modbus-read gets
    ``new_plcs`` from the run's benign plan (``benign``)."""
    rows = []
    by_id = {s["step_id"]: s for s in card["steps"]}
    parts: dict = {}
    for sid, p in plan["steps"].items():
        if p.get("part_of"):
            parts.setdefault(p["part_of"], []).append(sid)
    learned = {n for n, k in kinds.items() if k == "learned"}
    for sid, p in plan["steps"].items():
        if p.get("part_of"):
            continue
        s = by_id.get(sid)
        params = dict(p["params"])
        if p["family"] == "valid-login":
            params.setdefault("hops", 0)
        if p["family"] == "modbus-read":
            params["new_plcs"] = new_plcs(p["targets"], p["actor"], benign)
        row = {"run_id": run_id, "step_id": sid, "family": p["family"],
               "technique": p["technique"], "topology": plan["topology"],
               "intensity": plan["intensity"], "actor_role": p.get("actor_role"),
               "params": params, "quiet_before": p.get("quiet_before")}
        if s is None:
            rows.append({**row, "counted": False, "why": "not in ledger", "detected": False,
                         "detected_rules": False, "ttd": None, "by": [], "late": False})
            continue
        flowless = not any(r.get("flows") for r in ledger if r["step_id"] == sid)
        counted, why = _counts(s, flowless)
        rules = [n for n in s["detected_by"] if n not in learned]
        row = {**row, "counted": counted, "why": why, "outcome": s["outcome"],
               "detected": bool(s["detected"]), "detected_rules": bool(rules),
               "ttd": s["time_to_detect_s"], "by": s["detected_by"],
               "late": bool(s.get("detected_late")), "late_by": s.get("late_by", [])}
        if sid in parts:
            _merge_parts(row, parts[sid], by_id, ledger, learned, plan, benign)
        rows.append(row)
    return rows


def _after(table: pa.Table, start_us):
    from .evaluate import _after as after
    return after(table, start_us)


def _by_actor(rows: list[dict], ledger: list, alerts: pa.Table, slack_s: float = 2.0) -> None:
    """For steps without IP flows (ARP scans): the detectors that alerted on the step's actor
    during the step (+- slack, up to ``LATE_S`` after it), whatever flows the alert lists.
    ``score_run`` matches such steps only with alerts that list *no* flows; an ``arp-scan``
    alert on a busy actor lists the actor's own benign flows that followed its requests, and
    then detects nothing there. Shown beside the official count, never instead of it."""
    if not alerts.num_rows:
        return
    ts = [t.timestamp() for t in alerts.column("@timestamp").to_pylist()]
    src = alerts.column("source.ip").to_pylist()
    names = alerts.column("rule.name").to_pylist()
    for row in rows:
        recs = [r for r in ledger if r["step_id"] == row["step_id"]]
        if not recs or any(r.get("flows") for r in recs):
            continue
        ip = recs[0].get("actor_ip")
        lo = min(float(r["start"]) for r in recs) - slack_s
        hi = max(float(r["end"]) for r in recs) + LATE_S
        row["by_actor"] = sorted({n for t, s, n in zip(ts, src, names)
                                  if s == ip and lo <= t <= hi})


def _check_plan(run, plan: dict) -> None:
    """The plan must be the one of the playbook the drill ran: same hash (when recorded) and
    the same step ids as the ledger (every step writes a record, a skipped one too)."""
    from ..errors import UserError
    sha = ((run.manifest.get("inputs") or {}).get("playbook") or {}).get("sha256")
    if plan.get("playbook_sha256") and sha and plan["playbook_sha256"] != sha:
        raise UserError(f"{run.dir}/envelope.json: plan of another playbook (sha256 differs)")
    ran = {r["step_id"] for r in run.ledger()}
    if ran - set(plan["steps"]):
        raise UserError(f"{run.dir}/envelope.json: steps {sorted(ran - set(plan['steps']))} "
                        "ran but are not in the plan")


def evaluate_split(run_dirs, detectors, on_run=None) -> dict:
    """Re-run ``detectors`` on each finished run of a split and return its step outcomes."""
    from ..run import Run
    from ..telemetry.schema import ALERT_SCHEMA
    from .evaluate import _load_run
    kinds = {d.name: getattr(d, "kind", "rule") for d in detectors}
    outcomes, runs = [], []
    for i, d in enumerate(run_dirs):
        if on_run:
            on_run(i, len(run_dirs), Path(d))
        plan = json.loads((Path(d) / "envelope.json").read_text())
        run = Run.open(str(d))
        _check_plan(run, plan)
        rd = _load_run(run, detectors, None, 0.0)
        flows = _after(rd.flows, rd.window_start_us)
        tables = [_after(rd.alerts[n.name], rd.window_start_us) for n in detectors]
        alerts = pa.concat_tables(tables) if tables else ALERT_SCHEMA.empty_table()
        card = score_run(rd.ledger, flows, alerts, run_id=rd.run_id)
        rows = step_outcomes(rd.ledger, card, plan, kinds, rd.run_id, benign_plan(d))
        _by_actor(rows, rd.ledger, alerts)
        outcomes += rows
        runs.append({"run_id": rd.run_id, "name": plan["name"], "topology": plan["topology"],
                     "intensity": plan["intensity"], "steps": len(rows),
                     "counted": sum(r["counted"] for r in rows),
                     "benign_flows": card["flows"]["benign"],
                     "false_alerts": card["alerts"]["false"]})
    return {"runs": runs, "outcomes": outcomes, "late_s": LATE_S}


# ---------------------------------------------------------------------------- bins and envelope
def bin_outcomes(outcomes: list[dict], param: str, edges: list[float]) -> list[dict]:
    """Counted outcomes binned by ``params[param]``: bin k holds edges[k] <= x < edges[k+1]
    (the first bin also holds what lies below, the last everything above)."""
    bins = [{"lo": e, "hi": edges[k + 1] if k + 1 < len(edges) else None, "n": 0,
             "detected": 0, "detected_rules": 0, "ttd": [], "by": Counter()}
            for k, e in enumerate(edges)]
    for o in outcomes:
        if not o["counted"] or param not in o["params"]:
            continue
        x = float(o["params"][param])
        k = max([i for i, e in enumerate(edges) if x >= e] or [0])
        b = bins[k]
        b["n"] += 1
        b["detected"] += o["detected"]
        b["detected_rules"] += o["detected_rules"]
        if o["detected"] and o["ttd"] is not None:
            b["ttd"].append(o["ttd"])
        b["by"].update(o["by"])
    for b in bins:
        b["recall"] = round(b["detected"] / b["n"], 3) if b["n"] else None
        b["recall_rules"] = round(b["detected_rules"] / b["n"], 3) if b["n"] else None
        b["median_ttd"] = round(statistics.median(b["ttd"]), 1) if b["ttd"] else None
        b["by"] = dict(b["by"].most_common())
        del b["ttd"]
    return bins


def envelope(bins: list[dict], harder: str, key: str = "recall", target: float = TARGET,
             min_n: int = MIN_N) -> dict:
    """The range, from the easy end, where every bin has recall >= ``target`` on >= ``min_n``
    steps. ``{"edge": x, "side": ">=" | "<", "bins": k, "stop": why}``; edge None: no bin."""
    order = list(range(len(bins)))
    if harder == "high":        # easy end: low values
        side = "<"
    else:
        order.reverse()
        side = ">="
    passed, stop = [], "every bin passed"
    while order and not bins[order[0]]["n"]:     # nothing drawn at the easy end: start below
        order.pop(0)
    for k in order:
        b = bins[k]
        if b["n"] < min_n:
            stop = f"bin {_range_text(b)}: {b['n']} step(s), fewer than {min_n}"
            break
        if (b[key] or 0) < target:
            stop = f"bin {_range_text(b)}: recall {b[key]:.2f}"
            break
        passed.append(k)
    if not order:
        return {"edge": None, "side": side, "bins": 0, "all": False, "stop": "no step",
                "passed": []}
    if not passed:
        return {"edge": None, "side": side, "bins": 0, "all": False, "stop": stop, "passed": []}
    last = bins[passed[-1]]
    edge = last["lo"] if harder != "high" else last["hi"]
    return {"edge": edge, "side": side, "bins": len(passed), "all": len(passed) == len(order),
            "stop": stop, "passed": passed}


def _num(x) -> str:
    if x is None:
        return "∞"
    if x >= 10000:
        return f"{x / 1024:.0f} KiB" if x >= 4096 and x % 1024 == 0 else f"{x:,.0f}"
    return f"{x:g}"


def _range_text(b: dict) -> str:
    return f"[{_num(b['lo'])}, {_num(b['hi'])})"


def axes(family: str) -> list[tuple]:
    """The envelope axes of a family: (parameter, harder end, unit), the main one first."""
    f = FAMILIES[family]
    return [(f.main, f.harder, f.unit), *f.also]


def _axis(family: str, param: str | None) -> tuple:
    return next(a for a in axes(family) if param in (None, a[0]))


def envelope_text(env: dict, family: str, param: str | None = None) -> str:
    name, _, unit = _axis(family, param)
    if not env["bins"]:
        return f"none ({env['stop']})"
    if env["edge"] is None:
        return f"every {name} measured"
    return f"{name} {env['side']} {_num(env['edge'])} {unit}"


def _passed_rows(rows: list[dict], param: str, edges: list, env: dict) -> list[dict]:
    passed = set(env["passed"])
    return [o for o in rows if param in o["params"]
            and max([i for i, e in enumerate(edges) if float(o["params"][param]) >= e]
                    or [0]) in passed]


def _edges(family: str, param: str) -> list:
    return EDGES[family] if param == FAMILIES[family].main else EDGES[f"{family}:{param}"]


def main_inside(outcomes: list[dict], family: str) -> tuple[list[dict], str | None]:
    """A secondary axis is measured **inside the main axis's envelope**: the outcomes of
    ``family`` (counted or not) whose main parameter lies in a passed bin of the main axis's
    envelope (any detector) on these same outcomes, and that envelope's text. An envelope is a
    region: "at >= 8 guesses, every pause up to 5 s", not two separate promises each blurred
    by the steps the other excludes (2-guess steps would make every pause bin fail). When the
    main axis has no envelope, every outcome is kept (the axis is measured over all steps) and
    the text is None."""
    f = FAMILIES[family]
    mine = [o for o in outcomes if o["family"] == family]
    env = envelope(bin_outcomes(mine, f.main, EDGES[family]), f.harder)
    if not env["bins"]:
        return mine, None
    return _passed_rows(mine, f.main, EDGES[family], env), envelope_text(env, family, f.main)


def others_inside(outcomes: list[dict], family: str) -> tuple[list[dict], str | None]:
    """The main axis, when it has no envelope over all steps, is measured **inside the other
    axes' envelopes** (each of those over all steps, as ``main_inside`` then keeps every
    step): scans of 2-7 probes at 50 probes/s made every rate bin fail, while at >= 8 probes
    every rate is caught -- the region is "probes >= 8, every rate", not "no rate". Returns
    the outcomes of ``family`` inside every other axis that has an envelope and the text of
    those envelopes; all of them and None when the main axis has its own envelope or no other
    axis has one."""
    f = FAMILIES[family]
    mine = [o for o in outcomes if o["family"] == family]
    if not f.also or envelope(bin_outcomes(mine, f.main, EDGES[family]), f.harder)["bins"]:
        return mine, None
    rows, texts = mine, []
    for param, harder, _unit in f.also:
        edges = EDGES[f"{family}:{param}"]
        env = envelope(bin_outcomes(mine, param, edges), harder)
        if env["bins"]:
            texts.append(envelope_text(env, family, param))
            keep = {id(o) for o in _passed_rows(mine, param, edges, env)}
            rows = [o for o in rows if id(o) in keep]
    return (rows, " and ".join(texts)) if texts else (mine, None)


def axis_rows(outcomes: list[dict], family: str, param: str) -> tuple[list[dict], str | None]:
    """The outcomes an axis of ``family`` is measured on, and the envelope they lie inside
    (None: all of the family's): a secondary axis inside the main's envelope; the main axis
    over all steps, or inside the others' envelopes when it has none of its own."""
    if param == FAMILIES[family].main:
        return others_inside(outcomes, family)
    return main_inside(outcomes, family)


def family_table(outcomes: list[dict], family: str, param: str | None = None) -> dict:
    name, harder, _ = _axis(family, param)
    mine, given = axis_rows(outcomes, family, name)
    bins = bin_outcomes(mine, name, _edges(family, name))
    ttd = [o["ttd"] for o in mine if o["counted"] and o["detected"] and o["ttd"] is not None]
    return {"family": family, "param": name, "techniques": sorted({o["technique"] for o in mine}),
            "steps": len(mine), "counted": sum(o["counted"] for o in mine),
            "detected": sum(o["detected"] for o in mine if o["counted"]),
            "detected_rules": sum(o["detected_rules"] for o in mine if o["counted"]),
            "not_counted": dict(Counter(o["why"] for o in mine if not o["counted"])),
            "late": sum(o.get("late", False) for o in mine if o["counted"]),
            "runs": len({o["run_id"] for o in mine if o["counted"]}),
            "median_ttd": round(statistics.median(ttd), 1) if ttd else None,
            "given": given, "bins": bins, "envelope": envelope(bins, harder),
            "envelope_rules": envelope(bins, harder, key="recall_rules")}
