"""A lab's twin: start (detached, like ``cyberrange up --detach``), stop, restart, find.

``start`` makes the lab run folder (``progress.py``) and starts an owner process,
``python -m cyberrange.cli.main lab _own LAB_DIR``, in its own session. The owner (:func:`own`)
builds the twin in a :class:`~cyberrange.session.TwinSession` (so every kernel object goes on
``lab stop``, Ctrl-C, SIGTERM or a crash, and ``cyberrange down`` removes a twin whose owner was
killed), starts the benign traffic (``drill.BenignTraffic``), applies the staged state (blue
actions as actor ``lab-stage``, commands in nodes), marks the twin ready and runs the scenario's
playbooks (``attack.runner.run_playbook``, ground truth into the twin run's ledger) at their
times, until it is told to stop. ``start`` returns once the owner says the lab is ready.

The active lab is found from the live twins whose run manifest says kind ``lab``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.labs import progress
from cyberrange.labs.format import load_lab
from cyberrange.twin.state import pid_alive

STAGE_ACTOR = "lab-stage"
READY_TIMEOUT_S = 300
SENSOR_ROTATE_S = 5          # captures are closed (readable whole) at least this often


def cli_env() -> dict:
    """The environment of a ``cyberrange`` subprocess: this very package first on the path
    (a worktree's code, not an installed copy)."""
    import cyberrange
    root = str(Path(cyberrange.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40] or "trainee"


def make_run_dir(lab, trainee: str, runs_dir) -> Path:
    """A new lab run folder ``<runs_dir>/<trainee>-<lab>-<stamp>-<hex>`` with lab.json and
    work/ (the lab's start_files copied in)."""
    from cyberrange.run import probe_runs_dir
    probe_runs_dir(runs_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    d = Path(runs_dir).resolve() / f"{_safe(trainee)}-{lab.name}-{stamp}-{secrets.token_hex(2)}"
    (d / "work").mkdir(parents=True)
    (d / "twins").mkdir()
    for f in lab.start_files:
        shutil.copy2(f, d / "work" / Path(f).name)
    progress.write(d, progress.new_progress(lab, trainee, d))
    return d


def start(lab_ref, trainee: str, runs_dir="runs/labs", say=print) -> tuple[Path, dict]:
    """Check the lab, make its run folder and bring its twin up; ``(lab run folder, timings)``."""
    from cyberrange.twin.build import preflight
    lab = load_lab(lab_ref)
    preflight(need_dns=True)
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,40}", trainee or ""):
        raise UserError(f"bad trainee name {trainee!r}: 1-40 letters, digits or _ . @ -")
    lab_dir = make_run_dir(lab, trainee, runs_dir)
    return lab_dir, spawn_owner(lab_dir, say)


def spawn_owner(lab_dir: Path, say=print) -> dict:
    """Start the owner process of ``lab_dir``'s twin and wait until it says ready."""
    t0 = time.monotonic()
    log = lab_dir / "owner.log"
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cyberrange.cli.main", "lab", "_own",
                                 str(lab_dir)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=cli_env())
    try:
        return _wait_ready(proc, log, t0)
    except BaseException:            # Ctrl-C while waiting: the owner tears its twin down
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        raise


def _wait_ready(proc, log: Path, t0: float) -> dict:
    from cyberrange.twin.state import live_states
    deadline = time.time() + READY_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise UserError(f"the lab's twin did not come up: {tail[-1] if tail else 'no output'}"
                            f" (log: {log})")
        for s in live_states():
            if s.owner_pid == proc.pid and s.status == "up":
                m = _manifest(s.run_dir)
                if m.get("lab_ready"):
                    return {"start_s": round(time.monotonic() - t0, 2), "prefix": s.prefix,
                            "run_id": s.run_id, "pid": proc.pid}
        time.sleep(0.2)
    raise UserError(f"the lab's twin did not come up within {READY_TIMEOUT_S} s (log: {log})")


def _manifest(run_dir) -> dict:
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


# -- the owner ---------------------------------------------------------------------------------
def own(lab_dir) -> None:
    """The owner process: build the twin, run the scenario, wait for SIGTERM (``lab stop``)."""
    from cyberrange.drill import BenignTraffic
    from cyberrange.run import Run
    from cyberrange.session import TwinSession
    from cyberrange.twin.build import Twin
    lab_dir = Path(lab_dir).resolve()
    prog = progress.read(lab_dir)
    lab = load_lab(prog["lab_file"])
    seed = (lab.benign or {}).get("seed", lab.topology.benign.seed)
    inputs = {"topology": lab.topology_file, "lab": lab.file}
    run = Run.create(lab_dir / "twins", lab.name, inputs, seed=seed)
    run.manifest.update(kind="lab", topology=lab.topology.name, lab=lab.name,
                        lab_dir=str(lab_dir), trainee=prog["trainee"])
    run.save()
    twin = Twin(lab.topology, run.dir, run.id, log=lambda m: print(f"warning: {m}", flush=True))
    twin.sensor_rotate_s = SENSOR_ROTATE_S
    stop = threading.Event()
    try:
        with TwinSession(run, twin) as session:
            session.start()
            session.on_cleanup("stopping the sensors",
                               lambda: run.manifest.update(sensors=twin.stop_sensors()))
            with progress.updating(lab_dir) as p:
                p["twins"].append({"run_id": run.id, "run_dir": str(run.dir),
                                   "prefix": twin.state.prefix, "started": time.time(),
                                   "stopped": None})
            if lab.benign is not None and lab.topology.benign.enabled:
                benign = BenignTraffic(twin, run, seed, lab.benign.get("intensity"))
                session.on_cleanup("stopping benign traffic", lambda: run.manifest.update(
                    benign_requests=benign.stop()))
                benign.start()
            _stage(lab, twin, run)
            threads = _scenario(lab, twin, run, stop)
            session.on_cleanup("stopping the scenario", lambda: _join(stop, threads))
            run.manifest["lab_ready"] = time.time()
            run.save()
            print(f"lab {lab.name} ready: twin {twin.state.prefix}, run {run.id}", flush=True)
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:        # SIGTERM from `lab stop` is how a lab normally ends
        pass
    finally:
        with progress.updating(lab_dir) as p:
            for t in p["twins"]:
                if t["run_id"] == run.id:
                    t["stopped"] = time.time()
                    t["teardown"] = run.manifest.get("teardown")
    if (run.manifest.get("teardown") or {}).get("complete") and \
            run.manifest.get("status") in ("running", "interrupted"):
        run.manifest["ended_by"] = "lab stop"
        run.finish("done")


def _stage(lab, twin, run) -> None:
    """The staged state, in order; a failure ends the start (the lab would be wrong)."""
    from cyberrange.blue import actions
    for s in lab.stage:
        if "blue" in s:
            rec = actions.apply(twin, s["blue"], dict(s["params"]), actor=STAGE_ACTOR)
            if rec["result"] != "applied":
                raise UserError(f"{lab.file}:{s['line']}: staged {s['blue']} failed: "
                                f"{rec.get('reason')}")
        else:
            r = twin.run(s["node"], list(s["exec"]), timeout=30)
            (run.dir / "logs").mkdir(exist_ok=True)
            with open(run.dir / "logs" / "lab-stage.log", "a") as f:
                f.write(f"$ {' '.join(s['exec'])}  (in {s['node']}, exit {r.returncode})\n"
                        f"{r.stdout or ''}{r.stderr or ''}")
            if r.returncode:
                raise UserError(f"{lab.file}:{s['line']}: staged command in {s['node']} "
                                f"exited {r.returncode}")


def _scenario(lab, twin, run, stop: threading.Event) -> list[threading.Thread]:
    """One thread per scenario playbook: wait ``at`` seconds, then run it into the ledger."""
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.attack.runner import run_playbook
    from cyberrange.labs.format import paced_copy
    threads = []
    for i, sp in enumerate(lab.playbooks):
        file = sp.file
        if sp.pace:
            file = paced_copy(sp.file, sp.pace, run.dir / "config" / f"playbook-{i}")
        pb = load_playbook(file, lab.topology)
        seed = sp.seed if sp.seed is not None else pb.seed

        def work(pb=pb, at=sp.at, seed=seed):
            if stop.wait(at):
                return
            try:
                run_playbook(pb, lab.topology, twin, run.ledger_path, run.id,
                             stop_event=stop, seed=seed)
            except Exception as e:  # noqa: BLE001 - the lab goes on; the reason is kept
                print(f"warning: playbook {pb.name}: {type(e).__name__}: {e}", flush=True)
        t = threading.Thread(target=work, name=f"lab-playbook-{i}", daemon=True)
        t.start()
        threads.append(t)
    run.ledger_path.touch()
    return threads


def _join(stop: threading.Event, threads, timeout: float = 20.0) -> None:
    stop.set()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, end - time.monotonic()))


# -- finding, stopping, restarting --------------------------------------------------------------
class ActiveLab:
    """A lab whose twin is up: its run folder, the twin's state and run folder."""

    def __init__(self, state, manifest: dict):
        self.state = state
        self.manifest = manifest
        self.dir = Path(manifest["lab_dir"])
        self.twin_dir = Path(state.run_dir)
        self.prefix = state.prefix

    @property
    def progress(self) -> dict:
        return progress.read(self.dir)

    def lab(self):
        return load_lab(self.progress["lab_file"])

    def attached(self):
        from cyberrange.session import attach
        return attach(self.prefix)


def active_labs(alive_only: bool = True) -> list[ActiveLab]:
    """The labs whose twin is up (``alive_only=False``: also those whose owner died)."""
    from cyberrange.twin.state import live_states
    out = []
    for s in live_states():
        m = _manifest(s.run_dir)
        if m.get("kind") == "lab" and m.get("lab_dir") and (s.owner_alive or not alive_only):
            out.append(ActiveLab(s, m))
    return out


def find_active(ref: str | None = None, alive_only: bool = True) -> ActiveLab:
    """The lab named by ``ref`` (prefix, twin run id, lab run folder or its name, lab name,
    trainee) among the labs up; the only one when ``ref`` is None. ``alive_only=False`` also
    finds a lab whose owner process died (``lab stop`` removes its twin)."""
    labs = active_labs(alive_only)
    if ref is not None:
        labs = [a for a in labs if ref in (a.prefix, a.state.run_id, a.dir.name, str(a.dir),
                                            a.manifest.get("lab"), a.manifest.get("trainee"))
                or Path(ref).resolve() == a.dir]
    if not labs:
        raise UserError("no lab is running" + (f" that matches {ref!r}" if ref else "")
                        + " (`cyberrange lab start NAME` starts one)")
    if len(labs) > 1:
        raise UserError("several labs are running; pick one with --run: " + ", ".join(
            f"{a.dir.name} (twin {a.prefix})" for a in labs))
    return labs[0]


def lab_dir_of(ref: str | None) -> Path:
    """A lab run folder: the running lab's, or a folder given (a stopped lab's progress)."""
    if ref is not None and progress.path_of(ref).is_file():
        return Path(ref).resolve()
    return find_active(ref).dir


def stop_twin(active: ActiveLab, timeout: float = 60.0) -> dict:
    """SIGTERM the owner, wait for its teardown; the teardown summary of the twin's manifest.
    A twin whose owner does not end in time is removed from its state file."""
    from cyberrange.session import remove_twin
    pid = active.state.owner_pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.time() + timeout
    while time.time() < end and pid_alive(pid):        # the owner tears its twin down
        time.sleep(0.2)
    if active.state.path.exists():
        return dict(remove_twin(active.state, how="killed"), forced=True)
    return _manifest(active.twin_dir).get("teardown") or {}


def stop(active: ActiveLab) -> dict:
    td = stop_twin(active)
    with progress.updating(active.dir) as p:
        p["stopped"] = time.time()
    return td


def resume(lab_dir: Path, say=print) -> dict:
    """A stopped lab run gets a new twin and scenario; its progress goes on."""
    from cyberrange.twin.build import preflight
    lab_dir = Path(lab_dir).resolve()
    load_lab(progress.read(lab_dir)["lab_file"])      # the lab still loads
    preflight(need_dns=True)
    with progress.updating(lab_dir) as p:
        p["stopped"] = None
    return spawn_owner(lab_dir, say)


def restart(active: ActiveLab, say=print) -> dict:
    """A new twin for the same lab run: progress (answers, hints, passes) is kept."""
    td = stop_twin(active)
    out = spawn_owner(active.dir, say)
    out["teardown"] = td
    return out
