"""Benchmark: detector throughput (flow records/s; packet records/s for packet families).

    .venv/bin/python bench/detectors.py [RUN_DIR] [--flows 1000000] [--detectors detectors]

Records are a real drill's (RUN_DIR, default: the largest finished run under runs/corpus or
runs/), repeated back to back in time -- copy k is shifted by k x the run's span and gets its
own flow ids -- until there are ``--flows`` flow records (packets are repeated the same number
of times). Every detector instance of ``detectors/`` runs once over the whole table, trained
first on the run's baseline window when it learns (training time is reported apart).

Named baseline, measured in the same run on the same records: **row loop** -- the cheapest
possible per-record Python detector: ``for row in flows.to_pylist(): counts[row["source.ip"]] += 1``
(what a detector that touches every record in Python costs at least). The table prints each
detector's flows/s, its ratio to the row loop and the goal (rule detectors >= 100k flows/s;
the packet autoencoder ensemble >= 40k packets/s, Kitsune's published Python figure). Families
that read packets are rated on packet records/s; the flow goal applies to them as well.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

GOAL_RULE_FLOWS = 100_000
GOAL_KITNET_PACKETS = 40_000


def pick_run() -> Path:
    runs = [m.parent for base in (ROOT / "runs" / "corpus", ROOT / "runs")
            for m in base.glob("*/manifest.json")
            if json.loads(m.read_text()).get("status") == "done"
            and (m.parent / "store.duckdb").exists()]
    if not runs:
        sys.exit("no finished run found: give RUN_DIR (cyberrange drill run ... first)")
    return max(runs, key=lambda p: (p / "store.duckdb").stat().st_size)


def repeat(table: pa.Table, times: int, span_us: int) -> pa.Table:
    """``table`` repeated ``times`` times, copy k shifted by k*span and with its own flow ids."""
    parts = []
    for k in range(times):
        t = table
        for name in ("@timestamp", "event.start", "event.end"):
            if name in t.schema.names:
                col = t.column(name)
                shifted = pc.cast(pc.add(pc.cast(col, pa.int64()), k * span_us), pa.int64())
                t = t.set_column(t.schema.get_field_index(name), name, shifted.cast(col.type))
        fid = "cyberrange.flow_id"
        if k and fid in t.schema.names:
            col = pc.binary_join_element_wise(t.column(fid), pa.scalar(str(k)), "-")
            t = t.set_column(t.schema.get_field_index(fid), fid, col)
        parts.append(t)
    return pa.concat_tables(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", type=Path)
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--detectors", default=str(ROOT / "detectors"))
    a = ap.parse_args()
    from cyberrange.detect.registry import baseline_window, load_detectors
    from cyberrange.store import open_store
    from cyberrange.telemetry.schema import RECORD_SCHEMAS
    run = a.run or pick_run()
    man = json.loads((run / "manifest.json").read_text())
    with open_store(run / "store.duckdb") as store:
        flows = store.read("flows", man["run_id"], columns=list(RECORD_SCHEMAS["flows"].names))
        packets = store.read("packets", man["run_id"],
                             columns=list(RECORD_SCHEMAS["packets"].names))
    ts = pc.cast(flows.column("@timestamp"), pa.int64())
    span = pc.max(ts).as_py() - pc.min(ts).as_py() + 1_000_000
    times = max(1, -(-a.flows // flows.num_rows))
    train = baseline_window(flows, packets, man.get("baseline_s") or 10)
    big_f = repeat(flows, times, span)
    big_p = repeat(packets, times, span)
    print(f"run {run.name}: {flows.num_rows:,} flows / {packets.num_rows:,} packets, repeated "
          f"{times}x -> {big_f.num_rows:,} flows, {big_p.num_rows:,} packets "
          f"({os.cpu_count()} cores)")

    t0 = time.perf_counter()
    counts: Counter = Counter()
    for row in big_f.to_pylist():
        counts[row["source.ip"]] += 1
    base = big_f.num_rows / (time.perf_counter() - t0)
    print(f"baseline (row loop): {base:,.0f} flows/s\n")
    head = f"{'detector':<22}{'family':<12}{'input':<9}{'train s':>9}{'detect s':>10}" \
           f"{'records/s':>13}{'x row loop':>11}{'goal':>12}{'alerts':>8}"
    print(head)
    print("-" * len(head))
    ok = True
    for det in load_detectors(a.detectors):
        t_train = 0.0
        if det.trainable:
            t0 = time.perf_counter()
            det.fit(train[0], train[1] if det.needs_packets else None)
            t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        alerts = det.detect(big_f, big_p if det.needs_packets else None)
        dt = time.perf_counter() - t0
        if det.needs_packets:
            rate, unit = big_p.num_rows / dt, "packets"
        else:
            rate, unit = big_f.num_rows / dt, "flows"
        goal = GOAL_KITNET_PACKETS if det.family == "kitnet" else \
            None if det.kind == "learned" else GOAL_RULE_FLOWS
        met = goal is None or rate >= goal
        ok &= met
        goal_txt = "stated" if goal is None else \
            f"{'≥' if met else '<'}{goal // 1000}k {'✔' if met else '✘'}"
        print(f"{det.name:<22}{det.family:<12}{unit:<9}{t_train:>9.2f}{dt:>10.2f}"
              f"{rate:>13,.0f}{rate / base:>11.1f}{goal_txt:>12}{len(alerts):>8}")
    print("\nrecords/s: flow records per second, or packet records per second for the families "
          "that read packets (the\nflow goal is applied to their packet rate, a stricter test: "
          "a run has several packets per flow).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
