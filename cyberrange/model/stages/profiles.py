"""Shaping profiles: the built-ins of ``profiles.yaml`` (version 2), the file's own, and the
references to them from zones and links (a name, or a profile written in place)."""
from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path

from cyberrange.model.stages.base import Context, defaults
from cyberrange.model.topology import LinkProfile
from cyberrange.model.yamlsrc import Doc, did_you_mean, load_yaml

PROFILES_FILE = Path(__file__).resolve().parent.parent / "profiles.yaml"

_BANDWIDTH = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit)(?:/s)?\s*$", re.IGNORECASE)
_BW_UNIT = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}


def parse_bandwidth(value) -> float | None:
    """Mbit/s from a number (already Mbit/s) or a string with a unit: ``"9.6kbit"`` -> 0.0096.
    None when the text is not a bandwidth."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _BANDWIDTH.match(str(value))
    if not m:
        return None
    return round(float(m[1]) * _BW_UNIT[m[2].lower()], 9)


@cache
def builtin_profiles() -> dict[str, LinkProfile]:
    """The built-in link profiles of ``profiles.yaml`` (lan, wan, satcom-geo, ...)."""
    doc = load_yaml(PROFILES_FILE)
    out = {}
    for name, p in doc.data.items():
        out[name] = read_profile(doc, ("",), name, p)
    return out


def read_profile(doc: Doc, path, name: str, p: dict) -> LinkProfile:
    """One profile as written (``bandwidth`` with or without a unit, delay, jitter, loss)."""
    bw = p.get("bandwidth")
    if bw is not None:
        mbit = parse_bandwidth(bw)
        if mbit is None or mbit <= 0:
            raise doc.error(f"bad bandwidth {bw!r}: give Mbit/s as a number > 0, or a string "
                            f"with a unit such as \"9.6kbit\", \"2mbit\", \"1gbit\"",
                            tuple(path) + ("bandwidth",))
        bw = mbit
    default = defaults()["profile"]
    return LinkProfile(name=name, bandwidth_mbit=bw,
                       delay_ms=float(p.get("delay", default["delay"])),
                       jitter_ms=float(p.get("jitter", default["jitter"])),
                       loss_pct=float(p.get("loss", default["loss"])))


def profiles(ctx: Context) -> None:
    """The profiles a zone or link may name: (v2) the built-ins first; the file's own override
    them."""
    if ctx.v2:
        ctx.topo.profiles.update(copy.deepcopy(builtin_profiles()))
    for name, p in ctx.doc.data.get("profiles", {}).items():
        ctx.topo.profiles[name] = read_profile(ctx.doc, ("profiles", name), name, p)


def profile_ref(ctx: Context, path, owner: str) -> LinkProfile | None:
    """The profile at ``path``: None, a profile written in place, or a defined one by name."""
    doc, topo = ctx.doc, ctx.topo
    ref = doc.get(path)
    if ref is None:
        return None
    if isinstance(ref, dict):
        return read_profile(doc, path, owner, ref)
    if ref not in topo.profiles:
        known = list(topo.profiles)
        hint = did_you_mean(ref, known) or (
            f" (defined profiles: {', '.join(known)})" if known else " (no profiles: are defined)")
        if not ctx.v2 and ref in builtin_profiles():
            hint = f" (the built-in profile '{ref}' needs version: 2)"
        raise doc.error(f"unknown profile '{ref}'{hint}", path)
    return topo.profiles[ref]
