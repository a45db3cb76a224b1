"""What an after-action report says, gathered once from a run folder: the HTML page, the ATT&CK
Navigator layer and ``drill report --json`` all read this one dict.

Sources, each optional except the manifest and the scorecard:

- ``scorecard.json`` (steps, alerts per detector, flows; later ``availability`` and ``blue``);
- ``ledger.jsonl`` (ground truth: one record per executed step, its window, actor, targets);
- the store's alert records (one mark per alert on the timeline; their true/false labels come
  from the scorer, handed in by the caller: ground truth meets alerts only in ``score/``);
- ``actions.jsonl`` (the blue action log) and ``availability.jsonl`` (mission probes), as the
  blue contract describes them;
- the topology file the manifest names (for the network picture).

What is missing or damaged becomes a line in ``notes`` and the part of the report it feeds is
left out; nothing here raises for an absent optional file.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from cyberrange.ecs import technique_id

NOT_ATTACK = {"replay"}     # harness capabilities in the technique library, not ATT&CK
FOCUSED_TARGETS = 8         # a step aimed at no more nodes than this draws arrows in the picture
MAX_JSONL_BYTES = 64 << 20  # an action log or probe file larger than this is not read whole


def attack_id(technique) -> str | None:
    """The ATT&CK id of a library technique id: ``T1046-connect`` -> ``T1046``,
    ``T1110.001`` stays, ``replay`` and custom ids (``CR-J0001``) -> None."""
    if not isinstance(technique, str) or not technique or technique in NOT_ATTACK:
        return None
    return technique_id(technique)


def technique_name(technique) -> str | None:
    """The catalogue's name of a library technique id (None for one it does not know)."""
    from cyberrange.attack.catalog import TECHNIQUES
    t = TECHNIQUES.get(technique) if isinstance(technique, str) else None
    return t.name if t is not None else None


def attack_domain(tid: str) -> str:
    """ATT&CK for ICS ids are T0xxx (T0800-T0899 today); everything else here is Enterprise."""
    return "ics-attack" if tid[:2] == "T0" else "enterprise-attack"


def utc(ts) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS.mmm UTC`` (or an em dash)."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def read_jsonl(path: Path, what: str, notes: list[str]) -> list[dict] | None:
    """The JSON objects of a JSON-lines file, or None when it does not exist. Lines that are not
    JSON objects are skipped with one note (another process may be appending the last line)."""
    if not path.is_file():
        if path.exists() or path.is_symlink():
            notes.append(f"{path.name}: not a regular file, {what} left out")
        return None
    if path.stat().st_size > MAX_JSONL_BYTES:
        notes.append(f"{path.name}: larger than {MAX_JSONL_BYTES >> 20} MiB, {what} left out")
        return None
    out, bad = [], 0
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            rec = None
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
    if bad:
        notes.append(f"{path.name}: {bad} line(s) that are not JSON objects skipped")
    return out


# -- the run -------------------------------------------------------------------------------
def run_header(run, card: dict) -> dict:
    m = run.manifest
    return {"run_id": run.id, "topology": m.get("topology"), "playbook": m.get("playbook"),
            "kind": run.kind, "status": m.get("status"), "error": m.get("error"),
            "created": _num(m.get("created")), "finished": _num(m.get("finished")),
            "timings": m.get("timings") or {}, "warnings": m.get("warnings") or [],
            "detectors": m.get("detectors") or [], "seed": m.get("seed"),
            "link_emulation": (m.get("twin") or {}).get("link_emulation"),
            "baseline_end": _num(m.get("baseline_end")),
            "inputs": {k: (v or {}).get("path") for k, v in (m.get("inputs") or {}).items()
                       if isinstance(v, dict)},
            "capture": (card.get("reconciliation") or {}).get("verdict")}


def _reason(rec: dict) -> str | None:
    for key in ("blocked_reason", "error", "skipped_reason", "stopped_reason", "reason"):
        v = rec.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip().splitlines()[0]
    return None


def ledger_rows(ledger: list[dict], topo) -> list[dict]:
    """One row per executed step (a repeated step has several): its window and who it aimed at."""
    rows = []
    for rec in ledger:
        targets = rec.get("targets") if isinstance(rec.get("targets"), list) else []
        rows.append({
            "step_id": rec.get("step_id"), "name": rec.get("name"),
            "technique": rec.get("technique"), "attack_id": attack_id(rec.get("technique")),
            "actor": rec.get("actor"), "actor_ip": rec.get("actor_ip"),
            "start": _num(rec.get("start")), "end": _num(rec.get("end")),
            "outcome": rec.get("outcome"), "reason": _reason(rec),
            "packets": rec.get("packets_sent") if isinstance(rec.get("packets_sent"), int) else None,
            "targets": len(targets), "repeat": rec.get("repeat"),
            "target_nodes": _target_nodes(targets, topo),
            "compromised": _nodes_of_ips((rec.get("facts") or {}).get("compromised"), topo)
            if isinstance(rec.get("facts"), dict) else [],
        })
    return rows


def _ip_part(t) -> str:
    return t.rsplit(":", 1)[0] if isinstance(t, str) and t.count(":") == 1 else t


def _nodes_of_ips(ips, topo) -> list[str]:
    if topo is None or not isinstance(ips, list):
        return []
    out = []
    for ip in ips:
        try:
            node = topo.node_by_ip(_ip_part(ip))
        except ValueError:
            node = topo.nodes.get(ip) if isinstance(ip, str) else None
        if node is not None and node.name not in out:
            out.append(node.name)
    return out


def _target_nodes(targets, topo) -> list[str]:
    return _nodes_of_ips([t for t in targets if isinstance(t, str)], topo)


def step_rows(card: dict, ledger: list[dict], blue: dict | None) -> list[dict]:
    """The scorecard's steps joined with the ledger (packets, reason, window) and, when the
    scorecard has a blue section, each step's containment."""
    by_step: dict[str, list[dict]] = {}
    for r in ledger:
        by_step.setdefault(r["step_id"], []).append(r)
    contained = _blue_steps(blue)
    out = []
    for s in card.get("steps") or []:
        recs = by_step.get(s.get("step_id"), [])
        pk = [r["packets"] for r in recs if r["packets"] is not None]
        starts = [r["start"] for r in recs if r["start"] is not None]
        ends = [r["end"] for r in recs if r["end"] is not None]
        c = contained.get(s.get("step_id"), {})
        out.append({
            "step_id": s.get("step_id"), "name": s.get("name"), "technique": s.get("technique"),
            "attack_id": attack_id(s.get("technique")),
            "technique_name": technique_name(s.get("technique")), "outcome": s.get("outcome"),
            "reason": next((r["reason"] for r in recs if r["reason"]), None),
            "packets": sum(pk) if pk else None, "attack_flows": s.get("attack_flows"),
            "detected": bool(s.get("detected")), "time_to_detect_s": s.get("time_to_detect_s"),
            "detected_by": s.get("detected_by") or [], "executions": s.get("executions"),
            "detected_late": bool(s.get("detected_late")), "late_by": s.get("late_by") or [],
            "late_detect_s": s.get("late_detect_s"),
            "actors": s.get("actors") or sorted({r["actor"] for r in recs if r["actor"]}),
            "start": min(starts) if starts else None, "end": max(ends) if ends else None,
            "contained": c.get("contained"), "time_to_contain_s": c.get("time_to_contain_s"),
            "contained_by": c.get("contained_by"),
            "observable": (bool(s.get("attack_flows")) or sum(pk) > 0)
            and not s.get("unobservable"),
            "unobservable": s.get("unobservable"),
        })
    return out


def _blue_steps(blue) -> dict[str, dict]:
    """step id -> {contained, time_to_contain_s, contained_by} from the blue section, which may
    list its steps as a list of objects or as an object keyed by step id."""
    steps = (blue or {}).get("steps") if isinstance(blue, dict) else None
    if isinstance(steps, dict):
        steps = [dict(v, step_id=k) for k, v in steps.items() if isinstance(v, dict)]
    out = {}
    for s in steps if isinstance(steps, list) else []:
        if not isinstance(s, dict) or "step_id" not in s:
            continue
        by = s.get("contained_by") or s.get("action") or s.get("action_id")
        out[s["step_id"]] = {"contained": s.get("contained"),
                             "time_to_contain_s": _num(s.get("time_to_contain_s")),
                             "contained_by": by}
    return out


# -- alerts ----------------------------------------------------------------------------------
def alert_items(alerts, truth: list[bool] | None) -> list[dict]:
    """One dict per alert record of the store (an Arrow table), in time order."""
    if alerts is None:
        return []
    rows = alerts.select([c for c in ("@timestamp", "rule.name", "threat.technique.id",
                                      "source.ip", "destination.ip", "message",
                                      "cyberrange.score") if c in alerts.column_names]).to_pylist()
    out = []
    for k, r in enumerate(rows):
        ts = r.get("@timestamp")
        out.append({"time": ts.timestamp() if ts is not None else None,
                    "detector": r.get("rule.name"), "technique": technique_id(r.get("threat.technique.id")),
                    "source": r.get("source.ip"), "destination": r.get("destination.ip"),
                    "message": r.get("message"), "score": r.get("cyberrange.score"),
                    "true": truth[k] if truth is not None and k < len(truth) else None})
    out.sort(key=lambda a: (a["time"] is None, a["time"] or 0))
    return out


def alert_summary(card: dict, items: list[dict]) -> dict:
    """Per detector: the scorecard's true/false counts, the first and last alert, the
    techniques the detector claimed."""
    a = card.get("alerts") or {}
    by = {}
    for name, v in sorted((a.get("by_detector") or {}).items()):
        by[name] = {"total": v.get("total"), "true": v.get("true"), "false": v.get("false")}
    for it in items:
        d = by.setdefault(it["detector"], {"total": None, "true": None, "false": None})
        if it["time"] is not None:
            d["first"] = min(d.get("first") or it["time"], it["time"])
            d["last"] = max(d.get("last") or it["time"], it["time"])
        if it["technique"] and it["technique"] not in d.setdefault("techniques", []):
            d["techniques"].append(it["technique"])
    return {"total": a.get("total"), "true": a.get("true"), "false": a.get("false"),
            "by_detector": by, "items": items}


# -- blue: the action log and the availability probes ---------------------------------------
ISOLATING = {"isolate"}
BLOCKING = {"block", "rule-add"}


def _param_nodes(params: dict, keys: tuple[str, ...], topo) -> list[str]:
    out = []
    for k in keys:
        v = params.get(k)
        for x in v if isinstance(v, list) else [v]:
            if not isinstance(x, str) or not x:
                continue
            if topo is not None and x in topo.nodes:
                name = x
            else:
                found = _nodes_of_ips([x], topo)
                name = found[0] if found else (x if topo is None else None)
            if name and name not in out:
                out.append(name)
    return out


def actions(records: list[dict] | None, topo) -> list[dict] | None:
    """The action log in time order, each action with ``until`` (when a later applied action
    reverted it; None: active to the end) and the nodes it isolated or blocked."""
    if records is None:
        return None
    acts = sorted((r for r in records if _num(r.get("time")) is not None),
                  key=lambda r: r["time"])
    reverted = {r.get("reverts"): r["time"] for r in acts
                if r.get("result") == "applied" and r.get("reverts")}
    out = []
    for r in acts:
        params = r.get("params") if isinstance(r.get("params"), dict) else {}
        kind = r.get("action")
        applied = r.get("result") == "applied"
        out.append({
            "id": r.get("id"), "time": float(r["time"]), "actor": r.get("actor"),
            "action": kind, "params": params, "result": r.get("result"),
            "reason": r.get("reason"), "reverts": r.get("reverts"),
            "until": reverted.get(r.get("id")), "applied_s": _num(r.get("applied_s")),
            "auto": isinstance(r.get("actor"), str) and r["actor"].startswith("auto:"),
            "isolated": _param_nodes(params, ("node", "nodes", "target"), topo)
            if applied and kind in ISOLATING else [],
            "blocked": _param_nodes(params, ("src", "source", "node"), topo)
            if applied and kind in BLOCKING else [],
        })
    return out


def _down_s(series: list) -> float:
    """Seconds a thread was seen down: each failed probe counts until the next probe (the last
    one for the median gap between probes)."""
    gaps = sorted(b[0] - a[0] for a, b in zip(series, series[1:]))
    typical = gaps[len(gaps) // 2] if gaps else 0.0
    down = 0.0
    for k, (t, ok, _) in enumerate(series):
        if not ok:
            down += (series[k + 1][0] - t) if k + 1 < len(series) else typical
    return round(down, 3)


def availability(card: dict, probes: list[dict] | None) -> dict | None:
    """The scorecard's availability section (or one counted from the probes when the drill was
    not scored with it) and each thread's probes as ``[time, ok, latency_ms]``."""
    section = card.get("availability") if isinstance(card.get("availability"), dict) else None
    if probes is None and section is None:
        return None
    series: dict[str, list] = {}
    for p in probes or []:
        t, thread = _num(p.get("time")), p.get("thread")
        if t is None or not isinstance(thread, str):
            continue
        series.setdefault(thread, []).append([t, bool(p.get("ok")), _num(p.get("latency_ms"))])
    for s in series.values():
        s.sort(key=lambda x: x[0])
    if section is None:
        threads = {}
        for name, s in series.items():
            ok = sum(1 for x in s if x[1])
            threads[name] = {"probes": len(s), "ok": ok,
                             "availability": ok / len(s) if s else None,
                             "first_down": next((x[0] for x in s if not x[1]), None),
                             "down_s": _down_s(s)}
        n = sum(t["probes"] for t in threads.values())
        section = {"threads": threads, "scored": False,
                   "overall": sum(t["ok"] for t in threads.values()) / n if n else None}
    return dict(section, series=series)


def link_events(records: list[dict] | None, avail: dict | None) -> list[dict] | None:
    """The run's DDIL link changes (``logs/links.jsonl``, ``twin/ddil.py``), each with the
    time it lasted (until the zone's next change) and, while a link was not ``up``, every
    mission thread's probes in that window: ``[ok, probes]`` (what the outage cost)."""
    if records is None:
        return None
    series = (avail or {}).get("series") or {}
    rows = []
    for k, r in enumerate(records):
        t = _num(r.get("t"))
        if t is None or not isinstance(r.get("zone"), str):
            continue
        until = next((_num(x.get("t")) for x in records[k + 1:] if x.get("zone") == r["zone"]),
                     None)
        missions = {}
        if r.get("state") != "up":
            end = until                            # None: to the end of the run
            for thread, s in series.items():
                window = [x for x in s if t <= x[0] and (end is None or x[0] < end)]
                if window:
                    missions[thread] = [sum(1 for x in window if x[1]), len(window)]
        rows.append({"time": t, "zone": r["zone"], "state": r.get("state"),
                     "values": r.get("values") or {}, "notes": r.get("notes") or [],
                     "reason": r.get("reason") or "",
                     "until": until, "missions": missions})
    return rows


# -- the picture's marks -----------------------------------------------------------------------
def picture_marks(ledger: list[dict], acts: list[dict] | None) -> dict:
    """Who attacked whom (arrows for focused steps, rings for broad ones), what was compromised,
    and what the blue team isolated or blocked."""
    actors, arrows, probed, compromised = [], [], [], []
    for r in ledger:
        if r["actor"] and r["actor"] not in actors:
            actors.append(r["actor"])
        focused = 0 < len(r["target_nodes"]) <= FOCUSED_TARGETS
        for n in r["target_nodes"]:
            if n == r["actor"]:
                continue
            if focused:
                arrow = [r["actor"], n, r["step_id"], r["outcome"]]
                if r["actor"] and arrow[:2] not in [a[:2] for a in arrows]:
                    arrows.append(arrow)
            elif n not in probed:
                probed.append(n)
        compromised += [n for n in r["compromised"] if n not in compromised]
    isolated, blocked = [], []
    for a in acts or []:
        isolated += [n for n in a["isolated"] if n not in isolated]
        blocked += [n for n in a["blocked"] if n not in blocked]
    return {"actors": actors, "arrows": arrows, "probed": probed, "compromised": compromised,
            "isolated": isolated, "blocked": blocked}


def load_topology_of(run, notes: list[str]):
    """The topology the drill ran on, from the path its manifest names (relative paths from the
    working directory, as the drill saw them); None with a note when it cannot be had."""
    inp = (run.manifest.get("inputs") or {}).get("topology")
    path = inp.get("path") if isinstance(inp, dict) else None
    if not isinstance(path, str):
        notes.append("the manifest names no topology file: no network picture")
        return None
    p = Path(path)
    if not p.is_file():
        notes.append(f"topology {path} not found from {Path.cwd()}: no network picture "
                     "(run the report from where the drill ran)")
        return None
    from cyberrange.errors import UserError
    from cyberrange.model.loader import load_topology
    from cyberrange.run import sha256
    try:
        topo = load_topology(p)
    except UserError as e:
        notes.append(f"topology {path} no longer loads ({e}): no network picture")
        return None
    if inp.get("sha256") and sha256(p) != inp["sha256"]:
        notes.append(f"topology {path} changed since the drill: the picture shows it as it is now")
    return topo


def _origin(ledger: list[dict], times: list[float]) -> float | None:
    """Time zero of the report: the start of the first attack step (what came before it, the
    warm-up, reads as negative), or the first event of a run without steps."""
    starts = [r["start"] for r in ledger if r["start"] is not None]
    return min(starts) if starts else (min(times) if times else None)


def gather(run, card: dict, alerts=None, alert_truth: list[bool] | None = None,
           alerts_note: str | None = None) -> dict:
    """Everything the report shows, as plain JSON-ready data (see the module docstring)."""
    notes: list[str] = [alerts_note] if alerts_note else []
    topo = load_topology_of(run, notes)
    ledger = ledger_rows(run.ledger(), topo)
    acts = actions(read_jsonl(run.dir / "actions.jsonl", "blue actions", notes), topo)
    avail = availability(card, read_jsonl(run.dir / "availability.jsonl",
                                          "availability probes", notes))
    links = link_events(read_jsonl(run.dir / "logs" / "links.jsonl", "link events", notes)
                        if (run.dir / "logs" / "links.jsonl").exists() else None, avail)
    blue = card.get("blue") if isinstance(card.get("blue"), dict) else None
    items = alert_items(alerts, alert_truth)
    times = [t for r in ledger for t in (r["start"], r["end"]) if t is not None]
    times += [a["time"] for a in items if a["time"] is not None]
    times += [a["time"] for a in acts or []]
    times += [x[0] for s in (avail or {}).get("series", {}).values() for x in s]
    head = run_header(run, card)
    if head["baseline_end"] is not None:
        times.append(head["baseline_end"])
    return {
        "run": head, "t0": min(times) if times else None, "t1": max(times) if times else None,
        "origin": _origin(ledger, times),
        "steps": step_rows(card, ledger, blue), "ledger": ledger,
        "alerts": alert_summary(card, items), "actions": acts, "availability": avail,
        "link_events": links,
        "blue": blue, "techniques": card.get("techniques") or {},
        "incidents": card.get("incidents"),
        "flows": card.get("flows") or {}, "reconciliation": card.get("reconciliation") or {},
        "picture": dict(picture_marks(ledger, acts), topology=topo is not None),
        "scorecard": card, "notes": notes, "_topology": topo,
    }


def as_json(content: dict) -> dict:
    """The content without the in-memory topology: what ``drill report --json`` prints."""
    return {k: v for k, v in content.items() if not k.startswith("_")}
