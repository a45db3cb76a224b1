"""How a technique is declared: its ATT&CK id, parameters (type, default, help) and the facts it
produces. Each family module in ``cyberrange.attack.techniques`` declares its ``SPECS`` with these.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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


