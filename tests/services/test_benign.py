"""Benign traffic: role defaults and overrides, determinism, intensity, allowed flows only,
v1 compatibility, the new servers and clients (no network: socket pairs), and (root) a real
FOB twin whose sensors capture every request the generators logged."""
from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time

import jsonschema
import pytest
from helpers import ROOT, needs_twin

from cyberrange.model.loader import load_topology, topology_schema
from cyberrange.model.reach import ReachIndex, allowed
from cyberrange.model.topology import ROLES
from cyberrange.traffic import clients
from cyberrange.traffic.benign import generate, read_logs, summarize
from cyberrange.model.benign_kinds import KINDS
from cyberrange.traffic.plan import (
    _role_defaults_raw,
    explain_benign,
    plan_benign,
    profiles_for,
    schedule,
)

FOB = ROOT / "topologies" / "fob.yaml"
GOOD = ROOT / "tests" / "data" / "v2" / "good" / "sensors_benign.yaml"


@pytest.fixture(scope="module")
def fob():
    return load_topology(FOB)


@pytest.fixture(scope="module")
def sb():
    return load_topology(GOOD)


def all_schedules(plans, until=120):
    return {h: schedule(p, until) for h, p in plans.items()}


# -- role defaults -------------------------------------------------------------------------------

def test_roles_yaml_is_valid_and_covers_every_role():
    raw = _role_defaults_raw()
    assert set(raw) == set(ROLES)
    validator = jsonschema.Draft202012Validator(
        {"$defs": topology_schema()["$defs"], "$ref": "#/$defs/trafficProfile"})
    for items in raw.values():
        for item in items:
            validator.validate(item)
    assert set(KINDS) == set(clients.CLIENTS)


def test_fob_gets_realistic_defaults_without_writing_any(fob):
    plans = plan_benign(fob)
    kinds = {h: {a["kind"] for a in p["activities"]} for h, p in plans.items()}
    assert {"browse", "dns", "c2-report", "ntp", "login"} <= kinds["cp-ws1"]
    assert {"browse", "dns", "c2-report"} <= kinds["ops-ws1"]
    assert "ntp" not in kinds["ops-ws1"]            # fob-fw lets OPS reach cp-dns on udp/53 only
    assert {"syslog", "backup", "dns", "ntp"} <= kinds["c2-server"]
    assert kinds["hq-portal"] >= {"c2-report", "browse"}
    assert "ops-maint" not in plans                 # the foothold stays quiet
    c2 = next(a for a in plans["ops-ws2"]["activities"] if a["kind"] == "c2-report")
    assert c2["periodic"] and [t["node"] for t in c2["targets"]] == ["c2-server"]
    assert all(p["source"] == "default" for p in plans.values())


def test_v1_interval_scales_the_role_defaults(fob):
    topo = copy.deepcopy(fob)
    base = {p.kind: p.interval_s for p in profiles_for(topo, topo.nodes["ops-ws1"])[0]}
    assert topo.benign.interval_s == 1.5
    topo.benign.interval_s = 2.0
    ref = {p.kind: p.interval_s for p in profiles_for(topo, topo.nodes["ops-ws1"])[0]}
    assert ref["browse"] == 6.0 and base == pytest.approx({k: v * 0.75 for k, v in ref.items()})


def test_v1_topology_file_still_plans(tmp_path):
    p = tmp_path / "v1.yaml"
    p.write_text("""version: 1
name: v1
classification: SECRET
zones:
  lan: {subnet: 10.0.0.0/24}
nodes:
  - {name: ws, kind: host, role: workstation, zone: lan}
  - {name: web, kind: host, role: web-server, zone: lan, services: [{type: http, port: 80}]}
benign: {enabled: true, interval: 1.0, seed: 3}
""")
    topo = load_topology(p)
    plans = plan_benign(topo)
    assert list(plans) == ["ws"]
    (browse,) = plans["ws"]["activities"]
    assert browse["kind"] == "browse" and browse["interval"] == 3.0     # 6 s * 1.0 / 2.0


# -- overrides, determinism, intensity, allowed flows -------------------------------------------

def test_overrides_resolve(sb):
    ex = explain_benign(sb)
    assert ex["admin1"]["source"] == "node"
    assert [a["kind"] for a in ex["admin1"]["activities"]] == ["admin-ssh", "browse"]
    browse = ex["admin1"]["activities"][1]
    assert [t["node"] for t in browse["targets"]] == ["web", "portal"]      # as given
    ssh = ex["admin1"]["activities"][0]["targets"][0]
    assert (ssh["user"], ssh["password"]) == ("admin", "S3cure!")
    assert "ws3" not in plan_benign(sb)                                     # nodes: {ws3: []}
    assert ex["hmi"]["source"] == "role"
    (poll,) = ex["hmi"]["activities"]
    assert poll["params"] == {"count": 4} and poll["interval"] == 0.5      # 1 s / intensity 2
    ntp = ex["ws2"]["activities"][0]
    assert ntp["jitter"] == 0.5 and ntp["interval"] == 5.0
    # a given target the firewall denies is left out, and the plan says why
    assert {"kind": "chat", "target": "infra", "port": 5222,
            "why": "denied by fw default deny"} in ex["ws2"]["skipped"]


def test_same_seed_same_plan_and_schedule(sb, fob):
    for topo in (sb, fob):
        a, b = plan_benign(topo), plan_benign(copy.deepcopy(topo))
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        assert all_schedules(a) == all_schedules(b)


def test_different_seed_different_schedule(fob):
    a, b = plan_benign(fob, seed=1), plan_benign(fob, seed=2)
    assert all_schedules(a) != all_schedules(b)
    # and target choices differ somewhere ("each" kinds pick per request)
    targets = lambda s: [[e[2] for e in v] for v in s.values()]
    assert targets(all_schedules(a)) != targets(all_schedules(b))


def test_intensity_scales_rates(fob):
    one = plan_benign(fob, intensity=1.0)
    two = plan_benign(fob, intensity=2.0)
    for h in one:
        for a, b in zip(one[h]["activities"], two[h]["activities"]):
            assert b["interval"] == pytest.approx(a["interval"] / 2)
    n1 = sum(len(s) for s in all_schedules(one, 600).values())
    n2 = sum(len(s) for s in all_schedules(two, 600).values())
    assert 1.7 < n2 / n1 < 2.3
    assert plan_benign(fob, intensity=0) == {}


def test_periodic_kinds_are_beacon_like(fob):
    plan = plan_benign(fob)["ops-ws1"]
    times = [e[0] for e in schedule(plan, 300) if e[1] == "c2-report"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    interval = next(a["interval"] for a in plan["activities"] if a["kind"] == "c2-report")
    assert all(interval * 0.79 <= g <= interval * 1.21 for g in gaps)


@pytest.mark.parametrize("path", sorted((ROOT / "topologies").glob("*.yaml")), ids=lambda p: p.stem)
def test_only_allowed_flows_are_planned(path):
    topo = load_topology(path)
    plans = plan_benign(topo)
    assert plans, "every library topology has some benign traffic"
    for host, plan in plans.items():
        for act in plan["activities"]:
            for t in act["targets"]:
                ok, why = allowed(topo, host, t["ip"], t["proto"], t["port"])   # the slow, exact path
                assert ok, f"{host} -> {t['node']} {t['proto']}/{t['port']}: {why}"
                service = next(s for s in topo.nodes[t["node"]].services if s.port == t["port"])
                assert service.type in KINDS[act["kind"]].services


# -- servers and clients, over socket pairs (no network) -----------------------------------------

def test_ntp_reply_echoes_and_is_a_server_packet():
    from cyberrange.services import ntp
    req = clients.ntp_request(time.time())
    out = ntp.reply(req)
    assert len(out) == 48 and out[0] & 7 == 4 and out[24:32] == req[40:48]
    assert ntp.reply(b"\x1c" + bytes(47)) is None           # a server packet is not answered


def test_syslog_parse():
    from cyberrange.services import syslog
    assert syslog.parse(b"<134>1 2026-01-01T00:00:00Z h app - - - hello\n") == (
        134, "1 2026-01-01T00:00:00Z h app - - - hello")
    assert syslog.parse(b"no pri") == (-1, "no pri")


def _serve_pair(handler):
    """Run an asyncio stream handler on one end of a socket pair; return the other end."""
    a, b = socket.socketpair()
    loop = asyncio.new_event_loop()

    async def run():
        reader, writer = await asyncio.open_connection(sock=b)
        await handler(reader, writer)

    t = threading.Thread(target=lambda: loop.run_until_complete(run()), daemon=True)
    t.start()
    return a, t


@pytest.fixture
def paired(monkeypatch):
    """Clients connect to a socket pair instead of the network."""
    def use(handler):
        sock, thread = _serve_pair(handler)
        monkeypatch.setattr(clients, "_connect", lambda t: sock)
        monkeypatch.setattr(clients, "_ends", lambda s: {"src": "10.0.0.1", "sport": 40000})
        return thread
    return use


def test_chat_session(paired, tmp_path):
    import random

    from cyberrange.services.chat import Chat
    log = open(tmp_path / "chat.jsonl", "w")
    chat = Chat(log)

    async def handle(reader, writer):
        writer.get_extra_info = lambda k, d=None: ("10.0.0.1", 40000) if k == "peername" else d
        await chat.handle(reader, writer)
    thread = paired(handle)
    rec = clients.chat({"ip": "x", "port": 1, "node": "srv"}, random.Random(1), {"user": "ops1"})
    thread.join(5)
    log.close()
    assert rec["ok"] and rec["bytes_out"] > 10
    lines = [json.loads(x) for x in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert lines[0]["command"] == "HELLO" and lines[-1]["command"] == "BYE"
    assert chat.answer(None, "MSG ops hi")[1] == "ERR say HELLO first"


def test_backup_upload(paired, tmp_path):
    import random

    from cyberrange.services import backup
    log = open(tmp_path / "backup.jsonl", "w")

    async def handle(reader, writer):
        writer.get_extra_info = lambda k, d=None: ("10.0.0.1", 40000) if k == "peername" else d
        await backup.handle(reader, writer, log, 1 << 30)
    thread = paired(handle)
    rec = clients.backup({"ip": "x", "port": 1, "node": "srv"}, random.Random(1), {"size_kb": 200})
    thread.join(5)
    log.close()
    assert rec["ok"] and rec["bytes_out"] > 200 * 1024
    (line,) = [json.loads(x) for x in (tmp_path / "backup.jsonl").read_text().splitlines()]
    assert line["ok"] and line["size"] == 200 * 1024


def test_generator_logs_every_request_and_is_deterministic(monkeypatch, fob):
    """The generator makes exactly the scheduled requests (clients stubbed: no network)."""
    plan = copy.deepcopy(plan_benign(fob, intensity=20)["cp-ws1"])
    made = []

    def fake(kind):
        def client(t, rng, params):
            made.append((kind, t["node"], rng.random()))
            return {"src": "10.10.1.11", "sport": 40000 + len(made), "ok": True,
                    "bytes_out": 10, "packets_out": 1}
        return client
    monkeypatch.setattr(clients, "CLIENTS", {k: fake(k) for k in KINDS})

    class Log:
        def __init__(self):
            self.lines = []

        def write(self, s):
            self.lines.append(json.loads(s))

        def flush(self):
            pass
    log = Log()
    n = generate(plan, log, max_requests=12)
    assert n == 12 and len(log.lines) == 12
    rec = log.lines[0]
    assert {"time", "host", "kind", "src", "sport", "dst", "dport", "proto", "ok",
            "duration", "target"} <= set(rec)
    # per activity, the requests made are the first ones of its schedule, targets in order
    events = schedule(plan, 120)
    for kind in {k for k, _, _ in made}:
        got = [t for k, t, _ in made if k == kind]
        assert got == [e[2] for e in events if e[1] == kind][:len(got)]
    assert summarize(log.lines)["requests"] == 12


# -- the real thing ------------------------------------------------------------------------------

KNOWN_PORTS = {("tcp", 80): "browse", ("tcp", 443): "browse", ("tcp", 8080): "browse/c2-report",
               ("udp", 53): "dns", ("udp", 123): "ntp", ("udp", 514): "syslog",
               ("tcp", 873): "backup", ("tcp", 22): "login", ("tcp", 2222): "login"}


@needs_twin
def test_fob_benign_traffic_is_captured_and_allowed(tmp_path):
    from cyberrange.drill import BenignTraffic
    from cyberrange.telemetry.pcap import parse_pcaps
    from cyberrange.twin.build import Twin
    topo = load_topology(FOB)
    run_dir = tmp_path / "run"
    twin = Twin(topo, run_dir, "test-benign", log=lambda m: None)
    try:
        twin.start()
        benign = BenignTraffic(twin, run_dir, seed=7, intensity=2.0)
        assert benign.start() >= 8
        time.sleep(15)
        requests = benign.stop()
        if hasattr(twin, "stop_sensors"):
            twin.stop_sensors()
    finally:
        twin.stop()
    records = read_logs(run_dir / "logs")
    assert requests == len(records) >= 60
    ok = [r for r in records if r.get("ok")]
    assert len(ok) >= 0.9 * len(records), [r for r in records if not r.get("ok")][:5]
    assert {"browse", "dns", "c2-report", "ntp", "syslog"} <= {r["kind"] for r in ok}

    pcaps = run_dir / "pcaps"
    items = [(str(f), f.parent.name if f.parent != pcaps else f.name.split(".")[0])
             for f in sorted(pcaps.rglob("*.pcap*")) if f.stat().st_size > 24]
    assert items
    _, flows, _ = parse_pcaps(items, "test-benign")
    cols = flows.select(["source.ip", "source.port", "destination.ip", "destination.port",
                         "network.transport"]).to_pylist()
    tuples = {(c["source.ip"], c["source.port"], c["destination.ip"], c["destination.port"],
               c["network.transport"]) for c in cols}
    # every request that succeeded crossed a sensor and is a flow with its 5-tuple
    missing = [r for r in ok if (r["src"], r["sport"], r["dst"], r["dport"], r["proto"])
               not in tuples]
    assert not missing, missing[:5]
    # most flows are the benign kinds expected
    transport = [t for t in tuples if t[4] in ("tcp", "udp")]
    known = [t for t in transport if (t[4], t[3]) in KNOWN_PORTS]
    assert len(known) >= 0.9 * len(transport), set(transport) - set(known)
    # and nothing was sent to a destination the firewalls deny
    reach = ReachIndex(topo)
    for src, sport, dst, dport, proto in known:
        node = topo.node_by_ip(src)
        if node is None or node.is_router or topo.node_by_ip(dst) is None:
            continue
        ok_, why = reach.check(node.name, dst, proto, dport)
        assert ok_, f"{node.name} -> {dst} {proto}/{dport}: {why}"
