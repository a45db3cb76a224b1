"""The after-action report as one self-contained HTML file: inline CSS, inline SVG (the timeline
of ``timeline.py`` and the network picture of ``netmap.py``) and a few lines of plain script for
tooltips and a time cursor. It fetches nothing: it can be mailed, archived or opened offline.

Sections, each left out (with a one-line note) when the run has nothing for it: header and key
figures, timeline, attack steps (a step detected only late shows "late (N s)"), incidents (the
kill-chain view, ``report/incidents.py``), network picture, blue team (action log and the scorecard's
``blue`` section), mission availability, link events (DDIL: ``report/linkview.py``), detectors,
flows and capture, notes and run details.
"""
from __future__ import annotations

import time
from html import escape

from cyberrange.report import incidents, linkview, netmap, timeline
from cyberrange.report.content import utc
from cyberrange.report.picture import CLASS_COLOURS

CSS = """
:root{--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--accent:#1f5fbf;
--red:#d62728;--green:#1a7f37;--amber:#b26a00}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:var(--bg)}
.banner{color:#fff;text-align:center;font-weight:700;letter-spacing:.2em;padding:3px;font-size:12px}
header{background:#1d2330;color:#fff;padding:22px 32px 18px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header .sub{color:#c7cdd8;font-size:15px}
header .meta{display:flex;flex-wrap:wrap;gap:6px 26px;margin-top:12px;font-size:13px;color:#c7cdd8}
header .meta b{color:#fff;font-weight:600}
main{max-width:1320px;margin:0 auto;padding:18px 24px 40px}
nav{display:flex;flex-wrap:wrap;gap:4px 16px;margin:0 0 14px;font-size:13px}
nav a{color:var(--accent);text-decoration:none}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:16px 20px;margin:0 0 18px}
h2{font-size:17px;margin:0 0 12px;font-weight:600}
h3{font-size:14px;margin:16px 0 8px;font-weight:600}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:0 0 18px}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.kpi .v{font-size:22px;font-weight:650}
.kpi .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.kpi.good .v{color:var(--green)}.kpi.bad .v{color:var(--red)}.kpi.warn .v{color:var(--amber)}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;border-bottom:2px solid var(--line);
padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:6px 8px;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.hl td{background:#fff6d6}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:#fff;white-space:nowrap}
.yes{color:var(--green);font-weight:600}.no{color:var(--red);font-weight:600}
.late{color:var(--amber);font-weight:600}
.muted,.note{color:var(--muted)}.reason{color:var(--muted);font-size:12px;display:block}
.small{font-size:12px}
.split{display:inline-flex;border-radius:4px;overflow:hidden;vertical-align:middle}
.bar{display:inline-block;height:9px;background:var(--green)}.bar.f{background:var(--red)}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12px;color:var(--muted);margin-top:6px}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;vertical-align:-2px;margin-right:5px}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
.cr-timeline{display:block}
.cr-lane-bg0{fill:#fafbfc}.cr-lane-bg1{fill:#f1f3f6}
.cr-lane-head{font-size:13px;font-weight:700;fill:#1d2330}
.cr-lane-note{font-size:12px;fill:#98a2b3;font-style:italic}
.cr-lane-label{font-size:12px;fill:#344054}
.cr-grid{stroke:#e4e7ec;stroke-width:1}.cr-tick{font-size:11px;fill:#667085}
.cr-baseline{stroke:#98a2b3;stroke-dasharray:4 4}.cr-baseline-label{font-size:11px;fill:#98a2b3}
.cr-step{stroke:rgba(0,0,0,.25);cursor:pointer}.cr-step:hover{stroke:#000;stroke-width:2}
.cr-detect{fill:#1a7f37;stroke:#fff;stroke-width:1.5}
.cr-missed{font-size:11px;font-weight:700;fill:#d62728}
.cr-alert:hover,.cr-action:hover{stroke-width:3}
.cr-action-span{opacity:.18}
.cr-avail{fill:none;stroke-width:2}.cr-avail-area{fill:rgba(44,160,44,.15)}
.cr-probe-fail{stroke:#d62728;stroke-width:2}
.cr-legend{font-size:11px;fill:#667085}
.cr-cursor{stroke:#1d2330;stroke-width:1;pointer-events:none}
.cr-cursor-label{font-size:11px;fill:#1d2330;pointer-events:none}
#tip{position:fixed;pointer-events:none;background:#1d2330;color:#fff;font-size:12px;
padding:6px 9px;border-radius:6px;max-width:460px;white-space:pre-line;display:none;z-index:9;
box-shadow:0 4px 12px rgba(0,0,0,.25)}
.cr-netmap{max-height:900px;display:block;margin:0 auto}
footer{color:var(--muted);font-size:12px;text-align:center;padding:10px}
"""

SCRIPT = """
(function(){
  var tip=document.getElementById('tip');
  document.querySelectorAll('[data-tip]').forEach(function(el){
    var t=el.querySelector('title'); if(t){t.remove();}
    el.addEventListener('mousemove',function(e){
      tip.textContent=el.getAttribute('data-tip'); tip.style.display='block';
      var x=e.clientX+14, y=e.clientY+14;
      if(x+tip.offsetWidth>window.innerWidth-8){x=e.clientX-tip.offsetWidth-14;}
      if(y+tip.offsetHeight>window.innerHeight-8){y=e.clientY-tip.offsetHeight-14;}
      tip.style.left=x+'px'; tip.style.top=y+'px';});
    el.addEventListener('mouseleave',function(){tip.style.display='none';});
  });
  document.querySelectorAll('.cr-step[data-step]').forEach(function(el){
    el.addEventListener('click',function(){
      var row=document.getElementById('step-'+el.getAttribute('data-step'));
      if(!row){return;}
      document.querySelectorAll('tr.hl').forEach(function(r){r.classList.remove('hl');});
      row.classList.add('hl'); row.scrollIntoView({behavior:'smooth',block:'center'});});
  });
  var svg=document.querySelector('svg.cr-timeline');
  if(svg){
    var ns='http://www.w3.org/2000/svg', vb=svg.viewBox.baseVal;
    var left=+svg.dataset.left, width=+svg.dataset.width, scale=+svg.dataset.scale;
    var t0=+svg.dataset.t0, origin=+svg.dataset.origin;
    var line=document.createElementNS(ns,'line'), label=document.createElementNS(ns,'text');
    line.setAttribute('class','cr-cursor'); label.setAttribute('class','cr-cursor-label');
    line.setAttribute('y1',20); line.setAttribute('y2',vb.height-34);
    line.style.display=label.style.display='none'; svg.appendChild(line); svg.appendChild(label);
    svg.addEventListener('mousemove',function(e){
      var r=svg.getBoundingClientRect(), x=(e.clientX-r.left)*vb.width/r.width;
      if(x<left||x>width-24){line.style.display=label.style.display='none';return;}
      var t=t0+(x-left)/scale-origin;
      line.setAttribute('x1',x); line.setAttribute('x2',x);
      label.setAttribute('x',x+4); label.setAttribute('y',30);
      label.textContent=(t>=0?'+':'')+t.toFixed(2)+' s';
      line.style.display=label.style.display='';});
    svg.addEventListener('mouseleave',function(){line.style.display=label.style.display='none';});
  }
  document.body.setAttribute('data-ready','1');
})();
"""


def _e(v) -> str:
    return escape("—" if v is None else str(v))


def _s(v, digits=2) -> str:
    return "—" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.{digits}f} s"


def _pct(v) -> str:
    return "—" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.1%}"


def _badge(outcome) -> str:
    return (f'<span class="badge" style="background:{timeline.outcome_colour(outcome)}">'
            f'{_e(outcome)}</span>')


def _yesno(v, yes="yes", no="no") -> str:
    if v is None:
        return '<span class="muted">—</span>'
    return f'<span class="yes">{yes}</span>' if v else f'<span class="no">{no}</span>'


def _table(head: list[str], rows: list[list[str]], num: set[int] = frozenset(),
           row_ids: list[str] | None = None, cls: str = "") -> str:
    th = "".join(f'<th{" class=n" if k in num else ""}>{escape(h)}</th>'
                 for k, h in enumerate(head))
    body = []
    for i, r in enumerate(rows):
        rid = f' id="{escape(row_ids[i], quote=True)}"' if row_ids else ""
        body.append(f"<tr{rid}>" + "".join(f'<td{" class=n" if k in num else ""}>{c}</td>'
                                           for k, c in enumerate(r)) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# -- generic JSON -> HTML (the blue section's layout is another team's; show whatever it holds)
def _value(v, depth=0) -> str:
    if isinstance(v, bool) or v is None:
        return _yesno(v)
    if isinstance(v, float):
        return escape(f"{v:.4g}")
    if isinstance(v, (int, str)):
        return escape(str(v))
    if isinstance(v, dict):
        return _kv(v, depth + 1) if depth < 3 else escape(str(v))
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v) and depth < 3:
            cols = list(dict.fromkeys(k for x in v for k in x))
            return _table(cols, [[_value(x.get(c), depth + 1) for c in cols] for x in v],
                          cls="small")
        return escape(", ".join(str(x) for x in v)) or "—"
    return escape(str(v))


def _kv(d: dict, depth=0) -> str:
    rows = "".join(f"<tr><th>{escape(str(k).replace('_', ' '))}</th><td>{_value(v, depth)}</td>"
                   "</tr>" for k, v in d.items())
    return f'<table class="kv small">{rows}</table>'


# -- sections -----------------------------------------------------------------------------------
def _header(c: dict, topo) -> str:
    r = c["run"]
    cls = topo.classification if topo is not None else None
    banner = (f'<div class="banner" style="background:{CLASS_COLOURS.get(cls, "#555")}">'
              f'{escape(cls)}</div>') if cls else ""
    tm = r["timings"]
    meta = [("run", r["run_id"]), ("status", r["status"]), ("started", utc(r["created"])),
            ("drill wall time", _s(tm.get("total_s"), 1)), ("attack", _s(tm.get("attack_s"), 1)),
            ("detectors", len(r["detectors"])), ("seed", r["seed"])]
    if r.get("link_emulation"):
        meta.append(("link emulation", r["link_emulation"]))
    return (f'{banner}<header><h1>After-action report</h1><div class="sub">topology '
            f'<b>{_e(r["topology"])}</b> · playbook <b>{_e(r["playbook"] or "none (benign only)")}'
            f'</b></div><div class="meta">'
            + "".join(f"<span>{escape(k)} <b>{_e(v)}</b></span>" for k, v in meta)
            + (f'<span>error <b>{_e(r["error"])}</b></span>' if r["error"] else "")
            + "</div></header>")


def _kpis(c: dict) -> str:
    steps = c["steps"]
    obs = [s for s in steps if s["observable"]]
    det = [s for s in obs if s["detected"]]
    ttd = [s["time_to_detect_s"] for s in det if isinstance(s["time_to_detect_s"], (int, float))]
    a, f = c["alerts"], c["flows"]
    cards = []
    if steps:
        cards.append(("steps detected", f"{len(det)} / {len(obs)}",
                      "good" if obs and len(det) == len(obs) else "bad" if obs else ""))
        cards.append(("mean time to detect", _s(sum(ttd) / len(ttd)) if ttd else "—", ""))
    late = [s for s in obs if not s["detected"] and s.get("detected_late")]
    if late:
        cards.append(("steps detected late", f"{len(late)} / {len(obs)}", "warn"))
    cards.append(("alerts true / false", f"{_e(a['true'])} / {_e(a['false'])}",
                  "warn" if a.get("false") else "good"))
    inc = c.get("incidents")
    if isinstance(inc, dict):
        cards.append(("incidents true / false", f"{_e(inc.get('true'))} / {_e(inc.get('false'))}",
                      "bad" if inc.get("is_incident") is False or inc.get("false") else "good"))
    cards.append(("flow precision / recall",
                  f"{_ratio(f.get('precision'))} / {_ratio(f.get('recall'))}", ""))
    cap = c["run"].get("capture")
    if cap:
        cards.append(("capture", cap, "good" if cap == "zero loss" else "bad"))
    av = c["availability"]
    if av is not None and isinstance(av.get("overall"), (int, float)):
        cards.append(("mission availability", _pct(av["overall"]),
                      "good" if av["overall"] >= 0.999 else "warn"))
    blue = c["blue"] or {}
    score = next((blue[k] for k in ("score", "overall", "total") if
                  isinstance(blue.get(k), (int, float)) and not isinstance(blue.get(k), bool)),
                 None)
    if score is not None:
        cards.append(("blue score", f"{score:.3g}", ""))
    if any(s["contained"] is not None for s in steps):
        n = sum(1 for s in steps if s["contained"])
        cards.append(("steps contained", f"{n} / {len(steps)}", "good" if n else "warn"))
    return '<div class="kpis">' + "".join(
        f'<div class="kpi {k}"><div class="v">{escape(str(v))}</div><div class="l">'
        f'{escape(lbl)}</div></div>' for lbl, v, k in cards) + "</div>"


def _split_bar(share: float, width: int = 80) -> str:
    """A bar ``width`` pixels long: green for ``share``, red for the rest."""
    good = round(width * max(0.0, min(1.0, share)))
    return (f'<span class="split" title="{share:.0%}"><span class="bar" style="width:{good}px">'
            f'</span><span class="bar f" style="width:{width - good}px"></span></span>')


def _ratio(v) -> str:
    return "—" if not isinstance(v, (int, float)) else f"{v:.2f}"


def _steps(c: dict) -> str:
    steps = c["steps"]
    if not steps:
        return '<p class="note">No attack step: a benign-only drill.</p>'
    show_blue = any(s["contained"] is not None for s in steps)
    head = ["step", "technique", "name", "outcome", "packets", "attack flows", "detected",
            "time to detect", "detected by"] + (["contained?", "time to contain"] if show_blue
                                                 else [])
    rows = []
    for s in steps:
        reason = f'<span class="reason">{_e(s["reason"])}</span>' if s["reason"] else ""
        tech = (f'<b>{_e(s["technique"])}</b>'
                + (f'<span class="reason">{_e(s["technique_name"])}</span>'
                   if s["technique_name"] else ""))
        why = s.get("unobservable") or "the step sent nothing a sensor could see"
        detected = _yesno(s["detected"]) if s["observable"] else \
            f'<span class="muted" title="{escape(why, quote=True)}">not observable</span>' + \
            (f'<span class="reason">{_e(why)}</span>' if s.get("unobservable") else "")
        by = _e(", ".join(s["detected_by"]) or None)
        if s["observable"] and not s["detected"] and s.get("detected_late"):
            detected = (f'<span class="late" title="detected only after the step ended plus the '
                        f'scorecard&#39;s late_s: not on time">late ({_s(s.get("late_detect_s"), 1)})'
                        f'</span>')
            by = f'<span class="muted">{_e(", ".join(s.get("late_by") or []) or None)} (late)</span>'
        row = [f'<b>{_e(s["step_id"])}</b>', tech, _e(s["name"]), _badge(s["outcome"]) + reason,
               _e(s["packets"]), _e(s["attack_flows"]), detected, _s(s["time_to_detect_s"]), by]
        if show_blue:
            by = f'<span class="reason">{_e(s["contained_by"])}</span>' if s["contained_by"] else ""
            row += [_yesno(s["contained"]) + by, _s(s["time_to_contain_s"])]
        rows.append(row)
    return _table(head, rows, num={4, 5, 7}, row_ids=[f'step-{s["step_id"]}' for s in steps],
                  cls="steps")


def _picture(c: dict, topo) -> str:
    if topo is None:
        return '<p class="note">No network picture: the topology file could not be read ' \
               '(see notes).</p>'
    m = c["picture"]
    svg = netmap.svg(topo, m, salt=str(c["run"]["run_id"]))
    bits = [f"attacker: {', '.join(m['actors'])}" if m["actors"] else "",
            f"compromised: {', '.join(m['compromised'])}" if m["compromised"] else "",
            f"isolated by blue: {', '.join(m['isolated'])}" if m["isolated"] else "",
            f"blocked by blue: {', '.join(m['blocked'])}" if m["blocked"] else ""]
    caption = " · ".join(b for b in bits if b)
    return f'{svg}<p class="note small">{escape(caption)}</p>' if caption else svg


def _actions_table(acts: list[dict], origin) -> str:
    rows = []
    for a in acts:
        params = ", ".join(f"{k}={v}" for k, v in a["params"].items())
        result = (f'<span class="{"yes" if a["result"] == "applied" else "no"}">'
                  f'{_e(a["result"])}</span>'
                  + (f'<span class="reason">{_e(a["reason"])}</span>' if a["reason"] else ""))
        until = "—" if a["until"] is None else f'{a["until"] - origin:+.2f} s'
        rows.append([_e(a["id"]), f'{a["time"] - origin:+.2f} s', _e(a["actor"]),
                     f'<b>{_e(a["action"])}</b>', _e(params or None), result,
                     _e(a["reverts"]), until, _s(a["applied_s"], 3)])
    return _table(["id", "time", "actor", "action", "parameters", "result", "reverts",
                   "reverted at", "took"], rows, num={1, 7, 8}, cls="actions")


def _blue(c: dict) -> str:
    out = []
    acts = c["actions"]
    if acts is None:
        out.append('<p class="note">No action log: nobody acted during this drill '
                   '(<code>actions.jsonl</code> absent).</p>')
    elif not acts:
        out.append('<p class="note">The action log is empty.</p>')
    else:
        out.append("<h3>Action log</h3>" + _actions_table(acts, c["origin"] or 0))
    if c["blue"]:
        out.append("<h3>Blue scorecard</h3>" + _kv(c["blue"]))
    else:
        out.append('<p class="note">No blue scorecard in this run\'s scorecard.json.</p>')
    return "".join(out)


def _availability(c: dict) -> str:
    av = c["availability"]
    if av is None:
        return '<p class="note">No mission availability probes in this run.</p>'
    threads = av.get("threads") or {}
    latency = any(isinstance(t, dict) and t.get("latency_ms") is not None
                  for t in threads.values())
    rows = []
    def service(item) -> bool:
        name, t = item
        return t.get("kind") == "service" if isinstance(t, dict) and "kind" in t else \
            name.startswith("service:")
    for name, t in sorted(threads.items(), key=lambda kv: (service(kv), kv[0])):
        t = t if isinstance(t, dict) else {}
        p = t.get("availability")
        bar = _split_bar(p) + " " if isinstance(p, (int, float)) else ""
        first = t.get("first_down")
        rows.append([_e(name), _e(t.get("probes")), _e(t.get("ok")), bar + _pct(p),
                     "—" if not isinstance(first, (int, float)) else
                     f"{first - (c['origin'] or 0):+.2f} s", _s(t.get("down_s"), 1)]
                    + ([_e(t.get("latency_ms")) if not isinstance(t.get("latency_ms"), float)
                        else f"{t['latency_ms']:.1f} ms"] if latency else []))
    note = "" if av.get("scored", True) else \
        '<p class="note small">Counted from availability.jsonl: the scorecard has no ' \
        'availability section.</p>'
    return note + _table(["thread", "probes", "ok", "availability", "first down", "down for"]
                         + (["median latency"] if latency else []),
                         rows, num={1, 2, 4, 5, 6}, cls="availability")


def _detectors(c: dict) -> str:
    by = c["alerts"]["by_detector"]
    if not by:
        return '<p class="note">No detector raised an alert.</p>'
    colours = timeline.detector_colours(by)
    rows = []
    for name, d in sorted(by.items()):
        t, f = d.get("true") or 0, d.get("false") or 0
        bar = _split_bar(t / (t + f)) if t + f else ""
        first = d.get("first")
        rows.append([f'<span class="sw" style="background:{colours[name]}"></span>{_e(name)}',
                     _e(d.get("total")), _e(d.get("true")), _e(d.get("false")), bar,
                     "—" if first is None else f"{first - (c['origin'] or 0):+.2f} s",
                     _e(", ".join(d.get("techniques") or []) or None)])
    return _table(["detector", "alerts", "true", "false", "", "first alert", "claims"],
                  rows, num={1, 2, 3, 5}, cls="detectors")


def _flows(c: dict) -> str:
    f, rec = c["flows"], c["reconciliation"]
    rows = [["connections (deduplicated)", _e(f.get("total"))],
            ["attack / benign", f"{_e(f.get('attack'))} / {_e(f.get('benign'))}"],
            ["flagged attack / benign", f"{_e(f.get('flagged_attack'))} / "
                                        f"{_e(f.get('flagged_benign'))}"],
            ["precision / recall", f"{_ratio(f.get('precision'))} / {_ratio(f.get('recall'))}"]]
    if rec:
        rows += [["attack packets: ledger / stored",
                  f"{_e(rec.get('ledger_packets'))} / {_e(rec.get('stored_packets'))}"],
                 ["capture", _e(rec.get("verdict"))]]
    return _table(["measure", "value"], rows, num={1})


def _details(c: dict) -> str:
    r = c["run"]
    notes = [escape(n) for n in c["notes"]] + [f"warning: {escape(w)}" for w in r["warnings"]]
    out = ("<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>") if notes else \
        '<p class="note">No notes.</p>'
    timings = ", ".join(f"{k} {v}" for k, v in r["timings"].items())
    inputs = ", ".join(f"{k}: {v}" for k, v in r["inputs"].items())
    return out + _kv({"inputs": inputs or None, "timings": timings or None,
                      "detectors": ", ".join(r["detectors"]) or None,
                      "finished": utc(r["finished"])})


SECTIONS = [("timeline", "Timeline"), ("steps", "Attack steps"), ("incidents", "Incidents"),
            ("network", "Network picture"),
            ("blue", "Blue team"), ("availability", "Mission availability"),
            ("links", "Link events"), ("detectors", "Detectors"), ("flows", "Flows and capture"),
            ("details", "Notes and run details")]


def render(content: dict) -> str:
    """The whole page as a string."""
    topo = content.get("_topology")
    body = {
        "timeline": timeline.svg(content) + '<p class="note small">Hover a mark for details; '
                    'click a step to find it in the table. Times here and below are seconds '
                    'from the start of the first attack step (' + escape(utc(content["origin"]))
                    + ').</p>',
        "steps": _steps(content), "incidents": incidents.html_section(content.get("incidents")),
        "network": _picture(content, topo), "blue": _blue(content),
        "availability": _availability(content), "links": linkview.html_section(content),
        "detectors": _detectors(content),
        "flows": _flows(content), "details": _details(content),
    }
    nav = "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS)
    sections = "".join(f'<section id="{k}"><h2>{escape(t)}</h2>{body[k]}</section>'
                       for k, t in SECTIONS)
    from cyberrange import __version__
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    title = f"After-action report {content['run']['run_id']}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{escape(title)}</title><style>{CSS}</style></head><body>'
            f'{_header(content, topo)}<main><nav>{nav}</nav>{_kpis(content)}{sections}</main>'
            f'<footer>cyberrange {escape(__version__)} · written {stamp} · one self-contained '
            f'file</footer><div id="tip"></div><script>{SCRIPT}</script></body></html>\n')


def write_html(content: dict, path) -> None:
    from pathlib import Path
    Path(path).write_text(render(content), encoding="utf-8")
