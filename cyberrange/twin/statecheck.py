"""``twin verify`` after each link state change: do the twin's routes and paths follow the model?

For every state asked for (``twin verify --outage LINK[,LINK...]``, or ``--outages`` for every
single outage ``model/outages.single_outages`` lists) on a running twin:

1. the zones and links are set ``down`` live (``twin/ddil.py``: both ends lose carrier);
2. **routes**: with ``routing: ospf``, every router's kernel routes (gatewayed, read from its
   namespace) are compared with the model's routes for that state (``routing.in_state``) until
   they agree or a deadline passes (the OSPF dead interval + 10 s); the time they took is the
   twin's *convergence* (failover) time. With static routes nothing is rerouted: the model
   withdraws the routes across the down link and the kernel can no longer use them (the device
   has no carrier), so only the probes below are compared;
3. **paths**: for every zone pair the model says the state *loses* or *reroutes*
   (``outages.outage``), one probe set from the source zone's first host to the destination
   zone's first host (ICMP and each of its services), each predicted by the reachability index
   of the state (rules included) and compared like ``twin verify``'s reachability probes;
4. the links are set ``up`` again, and with OSPF the routes are awaited back to the all-up
   model before the next state (``restore_s``).

A state agrees when its routes agree (or routing is static) and every probe agrees.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from cyberrange.model import routing
from cyberrange.model.outages import outage, single_outages
from cyberrange.model.reach import ReachIndex
from cyberrange.twin.proberun import run_plan

SETTLE_S = 10.0           # beyond the dead interval: SPF, zebra, the kernel


def states_for(topo, outages: Iterable[str] = (), every: bool = False) -> list[frozenset[str]]:
    """The states to check: each ``--outage`` value (comma-separated names, checked against the
    topology's links and zones with the CLI's error), then every single outage if ``every``."""
    out = [routing.down_names(topo, spec, "--outage") for spec in outages]
    if every:
        out += [frozenset({name}) for name in single_outages(topo)
                if frozenset({name}) not in out]
    return out


def model_routes(model, router: str) -> dict:
    """subnet -> next hop of ``router`` in the model (an ``in_state`` copy or the topology)."""
    return {net: via for net, via in model.nodes[router].routes}


def twin_routes(twin, router: str) -> dict:
    from cyberrange.twin.frr import read_routes
    return {net: gw for net, (gw, _dev) in read_routes(twin.ns[router]).items()}


def route_diff(twin, model) -> list[str]:
    """Every router's difference between the kernel and the model, as short lines."""
    out = []
    for r in sorted(n.name for n in model.routers):
        want, got = model_routes(model, r), twin_routes(twin, r)
        for net in sorted(set(want) | set(got), key=lambda n: (int(n.network_address), n.prefixlen)):
            if want.get(net) != got.get(net):
                out.append(f"{r}: {net} model {want.get(net) or 'no route'}, "
                           f"twin {got.get(net) or 'no route'}")
    return out


def wait_routes(twin, model, deadline: float) -> tuple[float | None, list[str]]:
    """Poll until the twin's routes equal the model's: (seconds it took or None, last diff)."""
    t0 = time.monotonic()
    while True:
        diff = route_diff(twin, model)
        if not diff:
            return round(time.monotonic() - t0, 2), []
        if time.monotonic() > deadline:
            return None, diff
        time.sleep(0.05)


def plan_changed(topo, model, result) -> dict[str, list[dict]]:
    """Probes for the zone pairs a state loses or reroutes: source zone's first host → the
    destination zone's first host, ICMP and each service, predicted on the state's model."""
    first = {}
    for n in sorted(topo.hosts, key=lambda n: n.name):
        if n.interfaces:
            first.setdefault(n.interfaces[0].zone, n)
    index = ReachIndex(model)
    plan: dict[str, list[dict]] = {}
    for change in [*result.lost, *result.rerouted]:
        src, dst = first.get(change.src), first.get(change.dst)
        if src is None or dst is None:
            continue
        kind = "lost" if change in result.lost else "rerouted"
        for proto, port, svc in [("icmp", None, None)] + [(s.proto, s.port, s.type)
                                                          for s in dst.services]:
            ok, why = index.check(src.name, dst.ip, proto, port)
            plan.setdefault(src.name, []).append(
                {"proto": proto, "ip": str(dst.ip), "port": port, "dst": dst.name,
                 "service": svc or "icmp", "predicted": bool(ok), "why": why, "change": kind,
                 "path": change.after.there.text() if change.after.there else change.after.stop})
    return plan


def check_state(twin, control, down: frozenset[str], log=None) -> dict:
    """Set ``down``, compare routes and changed paths with the model, set it back up."""
    topo = twin.topo
    ospf = routing.routing_protocol(topo) == "ospf"
    dead = float(getattr(getattr(topo, "routing", None), "dead", 4) or 4)
    model = routing.in_state(topo, down)
    result = outage(topo, down)
    row: dict = {"down": sorted(down), "routing": "ospf" if ospf else "static",
                 "lost_pairs": len(result.lost), "rerouted_pairs": len(result.rerouted)}
    for name in sorted(down):
        control.set(name, "down", reason="twin verify: outage")
    try:
        if ospf:
            took, diff = wait_routes(twin, model, time.monotonic() + dead + SETTLE_S)
            row.update(converge_s=took, routes_agree=took is not None, route_diff=diff[:20])
        probes = run_plan(twin, plan_changed(topo, model, result))
        row["probes"] = probes
    finally:
        for name in sorted(down):
            control.set(name, "up", reason="twin verify: outage over")
    if ospf:
        back, diff = wait_routes(twin, topo, time.monotonic() + dead + SETTLE_S)
        row.update(restore_s=back, restored=back is not None)
    row["agree"] = (row.get("routes_agree", True) and row.get("restored", True)
                    and all(p["agree"] for p in row["probes"]))
    if log and not row["agree"]:
        log(f"outage {', '.join(row['down'])}: "
            + ("agrees" if row["agree"] else "DISAGREES")
            + (f" (routes in {row['converge_s']} s)" if row.get("converge_s") is not None else ""))
    return row


def verify_states(twin, states: list[frozenset[str]], log=None) -> list[dict]:
    """:func:`check_state` for each state, in order, on a running twin."""
    if not states:
        return []
    from cyberrange.twin.ddil import LinkControl
    control = LinkControl.of(twin)
    return [check_state(twin, control, down, log=log) for down in states]
