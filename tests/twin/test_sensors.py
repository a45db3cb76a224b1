"""Sensors on a real twin: span, port set and router interface each see a known number of packets
exactly once (and a sensor that should not see them, none); rotation splits without losing; a
5k packets/s stream for 4 s passes a span sensor with no loss."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from helpers import PY, ROOT, needs_twin

from cyberrange.model.loader import load_topology
from cyberrange.model.topology import Sensor
from cyberrange.telemetry.files import capture_files, count_frames, join_pcaps
from cyberrange.telemetry.pcap import parse_pcap
from cyberrange.twin.build import Twin

pytestmark = needs_twin
REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"

# (sender, receiver, udp source port, frames, rate/s)
STREAMS = [("user1", "user2", 40001, 600, 200),     # 3 s: several rotated files
           ("user2", "user1", 40002, 200, 0),       # to the listed node: the port set sees it
           ("user2", "fw", 40003, 150, 0),          # between others: the port set must not
           ("user1", "user2", 40010, 20000, 5000)]  # the zero-loss stream: 5k/s for 4 s
PINGS = 40                                          # user1 -> web through the firewall

SENDER = r"""
import json, socket, struct, sys
from cyberrange.attack.techniques.fastsend import FastSender
a = json.loads(sys.argv[1])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
payload = b"x" * 18
udp = struct.pack("!HHHH", a["sport"], 9, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(a["src"]), socket.inet_aton(a["dst"]))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex(a["dmac"].replace(":", "")) + bytes.fromhex(a["smac"].replace(":", "")) + b"\x08\x00"
s = FastSender(a["iface"], [eth + ip + udp])
s.run(a["count"], a["rate"])
print(json.dumps({"sent": s.sent, "errors": s.errors}))
"""


def _ip_in(topo, node, zone):
    return next(str(i.ip) for i in topo.nodes[node].interfaces if i.zone == zone)


def send_udp(twin, src, dst, sport, count, rate, zone="users"):
    topo = twin.topo
    itf = next(i for i in topo.nodes[src].interfaces if i.zone == zone)
    ditf = next(i for i in topo.nodes[dst].interfaces if i.zone == zone)
    arg = {"iface": twin.intf[(src, twin._key(itf))], "src": str(itf.ip), "dst": str(ditf.ip),
           "smac": twin.port_key_mac[(src, twin._key(itf))],
           "dmac": twin.port_key_mac[(dst, twin._key(ditf))],
           "sport": sport, "count": count, "rate": rate}
    r = twin.run(src, [PY, "-c", SENDER, json.dumps(arg)], timeout=60, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sent"] == count, out
    return arg


def sensor_packets(run_dir: Path, name: str):
    files = capture_files(run_dir / "pcaps")[name]
    if len(files) > 1:
        joined = run_dir / "pcaps" / f".joined-{name}.pcap"
        join_pcaps(files, joined)
        packets, _f, _s = parse_pcap(str(joined), name, "t")
        joined.unlink()
    else:
        packets, _f, _s = parse_pcap(str(files[0]), name, "t")
    return packets


def count(packets, transport, src, dst, sport=None):
    m = pc.and_(pc.equal(packets["network.transport"], transport),
                pc.and_(pc.equal(packets["source.ip"], src), pc.equal(packets["destination.ip"], dst)))
    if sport is not None:
        m = pc.and_(m, pc.equal(packets["source.port"], sport))
    return pc.sum(pc.cast(m, "int64")).as_py() or 0


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    topo = load_topology(REACH)
    topo.sensors = {s.name: s for s in [
        Sensor("users-span", zone="users"),
        Sensor("user1-port", zone="users", nodes=["user1"]),
        Sensor("fw-servers", interface=("fw", "servers")),
        Sensor("mgmt-span", zone="mgmt"),
        Sensor("users-rot", zone="users", rotate_s=1)]}
    run_dir = tmp_path_factory.mktemp("sensors")
    twin = Twin(topo, run_dir, "test-sensors", log=lambda m: None)
    twin.start()
    try:
        sent = [send_udp(twin, *s) for s in STREAMS]
        web = _ip_in(topo, "web", "servers")
        r = twin.run("user1", ["ping", "-n", "-q", "-c", str(PINGS), "-i", "0.02", web], timeout=30)
        assert f"{PINGS} received" in r.stdout, r.stdout
        stats = twin.stop_sensors()
    finally:
        twin.stop()
    return run_dir, topo, sent, stats


def test_each_kind_sees_each_packet_once_and_only_where_it_should(captured):
    run_dir, topo, sent, stats = captured
    pk = {n: sensor_packets(run_dir, n) for n in stats}
    u1, u2 = _ip_in(topo, "user1", "users"), _ip_in(topo, "user2", "users")
    fw_u = _ip_in(topo, "fw", "users")
    web, user1_srv = _ip_in(topo, "web", "servers"), u1
    expect = {  # sensor -> [(stream index, count)]
        "users-span": [600, 200, 150, 20000], "users-rot": [600, 200, 150, 20000],
        "user1-port": [600, 200, 0, 20000], "fw-servers": [0, 0, 0, 0], "mgmt-span": [0, 0, 0, 0]}
    for name, want in expect.items():
        got = [count(pk[name], "udp", a["src"], a["dst"], a["sport"]) for a in sent]
        assert got == want, (name, got)
    # ICMP through the firewall: requests and replies once on the router interface and the spans
    for name, n in {"users-span": PINGS, "user1-port": PINGS, "fw-servers": PINGS,
                    "mgmt-span": 0}.items():
        assert count(pk[name], "icmp", user1_srv, web) == n, name
        assert count(pk[name], "icmp", web, user1_srv) == n, name
    assert stats["fw-servers"]["kind"] == "interface" and stats["user1-port"]["kind"] == "ports"
    assert u2 and fw_u


def test_no_kernel_drops_and_tcpdump_counts_equal_the_pcaps(captured):
    run_dir, _topo, _sent, stats = captured
    for name, s in stats.items():
        assert s["dropped_by_kernel"] == 0, (name, s)
        assert s["captured"] == s["pcap_frames"] == s["received_by_filter"], (name, s)
        assert not any(f["truncated"] for f in s["files"]), (name, s)


def test_zero_loss_at_5k_packets_per_second(captured):
    run_dir, topo, sent, stats = captured
    a = sent[3]
    pk = sensor_packets(run_dir, "users-span")
    assert count(pk, "udp", a["src"], a["dst"], a["sport"]) == 20000
    assert stats["users-span"]["dropped_by_kernel"] == 0


def test_rotation_files_together_equal_the_single_file_capture(captured):
    run_dir, _topo, _sent, stats = captured
    files = capture_files(run_dir / "pcaps")["users-rot"]
    assert len(files) >= 3, files
    assert all(f.parent.name == "users-rot" for f in files)
    assert sum(count_frames(f)["frames"] for f in files) == count_frames(
        run_dir / "pcaps" / "users-span.pcap")["frames"]
    rot, single = sensor_packets(run_dir, "users-rot"), sensor_packets(run_dir, "users-span")
    cols = ["source.ip", "destination.ip", "source.port", "destination.port", "network.transport",
            "network.bytes"]
    key = lambda t: sorted(zip(*[t[c].to_pylist() for c in cols]), key=str)
    assert key(rot) == key(single)
    # files are in capture order: each file starts after the previous one started
    tables = [parse_pcap(str(f), "users-rot", "t")[0] for f in files]
    firsts = [pc.min(t["@timestamp"]).as_py() for t in tables if t.num_rows]
    assert len(firsts) >= 3 and firsts == sorted(firsts)
