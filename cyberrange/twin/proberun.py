"""Running ``cyberrange.twin.probe`` inside a twin's nodes (``twin verify``'s reachability
probes and ``twin/statecheck.py``'s probes after a link state change)."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


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


def run_plan(twin, plan: dict[str, list[dict]], workers: int = 8) -> list[dict]:
    """Every source's probes (``plan``: source node -> probes with ``predicted``), sources in
    parallel. Where the twin emulates delay, each probe waits for the slowest path and resends
    within it, and allowed probes that timed out are retried (:func:`retry_timeouts`). Each
    result gets ``src``, ``observed`` (it got through) and ``agree`` (with ``predicted``)."""
    emulated = bool(twin.netem or twin.relay_ports)
    if emulated:                               # delay is emulated: wait for the slowest path
        from cyberrange.twin.linkcheck import probe_timeout
        timeout = probe_timeout(twin.topo)
        for probes in plan.values():
            for p in probes:
                p.update(timeout=timeout, resend=True)   # emulated loss: resend in time
    results = []
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = {src: ex.submit(run_probes, twin, src, probes) for src, probes in plan.items()}
        for src, fut in futures.items():
            for r in fut.result():
                r["src"] = src
                results.append(r)
    if emulated:
        retry_timeouts(twin, results)
    for r in results:
        r["observed"] = r["result"] == "open"
        r["agree"] = r["observed"] == r["predicted"]
    return results
