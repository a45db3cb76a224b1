"""Credential access against the namespace lab (tests/attack/lab.py): password spraying (login and
SSH) and SSH brute force against the real paramiko SSH server, with the ledger compared to a
tcpdump capture per 5-tuple (packets and bytes)."""
from __future__ import annotations

import shutil

from lab import ATTACKER, LAB, T1, T2, T3
from nslab import assert_exact, lab_fixture, needs_netns, read_jsonl

pytestmark = needs_netns

lab = lab_fixture(LAB.without("http", "dns"))


def test_ssh_brute_force_finds_the_weak_password(lab):
    cap = lab.capture("ssh-brute")
    res = lab.agent("T1110.001", [f"{T1}:22"],
                    {"protocol": "ssh", "ports": [22], "usernames": ["root", "admin"],
                     "passwords": ["password", "admin123"], "pause": 0.02})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"] == {"credentials": [{"target": f"{T1}:22", "user": "admin",
                                             "password": "admin123"}], "compromised": [T1]}
    ledger, captured = assert_exact(res, pkts, ATTACKER)
    assert len(ledger) == 4                       # root x2, admin x2 (stop on success)
    print("ssh brute flows (packets, bytes):", sorted(ledger.values()))
    auth = [e for e in read_jsonl(lab.service("ssh-t1")) if e["event"] == "auth"]
    assert [(e["user"], e["ok"]) for e in auth][-4:] == [("root", False), ("root", False),
                                                         ("admin", False), ("admin", True)]


def test_password_spray_finds_the_weak_accounts_round_by_round(lab):
    cap = lab.capture("spray")
    res = lab.agent("T1110.003", [f"{T1}:22", f"{T2}:22"],
                    {"protocol": "ssh", "usernames": ["admin", "operator", "root"],
                     "passwords": ["Winter2024!", "admin123"], "round_pause": 0.5, "pause": 0.0})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["credentials"] == [
        {"target": f"{T2}:22", "user": "operator", "password": "Winter2024!"},   # round 1
        {"target": f"{T1}:22", "user": "admin", "password": "admin123"}]          # round 2
    assert res["facts"]["compromised"] == [T2, T1]
    ledger, _ = assert_exact(res, pkts, ATTACKER)
    assert len(ledger) == 6 + 5                   # round 2 skips operator@t2, found in round 1


def test_password_spray_over_the_login_dialogue(lab):
    cap = lab.capture("spray-login")
    res = lab.agent("T1110.003", [f"{T1}:2222"],
                    {"ports": [2222], "usernames": ["root", "admin"], "passwords": ["admin123"],
                     "round_pause": 0.0, "pause": 0.0})
    pkts = cap.stop_packets()
    assert res["facts"]["credentials"] == [{"target": f"{T1}:2222", "user": "admin",
                                            "password": "admin123"}]
    assert_exact(res, pkts, ATTACKER)


def test_ssh_guessing_refused_and_dropped_is_blocked(lab):
    cap = lab.capture("spray-blocked")
    targets = [f"{T2}:23"] + ([f"{T3}:22"] if shutil.which("nft") else [])
    res = lab.agent("T1110.003", targets,
                    {"protocol": "ssh", "ports": [22, 23], "usernames": ["admin", "root"],
                     "passwords": ["a", "b"], "round_pause": 0.1, "connect_timeout": 1.5})
    pkts = cap.stop_packets()
    assert res["outcome"] == "blocked", res
    ledger, _ = assert_exact(res, pkts, ATTACKER)
    # one connection per service, then it is left out: refused = 1 SYN, dropped = 2 SYNs
    assert sorted(v[0] for v in ledger.values()) == ([1, 2] if len(targets) == 2 else [1])
