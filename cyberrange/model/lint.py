"""Lint a loaded topology: problems that load fine but make the network behave unlike its intent.

Each finding has a code, a severity, a one-line message and the ``FILE:LINE`` of the element it
is about. ``cyberrange topo check`` prints them and exits 1 when one has severity ``error``.

=====================  ========  =================================================================
code                   severity  meaning
=====================  ========  =================================================================
``mission-blocked``    error     a mission thread's flow is denied for a source/destination pair
``unreachable-zone``   warning   no host of any other zone can reach any host of the zone, by any
                                 protocol or port (no router, no route, or every path denied)
``shadowed-rule``      warning   earlier rules of the same firewall match all of the rule's traffic,
                                 so it never decides anything
``rule-never-matches`` warning   no packet that matches the rule's from/to is ever forwarded by the
                                 firewall (both ends on one side, or not routed through it)
``redundant-rule``     info      the rule decides some traffic, but removing it changes no verdict
                                 (the later rules or the default give the same answer)
``equal-cost-route``   warning   (OSPF) a router has several next hops of equal cost to a zone: FRR
                                 installs them all (ECMP) and the twin may use either; the model
                                 follows the first by name
=====================  ========  =================================================================

The rule analyses are exact over the rule language: a rule's traffic is a box (source
addresses x destination addresses x protocols x ports); cutting each axis at every boundary the
firewall's rules use gives *atoms* that every rule matches wholly or not at all, so "covered by
earlier rules" is decided atom by atom on one representative point each.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from cyberrange.errors import UserError
from cyberrange.model.reach import ReachIndex
from cyberrange.model.routing import equal_cost_routes, next_hop
from cyberrange.model.topology import Endpoint, Node, Rule, SourceRef, Topology

SEVERITIES = ("error", "warning", "info")
ALL_ADDR = [(0, 2**32 - 1)]
PROTOS = ("tcp", "udp", "icmp")
MAX_ATOMS = 200_000          # per rule; beyond this a rule is not analysed (and a note says so)


@dataclass
class Finding:
    code: str
    severity: str                   # error | warning | info
    message: str
    ref: SourceRef | None = None
    element: str = ""               # "fob-fw rule 5", "zone cp-lan", "mission fires"
    details: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.ref.file}:{self.ref.line}" if self.ref else ""

    def to_json(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "file": self.ref.file if self.ref else None,
                "line": self.ref.line if self.ref else None,
                "element": self.element, "details": self.details}

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.code}: {self.message}"


def _ref(topo: Topology, ref: SourceRef | None) -> SourceRef | None:
    return ref if ref is not None else (SourceRef(topo.file, 1) if topo.file else None)


def lint(topo: Topology, index: ReachIndex | None = None) -> list[Finding]:
    """Every finding for ``topo``, errors first, then by file position."""
    ix = index or ReachIndex(topo)
    out: list[Finding] = []
    out += missions_blocked(topo, ix)
    out += unreachable_zones(topo, ix)
    out += equal_cost(topo)
    for fw in topo.routers:
        if fw.rules:
            out += rule_findings(topo, fw, ix)
    order = {s: k for k, s in enumerate(SEVERITIES)}
    out.sort(key=lambda f: (order[f.severity], f.ref.line if f.ref else 0, f.code))
    return out


# -- mission threads ------------------------------------------------------------------------
def missions_blocked(topo: Topology, ix: ReachIndex) -> list[Finding]:
    out = []
    for m in topo.missions.values():
        what = m.proto + (f"/{m.port}" if m.port is not None and m.proto != "icmp" else "")
        blocked: dict[str, list[tuple[str, str]]] = {}
        for s in m.src:
            for d in m.dst:
                if s == d:
                    continue
                try:
                    ok, why = ix.check(s, topo.nodes[d].ip if d in topo.nodes else d, m.proto, m.port)
                except (UserError, KeyError) as e:
                    ok, why = False, f"cannot be checked: {e}"
                if not ok:
                    blocked.setdefault(why, []).append((s, d))
        for why, pairs in blocked.items():
            s, d = pairs[0]
            more = f" (and {len(pairs) - 1} more pair{'s' * (len(pairs) > 2)})" if len(pairs) > 1 else ""
            out.append(Finding(
                "mission-blocked", "error",
                f"mission {m.name}: {s} -> {d} {what} is {why}{more}",
                _ref(topo, m.src_ref), f"mission {m.name}",
                {"mission": m.name, "proto": m.proto, "port": m.port, "reason": why,
                 "pairs": [list(p) for p in pairs]}))
    return out


# -- equal-cost next hops (OSPF) -----------------------------------------------------------
def equal_cost(topo: Topology) -> list[Finding]:
    """One warning per router and destination zone with equal-cost next hops."""
    out = []
    for t in equal_cost_routes(topo):
        hops = ", ".join(f"{n} via {z}" for n, z in t.hops)
        first = f"{t.hops[0][0]} via {t.hops[0][1]}"
        out.append(Finding(
            "equal-cost-route", "warning",
            f"{t.router} has {len(t.hops)} equal-cost next hops to {t.zone} {t.subnet} "
            f"(cost {t.cost}): {hops}; FRR installs them all, so the twin may use either "
            f"(the model follows {first})",
            _ref(topo, topo.nodes[t.router].src), f"router {t.router}",
            {"router": t.router, "zone": t.zone, "subnet": str(t.subnet), "cost": t.cost,
             "next_hops": [{"router": n, "via": z} for n, z in t.hops]}))
    return out


# -- zones nobody can reach -----------------------------------------------------------------
def _port_candidates(path: list[Node]) -> list[int]:
    """One port in every interval that the rules of ``path`` treat alike."""
    ports = {1}
    for r in path:
        for rule in r.rules:
            for lo, hi in rule.ports:
                ports.add(lo)
                if hi < 65535:
                    ports.add(hi + 1)
    return sorted(ports)


def unreachable_zones(topo: Topology, ix: ReachIndex) -> list[Finding]:
    hosts_by_zone: dict[str, list[Node]] = {}
    for h in topo.hosts:
        for z in {i.zone for i in h.interfaces}:
            hosts_by_zone.setdefault(z, []).append(h)
    if len(hosts_by_zone) < 2:
        return []
    src_classes = {z: sorted({ix.src_class(h) for h in hs}) for z, hs in hosts_by_zone.items()}
    out = []
    for zname, members in hosts_by_zone.items():
        zone = topo.zones[zname]
        routers = [ix.by_ip[i.ip].name for i in _cache(ix)["members"].get(zname, ())
                   if ix.by_ip[i.ip].is_router]
        where = f"zone {zname} ({zone.subnet})"
        if not routers:
            out.append(Finding("unreachable-zone", "warning",
                               f"{where} has no router: no host of another zone can reach it",
                               _ref(topo, zone.src), f"zone {zname}", {"zone": zname, "reason": "no router"}))
            continue
        dst_classes = sorted({ix.addr_class(h.ip) for h in members})
        example = None
        reached = False
        for other, classes in src_classes.items():
            if other == zname:
                continue
            for s in classes:
                if zname in ix.src_info[s][0]:
                    continue            # a host in both zones: not "another zone"
                for d in dst_classes:
                    p = ix.path(s, d)
                    if isinstance(p, str):
                        example = example or (other, f"no route: {p}")
                        continue
                    checks = [("icmp", None)] + [(pr, port) for pr in ("tcp", "udp")
                                                 for port in _port_candidates(p)]
                    for proto, port in checks:
                        ok, why = ix.verdict(s, d, proto, port)
                        if ok:
                            reached = True
                            break
                        if example is None or example[1].startswith("no route"):
                            example = (other, why)
                    if reached:
                        break
                if reached:
                    break
            if reached:
                break
        if not reached:
            src, why = example or ("-", "no path")
            out.append(Finding(
                "unreachable-zone", "warning",
                f"{where}: no host of another zone reaches it by any protocol or port "
                f"(e.g. from {src}: {why})",
                _ref(topo, zone.src), f"zone {zname}", {"zone": zname, "example_from": src, "reason": why}))
    return out


# -- firewall rules -------------------------------------------------------------------------
def _ranges(ep: Endpoint) -> list[tuple[int, int]]:
    if ep.kind == "any":
        return ALL_ADDR
    rs = sorted((int(n.network_address), int(n.broadcast_address)) for n in ep.networks)
    merged: list[tuple[int, int]] = []
    for lo, hi in rs:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


@dataclass
class _Box:
    """A rule's traffic as integer ranges: src x dst x protos x ports (ports None for icmp)."""
    src: list[tuple[int, int]]
    dst: list[tuple[int, int]]
    protos: tuple[str, ...]
    ports: list[tuple[int, int]]        # tcp/udp ports; [(1, 65535)] when the rule has none

    @classmethod
    def of(cls, rule: Rule) -> _Box:
        return cls(_ranges(rule.src), _ranges(rule.dst),
                   PROTOS if rule.proto == "any" else (rule.proto,),
                   list(rule.ports) or [(1, 65535)])

    def matches(self, s: int, d: int, proto: str, port: int | None) -> bool:
        if proto not in self.protos:
            return False
        if port is not None and not any(lo <= port <= hi for lo, hi in self.ports):
            return False
        return any(lo <= s <= hi for lo, hi in self.src) and any(lo <= d <= hi for lo, hi in self.dst)


def _split(ranges: list[tuple[int, int]], others: list[list[tuple[int, int]]]) -> list[int]:
    """Starts of the pieces of ``ranges`` cut at every boundary of ``others``."""
    cuts = set()
    for rs in others:
        for lo, hi in rs:
            cuts.add(lo)
            cuts.add(hi + 1)
    out = []
    for lo, hi in ranges:
        out.append(lo)
        out += sorted(c for c in cuts if lo < c <= hi)
    return out


def _atoms(box: _Box, boxes: list[_Box]):
    """Representative points of ``box`` cut by every boundary of ``boxes``; None if too many."""
    srcs = _split(box.src, [b.src for b in boxes])
    dsts = _split(box.dst, [b.dst for b in boxes])
    ports = _split(box.ports, [b.ports for b in boxes])
    n_tcpudp = sum(p != "icmp" for p in box.protos)
    count = len(srcs) * len(dsts) * (n_tcpudp * len(ports) + ("icmp" in box.protos))
    if count > MAX_ATOMS:
        return None
    return [(s, d, proto, port) for proto in box.protos
            for port in ([None] if proto == "icmp" else ports) for s in srcs for d in dsts]


def _rule_name(fw: Node, k: int) -> str:
    return f"{fw.name} rule {k + 1}"


def _rule_line(rule: Rule) -> str:
    return f" (line {rule.src_ref.line})" if rule.src_ref else ""


def rule_findings(topo: Topology, fw: Node, ix: ReachIndex) -> list[Finding]:
    out = []
    boxes = [_Box.of(r) for r in fw.rules]
    for j, rule in enumerate(fw.rules):
        name = _rule_name(fw, j)
        ref = _ref(topo, rule.src_ref)
        atoms = _atoms(boxes[j], boxes)
        if atoms is None:
            continue
        first: list[int | None] = []
        for a in atoms:
            first.append(next((i for i in range(j) if boxes[i].matches(*a)), None))
        if all(i is not None for i in first):
            covering = sorted(set(first))
            names = ", ".join(f"rule {i + 1}{_rule_line(fw.rules[i])}" for i in covering)
            same = all(fw.rules[i].action == rule.action for i in covering)
            effect = ("it would give the same verdict, so it is dead but harmless" if same else
                      f"its '{rule.action}' is never applied")
            full = "fully covered by" if len(covering) == 1 else "covered together by"
            out.append(Finding("shadowed-rule", "warning",
                               f"{name} can never match: {full} {names}; {effect}",
                               ref, name, {"firewall": fw.name, "rule": j + 1,
                                           "covered_by": [i + 1 for i in covering]}))
            continue
        never = _never_matches(topo, fw, rule, ix)
        if never:
            out.append(Finding("rule-never-matches", "warning", f"{name} can never match: {never}",
                               ref, name, {"firewall": fw.name, "rule": j + 1, "reason": never}))
            continue
        # redundant: for every atom this rule decides, the rules after it (or the default) agree
        redundant = True
        for a, f in zip(atoms, first):
            if f is not None:
                continue
            later = next((fw.rules[i].action for i in range(j + 1, len(fw.rules))
                          if boxes[i].matches(*a)), fw.default_action)
            if later != rule.action:
                redundant = False
                break
        if redundant:
            out.append(Finding("redundant-rule", "info",
                               f"{name} is redundant: without it the later rules or the default "
                               f"({fw.default_action}) give every packet it matches the same "
                               f"verdict ({rule.action})", ref, name,
                               {"firewall": fw.name, "rule": j + 1}))
    return out


def _cache(ix: ReachIndex) -> dict:
    """Per-index lookups that lint needs many times: interfaces per zone, a few addresses of
    every address class of every zone, and one host per source class."""
    got = getattr(ix, "_lint_cache", None)
    if got is not None:
        return got
    topo = ix.topo
    members: dict[str, list] = {}
    for n in topo.nodes.values():
        for i in n.interfaces:
            members.setdefault(i.zone, []).append(i)
    zone_reps: dict[str, dict[int, list]] = {}
    for z in topo.zones.values():
        reps: dict[int, list] = {}
        plain = [z.subnet.network_address] if z.subnet.num_addresses <= 2 else []
        for k, ip in enumerate(z.subnet.hosts()):
            if k >= 3:
                break
            plain.append(ip)
        for ip in [i.ip for i in members.get(z.name, ())] + plain:
            lst = reps.setdefault(ix.addr_class(ip), [])
            if len(lst) < 4:
                lst.append(ip)
        zone_reps[z.name] = reps
    src_hosts: dict[int, Node] = {}
    for h in topo.hosts:
        src_hosts.setdefault(ix.src_class(h), h)
    got = ix._lint_cache = {"members": members, "zone_reps": zone_reps, "src_hosts": src_hosts}
    return got


def _pieces(topo: Topology, ix: ReachIndex, ep: Endpoint, avoid=frozenset()):
    """(zone, a representative address) for every zone the endpoint overlaps, one per address
    class, never one of the addresses in ``avoid``; and the endpoint's networks in no zone."""
    nets = [ipaddress.ip_network("0.0.0.0/0")] if ep.kind == "any" else ep.networks
    cache = _cache(ix)
    reps: dict[int, tuple[str, ipaddress.IPv4Address]] = {}
    outside = []
    for net in nets:
        hit = False
        for z in topo.zones.values():
            if not z.subnet.overlaps(net):
                continue
            hit = True
            if net.supernet_of(z.subnet):
                for cls, ips in cache["zone_reps"][z.name].items():
                    ip = next((ip for ip in ips if ip not in avoid), None)
                    if ip is not None:
                        reps.setdefault(cls, (z.name, ip))
                continue
            lo, hi = int(net.network_address), int(net.broadcast_address)
            candidates = [i.ip for i in cache["members"].get(z.name, ()) if lo <= int(i.ip) <= hi]
            for k, ip in enumerate(net.hosts() if net.num_addresses > 2 else [net.network_address]):
                if k >= len(avoid) + 1:
                    break
                candidates.append(ip)
            for ip in candidates:
                if ip not in avoid:
                    reps.setdefault(ix.addr_class(ip), (z.name, ip))
        if not hit:
            outside.append(net)
    return list(reps.values()), outside


def _side(topo: Topology, fw: Node, zone: str, ip) -> str | None:
    """The zone of ``fw``'s interface that traffic to ``ip`` (in ``zone``) leaves by."""
    for i in fw.interfaces:
        if i.zone == zone:
            return i.zone
    via = next_hop(fw, ip)
    if via is None:
        return None
    for i in fw.interfaces:
        if via in topo.zones[i.zone].subnet:
            return i.zone
    return None


def _never_matches(topo: Topology, fw: Node, rule: Rule, ix: ReachIndex) -> str | None:
    """Why no packet matching the rule's from/to is forwarded by ``fw``; None if some is."""
    fw_ips = frozenset(i.ip for i in fw.interfaces)
    srcs, _ = _pieces(topo, ix, rule.src)
    dsts, _ = _pieces(topo, ix, rule.dst, avoid=fw_ips)
    src_ranges = _ranges(rule.src)
    src_hosts = [c for c, h in _cache(ix)["src_hosts"].items()
                 if any(lo <= int(h.ip) <= hi for lo, hi in src_ranges)]
    src_routers = [r for r in ix.routers
                   if any(lo <= int(i.ip) <= hi for i in r.interfaces for lo, hi in src_ranges)]
    for d_zone, d_ip in dsts:
        d_cls = ix.addr_class(d_ip)
        for s_cls in src_hosts:
            p = ix.path(s_cls, d_cls)
            if not isinstance(p, str) and fw in p:
                return None
        for r in src_routers:
            if r is fw:
                continue
            p = ix.walk(r, d_cls)
            if not isinstance(p, str) and fw in p:
                return None
    # say why, as plainly as the case allows
    if not srcs and not src_hosts and not src_routers:
        return f"its from ({rule.src.value}) holds no address of the twin"
    if not dsts:
        return f"its to ({rule.dst.value}) holds no address of the twin"
    sides = {_side(topo, fw, z, ip) for z, ip in srcs} | {_side(topo, fw, z, ip) for z, ip in dsts}
    if len(sides) == 1 and None not in sides:
        return (f"from ({rule.src.value}) and to ({rule.dst.value}) are both on {fw.name}'s "
                f"{sides.pop()} side, so their traffic never crosses it")
    return (f"traffic from {rule.src.value} to {rule.dst.value} is not routed through {fw.name}")
