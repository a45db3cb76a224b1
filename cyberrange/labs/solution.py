"""Run a lab's ``solution.yaml`` on its running twin (CI: every lab is proven solvable).

Steps, in order: ``wait_step`` (until the scenario's step has a ledger record), ``wait``
(seconds), ``submit`` (an answer, as ``lab submit``), ``cli`` (any ``cyberrange`` verb, run
as a trainee would in a second terminal; ``--twin``/``--run`` is added to name the lab's twin,
the working folder is the run's ``work/``), ``exec`` (a command in a node), ``file`` (write a
trainee file into ``work/``), ``verify`` (``all`` or a task: as ``lab verify``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cyberrange
from cyberrange.errors import UserError
from cyberrange.labs import trainee
from cyberrange.labs.format import load_solution


def cli_env() -> dict:
    """The environment of a ``cyberrange`` subprocess: this very package first on the path."""
    root = str(Path(cyberrange.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))


def cli_argv(argv: list[str], prefix: str, lab_dir: Path) -> list[str]:
    """``argv`` with the lab's twin named when the verb takes ``--twin`` or ``--run``."""
    from cyberrange.cli.main import _register, cli
    _register()
    cmd, rest = cli, list(argv)
    while rest and hasattr(cmd, "commands") and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    opts = {o for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
    extra = []
    if "--twin" in opts and "--twin" not in argv:
        extra = ["--twin", prefix]
    elif "--run" in opts and "--run" not in argv:
        extra = ["--run", str(lab_dir)]
    return [sys.executable, "-m", "cyberrange.cli.main", *argv, *extra]


def run_solution(lab, active, say=print) -> list[dict]:
    """Carry out the solution on the running lab ``active``; one record per step
    (``step``, ``seconds``, ``detail``). Raises UserError when a step cannot be done."""
    sol = load_solution(lab)
    deadline = time.monotonic() + sol.timeout
    out = []
    for step in sol.steps:
        t0 = time.monotonic()
        (verb, arg), = ((k, v) for k, v in step.items() if k != "line")
        detail = _step(lab, active, verb, arg, deadline)
        say(f"solution line {step['line']}: {verb} -> {detail}")
        out.append({"step": verb, "line": step["line"], "seconds": round(time.monotonic() - t0, 2),
                    "detail": detail})
    return out


def _step(lab, active, verb: str, arg, deadline: float) -> str:
    where = f"{lab.dir / 'solution.yaml'}"
    if verb == "wait_step":
        while time.monotonic() < deadline:
            if any(r.get("step_id") == arg for r in _ledger(active)):
                return f"step {arg} ran"
            time.sleep(0.5)
        raise UserError(f"{where}: step {arg} did not run before the solution's timeout")
    if verb == "wait":
        time.sleep(float(arg))
        return f"waited {arg} s"
    if verb == "submit":
        r = trainee.submit(lab, active.dir, arg["task"], arg["answer"])
        if not r["ok"]:
            raise UserError(f"{where}: the solution's answer to {arg['task']} is refused")
        return "correct"
    if verb == "cli":
        argv = cli_argv(list(arg), active.prefix, active.dir)
        r = subprocess.run(argv, cwd=active.dir / "work", env=cli_env(), capture_output=True,
                           text=True, timeout=max(5.0, deadline - time.monotonic()), check=False)
        if r.returncode:
            raise UserError(f"{where}: `cyberrange {' '.join(arg)}` exited {r.returncode}: "
                            f"{(r.stderr or r.stdout).strip()[-300:]}")
        lines = (r.stdout or "").strip().splitlines()
        return lines[-1][:200] if lines else "exit 0"
    if verb == "exec":
        r = active.attached().run(arg["node"], list(arg["argv"]), timeout=60)
        if r.returncode:
            raise UserError(f"{where}: {arg['argv']} in {arg['node']} exited {r.returncode}")
        return f"exit 0 in {arg['node']}"
    if verb == "file":
        p = active.dir / "work" / arg["path"]
        p.write_text(arg["content"], encoding="utf-8")
        return f"wrote work/{arg['path']}"
    if verb == "verify":
        results = trainee.verify(lab, active.dir, active, None if arg == "all" else arg)
        return f"{sum(r['ok'] for r in results)}/{len(results)} checks pass"
    raise UserError(f"{where}: unknown step {verb}")


def _ledger(active) -> list[dict]:
    from cyberrange.attack.ledger import read_ledger
    return read_ledger(active.twin_dir / "ledger.jsonl")
