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

# technique -> the parameters that are its waits for answers (seconds): answer waits after the
# probes, and connect timeouts (a TCP handshake is one round trip; kept clear of the kernel's
# SYN retransmissions, ``SYN_RTO_S``, so the count of SYNs sent stays what the technique expects)
WAITS = {"T1018": ("timeout",), "T1046": ("timeout",), "T1046-udp": ("timeout",),
         "T1071.004": ("timeout",), "T1048": ("timeout",),
         "T1046-connect": ("timeout",), "T1046-banner": ("connect_timeout",),
         "T1110.001": ("connect_timeout",), "T1110.003": ("connect_timeout",),
         "T1021.004": ("connect_timeout",)}
CONNECT = {"T1046-connect": "timeout", "T1046-banner": "connect_timeout",
           "T1110.001": "connect_timeout", "T1110.003": "connect_timeout",
           "T1021.004": "connect_timeout"}
SYN_RTO_S = (1.0, 3.0, 7.0, 15.0)   # when Linux sends SYN retransmissions (initial RTO 1 s)
RTO_CLEAR_S = 0.3       # a connect timeout this close to one is moved past it
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


def _clear_of_rto(need: float) -> float:
    for rto in SYN_RTO_S:
        if abs(need - rto) < RTO_CLEAR_S:
            return round(rto + RTO_CLEAR_S + 0.2, 1)
    return need


def stretch_waits(technique: str, params: dict, given, topo, actor: str,
                  targets: list[str]) -> tuple[dict, str | None]:
    """``params`` with the technique's waits raised to the path when the playbook did not give
    them, and a one-line note saying so (None when nothing changed)."""
    names = [n for n in WAITS.get(technique, ()) if n not in given
             and isinstance(params.get(n), (int, float)) and not isinstance(params.get(n), bool)]
    if not names or actor not in topo.nodes:
        return params, None
    rtt, where = round_trip_s(topo, actor, targets)
    if rtt <= 0:
        return params, None
    out, notes = dict(params), []
    for name in names:
        need = round(MARGIN * rtt + SLACK_S, 1)
        if CONNECT.get(technique) == name:
            need = _clear_of_rto(need)
        if need <= float(params[name]):
            continue
        out[name] = need
        notes.append(f"params.{name} {params[name]:g} s (the default) raised to {need:g} s")
    if not notes:
        return params, None
    return out, (f"{'; '.join(notes)}: the model's round trip from {actor} is {rtt:.2f} s "
                 f"(slowest hop {where})")
