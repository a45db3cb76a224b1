"""`cyberrange detect list|run|eval` without a twin: an external pcap, and an evaluation over run
folders made from a crafted capture with a hand-written ledger."""
from __future__ import annotations

import json

import pytest
from helpers import cli

T0 = 1_780_000_000.0
ATT, V, WS, SRV = "10.10.2.66", "10.10.2.20", "10.10.2.30", "10.10.1.10"


def craft_run(folder, scan: bool, baseline_s: float = 5.0):
    """A run folder as a drill leaves it: manifest, store.duckdb and ledger.jsonl. Benign web
    requests every second for 60 s; with ``scan`` a SYN scan of 40 ports at t=30 s."""
    from scapy.all import IP, TCP, Ether, wrpcap

    from cyberrange.store.duckdb_store import DuckDBStore
    from cyberrange.telemetry.pcap import parse_pcap
    pk = []

    def add(t, p):
        p.time = t
        pk.append(p)
    for i in range(60):                                   # benign: a short web session per second
        t, sp = T0 + i, 40000 + i
        for k, (src, dst, a, b, flags) in enumerate([
                (WS, SRV, sp, 80, "S"), (SRV, WS, 80, sp, "SA"), (WS, SRV, sp, 80, "A"),
                (WS, SRV, sp, 80, "FA"), (SRV, WS, 80, sp, "FA"), (WS, SRV, sp, 80, "A")]):
            add(t + k * 0.001, Ether() / IP(src=src, dst=dst) / TCP(sport=a, dport=b, flags=flags))
    ledger = []
    if scan:
        start, flows = T0 + 30, []
        for j, port in enumerate(range(20, 60)):
            t = start + j * 0.01
            add(t, Ether() / IP(src=ATT, dst=V) / TCP(sport=61000, dport=port, flags="S"))
            add(t + 0.001, Ether() / IP(src=V, dst=ATT) / TCP(sport=port, dport=61000, flags="RA"))
            flows.append({"src": ATT, "dst": V, "proto": "tcp", "sport": 61000, "dport": port,
                          "packets": 1, "bytes": 54})
        ledger.append({"run_id": folder.name, "step_id": "scan", "name": "scan",
                       "technique": "T1046", "actor": "ops-maint", "actor_ip": ATT,
                       "targets": [V], "start": start, "end": start + 0.5,
                       "outcome": "succeeded", "packets_sent": 40, "bytes_sent": 2160,
                       "flows": flows, "facts": {}})
    folder.mkdir(parents=True)
    pk.sort(key=lambda p: p.time)
    wrpcap(str(folder / "s.pcap"), pk)
    packets, flows, _ = parse_pcap(str(folder / "s.pcap"), "s1", folder.name)
    with DuckDBStore(folder / "store.duckdb") as store:
        store.write("packets", packets)
        store.write("flows", flows)
    (folder / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ledger))
    (folder / "manifest.json").write_text(json.dumps({
        "run_id": folder.name, "status": "done", "topology": "crafted",
        "playbook": "scan" if scan else None, "kind": "drill" if scan else "benign",
        "baseline_s": baseline_s}))
    return folder


def test_detect_list_shows_every_family():
    r = cli("detect", "list")
    assert r.returncode == 0, r.stderr
    from cyberrange.detect.registry import FAMILIES
    for family in FAMILIES:
        assert family in r.stdout


def test_detect_run_on_an_external_pcap_prints_the_scan(tmp_path):
    run = craft_run(tmp_path / "r", scan=True)
    r = cli("detect", "run", "--pcap", run / "s.pcap", "--baseline", "5", "--json")
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    scans = [a for a in alerts if a["rule.name"] == "vertical-portscan"]
    assert len(scans) == 1 and scans[0]["source.ip"] == ATT
    assert len(scans[0]["cyberrange.flow_ids"]) == 40
    assert not [a for a in alerts if a["source.ip"] == WS and a["rule.name"] != "flow-anomaly"]
    table = cli("detect", "run", "--pcap", run / "s.pcap")
    assert table.returncode == 0 and "vertical-portscan" in table.stdout


@pytest.mark.parametrize("args, words", [
    (["detect", "run"], "either a RUN or --pcap"),
    (["detect", "run", "--pcap", "/nonexistent.pcap"], "no such capture file"),
    (["detect", "run", "--pcap", "tests/data/pcaps/malformed.pcap", "--train-pcap", "x"],
     "no such capture file"),
    (["detect", "eval", "/nonexistent-run"], "no run at"),
])
def test_detect_bad_input_is_one_line_exit_2(args, words):
    r = cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_detect_eval_over_runs_scores_against_the_ledgers(tmp_path):
    craft_run(tmp_path / "runs" / "a-scan", scan=True)
    craft_run(tmp_path / "runs" / "b-benign", scan=False)
    out = tmp_path / "ev.json"
    md = tmp_path / "ev.md"
    r = cli("detect", "eval", tmp_path / "runs", "--json", out, "--markdown", md,
            "--only", "vertical-portscan", "--only", "flow-anomaly", "--only", "syn-flood")
    assert r.returncode == 0, r.stderr
    ev = json.loads(out.read_text())
    assert ev["totals"]["runs"] == 2
    (t1046,) = [t for t in ev["techniques"] if t["technique"] == "T1046"]
    assert t1046["steps"] == 1 and t1046["detected"] == 1 and t1046["recall"] == 1.0
    assert t1046["detected_by"].get("vertical-portscan") == 1
    assert t1046["median_ttd_s"] is not None and t1046["median_ttd_s"] < 1
    det = {d["detector"]: d for d in ev["detectors"]}
    assert det["vertical-portscan"]["true"] == 1 and det["vertical-portscan"]["false"] == 0
    assert det["syn-flood"]["alerts"] == 0
    # benign flows after each run's 5 s baseline: 55 web sessions per run
    assert ev["totals"]["benign_flows"] == 110
    # the flow-scoring learner gets an AUC over all flow rows (40 attack flows in 150)
    assert det["flow-anomaly"]["roc_auc"] is not None
    assert 0.0 <= det["flow-anomaly"]["roc_auc"] <= 1.0
    assert ev["coverage"]["T1046"]["vertical-portscan"] == "1/1"
    text = md.read_text()
    assert "| T1046 |" in text and "vertical-portscan" in text
