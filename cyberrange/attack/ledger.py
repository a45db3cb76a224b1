"""The ledger: ground truth of what the red team did, one JSON line per step execution.

The file is ``runs/<run-id>/ledger.jsonl``; it is only ever appended to (under a lock: steps
may run concurrently), and every record is fsync'ed as it is written, so a crash mid-drill
leaves every finished execution on disk. Scoring (``cyberrange.score``) is the only reader that
joins it with alerts.

Record format: Elastic Common Schema names, flat dotted keys as in the store (every key
always present; ``ECS_NAMES`` maps the names of records written before, right)::

    {"cyberrange.run_id", "cyberrange.step.id", "cyberrange.step.name",
     "threat.technique.id" (ATT&CK id or null), "cyberrange.technique.variant" (library
     variant such as T1046-connect, or null), "cyberrange.actor", "source.ip" (actor's address),
     "source.mac" (the MAC of the actor's interface that holds that address, lower case
     ``aa:bb:..``, as the store's ``source.mac``; null when the runner could not read it and in
     records written before 2026-12-06),
     "destination.ip": [resolved target ips], "event.start", "event.end" (epoch seconds),
     "event.outcome" (success | failure | unknown), "cyberrange.outcome" (below),
     "source.packets", "source.bytes",
     "cyberrange.flows": [{"src", "dst", "proto", "sport", "dport", "packets", "bytes"}],
     "cyberrange.facts": {...}, "error.message": str | null, "cyberrange.repeat": int,
     "cyberrange.skipped_reason", "cyberrange.blocked_reason": str | null,
     "cyberrange.arp_frames": int}

Old runs stay readable: ``read_ledger`` is the one reader, and maps a record of either
spelling (``ledger_record``) to a dict that holds the ECS names AND the names used before
(``step_id``, ``technique``, ``actor_ip``, ``start``, ``outcome``, ...): code that reads the
ledger may use either; new code uses the ECS names. Only the ECS names are written.

Outcomes (docs/playbook-format.md, "Outcomes"): ``succeeded``, ``failed``, ``blocked`` (the
defence stopped the step: ``blocked_reason``), ``error`` (the step could not run properly:
``error``), ``stopped`` (the operator stopped the run while the step ran), ``skipped``
(``skipped_reason``). ``error``, ``blocked_reason`` and ``skipped_reason`` are ONE line each
(a traceback goes to the run's ``logs/agent-<step>-<actor>-<repeat>.err``, never here).

One record per execution: a step with ``timing.repeat: n`` writes n records (``repeat`` 0..n-1),
a step run from several actors (an actor fact) one per actor and repeat. ``actor`` is the node
the execution actually ran on. A skipped step (precondition false, no target, no actor) writes
one record with outcome ``skipped``, its reason, and no flows.

``packets_sent``/``bytes_sent`` are the sums over ``flows``. A flow counts the IPv4 packets the
actor sent for one 5-tuple (src = actor); for ICMP, ``sport`` is the ICMP type and ``dport`` the
code. They count what really left the actor, also when the step was cut short (blocked, error,
stopped): what went out before the cut. ``arp_frames`` counts the ARP frames the technique
wrote itself (requests for next hops, an ARP scan, poisoning): they have no 5-tuple. See
docs/techniques.md for how each technique counts.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from cyberrange.ecs import VARIANT_FIELD, split_technique

RECORD_KEYS = ("run_id", "step_id", "name", "technique", "actor", "actor_ip", "actor_mac",
               "targets", "start", "end", "outcome", "packets_sent", "bytes_sent", "flows",
               "facts", "error", "repeat", "skipped_reason", "blocked_reason", "arp_frames")
FLOW_KEYS = ("src", "dst", "proto", "sport", "dport", "packets", "bytes")
OUTCOMES = ("succeeded", "failed", "blocked", "skipped", "error", "stopped")
AGENT_OUTCOMES = ("succeeded", "failed", "blocked", "error", "stopped")  # what an agent reports
REASON_MAX = 500             # characters of a one-line reason

#: name used before -> ECS name (``technique`` and ``outcome`` each also give a second field:
#: ``cyberrange.technique.variant`` and ``event.outcome``, see ``to_ecs``)
ECS_NAMES = {
    "run_id": "cyberrange.run_id", "step_id": "cyberrange.step.id", "name": "cyberrange.step.name",
    "technique": "threat.technique.id", "actor": "cyberrange.actor", "actor_ip": "source.ip",
    "actor_mac": "source.mac",
    "targets": "destination.ip", "start": "event.start", "end": "event.end",
    "outcome": "cyberrange.outcome", "packets_sent": "source.packets", "bytes_sent": "source.bytes",
    "flows": "cyberrange.flows", "facts": "cyberrange.facts", "error": "error.message",
    "repeat": "cyberrange.repeat", "skipped_reason": "cyberrange.skipped_reason",
    "blocked_reason": "cyberrange.blocked_reason", "arp_frames": "cyberrange.arp_frames",
}
#: the keys of a record as written, in order
ECS_KEYS = ("cyberrange.run_id", "cyberrange.step.id", "cyberrange.step.name",
            "threat.technique.id", VARIANT_FIELD, "cyberrange.actor", "source.ip", "source.mac",
            "destination.ip", "event.start", "event.end", "event.outcome", "cyberrange.outcome",
            "source.packets", "source.bytes", "cyberrange.flows", "cyberrange.facts",
            "error.message", "cyberrange.repeat", "cyberrange.skipped_reason",
            "cyberrange.blocked_reason", "cyberrange.arp_frames")
#: ECS ``event.outcome`` (success | failure | unknown) of each of our outcomes
EVENT_OUTCOME = {"succeeded": "success", "failed": "failure", "blocked": "failure",
                 "error": "failure", "skipped": "unknown", "stopped": "unknown"}

_LOCK = threading.Lock()     # one writer at a time, whatever the file (appends are rare)


def make_record(**fields) -> dict:
    """A ledger record with every key, in the documented order; totals computed from flows."""
    flows = [{k: f[k] for k in FLOW_KEYS} for f in fields.get("flows") or []]
    rec = {k: fields.get(k) for k in RECORD_KEYS}
    rec["targets"] = list(fields.get("targets") or [])
    rec["flows"] = flows
    rec["facts"] = dict(fields.get("facts") or {})
    rec["packets_sent"] = sum(int(f["packets"]) for f in flows)
    rec["bytes_sent"] = sum(int(f["bytes"]) for f in flows)
    rec["repeat"] = int(fields.get("repeat") or 0)
    rec["arp_frames"] = int(fields.get("arp_frames") or 0)
    rec["actor_mac"] = normal_mac(fields.get("actor_mac"))
    if rec["outcome"] not in OUTCOMES:
        raise ValueError(f"bad outcome {rec['outcome']!r}")
    for key in ("error", "skipped_reason", "blocked_reason"):
        if rec[key] is not None:
            rec[key] = one_line(rec[key])
    if rec["outcome"] != "blocked":
        rec["blocked_reason"] = None
    elif not rec["blocked_reason"]:
        rec["blocked_reason"] = "the technique reported 'blocked' without saying why"
    return both_names(rec)


def normal_mac(mac) -> str | None:
    """A MAC as the store writes it (``02:ab:..``, lower case, colons); None for anything that
    is no 48-bit MAC (an unknown actor MAC is null, never a guess)."""
    if not isinstance(mac, str):
        return None
    parts = mac.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(x) == 2 and all(c in "0123456789abcdef" for c in x)
                                  for x in parts):
        return None
    return ":".join(parts)


def is_ecs(rec: dict) -> bool:
    """Whether a record read from a file is in ECS names (written by this version on)."""
    return "cyberrange.step.id" in rec


def to_ecs(rec: dict) -> dict:
    """The ECS record (``ECS_KEYS``, in order) of a record in either spelling."""
    if is_ecs(rec):
        return {k: rec.get(k) for k in ECS_KEYS}
    out = {}
    for old, new in ECS_NAMES.items():
        if old == "technique":
            out[new], out[VARIANT_FIELD] = split_technique(rec.get(old))
        elif old == "outcome":
            out["event.outcome"] = EVENT_OUTCOME.get(rec.get(old), "unknown")
            out[new] = rec.get(old)
        else:
            out[new] = rec.get(old)
    return {k: out.get(k) for k in ECS_KEYS}


def from_ecs(rec: dict) -> dict:
    """The names used before, from an ECS record (``technique``: the variant when there is
    one, else the ATT&CK id, as the playbook named it)."""
    out = {old: rec.get(new) for old, new in ECS_NAMES.items()}
    out["technique"] = rec.get(VARIANT_FIELD) or rec.get("threat.technique.id")
    return out


def both_names(legacy: dict) -> dict:
    """One record holding the ECS names and the names used before (see the module doc)."""
    return {**to_ecs(legacy), **legacy}


def legacy_record(raw: dict) -> dict:
    """Only the names used before, from a record of either spelling (unchecked): for a tool
    that edits records and writes them back in the old format (which stays readable)."""
    return from_ecs(raw) if is_ecs(raw) else raw


def unchecked_record(raw: dict) -> dict:
    """``both_names`` without the checks, for a live view that skips what it cannot show."""
    return {**raw, **from_ecs(raw)} if is_ecs(raw) else raw


def ledger_record(raw: dict) -> dict:
    """A record as read from a file of any version -> ``both_names`` (checked first)."""
    legacy = from_ecs(raw) if isinstance(raw, dict) and is_ecs(raw) else raw
    check_record(legacy)
    # records written before 2026-12-06 have no actor MAC: null, as when it was not read
    return both_names({**legacy, "actor_mac": normal_mac(legacy.get("actor_mac"))})


def one_line(text, limit: int = REASON_MAX) -> str:
    """``text`` as one line (whitespace runs, newlines included, become one space) of at most
    ``limit`` characters: ledger reasons are one line, a traceback never gets in."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def append_record(path, record: dict) -> None:
    """Append one record (its ECS names only) as a JSON line and fsync it (thread-safe: one whole line each)."""
    path = Path(path)
    line = json.dumps(to_ecs(record), sort_keys=False, separators=(",", ":")) + "\n"
    with _LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def read_ledger(path, missing_ok: bool = True) -> list[dict]:
    """Every record of a ledger file, in order, in both spellings (``ledger_record``, each
    checked by ``check_record``): the one reader of ledgers (scoring, evaluation, exports). A
    missing file is ``[]`` (``missing_ok``) or an error; anything else wrong (not a regular
    file, not UTF-8, a line that is not JSON or is cut short, a record without the fields scoring uses) is a UserError ``FILE:LINE: ...``."""
    from cyberrange.errors import UserError
    from cyberrange.shapes import read_regular
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        if missing_ok:
            return []
        raise UserError("the ledger is missing", file=str(path))
    data = read_regular(path, "ledger")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", file=str(path),
                        line=data[:exc.start].count(b"\n") + 1) from None
    lines = text.split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            cut = " (the file ends in the middle of a record)" if n == len(lines) else ""
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise UserError(f"not a JSON ledger record ({why}){cut}", file=str(path), line=n,
                            col=getattr(exc, "colno", None)) from None
        try:
            out.append(ledger_record(rec))
        except UserError as exc:
            raise UserError(exc.message, file=str(path), line=n) from None
    return out


def check_record(rec) -> None:
    """A UserError unless ``rec`` is a ledger record with the fields scoring reads, typed as the
    format above says. Hand-written ledgers may leave out the optional fields."""
    from cyberrange.errors import UserError
    from cyberrange.shapes import NUM, json_type, want, want_list_of_objects
    if not isinstance(rec, dict):
        raise UserError(f"a ledger record must be a JSON object, not {json_type(rec)}")
    step = want(rec, "step_id", (str,), "record")
    if not step.strip():
        raise UserError("record: 'step_id' is empty")
    where = f"step {step!r}"
    outcome = want(rec, "outcome", (str,), where)
    if outcome not in OUTCOMES:
        raise UserError(f"{where}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    for key in ("start", "end"):
        want(rec, key, NUM, where)
    for key in ("run_id", "name", "technique", "actor", "actor_ip", "actor_mac", "error",
                "skipped_reason", "blocked_reason"):
        want(rec, key, (str, None), where, required=False)
    for key in ("packets_sent", "bytes_sent", "repeat", "arp_frames"):
        want(rec, key, (int, None), where, required=False)
    want(rec, "targets", (list, None), where, required=False)
    want(rec, "facts", (dict, None), where, required=False)
    for i, flow in enumerate(want_list_of_objects(rec, "flows", where)):
        fw = f"{where}: flows[{i}]"
        for key in ("proto", "src", "dst"):
            want(flow, key, (str,), fw)
        for key in ("sport", "dport"):
            want(flow, key, (int,), fw)
        for key in ("packets", "bytes"):
            want(flow, key, (int,), fw, required=False)


class Ledger:
    """A ledger file bound to a path: ``Ledger(p).append(rec)``, ``Ledger(p).records()``."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        append_record(self.path, record)

    def records(self) -> list[dict]:
        return read_ledger(self.path)
