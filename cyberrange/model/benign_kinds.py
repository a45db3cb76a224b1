"""The kinds of benign activity a host can have: what each talks to and how it is timed.

Pure data, no imports beyond the standard library: the loader reads it to check ``benign:``
sections, the planner to choose targets, the generator to time its requests, docs/traffic.md
to describe them. One entry per kind; adding a kind means one entry here, one client function
in ``cyberrange.traffic.clients`` and (if it needs a new server) one module in
``cyberrange/services/`` (whose spec gives its default port and protocol).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    services: tuple[str, ...]      # service types it talks to (cyberrange/services/)
    proto: str                     # tcp | udp
    pick: str                      # "one": a host keeps one server; "each": chosen per request
    periodic: bool                 # True: every ``interval`` +- jitter; False: Poisson arrivals
    jitter: float = 0.0            # periodic kinds: +- this fraction of the interval
    interval: float = 10.0         # default mean interval, s (when a profile gives none)
    target_roles: tuple[str, ...] = ()   # only servers of these roles ( () = any role)
    needs_accounts: bool = False   # login kinds: only services with accounts
    description: str = ""


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("browse", ("http",), "tcp", "each", False, interval=6,
         description="HTTP GET of /, /status or /reports/N from an intranet web server"),
    Kind("dns", ("dns",), "udp", "one", False, interval=10,
         description="A query for a twin host name to the host's name server"),
    Kind("ntp", ("ntp",), "udp", "one", True, jitter=0.05, interval=64,
         description="One NTPv4 client request (mode 3) to the host's time server"),
    Kind("chat", ("chat",), "tcp", "one", False, interval=20,
         description="A short chat session: HELLO, one to three messages, BYE"),
    Kind("syslog", ("syslog",), "udp", "one", False, interval=5,
         description="One RFC 5424 syslog datagram to the log server"),
    Kind("backup", ("backup",), "tcp", "one", True, jitter=0.1, interval=60,
         description="A bulk transfer (params.size_kb, default 512 kB) to the backup server"),
    Kind("c2-report", ("http",), "tcp", "one", True, jitter=0.2, interval=3,
         target_roles=("c2-server",),
         description="An HTTP POST of a small JSON position/status report to a C2 server; "
                     "deliberately beacon-like"),
    Kind("modbus-poll", ("modbus",), "tcp", "each", True, jitter=0.02, interval=2,
         description="Modbus/TCP read holding registers (function 3) from a PLC"),
    Kind("admin-ssh", ("ssh",), "tcp", "each", False, interval=90, needs_accounts=True,
         description="An SSH login with a valid account, one command, logout"),
    Kind("login", ("login",), "tcp", "each", False, interval=90, needs_accounts=True,
         description="A login-service session with a valid account"),
)}

# role-default intervals (roles.yaml) are written for this value of the v1 key benign.interval
REFERENCE_INTERVAL = 2.0
