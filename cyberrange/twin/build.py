"""Model -> a running Mininet twin.

``Twin(topology, run_dir, run_id).start()`` builds, in order, each stage small and named:

1. ``_build_network``  Mininet nodes (one network namespace each) and Linux-bridge switches,
                        one switch per zone; no controller, no NAT, nothing attached to a real
                        interface of the host.
2. ``_configure``       addresses, IPv6 off, forwarding and routes computed from the model,
                        nftables rulesets on firewalls.
3. ``_shape``           HTB bandwidth on every attachment with a profile; netem where present.
4. ``_start_sensors``   the capture points (``twin/sensors.py``): span, port-set and router-interface
                        sensors, tcpdump each, pcaps optionally rotated.
5. ``_start_services``  HTTP, login and DNS services, waited for until they listen.

Everything created is recorded in a ``TwinState`` as it is created; ``stop()`` (also run on
any exception during ``start()``) removes exactly those objects.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cyberrange.errors import EnvironmentProblem
from cyberrange.model.topology import Topology
from cyberrange.twin import firewall, shaping
from cyberrange.twin.shield import Shield
from cyberrange.twin.state import (
    TwinState,
    netns_inode,
    new_prefix,
    process_start,
    teardown,
)

REQUIRED_TOOLS = {"mnexec": "mininet", "tcpdump": "tcpdump", "nft": "nftables",
                  "ip": "iproute2", "tc": "iproute2", "brctl": "bridge-utils",
                  "ifconfig": "net-tools"}


def preflight(need_dns: bool = False) -> None:
    """Fail early, with one line, when the machine cannot run a twin."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("building a twin needs root (network namespaces, veths, nftables)")
    tools = dict(REQUIRED_TOOLS)
    if need_dns:
        tools["dnsmasq"] = "dnsmasq-base"
    missing = sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
    if missing:
        raise EnvironmentProblem("missing Debian packages: " + " ".join(missing)
                                 + " (apt-get install them, or run the README's set-up command)")
    try:
        import mininet.net  # noqa: F401
    except ImportError as e:
        raise EnvironmentProblem(
            "Mininet's Python module is not importable; install Debian's 'mininet' package and "
            "use a virtual environment made with --system-site-packages from /usr/bin/python3"
        ) from e


def _mac(prefix: str, node: str, index: int) -> str:
    h = hashlib.sha1(f"{prefix}/{node}/{index}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


class Twin:
    """A running twin of one topology. Also a NodeRunner: ``popen(node, argv)``."""

    def __init__(self, topology: Topology, run_dir: Path, run_id: str, log=None):
        self.topo = topology
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.log = log or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
        self.warnings: list[str] = []
        self.net = None
        self.mn: dict[str, object] = {}          # model node -> Mininet node
        self.switch: dict[str, object] = {}      # zone -> Mininet switch
        self.port_key_mac: dict[tuple, str] = {}
        self.intf: dict[tuple[str, int], str] = {}   # (node, iface index) -> intf name in node
        self.port: dict[tuple[str, int], str] = {}   # (node, iface index) -> switch port (root ns)
        self.sensor_procs: dict[str, subprocess.Popen] = {}
        self.sensor_files: dict[str, Path] = {}
        self.procs: list[subprocess.Popen] = []
        self.netem = False
        self.state: TwinState | None = None
        self.timings: dict[str, float] = {}
        self.removed: dict = {}
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------
    def start(self, stage_cb=None) -> "Twin":
        preflight(need_dns=any(s.type == "dns" for n in self.topo.hosts for s in n.services))
        for d in ("pcaps", "logs", "config"):
            (self.run_dir / d).mkdir(parents=True, exist_ok=True)
        self.state = TwinState(prefix=new_prefix(), run_id=self.run_id,
                               run_dir=str(self.run_dir), topology=self.topo.name,
                               owner_pid=os.getpid(), owner_start=process_start(os.getpid()))
        self.state.nft_table = f"cyberrange_{self.state.prefix}"
        self.state.save()
        stages = [("network", self._build_network), ("configure", self._configure),
                  ("shape", self._shape), ("sensors", self._start_sensors),
                  ("services", self._start_services)]
        try:
            for name, fn in stages:
                if stage_cb:
                    stage_cb(name)
                t0 = time.monotonic()
                fn()
                self.timings[name] = round(time.monotonic() - t0, 3)
                self.state.save()
        except BaseException:
            self.stop()
            raise
        self.state.status = "up"
        self.state.save()
        return self

    def stop(self) -> dict:
        """Remove everything this twin created. Idempotent: later calls return the first
        call's summary. Ctrl-C and SIGTERM do not interrupt it (``twin/shield.py``)."""
        if self._stopped or self.state is None:
            return self.removed
        self._stopped = True
        with Shield(self.state.prefix, down_ref=self.run_id, say=self.log):
            self.removed = self._stop()
        return self.removed

    def _stop(self) -> dict:
        try:
            self.stop_sensors()
        except Exception as exc:  # noqa: BLE001 - the objects must go even if a capture failed
            self.log(f"stopping the sensors: {type(exc).__name__}: {exc}")
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        removed = teardown(self.state)
        for p in self.procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.net is not None:
            # Reap the node shells and close their ptys: a process that builds many twins
            # (a test run, a campaign) would otherwise run out of file descriptors.
            for n in list(self.mn.values()) + list(self.switch.values()):
                try:
                    if n.shell is not None:
                        n.shell.wait(timeout=2)
                        n.waitExited = False
                        type(n).outToNode.pop(n.stdout.fileno(), None)
                        type(n).inToNode.pop(n.stdin.fileno(), None)
                        n.cleanup()
                except Exception:  # noqa: BLE001 - best effort reaping
                    pass
        return removed

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- NodeRunner ----------------------------------------------------------
    def pid(self, node: str) -> int:
        return self.mn[node].pid

    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        if node not in self.mn:
            raise KeyError(f"no node {node!r} in twin {self.topo.name}")
        kwargs.setdefault("start_new_session", True)
        p = subprocess.Popen(["mnexec", "-a", str(self.pid(node)), *argv], **kwargs)
        self.procs.append(p)
        return p

    def run(self, node: str, argv: list[str], timeout: float = 30, **kwargs):
        """Run a command in a node and wait; returns CompletedProcess (text)."""
        p = self.popen(node, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **kwargs)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def cmd(self, node: str, script: str) -> str:
        """Run a shell script in the node's Mininet shell (fast; used while building)."""
        return self.mn[node].cmd(script)

    def kernel_name(self, node: str) -> str:
        return self.mn[node].name

    # -- stages --------------------------------------------------------------
    def _build_network(self):
        """Nodes (Mininet hosts: a shell in a new namespace each), bridges and veths.

        Mininet creates each veth with a few shell round trips; for hundreds of nodes that is
        most of the boot time. So the bridges and veth pairs are made in one ``ip -batch`` run
        (the node end created straight into the node's namespace, its MAC set), and Mininet is
        told about them through a Link class that skips creation. Mininet still owns the
        nodes, their shells and its view of the links, so ``twin.net`` is an ordinary Mininet."""
        from mininet.link import Intf, Link
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        class PrebuiltLink(Link):
            def makeIntfPair(self, *args, **kwargs):   # made by the ip -batch below
                return None

        class QuietIntf(Intf):
            def config(self, **params):                # configured by the node scripts
                return {}

        setLogLevel("critical")             # Mininet's own warnings are replaced by ours
        p = self.state.prefix
        self.net = Mininet(topo=None, controller=None, switch=LinuxBridge, build=False,
                           autoSetMacs=False, autoStaticArp=False, waitConnected=False,
                           inNamespace=False)
        # One switch per zone, except zones that name a shared VLAN-aware switch.
        self.dot1q = _dot1q_available(p) if any(
            z.vlan is not None for z in self.topo.zones.values()) else True
        if not self.dot1q:
            shared = sorted({z.switch_name for z in self.topo.zones.values() if z.vlan is not None})
            msg = ("this kernel has no 802.1Q support (no VLAN devices, no VLAN-filtering bridges):"
                   f" the VLANs of switch {', '.join(shared)} are emulated as one bridge per VLAN"
                   " and trunk ports as one veth per VLAN; isolation and addressing are the same,"
                   " but frames carry no 802.1Q tag")
            self.warnings.append(msg)
            self.log(msg)
        for zone in self.topo.zones.values():
            sw = self._switch_of(zone)
            if sw not in self.switch:
                kname = f"{p}s{len(self.switch) + 1}"
                self.switch[sw] = self.net.addSwitch(kname, cls=LinuxBridge, stp=False)
                self.state.kernel_names[f"switch:{sw}"] = kname
            self.state.kernel_names[f"zone:{zone.name}"] = self.switch[sw].name
        self.state.root_pids += [s.pid for s in self.switch.values()]
        for i, node in enumerate(self.topo.nodes.values(), 1):
            self.mn[node.name] = self.net.addHost(f"{p}h{i}", ip=None)
            self.state.kernel_names[node.name] = f"{p}h{i}"
            self.state.node_pids[node.name] = self.mn[node.name].pid
            self.state.netns[node.name] = netns_inode(self.mn[node.name].pid)
        self.state.save()
        # One link per physical port; VLAN interfaces with the same index share a trunk port.
        self.vlan_ports: dict[str, dict[str, tuple[str, list[int]]]] = {}  # switch -> port -> mode
        next_port = {sw: 1 for sw in self.switch}
        plan = []
        for node in self.topo.nodes.values():
            h = self.mn[node.name]
            for index, group in self._ports(node).items():
                zone = self.topo.zones[group[0].zone]
                sw = self._switch_of(zone)
                name = (f"{h.name}-eth{index}" if isinstance(index, int)
                        else f"{h.name}-v{index[1]}")
                port_no = next_port[sw]
                next_port[sw] += 1
                port = f"{self.switch[sw].name}-eth{port_no}"
                plan.append((node.name, index, sw, name, port, port_no))
                self.port_key_mac[(node.name, index)] = _mac(p, node.name, index)
                self.intf[(node.name, index)] = name
                self.port[(node.name, index)] = port
                tagged = [i.vlan for i in group if i.vlan is not None]
                if not self.dot1q:
                    pass                      # one bridge per VLAN: nothing to tag
                elif tagged:
                    self.vlan_ports.setdefault(sw, {})[port] = ("trunk", tagged)
                elif zone.vlan is not None:
                    self.vlan_ports.setdefault(sw, {})[port] = ("access", [zone.vlan])
        lines = []
        for sw, s in self.switch.items():
            lines.append(f"link add name {s.name} type bridge stp_state 0 nf_call_iptables 0"
                         f" nf_call_ip6tables 0 nf_call_arptables 0")
        for node, index, sw, name, port, _ in plan:
            lines.append(f"link add name {name} address {self.port_key_mac[(node, index)]} netns "
                         f"{self.mn[node].pid} type veth peer name {port}")
            lines.append(f"link set dev {port} master {self.switch[sw].name}")
        batch = self.run_dir / "config" / "ip-network.batch"
        batch.write_text("\n".join(lines) + "\n")
        r = subprocess.run(["ip", "-batch", str(batch)], capture_output=True, text=True)
        if r.returncode:
            raise EnvironmentProblem(f"creating the twin's links failed: {r.stderr.strip()[:300]}")
        ports = [s.name for s in self.switch.values()] + [pl[4] for pl in plan]
        _sysctl_ipv6_off(ports)
        up = [f"link set dev {port} up" for *_, port, _ in plan]
        up += [f"link set dev {s.name} up" for s in self.switch.values()]
        batch_up = self.run_dir / "config" / "ip-up.batch"
        batch_up.write_text("\n".join(up) + "\n")
        r = subprocess.run(["ip", "-batch", str(batch_up)], capture_output=True, text=True)
        if r.returncode:
            raise EnvironmentProblem(f"bringing the twin's ports up failed: {r.stderr.strip()[:300]}")
        for node, index, sw, name, port, port_no in plan:
            port1 = index if isinstance(index, int) else 1000 + index[1]
            self.net.addLink(self.mn[node], self.switch[sw], port1=port1, port2=port_no,
                             intfName1=name, intfName2=port, cls=PrebuiltLink, intf=QuietIntf)
        self.net.build()
        self._configure_vlans()

    def _configure_vlans(self):
        """802.1Q on shared switches: access ports untagged in their zone's VLAN, trunks tagged."""
        for sw, ports in self.vlan_ports.items():
            br = self.switch[sw].name
            _ip(["link", "set", "dev", br, "type", "bridge", "vlan_filtering", "1"])
            for port, (mode, vlans) in ports.items():
                subprocess.run(["bridge", "vlan", "del", "dev", port, "vid", "1"], capture_output=True)
                for v in vlans:
                    extra = ["pvid", "untagged"] if mode == "access" else []
                    r = subprocess.run(["bridge", "vlan", "add", "dev", port, "vid", str(v), *extra],
                                       capture_output=True, text=True)
                    if r.returncode:
                        raise EnvironmentProblem(f"bridge vlan on {port}: {r.stderr.strip()}")

    def _key(self, itf):
        """Which physical port carries an interface: its index, or (index, vlan) where VLANs
        are emulated with one veth per VLAN."""
        return itf.index if (self.dot1q or itf.vlan is None) else (itf.index, itf.vlan)

    def _ports(self, node) -> dict:
        """A node's interfaces grouped by the physical port that carries them."""
        groups: dict = {}
        for itf in node.interfaces:
            groups.setdefault(self._key(itf), []).append(itf)
        return groups

    def _switch_of(self, zone) -> str:
        return zone.switch_name if self.dot1q else zone.name

    def _dev(self, node: str, itf) -> str:
        """The device that carries an interface's address inside the node."""
        phys = self.intf[(node, self._key(itf))]
        if itf.vlan is None or not self.dot1q:
            return phys
        return f"eth{itf.index}.{itf.vlan}"

    def _configure(self):
        """Addresses, routes, forwarding, firewall rules and node-side shaping: one shell script
        per node, sent to every node's shell at once and then collected (parallel)."""
        shaped = self._plan_shaping()
        scripts = {}
        for node in self.topo.nodes.values():
            lines = ["sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
                     " net.ipv6.conf.lo.disable_ipv6=1"]
            for key in self._ports(node):
                phys = self.intf[(node.name, key)]
                lines += [f"ip addr flush dev {phys}", f"ip link set {phys} up"]
            for itf in node.interfaces:
                dev = self._dev(node.name, itf)
                if itf.vlan is not None and self.dot1q:
                    lines.append(f"ip link add link {self.intf[(node.name, itf.index)]} name {dev}"
                                 f" type vlan id {itf.vlan}")
                lines += [f"ip addr add {itf.cidr} dev {dev}", f"ip link set {dev} up"]
            lines.append("ip link set lo up")
            if node.is_router:
                lines.append("sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0"
                             " net.ipv4.conf.default.rp_filter=0")
            elif node.gateway:
                lines.append(f"ip route replace default via {node.gateway}")
            lines += [f"ip route replace {net} via {nh}" for net, nh in node.routes]
            if node.kind == "firewall":
                path = self.run_dir / "config" / f"{node.name}.nft"
                path.write_text(firewall.ruleset(node))
                lines.append(f"nft -f {path} || echo 'Error: nftables rejected {path.name}'")
            # the node's side of every shaped port (the switch side is shaped in _shape)
            for itf in shaped.get(node.name, []):
                for cmd in shaping.htb_commands(self.intf[(node.name, self._key(itf))], itf.profile,
                                                self.netem):
                    lines.append(" ".join(cmd))
            scripts[node.name] = " ; ".join(lines) + " ; echo __done__"
        # send to every shell first, then collect: the nodes configure themselves in parallel
        names = list(scripts)
        for chunk in range(0, len(names), 64):
            batch = names[chunk:chunk + 64]
            for name in batch:
                self.mn[name].sendCmd(scripts[name])
            for name in batch:
                out = self.mn[name].waitOutput()
                if "__done__" not in out or "Error" in out or "RTNETLINK" in out:
                    raise EnvironmentProblem(f"configuring {name} failed: {out.strip()[:300]}")

    def _plan_shaping(self) -> dict[str, list]:
        """Which ports get shaped (per node), whether netem exists, and the one warning if not."""
        shaped: dict[str, list] = {}
        for n in self.topo.nodes.values():
            for g in self._ports(n).values():
                if g[0].profile:
                    shaped.setdefault(n.name, []).append(g[0])
        if not shaped:
            return shaped
        first_node, first = next(iter(shaped.items()))
        self.netem = _netem_available(self.port[(first_node, self._key(first[0]))])
        unshaped = sorted({(i.zone, i.profile.name, i.profile.delay_ms, i.profile.loss_pct)
                           for itfs in shaped.values() for i in itfs if i.profile.needs_netem})
        if unshaped and not self.netem:
            what = ", ".join(f"{z} ({prof}: {d:g} ms delay, {lo:g}% loss)"
                             for z, prof, d, lo in unshaped)
            msg = ("netem is not available in this kernel: delay, jitter and loss are NOT emulated"
                   f" on {what}; bandwidth is shaped with HTB")
            self.warnings.append(msg)
            self.log(msg)
        self._shaped = shaped
        return shaped

    def _shape(self):
        """The switch side of every shaped port, in one ``tc -batch`` run in the root namespace."""
        lines = []
        for node, itfs in getattr(self, "_shaped", {}).items():
            for itf in itfs:
                for cmd in shaping.htb_commands(self.port[(node, self._key(itf))], itf.profile,
                                                self.netem):
                    lines.append(" ".join(cmd[1:]))
        if not lines:
            return
        batch = self.run_dir / "config" / "tc-switch-ports.batch"
        batch.write_text("\n".join(lines) + "\n")
        r = subprocess.run(["tc", "-batch", str(batch)], capture_output=True, text=True)
        if r.returncode:
            raise EnvironmentProblem(f"tc failed on a switch port: {r.stderr.strip()[:300]}")

    def _start_sensors(self):
        """The capture points (cyberrange.twin.sensors); ``sensor_rotate_s`` set before
        ``start()`` rotates every sensor's pcap at least that often (live mode)."""
        from cyberrange.twin.sensors import Sensors
        self.sensors = Sensors(self, rotate_s=getattr(self, "sensor_rotate_s", 0))
        self.sensors.start()
        self.sensor_procs = self.sensors.procs
        self.sensor_files = {s.name: self.sensors.target(s) for s in self.sensors.sensors
                             if not self.sensors.rotating(s)}

    def _span_chains(self, i: int, zone_name: str, mon: str) -> list[str]:
        """nft netdev chains that copy every frame entering the zone's switch to ``mon``."""
        from cyberrange.twin.sensors import Sensors
        return Sensors(self, sensors=[]).span_chains(i, zone_name, mon)

    def stop_sensors(self, drain: float = 0.3) -> dict[str, dict]:
        """Stop the captures (flushing their pcaps); per sensor tcpdump's own counters
        (captured, received_by_filter, dropped_by_kernel), its files with their frames, scope."""
        sensors = getattr(self, "sensors", None)
        if sensors is None:
            return {}
        stats = sensors.stop(drain)
        self.sensor_procs = {}
        return stats

    def _start_services(self):
        py = sys.executable
        waits = []
        dns_hosts = self.run_dir / "config" / "dns-hosts"
        dns_hosts.write_text("".join(
            f"{itf.ip} {n.name}.{self.topo.domain} {n.name}\n"
            for n in self.topo.nodes.values() for itf in n.interfaces[:1]))
        for node in self.topo.hosts:
            for svc in node.services:
                logf = self.run_dir / "logs" / f"{node.name}-{svc.type}-{svc.port}.log"
                if svc.type == "http":
                    argv = [py, "-m", "cyberrange.twin.services.http", "--port", str(svc.port),
                            "--banner", svc.banner or "cyberrange-httpd", "--log", str(logf)]
                elif svc.type == "login":
                    acc = self.run_dir / "config" / f"{node.name}-login-{svc.port}.json"
                    acc.write_text(json.dumps([{"user": a.user, "password": a.password}
                                               for a in svc.accounts]))
                    argv = [py, "-m", "cyberrange.twin.services.login", "--port", str(svc.port),
                            "--banner", svc.banner or "SSH-2.0-cyberrange", "--accounts-file",
                            str(acc), "--log", str(logf)]
                elif svc.type == "ssh":
                    acc = self.run_dir / "config" / f"{node.name}-ssh-{svc.port}.json"
                    acc.write_text(json.dumps([{"user": a.user, "password": a.password}
                                               for a in svc.accounts]))
                    argv = [py, "-m", "cyberrange.twin.services.ssh", "--port", str(svc.port),
                            "--accounts-file", str(acc), "--hostname", node.name,
                            "--host-key-dir", str(self.run_dir / "config" / "hostkeys" / node.name),
                            "--log", str(logf)] + (["--banner", svc.banner] if svc.banner else [])
                elif svc.type in ("c2-http", "c2-dns"):
                    mode = svc.type.split("-")[1]
                    argv = [py, "-m", "cyberrange.twin.services.c2", "--mode", mode,
                            "--port", str(svc.port), "--log", str(logf),
                            "--out", str(self.run_dir / "exfil" / node.name)]
                    if mode == "dns":
                        argv += ["--domain", svc.domain or "evil.example"]
                    elif svc.banner:
                        argv += ["--banner", svc.banner]
                elif svc.type == "modbus":
                    regs = getattr(svc, "registers", None) or {}
                    argv = [py, "-m", "cyberrange.twin.services.modbus", "--port", str(svc.port),
                            "--registers", json.dumps({str(k): v for k, v in regs.items()}),
                            "--log", str(logf)]
                elif svc.type in ("ntp", "syslog", "chat", "backup"):    # benign traffic's servers
                    argv = [py, "-m", f"cyberrange.twin.services.{svc.type}",
                            "--port", str(svc.port), "--log", str(logf)]
                elif svc.type == "dns":
                    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                            "--no-resolv", "--no-hosts", f"--addn-hosts={dns_hosts}",
                            f"--port={svc.port}", f"--listen-address={node.ip}", "--bind-interfaces",
                            f"--domain={self.topo.domain}", f"--local=/{self.topo.domain}/",
                            "--pid-file=", "--user=root", f"--log-facility={logf}", "--log-queries"]
                else:  # the loader rejects unknown types; keep the twin honest if one slips by
                    raise EnvironmentProblem(f"no implementation for service type {svc.type!r}")
                out = open(self.run_dir / "logs" / f"{node.name}-{svc.type}-{svc.port}.out", "w")
                self.popen(node.name, argv, stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
                waits.append((node, svc))
        deadline = time.time() + 20
        for node, svc in waits:
            flag = "-Hlun" if svc.proto == "udp" else "-Hltn"
            while True:
                r = self.run(node.name, ["ss", flag, f"sport = :{svc.port}"], timeout=5)
                if r.stdout.strip():
                    break
                if time.time() > deadline:
                    logt = _read(self.run_dir / "logs" / f"{node.name}-{svc.type}-{svc.port}.out")
                    raise EnvironmentProblem(
                        f"service {svc.type}/{svc.port} on {node.name} did not start: "
                        f"{logt.strip().splitlines()[-1] if logt.strip() else 'no output'}")
                time.sleep(0.1)


# -- helpers ------------------------------------------------------------------

_DOT1Q: dict[str, bool] = {}


def _dot1q_available(prefix: str) -> bool:
    """Probe once per process: VLAN devices and VLAN-filtering bridges both work?"""
    if "v" not in _DOT1Q:
        a, b, br = f"{prefix}m0a", f"{prefix}m0b", f"{prefix}s0"
        ok = subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b],
                            capture_output=True).returncode == 0
        try:
            ok = ok and subprocess.run(["ip", "link", "add", "link", a, "name", f"{a}.9", "type",
                                        "vlan", "id", "9"], capture_output=True).returncode == 0
            ok = ok and subprocess.run(["ip", "link", "add", br, "type", "bridge",
                                        "vlan_filtering", "1"], capture_output=True).returncode == 0
        finally:
            for dev in (br, a):
                subprocess.run(["ip", "link", "del", dev], capture_output=True)
        _DOT1Q["v"] = ok
    return _DOT1Q["v"]


def _ip(args: list[str]) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise EnvironmentProblem(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _sysctl_ipv6_off(devs: list[str]) -> None:
    for d in devs:
        try:
            Path(f"/proc/sys/net/ipv6/conf/{d}/disable_ipv6").write_text("1")
        except OSError:
            pass


_NETEM: dict[str, bool] = {}


def _netem_available(dev: str) -> bool:
    """Probe once per process: can this kernel add a netem qdisc?"""
    if "v" not in _NETEM:
        r = subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "handle", "9:", "netem",
                            "delay", "0ms"], capture_output=True, text=True)
        _NETEM["v"] = r.returncode == 0
        if r.returncode == 0:
            subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
    return _NETEM["v"]


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
