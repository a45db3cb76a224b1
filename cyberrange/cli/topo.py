"""``cyberrange topo ...``: check topology files, ask reachability questions.

Thin commands: the work is in ``cyberrange.model``. Bad input raises ``UserError``, which
``cli.main`` prints as one line and exit code 2. (``playbook check`` is ``attack validate``, in
``cli/attack.py``.)
"""
from __future__ import annotations

import json
import sys
from collections import Counter

import click
from rich.console import Console
from rich.table import Table

from cyberrange.cli._params import (
    TOPOLOGY,
    allow_outside_option,
    echo_json,
    json_option,
)

console = Console()


def down_option(f):
    """``--down LINK,...``: answer for the link state where these links or zones are down."""
    return click.option("--down", "down", default=None, metavar="LINK,...",
                        help="links or zones that are down (comma-separated): answer for that "
                             "link state (static routes are withdrawn, OSPF reroutes)")(f)


def _load_in_state(file, down):
    """The topology of FILE, as it is while ``down`` (names, comma-separated) is down."""
    from cyberrange.model.loader import load_topology
    from cyberrange.model.routing import down_names, in_state

    t = load_topology(file)
    names = down_names(t, down)
    return in_state(t, names), sorted(names)


def _say_down(names) -> None:
    if names:
        console.print(f"[bold yellow]down:[/] {', '.join(names)} (routes of that link state)")


@click.group()
def topo():
    """Check, lint, query, draw, import and export topology files (no root needed)."""


@topo.command("check")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@click.option("--json", "as_json", is_flag=True, help="print the summary and findings as JSON")
def topo_check(file, as_json):
    """Load FILE, validate it, lint it and print a summary and the findings.

    Findings: mission-blocked (error), unreachable-zone, shadowed-rule, rule-never-matches
    (warnings), redundant-rule (info); see docs/static-analysis.md. Exit 0 without errors,
    1 when a finding is an error, 2 on bad input.
    """
    from cyberrange.errors import CheckFailed
    from cyberrange.model.lint import lint
    from cyberrange.model.loader import load_topology

    t = load_topology(file)
    findings = lint(t)
    errors = [f for f in findings if f.severity == "error"]
    kinds = Counter(n.kind for n in t.nodes.values())
    if as_json:
        click.echo(json.dumps({
            "file": file, "topology": t.name, "classification": t.classification,
            "nodes": dict(kinds), "zones": len(t.zones), "ok": not errors,
            "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        console.print(f"[bold green]ok[/] {file}: topology [bold]{t.name}[/] ({t.classification}), "
                      f"{len(t.nodes)} nodes: " + ", ".join(
                          f"{kinds[k]} {k}{'s' * (kinds[k] != 1)}" for k in ("host", "router", "firewall")
                          if kinds[k]))
        table = Table(title="zones", show_edge=False)
        for col in ("zone", "subnet", "classification", "profile", "members"):
            table.add_column(col)
        for z in t.zones.values():
            members = [n.name for n, _ in t.members(z.name)]
            shown = ", ".join(members[:8]) + (f", ... ({len(members)} in all)" if len(members) > 8 else "")
            table.add_row(z.name + (" (link)" if z.p2p else ""), str(z.subnet), z.classification,
                          z.profile.name if z.profile else "-", shown)
        console.print(table)
        for r in t.routers:
            extra = f", {len(r.rules)} rules, default {r.default_action}" if r.filters else ""
            console.print(f"  {r.kind} [bold]{r.name}[/]: {len(r.interfaces)} interfaces, "
                          f"{len(r.routes)} routes{extra}")
        console.print(f"  links: {', '.join(t.links) or '-'}; sensors: "
                      f"{', '.join(f'{s.name}@{s.zone}' for s in t.sensors.values()) or '-'}")
        _print_findings(findings)
    if errors:
        raise CheckFailed(f"{file}: {len(errors)} error finding{'s' * (len(errors) != 1)} "
                          f"({', '.join(sorted({f.code for f in errors}))})")


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _print_findings(findings) -> None:
    if not findings:
        console.print("[bold green]lint: no findings[/]")
        return
    counts = Counter(f.severity for f in findings)
    console.print("[bold]lint:[/] " + ", ".join(f"{counts[s]} {s}{'s' * (counts[s] != 1 and s != 'info')}"
                                                 for s in ("error", "warning", "info") if counts[s]))
    for f in findings:
        style = SEVERITY_STYLE[f.severity]
        console.print(f"{f.where}: [{style}]{f.severity}[/] [bold]{f.code}[/]: {f.message}",
                      highlight=False, soft_wrap=True)


@topo.command("reach")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@click.option("--from", "src", default=None, metavar="ZONE|NODE",
              help="source: a zone or node (matrix rows); a node for a single query")
@click.option("--to", "dst", default=None, metavar="ZONE|NODE|IP",
              help="destination: a zone or node (matrix columns); a node or IP for a single query")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default=None,
              help="single query: transport protocol (default tcp)")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="single query: destination port (required for tcp and udp)")
@down_option
@click.option("--json", "as_json", is_flag=True, help="print the verdict or the matrix as JSON")
def topo_reach(file, src, dst, proto, port, down, as_json):
    """Reachability from routes and ordered firewall rules (no root needed).

    With --from NODE --to NODE|IP and --port (or --proto icmp): would a NEW connection get
    through, and why; exit 0 if allowed, 1 if denied. Otherwise: the reachability matrix of
    source zones (or the --from zone/node) against every service of every destination host
    (or of the --to zone/node) plus ICMP echo. --down LINK,...: in that link state.
    """
    from cyberrange.model.reach import allowed, reach_matrix

    t, down = _load_in_state(file, down)
    if src and dst and (port is not None or proto == "icmp"):
        proto = proto or "tcp"
        ok, why = allowed(t, src, dst, proto, port)
        what = f"{src} -> {dst} {proto}" + (f"/{port}" if port and proto != "icmp" else "")
        if as_json:
            click.echo(json.dumps({"from": src, "to": dst, "proto": proto,
                                   "port": port if proto != "icmp" else None,
                                   "allowed": ok, "why": why, "down": down}, indent=2))
        else:
            _say_down(down)
            verdict = "[bold green]allowed[/]" if ok else "[bold red]denied[/]"
            console.print(f"{verdict} {what}: {why}")
        if not ok:
            sys.exit(1)
        return
    if port is not None or proto is not None:
        from cyberrange.errors import UserError
        raise UserError("--proto/--port ask a single question: give --from NODE and --to NODE|IP too")
    m = reach_matrix(t, src, dst)
    if as_json:
        click.echo(json.dumps({"file": file, "topology": t.name, "down": down, **m.to_json()},
                              indent=2))
        return
    _say_down(down)
    _print_matrix(m)


MATRIX_CELLS_SHOWN = 6000
CELL = {"allow": "[green]✔[/]", "deny": "[red]✘[/]", "self": "[dim]·[/]"}


def _print_matrix(m) -> None:
    """Printed with one line per destination service and one column per source, so that it fits
    a terminal (there are few sources and many services); --json has rows = sources."""
    if len(m.rows) * len(m.columns) > MATRIX_CELLS_SHOWN or len(m.rows) > 14:
        table = Table(title="reachability by source (too many cells to print: use --from/--to "
                            "or --json for the cells)", show_edge=False)
        for col in ("source", "hosts", "allow", "some", "deny"):
            table.add_column(col, justify="right" if col != "source" else "left")
        for r, cells in zip(m.rows, m.cells):
            states = Counter(m.state(c) for c in cells)
            table.add_row(f"{r.kind} {r.name}", str(len(r.hosts)), str(states["allow"]),
                          str(states["partial"]), str(states["deny"]))
        console.print(table)
        return
    table = Table(title="reachability: ✔ allowed  ✘ denied  n/m some hosts of the zone", show_edge=False)
    table.add_column("destination service")
    for r in m.rows:
        table.add_column(r.name + (f" ({len(r.hosts)})" if r.kind == "zone" else ""), justify="center")
    for k, col in enumerate(m.columns):
        cells = []
        for row in m.cells:
            c = row[k]
            state = m.state(c)
            cells.append(CELL.get(state) or f"[yellow]{c[0]}/{c[1]}[/]")
        label = f"{col.node} {'icmp' if col.proto == 'icmp' else f'{col.service} {col.proto}/{col.port}'}"
        table.add_row(label, *cells)
    console.print(table)


@topo.command("paths")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@click.option("--from", "sources", multiple=True, metavar="NODE",
              help="entry point (repeatable; default: the topology's entry_points)")
@click.option("--to", "targets", multiple=True, metavar="NODE",
              help="crown jewel (repeatable; default: the topology's crown_jewels)")
@click.option("--max", "k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="how many paths to list")
@down_option
@click.option("--json", "as_json", is_flag=True, help="print the paths as JSON")
def topo_paths(file, sources, targets, k, down, as_json):
    """Attack paths from entry points to crown jewels over reachable services, best first.

    Every service a host can reach (routes + firewall rules) is an edge; weights: login 1,
    http 2, modbus 2, dns 3. Ranked by total weight, then hops. --down LINK,...: in that
    link state.
    """
    from cyberrange.model.paths import attack_paths

    t, down = _load_in_state(file, down)
    paths = attack_paths(t, sources, targets, k)
    if as_json:
        click.echo(json.dumps({"file": file, "topology": t.name, "down": down,
                               "paths": [p.to_json() for p in paths]}, indent=2))
        return
    _say_down(down)
    if not paths:
        console.print("[bold green]no attack path[/]: no chain of reachable services joins them")
        return
    table = Table(title="attack paths (weight: login 1, http 2, modbus 2, dns 3)", show_edge=False)
    for col in ("rank", "weight", "hops", "path"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for rank, p in enumerate(paths, 1):
        table.add_row(str(rank), str(p.weight), str(len(p.hops)), p.text())
    console.print(table)


@topo.command("outages")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@down_option
@json_option()
def topo_outages(file, down, as_json):
    """Which paths exist under which outages: for each single link outage (and each zone that
    joins routers), or for the one state --down LINK,..., the zone pairs that lose their path,
    the ones whose path moves (old -> new), and the mission threads that break.

    Static routes do not fail over (a route across a down link is withdrawn); OSPF topologies
    reroute by interface cost. Exit 0; 2 on bad input (an unknown link name).
    """
    from cyberrange.model.loader import load_topology
    from cyberrange.model.outages import outages, report_json
    from cyberrange.model.routing import down_names, routing_protocol

    t = load_topology(file)
    states = [down_names(t, down)] if down is not None else None
    if states == [frozenset()]:
        from cyberrange.errors import UserError
        raise UserError("--down: give at least one link or zone name")
    results = outages(t, states)
    if as_json:
        return echo_json({"file": file, **report_json(t, results)})
    from cyberrange.cli._console import make_console

    out = make_console()
    protocol = routing_protocol(t)
    out.print(f"[bold]{t.name}[/]: {protocol} routing "
              + ("(reroutes by OSPF cost)" if protocol == "ospf" else "(static routes: no failover)")
              + f", {len(results)} outage state{'s' * (len(results) != 1)}")
    _print_outage_summary(out, results)
    _print_outage_paths(out, results)


def _pairs(changes) -> list[tuple[str, object]]:
    """``A ⇄ B`` when both directions changed alike, else ``A → B``; with one change each."""
    by = {(c.src, c.dst): c for c in changes}
    out, seen = [], set()
    for (a, b), c in by.items():
        if (a, b) in seen:
            continue
        twin = by.get((b, a))
        if twin is not None and (twin.after.there is None) == (c.after.there is None):
            seen.add((b, a))
            out.append((f"{a} ⇄ {b}", c))
        else:
            out.append((f"{a} → {b}", c))
    return out


def _print_outage_summary(out, results) -> None:
    table = Table(title="outages: zone pairs (both ways = 1) and mission threads",
                  show_edge=False)
    for col in ("down", "unreachable", "rerouted", "missions broken (pairs lost/allowed)"):
        table.add_column(col, justify="right" if col in ("unreachable", "rerouted") else "left")
    for o in results:
        lost, moved = len(_pairs(o.lost)), len(_pairs(o.rerouted))
        missions = ", ".join(f"{m.mission} {len(m.pairs)}/{m.of}" for m in o.missions)
        table.add_row(", ".join(o.down), f"[red]{lost}[/]" if lost else "0",
                      f"[yellow]{moved}[/]" if moved else "0",
                      f"[red]{missions}[/]" if missions else "[green]none[/]")
    out.print(table)


def _print_outage_paths(out, results) -> None:
    rows = [(o, label, c, c in o.lost) for o in results
            for label, c in _pairs(o.lost) + _pairs(o.rerouted)]
    if not rows:
        out.print("[bold green]no outage cuts or moves a path between two zones[/]")
        return
    table = Table(title="paths that break or move: the links crossed, request direction "
                        "(--json: routers, reasons, both directions)", show_edge=False)
    for col in ("down", "zones", "before", "after"):
        table.add_column(col)
    for o, label, c, lost in rows:
        before = c.before.there.link_text() if c.before.there else "-"
        after = f"[red]✘ {c.after.stop}[/]" if lost else f"[yellow]{c.after.there.link_text()}[/]"
        table.add_row(", ".join(o.down), label, before, after)
    out.print(table)


@topo.command("show")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@json_option()
def topo_show(file, as_json):
    """A tree of FILE: zones, nodes (role, address, services, software), routers, links;
    ★ crown jewels, ⚑ entry points, 👁 sensors."""
    from cyberrange.model.loader import load_topology
    from cyberrange.report.picture import topology_tree

    t = load_topology(file)
    if as_json:
        return echo_json({
            "file": file, "topology": t.name, "classification": t.classification,
            "zones": [{"name": z.name, "subnet": str(z.subnet), "classification":
                       z.classification, "link": bool(z.p2p),
                       "members": [n.name for n, _ in t.members(z.name)]}
                      for z in t.zones.values()],
            "nodes": {name: n.kind for name, n in t.nodes.items()},
            "routers": [{"name": r.name, "kind": r.kind, "interfaces": len(r.interfaces),
                         "routes": len(r.routes), "rules": len(r.rules)} for r in t.routers],
            "sensors": [{"name": s.name, "zone": s.zone} for s in t.sensors.values()]})
    console.print(topology_tree(t))


@topo.command("graph")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="picture to write: .svg or .png")
@json_option()
def topo_graph(file, out, as_json):
    """Draw FILE: nodes coloured by zone, outlined by classification; routers, firewalls,
    sensors, crown jewels and entry points marked; links labelled with their profile."""
    from cyberrange.model.loader import load_topology
    from cyberrange.report.picture import draw

    path = draw(load_topology(file), out)
    if as_json:
        return echo_json({"wrote": str(path)})
    console.print(f"[bold green]wrote[/] {path}")


@topo.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="topology file to write (our YAML, format v2)")
@json_option()
def topo_import(file, out, as_json):
    """Import a containerlab topology (FILE.clab.yml) into our format, and check it loads.

    What the file says that the twin does not carry is listed in one warning on stderr;
    docs/containerlab-import.md has the mapping."""
    from pathlib import Path

    from rich.markup import escape

    from cyberrange.model.clab import convert_clab
    from cyberrange.model.loader import load_topology

    result = convert_clab(file)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(result.text)
    t = load_topology(out)
    kinds = Counter(n.kind for n in t.nodes.values())
    kinds.update(zone=len(t.zones) - len(t.links), link=len(t.links))
    if as_json:
        warning = result.warning(file)
        if warning:
            click.echo(f"warning: {warning}", err=True)
        return echo_json({"wrote": str(out), "topology": t.name,
                          "counts": {k: kinds[k] for k in ("zone", "link", "host", "router",
                                                           "firewall")},
                          "notes": list(result.notes), "not_imported": warning or None})
    console.print(f"[bold green]wrote[/] {out}: " + ", ".join(
        f"{kinds[k]} {k}{'s' * (kinds[k] != 1)}" for k in ("zone", "link", "host", "router", "firewall")
        if kinds[k] or k == "zone"))
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}", soft_wrap=True)
    if result.warning(file):
        click.echo(f"warning: {result.warning(file)}", err=True)


@topo.command("export")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@click.option("--graphml", "graphml", required=True, type=click.Path(dir_okay=False),
              help="GraphML file to write (nodes, zones, interfaces with profiles)")
@json_option()
def topo_export(file, graphml, as_json):
    """Export FILE's model as GraphML (for yEd, Gephi, networkx, ...)."""
    from cyberrange.model.interop import export_graphml
    from cyberrange.model.loader import load_topology

    path = export_graphml(load_topology(file), graphml)
    if as_json:
        return echo_json({"wrote": str(path)})
    console.print(f"[bold green]wrote[/] {path}")


COMMANDS = [topo]
