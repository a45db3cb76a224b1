"""``cyberrange topo ...`` and ``cyberrange playbook ...``: check files, ask reachability questions.

Thin commands: the work is in ``cyberrange.model`` and ``cyberrange.attack.playbook``. Bad input
raises ``UserError``, which ``cli.main`` prints as one line and exit code 2.
"""
from __future__ import annotations

import sys
from collections import Counter

import click
from rich.console import Console
from rich.table import Table

console = Console()


@click.group()
def topo():
    """Check topology files and query static reachability (no root needed)."""


@topo.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def topo_check(file):
    """Load FILE, validate it and print a short summary. Exit 2 on the first error."""
    from cyberrange.model.loader import load_topology

    t = load_topology(file)
    kinds = Counter(n.kind for n in t.nodes.values())
    console.print(f"[bold green]ok[/] {file}: topology [bold]{t.name}[/] ({t.classification}), "
                  f"{len(t.nodes)} nodes: " + ", ".join(f"{kinds[k]} {k}{'s' * (kinds[k] != 1)}" for k in
                                                        ("host", "router", "firewall") if kinds[k]))
    table = Table(title="zones", show_edge=False)
    for col in ("zone", "subnet", "classification", "profile", "members"):
        table.add_column(col)
    for z in t.zones.values():
        members = ", ".join(n.name for n, _ in t.members(z.name))
        table.add_row(z.name + (" (link)" if z.p2p else ""), str(z.subnet), z.classification,
                      z.profile.name if z.profile else "-", members)
    console.print(table)
    for r in t.routers:
        extra = f", {len(r.rules)} rules, default {r.default_action}" if r.kind == "firewall" else ""
        console.print(f"  {r.kind} [bold]{r.name}[/]: {len(r.interfaces)} interfaces, "
                      f"{len(r.routes)} routes{extra}")
    console.print(f"  links: {', '.join(t.links) or '-'}; sensors: "
                  f"{', '.join(f'{s.name}@{s.zone}' for s in t.sensors.values()) or '-'}")


@topo.command("reach")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--from", "src", required=True, metavar="NODE", help="node the connection starts on")
@click.option("--to", "dst", required=True, metavar="NODE_OR_IP", help="destination node or IPv4 address")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp", show_default=True,
              help="transport protocol")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="destination port (required for tcp and udp)")
def topo_reach(file, src, dst, proto, port):
    """Would a NEW connection from --from to --to get through the firewalls of FILE?

    Prints the verdict and why. Exit 0 if allowed, 1 if denied, 2 on bad input.
    """
    from cyberrange.model.loader import load_topology
    from cyberrange.model.reach import allowed

    t = load_topology(file)
    ok, why = allowed(t, src, dst, proto, port)
    what = f"{src} -> {dst} {proto}" + (f"/{port}" if port and proto != "icmp" else "")
    if ok:
        console.print(f"[bold green]allowed[/] {what}: {why}")
    else:
        console.print(f"[bold red]denied[/] {what}: {why}")
        sys.exit(1)


@click.group()
def playbook():
    """Check attack playbook files."""


@playbook.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--topology", "topology_file", type=click.Path(dir_okay=False), default=None,
              help="topology file to check actors and targets against")
def playbook_check(file, topology_file):
    """Load FILE, validate it (against --topology if given) and list its steps."""
    from cyberrange.attack.catalog import TECHNIQUES
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.model.loader import load_topology

    t = load_topology(topology_file) if topology_file else None
    pb = load_playbook(file, t)
    against = f" against topology {t.name}" if t else ""
    console.print(f"[bold green]ok[/] {file}: playbook [bold]{pb.name}[/], "
                  f"{len(pb.steps)} steps{against}")
    table = Table(show_edge=False)
    for col in ("step", "technique", "actor", "targets", "delay s"):
        table.add_column(col)
    for s in pb.steps:
        table.add_row(s.id, f"{s.technique} {TECHNIQUES[s.technique].name}", s.actor,
                      ", ".join(s.targets), f"{s.delay_s:g}")
    console.print(table)


COMMANDS = [topo, playbook]
