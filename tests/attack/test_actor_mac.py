"""The actor's MAC in the ledger (``source.mac``, short ``actor_mac``) and scoring's match of an
ARP alert by MAC (no root: a stub agent and a stub ``ip -j addr show``).

An ARP-poisoning alert names the poisoner's MAC and, when that host never used its own
address, no source IP: scoring can credit it to the step only through the MAC the runner
recorded (cyberrange/attack/runner.py ``read_actor_mac``, cyberrange/score/score.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
from lab_netns import ATTACKER, T1, T2, lab_topology

from cyberrange.attack.ledger import append_record, make_record, read_ledger
from cyberrange.attack.playbook import load_playbook
from cyberrange.attack.runner import mac_for_ip, read_actor_mac, run_playbook
from cyberrange.score.score import group_steps, score_run
from cyberrange.telemetry.schema import ALERT_SCHEMA, FLOW_SCHEMA

MAC = "02:5e:00:aa:bb:01"
#: ``ip -j addr show`` in an actor's namespace, trimmed (iproute2 6.1)
IP_ADDR = [
    {"ifindex": 1, "ifname": "lo", "address": "00:00:00:00:00:00",
     "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifindex": 2, "ifname": "eth1", "address": "02:5e:00:aa:bb:99",
     "addr_info": [{"family": "inet", "local": "10.99.1.7", "prefixlen": 24}]},
    {"ifindex": 3, "ifname": "eth0", "address": MAC.upper(),
     "addr_info": [{"family": "inet", "local": ATTACKER, "prefixlen": 24},
                   {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
]


def test_mac_of_the_interface_that_holds_the_address():
    assert mac_for_ip(IP_ADDR, ATTACKER) == MAC                 # eth0, not eth1 or lo
    assert mac_for_ip(IP_ADDR, "10.99.1.7") == "02:5e:00:aa:bb:99"
    assert mac_for_ip(IP_ADDR, "10.99.0.200") is None
    assert mac_for_ip({"not": "a list"}, ATTACKER) is None
    assert mac_for_ip([{"ifname": "x", "address": "garbage",
                        "addr_info": [{"local": ATTACKER}]}], ATTACKER) is None


class _Runs:
    """A node runner's ``run``: ``ip -j addr show`` answers ``out`` (or raises ``exc``)."""

    def __init__(self, out="", exc=None):
        self.out, self.exc, self.calls = out, exc, []

    def run(self, node, argv, timeout=30):
        self.calls.append((node, argv))
        if self.exc:
            raise self.exc
        return subprocess.CompletedProcess(argv, 0, self.out, "")


def test_read_actor_mac_never_fails_a_step():
    ok = _Runs(json.dumps(IP_ADDR))
    assert read_actor_mac(ok, "attacker", ATTACKER) == MAC
    assert ok.calls == [("attacker", ["ip", "-j", "addr", "show"])]
    assert read_actor_mac(object(), "attacker", ATTACKER) is None    # a runner without run()
    assert read_actor_mac(_Runs("not json"), "attacker", ATTACKER) is None
    assert read_actor_mac(_Runs(exc=OSError("no ip")), "attacker", ATTACKER) is None


def test_the_ledger_writes_source_mac_and_reads_both_spellings(tmp_path):
    path = tmp_path / "ledger.jsonl"
    base = {"run_id": "r", "step_id": "poison", "name": "p", "technique": "T1557.002",
            "actor": "attacker", "actor_ip": ATTACKER, "targets": [T1, T2], "start": 1.0,
            "end": 2.0, "outcome": "succeeded"}
    append_record(path, make_record(**base, actor_mac=MAC.upper().replace(":", "-")))
    append_record(path, make_record(**base, actor_mac="not-a-mac"))
    line = json.loads(path.read_text().splitlines()[0])
    assert line["source.mac"] == MAC and "actor_mac" not in line     # ECS name, normalised
    new, bad = read_ledger(path)
    assert new["actor_mac"] == new["source.mac"] == MAC
    assert bad["actor_mac"] is None                                  # never a guess
    old = tmp_path / "old.jsonl"                                     # written before: no MAC
    old.write_text(json.dumps({k: v for k, v in line.items() if k != "source.mac"}) + "\n")
    assert read_ledger(old)[0]["actor_mac"] is None


STUB = r"""
import json, sys, time
req = json.loads(sys.stdin.read())
print(json.dumps({"outcome": "succeeded", "start": time.time(), "end": time.time(),
                  "flows": [], "facts": {}, "error": None, "arp_frames": 4}))
"""


class _StubTwin(_Runs):
    """``popen``: a stub agent; ``run``: ``ip -j addr show`` of the attacker's namespace."""

    def __init__(self, tmp):
        super().__init__(json.dumps(IP_ADDR))
        self.script = tmp / "agent.py"
        self.script.write_text(STUB)

    def popen(self, node, argv, **kw):
        return subprocess.Popen([sys.executable, str(self.script)], **kw)


def test_the_runner_records_the_actors_mac_once_per_actor(tmp_path):
    pb = tmp_path / "pb.yaml"
    pb.write_text("version: 2\nname: mac\nsteps:\n"
                  "  - {id: a, technique: T1018-arp, actor: attacker, targets: [lab]}\n"
                  "  - {id: b, technique: T1018-arp, actor: attacker, targets: [lab]}\n")
    twin = _StubTwin(tmp_path)
    records = run_playbook(load_playbook(pb), lab_topology(), twin, tmp_path / "l.jsonl", "r")
    assert [r["actor_mac"] for r in records] == [MAC, MAC]
    assert [r["actor_mac"] for r in read_ledger(tmp_path / "l.jsonl")] == [MAC, MAC]
    assert len(twin.calls) == 1                                      # read once per actor


def _table(row: dict, schema) -> pa.Table:
    cols = {}
    for f in schema:
        v = row.get(f.name)
        cols[f.name] = (pa.array([v], pa.int64()).cast(f.type) if pa.types.is_timestamp(f.type)
                        else pa.array([v], f.type))
    return pa.table(cols, schema=schema)


def _alert(t, src, mac, tech="T1557.002"):
    us = int(t * 1e6)
    return _table({"@timestamp": us, "event.start": us, "event.end": us,
                   "rule.name": "arp-spoofing", "source.ip": src, "cyberrange.flow_ids": [],
                   "threat.technique.id": tech,
                   "cyberrange.evidence": json.dumps({"mac": mac, "packets": 6})}, ALERT_SCHEMA)


def _poison(t0, actor_mac=None, facts=None, actor="attacker", ip=ATTACKER):
    return make_record(run_id="r", step_id="poison", name="p", technique="T1557.002",
                       actor=actor, actor_ip=ip, actor_mac=actor_mac, targets=[T1, T2],
                       start=t0, end=t0 + 10, outcome="succeeded", facts=facts or {},
                       arp_frames=12)


def _detected(ledger, alert) -> bool:
    card = score_run(ledger, FLOW_SCHEMA.empty_table(), alert)
    return next(s for s in card["steps"] if s["step_id"] == "poison")["detected"]


def test_an_arp_alert_without_source_ip_is_matched_by_the_recorded_mac():
    t0 = 1.7e9
    nameless = _alert(t0 + 3, None, MAC.upper())
    assert _detected([_poison(t0, actor_mac=MAC)], nameless)         # new runs: source.mac
    assert not _detected([_poison(t0)], nameless)                    # no MAC known: no match
    # older runs: the actor_mac fact ARP poisoning has always reported stands in
    assert _detected([_poison(t0, facts={"actor_mac": MAC})], nameless)
    assert not _detected([_poison(t0, actor_mac=MAC)], _alert(t0 + 3, None, "02:00:00:00:00:07"))
    assert not _detected([_poison(t0, actor_mac=MAC)], _alert(t0 + 60, None, MAC))  # too late
    assert _detected([_poison(t0)], _alert(t0 + 3, ATTACKER, "02:00:00:00:00:07"))  # by address


def test_a_step_from_several_actors_matches_each_actors_address_and_mac():
    t0 = 1.7e9
    two = [_poison(t0, actor_mac=MAC),
           _poison(t0, actor_mac="02:5e:00:aa:bb:02", actor="t1", ip=T1)]
    step = group_steps(two)[0]
    assert step["actor_ips"] == [ATTACKER, T1]
    assert step["actor_macs"] == [MAC, "02:5e:00:aa:bb:02"]
    assert _detected(two, _alert(t0 + 3, None, "02:5e:00:aa:bb:02"))
    assert _detected(two, _alert(t0 + 3, T1, None))
