"""The blue actions that happen once, on processes and sockets rather than rules:

- ``kill-sessions NODE --peer PEER``: destroy the node's TCP sessions with the peer. The
  kernel's socket-destroy call (``ss -K``, ``INET_DIAG_DESTROY``) aborts each socket and sends
  the other end a RST; there is no ``conntrack`` tool on the twin's machine and none is needed,
  since a firewall's conntrack entry closes with the RST. When the peer is a node of the twin
  its end is destroyed too (so a block that drops the RST cannot keep it half-open). Sockets
  that survive are reported: a kernel without ``INET_DIAG_DESTROY`` lists them but cannot
  destroy them, and the action then ends ``failed``.
- ``restart-service NODE [--service TYPE|PORT]``: stop the service's process and start it
  again with the command the twin started it with (``services/``: the same ``argv`` from the
  same model and run folder, so a Modbus PLC comes back with its initial registers, a login
  service with its accounts), then wait until it listens. The new process lives in the node's
  namespace like the first one, so the twin's teardown stops it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from cyberrange.blue.plans import Outcome, Plan, resolve_peer
from cyberrange.errors import UserError
from cyberrange.twin import netns


# -- kill-sessions ----------------------------------------------------------------------------
def plan_kill_sessions(lt, params: dict) -> Plan:
    name = str(params.get("node") or "").strip()
    if not name:
        raise UserError("kill-sessions needs a NODE")
    node = lt.node(name)
    peer = str(params.get("peer") or "any").strip()
    nets = resolve_peer(lt, peer)
    sides = [(name, [str(n) for n in nets])]
    if peer in lt.topo.nodes and peer != name:
        sides.append((peer, [f"{i.ip}/32" for i in node.interfaces]))
    norm = {"node": name, "peer": peer, "peer_nets": [str(n) for n in nets]}

    def run(aid: str) -> Outcome:
        objects, left = [], []
        for who, where in sides:
            ns = lt.ns[who]
            flt = _dst_filter(where)
            r = netns.run(ns, ["ss", "-K", "-H", "-tn", *flt], timeout=20)
            if r.returncode != 0:
                return Outcome(False, objects, f"ss -K in {who}: "
                               f"{(r.stderr or '').strip()[:200] or r.returncode}")
            objects += [f"{ns}: tcp {_socket(line)} ({who})" for line in r.stdout.splitlines()
                        if line.strip()]
            after = netns.run(ns, ["ss", "-H", "-tn", *flt], timeout=20).stdout
            left += [f"{who}: {_socket(ln)}" for ln in after.splitlines()
                     if ln.strip() and ln.split()[0] == "ESTAB"]
        if left:
            return Outcome(False, objects, "the kernel did not destroy these sessions "
                           "(no INET_DIAG_DESTROY?): " + "; ".join(left[:5]))
        return Outcome(True, objects, None if objects else "no session to kill")
    return Plan("kill-sessions", norm, run=run)


def _dst_filter(nets: list[str]) -> list[str]:
    """An ``ss`` filter: remote address in any of ``nets`` (none: every remote address)."""
    if not nets:
        return []
    out = ["("]
    for k, n in enumerate(nets):
        out += (["or"] if k else []) + ["dst", n]
    return out + [")"]


def _socket(line: str) -> str:
    """``10.0.0.5:41234 -> 10.0.1.2:80`` from an ``ss -tn`` line."""
    f = line.split()
    return f"{f[3]} -> {f[4]}" if len(f) >= 5 else line.strip()


# -- restart-service --------------------------------------------------------------------------
def plan_restart(lt, params: dict) -> Plan:
    name = str(params.get("node") or "").strip()
    if not name:
        raise UserError("restart needs a NODE")
    node = lt.node(name)
    if not node.services:
        raise UserError(f"restart: {name} runs no service")
    want = str(params.get("service") or "").strip()
    svcs = [s for s in node.services if not want or want in (s.type, str(s.port))]
    if not svcs:
        raise UserError(f"restart: {name} has no service {want!r} (it has "
                        + ", ".join(f"{s.type}/{s.port}" for s in node.services) + ")")
    if len(svcs) > 1:
        raise UserError(f"restart: {name} runs several services; name one with --service "
                        + " or ".join(f"{s.type} ({s.port})" for s in svcs))
    svc = svcs[0]
    norm = {"node": name, "service": svc.type, "port": svc.port, "proto": svc.proto}
    return Plan("restart-service", norm, run=lambda aid: _restart(lt, node, svc))


def _restart(lt, node, svc) -> Outcome:
    from cyberrange.services.registry import SERVICES, Launch
    label = f"{node.name}-{svc.type}-{svc.port}"
    logs = lt.run_dir / "logs"
    argv = SERVICES[svc.type].argv(Launch(node=node.name, ip=str(node.ip), service=svc,
                                          topology=lt.topo, run_dir=lt.run_dir,
                                          log=logs / f"{label}.log"))
    ns = lt.ns[node.name]
    old = _processes(ns, argv)
    objects = [f"{ns}: pid {pid} stopped ({' '.join(cmd[1:4])} ...)" for pid, cmd in old]
    command = old[0][1] if old else argv            # the very command it was started with
    _stop([pid for pid, _ in old])
    deadline = time.monotonic() + 3
    while netns.listening(ns, svc.port, svc.proto) and time.monotonic() < deadline:
        time.sleep(0.05)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{label}.out", "a") as out:
        # the action runs with SIGINT/SIGTERM/SIGHUP held back (actions._uninterrupted), and a
        # child inherits that mask: the service must take the teardown's SIGTERM again
        proc = netns.popen(ns, command, stdout=out, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True,
                           preexec_fn=_unblock_signals)
    objects.append(f"{ns}: pid {proc.pid} started ({svc.type}/{svc.port})")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if netns.listening(ns, svc.port, svc.proto):
            return Outcome(True, objects)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = (logs / f"{label}.out").read_text(errors="replace").strip().splitlines()[-1:]
    return Outcome(False, objects, f"{svc.type}/{svc.port} on {node.name} did not listen "
                   f"again: {tail[0][:200] if tail else 'no output'}")


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _processes(ns: str, argv: list[str]) -> list[tuple[int, list[str]]]:
    """Processes in namespace ``ns`` running ``argv`` (the interpreter's path may differ)."""
    from cyberrange.twin.state import pids_in_netns
    inode = netns.inode(ns)
    out = []
    for pid in pids_in_netns({inode} if inode else set()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
        except OSError:
            continue
        if cmd and cmd[1:] == argv[1:] and os.path.basename(cmd[0]).startswith(
                os.path.basename(argv[0])[:6]):
            out.append((pid, cmd))
    return out


def _stop(pids: list[int]) -> None:
    from cyberrange.twin.state import wait_gone
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        pids = wait_gone(pids, 2.0)
        if not pids:
            return
