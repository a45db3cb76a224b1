"""``EventStore.delete`` on both backends (DuckDB real, Elasticsearch through the protocol fake):
one run and one kind go, everything else stays; and the one caller that replaces a run's records
(``load_captures(..., replace=True)``, behind ``detect run --pcap --store``) relies on it."""
from __future__ import annotations

import pyarrow as pa
import pytest

from es_fake import FakeES
from test_store import alert_rows, packet_rows

from cyberrange.store.base import EventStore
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.store.es_store import ElasticsearchStore
from cyberrange.ingest.load import load_captures

MIXED = "tests/data/pcaps/mixed.pcap"


@pytest.fixture(params=["duckdb", "elasticsearch"])
def store(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        s = DuckDBStore(tmp_path / "e.duckdb")
        yield s
        s.close()
        return
    for var in ("CYBERRANGE_ES_API_KEY", "CYBERRANGE_ES_USER", "CYBERRANGE_ES_PASSWORD",
                "CYBERRANGE_ES_CA", "CYBERRANGE_ES_URL"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeES()
    url = fake.url.replace("http://", "es://") + "?auth=none"
    s = ElasticsearchStore(url, spool_dir=tmp_path / "spool", backoff_s=0.01)
    yield s
    s.close()
    fake.close()


def test_delete_removes_one_run_of_one_kind(store):
    store.write("packets", packet_rows(5, "r1"))
    store.write("packets", packet_rows(3, "r2"))
    store.write("alerts", alert_rows("r1"))
    assert store.delete("packets", "r1") == 5
    assert store.count("packets", "r1") == 0
    assert store.count("packets", "r2") == 3                 # the other run stays
    assert store.count("alerts", "r1") == 1                  # the other kind stays
    assert store.delete("packets", "r1") == 0                # nothing left: 0, no error
    assert store.delete("flows", "never-written") == 0
    with pytest.raises(ValueError):
        store.delete("nonsense", "r1")


def test_replacing_a_runs_records_does_not_double_them(store):
    first = load_captures([(MIXED, "s1")], "pcap-mixed", store)
    store.write("alerts", alert_rows("pcap-mixed"))
    store.write("alerts", alert_rows("other"))
    again = load_captures([(MIXED, "s1")], "pcap-mixed", store, replace=True)
    assert again.packets.num_rows == first.packets.num_rows > 0
    assert store.count("packets", "pcap-mixed") == first.packets.num_rows
    assert store.count("flows", "pcap-mixed") == first.flows.num_rows
    assert store.count("alerts", "pcap-mixed") == 0          # made from the records replaced
    assert store.count("alerts", "other") == 1


def test_delete_is_part_of_the_interface():
    class NoDelete(EventStore):
        def write(self, kind: str, table: pa.Table) -> int:
            return 0

        def read(self, kind, run_id=None, columns=None):
            return pa.table({})

        def count(self, kind, run_id=None):
            return 0

    with pytest.raises(TypeError, match="delete"):
        NoDelete()
