"""Firewall rules, in file order: each ``from``/``to`` resolved to the networks it names
(a zone, a node, an address, a CIDR, ``any``, or a list of those), ports to inclusive ranges."""
from __future__ import annotations

import ipaddress

from cyberrange.model.stages.base import Context, parse_address, parse_network
from cyberrange.model.topology import Endpoint, Rule
from cyberrange.model.yamlsrc import did_you_mean


def rules(ctx: Context) -> None:
    doc, topo = ctx.doc, ctx.topo
    default = ctx.defaults["rule"]
    for i, n in enumerate(doc.data["nodes"]):
        node = topo.nodes[n["name"]]
        for j, r in enumerate(n.get("rules", [])):
            path = ("nodes", i, "rules", j)
            proto = r.get("proto", default["proto"])
            ports = _ports(ctx, path + ("port",)) if "port" in r else []
            if ports and proto not in ("tcp", "udp"):
                raise doc.error(f"node {node.name}: a rule with 'port' needs proto: tcp or "
                                f"proto: udp (it has proto: {proto})", path + ("port",), key=True)
            node.rules.append(Rule(
                action=r["action"], src=_endpoint(ctx, path + ("from",)),
                dst=_endpoint(ctx, path + ("to",)), proto=proto, ports=ports,
                comment=r.get("comment", default["comment"]), src_ref=doc.ref(path)))


def _endpoint(ctx: Context, path) -> Endpoint:
    value = ctx.doc.get(path)
    items = value if isinstance(value, list) else [value]
    parts = [_endpoint_item(ctx, path + (k,) if isinstance(value, list) else path, item)
             for k, item in enumerate(items)]
    if any(p.kind == "any" for p in parts):
        return Endpoint("any", "any")
    if len(parts) == 1:
        return parts[0]
    return Endpoint("list", ",".join(p.value for p in parts),
                    [net for p in parts for net in p.networks])


def _endpoint_item(ctx: Context, path, item: str) -> Endpoint:
    topo = ctx.topo
    if item == "any":
        return Endpoint("any", "any")
    if item in topo.zones:
        return Endpoint("zone", item, [topo.zones[item].subnet])
    if item in topo.nodes:
        return Endpoint("node", item,
                        [ipaddress.ip_network(f"{i.ip}/32") for i in topo.nodes[item].interfaces])
    if item[:1].isdigit():
        if "/" not in item:
            item_net = f"{parse_address(ctx.doc, path, 'address')}/32"
            return Endpoint("cidr", item, [ipaddress.ip_network(item_net)])
        return Endpoint("cidr", item, [parse_network(ctx.doc, path, "CIDR")])
    names = ["any", *topo.zones, *topo.nodes]
    raise ctx.doc.error(f"unknown zone or node '{item}'{did_you_mean(item, names)}", path)


def _ports(ctx: Context, path) -> list[tuple[int, int]]:
    value = ctx.doc.get(path)
    items = value if isinstance(value, list) else [value]
    out = []
    for k, item in enumerate(items):
        ipath = path + (k,) if isinstance(value, list) else path
        if isinstance(item, int):
            out.append((item, item))
            continue
        lo, hi = (int(x) for x in item.split("-"))
        if not (1 <= lo <= hi <= 65535):
            raise ctx.doc.error(f"bad port range '{item}': need 1 <= lo <= hi <= 65535", ipath)
        out.append((lo, hi))
    return out
