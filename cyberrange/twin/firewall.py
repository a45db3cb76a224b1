"""nftables rulesets generated from the model.

A firewall node gets one ``inet cyberrange`` table whose forward chain is::

    ct state established,related accept      # stateful: answers to allowed traffic pass
    <the model's rules, in order>            # first match wins
    policy <the node's default action>

which is exactly the semantics the static analysis (``cyberrange.model.reach``) evaluates.
Routers without rules get no table: they forward everything.
"""
from __future__ import annotations

from cyberrange.model.topology import Endpoint, Node, Rule


def _addr_match(direction: str, ep: Endpoint) -> str:
    if ep.kind == "any" or not ep.networks:
        return ""
    nets = ", ".join(str(n) for n in ep.networks)
    return f"ip {direction} {{ {nets} }} "


def _ports(rule: Rule) -> str:
    if not rule.ports:
        return ""
    items = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in rule.ports)
    if rule.proto in ("tcp", "udp"):
        return f"{rule.proto} dport {{ {items} }} "
    return f"meta l4proto {{ tcp, udp }} th dport {{ {items} }} "


def rule_line(rule: Rule) -> str:
    parts = _addr_match("saddr", rule.src) + _addr_match("daddr", rule.dst)
    if rule.ports:
        parts += _ports(rule)
    elif rule.proto in ("tcp", "udp"):
        parts += f"meta l4proto {rule.proto} "
    elif rule.proto == "icmp":
        parts += "meta l4proto icmp "
    verdict = "accept" if rule.action == "allow" else "drop"
    comment = (rule.comment or "").replace('"', "'")[:120]
    return f"{parts}{verdict}" + (f' comment "{comment}"' if comment else "")


def ruleset(node: Node) -> str:
    """The nft script for one firewall node (``nft -f``-ready)."""
    policy = "accept" if node.default_action == "allow" else "drop"
    lines = [
        "table inet cyberrange {",
        "  chain forward {",
        f"    type filter hook forward priority filter; policy {policy};",
        "    ct state established,related accept",
    ]
    lines += [f"    {rule_line(r)}" for r in node.rules]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"
