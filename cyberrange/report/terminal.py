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


OUTCOME_COLOURS = {"succeeded": "green", "failed": "yellow", "blocked": "magenta",
                   "skipped": "dim", "stopped": "cyan"}          # anything else (error): red


def record_reason(r: dict) -> str:
    """The one-line reason of a ledger record or a scorecard step row ('' if none): why it was
    blocked, errored or skipped."""
    for key in ("reason", "blocked_reason", "error", "skipped_reason"):
        v = r.get(key)
        if isinstance(v, str) and v.strip():
            return " ".join(v.split())
    return ""


def step_end_suffix(r: dict, limit: int = 200) -> str:
    """What the live display adds to a finished step's line (a ledger record): the ARP frames
    it wrote, which are no packets of a flow, and its reason (blocked, error, skipped); rich
    markup in the reason is escaped."""
    from rich.markup import escape
    out = f" (+{r['arp_frames']} ARP frames)" if r.get("arp_frames") else ""
    reason = record_reason(r)
    if reason:
        colour = "red" if r.get("outcome") == "error" else "dim"
        text = reason if len(reason) <= limit else reason[:limit - 3] + "..."
        out += f"  [{colour}]{escape(text)}[/]"
    return out


LINK_COLOURS = {"up": "green", "degraded": "yellow", "jammed": "bold red", "down": "red"}


def link_change_line(rec: dict) -> str:
    """One line of the live drill screen for a link change (a ``logs/links.jsonl`` record):
    time, link, state, its values, reason and notes; rich markup in them is escaped."""
    import time as _time

    from rich.markup import escape
    t = rec.get("t")
    when = _time.strftime("%H:%M:%S", _time.gmtime(t)) if isinstance(t, (int, float)) else "--:--:--"
    state = str(rec.get("state"))
    vals = ", ".join(f"{k} {v:g}" for k, v in (rec.get("values") or {}).items()
                     if isinstance(v, (int, float)))
    colour = LINK_COLOURS.get(state, "red")
    extra = "".join(f"; {n}" for n in rec.get("notes") or [])
    reason = rec.get("reason") or ""
    return (f"  [{colour}]⚡[/] {when} [bold]link {escape(str(rec.get('zone')))}:[/] "
            f"[{colour}]{escape(state)}[/]" + (f" ({escape(vals)})" if vals else "")
            + (f"  [dim]{escape(reason + extra)}[/]" if reason or extra else ""))


def links_not_up_line(states: dict[str, dict]) -> str:
    """The live screen's links line: every link not up now, with its state and since when
    (``states``: link -> its last record), or that all are up."""
    import time as _time
    bad = [(z, r) for z, r in sorted(states.items(), key=lambda x: str(x[0]))
           if r.get("state") != "up"]
    if not bad:
        return "links: all up"
    return "links not up: " + ", ".join(
        f"{z} {r.get('state')}" + (f" since {_time.strftime('%H:%M:%S', _time.gmtime(r['t']))}"
                                   if isinstance(r.get("t"), (int, float)) else "")
        for z, r in bad)


def scorecard_table(card: dict) -> Table:
    from rich.markup import escape
    steps = card.get("steps", [])
    with_reasons = any(record_reason(s) or s.get("unobservable") for s in steps)
    t = Table(title="Scorecard: attack steps", box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("step")
    t.add_column("technique")
    t.add_column("outcome")
    t.add_column("detected", justify="center")
    t.add_column("time to detect", justify="right")
    t.add_column("detected by")
    t.add_column("attack flows", justify="right")
    if with_reasons:
        t.add_column("reason", overflow="fold", max_width=60)
    for s in steps:
        if s.get("observable") is False:    # cut short before anything was sent
            det = "[dim]not observable[/]"
        else:
            det = "[green]yes[/]" if s.get("detected") else "[red]no[/]"
            if not s.get("detected") and s.get("detected_late"):    # after end + late_s
                det = f"[yellow]late[/] [dim]({_fmt_s(s.get('late_detect_s'))})[/]"
        outcome = s.get("outcome", "")
        colour = OUTCOME_COLOURS.get(outcome, "red")
        row = [s["step_id"], s.get("technique", ""), f"[{colour}]{outcome}[/]", det,
               _fmt_s(s.get("time_to_detect_s")), ", ".join(s.get("detected_by") or []) or "—",
               str(s.get("attack_flows", 0))]
        if with_reasons:
            row.append(escape(record_reason(s) or s.get("unobservable") or "") or "—")
        t.add_row(*row)
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
        if "zero_loss" in rec:
            t.add_row("capture", "[green]zero loss[/]" if rec["zero_loss"] else "[red]LOSS[/]")
    return t


def _n(v) -> str:
    return "—" if v is None else str(v)


def reconciliation_table(card: dict) -> Table | None:
    """Per sensor: sent (ledger, benign logs) vs captured vs stored, and the verdict."""
    rec = card.get("reconciliation") or {}
    rows = rec.get("per_sensor") or []
    if not rows:
        return None
    t = Table(title=f"Capture reconciliation: {rec.get('verdict', '')}", box=box.SIMPLE,
              title_justify="left")
    for col, just in (("sensor", "left"), ("kind", "left"), ("attack sent", "right"),
                      ("benign logged", "right"), ("captured", "right"), ("pcap frames", "right"),
                      ("kernel drops", "right"), ("stored", "right"), ("verdict", "left")):
        t.add_column(col, justify=just)
    for r in rows:
        benign = (f"{r['benign_packets']} pk" if r.get("benign_packets") is not None
                  else f"{r.get('benign_requests', 0)} req")
        attack = f"{r.get('attack_ledger', 0)}"
        if r.get("attack_stored") != r.get("attack_ledger"):
            attack += f" (stored {r.get('attack_stored')})"
        verdict = "[green]zero loss[/]" if r.get("zero_loss") else f"[red]{r.get('verdict')}[/]"
        t.add_row(r["sensor"], r.get("kind") or "", attack, benign, _n(r.get("captured")),
                  _n(r.get("pcap_frames")), _n(r.get("kernel_drops")), _n(r.get("stored")), verdict)
    return t


def es_table(card: dict) -> Table | None:
    """Elasticsearch copy of the run (``drill run --store es://``): per kind, records sent,
    acknowledged, retried, spooled, rejected, and what the cluster counts."""
    es = (card.get("reconciliation") or {}).get("es")
    if not es:
        return None
    colour = "green" if es.get("zero_loss") else "red"
    t = Table(title=f"Elasticsearch {es.get('url', '')}: [{colour}]{es.get('verdict', '')}[/]",
              box=box.SIMPLE, title_justify="left")
    for col in ("kind", "records", "acknowledged", "retried", "spooled", "rejected",
                "in cluster"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    stored = es.get("stored") or {}
    for kind, k in (es.get("per_kind") or {}).items():
        t.add_row(kind, _n(k.get("records")), _n(k.get("acknowledged")), _n(k.get("retried")),
                  _n(k.get("spooled")), _n(k.get("rejected")), _n(stored.get(kind)))
    if es.get("replayed"):
        t.caption = f"{es['replayed']} spooled documents replayed first"
    return t


def print_scorecard(card: dict, console: Console | None = None) -> None:
    console = console or Console()
    run = card.get("run", {})
    console.print(scorecard_table(card))
    from cyberrange.report.incidents import print_scorecard_incidents
    print_scorecard_incidents(card, console)
    console.print(summary_table(card))
    rt = reconciliation_table(card)
    if rt is not None:
        console.print(rt)
    et = es_table(card)
    if et is not None:
        console.print(et)
    warn = run.get("warnings") or []
    for w in warn:
        console.print(f"[yellow]warning:[/] {w}")
    tel = run.get("telemetry") or {}
    tm = run.get("timings") or {}
    console.print(Panel.fit(
        f"run [bold]{run.get('run_id')}[/]  topology {run.get('topology')}  playbook {run.get('playbook') or '— (benign only)'}\n"
        f"packets captured {tel.get('packets', 0)}, flows {tel.get('flows', 0)}, "
        f"wall time {tm.get('total_s', '?')} s",
        title="drill", border_style="cyan"))
