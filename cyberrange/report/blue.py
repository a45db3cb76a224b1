"""Terminal view of the scorecard's ``blue`` section (score/blue.py): one row per attack step
(detected, contained, prevented), then the score with its parts, the collateral and the
actions."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

PART_ORDER = ("detection", "containment", "prevention", "availability")


def _s(v) -> str:
    return "—" if v is None else f"{v:.1f} s"


def _yes(v, yes="yes", no="no") -> str:
    return f"[green]{yes}[/]" if v else f"[red]{no}[/]"


def _score_colour(score: float) -> str:
    return "green" if score >= 80 else "yellow" if score >= 50 else "red"


def blue_table(sec: dict) -> Table:
    """One row per attack step: detection (as the scorecard has it), containment, prevention."""
    score = sec.get("score")
    head = "no blue actions" if not sec.get("on_duty", True) else "not measured" \
        if score is None else f"[{_score_colour(score)}]{score:.1f}[/] / 100"
    t = Table(title=f"Blue scorecard: {head}", box=box.SIMPLE_HEAVY, title_justify="left")
    for h, j in (("step", "left"), ("technique", "left"), ("outcome", "left"),
                 ("detected", "center"), ("time to detect", "right"), ("contained", "center"),
                 ("time to contain", "right"), ("by", "left"), ("prevented", "center")):
        t.add_column(h, justify=j)
    acted = (sec.get("parts") or {}).get("containment", {}).get("measured")
    for r in sec.get("steps") or []:
        det = _yes(r.get("detected")) if r.get("observable", True) else "[dim]not observable[/]"
        if acted:
            cont = _yes(r.get("contained"))
            prev = _yes(r.get("prevented")) if r.get("after_containment") else "[dim]—[/]"
        else:
            cont = prev = "[dim]—[/]"
        t.add_row(escape(str(r.get("step_id"))), escape(str(r.get("technique") or "")),
                  escape(str(r.get("outcome") or "")), det, _s(r.get("time_to_detect_s")),
                  cont, _s(r.get("time_to_contain_s")), escape(str(r.get("contained_by") or "—")),
                  prev)
    return t


def summary_lines(sec: dict) -> list[str]:
    """The score as its formula, the collateral, the actions and the notes (rich markup)."""
    parts = sec.get("parts") or {}
    terms, missing = [], []
    for name in PART_ORDER:
        p = parts.get(name) or {}
        if p.get("measured"):
            terms.append(f"{name} {p['value']:.2f}×{p['weight']:g}")
        else:
            missing.append(name)
    pen = (sec.get("penalty") or {}).get("total") or 0
    score = sec.get("score")
    lines = []
    if not sec.get("on_duty", True):
        lines.append("[bold]no blue actions[/] (no action log, no response playbook): no blue "
                     "score" + (f"; measured: {', '.join(t.split('×')[0] for t in terms)}"
                                if terms else ""))
    elif score is None:
        lines.append("[bold]blue score[/]: not measured (no part of it could be measured)")
    else:
        lines.append(f"[bold]blue score {score:.1f}[/] = 100 × ({' + '.join(terms)}) / "
                     f"{sum(parts[n]['weight'] for n in PART_ORDER if n not in missing):g}"
                     + (f" − collateral {pen:g}" if pen else "")
                     + (f"   [dim]not measured: {', '.join(missing)}[/]" if missing else ""))
    lines += _collateral_lines(sec.get("collateral") or {})
    a = sec.get("actions") or {}
    if a.get("total"):
        lines.append(f"actions: {a['total']} ({a.get('applied', 0)} applied, "
                     f"{a.get('refused', 0)} refused, {a.get('failed', 0)} failed; "
                     f"{a.get('auto', 0)} automated, {a.get('manual', 0)} manual)")
    elif sec.get("on_duty", True):
        lines.append("actions: none taken")
    lines += [f"[dim]note: {escape(str(n))}[/]" for n in sec.get("notes") or []
              if "no blue actions" not in str(n)]
    return lines


def _collateral_lines(c: dict) -> list[str]:
    out = []
    n = c.get("benign_flows_blocked") or 0
    if n:
        by = ", ".join(f"{k}: {v}" for k, v in (c.get("benign_flows_blocked_by_action")
                                                 or {}).items())
        on_att = c.get("benign_flows_blocked_attackers") or 0
        out.append(f"[yellow]collateral[/]: {n} benign flows blocked ({by})"
                   + (f", {on_att} of them to or from an attacker (not penalised)"
                      if on_att else ""))
    lost = c.get("availability_lost_s") or {}
    if lost:
        by_action = c.get("availability_lost_by_action") or {}
        items = []
        for thread, secs in lost.items():
            who = sorted(a for a, d in by_action.items() if thread in d)
            items.append(f"{escape(thread)} {secs:.1f} s ({', '.join(who)})")
        out.append("[yellow]collateral[/]: mission availability lost to blue actions: "
                   + "; ".join(items))
    nodes = c.get("actions_on_non_attackers") or []
    if nodes:
        out.append("[yellow]collateral[/]: actions against non-attackers: " + ", ".join(
            f"{a['action']} {a['verb']} {escape(str(a['node']))}"
            + (" (compromised)" if a.get("compromised") else "") for a in nodes))
    return out


def print_blue(card: dict, console: Console | None = None) -> None:
    """The blue scorecard after the others; a one-line note for a plain red drill (blue is
    null), nothing for a scorecard from before the blue scorecard existed."""
    if "blue" not in card:
        return
    console = console or Console()
    sec = card["blue"]
    if not isinstance(sec, dict):
        console.print("[dim]Blue team: no blue actions and no availability probes: no blue "
                      "score[/]")
        return
    if sec.get("steps"):
        console.print(blue_table(sec))
    else:
        score = sec.get("score")
        head = "no blue actions" if not sec.get("on_duty", True) else "not measured" \
            if score is None else f"{score:.1f} / 100"
        console.print(f"[bold]Blue scorecard[/]: {head} (no attack steps)")
    for line in summary_lines(sec):
        console.print(line)
