"""Load a topology YAML file into a fully resolved :class:`Topology`.

``load_topology`` runs ``STAGES`` in order, each a function of one
:class:`~cyberrange.model.stages.base.Context` (the document and the model being built), in
the manner of netlab's ``augment`` steps. Each either fills in part of the model or raises the
first problem it finds as a ``UserError`` that reads ``FILE:LINE:COL: what is wrong (did you
mean X?)``. The stages live in ``model/stages/``, one module per concern; the defaults they
fill in are in ``model/defaults.yaml``.

After loading nothing in the model is optional: every interface has an address, every host a
gateway (or None when its zone has no router), every rule endpoint a list of networks.
Elements that came from an included file or a block keep the file and line they were written
at, so errors point there.
"""
from __future__ import annotations

from cyberrange.errors import UserError
from cyberrange.model.stages.addressing import addresses
from cyberrange.model.stages.base import Context, parse_address, parse_network
from cyberrange.model.stages.benign import benign
from cyberrange.model.stages.blocks import instances
from cyberrange.model.stages.document import (
    SCHEMA_DIR,
    counts,
    mapping,
    node_count,
    parts,
    schema,
    topology_schema,
    version_keys,
)
from cyberrange.model.stages.includes import includes
from cyberrange.model.stages.missions import missions, targets
from cyberrange.model.stages.names import names, topology
from cyberrange.model.stages.nodes import nodes
from cyberrange.model.stages.profiles import builtin_profiles, parse_bandwidth, profiles
from cyberrange.model.stages.routes import gateways, routes, routing, static_routes
from cyberrange.model.stages.rules import rules
from cyberrange.model.stages.sensors import sensors
from cyberrange.model.stages.services import services, software
from cyberrange.model.stages.zones import links, overlaps, switch_names, zones
from cyberrange.model.topology import Topology
from cyberrange.model.yamlsrc import load_yaml

STAGES = (
    # the document as written (stages/document.py, includes.py, blocks.py)
    mapping,        # a mapping, not a list or a string
    counts,         # no part holds more than its limit (before any other work)
    version_keys,   # a version 1 file uses no version 2 key
    schema,         # JSON Schema (schemas/topology.schema.json): shapes, types, unknown keys
    parts,          # (v2) every part an include or block adds to exists
    includes,       # (v2) merge included files; positions keep their file
    instances,      # (v2) expand block instances into ordinary zones/nodes/links/sensors
    node_count,     # (v2) some nodes, and not too many, after includes and instances
    # the model (stages/names.py ... missions.py)
    topology,       # the Topology with its own fields
    names,          # zones, links and nodes share one namespace; sensors are unique
    profiles,       # shaping profiles (v2: the built-ins of profiles.yaml first)
    zones,          # subnets (strict CIDR), classification, profile, switch and VLAN per zone
    switch_names,   # a shared switch's name is no zone, link or node name
    links,          # point-to-point links become two-member zones with p2p=True
    overlaps,       # no two subnets overlap (sorted sweep, not all pairs)
    nodes,          # hosts, routers, firewalls; interfaces (trunks expand per VLAN)
    addresses,      # default addresses: router interfaces, link ends, then hosts
    routing,        # the routing protocol and its timers (static or ospf)
    gateways,       # each host's default gateway
    static_routes,  # routes given by hand (v2)
    services,       # services, one per proto/port
    software,       # software inventory
    rules,          # firewall rules resolved to networks
    sensors,        # declared sensors, or one SPAN per zone
    benign,         # benign traffic profiles
    missions,       # mission threads expanded to node names
    targets,        # crown jewels, entry points
    routes,         # computed static routes on every router (routing.py), hand-given winning
)


def load_topology(path, change=None) -> Topology:
    """Read, validate and complete the topology in ``path``; raise ``UserError`` on bad input.

    ``change`` (a ``patch.changeset.ChangeSet``, or anything with ``apply_to(doc)``) is applied
    to the document once includes and block instances are merged, before the model is built:
    the model is the patched topology, and errors about what the change brought in point into
    the change set. (Handed in, not imported: the patch package sits above the model.)"""
    ctx = Context(load_yaml(path, "topology"))
    for stage in STAGES:
        if change is not None and stage is topology:
            change.apply_to(ctx.doc)
        stage(ctx)
    return ctx.topo


__all__ = ["load_topology", "topology_schema", "parse_network", "parse_address", "UserError",
           "builtin_profiles", "parse_bandwidth", "SCHEMA_DIR", "STAGES"]
