"""The high-rate sender: pre-built frames through ONE AF_PACKET socket with ``sendmmsg`` batches.

Used by the floods (``impact``), the replay and ``bench/attack_rates.py``.

* Every frame is built once (scapy or by hand) and copied into a C buffer; an array of
  ``struct mmsghdr`` whose entry ``k`` points at frame ``k mod N`` (plus ``batch`` spare entries)
  lets one ``sendmmsg(2)`` call write up to ``batch`` frames starting at any frame index with
  no per-batch setup. Frames are always written in cyclic order from frame 0, so after ``sent``
  frames frame ``i`` went out exactly ``sent // N + (i < sent % N)`` times: exact per-5-tuple
  accounting without counting in the loop.
* Unpaced (``rate <= 0``): batches back to back (the flood maximum).
* Paced: an absolute schedule (frame ``k`` is due at ``t0 + k / rate``; a token bucket whose
  tokens are the frames due so far), so there is no drift; the sender sleeps while the next frame
  is more than 50 µs away (timer slack lowered to 1 µs) and spins below that; frames that became
  due during a sleep go out in one batch.
* Hard bounds: at most :data:`MAX_PACKETS` frames and :data:`MAX_SECONDS` seconds per call.

:class:`QuietKernel` is the companion: frames written to an AF_PACKET socket bypass netfilter,
but the actor's kernel answers what comes back (a RST for every SYN-ACK of a SYN flood or of a
replayed handshake, ICMP errors for UDP). Those would be the actor's packets on the wire and
would have to be counted; instead an nftables table in the actor's namespace drops (and counts)
kernel-generated IPv4 packets to the step's targets for the duration. Our frames never pass that
hook, so the ledger stays exactly what fastsend wrote.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import socket
import subprocess
import time

from cyberrange.attack.techniques.common import STALL_S, Blocked, defence_reason

MAX_PACKETS = 10_000_000
MAX_SECONDS = 300.0
SO_SNDBUFFORCE = 32
PR_SET_TIMERSLACK = 29


class _iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _msghdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_libc.sendmmsg.restype = ctypes.c_int


def check_bounds(count: int, duration: float) -> None:
    """Refuse unbounded or oversized sends (ValueError, before anything is sent)."""
    if count is None or int(count) < 0 or int(count) > MAX_PACKETS:
        raise ValueError(f"count must be between 0 and {MAX_PACKETS:,} packets (got {count})")
    if duration is not None and (float(duration) < 0 or float(duration) > MAX_SECONDS):
        raise ValueError(f"duration must be between 0 and {MAX_SECONDS:.0f} s (got {duration})")


def tx_dropped(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/statistics/tx_dropped") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 0


class FastSender:
    """Writes ``frames`` (bytes, complete Ethernet frames) cyclically out of ``iface``."""

    def __init__(self, iface: str, frames: list[bytes], batch: int = 256):
        if not frames:
            raise ValueError("no frames to send")
        self.iface, self.n, self.batch = iface, len(frames), max(1, int(batch))
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # proto 0: send only
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
        self.sock.bind((iface, 0))
        self.fd = self.sock.fileno()
        self._bufs = [ctypes.create_string_buffer(bytes(f), len(f)) for f in frames]
        self.lengths = [len(f) for f in frames]
        self._iov = (_iovec * self.n)()
        for i, b in enumerate(self._bufs):
            self._iov[i].iov_base = ctypes.addressof(b)
            self._iov[i].iov_len = self.lengths[i]
        self._msgs = (_mmsghdr * (self.n + self.batch))()
        iov0, isz = ctypes.addressof(self._iov), ctypes.sizeof(_iovec)
        for k in range(self.n + self.batch):
            self._msgs[k].msg_hdr.msg_iov = iov0 + (k % self.n) * isz
            self._msgs[k].msg_hdr.msg_iovlen = 1
        self._m0, self._msz = ctypes.addressof(self._msgs), ctypes.sizeof(_mmsghdr)
        self.sent = 0
        self.elapsed = 0.0
        self.errors = 0
        self._stalled: float | None = None     # since when every write failed (ENOBUFS)
        try:                        # finer sleeps for the pacing (default slack is 50 µs)
            _libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
        except Exception:           # noqa: BLE001
            pass

    def _write(self, k: int) -> int:
        """Write the next ``k`` (<= batch) frames; returns how many the kernel took.

        A full queue (ENOBUFS, EAGAIN) is retried by the caller's loop; when no frame at all
        has gone out for ``common.STALL_S`` the interface drops everything (an egress filter
        in the actor's node) and :class:`common.Blocked` ends the send, as does an errno of
        ``common.DEFENCE_ERRNOS`` (a down or removed interface). ``sent`` stays exact."""
        start = self.sent % self.n
        rc = _libc.sendmmsg(self.fd, self._m0 + start * self._msz, k, 0)
        if rc < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                self.errors += 1
                if err != errno.EINTR:
                    now = time.monotonic()
                    if self._stalled is None:
                        self._stalled = now
                    elif now - self._stalled >= STALL_S:
                        raise Blocked(f"sending out of {self.iface} failed with "
                                      f"{errno.errorcode[err]} for {STALL_S:g} s: the actor's "
                                      f"interface drops every frame (an egress filter in its "
                                      f"node)")
                return 0
            exc = OSError(err, os.strerror(err))
            reason = defence_reason(exc, f"sending out of {self.iface}")
            if reason:
                raise Blocked(reason)
            raise exc
        self._stalled = None
        self.sent += rc
        return rc

    def run(self, count: int, rate: float = 0.0, duration: float = 0.0) -> int:
        """Send ``count`` frames (and stop at ``duration`` s if > 0) at ``rate`` frames/s
        (<= 0: as fast as possible). Returns the number of frames the kernel accepted."""
        check_bounds(count, duration)
        limit = min(float(duration) if duration and duration > 0 else MAX_SECONDS, MAX_SECONDS)
        target = self.sent + int(count)
        batch, mono = self.batch, time.monotonic
        t0 = mono()
        deadline = t0 + limit
        try:
            if not rate or rate <= 0:
                while self.sent < target:
                    self._write(min(batch, target - self.sent))
                    if mono() >= deadline:
                        break
            else:
                rate = float(rate)
                base = self.sent
                while self.sent < target:
                    now = mono()
                    if now >= deadline:
                        break
                    due = min(target, base + int((now - t0) * rate) + 1)
                    k = due - self.sent
                    if k <= 0:
                        wait = t0 + (self.sent - base) / rate - now
                        if wait > 50e-6:
                            time.sleep(wait - 20e-6)
                        continue
                    self._write(min(batch, k))
        finally:
            self.elapsed = mono() - t0
        return self.sent

    def counts(self) -> list[int]:
        """How many times each frame was sent so far (cyclic order from frame 0)."""
        q, r = divmod(self.sent, self.n)
        return [q + (1 if i < r else 0) for i in range(self.n)]

    def close(self) -> None:
        self.sock.close()


class QuietKernel:
    """Context manager: drop (and count) kernel-generated IPv4 packets to ``ips`` from this
    namespace while a crafted-frame step runs (see the module doc). ``dropped`` is the count.

    Needs ``nft``; without it ``active`` stays False and the caller logs that the actor's kernel
    reactions (RSTs, ICMP errors) are not suppressed and so not in the ledger."""

    def __init__(self, ips: list[str]):
        self.ips = sorted(set(ips))
        self.table = f"cyberrange_quiet_{os.getpid()}"
        self.active = False
        self.dropped = 0
        self.error = ""

    def _nft(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["nft", *args], capture_output=True, text=True, check=check)

    def __enter__(self):
        if not self.ips or not shutil.which("nft"):
            return self
        addrs = ", ".join(self.ips)
        script = (f"add table ip {self.table}\n"
                  f"add chain ip {self.table} out {{ type filter hook output priority -300; "
                  f"policy accept; }}\n"
                  f"add rule ip {self.table} out ip daddr {{ {addrs} }} counter drop\n")
        p = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
        self.active = p.returncode == 0
        if not self.active:
            self.error = p.stderr.strip()
        return self

    def _count(self) -> int:
        words = self._nft("list", "table", "ip", self.table, check=False).stdout.split()
        return next((int(words[i + 1]) for i, w in enumerate(words[:-1]) if w == "packets"), 0)

    def settle(self, quiet_s: float, max_s: float = 10.0) -> None:
        """Wait until the kernel has had nothing to answer for ``quiet_s`` seconds, at most
        ``max_s``: answers to the last frames are still in flight (over a 550 ms SATCOM hop
        they come 1.1 s after the frame), and once this table is gone the kernel would answer
        them with RSTs the ledger does not hold. Without nft: ``quiet_s``."""
        if not self.active:
            time.sleep(quiet_s)
            return
        now = time.monotonic()
        deadline, since, last = now + max_s, now, self._count()
        while now < deadline and now - since < quiet_s:
            time.sleep(0.05)
            n, now = self._count(), time.monotonic()
            if n != last:
                last, since = n, now

    def __exit__(self, *exc):
        if not self.active:
            return False
        try:
            self.dropped = self._count()
        finally:
            self._nft("delete", "table", "ip", self.table, check=False)
        return False
