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
     "repeat": int, "skipped_reason": str | null}

One record per execution: a step with ``timing.repeat: n`` writes n records (``repeat`` 0..n-1),
a step run from several actors (an actor fact) one per actor and repeat. ``actor`` is the node
the execution actually ran on. A skipped step (precondition false, no target, no actor) writes
one record with outcome ``skipped``, its reason, and no flows.

``packets_sent``/``bytes_sent`` are the sums over ``flows``. A flow counts the IPv4 packets the
actor sent for one 5-tuple (src = actor); for ICMP, ``sport`` is the ICMP type and ``dport`` the
code. See docs/techniques.md for how each technique counts.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

RECORD_KEYS = ("run_id", "step_id", "name", "technique", "actor", "actor_ip", "targets",
               "start", "end", "outcome", "packets_sent", "bytes_sent", "flows", "facts", "error",
               "repeat", "skipped_reason")
FLOW_KEYS = ("src", "dst", "proto", "sport", "dport", "packets", "bytes")
OUTCOMES = ("succeeded", "failed", "blocked", "skipped", "error")
AGENT_OUTCOMES = ("succeeded", "failed", "blocked", "error")   # what a technique may report

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
    if rec["outcome"] not in OUTCOMES:
        raise ValueError(f"bad outcome {rec['outcome']!r}")
    return rec


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


def read_ledger(path) -> list[dict]:
    """Every record of a ledger file, in order (an empty list if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON ledger record ({exc.msg})") from None
    return out


class Ledger:
    """A ledger file bound to a path: ``Ledger(p).append(rec)``, ``Ledger(p).records()``."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        append_record(self.path, record)

    def records(self) -> list[dict]:
        return read_ledger(self.path)
