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

from cyberrange.attack.techniques.common import _short

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
