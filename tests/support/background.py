"""Long, independent subprocesses (real drills, each in a twin of its own) run a few at a time in
the background, so that a test module's drills overlap instead of queueing.

A drill spends most of its wall time waiting (warm-up, paced attack steps, benign-only minutes,
cool-down): on 2 cores a drill uses about a third of one core, so several can run at once.
Twins are isolated from each other (named namespaces with their own prefix), and each drill's
scorecard reconciles what was sent, captured and stored, so the tests that read a drill can
check that running it beside others lost nothing.

Only a module's own drills run together, started by its session fixture when its first test
asks for one, and that module's tests wait for all of them: no other test module runs while
they do (bandwidth measurements, tests that compare the list of live twins before and after).

    pool = Pool(slots=4)
    pool.submit("fob", argv)              # starts when a slot is free, in submission order
    r = pool.result("fob")                # waits; a CompletedProcess (+ .elapsed_s)
    pool.close()                          # SIGTERM to what still runs (its teardown runs)

On Ctrl-C pytest ends the session at once: ``close_all`` (called by conftest's
``pytest_sessionfinish`` before it looks for leftover twin objects) stops every pool's drills,
which then tear their twins down.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress


_POOLS: list["Pool"] = []


def close_all() -> None:
    """Close every pool that is still open (a Ctrl-C ended the session before their fixtures)."""
    for pool in list(_POOLS):
        pool.close()


class Pool:
    def __init__(self, slots: int):
        self.slots = slots
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="bg-drill")
        self.jobs: dict[object, Future] = {}
        self.procs: dict[object, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.closed = False
        _POOLS.append(self)

    def submit(self, key, argv: list, timeout: float = 900, **popen) -> None:
        """Queue ``argv`` under ``key`` (once: a second submit of a key is ignored)."""
        with self.lock:
            if key in self.jobs or self.closed:
                return
            self.jobs[key] = self.executor.submit(self._run, key, [str(a) for a in argv],
                                                  timeout, popen)

    def result(self, key, argv: list | None = None, timeout: float = 900,
               **popen) -> subprocess.CompletedProcess:
        """The finished job ``key``; submitted now (with ``argv``) if it was not queued."""
        if key not in self.jobs:
            assert argv is not None, f"job {key!r} was never submitted"
            self.submit(key, argv, timeout, **popen)
        return self.jobs[key].result()

    def _run(self, key, argv, timeout, popen) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        with self.lock:
            if self.closed:
                raise RuntimeError("the pool was closed before this job started")
            # its own session: a Ctrl-C at the terminal reaches pytest, which closes the pool
            # (SIGTERM: the drill tears its twin down) instead of killing the drill outright
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True, **popen)
            self.procs[key] = p
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._stop(p)
            out, err = p.communicate()
            err += f"\n[background job {key!r} timed out after {timeout:g} s]"
        finally:
            with self.lock:
                self.procs.pop(key, None)
        r = subprocess.CompletedProcess(argv, p.returncode, out, err)
        r.elapsed_s = round(time.monotonic() - t0, 1)
        return r

    @staticmethod
    def _stop(*procs: subprocess.Popen) -> None:
        """SIGTERM to each (a drill unwinds and removes its twin), then SIGKILL to any that is
        still there a minute later."""
        for p in procs:
            if p.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def close(self) -> None:
        """Cancel what has not started, stop what runs (its twin is torn down), wait."""
        if self in _POOLS:
            _POOLS.remove(self)
        with self.lock:
            self.closed = True
            running = list(self.procs.values())
        for f in self.jobs.values():
            f.cancel()
        self._stop(*running)
        self.executor.shutdown(wait=True)

