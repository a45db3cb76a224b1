"""The action log: ``<run folder>/actions.jsonl``, one JSON object per action.

Format (the issue 14 contract, ``docs/blue-team.md``)::

    {"id": "A3", "time": <epoch>, "actor": "alice" | "auto:<response>", "action": "block",
     "params": {...normalised...}, "result": "applied" | "refused" | "failed",
     "reason": str | null, "reverts": "<id>" | null, "twin": "<prefix>",
     "objects": ["<what was changed>"], "applied_s": <seconds>, "trigger": {...} | null}

Writers hold an exclusive ``flock`` on ``actions.jsonl.lock`` from reading the log (the next
id, what is active) to appending their record, so that a drill's automated response and a
defender's terminal never take the same id or revert the same action twice; the kernel change
happens inside that lock too. Readers take the shared lock.
"""
from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path

LOG_NAME = "actions.jsonl"

#: action -> the action that undoes it (one-shot actions have none)
UNDO = {"block": "unblock", "isolate": "release", "rule-add": "rule-remove"}
ONE_SHOT = ("kill-sessions", "restart-service")
ACTIONS = (*UNDO, *UNDO.values(), *ONE_SHOT)


def log_path(run_dir) -> Path:
    return Path(run_dir) / LOG_NAME


@contextmanager
def locked(run_dir, exclusive: bool = True):
    """The log's lock (``actions.jsonl.lock`` beside it) for the block; yields the records."""
    lock = Path(run_dir) / (LOG_NAME + ".lock")
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield read(run_dir)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read(run_dir) -> list[dict]:
    """Every record of the log, in order (a torn last line, from a writer killed mid-write,
    is skipped)."""
    path = log_path(run_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def next_id(records: list[dict]) -> str:
    numbers = [int(r["id"][1:]) for r in records
               if isinstance(r.get("id"), str) and r["id"][1:].isdigit()]
    return f"A{max(numbers, default=0) + 1}"


def active_of(records: list[dict]) -> list[dict]:
    """Applied actions that can be undone and were not undone by a later applied action, in
    the order they were applied. (Kill-sessions and restart-service happen once and are
    never active.)"""
    undone = {r.get("reverts") for r in records if r.get("result") == "applied"}
    return [r for r in records if r.get("result") == "applied" and r.get("action") in UNDO
            and r.get("id") not in undone]


def append(run_dir, record: dict) -> dict:
    """Append one record (the caller holds the lock)."""
    line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
    with open(log_path(run_dir), "a") as f:
        f.write(line)
        f.flush()
    return record


def record(id_: str, action: str, params: dict, actor: str, twin: str, *,
           result: str = "applied", reason: str | None = None, reverts: str | None = None,
           objects: list[str] | None = None, applied_s: float = 0.0,
           trigger: dict | None = None, at: float | None = None) -> dict:
    """One log record, fields in the contract's order."""
    return {"id": id_, "time": time.time() if at is None else at, "actor": actor,
            "action": action, "params": params, "result": result, "reason": reason,
            "reverts": reverts, "twin": twin, "objects": list(objects or []),
            "applied_s": round(applied_s, 6), "trigger": trigger}
