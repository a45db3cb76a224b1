"""The patched inputs a live validation runs on: the topology document after the change (one
self-contained YAML file: includes and block instances already merged) and, when the change
has ``set-detector`` operations, a copy of the detectors folder with them applied.

Detector operations are checked here, against the detectors folder: an unknown detector or a
setting its family does not take is an error at the operation's line in the change set.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from cyberrange.detect.registry import FAMILIES, SettingError
from cyberrange.model.loader import STAGES, load_topology
from cyberrange.model.stages.base import Context
from cyberrange.model.stages.names import topology as topology_stage
from cyberrange.model.yamlsrc import did_you_mean, load_yaml
from cyberrange.patch.apply import apply_change
from cyberrange.patch.changeset import ChangeSet

MERGED = ("include", "blocks", "instances")     # already expanded into the document


def patched_document(topology_path, cs: ChangeSet) -> dict:
    """The topology document after includes, block instances and the change."""
    ctx = Context(load_yaml(topology_path, "topology"))
    for stage in STAGES:
        if stage is topology_stage:
            break
        stage(ctx)
    apply_change(ctx.doc, cs)
    return {k: v for k, v in ctx.doc.data.items() if k not in MERGED}


def write_patched_topology(topology_path, cs: ChangeSet, out: Path) -> Path:
    """Write the patched topology to ``out`` and prove it loads to the same model."""
    data = patched_document(topology_path, cs)
    head = (f"# {Path(topology_path).name} patched by change set {cs.name} ({cs.file}); "
            f"written by cyberrange validate\n")
    out.write_text(head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    mine, theirs = load_topology(out), load_topology(topology_path, change=cs)
    assert sorted(mine.nodes) == sorted(theirs.nodes), "patched file differs from the model"
    return out


def detector_ops(cs: ChangeSet) -> list[tuple[int, dict]]:
    return [(i, op) for i, op in enumerate(cs.ops) if op["op"] == "set-detector"]


def _entries(detectors_dir: Path) -> dict[str, tuple[Path, int, dict]]:
    """detector name -> (file, index in its list, the entry as written)."""
    out = {}
    for path in sorted([*detectors_dir.glob("*.yaml"), *detectors_dir.glob("*.yml")]):
        for k, entry in enumerate(load_yaml(path, "detectors").data.get("detectors") or []):
            if isinstance(entry, dict) and "name" in entry:
                out[entry["name"]] = (path, k, entry)
    return out


def check_detector_ops(cs: ChangeSet, detectors_dir) -> dict[Path, dict]:
    """Apply the ``set-detector`` operations to copies of the detector files; return
    ``{file: patched document}`` (only the files that change)."""
    folder = Path(detectors_dir)
    entries = _entries(folder) if detector_ops(cs) else {}
    docs: dict[Path, dict] = {}
    for i, op in detector_ops(cs):
        at = ("changes", i)
        name = op["detector"]
        if name not in entries:
            raise cs.error(f"unknown detector '{name}' in {folder}"
                           f"{did_you_mean(name, entries)}", at + ("detector",))
        path, k, _ = entries[name]
        doc = docs.setdefault(path, load_yaml(path, "detectors").data)
        entry = doc["detectors"][k]
        settings = dict(entry.get("settings") or {})
        settings.update(op.get("settings") or {})
        cls = FAMILIES[entry["family"]]
        try:
            cls(name, **settings)
        except SettingError as exc:
            key = exc.setting if exc.setting in (op.get("settings") or {}) else None
            raise cs.error(f"{name}: {exc.message}", at + (("settings", key) if key else
                                                          ("settings",))) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise cs.error(f"{name}: bad settings ({type(exc).__name__}: {exc})",
                           at + ("settings",)) from None
        entry["settings"] = settings
        if "enabled" in op:
            entry["enabled"] = op["enabled"]
    return docs


def write_patched_detectors(cs: ChangeSet, detectors_dir, out: Path) -> Path:
    """A copy of ``detectors_dir`` in ``out`` with the change's detector operations applied."""
    docs = check_detector_ops(cs, detectors_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted([*Path(detectors_dir).glob("*.yaml"), *Path(detectors_dir).glob("*.yml")]):
        if path in docs:
            (out / path.name).write_text(yaml.safe_dump(docs[path], sort_keys=False))
        else:
            (out / path.name).write_text(path.read_text())
    return out
