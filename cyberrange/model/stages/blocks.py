"""(v2) ``instances:``: expand every block instance into ordinary zones, nodes, links and
sensors, substituting ``{param}`` and ``{i+10}``-style templates; each element made keeps the
position of the block element it came from, labelled with the instance."""
from __future__ import annotations

import ast
import re

from cyberrange.model.stages.base import Context
from cyberrange.model.stages.document import MAX_ITEMS, part_schema
from cyberrange.model.yamlsrc import Doc, did_you_mean, schema_error

_TEMPLATE = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b,
        ast.Div: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


class _Expander:
    """Substitutes ``{param}`` and ``{i+10}``-style expressions in one block instance."""

    def __init__(self, doc: Doc, block: str, env: dict, params: list[str]):
        self.doc, self.block, self.env, self.params = doc, block, env, params
        self.path: tuple = ()          # the block path being expanded, for errors
        self.cache: dict[str, object] = {}

    def fail(self, message: str):
        raise self.doc.error(f"block {self.block}: {message}", self.path)

    def text(self, text: str):
        """A string with templates substituted; a string that is one whole ``{...}`` whose value
        is an integer gives that integer (so ``vlan: "{i+10}"`` is a number)."""
        if "{" not in text:
            return text
        if text in self.cache:
            return self.cache[text]
        whole = _TEMPLATE.fullmatch(text)
        if whole:
            out = self.eval(whole[1], text)
        else:
            out = _TEMPLATE.sub(lambda m: str(self.eval(m[1], text)), text)
        self.cache[text] = out
        return out

    def key(self, text: str) -> str:
        return str(self.text(text))

    def eval(self, expr: str, text: str):
        try:
            tree = ast.parse(expr.strip(), mode="eval").body
        except SyntaxError:
            tree = None
        if tree is None:
            self.fail(f"bad template '{{{expr}}}' in '{text}': use a param, integers "
                      f"and + - * // %")
        return self._value(tree, expr, text)

    def _value(self, node, expr, text):
        if isinstance(node, ast.Name):
            if node.id not in self.env:
                self.fail(f"unknown param '{node.id}' in '{text}' (params: "
                          f"{', '.join(self.params) or 'none'})")
            return self.env[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self._num(node.operand, expr, text)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = self._num(node.left, expr, text), self._num(node.right, expr, text)
            if isinstance(node.op, (ast.FloorDiv, ast.Div, ast.Mod)) and b == 0:
                self.fail(f"division by zero in '{text}'")
            return _OPS[type(node.op)](a, b)
        self.fail(f"bad template '{{{expr}}}' in '{text}': use a param, integers and + - * // %")

    def _num(self, node, expr, text) -> int:
        v = self._value(node, expr, text)
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(f"'{{{expr}}}' in '{text}': arithmetic needs an integer, not {v!r}")
        return v

    def value(self, v, path: tuple):
        """Deep copy of ``v`` with every string (and mapping key) substituted."""
        self.path = path
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                self.path = path + (k,)
                out[self.key(k)] = self.value(x, path + (k,))
            return out
        if isinstance(v, list):
            return [self.value(x, path + (i,)) for i, x in enumerate(v)]
        return v


def _block_positions(doc: Doc, name: str) -> dict[tuple, list]:
    """Positions under ``blocks.<name>`` grouped by element: (section, key or index) ->
    [(values or keys, rest of path, position)]."""
    base = ("blocks", name)
    out: dict[tuple, list] = {}
    for which, table in (("v", doc.values), ("k", doc.keys)):
        for path, pos in table.items():
            if len(path) >= 4 and path[:2] == base:
                if len(pos) == 2:
                    pos = (pos[0], pos[1], doc.file)
                out.setdefault(path[2:4], []).append((which, path[4:], pos))
    return out


def instances(ctx: Context) -> None:
    """Expand every ``instances:`` entry into ordinary zones, nodes, links and sensors."""
    if not ctx.v2:
        return
    doc = ctx.doc
    d = doc.data
    blocks = d.get("blocks", {})
    positions: dict[str, dict] = {}
    for k, inst in enumerate(d.get("instances", [])):
        ipath = ("instances", k)
        name = inst["block"]
        if name not in blocks:
            hint = did_you_mean(name, blocks) or (
                f" (blocks: {', '.join(blocks)})" if blocks else " (no blocks are defined)")
            raise doc.error(f"unknown block '{name}'{hint}", ipath + ("block",))
        block = blocks[name]
        params = block.get("params", [])
        given = inst.get("with", {})
        for p in given:
            if p not in params:
                raise doc.error(f"block {name} has no param '{p}' (params: "
                                f"{', '.join(params) or 'none'})", ipath + ("with", p), key=True)
        free = [p for p in params if p not in given]
        if "count" in inst:
            if not free:
                raise doc.error(f"block {name}: 'count' numbers the first param not given in "
                                f"'with', but every param is given", ipath + ("count",), key=True)
            counter, free = free[0], free[1:]
            start = inst.get("start", ctx.defaults["instance"]["start"])
            numbers = list(range(start, start + inst["count"]))
        else:
            counter, numbers = None, [None]
        if free:
            raise doc.error(f"block {name} needs a value for param '{free[0]}' (give it in "
                            f"'with:'{' or use count:' if counter is None else ''})", ipath)
        for section in ("nodes", "zones", "links", "sensors"):   # before expanding anything
            made = len(numbers) * len(block.get(section, []))
            if len(d[section]) + made > MAX_ITEMS[section]:
                raise doc.error(f"block {name}: {len(numbers):,} instances would make "
                                f"{len(d[section]) + made:,} {section} (at most "
                                f"{MAX_ITEMS[section]:,})", ipath)
        if name not in positions:
            positions[name] = _block_positions(doc, name)
        for n in numbers:
            env = dict(given)
            if counter is not None:
                env[counter] = n
            number = n if counter is not None else (env[params[0]] if params else k + 1)
            _instantiate(doc, name, block, _Expander(doc, name, env, params),
                         f"block {name} instance {number}", positions[name])


def _instantiate(doc: Doc, name: str, block: dict, ex: _Expander, label: str,
                 positions: dict) -> None:
    d = doc.data
    bpath = ("blocks", name)

    def graft(src: tuple, dst: tuple):
        for which, rest, pos in positions.get(src, ()):
            table = doc.values if which == "v" else doc.keys
            table[dst + tuple(ex.key(p) if isinstance(p, str) else p for p in rest)] = pos

    for zname, z in block.get("zones", {}).items():
        src = bpath + ("zones", zname)
        ex.path = src
        new = ex.key(zname)
        dst = ("zones", new)
        if not _NAME.match(new):
            raise doc.error(f"{label}: zone name '{new}' is not valid: a lowercase letter, then "
                            f"up to 30 of a-z, 0-9 and '-'", src, key=True)
        if new in d["zones"]:
            file, line, _ = doc.where(dst, key=True)
            raise doc.error(f"{label}: duplicate zone name '{new}' (first at {file}:{line})",
                            src, key=True)
        d["zones"][new] = ex.value(z, src)
        doc.keys[dst] = doc.keys[src]
        doc.values[dst] = doc.values[src]
        graft(("zones", zname), dst)
        doc.context[dst] = label
        err = schema_error(doc, part_schema("zone"), dst)
        if err:
            raise err
    for section, part in (("links", "link"), ("nodes", "node"), ("sensors", "sensor")):
        for j, item in enumerate(block.get(section, [])):
            src = bpath + (section, j)
            dst = (section, len(d[section]))
            d[section].append(ex.value(item, src))
            doc.values[dst] = doc.values[src]
            graft((section, j), dst)
            doc.context[dst] = label
            err = schema_error(doc, part_schema(part), dst)
            if err:
                raise err
