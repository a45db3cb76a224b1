"""The change-set format (docs/change-format.md): loading with ``FILE:LINE:COL`` errors.

A change set goes through the one safe YAML loader (``model.yamlsrc``: size, nesting, aliases,
duplicate keys, NaN), then its JSON Schema (``model/schemas/change.schema.json``, which borrows
the topology schema's definitions of a rule, a service, a node, ...). What the operations mean
for one topology is checked when they are applied (``patch/apply.py``), so that every error
about a change points into the change set.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cyberrange.model.stages.document import SCHEMA_DIR, topology_schema
from cyberrange.model.yamlsrc import Doc, Limits, load_yaml, schema_error

LIMITS = Limits("change set", 1024 * 1024, 100_000, max_aliases=1_000,
                max_alias_values=20_000, max_alias_chars=256 * 1024)


@cache
def change_schema() -> dict:
    """The change-set schema with the topology schema's ``$defs`` merged in."""
    schema = json.loads((SCHEMA_DIR / "change.schema.json").read_text())
    merged = copy.deepcopy(topology_schema()["$defs"])
    merged.update(schema["$defs"])
    schema["$defs"] = merged
    return schema


@dataclass
class ChangeSet:
    name: str
    topology: str
    description: str
    ops: list[dict]                       # as written, in order
    doc: Doc                              # for positions: ("changes", i, ...)
    expect_closed: list[str] = field(default_factory=list)
    expect_open: list[str] = field(default_factory=list)
    blocked_steps: list[str] = field(default_factory=list)

    @property
    def file(self) -> str:
        return self.doc.file

    def error(self, message: str, path=(), key: bool = False):
        return self.doc.error(message, path, key)

    def apply_to(self, doc: Doc) -> None:
        """Patch a topology document (called by ``model.loader.load_topology``)."""
        from cyberrange.patch.apply import apply_change
        apply_change(doc, self)

    def summary(self) -> list[str]:
        """One short line per operation: ``add-rule fob-fw #4``."""
        out = []
        for op in self.ops:
            target = next((op[k] for k in ("firewall", "node", "target", "zone", "name",
                                           "detector") if k in op), "")
            if isinstance(target, dict):
                target = target.get("name", "")
            extra = f" rule {op['rule']}" if isinstance(op.get("rule"), int) else ""
            extra += f" port {op['port']}" if "port" in op else ""
            extra += f" user {op['user']}" if "user" in op else ""
            extra += f" {op['name']}={op['version']}" if op["op"] == "set-software" else ""
            out.append(f"{op['op']} {target}{extra}".strip())
        return out


def load_change(path) -> ChangeSet:
    """Read and check the change set in ``path`` (shape only; see ``apply.apply_change``)."""
    doc = load_yaml(path, LIMITS)
    if not isinstance(doc.data, dict):
        raise doc.error("a change set must be a mapping with version, name, topology, changes")
    err = schema_error(doc, change_schema())
    if err:
        raise err
    d = doc.data
    expect = d.get("expect", {})
    return ChangeSet(name=d["name"], topology=d["topology"], description=d.get("description", ""),
                     ops=d["changes"], doc=doc, expect_closed=list(expect.get("closed", [])),
                     expect_open=list(expect.get("open", [])),
                     blocked_steps=list(expect.get("blocked_steps", [])))


def schema_path() -> Path:
    return SCHEMA_DIR / "change.schema.json"
