"""Real routing in the twin: FRR's zebra and ospfd in every router and firewall namespace.

When a topology says ``routing: {protocol: ospf}``, the twin installs no computed static routes
on its routers (hosts keep their default gateway, hand-given ``routes:`` stay static) and
``Frr(twin).start()`` runs, per router or firewall node:

| daemon | started as | files |
|---|---|---|
| ``zebra`` | ``/usr/lib/frr/zebra -u frr -g frr -f zebra.conf -z zserv.api --vty_socket DIR -P 0`` inside the node's namespace | ``DIR = /run/cyberrange/<prefix>-frr/<node>/``: configs, pid files, vty and zserv sockets (short paths: a socket path has at most 107 bytes) |
| ``ospfd`` | the same, once zebra's socket exists (ospfd retries a missing zebra only every 10 s) | config text from ``model/ospf.py``, copied to ``config/frr-<node>.conf`` of the run |

Both log to ``logs/frr-<node>-<daemon>.log`` of the run (stdout, opened by us). The daemons are
processes of the twin (``twin.procs``), so ``stop()``, Ctrl-C and ``cyberrange down`` end them
like every other; ``Frr.stop()`` first sends SIGTERM so that they exit cleanly, then removes the
runtime folder and FRR's per-process crash folder ``/var/tmp/frr/<daemon>.<pid>`` of exactly
our pids. A runtime folder left by a twin that died (no state file, no namespace) is removed at
the next start.

``start()`` returns once every router has a route to every subnet it can reach with all links
up (``model/ospf.expected_prefixes``), or raises :class:`EnvironmentProblem` naming the router
and the missing prefixes. Routes are read from ``/proc/thread-self/net/route`` inside the
namespace (no process per check).
"""
from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from cyberrange.errors import EnvironmentProblem
from cyberrange.model import ospf
from cyberrange.twin import netns
from cyberrange.twin.state import STATE_DIR, namespaces, pid_alive

FRR_BIN = Path(os.environ.get("CYBERRANGE_FRR_BIN", "/usr/lib/frr"))
DAEMONS = ("zebra", "ospfd")
FRR_USER = "frr"
CRASH_DIR = Path("/var/tmp/frr")
CONVERGE_TIMEOUT = 30.0


def binaries() -> dict[str, Path]:
    """Daemon name -> its program (which may be missing)."""
    return {d: FRR_BIN / d for d in DAEMONS}


def missing() -> list[str]:
    """What of FRR this machine lacks (programs, the ``frr`` user), empty when all is there."""
    out = [str(p) for p in binaries().values() if not os.access(p, os.X_OK)]
    try:
        pwd.getpwnam(FRR_USER)
    except KeyError:
        out.append(f"user {FRR_USER}")
    return out


def check_installed() -> None:
    gone = missing()
    if gone:
        raise EnvironmentProblem(f"routing: ospf needs FRR ({', '.join(gone)} missing): "
                                 "apt-get install frr (Debian package 'frr')")


def cleanup_stale() -> list[Path]:
    """Remove runtime folders ``<prefix>-frr`` of twins that are gone (no state file and no
    namespace of that prefix); returns what was removed."""
    removed = []
    for d in STATE_DIR.glob("c*-frr"):
        prefix = d.name[:-4]
        if (STATE_DIR / f"{prefix}.json").exists() or namespaces(prefix):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def read_routes(ns: str) -> dict[ipaddress.IPv4Network, tuple[ipaddress.IPv4Address, str]]:
    """The main table of namespace ``ns``: subnet -> (gateway, device), gatewayed routes only
    (the connected ones have gateway 0.0.0.0 and are left out)."""
    with netns.entered(ns):
        lines = Path("/proc/thread-self/net/route").read_text().splitlines()[1:]
    out = {}
    for line in lines:
        f = line.split()
        if len(f) < 8:
            continue
        dst, gw, mask = (struct.pack("<I", int(x, 16)) for x in (f[1], f[2], f[7]))
        if gw == b"\0\0\0\0":
            continue
        net = ipaddress.IPv4Network((socket.inet_ntoa(dst), socket.inet_ntoa(mask)))
        out[net] = (ipaddress.IPv4Address(gw), f[0])
    return out


def via_zone(topo, ns: str, dst) -> str | None:
    """The zone (or link) whose subnet holds the next hop that namespace ``ns`` uses towards
    ``dst`` (an address or a subnet; longest prefix wins), None without a gatewayed route.
    Works for static and OSPF routes alike."""
    dst = ipaddress.ip_network(dst, strict=False)
    best = None
    for net, (gw, _dev) in read_routes(ns).items():
        if dst.subnet_of(net) and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, gw)
    if best is None:
        return None
    return next((z.name for z in topo.zones.values() if best[1] in z.subnet), None)


class Frr:
    """zebra + ospfd in every router and firewall of one twin (see the module docstring)."""

    def __init__(self, twin, timeout: float = CONVERGE_TIMEOUT):
        self.twin = twin
        self.topo = twin.topo
        self.timeout = timeout
        self.routers = [n.name for n in ospf.ospf_routers(self.topo)]
        self.runtime = STATE_DIR / f"{twin.state.prefix}-frr"
        self.procs: dict[tuple[str, str], subprocess.Popen] = {}
        self.converged_s: float | None = None
        self.ready_s: dict[str, float] = {}    # router -> seconds until it had every route
        self._stopped = False

    # -- start -----------------------------------------------------------------
    def start(self) -> Frr:
        check_installed()
        cleanup_stale()
        t0 = time.monotonic()
        user = pwd.getpwnam(FRR_USER)
        for r in self.routers:
            self._write_config(r, user)
        for r in self.routers:
            self._daemon(r, "zebra")
        self._wait_sockets(time.monotonic() + 10)
        for r in self.routers:
            self._daemon(r, "ospfd")
        self.wait_converged(time.monotonic() + self.timeout)
        self.converged_s = round(time.monotonic() - t0, 2)
        return self

    def folder(self, router: str) -> Path:
        return self.runtime / router

    def _write_config(self, router: str, user) -> None:
        d = self.folder(router)
        d.mkdir(parents=True, exist_ok=True)
        text = ospf.frr_conf(self.topo, router,
                             devname=lambda itf: self.twin._dev(router, itf))
        (d / "ospfd.conf").write_text(text)
        (d / "zebra.conf").write_text(ospf.zebra_conf(self.topo, router))
        (self.twin.run_dir / "config" / f"frr-{router}.conf").write_text(text)
        for p in (self.runtime, d, d / "ospfd.conf", d / "zebra.conf"):
            os.chown(p, user.pw_uid, user.pw_gid)

    def _daemon(self, router: str, daemon: str) -> subprocess.Popen:
        d = self.folder(router)
        argv = [str(binaries()[daemon]), "-u", FRR_USER, "-g", FRR_USER,
                "-f", str(d / f"{daemon}.conf"), "-i", str(d / f"{daemon}.pid"),
                "-z", str(d / "zserv.api"), "--vty_socket", str(d), "-P", "0",
                "--log", "stdout"]
        with open(self.twin.run_dir / "logs" / f"frr-{router}-{daemon}.log", "ab") as log:
            p = self.twin.popen(router, argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs[(router, daemon)] = p
        return p

    def _wait_sockets(self, deadline: float) -> None:
        """Every zebra listens on its zserv socket (or one died: say why)."""
        waiting = list(self.routers)
        while waiting:
            for r in list(waiting):
                if (self.folder(r) / "zserv.api").exists():
                    waiting.remove(r)
                elif self.procs[(r, "zebra")].poll() is not None:
                    raise EnvironmentProblem(f"FRR zebra on {r} exited: {self._tail(r, 'zebra')}")
            if waiting and time.monotonic() > deadline:
                raise EnvironmentProblem(f"FRR zebra did not start on {', '.join(waiting)}: "
                                         f"{self._tail(waiting[0], 'zebra')}")
            time.sleep(0.02)

    def wait_converged(self, deadline: float) -> None:
        """Every router has a route to every subnet it can reach with all links up."""
        want = {r: ospf.expected_prefixes(self.topo, r) for r in self.routers}
        t0 = time.monotonic()
        while True:
            short = {}
            for r in self.routers:
                for daemon in DAEMONS:
                    if self.procs[(r, daemon)].poll() is not None:
                        raise EnvironmentProblem(f"FRR {daemon} on {r} exited: "
                                                 f"{self._tail(r, daemon)}")
                gap = want[r] - set(self.routes(r))
                if gap:
                    short[r] = gap
                else:
                    self.ready_s.setdefault(r, round(time.monotonic() - t0, 2))
            if not short:
                return
            if time.monotonic() > deadline:
                r, gap = next(iter(short.items()))
                more = f" (and {len(short) - 1} more routers)" if len(short) > 1 else ""
                raise EnvironmentProblem(
                    f"OSPF did not converge in {self.timeout:g} s: {r} has no route to "
                    f"{', '.join(str(n) for n in sorted(gap))}{more}; see "
                    f"logs/frr-{r}-ospfd.log")
            time.sleep(0.1)

    def _tail(self, router: str, daemon: str) -> str:
        path = self.twin.run_dir / "logs" / f"frr-{router}-{daemon}.log"
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1][:300] if lines else "no output"

    # -- looking at it -----------------------------------------------------------
    def routes(self, router: str) -> dict:
        """``router``'s gatewayed routes: subnet -> (gateway, device)."""
        return read_routes(self.twin.ns[router])

    def via_zone(self, router: str, dst) -> str | None:
        """The zone or link ``router``'s route towards ``dst`` leaves by (see :func:`via_zone`)."""
        return via_zone(self.topo, self.twin.ns[router], dst)

    def vtysh(self, router: str, *commands: str, timeout: float = 10) -> str:
        """Run ``vtysh -c ...`` against ``router``'s daemons; their output."""
        argv = ["vtysh", "--vty_socket", str(self.folder(router))]
        for c in commands:
            argv += ["-c", c]
        r = netns.run(self.twin.ns[router], argv, timeout=timeout)
        return r.stdout + r.stderr

    # -- stop --------------------------------------------------------------------
    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM every daemon (they remove their crash folders on a clean exit), SIGKILL what
        is left after ``grace``, then remove the runtime folder and our crash folders."""
        if self._stopped:
            return
        self._stopped = True
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=2)
        self.cleanup()

    def cleanup(self) -> None:
        for (_router, daemon), p in self.procs.items():
            crash = CRASH_DIR / f"{daemon}.{p.pid}"
            if crash.is_dir() and not pid_alive(p.pid):
                shutil.rmtree(crash, ignore_errors=True)
        shutil.rmtree(self.runtime, ignore_errors=True)
