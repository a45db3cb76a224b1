"""Machinery shared by the technique families: results and exact flow accounting, routing of
targets to next hops, one batched ARP resolution, a raw-socket receiver, reused layer-2 sockets
with pacing, and kernel TCP connections counted with TCP_INFO.

Every family module (``discovery``, ``credential``, ...) builds on these; see docs/techniques.md.
"""
from __future__ import annotations

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


# --------------------------------------------------------------------------- results and flows
@dataclass
class Result:
    outcome: str = "failed"                 # succeeded | failed | blocked | error
    start: float = 0.0
    end: float = 0.0
    flows: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    error: str | None = None
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "start": self.start, "end": self.end,
                "flows": merge_flows(self.flows), "facts": self.facts, "error": self.error,
                "log": self.log}


def flow(src, dst, proto, sport, dport, packets, nbytes) -> dict:
    return {"src": str(src), "dst": str(dst), "proto": proto, "sport": int(sport),
            "dport": int(dport), "packets": int(packets), "bytes": int(nbytes)}


def merge_flows(flows: list[dict]) -> list[dict]:
    """One entry per 5-tuple (sums), in first-seen order; drops zero-packet flows."""
    out: dict[tuple, dict] = {}
    for f in flows:
        key = (f["src"], f["dst"], f["proto"], f["sport"], f["dport"])
        if key in out:
            out[key]["packets"] += f["packets"]
            out[key]["bytes"] += f["bytes"]
        else:
            out[key] = dict(f)
    return [f for f in out.values() if f["packets"] > 0]


# --------------------------------------------------------------------------- layer-2 plumbing
@dataclass
class Hop:
    """How one target is reached from the actor: out of ``iface`` from ``src``, via ``gw``."""
    ip: str
    iface: str
    src: str
    gw: str | None              # None: on-link (ARP for the target itself)

    @property
    def next_hop(self) -> str:
        return self.gw or self.ip


def route_targets(ips: list[str], log: list[str]) -> list[Hop]:
    """Look every target up in the namespace's routing table (scapy's copy of it)."""
    from scapy.config import conf
    conf.route.resync()
    hops = []
    for ip in ips:
        iface, src, gw = conf.route.route(ip, verbose=0)
        iface = getattr(iface, "name", iface)
        if not src or src == "0.0.0.0" or iface in ("lo", conf.loopback_name):
            log.append(f"{ip}: no route from the actor; nothing sent")
            continue
        if ip == src:
            log.append(f"{ip}: is the actor's own address; skipped")
            continue
        hops.append(Hop(ip, iface, src, None if gw in (None, "0.0.0.0") else gw))
    return hops


def arp_resolve(iface: str, src_ip: str, ips: list[str], timeout: float) -> dict[str, str]:
    """One batched ARP request/response exchange: {ip: mac} for the ips that answered."""
    from scapy.layers.l2 import ARP, Ether
    from scapy.arch import get_if_hwaddr
    from scapy.sendrecv import srp
    if not ips:
        return {}
    mac = get_if_hwaddr(iface)
    reqs = [Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=src_ip, pdst=ip)
            for ip in ips]
    ans, _ = srp(reqs, iface=iface, timeout=timeout, verbose=0)
    return {r[ARP].psrc: r[ARP].hwsrc for _s, r in ans if r[ARP].psrc in set(ips)}


def resolve_hops(hops: list[Hop], timeout: float, log: list[str]) -> dict[str, dict[str, str]]:
    """{iface: {next-hop ip: mac}}: one ARP batch per interface (on-link targets + gateways)."""
    macs = {}
    for iface in sorted({h.iface for h in hops}):
        on_iface = [h for h in hops if h.iface == iface]
        wanted = list(dict.fromkeys(h.next_hop for h in on_iface))
        found = arp_resolve(iface, on_iface[0].src, wanted, timeout)
        for gw in sorted({h.gw for h in on_iface if h.gw}):
            if gw not in found:
                log.append(f"gateway {gw} on {iface} did not answer ARP; off-link targets skipped")
        macs[iface] = found
    return macs


ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = 33


class Receiver(threading.Thread):
    """Collects the IPv4 frames addressed to ``dst_ip`` on ``iface`` (a PF_PACKET socket with a
    large buffer, headers parsed by hand: scapy's dissector cannot keep up with thousands of
    answers per second, and a missed SYN-ACK would be a kernel RST missing from the ledger).

    ``on_ip(src, proto, l4)`` gets the source address, the IP protocol and the bytes after the
    IP header. ``drops`` is the kernel's count of frames this socket lost (should stay 0)."""

    def __init__(self, iface: str, dst_ip: str, on_ip):
        super().__init__(daemon=True)
        self.on_ip, self.dst = on_ip, socket.inet_aton(dst_ip)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind((iface, ETH_P_IP))
        self.sock.settimeout(0.05)
        self._stop_flag = threading.Event()
        self.drops = 0
        self.start()

    def run(self) -> None:
        sock = self.sock
        while True:
            try:
                frame, addr = sock.recvfrom(2048)
            except (socket.timeout, BlockingIOError):
                if self._stop_flag.is_set():
                    return                  # stop asked and the buffer is drained
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(frame) < 34:
                continue
            ip = memoryview(frame)[14:]
            if ip[0] >> 4 != 4 or bytes(ip[16:20]) != self.dst:
                continue
            ihl = (ip[0] & 0x0F) * 4
            try:
                self.on_ip(socket.inet_ntoa(bytes(ip[12:16])), ip[9], bytes(ip[ihl:ihl + 64]))
            except Exception:               # noqa: BLE001 - one odd frame must not stop us
                pass

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(10)
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.drops = struct.unpack("II", raw)[1]
        except OSError:
            pass
        self.sock.close()


class L2Session:
    """A receiver plus one reused scapy layer-2 socket (PF_PACKET) on one interface."""

    def __init__(self, iface: str, src_ip: str, on_ip):
        from scapy.config import conf
        self.iface = iface
        self.receiver = Receiver(iface, src_ip, on_ip)
        self.sock = conf.L2socket(iface=iface)

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def close(self) -> int:
        """Close; returns the number of received frames the kernel dropped."""
        try:
            self.sock.close()
        finally:
            self.receiver.stop()
        return self.receiver.drops


def paced_send(sessions: dict[str, L2Session], frames: list[tuple[str, bytes]], rate: float,
               log: list[str]) -> None:
    """Write each (iface, frame) at ``rate`` frames per second (absolute schedule, no drift)."""
    interval = 1.0 / rate if rate and rate > 0 else 0.0
    t0 = time.monotonic()
    for i, (iface, frame) in enumerate(frames):
        due = t0 + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sessions[iface].send(frame)
    took = time.monotonic() - t0
    if frames:
        achieved = len(frames) / took if took > 0 else float("inf")
        log.append(f"sent {len(frames)} frames in {took:.3f}s ({achieved:.0f}/s, asked {rate}/s)")


def _frames_for(hops, macs, build, log):
    """[(hop, iface, frame bytes)] for hops whose next hop resolved; logs the others."""
    from scapy.arch import get_if_hwaddr
    my_mac = {}
    out, unresolved = [], []
    for n, h in enumerate(hops):
        mac = macs.get(h.iface, {}).get(h.next_hop)
        if mac is None:
            if h.gw is None:
                unresolved.append(h.ip)
            continue
        if h.iface not in my_mac:
            my_mac[h.iface] = get_if_hwaddr(h.iface)
        out.append((h, h.iface, build(n, h, my_mac[h.iface], mac)))
    if unresolved:
        log.append(f"{len(unresolved)} on-link targets did not answer ARP (only ARP sent): "
                   + _short(unresolved))
    return out


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# --------------------------------------------------------------------------- paced layer-2 runs
def _run_l2(frames, rate, timeout, on_ip, log) -> None:
    """Open sessions on the interfaces used, send paced, wait ``timeout``, close."""
    if not frames:
        return
    sessions: dict[str, L2Session] = {}
    try:
        for h, iface, _f in frames:
            if iface not in sessions:
                sessions[iface] = L2Session(iface, h.src, on_ip)
        paced_send(sessions, [(i, f) for _h, i, f in frames], rate, log)
        time.sleep(timeout)
    finally:
        for iface, sess in sessions.items():
            drops = sess.close()
            if drops:
                log.append(f"WARNING: the receiver on {iface} lost {drops} frames; answers (and "
                           f"the kernel RSTs they cause) may be missing from the counts; "
                           f"lower the rate")


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
    """One kernel TCP connection with exact packet accounting at close."""

    def __init__(self, ip: str, port: int, connect_timeout: float, io_timeout: float):
        self.ip, self.port, self.io_timeout = ip, port, io_timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.established = False
        self.status = "connecting"
        rc = self.sock.connect_ex((ip, port))
        # the source port is bound as soon as connect() starts; read it now (a failed connect
        # releases it, and the flow needs it)
        self.src, self.sport = self.sock.getsockname()
        if rc not in (0, errno.EINPROGRESS):
            self.status = _conn_status(rc)
            return
        _r, w, _x = select.select([], [self.sock], [], connect_timeout)
        if not w:
            self.status = "timeout"
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.status = _conn_status(err)
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


def _unique_ips(targets: list[str]) -> list[str]:
    """Target strings (ip, ip:port or CIDR) -> unique IPs, in order."""
    out = []
    for t in map(str, targets):
        if "/" in t:
            out.extend(str(a) for a in ipaddress.IPv4Network(t, strict=False).hosts())
        else:
            out.append(str(ipaddress.IPv4Address(t.rsplit(":", 1)[0] if ":" in t else t)))
    return list(dict.fromkeys(out))


def parse_services(targets: list[str], ports: list[int], log: list[str],
                   only_listed_ports: bool = True) -> list[tuple[str, int]]:
    """Targets -> unique (ip, port): ``ip:port`` stays (if its port is in ``ports``, unless
    ``only_listed_ports`` is false), a bare ip or CIDR gets every port in ``ports``."""
    out: list[tuple[str, int]] = []
    for t in map(str, targets):
        if ":" in t and "/" not in t:
            ip, port = t.rsplit(":", 1)
            if int(port) in ports or not only_listed_ports:
                out.append((ip, int(port)))
            else:
                log.append(f"{t}: port not in params.ports {ports}; skipped")
        else:
            out.extend((ip, p) for ip in _unique_ips([t]) for p in ports)
    return list(dict.fromkeys(out))


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


def alive_for_kernel(ips: list[str], timeout: float, log: list[str]) -> set[str]:
    """The targets a kernel connection may be aimed at without breaking the accounting.

    A SYN to an on-link address that never answers ARP is counted by TCP_INFO (``segs_out``)
    but never leaves the host (the kernel drops it with the unresolved neighbour entry). So
    on-link targets are ARPed first (one batch; ARP is not an IP packet) and the silent ones are
    left out, as the ping sweep and SYN scan do. Off-link targets stay (the gateway answers)."""
    import scapy.layers.inet  # noqa: F401 - sets up scapy's routing table (conf.route)
    hops = route_targets(ips, log)
    ok = {h.ip for h in hops if h.gw}
    for iface in sorted({h.iface for h in hops if not h.gw}):
        on = [h for h in hops if not h.gw and h.iface == iface]
        ok |= set(arp_resolve(iface, on[0].src, [h.ip for h in on], timeout))
    silent = [h.ip for h in hops if h.ip not in ok]
    if silent:
        log.append(f"{len(silent)} on-link targets did not answer ARP (only ARP sent): "
                   + _short(silent))
    return ok
