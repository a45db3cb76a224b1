"""Default addresses for every interface that has none: routers' and firewalls' first, from
``.1`` up; then the two ends of each link; then hosts, from ``.10`` up (``.2`` in a small zone).
The offsets are in ``defaults.yaml`` (``addressing``)."""
from __future__ import annotations

import ipaddress

from cyberrange.model.stages.base import Context, usable
from cyberrange.model.topology import Node, Zone


def addresses(ctx: Context) -> None:
    topo = ctx.topo
    start = ctx.defaults["addressing"]
    for node, iface, path in ctx.pending_router:
        iface.ip = _lowest_free(ctx, topo.zones[iface.zone], node, path, start=start["router"])
    for link in topo.links.values():
        first, second = usable(link.subnet)[:2]
        for name, ip in ((link.a, first), (link.b, second)):
            iface = next(i for i in topo.nodes[name].interfaces if i.zone == link.name)
            iface.ip = ip
            ctx.use(ip, f"{name} (link {link.name})", ctx.zone_path(topo.zones[link.name]))
    for node, iface, path in ctx.pending_host:
        zone = topo.zones[iface.zone]
        first = (start["host"] if zone.subnet.num_addresses >= start["small_zone"]
                 else start["host_small"])
        iface.ip = _lowest_free(ctx, zone, node, path, start=first)


def _lowest_free(ctx: Context, zone: Zone, node: Node, path, start: int) -> ipaddress.IPv4Address:
    net = zone.subnet
    key = (zone.name, start)
    first = int(net.network_address) + start
    last = int(net.broadcast_address) - 1 if net.prefixlen < 31 else int(net.broadcast_address)
    candidate = max(ctx.cursor.get(key, first), first)
    while candidate <= last:
        ip = ipaddress.IPv4Address(candidate)
        candidate += 1
        if ip not in ctx.used:
            ctx.cursor[key] = candidate
            ctx.use(ip, node.name, path)
            return ip
    ctx.cursor[key] = candidate
    raise ctx.doc.error(f"zone {zone.name} ({zone.subnet}) has no free address left for "
                        f"{node.name}", path)
