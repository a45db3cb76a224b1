"""The attack agent: runs ONE technique inside the actor's network namespace.

The runner starts ``python -m cyberrange.attack.agent`` in the actor's namespace (through a
NodeRunner), writes one JSON request on stdin::

    {"technique": "T1018" | "T1046" | "T1110.001",
     "targets": ["10.10.2.20", "10.10.2.20:22", ...],
     "params": {...catalog params; those left out get their defaults...},
     "allowed": ["10.10.0.0/29", ...],          # the twin's address space
     "step": "scan", "max_rate": 100000}       # optional: step id, per-step rate cap (packets/s)

and reads one JSON result from stdout::

    {"outcome": "succeeded" | "failed" | "blocked" | "error" | "stopped",
     "start": float, "end": float,
     "flows": [{"src", "dst", "proto", "sport", "dport", "packets", "bytes"}],
     "facts": {...}, "error": str | null, "blocked_reason": str | null, "arp_frames": int,
     "log": [str]}

Before anything is sent the agent checks every target against ``allowed`` again (the runner
already did): a refusal gives outcome "error" and no packet at all. A ``params.rate`` above
``max_rate`` is refused the same way (the loader and the runner already cap it). Only the
result goes to stdout; everything else (scapy warnings, tracebacks) goes to stderr, which the
runner keeps in the run's logs folder.

Whatever happens to the technique, the result says exactly what left the actor
(:func:`run_technique`): a technique keeps its flows in its ``Result`` as it sends, so when it
raises, the agent still has them. ``common.Blocked`` (raised where a send or a connect meets
the defence: an errno only the actor's own node gives, ``common.defence_reason``) ends the step
``blocked`` with that reason; any other exception ends it ``error`` with ONE line
(``Type: message``) and the traceback on stderr. SIGTERM (the
runner stopping a run) or SIGINT (a terminal's Ctrl-C reaches the agents too) ends it ``stopped``, after the technique has unwound. Last, the egress
witness corrects the flows it was asked to watch (``techniques/witness.py``); a step that did
not succeed and whose packets never left the actor is ``blocked``.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import time
import traceback


def handle(request: dict) -> dict:
    from cyberrange.attack.guard import check_targets
    from cyberrange.errors import ContainmentError

    now = time.time()

    def error(msg: str) -> dict:
        return {"outcome": "error", "start": now, "end": time.time(), "flows": [], "facts": {},
                "error": msg, "log": []}

    technique = request.get("technique")
    targets = request.get("targets")
    params = request.get("params") or {}
    allowed = request.get("allowed")
    if not isinstance(targets, list) or not isinstance(allowed, list) or not allowed:
        return error("request needs 'targets' and a non-empty 'allowed' list")
    try:
        check_targets([str(t) for t in targets],
                      [ipaddress.IPv4Network(a, strict=False) for a in allowed],
                      step=request.get("step"))
    except (ContainmentError, ValueError) as exc:
        return error(f"agent refused: {exc}")
    max_rate = request.get("max_rate")
    rate = params.get("rate")
    if max_rate is not None and isinstance(rate, (int, float)) and not isinstance(rate, bool) \
            and rate > float(max_rate):
        return error(f"rate {rate:g} packets/s is above the step's cap of {float(max_rate):g}; "
                     f"nothing was sent")

    from cyberrange.attack.catalog import TECHNIQUES
    spec = TECHNIQUES.get(technique)
    if spec is None:
        return error(f"unknown technique {technique!r} (known: {', '.join(TECHNIQUES)})")
    if spec.runs_on != "agent":
        return error(f"{technique} runs against the twin itself (runs_on {spec.runs_on}), "
                     f"not in an actor's namespace; the runner runs it")
    if not targets:
        r = error("no targets")
        r["outcome"] = "failed"
        return r
    # a playbook's step comes with every parameter filled; a request may leave some out
    return run_technique(spec, [str(t) for t in targets], spec.with_defaults(params))


_STOPPABLE = False           # main() turned SIGTERM into Stopped (not when a test calls handle)


class Stopped(BaseException):
    """SIGTERM or SIGINT: the operator stopped the run. A BaseException, so that no technique's
    ``except Exception`` swallows it; its ``finally`` blocks still record what was sent."""


def _stop(_signum, _frame):
    raise Stopped()


def run_technique(spec, targets: list[str], params: dict) -> dict:
    """Run one technique and return its result (see the module doc): exactly what left the
    actor, and an outcome with its one-line reason, whatever the technique did."""
    from cyberrange.attack.techniques import common, witness
    common.forget_result()
    started = time.time()
    try:
        res = spec.func(targets, params)
    except Stopped:
        res = common.current_result() or common.Result(start=started)
        res.outcome, res.end = "stopped", time.time()
        res.log.append("stopped by the operator (SIGTERM) while running")
    except Exception as exc:        # noqa: BLE001 - a crash must still report what was sent
        res = common.current_result() or common.Result(start=started)
        if isinstance(exc, common.Blocked):     # raised where a send met the defence
            res.cut(exc.reason)
            res.outcome = "blocked"
        else:
            traceback.print_exc(file=sys.stderr)
            res.outcome = "error"
            res.error = common.one_line(f"{type(exc).__name__}: {exc}")
        res.end = time.time()
    if _STOPPABLE:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)          # the result is being finished
    if not isinstance(res, common.Result):              # a stand-in (tests)
        return res.to_dict()
    res.flows, local_drops = witness.settle(common.merge_flows(res.flows), res.log)
    if local_drops and res.outcome in ("failed", "blocked"):
        why = (f"{local_drops} packets never left the actor: dropped inside its own node (a "
               f"firewall rule, a removed route or a down interface)")
        res.outcome = "blocked"
        res.blocked_reason = common.one_line(f"{res.blocked_reason}; {why}"
                                             if res.blocked_reason else why)
    return res.to_dict()


def main() -> int:
    # Keep stdout for the one JSON result: anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    global _STOPPABLE
    # SIGTERM from the runner; SIGINT from a terminal's Ctrl-C, which reaches the whole
    # process group, agents included: both stop the technique, which reports what it sent
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    _STOPPABLE = True
    try:
        request = json.loads(sys.stdin.read() or "{}")
        if not isinstance(request, dict):
            raise ValueError("the request must be a JSON object")
        result = handle(request)
        code = 0
    except Stopped:
        result = {"outcome": "stopped", "start": time.time(), "end": time.time(), "flows": [],
                  "facts": {}, "error": None, "log": ["stopped before the technique started"]}
        code = 0
    except Exception as exc:        # noqa: BLE001 - every failure becomes an "error" result
        traceback.print_exc(file=sys.stderr)
        result = {"outcome": "error", "start": time.time(), "end": time.time(), "flows": [],
                  "facts": {}, "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500],
                  "log": []}
        code = 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)            # the result is on its way out
    out.write(json.dumps(result) + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
