"""``cyberrange attack list``: the techniques playbooks may use."""
from __future__ import annotations

import click
from rich import box
from rich.console import Console
from rich.table import Table

from cyberrange.attack.catalog import TECHNIQUES


@click.group()
def attack():
    """Attack techniques and playbooks."""


@attack.command("list")
def attack_list():
    """List the techniques with their ATT&CK ids, parameters and the facts they produce."""
    t = Table(box=box.SIMPLE_HEAVY)
    for c in ("technique", "name", "tactic", "parameters (default)", "produces"):
        t.add_column(c)
    for tech in TECHNIQUES.values():
        params = "\n".join(f"{k} ({p.default!r})" for k, p in tech.params.items())
        t.add_row(tech.id, tech.name, tech.tactic, params,
                  ", ".join(f"#{{step.{f}}}" for f in tech.produces))
    Console().print(t)


COMMANDS = [attack]
