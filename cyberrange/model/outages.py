"""Which paths exist under which outages: the static model per link state.

For a set of zones and links that are down (``routing.in_state``) this compares the network
with the all-up one:

* **zone pairs**: for every ordered pair of zones with hosts, the routed path between them
  (the routers and the zones or links the packet crosses, request and reply). A pair is
  *lost* when either direction has no route in the state, *rerouted* when it still has one but
  the path differs. The pair's path is the one of the zone's first host by name (hosts of one
  zone share their routes unless one has routes of its own). Firewall rules do not count here:
  this is about paths.
* **mission threads** (when the topology has ``missions``): the source/destination pairs whose
  flow is allowed with everything up and not in the state, with the reason (the same verdict
  as ``topo reach`` and ``topo check``, rules included).

``outages(topo)`` does this for every single outage (each link, and each zone that joins two
or more routers); ``outages(topo, [{"a", "b"}])`` for given sets. A pair's path can only change
when it crosses a zone that went down (static routes are only withdrawn; OSPF shortest paths
that avoid every down zone keep their cost and their tie-break), so only those pairs are
walked again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cyberrange.errors import UserError
from cyberrange.model.reach import ReachIndex
from cyberrange.model.routing import (
    AddressIndex,
    NoRoute,
    in_state,
    router_hops,
    routing_protocol,
    state_down,
)
from cyberrange.model.topology import Topology


@dataclass(frozen=True)
class Route:
    """A routed path between two zones: the routers crossed and the zones or links by which the
    packet enters each (the first is the source zone)."""
    routers: tuple[str, ...]
    zones: tuple[str, ...]

    @property
    def links(self) -> tuple[str, ...]:
        """The zones and links crossed between routers (what an outage can cut)."""
        return self.zones[1:]

    def link_text(self) -> str:
        if self.links:
            return " › ".join(self.links)
        return f"via {self.routers[0]}" if self.routers else "same zone"

    def text(self) -> str:
        if not self.routers:
            return "same zone"
        out = self.routers[0]
        for r, z in zip(self.routers[1:], self.zones[1:]):
            out += f" ─{z}→ {r}"
        return out

    def to_json(self) -> dict:
        return {"routers": list(self.routers), "links": list(self.links), "text": self.text()}


@dataclass(frozen=True)
class PairPath:
    """Both directions between two zones, or why there is no path."""
    there: Route | None
    back: Route | None
    why: str = ""
    stop: str = ""                            # short: "no route at tac-rtr"

    @property
    def ok(self) -> bool:
        return self.there is not None and self.back is not None

    def crosses(self) -> set[str]:
        out: set[str] = set()
        for r in (self.there, self.back):
            if r is not None:
                out.update(r.zones)
        return out


@dataclass
class PairChange:
    src: str                                  # zone
    dst: str
    before: PairPath
    after: PairPath

    def to_json(self) -> dict:
        return {"from": self.src, "to": self.dst,
                "before": self.before.there.to_json() if self.before.there else None,
                "after": self.after.there.to_json() if self.after.there else None,
                "after_back": self.after.back.to_json() if self.after.back else None,
                "why": self.after.why or None, "stop": self.after.stop or None}


@dataclass
class MissionLoss:
    mission: str
    pairs: list[tuple[str, str]]              # (source node, destination) lost in the state
    of: int                                   # pairs allowed with everything up
    why: str                                  # the first lost pair's reason

    def to_json(self) -> dict:
        return {"mission": self.mission, "lost": len(self.pairs), "of": self.of,
                "pairs": [list(p) for p in self.pairs], "why": self.why}


@dataclass
class Outage:
    """What one link state breaks and moves."""
    down: tuple[str, ...]
    lost: list[PairChange] = field(default_factory=list)
    rerouted: list[PairChange] = field(default_factory=list)
    missions: list[MissionLoss] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"down": list(self.down), "lost": [c.to_json() for c in self.lost],
                "rerouted": [c.to_json() for c in self.rerouted],
                "missions_lost": [m.to_json() for m in self.missions]}


def single_outages(topo: Topology) -> list[str]:
    """Links (in file order), then zones that join two or more routers: the outages that can
    cut or move a path between two other zones. (A zone with one router only cuts itself off.)"""
    routers_on: dict[str, int] = {}
    for r in topo.routers:
        for i in r.interfaces:
            routers_on[i.zone] = routers_on.get(i.zone, 0) + 1
    transit = [z for z in topo.zones if z not in topo.links and routers_on.get(z, 0) >= 2]
    return [*topo.links, *transit]


def _representatives(topo: Topology) -> dict[str, object]:
    """Each zone with hosts -> its first host by name."""
    out: dict[str, object] = {}
    for h in sorted(topo.hosts, key=lambda n: n.name):
        out.setdefault(h.interfaces[0].zone, h)
    return dict(sorted(out.items()))


class _Walker:
    """Routed paths in one topology (one link state), each router's walk kept."""

    def __init__(self, topo: Topology):
        self.topo, self.index, self.memo = topo, AddressIndex(topo), {}

    def route(self, src, dst_ip) -> Route:
        hops = router_hops(self.topo, src, dst_ip, self.index, self.memo)
        return Route(tuple(n.name for n, _ in hops), tuple(z for _, z in hops))


def _stop(e: NoRoute) -> str:
    return f"{e.at} is down" if "which is down" in str(e) else f"no route at {e.at}"


def pair_path(topo: Topology, src, dst, walker: _Walker | None = None) -> PairPath:
    """The path from host ``src`` to host ``dst`` and back, in ``topo``'s link state."""
    w = walker or _Walker(topo)
    try:
        there = w.route(src, dst.ip)
    except NoRoute as e:
        return PairPath(None, None, str(e), _stop(e))
    try:
        back = w.route(dst, src.ip)
    except NoRoute as e:
        return PairPath(there, None, f"no route back: {e}", "back: " + _stop(e))
    return PairPath(there, back)


def zone_paths(topo: Topology, pairs=None) -> dict[tuple[str, str], PairPath]:
    """The path between every ordered pair of zones with hosts (or the given ``pairs``)."""
    reps = _representatives(topo)
    if pairs is None:
        pairs = [(a, b) for a in reps for b in reps if a != b]
    w = _Walker(topo)
    return {(a, b): pair_path(topo, topo.nodes[reps[a].name], topo.nodes[reps[b].name], w)
            for a, b in pairs}


def _mission_verdicts(topo: Topology, ix: ReachIndex) -> dict[str, dict]:
    """Every mission pair's verdict. Hosts on a down zone reach nobody, not even each other
    (the index answers "same zone" before it looks at routes, so that is decided here)."""
    down = state_down(topo)
    out: dict[str, dict] = {}
    for m in topo.missions.values():
        got = out[m.name] = {}
        for s in m.src:
            for d in m.dst:
                if s == d:
                    continue
                cut = [z for z in (_zone_of(topo, s), _zone_of(topo, d)) if z in down]
                if cut:
                    got[(s, d)] = (False, f"no route: {cut[0]} is down")
                    continue
                try:
                    got[(s, d)] = ix.check(s, topo.nodes[d].ip if d in topo.nodes else d,
                                           m.proto, m.port)
                except (UserError, KeyError) as e:
                    got[(s, d)] = (False, f"cannot be checked: {e}")
    return out


def _zone_of(topo: Topology, name: str) -> str | None:
    n = topo.nodes.get(name)
    return n.interfaces[0].zone if n is not None and n.is_host and n.interfaces else None


def outage(topo: Topology, down, base: dict | None = None,
           base_missions: dict | None = None) -> Outage:
    """What the state with ``down`` (zone and link names) breaks and moves, against all up."""
    down = frozenset(down)
    base = base if base is not None else zone_paths(topo)
    if base_missions is None:
        base_missions = _mission_verdicts(topo, ReachIndex(topo))
    state = in_state(topo, down)
    touched = [p for p, path in base.items()
               if not path.ok or path.crosses() & down or p[0] in down or p[1] in down]
    now = zone_paths(state, touched)
    result = Outage(tuple(sorted(down)))
    for (a, b) in touched:
        before, after = base[(a, b)], now[(a, b)]
        if before.ok and not after.ok:
            result.lost.append(PairChange(a, b, before, after))
        elif before.ok and after != before:
            result.rerouted.append(PairChange(a, b, before, after))
    if topo.missions:
        verdicts = _mission_verdicts(state, ReachIndex(state))
        for name, pairs in base_missions.items():
            lost = [p for p, (ok, _) in pairs.items() if ok and not verdicts[name][p][0]]
            if lost:
                result.missions.append(MissionLoss(
                    name, lost, sum(ok for ok, _ in pairs.values()), verdicts[name][lost[0]][1]))
    return result


def outages(topo: Topology, states=None) -> list[Outage]:
    """One :class:`Outage` per state: each set of names in ``states``, or (default) each
    single outage of :func:`single_outages`."""
    states = [frozenset(s) for s in states] if states is not None else \
        [frozenset([n]) for n in single_outages(topo)]
    base = zone_paths(topo)
    base_missions = _mission_verdicts(topo, ReachIndex(topo))
    return [outage(topo, s, base, base_missions) for s in states]


def report_json(topo: Topology, results: list[Outage]) -> dict:
    return {"topology": topo.name, "protocol": routing_protocol(topo),
            "failover": routing_protocol(topo) == "ospf",
            "outages": [o.to_json() for o in results]}
