"""One flow at a time: would a NEW connection from a node to an address get through?

The semantics are in the package docstring (``cyberrange.model.reach``): the packet follows the
routes, every firewall that forwards it decides by its first matching rule or its default, and
the reply must not be dropped on its way back by a firewall that never saw the request.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cyberrange.errors import UserError
from cyberrange.model.routing import NoRoute, next_hop, router_path
from cyberrange.model.topology import Node, Rule, Topology
from cyberrange.model.yamlsrc import did_you_mean
def _node(topo: Topology, name: str) -> Node:
    if name not in topo.nodes:
        raise UserError(f"unknown node '{name}'{did_you_mean(name, topo.nodes)}")
    return topo.nodes[name]


def resolve_address(topo: Topology, node_or_ip: str) -> ipaddress.IPv4Address:
    """A node name (its primary address) or an IPv4 address."""
    if node_or_ip in topo.nodes:
        return topo.nodes[node_or_ip].ip
    try:
        return ipaddress.ip_address(node_or_ip)
    except ValueError:
        raise UserError(f"'{node_or_ip}' is neither a node nor an IPv4 address"
                        f"{did_you_mean(node_or_ip, topo.nodes)}") from None


def source_address(topo: Topology, src: Node, dst_ip) -> ipaddress.IPv4Address:
    """The address a packet from ``src`` carries: a host's own; a router's outgoing interface."""
    if not src.is_router:
        return src.ip
    dst_ip = ipaddress.ip_address(dst_ip)
    for i in src.interfaces:
        if dst_ip in topo.zones[i.zone].subnet:
            return i.ip
    via = next_hop(src, dst_ip)
    if via is not None:
        for i in src.interfaces:
            if via in topo.zones[i.zone].subnet:
                return i.ip
    return src.ip


def _describe(fw: Node, index: int, rule: Rule) -> str:
    where = f", line {rule.src_ref.line}" if rule.src_ref else ""
    note = f": {rule.comment}" if rule.comment else ""
    return f"{fw.name} rule {index + 1}{where}{note}"


def decide(fw: Node, src_ip, dst_ip, proto: str, port: int | None) -> tuple[bool, str]:
    """One firewall's verdict on a NEW forwarded packet: first matching rule, else the default."""
    for k, rule in enumerate(fw.rules):
        if rule.matches(src_ip, dst_ip, proto, port):
            return rule.action == "allow", _describe(fw, k, rule)
    if fw.filters:
        return fw.default_action == "allow", f"{fw.name} default {fw.default_action}"
    return True, f"{fw.name} forwards"


def allowed(topo: Topology, src_node_name: str, dst_ip, proto: str = "tcp",
            port: int | None = None) -> tuple[bool, str]:
    """``(True, why)`` if a NEW ``proto``/``port`` flow from the node to ``dst_ip`` gets through.

    ``dst_ip`` may also be a node name. ``port`` is required for tcp and udp, ignored for icmp.
    """
    src = _node(topo, src_node_name)
    dst_ip = resolve_address(topo, str(dst_ip))
    if proto not in ("tcp", "udp", "icmp"):
        raise UserError(f"unknown proto '{proto}' (expected tcp, udp or icmp)")
    if proto == "icmp":
        port = None
    elif port is None:
        raise UserError(f"a {proto} check needs a port")
    elif not 1 <= int(port) <= 65535:
        raise UserError(f"port {port} is out of range 1..65535")
    if any(i.ip == dst_ip for i in src.interfaces):
        return True, f"{dst_ip} is {src.name} itself"
    try:
        path = router_path(topo, src, dst_ip)
    except NoRoute as e:
        return False, f"no route: {e}"
    src_ip = source_address(topo, src, dst_ip)
    hops = []
    for router in path:
        if any(i.ip == dst_ip for i in router.interfaces):
            hops.append(f"{router.name} (destination; input, not forwarded)")
            break
        ok, why = decide(router, src_ip, dst_ip, proto, port)
        if not ok:
            return False, f"denied by {why}"
        if router.filters:
            hops.append(f"allowed by {why}")
    back = _reply_check(topo, src_ip, dst_ip, proto, {r.name for r in path})
    if back:
        return False, back
    route = " -> ".join([src.name, *(r.name for r in path), str(dst_ip)])
    return True, "; ".join([f"path {route}", *hops])


def _reply_check(topo: Topology, src_ip, dst_ip, proto: str, forward: set[str]) -> str:
    """Why the reply of an allowed flow is dropped on its way back, or "" when it is not.

    Only firewalls the request did not cross can drop it: there the reply is an unknown packet,
    judged by the rules with the reply's addresses and no known port."""
    dst = topo.node_by_ip(dst_ip)
    if dst is None:
        return ""
    try:
        back = router_path(topo, dst, src_ip)
    except NoRoute as e:
        return f"no route back: {e}"
    reply_src = source_address(topo, dst, src_ip)
    for router in back:
        if router.name in forward or not router.filters:
            continue
        if any(i.ip == src_ip for i in router.interfaces):
            break
        ok, why = decide(router, reply_src, src_ip, proto, None)
        if not ok:
            route = " -> ".join([dst.name, *(r.name for r in back), str(src_ip)])
            return (f"denied on the way back: the reply returns by another route ({route}) "
                    f"and {router.name} never saw the request ({why})")
    return ""


@dataclass(frozen=True)
class ReachResult:
    src: str
    dst: str
    proto: str
    port: int | None
    allowed: bool
    reason: str


def matrix(topo: Topology) -> list[ReachResult]:
    """Every host against every other host: ICMP echo and each service the destination runs."""
    out = []
    for src in topo.hosts:
        for dst in topo.hosts:
            if dst is src:
                continue
            checks = [("icmp", None)] + [(s.proto, s.port) for s in dst.services]
            for proto, port in checks:
                ok, why = allowed(topo, src.name, dst.ip, proto, port)
                out.append(ReachResult(src.name, dst.name, proto, port, ok, why))
    return out
