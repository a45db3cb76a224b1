"""A small HTTP server for twin hosts: real TCP, real HTTP/1.1, a configurable Server banner.

``python -m cyberrange.services.http --port 80 --banner nginx/1.18.0 [--log FILE]``
Serves ``/`` (an index naming the host), ``/status`` (JSON) and ``/reports/<n>`` (a few kB,
for the C2 report traffic); anything else is a 404. POST bodies are read and acknowledged.
"""
from __future__ import annotations

import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cyberrange.services.spec import Launch, ServiceSpec


def _argv(run: Launch) -> list[str]:
    svc = run.service
    return run.serve("http", *(["--banner", svc.banner] if svc.banner else []))


SERVICE = ServiceSpec("http", 80, _argv, weight=2,
                      summary="HTTP/1.1 server: /, /status, /reports/<n>; a Server banner")


def make_handler(banner: str, log):
    class Handler(BaseHTTPRequestHandler):
        server_version = banner
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, ctype: str = "text/html"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            if self.path == "/":
                self._send(200, f"<html><body><h1>{socket.gethostname()}</h1></body></html>".encode())
            elif self.path == "/status":
                self._send(200, json.dumps({"ok": True, "time": time.time()}).encode(),
                           "application/json")
            elif self.path.startswith("/reports/"):
                self._send(200, b"x" * 4096, "application/octet-stream")
            else:
                self._send(404, b"not found")

        do_HEAD = do_GET

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(n, 10_000_000))
            self._send(200, b'{"accepted": true}', "application/json")

        def log_message(self, fmt, *args):
            if log:
                log.write(json.dumps({"time": time.time(), "peer": self.client_address[0],
                                      "request": fmt % args}) + "\n")
                log.flush()

    return Handler


def main(argv=None):
    ap = SERVICE.arguments(__doc__)
    ap.add_argument("--banner", default="cyberrange-httpd")
    a = ap.parse_args(argv)
    log = open(a.log, "a") if a.log else None
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer((a.bind, a.port), make_handler(a.banner or "cyberrange-httpd", log))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
