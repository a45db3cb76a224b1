"""The behaviour catalogue (``behaviours.yaml``): what a service does depending on the versions
in its node's software inventory. ``for_service(topology, node, type)`` gives the settings that
apply; the service modules read them when the twin starts them (``modbus``: who may write,
``login``: factory accounts), and ``patch/static.py`` reports what a change switches. (A helper module, ``_``: it declares no service type.)

The catalogue is a file shipped with the package (not user input), read with PyYAML's safe
loader: the services layer sits below ``model`` and its position-keeping loader.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

CATALOGUE = Path(__file__).resolve().parent / "behaviours.yaml"
_CMP = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
KEYS = {"id", "software", "versions", "service", "set", "description", "weakness"}


@dataclass(frozen=True)
class Behaviour:
    id: str
    software: str
    versions: str
    service: str
    settings: dict = field(hash=False)
    description: str = ""
    weakness: bool = False

    def matches(self, version: str) -> bool:
        return all(_compare(version, c) for c in self.versions.split(","))


def version_key(version) -> tuple:
    """``"8.9p1"`` -> ((8, ''), (9, 'p'), (1, '')): numbers compare as numbers."""
    parts = re.findall(r"(\d+)([a-zA-Z]*)", str(version))
    return tuple((int(n), s) for n, s in parts) or ((0, str(version)),)


def _compare(version, cond: str) -> bool:
    m = _CMP.match(cond)
    if not m:
        raise ValueError(f"bad version condition {cond!r} (e.g. '>=4.0')")
    a, b = version_key(version), version_key(m[2])
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b,
            "!=": a != b}[m[1]]


@cache
def catalogue(path: str | None = None) -> tuple[Behaviour, ...]:
    data = yaml.safe_load(Path(path or CATALOGUE).read_text())
    out = []
    for k, e in enumerate(data["behaviours"]):
        unknown = set(e) - KEYS
        if unknown or not KEYS - {"description", "weakness"} <= set(e):
            raise ValueError(f"behaviours.yaml entry {k}: keys must be {sorted(KEYS)}")
        b = Behaviour(e["id"], e["software"], str(e["versions"]), e["service"], dict(e["set"]),
                      e.get("description", ""), bool(e.get("weakness", False)))
        b.matches("0")           # the conditions parse
        out.append(b)
    return tuple(out)


def matching(software, service: str) -> list[Behaviour]:
    """The catalogue entries that apply to a service of ``service`` type on a node with this
    software inventory (a list of objects with ``name`` and ``version``), first match per key."""
    out, keys = [], set()
    for b in catalogue():
        if b.service != service:
            continue
        for s in software:
            if s.name == b.software and b.matches(s.version):
                if not keys & set(b.settings):
                    out.append(b)
                    keys |= set(b.settings)
                break
    return out


def for_service(topology, node: str, service: str) -> dict:
    """The settings the catalogue gives the node's ``service`` (``{}``: the default)."""
    n = topology.nodes.get(node) if topology is not None else None
    settings: dict = {}
    for b in matching(getattr(n, "software", []) or [], service):
        settings.update(b.settings)
    return settings


def writer_addresses(topology, roles) -> list[str]:
    """Addresses of the hosts whose role is one of ``roles`` (a writer allow-list)."""
    return [str(i.ip) for n in topology.hosts if n.role in roles for i in n.interfaces]


def modbus_writers(topology, node: str, service) -> list[str] | None:
    """The addresses a PLC lets write, or None (anyone may): firmware whose catalogue entry
    says ``writers: any`` ignores any allow-list (the weakness); otherwise the service's own
    ``writers:`` (host names, expanded by the loader) is enforced, and without one the
    catalogue's roles (``writers: [hmi]``); a PLC with neither accepts every writer."""
    firmware = for_service(topology, node, "modbus").get("writers")
    if firmware == "any":
        return None
    own = getattr(service, "writers", None)
    if own is not None:
        return [str(i.ip) for n in own for i in topology.nodes[n].interfaces]
    return writer_addresses(topology, firmware) if firmware else None
