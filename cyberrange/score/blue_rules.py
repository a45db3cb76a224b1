"""Blue actions as rules, and whether one would stop a flow: the matching the blue scorecard
(``score/blue.py``) uses for containment (attack flows) and collateral (benign flows, probes).

Each applied ``block``, ``isolate`` and ``rule-add`` of the action log is in force over
``[applied, reverted)`` and is evaluated on a flow's 5-tuple with the addresses, protocol and
port of its logged parameters, resolved as the action resolved them: nodes and zones through the
topology the manifest names (``Resolver``), a rule-add from the nftables text it logged
(addresses already resolved). See ``stops`` for what each kind of action stops.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["INF", "Action", "Resolver", "Rule", "Unresolved", "active_at", "block_rule",
           "int_of", "ip_of", "names_of_run", "nft_rule", "parse_actions", "stops", "text_rule"]

INF = float("inf")


def ip_of(v):
    """An address from ``10.0.0.1`` or ``10.0.0.1:22`` (None when it is none)."""
    try:
        return ipaddress.ip_address(str(v).rsplit(":", 1)[0] if str(v).count(":") == 1 else v)
    except ValueError:
        return None


def _net(text: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


# -- names -> addresses -------------------------------------------------------------------------
class Unresolved(Exception):
    """A name in an action's parameters that neither the topology nor the run's files know."""


class Resolver:
    """Node, zone and address names of the run -> networks, and routed paths. With the topology
    (``topo``) exactly as the blue action resolved them; without it from ``names`` (node ->
    address: the ledger's actors, the probes' destinations, the twin's ``config/dns-hosts``),
    where zones cannot be resolved and every flow is taken to cross every firewall."""

    def __init__(self, topo=None, names: dict | None = None):
        self.topo = topo
        self.names = names or {}
        self._paths: dict = {}

    def networks(self, text) -> list | None:
        """The networks an endpoint names; None for ``any``."""
        items = text if isinstance(text, list) else str(text or "any").split(",")
        nets = []
        for item in (str(i).strip() for i in items):
            if item in ("any", ""):
                return None
            nets += self._item(item)
        return nets

    def _item(self, item: str) -> list:
        t = self.topo
        if t is not None and item in t.zones:
            return [t.zones[item].subnet]
        if t is not None and item in t.nodes:
            return [ipaddress.ip_network(f"{i.ip}/32") for i in t.nodes[item].interfaces]
        if item in self.names:
            return [ipaddress.ip_network(f"{self.names[item]}/32")]
        if item[:1].isdigit() and _net(item) is not None:
            return [_net(item)]
        raise Unresolved(item)

    def node_ip(self, name):
        if self.topo is not None and name in self.topo.nodes:
            return self.topo.nodes[name].ip
        return ip_of(self.names[name]) if name in self.names else None

    def nodes_in(self, nets) -> list[str]:
        """The nodes with an address in ``nets`` (every node for None = any)."""
        if self.topo is not None:
            nodes = {n.name: [i.ip for i in n.interfaces] for n in self.topo.nodes.values()}
        else:
            nodes = {n: [ip_of(a)] for n, a in self.names.items()}
        return [n for n, ips in nodes.items()
                if nets is None or any(ip is not None and ip in net for ip in ips for net in nets)]

    def crosses(self, fw: str, src, dst) -> bool:
        """Whether a packet from address ``src`` to ``dst`` is routed through firewall ``fw``
        (True when it cannot be told: no topology, a source outside the twin, no route)."""
        if self.topo is None:
            return True
        key = (src, dst)
        if key not in self._paths:
            from cyberrange.model.routing import NoRoute, router_path
            node = self.topo.node_by_ip(src) if src is not None else None
            try:
                self._paths[key] = None if node is None else \
                    {n.name for n in router_path(self.topo, node, dst)}
            except (NoRoute, ValueError, KeyError):
                self._paths[key] = None
        names = self._paths[key]
        return names is None or fw in names

    def model_rules(self, fw: str) -> list:
        node = self.topo.nodes.get(fw) if self.topo is not None else None
        return list(node.rules) if node is not None else []


def names_of_run(run_dir, ledger: list[dict], probes: list[dict]) -> dict:
    """node -> address from the run's own files, for a run whose topology file is gone."""
    names: dict[str, str] = {}
    hosts = Path(run_dir) / "config" / "dns-hosts"
    if hosts.is_file():
        for line in hosts.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and ip_of(parts[0]) is not None:
                for name in parts[1:]:
                    names.setdefault(name, parts[0])
    for rec in ledger:
        if rec.get("actor") and rec.get("actor_ip"):
            names.setdefault(rec["actor"], rec["actor_ip"])
    for p in probes:
        if p.get("dst") and p.get("dst_ip"):
            names.setdefault(p["dst"], p["dst_ip"])
    return names


# -- actions as rules ---------------------------------------------------------------------------
@dataclass
class Rule:
    """A deny/allow on (src, dst, proto, port) with resolved networks (None: any)."""
    allow: bool
    src: list | None
    dst: list | None
    proto: str = "any"
    ports: list = field(default_factory=list)         # inclusive (lo, hi); [] = any

    def matches(self, src, dst, proto, port) -> bool:
        if proto == "arp" or (self.proto != "any" and proto not in self.proto.split("|")):
            return False
        if self.ports and (port is None or not any(lo <= port <= hi for lo, hi in self.ports)):
            return False
        return _within(src, self.src) and _within(dst, self.dst)


def _within(ip, nets) -> bool:
    return nets is None or (ip is not None and any(ip in n for n in nets))


@dataclass
class Action:
    """One applied block, isolate or rule-add, in force over ``[t0, t1)``."""
    id: str
    verb: str
    actor: str
    t0: float
    t1: float = INF
    rule: Rule | None = None
    firewalls: list | None = None                     # None: at the switch ports
    position: str = "first"
    ips: frozenset = frozenset()
    allow_ips: frozenset = frozenset()


def _ports(value) -> list[tuple[int, int]]:
    out = []
    for item in value if isinstance(value, list) else [value]:
        text = str(item).strip()
        if not text or text == "None":
            continue
        lo, _, hi = text.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def block_rule(params: dict, res: Resolver) -> Rule:
    return Rule(False, res.networks(params.get("src")), res.networks(params.get("dst")),
                str(params.get("proto") or "any"), _ports(params.get("port")))


_NFT_SET = r"(?:\{([^}]*)\}|(\S+))"


def nft_rule(line: str) -> Rule:
    """A rule from the nftables text ``twin/firewall.rule_line`` made of it (addresses already
    resolved): ``ip saddr { .. } ip daddr { .. } tcp dport { .. } drop``."""
    line = line.split(' comment "', 1)[0]

    def nets(direction):
        m = re.search(rf"ip {direction} {_NFT_SET}", line)
        return None if not m else [_net(x.strip()) for x in (m.group(1) or m.group(2)).split(",")]
    m = re.search(rf"(?:(tcp|udp) dport|th dport) {_NFT_SET}", line)
    ports = _ports((m.group(2) or m.group(3)).replace(" ", "").split(",")) if m else []
    proto = m.group(1) if m and m.group(1) else None
    if proto is None:
        lp = re.search(r"meta l4proto (tcp|udp|icmp)\b", line)
        proto = lp.group(1) if lp else ("tcp|udp" if ports else "any")
    return Rule(line.rstrip().endswith("accept"), nets("saddr"), nets("daddr"), proto, ports)


def text_rule(text: str, res: Resolver) -> Rule:
    """A rule from its short form (``deny from X to Y proto P port N``)."""
    words = shlex.split(text)
    keys = dict(zip(words[1::2], words[2::2]))
    strip = (lambda v: v.strip("[]").replace(" ", "") if isinstance(v, str) else v)
    return Rule(words[0] == "allow", res.networks(strip(keys.get("from", "any"))),
                res.networks(strip(keys.get("to", "any"))), keys.get("proto", "any"),
                _ports(strip(keys.get("port", "")).split(",")) if keys.get("port") else [])


def parse_actions(records: list[dict], res: Resolver, notes: list[str]) -> list[Action]:
    """The applied blocks, isolations and rule-adds with their windows, in the order applied;
    an action whose parameters cannot be resolved is left out with a note."""
    undone = {r.get("reverts"): float(r["time"]) for r in records
              if r.get("result") == "applied" and r.get("reverts")}
    out = []
    for r in sorted(records, key=lambda r: r["time"]):
        verb, p = r.get("action"), r.get("params") if isinstance(r.get("params"), dict) else {}
        if r.get("result") != "applied" or verb not in ("block", "isolate", "rule-add"):
            continue
        a = Action(str(r.get("id")), verb, str(r.get("actor") or ""), float(r["time"]),
                   undone.get(r.get("id"), INF))
        try:
            if verb == "block":
                a.rule = block_rule(p, res)
                if p.get("at") != "port" and p.get("firewalls"):
                    a.firewalls = list(p["firewalls"])
            elif verb == "isolate":
                ips = p.get("ips") or [str(x.network_address) for x in res.networks(p["node"])]
                names = p.get("allow") or []
                names = [names] if isinstance(names, str) else names
                allow = p.get("allow_ips") or [str(net.network_address) for n in names
                                               for net in res.networks(n)]
                a.ips, a.allow_ips = frozenset(map(ip_of, ips)), frozenset(map(ip_of, allow))
            else:
                a.rule = nft_rule(p["nft"]) if p.get("nft") else text_rule(p["rule"], res)
                a.firewalls, a.position = [p.get("firewall")], p.get("position") or "first"
        except (Unresolved, KeyError, TypeError, ValueError, AttributeError) as e:
            why = f"unknown name {e}" if isinstance(e, Unresolved) else f"{type(e).__name__} {e}"
            notes.append(f"action {a.id} ({verb}) left out: its parameters cannot be evaluated "
                         f"({why})")
            continue
        out.append(a)
    return out


# -- would an action stop a flow ------------------------------------------------------------------
def stops(a: Action, flow: tuple, t: float, active: list[Action], res: Resolver) -> bool:
    """Whether action ``a`` (in force at ``t`` with ``active``, the actions in force then)
    stops ``flow`` = (proto, src, sport, dst, dport), addresses as ``ipaddress`` objects:

    - ``block``: a deny rule in a base chain, stateless, so the flow is stopped when the rule
      matches its packets (src -> dst, dport) or its answers (dst -> src, sport); at the switch
      port (the default) it sees every packet of its source nodes, on a firewall only the
      packets whose routed path crosses that firewall;
    - ``isolate``: every packet to or from the node's addresses, except with its ``allow``
      hosts (ARP too);
    - ``rule-add``: a rule in the firewall's own chain after ``ct state established`` (so new
      connections only, src -> dst): the flow must cross the firewall, and the first rule of
      [the active ``first`` rule-adds there, in the order applied] + [the model's rules] +
      [the active ``last`` rule-adds] that matches it must be this deny.

    An IP rule never stops ARP (``proto`` ``arp``)."""
    proto, src, sport, dst, dport = flow
    if a.verb == "isolate":
        return (src in a.ips and dst not in a.allow_ips) or \
            (dst in a.ips and src not in a.allow_ips)
    if a.verb == "block":
        for s, d, port in ((src, dst, dport), (dst, src, sport)):
            if a.rule.matches(s, d, proto, port) and (
                    a.firewalls is None or any(res.crosses(fw, s, d) for fw in a.firewalls)):
                return True
        return False
    if a.rule.allow or not a.rule.matches(src, dst, proto, dport):
        return False
    fw = a.firewalls[0]
    if not res.crosses(fw, src, dst):
        return False
    mine = [b for b in active if b.verb == "rule-add" and b.firewalls == a.firewalls]
    chain = [b.rule for b in mine if b.position == "first"] + res.model_rules(fw) + \
        [b.rule for b in mine if b.position != "first"]
    ours = {id(b.rule): b for b in mine}
    for rule in chain:
        if rule.matches(src, dst, proto, dport):
            return ours.get(id(rule)) is a
    return False


def active_at(actions: list[Action], t: float) -> list[Action]:
    return [a for a in actions if a.t0 <= t < a.t1]

def int_of(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
