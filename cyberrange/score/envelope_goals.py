"""Detection envelopes, part 3: the time-to-detect goal, measured inside the envelopes.

Issue 15's goal: *median time to detect <= 10 s for scans, floods and brute force inside their
envelopes*. For every family, the steps **inside its published envelope** are the counted steps
of the evaluation split that lie in a passed bin of every axis with an envelope
(``envelope_eval.envelope`` per axis, any detector: the envelopes the docs publish; a scan's
rate axis may have none while its probe axis says ">= 8 probes"). Their times to detect (on time
only: from the step's start to the first alert no later than ``LATE_S`` after its end) give a
median and a 90th percentile.

A verdict is never ✔ without evidence: a group (scans, floods, brute force) is **met** only
when its pooled median is <= ``GOAL_S`` over at least ``MIN_DETECTED`` detected steps and
every family of it that was measured has an envelope; **partly measured** when the median is
met but some family has counted steps and no envelope (it is named); **not met** when the
median is above the goal; **not measured** when no family of the group has an envelope or
too few of its steps were detected. Steps inside the envelope that were missed
are counted beside the times (they have no time to detect; recall inside is >= 0.9 anyway).
"""
from __future__ import annotations

import math
import statistics

from .envelope import FAMILIES
from .envelope_eval import (
    EDGES,
    TARGET,
    axes,
    axis_rows,
    bin_outcomes,
    envelope,
    envelope_text,
)

__all__ = ["GOAL_S", "GROUPS", "MIN_DETECTED", "RECALL_GOAL", "given_up", "inside_envelope",
           "percentile",
           "recall_goal", "recall_lines", "ttd_goal", "ttd_lines", "ttd_markdown", "wider_goal",
           "wider_lines"]

GOAL_S = 10.0
MIN_DETECTED = 3          # fewer detected steps than this: the median is not measured
#: the goal's groups of families (banner grabs and replayed worm scans are scans too)
GROUPS = {"scans": ("scan", "sweep", "arp-scan", "banner", "replay"),
          "floods": ("udp-flood", "syn-flood"),
          "brute force": ("guess", "spray")}


def percentile(xs: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``xs`` (linear between the closest ranks); None if empty."""
    if not xs:
        return None
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _bin_index(x: float, edges: list[float]) -> int:
    return max([i for i, e in enumerate(edges) if x >= e] or [0])


def inside_envelope(outcomes: list[dict], family: str) -> tuple[list[dict], list[str]]:
    """The counted steps of ``family`` inside its published envelope (any detector), and the
    envelope's text per axis. The page publishes one envelope per axis (main parameter and
    ``also``); a step is inside when it lies in a passed bin of **every axis that has an
    envelope** (a bin passes when the walk from the easy end reached it). No axis with an
    envelope: no step is inside."""
    mine = [o for o in outcomes if o["family"] == family and o["counted"]]
    rows, texts = None, []
    for k, (param, harder, _unit) in enumerate(axes(family)):
        edges = EDGES[family] if k == 0 else EDGES[f"{family}:{param}"]
        # each axis's envelope is measured on the steps axis_rows gives it (a secondary axis
        # inside the main's envelope; a main axis without one inside the others')
        base = [o for o in axis_rows(mine, family, param)[0] if o["counted"]]
        have = [o for o in base if param in o["params"]]
        env = envelope(bin_outcomes(have, param, edges), harder)
        if not env["bins"]:
            continue
        passed = set(env["passed"])
        texts.append(envelope_text(env, family, param))
        ok = {id(o) for o in mine if param in o["params"]
              and _bin_index(float(o["params"][param]), edges) in passed}
        rows = [o for o in (mine if rows is None else rows) if id(o) in ok]
    return rows or [], texts


def _stats(rows: list[dict]) -> dict:
    ttd = [float(o["ttd"]) for o in rows if o["detected"] and o["ttd"] is not None]
    med = statistics.median(ttd) if ttd else None
    return {"inside": len(rows), "detected": len(ttd),
            "missed": sum(not o["detected"] for o in rows),
            "median": None if med is None else round(med, 1),
            "p90": None if not ttd else round(percentile(ttd, 90), 1)}


def _verdict(st: dict, has_envelope: bool) -> tuple[str, str]:
    if not has_envelope:
        return "not measured", "no envelope (no bin reached recall 0.9 on 2+ steps)"
    if st["detected"] < MIN_DETECTED:
        return "not measured", (f"{st['detected']} detected step(s) inside, fewer than "
                                f"{MIN_DETECTED}")
    if st["median"] <= GOAL_S:
        return "met", f"median {st['median']:g} s <= {GOAL_S:g} s"
    return "not met", f"median {st['median']:g} s > {GOAL_S:g} s"


def ttd_goal(outcomes: list[dict]) -> dict:
    """Per family and per goal group: steps inside the envelope, detected, median and p90
    time to detect, and the verdict (``outcomes``: the evaluation split's step outcomes)."""
    fams, inside = {}, {}
    for fam in FAMILIES:
        rows, texts = inside_envelope(outcomes, fam)
        inside[fam] = rows
        st = _stats(rows)
        group = next((g for g, members in GROUPS.items() if fam in members), None)
        status, why = (_verdict(st, bool(texts)) if group
                       else ("no goal", "not in the goal's groups"))
        fams[fam] = {**st, "envelope": " and ".join(texts) or "none", "group": group,
                     "status": status, "why": why}
    groups = {}
    for g, members in GROUPS.items():
        rows = [o for m in members for o in inside[m]]
        st = _stats(rows)
        with_env = [m for m in members if fams[m]["inside"]]
        status, why = _verdict(st, bool(with_env))
        # a family of the group with counted steps but no envelope is not measured: the
        # group's median then speaks for the others only, and says so
        blind = [m for m in members if not fams[m]["inside"]
                 and any(o["family"] == m and o["counted"] for o in outcomes)]
        if status == "met" and blind:
            status = "partly measured"
            why += f" over {', '.join(with_env)}; no envelope: {', '.join(blind)}"
        groups[g] = {**st, "families": list(members), "with_envelope": with_env,
                     "status": status, "why": why}
    overall = ("met" if all(x["status"] == "met" for x in groups.values())
               else "not met" if any(x["status"] == "not met" for x in groups.values())
               else "not measured in full")
    return {"goal_s": GOAL_S, "min_detected": MIN_DETECTED, "families": fams,
            "groups": groups, "overall": overall}


def _s(x) -> str:
    return "—" if x is None else f"{x:g} s"


MARK = {"met": "met", "not met": "**not met**", "not measured": "not measured",
        "partly measured": "partly measured", "no goal": "—"}


def ttd_markdown(goal: dict) -> list[str]:
    """The goal's table (groups) and the per-family table, as Markdown lines."""
    lines = ["### Time to detect inside the envelopes (evaluation split)", "",
             (f"Goal: median time to detect <= {goal['goal_s']:g} s for scans, floods and brute "
              f"force, over the steps inside each family's envelope (any detector), on time "
              f"only; fewer than {goal['min_detected']} detected steps is *not measured*. "
              f"Overall: **{goal['overall']}**."), "",
             ("| goal group | families with an envelope | steps inside | detected | median | "
              "p90 | verdict |"), "|---|---|---:|---:|---:|---:|---|"]
    for g, x in goal["groups"].items():
        lines.append(f"| {g} | {', '.join(x['with_envelope']) or 'none'} | {x['inside']} | "
                     f"{x['detected']} | {_s(x['median'])} | {_s(x['p90'])} | "
                     f"{MARK[x['status']]} ({x['why']}) |")
    lines += ["", ("| family | goal group | envelope (every axis that has one) | steps inside | detected | "
                   "missed | median TTD | p90 TTD | verdict |"),
              "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for fam, x in goal["families"].items():
        lines.append(f"| {fam} | {x['group'] or '—'} | {x['envelope']} | {x['inside']} | "
                     f"{x['detected']} | {x['missed']} | {_s(x['median'])} | {_s(x['p90'])} | "
                     f"{MARK[x['status']]} |")
    return lines + [""]


def ttd_lines(goal: dict) -> list[str]:
    """The same, as plain terminal lines (``bench/envelope.py eval`` prints them)."""
    out = [(f"time to detect inside the envelopes (eval split, goal median <= "
            f"{goal['goal_s']:g} s): {goal['overall']}")]
    for g, x in goal["groups"].items():
        out.append(f"  {g:<12} {x['status']:<13} median {_s(x['median']):>7}  p90 "
                   f"{_s(x['p90']):>7}  {x['detected']}/{x['inside']} detected inside  "
                   f"({x['why']})")
    for fam, x in goal["families"].items():
        out.append(f"    {fam:<13} median {_s(x['median']):>7}  p90 {_s(x['p90']):>7}  "
                   f"{x['detected']}/{x['inside']} inside  [{x['status']}]  {x['envelope']}")
    return out


# ---------------------------------------------------------------------------- recall inside
RECALL_GOAL = 0.9


def recall_goal(outcomes: list[dict]) -> dict:
    """Issue 15's *recall >= 0.9 inside the envelope*, per family, over the evaluation split's
    counted steps inside every axis that has an envelope (``inside_envelope``). A family with
    counted steps but no envelope is *not measured* (never met). The envelope is drawn from
    these very steps (bins of recall >= 0.9), so on this split the goal mostly checks the
    intersection of the axes; the independent test is the corpus (``corpus_envelope``) and
    the next fresh evaluation split."""
    fams = {}
    for fam in FAMILIES:
        counted = sum(o["family"] == fam and o["counted"] for o in outcomes)
        if not counted:
            continue
        rows, texts = inside_envelope(outcomes, fam)
        det = sum(o["detected"] for o in rows)
        rec = round(det / len(rows), 3) if rows else None
        status = ("not measured" if not texts or not rows else
                  "met" if rec >= RECALL_GOAL else "not met")
        fams[fam] = {"counted": counted, "inside": len(rows), "detected": det, "recall": rec,
                     "envelope": " and ".join(texts) or "none", "status": status}
    low = [f for f, x in fams.items() if x["status"] == "not met"]
    blind = [f for f, x in fams.items() if x["status"] == "not measured"]
    overall = "not met" if low else "not measured in full" if blind else \
        "met" if fams else "not measured"
    return {"goal": RECALL_GOAL, "families": fams, "below": low, "not_measured": blind,
            "overall": overall}


def recall_lines(goal: dict, mark: bool = True) -> list[str]:
    """The goal as one Markdown list line (``mark``: with ✔/✘) and the per-family table."""
    x = goal["families"]
    inside = sum(f["inside"] for f in x.values())
    det = sum(f["detected"] for f in x.values())
    parts = []
    if goal["below"]:
        parts.append("below: " + ", ".join(f"{f} {x[f]['recall']:.2f} ({x[f]['detected']}/"
                                           f"{x[f]['inside']})" for f in goal["below"]))
    if goal["not_measured"]:
        parts.append("not measured (no envelope or no step inside): "
                     + ", ".join(goal["not_measured"]))
    parts.append(f"{det}/{inside} steps inside the envelopes detected, "
                 f"{sum(f['status'] == 'met' for f in x.values())} of {len(x)} families met")
    sym = {"met": "✔", "not met": "✘", "not measured in full": "✘", "not measured": "–"}
    head = (f"- {sym[goal['overall']] + ' ' if mark else ''}every family recall >= "
            f"{goal['goal']:g} inside its envelope (evaluation split): {goal['overall']}; "
            + "; ".join(parts))
    lines = [head, "", ("| family | envelope (every axis that has one) | counted | inside | "
             "detected inside | recall inside | verdict |"), "|---|---|---:|---:|---:|---:|---|"]
    for f, r in x.items():
        rec = "—" if r["recall"] is None else f"{r['recall']:.2f}"
        lines.append(f"| {f} | {r['envelope']} | {r['counted']} | {r['inside']} | "
                     f"{r['detected']} | {rec} | {MARK.get(r['status'], r['status'])} |")
    return lines + [""]


def _in_region(fam: dict, o: dict) -> bool:
    """Whether step ``o`` lies inside every bounded axis of a published family envelope."""
    from .envelope_publish import axis_inside
    for a in fam.get("axes", []):
        if not a.get("direction"):
            continue
        x = o["params"].get(a["param"])
        if x is None or not axis_inside(a, float(x)):
            return False
    return True


def given_up(before: dict, after: dict, outcomes: list[dict], fam: str) -> dict:
    """The counted steps of the evaluation split inside ``fam``'s earlier envelope and outside
    today's -- what a narrowing gives up -- and how many of them today's detectors caught on
    time. Recall below the target there means the earlier envelope did not hold where it is
    now cut, when measured (it was claimed over values it had no steps at)."""
    fb, fa = before["families"].get(fam, {}), after["families"][fam]
    rows = [o for o in outcomes if o["family"] == fam and o["counted"]
            and _in_region(fb, o) and not _in_region(fa, o)]
    n, d = len(rows), sum(bool(o["detected"]) for o in rows)
    return {"steps": n, "detected": d, "recall": round(d / n, 2) if n else None,
            "held": None if not n else d / n >= TARGET}


def wider_goal(before: dict | None, after: dict, source: str | None,
               outcomes: list[dict] | None = None) -> dict:
    """*Every envelope wider than before*: per family, the published envelope against the
    ``before`` file's (``envelope_publish.compare``); not measured without a before file. With
    the evaluation split's ``outcomes``, each narrower family also gets ``given_up``: the steps
    inside the earlier envelope and outside today's, and today's recall on them."""
    from .envelope_publish import compare
    if before is None:
        return {"overall": "not measured", "why": "no earlier published envelope file",
                "families": {}, "source": source}
    fams = compare(before, after)
    if outcomes is not None:
        for f, x in fams.items():
            if x["verdict"] == "narrower":
                x["given_up"] = given_up(before, after, outcomes, f)
    measured = {f: x for f, x in fams.items() if x["verdict"] != "not measured"}
    wider = [f for f, x in measured.items() if x["verdict"] == "wider"]
    overall = ("met" if measured and len(wider) == len(fams) else
               "not measured" if not measured else "not met")
    return {"overall": overall, "families": fams, "wider": wider, "source": source,
            "why": f"{len(wider)} of {len(fams)} families wider"}


def wider_lines(goal: dict) -> list[str]:
    sym = {"met": "✔", "not met": "✘", "not measured": "–"}
    if not goal["families"]:
        return [(f"- {sym[goal['overall']]} every envelope wider than before: not measured "
                f"({goal['why']}{': ' + goal['source'] if goal.get('source') else ''}); the "
                "published file becomes the baseline once frozen"), ""]
    x = goal["families"]
    same = [f for f, r in x.items() if r["verdict"] == "same"]
    worse = [f for f, r in x.items() if r["verdict"] in ("narrower", "not comparable")]
    blind = [f for f, r in x.items() if r["verdict"] == "not measured"]
    detail = "; ".join(p for p in (
        f"wider: {', '.join(goal['wider'])}" if goal["wider"] else "",
        f"same: {', '.join(same)}" if same else "",
        f"narrower: {', '.join(worse)}" if worse else "",
        f"no envelope before or after: {', '.join(blind)}" if blind else "") if p)
    lines = [(f"- {sym[goal['overall']]} every envelope wider than before (before: "
             f"{goal['source']}): {goal['overall']}, {goal['why']}; {detail}"), "",
             "| family | before | now | verdict | per axis |", "|---|---|---|---|---|"]
    for f, r in x.items():
        axes_txt = ", ".join(f"{k} {v}" for k, v in r["axes"].items())
        lines.append(f"| {f} | {r['before']} | {r['after']} | {r['verdict']} | {axes_txt} |")
    lines.append("")
    for f, r in x.items():
        g = r.get("given_up")
        if not g:
            continue
        if not g["steps"]:
            lines.append(f"- {f}: no step of the evaluation split lies in the part given up "
                         "(inside the earlier envelope, outside today's)")
            continue
        what = ("the earlier envelope held there: a real narrowing" if g["held"] else
                "the earlier envelope does **not** hold there when measured: it was claimed "
                "over values it had no steps at")
        lines.append(f"- {f}: the part given up (inside the earlier envelope, outside today's) "
                     f"holds {g['steps']} step(s) of the evaluation split; today's detectors "
                     f"caught {g['detected']} on time (recall {g['recall']:.2f}): {what}")
    return lines + [""]
