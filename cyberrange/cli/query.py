"""``cyberrange query RUN "SQL"``: SQL over a run's store, through plain snake_case views.

The views (``cyberrange/store/views.py``) need no quoting: ``SELECT source_ip, count(*) FROM
flows GROUP BY ALL``. Without SQL the command lists the views and their columns. Example
hunting queries: ``docs/hunting-queries.md``.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal

import click

from cyberrange.errors import UserError

__all__ = ["COMMANDS", "query", "run_query"]


def run_query(run, sql: str) -> tuple[list[str], list[tuple]]:
    """``(column names, rows)`` of ``sql`` over the views of ``run`` (a ``cyberrange.run.Run``).
    A wrong query is a UserError with DuckDB's first line."""
    import duckdb

    from cyberrange.store.views import open_views
    con = open_views(run.store_path, _ledger(run), run.dir / "availability.jsonl")
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as exc:
        raise UserError(f"query: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()


def _ledger(run) -> list[dict] | None:
    """The run's ledger records (either spelling), or None when the run has no ledger."""
    from cyberrange.attack.ledger import read_ledger
    if not run.ledger_path.exists():
        return None
    return read_ledger(run.ledger_path)


def _plain(v):
    """A value as JSON can hold it: timestamps ISO 8601, decimals (DuckDB's sums) numbers."""
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.hex()
    return v


@click.command("query")
@click.argument("run_ref", metavar="RUN")
@click.argument("sql", required=False)
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders are.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV with a header line.")
def query(run_ref, sql, runs_dir, as_json, as_csv):
    """Run SQL over RUN's store (a run folder, id or 'latest') through snake_case views: flows,
    packets, alerts, signals, incidents, dns, http, arp_bindings, ledger, ledger_flows,
    availability (when the run probed its missions), link_events (DDIL link changes). Without
    SQL: list the views and their columns. Examples: docs/hunting-queries.md."""
    from cyberrange.run import Run
    from cyberrange.store.views import open_views, view_columns
    if as_json and as_csv:
        raise UserError("give --json or --csv, not both")
    run = Run.open(run_ref, runs_dir)
    if sql is None:
        con = open_views(run.store_path, _ledger(run), run.dir / "availability.jsonl")
        try:
            views = view_columns(con)
        finally:
            con.close()
        if as_json:
            click.echo(json.dumps({v: [{"name": c, "type": t} for c, t in cols]
                                   for v, cols in views.items()}, indent=2))
        else:
            for v, cols in views.items():
                click.echo(f"{v}: " + ", ".join(c for c, _ in cols))
        return
    if not sql.strip():
        raise UserError("query: the SQL is empty")
    names, rows = run_query(run, sql)
    if as_json:
        click.echo(json.dumps([dict(zip(names, map(_plain, r))) for r in rows], indent=2))
    elif as_csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow([json.dumps(_plain(v)) if isinstance(v, (list, dict)) else
                        "" if v is None else _plain(v) for v in r])
        click.echo(buf.getvalue(), nl=False)
    else:
        _table(names, rows)


def _table(names: list[str], rows: list[tuple]) -> None:
    from rich import box
    from rich.table import Table

    from cyberrange.cli._console import make_console
    t = Table(box=box.SIMPLE_HEAVY)
    for n in names:
        t.add_column(n)
    for r in rows:
        t.add_row(*("" if v is None else str(_plain(v)) for v in r))
    console = make_console()
    console.print(t)
    console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")


COMMANDS = [query]
