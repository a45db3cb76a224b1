"""Mission threads (flows that must keep working), crown jewels and entry points: the names
and patterns they are written with, expanded to node names."""
from __future__ import annotations

import fnmatch
import re

from cyberrange.model.stages.base import Context
from cyberrange.model.topology import MissionThread
from cyberrange.model.yamlsrc import did_you_mean

_MISSION = re.compile(r"^\s*(?P<src>[^>]+?)\s*->\s*(?P<dst>[^\s,][^>]*?)"
                      r"(?:\s+(?:(?P<proto>tcp|udp)/(?P<port>\d+)|(?P<icmp>icmp)))?\s*$")


def missions(ctx: Context) -> None:
    """``name: "SRC -> DST tcp/PORT"`` or ``name: {from, to, proto, port, description}``."""
    doc, topo = ctx.doc, ctx.topo
    hosts = [n.name for n in topo.hosts]
    by_zone: dict[str, list[str]] = {}
    for h in topo.hosts:
        for ifc in h.interfaces:
            by_zone.setdefault(ifc.zone, []).append(h.name)
    for name, m in doc.data.get("missions", {}).items():
        path = ("missions", name)
        if isinstance(m, str):
            proto, port, srcs, dsts, description = _one_line(ctx, name, m, path)
        else:
            proto, port, srcs, dsts, description = _mapping(ctx, name, m, path)
        if proto in ("tcp", "udp") and port is None:
            raise doc.error(f"mission {name}: {proto} needs a 'port'", path)
        if port is not None and not 1 <= port <= 65535:
            raise doc.error(f"mission {name}: port {port} is out of range (1..65535)", path)
        topo.missions[name] = MissionThread(
            name=name, src=_expand(ctx, name, srcs, hosts, by_zone),
            dst=_expand(ctx, name, dsts, hosts, by_zone), proto=proto, port=port,
            description=description, src_ref=doc.ref(path, key=True))


def _one_line(ctx: Context, name: str, m: str, path):
    """``SRC -> DST tcp/PORT`` (or udp/PORT, icmp); SRC and DST comma-separated patterns."""
    doc = ctx.doc
    parsed = _MISSION.match(m)
    if not parsed:
        raise doc.error(f"mission {name}: cannot read '{m}'; write 'SRC -> DST "
                        f"tcp/PORT' (or udp/PORT, icmp), e.g. "
                        f"'ops-ws* -> c2-server tcp/8080'", path)
    if parsed["icmp"]:
        proto, port = "icmp", None
    elif parsed["proto"]:
        proto, port = parsed["proto"], int(parsed["port"])
    else:
        raise doc.error(f"mission {name}: say the protocol after the destination, "
                        f"e.g. '{m.strip()} tcp/8080' (tcp/PORT, udp/PORT or icmp)",
                        path)
    srcs = [(x.strip(), path) for x in parsed["src"].split(",")]
    dsts = [(x.strip(), path) for x in parsed["dst"].split(",")]
    return proto, port, srcs, dsts, ""


def _mapping(ctx: Context, name: str, m: dict, path):
    default = ctx.defaults["mission"]
    proto, port = m.get("proto", default["proto"]), m.get("port")
    srcs = _patterns(ctx, path + ("from",))
    dsts = _patterns(ctx, path + ("to",))
    description = m.get("description", default["description"])
    if proto == "icmp" and port is not None:
        raise ctx.doc.error(f"mission {name}: icmp has no port", path + ("port",), key=True)
    return proto, port, srcs, dsts, description


def _patterns(ctx: Context, path) -> list[tuple[str, tuple]]:
    value = ctx.doc.get(path)
    if isinstance(value, list):
        return [(v, path + (k,)) for k, v in enumerate(value)]
    return [(value, path)]


def _expand(ctx: Context, mission: str, patterns, hosts: list[str], by_zone) -> list[str]:
    """Node names, zone names (their hosts) and shell-style globs over host names."""
    doc, topo, out, seen = ctx.doc, ctx.topo, [], set()
    for pattern, path in patterns:
        if pattern in topo.nodes:
            names = [pattern]
        elif pattern in topo.zones:
            names = by_zone.get(pattern, [])
            if not names:
                raise doc.error(f"mission {mission}: zone '{pattern}' has no hosts", path)
        elif any(c in pattern for c in "*?["):
            names = fnmatch.filter(hosts, pattern)
            if not names:
                raise doc.error(f"mission {mission}: '{pattern}' matches no host"
                                f"{did_you_mean(pattern, hosts)}", path)
        else:
            raise doc.error(f"mission {mission}: unknown node or zone '{pattern}'"
                            f"{did_you_mean(pattern, [*topo.nodes, *topo.zones])}", path)
        for x in names:
            if x not in seen:
                seen.add(x)
                out.append(x)
    return out


def targets(ctx: Context) -> None:
    """Crown jewels and entry points: node names, each kept once."""
    doc, topo = ctx.doc, ctx.topo
    for key, target in (("crown_jewels", topo.crown_jewels),
                        ("entry_points", topo.entry_points)):
        what = key.replace("_", " ")[:-1]
        for k, name in enumerate(doc.data.get(key, [])):
            if name not in topo.nodes:
                raise doc.error(f"unknown {what} '{name}': not a node"
                                f"{did_you_mean(name, topo.nodes)}", (key, k))
            if name not in target:
                target.append(name)
