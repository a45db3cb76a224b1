"""A small NTP server for twin hosts: real NTPv4 over UDP, port 123 by default.

``python -m cyberrange.services.ntp --port 123 [--log FILE]``

Answers every client request (mode 3) with a server reply (mode 4, stratum 2, reference "LOCL")
carrying the host clock: the client's transmit timestamp echoed as the originate timestamp,
receive and transmit timestamps from ``time.time()``. Other packets are ignored. Every request is
logged as a JSON line (time, peer, port, version, answered).
"""
from __future__ import annotations

import json
import socket
import struct
import time

from cyberrange.services.spec import ServiceSpec


SERVICE = ServiceSpec("ntp", 123, lambda run: run.serve("ntp"),
                      proto="udp", summary="NTPv4 server (benign traffic's time source)")


NTP_EPOCH = 2208988800


def _ts(t: float) -> bytes:
    return struct.pack("!II", int(t) + NTP_EPOCH, int((t % 1) * (1 << 32)))


def reply(request: bytes, now: float | None = None) -> bytes | None:
    """The server's answer to one client packet, or None when it is not a client request."""
    if len(request) < 48 or (request[0] & 0x07) != 3:
        return None
    now = time.time() if now is None else now
    version = (request[0] >> 3) & 0x07 or 4
    head = struct.pack("!BBbbII4s", (version << 3) | 4, 2, request[2] or 6, -20, 0, 0, b"LOCL")
    return head + _ts(now - 16) + request[40:48] + _ts(now) + _ts(time.time())


def main(argv=None):
    ap = SERVICE.arguments(__doc__)
    a = ap.parse_args(argv)
    log = open(a.log, "a") if a.log else None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.bind, a.port))
    try:
        while True:
            data, peer = s.recvfrom(2048)
            out = reply(data)
            if out:
                s.sendto(out, peer)
            if log:
                log.write(json.dumps({"time": time.time(), "peer": peer[0], "port": peer[1],
                                      "version": (data[0] >> 3) & 7 if data else 0,
                                      "answered": out is not None}) + "\n")
                log.flush()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
