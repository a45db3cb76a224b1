"""Zones and links: each zone a subnet (strict CIDR) with a classification, a shaping profile
and its switch (shared switches carry one VLAN per zone); each point-to-point link a two-member
zone with ``p2p=True``; and no two subnets overlapping."""
from __future__ import annotations

from cyberrange.model.stages.base import Context, parse_network, usable
from cyberrange.model.stages.profiles import profile_ref
from cyberrange.model.topology import NODE_KINDS, Link, Zone
from cyberrange.model.yamlsrc import did_you_mean


def zones(ctx: Context) -> None:
    doc, topo = ctx.doc, ctx.topo
    default = ctx.defaults["zone"]
    for name, z in doc.data["zones"].items():
        path = ("zones", name)
        subnet = parse_network(doc, path + ("subnet",))
        if subnet.prefixlen > 30:
            raise doc.error(f"zone subnet {subnet} is too small: use /30 or larger "
                            f"(a /31 or /32 is for point-to-point links)", path + ("subnet",))
        topo.zones[name] = Zone(
            name=name, subnet=subnet,
            classification=z.get("classification", topo.classification),
            description=z.get("description", default["description"]),
            profile=profile_ref(ctx, path + ("profile",), name),
            vlan=z.get("vlan"), switch=z.get("switch", default["switch"]),
            cost=z.get("cost"), src=doc.ref(path, key=True),
        )
        _vlan(ctx, topo.zones[name], path)


def _vlan(ctx: Context, zone: Zone, path):
    """Zones naming the same switch share it, each on its own VLAN id."""
    doc = ctx.doc
    if zone.switch and zone.vlan is None:
        raise doc.error(f"zone {zone.name}: a zone on switch '{zone.switch}' needs a 'vlan' "
                        f"(1..4094)", path + ("switch",), key=True)
    if zone.vlan is not None and not zone.switch:
        raise doc.error(f"zone {zone.name}: 'vlan' needs 'switch' (the switch that carries "
                        f"the VLAN)", path + ("vlan",), key=True)
    if not zone.switch:
        return
    vlans = ctx.switches.setdefault(zone.switch, {})
    if zone.vlan in vlans:
        other = vlans[zone.vlan]
        first = doc.line_of(("zones", other, "vlan"), path)
        raise doc.error(f"duplicate VLAN {zone.vlan} on switch {zone.switch}: zone {other} "
                        f"has it already ({first})", path + ("vlan",))
    vlans[zone.vlan] = zone.name


def switch_names(ctx: Context) -> None:
    """A shared switch gets its own name in the twin: it must not be a zone/link/node name."""
    d = ctx.doc.data
    names = set(d.get("zones", {})) | {l["name"] for l in d.get("links", [])} | \
        {n["name"] for n in d["nodes"]}
    for name, vlans in ctx.switches.items():
        if name in names:
            zone = vlans[min(vlans)]
            raise ctx.doc.error(f"switch name '{name}' is also a zone, link or node name; "
                                f"give the switch its own name", ("zones", zone, "switch"))


def links(ctx: Context) -> None:
    """Point-to-point links between routers or firewalls, each also a two-member zone."""
    doc, topo = ctx.doc, ctx.topo
    kinds = {n["name"]: n["kind"] for n in doc.data["nodes"]}
    describe = ctx.defaults["link"]["description"]
    for i, l in enumerate(doc.data.get("links", [])):
        path = ("links", i)
        for j, end in enumerate(l["endpoints"]):
            epath = path + ("endpoints", j)
            if end not in kinds:
                raise doc.error(f"link {l['name']}: unknown node '{end}'"
                                f"{did_you_mean(end, kinds)}", epath)
            if not NODE_KINDS[kinds[end]].forwards:
                raise doc.error(f"link {l['name']}: '{end}' is a {kinds[end]}; link endpoints "
                                f"must be routers or firewalls", epath)
        a, b = l["endpoints"]
        if a == b:
            raise doc.error(f"link {l['name']}: both endpoints are '{a}'", path + ("endpoints", 1))
        subnet = parse_network(doc, path + ("subnet",))
        if len(usable(subnet)) < 2:
            raise doc.error(f"link subnet {subnet} has no room for two ends: use a /30 or /31",
                            path + ("subnet",))
        profile = profile_ref(ctx, path + ("profile",), l["name"])
        ref = doc.ref(path)
        topo.links[l["name"]] = Link(name=l["name"], a=a, b=b, subnet=subnet,
                                     profile=profile, cost=l.get("cost"), src=ref)
        topo.zones[l["name"]] = Zone(name=l["name"], subnet=subnet,
                                     classification=topo.classification,
                                     description=l.get("description", describe.format(a=a, b=b)),
                                     profile=profile, p2p=True, cost=l.get("cost"), src=ref)


def overlaps(ctx: Context) -> None:
    """No two subnets overlap. Sort by first address and sweep, remembering the subnet that
    reaches furthest: two CIDR blocks overlap exactly when one contains the other, so every
    overlapping zone is caught against that one, in O(n log n)."""
    doc = ctx.doc
    all_zones = list(ctx.topo.zones.values())
    order = {z.name: i for i, z in enumerate(all_zones)}
    pairs = []
    reach = None                               # (last address as int, zone)
    for z in sorted(all_zones, key=lambda z: (int(z.subnet.network_address), z.subnet.prefixlen)):
        first, last = int(z.subnet.network_address), int(z.subnet.broadcast_address)
        if reach is not None and first <= reach[0]:
            a, b = sorted((z, reach[1]), key=lambda x: order[x.name])
            pairs.append((order[b.name], order[a.name], b, a))
        if reach is None or last > reach[0]:
            reach = (last, z)
    if not pairs:
        return
    _, _, z, other = min(pairs, key=lambda p: (p[0], p[1]))
    what = "link" if z.p2p else "zone"
    path = ctx.zone_path(z) + ("subnet",)
    where = doc.line_of(ctx.zone_path(other), path, key=True)
    if doc.label(path) or doc.label(ctx.zone_path(other)):
        other_what = "link" if other.p2p else "zone"
        ofile, oline, _ = doc.where(ctx.zone_path(other), key=True)
        olabel = doc.label(ctx.zone_path(other))
        at = f"{olabel}, " if olabel and olabel != doc.label(path) else ""
        raise doc.error(f"subnet {z.subnet} overlaps {other_what} {other.name} "
                        f"{other.subnet} ({at}{ofile}:{oline})", path)
    raise doc.error(
        f"{what} {z.name} subnet {z.subnet} overlaps {other.name} "
        f"({other.subnet}, {where})", path)
