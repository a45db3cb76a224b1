"""The red/blue screen's link states: ``logs/links.jsonl`` of the run, read as it grows.

Every change of a tactical link's state (a DDIL schedule, or the jamming step ``CR-J0001``)
is one line of ``logs/links.jsonl`` (``twin/ddil.py``): ``t``, ``zone`` (the link), ``state``
(``up`` | ``degraded`` | ``jammed`` | ``down``), ``values``, ``reason``, ``ports``, ``notes``.
:class:`Links` keeps, per link, its state now, since when, its values and its changes.

The file is written by exercise control and holds ground truth: ``reason`` names the schedule
event (``end of link_events[2]``, ``intermittent``) or the attack step (``step jam-sat
(CR-J0001 jam the sat link): jammed``), and ``jammed`` names the cause. The **defender** sees a
link as its network monitoring would, from the interface and its traffic:

| control's state | the defender sees | why |
|---|---|---|
| ``up`` | ``up`` | |
| ``degraded`` | ``degraded``, with the values the twin emulated | link monitoring measures loss, delay and bandwidth; a value the twin could not emulate (a note says so) is left out, and a degraded link left with none is ``up``: it behaves as its profile does |
| ``jammed`` | ``down (no traffic)`` | the interfaces keep their carrier but nothing crosses: monitoring sees a link that is up and passes nothing, not who or what caused it |
| ``down`` | ``down`` | both ends lose carrier: an interface down |

and never the ``reason``, the ``notes`` (the emulator's remarks, exercise control's) or the
bridge ``ports``. A change the defender cannot see (the same picture before and after, e.g. a
schedule jamming a link a jamming step already jams, or a link set ``up`` that was never seen
otherwise) is no change on their screen, so its time tells nothing; their links section appears
with the first change they can see. The **instructor** sees the records as written, and what the defender sees.
"""
from __future__ import annotations

import re

__all__ = ["LINKS", "Links", "defender_view", "links_summary"]

LINKS = "logs/links.jsonl"
STATES = ("up", "degraded", "jammed", "down")           # twin.ddil.STATES
RECENT_CHANGES = 8
#: the defender's state (up | degraded | down) and its label, for each state of control
DEFENDER_STATE = {"up": ("up", "up"), "degraded": ("degraded", "degraded"),
                  "jammed": ("down", "down (no traffic)"), "down": ("down", "down")}
_NOT_EMULATED = re.compile(r"^([a-z]+(?:/[a-z]+)*) not emulated\b")


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _values(rec: dict) -> dict:
    vals = rec.get("values") if isinstance(rec.get("values"), dict) else {}
    return {k: v for k, v in vals.items() if isinstance(k, str) and _num(v) is not None}


def _notes(rec: dict) -> list[str]:
    notes = rec.get("notes") if isinstance(rec.get("notes"), list) else []
    return [n for n in notes if isinstance(n, str)]


def defender_view(rec: dict) -> dict:
    """What the defender's monitoring shows of one ``links.jsonl`` record (the table in the
    module's docstring): ``state`` (up | degraded | down), ``label``, ``carrier`` (False only
    when the link is down for its interfaces) and ``values`` (degraded only)."""
    raw = rec["state"]
    state, label = DEFENDER_STATE[raw]
    values: dict = {}
    if raw == "degraded":
        gone = set()
        for n in _notes(rec):
            m = _NOT_EMULATED.match(n)
            if m:
                gone |= set(m.group(1).split("/"))
        values = {k: v for k, v in _values(rec).items() if k not in gone}
        if not values:
            state, label = "up", "up"
    return {"state": state, "label": label, "carrier": raw != "down", "values": values}


class Links:
    """Per link, its state and changes, fed record by record (``add``); ``section`` is the
    snapshot's ``links`` (the defender's or the instructor's, the module's docstring)."""

    def __init__(self, instructor: bool = False):
        self.instructor = instructor
        self.rows: dict[str, dict] = {}
        self.recent: list[dict] = []
        self.count = 0
        self.skipped = 0            # records with no link name, an unknown state or no time

    def add(self, records: list[dict]) -> None:
        for rec in records:
            zone, state, t = rec.get("zone"), rec.get("state"), _num(rec.get("t"))
            if not isinstance(zone, str) or state not in STATES or t is None:
                self.skipped += 1
                continue
            seen = defender_view(rec)
            row = self.rows.get(zone)
            if self.instructor:
                shown = {"state": state, "label": state, "values": _values(rec),
                         "reason": rec.get("reason") if isinstance(rec.get("reason"), str)
                         else "", "notes": _notes(rec),
                         "ports": [p for p in rec.get("ports") or [] if isinstance(p, str)],
                         "defender": seen["label"]}
            else:
                shown = seen
                if (row is None and seen["state"] == "up") or (row is not None and (
                        row["label"], row["values"]) == (seen["label"], seen["values"])):
                    continue                    # nothing the defender can see changed
            same = row is not None and row["label"] == shown["label"]
            self.rows[zone] = dict(shown, link=zone, since=row["since"] if same else t,
                                   last_change=t, changes=(row["changes"] if row else 0) + 1)
            self.count += 1
            self.recent = (self.recent + [dict(shown, link=zone, t=t)])[-RECENT_CHANGES:]

    def section(self, logged: bool) -> dict:
        """``logged``: whether the run has ``links.jsonl``; the defender's section says so
        only once a change they can see came (a file of invisible changes tells nothing)."""
        rows = [dict(self.rows[z]) for z in sorted(self.rows)]
        return {"logged": logged and (self.instructor or bool(rows)), "count": self.count, "links": rows,
                "not_up": [r["link"] for r in rows if r["state"] != "up"],
                "recent": list(self.recent), "skipped": self.skipped}


def links_summary(section: dict | None) -> str | None:
    """The summary line's part on links (None when the run logs no link change): the links
    not up with their state, or that all are up."""
    if not section or not section.get("logged"):
        return None
    rows = {r["link"]: r for r in section.get("links") or []}
    bad = [rows[z] for z in section.get("not_up") or [] if z in rows]
    n = section.get("count", 0)
    if not bad:
        return f"links all up ({n} change(s))"
    return "links not up: " + ", ".join(f"{r['link']} {r.get('label') or r['state']}"
                                        for r in bad) + f" ({n} change(s))"
