"""Detector families registered in one place; detector instances loaded from detectors/*.yaml.

File format (one or more files, every ``*.yaml`` / ``*.yml`` of the folder)::

    detectors:
      - name: vertical-portscan        # unique instance name -> rule.name of its alerts
        family: portscan               # a registered family (see FAMILIES)
        enabled: true                  # optional, default true
        description: ...               # optional, free text
        settings: {mode: ports, window: 10, threshold: 12}

Errors name the file and line: ``detectors/x.yaml:7:18: unknown setting 'treshold' ...``.
``run_detectors`` is the only function that moves data: store -> detectors -> alerts -> store.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import pyarrow as pa
import yaml

from ..errors import UserError
from .base import Detector, SettingError, alerts_to_table
from .bruteforce import BruteForceDetector
from .portscan import PortScanDetector

__all__ = ["FAMILIES", "register", "load_detectors", "load_detector_file", "run_detectors"]

FAMILIES: dict[str, type[Detector]] = {}

ENTRY_KEYS = ("name", "family", "settings", "enabled", "description")


def register(cls: type[Detector]) -> type[Detector]:
    """Register a detector family (usable as a class decorator)."""
    FAMILIES[cls.family] = cls
    return cls


register(PortScanDetector)
register(BruteForceDetector)


def _hint(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(choices))})"


def _items(node) -> dict[str, tuple]:
    """{key: (key_node, value_node)} of a YAML mapping node."""
    return {k.value: (k, v) for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}


def _err(msg: str, path: Path, node) -> UserError:
    mark = node.start_mark if node is not None else None
    return UserError(msg, file=str(path), line=mark.line + 1 if mark else None,
                     col=mark.column + 1 if mark else None)


def load_detector_file(path: str | Path) -> list[Detector]:
    """Detector instances of one YAML file (disabled ones left out)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read detectors file: {exc.strerror}", file=str(path)) from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                        line=mark.line + 1 if mark else None,
                        col=mark.column + 1 if mark else None) from None
    if root is None:
        return []
    top = _items(root)
    if not isinstance(data, dict) or "detectors" not in data:
        raise _err("expected a mapping with a 'detectors' list", path, root)
    for key, (knode, _) in top.items():
        if key != "detectors":
            raise _err(f"unknown key {key!r}{_hint(key, ['detectors'])}", path, knode)
    list_node = top["detectors"][1]
    entries = data["detectors"] or []
    if not isinstance(entries, list):
        raise _err("'detectors' must be a list", path, list_node)

    out: list[Detector] = []
    for entry, node in zip(entries, list_node.value):
        if not isinstance(entry, dict):
            raise _err("each detector must be a mapping with name, family and settings",
                       path, node)
        keys = _items(node)
        for key, (knode, _) in keys.items():
            if key not in ENTRY_KEYS:
                raise _err(f"unknown key {key!r}{_hint(key, ENTRY_KEYS)}", path, knode)
        for required in ("name", "family"):
            if required not in entry:
                raise _err(f"detector needs a {required!r}", path, node)
        name, family = entry["name"], entry["family"]
        if not isinstance(name, str) or not name:
            raise _err("'name' must be a non-empty string", path, keys["name"][1])
        cls = FAMILIES.get(family)
        if cls is None:
            raise _err(f"unknown detector family {family!r}{_hint(family, FAMILIES)}",
                       path, keys["family"][1])
        settings = entry.get("settings") or {}
        snodes = _items(keys["settings"][1]) if "settings" in keys else {}
        if not isinstance(settings, dict):
            raise _err("'settings' must be a mapping", path, keys["settings"][1])
        try:
            det = cls(name, **settings)
        except SettingError as exc:
            where = snodes.get(exc.setting)
            node_at = (where[0] if exc.setting not in cls.SETTINGS else where[1]) if where \
                else keys.get("settings", (node, node))[0]
            raise _err(f"{name}: {exc.message}", path, node_at) from None
        if entry.get("enabled", True):
            out.append(det)
    return out


def load_detectors(dir: str | Path = "detectors") -> list[Detector]:
    """All enabled detector instances configured in ``dir/*.yaml`` (sorted by file name)."""
    folder = Path(dir)
    if not folder.is_dir():
        raise UserError(f"detectors folder not found: {folder}")
    detectors: list[Detector] = []
    seen: dict[str, Path] = {}
    for path in sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml"))):
        for det in load_detector_file(path):
            if det.name in seen:
                text = path.read_text().splitlines()
                line = next((i + 1 for i, ln in enumerate(text) if det.name in ln), None)
                raise UserError(f"detector name {det.name!r} already used in {seen[det.name]}",
                                file=str(path), line=line)
            seen[det.name] = path
            detectors.append(det)
    return detectors


def run_detectors(store, run_id: str, detectors: list[Detector], *, write: bool = True,
                  replace: bool = True) -> pa.Table:
    """Run every detector over the run's records in ``store``; store and return the alerts.

    With ``replace`` (default) earlier alerts of the run are removed first when the store
    supports ``delete``, so re-running detection does not duplicate alerts.
    """
    flows = store.read("flows", run_id)
    packets = store.read("packets", run_id) if any(d.needs_packets for d in detectors) else None
    alerts = []
    for det in detectors:
        alerts.extend(det.detect(flows, packets))
    table = alerts_to_table(alerts, run_id)
    if write:
        if replace and hasattr(store, "delete"):
            store.delete("alerts", run_id)
        store.write("alerts", table)
    return table
