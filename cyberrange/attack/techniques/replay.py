"""Replay: send the packets of a pcap onto the twin, with addresses and MACs rewritten.

Not an ATT&CK technique: a harness capability (key ``replay``, tactic ``execution``) to put a
captured attack (or any recorded traffic) on the twin's wire with exact ground truth.

1. Read the IPv4 packets of ``pcap`` (Ethernet or raw-IP link types; everything else is skipped
   and counted in the log).
2. Map addresses. ``ip_map: auto``: the first packet's source becomes the actor, every other
   address, in order of first appearance, becomes the next step target (so give as many targets
   as the pcap has other hosts). ``ip_map: {old: new}``: every address of the pcap must be
   mapped, to the actor's address or to one of the step's targets.
3. Keep the packets whose new source is the actor (``only_from_actor``, default), or all of them
   (their sources are then spoofed twin addresses).
4. **Containment**: every rewritten destination must be one of the step's targets, which the
   runner's and the agent's guard already checked against the twin; otherwise the step is
   refused before any frame is built or sent.
5. Rewrite: Ethernet source = the actor's MAC, destination = the next hop's MAC for the new
   destination (one ARP batch), IP addresses, IP/TCP/UDP/ICMP checksums recomputed (scapy).
6. Send ``loops`` times at ``rate`` packets/s (``fastsend``, or ``tcpreplay --pps`` with
   ``sender: tcpreplay``), while ``QuietKernel`` keeps the actor's kernel from answering what
   comes back (a replayed SYN's SYN-ACK would otherwise draw a RST from the actor).

Ledger: exact per-5-tuple packet and byte counts of the frames replayed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.common import Blocked, Result, _unique_ips, conclude, flow
from cyberrange.attack.techniques.layer2 import (
    ANSWER_WAIT,
    ARP_TIMEOUT,
    resolve_hops,
    route_targets,
)
from cyberrange.attack.techniques.fastsend import (
    MAX_PACKETS,
    FastSender,
    QuietKernel,
    check_bounds,
    tx_dropped,
)

MAX_FRAME = 1514
REPLAY_BATCH = 64                # frames per sendmmsg call


class ReplayRefused(Exception):
    pass


def five_tuple(ip) -> tuple:
    from scapy.layers.inet import ICMP, TCP, UDP
    if TCP in ip:
        return (ip.src, ip.dst, "tcp", ip[TCP].sport, ip[TCP].dport)
    if UDP in ip:
        return (ip.src, ip.dst, "udp", ip[UDP].sport, ip[UDP].dport)
    if ICMP in ip:
        return (ip.src, ip.dst, "icmp", ip[ICMP].type, ip[ICMP].code)
    return (ip.src, ip.dst, str(ip.proto), 0, 0)


def read_ipv4(path: str, limit: int, log: list[str]) -> list:
    """The IPv4 layers of the pcap's packets (at most ``limit``)."""
    import scapy.layers.inet
    import scapy.layers.l2  # noqa: F401
    from scapy.layers.inet import IP
    from scapy.utils import PcapReader
    out, skipped = [], 0
    with PcapReader(path) as rd:
        for pkt in rd:
            if IP in pkt:
                out.append(pkt[IP].copy())
                if len(out) >= limit:
                    log.append(f"read only the first {limit} IPv4 packets of {path}")
                    break
            else:
                skipped += 1
    if skipped:
        log.append(f"{skipped} non-IPv4 packets of the pcap skipped")
    return out


def address_map(packets: list, ip_map, actor_ip: str, targets: list[str]) -> dict[str, str]:
    seen = list(dict.fromkeys(a for p in packets for a in (p.src, p.dst)))
    if ip_map in (None, "", "auto", {}):
        if not packets:
            return {}
        first = packets[0].src
        others = [a for a in seen if a != first]
        if len(others) > len(targets):
            raise ReplayRefused(
                f"the pcap has {len(others)} addresses besides its first source ({', '.join(others[:8])}"
                f"{'...' if len(others) > 8 else ''}) but the step has {len(targets)} targets; "
                f"give one target per address or an explicit ip_map")
        return {first: actor_ip, **dict(zip(others, targets))}
    if not isinstance(ip_map, dict):
        raise ReplayRefused("ip_map must be 'auto' or a mapping {pcap address: twin address}")
    m = {str(k): str(v) for k, v in ip_map.items()}
    unmapped = [a for a in seen if a not in m]
    if unmapped:
        raise ReplayRefused(f"pcap addresses not in ip_map: {', '.join(unmapped[:8])}")
    allowed = set(targets) | {actor_ip}
    bad = sorted({v for v in m.values() if v not in allowed})
    if bad:
        raise ReplayRefused(f"ip_map maps to {', '.join(bad)}, which is neither the actor nor a "
                            f"target of the step")
    return m


@technique(
    "replay",
    "Replay a pcap onto twin hosts (harness capability, not ATT&CK)",
    "execution",
    {
        "pcap": Param(str, "", "path of the pcap to replay (on the machine running the twin)"),
        "ip_map": Param((str, dict), "auto", "'auto' or {pcap address: twin address}"),
        "only_from_actor": Param(bool, True, "replay only the packets sent by the mapped actor"),
        "rate": Param((int, float), 1000, "packets per second (0: as fast as possible)"),
        "loops": Param(int, 1, f"times the pcap is replayed (at most {MAX_PACKETS:,} packets)"),
        "sender": Param(str, "fastsend", "fastsend (sendmmsg) or tcpreplay"),
        "max_packets": Param(int, 100000, "read at most this many packets of the pcap"),
        "cleanup": Param(bool, True, "end each replayed SYN's half-open connection with a RST"),
    },
    produces=("packets", "flows", "mapping"),
)
def replay(targets: list[str], params: dict) -> Result:
    res = Result(start=time.time())
    path = str(params["pcap"])
    loops = max(1, int(params["loops"]))
    rate = float(params["rate"] or 0)
    sender_kind = str(params["sender"])
    try:
        if not path or not os.path.isfile(path):
            raise ReplayRefused(f"pcap {path!r} not found")
        if sender_kind not in ("fastsend", "tcpreplay"):
            raise ReplayRefused("sender must be fastsend or tcpreplay")
        hops, mapping, chosen = _select(path, _unique_ips(targets), params, res)
        check_bounds(len(chosen) * loops, None)
    except (ReplayRefused, ValueError, OSError) as exc:
        res.outcome, res.error = "error", f"replay refused: {exc}; nothing was sent"
        res.end = time.time()
        return res
    if not chosen:
        res.outcome, res.end = "failed", time.time()
        res.log.append("no packet of the pcap is sent by the mapped actor; nothing sent")
        return res
    frames, keys, syns = _rewrite(chosen, hops, res)
    ifaces = {i for i, _f in frames}
    if len(ifaces) > 1:
        keep = frames[0][0]
        res.log.append(f"targets behind several interfaces; replaying only those via {keep}")
        keys = [k for (i, _f), k in zip(frames, keys) if i == keep]
        frames = [(i, f) for i, f in frames if i == keep]
    if not frames:
        res.outcome, res.end = "failed", time.time()
        return res
    iface = frames[0][0]
    raw = [f for _i, f in frames]
    before = tx_dropped(iface)
    counts, lengths, took = [0] * len(raw), [len(f) for f in raw], 0.0
    cleanup_sent: list = []
    try:
        with QuietKernel(sorted({k[1] for k in keys})) as quiet:
            if sender_kind == "tcpreplay":
                counts, lengths, took = _tcpreplay(iface, raw, loops, rate, res)
            else:
                s = FastSender(iface, raw, batch=REPLAY_BATCH)
                try:
                    s.run(len(raw) * loops, rate)
                except Blocked as exc:      # the actor's node stopped the replay
                    res.cut(exc.reason)
                finally:
                    s.close()
                    counts, lengths, took = s.counts(), s.lengths, s.elapsed
            # a replayed SYN leaves a half-open connection on the target, whose SYN-ACK
            # retransmissions (for about a minute) would draw RSTs from the actor's kernel
            # after the step: clear each with one RST (seq = SYN's + 1), counted in the ledger
            cleanup = [(k, f) for k, (i, f) in syns.items() if i == iface] \
                if bool(params["cleanup"]) and sum(counts) else []
            if cleanup:
                time.sleep(0.05)
                c = FastSender(iface, [f for _k, f in cleanup])
                try:
                    c.run(len(cleanup), 0)
                except Blocked:
                    pass                    # blocked too: what went out is counted
                finally:
                    c.close()
                    cleanup_sent = cleanup[:c.sent]
            quiet.settle(ANSWER_WAIT)       # answers in flight (a slow link: an RTT later)
    finally:                                # after a cut or an error too: what went out
        for k, n, length in zip(keys, counts, lengths):
            res.flows.append(flow(*k, n, n * length))
        for k, f in cleanup_sent:
            res.flows.append(flow(*k, 1, len(f)))
    if not quiet.active:
        res.log.append(f"WARNING: nft unavailable; the actor kernel's answers are not suppressed "
                       f"and not in the ledger ({quiet.error})")
    lost = tx_dropped(iface) - before
    if lost:
        res.log.append(f"WARNING: {iface} dropped {lost} frames on transmit")
    total = sum(counts)
    res.log.append(f"replayed {total} frames ({len(raw)} distinct x {loops}) in {took:.3f}s via "
                   f"{sender_kind}; {quiet.dropped} kernel answers suppressed")
    res.facts = {"packets": total, "flows": len({k for k in keys}),
                 "mapping": mapping, "answers": quiet.dropped}
    return conclude(res, total == len(raw) * loops, None)


def _select(path: str, targets: list[str], params: dict, res: Result):
    """``(hops, mapping, chosen)``: the routes to the targets, the pcap-to-twin address map and
    the packets to send as ``(packet, new source, new destination)``. Raises ReplayRefused when
    a rewritten destination is not a target of the step."""
    hops = route_targets(targets, res.log)
    if not hops:
        raise ReplayRefused("no target is routable from the actor")
    actor_ip = hops[0].src
    packets = read_ipv4(path, int(params["max_packets"]), res.log)
    mapping = address_map(packets, params["ip_map"], actor_ip, targets)
    chosen = []
    for p in packets:
        src, dst = mapping.get(p.src, p.src), mapping.get(p.dst, p.dst)
        if bool(params["only_from_actor"]) and src != actor_ip:
            continue
        if dst not in targets:
            raise ReplayRefused(f"a rewritten destination {dst} (pcap {p.dst}) is not a "
                                f"target of the step")
        chosen.append((p, src, dst))
    return hops, mapping, chosen


def _rewrite(chosen, hops, res: Result):
    """``(frames, keys, syns)``: each chosen packet as an Ethernet frame to its next hop with the
    new addresses and fresh checksums (``(iface, bytes)``), its 5-tuple, and for every SYN the
    RST that ends its half-open connection afterwards. Packets whose next hop did not answer ARP
    or that are longer than a frame are skipped (and logged)."""
    from scapy.arch import get_if_hwaddr
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    by_ip = {h.ip: h for h in hops}
    macs = resolve_hops(hops, ARP_TIMEOUT, res.log)
    frames, keys, unresolved, too_big = [], [], set(), 0
    syns: dict[tuple, tuple[str, bytes]] = {}
    my_macs = {}
    for p, src, dst in chosen:
        h = by_ip.get(dst)
        mac = macs.get(h.iface, {}).get(h.next_hop) if h else None
        if mac is None:
            unresolved.add(dst)
            continue
        my_macs.setdefault(h.iface, get_if_hwaddr(h.iface))
        ip = p.copy()
        ip.src, ip.dst = src, dst
        del ip.chksum
        for layer in (TCP, UDP, ICMP):
            if layer in ip:
                del ip[layer].chksum
        frame = bytes(Ether(src=my_macs[h.iface], dst=mac) / ip)
        if len(frame) > MAX_FRAME:
            too_big += 1
            continue
        frames.append((h.iface, frame))
        keys.append(five_tuple(IP(frame[14:])))
        if TCP in ip and ip[TCP].flags & 0x12 == 0x02:      # a SYN (without ACK)
            syns[keys[-1]] = (h.iface, bytes(
                Ether(src=my_macs[h.iface], dst=mac)
                / IP(src=src, dst=dst, ttl=64)
                / TCP(sport=ip[TCP].sport, dport=ip[TCP].dport, flags="R",
                      seq=(ip[TCP].seq + 1) & 0xFFFFFFFF, window=0)))
    if unresolved:
        res.log.append(f"no MAC for next hop of {', '.join(sorted(unresolved))}; their packets skipped")
    if too_big:
        res.log.append(f"{too_big} packets longer than {MAX_FRAME} bytes (offloaded captures) skipped")
    return frames, keys, syns


def _tcpreplay(iface, frames, loops, rate, res):
    from scapy.utils import PcapWriter
    if not shutil.which("tcpreplay"):
        raise RuntimeError("tcpreplay is not installed (Debian package tcpreplay)")
    with tempfile.TemporaryDirectory(prefix="crt-replay-") as d:
        path = os.path.join(d, "replay.pcap")
        w = PcapWriter(path, linktype=1, sync=False)
        for f in frames:
            w.write(f)
        w.close()
        speed = ["--pps", f"{rate:g}"] if rate > 0 else ["--topspeed"]
        t0 = time.monotonic()
        p = subprocess.run(["tcpreplay", "-i", iface, "-K", f"--loop={loops}", *speed, path],
                           capture_output=True, text=True)
        took = time.monotonic() - t0
    m = re.search(r"Successful packets:\s+(\d+)", p.stdout)
    sent = int(m.group(1)) if m else 0
    res.log.append(f"tcpreplay exit {p.returncode}: {p.stdout.strip().splitlines()[-6:] if p.stdout else p.stderr.strip()}")
    if sent != len(frames) * loops:
        res.log.append(f"WARNING: tcpreplay reports {sent} of {len(frames) * loops} sent; counts "
                       f"assume cyclic order")
    q, r = divmod(sent, len(frames))
    return [q + (1 if i < r else 0) for i in range(len(frames))], [len(f) for f in frames], took
