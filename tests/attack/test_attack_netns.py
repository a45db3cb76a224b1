"""Attack techniques with real packets in a tiny lab of network namespaces (tests/attack/lab_netns.py).

The key check: the ledger's packet counts equal the captured packets PER 5-TUPLE from the actor.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from lab_netns import ATTACKER, LAB, ROUTER, T1, T2, T3, Playbook, Step, lab_topology
from nslab import actor_flows, lab_fixture, ledger_flows, needs_netns, packets_only

pytestmark = needs_netns

lab = lab_fixture(LAB)


def frames_from(packets, mac):
    from scapy.layers.l2 import Ether
    return [p for p in packets if Ether in p and p[Ether].src == mac]


# ----------------------------------------------------------------------------- tests
def test_ping_sweep_finds_exactly_the_live_hosts(lab):
    lab.flush_neigh()
    cap = lab.capture("sweep")
    targets = [ROUTER, T1, T2, "10.99.0.23", "10.99.0.24", T3, "10.99.1.31"]
    res = lab.agent("T1018", targets, {"timeout": 1.0, "rate": 200})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["hosts"] == [ROUTER, T1, T2, T3]
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts, ATTACKER)
    # dead on-link hosts get only ARP; the off-link dead one gets its echo (to the gateway)
    assert {k[1] for k in ledger} == {ROUTER, T1, T2, T3, "10.99.1.31"}
    assert captured == ledger               # packets AND bytes (frame length incl. Ethernet)
    assert all(k[2:] == ("icmp", 8, 0) and v == [1, 42] for k, v in ledger.items())


def test_syn_scan_open_ports_and_kernel_rsts(lab):
    cap = lab.capture("scan")
    res = lab.agent("T1046", [T1, T2, ROUTER], {"ports": [22, 80, 443, 2222], "rate": 500,
                                                 "timeout": 1.0})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert sorted(res["facts"]["open"]) == sorted([f"{T1}:22", f"{T1}:2222", f"{T2}:80"])
    assert res["facts"]["hosts"] == [T1, T2]
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts, ATTACKER)
    assert captured == ledger, (captured, ledger)
    # empirical: every open port = our SYN + exactly one RST from the actor's kernel
    for k, (n, _b) in captured.items():
        is_open = f"{k[1]}:{k[4]}" in res["facts"]["open"]
        assert n == (2 if is_open else 1), k
    from scapy.layers.inet import IP, TCP
    rst = [p for p in pkts if IP in p and p[IP].src == ATTACKER and TCP in p and p[TCP].flags == "R"]
    assert len(rst) == 3 and all(len(p) == 54 for p in rst)


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft for the router's drop rule")
def test_syn_scan_through_a_dropping_firewall_is_blocked(lab):
    cap = lab.capture("scan-blocked")
    res = lab.agent("T1046", [T3], {"ports": [22, 80], "rate": 100, "timeout": 0.5})
    pkts = cap.stop_packets()
    assert res["outcome"] == "blocked", res
    assert res["facts"] == {"open": [], "hosts": []}
    assert actor_flows(pkts, ATTACKER) == ledger_flows(res["flows"])


def test_brute_force_finds_the_weak_password_with_exact_accounting(lab):
    cap = lab.capture("brute")
    res = lab.agent("T1110.001", [f"{T1}:22", f"{T2}:80"],
                {"ports": [22], "usernames": ["root", "admin"],
                 "passwords": ["password", "admin123", "letmein"], "pause": 0.02,
                 "stop_on_success": True})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"] == {"credentials": [{"target": f"{T1}:22", "user": "admin",
                                             "password": "admin123"}],
                            "compromised": [T1]}
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts, ATTACKER)
    assert len(ledger) == 5                   # root x3, admin x2 (stop on success)
    assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    # bytes: an estimate from TCP_INFO; report how close it is
    diffs = {k: ledger[k][1] - captured[k][1] for k in ledger}
    print("brute bytes ledger-capture per connection:", diffs)
    assert all(abs(d) <= 12 for d in diffs.values()), diffs


def test_brute_force_refused_and_dropped_are_blocked(lab):
    cap = lab.capture("brute-blocked")
    targets = [f"{T2}:23"] + ([f"{T3}:22"] if lab.firewall else [])
    res = lab.agent("T1110.001", targets,
                {"ports": [22, 23], "usernames": ["root"], "passwords": ["a", "b"],
                 "pause": 0.0, "connect_timeout": 1.5})
    pkts = cap.stop_packets()
    assert res["outcome"] == "blocked", res
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts, ATTACKER)
    assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    print("blocked brute flows:", ledger)


def test_out_of_twin_target_sends_nothing(lab):
    from scapy.layers.l2 import Ether  # noqa: F401
    mac = lab.nsx("a", "cat", "/sys/class/net/eth0/address").stdout.strip()
    cap = lab.capture("guard")
    # 1) the agent's own check: T3 is a real lab host, but not in this request's allowed space
    res = lab.agent("T1018", [T1, T3], {"timeout": 0.2}, allowed=["10.99.0.0/24"])
    # 2) the runner refuses 8.8.8.8, 127.0.0.1 and 10.0.0.0/8 before starting any agent
    from cyberrange.attack.runner import run_playbook
    from cyberrange.errors import ContainmentError
    topo = lab_topology()
    for bad in (["8.8.8.8"], ["127.0.0.1"], ["10.0.0.0/8"], [T1, "8.8.8.8"]):
        pb = Playbook("bad", [Step("s1", "bad", "T1018", "attacker", bad, {"timeout": 0.2})])
        with pytest.raises(ContainmentError, match="nothing was sent"):
            run_playbook(pb, topo, lab.runner(), lab.tmp / "guard-ledger.jsonl", "guard")
    pkts = cap.stop_packets()
    assert res["outcome"] == "error" and "outside the twin" in res["error"] and not res["flows"]
    assert frames_from(pkts, mac) == []      # not one frame, not even ARP
    assert not (lab.tmp / "guard-ledger.jsonl").exists()


# ----------------------------------------------------------------------------- runner
def test_runner_chains_sweep_scan_brute(lab):
    from cyberrange.attack.ledger import read_ledger
    from cyberrange.attack.runner import run_playbook
    lab.flush_neigh()
    pb = Playbook("chain", [
        Step("sweep", "sweep the lab", "T1018", "attacker", ["lab", "t3"],
             {"timeout": 1.0, "rate": 1000}),
        Step("scan", "scan live hosts", "T1046", "attacker", ["#{sweep.hosts}"],
             {"ports": [22, 80, 443, 2222], "rate": 500, "timeout": 1.0}, delay_s=0.2),
        Step("brute", "guess passwords", "T1110.001", "attacker", ["#{scan.open}"],
             {"ports": [22], "usernames": ["admin"], "passwords": ["x", "admin123"],
              "pause": 0.01, "stop_on_success": True}, delay_s=0.2),
    ])
    events = []
    ledger_path = lab.tmp / "runs" / "r1" / "ledger.jsonl"
    cap = lab.capture("chain")
    t0 = time.time()
    records = run_playbook(pb, lab_topology(), lab.runner(), ledger_path, "r1",
                           on_event=lambda k, p: events.append((k, p)))
    took = time.time() - t0
    pkts = cap.stop_packets()
    assert [e[0] for e in events] == ["step_start", "step_end"] * 3
    assert read_ledger(ledger_path) == records
    sweep, scan, brute = records
    assert sweep["facts"]["hosts"] == [ROUTER, T1, T2, T3]
    assert len(sweep["targets"]) == 254 and ATTACKER not in sweep["targets"]  # 253 + t3
    assert sorted(scan["facts"]["open"]) == sorted([f"{T1}:22", f"{T1}:2222", f"{T2}:80"])
    assert brute["facts"]["credentials"] == [{"target": f"{T1}:22", "user": "admin",
                                              "password": "admin123"}]
    assert [r["outcome"] for r in records] == ["succeeded"] * 3
    import json

    from cyberrange.attack.ledger import ECS_KEYS
    written = [json.loads(x) for x in ledger_path.read_text().splitlines()]
    assert [list(w) for w in written] == [list(ECS_KEYS)] * 3   # the file: ECS names only
    for r in records:                                           # in memory: both spellings
        assert list(r) == list(ECS_KEYS) + [
            "run_id", "step_id", "name", "technique", "actor", "actor_ip", "actor_mac",
            "targets", "start", "end", "outcome", "packets_sent", "bytes_sent",
            "flows", "facts", "error", "repeat", "skipped_reason",
            "blocked_reason", "arp_frames"]
        assert r["packets_sent"] == sum(f["packets"] for f in r["flows"])
    all_flows = [f for r in records for f in r["flows"]]
    assert packets_only(actor_flows(pkts, ATTACKER)) == packets_only(ledger_flows(all_flows))
    print(f"chain took {took:.1f}s; sweep log: {sweep}")


def test_agent_crash_keeps_stderr(lab, tmp_path):
    """A broken agent: the runner records outcome error with the agent's stderr."""
    from cyberrange.attack.runner import run_playbook

    class CrashRunner:
        def popen(self, node, argv, **kw):
            return subprocess.Popen([sys.executable, "-c",
                                     "import sys; sys.stderr.write('boom: agent exploded'); "
                                     "sys.exit(3)"], **kw)
    pb = Playbook("crash", [Step("s", "s", "T1018", "attacker", [T1])])
    recs = run_playbook(pb, lab_topology(), CrashRunner(), tmp_path / "l.jsonl", "c")
    assert recs[0]["outcome"] == "error" and "boom: agent exploded" in recs[0]["error"]
    assert "status 3" in recs[0]["error"]
