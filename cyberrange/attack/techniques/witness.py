"""The egress witness: counts, per 5-tuple, the IPv4 frames that really left the actor's
interfaces, for the flows a technique cannot count exactly by itself.

Kernel counters count what the kernel *tried* to send: ``tcpi_segs_out`` is incremented before
the segment passes netfilter, so a SYN that an nftables rule in the actor's own node drops (or an
egress filter, or a removed route) is counted though it never reached the wire; a UDP datagram
dropped by a ``netdev egress`` rule leaves ``send()`` successful. The RST the actor's kernel
answers a SYN-ACK with (SYN scan) is dropped by an ``output`` rule. Under a defence in the
actor's node those counts would overstate the ledger.

The witness is one packet socket in the actor's namespace that sees every frame at the moment
it is handed to an interface's driver (after netfilter, the ``egress`` hook and the qdisc: the
same place the sensors' taps see it). A classic BPF filter passes only outgoing frames. A
technique *claims* the 5-tuples it owns as it opens them (:func:`claim`; kernel sockets, and
crafted flows whose kernel reactions it cannot count); when the technique has ended, the agent
waits for the actor's queues to drain, stops the witness, and replaces the technique's own
count of every claimed flow with what the witness saw (:func:`settle`). Flows the technique
crafted and counted exactly (``fastsend``, paced layer-2 sends) are not claimed and stay as
counted: their rates can exceed what a Python reader keeps up with.

A claimed flow the technique counted but of which nothing left the actor is the defence's
doing (``local_drops``): the agent then ends a step that did not succeed as ``blocked``.
If the witness itself lost frames (its buffer overflowed), the technique's counts stay and the
log says so.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
# tcpdump -dd 'outbound and ip': ldh [pkttype]; jeq #PACKET_OUTGOING; ldh [12]; jeq #0x800;
# ret all; ret 0
_BPF_OUTGOING = [(0x28, 0, 0, 0xFFFFF004), (0x15, 0, 3, PACKET_OUTGOING),
                 (0x28, 0, 0, 0x0000000C), (0x15, 0, 1, ETH_P_IP),
                 (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)]
DRAIN_S = 3.0            # at most this long waiting for the actor's queues to empty

_WITNESS: "Witness | None" = None
_LOCK = threading.Lock()


def _key(frame: memoryview):
    """(src, dst, proto, sport, dport) of an Ethernet/IPv4 frame (ICMP: type, code)."""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    src, dst = socket.inet_ntoa(bytes(ip[12:16])), socket.inet_ntoa(bytes(ip[16:20]))
    l4 = ip[ihl:]
    first_fragment = (struct.unpack("!H", bytes(ip[6:8]))[0] & 0x1FFF) == 0
    if proto == 6 and first_fragment and len(l4) >= 4:
        return (src, dst, "tcp") + struct.unpack("!HH", bytes(l4[0:4]))
    if proto == 17 and first_fragment and len(l4) >= 4:
        return (src, dst, "udp") + struct.unpack("!HH", bytes(l4[0:4]))
    if proto == 1 and first_fragment and len(l4) >= 2:
        return (src, dst, "icmp", l4[0], l4[1])
    return (src, dst, str(proto), 0, 0)


class Witness(threading.Thread):
    """Counts outgoing IPv4 frames per 5-tuple on every interface of this namespace."""

    def __init__(self):
        super().__init__(daemon=True, name="egress-witness")
        # ETH_P_ALL and unbound: the taps of every interface of the namespace, where outgoing
        # frames are seen (a socket of one protocol only gets incoming ones); frames queued
        # before the filter is on are sorted out by direction and type in run()
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        prog = (ctypes.c_uint8 * (8 * len(_BPF_OUTGOING)))()
        ctypes.memmove(prog, b"".join(struct.pack("HBBI", *i) for i in _BPF_OUTGOING),
                       8 * len(_BPF_OUTGOING))
        self._prog = prog                     # the kernel copies it; keep it alive anyway
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                        struct.pack("HL", len(_BPF_OUTGOING), ctypes.addressof(prog)))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.settimeout(0.05)
        self.sock = sock
        self.counts: dict[tuple, list[int]] = {}
        self.claimed: dict[tuple, None] = {}   # ordered set
        self.drops = 0
        self._stop_flag = threading.Event()
        self.start()

    def run(self) -> None:
        buf = bytearray(262144)
        view = memoryview(buf)
        counts = self.counts
        while True:
            try:
                n, addr = self.sock.recvfrom_into(buf, 0, socket.MSG_TRUNC)
            except (socket.timeout, BlockingIOError):
                if self._stop_flag.is_set():
                    return                    # stop asked and the queue is drained
                continue
            except OSError:
                return
            if addr[0] == "lo" or addr[2] != PACKET_OUTGOING or addr[1] != ETH_P_IP or n < 34 \
                    or buf[14] >> 4 != 4:
                continue
            try:
                key = _key(view[:min(n, len(buf))])
            except (struct.error, IndexError, OSError):
                continue
            c = counts.get(key)
            if c is None:
                counts[key] = [1, n]
            else:
                c[0] += 1
                c[1] += n

    def claim(self, key: tuple) -> None:
        self.claimed[tuple(key)] = None

    def stop(self) -> None:
        _wait_queues_empty(DRAIN_S)
        self._stop_flag.set()
        self.join(10)
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.drops = struct.unpack("II", raw)[1]
        except OSError:
            pass
        self.sock.close()


def _wait_queues_empty(limit: float) -> None:
    """Wait until no qdisc of this namespace holds a frame (a shaped or delayed link hands
    frames to the driver, and so to the witness, later than the technique sent them)."""
    if not shutil.which("tc"):
        time.sleep(0.05)
        return
    end = time.monotonic() + limit
    while True:
        try:
            out = subprocess.run(["tc", "-s", "qdisc", "show"], capture_output=True, text=True,
                                 timeout=2).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        backlog = sum(int(p) for p in re.findall(r"backlog \S+ (\d+)p", out))
        if backlog == 0 or time.monotonic() >= end:
            break
        time.sleep(0.01)
    time.sleep(0.02)                          # the last frames reach the socket's queue


def claim(key) -> None:
    """The running technique owns the flow ``key`` = (src, dst, proto, sport, dport): its
    packets are what the witness sees. Starts the witness on first use."""
    ensure().claim(tuple(key))


def ensure() -> Witness:
    """The witness of this process (started on first use: call it BEFORE the first packet of
    a flow that will be claimed)."""
    global _WITNESS
    with _LOCK:
        if _WITNESS is None:
            _WITNESS = Witness()
        return _WITNESS


def running() -> bool:
    return _WITNESS is not None


def settle(flows: list[dict], log: list[str]) -> tuple[list[dict], int]:
    """Stop the witness (if a technique started it) and return ``(flows, local_drops)``: every
    claimed flow with the packets and bytes that really left, claimed flows the technique never
    got to record added, and how many packets the technique counted that never left the actor.
    ``flows`` are merged (one per 5-tuple)."""
    global _WITNESS
    with _LOCK:
        w, _WITNESS = _WITNESS, None
    if w is None:
        return flows, 0
    w.stop()
    if w.drops:
        log.append(f"WARNING: the egress witness lost {w.drops} frames; the technique's own "
                   f"counts stay in the ledger")
        return flows, 0
    by_key = {(f["src"], f["dst"], f["proto"], f["sport"], f["dport"]): f for f in flows}
    local_drops, fixed = 0, 0
    for key in w.claimed:
        packets, nbytes = w.counts.get(key, (0, 0))
        f = by_key.get(key)
        if f is None:
            if packets:
                src, dst, proto, sport, dport = key
                f = by_key[key] = {"src": src, "dst": dst, "proto": proto, "sport": int(sport),
                                   "dport": int(dport), "packets": 0, "bytes": 0}
            else:
                continue
        if f["packets"] > 0 and packets == 0:
            local_drops += f["packets"]
        if f["packets"] != packets:
            fixed += 1
        f["packets"], f["bytes"] = packets, nbytes
    if fixed:
        log.append(f"egress witness: {fixed} of {len(w.claimed)} claimed flows left with another "
                   f"packet count than the technique counted")
    if local_drops:
        log.append(f"{local_drops} packets the technique counted never left the actor "
                   f"(dropped in its own node)")
    out = [f for f in by_key.values() if f["packets"] > 0]
    return out, local_drops
