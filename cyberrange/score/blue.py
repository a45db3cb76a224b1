"""The blue scorecard (issue 14 item 5): how well the defence detected, contained and prevented
the attack, how well the mission kept running, and what the defence broke on the way.

Computed from the run folder's evidence only: the ledger (ground truth, joined here in
``score/`` and nowhere else), the action log ``actions.jsonl``, the scorecard's step rows (the
alerts, as ``score_run`` matched them: detection is reused, never recomputed), the store's flows
and the availability probes ``availability.jsonl``. The formula and a worked example are in
docs/blue-team.md ("Blue scorecard"); in short:

* **Would an action stop a flow** (``score/blue_rules.py``): each applied ``block``,
  ``isolate`` and ``rule-add`` is in force over ``[applied, reverted)`` and is evaluated on the
  flow's 5-tuple with its logged parameters, resolved as the action resolved them.
* **Contained.** Step S is contained at the first moment t >= S.start at which the actions in
  force together stop every one of S's flows (its ledger 5-tuples over all executions; a step
  with none: actor -> each target, ARP when it sent ARP frames). ``time_to_contain_s`` = t -
  S.start: 0 when the defence was already in force when S began. ``contained_by`` is the action
  that did it alone, or the one that completed the set.
* **Prevented.** Contained before it began, and it ended ``blocked`` or ``failed`` or sent
  nothing.
* **Collateral.** Benign flows (not labelled attack by ``label_flows``; one per connection,
  deduplicated over sensors) stopped by an action while in force; mission-availability seconds
  lost to failed probes that an action in force would stop; nodes acted against that were no
  actor of the ledger.
"""
from __future__ import annotations

import ipaddress
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cyberrange.score.blue_rules import (
    INF,
    Action,
    Resolver,
    Unresolved,
    active_at,
    block_rule,
    int_of,
    ip_of,
    names_of_run,
    nft_rule,
    parse_actions,
    stops,
    text_rule,
)

__all__ = ["WEIGHTS", "blue_section", "penalty", "read_actions", "run_blue", "score_parts"]

ACTIONS_FILE = "actions.jsonl"
#: the parts of the score and their weights (renormalised over the parts measured)
WEIGHTS = {"detection": 30.0, "containment": 30.0, "prevention": 20.0, "availability": 20.0}
CONTAIN_HALF_LIFE_S = 60.0      # containment credit halves with every minute after the start
FLOW_PENALTY_MAX, FLOW_PENALTY_SCALE = 10.0, 25.0   # 10 * (1 - exp(-n / 25))
NODE_PENALTY, NODE_PENALTY_MAX = 3.0, 10.0          # per non-attacker node acted against
THREAD_PENALTY, THREAD_PENALTY_MAX = 5.0, 10.0      # per mission thread the defence took down
PREVENTING_OUTCOMES = ("blocked", "failed")


# -- reading ----------------------------------------------------------------------------------
def read_actions(run_dir) -> list[dict] | None:
    """The action log's records (None when the run has no ``actions.jsonl``); lines that are
    not JSON objects (a writer killed mid-line) are skipped, as ``blue/log.py`` reads them."""
    path = Path(run_dir) / ACTIONS_FILE
    if not path.is_file():
        return None
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line) if line.strip() else None
        except ValueError:
            rec = None
        if isinstance(rec, dict) and isinstance(rec.get("time"), (int, float)):
            out.append(rec)
    return out


# -- steps ------------------------------------------------------------------------------------
def step_flows(recs: list[dict]) -> list[tuple]:
    """A step's traffic over its executions: its ledger 5-tuples, or for a step without any,
    actor -> each target (ARP when it sent ARP frames, protocol unknown otherwise)."""
    out = {}
    for rec in recs:
        for f in rec.get("flows") or []:
            key = (f.get("proto"), ip_of(f.get("src")), int_of(f.get("sport")), ip_of(f.get("dst")),
                   int_of(f.get("dport")))
            out[key] = None
    if not out:
        for rec in recs:
            proto = "arp" if rec.get("arp_frames") else None
            for target in rec.get("targets") or []:
                port = str(target).rsplit(":", 1)[1] if str(target).count(":") == 1 else None
                out[(proto, ip_of(rec.get("actor_ip")), None, ip_of(target), int_of(port))] = None
    return [k for k in out if k[1] is not None and k[3] is not None]



def contain_step(flows: list[tuple], start: float, actions: list[Action], res: Resolver):
    """(time contained, the action that did it, every action stopping some flow then) or None:
    the first moment >= ``start`` at which the actions in force stop all of ``flows``."""
    if not flows:
        return None
    moments = [start] + sorted({a.t0 for a in actions if a.t0 > start})
    for t in moments:
        active = active_at(actions, t)
        if not active:
            continue
        stopping = {a.id: a for a in active
                    if any(stops(a, f, t, active, res) for f in flows)}
        if not stopping:
            continue
        if all(any(stops(a, f, t, active, res) for a in stopping.values()) for f in flows):
            alone = [a for a in stopping.values()
                     if all(stops(a, f, t, active, res) for f in flows)]
            by = min(alone, key=lambda a: a.t0) if alone else \
                max(stopping.values(), key=lambda a: a.t0)
            return t, by.id, sorted(stopping, key=lambda i: stopping[i].t0)
    return None


def mark_after_containment(rows: list[dict]) -> None:
    """``after_containment``: the step began once one of its actors had been contained (some
    earlier or same step of theirs contained), and it counts (it sent something, or was
    contained): the steps the prevention part is about."""
    first: dict[str | None, float] = {}
    for r in rows:
        if r["contained"]:
            for actor in r["actors"] or [None]:
                first[actor] = min(first.get(actor, INF), r["contained_at"])
    for r in rows:
        r["after_containment"] = bool(
            (r["observable"] or r["contained"]) and r["start"] is not None
            and any(first.get(a, INF) <= r["start"] for a in r["actors"] or [None]))


def steps_rows(card: dict, ledger: list[dict], actions: list[Action], res: Resolver) -> list:
    """One row per scorecard step: detection as the scorecard has it, containment, prevention."""
    by_step: dict[str, list[dict]] = {}
    for rec in ledger:
        by_step.setdefault(rec["step_id"], []).append(rec)
    rows = []
    for s in card.get("steps") or []:
        recs = by_step.get(s["step_id"], [])
        start = min((float(r["start"]) for r in recs), default=None)
        found = contain_step(step_flows(recs), start, actions, res) if start is not None \
            else None
        sent = (s.get("packets_sent") or 0) + (s.get("arp_frames") or 0)
        before = found is not None and found[0] <= start
        rows.append({
            "step_id": s["step_id"], "technique": s.get("technique"),
            "outcome": s.get("outcome"), "observable": s.get("observable", True),
            "actors": s.get("actors") or [], "start": start,
            "detected": bool(s.get("detected")), "time_to_detect_s": s.get("time_to_detect_s"),
            "contained": found is not None,
            "time_to_contain_s": round(found[0] - start, 3) if found else None,
            "contained_at": found[0] if found else None,
            "contained_by": found[1] if found else None,
            "containing_actions": found[2] if found else [],
            "prevented": bool(before and (s.get("outcome") in PREVENTING_OUTCOMES or sent == 0)),
        })
    mark_after_containment(rows)
    return rows


# -- collateral ---------------------------------------------------------------------------------
def _us(table: pa.Table, name: str) -> list[int]:
    col = table.column(name).cast(pa.timestamp("us", tz="UTC"))
    return pc.cast(col, pa.int64()).to_pylist()


def _first_stopping(actions: list[Action], flow: tuple, fs: float, fe: float,
                    res: Resolver) -> Action | None:
    """The earliest-applied action that stops a flow seen over ``[fs, fe]``: a block or an
    isolation in force at any moment of it (they cut established flows too), a rule-add in force
    when it began (it sees new connections only)."""
    for a in actions:
        if a.verb == "rule-add":
            t = fs if a.t0 <= fs < a.t1 else None
        else:
            t = max(fs, a.t0) if fs < a.t1 and fe >= a.t0 else None
        if t is not None and stops(a, flow, t, active_at(actions, t), res):
            return a
    return None


def benign_blocked(ledger: list[dict], flows: pa.Table, actions: list[Action], res: Resolver,
                   attacker_ips: set, slack_s: float = 2.0) -> dict:
    """Benign flows (one per connection over all sensors) an action stopped while in force."""
    out = {"benign_flows_blocked": 0, "benign_flows_blocked_attackers": 0,
           "benign_flows_blocked_by_action": {}, "benign_pairs_blocked": []}
    if not actions or flows is None or not flows.num_rows:
        return out
    from cyberrange.score.score import label_flows
    lo = min(a.t0 for a in actions)
    hi = max(a.t1 for a in actions)
    ends = pc.cast(flows.column("event.end").cast(pa.timestamp("us", tz="UTC")), pa.int64())
    keep = pc.greater_equal(ends, int(lo * 1e6))
    if hi != INF:
        starts = pc.cast(flows.column("event.start").cast(pa.timestamp("us", tz="UTC")),
                         pa.int64())
        keep = pc.and_(keep, pc.less(starts, int(hi * 1e6)))
    flows = flows.filter(keep)
    if not flows.num_rows:
        return out
    labels = label_flows(ledger, flows, slack_s)
    cols = [flows.column(n).to_pylist() for n in
            ("network.transport", "source.ip", "source.port", "destination.ip",
             "destination.port", "network.community_id", "cyberrange.flow_id")]
    starts, ends = _us(flows, "event.start"), _us(flows, "event.end")
    groups: dict[tuple, list[int]] = {}
    for i in range(flows.num_rows):
        key = (cols[5][i], round(starts[i] / 1e6)) if cols[5][i] else ("fid", cols[6][i])
        groups.setdefault(key, []).append(i)
    pairs: dict[tuple, int] = {}
    by_action = out["benign_flows_blocked_by_action"]
    for rows in groups.values():
        if any(labels[i] for i in rows):
            continue                                   # an attack connection
        i = rows[0]
        flow = (cols[0][i], ip_of(cols[1][i]), cols[2][i], ip_of(cols[3][i]), cols[4][i])
        if flow[1] is None or flow[3] is None:
            continue
        fs, fe = min(starts[j] for j in rows) / 1e6, max(ends[j] for j in rows) / 1e6
        a = _first_stopping(actions, flow, fs, fe, res)
        if a is None:
            continue
        out["benign_flows_blocked"] += 1
        by_action[a.id] = by_action.get(a.id, 0) + 1
        if flow[1] in attacker_ips or flow[3] in attacker_ips:
            out["benign_flows_blocked_attackers"] += 1
        key = (cols[1][i], cols[3][i], cols[0][i], cols[4][i])
        pairs[key] = pairs.get(key, 0) + 1
    top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    out["benign_pairs_blocked"] = [{"src": s, "dst": d, "proto": p, "port": port, "flows": n}
                                   for (s, d, p, port), n in top]
    return out


def availability_lost(probes: list[dict], section: dict | None, actions: list[Action],
                      res: Resolver) -> dict:
    """Seconds each thread was down because of an action: a failed probe that an action in force
    would stop counts from that probe to the thread's next probe (the end of probing after its
    last one), the way the availability section counts ``down_s``, but never past the action's
    undo (seconds down while the action was in force)."""
    per_thread: dict[str, float] = {}
    per_action: dict[str, dict[str, float]] = {}
    if not actions or not probes:
        return {"availability_lost_s": {}, "availability_lost_by_action": {},
                "mission_threads_down": []}
    probes = sorted(probes, key=lambda p: p["time"])
    end = probes[-1]["time"]
    by_thread: dict[str, list[dict]] = {}
    for p in probes:
        by_thread.setdefault(p["thread"], []).append(p)
    for thread, ps in by_thread.items():
        for k, p in enumerate(ps):
            if p.get("ok"):
                continue
            src = res.node_ip(p.get("src"))
            dst = ip_of(p.get("dst_ip")) if p.get("dst_ip") else res.node_ip(p.get("dst"))
            if src is None or dst is None:
                continue
            flow = (p.get("proto"), src, None, dst, int_of(p.get("port")))
            t = p["time"]
            active = active_at(actions, t)
            a = next((a for a in active if stops(a, flow, t, active, res)), None)
            if a is None:
                continue
            # until the thread's next probe, but not past the action's undo: once it is
            # undone the defence no longer holds the thread down
            seg = min(ps[k + 1]["time"] if k + 1 < len(ps) else end, a.t1) - t
            per_thread[thread] = per_thread.get(thread, 0.0) + seg
            mine = per_action.setdefault(a.id, {})
            mine[thread] = mine.get(thread, 0.0) + seg
    kinds = {name: (row or {}).get("kind") for name, row in
             ((section or {}).get("threads") or {}).items()}
    missions = sorted(t for t in per_thread
                      if (kinds.get(t) or ("service" if t.startswith("service:") else
                                           "mission")) == "mission")
    return {"availability_lost_s": {t: round(v, 3) for t, v in sorted(per_thread.items())},
            "availability_lost_by_action": {a: {t: round(v, 3) for t, v in sorted(d.items())}
                                            for a, d in per_action.items()},
            "mission_threads_down": missions}


def _against(rec: dict, res: Resolver) -> list[str]:
    """The nodes an applied action acted against: the node isolated, a block's or deny's
    source nodes (its destination nodes when the source is any), the peer whose sessions were
    killed. Restarting a service acts for a node, not against it."""
    verb, p = rec.get("action"), rec.get("params") if isinstance(rec.get("params"), dict) else {}
    try:
        if verb == "isolate":
            return [p["node"]] if p.get("node") else []
        if verb == "kill-sessions":
            peer = p.get("peer")
            return res.nodes_in(res.networks(peer)) if peer not in (None, "", "any") \
                else ([p["node"]] if p.get("node") else [])
        if verb == "block":
            if p.get("where"):
                return sorted({w.split("(", 1)[1].split()[0] for w in p["where"] if "(" in w})
            rule = block_rule(p, res)
        elif verb == "rule-add":
            rule = nft_rule(p["nft"]) if p.get("nft") else text_rule(p["rule"], res)
            if rule.allow:
                return []
        else:
            return []
    except (Unresolved, KeyError, TypeError, ValueError, AttributeError, IndexError):
        return []
    return res.nodes_in(rule.src if rule.src is not None else rule.dst)


def non_attacker_actions(records: list[dict], res: Resolver, ledger: list[dict]) -> list[dict]:
    """Applied actions against nodes that were no actor of the ledger, one entry per node and
    action; ``compromised``: the ledger says the red team took the node over (not penalised)."""
    actors = {r.get("actor") for r in ledger if r.get("actor")}
    actor_ips = {ip_of(r.get("actor_ip")) for r in ledger if r.get("actor_ip")}
    taken = set()
    for r in ledger:
        facts = r.get("facts") if isinstance(r.get("facts"), dict) else {}
        for ip in facts.get("compromised") or []:
            if ip_of(ip) is not None:
                taken.update(res.nodes_in([ipaddress.ip_network(f"{ip_of(ip)}/32")]))
    out = []
    for rec in records:
        if rec.get("result") != "applied":
            continue
        for node in _against(rec, res):
            ip = res.node_ip(node)
            if node in actors or (ip is not None and ip in actor_ips):
                continue
            out.append({"action": rec.get("id"), "verb": rec.get("action"),
                        "actor": rec.get("actor"), "node": node,
                        "compromised": node in taken})
    return out


# -- the score ----------------------------------------------------------------------------------
def _part(value, measured: bool, **details) -> dict:
    return {"value": round(value, 4) if measured and value is not None else None,
            "weight": 0.0, "measured": bool(measured), **details}


def score_parts(rows: list[dict], acted: bool, avail: dict | None) -> dict:
    """The four parts, each ``value`` in [0, 1] or not measured (docs/blue-team.md)."""
    seen = [r for r in rows if r["observable"]]
    parts = {"detection": _part(sum(r["detected"] for r in seen) / len(seen) if seen else None,
                                bool(seen), steps=len(seen),
                                detected=sum(r["detected"] for r in seen))}
    eligible = [r for r in rows if r["observable"] or r["contained"]]
    credit = [0.5 ** (r["time_to_contain_s"] / CONTAIN_HALF_LIFE_S) if r["contained"] else 0.0
              for r in eligible]
    parts["containment"] = _part(sum(credit) / len(credit) if credit else None,
                                 acted and bool(eligible), steps=len(eligible),
                                 contained=sum(r["contained"] for r in eligible),
                                 half_life_s=CONTAIN_HALF_LIFE_S)
    after = [r for r in rows if r["after_containment"]]
    parts["prevention"] = _part(sum(r["prevented"] for r in after) / len(after) if after
                                else None, acted and bool(after), steps=len(after),
                                prevented=sum(r["prevented"] for r in after))
    value = None
    if isinstance(avail, dict):
        value = avail.get("missions") if avail.get("missions") is not None \
            else avail.get("overall")
    parts["availability"] = _part(value, value is not None,
                                  of="mission threads" if isinstance(avail, dict) and
                                  avail.get("missions") is not None else "all threads")
    for name, p in parts.items():
        p["weight"] = WEIGHTS[name] if p["measured"] else 0.0
    return parts


def penalty(collateral: dict) -> dict:
    """Points taken off for collateral damage (docs/blue-team.md)."""
    n = collateral["benign_flows_blocked"] - collateral["benign_flows_blocked_attackers"]
    nodes = {a["node"] for a in collateral["actions_on_non_attackers"] if not a["compromised"]}
    threads = collateral["mission_threads_down"]
    p = {"benign_flows": round(FLOW_PENALTY_MAX * (1 - math.exp(-n / FLOW_PENALTY_SCALE)), 2),
         "non_attacker_nodes": min(NODE_PENALTY_MAX, NODE_PENALTY * len(nodes)),
         "mission_threads": min(THREAD_PENALTY_MAX, THREAD_PENALTY * len(threads))}
    p["total"] = round(sum(p.values()), 2)
    return p


def action_counts(records: list[dict] | None) -> dict:
    recs = records or []
    auto = sum(1 for r in recs if str(r.get("actor") or "").startswith("auto:"))
    return {"total": len(recs),
            **{k: sum(1 for r in recs if r.get("result") == k)
               for k in ("applied", "refused", "failed")},
            "auto": auto, "manual": len(recs) - auto,
            "undos": sum(1 for r in recs if r.get("reverts"))}


def blue_section(card: dict, ledger: list[dict], flows: pa.Table | None,
                 records: list[dict] | None, probes: list[dict] | None,
                 res: Resolver | None = None, notes: list[str] | None = None,
                 on_duty: bool | None = None) -> dict | None:
    """The scorecard's ``blue`` section from a scored run (``card``: ``score_run``'s output with
    its ``availability`` section, if any). ``on_duty``: a defender or an automated response
    was there to act (default: the run has an action log, ``records`` not None); without one
    containment and prevention are not measured and there is no overall ``score`` (null; the
    measured parts are still given). None when nobody was on duty and the run has no
    availability section either (a plain red drill without probes)."""
    avail = card.get("availability") if isinstance(card.get("availability"), dict) else None
    on_duty = records is not None if on_duty is None else on_duty
    if not on_duty and avail is None:
        return None
    res = res or Resolver()
    notes = list(notes or [])
    actions = parse_actions(records or [], res, notes)
    rows = steps_rows(card, ledger, actions, res)
    attacker_ips = {ip_of(r.get("actor_ip")) for r in ledger if r.get("actor_ip")}
    collateral = benign_blocked(ledger, flows, actions, res, attacker_ips,
                                card.get("slack_s") or 2.0)
    collateral.update(availability_lost(probes or [], avail, actions, res))
    collateral["actions_on_non_attackers"] = non_attacker_actions(records or [], res, ledger)
    parts = score_parts(rows, on_duty, avail)
    pen = penalty(collateral)
    weight = sum(p["weight"] for p in parts.values())
    score = None
    # nobody on duty: no overall score, only the parts that were measured (otherwise a drill
    # without a defender, containment unmeasured, would outscore one whose defender was idle)
    if weight and on_duty:
        base = 100 * sum(p["weight"] * p["value"] for p in parts.values() if p["measured"])
        score = round(max(0.0, base / weight - pen["total"]), 1)
    origin = min((float(r["start"]) for r in ledger if r.get("start") is not None), default=None)
    for r in rows:
        r["contained_at_s"] = round(r["contained_at"] - origin, 3) \
            if r["contained_at"] is not None and origin is not None else None
    if not on_duty:
        notes.append("no blue actions (no actions.jsonl, no response playbook): containment "
                      "and prevention not measured, no overall score")
    return {"score": score, "on_duty": on_duty, "parts": parts, "penalty": pen, "steps": rows,
            "collateral": collateral, "actions": action_counts(records), "origin": origin,
            "resolved_with": "topology" if res.topo is not None else
            ("run files" if res.names else "addresses only"), "notes": notes}


def _topology(manifest: dict, notes: list[str]):
    """The topology the manifest names (path as the drill saw it, from the working directory),
    or None with a note."""
    inp = (manifest.get("inputs") or {}).get("topology")
    path = inp.get("path") if isinstance(inp, dict) else None
    if not isinstance(path, str) or not Path(path).is_file():
        notes.append(f"topology {path or '(none named)'} not found from {Path.cwd()}: names "
                     "resolved from the run's files (zones unknown, every flow taken to cross "
                     "every firewall)")
        return None
    from cyberrange.errors import UserError
    from cyberrange.model.loader import load_topology
    from cyberrange.run import sha256
    try:
        topo = load_topology(path)
    except UserError as e:
        notes.append(f"topology {path} no longer loads ({e}): names resolved from the run's "
                     "files")
        return None
    if inp.get("sha256") and sha256(path) != inp["sha256"]:
        notes.append(f"topology {path} changed since the drill: names resolved as it is now")
    return topo


def run_blue(run_dir, manifest: dict, ledger: list[dict], flows: pa.Table | None,
             card: dict) -> dict | None:
    """The ``blue`` section of a run folder (see ``blue_section``): the action log and probes
    are read from ``run_dir``, the topology from the manifest when an action needs it."""
    from cyberrange.errors import UserError
    from cyberrange.score.availability import FILE, read_probes
    records = read_actions(run_dir)
    notes: list[str] = []
    probes: list[dict] = []
    if (Path(run_dir) / FILE).is_file():
        try:
            probes = read_probes(Path(run_dir) / FILE)
        except UserError as e:
            notes.append(f"probes not read: {e}")
    # an automated response was running (``drill run --respond``): on duty even if it never
    # acted and so wrote no action log
    on_duty = records is not None or bool((manifest.get("inputs") or {}).get("respond"))
    if not on_duty and not isinstance(card.get("availability"), dict):
        return None
    topo = _topology(manifest, notes) if any(r.get("result") == "applied"
                                             for r in records or []) else None
    res = Resolver(topo, names_of_run(run_dir, ledger, probes))
    return blue_section(card, ledger, flows, records, probes, res, notes, on_duty)
