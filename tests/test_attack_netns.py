"""Attack techniques with real packets in a tiny lab of network namespaces this test makes.

    crt-<id>-a  attacker 10.99.0.10/24 ─┐
    crt-<id>-t1 10.99.0.21  login :22,:2222 ─┤  br0 in crt-<id>-sw  (tcpdump on the attacker's port)
    crt-<id>-t2 10.99.0.22  http :80   ─┤
    crt-<id>-r  router 10.99.0.1 ───────┘── 10.99.1.1 ── crt-<id>-t3 10.99.1.30 (TCP dropped by nft)

Every namespace is removed in the fixture's finalizer; nothing touches the root namespace.
The key check: the ledger's packet counts equal the captured packets PER 5-TUPLE from the actor.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpdump") or not shutil.which("ip"),
    reason="needs root, ip and tcpdump (creates network namespaces)")

ATTACKER = "10.99.0.10"
T1, T2, ROUTER, T3 = "10.99.0.21", "10.99.0.22", "10.99.0.1", "10.99.1.30"
ALLOWED = ["10.99.0.0/24", "10.99.1.0/24"]


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, tmp):
        self.id = secrets.token_hex(3)
        self.tmp = tmp
        self.ns = {k: f"crt-{self.id}-{k}" for k in ("sw", "a", "t1", "t2", "r", "t3")}
        self.procs: list[subprocess.Popen] = []

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
        sh("ip", "-n", r, "addr", "add", "10.99.1.1/24", "dev", "eth1")
        sh("ip", "-n", r, "link", "set", "eth1", "up")
        sh("ip", "-n", t3, "addr", "add", f"{T3}/24", "dev", "eth0")
        sh("ip", "-n", t3, "link", "set", "eth0", "up")
        sh("ip", "-n", t3, "route", "add", "default", "via", "10.99.1.1")
        self.nsx("r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if shutil.which("nft"):
            self.nsx("r", "nft", "add table inet crt; add chain inet crt fw1 "
                     "{ type filter hook forward priority 0; policy accept; }; "
                     f"add rule inet crt fw1 ip daddr {T3} tcp dport 1-65535 drop")
            self.firewall = True
        else:
            self.firewall = False
        # services
        accounts = self.tmp / "accounts.json"
        accounts.write_text(json.dumps([{"user": "admin", "password": "admin123"}]))
        self.login_log = self.tmp / "login.jsonl"
        for port in (22, 2222):
            self.start("t1", [sys.executable, "-m", "cyberrange.services.login", "--port",
                              str(port), "--banner", "SSH-2.0-OpenSSH_7.4", "--accounts-file",
                              str(accounts), "--log", str(self.login_log)], wait_port=port)
        self.start("t2", [sys.executable, "-m", "http.server", "80", "--bind", T2], wait_port=80)
        # warm nothing up: every test starts from cold neighbour caches except the ones it fills

    def start(self, node, argv, wait_port=None):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[node], *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        if wait_port:
            for _ in range(100):
                out = self.nsx(node, "ss", "-Hltn", f"sport = :{wait_port}").stdout
                if out.strip():
                    return p
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
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)

    def runner(self):
        from cyberrange.twin.base import NetnsRunner
        return NetnsRunner({"attacker": self.ns["a"], "t1": self.ns["t1"], "t2": self.ns["t2"],
                            "rtr": self.ns["r"], "t3": self.ns["t3"]})

    def capture(self, name):
        return Capture(self, self.tmp / f"{name}.pcap")


class Capture:
    """tcpdump on the attacker's bridge port (inside the switch namespace)."""

    def __init__(self, lab, path):
        self.path = path
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ns["sw"], "tcpdump", "-i", "pa",
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
        out[key][1] += len(p)
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


def frames_from(packets, mac):
    from scapy.layers.l2 import Ether
    return [p for p in packets if Ether in p and p[Ether].src == mac]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


def agent(lab, technique, targets, params, allowed=ALLOWED):
    from cyberrange.attack.runner import _run_agent
    result, stderr, rc = _run_agent(lab.runner(), "attacker",
                                    {"technique": technique, "targets": targets,
                                     "params": params, "allowed": allowed})
    assert result is not None, stderr
    return result


def flush_neigh(lab):
    for n in ("a", "t1", "t2", "r"):
        lab.nsx(n, "ip", "neigh", "flush", "all", check=False)


# ----------------------------------------------------------------------------- tests
def test_ping_sweep_finds_exactly_the_live_hosts(lab):
    flush_neigh(lab)
    cap = lab.capture("sweep")
    targets = [ROUTER, T1, T2, "10.99.0.23", "10.99.0.24", T3, "10.99.1.31"]
    res = agent(lab, "T1018", targets, {"timeout": 1.0, "rate": 200})
    pkts = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert res["facts"]["hosts"] == [ROUTER, T1, T2, T3]
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts)
    # dead on-link hosts get only ARP; the off-link dead one gets its echo (to the gateway)
    assert {k[1] for k in ledger} == {ROUTER, T1, T2, T3, "10.99.1.31"}
    assert captured == ledger               # packets AND bytes (frame length incl. Ethernet)
    assert all(k[2:] == ("icmp", 8, 0) and v == [1, 42] for k, v in ledger.items())


def test_syn_scan_open_ports_and_kernel_rsts(lab):
    cap = lab.capture("scan")
    res = agent(lab, "T1046", [T1, T2, ROUTER], {"ports": [22, 80, 443, 2222], "rate": 500,
                                                 "timeout": 1.0})
    pkts = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert sorted(res["facts"]["open"]) == sorted([f"{T1}:22", f"{T1}:2222", f"{T2}:80"])
    assert res["facts"]["hosts"] == [T1, T2]
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts)
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
    res = agent(lab, "T1046", [T3], {"ports": [22, 80], "rate": 100, "timeout": 0.5})
    pkts = cap.stop()
    assert res["outcome"] == "blocked", res
    assert res["facts"] == {"open": [], "hosts": []}
    assert actor_flows(pkts) == ledger_flows(res["flows"])


def test_brute_force_finds_the_weak_password_with_exact_accounting(lab):
    cap = lab.capture("brute")
    res = agent(lab, "T1110.001", [f"{T1}:22", f"{T2}:80"],
                {"ports": [22], "usernames": ["root", "admin"],
                 "passwords": ["password", "admin123", "letmein"], "pause": 0.02,
                 "stop_on_success": True})
    pkts = cap.stop()
    assert res["outcome"] == "succeeded", res
    assert res["facts"] == {"credentials": [{"target": f"{T1}:22", "user": "admin",
                                             "password": "admin123"}],
                            "compromised": [T1]}
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts)
    assert len(ledger) == 5                   # root x3, admin x2 (stop on success)
    assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    # bytes: an estimate from TCP_INFO; report how close it is
    diffs = {k: ledger[k][1] - captured[k][1] for k in ledger}
    print("brute bytes ledger-capture per connection:", diffs)
    assert all(abs(d) <= 12 for d in diffs.values()), diffs


def test_brute_force_refused_and_dropped_are_blocked(lab):
    cap = lab.capture("brute-blocked")
    targets = [f"{T2}:23"] + ([f"{T3}:22"] if lab.firewall else [])
    res = agent(lab, "T1110.001", targets,
                {"ports": [22, 23], "usernames": ["root"], "passwords": ["a", "b"],
                 "pause": 0.0, "connect_timeout": 1.5})
    pkts = cap.stop()
    assert res["outcome"] == "blocked", res
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts)
    assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    print("blocked brute flows:", ledger)


def test_out_of_twin_target_sends_nothing(lab):
    from scapy.layers.l2 import Ether  # noqa: F401
    mac = lab.nsx("a", "cat", "/sys/class/net/eth0/address").stdout.strip()
    cap = lab.capture("guard")
    # 1) the agent's own check: T3 is a real lab host, but not in this request's allowed space
    res = agent(lab, "T1018", [T1, T3], {"timeout": 0.2}, allowed=["10.99.0.0/24"])
    # 2) the runner refuses 8.8.8.8, 127.0.0.1 and 10.0.0.0/8 before starting any agent
    from cyberrange.attack.runner import run_playbook
    from cyberrange.errors import ContainmentError
    topo = lab_topology()
    for bad in (["8.8.8.8"], ["127.0.0.1"], ["10.0.0.0/8"], [T1, "8.8.8.8"]):
        pb = Playbook("bad", [Step("s1", "bad", "T1018", "attacker", bad, {"timeout": 0.2})])
        with pytest.raises(ContainmentError, match="nothing was sent"):
            run_playbook(pb, topo, lab.runner(), lab.tmp / "guard-ledger.jsonl", "guard")
    pkts = cap.stop()
    assert res["outcome"] == "error" and "outside the twin" in res["error"] and not res["flows"]
    assert frames_from(pkts, mac) == []      # not one frame, not even ARP
    assert not (lab.tmp / "guard-ledger.jsonl").exists()


# ----------------------------------------------------------------------------- runner
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
    from cyberrange.model.topology import Interface, Node, Topology, Zone
    net = ipaddress.IPv4Network
    topo = Topology(name="crt-lab", classification="UNCLASSIFIED")
    topo.zones = {"lab": Zone("lab", net("10.99.0.0/24"), "UNCLASSIFIED"),
                  "far": Zone("far", net("10.99.1.0/24"), "UNCLASSIFIED")}

    def host(name, zone, ip):
        return Node(name, "host", interfaces=[Interface(zone, ipaddress.ip_address(ip), 24)])
    topo.nodes = {"attacker": host("attacker", "lab", ATTACKER), "t1": host("t1", "lab", T1),
                  "t2": host("t2", "lab", T2), "t3": host("t3", "far", T3),
                  "rtr": Node("rtr", "router", interfaces=[
                      Interface("lab", ipaddress.ip_address(ROUTER), 24),
                      Interface("far", ipaddress.ip_address("10.99.1.1"), 24, index=1)])}
    return topo


def test_runner_chains_sweep_scan_brute(lab):
    from cyberrange.attack.ledger import read_ledger
    from cyberrange.attack.runner import run_playbook
    flush_neigh(lab)
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
    pkts = cap.stop()
    assert [e[0] for e in events] == ["step_start", "step_end"] * 3
    assert read_ledger(ledger_path) == records
    sweep, scan, brute = records
    assert sweep["facts"]["hosts"] == [ROUTER, T1, T2, T3]
    assert len(sweep["targets"]) == 254 and ATTACKER not in sweep["targets"]  # 253 + t3
    assert sorted(scan["facts"]["open"]) == sorted([f"{T1}:22", f"{T1}:2222", f"{T2}:80"])
    assert brute["facts"]["credentials"] == [{"target": f"{T1}:22", "user": "admin",
                                              "password": "admin123"}]
    assert [r["outcome"] for r in records] == ["succeeded"] * 3
    for r in records:
        assert list(r) == ["run_id", "step_id", "name", "technique", "actor", "actor_ip",
                           "targets", "start", "end", "outcome", "packets_sent", "bytes_sent",
                           "flows", "facts", "error", "repeat", "skipped_reason",
                           "blocked_reason", "arp_frames"]
        assert r["packets_sent"] == sum(f["packets"] for f in r["flows"])
    all_flows = [f for r in records for f in r["flows"]]
    assert packets_only(actor_flows(pkts)) == packets_only(ledger_flows(all_flows))
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
