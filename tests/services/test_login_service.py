"""The twin's SSH-style login service (runs on 127.0.0.1, no root needed)."""
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

BANNER = "SSH-2.0-OpenSSH_7.4"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"user": "admin", "password": "admin123"},
                                    {"user": "backup", "password": "Qz8!mR2#vL"}]))
    log = tmp_path / "attempts.jsonl"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cyberrange.services.login",
                             "--port", str(port), "--bind", "127.0.0.1", "--banner", BANNER,
                             "--accounts-file", str(accounts), "--log", str(log),
                             "--hostname", "ops-files"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening" in line, line
        yield port, log, proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_until(s, marker, limit=5.0):
    s.settimeout(limit)
    buf = b""
    while marker not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _read_all(s, limit=5.0):
    s.settimeout(limit)
    buf = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return buf
        buf += chunk


def _login(port, user, password):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        head = _read_until(s, b"login: ")
        s.sendall(user.encode() + b"\n")
        _read_until(s, b"password: ")
        s.sendall(password.encode() + b"\n")
        return head, s
    except Exception:
        s.close()
        raise


def test_banner_and_wrong_password_server_closes_first(service):
    port, log, _ = service
    head, s = _login(port, "admin", "password")
    with s:
        assert head == f"{BANNER}\nlogin: ".encode()
        rest = _read_all(s)            # returns only because the server closed (EOF)
    assert rest == b"Login incorrect\n"


def test_right_password_gets_a_prompt_and_exit_closes(service):
    port, log, _ = service
    _head, s = _login(port, "admin", "admin123")
    with s:
        got = _read_until(s, b"$ ")
        assert got == b"Welcome admin\nadmin@ops-files$ "
        s.sendall(b"uname -a\n")
        assert _read_until(s, b"$ ").startswith(b"uname: command not found\n")
        s.sendall(b"exit\n")
        assert _read_all(s) == b""
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert recs[-1]["user"] == "admin" and recs[-1]["ok"] is True
    assert set(recs[-1]) == {"time", "peer", "user", "ok"}


def test_unknown_user_and_log(service):
    port, log, _ = service
    _h, s = _login(port, "root", "toor")
    with s:
        assert _read_all(s) == b"Login incorrect\n"
    time.sleep(0.1)
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert recs == [{"time": recs[0]["time"], "peer": recs[0]["peer"], "user": "root", "ok": False}]
    assert recs[0]["peer"].startswith("127.0.0.1:")


def test_garbage_and_disconnects_do_not_hurt_the_service(service):
    port, _log, proc = service
    # connect and vanish at once
    for _ in range(5):
        socket.create_connection(("127.0.0.1", port)).close()
    # binary junk and an endless line
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        _read_until(s, b"login: ")
        s.sendall(b"\xff\xfe\x00\x01" * 5000)
        try:
            _read_all(s)
        except OSError:
            pass
    # disconnect halfway through
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        _read_until(s, b"login: ")
        s.sendall(b"admin\n")
    # a user line with no newline, then EOF
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        _read_until(s, b"login: ")
        s.sendall(b"admin")
        s.shutdown(socket.SHUT_WR)
        _read_all(s)
    assert proc.poll() is None
    _h, s = _login(port, "backup", "Qz8!mR2#vL")
    with s:
        assert _read_until(s, b"$ ").startswith(b"Welcome backup\n")


def test_many_concurrent_clients(service):
    port, log, _ = service
    results = []
    # hold 30 sessions open at the banner at once, then log in with all of them
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(30)]

    def one(n, s):
        try:
            _read_until(s, b"login: ")
            pw = "admin123" if n % 3 == 0 else "wrong"
            s.sendall(b"admin\n")
            _read_until(s, b"password: ")
            s.sendall(pw.encode() + b"\n")
            got = _read_until(s, b"\n")
            if pw == "admin123":
                s.sendall(b"exit\n")
            _read_all(s)
            results.append((pw == "admin123", got.startswith(b"Welcome")))
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(n, s)) for n, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 30 and all(a == b for a, b in results)
    time.sleep(0.1)
    assert len(log.read_text().splitlines()) == 30


def test_bad_accounts_file(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text('{"user": "x"}')
    r = subprocess.run([sys.executable, "-m", "cyberrange.services.login", "--port", "1",
                        "--accounts-file", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "expected a JSON list" in r.stderr
