"""An ATT&CK Navigator layer of a run (layer format 4.5, Navigator 4.9.1): each technique the
playbook used, coloured by what the detectors made of it.

- green: every step of the technique that sent something was detected;
- amber: some were, some were missed (score = the detected share, 0-100);
- red: none was detected;
- yellow: none on time, but some only late (after the step's end + the scorecard's ``late_s``);
  the comment says "late (N s)";
- grey: no step of it sent anything a sensor could see (blocked or refused before the first
  packet, skipped, errored): there was nothing to detect.

Library variants map to their ATT&CK id (``T1046-connect`` -> ``T1046``) and the comment names
the variant; harness capabilities (``replay``) are left out, and so are custom ids (``CR-J0001``
RF jamming: ATT&CK has no such technique), each with a note (:func:`left_out`) in the layer's
metadata and on the command line. ATT&CK for ICS techniques (``T0xxx``)
live in another Navigator domain than Enterprise ones, so a run that used both gets one layer per
domain, written as a JSON list (the 4.5 format's multi-layer file, which the Navigator opens as
one layer per entry); a run of one domain gets a single layer object.
"""
from __future__ import annotations

from cyberrange.report.content import attack_domain

VERSIONS = {"attack": "14", "navigator": "4.9.1", "layer": "4.5"}
DETECTED, PARTLY, MISSED, NOT_OBSERVABLE = "#31a354", "#fdae61", "#e34a33", "#bdbdbd"
LATE = "#fee08b"
LEGEND = [{"label": "detected", "color": DETECTED}, {"label": "partly detected", "color": PARTLY},
          {"label": "missed", "color": MISSED},
          {"label": "detected late only (not on time)", "color": LATE},
          {"label": "not observable (nothing sent)", "color": NOT_OBSERVABLE}]


def _step_note(s: dict) -> str:
    variant = f"{s['technique']}: " if s["technique"] != s["attack_id"] else ""
    if not s["observable"]:
        what = "not observable"
    elif s["detected"]:
        ttd = s["time_to_detect_s"]
        what = (f"detected in {ttd:.2f} s" if isinstance(ttd, (int, float)) else "detected") \
            + (f" by {', '.join(s['detected_by'])}" if s["detected_by"] else "")
    elif s.get("detected_late"):
        late = s.get("late_detect_s")
        what = (f"late ({late:.1f} s)" if isinstance(late, (int, float)) else "late") + \
            (f" by {', '.join(s['late_by'])}" if s.get("late_by") else "") + ", not on time"
    else:
        what = "MISSED"
    return f"{variant}{s['step_id']} ({s['outcome']}): {what}"


def technique_entries(steps: list[dict]) -> dict[str, dict]:
    """ATT&CK id -> its layer entry, from the report's step rows."""
    by_id: dict[str, list[dict]] = {}
    for s in steps:
        if s.get("attack_id"):
            by_id.setdefault(s["attack_id"], []).append(s)
    out = {}
    for tid, group in sorted(by_id.items()):
        seen = [s for s in group if s["observable"]]
        hit = [s for s in seen if s["detected"]]
        if not seen:
            colour, score = NOT_OBSERVABLE, None
        else:
            score = round(100 * len(hit) / len(seen))
            late = [s for s in seen if not s["detected"] and s.get("detected_late")]
            colour = DETECTED if len(hit) == len(seen) else PARTLY if hit else \
                LATE if late else MISSED
        entry = {"techniqueID": tid, "color": colour, "comment": "; ".join(map(_step_note, group)),
                 "enabled": True,
                 "metadata": [{"name": "steps", "value": str(len(group))},
                              {"name": "detected", "value": f"{len(hit)} of {len(seen)} observable"},
                              {"name": "late", "value": str(sum(
                                  1 for s in seen if not s["detected"] and s.get("detected_late")))}]}
        if score is not None:
            entry["score"] = score
        out[tid] = entry
    return out


def left_out(steps: list[dict]) -> list[str]:
    """One note per technique of the run that has no place in a Navigator layer: a custom id
    (the catalogue's ``custom``) or a harness capability, with its related ATT&CK ids."""
    from cyberrange.attack.catalog import TECHNIQUES
    notes = []
    for tech in dict.fromkeys(s.get("technique") for s in steps if not s.get("attack_id")):
        spec = TECHNIQUES.get(tech) if isinstance(tech, str) else None
        if spec is None:
            continue
        what = "a custom id, no ATT&CK technique" if spec.custom else "no ATT&CK technique"
        related = f"; related: {', '.join(spec.related)}" if spec.related else ""
        notes.append(f"{tech} ({spec.name}): {what}, not in the layer{related}")
    return notes


def layer(content: dict, domain: str, techniques: list[dict]) -> dict:
    r = content["run"]
    name = f"cyberrange {r['run_id']}"
    if domain == "ics-attack":
        name += " (ICS)"
    return {
        "name": name,
        "versions": dict(VERSIONS),
        "domain": domain,
        "description": (f"Drill {r['run_id']}: topology {r['topology']}, playbook "
                        f"{r['playbook']}. Techniques coloured by detection: green detected, "
                        "amber partly, red missed, yellow detected late only, grey not observable; "
                        "score = percent of "
                        "observable steps detected."),
        "sorting": 3,
        "layout": {"layout": "side", "showID": True, "showName": True,
                   "expandedSubtechniques": "annotated"},
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": [MISSED, PARTLY, DETECTED], "minValue": 0, "maxValue": 100},
        "legendItems": [dict(x) for x in LEGEND],
        "showTacticRowBackground": False,
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "metadata": [{"name": "run", "value": str(r["run_id"])},
                     {"name": "topology", "value": str(r["topology"])},
                     {"name": "playbook", "value": str(r["playbook"])}]
        + [{"name": "left out", "value": n} for n in left_out(content.get("steps") or [])],
    }


def navigator(content: dict) -> dict | list[dict]:
    """The layer (one domain) or the list of layers (Enterprise and ICS)."""
    entries = technique_entries(content["steps"])
    domains: dict[str, list[dict]] = {}
    for tid, e in entries.items():
        domains.setdefault(attack_domain(tid), []).append(e)
    if not domains:
        return layer(content, "enterprise-attack", [])
    layers = [layer(content, d, domains[d]) for d in ("enterprise-attack", "ics-attack")
              if d in domains]
    return layers[0] if len(layers) == 1 else layers
