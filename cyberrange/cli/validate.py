"""``cyberrange validate TOPOLOGY CHANGE``: rehearse a change set (docs/patch-validation.md),
and ``cyberrange change check TOPOLOGY CHANGE``: load and lint the patched topology."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cyberrange.cli._params import Number, allow_outside_option


@click.command("validate")
@allow_outside_option
@click.argument("topology", type=click.Path(dir_okay=False))
@click.argument("change", type=click.Path(dir_okay=False))
@click.option("--static-only", is_flag=True,
              help="only the static checks (no twin, no root)")
@click.option("--playbook", "playbooks", multiple=True, type=click.Path(dir_okay=False),
              help="live: run this playbook on the baseline and the patched twin (repeatable; "
                   "needs root); without any, only the static checks run")
@click.option("--seed", type=int, default=None,
              help="live: benign traffic seed for both twins (default: the topology's)")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="live: where the runs of both twins go")
@click.option("--detectors", "detectors_dir", default="detectors", show_default=True,
              type=click.Path(file_okay=False), help="the detectors folder")
@click.option("--warmup", default=10.0, show_default=True, type=Number(0, 3600, unit="s"),
              help="live: seconds of benign traffic before each playbook")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--markdown", "md", type=click.Path(dir_okay=False),
              help="write a Markdown report to this file")
@click.option("--junit", type=click.Path(dir_okay=False),
              help="write JUnit XML (one test case per check) to this file")
@click.option("--paths", "k", default=5, show_default=True, type=click.IntRange(1, 50),
              help="how many best attack paths to compare")
def validate_cmd(topology, change, static_only, playbooks, seed, runs_dir, detectors_dir, warmup,
                 as_json, md, junit, k):
    """Apply CHANGE (a change set) to TOPOLOGY and compare before and after: reachability
    cells opened and closed, attack paths to the crown jewels, new lint findings, mission
    threads, moved services, the change's own expectations.

    With --playbook (and root), the baseline and the patched twin then run each playbook with
    the same seeded benign traffic and mission probes, and steps, availability, service health
    and detection are compared. Exit 0 when the verdict is PASS, 1 when it is FAIL, 2 on bad
    input.
    """
    from cyberrange.errors import CheckFailed
    from cyberrange.patch.changeset import load_change
    from cyberrange.patch.static import static_validate
    from cyberrange.patch.verdict import junit as junit_xml
    from cyberrange.patch.verdict import markdown, print_terminal, to_json

    cs = load_change(change)
    res = static_validate(topology, cs, k=k, detectors_dir=detectors_dir)
    live = None
    if playbooks and not static_only:
        live = _live(topology, cs, playbooks, seed, runs_dir, detectors_dir, warmup, as_json)
    if md:
        Path(md).write_text(markdown(res, live))
    if junit:
        Path(junit).write_text(junit_xml(res, live))
    if as_json:
        click.echo(json.dumps(to_json(res, live), indent=2))
    else:
        print_terminal(res, live)
    fails = [c.name for c in res.checks + (live.checks if live else []) if c.status == "fail"]
    if fails:
        raise CheckFailed(f"{cs.name}: FAIL ({', '.join(fails)})")


def _live(topology, cs, playbooks, seed, runs_dir, detectors_dir, warmup, quiet):
    """Both twins, one after the other, under the same options."""
    import os

    from cyberrange.attack.playbook import load_playbook
    from cyberrange.drill import DrillOptions
    from cyberrange.errors import EnvironmentProblem
    from cyberrange.model.loader import load_topology
    from cyberrange.patch.live import live_validate
    from cyberrange.ui import NullUI
    topo = load_topology(topology)
    for pb in playbooks:              # every input checked before the first twin
        load_playbook(pb, topo)
    if os.geteuid() != 0:
        raise EnvironmentProblem("live validation builds two twins and needs root; run it as "
                                 "root, or add --static-only")
    opts = DrillOptions(detectors_dir=detectors_dir, runs_dir=runs_dir, seed=seed,
                        warmup_s=warmup)
    ui = NullUI() if quiet else _Progress()
    workdir = Path(runs_dir) / f"validate-{cs.name}"
    return live_validate(topology, cs, list(playbooks), opts, workdir, ui)


class _Progress:
    """One line on stderr per run and phase of the two twins."""

    def run_started(self, run, topo, pb):
        click.echo(f"run {run.id}: topology {topo.name} ({topo.file}), playbook "
                   f"{pb.name if pb else '-'}", err=True)

    def phase(self, name: str, text: str):
        click.echo(f"  {name}: {text}", err=True)

    def attack_event(self, kind: str, payload):
        if kind == "step_end":
            click.echo(f"    step {payload.get('step_id')}: {payload.get('outcome')}", err=True)

    def warn(self, msg: str):
        click.echo(f"warning: {msg}", err=True)

    def __getattr__(self, name):          # the other progress callbacks: nothing to say
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: None


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
