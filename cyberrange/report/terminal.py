"""Terminal output: the scorecard table and the live drill display (rich)."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table


def _fmt_s(v) -> str:
    return "—" if v is None else f"{v:.1f} s"


def _fmt_ratio(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def scorecard_table(card: dict) -> Table:
    t = Table(title="Scorecard: attack steps", box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("step")
    t.add_column("technique")
    t.add_column("outcome")
    t.add_column("detected", justify="center")
    t.add_column("time to detect", justify="right")
    t.add_column("detected by")
    t.add_column("attack flows", justify="right")
    for s in card.get("steps", []):
        det = "[green]yes[/]" if s.get("detected") else "[red]no[/]"
        t.add_row(s["step_id"], s.get("technique", ""), s.get("outcome", ""), det,
                  _fmt_s(s.get("time_to_detect_s")), ", ".join(s.get("detected_by") or []) or "—",
                  str(s.get("attack_flows", 0)))
    return t


def summary_table(card: dict) -> Table:
    f, a = card.get("flows", {}), card.get("alerts", {})
    rec = card.get("reconciliation", {})
    t = Table(title="Flows, alerts and capture", box=box.SIMPLE, show_header=False,
              title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("flows (deduplicated across sensors)", str(f.get("total", 0)))
    t.add_row("  attack / benign", f"{f.get('attack', 0)} / {f.get('benign', 0)}")
    t.add_row("  flagged: attack / benign", f"{f.get('flagged_attack', 0)} / {f.get('flagged_benign', 0)}")
    t.add_row("flow precision / recall", f"{_fmt_ratio(f.get('precision'))} / {_fmt_ratio(f.get('recall'))}")
    t.add_row("alerts: true / false", f"{a.get('true', 0)} / {a.get('false', 0)}")
    if rec:
        ok = rec.get("ledger_packets") == rec.get("stored_packets")
        mark = "[green]equal[/]" if ok else "[red]differ[/]"
        t.add_row("attack packets: ledger / stored",
                  f"{rec.get('ledger_packets')} / {rec.get('stored_packets')} {mark}")
    return t


def print_scorecard(card: dict, console: Console | None = None) -> None:
    console = console or Console()
    run = card.get("run", {})
    console.print(scorecard_table(card))
    console.print(summary_table(card))
    warn = run.get("warnings") or []
    for w in warn:
        console.print(f"[yellow]warning:[/] {w}")
    tel = run.get("telemetry") or {}
    tm = run.get("timings") or {}
    console.print(Panel.fit(
        f"run [bold]{run.get('run_id')}[/]  topology {run.get('topology')}  playbook {run.get('playbook')}\n"
        f"packets captured {tel.get('packets', 0)}, flows {tel.get('flows', 0)}, "
        f"wall time {tm.get('total_s', '?')} s",
        title="drill", border_style="cyan"))
