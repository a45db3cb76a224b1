"""T1557.002 ARP cache poisoning through the real agent: a victim's neighbour entry for the other
victim points at the attacker's MAC during the attack (and their traffic is relayed), and at the
real MAC again afterwards. Victims outside the twin are refused before a single frame."""
from __future__ import annotations

import threading
import time

from lab_c2 import ATTACKER, LAB, V1, V2
from nslab import frames_sent, iter_pcap, lab_fixture, needs_netns, pcap_flows

pytestmark = needs_netns

lab = lab_fixture(LAB)


def neigh_mac(lab, node, ip):
    out = lab.nsx(node, "ip", "neigh", "show", ip, "dev", "eth0").stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


def arp_replies_from(path, mac):
    import dpkt
    n = 0
    for _ts, _orig, buf in iter_pcap(path):
        eth = dpkt.ethernet.Ethernet(buf)
        if isinstance(eth.data, dpkt.arp.ARP) and eth.data.op == 2 and eth.src == bytes.fromhex(
                mac.replace(":", "")) and ".".join(map(str, eth.data.spa)) != ATTACKER:
            n += 1
    return n


def test_arp_spoofing_poisons_relays_and_restores(lab):
    amac = lab.mac["a"]
    lab.nsx("v1", "ping", "-c", "1", "-W", "1", V2)               # both caches know each other
    assert neigh_mac(lab, "v1", V2) == lab.mac["v2"]
    cap = lab.capture("mitm")
    box = {}
    t = threading.Thread(target=lambda: box.update(res=lab.agent(
        "T1557.002", [V1, V2], {"duration": 3, "interval": 0.5, "forward": True,
                                "timeout": 0.3})))
    t.start()
    deadline = time.time() + 5                  # the agent starts (scapy import, ARP) first
    while time.time() < deadline:
        during = (neigh_mac(lab, "v1", V2), neigh_mac(lab, "v2", V1))
        if during == (amac, amac):
            break
        time.sleep(0.1)
    ping = lab.nsx("v1", "ping", "-c", "3", "-i", "0.2", "-W", "1", V2, check=False)
    t.join(30)
    time.sleep(0.2)
    after = (neigh_mac(lab, "v1", V2), neigh_mac(lab, "v2", V1))
    path = cap.stop()
    res = box["res"]
    assert res["outcome"] == "succeeded", res
    assert during == (amac, amac)
    assert after == (lab.mac["v2"], lab.mac["v1"])
    assert ping.returncode == 0, ping.stdout                      # relayed through the attacker
    assert res["facts"]["intercepted_packets"] >= 6               # 3 requests + 3 replies
    assert res["facts"]["arp_frames"] == arp_replies_from(path, amac)   # poison + restore frames
    assert res["flows"] == [] and pcap_flows(path, ATTACKER) == {}  # no IPv4 packet of its own
    assert lab.nsx("a", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert lab.nsx("a", "sysctl", "-n", "net.ipv4.conf.all.send_redirects").stdout.strip() == "1"


def test_spoofing_a_victim_outside_the_twin_is_refused(lab):
    cap = lab.capture("mitm-guard")
    res = lab.agent("T1557.002", [V1, "192.0.2.7"], {"duration": 1})
    res2 = lab.agent("T1557.002", [V1, V2], {"duration": 1}, allowed=["10.98.0.16/30"])
    path = cap.stop()
    assert res["outcome"] == "error" and "outside the twin" in res["error"]
    assert res2["outcome"] == "error" and "outside the twin" in res2["error"]
    assert frames_sent(path, lab.mac["a"], ATTACKER) == 0       # not one frame, not even ARP
    assert neigh_mac(lab, "v1", V2) in (None, lab.mac["v2"])
