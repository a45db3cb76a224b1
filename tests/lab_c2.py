"""A namespace lab for the C2, exfiltration, MitM, impact, ICS and replay technique tests.

    crt-<id>-a   attacker 10.98.0.10 ─┐
    crt-<id>-v1  victim   10.98.0.21 ─┤
    crt-<id>-v2  victim   10.98.0.22 ─┤  br0 in crt-<id>-sw (sensors: tcpdump on a bridge port)
    crt-<id>-c   C2       10.98.0.30 ─┤  HTTP listener :8443, DNS C2 :53 (evil.example)
    crt-<id>-p   PLC      10.98.0.40 ─┘  Modbus/TCP :502

Everything lives in namespaces named ``crt-<id>-*`` made here; ``teardown`` kills the processes
inside them and deletes them. Nothing is added to the root namespace. Services start on demand.
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

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpdump") or not shutil.which("ip"),
    reason="needs root, ip and tcpdump (creates network namespaces)")

NET = "10.98.0"
ATTACKER, V1, V2, C2, PLC = f"{NET}.10", f"{NET}.21", f"{NET}.22", f"{NET}.30", f"{NET}.40"
ALLOWED = [f"{NET}.0/24"]
NODES = {"a": ATTACKER, "v1": V1, "v2": V2, "c": C2, "p": PLC}
PORTS = {"a": "pa", "v1": "pv1", "v2": "pv2", "c": "pc", "p": "pp"}


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class Lab:
    def __init__(self, tmp):
        self.id = secrets.token_hex(3)
        self.tmp = tmp
        self.ns = {k: f"crt-{self.id}-{k}" for k in ("sw", *NODES)}
        self.procs: list[subprocess.Popen] = []
        self.services: dict[str, object] = {}

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
        for node, addr in NODES.items():
            port = PORTS[node]
            sh("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[node])
            sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", self.ns[node], "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[node], "link", "set", "eth0", "up")
        self.mac = {n: self.nsx(n, "cat", "/sys/class/net/eth0/address").stdout.strip()
                    for n in NODES}

    # ------------------------------------------------------------------ services
    def start(self, node, argv, wait_port=None, udp=False):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[node], *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        if wait_port:
            flag = "-Hlun" if udp else "-Hltn"
            for _ in range(150):
                if self.nsx(node, "ss", flag, f"sport = :{wait_port}").stdout.strip():
                    return p
                if p.poll() is not None:
                    break
                time.sleep(0.1)
            raise RuntimeError(f"{argv} did not listen on {wait_port}")
        return p

    def c2_http(self):
        if "http" not in self.services:
            log, out = self.tmp / "c2-http.jsonl", self.tmp / "c2-http-out"
            self.start("c", [sys.executable, "-m", "cyberrange.services.c2", "--mode", "http",
                             "--port", "8443", "--log", str(log), "--out", str(out)], wait_port=8443)
            self.services["http"] = (log, out)
        return self.services["http"]

    def c2_dns(self):
        if "dns" not in self.services:
            log, out = self.tmp / "c2-dns.jsonl", self.tmp / "c2-dns-out"
            self.start("c", [sys.executable, "-m", "cyberrange.services.c2", "--mode", "dns",
                             "--port", "53", "--domain", "evil.example", "--log", str(log),
                             "--out", str(out)], wait_port=53, udp=True)
            self.services["dns"] = (log, out)
        return self.services["dns"]

    def plc(self):
        if "plc" not in self.services:
            log = self.tmp / "plc.jsonl"
            self.start("p", [sys.executable, "-m", "cyberrange.services.modbus", "--port",
                             "502", "--registers", json.dumps({"0": 350, "1": 72, "2": 1}),
                             "--log", str(log)], wait_port=502)
            self.services["plc"] = log
        return self.services["plc"]

    # ------------------------------------------------------------------ running techniques
    def runner(self):
        from cyberrange.twin.base import NetnsRunner
        return NetnsRunner({"attacker": self.ns["a"]})

    def agent(self, technique, targets, params, allowed=ALLOWED):
        from cyberrange.attack.runner import _run_agent
        result, stderr, rc = _run_agent(self.runner(), "attacker",
                                        {"technique": technique, "targets": targets,
                                         "params": params, "allowed": allowed})
        assert result is not None, stderr
        if result.get("outcome") == "error":
            print("agent stderr:", stderr[-3000:])
        return result

    def capture(self, name, port="pa", buffer_kib=4096, snap=256):
        return Capture(self, self.tmp / f"{name}.pcap", port, buffer_kib, snap)

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
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)


class Capture:
    """tcpdump on one bridge port (inside the switch namespace)."""

    def __init__(self, lab, path, port, buffer_kib, snap):
        self.path = path
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ns["sw"], "tcpdump", "-i", port,
                                      "-n", "-U", "--immediate-mode", "-Z", "root", "-B",
                                      str(buffer_kib), "-s", str(snap), "-w", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lab.procs.append(self.proc)
        line = self.proc.stderr.readline()
        assert "listening" in line, line
        self.stats = ""

    def stop(self, settle=0.3):
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        self.stats = self.proc.stderr.read()
        self.proc.wait(10)
        return self.path

    def dropped(self) -> int:
        for line in self.stats.splitlines():
            if "dropped by kernel" in line:
                return int(line.split()[0])
        return 0


def iter_pcap(path):
    """(timestamp, original wire length, captured bytes) per record of a classic pcap."""
    import struct
    with open(path, "rb") as fh:
        data = fh.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from(endian + "IIII", data, off)
        yield sec + frac * scale, orig, data[off + 16:off + 16 + incl]
        off += 16 + incl


def pcap_flows(path, src=ATTACKER):
    """{5-tuple: [packets, wire bytes]} of IPv4 packets from ``src`` (all if None)."""
    import dpkt
    out = defaultdict(lambda: [0, 0])
    for _ts, orig, buf in iter_pcap(path):
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP):
            continue
        s = ".".join(map(str, ip.src))
        if src is not None and s != src:
            continue
        d = ".".join(map(str, ip.dst))
        l4 = ip.data
        if isinstance(l4, dpkt.tcp.TCP):
            key = (s, d, "tcp", l4.sport, l4.dport)
        elif isinstance(l4, dpkt.udp.UDP):
            key = (s, d, "udp", l4.sport, l4.dport)
        elif isinstance(l4, dpkt.icmp.ICMP):
            key = (s, d, "icmp", l4.type, l4.code)
        else:
            key = (s, d, str(ip.p), 0, 0)
        out[key][0] += 1
        out[key][1] += orig
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


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def make_lab(tmp_path_factory):
    """Generator for a module-scoped fixture: ``yield from make_lab(tmp_path_factory)``."""
    lab = Lab(tmp_path_factory.mktemp("c2lab"))
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


def frames_sent(path, mac, own_ip=ATTACKER) -> int:
    """Frames from ``mac`` in the pcap, except the kernel's ARP replies for its own address
    (neighbours verify their caches at any time; those replies are not attack frames)."""
    import dpkt
    want, n = bytes.fromhex(mac.replace(":", "")), 0
    for _ts, _orig, buf in iter_pcap(path):
        eth = dpkt.ethernet.Ethernet(buf)
        if eth.src != want:
            continue
        if isinstance(eth.data, dpkt.arp.ARP) and eth.data.op == 2 and \
                ".".join(map(str, eth.data.spa)) == own_ip:
            continue
        n += 1
    return n
