"""Replay of a pcap onto the twin through the real agent, with address and MAC rewriting: the
rewritten packets reach their new destinations, the ledger equals the capture per 5-tuple, and
any rewritten destination outside the step's (guarded) targets refuses the whole replay."""
from __future__ import annotations

import shutil

import pytest
from lab_c2 import ATTACKER, C2, LAB, V1, V2
from nslab import frames_sent, iter_pcap, lab_fixture, ledger_flows, needs_netns, pcap_flows

pytestmark = needs_netns

lab = lab_fixture(LAB)


OLD_ATT, OLD_T1, OLD_T2 = "192.168.7.5", "172.16.0.9", "172.16.0.10"


@pytest.fixture(scope="module")
def attack_pcap(tmp_path_factory):
    """A 'captured attack' from another network: a scan, a UDP probe, a ping, a handshake
    start to an open port, plus the victims' answers (which are not replayed)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    e = Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb")
    pk = []
    for port in (22, 80, 443, 8443):
        pk.append(e / IP(src=OLD_ATT, dst=OLD_T1) / TCP(sport=40001, dport=port, flags="S", seq=1000))
        pk.append(e / IP(src=OLD_T1, dst=OLD_ATT) / TCP(sport=port, dport=40001, flags="RA"))
    pk.append(e / IP(src=OLD_ATT, dst=OLD_T2) / UDP(sport=5353, dport=161) / (b"\x30" * 40))
    pk.append(e / IP(src=OLD_ATT, dst=OLD_T2) / ICMP(id=7, seq=1) / b"ping")
    pk.append(e / IP(src=OLD_ATT, dst=OLD_T1) / TCP(sport=40002, dport=8443, flags="S", seq=5))
    pk.append(e / IP(src=OLD_ATT, dst=OLD_T1) / TCP(sport=40002, dport=8443, flags="A", seq=6,
                                                    ack=99) / b"GET / HTTP/1.0\r\n\r\n")
    path = tmp_path_factory.mktemp("replay") / "attack.pcap"
    wrpcap(str(path), pk)
    return path


def _replay_and_check(lab, attack_pcap, name, **extra):
    lab.service("c2-http")
    cap = lab.capture(name)
    at_c2 = lab.capture(name + "-c2", port="pc")       # the unmapped C2 gets nothing
    at_v1 = lab.capture(name + "-v1", port="pv1")
    res = lab.agent("replay", [V1, V2], {"pcap": str(attack_pcap), "rate": 500, **extra})
    path, p_c2, p_v1 = cap.stop(), at_c2.stop(settle=0), at_v1.stop(settle=0)
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["mapping"] == {OLD_ATT: ATTACKER, OLD_T1: V1, OLD_T2: V2}
    ledger, captured = ledger_flows(res["flows"]), pcap_flows(path, ATTACKER)
    assert captured == ledger, (captured, ledger)
    # 8 replayed packets, plus one cleanup RST per replayed SYN's 5-tuple (5)
    assert res["facts"]["packets"] == 8
    syn_5tuples = {(ATTACKER, V1, "tcp", 40001, p) for p in (22, 80, 443, 8443)} | \
        {(ATTACKER, V1, "tcp", 40002, 8443)}
    assert {k for k in ledger if k[2] == "tcp"} == syn_5tuples
    assert ledger[(ATTACKER, V1, "tcp", 40002, 8443)][0] == 3       # SYN, ACK+data, cleanup RST
    assert ledger[(ATTACKER, V2, "udp", 5353, 161)] == [1, 14 + 20 + 8 + 40]
    assert ledger[(ATTACKER, V2, "icmp", 8, 0)] == [1, 14 + 20 + 8 + 4]
    # delivered, rewritten: V1 got its 7 TCP frames addressed to its own MAC; nothing to C2
    v1_frames = [buf for _t, _o, buf in iter_pcap(p_v1)
                 if buf[:6] == bytes.fromhex(lab.mac["v1"].replace(":", ""))
                 and buf[6:12] == bytes.fromhex(lab.mac["a"].replace(":", ""))]
    assert len(v1_frames) == 4 + 2 + 5, len(v1_frames)        # SYNs, 40002's 2, cleanup RSTs
    assert pcap_flows(p_c2, ATTACKER) == {}
    return res


def test_replay_rewrites_and_delivers_with_fastsend(lab, attack_pcap):
    res = _replay_and_check(lab, attack_pcap, "replay-fast")
    assert "fastsend" in " ".join(res["log"])


@pytest.mark.skipif(not shutil.which("tcpreplay"), reason="tcpreplay not installed")
def test_replay_with_tcpreplay(lab, attack_pcap):
    res = _replay_and_check(lab, attack_pcap, "replay-tcpreplay", sender="tcpreplay")
    assert "tcpreplay" in " ".join(res["log"])


def test_replay_refuses_destinations_outside_the_twin(lab, attack_pcap):
    cap = lab.capture("replay-guard")
    outside = lab.agent("replay", [V1, "203.0.113.9"], {"pcap": str(attack_pcap)})
    too_few = lab.agent("replay", [V1], {"pcap": str(attack_pcap)})     # T2 would stay 172.16.0.10
    mapped_out = lab.agent("replay", [V1, V2], {"pcap": str(attack_pcap), "ip_map": {
        OLD_ATT: ATTACKER, OLD_T1: V1, OLD_T2: "8.8.8.8"}})
    mapped_c2 = lab.agent("replay", [V1, V2], {"pcap": str(attack_pcap), "ip_map": {
        OLD_ATT: ATTACKER, OLD_T1: V1, OLD_T2: C2}})               # in the twin, not a target
    path = cap.stop()
    assert outside["outcome"] == "error" and "outside the twin" in outside["error"]
    for r in (too_few, mapped_out, mapped_c2):
        assert r["outcome"] == "error" and "replay refused" in r["error"], r
        assert "nothing was sent" in r["error"] and r["flows"] == []
    assert frames_sent(path, lab.mac["a"], ATTACKER) == 0
