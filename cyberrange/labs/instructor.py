"""The instructor's view: every trainee's lab runs under a folder, as a table, CSV and HTML.

One row per lab run (``lab.json``, ``progress.summary``): trainee, lab, score of max, tasks
done, hints taken and their cost, wrong answers, minutes spent, and per task the time from the
start to its completion. Damaged or foreign folders are skipped and named, never fatal.
"""
from __future__ import annotations

import csv
import html
from pathlib import Path

from rich import box
from rich.table import Table

from cyberrange.errors import UserError
from cyberrange.labs import progress

COLUMNS = ("trainee", "lab", "score", "max", "tasks_done", "tasks", "hints", "hint_cost",
           "wrong", "minutes", "task_times", "status")


def collect(runs_dir, lab: str | None = None) -> tuple[list[dict], list[str]]:
    """The summaries of every lab run folder under ``runs_dir``; (rows, skipped folders)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{runs_dir}: no such folder (lab runs go to runs/labs by default)")
    rows, problems = [], []
    for p in sorted(root.glob(f"*/{progress.PROGRESS}")):
        try:
            s = progress.summary(progress.read(p.parent))
        except UserError as e:
            problems.append(str(e))
            continue
        if lab is not None and s["lab"] != lab:
            continue
        s["status"] = "stopped" if s["stopped"] else "running"
        s["task_times"] = " ".join(f"{t}={v / 60:.1f}m" for t, v in s["task_s"].items())
        rows.append(s)
    rows.sort(key=lambda r: (r["lab"], -r["score"], r["trainee"]))
    return rows, problems


def table(rows: list[dict]) -> Table:
    t = Table(box=box.SIMPLE, title=f"lab runs: {len(rows)}", title_justify="left")
    for c in ("trainee", "lab", "score", "tasks", "hints", "wrong", "minutes", "time per task",
              "status"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["trainee"], r["lab"], f"{r['score']}/{r['max']}",
                  f"{r['tasks_done']}/{r['tasks']}",
                  f"{r['hints']}" + (f" (-{r['hint_cost']})" if r["hint_cost"] else ""),
                  str(r["wrong"]), f"{r['minutes']:.1f}", r["task_times"], r["status"])
    return t


def write_csv(rows: list[dict], path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def write_html(rows: list[dict], path) -> None:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>"
                                      for c in COLUMNS) + "</tr>" for r in rows)
    Path(path).write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>cyberrange lab report</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px}th{background:#eee}</style></head><body>"
        f"<h1>Lab runs ({len(rows)})</h1><table><tr>{head}</tr>\n{body}</table></body></html>\n",
        encoding="utf-8")
