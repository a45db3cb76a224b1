"""Static routes for the twin's routers, and the path a packet takes through them.

Routers (and firewalls) form a graph: two routers are neighbours when they have an interface
in the same zone (a LAN or a point-to-point link). For every zone a router is not attached to,
it gets one route ``(subnet, next-hop IP)`` towards the nearest router that *is* attached to
that zone, by hop count. Ties are broken by name (the neighbour with the smallest name, and
between two shared zones the one with the smallest name), so the same file always gives the
same routes. The twin installs exactly these routes, and ``router_path`` follows exactly these
routes, so static analysis and the live twin agree.
"""
from __future__ import annotations

import ipaddress

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
    """Fill ``Node.routes`` of every router/firewall (sorted by subnet). Hosts keep ``[]``:
    their only route is the default via ``Node.gateway``."""
    g = router_graph(topo)
    attached = {r.name: {i.zone for i in r.interfaces} for r in topo.routers}
    for r in topo.routers:
        r.routes = []
    for zone in sorted(topo.zones.values(), key=lambda z: z.name):
        targets = [name for name, zs in attached.items() if zone.name in zs]
        if not targets:
            continue
        # hop distance of every router to the nearest router attached to this zone
        dist = nx.multi_source_dijkstra_path_length(g, targets, weight=None) if targets else {}
        for r in topo.routers:
            if zone.name in attached[r.name] or r.name not in dist:
                continue
            here = dist[r.name]
            hop = min(n for n in g.neighbors(r.name) if dist.get(n) == here - 1)
            shared = sorted(g.edges[r.name, hop]["zones"])[0]
            nh_ip = next(i.ip for i in topo.nodes[hop].interfaces if i.zone == shared)
            r.routes.append((zone.subnet, nh_ip))
    for r in topo.routers:
        r.routes.sort(key=lambda rt: (int(rt[0].network_address), rt[0].prefixlen))


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
        if src.gateway is None:
            raise NoRoute(f"{src.name} has no gateway (zone {src.interfaces[0].zone} has no router)")
        current = topo.node_by_ip(src.gateway)
        path = [current]
    while not connected(current):
        via = next_hop(current, dst_ip)
        if via is None:
            raise NoRoute(f"{current.name} has no route to {dst_ip}")
        current = topo.node_by_ip(via)
        if current in path or len(path) > len(topo.nodes):
            raise NoRoute(f"routing loop towards {dst_ip} at {current.name}")
        path.append(current)
    return path
