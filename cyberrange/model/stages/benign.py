"""Benign traffic: the version 1 keys (enabled, interval, seed) plus intensity, per-role and
per-node profiles, checked here against the model; ``cyberrange.traffic`` plans them."""
from __future__ import annotations

from cyberrange.model.benign_kinds import KINDS
from cyberrange.model.stages.base import Context
from cyberrange.model.topology import BenignTraffic, TrafficProfile
from cyberrange.model.yamlsrc import did_you_mean


def benign(ctx: Context) -> None:
    doc, topo = ctx.doc, ctx.topo
    default = ctx.defaults["benign"]
    b = doc.data.get("benign", {})
    bt = BenignTraffic(enabled=b.get("enabled", default["enabled"]),
                       interval_s=float(b.get("interval", default["interval"])),
                       seed=b.get("seed", default["seed"]),
                       intensity=float(b.get("intensity", default["intensity"])))
    for role, items in b.get("roles", {}).items():
        bt.roles[role] = [_profile(ctx, ("benign", "roles", role, k), KINDS)
                          for k in range(len(items))]
    hosts = [n.name for n in topo.hosts]
    for name, items in b.get("nodes", {}).items():
        path = ("benign", "nodes", name)
        if name not in topo.nodes:
            raise doc.error(f"benign traffic for unknown node '{name}'"
                            f"{did_you_mean(name, hosts)}", path, key=True)
        if not topo.nodes[name].is_host:
            raise doc.error(f"benign traffic for {name}: it is a {topo.nodes[name].kind}; "
                            f"only hosts generate benign traffic", path, key=True)
        bt.nodes[name] = [_profile(ctx, path + (k,), KINDS) for k in range(len(items))]
    topo.benign = bt


def _profile(ctx: Context, path, kinds) -> TrafficProfile:
    """One activity: its targets must be hosts that run a service the activity talks to."""
    doc, topo = ctx.doc, ctx.topo
    p = doc.get(path)
    kind = kinds[p["kind"]]
    targets = []
    for k, t in enumerate(p.get("targets", [])):
        tpath = path + ("targets", k)
        node = topo.nodes.get(t)
        if node is None or not node.is_host:
            hosts = [n.name for n in topo.hosts]
            what = f"'{t}' is a {node.kind}, not a host" if node else f"unknown host '{t}'"
            raise doc.error(f"{p['kind']} target: {what}{did_you_mean(t, hosts)}", tpath)
        if not any(s.type in kind.services for s in node.services):
            raise doc.error(f"{p['kind']} target {t} has no {' or '.join(kind.services)} "
                            f"service", tpath)
        targets.append(t)
    params = dict(p.get("params", {}))
    if "jitter" in p:
        params["jitter"] = float(p["jitter"])
    return TrafficProfile(kind=p["kind"], targets=targets,
                          interval_s=float(p.get("interval", kind.interval)), params=params)
