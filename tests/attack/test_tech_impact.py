"""T1499 SYN flood and T1498 UDP flood through the real agent (fastsend): the target receives
the packets, the ledger equals the capture per 5-tuple (exact), the paced rate holds, and the
bounds and the containment guard refuse before a single frame."""
from __future__ import annotations

from lab_c2 import ATTACKER, C2, LAB, V2
from nslab import frames_sent, lab_fixture, ledger_flows, needs_netns, pcap_flows

pytestmark = needs_netns

lab = lab_fixture(LAB)


def tcp_in_segs(lab, node) -> int:
    lines = lab.nsx(node, "cat", "/proc/net/snmp").stdout.splitlines()
    tcp = [ln.split() for ln in lines if ln.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("InSegs")])


def test_syn_flood_paced_exact_and_received(lab):
    lab.service("c2-http")
    before = tcp_in_segs(lab, "c")
    cap = lab.capture("synflood", buffer_kib=65536, snap=96)
    res = lab.agent("T1499", [f"{C2}:8443"], {"count": 20000, "rate": 20000, "sources": 16,
                                               "seed": 4})
    path = cap.stop(settle=0.5)
    assert cap.dropped() == 0, cap.stats
    received = tcp_in_segs(lab, "c") - before
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["packets"] == 20000
    assert abs(res["facts"]["pps"] - 20000) / 20000 < 0.05, res["log"]
    assert res["facts"]["answers"] > 0                 # SYN-ACKs came back (their RSTs suppressed)
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    # 1250 SYNs per source port + the cleanup RST that clears the target's half-open entry,
    # sent twice (one lost on a lossy link would leave the entry to draw kernel RSTs later)
    assert len(ledger) == 16 and {v[0] for v in ledger.values()} == {1252}
    assert captured == ledger                          # packets and bytes, per 5-tuple
    assert all(k[2] == "tcp" and k[4] == 8443 for k in ledger)
    assert received >= 20000                           # the target's TCP stack saw every SYN
    # nothing else from the actor: no kernel RST reached the wire, not even later
    import time
    time.sleep(1.5)                                    # the target's first SYN-ACK retransmit
    cap2 = lab.capture("synflood-after")
    time.sleep(1.5)
    assert pcap_flows(cap2.stop(), ATTACKER) == {}


def test_udp_flood_unpaced_exact(lab):
    cap = lab.capture("udpflood", buffer_kib=65536, snap=96)
    res = lab.agent("T1498", [V2], {"count": 5000, "rate": 0, "dport": 9, "size": 100,
                                    "sources": 8})
    path = cap.stop(settle=0.5)
    assert res["outcome"] == "succeeded", res
    print("unpaced UDP flood:", res["log"])
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    assert cap.dropped() == 0, cap.stats
    assert captured == ledger and sum(v[0] for v in ledger.values()) == 5000
    assert all(v[1] == v[0] * (14 + 20 + 8 + 100) for v in ledger.values())


def test_flood_bounds_and_guard_refuse_before_sending(lab):
    cap = lab.capture("flood-guard")
    too_many = lab.agent("T1499", [V2], {"count": 20_000_000})
    too_long = lab.agent("T1498", [V2], {"count": 10, "duration": 400})
    outside = lab.agent("T1498", [V2, "198.51.100.1"], {"count": 10})
    path = cap.stop()
    assert too_many["outcome"] == "error" and "10,000,000" in too_many["error"]
    assert too_long["outcome"] == "error" and "300" in too_long["error"]
    assert outside["outcome"] == "error" and "outside the twin" in outside["error"]
    assert frames_sent(path, lab.mac["a"], ATTACKER) == 0
