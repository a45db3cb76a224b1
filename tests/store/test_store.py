"""DuckDB event store: round trips, persistence, dotted names, bulk ingest, open_store."""
from __future__ import annotations

import pyarrow as pa
import pytest

from cyberrange.errors import UserError
from cyberrange.store import open_store
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.telemetry.schema import ALERT_SCHEMA, FLOW_SCHEMA, PACKET_SCHEMA

T0_US = 1_750_000_000_000_000


def packet_rows(n: int, run_id: str = "r1", observer: str = "s1", t0: int = T0_US) -> pa.Table:
    ts = pa.array([t0 + (n - i) * 1000 for i in range(n)], pa.int64())   # reverse time order
    cols = {
        "@timestamp": ts.cast(PACKET_SCHEMA.field("@timestamp").type),
        "event.kind": ["event"] * n,
        "event.dataset": ["cyberrange.packet"] * n,
        "observer.name": [observer] * n,
        "source.mac": ["02:00:00:00:00:01"] * n,
        "destination.mac": ["02:00:00:00:00:02"] * n,
        "source.ip": [f"10.0.{i % 200}.{i % 250 + 1}" for i in range(n)],
        "destination.ip": ["10.1.0.1"] * n,
        "source.port": pa.array([1024 + i % 60000 for i in range(n)], pa.int32()),
        "destination.port": pa.array([80] * n, pa.int32()),
        "network.transport": ["tcp"] * n,
        "network.type": ["ipv4"] * n,
        "network.bytes": pa.array([60 + i % 1400 for i in range(n)], pa.int64()),
        "network.community_id": ["1:abc"] * n,
        "tcp.flags": ["S"] * n,
        "cyberrange.flow_id": [f"{i:016x}" for i in range(n)],
        "cyberrange.run_id": [run_id] * n,
    }
    return pa.table(cols, schema=PACKET_SCHEMA)


def alert_rows(run_id="r1") -> pa.Table:
    return pa.Table.from_pylist([{
        "@timestamp": pa.scalar(T0_US, pa.int64()).cast(ALERT_SCHEMA.field("@timestamp").type).as_py(),
        "event.kind": "alert", "event.dataset": "cyberrange.alert",
        "event.start": None, "event.end": None, "rule.name": "vertical-portscan",
        "rule.category": "portscan", "threat.technique.id": "T1046", "source.ip": "10.0.0.1",
        "destination.ip": None, "message": "m", "cyberrange.score": 0.5,
        "cyberrange.evidence": "{}", "cyberrange.flow_ids": ["a", "b"],
        "cyberrange.alert_id": "x", "cyberrange.run_id": run_id}], schema=ALERT_SCHEMA)


def test_round_trip_ordered_and_counted(tmp_path):
    db = tmp_path / "events.duckdb"
    with DuckDBStore(db) as store:
        t = packet_rows(100)
        assert store.write("packets", t) == 100
        assert store.write("packets", packet_rows(10, run_id="r2")) == 10
        assert store.count("packets") == 110
        assert store.count("packets", "r1") == 100
        back = store.read("packets", "r1")
        assert back.schema.equals(PACKET_SCHEMA)
        ts = back.column("@timestamp").to_pylist()
        assert ts == sorted(ts)
        assert sorted(back.column("cyberrange.flow_id").to_pylist()) == \
            sorted(t.column("cyberrange.flow_id").to_pylist())
        some = store.read("packets", "r2", columns=["source.ip", "@timestamp"])
        assert some.column_names == ["source.ip", "@timestamp"] and some.num_rows == 10


def test_reopen_persists(tmp_path):
    db = tmp_path / "events.duckdb"
    store = open_store(db)
    store.write("packets", packet_rows(5))
    store.write("alerts", alert_rows())
    store.close()
    store = open_store(f"duckdb://{db}")
    assert store.count("packets") == 5
    alerts = store.read("alerts")
    assert alerts.schema.equals(ALERT_SCHEMA)
    assert alerts.column("cyberrange.flow_ids").to_pylist() == [["a", "b"]]
    store.close()


def test_dotted_column_names_preserved(tmp_path):
    with DuckDBStore(tmp_path / "e.duckdb") as store:
        cols = store.query("SELECT * FROM flows LIMIT 0").column_names
        assert cols == FLOW_SCHEMA.names
        store.write("packets", packet_rows(3))
        out = store.query('SELECT "source.ip", "tcp.flags" FROM packets WHERE "destination.port" = ?',
                          [80])
        assert out.column_names == ["source.ip", "tcp.flags"] and out.num_rows == 3


def test_write_rejects_wrong_columns(tmp_path):
    with DuckDBStore(tmp_path / "e.duckdb") as store:
        with pytest.raises(ValueError):
            store.write("packets", pa.table({"source.ip": ["1.2.3.4"]}))
        with pytest.raises(ValueError):
            store.write("nonsense", packet_rows(1))


def test_delete_run(tmp_path):
    with DuckDBStore(tmp_path / "e.duckdb") as store:
        store.write("alerts", alert_rows("r1"))
        store.write("alerts", alert_rows("r2"))
        assert store.delete("alerts", "r1") == 1
        assert store.count("alerts") == 1


def test_bulk_ingest_200k(tmp_path):
    with DuckDBStore(tmp_path / "big.duckdb") as store:
        assert store.write("packets", packet_rows(200_000)) == 200_000
        assert store.count("packets", "r1") == 200_000
        total = store.query('SELECT sum("network.bytes") AS b FROM packets').column("b")[0].as_py()
        assert total == sum(60 + i % 1400 for i in range(200_000))


def test_open_store_schemes(tmp_path, monkeypatch):
    for var in ("CYBERRANGE_ES_API_KEY", "CYBERRANGE_ES_USER", "CYBERRANGE_ES_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="no Elasticsearch credentials"):   # es:// is the ES backend
        open_store("es://localhost:9200")
    with pytest.raises(UserError):
        open_store("ftp://x")
    s = open_store(str(tmp_path / "x.duckdb"))
    assert isinstance(s, DuckDBStore)
    s.close()
