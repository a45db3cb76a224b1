"""The topology model: plain dataclasses that every other package reads.

A topology is a set of *zones* (broadcast segments, one switch each, one subnet each),
*point-to-point links* between routers (WAN, SATCOM, radio), and *nodes*: hosts that sit in
one zone, and routers/firewalls that have one interface per zone or link they touch.

The loader (``cyberrange.model.loader``) turns YAML into these objects, fills in every
default (addresses, gateways, link profiles) and validates; after loading, nothing in the
model is optional any more, so the twin builder and the static analysis never guess.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from cyberrange.services.registry import SERVICE_TYPES  # noqa: F401 (re-exported: one module each)

CLASSIFICATIONS = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET")

ROLES = (
    "workstation", "server", "c2-server", "web-server", "dns-server", "mail-server",
    "domain-controller", "file-server", "printer", "hmi", "plc", "radio-gateway",
    "foothold", "hq", "external",
)

NodeKind = Literal["host", "router", "firewall"]
Proto = Literal["tcp", "udp", "icmp", "any"]


@dataclass(frozen=True)
class KindTraits:
    """What a node of one kind does. Code asks a node these (``Node.is_router``, ``.filters``,
    ``.is_host``), never its kind's name; the name stays in the file format and in output."""
    forwards: bool      # forwards packets between its interfaces: IP forwarding on, may end a
                        # point-to-point link, a hop on router paths, gets the computed routes
    filters: bool       # has ordered rules and a default action (the nftables forward chain)
    end_system: bool    # sits in a zone behind a gateway: a role, services, benign traffic,
                        # attack steps run on it, a row and column of the reachability matrix


NODE_KINDS: dict[str, KindTraits] = {
    "host": KindTraits(forwards=False, filters=False, end_system=True),
    "router": KindTraits(forwards=True, filters=False, end_system=False),
    "firewall": KindTraits(forwards=True, filters=True, end_system=False),
}


@dataclass(frozen=True)
class SourceRef:
    """Where in which file a model element was written, for error messages."""
    file: str
    line: int
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class LinkProfile:
    """Shaping applied to a link: bandwidth in Mbit/s, delay and jitter in ms, loss in %."""
    name: str = "default"
    bandwidth_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)


@dataclass
class Zone:
    name: str
    subnet: ipaddress.IPv4Network
    classification: str
    description: str = ""
    profile: LinkProfile | None = None   # applied to every attachment in the zone
    p2p: bool = False                    # True for zones made from a point-to-point link
    vlan: int | None = None              # 802.1Q id when the zone shares a switch with others
    switch: str = ""                     # the switch carrying the zone ("" = its own switch)
    cost: int | None = None              # OSPF cost as written (None: from the bandwidth)
    src: SourceRef | None = None

    @property
    def switch_name(self) -> str:
        return self.switch or self.name


@dataclass
class Interface:
    """One attachment of a node to a zone (or to a point-to-point link's implicit zone)."""
    zone: str
    ip: ipaddress.IPv4Address
    prefixlen: int
    index: int = 0                       # ethN inside the node (the physical port)
    profile: LinkProfile | None = None
    vlan: int | None = None              # set: a tagged subinterface ethN.<vlan> on a trunk port

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"

    @property
    def devname(self) -> str:
        """Name of the interface inside the node ("eth0", "eth1.20"), as the twin names it."""
        return f"eth{self.index}" + (f".{self.vlan}" if self.vlan is not None else "")


@dataclass
class Account:
    user: str
    password: str


@dataclass
class Service:
    type: str                            # one of SERVICE_TYPES
    port: int
    proto: Literal["tcp", "udp"] = "tcp"
    accounts: list[Account] = field(default_factory=list)   # login
    banner: str = ""                     # login / http
    domain: str = ""                     # dns: the twin's domain; c2-dns: the C2 domain
    registers: dict[int, int] = field(default_factory=dict)  # modbus: initial holding registers
    writers: list[str] | None = None     # modbus: hosts allowed to write (None: not set)
    src: SourceRef | None = None


@dataclass
class Software:
    """One entry of a node's software inventory (used by patch validation)."""
    name: str
    version: str
    cpe: str = ""


@dataclass
class MissionThread:
    """A named flow that must keep working, e.g. ``fires: ops-ws* -> c2-server tcp/8080``."""
    name: str
    src: list[str]                       # node names (patterns already expanded)
    dst: list[str]
    proto: Literal["tcp", "udp", "icmp"] = "tcp"
    port: int | None = None
    description: str = ""
    src_ref: SourceRef | None = None


@dataclass
class Endpoint:
    """A firewall rule's from/to: a zone, a node, a CIDR, any, or a list of those.

    ``networks`` always holds the resolved networks (empty for ``any``); for ``list`` the
    ``value`` is the comma-joined names as written and ``networks`` their union."""
    kind: Literal["any", "zone", "node", "cidr", "list"]
    value: str = ""
    networks: list[ipaddress.IPv4Network] = field(default_factory=list)  # resolved

    def matches(self, ip: ipaddress.IPv4Address) -> bool:
        return self.kind == "any" or any(ip in n for n in self.networks)


@dataclass
class Rule:
    action: Literal["allow", "deny"]
    src: Endpoint
    dst: Endpoint
    proto: Proto = "any"
    ports: list[tuple[int, int]] = field(default_factory=list)   # inclusive ranges; [] = any
    comment: str = ""
    src_ref: SourceRef | None = None

    def matches(self, src_ip, dst_ip, proto: str, port: int | None) -> bool:
        if self.proto != "any" and self.proto != proto:
            return False
        if self.ports and (port is None or not any(lo <= port <= hi for lo, hi in self.ports)):
            return False
        return self.src.matches(src_ip) and self.dst.matches(dst_ip)


@dataclass
class Node:
    name: str
    kind: NodeKind
    role: str = "server"
    interfaces: list[Interface] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    gateway: ipaddress.IPv4Address | None = None           # hosts: default route
    routes: list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)        # firewalls: ordered, first match wins
    default_action: Literal["allow", "deny"] = "allow"
    classification: str | None = None
    description: str = ""
    software: list[Software] = field(default_factory=list)
    static_routes: list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]] = field(
        default_factory=list)                              # given by hand; also in ``routes``
    src: SourceRef | None = None

    @property
    def ip(self) -> ipaddress.IPv4Address:
        """The node's primary address (first interface)."""
        return self.interfaces[0].ip

    @property
    def is_router(self) -> bool:
        """Forwards packets between its interfaces (routers and firewalls)."""
        return NODE_KINDS[self.kind].forwards

    @property
    def filters(self) -> bool:
        """Judges forwarded packets by ordered ``rules`` and ``default_action`` (firewalls)."""
        return NODE_KINDS[self.kind].filters

    @property
    def is_host(self) -> bool:
        """An end system: has a role and a gateway, runs services and benign traffic, and is
        where attack steps run."""
        return NODE_KINDS[self.kind].end_system


@dataclass
class Link:
    """A point-to-point link between two routers; it becomes a two-member p2p zone."""
    name: str
    a: str
    b: str
    subnet: ipaddress.IPv4Network
    profile: LinkProfile | None = None
    cost: int | None = None              # OSPF cost as written (None: from the bandwidth)
    src: SourceRef | None = None


@dataclass
class Routing:
    """How routers learn routes: ``static`` (computed by ``model/routing.py`` and installed
    once) or ``ospf`` (every router and firewall runs FRR's zebra and ospfd, ``twin/frr.py``);
    ``hello``/``dead`` are the OSPF timers in seconds (dead > hello)."""
    protocol: Literal["static", "ospf"] = "static"
    hello: int = 1
    dead: int = 4
    src: SourceRef | None = None


@dataclass
class Sensor:
    """A capture point. Three kinds, each capturing every frame it sees exactly once:

    * ``zone`` only: a SPAN of the zone's (or link's) switch: every frame entering it;
    * ``zone`` + ``nodes``: a switch port set: frames to or from those nodes' ports;
    * ``interface`` = (router or firewall node, zone): both directions of that router interface,
      captured inside the router's namespace.
    ``rotate_s`` / ``rotate_mb`` rotate the pcap files (0: one file)."""
    name: str
    zone: str = ""
    nodes: list[str] = field(default_factory=list)
    interface: tuple[str, str] | None = None
    rotate_s: int = 0
    rotate_mb: int = 0
    default: bool = False                # made by the loader because the topology declared none
    src: SourceRef | None = None

    @property
    def kind(self) -> str:
        return "interface" if self.interface else ("ports" if self.nodes else "span")


@dataclass
class TrafficProfile:
    """One benign activity of a host: what it does, to whom, how often."""
    kind: str                            # browse | dns | ntp | chat | syslog | backup |
                                         # c2-report | modbus-poll | admin-ssh | login
    targets: list[str] = field(default_factory=list)   # node names ([] = chosen from the model)
    interval_s: float = 5.0              # mean pause between two occurrences
    params: dict = field(default_factory=dict)


@dataclass
class BenignTraffic:
    enabled: bool = True
    interval_s: float = 2.0              # mean pause between one host's requests (v1)
    seed: int = 1
    intensity: float = 1.0               # multiplies every rate (0.5 = half as busy)
    roles: dict[str, list[TrafficProfile]] = field(default_factory=dict)   # role -> profiles
    nodes: dict[str, list[TrafficProfile]] = field(default_factory=dict)   # per-node overrides


@dataclass
class Topology:
    name: str
    classification: str
    description: str = ""
    zones: dict[str, Zone] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    sensors: dict[str, Sensor] = field(default_factory=dict)
    profiles: dict[str, LinkProfile] = field(default_factory=dict)
    benign: BenignTraffic = field(default_factory=BenignTraffic)
    domain: str = "twin.local"
    file: str = ""
    version: int = 1
    missions: dict[str, MissionThread] = field(default_factory=dict)
    crown_jewels: list[str] = field(default_factory=list)     # node names
    entry_points: list[str] = field(default_factory=list)     # node names
    includes: list[str] = field(default_factory=list)         # files merged in, resolved paths
    routing: Routing = field(default_factory=Routing)

    # -- convenience views -------------------------------------------------
    @property
    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_host]

    @property
    def routers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_router]

    def address_space(self) -> list[ipaddress.IPv4Network]:
        """Every subnet of the twin: the containment guard allows these and nothing else."""
        return [z.subnet for z in self.zones.values()]

    def _index(self) -> dict:
        """Address and zone indexes, rebuilt whenever nodes or interfaces were added."""
        stamp = (len(self.nodes), sum(len(n.interfaces) for n in self.nodes.values()))
        idx = self.__dict__.get("_idx")
        if idx is None or idx["stamp"] != stamp:
            by_ip, by_zone = {}, {}
            for n in self.nodes.values():
                for i in n.interfaces:
                    by_ip.setdefault(i.ip, n)
                    by_zone.setdefault(i.zone, []).append((n, i))
            idx = self.__dict__["_idx"] = {"stamp": stamp, "ip": by_ip, "zone": by_zone}
        return idx

    def node_by_ip(self, ip) -> Node | None:
        return self._index()["ip"].get(ipaddress.ip_address(ip))

    def members(self, zone: str) -> list[tuple[Node, Interface]]:
        return list(self._index()["zone"].get(zone, ()))
