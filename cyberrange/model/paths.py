"""Attack paths: how an attacker on an entry point can get to a crown jewel, service by service.

The attack graph is a ``networkx.DiGraph`` of hosts. The rule, kept deliberately simple:

    every service that host B runs and that a NEW connection from host A may reach
    (routes + ordered firewall rules, the same verdict as ``reach.allowed``) is an edge A -> B.

An edge is labelled with the service used (``login/22``, ``http/8080``) and weighted by how good
a foothold that kind of service gives an attacker: ``login`` 1 (credentials give a shell),
``http`` 2 and ``modbus`` 2 (an exploit or a control write), ``dns`` 3 (the hardest to turn into
code execution). When A reaches several services of B the lightest one is the edge (the others
are kept in the edge's ``services``). Paths are ranked by total weight, then by number of hops,
and the k best simple paths are listed (``networkx.shortest_simple_paths``).

On big models (more than ``EXACT_LIMIT`` host-to-service edges) the graph is built through the
source classes of ``reach.ReachIndex``: a host has a free edge to its class node, and the class
node has the service edges all its members share. This keeps the graph at classes x services
edges instead of hosts x services. It drops only paths that pivot sideways between two hosts of
the same class, which never reach anything the first of them could not reach directly, so the
best paths are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import networkx as nx

from cyberrange.errors import UserError
from cyberrange.model.reach import ReachIndex
from cyberrange.model.topology import Topology
from cyberrange.model.yamlsrc import did_you_mean
from cyberrange.services.registry import DEFAULT_WEIGHT, SERVICE_WEIGHT  # each service's spec

EXACT_LIMIT = 200_000
SRC, DST = "__entry__", "__jewel__"       # the virtual start and end of the path search


@dataclass
class Hop:
    src: str
    dst: str
    service: str            # "login/22"
    proto: str
    port: int
    weight: int


@dataclass
class AttackPath:
    hops: list[Hop]

    @property
    def weight(self) -> int:
        return sum(h.weight for h in self.hops)

    @property
    def nodes(self) -> list[str]:
        return [self.hops[0].src, *(h.dst for h in self.hops)] if self.hops else []

    def text(self) -> str:
        if not self.hops:
            return ""
        out = self.hops[0].src
        for h in self.hops:
            out += f" —{h.service}→ {h.dst}"
        return out

    def to_json(self) -> dict:
        return {"weight": self.weight, "hops": len(self.hops), "path": self.text(),
                "steps": [h.__dict__ for h in self.hops]}


def _label(s) -> str:
    return f"{s.type}/{s.port}"


def attack_graph(topo: Topology, index: ReachIndex | None = None,
                 compress: bool | None = None) -> nx.DiGraph:
    """The attack graph (see the module docstring). Host nodes carry ``kind="host"``; in the
    compressed form class nodes are ``("class", id)`` with ``kind="class"``."""
    ix = index or ReachIndex(topo)
    hosts = topo.hosts
    servers = [h for h in hosts if h.services]
    if compress is None:
        compress = len(hosts) * sum(len(h.services) for h in servers) > EXACT_LIMIT
    g = nx.DiGraph()
    for h in hosts:
        g.add_node(h.name, kind="host", zone=h.interfaces[0].zone, role=h.role)
    dst_cls = {h.name: ix.addr_class(h.ip) for h in servers}

    def best_edge(s_cls, b, a_name=None):
        usable = []
        for s in b.services:
            ok, _ = ix.verdict(s_cls, dst_cls[b.name], s.proto, s.port)
            if ok:
                usable.append((SERVICE_WEIGHT.get(s.type, DEFAULT_WEIGHT), s.port, s))
        if not usable:
            return None
        usable.sort(key=lambda u: (u[0], u[1]))
        w, _, s = usable[0]
        return {"weight": w, "service": _label(s), "proto": s.proto, "port": s.port,
                "services": [_label(u[2]) for u in usable]}

    if not compress:
        for a in hosts:
            a_cls = ix.src_class(a)
            for b in servers:
                if b is a:
                    continue
                e = best_edge(a_cls, b)
                if e:
                    g.add_edge(a.name, b.name, **e)
        return g
    classes: dict[int, list[str]] = {}
    for a in hosts:
        classes.setdefault(ix.src_class(a), []).append(a.name)
    for c, members in classes.items():
        cn = ("class", c)
        g.add_node(cn, kind="class")
        for a in members:
            g.add_edge(a, cn, weight=0, service="", proto="", port=0, services=[])
        for b in servers:
            e = best_edge(c, b)
            if e:
                g.add_edge(cn, b.name, **e)
    return g


def _names(topo: Topology, names, default: list[str], what: str) -> list[str]:
    names = list(names or default)
    if not names:
        raise UserError(f"no {what} given and the topology names none "
                        f"(set {'entry_points' if what == 'entry point' else 'crown_jewels'} "
                        f"or pass --{'from' if what == 'entry point' else 'to'})")
    for n in names:
        if n not in topo.nodes:
            raise UserError(f"unknown {what} '{n}'{did_you_mean(n, topo.nodes)}")
        if topo.nodes[n].is_router:
            raise UserError(f"{what} '{n}' is a {topo.nodes[n].kind}; attack paths run between hosts")
    return names


def attack_paths(topo: Topology, sources=None, targets=None, k: int = 5,
                 graph: nx.DiGraph | None = None, index: ReachIndex | None = None) -> list[AttackPath]:
    """The ``k`` best attack paths from any of ``sources`` (default: the topology's entry points)
    to any of ``targets`` (default: its crown jewels), by total weight then hop count."""
    sources = _names(topo, sources, topo.entry_points, "entry point")
    targets = _names(topo, targets, topo.crown_jewels, "crown jewel")
    g = (graph if graph is not None else attack_graph(topo, index)).copy()
    for s in sources:
        g.add_edge(SRC, s, weight=0)
    for t in targets:
        g.add_edge(t, DST, weight=0)
    found: list[tuple[int, int, list]] = []
    try:
        gen = nx.shortest_simple_paths(g, SRC, DST, weight="weight")
        # collect until the k-th weight is passed, so ties are ordered by hops, not by chance
        for p in islice(gen, 20 * k + 50):
            w = nx.path_weight(g, p, "weight")
            if len(found) >= k and w > found[k - 1][0]:
                break
            hosts = [n for n in p[1:-1] if not isinstance(n, tuple)]
            found.append((w, len(hosts) - 1, p))
            found.sort(key=lambda f: (f[0], f[1]))
    except nx.NetworkXNoPath:
        pass
    out = []
    for w, _, p in found[:k]:
        inner = p[1:-1]
        hops = []
        prev = inner[0]
        for a, b in zip(inner, inner[1:]):
            if isinstance(b, tuple):          # a class node: the hop is the next edge
                continue
            e = g.edges[a, b]
            hops.append(Hop(prev, b, e["service"], e["proto"], e["port"], e["weight"]))
            prev = b
        out.append(AttackPath(hops))
    # an entry point that is itself a crown jewel gives an empty path: drop it
    return [p for p in out if p.hops]
