"""Import a containerlab topology (``*.clab.yml``) into our format (version 2).

containerlab (https://containerlab.dev) describes a lab as::

    name: lab1
    mgmt: {network: lab1-mgmt, ipv4-subnet: 172.20.20.0/24}   # out-of-band docker network
    topology:
      defaults: {kind: linux}                                  # every node
      kinds: {nokia_srlinux: {image: ...}}                     # every node of a kind
      groups: {routers: {kind: frr, image: ...}}               # every node naming the group
      nodes:
        r1: {group: routers, mgmt-ipv4: 172.20.20.11, labels: {role: core}}
        pc1: {kind: linux, image: alpine}
        br1: {kind: bridge}
      links:
        - endpoints: ["r1:eth1", "pc1:eth1"]

A node's settings come, most specific first, from the node, its group, its kind and the
defaults (containerlab's ``types/topology.go``): its kind from the node, else its group, else
the defaults' group, else the defaults; its group from the node, else its kind's entry in
``kinds``, else the defaults; ``image`` (and every other single value) node > group > kind >
defaults; ``labels`` merged, the node's winning. :func:`resolve_nodes` does exactly that.

What the import makes of a lab (docs/containerlab-import.md has the tables):

- each node's kind maps to ours (:data:`KIND_MAP`); a ``linux`` node with a routing-suite image
  (FRR, VyOS, BIRD, ...) or the label ``role: router|firewall`` is a router or firewall;
  ``bridge`` / ``ovs-bridge`` nodes are no node of ours but a zone;
- a link between two routers becomes one of our point-to-point ``links`` (a /30 from
  172.31.0.0/16); a host on a router port becomes a zone of its own (a /24 from 10.200.0.0/16);
  everything on one bridge (or on bridges linked together) becomes one zone; two hosts linked
  directly share a zone; a host on several links has an interface in each zone (format v2);
- a lab of routers only imports as routers and links, no zone is invented;
- the management network (``mgmt:``, ``mgmt-ipv4``) is containerlab's out-of-band docker
  network: it is not part of the twin (dropped with a note; the addresses stay in the node
  descriptions); links that leave the lab (``host``, ``mgmt-net``, ``macvlan``, ``vxlan``,
  ``dummy``) are dropped with a note, and so are nodes left with no data link;
- everything the file says that the twin does not carry (images, startup configs, exec,
  binds, ...) is listed in :meth:`ClabImport.warning`, one line.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import yaml

from cyberrange.errors import UserError
from cyberrange.model.clab_kinds import (
    KIND_MAP,
    ROLE_LABELS,
    clab_kind,
    end_system,
    forwards,
    host_role,
    known_kind,
)
from cyberrange.model.topology import NODE_KINDS
from cyberrange.model.yamlsrc import Doc, did_you_mean, load_yaml, one_line

__all__ = ["KIND_MAP", "ClabImport", "ClabNode", "clab_kind", "convert_clab", "import_clab",
           "known_kind", "resolve_nodes"]

ZONE_POOL = ipaddress.ip_network("10.200.0.0/16")      # /24 per derived zone
LINK_POOL = ipaddress.ip_network("172.31.0.0/16")      # /30 per router-router link

# link types / brief endpoint names that leave the lab (containerlab links/link.go)
OUTSIDE = ("host", "mgmt-net", "macvlan", "vxlan", "vxlan-stitch", "dummy")
# node-level keys the import reads: they shape the kind, zone, role or description
READ_KEYS = {"kind", "group", "labels"}
MGMT_KEYS = {"mgmt-ipv4", "mgmt_ipv4", "mgmt-ipv6", "mgmt_ipv6"}
# an address a node's exec gives an interface: `ip addr add 192.168.11.2/24 dev eth1`
ADDR_RE = re.compile(r"\bip\s+(?:-4\s+)?a(?:ddr(?:ess)?)?\s+add\s+([0-9.]+/\d+)\s+dev\s+(\S+)")


@dataclass
class ClabNode:
    """One containerlab node with its settings resolved (node > group > kind > defaults)."""
    name: str
    kind: str                    # containerlab's
    group: str
    image: str
    labels: dict
    mgmt: str                    # mgmt-ipv4 (or ipv6) or ""
    ours: str = ""               # host, router, firewall, bridge
    addrs: dict = field(default_factory=dict)    # iface -> IPv4Interface, from exec


@dataclass
class ClabImport:
    """What one import made: the topology text, the notes in its header, and what the file
    said that the twin does not carry (for :meth:`warning`)."""
    text: str
    notes: list[str]
    unimported: dict[str, Counter] = field(default_factory=dict)   # where -> key -> count
    dropped: list[str] = field(default_factory=list)               # nodes and links left out

    def warning(self, src) -> str:
        """One line naming every key, node and link of ``src`` that was not imported ("" when
        everything was)."""
        parts = []
        for where, keys in self.unimported.items():
            items = [f"{k} x{n}" if n > 1 else k for k, n in sorted(keys.items())]
            parts.append(f"{where} ({', '.join(items)})")
        parts += self.dropped
        if not parts:
            return ""
        return one_line(f"{src}: not imported (the twin does not carry it): "
                        + "; ".join(parts), 4000)


# -- reading the file ------------------------------------------------------------------------
def _clab_shape(doc: Doc) -> tuple[dict, dict, dict]:
    """``(file, topology, nodes)`` of a containerlab document, with every part the import reads
    of the type it expects (else a one-line error at its position)."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("topology"), dict):
        raise doc.error("not a containerlab file (no 'topology:' mapping)",
                        ("topology",) if isinstance(data, dict) else ())
    topo = data["topology"]
    for part, want in (("defaults", dict), ("kinds", dict), ("groups", dict), ("nodes", dict),
                       ("links", list)):
        value = topo.get(part)
        if value is not None and not isinstance(value, want):
            raise doc.error(f"topology.{part} must be a {'mapping' if want is dict else 'list'}",
                            ("topology", part))
    if data.get("mgmt") is not None and not isinstance(data["mgmt"], dict):
        raise doc.error("mgmt must be a mapping", ("mgmt",))
    clab_nodes = topo.get("nodes") or {}
    if not clab_nodes:
        raise doc.error("topology.nodes is empty", ("topology", "nodes"))
    specs = [(("topology", "nodes", n), f"node {n!r}", s) for n, s in clab_nodes.items()]
    specs += [(("topology", part, n), f"{part[:-1]} {n!r}", s)
              for part in ("kinds", "groups") for n, s in (topo.get(part) or {}).items()]
    specs.append((("topology", "defaults"), "defaults", topo.get("defaults")))
    for at, what, spec in specs:
        if spec is not None and not isinstance(spec, dict):
            raise doc.error(f"{what} must be a mapping (kind, image, ...)", at)
        for key in ("labels",):
            if spec and spec.get(key) is not None and not isinstance(spec[key], dict):
                raise doc.error(f"{what}: {key} must be a mapping", at + (key,))
        for key in ("kind", "group", "image"):
            if spec and spec.get(key) is not None and not isinstance(spec[key], (str, int, float)):
                raise doc.error(f"{what}: {key} must be a string", at + (key,))
    for k, link in enumerate(topo.get("links") or []):
        if link is not None and not isinstance(link, dict):
            raise doc.error(f"link {k + 1} must be a mapping with 'endpoints'",
                            ("topology", "links", k))
    return data, topo, clab_nodes


def resolve_nodes(doc: Doc, topo: dict) -> tuple[dict[str, ClabNode], dict[str, Counter]]:
    """Every node with its kind, group, image, labels and mgmt address as containerlab
    resolves them; and the keys (by where they were written) that the import does not carry."""
    defaults = topo.get("defaults") or {}
    kinds = topo.get("kinds") or {}
    groups = topo.get("groups") or {}
    out: dict[str, ClabNode] = {}
    for name, spec in (topo.get("nodes") or {}).items():
        spec = spec or {}
        kind = spec.get("kind") or (groups.get(spec.get("group")) or {}).get("kind") \
            or (groups.get(defaults.get("group")) or {}).get("kind") or defaults.get("kind")
        if not kind:
            raise doc.error(f"node {name!r} has no kind (give it one, or its group, or "
                            f"topology.defaults a kind)", ("topology", "nodes", name))
        kind = str(kind)
        kdef = kinds.get(kind) or {}
        group = str(spec.get("group") or kdef.get("group") or defaults.get("group") or "")
        gdef = groups.get(group) or {}
        levels = (spec, gdef, kdef, defaults)              # most specific first
        image = next((str(lv["image"]) for lv in levels if lv.get("image")), "")
        labels: dict = {}
        for lv in reversed(levels):
            labels.update(lv.get("labels") or {})
        mgmt = next((str(spec[k]) for k in sorted(MGMT_KEYS) if spec.get(k)), "")
        node = ClabNode(name, kind, group, image, labels, mgmt)
        for lv in reversed(levels):            # exec: defaults, kind, group, node, in order
            for cmd in lv.get("exec") if isinstance(lv.get("exec"), list) else []:
                for addr, dev in ADDR_RE.findall(str(cmd)):
                    try:
                        node.addrs.setdefault(dev, ipaddress.IPv4Interface(addr))
                    except ValueError:
                        pass
        node.ours = clab_kind(kind, {"image": image, "labels": labels})
        out[name] = node
    return out, _unread_keys(topo, out)


def _unread_keys(topo: dict, nodes: dict[str, ClabNode]) -> dict[str, Counter]:
    """The keys of defaults, kinds, groups and nodes that shape nothing of ours. ``kind`` and
    ``group`` are read; of ``labels`` only the role labels; the mgmt addresses are dropped
    with the management network (listed under ``mgmt``)."""
    out: dict[str, Counter] = {}

    def add(where, spec):
        for key, value in (spec or {}).items():
            if key == "labels" and isinstance(value, dict):
                for lk in value:
                    if lk not in ROLE_LABELS:
                        out.setdefault(where, Counter())[f"labels.{lk}"] += 1
            elif key in MGMT_KEYS:
                out.setdefault("mgmt", Counter())[key] += 1
            elif key not in READ_KEYS:
                out.setdefault(where, Counter())[key] += 1

    add("topology.defaults", topo.get("defaults"))
    for part in ("kinds", "groups"):
        for name, spec in (topo.get(part) or {}).items():
            add(f"topology.{part}.{name}", spec)
    for name, spec in (topo.get("nodes") or {}).items():
        add("nodes", spec)
    return out


def _some(names: list[str], most: int = 12) -> str:
    """``a, b, c`` or, for a long list, its first ``most`` and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _endpoint(ep) -> tuple[str, str]:
    if isinstance(ep, dict):
        return str(ep.get("node", "")), str(ep.get("interface", ""))
    node, _, iface = str(ep).partition(":")
    return node, iface


def data_links(doc: Doc, topo: dict, nodes: dict, notes: list[str], dropped: list[str],
               unread: dict[str, Counter]) -> list[tuple]:
    """The links between lab nodes, as ``((node, iface), (node, iface))``, brief
    (``endpoints: ["a:e1", "b:e1"]``) or extended (``type: veth``, endpoint mappings); links
    that leave the lab (host, mgmt-net, macvlan, vxlan, dummy) are dropped with a note."""
    links, outside = [], []
    for k, link in enumerate(topo.get("links") or []):
        link = link or {}
        ltype = str(link.get("type", "veth")).lower()
        eps = link.get("endpoints")
        if ltype in OUTSIDE or (ltype != "veth" and ltype != "brief"):
            ep = link.get("endpoint") or (eps[0] if isinstance(eps, list) and eps else "?")
            outside.append(f"{k + 1} ({ltype} {':'.join(_endpoint(ep))})")
            continue
        if not (isinstance(eps, list) and len(eps) == 2):
            notes.append(f"link {k + 1}: not two endpoints, skipped")
            outside.append(f"{k + 1} (not two endpoints)")
            continue
        ends = [_endpoint(ep) for ep in eps]
        special = next((f"{n}:{i}" for n, i in ends if n in OUTSIDE and n not in nodes), None)
        if special:
            outside.append(f"{k + 1} ({special})")
            continue
        for j, (node, _) in enumerate(ends):
            if node not in nodes:
                raise doc.error(f"link {k + 1}: unknown node '{node}'"
                                f"{did_you_mean(node, nodes)}", ("topology", "links", k, "endpoints", j))
        if ends[0][0] == ends[1][0]:
            outside.append(f"{k + 1} (both ends on {ends[0][0]})")
            continue
        links.append(tuple(ends))
        for key in link:
            if key not in ("endpoints", "type"):
                unread.setdefault("topology.links", Counter())[key] += 1
    if outside:
        notes.append(f"links that leave the lab or loop back (not part of the twin): {', '.join(outside)}")
        dropped.append(f"links leaving the lab: {_some(outside)}")
    return links


# -- from links to zones ----------------------------------------------------------------------
def _name(raw: str, taken: set[str]) -> str:
    """A valid, unused name of ours: lowercase letter first, then a-z 0-9 '-', up to 31."""
    n = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-") or "n"
    if not n[0].isalpha():
        n = "n-" + n
    n = n[:31].rstrip("-")
    base, k = n, 2
    while n in taken:
        suffix = f"-{k}"
        n = base[:31 - len(suffix)] + suffix
        k += 1
    taken.add(n)
    return n


class _Segments:
    """The zones and router links the lab's links make, and where each node attaches."""

    def __init__(self, kinds: dict[str, str]):
        self.kinds = kinds
        self.zones: dict[str, dict] = {}     # our zone name -> {"from": what it was}
        self.host_zones: dict[str, list[str]] = {n: [] for n, k in kinds.items() if end_system(k)}
        self.router_ifaces: dict[str, list[str]] = {n: [] for n, k in kinds.items() if forwards(k)}
        self.p2p: list[tuple] = []           # (router a, its iface, router b, its iface)
        self.ports: dict[tuple, str] = {}    # (host, zone) -> the host's clab interface

    def bridges(self, links, names) -> None:
        """Everything attached to one bridge (or to bridges linked together) is one zone."""
        kinds = self.kinds
        bridged = nx.Graph()
        for (a, ia), (b, ib) in links:
            if kinds[a] == "bridge" or kinds[b] == "bridge":
                bridged.add_edge(a, b)
                bridged.nodes[a].setdefault("iface", ia)
                bridged.nodes[b].setdefault("iface", ib)
        for comp in sorted(nx.connected_components(bridged), key=min):
            bridges = sorted(n for n in comp if kinds[n] == "bridge")
            zname = names[bridges[0]]          # the bridge is not a node of ours: its name is free
            self.zones[zname] = {"from": "bridge " + ", ".join(bridges)}
            for n in sorted(comp):
                if kinds[n] != "bridge":
                    self.attach(n, zname, bridged.nodes[n]["iface"])

    def links(self, links, names, taken) -> None:
        """Router to router: a point-to-point link; a host on a router port: a zone of its own;
        two hosts linked directly: a zone of their own (or the zone one of them has already
        with the other, when they are linked twice)."""
        kinds = self.kinds
        for (a, ia), (b, ib) in links:
            if kinds[a] == "bridge" or kinds[b] == "bridge":
                continue
            ra, rb = forwards(kinds[a]), forwards(kinds[b])
            if ra and rb:
                self.p2p.append((a, ia, b, ib))
                continue
            if ra or rb:
                r, ri = (a, ia) if ra else (b, ib)
                zname = _name(f"{names[r]}-{ri}", taken)
                self.zones[zname] = {"from": f"{r} port {ri}"}
            else:
                zname = _name(f"{names[a]}-{names[b]}", taken)
                self.zones[zname] = {"from": f"link {a}:{ia} - {b}:{ib}"}
            for n, i in ((a, ia), (b, ib)):
                self.attach(n, zname, i)

    def attach(self, n, zname, iface) -> None:
        kind = self.kinds[n]
        if forwards(kind):
            if zname not in self.router_ifaces[n]:
                self.router_ifaces[n].append(zname)
        elif end_system(kind) and zname not in self.host_zones[n]:
            self.host_zones[n].append(zname)
            self.ports[(n, zname)] = iface

    def lab_addresses(self, nodes: dict[str, ClabNode], notes: list[str]) -> tuple[dict, dict]:
        """The lab's own addresses where a host's exec gives them: ``(zone -> subnet, (host,
        zone) -> ip)``. The first address in a zone gives its subnet; an address outside it,
        taken twice, or a subnet overlapping another zone's is left to the pools, with a note."""
        subnets: dict[str, ipaddress.IPv4Network] = {}
        ips: dict[tuple, ipaddress.IPv4Address] = {}
        for (n, zone), iface in self.ports.items():
            a = nodes[n].addrs.get(iface)
            if a is None or a.network.prefixlen > 30 or a.ip in (a.network.network_address,
                                                                 a.network.broadcast_address):
                continue
            net = subnets.get(zone)
            if net is None:
                clash = next((z for z, other in subnets.items() if other.overlaps(a.network)), None)
                if clash:
                    notes.append(f"{n} {iface} {a}: overlaps zone {clash}, zone {zone} numbered from the pool")
                    continue
                net = subnets[zone] = a.network
            if a.ip in net and a.ip not in ips.values():
                ips[(n, zone)] = a.ip
            else:
                notes.append(f"{n} {iface} {a}: not usable in zone {zone} ({net}), address left to the import")
        if ips:
            notes.append("addresses from exec (ip addr add): " + _some(
                [f"{n} {ip}" for (n, _z), ip in ips.items()]))
        return subnets, ips


def _addressed(doc: Doc, lab: _Segments, names, taken, given: dict) -> tuple[dict, list]:
    """Our zones and links: subnets the lab gives (``given``), else from the import pools
    (skipping what overlaps a given one)."""
    def free(pool, size):
        return (s for s in pool.subnets(new_prefix=size)
                if not any(s.overlaps(g) for g in given.values()))
    zone_nets, link_nets = free(ZONE_POOL, 24), free(LINK_POOL, 30)
    for what, count, pool, size in (("zones", len(lab.zones), ZONE_POOL, 24),
                                    ("router links", len(lab.p2p), LINK_POOL, 30)):
        if count > 2 ** (size - pool.prefixlen):
            raise doc.error(f"{count} {what} to import: more than the /{size}s of {pool} "
                            f"({2 ** (size - pool.prefixlen)})", ("topology",))
    out_zones = {zname: {"subnet": str(given.get(zname) or next(zone_nets)),
                         "description": f"from containerlab {z['from']}"}
                 for zname, z in lab.zones.items()}
    out_links = []
    for a, ia, b, ib in lab.p2p:
        out_links.append({"name": _name(f"{names[a]}-{names[b]}", taken),
                          "endpoints": [names[a], names[b]], "subnet": str(next(link_nets)),
                          "description": f"containerlab link {a}:{ia} - {b}:{ib}"})
    return out_zones, out_links


def _nodes(nodes: dict[str, ClabNode], names, lab: _Segments, ips: dict) -> tuple[list[dict], list[str]]:
    """Our nodes: hosts in their zones, routers and firewalls with their interfaces; and the
    nodes left out because no data link reaches them."""
    out_nodes, left_out = [], []
    router_ifaces, host_zones = lab.router_ifaces, lab.host_zones
    for n, cn in nodes.items():
        k = cn.ours
        desc = f"containerlab {cn.kind}" + (f" {cn.image}" if cn.image else "")
        if cn.group:
            desc += f", group {cn.group}"
        if cn.mgmt:
            desc += f", mgmt {cn.mgmt}"
        if k == "bridge":
            continue
        if end_system(k):
            # several links: the default route goes out of the first zone that has a router
            zones = sorted(host_zones[n], key=lambda z: not any(z in i for i in router_ifaces.values()))
            if not zones:
                left_out.append(n)
                continue
            node = {"name": names[n], "kind": k, "role": host_role(n, cn.labels)}
            ifaces = [{"zone": z, **({"ip": str(ips[(n, z)])} if (n, z) in ips else {})} for z in zones]
            if len(zones) == 1:
                node.update(ifaces[0])
            else:
                node["interfaces"] = ifaces
            node["description"] = desc
            zone_routers = sorted(r for r in router_ifaces if zones[0] in router_ifaces[r])
            if len(zone_routers) > 1:
                node["gateway"] = names[zone_routers[0]]
            out_nodes.append(node)
            continue
        ifaces = [{"zone": z} for z in router_ifaces[n]]
        if not ifaces and not any(n in (a, b) for a, _, b, _ in lab.p2p):
            left_out.append(n)
            continue
        node = {"name": names[n], "kind": k, "description": desc}
        if ifaces:
            node["interfaces"] = ifaces
        if NODE_KINDS[k].filters:
            node["default"] = "allow"      # the clab file has no policy
        out_nodes.append(node)
    return out_nodes, left_out


# -- the import -------------------------------------------------------------------------------
def convert_clab(path) -> ClabImport:
    """Read a ``*.clab.yml`` file; return the text of an equivalent topology (format v2), its
    notes and what was not imported. Refuses (``UserError``) a lab of which nothing stays."""
    path = Path(path)
    doc = load_yaml(path, "containerlab")
    data, topo, _ = _clab_shape(doc)
    nodes, unread = resolve_nodes(doc, topo)
    notes: list[str] = []
    dropped: list[str] = []
    for key in data:
        if key not in ("name", "topology", "mgmt"):
            unread.setdefault("top level", Counter())[key] += 1
    for key in topo:
        if key not in ("defaults", "kinds", "groups", "nodes", "links"):
            unread.setdefault("topology", Counter())[key] += 1
    for cn in nodes.values():
        if known_kind(cn.kind) is None:
            notes.append(f"node {cn.name}: containerlab kind {cn.kind!r} is not in the kind "
                         f"table, imported as a {cn.ours}")
    taken: set[str] = set()
    names = {n: _name(n, taken) for n in nodes}
    links = data_links(doc, topo, nodes, notes, dropped, unread)
    lab = _Segments({n: cn.ours for n, cn in nodes.items()})
    lab.bridges(links, names)
    lab.links(links, names, taken)
    given, ips = lab.lab_addresses(nodes, notes)
    out_zones, out_links = _addressed(doc, lab, names, taken, given)
    out_nodes, left_out = _nodes(nodes, names, lab, ips)
    _mgmt_note(data, {n: cn for n, cn in nodes.items() if n not in left_out}, notes, unread)
    if left_out:
        notes.append(f"nodes with no data link (management only), not imported: {', '.join(left_out)}")
        dropped.append(f"nodes with no data link: {_some(left_out)}")
    for node in out_nodes:
        if node["kind"] == "host" and "interfaces" in node:
            zones = [i["zone"] for i in node["interfaces"]]
            notes.append(f"host {node['name']}: on {len(zones)} links, one interface in each of "
                         f"{', '.join(zones)} (default route in {zones[0]})")
    if not out_nodes:
        why = "; ".join(dropped) or "no node of the lab has a data link"
        raise UserError(f"nothing to import, no node of the lab stays in the twin: {why}", str(path))
    if not out_zones:
        notes.append("routers only: imported as routers and point-to-point links, no zone "
                     "(add hosts and zones by hand to run drills)")
    text = _text(path, data, out_zones, out_links, out_nodes, notes)
    return ClabImport(text, notes, unread, dropped)


def import_clab(path) -> str:
    """The text of the topology :func:`convert_clab` makes of ``path``."""
    return convert_clab(path).text


def _mgmt_note(data: dict, nodes: dict[str, ClabNode], notes: list[str],
               unread: dict[str, Counter]) -> None:
    """The management network is dropped: one note saying what it was."""
    mgmt = data.get("mgmt") or {}
    for key in mgmt:
        unread.setdefault("mgmt", Counter())[key] += 1
    with_addr = [n for n, cn in nodes.items() if cn.mgmt]
    if mgmt or with_addr:
        net = mgmt.get("network", "clab")
        subnet = mgmt.get("ipv4-subnet") or mgmt.get("ipv4_subnet") or "docker's default"
        notes.append(f"management network {net} ({subnet}) is containerlab's out-of-band "
                     f"docker network: not part of the twin"
                     + (f"; mgmt addresses kept in the descriptions of {', '.join(with_addr)}"
                        if with_addr else ""))


def _text(path: Path, data: dict, out_zones, out_links, out_nodes, notes) -> str:
    """The topology file: a header saying where it came from and what was derived, then YAML."""
    doc = {
        "version": 2, "name": _name(str(data.get("name", path.stem.split(".")[0])), set()),
        "classification": "UNCLASSIFIED",
        "description": f"Imported from containerlab topology {data.get('name', path.name)}",
    }
    if out_zones:
        doc["zones"] = out_zones
    if out_links:
        doc["links"] = out_links
    doc["nodes"] = out_nodes
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    # comment lines: whatever the clab file holds must not start a line of YAML of its own
    header = [(f"# Imported from {one_line(str(path))} (containerlab lab "
               f"'{one_line(str(data.get('name', '?')), 120)}', sha256 {digest}...)"),
              "# by `cyberrange topo import` (docs/containerlab-import.md). Zones got 10.200.N.0/24 and",
              "# router links 172.31.x.y/30 from the import pools; firewalls got 'default: allow'",
              "# (no policy in a clab file). Edit freely; re-importing overwrites this file."]
    header += [f"# note: {one_line(n)}" for n in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=120)
