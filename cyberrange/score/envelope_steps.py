"""Detection envelopes, part 1b: what one drawn step of each family looks like (no twin).

``SPACES`` holds the ranges every drawn parameter comes from; ``DRAWERS`` maps a family to the
function that draws one step of it for one actor on one topology (``Offer``: what the topology's
model offers: actors, login services, C2 listeners, PLCs). A drawer returns ``None`` when the
actor cannot run the family here (no reachable service, too few peers). ``envelope.py`` packs the
steps into drills; this module decides nothing about scheduling.
"""
from __future__ import annotations

import ipaddress
import math
import random
from dataclasses import dataclass, field

__all__ = ["DRAWERS", "REPLAY_PCAP", "SPACES", "Draw", "Offer", "support_files"]

STEP_MAX_S = 80.0         # longest non-beacon step (s)
HOLD_MAX_S = 120.0        # longest Modbus hold (its detector's window is 120 s)
BEACON_MAX_S = 300.0      # longest beacon (s) unless 3 check-ins need longer

#: the ranges draws come from (log: log-uniform); docs/detection-envelopes.md prints this table
SPACES = {
    "scan": {"rate": (0.1, 300, "log"), "ports": (2, 40, "log"), "hosts": (1, 3, "int"),
             "protocol": ("tcp-syn 50 %", "udp 30 %", "tcp-connect 20 %")},
    "sweep": {"prefix": (24, 29, "int"), "rate": (0.5, 200, "log"), "onlink": (0.5, "p")},
    "arp-scan": {"prefix": (24, 28, "int"), "rate": (0.5, 100, "log")},
    "guess": {"guesses": (2, 40, "log"), "pause": (0.05, 5, "log")},
    "spray": {"accounts": (2, 8, "int"), "rounds": (1, 2, "int"), "pause": (0.1, 3, "log"),
              "round_pause": (5, 40, "lin")},
    "udp-flood": {"pps": (30, 5000, "log"), "duration": (1, 8, "lin"), "sources": (1, 16, "int")},
    "syn-flood": {"pps": (30, 5000, "log"), "duration": (1, 8, "lin"), "sources": (1, 16, "int")},
    "http-beacon": {"interval": (2, 120, "log"), "jitter": (0, 0.8, "lin"),
                    "count": (4, 20, "int")},
    "dns-beacon": {"interval": (2, 120, "log"), "jitter": (0, 0.8, "lin"), "count": (3, 15, "int")},
    "dns-exfil": {"rate": (0.2, 20, "log"), "size": (512, 16384, "log"), "chars": (60, 180, "int")},
    "upload": {"size": (4096, 524288, "log"), "chunk": (4096, 32768, "log"),
               "rate": (0.5, 20, "log")},
    "modbus-write": {"writes": (1, 10, "int"), "interval": (0.5, 8, "log")},
    "valid-login": {"commands": (1, 4, "int"), "hops": (0, 2, "int"), "hop_gap": (2, 20, "lin")},
    "modbus-read": {"registers": (1, 60, "log"), "plcs": (1, 2, "int")},
    "modbus-hold": {"writes": (2, 8, "int"), "interval": (0.5, 40, "log")},
    "arp-poison": {"duration": (1, 30, "log"), "interval": (0.3, 10, "log")},
    "banner": {"ports": (2, 24, "log"), "hosts": (1, 3, "int")},
    "replay": {"rate": (0.2, 200, "log"), "loops": (1, 3, "int")},
}

TCP_PORTS = [21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 993, 1433, 2222, 3306, 3389,
             5432, 5900, 5985, 8000, 8080, 8443, 9000, 9200]
UDP_PORTS = [53, 67, 69, 123, 137, 161, 162, 500, 514, 520, 1434, 1900, 5353, 11211]
WORDS = ["root", "admin", "operator", "backup", "svc", "guest", "user", "test", "oracle", "ops"]
PASSWORDS = ["password", "123456", "letmein", "changeme", "Winter2024!", "qwerty", "admin1",
             "P@ssw0rd", "welcome", "Spring2025", "toor", "abc123"]


def _draw(rng: random.Random, lo: float, hi: float, how: str) -> float:
    if how == "log":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if how == "int":
        return rng.randint(int(lo), int(hi))
    return rng.uniform(lo, hi)


def _sig(x: float, digits: int = 3) -> float:
    """``x`` rounded to ``digits`` significant digits (playbooks stay readable)."""
    if x == 0:
        return 0.0
    return round(x, max(0, digits - 1 - math.floor(math.log10(abs(x)))))


# ---------------------------------------------------------------------------- the topology's offer
@dataclass
class Offer:
    """What a topology offers the generator, read from its model (never from a name list)."""
    topo: object
    index: object
    actors: list = field(default_factory=list)     # host names in sensored zones, no services
    logins: list = field(default_factory=list)     # (host, port, protocol, accounts)
    c2_http: list = field(default_factory=list)    # (host, port)
    c2_dns: list = field(default_factory=list)     # (host, domain)
    modbus: list = field(default_factory=list)     # (host, port)
    #: hosts a valid-login draw entered or hopped to: no other valid-login of the drill goes
    #: near them (the pivot check keys by the entered host: two intrusions through one host
    #: would share an alert, and a lone login would pass as detected by another's hop)
    taken: set = field(default_factory=set)
    poisoned: set = field(default_factory=set)     # arp-poison victims (never a hop's host)

    @classmethod
    def of(cls, topo) -> Offer:
        from ..model.reach.index import ReachIndex
        off = cls(topo, ReachIndex(topo))
        sensored = {s.zone for s in topo.sensors.values() if s.zone}
        for n in topo.nodes.values():
            if not n.is_host:
                continue
            for s in n.services:
                if s.type in ("login", "ssh") and s.accounts:
                    off.logins.append((n.name, s.port, "ssh" if s.type == "ssh" else "login",
                                       [(a.user, a.password) for a in s.accounts]))
                elif s.type == "c2-http":
                    off.c2_http.append((n.name, s.port))
                elif s.type == "c2-dns":
                    off.c2_dns.append((n.name, s.domain or "evil.example"))
                elif s.type == "modbus":
                    off.modbus.append((n.name, s.port))
            if n.interfaces[0].zone in sensored and not n.services:
                off.actors.append(n.name)
        return off

    def ip(self, name: str) -> str:
        return str(self.topo.nodes[name].interfaces[0].ip)

    def zone(self, name: str) -> str:
        return self.topo.nodes[name].interfaces[0].zone

    def reach(self, actor: str, target: str, proto: str, port: int | None) -> bool:
        return self.index.check(actor, self.ip(target), proto, port)[0]

    def zone_hosts(self, zone: str, but: str) -> list[str]:
        return [n.name for n in self.topo.nodes.values()
                if n.is_host and n.interfaces[0].zone == zone and n.name != but]


# ---------------------------------------------------------------------------- one step per family
@dataclass
class Draw:
    """One drawn step: what the playbook says (technique, targets, params, timing) and what
    the plan records (family, the drawn parameters, the expected length)."""
    family: str
    technique: str
    targets: list
    params: dict
    recorded: dict
    seconds: float
    timing: dict = field(default_factory=dict)
    #: steps that follow from the host this one enters, part of the same draw (valid-login's
    #: hops): ``(target host, params, seconds after the previous one ends, expected seconds)``
    then: list = field(default_factory=list)


def _scan(rng, off: Offer, actor: str) -> Draw | None:
    peers = off.zone_hosts(off.zone(actor), actor)
    peers = [h for h in peers if h not in off.actors] or peers   # servers first
    if not peers:
        return None
    sp = SPACES["scan"]
    r = rng.random()
    tech, proto = (("T1046", "tcp-syn") if r < 0.5 else ("T1046-udp", "udp") if r < 0.8
                   else ("T1046-connect", "tcp-connect"))
    hosts = rng.sample(peers, min(len(peers), int(_draw(rng, *sp["hosts"]))))
    rate = _sig(_draw(rng, *sp["rate"]))
    ports = round(_draw(rng, *sp["ports"]))
    pool = UDP_PORTS if proto == "udp" else TCP_PORTS
    ports = max(2, min(ports, len(pool), int(STEP_MAX_S * rate / len(hosts))))
    if len(hosts) * ports / rate > STEP_MAX_S:      # even 2 ports are too slow: fewer hosts
        hosts = hosts[:1]
    plist = sorted(rng.sample(pool, ports))
    probes = len(hosts) * ports
    params = {"ports": plist, "rate": rate, "timeout": 1.0}
    if proto == "udp":
        params["retries"] = 0
    return Draw("scan", tech, hosts, params,
                {"rate": rate, "probes": probes, "ports": ports, "hosts": len(hosts),
                 "protocol": proto}, probes / rate + 2.0)


def _cidr_around(rng, off: Offer, zone, hosts: list[str], prefix: int) -> ipaddress.IPv4Network:
    """A drawn sub-CIDR of ``zone`` (prefix ``prefix`` or the zone's) holding one of ``hosts``
    (a sweep of an empty range through a gateway ends ``blocked``, and is not a data point)."""
    prefix = max(prefix, zone.subnet.prefixlen)
    ip = ipaddress.IPv4Address(off.ip(rng.choice(hosts)))
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def _sweep(rng, off: Offer, actor: str) -> Draw | None:
    sp = SPACES["sweep"]
    onlink = rng.random() < sp["onlink"][0]
    zones = [z for z in off.topo.zones.values() if not z.p2p]
    if onlink:
        zone = off.topo.zones[off.zone(actor)]
        hosts = off.zone_hosts(zone.name, actor)
    else:
        reach = {z.name: [h for h in off.zone_hosts(z.name, actor)
                          if off.reach(actor, h, "icmp", None)]
                 for z in zones if z.name != off.zone(actor)}
        reach = {k: v for k, v in reach.items() if v}
        if not reach:
            return None
        zone = off.topo.zones[rng.choice(sorted(reach))]
        hosts = reach[zone.name]
    if not hosts:
        return None
    net = _cidr_around(rng, off, zone, hosts, int(_draw(rng, *sp["prefix"])))
    addrs = max(1, net.num_addresses - 2)
    rate = _sig(max(_draw(rng, *sp["rate"]), addrs / STEP_MAX_S))
    return Draw("sweep", "T1018", [str(net)], {"timeout": 1.0, "rate": rate},
                {"addresses": addrs, "rate": rate, "onlink": onlink}, addrs / rate + 2.0)


def _arp(rng, off: Offer, actor: str) -> Draw | None:
    sp = SPACES["arp-scan"]
    zone = off.topo.zones[off.zone(actor)]
    hosts = off.zone_hosts(zone.name, actor)
    if not hosts:
        return None
    net = _cidr_around(rng, off, zone, hosts, int(_draw(rng, *sp["prefix"])))
    addrs = max(1, net.num_addresses - 2)
    rate = _sig(max(_draw(rng, *sp["rate"]), addrs / STEP_MAX_S))
    return Draw("arp-scan", "T1018-arp", [str(net)], {"rate": rate, "timeout": 1.0, "retries": 0},
                {"rate": rate, "addresses": addrs}, addrs / rate + 2.0)


def _logins_from(off: Offer, actor: str) -> list:
    return [x for x in off.logins if off.reach(actor, x[0], "tcp", x[1])]


def _guess(rng, off: Offer, actor: str) -> Draw | None:
    svc = _logins_from(off, actor)
    if not svc:
        return None
    host, port, proto, _ = rng.choice(svc)
    sp = SPACES["guess"]
    n = round(_draw(rng, *sp["guesses"]))
    pause = _sig(_draw(rng, *sp["pause"]), 2)
    per = pause + (0.6 if proto == "ssh" else 0.3)
    n = max(2, min(n, int(STEP_MAX_S / per)))
    users = rng.sample(WORDS, min(len(WORDS), max(1, round(math.sqrt(n)))))
    pw_n = max(1, math.ceil(n / len(users)))
    pws = rng.sample(PASSWORDS, min(len(PASSWORDS), pw_n))
    guesses = len(users) * len(pws)
    params = {"protocol": proto, "ports": [port], "usernames": users, "passwords": pws,
              "pause": pause, "stop_on_success": False}
    return Draw("guess", "T1110.001", [host], params, {"guesses": guesses, "pause": pause},
                guesses * per + 2.0)


def _spray(rng, off: Offer, actor: str) -> Draw | None:
    by = {}
    for host, port, proto, _ in _logins_from(off, actor):
        by.setdefault((port, proto), []).append(host)
    groups = [(k, v) for k, v in by.items() if len(v) >= 2]
    if not groups:
        return None
    (port, proto), hosts = rng.choice(groups)
    sp = SPACES["spray"]
    accounts = int(_draw(rng, *sp["accounts"]))
    rounds = int(_draw(rng, *sp["rounds"]))
    pause = _sig(_draw(rng, *sp["pause"]), 2)
    round_pause = _sig(_draw(rng, *sp["round_pause"]), 2)
    per = pause + (0.6 if proto == "ssh" else 0.3)
    width = accounts * len(hosts)
    params = {"protocol": proto, "ports": [port], "usernames": rng.sample(WORDS, accounts),
              "passwords": rng.sample(PASSWORDS, rounds), "pause": pause,
              "round_pause": round_pause}
    secs = rounds * width * per + (rounds - 1) * round_pause + 2.0
    return Draw("spray", "T1110.003", sorted(hosts), params,
                {"width": width, "services": len(hosts), "accounts": accounts, "rounds": rounds,
                 "pause": pause, "round_pause": round_pause}, secs)


def _flood(kind: str):
    def draw(rng, off: Offer, actor: str) -> Draw | None:
        proto, tech = ("udp", "T1498") if kind == "udp-flood" else ("tcp", "T1499")
        port = rng.choice([53, 123, 443, 514] if proto == "udp" else [22, 80, 443, 8080])
        peers = off.zone_hosts(off.zone(actor), actor)
        peers = [h for h in peers if h not in off.actors] or peers   # not another step's actor
        if not peers:
            return None
        sp = SPACES[kind]
        pps = int(_draw(rng, *sp["pps"]))
        dur = _sig(_draw(rng, *sp["duration"]), 2)
        sources = int(_draw(rng, *sp["sources"]))
        params = {"count": int(pps * dur), "rate": pps, "duration": dur, "dport": port,
                  "sources": sources, "seed": rng.randint(1, 9999)}
        return Draw(kind, tech, [rng.choice(peers)], params,
                    {"pps": pps, "duration": dur, "sources": sources}, dur + 2.0)
    return draw


def _beacon(kind: str):
    def draw(rng, off: Offer, actor: str) -> Draw | None:
        sp = SPACES[kind]
        interval = _sig(_draw(rng, *sp["interval"]), 2)
        jitter = round(_draw(rng, *sp["jitter"]), 2)
        count = int(_draw(rng, *sp["count"]))
        count = max(3, min(count, int(BEACON_MAX_S / (interval * (1 + jitter / 2)))))
        rec = {"interval": interval, "jitter": jitter, "count": count}
        secs = interval * count + 3.0
        if kind == "http-beacon":
            ok = [x for x in off.c2_http if off.reach(actor, x[0], "tcp", x[1])]
            if not ok:
                return None
            host, port = rng.choice(ok)
            params = {"port": port, "interval": interval, "jitter": jitter, "count": count,
                      "seed": rng.randint(1, 9999)}
            return Draw(kind, "T1071.001", [host], params, rec, secs)
        ok = [x for x in off.c2_dns if off.reach(actor, x[0], "udp", 53)]
        if not ok:
            return None
        host, domain = rng.choice(ok)
        params = {"domain": domain, "interval": interval, "jitter": jitter, "count": count,
                  "seed": rng.randint(1, 9999)}
        return Draw(kind, "T1071.004", [host], params, rec, secs)
    return draw


def _dns_exfil(rng, off: Offer, actor: str) -> Draw | None:
    ok = [x for x in off.c2_dns if off.reach(actor, x[0], "udp", 53)]
    if not ok:
        return None
    host, domain = rng.choice(ok)
    sp = SPACES["dns-exfil"]
    rate = _sig(_draw(rng, *sp["rate"]), 2)
    chars = int(_draw(rng, *sp["chars"]))
    per_query = max(1, chars * 5 // 8)             # base32: 8 characters carry 5 bytes
    size = int(_draw(rng, *sp["size"]))
    size = max(per_query, min(size, int(STEP_MAX_S * rate) * per_query))
    queries = math.ceil(size / per_query) + 1
    params = {"domain": domain, "size": size, "rate": rate, "chars": chars,
              "seed": rng.randint(1, 9999), "jitter": 0.1}
    return Draw("dns-exfil", "T1048", [host], params,
                {"rate": rate, "queries": queries, "chars": chars}, queries / rate + 2.0)


def _upload(rng, off: Offer, actor: str) -> Draw | None:
    ok = [x for x in off.c2_http if off.reach(actor, x[0], "tcp", x[1])]
    if not ok:
        return None
    host, port = rng.choice(ok)
    sp = SPACES["upload"]
    size = int(_draw(rng, *sp["size"]))
    chunk = int(_draw(rng, *sp["chunk"]))
    rate = _sig(_draw(rng, *sp["rate"]), 2)
    chunks = math.ceil(size / chunk)
    params = {"port": port, "size": size, "chunk": chunk, "rate": rate,
              "seed": rng.randint(1, 9999)}
    return Draw("upload", "T1041", [host], params, {"size": size, "chunk": chunk, "rate": rate},
                chunks / rate + 2.0)


def _plcs_from(off: Offer, actor: str) -> list:
    return [x for x in off.modbus if off.reach(actor, x[0], "tcp", x[1])]


def _modbus(kind: str):
    """T0855 (a few writes) or T0831 (a hold: writes repeated to keep a setpoint)."""
    def draw(rng, off: Offer, actor: str) -> Draw | None:
        ok = _plcs_from(off, actor)
        if not ok:
            return None
        host, port = rng.choice(ok)
        sp = SPACES[kind]
        writes = int(_draw(rng, *sp["writes"]))
        interval = _sig(_draw(rng, *sp["interval"]), 2)
        if kind == "modbus-hold":       # a slow hold: fewer writes, never under 2
            writes = max(2, min(writes, int(HOLD_MAX_S / interval) + 1))
        params = {"port": port, "address": rng.randint(0, 4), "value": rng.randint(0, 3000),
                  "repeat": writes, "interval": interval}
        tech = "T0831" if kind == "modbus-hold" else "T0855"
        return Draw(kind, tech, [host], params, {"writes": writes, "interval": interval},
                    (writes - 1) * interval + 3.0)
    return draw


def _modbus_read(rng, off: Offer, actor: str) -> Draw | None:
    """T0861: one read of ``registers`` holding registers from each of 1-2 PLCs."""
    ok = _plcs_from(off, actor)
    if not ok:
        return None
    sp = SPACES["modbus-read"]
    plcs = rng.sample(ok, min(len(ok), int(_draw(rng, *sp["plcs"]))))
    if len({p for _, p in plcs}) > 1:
        plcs = plcs[:1]
    registers = max(1, min(125, round(_draw(rng, *sp["registers"]))))
    params = {"port": plcs[0][1], "address": rng.randint(0, 4), "count": registers}
    return Draw("modbus-read", "T0861", sorted(h for h, _ in plcs), params,
                {"registers": registers, "plcs": len(plcs)}, 3.0 * len(plcs))


def _peers(off: Offer, actor: str) -> list[str]:
    """Hosts on the actor's link that are no step's actor (servers first, then the rest)."""
    peers = off.zone_hosts(off.zone(actor), actor)
    return [h for h in peers if h not in off.actors] or peers


def _arp_poison(rng, off: Offer, actor: str) -> Draw | None:
    """T1557.002 between two victims on the actor's link (attack validate: exactly two, both
    on one link of the actor): hosts that are no step's actor, or one of them and the link's
    gateway (a poisoned actor would relay another step's packets and share its alerts)."""
    peers = [h for h in off.zone_hosts(off.zone(actor), actor)
             if h not in off.actors and h not in off.taken]
    gw = off.topo.nodes[actor].gateway
    if len(peers) < 2 and peers and gw is not None:
        peers.append(str(gw))
    if len(peers) < 2:
        return None
    sp = SPACES["arp-poison"]
    duration = _sig(_draw(rng, *sp["duration"]), 2)
    interval = _sig(_draw(rng, *sp["interval"]), 2)
    rounds = max(1, math.ceil(duration / interval))
    params = {"duration": duration, "interval": interval, "forward": True, "restore": True}
    victims = sorted(rng.sample(peers, 2))
    off.poisoned.update(victims)
    return Draw("arp-poison", "T1557.002", victims, params,
                {"duration": duration, "interval": interval, "rounds": rounds},
                duration + 4.0)


def _banner(rng, off: Offer, actor: str) -> Draw | None:
    """T1046-banner: connect, read the banner, close, port after port (no rate: as fast as
    the services answer). Targets are addresses, so the drawn ``ports`` are the ones tried."""
    peers = _peers(off, actor)
    if not peers:
        return None
    sp = SPACES["banner"]
    hosts = rng.sample(peers, min(len(peers), int(_draw(rng, *sp["hosts"]))))
    ports = max(2, min(round(_draw(rng, *sp["ports"])), 30 // len(hosts)))
    plist = sorted(rng.sample(TCP_PORTS, ports))
    probes = ports * len(hosts)
    params = {"ports": plist, "timeout": 2.0, "connect_timeout": 1.0}
    return Draw("banner", "T1046-banner", [off.ip(h) for h in hosts], params,
                {"ports": probes, "hosts": len(hosts)}, probes * 1.0 + 2.0)


REPLAY_PCAP = "pcaps/worm_scan.pcap"     # relative to the playbook (generate copies it there)
REPLAY_PACKETS = 14                      # the worm's own packets in it: 7 per victim


def support_files(root) -> dict:
    """Files the generated playbooks refer to: path relative to the playbook -> source."""
    from pathlib import Path
    return {REPLAY_PCAP: Path(root) / "attack_playbooks" / REPLAY_PCAP}


def _replay(rng, off: Offer, actor: str) -> Draw | None:
    """A captured worm scan (a ping, a NetBIOS query, 5 SYNs per victim) replayed onto two
    peers of the actor (``ip_map: auto`` needs exactly one target per victim of the pcap)."""
    peers = _peers(off, actor)
    if len(peers) < 2:
        return None
    sp = SPACES["replay"]
    loops = int(_draw(rng, *sp["loops"]))
    packets = REPLAY_PACKETS * loops
    rate = _sig(max(_draw(rng, *sp["rate"]), packets / STEP_MAX_S), 2)
    params = {"pcap": REPLAY_PCAP, "ip_map": "auto", "rate": rate, "loops": loops,
              "sender": "fastsend"}
    return Draw("replay", "replay", sorted(rng.sample(peers, 2)), params,
                {"rate": rate, "loops": loops, "packets": packets}, packets / rate + 2.0)


def _valid_login(rng, off: Offer, actor: str) -> Draw | None:
    """T1021.004: one SSH login with a valid account, then ``hops`` SSH logins from the entered
    host onward (generator 7; 0 hops is the lone quiet login), each to another SSH host the
    entered host reaches, with a valid account of it, ``hop_gap`` seconds after the previous
    one. The hops are steps of their own (actor: the login's ``compromised`` fact) that the
    plan records as ``part_of`` the login: the family's step is the whole intrusion."""
    svc = [x for x in _logins_from(off, actor) if x[2] == "ssh" and x[0] not in off.taken]
    if not svc:                                 # T1021.004 is real SSH
        return None
    host, port, _, accounts = rng.choice(svc)
    user, password = rng.choice(accounts)
    sp = SPACES["valid-login"]
    n = int(_draw(rng, *sp["commands"]))
    cmds = ["id", "hostname", "uname -a", "cat /etc/os-release"][:n]
    params = {"user": user, "password": password, "port": port, "commands": cmds,
              "reuse": False}
    onward = [x for x in off.logins if x[2] == "ssh" and x[0] not in (host, actor)
              and x[0] not in off.taken | off.poisoned and off.reach(host, x[0], "tcp", x[1])]
    if host in off.poisoned:            # the entered host would act: a poisoned actor relays
        onward = []
    hops = min(int(_draw(rng, *sp["hops"])), len(onward))
    then = []
    for h2, p2, _, acc2 in rng.sample(onward, hops):
        u2, pw2 = rng.choice(acc2)
        then.append((h2, {"user": u2, "password": pw2, "port": p2, "commands": ["id", "hostname"],
                          "reuse": False}, round(_draw(rng, *sp["hop_gap"]), 1), 5.0))
    off.taken.update([host, *(t for t, *_ in then)])
    return Draw("valid-login", "T1021.004", [host], params, {"commands": n, "hops": hops},
                5.0 + sum(g + s for _, _, g, s in then), then=then)


DRAWERS = {
    "scan": _scan, "sweep": _sweep, "arp-scan": _arp, "guess": _guess, "spray": _spray,
    "udp-flood": _flood("udp-flood"), "syn-flood": _flood("syn-flood"),
    "http-beacon": _beacon("http-beacon"), "dns-beacon": _beacon("dns-beacon"),
    "dns-exfil": _dns_exfil, "upload": _upload, "modbus-write": _modbus("modbus-write"),
    "valid-login": _valid_login, "modbus-read": _modbus_read, "modbus-hold": _modbus("modbus-hold"),
    "arp-poison": _arp_poison, "banner": _banner, "replay": _replay,
}

