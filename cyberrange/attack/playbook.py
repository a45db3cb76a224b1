"""Load an attack playbook YAML file into :class:`Playbook` with every parameter filled in.

Same machinery as topologies: YAML with positions (``model.yamlsrc``), a JSON Schema
(``model/schemas/playbook.schema.json``), then checks against the technique catalog and, when a
topology is given, against that topology. Errors are one line, ``FILE:LINE:COL: ...``.

Format version 2 (version 1 files keep loading) adds facts anywhere (``#{step.fact}`` in
targets, params and actor), preconditions (``requires``, ``when``), scheduling (``timing``:
delay | at, duration, rate, jitter, repeat, every), concurrent steps (``parallel``), a playbook
``seed`` and ``defaults.max_rate`` (the per-step rate cap). See docs/playbook-format.md.

Targets, actors and params that name facts stay as written: facts only exist once earlier steps
have run. The run-time half of the format is beside this module: ``attack/facts.py`` (fact
substitution, preconditions, parameter types after substitution) and ``attack/schedule.py``
(delays, repeats, jitter).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cyberrange.attack.catalog import TECHNIQUES
from cyberrange.attack.constraints import check_against_topology, check_params
from cyberrange.attack.spec import type_ok, type_phrase
from cyberrange.model import inputpaths
from cyberrange.model.topology import SourceRef, Topology
from cyberrange.model.yamlsrc import (
    Doc,
    describe,
    did_you_mean,
    load_yaml,
    schema_error,
)

SCHEMA = Path(__file__).resolve().parent.parent / "model" / "schemas" / "playbook.schema.json"

# "#{step.fact}" as a whole value, and anywhere inside a longer string
FACT_REF = re.compile(r"^#\{\s*([^.{}\s]*)\.([^.{}\s]*)\s*\}$")
FACT_ANY = re.compile(r"#\{([^{}]*)\}")
FACT_INNER = re.compile(r"^\s*([a-z][a-z0-9_-]{0,31})\.([A-Za-z0-9_-]+)\s*$")

DEFAULT_MAX_RATE = 100_000.0        # packets/s: the per-step rate cap unless defaults.max_rate says
SECONDS_MAX = 86_400                # a day: the longest delay, at, every, duration or interval
REPEAT_MAX = 10_000                 # executions of one step (timing.repeat)
# the largest value of a numeric technique parameter, by name (docs/playbook-format.md); NaN and
# infinity never get here (the YAML loader refuses them), negatives are refused for every one
PARAM_MAX = {
    "timeout": 3_600, "connect_timeout": 3_600, "io_timeout": 3_600, "settle": 3_600,
    "quiet": 3_600, "interval": SECONDS_MAX, "duration": SECONDS_MAX, "pause": SECONDS_MAX,
    "round_pause": SECONDS_MAX, "jitter": 1, "retries": 100, "repeat": REPEAT_MAX,
    "port": 65_535, "dport": 65_535, "unit": 255, "address": 65_535, "value": 65_535,
    "size": 64 << 20, "chunk": 64 << 20, "seed": 2**63 - 1,
    "rate": None,                   # checked against the per-step rate cap (defaults.max_rate)
}
NUMBER_MAX = 10_000_000             # any other numeric parameter (counts, packets, batches)
ACTOR_FROM = ("each", "first")      # several actors from a fact: run from each one, or the first
V2_STEP_KEYS = ("requires", "when", "parallel", "from")
V2_TIMING_KEYS = ("at", "duration", "rate", "jitter", "repeat", "every")


# --------------------------------------------------------------------------- model
@dataclass
class Timing:
    delay: float = 0.0                   # s after the previous step ends (parallel: after launch)
    at: float | None = None              # s from the playbook start (instead of delay)
    duration: float | None = None        # passed to the technique as params.duration
    rate: float | None = None            # packets/s, passed as params.rate (capped)
    jitter: float = 0.0                  # fraction 0..1 applied to delay and every
    repeat: int = 1                      # executions of the technique
    every: float = 0.0                   # s between the starts of two executions


@dataclass
class Condition:
    """``when:`` one test on one fact. With no test given, the fact must be non-empty."""
    fact: str                            # "#{step.fact}"
    not_empty: bool | None = None
    min_count: int | None = None
    contains: object = None
    has_contains: bool = False


@dataclass
class Step:
    id: str
    name: str
    technique: str                       # a key of catalog.TECHNIQUES
    actor: str                           # host the step runs on, or "#{step.fact}"
    targets: list[str]                   # zone | node | CIDR | ip[:port] | "#{step.fact}", as written
    params: dict = field(default_factory=dict)   # catalog defaults filled in; may hold #{..}
    timing: Timing = field(default_factory=Timing)
    requires: list[str] = field(default_factory=list)    # "#{step.fact}" that must be non-empty
    when: list[Condition] = field(default_factory=list)
    parallel: bool = False               # start without waiting for the previous step
    actor_from: str = "each"             # several actors from a fact: each | first
    src: SourceRef | None = None
    given: frozenset = frozenset()       # the params the playbook wrote (the rest: defaults)

    @property
    def delay_s(self) -> float:
        """Seconds to wait before the step starts (version 1 name of ``timing.delay``)."""
        return self.timing.delay

    @property
    def actor_ref(self) -> tuple[str, str] | None:
        """``(step, fact)`` when the actor comes from a fact, else None."""
        m = FACT_REF.match(self.actor)
        return m.groups() if m else None

    @property
    def fact_refs(self) -> list[tuple[str, str]]:
        """The ``(step, fact)`` pairs this step's targets refer to."""
        return _refs_in(self.targets)

    @property
    def depends_on(self) -> list[str]:
        """Ids of the steps whose facts this step uses anywhere (it waits for them to end)."""
        refs = _refs_in([self.targets, self.params, self.actor, self.requires,
                         [c.fact for c in self.when]])
        return list(dict.fromkeys(s for s, _f in refs))


@dataclass
class Playbook:
    name: str
    description: str
    topology: str | None                 # the topology name the playbook is written for
    steps: list[Step]
    file: str = ""
    version: int = 1
    seed: int = 0                        # jitter is drawn from it: runs are repeatable
    max_rate: float = DEFAULT_MAX_RATE   # per-step cap, packets/s
    link_events: list = field(default_factory=list)   # DDIL changes (twin.ddil.Change)


def _refs_in(value) -> list[tuple[str, str]]:
    """Every ``(step, fact)`` written in ``value`` (strings, lists, mappings), in order."""
    out = []
    if isinstance(value, str):
        for m in FACT_ANY.finditer(value):
            inner = FACT_INNER.match(m.group(1))
            if inner:
                out.append(inner.groups())
    elif isinstance(value, list):
        for v in value:
            out.extend(_refs_in(v))
    elif isinstance(value, dict):
        for v in value.values():
            out.extend(_refs_in(v))
    return out


@cache
def playbook_schema() -> dict:
    return json.loads(SCHEMA.read_text())


# --------------------------------------------------------------------------- loading
def load_playbook(path, topology: Topology | None = None) -> Playbook:
    """Read and check the playbook in ``path``; with ``topology``, also check names against it."""
    doc = load_yaml(path, "playbook")
    if not isinstance(doc.data, dict):
        raise doc.error("a playbook file must be a mapping with version, name, steps, ...")
    err = schema_error(doc, playbook_schema())
    if err:
        raise err
    d = doc.data
    version = d["version"]
    if version == 1:
        _check_v1(doc)
    if topology is not None and "topology" in d and d["topology"] != topology.name:
        raise doc.error(f"playbook is written for topology '{d['topology']}', "
                        f"but the topology given is '{topology.name}'", ("topology",))
    max_rate = float(d.get("defaults", {}).get("max_rate", DEFAULT_MAX_RATE))
    steps: list[Step] = []
    for i, s in enumerate(d["steps"]):
        steps.append(_step(doc, ("steps", i), s, steps, topology, max_rate))
    from cyberrange.model.linkevents import parse_events
    events = parse_events(d.get("link_events", []),
                          zones=set(topology.zones) if topology is not None else None,
                          error=lambda msg, p: doc.error(msg, p))
    return Playbook(name=d["name"], description=d.get("description", ""),
                    topology=d.get("topology"), steps=steps, file=doc.file, version=version,
                    seed=int(d.get("seed", 0)), max_rate=max_rate, link_events=events)


def _check_v1(doc: Doc) -> None:
    """A version 1 file may not use what version 2 added: say so instead of half-running it."""
    d = doc.data
    for key in ("seed", "defaults"):
        if key in d:
            raise doc.error(f"'{key}' needs 'version: 2'", (key,), key=True)
    for i, s in enumerate(d["steps"]):
        for key in V2_STEP_KEYS:
            if key in s:
                raise doc.error(f"step {s['id']}: '{key}' needs 'version: 2'",
                                ("steps", i, key), key=True)
        for key in s.get("timing", {}):
            if key in V2_TIMING_KEYS:
                raise doc.error(f"step {s['id']}: 'timing.{key}' needs 'version: 2'",
                                ("steps", i, "timing", key), key=True)
        if "#{" in s["actor"]:
            raise doc.error(f"step {s['id']}: an actor from a fact needs 'version: 2'",
                            ("steps", i, "actor"))
        if "#{" in json.dumps(s.get("params", {}), default=str):
            raise doc.error(f"step {s['id']}: facts in params need 'version: 2'",
                            ("steps", i, "params"))


def _step(doc: Doc, path: tuple, s: dict, earlier: list[Step], topo: Topology | None,
          max_rate: float) -> Step:
    seen = {st.id: st for st in earlier}
    if s["id"] in seen:
        raise doc.error(f"duplicate step id '{s['id']}' (first at line {seen[s['id']].src.line})",
                        path + ("id",))
    technique = TECHNIQUES.get(s["technique"])
    if technique is None:
        raise doc.error(f"unknown technique '{s['technique']}'"
                        f"{did_you_mean(s['technique'], TECHNIQUES)} "
                        f"(known: {', '.join(TECHNIQUES)})", path + ("technique",))
    actor = s["actor"]
    if "#{" in actor or actor.startswith("{"):
        if not FACT_REF.match(actor):
            raise doc.error(f"bad actor '{actor}': write a host name or \"#{{step.fact}}\" "
                            f"(quoted), e.g. \"#{{brute.compromised}}\"", path + ("actor",))
        _check_ref(doc, path + ("actor",), actor, seen, whole=True)
    elif topo is not None:
        node = topo.nodes.get(actor)
        if node is None:
            hosts = [n.name for n in topo.hosts]
            raise doc.error(f"unknown actor '{actor}': not a node of topology {topo.name}"
                            f"{did_you_mean(actor, hosts)}", path + ("actor",))
        if not node.is_host:
            raise doc.error(f"actor '{actor}' is a {node.kind}; steps run on hosts",
                            path + ("actor",))
    for k, target in enumerate(s["targets"]):
        _check_target(doc, path + ("targets", k), target, seen, topo)
    for k, ref in enumerate(s.get("requires", [])):
        _check_ref(doc, path + ("requires", k), ref, seen, whole=True)
    when = s.get("when", [])
    when_path = path + ("when",)
    conditions = []
    for k, c in enumerate([when] if isinstance(when, dict) else when):
        cpath = when_path if isinstance(when, dict) else when_path + (k,)
        _check_ref(doc, cpath + ("fact",), c["fact"], seen, whole=True)
        conditions.append(Condition(fact=c["fact"], not_empty=c.get("not_empty"),
                                    min_count=c.get("min_count"), contains=c.get("contains"),
                                    has_contains="contains" in c))
    params = dict(s.get("params", {}))
    for name, value in params.items():
        _check_param_refs(doc, path + ("params", name), value, seen)
    actor_from = s.get("from", "each")
    if "from" in params and "from" not in technique.params:      # engine-level alias
        if params["from"] not in ACTOR_FROM:
            raise doc.error(f"{describe(doc, path + ('params', 'from'))}: must be 'each' or "
                            f"'first', got {params['from']!r}", path + ("params", "from"))
        if "from" in s and s["from"] != params["from"]:
            raise doc.error("'from' given twice with different values", path + ("params", "from"))
        actor_from = params.pop("from")
    given = frozenset(params) | frozenset(
        k for k in ("rate", "duration") if (s.get("timing") or {}).get(k) is not None)
    params = _params(doc, path, params, technique)
    _resolve_files(doc, path, params)
    timing = _timing(doc, path, s.get("timing", {}), technique, params, max_rate)
    check_params(doc, path, s["id"], technique, params)
    if topo is not None and "#{" not in actor:
        check_against_topology(doc, path, s["id"], technique, params, list(s["targets"]), actor,
                               topo)
    return Step(id=s["id"], name=s.get("name", s["id"]), technique=s["technique"],
                actor=actor, targets=list(s["targets"]), params=params, timing=timing,
                requires=list(s.get("requires", [])), when=conditions,
                parallel=bool(s.get("parallel", False)), actor_from=actor_from,
                src=doc.ref(path), given=given)


def _check_ref(doc: Doc, path, text: str, earlier: dict[str, Step], whole: bool = False) -> None:
    """Every ``#{step.fact}`` in ``text`` names an earlier step and a fact its technique
    produces; with ``whole``, ``text`` must be exactly one reference."""
    if not isinstance(text, str):
        raise doc.error(f"expected a fact reference \"#{{step.fact}}\", got {text!r}", path)
    found = list(FACT_ANY.finditer(text))
    if not found or (whole and not FACT_REF.match(text)):
        raise doc.error(f"bad fact reference '{text}': write \"#{{step.fact}}\" (quoted)", path)
    for m in found:
        inner = FACT_INNER.match(m.group(1))
        if not inner:
            raise doc.error(f"bad fact reference '{m.group(0)}': write \"#{{step.fact}}\" "
                            f"(a step id, a dot, a fact name)", path)
        step_id, fact = inner.groups()
        ref = m.group(0)
        if step_id not in earlier:
            raise doc.error(f"fact reference '{ref}': no earlier step '{step_id}'"
                            f"{did_you_mean(step_id, earlier)} (a step can only use facts of "
                            f"steps before it)", path)
        produces = TECHNIQUES[earlier[step_id].technique].produces
        if fact not in produces:
            raise doc.error(f"fact reference '{ref}': step '{step_id}' "
                            f"({earlier[step_id].technique}) produces no fact '{fact}'"
                            f"{did_you_mean(fact, produces)} (it produces: "
                            f"{', '.join(produces) or 'nothing'})", path)


def _check_target(doc: Doc, path, target: str, earlier: dict[str, Step], topo: Topology | None):
    if "#{" in target or target.startswith("{"):
        _check_ref(doc, path, target, earlier)
        return
    if target[:1].isdigit():
        try:
            if "/" in target or ":" not in target:
                net = ipaddress.ip_network(target, strict=True)
            else:
                ip, port = target.rsplit(":", 1)
                net = ipaddress.ip_network(ip)
                if not port.isdigit() or not 1 <= int(port) <= 65535:
                    raise ValueError(f"port {port!r} is not 1..65535")
        except ValueError as e:
            raise doc.error(f"bad target '{target}': {e}", path) from None
        if topo is not None and not any(net.subnet_of(z) for z in topo.address_space()
                                        if z.version == net.version):
            raise doc.error(f"target {net} lies outside topology {topo.name}'s address space",
                            path)
        return
    name, colon, port = target.partition(":")
    if colon:
        # the runtime resolves a node to its address but keeps no port on a name: say how to
        # write it (the address with the port), and keep the port in every suggestion
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise doc.error(f"bad target '{target}': port {port!r} is not 1..65535", path)
        if topo is None:
            raise doc.error(f"target '{target}': a node name takes no ':port'; write the node's "
                            f"address with the port (e.g. '10.0.0.5:{port}')", path)
        if name not in topo.nodes:
            close = did_you_mean(name, topo.nodes)
            hint = ""
            if close:
                guess = close.split("'")[1]
                hint = (f" (did you mean '{guess}:{port}'? write it as its address, "
                        f"'{topo.nodes[guess].ip}:{port}')")
            raise doc.error(f"unknown target '{target}': '{name}' is not a node of topology "
                            f"{topo.name}{hint}", path)
        raise doc.error(f"target '{target}': a node name takes no ':port'; write its address "
                        f"with the port: '{topo.nodes[name].ip}:{port}'", path)
    if topo is not None:
        if target not in topo.zones and target not in topo.nodes:
            names = [*topo.zones, *topo.nodes]
            raise doc.error(f"unknown target '{target}': not a zone or node of topology "
                            f"{topo.name}{did_you_mean(target, names)}", path)
    elif not re.match(r"^[a-z][a-z0-9-]{0,30}$", target):
        raise doc.error(f"bad target '{target}': expected a zone or node name, a CIDR, or "
                        f"\"#{{step.fact}}\"", path)


def _is_whole_ref(value) -> bool:
    return isinstance(value, str) and FACT_REF.match(value) is not None


FILE_PARAMS = ("pcap",)


def _resolve_files(doc: Doc, path, params: dict) -> None:
    """File parameters (a replay's pcap) are relative to the playbook file; the agent runs with
    another working directory, so they become absolute here, and must exist. Like a topology's
    includes they must lie in the playbook's folder tree, the library or an allowed folder
    (``model/inputpaths.py``): the agent runs as root and would replay any file."""
    tree = inputpaths.tree_of(doc.file)
    for name in FILE_PARAMS:
        value = params.get(name)
        if not isinstance(value, str) or not value or "#{" in value:
            continue
        real = inputpaths.confine(value, os.path.dirname(os.path.abspath(doc.file)), tree)
        if real is None:
            raise doc.error(inputpaths.outside_message(f"params.{name}", value, tree),
                            path + ("params", name))
        if not os.path.isfile(real):
            raise doc.error(f"{name}: no file {value} (looked for {real})",
                            path + ("params", name))
        params[name] = real


def _params(doc: Doc, path, given: dict, technique) -> dict:
    out = technique.with_defaults({})
    for name, value in given.items():
        ppath = path + ("params", name)
        if name not in technique.params:
            raise doc.error(f"{technique.id} has no parameter '{name}'"
                            f"{did_you_mean(name, technique.params)} "
                            f"(parameters: {', '.join(technique.params)})", ppath, key=True)
        out[name] = value
        if _is_whole_ref(value):
            continue                      # its type is checked at run time, after substitution
        want = technique.params[name].type
        if not type_ok(value, want):
            raise doc.error(f"{describe(doc, ppath)}: expected {type_phrase(want)}, got "
                            f"{type(value).__name__} {value!r}", ppath)
        if name == "ports":
            for k, port in enumerate(value):
                if _is_whole_ref(port):
                    continue
                if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                    raise doc.error(f"{describe(doc, ppath)}: {port!r} is not a port 1..65535",
                                    ppath + (k,))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < 0:
                raise doc.error(f"{describe(doc, ppath)}: must not be negative, got {value}",
                                ppath)
            top = PARAM_MAX.get(name, NUMBER_MAX)
            if top is not None and value > top:
                raise doc.error(f"{describe(doc, ppath)}: {value} is too large (at most "
                                f"{top:,})", ppath)
    return out


def _check_param_refs(doc: Doc, path, value, earlier: dict[str, Step]) -> None:
    """Every fact reference written anywhere inside a parameter value."""
    if isinstance(value, str):
        if "#{" in value:
            _check_ref(doc, path, value, earlier)
    elif isinstance(value, list):
        for k, v in enumerate(value):
            _check_param_refs(doc, path + (k,), v, earlier)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_param_refs(doc, path + (k,), v, earlier)


def _timing(doc: Doc, path, t: dict, technique, params: dict, max_rate: float) -> Timing:
    tpath = path + ("timing",)
    if "at" in t and "delay" in t:
        raise doc.error("timing: give either 'delay' (after the previous step) or 'at' (from "
                        "the playbook start), not both", tpath + ("at",), key=True)
    for key in ("rate", "duration"):
        if key in t and key not in technique.params:
            raise doc.error(f"timing.{key}: {technique.id} takes no {key} (its parameters: "
                            f"{', '.join(technique.params) or 'none'})", tpath + (key,), key=True)
    timing = Timing(delay=float(t.get("delay", 0)), at=t.get("at"), duration=t.get("duration"),
                    rate=t.get("rate"), jitter=float(t.get("jitter", 0)),
                    repeat=int(t.get("repeat", 1)), every=float(t.get("every", 0)))
    if timing.repeat > 1 and (timing.repeat - 1) * timing.every * (1 + timing.jitter) > SECONDS_MAX:
        raise doc.error(f"{describe(doc, tpath)}: {timing.repeat} repeats every "
                        f"{timing.every:g} s last more "
                        f"than a day ({SECONDS_MAX:,} s); fewer repeats or a shorter 'every'",
                        tpath + ("repeat",))
    # the rate: timing.rate and params.rate are the same thing; say it once
    if timing.rate is not None:
        if "rate" in (doc.get(path + ("params",)) or {}) and params["rate"] != timing.rate:
            raise doc.error(f"the rate is given twice: timing.rate {timing.rate} and params.rate "
                            f"{params['rate']}", tpath + ("rate",))
        params["rate"] = timing.rate
    if timing.duration is not None:
        params["duration"] = timing.duration
    rate = params.get("rate")
    if "rate" in technique.params and isinstance(rate, (int, float)) and not isinstance(rate, bool):
        given_at = (tpath + ("rate",) if timing.rate is not None
                    else path + ("params", "rate") if "rate" in (doc.get(path + ("params",)) or {})
                    else None)
        if rate > max_rate:
            if given_at is None:          # the catalog's default is above the cap: cap it
                params["rate"] = max_rate
            else:
                raise doc.error(f"{describe(doc, given_at)}: {rate:g} packets/s is above the "
                                f"per-step cap of {max_rate:g} (raise defaults.max_rate to "
                                f"allow it)", given_at)
        elif rate == 0:
            params["rate"] = max_rate     # 0, "as fast as possible", still obeys the cap
    return timing

