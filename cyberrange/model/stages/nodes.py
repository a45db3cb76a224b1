"""Nodes and their interfaces: hosts in one zone (or, in version 2, several), routers and
firewalls with one interface per zone they list, trunk ports expanded into one tagged
subinterface per VLAN, and one interface per point-to-point link a router ends. Explicit
addresses are checked and taken here; the others wait for ``addressing``."""
from __future__ import annotations

import ipaddress

from cyberrange.model.stages.base import Context, parse_address
from cyberrange.model.topology import NODE_KINDS, Interface, Node, Zone
from cyberrange.model.yamlsrc import did_you_mean

END_SYSTEM_KEYS = ("role", "zone", "ip", "gateway", "services")   # hosts only
PORT_KEYS = ("interfaces",)                                       # v1: routers and firewalls only
FILTER_KEYS = ("default", "rules")                                # firewalls only


def nodes(ctx: Context) -> None:
    doc, topo = ctx.doc, ctx.topo
    by_kind = ctx.defaults["node"]["by_kind"]
    description = ctx.defaults["node"]["description"]
    for i, n in enumerate(doc.data["nodes"]):
        path = ("nodes", i)
        kind = n["kind"]
        host = NODE_KINDS[kind].end_system
        _keys(ctx, n, path)
        default = by_kind[kind]
        node = Node(name=n["name"], kind=kind,
                    role=n.get("role", default["role"]),
                    default_action=n.get("default", default["default"]),
                    classification=n.get("classification"),
                    description=n.get("description", description),
                    src=doc.ref(path))
        # interfaces without an address wait for ``addressing``: routers' first, then hosts'
        pending = ctx.pending_host if host else ctx.pending_router
        if host and "interfaces" not in n:
            _host_interface(ctx, node, n, path, pending)
        else:
            _port_interfaces(ctx, node, n, path, pending)
        if node.classification is None:
            node.classification = (topo.zones[node.interfaces[0].zone].classification
                                   if host else topo.classification)
        topo.nodes[node.name] = node


def _keys(ctx: Context, n: dict, path) -> None:
    """Each key is one the node's kind may have."""
    doc, kind = ctx.doc, n["kind"]
    traits = NODE_KINDS[kind]
    host, filters = traits.end_system, traits.filters
    for key in n:
        if not host and key in END_SYSTEM_KEYS:
            raise doc.error(f"node {n['name']}: '{key}' is only for hosts "
                            f"(this node is a {kind})", path + (key,), key=True)
        if host and key in PORT_KEYS and not ctx.v2:
            raise doc.error(f"node {n['name']}: hosts have one 'zone' (and 'ip'), "
                            f"not 'interfaces'", path + (key,), key=True)
        if host and key in ("zone", "ip") and "interfaces" in n:
            raise doc.error(f"node {n['name']}: give either 'zone' (and 'ip') or "
                            f"'interfaces', not both", path + (key,), key=True)
        if not filters and key in FILTER_KEYS:
            raise doc.error(f"node {n['name']}: '{key}' is only for firewalls "
                            f"(this node is a {kind})", path + (key,), key=True)


def _host_interface(ctx: Context, node: Node, n: dict, path, pending: list) -> None:
    """A host's one interface, in the zone it names."""
    if "zone" not in n:
        raise ctx.doc.error(f"node {n['name']}: a host needs a 'zone' (or, in version 2, "
                            f"'interfaces')", path)
    zone = zone_of(ctx, path + ("zone",), hosts=True)
    iface = Interface(zone=zone.name, ip=None, prefixlen=zone.subnet.prefixlen,
                      index=0, profile=zone.profile)
    node.interfaces.append(iface)
    if "ip" in n:
        iface.ip = _explicit_ip(ctx, node, zone, path + ("ip",))
    else:
        pending.append((node, iface, path))


def _port_interfaces(ctx: Context, node: Node, n: dict, path, pending: list) -> None:
    """The interfaces of listed ports (a zone each, or a trunk's VLANs), then links' ends."""
    doc = ctx.doc
    attached: dict[str, tuple] = {}
    for j, spec in enumerate(n.get("interfaces", [])):
        ipath = path + ("interfaces", j)
        for zone, ip_path, zone_path, vlan in _port(ctx, node, spec, ipath):
            if zone.name in attached:
                first = doc.line_of(attached[zone.name], zone_path)
                raise doc.error(f"node {node.name}: a second interface in zone "
                                f"{zone.name} (first at {first})", zone_path)
            attached[zone.name] = zone_path
            iface = Interface(zone=zone.name, ip=None,
                              prefixlen=zone.subnet.prefixlen, index=j,
                              profile=zone.profile, vlan=vlan)
            node.interfaces.append(iface)
            if ip_path is not None:
                iface.ip = _explicit_ip(ctx, node, zone, ip_path)
            else:
                pending.append((node, iface, ipath))
    port = len(n.get("interfaces", []))       # links take the next ports
    for link in ctx.topo.links.values():
        if node.name in (link.a, link.b):
            node.interfaces.append(Interface(
                zone=link.name, ip=None, prefixlen=link.subnet.prefixlen,
                index=port, profile=link.profile))
            port += 1
    if not node.interfaces:
        raise doc.error(f"node {node.name}: a {node.kind} needs at least one interface"
                        f"{' or link' if node.is_router else ''}", path)


def _port(ctx: Context, node: Node, spec: dict, ipath):
    """The interfaces one ``interfaces:`` entry (one physical port) makes:
    [(zone, path of an explicit ip or None, path to point errors at, vlan or None)].
    An access port gives one; a trunk (``trunk: true``) one tagged subinterface per VLAN."""
    doc = ctx.doc
    if not spec.get("trunk"):
        for key in ("vlans", "ips", "switch"):
            if key in spec:
                raise doc.error(f"node {node.name}: '{key}' is for trunk ports (add "
                                f"trunk: true); an access port names its 'zone'",
                                ipath + (key,), key=True)
        if "zone" not in spec:
            raise doc.error(f"node {node.name}: an interface needs a 'zone' (or trunk: true "
                            f"with 'switch' and 'vlans')", ipath)
        zone = zone_of(ctx, ipath + ("zone",), hosts=node.is_host)
        return [(zone, ipath + ("ip",) if "ip" in spec else None, ipath + ("zone",), None)]
    for key in ("zone", "ip"):
        if key in spec:
            raise doc.error(f"node {node.name}: a trunk port has no '{key}'; its VLANs "
                            f"give the zones ('ips:' maps VLAN id -> address)",
                            ipath + (key,), key=True)
    for key in ("switch", "vlans"):
        if key not in spec:
            raise doc.error(f"node {node.name}: a trunk port needs '{key}'", ipath)
    return _trunk(ctx, node, spec, ipath)


def _trunk(ctx: Context, node: Node, spec: dict, ipath):
    """A trunk port's subinterfaces: its switch carries each VLAN it lists, each once."""
    doc = ctx.doc
    switch = spec["switch"]
    if switch not in ctx.switches:
        hint = did_you_mean(switch, ctx.switches) or (
            f" (switches: {', '.join(ctx.switches)})" if ctx.switches
            else " (no zone names a 'switch')")
        raise doc.error(f"node {node.name}: trunk to switch '{switch}', which carries no "
                        f"zones{hint}", ipath + ("switch",))
    carried = ctx.switches[switch]
    out, seen = [], {}
    for k, vlan in enumerate(spec["vlans"]):
        vpath = ipath + ("vlans", k)
        if vlan not in carried:
            have = ", ".join(str(v) for v in sorted(carried))
            raise doc.error(f"unknown VLAN {vlan} on switch {switch} (it carries {have})",
                            vpath)
        if vlan in seen:
            raise doc.error(f"node {node.name}: VLAN {vlan} is listed twice on this trunk",
                            vpath)
        seen[vlan] = vpath
    ips = spec.get("ips", {})
    for key in ips:
        if not key.isdigit() or int(key) not in seen:
            raise doc.error(f"node {node.name}: 'ips' has an address for VLAN {key}, which "
                            f"this trunk does not carry (vlans: "
                            f"{', '.join(str(v) for v in spec['vlans'])})",
                            ipath + ("ips", key), key=True)
    by_vlan = {int(k): k for k in ips}
    for vlan, vpath in seen.items():
        zone = ctx.topo.zones[carried[vlan]]
        ip_path = ipath + ("ips", by_vlan[vlan]) if vlan in by_vlan else None
        out.append((zone, ip_path, vpath, vlan))
    return out


def zone_of(ctx: Context, path, hosts: bool) -> Zone:
    """The zone named at ``path``; a link's zone is refused (its ends are made by the link)."""
    doc = ctx.doc
    name = doc.get(path)
    zone = ctx.topo.zones.get(name)
    if zone is None:
        names = [z.name for z in ctx.topo.zones.values() if not z.p2p]
        raise doc.error(f"unknown zone '{name}'{did_you_mean(name, names)}", path)
    if zone.p2p:
        if hosts:
            raise doc.error(f"'{name}' is a point-to-point link; hosts sit in zones", path)
        raise doc.error(f"'{name}' is a point-to-point link; its endpoints get their "
                        f"interface automatically, do not list it", path)
    return zone


def _explicit_ip(ctx: Context, node: Node, zone: Zone, path) -> ipaddress.IPv4Address:
    ip = parse_address(ctx.doc, path)
    net = zone.subnet
    if ip not in net:
        raise ctx.doc.error(f"{ip} is outside zone {zone.name} ({net})", path)
    if ip == net.network_address:
        raise ctx.doc.error(f"{ip} is the network address of zone {zone.name} ({net})", path)
    if ip == net.broadcast_address:
        raise ctx.doc.error(f"{ip} is the broadcast address of zone {zone.name} ({net})", path)
    ctx.use(ip, node.name, path)
    return ip
