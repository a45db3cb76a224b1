"""Attack techniques, one module per family, registered here in one place.

Each family module defines ``FUNCS: dict[technique id, function(targets, params) -> Result]``;
the functions run inside the actor's namespace (``cyberrange.attack.agent``) and import scapy
lazily, so importing a family is cheap. The parameters and facts of each technique are declared
in ``cyberrange.attack.catalog`` (what the playbook loader validates against).
"""
from __future__ import annotations

import importlib

FAMILIES = ("discovery", "credential", "c2", "exfil", "mitm", "impact", "ics", "replay", "lateral")


def technique_funcs() -> dict:
    funcs = {}
    for fam in FAMILIES:
        mod = importlib.import_module(f"cyberrange.attack.techniques.{fam}")
        funcs.update(mod.FUNCS)
    return funcs
