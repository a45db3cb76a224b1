"""The benign clients: one function per kind, each making one real request with kernel sockets.

Each takes ``(target, rng, params)`` and returns a dict for the request's log line: ``src``,
``sport`` (the 5-tuple's source half), ``ok``, and what it can measure: ``bytes_out`` /
``bytes_in`` (payload bytes) and ``packets_out`` / ``packets_in`` (datagrams for UDP; for TCP
the segments the kernel counted up to just before close, from ``TCP_INFO``). A failure raises
``OSError`` (or returns ``ok: False`` when the server answered wrongly).
"""
from __future__ import annotations

import json
import socket
import struct
import time

TIMEOUT = 5.0


def _tcp_counts(s: socket.socket) -> dict:
    """Segments sent and received so far (Linux ``struct tcp_info``: tcpi_segs_out/in)."""
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) >= 144:
            segs_out, segs_in = struct.unpack_from("II", info, 136)
            return {"packets_out": segs_out, "packets_in": segs_in}
    except OSError:
        pass
    return {}


def _connect(t: dict) -> socket.socket:
    s = socket.create_connection((t["ip"], t["port"]), timeout=TIMEOUT)
    return s


def _ends(s: socket.socket) -> dict:
    src, sport = s.getsockname()[:2]
    return {"src": src, "sport": sport}


def _recv_all(s: socket.socket, limit: int = 10_000_000) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _recv_line(s: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def _http(t: dict, method: str, path: str, body: bytes = b"") -> dict:
    with _connect(t) as s:
        rec = _ends(s)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {t['node']}\r\nUser-Agent: Mozilla/5.0 "
                f"(X11; Linux x86_64)\r\nConnection: close\r\n")
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        req = (head + "\r\n").encode() + body
        s.sendall(req)
        data = _recv_all(s)
        rec.update(_tcp_counts(s), bytes_out=len(req), bytes_in=len(data),
                   ok=data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")),
                   path=path)
    return rec


def browse(t, rng, params) -> dict:
    paths = params.get("paths") or ["/", "/", "/status", f"/reports/{rng.randrange(100)}"]
    return _http(t, "GET", rng.choice(paths))


def c2_report(t, rng, params) -> dict:
    """A unit's position and status, as a COP client or a track relay posts it."""
    report = {"unit": params.get("unit", socket.gethostname()), "time": round(time.time(), 3),
              "lat": round(34.5 + rng.uniform(-0.05, 0.05), 5),
              "lon": round(69.1 + rng.uniform(-0.05, 0.05), 5),
              "status": rng.choice(["green", "green", "green", "amber"]),
              "fuel": rng.randrange(40, 100), "ammo": rng.randrange(50, 100)}
    return _http(t, "POST", params.get("path", "/api/track"), json.dumps(report).encode())


def _udp_exchange(t, payload: bytes, expect_reply: bool) -> tuple[dict, bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT if expect_reply else 1)
        s.connect((t["ip"], t["port"]))          # fixes the source address and port
        rec = _ends(s)
        s.send(payload)
        rec.update(bytes_out=len(payload), packets_out=1)
        data = b""
        if expect_reply:
            data = s.recv(4096)
            rec.update(bytes_in=len(data), packets_in=1)
    return rec, data


def dns_query(name: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


def dns(t, rng, params) -> dict:
    name = rng.choice(t.get("names") or [f"{t['node']}.twin.local"])
    qid = rng.randrange(65536)
    rec, data = _udp_exchange(t, dns_query(name, qid), True)
    rcode = data[3] & 0x0F if len(data) >= 4 else -1
    rec.update(ok=len(data) >= 12 and data[:2] == qid.to_bytes(2, "big") and rcode == 0,
               query=name, rcode=rcode)
    return rec


NTP_EPOCH = 2208988800          # 1900-01-01 to 1970-01-01, seconds


def ntp_request(now: float) -> bytes:
    """An NTPv4 client packet (LI 0, VN 4, mode 3) with its transmit timestamp set."""
    secs = int(now) + NTP_EPOCH
    frac = int((now % 1) * (1 << 32))
    return struct.pack("!BBbb11I", 0x23, 0, 6, -20, *([0] * 9), secs, frac)


def ntp(t, rng, params) -> dict:
    req = ntp_request(time.time())
    rec, data = _udp_exchange(t, req, True)
    ok = len(data) >= 48 and (data[0] & 0x07) == 4 and data[24:32] == req[40:48]
    rec.update(ok=ok)
    return rec


SYSLOG_APPS = [("sshd", "Accepted publickey for svc-backup from 10.0.0.5 port 51234"),
               ("cron", "(root) CMD (run-parts /etc/cron.hourly)"),
               ("kernel", "eth0: link up, 100Mbps, full-duplex"),
               ("systemd", "Started Daily apt upgrade and clean activities."),
               ("nginx", "GET /status 200"),
               ("auditd", "USER_LOGIN pid=1042 uid=0 res=success")]


def syslog(t, rng, params) -> dict:
    app, msg = rng.choice(SYSLOG_APPS)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pri = 8 * rng.choice([1, 3, 4, 10]) + rng.choice([5, 6, 6, 6])
    line = f"<{pri}>1 {stamp} {socket.gethostname()} {app} - - - {msg}".encode()
    rec, _ = _udp_exchange(t, line, False)
    rec.update(ok=True, packets_in=0, bytes_in=0)
    return rec


def chat(t, rng, params) -> dict:
    user = params.get("user") or socket.gethostname()
    room = rng.choice(params.get("rooms") or ["ops", "s2", "s3", "logistics"])
    texts = ["roger", "wilco", "SITREP in 5", "net check", "copy all", "moving to CP",
             "update on the COP", "request status of convoy"]
    with _connect(t) as s:
        rec = _ends(s)
        buf, out, got = bytearray(), 0, 0
        ok = True
        msgs = [f"HELLO {user}"] + [f"MSG {room} {rng.choice(texts)}"
                                     for _ in range(rng.randint(1, 3))] + ["BYE"]
        for m in msgs:
            line = (m + "\n").encode()
            s.sendall(line)
            out += len(line)
            reply = _recv_line(s, buf)
            got += len(reply) + 1
            ok = ok and reply.split(b" ", 1)[0] in (b"OK", b"ACK", b"BYE")
        rec.update(_tcp_counts(s), bytes_out=out, bytes_in=got, ok=ok)
    return rec


def backup(t, rng, params) -> dict:
    size = int(float(params.get("size_kb", 512)) * 1024)
    import hashlib
    digest = hashlib.sha256()
    block = rng.randbytes(65536)
    with _connect(t) as s:
        rec = _ends(s)
        head = f"PUT {socket.gethostname()}-{int(time.time())}.tar {size}\n".encode()
        s.sendall(head)
        left = size
        while left:
            chunk = block[:min(left, len(block))]
            s.sendall(chunk)
            digest.update(chunk)
            left -= len(chunk)
        buf = bytearray()
        reply = _recv_line(s, buf)
        rec.update(_tcp_counts(s), bytes_out=len(head) + size, bytes_in=len(reply) + 1,
                   ok=reply == f"OK {size} {digest.hexdigest()}".encode())
    return rec


def modbus_poll(t, rng, params) -> dict:
    address, count = int(params.get("address", 0)), int(params.get("count", 10))
    tid = rng.randrange(65536)
    pdu = struct.pack("!BHH", 3, address, count)
    req = struct.pack("!HHHB", tid, 0, len(pdu) + 1, int(params.get("unit", 1))) + pdu
    with _connect(t) as s:
        rec = _ends(s)
        s.sendall(req)
        data = b""
        while len(data) < 7 or len(data) < 6 + struct.unpack("!H", data[4:6])[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        rec.update(_tcp_counts(s), bytes_out=len(req), bytes_in=len(data),
                   ok=len(data) >= 9 and data[:2] == req[:2] and data[7] == 3)
    return rec


def login(t, rng, params) -> dict:
    """The login service: banner, ``login:``, ``password:``, ``Welcome``, a moment, ``exit``."""
    with _connect(t) as s:
        rec = _ends(s)
        buf, out = b"", 0

        def until(token: bytes) -> bool:
            nonlocal buf
            while token not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                buf += chunk
            return True

        def send(data: bytes):
            nonlocal out
            s.sendall(data)
            out += len(data)

        ok = until(b"login: ")
        send(t["user"].encode() + b"\n")
        ok = ok and until(b"password: ")
        send(t["password"].encode() + b"\n")
        ok = ok and until(b"Welcome")
        time.sleep(rng.uniform(0.2, 1.0))        # a short session
        try:
            send(b"exit\n")
        except OSError:
            pass
        rec.update(_tcp_counts(s), bytes_out=out, bytes_in=len(buf), ok=bool(ok))
    return rec


def admin_ssh(t, rng, params) -> dict:
    """A real SSH login (paramiko), one command, logout."""
    import paramiko
    command = rng.choice(params.get("commands") or ["hostname", "id", "whoami", "uname -a"])
    sock = _connect(t)
    rec = _ends(sock)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(t["ip"], port=t["port"], username=t["user"], password=t["password"],
                       sock=sock, timeout=TIMEOUT, banner_timeout=TIMEOUT, auth_timeout=TIMEOUT,
                       allow_agent=False, look_for_keys=False)
        _, stdout, _ = client.exec_command(command, timeout=TIMEOUT)
        stdout.read()
        status = stdout.channel.recv_exit_status()
        rec.update(_tcp_counts(sock), ok=status == 0, command=command)
    except paramiko.SSHException as e:
        rec.update(ok=False, error=f"ssh: {e}")
    finally:
        client.close()
        sock.close()
    return rec


CLIENTS = {"browse": browse, "dns": dns, "ntp": ntp, "chat": chat, "syslog": syslog,
           "backup": backup, "c2-report": c2_report, "modbus-poll": modbus_poll,
           "admin-ssh": admin_ssh, "login": login}
