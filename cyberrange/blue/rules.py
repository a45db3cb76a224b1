"""Firewall rules written by a defender, read exactly as a topology's rules are.

``blue rule add FW RULE`` takes a rule in the topology's own syntax, either as a topology file
writes it (a YAML flow mapping)::

    {action: deny, from: ops-lan, to: c2-server, proto: tcp, port: 8080, comment: contain}

or the same keys in a short form, the action first::

    deny from ops-lan to c2-server proto tcp port 8080 comment "contain"

Both become the same mapping, checked against the topology schema's ``rule`` and resolved by
the loader's own rule stage (``model/stages/rules.py``): zone, node, CIDR, ``any`` or a list
(``from [dmz, hq-lan]``), ports and ranges, the same errors with a did-you-mean. The result is
the model's ``Rule``, which ``twin/firewall.rule_line`` turns into the same nftables text the
twin's firewalls were built from. ``block`` builds its rule the same way from ``--src``,
``--dst``, ``--proto`` and ``--port``.
"""
from __future__ import annotations

import json
import shlex
from functools import cache

from cyberrange.errors import UserError

KEYS = ("from", "to", "proto", "port", "comment")


@cache
def _rule_schema() -> dict:
    from cyberrange.model.stages.document import part_schema
    return part_schema("rule")


def rule_mapping(text: str) -> dict:
    """The rule mapping a defender wrote (flow mapping or short form); not yet checked."""
    import yaml
    text = (text or "").strip()
    if not text:
        raise UserError("rule: empty (write e.g. 'deny from ops-lan to c2-server proto tcp "
                        "port 8080')")
    if text.startswith("{"):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"rule {text!r}: not a YAML mapping "
                            f"({str(e).splitlines()[0]})") from None
        if not isinstance(value, dict):
            raise UserError(f"rule {text!r}: not a mapping")
        return value
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise UserError(f"rule {text!r}: {e}") from None
    action, rest = words[0], words[1:]
    if action not in ("allow", "deny"):
        raise UserError(f"rule {text!r}: starts with allow or deny, not {action!r}")
    out: dict = {"action": action}
    while rest:
        key = rest.pop(0)
        if key not in KEYS:
            from cyberrange.model.yamlsrc import did_you_mean
            raise UserError(f"rule {text!r}: unknown key {key!r}{did_you_mean(key, KEYS)} "
                            f"(keys: {', '.join(KEYS)})")
        if not rest:
            raise UserError(f"rule {text!r}: {key} needs a value")
        if key in out:
            raise UserError(f"rule {text!r}: {key} given twice")
        out[key] = _value(rest.pop(0), key)
    return out


def _value(word: str, key: str):
    """A short-form value: a list ``[a, b]``, a port number, or a string."""
    import yaml
    if word.startswith("["):
        try:
            return yaml.safe_load(word)
        except yaml.YAMLError:
            return word
    if key == "port" and word.isdigit():
        return int(word)
    return word


def parse_rule(topo, mapping: dict, label: str = "rule"):
    """The model's ``Rule`` for ``mapping``, checked by the topology schema and resolved by the
    loader's rule stage against ``topo``; ``UserError`` (``label: what is wrong``) otherwise."""
    from cyberrange.model.stages.base import Context
    from cyberrange.model.stages.rules import _endpoint, _ports
    from cyberrange.model.topology import Rule
    from cyberrange.model.yamlsrc import parse_yaml, schema_error
    try:
        doc = parse_yaml(json.dumps(mapping, default=str), file=label)
        err = schema_error(doc, _rule_schema())
        if err is not None:
            raise err
        ctx = Context(doc)
        ctx.topo = topo
        default = ctx.defaults["rule"]
        proto = mapping.get("proto", default["proto"])
        ports = _ports(ctx, ("port",)) if "port" in mapping else []
        if ports and proto not in ("tcp", "udp"):
            raise doc.error(f"a rule with a port needs proto tcp or udp (it has proto {proto})")
        return Rule(action=mapping["action"], src=_endpoint(ctx, ("from",)),
                    dst=_endpoint(ctx, ("to",)), proto=proto, ports=ports,
                    comment=mapping.get("comment", default["comment"]))
    except UserError as e:          # positions in a one-line rule say nothing: drop them
        message = e.message.replace("the document: ", "").replace(" in the document", "")
        raise UserError(f"{label}: {message}") from None


def rule_text(mapping: dict) -> str:
    """A mapping in the short form (for tables and the log)."""
    parts = [str(mapping.get("action", "?"))]
    for key in KEYS:
        if key in mapping:
            v = mapping[key]
            if isinstance(v, list):
                v = "[" + ", ".join(map(str, v)) + "]"
            elif key == "comment":
                v = json.dumps(str(v))
            parts += [key, str(v)]
    return " ".join(parts)
