"""Node behaviour comes from the kind traits (``model/topology.py: NODE_KINDS``), never from
comparing a node's kind with a name; the kinds the schema allows are the kinds that have traits
and starting values. No root needed."""
from __future__ import annotations

import ast
import typing

from helpers import ROOT

from cyberrange.model.loader import STAGES, topology_schema
from cyberrange.model.stages.base import defaults
from cyberrange.model.topology import NODE_KINDS, Node, NodeKind


def _kind_names(node) -> set[str]:
    """The node kind names a constant (or a tuple/list/set of constants) holds."""
    if isinstance(node, ast.Constant) and node.value in NODE_KINDS:
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_kind_names(e) for e in node.elts)) if node.elts else set()
    return set()


def test_no_code_compares_a_kind_attribute_with_a_node_kind_name():
    found = []
    for path in sorted((ROOT / "cyberrange").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            kind_attr = any(isinstance(s, ast.Attribute) and s.attr == "kind" for s in sides)
            if kind_attr and any(_kind_names(s) for s in sides):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, ("ask the node (is_router, filters, is_host: docs/architecture.md, 'Where do "
                       "I add a node behaviour') instead of comparing its kind:\n" + "\n".join(found))


def test_every_kind_has_traits_and_starting_values():
    schema_kinds = topology_schema()["$defs"]["node"]["properties"]["kind"]["enum"]
    assert set(schema_kinds) == set(NODE_KINDS) == set(typing.get_args(NodeKind))
    assert set(defaults()["node"]["by_kind"]) == set(NODE_KINDS)


def test_flags_follow_the_traits():
    for kind, traits in NODE_KINDS.items():
        node = Node(name="n", kind=kind)
        assert (node.is_router, node.filters, node.is_host) == (
            traits.forwards, traits.filters, traits.end_system)
    assert NODE_KINDS["firewall"].forwards        # a filtering node forwards what it lets pass


def test_stages_are_named_functions_of_one_context():
    names = [s.__name__ for s in STAGES]
    assert len(names) == len(set(names))
    for stage in STAGES:
        assert stage.__module__.startswith("cyberrange.model.stages."), stage
