"""Elasticsearch mappings of the event records, derived from the Arrow schemas.

One source of truth: ``cyberrange.telemetry.schema`` (and ``runlogs.py`` for the run logs) says
which columns a record kind has and their Arrow types; this module turns each column into an ECS field type and nests the dotted
names into objects (``source.ip`` -> ``{"source": {"properties": {"ip": ...}}}``), as ECS and
Kibana expect. The few places where the Arrow type does not say enough (an address is a string
in Arrow, an ``ip`` in ECS) are listed in ``OVERRIDES``.

The templates are composable: one component template of mappings per kind
(``<prefix>-ecs-<kind>``), one component of shared settings (``<prefix>-settings``) and one index
template per kind (``<prefix>-<kind>``) matching ``<prefix>-<kind>*``. Each template carries a
hash of its body in ``_meta.cyberrange_hash``, so ``store init`` can say whether it changed.
"""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from .runlogs import STORE_RECORD_SCHEMAS

__all__ = ["KINDS", "OVERRIDES", "field_type", "ledger_mappings", "mappings_for", "templates"]

#: every kind the Elasticsearch backend keeps: the record kinds (weak signals and incidents
#: included, docs/incidents.md), the run logs (mission probes, link events: ``runlogs.py``)
#: and the ledger
KINDS = ("packets", "flows", "alerts", "signals", "incidents", "availability", "link_events",
         "ledger")

#: ECS types that the Arrow type alone cannot tell
OVERRIDES: dict[str, dict] = {
    "source.ip": {"type": "ip"},
    "destination.ip": {"type": "ip"},
    "cyberrange.arp.sender_ip": {"type": "ip"},
    "cyberrange.arp.target_ip": {"type": "ip"},
    "network.vlan.id": {"type": "keyword"},              # ECS: keyword
    "network.inner.vlan.id": {"type": "keyword"},
    "message": {"type": "match_only_text"},              # ECS: match_only_text
    "cyberrange.evidence": {"type": "keyword", "index": False, "doc_values": False},
    "url.path": {"type": "wildcard"},                    # ECS: wildcard
    "related.ip": {"type": "ip"},                        # ECS: ip (incident entities)
    "cyberrange.explanation": {"type": "match_only_text"},
    "cyberrange.stages": {"type": "keyword", "index": False, "doc_values": False},
    "cyberrange.pivots": {"type": "keyword", "index": False, "doc_values": False},
    "error.message": {"type": "match_only_text"},        # ECS (a failed probe's reason)
}


def field_type(name: str, t: pa.DataType) -> dict:
    """The Elasticsearch field mapping of one column."""
    if name in OVERRIDES:
        return dict(OVERRIDES[name])
    if pa.types.is_list(t):                    # ES fields hold arrays natively
        return field_type(name, t.value_type)
    if pa.types.is_timestamp(t):
        return {"type": "date"}
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return {"type": "keyword", "ignore_above": 1024}
    if pa.types.is_integer(t):
        return {"type": "long"}                # ECS ports, bytes, packets, durations: long
    if pa.types.is_floating(t):
        return {"type": "double"}
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    raise TypeError(f"no Elasticsearch type for column {name!r} of Arrow type {t}")


def nest(flat: dict[str, dict]) -> dict:
    """``{"source.ip": m}`` -> ``{"source": {"properties": {"ip": m}}}``."""
    root: dict = {}
    for name, mapping in flat.items():
        parts = name.split(".")
        node = root
        for p in parts[:-1]:
            entry = node.setdefault(p, {"properties": {}})
            if "properties" not in entry:
                raise ValueError(f"{name}: {p} is both a field and an object")
            node = entry["properties"]
        if parts[-1] in node:
            raise ValueError(f"{name}: defined twice or both a field and an object")
        node[parts[-1]] = mapping
    return root


def mappings_for(schema: pa.Schema) -> dict:
    """The ``mappings`` body for records of ``schema``. Fields not in the schema are kept in
    ``_source`` but not indexed (``dynamic: false``), so a newer writer never breaks an older
    index."""
    return {"dynamic": False,
            "properties": nest({f.name: field_type(f.name, f.type) for f in schema})}


def ledger_mappings() -> dict:
    """The ledger (ground truth, one document per step execution, ECS names; see
    ``attack/ledger.py``). ``cyberrange.facts`` vary by technique and stay in ``_source`` only."""
    kw = {"type": "keyword", "ignore_above": 1024}
    epoch = {"type": "date", "format": "epoch_second"}
    flat = {
        "@timestamp": {"type": "date"},                  # = event.start
        "event.kind": kw, "event.dataset": kw, "event.outcome": kw,
        "event.start": epoch, "event.end": epoch,
        "cyberrange.run_id": kw, "cyberrange.step.id": kw, "cyberrange.step.name": kw,
        "threat.technique.id": kw, "cyberrange.technique.variant": kw, "cyberrange.actor": kw,
        "source.ip": {"type": "ip"}, "source.mac": kw, "destination.ip": {"type": "ip"},
        "source.packets": {"type": "long"}, "source.bytes": {"type": "long"},
        "cyberrange.outcome": kw, "error.message": {"type": "match_only_text"},
        "cyberrange.repeat": {"type": "long"}, "cyberrange.skipped_reason": kw,
        "cyberrange.blocked_reason": kw, "cyberrange.arp_frames": {"type": "long"},
        "cyberrange.flows": {"properties": {
            "src": {"type": "ip"}, "dst": {"type": "ip"}, "proto": kw,
            "sport": {"type": "long"}, "dport": {"type": "long"},
            "packets": {"type": "long"}, "bytes": {"type": "long"}}},
        "cyberrange.facts": {"type": "object", "enabled": False},
    }
    return {"dynamic": False, "properties": nest(flat)}


def kind_mappings(kind: str) -> dict:
    return ledger_mappings() if kind == "ledger" else mappings_for(STORE_RECORD_SCHEMAS[kind])


def _hash(body: dict) -> str:
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def templates(prefix: str = "cyberrange", shards: int = 1, replicas: int | None = None
              ) -> tuple[dict[str, dict], dict[str, dict]]:
    """``(component templates, index templates)``: name -> request body."""
    settings: dict = {"index": {"number_of_shards": shards}}
    if replicas is not None:
        settings["index"]["number_of_replicas"] = replicas
    components = {f"{prefix}-settings": {"template": {"settings": settings}}}
    index_templates = {}
    for kind in KINDS:
        comp = f"{prefix}-ecs-{kind}"
        components[comp] = {"template": {"mappings": kind_mappings(kind)}}
        index_templates[f"{prefix}-{kind}"] = {
            "index_patterns": [f"{prefix}-{kind}*"],
            "composed_of": [f"{prefix}-settings", comp],
            "priority": 200,
            "_meta": {"managed_by": "cyberrange",
                      "description": f"cyberrange {kind} records (ECS field names)"},
        }
    for body in list(components.values()) + list(index_templates.values()):
        body.setdefault("_meta", {})["cyberrange_hash"] = _hash(body)
    return components, index_templates
