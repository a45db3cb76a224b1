"""A syslog collector for twin hosts: UDP datagrams (RFC 5424 / 3164), port 514 by default.

``python -m cyberrange.services.syslog --port 514 [--log FILE]``

Receives and never answers (as syslog over UDP does). Every message is logged as a JSON line:
time, peer, port, pri (facility * 8 + severity, -1 when absent) and the message text.
"""
from __future__ import annotations

import json
import re
import socket
import time

from cyberrange.services.spec import ServiceSpec


SERVICE = ServiceSpec("syslog", 514, lambda run: run.serve("syslog"),
                      proto="udp", summary="syslog collector (benign traffic's log server)")


_PRI = re.compile(rb"^<(\d{1,3})>")


PROBE, PROBE_OK = b"cyberrange-probe", b"cyberrange-probe-ok"


def parse(data: bytes) -> tuple[int, str]:
    m = _PRI.match(data)
    pri = int(m[1]) if m else -1
    return pri, data[m.end() if m else 0:].decode("utf-8", "replace").rstrip("\r\n\0")


def main(argv=None):
    ap = SERVICE.arguments(__doc__)
    a = ap.parse_args(argv)
    log = open(a.log, "a") if a.log else None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((a.bind, a.port))
    try:
        while True:
            data, peer = s.recvfrom(65535)
            if data == PROBE:
                # syslog never answers; the twin's reachability probe needs a sign of life
                # to tell "delivered" from "dropped by a firewall" (cyberrange.twin.probe)
                s.sendto(PROBE_OK, peer)
                continue
            if log:
                pri, msg = parse(data)
                log.write(json.dumps({"time": time.time(), "peer": peer[0], "port": peer[1],
                                      "pri": pri, "msg": msg[:2000]}) + "\n")
                log.flush()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
