"""Kernel TCP connections with exact packet accounting (TCP_INFO), for the techniques that
speak to real services: connection set-up and abortive close, the line-based login dialogue,
and SSH (paramiko) over a socket the technique owns. See docs/techniques.md, "Ledger
accounting".
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

from cyberrange.attack.techniques import witness
from cyberrange.attack.techniques.common import NODE_ERRNOS, Blocked, defence_reason, flow

# --------------------------------------------------------------------------- kernel TCP connections (TCP_INFO)
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 1, 2, 3, 4, 5
TCP_CLOSE_WAIT = 8
# States in which close() with SO_LINGER (1, 0) sends one RST (kernel tcp_need_reset()).
RST_ON_ABORT = {TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_SYN_RECV}
TCPI_OPT_TIMESTAMPS = 1
# struct tcp_info offsets (linux/tcp.h, stable ABI): state u8 @0, options u8 @5,
# total_retrans u32 @100, segs_out u32 @136, bytes_sent u64 @200.
_TCP_INFO_LEN = 232


def tcp_info(sock: socket.socket) -> dict:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    info = {"state": raw[0], "options": raw[5],
            "total_retrans": struct.unpack_from("I", raw, 100)[0],
            "segs_out": struct.unpack_from("I", raw, 136)[0]}
    info["bytes_sent"] = struct.unpack_from("Q", raw, 200)[0] if len(raw) >= 208 else None
    return info


def _sysctl(name: str, default: int) -> int:
    try:
        with open(f"/proc/sys/net/ipv4/{name}") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _syn_option_bytes() -> int:
    """TCP option bytes in the kernel's SYN (MSS, SACK-permitted, timestamps, window scale)."""
    ts, sack, ws = _sysctl("tcp_timestamps", 1), _sysctl("tcp_sack", 1), _sysctl("tcp_window_scaling", 1)
    return 4 + (12 if ts else (4 if sack else 0)) + (4 if ws else 0)


class Conn:
    """One kernel TCP connection with exact packet accounting at close.

    The flow is claimed with the egress witness as soon as its source port is known, so what
    really left counts, also when a rule in the actor's node drops the segments (TCP_INFO
    counts them anyway) or the technique is cut short before ``close``. ``errno`` is the
    error of a failed connect (0 otherwise). A connect the actor's own node refuses at once
    (``common.NODE_ERRNOS``: a firewall rule, no route, a down interface) raises
    :class:`common.Blocked`: every later connection would fail alike."""

    def __init__(self, ip: str, port: int, connect_timeout: float, io_timeout: float):
        self.ip, self.port, self.io_timeout = ip, port, io_timeout
        witness.ensure()                 # before the SYN
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.established = False
        self.status = "connecting"
        self.errno = 0
        rc = self.sock.connect_ex((ip, port))
        # the source port is bound as soon as connect() starts; read it now (a failed connect
        # releases it, and the flow needs it)
        self.src, self.sport = self.sock.getsockname()
        witness.claim((self.src, ip, "tcp", self.sport, port))
        if rc not in (0, errno.EINPROGRESS):
            self.status, self.errno = _conn_status(rc), rc
            if rc in NODE_ERRNOS:        # the actor's node refuses to send: so will it next time
                self.sock.close()
                raise Blocked(self.defence)
            return
        _r, w, _x = select.select([], [self.sock], [], connect_timeout)
        if not w:
            self.status = "timeout"
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.status, self.errno = _conn_status(err), err
            return
        self.established = True
        self.status = "connected"
        self.sock.setblocking(True)
        self.sock.settimeout(io_timeout)
        self.buf = b""
        self.eof = False

    def _quickack(self) -> None:
        """ACK what arrives at once (no delayed ACK): a peer that waits for our ACK re-sends its
        last segment (tail-loss probe, a few ms on a veth), and the ACK our kernel answers that
        copy with could come after the segment counter was read."""
        quickack(self.sock)

    def read_until(self, *markers: bytes) -> bytes | None:
        """Read until one of ``markers`` is in the buffer (returns it), or None on EOF/timeout."""
        while True:
            for m in markers:
                if m in self.buf:
                    return m
            if self.eof:
                return None
            try:
                self._quickack()
                chunk = self.sock.recv(4096)
            except (socket.timeout, OSError):
                return None
            if not chunk:
                self.eof = True
            self.buf += chunk

    def wait_eof(self) -> bool:
        while not self.eof:
            try:
                self._quickack()
                chunk = self.sock.recv(4096)
            except (socket.timeout, OSError):
                return False
            if not chunk:
                self.eof = True
            self.buf += chunk
        return True

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    @property
    def defence(self) -> str | None:
        if self.errno in NODE_ERRNOS:
            return defence_reason(OSError(self.errno, os.strerror(self.errno)),
                                  f"connect to {self.ip}:{self.port}")
        return None

    def close(self) -> dict:
        """Abort (RST) and return this connection's flow: exact packets, estimated bytes."""
        return abort_and_count(self.sock, self.src, self.sport, self.ip, self.port,
                               self.established)


SETTLE_S = 0.005


def quickack(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass


def abort_and_count(sock: socket.socket, src: str, sport: int, ip: str, port: int,
                    established: bool) -> dict:
    """Read the kernel's segment counter, abort the connection (RST where the kernel sends one)
    and return its flow: exact packets, bytes computed from TCP_INFO (see docs/techniques.md).

    The caller makes sure nothing is in flight towards us (wait for the peer's FIN, or a quiet
    period): a segment the peer sends between this read and the close would make our kernel
    answer with an ACK that is not counted."""
    quickack(sock)            # flush a pending delayed ACK now, so it is counted ...
    time.sleep(SETTLE_S)      # ... and answer a last re-sent segment before the count
    info = tcp_info(sock)
    rst = 1 if info["state"] in RST_ON_ABORT else 0
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    segs = info["segs_out"] + rst
    # bytes: headers (Ether+IP+TCP = 54 per segment) + TCP options + payload bytes sent
    ts = bool(info["options"] & TCPI_OPT_TIMESTAMPS)
    syns = 1 if established else info["segs_out"]
    others = segs - syns
    nbytes = segs * 54 + syns * _syn_option_bytes() + (others * 12 if ts else 0) \
        + (info["bytes_sent"] or 0)
    return flow(src, ip, "tcp", sport, port, segs, nbytes)


def _conn_status(err: int) -> str:
    if err == errno.ECONNREFUSED:
        return "refused"
    if err in (errno.ETIMEDOUT,):
        return "timeout"
    return "unreachable"


def login_attempt(ip: str, port: int, user: str, password: str,
                  connect_timeout: float = 2.5, io_timeout: float = 5.0) -> tuple[str, dict]:
    """One guess. Returns (status, flow); status: ok | bad | not-login | refused | timeout |
    unreachable."""
    c = Conn(ip, port, connect_timeout, io_timeout)
    status = c.status
    try:
        if c.established:
            status = "not-login"
            if c.read_until(b"login: "):
                c.send(user + "\n")
                if c.read_until(b"password: "):
                    c.send(password + "\n")
                    got = c.read_until(b"Welcome", b"Login incorrect")
                    if got == b"Welcome":
                        status = "ok"
                        c.send("exit\n")
                    elif got == b"Login incorrect":
                        status = "bad"
                    # the server closes first: wait for its FIN, then abort (one RST)
                    c.wait_eof()
    except OSError:
        pass
    return status, c.close()


# --------------------------------------------------------------------------- SSH over a counted socket
class _KeepOpen:
    """The socket handed to paramiko: its ``close()`` leaves the kernel socket open, so the
    technique can still read TCP_INFO and abort the connection itself (exact accounting)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __getattr__(self, name):
        return getattr(self._sock, name)


SSH_DISCONNECT_BY_APPLICATION = 11


def ssh_session(ip: str, port: int, user: str, password: str, commands=(),
                connect_timeout: float = 2.5, io_timeout: float = 5.0) -> tuple[str, dict, dict]:
    """One SSH login (password auth) over a kernel TCP connection we own, then ``commands``
    (one exec channel each) if the login worked.

    Returns (status, flow, info); status: ok | bad | no-password-auth | not-ssh | error |
    refused | timeout | unreachable; info: {"banner": remote version, "outputs": {cmd: text}}.

    Accounting: paramiko (key exchange, auth, channels) writes through our socket; when the
    dialogue is over we send SSH_MSG_DISCONNECT, stop paramiko's reader thread, wait for the
    server's FIN (a server closes on disconnect), then read ``tcpi_segs_out`` and abort: one RST.
    Nothing can reach us after the FIN, so the count is exact."""
    c = Conn(ip, port, connect_timeout, io_timeout)
    status, info = c.status, {"banner": None, "outputs": {}}
    if not c.established:
        return status, c.close(), info
    import paramiko
    from paramiko.common import cMSG_DISCONNECT
    t = paramiko.Transport(_KeepOpen(c.sock))
    t.banner_timeout = t.handshake_timeout = t.auth_timeout = io_timeout
    try:
        try:
            t.start_client(timeout=io_timeout)
        except (paramiko.SSHException, EOFError, OSError):
            status = "not-ssh"
        else:
            info["banner"] = t.remote_version
            try:
                t.auth_password(user, password)
                status = "ok" if t.is_authenticated() else "bad"
            except paramiko.BadAuthenticationType:
                status = "no-password-auth"
            except paramiko.AuthenticationException:
                status = "bad"
            except (paramiko.SSHException, EOFError, OSError):
                status = "error"
            if status == "ok":
                for cmd in commands:
                    info["outputs"][cmd] = _ssh_exec(t, cmd, io_timeout)
            if t.is_active():
                m = paramiko.Message()
                m.add_byte(cMSG_DISCONNECT)
                m.add_int(SSH_DISCONNECT_BY_APPLICATION)
                m.add_string("bye")
                m.add_string("")
                try:
                    t._send_message(m)
                except (EOFError, OSError, paramiko.SSHException):
                    pass
    finally:
        t.stop_thread()
        t.join(io_timeout + 1)          # its reader wakes every 0.1 s; after this it sends nothing
    c.sock.setblocking(True)
    c.sock.settimeout(io_timeout)
    c.eof = False
    c.wait_eof()                        # the server's FIN: nothing else can arrive after it
    return status, c.close(), info


def _ssh_exec(t, cmd: str, timeout: float) -> str | None:
    """Run one command on an exec channel; its output (stdout + stderr) or None on failure."""
    import paramiko
    try:
        ch = t.open_session(timeout=timeout)
        ch.settimeout(timeout)
        ch.set_combine_stderr(True)
        ch.exec_command(cmd)
        out = b""
        while True:
            chunk = ch.recv(4096)
            if not chunk:
                break
            out += chunk
        deadline = time.monotonic() + timeout
        while not ch.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        # wait for the server's CHANNEL_CLOSE too, so nothing of this channel is still in flight
        while not ch.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        ch.close()
        return out.decode("utf-8", "replace")
    except (paramiko.SSHException, EOFError, OSError, socket.timeout):
        return None


def quiet_then_abort(c: "Conn", quiet: float = 0.3, limit: float = 3.0) -> dict:
    """Read until the peer has been silent ``quiet`` seconds (or sent FIN, or ``limit`` passed),
    so our kernel has ACKed all it will, then count and abort."""
    if c.established:
        c.sock.settimeout(quiet)
        end = time.monotonic() + limit
        while not c.eof and time.monotonic() < end:
            try:
                chunk = c.sock.recv(4096)
            except (socket.timeout, OSError):
                break
            if not chunk:
                c.eof = True
            c.buf += chunk
    return c.close()
