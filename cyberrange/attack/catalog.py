"""The techniques a playbook may name: every family's ``SPECS`` gathered in one table.

This table is what the playbook loader validates against; the implementations (``FUNCS``) live
beside their specs in ``cyberrange.attack.techniques.<family>`` and run inside the actor's
namespace (``cyberrange.attack.agent``). Importing it does not import scapy.
"""
from __future__ import annotations

import importlib

from cyberrange.attack.spec import Param, Technique  # noqa: F401  (re-exported)
from cyberrange.attack.techniques import FAMILIES


def _gather() -> dict[str, Technique]:
    table: dict[str, Technique] = {}
    for fam in FAMILIES:
        for t in importlib.import_module(f"cyberrange.attack.techniques.{fam}").SPECS:
            if t.id in table:
                raise RuntimeError(f"technique {t.id} declared twice ({fam})")
            table[t.id] = t
    return table


TECHNIQUES: dict[str, Technique] = _gather()
