"""Benign background traffic: what a busy, healthy network looks like to a sensor.

Two halves, like the attack agent:

* ``plan_benign(topology)`` (parent side, ``cyberrange.traffic.plan``) resolves every host's
  activities from its role (built-in defaults in ``roles.yaml``, the topology's ``benign.roles``
  and ``benign.nodes``), picks servers from the model and keeps only flows the firewalls allow.
* ``python -m cyberrange.traffic.benign`` (inside the host's namespace) reads its plan as JSON on
  stdin and makes the requests of ``schedule(plan)`` with real kernel sockets, one thread per
  activity (a slow backup does not delay a periodic report), until it is terminated.

Every request is logged as one JSON line: ``time``, ``host``, ``kind``, the 5-tuple (``src``,
``sport``, ``dst``, ``dport``, ``proto``), ``target`` (node), ``ok``, ``duration`` and what the
client could measure (``bytes_out``/``bytes_in``, ``packets_out``/``packets_in``), so a run can
reconcile what the generators sent with what the sensors captured (``read_logs``). Benign
traffic is never labelled as attack: it never enters the ledger.
"""
from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from cyberrange.traffic.plan import activity_events, explain_benign, plan_benign, schedule

__all__ = ["explain_benign", "generate", "plan_benign", "read_logs", "schedule", "summarize"]


def _run_activity(plan: dict, k: int, t0: float, log, lock: threading.Lock,
                  stop: threading.Event, max_requests: int | None, counter: list) -> None:
    from cyberrange.traffic.clients import CLIENTS
    act = plan["activities"][k]
    client = CLIENTS[act["kind"]]
    for offset, target, detail in activity_events(plan, k):
        if stop.wait(max(0.0, t0 + offset - time.time())):
            return
        with lock:
            if max_requests is not None and counter[0] >= max_requests:
                return
            counter[0] += 1
        start = time.time()
        rec = {"time": round(start, 6), "host": plan["host"], "kind": act["kind"],
               "target": target["node"], "dst": target["ip"], "dport": target["port"],
               "proto": target["proto"]}
        try:
            rec.update(client(target, random.Random(detail), act.get("params", {})))
        except Exception as e:  # noqa: BLE001 - a failed request is logged, never fatal
            rec.update(ok=False, error=f"{type(e).__name__}: {e}")
        rec["duration"] = round(time.time() - start, 6)
        if "packets_out" in rec:        # for cyberrange.score.reconcile (TCP: up to the close)
            rec["packets"] = rec["packets_out"] + rec.get("packets_in", 0)
        with lock:
            log.write(json.dumps(rec) + "\n")
            log.flush()


def generate(plan: dict, log, stop: threading.Event | None = None,
             max_requests: int | None = None) -> int:
    """Make the plan's requests until ``stop`` is set (or ``max_requests`` were made in all);
    return how many were made."""
    stop = stop or threading.Event()
    lock, counter, t0 = threading.Lock(), [0], time.time()
    threads = [threading.Thread(target=_run_activity, daemon=True,
                                args=(plan, k, t0, log, lock, stop, max_requests, counter))
               for k in range(len(plan["activities"]))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and not stop.is_set():
        if max_requests is not None and counter[0] >= max_requests:
            stop.set()
        stop.wait(0.2)
    deadline = time.time() + 2.0       # let requests in flight finish and be logged
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    with lock:
        return counter[0]


def read_logs(logs_dir) -> list[dict]:
    """Every benign request logged in a run's ``logs/`` folder (``benign-<host>.jsonl``)."""
    out = []
    for f in sorted(Path(logs_dir).glob("benign-*.jsonl")):
        for line in f.open():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue            # a line cut short by a kill
    return out


def summarize(records: list[dict]) -> dict:
    """Totals for a reconciliation: requests, succeeded, per kind, packets and bytes sent."""
    kinds = Counter(r["kind"] for r in records)
    ok = [r for r in records if r.get("ok")]
    return {"requests": len(records), "ok": len(ok), "kinds": dict(sorted(kinds.items())),
            "packets_out": sum(r.get("packets_out", 0) for r in records),
            "bytes_out": sum(r.get("bytes_out", 0) for r in records)}


def main() -> None:
    plan = json.loads(sys.stdin.read())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    log = open(plan["log"], "a") if plan.get("log") else sys.stdout
    try:
        generate(plan, log, stop=stopping)
    except KeyboardInterrupt:
        stopping.set()


if __name__ == "__main__":
    main()
