"""The telemetry parser against a corpus of unusual and malformed captures, property tests, the
vectorized fast path against the per-frame slow path and the reference FlowAssembler, an
independent count by tcpdump, and the application-layer fields (DNS, HTTP, Modbus, ARP)."""
from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import (ARP, DNS, DNSQR, Dot1AD, Dot1Q, Ether, ICMP, IP, IPv6, TCP, UDP, Raw,
                       fragment)

from cyberrange.errors import UserError
from cyberrange.telemetry.capture import read_capture
from cyberrange.telemetry.flow_reference import FlowAssembler
from cyberrange.telemetry.flows import community_id
from cyberrange.telemetry.pcap import decode_records, parse_pcap

T0 = 1_750_000_000
A, B, C = "10.10.2.66", "10.10.2.20", "10.10.3.7"
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
DATA = ROOT / "tests" / "data" / "pcaps"


# ---------------------------------------------------------------------------------------------
# writers: exact bytes, any header variant


def pcap_bytes(frames, linktype=1, endian="<", nano=False, t0=T0, step_us=1000,
               lens=None) -> bytes:
    """A classic pcap; ``frames`` are bytes; ``lens`` optionally overrides (caplen, wirelen)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for i, fr in enumerate(frames):
        us = i * step_us
        frac = (us % 1_000_000) * (1000 if nano else 1)
        cap, wire = (len(fr), len(fr)) if lens is None or lens[i] is None else lens[i]
        out.append(struct.pack(endian + "IIII", t0 + us // 1_000_000, frac, cap, wire))
        out.append(fr)
    return b"".join(out)


def write(path, data: bytes) -> str:
    Path(path).write_bytes(data)
    return str(path)


def _opt(code, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng_bytes(interfaces, packets) -> bytes:
    """pcapng: interfaces = [(linktype, tsresol or None)], packets = [(ifid, ts_units, bytes)]."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for lt, res in interfaces:
        opts = (_opt(9, bytes([res])) + _opt(0, b"")) if res is not None else b""
        out.append(_block(1, struct.pack("<HHI", lt, 0, 262144) + opts))
    for ifid, ts, fr in packets:
        out.append(_block(6, struct.pack("<IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(fr),
                                          len(fr)) + fr))
    return b"".join(out)


def tcp_frame(sport=40000, dport=22, flags="S", src=A, dst=B, payload=b"", **ip):
    p = Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport,
                                                                         flags=flags)
    return bytes(p / Raw(payload)) if payload else bytes(p)


def udp_frame(sport=5000, dport=53, payload=b"q", src=A, dst=B):
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport)
                 / Raw(payload))


GOOD = tcp_frame()


# ---------------------------------------------------------------------------------------------
# the corpus: each case names its bytes and the exact outcome


def case_truncated_record(tmp):
    data = pcap_bytes([GOOD, GOOD, GOOD])
    return write(tmp / "t.pcap", data[:-10]), 3, 2, {"truncated-record": 1}


def case_garbage_after_last(tmp):
    return write(tmp / "g.pcap", pcap_bytes([GOOD, GOOD]) + b"\xde\xad\xbe\xef\x01\x02\x03"), \
        3, 2, {"truncated-record": 1}


def case_bad_caplen(tmp):
    # the second record claims a billion captured bytes: the file cannot hold it, reading stops
    data = pcap_bytes([GOOD, GOOD, GOOD], lens=[None, (1_000_000_000, 60), None])
    return write(tmp / "bl.pcap", data), 2, 1, {"truncated-record": 1}


def case_caplen_gt_len(tmp):
    data = pcap_bytes([GOOD, GOOD], lens=[None, (len(GOOD), len(GOOD) - 10)])
    return write(tmp / "cl.pcap", data), 2, 1, {"caplen-exceeds-length": 1}


def case_zero_length(tmp):
    return write(tmp / "z.pcap", pcap_bytes([b"", GOOD, b""])), 3, 1, {"truncated-ethernet": 2}


def case_snapped(tmp):
    # snaplen 40: the frame is cut inside the TCP header -> skipped; cut after it -> recorded
    short = GOOD[:40]
    ok = GOOD[:54]
    data = pcap_bytes([short, ok], lens=[(40, len(GOOD) + 100), (54, len(GOOD) + 100)])
    return write(tmp / "sn.pcap", data), 2, 1, {"truncated-tcp": 1}


def case_vlan_qinq(tmp):
    q = bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=10) / IP(src=A, dst=B) /
              TCP(sport=1, dport=2, flags="S"))
    qq = bytes(Ether(src=MAC_A, dst=MAC_B) / Dot1AD(vlan=100) / Dot1Q(vlan=20) / IP(src=B, dst=A) /
               TCP(sport=2, dport=1, flags="SA"))
    cut = qq[:16]                                          # outer tag cut short
    return write(tmp / "v.pcap", pcap_bytes([q, qq, cut])), 3, 2, {"truncated-vlan": 1}


def case_ipv6(tmp):
    a6, b6 = "fd00::66", "fd00::20"
    frames = [bytes(Ether() / IPv6(src=a6, dst=b6) / TCP(sport=1, dport=22, flags="S")),
              bytes(Ether() / IPv6(src=b6, dst=a6) / TCP(sport=22, dport=1, flags="SA")),
              bytes(Ether() / IPv6(src=a6, dst=b6) / UDP(sport=9, dport=53) / Raw(b"x")),
              bytes(Ether() / IPv6(src=a6, dst=b6))[:14 + 30]]   # cut IPv6 header
    return write(tmp / "v6.pcap", pcap_bytes(frames)), 4, 3, {"truncated-ip6": 1}


def case_fragments(tmp):
    big = IP(src=A, dst=B, id=777) / UDP(sport=5353, dport=9999) / Raw(b"z" * 3000)
    frags = [bytes(Ether(src=MAC_A, dst=MAC_B) / f) for f in fragment(big, fragsize=1000)]
    lone = bytes(Ether() / IP(src=C, dst=B, id=5, frag=100, proto=17) / Raw(b"y" * 40))
    return write(tmp / "fr.pcap", pcap_bytes(frags + [lone])), len(frags) + 1, len(frags) + 1, {}


def case_linktypes(tmp):
    ip = bytes(IP(src=A, dst=B) / TCP(sport=1, dport=2, flags="S"))
    sll = struct.pack(">HHH8sH", 0, 1, 6, bytes.fromhex("02000000000a") + b"\0\0", 0x0800) + ip
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes.fromhex("02000000000a") + b"\0\0") + ip
    null = struct.pack("<I", 2) + ip
    paths = [write(tmp / "sll.pcap", pcap_bytes([sll, sll[:10]], linktype=113)),
             write(tmp / "sll2.pcap", pcap_bytes([sll2], linktype=276)),
             write(tmp / "raw.pcap", pcap_bytes([ip, b"\x70" + ip[1:]], linktype=101)),
             write(tmp / "null.pcap", pcap_bytes([null], linktype=0)),
             write(tmp / "wifi.pcap", pcap_bytes([ip, ip], linktype=105))]
    return paths


def test_corpus_exact_counts(tmp_path):
    for case in (case_truncated_record, case_garbage_after_last, case_bad_caplen,
                 case_caplen_gt_len, case_zero_length, case_snapped, case_vlan_qinq, case_ipv6,
                 case_fragments):
        path, frames, packets, skipped = case(tmp_path)
        for fast in (True, False):
            p, f, s = parse_pcap(path, "s1", "r", fast=fast)
            assert (s["frames"], s["packets"], s["skipped"]) == (frames, packets, skipped), \
                (case.__name__, fast, s)
            assert p.num_rows == packets
            assert s["packets"] + sum(s["skipped"].values()) == s["frames"]


def test_vlan_ids_recorded(tmp_path):
    path, *_ = case_vlan_qinq(tmp_path)
    p, f, s = parse_pcap(path, "s1", "r")
    rows = p.to_pylist()
    assert [(r["network.vlan.id"], r["network.inner.vlan.id"]) for r in rows] == \
        [(10, None), (100, 20)]
    assert f.num_rows == 1 and f.column("network.vlan.id")[0].as_py() == 10
    assert f.column("network.packets")[0].as_py() == 2              # QinQ and 802.1Q: one flow


def test_fragments_join_the_flow_of_their_first_fragment(tmp_path):
    path, frames, *_ = case_fragments(tmp_path)
    p, f, s = parse_pcap(path, "s1", "r")
    rows = p.to_pylist()
    assert [r["cyberrange.ip.fragment"] for r in rows] == ["first"] + ["more"] * (frames - 2) + \
        ["more"]
    assert all(r["source.port"] == 5353 for r in rows[:-1])
    assert rows[-1]["source.port"] is None and rows[-1]["cyberrange.flow_id"] is None
    assert f.num_rows == 1
    assert f.column("network.packets")[0].as_py() == frames - 1
    assert f.column("network.bytes")[0].as_py() == sum(r["network.bytes"] for r in rows[:-1])


def test_link_types(tmp_path):
    sll, sll2, raw, null, wifi = case_linktypes(tmp_path)
    p, f, s = parse_pcap(sll, "s", "r")
    assert (s["packets"], s["skipped"]) == (1, {"truncated-sll": 1})
    assert p.column("source.mac")[0].as_py() == MAC_A and p.column("source.ip")[0].as_py() == A
    p, f, s = parse_pcap(sll2, "s", "r")
    assert (s["packets"], s["skipped"]) == (1, {})
    assert p.column("source.mac")[0].as_py() == MAC_A and f.num_rows == 1
    p, f, s = parse_pcap(raw, "s", "r")
    assert (s["packets"], s["skipped"]) == (2, {})        # version 7 -> an "other" record
    assert p.column("network.type").to_pylist() == ["ipv4", "other"]
    p, f, s = parse_pcap(null, "s", "r")
    assert (s["packets"], s["skipped"], f.num_rows) == (1, {}, 1)
    p, f, s = parse_pcap(wifi, "s", "r")
    assert (s["packets"], s["skipped"]) == (0, {"unsupported-linktype-105": 2})


def test_big_endian_and_nanosecond_give_the_same_records(tmp_path):
    frames = [tcp_frame(flags="S"), tcp_frame(22, 40000, "SA", B, A), udp_frame()]
    ref = parse_pcap(write(tmp_path / "le.pcap", pcap_bytes(frames)), "s", "r")
    for name, kw in (("be", {"endian": ">"}), ("ns", {"nano": True}),
                     ("bens", {"endian": ">", "nano": True})):
        got = parse_pcap(write(tmp_path / f"{name}.pcap", pcap_bytes(frames, **kw)), "s", "r")
        assert got[0].equals(ref[0]) and got[1].equals(ref[1]), name


def test_pcapng_two_interfaces_with_their_own_link_types(tmp_path):
    eth = tcp_frame(flags="S")
    ip = bytes(IP(src=B, dst=A) / TCP(sport=22, dport=40000, flags="SA"))
    t_us = T0 * 1_000_000
    data = pcapng_bytes([(1, None), (101, 9)],                 # if1: nanosecond timestamps
                        [(0, t_us, eth), (1, (t_us + 1000) * 1000, ip), (5, t_us + 2000, eth)])
    path = write(tmp_path / "two.pcapng", data)
    p, f, s = parse_pcap(path, "s", "r")
    assert s["format"] == "pcapng" and s["linktypes"] == {1: 1, 101: 1}
    assert (s["frames"], s["packets"], s["skipped"]) == (3, 2, {"unknown-interface": 1})
    ts = [t.timestamp() for t in p.column("@timestamp").to_pylist()]
    assert ts == pytest.approx([T0, T0 + 0.001], abs=1e-6)
    assert f.num_rows == 1 and f.column("destination.packets")[0].as_py() == 1
    # cut the file inside the last block
    p, f, s = parse_pcap(write(tmp_path / "cut.pcapng", data[:-8]), "s", "r")
    assert (s["frames"], s["packets"], s["skipped"]) == (3, 2, {"truncated-record": 1})


def test_not_a_capture_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        parse_pcap(write(tmp_path / "x.pcap", b"GARBAGE!" * 10), "s", "r")
    with pytest.raises(UserError):
        parse_pcap(write(tmp_path / "y.pcap", b"\xd4\xc3\xb2\xa1\x02\x00"), "s", "r")


# ---------------------------------------------------------------------------------------------
# properties


frame_st = st.one_of(
    st.binary(min_size=0, max_size=90),
    st.tuples(st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00", b"\x88\xa8"]),
              st.binary(min_size=0, max_size=90)).map(lambda t: b"\x02" * 12 + t[0] + t[1]),
    st.tuples(st.sampled_from([6, 17, 1]), st.integers(0, 0x3FFF), st.binary(max_size=40)).map(
        lambda t: bytes(Ether() / IP(proto=t[0], frag=t[1] & 0x1FFF, flags=t[1] >> 13)) + t[2]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frame_st, min_size=1, max_size=30), st.sampled_from([1, 101, 113, 276, 0, 228]))
def test_random_frames_any_linktype(tmp_path_factory, frames, lt):
    path = write(tmp_path_factory.mktemp("f") / "f.pcap", pcap_bytes(frames, linktype=lt))
    p, f, s = parse_pcap(path, "s", "r")
    assert s["frames"] == len(frames)
    assert s["packets"] + sum(s["skipped"].values()) == len(frames) == p.num_rows + \
        sum(s["skipped"].values())
    with_flow = sum(1 for x in p.column("cyberrange.flow_id").to_pylist() if x)
    assert with_flow == sum(f.column("network.packets").to_pylist())
    slow = parse_pcap(path, "s", "r", fast=False)
    assert slow[0].equals(p) and slow[1].equals(f) and slow[2]["skipped"] == s["skipped"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=0, max_size=400), st.booleans())
def test_random_files_never_crash(tmp_path_factory, body, with_header):
    data = (pcap_bytes([]) + body) if with_header else body
    path = write(tmp_path_factory.mktemp("r") / "r.pcap", data)
    try:
        p, f, s = parse_pcap(path, "s", "r")
    except UserError:
        assert not with_header
        return
    assert s["packets"] + sum(s["skipped"].values()) == s["frames"]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=0, max_size=300))
def test_random_pcapng_never_crashes(tmp_path_factory, body):
    data = pcapng_bytes([(1, None)], [(0, T0 * 1_000_000, GOOD)]) + body
    path = write(tmp_path_factory.mktemp("n") / "n.pcapng", data)
    p, f, s = parse_pcap(path, "s", "r")
    assert s["packets"] + sum(s["skipped"].values()) == s["frames"] >= 1


# ---------------------------------------------------------------------------------------------
# the vectorized flows against the packet-at-a-time reference (FlowAssembler)


def reference_flows(path, observer="s", **kw):
    """Flows of the slow-path packets fed one by one to FlowAssembler (the original code)."""
    import socket
    rec = read_capture(path)
    d = decode_records(rec, fast=False)
    fa = FlowAssembler(observer, "r", **kw)
    inv6 = {v: k for k, v in d.v6.items()}

    def text(v):
        return socket.inet_ntoa(struct.pack(">I", v)) if v < (1 << 32) else \
            socket.inet_ntop(socket.AF_INET6, inv6[v])

    def raw(v):
        return struct.pack(">I", v) if v < (1 << 32) else inv6[v]

    for i in range(len(d.ok)):
        if not (d.ok[i] and d.flowable[i]) or d.frag[i] == 2:
            continue
        ts, w = int(rec.ts[i]), int(rec.wirelen[i])
        s_, d_ = int(d.sip[i]), int(d.dip[i])
        sp, dp, pr = int(d.sport[i]), int(d.dport[i]), int(d.proto[i])
        if pr == 6:
            fa.add_tcp(ts, text(s_), sp, text(d_), dp, raw(s_), raw(d_), w, int(d.flags[i]),
                       max(int(d.pay_len[i]), 0))
        elif pr == 17:
            fa.add_udp(ts, text(s_), sp, text(d_), dp, raw(s_), raw(d_), w)
        else:
            fa.add_icmp(ts, text(s_), text(d_), sp, dp, raw(s_), raw(d_), w, pr)
    return fa.table()


def random_conversation(seed, n=60):
    rnd = random.Random(seed)
    ends = [(A, 40000, B, 22), (A, 40001, B, 80), (C, 5000, B, 53), (B, 22, A, 40000)]
    frames, times = [], []
    t = 0
    for _ in range(n):
        t += rnd.choice([1, 10, 1000, 31_000_000, 61_000_000]) if rnd.random() < 0.2 else 100
        s, sp, d, dp = rnd.choice(ends)
        if rnd.random() < 0.5:
            s, sp, d, dp = d, dp, s, sp
        kind = rnd.random()
        if kind < 0.7:
            flags = rnd.choice(["S", "SA", "A", "AP", "F", "AF", "R", "AR", "", "SF", "SR", "P"])
            fr = bytes(Ether() / IP(src=s, dst=d) / TCP(sport=sp, dport=dp, flags=flags) /
                       Raw(b"x" * rnd.choice([0, 0, 5])))
        elif kind < 0.85:
            fr = bytes(Ether() / IP(src=s, dst=d) / UDP(sport=sp, dport=dp) / Raw(b"u"))
        else:
            fr = bytes(Ether() / IP(src=s, dst=d) / ICMP(type=rnd.choice([8, 0, 3, 13, 14]),
                                                         code=rnd.choice([0, 1])))
        frames.append(fr)
        times.append(t)
    return frames, times


def pcap_at(frames, times_us) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for fr, t in zip(frames, times_us):
        out.append(struct.pack("<IIII", T0 + t // 1_000_000, t % 1_000_000, len(fr), len(fr)))
        out.append(fr)
    return b"".join(out)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 10**9))
def test_vectorized_flows_match_reference(tmp_path_factory, seed):
    from cyberrange.telemetry.schema import FLOW_SCHEMA
    frames, times = random_conversation(seed)
    path = write(tmp_path_factory.mktemp("v") / "v.pcap", pcap_at(frames, times))
    _, flows, _ = parse_pcap(path, "s", "r")
    ref = reference_flows(path, "s")
    got = flows.select(FLOW_SCHEMA.names)
    assert got.num_rows == ref.num_rows
    assert got.to_pylist() == ref.to_pylist()


def test_flows_match_reference_on_the_mixed_capture(tmp_path):
    path = write(tmp_path / "m.pcap", known_capture())
    from cyberrange.telemetry.schema import FLOW_SCHEMA
    _, flows, _ = parse_pcap(path, "s", "r")
    assert flows.select(FLOW_SCHEMA.names).to_pylist() == reference_flows(path).to_pylist()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 58]), st.sampled_from([4, 16]), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16), st.integers(0, 255), st.integers(0, 255))
def test_icmp_community_id_matches_package(proto, size, a, b, itype, code):
    import communityid
    a, b = a[:size], b[:size]
    ref = communityid.CommunityID().calc(communityid.FlowTuple(proto, a, b, itype, code))
    assert community_id(proto, a, b, itype, code) == ref


# ---------------------------------------------------------------------------------------------
# an independent count: tcpdump


def known_capture() -> bytes:
    """A deterministic mixed capture: sessions, scans, DNS, HTTP, Modbus, ICMP, ARP, VLAN."""
    rnd = random.Random(5)
    frames = []
    hosts = [f"10.20.{i // 5}.{10 + i}" for i in range(12)]
    for k in range(40):
        a, b = rnd.sample(hosts, 2)
        sp = 41000 + k
        kind = k % 5
        e_ab = Ether(src=MAC_A, dst=MAC_B)
        e_ba = Ether(src=MAC_B, dst=MAC_A)
        if kind == 0:
            dp = 80
            req = b"GET /index.html?x=1 HTTP/1.1\r\nHost: intranet.mil:8080\r\n\r\n"
            frames += [e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags="S"),
                       e_ba / IP(src=b, dst=a) / TCP(sport=dp, dport=sp, flags="SA"),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags="A"),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags="PA") / Raw(req),
                       e_ba / IP(src=b, dst=a) / TCP(sport=dp, dport=sp, flags="PA") /
                       Raw(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * rnd.randrange(10, 900)),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags="FA"),
                       e_ba / IP(src=b, dst=a) / TCP(sport=dp, dport=sp, flags="FA"),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags="A")]
        elif kind == 1:
            frames += [e_ab / IP(src=a, dst=b) / UDP(sport=sp, dport=53) /
                       DNS(id=k, rd=1, qd=DNSQR(qname=f"h{k}.base.mil", qtype="A")),
                       e_ba / IP(src=b, dst=a) / UDP(sport=53, dport=sp) /
                       DNS(id=k, qr=1, rcode=3, qd=DNSQR(qname=f"h{k}.base.mil", qtype="A"))]
        elif kind == 2:
            mb = struct.pack(">HHHBBHH", k, 0, 6, 1, 3, 0, 10)
            frames += [e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=502, flags="S"),
                       e_ba / IP(src=b, dst=a) / TCP(sport=502, dport=sp, flags="SA"),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=502, flags="PA") / Raw(mb),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=502, flags="PA") /
                       Raw(mb[:7] + b"\x10" + mb[8:]),
                       e_ba / IP(src=b, dst=a) / TCP(sport=502, dport=sp, flags="PA") /
                       Raw(struct.pack(">HHHBBB", k, 0, 3, 1, 3, 0)),
                       e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=502, flags="R")]
        elif kind == 3:
            frames += [e_ab / IP(src=a, dst=b) / TCP(sport=sp, dport=1000 + k, flags="S"),
                       e_ba / IP(src=b, dst=a) / TCP(sport=1000 + k, dport=sp, flags="RA"),
                       e_ab / IP(src=a, dst=b) / ICMP(type=8, id=k),
                       e_ba / IP(src=b, dst=a) / ICMP(type=0, id=k)]
        else:
            frames += [e_ab / Dot1Q(vlan=30) / IP(src=a, dst=b) / UDP(sport=sp, dport=514) /
                       Raw(b"<13>syslog line"),
                       Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") /
                       ARP(op=1, hwsrc=MAC_A, psrc=a, pdst=b),
                       Ether(src=MAC_B, dst=MAC_A) / ARP(op=2, hwsrc=MAC_B, psrc=b, hwdst=MAC_A,
                                                          pdst=a)]
    return pcap_bytes([bytes(f) for f in frames], step_us=1000)


_LINE = re.compile(r"length (\d+): (?:vlan \d+, p \d+, ethertype IPv4 \(0x0800\), )?"
                   r"(\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?:")


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_flows_match_tcpdump_per_5_tuple(tmp_path):
    path = write(tmp_path / "known.pcap", known_capture())
    out = subprocess.run(["tcpdump", "-r", path, "-nn", "-e"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    want_pk: Counter = Counter()
    want_by: Counter = Counter()
    ip_lines = 0
    for ln in out:
        m = _LINE.search(ln)
        if not m:
            assert "ARP" in ln, ln
            continue
        ip_lines += 1
        length, s, sp, d, dp = m.groups()
        key = frozenset([(s, int(sp) if sp else None), (d, int(dp) if dp else None)])
        want_pk[key] += 1
        want_by[key] += int(length)
    _, flows, stats = parse_pcap(path, "s", "r")
    got_pk: Counter = Counter()
    got_by: Counter = Counter()
    for f in flows.to_pylist():
        if f["network.transport"] == "icmp":                  # tcpdump prints no "ports"
            key = frozenset([(f["source.ip"], None), (f["destination.ip"], None)])
        else:
            key = frozenset([(f["source.ip"], f["source.port"]),
                             (f["destination.ip"], f["destination.port"])])
        got_pk[key] += f["network.packets"]
        got_by[key] += f["network.bytes"]
    assert stats["packets"] == len(out) and ip_lines == sum(got_pk.values())
    assert got_pk == want_pk
    assert got_by == want_by


# ---------------------------------------------------------------------------------------------
# application-layer fields


def test_dns_http_modbus_arp_fields(tmp_path):
    path = write(tmp_path / "known.pcap", known_capture())
    packets, flows, stats = parse_pcap(path, "s", "r")
    fl = flows.to_pylist()
    dns = [f for f in fl if f["destination.port"] == 53]
    assert dns and all(f["dns.question.name"].endswith(".base.mil") for f in dns)
    assert {(f["dns.question.type"], f["dns.response_code"]) for f in dns} == {("A", "NXDOMAIN")}
    http = [f for f in fl if f["destination.port"] == 80]
    assert http and {(f["http.request.method"], f["url.domain"], f["url.path"]) for f in http} \
        == {("GET", "intranet.mil", "/index.html")}
    mb = [f for f in fl if f["destination.port"] == 502]
    assert mb and all(f["cyberrange.modbus.function_codes"] == [3, 16] for f in mb)
    assert all(f["cyberrange.modbus.unit_id"] == 1 for f in mb)
    assert all(f["cyberrange.tcp_state"] == "RSTO" for f in mb)
    pk = packets.to_pylist()
    arp = [r for r in pk if r["network.transport"] == "arp"]
    assert arp and all(r["source.ip"] is None for r in arp)
    assert {r["cyberrange.arp.operation"] for r in arp} == {"request", "reply"}
    assert all(r["cyberrange.arp.sender_mac"] in (MAC_A, MAC_B) for r in arp)
    rows = [r for r in pk if r["dns.question.name"]]
    assert len(rows) == 2 * len(dns)
    # inter-arrival statistics and responder flags
    f = http[0]
    assert f["cyberrange.iat.min_us"] == f["cyberrange.iat.max_us"] == f["cyberrange.iat.mean_us"] \
        == 1000.0 and f["cyberrange.iat.std_us"] == 0.0
    assert f["cyberrange.tcp_flags"] == "SAFP" and f["cyberrange.tcp_flags_responder"] == "SAFP"
    one = [x for x in fl if x["network.packets"] == 1]
    assert all(x["cyberrange.iat.mean_us"] is None for x in one)


def test_http_parser_edge_cases():
    from cyberrange.telemetry.app import _dns, _http
    assert _http(b"POST http://proxy.mil:3128/a/b?q HTTP/1.1\r\n\r\n") == \
        ("POST", "proxy.mil", "/a/b")
    assert _http(b"GET / HTTP/1.0\r\nhOsT: [fd00::1]:80\r\n\r\n") == ("GET", "fd00::1", "/")
    assert _http(b"CONNECT c2.evil:443 HTTP/1.1\r\n\r\n") == ("CONNECT", "c2.evil", None)
    assert _http(b"GETX") is None
    assert _dns(b"\x00" * 11) is None
    assert _dns(b"\x00\x01\x81\x83\x00\x01" + b"\x00" * 6 + b"\xc0\x0c\x00\x01\x00\x01") is None


def test_committed_sample_captures_parse_cleanly():
    files = sorted(DATA.glob("*.pcap*"))
    assert files and sum(f.stat().st_size for f in files) < 1_000_000
    for f in files:
        p, fl, s = parse_pcap(str(f), f.stem, "r")
        assert s["packets"] + sum(s["skipped"].values()) == s["frames"]
    p, fl, s = parse_pcap(str(DATA / "mixed.pcap"), "mixed", "r")
    assert s["skipped"] == {} and fl.num_rows > 40


if __name__ == "__main__":            # regenerate the committed samples
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "mixed.pcap").write_bytes(known_capture())
    frames, times = random_conversation(1, n=200)
    (DATA / "conversation.pcap").write_bytes(pcap_at(frames, times))
    bad = pcap_bytes([GOOD, b"", GOOD[:20], GOOD], lens=[None, None, None, (len(GOOD), 20)])
    (DATA / "malformed.pcap").write_bytes(bad + b"\x01\x02\x03")
