"""Routes for the twin's routers, per link state, and the path a packet takes through them.

Routers (and firewalls) form a graph: two routers are neighbours when they have an interface
in the same zone (a LAN or a point-to-point link). Every router gets one route
``(subnet, next-hop IP)`` to every zone it is not attached to, by the topology's routing
protocol (``routing.protocol``, default ``static``):

* ``static``: towards the nearest router attached to that zone by hop count. Ties are broken by
  name (the neighbour with the smallest name, and between two shared zones the one with the
  smallest name), so the same file always gives the same routes. The twin installs exactly
  these routes. They do not fail over: when a zone or link is down, a route whose next hop is
  across it is withdrawn (as the kernel flushes routes through an interface that goes down) and
  nothing replaces it.
* ``ospf``: the shortest path by summed OSPF cost of the interfaces a packet *leaves* by (the
  cost of a zone or link: its ``cost``, else ``1_000_000 / bandwidth in kbit/s`` clamped to
  1..65535, see ``_ospf_cost``), over the zones and links that are up. Ties are broken by name
  as for static; FRR would install both next hops (ECMP): ``equal_cost_routes`` lists them and
  ``topo check`` warns. A router with no path gets no route.

``router_path`` follows exactly these routes, so static analysis and the live twin agree.
``in_state(topo, down)`` is the topology as it is while the zones and links ``down`` are down:
a copy with that state's routes, without the down interfaces, that every analysis (``reach``,
``paths``, ``lint``) reads as it reads a loaded topology.

Routes given by hand (``routes:`` in the file, ``Node.static_routes``) are added last and win
over a computed route to the same destination; on hosts they come before the default route.
"""
from __future__ import annotations

import copy
import dataclasses
import heapq
import ipaddress
from collections import deque
from collections.abc import Iterable

import networkx as nx

from cyberrange.errors import UserError
from cyberrange.model.topology import Node, Topology

PROTOCOLS = ("static", "ospf")
_DOWN = "link_state_down"            # attribute of an ``in_state`` copy: the zones that are down
_WITHDRAWN = "link_state_withdrawn"  # ... and {router: [(subnet, via, zone)]} it lost to them


def router_graph(topo: Topology) -> nx.Graph:
    """Routers as graph nodes; an edge per pair of routers sharing a zone (``zones`` = shared)."""
    g = nx.Graph()
    for r in topo.routers:
        g.add_node(r.name)
    by_zone: dict[str, list[Node]] = {}
    for r in topo.routers:
        for i in r.interfaces:
            by_zone.setdefault(i.zone, []).append(r)
    for zone, members in by_zone.items():
        for a in members:
            for b in members:
                if a.name < b.name:
                    if g.has_edge(a.name, b.name):
                        g.edges[a.name, b.name]["zones"].append(zone)
                    else:
                        g.add_edge(a.name, b.name, zones=[zone])
    return g


def routing_protocol(topo: Topology) -> str:
    """``static`` or ``ospf``: the topology's ``routing.protocol`` (no ``routing``: static)."""
    routing = getattr(topo, "routing", None)
    if routing is None:
        return "static"
    proto = routing.get("protocol") if isinstance(routing, dict) else getattr(routing, "protocol", None)
    return proto or "static"


def _ospf_cost(topo: Topology, zone_name: str) -> int:
    """OSPF cost of the interfaces on a zone or link: its ``cost`` (the link's, else the zone's),
    else ``round(1_000_000 / bandwidth in kbit/s)`` clamped to 1..65535 from its profile (no
    profile or no bandwidth: 1 Gbit/s, cost 1). The same formula as the twin's FRR config."""
    for owner in (topo.links.get(zone_name), topo.zones.get(zone_name)):
        cost = getattr(owner, "cost", None)
        if cost is not None:
            return int(cost)
    zone = topo.zones.get(zone_name)
    profile = zone.profile if zone is not None else None
    mbit = getattr(profile, "bandwidth_mbit", None) or 1000.0
    return max(1, min(65535, round(1_000_000 / (mbit * 1000))))


def _via_zone(topo: Topology, node: Node, via) -> str | None:
    """The zone of ``node`` that next hop ``via`` lies in (None: none of its zones)."""
    for i in node.interfaces:
        if via in topo.zones[i.zone].subnet:
            return i.zone
    return None


@dataclasses.dataclass(frozen=True)
class EqualCost:
    """A router with several equal-cost next hops to one zone (OSPF): FRR installs them all
    (ECMP) and hashes flows over them; the model follows ``hops[0]`` (ties by name)."""
    router: str
    zone: str
    subnet: ipaddress.IPv4Network
    cost: int
    hops: tuple[tuple[str, str], ...]        # (neighbour, shared zone), the chosen one first


class _Graph:
    """Routers that share zones, the zones that are up, for one link state."""

    def __init__(self, topo: Topology, down: frozenset[str]):
        self.topo, self.down = topo, down
        self.attached = {r.name: {i.zone for i in r.interfaces if i.zone not in down}
                         for r in topo.routers}
        g = router_graph(topo)
        self.shared: dict[tuple[str, str], list[str]] = {}
        for a, b, data in g.edges(data=True):
            zones = sorted(z for z in data["zones"] if z not in down)
            if zones:
                self.shared[(a, b)] = self.shared[(b, a)] = zones
        self.adjacency = {r: sorted(b for (a, b) in self.shared if a == r) for r in self.attached}
        self.ip_in = {(r.name, i.zone): i.ip for r in topo.routers for i in r.interfaces}


def _hop_routes(gr: _Graph, zone) -> list[tuple[str, str, str]]:
    """Static: (router, neighbour, shared zone) towards ``zone`` by hop count (BFS)."""
    targets = [name for name, zs in gr.attached.items() if zone.name in zs]
    dist = dict.fromkeys(targets, 0)
    frontier = deque(targets)
    while frontier:
        here = frontier.popleft()
        for n in gr.adjacency[here]:
            if n not in dist:
                dist[n] = dist[here] + 1
                frontier.append(n)
    out = []
    for r in gr.attached:
        if zone.name in gr.attached[r] or r not in dist:
            continue
        hop = next(n for n in gr.adjacency[r] if dist.get(n) == dist[r] - 1)
        out.append((r, hop, gr.shared[(r, hop)][0]))
    return out


def _cost_routes(gr: _Graph, zone, cost: dict[str, int]) -> tuple[list, list[EqualCost]]:
    """OSPF: (router, neighbour, shared zone) towards ``zone`` by summed cost of the outgoing
    interfaces (Dijkstra from the attached routers), and the routers with equal-cost choices."""
    targets = [name for name, zs in gr.attached.items() if zone.name in zs]
    dist = dict.fromkeys(targets, 0)
    heap = [(0, t) for t in sorted(targets)]
    while heap:
        d, here = heapq.heappop(heap)
        if d > dist[here]:
            continue
        for n in gr.adjacency[here]:
            # n leaves by its interface on the cheapest zone it shares with here
            nd = d + min(cost[z] for z in gr.shared[(n, here)])
            if nd < dist.get(n, nd + 1):
                dist[n] = nd
                heapq.heappush(heap, (nd, n))
    routes, ties = [], []
    for r in gr.attached:
        if zone.name in gr.attached[r] or r not in dist:
            continue
        hops = [(n, z) for n in gr.adjacency[r] if n in dist for z in gr.shared[(r, n)]
                if dist[n] + cost[z] == dist[r]]                 # sorted: neighbour, then zone
        routes.append((r, *hops[0]))
        if len(hops) > 1:
            ties.append(EqualCost(r, zone.name, zone.subnet, dist[r] + cost[zone.name],
                                  tuple(hops)))
    return routes, ties


def _computed(topo: Topology, down: frozenset[str]) -> tuple[dict[str, list], list[EqualCost]]:
    """The computed (not hand-given) routes of every router for one link state."""
    protocol = routing_protocol(topo)
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown routing protocol '{protocol}' (expected static or ospf)")
    # static routes are computed with everything up; the down state only withdraws them below
    gr = _Graph(topo, down if protocol == "ospf" else frozenset())
    cost = {z: _ospf_cost(topo, z) for z in topo.zones} if protocol == "ospf" else {}
    routes: dict[str, list] = {r.name: [] for r in topo.routers}
    ties: list[EqualCost] = []
    for zone in sorted(topo.zones.values(), key=lambda z: z.name):
        if protocol == "ospf":
            if zone.name in down:
                continue
            found, tied = _cost_routes(gr, zone, cost)
            ties += tied
        else:
            found = _hop_routes(gr, zone)
        for r, hop, shared in found:
            routes[r].append((zone.subnet, gr.ip_in[(hop, shared)]))
    return routes, ties


def compute_routes(topo: Topology, down: Iterable[str] = frozenset()) -> None:
    """Fill ``Node.routes`` of every router/firewall (sorted by subnet) for the link state where
    the zones and links ``down`` are down (default: all up), then put each node's hand-given
    ``static_routes`` in, replacing computed routes to the same subnet. Hosts have only their
    hand-given routes; otherwise the default via ``Node.gateway``. A route whose next hop lies
    across a down zone is withdrawn."""
    down = frozenset(down)
    computed, _ = _computed(topo, down)
    for r in topo.routers:
        r.routes = computed[r.name]
    for n in topo.nodes.values():
        if n.static_routes:
            manual = {net for net, _ in n.static_routes}
            n.routes = [rt for rt in n.routes if rt[0] not in manual] + list(n.static_routes)
        if down:
            n.routes = [rt for rt in n.routes if _via_zone(topo, n, rt[1]) not in down]
        n.routes.sort(key=lambda rt: (int(rt[0].network_address), rt[0].prefixlen))


def equal_cost_routes(topo: Topology, down: Iterable[str] = frozenset()) -> list[EqualCost]:
    """Routers with equal-cost next hops to a zone (OSPF only: static routes have one next hop
    by construction), one entry per router and zone, that no hand-given route overrides."""
    if routing_protocol(topo) != "ospf":
        return []
    _, ties = _computed(topo, frozenset(down))
    return [t for t in ties
            if not any(net == t.subnet for net, _ in topo.nodes[t.router].static_routes)]


# -- link states -----------------------------------------------------------------------------
def down_names(topo: Topology, names: Iterable[str] | str | None,
               option: str = "--down") -> frozenset[str]:
    """Zone and link names (a list, or ``"A,B"``) checked against the topology: an unknown
    name is a ``UserError`` naming it (and the ``option`` it came from), with a did-you-mean."""
    from cyberrange.model.yamlsrc import did_you_mean

    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = names.split(",")
    out = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name not in topo.zones:
            known = did_you_mean(name, topo.zones) or (
                f" (links: {', '.join(topo.links) or 'none'})")
            raise UserError(f"{option}: no link or zone named '{name}' in topology "
                            f"{topo.name}{known}")
        out.add(name)
    return frozenset(out)


def in_state(topo: Topology, down: Iterable[str]) -> Topology:
    """The topology while the zones and links ``down`` are down: a copy (``topo`` is not
    changed) whose routers have that state's routes and no interface on a down zone, and whose
    hosts on a down zone have no gateway. ``reach``, ``paths`` and ``lint`` read it as they read
    a loaded topology. Zones stay (addresses still resolve). The copy shares the unchanged
    parts (interfaces, services, rules) with ``topo``: treat both as read-only."""
    down = frozenset(down)
    if not down:
        return topo
    nodes = {}
    for name, n in topo.nodes.items():
        c = copy.copy(n)
        c.routes = list(n.routes)
        nodes[name] = c
    state = dataclasses.replace(topo, nodes=nodes)
    for attr in ("routing",):                    # not a dataclass field before the OSPF schema
        if hasattr(topo, attr) and attr not in {f.name for f in dataclasses.fields(topo)}:
            setattr(state, attr, getattr(topo, attr))
    compute_routes(state, down)
    withdrawn: dict[str, list] = {}
    for name, n in state.nodes.items():
        kept = {rt for rt in n.routes}
        lost = [(net, via, _via_zone(topo, n, via)) for net, via in topo.nodes[name].routes
                if (net, via) not in kept]
        if lost:
            withdrawn[name] = lost
        if n.is_router:
            n.interfaces = [i for i in n.interfaces if i.zone not in down]
        elif n.interfaces and n.interfaces[0].zone in down:
            n.gateway = None
            n.routes = []
    setattr(state, _DOWN, down)
    setattr(state, _WITHDRAWN, withdrawn)
    return state


def state_down(topo: Topology) -> frozenset[str]:
    """The zones and links that are down in ``topo`` (an ``in_state`` copy; else none)."""
    return getattr(topo, _DOWN, frozenset())

def next_hop(router: Node, dst_ip) -> ipaddress.IPv4Address | None:
    """Longest-prefix match over the router's routes (connected zones are not in the list)."""
    dst_ip = ipaddress.ip_address(dst_ip)
    best = None
    for net, via in router.routes:
        if dst_ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, via)
    return best[1] if best else None


class NoRoute(Exception):
    """The packet cannot get there; ``str`` says why, ``at`` names the node where it stops."""

    def __init__(self, message: str, at: str = ""):
        super().__init__(message)
        self.at = at


def router_path(topo: Topology, src_node, dst_ip) -> list[Node]:
    """The routers and firewalls a packet from ``src_node`` to ``dst_ip`` crosses, in order.

    ``src_node`` is a Node or a node name. Raises :class:`NoRoute` when a host has no gateway,
    a router has no route, or the address is in no zone of the twin. An empty list means the
    destination is on the source's own zone (or is the source itself). On an ``in_state`` copy
    the path is the one of that link state.
    """
    return [hop for hop, _ in router_hops(topo, src_node, dst_ip)]


class AddressIndex:
    """Node and zone of an address, built once: for callers that walk many paths in one
    topology (``Topology.node_by_ip`` checks its index for staleness on every call)."""

    def __init__(self, topo: Topology):
        self.nodes: dict = {}
        for n in topo.nodes.values():
            for i in n.interfaces:
                self.nodes.setdefault(i.ip, n)
        self.zones = {z.subnet: z for z in topo.zones.values()}
        self.prefixes = sorted({z.subnet.prefixlen for z in topo.zones.values()}, reverse=True)

    def node(self, ip):
        return self.nodes.get(ip)

    def zone(self, ip):
        for plen in self.prefixes:
            z = self.zones.get(ipaddress.ip_network((ip, plen), strict=False))
            if z is not None:
                return z
        return None


def router_hops(topo: Topology, src_node, dst_ip, index: AddressIndex | None = None,
                memo: dict | None = None) -> list[tuple[Node, str]]:
    """:func:`router_path` with the zone (or link) by which the packet enters each router.
    For many walks in a row in one topology: ``index``, its :class:`AddressIndex`, and
    ``memo``, a dict that keeps each router's walk to each address."""
    src = topo.nodes[src_node] if isinstance(src_node, str) else src_node
    dst_ip = ipaddress.ip_address(dst_ip)
    if index is None:
        node_by_ip = topo.node_by_ip
        dst_zone = next((z for z in topo.zones.values() if dst_ip in z.subnet), None)
    else:
        node_by_ip = index.node
        dst_zone = index.zone(dst_ip)
    if dst_zone is None:
        raise NoRoute(f"{dst_ip} is not in any zone of the twin")
    down = state_down(topo)
    if dst_zone.name in down:
        raise NoRoute(f"{dst_ip} is in {dst_zone.name}, which is down", dst_zone.name)
    if any(i.zone == dst_zone.name for i in src.interfaces):
        return []
    if src.is_router:
        return _walk(topo, src, dst_ip, dst_zone.name, node_by_ip, memo)
    if src.interfaces[0].zone in down:
        raise NoRoute(f"{src.name} is in {src.interfaces[0].zone}, which is down",
                      src.interfaces[0].zone)
    via = next_hop(src, dst_ip)                # a host's own routes before its default route
    if via is None and src.gateway is None:
        raise NoRoute(f"{src.name} has no gateway (zone {src.interfaces[0].zone} has no router)",
                      src.name)
    via = via or src.gateway
    first = node_by_ip(via)
    if first is None:
        raise NoRoute(f"{src.name}: next hop {via} is not an address of any node", src.name)
    zone = _via_zone(topo, src, via) or src.interfaces[0].zone
    return [(first, zone), *_walk(topo, first, dst_ip, dst_zone.name, node_by_ip, memo)]


def _walk(topo: Topology, start: Node, dst_ip, dst_zone: str, node_by_ip,
          memo: dict | None) -> list[tuple[Node, str]]:
    """The routers after ``start`` up to the one attached to ``dst_zone``, by the routes."""
    key = (start.name, dst_ip)
    if memo is not None and key in memo:
        got = memo[key]
        if isinstance(got, NoRoute):
            raise got
        return got
    path: list[tuple[Node, str]] = []
    current = start
    try:
        while not any(i.zone == dst_zone for i in current.interfaces):
            via = next_hop(current, dst_ip)
            if via is None:
                raise NoRoute(f"{current.name} has no route to {dst_ip}"
                              f"{_why_no_route(topo, current, dst_ip)}", current.name)
            hop = node_by_ip(via)
            if hop is None:
                raise NoRoute(f"{current.name}: next hop {via} is not an address of any node",
                              current.name)
            zone = _via_zone(topo, current, via) or "?"
            current = hop
            if current is start or any(current is n for n, _ in path) \
                    or len(path) > len(topo.nodes):
                raise NoRoute(f"routing loop towards {dst_ip} at {current.name}", current.name)
            path.append((current, zone))
    except NoRoute as e:
        if memo is not None:
            memo[key] = e
        raise
    if memo is not None:
        memo[key] = path
    return path


def _why_no_route(topo: Topology, router: Node, dst_ip) -> str:
    """On an ``in_state`` copy: why the router lost its route (empty when it never had one)."""
    down = state_down(topo)
    if not down:
        return ""
    lost = [(net, via, zone) for net, via, zone in getattr(topo, _WITHDRAWN, {}).get(router.name, ())
            if dst_ip in net]
    if not lost:
        return ""
    _, via, zone = max(lost, key=lambda t: t[0].prefixlen)
    if zone in down:
        return f" (its route via {via} was withdrawn: {zone} is down)"
    names = ", ".join(sorted(down))
    return f" (no path while {names} {'is' if len(down) == 1 else 'are'} down)"
