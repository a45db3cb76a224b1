"""Where a blue action's nftables objects go, and the one ``nft -f`` that makes or removes them.

Three places, all inside the twin's own namespaces (teardown deletes the namespaces, and the
kernel deletes these objects with them):

=================  =====================================  =====================================
action             namespace, table                       objects of action ``A3``
=================  =====================================  =====================================
block --at port,   switch namespace ``<prefix>sw``,       base chain ``A3``, hook ``forward``
isolate            table ``bridge cyberrange_blue``       priority ``filter`` (-200)
block --at         each firewall's namespace,             base chain ``A3``, hook ``forward``
firewall           table ``inet cyberrange_blue``         priority ``filter - 10``
rule add           the firewall's own table               regular chain ``blue_A3`` and one
                   ``inet cyberrange``                    ``jump blue_A3`` rule in its
                                                          ``forward`` chain
=================  =====================================  =====================================

Why a base chain per action: a drop in any base chain is final, so blocks and quarantines
never need to touch the model's ruleset or each other, and undoing one is ``delete chain``
(or ``delete table`` for the last one, so that an undone action leaves the ruleset exactly
as it found it). On the bridge the chain sees a frame after it entered the switch, so the
sensors (netdev ingress copies, ``twin/sensors.py``) still capture what a blocked node sends.

Why ``rule add`` jumps from inside the model's chain: an ``accept`` in one base chain does not
stop a later base chain from dropping, so an ``allow`` placed "before the model's rules" can
only work from inside the model's own chain. The jump rule carries the comment
``cyberrange-blue A3 first|last``; ``first`` jumps go right after the model's
``ct state established,related accept`` (after earlier ``first`` jumps: rules keep the order
they were added in), ``last`` jumps after the model's last rule, before its policy. Undoing
deletes the jump (found by its comment) and the chain, in one transaction.
"""
from __future__ import annotations

import re

from cyberrange.twin import netns

SWITCH_TABLE = ("bridge", "cyberrange_blue")
FIREWALL_TABLE = ("inet", "cyberrange_blue")
MODEL_TABLE = ("inet", "cyberrange")
MODEL_CHAIN = "forward"
TAG = "cyberrange-blue"

# object strings in the log: "<ns>: <family> <table> chain <name>" and
# "<ns>: <family> <table> <chain>: jump <name> (<comment>)"
_CHAIN_RE = re.compile(r"^(\S+): (\S+) (\S+) chain (\S+)$")
_JUMP_RE = re.compile(r"^(\S+): (\S+) (\S+) (\S+): jump (\S+) \((.*)\)$")


class NftError(Exception):
    """``nft -f`` refused a script: ``str`` is its first line of error."""


def run(ns: str, script: str) -> None:
    """Run one ``nft -f`` transaction inside ``ns``: all of ``script`` or nothing."""
    r = netns.run(ns, ["nft", "-f", "-"], input=script, timeout=30)
    if r.returncode != 0:
        err = [ln for ln in (r.stderr or r.stdout or "").splitlines() if "Error" in ln]
        raise NftError(f"nft in {ns}: "
                       + ((err or (r.stderr or "").splitlines() or [f"exit {r.returncode}"])[0]
                          .strip()[:300]))


def chain_exists(ns: str, table: tuple[str, str], chain: str) -> bool:
    r = netns.run(ns, ["nft", "list", "chain", table[0], table[1], chain], timeout=30)
    return r.returncode == 0


def ruleset(ns: str) -> str:
    """``nft list ruleset`` of a namespace (tests compare it before and after)."""
    return netns.run(ns, ["nft", "list", "ruleset"], timeout=30).stdout


# -- base chains (block, isolate) ------------------------------------------------------------
def base_chain(table: tuple[str, str], chain: str, priority: str, rules: list[str]) -> str:
    """A script that makes ``table`` (if missing) and base chain ``chain`` with ``rules``."""
    family, name = table
    lines = [f"add table {family} {name}",
             f"add chain {family} {name} {chain} {{ type filter hook forward priority "
             f"{priority}; policy accept; }}"]
    lines += [f"add rule {family} {name} {chain} {r}" for r in rules]
    return "\n".join(lines) + "\n"


def chain_object(ns: str, table: tuple[str, str], chain: str) -> str:
    return f"{ns}: {table[0]} {table[1]} chain {chain}"


def remove_chain(table: tuple[str, str], chain: str, last_in_table: bool) -> str:
    """Undo :func:`base_chain`: the chain, or the whole table when no other action uses it."""
    family, name = table
    if last_in_table:
        return f"delete table {family} {name}\n"
    return f"delete chain {family} {name} {chain}\n"


# -- jumps from the model's chain (rule add) -------------------------------------------------
def rule_chain_name(action_id: str) -> str:
    return f"blue_{action_id}"


def jump_comment(action_id: str, position: str) -> str:
    return f"{TAG} {action_id} {position}"


def model_rules(ns: str) -> list[tuple[int, str]]:
    """``(handle, text)`` of every rule of the model's forward chain, in order."""
    family, table = MODEL_TABLE
    r = netns.run(ns, ["nft", "-a", "list", "chain", family, table, MODEL_CHAIN], timeout=30)
    if r.returncode != 0:
        raise NftError(f"nft in {ns}: the firewall's chain {family} {table} {MODEL_CHAIN} is "
                       f"missing ({(r.stderr or '').strip()[:200]})")
    out = []
    for line in r.stdout.splitlines():
        m = re.search(r"# handle (\d+)\s*$", line)
        if m and not line.strip().startswith(("chain", "table", "type")):
            out.append((int(m.group(1)), line.strip()))
    return out


def add_rule_chain(ns: str, action_id: str, rule: str, position: str) -> str:
    """A script that makes chain ``blue_<id>`` holding ``rule`` and jumps to it from the
    model's forward chain, ``first`` (before the model's rules, after earlier first rules) or
    ``last`` (after the model's rules, before the policy)."""
    family, table = MODEL_TABLE
    chain = rule_chain_name(action_id)
    comment = jump_comment(action_id, position)
    jump = f"jump {chain} comment \"{comment}\""
    lines = [f"add chain {family} {table} {chain}", f"add rule {family} {table} {chain} {rule}"]
    if position == "last":
        lines.append(f"add rule {family} {table} {MODEL_CHAIN} {jump}")
    else:
        after = None
        for handle, text in model_rules(ns):
            if text.startswith("ct state") or (f'"{TAG} ' in text and ' first"' in text):
                after = handle
            else:
                break
        if after is None:
            lines.append(f"insert rule {family} {table} {MODEL_CHAIN} {jump}")
        else:
            lines.append(f"add rule {family} {table} {MODEL_CHAIN} position {after} {jump}")
    return "\n".join(lines) + "\n"


def jump_object(ns: str, action_id: str, position: str) -> str:
    family, table = MODEL_TABLE
    return (f"{ns}: {family} {table} {MODEL_CHAIN}: jump {rule_chain_name(action_id)} "
            f"({jump_comment(action_id, position)})")


def remove_rule_chain(ns: str, action_id: str) -> str:
    """Undo :func:`add_rule_chain`: the jump (found by its comment) and the chain."""
    family, table = MODEL_TABLE
    tag = f'"{TAG} {action_id} '
    handles = [h for h, text in model_rules(ns) if tag in text]
    lines = [f"delete rule {family} {table} {MODEL_CHAIN} handle {h}" for h in handles]
    lines.append(f"delete chain {family} {table} {rule_chain_name(action_id)}")
    return "\n".join(lines) + "\n"


def parse_object(text: str) -> tuple:
    """``("chain", ns, (family, table), chain)`` or ``("jump", ns, (family, table), chain,
    target)`` from an object string of the log; ``("other", text)`` otherwise."""
    m = _CHAIN_RE.match(text)
    if m:
        return ("chain", m.group(1), (m.group(2), m.group(3)), m.group(4))
    m = _JUMP_RE.match(text)
    if m:
        return ("jump", m.group(1), (m.group(2), m.group(3)), m.group(4), m.group(5))
    return ("other", text)
