"""The proof every lab gets on a real twin (issue 16, item 5), shared by the per-lab tests:

    from labrunner import prove_lab
    def test_find_the_scanner(tmp_path):
        r = prove_lab("find-the-scanner", tmp_path)      # asserts inside
        assert r["solved_s"] < 90

``prove_lab`` starts the lab as a trainee would (detached twin, scenario, briefing), and checks:

1. unsolved by default: ``lab verify`` fails every check that is not ``keep: true`` (a
   condition that holds before the trainee acts, e.g. a mission thread is up), and no task is
   done; ``keep`` checks pass;
2. a wrong answer is refused and counted (every task with an answer and at least 2 tries);
3. the lab's ``solution.yaml`` runs (``cyberrange.labs.solution``) and then every check of
   every task passes, every task is done and the score is the lab's full points;
4. progress survives: ``lab.json`` read back from disk says the same;
5. ``lab stop`` leaves no kernel object of the twin (``twin.state.leftovers``).

It returns the timings (start, solved run, stop) and counts for the lab's closing note.
Twin tests run under the machine-wide lock (docs: tests/README, helper rules).
"""
from __future__ import annotations

import time

WRONG = "definitely-not-the-answer-42"


def prove_lab(name: str, runs_dir, trainee: str = "ci", say=print) -> dict:
    from cyberrange.labs import checks, progress, session
    from cyberrange.labs.format import load_lab
    from cyberrange.labs.solution import run_solution
    from cyberrange.labs.trainee import submit, verify
    from cyberrange.twin.state import leftovers
    lab = load_lab(name)
    t0 = time.monotonic()
    lab_dir, info = session.start(name, trainee, runs_dir)
    out = {"lab": lab.name, "start_s": info["start_s"], "prefix": info["prefix"],
           "checks": len(lab.checks()), "tasks": len(lab.tasks), "dir": str(lab_dir)}
    active = session.find_active(info["prefix"])
    try:
        # 1. unsolved by default
        before = verify(lab, lab_dir, active)
        for r in before:
            c = lab.task(r["task"]).checks[r["check"]]
            if c.spec.get("keep"):
                assert r["ok"], f"{name}: keep check {r['task']}/{c.describe()} fails " \
                                f"before the trainee acts: {r['detail']}"
            else:
                assert not r["ok"], f"{name}: {r['task']}/{c.describe()} passes unsolved: " \
                                    f"{r['detail']}"
        assert not progress.read(lab_dir)["done"], f"{name}: a task is done by default"
        # 2. wrong answers are refused and counted
        wrong = 0
        for t in lab.tasks:
            if t.answer is not None and t.tries >= 2:
                r = submit(lab, lab_dir, t.id, WRONG)
                assert not r["ok"] and r["tries_left"] == t.tries - 1, r
                wrong += 1
        assert progress.wrong(progress.read(lab_dir)) == wrong
        out["wrong_answers_tested"] = wrong
        # 3. the solution solves it
        t1 = time.monotonic()
        run_solution(lab, active, say=say)
        ctx = checks.Context(lab, lab_dir, active)
        after = checks.verify(ctx, lab.tasks)
        failing = [f"{r['task']}/{lab.task(r['task']).checks[r['check']].describe()}: "
                   f"{r['detail']}" for r in after if not r["ok"]]
        assert not failing, f"{name}: checks still fail after the solution: {failing}"
        out["solution_s"] = round(time.monotonic() - t1, 2)
        # 4. progress on disk
        prog = progress.read(lab_dir)
        assert set(prog["done"]) == {t.id for t in lab.tasks}, prog["done"]
        assert progress.score(prog) == lab.points - sum(h["cost"] for h in prog["hints"])
        assert progress.wrong(prog) == wrong
        out["score"] = progress.score(prog)
    finally:
        t2 = time.monotonic()
        td = session.stop(active)
        out["stop_s"] = round(time.monotonic() - t2, 2)
        out["teardown"] = td
    left = leftovers(info["prefix"])
    assert not any(left.values()), f"{name}: kernel objects left after lab stop: {left}"
    out["solved_s"] = round(time.monotonic() - t0, 2)
    say(f"lab {name}: start {out['start_s']} s, solution {out.get('solution_s')} s, "
        f"stop {out['stop_s']} s, whole run {out['solved_s']} s, {out['checks']} checks")
    return out


def lab_ledger(lab_dir) -> list[dict]:
    """The ledger of a proven lab's last twin, through ``read_ledger`` (both spellings: the
    file has ECS names)."""
    import json
    from pathlib import Path

    from cyberrange.attack.ledger import read_ledger
    prog = json.loads((Path(lab_dir) / "lab.json").read_text())
    return read_ledger(Path(prog["twins"][-1]["run_dir"]) / "ledger.jsonl")
