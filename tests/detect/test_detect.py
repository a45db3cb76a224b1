"""Detectors over synthetic flows, YAML loading errors, run_detectors through the store."""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from cyberrange.detect.base import alerts_to_table
from cyberrange.detect.bruteforce import BruteForceDetector
from cyberrange.detect.portscan import PortScanDetector
from cyberrange.detect.registry import load_detector_file, load_detectors, run_detectors
from cyberrange.errors import UserError
from cyberrange.store.duckdb_store import DuckDBStore
from cyberrange.telemetry.schema import ALERT_SCHEMA, FLOW_SCHEMA

T0 = 1_750_000_000.0
ATTACKER, VICTIM, WS = "10.10.2.66", "10.10.2.20", "10.10.2.30"
_seq = iter(range(10**9))


def flow(t, src, dst, dport, transport="tcp", state="S0", flags="S", sport=None, packets=1,
         duration=0.0, observer="s1", run_id="r1"):
    n = next(_seq)
    sport = sport if sport is not None else (40000 + n % 20000)
    fid = hashlib.sha1(f"{observer}|{n}".encode()).hexdigest()[:16]
    us = int(round(t * 1e6))
    return {
        "@timestamp": us, "event.kind": "event", "event.category": "network",
        "event.type": "connection", "event.dataset": "cyberrange.flow",
        "event.start": us, "event.end": us + int(duration * 1e6),
        "event.duration": int(duration * 1e9), "observer.name": observer,
        "source.ip": src, "source.port": sport, "source.packets": packets, "source.bytes": 60 * packets,
        "destination.ip": dst, "destination.port": dport, "destination.packets": 1,
        "destination.bytes": 60, "network.transport": transport, "network.packets": packets + 1,
        "network.bytes": 60 * (packets + 1), "network.community_id": f"1:{fid}",
        "cyberrange.flow_id": fid,
        "cyberrange.tcp_state": state if transport == "tcp" else None,
        "cyberrange.tcp_flags": flags if transport == "tcp" else None,
        "cyberrange.run_id": run_id,
    }


def table(rows) -> pa.Table:
    if not rows:
        return FLOW_SCHEMA.empty_table()
    cols = {}
    for f in FLOW_SCHEMA:
        vals = [r[f.name] for r in rows]
        if pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array(vals, pa.int64()).cast(f.type)
        else:
            cols[f.name] = pa.array(vals, f.type)
    return pa.table(cols, schema=FLOW_SCHEMA)


def vertical_scan(t0=T0, ports=range(1, 101), rate=400.0):
    out = []
    for i, p in enumerate(ports):
        state, flags = (("RSTO", "SR") if p in (22, 80) else ("REJ", "S"))
        out.append(flow(t0 + i / rate, ATTACKER, VICTIM, p, state=state, flags=flags, packets=2))
    return out


def ping_sweep(t0=T0, hosts=20):
    return [flow(t0 + i * 0.05, ATTACKER, f"10.10.2.{100 + i}", 0, transport="icmp",
                 sport=8, packets=1) for i in range(hosts)]


def logins(t0, count, every, src=ATTACKER, dst=VICTIM, port=22, duration=0.3, packets=12):
    return [flow(t0 + i * every, src, dst, port, state="SF", flags="SAFP", packets=packets,
                 duration=duration) for i in range(count)]


def web_requests(t0=T0, count=30):
    return [flow(t0 + i * 0.5, WS, "10.10.1.10", 443, state="SF", flags="SAFP", packets=15,
                 duration=0.2) for i in range(count)]


VERTICAL = PortScanDetector("vertical-portscan", mode="ports", window=10, threshold=12,
                            transports=["tcp", "udp"])
HORIZONTAL = PortScanDetector("horizontal-sweep", mode="hosts", window=10, threshold=6,
                              transports=["icmp", "tcp"])
BRUTE = BruteForceDetector("login-bruteforce")


def run_all(rows):
    t = table(rows)
    return [a for d in (VERTICAL, HORIZONTAL, BRUTE) for a in d.detect(t, None)]


def test_vertical_scan_one_alert_with_all_flows():
    rows = vertical_scan()
    alerts = VERTICAL.detect(table(rows), None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.source_ip == ATTACKER and a.destination_ip == VICTIM
    assert a.technique == "T1046" and a.rule_name == "vertical-portscan"
    assert sorted(a.flow_ids) == sorted(r["cyberrange.flow_id"] for r in rows)
    # the threshold is crossed by the 12th distinct port
    assert a.timestamp.timestamp() == pytest.approx(T0 + 11 / 400.0, abs=1e-6)
    assert a.start.timestamp() == pytest.approx(T0)
    assert a.end.timestamp() == pytest.approx(T0 + 99 / 400.0, abs=1e-6)
    assert a.evidence["feature"] == "distinct_dst_ports" and a.evidence["value"] == 100
    assert a.evidence["threshold"] == 12 and a.evidence["window_s"] == 10
    assert ATTACKER in a.message and "100" in a.message
    assert 0 < a.score <= 1


def test_two_scans_far_apart_are_two_episodes():
    rows = vertical_scan(T0) + vertical_scan(T0 + 120)
    alerts = VERTICAL.detect(table(rows), None)
    assert len(alerts) == 2
    assert len({a.alert_id for a in alerts}) == 2


def test_completed_connections_are_not_probes():
    rows = [flow(T0 + i * 0.1, WS, VICTIM, 1000 + i, state="SF", flags="SAFP", packets=8)
            for i in range(40)]
    assert VERTICAL.detect(table(rows), None) == []


def test_ping_sweep_horizontal_alert():
    rows = ping_sweep()
    alerts = HORIZONTAL.detect(table(rows), None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1018" and a.source_ip == ATTACKER and a.destination_ip is None
    assert len(a.flow_ids) == 20
    assert a.timestamp.timestamp() == pytest.approx(T0 + 5 * 0.05, abs=1e-6)
    assert VERTICAL.detect(table(rows), None) == []       # ICMP has no ports


def test_echo_replies_do_not_count_as_sweep():
    rows = [flow(T0 + i * 0.05, f"10.10.2.{100 + i}", ATTACKER, 0, transport="icmp", sport=0)
            for i in range(20)]
    assert HORIZONTAL.detect(table(rows), None) == []


def test_failed_login_burst_bruteforce_alert():
    rows = logins(T0, 20, 0.5, duration=0.4, packets=10)     # 20 attempts in 10 s
    alerts = BRUTE.detect(table(rows), None)
    assert len(alerts) == 1
    a = alerts[0]
    assert a.technique == "T1110.001" and a.rule_category == "bruteforce"
    assert (a.source_ip, a.destination_ip) == (ATTACKER, VICTIM)
    assert len(a.flow_ids) == 20
    assert a.timestamp.timestamp() == pytest.approx(T0 + 7 * 0.5)
    assert a.evidence["feature"] == "short_sessions" and a.evidence["value"] >= 8


def test_bruteforce_counts_a_connection_seen_by_two_sensors_once():
    base = logins(T0, 5, 0.5)
    dup = [dict(r, **{"observer.name": "s2", "cyberrange.flow_id": r["cyberrange.flow_id"] + "x"})
           for r in base]
    assert BRUTE.detect(table(base + dup), None) == []       # 5 attempts, not 10


def test_benign_traffic_raises_nothing():
    rows = logins(T0, 24, 5.0, src=WS)                      # a login every 5 s for 2 minutes
    rows += web_requests(T0)                                 # 30 web requests
    rows += [flow(T0 + i, WS, "10.10.1.53", 53, transport="udp", sport=5353) for i in range(30)]
    assert run_all(rows) == []


def test_syn_scan_of_login_port_is_not_a_login():
    rows = [flow(T0 + i * 0.1, ATTACKER, VICTIM, 22, state="RSTO", flags="SR", packets=2)
            for i in range(20)]
    assert BRUTE.detect(table(rows), None) == []


def test_long_interactive_sessions_are_not_guesses():
    rows = logins(T0, 20, 0.5, duration=60.0, packets=500)
    assert BRUTE.detect(table(rows), None) == []


def test_alerts_to_table_schema():
    alerts = VERTICAL.detect(table(vertical_scan()), None)
    t = alerts_to_table(alerts, "r1")
    assert t.schema.equals(ALERT_SCHEMA)
    row = t.to_pylist()[0]
    assert row["event.kind"] == "alert" and row["cyberrange.run_id"] == "r1"
    assert json.loads(row["cyberrange.evidence"])["feature"] == "distinct_dst_ports"
    first = row["cyberrange.flow_ids"][0]
    assert row["cyberrange.alert_id"] == hashlib.sha1(
        f"vertical-portscan|{ATTACKER}|{first}".encode()).hexdigest()


# ---------------------------------------------------------------- YAML


def test_shipped_detector_files_load():
    dets = load_detectors("detectors")
    names = {d.name for d in dets}
    assert {"vertical-portscan", "horizontal-sweep", "login-bruteforce"} <= names


def _yaml(tmp_path, text):
    d = tmp_path / "detectors"
    d.mkdir(exist_ok=True)
    p = d / "x.yaml"
    p.write_text(text)
    return p


def test_unknown_family_names_file_and_line(tmp_path):
    p = _yaml(tmp_path, "detectors:\n  - name: a\n    family: portscann\n    settings: {}\n")
    with pytest.raises(UserError) as e:
        load_detectors(p.parent)
    assert e.value.file == str(p) and e.value.line == 3
    assert str(e.value).startswith(f"{p}:3:")
    assert "portscann" in str(e.value) and "did you mean 'portscan'" in str(e.value)


def test_unknown_setting_names_file_and_line(tmp_path):
    p = _yaml(tmp_path, "detectors:\n  - name: b\n    family: bruteforce\n    settings:\n"
                        "      window: 20\n      treshold: 3\n")
    with pytest.raises(UserError) as e:
        load_detector_file(p)
    assert e.value.line == 6 and "treshold" in str(e.value) and "threshold" in str(e.value)


def test_bad_setting_value_and_unknown_key(tmp_path):
    p = _yaml(tmp_path, "detectors:\n  - name: c\n    family: portscan\n"
                        "    settings: {mode: diagonal}\n")
    with pytest.raises(UserError) as e:
        load_detector_file(p)
    assert e.value.line == 4 and "mode" in str(e.value)
    p = _yaml(tmp_path, "detectors:\n  - name: d\n    family: portscan\n    setings: {}\n")
    with pytest.raises(UserError) as e:
        load_detector_file(p)
    assert e.value.line == 4


def test_duplicate_names_and_bad_yaml(tmp_path):
    p = _yaml(tmp_path, "detectors:\n  - name: a\n    family: portscan\n"
                        "  - name: a\n    family: bruteforce\n")
    (p.parent / "y.yaml").write_text("detectors: [\n")
    with pytest.raises(UserError) as e:
        load_detectors(p.parent)
    assert e.value.file == str(p)   # x.yaml is read first; its duplicate name is found first
    p.unlink()
    with pytest.raises(UserError) as e:
        load_detectors(p.parent)
    assert "y.yaml" in str(e.value) and e.value.line


# ---------------------------------------------------------------- through the store


def test_run_detectors_writes_alerts(tmp_path):
    rows = vertical_scan() + ping_sweep(T0 + 30) + logins(T0 + 60, 20, 0.5) + web_requests()
    with DuckDBStore(tmp_path / "e.duckdb") as store:
        store.write("flows", table(rows))
        dets = load_detectors("detectors")
        out = run_detectors(store, "r1", dets)
        assert out.schema.equals(ALERT_SCHEMA)
        # (other families may flag these synthetic flows too; this test is about these three,
        # the slow scan instance, which sees the same 100-port scan, and the slow sweep, which
        # sees the ping sweep: it counts ICMP too since issue 15)
        ours = [n for n, c in zip(out.column("rule.name").to_pylist(),
                                  out.column("rule.category").to_pylist())
                if c in ("portscan", "bruteforce")]
        assert sorted(ours) == ["horizontal-sweep", "login-bruteforce", "slow-portscan",
                                "slow-sweep", "vertical-portscan"]
        n = out.num_rows
        assert store.count("alerts", "r1") == n
        run_detectors(store, "r1", dets)                    # re-running replaces, not appends
        assert store.count("alerts", "r1") == n
        stored = store.read("alerts", "r1")
        assert set(stored.column("cyberrange.alert_id").to_pylist()) == \
            set(out.column("cyberrange.alert_id").to_pylist())
