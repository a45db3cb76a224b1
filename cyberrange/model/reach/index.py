"""Fast reachability for whole topologies: address classes instead of host pairs.

``allowed`` answers one question by walking the routes and rules; asking it for every host pair
of a 5,000-node model is 25 million walks. But two addresses that every rule endpoint and every
route treats alike (each network named anywhere either contains both or neither) get the same
routes and the same verdict from every firewall. Zone subnets never overlap, and a CIDR network
either contains a zone, lies inside it, or misses it; so an address's *class* is its zone plus
the set of networks strictly inside that zone (a node named in a rule, a /27 of a /24) that
contain it. Most zones are one class; a rule naming one host splits its zone in two.

A source host's class adds what decides its first hop: the zones it is attached to and its
gateway. ``ReachIndex.verdict`` then decides (source class, destination class, proto, port) once,
with ``decide`` on one representative address of each class, and caches it. The result equals
``allowed`` for every member (tests/model/test_paths.py checks this pair by pair).
"""
from __future__ import annotations

import bisect
import ipaddress
from collections import defaultdict

from cyberrange.model.reach.walk import _describe, allowed, resolve_address
from cyberrange.model.routing import state_down
from cyberrange.model.topology import Node, Topology


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
        if fw.filters:
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
        cut = state_down(self.topo)
        if cut:
            gone = next((z for z in (*zones, dzone) if z in cut), None)
            if gone is not None:
                return f"{gone} is down"
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
                if router.filters:
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
            if router.name in forward or not router.filters:
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
