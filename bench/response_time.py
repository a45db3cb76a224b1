"""Benchmark: the automated response's time from an alert to its action applied (issue 14:
"time from an alert to its automated action applied (median and p95 over >= 50 actions)").

The twin: fob (15 nodes), built as ``cyberrange up`` builds it, in a temporary run folder. A
response playbook with one rule (``block`` the alert's source at its switch port, reverted after
``for: 0.1`` s, once per source) runs in a ``ResponseEngine`` exactly as ``drill run --respond``
runs it; synthetic alerts (``detect.base.Alert``, what ``StreamingDetection`` hands to its
``on_alert``) are passed to the engine's chained callback one at a time, each from the next
host, each once the previous block has been reverted. Measured, per alert:

- **engine**: the alert handed over (``trigger.alert_time``, stamped by ``on_alert``) to the
  block applied (the record's ``time``, written after the kernel change): the queue, the
  worker thread, matching, rendering, the allow-list, ``blue.actions.apply`` (plan, log lock,
  ``nft -f``, the log record);
- **library**: ``blue.actions.apply`` alone for the same block (what a script pays);
- **baseline**: the same drop rule added the plain way, ``ip netns exec <prefix>sw nft add
  rule bridge ...`` into a chain made once beforehand (no checks, no log).

Not measured here: how late the live detection raises an alert after its evidence (a pcap
rotation, the ingest, the detectors' run; see docs/response-format.md "Timing"), which is
the drill's, not the response's.

Run as root:  .venv/bin/python bench/response_time.py [--alerts 60]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESPONSE = """version: 1
name: bench
topology: fob
never_isolate: [c2-server, cp-dns]
max_actions: 10000
rules:
  - name: block-source
    when: {detector: bench-alert}
    do: {action: block, src: "{source.node}", at: port}
    for: 0.1
    once_per: "{source.ip}"
"""
HOSTS = ["ops-ws1", "ops-ws2", "ops-ws3", "ops-files", "ops-maint", "cp-ws1", "cp-ws2",
         "dmz-web", "dmz-mail", "hq-portal"]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def ms(values: list[float]) -> tuple[str, str, str]:
    return (f"{statistics.median(values) * 1000:.1f}", f"{pct(values, 0.95) * 1000:.1f}",
            f"{max(values) * 1000:.1f}")


def synthetic_alert(ip: str):
    from cyberrange.detect.base import Alert
    now = datetime.now(timezone.utc)
    return Alert(timestamp=now, start=now, end=now, rule_name="bench-alert",
                 rule_category="portscan", technique="T1046", source_ip=ip,
                 destination_ip=None, message="bench", score=1.0)


def wait_for(pred, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = pred()
        if hit:
            return hit
        time.sleep(0.0005)
    raise TimeoutError("the engine did not answer in time")


def bench_engine(engine, topo, n: int) -> dict:
    """``n`` alerts through the engine; alert -> applied, and due -> reverted."""
    cb = engine.chain(None)
    out = {"applied": [], "reverted": []}
    for i in range(n):
        node = topo.nodes[HOSTS[i % len(HOSTS)]]
        before = len(engine.records)
        cb(synthetic_alert(str(node.ip)))
        rec = wait_for(lambda: len(engine.records) > before and engine.records[before])
        assert rec["result"] == "applied" and rec["params"]["src"] == node.name, rec
        out["applied"].append(rec["time"] - rec["trigger"]["alert_time"])
        undo = wait_for(lambda: len(engine.records) > before + 1 and engine.records[before + 1])
        assert undo["reverts"] == rec["id"], undo
        out["reverted"].append(undo["time"] - (rec["time"] + 0.1))
    return out


def bench_library(twin, topo, n: int) -> dict:
    from cyberrange.blue.actions import apply, revert
    out = {"applied": []}
    for i in range(n):
        node = HOSTS[i % len(HOSTS)]
        t0 = time.time()
        rec = apply(twin, "block", {"src": node, "at": "port"}, actor="bench")
        out["applied"].append(rec["time"] - t0)
        revert(twin, rec["id"], actor="bench")
    return out


def bench_baseline(twin, topo, n: int) -> dict:
    from cyberrange.blue.target import live_twin
    lt = live_twin(twin)
    ns = lt.sw_ns
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
                   input="add table bridge bench\nadd chain bridge bench c { type filter hook "
                         "forward priority filter; policy accept; }\n")
    out = {"applied": []}
    try:
        for i in range(n):
            node = topo.nodes[HOSTS[i % len(HOSTS)]]
            port = lt.port_of(node.name, node.interfaces[0])
            rule = f'iifname "{port}" ip saddr {node.ip} drop'
            t0 = time.perf_counter()
            r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-e", "-a", "add", "rule",
                                "bridge", "bench", "c", *rule.split()],
                               capture_output=True, text=True, check=True)
            out["applied"].append(time.perf_counter() - t0)
            handle = r.stdout.rsplit("# handle", 1)[1].strip()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "rule", "bridge",
                            "bench", "c", "handle", handle], check=True)
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "bridge", "bench"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=60, help="alerts (= actions) per row")
    args = ap.parse_args()
    from cyberrange.blue.respond import ResponseEngine, load_response
    from cyberrange.model.loader import load_topology
    from cyberrange.run import Run
    from cyberrange.session import TwinSession
    from cyberrange.twin.build import Twin
    from cyberrange.twin.state import leftovers
    tmp = Path(tempfile.mkdtemp(prefix="response-bench-"))
    topo_file = ROOT / "topologies" / "fob.yaml"
    topo = load_topology(topo_file)
    (tmp / "bench.yaml").write_text(RESPONSE)
    response = load_response(tmp / "bench.yaml", topo)
    run = Run.create(tmp / "runs", "response-bench", {"topology": str(topo_file)})
    run.manifest.update(kind="twin", topology=topo.name)
    run.save()
    twin = Twin(topo, run.dir, run.id, log=lambda m: None)
    n = args.alerts
    with TwinSession(run, twin) as session:
        session.start()
        engine = ResponseEngine(response, twin, topo).start()
        bench_engine(engine, topo, 3)                       # warm: imports, the port map
        engine.records.clear()
        engine.counts.clear()
        results = {"engine: alert -> block applied": bench_engine(engine, topo, n)}
        summary = engine.stop()
        results["library: blue.actions.apply"] = bench_library(twin, topo, n)
        results["baseline: ip netns exec nft add rule"] = bench_baseline(twin, topo, n)
    run.finish("done")
    left = leftovers(twin.state.prefix)
    print(f"\nautomated response on the fob twin ({len(topo.nodes)} nodes), {n} alerts per row, "
          f"block at the source's switch port")
    head = ("path", "n", "median ms", "p95 ms", "max ms")
    rows = [(name, len(r["applied"]), *ms(r["applied"])) for name, r in results.items()]
    rev = results["engine: alert -> block applied"]["reverted"]
    rows.append(("engine: for elapsed -> unblock applied", len(rev), *ms(rev)))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                        for i, (v, w) in enumerate(zip(row, widths))))
    print(f"engine summary: applied {summary['applied']}, reverted {summary['reverted']}, "
          f"refused {summary['refused']}, errors {summary['errors'] or 'none'}")
    print("leftovers after teardown:", "none" if not any(left.values()) else left)


if __name__ == "__main__":
    main()
