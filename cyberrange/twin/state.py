"""Kernel names of a twin's objects, the state file that lists them, and teardown.

Every kernel object a twin creates lives in a named network namespace whose name carries the
run's *prefix*, ``c`` and four hex digits (``c3f9a``): node ``N`` is ``<prefix>h<N>``, the
switches (bridges, their ports, the sensors' monitor veths and nftables table) are all in
``<prefix>sw``. Nothing of a twin is in the host's namespace, so names inside a namespace are
short and fixed (``eth0``, ``br3``, ``p117``, ``m2a``): always within the kernel's 15 bytes,
never truncated, never colliding with another twin's.

The state file (``/run/cyberrange/<prefix>.json``, copied into the run folder) is written
before the first object exists, so that ``cyberrange down`` can remove a twin whose process
died: it kills the processes inside the twin's namespaces, then deletes the namespaces (the
kernel removes their devices with them), and nothing else. ``mn -c`` is never used: it would
kill other users' Mininet networks. (Twins of earlier versions, with bridges and veths in the
host's namespace and a Mininet shell per node, are still removed by the same teardown.)
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cyberrange.twin import netns

STATE_DIR = Path(os.environ.get("CYBERRANGE_STATE_DIR", "/run/cyberrange"))
PREFIX_RE = re.compile(r"^c[0-9a-f]{4}$")


def new_prefix() -> str:
    """A prefix no live twin on this machine uses."""
    used = {p.stem for p in STATE_DIR.glob("c*.json")} | _prefixes_in_use()
    for _ in range(1000):
        p = "c" + secrets.token_hex(2)
        if p not in used:
            return p
    raise RuntimeError("no free twin prefix")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    """Run a command outside this process group: a Ctrl-C at the terminal (sent to the whole
    foreground group) must not kill an ``ip link del`` halfway through a teardown."""
    return subprocess.run(argv, capture_output=True, text=True, start_new_session=True)


def _prefixes_in_use() -> set[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    names = re.findall(r"^\d+: ([^:@]+)", out, flags=re.M) + namespaces()
    return {n[:5] for n in names if re.match(r"^c[0-9a-f]{4}([hsm]\d|sw$)", n)}


NETNS_RE = re.compile(r"^c[0-9a-f]{4}(h\d+|sw)$")


def namespaces(prefix: str | None = None) -> list[str]:
    """Named namespaces of twins (of one prefix): ``<prefix>h<N>``, ``<prefix>sw``."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    return sorted(n for n in names if NETNS_RE.match(n) and (prefix is None or n[:5] == prefix))


def object_re(prefix: str) -> re.Pattern:
    """Matches the kernel interface names of one twin, and only those."""
    return re.compile(rf"^{re.escape(prefix)}[hsm]\d+(-eth\d+|[ab])?$")


@dataclass
class TwinState:
    prefix: str
    run_id: str
    run_dir: str
    topology: str
    owner_pid: int                                   # the process that holds the Mininet objects
    created: float = field(default_factory=time.time)
    owner_start: int = 0                             # its start time (clock ticks since boot)
    namespaces: dict[str, str] = field(default_factory=dict)     # model node -> netns name
    switch_ns: str = ""                                          # the switches' netns
    node_pids: dict[str, int] = field(default_factory=dict)      # (earlier versions: shells)
    netns: dict[str, str] = field(default_factory=dict)          # (earlier versions: inodes)
    kernel_names: dict[str, str] = field(default_factory=dict)   # model node/zone -> kernel name
    root_pids: list[int] = field(default_factory=list)           # tcpdump etc. in the root ns
    nft_table: str = ""                                          # netdev table in the root ns
    status: str = "building"

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        # fields are plain JSON values: no deep copy (asdict) of a 5,000-node map per save
        text = json.dumps({f: getattr(self, f) for f in self.__dataclass_fields__})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        if self.run_dir and Path(self.run_dir).is_dir():
            (Path(self.run_dir) / "twin-state.json").write_text(text)

    @classmethod
    def load(cls, path: Path) -> "TwinState":
        data = json.loads(Path(path).read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def owner_alive(self) -> bool:
        """Whether the process that built this twin still runs (the same process: a pid that
        was reused by another program since does not count)."""
        if not _alive(self.owner_pid):
            return False
        return not self.owner_start or process_start(self.owner_pid) == self.owner_start


def process_start(pid: int) -> int:
    """A process's start time in clock ticks since boot (0 if unknown): with the pid, it names
    one process for good, where a pid alone may be reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def stale_states() -> list["TwinState"]:
    """Twins whose owner died without removing them (SIGKILL, a crash, a forced quit)."""
    return [s for s in live_states() if not s.owner_alive]


def live_states() -> list[TwinState]:
    if not STATE_DIR.is_dir():
        return []
    states = []
    for p in sorted(STATE_DIR.glob("c*.json")):
        try:
            states.append(TwinState.load(p))
        except (OSError, ValueError, TypeError):
            continue
    return states


def netns_inode(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def pids_in_netns(inodes: set[str]) -> list[int]:
    """Every process whose network namespace is one of ``inodes``."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and netns_inode(int(d)) in inodes:
            found.append(int(d))
    return found


def _kill(pids, sig=signal.SIGTERM) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # zombies count as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


_alive = pid_alive


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_gone(pids, timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive (zombies count as gone); return those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.005)
        left = [p for p in left if _alive(p)]
    return left


def shells_of(prefix: str, kind: str = "hs") -> list[int]:
    """The Mininet shells (``bash ... mininet:<prefix>h3``) of one twin, alive: host shells
    (``h``, each in its own namespace), switch shells (``s``, in the root namespace)."""
    pat = re.compile(rf"mininet:{re.escape(prefix)}[{kind}]\d+\b")
    return [int(d) for d in os.listdir("/proc")
            if d.isdigit() and pat.search(_cmdline(int(d))) and _alive(int(d))]


def teardown(state: TwinState, grace: float = 2.0) -> dict:
    """Remove every kernel object of one twin, and only those. Safe to call twice.

    1. every process inside the twin's namespaces (and, for twins of earlier versions, its
       Mininet shells and the processes it started in the host's namespace): SIGTERM, wait
       until they are gone (at most ``grace``), SIGKILL what is left;
    2. the namespaces, in one ``ip -batch``: the kernel deletes their veths, bridges, qdiscs
       and nftables tables with them;
    3. (earlier versions) prefixed links and the sensors' table in the host's namespace.
    The state file is deleted only when nothing is left, so that ``down`` can retry."""
    removed = {"processes": 0, "links": 0, "nft": 0, "namespaces": 0}
    names = sorted(set(state.namespaces.values()) | {state.switch_ns} - {""}
                   | set(namespaces(state.prefix)))
    # Never the namespace this process runs in, nor pid 1's (when it can be read: in some
    # sandboxes /proc/1/ns is not readable even by root).
    outside = {netns_inode(os.getpid()), netns_inode(1)} - {None}
    host_shells = shells_of(state.prefix, "h")
    inodes = {i for i in map(netns.inode, names) if i}
    inodes |= {i for i in state.netns.values() if i}
    inodes |= {i for i in map(netns_inode, host_shells) if i}
    inodes -= outside
    root_pids = [p for p in state.root_pids if _alive(p) and state.prefix in _cmdline(p)]
    shell_pids = set(host_shells) | set(shells_of(state.prefix, "s")) | {
        p for p in state.node_pids.values()
        if _alive(p) and f"mininet:{state.prefix}" in _cmdline(p)}
    victims = (set(root_pids) | shell_pids | set(pids_in_netns(inodes))) - {os.getpid()}
    # interactive bash ignores SIGTERM: Mininet shells get SIGKILL at once (nothing to flush)
    shells = {p for p in victims if "mininet:" in _cmdline(p)}
    _kill(shells, signal.SIGKILL)
    _kill(victims - shells, signal.SIGTERM)
    left = wait_gone(victims, grace)
    _kill(left, signal.SIGKILL)
    wait_gone(left, 1.0)
    removed["processes"] = len(victims)
    existing = [n for n in names if netns.path(n).exists()]
    if existing:
        r = _run_input(["ip", "-force", "-batch", "-"],
                       "".join(f"netns del {n}\n" for n in existing))
        removed["namespaces"] = len(existing) - r.stderr.count("Cannot remove")
    # earlier versions: links, bridges and the sensors' table in the host's namespace
    pat = object_re(state.prefix)
    out = _run(["ip", "-o", "link", "show"]).stdout
    links = [n for n in re.findall(r"^\d+: ([^:@]+)", out, flags=re.M) if pat.match(n)]
    if links:
        # bridges first (so their ports are free), then veths (deleting one end removes both)
        links.sort(key=lambda n: "-eth" in n)
        _run_input(["ip", "-force", "-batch", "-"], "".join(f"link del {n}\n" for n in links))
        removed["links"] = len(links)
    if state.nft_table and state.nft_table in _run(["nft", "list", "tables", "netdev"]).stdout:
        removed["nft"] += _run(["nft", "delete", "table", "netdev", state.nft_table]
                               ).returncode == 0
    # runtime files of the twin's own daemons (FRR: configs, pid files, sockets), once every
    # process of the twin is gone; only this prefix's folder (a crash + `down` left it before)
    runtime = state.path.parent / f"{state.prefix}-frr"
    if PREFIX_RE.match(state.prefix) and runtime.is_dir():
        shutil.rmtree(runtime, ignore_errors=True)
        removed["files"] = 1
    left = leftovers(state.prefix)
    stray = [p for p in pids_in_netns(inodes) if _alive(p) and p != os.getpid()]
    if stray:
        left["processes"] = sorted(set(left["processes"]) | {f"{p} {_cmdline(p).strip()}"
                                                             for p in stray})
    removed["left"] = sum(len(v) for v in left.values())
    if removed["left"]:
        removed["left_objects"] = left
    else:                 # the state file goes only once nothing is left: `down` can retry
        try:
            state.path.unlink()
        except FileNotFoundError:
            pass
    return removed


def _run_input(argv: list[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=text, capture_output=True, text=True,
                          start_new_session=True)


def leftovers(prefix: str | None = None) -> dict[str, list[str]]:
    """Kernel objects that look like a twin's (any twin's, or one prefix's): its namespaces,
    processes inside them or named after it, and (earlier versions) links and nftables tables
    in the host's namespace. Empty lists everywhere: nothing is left."""
    px = re.escape(prefix) if prefix else r"c[0-9a-f]{4}"
    pat = re.compile(rf"^{px}[hsm]\d")
    out = _run(["ip", "-o", "link", "show"]).stdout
    links = [n for n in re.findall(r"^\d+: ([^:@]+)", out, flags=re.M) if pat.match(n)]
    spaces = namespaces(prefix)
    inodes = {i for i in map(netns.inode, spaces) if i} - {netns_inode(os.getpid())}
    named = re.compile(rf"mininet:{px}h|tcpdump .*{px}m\d")
    procs = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            pid = int(d)
            cl = _cmdline(pid)
            if named.search(cl) or (inodes and netns_inode(pid) in inodes and _alive(pid)):
                procs.append(f"{d} {cl.strip()}")
    nft = _run(["nft", "list", "tables", "netdev"]).stdout
    tables = [t for t in re.findall(r"table netdev (\S+)", nft)
              if t.startswith("cyberrange_" + (prefix or ""))]
    return {"links": links, "processes": procs, "nft_tables": tables, "namespaces": spaces}


def nothing_left(prefix: str | None = None) -> bool:
    """True when no kernel object of the twin (or of any twin) is left."""
    return not any(leftovers(prefix).values())
