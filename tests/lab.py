"""A namespace lab for technique tests (discovery, credential access, lateral movement).

    crt-<id>-a   attacker 10.98.0.10 ─┐
    crt-<id>-t1  10.98.0.21 ──────────┤  br0 in crt-<id>-sw (tcpdump on the attacker's port "pa")
                 ssh :22 (paramiko: admin/admin123, backup/<strong>), login :2222, DNS udp :53
    crt-<id>-t2  10.98.0.22 ──────────┤
                 ssh :22 (operator/Winter2024!, root/<strong>), http :80
    crt-<id>-r   router 10.98.0.1 ────┘── 10.98.1.1 ── crt-<id>-t3 10.98.1.30
                 (nft on the router drops every TCP packet to t3)    ssh :22 (admin/admin123)

10.98.0.23 is a free address (a dead host). Every namespace is removed by ``teardown``;
nothing touches the root namespace, and packets only ever go to these addresses.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest

ATTACKER = "10.98.0.10"
T1, T2, ROUTER, T3, DEAD = "10.98.0.21", "10.98.0.22", "10.98.0.1", "10.98.1.30", "10.98.0.23"
ALLOWED = ["10.98.0.0/24", "10.98.1.0/24"]
SSH_BANNER = "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6"
LOGIN_BANNER = "SSH-2.0-OpenSSH_7.4"
STRONG = "Qz8!mR2#vL-x9"

needs_lab = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpdump") or not shutil.which("ip"),
    reason="needs root, ip and tcpdump (creates network namespaces)")

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


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, tmp, ssh=True, login=True, http=True, dns=True):
        self.id = secrets.token_hex(3)
        self.tmp = tmp
        self.ns = {k: f"crt-{self.id}-{k}" for k in ("sw", "a", "t1", "t2", "r", "t3")}
        self.procs: list[subprocess.Popen] = []
        self.want = {"ssh": ssh, "login": login, "http": http, "dns": dns}
        self.firewall = False
        self.ssh_log = {n: tmp / f"ssh-{n}.jsonl" for n in ("t1", "t2", "t3")}
        self.login_log = tmp / "login.jsonl"

    def nsx(self, node, *args, check=True):
        return sh("ip", "netns", "exec", self.ns[node], *args, check=check)

    def build(self):
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sw = self.ns["sw"]
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for node, port, addr, gw in (("a", "pa", ATTACKER, ROUTER), ("t1", "p1", T1, ROUTER),
                                     ("t2", "p2", T2, ROUTER), ("r", "pr", ROUTER, None)):
            sh("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[node])
            sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", self.ns[node], "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[node], "link", "set", "eth0", "up")
            if gw:
                sh("ip", "-n", self.ns[node], "route", "add", "default", "via", gw)
        r, t3 = self.ns["r"], self.ns["t3"]
        sh("ip", "-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", t3)
        sh("ip", "-n", r, "addr", "add", "10.98.1.1/24", "dev", "eth1")
        sh("ip", "-n", r, "link", "set", "eth1", "up")
        sh("ip", "-n", t3, "addr", "add", f"{T3}/24", "dev", "eth0")
        sh("ip", "-n", t3, "link", "set", "eth0", "up")
        sh("ip", "-n", t3, "route", "add", "default", "via", "10.98.1.1")
        self.nsx("r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if shutil.which("nft"):
            self.nsx("r", "nft", "add table inet crt; add chain inet crt fw "
                     "{ type filter hook forward priority 0; policy accept; }; "
                     f"add rule inet crt fw ip daddr {T3} tcp dport 1-65535 drop")
            self.firewall = True
        self._services()

    def _accounts(self, name, accounts):
        path = self.tmp / f"accounts-{name}.json"
        path.write_text(json.dumps([{"user": u, "password": p} for u, p in accounts]))
        return str(path)

    def _services(self):
        py = sys.executable
        keys = str(self.tmp / "hostkeys")
        if self.want["ssh"]:
            for node, accounts in (("t1", [("admin", "admin123"), ("backup", STRONG)]),
                                   ("t2", [("operator", "Winter2024!"), ("root", STRONG)]),
                                   ("t3", [("admin", "admin123")])):
                self.start(node, [py, "-m", "cyberrange.services.ssh", "--port", "22",
                                  "--banner", SSH_BANNER, "--hostname", node,
                                  "--accounts-file", self._accounts(node, accounts),
                                  "--log", str(self.ssh_log[node]),
                                  "--host-key-dir", f"{keys}-{node}"], wait_port=22)
        if self.want["login"]:
            self.start("t1", [py, "-m", "cyberrange.services.login", "--port", "2222",
                              "--banner", LOGIN_BANNER,
                              "--accounts-file", self._accounts("login", [("admin", "admin123")]),
                              "--log", str(self.login_log)], wait_port=2222)
        if self.want["http"]:
            self.start("t2", [py, "-m", "http.server", "80", "--bind", T2], wait_port=80)
        if self.want["dns"]:
            self.start("t1", [py, "-c", DNS_RESPONDER], wait_port=53, udp=True)

    def start(self, node, argv, wait_port=None, udp=False):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[node], *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        if wait_port:
            for _ in range(150):
                out = self.nsx(node, "ss", "-Hlun" if udp else "-Hltn",
                               f"sport = :{wait_port}").stdout
                if out.strip():
                    return p
                if p.poll() is not None:
                    break
                time.sleep(0.1)
            raise RuntimeError(f"{argv} did not listen on {wait_port}")
        return p

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self.ns.values():
            # kill anything still inside (only processes in OUR namespaces), then delete
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)

    def runner(self):
        from cyberrange.twin.base import NetnsRunner
        return NetnsRunner({"attacker": self.ns["a"], "t1": self.ns["t1"], "t2": self.ns["t2"],
                            "rtr": self.ns["r"], "t3": self.ns["t3"]})

    def capture(self, name, port="pa"):
        """tcpdump on a bridge port: "pa" attacker, "p1" t1, "p2" t2, "pr" router."""
        return Capture(self, self.tmp / f"{name}.pcap", port)

    def flush_neigh(self):
        for n in ("a", "t1", "t2", "r"):
            self.nsx(n, "ip", "neigh", "flush", "all", check=False)

    def agent(self, technique, targets, params, allowed=ALLOWED, actor="attacker"):
        """Run one technique through the real agent inside ``actor``'s namespace."""
        from cyberrange.attack.runner import _run_agent
        result, stderr, _rc = _run_agent(self.runner(), actor,
                                         {"technique": technique, "targets": targets,
                                          "params": params, "allowed": allowed})
        assert result is not None, stderr
        assert result["outcome"] != "error", (result, stderr[-3000:])
        return result


def make_lab(tmp_path_factory, **want):
    lab = Lab(tmp_path_factory.mktemp("lab"), **want)
    try:
        lab.build()
    except BaseException:
        lab.teardown()
        raise
    return lab


class Capture:
    """tcpdump on one bridge port (inside the switch namespace)."""

    def __init__(self, lab, path, port="pa"):
        self.path = path
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ns["sw"], "tcpdump", "-i", port,
                                      "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "256",
                                      "-w", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lab.procs.append(self.proc)
        line = self.proc.stderr.readline()
        assert "listening" in line, line

    def stop(self, settle=0.3):
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        import scapy.layers.inet  # noqa: F401 - registers Ethernet/IP for rdpcap
        import scapy.layers.l2  # noqa: F401
        from scapy.utils import rdpcap
        return list(rdpcap(str(self.path)))


def actor_flows(packets, src=ATTACKER):
    """{5-tuple: [packets, bytes]} of IPv4 packets sent by ``src`` (ICMP: type, code)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    out = defaultdict(lambda: [0, 0])
    for p in packets:
        if IP not in p or p[IP].src != src:
            continue
        ip = p[IP]
        if TCP in p:
            key = (ip.src, ip.dst, "tcp", ip[TCP].sport, ip[TCP].dport)
        elif UDP in p:
            key = (ip.src, ip.dst, "udp", ip[UDP].sport, ip[UDP].dport)
        elif ICMP in p:
            key = (ip.src, ip.dst, "icmp", ip[ICMP].type, ip[ICMP].code)
        else:
            key = (ip.src, ip.dst, str(ip.proto), 0, 0)
        out[key][0] += 1
        out[key][1] += p.wirelen or len(p)      # the wire length: the snaplen cuts big packets
    return dict(out)


def ledger_flows(flows):
    out = defaultdict(lambda: [0, 0])
    for f in flows:
        key = (f["src"], f["dst"], f["proto"], f["sport"], f["dport"])
        out[key][0] += f["packets"]
        out[key][1] += f["bytes"]
    return dict(out)


def packets_only(d):
    return {k: v[0] for k, v in d.items()}


def assert_exact(res, pkts, src=ATTACKER, bytes_too=True):
    """The ledger equals the capture per 5-tuple: packets always, bytes when ``bytes_too``."""
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts, src)
    if bytes_too:
        assert captured == ledger, (captured, ledger)
    else:
        assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    return ledger, captured


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
