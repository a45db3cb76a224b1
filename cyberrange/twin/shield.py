"""Cleanup that an impatient user cannot break.

Two modes for SIGINT, SIGTERM and SIGHUP while a twin exists:

- **work** (``with interruptible():``): a signal unwinds like Ctrl-C (``KeyboardInterrupt``),
  so every ``finally`` and the session's teardown run. At that first signal the process
  switches to cleanup mode at once, so that a second Ctrl-C, even one that arrives while the
  exception is still unwinding, cannot break the teardown that follows.
- **cleanup** (``with Shield(...):``, or after that first signal): signals are counted, not
  obeyed. The first is acknowledged on the terminal (``still cleaning up (twin c3f9a: 12 links,
  15 processes left)``) and the cleanup goes on; the second forces the quit: every active
  shield records what it knows in its run folder (the manifest ends ``interrupted`` with an
  incomplete teardown), the exact ``cyberrange down`` command that removes what is left is
  printed, and the process exits at once (128 + the signal: 130, 143).

Counting from the user's side: the first Ctrl-C stops the drill and starts the teardown, the
second is acknowledged, the third force-quits.

Shields nest (the drill's whole cleanup, and inside it ``Twin.stop``): the outermost one takes
the handlers over and gives them back. A signal that arrived during a shielded cleanup is not
lost: the outermost shield raises ``KeyboardInterrupt`` when it exits (``reraise``), or tells
its caller (``interrupted``). Handlers can only be set in the main thread; elsewhere both
context managers do nothing.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import suppress

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FORCE_AT = 2                    # the second signal in cleanup mode forces the quit

_orig: dict[int, object] = {}   # the handlers before this module took over
_stack: list["Shield"] = []     # active shields, outermost first
_received: list[int] = []       # signals received in cleanup mode
_work_depth = 0                 # nested ``interruptible`` blocks
last_signal: int | None = None  # the last signal that interrupted this process (exit code)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _take_over(handler) -> None:
    if not _orig:
        _orig.update({s: signal.getsignal(s) for s in SIGNALS})
    for s in SIGNALS:
        signal.signal(s, handler)


def _give_back() -> None:
    for s, h in _orig.items():
        signal.signal(s, h)
    _orig.clear()
    _received.clear()


def _say(text: str) -> None:
    for shield in reversed(_stack):
        if shield.say is not None:
            with suppress(Exception):
                shield.say(text)
                return
    with suppress(Exception):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _left_text() -> str:
    """``twin c3f9a: 12 links, 15 processes left`` for the twins being cleaned up."""
    from cyberrange.twin.state import leftovers
    parts = []
    for prefix in dict.fromkeys(s.prefix for s in _stack if s.prefix):
        try:
            left = leftovers(prefix)
        except Exception:  # noqa: BLE001 - a progress line must never break the cleanup
            continue
        what = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in left.items() if v)
        parts.append(f"twin {prefix}: {what or 'nothing'} left")
    return "; ".join(parts) or "the twin is being removed"


def _interrupt(signum, frame):
    """Work mode: unwind, and from now on count further signals instead of obeying them."""
    global last_signal
    last_signal = signum
    _take_over(_cleanup)
    raise KeyboardInterrupt(f"signal {signum}")


def _cleanup(signum, frame):
    """Cleanup mode: acknowledge the first signal, force the quit at the second."""
    global last_signal
    last_signal = signum
    _received.append(signum)
    name = signal.Signals(signum).name
    if len(_received) < FORCE_AT:
        _say(f"{name}: still cleaning up ({_left_text()}); press Ctrl-C once more to force "
             f"quit and leave the rest behind")
        return
    for shield in list(_stack):
        if shield.on_force is not None:
            with suppress(Exception):
                shield.on_force()
    refs = list(dict.fromkeys(s.down_ref for s in _stack if s.down_ref))
    _say(f"{name}: forced quit, the cleanup is incomplete ({_left_text()}); remove the rest "
         f"with: " + " ; ".join(f"cyberrange down {r}" for r in refs or ["--stale"]))
    os._exit(128 + signum)


class interruptible:
    """``with interruptible():`` the work: SIGTERM and SIGHUP unwind like Ctrl-C, and the
    signal is remembered in ``last_signal`` (the command exits 128 + its number)."""

    def __enter__(self):
        global _work_depth
        self.active = _main_thread()
        if self.active:
            _work_depth += 1
            if not _stack and _work_depth == 1:
                _take_over(_interrupt)
        return self

    def __exit__(self, *exc):
        global _work_depth
        if self.active:
            _work_depth -= 1
            if _work_depth == 0 and not _stack:
                _give_back()
        return False


class Shield:
    """``with Shield(prefix, down_ref=run_id, on_force=..., say=...):`` a cleanup.

    ``prefix``: the twin's kernel prefix (for the objects-left count); ``down_ref``: what to
    pass to ``cyberrange down`` (prefix or run id); ``on_force()``: called before a forced quit
    (record the incomplete teardown); ``say(text)``: how to print (a rich console's print);
    ``reraise``: raise KeyboardInterrupt at the end when a signal arrived during the cleanup
    (False: the caller reads ``interrupted`` instead)."""

    def __init__(self, prefix: str | None = None, down_ref: str | None = None,
                 on_force=None, say=None, reraise: bool = True):
        self.prefix = prefix
        self.down_ref = down_ref or prefix
        self.on_force = on_force
        self.say = say
        self.reraise = reraise
        self.active = False
        self.interrupted = False

    def __enter__(self) -> "Shield":
        if not _main_thread():
            return self
        self.active = True
        _stack.append(self)
        if len(_stack) == 1:
            _take_over(_cleanup)
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.active:
            return False
        self.active = False
        _stack.remove(self)
        self.interrupted = bool(_received)
        if _stack:
            return False
        if _work_depth:                  # back to the work that this cleanup was part of
            _received.clear()
            _take_over(_interrupt)
        else:
            _give_back()
        if self.interrupted and exc_type is None and self.reraise:
            raise KeyboardInterrupt(f"signal {last_signal}")
        return False


def received() -> list[int]:
    """The signals counted (not obeyed) in the current cleanup."""
    return list(_received)


def shielded() -> bool:
    """Whether a cleanup is running under a shield in this process."""
    return bool(_stack)
