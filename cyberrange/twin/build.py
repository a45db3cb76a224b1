"""Model -> a running twin: named network namespaces, Linux bridges, veths, batches.

``Twin(topology, run_dir, run_id).start()`` builds, in order, each stage small and named:

1. ``_build_network``  one named namespace per node (``<prefix>h<N>``) and one for the
                        switches (``<prefix>sw``), made by one ``ip -batch``; their net
                        sysctls (IPv6 off; forwarding on routers) written in-process; every
                        veth pair made by a second batch straight into its two namespaces
                        (node end ``eth<K>``, switch end ``p<N>``); the bridges and their ports
                        by a third, inside the switch namespace. Nothing of the twin is in the
                        host's namespace: it cannot touch a real interface.
2. ``_configure``       per node one ``ip -batch`` (addresses, VLANs, routes), ``nft -f`` on
                        firewalls and ``tc -batch`` where a port is shaped, run a few at a time.
3. ``_shape``           the switch side of every shaped port: one ``tc -batch``.
4. ``_start_sensors``   the capture points (``twin/sensors.py``), in the switch namespace.
5. ``_start_services``  HTTP, login, DNS, ... started in their nodes, waited for until they
                        listen (read from ``/proc/thread-self/net``, no ``ss`` per check).

No node has a process of its own: programs start inside a node's namespace directly
(``twin/netns.py``), and ``twin.net`` is a Mininet network of the same nodes, switches and links
(``twin/mnnodes.py``) whose hosts start a shell only when asked for one.

Everything created is recorded in a ``TwinState`` as it is created; ``stop()`` (also run on
any exception during ``start()``) removes exactly those objects (``twin/state.py``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cyberrange.errors import EnvironmentProblem
from cyberrange.model.topology import Topology
from cyberrange.twin import firewall, frr, linkemu, netns, shaping
from cyberrange.twin.shield import Shield
from cyberrange.twin.state import TwinState, new_prefix, process_start, teardown

REQUIRED_TOOLS = {"tcpdump": "tcpdump", "nft": "nftables", "ip": "iproute2", "tc": "iproute2"}
PARALLEL = 4                       # per-node configuration commands running at once
# How a link's delay, jitter and loss are emulated (``CYBERRANGE_LINK_EMULATION`` or a verb's
# ``--link-emulation``): "emulate" (the default) is netem where the kernel has it, else the
# userspace relay; "relay"/"netem" force one; "shape" emulates bandwidth only (and warns).
LINK_MODES = ("emulate", "shape", "relay", "netem")

IPV6_OFF = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
FORWARDING = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
              "net.ipv4.conf.default.rp_filter": "0"}


def preflight(need_dns: bool = False, need_frr: bool = False) -> None:
    """Fail early, with one line, when the machine cannot run a twin."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("building a twin needs root (network namespaces, veths, nftables)")
    tools = dict(REQUIRED_TOOLS)
    if need_dns:
        tools["dnsmasq"] = "dnsmasq-base"
    if need_frr:                             # routing: ospf (twin/frr.py)
        tools.update({str(p): "frr" for p in frr.binaries().values()})
    missing = sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
    if missing:
        raise EnvironmentProblem("missing Debian packages: " + " ".join(missing)
                                 + " (apt-get install them, or run the README's set-up command)")
    try:
        import cyberrange.twin.mnnodes  # noqa: F401 - Mininet, without its logger side effect
    except ImportError as e:
        raise EnvironmentProblem(
            "Mininet's Python module is not importable; install Debian's 'mininet' package and "
            "use a virtual environment made with --system-site-packages from /usr/bin/python3"
        ) from e


def _mac(prefix: str, node: str, index) -> str:
    h = hashlib.sha1(f"{prefix}/{node}/{index}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


def _batch(argv: list[str], lines: list[str], what: str, ns: str | None = None) -> None:
    """Run ``argv`` (``ip -batch -``, ``tc -batch -``...) with ``lines`` on its stdin, in the
    host's namespace or in ``ns``; one line of error if it fails."""
    if not lines:
        return
    text = "\n".join(lines) + "\n"
    if ns is None:
        r = subprocess.run(argv, input=text, capture_output=True, text=True,
                           start_new_session=True)
    else:
        r = netns.run(ns, argv, input=text)
    if r.returncode:
        raise EnvironmentProblem(f"{what} failed: {(r.stderr or r.stdout).strip()[:300]}")


class Twin:
    """A running twin of one topology. Also a NodeRunner: ``popen(node, argv)``."""

    def __init__(self, topology: Topology, run_dir: Path, run_id: str, log=None):
        self.topo = topology
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.log = log or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
        self.warnings: list[str] = []
        self.net = None                          # a Mininet network of the same objects
        self.ns: dict[str, str] = {}             # model node -> its namespace's name
        self.sw_ns: str | None = None            # the switches' namespace
        self.bridge: dict[str, str] = {}         # switch (zone or shared switch) -> bridge
        self.port_key_mac: dict[tuple, str] = {}
        self.intf: dict[tuple, str] = {}         # (node, port key) -> device in the node
        self.port: dict[tuple, str] = {}         # (node, port key) -> switch port (switch ns)
        self.sensor_procs: dict[str, subprocess.Popen] = {}
        self.sensor_files: dict[str, Path] = {}
        self.procs: list[subprocess.Popen] = []
        self.netem = False
        self.relay_ports: dict[tuple, tuple[str, str]] = {}
        self.relay_proc: subprocess.Popen | None = None
        # how delay/jitter/loss are emulated (LINK_MODES); ``start()`` replaces "emulate" by the
        # mode used: "netem", "relay" or "none" (no link needs it)
        self.link_emulation = os.environ.get("CYBERRANGE_LINK_EMULATION") or "emulate"
        self.dot1q = True
        self.frr: frr.Frr | None = None          # routing: ospf (twin/frr.py)
        self.state: TwinState | None = None
        self.timings: dict[str, float] = {}
        self.removed: dict = {}
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------
    def start(self, stage_cb=None) -> "Twin":
        preflight(need_dns=any(s.type == "dns" for n in self.topo.hosts for s in n.services),
                  need_frr=self.topo.routing.protocol == "ospf")
        for d in ("pcaps", "logs", "config"):
            (self.run_dir / d).mkdir(parents=True, exist_ok=True)
        prefix = new_prefix()
        self.state = TwinState(prefix=prefix, run_id=self.run_id,
                               run_dir=str(self.run_dir), topology=self.topo.name,
                               owner_pid=os.getpid(), owner_start=process_start(os.getpid()))
        self.state.nft_table = f"cyberrange_{prefix}"
        self.sw_ns = self.state.switch_ns = f"{prefix}sw"
        self.ns = {n: f"{prefix}h{i}" for i, n in enumerate(self.topo.nodes, 1)}
        self.state.namespaces = dict(self.ns)
        self.state.kernel_names = dict(self.ns)
        self.state.save()                        # before the first object: teardown can find all
        stages = [("network", self._build_network), ("configure", self._configure),
                  ("shape", self._shape), ("routing", self._start_routing),
                  ("sensors", self._start_sensors),
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
        if self.frr is not None:                 # SIGTERM first: FRR cleans up after itself
            self.frr.stop()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        removed = teardown(self.state)
        for p in self.procs:                     # reap: they were killed with their namespace
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.net is not None:                 # close the ptys of shells someone started
            for h in self.net.hosts:
                if getattr(h, "shell", None) is not None:
                    try:
                        h.shell.wait(timeout=2)
                        h.waitExited = False
                        type(h).outToNode.pop(h.stdout.fileno(), None)
                        type(h).inToNode.pop(h.stdin.fileno(), None)
                        h.cleanup()
                    except Exception:  # noqa: BLE001 - best effort
                        pass
        return removed

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- NodeRunner ----------------------------------------------------------
    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        if node not in self.ns:
            raise KeyError(f"no node {node!r} in twin {self.topo.name}")
        kwargs.setdefault("start_new_session", True)
        p = netns.popen(self.ns[node], argv, **kwargs)
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
        """Run a shell script in a node; its output (stdout and stderr)."""
        r = self.run(node, ["sh", "-c", script], timeout=120)
        return r.stdout + r.stderr

    def kernel_name(self, node: str) -> str:
        """The namespace of a node (``ip netns exec NAME ...``)."""
        return self.ns[node]

    def switch_run(self, argv: list[str], input: str | None = None, timeout: float = 60):
        """Run a command in the switches' namespace (sensors, tests)."""
        return netns.run(self.sw_ns, argv, input=input, timeout=timeout)

    def switch_popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        return netns.popen(self.sw_ns, argv, **kwargs)

    # -- stages --------------------------------------------------------------
    def _build_network(self):
        """Namespaces, sysctls, veths and bridges: three batches and in-process writes."""
        p, sw_ns = self.state.prefix, self.sw_ns
        _batch(["ip", "-batch", "-"], [f"netns add {sw_ns}"]
               + [f"netns add {ns}" for ns in self.ns.values()], "creating the namespaces")
        # IPv6 off before any device arrives (a moved-in device takes the namespace's
        # defaults): no router solicitations or DAD in the captures; forwarding on routers
        netns.sysctl(sw_ns, IPV6_OFF)
        for node in self.topo.nodes.values():
            netns.sysctl(self.ns[node.name], {**IPV6_OFF, **(FORWARDING if node.is_router
                                                             else {})})
        self._plan_links()
        self.dot1q = _dot1q_available(sw_ns) if any(
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
            if sw not in self.bridge:
                self.bridge[sw] = f"br{len(self.bridge) + 1}"
                self.state.kernel_names[f"switch:{sw}"] = f"{sw_ns}/{self.bridge[sw]}"
            self.state.kernel_names[f"zone:{zone.name}"] = f"{sw_ns}/{self.bridge[sw]}"
        # One link per physical port; VLAN interfaces with the same index share a trunk port.
        self.vlan_ports: dict[str, dict[str, tuple[str, list[int]]]] = {}
        plan, pairs = [], []
        for node in self.topo.nodes.values():
            for index, group in self._ports(node).items():
                zone = self.topo.zones[group[0].zone]
                sw = self._switch_of(zone)
                name = f"eth{index}" if isinstance(index, int) else f"eth{index[0]}v{index[1]}"
                port = f"p{len(plan) + 1}"
                mac = self.port_key_mac[(node.name, index)] = _mac(p, node.name, index)
                self.intf[(node.name, index)] = name
                self.port[(node.name, index)] = port
                plan.append((node.name, index, sw, name, port))
                if self._relayed(node, index):     # eth<K> == q<N> <relay> r<N> == p<N>
                    n = port[1:]
                    self.relay_ports[(node.name, index)] = (f"q{n}", f"r{n}")
                    pairs += [(f"link add name {name} address {mac} netns {self.ns[node.name]}"
                               f" type veth peer name q{n} netns {sw_ns}"),
                              (f"link add name {port} netns {sw_ns} type veth peer name r{n} "
                               f"netns {sw_ns}")]
                else:
                    pairs.append(f"link add name {name} address {mac} netns {self.ns[node.name]}"
                                 f" type veth peer name {port} netns {sw_ns}")
                tagged = [i.vlan for i in group if i.vlan is not None]
                if not self.dot1q:
                    pass                      # one bridge per VLAN: nothing to tag
                elif tagged:
                    self.vlan_ports.setdefault(sw, {})[port] = ("trunk", tagged)
                elif zone.vlan is not None:
                    self.vlan_ports.setdefault(sw, {})[port] = ("access", [zone.vlan])
        _batch(["ip", "-batch", "-"], pairs, "creating the twin's links")
        # bridged frames never go through netfilter's IP hooks (br_netfilter, if loaded)
        lines = [f"link add name {br} type bridge stp_state 0 nf_call_iptables 0 "
                 f"nf_call_ip6tables 0 nf_call_arptables 0" for br in self.bridge.values()]
        for _node, _index, sw, _name, port in plan:
            lines += [f"link set dev {port} master {self.bridge[sw]}", f"link set dev {port} up"]
        lines += [f"link set dev {br} up" for br in self.bridge.values()]
        lines += [f"link set dev {d} up" for pair in self.relay_ports.values() for d in pair]
        _batch(["ip", "-batch", "-"], lines, "creating the switches", ns=sw_ns)
        self._configure_vlans()
        self._mininet(plan)

    def _mininet(self, plan) -> None:
        """``twin.net``: the same nodes, switches and links as Mininet objects (no commands)."""
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        from cyberrange.twin.mnnodes import NetnsHost, NetnsSwitch, PrebuiltLink, QuietIntf
        setLogLevel("critical")
        self.net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False,
                           autoStaticArp=False, waitConnected=False, inNamespace=False)
        # named as in the model (``net.get('ops-ws1')``, ``ops-ws1 ping c2-server`` in the CLI)
        hosts = {n: self.net.addHost(n, cls=NetnsHost, ns=ns, ip=None)
                 for n, ns in self.ns.items()}
        switches = {sw: self.net.addSwitch(sw if sw not in hosts else f"switch-{sw}",
                                           cls=NetnsSwitch, bridge=br, ns=self.sw_ns,
                                           dpid=f"{i:016x}")
                    for i, (sw, br) in enumerate(self.bridge.items(), 1)}
        ips = {(n.name, self._key(i)): i for n in self.topo.nodes.values() for i in n.interfaces}
        for node, index, sw, name, port in plan:
            port1 = index if isinstance(index, int) else 1000 + index[1]
            link = self.net.addLink(hosts[node], switches[sw], port1=port1,
                                    port2=int(port[1:]), intfName1=name, intfName2=port,
                                    cls=PrebuiltLink, intf=QuietIntf)
            link.intf1.mac = self.port_key_mac[(node, index)]
            itf = ips.get((node, index))
            if itf is not None:
                link.intf1.ip, link.intf1.prefixLen = str(itf.ip), itf.prefixlen

    def _configure_vlans(self):
        """802.1Q on shared switches: access ports untagged in their zone's VLAN, trunks tagged."""
        lines = []
        for sw, ports in self.vlan_ports.items():
            lines.append(f"link set dev {self.bridge[sw]} type bridge vlan_filtering 1")
            for port, (mode, vlans) in ports.items():
                lines.append(f"vlan del dev {port} vid 1")
                for v in vlans:
                    extra = " pvid untagged" if mode == "access" else ""
                    lines.append(f"vlan add dev {port} vid {v}{extra}")
        if lines:
            ip_lines = [ln for ln in lines if ln.startswith("link ")]
            _batch(["ip", "-batch", "-"], ip_lines, "VLAN filtering", ns=self.sw_ns)
            _batch(["bridge", "-batch", "-"], [ln for ln in lines if ln.startswith("vlan ")],
                   "bridge VLANs", ns=self.sw_ns)

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
        """Per node: one ``ip -batch`` (addresses, VLAN devices, routes, links up), then
        ``nft -f`` on a firewall and ``tc -batch`` for its shaped ports; a few nodes at once."""
        shaped = self._plan_shaping()
        jobs = []
        for node in self.topo.nodes.values():
            lines = [f"link set dev {self.intf[(node.name, key)]} up" for key in self._ports(node)]
            for itf in node.interfaces:
                dev = self._dev(node.name, itf)
                if itf.vlan is not None and self.dot1q:
                    lines.append(f"link add link {self.intf[(node.name, itf.index)]} name {dev}"
                                 f" type vlan id {itf.vlan}")
                lines += [f"addr add {itf.cidr} dev {dev}", f"link set dev {dev} up"]
            lines.append("link set dev lo up")
            if not node.is_router and node.gateway:
                lines.append(f"route replace default via {node.gateway}")
            # with OSPF, routers learn their routes (twin/frr.py); hand-given ones stay static
            ospf = node.is_router and self.topo.routing.protocol == "ospf"
            lines += [f"route replace {net} via {nh}"
                      for net, nh in (node.static_routes if ospf else node.routes)]
            commands = [(["ip", "-batch", "-"], "\n".join(lines) + "\n")]
            if node.filters:
                path = self.run_dir / "config" / f"{node.name}.nft"
                path.write_text(firewall.ruleset(node))
                commands.append((["nft", "-f", str(path)], None))
            tc = [" ".join(cmd[1:]) for itf in shaped.get(node.name, [])
                  for cmd in shaping.htb_commands(self.intf[(node.name, self._key(itf))],
                                                  itf.profile, self.netem)]
            if tc:
                commands.append((["tc", "-batch", "-"], "\n".join(tc) + "\n"))
            jobs.append((node.name, self.ns[node.name], commands))
        failed = netns.run_jobs(jobs, parallel=PARALLEL)
        if failed:
            name, message = failed[0]
            raise EnvironmentProblem(f"configuring {name} failed: {message}"
                                     + (f" (and {len(failed) - 1} more nodes)" if len(failed) > 1
                                        else ""))

    def _plan_shaping(self) -> dict[str, list]:
        """Which ports get shaped (per node), whether netem exists, and the one warning if not."""
        shaped: dict[str, list] = {}
        for n in self.topo.nodes.values():
            for g in self._ports(n).values():
                if g[0].profile:
                    shaped.setdefault(n.name, []).append(g[0])
        self._shaped = shaped
        return shaped

    def _plan_links(self) -> None:
        """Before any link exists: which mode emulates delay, jitter and loss (netem where the
        kernel has it, else the userspace relay ``twin/linkemu.py``; see LINK_MODES), and one
        line saying so when it is not netem."""
        self.relay_ports: dict[tuple, tuple[str, str]] = {}
        if self.link_emulation not in LINK_MODES:
            raise EnvironmentProblem(f"link emulation {self.link_emulation!r}: want one of "
                                     + ", ".join(LINK_MODES))
        profiled = [g[0] for n in self.topo.nodes.values() for g in self._ports(n).values()
                    if g[0].profile and g[0].profile.needs_netem]
        if not profiled:
            if self.link_emulation == "emulate":
                self.link_emulation = "none"           # nothing to emulate on this topology
            return
        have = linkemu.netem_available(self.sw_ns)
        if self.link_emulation == "netem" and not have:
            raise EnvironmentProblem("link emulation 'netem': this kernel has no netem (use "
                                     "'emulate' or 'relay' for the userspace relay)")
        if self.link_emulation == "emulate":
            self.link_emulation = "netem" if have else "relay"
        self.netem = self.link_emulation == "netem"
        msg = linkemu.plan_note(self.link_emulation, have, [i for i in profiled if not self.netem])
        if msg:
            self.warnings.append(msg)
            self.log(msg)

    def _relayed(self, node, index) -> bool:
        """Does the port ``index`` of ``node`` go through the userspace link relay?"""
        if self.link_emulation != "relay":
            return False
        prof = self._ports(node)[index][0].profile
        return bool(prof) and linkemu.relay_needed(prof) and not linkemu.loss_only(prof)

    def _shape(self):
        """The switch side of every shaped port, in one ``tc -batch`` in the switch namespace."""
        lines = []
        for node, itfs in getattr(self, "_shaped", {}).items():
            for itf in itfs:
                # delay/loss on the node side only: a frame crosses two ports of its zone
                for cmd in shaping.htb_commands(self.port[(node, self._key(itf))], itf.profile,
                                                netem=False):
                    lines.append(" ".join(cmd[1:]))
        if lines:
            (self.run_dir / "config" / "tc-switch-ports.batch").write_text("\n".join(lines) + "\n")
        _batch(["tc", "-batch", "-"], lines, "tc on the switch ports", ns=self.sw_ns)
        self._start_relay()

    def _start_relay(self) -> None:
        """One relay process, in the switch namespace, for every relayed port (if any); an
        nftables drop for each port whose profile has loss alone (``linkemu.loss_only``)."""
        drops = [(self.port[(n.name, k)], g[0].profile.loss_pct) for n in self.topo.nodes.values()
                 for k, g in self._ports(n).items() if self.link_emulation == "relay"
                 and g[0].profile and linkemu.loss_only(g[0].profile)]
        if drops:
            _batch(["nft", "-f", "-"], linkemu.drop_lines(drops), "loss drops", ns=self.sw_ns)
        if not self.relay_ports:
            return
        specs = []
        for node in self.topo.nodes.values():
            for index, group in self._ports(node).items():
                if (node.name, index) not in self.relay_ports:
                    continue
                q, r = self.relay_ports[(node.name, index)]
                prof = group[0].profile
                specs.append(linkemu.LinkSpec(f"{node.name}/{self.intf[(node.name, index)]}",
                                              q, r, prof.delay_ms, prof.jitter_ms,
                                              prof.loss_pct))
        self.relay_stats = self.run_dir / "logs" / "linkemu.json"
        self.relay_specs = {sp.name: sp for sp in specs}
        self.relay_proc = linkemu.start(self.switch_popen, specs,
                                        seed=getattr(self, "link_seed", 0),
                                        stats=self.relay_stats,
                                        log=self.run_dir / "logs" / "linkemu.log",
                                        control=self.run_dir / "config" / "linkemu-control.json")
        self.procs.append(self.relay_proc)

    def _start_routing(self):
        """``routing: ospf``: zebra + ospfd in every router, until all routes are there."""
        if self.topo.routing.protocol == "ospf":
            self.frr = frr.Frr(self)             # set first: a failed start is stopped too
            self.frr.start()

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
        """Start every service of every host as its spec says (``cyberrange.services``), then
        wait until each listens."""
        from cyberrange.services.registry import SERVICES, Launch
        waits = []
        for node in self.topo.hosts:
            for svc in node.services:
                spec = SERVICES.get(svc.type)
                if spec is None:  # the loader rejects unknown types; keep the twin honest
                    raise EnvironmentProblem(f"no implementation for service type {svc.type!r}")
                name = f"{node.name}-{svc.type}-{svc.port}"
                argv = spec.argv(Launch(node=node.name, ip=node.ip, service=svc,
                                        topology=self.topo, run_dir=self.run_dir,
                                        log=self.run_dir / "logs" / f"{name}.log"))
                out = open(self.run_dir / "logs" / f"{name}.out", "w")
                self.popen(node.name, argv, stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
                waits.append((node, svc))
        deadline = time.time() + 20
        for node, svc in waits:
            while True:
                if netns.listening(self.ns[node.name], svc.port, svc.proto):
                    break
                if time.time() > deadline:
                    logt = _read(self.run_dir / "logs" / f"{node.name}-{svc.type}-{svc.port}.out")
                    raise EnvironmentProblem(
                        f"service {svc.type}/{svc.port} on {node.name} did not start: "
                        f"{logt.strip().splitlines()[-1] if logt.strip() else 'no output'}")
                time.sleep(0.1)


# -- helpers ------------------------------------------------------------------

_DOT1Q: dict[str, bool] = {}


def _dot1q_available(ns: str) -> bool:
    """Probe once per process, inside ``ns``: VLAN devices and VLAN-filtering bridges work?"""
    if "v" not in _DOT1Q:
        r = netns.run(ns, ["ip", "-batch", "-"], input=(
            "link add zqa type veth peer name zqb\n"
            "link add link zqa name zqa.9 type vlan id 9\n"
            "link add zqbr type bridge vlan_filtering 1\n"))
        _DOT1Q["v"] = r.returncode == 0
        netns.run(ns, ["ip", "-force", "-batch", "-"], input="link del zqbr\nlink del zqa\n")
    return _DOT1Q["v"]


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
