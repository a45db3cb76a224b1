"""Detection envelopes, part 4: the published envelope tested on drills it was not drawn from.

The envelope (``docs/data/envelopes.json``) is drawn from the evaluation split's steps: recall
inside it on that split mostly checks that the axes intersect well. The independent test is a
**held-out split**: drills generated and run *after* the envelope was published, from seeds no
split had used, scored by the same detectors, and each counted step placed against the
published file (``envelope_publish.axis_inside`` on every axis that has an envelope). Nothing
is re-drawn from these drills; nobody tunes on them.

Per family: counted steps, steps inside, detected inside (on time), recall inside, median time
to detect inside, and the verdict: **held** when recall inside >= ``RECALL_GOAL`` on at least
``MIN_INSIDE`` steps, **not held** below it, **not measured** with fewer steps inside (or no
envelope published). The steps inside that were missed are listed: they are where the promise
broke.
"""
from __future__ import annotations

import statistics

from .envelope import FAMILIES
from .envelope_publish import axis_inside

__all__ = ["MIN_INSIDE", "RECALL_GOAL", "heldout", "heldout_lines"]

RECALL_GOAL = 0.9
MIN_INSIDE = 3


def _place(entry: dict, params: dict) -> str:
    """'inside', 'outside' or 'unknown' (a parameter the step does not record)."""
    for ax in entry["axes"]:
        if ax.get("direction") is None:
            continue
        if ax["param"] not in params:
            return "unknown"
        if not axis_inside(ax, float(params[ax["param"]])):
            return "outside"
    return "inside"


def heldout(outcomes: list[dict], published: dict) -> dict:
    """Per family of ``FAMILIES``: the counted held-out steps against the published entry."""
    fams, missed = {}, []
    for fam in FAMILIES:
        mine = [o for o in outcomes if o["family"] == fam and o["counted"]]
        if not mine:
            continue
        entry = published["families"].get(fam)
        if entry is None or entry["status"] != "envelope":
            fams[fam] = {"counted": len(mine), "inside": 0, "detected": 0, "recall": None,
                         "median_ttd": None, "unknown": 0, "status": "not measured",
                         "why": "no envelope published", "detected_all": sum(
                             o["detected"] for o in mine)}
            continue
        place = [(o, _place(entry, o["params"])) for o in mine]
        inside = [o for o, p in place if p == "inside"]
        det = [o for o in inside if o["detected"]]
        ttd = [float(o["ttd"]) for o in det if o["ttd"] is not None]
        rec = round(len(det) / len(inside), 3) if inside else None
        status = ("not measured" if len(inside) < MIN_INSIDE else
                  "held" if rec >= RECALL_GOAL else "not held")
        fams[fam] = {"counted": len(mine), "inside": len(inside), "detected": len(det),
                     "recall": rec, "median_ttd": round(statistics.median(ttd), 1) if ttd
                     else None, "unknown": sum(p == "unknown" for _, p in place),
                     "status": status, "detected_all": sum(o["detected"] for o in mine),
                     "why": None if status != "not measured" else
                     f"{len(inside)} step(s) inside, fewer than {MIN_INSIDE}"}
        missed += [{"family": fam, "run_id": o["run_id"], "step_id": o["step_id"],
                    "params": o["params"], "late": o.get("late", False)}
                   for o in inside if not o["detected"]]
    inside = sum(f["inside"] for f in fams.values())
    det = sum(f["detected"] for f in fams.values())
    below = [f for f, x in fams.items() if x["status"] == "not held"]
    blind = [f for f, x in fams.items() if x["status"] == "not measured"]
    held = [f for f, x in fams.items() if x["status"] == "held"]
    overall = ("not held" if below else "not measured" if not held else
               "held, not measured in full" if blind else "held")
    return {"families": fams, "missed": missed, "inside": inside, "detected": inside and det,
            "recall": round(det / inside, 3) if inside else None, "below": below,
            "not_measured": blind, "overall": overall, "goal": RECALL_GOAL,
            "min_inside": MIN_INSIDE}


def _f(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def heldout_lines(result: dict, published: dict, runs: list[dict]) -> list[str]:
    """The held-out section as Markdown lines (``bench/envelope.py heldout`` splices it)."""
    fams = result["families"]
    sym = {"held": "✔", "not held": "✘", "held, not measured in full": "✘",
           "not measured": "–"}
    steps = sum(r["counted"] for r in runs)
    lines = [(f"- held-out drills: {len(runs)}, {steps} steps counted; envelope: "
             f"`{published.get('generated_by', '?')}` of {published.get('generated', '?')} "
             f"({published.get('runs', '?')} evaluation drills)"),
             f"- {sym[result['overall']]} recall inside the published envelope >= "
             f"{result['goal']:g} for every family with >= {result['min_inside']} steps "
             f"inside: **{result['overall']}**; {result['detected']}/{result['inside']} steps "
             f"inside detected ({_f(result['recall'])})"
             + (f"; not held: {', '.join(result['below'])}" if result["below"] else "")
             + (f"; not measured: {', '.join(result['not_measured'])}"
                if result["not_measured"] else ""), "",
             ("| family | envelope (published) | counted | inside | detected inside | recall "
             "inside | median TTD inside | detected, all steps | verdict |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for fam, x in fams.items():
        entry = published["families"].get(fam) or {}
        env = " and ".join(a["text"] for a in entry.get("axes", []) if a.get("direction")) \
            or "none"
        verdict = x["status"] + (f" ({x['why']})" if x.get("why") else "")
        lines.append(f"| {fam} | {env} | {x['counted']} | {x['inside']} | {x['detected']} | "
                     f"{_f(x['recall'])} | {_f(x['median_ttd'], '{:g} s')} | "
                     f"{x['detected_all']}/{x['counted']} | {verdict} |")
    if result["missed"]:
        lines += ["", "Missed inside the envelope (where the promise broke):", ""]
        for m in result["missed"]:
            p = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                          for k, v in m["params"].items())
            lines.append(f"- {m['family']} `{m['run_id']}` {m['step_id']}: {p}"
                         + (" (detected late)" if m["late"] else ""))
    return lines + [""]
