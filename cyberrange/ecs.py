"""ECS rules shared by the writers and readers of records: what may go in ``threat.technique.id``.

``threat.technique.id`` holds a real MITRE ATT&CK id only: ``T1046``, ``T1110.001``, ICS
``T0855``. The technique library's variants (``T1046-connect``, ``T1018-arp``) and its harness
capabilities (``replay``) are no ATT&CK ids: they go in ``cyberrange.technique.variant``, and
the ATT&CK id they stand for (``T1046``) in ``threat.technique.id``. A detector that does not
know the technique (the learned families) leaves both out (null).

Runs written before this rule may hold ``"unknown"`` or a variant in ``threat.technique.id``;
``technique_id`` reads both spellings.
"""
from __future__ import annotations

import re

__all__ = ["ATTACK_ID", "VARIANT_FIELD", "is_attack_id", "split_technique", "technique_id"]

#: an ATT&CK (Enterprise, ICS, Mobile) technique or sub-technique id
ATTACK_ID = re.compile(r"T\d{4}(?:\.\d{3})?")

#: the project field of a library variant id (``T1046-connect``)
VARIANT_FIELD = "cyberrange.technique.variant"


def is_attack_id(value) -> bool:
    """Whether ``value`` is an ATT&CK technique id (``T1046``, ``T1110.001``, ``T0855``)."""
    return isinstance(value, str) and ATTACK_ID.fullmatch(value) is not None


def split_technique(technique) -> tuple[str | None, str | None]:
    """A technique id as the code knows it -> ``(threat.technique.id, cyberrange.technique.variant)``.

    ``T1046`` -> ``("T1046", None)``; ``T1046-connect`` -> ``("T1046", "T1046-connect")``;
    ``replay`` -> ``(None, "replay")``; ``unknown``, ``""``, None -> ``(None, None)``."""
    if not isinstance(technique, str) or technique in ("", "unknown"):
        return None, None
    if is_attack_id(technique):
        return technique, None
    base = technique.split("-", 1)[0]
    return (base if is_attack_id(base) else None), technique


def technique_id(value) -> str | None:
    """The ATT&CK id read from a ``threat.technique.id`` of any run, old or new: an old run's
    ``"unknown"`` is None, an old variant (``T1046-udp``) is its ATT&CK id."""
    return split_technique(value)[0]
