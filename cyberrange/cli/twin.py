"""``cyberrange up|down|status|exec``: bring a twin up, look at it, use it, remove it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from cyberrange.cli._console import make_console
from cyberrange.cli._params import (
    LINK_MODES,
    TOPOLOGY,
    allow_outside_option,
    echo_json,
    json_option,
    link_emulation_option,
)
from cyberrange.errors import UserError
from cyberrange.twin.state import TwinState, live_states


def _twin_table(twin) -> Table:
    t = Table(title=f"twin {twin.topo.name} ({twin.topo.classification}) — prefix {twin.state.prefix}",
              box=box.SIMPLE, title_justify="left")
    for c in ("node", "kind", "role", "addresses", "services"):
        t.add_column(c)
    for n in twin.topo.nodes.values():
        t.add_row(n.name, n.kind, n.role if n.is_host else "",
                  ", ".join(f"{i.cidr} ({i.zone})" for i in n.interfaces),
                  ", ".join(f"{s.type}/{s.port}" for s in n.services))
    return t


def _build(file, runs_dir, console):
    from cyberrange.model.loader import load_topology
    from cyberrange.run import Run, probe_runs_dir
    from cyberrange.session import stale_twins_note
    from cyberrange.twin.build import Twin, preflight
    topo = load_topology(file)
    preflight(need_dns=True)
    stale_twins_note(console, interactive=sys.stdin.isatty() and console.is_terminal)
    probe_runs_dir(runs_dir)
    run = Run.create(runs_dir, f"{topo.name}-up", {"topology": file})
    run.manifest.update(kind="twin", topology=topo.name)
    run.save()
    twin = Twin(topo, run.dir, run.id, log=lambda m: console.print(f"[yellow]warning:[/] {m}"))
    return run, twin


@click.command("up")
@allow_outside_option
@link_emulation_option
@click.argument("file", type=TOPOLOGY)
@click.option("--runs-dir", default="runs", show_default=True, help="Where the run folder goes.")
@click.option("--detach", is_flag=True, help="Return once the twin is up; remove it with `cyberrange down`.")
@click.option("--cli", "mininet_cli", is_flag=True,
              help="Open Mininet's CLI on the twin (`ops-ws1 ping c2-server`, `pingall`, "
                   "`nodes`, `links`); the twin goes when the CLI exits.")
def up(file, runs_dir, detach, mininet_cli):
    """Build the twin of topology FILE and keep it up until Ctrl-C (or `down`)."""
    console = Console(stderr=True)
    if detach and mininet_cli:
        raise UserError("--detach and --cli exclude each other")
    if detach:
        log = Path(runs_dir) / "up-detached.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        before = {s.prefix for s in live_states()}
        proc = subprocess.Popen([sys.executable, "-m", "cyberrange.cli.main", "up", file,
                                 "--runs-dir", runs_dir], stdin=subprocess.DEVNULL,
                                stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise UserError(f"the twin did not come up: {log.read_text().strip().splitlines()[-1:]}")
            new = [s for s in live_states() if s.prefix not in before and s.owner_pid == proc.pid]
            if new and new[0].status == "up":
                s = new[0]
                console.print(f"twin [bold]{s.topology}[/] is up (prefix {s.prefix}, run {s.run_id}); "
                              f"`cyberrange exec NODE -- CMD` to use it, `cyberrange down {s.prefix}` to remove it")
                return
            time.sleep(0.2)
        raise UserError("the twin did not come up within 300 s")
    from cyberrange.session import TwinSession
    run, twin = _build(file, runs_dir, console)
    stop = threading.Event()
    try:
        with TwinSession(run, twin) as session:
            with console.status("building the twin"):
                session.start()
            console.print(_twin_table(twin))
            if mininet_cli:             # Mininet's own CLI over the same nodes (twin.net)
                from mininet.cli import CLI
                from mininet.log import setLogLevel
                setLogLevel("output")        # the CLI prints through Mininet's logger
                console.print(f"twin is up (prefix {twin.state.prefix}); Mininet's CLI: "
                              f"`help`, `NODE CMD`, `exit` removes the twin")
                CLI(twin.net)
            else:
                console.print(f"twin is up (prefix {twin.state.prefix}, run {run.id}). Ctrl-C "
                              f"or `cyberrange down {twin.state.prefix}` removes it.")
                while not stop.wait(0.5):
                    pass
    except KeyboardInterrupt:        # Ctrl-C or `down` is how an `up` twin normally ends
        if (run.manifest.get("teardown") or {}).get("complete"):
            run.manifest["ended_by"] = "signal"
            run.finish("done")
    else:
        run.finish("done")
    td = run.manifest.get("teardown") or {}
    console.print(f"twin removed: {td.get('processes', 0)} processes, {td.get('links', 0)} links"
                  + ("" if td.get("complete", True) else
                     f"; NOT complete, run `{td.get('cleanup')}`"))


def _select(ref: str | None, all_: bool, stale: bool = False) -> list[TwinState]:
    from cyberrange.session import select_twins
    return select_twins(ref, everything=all_, stale=stale)


def _is_cli(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "cyberrange.cli.main" in cmd or "bin/cyberrange " in cmd


@click.command("down")
@click.argument("ref", required=False)
@click.option("--all", "all_", is_flag=True, help="Remove every twin of this machine made by cyberrange.")
@click.option("--stale", is_flag=True,
              help="Remove every twin whose owning process died (SIGKILL, a crash, a forced quit).")
@json_option("Print what was removed as JSON on stdout (the lines go to stderr as always).")
def down(ref, all_, stale, as_json):
    """Remove a twin (by prefix or run id): its namespaces, links, bridges and processes.

    The twin's run folder is finalised: a run whose owner died ends `killed`, with the
    teardown summary in its manifest."""
    from cyberrange.session import finalise_stale_run, remove_twin, stale_runs
    console = Console(stderr=True)
    states = _select(ref, all_, stale)
    if stale or all_:
        for m in stale_runs():
            status = finalise_stale_run(m)
            console.print(f"run {m['run_id']} (no twin left) was left unfinished by a process "
                          f"that died; its manifest now says {status}")
    if not states:
        console.print("no stale twin" if stale else "no twin is up")
        if as_json:
            echo_json({"removed": []})
        return
    left, done = 0, []
    for s in states:
        # ask the owning process first (it tears down cleanly), then sweep what is left
        try:
            # Only a cyberrange command that owns the twin is asked to stop; a library user's
            # process (a test runner, a notebook) is left alive and its twin removed under it.
            if s.owner_alive and s.owner_pid != os.getpid() and _is_cli(s.owner_pid):
                os.kill(s.owner_pid, signal.SIGTERM)
                for _ in range(150):
                    if not s.path.exists() or not s.owner_alive:
                        break
                    time.sleep(0.1)
        except ProcessLookupError:
            pass
        if s.path.exists():
            removed = remove_twin(s, how="killed")
        else:
            removed = {"processes": "by owner", "links": "by owner", "left": 0}
        left += bool(removed.get("left"))
        done.append({"prefix": s.prefix, "topology": s.topology, "run_id": s.run_id, **removed})
        console.print(f"removed twin {s.prefix} ({s.topology}, run {s.run_id}): "
                      f"{removed.get('processes')} processes, {removed.get('links')} links"
                      + (f"; {removed['left']} objects could not be removed: "
                         f"{removed.get('left_objects')}" if removed.get("left") else ""))
    if as_json:
        echo_json({"removed": done})
    if left:
        from cyberrange.errors import CheckFailed
        raise CheckFailed(f"{left} twin(s) not fully removed (see above)")


@click.command("status")
@json_option()
def status(as_json):
    """List the twins that are up on this machine."""
    states = live_states()
    if as_json:
        from cyberrange.session import stale_runs
        return echo_json({"twins": [{"prefix": s.prefix, "topology": s.topology,
                                     "run_id": s.run_id, "run_dir": s.run_dir,
                                     "status": s.status if s.owner_alive else "orphaned",
                                     "nodes": len(s.namespaces or s.node_pids),
                                     "owner_pid": s.owner_pid, "owner_alive": s.owner_alive,
                                     "age_s": round(time.time() - s.created, 1)}
                                    for s in states],
                          "stale_runs": [m.get("run_id") for m in stale_runs()]})
    t = Table(box=box.SIMPLE)
    for c in ("prefix", "topology", "run", "status", "nodes", "owner", "age"):
        t.add_column(c)
    dead = [s for s in states if not s.owner_alive]
    for s in states:
        alive = s not in dead
        t.add_row(s.prefix, s.topology, s.run_id,
                  s.status if alive else "[red]orphaned[/]",
                  str(len(s.namespaces or s.node_pids)),
                  f"pid {s.owner_pid}" + ("" if alive else " [red](dead)[/]"),
                  f"{time.time() - s.created:.0f} s")
    console = Console()
    console.print(t if states else "no twin is up")
    from cyberrange.session import stale_runs
    runs = stale_runs()
    for m in runs:
        console.print(f"run {m['run_id']}: its owner (pid {m['owner_pid']}) died before "
                      f"finishing it (no twin left)")
    if dead or runs:
        console.print(f"{len(dead)} twin(s) and {len(runs)} run(s) outlived their owner: "
                      f"`cyberrange down --stale` removes them and finalises their runs")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--twin", "ref", help="Prefix or run id when several twins are up.")
def exec_(node, argv, ref):
    """Run a command inside NODE of a running twin: cyberrange exec ops-ws1 -- ping -c1 c2-server"""
    from cyberrange.session import attach
    twin = attach(ref)
    r = subprocess.run(twin.exec_argv(node, list(argv)))
    sys.exit(r.returncode)


@click.group("twin")
def twin_group():
    """Check a twin against its model."""


@twin_group.command("verify")
@allow_outside_option
@click.argument("file", type=TOPOLOGY)
@click.option("--runs-dir", default="runs", show_default=True, help="Where the run folder goes.")
@click.option("--bandwidth/--no-bandwidth", default=True, show_default=True,
              help="Also measure shaped links with iperf3.")
@click.option("--links/--no-links", default=True, show_default=True,
              help="Also measure delay, jitter and loss of every profiled zone with ping.")
@click.option("--link-emulation", type=click.Choice(LINK_MODES), default="emulate",
              show_default=True, help="emulate: netem where the kernel has it, else the "
              "userspace relay; relay or netem: force one; shape: bandwidth only (delay, "
              "jitter and loss are then failed checks).")
@click.option("--accept-unemulated", is_flag=True,
              help="Count a profile value the twin cannot emulate as accepted, not failed "
              "(recorded in the report).")
@click.option("--link-probes", type=click.IntRange(20, 100_000), default=1000,
              show_default=True, help="Echo requests per link (fewer on slow links: 20 s budget).")
@click.option("--outage", "outage_specs", multiple=True, metavar="LINK[,LINK...]",
              help="After the all-up checks, take these zones/links down live and compare the "
              "twin's routes (OSPF) and the paths the model says change; repeatable.")
@click.option("--outages", "every_outage", is_flag=True,
              help="Do that for every single outage `topo outages` lists.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def verify_cmd(file, runs_dir, bandwidth, links, link_emulation, accept_unemulated, link_probes,
               outage_specs, every_outage, as_json):
    """Boot FILE's twin, measure reachability and bandwidth, compare with the static model.

    Exits 0 when everything agrees, 1 when something does not (each disagreement explained)."""
    import json as _json

    from cyberrange.errors import CheckFailed
    from cyberrange.model.loader import load_topology
    from cyberrange.run import Run, probe_runs_dir
    from cyberrange.twin.build import preflight
    from cyberrange.twin.verify import verify
    console = make_console(stderr=as_json)
    from cyberrange.twin.statecheck import states_for
    topo = load_topology(file)
    states = states_for(topo, outage_specs, every_outage)      # bad names: exit 2 before a boot
    preflight(need_dns=True)
    probe_runs_dir(runs_dir)
    run = Run.create(runs_dir, f"{topo.name}-verify", {"topology": file})
    run.manifest.update(kind="verify", topology=topo.name)
    run.save()
    from cyberrange.session import TwinSession
    with console.status("booting the twin") as st:
        rep = verify(topo, run.dir, bandwidth=bandwidth, links=links,
                     link_emulation=link_emulation, accept_unemulated=accept_unemulated,
                     link_probes=link_probes, states=states,
                     log=lambda m: console.print(f"[yellow]warning:[/] {m}"),
                     stage_cb=lambda s: st.update(f"twin: {s}"),
                     session=lambda twin: TwinSession(run, twin))
    (run.dir / "verify.json").write_text(_json.dumps(rep, indent=2, default=str))
    run.manifest.update(summary=rep["summary"])
    run.finish("done")
    if as_json:
        click.echo(_json.dumps(rep, indent=2, default=str))
    else:
        _print_verify(rep, console)
    if not rep["ok"]:
        s = rep["summary"]
        raise CheckFailed(f"the twin disagrees with the model: {s['disagree']} reachability, "
                          f"{s['bandwidth_measured'] - s['bandwidth_agree']} bandwidth and "
                          f"{s['links_checked'] - s['links_agree']} link and "
                          f"{s['states_checked'] - s['states_agree']} link-state disagreements "
                          f"(details in {run.dir / 'verify.json'})")


def _print_verify(rep: dict, console: Console) -> None:
    t = Table(title=f"Reachability: model vs twin ({rep['topology']})", box=box.SIMPLE_HEAVY,
              title_justify="left")
    for c in ("service", "probes", "allowed (model)", "got through (twin)", "agree", "disagree"):
        t.add_column(c, justify="right" if c != "service" else "left")
    by = {}
    for r in rep["reachability"]:
        key = f"{r['service']} {r['proto']}" + (f"/{r['port']}" if r.get("port") else "")
        by.setdefault(key, []).append(r)
    for key, rows in sorted(by.items()):
        dis = sum(not r["agree"] for r in rows)
        t.add_row(key, str(len(rows)), str(sum(r["predicted"] for r in rows)),
                  str(sum(r["observed"] for r in rows)), str(len(rows) - dis),
                  f"[red]{dis}[/]" if dis else "0")
    console.print(t)
    bad = [r for r in rep["reachability"] if not r["agree"]]
    for r in bad[:30]:
        console.print(f"  [red]✗[/] {r['src']} → {r['dst']} {r['proto']}"
                      f"{'/' + str(r['port']) if r.get('port') else ''}: {r['explanation']}")
    if len(bad) > 30:
        console.print(f"  … and {len(bad) - 30} more in verify.json")
    if rep.get("bandwidth"):
        b = Table(title="Bandwidth: profile vs measured (iperf3)", box=box.SIMPLE_HEAVY,
                  title_justify="left")
        for c in ("zone/link", "profile", "path", "profile Mbit/s", "measured", "ratio", "verdict"):
            b.add_column(c)
        for row in rep["bandwidth"]:
            verdict = ("[green]agree[/]" if row.get("agree") else
                       "[red]disagree[/]" if row.get("status") == "measured" else row.get("status", ""))
            b.add_row(row.get("zone", ""), row.get("profile", ""),
                      f"{row.get('client', '')} → {row.get('server', '')}",
                      f"{row.get('expected_mbit', '')}", f"{row.get('measured_mbit', '—')}",
                      f"{row.get('ratio', '—')}", verdict)
        console.print(b)
    if rep.get("links"):
        _print_links(rep["links"], console)
    if rep.get("states"):
        _print_states(rep["states"], console)
    s = rep["summary"]
    mark = "[green]the twin agrees with the model[/]" if rep["ok"] else "[red]disagreements found[/]"
    console.print(f"{s['agree']}/{s['probes']} probes agree; bandwidth {s['bandwidth_agree']}/"
                  f"{s['bandwidth_measured']} within 5%; links {s['links_agree']}/"
                  f"{s['links_checked']}"
                  + (f"; link states {s['states_agree']}/{s['states_checked']}"
                     if s.get("states_checked") else "")
                  + f"; boot {rep.get('boot_s')} s — {mark}")


def _print_links(rows: list[dict], console: Console) -> None:
    t = Table(title="Links: profile vs measured (ping)", box=box.SIMPLE_HEAVY,
              title_justify="left")
    for c in ("zone/link", "profile", "probes", "RTT ms (exp.)", "RTT σ ms (exp.)",
              "loss % (exp.)", "99 % interval", "verdict"):
        t.add_column(c)
    for r in rows:
        verdict = ("[green]agree[/]" if r.get("agree") and not r.get("accepted") else
                   "[yellow]accepted[/]" if r.get("accepted") else
                   f"[red]{'not emulated' if r.get('status') == 'not emulated' else 'disagree'}[/]")
        ci = r.get("loss_ci99") or ["—", "—"]
        t.add_row(r["zone"], r["profile"], str(r.get("probes", "")),
                  f"{r.get('rtt_ms', '—')} ({r['expected_rtt_ms']:g})",
                  f"{r.get('rtt_std_ms', '—')} ({r['expected_rtt_std_ms']:g})",
                  f"{r.get('loss_pct', '—')} ({r['expected_loss_pct']:g})",
                  f"{ci[0]}–{ci[1]}", verdict)
    console.print(t)
    for r in rows:
        if r.get("explanation") and not r.get("agree"):
            console.print(f"  [red]✗[/] {r['zone']}: {r['explanation']}")


def _print_states(rows: list[dict], console: Console) -> None:
    t = Table(title="Link states: model vs twin (after each outage)", box=box.SIMPLE_HEAVY,
              title_justify="left")
    for c in ("down", "routing", "pairs lost / rerouted (model)", "routes (twin)", "probes agree",
              "back up", "verdict"):
        t.add_column(c)
    for r in rows:
        probes = r.get("probes", [])
        routes = ("static (no failover)" if r["routing"] == "static" else
                  f"agree in {r['converge_s']} s" if r.get("routes_agree") else "[red]disagree[/]")
        back = ("—" if r["routing"] == "static" else
                f"{r['restore_s']} s" if r.get("restored") else "[red]not restored[/]")
        t.add_row(", ".join(r["down"]), r["routing"],
                  f"{r['lost_pairs']} / {r['rerouted_pairs']}", routes,
                  f"{sum(p['agree'] for p in probes)}/{len(probes)}", back,
                  "[green]agree[/]" if r["agree"] else "[red]disagree[/]")
    console.print(t)
    for r in rows:
        for line in r.get("route_diff", [])[:5]:
            console.print(f"  [red]✗[/] {', '.join(r['down'])} down: {line}")
        for p in r.get("probes", []):
            if not p["agree"]:
                console.print(f"  [red]✗[/] {', '.join(r['down'])} down: {p['src']} → {p['dst']} "
                              f"{p['proto']}{'/' + str(p['port']) if p.get('port') else ''}: "
                              f"model {'allows' if p['predicted'] else 'denies'} ({p['why']}), "
                              f"twin {p['result']}")


COMMANDS = [up, down, status, exec_, twin_group]
