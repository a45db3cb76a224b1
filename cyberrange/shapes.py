"""Type checks of JSON read back from a run folder (manifest, ledger, scorecard).

A run folder can be edited, truncated or damaged after the drill. Every reader checks the fields
it is about to use with ``want`` first, so a wrong value becomes one ``UserError`` that names the
file, the record and the field (``runs/x/manifest.json: 'run_id' must be a string, not an
integer (42)``) instead of a ``KeyError`` or ``TypeError`` deep inside scoring.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from cyberrange.errors import UserError

NUM = (int, float)          # a JSON number: float accepts integers, never true/false
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          list: "a list", dict: "an object", type(None): "null"}


def json_type(value) -> str:
    """The JSON name of a value's type: ``a string``, ``an object``, ``null`` ..."""
    for t in (bool, type(None), dict, list, str, int, float):
        if isinstance(value, t):
            return _NAMES[t]
    return type(value).__name__


def _is(value, types) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, float) and not math.isfinite(value):
        return False                                  # NaN, Infinity: json accepts them
    return any(isinstance(value, t) for t in types if t is not None and t is not bool)


def want(obj: dict, key: str, types: tuple, where: str, required: bool = True):
    """``obj[key]`` when it has one of ``types`` (``None`` in ``types``: null allowed; a missing
    optional key reads as None); otherwise a UserError ``WHERE: 'key' must be ..., not ...``."""
    if key not in obj:
        if required:
            raise UserError(f"{where}: no {key!r}")
        return None
    value = obj[key]
    if _is(value, types):
        return value
    names = " or ".join(_NAMES[t] for t in types
                        if t is not None and not (t is int and float in types))
    if None in types:
        names += " or null"
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise UserError(f"{where}: {key!r} must be {names}, not {json_type(value)} ({shown})")


def want_list_of_objects(obj: dict, key: str, where: str, required: bool = False) -> list[dict]:
    """``obj[key]`` as a list whose every item is an object ([] when absent and optional)."""
    items = want(obj, key, (list, None), where, required=required) or []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserError(f"{where}: {key}[{i}] must be an object, not {json_type(item)}")
    return items


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file that must hold one object, read without following it anywhere it should not
    go (a FIFO would block): a directory, a special file, non-UTF-8 bytes, bad JSON or another
    JSON type is one UserError naming the file (``what``: the file's role, for the message)."""
    path = Path(path)
    data = read_regular(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{what} is not UTF-8 text (byte {exc.start}, line {line})",
                        file=str(path)) from None
    if not text.strip():
        raise UserError(f"{what} is empty", file=str(path))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON ({exc.msg})", file=str(path), line=exc.lineno,
                        col=exc.colno) from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply", file=str(path)) from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} must hold a JSON object, not {json_type(obj)}", file=str(path))
    return obj


def read_regular(path: Path, what: str) -> bytes:
    """The bytes of a regular file; a directory, FIFO, socket, device, dangling or looping link
    or an unreadable file is one UserError."""
    path = Path(path)
    try:
        if not path.is_file():
            if not path.exists() and not path.is_symlink():
                raise UserError(f"{what} is missing", file=str(path))
            raise UserError(f"{what} is {file_kind(path)}, not a regular file", file=str(path))
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the {what}: {exc.strerror or exc}", file=str(path)) from None


def file_kind(path: Path) -> str:
    """What a path is, in words, for messages about something that should be a regular file."""
    import stat
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            return "a symbolic link to nothing"
        mode = path.stat().st_mode
    except OSError as exc:                  # a loop of links, a permission problem
        return f"unreadable ({exc.strerror or exc})"
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"
