"""T1021.004 lateral movement over SSH in the namespace lab (tests/attack/lab.py): credentials from an
earlier step's facts, commands run on the target, a step run from a compromised host, and a
firewall that blocks it. Ledger == capture per 5-tuple (packets and bytes)."""
from __future__ import annotations

import shutil

from lab import ATTACKER, LAB, T1, T2, T3
from nslab import assert_exact, lab_fixture, needs_netns, read_jsonl

pytestmark = needs_netns

lab = lab_fixture(LAB.without("login", "http", "dns"))


def test_lateral_movement_with_credentials_found_by_brute_force(lab):
    brute = lab.agent("T1110.001", [f"{T1}:22"],
                      {"protocol": "ssh", "ports": [22], "usernames": ["admin"],
                       "passwords": ["x", "admin123"], "pause": 0.0})
    creds = brute["facts"]["credentials"]
    assert creds == [{"target": f"{T1}:22", "user": "admin", "password": "admin123"}]
    cap = lab.capture("lateral")
    # what the engine passes for  credentials: "#{brute.credentials}"
    res = lab.agent("T1021.004", [T1, T2], {"credentials": creds, "commands": ["id", "hostname"],
                                            "pause": 0.0})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["compromised"] == [T1]             # admin/admin123 is wrong on t2
    (session,) = res["facts"]["sessions"]
    assert session["target"] == f"{T1}:22" and session["user"] == "admin"
    assert session["outputs"] == {"id": "uid=1000(admin) gid=1000(admin) groups=1000(admin)\n",
                                  "hostname": "t1\n"}
    ledger, _ = assert_exact(res, pkts, ATTACKER)
    assert len(ledger) == 2                                # one login per host
    execs = [e for e in read_jsonl(lab.service("ssh-t1")) if e["event"] == "exec"]
    assert [e["command"] for e in execs][-2:] == ["id", "hostname"]


def test_lateral_movement_runs_from_the_compromised_host(lab):
    """The step's actor is t1 (as ``actor: "#{brute.compromised}"`` resolves): the agent runs in
    t1's namespace and every packet comes from t1's address."""
    cap = lab.capture("lateral-from-t1", port="p1")
    res = lab.agent("T1021.004", [T2], {"credentials": ["operator:Winter2024!"],
                                        "commands": ["hostname", "cat /etc/hostname"]},
                    actor="t1")
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["sessions"][0]["outputs"]["hostname"] == "t2\n"
    assert {f["src"] for f in res["flows"]} == {T1}
    assert_exact(res, pkts, T1)
    peers = {e["peer"].split(":")[0] for e in read_jsonl(lab.service("ssh-t2"))
             if e["event"] == "auth"}
    assert T1 in peers


def test_lateral_movement_behind_a_firewall_is_blocked(lab):
    cap = lab.capture("lateral-blocked")
    targets = [f"{T2}:2200"] + ([T3] if shutil.which("nft") else [])
    res = lab.agent("T1021.004", targets, {"user": "admin", "password": "admin123",
                                           "connect_timeout": 1.5})
    pkts = cap.stop_packets()
    assert res["outcome"] == "blocked", res
    assert res["facts"]["compromised"] == [] and res["facts"]["sessions"] == []
    assert_exact(res, pkts, ATTACKER)
