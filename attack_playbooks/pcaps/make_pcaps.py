"""Make the small captures the replay playbooks use (run: python attack_playbooks/pcaps/make_pcaps.py [OUT_DIR]).

``worm_scan.pcap`` stands in for a capture taken on another network during an incident: a
worm-infected host (192.168.56.101) probes two neighbours the way SMB/RDP worms do — a ping, a
NetBIOS name query, SYNs to 445, 139, 3389, 22 and 80 — and one neighbour answers (a SYN-ACK on
22, RSTs on the closed ports, an echo reply). The answers are part of the capture (as they would
be in a real one); the replay step sends only the infected host's packets (``only_from_actor``).

Deterministic (fixed timestamps, sequence numbers and ports), a few kilobytes: it is committed,
and this script re-creates it byte for byte.
"""
from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.netbios import NBNSQueryRequest
from scapy.utils import PcapWriter

HERE = Path(__file__).resolve().parent
WORM, V1, V2 = "192.168.56.101", "192.168.56.20", "192.168.56.21"
MAC = {WORM: "08:00:27:3a:11:01", V1: "08:00:27:3a:11:20", V2: "08:00:27:3a:11:21"}
PORTS = [445, 139, 3389, 22, 80]
OPEN = {(V1, 22)}


def _eth(src, dst):
    return Ether(src=MAC[src], dst=MAC[dst])


def worm_scan() -> list:
    pkts, t, seq = [], 1700000000.0, 0x1000
    for i, victim in enumerate((V1, V2)):
        p = _eth(WORM, victim) / IP(src=WORM, dst=victim, id=100 + i, ttl=128) / ICMP(id=0x4d57, seq=i + 1)
        p.time = t; pkts.append(p); t += 0.002
        if victim == V1:
            r = _eth(V1, WORM) / IP(src=V1, dst=WORM, id=900, ttl=64) / ICMP(type=0, id=0x4d57, seq=1)
            r.time = t; pkts.append(r); t += 0.001
        q = (_eth(WORM, victim) / IP(src=WORM, dst=victim, id=110 + i, ttl=128)
             / UDP(sport=137, dport=137) / NBNSQueryRequest(QUESTION_NAME="*", QUESTION_TYPE="NBSTAT"))
        q.time = t; pkts.append(q); t += 0.003
        for j, port in enumerate(PORTS):
            sport = 49700 + 10 * i + j
            s = (_eth(WORM, victim) / IP(src=WORM, dst=victim, id=200 + 10 * i + j, ttl=128)
                 / TCP(sport=sport, dport=port, flags="S", seq=seq, window=64240,
                       options=[("MSS", 1460), ("NOP", None), ("WScale", 8), ("NOP", None),
                                ("NOP", None), ("SAckOK", b"")]))
            s.time = t; pkts.append(s); t += 0.004
            if victim == V1:
                if (victim, port) in OPEN:
                    a = (_eth(V1, WORM) / IP(src=V1, dst=WORM, id=901 + j, ttl=64)
                         / TCP(sport=port, dport=sport, flags="SA", seq=0x7000, ack=seq + 1,
                               window=64240, options=[("MSS", 1460)]))
                else:
                    a = (_eth(V1, WORM) / IP(src=V1, dst=WORM, id=901 + j, ttl=64)
                         / TCP(sport=port, dport=sport, flags="RA", seq=0, ack=seq + 1, window=0))
                a.time = t; pkts.append(a); t += 0.001
            seq += 0x100
        t += 0.05
    return pkts


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE) / "worm_scan.pcap"
    w = PcapWriter(str(out), linktype=1, sync=True)
    for p in worm_scan():
        w.write(p)
    w.close()
    print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
