"""Discovery: T1018 ICMP ping sweep and T1046 TCP SYN scan, crafted with scapy.

Addresses are resolved once (one batched ARP exchange), every frame is built up front and its
bytes are written through ONE reused layer-2 socket, paced at ``rate``; a raw receiver on the same
interface collects the answers. The ledger counts exactly the IPv4 packets that leave the actor,
including the RST its kernel answers each SYN-ACK with.
"""
from __future__ import annotations

import random
import struct
import threading
import time

from cyberrange.attack.spec import Param, Technique
from cyberrange.attack.techniques.common import (  # noqa: F401
    Result, _frames_for, _run_l2, _short, _unique_ips, flow, merge_flows, resolve_hops,
    route_targets)


def ping_sweep(targets: list[str], params: dict) -> Result:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    res = Result(start=time.time())
    timeout = float(params.get("timeout", 1.0))
    rate = float(params.get("rate", 500))
    hops = route_targets(_unique_ips(targets), res.log)
    macs = resolve_hops(hops, timeout, res.log)
    icmp_id = random.randint(1, 0xFFFF)

    def build(n, h, src_mac, dst_mac):
        return bytes(Ether(src=src_mac, dst=dst_mac)
                     / IP(src=h.src, dst=h.ip, id=random.randint(0, 0xFFFF), ttl=64)
                     / ICMP(type=8, code=0, id=icmp_id, seq=(n + 1) & 0xFFFF))
    frames = _frames_for(hops, macs, build, res.log)

    wanted = {h.ip for h, _i, _f in frames}
    replied: set[str] = set()

    def on_ip(src, proto, l4):
        # ICMP echo reply (type 0) carrying our identifier
        if proto == 1 and l4[0] == 0 and src in wanted and struct.unpack("!H", l4[4:6])[0] == icmp_id:
            replied.add(src)

    _run_l2(frames, rate, timeout, on_ip, res.log)
    res.flows = [flow(h.src, h.ip, "icmp", 8, 0, 1, len(f)) for h, _i, f in frames]
    res.facts = {"hosts": [h.ip for h in hops if h.ip in replied]}
    via_gw = any(h.gw for h, _i, _f in frames)
    res.outcome = "succeeded" if replied else ("blocked" if via_gw else "failed")
    res.end = time.time()
    return res


# --------------------------------------------------------------------------- T1046 SYN scan
# The actor's kernel has no socket on the scan's source port, so it answers every SYN-ACK with
# one RST (Ether 14 + IP 20 + TCP 20, no options). The ledger counts it: it is the actor's packet.
KERNEL_RST_FRAME_BYTES = 54


def syn_scan(targets: list[str], params: dict) -> Result:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    res = Result(start=time.time())
    timeout = float(params.get("timeout", 1.0))
    rate = float(params.get("rate", 500))
    ports = [int(p) for p in params.get("ports", [22, 80, 443])]
    hops = route_targets(_unique_ips(targets), res.log)
    macs = resolve_hops(hops, timeout, res.log)
    sport = random.randint(40000, 60999)
    probes = [(h, p) for h in hops for p in ports]

    def build(n, hp, src_mac, dst_mac):
        h, port = hp
        return bytes(Ether(src=src_mac, dst=dst_mac)
                     / IP(src=h.src, dst=h.ip, id=random.randint(0, 0xFFFF), ttl=64)
                     / TCP(sport=sport, dport=port, flags="S", seq=random.getrandbits(32),
                           window=1024, options=[("MSS", 1460)]))

    frames = []
    for n, (h, port) in enumerate(probes):
        mac = macs.get(h.iface, {}).get(h.next_hop)
        if mac is None:
            continue
        frames.append((h, port))
    if len(frames) < len(probes):
        missing = sorted({h.ip for h, _p in probes} - {h.ip for h, _p in frames})
        res.log.append(f"{len(missing)} targets did not answer ARP (only ARP sent): {_short(missing)}")
    from scapy.arch import get_if_hwaddr
    my_macs = {i: get_if_hwaddr(i) for i in {h.iface for h, _p in frames}}
    built = [(h, h.iface, build(0, (h, p), my_macs[h.iface], macs[h.iface][h.next_hop]), p)
             for h, p in frames]

    wanted = {h.ip for h, _p in frames}
    synacks: dict[tuple[str, int], int] = {}
    rsts: dict[tuple[str, int], int] = {}
    unreach: set[str] = set()
    lock = threading.Lock()

    def on_ip(src, proto, l4):
        with lock:
            if proto == 6 and src in wanted:
                their_port, our_port = struct.unpack("!HH", l4[0:4])
                if our_port != sport:
                    return
                flags = l4[13]
                if flags & 0x12 == 0x12:
                    synacks[(src, their_port)] = synacks.get((src, their_port), 0) + 1
                elif flags & 0x04:
                    rsts[(src, their_port)] = rsts.get((src, their_port), 0) + 1
            elif proto == 1 and l4[0] == 3:
                unreach.add(src)

    _run_l2([(h, i, f) for h, i, f, _p in built], rate, timeout, on_ip, res.log)
    res.log.append(f"source port {sport}; {len(synacks)} SYN-ACK 5-tuples, "
                   f"{len(rsts)} RST, {len(unreach)} ICMP-unreachable senders")
    for h, _i, f, port in built:
        n_synack = synacks.get((h.ip, port), 0)
        res.flows.append(flow(h.src, h.ip, "tcp", sport, port, 1 + n_synack,
                              len(f) + n_synack * KERNEL_RST_FRAME_BYTES))
    open_ = [f"{h.ip}:{p}" for h, _i, _f, p in built if (h.ip, p) in synacks]
    res.facts = {"open": open_,
                 "hosts": list(dict.fromkeys(o.rsplit(":", 1)[0] for o in open_))}
    answered = bool(synacks or rsts)
    via_gw = any(h.gw for h, _i, _f, _p in built)
    if open_:
        res.outcome = "succeeded"
    elif not answered and built and (via_gw or unreach):
        res.outcome = "blocked"
    else:
        res.outcome = "failed"
    res.end = time.time()
    return res




SPECS = [
    Technique(
        "T1018", "Remote System Discovery: ICMP ping sweep", "discovery",
        {
            "timeout": Param((int, float), 1.0, "seconds to wait for replies after the last probe"),
            "rate": Param((int, float), 500, "probes per second"),
        },
        produces=("hosts",),
    ),
    Technique(
        "T1046", "Network Service Discovery: TCP SYN scan", "discovery",
        {
            "ports": Param(list, [22, 80, 443], "TCP ports to probe on each target"),
            "rate": Param((int, float), 500, "SYN probes per second"),
            "timeout": Param((int, float), 1.0, "seconds to wait for answers after the last probe"),
        },
        produces=("open", "hosts"),
    ),
]

FUNCS = {"T1018": ping_sweep, "T1046": syn_scan}
