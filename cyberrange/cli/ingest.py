"""``cyberrange ingest FILE.pcap``: any capture -> a run folder that detectors and scoring can use.

The work is in ``ingest_pcaps`` (a library call); the command only prints. The run has no
ledger, so ``cyberrange drill score RUN`` gives a scorecard without steps that still counts
alerts and flows.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import click

from cyberrange.errors import UserError

_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
           b"\x0a\x0d\x0d\x0a")


def _observer_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "pcap"
    return name


def _place(src: Path, dst: Path, mode: str) -> str:
    """Put the capture into the run: hard link (same file system), else copy; or symlink."""
    if mode == "symlink":
        dst.symlink_to(src.resolve())
        return "symlink"
    if mode == "link":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def ingest_pcaps(files: list[str], runs_dir: str = "runs", observer: str | None = None,
                 mode: str = "link", label: str | None = None):
    """Create a run from capture files and fill its store; returns ``(run, stats, summary)``."""
    from cyberrange.run import Run
    from cyberrange.store import open_store
    from cyberrange.telemetry.pcap import parse_pcaps
    if not files:
        raise UserError("no capture file given")
    if observer and len(files) > 1:
        raise UserError("--observer names one sensor; give one file, or leave it out "
                        "(each file is then a sensor named after the file)")
    srcs = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise UserError("no such file", file=f)
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head and head not in _MAGICS:
            raise UserError(f"not a pcap or pcapng file (magic {head.hex()})", file=f)
        srcs.append((p, ".pcapng" if head == b"\x0a\x0d\x0d\x0a" else ".pcap"))
    names = [_observer_name(observer or p.stem) for p, _ in srcs]
    if len(set(names)) != len(names):
        raise UserError("two files would make the same sensor name: " + ", ".join(names))
    t0 = time.monotonic()
    run = Run.create(runs_dir, label or _observer_name("ingest-" + srcs[0][0].stem)[:40],
                     {f"pcap:{n}": str(p) for n, (p, _) in zip(names, srcs)})
    pdir = run.dir / "pcaps"
    pdir.mkdir()
    (run.dir / "logs").mkdir(exist_ok=True)
    placed = {}
    items = []
    for n, (p, suffix) in zip(names, srcs):
        dst = pdir / f"{n}{suffix}"            # what the drill analysis reads: pcaps/<sensor>.pcap
        placed[n] = {"source": str(p.resolve()), "how": _place(p, dst, mode)}
        items.append((dst, n))
    t1 = time.monotonic()
    packets, flows, stats = parse_pcaps(items, run.id)
    t2 = time.monotonic()
    with open_store(run.store_path) as store:
        store.write("packets", packets)
        store.write("flows", flows)
        talkers = store.query(
            'SELECT ip, sum(n) AS flows, sum(p) AS packets, sum(b) AS bytes FROM ('
            ' SELECT "source.ip" AS ip, count(*) AS n, sum("network.packets") AS p,'
            '   sum("network.bytes") AS b FROM flows GROUP BY 1'
            ' UNION ALL SELECT "destination.ip", count(*), sum("network.packets"),'
            '   sum("network.bytes") FROM flows GROUP BY 1)'
            ' GROUP BY ip ORDER BY bytes DESC, ip LIMIT 10').to_pylist()
        transports = store.query(
            'SELECT "network.transport" AS transport, count(*) AS flows FROM flows '
            'GROUP BY 1 ORDER BY 2 DESC').to_pylist()
    t3 = time.monotonic()
    stats = dict(stats)
    stats["files"] = {Path(k).name: v for k, v in stats.get("files", {}).items()}
    # (not "sensors": that key holds tcpdump's counters of a drill's live sensors)
    run.manifest.update(kind="ingest", captures=placed,
                        telemetry={"packets": packets.num_rows, "flows": flows.num_rows,
                                   "parser": stats})
    run.manifest["timings"].update(copy_s=round(t1 - t0, 3), telemetry_s=round(t2 - t1, 3),
                                   store_s=round(t3 - t2, 3), total_s=round(t3 - t0, 3))
    run.seal()                          # `drill verify` can then tell a changed capture
    run.finish("ingested")
    summary = {"run_id": run.id, "run_dir": str(run.dir), "packets": packets.num_rows,
               "flows": flows.num_rows, "frames": stats["frames"], "bytes": stats["bytes"],
               "skipped": stats["skipped"], "top_talkers": talkers, "transports": transports,
               "timings": run.manifest["timings"]}
    return run, stats, summary


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
