"""Layer-2 machinery of the technique families: routing targets to next hops, one batched ARP
resolution, a raw-socket receiver fast enough for thousands of answers a second, reused
layer-2 sockets with pacing, and the check that keeps kernel connections off silent on-link
addresses. scapy is imported inside the functions (importing this module stays cheap).
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

from cyberrange.attack.techniques.common import (
    Blocked,
    Counter,
    _short,
    count_arp,
    defence_reason,
    send_or_block,
)

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
    import scapy.layers.inet  # noqa: F401 - sets up scapy's routing table (conf.route)
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


ETH_P_ARP = 0x0806


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_exchange(iface: str, src_ip: str, ips: list[str], timeout: float,
                 rate: float = 0.0) -> dict[str, str]:
    """Ask every address of ``ips`` once (one ARP request each, paced at ``rate`` per second
    when > 0), then wait ``timeout`` s for the answers: ``{ip: mac}`` of the addresses that
    answered. Every request is counted in the running technique's ``arp_frames`` as it is
    written, so a cut (:class:`Blocked`, raised by a send the actor's node refuses) leaves the
    exact count."""
    from scapy.arch import get_if_hwaddr
    if not ips:
        return {}
    mac = _mac_bytes(get_if_hwaddr(iface))
    me = socket.inet_aton(src_ip)
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    wanted = set(ips)
    found: dict[str, str] = {}

    def drain(wait: float) -> None:
        rx.settimeout(wait)
        while True:
            try:
                frame = rx.recv(128)
            except (socket.timeout, BlockingIOError):
                return
            except OSError as exc:      # ENETDOWN: the interface went down under us
                reason = defence_reason(exc, f"listening on {iface}")
                if reason:
                    raise Blocked(reason) from None
                raise
            rx.settimeout(0)
            if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
                continue
            psrc = socket.inet_ntoa(frame[28:32])
            if psrc in wanted and frame[38:42] == me and psrc not in found:
                found[psrc] = ":".join(f"{b:02x}" for b in frame[22:28])

    try:
        rx.bind((iface, ETH_P_ARP))
        tx.bind((iface, 0))
        interval = 1.0 / rate if rate and rate > 0 else 0.0
        t0 = time.monotonic()
        for i, ip in enumerate(ips):
            while interval and (delay := t0 + i * interval - time.monotonic()) > 0:
                drain(delay)            # returns early when a frame comes
            frame = (b"\xff" * 6 + mac + b"\x08\x06"
                     + struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac, me, b"\0" * 6,
                                   socket.inet_aton(ip)))
            send_or_block(tx.send, frame, f"ARP request for {ip}")
            count_arp()
            if not interval and i % 64 == 63:
                drain(0)
        end = time.monotonic() + timeout
        while len(found) < len(wanted):
            left = end - time.monotonic()
            if left <= 0:
                break
            drain(min(left, 0.05))
    finally:
        rx.close()
        tx.close()
    return found


def arp_resolve(iface: str, src_ip: str, ips: list[str], timeout: float) -> dict[str, str]:
    """One batched ARP request/response exchange: {ip: mac} for the ips that answered."""
    return arp_exchange(iface, src_ip, list(dict.fromkeys(ips)), timeout)


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


ARP_TIMEOUT = 1.0           # seconds the layer-2 techniques wait for their next hops' ARP answers
ANSWER_WAIT = 0.3           # seconds a flood or replay waits after its last frame (answers in flight)
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
               log: list[str], sent: Counter | None = None) -> int:
    """Write each (iface, frame) at ``rate`` frames per second (absolute schedule, no drift);
    returns how many went out. ``sent.n`` counts them as they go: a send the actor's node
    refuses raises :class:`Blocked` and ``sent.n`` says how many frames left before it."""
    sent = sent if sent is not None else Counter()
    interval = 1.0 / rate if rate and rate > 0 else 0.0
    t0 = time.monotonic()
    for i, (iface, frame) in enumerate(frames):
        due = t0 + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send_or_block(sessions[iface].send, frame, f"a frame out of {iface}")
        sent.n += 1
    took = time.monotonic() - t0
    if frames:
        achieved = len(frames) / took if took > 0 else float("inf")
        log.append(f"sent {len(frames)} frames in {took:.3f}s ({achieved:.0f}/s, asked {rate}/s)")
    return sent.n


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



# --------------------------------------------------------------------------- paced layer-2 runs
def _run_l2(frames, rate, timeout, on_ip, log, sent: Counter | None = None) -> None:
    """Open sessions on the interfaces used, send paced, wait ``timeout``, close. ``sent.n``:
    how many of ``frames`` (in order) went out, also after a cut."""
    if not frames:
        return
    sessions: dict[str, L2Session] = {}
    try:
        for h, iface, _f in frames:
            if iface not in sessions:
                sessions[iface] = L2Session(iface, h.src, on_ip)
        paced_send(sessions, [(i, f) for _h, i, f in frames], rate, log, sent)
        time.sleep(timeout)
    finally:
        for iface, sess in sessions.items():
            drops = sess.close()
            if drops:
                log.append(f"WARNING: the receiver on {iface} lost {drops} frames; answers (and "
                           f"the kernel RSTs they cause) may be missing from the counts; "
                           f"lower the rate")


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


def default_gateways() -> list[tuple[str, str]]:
    """``[(iface, gateway ip)]`` of this namespace's default routes (from /proc/net/route)."""
    out = []
    try:
        with open("/proc/net/route") as fh:
            rows = [ln.split() for ln in fh.read().splitlines()[1:]]
    except OSError:
        return out
    for r in rows:
        if len(r) > 2 and r[1] == "00000000" and r[2] != "00000000":
            out.append((r[0], socket.inet_ntoa(struct.pack("<I", int(r[2], 16)))))
    return list(dict.fromkeys(out))


def isolation_reason(timeout: float = 1.0) -> str | None:
    """Why the actor is cut off from its network, or None. For a technique that got no answer
    at all: a down interface or no route (``common.cut_off_reason``), or its own default
    gateway no longer answering ARP (one request each, counted): then the silence is the
    defence (an isolation at the switch port, say), not an empty network."""
    from scapy.arch import get_if_addr
    from cyberrange.attack.techniques.common import cut_off_reason
    reason = cut_off_reason()
    if reason:
        return reason
    gws = default_gateways()
    if not gws:
        return None
    silent = []
    for iface, gw in gws:
        try:
            src = get_if_addr(iface)
        except (OSError, ValueError):
            continue
        if src in (None, "0.0.0.0"):
            continue
        if not arp_exchange(iface, src, [gw], timeout):
            silent.append(f"{gw} on {iface}")
    if silent and len(silent) == len(gws):
        return (f"even the actor's own gateway ({', '.join(silent)}) does not answer ARP: "
                f"the actor is cut off from its network")
    return None
