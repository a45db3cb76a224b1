"""Sensors: a SPAN of a zone's switch (``zone``), a port set (``zone`` + ``nodes``) or a
router interface (``interface``); a topology that declares none gets one SPAN sensor per zone,
named ``<zone>-span``."""
from __future__ import annotations

from cyberrange.model.stages.base import Context
from cyberrange.model.topology import Sensor
from cyberrange.model.yamlsrc import did_you_mean


def sensors(ctx: Context) -> None:
    doc, topo = ctx.doc, ctx.topo
    declared = doc.data.get("sensors", [])
    rotate_default = ctx.defaults["sensor"]["rotate"]
    for i, s in enumerate(declared):
        path = ("sensors", i)
        name = s["name"]
        if ("zone" in s) == ("interface" in s):
            raise doc.error(f"sensor {name}: give either 'zone' (a SPAN of the zone's switch, "
                            f"or with 'nodes' a port set) or 'interface' ({{node, zone}}: a "
                            f"router interface)", path)
        rotate = s.get("rotate", {})
        sensor = Sensor(name,
                        rotate_s=int(rotate.get("seconds", rotate_default["seconds"])),
                        rotate_mb=int(rotate.get("megabytes", rotate_default["megabytes"])),
                        src=doc.ref(path))
        if "zone" in s:
            _ports(ctx, sensor, s, path)
        else:
            _interface(ctx, sensor, s, path)
        topo.sensors[name] = sensor
    if not declared:
        for zone in topo.zones.values():
            if not zone.p2p:
                topo.sensors[f"{zone.name}-span"] = Sensor(
                    f"{zone.name}-span", zone.name, default=True, src=zone.src)


def _ports(ctx: Context, sensor: Sensor, s: dict, path) -> None:
    """A SPAN of the zone's switch, or (with ``nodes``) the ports of those nodes on it."""
    doc, topo, name = ctx.doc, ctx.topo, sensor.name
    sensor.zone = _zone(ctx, name, path + ("zone",))
    members = {n.name for n, _ in topo.members(sensor.zone)}
    for k, node in enumerate(s.get("nodes", [])):
        npath = path + ("nodes", k)
        if node not in topo.nodes:
            raise doc.error(f"sensor {name}: unknown node '{node}'"
                            f"{did_you_mean(node, members or topo.nodes)}", npath)
        if node not in members:
            raise doc.error(f"sensor {name}: node {node} has no port in zone "
                            f"{sensor.zone} (its zones: "
                            f"{', '.join(i.zone for i in topo.nodes[node].interfaces)})",
                            npath)
        if node in sensor.nodes:
            raise doc.error(f"sensor {name}: node {node} is listed twice", npath)
        sensor.nodes.append(node)


def _interface(ctx: Context, sensor: Sensor, s: dict, path) -> None:
    """Both directions of one router or firewall interface, captured inside that node."""
    doc, topo, name = ctx.doc, ctx.topo, sensor.name
    ipath = path + ("interface",)
    node = s["interface"]["node"]
    if node not in topo.nodes:
        routers = [r.name for r in topo.routers]
        raise doc.error(f"sensor {name}: unknown node '{node}'"
                        f"{did_you_mean(node, routers)}", ipath + ("node",))
    n = topo.nodes[node]
    if not n.is_router:
        raise doc.error(f"sensor {name}: {node} is a {n.kind}; an interface sensor "
                        f"captures on a router or firewall interface (or use "
                        f"'zone' + 'nodes' for a host's switch port)", ipath + ("node",))
    zone = _zone(ctx, name, ipath + ("zone",))
    if zone not in {i.zone for i in n.interfaces}:
        raise doc.error(f"sensor {name}: {node} has no interface in zone {zone} "
                        f"(its zones: {', '.join(i.zone for i in n.interfaces)})",
                        ipath + ("zone",))
    sensor.interface = (node, zone)
    sensor.zone = zone


def _zone(ctx: Context, sensor: str, path) -> str:
    zone = ctx.doc.get(path)
    if zone not in ctx.topo.zones:
        raise ctx.doc.error(f"sensor {sensor}: unknown zone or link '{zone}'"
                            f"{did_you_mean(zone, ctx.topo.zones)}", path)
    return zone
