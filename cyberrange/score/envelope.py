"""Detection envelopes, part 1: parameter spaces and scenario draws (no twin, no ground truth).

A *scenario* is one drill: a topology, a benign seed and intensity, and a version 2 playbook of
attack steps whose main parameters are drawn from wide ranges (``SPACES``). The draws depend
only on the scenario seed: the same seed gives the same playbook, byte for byte. Seeds of the
TUNING split and of the EVALUATION split come from disjoint ranges (``split_seeds``); nobody
tunes a detector on the evaluation split (docs/detection-envelopes.md).

Packing many points into one drill without letting them contaminate each other:

* every step runs from its **own actor** (a host in a sensored zone that is no step's target):
  every detector keys its windows by source (scans, sweeps, guessing, floods, beacons, upload
  volume, learned episodes), and the slow rules' 10-minute windows could never be waited out
  inside one drill. An actor does at most one step of the scan class (scan, sweep, ARP scan)
  and at most one other step, after a drawn quiet period longer than every short window
  (30 s spray window + 5 s);
* steps are placed on an absolute schedule (``parallel: true`` + ``timing.at``), at most
  ``LANES`` non-beacon actors at a time; beacons run alongside from their own actors;
* the drawn parameters of every step are written beside the playbook (``plan``), never into the
  packets: detectors cannot see them. Scoring joins them with the ledger in
  ``envelope_eval`` (this package is the only place where ground truth is read).
"""
from __future__ import annotations

import ipaddress
import math
import random
from dataclasses import dataclass, field

import yaml

__all__ = ["FAMILIES", "SPACES", "SPLITS", "Scenario", "draw_scenario", "split_seeds"]

#: seed ranges of the two splits: disjoint by construction (tests check it)
SPLITS = {"tuning": 1000, "eval": 9000}
SPLIT_SIZE = 1000
LANES = 4                 # non-beacon actors running at the same time
DRILL_S = 320.0           # target length of the attack phase of one drill (s)
SECOND_STEP = 0.6         # chance that an actor runs a second step after a quiet period
GENERATOR = 2             # in every plan: bump when a change alters the draws of a seed
STEP_MAX_S = 80.0         # longest non-beacon step (s)
BEACON_MAX_S = 260.0      # longest beacon (s)
QUIET = (35.0, 90.0)      # quiet period between an actor's two steps (s), > every short window
START_GAP = (3.0, 12.0)   # drawn pause before a lane starts in its slot (s)


def split_seeds(split: str, n: int) -> list[int]:
    """The scenario seeds of ``split`` ('tuning' or 'eval'): ``n`` of them, never shared."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected {', '.join(SPLITS)})")
    if not 0 < n <= SPLIT_SIZE:
        raise ValueError(f"a split holds 1..{SPLIT_SIZE} scenarios, not {n}")
    return [SPLITS[split] + i for i in range(n)]


# ---------------------------------------------------------------------------- parameter spaces
@dataclass(frozen=True)
class Family:
    """One kind of step. ``main``: the parameter recall is plotted against; ``harder``: which
    end of it is harder to detect ('low' or 'high'); ``params``: every recorded parameter."""
    name: str
    techniques: tuple
    main: str
    harder: str
    unit: str
    params: tuple
    scan_class: bool = False
    beacon: bool = False
    also: tuple = ()          # more envelope axes: (parameter, harder end, unit)


FAMILIES = {f.name: f for f in [
    Family("scan", ("T1046", "T1046-udp", "T1046-connect"), "rate", "low", "probes/s",
           ("rate", "probes", "ports", "hosts", "protocol"), scan_class=True,
           also=(("probes", "low", "probes"),)),
    Family("sweep", ("T1018",), "addresses", "low", "addresses",
           ("addresses", "rate", "onlink"), scan_class=True,
           also=(("rate", "low", "addresses/s"),)),
    Family("arp-scan", ("T1018-arp",), "rate", "low", "requests/s",
           ("rate", "addresses"), scan_class=True, also=(("addresses", "low", "addresses"),)),
    Family("guess", ("T1110.001",), "guesses", "low", "guesses", ("guesses", "pause"),
           also=(("pause", "high", "s between guesses"),)),
    Family("spray", ("T1110.003",), "width", "low", "attempts/round",
           ("width", "services", "accounts", "rounds", "pause", "round_pause")),
    Family("udp-flood", ("T1498",), "pps", "low", "packets/s", ("pps", "duration", "sources"),
           also=(("duration", "low", "s"),)),
    Family("syn-flood", ("T1499",), "pps", "low", "packets/s", ("pps", "duration", "sources"),
           also=(("duration", "low", "s"),)),
    Family("http-beacon", ("T1071.001",), "interval", "high", "s",
           ("interval", "jitter", "count"), beacon=True,
           also=(("jitter", "high", "(fraction)"), ("count", "low", "check-ins"))),
    Family("dns-beacon", ("T1071.004",), "interval", "high", "s",
           ("interval", "jitter", "count"), beacon=True,
           also=(("jitter", "high", "(fraction)"), ("count", "low", "polls"))),
    Family("dns-exfil", ("T1048",), "rate", "low", "queries/s", ("rate", "queries", "chars"),
           also=(("queries", "low", "queries"),)),
    Family("upload", ("T1041",), "size", "low", "bytes", ("size", "chunk", "rate")),
    Family("modbus-write", ("T0855",), "writes", "low", "writes", ("writes", "interval")),
    Family("valid-login", ("T1021.004",), "commands", "low", "commands", ("commands",)),
]}

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
    "http-beacon": {"interval": (2, 40, "log"), "jitter": (0, 0.8, "lin"), "count": (4, 20, "int")},
    "dns-beacon": {"interval": (2, 60, "log"), "jitter": (0, 0.8, "lin"), "count": (3, 15, "int")},
    "dns-exfil": {"rate": (0.2, 20, "log"), "size": (512, 16384, "log"), "chars": (60, 180, "int")},
    "upload": {"size": (4096, 524288, "log"), "chunk": (4096, 32768, "log"),
               "rate": (0.5, 20, "log")},
    "modbus-write": {"writes": (1, 10, "int"), "interval": (0.5, 8, "log")},
    "valid-login": {"commands": (1, 4, "int")},
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


def _modbus(rng, off: Offer, actor: str) -> Draw | None:
    ok = [x for x in off.modbus if off.reach(actor, x[0], "tcp", x[1])]
    if not ok:
        return None
    host, port = rng.choice(ok)
    sp = SPACES["modbus-write"]
    writes = int(_draw(rng, *sp["writes"]))
    interval = _sig(_draw(rng, *sp["interval"]), 2)
    params = {"port": port, "address": rng.randint(0, 4), "value": rng.randint(0, 3000),
              "repeat": writes, "interval": interval}
    return Draw("modbus-write", "T0855", [host], params, {"writes": writes, "interval": interval},
                writes * interval + 2.0)


def _valid_login(rng, off: Offer, actor: str) -> Draw | None:
    svc = [x for x in _logins_from(off, actor) if x[2] == "ssh"]     # T1021.004 is real SSH
    if not svc:
        return None
    host, port, _, accounts = rng.choice(svc)
    user, password = rng.choice(accounts)
    n = int(_draw(rng, *SPACES["valid-login"]["commands"]))
    cmds = ["id", "hostname", "uname -a", "cat /etc/os-release"][:n]
    params = {"user": user, "password": password, "port": port, "commands": cmds,
              "reuse": False}
    return Draw("valid-login", "T1021.004", [host], params, {"commands": n}, 5.0)


DRAWERS = {
    "scan": _scan, "sweep": _sweep, "arp-scan": _arp, "guess": _guess, "spray": _spray,
    "udp-flood": _flood("udp-flood"), "syn-flood": _flood("syn-flood"),
    "http-beacon": _beacon("http-beacon"), "dns-beacon": _beacon("dns-beacon"),
    "dns-exfil": _dns_exfil, "upload": _upload, "modbus-write": _modbus,
    "valid-login": _valid_login,
}


# ---------------------------------------------------------------------------- one drill
@dataclass
class Scenario:
    """One drawn drill: the playbook (a dict, version 2) and the plan (what was drawn)."""
    seed: int
    split: str
    topology_file: str
    topology: str
    intensity: int
    playbook: dict
    plan: dict

    def playbook_yaml(self) -> str:
        head = (f"# Generated by bench/envelope.py generate: split {self.split}, seed {self.seed}.\n"
                f"# Drawn parameters of every step: the plan file beside this one. Do not edit:\n"
                f"# regenerate (the same seed gives the same file).\n")
        return head + yaml.safe_dump(self.playbook, sort_keys=False, width=100)


#: how often a family is drawn, relative to the others (before its use in the drill damps it):
#: the issue's misses (slow scans, small sweeps, few guesses, sprays, exfiltration) come first
WEIGHTS = {"scan": 3, "sweep": 2, "arp-scan": 1, "guess": 3, "spray": 3, "udp-flood": 1.2,
           "syn-flood": 1.2, "http-beacon": 1, "dns-beacon": 1, "dns-exfil": 2.5, "upload": 1,
           "modbus-write": 1, "valid-login": 0.7}


def _pick_family(rng, feasible: list[str], used: dict) -> str:
    """A family among ``feasible``, by ``WEIGHTS``, damped by how often this drill used it."""
    return rng.choices(feasible, weights=[WEIGHTS[f] / (1 + 2 * used.get(f, 0))
                                          for f in feasible])[0]


def _draw_for(rng, off: Offer, actor: str, families: list[str], used: dict) -> Draw | None:
    """A step of one of ``families`` that ``actor`` can run here (None: none can)."""
    left = list(families)
    while left:
        fam = _pick_family(rng, left, used)
        d = DRAWERS[fam](rng, off, actor)
        if d is not None:
            used[fam] = used.get(fam, 0) + 1
            return d
        left.remove(fam)
    return None


def _step_doc(sid: str, actor: str, d: Draw, at: float) -> dict:
    rec = ", ".join(f"{k} {v}" for k, v in d.recorded.items())
    return {"id": sid, "name": f"{d.family}: {rec}", "technique": d.technique, "actor": actor,
            "targets": list(d.targets), "parallel": True, "params": d.params,
            "timing": {"at": round(at, 1)}}


def draw_scenario(seed: int, split: str, topology_file: str, families=None) -> Scenario:
    """The drill of ``seed``: every draw comes from ``random.Random(f"envelope/{seed}")``."""
    from ..model.loader import load_topology
    topo = load_topology(topology_file)
    off = Offer.of(topo)
    rng = random.Random(f"envelope/{seed}")
    families = list(families or FAMILIES)
    beacons = [f for f in families if FAMILIES[f].beacon]
    scans = [f for f in families if FAMILIES[f].scan_class]
    others = [f for f in families if f not in beacons and f not in scans]
    actors = list(off.actors)
    rng.shuffle(actors)
    used: dict = {}
    steps, plan_steps = [], {}

    def add(actor, d, at, quiet=None):
        sid = f"{d.family}-{len(steps) + 1}"
        steps.append(_step_doc(sid, actor, d, at))
        plan_steps[sid] = {"family": d.family, "technique": d.technique, "actor": actor,
                           "actor_role": topo.nodes[actor].role, "targets": list(d.targets),
                           "at": round(at, 1), "expected_s": round(d.seconds, 1),
                           "quiet_before": quiet, "params": d.recorded}

    n_beacons = min(len(actors) // 3, 3) if (off.c2_http or off.c2_dns) else 0
    for actor in actors[:n_beacons]:
        d = _draw_for(rng, off, actor, beacons, used)
        if d is not None:
            add(actor, d, rng.uniform(0, 15))
    free = [0.0] * LANES
    for actor in actors[n_beacons:]:
        k = min(range(LANES), key=free.__getitem__)
        if free[k] > DRILL_S:
            break
        first = scans + others if rng.random() < 0.5 else others + scans
        d1 = _draw_for(rng, off, actor, first, used)
        if d1 is None:
            continue
        at = free[k] + rng.uniform(*START_GAP)
        add(actor, d1, at)
        end = at + d1.seconds
        if rng.random() < SECOND_STEP:   # a second step of the other class after a quiet period
            rest = others if d1.family in scans else scans
            d2 = _draw_for(rng, off, actor, rest, used)
            if d2 is not None:
                quiet = round(rng.uniform(*QUIET), 1)
                add(actor, d2, end + quiet, quiet)
                end += quiet + d2.seconds
        free[k] = end
    name = f"envelope-{split}-{seed}"
    intensity = rng.choice([1, 2, 3])
    pb = {"version": 2, "name": name,
          "description": f"Detection-envelope drill ({split} split, seed {seed}): "
                         f"{len(steps)} steps with drawn parameters",
          "topology": topo.name, "seed": seed, "defaults": {"max_rate": 20000}, "steps": steps}
    plan = {"generator": GENERATOR, "seed": seed, "split": split, "topology": topo.name,
            "topology_file": str(topology_file), "intensity": intensity,
            "expected_s": round(max([s["at"] + s["expected_s"] for s in plan_steps.values()]
                                    or [0.0]), 1),
            "steps": plan_steps}
    return Scenario(seed, split, str(topology_file), topo.name, intensity, pb, plan)
