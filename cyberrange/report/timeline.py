"""The drill's timeline as one inline SVG, drawn here from the report content (no plotting
library, no script needed to read it): a time axis in seconds from the first event, then one
lane per executed attack step (a bar from its start to its end, coloured by outcome, with a
diamond where it was first detected), one lane per detector (a mark per alert; hollow when the
scorer judged it false), one lane per blue actor (a flag per action, a band while it was in
force) and one lane per mission thread (its availability over time, red ticks at failed probes).

Every mark has a ``<title>`` (the browser's own tooltip) and a ``data-tip`` that the page's
script shows as a styled tooltip; classes (``cr-step``, ``cr-alert``, ``cr-action``,
``cr-avail``) let tests and styles find them.
"""
from __future__ import annotations

import math
from html import escape

WIDTH = 1200
LEFT = 210             # the lane labels
RIGHT = 24
TOP = 34               # the time axis
STEP_H, ALERT_H, ACTION_H, AVAIL_H, HEAD_H = 24, 20, 24, 38, 26

OUTCOME_COLOURS = {"succeeded": "#d62728", "blocked": "#1f5fbf", "failed": "#e69f00",
                   "error": "#5b5b5b", "skipped": "#bdbdbd", "stopped": "#8c8c8c"}
DETECTOR_PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
                    "#7f3c8d", "#11a579", "#3969ac", "#f2b701", "#e73f74", "#80ba5a",
                    "#008695", "#a5aa99"]
ACTION_COLOURS = {"applied": "#1f5fbf", "refused": "#9e9e9e", "failed": "#5b5b5b"}
AVAIL_OK, AVAIL_DOWN = "#2ca02c", "#d62728"


def detector_colours(names) -> dict[str, str]:
    return {n: DETECTOR_PALETTE[k % len(DETECTOR_PALETTE)] for k, n in enumerate(sorted(names))}


def outcome_colour(outcome) -> str:
    return OUTCOME_COLOURS.get(outcome, "#5b5b5b")


def _nice_step(span: float) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving at most about ten ticks."""
    raw = max(span / 10, 1e-3)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag)


def _tip(*lines) -> str:
    return escape("\n".join(str(x) for x in lines if x not in (None, "")), quote=True)


class _Canvas:
    """Coordinates and the growing list of SVG elements."""

    def __init__(self, t0: float, t1: float, origin: float):
        span = max(t1 - t0, 1.0)
        self.t0, self.t1 = t0 - 0.02 * span, t1 + 0.02 * span
        self.scale = (WIDTH - LEFT - RIGHT) / (self.t1 - self.t0)
        self.origin = origin
        self.y = TOP
        self.parts: list[str] = []
        self.lanes = 0

    def x(self, t: float) -> float:
        return LEFT + (min(max(t, self.t0), self.t1) - self.t0) * self.scale

    def add(self, s: str) -> None:
        self.parts.append(s)

    def section(self, title: str, note: str = "") -> None:
        self.y += 6
        self.add(f'<text class="cr-lane-head" x="8" y="{self.y + 17}">{escape(title)}</text>')
        if note:
            self.add(f'<text class="cr-lane-note" x="{LEFT}" y="{self.y + 17}">'
                     f'{escape(note)}</text>')
        self.y += HEAD_H

    def lane(self, label: str, h: int, tip: str = "", cls: str = "") -> float:
        """A lane of height ``h`` with its label; returns its top."""
        top = self.y
        self.lanes += 1
        shade = f' class="cr-lane-bg{self.lanes % 2}"'
        self.add(f'<rect{shade} x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" '
                 f'height="{h}"/>')
        title = f"<title>{tip}</title>" if tip else ""
        self.add(f'<text class="cr-lane-label {cls}" x="{LEFT - 8}" y="{top + h / 2 + 4}" '
                 f'text-anchor="end">{escape(label)}{title}</text>')
        self.y += h
        return top


def _axis(c: _Canvas, bottom: float, baseline_end) -> None:
    step = _nice_step(c.t1 - c.t0)
    first = -int(-(c.t0 - c.origin) // step) * step
    t = first
    ticks = []
    while c.origin + t <= c.t1:
        x = c.x(c.origin + t)
        ticks.append(f'<line class="cr-grid" x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" '
                     f'y2="{bottom}"/><text class="cr-tick" x="{x:.1f}" y="{TOP - 10}" '
                     f'text-anchor="middle">{t:+g} s</text>')
        t = round(t + step, 6)
    c.parts[:0] = ticks
    if baseline_end is not None and c.t0 <= baseline_end <= c.t1:
        x = c.x(baseline_end)
        c.add(f'<line class="cr-baseline" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{bottom}">'
              '<title>end of the baseline: trainable detectors learned normal traffic '
              'before this line</title></line>'
              f'<text class="cr-baseline-label" x="{x + 4:.1f}" y="{TOP + 12}">baseline end'
              '</text>')


def _steps(c: _Canvas, content: dict) -> None:
    ledger = [r for r in content["ledger"] if r["start"] is not None]
    c.section("Attack steps", "" if ledger else "no attack step in the ledger")
    scored = {s["step_id"]: s for s in content["steps"]}
    seen: set = set()
    for r in ledger:
        s = scored.get(r["step_id"], {})
        label = f'{r["step_id"]} · {r["technique"] or ""}'
        top = c.lane(label, STEP_H, _tip(r["name"]))
        x0, x1 = c.x(r["start"]), c.x(r["end"] if r["end"] is not None else r["start"])
        tip = _tip(f'{r["step_id"]}: {r["name"] or ""}', f'{r["technique"]}  {r["outcome"]}'
                   + (f' ({r["reason"]})' if r["reason"] else ""),
                   f'actor {r["actor"]}  {r["packets"]} packets to {r["targets"]} targets',
                   f'{r["start"] - c.origin:+.2f} s to {(r["end"] or r["start"]) - c.origin:+.2f} s')
        c.add(f'<rect class="cr-step" data-step="{escape(str(r["step_id"]), quote=True)}" '
              f'data-outcome="{escape(str(r["outcome"]), quote=True)}" data-tip="{tip}" '
              f'x="{x0:.1f}" y="{top + 4}" width="{max(x1 - x0, 3):.1f}" height="{STEP_H - 8}" '
              f'rx="3" fill="{outcome_colour(r["outcome"])}"><title>{tip}</title></rect>')
        first = r["step_id"] not in seen
        seen.add(r["step_id"])
        ttd = s.get("time_to_detect_s")
        if first and s.get("detected") and ttd is not None and s.get("start") is not None:
            x = c.x(s["start"] + ttd)
            y = top + STEP_H / 2
            dtip = _tip(f'{r["step_id"]} detected after {ttd:.2f} s',
                        "by " + ", ".join(s.get("detected_by") or []))
            c.add(f'<path class="cr-detect" data-tip="{dtip}" d="M{x:.1f},{y - 7} l7,7 l-7,7 '
                  f'l-7,-7 z"><title>{dtip}</title></path>')
        elif first and not s.get("detected") and s.get("observable"):
            c.add(f'<text class="cr-missed" x="{max(x1, x0 + 3) + 6:.1f}" y="{top + 16}">'
                  'missed</text>')


def _alerts(c: _Canvas, content: dict, colours: dict) -> None:
    items = [a for a in content["alerts"]["items"] if a["time"] is not None]
    c.section("Alerts", "" if items else "no alert records (see notes)")
    lanes: dict[str, list] = {}
    for a in items:
        lanes.setdefault(a["detector"], []).append(a)
    for name in sorted(lanes):
        d = content["alerts"]["by_detector"].get(name, {})
        top = c.lane(name, ALERT_H, _tip(f'{name}: {d.get("total")} alerts, {d.get("true")} '
                                         f'true, {d.get("false")} false'))
        colour = colours.get(name, "#555")
        for a in lanes[name]:
            x, y = c.x(a["time"]), top + ALERT_H / 2
            verdict = {True: "true alert", False: "FALSE alert"}.get(a["true"], "")
            tip = _tip(f'{name} {a["technique"] or ""}  {verdict}',
                       f'{a["source"] or ""}' + (f' → {a["destination"]}' if a["destination"]
                                                 else ""),
                       a["message"], f'{a["time"] - c.origin:+.2f} s')
            fill = "white" if a["true"] is False else colour
            c.add(f'<circle class="cr-alert{" cr-false" if a["true"] is False else ""}" '
                  f'data-detector="{escape(name, quote=True)}" data-tip="{tip}" cx="{x:.1f}" '
                  f'cy="{y}" r="5.5" fill="{fill}" stroke="{colour}" stroke-width="2">'
                  f'<title>{tip}</title></circle>')


def _action_text(a: dict) -> str:
    p = a["params"]
    what = a["isolated"] or a["blocked"] or [v for v in p.values() if isinstance(v, (str, int))]
    return f'{a["id"] or ""} {a["action"]} {" ".join(str(v) for v in what[:3])}'.strip()


def _actions(c: _Canvas, content: dict) -> None:
    acts = content["actions"]
    if acts is None:
        c.section("Blue actions", "no action log (actions.jsonl) in this run")
        return
    c.section("Blue actions", "" if acts else "the action log is empty")
    lanes: dict[str, list] = {}
    for a in acts:
        lanes.setdefault(str(a["actor"]), []).append(a)
    for actor in sorted(lanes):
        top = c.lane(actor, ACTION_H, _tip("automated response" if actor.startswith("auto:")
                                           else "a defender at the keyboard"))
        for a in lanes[actor]:
            x = c.x(a["time"])
            colour = ACTION_COLOURS.get(a["result"], "#5b5b5b")
            tip = _tip(f'{_action_text(a)}  {a["result"]}'
                       + (f' ({a["reason"]})' if a["reason"] else ""),
                       ", ".join(f"{k}={v}" for k, v in a["params"].items()),
                       f'{a["time"] - c.origin:+.2f} s' + (
                           f', in force until {a["until"] - c.origin:+.2f} s' if a["until"]
                           else ""))
            if a["result"] == "applied" and a["action"] not in ("unblock", "release",
                                                                 "rule-remove") and \
                    not a["reverts"]:
                end = c.x(a["until"] if a["until"] is not None else c.t1)
                c.add(f'<rect class="cr-action-span" x="{x:.1f}" y="{top + 6}" '
                      f'width="{max(end - x, 1):.1f}" height="{ACTION_H - 12}" '
                      f'fill="{colour}"/>')
            hollow = a["result"] != "applied"
            c.add(f'<path class="cr-action" data-action="{escape(str(a["action"]), quote=True)}" '
                  f'data-result="{escape(str(a["result"]), quote=True)}" data-tip="{tip}" '
                  f'd="M{x:.1f},{top + 3} v{ACTION_H - 6} M{x:.1f},{top + 3} h10 l-3,4 l3,4 h-10" '
                  f'stroke="{colour}" stroke-width="2" fill="{"white" if hollow else colour}">'
                  f'<title>{tip}</title></path>')


def _availability(c: _Canvas, content: dict) -> None:
    av = content["availability"]
    if av is None:
        c.section("Mission availability", "no availability probes (availability.jsonl)")
        return
    series = av.get("series") or {}
    threads = av.get("threads") or {}
    # mission threads always; a service only when one of its probes failed (the rest were up)
    drawn = sorted((n for n in series if not _is_service(n, threads)
                    or any(not ok for _, ok, _ in series[n])),
                   key=lambda n: (_is_service(n, threads), n))
    quiet = len(series) - len(drawn)
    c.section("Mission availability", "no probe records to draw" if not series else
              f"{quiet} service(s) up at every probe not drawn" if quiet else "")
    for name in drawn:
        pts = series[name]
        t = threads.get(name) or {}
        pct = t.get("availability")
        label = f"{name}  {pct:.0%}" if isinstance(pct, (int, float)) else name
        top = c.lane(label, AVAIL_H, _tip(f'{name}: {t.get("ok")} of {t.get("probes")} probes ok'),
                     cls="cr-avail-label")
        y_of = lambda v: top + 4 + (1 - v) * (AVAIL_H - 10)     # noqa: E731
        line = _availability_curve(pts)
        end = av.get("end")             # probing went on to here: the last value holds till then
        if line and isinstance(end, (int, float)) and end > line[-1][0]:
            line.append((end, line[-1][1]))
        if line:
            path = " ".join(f"{'M' if k == 0 else 'L'}{c.x(tt):.1f},{y_of(v):.1f}"
                            for k, (tt, v) in enumerate(line))
            area = path + f" L{c.x(line[-1][0]):.1f},{top + AVAIL_H - 6} " \
                          f"L{c.x(line[0][0]):.1f},{top + AVAIL_H - 6} Z"
            down = any(not ok for _, ok, _ in pts)
            tip = _tip(f"{name}: {pct:.1%} available" if isinstance(pct, (int, float)) else name)
            c.add(f'<path class="cr-avail-area" d="{area}"/>'
                  f'<path class="cr-avail{" cr-down" if down else ""}" '
                  f'data-thread="{escape(name, quote=True)}" data-tip="{tip}" d="{path}" '
                  f'stroke="{AVAIL_DOWN if down else AVAIL_OK}"><title>{tip}</title></path>')
        for tt, ok, lat in pts:
            if not ok:
                ftip = _tip(f"{name}: probe failed", f"{tt - c.origin:+.2f} s")
                c.add(f'<line class="cr-probe-fail" data-tip="{ftip}" x1="{c.x(tt):.1f}" '
                      f'y1="{top + AVAIL_H - 8}" x2="{c.x(tt):.1f}" y2="{top + AVAIL_H - 1}">'
                      f'<title>{ftip}</title></line>')


def _is_service(name: str, threads: dict) -> bool:
    t = threads.get(name)
    return (t.get("kind") == "service") if isinstance(t, dict) and "kind" in t else \
        name.startswith("service:")


def _availability_curve(pts: list) -> list[tuple[float, float]]:
    """The share of ok probes among the last few (a window of five), as a step line."""
    out = []
    window: list[bool] = []
    for t, ok, _ in pts:
        window = (window + [ok])[-5:]
        v = sum(window) / len(window)
        if out:
            out.append((t, out[-1][1]))
        out.append((t, v))
    return out


def _legend(c: _Canvas, content: dict) -> None:
    used = sorted({r["outcome"] for r in content["ledger"]} & set(OUTCOME_COLOURS))
    x = LEFT
    y = c.y + 18
    bits = []
    for o in used:
        bits.append(f'<rect x="{x}" y="{y - 10}" width="22" height="11" rx="2" '
                    f'fill="{OUTCOME_COLOURS[o]}"/><text class="cr-legend" x="{x + 27}" '
                    f'y="{y}">{o}</text>')
        x += 40 + 7 * len(o)
    bits.append(f'<path class="cr-detect" d="M{x + 7},{y - 11} l6,6 l-6,6 l-6,-6 z"/>'
                f'<text class="cr-legend" x="{x + 17}" y="{y}">first detected</text>')
    x += 125
    bits.append(f'<circle cx="{x + 6}" cy="{y - 4}" r="5" fill="#777" stroke="#777" '
                f'stroke-width="2"/><circle cx="{x + 22}" cy="{y - 4}" r="5" fill="white" '
                f'stroke="#777" stroke-width="2"/><text class="cr-legend" x="{x + 33}" '
                f'y="{y}">alert: true / false</text>')
    x += 150
    if content["actions"]:
        bits.append(f'<path d="M{x},{y - 12} v14 M{x},{y - 12} h10 l-3,4 l3,4 h-10" '
                    f'stroke="#1f5fbf" stroke-width="2" fill="#1f5fbf"/><rect '
                    f'class="cr-action-span" x="{x}" y="{y - 9}" width="40" height="9" '
                    f'fill="#1f5fbf"/><text class="cr-legend" x="{x + 46}" y="{y}">blue action '
                    '(band: in force)</text>')
    c.add("".join(bits))
    c.y += 30


def svg(content: dict) -> str:
    """The timeline as an ``<svg>`` element; an empty run gives a short note instead."""
    if content.get("t0") is None:
        return '<p class="cr-empty">Nothing happened in time in this run: no timeline.</p>'
    c = _Canvas(content["t0"], content["t1"], content.get("origin") or content["t0"])
    colours = detector_colours(content["alerts"]["by_detector"])
    _steps(c, content)
    _alerts(c, content, colours)
    _actions(c, content)
    _availability(c, content)
    bottom = c.y + 4
    _axis(c, bottom, content["run"].get("baseline_end"))
    _legend(c, content)
    height = c.y + 6
    return (f'<svg class="cr-timeline" viewBox="0 0 {WIDTH} {height}" width="100%" '
            f'role="img" aria-label="drill timeline" data-t0="{c.t0:.3f}" '
            f'data-origin="{c.origin:.3f}" data-scale="{c.scale:.6f}" data-left="{LEFT}" '
            f'data-width="{WIDTH}">' + "".join(c.parts) + "</svg>")
