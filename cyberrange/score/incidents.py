"""Incidents against the ledger: did each intrusion become an incident, and how many incidents
were raised on nothing? The only place where ground truth meets incidents (docs/incidents.md).

Definitions:

* An observation (alert or signal) is *tied* to attack step S when it holds a flow labelled S
  (``score.label_flows``), or -- an observation without flows (ARP evidence) -- when its
  ``source.ip`` is S's actor address and its time lies in S's window +- slack.
* An incident is *true* when it holds an observation tied to some step; its ``steps`` are those
  steps. Otherwise it is *false* (every incident of a benign run is false).
* A run's playbook *became an incident* (``is_incident``) when some true incident exists; it is
  None when no step of the run was observable (nothing to find). ``steps_in_incidents``: the
  observable steps tied into some incident; ``best``: the true incident that holds the most
  steps (one per intrusion: ideally it holds them all, and ``true`` is 1).
* ``time_to_incident_s``: the earliest ``@timestamp`` of a true incident (when its score first
  allowed raising it) minus the start of the run's first observable step, clipped at 0.
"""
from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from .score import _us, group_steps, label_flows, observable

__all__ = ["score_incidents"]


def _observation_steps(ledger: list[dict], flows: pa.Table, tables: list[pa.Table],
                       slack_s: float) -> dict[str, set]:
    """Alert/signal id -> the step ids it is tied to (module doc)."""
    label_of = dict(zip(flows.column("cyberrange.flow_id").to_pylist(),
                        label_flows(ledger, flows, slack_s))) if flows.num_rows else {}
    slack = slack_s
    windows = [(s["step_id"], s.get("actor_ip"), float(s["start"]) - slack,
                float(s["end"]) + slack) for s in ledger]
    out: dict[str, set] = defaultdict(set)
    for table in tables:
        if table is None or not table.num_rows:
            continue
        ids = table.column("cyberrange.alert_id").to_pylist()
        fids = table.column("cyberrange.flow_ids").to_pylist()
        srcs = table.column("source.ip").to_pylist()
        ts = _us(table, "@timestamp")
        for i, oid in enumerate(ids):
            if fids[i]:
                out[oid].update(label_of[f] for f in fids[i] if label_of.get(f))
            else:
                t = ts[i] / 1_000_000
                out[oid].update(sid for sid, actor, lo, hi in windows
                                if actor and actor == srcs[i] and lo <= t <= hi)
    return out


def score_incidents(ledger: list[dict], flows: pa.Table, incidents: pa.Table,
                    alerts: pa.Table | None, signals: pa.Table | None,
                    slack_s: float = 2.0) -> dict:
    """The scorecard's ``incidents`` section (module doc)."""
    from ..detect.incidents import incident_rows
    tied = _observation_steps(ledger, flows, [alerts, signals], slack_s)
    steps = [s for s in group_steps(ledger) if observable(s)]
    seen_ids = {s["step_id"] for s in steps}
    first_start = min((float(s["start"]) for s in steps), default=None)
    rows = []
    covered: set = set()
    for inc in incident_rows(incidents):
        ids = (inc["cyberrange.alert_ids"] or []) + (inc["cyberrange.signal_ids"] or [])
        mine = set()
        for oid in ids:
            mine |= tied.get(oid, set())
        mine &= seen_ids
        covered |= mine
        rows.append({
            "incident_id": inc["cyberrange.incident_id"],
            "raised_at": inc["@timestamp"].timestamp(),
            "start": inc["event.start"].timestamp(), "end": inc["event.end"].timestamp(),
            "score": inc["cyberrange.score"], "severity": inc["cyberrange.severity"],
            "entities": inc["related.ip"], "stages": inc["threat.tactic.name"],
            "stage_ids": inc["stages"], "pivots": inc["pivots"], "summary": inc["message"],
            "explanation": inc["cyberrange.explanation"],
            "alerts": len(inc["cyberrange.alert_ids"] or []),
            "signals": len(inc["cyberrange.signal_ids"] or []),
            "true": bool(mine), "steps": sorted(mine),
        })
    true_rows = [r for r in rows if r["true"]]
    best = max(true_rows, key=lambda r: (len(r["steps"]), r["score"]), default=None)
    tti = None
    if true_rows and first_start is not None:
        tti = round(max(0.0, min(r["raised_at"] for r in true_rows) - first_start), 3)
    return {
        "total": len(rows), "true": len(true_rows), "false": len(rows) - len(true_rows),
        "steps_observable": len(steps), "steps_in_incidents": len(covered),
        "missed_steps": sorted(seen_ids - covered),
        "is_incident": (bool(true_rows) if steps else None),
        "best": ({"incident_id": best["incident_id"], "steps": best["steps"],
                  "share": round(len(best["steps"]) / len(steps), 4)} if best else None),
        "time_to_incident_s": tti,
        "list": rows,
    }
