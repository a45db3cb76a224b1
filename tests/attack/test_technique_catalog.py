"""The technique catalogue (``cyberrange.attack.catalog``): every technique is declared once, next
to its function; a default is stated only there (technique bodies read the parameters the loader
or the agent filled); the docs' parameter tables are the catalogue's. No root needed."""
from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

from helpers import ROOT

import cyberrange.attack.techniques as techniques_pkg
from cyberrange.attack import catalog
from cyberrange.attack.catalog import TECHNIQUES

PKG = Path(techniques_pkg.__file__).parent


def test_every_technique_has_its_function_and_family():
    assert len(TECHNIQUES) >= 20
    for tid, t in TECHNIQUES.items():
        assert t.id == tid and callable(t.func), tid
        assert t.func.__module__ == f"cyberrange.attack.techniques.{t.family}", tid
        assert t.target_kind in ("host", "service"), tid


def test_one_function_two_techniques_two_defaults():
    """ics.modbus_write serves T0855 and T0831, whose ``repeat`` defaults differ."""
    a, b = TECHNIQUES["T0855"], TECHNIQUES["T0831"]
    assert a.func is b.func
    assert a.with_defaults({})["repeat"] == 1 and b.with_defaults({})["repeat"] == 5
    filled = a.with_defaults({"value": 7})
    assert filled["value"] == 7 and filled["values"] == []
    filled["values"].append(1)                      # a copy, not the catalogue's own list
    assert a.params["values"].default == []


def _param_reads(tree: ast.AST):
    """(function name, parameter name, has a default) for each ``params[...]`` and
    ``params.get(...)`` read in a module."""
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                    and node.value.id == "params" and isinstance(node.slice, ast.Constant):
                yield fn.name, node.slice.value, False
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "get" and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "params":
                yield fn.name, getattr(node.args[0], "value", "?"), len(node.args) > 1


def test_technique_bodies_restate_no_default():
    """A default lives in the catalogue only: no ``params.get(name, default)``, and every
    parameter a module reads is one its techniques declare."""
    for mod in pkgutil.iter_modules([str(PKG)]):
        path = PKG / f"{mod.name}.py"
        declared = {n for t in TECHNIQUES.values() if t.family == mod.name for n in t.params}
        for fn, name, has_default in _param_reads(ast.parse(path.read_text())):
            where = f"attack/techniques/{mod.name}.py {fn}(): params {name!r}"
            assert not has_default, f"{where} restates a default; read params[{name!r}]"
            assert name in declared, f"{where} is not a parameter of any technique there"


def test_docs_tables_are_the_catalogue():
    page = ROOT / "docs" / "techniques.md"
    text = page.read_text(encoding="utf-8")
    assert catalog.render_markdown(text) == text, (
        "docs/techniques.md: a parameter table differs from the catalogue; run "
        "python -m cyberrange.attack.catalog")
    assert catalog.main(["--markdown", str(page), "--check"]) == 0


def test_agent_fills_what_a_request_leaves_out(monkeypatch):
    """The agent runs a technique with every parameter set, as a playbook step would."""
    from cyberrange.attack import agent
    seen = {}

    class Done:
        def to_dict(self):
            return {"outcome": "succeeded"}

    def fake(targets, params):
        seen.update(params)
        return Done()
    spec = TECHNIQUES["T0831"]
    monkeypatch.setitem(TECHNIQUES, "T0831", type(spec)(**{**spec.__dict__, "func": fake}))
    out = agent.handle({"technique": "T0831", "targets": ["10.0.0.5"], "params": {"value": 3},
                        "allowed": ["10.0.0.0/24"]})
    assert out == {"outcome": "succeeded"}
    assert seen == {**spec.with_defaults({}), "value": 3}
