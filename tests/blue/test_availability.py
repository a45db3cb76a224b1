"""Mission availability (issue 14 item 4): probes from the threads' clients during the drill,
``availability.jsonl``, the scorecard's section, the store's table.

The section is computed from the file alone (crafted files, no root); two real fob drills run
side by side: a benign-only one (every thread and service available all the time, zero loss,
the section and the store agree with the file, a re-score keeps them), and one where the test
drops hq-portal's packets to the C2 server's port 8080 inside the C2 server for 8 seconds
(only the thread ``hq-cop-feed`` goes down, from inside that window)."""
from __future__ import annotations

import json
import subprocess
import time

import duckdb
import pytest

from background import Pool
from helpers import PY, ROOT, can_build_twin, cli, needs_twin
from cyberrange.errors import UserError
from cyberrange.score.availability import (
    availability_section,
    availability_table,
    read_probes,
    run_availability,
    write_table,
)

T0 = 1_800_000_000.0


def probe(t, thread="cop", ok=True, src="ops-ws1", dst="c2-server", latency=1.0, reason=None):
    return {"time": T0 + t, "thread": thread, "src": src, "dst": dst, "dst_ip": "10.10.1.10",
            "proto": "tcp", "port": 8080, "ok": ok, "latency_ms": latency if ok else None,
            "reason": reason if not ok else None}


def write(path, probes, tail=""):
    path.write_text("".join(json.dumps(p) + "\n" for p in probes) + tail)
    return path


# ------------------------------------------------------------------ (c) the file alone
def test_the_section_is_computed_from_the_file_alone(tmp_path):
    probes = [probe(0), probe(2), probe(4, ok=False, reason="timeout"),
              probe(5, ok=False, reason="timeout"), probe(7), probe(9, ok=False),
              probe(1, thread="dns"), probe(3, thread="dns"), probe(10, thread="dns"),
              probe(6, thread="service:cp-dns:udp/53"),
              probe(8, thread="service:cp-dns:udp/53", ok=False, reason="port unreachable")]
    path = write(tmp_path / "availability.jsonl", probes[::-1])     # any order
    sec = availability_section(read_probes(path), interval_s=2.0)
    cop = sec["threads"]["cop"]
    assert cop == {"kind": "mission", "probes": 6, "ok": 3, "availability": 0.5,
                   "first_down": T0 + 4, "down_s": 3.0 + 1.0, "latency_ms": 1.0}
    # cop: down from 4 until the ok probe at 7 (3 s), and from 9 until the file's end (10)
    dns = sec["threads"]["dns"]
    assert dns["availability"] == 1.0 and dns["first_down"] is None and dns["down_s"] == 0
    svc = sec["threads"]["service:cp-dns:udp/53"]
    assert svc["kind"] == "service" and svc["availability"] == 0.5 and svc["down_s"] == 2.0
    assert sec["interval_s"] == 2.0 and sec["probes"] == len(probes)
    assert sec["overall"] == round((0.5 + 1.0 + 0.5) / 3, 4)
    assert sec["missions"] == 0.75
    assert sec["start"] == T0 and sec["end"] == T0 + 10


def test_the_plan_adds_threads_without_probes(tmp_path):
    sec = availability_section([probe(0)], 2.0, threads={"cop": {"kind": "mission"},
                                                         "silent": {"kind": "mission"}})
    assert sec["threads"]["silent"]["probes"] == 0
    assert sec["threads"]["silent"]["availability"] is None
    assert sec["overall"] == 1.0                # a thread without probes is not averaged
    assert availability_section([], None)["overall"] is None


def test_a_bad_line_names_the_file_and_line_and_a_cut_last_line_is_dropped(tmp_path):
    path = write(tmp_path / "a.jsonl", [probe(0), probe(1)], tail='{"time": 3, "thr')
    assert len(read_probes(path)) == 2                   # a killed drill's last line
    bad = [("not json\n", "not a JSON object"), ("[1]\n", "not a JSON object"),
           (json.dumps(dict(probe(0), ok="yes")) + "\n", "'ok' must be bool"),
           (json.dumps(dict(probe(0), time=None)) + "\n", "'time' must be"),
           (json.dumps(dict(probe(0), thread=3)) + "\n", "'thread' must be str")]
    for line, msg in bad:
        path = write(tmp_path / "b.jsonl", [probe(0)], tail=line + json.dumps(probe(1)) + "\n")
        with pytest.raises(UserError, match=rf"b.jsonl:2: {msg}"):
            read_probes(path)


def test_the_store_table_has_one_row_per_probe_and_a_rescore_replaces_it(tmp_path):
    probes = [probe(0), probe(1, ok=False, reason="refused")]
    db = tmp_path / "store.duckdb"
    for _ in range(2):
        assert write_table(db, availability_table(probes, "run-1")) == 2
    write_table(db, availability_table(probes[:1], "run-2"))
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute('SELECT "cyberrange.run_id", "cyberrange.thread", "event.outcome", '
                       '"error.message", epoch("@timestamp") FROM availability '
                       'ORDER BY 1, 5').fetchall()
    assert rows == [("run-1", "cop", "success", None, T0), ("run-1", "cop", "failure", "refused",
                                                            T0 + 1), ("run-2", "cop", "success",
                                                                      None, T0)]


def test_a_run_without_probes_has_no_section(tmp_path):
    assert run_availability(tmp_path, {"run_id": "r"}) is None


def test_the_probe_timeout_allows_three_round_trips_of_the_slowest_emulated_link():
    from cyberrange.blue.availability import PROBE_TIMEOUT_S, probe_timeout
    from cyberrange.model.loader import load_topology
    fob = load_topology(ROOT / "topologies" / "fob.yaml")     # SATCOM 550 ± 20 ms one way
    assert probe_timeout(fob) == pytest.approx(PROBE_TIMEOUT_S + 3 * 1.14)
    assert probe_timeout(fob, "shape") == PROBE_TIMEOUT_S      # no delay emulated


def test_every_thread_and_service_of_fob_is_planned_from_real_clients():
    from cyberrange.blue.availability import plan_targets
    from cyberrange.model.loader import load_topology
    topo = load_topology(ROOT / "topologies" / "fob.yaml")
    targets = {t.thread: t for t in plan_targets(topo, exclude=topo.entry_points)}
    assert set(topo.missions) <= set(targets)
    cop = targets["cop"]
    assert {p[0] for p in cop.pairs} == {"ops-ws1", "ops-ws2", "ops-ws3"}
    assert cop.service == "http" and cop.proto == "tcp" and cop.port == 8080
    services = {f"service:{n.name}:{s.proto}/{s.port}" for n in topo.hosts for s in n.services}
    assert services <= set(targets)
    for name in services:
        (src, dst, _), = targets[name].pairs
        assert src not in topo.entry_points and src != dst
    assert targets["service:cp-dns:udp/53"].pairs[0][0] in topo.missions["name-resolution"].src
    assert targets["service:cp-dns:udp/53"].checks == {
        "cp-dns": {"service": "dns", "qname": "cp-dns.fob.mil"}}
    assert targets["service:c2-server:tcp/22"].login                    # spaced per source
    assert not any(t.static for t in targets.values())                  # all allowed by the model


def test_the_playbooks_actors_never_probe_a_service():
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.blue.availability import attackers, plan_targets
    from cyberrange.model.loader import load_topology
    topo = load_topology(ROOT / "topologies" / "fob.yaml")
    pb = load_playbook(ROOT / "attack_playbooks" / "recon_bruteforce.yaml", topo)
    assert attackers(topo, pb) == {"ops-maint"} == attackers(topo)
    topo.entry_points = []
    assert attackers(topo, pb) == {"ops-maint"}
    probers = {t.pairs[0][0] for t in plan_targets(topo, {"ops-ws1"}) if t.kind == "service"}
    assert "ops-ws1" not in probers and "ops-ws2" in probers
    cop = next(t for t in plan_targets(topo, {"ops-ws1"}) if t.thread == "cop")
    assert {p[0] for p in cop.pairs} == {"ops-ws2", "ops-ws3"}


def test_a_thread_whose_clients_are_all_attackers_is_probed_from_a_stand_in():
    """air_base's historian polls the fuel PLCs (mission fuel-polling) and is the Modbus
    playbook's actor: probes from it would make its reads look learned-normal."""
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.blue.availability import attackers, plan_targets
    from cyberrange.model.loader import load_topology
    topo = load_topology(ROOT / "topologies" / "air_base.yaml")
    pb = load_playbook(ROOT / "attack_playbooks" / "airbase_fuel_plc.yaml", topo)
    bad = attackers(topo, pb)
    assert {"fuel-hist", "admin-ws2"} <= bad
    targets = {t.thread: t for t in plan_targets(topo, bad)}
    assert not {p[0] for t in targets.values() for p in t.pairs} & bad
    polling = targets["fuel-polling"]
    assert {p[1] for p in polling.pairs} == set(topo.missions["fuel-polling"].dst)
    assert "fuel-hist" in polling.via and polling.service == "modbus"
    # each PLC is checked against its own registers
    assert polling.checks["fuel-plc1"]["registers"] == {0: 812, 1: 640, 2: 1150, 3: 1450, 4: 1}
    assert polling.checks["fuel-plc2"]["registers"] == {0: 1030, 1: 1, 2: 0}


# ------------------------------------------------------------------ real drills
DRILL = [PY, "-m", "cyberrange.cli.main", "drill", "run", "topologies/fob.yaml", "--json",
         "--warmup", "4"]


@pytest.fixture(scope="module")
def benign_drill(tmp_path_factory, request):
    """The benign-only drill runs in the background while the blocked-path test runs its own."""
    if can_build_twin() is not None:
        pytest.skip(f"twin: {can_build_twin()}")
    runs = tmp_path_factory.mktemp("avail-benign")
    pool = Pool(1)
    request.addfinalizer(pool.close)
    argv = DRILL + ["--duration", "20", "--runs-dir", runs]
    pool.submit("benign", argv, cwd=ROOT)

    def result():
        r = pool.result("benign")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
        return run_dir, r
    return result


@needs_twin
def test_a_blocked_path_shows_as_a_drop_on_its_thread_only(benign_drill, tmp_path):
    benign_drill                                       # started first, runs beside this one
    # shape: this test checks the window arithmetic of a block on one thread, to the probe.
    # Over the emulated SATCOM (1.1 s round trip) an hq-cop-feed probe takes 2.2 s and
    # straddles the block's edges, and probes after the unblock were seen to end in "reset"
    # (2 of 20; not yet explained), so the window cannot be asserted to the probe there.
    p = subprocess.Popen(DRILL + ["--duration", "24", "--probe-interval", "1",
                                  "--link-emulation", "shape", "--runs-dir", tmp_path], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        run_dir, ns = _wait_for_probes(tmp_path, "hq-cop-feed")
        time.sleep(3)
        rule = ("table inet avail_test {\n chain input {\n"
                "  type filter hook input priority -10;\n"
                "  ip saddr 10.20.0.10 tcp dport 8080 drop\n }\n}\n")
        t_block = time.time()
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rule, text=True,
                       check=True)
        time.sleep(8)                   # at 1 probe/s: no probe in it 1 time in 3000
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet",
                        "avail_test"], check=True)
        t_unblock = time.time()
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=60)
    assert p.returncode == 0, out[-2000:] + err[-3000:]
    card = json.loads((run_dir / "scorecard.json").read_text())
    assert card["reconciliation"]["zero_loss"], card["reconciliation"]["verdict"]
    threads = card["availability"]["threads"]
    feed = threads["hq-cop-feed"]
    assert feed["availability"] < 1 and feed["ok"] > 0
    assert t_block <= feed["first_down"] <= t_unblock
    # down until its next ok probe, which may come a few (Poisson) seconds after the window
    assert 0 < feed["down_s"] <= t_unblock - t_block + 10
    down = [json.loads(line) for line in (run_dir / "availability.jsonl").open()]
    down = [r for r in down if not r["ok"]]
    assert down and all(r["thread"] == "hq-cop-feed" and r["reason"] == "timeout" and
                        t_block - 0.5 <= r["time"] <= t_unblock for r in down), down
    others = {k: v["availability"] for k, v in threads.items() if k != "hq-cop-feed"}
    assert set(others.values()) == {1.0}, others
    assert card["availability"]["overall"] < 1


def _wait_for_probes(runs, thread, timeout=120):
    """The run folder and c2-server's namespace once ``thread`` has had an ok probe."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for run_dir in runs.iterdir():
            state, avail = run_dir / "twin-state.json", run_dir / "availability.jsonl"
            if state.exists() and avail.exists() and any(
                    f'"thread": "{thread}"' in line and '"ok": true' in line
                    for line in avail.read_text().splitlines()):
                return run_dir, json.loads(state.read_text())["namespaces"]["c2-server"]
        time.sleep(0.5)
    raise AssertionError(f"no ok probe of {thread} within {timeout} s")


@needs_twin
def test_a_benign_drill_keeps_every_thread_available(benign_drill):
    run_dir, r = benign_drill()
    card = json.loads(r.stdout)
    assert card["reconciliation"]["zero_loss"], card["reconciliation"]["verdict"]
    assert card["alerts"]["true"] == 0 and card["flows"]["attack"] == 0
    sec = card["availability"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = manifest["availability"]
    assert set(sec["threads"]) == set(plan["threads"])
    assert {"cop", "hq-cop-feed", "name-resolution", "web-portal", "hq-portal"} <= set(
        sec["threads"])
    bad = {k: v for k, v in sec["threads"].items() if v["availability"] != 1.0}
    assert not bad, bad
    assert all(v["probes"] >= 1 and v["first_down"] is None for v in sec["threads"].values())
    assert all(v["probes"] >= 3 for v in sec["threads"].values() if v["kind"] == "mission")
    assert sec["overall"] == 1.0 and sec["interval_s"] == 2.0
    # every pair of a thread was probed (the first rounds go over all of them)
    lines = [json.loads(x) for x in (run_dir / "availability.jsonl").read_text().splitlines()]
    cop_src = {x["src"] for x in lines if x["thread"] == "cop"}
    assert cop_src == {"ops-ws1", "ops-ws2", "ops-ws3"}
    assert plan["answered"] == plan["probes"] == len(lines)
    assert not plan["dead_probers"]
    # the scorecard's section is the file's; the store holds every probe
    assert sec == availability_section(read_probes(run_dir / "availability.jsonl"),
                                       plan["interval_s"], plan["threads"])
    con = duckdb.connect(str(run_dir / "store.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM availability").fetchone()[0] == len(lines)
    con.close()
    # a re-score keeps the section (and prints the table)
    rescore = cli("drill", "score", run_dir)
    assert rescore.returncode == 0, rescore.stderr
    assert "Mission availability" in rescore.stdout
    again = json.loads((run_dir / "scorecard.json").read_text())["availability"]
    assert again == sec
