"""What a trainee does in a lab: submit an answer, take a hint, verify tasks.

Each changes ``lab.json`` under its lock (``progress.updating``), so it survives a restart of
the CLI and of the twin. Wrong answers are refused and counted; once a task's tries are used up
no answer is taken. A task is done when every one of its checks passes in one ``verify``; a
done task stays done (its time is the time of that verify).
"""
from __future__ import annotations

import time

from cyberrange.errors import UserError
from cyberrange.labs import checks, progress


def submit(lab, lab_dir, task_id: str, answer: str) -> dict:
    """Record an answer to ``task_id``; ``{ok, tries_left, done}``. Refused (UserError) when
    the task takes no answer, is answered already or has no tries left."""
    task = lab.task(task_id)
    spec = task.answer
    if spec is None:
        raise UserError(f"task {task_id} takes no answer (`cyberrange lab verify {task_id}` "
                        f"checks it)")
    answer = str(answer).strip()
    if not answer:
        raise UserError("an empty answer")
    with progress.updating(lab_dir) as p:
        if progress.answered(p, task_id):
            raise UserError(f"task {task_id} is answered already")
        used = progress.tries_used(p, task_id)
        if used >= task.tries:
            raise UserError(f"no tries left for task {task_id} ({task.tries} used)")
        ok = checks.answer_matches(spec.spec, answer)
        p["submissions"].append({"task": task_id, "answer": answer[:200], "ok": ok,
                                 "time": time.time()})
        done = False
        if ok and len(task.checks) == 1 and task_id not in p["done"]:
            p["done"][task_id] = time.time()           # the answer is the whole task
            done = True
        left = task.tries - used - 1
    return {"ok": ok, "tries_left": 0 if ok else left, "done": done}


def hint(lab, lab_dir, task_id: str) -> dict:
    """The next hint of ``task_id`` (recorded with its cost); UserError when none is left."""
    task = lab.task(task_id)
    with progress.updating(lab_dir) as p:
        taken = progress.hints_taken(p, task_id)
        if len(taken) >= len(task.hints):
            raise UserError(f"task {task_id} has no more hints ({len(task.hints)} taken)"
                            if task.hints else f"task {task_id} has no hints")
        h = task.hints[len(taken)]
        p["hints"].append({"task": task_id, "index": len(taken), "cost": h.cost,
                           "time": time.time()})
    return {"index": len(taken) + 1, "of": len(task.hints), "text": h.text, "cost": h.cost}


def verify(lab, lab_dir, active=None, task_id: str | None = None) -> list[dict]:
    """Run the checks of one task (or every task not done); record the results and the tasks
    now done. Returns the result records."""
    prog = progress.read(lab_dir)
    tasks = [lab.task(task_id)] if task_id else [t for t in lab.tasks
                                                 if t.id not in prog["done"]]
    ctx = checks.Context(lab, lab_dir, active)
    results = checks.verify(ctx, tasks)
    now = time.time()
    with progress.updating(lab_dir) as p:
        p["checks"] += results
        for t in tasks:
            mine = [r for r in results if r["task"] == t.id]
            if mine and all(r["ok"] for r in mine) and t.id not in p["done"]:
                p["done"][t.id] = now
    return results


def status(lab, prog: dict) -> list[dict]:
    """One row per task: points, score, status, hints, wrong answers, tries left, checks."""
    rows = []
    for t in lab.tasks:
        last = progress.last_results(prog, t.id)
        passed = sum(1 for r in last.values() if r["ok"])
        done = t.id in prog["done"]
        tries = None if t.tries is None else t.tries - progress.tries_used(prog, t.id)
        rows.append({
            "task": t.id, "title": t.title, "points": t.points,
            "score": progress.task_score(prog, t.id), "done": done,
            "status": "done" if done else (f"{passed}/{len(t.checks)} checks" if last
                                           else "open"),
            "hints": f"{len(progress.hints_taken(prog, t.id))}/{len(t.hints)}",
            "hint_cost": sum(h["cost"] for h in progress.hints_taken(prog, t.id)),
            "wrong": progress.wrong(prog, t.id),
            "tries_left": None if t.answer is None or progress.answered(prog, t.id) else tries,
            "time_s": round(prog["done"][t.id] - prog["started"], 1) if done else None,
        })
    return rows
