"""The attack agent: runs ONE technique inside the actor's network namespace.

The runner starts ``python -m cyberrange.attack.agent`` in the actor's namespace (through a
NodeRunner), writes one JSON request on stdin::

    {"technique": "T1018" | "T1046" | "T1110.001",
     "targets": ["10.10.2.20", "10.10.2.20:22", ...],
     "params": {...catalog params; those left out get their defaults...},
     "allowed": ["10.10.0.0/29", ...],          # the twin's address space
     "step": "scan", "max_rate": 100000}       # optional: step id, per-step rate cap (packets/s)

and reads one JSON result from stdout::

    {"outcome": "succeeded" | "failed" | "blocked" | "error", "start": float, "end": float,
     "flows": [{"src", "dst", "proto", "sport", "dport", "packets", "bytes"}],
     "facts": {...}, "error": str | null, "log": [str]}

Before anything is sent the agent checks every target against ``allowed`` again (the runner
already did): a refusal gives outcome "error" and no packet at all. A ``params.rate`` above
``max_rate`` is refused the same way (the loader and the runner already cap it). Only the
result goes to stdout; everything else (scapy warnings, tracebacks) goes to stderr, which the
runner keeps.
"""
from __future__ import annotations

import ipaddress
import json
import os
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
    if not targets:
        r = error("no targets")
        r["outcome"] = "failed"
        return r
    # a playbook's step comes with every parameter filled; a request may leave some out
    return spec.func([str(t) for t in targets], spec.with_defaults(params)).to_dict()


def main() -> int:
    # Keep stdout for the one JSON result: anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    try:
        request = json.loads(sys.stdin.read() or "{}")
        if not isinstance(request, dict):
            raise ValueError("the request must be a JSON object")
        result = handle(request)
        code = 0
    except Exception as exc:        # noqa: BLE001 - every failure becomes an "error" result
        traceback.print_exc(file=sys.stderr)
        result = {"outcome": "error", "start": time.time(), "end": time.time(), "flows": [],
                  "facts": {}, "error": f"{type(exc).__name__}: {exc}", "log": []}
        code = 1
    out.write(json.dumps(result) + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
