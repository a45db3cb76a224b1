"""Running ``cyberrange.twin.probe`` inside a twin's nodes (``twin verify``'s reachability
probes and ``twin/statecheck.py``'s probes after a link state change)."""
from __future__ import annotations

import json
import subprocess
import sys


def run_probes(twin, node: str, probes: list[dict]) -> list[dict]:
    p = twin.popen(node, [sys.executable, "-m", "cyberrange.twin.probe"], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(json.dumps(probes), timeout=120)
    if p.returncode:
        raise RuntimeError(f"probes from {node} failed: {err.strip()[-300:]}")
    return json.loads(out)


def retry_timeouts(twin, results: list[dict]) -> None:
    """On emulated slow or lossy links all probes at once can queue behind each other for
    longer than a probe waits (a 9.6 kbit/s radio carries 12 small packets a second): the
    probes the model allows that timed out are tried once more, one source at a time, with
    three times the wait. A probe that gets through then is marked ``retried``."""
    again: dict[str, list[dict]] = {}
    for r in results:
        if r["predicted"] and r["result"] == "filtered":
            again.setdefault(r["src"], []).append(
                {k: r[k] for k in ("proto", "ip", "port", "dst", "service", "predicted", "why")}
                | {"timeout": 3 * r.get("timeout", 1.5), "resend": True})
    if not again:
        return
    redo = {}
    for src, probes in again.items():
        for r in run_probes(twin, src, probes):
            redo[(src, r["proto"], r["ip"], r.get("port"))] = r["result"]
    for r in results:
        new = redo.get((r["src"], r["proto"], r["ip"], r.get("port")))
        if new is not None and new != r["result"]:
            r.update(result=new, retried=True)
