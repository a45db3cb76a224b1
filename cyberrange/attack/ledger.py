"""The ledger: ground truth of what the red team did, one JSON line per step execution.

The file is ``runs/<run-id>/ledger.jsonl``; it is only ever appended to (under a lock: steps
may run concurrently), and every record is fsync'ed as it is written, so a crash mid-drill
leaves every finished execution on disk. Scoring (``cyberrange.score``) is the only reader that
joins it with alerts.

Record format (every key always present)::

    {"run_id", "step_id", "name", "technique", "actor", "actor_ip",
     "targets": [resolved ip strings], "start", "end", "outcome",
     "packets_sent", "bytes_sent",
     "flows": [{"src", "dst", "proto", "sport", "dport", "packets", "bytes"}],
     "facts": {...}, "error": str | null,
     "repeat": int, "skipped_reason": str | null,
     "blocked_reason": str | null, "arp_frames": int}

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

RECORD_KEYS = ("run_id", "step_id", "name", "technique", "actor", "actor_ip", "targets",
               "start", "end", "outcome", "packets_sent", "bytes_sent", "flows", "facts", "error",
               "repeat", "skipped_reason", "blocked_reason", "arp_frames")
FLOW_KEYS = ("src", "dst", "proto", "sport", "dport", "packets", "bytes")
OUTCOMES = ("succeeded", "failed", "blocked", "skipped", "error", "stopped")
AGENT_OUTCOMES = ("succeeded", "failed", "blocked", "error", "stopped")  # what an agent reports
REASON_MAX = 500             # characters of a one-line reason

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
    if rec["outcome"] not in OUTCOMES:
        raise ValueError(f"bad outcome {rec['outcome']!r}")
    for key in ("error", "skipped_reason", "blocked_reason"):
        if rec[key] is not None:
            rec[key] = one_line(rec[key])
    if rec["outcome"] != "blocked":
        rec["blocked_reason"] = None
    elif not rec["blocked_reason"]:
        rec["blocked_reason"] = "the technique reported 'blocked' without saying why"
    return rec


def one_line(text, limit: int = REASON_MAX) -> str:
    """``text`` as one line (whitespace runs, newlines included, become one space) of at most
    ``limit`` characters: ledger reasons are one line, a traceback never gets in."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def append_record(path, record: dict) -> None:
    """Append one record as a JSON line and fsync it (thread-safe: one whole line each)."""
    path = Path(path)
    line = json.dumps(record, sort_keys=False, separators=(",", ":")) + "\n"
    with _LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def read_ledger(path, missing_ok: bool = True) -> list[dict]:
    """Every record of a ledger file, in order, each checked by ``check_record``: the one reader
    of ledgers (scoring, evaluation, exports). A missing file is ``[]`` (``missing_ok``) or an
    error; anything else wrong (not a regular file, not UTF-8, a line that is not JSON or is cut
    short, a record without the fields scoring uses) is a UserError ``FILE:LINE: ...``."""
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
            check_record(rec)
        except UserError as exc:
            raise UserError(exc.message, file=str(path), line=n) from None
        out.append(rec)
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
    for key in ("run_id", "name", "technique", "actor", "actor_ip", "error", "skipped_reason",
                "blocked_reason"):
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
