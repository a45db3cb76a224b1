"""The namespace lab of test_attack_netns.py and test_playbook_engine.py (built by
tests/support/nslab.py; the shape of lab.py's on other addresses, with other services), and the
model of it the attack runner needs::

    crt-<id>-a  attacker 10.99.0.10/24 ─┐
    crt-<id>-t1 10.99.0.21  login :22,:2222 ─┤  br0 in crt-<id>-sw  (tcpdump on the attacker's port)
    crt-<id>-t2 10.99.0.22  http :80   ─┤
    crt-<id>-r  router 10.99.0.1 ───────┘── 10.99.1.1 ── crt-<id>-t3 10.99.1.30 (TCP dropped by nft)
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lab import login, routed
from nslab import Service

ATTACKER = "10.99.0.10"
T1, T2, ROUTER, T3 = "10.99.0.21", "10.99.0.22", "10.99.0.1", "10.99.1.30"


LAB = routed("10.99", services=(
    login(22), login(2222),
    Service("http", "t2", ("{py}", "-m", "http.server", "80", "--bind", T2), port=80)))


# ----------------------------------------------------------------------------- for the runner
@dataclass
class Step:
    id: str
    name: str
    technique: str
    actor: str
    targets: list
    params: dict = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Playbook:
    name: str
    steps: list


def lab_topology():
    from cyberrange.model.topology import Interface, Topology, Zone
    from cyberrange.model.topology import Node as ModelNode
    net = ipaddress.IPv4Network
    topo = Topology(name="crt-lab", classification="UNCLASSIFIED")
    topo.zones = {"lab": Zone("lab", net("10.99.0.0/24"), "UNCLASSIFIED"),
                  "far": Zone("far", net("10.99.1.0/24"), "UNCLASSIFIED")}

    def host(name, zone, ip):
        return ModelNode(name, "host", interfaces=[Interface(zone, ipaddress.ip_address(ip), 24)])
    topo.nodes = {"attacker": host("attacker", "lab", ATTACKER), "t1": host("t1", "lab", T1),
                  "t2": host("t2", "lab", T2), "t3": host("t3", "far", T3),
                  "rtr": ModelNode("rtr", "router", interfaces=[
                      Interface("lab", ipaddress.ip_address(ROUTER), 24),
                      Interface("far", ipaddress.ip_address("10.99.1.1"), 24, index=1)])}
    return topo
