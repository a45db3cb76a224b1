"""One twin's life inside one run folder, for every command that builds a twin.

::

    run = Run.create(...)
    with TwinSession(run, twin, ui) as s:
        s.start()                          # build the twin (manifest: prefix, stage timings)
        s.on_cleanup("benign traffic", benign.stop)
        ...                                # the work: traffic, playbook, probes
    # here the twin is gone, whatever happened, and run.manifest["teardown"] says what went

What it guarantees, so that no caller has to get it right again:

- while the work runs, SIGTERM and SIGHUP unwind like Ctrl-C (``twin/shield.py``), so the
  cleanup below always runs;
- the cleanup (the callbacks given to ``on_cleanup``, newest first, then ``Twin.stop``) is a
  transaction: further Ctrl-C/SIGTERM are acknowledged, not obeyed; a third forces the quit,
  after the manifest has recorded the incomplete teardown and the exact ``cyberrange down``
  command has been printed;
- the manifest ends in a final state when the work fails: ``interrupted`` (Ctrl-C, SIGTERM)
  or ``failed`` (any other error, which is recorded), with the teardown summary. When the
  work succeeds the caller finishes the run (analysis usually follows) with ``run.finish``.
"""
from __future__ import annotations

import time
from contextlib import suppress

from cyberrange.twin.shield import Shield, interruptible
from cyberrange.twin.shield import received as shield_received


class TwinSession:
    def __init__(self, run, twin, ui=None):
        self.run = run
        self.twin = twin
        self.ui = ui
        self.cleanups: list[tuple[str, object]] = []
        self._interruptible = interruptible()

    # -- the work --------------------------------------------------------------------------
    def __enter__(self) -> "TwinSession":
        mark_active(self.run)
        self._interruptible.__enter__()
        return self

    def start(self, stage_cb=None):
        """Build the twin; its prefix and stage timings go to the manifest at once (so that a
        run killed later still names the twin to remove)."""
        t0 = time.monotonic()
        self._phase("twin", f"building the twin of {self.twin.topo.name} "
                            f"({len(self.twin.topo.nodes)} nodes)")
        try:
            self.twin.start(stage_cb=stage_cb or (lambda s: self._phase("twin", f"twin: {s}")))
        finally:
            if self.twin.state is not None:
                self.run.manifest["twin"] = {"prefix": self.twin.state.prefix,
                                             "stages_s": self.twin.timings,
                                             "netem": self.twin.netem,
                                             "link_emulation": getattr(
                                                 self.twin, "link_emulation", None)}
                self.run.manifest["warnings"] += [w for w in self.twin.warnings
                                                  if w not in self.run.manifest["warnings"]]
                self.run.save()
        self.run.manifest["timings"]["twin_up_s"] = round(time.monotonic() - t0, 2)
        self.run.save()
        return self.twin

    def on_cleanup(self, what: str, fn) -> None:
        """Run ``fn()`` when the session ends, before the twin is removed (newest first). An
        exception in it becomes a warning in the manifest: the twin is removed regardless."""
        self.cleanups.append((what, fn))

    # -- the end -----------------------------------------------------------------------------
    def __exit__(self, exc_type, exc, tb):
        run = self.run
        prefix = self.twin.state.prefix if self.twin.state is not None else None

        def forced():
            run.manifest["teardown"] = {"complete": False, "forced": True,
                                        "cleanup": f"cyberrange down {run.id}"}
            run.manifest["status"] = "interrupted"
            self._save()

        # the shield first: from here on a signal is counted, never obeyed (shield.py)
        with Shield(prefix, down_ref=run.id, on_force=forced, say=self._say,
                    reraise=False):
            self._interruptible.__exit__(exc_type, exc, tb)
            interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
            if interrupted:
                run.manifest["status"] = "interrupted"
                self._save()
            t0 = time.monotonic()
            for what, fn in reversed(self.cleanups):
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - never skip the teardown below
                    run.manifest["warnings"].append(f"{what}: {type(e).__name__}: {e}")
            self._phase("teardown", "tearing the twin down")
            removed = self.twin.stop() or {}
            with suppress(Exception):       # ledger and captures are final: seal their hashes
                run.seal()                  # (`drill verify` tells any later change)
            run.manifest["timings"]["teardown_s"] = round(time.monotonic() - t0, 2)
            run.manifest["teardown"] = dict(removed, complete=not removed.get("left"))
            if removed.get("left"):
                run.manifest["teardown"]["cleanup"] = f"cyberrange down {run.id}"
            late = bool(shield_received())          # a signal came during the cleanup
            if interrupted or (late and exc_type is None):
                run.finish("interrupted")
            elif exc_type is not None:
                run.finish("failed", error=f"{exc_type.__name__}: {exc}"[:2000])
            else:
                self._save()
        if late and exc_type is None:
            raise KeyboardInterrupt("signal during the teardown")
        return False

    # -- helpers -------------------------------------------------------------------------------
    def _phase(self, name, text):
        if self.ui is not None:
            self.ui.phase(name, text)

    def _say(self, text):
        warn = getattr(self.ui, "warn", None)
        if warn is not None:
            warn(text)
        else:
            import sys
            print(text, file=sys.stderr)

    def _save(self):
        with suppress(OSError):
            self.run.save()


def _marker(run_id: str):
    from cyberrange.twin.state import STATE_DIR
    return STATE_DIR / f"run-{run_id}.json"


def mark_active(run) -> None:
    """Note, outside the run folder, that this process owns ``run`` until ``run.finish``: a
    run whose owner dies (SIGKILL during the analysis, when no twin is left to find it by) is
    then found by ``cyberrange down --stale`` and the next ``drill run``, and finalised."""
    import json
    import os

    from cyberrange.twin.state import process_start
    marker = _marker(run.id)
    with suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"run_id": run.id, "run_dir": str(run.dir),
                                      "owner_pid": os.getpid(),
                                      "owner_start": process_start(os.getpid())}))
        run.finish_hooks = [*getattr(run, "finish_hooks", []),
                            lambda: marker.unlink(missing_ok=True)]


def stale_runs() -> list[dict]:
    """Runs whose owner died before finishing them (and that no stale twin accounts for)."""
    import json

    from cyberrange.twin.state import STATE_DIR, _alive, live_states, process_start
    twins = {s.run_id for s in live_states()}
    out = []
    for p in sorted(STATE_DIR.glob("run-*.json")) if STATE_DIR.is_dir() else []:
        try:
            m = json.loads(p.read_text())
            pid, start = int(m["owner_pid"]), int(m.get("owner_start") or 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid) and (not start or process_start(pid) == start):
            continue
        if m.get("run_id") not in twins:
            out.append(dict(m, marker=str(p)))
    return out


def finalise_stale_run(m: dict, how: str = "killed") -> str | None:
    """Put a stale run's manifest in a final state; returns the status it ends in."""
    from pathlib import Path

    from cyberrange.run import FINAL_STATUSES, Run
    status = None
    with suppress(Exception):
        run = Run(m["run_dir"])
        if run.manifest:
            status = run.manifest.get("status")
            if status not in FINAL_STATUSES:
                run.manifest["error"] = run.manifest.get("error") or (
                    f"the owning process (pid {m['owner_pid']}) died before the run finished")
                status = how
            run.finish(status)
    Path(m["marker"]).unlink(missing_ok=True)
    return status


def stale_twins_note(console=None, interactive: bool = False, remove: bool = False) -> list:
    """Twins left by a dead owner (SIGKILL, a crash, a forced quit): offered for removal at the
    next ``up``/``drill run``. ``remove``: remove them now; ``interactive``: ask; otherwise
    print how. Returns the states that are still there."""
    from cyberrange.twin.state import stale_states
    for m in stale_runs():          # no twin left, only a manifest to finalise: no need to ask
        status = finalise_stale_run(m)
        if console is not None and status:
            console.print(f"note: run {m['run_id']} was left unfinished by a process that died;"
                          f" its manifest now says {status}")
    stale = stale_states()
    if not stale:
        return []
    say = console.print if console is not None else print
    names = ", ".join(f"{s.prefix} (run {s.run_id}, owner pid {s.owner_pid} is gone)"
                      for s in stale)
    if not remove and interactive:
        import click
        remove = click.confirm(f"stale twin(s) left by a process that died: {names}. "
                               f"Remove them now?", default=True, err=True)
    if not remove:
        say(f"note: stale twin(s) left by a process that died: {names}; remove them with "
            + " ; ".join(f"cyberrange down {s.prefix}" for s in stale))
        return stale
    left = []
    for s in stale:
        removed = remove_twin(s, how="killed")
        say(f"removed stale twin {s.prefix} (run {s.run_id}): {removed.get('processes')} "
            f"processes, {removed.get('links')} links")
        if removed.get("left"):
            left.append(s)
    return left


def remove_twin(state, how: str = "killed") -> dict:
    """Tear down a twin from its state file (its owner is dead or gone) and put its run's
    manifest in a final state: ``how`` (``killed``) unless it is final already."""
    from cyberrange.run import FINAL_STATUSES, Run
    from cyberrange.twin.state import teardown
    removed = teardown(state)
    manifest = None
    with suppress(Exception):
        run = Run(state.run_dir)
        manifest = run.manifest
    if manifest:
        if manifest.get("status") not in FINAL_STATUSES:
            manifest["status"] = how
            manifest["error"] = manifest.get("error") or (
                f"the owning process (pid {state.owner_pid}) died; the twin was removed by "
                f"`cyberrange down`")
        manifest["teardown"] = dict(removed, by="cyberrange down", complete=not removed["left"])
        with suppress(OSError):
            run.finish(manifest["status"])
    _marker(state.run_id).unlink(missing_ok=True)
    return removed


# -- twins that are already up ------------------------------------------------------------
def select_twins(ref: str | None = None, everything: bool = False, stale: bool = False
                 ) -> list:
    """Live twins' states: the one named ``ref`` (prefix, run id or run folder), or every one
    (``everything``), or those whose owner died (``stale``), or the only one when ``ref`` is
    None. A UserError names the live twins when ``ref`` matches none or several are up."""
    from pathlib import Path

    from cyberrange.errors import UserError
    from cyberrange.twin.state import live_states
    states = live_states()
    if everything:
        return states
    if stale:
        return [s for s in states if not s.owner_alive]
    if ref is None:
        if len(states) <= 1:
            return states
        raise UserError("several twins are up; name one (prefix or run id) or use --all: "
                        + ", ".join(f"{s.prefix} ({s.run_id})" for s in states))
    hit = [s for s in states if ref in (s.prefix, s.run_id) or Path(ref).name == s.run_id]
    if not hit:
        raise UserError(f"no live twin {ref!r}; live: "
                        + (", ".join(f"{s.prefix} ({s.run_id})" for s in states) or "none"))
    return hit


class AttachedTwin:
    """A twin that is up in another process (``cyberrange up``, a drill), found by its state
    file: a NodeRunner (``popen``/``run`` in a node) for ``exec`` and whatever acts on a live
    twin. It never tears the twin down: its owner does, or ``cyberrange down``."""

    def __init__(self, state):
        self.state = state
        self.prefix, self.run_id, self.topology = state.prefix, state.run_id, state.topology
        self.ns = dict(state.namespaces)
        self.sw_ns = state.switch_ns

    @property
    def nodes(self) -> list[str]:
        return list(self.ns)

    def _ns(self, node: str) -> str:
        if node not in self.ns:
            import difflib

            from cyberrange.errors import UserError
            near = difflib.get_close_matches(node, list(self.ns), 1)
            raise UserError(f"no node {node!r} in twin {self.topology} ({self.prefix})"
                            + (f" (did you mean {near[0]!r}?)" if near else ""))
        return self.ns[node]

    def popen(self, node: str, argv: list[str], **kwargs):
        from cyberrange.twin import netns
        kwargs.setdefault("start_new_session", True)
        return netns.popen(self._ns(node), argv, **kwargs)

    def run(self, node: str, argv: list[str], timeout: float = 30, input: str | None = None):
        from cyberrange.twin import netns
        return netns.run(self._ns(node), argv, input=input, timeout=timeout)

    def exec_argv(self, node: str, argv: list[str]) -> list[str]:
        """The command a terminal user runs to enter a node (``ip netns exec`` also gives the
        program the node's own view of /sys)."""
        return ["ip", "netns", "exec", self._ns(node), *argv]


def attach(ref: str | None = None) -> AttachedTwin:
    """The live twin ``ref`` (prefix, run id or run folder; None: the only one up)."""
    from cyberrange.errors import UserError
    states = select_twins(ref)
    if not states:
        raise UserError("no twin is up (cyberrange up FILE --detach starts one)")
    if not states[0].namespaces:
        raise UserError(f"twin {states[0].prefix} was built by an earlier version of cyberrange "
                        f"(a Mininet shell per node); remove it with `cyberrange down "
                        f"{states[0].prefix}`")
    return AttachedTwin(states[0])
