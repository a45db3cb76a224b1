"""Interop: import a containerlab topology, export the model as GraphML.

containerlab (https://containerlab.dev) describes a lab as::

    name: lab1
    topology:
      defaults: {kind: linux}            # optional
      kinds: {nokia_srlinux: {image: ...}}
      nodes:
        r1: {kind: nokia_srlinux, image: ..., mgmt-ipv4: 172.20.20.11, labels: {role: core}}
        pc1: {kind: linux, image: alpine}
        br1: {kind: bridge}
      links:
        - endpoints: ["r1:e1-1", "pc1:eth1"]

It has no addresses on data links and no firewall policy, so the import derives what our format
needs and says so in a header comment of the file it writes:

- kinds map to our node kinds (``KIND_MAP``; a ``linux`` node with an FRR/VyOS/BIRD image or the
  label ``role: router`` is a router too): router and switch OSes become routers, firewall
  OSes become firewalls (``default: allow``: the policy is not in the clab file), ``bridge`` and
  ``ovs-bridge`` become a zone, everything else is a host whose role comes from the label
  ``role`` (or ``cyberrange.role``), else from its name (web, dns, mail, plc, ...), else
  ``workstation`` / ``server`` by whether the name says so;
- a link between two routers becomes one of our point-to-point ``links`` (a /30 from
  172.31.0.0/16); a host on a router port becomes a zone of its own (a /24 from 10.200.N.0/24);
  everything attached to one bridge (or to bridges linked together) becomes one zone;
- a host on several links keeps its first (our v1 hosts sit in one zone); the others are
  listed in the header comment; the management network (``mgmt-ipv4``) is not part of the twin.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path

import networkx as nx
import yaml

from cyberrange.errors import UserError
from cyberrange.model.topology import NODE_KINDS, ROLES, Topology
from cyberrange.model.yamlsrc import Doc, did_you_mean, load_yaml, one_line

ZONE_POOL = ipaddress.ip_network("10.200.0.0/16")      # /24 per derived zone
LINK_POOL = ipaddress.ip_network("172.31.0.0/16")      # /30 per router-router link

# containerlab kind (a prefix is enough) -> our kind; checked in order
KIND_MAP: list[tuple[str, str]] = [
    ("bridge", "bridge"), ("ovs-bridge", "bridge"),
    ("fortinet", "firewall"), ("fortios", "firewall"), ("paloalto", "firewall"),
    ("vr-pan", "firewall"), ("juniper_vsrx", "firewall"), ("vr-vsrx", "firewall"),
    ("checkpoint", "firewall"), ("vr-ftdv", "firewall"), ("cisco_ftdv", "firewall"),
    ("srl", "router"), ("nokia_srlinux", "router"), ("nokia_sros", "router"),
    ("ceos", "router"), ("arista_ceos", "router"), ("arista_veos", "router"),
    ("crpd", "router"), ("juniper_crpd", "router"), ("crpwd", "router"), ("juniper_", "router"),
    ("vr-", "router"), ("frr", "router"), ("sonic", "router"), ("cisco_", "router"),
    ("xrd", "router"), ("cvx", "router"), ("vyos", "router"), ("openbsd", "router"),
    ("mikrotik", "router"), ("huawei", "router"), ("dell_", "router"), ("ipinfusion", "router"),
    ("linux", "host"), ("host", "host"), ("ext-container", "host"), ("k8s-kind", "host"),
]

ROLE_HINTS: list[tuple[str, str]] = [
    ("c2", "c2-server"), ("web", "web-server"), ("www", "web-server"), ("dns", "dns-server"),
    ("mail", "mail-server"), ("smtp", "mail-server"), ("dc", "domain-controller"),
    ("ad", "domain-controller"), ("file", "file-server"), ("nas", "file-server"),
    ("print", "printer"), ("hmi", "hmi"), ("plc", "plc"), ("radio", "radio-gateway"),
    ("srv", "server"), ("server", "server"), ("db", "server"),
]


ROUTER_IMAGES = ("frr", "vyos", "bird", "quagga", "openbgpd", "gobgp")


def clab_kind(kind: str, spec: dict | None = None) -> str:
    """Our kind for a clab node: by its kind; a ``linux`` node is a router when its label
    ``role`` says router/firewall or its image is a routing suite (FRR, VyOS, BIRD, ...)."""
    k = kind.lower()
    spec = spec or {}
    labels = spec.get("labels") or {}
    for key in ("cyberrange.role", "role"):
        if _forwards(labels.get(key)):
            return labels[key]
    ours = next((o for prefix, o in KIND_MAP if k.startswith(prefix)), "host")
    image = str(spec.get("image", "")).lower().rsplit("/", 1)[-1]
    if _end_system(ours) and any(image.startswith(r) for r in ROUTER_IMAGES):
        return "router"
    return ours


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


def _role(name: str, labels: dict) -> str:
    for key in ("cyberrange.role", "role", "graph-role"):
        if labels.get(key) in ROLES:
            return labels[key]
    words = re.split(r"[^a-z0-9]+", name.lower())
    for hint, role in ROLE_HINTS:
        if any(w == hint or w.startswith(hint) for w in words):
            return role
    return "workstation"


def import_clab(path) -> str:
    """Read a ``*.clab.yml`` file; return the text of an equivalent topology (format v1)."""
    path = Path(path)
    doc = load_yaml(path, "containerlab")
    data, topo, clab_nodes = _clab_shape(doc)
    default_kind = str((topo.get("defaults") or {}).get("kind", "linux"))
    taken: set[str] = set()
    names = {n: _name(n, taken) for n in clab_nodes}
    kinds = {n: clab_kind(str((spec or {}).get("kind", default_kind)), spec)
             for n, spec in clab_nodes.items()}
    notes: list[str] = []
    links = _data_links(doc, topo, clab_nodes, notes)
    lab = _Segments(kinds)
    lab.bridges(links, names)
    lab.links(links, names, taken)
    for h, extra in lab.host_extra.items():
        notes.append(f"host {h}: kept in zone {lab.zone_of_host[h]}; also linked to {', '.join(extra)} (not imported)")
    for n, k in kinds.items():
        if _end_system(k) and n not in lab.zone_of_host:
            notes.append(f"host {n}: no data link (management only), not imported")
    out_zones, out_links = _addressed(doc, path, lab, names, taken)
    out_nodes = _nodes(clab_nodes, default_kind, names, lab, notes)
    return _text(path, data, out_zones, out_links, out_nodes, notes)


def _forwards(kind) -> bool:
    """Our kind ``kind`` forwards (a router or firewall); a clab bridge is no node kind of ours."""
    return isinstance(kind, str) and kind in NODE_KINDS and NODE_KINDS[kind].forwards


def _end_system(kind) -> bool:
    return isinstance(kind, str) and kind in NODE_KINDS and NODE_KINDS[kind].end_system


def _data_links(doc: Doc, topo: dict, clab_nodes: dict, notes: list[str]) -> list[tuple]:
    """The links between lab nodes, as ``((node, iface), (node, iface))``; links that leave the
    lab (host, mgmt-net, macvlan, vxlan) are skipped with a note."""
    links = []
    for k, l in enumerate(topo.get("links") or []):
        eps = (l or {}).get("endpoints")
        if not (isinstance(eps, list) and len(eps) == 2):
            notes.append(f"link {k + 1}: not two endpoints, skipped")
            continue
        ends = []
        for ep in eps:
            node, _, iface = str(ep).partition(":")
            if node not in clab_nodes:
                if node in ("host", "mgmt-net", "macvlan", "vxlan"):
                    notes.append(f"link {k + 1}: endpoint {ep} leaves the lab, skipped")
                    ends = None
                    break
                raise doc.error(f"link {k + 1}: unknown node '{node}'"
                                f"{did_you_mean(node, clab_nodes)}", ("topology", "links", k))
            ends.append((node, iface))
        if ends:
            links.append(tuple(ends))
    return links


class _Segments:
    """The zones and router links the lab's links make, and where each node attaches."""

    def __init__(self, kinds: dict[str, str]):
        self.kinds = kinds
        self.zones: dict[str, dict] = {}     # our zone name -> {"from": what it was}
        self.zone_of_host: dict[str, str] = {}
        self.router_ifaces: dict[str, list[str]] = {n: [] for n, k in kinds.items()
                                                    if _forwards(k)}
        self.host_extra: dict[str, list[str]] = {}
        self.p2p: list[tuple] = []           # (router a, its iface, router b, its iface)

    def bridges(self, links, names) -> None:
        """Everything attached to one bridge (or to bridges linked together) is one zone."""
        kinds = self.kinds
        bridged = nx.Graph()
        for (a, ia), (b, ib) in links:
            if kinds[a] == "bridge" or kinds[b] == "bridge":
                bridged.add_edge(a, b)
        for comp in nx.connected_components(bridged):
            bridges = sorted(n for n in comp if kinds[n] == "bridge")
            zname = names[bridges[0]]          # the bridge is not a node of ours: its name is free
            self.zones[zname] = {"from": "bridge " + ", ".join(bridges)}
            for n in sorted(comp):
                if kinds[n] == "bridge":
                    continue
                self.attach(n, zname)

    def links(self, links, names, taken) -> None:
        """Router to router: a point-to-point link; a host on a router port or two hosts
        linked directly: a zone of their own (or the zone one of them has already)."""
        kinds = self.kinds
        for (a, ia), (b, ib) in links:
            if kinds[a] == "bridge" or kinds[b] == "bridge":
                continue
            ra, rb = _forwards(kinds[a]), _forwards(kinds[b])
            if ra and rb:
                self.p2p.append((a, ia, b, ib))
                continue
            if ra or rb:
                r, ri, h = (a, ia, b) if ra else (b, ib, a)
                if h in self.zone_of_host:
                    self.host_extra.setdefault(h, []).append(f"{r}:{ri}")
                    continue
                zname = _name(f"{names[r]}-{ri}", taken)
                self.zones[zname] = {"from": f"{r} port {ri}"}
            else:
                if a in self.zone_of_host or b in self.zone_of_host:
                    for h, other in ((a, b), (b, a)):
                        if h in self.zone_of_host and other not in self.zone_of_host:
                            self.attach(other, self.zone_of_host[h])
                    continue
                zname = _name(f"{names[a]}-{names[b]}", taken)
                self.zones[zname] = {"from": f"link {a} - {b}"}
            for n in (a, b):
                self.attach(n, zname)

    def attach(self, n, zname) -> None:
        kind = self.kinds[n]
        if _forwards(kind):
            if zname not in self.router_ifaces[n]:
                self.router_ifaces[n].append(zname)
        elif _end_system(kind):
            if n in self.zone_of_host:
                if self.zone_of_host[n] != zname:
                    self.host_extra.setdefault(n, []).append(zname)
            else:
                self.zone_of_host[n] = zname


def _addressed(doc: Doc, path: Path, lab: _Segments, names, taken) -> tuple[dict, list]:
    """Our zones and links with subnets from the import pools."""
    zone_nets = ZONE_POOL.subnets(new_prefix=24)
    link_nets = LINK_POOL.subnets(new_prefix=30)
    for what, count, pool, size in (("zones", len(lab.zones), ZONE_POOL, 24),
                                    ("router links", len(lab.p2p), LINK_POOL, 30)):
        if count > 2 ** (size - pool.prefixlen):
            raise doc.error(f"{count} {what} to import: more than the /{size}s of {pool} "
                            f"({2 ** (size - pool.prefixlen)})", ("topology",))
    out_zones = {}
    for zname, z in lab.zones.items():
        out_zones[zname] = {"subnet": str(next(zone_nets)), "description": f"from containerlab {z['from']}"}
    if not out_zones:
        raise UserError("no host sits on a link or bridge; nothing to import as a zone", str(path))
    out_links = []
    for a, ia, b, ib in lab.p2p:
        out_links.append({"name": _name(f"{names[a]}-{names[b]}", taken),
                          "endpoints": [names[a], names[b]], "subnet": str(next(link_nets)),
                          "description": f"containerlab link {a}:{ia} - {b}:{ib}"})
    return out_zones, out_links


def _nodes(clab_nodes: dict, default_kind: str, names, lab: _Segments, notes) -> list[dict]:
    """Our nodes: hosts in their zone, routers and firewalls with their interfaces; nodes on no
    data link are left out with a note."""
    out_nodes = []
    router_ifaces, zone_of_host = lab.router_ifaces, lab.zone_of_host
    for n, spec in clab_nodes.items():
        spec = spec or {}
        k = lab.kinds[n]
        kind_text = spec.get("kind", default_kind)
        desc = f"containerlab {kind_text}" + (f" {spec['image']}" if spec.get("image") else "")
        if spec.get("mgmt-ipv4"):
            desc += f", mgmt {spec['mgmt-ipv4']}"
        labels = spec.get("labels") or {}
        if _end_system(k) and n in zone_of_host:
            node = {"name": names[n], "kind": k, "role": _role(n, labels),
                    "zone": zone_of_host[n], "description": desc}
            zone_routers = [r for r in router_ifaces if zone_of_host[n] in router_ifaces[r]]
            if len(zone_routers) > 1:
                node["gateway"] = names[sorted(zone_routers)[0]]
            out_nodes.append(node)
        elif _forwards(k):
            ifaces = [{"zone": z} for z in router_ifaces[n]]
            has_link = any(n in (a, b) for a, _, b, _ in lab.p2p)
            if not ifaces and not has_link:
                notes.append(f"{k} {n}: no data link, not imported")
                continue
            node = {"name": names[n], "kind": k, "description": desc}
            if ifaces:
                node["interfaces"] = ifaces
            if NODE_KINDS[k].filters:
                node["default"] = "allow"      # the clab file has no policy
            out_nodes.append(node)
    return out_nodes


def _text(path: Path, data: dict, out_zones, out_links, out_nodes, notes) -> str:
    """The topology file: a header saying where it came from and what was derived, then YAML."""
    doc = {
        "version": 1, "name": _name(str(data.get("name", path.stem.split(".")[0])), set()),
        "classification": "UNCLASSIFIED",
        "description": f"Imported from containerlab topology {data.get('name', path.name)}",
        "zones": out_zones,
    }
    if out_links:
        doc["links"] = out_links
    doc["nodes"] = out_nodes
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    # comment lines: whatever the clab file holds must not start a line of YAML of its own
    header = [f"# Imported from {one_line(str(path))} (containerlab lab "
              f"'{one_line(str(data.get('name', '?')), 120)}', sha256 {digest}...)",
              "# by `cyberrange topo import`. Zones got 10.200.N.0/24 and router links 172.31.x.y/30",
              "# from the import pools; firewalls got 'default: allow' (no policy in a clab file).",
              "# Edit freely; re-importing overwrites this file."]
    header += [f"# note: {one_line(n)}" for n in notes]
    return "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=120)


def _clab_shape(doc: Doc) -> tuple[dict, dict, dict]:
    """``(file, topology, nodes)`` of a containerlab document, with every part the import reads
    of the type it expects (else a one-line error at its position)."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("topology"), dict):
        raise doc.error("not a containerlab file (no 'topology:' mapping)",
                        ("topology",) if isinstance(data, dict) else ())
    topo = data["topology"]
    expect = [(("defaults",), dict), (("nodes",), dict), (("links",), list)]
    for part, want in expect:
        value = topo.get(part[0])
        if value is not None and not isinstance(value, want):
            raise doc.error(f"topology.{part[0]} must be a {'mapping' if want is dict else 'list'}",
                            ("topology",) + part)
    clab_nodes = topo.get("nodes") or {}
    if not clab_nodes:
        raise doc.error("topology.nodes is empty", ("topology", "nodes"))
    for name, spec in clab_nodes.items():
        at = ("topology", "nodes", name)
        if spec is not None and not isinstance(spec, dict):
            raise doc.error(f"node {name!r} must be a mapping (kind, image, ...)", at)
        for key in ("labels",):
            if spec and spec.get(key) is not None and not isinstance(spec[key], dict):
                raise doc.error(f"node {name!r}: {key} must be a mapping", at + (key,))
    for k, link in enumerate(topo.get("links") or []):
        if link is not None and not isinstance(link, dict):
            raise doc.error(f"link {k + 1} must be a mapping with 'endpoints'",
                            ("topology", "links", k))
    return data, topo, clab_nodes


# -- GraphML --------------------------------------------------------------------------------
def to_graph(topo: Topology) -> nx.Graph:
    """The model as one graph: a node per topology node and per zone (``zone:NAME``), an edge
    per interface (node - zone) carrying the interface address and the link profile."""
    g = nx.Graph(name=topo.name, classification=topo.classification)
    for z in topo.zones.values():
        g.add_node(f"zone:{z.name}", kind="zone", role="link" if z.p2p else "zone", zone=z.name,
                   ip=str(z.subnet), classification=z.classification,
                   vlan=z.vlan if z.vlan is not None else -1, description=z.description)
    for n in topo.nodes.values():
        g.add_node(n.name, kind=n.kind, role=n.role,
                   zone=",".join(i.zone for i in n.interfaces), ip=str(n.ip) if n.interfaces else "",
                   classification=n.classification or topo.classification,
                   services=",".join(f"{s.type}/{s.proto}/{s.port}" for s in n.services),
                   software=",".join(f"{s.name} {s.version}" for s in n.software),
                   crown_jewel=n.name in topo.crown_jewels, entry_point=n.name in topo.entry_points)
        for i in n.interfaces:
            p = i.profile or topo.zones[i.zone].profile
            g.add_edge(n.name, f"zone:{i.zone}", ip=str(i.ip), interface=i.devname,
                       profile=p.name if p else "",
                       bandwidth_mbit=float(p.bandwidth_mbit or 0) if p else 0.0,
                       delay_ms=float(p.delay_ms) if p else 0.0,
                       jitter_ms=float(p.jitter_ms) if p else 0.0,
                       loss_pct=float(p.loss_pct) if p else 0.0)
    return g


def export_graphml(topo: Topology, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(to_graph(topo), out)
    return out
