"""The namespace lab of the discovery, credential access and lateral movement tests (built by
tests/support/nslab.py)::

    crt-<id>-a   attacker 10.98.0.10 ─┐
    crt-<id>-t1  10.98.0.21 ──────────┤  br0 in crt-<id>-sw (tcpdump on the attacker's port "pa")
                 ssh :22 (paramiko: admin/admin123, backup/<strong>), login :2222, DNS udp :53
    crt-<id>-t2  10.98.0.22 ──────────┤
                 ssh :22 (operator/Winter2024!, root/<strong>), http :80
    crt-<id>-r   router 10.98.0.1 ────┘── 10.98.1.1 ── crt-<id>-t3 10.98.1.30
                 (nft on the router drops every TCP packet to t3)    ssh :22 (admin/admin123)

10.98.0.23 is a free address (a dead host). Services: groups "ssh" (ssh-t1, ssh-t2, ssh-t3,
each logging to ``<tmp>/ssh-<node>.jsonl``: ``lab.service("ssh-t1")``), "login", "http", "dns";
a test module drops the ones it does not need: ``lab = lab_fixture(LAB.without("http"))``.
"""
from __future__ import annotations

import json

from nslab import LabSpec, Link, Node, Service

ATTACKER = "10.98.0.10"
T1, T2, ROUTER, T3, DEAD = "10.98.0.21", "10.98.0.22", "10.98.0.1", "10.98.1.30", "10.98.0.23"
SSH_BANNER = "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6"
LOGIN_BANNER = "SSH-2.0-OpenSSH_7.4"
STRONG = "Qz8!mR2#vL-x9"

# a tiny DNS responder: echoes every query back as an answer (QR=1, RA=1), no records
DNS_RESPONDER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(2048)
    if len(data) >= 12:
        s.sendto(data[:2] + bytes([data[2] | 0x80, data[3] | 0x80]) + data[4:], peer)
"""


def accounts(name, pairs):
    return ((f"accounts-{name}.json", json.dumps([{"user": u, "password": p} for u, p in pairs])),)


def ssh(node, pairs):
    return Service(f"ssh-{node}", node, (
        "{py}", "-m", "cyberrange.services.ssh", "--port", "22", "--banner", SSH_BANNER,
        "--hostname", node, "--accounts-file", f"{{tmp}}/accounts-{node}.json",
        "--log", f"{{tmp}}/ssh-{node}.jsonl", "--host-key-dir", f"{{tmp}}/hostkeys-{node}"),
        port=22, files=accounts(node, pairs), outputs=(f"{{tmp}}/ssh-{node}.jsonl",), group="ssh")


def login(port):
    """The login dialogue service on t1 (admin/admin123), logging to ``<tmp>/login.jsonl``."""
    return Service(f"login-{port}", "t1", (
        "{py}", "-m", "cyberrange.services.login", "--port", str(port), "--banner",
        LOGIN_BANNER, "--accounts-file", "{tmp}/accounts-login.json", "--log",
        "{tmp}/login.jsonl"), port=port, files=accounts("login", [("admin", "admin123")]),
        outputs=("{tmp}/login.jsonl",), group="login")


def routed(net: str, services, **kw) -> LabSpec:
    """The shape of this lab on ``<net>.0.0/24`` and ``<net>.1.0/24`` (test_attack_netns.py's
    lab is the same shape on 10.99 with other services)."""
    gw, far = f"{net}.0.1", f"{net}.1.1"
    return LabSpec(
        "lab",
        nodes=(Node("a", f"{net}.0.10/24", gw=gw, port="pa", actor="attacker"),
               Node("t1", f"{net}.0.21/24", gw=gw, port="p1", actor="t1"),
               Node("t2", f"{net}.0.22/24", gw=gw, port="p2", actor="t2"),
               Node("r", f"{gw}/24", port="pr", actor="rtr", forward=True),
               Node("t3", f"{net}.1.30/24", gw=far, actor="t3")),
        links=(Link("r", "eth1", "t3", "eth0", a_ip=f"{far}/24"),),
        nft=(("r", "add table inet crt; add chain inet crt fw "
                   "{ type filter hook forward priority 0; policy accept; }; "
                   f"add rule inet crt fw ip daddr {net}.1.30 tcp dport 1-65535 drop"),),
        services=tuple(services), **kw)


LAB = routed("10.98", strict_agent=True, services=(
    ssh("t1", [("admin", "admin123"), ("backup", STRONG)]),
    ssh("t2", [("operator", "Winter2024!"), ("root", STRONG)]),
    ssh("t3", [("admin", "admin123")]),
    login(2222),
    Service("http", "t2", ("{py}", "-m", "http.server", "80", "--bind", T2), port=80),
    Service("dns", "t1", ("{py}", "-c", DNS_RESPONDER), port=53, udp=True)))
