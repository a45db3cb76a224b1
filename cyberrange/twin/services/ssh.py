"""A real SSH-protocol server for twin hosts (paramiko): password logins and a tiny fake shell.

    python -m cyberrange.twin.services.ssh --port 22 --accounts-file accounts.json \\
        [--banner SSH-2.0-OpenSSH_8.9p1] [--log attempts.jsonl] [--host-key-dir DIR] \\
        [--hostname NAME] [--bind 0.0.0.0] [--max-auth-tries 6]

Any SSH client (OpenSSH, paramiko, hydra) can talk to it: key exchange, host key, password
authentication, ``exec`` and ``shell`` channels are real SSH. Behind the login there is no real
shell: commands are answered by :func:`fake_shell` (``id``, ``whoami``, ``hostname``,
``uname -a``, ``cat`` of a few canned files, ``echo``, ``exit``; anything else is "not found").

- Accounts file: JSON ``[{"user": "admin", "password": "admin123"}, ...]`` (as the login service).
- Host key: an ECDSA P-256 key, generated on first start and cached as
  ``<host-key-dir>/ssh_host_ecdsa_key`` (the same key across restarts, as a real host has).
- Log: one JSON line per event: ``{"time", "event": "auth", "peer", "user", "ok", "method"}``
  per password attempt, ``{"time", "event": "exec"|"shell", "peer", "user", "command",
  "exit_status"}`` per command.
- A connection gets ``--max-auth-tries`` password attempts, then the server disconnects it;
  a client that has not logged in after ``--login-grace`` seconds is disconnected too.
  When the client sends SSH_MSG_DISCONNECT the server closes its side at once (FIN).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

import paramiko

LOGIN_GRACE = 30.0          # seconds to authenticate (OpenSSH LoginGraceTime is 120)
MAX_AUTH_TRIES = 6          # as OpenSSH MaxAuthTries
MAX_CONNECTIONS = 256       # concurrent sessions; more are closed at once
SESSION_IDLE = 300.0        # seconds a logged-in session may stay without a new channel


# --------------------------------------------------------------------------- the fake shell
def _canned_files(hostname: str) -> dict[str, str]:
    return {
        "/etc/hostname": f"{hostname}\n",
        "/etc/os-release": 'PRETTY_NAME="Ubuntu 22.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
                           'ID=ubuntu\nID_LIKE=debian\n',
        "/etc/issue": "Ubuntu 22.04.3 LTS \\n \\l\n\n",
        "/etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
                       "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                       "sshd:x:110:65534::/run/sshd:/usr/sbin/nologin\n"
                       "admin:x:1000:1000:admin,,,:/home/admin:/bin/bash\n"
                       "operator:x:1001:1001::/home/operator:/bin/bash\n",
    }


def fake_shell(command: str, user: str, hostname: str) -> tuple[str, int]:
    """(output, exit status) of one command line; ``;`` and ``&&`` separate commands."""
    out, status = [], 0
    for part in command.replace("&&", ";").split(";"):
        words = part.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        uid = 0 if user == "root" else 1000
        if cmd == "id":
            text, status = f"uid={uid}({user}) gid={uid}({user}) groups={uid}({user})\n", 0
        elif cmd == "whoami":
            text, status = f"{user}\n", 0
        elif cmd == "hostname":
            text, status = f"{hostname}\n", 0
        elif cmd == "uname":
            text = (f"Linux {hostname} 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC "
                    f"2023 x86_64 x86_64 x86_64 GNU/Linux\n" if "-a" in args else "Linux\n")
            status = 0
        elif cmd == "pwd":
            text, status = ("/root\n" if uid == 0 else f"/home/{user}\n"), 0
        elif cmd == "echo":
            text, status = " ".join(args) + "\n", 0
        elif cmd == "cat":
            files, text, status = _canned_files(hostname), "", 0
            for f in args:
                if f in files:
                    text += files[f]
                else:
                    text += f"cat: {f}: No such file or directory\n"
                    status = 1
        elif cmd == "exit":
            break
        else:
            text, status = f"sh: 1: {cmd}: not found\n", 127
        out.append(text)
    return "".join(out), status


# --------------------------------------------------------------------------- the server
def load_accounts(path: str) -> dict[str, str]:
    from cyberrange.twin.services.login import load_accounts as _load
    return _load(path)


def load_host_key(directory: str | None):
    """The cached ECDSA host key in ``directory`` (generated and saved on first use)."""
    if not directory:
        return paramiko.ECDSAKey.generate(bits=256)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "ssh_host_ecdsa_key")
    if os.path.exists(path):
        return paramiko.ECDSAKey(filename=path)
    key = paramiko.ECDSAKey.generate(bits=256)
    tmp = f"{path}.{os.getpid()}.tmp"
    key.write_private_key_file(tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)           # atomic: two servers starting at once share one key
    return key


class SSHService:
    def __init__(self, accounts: dict[str, str], banner: str, host_key, log_path: str | None = None,
                 hostname: str | None = None, max_auth_tries: int = MAX_AUTH_TRIES,
                 login_grace: float = LOGIN_GRACE):
        if not banner.startswith("SSH-2.0-"):
            raise ValueError(f"the banner must start with 'SSH-2.0-' (got {banner!r})")
        self.accounts, self.banner, self.host_key = accounts, banner, host_key
        self.hostname = hostname or socket.gethostname()
        self.max_auth_tries, self.login_grace = max_auth_tries, login_grace
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None
        self._log_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def log(self, **event) -> None:
        if self._log is None:
            return
        line = json.dumps({"time": time.time(), **event}) + "\n"
        with self._log_lock:
            self._log.write(line)
            self._log.flush()

    def serve_forever(self, listener: socket.socket, stop: threading.Event) -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, addr = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if stop.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._connection, args=(conn, addr), daemon=True).start()

    def _connection(self, conn: socket.socket, addr) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        t = None
        try:
            t = paramiko.Transport(conn)
            t.local_version = self.banner
            t.add_server_key(self.host_key)
            t.banner_timeout = t.handshake_timeout = t.auth_timeout = self.login_grace
            iface = _Interface(self, peer)
            try:
                t.start_server(server=iface)
            except (paramiko.SSHException, EOFError, OSError):
                return
            started = time.monotonic()
            last = started
            while t.is_active():
                if not t.is_authenticated():
                    if iface.failures >= self.max_auth_tries:
                        break
                    if time.monotonic() - started > self.login_grace:
                        break
                elif time.monotonic() - last > SESSION_IDLE:
                    break
                chan = t.accept(timeout=0.2)
                if chan is None:
                    continue
                last = time.monotonic()
                threading.Thread(target=self._channel, args=(chan, iface), daemon=True).start()
        except Exception:                       # noqa: BLE001 - one bad client ends only itself
            pass
        finally:
            try:
                if t is not None:
                    t.close()
            finally:
                conn.close()
                self._slots.release()

    def _channel(self, chan, iface: "_Interface") -> None:
        """An exec channel runs its command; a shell channel reads lines until exit/EOF."""
        try:
            req = iface.wait_request(chan.get_id(), 10.0)
            if req is None:
                return
            kind, command = req
            if kind == "exec":
                out, status = fake_shell(command, iface.user, self.hostname)
                self.log(event="exec", peer=iface.peer, user=iface.user, command=command,
                         exit_status=status)
                chan.sendall(out.encode())
                chan.send_exit_status(status)
                return
            self._shell(chan, iface)
        except (OSError, EOFError, Exception):  # noqa: BLE001 - the client went away
            pass
        finally:
            try:
                chan.close()
            except Exception:                   # noqa: BLE001
                pass

    def _shell(self, chan, iface: "_Interface") -> None:
        prompt = f"{iface.user}@{self.hostname}:~{'#' if iface.user == 'root' else '$'} "
        chan.sendall(f"Welcome to Ubuntu 22.04.3 LTS\r\n{prompt}".encode())
        chan.settimeout(SESSION_IDLE)
        buf, status = b"", 0
        while True:
            data = chan.recv(1024)
            if not data:
                break
            chan.sendall(data.replace(b"\r", b"\r\n"))            # echo, as a pty would
            buf += data.replace(b"\r", b"\n")
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                command = line.decode("utf-8", "replace").strip()
                if command == "exit":
                    chan.send_exit_status(status)
                    return
                out, status = fake_shell(command, iface.user, self.hostname) if command else ("", 0)
                if command:
                    self.log(event="shell", peer=iface.peer, user=iface.user, command=command,
                             exit_status=status)
                chan.sendall(out.replace("\n", "\r\n").encode() + prompt.encode())
            if len(buf) > 4096:
                return


class _Interface(paramiko.ServerInterface):
    """paramiko's callbacks for one connection: password auth against the accounts, session
    channels, exec and shell requests (handed to the channel's thread)."""

    def __init__(self, service: SSHService, peer: str):
        self.service, self.peer = service, peer
        self.user = ""
        self.failures = 0
        self._requests: dict[int, tuple[str, str]] = {}
        self._cv = threading.Condition()

    def get_allowed_auths(self, username):
        return "password"

    def check_auth_password(self, username, password):
        ok = username in self.service.accounts and self.service.accounts[username] == password
        self.service.log(event="auth", peer=self.peer, user=username, ok=ok, method="password")
        if ok:
            self.user = username
            return paramiko.AUTH_SUCCESSFUL
        self.failures += 1
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def _request(self, chanid: int, kind: str, command: str) -> bool:
        with self._cv:
            self._requests[chanid] = (kind, command)
            self._cv.notify_all()
        return True

    def check_channel_exec_request(self, channel, command):
        return self._request(channel.get_id(), "exec",
                             command.decode("utf-8", "replace") if isinstance(command, bytes)
                             else str(command))

    def check_channel_shell_request(self, channel):
        return self._request(channel.get_id(), "shell", "")

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight,
                                  modes):
        return True

    def check_channel_env_request(self, channel, name, value):
        return True

    def wait_request(self, chanid: int, timeout: float) -> tuple[str, str] | None:
        with self._cv:
            self._cv.wait_for(lambda: chanid in self._requests, timeout)
            return self._requests.pop(chanid, None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cyberrange.twin.services.ssh",
                                 description="SSH-protocol server (paramiko) for the twin")
    ap.add_argument("--port", type=int, default=22, help="TCP port to listen on")
    ap.add_argument("--bind", default="0.0.0.0", help="address to bind")
    ap.add_argument("--banner", default="SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6",
                    help="the server's SSH version string (must start with SSH-2.0-)")
    ap.add_argument("--accounts-file", required=True, help='JSON [{"user": .., "password": ..}]')
    ap.add_argument("--log", default=None, help="append one JSON line per auth attempt/command")
    ap.add_argument("--host-key-dir", default=None,
                    help="directory caching the host key (default: a new key per start)")
    ap.add_argument("--hostname", default=None, help="host name shown by the fake shell")
    ap.add_argument("--max-auth-tries", type=int, default=MAX_AUTH_TRIES,
                    help="password attempts per connection before the server disconnects")
    ap.add_argument("--login-grace", type=float, default=LOGIN_GRACE,
                    help="seconds a client has to log in")
    args = ap.parse_args(argv)
    try:
        accounts = load_accounts(args.accounts_file)
        key = load_host_key(args.host_key_dir)
        service = SSHService(accounts, args.banner, key, args.log, args.hostname,
                             args.max_auth_tries, args.login_grace)
    except (OSError, ValueError) as exc:
        print(f"ssh: {exc}", file=sys.stderr)
        return 2
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.bind, args.port))
        listener.listen(512)
    except OSError as exc:
        print(f"ssh: cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ssh: listening on {args.bind}:{args.port} ({key.get_name()} "
          f"{key.fingerprint if hasattr(key, 'fingerprint') else ''})", file=sys.stderr, flush=True)
    try:
        service.serve_forever(listener, stop)
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
