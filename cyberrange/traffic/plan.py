"""Benign traffic planning (no root): which host does what, to whom, how often.

``plan_benign(topology)`` resolves every host's activities (a per-node override, else the
topology's list for the host's role, else the built-in role defaults of ``roles.yaml``), picks
their servers from the model and keeps only flows the firewalls allow (``ReachIndex``), and
returns one JSON-able plan per host. ``schedule(plan)`` turns a plan into the exact sequence of
requests the generator will make: the same plan (same seed) gives the same times, the same
servers and the same request details, in tests as in the twin.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from cyberrange.model.topology import Node, Topology, TrafficProfile
from cyberrange.model.benign_kinds import KINDS, REFERENCE_INTERVAL

ROLES_FILE = Path(__file__).parent / "roles.yaml"
NO_TARGET_ROLES = ("external", "foothold")     # never chosen as servers from the model
DNS_NAMES = 16                                 # names one host looks up (a sample, at scale)


@cache
def _role_defaults_raw() -> dict[str, list[dict]]:
    from cyberrange.model.yamlsrc import load_yaml
    return load_yaml(ROLES_FILE).data or {}


def role_defaults() -> dict[str, list[TrafficProfile]]:
    """The built-in profiles per role (fresh objects: callers may change them)."""
    return {role: [TrafficProfile(kind=p["kind"], interval_s=float(p["interval"]),
                                  params=dict(p.get("params", {})))
                   for p in items or []]
            for role, items in _role_defaults_raw().items()}


def profiles_for(topo: Topology, host: Node) -> tuple[list[TrafficProfile], str]:
    """The host's activities and where they came from ("node", "role" or "default").
    Built-in defaults are scaled by ``benign.interval / 2.0``; ``intensity`` is applied later."""
    b = topo.benign
    if host.name in b.nodes:
        return list(b.nodes[host.name]), "node"
    if host.role in b.roles:
        return list(b.roles[host.role]), "role"
    scale = (b.interval_s or REFERENCE_INTERVAL) / REFERENCE_INTERVAL
    out = role_defaults().get(host.role, [])
    for p in out:
        p.interval_s *= scale
    return out, "default"


def _seed(base: int, *parts) -> random.Random:
    """A generator seeded from text: stable across processes and Python versions."""
    return random.Random("/".join(str(p) for p in (base, *parts)))


class _Servers:
    """Candidate servers per kind, computed once per topology."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.by_kind: dict[str, list] = {}

    def candidates(self, kind: str) -> list[tuple[Node, object]]:
        got = self.by_kind.get(kind)
        if got is None:
            k = KINDS[kind]
            got = self.by_kind[kind] = [
                (n, s) for n in sorted(self.topo.hosts, key=lambda n: n.name)
                if n.role not in NO_TARGET_ROLES and (not k.target_roles or n.role in k.target_roles)
                for s in n.services
                if s.type in k.services and (s.accounts or not k.needs_accounts)]
        return got

    def of(self, node: Node, kind: str) -> list:
        k = KINDS[kind]
        return [(node, s) for s in node.services
                if s.type in k.services and (s.accounts or not k.needs_accounts)]


def plan_benign(topo: Topology, seed: int | None = None,
                intensity: float | None = None) -> dict[str, dict]:
    """Per host name, the JSON plan its generator gets. Hosts with nothing to do are left out
    (``explain_benign`` keeps them, with what was skipped and why)."""
    return {h: p for h, p in explain_benign(topo, seed, intensity).items() if p["activities"]}


def explain_benign(topo: Topology, seed: int | None = None,
                   intensity: float | None = None) -> dict[str, dict]:
    """Per host name with any profile: its plan, hosts with nothing to do included.

    A plan: ``{"host", "seed", "activities": [{"kind", "interval", "periodic", "jitter",
    "targets": [{"node", "ip", "port", "proto", "type", ...}], "params"}], "skipped": [...]}``.
    ``skipped`` lists activities or given targets left out, and why (no server, denied)."""
    from cyberrange.model.reach import ReachIndex
    b = topo.benign
    seed = b.seed if seed is None else seed
    intensity = b.intensity if intensity is None else intensity
    if intensity <= 0:
        return {}
    reach = ReachIndex(topo)
    servers = _Servers(topo)
    names = sorted(f"{n.name}.{topo.domain}" for n in topo.nodes.values())
    plans: dict[str, dict] = {}
    for host in sorted(topo.hosts, key=lambda n: n.name):
        profiles, source = profiles_for(topo, host)
        rng = _seed(seed, "plan", host.name)
        activities, skipped = [], []
        for k, prof in enumerate(profiles):
            kind = KINDS[prof.kind]
            if prof.targets:
                pool = [c for t in prof.targets for c in servers.of(topo.nodes[t], prof.kind)]
            else:
                pool = servers.candidates(prof.kind)
            targets = []
            for node, svc in pool:
                if node.name == host.name:
                    continue
                ok, why = reach.check(host.name, str(node.ip), svc.proto, svc.port)
                if not ok:
                    if prof.targets:
                        skipped.append({"kind": prof.kind, "target": node.name,
                                        "port": svc.port, "why": why})
                    continue
                targets.append(_target(node, svc, rng, names))
            if not targets:
                skipped.append({"kind": prof.kind, "why": "no reachable server"
                                + (" among the given targets" if prof.targets else
                                   f" with a {'/'.join(kind.services)} service")})
                continue
            if kind.pick == "one" and len(targets) > 1:
                targets = [rng.choice(targets)]
            params = dict(prof.params)
            jitter = float(params.pop("jitter", kind.jitter))
            activities.append({"kind": prof.kind, "interval": prof.interval_s / intensity,
                               "periodic": kind.periodic, "jitter": jitter,
                               "targets": targets, "params": params})
        if activities or skipped:
            plans[host.name] = {"host": host.name, "seed": seed, "source": source,
                                "activities": activities, "skipped": skipped}
    return plans


def _target(node: Node, svc, rng: random.Random, names: list[str]) -> dict:
    t = {"node": node.name, "ip": str(node.ip), "port": svc.port, "proto": svc.proto,
         "type": svc.type}
    if svc.accounts:
        acc = rng.choice(svc.accounts)          # one user per host and server, as in life
        t.update(user=acc.user, password=acc.password)
    if svc.type == "dns":
        t["names"] = names if len(names) <= DNS_NAMES else sorted(rng.sample(names, DNS_NAMES))
    return t


# -- the schedule ------------------------------------------------------------------------------

def activity_events(plan: dict, k: int, until: float | None = None) -> Iterator[tuple]:
    """``(offset_s, target, detail_seed)`` of activity ``k`` of ``plan``, in time order.

    The first occurrence falls uniformly within the first interval (hosts do not start in
    lockstep); then periodic kinds repeat every ``interval * (1 +- jitter)`` and the others
    after exponentially distributed pauses (Poisson arrivals). ``detail_seed`` seeds the
    request's own choices (URL path, name looked up, message text), so a failed request cannot
    shift the rest of the schedule."""
    act = plan["activities"][k]
    rng = _seed(plan["seed"], "schedule", plan["host"], k, act["kind"])
    interval, targets = act["interval"], act["targets"]
    t = rng.uniform(0, interval)
    while until is None or t < until:
        target = targets[0] if len(targets) == 1 else rng.choice(targets)
        yield t, target, rng.getrandbits(32)
        if act["periodic"]:
            j = act["jitter"]
            t += interval * (1 + rng.uniform(-j, j)) if j else interval
        else:
            t += rng.expovariate(1.0 / interval)


def schedule(plan: dict, until: float) -> list[tuple]:
    """Every request of one host in the first ``until`` seconds:
    ``[(offset_s, kind, target node, port, detail_seed)]`` in time order."""
    def stream(k: int, kind: str):
        for t, tg, d in activity_events(plan, k, until):
            yield t, kind, tg["node"], tg["port"], d
    return list(heapq.merge(*(stream(k, act["kind"])
                              for k, act in enumerate(plan["activities"]))))
