"""A lab's traffic and alerts so far: the twin's captures into a DuckDB store, SQL, detectors.

``snapshot`` copies every sensor's complete pcap records so far (``telemetry.files.join_pcaps``:
a record still being written is left out) and ingests them as ``drill run``'s analysis does
(``ingest.load.load_captures`` into ``store.open_store``), replacing the previous snapshot in
``<lab run>/query.duckdb``. ``query`` runs read-only SQL on it; ``alerts`` runs detectors
(``detect.registry``) over it. The ledger is never read here: alerts are what a defender sees.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from cyberrange.errors import UserError

STORE = "query.duckdb"


def snapshot(lab_dir: Path, twin_dir: Path) -> dict:
    """Ingest the twin's captures so far into ``lab_dir/query.duckdb`` (replaced whole)."""
    from cyberrange.ingest.load import load_captures
    from cyberrange.store import open_store
    from cyberrange.telemetry.files import capture_files, join_pcaps
    t0 = time.monotonic()
    files = capture_files(Path(twin_dir) / "pcaps")
    run_id = Path(twin_dir).name
    out = Path(lab_dir) / STORE
    tmp = out.with_name(f".{STORE}.{os.getpid()}.tmp")       # two terminals may query at once
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="cr-labq-") as td:
        items = []
        for name, paths in files.items():
            joined = Path(td) / f"{name}.pcap"
            paths = [p for p in paths if p.stat().st_size >= 24]   # a header at least
            for upto in (len(paths), len(paths) - 1):   # the newest file may be half-made
                try:
                    if upto > 0:
                        join_pcaps(paths[:upto], joined)
                        items.append((str(joined), name))
                    break
                except ValueError:
                    continue
        if not items:
            raise UserError(f"no captures yet in {twin_dir}/pcaps (the sensors write every "
                            f"few seconds; try again)")
        loaded = load_captures(items, run_id)
        with open_store(tmp) as store:
            loaded.store_into(store)
    tmp.replace(out)
    return {"packets": loaded.packets.num_rows, "flows": loaded.flows.num_rows,
            "sensors": len(items), "seconds": round(time.monotonic() - t0, 2),
            "store": str(out), "run_id": run_id}


def query(lab_dir: Path, sql: str, limit: int = 200) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` read-only on the lab's snapshot; (column names, rows)."""
    import duckdb
    path = Path(lab_dir) / STORE
    if not path.is_file():
        raise UserError("no snapshot of the traffic yet (lab query takes one)")
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(limit)
    except duckdb.Error as e:
        raise UserError(f"SQL: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    return cols, rows


def baseline_until(twin_manifest: dict, lab) -> float | None:
    """The end of the benign-only start of the lab (before its first playbook), epoch s."""
    ready = twin_manifest.get("lab_ready")
    if not ready or not lab.playbooks:
        return None
    first = min(p.at for p in lab.playbooks)
    return ready + first if first > 0 else None


def alerts(lab_dir: Path, detectors, until: float | None = None):
    """Run ``detectors`` over the snapshot; the alerts table (not stored)."""
    from cyberrange.detect.registry import run_detectors
    from cyberrange.store import open_store
    path = Path(lab_dir) / STORE
    with open_store(path) as store:
        run_id = _run_id(store)
        return run_detectors(store, run_id, detectors, write=False, baseline_until=until)


def _run_id(store) -> str:
    rows = store.con.execute('SELECT DISTINCT "cyberrange.run_id" FROM flows LIMIT 1').fetchall()
    return rows[0][0] if rows else ""


def records(lab_dir: Path):
    """``(flows, alerts-less)``: the snapshot's flows table (for scoring a trainee detector)."""
    from cyberrange.store import open_store
    with open_store(Path(lab_dir) / STORE) as store:
        run_id = _run_id(store)
        return run_id, store.read("flows", run_id)
