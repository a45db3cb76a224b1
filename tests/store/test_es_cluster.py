"""Real-cluster tests of the Elasticsearch backend: they run when CYBERRANGE_ES_URL names a
cluster (e.g. ``docker compose up -d`` from the repo root, then
``CYBERRANGE_ES_URL='es://localhost:9200?auth=none'``), and are skipped, with the reason shown,
otherwise. Credentials come from the usual environment variables.

Each test works under its own index prefix and removes its indices and templates afterwards.
"""
from __future__ import annotations

import os
import secrets

import pyarrow as pa
import pytest

from cyberrange.store.es_mappings import KINDS

URL = os.environ.get("CYBERRANGE_ES_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="real-cluster suite: set CYBERRANGE_ES_URL (see compose.yaml) to run it; "
                    "the protocol tests (tests/store/test_es_protocol.py) ran against the fake endpoint")


@pytest.fixture
def store(tmp_path):
    from cyberrange.store.es_store import open_checked
    prefix = f"cyberrange-test-{secrets.token_hex(3)}"
    sep = "&" if "?" in URL else "?"
    s = open_checked(f"{URL}{sep}prefix={prefix}&page=100", spool_dir=tmp_path / "spool")
    s.init()
    yield s
    c = s.client
    c.options(ignore_status=404).indices.delete(index=f"{prefix}-*")
    for kind in KINDS:
        c.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-{kind}")
    for name in ["settings"] + [f"ecs-{k}" for k in KINDS]:
        c.options(ignore_status=404).cluster.delete_component_template(name=f"{prefix}-{name}")
    c.close()


def test_cluster_mappings_are_applied_as_ecs_types(store):
    m = store.client.indices.get_mapping(index=store.index("flows"))
    props = next(iter(m.body.values()))["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    assert props["destination"]["properties"]["port"]["type"] == "long"
    assert props["@timestamp"]["type"] == "date"
    assert store.init()["installed"] == []                 # idempotent on a real cluster


def test_cluster_roundtrip_and_same_alerts_as_duckdb(store):
    from test_es_protocol import pcap_records, shipped_detectors
    from test_detect import T0, logins, table, vertical_scan

    from cyberrange.detect.registry import run_detectors
    from cyberrange.store.duckdb_store import DuckDBStore
    from cyberrange.telemetry.schema import RECORD_SCHEMAS
    run_id = f"cluster-{secrets.token_hex(3)}"
    packets, flows = pcap_records(run_id)
    syn = table(vertical_scan() + logins(T0 + 60, 20, 0.5))
    syn = syn.set_column(syn.schema.get_field_index("cyberrange.run_id"), "cyberrange.run_id",
                         pa.array([run_id] * syn.num_rows))
    flows = pa.concat_tables([flows, pa.Table.from_arrays(
        [syn.column(n) if n in syn.column_names else pa.nulls(syn.num_rows, f.type)
         for n, f in zip(flows.column_names, flows.schema)], schema=flows.schema)])
    local = DuckDBStore(":memory:")
    for s in (store, local):
        s.write("packets", packets)
        s.write("flows", flows)
    cols = list(RECORD_SCHEMAS["flows"].names)
    a = store.read("flows", run_id, columns=cols)
    assert a.num_rows == flows.num_rows and a.schema.equals(local.read("flows", run_id,
                                                                       columns=cols).schema)
    dets = shipped_detectors()
    es_alerts = run_detectors(store, run_id, dets).sort_by("cyberrange.alert_id")
    db_alerts = run_detectors(local, run_id, dets).sort_by("cyberrange.alert_id")
    assert es_alerts.num_rows >= 2 and es_alerts.equals(db_alerts)
    store.write("packets", packets)                        # again: same ids, no duplicates
    assert store.count("packets", run_id) == packets.num_rows
    assert store.delete("packets", run_id) == packets.num_rows


def test_cluster_run_logs_mapped_round_trip_like_duckdb(store, tmp_path):
    """Mission probes and link events on a real cluster: ECS types applied, read back equal to
    DuckDB's, written twice stored once."""
    from test_run_logs import write_run_logs

    from cyberrange.store.duckdb_store import DuckDBStore
    from cyberrange.store.runlogs import run_log_tables, store_run_logs
    m = store.client.indices.get_mapping(index=store.index("availability"))
    props = next(iter(m.body.values()))["mappings"]["properties"]
    assert props["destination"]["properties"]["ip"]["type"] == "ip"
    assert props["error"]["properties"]["message"]["type"] == "match_only_text"
    m = store.client.indices.get_mapping(index=store.index("link_events"))
    link = next(iter(m.body.values()))["mappings"]["properties"]["cyberrange"]["properties"]
    assert link["link"]["properties"]["state"]["type"] == "keyword"
    run_id = f"cluster-{secrets.token_hex(3)}"
    write_run_logs(tmp_path)
    tables = run_log_tables(tmp_path, run_id)
    local = DuckDBStore(":memory:")
    for s in (store, local, store):
        store_run_logs(s, tables, run_id)
    for kind, t in tables.items():
        assert store.count(kind, run_id) == t.num_rows
        assert store.read(kind, run_id).equals(local.read(kind, run_id)), kind
