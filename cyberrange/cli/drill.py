"""``cyberrange drill run|score|report|verify``: red/blue drills from the terminal."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cyberrange.cli._console import make_console
from cyberrange.cli._params import (
    DETECTORS,
    INTENSITY,
    PLAYBOOK,
    POSITIVE_SECONDS,
    RESPONSE,
    SECONDS,
    SEED,
    TOPOLOGY,
    allow_outside_option,
    echo_json,
    json_option,
    link_emulation_option,
)
from cyberrange.drill import DrillOptions, analyse, run_drill
from cyberrange.errors import CheckFailed, UserError
from cyberrange.report.availability import print_availability
from cyberrange.report.blue import print_blue
from cyberrange.report.terminal import (
    OUTCOME_COLOURS,
    link_change_line,
    links_not_up_line,
    print_scorecard,
    step_end_suffix,
)
from cyberrange.run import Run

PHASES = ["twin", "benign", "attack", "cooldown", "teardown", "telemetry", "detect", "score"]


class RichUI:
    """Live display of a drill: one bar over the phases, one line per finished attack step."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                 BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = None
        self.done: set[str] = set()
        self.steps = 0
        self.run = None
        self.links: dict[str, dict] = {}     # link -> its last change (DDIL)
        self.link_task = None

    def __enter__(self):
        return self                     # the display starts with the run: bad input prints
                                        # its one line and nothing else

    def __exit__(self, *exc):
        if self.run is not None:
            self.progress.stop()

    def run_started(self, run, topo, pb):
        self.run = run
        self.progress.start()
        self.steps = len(pb.steps) if pb else 0
        self.task = self.progress.add_task("starting", total=len(PHASES) + self.steps)
        self.console.print(f"[cyan]run[/] {run.id}  [dim]{run.dir}[/]")
        what = f"[cyan]playbook[/] {pb.name}: {len(pb.steps)} steps" if pb else \
            "[cyan]benign only[/] (no playbook)"
        self.console.print(f"[cyan]topology[/] {topo.name} ({topo.classification}): "
                           f"{len(topo.nodes)} nodes, {len(topo.zones)} zones, "
                           f"{len(topo.sensors)} sensors   {what}")

    def phase(self, name, text):
        if self.task is None:
            return
        if name not in self.done and name in PHASES:
            self.done.add(name)
            self.progress.advance(self.task)
        self.progress.update(self.task, description=text)

    def attack_event(self, kind, payload):
        if kind == "step_start":
            step = payload if isinstance(payload, dict) else {}
            self.progress.update(self.task, description=f"attack: {step.get('step_id', '')} "
                                 f"{step.get('technique', '')}")
        elif kind == "step_end":
            r = payload
            colour = OUTCOME_COLOURS.get(r.get("outcome"), "red")
            facts = r.get("facts") or {}
            fact_txt = ", ".join(f"{k}: {len(v) if isinstance(v, list) else v}"
                                 for k, v in facts.items())
            self.console.print(
                f"  [{colour}]●[/] {r.get('step_id')} {r.get('technique')} "
                f"[{colour}]{r.get('outcome')}[/] {r.get('packets_sent', 0)} packets to "
                f"{len(r.get('targets') or [])} targets in {r.get('end', 0) - r.get('start', 0):.1f} s"
                + (f"  ({fact_txt})" if fact_txt else "") + step_end_suffix(r))
            self.progress.advance(self.task)

    def warn(self, msg):
        self.console.print(f"[yellow]warning:[/] {msg}")

    def link_change(self, rec):
        """A link changed state (schedule or jamming step): one line, and the links line
        under the progress bar says which links are not up."""
        self.links[rec.get("zone")] = rec
        self.console.print(link_change_line(rec), soft_wrap=True)
        text = links_not_up_line(self.links)
        if self.link_task is None:
            self.link_task = self.progress.add_task(text, total=None)
        self.progress.update(self.link_task, description=text)

    def live_alert(self, a):
        """Live mode: an alert the streaming detectors raised while the drill runs."""
        self.console.print(f"  [bold red]⚠ alert[/] {a.timestamp:%H:%M:%S} [bold]{a.rule_name}[/] "
                           f"{a.technique} {a.source_ip or ''}"
                           + (f" → {a.destination_ip}" if a.destination_ip else "")
                           + f"  [dim]{a.message}[/]")

    def response_action(self, rec):
        """--respond: an action the automated response took, refused or reverted."""
        t = rec.get("trigger") or {}
        what = " ".join(f"{k} {v}" for k, v in (rec.get("params") or {}).items()
                        if k in ("src", "dst", "node", "port", "firewall", "service", "id")
                        and v not in (None, "any"))
        colour = {"applied": "blue", "refused": "yellow"}.get(rec.get("result"), "red")
        after = (f", {rec['time'] - t['alert_time']:.2f} s after the {t.get('detector')} alert"
                 if t.get("alert_time") and not rec.get("reverts") else "")
        self.console.print(f"  [bold {colour}]⛨ {rec.get('actor')}[/] {rec.get('action')} {what}"
                           f" ({rec.get('id')}) [{colour}]{rec.get('result')}[/]{after}"
                           + (f"  [dim]{rec['reason']}[/]" if rec.get("reason") else ""))

    def live_progress(self, p):
        """Live mode: one line that says how many records reached the store so far."""
        text = (f"live: {p['packets']:,} packet and {p['flows']:,} flow records stored "
                f"from {p['files']} files")
        if getattr(self, "live_task", None) is None:
            self.live_task = self.progress.add_task(text, total=None)
        self.progress.update(self.live_task, description=text)
        if p.get("final"):
            self.console.print(f"[cyan]{text}[/] (the final store is rebuilt from the pcaps)")


def _es_only(value):
    """``drill run --store``: an Elasticsearch copy; the DuckDB store is the run folder's."""
    if value is not None and str(value).startswith("duckdb:"):
        raise click.BadParameter("a drill keeps its DuckDB store in its run folder "
                                 "(store.duckdb); --store adds an Elasticsearch copy: "
                                 "es://HOST:PORT, ess://HOST:PORT or a config file",
                                 param_hint="'--store'")
    return value


@click.group()
def drill():
    """Red/blue drills: run a playbook against a twin and score the detectors."""


@drill.command("run")
@allow_outside_option
@link_emulation_option
@click.argument("topology", type=TOPOLOGY)
@click.argument("playbook", type=PLAYBOOK, required=False)
@click.option("--detectors", "detectors_dir", **DETECTORS,
              help="Folder of detector YAML files.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders go.")
@click.option("--benign/--no-benign", default=True, show_default=True,
              help="Generate benign background traffic during the drill.")
@click.option("--warmup", type=SECONDS, default=10.0, show_default=True,
              help="Seconds of benign traffic before the attack; trainable detectors learn "
                   "normal behaviour from them (see --baseline).")
@click.option("--baseline", "baseline_s", type=SECONDS, default=None,
              help="Seconds from the start that trainable detectors learn from "
                   "(default: --warmup).")
@click.option("--duration", "duration_s", type=POSITIVE_SECONDS, default=60.0, show_default=True,
              help="Without a PLAYBOOK (benign-only drill): seconds of benign traffic.")
@click.option("--cooldown", type=SECONDS, default=2.0, show_default=True,
              help="Seconds after the last step before capture stops.")
@click.option("--seed", type=SEED, default=None,
              help="The run's seed: benign traffic, the playbook's jitter and the link relay's "
                   "draws (default: the topology's for traffic, the playbook's for jitter).")
@click.option("--intensity", type=INTENSITY, default=None,
              help="Scale every benign traffic rate (default: the topology's; 2 = twice as busy).")
@click.option("--live", is_flag=True,
              help="Store records during the drill: sensors rotate every --rotate seconds and "
                   "each closed pcap is ingested at once (the final store is rebuilt exactly).")
@click.option("--rotate", "rotate_s", type=POSITIVE_SECONDS, default=2.0, show_default=True,
              help="Live mode: rotate every sensor's pcap at least this often (seconds).")
@click.option("--store", "store_url", default=None, metavar="URL",
              callback=lambda ctx, param, value: _es_only(value),
              help="Also send records, alerts and ledger to Elasticsearch (es://HOST:PORT, "
                   "ess:// for TLS, or a config file); checked before the drill starts. The "
                   "DuckDB store is always the run folder's. See docs/elasticsearch.md.")
@click.option("--probe-interval", "probe_interval_s", type=SECONDS, default=2.0,
              show_default=True,
              help="Mission availability: probe every mission thread from its clients this "
                   "often on average (services 4 times less often); 0: no probes.")
@click.option("--respond", "respond", type=RESPONSE, default=None,
              metavar="FILE",
              help="Run this response playbook (responses/*.yaml) on the live alerts: blue "
                   "actions during the drill, logged in actions.jsonl. Implies --live. See "
                   "docs/response-format.md.")
@click.option("--json", "as_json", is_flag=True, help="Print the scorecard as JSON instead of tables.")
def drill_run(topology, playbook, detectors_dir, runs_dir, benign, warmup, baseline_s,
              duration_s, cooldown, seed, intensity, live, rotate_s, store_url, probe_interval_s,
              respond, as_json):
    """Build TOPOLOGY, replay PLAYBOOK, capture, detect, score, tear down.

    Without PLAYBOOK the drill is benign only (--duration seconds of background traffic): it
    measures the detectors' false alarms on a quiet network."""
    import sys

    from cyberrange.session import stale_twins_note
    console = make_console(stderr=as_json)
    opts = DrillOptions(detectors_dir=detectors_dir, runs_dir=runs_dir, benign=benign,
                        warmup_s=warmup, cooldown_s=cooldown, seed=seed,
                        live=live or respond is not None, respond=respond,
                        live_rotate_s=rotate_s, intensity=intensity, duration_s=duration_s,
                        baseline_s=baseline_s, store=store_url, probe_interval_s=probe_interval_s,
                        on_inputs_checked=lambda: stale_twins_note(
                            console, interactive=sys.stdin.isatty() and console.is_terminal))
    ui = RichUI(console)
    try:
        with ui:
            run = run_drill(topology, playbook, opts, ui)
    except BaseException as e:
        if ui.run is not None and not isinstance(e, (UserError, SystemExit)):
            _say_how_it_ended(ui.run, console)
        raise
    card = json.loads(run.scorecard_path.read_text())
    if as_json:
        click.echo(json.dumps(card, indent=2))
    else:
        print_scorecard(card, console)
        print_availability(card, console)
        print_blue(card, console)
        console.print(f"scorecard: {run.scorecard_path}   report: {run.dir / 'report.md'}")
    if run.manifest.get("status") != "done":
        raise CheckFailed(f"drill {run.id} {run.manifest.get('status')}: "
                          f"{run.manifest.get('error', '')}")


def _say_how_it_ended(run, console) -> None:
    """One line after an interrupted or failed drill: what happened to the twin."""
    m = run.manifest
    td = m.get("teardown") or {}
    if td.get("complete"):
        twin = (f"the twin was removed ({td.get('processes', 0)} processes, "
                f"{td.get('links', 0)} links)")
    elif td:
        twin = (f"the twin was NOT fully removed: run `{td.get('cleanup') or 'cyberrange down'}`")
    else:
        twin = "no twin was built" if not m.get("twin") else \
            f"the twin may be left: run `cyberrange down {run.id}`"
    console.print(f"[yellow]{m.get('status', 'stopped')}[/]: {twin}; run folder {run.dir}")


@drill.command("score")
@click.argument("run_refs", nargs=-1, required=True, metavar="RUN...")
@click.option("--detectors", "detectors_dir", **DETECTORS)
@click.option("--runs-dir", default="runs", show_default=True)
@json_option("Print the new scorecards as a JSON list on stdout (tables are left out).")
def drill_score(run_refs, detectors_dir, runs_dir, as_json):
    """Re-parse, re-detect and re-score finished runs (folders, ids, 'latest', or a folder of
    runs); no twin needed.

    Each run folder is checked first: a damaged manifest, ledger or capture, or a run that is no
    drill, is refused with one line and its previous result stays as it was (in a folder of
    runs, folders that are no drill are skipped with a note). A ledger or capture that changed
    since the drill ended is scored as it is now, with a warning per file (see drill verify)."""
    from cyberrange.detect.registry import load_detectors
    from cyberrange.score.evaluate import expand_runs
    runs = expand_runs(run_refs, runs_dir, reason=Run.not_scoreable, refuse_named=True,
                       note=lambda text: click.echo(f"note: {text}", err=True))
    if not runs:
        raise UserError(f"nothing to score: no finished drill among {', '.join(run_refs)}")
    detectors = load_detectors(detectors_dir)
    console = make_console()
    cards = []
    for run in runs:
        run.check_analysable()                  # before the warnings: a refusal is one line
        if run.sealed():
            for row in run.verify_content():
                if row["state"] != "ok":
                    click.echo(f"warning: {run.dir / row['file']} {row['state']} since the drill "
                               f"ended ({row['detail']}): scored as it is now", err=True)
        card = analyse(run, detectors)
        if as_json:
            cards.append(card)
            continue
        print_scorecard(card, console)
        print_availability(card, console)
        print_blue(card, console)
    if as_json:
        echo_json(cards)


@drill.command("report")
@click.argument("run_ref", metavar="RUN")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Write the after-action report as one self-contained HTML "
                                   "file: timeline, steps, network picture, blue team, "
                                   "availability, detectors.")
@click.option("--navigator", "navigator_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Write an ATT&CK Navigator layer (format 4.5): techniques "
                                   "coloured by detected / missed / not observable.")
@click.option("--stix", "stix_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Write a STIX 2.1 bundle: ATT&CK attack-patterns, indicators "
                                   "for the attacker's addresses and C2 domains, sightings for "
                                   "the alerts (docs/exports.md).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report's content as JSON (scorecard, steps, alerts, blue actions, "
                   "availability) instead of tables.")
def drill_report(run_ref, runs_dir, html_path, navigator_path, stix_path, as_json):
    """Show the scorecard of a finished RUN (folder, id or 'latest'); a scorecard that is not
    one the drill wrote (damaged, another run's) is refused with one line.

    With --html, --navigator or --json the after-action report is built from the run folder
    (scorecard, ledger, alerts in the store, and the blue team's actions.jsonl and
    availability.jsonl when the drill has them); no twin needed. Run it from where the drill
    ran, so the topology file the manifest names is found for the network picture."""
    from cyberrange.run import SCOREABLE_KINDS
    run = Run.open(run_ref, runs_dir, kinds=SCOREABLE_KINDS)
    why = run.not_scoreable()
    if why:
        raise UserError(f"{run.dir}: {why}")
    card = run.scorecard()
    if not (html_path or navigator_path or stix_path or as_json):
        console = make_console()
        print_scorecard(card, console)
        print_availability(card, console)
        print_blue(card, console)
        return
    from cyberrange.report import content, html, navigator
    report = content.gather(run, card, *_alerts_with_truth(run, card))
    written = []
    if html_path:
        _write(html_path, html.render(report))
        written.append(f"after-action report: {html_path}")
    if navigator_path:
        _write(navigator_path, json.dumps(navigator.navigator(report), indent=2) + "\n")
        written.append(f"ATT&CK Navigator layer: {navigator_path}")
        written += [f"  note: {n}" for n in navigator.left_out(report["steps"])]
    if stix_path:
        from cyberrange.report import stix
        written += stix.write(stix_path, run, report)
    if as_json:
        click.echo(json.dumps(content.as_json(report), indent=2, default=str))
    for line in written:
        click.echo(line, err=as_json)


def _alerts_with_truth(run, card) -> tuple:
    """The run's alert records and the scorer's true/false label for each (re-scored with the
    scorecard's slack, so the marks agree with its counts), and a note when the store cannot
    give them: (alerts, truth, note)."""
    from cyberrange.score.score import score_run
    try:
        store = run.open_store(need=("flows", "alerts"))
    except UserError as e:
        return None, None, f"no alert marks on the timeline: {e}"
    try:
        alerts = store.read("alerts", run.id)
        flows = store.read("flows", run.id)
    finally:
        store.close()
    slack = card.get("slack_s") if isinstance(card.get("slack_s"), (int, float)) else 2.0
    scored = score_run(run.ledger(), flows, alerts, slack_s=slack, run_id=run.id,
                       alert_truth=True)
    return alerts, scored["alert_truth"], None


def _write(path, text: str) -> None:
    from pathlib import Path
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


@drill.command("verify")
@click.argument("run_ref", metavar="RUN")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the files and their states as JSON.")
def drill_verify(run_ref, runs_dir, as_json):
    """Check a RUN's ledger and captures against the sha256 hashes sealed into its manifest when
    the drill ended: each file ok, changed, missing or extra. Exit 0 when intact, 1 when not."""
    import time

    from rich import box
    from rich.table import Table
    run = Run.open(run_ref, runs_dir, kinds=("drill", "benign"))
    rows = run.verify_content()
    bad = [r for r in rows if r["state"] != "ok"]
    if as_json:
        click.echo(json.dumps({"run_id": run.id, "intact": not bad, "files": rows}, indent=2))
    else:
        colour = {"ok": "green", "changed": "red", "missing": "red", "extra": "yellow"}
        t = Table(box=box.SIMPLE_HEAVY)
        for h in ("file", "state", "detail"):
            t.add_column(h)
        for r in rows:
            t.add_row(r["file"], f"[{colour[r['state']]}]{r['state']}[/]", r["detail"])
        console = make_console()
        sealed = run.manifest["content"].get("sealed")
        when = time.strftime(" (%Y-%m-%d %H:%M:%S UTC)", time.gmtime(sealed)) \
            if isinstance(sealed, (int, float)) else ""
        console.print(f"run {run.id}: ledger and captures against the seal{when}")
        console.print(t)
    if bad:
        states = {}
        for r in bad:
            states[r["state"]] = states.get(r["state"], 0) + 1
        raise CheckFailed(f"{run.dir}: {len(bad)} of {len(rows)} files differ from the seal ("
                          + ", ".join(f"{n} {s}" for s, n in states.items()) + ")")
    if not as_json:
        click.echo(f"intact: {len(rows)} files match the seal")


COMMANDS = [drill]
