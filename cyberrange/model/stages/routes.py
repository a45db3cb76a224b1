"""Routing: the protocol (``routing:``), each host's default gateway, the routes given by hand (v2), and last the static
routes of every router (``model/routing.py``), hand-given ones winning."""
from __future__ import annotations

import ipaddress

from cyberrange.model.routing import compute_routes
from cyberrange.model.stages.base import Context, parse_address, parse_network
from cyberrange.model.topology import Routing
from cyberrange.model.yamlsrc import did_you_mean


def routing(ctx: Context) -> None:
    """How routers learn routes (``routing:``): the protocol and the OSPF timers, dead > hello
    (the schema checks the types and ranges)."""
    doc = ctx.doc
    given = doc.data.get("routing") or {}
    default = ctx.defaults["routing"]
    r = Routing(protocol=given.get("protocol", default["protocol"]),
                hello=given.get("hello", default["hello"]),
                dead=given.get("dead", default["dead"]),
                src=doc.ref(("routing",), key=True) if "routing" in doc.data else None)
    if r.dead <= r.hello:
        key = "dead" if "dead" in given else "hello"
        raise doc.error(f"routing: dead interval {r.dead} s must be more than the hello "
                        f"interval {r.hello} s (a neighbour is declared dead after 'dead' "
                        f"seconds without a hello)", ("routing", key))
    ctx.topo.routing = r


def gateways(ctx: Context) -> None:
    """Each host's default gateway: the one router in its zone, or the one it names."""
    doc, topo = ctx.doc, ctx.topo
    routers_in: dict[str, list] = {}              # zone -> [(router, its interface)]
    for r in topo.routers:
        for ifc in r.interfaces:
            routers_in.setdefault(ifc.zone, []).append((r, ifc))
    for i, n in enumerate(doc.data["nodes"]):
        node = topo.nodes[n["name"]]
        if not node.is_host:
            continue
        zone = node.interfaces[0].zone
        routers = routers_in.get(zone, [])
        path = ("nodes", i, "gateway")
        gw = n.get("gateway")
        if gw is None:
            if len(routers) > 1:
                names = ", ".join(r.name for r, _ in routers)
                raise doc.error(f"node {node.name}: zone {zone} has several routers ({names}); "
                                f"say which one with 'gateway:'", ("nodes", i))
            node.gateway = routers[0][1].ip if routers else None
            continue
        by_name = {r.name: ifc.ip for r, ifc in routers}
        if gw in by_name:
            node.gateway = by_name[gw]
            continue
        try:
            ip = ipaddress.ip_address(gw)
        except ValueError:
            hint = did_you_mean(gw, by_name) or (
                f" (routers in zone {zone}: {', '.join(by_name)})" if by_name
                else f" (zone {zone} has no router)")
            raise doc.error(f"node {node.name}: gateway '{gw}' is not a router in zone "
                            f"{zone}{hint}", path) from None
        if ip not in by_name.values():
            raise doc.error(f"node {node.name}: gateway {ip} is not the address of a router "
                            f"in zone {zone}", path)
        node.gateway = ip


def static_routes(ctx: Context) -> None:
    """(v2) Routes given by hand: each destination once, via an address in one of the node's
    zones that is not its own."""
    doc, topo = ctx.doc, ctx.topo
    for i, n in enumerate(doc.data["nodes"]):
        node = topo.nodes[n["name"]]
        seen: dict = {}
        for j, r in enumerate(n.get("routes", [])):
            path = ("nodes", i, "routes", j)
            to = parse_network(doc, path + ("to",), "route destination")
            via = parse_address(doc, path + ("via",), "via")
            if to in seen:
                raise doc.error(f"node {node.name}: a second route to {to} (first at "
                                f"{doc.line_of(seen[to], path)})", path + ("to",))
            seen[to] = path
            zones = [topo.zones[ifc.zone] for ifc in node.interfaces]
            if any(via == ifc.ip for ifc in node.interfaces):
                raise doc.error(f"node {node.name}: route to {to} via {via}: that is "
                                f"{node.name}'s own address", path + ("via",))
            if not any(via in z.subnet and via not in (z.subnet.network_address,
                                                        z.subnet.broadcast_address)
                       for z in zones):
                have = ", ".join(f"{z.name} {z.subnet}" for z in zones)
                raise doc.error(f"node {node.name}: route to {to} via {via}: {via} is not an "
                                f"address in any zone of {node.name} (its zones: {have})",
                                path + ("via",))
            node.static_routes.append((to, via))


def routes(ctx: Context) -> None:
    """Every router's routes to the zones it is not attached to (``routing.compute_routes``)."""
    compute_routes(ctx.topo)
