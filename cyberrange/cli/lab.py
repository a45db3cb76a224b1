"""``cyberrange lab ...``: trainee exercises (docs/lab-format.md, docs/labs.md).

Trainee: ``list``, ``show``, ``start``, ``shell``, ``query``, ``alerts``, ``submit``, ``hint``,
``verify``, ``progress``, ``restart``, ``stop``. Author: ``check``. Instructor: ``report``.
The running lab is found from the live twins whose run is a lab (``--run`` picks one).
Solutions (``solution.yaml``) are never shown by any of these verbs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
from rich import box
from rich.table import Table

from cyberrange.cli._console import make_console
from cyberrange.cli._params import echo_json, json_option
from cyberrange.errors import CheckFailed, UserError

RUN_HELP = ("The running lab: twin prefix, lab run folder or its name, lab name or trainee "
            "(default: the only lab running).")


def _run_option(f):
    return click.option("--run", "ref", default=None, metavar="REF", help=RUN_HELP)(f)


def _active(ref):
    from cyberrange.labs.session import find_active
    return find_active(ref)


def _lab_and_dir(ref):
    """(lab, lab run folder, active lab or None): a running lab, or a stopped one's folder."""
    from cyberrange.labs import progress
    from cyberrange.labs.format import load_lab
    from cyberrange.labs.session import find_active
    if ref is not None and progress.path_of(ref).is_file():
        d = Path(ref).resolve()
        active = next((a for a in _all_active() if a.dir == d), None)
        return load_lab(progress.read(d)["lab_file"]), d, active
    a = find_active(ref)
    return a.lab(), a.dir, a


def _all_active():
    from cyberrange.labs.session import active_labs
    return active_labs()


@click.group("lab")
def lab():
    """Lab exercises: start one, work in its twin, submit answers, check your progress."""


@lab.command("list")
@click.option("--dir", "folder", default=None,
              help="Folder of labs (default: every content root's labs/, docs/cli.md).")
@json_option()
def lab_list(folder, as_json):
    """The labs: level, estimated time, techniques, points."""
    from cyberrange.labs.format import lab_files, load_lab
    t = Table(box=box.SIMPLE)
    for c in ("lab", "level", "minutes", "topology", "techniques", "tasks", "points", "title"):
        t.add_column(c)
    bad, rows = 0, []
    for f in lab_files(folder):
        try:
            x = load_lab(f)
        except UserError as e:
            bad += 1
            t.add_row(f.parent.name, "[red]invalid[/]", "", "", "", "", "", str(e)[:80])
            rows.append({"lab": f.parent.name, "file": str(f), "error": str(e)})
            continue
        rows.append({"lab": x.name, "file": str(f), "level": x.level, "minutes": x.minutes,
                     "topology": x.topology.name, "techniques": list(x.techniques),
                     "tasks": len(x.tasks), "points": x.points, "title": x.title})
        t.add_row(x.name, x.level, str(x.minutes), x.topology.name, ", ".join(x.techniques),
                  str(len(x.tasks)), str(x.points), x.title)
    if as_json:
        echo_json(rows)
    else:
        make_console().print(t if t.row_count else "no labs found")
    if bad:
        raise CheckFailed(f"{bad} lab(s) do not load (`cyberrange lab check FILE` says why)")


@lab.command("show")
@click.argument("name")
@json_option()
def lab_show(name, as_json):
    """A lab's briefing, objectives and tasks (never its solution)."""
    from cyberrange.labs.format import load_lab
    x = load_lab(name)
    if as_json:
        return echo_json({"lab": x.name, "title": x.title, "level": x.level,
                          "minutes": x.minutes, "topology": x.topology.name,
                          "techniques": list(x.techniques), "objectives": list(x.objectives),
                          "briefing": x.briefing, "points": x.points,
                          "tasks": [{"id": t.id, "title": t.title, "points": t.points,
                                     "hints": len(t.hints), "checks": len(t.checks),
                                     "text": t.text} for t in x.tasks]})
    c = make_console()
    c.print(f"[bold]{x.title}[/] ({x.name}) — {x.level}, about {x.minutes} min, topology "
            f"{x.topology.name}, techniques {', '.join(x.techniques) or '-'}")
    c.print("Objectives:\n" + "\n".join(f"  - {o}" for o in x.objectives))
    c.print(x.briefing.rstrip())
    _tasks_table(c, x)


def _tasks_table(c, x) -> None:
    t = Table(box=box.SIMPLE, title="tasks", title_justify="left")
    for col in ("task", "points", "hints", "checks", "title"):
        t.add_column(col)
    for task in x.tasks:
        t.add_row(task.id, str(task.points), str(len(task.hints)), str(len(task.checks)),
                  task.title)
    c.print(t)
    for task in x.tasks:
        if task.text:
            c.print(f"[bold]{task.id}[/]: {task.text.strip()}")


@lab.command("check")
@click.argument("file")
@json_option()
def lab_check(file, as_json):
    """Check a lab file (and its solution.yaml if any) without building anything."""
    from cyberrange.labs.format import SOLUTION, load_lab, load_solution
    x = load_lab(file)
    sol = ""
    if (x.dir / SOLUTION).is_file():
        s = load_solution(x)
        sol = f", solution of {len(s.steps)} steps"
    if as_json:
        return echo_json({"ok": True, "file": str(x.file), "tasks": len(x.tasks),
                          "checks": len(x.checks()), "playbooks": len(x.playbooks),
                          "staged": len(x.stage), "solution": bool(sol)})
    click.echo(f"ok {x.file}: {len(x.tasks)} tasks, {len(x.checks())} checks, "
               f"{len(x.playbooks)} playbooks, {len(x.stage)} staged{sol}")


@lab.command("start")
@click.argument("name")
@click.option("--trainee", default=None, help="Your name, for the instructor's report "
              "(default: $SUDO_USER or $USER).")
@click.option("--runs-dir", default="runs/labs", show_default=True,
              help="Where the lab run folder goes.")
@json_option()
def lab_start(name, trainee, runs_dir, as_json):
    """Build the lab's twin, start its scenario and print the briefing."""
    from cyberrange.labs import session
    from cyberrange.labs.format import load_lab
    trainee = trainee or os.environ.get("SUDO_USER") or os.environ.get("USER") or "trainee"
    c = make_console(stderr=as_json)
    with c.status("building the lab's twin"):
        lab_dir, info = session.start(name, trainee, runs_dir)
    x = load_lab(name)
    if as_json:
        return echo_json({"lab": x.name, "trainee": trainee, "run_dir": str(lab_dir), **info})
    c.print(f"lab [bold]{x.name}[/] is up in {info['start_s']:.1f} s (twin {info['prefix']}); "
            f"trainee {trainee}; run folder {lab_dir}")
    c.print(x.briefing.rstrip())
    _tasks_table(c, x)
    c.print(f"your files: {lab_dir / 'work'}\nnext: `cyberrange lab shell NODE`, `cyberrange "
            f"lab query SQL`, `cyberrange lab submit TASK ANSWER`, `cyberrange lab hint TASK`, "
            f"`cyberrange lab progress`, `cyberrange lab stop`")


@lab.command("stop")
@_run_option
@json_option()
def lab_stop(ref, as_json):
    """Stop the lab: its twin and every kernel object it made are removed; progress stays."""
    from cyberrange.labs import session
    a = session.find_active(ref, alive_only=False)     # an owner that died: its twin too
    td = session.stop(a)
    if as_json:
        echo_json({"stopped": a.prefix, "run_dir": str(a.dir), "teardown": td})
    else:
        click.echo(f"lab stopped (twin {a.prefix}): {td.get('processes', 0)} processes, "
                   f"{td.get('links', 0)} links removed; progress kept in {a.dir}")
    if td.get("left"):
        raise CheckFailed(f"{td['left']} objects could not be removed: `cyberrange down "
                          f"{a.prefix}`")


@lab.command("restart")
@_run_option
@json_option()
def lab_restart(ref, as_json):
    """Rebuild the lab's twin and restart its scenario; answers, hints and passes are kept.
    A stopped lab comes back with --run LAB_RUN_FOLDER."""
    from cyberrange.labs import progress, session
    stopped = ref is not None and progress.path_of(ref).is_file() and not any(
        a.dir == Path(ref).resolve() for a in _all_active())
    with make_console(stderr=True).status("rebuilding the lab's twin"):
        info = session.resume(Path(ref)) if stopped else session.restart(_active(ref))
    if as_json:
        return echo_json(info)
    click.echo(f"lab restarted in {info['start_s']:.1f} s (twin {info['prefix']}); progress kept")


@lab.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@_run_option
def lab_shell(node, argv, ref):
    """A shell in NODE of the lab's twin (tcpdump, nft, ip, curl, cyberrange); or run ARGV."""
    a = _active(ref)
    twin = a.attached()
    env = dict(os.environ, PS1=f"[{node}] \\w# ",
               PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]))
    cmd = list(argv) or ["bash", "--norc", "-i"]
    sys.exit(subprocess.run(twin.exec_argv(node, cmd), env=env, check=False).returncode)


@lab.command("query")
@click.argument("sql")
@click.option("--limit", default=50, show_default=True, help="Rows shown at most.")
@_run_option
@json_option()
def lab_query(sql, limit, ref, as_json):
    """SQL over the lab's traffic so far (DuckDB: tables packets, flows; docs/labs.md)."""
    from cyberrange.labs import data
    a = _active(ref)
    snap = data.snapshot(a.dir, a.twin_dir)
    cols, rows = data.query(a.dir, sql, limit)
    if as_json:
        return echo_json([dict(zip(cols, r)) for r in rows])
    t = Table(box=box.SIMPLE, caption=f"{len(rows)} row(s); snapshot of {snap['packets']} "
                                      f"packets, {snap['flows']} flows")
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    make_console().print(t)


@lab.command("alerts")
@click.option("--detectors", "det_dir", default=None,
              help="A detectors folder or file (default: the shipped detectors/).")
@click.option("--technique", default=None, help="Only alerts of this ATT&CK technique.")
@click.option("--src", default=None, help="Only alerts whose source IP is this.")
@_run_option
@json_option()
def lab_alerts(det_dir, technique, src, ref, as_json):
    """Run detectors over the lab's traffic so far; the alerts, filtered."""
    from cyberrange.detect.registry import load_detector_file, load_detectors
    from cyberrange.labs import data
    a = _active(ref)
    x = a.lab()
    from cyberrange import content
    p = Path(content.detectors_dir(det_dir))
    dets = load_detector_file(p) if p.is_file() else load_detectors(p)
    data.snapshot(a.dir, a.twin_dir)
    table = data.alerts(a.dir, dets, data.baseline_until(a.manifest, x)).to_pylist()
    rows = [r for r in table if (technique is None or str(r.get("threat.technique.id") or "")
                                 .startswith(technique))
            and (src is None or r.get("source.ip") == src)]
    if as_json:
        return echo_json(rows)
    t = Table(box=box.SIMPLE, caption=f"{len(rows)} of {len(table)} alert(s)")
    for col in ("time", "detector", "technique", "source", "destination", "score"):
        t.add_column(col)
    for r in rows[:200]:
        t.add_row(str(r.get("@timestamp"))[11:19], str(r.get("rule.name")),
                  str(r.get("threat.technique.id") or ""), str(r.get("source.ip") or ""),
                  str(r.get("destination.ip") or ""), f"{float(r.get('cyberrange.score') or 0):.2f}")
    make_console().print(t)


@lab.command("submit")
@click.argument("task")
@click.argument("answer")
@_run_option
@json_option()
def lab_submit(task, answer, ref, as_json):
    """Submit ANSWER to TASK; a wrong answer is refused and counted (tries are limited)."""
    from cyberrange.labs.trainee import submit
    x, d, _ = _lab_and_dir(ref)
    r = submit(x, d, task, answer)
    if as_json:
        echo_json({"task": task, **r})
    if r["ok"] and not as_json:
        click.echo(f"correct: task {task} answered" + (" — task done" if r["done"] else
                                                        " (its other checks: lab verify)"))
    elif not r["ok"]:
        n = r["tries_left"]
        raise CheckFailed(f"wrong answer to {task}; {n} {'try' if n == 1 else 'tries'} left")


@lab.command("hint")
@click.argument("task")
@_run_option
@json_option()
def lab_hint(task, ref, as_json):
    """The next hint of TASK (each costs points, shown before you take it in `lab progress`)."""
    from cyberrange.labs.trainee import hint
    x, d, _ = _lab_and_dir(ref)
    h = hint(x, d, task)
    if as_json:
        return echo_json({"task": task, **h})
    click.echo(f"hint {h['index']}/{h['of']} for {task} (-{h['cost']} points): {h['text']}")


@lab.command("verify")
@click.argument("task", required=False)
@_run_option
@json_option()
def lab_verify(task, ref, as_json):
    """Run the checks of TASK (default: every task not done yet); record the passes."""
    from cyberrange.labs.trainee import verify
    x, d, a = _lab_and_dir(ref)
    results = verify(x, d, a, task)
    t = Table(box=box.SIMPLE)
    for col in ("task", "check", "result", "detail"):
        t.add_column(col)
    for r in results:
        check = x.task(r["task"]).checks[r["check"]]
        t.add_row(r["task"], check.describe(), "[green]pass[/]" if r["ok"] else "[red]fail[/]",
                  r["detail"])
    if as_json:
        echo_json(results)
    else:
        make_console().print(t if results else "every task is done")
    if any(not r["ok"] for r in results):
        raise CheckFailed(f"{sum(not r['ok'] for r in results)} of {len(results)} checks fail")


@lab.command("progress")
@click.option("--json", "as_json", is_flag=True, help="Print the progress as JSON.")
@_run_option
def lab_progress(as_json, ref):
    """Your tasks: points, status, hints taken, wrong answers, tries left."""
    import json

    from cyberrange.labs import progress
    from cyberrange.labs.trainee import status
    x, d, _ = _lab_and_dir(ref)
    prog = progress.read(d)
    rows = status(x, prog)
    if as_json:
        click.echo(json.dumps({"summary": progress.summary(prog), "tasks": rows}, indent=1))
        return
    t = Table(box=box.SIMPLE, title=f"{x.title} — {prog['trainee']}: {progress.score(prog)}/"
                                    f"{x.points} points", title_justify="left")
    for col in ("task", "points", "score", "status", "hints", "wrong", "tries left", "time"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["task"], str(r["points"]), str(r["score"]),
                  "[green]done[/]" if r["done"] else r["status"],
                  r["hints"] + (f" (-{r['hint_cost']})" if r["hint_cost"] else ""),
                  str(r["wrong"]), "" if r["tries_left"] is None else str(r["tries_left"]),
                  "" if r["time_s"] is None else f"{r['time_s'] / 60:.1f} min")
    make_console().print(t)


@lab.command("report")
@click.argument("runs_dir", default="runs/labs")
@click.option("--csv", "csv_path", default=None, help="Also write the table as CSV.")
@click.option("--html", "html_path", default=None, help="Also write an HTML page.")
@click.option("--lab", "lab_name", default=None, help="Only runs of this lab.")
@json_option()
def lab_report(runs_dir, csv_path, html_path, lab_name, as_json):
    """Instructor's summary over trainees' lab runs: score, tasks, hints, time, wrong answers."""
    from cyberrange.labs import instructor
    rows, problems = instructor.collect(runs_dir, lab_name)
    c = make_console(stderr=as_json)
    if as_json:
        echo_json({"runs": rows, "skipped": [str(p) for p in problems]})
    else:
        c.print(instructor.table(rows))
    for p in problems:
        c.print(f"[yellow]skipped[/] {p}")
    if csv_path:
        instructor.write_csv(rows, csv_path)
        c.print(f"CSV: {csv_path}")
    if html_path:
        instructor.write_html(rows, html_path)
        c.print(f"HTML: {html_path}")


@lab.command("_own", hidden=True)
@click.argument("lab_dir")
def lab_own(lab_dir):
    """(internal) The owner process of a lab's twin; `lab start` runs it."""
    from cyberrange.labs.session import own
    own(lab_dir)


COMMANDS = [lab]
