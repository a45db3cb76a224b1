"""Connection probes run inside a twin node: does a NEW connection get through?

``python -m cyberrange.twin.probe`` reads a JSON list of probes on stdin, each
``{"proto": "tcp"|"udp"|"icmp", "ip": "10.0.0.5", "port": 80}``, runs them concurrently and
prints a JSON list of results ``{"proto", "ip", "port", "result": "open"|"closed"|"filtered",
"detail"}``:

* tcp: ``open`` when the handshake completes, ``closed`` on a RST (refused), ``filtered`` on a
  time-out (a firewall dropped it) or an ICMP unreachable;
* icmp: ``open`` when an echo reply comes back (kernel ping, one packet), else ``filtered``;
* udp: a datagram the service answers (a DNS query for ``.``, an NTP client request, or the
  probe datagram the twin's syslog service answers): ``open`` on any answer, ``closed`` on ICMP
  port unreachable, ``filtered`` on a time-out.

Used by the live reachability tests and by twin verification.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 1.5


DNS_QUERY = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01"
NTP_REQUEST = b"\x23" + b"\x00" * 47          # NTPv4, mode 3 (client)
PROBE_DATAGRAM = b"cyberrange-probe"           # answered by the twin's syslog service


def udp_payload(p: dict) -> bytes:
    """A datagram the service on that port answers: UDP has no handshake, so "delivered" can
    only be told from "dropped" by an answer (or an ICMP port unreachable)."""
    svc = p.get("service") or {53: "dns", 123: "ntp", 514: "syslog"}.get(p.get("port"), "dns")
    return {"ntp": NTP_REQUEST, "syslog": PROBE_DATAGRAM}.get(svc, DNS_QUERY)


def probe(p: dict) -> dict:
    proto, ip, port = p["proto"], p["ip"], p.get("port")
    res = dict(p)
    try:
        if proto == "tcp":
            with socket.socket() as s:
                s.settimeout(p.get("timeout", TIMEOUT))
                err = s.connect_ex((ip, port))
            res["result"] = {0: "open", 111: "closed"}.get(err, "filtered")
            res["detail"] = err
        elif proto == "icmp":
            r = subprocess.run(["ping", "-n", "-c", "1", "-W", str(int(p.get("timeout", 1) or 1)), ip],
                               capture_output=True, text=True)
            res["result"] = "open" if r.returncode == 0 else "filtered"
        elif proto == "udp":
            q = udp_payload(p)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(p.get("timeout", TIMEOUT))
                s.connect((ip, port))
                s.send(q)
                try:
                    s.recv(4096)
                    res["result"] = "open"
                except ConnectionRefusedError:
                    res["result"] = "closed"
                except socket.timeout:
                    res["result"] = "filtered"
        else:
            res["result"], res["detail"] = "error", f"unknown proto {proto}"
    except OSError as e:
        res["result"], res["detail"] = "filtered", str(e)
    return res


def main() -> None:
    probes = json.loads(sys.stdin.read())
    with ThreadPoolExecutor(max_workers=32) as ex:
        results = list(ex.map(probe, probes))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
