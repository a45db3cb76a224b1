"""Incidents in the terminal and in the HTML report: one row per incident with its chain of
hosts, the kill chain it reached (recon -> credential access -> lateral movement -> C2 ->
exfiltration / impact), its combined score and the explanation of each observation.

Two shapes come in: the stored incident records (``detect.incidents.incident_rows``: what
``cyberrange detect incidents`` shows, no ground truth) and the scorecard's ``incidents``
section (``score.incidents.score_incidents``: the same incidents with true/false and the steps
each holds, for the drill's red/blue views).
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from rich import box
from rich.console import Console
from rich.markup import escape as rescape
from rich.table import Table

from cyberrange.detect.incidents import STAGES

SHORT = {"recon": "recon", "credential-access": "cred", "lateral-movement": "lateral",
         "c2": "c2", "exfiltration": "exfil", "impact": "impact"}
SEVERITY_COLOURS = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}
HTML_SEVERITY = {"critical": "#b42318", "high": "#d62728", "medium": "#b26a00", "low": "#667085"}


def _reached(row: dict) -> list[str]:
    return list(row.get("stages") if isinstance(row.get("stages"), list)
                else row.get("threat.tactic.name") or [])


def kill_chain_text(reached: list[str]) -> str:
    """``recon ▸ cred ▸ [lateral] ...``: every stage, the reached ones in bold (rich markup)."""
    return " ▸ ".join(f"[bold]{SHORT[s]}[/]" if s in reached else f"[dim]{SHORT[s]}[/]"
                      for s in STAGES)


def _when(v) -> str:
    if isinstance(v, datetime):
        return f"{v.astimezone(timezone.utc):%H:%M:%S}"
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(v, timezone.utc).strftime("%H:%M:%S")
    return "—"


def _norm(row: dict) -> dict:
    """One incident in one shape, whichever of the two came in."""
    if "incident_id" in row:                       # the scorecard's rows
        return row
    return {"incident_id": row["cyberrange.incident_id"], "raised_at": row["@timestamp"],
            "score": row["cyberrange.score"], "severity": row["cyberrange.severity"],
            "entities": row["related.ip"], "stages": row["threat.tactic.name"],
            "pivots": row.get("pivots") or [], "summary": row["message"],
            "explanation": row["cyberrange.explanation"],
            "alerts": len(row["cyberrange.alert_ids"] or []),
            "signals": len(row["cyberrange.signal_ids"] or [])}


def incidents_table(rows: list[dict], title: str, truth: bool = False) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for h in ("incident", "raised (UTC)", "severity", "score", "hosts", "kill chain",
              "alerts", "signals") + (("true", "steps") if truth else ()):
        t.add_column(h, justify="right" if h in ("score", "alerts", "signals") else "left",
                     overflow="fold")
    for r in map(_norm, rows):
        hosts = " ⇒ ".join(dict.fromkeys(
            [r["entities"][0] if r["entities"] else "?"] + [p["host"] for p in r["pivots"]]))
        colour = SEVERITY_COLOURS.get(r["severity"], "")
        row = [r["incident_id"][:8], _when(r["raised_at"]), f"[{colour}]{r['severity']}[/]",
               f"{r['score']:.2f}", hosts, kill_chain_text(_reached(r)), str(r["alerts"]),
               str(r["signals"])]
        if truth:
            row += ["[green]yes[/]" if r.get("true") else "[red]no[/]",
                    ", ".join(r.get("steps") or []) or "—"]
        t.add_row(*row)
    return t


def print_incidents(rows: list[dict], console: Console, title: str, truth: bool = False,
                    lines: int = 12) -> None:
    """The incidents table, then each incident's summary and explanation (at most ``lines``
    observations each; the rest counted)."""
    if not rows:
        console.print(f"{title}: no incident (nothing linked reached the threshold)")
        return
    console.print(incidents_table(rows, title, truth))
    for r in map(_norm, rows):
        console.print(f"[bold]{r['incident_id'][:8]}[/] {rescape(r['summary'])}",
                      highlight=False, soft_wrap=True)
        expl = r["explanation"] or []
        for line in expl[:lines]:
            console.print(f"    {rescape(line)}", highlight=False, soft_wrap=True)
        if len(expl) > lines:
            console.print(f"    [dim]... and {len(expl) - lines} more observations[/]")


def print_scorecard_incidents(card: dict, console: Console) -> None:
    """The drill scorecard's incidents (with the ledger's verdict on each)."""
    sec = card.get("incidents")
    if not isinstance(sec, dict):
        return
    verdict = {True: "[green]the playbook became an incident[/]",
               False: "[red]the playbook became NO incident[/]",
               None: "no attack step to find"}[sec.get("is_incident")]
    best = sec.get("best") or {}
    extra = (f"; {len(best.get('steps') or [])} of {sec.get('steps_observable')} observable "
             f"steps in one incident" if best else "")
    title = (f"Incidents: {sec.get('total', 0)} ({sec.get('true', 0)} true, "
             f"{sec.get('false', 0)} false); {verdict}{extra}")
    print_incidents(sec.get("list") or [], console, title, truth=True, lines=8)


# -- HTML -------------------------------------------------------------------------------------

def _chain_html(reached: list[str]) -> str:
    cells = []
    for s in STAGES:
        on = s in reached
        style = ("background:#1f5fbf;color:#fff" if on else "background:#eef1f5;color:#98a2b3")
        cells.append(f'<span class="badge" style="{style}">{escape(SHORT[s])}</span>')
    return " ".join(cells)


def html_section(sec: dict | None) -> str:
    """The report's Incidents section from the scorecard's ``incidents``."""
    if not isinstance(sec, dict):
        return ('<p class="note">No incidents in this scorecard (scored before incidents '
                'existed: run <code>cyberrange drill score</code> again).</p>')
    rows = sec.get("list") or []
    verdict = {True: '<span class="yes">the playbook became an incident</span>',
               False: '<span class="no">the playbook became no incident</span>',
               None: '<span class="muted">no attack step to find</span>'}[sec.get("is_incident")]
    head = (f'<p>{sec.get("total", 0)} incidents ({sec.get("true", 0)} true, '
            f'{sec.get("false", 0)} false): {verdict}; '
            f'{sec.get("steps_in_incidents", 0)} of {sec.get("steps_observable", 0)} observable '
            f'steps in incidents.</p>')
    if not rows:
        return head
    out = [head]
    for r in rows:
        colour = HTML_SEVERITY.get(r["severity"], "#667085")
        hosts = " ⇒ ".join(dict.fromkeys(
            [r["entities"][0] if r["entities"] else "?"] + [p["host"] for p in r["pivots"]]))
        truth = (f'<span class="yes">true</span> (steps {escape(", ".join(r["steps"]))})'
                 if r.get("true") else '<span class="no">false</span>')
        expl = "".join(f"<li>{escape(x)}</li>" for x in r["explanation"] or [])
        out.append(
            f'<h3><span class="badge" style="background:{colour}">{escape(r["severity"])}</span> '
            f'{escape(r["incident_id"][:8])} · {escape(hosts)} · score {r["score"]:.2f}</h3>'
            f'<p>{_chain_html(_reached(r))}</p><p class="small">{escape(r["summary"])}; '
            f'raised {_when(r["raised_at"])} UTC; {truth}</p>'
            f'<details><summary class="small">{len(r["explanation"] or [])} observations'
            f'</summary><ul class="small">{expl}</ul></details>')
    return "".join(out)
