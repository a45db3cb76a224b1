"""Load a topology YAML file into a fully resolved :class:`Topology`.

The pipeline is a row of small explicit stages (in the manner of netlab's ``augment`` steps);
each one either fills in part of the model or raises the first problem it finds as a
``UserError`` that reads ``FILE:LINE:COL: what is wrong (did you mean X?)``:

1. ``load_yaml``      parse, keep line/col of every key and value, reject duplicate keys
2. ``_version_keys``  a version 1 file must not use version 2 keys
3. ``schema_error``   JSON Schema (schemas/topology.schema.json): shapes, types, unknown keys
4. ``_includes``      (v2) merge included files into the document; positions keep their file
5. ``_instances``     (v2) expand block instances into ordinary zones/nodes/links/sensors
6. ``_names``         zones, links and nodes share one namespace; sensors are unique
7. ``_profiles``      shaping profiles (v2: the built-ins of profiles.yaml first)
8. ``_zones``         subnets (strict CIDR), classification, profile, switch and VLAN per zone
9. ``_links``         point-to-point links become two-member zones with ``p2p=True``
10. ``_overlaps``     no two subnets overlap (sorted sweep, not all pairs)
11. ``_nodes``        hosts, routers, firewalls; interfaces (trunks expand per VLAN)
12. ``_addresses``    default addresses: router interfaces, link ends, then hosts
13. ``_gateways``     each host's default gateway
14. ``_static_routes`` routes given by hand (v2)
15. ``_services``, ``_software``
16. ``_rules``        firewall rules resolved to networks
17. ``_sensors``, ``_benign``, ``_missions``, ``_targets`` (crown jewels, entry points)
18. ``compute_routes`` static routes on every router (routing.py), hand-given ones winning

After loading nothing in the model is optional: every interface has an address, every host a
gateway (or None when its zone has no router), every rule endpoint a list of networks.
Elements that came from an included file or a block keep the file and line they were written
at, so errors point there.
"""
from __future__ import annotations

import ast
import copy
import fnmatch
import ipaddress
import json
import os
import re
from functools import cache
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.model.topology import (
    Account,
    BenignTraffic,
    Endpoint,
    Interface,
    Link,
    LinkProfile,
    MissionThread,
    Node,
    Rule,
    Sensor,
    Service,
    Software,
    Topology,
    TrafficProfile,
    Zone,
)
from cyberrange.model import inputpaths
from cyberrange.model.yamlsrc import LIMITS, Doc, did_you_mean, load_yaml, schema_error

SCHEMA_DIR = Path(__file__).parent / "schemas"
PROFILES_FILE = Path(__file__).parent / "profiles.yaml"
UDP_SERVICES = ("dns", "c2-dns", "ntp", "syslog")    # their proto defaults to udp
MAX_NODES = 1000          # version 1 (also in the schema)
MAX_NODES_V2 = 10000      # version 2, after includes and block instances
# at most this many of each top-level part (v2: after includes and block instances); checked
# before the schema and before any expansion, so that a small file cannot make a huge model
MAX_ITEMS = {"nodes": MAX_NODES_V2, "zones": 10000, "links": 10000, "sensors": 10000,
             "profiles": 1000, "blocks": 1000, "instances": 10000, "missions": 10000,
             "crown_jewels": 10000, "entry_points": 10000, "include": 1000}

# keys only a version 2 file may use: where they may appear -> the keys
V2_TOP_KEYS = ("include", "blocks", "instances", "missions", "crown_jewels", "entry_points")
V2_ZONE_KEYS = ("switch", "vlan")
V2_NODE_KEYS = ("routes", "software")
V2_IFACE_KEYS = ("trunk", "switch", "vlans", "ips")
# what an included file may contribute
MERGED_MAPS = ("profiles", "zones", "blocks", "missions")
MERGED_LISTS = ("links", "nodes", "sensors", "instances", "crown_jewels", "entry_points")


@cache
def topology_schema() -> dict:
    return json.loads((SCHEMA_DIR / "topology.schema.json").read_text())


@cache
def _fragment_schema() -> dict:
    """The topology schema for an included file: every top-level key optional."""
    schema = copy.deepcopy(topology_schema())
    schema["required"] = []
    schema.pop("allOf", None)
    return schema


@cache
def _part_schema(part: str) -> dict:
    """A schema for one element (``node``, ``zone``, ...), for elements made from blocks."""
    return {"$defs": topology_schema()["$defs"], "$ref": f"#/$defs/{part}"}


def load_topology(path) -> Topology:
    """Read, validate and complete the topology in ``path``; raise ``UserError`` on bad input."""
    doc = load_yaml(path, "topology")
    if not isinstance(doc.data, dict):
        raise doc.error("a topology file must be a mapping with version, name, zones, nodes, ...")
    _counts(doc)
    _version_keys(doc)
    err = schema_error(doc, topology_schema())
    if err:
        raise err
    includes: list[str] = []
    if doc.data["version"] >= 2:
        for key in ("zones", "profiles", "blocks", "missions"):
            doc.data.setdefault(key, {})
        for key in MERGED_LISTS:
            doc.data.setdefault(key, [])
        includes = _includes(doc)
        _instances(doc)
        if not doc.data["nodes"]:
            raise doc.error("the topology has no nodes (nor do its includes and block instances)")
        if len(doc.data["nodes"]) > MAX_NODES_V2:
            raise doc.error(f"too many nodes: {len(doc.data['nodes'])} after includes and "
                            f"block instances (at most {MAX_NODES_V2})")
    topo = _Builder(doc).build()
    topo.includes = includes
    return topo


# -- bandwidth with units ------------------------------------------------------------------

_BANDWIDTH = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit)(?:/s)?\s*$", re.IGNORECASE)
_BW_UNIT = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}


def parse_bandwidth(value) -> float | None:
    """Mbit/s from a number (already Mbit/s) or a string with a unit: ``"9.6kbit"`` -> 0.0096.
    None when the text is not a bandwidth."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _BANDWIDTH.match(str(value))
    if not m:
        return None
    return round(float(m[1]) * _BW_UNIT[m[2].lower()], 9)


@cache
def builtin_profiles() -> dict[str, LinkProfile]:
    """The built-in link profiles of ``profiles.yaml`` (lan, wan, satcom-geo, ...)."""
    doc = load_yaml(PROFILES_FILE)
    out = {}
    for name, p in doc.data.items():
        out[name] = _profile(doc, ("",), name, p)
    return out


def _profile(doc: Doc, path, name: str, p: dict) -> LinkProfile:
    bw = p.get("bandwidth")
    if bw is not None:
        mbit = parse_bandwidth(bw)
        if mbit is None or mbit <= 0:
            raise doc.error(f"bad bandwidth {bw!r}: give Mbit/s as a number > 0, or a string "
                            f"with a unit such as \"9.6kbit\", \"2mbit\", \"1gbit\"",
                            tuple(path) + ("bandwidth",))
        bw = mbit
    return LinkProfile(name=name, bandwidth_mbit=bw,
                       delay_ms=float(p.get("delay", 0)), jitter_ms=float(p.get("jitter", 0)),
                       loss_pct=float(p.get("loss", 0)))


def _counts(doc: Doc) -> None:
    """No top-level part holds more than ``MAX_ITEMS`` (cheap, before the schema's work)."""
    for key, most in MAX_ITEMS.items():
        value = doc.data.get(key)
        if isinstance(value, (list, dict)) and len(value) > most:
            raise doc.error(f"too many {key.replace('_', ' ')}: {len(value):,} (at most {most:,})",
                            (key,), key=True)


# -- version 1 files must not use version 2 keys -----------------------------------------

def _version_keys(doc: Doc) -> None:
    d = doc.data
    if d.get("version") != 1:
        return

    def need(path):
        raise doc.error(f"'{path[-1]}' needs version: 2 (this file says version: 1)", path,
                        key=True)

    for k in V2_TOP_KEYS:
        if k in d:
            need((k,))
    zones = d.get("zones")
    if isinstance(zones, dict):
        for name, z in zones.items():
            for k in V2_ZONE_KEYS:
                if isinstance(z, dict) and k in z:
                    need(("zones", name, k))
    nodes = d.get("nodes")
    for i, n in enumerate(nodes if isinstance(nodes, list) else []):
        if not isinstance(n, dict):
            continue
        for k in V2_NODE_KEYS:
            if k in n:
                need(("nodes", i, k))
        if n.get("kind") == "host" and "interfaces" in n:
            need(("nodes", i, "interfaces"))
        ifaces = n.get("interfaces")
        for j, spec in enumerate(ifaces if isinstance(ifaces, list) else []):
            for k in V2_IFACE_KEYS:
                if isinstance(spec, dict) and k in spec:
                    need(("nodes", i, "interfaces", j, k))


# -- includes --------------------------------------------------------------------------

def _includes(doc: Doc) -> list[str]:
    """Merge every file named by ``include:`` (recursively, each file once) into ``doc``.
    Returns the included files' paths in merge order.

    An included file must lie in the top-level file's folder tree (or an allowed folder, see
    ``model/inputpaths.py``): that is checked before it is opened, and all the files together
    may have at most twice the size of one topology."""
    root_dir = os.path.dirname(os.path.abspath(doc.file))
    tree = inputpaths.tree_of(doc.file)
    merged: list[str] = []
    seen = {os.path.realpath(doc.file)}
    budget = [2 * LIMITS["topology"].max_bytes - os.path.getsize(doc.file)]

    def show(file: str) -> str:
        return os.path.relpath(os.path.abspath(file), root_dir)

    def visit(cur: Doc, chain: list[tuple[str, str]]):
        for j, rel in enumerate(cur.data.get("include", [])):
            path = ("include", j)
            real = inputpaths.confine(rel, os.path.dirname(cur.file), tree)
            if real is None:
                raise cur.error(inputpaths.outside_message("included file", rel, tree), path)
            target = os.path.normpath(os.path.join(os.path.dirname(cur.file), rel))
            reals = [c[0] for c in chain]
            if real in reals:
                names = [c[1] for c in chain[reals.index(real):]] + [show(target)]
                raise cur.error(f"include cycle: {' -> '.join(names)}", path)
            if real in seen:
                continue                      # included already (a diamond): merge once
            if not os.path.isfile(target):
                raise cur.error(f"included file '{rel}' not found (looked for {target})", path)
            budget[0] -= os.path.getsize(target)
            if budget[0] < 0:
                raise cur.error(f"the topology and its includes are too large together (at "
                                f"most {2 * LIMITS['topology'].max_bytes:,} bytes)", path)
            inc = load_yaml(target, "topology")
            if not isinstance(inc.data, dict):
                raise inc.error("an included file must be a mapping with zones, nodes, ...")
            _counts(inc)
            err = schema_error(inc, _fragment_schema())
            if err:
                raise err
            for key in ("name", "classification", "domain", "benign"):
                if key in inc.data:
                    raise inc.error(f"'{key}' belongs in the main topology file, not in an "
                                    f"included file", (key,), key=True)
            seen.add(real)
            merged.append(target)
            _merge(doc, inc)
            for key in (*MERGED_MAPS, *MERGED_LISTS):
                if len(doc.data[key]) > MAX_ITEMS[key]:
                    raise cur.error(f"too many {key.replace('_', ' ')} with '{rel}' included: "
                                    f"{len(doc.data[key]):,} (at most {MAX_ITEMS[key]:,})", path)
            visit(inc, chain + [(real, show(target))])

    visit(doc, [(os.path.realpath(doc.file), show(doc.file))])
    return merged


def _merge(doc: Doc, inc: Doc) -> None:
    """Append ``inc``'s zones, nodes, ... to ``doc``; positions keep ``inc``'s file."""
    d = doc.data
    offset = {key: len(d[key]) for key in MERGED_LISTS}
    for key in MERGED_MAPS:
        for name, value in inc.data.get(key, {}).items():
            if name in d[key]:
                what = {"profiles": "profile", "zones": "zone", "blocks": "block",
                        "missions": "mission"}[key]
                file, line, _ = doc.where((key, name), key=True)
                raise inc.error(f"{what} '{name}' is defined twice: here and in {file}:{line}",
                                (key, name), key=True)
            d[key][name] = value
    for key in MERGED_LISTS:
        d[key].extend(inc.data.get(key, []))

    def moved(path):
        if len(path) < 2 or path[0] not in d or path[0] == "include":
            return None
        if path[0] in offset:
            if not isinstance(path[1], int):
                return None
            return (path[0], path[1] + offset[path[0]]) + path[2:]
        if path[0] in MERGED_MAPS:
            return path
        return None

    for source, target in ((inc.values, doc.values), (inc.keys, doc.keys)):
        for path, (line, col, *_) in source.items():
            new = moved(path)
            if new is not None:
                target[new] = (line, col, inc.file)


# -- blocks and instances --------------------------------------------------------------

_TEMPLATE = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b,
        ast.Div: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


class _Expander:
    """Substitutes ``{param}`` and ``{i+10}``-style expressions in one block instance."""

    def __init__(self, doc: Doc, block: str, env: dict, params: list[str]):
        self.doc, self.block, self.env, self.params = doc, block, env, params
        self.path: tuple = ()          # the block path being expanded, for errors
        self.cache: dict[str, object] = {}

    def fail(self, message: str):
        raise self.doc.error(f"block {self.block}: {message}", self.path)

    def text(self, text: str):
        """A string with templates substituted; a string that is one whole ``{...}`` whose value
        is an integer gives that integer (so ``vlan: "{i+10}"`` is a number)."""
        if "{" not in text:
            return text
        if text in self.cache:
            return self.cache[text]
        whole = _TEMPLATE.fullmatch(text)
        if whole:
            out = self.eval(whole[1], text)
        else:
            out = _TEMPLATE.sub(lambda m: str(self.eval(m[1], text)), text)
        self.cache[text] = out
        return out

    def key(self, text: str) -> str:
        return str(self.text(text))

    def eval(self, expr: str, text: str):
        try:
            tree = ast.parse(expr.strip(), mode="eval").body
        except SyntaxError:
            tree = None
        if tree is None:
            self.fail(f"bad template '{{{expr}}}' in '{text}': use a param, integers "
                      f"and + - * // %")
        return self._value(tree, expr, text)

    def _value(self, node, expr, text):
        if isinstance(node, ast.Name):
            if node.id not in self.env:
                self.fail(f"unknown param '{node.id}' in '{text}' (params: "
                          f"{', '.join(self.params) or 'none'})")
            return self.env[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self._num(node.operand, expr, text)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = self._num(node.left, expr, text), self._num(node.right, expr, text)
            if isinstance(node.op, (ast.FloorDiv, ast.Div, ast.Mod)) and b == 0:
                self.fail(f"division by zero in '{text}'")
            return _OPS[type(node.op)](a, b)
        self.fail(f"bad template '{{{expr}}}' in '{text}': use a param, integers and + - * // %")

    def _num(self, node, expr, text) -> int:
        v = self._value(node, expr, text)
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(f"'{{{expr}}}' in '{text}': arithmetic needs an integer, not {v!r}")
        return v

    def value(self, v, path: tuple):
        """Deep copy of ``v`` with every string (and mapping key) substituted."""
        self.path = path
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                self.path = path + (k,)
                out[self.key(k)] = self.value(x, path + (k,))
            return out
        if isinstance(v, list):
            return [self.value(x, path + (i,)) for i, x in enumerate(v)]
        return v


def _block_positions(doc: Doc, name: str) -> dict[tuple, list]:
    """Positions under ``blocks.<name>`` grouped by element: (section, key or index) ->
    [(values or keys, rest of path, position)]."""
    base = ("blocks", name)
    out: dict[tuple, list] = {}
    for which, table in (("v", doc.values), ("k", doc.keys)):
        for path, pos in table.items():
            if len(path) >= 4 and path[:2] == base:
                if len(pos) == 2:
                    pos = (pos[0], pos[1], doc.file)
                out.setdefault(path[2:4], []).append((which, path[4:], pos))
    return out


def _instances(doc: Doc) -> None:
    """Expand every ``instances:`` entry into ordinary zones, nodes, links and sensors."""
    d = doc.data
    blocks = d.get("blocks", {})
    positions: dict[str, dict] = {}
    for k, inst in enumerate(d.get("instances", [])):
        ipath = ("instances", k)
        name = inst["block"]
        if name not in blocks:
            hint = did_you_mean(name, blocks) or (
                f" (blocks: {', '.join(blocks)})" if blocks else " (no blocks are defined)")
            raise doc.error(f"unknown block '{name}'{hint}", ipath + ("block",))
        block = blocks[name]
        params = block.get("params", [])
        given = inst.get("with", {})
        for p in given:
            if p not in params:
                raise doc.error(f"block {name} has no param '{p}' (params: "
                                f"{', '.join(params) or 'none'})", ipath + ("with", p), key=True)
        free = [p for p in params if p not in given]
        if "count" in inst:
            if not free:
                raise doc.error(f"block {name}: 'count' numbers the first param not given in "
                                f"'with', but every param is given", ipath + ("count",), key=True)
            counter, free = free[0], free[1:]
            start = inst.get("start", 1)
            numbers = list(range(start, start + inst["count"]))
        else:
            counter, numbers = None, [None]
        if free:
            raise doc.error(f"block {name} needs a value for param '{free[0]}' (give it in "
                            f"'with:'{' or use count:' if counter is None else ''})", ipath)
        for section in ("nodes", "zones", "links", "sensors"):   # before expanding anything
            made = len(numbers) * len(block.get(section, []))
            if len(d[section]) + made > MAX_ITEMS[section]:
                raise doc.error(f"block {name}: {len(numbers):,} instances would make "
                                f"{len(d[section]) + made:,} {section} (at most "
                                f"{MAX_ITEMS[section]:,})", ipath)
        if name not in positions:
            positions[name] = _block_positions(doc, name)
        for n in numbers:
            env = dict(given)
            if counter is not None:
                env[counter] = n
            number = n if counter is not None else (env[params[0]] if params else k + 1)
            _instantiate(doc, name, block, _Expander(doc, name, env, params),
                         f"block {name} instance {number}", positions[name])


def _instantiate(doc: Doc, name: str, block: dict, ex: _Expander, label: str,
                 positions: dict) -> None:
    d = doc.data
    bpath = ("blocks", name)

    def graft(src: tuple, dst: tuple):
        for which, rest, pos in positions.get(src, ()):
            table = doc.values if which == "v" else doc.keys
            table[dst + tuple(ex.key(p) if isinstance(p, str) else p for p in rest)] = pos

    for zname, z in block.get("zones", {}).items():
        src = bpath + ("zones", zname)
        ex.path = src
        new = ex.key(zname)
        dst = ("zones", new)
        if not _NAME.match(new):
            raise doc.error(f"{label}: zone name '{new}' is not valid: a lowercase letter, then "
                            f"up to 30 of a-z, 0-9 and '-'", src, key=True)
        if new in d["zones"]:
            file, line, _ = doc.where(dst, key=True)
            raise doc.error(f"{label}: duplicate zone name '{new}' (first at {file}:{line})",
                            src, key=True)
        d["zones"][new] = ex.value(z, src)
        doc.keys[dst] = doc.keys[src]
        doc.values[dst] = doc.values[src]
        graft(("zones", zname), dst)
        doc.context[dst] = label
        err = schema_error(doc, _part_schema("zone"), dst)
        if err:
            raise err
    for section, part in (("links", "link"), ("nodes", "node"), ("sensors", "sensor")):
        for j, item in enumerate(block.get(section, [])):
            src = bpath + (section, j)
            dst = (section, len(d[section]))
            d[section].append(ex.value(item, src))
            doc.values[dst] = doc.values[src]
            graft((section, j), dst)
            doc.context[dst] = label
            err = schema_error(doc, _part_schema(part), dst)
            if err:
                raise err


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
            file=doc.file, version=d["version"],
        )
        self.v2 = self.topo.version >= 2
        # switch name -> {vlan id: zone name}, for zones that share a VLAN-aware switch
        self.switches: dict[str, dict[int, str]] = {}
        # next address to try per (zone, first offset): addresses are only ever taken, so the
        # lowest free one never moves down and default addressing stays linear
        self.cursor: dict[tuple[str, int], int] = {}
        # ip -> (owner description, path) for "used twice" errors
        self.used: dict[ipaddress.IPv4Address, tuple[str, tuple]] = {}
        # interfaces still waiting for an address: (node, interface, path of the yaml item)
        self.pending_router: list[tuple[Node, Interface, tuple]] = []
        self.pending_host: list[tuple[Node, Interface, tuple]] = []

    def build(self) -> Topology:
        for stage in (self._names, self._profiles, self._zones, self._switch_names, self._links,
                      self._overlaps, self._nodes, self._addresses, self._gateways,
                      self._static_routes, self._services, self._software, self._rules,
                      self._sensors, self._benign, self._missions, self._targets):
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
                first = doc.line_of(sensors[s["name"]], path)
                raise doc.error(f"duplicate sensor name '{s['name']}' (first at {first})", path)
            sensors[s["name"]] = path

    def _claim(self, seen, name, what, path):
        if name in seen:
            other, other_path = seen[name]
            first = self.doc.line_of(other_path, path, key=other == "zone")
            if other == what:
                raise self.doc.error(f"duplicate {what} name '{name}' (first at {first})", path)
            raise self.doc.error(
                f"{what} name '{name}' is already a {other} name ({first}); zones, links "
                f"and nodes share one namespace", path)
        seen[name] = (what, path)

    # -- 4. profiles ---------------------------------------------------------------------
    def _profiles(self):
        if self.v2:                           # built-ins first; the file's own override them
            self.topo.profiles.update(copy.deepcopy(builtin_profiles()))
        for name, p in self.doc.data.get("profiles", {}).items():
            self.topo.profiles[name] = _profile(self.doc, ("profiles", name), name, p)

    def _profile_ref(self, path, owner: str) -> LinkProfile | None:
        ref = self.doc.get(path)
        if ref is None:
            return None
        if isinstance(ref, dict):
            return _profile(self.doc, path, owner, ref)
        if ref not in self.topo.profiles:
            known = list(self.topo.profiles)
            hint = did_you_mean(ref, known) or (
                f" (defined profiles: {', '.join(known)})" if known else " (no profiles: are defined)")
            if not self.v2 and ref in builtin_profiles():
                hint = f" (the built-in profile '{ref}' needs version: 2)"
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
                vlan=z.get("vlan"), switch=z.get("switch", ""),
                src=doc.ref(path, key=True),
            )
            self._vlan(topo.zones[name], path)

    def _vlan(self, zone: Zone, path):
        """Zones naming the same switch share it, each on its own VLAN id."""
        doc = self.doc
        if zone.switch and zone.vlan is None:
            raise doc.error(f"zone {zone.name}: a zone on switch '{zone.switch}' needs a 'vlan' "
                            f"(1..4094)", path + ("switch",), key=True)
        if zone.vlan is not None and not zone.switch:
            raise doc.error(f"zone {zone.name}: 'vlan' needs 'switch' (the switch that carries "
                            f"the VLAN)", path + ("vlan",), key=True)
        if not zone.switch:
            return
        vlans = self.switches.setdefault(zone.switch, {})
        if zone.vlan in vlans:
            other = vlans[zone.vlan]
            first = doc.line_of(("zones", other, "vlan"), path)
            raise doc.error(f"duplicate VLAN {zone.vlan} on switch {zone.switch}: zone {other} "
                            f"has it already ({first})", path + ("vlan",))
        vlans[zone.vlan] = zone.name

    def _switch_names(self):
        """A shared switch gets its own name in the twin: it must not be a zone/link/node name."""
        d = self.doc.data
        names = set(d.get("zones", {})) | {l["name"] for l in d.get("links", [])} | \
            {n["name"] for n in d["nodes"]}
        for name, vlans in self.switches.items():
            if name in names:
                zone = vlans[min(vlans)]
                raise self.doc.error(f"switch name '{name}' is also a zone, link or node name; "
                                     f"give the switch its own name",
                                     ("zones", zone, "switch"))

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
        """Sort by first address and sweep, remembering the subnet that reaches furthest: two
        CIDR blocks overlap exactly when one contains the other, so every overlapping zone is
        caught against that one, in O(n log n)."""
        zones = list(self.topo.zones.values())
        order = {z.name: i for i, z in enumerate(zones)}
        pairs = []
        reach = None                               # (last address as int, zone)
        for z in sorted(zones, key=lambda z: (int(z.subnet.network_address), z.subnet.prefixlen)):
            first, last = int(z.subnet.network_address), int(z.subnet.broadcast_address)
            if reach is not None and first <= reach[0]:
                a, b = sorted((z, reach[1]), key=lambda x: order[x.name])
                pairs.append((order[b.name], order[a.name], b, a))
            if reach is None or last > reach[0]:
                reach = (last, z)
        if not pairs:
            return
        _, _, z, other = min(pairs, key=lambda p: (p[0], p[1]))
        what = "link" if z.p2p else "zone"
        path = self._zone_path(z) + ("subnet",)
        where = self.doc.line_of(self._zone_path(other), path, key=True)
        if self.doc.label(path) or self.doc.label(self._zone_path(other)):
            other_what = "link" if other.p2p else "zone"
            ofile, oline, _ = self.doc.where(self._zone_path(other), key=True)
            olabel = self.doc.label(self._zone_path(other))
            at = f"{olabel}, " if olabel and olabel != self.doc.label(path) else ""
            raise self.doc.error(f"subnet {z.subnet} overlaps {other_what} {other.name} "
                                 f"{other.subnet} ({at}{ofile}:{oline})", path)
        raise self.doc.error(
            f"{what} {z.name} subnet {z.subnet} overlaps {other.name} "
            f"({other.subnet}, {where})", path)

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
                if kind == "host" and key in self.ROUTER_ONLY and not self.v2:
                    raise doc.error(f"node {n['name']}: hosts have one 'zone' (and 'ip'), "
                                    f"not 'interfaces'", path + (key,), key=True)
                if kind == "host" and key in ("zone", "ip") and "interfaces" in n:
                    raise doc.error(f"node {n['name']}: give either 'zone' (and 'ip') or "
                                    f"'interfaces', not both", path + (key,), key=True)
                if kind != "firewall" and key in self.FIREWALL_ONLY:
                    raise doc.error(f"node {n['name']}: '{key}' is only for firewalls "
                                    f"(this node is a {kind})", path + (key,), key=True)
            node = Node(name=n["name"], kind=kind,
                        role=n.get("role", "workstation") if kind == "host" else kind,
                        default_action=n.get("default", "deny" if kind == "firewall" else "allow"),
                        classification=n.get("classification"),
                        description=n.get("description", ""),
                        src=doc.ref(path))
            pending = self.pending_host if kind == "host" else self.pending_router
            if kind == "host" and "interfaces" not in n:
                if "zone" not in n:
                    raise doc.error(f"node {n['name']}: a host needs a 'zone' (or, in version 2, "
                                    f"'interfaces')", path)
                zone = self._zone_of(path + ("zone",), hosts=True)
                iface = Interface(zone=zone.name, ip=None, prefixlen=zone.subnet.prefixlen,
                                  index=0, profile=zone.profile)
                node.interfaces.append(iface)
                if "ip" in n:
                    iface.ip = self._explicit_ip(node, zone, path + ("ip",))
                else:
                    pending.append((node, iface, path))
            else:
                attached: dict[str, tuple] = {}
                for j, spec in enumerate(n.get("interfaces", [])):
                    ipath = path + ("interfaces", j)
                    for zone, ip_path, zone_path, vlan in self._port(node, spec, ipath):
                        if zone.name in attached:
                            first = doc.line_of(attached[zone.name], zone_path)
                            raise doc.error(f"node {node.name}: a second interface in zone "
                                            f"{zone.name} (first at {first})", zone_path)
                        attached[zone.name] = zone_path
                        iface = Interface(zone=zone.name, ip=None,
                                          prefixlen=zone.subnet.prefixlen, index=j,
                                          profile=zone.profile, vlan=vlan)
                        node.interfaces.append(iface)
                        if ip_path is not None:
                            iface.ip = self._explicit_ip(node, zone, ip_path)
                        else:
                            pending.append((node, iface, ipath))
                port = len(n.get("interfaces", []))       # links take the next ports
                for link in topo.links.values():
                    if node.name in (link.a, link.b):
                        node.interfaces.append(Interface(
                            zone=link.name, ip=None, prefixlen=link.subnet.prefixlen,
                            index=port, profile=link.profile))
                        port += 1
                if not node.interfaces:
                    raise doc.error(f"node {node.name}: a {kind} needs at least one interface"
                                    f"{'' if kind == 'host' else ' or link'}", path)
            if node.classification is None:
                node.classification = (topo.zones[node.interfaces[0].zone].classification
                                       if kind == "host" else topo.classification)
            topo.nodes[node.name] = node

    def _port(self, node: Node, spec: dict, ipath):
        """The interfaces one ``interfaces:`` entry (one physical port) makes:
        [(zone, path of an explicit ip or None, path to point errors at, vlan or None)].
        An access port gives one; a trunk (``trunk: true``) one tagged subinterface per VLAN."""
        doc = self.doc
        if not spec.get("trunk"):
            for key in ("vlans", "ips", "switch"):
                if key in spec:
                    raise doc.error(f"node {node.name}: '{key}' is for trunk ports (add "
                                    f"trunk: true); an access port names its 'zone'",
                                    ipath + (key,), key=True)
            if "zone" not in spec:
                raise doc.error(f"node {node.name}: an interface needs a 'zone' (or trunk: true "
                                f"with 'switch' and 'vlans')", ipath)
            zone = self._zone_of(ipath + ("zone",), hosts=node.kind == "host")
            return [(zone, ipath + ("ip",) if "ip" in spec else None, ipath + ("zone",), None)]
        for key in ("zone", "ip"):
            if key in spec:
                raise doc.error(f"node {node.name}: a trunk port has no '{key}'; its VLANs "
                                f"give the zones ('ips:' maps VLAN id -> address)",
                                ipath + (key,), key=True)
        for key in ("switch", "vlans"):
            if key not in spec:
                raise doc.error(f"node {node.name}: a trunk port needs '{key}'", ipath)
        switch = spec["switch"]
        if switch not in self.switches:
            hint = did_you_mean(switch, self.switches) or (
                f" (switches: {', '.join(self.switches)})" if self.switches
                else " (no zone names a 'switch')")
            raise doc.error(f"node {node.name}: trunk to switch '{switch}', which carries no "
                            f"zones{hint}", ipath + ("switch",))
        carried = self.switches[switch]
        out, seen = [], {}
        for k, vlan in enumerate(spec["vlans"]):
            vpath = ipath + ("vlans", k)
            if vlan not in carried:
                have = ", ".join(str(v) for v in sorted(carried))
                raise doc.error(f"unknown VLAN {vlan} on switch {switch} (it carries {have})",
                                vpath)
            if vlan in seen:
                raise doc.error(f"node {node.name}: VLAN {vlan} is listed twice on this trunk",
                                vpath)
            seen[vlan] = vpath
        ips = spec.get("ips", {})
        for key in ips:
            if not key.isdigit() or int(key) not in seen:
                raise doc.error(f"node {node.name}: 'ips' has an address for VLAN {key}, which "
                                f"this trunk does not carry (vlans: "
                                f"{', '.join(str(v) for v in spec['vlans'])})",
                                ipath + ("ips", key), key=True)
        by_vlan = {int(k): k for k in ips}
        for vlan, vpath in seen.items():
            zone = self.topo.zones[carried[vlan]]
            ip_path = ipath + ("ips", by_vlan[vlan]) if vlan in by_vlan else None
            out.append((zone, ip_path, vpath, vlan))
        return out

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
                                 f"({self.doc.line_of(other_path, path)})", path)
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
        net = zone.subnet
        key = (zone.name, start)
        first = int(net.network_address) + start
        last = int(net.broadcast_address) - 1 if net.prefixlen < 31 else int(net.broadcast_address)
        candidate = max(self.cursor.get(key, first), first)
        while candidate <= last:
            ip = ipaddress.IPv4Address(candidate)
            candidate += 1
            if ip not in self.used:
                self.cursor[key] = candidate
                self._use(ip, node.name, path)
                return ip
        self.cursor[key] = candidate
        raise self.doc.error(f"zone {zone.name} ({zone.subnet}) has no free address left for "
                             f"{node.name}", path)

    # -- 10. gateways --------------------------------------------------------------------
    def _gateways(self):
        doc, topo = self.doc, self.topo
        routers_in: dict[str, list] = {}              # zone -> [(router, its interface)]
        for r in topo.routers:
            for ifc in r.interfaces:
                routers_in.setdefault(ifc.zone, []).append((r, ifc))
        for i, n in enumerate(doc.data["nodes"]):
            node = topo.nodes[n["name"]]
            if node.kind != "host":
                continue
            zone = node.interfaces[0].zone
            routers = routers_in.get(zone, [])
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

    # -- 14. static routes given by hand --------------------------------------------------
    def _static_routes(self):
        doc, topo = self.doc, self.topo
        for i, n in enumerate(doc.data["nodes"]):
            node = topo.nodes[n["name"]]
            seen: dict = {}
            for j, r in enumerate(n.get("routes", [])):
                path = ("nodes", i, "routes", j)
                to = parse_network(doc, path + ("to",), "route destination")
                via = parse_address(doc, path + ("via",), "via")
                if to in seen:
                    raise doc.error(f"node {node.name}: a second route to {to} (first at "
                                    f"{doc.line_of(seen[to], path)})", path + ("to",))
                seen[to] = path
                zones = [topo.zones[ifc.zone] for ifc in node.interfaces]
                if any(via == ifc.ip for ifc in node.interfaces):
                    raise doc.error(f"node {node.name}: route to {to} via {via}: that is "
                                    f"{node.name}'s own address", path + ("via",))
                if not any(via in z.subnet and via not in (z.subnet.network_address,
                                                            z.subnet.broadcast_address)
                           for z in zones):
                    have = ", ".join(f"{z.name} {z.subnet}" for z in zones)
                    raise doc.error(f"node {node.name}: route to {to} via {via}: {via} is not an "
                                    f"address in any zone of {node.name} (its zones: {have})",
                                    path + ("via",))
                node.static_routes.append((to, via))

    # -- 11. services --------------------------------------------------------------------
    def _services(self):
        doc, topo = self.doc, self.topo
        for i, n in enumerate(doc.data["nodes"]):
            node = topo.nodes[n["name"]]
            seen: dict[tuple, tuple] = {}
            for j, s in enumerate(n.get("services", [])):
                path = ("nodes", i, "services", j)
                proto = s.get("proto", "udp" if s["type"] in UDP_SERVICES else "tcp")
                key = (s["port"], proto)
                if key in seen:
                    raise doc.error(f"node {node.name}: {proto}/{s['port']} is already taken by "
                                    f"another service ({doc.line_of(seen[key], path)})",
                                    path + ("port",))
                seen[key] = path
                if "accounts" in s and s["type"] not in ("login", "ssh"):
                    raise doc.error(f"node {node.name}: 'accounts' are only for login and ssh "
                                    f"services", path + ("accounts",), key=True)
                if "registers" in s and s["type"] != "modbus":
                    raise doc.error(f"node {node.name}: 'registers' are only for modbus services",
                                    path + ("registers",), key=True)
                if "domain" in s and s["type"] != "c2-dns":
                    raise doc.error(f"node {node.name}: 'domain' is only for c2-dns services "
                                    f"(the twin's own domain is the top-level 'domain')",
                                    path + ("domain",), key=True)
                node.services.append(Service(
                    type=s["type"], port=s["port"], proto=proto,
                    accounts=[Account(a["user"], a["password"]) for a in s.get("accounts", [])],
                    banner=s.get("banner", ""),
                    domain=(topo.domain if s["type"] == "dns"
                            else s.get("domain", "evil.example") if s["type"] == "c2-dns" else ""),
                    registers={int(k): int(v) for k, v in (s.get("registers") or {}).items()},
                    src=doc.ref(path)))

    def _software(self):
        for n in self.doc.data["nodes"]:
            self.topo.nodes[n["name"]].software = [
                Software(name=sw["name"], version=str(sw["version"]), cpe=sw.get("cpe", ""))
                for sw in n.get("software", [])]

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
        """SPAN (``zone``), port set (``zone`` + ``nodes``) or router interface (``interface``);
        a topology that declares none gets one SPAN sensor per zone, named ``<zone>-span``."""
        doc, topo = self.doc, self.topo
        declared = doc.data.get("sensors", [])
        for i, s in enumerate(declared):
            path = ("sensors", i)
            name = s["name"]
            if ("zone" in s) == ("interface" in s):
                raise doc.error(f"sensor {name}: give either 'zone' (a SPAN of the zone's switch, "
                                f"or with 'nodes' a port set) or 'interface' ({{node, zone}}: a "
                                f"router interface)", path)
            rotate = s.get("rotate", {})
            sensor = Sensor(name, rotate_s=int(rotate.get("seconds", 0)),
                            rotate_mb=int(rotate.get("megabytes", 0)), src=doc.ref(path))
            if "zone" in s:
                sensor.zone = self._sensor_zone(name, path + ("zone",))
                members = {n.name for n, _ in topo.members(sensor.zone)}
                for k, node in enumerate(s.get("nodes", [])):
                    npath = path + ("nodes", k)
                    if node not in topo.nodes:
                        raise doc.error(f"sensor {name}: unknown node '{node}'"
                                        f"{did_you_mean(node, members or topo.nodes)}", npath)
                    if node not in members:
                        raise doc.error(f"sensor {name}: node {node} has no port in zone "
                                        f"{sensor.zone} (its zones: "
                                        f"{', '.join(i.zone for i in topo.nodes[node].interfaces)})",
                                        npath)
                    if node in sensor.nodes:
                        raise doc.error(f"sensor {name}: node {node} is listed twice", npath)
                    sensor.nodes.append(node)
            else:
                ipath = path + ("interface",)
                node = s["interface"]["node"]
                if node not in topo.nodes:
                    routers = [r.name for r in topo.routers]
                    raise doc.error(f"sensor {name}: unknown node '{node}'"
                                    f"{did_you_mean(node, routers)}", ipath + ("node",))
                n = topo.nodes[node]
                if not n.is_router:
                    raise doc.error(f"sensor {name}: {node} is a host; an interface sensor "
                                    f"captures on a router or firewall interface (or use "
                                    f"'zone' + 'nodes' for a host's switch port)", ipath + ("node",))
                zone = self._sensor_zone(name, ipath + ("zone",))
                if zone not in {i.zone for i in n.interfaces}:
                    raise doc.error(f"sensor {name}: {node} has no interface in zone {zone} "
                                    f"(its zones: {', '.join(i.zone for i in n.interfaces)})",
                                    ipath + ("zone",))
                sensor.interface = (node, zone)
                sensor.zone = zone
            topo.sensors[name] = sensor
        if not declared:
            for zone in topo.zones.values():
                if not zone.p2p:
                    topo.sensors[f"{zone.name}-span"] = Sensor(
                        f"{zone.name}-span", zone.name, default=True, src=zone.src)

    def _sensor_zone(self, sensor: str, path) -> str:
        zone = self.doc.get(path)
        if zone not in self.topo.zones:
            raise self.doc.error(f"sensor {sensor}: unknown zone or link '{zone}'"
                                 f"{did_you_mean(zone, self.topo.zones)}", path)
        return zone

    def _benign(self):
        """Benign traffic: v1 keys (enabled, interval, seed) plus intensity, per-role and
        per-node profiles (checked here; resolved against the model by cyberrange.traffic)."""
        from cyberrange.traffic.kinds import KINDS
        doc, topo = self.doc, self.topo
        b = doc.data.get("benign", {})
        bt = BenignTraffic(enabled=b.get("enabled", True),
                           interval_s=float(b.get("interval", 2.0)),
                           seed=b.get("seed", 1), intensity=float(b.get("intensity", 1.0)))
        for role, items in b.get("roles", {}).items():
            bt.roles[role] = [self._traffic_profile(("benign", "roles", role, k), KINDS)
                              for k in range(len(items))]
        hosts = [n.name for n in topo.hosts]
        for name, items in b.get("nodes", {}).items():
            path = ("benign", "nodes", name)
            if name not in topo.nodes:
                raise doc.error(f"benign traffic for unknown node '{name}'"
                                f"{did_you_mean(name, hosts)}", path, key=True)
            if topo.nodes[name].is_router:
                raise doc.error(f"benign traffic for {name}: it is a {topo.nodes[name].kind}; "
                                f"only hosts generate benign traffic", path, key=True)
            bt.nodes[name] = [self._traffic_profile(path + (k,), KINDS)
                              for k in range(len(items))]
        topo.benign = bt

    def _traffic_profile(self, path, kinds) -> TrafficProfile:
        doc, topo = self.doc, self.topo
        p = doc.get(path)
        kind = kinds[p["kind"]]
        targets = []
        for k, t in enumerate(p.get("targets", [])):
            tpath = path + ("targets", k)
            node = topo.nodes.get(t)
            if node is None or node.is_router:
                hosts = [n.name for n in topo.hosts]
                what = f"'{t}' is a {node.kind}, not a host" if node else f"unknown host '{t}'"
                raise doc.error(f"{p['kind']} target: {what}{did_you_mean(t, hosts)}", tpath)
            if not any(s.type in kind.services for s in node.services):
                raise doc.error(f"{p['kind']} target {t} has no {' or '.join(kind.services)} "
                                f"service", tpath)
            targets.append(t)
        params = dict(p.get("params", {}))
        if "jitter" in p:
            params["jitter"] = float(p["jitter"])
        return TrafficProfile(kind=p["kind"], targets=targets,
                              interval_s=float(p.get("interval", kind.interval)), params=params)

    # -- 17. mission threads, crown jewels, entry points ----------------------------------
    _MISSION = re.compile(r"^\s*(?P<src>[^>]+?)\s*->\s*(?P<dst>[^\s,][^>]*?)"
                          r"(?:\s+(?:(?P<proto>tcp|udp)/(?P<port>\d+)|(?P<icmp>icmp)))?\s*$")

    def _missions(self):
        doc, topo = self.doc, self.topo
        hosts = [n.name for n in topo.hosts]
        by_zone: dict[str, list[str]] = {}
        for h in topo.hosts:
            for ifc in h.interfaces:
                by_zone.setdefault(ifc.zone, []).append(h.name)
        for name, m in doc.data.get("missions", {}).items():
            path = ("missions", name)
            if isinstance(m, str):
                parsed = self._MISSION.match(m)
                if not parsed:
                    raise doc.error(f"mission {name}: cannot read '{m}'; write 'SRC -> DST "
                                    f"tcp/PORT' (or udp/PORT, icmp), e.g. "
                                    f"'ops-ws* -> c2-server tcp/8080'", path)
                if parsed["icmp"]:
                    proto, port = "icmp", None
                elif parsed["proto"]:
                    proto, port = parsed["proto"], int(parsed["port"])
                else:
                    raise doc.error(f"mission {name}: say the protocol after the destination, "
                                    f"e.g. '{m.strip()} tcp/8080' (tcp/PORT, udp/PORT or icmp)",
                                    path)
                srcs = [(x.strip(), path) for x in parsed["src"].split(",")]
                dsts = [(x.strip(), path) for x in parsed["dst"].split(",")]
                description = ""
            else:
                proto, port = m.get("proto", "tcp"), m.get("port")
                srcs = self._patterns(path + ("from",))
                dsts = self._patterns(path + ("to",))
                description = m.get("description", "")
                if proto == "icmp" and port is not None:
                    raise doc.error(f"mission {name}: icmp has no port", path + ("port",),
                                    key=True)
            if proto in ("tcp", "udp") and port is None:
                raise doc.error(f"mission {name}: {proto} needs a 'port'", path)
            if port is not None and not 1 <= port <= 65535:
                raise doc.error(f"mission {name}: port {port} is out of range (1..65535)", path)
            topo.missions[name] = MissionThread(
                name=name, src=self._expand(name, srcs, hosts, by_zone),
                dst=self._expand(name, dsts, hosts, by_zone), proto=proto, port=port,
                description=description, src_ref=doc.ref(path, key=True))

    def _patterns(self, path) -> list[tuple[str, tuple]]:
        value = self.doc.get(path)
        if isinstance(value, list):
            return [(v, path + (k,)) for k, v in enumerate(value)]
        return [(value, path)]

    def _expand(self, mission: str, patterns, hosts: list[str], by_zone) -> list[str]:
        """Node names, zone names (their hosts) and shell-style globs over host names."""
        topo, out, seen = self.topo, [], set()
        for pattern, path in patterns:
            if pattern in topo.nodes:
                names = [pattern]
            elif pattern in topo.zones:
                names = by_zone.get(pattern, [])
                if not names:
                    raise self.doc.error(f"mission {mission}: zone '{pattern}' has no hosts", path)
            elif any(c in pattern for c in "*?["):
                names = fnmatch.filter(hosts, pattern)
                if not names:
                    raise self.doc.error(f"mission {mission}: '{pattern}' matches no host"
                                         f"{did_you_mean(pattern, hosts)}", path)
            else:
                raise self.doc.error(f"mission {mission}: unknown node or zone '{pattern}'"
                                     f"{did_you_mean(pattern, [*topo.nodes, *topo.zones])}", path)
            for x in names:
                if x not in seen:
                    seen.add(x)
                    out.append(x)
        return out

    def _targets(self):
        doc, topo = self.doc, self.topo
        for key, target in (("crown_jewels", topo.crown_jewels),
                            ("entry_points", topo.entry_points)):
            what = key.replace("_", " ")[:-1]
            for k, name in enumerate(doc.data.get(key, [])):
                if name not in topo.nodes:
                    raise doc.error(f"unknown {what} '{name}': not a node"
                                    f"{did_you_mean(name, topo.nodes)}", (key, k))
                if name not in target:
                    target.append(name)


__all__ = ["load_topology", "topology_schema", "parse_network", "parse_address", "UserError"]
