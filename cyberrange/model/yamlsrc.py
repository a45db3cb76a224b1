"""YAML with source positions, so that every later check can say ``FILE:LINE:COL``.

PyYAML's ``compose`` step gives a tree of nodes that carry start marks; we build plain Python
values from that tree ourselves and remember, for every path into the document (a tuple of
mapping keys and list indices), where its key and its value were written. Checks then ask
``doc.error("message", ("nodes", 3, "ip"))`` and get a :class:`UserError` pointing at that line.

Two things plain ``yaml.safe_load`` does not do and we need:
- a duplicate mapping key is an error (at the second key), not a silent overwrite;
- mapping keys are kept as the text the user wrote (``on:`` stays ``"on"``, not ``True``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from cyberrange.errors import UserError
from cyberrange.model.topology import SourceRef

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
        return UserError(message, file, line, col)

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


def load_yaml(path) -> Doc:
    """Read one YAML document from ``path``; raise :class:`UserError` with a position on any problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such file", file) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", file) from None
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str = "<string>") -> Doc:
    """Parse ``text``; libyaml does the scanning when available (a 5,000-node file in well under
    a second); on a syntax error the pure-Python parser runs again for its exact message."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _parse(fast, text, file)
        except UserError as e:
            if not e.message.startswith("invalid YAML"):
                raise
    return _parse(yaml.SafeLoader, text, file)


def _parse(loader_class, text: str, file: str) -> Doc:
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        doc = Doc(file, None)
        if root is not None:
            doc.data = _build(loader, root, (), doc)
        return doc
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            problem = f"{e.problem} ({e.context}"
            if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
                problem += f" started at line {e.context_mark.line + 1}"
            problem += ")"
        line, col = _mark(mark) if mark else (None, None)
        raise UserError(f"invalid YAML: {problem}", file, line, col) from None
    except yaml.YAMLError as e:
        raise UserError(f"invalid YAML: {e}", file) from None
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node, path: PathT, doc: Doc):
    doc.values.setdefault(path, _mark(node.start_mark))
    if isinstance(node, yaml.MappingNode):
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)          # resolves "<<: *anchor" merge keys (put first)
        merged = len(node.value) - explicit   # how many leading entries came from merges
        out: dict[str, Any] = {}
        merged_keys: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                line, col = _mark(key_node.start_mark)
                raise UserError("a mapping key must be a plain word, not a list or mapping",
                                doc.file, line, col)
            key = key_node.value
            if index < merged:
                merged_keys.add(key)
            elif key in merged_keys:          # an explicit key overrides a merged one
                merged_keys.discard(key)
                out.pop(key, None)
            if key in out:
                first = doc.keys[path + (key,)]
                line, col = _mark(key_node.start_mark)
                raise UserError(f"duplicate key '{key}' (first given at line {first[0]})",
                                doc.file, line, col)
            doc.keys[path + (key,)] = _mark(key_node.start_mark)
            out[key] = _build(loader, value_node, path + (key,), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, path + (i,), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


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
    return UserError(message, file, line, col)


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
