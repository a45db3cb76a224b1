"""The paramiko half of the twin's SSH server (``cyberrange.services.ssh``): host key, one thread
per connection, password auth against the accounts, ``exec`` and ``shell`` channels answered by
the fake shell. Kept apart so that reading the service registry does not import paramiko."""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import paramiko

from cyberrange.services._shell import LOGIN_GRACE, MAX_AUTH_TRIES, fake_shell

MAX_CONNECTIONS = 256       # concurrent sessions; more are closed at once
SESSION_IDLE = 300.0        # seconds a logged-in session may stay without a new channel


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
