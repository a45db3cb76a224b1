"""Blue actions on a running twin (issue 14 item 1), on real twins, measured with real probes.

One module twin (a firewall between users, servers and management; a Modbus PLC) built with
the session API in this process: the library is called with the owner's ``Twin`` (as the
automated response will), the CLI from subprocesses (a defender's second terminal, attaching
by the state file). Each test undoes what it did, so the next one starts with no active
action. Two more twins: ``attack run`` with a ``blue isolate`` from a second terminal, and
``up --detach`` whose owner is SIGKILLed during an active block.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import PY, ROOT, cli, needs_twin, run_probes

pytestmark = needs_twin

TOPOLOGY = """\
version: 1
name: blue-test
classification: UNCLASSIFIED
description: One firewall between users, servers and management, for blue action tests
domain: blue.test
zones:
  users:   {subnet: 10.61.1.0/24}
  servers: {subnet: 10.61.2.0/24}
  mgmt:    {subnet: 10.61.3.0/24}
nodes:
  - {name: user1, kind: host, zone: users, services: [{type: http, port: 8080}]}
  - {name: user2, kind: host, zone: users, services: [{type: http, port: 8080}]}
  - {name: web, kind: host, role: web-server, zone: servers, services: [{type: http, port: 80}]}
  - name: plc
    kind: host
    role: plc
    zone: servers
    services: [{type: modbus, port: 502, registers: {0: 1234, 1: 42}}]
  - {name: admin, kind: host, role: workstation, zone: mgmt,
     services: [{type: http, port: 8080}]}
  - name: fw
    kind: firewall
    interfaces: [{zone: users}, {zone: servers}, {zone: mgmt}]
    default: deny
    rules:
      - {action: allow, from: users, to: web, proto: tcp, port: 80}
      - {action: allow, from: users, to: servers, proto: icmp}
      - {action: allow, from: users, to: plc, proto: tcp, port: 502}
      - {action: allow, from: mgmt, to: any}
sensors:
  - {name: users-span, zone: users}
benign: {enabled: false}
"""
IP = {"user1": "10.61.1.10", "user2": "10.61.1.11", "web": "10.61.2.10", "plc": "10.61.2.11",
      "admin": "10.61.3.10"}
CONTRACT = {"id": str, "time": float, "actor": str, "action": str, "params": dict,
            "result": str, "reason": (str, type(None)), "reverts": (str, type(None)),
            "twin": str, "objects": list, "applied_s": (float, int),
            "trigger": (dict, type(None))}


@pytest.fixture(scope="module")
def topo_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("blue-topo")
    (d / "blue.yaml").write_text(TOPOLOGY)
    return d / "blue.yaml"


@pytest.fixture(scope="module")
def twin(topo_file, tmp_path_factory):
    """The module's twin, up in this process (its own TwinSession and run folder)."""
    from cyberrange.model.loader import load_topology
    from cyberrange.run import Run
    from cyberrange.session import TwinSession
    from cyberrange.twin.build import Twin
    from cyberrange.twin.state import leftovers
    run = Run.create(tmp_path_factory.mktemp("blue-runs"), "blue-test",
                     {"topology": str(topo_file)})
    run.manifest.update(kind="twin", topology="blue-test")
    run.save()
    tw = Twin(load_topology(topo_file), run.dir, run.id, log=lambda m: None)
    with TwinSession(run, tw) as session:
        session.start()
        yield tw
    run.finish("done")
    assert not any(leftovers(tw.state.prefix).values()), leftovers(tw.state.prefix)


@pytest.fixture
def clean(twin):
    """Every test starts and must end with no active action."""
    from cyberrange.blue.actions import active
    assert active(twin.run_dir) == []
    yield twin
    assert active(twin.run_dir) == [], "the test left an action active"


def reach(twin, src: str, probes: list[tuple]) -> list[str]:
    """``open``/``closed``/``filtered`` per ``(proto, node, port)`` probed from ``src``."""
    got = run_probes(twin, src, [{"proto": p, "ip": IP[n], "port": port, "timeout": 1}
                                 for p, n, port in probes])
    return [r["result"] for r in got]


def blue(twin, *args):
    """``cyberrange blue ...`` from a second terminal, naming the twin."""
    return cli("blue", *args, "--twin", twin.state.prefix, timeout=120)


def rulesets(twin) -> dict[str, str]:
    from cyberrange.blue.nft import ruleset
    return {ns: ruleset(ns) for ns in [*twin.ns.values(), twin.sw_ns]}


# -- block / unblock ---------------------------------------------------------------------------
def test_block_at_the_port_stops_a_flow_and_unblock_restores_it(clean):
    from cyberrange.blue.actions import apply, revert
    twin = clean
    before = rulesets(twin)
    probes = [("tcp", "web", 80), ("icmp", "web", None), ("tcp", "user2", 8080)]
    assert reach(twin, "user1", probes) == ["open", "open", "open"]
    rec = apply(twin, "block", {"src": "user1", "dst": "web", "proto": "tcp", "port": 80},
                actor="alice")
    assert rec["result"] == "applied" and rec["params"]["at"] == "port", rec
    assert rec["objects"] == [f"{twin.sw_ns}: bridge cyberrange_blue chain {rec['id']}"]
    # exactly that flow: ping to web and the same-zone flow still work
    assert reach(twin, "user1", probes) == ["filtered", "open", "open"]
    assert reach(twin, "user2", [("tcp", "web", 80)]) == ["open"]
    undo = revert(twin, rec["id"], actor="alice")
    assert undo["result"] == "applied" and undo["reverts"] == rec["id"]
    assert undo["action"] == "unblock"
    assert reach(twin, "user1", probes) == ["open", "open", "open"]
    assert rulesets(twin) == before


def test_block_at_the_port_holds_inside_the_source_zone(clean):
    from cyberrange.blue.actions import apply, revert
    twin = clean
    rec = apply(twin, "block", {"src": "user1", "dst": "users"})      # no firewall sees it
    try:
        assert reach(twin, "user1", [("tcp", "user2", 8080), ("tcp", "web", 80)]) == \
            ["filtered", "open"]
        assert reach(twin, "user2", [("tcp", "web", 80)]) == ["open"]
    finally:
        revert(twin, rec["id"])
    assert reach(twin, "user1", [("tcp", "user2", 8080)]) == ["open"]


SESSION = """
import socket, struct, sys
s = socket.create_connection((sys.argv[1], 502), timeout=5)
print("connected", flush=True)
for line in sys.stdin:
    pdu = struct.pack("!BHH", 3, 0, 1)
    s.sendall(struct.pack("!HHHB", 1, 0, len(pdu) + 1, 1) + pdu)
    s.settimeout(float(line))
    try:
        print("answer" if s.recv(64) else "eof", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
    except OSError as e:
        print(type(e).__name__, flush=True)
"""


def test_block_at_the_firewall_by_cli_stops_established_sessions_too(clean):
    twin = clean
    session = twin.popen("user1", [PY, "-c", SESSION, IP["plc"]], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def ask(wait: float) -> str:
        session.stdin.write(f"{wait}\n")
        session.stdin.flush()
        return session.stdout.readline().strip()
    try:
        assert session.stdout.readline().strip() == "connected"
        assert ask(3) == "answer"
        r = blue(twin, "block", "--src", "users", "--dst", "plc", "--at", "firewall", "--json",
                 "--actor", "bob")
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)
        assert rec["params"]["firewalls"] == ["fw"] and rec["actor"] == "bob"
        assert rec["objects"] == [f"{twin.ns['fw']}: inet cyberrange_blue chain {rec['id']}"]
        assert ask(1.5) == "timeout"                  # before the model's "established" accept
        assert reach(twin, "user1", [("tcp", "plc", 502), ("tcp", "web", 80)]) == \
            ["filtered", "open"]
        assert reach(twin, "admin", [("tcp", "plc", 502)]) == ["open"]
        r = blue(twin, "unblock", rec["id"])
        assert r.returncode == 0 and r.stdout.startswith("A"), r.stderr
        assert ask(5) == "answer"                     # the session lives on
    finally:
        session.kill()
        session.wait()
    assert reach(twin, "user1", [("tcp", "plc", 502)]) == ["open"]


# -- isolate / release ---------------------------------------------------------------------------
def test_isolate_leaves_only_the_management_host_reaching_the_node(clean):
    twin = clean
    before = rulesets(twin)
    r = blue(twin, "isolate", "plc", "--allow", "admin")
    assert r.returncode == 0, r.stderr
    assert "plc quarantined" in r.stdout
    assert reach(twin, "admin", [("tcp", "plc", 502), ("icmp", "plc", None)]) == \
        ["open", "open"]
    assert reach(twin, "user1", [("tcp", "plc", 502), ("icmp", "plc", None)]) == \
        ["filtered", "filtered"]
    assert reach(twin, "web", [("tcp", "plc", 502)]) == ["filtered"]       # same zone too
    # whatever the node does it reaches nobody (the model's firewall lets only management
    # open flows to servers), not even its own zone, and not with a new address either
    assert reach(twin, "plc", [("tcp", "web", 80)]) == ["filtered"]
    twin.run("plc", ["ip", "addr", "add", "10.61.2.99/24", "dev", "eth0"])
    try:
        out = twin.run("plc", ["ping", "-c1", "-W1", "-I", "10.61.2.99", IP["web"]])
        assert out.returncode != 0
    finally:
        twin.run("plc", ["ip", "addr", "del", "10.61.2.99/24", "dev", "eth0"])
    r = blue(twin, "release", "plc")            # by node name
    assert r.returncode == 0, r.stderr
    assert reach(twin, "user1", [("tcp", "plc", 502)]) == ["open"]
    assert reach(twin, "web", [("tcp", "plc", 502)]) == ["open"]
    assert rulesets(twin) == before


# -- rule add / remove ---------------------------------------------------------------------------
def test_rule_add_in_topology_syntax_changes_reachability_and_remove_restores_it(clean):
    twin = clean
    before = rulesets(twin)
    assert reach(twin, "user1", [("tcp", "admin", 8080), ("tcp", "web", 80)]) == \
        ["filtered", "open"]
    # an allow before the model's rules (the default deny no longer applies to it) ...
    r1 = blue(twin, "rule", "add", "fw", "allow from users to admin proto tcp port 8080",
              "--json")
    assert r1.returncode == 0, r1.stderr
    # ... and a deny in the topology file's own flow syntax, before the model's allow
    r2 = blue(twin, "rule", "add", "fw",
              "{action: deny, from: user1, to: web, proto: tcp, port: 80}", "--json")
    assert r2.returncode == 0, r2.stderr
    a1, a2 = json.loads(r1.stdout), json.loads(r2.stdout)
    assert reach(twin, "user1", [("tcp", "admin", 8080), ("tcp", "web", 80)]) == \
        ["open", "filtered"]
    assert reach(twin, "user2", [("tcp", "web", 80)]) == ["open"]
    chain = twin.run("fw", ["nft", "list", "chain", "inet", "cyberrange", "forward"]).stdout
    lines = [ln.strip() for ln in chain.splitlines()]
    first = lines.index(next(ln for ln in lines if ln.startswith("ct state")))
    assert lines[first + 1].startswith(f"jump blue_{a1['id']}")       # in the order added,
    assert lines[first + 2].startswith(f"jump blue_{a2['id']}")       # before the model's
    # --last: after the model's rules, so the model's allow still wins for users -> web
    r3 = blue(twin, "rule", "add", "fw", "deny from users to web proto tcp port 80", "--last",
              "--json")
    a3 = json.loads(r3.stdout)
    assert reach(twin, "user2", [("tcp", "web", 80)]) == ["open"]
    for a in (a2, a1, a3):
        r = blue(twin, "rule", "remove", a["id"])
        assert r.returncode == 0, r.stderr
    assert reach(twin, "user1", [("tcp", "admin", 8080), ("tcp", "web", 80)]) == \
        ["filtered", "open"]
    assert rulesets(twin) == before


# -- kill-sessions -------------------------------------------------------------------------------
HOLD = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", flush=True)
s.settimeout(30)
t0 = time.monotonic()
try:
    got = s.recv(1)
    print("eof" if not got else "data", round(time.monotonic() - t0, 2), flush=True)
except OSError as e:
    print(type(e).__name__, round(time.monotonic() - t0, 2), flush=True)
"""


def _hold_session(twin, src, dst, port):
    """A TCP session from ``src`` to ``dst:port`` that stays open until the kernel ends it."""
    p = twin.popen(src, [PY, "-c", HOLD, IP[dst], str(port)], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True)
    assert p.stdout.readline().strip() == "connected"
    return p


def test_kill_sessions_drops_an_established_tcp_session(clean):
    from cyberrange.blue.actions import apply
    twin = clean
    holder = _hold_session(twin, "admin", "plc", 502)
    other = _hold_session(twin, "user1", "plc", 502)     # another peer: left alone
    try:
        rec = apply(twin, "kill-sessions", {"node": "plc", "peer": "admin"}, actor="carol")
        assert rec["result"] == "applied", rec
        assert any(f"{IP['plc']}:502 -> {IP['admin']}:" in o for o in rec["objects"]), rec
        out, _ = holder.communicate(timeout=10)
        what, seconds = out.split()
        assert what in ("ConnectionResetError", "eof") and float(seconds) < 5, out
        assert other.poll() is None                        # still connected
    finally:
        for p in (holder, other):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert rec["params"]["peer_nets"] == [f"{IP['admin']}/32"]


# -- restart-service -----------------------------------------------------------------------------
MODBUS = """
import socket, struct, sys
fc, addr, value = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with socket.create_connection((sys.argv[1], 502), timeout=3) as s:
    pdu = struct.pack("!BHH", fc, addr, value)
    s.sendall(struct.pack("!HHHB", 1, 0, len(pdu) + 1, 1) + pdu)
    head = s.recv(7)
    body = b""
    while len(body) < struct.unpack("!HHHB", head)[2] - 1:
        body += s.recv(256)
print(struct.unpack("!H", body[-2:])[0])
"""


def _register(twin, value=None) -> int:
    """Holding register 0 of the PLC, read (or written) from the management host."""
    args = ["6", "0", str(value)] if value is not None else ["3", "0", "1"]
    r = twin.run("admin", [PY, "-c", MODBUS, IP["plc"], *args])
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def test_restart_restores_a_killed_service_with_its_registers(clean):
    from cyberrange.twin.state import pids_in_netns
    from cyberrange.twin import netns
    twin = clean
    assert _register(twin) == 1234
    assert _register(twin, 999) == 999                          # a Modbus write
    (pid,) = [p for p in pids_in_netns({netns.inode(twin.ns["plc"])})
              if b"cyberrange.services.modbus" in Path(f"/proc/{p}/cmdline").read_bytes()]
    os.kill(pid, signal.SIGKILL)                               # and a crash
    time.sleep(0.2)
    assert reach(twin, "admin", [("tcp", "plc", 502)]) == ["closed"]
    r = blue(twin, "restart", "plc", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["action"] == "restart-service" and rec["params"]["service"] == "modbus"
    assert reach(twin, "admin", [("tcp", "plc", 502)]) == ["open"]
    assert _register(twin) == 1234                              # the initial value is back
    # restarting a running service replaces its process (the written value goes too)
    assert _register(twin, 7) == 7
    from cyberrange.blue.actions import apply
    rec = apply(twin, "restart-service", {"node": "plc", "service": "502"})
    assert rec["result"] == "applied" and any("stopped" in o for o in rec["objects"]), rec
    assert _register(twin) == 1234
    # the new process takes SIGTERM (the teardown's) like the first one did
    (pid,) = [p for p in pids_in_netns({netns.inode(twin.ns["plc"])})
              if b"cyberrange.services.modbus" in Path(f"/proc/{p}/cmdline").read_bytes()]
    blocked = [ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("SigBlk:")]
    assert int(blocked[0].split()[1], 16) == 0, blocked


# -- list ------------------------------------------------------------------------------------------
def test_blue_list_shows_exactly_the_active_actions(clean):
    from cyberrange.blue.actions import apply, record_refusal, revert
    twin = clean
    a = apply(twin, "block", {"src": "user2", "dst": "web"})
    b = apply(twin, "isolate", {"node": "web", "allow": ["admin"]})
    c = apply(twin, "rule-add", {"firewall": "fw", "rule": "deny from user2 to plc"})
    apply(twin, "kill-sessions", {"node": "user2"})            # one-shot: never active
    refused = record_refusal(twin, "isolate", {"node": "fw"}, "auto:test",
                             "fw is on the never-isolate list", trigger={"detector": "x"})
    assert refused["result"] == "refused" and refused["objects"] == []
    revert(twin, b["id"])
    try:
        r = blue(twin, "list", "--json")
        assert r.returncode == 0, r.stderr
        assert [x["id"] for x in json.loads(r.stdout)] == [a["id"], c["id"]]
        table = blue(twin, "list").stdout
        assert a["id"] in table and c["id"] in table and f" {b['id']} " not in table
    finally:
        revert(twin, a["id"])
        revert(twin, c["id"])
    r = blue(twin, "list", "--json")
    assert json.loads(r.stdout) == []


# -- bad input -------------------------------------------------------------------------------------
BAD = [
    (["block", "--src", "userx", "--dst", "web"], "unknown zone or node 'userx'"),
    (["block", "--src", "user1", "--dst", "10.61.2.0/33"], "--dst"),
    (["block", "--dst", "web"], "needs --src"),
    (["block", "--src", "user1", "--port", "80"], "needs proto tcp or udp"),
    (["block", "--src", "user1", "--dst", "user2", "--at", "firewall"], "no firewall"),
    (["block", "--src", "user1", "--at", "web"], "not a firewall"),
    (["block", "--src", "user1", "--proto", "gre"], "'gre' is not one of"),
    (["isolate", "plcc", "--allow", "admin"], "unknown node 'plcc' in twin"),
    (["isolate", "plc", "--allow", "nobody"], "unknown node 'nobody'"),
    (["rule", "add", "fw", "permit from users to any"], "starts with allow or deny"),
    (["rule", "add", "fw", "deny from users"], "missing required key 'to'"),
    (["rule", "add", "fw", "deny from users to any proto tcp port 70000"], "port"),
    (["rule", "add", "fw", "{action: deny, from: users, to: any, bogus: 1}"], "bogus"),
    (["rule", "add", "web", "deny from users to any"], "not a firewall"),
    (["rule", "remove", "A999"], "no action A999"),
    (["unblock", "nonsense"], "not an action id"),
    (["release", "user2"], "not isolated"),
    (["kill-sessions", "user1", "--peer", "nowhere"], "unknown zone or node 'nowhere'"),
    (["restart", "user1", "--service", "ssh"], "no service 'ssh'"),
    (["restart", "fw"], "runs no service"),
    (["block", "--src", "user1", "--actor", "not a name"], "bad actor name"),
]


def test_bad_actions_are_one_line_exit_2_and_change_nothing(clean):
    from cyberrange.blue.actions import active, apply, revert
    from cyberrange.blue.log import log_path
    twin = clean
    one_shot = apply(twin, "kill-sessions", {"node": "user1", "peer": "web"})
    undone = revert(twin, apply(twin, "block", {"src": "user1"})["id"])
    before, log_before = rulesets(twin), log_path(twin.run_dir).read_bytes()
    for args, want in BAD:
        r = blue(twin, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], \
            (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
    # an undo of an action that happened once, and of one that was undone already
    for args, want in [(["unblock", one_shot["id"]], "cannot be undone"),
                       (["unblock", undone["reverts"]], "already undone")]:
        r = blue(twin, *args)
        assert r.returncode == 2 and want in r.stderr and len(r.stderr.splitlines()) == 1
    # no twin of that name is up
    r = cli("blue", "block", "--src", "user1", "--twin", "c0000")
    assert r.returncode == 2 and r.stderr.startswith("error: no live twin 'c0000'")
    assert rulesets(twin) == before
    assert log_path(twin.run_dir).read_bytes() == log_before
    assert active(twin.run_dir) == []


def test_the_log_holds_every_action_with_its_result(twin):
    from cyberrange.blue.actions import history
    recs = history(twin.run_dir)
    assert len(recs) >= 20
    assert [r["id"] for r in recs] == [f"A{i}" for i in range(1, len(recs) + 1)]
    for r in recs:
        assert set(r) == set(CONTRACT), r
        for k, t in CONTRACT.items():
            assert isinstance(r[k], t), (k, r)
        assert r["result"] in ("applied", "refused", "failed") and r["twin"] == twin.state.prefix
    undone = {r["reverts"] for r in recs if r["reverts"]}
    assert {r["id"] for r in recs if r["action"] in ("block", "isolate", "rule-add")
            and r["result"] == "applied"} == undone
    assert [r["reason"] for r in recs if r["result"] == "refused"] == \
        ["fw is on the never-isolate list"]
    assert {r["action"] for r in recs} >= {"block", "unblock", "isolate", "release", "rule-add",
                                           "rule-remove", "kill-sessions", "restart-service"}
    assert {"alice", "bob", "carol"} <= {r["actor"] for r in recs}


# -- two terminals ---------------------------------------------------------------------------------
PLAYBOOK = """\
version: 2
name: blue-isolate-test
topology: blue-test
seed: 1
steps:
  - id: write
    name: Write a PLC register from the users LAN
    technique: T0855
    actor: user1
    targets: [plc]
    params: {address: 0, value: 999}
    timing: {delay: 8}
"""


def test_manual_run_attack_run_and_blue_isolate_in_two_terminals(topo_file, tmp_path):
    """Terminal 1: ``attack run``; terminal 2, once its twin is up: ``blue isolate plc``.
    The attacker's Modbus write against the isolated PLC does not get through."""
    from cyberrange.twin.state import leftovers, live_states
    pb = tmp_path / "pb.yaml"
    pb.write_text(PLAYBOOK)
    before = {s.prefix for s in live_states()}
    term1 = subprocess.Popen([PY, "-m", "cyberrange.cli.main", "attack", "run", str(pb),
                              "--topology", str(topo_file), "--runs-dir", str(tmp_path / "runs")],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        state = _wait_up(before, term1.pid)
        r = cli("blue", "isolate", "plc", "--allow", "admin", "--twin", state.prefix,
                "--actor", "defender")
        assert r.returncode == 0, r.stderr
        out, _ = term1.communicate(timeout=120)
    finally:
        if term1.poll() is None:
            term1.kill()
            term1.wait()
    (run_dir,) = (tmp_path / "runs").iterdir()
    from cyberrange.attack.ledger import read_ledger
    (rec,) = read_ledger(run_dir / "ledger.jsonl")
    # the runner tells a defence from a failure where it knows how ("blocked", with the
    # reason); before that an unanswered connection was "failed". Never "error".
    assert rec["outcome"] == ("blocked" if "blocked_reason" in rec else "failed"), (rec, out)
    assert rec["outcome"] == "failed" or rec["blocked_reason"], rec
    assert "Traceback" not in json.dumps(rec)
    acts = [json.loads(x) for x in (run_dir / "actions.jsonl").read_text().splitlines()]
    assert [(a["action"], a["actor"], a["result"]) for a in acts] == \
        [("isolate", "defender", "applied")]
    assert acts[0]["time"] < rec["start"]
    plc_log = run_dir / "logs" / "plc-modbus-502.log"
    assert "999" not in (plc_log.read_text() if plc_log.exists() else "")
    assert not any(leftovers(state.prefix).values())


def _wait_up(before: set, owner: int, timeout: float = 60):
    from cyberrange.twin.state import live_states
    deadline = time.time() + timeout
    while time.time() < deadline:
        new = [s for s in live_states() if s.prefix not in before and s.owner_pid == owner]
        if new and new[0].status == "up":
            return new[0]
        time.sleep(0.1)
    raise AssertionError("the twin did not come up")


def test_up_block_then_sigkill_leaves_nothing_after_down(topo_file, tmp_path):
    """``up --detach`` in one terminal, ``blue`` in another; the owner SIGKILLed while blocks,
    a quarantine and a rule are active: ``down`` (as ``down --stale`` does for every twin whose
    owner died) removes every object, theirs included."""
    from cyberrange.twin.state import leftovers, live_states
    r = cli("up", topo_file, "--detach", "--runs-dir", tmp_path / "runs", timeout=300)
    mine = [s for s in live_states() if s.run_dir.startswith(str(tmp_path))]
    try:
        assert r.returncode == 0, r.stderr
        (state,) = mine
        for args in (["block", "--src", "user1", "--dst", "web", "--at", "firewall"],
                     ["block", "--src", "user2"], ["isolate", "plc"],
                     ["rule", "add", "fw", "deny from users to any"]):
            r = cli("blue", *args, "--twin", state.prefix)
            assert r.returncode == 0, r.stderr
        r = cli("blue", "list", "--json", "--twin", state.run_id)      # by run id too
        assert len(json.loads(r.stdout)) == 4
        r = cli("exec", "user1", "--twin", state.prefix, "--", "ping", "-c1", "-W1", IP["web"])
        assert r.returncode != 0                                        # blocked
        os.kill(state.owner_pid, signal.SIGKILL)
        time.sleep(0.3)
        r = cli("blue", "unblock", "A1", "--twin", state.prefix)
        assert r.returncode == 2 and "process that died" in r.stderr, r.stderr
    finally:
        # what `down --stale` does for each twin whose owner died, for these only (other
        # users' stale twins on the machine are theirs to remove; their test session may
        # also have removed this one already, as any stale twin that appeared meanwhile)
        downs = [cli("down", s.prefix) for s in mine if s.path.exists()]
    assert all(d.returncode == 0 for d in downs), [d.stderr for d in downs]
    assert not any(leftovers(state.prefix).values()), leftovers(state.prefix)
    assert json.loads((Path(state.run_dir) / "manifest.json").read_text())["status"] == "killed"
    # the log outlives the twin: its run folder still lists what was done
    r = cli("blue", "list", "--all", "--json", "--twin", state.run_dir)
    assert r.returncode == 0, r.stderr
    assert [x["action"] for x in json.loads(r.stdout)] == ["block", "block", "isolate",
                                                           "rule-add"]
