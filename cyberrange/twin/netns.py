"""Named network namespaces, entered from this process without a shell in each.

A twin's nodes are named namespaces (``ip netns add c3f9ah7``: a bind mount under
``/run/netns``), not processes. This module runs things inside one:

- :func:`entered` moves the *calling thread* into a namespace for a ``with`` block (``setns``
  changes only the calling thread's network namespace), and back;
- :func:`popen` starts a program there: a child inherits the namespace of the thread that
  forks it, so no ``ip netns exec`` or ``mnexec`` wrapper process is needed;
- :func:`sysctl` writes ``/proc/sys/net/...`` values of a namespace in-process (a net sysctl
  file belongs to the namespace of the thread that opens it);
- :func:`listening` reads ``/proc/thread-self/net/{tcp,udp}`` there (is a service up yet?);
- :func:`run_jobs` runs many short command sequences, each in its namespace, a few at a time.

``setns`` comes from libc through ctypes: Python 3.11 has no ``os.setns``.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def path(name: str) -> Path:
    return NETNS_DIR / name


def inode(name: str) -> str | None:
    """``net:[INODE]`` of a named namespace (as ``readlink /proc/PID/ns/net`` prints it)."""
    try:
        return f"net:[{os.stat(path(name)).st_ino}]"
    except OSError:
        return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(name: str):
    """The calling thread inside namespace ``name`` for the block (other threads stay put)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(own)          # never stay in a twin's namespace: fail loudly if we would
    finally:
        os.close(own)


def popen(name: str, argv: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kwargs)`` inside namespace ``name``."""
    with entered(name):
        return subprocess.Popen(argv, **kwargs)


def run(name: str, argv: list[str], input: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess:
    """Run ``argv`` inside ``name`` and wait (text output captured; started in its own
    session, so a terminal's Ctrl-C does not reach it)."""
    p = popen(name, argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
              start_new_session=True)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def sysctl(name: str, values: dict[str, str]) -> None:
    """Write net sysctls (``"net.ipv4.ip_forward": "1"``) of namespace ``name``."""
    with entered(name):
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)


def listening(name: str, port: int, proto: str = "tcp") -> bool:
    """Whether a socket listens on ``port`` (TCP) or is bound to it (UDP) in ``name``."""
    want = f":{port:04X} "
    with entered(name):
        for table in ((proto,) if proto == "udp" else ("tcp",)):
            try:
                lines = Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]
            except OSError:
                return False
            for line in lines:
                parts = line.split()
                if len(parts) > 3 and (parts[1] + " ").endswith(want) and \
                        (proto == "udp" or parts[3] == "0A"):        # 0A: TCP_LISTEN
                    return True
    return False


def dev_counters(name: str) -> dict[str, tuple[int, int]]:
    """``{device: (rx_packets, tx_packets)}`` of every device in namespace ``name``."""
    with entered(name):
        lines = Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]
    out = {}
    for line in lines:
        dev, _, rest = line.partition(":")
        f = rest.split()
        if len(f) >= 10:
            out[dev.strip()] = (int(f[1]), int(f[9]))
    return out


def run_jobs(jobs: list[tuple[str, str, list[tuple[list[str], str | None]]]],
             parallel: int = 4) -> list[tuple[str, str]]:
    """Run command sequences, each inside its namespace, ``parallel`` at a time (threads: each
    enters its job's namespace only for the fork, see :func:`popen`).

    ``jobs``: ``(label, namespace, [(argv, stdin text or None), ...])``; the commands of one
    job run one after the other, and a failing command ends its job (iproute2 and nft also
    print some errors with exit code 0: "Error"/"RTNETLINK" in the output counts as failed).
    Returns the failures, ``[(label, message)]``."""
    from concurrent.futures import ThreadPoolExecutor

    def one(job):
        label, ns, commands = job
        for argv, text in commands:
            r = run(ns, argv, input=text, timeout=120)
            out = (r.stdout or "") + (r.stderr or "")
            if r.returncode != 0 or "Error" in out or "RTNETLINK" in out:
                return label, f"{' '.join(argv[:3])}: {out.strip()[:300] or r.returncode}"
        return None

    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return [f for f in pool.map(one, jobs) if f is not None]
