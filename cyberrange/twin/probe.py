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

``python -m cyberrange.twin.probe --serve`` is the long-lived prober of mission availability
(one JSON order per line in, one answer per line out): see "availability" below.
"""
from __future__ import annotations

import errno
import json
import random
import math
import socket
import struct
import subprocess
import sys
import threading
import time
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


def _udp_probe(ip: str, port: int, q: bytes, timeout: float, resend: bool = False) -> str:
    """Send ``q`` (with ``resend``: every 0.5 s) until an answer, a refusal or ``timeout``: a
    lost datagram (or a lost answer) on a lossy link must not read as "filtered"."""
    end = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, port))
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return "filtered"
            s.send(q)
            s.settimeout(min(0.5, left) if resend else left)
            try:
                s.recv(4096)
                return "open"
            except ConnectionRefusedError:
                return "closed"
            except socket.timeout:
                continue


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
            wait = max(1, math.ceil(p.get("timeout", 1) or 1))
            if p.get("resend"):
                # an echo every 0.2 s until one answer or the deadline: one emulated loss on
                # the way (issue 19's lossy links) must not read as "filtered"
                argv = ["ping", "-n", "-c", "1", "-i", "0.2", "-w", str(wait), ip]
            else:
                argv = ["ping", "-n", "-c", "1", "-W", str(wait), ip]
            r = subprocess.run(argv, capture_output=True, text=True)
            res["result"] = "open" if r.returncode == 0 else "filtered"
        elif proto == "udp":
            q = udp_payload(p)
            res["result"] = _udp_probe(ip, port, q, p.get("timeout", TIMEOUT),
                                       resend=bool(p.get("resend")))
        else:
            res["result"], res["detail"] = "error", f"unknown proto {proto}"
    except OSError as e:
        res["result"], res["detail"] = "filtered", str(e)
    return res


# ------------------------------------------------------------------ availability (serve mode)
# ``python -m cyberrange.twin.probe --serve``: a long-lived prober for mission availability
# (``cyberrange.blue.availability`` starts one per probing node and keeps it for the drill).
# One order per line on stdin, ``{"id", "proto", "ip", "port", "service", "timeout", "qname",
# "registers"}``; one answer per line on stdout, in the order the probes end:
# ``{"id", "time": <epoch at start>, "ok": bool, "latency_ms": float|null, "reason": str|null}``.
# An order is "ok" when the service answered as it should, not merely when a port was open:
#
# * tcp: the handshake; http (and c2-http) a ``GET /status`` answered below 500; login and ssh
#   their banner; modbus a holding-register read whose values equal the topology's (a write
#   that changed one is an availability loss: the mission gets wrong values); other types the
#   handshake. The connection is then closed gracefully (FIN, answer drained), so a probe is
#   an ordinary short conversation, never the SYN-ACK-RST of a connect scan;
# * udp: dns an A query for ``qname`` answered NOERROR (c2-dns: any answer), ntp a server
#   reply, syslog the twin's probe answer, anything else any answer;
# * icmp: an echo reply (a raw socket, ping's payload), no process per probe.
#
# ``latency_ms`` is the time from the start to the answer that made the probe ok.

AVAIL_TIMEOUT = 4.0
HTTP_TYPES = frozenset({"http", "c2-http"})
BANNER_TYPES = frozenset({"login", "ssh"})


class ProbeFailed(Exception):
    """The service did not answer as it should; the message is the probe's ``reason``."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    return left


def _recv_some(s: socket.socket, deadline: float) -> bytes:
    s.settimeout(_remaining(deadline))
    return s.recv(4096)


def _close_gracefully(s: socket.socket, linger_s: float = 1.0) -> None:
    """FIN, then read what the server still sends until it closes (at most ``linger_s``):
    unread data at close would make the kernel answer with a RST."""
    try:
        s.shutdown(socket.SHUT_WR)
        end = time.monotonic() + linger_s
        while True:
            s.settimeout(max(0.01, end - time.monotonic()))
            if not s.recv(4096) or time.monotonic() >= end:
                break
    except OSError:
        pass
    finally:
        s.close()


def _modbus_read(s: socket.socket, registers: dict, deadline: float) -> None:
    """Read the declared holding registers (function 3, unit 1); a changed value fails."""
    regs = {int(k): int(v) for k, v in (registers or {}).items()}
    lo = min(regs) if regs else 0
    count = min(125, (max(regs) - lo + 1) if regs else 1)
    tid = random.randrange(65536)
    pdu = struct.pack("!BHH", 3, lo, count)
    s.sendall(struct.pack("!HHHB", tid, 0, len(pdu) + 1, 1) + pdu)
    data = b""
    while len(data) < 7 or len(data) < 6 + struct.unpack("!H", data[4:6])[0]:
        chunk = _recv_some(s, deadline)
        if not chunk:
            raise ProbeFailed("connection closed before the Modbus answer")
        data += chunk
    if data[:2] != struct.pack("!H", tid) or len(data) < 9:
        raise ProbeFailed("bad Modbus answer")
    if data[7] != 3:
        raise ProbeFailed(f"Modbus exception {data[8]}")
    values = struct.unpack(f"!{data[8] // 2}H", data[9:9 + data[8] // 2 * 2])
    changed = [f"{a}={values[a - lo]} (expected {v})" for a, v in sorted(regs.items())
               if a - lo < len(values) and values[a - lo] != v]
    if changed:
        raise ProbeFailed("registers changed: " + ", ".join(changed[:5]))


def _tcp_check(o: dict, deadline: float, later: list) -> float:
    """One TCP probe; returns the monotonic time of the answer (raises on failure). The
    connection is closed gracefully after the answer has been reported (``later``)."""
    svc = o.get("service")
    s = socket.socket()
    try:
        s.settimeout(_remaining(deadline))
        s.connect((o["ip"], o["port"]))
    except BaseException:
        s.close()
        raise
    try:
        if svc in HTTP_TYPES:
            s.sendall(f"GET /status HTTP/1.0\r\nHost: {o['ip']}\r\nUser-Agent: Mozilla/5.0 "
                      "(X11; Linux x86_64)\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = _recv_some(s, deadline)
                if not chunk:
                    raise ProbeFailed("connection closed before the HTTP answer")
                head += chunk
            answered = time.monotonic()
            parts = head.split(b"\r\n", 1)[0].split()
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if not 100 <= code < 500:
                raise ProbeFailed(f"HTTP {code or 'garbage'}")
            return answered
        if svc in BANNER_TYPES:
            if not _recv_some(s, deadline):
                raise ProbeFailed("closed without a banner")
            return time.monotonic()
        if svc == "modbus":
            _modbus_read(s, o.get("registers") or {}, deadline)
        return time.monotonic()
    finally:
        later.append(s)


def _dns_query(name: str, qid: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".") if p)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\0\0\x01\0\x01"


def _udp_check(o: dict, deadline: float, later: list) -> float:
    svc = o.get("service")
    qid = random.randrange(65536)
    if svc in ("dns", "c2-dns"):
        payload = _dns_query(o.get("qname") or ".", qid)
    else:
        payload = udp_payload(o)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((o["ip"], o["port"]))
        s.send(payload)
        while True:
            try:
                data = _recv_some(s, deadline)
            except ConnectionRefusedError:
                raise ProbeFailed("port unreachable") from None
            if svc not in ("dns", "c2-dns"):
                break
            if len(data) >= 12 and data[:2] == payload[:2] and data[2] & 0x80:
                break                              # our answer (an old one is skipped)
        answered = time.monotonic()
    if svc == "dns" and data[3] & 0x0F:
        raise ProbeFailed(f"DNS rcode {data[3] & 0x0F}")
    if svc == "ntp" and (len(data) < 48 or data[0] & 0x07 != 4):
        raise ProbeFailed("not an NTP server reply")
    if svc == "syslog" and data != b"cyberrange-probe-ok":
        raise ProbeFailed("unexpected syslog answer")
    return answered


def _checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _icmp_check(o: dict, deadline: float, later: list) -> float:
    """One echo request with ping's payload (timestamp, then bytes 0x10..0x37); the reply
    is told from others' by identifier and sequence."""
    ident, seq = random.randrange(1, 65536), random.randrange(65536)
    now = time.time()
    payload = struct.pack("!II", int(now), int(now % 1 * 1e6)) + bytes(range(0x10, 0x38))
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(head + payload), ident, seq) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.sendto(packet, (o["ip"], 0))
        while True:
            data, peer = _recvfrom(s, deadline)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if peer[0] == o["ip"] and typ == 0 and (rid, rseq) == (ident, seq):
                return time.monotonic()
            if typ == 3 and data[ihl + 8 + 20 + 4:ihl + 8 + 20 + 8] == packet[4:8]:
                raise ProbeFailed("unreachable")


def _recvfrom(s: socket.socket, deadline: float):
    s.settimeout(_remaining(deadline))
    return s.recvfrom(2048)


CHECKS = {"tcp": _tcp_check, "udp": _udp_check, "icmp": _icmp_check}


def check(o: dict, later: list | None = None) -> dict:
    """One availability probe (an order of ``--serve``); never raises. TCP connections still
    to close go to ``later`` (the caller closes them with ``_close_gracefully`` once it has
    reported the answer); without it they are closed here."""
    if later is None:
        mine: list = []
        try:
            return check(o, mine)
        finally:
            for s in mine:
                _close_gracefully(s)
    start, t0 = time.time(), time.monotonic()
    res = {"id": o.get("id"), "time": start, "ok": False, "latency_ms": None, "reason": None}
    try:
        fn = CHECKS.get(o.get("proto"))
        if fn is None:
            raise ProbeFailed(f"unknown proto {o.get('proto')!r}")
        answered = fn(o, t0 + float(o.get("timeout") or AVAIL_TIMEOUT), later)
        res.update(ok=True, latency_ms=round((answered - t0) * 1000, 3))
    except ProbeFailed as e:
        res["reason"] = str(e)
    except (socket.timeout, TimeoutError):
        res["reason"] = "timeout"
    except ConnectionRefusedError:
        res["reason"] = "refused"
    except ConnectionResetError:
        res["reason"] = "reset"
    except OSError as e:
        res["reason"] = (errno.errorcode.get(e.errno, "") + " " + (e.strerror or str(e))).strip()
    except Exception as e:  # noqa: BLE001 - one bad order must not end the prober
        res["reason"] = f"{type(e).__name__}: {e}"
    return res


def serve(stdin=None, stdout=None, workers: int = 16) -> None:
    """Answer orders until stdin closes; then finish the probes under way and return."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    lock = threading.Lock()

    def run(order: dict) -> None:
        later: list = []
        res = check(order, later)
        with lock:
            stdout.write(json.dumps(res) + "\n")
            stdout.flush()
        for s in later:                         # answered first, then the FIN and the drain
            _close_gracefully(s)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        for line in stdin:
            try:
                order = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(order, dict):
                ex.submit(run, order)


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    probes = json.loads(sys.stdin.read())
    with ThreadPoolExecutor(max_workers=32) as ex:
        results = list(ex.map(probe, probes))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
