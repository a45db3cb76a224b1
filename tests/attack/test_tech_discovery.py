"""Discovery techniques against a namespace lab (tests/attack/lab.py): ARP scan, TCP connect scan,
UDP scan, banner grab. Each runs through the real agent in the attacker's namespace and its
ledger is compared with a tcpdump capture of the attacker's switch port, per 5-tuple."""
from __future__ import annotations

import pytest
from lab import ATTACKER, DEAD, LAB, LOGIN_BANNER, ROUTER, SSH_BANNER, T1, T2, T3
from nslab import actor_flows, assert_exact, lab_fixture, needs_netns

pytestmark = needs_netns

lab = lab_fixture(LAB)


def test_arp_scan_finds_exactly_the_live_hosts_without_ip_packets(lab):
    from scapy.layers.l2 import ARP, Ether
    lab.flush_neigh()
    mac = lab.nsx("a", "cat", "/sys/class/net/eth0/address").stdout.strip()
    cap = lab.capture("arp")
    res = lab.agent("T1018-arp", [ROUTER, T1, T2, DEAD, T3],
                    {"timeout": 0.5, "rate": 200, "retries": 1})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["hosts"] == [ROUTER, T1, T2]          # t3 is behind the router
    assert set(res["facts"]["macs"]) == {ROUTER, T1, T2}
    assert res["flows"] == [] and actor_flows(pkts, ATTACKER) == {}       # not one IP packet
    requests = [p for p in pkts if ARP in p and p[Ether].src == mac and p[ARP].op == 1]
    # 4 on-link targets, then one retry for the dead one
    assert res["facts"]["arp_requests"] == len(requests) == 5
    assert sorted(p[ARP].pdst for p in requests) == sorted([ROUTER, T1, T2, DEAD, DEAD])


def test_connect_scan_finds_exactly_the_open_ports(lab):
    cap = lab.capture("connect")
    res = lab.agent("T1046-connect", [T1, T2, ROUTER, DEAD],
                    {"ports": [22, 80, 443, 2222], "rate": 200, "timeout": 1.5})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert sorted(res["facts"]["open"]) == sorted([f"{T1}:22", f"{T1}:2222", f"{T2}:22",
                                                   f"{T2}:80"])
    assert res["facts"]["hosts"] == [T1, T2]
    ledger, captured = assert_exact(res, pkts, ATTACKER)
    # open: SYN, ACK, RST, plus one ACK per segment of a service that talks first (ssh: its
    # banner; login: banner and prompt); http waits for the client: exactly 3
    for k, (n, _b) in captured.items():
        port = f"{k[1]}:{k[4]}"
        if port in res["facts"]["open"]:
            assert n == 3 if k[4] == 80 else n >= 4, (k, n)
        else:
            assert n == 1, (k, n)
    assert DEAD not in {k[1] for k in ledger}                   # only ARP went to it


@pytest.mark.skipif("not lab_has_nft()")
def test_connect_scan_through_a_dropping_firewall_is_blocked(lab):
    cap = lab.capture("connect-blocked")
    res = lab.agent("T1046-connect", [T3], {"ports": [22, 80], "timeout": 1.5})
    pkts = cap.stop_packets()
    assert res["outcome"] == "blocked", res
    ledger, _ = assert_exact(res, pkts, ATTACKER)
    assert all(v[0] == 2 for v in ledger.values()), ledger      # SYN + one retransmission


def test_udp_scan_tells_open_from_closed(lab):
    cap = lab.capture("udp")
    res = lab.agent("T1046-udp", [T1], {"ports": [53, 9999], "timeout": 1.0, "retries": 1})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["open"] == [f"{T1}:53"]
    assert res["facts"]["closed"] == [f"{T1}:9999"]
    ledger, _ = assert_exact(res, pkts, ATTACKER)
    assert {k[2] for k in ledger} == {"udp"}                     # no ICMP from the actor's kernel
    assert all(v[0] == 1 for v in ledger.values())               # both answered: no retry


def test_banner_grab_reads_ssh_login_and_http_banners(lab):
    cap = lab.capture("banner")
    res = lab.agent("T1046-banner", [f"{T1}:22", f"{T1}:2222", f"{T2}:80", f"{T2}:443"], {})
    pkts = cap.stop_packets()
    assert res["outcome"] == "succeeded", res
    b = res["facts"]["banners"]
    assert b[f"{T1}:22"] == SSH_BANNER
    assert b[f"{T1}:2222"] == LOGIN_BANNER
    assert b[f"{T2}:80"].startswith("HTTP/1.0 200") and "SimpleHTTP" in b[f"{T2}:80"]
    assert f"{T2}:443" not in b
    assert_exact(res, pkts, ATTACKER)


def lab_has_nft():
    import shutil
    return bool(shutil.which("nft"))


def test_actor_is_the_source(lab):
    """Sanity for the helpers: every ledger flow starts at the attacker."""
    res = lab.agent("T1046-connect", [T1], {"ports": [22], "timeout": 1.5})
    assert {f["src"] for f in res["flows"]} == {ATTACKER}
