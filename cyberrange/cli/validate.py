"""``cyberrange validate TOPOLOGY CHANGE``: rehearse a change set (docs/patch-validation.md),
and ``cyberrange change check TOPOLOGY CHANGE``: load and lint the patched topology."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cyberrange.cli._params import (
    CHANGE,
    DETECTORS,
    PLAYBOOK,
    TOPOLOGY,
    Number,
    allow_outside_option,
    link_emulation_option,
)
from cyberrange.errors import UserError


@click.command("validate")
@allow_outside_option
@link_emulation_option
@click.argument("topology", type=TOPOLOGY)
@click.argument("changes", metavar="CHANGE...", nargs=-1, required=True, type=CHANGE)
@click.option("--static-only", is_flag=True,
              help="only the static checks (no twin, no root)")
@click.option("--playbook", "playbooks", multiple=True, type=PLAYBOOK,
              help="live: run this playbook on the baseline and the patched twin (repeatable; "
                   "needs root); without any, only the static checks run")
@click.option("--seed", type=int, default=None,
              help="live: the seed of every twin's run (benign traffic, jitter, links)")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="live: where the runs of the twins go")
@click.option("--detectors", "detectors_dir", **DETECTORS, help="the detectors folder")
@click.option("--warmup", default=10.0, show_default=True, type=Number(0, 3600, unit="s"),
              help="live: seconds of benign traffic before each playbook")
@click.option("--cooldown", default=2.0, show_default=True, type=Number(0, 3600, unit="s"),
              help="live: seconds of benign traffic after each playbook")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1, 8),
              help="live: twins running at once (each needs about one core)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--markdown", "md", type=click.Path(dir_okay=False),
              help="write a Markdown report to this file")
@click.option("--junit", type=click.Path(dir_okay=False),
              help="write JUnit XML (one test suite per change, one test case per check)")
@click.option("--paths", "k", default=5, show_default=True, type=click.IntRange(1, 50),
              help="how many best attack paths to compare")
def validate_cmd(topology, changes, static_only, playbooks, seed, runs_dir, detectors_dir,
                 warmup, cooldown, jobs, as_json, md, junit, k):
    """Apply each CHANGE (a change set) to TOPOLOGY and compare before and after: reachability
    cells opened and closed, attack paths to the crown jewels, new lint findings, mission
    threads, moved services, the change's own expectations.

    With --playbook (and root), the baseline twin and each change's patched twin then run each
    playbook with the same seeded benign traffic and mission probes, and steps, availability,
    service health and detection are compared. Several changes share one baseline run per
    playbook. Exit 0 when every verdict is PASS, 1 when one is FAIL, 2 on bad input.
    """
    from cyberrange.errors import CheckFailed
    from cyberrange.patch.changeset import load_change
    from cyberrange.patch.static import static_validate
    from cyberrange.patch.verdict import junit_many, markdown, print_terminal, to_json

    sets = [load_change(c) for c in changes]      # every change set checked first
    names = [cs.name for cs in sets]
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{changes[names.index(dup)]}: two change sets are named '{dup}' "
                        "(their run folders and reports would collide)")
    results = [static_validate(topology, cs, k=k, detectors_dir=detectors_dir) for cs in sets]
    lives = [None] * len(sets)
    if playbooks and not static_only:
        opts = {"seed": seed, "runs_dir": runs_dir, "detectors_dir": detectors_dir,
                "warmup_s": warmup, "cooldown_s": cooldown}
        lives = _live(topology, sets, playbooks, opts, jobs, as_json)
    pairs = list(zip(results, lives))
    if md:
        Path(md).write_text("\n".join(markdown(r, lv) for r, lv in pairs))
    if junit:
        Path(junit).write_text(junit_many(pairs))
    if as_json:
        out = [to_json(r, lv) for r, lv in pairs]
        if len(out) > 1:
            out = {"topology": results[0].topology,
                   "verdict": "FAIL" if any(o["verdict"] == "FAIL" for o in out) else "PASS",
                   "changes": out}
        else:
            out = out[0]
        click.echo(json.dumps(out, indent=2))
    else:
        for r, lv in pairs:
            print_terminal(r, lv)
    fails = [f"{r.change.name}: FAIL ({', '.join(failed)})" for r, lv in pairs
             if (failed := [c.name for c in r.checks + (lv.checks if lv else [])
                            if c.status == "fail"])]
    if fails:
        raise CheckFailed("; ".join(fails))


def _live(topology, sets, playbooks, opts, jobs, quiet):
    """The baseline twin once per playbook, each change's patched twin once per playbook."""
    import os

    from cyberrange.attack.playbook import load_playbook
    from cyberrange.drill import DrillOptions
    from cyberrange.errors import EnvironmentProblem
    from cyberrange.model.loader import load_topology
    from cyberrange.patch.live import live_validate_many
    from cyberrange.ui import NullUI
    topo = load_topology(topology)
    for pb in playbooks:              # every input checked before the first twin
        load_playbook(pb, topo)
    for cs in sets:
        load_topology(topology, change=cs)
    if os.geteuid() != 0:
        raise EnvironmentProblem("live validation builds twins and needs root; run it as "
                                 "root, or add --static-only")
    ui = NullUI() if quiet else _Progress()
    name = sets[0].name if len(sets) == 1 else f"{topo.name}-{len(sets)}-changes"
    workdir = Path(opts["runs_dir"]) / f"validate-{name}"
    return live_validate_many(topology, sets, list(playbooks), DrillOptions(**opts), workdir,
                              jobs, ui)


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
@click.argument("topology", type=TOPOLOGY)
@click.argument("change_file", metavar="CHANGE", type=CHANGE)
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
