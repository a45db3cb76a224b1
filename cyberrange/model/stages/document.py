"""The stages that check the document as written, before any model exists: the size of each
part, version 2 keys in a version 1 file, the JSON Schema, and (version 2) the node count after
includes and block instances."""
from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from cyberrange.model.stages.base import Context
from cyberrange.model.topology import NODE_KINDS
from cyberrange.model.yamlsrc import Doc, schema_error

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
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
V2_HOST_KEYS = ("interfaces",)      # hosts: several interfaces instead of one zone
# what an included file may contribute
MERGED_MAPS = ("profiles", "zones", "blocks", "missions")
MERGED_LISTS = ("links", "nodes", "sensors", "instances", "crown_jewels", "entry_points")


@cache
def topology_schema() -> dict:
    return json.loads((SCHEMA_DIR / "topology.schema.json").read_text())


@cache
def fragment_schema() -> dict:
    """The topology schema for an included file: every top-level key optional."""
    schema = copy.deepcopy(topology_schema())
    schema["required"] = []
    schema.pop("allOf", None)
    return schema


@cache
def part_schema(part: str) -> dict:
    """A schema for one element (``node``, ``zone``, ...), for elements made from blocks."""
    return {"$defs": topology_schema()["$defs"], "$ref": f"#/$defs/{part}"}


def check_counts(doc: Doc) -> None:
    """No top-level part holds more than ``MAX_ITEMS`` (cheap, before the schema's work)."""
    for key, most in MAX_ITEMS.items():
        value = doc.data.get(key)
        if isinstance(value, (list, dict)) and len(value) > most:
            raise doc.error(f"too many {key.replace('_', ' ')}: {len(value):,} (at most {most:,})",
                            (key,), key=True)


# -- the stages ------------------------------------------------------------------------------

def mapping(ctx: Context) -> None:
    """The file holds a mapping (not a list, a string or nothing)."""
    if not isinstance(ctx.doc.data, dict):
        raise ctx.doc.error("a topology file must be a mapping with version, name, zones, "
                            "nodes, ...")


def counts(ctx: Context) -> None:
    check_counts(ctx.doc)


def version_keys(ctx: Context) -> None:
    """A version 1 file must not use version 2 keys."""
    doc = ctx.doc
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
        kind = n.get("kind")                # before the schema: it may be anything
        if isinstance(kind, str) and kind in NODE_KINDS and NODE_KINDS[kind].end_system:
            for k in V2_HOST_KEYS:
                if k in n:
                    need(("nodes", i, k))
        ifaces = n.get("interfaces")
        for j, spec in enumerate(ifaces if isinstance(ifaces, list) else []):
            for k in V2_IFACE_KEYS:
                if isinstance(spec, dict) and k in spec:
                    need(("nodes", i, "interfaces", j, k))


def schema(ctx: Context) -> None:
    """JSON Schema (schemas/topology.schema.json): shapes, types, unknown keys."""
    err = schema_error(ctx.doc, topology_schema())
    if err:
        raise err


def parts(ctx: Context) -> None:
    """(v2) Every part an include or a block may add to is there, empty if the file has none."""
    if not ctx.v2:
        return
    for key in ("zones", "profiles", "blocks", "missions"):
        ctx.doc.data.setdefault(key, {})
    for key in MERGED_LISTS:
        ctx.doc.data.setdefault(key, [])


def node_count(ctx: Context) -> None:
    """(v2) Nodes are left after includes and block instances, and not too many."""
    doc = ctx.doc
    if not ctx.v2:
        return
    if not doc.data["nodes"]:
        raise doc.error("the topology has no nodes (nor do its includes and block instances)")
    if len(doc.data["nodes"]) > MAX_NODES_V2:
        raise doc.error(f"too many nodes: {len(doc.data['nodes'])} after includes and "
                        f"block instances (at most {MAX_NODES_V2})")
