"""A trainee's progress in one lab run: ``lab.json`` in the lab's run folder.

::

    runs/labs/<trainee>-<lab>-<id>/
      lab.json        progress (this module): submissions, tries, hints, check results, tasks done
      work/           the trainee's files (copies of the lab's start_files; detector/topology
                      checks read them here)
      twins/<run-id>/ one run folder per twin the lab built (manifest kind "lab"): pcaps, ledger,
                      blue action log; `lab restart` adds one, progress stays in lab.json
      query.duckdb    what `lab query` / `lab alerts` ingested last

Every change is made under an exclusive lock (``fcntl``) and written whole (a temporary file,
renamed): two terminals submitting at once, or a CLI killed mid-write, never lose or corrupt it.
Nothing here needs the twin: a stopped lab's progress and score are read the same way.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from cyberrange.errors import UserError

PROGRESS = "lab.json"
VERSION = 1


def new_progress(lab, trainee: str, lab_dir: Path) -> dict:
    from cyberrange.run import sha256
    return {"version": VERSION, "lab": lab.name, "title": lab.title, "trainee": trainee,
            "lab_file": str(Path(lab.file).resolve()), "lab_sha256": sha256(lab.file),
            "dir": str(lab_dir), "started": time.time(), "stopped": None,
            "points": {t.id: t.points for t in lab.tasks},
            "twins": [], "submissions": [], "hints": [], "checks": [], "done": {}}


def path_of(lab_dir) -> Path:
    return Path(lab_dir) / PROGRESS


def read(lab_dir) -> dict:
    """``lab.json`` of a lab run folder; a one-line UserError when missing or damaged."""
    p = path_of(lab_dir)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: no lab progress here (not a lab run folder)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: cannot read the lab progress: {e}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or "lab" not in data:
        raise UserError(f"{p}: not a lab progress file of version {VERSION}")
    for k, default in (("submissions", []), ("hints", []), ("checks", []), ("done", {}),
                       ("twins", []), ("points", {})):
        if not isinstance(data.get(k), type(default)):
            raise UserError(f"{p}: '{k}' is damaged (expected a {type(default).__name__})")
    return data


def write(lab_dir, data: dict) -> None:
    p = path_of(lab_dir)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1, default=str))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(p)


@contextmanager
def updating(lab_dir):
    """``with updating(dir) as prog: ...`` — read, change, write whole, under the lock."""
    lock = Path(lab_dir) / ".lab.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            data = read(lab_dir)
            yield data
            write(lab_dir, data)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- questions asked of a progress --------------------------------------------------------------
def tries_used(data: dict, task: str) -> int:
    return sum(1 for s in data["submissions"] if s["task"] == task)


def wrong(data: dict, task: str | None = None) -> int:
    return sum(1 for s in data["submissions"]
               if not s["ok"] and (task is None or s["task"] == task))


def answered(data: dict, task: str) -> bool:
    return any(s["ok"] for s in data["submissions"] if s["task"] == task)


def hints_taken(data: dict, task: str) -> list[dict]:
    return [h for h in data["hints"] if h["task"] == task]


def last_results(data: dict, task: str) -> dict[int, dict]:
    """The newest result of each check of ``task``: ``{check index: record}``."""
    out: dict[int, dict] = {}
    for r in data["checks"]:
        if r["task"] == task:
            out[r["check"]] = r
    return out


def task_score(data: dict, task: str) -> int:
    """Points of a done task minus the hints taken for it (never below 0); 0 if not done."""
    if task not in data["done"]:
        return 0
    cost = sum(h.get("cost", 0) for h in hints_taken(data, task))
    return max(0, int(data["points"].get(task, 0)) - cost)


def score(data: dict) -> int:
    return sum(task_score(data, t) for t in data["points"])


def summary(data: dict) -> dict:
    """One trainee's lab run in numbers (the instructor's row)."""
    end = data.get("stopped") or time.time()
    tasks = list(data["points"])
    return {
        "trainee": data["trainee"], "lab": data["lab"], "dir": data.get("dir"),
        "score": score(data), "max": sum(int(v) for v in data["points"].values()),
        "tasks_done": len(data["done"]), "tasks": len(tasks),
        "hints": len(data["hints"]), "hint_cost": sum(h.get("cost", 0) for h in data["hints"]),
        "wrong": wrong(data), "started": data["started"], "stopped": data.get("stopped"),
        "minutes": round((end - data["started"]) / 60, 1),
        "task_s": {t: round(data["done"][t] - data["started"], 1) for t in tasks
                   if t in data["done"]},
        "twins": len(data["twins"]),
    }
