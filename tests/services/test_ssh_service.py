"""The twin's SSH-protocol server (cyberrange.services.ssh), spoken to by paramiko.

Server and client both run inside a namespace this test makes (loopback only), so no packet
leaves it. Without root the pure-Python parts (the fake shell) are still tested."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys

import pytest

from cyberrange.services.ssh import fake_shell

BANNER = "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6"

CLIENT = r"""
import json, sys, paramiko
port, user, password, cmds = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t = paramiko.Transport(("127.0.0.1", port))
t.start_client(timeout=10)
out = {"banner": t.remote_version, "key": t.get_remote_server_key().get_fingerprint().hex()}
try:
    t.auth_password(user, password)
    out["auth"] = t.is_authenticated()
except paramiko.AuthenticationException:
    out["auth"] = False
out["outputs"] = {}
for c in cmds if out["auth"] else []:
    ch = t.open_session(timeout=10)
    ch.exec_command(c)
    data = b""
    while True:
        d = ch.recv(4096)
        if not d:
            break
        data += d
    out["outputs"][c] = [data.decode(), ch.recv_exit_status()]
t.close()
print(json.dumps(out))
"""


def test_fake_shell_answers_the_usual_first_commands():
    assert fake_shell("id", "root", "ops") == ("uid=0(root) gid=0(root) groups=0(root)\n", 0)
    assert fake_shell("hostname", "admin", "ops") == ("ops\n", 0)
    assert fake_shell("uname -a", "admin", "ops")[0].startswith("Linux ops 5.15")
    assert fake_shell("cat /etc/hostname", "admin", "ops") == ("ops\n", 0)
    assert fake_shell("cat /nope", "admin", "ops") == ("cat: /nope: No such file or directory\n", 1)
    assert fake_shell("whoami; hostname", "admin", "ops") == ("admin\nops\n", 0)
    assert fake_shell("nc -l 4444", "admin", "ops") == ("sh: 1: nc: not found\n", 127)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and ip (runs in its own namespace)")


@pytest.fixture
def server(tmp_path):
    ns = f"crt-{secrets.token_hex(3)}-ssh"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        accounts = tmp_path / "accounts.json"
        accounts.write_text(json.dumps([{"user": "admin", "password": "admin123"}]))
        log = tmp_path / "ssh.jsonl"

        def start():
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                                  "cyberrange.services.ssh", "--port", "2022", "--bind",
                                  "127.0.0.1", "--banner", BANNER, "--accounts-file",
                                  str(accounts), "--log", str(log), "--hostname", "ops-files",
                                  "--host-key-dir", str(tmp_path / "keys")],
                                 stderr=subprocess.PIPE, text=True)
            procs.append(p)
            line = p.stderr.readline()
            assert "listening" in line, line
            return p

        def client(user, password, cmds=()):
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, "2022",
                                user, password, json.dumps(list(cmds))],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        start()
        yield {"client": client, "log": log, "start": start, "procs": procs}
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)


@needs_root
def test_ssh_server_checks_passwords_runs_commands_and_logs(server):
    bad = server["client"]("admin", "wrong")
    assert bad["banner"] == BANNER and bad["auth"] is False
    good = server["client"]("admin", "admin123", ["id", "hostname", "cat /etc/passwd", "exit"])
    assert good["auth"] is True
    assert good["outputs"]["id"] == ["uid=1000(admin) gid=1000(admin) groups=1000(admin)\n", 0]
    assert good["outputs"]["hostname"] == ["ops-files\n", 0]
    assert "root:x:0:0" in good["outputs"]["cat /etc/passwd"][0]
    assert good["outputs"]["exit"] == ["", 0]
    nobody = server["client"]("nobody", "admin123")
    assert nobody["auth"] is False
    events = [json.loads(line) for line in server["log"].read_text().splitlines()]
    auth = [(e["user"], e["ok"]) for e in events if e["event"] == "auth"]
    assert auth == [("admin", False), ("admin", True), ("nobody", False)]
    assert all(e["peer"].startswith("127.0.0.1:") for e in events)
    assert [e["command"] for e in events if e["event"] == "exec"] == \
        ["id", "hostname", "cat /etc/passwd", "exit"]
    # the host key is cached: a restarted server presents the same key
    server["procs"][0].terminate()
    server["procs"][0].wait(5)
    server["start"]()
    assert server["client"]("admin", "x")["key"] == bad["key"]
