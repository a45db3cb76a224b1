"""``cyberrange query``: SQL over a run's store through snake_case views (no twin: a real capture
ingested into a run folder, plus alerts and ledgers written the old and the new way)."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from helpers import ROOT

from cyberrange.attack.ledger import append_record, make_record
from cyberrange.detect.base import Alert, alerts_to_table
from cyberrange.ingest.runs import ingest_pcaps
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.store.views import open_views, snake, view_columns

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
OLD_STEP = {"run_id": None, "step_id": "scan", "name": "scan", "technique": "T1046-connect",
            "actor": "a", "actor_ip": "10.0.0.5", "targets": ["10.0.0.9"], "start": 1.0e9,
            "end": 1.0e9 + 2, "outcome": "succeeded", "packets_sent": 3, "bytes_sent": 180,
            "flows": [{"src": "10.0.0.5", "dst": "10.0.0.9", "proto": "tcp", "sport": 4000,
                       "dport": 22, "packets": 3, "bytes": 180}], "facts": {"open": ["x"]},
            "error": None, "repeat": 0, "skipped_reason": None, "blocked_reason": None,
            "arp_frames": 0}


def run_cli(argv, capsys) -> tuple[int, str, str]:
    from cyberrange.cli.main import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture
def run(tmp_path):
    """A run folder made from a real capture, with two alerts (one as an old run wrote a
    learned detector's: technique "unknown") and an old-format ledger line."""
    run, _, _ = ingest_pcaps([str(ROOT / "tests/data/pcaps/mixed.pcap")], str(tmp_path / "runs"))
    alerts = alerts_to_table([
        Alert(T, T, T, "vertical-portscan", "portscan", "T1046", "10.0.0.5", "10.0.0.9",
              "12 ports", 1.5),
        Alert(T, T, T, "flow-anomaly", "iforest", "T1046", "10.0.0.6", None, "odd", 0.9),
    ], run.id)
    techs = ["unknown" if r == "flow-anomaly" else "T1046"     # as an old run stored them
             for r in alerts.column("rule.name").to_pylist()]
    alerts = alerts.set_column(alerts.schema.get_field_index("threat.technique.id"),
                               alerts.schema.field("threat.technique.id"), [techs])
    with DuckDBStore(run.store_path) as store:
        store.write("alerts", alerts)
    (run.dir / "ledger.jsonl").write_text(json.dumps(dict(OLD_STEP, run_id=run.id)) + "\n")
    return run


def test_snake_names():
    assert snake("@timestamp") == "timestamp"
    assert snake("source.ip") == "source_ip"
    assert snake("cyberrange.tcp_state") == "tcp_state"
    assert snake("threat.technique.id") == "technique_id"
    assert snake("dns.question.name") == "dns_question_name"


def test_views_need_no_quoting_and_read_old_runs(run):
    from cyberrange.attack.ledger import read_ledger
    con = open_views(run.store_path, read_ledger(run.ledger_path))
    views = view_columns(con)
    assert {"flows", "packets", "alerts", "signals", "incidents", "dns", "ledger",
            "ledger_flows"} <= set(views)
    for cols in views.values():                       # plain names only: nothing to quote
        assert all(c.replace("_", "").isalnum() for c, _ in cols), cols
    n_flows = con.execute("SELECT count(*) FROM flows").fetchone()[0]
    with DuckDBStore(run.store_path, read_only=True) as store:
        assert n_flows == store.count("flows", run.id) > 0
    top = con.execute("SELECT source_ip, sum(network_bytes) AS b FROM flows GROUP BY ALL "
                      "ORDER BY b DESC LIMIT 1").fetchone()
    assert top[0] and top[1] > 0
    # the old "unknown" reads as null: technique_id is an ATT&CK id or nothing
    assert sorted(con.execute("SELECT rule_name, technique_id FROM alerts").fetchall()) == [
        ("flow-anomaly", None), ("vertical-portscan", "T1046")]
    # the old ledger line, in ECS terms: the variant apart from the ATT&CK id
    assert con.execute("SELECT step_id, technique_id, technique_variant, source_ip, "
                       "event_outcome, outcome, destination_ip FROM ledger").fetchall() == [
        ("scan", "T1046", "T1046-connect", "10.0.0.5", "success", "succeeded", ["10.0.0.9"])]
    assert con.execute("SELECT destination_port, packets FROM ledger_flows").fetchall() == \
        [(22, 3)]
    con.close()


def test_the_same_views_over_a_new_format_ledger(run):
    from cyberrange.attack.ledger import read_ledger
    run.ledger_path.unlink()
    append_record(run.ledger_path, make_record(**dict(OLD_STEP, run_id=run.id)))
    assert "cyberrange.step.id" in json.loads(run.ledger_path.read_text())
    con = open_views(run.store_path, read_ledger(run.ledger_path))
    assert con.execute("SELECT technique_id, technique_variant, event_start FROM ledger"
                       ).fetchone()[:2] == ("T1046", "T1046-connect")
    con.close()


def test_query_verb_table_json_csv(run, capsys):
    sql = ("SELECT network_transport, count(*) AS flows FROM flows GROUP BY ALL "
           "ORDER BY network_transport")
    runs = str(run.dir.parent)
    code, out, err = run_cli(["query", run.id, sql, "--runs-dir", runs, "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows and set(rows[0]) == {"network_transport", "flows"}
    assert sum(r["flows"] for r in rows) > 0
    code, out, _ = run_cli(["query", str(run.dir), sql, "--csv"], capsys)
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [dict(r, flows=int(r["flows"])) for r in parsed] == rows
    first = "SELECT timestamp, flow_ids FROM alerts ORDER BY rule_name"
    code, out, _ = run_cli(["query", str(run.dir), first, "--json"], capsys)
    got = json.loads(out)
    assert got[0]["timestamp"].startswith("2026-01-01T00:00:00") and got[0]["flow_ids"] == []
    code, out, _ = run_cli(["query", str(run.dir), sql], capsys)
    assert code == 0 and "network_transport" in out and "row" in out
    code, out, _ = run_cli(["query", str(run.dir)], capsys)           # no SQL: the views
    assert code == 0 and "flows: timestamp," in out and "ledger:" in out


@pytest.mark.parametrize("sql, words", [
    ("SELECT nope FROM flows", "query: Binder Error"),
    ("SELEKT 1", "query: Parser Error"),
    ("   ", "the SQL is empty"),
])
def test_query_verb_bad_sql_is_one_line_exit_2(run, capsys, sql, words):
    code, _, err = run_cli(["query", str(run.dir), sql], capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_query_never_writes_the_store(run, capsys):
    before = run.store_path.read_bytes()
    code, _, err = run_cli(["query", str(run.dir), "CREATE TABLE store.main.x AS SELECT 1"],
                           capsys)
    assert code == 2 and "read-only" in err.lower(), err
    assert run.store_path.read_bytes() == before


def test_availability_view_from_the_probe_file(run, capsys):
    sql = ("SELECT thread, count(*) AS probes, count(*) FILTER (WHERE ok) AS answered "
           "FROM availability GROUP BY ALL ORDER BY thread")
    code, out, _ = run_cli(["query", str(run.dir), sql, "--json"], capsys)
    assert code == 0 and json.loads(out) == []            # no probes in the run: empty
    probe = {"thread": "cop", "src": "ws1", "dst": "cop", "dst_ip": "10.0.0.9", "proto": "tcp",
             "port": 443, "latency_ms": 1.5, "reason": None}
    (run.dir / "availability.jsonl").write_text(
        json.dumps(dict(probe, time=1.0e9, ok=True)) + "\n"
        + json.dumps(dict(probe, time=1.0e9 + 5, ok=False, reason="timeout")) + "\n"
        + '{"time": 1000000010, "thread": "co')             # a line still being written
    code, out, _ = run_cli(["query", str(run.dir), sql, "--json"], capsys)
    assert code == 0 and json.loads(out) == [{"thread": "cop", "probes": 2, "answered": 1}]
