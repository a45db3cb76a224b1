"""Evaluation results (``score/evaluate.py``) as terminal tables (rich) and as Markdown."""
from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

GOAL_RECALL = 0.9
GOAL_FALSE_PER_10K = 1.0
GOAL_MIN_BENIGN_FLOWS = 20_000
GOAL_TTD_S = 10.0
FAST_TECHNIQUES = ("T1046", "T1018", "T1110", "T1498", "T1499")   # scans, brute force, floods


def _f(v, fmt="{:.2f}", none="—"):
    return none if v is None else fmt.format(v)


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _tech_cells(r: dict) -> list[str]:
    extra = []
    if r.get("blocked"):
        extra.append(f"{r['blocked']} blocked, {r['blocked_detected']} det.")
    if r["unobservable"]:
        extra.append(f"{r['unobservable']} unseen")
    if r.get("late"):
        extra.append(f"{r['late']} late")
    return [r["technique"], str(r["steps"]) + (f" (+{'; '.join(extra)})" if extra else ""),
            str(r["detected"]), _f(r["recall"]), _f(r["precision"]),
            _f(r["false_per_10k"]), _f(r["median_ttd_s"], "{:.1f} s"),
            ", ".join(f"{k} {v}" for k, v in list(r["detected_by"].items())[:3]) or "—"]


TECH_HEAD = ["technique", "steps", "detected", "recall", "precision", "false/10k benign",
             "median TTD", "detected by (steps)"]
DET_HEAD = ["detector", "family", "kind", "alerts", "true", "false", "false/10k benign",
            "precision", "steps detected", "median TTD", "ROC-AUC", "PR-AUC", "flows/s"]


def _det_cells(r: dict) -> list[str]:
    return [r["detector"], r["family"], r["kind"], str(r["alerts"]), str(r["true"]),
            str(r["false"]), _f(r["false_per_10k"]), _f(r["precision"]),
            str(r["steps_detected"]), _f(r["median_ttd_s"], "{:.1f} s"), _f(r["roc_auc"], "{:.3f}"),
            _f(r["pr_auc"], "{:.3f}"), _f(r["flows_per_s"], "{:,.0f}")]


def technique_table(ev: dict) -> Table:
    t = Table(title="Per technique (all detectors)", box=box.SIMPLE_HEAVY, title_justify="left")
    for h in TECH_HEAD:
        t.add_column(h, justify="left" if h in ("technique", "detected by (steps)") else "right")
    for r in ev["techniques"]:
        cells = _tech_cells(r)
        if r["attack_id"] and r["recall"] is not None:
            colour = "green" if r["recall"] >= GOAL_RECALL else "red"
            cells[3] = f"[{colour}]{cells[3]}[/]"
        t.add_row(*cells)
    return t


def detector_table(ev: dict) -> Table:
    t = Table(title="Per detector", box=box.SIMPLE_HEAVY, title_justify="left")
    for h in DET_HEAD:
        t.add_column(h, justify="left" if h in ("detector", "family", "kind") else "right")
    for r in ev["detectors"]:
        cells = _det_cells(r)
        if r["false_per_10k"] is not None and r["kind"] == "rule":
            colour = "green" if r["false_per_10k"] < GOAL_FALSE_PER_10K else "red"
            cells[6] = f"[{colour}]{cells[6]}[/]"
        t.add_row(*cells)
    return t


def coverage_table(ev: dict) -> Table:
    """ATT&CK coverage matrix: techniques x detectors, steps detected / steps."""
    names = [r["detector"] for r in ev["detectors"]]
    used = [n for n in names if any(n in row for row in ev["coverage"].values())]
    t = Table(title="ATT&CK coverage (steps detected / steps)", box=box.SIMPLE,
              title_justify="left")
    t.add_column("technique")
    for n in used:
        t.add_column(n, justify="center")
    for tech, row in ev["coverage"].items():
        cells = []
        for n in used:
            v = row.get(n)
            if not v:
                cells.append("[dim]·[/]")
                continue
            d, total = (int(x) for x in v.split("/"))
            colour = "green" if total and d / total >= GOAL_RECALL else "yellow"
            cells.append(f"[{colour}]{v}[/]")
        t.add_row(tech, *cells)
    return t


def corpus_table(ev: dict) -> Table:
    t = Table(title="Runs", box=box.SIMPLE, title_justify="left")
    for h in ("run", "kind", "topology", "playbook", "flows", "benign", "attack", "steps",
              "detected", "false alerts"):
        t.add_column(h, justify="right" if h in ("flows", "benign", "attack", "steps",
                                                  "detected", "false alerts") else "left")
    for r in ev["runs"]:
        t.add_row(r["run_id"], r["kind"], r["topology"] or "", r["playbook"] or "—",
                  str(r["flows"]), str(r["benign_flows"]), str(r["attack_flows"]),
                  str(r["steps"]), str(r["detected"]), str(r["false_alerts"]))
    return t


def goals(ev: dict) -> list[tuple[str, bool | None, str]]:
    """The issue's goals checked against an evaluation: (goal, met, detail). ``met`` is None
    when the goal had no evidence (no observable step, no benign flow, nothing detected): it
    is *not measured*, never met. The detail names the evidence behind it."""
    out = []
    attack = [r for r in ev["techniques"] if r["attack_id"] and r["steps"]]
    n_steps = sum(r["steps"] for r in attack)
    n_det = sum(r["detected"] for r in attack)
    goal = f"every technique recall >= {GOAL_RECALL}"
    if not n_steps:
        out.append((goal, None, "not measured (0 observable attack steps)"))
    else:
        low = [f"{r['technique']} {_f(r['recall'])} ({r['detected']}/{r['steps']})"
               for r in attack if (r["recall"] or 0) < GOAL_RECALL]
        evidence = (f"recall {n_det / n_steps:.2f} ({n_det}/{n_steps} steps, "
                    f"{_n(len(attack), 'technique')})")
        out.append((goal, not low, (f"all met, {evidence}" if not low else
                                     "below: " + ", ".join(low) + f"; overall {evidence}")))
    benign = ev["totals"].get("benign_flows") or 0
    rules = [r for r in ev["detectors"] if r["kind"] == "rule"]
    goal = (f"rule detectors: 0 false alerts (on >= {GOAL_MIN_BENIGN_FLOWS:,} benign flows, so "
            "the bound means something)")
    if not benign or not rules:
        out.append((goal, None, "not measured (" + ("0 benign flows" if not benign
                                                    else "no rule detector") + ")"))
    else:
        noisy = [f"{r['detector']} {r['false']}" for r in rules if (r.get("false") or 0) > 0]
        evidence = f"on {benign:,} benign flows"
        if noisy:
            out.append((goal, False, "above: " + ", ".join(noisy) + f" false alerts {evidence}"))
        elif benign < GOAL_MIN_BENIGN_FLOWS:
            out.append((goal, None, f"not measured: 0 false alerts but only {evidence} "
                                    f"(95 % upper bound {30_000 / benign:.2f} per 10k)"))
        else:
            out.append((goal, True, f"all met, 0 {evidence} (95 % upper bound "
                                    f"{30_000 / benign:.2f} per 10k)"))
    fast = [r for r in attack if r["attack_id"].startswith(FAST_TECHNIQUES)]
    timed = [r for r in fast if r["median_ttd_s"] is not None]
    goal = f"median time to detect <= {GOAL_TTD_S:g} s for scans, floods, brute force"
    if not timed:
        out.append((goal, None, "not measured (" + (
            "no scan, flood or brute-force step detected" if fast
            else "no observable scan, flood or brute-force step") + ")"))
    else:
        slow = [f"{r['technique']} {r['median_ttd_s']:.1f} s" for r in timed
                if r["median_ttd_s"] > GOAL_TTD_S]
        n_timed = sum(r["detected"] for r in timed)
        untimed = [r["technique"] for r in fast if r["median_ttd_s"] is None]
        evidence = (f"over {_n(n_timed, 'detected step')} of {_n(len(timed), 'technique')}"
                    + (f"; not measured: {', '.join(untimed)}" if untimed else ""))
        out.append((goal, not slow, (f"all met {evidence}" if not slow
                                     else "slower: " + ", ".join(slow) + f"; {evidence}")))
    out += incident_goals(ev["totals"].get("incidents"))
    return out


def incident_goals(inc: dict | None) -> list[tuple[str, bool | None, str]]:
    """Issue 15's incident goals: every playbook becomes an incident; no incident on a benign
    run. None when the evaluation has no incident section (made before incidents existed)."""
    if inc is None:
        return []
    out = []
    goal = "every playbook becomes an incident"
    rows = inc.get("per_playbook") or []
    if not rows:
        out.append((goal, None, "not measured (no run with an observable attack step)"))
    else:
        missed = [f"{r['playbook']} {r['incident']}/{r['runs']}" for r in rows
                  if r["incident"] < r["runs"]]
        evidence = (f"{sum(r['incident'] for r in rows)}/{inc['attack_runs']} runs of "
                    f"{_n(len(rows), 'playbook')}")
        out.append((goal, not missed, f"all met, {evidence}" if not missed else
                    "no incident: " + ", ".join(missed) + f"; {evidence}"))
    goal = "0 incidents per benign run"
    if not inc.get("benign_runs"):
        out.append((goal, None, "not measured (no benign run)"))
    else:
        n, runs = inc["benign_incidents"], inc["benign_runs"]
        out.append((goal, n == 0, f"{n} incidents on {_n(runs, 'benign run')}"))
    return out


INC_HEAD = ["playbook", "runs", "became an incident", "incident recall", "steps in incidents",
            "all steps in one", "incidents", "false incidents"]


def _inc_cells(r: dict) -> list[str]:
    return [r["playbook"], str(r["runs"]), str(r["incident"]), _f(r["recall"]),
            f"{r['steps_in_incidents']}/{r['steps']}", f"{r['one_incident']}/{r['runs']}",
            str(r["incidents"]), str(r["false"])]


def incident_table(ev: dict) -> Table | None:
    inc = ev["totals"].get("incidents")
    if not inc or not inc.get("per_playbook"):
        return None
    t = Table(title="Incidents per playbook (alerts + weak signals, correlated)",
              box=box.SIMPLE_HEAVY, title_justify="left")
    for h in INC_HEAD:
        t.add_column(h, justify="left" if h == "playbook" else "right")
    for r in inc["per_playbook"]:
        cells = _inc_cells(r)
        cells[3] = f"[{'green' if r['recall'] == 1 else 'red'}]{cells[3]}[/]"
        t.add_row(*cells)
    return t


def goal_mark(met: bool | None, rich: bool = True) -> str:
    if met is None:
        return "[yellow]–[/]" if rich else "–"
    if rich:
        return "[green]✔[/]" if met else "[red]✘[/]"
    return "✔" if met else "✘"


def not_evaluable(sk: dict) -> str:
    """One line for a run ``evaluate`` left out (its status is not ``done``)."""
    why = f": {sk['error']}" if sk.get("error") else ""
    return (f"{sk['dir']}: status {sk['status']!r}{why}: not evaluable for recall "
            "(left out of every count)")


def late_lines(ev: dict) -> list[str]:
    """One line per step detected only after its end + late_s (not counted in recall)."""
    tot = ev["totals"]
    return [f"{x['run_id']} {x['step_id']} ({x['technique']}): by {', '.join(x['late_by'])} "
            f"{x['late_detect_s']:.1f} s after its start, later than {tot.get('late_s', 10):g} s"
            " after its end" for x in tot.get("late_steps") or []]


def print_evaluation(ev: dict, console) -> None:
    tot = ev["totals"]
    console.print(corpus_table(ev))
    console.print(technique_table(ev))
    console.print(detector_table(ev))
    console.print(coverage_table(ev))
    it = incident_table(ev)
    if it is not None:
        console.print(it)
    console.print(f"{tot['runs']} runs, {tot['flows']:,} flows ({tot['benign_flows']:,} benign, "
                  f"{tot['attack_flows']:,} attack), {tot['steps']} observable steps, "
                  f"{tot['detected']} detected on time"
                  + (f", {tot['late']} only late" if tot.get("late") else ""))
    for line in late_lines(ev):
        console.print("[yellow]late[/] " + escape(line))
    for sk in tot.get("skipped_runs") or []:
        console.print("[yellow]skipped[/] " + escape(not_evaluable(sk)))
    for goal, met, detail in goals(ev):
        console.print(f"  {goal_mark(met)} {goal}: {escape(detail)}")


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def evaluation_markdown(ev: dict) -> str:
    tot = ev["totals"]
    names = [r["detector"] for r in ev["detectors"]]
    used = [n for n in names if any(n in row for row in ev["coverage"].values())]
    parts = [
        f"{tot['runs']} runs, {tot['flows']:,} flows in the evaluation windows "
        f"({tot['benign_flows']:,} benign, {tot['attack_flows']:,} attack), "
        f"{tot['steps']} observable attack steps, {tot['detected']} detected on time"
        + (f", {tot['late']} only late (more than {tot.get('late_s', 10):g} s after the step "
           "ended; not in recall)" if tot.get("late") else "") + ".",
        *[f"- late: {line}" for line in late_lines(ev)],
        *[f"- not evaluated: {not_evaluable(sk)}" for sk in tot.get("skipped_runs") or []],
        "", "### Goals", "",
        *[f"- {goal_mark(met, rich=False)} {goal}: {detail}" for goal, met, detail in goals(ev)],
        "", "### Per technique", "",
        _md_table(TECH_HEAD, [_tech_cells(r) for r in ev["techniques"]]),
        "", "### Per detector", "",
        _md_table(DET_HEAD, [_det_cells(r) for r in ev["detectors"]]),
        "", "### ATT&CK coverage (steps detected / steps)", "",
        _md_table(["technique"] + used,
                  [[tech] + [row.get(n, "·") for n in used]
                   for tech, row in ev["coverage"].items()]),
        *(["", "### Incidents per playbook", "",
           _md_table(INC_HEAD, [_inc_cells(r) for r in
                                (tot.get("incidents") or {}).get("per_playbook") or []])]
          if (tot.get("incidents") or {}).get("per_playbook") else []),
        "", "### Runs", "",
        _md_table(["run", "kind", "topology", "playbook", "flows", "benign", "attack", "steps",
                   "detected", "false alerts"],
                  [[r["run_id"], r["kind"], r["topology"] or "", r["playbook"] or "—",
                    r["flows"], r["benign_flows"], r["attack_flows"], r["steps"], r["detected"],
                    r["false_alerts"]] for r in ev["runs"]]),
    ]
    return "\n".join(parts) + "\n"
