"""Each blue action checked against the twin's model and turned into a plan, before anything
in the kernel changes: a bad node, zone, rule or option is a ``UserError`` here, so that a
refused action leaves the twin and the action log exactly as they were.

A :class:`Plan` holds the action's normalised parameters (what the log records) and how to
carry it out once its id is known (the id names its nftables objects): ``make(id)`` returns
the nftables changes, one ``nft -f`` transaction per namespace (``blue/nft.py``), or, for the
actions that happen once (kill sessions, restart a service), ``run(id)`` does it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Callable

from cyberrange.blue import nft
from cyberrange.blue.rules import parse_rule, rule_mapping, rule_text
from cyberrange.errors import UserError
from cyberrange.twin.firewall import rule_line

PROTOS = ("tcp", "udp", "icmp", "any")


@dataclass
class Change:
    """One ``nft -f`` transaction in one namespace, and how to take it back."""
    ns: str
    script: str
    objects: list[str]
    undo: str


@dataclass
class Plan:
    action: str
    params: dict
    make: Callable[[str], list[Change]] | None = None      # nftables actions
    run: Callable[[str], "Outcome"] | None = None           # one-shot actions
    check: Callable[[list[dict]], None] | None = None       # against the log, under its lock


@dataclass
class Outcome:
    """What a one-shot action did: ``ok``, the objects it touched, why not."""
    ok: bool
    objects: list[str]
    reason: str | None = None


# -- block ------------------------------------------------------------------------------------
def plan_block(lt, params: dict) -> Plan:
    """``block``: a deny rule (the topology's rule semantics) from ``src`` to ``dst``
    (``proto``, ``port``), at the source nodes' switch ports (``at: port``, the default),
    on the firewall(s) between them (``at: firewall``) or on one named firewall."""
    src, dst = _text(params.get("src")), _text(params.get("dst"))
    proto = _text(params.get("proto")) or "any"
    port = params.get("port")
    at = _text(params.get("at")) or "port"
    if not src and not dst:
        raise UserError("block needs --src or --dst (or both)")
    if proto not in PROTOS:
        raise UserError(f"block: --proto must be one of {', '.join(PROTOS)}, not {proto!r}")
    mapping = {"action": "deny", "from": src or "any", "to": dst or "any", "proto": proto}
    if port not in (None, ""):
        mapping["port"] = int(port) if str(port).isdigit() else str(port)
    if src:                    # each endpoint alone first: the error names its option
        parse_rule(lt.topo, {"action": "deny", "from": src, "to": "any"}, "--src")
    if dst:
        parse_rule(lt.topo, {"action": "deny", "from": "any", "to": dst}, "--dst")
    rule = parse_rule(lt.topo, mapping, "block")
    norm = {"src": src or "any", "dst": dst or "any", "proto": proto,
            "port": mapping.get("port"), "at": at}
    if at == "port":
        ports = _source_ports(lt, rule)
        order = sorted(ports, key=_port_key)
        norm.update(at="port", ports=order,
                    where=[f"{p} ({ports[p][0]} {ports[p][1]})" for p in order])
        names = ", ".join(f'"{p}"' for p in order)

        def make(aid: str) -> list[Change]:
            line = f"iifname {{ {names} }} " + rule_line(_tagged(rule, aid))
            return [_base_change(lt.sw_ns, nft.SWITCH_TABLE, aid, "filter", [line])]
        return Plan("block", norm, make=make)
    firewalls = _firewalls(lt, rule, at)
    norm.update(at="firewall", firewalls=firewalls)

    def make_fw(aid: str) -> list[Change]:
        line = rule_line(_tagged(rule, aid))
        return [_base_change(lt.ns[fw], nft.FIREWALL_TABLE, aid, "filter - 10", [line])
                for fw in firewalls]
    return Plan("block", norm, make=make_fw)


def _source_ports(lt, rule) -> dict[str, tuple[str, str]]:
    """``{switch port: (node, device)}`` of every twin interface whose address the rule's
    source covers."""
    if rule.src.kind == "any":
        raise UserError("block --at port needs --src (the ports are the source's)")
    out = {}
    for node in lt.topo.nodes.values():
        for itf in node.interfaces:
            if rule.src.matches(itf.ip):
                port = lt.port_of(node.name, itf)
                if port:
                    out[port] = (node.name, itf.devname)
    if not out:
        raise UserError(f"block --at port: no node of the twin has an address in --src "
                        f"{rule.src.value} (block it --at firewall)")
    return out


def _port_key(port: str):
    return (len(port), port)


def _firewalls(lt, rule, at: str) -> list[str]:
    """The firewall(s) a block lands on: one named, or those on the routed path from every
    source node to every destination zone; with no source node (``any``, an address outside
    the twin) the destination zones' firewalls, with no destination the source zones'."""
    from cyberrange.model.routing import NoRoute, router_path
    topo = lt.topo
    if at != "firewall":
        if at not in topo.nodes:
            raise UserError(f"block: --at must be port, firewall or a firewall's name, not "
                            f"{at!r}" + _near(at, ["port", "firewall", *topo.nodes]))
        if not topo.nodes[at].filters:
            raise UserError(f"block: {at} is not a firewall (kind {topo.nodes[at].kind}); "
                            f"--at port blocks at the source's switch port")
        return [at]
    sources = [n for n in topo.nodes.values()
               if rule.src.kind != "any" and any(rule.src.matches(i.ip) for i in n.interfaces)]
    targets = _zone_addresses(topo, rule.dst)
    found: list[str] = []
    if sources and rule.dst.kind != "any":
        for s in sources:
            for ip in targets:
                try:
                    found += [n.name for n in router_path(topo, s, ip) if n.filters]
                except NoRoute:
                    continue
    else:
        zones = ({i.zone for n in sources for i in n.interfaces if rule.src.matches(i.ip)}
                 if sources else {z for z, ip in _zone_addresses(topo, rule.dst, zones=True)})
        found = [n.name for z in sorted(zones) for n, _ in topo.members(z) if n.filters]
    found = list(dict.fromkeys(found))
    if not found:
        raise UserError(f"block: no firewall between {rule.src.value} and {rule.dst.value} "
                        f"(--at port blocks at the source's switch port)")
    return found


def _zone_addresses(topo, ep, zones: bool = False):
    """One address per twin zone the endpoint covers (a node's own address); with ``zones``
    ``(zone, address)`` pairs."""
    out = []
    for z in topo.zones.values():
        for net in ep.networks:
            if net.prefixlen == 32 and net.network_address in z.subnet:
                out.append((z.name, net.network_address))
            elif net.overlaps(z.subnet):
                inner = net if net.subnet_of(z.subnet) else z.subnet
                out.append((z.name, next(inner.hosts(), inner.network_address)))
    return out if zones else [ip for _, ip in out]


def _tagged(rule, aid: str):
    return dataclasses.replace(rule, comment=f"{nft.TAG} {aid}")


def _base_change(ns: str, table, aid: str, priority: str, rules: list[str]) -> Change:
    return Change(ns, nft.base_chain(table, aid, priority, rules),
                  [nft.chain_object(ns, table, aid)],
                  nft.remove_chain(table, aid, last_in_table=False))


# -- isolate ----------------------------------------------------------------------------------
def plan_isolate(lt, params: dict) -> Plan:
    """``isolate``: quarantine a node at its switch port(s). Only the management nodes
    (``allow``) may still talk to it over IP; ARP only for its own addresses with them and
    with the routers of its zones (its gateways); nothing else enters or leaves its ports,
    whatever the node does (a changed address or MAC, raw frames)."""
    name = _text(params.get("node"))
    if not name:
        raise UserError("isolate needs a NODE")
    node = lt.node(name)
    allow = [_text(a) for a in (params.get("allow") or []) if _text(a)]
    allow = list(dict.fromkeys(allow))
    for a in allow:
        lt.node(a)
        if a == name:
            raise UserError(f"isolate {name}: --allow names the node itself")
    ports = {lt.port_of(name, i): i.devname for i in node.interfaces}
    ports.pop(None, None)
    if not ports:
        raise UserError(f"isolate {name}: the node has no switch port in twin {lt.prefix}")
    own = sorted({str(i.ip) for i in node.interfaces})
    mgmt = sorted({str(i.ip) for a in allow for i in lt.topo.nodes[a].interfaces})
    zones = {i.zone for i in node.interfaces}
    gateways = sorted({str(i.ip) for z in zones for n, i in lt.topo.members(z)
                       if n.is_router and n.name != name})
    arp_peers = sorted(set(mgmt) | (set(gateways) if mgmt else set()))
    names = ", ".join(f'"{p}"' for p in sorted(ports, key=_port_key))
    norm = {"node": name, "allow": allow, "ips": own, "allow_ips": mgmt,
            "ports": sorted(ports, key=_port_key)}

    def rules(aid: str) -> list[str]:
        c = f'comment "{nft.TAG} {aid}"'
        out = []
        if mgmt:
            out += [f"iifname {{ {names} }} arp saddr ip {_set(own)} arp daddr ip "
                    f"{_set(arp_peers)} accept {c}",
                    f"iifname {{ {names} }} ip daddr {_set(mgmt)} accept {c}"]
        out.append(f"iifname {{ {names} }} drop {c}")
        if mgmt:
            out += [f"oifname {{ {names} }} arp saddr ip {_set(arp_peers)} accept {c}",
                    f"oifname {{ {names} }} ip saddr {_set(mgmt)} accept {c}"]
        out.append(f"oifname {{ {names} }} drop {c}")
        return out

    def check(records: list[dict]) -> None:
        from cyberrange.blue.log import active_of
        for r in active_of(records):
            if r["action"] == "isolate" and r["params"].get("node") == name:
                raise UserError(f"{name} is already isolated ({r['id']}); "
                                f"`blue release {r['id']}` first")

    return Plan("isolate", norm,
                make=lambda aid: [_base_change(lt.sw_ns, nft.SWITCH_TABLE, aid, "filter",
                                               rules(aid))],
                check=check)


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


# -- rule add ---------------------------------------------------------------------------------
def plan_rule_add(lt, params: dict) -> Plan:
    """``rule-add``: one rule in the topology's syntax on a firewall, ``first`` (before the
    model's rules, the default) or ``last`` (after them, before the default verdict)."""
    fw = _text(params.get("firewall"))
    if not fw:
        raise UserError("rule add needs a FIREWALL")
    node = lt.node(fw)
    if not node.filters:
        raise UserError(f"rule add: {fw} is not a firewall (kind {node.kind}): it filters "
                        f"nothing; `blue block --at port` blocks anywhere")
    position = _text(params.get("position")) or "first"
    if position not in ("first", "last"):
        raise UserError(f"rule add: position must be first or last, not {position!r}")
    given = params.get("rule")
    mapping = given if isinstance(given, dict) else rule_mapping(str(given or ""))
    label = f"rule {rule_text(mapping)!r}" if isinstance(mapping, dict) else "rule"
    rule = parse_rule(lt.topo, mapping, label)
    norm = {"firewall": fw, "rule": rule_text(mapping), "position": position,
            "nft": rule_line(rule)}
    ns = lt.ns[fw]

    def make(aid: str) -> list[Change]:
        return [Change(ns, nft.add_rule_chain(ns, aid, rule_line(rule), position),
                       [nft.chain_object(ns, nft.MODEL_TABLE, nft.rule_chain_name(aid)),
                        nft.jump_object(ns, aid, position)], "")]
    return Plan("rule-add", norm, make=make)


# -- helpers ----------------------------------------------------------------------------------
def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _near(word: str, choices) -> str:
    from cyberrange.model.yamlsrc import did_you_mean
    return did_you_mean(word, choices)


def resolve_peer(lt, peer: str) -> list[ipaddress.IPv4Network]:
    """The networks a node, zone, CIDR or address names (``any``: none, i.e. every peer)."""
    rule = parse_rule(lt.topo, {"action": "deny", "from": peer, "to": "any"}, "--peer")
    return list(rule.src.networks)
