"""``cyberrange detect list|run|incidents|eval``: the detectors on their own -- on a finished run,
on an external capture (no twin), the incidents their alerts and signals make, and evaluated
over a corpus of runs against their ledgers."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich import box
from rich.table import Table

from cyberrange.cli._console import make_console
from cyberrange.cli._params import (
    DETECTORS,
    SECONDS,
    deprecated,
    echo_json,
    json_option,
    store_spec,
)
from cyberrange.errors import UserError


@click.group()
def detect():
    """Detectors: list them, run them on a run or a pcap, evaluate them on runs."""


def _alerts_table(alerts, title: str) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for h in ("time (UTC)", "detector", "technique", "source", "destination", "score", "flows",
              "explanation"):
        t.add_column(h, justify="right" if h in ("score", "flows") else "left",
                     overflow="fold", max_width=70 if h == "explanation" else None)
    rows = alerts.to_pylist()
    for r in rows:
        t.add_row(f"{r['@timestamp']:%H:%M:%S.%f}"[:-3], r["rule.name"],
                  r["threat.technique.id"] or "", r["source.ip"] or "", r["destination.ip"] or "—",
                  f"{r['cyberrange.score']:.2f}", str(len(r["cyberrange.flow_ids"] or [])),
                  r["message"])
    return t


@detect.command("list")
@click.option("--detectors", "detectors_dir", **DETECTORS,
              help="Folder of detector YAML files.")
@json_option()
def detect_list(detectors_dir, as_json):
    """The configured detector instances, their families and what they learn or score."""
    from cyberrange.detect.registry import FAMILIES, load_detectors
    dets = load_detectors(detectors_dir)
    if as_json:
        return echo_json({"folder": detectors_dir, "detectors": [
            {"name": d.name, "family": d.family, "technique": d.technique,
             "needs_packets": d.needs_packets, "trainable": d.trainable,
             "scores_flows": d.scores_flows, "settings": d.settings} for d in dets]})
    t = Table(title=f"{len(dets)} detectors in {detectors_dir}/ ({len(FAMILIES)} families known)",
              box=box.SIMPLE_HEAVY, title_justify="left")
    for h in ("name", "family", "technique", "input", "learns", "scores flows", "settings"):
        t.add_column(h, overflow="fold")
    for d in dets:
        settings = ", ".join(f"{k}={v}" for k, v in d.settings.items())
        t.add_row(d.name, d.family, d.technique or "—",
                  "flows + packets" if d.needs_packets else "flows",
                  "yes" if d.trainable else "", "yes" if d.scores_flows else "", settings)
    make_console().print(t)


def _load(pcap: str, run_id: str):
    """An external capture's records (``ingest.load``), or a one-line error."""
    from cyberrange.ingest.load import load_captures
    if not Path(pcap).is_file():
        raise UserError(f"no such capture file: {pcap}")
    return load_captures([(pcap, Path(pcap).stem)], run_id)


def _scoreable_run(ref: str, runs_dir: str):
    """A finished drill run by folder, id or 'latest' (manifest checked), or a one-line error."""
    from cyberrange.run import SCOREABLE_KINDS, Run
    run = Run.open(ref, runs_dir, kinds=SCOREABLE_KINDS)
    why = run.not_scoreable()
    if why:
        raise UserError(f"{run.dir}: {why}")
    return run


@detect.command("run")
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--pcap", type=click.Path(dir_okay=False), default=None,
              help="Score an external capture (pcap/pcapng) without a twin.")
@click.option("--train-pcap", type=click.Path(dir_okay=False), default=None,
              help="A benign capture the trainable detectors learn from (with --pcap).")
@click.option("--baseline", "baseline_s", type=SECONDS, default=None,
              help="Trainable detectors learn from the first N seconds (default: a run's "
                   "warm-up; 0 with --pcap unless given).")
@click.option("--detectors", "detectors_dir", **DETECTORS)
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--store", "store_path", default=None, metavar="duckdb:PATH",
              callback=lambda ctx, param, value: store_spec(value),
              help="With --pcap: keep records and alerts in this DuckDB file (a bare PATH: the "
                   "old spelling).")
@click.option("--json", "as_json", is_flag=True, help="Print alerts as JSON lines.")
@click.option("--explain", is_flag=True,
              help="Also list near-misses: candidates that scored below their detector's "
                   "threshold, with every score component and what failed by how much "
                   "(families that offer near_misses(): beacon).")
def detect_run(run_ref, pcap, train_pcap, baseline_s, detectors_dir, runs_dir, store_path,
               as_json, explain):
    """Run the detectors on a finished RUN (its alerts, weak signals and incidents are
    replaced) or on --pcap FILE."""
    from cyberrange.detect.incidents import run_incidents
    from cyberrange.detect.registry import load_detectors, run_detectors
    from cyberrange.store import open_store
    if (run_ref is None) == (pcap is None):
        raise UserError("give either a RUN or --pcap FILE")
    if train_pcap and not pcap:
        raise UserError("--train-pcap goes with --pcap (a run learns from its warm-up)")
    dets = load_detectors(detectors_dir)
    console = make_console(stderr=as_json)
    stats: dict = {}
    if pcap:
        run_id = "pcap-" + Path(pcap).stem
        loaded = _load(pcap, run_id)
        train = None
        if train_pcap:
            tl = _load(train_pcap, "train")
            train = (tl.flows, tl.packets)
        with open_store(store_path or ":memory:") as store:
            loaded.store_into(store, replace=bool(store_path))
            alerts = run_detectors(store, run_id, dets, baseline_s=baseline_s, train=train,
                                   stats=stats)
            incidents = run_incidents(store, run_id)
            misses = _near_misses(store, run_id, dets) if explain else []
        title = (f"{pcap}: {loaded.stats['packets']:,} packets, {loaded.flows.num_rows:,} "
                 f"flows, {alerts.num_rows} alerts")
    else:
        run = _scoreable_run(run_ref, runs_dir)
        if baseline_s is None:
            baseline_s = run.manifest.get("baseline_s")
        until = run.manifest.get("baseline_end") if baseline_s == run.manifest.get(
            "baseline_s") else None
        run.check_writable(run.store_path.name)
        with run.open_store(read_only=False) as store:
            alerts = run_detectors(store, run.id, dets, baseline_s=baseline_s,
                                   baseline_until=until, stats=stats)
            incidents = run_incidents(store, run.id)       # from the new alerts and signals
            misses = _near_misses(store, run.id, dets) if explain else []
        title = f"run {run.id}: {alerts.num_rows} alerts"
    n_signals = sum(s.get("signals", 0) for s in stats.values())
    title += f", {n_signals} weak signals, {incidents.num_rows} incidents"
    if as_json:
        for r in alerts.to_pylist():
            click.echo(json.dumps(r, default=str))
        for m in misses:
            click.echo(json.dumps({"near_miss": m}, default=str))
        return
    console.print(_alerts_table(alerts, title))
    if explain:
        _print_near_misses(console, misses)
    untrained = [n for n, s in stats.items()
                 if not s["trained"] and any(d.name == n and d.trainable for d in dets)]
    if untrained:
        console.print(f"[yellow]note:[/] untrained (no baseline given): {', '.join(untrained)}")


def _near_misses(store, run_id, dets) -> list[dict]:
    """Near-misses of every detector that offers ``near_misses(flows, packets)`` (an optional
    hook: a list of dicts with ``rule.name``, ``channel``, ``score``, the score's components and
    ``failed``), read after ``run_detectors`` so trainable ones use what they learned."""
    from cyberrange.detect.registry import _columns
    hooks = [d for d in dets if callable(getattr(d, "near_misses", None))]
    if not hooks:
        return []
    flows = store.read("flows", run_id, columns=_columns(store, "flows"))
    packets = store.read("packets", run_id, columns=_columns(store, "packets")) \
        if any(d.needs_packets for d in hooks) else None
    out = []
    for d in hooks:
        out.extend(d.near_misses(flows, packets if d.needs_packets else None))
    return out


def _print_near_misses(console, misses: list[dict]) -> None:
    if not misses:
        console.print("near-misses: none (no candidate scored near a threshold)")
        return
    console.print(f"near-misses ({len(misses)}): below threshold, with what failed",
                  soft_wrap=True)
    for m in misses:
        why = "; ".join(f"{f['check']}: {f['value']}" + (
            f" (needed {f['needed']}, short by {f['short_by']})" if "needed" in f else "")
            for f in m["failed"])
        comp = (f"{m.get('connections')} conns, every {m.get('interval_median_s')} s, jitter "
                f"{m.get('interval_jitter')} (allowed {m.get('jitter_allowed')}), "
                f"{m.get('duration_s')} s, timing {m.get('timing_score')} size "
                f"{m.get('size_score')} count {m.get('count_score')}"
                + (f"; rhythm: spread {m['interval_spread']}, chance {m['p_random']:.2g} for "
                   f"random arrivals" if "p_random" in m else "")
                + (f"; new peer: all intervals' chance {m['p_random_all']:.2g}"
                   if m.get("new_peer") else "")) \
            if "interval_jitter" in m else ""
        console.print(f"  {m['rule.name']}  {m['channel']}  score {m['score']}  {comp}\n"
                      f"    failed: {why}", highlight=False, soft_wrap=True)


@detect.command("incidents")
@click.argument("run_ref", metavar="RUN")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--rebuild", is_flag=True,
              help="Correlate the run's stored alerts and signals again (and store the result) "
                   "instead of showing the incidents its analysis stored.")
@click.option("--json", "as_json", is_flag=True, help="Print the incidents as JSON lines.")
def detect_incidents(run_ref, runs_dir, rebuild, as_json):
    """The incidents of a finished RUN: its alerts and weak signals correlated by entity and
    time, with the kill-chain stages each reached, its combined score and one line per
    contributing observation (docs/incidents.md). What a blue team triages."""
    from cyberrange.detect.incidents import incident_rows, run_incidents
    from cyberrange.report.incidents import print_incidents
    run = _scoreable_run(run_ref, runs_dir)
    if rebuild:
        run.check_writable(run.store_path.name)
    with run.open_store(read_only=not rebuild, need=("flows",)) as store:
        if rebuild or not store.has("incidents"):
            table = run_incidents(store, run.id, write=rebuild)
        else:
            table = store.read("incidents", run.id)
        n_signals = store.read_or_empty("signals", run.id).num_rows
    rows = incident_rows(table)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return
    print_incidents(rows, make_console(), title=f"run {run.id}: {len(rows)} incidents "
                                                 f"({n_signals} weak signals stored)")


@detect.command("eval")
@click.argument("runs", nargs=-1, required=True)
@click.option("--detectors", "detectors_dir", **DETECTORS)
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--train", "train_ref", default=None,
              help="A benign run every trainable detector learns from (default: each run's "
                   "own warm-up).")
@click.option("--baseline", "baseline_s", type=SECONDS, default=0.0, show_default=True,
              help="Baseline seconds for runs whose manifest does not record one.")
@click.option("--only", multiple=True, help="Evaluate only these detector instances.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              metavar="", help="Print the full results as JSON on stdout (tables go to "
                               "stderr). `--json FILE`: the old spelling, writes FILE.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the results tables as Markdown to this file.")
def detect_eval(runs, detectors_dir, runs_dir, train_ref, baseline_s, only, json_out, md_out):
    """Evaluate the detectors over RUNS (run folders, ids, or folders of runs) against their
    ledgers: per technique recall, precision, false alerts per 10k benign flows and time to
    detect; per detector ROC-AUC/PR-AUC where it scores; ATT&CK coverage matrix. A run that
    did not end `done` (e.g. its attack steps errored) is listed as not evaluable; exit 1 when
    no run could be evaluated."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cyberrange.detect.registry import load_detectors
    from cyberrange.report.evaluation import evaluation_markdown, print_evaluation
    from cyberrange.score.evaluate import evaluate, expand_runs
    if json_out not in (None, "-") and Path(json_out).is_dir():   # `--json RUNS/`: a flag
        runs, json_out = (json_out, *runs), "-"
    elif json_out not in (None, "-"):
        deprecated(f"detect eval --json {json_out}", f"detect eval --json > {json_out}")
    dets = load_detectors(detectors_dir)
    if only:
        unknown = sorted(set(only) - {d.name for d in dets})
        if unknown:
            raise UserError(f"--only: no detector named {unknown[0]!r} in {detectors_dir}/")
        dets = [d for d in dets if d.name in only]
    paths = expand_runs(runs, runs_dir, note=lambda text: click.echo(f"note: {text}", err=True))
    if not paths:
        raise UserError(f"nothing to evaluate: no drill run among {', '.join(runs)}")
    for run in paths:
        run.ledger()                            # a damaged ledger: one error, before warnings
        if run.sealed():                        # the ground truth as the drill left it?
            for row in run.verify_content(only=("ledger.jsonl",)):
                if row["state"] != "ok":
                    click.echo(f"warning: {run.ledger_path} {row['state']} since the drill "
                               f"ended ({row['detail']}): evaluated as it is now", err=True)
    train = None
    if train_ref:
        from cyberrange.telemetry.schema import RECORD_SCHEMAS
        tr = _scoreable_run(train_ref, runs_dir)
        with tr.open_store(read_only=True) as store:
            train = (store.read("flows", tr.id, columns=list(RECORD_SCHEMAS["flows"].names)),
                     store.read("packets", tr.id,
                                columns=list(RECORD_SCHEMAS["packets"].names)))
    console = make_console(stderr=json_out == "-")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} runs"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(paths))

        def on_run(i, n, path):
            progress.update(task, completed=i, description=f"evaluating {Path(path).name}")
        ev = evaluate(paths, dets, train=train, default_baseline_s=baseline_s,
                      on_run=on_run).to_dict()
        progress.update(task, completed=len(paths))
    print_evaluation(ev, console)
    if json_out == "-":
        click.echo(json.dumps(ev, indent=1, default=str))
    elif json_out:
        Path(json_out).write_text(json.dumps(ev, indent=1, default=str))
    if md_out:
        Path(md_out).write_text(evaluation_markdown(ev))
    if not ev["totals"]["runs"]:        # every run failed or unfinished: nothing was measured
        from cyberrange.errors import CheckFailed
        raise CheckFailed("no run could be evaluated (see 'not evaluable' above): every goal "
                          "is not measured")


@detect.command("export")
@click.option("--sigma", "sigma_dir", type=click.Path(file_okay=False), required=True,
              metavar="DIR", help="Write Sigma rules (one .yml per rule) into DIR.")
@click.option("--detectors", "detectors_dir", **DETECTORS,
              help="Folder of detector YAML files.")
@click.option("--run", "run_ref", default=None, metavar="RUN",
              help="Bake in the allow-lists the trainable detectors learn from this run's "
                   "warm-up (as the drill trained them); default: configured lists only.")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help='Print {"rules": [files], "refused": [{detector, family, part, reason}]}.')
def detect_export(sigma_dir, detectors_dir, run_ref, runs_dir, as_json):
    """Sigma rules for the detectors one Sigma detection can express over the ECS flow fields,
    and the reason for each one it cannot (docs/exports.md)."""
    from cyberrange.detect.registry import load_detectors
    from cyberrange.detect.sigma import write_rules
    run = _scoreable_run(run_ref, runs_dir) if run_ref else None
    written, refused = write_rules(sigma_dir, load_detectors(detectors_dir), run)
    if as_json:
        click.echo(json.dumps({"rules": written, "refused": refused}, indent=2))
        return
    for path in written:
        click.echo(f"Sigma rule: {path}")
    click.echo(f"{len(written)} rule(s) written; not expressible as Sigma:")
    for r in refused:
        part = "" if r["part"] == "all" else f" ({r['part']} check)"
        click.echo(f"  {r['detector']}{part} [{r['family']}]: {r['reason']}")


COMMANDS = [detect]

