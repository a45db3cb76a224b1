"""Benchmark: records into the DuckDB event store, Arrow ingestion vs ``executemany`` (same process,
same records).

    .venv/bin/python bench/store_ingest.py                   # 500k packet records from a capture
    .venv/bin/python bench/store_ingest.py --records 1000000 --repeat 5

The records are real telemetry output: a generated capture (bench/telemetry.py) is parsed once
and its packet table repeated up to ``--records`` rows (all record columns, core + added).

* **ours**: ``DuckDBStore.write("packets", table)`` into a fresh file (Arrow registered as a view,
  one ``INSERT ... SELECT``), also for the flow table.
* **baseline**: ``con.executemany("INSERT ... VALUES (?, ...)", rows)`` of the same rows into the
  same table layout (``--baseline-records`` rows by default, it is slow; the ratio compares
  records per second).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

from cyberrange.store.duckdb_store import DuckDBStore, duckdb_type, quote  # noqa: E402
from cyberrange.telemetry.pcap import parse_pcap  # noqa: E402
from cyberrange.telemetry.schema import PACKET_RECORD_SCHEMA  # noqa: E402


def records(n: int, pcap: str | None):
    tmp = None
    if pcap is None:
        from telemetry import make_capture
        tmp = tempfile.mkdtemp(prefix="bench-store-")
        pcap = make_capture(os.path.join(tmp, "b.pcap"), min(n, 200_000))
    packets, flows, _ = parse_pcap(pcap, "bench", "bench")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    reps = -(-n // packets.num_rows)
    table = pa.concat_tables([packets] * reps).slice(0, n).combine_chunks()
    return table, flows


def run_ours(table: pa.Table, kind: str) -> float:
    d = tempfile.mkdtemp(prefix="bench-store-")
    store = DuckDBStore(os.path.join(d, "s.duckdb"))
    t0 = time.perf_counter()
    store.write(kind, table)
    dt = time.perf_counter() - t0
    assert store.count(kind) == table.num_rows
    store.close()
    shutil.rmtree(d, ignore_errors=True)
    return dt


def run_executemany(table: pa.Table) -> float:
    d = tempfile.mkdtemp(prefix="bench-store-")
    con = duckdb.connect(os.path.join(d, "s.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    schema = PACKET_RECORD_SCHEMA
    cols = ", ".join(f"{quote(f.name)} {duckdb_type(f.type)}" for f in schema)
    con.execute(f"CREATE TABLE packet_records ({cols})")
    rows = [tuple(r.values()) for r in table.to_pylist()]        # not timed: the rows exist
    marks = ", ".join("?" for _ in schema)
    t0 = time.perf_counter()
    con.executemany(f"INSERT INTO packet_records VALUES ({marks})", rows)
    dt = time.perf_counter() - t0
    assert con.execute("SELECT count(*) FROM packet_records").fetchone()[0] == len(rows)
    con.close()
    shutil.rmtree(d, ignore_errors=True)
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--baseline-records", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pcap")
    args = ap.parse_args(argv)
    table, flows = records(args.records, args.pcap)
    print(f"records: {table.num_rows} packet records ({len(table.schema)} columns), "
          f"{flows.num_rows} flow records")
    times = [run_ours(table, "packets") for _ in range(args.repeat)]
    best, med = min(times), statistics.median(times)
    rate = table.num_rows / best
    print(f"{'Arrow -> DuckDB (DuckDBStore.write)':<40} best {best:.3f} s  median {med:.3f} s  "
          f"{rate:,.0f} records/s (best), {table.num_rows / med:,.0f} (median)")
    ft = [run_ours(flows, "flows") for _ in range(args.repeat)]
    print(f"{'flows (' + str(flows.num_rows) + ' records)':<40} best {min(ft):.3f} s  "
          f"{flows.num_rows / min(ft):,.0f} records/s")
    small = table.slice(0, args.baseline_records)
    bt = run_executemany(small)
    brate = small.num_rows / bt
    print(f"{'executemany (' + str(small.num_rows) + ' records)':<40} {bt:.3f} s  "
          f"{brate:,.0f} records/s")
    print()
    print(f"ingest rate: {rate:,.0f} records/s (target 500,000): "
          f"{'ok' if rate >= 500_000 else 'BELOW TARGET'}")
    print(f"ratio vs executemany: {rate / brate:.0f}x")


if __name__ == "__main__":
    main()
