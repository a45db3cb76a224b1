"""One namespace lab for the technique tests and benchmarks: a lab is data, one engine builds it.

A lab is a ``LabSpec``::

    LabSpec("lab",
        nodes=[Node("a", "10.98.0.10/24", gw="10.98.0.1", port="pa", actor="attacker"),
               Node("r", "10.98.0.1/24", port="pr", actor="rtr", forward=True),
               Node("t3", "10.98.1.30/24", gw="10.98.1.1")],
        links=[Link("r", "eth1", "t3", "eth0", a_ip="10.98.1.1/24")],
        nft={"r": "add table inet crt; ..."},
        services=[Service("http", "t2", ("{py}", "-m", "http.server", "80"), port=80)])

* every node is a network namespace ``crt-<id>-<node>`` (``<id>`` random per lab); its address
  goes on its ``eth0``; ``gw`` is its default route; ``actor`` is its name for the attack runner;
* a node with a ``port`` has its ``eth0`` on that port of ``br0``, one bridge in the switch
  namespace ``crt-<id>-sw`` (made only when some node has a port; captures run there);
* a ``Link`` is a veth pair between two nodes: a routed segment behind a router, or two nodes
  joined without a switch (the benchmark);
* ``nft`` rules are loaded when nft is installed (``lab.firewall`` says whether they were);
* a ``Service`` is a program started in a node's namespace at build time, or on the first
  ``lab.service(name)`` when ``on_demand``; the engine waits until it listens on ``port``.

``Lab(spec, tmp)`` builds it (``with Lab(...) as lab`` or ``lab_fixture(spec)`` for a
module-scoped pytest fixture), ``lab.capture(...)`` runs tcpdump on a bridge port or a node's
interface, ``lab.agent(...)`` runs one technique through the real agent, ``lab.teardown()``
kills the processes inside OUR namespaces and deletes them. Nothing is made in the root
namespace, and a lab only ever sends to its own addresses.

Below the engine: the helpers every lab test shares (5-tuple flows from a capture and from a
ledger, exact comparison, frames sent by a MAC, JSON lines).
"""
from __future__ import annotations

import dataclasses
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
from dataclasses import dataclass
from pathlib import Path

try:
    import pytest
except ImportError:             # the benchmarks use the engine without pytest
    pytest = None


def why_no_netns() -> str | None:
    """Why a lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    for tool in ("ip", "tcpdump"):
        if not shutil.which(tool):
            return f"needs {tool}"
    return None


needs_netns = (pytest.mark.skipif(why_no_netns() is not None, reason=str(why_no_netns()))
               if pytest else None)


# ----------------------------------------------------------------------------- the description
@dataclass(frozen=True)
class Node:
    name: str
    ip: str | None = None           # "10.98.0.10/24", on eth0
    gw: str | None = None           # default route
    port: str | None = None         # eth0 is the peer of this port of br0
    actor: str | None = None        # the node's name for the attack runner
    forward: bool = False           # a router: net.ipv4.ip_forward=1


@dataclass(frozen=True)
class Link:
    """A veth pair from ``a``'s ``a_if`` to ``b``'s ``b_if`` (an ``eth0`` gets its node's ip)."""
    a: str
    a_if: str
    b: str
    b_if: str
    a_ip: str | None = None
    b_ip: str | None = None


@dataclass(frozen=True)
class Service:
    """``argv`` runs in ``node``'s namespace; "{py}" is this Python, "{tmp}" the lab's folder.
    ``files`` ((name, text), ...) are written to the lab's folder first; ``outputs`` are what
    ``lab.service(name)`` returns (paths, same placeholders). ``group`` names several services
    at once for ``LabSpec.without``."""
    name: str
    node: str
    argv: tuple[str, ...]
    port: int | None = None         # wait until something listens here
    udp: bool = False
    files: tuple[tuple[str, str], ...] = ()
    outputs: tuple[str, ...] = ()
    on_demand: bool = False
    group: str = ""


@dataclass(frozen=True)
class LabSpec:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()
    nft: tuple[tuple[str, str], ...] = ()       # (node, ruleset), loaded when nft exists
    services: tuple[Service, ...] = ()
    strict_agent: bool = False      # an agent outcome "error" fails the test at once

    def without(self, *names: str) -> LabSpec:
        """The same lab without the services named (by name or group)."""
        return dataclasses.replace(self, services=tuple(
            s for s in self.services if s.name not in names and s.group not in names))

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def allowed(self) -> list[str]:
        """Every subnet of the lab, in the order declared: the agent's default allowed space."""
        ips = [n.ip for n in self.nodes] + [ip for ln in self.links for ip in (ln.a_ip, ln.b_ip)]
        nets = [str(ipaddress.ip_interface(ip).network) for ip in ips if ip]
        return list(dict.fromkeys(nets))


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


# ----------------------------------------------------------------------------- the engine
class Lab:
    def __init__(self, spec: LabSpec, tmp):
        self.spec = spec
        self.tmp = Path(tmp)
        self.id = secrets.token_hex(3)
        switched = any(n.port for n in spec.nodes)
        names = (["sw"] if switched else []) + [n.name for n in spec.nodes]
        self.ns = {k: f"crt-{self.id}-{k}" for k in names}
        self.procs: list[subprocess.Popen] = []
        self.started: dict[str, object] = {}
        self.firewall = False
        self.mac: dict[str, str] = {}

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()

    # -- running things in a node
    def nsx(self, node, *args, check=True, **kw):
        """Run a command inside ``node``'s namespace."""
        return sh("ip", "netns", "exec", self.ns[node], *args, check=check, **kw)

    def ip(self, node, *args, check=True):
        return sh("ip", "-n", self.ns[node], *args, check=check)

    def _batch(self, node, lines):
        """One ``ip -batch``: inside ``node``'s namespace, or the root one's view for None
        (only ``netns add`` / ``netns del`` of our own names)."""
        where = ["-n", self.ns[node]] if node else []
        p = subprocess.run(["ip", *where, "-batch", "-"], input="\n".join(lines) + "\n",
                           capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"ip -batch in {node or 'root'} failed: {p.stderr.strip()}")

    # -- building
    def build(self):
        spec = self.spec
        self._batch(None, [f"netns add {ns}" for ns in self.ns.values()])
        for name in self.ns:
            keys = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            if name != "sw" and spec.node(name).forward:
                keys.append("net.ipv4.ip_forward=1")
            self.nsx(name, "sysctl", "-qw", *keys)
        ifaces: dict[str, dict[str, str | None]] = {n.name: {} for n in spec.nodes}
        if "sw" in self.ns:
            lines = ["link set lo up",
                     "link add br0 type bridge stp_state 0 forward_delay 0", "link set br0 up"]
            for n in spec.nodes:
                if n.port:
                    lines += [f"link add {n.port} type veth peer name eth0 netns {self.ns[n.name]}",
                              f"link set {n.port} master br0 up"]
                    ifaces[n.name]["eth0"] = None
            self._batch("sw", lines)
        for ln in spec.links:
            self._batch(ln.a, [f"link add {ln.a_if} type veth peer name {ln.b_if} "
                               f"netns {self.ns[ln.b]}"])
            ifaces[ln.a][ln.a_if], ifaces[ln.b][ln.b_if] = ln.a_ip, ln.b_ip
        for n in spec.nodes:
            lines = ["link set lo up"]
            for ifname, addr in ifaces[n.name].items():
                addr = n.ip if ifname == "eth0" and n.ip else addr
                if addr:
                    lines.append(f"addr add {addr} dev {ifname}")
                lines.append(f"link set {ifname} up")
            if n.gw:
                lines.append(f"route add default via {n.gw}")
            self._batch(n.name, lines)
        self.mac = {n.name: json.loads(self.ip(n.name, "-j", "link", "show", "dev", "eth0")
                                       .stdout)[0]["address"]
                    for n in spec.nodes if "eth0" in ifaces[n.name]}
        if spec.nft and shutil.which("nft"):
            for node, ruleset in spec.nft:
                self.nsx(node, "nft", ruleset)
            self.firewall = True
        self._start_services([s for s in spec.services if not s.on_demand])

    # -- services
    def _expand(self, text: str) -> str:
        return text.replace("{py}", sys.executable).replace("{tmp}", str(self.tmp))

    def _start_services(self, services):
        waiting = []
        for s in services:
            for name, text in s.files:
                (self.tmp / name).write_text(text)
            p = self.start(s.node, [self._expand(a) for a in s.argv], log=f"{s.name}.stderr")
            waiting.append((s, p))
        deadline = time.monotonic() + 30
        while waiting:
            s, p = waiting[0]
            flag = "-Hlun" if s.udp else "-Hltn"
            if s.port is None or self.nsx(s.node, "ss", flag, f"sport = :{s.port}").stdout.strip():
                waiting.pop(0)
                self.started[s.name] = self._outputs(s)
                continue
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service {s.name} did not listen on {s.port}; its stderr: "
                                   f"{(self.tmp / f'{s.name}.stderr').read_text()[-2000:]}")
            time.sleep(0.1)

    def _outputs(self, s: Service):
        paths = tuple(Path(self._expand(o)) for o in s.outputs)
        return paths[0] if len(paths) == 1 else paths

    def service(self, name: str):
        """Start the service ``name`` unless it runs already; its declared ``outputs``."""
        if name not in self.started:
            self._start_services([next(s for s in self.spec.services if s.name == name)])
        return self.started[name]

    def start(self, node, argv, log=None) -> subprocess.Popen:
        """Start ``argv`` in ``node``'s namespace (stopped at teardown); stderr to ``log``."""
        err = open(self.tmp / log, "w") if log else subprocess.DEVNULL
        try:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns[node], *argv],
                                 stdout=subprocess.DEVNULL, stderr=err)
        finally:
            if log:
                err.close()
        self.procs.append(p)
        return p

    # -- using
    def runner(self):
        from cyberrange.twin.base import NetnsRunner
        return NetnsRunner({n.actor: self.ns[n.name] for n in self.spec.nodes if n.actor})

    def agent(self, technique, targets, params, allowed=None, actor="attacker"):
        """Run one technique through the real agent inside ``actor``'s namespace."""
        from cyberrange.attack.runner import _run_agent
        result, stderr, _rc = _run_agent(self.runner(), actor,
                                         {"technique": technique, "targets": targets,
                                          "params": params,
                                          "allowed": self.spec.allowed if allowed is None
                                          else allowed})
        assert result is not None, stderr
        if result.get("outcome") == "error":
            print("agent stderr:", stderr[-3000:])
            assert not self.spec.strict_agent, (result, stderr[-3000:])
        return result

    def capture(self, name, port=None, *, node=None, iface="eth0", snap=256, buffer_kib=4096,
                flush=True, bpf=()) -> Capture:
        """tcpdump into ``<tmp>/<name>.pcap``: on bridge port ``port`` (default: the first
        node's), or on ``node``'s ``iface``. ``flush``: write every packet as it comes (-U)."""
        if node is None:
            port = port or next(n.port for n in self.spec.nodes if n.port)
        argv = ["tcpdump", "-i", iface if node else port, "-n", *(["-U"] if flush else []),
                "--immediate-mode", "-Z", "root", "-B", str(buffer_kib), "-s", str(snap),
                "-w", str(self.tmp / f"{name}.pcap"), *bpf]
        return Capture(self, self.tmp / f"{name}.pcap", node or "sw", argv)

    def flush_neigh(self):
        """Empty the neighbour caches of the nodes on the bridge."""
        for n in self.spec.nodes:
            if n.port:
                self.nsx(n.name, "ip", "neigh", "flush", "all", check=False)

    # -- removing
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
            # anything still inside (only processes in OUR namespaces), then delete
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        subprocess.run(["ip", "-force", "-batch", "-"], capture_output=True, text=True,
                       input="".join(f"netns del {ns}\n" for ns in self.ns.values()))


def lab_fixture(spec: LabSpec, name: str = "lab"):
    """A module-scoped pytest fixture that builds ``spec`` once and tears it down."""
    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory):
        with Lab(spec, tmp_path_factory.mktemp(spec.name)) as lab:
            yield lab
    return fixture


class Capture:
    """A tcpdump inside one of the lab's namespaces, started and ready to record."""

    def __init__(self, lab, path, where, argv):
        self.path = path
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ns[where], *argv],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lab.procs.append(self.proc)
        line = self.proc.stderr.readline()
        assert "listening" in line, line
        self.stats = ""

    def stop(self, settle=0.3) -> Path:
        """Wait ``settle`` s for late packets, stop; the pcap's path (``stats``: tcpdump's)."""
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        self.stats = self.proc.stderr.read()
        self.proc.wait(10)
        return self.path

    def stop_packets(self, settle=0.3) -> list:
        """``stop``, then the captured packets (scapy)."""
        import scapy.layers.inet  # noqa: F401 - registers Ethernet/IP for rdpcap
        import scapy.layers.l2  # noqa: F401
        from scapy.utils import rdpcap
        return list(rdpcap(str(self.stop(settle))))

    def dropped(self) -> int:
        for line in self.stats.splitlines():
            if "dropped by kernel" in line:
                return int(line.split()[0])
        return 0


# ----------------------------------------------------------------------------- shared helpers
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


def _flow_key(s, d, l4, proto):
    """The 5-tuple of a flow record: ICMP's type and code stand in for the ports."""
    if proto in ("tcp", "udp"):
        return (s, d, proto, l4.sport, l4.dport)
    if proto == "icmp":
        return (s, d, "icmp", l4.type, l4.code)
    return (s, d, proto, 0, 0)


def actor_flows(packets, src):
    """{5-tuple: [packets, wire bytes]} of the IPv4 packets (scapy) sent by ``src``."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    out = defaultdict(lambda: [0, 0])
    for p in packets:
        if IP not in p or p[IP].src != src:
            continue
        ip = p[IP]
        proto, l4 = next(((n, p[c]) for n, c in (("tcp", TCP), ("udp", UDP), ("icmp", ICMP))
                          if c in p), (str(ip.proto), None))
        key = _flow_key(ip.src, ip.dst, l4, proto)
        out[key][0] += 1
        out[key][1] += p.wirelen or len(p)      # the wire length: the snaplen cuts big packets
    return dict(out)


def pcap_flows(path, src):
    """{5-tuple: [packets, wire bytes]} of the IPv4 packets in a pcap from ``src`` (all: None)."""
    import dpkt
    out = defaultdict(lambda: [0, 0])
    classes = (("tcp", dpkt.tcp.TCP), ("udp", dpkt.udp.UDP), ("icmp", dpkt.icmp.ICMP))
    for _ts, orig, buf in iter_pcap(path):
        ip = dpkt.ethernet.Ethernet(buf).data
        if not isinstance(ip, dpkt.ip.IP):
            continue
        s = ".".join(map(str, ip.src))
        if src is not None and s != src:
            continue
        proto = next((n for n, c in classes if isinstance(ip.data, c)), str(ip.p))
        key = _flow_key(s, ".".join(map(str, ip.dst)), ip.data, proto)
        out[key][0] += 1
        out[key][1] += orig
    return dict(out)


def ledger_flows(flows):
    """{5-tuple: [packets, bytes]} of a ledger's flow entries."""
    out = defaultdict(lambda: [0, 0])
    for f in flows:
        key = (f["src"], f["dst"], f["proto"], f["sport"], f["dport"])
        out[key][0] += f["packets"]
        out[key][1] += f["bytes"]
    return dict(out)


def packets_only(d):
    return {k: v[0] for k, v in d.items()}


def assert_exact(res, pkts, src, bytes_too=True):
    """The ledger equals the capture per 5-tuple: packets always, bytes when ``bytes_too``."""
    ledger, captured = ledger_flows(res["flows"]), actor_flows(pkts, src)
    if bytes_too:
        assert captured == ledger, (captured, ledger)
    else:
        assert packets_only(captured) == packets_only(ledger), (captured, ledger)
    return ledger, captured


def frames_sent(path, mac, own_ip) -> int:
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


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
