"""Static routes for the twin's routers, and the path a packet takes through them.

Routers (and firewalls) form a graph: two routers are neighbours when they have an interface
in the same zone (a LAN or a point-to-point link). For every zone a router is not attached to,
it gets one route ``(subnet, next-hop IP)`` towards the nearest router that *is* attached to
that zone, by hop count. Ties are broken by name (the neighbour with the smallest name, and
between two shared zones the one with the smallest name), so the same file always gives the
same routes. The twin installs exactly these routes, and ``router_path`` follows exactly these
routes, so static analysis and the live twin agree.

Routes given by hand (``routes:`` in the file, ``Node.static_routes``) are added last and win
over a computed route to the same destination; on hosts they come before the default route.
"""
from __future__ import annotations

import ipaddress
from collections import deque

import networkx as nx

from cyberrange.model.topology import Node, Topology


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


def compute_routes(topo: Topology) -> None:
    """Fill ``Node.routes`` of every router/firewall (sorted by subnet), then put each node's
    hand-given ``static_routes`` in, replacing computed routes to the same subnet. Hosts have
    only their hand-given routes; otherwise the default via ``Node.gateway``."""
    g = router_graph(topo)
    routers = topo.routers
    attached = {r.name: {i.zone for i in r.interfaces} for r in routers}
    adjacency = {name: sorted(g.neighbors(name)) for name in g.nodes}   # sorted: ties by name
    ip_in = {(r.name, i.zone): i.ip for r in routers for i in r.interfaces}
    for r in routers:
        r.routes = []
    for zone in sorted(topo.zones.values(), key=lambda z: z.name):
        targets = [name for name, zs in attached.items() if zone.name in zs]
        if not targets:
            continue
        # hop distance of every router to the nearest router attached to this zone (BFS)
        dist = dict.fromkeys(targets, 0)
        frontier = deque(targets)
        while frontier:
            here = frontier.popleft()
            for n in adjacency[here]:
                if n not in dist:
                    dist[n] = dist[here] + 1
                    frontier.append(n)
        for r in routers:
            if zone.name in attached[r.name] or r.name not in dist:
                continue
            here = dist[r.name]
            hop = next(n for n in adjacency[r.name] if dist.get(n) == here - 1)
            shared = min(g.edges[r.name, hop]["zones"])
            r.routes.append((zone.subnet, ip_in[(hop, shared)]))
    for n in topo.nodes.values():
        if n.static_routes:
            manual = {net for net, _ in n.static_routes}
            n.routes = [rt for rt in n.routes if rt[0] not in manual] + list(n.static_routes)
        n.routes.sort(key=lambda rt: (int(rt[0].network_address), rt[0].prefixlen))


def next_hop(router: Node, dst_ip) -> ipaddress.IPv4Address | None:
    """Longest-prefix match over the router's routes (connected zones are not in the list)."""
    dst_ip = ipaddress.ip_address(dst_ip)
    best = None
    for net, via in router.routes:
        if dst_ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, via)
    return best[1] if best else None


class NoRoute(Exception):
    """The packet cannot get there; ``str`` says why."""


def router_path(topo: Topology, src_node, dst_ip) -> list[Node]:
    """The routers and firewalls a packet from ``src_node`` to ``dst_ip`` crosses, in order.

    ``src_node`` is a Node or a node name. Raises :class:`NoRoute` when a host has no gateway,
    a router has no route, or the address is in no zone of the twin. An empty list means the
    destination is on the source's own zone (or is the source itself).
    """
    src = topo.nodes[src_node] if isinstance(src_node, str) else src_node
    dst_ip = ipaddress.ip_address(dst_ip)
    if not any(dst_ip in z.subnet for z in topo.zones.values()):
        raise NoRoute(f"{dst_ip} is not in any zone of the twin")

    def connected(node: Node) -> bool:
        return any(dst_ip in topo.zones[i.zone].subnet for i in node.interfaces)

    if connected(src):
        return []
    if src.is_router:
        current = src
        path: list[Node] = []
    else:
        via = next_hop(src, dst_ip)            # a host's own routes before its default route
        if via is None and src.gateway is None:
            raise NoRoute(f"{src.name} has no gateway (zone {src.interfaces[0].zone} has no router)")
        via = via or src.gateway
        current = topo.node_by_ip(via)
        if current is None:
            raise NoRoute(f"{src.name}: next hop {via} is not an address of any node")
        path = [current]
    while not connected(current):
        via = next_hop(current, dst_ip)
        if via is None:
            raise NoRoute(f"{current.name} has no route to {dst_ip}")
        hop = topo.node_by_ip(via)
        if hop is None:
            raise NoRoute(f"{current.name}: next hop {via} is not an address of any node")
        current = hop
        if current in path or len(path) > len(topo.nodes):
            raise NoRoute(f"routing loop towards {dst_ip} at {current.name}")
        path.append(current)
    return path
