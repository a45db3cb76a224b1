"""``cyberrange validate TOPOLOGY CHANGE``: rehearse a change set (docs/patch-validation.md),
and ``cyberrange change check TOPOLOGY CHANGE``: load and lint the patched topology."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cyberrange.cli._params import allow_outside_option


@click.command("validate")
@allow_outside_option
@click.argument("topology", type=click.Path(dir_okay=False))
@click.argument("change", type=click.Path(dir_okay=False))
@click.option("--static-only", is_flag=True,
              help="only the static checks (no twin, no root); the default until live "
                   "validation is available")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--markdown", "md", type=click.Path(dir_okay=False),
              help="write a Markdown report to this file")
@click.option("--junit", type=click.Path(dir_okay=False),
              help="write JUnit XML (one test case per check) to this file")
@click.option("--paths", "k", default=5, show_default=True, type=click.IntRange(1, 50),
              help="how many best attack paths to compare")
def validate_cmd(topology, change, static_only, as_json, md, junit, k):
    """Apply CHANGE (a change set) to TOPOLOGY and compare before and after: reachability
    cells opened and closed, attack paths to the crown jewels, new lint findings, mission
    threads, moved services, the change's own expectations.

    Exit 0 when the verdict is PASS, 1 when it is FAIL, 2 on bad input.
    """
    from cyberrange.errors import CheckFailed
    from cyberrange.patch.changeset import load_change
    from cyberrange.patch.static import static_validate
    from cyberrange.patch.verdict import junit as junit_xml
    from cyberrange.patch.verdict import markdown, print_terminal, to_json

    cs = load_change(change)
    res = static_validate(topology, cs, k=k)
    if md:
        Path(md).write_text(markdown(res))
    if junit:
        Path(junit).write_text(junit_xml(res))
    if as_json:
        click.echo(json.dumps(to_json(res), indent=2))
    else:
        print_terminal(res)
    if res.verdict == "FAIL":
        fails = [c.name for c in res.checks if c.status == "fail"]
        raise CheckFailed(f"{cs.name}: FAIL ({', '.join(fails)})")


@click.group("change")
def change():
    """Change sets (docs/change-format.md): check one against its topology."""


@change.command("check")
@allow_outside_option
@click.argument("topology", type=click.Path(dir_okay=False))
@click.argument("change_file", metavar="CHANGE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON")
def change_check(topology, change_file, as_json):
    """Apply CHANGE to TOPOLOGY and check the patched result as `topo check` does (exit 1
    when a lint finding is an error, 2 on bad input)."""
    from cyberrange.cli.topo import _print_findings
    from cyberrange.errors import CheckFailed
    from cyberrange.model.lint import lint
    from cyberrange.model.loader import load_topology
    from cyberrange.patch.changeset import load_change

    cs = load_change(change_file)
    t = load_topology(topology, change=cs)
    findings = lint(t)
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        click.echo(json.dumps({"file": topology, "change": change_file, "topology": t.name,
                               "operations": cs.summary(), "ok": not errors,
                               "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        click.echo(f"ok {topology} + {change_file}: topology {t.name} patched by "
                   f"{len(cs.ops)} operation(s), {len(t.nodes)} nodes")
        _print_findings(findings)
    if errors:
        raise CheckFailed(f"{topology} + {change_file}: {len(errors)} error finding"
                          f"{'s' * (len(errors) != 1)} ({', '.join(sorted({f.code for f in errors}))})")


COMMANDS = [validate_cmd, change]
