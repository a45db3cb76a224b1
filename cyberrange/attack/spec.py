"""How a technique is declared: its ATT&CK id, parameters (type, default, help), the facts it
produces and the function that runs it. A technique module declares each technique with the
:func:`technique` decorator on its function; ``cyberrange.attack.catalog`` finds them.

A parameter's default is stated here, once: the playbook loader fills every parameter a step
leaves out from it and the agent does the same for a request that leaves some out, so a
technique's function reads ``params[name]`` and never restates a default.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable


def type_ok(value, types) -> bool:
    """Whether ``value`` is of a parameter's ``types`` (YAML true/false is no number)."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def type_phrase(types) -> str:
    """A parameter's type for an error message: "an integer", "a number", "a list", ..."""
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             bool: "true or false", dict: "a mapping"}
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def type_text(types) -> str:
    """A parameter's type in a table (the docs, ``attack show``): int, number, list, ..."""
    types = types if isinstance(types, tuple) else (types,)
    if set(types) == {int, float}:
        return "number"
    names = {dict: "mapping"}
    return " or ".join(names.get(t, getattr(t, "__name__", str(t))) for t in types)


@dataclass(frozen=True)
class Param:
    type: type | tuple          # int, float, str, list, bool
    default: object
    help: str


@dataclass(frozen=True)
class Technique:
    id: str                     # ATT&CK technique id
    name: str
    tactic: str
    params: dict[str, Param] = field(default_factory=dict)
    produces: tuple[str, ...] = ()   # fact names: "#{<step>.<fact>}"
    target_kind: str = "host"        # "host": IPs; "service": ip:port
    func: Callable | None = field(default=None, compare=False, repr=False)  # (targets, params)
    family: str = ""                 # the module that declares it (discovery, c2, ...)
    # "agent": runs in the actor's namespace (``attack/agent.py``); "twin": runs in the runner's
    # process against the twin itself (``func(targets, params, context)``: RF jamming changes a
    # link's state, it sends no packet)
    runs_on: str = "agent"
    # None: packet sensors can see it; else why they cannot (the scorer leaves such a step out
    # of the detection counts: no miss, ``score.score.observable``)
    unobservable: str | None = None
    related: tuple[str, ...] = ()    # ATT&CK ids a custom (non-ATT&CK) id stands near

    @property
    def custom(self) -> bool:
        """A documented custom id (``CR-J0001``), not an ATT&CK technique or a variant of one."""
        return self.id.startswith("CR-")

    def with_defaults(self, given: dict) -> dict:
        """``given`` with every parameter it leaves out set to (a copy of) its default."""
        return {**{name: copy.deepcopy(p.default) for name, p in self.params.items()}, **given}


def technique(id: str, name: str, tactic: str, params: dict[str, Param] | None = None, *,
              produces: tuple[str, ...] = (), target_kind: str = "host", runs_on: str = "agent",
              unobservable: str | None = None, related: tuple[str, ...] = ()):
    """Declare the function below as technique ``id``. One function may serve several
    techniques (stack the decorators: each has its own parameters and defaults)."""
    def declare(func: Callable) -> Callable:
        spec = Technique(id, name, tactic, dict(params or {}), tuple(produces), target_kind,
                         func=func, family=func.__module__.rsplit(".", 1)[-1], runs_on=runs_on,
                         unobservable=unobservable, related=tuple(related))
        declared = func.__dict__.setdefault("techniques", [])
        declared.insert(0, spec)            # decorators apply bottom-up: keep reading order
        return func
    return declare
