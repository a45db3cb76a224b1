"""Static reachability: would a NEW connection from a node to an address get through?

The packet follows the routes (``routing.router_path``). Every firewall it is *forwarded* by
evaluates its rules in order on (source ip, destination ip, proto, destination port); the first
rule that matches decides; when none matches, the firewall's ``default`` decides. A router
(kind ``router``) has no rules and forwards everything.

This is the same decision the twin's nftables make, because the twin generates each firewall's
``forward`` chain as::

    ct state established,related accept     # replies and related ICMP of allowed flows
    <the rules, in file order>               # allow -> accept, deny -> drop
    policy <default>                         # allow -> accept, deny -> drop

so a NEW flow meets exactly the rules below in the same order, and its replies pass the firewalls
that saw its first packet, because their conntrack knows the flow. Replies are also routed: where
routes are asymmetric (a hand route sends them back another way), a firewall on the way back that
did not see the request meets the reply as an unknown packet, and only a rule that allows it (with
no destination port, since the reply goes to the client's ephemeral port) lets it through. So a
connection gets through only when the request is allowed forward AND the reply is not dropped on
its way back (``_reply_check``). Traffic addressed *to* a router or firewall itself goes through the ``input``
chain, which the forward rules do not govern; here it is reported as reachable once it gets to
that router, and the twin must keep the input policy at accept to match.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cyberrange.errors import UserError
from cyberrange.model.routing import NoRoute, next_hop, router_path
from cyberrange.model.topology import Node, Rule, Topology
from cyberrange.model.yamlsrc import did_you_mean


def _node(topo: Topology, name: str) -> Node:
    if name not in topo.nodes:
        raise UserError(f"unknown node '{name}'{did_you_mean(name, topo.nodes)}")
    return topo.nodes[name]


def resolve_address(topo: Topology, node_or_ip: str) -> ipaddress.IPv4Address:
    """A node name (its primary address) or an IPv4 address."""
    if node_or_ip in topo.nodes:
        return topo.nodes[node_or_ip].ip
    try:
        return ipaddress.ip_address(node_or_ip)
    except ValueError:
        raise UserError(f"'{node_or_ip}' is neither a node nor an IPv4 address"
                        f"{did_you_mean(node_or_ip, topo.nodes)}") from None


def source_address(topo: Topology, src: Node, dst_ip) -> ipaddress.IPv4Address:
    """The address a packet from ``src`` carries: a host's own; a router's outgoing interface."""
    if not src.is_router:
        return src.ip
    dst_ip = ipaddress.ip_address(dst_ip)
    for i in src.interfaces:
        if dst_ip in topo.zones[i.zone].subnet:
            return i.ip
    via = next_hop(src, dst_ip)
    if via is not None:
        for i in src.interfaces:
            if via in topo.zones[i.zone].subnet:
                return i.ip
    return src.ip


def _describe(fw: Node, index: int, rule: Rule) -> str:
    where = f", line {rule.src_ref.line}" if rule.src_ref else ""
    note = f": {rule.comment}" if rule.comment else ""
    return f"{fw.name} rule {index + 1}{where}{note}"


def decide(fw: Node, src_ip, dst_ip, proto: str, port: int | None) -> tuple[bool, str]:
    """One firewall's verdict on a NEW forwarded packet: first matching rule, else the default."""
    for k, rule in enumerate(fw.rules):
        if rule.matches(src_ip, dst_ip, proto, port):
            return rule.action == "allow", _describe(fw, k, rule)
    if fw.kind == "firewall":
        return fw.default_action == "allow", f"{fw.name} default {fw.default_action}"
    return True, f"{fw.name} forwards"


def allowed(topo: Topology, src_node_name: str, dst_ip, proto: str = "tcp",
            port: int | None = None) -> tuple[bool, str]:
    """``(True, why)`` if a NEW ``proto``/``port`` flow from the node to ``dst_ip`` gets through.

    ``dst_ip`` may also be a node name. ``port`` is required for tcp and udp, ignored for icmp.
    """
    src = _node(topo, src_node_name)
    dst_ip = resolve_address(topo, str(dst_ip))
    if proto not in ("tcp", "udp", "icmp"):
        raise UserError(f"unknown proto '{proto}' (expected tcp, udp or icmp)")
    if proto == "icmp":
        port = None
    elif port is None:
        raise UserError(f"a {proto} check needs a port")
    elif not 1 <= int(port) <= 65535:
        raise UserError(f"port {port} is out of range 1..65535")
    if any(i.ip == dst_ip for i in src.interfaces):
        return True, f"{dst_ip} is {src.name} itself"
    try:
        path = router_path(topo, src, dst_ip)
    except NoRoute as e:
        return False, f"no route: {e}"
    src_ip = source_address(topo, src, dst_ip)
    hops = []
    for router in path:
        if any(i.ip == dst_ip for i in router.interfaces):
            hops.append(f"{router.name} (destination; input, not forwarded)")
            break
        ok, why = decide(router, src_ip, dst_ip, proto, port)
        if not ok:
            return False, f"denied by {why}"
        if router.kind == "firewall":
            hops.append(f"allowed by {why}")
    back = _reply_check(topo, src_ip, dst_ip, proto, {r.name for r in path})
    if back:
        return False, back
    route = " -> ".join([src.name, *(r.name for r in path), str(dst_ip)])
    return True, "; ".join([f"path {route}", *hops])


def _reply_check(topo: Topology, src_ip, dst_ip, proto: str, forward: set[str]) -> str:
    """Why the reply of an allowed flow is dropped on its way back, or "" when it is not.

    Only firewalls the request did not cross can drop it: there the reply is an unknown packet,
    judged by the rules with the reply's addresses and no known port."""
    dst = topo.node_by_ip(dst_ip)
    if dst is None:
        return ""
    try:
        back = router_path(topo, dst, src_ip)
    except NoRoute as e:
        return f"no route back: {e}"
    reply_src = source_address(topo, dst, src_ip)
    for router in back:
        if router.name in forward or router.kind != "firewall":
            continue
        if any(i.ip == src_ip for i in router.interfaces):
            break
        ok, why = decide(router, reply_src, src_ip, proto, None)
        if not ok:
            route = " -> ".join([dst.name, *(r.name for r in back), str(src_ip)])
            return (f"denied on the way back: the reply returns by another route ({route}) "
                    f"and {router.name} never saw the request ({why})")
    return ""


@dataclass(frozen=True)
class ReachResult:
    src: str
    dst: str
    proto: str
    port: int | None
    allowed: bool
    reason: str


def matrix(topo: Topology) -> list[ReachResult]:
    """Every host against every other host: ICMP echo and each service the destination runs."""
    out = []
    for src in topo.hosts:
        for dst in topo.hosts:
            if dst is src:
                continue
            checks = [("icmp", None)] + [(s.proto, s.port) for s in dst.services]
            for proto, port in checks:
                ok, why = allowed(topo, src.name, dst.ip, proto, port)
                out.append(ReachResult(src.name, dst.name, proto, port, ok, why))
    return out


# ---------------------------------------------------------------------------------------------
# Fast reachability for whole topologies: address classes instead of host pairs.
#
# ``allowed`` answers one question by walking the routes and rules; asking it for every host pair
# of a 5,000-node model is 25 million walks. But two addresses that every rule endpoint and every
# route treats alike (each network named anywhere either contains both or neither) get the same
# routes and the same verdict from every firewall. Zone subnets never overlap, and a CIDR network
# either contains a zone, lies inside it, or misses it; so an address's *class* is its zone plus
# the set of networks strictly inside that zone (a node named in a rule, a /27 of a /24) that
# contain it. Most zones are one class; a rule naming one host splits its zone in two.
#
# A source host's class adds what decides its first hop: the zones it is attached to and its
# gateway. ``ReachIndex.verdict`` then decides (source class, destination class, proto, port) once,
# with ``decide`` on one representative address of each class, and caches it. The result equals
# ``allowed`` for every member (tests/test_paths.py checks this pair by pair).
# ---------------------------------------------------------------------------------------------
import bisect
from collections import Counter, defaultdict

def _net_range(net: ipaddress.IPv4Network) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


class ReachIndex:
    """Address classes of one topology, and cached verdicts between them.

    Build once per loaded topology (``ReachIndex(topo)``); it reads the model and never changes it.
    """

    def __init__(self, topo: Topology):
        self.topo = topo
        self.by_ip: dict[ipaddress.IPv4Address, Node] = {}
        for n in topo.nodes.values():
            for i in n.interfaces:
                self.by_ip[i.ip] = n
        zones = sorted(topo.zones.values(), key=lambda z: int(z.subnet.network_address))
        self._zone_starts = [int(z.subnet.network_address) for z in zones]
        self._zones = zones
        # networks strictly inside a zone split it; collect them per zone
        nets: set[ipaddress.IPv4Network] = set()
        for r in topo.routers:
            for rule in r.rules:
                nets.update(rule.src.networks)
                nets.update(rule.dst.networks)
            nets.update(net for net, _ in r.routes)
        self.cuts: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for net in nets:
            z = self.zone_of(net.network_address)
            if z is not None and net.prefixlen > z.subnet.prefixlen:
                self.cuts[z.name].append(_net_range(net))
        self._addr_classes: dict[tuple, int] = {}
        self.class_rep: list[ipaddress.IPv4Address] = []       # class id -> an address in it
        self.class_zone: list[str | None] = []
        self._src_keys: dict[tuple, int] = {}
        self.src_info: list[tuple] = []                         # src class id -> (zones, gw, addr class)
        self._walks: dict[tuple, list[Node] | str] = {}
        self._verdicts: dict[tuple, tuple[bool, str]] = {}
        self.router_zones = {r.name: {i.zone for i in r.interfaces} for r in topo.routers}
        self._compiled: dict[str, list] = {}
        self._ip_class: dict[ipaddress.IPv4Address, int] = {}
        self._tables: dict[str, list] = {}
        self._paths: dict[tuple[int, int], list[Node] | str] = {}
        self.routers = topo.routers

    def _rules(self, fw: Node) -> list:
        """``fw.rules`` as integer ranges, for a ``decide`` that does not build address objects."""
        got = self._compiled.get(fw.name)
        if got is None:
            got = self._compiled[fw.name] = [
                (rule.action == "allow", rule.proto,
                 rule.ports or None,
                 None if rule.src.kind == "any" else [_net_range(n) for n in rule.src.networks],
                 None if rule.dst.kind == "any" else [_net_range(n) for n in rule.dst.networks])
                for rule in fw.rules]
        return got

    def decide(self, fw: Node, s: int, d: int, proto: str, port: int | None) -> tuple[bool, str]:
        """:func:`decide` on integer addresses (same first-match semantics)."""
        for k, (allow, rproto, ports, srcs, dsts) in enumerate(self._rules(fw)):
            if rproto != "any" and rproto != proto:
                continue
            if ports and (port is None or not any(lo <= port <= hi for lo, hi in ports)):
                continue
            if srcs is not None and not any(lo <= s <= hi for lo, hi in srcs):
                continue
            if dsts is not None and not any(lo <= d <= hi for lo, hi in dsts):
                continue
            return allow, _describe(fw, k, fw.rules[k])
        if fw.kind == "firewall":
            return fw.default_action == "allow", f"{fw.name} default {fw.default_action}"
        return True, f"{fw.name} forwards"

    # -- classes ------------------------------------------------------------------------------
    def zone_of(self, ip):
        x = int(ip)
        k = bisect.bisect_right(self._zone_starts, x) - 1
        if k >= 0 and x <= int(self._zones[k].subnet.broadcast_address):
            return self._zones[k]
        return None

    def addr_class(self, ip) -> int:
        if not isinstance(ip, ipaddress.IPv4Address):
            ip = ipaddress.ip_address(ip)
        got = self._ip_class.get(ip)
        if got is not None:
            return got
        got = self._ip_class[ip] = self._addr_class(ip)
        return got

    def _addr_class(self, ip: ipaddress.IPv4Address) -> int:
        z = self.zone_of(ip)
        x = int(ip)
        inside = tuple(sorted(c for c in self.cuts.get(z.name, ()) if c[0] <= x <= c[1])) if z else ()
        key = (z.name if z else None, inside)
        cid = self._addr_classes.get(key)
        if cid is None:
            cid = self._addr_classes[key] = len(self.class_rep)
            self.class_rep.append(ip)
            self.class_zone.append(key[0])
        return cid

    def src_class(self, node: Node) -> int:
        """Class of a host as a source: its zones, its gateway and its address class."""
        key = (tuple(sorted({i.zone for i in node.interfaces})), node.gateway,
               self.addr_class(node.ip))
        cid = self._src_keys.get(key)
        if cid is None:
            cid = self._src_keys[key] = len(self.src_info)
            self.src_info.append(key)
        return cid

    # -- routing ------------------------------------------------------------------------------
    def walk(self, router: Node, dst_cls: int) -> list[Node] | str:
        """Routers after ``router`` up to the one attached to the class's zone, or why not."""
        key = (router.name, dst_cls)
        got = self._walks.get(key)
        if got is not None:
            return got
        zone, ip = self.class_zone[dst_cls], self.class_rep[dst_cls]
        path: list[Node] = []
        current = router
        result: list[Node] | str = path
        while zone not in self.router_zones[current.name]:
            via = self.next_hop(current, int(ip))
            if via is None:
                result = f"{current.name} has no route to {ip}"
                break
            current = self.by_ip[via]
            if current in path or current is router or len(path) > len(self.router_zones):
                result = f"routing loop towards {ip} at {current.name}"
                break
            path.append(current)
        self._walks[key] = result
        return result

    def next_hop(self, router: Node, ip: int):
        """:func:`routing.next_hop` (longest prefix match) on an integer address."""
        table = self._tables.get(router.name)
        if table is None:
            table = self._tables[router.name] = sorted(
                ((-net.prefixlen, k) + _net_range(net) + (via,)
                 for k, (net, via) in enumerate(router.routes)), key=lambda t: (t[0], t[1]))
        for _, _, lo, hi, via in table:
            if lo <= ip <= hi:
                return via
        return None

    def path(self, src_cls: int, dst_cls: int) -> list[Node] | str:
        key = (src_cls, dst_cls)
        got = self._paths.get(key)
        if got is None:
            got = self._paths[key] = self._path(src_cls, dst_cls)
        return got

    def _path(self, src_cls: int, dst_cls: int) -> list[Node] | str:
        zones, gw, _ = self.src_info[src_cls]
        dzone = self.class_zone[dst_cls]
        if dzone is None:
            return f"{self.class_rep[dst_cls]} is not in any zone of the twin"
        if dzone in zones:
            return []
        if gw is None:
            return f"no gateway (zone {zones[0]} has no router)"
        first = self.by_ip[gw]
        rest = self.walk(first, dst_cls)
        return rest if isinstance(rest, str) else [first, *rest]

    # -- verdicts -----------------------------------------------------------------------------
    def verdict(self, src_cls: int, dst_cls: int, proto: str, port: int | None) -> tuple[bool, str]:
        """``(allowed, why)`` for a NEW flow from any host of ``src_cls`` to any *host* address of
        ``dst_cls`` (router addresses are input traffic: ask ``check`` for those)."""
        key = (src_cls, dst_cls, proto, port)
        got = self._verdicts.get(key)
        if got is not None:
            return got
        p = self.path(src_cls, dst_cls)
        if isinstance(p, str):
            got = (False, f"no route: {p}")
        else:
            src_ip = int(self.class_rep[self.src_info[src_cls][2]])
            dst_ip = int(self.class_rep[dst_cls])
            got = (True, "same zone" if not p else "forwarded")
            for router in p:
                ok, why = self.decide(router, src_ip, dst_ip, proto, port)
                if not ok:
                    got = (False, f"denied by {why}")
                    break
                if router.kind == "firewall":
                    got = (True, f"allowed by {why}")
            if got[0]:
                back = self._reply(src_cls, dst_cls, proto, {r.name for r in p})
                if back:
                    got = (False, back)
        self._verdicts[key] = got
        return got

    def _reply(self, src_cls: int, dst_cls: int, proto: str, forward: set[str]) -> str:
        """:func:`_reply_check` on classes: the reply from the destination class's host back to
        the source class's address, judged by firewalls the request did not cross."""
        node = self.by_ip.get(self.class_rep[dst_cls])
        if node is None or node.is_router:
            return ""
        src_addr_cls = self.src_info[src_cls][2]
        back = self.path(self.src_class(node), src_addr_cls)
        if isinstance(back, str):
            return f"no route back: {back}"
        s = int(self.class_rep[dst_cls])
        d = int(self.class_rep[src_addr_cls])
        for router in back:
            if router.name in forward or router.kind != "firewall":
                continue
            ok, why = self.decide(router, s, d, proto, None)
            if not ok:
                return (f"denied on the way back: the reply returns by another route and "
                        f"{router.name} never saw the request ({why})")
        return ""

    def check(self, src: str, dst, proto: str = "tcp", port: int | None = None) -> tuple[bool, str]:
        """Same verdict as :func:`allowed`, fast for host-to-host questions."""
        node = self.topo.nodes.get(src)
        dst_ip = resolve_address(self.topo, str(dst)) if node else None
        dst_node = self.by_ip.get(dst_ip) if node else None
        if (node is None or node.is_router or dst_node is None or dst_node.is_router
                or dst_node is node or proto not in ("tcp", "udp", "icmp")):
            return allowed(self.topo, src, dst, proto, port)
        return self.verdict(self.src_class(node), self.addr_class(dst_ip), proto,
                            None if proto == "icmp" else port)


@dataclass
class MatrixColumn:
    node: str
    zone: str
    service: str            # the service type, or "icmp"
    proto: str
    port: int | None
    dst_cls: int

    @property
    def label(self) -> str:
        return f"{self.node}:icmp" if self.proto == "icmp" else f"{self.node}:{self.proto}/{self.port}"


@dataclass
class MatrixRow:
    name: str
    kind: str               # "zone" or "node"
    members: dict[int, int]  # source class -> number of hosts
    hosts: set[str]


@dataclass
class ReachMatrix:
    """Rows are sources (zones or nodes), columns destination services plus ICMP per host.

    ``cells[r][c]`` is ``(allowed hosts, hosts, a reason)``: a zone row counts its hosts (the
    destination itself left out), so a cell is all, none or some of them."""
    rows: list[MatrixRow]
    columns: list[MatrixColumn]
    cells: list[list[tuple[int, int, str]]]

    @staticmethod
    def state(cell: tuple[int, int, str]) -> str:
        ok, total, _ = cell
        if total == 0:
            return "self"
        return "allow" if ok == total else "deny" if ok == 0 else "partial"

    def to_json(self) -> dict:
        return {
            "rows": [{"name": r.name, "kind": r.kind, "hosts": len(r.hosts)} for r in self.rows],
            "columns": [{"node": c.node, "zone": c.zone, "service": c.service, "proto": c.proto,
                         "port": c.port, "label": c.label} for c in self.columns],
            "matrix": {r.name: {c.label: {"verdict": self.state(cell), "allowed": cell[0],
                                          "of": cell[1], "why": cell[2]}
                                for c, cell in zip(self.columns, row)}
                       for r, row in zip(self.rows, self.cells)},
        }


def _select(topo: Topology, what: str | None, flag: str) -> tuple[str, list[Node]]:
    """``what`` is a zone or node name (or None: all): its kind and its hosts."""
    if what is None:
        return "all", topo.hosts
    if what in topo.zones:
        return "zone", [n for n in topo.hosts if any(i.zone == what for i in n.interfaces)]
    if what in topo.nodes:
        node = topo.nodes[what]
        if node.is_router:
            raise UserError(f"{flag} {what}: is a {node.kind}; the matrix is between hosts")
        return "node", [node]
    raise UserError(f"{flag} '{what}' is neither a zone nor a node"
                    f"{did_you_mean(what, [*topo.zones, *topo.nodes])}")


def reach_matrix(topo: Topology, src: str | None = None, dst: str | None = None,
                 index: ReachIndex | None = None) -> ReachMatrix:
    """The reachability matrix: rows = source zones (or the zone/node ``src``), columns = every
    service of every destination host (or of the zone/node ``dst``) plus ICMP echo."""
    ix = index or ReachIndex(topo)
    kind, sources = _select(topo, src, "--from")
    _, dests = _select(topo, dst, "--to")
    rows: list[MatrixRow] = []
    if kind == "node":
        n = sources[0]
        rows.append(MatrixRow(n.name, "node", {ix.src_class(n): 1}, {n.name}))
    else:
        by_zone: dict[str, MatrixRow] = {}
        for n in sources:
            z = n.interfaces[0].zone
            row = by_zone.get(z)
            if row is None:
                row = by_zone[z] = MatrixRow(z, "zone", Counter(), set())
            row.members[ix.src_class(n)] += 1
            row.hosts.add(n.name)
        rows = [by_zone[z] for z in topo.zones if z in by_zone]
    columns = []
    for n in dests:
        cls = ix.addr_class(n.ip)
        zone = n.interfaces[0].zone
        columns.append(MatrixColumn(n.name, zone, "icmp", "icmp", None, cls))
        for s in n.services:
            columns.append(MatrixColumn(n.name, zone, s.type, s.proto, s.port, cls))
    in_rows = {h for r in rows for h in r.hosts}
    self_cls = {n.name: ix.src_class(n) for n in dests if n.name in in_rows}
    cells = []
    for row in rows:
        out = []
        memo: dict[tuple, tuple[int, int, str]] = {}
        for col in columns:
            key = (col.dst_cls, col.proto, col.port)
            cell = memo.get(key)
            if cell is None:
                ok = total = 0
                why = ""
                for cls, count in row.members.items():
                    v, reason = ix.verdict(cls, col.dst_cls, col.proto, col.port)
                    total += count
                    ok += count if v else 0
                    if not why or (v is False and ok == 0):
                        why = reason
                cell = memo[key] = (ok, total, why)
            if col.node in row.hosts:       # a host's own services: leave the host itself out
                cls = self_cls[col.node]
                v, _ = ix.verdict(cls, col.dst_cls, col.proto, col.port)
                cell = (cell[0] - (1 if v else 0), cell[1] - 1, cell[2])
            out.append(cell)
        cells.append(out)
    return ReachMatrix(rows, columns, cells)
