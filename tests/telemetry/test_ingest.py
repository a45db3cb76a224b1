"""``cyberrange ingest``: a capture becomes a run that detectors and scoring can use; the store
keeps the added record fields and serves the ARP bindings."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from helpers import ROOT

from cyberrange.cli.main import _register, cli
from cyberrange.run import Run
from cyberrange.store import open_store
from cyberrange.telemetry.pcap import parse_pcap
from cyberrange.telemetry.schema import FLOW_SCHEMA, PACKET_SCHEMA

DATA = ROOT / "tests" / "data" / "pcaps"


@pytest.fixture(scope="module")
def runner():
    _register()
    return CliRunner()


def test_ingest_then_score(tmp_path, runner):
    runs = tmp_path / "runs"
    res = runner.invoke(cli, ["ingest", str(DATA / "mixed.pcap"), "--runs-dir", str(runs),
                              "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    run = Run.open(summary["run_id"], str(runs))
    assert (run.dir / "pcaps" / "mixed.pcap").is_file()
    assert run.manifest["kind"] == "ingest"
    _, flows, stats = parse_pcap(str(DATA / "mixed.pcap"), "mixed", "x")
    assert summary["packets"] == stats["packets"] and summary["flows"] == flows.num_rows
    assert summary["top_talkers"] and summary["skipped"] == {}
    with open_store(run.store_path) as store:
        assert store.count("flows", run.id) == flows.num_rows
        # added fields are stored, the core view is unchanged
        assert store.query("SELECT * FROM flows LIMIT 0").column_names == FLOW_SCHEMA.names
        assert store.query("SELECT * FROM packets LIMIT 0").column_names == PACKET_SCHEMA.names
        dns = store.read("flows", run.id, columns=["dns.question.name", "dns.response_code"])
        assert "NXDOMAIN" in dns.column("dns.response_code").to_pylist()
        mb = store.query('SELECT "cyberrange.modbus.function_codes" AS c FROM flow_records '
                         'WHERE "destination.port" = 502').column("c").to_pylist()
        assert mb and all(c == [3, 16] for c in mb)
        arp = store.query("SELECT * FROM arp_bindings ORDER BY \"source.ip\"").to_pylist()
        assert arp and all(r["source.mac"] for r in arp)
    # detectors and scoring on the run, without a twin and without a ledger
    res = runner.invoke(cli, ["drill", "score", run.id, "--runs-dir", str(runs),
                              "--detectors", str(ROOT / "detectors")])
    assert res.exit_code == 0, res.output
    card = json.loads(run.scorecard_path.read_text())
    assert card["steps"] == []
    assert card["flows"]["total"] == flows.num_rows and card["flows"]["attack"] == 0
    assert "total" in card["alerts"]
    assert card["run"]["telemetry"]["flows"] == flows.num_rows


def test_ingest_text_summary_and_errors(tmp_path, runner):
    runs = tmp_path / "runs"
    res = runner.invoke(cli, ["ingest", str(DATA / "malformed.pcap"), "--runs-dir", str(runs),
                              "--observer", "span-1", "--copy"])
    assert res.exit_code == 0, res.output
    assert "truncated-ethernet" in res.output and "caplen-exceeds-length" in res.output
    run = Run.open("latest", str(runs))
    assert (run.dir / "pcaps" / "span-1.pcap").is_file()
    assert run.manifest["telemetry"]["parser"]["skipped"] == {
        "truncated-ethernet": 1, "truncated-ip": 1, "caplen-exceeds-length": 1,
        "truncated-record": 1}
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture")
    res = runner.invoke(cli, ["ingest", str(bad), "--runs-dir", str(runs)])
    assert res.exit_code != 0
    res = runner.invoke(cli, ["ingest", str(tmp_path / "missing.pcap"), "--runs-dir", str(runs)])
    assert res.exit_code != 0


def test_ingest_exit_codes_via_main(tmp_path):
    from cyberrange.cli.main import main
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"nope nope")
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert e.value.code == 2


def test_pcapng_keeps_its_suffix(tmp_path):
    from cyberrange.ingest import ingest_pcaps
    from test_telemetry_corpus import GOOD, T0, pcapng_bytes
    ng = tmp_path / "cap.pcapng"
    ng.write_bytes(pcapng_bytes([(1, None)], [(0, T0 * 1_000_000, GOOD)]))
    run, stats, summary = ingest_pcaps([str(ng)], str(tmp_path / "runs"))
    assert (run.dir / "pcaps" / "cap.pcapng").is_file() and summary["packets"] == 1


def test_old_store_files_still_open(tmp_path):
    """A store made before the added fields (plain packets/flows tables) opens and takes writes."""
    import duckdb

    from cyberrange.store.duckdb_store import duckdb_type, quote
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    for kind, schema in (("packets", PACKET_SCHEMA), ("flows", FLOW_SCHEMA)):
        cols = ", ".join(f"{quote(f.name)} {duckdb_type(f.type)}" for f in schema)
        con.execute(f"CREATE TABLE {kind} ({cols})")
    con.close()
    packets, flows, _ = parse_pcap(str(DATA / "mixed.pcap"), "s", "r")
    with open_store(db) as store:
        assert store.write("flows", flows) == flows.num_rows
        assert store.read("flows", "r").schema.equals(FLOW_SCHEMA)
    shutil.rmtree(tmp_path / "none", ignore_errors=True)
