"""YAML with source positions, so that every later check can say ``FILE:LINE:COL``; the one
entry point for YAML that users write (topologies and their includes, playbooks, detector
files, Elasticsearch config files, containerlab imports) and for the YAML shipped in the package.

``load_yaml(path, kind)`` reads a file within the limits of its kind (:data:`LIMITS`: size,
values, nesting, aliases) and refuses, with one line and a position, what no input needs:
bytes that are not UTF-8 (with the byte offset), control characters and NUL bytes, nesting and
alias expansion past the limits (before anything is expanded), duplicate keys, NaN and infinity,
values that are not strings, numbers, booleans or null. ``yamlevents.EventBuilder`` builds plain
Python values straight from the parser's events and remembers, for every path into the document
(a tuple of mapping keys and list indices), where its key and its value were written. Checks then
ask ``doc.error("message", ("nodes", 3, "ip"))`` and get a :class:`UserError` pointing at that
line. Mapping keys are kept as the text the user wrote (``on:`` stays ``"on"``, not ``True``).
Errors never quote the file around the problem (PyYAML's ``str(exc)`` does: it is never used).
"""
from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from cyberrange.errors import UserError
from cyberrange.model.topology import SourceRef
from cyberrange.model.yamlevents import EventBuilder, one_line

PathT = tuple  # of str (mapping key) and int (list index)


@dataclass
class Doc:
    """A parsed YAML document: ``data`` (plain dicts, lists, scalars) plus positions.

    A document can be *composed* from several files (includes, block instances): then a
    position may carry its own file as a third item, ``(line, col, file)``, and errors and
    source references point at that file. ``context`` labels parts of the document (a path
    prefix -> e.g. ``"block platoon instance 3"``); errors inside such a part start with it.
    """
    file: str
    data: Any
    # path -> (line, col) of the value, and of the key when the value sits in a mapping; 1-based
    values: dict[PathT, tuple] = field(default_factory=dict)
    keys: dict[PathT, tuple] = field(default_factory=dict)
    context: dict[PathT, str] = field(default_factory=dict)

    def where(self, path: Iterable = (), key: bool = False) -> tuple[str, int, int]:
        """File, line and column of ``path`` (its key if ``key``); the nearest known ancestor
        otherwise."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                p = self.keys[path]
                break
            if path in self.values:
                p = self.values[path]
                break
            if not path:
                p = (1, 1)
                break
            path = path[:-1]
            key = False
        return (p[2] if len(p) > 2 else self.file, p[0], p[1])

    def pos(self, path: Iterable = (), key: bool = False) -> tuple[int, int]:
        """Line and column of ``path`` (its key if ``key``); the nearest known ancestor otherwise."""
        _, line, col = self.where(path, key)
        return (line, col)

    def ref(self, path: Iterable = (), key: bool = False) -> SourceRef:
        file, line, col = self.where(path, key)
        return SourceRef(file, line, col)

    def label(self, path: Iterable) -> str:
        """The context label of the part ``path`` lies in (``""`` when none)."""
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self.context:
                return self.context[path[:n]]
        return ""

    def error(self, message: str, path: Iterable = (), key: bool = False) -> UserError:
        file, line, col = self.where(path, key)
        label = self.label(path)
        if label and not message.startswith(label):
            message = f"{label}: {message}"
        return UserError(one_line(message), file, line, col)

    def line_of(self, other: Iterable, here: Iterable = (), key: bool = False) -> str:
        """``line N`` when ``other`` is in the same file as ``here``, else ``FILE:N``; led by
        ``other``'s context label when that differs from ``here``'s (two block instances)."""
        file, line, _ = self.where(other, key)
        at = f"line {line}" if file == self.where(here)[0] else f"{file}:{line}"
        label = self.label(other)
        if label and label != self.label(here):
            at = f"{label}, {at}"
        return at

    def get(self, path: Iterable, default=None):
        cur = self.data
        for p in path:
            try:
                cur = cur[p]
            except (KeyError, IndexError, TypeError):
                return default
        return cur


def did_you_mean(word, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _mark(m) -> tuple[int, int]:
    return (m.line + 1, m.column + 1)


# -- limits: what any input may cost -----------------------------------------------------------

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one input file may cost before it is refused (with its position). The sizes are
    far above the largest legitimate input of each kind (a generated 10,000-node topology is
    0.85 MB) and far below what would hurt: every bad file fails in well under a second."""
    kind: str                      # shown in messages: "topology", "playbook", ...
    max_bytes: int                 # the file (the text)
    max_values: int                # scalars, lists and mappings, aliases expanded
    max_depth: int = 64            # nested lists and mappings (real files use fewer than 12)
    max_aliases: int = 10_000      # alias references (*name, <<: *name)
    max_alias_values: int = 100_000  # values reached through aliases, counted expanded
    max_alias_chars: int = MiB     # scalar characters reached through aliases, expanded

    @property
    def a_kind(self) -> str:
        """``"a topology"``, ``"an Elasticsearch config"``."""
        return f"{'an' if self.kind[0] in 'aeiouAEIOU' else 'a'} {self.kind}"

    @property
    def size_text(self) -> str:
        n = self.max_bytes
        return f"{n / MiB:g} MiB" if n >= MiB else f"{n / 1024:g} KiB"


# A generated 10,000-node topology (the most a topology may have) is 0.85 MB and 123,000
# values and loads in 0.6 s; 300,000 values of anything cost about 1.3 s and 100 MB to load or
# refuse (the worst a file within the limits can do), on the 2-core machine the tests run on.
LIMITS = {
    "topology": Limits("topology", 4 * MiB, 300_000, max_aliases=50_000,
                       max_alias_values=100_000, max_alias_chars=4 * MiB),
    "playbook": Limits("playbook", 1 * MiB, 100_000),
    "detectors": Limits("detector file", 1 * MiB, 100_000),
    "es-config": Limits("Elasticsearch config", 64 * 1024, 1_000, max_aliases=100,
                        max_alias_values=1_000, max_alias_chars=64 * 1024),
    "containerlab": Limits("containerlab file", 2 * MiB, 200_000, max_aliases=20_000,
                           max_alias_values=100_000, max_alias_chars=2 * MiB),
    "yaml": Limits("YAML file", 4 * MiB, 300_000),
}

# YAML's printable set (YAML 1.1, 5.1): anything else in the text is refused with its position
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FALLBACK_MAX = 256 * 1024   # pure-Python PyYAML re-parses for its message only below this size


def _limits(kind) -> Limits:
    return kind if isinstance(kind, Limits) else LIMITS[kind]


def read_text(path, kind="yaml") -> str:
    """The UTF-8 text of ``path``, refused with a one-line :class:`UserError` when it is not a
    regular file, larger than the kind's limit, or not UTF-8 (with the byte offset and line)."""
    limits = _limits(kind)
    file = str(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UserError("not a regular file", file)
        if st.st_size > limits.max_bytes:
            raise UserError(_too_large(st.st_size, limits), file)
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise UserError("no such file", file) from None
    except IsADirectoryError:
        raise UserError("not a regular file", file) from None
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror or type(e).__name__}", file) from None
    if len(data) > limits.max_bytes:
        raise UserError(_too_large(len(data), limits), file)
    return decode(data, file)


def _too_large(size: int, limits: Limits) -> str:
    return (f"file too large: {size:,} bytes, {limits.a_kind} may have at most "
            f"{limits.max_bytes:,} bytes ({limits.size_text})")


def decode(data: bytes, file: str) -> str:
    """UTF-8 (a leading byte-order mark is dropped); else a :class:`UserError` that names the
    first bad byte, its offset, line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = e.start
        line = data.count(b"\n", 0, at) + 1
        start = data.rfind(b"\n", 0, at) + 1
        col = len(data[start:at].decode("utf-8", errors="replace")) + 1
        raise UserError(f"not UTF-8 text: byte 0x{data[at]:02x} at byte offset {at} "
                        f"(save the file as UTF-8)", file, line, col) from None
    return text[1:] if text.startswith("\ufeff") else text


def load_yaml(path, kind="yaml") -> Doc:
    """Read one YAML document from ``path`` within the limits of ``kind`` (a key of
    :data:`LIMITS`); raise :class:`UserError` with a position on any problem."""
    return parse_yaml(read_text(path, kind), str(path), kind)


def parse_yaml(text: str, file: str = "<string>", kind="yaml") -> Doc:
    """Parse ``text`` safely: refuse non-printable characters, nesting deeper than the limit,
    alias bombs (by counting what aliases would expand to, before expanding anything),
    duplicate keys, NaN and infinity, and control characters in strings; every refusal is one
    line with a position.

    libyaml does the scanning when available (a 5,000-node file in 0.1 s); on a syntax error in
    a file under 256 KiB the pure-Python parser runs again for its exact message.
    """
    limits = _limits(kind)
    if len(text) > limits.max_bytes:
        raise UserError(_too_large(len(text), limits), file)
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line, col = _line_col(text, bad.start())
        raise UserError(f"character U+{ord(bad.group()):04X} is not allowed in a YAML file "
                        f"(a control character or a NUL byte)", file, line, col)
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _parse(fast, text, file, limits)
        except UserError as e:
            # libyaml >= 0.2.5 (PyYAML 6.0.3+) stops at its own depth limit while it scans
            # ahead; the pure-Python parser stops at ours, at the level too many, quickly
            deep = "maximum nesting depth" in e.message
            if not e.message.startswith("invalid YAML") or (len(text) > _FALLBACK_MAX
                                                             and not deep):
                raise
    return _parse(yaml.SafeLoader, text, file, limits)


def _line_col(text: str, at: int) -> tuple[int, int]:
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def _parse(loader_class, text: str, file: str, limits: Limits) -> Doc:
    loader = loader_class(text)
    try:
        return EventBuilder(loader, Doc(file, None), limits).run()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            problem = f"{e.problem} ({e.context}"
            if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
                problem += f" started at line {e.context_mark.line + 1}"
            problem += ")"
        line, col = _mark(mark) if mark else (None, None)
        raise UserError(f"invalid YAML: {one_line(problem)}", file, line, col) from None
    except yaml.YAMLError as e:      # never str(e): PyYAML quotes the source around the error
        raise UserError(f"invalid YAML: {type(e).__name__}", file) from None
    except RecursionError:           # not expected (nothing recurses): one line all the same
        raise UserError(f"nesting too deep (at most {limits.max_depth} levels)", file) from None
    finally:
        loader.dispose()


# -- JSON Schema validation with positions ---------------------------------------------------

_JSON_TYPES = {dict: "mapping", list: "list", str: "string", bool: "boolean",
               int: "integer", float: "number", type(None): "nothing (null)"}
_SCHEMA_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
                 "integer": "an integer", "number": "a number", "boolean": "true or false",
                 "null": "nothing"}


def _kind(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def describe(doc: Doc, path: Iterable) -> str:
    """A readable name for a place in the document: ``node ops-files: services[0].port``.

    List items that have a ``name`` (or ``id``) are shown by that name, so the user sees
    what they wrote rather than an index.
    """
    path = tuple(path)
    head, parts = "", []
    cur = doc.data
    for i, p in enumerate(path):
        try:
            child = cur[p]
        except (KeyError, IndexError, TypeError):
            child = None
        if isinstance(p, int):
            label = child.get("name", child.get("id")) if isinstance(child, dict) else None
            if i == 1 and isinstance(label, str):       # top-level list item: "node ops-files"
                head = f"{parts[0][:-1] if parts[0].endswith('s') else parts[0]} {label}"
                parts = []
            elif parts:
                parts[-1] += f"[{p}]"
            else:
                parts.append(f"[{p}]")
        else:
            parts.append(str(p))
        cur = child
    tail = ".".join(parts)
    if head and tail:
        return f"{head}: {tail}"
    return head or tail or "the document"


def schema_error(doc: Doc, schema: dict, base: PathT = ()) -> UserError | None:
    """Validate ``doc.data`` (or the part of it at ``base``) against a JSON Schema (Draft
    2020-12); return the error that comes first in the file, as a one-line :class:`UserError`
    (with the file the offending part came from), or None if the document is valid."""
    validator = _validator(id(schema), schema)
    errors = list(validator.iter_errors(doc.get(base)))
    if not errors:
        return None
    for e in errors:
        _rebase(e, base)
    # an unknown key next to a missing required one is usually its misspelling: report the typo
    typo_at = {tuple(e.absolute_path) for e in errors if e.validator == "additionalProperties"}
    errors = [e for e in errors
              if not (e.validator == "required" and tuple(e.absolute_path) in typo_at)]
    found = []
    for err in errors:
        path, key, message = _explain(doc, err)
        file, line, col = doc.where(path, key)
        found.append(((file != doc.file, line, col), file, message, path))
    (_, line, col), file, message, path = min(found, key=lambda f: f[0])
    label = doc.label(path)
    if label:
        message = f"{label}: {message}"
    return UserError(one_line(message), file, line, col)


_VALIDATORS: dict[int, tuple] = {}


def _validator(key: int, schema: dict):
    """One validator per schema object, over the schema with its ``$ref``s inlined: resolving
    references is most of jsonschema's time on a 5,000-node file."""
    import jsonschema

    entry = _VALIDATORS.get(key)
    if entry is None or entry[0] is not schema:
        entry = _VALIDATORS[key] = (schema, jsonschema.Draft202012Validator(_inline(schema)))
    return entry[1]


def _inline(schema: dict) -> dict:
    """``schema`` with every local ``#/$defs/X`` reference replaced by X itself (siblings of
    the ``$ref`` win). A recursive schema is returned unchanged."""
    defs = schema.get("$defs", {})
    done: dict[str, Any] = {}

    def walk(x, depth: int):
        if depth > 40:
            raise RecursionError
        if isinstance(x, dict):
            ref = x.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
                name = ref[8:]
                if name not in done:
                    done[name] = walk(defs[name], depth + 1)
                rest = {k: walk(v, depth + 1) for k, v in x.items() if k != "$ref"}
                return {**done[name], **rest} if rest else done[name]
            return {k: walk(v, depth + 1) for k, v in x.items() if k != "$defs"}
        if isinstance(x, list):
            return [walk(v, depth + 1) for v in x]
        return x

    try:
        return walk(schema, 0)
    except RecursionError:
        return schema


def _rebase(err, base: PathT) -> None:
    """Make an error's paths absolute in the whole document, not in the validated part."""
    if base:                 # context errors hang off this one and see it via their parent
        err.path.extendleft(reversed(base))


def _explain(doc: Doc, err) -> tuple[tuple, bool, str]:
    """(path to point at, point at the key?, message) for one jsonschema error."""
    path = tuple(err.absolute_path)
    where = describe(doc, path)
    value = err.instance
    schema = err.schema if isinstance(err.schema, dict) else {}
    v = err.validator

    if "propertyNames" in err.schema_path and isinstance(value, str):
        # a mapping key (e.g. a zone name) is malformed: point at the key itself
        why = schema.get("description") or err.message
        return path + (value,), True, f"{where}: name {value!r} is not valid: {why}"

    if v in ("anyOf", "oneOf"):
        deeper = [e for e in err.context if len(e.absolute_path) > len(path)]
        if deeper:
            import jsonschema
            return _explain(doc, jsonschema.exceptions.best_match(deeper))
        if "description" in schema:
            return path, False, f"{where}: expected {schema['description']}, got {_kind(value)} {value!r}"
        return path, False, f"{where}: {err.message}"
    if v == "additionalProperties" and isinstance(value, dict):
        known = list(schema.get("properties", {}))
        extra = [k for k in value if k not in known]
        if extra:
            # the first unknown key in file order
            extra.sort(key=lambda k: doc.pos(path + (k,), key=True))
            k = extra[0]
            return (path + (k,), True,
                    f"unknown key '{k}' in {where}{did_you_mean(k, known)}")
    if v == "required" and isinstance(value, dict):
        missing = [k for k in err.validator_value if k not in value]
        return path, False, f"{where}: missing required key '{missing[0] if missing else '?'}'"
    if v == "type":
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        want = " or ".join(_SCHEMA_TYPES.get(t, t) for t in types)
        if value is None:
            return path, False, (f"{where}: expected {want}, got nothing (an empty value; "
                                 f"note that an unquoted '#' starts a YAML comment)")
        return path, False, f"{where}: expected {want}, got {_kind(value)} {value!r}"
    if v == "enum":
        choices = [str(c) for c in err.validator_value]
        hint = did_you_mean(value, choices) or f" (expected one of: {', '.join(choices)})"
        what = path[-1] if path and isinstance(path[-1], str) else "value"
        return path, False, f"{where}: unknown {what} {value!r}{hint}"
    if v == "const":
        return path, False, f"{where}: must be {err.validator_value!r}, got {value!r}"
    if v == "pattern":
        why = schema.get("description") or f"must match {err.validator_value}"
        return path, False, f"{where}: {value!r} is not valid: {why}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">",
              "exclusiveMaximum": "<"}[v]
        return path, False, f"{where}: {value!r} is out of range (must be {op} {err.validator_value})"
    if v in ("minItems", "maxItems"):
        word = "at least" if v == "minItems" else "at most"
        return path, False, f"{where}: needs {word} {err.validator_value} item(s), has {len(value)}"
    if v == "minLength":
        return path, False, f"{where}: must not be empty"
    return path, False, f"{where}: {err.message}"
