"""Build plain Python values, with positions, straight from PyYAML's parser events.

``yaml.compose`` would first make a node object (and two position marks) for every value,
recursing in C for nesting (libyaml's composer crashes at ~100,000 levels) and sharing nodes for
aliases (so a naive walk expands a "billion laughs"). Here one loop over the events builds the
values and their positions, with an explicit stack, and refuses at the event where it happens:

- nesting deeper than the limit (the parser is never asked for the next level);
- more values than the limit (aliases counted expanded);
- an alias that would expand past the limits, or that refers to the collection it is in: sizes
  are known from the anchor, so a bomb is refused at its first big alias with nothing expanded;
- duplicate keys (at the second one);
- NaN and infinity, integers too long to read, values that are not strings, numbers,
  booleans or null (``!!binary``, ``!!set``...), control characters written as escapes.

Merge keys (``<<: *base``) follow PyYAML: merged entries first, the explicit ones override them,
of several merged mappings the later one wins (of a list ``[*a, *b]``, the first).
An aliased or merged value is a copy, and its positions are those of its anchor.
"""
from __future__ import annotations

import math
import re

import yaml

from cyberrange.errors import UserError

STR = "tag:yaml.org,2002:str"
TIMESTAMP = "tag:yaml.org,2002:timestamp"
PLAIN_TYPES = (str, int, float, bool, type(None))
# control characters a string may not hold even when written as an escape ("\x1b", "\0")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {9: "\\t", 10: "\\n", 13: "\\r", 127: "\\x7f"}
MESSAGE_MAX = 600


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """``text`` fit for a one-line error: control characters escaped, the middle of a very long
    text left out."""
    text = str(text).translate(_ESCAPES)
    if len(text) > limit:
        keep = limit // 2
        text = f"{text[:keep]} ... {text[-keep // 2:]}"
    return text


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


class _Frame:
    """An open list or mapping."""
    __slots__ = ("path", "out", "is_map", "anchor", "values", "chars", "start", "key", "key_mark",
                 "key_lines", "merges", "pos", "capture")

    def __init__(self, path, is_map, anchor, values, chars, start, pos, capture):
        self.path = path
        self.is_map = is_map
        self.out = {} if is_map else []
        self.anchor = anchor
        self.values = values          # counters when it opened, to size an anchor
        self.chars = chars
        self.start = start            # index into the recorded positions, when capturing
        self.key = None               # a mapping: the key whose value comes next
        self.key_mark = None
        self.key_lines: dict[str, int] = {}
        self.merges: list = []        # (position, value, entries) of "<<" values, in order
        self.pos = pos
        self.capture = capture        # positions inside are recorded for an anchor or a merge


class _Anchor:
    __slots__ = ("value", "entries", "values", "chars", "is_map")

    def __init__(self, value, entries, values, chars, is_map):
        self.value = value            # the built value (copied for every alias)
        self.entries = entries        # [(which, path relative to the anchor, position)]
        self.values = values          # what it expands to
        self.chars = chars
        self.is_map = is_map


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


class EventBuilder:
    """One document from ``loader``'s events into ``doc`` (``doc.data``, ``doc.values``,
    ``doc.keys``) within ``limits`` (``yamlsrc.Limits``)."""

    def __init__(self, loader, doc, limits):
        self.loader = loader
        self.doc = doc
        self.file = doc.file
        self.limits = limits
        self.values = 0               # scalars, lists and mappings so far, aliases expanded
        self.chars = 0                # scalar characters so far, aliases expanded
        self.aliases = 0
        self.alias_values = 0
        self.alias_chars = 0
        self.anchors: dict[str, _Anchor] = {}
        self.stack: list[_Frame] = []
        self.order: list[tuple] = []  # positions recorded while some open frame captures
        self.capturing = 0

    # -- errors and positions --------------------------------------------------------------
    def fail(self, message: str, mark) -> UserError:
        line, col = _pos(mark)
        return UserError(one_line(message), self.file, line, col)

    def record(self, which: str, path: tuple, pos: tuple) -> None:
        (self.doc.values if which == "v" else self.doc.keys)[path] = pos
        if self.capturing:
            self.order.append((which, path, pos))

    # -- the loop -----------------------------------------------------------------------------
    def run(self):
        get = self.loader.get_event
        documents = 0
        root = None
        while True:
            ev = get()
            kind = type(ev)
            if kind is yaml.ScalarEvent:
                self.scalar(ev)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self.open(ev, kind is yaml.MappingStartEvent)
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                self.close(ev)
            elif kind is yaml.AliasEvent:
                self.alias(ev)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise self.fail("expected a single document in the file, but found another "
                                    "document", ev.start_mark)
            elif kind is yaml.DocumentEndEvent:
                root = self.root
            elif kind is yaml.StreamEndEvent or ev is None:
                break
        self.doc.data = root
        return self.doc

    root = None

    def child_path(self, mark) -> tuple | None:
        """The path of the value that starts now; None when it is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if not top.is_map:
            return top.path + (len(top.out),)
        if top.key is None:
            return None
        if top.key is _MERGE:
            return top.path + (_MERGE, len(top.merges))
        return top.path + (top.key,)

    def count(self, n: int, chars: int, ev) -> None:
        self.values += n
        self.chars += chars
        if self.values > self.limits.max_values:
            raise self.fail(f"too many values: {self.limits.a_kind} may hold at most "
                            f"{self.limits.max_values:,} (scalars, lists and mappings, aliases "
                            f"expanded)", ev.start_mark)

    # -- scalars ------------------------------------------------------------------------------
    def scalar(self, ev) -> None:
        self.count(1, len(ev.value), ev)
        path = self.child_path(ev.start_mark)
        if path is None:                               # a mapping key: kept as written
            self.key(ev, ev.value, ev.style, plain=not ev.style)
            return
        value = self.construct(ev)
        pos = _pos(ev.start_mark)
        self.record("v", path, pos)
        entries = [("v", (), pos)]
        if ev.anchor:
            self.anchors[ev.anchor] = _Anchor(value, entries, 1, len(ev.value), False)
        self.put(value, ev, path, entries)

    def construct(self, ev):
        tag = ev.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        if tag == STR or tag == TIMESTAMP:           # a date stays the text it was written as
            value = ev.value
        else:
            make = self.loader.yaml_constructors.get(tag)
            if make is None:
                raise self.fail(f"unsupported tag {tag}: use a string, a number, true/false or "
                                f"null", ev.start_mark)
            node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
            try:
                value = make(self.loader, node)
            except yaml.MarkedYAMLError:
                raise
            except (ValueError, TypeError, OverflowError, yaml.YAMLError) as e:
                reason = ("an integer with too many digits" if "digits" in str(e)
                          else f"{type(e).__name__}: {e}")
                raise self.fail(f"cannot read the value: {reason}", ev.start_mark) from None
        kind = type(value)
        if kind is str:
            if ev.style == '"':
                self.no_control(value, ev)
            return value
        if kind is float and not math.isfinite(value):
            raise self.fail(f"{one_line(ev.value, 40)!r} is not a finite number (NaN and "
                            f"infinity are not accepted anywhere)", ev.start_mark)
        if kind in PLAIN_TYPES:
            return value
        raise self.fail(f"unsupported value of type {kind.__name__} (tag {tag}): use a string, a "
                        f"number, true/false or null", ev.start_mark)

    def no_control(self, text: str, ev) -> None:
        bad = CONTROL.search(text)
        if bad:
            raise self.fail(f"control character U+{ord(bad.group()):04X} in a string (only tab "
                            f"and newline are allowed)", ev.start_mark)

    # -- keys ---------------------------------------------------------------------------------
    def key(self, ev, text, style, plain: bool) -> None:
        top = self.stack[-1]
        if plain and text == "<<":
            top.key, top.key_mark = _MERGE, ev.start_mark
            return
        if style == '"':
            self.no_control(text, ev)
        if text in top.key_lines:
            raise self.fail(f"duplicate key '{one_line(text, 200)}' (first given at line "
                            f"{top.key_lines[text]})", ev.start_mark)
        top.key_lines[text] = ev.start_mark.line + 1
        top.key, top.key_mark = text, ev.start_mark
        self.record("k", top.path + (text,), _pos(ev.start_mark))

    # -- lists and mappings ---------------------------------------------------------------------
    def open(self, ev, is_map: bool) -> None:
        self.count(1, 0, ev)
        path = self.child_path(ev.start_mark)
        if path is None:
            raise self.fail("a mapping key must be a plain word, not a list or mapping",
                            ev.start_mark)
        if len(self.stack) >= self.limits.max_depth:
            raise self.fail(f"nesting too deep: more than {self.limits.max_depth} levels of "
                            f"lists and mappings", ev.start_mark)
        merge_value = bool(self.stack) and self.stack[-1].key is _MERGE
        capture = bool(ev.anchor) or merge_value
        if capture:
            self.capturing += 1
        pos = _pos(ev.start_mark)
        frame = _Frame(path, is_map, ev.anchor, self.values, self.chars, len(self.order), pos,
                       capture)
        if ev.anchor:
            self.anchors.pop(ev.anchor, None)          # open: an alias to it now is a cycle
        self.record("v", path, pos)
        self.stack.append(frame)

    def close(self, ev) -> None:
        frame = self.stack.pop()
        if frame.is_map and frame.merges:
            self.apply_merges(frame)
        value = frame.out
        entries = None
        if frame.capture:
            n = len(frame.path)
            entries = [(w, p[n:], pos) for w, p, pos in self.order[frame.start:]
                       if _MERGE not in p[n:]]
            self.capturing -= 1
            if not self.capturing:
                del self.order[:]
            if frame.anchor:
                self.anchors[frame.anchor] = _Anchor(value, entries, self.values - frame.values + 1,
                                                     self.chars - frame.chars, frame.is_map)
        self.put(value, ev, frame.path, entries)

    def put(self, value, ev, path, entries: list | None) -> None:
        """A finished value into its list or mapping (or as the document)."""
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if not top.is_map:
            top.out.append(value)
            return
        if top.key is _MERGE:
            for which, rel, _pos_ in entries or ():   # it was built at a temporary path
                (self.doc.values if which == "v" else self.doc.keys).pop(path + rel, None)
            top.merges.append((ev.start_mark, value, entries or []))
        else:
            top.out[top.key] = value
        top.key = None

    # -- aliases ------------------------------------------------------------------------------
    def alias(self, ev) -> None:
        anchor = self.anchors.get(ev.anchor)
        if anchor is None:
            if any(f.anchor == ev.anchor for f in self.stack):
                raise self.fail(f"alias *{ev.anchor} refers to the list or mapping it is in (a "
                                f"recursive alias)", ev.start_mark)
            raise self.fail(f"unknown alias *{ev.anchor} (no '&{ev.anchor}' before it)",
                            ev.start_mark)
        self.aliases += 1
        self.alias_values += anchor.values
        self.alias_chars += anchor.chars
        limits = self.limits
        if self.aliases > limits.max_aliases:
            raise self.fail(f"too many aliases: more than {limits.max_aliases:,} in "
                            f"{limits.a_kind}", ev.start_mark)
        if self.alias_values > limits.max_alias_values or self.alias_chars > limits.max_alias_chars:
            raise self.fail(f"alias *{ev.anchor} expands the document past the limit "
                            f"({limits.max_alias_values:,} values or {limits.max_alias_chars:,} "
                            f"characters reached through aliases): an alias bomb?", ev.start_mark)
        self.count(anchor.values, anchor.chars, ev)
        path = self.child_path(ev.start_mark)
        if path is None:                               # an alias as a mapping key
            if not isinstance(anchor.value, str):
                raise self.fail("a mapping key must be a plain word, not a list or mapping",
                                ev.start_mark)
            self.key(ev, anchor.value, None, plain=False)
            return
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map and top.key is _MERGE:
            top.merges.append((ev.start_mark, anchor.value, anchor.entries))
            top.key = None
            return
        for which, rel, pos in anchor.entries:
            self.record(which, path + rel, pos)
        self.put(_copy(anchor.value), ev, path, None)

    def apply_merges(self, frame: _Frame) -> None:
        """``<<`` entries: merged keys first (of several, the later wins; a list of mappings
        counts from its end, as in PyYAML), then the explicit keys, which override them."""
        merged: dict = {}
        where: dict = {}
        for mark, value, entries in frame.merges:
            sources = [(value, entries)]
            if isinstance(value, list):               # <<: [*a, *b]: *a wins over *b
                sources = []
                for k, item in enumerate(value):
                    sub = [(w, p[1:], pos) for w, p, pos in entries if p[:1] == (k,)]
                    sources.append((item, sub))
                sources.reverse()
            for item, sub in sources:
                if not isinstance(item, dict):
                    raise self.fail("expected a mapping or a list of mappings for merging "
                                    "('<<')", mark)
                for k, v in item.items():
                    merged.pop(k, None)
                    merged[k] = v
                    where[k] = [(w, p, pos) for w, p, pos in sub if p[:1] == (k,)]
        explicit = frame.out
        out = {k: _copy(v) for k, v in merged.items() if k not in explicit}
        for k in out:
            for which, rel, pos in where[k]:
                self.record(which, frame.path + rel, pos)
        out.update(explicit)
        frame.out = out


_MERGE = object()
