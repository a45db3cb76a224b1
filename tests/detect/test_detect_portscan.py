"""portscan family: low-and-slow instances, UDP scans and banner grabs, and the vectorised probe
mask against the per-row definition (the fast and slow scans are covered in test_detect.py)."""
from __future__ import annotations

import hashlib
import itertools

from records import records

from cyberrange.detect.portscan import PortScanDetector, is_tcp_probe
from cyberrange.detect.registry import load_detector_file

T0 = 1_750_000_000.0
ATT, WS = "10.40.4.66", "10.40.4.30"
HOSTS = ["10.40.4.53", "10.40.4.20", "10.40.4.10"]
_seq = iter(range(10**9))


def flow(t, src, dst, dport, transport="tcp", state="S0", flags="S", spk=1, dpk=0, sport=None):
    n = next(_seq)
    fid = hashlib.sha1(f"s|{n}".encode()).hexdigest()[:16]
    us = int(round(t * 1e6))
    return {"@timestamp": us, "event.start": us, "event.end": us, "event.duration": 0,
            "observer.name": "admin-span", "source.ip": src,
            "source.port": sport if sport is not None else 40000 + n % 20000,
            "source.packets": spk, "source.bytes": 60 * spk, "destination.ip": dst,
            "destination.port": dport, "destination.packets": dpk,
            "destination.bytes": 60 * dpk, "network.transport": transport,
            "network.packets": spk + dpk, "network.bytes": 60 * (spk + dpk),
            "network.community_id": f"1:{n}", "cyberrange.flow_id": fid,
            "cyberrange.tcp_state": state if transport == "tcp" else None,
            "cyberrange.tcp_flags": flags if transport == "tcp" else None}


table = records


DETS = {d.name: d for d in load_detector_file("detectors/portscan.yaml")}


def slow_pass(t0, every=2.0, ports=(22, 53, 80, 135, 445, 3389)):
    """naval_low_slow_scan.yaml: one SYN every 2 s over 3 hosts x 6 ports."""
    rows = []
    for i, (h, p) in enumerate(itertools.product(HOSTS, ports)):
        state, flags = ("RSTO", "SR") if p in (22, 445) else ("REJ", "S")
        rows.append(flow(t0 + i * every, ATT, h, p, state=state, flags=flags, spk=2 if
                         state == "RSTO" else 1, dpk=1))
    return rows


def test_slow_scan_evades_the_fast_instances_but_not_the_slow_ones():
    rows = slow_pass(T0) + slow_pass(T0 + 900)
    t = table(rows)
    assert DETS["vertical-portscan"].detect(t) == []
    assert DETS["horizontal-sweep"].detect(t) == []
    alerts = DETS["slow-portscan"].detect(t)
    assert len(alerts) == 2                           # passes 15 minutes apart: two episodes
    a = alerts[0]
    assert a.technique == "T1046" and a.source_ip == ATT and a.evidence["threshold"] == 4
    assert a.evidence["value"] == 18 and a.evidence["window_s"] == 600
    assert a.timestamp.timestamp() == T0 + 3 * 2.0   # the 4th distinct target
    (s,) = DETS["slow-sweep"].detect(table(slow_pass(T0, ports=(22,)) +
                                           [flow(T0 + 100 + i * 30, ATT, f"10.40.4.{100 + i}",
                                                 445) for i in range(6)]))
    # the three hosts that answer are all the subnet's live hosts: the fraction rule crosses
    # at the third (issue 15), and the one episode absorbs the rest of the sweep
    assert s.evidence["feature"] == "fraction_of_subnet_hosts" and s.evidence["value"] == 9
    assert s.evidence["targets"] == 9 and s.timestamp.timestamp() == T0 + 2 * 2.0


def test_retries_and_conversations_stay_quiet_in_long_windows():
    rows = [flow(T0 + i * 20, WS, HOSTS[0], 8443) for i in range(30)]      # a dead service
    rows += [flow(T0 + i * 7, WS, HOSTS[i % 3], 443, state="SF", flags="SAFP", spk=8, dpk=8)
             for i in range(80)]                                           # browsing
    rows += [flow(T0 + i * 5, WS, "10.40.4.53", 53, transport="udp", dpk=1) for i in range(100)]
    t = table(rows)
    for name in ("slow-portscan", "slow-sweep", "vertical-portscan", "horizontal-sweep"):
        assert DETS[name].detect(t) == [], name


def test_udp_scan_and_banner_grab_are_caught():
    # T1046-udp: 3 hosts x 13 ports at 40/s, one source port
    ports = [53, 69, 123, 137, 161, 162, 500, 514, 520, 1434, 1900, 5353, 11211]
    rows = [flow(T0 + i / 40, ATT, h, p, transport="udp", sport=51515, dpk=0)
            for i, (h, p) in enumerate(itertools.product(HOSTS, ports))]
    (a,) = DETS["vertical-portscan"].detect(table(rows))
    assert a.evidence["value"] == 39
    # T1046-banner: kernel connections; closed ports are refused, open ones talk (not probes)
    rows = []
    for i, (h, p) in enumerate(itertools.product(HOSTS, [21, 22, 23, 25, 80, 443, 2222, 3389,
                                                         8080])):
        if p in (22, 80):
            rows.append(flow(T0 + i * 0.05, ATT, h, p, state="RSTO", flags="SAPR", spk=5, dpk=4))
        else:
            rows.append(flow(T0 + i * 0.05, ATT, h, p, state="REJ", flags="S", spk=1, dpk=1))
    (a,) = DETS["vertical-portscan"].detect(table(rows))
    assert a.evidence["value"] == 21 and len(a.flow_ids) == 21


def test_vectorised_probe_mask_matches_the_row_rule():
    states = ["S0", "S1", "SF", "REJ", "RSTO", "RSTR", "RSTOS0", "SH", "OTH", None]
    flags = ["S", "SA", "SR", "SAF", "SAFPR", None]
    rows = [dict(flow(T0, ATT, HOSTS[0], 1000 + i, state=s, flags=f), **{"source.packets": p})
            for i, (s, f, p) in enumerate(itertools.product(states, flags, [1, 3, 4, None]))]
    rows += [flow(T0, ATT, HOSTS[0], 0, transport="icmp", sport=8),
             flow(T0, ATT, HOSTS[0], 0, transport="icmp", sport=0),
             flow(T0, ATT, HOSTS[0], 53, transport="udp")]
    t = table(rows)
    det = PortScanDetector("x", mode="hosts", transports=["tcp", "udp", "icmp"])
    got = det.probe_mask(t).to_pylist()
    want = []
    for r in rows:
        if r["network.transport"] == "tcp":
            want.append(is_tcp_probe(r["cyberrange.tcp_state"], r["cyberrange.tcp_flags"],
                                     r["source.packets"]))
        elif r["network.transport"] == "icmp":
            want.append(r["source.port"] == 8)
        else:
            want.append(True)
    assert got == want
