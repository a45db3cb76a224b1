"""The response playbook format (docs/response-format.md): loading with ``FILE:LINE:COL``
errors, and the alert fields its templates are rendered from. The engine that acts on live
alerts is ``blue/respond.py``.

A response file goes through the one safe YAML loader (``model.yamlsrc``: size, nesting,
aliases, duplicate keys, NaN), its JSON Schema (``model/schemas/response.schema.json``), then
checks against the drill's topology and detectors: unknown detectors, families, template
fields, parameters, nodes, firewalls and endpoints are refused with the nearest name, and so is
a literal action on a ``never_isolate`` node (it could only ever be refused).
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cyberrange.blue.log import UNDO
from cyberrange.errors import UserError
from cyberrange.model.yamlsrc import Limits, describe, did_you_mean, load_yaml, schema_error

SCHEMA = Path(__file__).resolve().parent.parent / "model" / "schemas" / "response.schema.json"
LIMITS = Limits("response file", 256 * 1024, 20_000, max_aliases=1_000,
                max_alias_values=20_000, max_alias_chars=256 * 1024)

TEMPLATE = re.compile(r"\{([^{}]*)\}")
FIELDS = ("source.ip", "source.node", "destination.ip", "destination.node", "destination.port",
          "detector", "family", "technique")
NODE_FIELDS = ("source.node", "destination.node")
ENDPOINT_FIELDS = ("source.ip", "source.node", "destination.ip", "destination.node")
TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
PROTOS = ("tcp", "udp", "icmp", "any")
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_ACTIONS = 20

#: the parameters of each action and what each takes (``_check_param``)
PARAMS = {
    "block": {"src": "endpoint", "dst": "endpoint", "proto": "proto", "port": "port",
              "at": "at"},
    "isolate": {"node": "node", "allow": "nodes"},
    "rule-add": {"firewall": "firewall", "rule": "rule", "position": "position"},
    "kill-sessions": {"node": "node", "peer": "endpoint"},
    "restart-service": {"node": "node", "service": "service"},
}
REQUIRED = {"isolate": ("node",), "rule-add": ("firewall", "rule"),
            "kill-sessions": ("node",), "restart-service": ("node",)}


# --------------------------------------------------------------------------- the format
@dataclass
class When:
    detectors: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()
    min_score: float | None = None
    count: int = 1
    window_s: float = DEFAULT_WINDOW_S

    def matches(self, alert) -> bool:
        if self.detectors and alert.rule_name not in self.detectors:
            return False
        if self.families and alert.rule_category not in self.families:
            return False
        tech = alert.technique or ""
        if self.techniques and not any(tech == t or tech.startswith(t + ".")
                                       for t in self.techniques):
            return False
        return self.min_score is None or float(alert.score or 0) >= self.min_score


@dataclass
class Rule:
    name: str
    when: When
    action: str
    params: dict                     # as written; strings may hold {templates}
    for_s: float = 0.0               # 0: until the drill ends
    once_per: str | None = None
    cooldown_s: float = 0.0
    line: int = 0


@dataclass
class Response:
    name: str
    description: str
    rules: list[Rule]
    never_isolate: list[str] = field(default_factory=list)   # as written (nodes, zones)
    protected: set[str] = field(default_factory=set)         # node names
    max_actions: int = DEFAULT_MAX_ACTIONS
    topology: str | None = None
    file: str = ""


@cache
def response_schema() -> dict:
    return json.loads(SCHEMA.read_text())


def load_response(path, topology=None, detectors=None) -> Response:
    """Read and check the response playbook in ``path``: the schema, then every name against
    ``topology`` (nodes, zones, firewalls, endpoints, rules) and ``detectors`` (instance names)
    when given. Every error is one line, ``FILE:LINE:COL: what (did you mean ...?)``."""
    doc = load_yaml(path, LIMITS)
    if not isinstance(doc.data, dict):
        raise doc.error("a response file must be a mapping with version, name, rules, ...")
    err = schema_error(doc, response_schema())
    if err:
        raise err
    d = doc.data
    if topology is not None and "topology" in d and d["topology"] != topology.name:
        raise doc.error(f"response is written for topology '{d['topology']}', but the "
                        f"topology given is '{topology.name}'", ("topology",))
    protected = _never_isolate(doc, d.get("never_isolate", []), topology)
    names = [det.name for det in detectors] if detectors is not None else None
    rules: list[Rule] = []
    for i, r in enumerate(d["rules"]):
        path = ("rules", i)
        earlier = [x for x in rules if x.name == r["name"]]
        if earlier:
            raise doc.error(f"duplicate rule name '{r['name']}' (first at line "
                            f"{earlier[0].line})", path + ("name",))
        rules.append(_rule(doc, path, r, topology, names, protected))
    return Response(name=d["name"], description=d.get("description", ""), rules=rules,
                    never_isolate=list(d.get("never_isolate", [])), protected=protected,
                    max_actions=int(d.get("max_actions", DEFAULT_MAX_ACTIONS)),
                    topology=d.get("topology"), file=doc.file)


def _never_isolate(doc, entries: list, topo) -> set[str]:
    """The node names the list protects (a zone stands for every node in it)."""
    out: set[str] = set()
    for k, name in enumerate(entries):
        if topo is None:
            out.add(name)
        elif name in topo.nodes:
            out.add(name)
        elif name in topo.zones:
            out.update(n.name for n, _ in topo.members(name))
        else:
            raise doc.error(f"never_isolate: unknown node '{name}': not a node or zone of "
                            f"topology {topo.name}{did_you_mean(name, [*topo.nodes, *topo.zones])}",
                            ("never_isolate", k))
    return out


def _names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _when(doc, path: tuple, w: dict, detector_names) -> When:
    from cyberrange.detect.registry import FAMILIES
    checks = (("detector", detector_names, "detector"), ("family", list(FAMILIES), "family"))
    for key, known, what in checks:
        for k, name in enumerate(_names(w.get(key))):
            if known is not None and name not in known:
                at = path + (key,) + ((k,) if isinstance(w[key], list) else ())
                hint = did_you_mean(name, known) or f" (known: {', '.join(sorted(known))})"
                raise doc.error(f"{describe(doc, at)}: unknown {what} '{name}'{hint}", at)
    for k, tech in enumerate(_names(w.get("technique"))):
        if not TECHNIQUE.match(tech):
            at = path + ("technique",) + ((k,) if isinstance(w["technique"], list) else ())
            raise doc.error(f"{describe(doc, at)}: '{tech}' is not an ATT&CK technique id "
                            f"(T1046, T1110.001)", at)
    return When(detectors=_names(w.get("detector")), families=_names(w.get("family")),
                techniques=_names(w.get("technique")), min_score=w.get("min_score"),
                count=int(w.get("count", 1)), window_s=float(w.get("window", DEFAULT_WINDOW_S)))


def _rule(doc, path: tuple, r: dict, topo, detector_names, protected: set[str]) -> Rule:
    when = _when(doc, path + ("when",), r["when"], detector_names)
    do = r["do"]
    action = do["action"]
    params = {k: v for k, v in do.items() if k != "action"}
    known = PARAMS[action]
    for name, value in params.items():
        ppath = path + ("do", name)
        if name not in known:
            raise doc.error(f"{describe(doc, path + ('do',))}: {action} has no parameter "
                            f"'{name}'{did_you_mean(name, known)} (parameters: "
                            f"{', '.join(known)})", ppath, key=True)
        _check_param(doc, ppath, known[name], value, topo)
    for name in REQUIRED.get(action, ()):
        if name not in params:
            raise doc.error(f"{describe(doc, path + ('do',))}: {action} needs '{name}'",
                            path + ("do",))
    if action == "block":
        if "src" not in params and "dst" not in params:
            raise doc.error(f"{describe(doc, path + ('do',))}: block needs 'src' or 'dst' (or "
                            f"both)", path + ("do",))
        if params.get("at", "port") == "port" and "src" not in params:
            raise doc.error(f"{describe(doc, path + ('do',))}: block at the port (the default) "
                            f"needs 'src': the ports are the source's (or give 'at: firewall')",
                            path + ("do",))
    _check_protected(doc, path, action, params, topo, protected)
    if r.get("for") and action not in UNDO:
        raise doc.error(f"{describe(doc, path + ('for',))}: 'for' needs an action that can be "
                        f"undone ({', '.join(UNDO)}); {action} happens once", path + ("for",),
                        key=True)
    if "once_per" in r:
        _check_fields(doc, path + ("once_per",), r["once_per"], FIELDS, "once_per")
    return Rule(name=r["name"], when=when, action=action, params=params,
                for_s=float(r.get("for", 0)), once_per=r.get("once_per"),
                cooldown_s=float(r.get("cooldown", 0)), line=doc.pos(path)[0])


def _check_fields(doc, path, text: str, allowed, what: str) -> list[str]:
    """The template fields in ``text``, each one known and allowed for ``what``."""
    found = [m.group(1).strip() for m in TEMPLATE.finditer(text)]
    rest = TEMPLATE.sub("", text)
    if "{" in rest or "}" in rest:
        raise doc.error(f"{describe(doc, path)}: unbalanced brace in {text!r} (a template "
                        f"is {{field}}, e.g. {{source.ip}})", path)
    for f in found:
        if f not in FIELDS:
            raise doc.error(f"{describe(doc, path)}: unknown template field {{{f}}}"
                            f"{did_you_mean(f, FIELDS)} (fields: {', '.join(FIELDS)})", path)
        if f not in allowed:
            raise doc.error(f"{describe(doc, path)}: {{{f}}} cannot be used in {what} (it "
                            f"takes {', '.join('{' + a + '}' for a in allowed)})", path)
    return found


def _check_param(doc, path, kind: str, value, topo) -> None:
    """One action parameter as written: its type, its template fields, and a literal value
    against the topology (a node, a firewall, an endpoint, a rule)."""
    where = describe(doc, path)
    if kind == "nodes":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise doc.error(f"{where}: expected a node name or a list of them", path)
        for k, v in enumerate(items):
            _check_param(doc, path + ((k,) if isinstance(value, list) else ()), "node", v, topo)
        return
    if kind == "port" and isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            raise doc.error(f"{where}: {value} is not a port 1..65535", path)
        return
    if kind == "service" and isinstance(value, int) and not isinstance(value, bool):
        return
    if not isinstance(value, str) or not value.strip():
        raise doc.error(f"{where}: expected text, got {type(value).__name__} {value!r}", path)
    allowed = {"node": NODE_FIELDS, "firewall": NODE_FIELDS, "endpoint": ENDPOINT_FIELDS,
               "port": ("destination.port",), "service": ("destination.port",),
               "rule": FIELDS}.get(kind, ())
    fields = _check_fields(doc, path, value, allowed, path[-1])
    if fields:
        if kind in ("node", "firewall", "port", "service") and \
                TEMPLATE.fullmatch(value.strip()) is None:
            raise doc.error(f"{where}: a template here must be the whole value "
                            f"(\"{{{fields[0]}}}\")", path)
        return
    _check_literal(doc, path, kind, value.strip(), topo)


def _check_literal(doc, path, kind: str, value: str, topo) -> None:
    where = describe(doc, path)
    choices = {"proto": PROTOS, "position": ("first", "last")}.get(kind)
    if choices is not None and value not in choices:
        raise doc.error(f"{where}: {value!r} is not one of {', '.join(choices)}"
                        f"{did_you_mean(value, choices)}", path)
    if kind == "port" and not (value.isdigit() and 1 <= int(value) <= 65535):
        raise doc.error(f"{where}: {value!r} is not a port 1..65535 or \"{{destination.port}}\"",
                        path)
    if topo is None:
        return
    if kind in ("node", "firewall") or (kind == "at" and value not in ("port", "firewall")):
        if value not in topo.nodes:
            extra = ["port", "firewall"] if kind == "at" else []
            raise doc.error(f"{where}: unknown node '{value}' in topology {topo.name}"
                            f"{did_you_mean(value, [*extra, *topo.nodes])}", path)
        if kind != "node" and not topo.nodes[value].filters:
            raise doc.error(f"{where}: {value} is not a firewall (kind "
                            f"{topo.nodes[value].kind})", path)
    elif kind in ("endpoint", "rule"):
        from cyberrange.blue.rules import parse_rule, rule_mapping
        try:
            mapping = rule_mapping(value) if kind == "rule" else \
                {"action": "deny", "from": value, "to": "any"}
            parse_rule(topo, mapping, where)
        except UserError as e:
            raise doc.error(e.message, path) from None


def _check_protected(doc, path, action: str, params: dict, topo, protected: set[str]) -> None:
    """A literal target on the never_isolate list would always be refused: say so now."""
    for name in ("node", "src"):
        value = params.get(name)
        if not isinstance(value, str) or "{" in value or not protected:
            continue
        if name == "node" and action not in ("isolate", "kill-sessions"):
            continue
        hit = sorted(covered_nodes(topo, value) & protected) if topo is not None else \
            sorted({value} & protected)
        if hit:
            raise doc.error(f"{describe(doc, path + ('do', name))}: {action} of {value} would "
                            f"cut off {', '.join(hit)}, which never_isolate protects (such an "
                            f"action is always refused)", path + ("do", name))


def covered_nodes(topo, ref: str) -> set[str]:
    """The nodes an endpoint (node, zone, address, CIDR, ``any``) names."""
    ref = str(ref).strip()
    if ref in topo.nodes:
        return {ref}
    if ref in topo.zones:
        return {n.name for n, _ in topo.members(ref)}
    if ref == "any":
        return set(topo.nodes)
    try:
        net = ipaddress.ip_network(ref, strict=False)
    except ValueError:
        return set()
    return {n.name for n in topo.nodes.values() for i in n.interfaces if i.ip in net}


# --------------------------------------------------------------------------- alerts -> values
class Missing(Exception):
    """A template field the alert does not give."""


def alert_fields(alert, topo) -> dict:
    """The template fields of one alert (None where it has none), and why each is missing."""
    out: dict = {"detector": alert.rule_name, "family": alert.rule_category,
                 "technique": alert.technique or None}
    why: dict = {}
    for side, raw in (("source", alert.source_ip), ("destination", alert.destination_ip)):
        ip = _one_ip(raw)
        out[f"{side}.ip"] = ip
        node = topo.node_by_ip(ip) if ip else None
        out[f"{side}.node"] = node.name if node is not None else None
        if ip is None:
            why[f"{side}.ip"] = why[f"{side}.node"] = (
                f"the alert has no single {side} address ({raw!r})" if raw else
                f"the alert has no {side} address")
        elif node is None:
            why[f"{side}.node"] = f"{ip} is no node of the twin"
    out["destination.port"] = _port(alert.evidence or {})
    if out["destination.port"] is None:
        why["destination.port"] = "the alert's evidence names no destination port"
    out["_why"] = why
    return out


def _one_ip(raw) -> str | None:
    try:
        return str(ipaddress.IPv4Address(str(raw).strip())) if raw else None
    except ValueError:
        return None


def _port(evidence: dict) -> int | None:
    for key in ("port", "destination.port", "dport"):
        v = evidence.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535:
            return v
    m = re.search(r":(\d{1,5})/(tcp|udp)$", str(evidence.get("channel", "")))   # beacon
    return int(m.group(1)) if m and 1 <= int(m.group(1)) <= 65535 else None


def render(value, fields: dict):
    """``value`` with every ``{field}`` replaced from the alert (a whole-value port stays an
    integer); ``Missing`` names a field the alert does not give."""
    if isinstance(value, dict):
        return {k: render(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, fields) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        name = m.group(1).strip()
        if fields.get(name) is None:
            raise Missing(f"{{{name}}}: " + fields.get("_why", {}).get(
                name, f"the alert has no {name}"))
        return str(fields[name])
    whole = TEMPLATE.fullmatch(value.strip())
    out = TEMPLATE.sub(one, value)
    if whole and isinstance(fields.get(whole.group(1).strip()), int):
        return int(out)
    return out

