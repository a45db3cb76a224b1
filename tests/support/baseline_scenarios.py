"""Synthetic records for the baseline-relative rules of issue 15 (tests/detect/
test_detect_baselines.py and bench/baselines_envelope.py): a benign baseline window and the
attacks the fixed thresholds missed, each with the parameter the envelope is measured on."""
from __future__ import annotations

import hashlib
import itertools

from records import packet_records, records

T0 = 1_750_000_000.0
BASE_S = 60.0                  # the benign baseline window: [T0, T0 + 60 s)
ATT = "10.40.4.66"             # the foothold: quiet in the baseline
WS, WS2 = "10.40.4.30", "10.40.4.31"           # workstations: browse, DNS, log in
WEB, DNS, LOG, FILES = "10.40.5.10", "10.40.5.53", "10.40.5.14", "10.40.5.20"
SMALL = [f"10.40.9.{i}" for i in (1, 2, 3, 4)]  # a small subnet (a /29's hosts)
_seq = iter(range(10**9))


def flow(t, src, dst, dport, transport="tcp", state="SF", flags="SAFP", spk=8, dpk=8,
         sbytes=None, dbytes=None, duration=0.2, sport=None, observer="span"):
    n = next(_seq)
    fid = hashlib.sha1(f"b|{n}".encode()).hexdigest()[:16]
    us = round(t * 1e6)
    sb = 80 * spk if sbytes is None else sbytes
    db = 80 * dpk if dbytes is None else dbytes
    return {"@timestamp": us, "event.start": us, "event.end": us + int(duration * 1e6),
            "event.duration": int(duration * 1e9), "observer.name": observer,
            "source.ip": src, "source.port": sport or 40000 + n % 20000, "source.packets": spk,
            "source.bytes": sb, "destination.ip": dst, "destination.port": dport,
            "destination.packets": dpk, "destination.bytes": db, "network.transport": transport,
            "network.packets": spk + dpk, "network.bytes": sb + db,
            "network.community_id": f"1:{fid}", "cyberrange.flow_id": fid,
            "cyberrange.tcp_state": state if transport == "tcp" else None,
            "cyberrange.tcp_flags": flags if transport == "tcp" else None}


def login(t, src, dst, port=22):
    """One short login session (a guess or a quick admin login look alike)."""
    return flow(t, src, dst, port, spk=10, dpk=7, sbytes=690, dbytes=530, duration=0.1)


def session(t, src, dst, port=22):
    """A login session with data both ways (an SSH login that worked and ran something)."""
    return flow(t, src, dst, port, spk=30, dpk=30, sbytes=4000, dbytes=6000, duration=20)


def probe(t, src, dst, port, transport="tcp"):
    if transport == "icmp":
        return flow(t, src, dst, 0, transport="icmp", spk=1, dpk=0, sport=8)
    if transport == "udp":
        return flow(t, src, dst, port, transport="udp", spk=1, dpk=0)
    return flow(t, src, dst, port, state="S0", flags="S", spk=1, dpk=0)


def benign(t0=T0, seconds=BASE_S + 600, logins_every=30.0):
    """Workstations browsing, resolving (answered), logging to a collector (unanswered, one
    target), and logging in to FILES; every host of SMALL answers a web check now and then."""
    rows = []
    for i in range(int(seconds // 5)):
        t = t0 + 5 * i
        rows.append(flow(t, WS, WEB, 80))
        rows.append(flow(t + 1, WS2, DNS, 53, transport="udp", spk=1, dpk=1))
        rows.append(flow(t + 2, FILES, LOG, 514, transport="udp", spk=1, dpk=0))
        rows.append(flow(t + 3, WS2, SMALL[i % len(SMALL)], 80))
    for i in range(int(seconds // logins_every)):
        rows.append(login(t0 + 4 + i * logins_every, WS, FILES))
    return rows


def train_and_test(rows, base_s=BASE_S):
    """Split rows into (baseline table, whole table) at T0 + base_s."""
    cut = int((T0 + base_s) * 1e6)
    return records([r for r in rows if r["event.start"] < cut]), records(rows)


def udp_scan(t0, every, n=8, hosts=(FILES, WEB)):
    """n unanswered UDP probes, one every ``every`` seconds, over distinct (host, port)."""
    ports = [69, 123, 137, 161, 500, 1900, 5353, 11211, 520, 1434]
    targets = list(itertools.product(hosts, ports))[:n]
    return [probe(t0 + i * every, ATT, h, p, "udp") for i, (h, p) in enumerate(targets)]


def small_sweep(t0, n, every=5.0, transport="icmp", hosts=SMALL):
    return [probe(t0 + i * every, ATT, h, 445, transport) for i, h in enumerate(hosts[:n])]


def guesses(t0, n, every=1.0, dst=FILES, port=22, src=ATT):
    return [login(t0 + i * every, src, dst, port) for i in range(n)]


def spray(t0, n, every=1.0, targets=((FILES, 22), (WEB, 22), (WEB, 3389))):
    return [login(t0 + i * every, ATT, *targets[i % len(targets)]) for i in range(n)]


def flood(t0, pps, seconds=3, dst=WEB, port=80, mode="syn"):
    """``pps`` packets per second for ``seconds``, as 10 flows per second."""
    rows = []
    for s in range(seconds):
        for k in range(10):
            t = t0 + s + k / 10
            if mode == "syn":
                rows.append(flow(t, ATT, dst, port, state="S0", flags="S", spk=pps // 10,
                                 dpk=0, duration=0.099))
            else:
                rows.append(flow(t, ATT, dst, port, transport="udp", spk=pps // 10, dpk=0,
                                 sbytes=60 * (pps // 10), duration=0.099))
    return rows


def quiet_intrusion(t0, hops=(FILES,), entry=WEB):
    """A few guesses at ``entry`` (a server of the baseline), one login that works, then
    sessions from ``entry`` onward to ``hops``."""
    rows = guesses(t0, 3, every=4.0, dst=entry)
    rows.append(session(t0 + 15, ATT, entry))
    rows += [session(t0 + 60 + 30 * i, entry, h) for i, h in enumerate(hops)]
    return rows


# ARP ---------------------------------------------------------------------------------------
MAC = {ATT: "02:00:00:00:00:66", WS: "02:00:00:00:00:30", "10.40.4.1": "02:00:00:00:00:01",
       FILES: "02:00:00:00:00:20"}


def arp(t, sip, tip, op="request"):
    smac = MAC.get(sip, "02:00:00:00:00:99")
    return {"@timestamp": round(t * 1e6), "event.kind": "event",
            "event.dataset": "cyberrange.packet", "observer.name": "span",
            "source.mac": smac, "destination.mac": "ff:ff:ff:ff:ff:ff",
            "network.transport": "arp", "network.type": "arp", "network.bytes": 42,
            "cyberrange.arp.operation": op, "cyberrange.arp.sender_ip": sip,
            "cyberrange.arp.sender_mac": smac, "cyberrange.arp.target_ip": tip}


def benign_arp(t0=T0, seconds=BASE_S + 600):
    """A workstation re-asking for its gateway and two servers every 60 s."""
    rows = []
    for i in range(int(seconds // 60)):
        for k, tip in enumerate(("10.40.4.1", "10.40.4.20", "10.40.4.21")):
            rows.append(arp(t0 + 60 * i + k, WS, tip))
    return rows


def arp_scan(t0, every, n=8):
    return [arp(t0 + i * every, ATT, f"10.40.4.{100 + i}") for i in range(n)]


packets = packet_records
