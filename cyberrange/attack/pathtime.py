"""How long an answer takes over the twin's links, and the answer waits a step gets on slow paths.

A ping sweep or a SYN scan waits ``timeout`` (1 s by default) for answers after its last probe.
Over a geostationary SATCOM hop (550-600 ms one way) the answers come back after that wait:
the step found nothing and, its probes having gone through a gateway, ended ``blocked`` ("a
firewall on the path drops them") though every firewall let them through. Real scanners adapt
their waits to the round trip they measure; the runner does the same from the model, for the
waits a playbook did **not** set: each is raised to ``MARGIN`` x the slowest round trip to the
step's targets plus ``SLACK_S`` when that is longer. A wait the playbook gives is kept as
written (a short timeout on purpose is the author's choice). The round trip is the sum, over
the zones and links a packet crosses on its routed path (``model.routing.router_hops``), of
each profile's delay and jitter and the serialisation of a ``PROBE_BYTES`` frame at its
bandwidth, both ways.
"""
from __future__ import annotations

import ipaddress

from cyberrange.model.routing import AddressIndex, NoRoute, router_hops

# technique -> the parameter that is its wait for answers (seconds)
WAITS = {"T1018": "timeout", "T1046": "timeout", "T1046-udp": "timeout",
         "T1071.004": "timeout", "T1048": "timeout"}
MARGIN = 1.5            # x the model's round trip: jitter draws and queueing on top of the mean
SLACK_S = 0.3           # processing on the way (the relay, the answering host, the agent)
PROBE_BYTES = 100       # a probe or an answer: an echo, a SYN, a DNS query with its name
MAX_ZONES = 64          # destination zones looked at per step (a /16 target is one zone)


def _one_way_s(zone) -> float:
    p = zone.profile
    if p is None:
        return 0.0
    serial = PROBE_BYTES * 8 / (p.bandwidth_mbit * 1e6) if p.bandwidth_mbit else 0.0
    return (p.delay_ms + p.jitter_ms) / 1000.0 + serial


def round_trip_s(topo, actor: str, targets: list[str]) -> tuple[float, str | None]:
    """The slowest model round trip from ``actor`` to any of ``targets`` (addresses, with or
    without ``:port``), and the slowest zone or link on that path (None when nothing is slow
    or no target is routed)."""
    index = AddressIndex(topo)
    src = topo.nodes[actor]
    worst, where, seen = 0.0, None, set()
    for t in targets:
        try:
            ip = ipaddress.ip_address(str(t).rsplit(":", 1)[0] if str(t).count(":") == 1
                                      else str(t))
        except ValueError:
            continue
        dst = index.zone(ip)
        if dst is None or dst.name in seen:
            continue
        seen.add(dst.name)
        if len(seen) > MAX_ZONES:
            break
        try:
            hops = router_hops(topo, src, ip, index)
        except NoRoute:
            continue
        zones = [topo.zones[z] for _, z in hops if z in topo.zones] + [dst]
        if not hops:
            zones = [dst]
        rtt = 2 * sum(_one_way_s(z) for z in zones)
        if rtt > worst:
            slowest = max(zones, key=_one_way_s)
            worst, where = rtt, slowest.name
    return worst, where


def stretch_waits(technique: str, params: dict, given, topo, actor: str,
                  targets: list[str]) -> tuple[dict, str | None]:
    """``params`` with the technique's answer wait raised to the path when the playbook did
    not give it, and a one-line note saying so (None when nothing changed)."""
    name = WAITS.get(technique)
    if name is None or name in given or not isinstance(params.get(name), (int, float)):
        return params, None
    if actor not in topo.nodes:
        return params, None
    rtt, where = round_trip_s(topo, actor, targets)
    need = round(MARGIN * rtt + SLACK_S, 1)
    if need <= float(params[name]):
        return params, None
    note = (f"params.{name} {params[name]:g} s (the default) raised to {need:g} s: the model's "
            f"round trip from {actor} is {rtt:.2f} s (slowest hop {where})")
    return {**params, name: need}, note
