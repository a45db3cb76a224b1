"""A userspace link emulator for kernels without netem: delay, jitter, loss and duplication.

On such kernels (this project's CI machines among them) ``tc ... netem`` fails with "Specified
qdisc kind is unknown". The twin then splits a link whose profile has delay, jitter or loss in
two: the node's veth ends in the switch namespace at an unbridged device ``q<N>``, the bridge
port ``p<N>`` has an unbridged peer ``r<N>``, and one relay process in the switch namespace
copies frames between ``q<N>`` and ``r<N>``::

    node eth<K> ==veth== q<N>  <-- relay (delay, jitter, loss) -->  r<N> ==veth== p<N> [bridge]

Bandwidth stays with HTB on ``eth<K>`` and ``p<N>`` (as with netem: rate first, then delay), so
the relay never needs to pace. Frames are read and written with AF_PACKET sockets carrying a
``virtio_net_hdr`` (PACKET_VNET_HDR): segmentation-offloaded and checksum-partial frames cross
unchanged, so TCP works without switching offloads off. The SPAN sensors sit on the bridge,
behind the relay: they see what crossed the link, never a frame the link dropped.

Only frames leaving the node (``q<N>`` to ``r<N>``) are delayed, jittered and dropped; frames to
the node pass at once. A frame between two members of a profiled zone leaves one and enters the
other, so every path through the zone sees the profile exactly once: one-way delay = the
profile's delay, round trip = twice it (netem, where it exists, sits on the node side only, for
the same reason). Semantics follow netem's: each frame waits ``delay + U(-jitter, +jitter)`` (never below 0),
frames leave in due-time order (jitter can reorder, as with netem), ``loss`` % are dropped
independently, ``duplicate`` % are sent twice. One process serves every relayed link of a
twin (epoll); its counters are written to ``--stats FILE`` on SIGTERM/SIGINT and every
``--stats-every`` seconds, which ``twin verify`` and the report read.

Run: ``python -m cyberrange.twin.linkemu --link NAME:A:B:DELAY_MS:JITTER_MS:LOSS_PCT:DUP_PCT
[--link ...] --seed N --stats FILE`` inside the namespace that holds ``A`` and ``B``.
"""
from __future__ import annotations

import argparse
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SNAPLEN = 65536 + 10 + 4           # a GSO frame, its virtio_net_hdr, a VLAN tag
BUF = 8 << 20


@dataclass
class LinkSpec:
    """One emulated link: devices ``a`` (node side) and ``b`` (switch side), one-way values."""
    name: str
    a: str
    b: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    duplicate_pct: float = 0.0

    def arg(self) -> str:
        return (f"{self.name}:{self.a}:{self.b}:{self.delay_ms:g}:{self.jitter_ms:g}:"
                f"{self.loss_pct:g}:{self.duplicate_pct:g}")

    @classmethod
    def parse(cls, text: str) -> "LinkSpec":
        parts = text.split(":")
        if len(parts) != 7:
            raise ValueError(f"--link {text!r}: want NAME:A:B:DELAY_MS:JITTER_MS:LOSS:DUP")
        name, a, b, *nums = parts
        d, j, lo, du = (float(x) for x in nums)
        if min(d, j, lo, du) < 0 or lo > 100 or du > 100:
            raise ValueError(f"--link {text!r}: values must be >= 0 and percentages <= 100")
        return cls(name, a, b, d, j, lo, du)


@dataclass
class Direction:
    """Frames read on ``src`` and written, delayed, on ``dst``."""
    link: str
    way: str                         # "a>b" (node to switch) or "b>a"
    src: socket.socket
    dst: socket.socket
    delay: float
    jitter: float
    loss: float
    dup: float
    rng: random.Random
    received: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    send_errors: int = 0
    bytes: int = 0
    max_queue: int = 0
    late_max_ms: float = 0.0
    late_sum_ms: float = 0.0

    def due(self, now: float) -> float:
        j = self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return now + max(0.0, self.delay + j)

    def stats(self) -> dict:
        return {"link": self.link, "way": self.way, "received": self.received, "sent": self.sent,
                "lost": self.lost, "duplicated": self.duplicated,
                "send_errors": self.send_errors, "bytes": self.bytes,
                "max_queue": self.max_queue, "late_max_ms": round(self.late_max_ms, 3),
                "late_mean_ms": round(self.late_sum_ms / self.sent, 3) if self.sent else 0.0}


def relay_needed(profile) -> bool:
    """A profile that needs emulating beyond bandwidth: any jitter or loss, or a delay of 1 ms
    or more (the relay does it; loss alone: ``loss_only``, nftables drops). A
    sub-millisecond delay alone (a LAN's 0.1 ms) is the veth's own: relaying it would add more
    delay (about 0.1-0.5 ms per frame in Python) than it emulates."""
    return bool(profile.jitter_ms or profile.loss_pct or profile.delay_ms >= 1.0)


def loss_only(profile) -> bool:
    """A profile whose only emulated value is loss: an nftables random drop at the bridge
    port's ingress does it (``drop_lines``), in the kernel, without the relay."""
    return bool(profile.loss_pct) and not profile.jitter_ms and profile.delay_ms < 1.0


DROP_TABLE = "cyberrange_loss"


def plan_note(mode: str, have_netem: bool, interfaces) -> str | None:
    """The twin's one line on links whose profile netem does not emulate in ``mode``
    (``interfaces``: the model's, with ``zone`` and ``profile``), or None."""
    todo = sorted({(i.zone, i.profile.name, i.profile.delay_ms, i.profile.jitter_ms,
                    i.profile.loss_pct) for i in interfaces if relay_needed(i.profile)})
    if not todo:
        return None
    if mode == "shape":
        what = ", ".join(f"{z} ({prof}: {d:g} ms delay, {lo:g}% loss)"
                         for z, prof, d, _j, lo in todo)
        return (f"link emulation 'shape': delay, jitter and loss are NOT emulated on {what};"
                " bandwidth is shaped with HTB (the default, 'emulate', would emulate them)")
    what = ", ".join(f"{z} ({prof}: {lo:g}% loss, nftables drops)" if j == 0 and d < 1
                     else f"{z} ({prof}: {d:g}±{j:g} ms, {lo:g}% loss, userspace relay)"
                     for z, prof, d, j, lo in todo)
    why = "netem is not available in this kernel" if not have_netem else "netem not used"
    return (f"{why}: delay, jitter and loss are emulated without it (cyberrange.twin.linkemu)"
            f" on {what}; bandwidth by HTB")


def drop_lines(ports: list[tuple[str, float]]) -> list[str]:
    """nft commands dropping ``loss`` % of the frames entering each bridge port (the frames
    leaving its node, as the relay does). Priority -400: after a DDIL drop (-500, which adds
    to it), before the SPAN copies (0), so a sensor never sees a frame the link dropped. Two
    counters per port: every frame that came, and those dropped."""
    lines = [f"add table netdev {DROP_TABLE}"]
    for port, loss in ports:
        chain = f"add chain netdev {DROP_TABLE} {port}"
        lines += [f"{chain} {{ type filter hook ingress device {port} priority -400; }}",
                  f"add rule netdev {DROP_TABLE} {port} counter",
                  f"add rule netdev {DROP_TABLE} {port} numgen random mod 1000000 < "
                  + f"{round(loss * 10_000)} counter drop"]
    return lines


def start(popen, specs: list[LinkSpec], seed: int, stats, log, timeout: float = 10.0,
          control=None):
    """Start the relay with ``popen`` (a namespace's popen) and wait until its sockets are
    bound; raise EnvironmentProblem with its last line if it does not come up."""
    from cyberrange.errors import EnvironmentProblem
    argv = [sys.executable, "-m", "cyberrange.twin.linkemu", "--seed", str(seed),
            "--stats", str(stats)] + (["--control", str(control)] if control else [])
    for sp in specs:
        argv += ["--link", sp.arg()]
    out = open(log, "w")
    p = popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _read(log)
        if "linkemu: ready" in text:
            return p
        if p.poll() is not None:
            break
        time.sleep(0.02)
    if p.poll() is None:
        p.kill()
    last = _read(log).strip().splitlines()
    raise EnvironmentProblem("the userspace link relay did not start: "
                             + (last[-1] if last else "no output"))


def _read(path) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def open_socket(dev: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:                  # kernels before 4.20: outgoing frames are skipped by type
        pass
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, BUF)
        except OSError:
            pass
    s.bind((dev, ETH_P_ALL))
    s.setblocking(False)
    return s


@dataclass
class Relay:
    links: list[LinkSpec]
    seed: int = 0
    stats_path: str | None = None
    stats_every: float = 0.0
    directions: list[Direction] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    controls: int = 0

    def open(self) -> None:
        for i, ln in enumerate(self.links):
            sa, sb = open_socket(ln.a), open_socket(ln.b)
            # one stream of random numbers per link: a seed replays the same drops and delays
            rng = random.Random(f"{self.seed}/{i}")
            self.directions.append(Direction(
                ln.name, "a>b", sa, sb, ln.delay_ms / 1e3, ln.jitter_ms / 1e3,
                ln.loss_pct / 100.0, ln.duplicate_pct / 100.0, rng))
            # every frame between two members of a zone leaves one node (a>b, emulated) and
            # enters another (b>a, passed on at once): each path sees the profile exactly once
            self.directions.append(Direction(ln.name, "b>a", sb, sa, 0.0, 0.0, 0.0, 0.0, rng))

    def control(self, path: str) -> None:
        """Apply a control file: ``{"links": {NAME: {"delay_ms", "jitter_ms", "loss_pct",
        "duplicate_pct"}}}`` replaces those values of each named link's emulated direction
        (a DDIL schedule's degradation steps; ``twin/ddil.py`` writes it, then sends SIGUSR1)."""
        try:
            with open(path) as f:
                body = json.load(f)
        except (OSError, ValueError) as e:
            print(f"linkemu: control file {path}: {e}", file=sys.stderr, flush=True)
            return
        for d in self.directions:
            new = body.get("links", {}).get(d.link)
            if new is None or d.way != "a>b":
                continue
            d.delay = float(new.get("delay_ms", d.delay * 1e3)) / 1e3
            d.jitter = float(new.get("jitter_ms", d.jitter * 1e3)) / 1e3
            d.loss = float(new.get("loss_pct", d.loss * 100)) / 100
            d.dup = float(new.get("duplicate_pct", d.dup * 100)) / 100
        self.controls += 1

    def run(self, stop: list[bool], reload: list[bool] | None = None,
            control_path: str | None = None) -> None:
        by_fd = {d.src.fileno(): d for d in self.directions}
        ep = select.epoll()
        for fd in by_fd:
            ep.register(fd, select.EPOLLIN)
        heap: list = []                        # (due, seq, direction index, frame)
        seq = 0
        index = {id(d): k for k, d in enumerate(self.directions)}
        next_stats = time.monotonic() + self.stats_every if self.stats_every else None
        while not stop[0]:
            if reload and reload[0] and control_path:
                reload[0] = False
                self.control(control_path)
            now = time.monotonic()
            timeout = 0.5
            if heap:
                timeout = max(0.0, min(timeout, heap[0][0] - now))
            if next_stats is not None:
                timeout = max(0.0, min(timeout, next_stats - now))
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd, _ev in events:
                d = by_fd[fd]
                k = index[id(d)]
                while True:
                    try:
                        frame = d.src.recv(SNAPLEN)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.ENETDOWN, errno.ENXIO):
                            break
                        raise
                    d.received += 1
                    if d.loss and d.rng.random() < d.loss:
                        d.lost += 1
                        continue
                    copies = 2 if d.dup and d.rng.random() < d.dup else 1
                    d.duplicated += copies - 1
                    for _ in range(copies):
                        seq += 1
                        heapq.heappush(heap, (d.due(now), seq, k, frame))
                    if len(heap) > d.max_queue:
                        d.max_queue = len(heap)
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, _s, k, frame = heapq.heappop(heap)
                d = self.directions[k]
                try:
                    d.dst.send(frame)
                except OSError:
                    d.send_errors += 1
                    continue
                d.sent += 1
                d.bytes += len(frame) - 10
                late = (now - due) * 1e3
                d.late_sum_ms += late
                if late > d.late_max_ms:
                    d.late_max_ms = late
            if next_stats is not None and now >= next_stats:
                self.write_stats()
                next_stats = now + self.stats_every
        self.write_stats()

    def write_stats(self) -> None:
        if not self.stats_path:
            return
        body = {"pid": os.getpid(), "seed": self.seed, "started": self.started,
                "written": time.time(), "cpu_s": round(time.process_time(), 3),
                "controls": self.controls,
                "links": [vars(ln) for ln in self.links],
                "directions": [d.stats() for d in self.directions]}
        tmp = f"{self.stats_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(body, f, indent=1)
        os.replace(tmp, self.stats_path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cyberrange.twin.linkemu")
    ap.add_argument("--link", action="append", required=True, type=LinkSpec.parse)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stats", default=None)
    ap.add_argument("--stats-every", type=float, default=2.0)
    ap.add_argument("--control", default=None, help="a control file read on SIGUSR1")
    args = ap.parse_args(argv)
    relay = Relay(args.link, seed=args.seed, stats_path=args.stats, stats_every=args.stats_every)
    stop, reload = [False], [False]

    def _stop(_sig, _frm):
        stop[0] = True

    def _reload(_sig, _frm):
        reload[0] = True
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGUSR1, _reload)
    try:
        relay.open()
    except OSError as e:
        print(f"linkemu: cannot open the link devices: {e}", file=sys.stderr)
        return 2
    print("linkemu: ready", flush=True)
    relay.run(stop, reload, args.control)
    return 0


if __name__ == "__main__":
    sys.exit(main())


_NETEM: dict[str, bool] = {}


def netem_available(ns: str) -> bool:
    """Probe once per process, inside ``ns``: can this kernel add a netem qdisc?"""
    from cyberrange.twin import netns
    if "v" not in _NETEM:
        netns.run(ns, ["ip", "link", "add", "zqn", "type", "veth", "peer", "name", "zqm"])
        r = netns.run(ns, ["tc", "qdisc", "add", "dev", "zqn", "root", "netem", "delay", "0ms"])
        _NETEM["v"] = r.returncode == 0
        netns.run(ns, ["ip", "link", "del", "zqn"])
    return _NETEM["v"]
