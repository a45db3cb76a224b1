"""The "Link events" section of the HTML after-action report (DDIL, issue 19): the same content
as report.md's section (``content.link_events``: each change of a link's state, how long it
lasted, why, and each mission thread's probes ok/total while the link was not up), as a table
and one small timeline bar per link in inline SVG (no script, nothing fetched).
"""
from __future__ import annotations

from html import escape

STATE_COLOURS = {"up": "#9bd3a4", "degraded": "#f2b84b", "jammed": "#d62728", "down": "#6b1d1d"}
WIDTH, LABEL, ROW = 900, 120, 20          # the bars' SVG: width, label column, row height


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _span(content: dict, rows: list[dict]) -> tuple[float, float]:
    """The time axis of the bars: the run's first to last event, and every link change."""
    times = [t for t in (_num(content.get("t0")), _num(content.get("t1"))) if t is not None]
    times += [r["time"] for r in rows] + [r["until"] for r in rows if _num(r.get("until"))]
    lo, hi = min(times), max(times)
    return lo, hi if hi > lo else lo + 1.0


def _lasted(r: dict) -> str:
    until = _num(r.get("until"))
    return "to the end" if until is None else f"{until - r['time']:.1f} s"


def _values(r: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                     for k, v in (r.get("values") or {}).items())


def _missions(r: dict) -> str:
    """Each thread's probes while the link was not up: ``thread ok/total``, failures red."""
    out = []
    for thread, (ok, n) in sorted((r.get("missions") or {}).items()):
        cls = "yes" if ok == n else "no"
        out.append(f'{escape(thread)} <span class="{cls}">{ok}/{n}</span>')
    return "<br>".join(out) if out else '<span class="muted">—</span>'


def _badge(state) -> str:
    colour = STATE_COLOURS.get(state, "#667085")
    return f'<span class="badge" style="background:{colour}">{escape(str(state))}</span>'


def table(rows: list[dict], origin) -> str:
    head = ["time", "link", "state", "values", "lasted", "reason",
            "mission probes ok/total while not up"]
    th = "".join(f'<th{" class=n" if k in (0, 4) else ""}>{escape(h)}</th>'
                 for k, h in enumerate(head))
    body = []
    for r in rows:
        notes = "".join(f'<span class="reason">{escape(n)}</span>' for n in r.get("notes") or [])
        cells = [f'{r["time"] - (origin or r["time"]):+.2f} s', f'<b>{escape(r["zone"])}</b>',
                 _badge(r.get("state")), escape(_values(r)) or "—", _lasted(r),
                 escape(r.get("reason") or "") + notes,
                 _missions(r) if r.get("state") != "up" else '<span class="muted">—</span>']
        body.append("<tr>" + "".join(f'<td{" class=n" if k in (0, 4) else ""}>{c}</td>'
                                     for k, c in enumerate(cells)) + "</tr>")
    return (f'<table class="links"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def bars(rows: list[dict], lo: float, hi: float, origin) -> str:
    """One bar per link over the run: coloured by its state at each moment (up before its
    first change), each segment with a tooltip (SVG ``title``)."""
    links = list(dict.fromkeys(r["zone"] for r in rows))
    scale = (WIDTH - LABEL - 10) / (hi - lo)

    def x(t: float) -> float:
        return LABEL + (t - lo) * scale
    origin = lo if origin is None else origin
    parts = []
    for k, link in enumerate(links):
        y = 6 + k * ROW
        parts.append(f'<text x="{LABEL - 6}" y="{y + 12}" text-anchor="end" font-size="12">'
                     f'{escape(link)}</text>')
        parts.append(f'<rect x="{LABEL}" y="{y}" width="{WIDTH - LABEL - 10}" height="14" '
                     f'rx="2" fill="{STATE_COLOURS["up"]}"><title>{escape(link)}: up</title></rect>')
        for r in (r for r in rows if r["zone"] == link and r.get("state") != "up"):
            end = _num(r.get("until")) or hi
            w = max(1.5, (end - r["time"]) * scale)
            tip = (f'{link}: {r.get("state")} from {r["time"] - origin:+.1f} s for {_lasted(r)}'
                   + (f' ({_values(r)})' if _values(r) else "")
                   + (f' — {r["reason"]}' if r.get("reason") else ""))
            parts.append(f'<rect class="cr-link-{escape(str(r.get("state")))}" '
                         f'x="{x(r["time"]):.1f}" y="{y}" width="{w:.1f}" height="14" rx="2" '
                         f'fill="{STATE_COLOURS.get(r.get("state"), "#667085")}">'
                         f'<title>{escape(tip)}</title></rect>')
    h = 6 + len(links) * ROW + 16
    axis = (f'<text x="{LABEL}" y="{h - 3}" font-size="11" fill="#667085">'
            f'{lo - origin:+.1f} s</text><text x="{WIDTH - 10}" y="{h - 3}" font-size="11" '
            f'fill="#667085" text-anchor="end">{hi - origin:+.1f} s</text>')
    return (f'<svg class="cr-links" viewBox="0 0 {WIDTH} {h}" width="100%" role="img" '
            f'aria-label="link states over the run" xmlns="http://www.w3.org/2000/svg">'
            f'{"".join(parts)}{axis}</svg>')


def legend() -> str:
    return '<div class="legend">' + "".join(
        f'<span><span class="sw" style="background:{c}"></span>{s}</span>'
        for s, c in STATE_COLOURS.items()) + "</div>"


def html_section(content: dict) -> str:
    """The section's body: a note when the run changed no link."""
    rows = [r for r in content.get("link_events") or [] if _num(r.get("time")) is not None]
    if not rows:
        return '<p class="note">No link changed state in this run (no link events, no jamming).</p>'
    lo, hi = _span(content, rows)
    origin = content.get("origin")
    return (bars(rows, lo, hi, origin) + legend()
            + '<p class="note small">Each change of a link\'s state (a playbook\'s '
              '<code>link_events</code> or a jamming step), how long it lasted, and every '
              'mission thread\'s probes while the link was not up. Times are seconds from the '
              'start of the first attack step.</p>' + table(rows, origin))
