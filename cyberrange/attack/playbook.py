"""Load an attack playbook YAML file into :class:`Playbook` with every parameter filled in.

Same machinery as topologies: YAML with positions (``model.yamlsrc``), a JSON Schema
(``model/schemas/playbook.schema.json``), then checks against the technique catalog and, when a
topology is given, against that topology. Errors are one line, ``FILE:LINE:COL: ...``.

Targets stay as written (zone, node, CIDR or ``#{step.fact}``); the runner resolves them to
addresses at run time, because facts only exist once earlier steps have run.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cyberrange.attack.catalog import TECHNIQUES
from cyberrange.model.topology import SourceRef, Topology
from cyberrange.model.yamlsrc import Doc, describe, did_you_mean, load_yaml, schema_error

SCHEMA = Path(__file__).resolve().parent.parent / "model" / "schemas" / "playbook.schema.json"

FACT_REF = re.compile(r"^#\{([^.{}]*)\.([^.{}]*)\}$")


@dataclass
class Step:
    id: str
    name: str
    technique: str                       # a key of catalog.TECHNIQUES
    actor: str                           # host the step runs on
    targets: list[str]                   # zone | node | CIDR | "#{step.fact}", as written
    params: dict = field(default_factory=dict)   # catalog defaults filled in
    delay_s: float = 0.0                 # wait before the step starts
    src: SourceRef | None = None

    @property
    def fact_refs(self) -> list[tuple[str, str]]:
        """The ``(step, fact)`` pairs this step's targets refer to."""
        return [m.groups() for t in self.targets if (m := FACT_REF.match(t))]


@dataclass
class Playbook:
    name: str
    description: str
    topology: str | None                 # the topology name the playbook is written for
    steps: list[Step]
    file: str = ""


@lru_cache(maxsize=None)
def playbook_schema() -> dict:
    return json.loads(SCHEMA.read_text())


def load_playbook(path, topology: Topology | None = None) -> Playbook:
    """Read and check the playbook in ``path``; with ``topology``, also check names against it."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error("a playbook file must be a mapping with version, name, steps, ...")
    err = schema_error(doc, playbook_schema())
    if err:
        raise err
    d = doc.data
    if topology is not None and "topology" in d and d["topology"] != topology.name:
        raise doc.error(f"playbook is written for topology '{d['topology']}', "
                        f"but the topology given is '{topology.name}'", ("topology",))
    steps: list[Step] = []
    for i, s in enumerate(d["steps"]):
        steps.append(_step(doc, ("steps", i), s, steps, topology))
    return Playbook(name=d["name"], description=d.get("description", ""),
                    topology=d.get("topology"), steps=steps, file=doc.file)


def _step(doc: Doc, path: tuple, s: dict, earlier: list[Step], topo: Topology | None) -> Step:
    seen = {st.id: st for st in earlier}
    if s["id"] in seen:
        raise doc.error(f"duplicate step id '{s['id']}' (first at line {seen[s['id']].src.line})",
                        path + ("id",))
    technique = TECHNIQUES.get(s["technique"])
    if technique is None:
        raise doc.error(f"unknown technique '{s['technique']}'"
                        f"{did_you_mean(s['technique'], TECHNIQUES)} "
                        f"(known: {', '.join(TECHNIQUES)})", path + ("technique",))
    if topo is not None:
        actor = topo.nodes.get(s["actor"])
        if actor is None:
            hosts = [n.name for n in topo.hosts]
            raise doc.error(f"unknown actor '{s['actor']}': not a node of topology {topo.name}"
                            f"{did_you_mean(s['actor'], hosts)}", path + ("actor",))
        if actor.kind != "host":
            raise doc.error(f"actor '{s['actor']}' is a {actor.kind}; steps run on hosts",
                            path + ("actor",))
    for k, target in enumerate(s["targets"]):
        _check_target(doc, path + ("targets", k), target, seen, topo)
    params = _params(doc, path, s.get("params", {}), technique)
    return Step(id=s["id"], name=s.get("name", s["id"]), technique=s["technique"],
                actor=s["actor"], targets=list(s["targets"]), params=params,
                delay_s=float(s.get("timing", {}).get("delay", 0)), src=doc.ref(path))


def _check_target(doc: Doc, path, target: str, earlier: dict[str, Step], topo: Topology | None):
    if target.startswith("#{") or target.startswith("{"):
        m = FACT_REF.match(target)
        if not m:
            raise doc.error(f"bad fact reference '{target}': write \"#{{step.fact}}\" (quoted)", path)
        step_id, fact = m.groups()
        if step_id not in earlier:
            raise doc.error(f"fact reference '{target}': no earlier step '{step_id}'"
                            f"{did_you_mean(step_id, earlier)} (a step can only use facts of "
                            f"steps before it)", path)
        produces = TECHNIQUES[earlier[step_id].technique].produces
        if fact not in produces:
            raise doc.error(f"fact reference '{target}': step '{step_id}' "
                            f"({earlier[step_id].technique}) produces no fact '{fact}'"
                            f"{did_you_mean(fact, produces)} (it produces: {', '.join(produces)})",
                            path)
        return
    if target[:1].isdigit():
        try:
            net = ipaddress.ip_network(target, strict=True)
        except ValueError as e:
            raise doc.error(f"bad target '{target}': {e}", path) from None
        if topo is not None and not any(net.subnet_of(z) for z in topo.address_space()
                                        if z.version == net.version):
            raise doc.error(f"target {net} lies outside topology {topo.name}'s address space",
                            path)
        return
    if topo is not None:
        if target not in topo.zones and target not in topo.nodes:
            names = [*topo.zones, *topo.nodes]
            raise doc.error(f"unknown target '{target}': not a zone or node of topology "
                            f"{topo.name}{did_you_mean(target, names)}", path)
    elif not re.match(r"^[a-z][a-z0-9-]{0,30}$", target):
        raise doc.error(f"bad target '{target}': expected a zone or node name, a CIDR, or "
                        f"\"#{{step.fact}}\"", path)


def _type_ok(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False                      # YAML true/false is not a number here
    return isinstance(value, types)


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             bool: "true or false", dict: "a mapping"}
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def _params(doc: Doc, path, given: dict, technique) -> dict:
    out = {name: (list(p.default) if isinstance(p.default, list) else p.default)
           for name, p in technique.params.items()}
    for name, value in given.items():
        ppath = path + ("params", name)
        if name not in technique.params:
            raise doc.error(f"{technique.id} has no parameter '{name}'"
                            f"{did_you_mean(name, technique.params)} "
                            f"(parameters: {', '.join(technique.params)})", ppath, key=True)
        want = technique.params[name].type
        if not _type_ok(value, want):
            raise doc.error(f"{describe(doc, ppath)}: expected {_type_name(want)}, got "
                            f"{type(value).__name__} {value!r}", ppath)
        if name == "ports":
            for k, port in enumerate(value):
                if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                    raise doc.error(f"{describe(doc, ppath)}: {port!r} is not a port 1..65535",
                                    ppath + (k,))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise doc.error(f"{describe(doc, ppath)}: must not be negative, got {value}", ppath)
        out[name] = value
    return out
