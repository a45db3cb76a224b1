"""Where a file named inside an input file may be: the confinement rule.

A topology's ``include:``, a playbook's ``params.pcap`` and an Elasticsearch config file's
``ca:`` and ``spool:`` name other files. Input files are shared (labs, exercises, patches), so a
file given to cyberrange must not make it read, replay or write something its author could not
see: every such path is resolved relative to the file that names it, symbolic links followed
(``realpath``), and must then lie

- in the folder tree of the top-level file (the one named on the command line): ``../`` is fine
  while it stays inside, ``/etc/shadow`` and ``../../..`` out of it are refused;
- or in the content folders shipped with cyberrange (``topologies/``, ``attack_playbooks/``,
  ``detectors/`` of the checkout: the library);
- or in a folder allowed explicitly: ``--allow-outside DIR`` of the commands that load files, or
  ``CYBERRANGE_INPUT_PATHS`` (folders separated by ``:``).

The refusal is checked before the file is opened, and says nothing about the file (not even
whether it exists).
"""
from __future__ import annotations

import os

ENV_INPUT_PATHS = "CYBERRANGE_INPUT_PATHS"
LIBRARY_FOLDERS = ("topologies", "attack_playbooks", "detectors")

_allowed: list[str] = []          # from --allow-outside, for this process


def allow_outside(folders) -> None:
    """Folders (``--allow-outside``) whose files any input may name, for this process; replaces
    what an earlier command gave."""
    _allowed[:] = [os.path.realpath(f) for f in folders]


def library_folders() -> list[str]:
    """The content folders shipped with cyberrange that exist in this installation, and those
    of the user's content roots (``cyberrange.content``: --content-path, CYBERRANGE_PATH)."""
    from cyberrange import content
    return [str(p) for p in content.library_folders() if p.name in LIBRARY_FOLDERS]


def allowed_folders() -> list[str]:
    """Folders any input may name files in, besides its own tree: the library, the
    environment's ``CYBERRANGE_INPUT_PATHS`` and ``--allow-outside``."""
    env = [os.path.realpath(p) for p in os.environ.get(ENV_INPUT_PATHS, "").split(os.pathsep)
           if p.strip()]
    return [*(os.path.realpath(p) for p in library_folders()), *env, *_allowed]


def tree_of(top_file) -> str:
    """The folder tree a top-level input file may name files in: its folder, links resolved."""
    return os.path.realpath(os.path.dirname(os.path.abspath(top_file)))


def _inside(real: str, folder: str) -> bool:
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


def confine(name: str, base_dir, tree: str) -> str | None:
    """``name`` (as written in a file in ``base_dir``) resolved, links followed; None when it
    lies outside ``tree`` and every allowed folder."""
    try:
        real = os.path.realpath(os.path.join(base_dir, name))
    except (ValueError, OSError):          # a NUL byte, a name too long
        return None
    if _inside(real, tree) or any(_inside(real, f) for f in allowed_folders()):
        return real
    return None


def outside_message(what: str, name: str, tree: str) -> str:
    """The one line that refuses a path outside the tree (the path as written, no content)."""
    shown = name if len(name) <= 200 else name[:200] + "..."
    return (f"{what} '{shown}' is outside {tree} (the folder of the file given on the "
            f"command line): files named in inputs must stay in its folder tree or the library "
            f"({', '.join(LIBRARY_FOLDERS)}); allow another folder with {ENV_INPUT_PATHS}=DIR "
            f"(or --allow-outside DIR)")

