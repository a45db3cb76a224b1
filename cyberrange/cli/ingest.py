"""``cyberrange ingest FILE.pcap``: any capture -> a run folder that detectors and scoring can use.

The work is in ``cyberrange.ingest.ingest_pcaps`` (a library call); the command only prints.
"""
from __future__ import annotations

import json

import click

from cyberrange.ingest import ingest_pcaps


@click.command("ingest")
@click.argument("files", nargs=-1, required=True, metavar="FILE.pcap...",
                type=click.Path(dir_okay=False))
@click.option("--observer", help="sensor name for the records (default: the file name without "
              "its extension; only with one file)")
@click.option("--runs-dir", default="runs", show_default=True, help="where run folders are made")
@click.option("--copy", "mode", flag_value="copy", help="copy the capture into the run")
@click.option("--symlink", "mode", flag_value="symlink",
              help="symlink the capture instead of linking/copying it")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def ingest(files, observer, runs_dir, mode, as_json):
    """Turn capture files (pcap or pcapng) into a run: packets and flows in its store.

    Each file becomes one sensor (named after the file, or --observer). The capture is hard-linked
    into RUN/pcaps/ (copied across file systems). Detectors and scoring then work on the run
    without a twin: `cyberrange drill score RUN` (no ledger: no steps, but alerts and flows are
    counted). Frames that cannot be decoded are counted by reason, never fatal.
    """
    run, stats, summary = ingest_pcaps(list(files), runs_dir, observer, mode or "link")
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    from rich.table import Table

    from cyberrange.cli._console import make_console
    console = make_console()
    console.print(f"[cyan]run[/] {run.id}  [dim]{run.dir}[/]")
    t = Table(title="telemetry", show_edge=False)
    t.add_column("")
    t.add_column("count", justify="right")
    t.add_row("frames", f"{stats['frames']:,}")
    t.add_row("packets", f"{summary['packets']:,}")
    t.add_row("flows", f"{summary['flows']:,}")
    t.add_row("bytes", f"{stats['bytes']:,}")
    for reason, n in sorted(stats["skipped"].items(), key=lambda kv: (-kv[1], kv[0])):
        t.add_row(f"skipped: {reason}", f"{n:,}")
    if not stats["skipped"]:
        t.add_row("skipped", "0")
    for row in summary["transports"]:
        t.add_row(f"flows: {row['transport']}", f"{row['flows']:,}")
    console.print(t)
    if summary["top_talkers"]:
        tt = Table(title="top talkers (by bytes)", show_edge=False)
        for col in ("ip", "flows", "packets", "bytes"):
            tt.add_column(col, justify="left" if col == "ip" else "right")
        for r in summary["top_talkers"]:
            tt.add_row(str(r["ip"]), f"{r['flows']:,}", f"{r['packets']:,}", f"{r['bytes']:,}")
        console.print(tt)
    tm = summary["timings"]
    rate = stats["frames"] / tm["telemetry_s"] if tm.get("telemetry_s") else 0
    console.print(f"parsed in {tm['telemetry_s']:.2f} s ({rate:,.0f} frames/s), stored in "
                  f"{tm['store_s']:.2f} s")
    console.print(f"next: cyberrange drill score {run.id} --runs-dir {runs_dir}")


COMMANDS = [ingest]
