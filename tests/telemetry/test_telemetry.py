"""pcap -> packet and flow records: decoding, flow assembly, Zeek states, robustness."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ARP, Dot1Q, Ether, ICMP, IP, TCP, UDP, Raw, wrpcap

from cyberrange.telemetry.flows import FLAG_LETTERS
from cyberrange.telemetry.pcap import parse_pcap, parse_pcaps
from cyberrange.telemetry.schema import (FLOW_RECORD_SCHEMA, FLOW_SCHEMA, PACKET_RECORD_SCHEMA,
                                         PACKET_SCHEMA)

T0 = 1_750_000_000.0
A, B = "10.10.2.66", "10.10.2.20"
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def _ab(**kw):
    return Ether(src=MAC_A, dst=MAC_B) / IP(src=A, dst=B, **kw)


def _ba(**kw):
    return Ether(src=MAC_B, dst=MAC_A) / IP(src=B, dst=A, **kw)


def write(path, frames, t0=T0, step=0.001):
    """Write scapy packets with explicit, increasing timestamps."""
    pkts = []
    for i, f in enumerate(frames):
        p = f.copy()
        p.time = t0 + i * step
        pkts.append(p)
    wrpcap(str(path), pkts, linktype=1)
    return str(path)


def write_raw(path, frames: list[bytes], t0=T0, step=0.001):
    """A classic pcap with exactly these frame bytes (no scapy re-encoding)."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            t = t0 + i * step
            sec = int(t)
            usec = int(round((t - sec) * 1e6))
            fh.write(struct.pack("<IIII", sec, usec, len(fr), len(fr)))
            fh.write(fr)
    return str(path)


def handshake_frames(sport=40000, dport=22, data=b"hello"):
    return [
        _ab() / TCP(sport=sport, dport=dport, flags="S", seq=100),
        _ba() / TCP(sport=dport, dport=sport, flags="SA", seq=500, ack=101),
        _ab() / TCP(sport=sport, dport=dport, flags="A", seq=101, ack=501),
        _ab() / TCP(sport=sport, dport=dport, flags="PA", seq=101, ack=501) / Raw(data),
        _ba() / TCP(sport=dport, dport=sport, flags="A", seq=501, ack=101 + len(data)),
        _ab() / TCP(sport=sport, dport=dport, flags="FA", seq=101 + len(data), ack=501),
        _ba() / TCP(sport=dport, dport=sport, flags="FA", seq=501, ack=102 + len(data)),
        _ab() / TCP(sport=sport, dport=dport, flags="A", seq=102 + len(data), ack=502),
    ]


def test_tcp_handshake_data_fin_is_one_sf_flow(tmp_path):
    frames = handshake_frames()
    path = write(tmp_path / "sf.pcap", frames)
    packets, flows, stats = parse_pcap(path, "s1", "run1")
    assert packets.schema.equals(PACKET_RECORD_SCHEMA)
    assert flows.schema.equals(FLOW_RECORD_SCHEMA)
    # the core columns come first, unchanged
    assert packets.schema.names[:len(PACKET_SCHEMA)] == PACKET_SCHEMA.names
    assert flows.schema.names[:len(FLOW_SCHEMA)] == FLOW_SCHEMA.names
    assert stats["packets"] == 8 and stats["flows"] == 1 and stats["skipped"] == {}
    f = flows.to_pylist()[0]
    assert f["cyberrange.tcp_state"] == "SF"
    assert (f["source.ip"], f["source.port"], f["destination.ip"], f["destination.port"]) == \
        (A, 40000, B, 22)
    lens = [len(bytes(x)) for x in frames]
    a_idx, b_idx = [0, 2, 3, 5, 7], [1, 4, 6]
    assert f["source.packets"] == 5 and f["destination.packets"] == 3
    assert f["source.bytes"] == sum(lens[i] for i in a_idx)
    assert f["destination.bytes"] == sum(lens[i] for i in b_idx)
    assert f["network.packets"] == 8 and f["network.bytes"] == sum(lens)
    assert f["event.duration"] == 7_000_000                     # 7 ms in ns
    assert f["cyberrange.tcp_flags"] == "SAFP"                  # order S A F R P U
    assert f["network.community_id"].startswith("1:")
    rows = packets.to_pylist()
    assert [r["tcp.flags"] for r in rows] == ["S", "SA", "A", "AP", "A", "AF", "AF", "A"]
    assert {r["cyberrange.flow_id"] for r in rows} == {f["cyberrange.flow_id"]}
    assert {r["network.community_id"] for r in rows} == {f["network.community_id"]}
    assert rows[0]["source.mac"] == MAC_A and rows[0]["destination.mac"] == MAC_B
    assert rows[0]["network.type"] == "ipv4"
    assert rows[0]["@timestamp"].timestamp() == pytest.approx(T0, abs=1e-6)


def test_flag_letters_fixed_order():
    assert FLAG_LETTERS[0x12] == "SA"
    assert FLAG_LETTERS[0x11] == "AF"
    assert FLAG_LETTERS[0x14] == "AR"
    assert FLAG_LETTERS[0x3F] == "SAFRPU"


def test_community_id_matches_reference(tmp_path):
    import communityid
    path = write(tmp_path / "c.pcap", handshake_frames()[:2])
    _, flows, _ = parse_pcap(path, "s1", "r")
    ref = communityid.CommunityID().calc(communityid.FlowTuple.make_tcp(A, B, 40000, 22))
    assert flows.column("network.community_id")[0].as_py() == ref


@pytest.mark.parametrize("frames, state", [
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ba() / TCP(sport=80, dport=1, flags="RA")], "REJ"),
    ([_ab() / TCP(sport=1, dport=80, flags="S")], "S0"),
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ab() / TCP(sport=1, dport=80, flags="S")], "S0"),               # retransmitted SYN
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ba() / TCP(sport=80, dport=1, flags="SA"),
      _ab() / TCP(sport=1, dport=80, flags="R")], "RSTO"),             # SYN scan, open port
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ab() / TCP(sport=1, dport=80, flags="R")], "RSTOS0"),
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ba() / TCP(sport=80, dport=1, flags="SA"),
      _ab() / TCP(sport=1, dport=80, flags="A")], "S1"),
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ba() / TCP(sport=80, dport=1, flags="SA"),
      _ab() / TCP(sport=1, dport=80, flags="A"),
      _ba() / TCP(sport=80, dport=1, flags="RA")], "RSTR"),
    ([_ab() / TCP(sport=1, dport=80, flags="S"),
      _ab() / TCP(sport=1, dport=80, flags="F")], "SH"),
    ([_ab() / TCP(sport=1, dport=80, flags="PA") / Raw(b"x")], "OTH"),
    ([_ba() / TCP(sport=80, dport=1, flags="SA"),
      _ba() / TCP(sport=80, dport=1, flags="R")], "RSTRH"),
    ([_ba() / TCP(sport=80, dport=1, flags="SA"),
      _ba() / TCP(sport=80, dport=1, flags="FA")], "SHR"),
])
def test_zeek_conn_states(tmp_path, frames, state):
    path = write(tmp_path / "s.pcap", frames)
    _, flows, _ = parse_pcap(path, "s1", "r")
    assert flows.num_rows == 1
    assert flows.column("cyberrange.tcp_state")[0].as_py() == state


def test_synack_first_gives_originator_to_receiver(tmp_path):
    path = write(tmp_path / "sa.pcap", [_ba() / TCP(sport=22, dport=40000, flags="SA"),
                                         _ab() / TCP(sport=40000, dport=22, flags="A")])
    _, flows, _ = parse_pcap(path, "s1", "r")
    f = flows.to_pylist()[0]
    assert (f["source.ip"], f["source.port"]) == (A, 40000)


def test_port_reuse_after_close_starts_new_flow(tmp_path):
    frames = handshake_frames() + handshake_frames()
    path = write(tmp_path / "reuse.pcap", frames)
    packets, flows, _ = parse_pcap(path, "s1", "r")
    assert flows.num_rows == 2
    assert flows.column("cyberrange.tcp_state").to_pylist() == ["SF", "SF"]
    assert len(set(packets.column("cyberrange.flow_id").to_pylist())) == 2


def test_idle_timeout_splits_flows(tmp_path):
    p1 = _ab() / UDP(sport=5000, dport=53) / Raw(b"q")
    p2 = _ab() / UDP(sport=5000, dport=53) / Raw(b"q")
    p1.time, p2.time = T0, T0 + 31
    wrpcap(str(tmp_path / "u.pcap"), [p1, p2])
    _, flows, _ = parse_pcap(str(tmp_path / "u.pcap"), "s1", "r")
    assert flows.num_rows == 2
    _, flows, _ = parse_pcap(str(tmp_path / "u.pcap"), "s1", "r", udp_timeout=60)
    assert flows.num_rows == 1


def test_icmp_echo_request_reply_is_one_flow(tmp_path):
    frames = [_ab() / ICMP(type=8, code=0, id=7, seq=1), _ba() / ICMP(type=0, code=0, id=7, seq=1),
              _ab() / ICMP(type=8, code=0, id=7, seq=2), _ba() / ICMP(type=0, code=0, id=7, seq=2)]
    path = write(tmp_path / "icmp.pcap", frames)
    packets, flows, _ = parse_pcap(path, "s1", "r")
    assert flows.num_rows == 1
    f = flows.to_pylist()[0]
    assert (f["source.ip"], f["source.port"], f["destination.ip"], f["destination.port"]) == \
        (A, 8, B, 0)
    assert f["source.packets"] == 2 and f["destination.packets"] == 2
    assert f["network.transport"] == "icmp" and f["cyberrange.tcp_state"] is None
    assert packets.column("source.port").to_pylist() == [8, 0, 8, 0]
    import communityid
    ref = communityid.CommunityID().calc(communityid.FlowTuple.make_icmp(A, B, 8, 0))
    assert f["network.community_id"] == ref


def test_reply_seen_first_still_requester_is_originator(tmp_path):
    path = write(tmp_path / "r.pcap", [_ba() / ICMP(type=0, code=0)])
    _, flows, _ = parse_pcap(path, "s1", "r")
    f = flows.to_pylist()[0]
    assert (f["source.ip"], f["source.port"], f["destination.packets"]) == (A, 8, 1)


def test_arp_is_a_packet_without_ip_and_without_flow(tmp_path):
    path = write(tmp_path / "arp.pcap", [Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") /
                                         ARP(psrc=A, pdst=B, hwsrc=MAC_A)])
    packets, flows, stats = parse_pcap(path, "s1", "r")
    row = packets.to_pylist()[0]
    assert row["network.transport"] == "arp" and row["network.type"] == "arp"
    assert row["source.ip"] is None and row["destination.ip"] is None
    assert row["cyberrange.flow_id"] is None and row["source.mac"] == MAC_A
    assert flows.num_rows == 0 and stats["packets"] == 1


def test_vlan_tagged_frame(tmp_path):
    frame = Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=20) / IP(src=A, dst=B) / \
        TCP(sport=1234, dport=443, flags="S")
    packets, flows, stats = parse_pcap(write(tmp_path / "v.pcap", [frame]), "s1", "r")
    row = packets.to_pylist()[0]
    assert (row["source.ip"], row["destination.port"], row["tcp.flags"]) == (A, 443, "S")
    assert row["network.bytes"] == len(bytes(frame))
    assert flows.num_rows == 1 and stats["skipped"] == {}


def test_malformed_frames_are_skipped_not_fatal(tmp_path):
    good = bytes(_ab() / TCP(sport=1, dport=2, flags="S"))
    ip_bad_len = bytearray(good)
    struct.pack_into(">H", ip_bad_len, 16, 1400)          # IP total length beyond the frame
    frames = [
        good,
        good[:10],                                         # truncated ethernet
        good[:14 + 12],                                    # truncated IP header
        bytes(_ab(len=26, proto=6) / Raw(b"\x00" * 6)),   # IP ok, TCP header cut short
        b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\xff" * 30,  # garbage "IP"
        bytes(ip_bad_len),
        bytes(_ab(ihl=3) / UDP()),                         # IHL below 5
    ]
    path = write_raw(tmp_path / "bad.pcap", frames)
    packets, flows, stats = parse_pcap(path, "s1", "r")
    assert stats["frames"] == len(frames)
    assert stats["packets"] == 1 == packets.num_rows
    assert sum(stats["skipped"].values()) == len(frames) - 1
    assert stats["skipped"].get("truncated-ethernet") == 1
    assert stats["skipped"].get("bad-ip-length") == 2     # wrong length, garbage length
    assert stats["skipped"].get("truncated-tcp") == 1
    assert stats["skipped"].get("bad-ip-header-length") == 1


def test_truncated_file_tail(tmp_path):
    good = bytes(_ab() / TCP(sport=1, dport=2, flags="S"))
    path = write_raw(tmp_path / "t.pcap", [good, good])
    with open(path, "r+b") as fh:
        fh.truncate(24 + 16 + len(good) + 16 + 5)
    _, _, stats = parse_pcap(path, "s1", "r")
    assert stats["packets"] == 1 and stats["skipped"] == {"truncated-record": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(min_size=0, max_size=120),
    # frames that look like Ethernet + IPv4/IPv6/ARP/VLAN with random bytes after
    st.tuples(st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00"]),
              st.binary(min_size=0, max_size=100)).map(lambda t: b"\x02" * 12 + t[0] + t[1]),
    st.tuples(st.sampled_from([6, 17, 1]), st.binary(min_size=0, max_size=60)).map(
        lambda t: bytes(_ab(proto=t[0])) + t[1]),
), min_size=1, max_size=25))
def test_random_frames_never_crash(tmp_path_factory, frames):
    path = write_raw(tmp_path_factory.mktemp("fuzz") / "f.pcap", frames)
    packets, flows, stats = parse_pcap(path, "s1", "r")
    assert stats["frames"] == len(frames)
    assert stats["packets"] + sum(stats["skipped"].values()) == len(frames)
    assert packets.num_rows == stats["packets"]
    with_flow = sum(1 for x in packets.column("cyberrange.flow_id").to_pylist() if x)
    assert with_flow == sum(flows.column("network.packets").to_pylist())


def mixed_frames(n_conn=20):
    frames = []
    for i in range(n_conn):
        frames += handshake_frames(sport=41000 + i, dport=22 if i % 2 else 80, data=b"x" * i)
        frames.append(_ab() / UDP(sport=5000 + i, dport=53) / Raw(b"q" * (i + 1)))
        frames.append(_ba() / UDP(sport=53, dport=5000 + i) / Raw(b"r" * (i + 3)))
        frames.append(_ab() / ICMP(type=8, id=i))
        frames.append(_ba() / ICMP(type=0, id=i))
        frames.append(_ab() / TCP(sport=42000 + i, dport=1000 + i, flags="S"))
        frames.append(_ba() / TCP(sport=1000 + i, dport=42000 + i, flags="RA"))
    frames.append(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=A, pdst=B))
    return frames


def test_flow_totals_equal_packet_rows(tmp_path):
    path = write(tmp_path / "mix.pcap", mixed_frames())
    packets, flows, stats = parse_pcap(path, "s1", "r")
    assert stats["skipped"] == {}
    flow_pkts = sum(flows.column("network.packets").to_pylist())
    with_flow = packets.filter(packets.column("cyberrange.flow_id").is_valid())
    assert flow_pkts == with_flow.num_rows == packets.num_rows - 1      # ARP has no flow
    assert sum(flows.column("network.bytes").to_pylist()) == \
        sum(with_flow.column("network.bytes").to_pylist())
    # per-flow: packet rows of each flow id add up to that flow's counters
    from collections import Counter
    per = Counter(with_flow.column("cyberrange.flow_id").to_pylist())
    for f in flows.to_pylist():
        assert per[f["cyberrange.flow_id"]] == f["network.packets"]
    states = Counter(flows.column("cyberrange.tcp_state").to_pylist())
    assert states["SF"] == 20 and states["REJ"] == 20


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_counts_match_tcpdump(tmp_path):
    frames = mixed_frames() + [Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=5) / IP(src=A, dst=B) /
                               UDP(sport=9, dport=9)]
    path = write(tmp_path / "x.pcap", frames)
    _, _, stats = parse_pcap(path, "s1", "r")
    out = subprocess.run(["tcpdump", "-r", path, "-nn"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert stats["packets"] == len(out)
    out_e = subprocess.run(["tcpdump", "-r", path, "-nn", "-e"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    total = sum(int(re.search(r"length (\d+)", ln).group(1)) for ln in out_e)
    assert stats["bytes"] == total


def test_parse_pcaps_concatenates(tmp_path):
    p1 = write(tmp_path / "a.pcap", handshake_frames())
    p2 = write(tmp_path / "b.pcap", handshake_frames())
    packets, flows, stats = parse_pcaps([(p1, "s1"), (p2, "s2")], "r")
    assert packets.num_rows == 16 and flows.num_rows == 2 and stats["flows"] == 2
    assert set(flows.column("observer.name").to_pylist()) == {"s1", "s2"}
    ids = flows.column("cyberrange.flow_id").to_pylist()
    assert ids[0] != ids[1]                               # the observer is part of the flow id
    cids = flows.column("network.community_id").to_pylist()
    assert cids[0] == cids[1]                             # the community id is not


def test_pcapng_and_nanosecond_and_sll(tmp_path):
    from scapy.all import CookedLinux
    from scapy.utils import PcapNgWriter
    frames = handshake_frames()
    ng = tmp_path / "x.pcapng"
    w = PcapNgWriter(str(ng))
    for i, f in enumerate(frames):
        p = f.copy()
        p.time = T0 + i * 0.001
        w.write(p)
    w.close()
    _, flows, stats = parse_pcap(str(ng), "s1", "r")
    assert stats["packets"] == 8 and flows.column("cyberrange.tcp_state")[0].as_py() == "SF"
    # nanosecond classic pcap (the same records, magic a1b23c4d)
    ns = tmp_path / "ns.pcap"
    with open(ns, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
        for i, f in enumerate(frames):
            b = bytes(f)
            fh.write(struct.pack("<IIII", int(T0), i * 1_000_000 + 499, len(b), len(b)))
            fh.write(b)
    packets, _, stats = parse_pcap(str(ns), "s1", "r")
    assert stats["packets"] == 8
    assert packets.column("@timestamp")[1].as_py().microsecond == 1000   # 1 ms + 499 ns rounds down
    # Linux cooked capture (tcpdump -i any)
    sll = [CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x0a\x00\x00",
                       proto=0x0800) / f[IP] for f in frames]
    for i, p in enumerate(sll):
        p.time = T0 + i * 0.001
    wrpcap(str(tmp_path / "sll.pcap"), sll, linktype=113)
    packets, flows, stats = parse_pcap(str(tmp_path / "sll.pcap"), "s1", "r")
    assert stats["packets"] == 8 and stats["skipped"] == {}
    assert flows.column("cyberrange.tcp_state")[0].as_py() == "SF"
    assert packets.column("source.mac")[0].as_py() == MAC_A


def test_not_a_pcap_is_a_user_error(tmp_path):
    from cyberrange.errors import UserError
    p = tmp_path / "x.pcap"
    p.write_bytes(b"hello world, this is not a capture file")
    with pytest.raises(UserError):
        parse_pcap(str(p), "s1", "r")
    (tmp_path / "empty.pcap").write_bytes(b"")
    packets, flows, stats = parse_pcap(str(tmp_path / "empty.pcap"), "s1", "r")
    assert packets.num_rows == 0 and flows.num_rows == 0 and stats["frames"] == 0


def test_ipv6_best_effort(tmp_path):
    from scapy.all import IPv6, ICMPv6EchoReply, ICMPv6EchoRequest
    a6, b6 = "fd00::66", "fd00::20"
    frames = [Ether() / IPv6(src=a6, dst=b6) / TCP(sport=1, dport=22, flags="S"),
              Ether() / IPv6(src=b6, dst=a6) / TCP(sport=22, dport=1, flags="RA"),
              Ether() / IPv6(src=a6, dst=b6) / ICMPv6EchoRequest(),
              Ether() / IPv6(src=b6, dst=a6) / ICMPv6EchoReply()]
    packets, flows, stats = parse_pcap(write(tmp_path / "v6.pcap", frames), "s1", "r")
    assert stats["skipped"] == {} and flows.num_rows == 2
    rows = {f["network.transport"]: f for f in flows.to_pylist()}
    assert rows["tcp"]["cyberrange.tcp_state"] == "REJ" and rows["tcp"]["source.ip"] == a6
    assert rows["ipv6-icmp"]["source.port"] == 128 and rows["ipv6-icmp"]["destination.packets"] == 1
    assert set(packets.column("network.type").to_pylist()) == {"ipv6"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([6, 17]), st.sampled_from([4, 16]), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16), st.integers(0, 65535), st.integers(0, 65535),
       st.booleans())
def test_community_id_fast_path_matches_package(proto, size, a, b, sport, dport, same):
    import communityid
    from cyberrange.telemetry.flows import community_id
    a, b = a[:size], (a[:size] if same else b[:size])
    ref = communityid.CommunityID().calc(communityid.FlowTuple(proto, a, b, sport, dport))
    assert community_id(proto, a, b, sport, dport) == ref
