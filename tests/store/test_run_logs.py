"""Run logs in the store (``cyberrange/store/runlogs.py``): mission probes (``availability``) and
DDIL link changes (``link_events``). No twin: a run folder written by hand (a real capture, a
probe file, a link log) is analysed as a drill's end does it, then queried with
``cyberrange query``; the detectors and the incident correlator run over a store that holds
both kinds and must never read them (a link event's reason can name the attack step)."""
from __future__ import annotations

import ast
import json
import re
import shutil
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from helpers import ROOT

from cyberrange.blue.run_logs import link_events_table, run_log_tables
from cyberrange.errors import UserError
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.store.runlogs import (
    AVAILABILITY_SCHEMA,
    LINK_EVENT_SCHEMA,
    read_link_events,
    store_run_logs,
)

T0 = 1_800_000_000.0
JAM = "step jam-sat (CR-J0001 jam the sat link)"


def probe(dt, thread="cop", ok=True, **kw):
    return {"time": T0 + dt, "thread": thread, "src": "ops-ws1", "dst": "cop-srv",
            "dst_ip": "10.0.1.10", "proto": "tcp", "port": 443, "ok": ok,
            "latency_ms": 3.5 if ok else None, "reason": None if ok else "timeout", **kw}


LINKS = [
    {"t": T0 + 5, "zone": "sat", "state": "jammed", "values": {}, "reason": f"{JAM}: jammed",
     "ports": [3, 4], "notes": []},
    {"t": T0 + 10, "zone": "los", "state": "degraded", "values": {"loss": 10, "delay": 800},
     "reason": "degrade", "ports": [7], "notes": ["delay not emulated here (no netem)"]},
    {"t": T0 + 35, "zone": "sat", "state": "up", "values": {}, "reason": f"{JAM}: jam ended",
     "ports": [3, 4], "notes": []},
]


def write_run_logs(run_dir, probes=None, links=LINKS):
    probes = probes if probes is not None else [probe(0), probe(2), probe(8, ok=False),
                                                probe(9, thread="web", ok=False), probe(40)]
    (run_dir / "availability.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "logs" / "links.jsonl").write_text("".join(json.dumps(x) + "\n" for x in links))


def test_the_scorers_probe_rows_have_the_store_columns_in_order(tmp_path):
    """``score/availability.write_table`` inserts by position into the table the store makes:
    the rows the scorer builds from a run's probes must have the store's columns, in order."""
    from cyberrange.score.availability import availability_table, read_probes
    write_run_logs(tmp_path)
    rows = availability_table(read_probes(tmp_path / "availability.jsonl"), "r1")
    assert rows.num_rows == 5 and rows.schema.names == AVAILABILITY_SCHEMA.names
    assert [f.type for f in rows.schema] == [f.type for f in AVAILABILITY_SCHEMA]


def test_link_events_table_durations_values_and_reason(tmp_path):
    t = link_events_table(LINKS, "r1")
    assert t.schema.equals(LINK_EVENT_SCHEMA) and t.num_rows == 3
    rows = t.to_pylist()
    assert [r["cyberrange.link.name"] for r in rows] == ["sat", "los", "sat"]
    assert rows[0]["event.duration"] == 30 * 10**9                # until sat's next change
    assert rows[0]["event.end"] == datetime.fromtimestamp(T0 + 35, timezone.utc)
    assert rows[1]["event.end"] is None and rows[1]["event.duration"] is None   # los: last one
    assert rows[1]["cyberrange.link.loss_pct"] == 10.0
    assert rows[1]["cyberrange.link.delay_ms"] == 800.0
    assert rows[1]["cyberrange.link.jitter_ms"] is None
    assert rows[1]["cyberrange.notes"] == ["delay not emulated here (no netem)"]
    assert rows[0]["cyberrange.reason"] == f"{JAM}: jammed"
    # the defender's monitoring: a jam is a link that passes nothing; the undone delay is not seen
    assert [r["cyberrange.link.observed_state"] for r in rows] == ["down", "degraded", "up"]
    only_delay = dict(LINKS[1], values={"delay": 800})     # its one value not emulated here
    assert link_events_table([only_delay], "r1").column(
        "cyberrange.link.observed_state").to_pylist() == ["up"]
    assert {r["cyberrange.run_id"] for r in rows} == {"r1"}


@pytest.mark.parametrize("line,msg", [
    ("[1, 2]", "not a JSON object"), ("{not json", "not a JSON object"),
    ('{"t": "now", "zone": "sat", "state": "up"}', "'t' must be a number"),
    ('{"t": 1, "zone": 3, "state": "up"}', "'zone' must be a string"),
    ('{"t": 1, "zone": "sat"}', "'state' must be one of up, down, jammed, degraded"),
    ('{"t": 1, "zone": "sat", "state": "fried"}', "'state' must be one of"),
    ('{"t": 1, "zone": "sat", "state": "up", "values": [1]}', "'values' must be an object"),
])
def test_a_bad_link_log_line_names_file_line_and_key(tmp_path, line, msg):
    path = tmp_path / "links.jsonl"
    path.write_text(json.dumps(LINKS[0]) + "\n" + line + "\n" + json.dumps(LINKS[1]) + "\n")
    with pytest.raises(UserError, match=rf"links.jsonl:2: {msg}"):
        read_link_events(path)


def test_a_link_log_cut_short_loses_only_its_last_line(tmp_path):
    path = tmp_path / "links.jsonl"
    path.write_text(json.dumps(LINKS[0]) + "\n" + json.dumps(LINKS[1])[:20])
    assert len(read_link_events(path)) == 1


def test_duckdb_round_trip_replace_and_old_files(tmp_path):
    write_run_logs(tmp_path)
    tables = run_log_tables(tmp_path, "r1")
    assert run_log_tables(tmp_path / "nothing", "r1") == {"availability": None,
                                                          "link_events": None}
    db = tmp_path / "s.duckdb"
    with DuckDBStore(db) as store:
        for _ in range(2):                                   # a re-analysis replaces the run
            assert store_run_logs(store, tables, "r1") == {"availability": 5, "link_events": 3}
        store_run_logs(store, run_log_tables(tmp_path, "r2"), "r2")
        assert store.count("availability", "r1") == 5 and store.count("link_events") == 6
        back = store.read("link_events", "r1")
        assert back.schema.equals(LINK_EVENT_SCHEMA)
        assert back.sort_by("@timestamp").equals(tables["link_events"].sort_by("@timestamp"))
        probes = store.read("availability", "r1")
        assert probes.column("event.outcome").to_pylist().count("failure") == 2
        assert store.delete("link_events", "r2") == 3 and store.count("link_events") == 3
    # a store written before the run logs existed, opened read-only: the kinds read as empty
    old = tmp_path / "old.duckdb"
    DuckDBStore(old).close()
    import duckdb
    con = duckdb.connect(str(old))
    con.execute("DROP TABLE link_events")
    con.close()
    with DuckDBStore(old, read_only=True) as store:
        assert not store.has("link_events") and store.has("availability")
        assert store.read_or_empty("link_events", "r1").schema.equals(LINK_EVENT_SCHEMA)
    from cyberrange.store.views import open_views
    con = open_views(old)                                    # and the view is there, empty
    assert con.execute("SELECT count(*), count(link_observed_state) FROM link_events"
                       ).fetchall() == [(0, 0)]
    con.close()


def test_analysed_run_folder_is_queried_from_the_store(tmp_path, capsys):
    """A handwritten run folder through the drill's end (``drill.analyse``, no twin), then
    ``cyberrange query`` over the store: the probes come from the store even once the probe
    file is gone, the link events with their durations."""
    from cyberrange.cli.main import main
    from cyberrange.drill import analyse
    from cyberrange.run import Run
    run = Run.create(tmp_path / "runs", "logs", {})
    (run.dir / "pcaps").mkdir()
    shutil.copy(ROOT / "tests/data/pcaps/conversation.pcap", run.dir / "pcaps" / "s1.pcap")
    write_run_logs(run.dir)
    card = analyse(run, [])
    assert card["availability"]["threads"]["cop"]["probes"] == 4
    with DuckDBStore(run.store_path, read_only=True) as store:
        assert store.count("availability", run.id) == 5
        assert store.count("link_events", run.id) == 3
    (run.dir / "availability.jsonl").unlink()

    def query(sql):
        with pytest.raises(SystemExit) as e:
            main(["query", "--runs-dir", str(tmp_path / "runs"), "--json", "--", run.id, sql])
        out = capsys.readouterr()
        assert e.value.code == 0, out.err
        return json.loads(out.out)
    rows = query("SELECT thread, count(*) FILTER (WHERE ok) AS ok, count(*) AS probes, "
                 "min(timestamp) FILTER (WHERE NOT ok) AS first_failure, any_value(run_id) "
                 "AS run FROM availability GROUP BY thread ORDER BY thread")
    assert [(r["thread"], r["ok"], r["probes"]) for r in rows] == [("cop", 3, 4), ("web", 0, 1)]
    assert rows[0]["first_failure"].startswith("2027-01-15T08:00:08") and rows[0]["run"] == run.id
    links = query("SELECT link_name, link_state, event_duration / 1e9 AS seconds, "
                  "link_loss_pct, reason FROM link_events ORDER BY timestamp")
    assert [(r["link_name"], r["link_state"], r["seconds"]) for r in links] == [
        ("sat", "jammed", 30.0), ("los", "degraded", None), ("sat", "up", None)]
    assert links[1]["link_loss_pct"] == 10.0 and links[0]["reason"].startswith("step jam-sat")
    page = (ROOT / "docs" / "hunting-queries.md").read_text()
    sql = re.search(r"^### 14\..*?```sql\n(.*?)^```", page, re.DOTALL | re.MULTILINE).group(1)
    cost = query(sql)                                    # the page's outage-cost query
    assert [(r["link_name"], r["link_state"], r["seconds"], r["thread"], r["answered"],
             r["probes"]) for r in cost] == [("sat", "jammed", 30.0, "cop", 0, 1),
                                              ("sat", "jammed", 30.0, "web", 0, 1),
                                              ("los", "degraded", None, "cop", 1, 1)]
    listed = capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["query", run.id, "--runs-dir", str(tmp_path / "runs")])
    listing = capsys.readouterr().out
    assert "link_events: timestamp, event_end, event_duration, link_name, link_state, " \
        "link_observed_state" in listing
    assert listed.err == ""


# ---------------------------------------------------------------- ground truth stays out

class SpyStore(DuckDBStore):
    """A DuckDB store that notes every kind read and every SQL text run."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.kinds_read, self.sql = set(), []

    def read(self, kind, run_id=None, columns=None):
        self.kinds_read.add(kind)
        return super().read(kind, run_id, columns)

    def query(self, sql, params=None):
        self.sql.append(sql)
        return super().query(sql, params)


def test_detectors_and_correlator_never_read_the_run_logs(tmp_path):
    from test_es_protocol import pcap_records, shipped_detectors

    from cyberrange.detect.incidents import run_incidents
    from cyberrange.detect.registry import run_detectors
    write_run_logs(tmp_path)
    packets, flows = pcap_records("r1")
    with SpyStore(tmp_path / "s.duckdb") as store:
        store.write("packets", packets)
        store.write("flows", flows)
        store_run_logs(store, run_log_tables(tmp_path, "r1"), "r1")
        run_detectors(store, "r1", shipped_detectors(), baseline_s=5)
        run_incidents(store, "r1")
        assert store.kinds_read and store.kinds_read <= {"flows", "packets", "alerts", "signals"}
        assert not any("link_events" in s or "availability" in s for s in store.sql)


def test_no_detector_module_names_the_run_logs():
    """Detector code names neither kind nor imports the module that reads the run folder."""
    for path in sorted((ROOT / "cyberrange" / "detect").glob("*.py")):
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                assert "link_events" not in n.value and "links.jsonl" not in n.value, path.name
                assert "availability" not in n.value, path.name
            if isinstance(n, ast.ImportFrom):
                assert "runlogs" not in (n.module or ""), path.name


# ---------------------------------------------------------------- documents vs mappings

def _mapping_at(props: dict, path: list[str]) -> dict | None:
    node = {"properties": props}
    for part in path:
        if node.get("enabled") is False:                  # kept, not indexed: all below it
            return node
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return None
    return node


TYPES = {bool: {"boolean"}, int: {"long", "date", "keyword"}, float: {"double", "date"},
         str: {"keyword", "ip", "date", "match_only_text", "wildcard"}}


def unmapped(doc: dict, props: dict, prefix=()) -> list[str]:
    """Every leaf of a document whose field has no mapping or a mapping of another type."""
    out = []
    for key, value in doc.items():
        path = (*prefix, *(key.split(".") if key != "@timestamp" else [key]))
        m = _mapping_at(props, list(path))
        if m is not None and m.get("enabled") is False:
            continue
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, dict):
                out += unmapped(v, props, path) if m is not None and "properties" in m \
                    else [".".join(path)]
            elif v is not None and (m is None or m.get("type") not in TYPES[type(v)]):
                out.append(".".join(path))
    return sorted(set(out))


def _sample(name: str, t: pa.DataType):
    if pa.types.is_list(t):
        return [_sample(name, t.value_type)]
    if pa.types.is_timestamp(t):
        return datetime.fromtimestamp(T0, timezone.utc)
    if pa.types.is_string(t):
        return "10.0.0.1" if name.endswith(("ip", "_ip")) else "x"
    return {pa.int32(): 1, pa.int64(): 1, pa.float64(): 1.5, pa.bool_(): True}[t]


def test_every_field_a_document_carries_is_mapped():
    """Documents as the backend sends them (every column filled; a ledger record with every
    key) against the index templates: the next field a writer adds without a mapping fails
    here (``blocked_reason`` and ``arp_frames`` once went unmapped)."""
    from cyberrange.attack.ledger import RECORD_KEYS, make_record
    from cyberrange.store.es_mappings import KINDS, kind_mappings
    from cyberrange.store.es_store import ledger_docs, table_docs
    from cyberrange.store.runlogs import STORE_RECORD_SCHEMAS
    for kind in KINDS:
        props = kind_mappings(kind)["properties"]
        if kind == "ledger":
            rec = make_record(
                run_id="r1", step_id="s", name="n", technique="T1046", actor="a",
                actor_ip="10.0.0.5", actor_mac="02:00:00:00:00:05", targets=["10.0.0.9"],
                start=T0, end=T0 + 1, outcome="blocked", error="e", repeat=1,
                skipped_reason="s", blocked_reason="firewall", arp_frames=2,
                facts={"open": [22], "deep": {"x": 1}},
                flows=[{"src": "10.0.0.5", "dst": "10.0.0.9", "proto": "tcp", "sport": 1,
                        "dport": 22, "packets": 1, "bytes": 60}])
            assert set(RECORD_KEYS) <= set(rec)
            docs = ledger_docs([rec], "r1", "i")
        else:
            schema = STORE_RECORD_SCHEMAS[kind]
            table = pa.Table.from_pylist([{f.name: _sample(f.name, f.type) for f in schema}],
                                         schema=schema)
            docs = table_docs(kind, table, "i")
        doc = json.loads(docs[0][1])
        assert unmapped(doc, props) == [], kind
    # the check is not vacuous: a field without a mapping, or of another type, is caught
    props = kind_mappings("ledger")["properties"]
    assert unmapped({"cyberrange": {"blocked_reason": "x", "new_field": 1},
                     "source": {"ip": 3}, "cyberrange.facts": {"any": 1}}, props) == [
        "cyberrange.new_field", "source.ip"]
