"""Machinery every technique family shares: the result of a technique and its exact flow
accounting (one entry per 5-tuple), the reading of targets (``ip``, ``ip:port``, CIDR), and how
a technique tells that the defence stopped it (:class:`Blocked`, :func:`defence_reason`).

A technique's :class:`Result` is its ledger entry *as it goes*: flows and ARP frames are added
when they are sent, not when the technique ends, so that a step the defence cuts short (or a
technique that raises) still reports exactly what left the actor. The agent finds the result of
the running technique with :func:`current_result` when the technique raises.

The rest of the shared machinery is in ``layer2`` (routes, ARP, a raw receiver, paced layer-2
sending), ``tcp`` (kernel TCP connections counted with TCP_INFO, login and SSH dialogues) and
``witness`` (what really left the actor's interfaces); see docs/techniques.md.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import time
from dataclasses import dataclass, field

_CURRENT: "Result | None" = None      # the result of the technique running in this process


# --------------------------------------------------------------------------- results and flows
@dataclass
class Result:
    outcome: str = "failed"                 # succeeded | failed | blocked | error | stopped
    start: float = 0.0
    end: float = 0.0
    flows: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    error: str | None = None
    log: list[str] = field(default_factory=list)
    blocked_reason: str | None = None       # one line: how the defence stopped the step
    arp_frames: int = 0                     # ARP frames the technique wrote itself

    def __post_init__(self):
        global _CURRENT
        _CURRENT = self

    def cut(self, reason: str) -> None:
        """The defence cut the step short (the first reason stays): it ends ``blocked``
        whatever it got before the cut (its facts keep that)."""
        if not self.blocked_reason:
            self.blocked_reason = one_line(reason)
            self.log.append(f"cut short: {reason}")

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "start": self.start, "end": self.end,
                "flows": merge_flows(self.flows), "facts": self.facts, "error": self.error,
                "blocked_reason": self.blocked_reason if self.outcome == "blocked" else None,
                "arp_frames": self.arp_frames, "log": self.log}


def current_result() -> "Result | None":
    """The result of the technique that runs in this process (the last one made), if any."""
    return _CURRENT


def forget_result() -> None:
    global _CURRENT
    _CURRENT = None


def count_arp(n: int = 1) -> None:
    """``n`` more ARP frames written by the running technique (they have no 5-tuple)."""
    if _CURRENT is not None:
        _CURRENT.arp_frames += n


def conclude(res: Result, found, blocked) -> Result:
    """End ``res``: ``blocked`` when the defence cut it short (:meth:`Result.cut`), else
    ``succeeded`` when the technique got what it came for (``found``), else ``blocked`` when
    nothing could be reached (``blocked``: true, or the reason as a string), else ``failed``."""
    if res.blocked_reason:
        res.outcome = "blocked"
    elif found:
        res.outcome = "succeeded"
    elif blocked:
        res.outcome = "blocked"
        res.blocked_reason = one_line(blocked if isinstance(blocked, str) else
                                      "nothing answered (a firewall drops or rejects the traffic)")
    else:
        res.outcome = "failed"
    res.end = time.time()
    return res


def one_line(text, limit: int = 300) -> str:
    """``text`` as one line of at most ``limit`` characters (ledger reasons are one line)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


# --------------------------------------------------------------------------- the defence
class Blocked(Exception):
    """The defence stopped the technique: ``reason`` (one line) goes to the ledger's
    ``blocked_reason``. Raised where a send fails because of the actor's own node (a firewall
    rule, a removed route, a down interface); the agent ends the step ``blocked``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = one_line(reason)


# errno of a send or connect -> what it means in a twin: only the actor's node or a reject
# rule produces these, never a well-behaved target
DEFENCE_ERRNOS = {
    errno.EPERM: "a firewall rule in the actor's node refuses its packets",
    errno.EACCES: "a firewall rule in the actor's node refuses its packets",
    errno.ENETUNREACH: "the actor has no route any more (routes removed or interface down)",
    errno.EHOSTUNREACH: "no way to the host any more (a reject rule or a removed route)",
    errno.ENETDOWN: "the actor's interface is down",
    errno.ENODEV: "the actor's interface is gone",
    errno.ENXIO: "the actor's interface is gone",
    errno.EADDRNOTAVAIL: "the actor's address was removed",
}


# errnos that say the actor's own node cannot send at all (every later send fails alike)
NODE_ERRNOS = (errno.EPERM, errno.EACCES, errno.ENETUNREACH, errno.ENETDOWN, errno.ENODEV,
               errno.ENXIO, errno.EADDRNOTAVAIL)


def defence_reason(exc: BaseException, what: str = "a send") -> str | None:
    """One line saying how the defence stopped ``what``, or None if ``exc`` is not the
    defence's doing (then it is a failure or an error)."""
    if isinstance(exc, Blocked):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno in DEFENCE_ERRNOS:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return one_line(f"{what} failed with {name} ({os.strerror(exc.errno)}): "
                        f"{DEFENCE_ERRNOS[exc.errno]}")
    return None


STALL_S = 0.5          # a send that fails with ENOBUFS for this long is blocked, not congested


def send_or_block(send, frame, what: str = "a send"):
    """``send(frame)``, retried while the queue is full (ENOBUFS/EAGAIN) for at most
    :data:`STALL_S`; then, or on an errno of :data:`DEFENCE_ERRNOS`, :class:`Blocked`. An
    egress filter (nftables ``netdev egress``, tc) makes every frame of a packet socket fail
    with ENOBUFS, where a congested queue lets some through."""
    deadline = None
    while True:
        try:
            return send(frame)
        except OSError as exc:
            if exc.errno in (errno.ENOBUFS, errno.EAGAIN):
                now = time.monotonic()
                deadline = deadline or now + STALL_S
                if now < deadline:
                    time.sleep(0.001)
                    continue
                raise Blocked(f"{what} failed with ENOBUFS for {STALL_S:g} s: the actor's "
                              f"interface drops every frame (an egress filter in its node)") \
                    from None
            reason = defence_reason(exc, what)
            if reason:
                raise Blocked(reason) from None
            raise


def cut_off_reason() -> str | None:
    """Why the actor (this namespace) cannot send at all, or None: every interface but the
    loopback is down or gone, or it has no IPv4 route left."""
    ifaces = []
    try:
        names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    except OSError:
        return None
    for name in names:
        try:
            with open(f"/sys/class/net/{name}/flags") as fh:
                up = int(fh.read(), 16) & 0x1
            with open(f"/sys/class/net/{name}/carrier") as fh:
                carrier = fh.read().strip() == "1"
        except (OSError, ValueError):
            up = carrier = False
        ifaces.append((name, bool(up) and carrier))
    if not ifaces:
        return "the actor has no network interface left"
    if not any(ok for _n, ok in ifaces):
        return (f"the actor's interface{'s' if len(ifaces) > 1 else ''} "
                f"{', '.join(n for n, _ok in ifaces)} {'are' if len(ifaces) > 1 else 'is'} down")
    try:
        with open("/proc/net/route") as fh:
            routes = [ln.split() for ln in fh.read().splitlines()[1:] if ln.strip()]
    except OSError:
        return None
    if not [r for r in routes if r and r[0] != "lo"]:
        return "the actor has no IPv4 route left (its routes or addresses were removed)"
    return None


class Counter:
    """How many items of a list went out so far (read in a ``finally`` after a cut)."""

    def __init__(self):
        self.n = 0


def flow(src, dst, proto, sport, dport, packets, nbytes) -> dict:
    return {"src": str(src), "dst": str(dst), "proto": proto, "sport": int(sport),
            "dport": int(dport), "packets": int(packets), "bytes": int(nbytes)}


def merge_flows(flows: list[dict]) -> list[dict]:
    """One entry per 5-tuple (sums), in first-seen order; drops zero-packet flows."""
    out: dict[tuple, dict] = {}
    for f in flows:
        key = (f["src"], f["dst"], f["proto"], f["sport"], f["dport"])
        if key in out:
            out[key]["packets"] += f["packets"]
            out[key]["bytes"] += f["bytes"]
        else:
            out[key] = dict(f)
    return [f for f in out.values() if f["packets"] > 0]


# --------------------------------------------------------------------------- targets
def _unique_ips(targets: list[str]) -> list[str]:
    """Target strings (ip, ip:port or CIDR) -> unique IPs, in order."""
    out = []
    for t in map(str, targets):
        if "/" in t:
            out.extend(str(a) for a in ipaddress.IPv4Network(t, strict=False).hosts())
        else:
            out.append(str(ipaddress.IPv4Address(t.rsplit(":", 1)[0] if ":" in t else t)))
    return list(dict.fromkeys(out))


def parse_services(targets: list[str], ports: list[int], log: list[str],
                   only_listed_ports: bool = True) -> list[tuple[str, int]]:
    """Targets -> unique (ip, port): ``ip:port`` stays (if its port is in ``ports``, unless
    ``only_listed_ports`` is false), a bare ip or CIDR gets every port in ``ports``."""
    out: list[tuple[str, int]] = []
    for t in map(str, targets):
        if ":" in t and "/" not in t:
            ip, port = t.rsplit(":", 1)
            if int(port) in ports or not only_listed_ports:
                out.append((ip, int(port)))
            else:
                log.append(f"{t}: port not in params.ports {ports}; skipped")
        else:
            out.extend((ip, p) for ip in _unique_ips([t]) for p in ports)
    return list(dict.fromkeys(out))


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
