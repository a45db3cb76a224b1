"""Detection envelopes, part 4: the published envelope as data (``docs/data/envelopes.json``).

``bench/envelope.py eval`` measures an envelope per family and axis on the evaluation split
(``envelope_eval.envelope``: from the easy end, the bins with recall >= 0.9 on >= 2 steps) and
prints it as text ("addresses >= 6 addresses"). This module writes the same envelopes as data,
so that other reports can ask whether a step lies inside them (``corpus_envelope``) and a later
measurement can say whether an envelope got wider (``compare``):

* per family: its technique ids, ``status`` (``envelope``: some axis has one; ``none``: no axis
  has one, with the reason), and per axis ``param``, ``unit``, ``harder`` end, ``direction`` and
  ``bound``. A value ``x`` is inside an axis when ``x >= bound`` (direction ``>=``), ``x < bound``
  (``<``) or ``x <= bound`` (``<=``: every bin passed up to the hard end; the bound is then the
  largest value measured, never more than was measured). An axis without an envelope has
  direction and bound ``null`` and constrains nothing; a step is inside its family's envelope
  when it is inside every axis that has one (``envelope_goals.inside_envelope``'s rule).

``from_markdown`` reads the same data back from the generated summary table of an earlier
``docs/detection-envelopes.md`` (``git show REV:docs/detection-envelopes.md``), for a baseline
that was published before this file existed.
"""
from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

from .envelope import FAMILIES
from .envelope_eval import MIN_N, TARGET, axes, envelope_text, family_table

__all__ = ["DIRECTIONS", "VERSION", "axis_inside", "axis_text", "compare", "from_markdown",
           "load", "published", "technique_family", "write"]

VERSION = 1
DIRECTIONS = (">=", "<", "<=", None)


def technique_family() -> dict:
    """Library technique id -> envelope family (``FAMILIES``)."""
    return {t: name for name, f in FAMILIES.items() for t in f.techniques}


def _axis(outcomes: list, fam: str, param: str, harder: str, unit: str) -> dict:
    t = family_table(outcomes, fam, param)
    env = t["envelope"]
    ax = {"param": param, "unit": unit, "harder": harder, "counted": t["counted"],
          "detected": t["detected"], "direction": None, "bound": None,
          "text": envelope_text(env, fam, param)}
    if t["given"]:              # measured inside another axis's envelope (axis_rows)
        ax["given"] = t["given"]
    if not env["bins"]:
        ax["why"] = env["stop"]
        return ax
    ax["all"] = bool(env["all"])     # every bin with steps passed: the whole measured range
    if env["edge"] is not None:
        ax["direction"], ax["bound"] = env["side"], env["edge"]
    else:           # every bin passed up to the hard (high) end: as far as was measured
        vals = [float(o["params"][param]) for o in outcomes
                if o["family"] == fam and o["counted"] and param in o["params"]]
        ax["direction"], ax["bound"] = "<=", max(vals)
        ax["text"] = f"{param} <= {max(vals):g} {unit} (every value measured)"
    return ax


def published(result: dict, generated_by: str = "bench/envelope.py eval") -> dict:
    """The envelopes of the evaluation split of ``result`` (``bench/envelope.py eval``'s
    ``{"eval": {"outcomes", "runs"}, ...}``) as the published data."""
    ev = result["eval"]
    fams = {}
    for fam, f in FAMILIES.items():
        ax = [_axis(ev["outcomes"], fam, p, h, u) for p, h, u in axes(fam)]
        has = any(a["direction"] for a in ax)
        fams[fam] = {"techniques": list(f.techniques), "status": "envelope" if has else "none",
                     "counted": ax[0]["counted"], "axes": ax}
        if not has:
            fams[fam]["why"] = ("no counted step in the evaluation split" if not ax[0]["counted"]
                                else "no axis has a bin with recall >= "
                                f"{TARGET} on >= {MIN_N} steps from its easy end")
    return {"version": VERSION, "generated": str(datetime.date.today()),
            "generated_by": generated_by, "split": "eval", "target_recall": TARGET,
            "min_steps_per_bin": MIN_N, "runs": len(ev.get("runs", [])),
            "steps_counted": sum(o["counted"] for o in ev["outcomes"]), "families": fams}


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def load(path) -> dict:
    """A published envelope file, checked; a bad one is a UserError naming file and key."""
    from ..errors import UserError
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a published envelope file ({e})") from None

    def bad(key: str, msg: str):
        return UserError(f"{path}: {key}: {msg}")
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise bad("version", f"expected {VERSION}, got {data.get('version') if isinstance(data, dict) else data!r}")
    fams = data.get("families")
    if not isinstance(fams, dict):
        raise bad("families", "expected a mapping of family -> envelope")
    for fam, f in fams.items():
        if not isinstance(f, dict) or not isinstance(f.get("techniques"), list) \
                or f.get("status") not in ("envelope", "none") \
                or not isinstance(f.get("axes"), list):
            raise bad(f"families.{fam}", "needs techniques (list), status (envelope|none), axes")
        for k, a in enumerate(f["axes"]):
            key = f"families.{fam}.axes[{k}]"
            if not isinstance(a, dict) or not isinstance(a.get("param"), str):
                raise bad(key, "needs param")
            if a.get("direction") not in DIRECTIONS:
                raise bad(f"{key}.direction", f"{a.get('direction')!r} is not one of >=, <, <=, null")
            b = a.get("bound")
            # "<=" with no bound: every value measured, its top not recorded (from_markdown)
            if ((a["direction"] is None) != (b is None) and a["direction"] != "<=") or not (
                    b is None or (isinstance(b, (int, float)) and not isinstance(b, bool))):
                raise bad(f"{key}.bound", f"{b!r}: a number with a direction, null without one")
    return data


def axis_inside(axis: dict, x: float) -> bool | None:
    """Whether ``x`` lies inside one axis; None when the axis has no envelope."""
    d, b = axis.get("direction"), axis.get("bound")
    if d is None:
        return None
    if b is None:                   # every value measured, its top not recorded
        return True
    return x >= b if d == ">=" else x < b if d == "<" else x <= b


def axis_text(axis: dict) -> str:
    if axis.get("direction") is None:
        return f"{axis['param']}: none"
    if axis.get("bound") is None:
        return f"every {axis['param']} measured"
    return f"{axis['param']} {axis['direction']} {axis['bound']:g} {axis.get('unit', '')}".strip()


# ---------------------------------------------------------------------------- before / after
def _reach(axis: dict) -> float:
    """How far towards its hard end an axis's envelope reaches (larger: wider)."""
    if axis["direction"] == ">=":
        return -axis["bound"]
    return math.inf if axis["bound"] is None else axis["bound"]


def _axis_order(before: dict | None, after: dict | None) -> str:
    """How one axis of a family that had an envelope before moved, as a **region** (an axis
    without an envelope constrains nothing, so the earlier envelope held at every value of it):
    wider, same, narrower (a bound closer to the easy end, or a new bound that does not cover
    every value measured), measured (a new bound that covers every value measured: the same
    region, now backed by bins), lost (a bound gone: the axis no longer reaches 0.9 anywhere),
    not measured (no bound before or after)."""
    b = before if before and before.get("direction") else None
    a = after if after and after.get("direction") else None
    if not b and not a:
        return "not measured"
    if not b:
        return "measured" if a.get("all") else "narrower"
    if not a:
        return "lost"
    if (b["direction"] == ">=") != (a["direction"] == ">="):
        return "not comparable"
    ra, rb = _reach(a), _reach(b)
    return "wider" if ra > rb else "narrower" if ra < rb else "same"


def compare(before: dict | None, after: dict) -> dict:
    """Per family of ``after``: each axis's move since ``before`` and the family's verdict, the
    envelopes compared as regions of the parameter space. A family with no envelope before and
    one now is ``wider`` (its axes ``new``); with one before: ``narrower`` when some axis is
    narrower or lost, ``wider`` when some axis is wider and none narrower, else ``same`` (a
    bound that now covers every value measured where none was is ``measured``: same region).
    So adding a bound that excludes part of what the earlier envelope covered (an HTTP beacon's
    jitter < 0.3 where the earlier one said nothing of jitter) narrows the envelope."""
    out = {}
    for fam, fa in after["families"].items():
        fb = (before or {}).get("families", {}).get(fam, {})
        had = fb.get("status") == "envelope" and any(a.get("direction") for a in fb.get("axes", []))
        has = any(a.get("direction") for a in fa["axes"])
        bax = {a["param"]: a for a in fb.get("axes", [])}
        if not had:
            moves = {a["param"]: "new" if a.get("direction") else "not measured"
                     for a in fa["axes"]}
            verdict = "wider" if has else "not measured"
        else:
            moves = {a["param"]: _axis_order(bax.get(a["param"]), a) for a in fa["axes"]}
            vals = set(moves.values())
            if vals & {"narrower", "lost"}:
                verdict = "narrower"
            elif "not comparable" in vals:
                verdict = "not comparable"
            elif "wider" in vals:
                verdict = "wider"
            else:
                verdict = "same"
        out[fam] = {"verdict": verdict, "axes": moves,
                    "before": " and ".join(axis_text(a) for a in fb.get("axes", [])
                                           if a.get("direction")) or "none",
                    "after": " and ".join(axis_text(a) for a in fa["axes"]
                                          if a.get("direction")) or "none"}
    return out


# ---------------------------------------------------------------------------- from markdown
_NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)( KiB)?"


def _parse_cell(cell: str, param: str) -> tuple:
    """An ``envelope_text`` cell -> (direction, bound); (None, None) for none; ("<=", None)
    for "every X measured" (the largest value measured was not printed)."""
    cell = cell.strip()
    if cell.startswith("none"):
        return None, None
    if cell.startswith("every "):
        return "<=", None
    m = re.match(rf"{re.escape(param)} (>=|<) {_NUM}", cell)
    if not m:
        raise ValueError(f"cannot read the envelope cell {cell!r}")
    x = float(m.group(2).replace(",", "")) * (1024 if m.group(3) else 1)
    return m.group(1), x


def from_markdown(text: str, source: str) -> dict:
    """The envelopes of an earlier page's generated summary table ("envelope, any detector"
    column), in the published format. ``source`` says where the text came from."""
    fams: dict = {}
    fam = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not re.match(r"\S+ \[.*\], harder (low|high)$", cells[2]):
            continue
        if cells[0] != "″":
            fam = cells[0]
            fams[fam] = {"techniques": [t.strip() for t in cells[1].split(",")], "axes": []}
        param = cells[2].split(" [")[0]
        unit = cells[2].split(" [", 1)[1].split("]")[0]
        d, b = _parse_cell(cells[4], param)
        fams[fam]["axes"].append({"param": param, "unit": unit,
                                  "harder": cells[2].rsplit(" ", 1)[1], "direction": d,
                                  "bound": b, "text": cells[4]})
    for f in fams.values():
        f["status"] = "envelope" if any(a["direction"] for a in f["axes"]) else "none"
    if not fams:
        raise ValueError(f"{source}: no envelope summary table found")
    return {"version": VERSION, "generated_by": f"from_markdown({source})", "split": "eval",
            "families": fams}
