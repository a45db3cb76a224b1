"""What a technique refuses or cannot do at run time, checked when a playbook is loaded, so that
``attack validate`` / ``playbook check`` say it before anything is built (issue 15, item 6).

:func:`check_params` judges a step's parameters alone; :func:`check_against_topology` uses the
topology model, the same facts the runtime uses (a node's addresses, links, gateway, routes and
services). Targets from facts are judged at run time only; zones and CIDRs count where only
their size or their link matters. Every error is ``FILE:LINE:COL`` at the key, naming the step.
The limits are the technique modules' own constants, so the two cannot drift apart.
"""
from __future__ import annotations

import ipaddress

from cyberrange.attack.techniques.c2 import MAX_CHECKINS
from cyberrange.attack.techniques.credential import PROTOCOLS
from cyberrange.attack.techniques.exfil import MAX_DOCUMENT
from cyberrange.attack.techniques.fastsend import MAX_SECONDS as _FLOOD_SECONDS
from cyberrange.attack.techniques.mitm import MAX_SECONDS as _POISON_SECONDS
from cyberrange.attack.techniques.rf import JAM_ID
from cyberrange.attack.techniques.rf import param_problem as _jam_problem
from cyberrange.model.topology import Topology
from cyberrange.model.yamlsrc import Doc, did_you_mean

DURATION_LIMIT = {            # technique -> (the largest duration in s, zero allowed)
    "T1557.002": (_POISON_SECONDS, False),
    "T1498": (_FLOOD_SECONDS, True),
    "T1499": (_FLOOD_SECONDS, True),
}
FLOODS = ("T1498", "T1499")
C2_DNS_DEFAULT_DOMAIN = "evil.example"     # services/c2.py --domain default (no domain: given)
# A wrong port is no error: a playbook may try a closed port on purpose (the step then fails).
SERVICE_NEEDS = {             # technique -> the service type a target node must run
    "T1071.001": "c2-http", "T1041": "c2-http",
    "T1071.004": "c2-dns", "T1048": "c2-dns",
    "T0861": "modbus", "T0855": "modbus", "T0831": "modbus",
}
WHAT = {"c2-http": "HTTP C2 listener (service c2-http)", "c2-dns": "DNS C2 server "
        "(service c2-dns)", "modbus": "Modbus server (service modbus)"}


def _node_of_ip(topo: Topology, ip) -> object | None:
    for n in topo.nodes.values():
        if any(i.ip == ip for i in n.interfaces):
            return n
    return None


def _literal_target(topo: Topology, target: str):
    """A target written as a node name or an address: (ip, port or None, node or None); None
    for facts, zones and CIDRs (their hosts are known at run time)."""
    if "#{" in target or "/" in target or target in topo.zones:
        return None
    if target in topo.nodes:
        return topo.nodes[target].ip, None, topo.nodes[target]
    ip, _, port = target.partition(":")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return addr, int(port) if port.isdigit() else None, _node_of_ip(topo, addr)


def _iface_to(node, ip):
    """The actor's interface that a packet to ``ip`` leaves by (on-link, a route, the default
    gateway), and whether it goes through a gateway; (None, None) when no route."""
    for itf in node.interfaces:
        if ip in ipaddress.ip_network(itf.cidr, strict=False):
            return itf, False
    hops = [gw for net, gw in node.routes if ip in net] + ([node.gateway] if node.gateway else [])
    for gw in hops:
        for itf in node.interfaces:
            if gw in ipaddress.ip_network(itf.cidr, strict=False):
                return itf, True
    return None, None


def check_against_topology(doc: Doc, path: tuple, sid: str, technique, params: dict,
                           targets: list, actor: str, topo: Topology) -> None:
    """The run-time constraints of one step that need the topology (``actor``: a node name)."""
    tid = technique.id
    actor_node = topo.nodes.get(actor)
    if tid in DURATION_LIMIT:
        _duration(doc, path, sid, tid, params)
    if tid == "T1557.002" and not any("#{" in str(t) for t in targets):
        _two_victims_on_one_link(doc, path, sid, tid, targets, actor, actor_node, topo)
    if tid in FLOODS and actor_node is not None and len(actor_node.interfaces) > 1:
        _one_interface(doc, path, sid, targets, actor, actor_node, topo)
    if tid in SERVICE_NEEDS:
        _service(doc, path, sid, tid, params, targets, topo)
    if tid == JAM_ID:
        _jam_link(doc, path, sid, params, targets, topo)
    if tid == "replay" and isinstance(params.get("pcap"), str) and params["pcap"] \
            and "#{" not in params["pcap"] and actor_node is not None:
        _replay_map(doc, path, sid, params, targets, actor_node, topo)


def _on_link(topo: Topology, link: str, target: str) -> bool:
    """Whether a literal target (zone, node, address, CIDR) lies on ``link``; facts pass."""
    net = topo.zones[link].subnet
    if "#{" in target or target == link:
        return True
    if target in topo.nodes:
        return any(n.name == target for n, _itf in topo.members(link))
    try:
        other = ipaddress.ip_network(target.partition(":")[0], strict=False)
    except ValueError:
        return False
    return other.version == net.version and other.subnet_of(net)


def _jam_link(doc: Doc, path: tuple, sid: str, params: dict, targets: list,
              topo: Topology) -> None:
    """RF jamming: the link is a zone or link of the topology (``params.link``, or the step's
    one target zone), and every literal target lies on it."""
    link = params.get("link")
    if not isinstance(link, str) or "#{" in link:
        return
    where = path + ("params", "link")
    if not link.strip():
        if len(targets) == 1 and str(targets[0]) in topo.zones:
            return
        raise doc.error(f"step {sid}: say which link to jam: params.link (a zone or link of "
                        f"topology {topo.name}), or one zone as the step's only target",
                        path + ("targets",))
    if link not in topo.zones:
        raise doc.error(f"step {sid}: link '{link}' is not a zone or link of topology "
                        f"{topo.name}{did_you_mean(link, topo.zones)}", where)
    for k, t in enumerate(map(str, targets)):
        if not _on_link(topo, link, t.strip()):
            raise doc.error(f"step {sid}: target {t} is not on link {link} (a jamming step's "
                            f"targets are the link or its members)", path + ("targets", k))


def pcap_addresses(path: str, limit: int) -> list[str]:
    """The IPv4 addresses of a pcap's first ``limit`` IPv4 packets, in order of first
    appearance (each packet's source, then its destination), as the replay maps them; read
    with dpkt, no packet is built. Raises ValueError for a file that is not a pcap."""
    import socket

    import dpkt
    seen: dict[str, None] = {}
    n = 0
    with open(path, "rb") as f:
        try:
            reader = dpkt.pcap.Reader(f)
        except (ValueError, dpkt.dpkt.NeedData) as e:
            raise ValueError(f"not a pcap file ({e})") from None
        link = reader.datalink()
        for _, buf in reader:
            try:
                if link in (dpkt.pcap.DLT_RAW, 101, 12, 14):
                    ip = dpkt.ip.IP(buf)
                elif link == 113:                                   # Linux cooked capture
                    ip = dpkt.sll.SLL(buf).data
                else:
                    ip = dpkt.ethernet.Ethernet(buf).data
            except (dpkt.dpkt.UnpackError, dpkt.dpkt.NeedData):
                continue
            if not isinstance(ip, dpkt.ip.IP):
                continue
            for a in (ip.src, ip.dst):
                seen.setdefault(socket.inet_ntoa(a), None)
            n += 1
            if n >= limit:
                break
    return list(seen)


def _replay_map(doc: Doc, path: tuple, sid: str, params: dict, targets: list, actor_node,
                topo: Topology) -> None:
    """The replay's address map, as run time builds it (``replay.address_map``): with
    ``ip_map: auto`` one target per pcap address besides its first source; with an explicit
    map every pcap address mapped, to the actor or a target. Judged when every target is a
    node or an address (a zone's or a CIDR's host count is known at run time)."""
    limit = params.get("max_packets") if _number(params.get("max_packets")) else 100000
    try:
        seen = pcap_addresses(params["pcap"], int(limit))
    except (OSError, ValueError) as e:
        raise doc.error(f"step {sid}: pcap {params['pcap']}: {e}",
                        _given(doc, path, "pcap")) from None
    if not seen:
        raise doc.error(f"step {sid}: pcap {params['pcap']} has no IPv4 packet to replay",
                        _given(doc, path, "pcap"))
    lits = [_literal_target(topo, str(t)) for t in targets]
    if any(x is None for x in lits):
        return
    target_ips = {str(x[0]) for x in lits}
    ip_map = params.get("ip_map")
    if ip_map in (None, "", "auto", {}):
        first = next(iter(seen))        # the first packet's source
        others = [a for a in seen if a != first]
        if len(others) > len(target_ips):
            raise doc.error(f"step {sid}: the pcap has {len(others)} addresses besides its "
                            f"first source ({', '.join(others[:6])}{'...' if len(others) > 6 else ''})"
                            f" but the step has {len(target_ips)} target(s): ip_map auto needs "
                            f"one target per address (run time refuses it)",
                            path + ("targets",))
        return
    if isinstance(ip_map, dict):
        unmapped = [a for a in seen if a not in {str(k) for k in ip_map}]
        if unmapped:
            raise doc.error(f"step {sid}: pcap addresses not in ip_map: {', '.join(unmapped[:6])} "
                            f"(run time refuses it)", _given(doc, path, "ip_map"))
        allowed = target_ips | {str(i.ip) for i in actor_node.interfaces}
        bad = sorted({str(v) for v in ip_map.values()} - allowed)
        if bad:
            raise doc.error(f"step {sid}: ip_map maps to {', '.join(bad)}, neither the actor's "
                            f"address nor a target of the step (run time refuses it)",
                            _given(doc, path, "ip_map"))


def _duration(doc: Doc, path: tuple, sid: str, tid: str, params: dict) -> None:
    d = params.get("duration")
    if not _number(d):
        return
    top, zero_ok = DURATION_LIMIT[tid]
    if d > top or (d == 0 and not zero_ok):
        span = f"0..{top:g}" if zero_ok else f"more than 0 and at most {top:g}"
        raise doc.error(f"step {sid}: duration {d:g} s: {tid} runs {span} s per step "
                        f"(run time refuses it)", _given(doc, path, "duration"))


def _two_victims_on_one_link(doc: Doc, path: tuple, sid: str, tid: str, targets: list,
                             actor: str, actor_node, topo: Topology) -> None:
    """ARP cache poisoning: exactly two victims (counted as the runner resolves the targets:
    a zone without the actor's own address, a CIDR whole), both on one of the actor's links."""
    own = {i.ip for i in actor_node.interfaces} if actor_node is not None else set()
    ips, known = [], []
    for k, t in enumerate(map(str, targets)):
        if t in topo.zones:
            ips.extend(a for a in topo.zones[t].subnet.hosts() if a not in own)
        elif "/" in t:
            ips.extend(ipaddress.ip_network(t, strict=False).hosts())
        else:
            lt = _literal_target(topo, t)
            if lt is not None:
                ips.append(lt[0])
                known.append((k, lt[0]))
    ips = list(dict.fromkeys(ips))
    if len(ips) != 2:
        raise doc.error(f"step {sid}: {tid} needs exactly two victims (targets), got "
                        f"{len(ips)}", path + ("targets",))
    if actor_node is None or len(known) != len(targets):
        return
    links = []
    for k, ip in known:
        itf, via_gw = _iface_to(actor_node, ip)
        if itf is None or via_gw:
            raise doc.error(f"step {sid}: victim {targets[k]} is not on a link of the actor "
                            f"{actor} (ARP does not cross routers; its links: "
                            f"{', '.join(i.zone for i in actor_node.interfaces)})",
                            path + ("targets", k))
        links.append(itf.zone)
    if len(set(links)) > 1:
        raise doc.error(f"step {sid}: the two victims are on different links of {actor} "
                        f"({' and '.join(links)}); both must be on one", path + ("targets", 1))


def _one_interface(doc: Doc, path: tuple, sid: str, targets: list, actor: str, actor_node,
                   topo: Topology) -> None:
    """Floods: every target behind one interface of the actor (the flood goes out of one)."""
    first = None
    for k, t in enumerate(map(str, targets)):
        if "#{" in t:
            continue
        if t in topo.zones:
            ip = next(topo.zones[t].subnet.hosts(), None)
        elif "/" in t:
            ip = ipaddress.ip_network(t, strict=False).network_address
        else:
            lt = _literal_target(topo, t)
            ip = lt[0] if lt else None
        itf = _iface_to(actor_node, ip)[0] if ip is not None else None
        if itf is None:
            continue
        if first is None:
            first = (itf.devname, t)
        elif itf.devname != first[0]:
            raise doc.error(f"step {sid}: target {t} is behind another interface of {actor} "
                            f"({itf.devname}, zone {itf.zone}) than {first[1]}: a flood goes out "
                            f"of one interface (one step per interface)", path + ("targets", k))


def _service(doc: Doc, path: tuple, sid: str, tid: str, params: dict, targets: list,
             topo: Topology) -> None:
    """A target node runs the service the technique talks to; a DNS C2 domain is the one that
    server answers for."""
    stype = SERVICE_NEEDS[tid]
    for k, t in enumerate(map(str, targets)):
        lt = _literal_target(topo, t)
        node = lt[2] if lt else None
        if node is None:
            continue
        have = [s for s in node.services if s.type == stype]
        if not have:
            services = ", ".join(f"{s.type}/{s.port}" for s in node.services) or "none"
            raise doc.error(f"step {sid}: target {t} ({node.name}) has no {WHAT[stype]}; "
                            f"{tid} needs one (its services: {services})", path + ("targets", k))
        domain = params.get("domain")
        if stype != "c2-dns" or not isinstance(domain, str) or "#{" in domain:
            continue
        d = domain.strip(".").lower()
        zones = [(s.domain or C2_DNS_DEFAULT_DOMAIN).strip(".").lower() for s in have]
        if not any(d == z or d.endswith("." + z) for z in zones):
            where = (path + ("params", "domain") if "domain" in (doc.get(path + ("params",)) or {})
                     else path + ("targets", k))
            raise doc.error(f"step {sid}: domain '{domain}' is not the C2 domain of "
                            f"{node.name}'s DNS server ({', '.join(zones)}): it refuses names "
                            f"outside it", where)


BEACONS = ("T1071.001", "T1071.004")
EXFIL = ("T1041", "T1048")


def _given(doc: Doc, path: tuple, name: str) -> tuple:
    """Where parameter ``name`` is written (params, or timing for rate/duration), else the
    step's technique line (a catalogue default is at fault)."""
    for section in ("timing", "params"):
        if name in (doc.get(path + (section,)) or {}):
            return path + (section, name)
    return path + ("technique",)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_params(doc: Doc, path: tuple, sid: str, technique, params: dict) -> None:
    """What a technique refuses in its parameters alone (no topology needed)."""
    tid = technique.id
    if tid == JAM_ID and (problem := _jam_problem(params)):
        raise doc.error(f"step {sid}: {problem[1]}", _given(doc, path, problem[0]))
    if tid in BEACONS and _number(params.get("count")) and _number(params.get("duration")):
        if params["count"] > MAX_CHECKINS:
            raise doc.error(f"step {sid}: count {params['count']:,}: a beaconing step makes at "
                            f"most {MAX_CHECKINS:,} check-ins", _given(doc, path, "count"))
        if params["count"] == 0 and params["duration"] == 0:
            raise doc.error(f"step {sid}: count 0 means 'until duration', but duration is 0 "
                            f"too: the beacon would never end (give count > 0 or duration > 0)",
                            _given(doc, path, "count"))
    if tid in EXFIL and params.get("data") == "" and _number(params.get("size")):
        if not 0 < params["size"] <= MAX_DOCUMENT:
            raise doc.error(f"step {sid}: size {params['size']:,}: the generated document is "
                            f"1..{MAX_DOCUMENT:,} bytes (or give 'data')",
                            _given(doc, path, "size"))
    if technique.family == "credential" and "protocol" in technique.params:
        protocol = params.get("protocol")
        if isinstance(protocol, str) and "#{" not in protocol and protocol not in PROTOCOLS:
            raise doc.error(f"step {sid}: protocol '{protocol}' is not one of "
                            f"{', '.join(PROTOCOLS)}{did_you_mean(protocol, PROTOCOLS)}",
                            _given(doc, path, "protocol"))
