"""Detection envelopes, part 2b: the page's curves (PNG) and Markdown tables, from the step
outcomes ``envelope_eval`` computes (``bench/envelope.py eval`` writes them)."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from .envelope import FAMILIES
from .envelope_eval import (
    EDGES,
    TARGET,
    _num,
    _range_text,
    axes,
    bin_outcomes,
    envelope,
    envelope_text,
    family_table,
    main_inside,
)

__all__ = ["markdown", "plot_curves"]


# ---------------------------------------------------------------------------- curves (PNG)
def plot_curves(result: dict, folder: Path) -> dict:
    """One PNG per family measured, one panel per axis: recall per bin, evaluation split
    (solid) and tuning split (dashed), any detector and rule/statistical detectors only; every
    step as a tick at the top (detected) or the bottom (missed). Returns family -> file name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = {}
    for fam, f in FAMILIES.items():
        per = {sp: [o for o in result[sp]["outcomes"] if o["family"] == fam and o["counted"]]
               for sp in ("eval", "tuning") if sp in result}
        if not any(per.values()):
            continue
        ax_list = axes(fam)
        fig, panels = plt.subplots(1, len(ax_list), figsize=(5.2 * len(ax_list), 3.6), dpi=100,
                                   squeeze=False)
        for ax, (param, harder, unit) in zip(panels[0], ax_list):
            _panel(ax, per, fam, param, harder, unit)
        fig.suptitle(f"{fam} ({', '.join(f.techniques)}): recall on time", fontsize=10)
        fig.tight_layout()
        name = f"envelope-{fam}.png"
        fig.savefig(folder / name)
        plt.close(fig)
        out[fam] = name
    return out


def _panel(ax, per: dict, fam: str, param: str, harder: str, unit: str) -> None:
    edges = EDGES[fam] if param == FAMILIES[fam].main else EDGES[f"{fam}:{param}"]
    values = [float(o["params"][param]) for rows in per.values() for o in rows]
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 20
    for sp, style, y0 in (("eval", "-", 0.0), ("tuning", "--", 0.04)):
        rows = per.get(sp) or []
        if param != FAMILIES[fam].main:            # measured inside the main axis's envelope
            rows = main_inside(rows, fam)[0]
        if not rows:
            continue
        bins = bin_outcomes(rows, param, edges)
        xs = [_mid(b, rows, param, log) for b in bins if b["n"]]
        for key, color, label in (("recall", "tab:blue", "any detector"),
                                  ("recall_rules", "tab:orange", "rule/statistical")):
            ax.plot(xs, [b[key] for b in bins if b["n"]], style, marker="o", color=color,
                    label=f"{label} ({sp})")
        if sp == "eval":
            for x, b in zip(xs, [b for b in bins if b["n"]]):
                ax.annotate(f"n={b['n']}", (x, b["recall"]), textcoords="offset points",
                            xytext=(4, -12), fontsize=7)
            env = envelope(bins, harder)
            if env["bins"] and env["edge"] is not None:
                ax.axvline(env["edge"], color="tab:green", lw=1, ls="--",
                           label=f"envelope edge (eval): {_num(env['edge'])}")
        for o in rows:
            ax.plot(float(o["params"][param]), (1.06 if o["detected"] else -0.06) - y0, "|",
                    color="tab:green" if o["detected"] else "tab:red", alpha=0.7)
    ax.axhline(TARGET, color="grey", lw=0.8, ls=":")
    if log:
        ax.set_xscale("log")
    ax.set_ylim(-0.15, 1.15)
    ax.set_xlabel(f"{param} ({unit}); harder: {harder}")
    ax.set_ylabel("recall (on time)")
    ax.legend(fontsize=6, loc="best")


def _mid(b: dict, rows: list, param: str, log: bool) -> float:
    """Where a bin is drawn: the median of the parameter values in it."""
    xs = [float(o["params"][param]) for o in rows
          if float(o["params"][param]) >= (b["lo"] if b["lo"] is not None else -math.inf)
          and (b["hi"] is None or float(o["params"][param]) < b["hi"])]
    return statistics.median(xs) if xs else float(b["lo"])


# ---------------------------------------------------------------------------- markdown
def _cell(b: dict) -> str:
    if not b["n"]:
        return "—"
    return f"{b['detected']}/{b['n']} ({b['recall']:.2f})"


def _secondary(rows: list, fam: str) -> str:
    """Recall by each recorded parameter other than the main one, in two or three groups."""
    f = FAMILIES[fam]
    parts = []
    # the benign intensity of the drill and the quiet period before an actor's second step
    rows = [{**o, "params": {**o["params"], "intensity": o.get("intensity"),
                             **({"quiet_before": o["quiet_before"]} if o.get("quiet_before")
                                else {})}} for o in rows if o["family"] == fam]
    for p in (*f.params, "intensity", "quiet_before"):
        if p == f.main:
            continue
        counted = [o for o in rows if o["counted"] and o["params"].get(p) is not None]
        vals = [o["params"][p] for o in counted]
        if not vals:
            continue
        if all(isinstance(v, (bool, str)) for v in vals):
            groups = {str(v): [o for o in counted if o["params"].get(p) == v] for v in set(vals)}
        else:
            cut = statistics.median(float(v) for v in vals)
            groups = {f"< {_num(cut)}": [o for o in counted if float(o["params"][p]) < cut],
                      f">= {_num(cut)}": [o for o in counted if float(o["params"][p]) >= cut]}
        txt = ", ".join(f"{k} {sum(o['detected'] for o in g)}/{len(g)}"
                        for k, g in sorted(groups.items()) if g)
        parts.append(f"{p}: {txt}")
    return "; ".join(parts)


def _ttd(x) -> str:
    return f"{_num(x)} s" if x is not None else "—"


def _summary(ev: dict, tu: dict, today: dict) -> list[str]:
    lines = ["### Envelopes (recall >= 0.9 on >= 2 steps per bin, evaluation split)", "",
             ("| family | techniques | parameter [unit] | today's thresholds "
              "(detectors/*.yaml) | envelope, any detector | envelope, rule/statistical | "
              "tuning split, any | counted (eval) | detected | median TTD |"),
             "|---|---|---|---|---|---|---|---:|---:|---:|"]
    for fam, f in FAMILIES.items():
        for k, (param, harder, unit) in enumerate(axes(fam)):
            te = family_table(ev["outcomes"], fam, param)
            tt = family_table(tu["outcomes"], fam, param)
            head = (f"| {fam} | {', '.join(f.techniques)} | " if k == 0 else "| ″ | | ")
            cond = f", given {te['given']}" if te.get("given") else ""
            lines.append(
                f"{head}{param} [{unit}], harder {harder}{cond} | "
                f"{today.get(fam, '') if k == 0 else '″'} | "
                f"{envelope_text(te['envelope'], fam, param)} | "
                f"{envelope_text(te['envelope_rules'], fam, param)} | "
                f"{envelope_text(tt['envelope'], fam, param)} | {te['counted']} | "
                f"{te['detected']} | {_ttd(te['median_ttd'])} |")
    return lines


def _bin_table(te: dict, tt: dict) -> list[str]:
    lines = [("| bin | eval: any | eval: rules | eval: TTD | eval: detected by | "
              "tuning: any | tuning: rules |"), "|---|---:|---:|---:|---|---:|---:|"]
    for be, bt in zip(te["bins"], tt["bins"]):
        by = ", ".join(f"{k} {v}" for k, v in list(be["by"].items())[:4]) or "—"
        rules = f"{be['detected_rules']}/{be['n']}" if be["n"] else "—"
        rules_t = f"{bt['detected_rules']}/{bt['n']}" if bt["n"] else "—"
        lines.append(f"| {_range_text(be)} | {_cell(be)} | {rules} | {_ttd(be['median_ttd'])} | "
                     f"{by} | {_cell(bt)} | {rules_t} |")
    return lines


def _notes(ev: dict, tu: dict, fam: str, te: dict, tt: dict) -> list[str]:
    extra = []
    for label, t in (("eval", te), ("tuning", tt)):
        if t["not_counted"]:
            extra.append(f"{label}: not counted " + ", ".join(
                f"{k} {v}" for k, v in sorted(t["not_counted"].items())))
        if t["late"]:
            extra.append(f"{label}: {t['late']} step(s) detected only late (> 10 s after)")
    actor = [o for o in ev["outcomes"] + tu["outcomes"]
             if o["family"] == fam and o["counted"] and "by_actor" in o]
    if actor:
        names = ", ".join(sorted({n for o in actor for n in o["by_actor"]})) or "none"
        extra.append(f"steps without IP flows alerted on by actor and time (whatever flows the "
                     f"alert lists), both splits: {sum(bool(o['by_actor']) for o in actor)}/"
                     f"{len(actor)} ({names}); shown beside the official count (the note on ARP "
                     f"scans)")
    lines = []
    sec = _secondary(ev["outcomes"] + tu["outcomes"], fam)
    if sec:
        lines.append(f"By other parameters (both splits, detected/counted): {sec}.")
    if extra:
        lines.append("; ".join(extra) + ".")
    return lines


def markdown(result: dict, today: dict, pngs: dict, img_rel: str = "img",
             after_summary: list[str] | None = None) -> str:
    empty = {"outcomes": [], "runs": []}
    ev, tu = result.get("eval", empty), result.get("tuning", empty)
    lines = []
    for sp, r in (("evaluation", ev), ("tuning", tu)):
        n = len(r["outcomes"])
        c = sum(o["counted"] for o in r["outcomes"])
        lines.append(f"- {sp} split: {len(r['runs'])} drills, {n} steps drawn, {c} counted "
                     f"(captured, not blocked, no error), {r.get('twin_minutes', '?')} min of "
                     f"twin time.")
    lines += ["", *_summary(ev, tu, today), "", *(after_summary or []),
              "### Recall against each parameter", "",
              ("Each cell: detected on time / counted steps (recall). *rules*: rule and "
               "statistical detectors only. TTD: median time to detect, evaluation split."), ""]
    for fam, f in FAMILIES.items():
        if not any(o["family"] == fam for o in ev["outcomes"] + tu["outcomes"]):
            continue
        lines += [f"#### {fam} ({', '.join(f.techniques)})", ""]
        if fam in pngs:
            lines += [f"![{fam}]({img_rel}/{pngs[fam]})", ""]
        for param, harder, unit in axes(fam):
            te = family_table(ev["outcomes"], fam, param)
            tt = family_table(tu["outcomes"], fam, param)
            whose = "the main axis's" if param != f.main else "the other axes'"
            given = (f"; steps inside {whose} envelope: {te['given']} (evaluation), "
                     f"{tt['given'] or 'all steps: no envelope'} (tuning)"
                     if te.get("given") else "")
            lines += [f"{param} ({unit}; harder: {harder}{given}):", "", *_bin_table(te, tt), ""]
        te, tt = family_table(ev["outcomes"], fam), family_table(tu["outcomes"], fam)
        lines += [*_notes(ev, tu, fam, te, tt), ""]
    lines += _blind(ev, tu) + _runs(ev, tu)
    return "\n".join(lines) + "\n"


def _blind(ev: dict, tu: dict) -> list[str]:
    """What no detector saw: families never detected, and the techniques nobody drew."""
    from ..attack.catalog import TECHNIQUES
    rows = ["### What the detectors do not see", "",
            ("| family | counted steps (both splits) | detected on time | missed, by its main "
            "parameter |"), "|---|---:|---:|---|"]
    allout = ev["outcomes"] + tu["outcomes"]
    for fam, f in FAMILIES.items():
        mine = [o for o in allout if o["family"] == fam and o["counted"]]
        missed = sorted(float(o["params"][f.main]) for o in mine if not o["detected"])
        if not mine or not missed:
            continue
        rows.append(f"| {fam} | {len(mine)} | {len(mine) - len(missed)} | "
                    f"{', '.join(_num(x) for x in missed[:12])}{' ...' if len(missed) > 12 else ''} |")
    drawn = {t for f in FAMILIES.values() for t in f.techniques}
    rest = sorted(set(TECHNIQUES) - drawn)
    rows += ["", (f"Not drawn (no envelope measured): {', '.join(rest)}." if rest else
                  "Every technique of the catalogue is drawn."), ""]
    return rows


def _runs(ev: dict, tu: dict) -> list[str]:
    rows = ["### Runs", "", ("| split | run | scenario | topology | intensity | steps | counted | "
            "benign flows | false alerts |"), "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for sp, r in (("eval", ev), ("tuning", tu)):
        for x in r["runs"]:
            rows.append(f"| {sp} | {x['run_id']} | {x['name']} | {x['topology']} | "
                        f"{x['intensity']} | {x['steps']} | {x['counted']} | "
                        f"{x['benign_flows']} | {x['false_alerts']} |")
    return rows + [""]
