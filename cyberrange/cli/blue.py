"""``cyberrange blue ...``: defender actions on a running twin, from a second terminal.

Thin commands over ``cyberrange.blue.actions``: each prints the action's log record (one line,
or ``--json``). A bad action is one ``error:`` line and exit 2 with nothing changed; an action
the kernel refused is logged ``failed`` and exits 1.
"""
from __future__ import annotations

import json
import os

import click

from cyberrange.cli._params import RESPONSE, TOPOLOGY, echo_json, json_option
from cyberrange.errors import CheckFailed

PROTOS = ("tcp", "udp", "icmp", "any")


def _default_actor() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "blue"


def common(f):
    """``--twin``, ``--actor`` and ``--json``, on every verb."""
    f = click.option("--json", "as_json", is_flag=True, help="Print the log record as JSON.")(f)
    f = click.option("--actor", default=None, metavar="NAME",
                     help="Who acts, for the action log (default: $SUDO_USER, $USER or "
                          "'blue').")(f)
    f = click.option("--twin", "ref", default=None, metavar="REF",
                     help="The twin: prefix, run id or run folder (default: the only twin "
                          "up).")(f)
    return f


def _twin(ref):
    from cyberrange.blue.target import live_twin
    return live_twin(ref)


def _done(rec: dict, as_json: bool) -> None:
    """Print one record; a ``failed`` one exits 1 after saying why."""
    if as_json:
        click.echo(json.dumps(rec, default=str))
    else:
        click.echo(f"{rec['id']} {rec['action']} {rec['result']}: {_describe(rec)}"
                   + (f" ({rec['applied_s'] * 1000:.0f} ms)" if rec["result"] == "applied"
                      else ""))
    if rec["result"] == "failed":
        raise CheckFailed(f"{rec['id']} {rec['action']}: {rec.get('reason')}")


def _describe(rec: dict) -> str:
    """The action in words, from its record."""
    p, a = rec.get("params") or {}, rec.get("action")
    if a in ("unblock", "release", "rule-remove"):
        return f"{p.get('id')} ({p.get('undoes')}) undone"
    if a == "block":
        what = p.get("proto", "any") + (f"/{p['port']}" if p.get("port") else "")
        where = (", ".join(p.get("where") or []) if p.get("at") == "port" else
                 "firewall " + ", ".join(p.get("firewalls") or []))
        return f"{p.get('src')} -> {p.get('dst')} {what} dropped at {where}"
    if a == "isolate":
        allow = ", ".join(p.get("allow") or []) or "nobody"
        return f"{p.get('node')} quarantined at {', '.join(p.get('ports') or [])}; " \
               f"reachable from {allow}"
    if a == "rule-add":
        return f"{p.get('firewall')}: {p.get('rule')} ({p.get('position')})"
    if a == "kill-sessions":
        n = len(rec.get("objects") or [])
        return f"{n} TCP session end(s) of {p.get('node')} with {p.get('peer')} destroyed" \
               + (f" — {rec['reason']}" if rec.get("reason") else "")
    if a == "restart-service":
        return f"{p.get('service')}/{p.get('port')} on {p.get('node')} restarted" \
               + (f" — {rec['reason']}" if rec.get("reason") else "")
    return json.dumps(p, default=str)


@click.group("blue")
def blue():
    """Defender actions on a running twin: block, isolate, firewall rules, kill sessions,
    restart services; every action logged in the run folder (actions.jsonl)."""


@blue.command("block")
@click.option("--src", default=None, metavar="X", help="Source: node, zone, CIDR or address.")
@click.option("--dst", default=None, metavar="Y",
              help="Destination: node, zone, CIDR or address (default: any).")
@click.option("--proto", type=click.Choice(PROTOS), default="any", show_default=True)
@click.option("--port", default=None, metavar="P", help="Destination port or lo-hi (tcp/udp).")
@click.option("--at", default="port", show_default=True, metavar="port|firewall|FW",
              help="port: the source nodes' switch ports (holds in their own zone too); "
                   "firewall: the firewall(s) between source and destination; or one "
                   "firewall's name.")
@common
def block(src, dst, proto, port, at, ref, actor, as_json):
    """Drop traffic from --src to --dst (--proto, --port) at once, established flows too."""
    from cyberrange.blue.actions import apply
    _done(apply(_twin(ref), "block", {"src": src, "dst": dst, "proto": proto, "port": port,
                                      "at": at}, actor or _default_actor()), as_json)


@blue.command("unblock")
@click.argument("action_id", metavar="ID")
@common
def unblock(action_id, ref, actor, as_json):
    """Undo block ID."""
    from cyberrange.blue.actions import revert
    _done(revert(_twin(ref), action_id, actor or _default_actor(), verb="unblock"), as_json)


@blue.command("isolate")
@click.argument("node")
@click.option("--allow", multiple=True, metavar="MGMT_NODE",
              help="A management node that may still reach NODE (repeatable; none: nobody).")
@common
def isolate(node, allow, ref, actor, as_json):
    """Quarantine NODE at its switch port(s): only the --allow nodes still reach it."""
    from cyberrange.blue.actions import apply
    _done(apply(_twin(ref), "isolate", {"node": node, "allow": list(allow)},
                actor or _default_actor()), as_json)


@blue.command("release")
@click.argument("target", metavar="ID|NODE")
@common
def release(target, ref, actor, as_json):
    """Undo the isolation ID (or the active isolation of NODE)."""
    from cyberrange.blue.actions import release_target, revert
    twin = _twin(ref)
    _done(revert(twin, release_target(twin, target), actor or _default_actor(),
                 verb="release"), as_json)


@blue.group("rule")
def rule():
    """Firewall rules in the topology's own syntax, added to or removed from a live firewall."""


@rule.command("add")
@click.argument("firewall")
@click.argument("text", metavar="RULE")
@click.option("--first/--last", "first", default=True, show_default=True,
              help="Before the model's rules (and earlier --first rules), or after them "
                   "(before the firewall's default).")
@common
def rule_add(firewall, text, first, ref, actor, as_json):
    """Add RULE to FIREWALL: 'deny from ops-lan to c2-server proto tcp port 8080' or
    '{action: allow, from: mgmt, to: any}' (the keys of a topology file's rules)."""
    from cyberrange.blue.actions import apply
    _done(apply(_twin(ref), "rule-add", {"firewall": firewall, "rule": text,
                                         "position": "first" if first else "last"},
                actor or _default_actor()), as_json)


@rule.command("remove")
@click.argument("action_id", metavar="ID")
@common
def rule_remove(action_id, ref, actor, as_json):
    """Remove the rule added by ID."""
    from cyberrange.blue.actions import revert
    _done(revert(_twin(ref), action_id, actor or _default_actor(), verb="rule-remove"),
          as_json)


@blue.command("kill-sessions")
@click.argument("node")
@click.option("--peer", default=None, metavar="PEER",
              help="Only sessions with this node, zone, CIDR or address (default: every peer).")
@common
def kill_sessions(node, peer, ref, actor, as_json):
    """Destroy NODE's TCP sessions (with --peer); both ends when the peer is a node."""
    from cyberrange.blue.actions import apply
    _done(apply(_twin(ref), "kill-sessions", {"node": node, "peer": peer},
                actor or _default_actor()), as_json)


@blue.command("restart")
@click.argument("node")
@click.option("--service", default=None, metavar="TYPE|PORT",
              help="Which service of NODE (needed when it runs several).")
@common
def restart(node, service, ref, actor, as_json):
    """Restart a service of NODE with the command the twin started it with (a Modbus PLC
    gets its initial registers back)."""
    from cyberrange.blue.actions import apply
    _done(apply(_twin(ref), "restart-service", {"node": node, "service": service},
                actor or _default_actor()), as_json)


@blue.command("list")
@click.option("--all", "everything", is_flag=True, help="Every record of the log, not only "
                                                         "the active actions.")
@click.option("--twin", "ref", default=None, metavar="REF",
              help="The twin: prefix, run id or run folder (default: the only twin up).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def list_(everything, ref, as_json):
    """The active actions (block, isolate, rule add not yet undone), oldest first. A run
    folder whose twin is gone is read too (--twin RUN-FOLDER)."""
    from pathlib import Path

    from cyberrange.blue.actions import active, history
    from cyberrange.errors import UserError
    try:
        twin = _twin(ref)
        run_dir, title = twin.run_dir, f"twin {twin.prefix} ({twin.topo.name})"
    except UserError:
        if not (ref and (Path(ref) / "manifest.json").is_file()):
            raise
        run_dir, title = Path(ref), f"run {Path(ref).name} (its twin is gone)"
    recs = history(run_dir) if everything else active(run_dir)
    if as_json:
        click.echo(json.dumps(recs, default=str))
        return
    import time

    from rich import box
    from rich.table import Table

    from cyberrange.cli._console import make_console
    t = Table(box=box.SIMPLE_HEAVY, title_justify="left",
              title=f"{'action log' if everything else 'active actions'} — {title}")
    for c in ("id", "time", "actor", "action", "what", "result"):
        t.add_column(c)
    for r in recs:
        t.add_row(r.get("id", ""), time.strftime("%H:%M:%S", time.localtime(r.get("time", 0))),
                  str(r.get("actor", "")), str(r.get("action", "")), _describe(r),
                  str(r.get("result", "")) + (f": {r['reason']}" if r.get("reason") else ""))
    console = make_console()
    console.print(t if recs else ("no action logged" if everything else "no active action"))


@blue.command("watch")
@click.argument("ref", required=False, metavar="[RUN|TWIN]")
@click.option("--instructor", is_flag=True,
              help="White cell view: also the real phase and the attack steps (ground truth: "
                   "never on the defender's screen).")
@click.option("--once", is_flag=True, help="Draw one frame and exit (for scripts and tests).")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
@click.option("--runs-dir", default="runs", show_default=True,
              help="Where RUN is looked for by id or 'latest'.")
def watch(ref, instructor, once, as_json, runs_dir):
    """The red/blue screen: live alerts, mission availability, active blue actions, tactical
    link states, phase and elapsed time of a drill running in another terminal (RUN: folder, id or 'latest'; TWIN: a
    live twin's prefix; default: the only twin up). Redrawn twice a second from the files of
    the run folder; ends with a one-line summary when the drill ends. The defender's view has
    no ground truth on it (the drill needs --live for its alerts)."""
    from cyberrange.blue.watch import Watch, find_run, summary_line
    from cyberrange.cli._console import make_console
    from cyberrange.report.watch_view import render, run_live
    w = Watch(find_run(ref, runs_dir), instructor=instructor)
    if as_json:
        click.echo(json.dumps(w.snapshot(), default=str))
        return
    console = make_console()
    if once or not console.is_terminal and w.final:
        console.print(render(w.snapshot(), console.height if console.is_terminal else None,
                             console.width))
        return
    snap = run_live(console, w.snapshot) if console.is_terminal else _plain(w)
    if snap.get("stopped"):
        click.echo(f"stopped watching run {snap.get('run_id')} "
                   f"(it is {snap.get('status')})")
        return
    click.echo(summary_line(snap))


def _plain(w, refresh_s: float = 0.5) -> dict:
    """Not a terminal (a log file, a pipe): no redrawing; wait for the end quietly and
    print the last frame."""
    import time
    snap = w.snapshot()
    try:
        while not (snap.get("final") or snap.get("owner_gone")):
            time.sleep(refresh_s)
            snap = w.snapshot()
    except KeyboardInterrupt:
        snap["stopped"] = True
    from cyberrange.cli._console import make_console
    from cyberrange.report.watch_view import render
    console = make_console()
    console.print(render(snap, None, console.width))
    return snap


@click.group("response")
def response():
    """Check automated-response files (responses/*.yaml, docs/response-format.md)."""


@response.command("check")
@click.argument("files", nargs=-1, required=True, type=RESPONSE)
@click.option("--topology", "topology_file", type=TOPOLOGY, default=None,
              help="Check every node, zone and rule name against this topology.")
@click.option("--detectors", "detectors_dir", default=None, metavar="DIR",
              help="Check every detector name a rule matches on against this folder.")
@json_option()
def response_check(files, topology_file, detectors_dir, as_json):
    """Check response files without a twin: the schema, every action and parameter and, with
    --topology/--detectors, every name (what `drill run --respond` checks before it builds)."""
    from cyberrange.blue.response_format import load_response
    from cyberrange.cli._console import make_console
    topo = dets = None
    if topology_file:
        from cyberrange.model.loader import load_topology
        topo = load_topology(topology_file)
    if detectors_dir:
        from cyberrange.detect.registry import load_detectors
        dets = load_detectors(detectors_dir)
    console = make_console(stderr=as_json)
    done = []
    for f in files:
        r = load_response(f, topo, dets)
        done.append({"file": f, "response": r.name, "rules": len(r.rules), "ok": True})
        against = f" against topology {topo.name}" if topo else ""
        console.print(f"[bold green]ok[/] {f}: response [bold]{r.name}[/], {len(r.rules)} "
                      f"rule(s){against}; at most {r.max_actions} actions; never isolates "
                      f"{len(r.protected) if topo else len(r.never_isolate)} node(s)")
    if as_json:
        echo_json(done)


COMMANDS = [blue, response]
