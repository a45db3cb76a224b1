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
* On time or late: a hit (the detection moment above) counts only up to ``late_s`` (default
  10 s) after the step's end. ``detected`` (= ``detected_on_time``), ``detected_by``,
  ``time_to_detect_s`` and the per-technique counts use on-time hits only; a step whose only
  hits came later is ``detected_late`` (``late_by``, ``late_detect_s`` from the step's start):
  an alert that fired because the *next* step pushed a window over its threshold did not
  detect this one. The alert itself is still true (it holds an attack flow).
* Alerts *without flows* (packet evidence only: ARP scans and poisoning, which send no IP
  packets, or the ARP burst a sweep starts with) are matched by actor instead: such an alert
  detects a step when its actor is the step's -- ``source.ip`` equal to the ``actor_ip`` of
  one of its executions, or, for an alert whose ``source.ip`` is unknown (a poisoner that
  never used its own address), the ``mac`` of its evidence equal to one of their actor MACs
  (the ledger's ``source.mac``, written since 2026-12-06; in older runs the ``actor_mac`` fact
  of ARP poisoning) -- and its ``@timestamp`` lies
  in the step's window +- slack; such an alert is true. A step with *no flow of its own* (an
  ARP scan) is matched the same way by an alert that lists flows none of which is an attack
  flow and that claims the step's ATT&CK technique: the ``arp-scan`` detector lists the IP
  flows that followed the requests, and when the scanner is a busy workstation those are its
  own benign flows -- the alert fired on the scanner during the scan all the same.
* A step is *not observable* when it did not run (``skipped``) or when it was cut short
  (``error``, ``blocked``, ``stopped``) before it sent anything: no IPv4 packet and no ARP
  frame over all its executions. Nothing of it was on the wire, so it cannot be detected (an
  alert in its window is about something else) and it is left out of the per-technique step
  counts (the step-level recall), as its row's ``observable: false`` says. A step cut short
  after it sent something is scored like any other. A step whose technique the catalogue
  declares invisible to packet sensors (RF jamming, ``Technique.unobservable``) is not
  observable either, whatever its outcome: its row's ``unobservable`` says why.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["label_flows", "load_ledger", "packet_reconciliation", "score_run"]


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


OUTCOME_RANK = {"succeeded": 0, "blocked": 1, "failed": 2, "stopped": 3, "error": 4,
                "skipped": 5}
LATE_S = 10.0      # an alert later than this after a step's end detects it late, not on time
CUT_SHORT = ("error", "blocked", "stopped")      # outcomes of a step that may have sent nothing
REASON_KEYS = ("blocked_reason", "error", "skipped_reason")


def _sent(rec: dict) -> tuple[int, int]:
    """(IPv4 packets, ARP frames) one ledger record says its execution sent."""
    packets = rec.get("packets_sent")
    if not isinstance(packets, int):
        packets = sum(int(f.get("packets") or 0) for f in rec.get("flows") or [])
    arp = rec.get("arp_frames")
    return packets, arp if isinstance(arp, int) else 0


def group_steps(ledger: list[dict]) -> list[dict]:
    """One entry per step id, in first-seen order: a step that ran several times (repeats, or
    from several actors) is scored as one step over all its executions. Its outcome is the best
    of its executions (succeeded > blocked > failed > stopped > error > skipped), its reason that
    of the first execution with that outcome; its start is the first execution's, so time to
    detect counts from when the step began. ``packets_sent``/``arp_frames`` are summed."""
    out: dict[str, dict] = {}
    for rec in ledger:
        packets, arp = _sent(rec)
        g = out.get(rec["step_id"])
        if g is None:
            g = out[rec["step_id"]] = {**rec, "executions": 0, "actors": [], "packets_sent": 0,
                                       "arp_frames": 0}
        else:
            g["start"] = min(g["start"], rec["start"])
            g["end"] = max(g["end"], rec["end"])
            if OUTCOME_RANK.get(rec.get("outcome"), 9) < OUTCOME_RANK.get(g.get("outcome"), 9):
                g["outcome"] = rec.get("outcome")
                for key in REASON_KEYS:
                    g[key] = rec.get(key)
        g["executions"] += 1
        g["packets_sent"] += packets
        g["arp_frames"] += arp
        if rec.get("actor") and rec["actor"] not in g["actors"]:
            g["actors"].append(rec["actor"])
        ip, mac = rec.get("actor_ip"), actor_mac(rec)
        g.setdefault("actor_ips", [])
        g.setdefault("actor_macs", [])
        if ip and ip not in g["actor_ips"]:
            g["actor_ips"].append(ip)
        if mac and mac not in g["actor_macs"]:
            g["actor_macs"].append(mac)
    return list(out.values())


def actor_mac(rec: dict) -> str | None:
    """The MAC of an execution's actor, lower case: the ledger's ``actor_mac`` (``source.mac``,
    recorded since 2026-12-06), else the ``actor_mac`` fact that ARP poisoning (T1557.002)
    has always reported; None for the others of older runs (matched by ``actor_ip`` only)."""
    facts = rec.get("facts") if isinstance(rec.get("facts"), dict) else {}
    for mac in (rec.get("actor_mac"), facts.get("actor_mac")):
        if isinstance(mac, str) and mac.strip():
            return mac.strip().lower().replace("-", ":")
    return None


def observable(step: dict) -> bool:
    """Whether anything of a (grouped) step was on the wire to be detected (module doc)."""
    if step.get("outcome") == "skipped" or unobservable(step.get("technique")):
        return False
    if step.get("outcome") in CUT_SHORT:
        packets, arp = _sent(step)
        return packets > 0 or arp > 0
    return True


def unobservable(technique) -> str | None:
    """Why packet sensors cannot see ``technique`` at all (the catalogue says), or None."""
    from cyberrange.attack.catalog import TECHNIQUES
    spec = TECHNIQUES.get(technique) if isinstance(technique, str) else None
    return spec.unobservable if spec is not None else None


def step_reason(step: dict) -> str | None:
    """The one-line reason a step shows with its outcome: why it was blocked, errored or
    skipped, or why it failed when the technique said (None for the others)."""
    key = {"blocked": "blocked_reason", "error": "error", "failed": "error",
           "skipped": "skipped_reason"}.get(step.get("outcome"))
    v = step.get(key) if key else None
    return " ".join(str(v).split()) if v else None


def _ratio(num: int, den: int):
    return round(num / den, 4) if den else None


@dataclass
class _Flows:
    """The flow columns scoring reads, one list per column in row order, and each row's label."""
    labels: list          # step_id or None (label_flows)
    fids: list
    observers: list
    cids: list            # network.community_id
    starts: list          # event.start, microseconds

    @classmethod
    def read(cls, ledger: list[dict], flows: pa.Table, slack_s: float) -> _Flows:
        return cls(label_flows(ledger, flows, slack_s),
                   flows.column("cyberrange.flow_id").to_pylist(),
                   flows.column("observer.name").to_pylist(),
                   flows.column("network.community_id").to_pylist(),
                   _us(flows, "event.start"))

    def group_key(self, i: int) -> tuple:
        """Dedup key of row ``i``: (community_id, start second); a row without one is alone."""
        if self.cids[i]:
            return (self.cids[i], round(self.starts[i] / 1_000_000))
        return ("fid", self.fids[i])


@dataclass
class _Alerts:
    """The alert columns scoring reads, one list per column in row order."""
    flow_ids: list        # cyberrange.flow_ids: a list of flow ids, or None (packet evidence)
    names: list           # rule.name
    ts: list              # @timestamp, microseconds
    src: list             # source.ip
    tech: list = None     # threat.technique.id
    mac: list = None      # the "mac" of cyberrange.evidence (ARP alerts), else None

    @classmethod
    def read(cls, alerts: pa.Table) -> _Alerts:
        if not alerts.num_rows:
            return cls([], [], [], [], [], [])
        names = alerts.schema.names
        n = alerts.num_rows
        tech = alerts.column("threat.technique.id").to_pylist() \
            if "threat.technique.id" in names else [None] * n
        ev = alerts.column("cyberrange.evidence").to_pylist() \
            if "cyberrange.evidence" in names else [None] * n
        return cls(alerts.column("cyberrange.flow_ids").to_pylist(),
                   alerts.column("rule.name").to_pylist(), _us(alerts, "@timestamp"),
                   alerts.column("source.ip").to_pylist(), tech, [_mac_of(e) for e in ev])

    def flagged(self) -> set:
        """The ids of every flow some alert holds."""
        ids: set = set()
        for fids in self.flow_ids:
            ids.update(fids or ())
        return ids


def _mac_of(evidence) -> str | None:
    """The ``mac`` an alert's evidence names (ARP alerts), lower case; None when there is none."""
    if not evidence:
        return None
    try:
        mac = json.loads(evidence).get("mac") if isinstance(evidence, str) else \
            evidence.get("mac")
    except (ValueError, AttributeError):
        return None
    return mac.lower() if isinstance(mac, str) else None


def _attack_id(technique) -> str | None:
    """``T1018-arp`` -> ``T1018`` (the ATT&CK id of a library technique id)."""
    return technique.split("-", 1)[0] if technique else None


def _run_id_of(ledger: list[dict], flows: pa.Table) -> str | None:
    run_id = ledger[0].get("run_id") if ledger else None
    if run_id is None and flows.num_rows:
        run_id = flows.column("cyberrange.run_id")[0].as_py()
    return run_id


def _dedup_groups(fl: _Flows, flagged_ids: set) -> dict[tuple, dict]:
    """(community_id, start second) -> the steps its copies are labelled with, and whether any
    copy is flagged: one entry per connection, however many sensors recorded it."""
    groups: dict[tuple, dict] = {}
    for i in range(len(fl.fids)):
        g = groups.setdefault(fl.group_key(i), {"steps": set(), "flagged": False})
        if fl.labels[i]:
            g["steps"].add(fl.labels[i])
        if fl.fids[i] in flagged_ids:
            g["flagged"] = True
    return groups


def _counts(items) -> dict:
    """Flow counts, precision and recall over ``(is_attack, is_flagged)`` pairs."""
    total = attack = flagged = fa = 0
    for is_attack, is_flagged in items:
        total += 1
        attack += is_attack
        flagged += is_flagged
        fa += is_attack and is_flagged
    return {"total": total, "attack": attack, "benign": total - attack, "flagged": flagged,
            "flagged_attack": fa, "flagged_benign": flagged - fa,
            "precision": _ratio(fa, flagged), "recall": _ratio(fa, attack)}


def _counts_per_observer(fl: _Flows, flagged_ids: set) -> dict[str, dict]:
    per_obs: dict[str, list] = defaultdict(list)
    for i, fid in enumerate(fl.fids):
        per_obs[fl.observers[i]].append((fl.labels[i] is not None, fid in flagged_ids))
    return {obs: _counts(items) for obs, items in sorted(per_obs.items())}


def _flow_hits(mine: set, al: _Alerts, start_of: dict) -> list[tuple[int, str]]:
    """(time, detector) of each alert holding one of a step's flows ``mine``. An alert can be an
    episode that keeps growing (a sweep that runs into the scan after it): it detects this step
    only once one of the step's flows joins its evidence, so the detection time is the later of
    the alert's own time and that flow's start."""
    hits = []
    for k in range(len(al.names)):
        shared = mine.intersection(al.flow_ids[k] or ()) if mine else set()
        if shared:
            joined = min(start_of[f] for f in shared)
            hits.append((max(al.ts[k], joined), al.names[k]))
    return hits


def _actor_hits(step: dict, al: _Alerts, slack_us: int, attack_ids: set,
                own_flows: bool = True) -> list[int]:
    """Indexes of the alerts that match ``step`` by actor and time window: alerts without
    flows, and for a step with no flow of its own (``own_flows`` false), alerts whose flows
    are all benign and that claim the step's ATT&CK technique (module doc)."""
    ips = set(step.get("actor_ips") or ([step["actor_ip"]] if step.get("actor_ip") else []))
    macs = set(step.get("actor_macs") or ([actor_mac(step)] if actor_mac(step) else []))
    if not (ips or macs) or not observable(step):
        return []
    lo = int(float(step["start"]) * 1_000_000) - slack_us
    hi = int(float(step["end"]) * 1_000_000) + slack_us
    tech = _attack_id(step.get("technique"))
    out = []
    for k in range(len(al.names)):
        if not lo <= al.ts[k] <= hi:
            continue
        src = al.src[k]
        if not (src in ips or (src is None and al.mac[k] in macs)):
            continue
        fids = al.flow_ids[k]
        if not fids or (not own_flows and tech and _attack_id(al.tech[k]) == tech
                        and attack_ids.isdisjoint(fids)):
            out.append(k)
    return out


def _since_start(hits: list[tuple[int, str]], step: dict):
    """Seconds from the step's start to the earliest hit, clipped at 0 (None: no hit)."""
    if not hits:
        return None
    first = min(t for t, _ in hits)
    return round(max(0.0, first / 1_000_000 - float(step["start"])), 3)


def _step_row(step: dict, hits: list[tuple[int, str]], attack_flows: int,
              late_s: float = LATE_S) -> dict:
    seen = observable(step)
    if not seen:
        hits = []               # nothing of it was on the wire: an alert is about something else
    deadline = round((float(step["end"]) + late_s) * 1_000_000)
    on_time = [h for h in hits if h[0] <= deadline]
    late = [h for h in hits if h[0] > deadline]
    detected = bool(on_time)
    return {
        "step_id": step["step_id"], "name": step.get("name"), "technique": step.get("technique"),
        "outcome": step.get("outcome"), "reason": step_reason(step), "observable": seen,
        "unobservable": unobservable(step.get("technique")),
        "detected": detected, "detected_on_time": detected,
        "detected_late": bool(late) and not detected,
        "time_to_detect_s": _since_start(on_time, step),
        "detected_by": sorted({n for _, n in on_time}),
        "late_by": sorted({n for _, n in late}),
        "late_detect_s": _since_start(late, step),
        "attack_flows": attack_flows,
        "packets_sent": step.get("packets_sent", 0), "arp_frames": step.get("arp_frames", 0),
        "executions": step["executions"], "actors": step["actors"],
    }


def _score_steps(ledger: list[dict], fl: _Flows, groups: dict, al: _Alerts,
                 slack_s: float, late_s: float = LATE_S) -> tuple[list, dict, set]:
    """The step rows, per-technique step counts, and the indexes of the alerts without flows
    that detected a step (those alerts are true)."""
    start_of = dict(zip(fl.fids, fl.starts))
    step_flows: dict[str, set] = defaultdict(set)
    for fid, label in zip(fl.fids, fl.labels):
        if label:
            step_flows[label].add(fid)
    step_groups: dict[str, int] = defaultdict(int)
    for g in groups.values():
        for sid in g["steps"]:
            step_groups[sid] += 1
    slack_us = int(slack_s * 1_000_000)
    attack_ids = {fid for fid, label in zip(fl.fids, fl.labels) if label}
    steps_out, techniques, flowless_true = [], {}, set()
    for step in group_steps(ledger):
        sid = step["step_id"]
        hits = _flow_hits(step_flows.get(sid, set()), al, start_of)
        own = bool(step_flows.get(sid)) or any(r.get("flows") for r in ledger
                                               if r.get("step_id") == sid)
        for k in _actor_hits(step, al, slack_us, attack_ids, own_flows=own):
            hits.append((al.ts[k], al.names[k]))
            flowless_true.add(k)
        row = _step_row(step, hits, step_groups.get(sid, 0), late_s)
        steps_out.append(row)
        if not row["observable"]:       # not in the step-level recall (module doc)
            continue
        tech = techniques.setdefault(step.get("technique") or "unknown",
                                     {"steps": 0, "detected": 0})
        tech["steps"] += 1
        tech["detected"] += row["detected"]
    return steps_out, techniques, flowless_true


def _judge_alerts(al: _Alerts, fl: _Flows, flowless_true: set) -> tuple[list, dict]:
    """One bool per alert (true: it holds an attack flow, or matched a flowless step), and the
    true/false counts per detector."""
    label_of = dict(zip(fl.fids, fl.labels))
    by_detector: dict[str, dict] = {}
    truth = []
    for k, name in enumerate(al.names):
        is_true = k in flowless_true or any(label_of.get(f) for f in (al.flow_ids[k] or ()))
        truth.append(bool(is_true))
        d = by_detector.setdefault(name, {"total": 0, "true": 0, "false": 0})
        d["total"] += 1
        d["true" if is_true else "false"] += 1
    return truth, by_detector


def score_run(ledger: list[dict], flows: pa.Table, alerts: pa.Table, slack_s: float = 2.0,
              run_id: str | None = None, alert_truth: bool = False,
              late_s: float = LATE_S) -> dict:
    """Score one run's alerts against its ledger; the result is ready for scorecard.json.
    With ``alert_truth`` it also holds ``alert_truth``: one bool per alert row (true alert).
    ``late_s``: a step is detected (on time) only by alerts up to this long after its end;
    later ones make it ``detected_late`` (module doc)."""
    if run_id is None:
        run_id = _run_id_of(ledger, flows)
    fl = _Flows.read(ledger, flows, slack_s)
    al = _Alerts.read(alerts)
    flagged_ids = al.flagged()
    groups = _dedup_groups(fl, flagged_ids)
    steps_out, techniques, flowless_true = _score_steps(ledger, fl, groups, al, slack_s, late_s)
    truth, by_detector = _judge_alerts(al, fl, flowless_true)
    n_true = sum(truth)
    out = {
        "run_id": run_id,
        "steps": steps_out,
        "flows": _counts((bool(g["steps"]), g["flagged"]) for g in groups.values()),
        "flows_per_observer": _counts_per_observer(fl, flagged_ids),
        "alerts": {"total": len(al.names), "true": n_true, "false": len(al.names) - n_true,
                   "by_detector": dict(sorted(by_detector.items()))},
        "techniques": dict(sorted(techniques.items())),
        "slack_s": slack_s,
        "late_s": late_s,
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
