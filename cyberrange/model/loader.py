"""Load a topology YAML file into a fully resolved :class:`Topology`.

The pipeline is a row of small explicit stages (in the manner of netlab's ``augment`` steps);
each one either fills in part of the model or raises the first problem it finds as a
``UserError`` that reads ``FILE:LINE:COL: what is wrong (did you mean X?)``:

1. ``load_yaml``      parse, keep line/col of every key and value, reject duplicate keys
2. ``schema_error``   JSON Schema (schemas/topology.schema.json): shapes, types, unknown keys
3. ``_names``         zones, links and nodes share one namespace; sensors are unique
4. ``_profiles``      shaping profiles
5. ``_zones``         subnets (strict CIDR), classification and profile per zone
6. ``_links``         point-to-point links become two-member zones with ``p2p=True``
7. ``_overlaps``      no two subnets overlap
8. ``_nodes``         hosts, routers, firewalls; explicit addresses checked
9. ``_addresses``     default addresses: router interfaces, link ends, then hosts
10. ``_gateways``     each host's default gateway
11. ``_services``     per-host services with their defaults
12. ``_rules``        firewall rules resolved to networks
13. ``_sensors``, ``_benign``
14. ``compute_routes`` static routes on every router (routing.py)

After loading nothing in the model is optional: every interface has an address, every host a
gateway (or None when its zone has no router), every rule endpoint a list of networks.
"""
from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.model.topology import (
    Account, BenignTraffic, Endpoint, Interface, Link, LinkProfile, Node, Rule, Sensor,
    Service, Topology, Zone,
)
from cyberrange.model.yamlsrc import Doc, did_you_mean, load_yaml, schema_error

SCHEMA_DIR = Path(__file__).parent / "schemas"
MAX_NODES = 1000


@lru_cache(maxsize=None)
def topology_schema() -> dict:
    return json.loads((SCHEMA_DIR / "topology.schema.json").read_text())


def load_topology(path) -> Topology:
    """Read, validate and complete the topology in ``path``; raise ``UserError`` on bad input."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error("a topology file must be a mapping with version, name, zones, nodes, ...")
    err = schema_error(doc, topology_schema())
    if err:
        raise err
    return _Builder(doc).build()


def parse_network(doc: Doc, path, what: str = "subnet") -> ipaddress.IPv4Network:
    """A strict IPv4 CIDR: a prefix length is required and host bits must be zero."""
    text = doc.get(path)
    if "/" not in str(text):
        raise doc.error(f"{what} '{text}' needs a prefix length, e.g. {text}/24", path)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise doc.error(f"bad {what} '{text}': {e}", path) from None
    if net.version != 4:
        raise doc.error(f"{what} '{text}' is not IPv4 (the twin is IPv4 only)", path)
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise doc.error(f"{what} '{text}' has host bits set (did you mean {net}?)", path)
    return net


def parse_address(doc: Doc, path, what: str = "ip") -> ipaddress.IPv4Address:
    text = doc.get(path)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise doc.error(f"bad {what} '{text}': not an IPv4 address", path) from None
    if ip.version != 4:
        raise doc.error(f"{what} '{text}' is not IPv4 (the twin is IPv4 only)", path)
    return ip


def _usable(net: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    return list(net.hosts())


class _Builder:
    """Holds the document and the model under construction; one method per stage."""

    def __init__(self, doc: Doc):
        self.doc = doc
        d = doc.data
        self.topo = Topology(
            name=d["name"], classification=d["classification"],
            description=d.get("description", ""), domain=d.get("domain", "twin.local"),
            file=doc.file,
        )
        # ip -> (owner description, path) for "used twice" errors
        self.used: dict[ipaddress.IPv4Address, tuple[str, tuple]] = {}
        # interfaces still waiting for an address: (node, interface, path of the yaml item)
        self.pending_router: list[tuple[Node, Interface, tuple]] = []
        self.pending_host: list[tuple[Node, Interface, tuple]] = []

    def build(self) -> Topology:
        for stage in (self._names, self._profiles, self._zones, self._links, self._overlaps,
                      self._nodes, self._addresses, self._gateways, self._services,
                      self._rules, self._sensors, self._benign):
            stage()
        from cyberrange.model.routing import compute_routes
        compute_routes(self.topo)
        return self.topo

    # -- 3. names ------------------------------------------------------------------------
    def _names(self):
        doc, d = self.doc, self.doc.data
        seen: dict[str, tuple[str, tuple]] = {}          # name -> (what, path of the name)
        for z in d.get("zones", {}):
            seen[z] = ("zone", ("zones", z))
        for i, link in enumerate(d.get("links", [])):
            self._claim(seen, link["name"], "link", ("links", i, "name"))
        for i, node in enumerate(d["nodes"]):
            self._claim(seen, node["name"], "node", ("nodes", i, "name"))
        sensors: dict[str, tuple] = {}
        for i, s in enumerate(d.get("sensors", [])):
            path = ("sensors", i, "name")
            if s["name"] in sensors:
                line = doc.pos(sensors[s["name"]])[0]
                raise doc.error(f"duplicate sensor name '{s['name']}' (first at line {line})", path)
            sensors[s["name"]] = path

    def _claim(self, seen, name, what, path):
        if name in seen:
            other, other_path = seen[name]
            line = self.doc.pos(other_path, key=other == "zone")[0]
            if other == what:
                raise self.doc.error(f"duplicate {what} name '{name}' (first at line {line})", path)
            raise self.doc.error(
                f"{what} name '{name}' is already a {other} name (line {line}); zones, links "
                f"and nodes share one namespace", path)
        seen[name] = (what, path)

    # -- 4. profiles ---------------------------------------------------------------------
    def _profiles(self):
        for name, p in self.doc.data.get("profiles", {}).items():
            self.topo.profiles[name] = self._profile(name, p)

    @staticmethod
    def _profile(name: str, p: dict) -> LinkProfile:
        return LinkProfile(name=name, bandwidth_mbit=p.get("bandwidth"),
                           delay_ms=float(p.get("delay", 0)), jitter_ms=float(p.get("jitter", 0)),
                           loss_pct=float(p.get("loss", 0)))

    def _profile_ref(self, path, owner: str) -> LinkProfile | None:
        ref = self.doc.get(path)
        if ref is None:
            return None
        if isinstance(ref, dict):
            return self._profile(owner, ref)
        if ref not in self.topo.profiles:
            known = list(self.topo.profiles)
            hint = did_you_mean(ref, known) or (
                f" (defined profiles: {', '.join(known)})" if known else " (no profiles: are defined)")
            raise self.doc.error(f"unknown profile '{ref}'{hint}", path)
        return self.topo.profiles[ref]

    # -- 5. zones ------------------------------------------------------------------------
    def _zones(self):
        doc, topo = self.doc, self.topo
        for name, z in doc.data["zones"].items():
            path = ("zones", name)
            subnet = parse_network(doc, path + ("subnet",))
            if subnet.prefixlen > 30:
                raise doc.error(f"zone subnet {subnet} is too small: use /30 or larger "
                                f"(a /31 or /32 is for point-to-point links)", path + ("subnet",))
            topo.zones[name] = Zone(
                name=name, subnet=subnet,
                classification=z.get("classification", topo.classification),
                description=z.get("description", ""),
                profile=self._profile_ref(path + ("profile",), name),
                src=doc.ref(path, key=True),
            )

    # -- 6. links ------------------------------------------------------------------------
    def _links(self):
        doc, topo = self.doc, self.topo
        kinds = {n["name"]: n["kind"] for n in doc.data["nodes"]}
        for i, l in enumerate(doc.data.get("links", [])):
            path = ("links", i)
            for j, end in enumerate(l["endpoints"]):
                epath = path + ("endpoints", j)
                if end not in kinds:
                    raise doc.error(f"link {l['name']}: unknown node '{end}'"
                                    f"{did_you_mean(end, kinds)}", epath)
                if kinds[end] == "host":
                    raise doc.error(f"link {l['name']}: '{end}' is a host; link endpoints must be "
                                    f"routers or firewalls", epath)
            a, b = l["endpoints"]
            if a == b:
                raise doc.error(f"link {l['name']}: both endpoints are '{a}'", path + ("endpoints", 1))
            subnet = parse_network(doc, path + ("subnet",))
            if len(_usable(subnet)) < 2:
                raise doc.error(f"link subnet {subnet} has no room for two ends: use a /30 or /31",
                                path + ("subnet",))
            profile = self._profile_ref(path + ("profile",), l["name"])
            ref = doc.ref(path)
            topo.links[l["name"]] = Link(name=l["name"], a=a, b=b, subnet=subnet,
                                         profile=profile, src=ref)
            topo.zones[l["name"]] = Zone(name=l["name"], subnet=subnet,
                                         classification=topo.classification,
                                         description=l.get("description", f"link {a} - {b}"),
                                         profile=profile, p2p=True, src=ref)

    # -- 7. overlaps ---------------------------------------------------------------------
    def _overlaps(self):
        zones = list(self.topo.zones.values())
        for i, z in enumerate(zones):
            for other in zones[:i]:
                if z.subnet.overlaps(other.subnet):
                    what = "link" if z.p2p else "zone"
                    path = self._zone_path(z) + ("subnet",)
                    raise self.doc.error(
                        f"{what} {z.name} subnet {z.subnet} overlaps {other.name} "
                        f"({other.subnet}, line {other.src.line})", path)

    def _zone_path(self, z: Zone) -> tuple:
        if z.p2p:
            i = next(i for i, l in enumerate(self.doc.data["links"]) if l["name"] == z.name)
            return ("links", i)
        return ("zones", z.name)

    # -- 8. nodes ------------------------------------------------------------------------
    HOST_ONLY = ("role", "zone", "ip", "gateway", "services")
    ROUTER_ONLY = ("interfaces",)
    FIREWALL_ONLY = ("default", "rules")

    def _nodes(self):
        doc, topo = self.doc, self.topo
        for i, n in enumerate(doc.data["nodes"]):
            path = ("nodes", i)
            kind = n["kind"]
            for key in n:
                if kind != "host" and key in self.HOST_ONLY:
                    raise doc.error(f"node {n['name']}: '{key}' is only for hosts "
                                    f"(this node is a {kind})", path + (key,), key=True)
                if kind == "host" and key in self.ROUTER_ONLY:
                    raise doc.error(f"node {n['name']}: hosts have one 'zone' (and 'ip'), "
                                    f"not 'interfaces'", path + (key,), key=True)
                if kind != "firewall" and key in self.FIREWALL_ONLY:
                    raise doc.error(f"node {n['name']}: '{key}' is only for firewalls "
                                    f"(this node is a {kind})", path + (key,), key=True)
            node = Node(name=n["name"], kind=kind,
                        role=n.get("role", "workstation") if kind == "host" else kind,
                        default_action=n.get("default", "deny" if kind == "firewall" else "allow"),
                        classification=n.get("classification"),
                        description=n.get("description", ""),
                        src=doc.ref(path))
            if kind == "host":
                if "zone" not in n:
                    raise doc.error(f"node {n['name']}: a host needs a 'zone'", path)
                zone = self._zone_of(path + ("zone",), hosts=True)
                iface = Interface(zone=zone.name, ip=None, prefixlen=zone.subnet.prefixlen,
                                  index=0, profile=zone.profile)
                node.interfaces.append(iface)
                if node.classification is None:
                    node.classification = zone.classification
                if "ip" in n:
                    iface.ip = self._explicit_ip(node, zone, path + ("ip",))
                else:
                    self.pending_host.append((node, iface, path))
            else:
                if node.classification is None:
                    node.classification = topo.classification
                attached: dict[str, tuple] = {}
                for j, spec in enumerate(n.get("interfaces", [])):
                    ipath = path + ("interfaces", j)
                    zone = self._zone_of(ipath + ("zone",), hosts=False)
                    if zone.name in attached:
                        line = doc.pos(attached[zone.name])[0]
                        raise doc.error(f"node {node.name}: a second interface in zone {zone.name} "
                                        f"(first at line {line})", ipath + ("zone",))
                    attached[zone.name] = ipath
                    iface = Interface(zone=zone.name, ip=None, prefixlen=zone.subnet.prefixlen,
                                      index=j, profile=zone.profile)
                    node.interfaces.append(iface)
                    if "ip" in spec:
                        iface.ip = self._explicit_ip(node, zone, ipath + ("ip",))
                    else:
                        self.pending_router.append((node, iface, ipath))
                for link in topo.links.values():
                    if node.name in (link.a, link.b):
                        node.interfaces.append(Interface(
                            zone=link.name, ip=None, prefixlen=link.subnet.prefixlen,
                            index=len(node.interfaces), profile=link.profile))
                if not node.interfaces:
                    raise doc.error(f"node {node.name}: a {kind} needs at least one interface "
                                    f"or link", path)
            topo.nodes[node.name] = node

    def _zone_of(self, path, hosts: bool) -> Zone:
        name = self.doc.get(path)
        zone = self.topo.zones.get(name)
        if zone is None:
            names = [z.name for z in self.topo.zones.values() if not z.p2p]
            raise self.doc.error(f"unknown zone '{name}'{did_you_mean(name, names)}", path)
        if zone.p2p:
            if hosts:
                raise self.doc.error(f"'{name}' is a point-to-point link; hosts sit in zones", path)
            raise self.doc.error(f"'{name}' is a point-to-point link; its endpoints get their "
                                 f"interface automatically, do not list it", path)
        return zone

    def _explicit_ip(self, node: Node, zone: Zone, path) -> ipaddress.IPv4Address:
        ip = parse_address(self.doc, path)
        net = zone.subnet
        if ip not in net:
            raise self.doc.error(f"{ip} is outside zone {zone.name} ({net})", path)
        if ip == net.network_address:
            raise self.doc.error(f"{ip} is the network address of zone {zone.name} ({net})", path)
        if ip == net.broadcast_address:
            raise self.doc.error(f"{ip} is the broadcast address of zone {zone.name} ({net})", path)
        self._use(ip, node.name, path)
        return ip

    def _use(self, ip, owner: str, path):
        if ip in self.used:
            other, other_path = self.used[ip]
            raise self.doc.error(f"address {ip} is already used by {other} "
                                 f"(line {self.doc.pos(other_path)[0]})", path)
        self.used[ip] = (owner, path)

    # -- 9. default addresses ------------------------------------------------------------
    def _addresses(self):
        topo = self.topo
        for node, iface, path in self.pending_router:
            iface.ip = self._lowest_free(topo.zones[iface.zone], node, path, start=1)
        for link in topo.links.values():
            first, second = _usable(link.subnet)[:2]
            for name, ip in ((link.a, first), (link.b, second)):
                iface = next(i for i in topo.nodes[name].interfaces if i.zone == link.name)
                iface.ip = ip
                self._use(ip, f"{name} (link {link.name})", self._zone_path(topo.zones[link.name]))
        for node, iface, path in self.pending_host:
            zone = topo.zones[iface.zone]
            start = 10 if zone.subnet.num_addresses >= 16 else 2
            iface.ip = self._lowest_free(zone, node, path, start=start)

    def _lowest_free(self, zone: Zone, node: Node, path, start: int) -> ipaddress.IPv4Address:
        first = zone.subnet.network_address + start
        for ip in zone.subnet.hosts():
            if ip >= first and ip not in self.used:
                self._use(ip, node.name, path)
                return ip
        raise self.doc.error(f"zone {zone.name} ({zone.subnet}) has no free address left for "
                             f"{node.name}", path)

    # -- 10. gateways --------------------------------------------------------------------
    def _gateways(self):
        doc, topo = self.doc, self.topo
        for i, n in enumerate(doc.data["nodes"]):
            node = topo.nodes[n["name"]]
            if node.kind != "host":
                continue
            zone = node.interfaces[0].zone
            routers = [(r, ifc) for r, ifc in topo.members(zone) if r.is_router]
            path = ("nodes", i, "gateway")
            gw = n.get("gateway")
            if gw is None:
                if len(routers) > 1:
                    names = ", ".join(r.name for r, _ in routers)
                    raise doc.error(f"node {node.name}: zone {zone} has several routers ({names}); "
                                    f"say which one with 'gateway:'", ("nodes", i))
                node.gateway = routers[0][1].ip if routers else None
                continue
            by_name = {r.name: ifc.ip for r, ifc in routers}
            if gw in by_name:
                node.gateway = by_name[gw]
                continue
            try:
                ip = ipaddress.ip_address(gw)
            except ValueError:
                hint = did_you_mean(gw, by_name) or (
                    f" (routers in zone {zone}: {', '.join(by_name)})" if by_name
                    else f" (zone {zone} has no router)")
                raise doc.error(f"node {node.name}: gateway '{gw}' is not a router in zone "
                                f"{zone}{hint}", path) from None
            if ip not in by_name.values():
                raise doc.error(f"node {node.name}: gateway {ip} is not the address of a router "
                                f"in zone {zone}", path)
            node.gateway = ip

    # -- 11. services --------------------------------------------------------------------
    def _services(self):
        doc, topo = self.doc, self.topo
        for i, n in enumerate(doc.data["nodes"]):
            node = topo.nodes[n["name"]]
            seen: dict[tuple, tuple] = {}
            for j, s in enumerate(n.get("services", [])):
                path = ("nodes", i, "services", j)
                proto = s.get("proto", "udp" if s["type"] == "dns" else "tcp")
                key = (s["port"], proto)
                if key in seen:
                    raise doc.error(f"node {node.name}: {proto}/{s['port']} is already taken by "
                                    f"another service (line {doc.pos(seen[key])[0]})",
                                    path + ("port",))
                seen[key] = path
                if "accounts" in s and s["type"] != "login":
                    raise doc.error(f"node {node.name}: 'accounts' are only for login services",
                                    path + ("accounts",), key=True)
                node.services.append(Service(
                    type=s["type"], port=s["port"], proto=proto,
                    accounts=[Account(a["user"], a["password"]) for a in s.get("accounts", [])],
                    banner=s.get("banner", ""),
                    domain=topo.domain if s["type"] == "dns" else "",
                    src=doc.ref(path)))

    # -- 12. firewall rules --------------------------------------------------------------
    def _rules(self):
        doc, topo = self.doc, self.topo
        for i, n in enumerate(doc.data["nodes"]):
            node = topo.nodes[n["name"]]
            for j, r in enumerate(n.get("rules", [])):
                path = ("nodes", i, "rules", j)
                proto = r.get("proto", "any")
                ports = self._ports(path + ("port",)) if "port" in r else []
                if ports and proto not in ("tcp", "udp"):
                    raise doc.error(f"node {node.name}: a rule with 'port' needs proto: tcp or "
                                    f"proto: udp (it has proto: {proto})", path + ("port",), key=True)
                node.rules.append(Rule(
                    action=r["action"], src=self._endpoint(path + ("from",)),
                    dst=self._endpoint(path + ("to",)), proto=proto, ports=ports,
                    comment=r.get("comment", ""), src_ref=doc.ref(path)))

    def _endpoint(self, path) -> Endpoint:
        value = self.doc.get(path)
        items = value if isinstance(value, list) else [value]
        parts = [self._endpoint_item(path + (k,) if isinstance(value, list) else path, item)
                 for k, item in enumerate(items)]
        if any(p.kind == "any" for p in parts):
            return Endpoint("any", "any")
        if len(parts) == 1:
            return parts[0]
        return Endpoint("list", ",".join(p.value for p in parts),
                        [net for p in parts for net in p.networks])

    def _endpoint_item(self, path, item: str) -> Endpoint:
        topo = self.topo
        if item == "any":
            return Endpoint("any", "any")
        if item in topo.zones:
            return Endpoint("zone", item, [topo.zones[item].subnet])
        if item in topo.nodes:
            return Endpoint("node", item,
                            [ipaddress.ip_network(f"{i.ip}/32") for i in topo.nodes[item].interfaces])
        if item[:1].isdigit():
            if "/" not in item:
                item_net = f"{parse_address(self.doc, path, 'address')}/32"
                return Endpoint("cidr", item, [ipaddress.ip_network(item_net)])
            return Endpoint("cidr", item, [parse_network(self.doc, path, "CIDR")])
        names = ["any", *topo.zones, *topo.nodes]
        raise self.doc.error(f"unknown zone or node '{item}'{did_you_mean(item, names)}", path)

    def _ports(self, path) -> list[tuple[int, int]]:
        value = self.doc.get(path)
        items = value if isinstance(value, list) else [value]
        out = []
        for k, item in enumerate(items):
            ipath = path + (k,) if isinstance(value, list) else path
            if isinstance(item, int):
                out.append((item, item))
                continue
            lo, hi = (int(x) for x in item.split("-"))
            if not (1 <= lo <= hi <= 65535):
                raise self.doc.error(f"bad port range '{item}': need 1 <= lo <= hi <= 65535", ipath)
            out.append((lo, hi))
        return out

    # -- 13. sensors and benign traffic --------------------------------------------------
    def _sensors(self):
        doc, topo = self.doc, self.topo
        for i, s in enumerate(doc.data.get("sensors", [])):
            path = ("sensors", i, "zone")
            if s["zone"] not in topo.zones:
                raise doc.error(f"sensor {s['name']}: unknown zone or link '{s['zone']}'"
                                f"{did_you_mean(s['zone'], topo.zones)}", path)
            topo.sensors[s["name"]] = Sensor(s["name"], s["zone"], src=doc.ref(("sensors", i)))

    def _benign(self):
        b = self.doc.data.get("benign", {})
        self.topo.benign = BenignTraffic(enabled=b.get("enabled", True),
                                         interval_s=float(b.get("interval", 2.0)),
                                         seed=b.get("seed", 1))


__all__ = ["load_topology", "topology_schema", "parse_network", "parse_address", "UserError"]
