"""Where the content is: built-in topologies, playbooks, detectors, labs, responses, change sets
and Kibana objects, found by name or by path, with the user's own folders in front.

The search path is a list of *content roots*; each root may hold any of the content folders
below (``topologies/``, ``attack_playbooks/``, ...). In order:

1. the folders given with ``cyberrange --content-path DIR`` (repeatable), for this command;
2. the folders in ``$CYBERRANGE_PATH`` (separated by ``:``);
3. the built-in content: ``cyberrange/_content/`` inside an installed wheel, or the top-level
   folders of a source checkout (an editable install).

A name (``fob``, ``recon_bruteforce``) is looked up root by root: the first root that has it
wins, so a user's ``topologies/fob.yaml`` overrides the built-in one and a new name extends the
set. A path that exists is used as it is; a relative path that does not exist here but does in
a root (``topologies/fob.yaml`` from any folder) is taken from there. The detectors are one
folder: the first root that has a ``detectors/`` folder with YAML files in it.

Nothing here depends on the current folder except a path the user gave.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_PATH = "CYBERRANGE_PATH"
_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Kind:
    folder: str          # below a content root
    what: str            # for messages
    verb: str            # the command that lists them
    is_dir: bool = False  # a lab is a folder holding lab.yaml


KINDS: dict[str, Kind] = {
    "topology": Kind("topologies", "topology", "ls topologies/"),
    "playbook": Kind("attack_playbooks", "playbook", "ls attack_playbooks/"),
    "response": Kind("responses", "response file", "ls responses/"),
    "change": Kind("topologies/changes", "change set", "ls topologies/changes/"),
    "lab": Kind("labs", "lab", "cyberrange lab list", is_dir=True),
    "detectors": Kind("detectors", "detector file", "cyberrange detect list"),
    "kibana": Kind("kibana", "Kibana objects file", "ls kibana/"),
}
FOLDERS = ("topologies", "attack_playbooks", "detectors", "labs", "responses", "kibana")
SUFFIXES = (".yaml", ".yml")

_option_roots: list[Path] = []        # --content-path, for this process


def builtin_root() -> Path:
    """The built-in content: ``_content/`` in an installed package, else the source checkout
    (the folder above the package) when it has the content folders."""
    packaged = _PACKAGE / "_content"
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent


def set_option_roots(folders) -> None:
    """The ``--content-path`` folders for this process (replaces earlier ones)."""
    _option_roots[:] = [Path(f).expanduser().resolve() for f in folders]


def roots() -> list[Path]:
    """The content roots, highest priority first, each once."""
    env = [Path(p).expanduser().resolve()
           for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for r in [*_option_roots, *env, builtin_root()]:
        if r not in out:
            out.append(r)
    return out


def _candidates(kind: Kind, base: Path, name: str) -> list[Path]:
    if kind.is_dir:
        return [base / name]
    if name.endswith(SUFFIXES):
        return [base / name]
    return [base / (name + s) for s in SUFFIXES]


def _exists(kind: Kind, p: Path) -> bool:
    return p.is_dir() if kind.is_dir else p.is_file()


def looks_like_path(ref: str) -> bool:
    """``ref`` names a file rather than a built-in name: it has a folder part or a suffix."""
    return os.sep in ref or "/" in ref or ref.endswith(SUFFIXES) or ref.startswith(".")


def find(kind_name: str, ref) -> Path | None:
    """``ref`` (a path or a name) as a path, or None when neither exists."""
    kind = KINDS[kind_name]
    ref = str(ref)
    here = Path(ref).expanduser()
    if here.exists():
        return here
    if looks_like_path(ref):
        if here.is_absolute():
            return None
        for r in roots():          # topologies/fob.yaml given from another folder
            if (r / here).exists():
                return r / here
        return None
    for r in roots():
        for c in _candidates(kind, r / kind.folder, ref):
            if _exists(kind, c):
                return c
    return None


def names(kind_name: str) -> list[str]:
    """Every name of this kind over all roots (the first root's wins for a name)."""
    kind = KINDS[kind_name]
    seen: dict[str, Path] = {}
    for r in roots():
        base = r / kind.folder
        if not base.is_dir():
            continue
        if kind.is_dir:
            items = [p for p in base.iterdir() if (p / "lab.yaml").is_file()]
        else:
            items = [p for p in base.iterdir() if p.is_file() and p.suffix in SUFFIXES]
        for p in sorted(items):
            seen.setdefault(p.stem if not kind.is_dir else p.name, p)
    return sorted(seen)


def resolve(kind_name: str, ref) -> str:
    """``ref`` resolved to a path string. A name nobody has is a UserError that lists the
    known names; a path that does not exist is returned unchanged, so that the loader reports
    it as it reports any missing file."""
    found = find(kind_name, ref)
    if found is not None:
        return str(found)
    if looks_like_path(str(ref)):
        return str(ref)
    import difflib

    from cyberrange.errors import UserError
    kind = KINDS[kind_name]
    known = names(kind_name)
    close = difflib.get_close_matches(str(ref), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"no {kind.what} named {str(ref)!r}{hint} "
                    f"(built-in and {ENV_PATH} names: {', '.join(known) or 'none'}; or give "
                    f"a file path)")


def detectors_dir(ref=None) -> str:
    """The detectors folder: ``ref`` when given (a path, or relative to a content root), else
    the first root with YAML files in ``detectors/``."""
    if ref is not None:
        p = Path(ref).expanduser()
        if not p.exists() and not p.is_absolute():
            for r in roots():          # --detectors detectors from another folder
                if (r / p).is_dir():
                    return str(r / p)
        return str(ref)
    for r in roots():
        d = r / "detectors"
        if d.is_dir() and any(p.suffix in SUFFIXES for p in d.iterdir()):
            return str(d)
    return str(builtin_root() / "detectors")


def folder(name: str) -> Path:
    """A built-in content folder (``kibana``, ``labs``, ...) of the first root that has it."""
    for r in roots():
        if (r / name).is_dir():
            return r / name
    return builtin_root() / name


def library_folders() -> list[Path]:
    """Every content folder of every root that exists: files named inside inputs may lie there
    (``model.inputpaths``)."""
    return [r / f for r in roots() for f in FOLDERS if (r / f).is_dir()]
