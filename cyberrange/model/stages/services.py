"""What runs on nodes: services (one per proto/port, with the keys their type takes; the
default proto is the one the type's module in ``cyberrange/services/`` declares) and the
software inventory used by patch validation."""
from __future__ import annotations

import fnmatch

from cyberrange.model.stages.base import Context
from cyberrange.model.topology import Account, Service, Software
from cyberrange.model.yamlsrc import did_you_mean
from cyberrange.services.registry import SERVICES


def services(ctx: Context) -> None:
    doc, topo = ctx.doc, ctx.topo
    default = ctx.defaults["service"]
    for i, n in enumerate(doc.data["nodes"]):
        node = topo.nodes[n["name"]]
        seen: dict[tuple, tuple] = {}
        for j, s in enumerate(n.get("services", [])):
            path = ("nodes", i, "services", j)
            proto = s.get("proto", SERVICES[s["type"]].proto)     # the type's spec says
            key = (s["port"], proto)
            if key in seen:
                raise doc.error(f"node {node.name}: {proto}/{s['port']} is already taken by "
                                f"another service ({doc.line_of(seen[key], path)})",
                                path + ("port",))
            seen[key] = path
            _type_keys(ctx, node.name, s, path)
            node.services.append(Service(
                type=s["type"], port=s["port"], proto=proto,
                accounts=[Account(a["user"], a["password"]) for a in s.get("accounts", [])],
                banner=s.get("banner", default["banner"]),
                domain=(topo.domain if s["type"] == "dns"
                        else s.get("domain", default["c2_domain"]) if s["type"] == "c2-dns"
                        else ""),
                registers={int(k): int(v) for k, v in (s.get("registers") or {}).items()},
                writers=_writers(ctx, node.name, s, path),
                src=doc.ref(path)))


def _type_keys(ctx: Context, node: str, s: dict, path) -> None:
    """``accounts`` only on login and ssh, ``registers`` and ``writers`` only on modbus,
    ``domain`` only on c2-dns."""
    doc = ctx.doc
    if "accounts" in s and s["type"] not in ("login", "ssh"):
        raise doc.error(f"node {node}: 'accounts' are only for login and ssh "
                        f"services", path + ("accounts",), key=True)
    if "registers" in s and s["type"] != "modbus":
        raise doc.error(f"node {node}: 'registers' are only for modbus services",
                        path + ("registers",), key=True)
    if "writers" in s and s["type"] != "modbus":
        raise doc.error(f"node {node}: 'writers' are only for modbus services",
                        path + ("writers",), key=True)
    if "domain" in s and s["type"] != "c2-dns":
        raise doc.error(f"node {node}: 'domain' is only for c2-dns services "
                        f"(the twin's own domain is the top-level 'domain')",
                        path + ("domain",), key=True)


def _writers(ctx: Context, node: str, s: dict, path) -> list[str] | None:
    """A modbus service's writer allow-list: host names, zone names (their hosts) and globs
    over host names, expanded to host names (the PLC enforces it when its firmware does:
    ``services/behaviours.yaml``)."""
    if "writers" not in s:
        return None
    topo, doc = ctx.topo, ctx.doc
    hosts = [n.name for n in topo.hosts]
    out: list[str] = []
    for k, pattern in enumerate(s["writers"]):
        at = path + ("writers", k)
        if pattern in topo.zones:
            names = [h for h in hosts if any(i.zone == pattern for i in topo.nodes[h].interfaces)]
        elif any(c in pattern for c in "*?["):
            names = fnmatch.filter(hosts, pattern)
        else:
            names = [pattern] if pattern in hosts else []
            if not names:
                raise doc.error(f"node {node}: writers: unknown host or zone '{pattern}'"
                                f"{did_you_mean(pattern, [*hosts, *topo.zones])}", at)
        if not names:
            raise doc.error(f"node {node}: writers: '{pattern}' matches no host", at)
        out += [n for n in names if n not in out]
    return out


def software(ctx: Context) -> None:
    cpe = ctx.defaults["software"]["cpe"]
    for n in ctx.doc.data["nodes"]:
        ctx.topo.nodes[n["name"]].software = [
            Software(name=sw["name"], version=str(sw["version"]), cpe=sw.get("cpe", cpe))
            for sw in n.get("software", [])]
