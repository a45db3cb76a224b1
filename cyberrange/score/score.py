"""Scoring: the only place where ground truth (the ledger) meets alerts.

Definitions (see docs/scoring.md):

* A flow is labelled with attack step S when its 5-tuple (proto, src, sport, dst, dport) equals a
  ledger flow of S in either direction and its start lies in ``[S.start - slack, S.end + slack]``.
  When several steps qualify the first one in ledger order wins.
* A step is detected when some alert's ``cyberrange.flow_ids`` contains one of its flows;
  ``time_to_detect_s`` = the earliest, over such alerts, of max(alert ``@timestamp``, start of
  the first of S's flows in that alert) - ``S.start``, clipped at 0. (An alert that fired on
  an earlier step and kept growing detects S only from the moment S's traffic joined it.)
* Flow counts: the same connection is recorded once per sensor (``observer.name``). Headline
  numbers (``flows``, step ``attack_flows``, precision, recall) are *deduplicated*: flows with the
  same ``network.community_id`` and the same start second are one connection; it is an attack
  flow if any of its copies is labelled and flagged if any copy is in an alert.
  Per-sensor numbers are under ``flows_per_observer``.
* precision = flagged attack / flagged (null when nothing is flagged);
  recall = flagged attack / attack (null when there is no attack flow).
* An alert is true when at least one of its flows is an attack flow, false otherwise.
* Alerts *without flows* (packet evidence only: ARP scans and poisoning, which send no IP
  packets, or the ARP burst a sweep starts with) are matched by actor instead: such an alert
  detects a step when its ``source.ip`` is the step's ``actor_ip`` and its ``@timestamp`` lies
  in the step's window +- slack; such an alert is true.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["load_ledger", "label_flows", "score_run", "packet_reconciliation"]


def load_ledger(path: str | Path) -> list[dict]:
    """The attack steps of a run, one JSON object per line of ``ledger.jsonl``, each checked
    (``attack.ledger.read_ledger``: the one ledger reader); a missing file is an error."""
    from ..attack.ledger import read_ledger
    return read_ledger(path, missing_ok=False)


def _us(table: pa.Table, name: str) -> list[int]:
    col = table.column(name).cast(pa.timestamp("us", tz="UTC"))
    return pc.cast(col, pa.int64()).to_pylist()


def _flow_index(ledger: list[dict]) -> dict[tuple, list[int]]:
    """(proto, src, sport, dst, dport) in both directions -> indexes of steps."""
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, step in enumerate(ledger):
        for lf in step.get("flows") or []:
            proto = lf["proto"]
            fwd = (proto, lf["src"], int(lf["sport"]), lf["dst"], int(lf["dport"]))
            rev = (proto, lf["dst"], int(lf["dport"]), lf["src"], int(lf["sport"]))
            for key in (fwd, rev):
                if i not in index[key]:
                    index[key].append(i)
    return index


def label_flows(ledger: list[dict], flows: pa.Table, slack_s: float = 2.0) -> list[str | None]:
    """The step_id each flow row belongs to (None for benign flows), in row order."""
    index = _flow_index(ledger)
    slack = int(slack_s * 1_000_000)
    windows = [(int(s["start"] * 1_000_000) - slack, int(s["end"] * 1_000_000) + slack)
               for s in ledger]
    starts = _us(flows, "event.start")
    cols = [flows.column(n).to_pylist() for n in
            ("network.transport", "source.ip", "source.port", "destination.ip", "destination.port")]
    labels: list[str | None] = []
    for i, start in enumerate(starts):
        key = (cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i])
        label = None
        for s in index.get(key, ()):
            lo, hi = windows[s]
            if lo <= start <= hi:
                label = ledger[s]["step_id"]
                break
        labels.append(label)
    return labels


OUTCOME_RANK = {"succeeded": 0, "blocked": 1, "failed": 2, "error": 3, "skipped": 4}


def group_steps(ledger: list[dict]) -> list[dict]:
    """One entry per step id, in first-seen order: a step that ran several times (repeats, or
    from several actors) is scored as one step over all its executions. Its outcome is the best
    of its executions (succeeded > blocked > failed > error > skipped); its start is the first
    execution's, so time to detect counts from when the step began."""
    out: dict[str, dict] = {}
    for rec in ledger:
        g = out.get(rec["step_id"])
        if g is None:
            g = out[rec["step_id"]] = {**rec, "executions": 0, "actors": []}
        else:
            g["start"] = min(g["start"], rec["start"])
            g["end"] = max(g["end"], rec["end"])
            if OUTCOME_RANK.get(rec.get("outcome"), 9) < OUTCOME_RANK.get(g.get("outcome"), 9):
                g["outcome"] = rec.get("outcome")
        g["executions"] += 1
        if rec.get("actor") and rec["actor"] not in g["actors"]:
            g["actors"].append(rec["actor"])
    return list(out.values())


def _ratio(num: int, den: int):
    return round(num / den, 4) if den else None


def score_run(ledger: list[dict], flows: pa.Table, alerts: pa.Table, slack_s: float = 2.0,
              run_id: str | None = None, alert_truth: bool = False) -> dict:
    """Score one run's alerts against its ledger; the result is ready for scorecard.json.
    With ``alert_truth`` it also holds ``alert_truth``: one bool per alert row (true alert)."""
    if run_id is None:
        run_id = ledger[0].get("run_id") if ledger else None
        if run_id is None and flows.num_rows:
            run_id = flows.column("cyberrange.run_id")[0].as_py()
    labels = label_flows(ledger, flows, slack_s)
    fids = flows.column("cyberrange.flow_id").to_pylist()
    observers = flows.column("observer.name").to_pylist()
    cids = flows.column("network.community_id").to_pylist()
    starts = _us(flows, "event.start")
    label_of = dict(zip(fids, labels))
    start_of = dict(zip(fids, starts))

    # alerts
    a_fids = alerts.column("cyberrange.flow_ids").to_pylist() if alerts.num_rows else []
    a_names = alerts.column("rule.name").to_pylist() if alerts.num_rows else []
    a_ts = _us(alerts, "@timestamp") if alerts.num_rows else []
    a_src = alerts.column("source.ip").to_pylist() if alerts.num_rows else []
    slack_us = int(slack_s * 1_000_000)
    flowless_true: set[int] = set()
    flagged_ids = set()
    for ids in a_fids:
        flagged_ids.update(ids or ())

    # dedup groups: (community_id, start second) -> member flow rows
    def group_key(i):
        return (cids[i], round(starts[i] / 1_000_000)) if cids[i] else ("fid", fids[i])

    groups: dict[tuple, dict] = {}
    for i in range(len(fids)):
        g = groups.setdefault(group_key(i), {"steps": set(), "flagged": False})
        if labels[i]:
            g["steps"].add(labels[i])
        if fids[i] in flagged_ids:
            g["flagged"] = True

    def counts(items):
        total = attack = flagged = fa = 0
        for is_attack, is_flagged in items:
            total += 1
            attack += is_attack
            flagged += is_flagged
            fa += is_attack and is_flagged
        return {"total": total, "attack": attack, "benign": total - attack, "flagged": flagged,
                "flagged_attack": fa, "flagged_benign": flagged - fa,
                "precision": _ratio(fa, flagged), "recall": _ratio(fa, attack)}

    flow_summary = counts((bool(g["steps"]), g["flagged"]) for g in groups.values())
    per_obs: dict[str, list] = defaultdict(list)
    for i, fid in enumerate(fids):
        per_obs[observers[i]].append((labels[i] is not None, fid in flagged_ids))
    flows_per_observer = {obs: counts(items) for obs, items in sorted(per_obs.items())}

    # steps
    step_flows: dict[str, set] = defaultdict(set)
    for fid, label in zip(fids, labels):
        if label:
            step_flows[label].add(fid)
    step_groups: dict[str, int] = defaultdict(int)
    for g in groups.values():
        for sid in g["steps"]:
            step_groups[sid] += 1
    steps_out = []
    techniques: dict[str, dict] = {}
    for step in group_steps(ledger):
        sid = step["step_id"]
        mine = step_flows.get(sid, set())
        # An alert can be an episode that keeps growing (a sweep that runs into the scan after
        # it): it detects this step only once one of the step's flows joins its evidence, so the
        # detection time is the later of the alert's own time and that flow's start.
        hits = []
        for k in range(len(a_names)):
            shared = mine.intersection(a_fids[k] or ()) if mine else set()
            if shared:
                joined = min(start_of[f] for f in shared)
                hits.append((max(a_ts[k], joined), a_names[k]))
        if step.get("actor_ip") and step.get("outcome") != "skipped":
            lo = int(float(step["start"]) * 1_000_000) - slack_us
            hi = int(float(step["end"]) * 1_000_000) + slack_us
            for k in range(len(a_names)):
                if not a_fids[k] and a_src[k] == step["actor_ip"] and lo <= a_ts[k] <= hi:
                    hits.append((a_ts[k], a_names[k]))
                    flowless_true.add(k)
        detected = bool(hits)
        ttd = None
        if detected:
            first = min(t for t, _ in hits)
            ttd = round(max(0.0, first / 1_000_000 - float(step["start"])), 3)
        steps_out.append({
            "step_id": sid, "name": step.get("name"), "technique": step.get("technique"),
            "outcome": step.get("outcome"), "detected": detected, "time_to_detect_s": ttd,
            "detected_by": sorted({n for _, n in hits}), "attack_flows": step_groups.get(sid, 0),
            "executions": step["executions"], "actors": step["actors"],
        })
        tech = techniques.setdefault(step.get("technique") or "unknown",
                                     {"steps": 0, "detected": 0})
        tech["steps"] += 1
        tech["detected"] += detected

    # alerts: true when any of their flows is an attack flow
    by_detector: dict[str, dict] = {}
    n_true = 0
    truth = []
    for k, name in enumerate(a_names):
        is_true = k in flowless_true or any(label_of.get(f) for f in (a_fids[k] or ()))
        truth.append(bool(is_true))
        n_true += is_true
        d = by_detector.setdefault(name, {"total": 0, "true": 0, "false": 0})
        d["total"] += 1
        d["true" if is_true else "false"] += 1

    out = {
        "run_id": run_id,
        "steps": steps_out,
        "flows": flow_summary,
        "flows_per_observer": flows_per_observer,
        "alerts": {"total": len(a_names), "true": n_true, "false": len(a_names) - n_true,
                   "by_detector": dict(sorted(by_detector.items()))},
        "techniques": dict(sorted(techniques.items())),
        "slack_s": slack_s,
    }
    if alert_truth:
        out["alert_truth"] = truth
    return out


def packet_reconciliation(ledger: list[dict], packets: pa.Table, observer: str | None = None,
                          slack_s: float = 2.0) -> list[dict]:
    """Compare the ledger's per-flow packet counts (sender direction) with stored packets.

    For every ledger flow count packet records with the same transport, src -> dst direction and
    ports (ICMP: ``source.port`` = type, ``destination.port`` = code) whose time lies within the
    step's window +- ``slack_s``. With ``observer`` only that sensor counts; otherwise the largest
    count over sensors is taken (a sensor that sees a flow sees all of it).
    """
    wanted: dict[tuple, list] = defaultdict(list)   # 5-tuple -> [(row index, lo, hi)]
    rows = []
    slack = int(slack_s * 1_000_000)
    for step in ledger:
        lo = int(float(step["start"]) * 1_000_000) - slack
        hi = int(float(step["end"]) * 1_000_000) + slack
        for lf in step.get("flows") or []:
            key = (lf["proto"], lf["src"], int(lf["sport"]), lf["dst"], int(lf["dport"]))
            wanted[key].append((len(rows), lo, hi))
            rows.append({"step_id": step["step_id"], "src": lf["src"], "dst": lf["dst"],
                         "proto": lf["proto"], "sport": int(lf["sport"]),
                         "dport": int(lf["dport"]), "ledger_packets": int(lf.get("packets", 0)),
                         "stored_packets": 0, "observer": None})
    if not rows or packets.num_rows == 0:
        return rows
    if observer is not None:
        packets = packets.filter(pc.equal(packets.column("observer.name"), observer))
    # only the packets whose source ip occurs in the ledger matter
    srcs = pa.array(sorted({k[1] for k in wanted}), pa.string())
    packets = packets.filter(pc.is_in(packets.column("source.ip"), value_set=srcs))
    ts = _us(packets, "@timestamp")
    cols = [packets.column(n).to_pylist() for n in
            ("network.transport", "source.ip", "source.port", "destination.ip",
             "destination.port", "observer.name")]
    per: dict[tuple, int] = defaultdict(int)              # (row, observer) -> count
    for i, t in enumerate(ts):
        key = (cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i])
        for row, lo, hi in wanted.get(key, ()):
            if lo <= t <= hi:
                per[(row, cols[5][i])] += 1
                break
    for (row, obs), n in per.items():
        if n > rows[row]["stored_packets"]:
            rows[row]["stored_packets"] = n
            rows[row]["observer"] = obs
    return rows
