"""Apply a change set to a topology's parsed document, before the model is built.

``load_topology(path, change=cs)`` (``model/loader.py``) reads the topology, merges its includes
and block instances, then calls :func:`apply_change` on the document and runs every later stage
on the patched result, so the patched topology is checked exactly like a file written by hand.

Positions follow the edits. The document remembers where each value was written (path ->
line, column, file); inserting or removing a list item shifts the paths after it, and every
value an operation brings in gets the position it has *in the change set*. So an error about a
rule that a change added ("unknown zone 'ops-lam'") points at the change set's line, not at the
topology; and an operation that cannot be applied (no rule 9, no account 'adm') is refused at
the operation's own line.
"""
from __future__ import annotations

import copy
import re

from cyberrange.model.stages.document import check_counts, topology_schema, version_keys
from cyberrange.model.yamlsrc import Doc, describe, did_you_mean, schema_error

LOGIN_TYPES = ("login", "ssh")
_TOKENS = re.compile(r"[\s,>]+")


# -- positions --------------------------------------------------------------------------------
def _tables(doc: Doc):
    return (doc.values, doc.keys, doc.context)


def _drop(doc: Doc, prefix: tuple) -> None:
    """Forget the positions of ``prefix`` and everything under it."""
    n = len(prefix)
    for table in _tables(doc):
        for p in [p for p in table if p[:n] == prefix]:
            del table[p]


def _shift(doc: Doc, list_path: tuple, start: int, delta: int) -> None:
    """Renumber the positions of items ``start..`` of the list at ``list_path`` by ``delta``."""
    n = len(list_path)
    for table in _tables(doc):
        moved = {}
        for p in [p for p in table if len(p) > n and p[:n] == list_path
                  and isinstance(p[n], int) and p[n] >= start]:
            moved[p[:n] + (p[n] + delta,) + p[n + 1:]] = table.pop(p)
        table.update(moved)


def _graft(doc: Doc, cs, src: tuple, dst: tuple, key: bool = True) -> None:
    """Give ``dst`` (and everything under it) the positions of ``src`` in the change set."""
    n = len(src)
    for mine, theirs in ((doc.values, cs.doc.values), (doc.keys, cs.doc.keys)):
        for p, pos in theirs.items():
            if p[:n] == src and (key or len(p) > n or theirs is cs.doc.values):
                mine[dst + p[n:]] = (pos[0], pos[1], pos[2] if len(pos) > 2 else cs.file)
    if doc.label(dst):                        # inside a block instance: the change is not
        doc.context[dst] = ""                 # part of it (errors must not say it is)
    if dst not in doc.values:                 # a value made up by the operation (a new list)
        doc.values[dst] = _pos(cs, src)
    if dst not in doc.keys and isinstance(dst[-1], str):
        doc.keys[dst] = _pos(cs, src)


def _pos(cs, path: tuple) -> tuple:
    file, line, col = cs.doc.where(path)
    return (line, col, file)


def _insert(doc: Doc, cs, list_path: tuple, at: int, value, src: tuple) -> None:
    items = doc.get(list_path)
    _shift(doc, list_path, at, +1)
    items.insert(at, copy.deepcopy(value))
    _graft(doc, cs, src, list_path + (at,))


def _delete(doc: Doc, list_path: tuple, at: int) -> None:
    doc.get(list_path).pop(at)
    _drop(doc, list_path + (at,))
    _shift(doc, list_path, at + 1, -1)


def _set(doc: Doc, cs, path: tuple, value, src: tuple) -> None:
    """``path`` = a copy of ``value`` (a key of a mapping), positioned at ``src``."""
    parent = doc.get(path[:-1])
    parent[path[-1]] = copy.deepcopy(value)
    _drop(doc, path)
    _graft(doc, cs, src, path)


def _ensure_list(doc: Doc, cs, path: tuple, src: tuple) -> list:
    parent = doc.get(path[:-1])
    if path[-1] not in parent:
        parent[path[-1]] = []
        doc.values[path] = doc.keys[path] = _pos(cs, src)
    return parent[path[-1]]


# -- finding things ---------------------------------------------------------------------------
def _node(doc: Doc, cs, at: tuple, name: str, kind: str | None = None) -> int:
    nodes = doc.data.get("nodes") or []
    for i, n in enumerate(nodes):
        if isinstance(n, dict) and n.get("name") == name:
            if kind == "firewall" and n.get("kind") != "firewall":
                raise cs.error(f"{name} is a {n.get('kind')}, not a firewall "
                               f"({doc.line_of(('nodes', i))} of {doc.file})", at)
            if kind == "host" and n.get("kind") != "host":
                raise cs.error(f"{name} is a {n.get('kind')}; services and accounts are on "
                               f"hosts", at)
            return i
    names = [n.get("name") for n in nodes if isinstance(n, dict)]
    raise cs.error(f"unknown node '{name}' in topology {doc.data.get('name')}"
                   f"{did_you_mean(name, names)}", at)


def _rule_index(doc: Doc, cs, op: dict, at: tuple, ni: int) -> int:
    rules = doc.data["nodes"][ni].get("rules") or []
    n = op["rule"]
    if n > len(rules):
        raise cs.error(f"{op['firewall']} has {len(rules)} rule{'s' * (len(rules) != 1)}; "
                       f"there is no rule {n}", at + ("rule",))
    rule = rules[n - 1]
    for k, want in (op.get("expect") or {}).items():
        have = rule.get(k, "any" if k == "proto" else "" if k == "comment" else None)
        if have != want:
            raise cs.error(f"{op['firewall']} rule {n} ({doc.line_of(('nodes', ni, 'rules', n - 1))}"
                           f" of {doc.file}) has {k}: {have!r}, not {want!r} as 'expect' says: "
                           f"the topology changed since the change set was written?",
                           at + ("expect", k))
    return n - 1


def _service(doc: Doc, cs, op: dict, at: tuple, ni: int,
             types: tuple[str, ...] = ()) -> list[int]:
    """Indexes of the node's services the operation selects: the one on ``port`` (``proto``),
    or with ``types`` and no port, every service of those types."""
    services = doc.data["nodes"][ni].get("services") or []
    if "port" in op:
        found = [k for k, s in enumerate(services) if s.get("port") == op["port"]
                 and ("proto" not in op or s.get("proto", op["proto"]) == op["proto"])]
        if len(found) > 1:
            raise cs.error(f"{op['node']} has {len(found)} services on port {op['port']}; "
                           f"say which with 'proto'", at + ("port",))
        if not found:
            ports = ", ".join(f"{s.get('type')} {s.get('port')}" for s in services) or "none"
            raise cs.error(f"{op['node']} has no service on port {op['port']} (it has: "
                           f"{ports})", at + ("port",))
        if types and services[found[0]].get("type") not in types:
            raise cs.error(f"the service on {op['node']} port {op['port']} is "
                           f"{services[found[0]].get('type')}, which has no accounts",
                           at + ("port",))
        return found
    found = [k for k, s in enumerate(services) if s.get("type") in types]
    if not found:
        raise cs.error(f"{op['node']} has no login service", at + ("node",))
    return found


def references(doc: Doc, name: str, skip: tuple) -> tuple | None:
    """The first path (in file order) of a value that names ``name``, outside ``skip``."""
    found = []

    def walk(x, path):
        if path[:len(skip)] == skip and skip or path[:1] in (("blocks",), ("instances",)):
            return
        if isinstance(x, dict):
            for k, v in x.items():
                if k == name and path[:2] == ("benign", "nodes"):
                    found.append(path + (k,))
                walk(v, path + (k,))
        elif isinstance(x, list):
            for k, v in enumerate(x):
                walk(v, path + (k,))
        elif isinstance(x, str) and (x == name or (path[:1] == ("missions",)
                                                   and name in _TOKENS.split(x))):
            found.append(path)
    walk(doc.data, ())
    if not found:
        return None
    return min(found, key=lambda p: doc.where(p))


def _unreferenced(doc: Doc, cs, at: tuple, name: str, skip: tuple) -> None:
    ref = references(doc, name, skip)
    if ref is not None:
        file, line, _ = doc.where(ref)
        raise cs.error(f"cannot remove '{name}': {describe(doc, ref)} ({file}:{line}) still "
                       f"names it; change or remove that first", at)


# -- the operations ---------------------------------------------------------------------------
def _rules(doc, cs, op, at):
    ni = _node(doc, cs, at + ("firewall",), op["firewall"], "firewall")
    path = ("nodes", ni, "rules")
    rules = _ensure_list(doc, cs, path, at)
    if op["op"] == "add-rule":
        pos = op.get("position", len(rules) + 1)
        if pos > len(rules) + 1:
            raise cs.error(f"position {pos} is past the end: {op['firewall']} has {len(rules)} "
                           f"rules (the last position is {len(rules) + 1})", at + ("position",))
        _insert(doc, cs, path, pos - 1, op["rule"], at + ("rule",))
        return
    k = _rule_index(doc, cs, op, at, ni)
    if op["op"] == "remove-rule":
        _delete(doc, path, k)
    else:
        _set(doc, cs, path + (k,), op["with"], at + ("with",))


def _default(doc, cs, op, at):
    ni = _node(doc, cs, at + ("firewall",), op["firewall"], "firewall")
    _set(doc, cs, ("nodes", ni, "default"), op["default"], at + ("default",))


def _services(doc, cs, op, at):
    ni = _node(doc, cs, at + ("node",), op["node"], "host")
    path = ("nodes", ni, "services")
    services = _ensure_list(doc, cs, path, at)
    if op["op"] == "add-service":
        _insert(doc, cs, path, len(services), op["service"], at + ("service",))
        return
    (k,) = _service(doc, cs, op, at, ni)
    if op["op"] == "remove-service":
        _delete(doc, path, k)
        return
    for key, value in op["set"].items():
        _set(doc, cs, path + (k, key), value, at + ("set", key))


def _accounts(doc, cs, op, at):
    ni = _node(doc, cs, at + ("node",), op["node"], "host")
    picked = _service(doc, cs, op, at, ni, LOGIN_TYPES)
    path = ("nodes", ni, "services")
    services = doc.get(path)
    if op["op"] == "add-account":
        if len(picked) > 1:
            raise cs.error(f"{op['node']} has {len(picked)} login services; say which with "
                           f"'port'", at + ("node",))
        accounts = _ensure_list(doc, cs, path + (picked[0], "accounts"), at)
        if any(a.get("user") == op["user"] for a in accounts):
            raise cs.error(f"{op['node']} has an account '{op['user']}' already (use "
                           f"set-password)", at + ("user",))
        new = {"user": op["user"], "password": op["password"]}
        accounts.append(new)
        at_new = path + (picked[0], "accounts", len(accounts) - 1)
        doc.values[at_new] = _pos(cs, at)
        for key in new:
            doc.values[at_new + (key,)] = doc.keys[at_new + (key,)] = _pos(cs, at + (key,))
        return
    hit = False
    for k in picked:
        accounts = services[k].get("accounts") or []
        for j, a in enumerate(accounts):
            if a.get("user") != op["user"]:
                continue
            hit = True
            if op["op"] == "set-password":
                _set(doc, cs, path + (k, "accounts", j, "password"), op["password"],
                     at + ("password",))
            else:
                _delete(doc, path + (k, "accounts"), j)
            break
    if not hit:
        users = sorted({a.get("user") for k in picked for a in services[k].get("accounts") or []})
        raise cs.error(f"{op['node']} has no account '{op['user']}'{did_you_mean(op['user'], users)}"
                       f" (accounts: {', '.join(users) or 'none'})", at + ("user",))


def _software(doc, cs, op, at):
    ni = _node(doc, cs, at + ("node",), op["node"])
    path = ("nodes", ni, "software")
    items = _ensure_list(doc, cs, path, at)
    k = next((k for k, s in enumerate(items) if s.get("name") == op["name"]), None)
    if op["op"] == "remove-software":
        if k is None:
            raise cs.error(f"{op['node']} has no software '{op['name']}'"
                           f"{did_you_mean(op['name'], [s.get('name') for s in items])}",
                           at + ("name",))
        _delete(doc, path, k)
        return
    entry = {key: op[key] for key in ("name", "version", "cpe") if key in op}
    if k is None:
        items.append({})
        k = len(items) - 1
        doc.values[path + (k,)] = _pos(cs, at)
    elif "cpe" not in op:
        items[k].pop("cpe", None)          # a new version: the old CPE names the old one
    for key, value in entry.items():
        _set(doc, cs, path + (k, key), value, at + (key,))


def _profile(doc, cs, op, at):
    if op["op"] == "define-profile":
        profiles = doc.data.setdefault("profiles", {})
        if ("profiles",) not in doc.values:
            doc.values[("profiles",)] = _pos(cs, at)
        profiles[op["name"]] = None
        _set(doc, cs, ("profiles", op["name"]), op["profile"], at + ("profile",))
        return
    target = op["target"]
    if target in (doc.data.get("zones") or {}):
        path = ("zones", target, "profile")
    else:
        links = doc.data.get("links") or []
        k = next((k for k, l in enumerate(links) if l.get("name") == target), None)
        if k is None:
            raise cs.error(f"unknown zone or link '{target}'"
                           f"{did_you_mean(target, [*doc.data.get('zones', {}), *(l.get('name') for l in links)])}",
                           at + ("target",))
        path = ("links", k, "profile")
    _set(doc, cs, path, op["profile"], at + ("profile",))


def _taken(doc: Doc, cs, name: str, at: tuple) -> None:
    """Zones, links and nodes share one namespace."""
    for i, n in enumerate(doc.data.get("nodes") or []):
        if n.get("name") == name:
            raise cs.error(f"'{name}' is a node of the topology already "
                           f"({doc.line_of(('nodes', i))} of {doc.file})", at)
    if name in (doc.data.get("zones") or {}) or any(
            l.get("name") == name for l in doc.data.get("links") or []):
        raise cs.error(f"'{name}' is a zone or link of the topology already", at)


def _nodes(doc, cs, op, at):
    if op["op"] == "add-node":
        _taken(doc, cs, op["node"]["name"], at + ("node", "name"))
        nodes = _ensure_list(doc, cs, ("nodes",), at)
        _insert(doc, cs, ("nodes",), len(nodes), op["node"], at + ("node",))
        return
    ni = _node(doc, cs, at + ("node",), op["node"])
    _unreferenced(doc, cs, at + ("node",), op["node"], ("nodes", ni))
    _delete(doc, ("nodes",), ni)


def _zones(doc, cs, op, at):
    zones = doc.data.setdefault("zones", {})
    if op["op"] == "add-zone":
        _taken(doc, cs, op["name"], at + ("name",))
        zones[op["name"]] = None
        _set(doc, cs, ("zones", op["name"]), op["zone"], at + ("zone",))
        doc.keys[("zones", op["name"])] = _pos(cs, at + ("name",))
        return
    name = op["zone"]
    if name not in zones:
        raise cs.error(f"unknown zone '{name}'{did_you_mean(name, zones)}", at + ("zone",))
    _unreferenced(doc, cs, at + ("zone",), name, ("zones", name))
    del zones[name]
    _drop(doc, ("zones", name))


def _routes(doc, cs, op, at):
    ni = _node(doc, cs, at + ("node",), op["node"])
    path = ("nodes", ni, "routes")
    routes = _ensure_list(doc, cs, path, at)
    if op["op"] == "add-route":
        _insert(doc, cs, path, len(routes), op["route"], at + ("route",))
        return
    k = next((k for k, r in enumerate(routes) if r.get("to") == op["to"]), None)
    if k is None:
        raise cs.error(f"{op['node']} has no hand-given route to {op['to']} (it has: "
                       f"{', '.join(r.get('to', '?') for r in routes) or 'none'})", at + ("to",))
    _delete(doc, path, k)


OPERATIONS = {
    "add-rule": _rules, "remove-rule": _rules, "replace-rule": _rules, "set-default": _default,
    "add-service": _services, "remove-service": _services, "modify-service": _services,
    "set-password": _accounts, "add-account": _accounts, "remove-account": _accounts,
    "set-software": _software, "remove-software": _software,
    "set-profile": _profile, "define-profile": _profile,
    "add-node": _nodes, "remove-node": _nodes, "add-zone": _zones, "remove-zone": _zones,
    "add-route": _routes, "remove-route": _routes,
    "set-detector": None,      # not part of the topology: see patch/detectors.py
}


def apply_change(doc: Doc, cs) -> None:
    """Apply every operation of ``cs`` to ``doc`` in order, then check the patched document
    against the topology schema (an error in what the change brought in points at the change)."""
    if doc.data.get("name") != cs.topology:
        raise cs.error(f"the change set is for topology '{cs.topology}', but "
                       f"{doc.file} is topology '{doc.data.get('name')}'", ("topology",))
    for i, op in enumerate(cs.ops):
        handler = OPERATIONS[op["op"]]
        if handler is not None:
            handler(doc, cs, op, ("changes", i))
    check_counts(doc)
    version_keys(_Ctx(doc))
    err = schema_error(doc, topology_schema())
    if err:
        raise err


class _Ctx:
    """The little of a loading ``Context`` that ``version_keys`` reads."""

    def __init__(self, doc: Doc):
        self.doc = doc
