"""``cyberrange store ping|init|push``: the Elasticsearch cluster that drills share.

The cluster is named by ``--to es://HOST:PORT`` (``ess://`` for TLS; options in the query, see
docs/elasticsearch.md) or by ``CYBERRANGE_ES_URL``; credentials come from the environment only.
"""
from __future__ import annotations

import json

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from cyberrange.cli._console import make_console
from cyberrange.cli._params import echo_json, es_store_option, json_option
from cyberrange.errors import CheckFailed, UserError

TO_HELP = ("The cluster: es://HOST:PORT, ess://HOST:PORT (TLS) or an ES config file "
           "(default: $CYBERRANGE_ES_URL). Credentials: CYBERRANGE_ES_API_KEY, or "
           "CYBERRANGE_ES_USER and CYBERRANGE_ES_PASSWORD.")


def _to_option(f):
    return es_store_option(f)         # --store URL (--to URL: the old name)


@click.group()
def store():
    """The Elasticsearch backend: check a cluster, install its templates, push runs to it."""


@store.command("ping")
@_to_option
@json_option()
def store_ping(target, as_json):
    """Reach the cluster once: address, TLS, credentials, version."""
    from cyberrange.store.es_store import open_checked
    es = open_checked(target)
    try:
        info = es.info
    finally:
        es.client.close()
    if as_json:
        return echo_json(info)
    make_console().print(
        f"[green]ok[/] {info['url']}: cluster {info['cluster']!s}, Elasticsearch "
        f"{info['version']}, TLS {'verified' if info['tls'] else 'off'}, auth {info['auth']}")


@store.command("init")
@_to_option
@json_option()
def store_init(target, as_json):
    """Install the index templates (ECS mappings) and create the indices; safe to repeat."""
    from cyberrange.store.es_store import open_checked
    es = open_checked(target)
    try:
        report = es.init()
    finally:
        es.client.close()
    if as_json:
        return echo_json(report)
    console = make_console()
    for name in report["installed"]:
        console.print(f"[green]installed[/] template {name}")
    for name in report["indices_created"]:
        console.print(f"[green]created[/] index {name}")
    console.print(f"{len(report['unchanged'])} templates unchanged, "
                  f"{len(report['installed'])} installed, "
                  f"{len(report['indices_created'])} indices created")


@store.command("push")
@click.argument("run_ref", metavar="RUN")
@_to_option
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders are.")
@click.option("--json", "as_json", is_flag=True, help="Print the reconciliation as JSON.")
def store_push(run_ref, target, runs_dir, as_json):
    """Export a finished RUN (records, alerts, signals, incidents, mission probes, link events,
    ledger) to the cluster. Documents have fixed ids,
    so pushing again stores nothing twice; the run's spool (es-spool/) is replayed first."""
    from cyberrange.attack.ledger import read_ledger
    from cyberrange.blue.run_logs import run_log_tables
    from cyberrange.run import Run
    from cyberrange.store.duckdb_store import DuckDBStore
    from cyberrange.store.es_store import open_checked, push_run
    from cyberrange.store.runlogs import RUN_LOG_SCHEMAS
    run = Run.open(run_ref, runs_dir)
    if not run.store_path.exists():
        raise UserError(f"{run.dir}: no store.duckdb (score the run first: "
                        f"cyberrange drill score {run.id})")
    files = run_log_tables(run.dir, run.id)         # checked before the cluster is reached
    es = open_checked(target, spool_dir=run.dir / "es-spool")
    with DuckDBStore(run.store_path, read_only=True) as local:
        tables = {}
        for kind in ("packets", "flows", "alerts"):
            names = local.stored_schema(kind).names
            tables[kind] = local.read(kind, run.id, columns=list(names))
        for kind in ("signals", "incidents"):       # a run scored before issue 15 has none
            tables[kind] = local.read_or_empty(kind, run.id)
        for kind in RUN_LOG_SCHEMAS:                # mission probes, link events
            tables[kind] = local.read_or_empty(kind, run.id)
    for kind, table in files.items():
        if table is not None and tables[kind].num_rows == 0:   # analysed before the store
            tables[kind] = table                                # held them: the run's files
    ledger = read_ledger(run.ledger_path) if run.ledger_path.exists() else None
    total = sum(t.num_rows for t in tables.values()) + len(ledger or [])
    console = make_console(stderr=as_json)
    progress = Progress(TextColumn("[bold]push[/] {task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                        transient=True)
    try:
        with progress:
            task = progress.add_task(run.id, total=total)
            es.bulk.on_chunk = lambda n: progress.advance(task, n)
            section = push_run(es, run.id, tables["packets"], tables["flows"],
                               tables["alerts"], ledger, signals=tables["signals"],
                               incidents=tables["incidents"],
                               availability=tables["availability"],
                               link_events=tables["link_events"])
    finally:
        es.client.close()
    if as_json:
        click.echo(json.dumps(section, indent=2))
    else:
        rate = total / section["seconds"] if section.get("seconds") else 0
        console.print(f"{run.id} -> {section['url']} ({es.config.prefix}-*): "
                      f"sent {section.get('sent', 0):,}, acknowledged "
                      f"{section.get('acknowledged', 0):,}, retried {section.get('retried', 0):,}, "
                      f"spooled {section.get('spooled', 0):,}, replayed "
                      f"{section.get('replayed', 0):,}, rejected {section.get('rejected', 0):,}"
                      f"  [dim]{rate:,.0f} docs/s[/]")
        console.print(("[green]" if section["zero_loss"] else "[yellow]") + section["verdict"])
    if not section["zero_loss"]:
        raise CheckFailed(section["verdict"])


COMMANDS = [store]
