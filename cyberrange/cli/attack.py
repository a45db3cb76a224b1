"""``cyberrange attack list|show|run`` and ``playbook check`` (``attack validate``: deprecated):
the technique catalog and playbooks.

Thin commands: loading and checking live in ``cyberrange.attack.playbook`` (and
``runner.check_playbook``), running in ``cyberrange.attack.runner``. Bad input raises UserError
(one line, exit 2).
"""
from __future__ import annotations

from collections import Counter

import click
from rich import box
from rich.table import Table

from cyberrange.attack.catalog import TECHNIQUES
from cyberrange.attack.spec import type_text
from cyberrange.cli._params import (
    PLAYBOOK,
    SEED,
    TOPOLOGY,
    allow_outside_option,
    deprecated_alias,
    echo_json,
    json_option,
    link_emulation_option,
)
from cyberrange.errors import UserError

DOCS = "docs/techniques.md"
OUTCOME_STYLE = {"succeeded": "green", "failed": "yellow", "blocked": "magenta",
                 "skipped": "dim", "error": "red", "stopped": "cyan"}


def _anchor(tech) -> str:
    """The GitHub-style anchor of the technique's heading in docs/techniques.md."""
    import re
    title = f"{tech.id} — {tech.name.split(':')[0]}"
    path = __import__("pathlib").Path(__file__).resolve().parents[2] / DOCS
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(f"## {tech.id} "):
                title = line[3:]
                break
    slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    return f"{DOCS}#{slug}"


@click.group()
def attack():
    """Attack techniques and playbooks: list, show, run (check a playbook: playbook check)."""


@attack.command("list")
@json_option()
def attack_list(as_json):
    """List the techniques with their ATT&CK ids, family, tactic, parameters and facts."""
    from cyberrange.cli._console import make_console
    if as_json:
        return echo_json([{"id": t.id, "name": t.name, "family": t.family, "tactic": t.tactic,
                           "params": {k: p.default for k, p in t.params.items()},
                           "produces": list(t.produces)} for t in TECHNIQUES.values()])
    t = Table(box=box.SIMPLE_HEAVY)
    for c in ("technique", "name", "family", "tactic", "parameters (default)", "produces"):
        t.add_column(c)
    for tech in TECHNIQUES.values():
        params = "\n".join(f"{k} ({p.default!r})" for k, p in tech.params.items())
        t.add_row(tech.id, tech.name, tech.family, tech.tactic, params,
                  ", ".join(f"#{{step.{f}}}" for f in tech.produces))
    make_console().print(t)


@attack.command("show")
@click.argument("technique")
@json_option()
def attack_show(technique, as_json):
    """Show one TECHNIQUE: its parameters (type, default, help), targets and facts."""
    from cyberrange.model.yamlsrc import did_you_mean
    tech = TECHNIQUES.get(technique)
    if tech is None:
        raise UserError(f"unknown technique '{technique}'{did_you_mean(technique, TECHNIQUES)} "
                        f"(known: {', '.join(TECHNIQUES)})")
    from cyberrange.cli._console import make_console
    if as_json:
        return echo_json({"id": tech.id, "name": tech.name, "family": tech.family,
                          "tactic": tech.tactic, "target_kind": tech.target_kind,
                          "params": {k: {"type": type_text(p.type), "default": p.default,
                                         "help": p.help}
                                     for k, p in tech.params.items()},
                          "produces": list(tech.produces)})
    console = make_console()
    console.print(f"[bold]{tech.id}[/] {tech.name}")
    console.print(f"family: {tech.family}   tactic: {tech.tactic}   "
                  f"targets: {'ip:port services or hosts' if tech.target_kind == 'service' else 'hosts'}")
    t = Table(box=box.SIMPLE_HEAVY, title="parameters", title_justify="left")
    for c in ("name", "type", "default", "help"):
        t.add_column(c)
    for name, p in tech.params.items():
        t.add_row(name, type_text(p.type), repr(p.default), p.help)
    if not tech.params:
        t.add_row("-", "", "", "no parameters")
    console.print(t)
    produces = ", ".join(f"#{{step.{f}}}" for f in tech.produces) or "nothing"
    console.print(f"produces: {produces}")
    console.print("timing: rate -> params.rate" + (" (yes)" if "rate" in tech.params else
                                                   " (not accepted)")
                  + ", duration -> params.duration" + (" (yes)" if "duration" in tech.params
                                                       else " (not accepted)"))
    console.print(f"docs: {_anchor(tech)}")


def _timing_text(step) -> str:
    t = step.timing
    parts = []
    if t.at is not None:
        parts.append(f"at {t.at:g}s")
    elif t.delay:
        parts.append(f"+{t.delay:g}s")
    if t.repeat > 1:
        parts.append(f"x{t.repeat} every {t.every:g}s")
    if t.jitter:
        parts.append(f"±{t.jitter:.0%}")
    if t.duration is not None:
        parts.append(f"for {t.duration:g}s")
    if t.rate is not None:
        parts.append(f"{t.rate:g}/s")
    if step.parallel:
        parts.append("parallel")
    return " ".join(parts) or "-"


@attack.command("validate")
@allow_outside_option
@click.argument("playbook", type=PLAYBOOK)
@click.option("--topology", "topology_file", type=TOPOLOGY, default=None,
              help="Topology file to cross-check actors and targets against (and count them).")
@json_option()
def attack_validate(playbook, topology_file, as_json):
    """Load PLAYBOOK, check it (against --topology) and summarise its steps. Exit 2 on error.

    ``cyberrange attack validate`` is the deprecated name of this command."""
    from cyberrange.attack.runner import check_playbook, static_target_count
    pb, topo = check_playbook(playbook, topology_file)
    if as_json:
        return echo_json({"ok": True, "file": playbook, "playbook": pb.name,
                          "version": pb.version, "topology": topo.name if topo else None,
                          "seed": pb.seed, "max_rate": pb.max_rate,
                          "steps": [{"id": s.id, "technique": s.technique, "actor": s.actor,
                                     "targets": list(s.targets)} for s in pb.steps]})
    from cyberrange.cli._console import make_console
    console = make_console()
    against = f" against topology {topo.name}" if topo else ""
    console.print(f"[bold green]ok[/] {playbook}: playbook [bold]{pb.name}[/] (version "
                  f"{pb.version}), {len(pb.steps)} steps{against}; seed {pb.seed}, rate cap "
                  f"{pb.max_rate:g} packets/s")
    t = Table(show_edge=False)
    for c in ("step", "technique", "actor", "targets", "static targets", "timing", "needs"):
        t.add_column(c)
    for s in pb.steps:
        count = "-"
        if topo is not None:
            n = static_target_count(s, topo)
            count = "from facts" if n is None else str(n) + (
                " + facts" if any("#{" in x for x in s.targets) else "")
        needs = ", ".join(s.requires + [c.fact for c in s.when]) or "-"
        t.add_row(s.id, s.technique,
                  s.actor + (f" ({s.actor_from})" if s.actor_ref else ""),
                  ", ".join(s.targets), count, _timing_text(s), needs)
    console.print(t)


def _attack_ui(console):
    """The drill's live display, with colours for every step outcome and the repeat index."""
    from cyberrange.cli.drill import RichUI

    class AttackUI(RichUI):
        def run_started(self, run, topo, pb):
            super().run_started(run, topo, pb)
            executions = sum(s.timing.repeat for s in pb.steps)
            self.progress.update(self.task, total=3 + executions)

        def attack_event(self, kind, payload):
            from cyberrange.report.terminal import step_end_suffix
            if kind != "step_end":
                return super().attack_event(kind, payload)
            r = payload
            colour = OUTCOME_STYLE.get(r.get("outcome"), "red")
            rep = f"#{r['repeat']} " if r.get("repeat") else ""
            facts = r.get("facts") or {}
            fact_txt = ", ".join(f"{k}: {len(v) if isinstance(v, list) else v}"
                                 for k, v in facts.items())
            self.console.print(
                f"  [{colour}]●[/] {r.get('step_id')} {rep}{r.get('technique')} "
                f"[{colour}]{r.get('outcome')}[/] from {r.get('actor') or '-'}: "
                f"{r.get('packets_sent', 0)} packets to {len(r.get('targets') or [])} targets in "
                f"{r.get('end', 0) - r.get('start', 0):.1f} s"
                + (f"  ({fact_txt})" if fact_txt else "")
                + step_end_suffix(r))
            self.progress.advance(self.task)

    return AttackUI(console)


@attack.command("run")
@allow_outside_option
@link_emulation_option
@click.argument("refs", nargs=-1, required=True, metavar="[TOPOLOGY] PLAYBOOK")
@click.option("--topology", "topology_file", type=TOPOLOGY, default=None,
              help="With --twin: the file that twin was built from (optional). Without --twin "
                   "deprecated: give TOPOLOGY first, as `drill run` does.")
@click.option("--twin", "twin_ref", default=None, metavar="REF",
              help="Run in this twin, already up (`up --detach`, a drill): prefix, run id or "
                   "run folder. The twin is left up; the ledger goes to a new run folder.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders go.")
@click.option("--seed", type=SEED, default=None, help="Jitter seed (default: the playbook's).")
@json_option("Print the run and its ledger records as JSON on stdout (progress on stderr).")
def attack_run(refs, topology_file, twin_ref, runs_dir, seed, as_json):
    """Build the twin of TOPOLOGY, run PLAYBOOK in it, write the ledger, tear the twin down;
    or, with --twin (no TOPOLOGY), run PLAYBOOK in a twin that is already up and leave it up.

    Needs root. No benign traffic and no detection (that is `cyberrange drill run`)."""
    from cyberrange.cli._console import make_console
    from cyberrange.drill import run_attack
    topology_file, playbook = _topology_and_playbook(refs, topology_file, twin_ref)
    console = make_console(stderr=as_json)
    with _attack_ui(console) as ui:
        run, records = run_attack(topology_file, playbook, runs_dir, ui, seed, twin=twin_ref)
    t = Table(box=box.SIMPLE_HEAVY, title=f"run {run.id}", title_justify="left")
    for c in ("step", "technique", "executions", "outcomes", "packets", "bytes"):
        t.add_column(c)
    by_step: dict[str, list[dict]] = {}
    for r in records:
        by_step.setdefault(r["step_id"], []).append(r)
    for step_id, recs in by_step.items():
        outcomes = Counter(r["outcome"] for r in recs)
        text = ", ".join(f"[{OUTCOME_STYLE.get(o, 'red')}]{o}[/]" + (f" x{n}" if n > 1 else "")
                         for o, n in outcomes.items())
        t.add_row(step_id, recs[0]["technique"], str(len(recs)), text,
                  str(sum(r["packets_sent"] for r in recs)),
                  str(sum(r["bytes_sent"] for r in recs)))
    console.print(t)
    console.print(f"ledger: {run.ledger_path}   manifest: {run.manifest_path}")
    if as_json:
        echo_json({"run_id": run.id, "run_dir": str(run.dir), "status": run.manifest.get(
            "status"), "twin": run.manifest.get("twin"), "ledger": records})
    if twin_ref is not None:
        t = run.manifest["twin"]
        console.print(f"twin {t['prefix']} is still up (its captures and action log: "
                      f"{t['run_dir']}); `cyberrange down {t['prefix']}` removes it")
    if run.manifest.get("status") != "done":
        from cyberrange.errors import CheckFailed
        raise CheckFailed(f"run {run.id}: {run.manifest.get('error') or run.manifest.get('status')}")


def _topology_and_playbook(refs, topology_file, twin_ref):
    """``attack run TOPOLOGY PLAYBOOK`` (as ``drill run``), ``attack run PLAYBOOK --twin REF``,
    and the old ``attack run PLAYBOOK --topology TOPOLOGY`` (with a deprecation line)."""
    from cyberrange.cli._params import deprecated
    if len(refs) > 2:
        raise click.UsageError(f"expected [TOPOLOGY] PLAYBOOK, got {len(refs)} arguments")
    if len(refs) == 2:
        if topology_file is not None:
            raise UserError("give the topology once: as TOPOLOGY or as --topology, not both")
        return TOPOLOGY.convert(refs[0], None, None), PLAYBOOK.convert(refs[1], None, None)
    if topology_file is None and twin_ref is None:
        raise UserError("attack run needs --topology FILE, or TOPOLOGY before PLAYBOOK (build "
                        "a twin for it), or --twin REF (a twin that is up: `cyberrange status` "
                        "lists them)")
    if topology_file is not None and twin_ref is None:
        deprecated("attack run PLAYBOOK --topology TOPOLOGY", "attack run TOPOLOGY PLAYBOOK")
    return topology_file, PLAYBOOK.convert(refs[0], None, None)


@click.group()
def playbook():
    """Check attack playbook files (`attack validate` is the deprecated name)."""


playbook.add_command(attack_validate, name="check")
attack.add_command(deprecated_alias(attack_validate, "attack validate", "playbook check"),
                   name="validate")      # one validation verb per file kind: `KIND check`

COMMANDS = [attack, playbook]
