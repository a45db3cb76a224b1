"""Evaluate an Elasticsearch Lucene query string (``query_string`` syntax) against documents,
without a cluster: the query is parsed by the ``luqum`` library (a real Lucene query parser)
and its tree is evaluated here with Elasticsearch's semantics for the field types of our
mappings (``cyberrange.store.es_mappings``):

| field type | a term ``field:value`` matches when |
|---|---|
| `ip` | a value of the field equals the address, or lies in the CIDR ``a.b.c.d/n`` |
| `keyword` | a value equals it exactly (``*`` and ``?`` wildcards when unescaped) |
| `long`, `double` | a value equals the number |
| any | ``_exists_:field`` when the field has a non-null value; arrays match when any element does |

Handled: AND, OR, NOT, implicit AND between terms, groups, field groups
``f:(a OR b)``, phrases, ``_exists_``, ranges ``[a TO b]`` / ``{a TO b}`` and ``>=``-style
comparisons on numbers. Anything else (fuzzy, proximity, regex, boosts, unbound terms) raises
``NotImplementedError``: the evaluator is honest about the subset it knows, so a query that
uses more fails the test instead of being half-evaluated.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re

from luqum import tree
from luqum.parser import parser

_ESCAPE = re.compile(r"\\(.)")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


def _has_wildcard(raw: str) -> bool:
    return bool(re.search(r"(?<!\\)[*?]", raw))


def _values(doc: dict, field: str) -> list:
    """The values of a dotted field in an ``_source`` document (nested or flat keys)."""
    if field in doc:
        v = doc[field]
    else:
        v = doc
        for part in field.split("."):
            if not isinstance(v, dict) or part not in v:
                return []
            v = v[part]
    if v is None:
        return []
    return [x for x in (v if isinstance(v, list) else [v]) if x is not None]


class Evaluator:
    """``Evaluator(types).matches(query, doc)``; ``types``: dotted field -> ES type."""

    def __init__(self, types: dict[str, str]):
        self.types = types
        self._cache: dict[str, object] = {}

    def parse(self, query: str):
        if query not in self._cache:
            self._cache[query] = parser.parse(query)
        return self._cache[query]

    def matches(self, query: str, doc: dict) -> bool:
        return self._eval(self.parse(query), doc, None)

    # ------------------------------------------------------------------ the tree
    def _eval(self, node, doc, field) -> bool:
        if isinstance(node, (tree.AndOperation, tree.UnknownOperation)):
            return all(self._eval(c, doc, field) for c in node.children)
        if isinstance(node, tree.OrOperation):
            return any(self._eval(c, doc, field) for c in node.children)
        if isinstance(node, (tree.Not, tree.Prohibit)):
            return not self._eval(node.a, doc, field)
        if isinstance(node, (tree.Group, tree.FieldGroup)):
            return self._eval(node.expr, doc, field)
        if isinstance(node, tree.SearchField):
            if field is not None:
                raise NotImplementedError("a field inside a field group")
            if node.name == "_exists_":
                return bool(_values(doc, _unescape(str(node.expr))))
            return self._eval(node.expr, doc, _unescape(node.name))
        if field is None:
            raise NotImplementedError(f"a term without a field: {node}")
        if isinstance(node, tree.Word):
            return self._term(doc, field, node.value, phrase=False)
        if isinstance(node, tree.Phrase):
            return self._term(doc, field, node.value[1:-1], phrase=True)
        if isinstance(node, tree.Range):
            return self._range(doc, field, node.low.value, node.high.value,
                               node.include_low, node.include_high)
        if isinstance(node, (tree.From, tree.To)):
            return self._compare(doc, field, node)
        raise NotImplementedError(f"{type(node).__name__} is outside the evaluated subset")

    def _type(self, field: str) -> str | None:
        return self.types.get(field)

    def _term(self, doc, field, raw: str, phrase: bool) -> bool:
        kind = self._type(field)
        if kind is None:                            # unmapped: Elasticsearch matches nothing
            return False
        values = _values(doc, field)
        text = _unescape(raw)
        if kind == "ip":
            net = ipaddress.ip_network(text, strict=False)
            return any(ipaddress.ip_address(v) in net for v in values)
        if kind in ("long", "integer", "short", "byte"):
            return any(int(v) == int(text) for v in values)
        if kind in ("double", "float"):
            return any(float(v) == float(text) for v in values)
        if kind == "boolean":
            return any(str(v).lower() == text.lower() for v in values)
        if kind in ("keyword", "wildcard"):
            if not phrase and _has_wildcard(raw):
                pattern = re.sub(r"\\(.)", lambda m: "[" + m.group(1) + "]", raw)
                return any(fnmatch.fnmatchcase(str(v), pattern) for v in values)
            return any(str(v) == text for v in values)
        raise NotImplementedError(f"field {field} of type {kind}")

    def _number(self, field, text):
        kind = self._type(field)
        if kind in ("long", "integer", "short", "byte"):
            return int(text)
        if kind in ("double", "float"):
            return float(text)
        raise NotImplementedError(f"a range on {field} ({kind})")

    def _range(self, doc, field, low, high, inc_low, inc_high) -> bool:
        lo = None if low == "*" else self._number(field, low)
        hi = None if high == "*" else self._number(field, high)
        for v in _values(doc, field):
            if lo is not None and (v < lo or (v == lo and not inc_low)):
                continue
            if hi is not None and (v > hi or (v == hi and not inc_high)):
                continue
            return True
        return False

    def _compare(self, doc, field, node) -> bool:
        bound = self._number(field, node.a.value)
        if isinstance(node, tree.From):
            return self._range(doc, field, str(bound), "*", node.include, True)
        return self._range(doc, field, "*", str(bound), True, node.include)


def flatten_types(mappings: dict, prefix: str = "") -> dict[str, str]:
    """``mappings_for(...)["properties"]`` -> ``{dotted field: type}``."""
    out = {}
    for name, m in mappings.items():
        if "properties" in m:
            out.update(flatten_types(m["properties"], prefix + name + "."))
        else:
            out[prefix + name] = m.get("type")
    return out
