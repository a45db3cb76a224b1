"""The red/blue screen, drawn: one frame of ``cyberrange blue watch`` from a snapshot dict
(``blue/watch.py`` makes it from the run folder), and the loop that redraws it.

A frame is a header line (run, phase, elapsed time, status) over two columns: the live alerts
on the left (newest last), mission availability (per thread up/down, availability so far and
a strip of its last probes), the tactical links (when the run changes any: each link's state,
since when, its values; "all links up" once they are back) and the active blue actions on the
right. The instructor's frame adds the links' real states with their reasons, and the attack
steps under them. Everything drawn comes from the snapshot: the defender's
snapshot holds no ground truth, so its frame cannot show any.
"""
from __future__ import annotations

import time

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cyberrange.report.terminal import LINK_COLOURS

__all__ = ["OUTCOME_COLOURS", "links_panel", "render", "run_live"]

OUTCOME_COLOURS = {"succeeded": "green", "failed": "yellow", "blocked": "magenta",
                   "skipped": "dim", "stopped": "yellow", "error": "red"}
STATUS_COLOURS = {"running": "cyan", "done": "green", "failed": "red",
                  "interrupted": "yellow", "killed": "red"}


def _clock(t) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else "-"


def _dur(s) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


def header(snap: dict) -> Text:
    status = snap.get("status") or "?"
    t = Text()
    t.append("INSTRUCTOR  " if snap.get("view") == "instructor" else "DEFENDER  ",
             style="bold reverse magenta" if snap.get("view") == "instructor"
             else "bold reverse blue")
    t.append(f" run {snap.get('run_id')}", style="bold")
    if snap.get("topology"):
        t.append(f"  {snap['topology']}")
    if snap.get("twin"):
        t.append(f"  twin {snap['twin']}", style="dim")
    t.append("   phase ", style="dim")
    t.append(str(snap.get("phase")), style="bold")
    if isinstance(snap.get("phase_since"), (int, float)):
        t.append(f" for {_dur(snap['now'] - snap['phase_since'])}", style="dim")
    t.append("   elapsed ", style="dim")
    t.append(_dur(snap.get("elapsed_s")), style="bold")
    t.append("   ")
    t.append(status, style=STATUS_COLOURS.get(status, "white"))
    if snap.get("owner_gone"):
        t.append("  (the drill's process is gone)", style="red")
    return t


def alerts_panel(snap: dict, rows: int) -> Panel:
    al = snap.get("alerts") or {}
    recent = (al.get("recent") or [])[-rows:] if rows > 0 else []
    t = Table(box=box.SIMPLE, expand=True, show_edge=False, pad_edge=False)
    for c, kw in (("seen", {"no_wrap": True, "min_width": 8}), ("rule", {"no_wrap": True}),
                  ("technique", {"no_wrap": True, "min_width": 9}),
                  ("source → destination", {"no_wrap": True, "min_width": 15}),
                  ("score", {"justify": "right"}),
                  ("message", {"ratio": 1, "no_wrap": True, "overflow": "ellipsis"})):
        t.add_column(c, **kw)
    for a in recent:
        where = (a.get("source") or "?") + (f" → {a['destination']}" if a.get("destination")
                                            else "")
        score = a.get("score")
        t.add_row(_clock(a.get("seen_at")), Text(str(a.get("rule")), style="bold red"),
                  Text(str(a.get("technique") or "-"),
                       style="dim" if a.get("technique") in (None, "", "unknown") else ""),
                  where,
                  f"{score:.2f}" if isinstance(score, (int, float)) else "",
                  Text(str(a.get("message") or ""), style="dim", overflow="ellipsis"))
    n = al.get("count", 0)
    by_count = sorted((al.get("rules") or {}).items(), key=lambda kv: -kv[1])
    rules = ", ".join(f"{r} {k}" for r, k in by_count[:4]) + \
        (f", {len(by_count) - 4} more rules" if len(by_count) > 4 else "")
    title = f"alerts: {n}" + (f" ({rules})" if rules else "")
    if not al.get("live"):
        body: RenderableType = Text(
            "no live detection on this twin (cyberrange up); alerts come with "
            "`drill run --live`" if snap.get("kind") == "twin" else
            "waiting for the twin: live detection starts once it is up", style="dim")
    elif not recent:
        body = Text("no alert yet", style="dim")
    else:
        more = n - len(recent)
        body = Group(t, Text(f"… and {more} earlier", style="dim")) if more > 0 else t
    return Panel(body, title=title, title_align="left", border_style="red" if n else "white")


def strip(last: list) -> Text:
    """The last probes of a thread, oldest first: ▆ ok, ▁ failed."""
    t = Text()
    for ok in last:
        t.append("▆" if ok else "▁", style="green" if ok else "bold red")
    return t


def availability_panel(snap: dict) -> Panel:
    """Every mission thread on a row; services on one line while they are all up (each one
    that is down gets its own row)."""
    av = snap.get("availability") or {}
    rows = av.get("threads") or []
    if not rows:
        msg = "no mission probes on this twin" if snap.get("kind") == "twin" and not \
            av.get("probing") else "no probe yet"
        return Panel(Text(msg, style="dim"), title="mission availability", title_align="left")
    t = Table(box=box.SIMPLE, expand=True, show_edge=False, pad_edge=False)
    t.add_column("thread", no_wrap=True, overflow="ellipsis", min_width=12)
    t.add_column("now", no_wrap=True)
    t.add_column("avail", justify="right", no_wrap=True)
    t.add_column("last probes", no_wrap=True, overflow="crop", ratio=1)
    services = [r for r in rows if r["name"].startswith("service:")]
    shown = [r for r in rows if not r["name"].startswith("service:") or not r["up"]]
    until = snap.get("finished") or snap.get("now")
    for r in shown:
        state = Text("up", style="green") if r["up"] else \
            Text("DOWN" + (f" {_dur(until - r['down_since'])}"
                           if isinstance(r.get("down_since"), (int, float)) else ""),
                 style="bold red")
        name = r["name"].removeprefix("service:")
        t.add_row(Text(name, style="" if r["name"].startswith("service:") else "bold"), state,
                  f"{r['availability']:.0%}", strip(r.get("last") or []))
    up = [r for r in services if r["up"]]
    if up:
        worst = min(r["availability"] for r in up)
        t.add_row(Text(f"{len(up)} service(s)", style="dim"),
                  Text("up", style="green"), f"{'≥' if worst < 1 else ''}{worst:.0%}",
                  Text(f"of {len(services)} probed", style="dim"))
    overall = av.get("overall")
    title = "mission availability" + (f": {overall:.1%} overall" if overall is not None else "")
    return Panel(t, title=title, title_align="left",
                 border_style="red" if av.get("down") else "green")


def _link_values(vals: dict) -> str:
    """A link's values, short: ``loss 10%, delay 800ms, jitter 20ms, 4.8kbit/s``."""
    out = []
    for k, v in (vals or {}).items():
        if not isinstance(v, (int, float)):
            continue
        if k == "bandwidth":
            out.append(f"{v * 1000:g}kbit/s" if v < 1 else f"{v:g}Mbit/s")
        else:
            out.append(f"{k} {v:g}" + {"loss": "%", "delay": "ms", "jitter": "ms"}.get(k, ""))
    return ", ".join(out)


def links_panel(snap: dict) -> Panel | None:
    """The tactical links (None when the run logs no link change): each link that changed,
    its state (coloured as on the drill's own screen), since when and its values; "all links
    up" when every one is. The instructor's adds the real state's reason and the last
    changes with theirs; the defender's snapshot has neither (``blue/watch_links.py``)."""
    ln = snap.get("links") or {}
    if not ln.get("logged"):
        return None
    rows = ln.get("links") or []
    instructor = snap.get("view") == "instructor"
    until = snap.get("finished") or snap.get("now")
    bad = [r for r in rows if r.get("state") != "up"]
    t = Table(box=box.SIMPLE, expand=True, show_edge=False, pad_edge=False)
    t.add_column("link", no_wrap=True, overflow="ellipsis", min_width=8)
    t.add_column("now", no_wrap=True)
    t.add_column("since", no_wrap=True)
    t.add_column("values" if not instructor else "values / reason", ratio=1)
    for r in bad:
        since = r.get("since")
        lasted = f" {_dur(until - since)}" if isinstance(since, (int, float)) and \
            isinstance(until, (int, float)) else ""
        state = Text(str(r.get("label") or r.get("state")) + lasted,
                     style=LINK_COLOURS.get(r.get("state"), "red"))
        extra = Text(_link_values(r.get("values") or {}))
        if instructor and r.get("reason"):
            extra.append((" — " if extra.plain else "") + r["reason"], style="dim")
        if instructor and r.get("defender") not in (None, r.get("state")):
            extra.append(f" (defender sees: {r['defender']})", style="blue")
        t.add_row(Text(str(r.get("link")), style="bold"), state, _clock(since), extra)
    up = len(rows) - len(bad)
    body: RenderableType
    if bad:
        body = t if not up else Group(t, Text(f"{up} other link(s) up", style="dim"))
    else:
        body = Text("all links up", style="green")
    if instructor:
        lines = []
        for c in (ln.get("recent") or [])[-3:]:
            vals = _link_values(c.get("values") or {})
            lines.append(Text(f"{_clock(c.get('t'))} {c.get('link')} {c.get('state')}"
                              + (f" ({vals})" if vals else "")
                              + (f" — {c['reason']}" if c.get("reason") else "")
                              + "".join(f"; {n}" for n in c.get("notes") or []),
                              style="dim", no_wrap=True, overflow="ellipsis"))
        if lines:
            body = Group(body, Text("last changes (ground truth):", style="magenta"), *lines)
    title = f"links: {len(bad)} not up" if bad else "links: all up"
    title += f", {ln.get('count', 0)} change(s)"
    worst = "red" if any(r.get("state") in ("down", "jammed") for r in bad) else \
        "yellow" if bad else "green"
    return Panel(body, title=title, title_align="left", border_style=worst)


def describe_action(rec: dict) -> str:
    """An action in a few words, from its log record."""
    p, a = rec.get("params") or {}, rec.get("action")
    if a == "block":
        what = (p.get("proto") or "any") + (f"/{p['port']}" if p.get("port") else "")
        return f"block {p.get('src')} → {p.get('dst') or 'any'} {what}"
    if a == "isolate":
        allow = ", ".join(p.get("allow") or [])
        return f"isolate {p.get('node')}" + (f" (allow {allow})" if allow else "")
    if a == "rule-add":
        return f"rule on {p.get('firewall')}: {p.get('rule')}"
    if a in ("unblock", "release", "rule-remove"):
        return f"{a} {p.get('id')}"
    if a == "kill-sessions":
        return f"kill sessions of {p.get('node')}" + (f" with {p['peer']}" if p.get("peer")
                                                      else "")
    if a == "restart-service":
        return f"restart {p.get('service') or 'service'} on {p.get('node')}"
    return str(a)


def actions_panel(snap: dict) -> Panel:
    act = snap.get("actions") or {}
    active = act.get("active") or []
    t = Table(box=box.SIMPLE, expand=True, show_edge=False, pad_edge=False)
    for c in ("id", "since", "by", "action"):
        t.add_column(c, no_wrap=c != "action", ratio=1 if c == "action" else None)
    for r in active:
        t.add_row(str(r.get("id")), _clock(r.get("time")), str(r.get("actor")),
                  describe_action(r))
    others = [r for r in act.get("recent") or [] if r.get("result") != "applied"]
    lines = [Text(f"{r.get('id')} {describe_action(r)}: {r.get('result')}"
                  + (f" ({r['reason']})" if r.get("reason") else ""), style="yellow")
             for r in others[-3:]]
    body: RenderableType = t if active else Text("no active action", style="dim")
    if lines:
        body = Group(body, *lines)
    return Panel(body, title=f"blue actions: {len(active)} active, {act.get('count', 0)} logged",
                 title_align="left", border_style="blue")


def steps_panel(snap: dict) -> Panel:
    """Instructor only: the steps that ended (ledger) and those to come (playbook)."""
    t = Table(box=box.SIMPLE, expand=True, show_edge=False, pad_edge=False)
    for c in ("step", "technique", "actor", "outcome", "packets", "ended", "name / reason"):
        t.add_column(c, no_wrap=c != "name / reason",
                     ratio=1 if c == "name / reason" else None)
    for s in snap.get("steps") or []:
        colour = OUTCOME_COLOURS.get(s.get("outcome"), "white")
        reason = s.get("error") or s.get("blocked_reason") or s.get("skipped_reason")
        rep = f" #{s['repeat']}" if s.get("repeat") else ""
        t.add_row(f"{s.get('step_id')}{rep}", str(s.get("technique") or ""),
                  str(s.get("actor") or ""), Text(str(s.get("outcome")), style=colour),
                  str(s.get("packets_sent") or 0), _clock(s.get("end")),
                  str(s.get("name") or "") + (f" — {reason}" if reason else ""))
    for s in snap.get("pending") or []:
        state = s.get("state", "pending")
        t.add_row(Text(str(s.get("step_id")), style="bold cyan" if state == "running" else
                       "dim"), str(s.get("technique") or ""), str(s.get("actor") or ""),
                  Text(state, style="bold cyan" if state == "running" else "dim"), "", "",
                  Text(str(s.get("name") or ""), style="dim"))
    title = f"attack steps (ground truth): playbook {snap.get('playbook') or '-'}"
    if snap.get("phase_detail"):
        title += f", phase {snap['phase_detail']}"
    body: RenderableType = t if (snap.get("steps") or snap.get("pending")) else \
        Text("no step has ended yet" if snap.get("playbook") else "no playbook (a "
             "benign-only drill, or a twin brought up with `up`)", style="dim")
    notes = [Text(f"error: {snap['error']}", style="red")] if snap.get("error") else []
    notes += [Text(f"warning: {w}", style="yellow", overflow="ellipsis", no_wrap=True)
              for w in (snap.get("warnings") or [])[-3:]]
    if not snap.get("plan_known", True):
        notes.append(Text("(the playbook file was not found unchanged: steps to come are not "
                          "shown)", style="dim"))
    if notes:
        body = Group(body, *notes)
    return Panel(body, title=title, title_align="left", border_style="magenta")


def render(snap: dict, height: int | None = None, width: int | None = None) -> RenderableType:
    """One frame. ``height``: the terminal's lines, so the alerts fit (None: the last 12);
    ``width``: side by side from 140 columns, one under the other below."""
    right = Table.grid(expand=True)
    right.add_column()
    right.add_row(availability_panel(snap))
    right.add_row(actions_panel(snap))
    links = links_panel(snap)           # under the alerts: as wide as they are
    links_h = _links_height(snap) if links is not None else 0
    instructor = snap.get("view") == "instructor"
    n_steps = len(snap.get("steps") or []) + len(snap.get("pending") or [])
    wide = width is None or width >= 140
    rows = 12
    if height is not None:
        av = snap.get("availability") or {}
        side = sum(1 for r in av.get("threads") or []
                   if not r["name"].startswith("service:") or not r["up"]) + 1 + \
            max(1, len((snap.get("actions") or {}).get("active") or [])) + 10
        rows = height - 7 - links_h - (n_steps + 5 if instructor else 0) - \
            (0 if wide else side)
        rows = max(3, rows, side - 6 - links_h if wide else 3)
    left: RenderableType = alerts_panel(snap, rows)
    if links is not None:
        left = Group(left, links)
    if wide:
        body = Table.grid(expand=True, padding=(0, 1))
        body.add_column(ratio=1)                # the alerts get what the right side leaves
        body.add_column(width=60)
        body.add_row(left, right)
    else:
        body = Group(left, right)
    parts: list[RenderableType] = [header(snap), body]
    if instructor:
        parts.append(steps_panel(snap))
    return Group(*parts)


def _links_height(snap: dict) -> int:
    """The lines the links panel takes: borders, header and rows (or "all links up"), and
    the instructor's last changes."""
    ln = snap.get("links") or {}
    bad = len(ln.get("not_up") or [])
    h = 2 + (bad + 2 if bad else 1) + (1 if bad and len(ln.get("links") or []) > bad else 0)
    if snap.get("view") == "instructor" and ln.get("recent"):
        h += 1 + min(3, len(ln["recent"]))
    return h


def run_live(console: Console, snapshot, refresh_s: float = 0.5) -> dict:
    """Redraw ``snapshot()`` every ``refresh_s`` until it says the run is final (or Ctrl-C);
    returns the last snapshot (its ``stopped`` is True after a Ctrl-C)."""
    from rich.live import Live
    snap = snapshot()
    with Live(render(snap, console.height, console.width), console=console, auto_refresh=False,
              vertical_overflow="crop", transient=False) as live:
        try:
            while not (snap.get("final") or snap.get("owner_gone")):
                time.sleep(refresh_s)
                snap = snapshot()
                live.update(render(snap, console.height, console.width), refresh=True)
        except KeyboardInterrupt:
            snap["stopped"] = True
    return snap
