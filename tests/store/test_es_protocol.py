"""Protocol tests of the Elasticsearch backend.

They run the real ``elasticsearch`` client against ``tests/support/es_fake.py``, a local HTTP endpoint
that answers with the documented Elasticsearch 8 response shapes. They check what the client
sends and how the store reacts to the answers (partial failures, 429s, outages, TLS, auth);
they do NOT show that a real cluster accepts the mappings or ranks the same way: that is
``tests/store/test_es_cluster.py``, which runs when CYBERRANGE_ES_URL is set.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest
from es_fake import FakeES, wait_until
from test_detect import T0, logins, ping_sweep, table, vertical_scan, web_requests

from cyberrange.detect.registry import run_detectors
from cyberrange.errors import UserError
from cyberrange.store import open_store
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.store.es_mappings import KINDS
from cyberrange.store.es_store import (
    ElasticsearchStore,
    EsConfig,
    open_checked,
    push_run,
)
from cyberrange.store.runlogs import STORE_RECORD_SCHEMAS
from cyberrange.telemetry.pcap import parse_pcaps
from cyberrange.telemetry.schema import RECORD_SCHEMAS

SECRET = "c2VjcmV0LWFwaS1rZXktZG8tbm90LXByaW50"


@pytest.fixture
def fake():
    f = FakeES()
    yield f
    f.close()


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch):
    for var in ("CYBERRANGE_ES_API_KEY", "CYBERRANGE_ES_USER", "CYBERRANGE_ES_PASSWORD",
                "CYBERRANGE_ES_CA", "CYBERRANGE_ES_URL"):
        monkeypatch.delenv(var, raising=False)


def es_url(fake, **opts) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"auth": "none", **opts}.items())
    return fake.url.replace("http://", "es://").replace("https://", "ess://") + "?" + q


def make_store(fake, tmp_path, **opts) -> ElasticsearchStore:
    return ElasticsearchStore(es_url(fake, **opts), spool_dir=tmp_path / "spool", backoff_s=0.01)


def pcap_records(run_id="r1"):
    return parse_pcaps([("tests/data/pcaps/mixed.pcap", "s1"),
                        ("tests/data/pcaps/conversation.pcap", "s2")], run_id)[:2]


def bulk_ids(req) -> list[str]:
    return [line["index"]["_id"] for line in req["body"][0::2]]


def bulk_requests(fake):
    return [r for r in fake.requests if r["path"].endswith("/_bulk")]


# ---------------------------------------------------------------- mappings

def _field(props: dict, dotted: str) -> dict:
    node = {"properties": props}
    for p in dotted.split("."):
        node = node["properties"][p]
    return node


def test_protocol_init_sends_ecs_mappings_and_is_idempotent(fake, tmp_path):
    store = make_store(fake, tmp_path)
    report = store.init()
    n_templates = 1 + 2 * len(KINDS)         # settings + a component and an index template each
    assert len(report["installed"]) == n_templates == 17 and not report["unchanged"]
    assert sorted(report["indices_created"]) == sorted(f"cyberrange-{k}" for k in KINDS)
    comps = fake.component_templates
    packets = comps["cyberrange-ecs-packets"]["template"]["mappings"]["properties"]
    flows = comps["cyberrange-ecs-flows"]["template"]["mappings"]["properties"]
    alerts = comps["cyberrange-ecs-alerts"]["template"]["mappings"]["properties"]
    ledger = comps["cyberrange-ecs-ledger"]["template"]["mappings"]["properties"]
    expect = {  # ECS field types (ecs_field_reference)
        "@timestamp": "date", "event.start": "date", "event.end": "date",
        "event.duration": "long", "event.kind": "keyword", "event.dataset": "keyword",
        "source.ip": "ip", "destination.ip": "ip", "source.port": "long",
        "destination.port": "long", "source.bytes": "long", "source.packets": "long",
        "network.transport": "keyword", "network.community_id": "keyword",
        "network.bytes": "long", "observer.name": "keyword", "network.vlan.id": "keyword",
        "dns.question.name": "keyword", "url.path": "wildcard",
        "cyberrange.run_id": "keyword", "cyberrange.iat.mean_us": "double",
    }
    for name, typ in expect.items():
        assert _field(flows, name)["type"] == typ, name
    assert _field(packets, "cyberrange.arp.sender_ip")["type"] == "ip"
    assert _field(packets, "tcp.flags")["type"] == "keyword"
    assert _field(alerts, "message")["type"] == "match_only_text"
    assert _field(alerts, "cyberrange.score")["type"] == "double"
    assert _field(alerts, "cyberrange.flow_ids")["type"] == "keyword"
    assert _field(ledger, "source.ip")["type"] == "ip"                  # ECS names (issue 18)
    assert _field(ledger, "threat.technique.id")["type"] == "keyword"
    assert _field(ledger, "cyberrange.flows.dport")["type"] == "long"
    incidents = comps["cyberrange-ecs-incidents"]["template"]["mappings"]["properties"]
    signals = comps["cyberrange-ecs-signals"]["template"]["mappings"]["properties"]
    assert _field(incidents, "related.ip")["type"] == "ip"          # the incident's entities
    assert _field(incidents, "cyberrange.explanation")["type"] == "match_only_text"
    assert _field(signals, "cyberrange.score")["type"] == "double"
    avail = comps["cyberrange-ecs-availability"]["template"]["mappings"]["properties"]
    links = comps["cyberrange-ecs-link_events"]["template"]["mappings"]["properties"]
    assert _field(avail, "destination.ip")["type"] == "ip"          # the run logs (ECS names)
    assert _field(avail, "event.outcome")["type"] == "keyword"
    assert _field(avail, "cyberrange.latency_ms")["type"] == "double"
    assert _field(avail, "error.message")["type"] == "match_only_text"
    assert _field(links, "cyberrange.link.state")["type"] == "keyword"
    assert _field(links, "event.duration")["type"] == "long"
    assert _field(links, "cyberrange.link.loss_pct")["type"] == "double"
    for kind, props in (("packets", packets), ("flows", flows), ("alerts", alerts),
                        ("signals", signals), ("incidents", incidents),
                        ("availability", avail), ("link_events", links)):
        for f in STORE_RECORD_SCHEMAS[kind]:           # every column has a mapping
            assert "type" in _field(props, f.name), (kind, f.name)
    tmpl = fake.index_templates["cyberrange-flows"]
    assert tmpl["index_patterns"] == ["cyberrange-flows*"]
    assert tmpl["composed_of"] == ["cyberrange-settings", "cyberrange-ecs-flows"]
    puts = len(fake.paths("PUT"))
    again = store.init()
    assert not again["installed"] and not again["indices_created"]
    assert len(again["unchanged"]) == n_templates
    assert len(fake.paths("PUT")) == puts                  # nothing sent the second time


# ---------------------------------------------------------------- bulk

def test_protocol_bulk_partial_failure_retries_only_failed_documents(fake, tmp_path):
    store = make_store(fake, tmp_path, chunk=1000, workers=1)
    flows = table(vertical_scan())                                    # 100 flows
    from cyberrange.store.es_store import table_docs
    ids = [json.loads(a)["index"]["_id"] for a, _ in table_docs("flows", flows, "x")]
    fake.item_faults = {ids[3]: [429], ids[10]: [429, 503], ids[50]: [503], ids[70]: [400]}
    acked = store.write("flows", flows)
    reqs = bulk_requests(fake)
    assert len(reqs) == 3
    assert len(bulk_ids(reqs[0])) == 100
    assert bulk_ids(reqs[1]) == [ids[3], ids[10], ids[50]]           # only the failed ones
    assert bulk_ids(reqs[2]) == [ids[10]]
    assert acked == 99
    st = store.bulk.stats
    assert (st["sent"], st["acknowledged"], st["rejected"], st["retried"]) == (100, 99, 1, 4)
    assert len(fake.docs("cyberrange-flows")) == 99
    rejected = (tmp_path / "spool" / "rejected-flows.ndjson").read_text().splitlines()
    assert json.loads(rejected[0])["index"]["_id"] == ids[70]
    assert "document_parsing_exception" in rejected[2]
    assert store.bulk.spooled_count() == 0                           # rejected is not spooled


def test_protocol_bulk_chunks_workers_and_throughput(fake, tmp_path):
    packets, flows = pcap_records()
    many = pa.concat_tables([packets] * 25)          # 4,600 packet records, many identical
    store = make_store(fake, tmp_path, chunk=200, workers=4)
    t0 = time.perf_counter()
    acked = store.write("packets", many)
    dt = time.perf_counter() - t0
    print(f"\nbulk to the fake endpoint: {many.num_rows} docs in {dt:.2f} s = "
          f"{many.num_rows / dt:,.0f} docs/s (200/chunk, 4 workers)")
    reqs = bulk_requests(fake)
    assert acked == many.num_rows
    assert len(reqs) == -(-many.num_rows // 200)
    assert max(len(bulk_ids(r)) for r in reqs) == 200
    # identical records stay distinct documents; writing the same table again adds nothing
    assert len(fake.docs("cyberrange-packets")) == many.num_rows
    store.write("packets", many)
    assert store.count("packets", "r1") == many.num_rows


def test_protocol_outage_spools_and_replays_zero_loss_zero_duplicates(fake, tmp_path):
    packets, _ = pcap_records()
    data = pa.concat_tables([packets] * 10)                  # 1,840 records
    store = make_store(fake, tmp_path, chunk=100, workers=2, retries=2)
    fake.down_after_bulks = 4
    fake.apply_then_drop = True      # the 4th bulk is indexed, but its answer never arrives
    store.write("packets", data)
    assert wait_until(lambda: fake._server is None)
    st = store.bulk.stats
    assert st["spooled"] > 0 and st["acknowledged"] + st["spooled"] == data.num_rows
    spooled = store.bulk.spooled_count()
    assert spooled == st["spooled"]
    stored_during = len(fake.docs("cyberrange-packets"))
    assert stored_during > st["acknowledged"]        # the lost answer: stored AND spooled
    fake.up()
    out = store.replay()
    assert out["left"] == 0 and store.bulk.spooled_count() == 0
    assert store.bulk.stats["replayed"] == spooled
    docs = fake.docs("cyberrange-packets")
    assert len(docs) == data.num_rows                       # zero loss, zero duplicates
    assert store.count("packets", "r1") == data.num_rows
    back = store.read("packets", "r1")
    assert back.num_rows == data.num_rows
    assert sorted(back.column("network.bytes").to_pylist()) == \
        sorted(data.column("network.bytes").to_pylist())


def test_protocol_outage_next_write_replays_and_push_run_reports(fake, tmp_path):
    packets, flows = pcap_records()
    store = make_store(fake, tmp_path, chunk=50, workers=1, retries=1)
    fake.down()
    section = push_run(store, "r1", packets, flows, None, None)
    assert section["zero_loss"] is False
    assert section["spooled"] == packets.num_rows + flows.num_rows == section["spool_outstanding"]
    assert "spooled" in section["verdict"]
    fake.up()
    section = push_run(store, "r1", packets, flows, None,
                       [{"step_id": "s1", "start": T0, "end": T0 + 1, "outcome": "succeeded",
                         "actor_ip": "10.0.0.1", "targets": ["10.0.0.2"], "flows": []}])
    assert section["replayed"] == packets.num_rows + flows.num_rows
    assert section["spool_outstanding"] == 0 and section["zero_loss"] is True
    assert section["stored"] == {"packets": packets.num_rows, "flows": flows.num_rows,
                                 "ledger": 1}
    assert len(fake.docs("cyberrange-flows")) == flows.num_rows


# ---------------------------------------------------------------- reading

def test_protocol_read_pages_with_pit_and_equals_duckdb(fake, tmp_path):
    packets, flows = pcap_records()
    store = make_store(fake, tmp_path, page=37)
    local = DuckDBStore(":memory:")
    for kind, t in (("packets", packets), ("flows", flows)):
        store.write(kind, t)
        local.write(kind, t)
    other, _ = pcap_records("r2")
    store.write("packets", other)                          # another run in the same index
    for kind in ("packets", "flows"):
        cols = list(RECORD_SCHEMAS[kind].names)
        a, b = store.read(kind, "r1", columns=cols), local.read(kind, "r1", columns=cols)
        assert a.schema.equals(b.schema)
        assert a.sort_by([("cyberrange.flow_id", "ascending"), ("@timestamp", "ascending")]) \
            .equals(b.sort_by([("cyberrange.flow_id", "ascending"), ("@timestamp", "ascending")]))
        assert a.column("@timestamp").to_pylist() == b.column("@timestamp").to_pylist()
    searches = [r for r in fake.requests if r["path"] == "/_search"]
    assert len(searches) > packets.num_rows // 37
    assert all("pit" in r["body"] and r["body"]["sort"][0] == {"@timestamp": {"order": "asc"}}
               for r in searches)
    assert any("search_after" in r["body"] for r in searches)
    assert fake.pits == {}                                  # every PIT closed
    assert store.count("packets") == 2 * packets.num_rows
    assert store.delete("packets", "r2") == packets.num_rows
    assert store.count("packets", "r2") == 0 and store.count("packets", "r1") == packets.num_rows
    assert store.read("alerts", "nope").num_rows == 0      # missing index: empty, same schema


def shipped_detectors():
    """The detectors of detectors/*.yaml. Files that do not load (a family being written right
    now by someone else) are left out; portscan and bruteforce must be there."""
    from cyberrange.detect.registry import load_detector_file
    dets = []
    for path in sorted(Path("detectors").glob("*.yaml")):
        try:
            dets += load_detector_file(path)
        except UserError:
            continue
    assert {"portscan", "bruteforce"} <= {d.family for d in dets}
    return dets


def test_protocol_same_alerts_as_duckdb(fake, tmp_path):
    packets, flows = pcap_records()
    synthetic = table(vertical_scan() + ping_sweep(T0 + 30) + logins(T0 + 60, 20, 0.5)
                      + web_requests())
    synthetic = pa.Table.from_arrays(
        [synthetic.column(n) if n in synthetic.column_names
         else pa.nulls(synthetic.num_rows, flows.schema.field(n).type) for n in flows.column_names],
        schema=flows.schema)
    flows = pa.concat_tables([flows, synthetic])
    dets = shipped_detectors()
    es = make_store(fake, tmp_path, page=64)
    local = DuckDBStore(tmp_path / "e.duckdb")
    results = []
    for store in (local, es):
        store.write("packets", packets)
        store.write("flows", flows)
        out = run_detectors(store, "r1", dets, baseline_s=10)   # learners train too
        results.append(out.sort_by("cyberrange.alert_id"))
    assert results[0].num_rows >= 3                        # scan, sweep, brute force at least
    assert results[0].equals(results[1])
    stored = es.read("alerts", "r1")
    assert stored.schema.equals(results[0].schema)
    assert sorted(stored.column("cyberrange.alert_id").to_pylist()) == \
        sorted(results[0].column("cyberrange.alert_id").to_pylist())
    run_detectors(es, "r1", dets)                          # again: replaced, not doubled
    assert es.count("alerts", "r1") == results[0].num_rows


# ---------------------------------------------------------------- config, auth, TLS, CLI

def test_protocol_credentials_sent_and_never_shown(fake, tmp_path, monkeypatch, capsys):
    fake.require_auth = ("apikey", SECRET)
    monkeypatch.setenv("CYBERRANGE_ES_API_KEY", SECRET)
    url = fake.url.replace("http://", "es://")
    store = open_checked(url, spool_dir=tmp_path)
    assert fake.requests[-1]["headers"]["authorization"] == f"ApiKey {SECRET}"
    assert fake.requests[-1]["headers"]["user-agent"].startswith("elasticsearch-py")
    assert SECRET not in repr(store) and SECRET not in repr(store.config)
    monkeypatch.setenv("CYBERRANGE_ES_API_KEY", "wrong-" + SECRET)
    with pytest.raises(UserError) as e:
        open_checked(url)
    assert "refused the credentials (HTTP 401" in str(e.value)
    assert SECRET not in str(e.value)
    monkeypatch.delenv("CYBERRANGE_ES_API_KEY")
    monkeypatch.setenv("CYBERRANGE_ES_USER", "elastic")
    monkeypatch.setenv("CYBERRANGE_ES_PASSWORD", SECRET)
    fake.require_auth = ("basic", "elastic", SECRET)
    open_checked(url)
    assert fake.requests[-1]["headers"]["authorization"].startswith("Basic ")
    code, err = run_cli(["store", "ping", "--store", url], capsys)
    assert code == 0 and SECRET not in err


def run_cli(argv, capsys) -> tuple[int, str]:
    from cyberrange.cli.main import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    # errors: exactly one line on stderr (a progress display may leave a blank line on stdout)
    return e.value.code, out.err + out.out.strip("\n")


@pytest.mark.parametrize("url, env, words", [
    ("es://", {}, "malformed Elasticsearch URL: no host"),
    ("es://host:99999", {}, "malformed Elasticsearch URL"),
    ("es://h:9200/some/path", {}, "unexpected path"),
    ("elastic://h:9200", {}, "unknown Elasticsearch URL scheme"),
    ("es://elastic:pw@h:9200", {}, "credentials in the Elasticsearch URL are refused"),
    ("es://h:9200?workers=x", {}, "workers='x' is not a number"),
    ("es://h:9200?shards=2", {}, "unknown Elasticsearch option 'shards'"),
    ("es://h:9200", {}, "no Elasticsearch credentials"),
    ("es://h:9200", {"CYBERRANGE_ES_USER": "elastic"}, "CYBERRANGE_ES_PASSWORD is not set"),
    ("ess://h:9200?ca=/nonexistent/ca.pem", {"CYBERRANGE_ES_API_KEY": "k"}, "CA file not found"),
])
def test_protocol_bad_input_is_one_line_exit_2(url, env, words, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, err = run_cli(["store", "ping", "--store", url], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert "Traceback" not in err


def test_protocol_tls_self_signed_refused_then_trusted_with_ca(tmp_path, capsys, monkeypatch):
    fake = FakeES(tls=True)
    try:
        url = fake.url.replace("https://", "ess://") + "?auth=none"
        code, err = run_cli(["store", "ping", "--store", url], capsys)
        assert code == 2 and err.count("\n") == 1
        assert "TLS certificate of Elasticsearch at https://127.0.0.1" in err
        assert "CYBERRANGE_ES_CA" in err
        assert fake.requests == []                     # refused in the handshake
        code, out = run_cli(["store", "ping", "--store", url + f"&ca={fake.cert}"], capsys)
        assert code == 0 and "TLS verified" in out
        monkeypatch.setenv("CYBERRANGE_ES_CA", fake.cert)
        code, out = run_cli(["store", "init", "--store", url], capsys)
        assert code == 0 and f"{1 + 2 * len(KINDS)} installed" in out
    finally:
        fake.close()


def test_protocol_drill_with_bad_store_stops_before_anything_is_built(tmp_path, capsys, fake):
    runs = tmp_path / "runs"
    dets = tmp_path / "detectors"
    dets.mkdir()
    shutil.copy("detectors/portscan.yaml", dets)
    base = ["drill", "run", "topologies/fob.yaml", "attack_playbooks/recon_bruteforce.yaml",
            "--runs-dir", str(runs), "--detectors", str(dets)]
    for store, words in ((fake.url.replace("http", "es"), "no Elasticsearch credentials"),
                         ("es://bad host:92", "malformed Elasticsearch URL"),
                         ("es://127.0.0.1:1?auth=none", "connection refused")):
        code, err = run_cli(base + ["--store", store], capsys)
        assert code == 2, err
        assert words in err and err.count("\n") == 1, err
        assert not runs.exists() or not any(runs.iterdir())      # no run folder, no twin


def test_protocol_store_push_exports_a_run_idempotently(fake, tmp_path, capsys):
    from cyberrange.run import Run
    packets, flows = pcap_records("placeholder")
    run = Run.create(tmp_path / "runs", "push", {})
    packets = packets.set_column(packets.schema.get_field_index("cyberrange.run_id"),
                                 "cyberrange.run_id", pa.array([run.id] * packets.num_rows))
    flows = flows.set_column(flows.schema.get_field_index("cyberrange.run_id"),
                             "cyberrange.run_id", pa.array([run.id] * flows.num_rows))
    from cyberrange.detect.base import Alert, alerts_to_table, us_to_dt
    at = us_to_dt(int(T0 * 1e6))
    signal = Alert(at, at, at, "login-bruteforce", "bruteforce", "T1110.001", "10.0.0.5",
                   "10.0.0.9", "3 guesses", 0.3, {"feature": "attempts", "value": 3},
                   kind="signal", dataset="cyberrange.signal")
    with DuckDBStore(run.store_path) as local:
        local.write("packets", packets)
        local.write("flows", flows)
        local.write("signals", alerts_to_table([signal], run.id))   # store push sends them too
    (run.dir / "ledger.jsonl").write_text(json.dumps(
        {"run_id": run.id, "step_id": "a", "start": T0, "end": T0 + 2, "outcome": "succeeded",
         "targets": [], "flows": [], "facts": {}}) + "\n")
    argv = ["store", "push", run.id, "--runs-dir", str(tmp_path / "runs"), "--json",
            "--store", es_url(fake)]
    for _ in range(2):
        code, out = run_cli(argv, capsys)
        assert code == 0, out
        section = json.loads(out[out.index("{"):])
        assert section["zero_loss"] and section["stored"]["packets"] == packets.num_rows
    assert len(fake.docs("cyberrange-packets")) == packets.num_rows
    assert len(fake.docs("cyberrange-ledger")) == 1
    (sig,) = fake.docs("cyberrange-signals").values()
    assert sig["rule"]["name"] == "login-bruteforce" and sig["event"]["kind"] == "signal"
    led = next(iter(fake.docs("cyberrange-ledger").values()))
    assert led["cyberrange"]["run_id"] == run.id and led["@timestamp"].endswith("Z")
    assert led["cyberrange"]["step"]["id"] == "a" and led["event"]["outcome"] == "success"


def test_protocol_open_store_dispatch_and_config_file(tmp_path, fake):
    cfg = tmp_path / "es.yaml"
    cfg.write_text(f"elasticsearch:\n  url: {fake.url}\n  prefix: team-a\n  auth: none\n"
                   f"  workers: 3\n")
    store = open_store(str(cfg))
    assert isinstance(store, ElasticsearchStore)
    assert store.config.prefix == "team-a" and store.config.workers == 3
    assert store.index("flows") == "team-a-flows"
    cfg.write_text(f"elasticsearch:\n  url: {fake.url}\n  api_key: nope\n")
    with pytest.raises(UserError, match="does not belong in a config file"):
        EsConfig.parse(str(cfg))
    assert isinstance(open_store(tmp_path / "x.duckdb"), DuckDBStore)


def test_protocol_analyse_mirrors_to_es_with_reconciliation_section(fake, tmp_path):
    from cyberrange.drill import analyse
    from cyberrange.run import Run
    run = Run.create(tmp_path / "runs", "mirror", {})
    (run.dir / "pcaps").mkdir()
    shutil.copy("tests/data/pcaps/conversation.pcap", run.dir / "pcaps" / "s1.pcap")
    from test_run_logs import write_run_logs
    write_run_logs(run.dir)                               # 5 mission probes, 3 link changes
    es = open_checked(es_url(fake))
    card = analyse(run, shipped_detectors(), es=es)
    sec = card["reconciliation"]["es"]
    n_packets = card["run"]["telemetry"]["packets"]
    assert sec["zero_loss"] is True and sec["spooled"] == 0, sec
    assert sec["stored"]["availability"] == 5 and sec["stored"]["link_events"] == 3
    assert sec["stored"]["packets"] == n_packets == len(fake.docs("cyberrange-packets"))
    assert sec["acknowledged"] == sec["sent"]
    assert json.loads(run.scorecard_path.read_text())["reconciliation"]["es"]["zero_loss"]
    from rich.console import Console

    from cyberrange.report.terminal import print_scorecard
    console = Console(record=True, width=160)
    print_scorecard(card, console)                        # the drill's terminal report says so
    text = console.export_text()
    assert "every record acknowledged and counted once" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("packets"))
    assert row.split()[1:3] == [str(n_packets), str(n_packets)]     # records, acknowledged


def test_protocol_run_logs_round_trip_and_store_push_from_the_run_files(fake, tmp_path,
                                                                         capsys):
    """Mission probes and link events: written, read back as DuckDB reads them, nested ECS
    documents; ``store push`` of a run whose store predates them sends the run's files."""
    from test_run_logs import write_run_logs

    from cyberrange.blue.run_logs import run_log_tables
    from cyberrange.run import Run
    from cyberrange.store.runlogs import store_run_logs
    write_run_logs(tmp_path)
    tables = run_log_tables(tmp_path, "r1")
    es, local = make_store(fake, tmp_path, page=2), DuckDBStore(":memory:")
    for s in (es, local):
        assert store_run_logs(s, tables, "r1") == {"availability": 5, "link_events": 3}
    for kind in tables:
        a, b = es.read(kind, "r1"), local.read(kind, "r1")
        assert a.schema.equals(b.schema) and a.equals(b), kind
    docs = fake.docs("cyberrange-link_events").values()
    jam = next(d for d in docs if d["cyberrange"]["link"]["state"] == "jammed")
    assert jam["cyberrange"]["link"]["name"] == "sat" and jam["event"]["duration"] == 30 * 10**9
    probe = next(iter(fake.docs("cyberrange-availability").values()))
    assert probe["cyberrange"]["thread"] == "cop" and probe["destination"]["port"] == 443
    assert es.delete("link_events", "r1") == 3 and es.count("availability", "r1") == 5
    run = Run.create(tmp_path / "runs", "push-logs", {})
    DuckDBStore(run.store_path).close()                   # analysed before the run logs
    write_run_logs(run.dir)
    argv = ["store", "push", run.id, "--runs-dir", str(tmp_path / "runs"), "--json",
            "--store", es_url(fake, prefix="team")]
    for _ in range(2):                                    # again: replaced, not doubled
        code, out = run_cli(argv, capsys)
        assert code == 0, out
        section = json.loads(out[out.index("{"):])
        assert section["stored"]["availability"] == 5 and section["stored"]["link_events"] == 3
    assert len(fake.docs("team-availability")) == 5 and len(fake.docs("team-link_events")) == 3


def test_get_reads_a_dotted_path():
    # the Kibana objects are checked in tests/store/test_kibana_objects.py
    from cyberrange.store.es_store import _get
    assert _get({"a": {"b": 1}}, "a.b") == 1
