"""Benchmark: pcap -> flow records, cyberrange telemetry vs NFStream and vs scapy (same process,
same input).

    .venv/bin/python bench/telemetry.py                      # a generated 200k-packet capture
    .venv/bin/python bench/telemetry.py --pcap FILE.pcap     # any capture
    .venv/bin/python bench/telemetry.py --repeat 5 --scapy-packets 0   # scapy on the full file

Baselines:

* **NFStream** (``nfstream`` from PyPI, ``pip install -e .[bench]``): ``NFStreamer(source=FILE)``
  iterated to the end, once with its defaults (nDPI dissection of the first 20 packets) and once
  with ``n_dissections=0`` (flow metering only, its fastest setting). The ratio is reported
  against the *faster* of the two.
* **scapy**: ``rdpcap`` + a dict flow table keyed by the normalised 5-tuple (packets and bytes
  per flow). scapy runs ~4k packets/s, so by default it reads the first ``--scapy-packets``
  packets (written to a separate file) and the ratio compares packets per second.

Each timing is the wall-clock time to turn the file into flow records (our number includes the
packet table too, which NFStream does not produce). Best and median of ``--repeat`` runs are shown;
ours is warmed up once on the first 1,000 frames (first-call import costs of numpy/pyarrow paths).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cyberrange.telemetry.pcap import parse_pcap  # noqa: E402


# ---------------------------------------------------------------------------------------------
# a synthetic but realistic capture: TCP sessions (handshake, data both ways, FIN), DNS over UDP,
# ICMP echo, SYN scans answered by RST, a few VLAN-tagged and IPv6 frames


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _eth(smac: bytes, dmac: bytes, etype: int, payload: bytes, vlan: int | None = None) -> bytes:
    if vlan is not None:
        return dmac + smac + struct.pack("!HHH", 0x8100, vlan, etype) + payload
    return dmac + smac + struct.pack("!H", etype) + payload


def _ip4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64,
                      proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + payload


def _tcp(sport, dport, seq, ack, flags, data=b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0) + data


def _udp(sport, dport, data) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def make_capture(path: str, n_packets: int = 200_000, seed: int = 7) -> str:
    """Write a classic pcap of about ``n_packets`` frames, timestamps increasing."""
    rnd = random.Random(seed)
    hosts = [bytes([10, 10, rnd.randrange(1, 5), rnd.randrange(2, 250)]) for _ in range(60)]
    macs = {h: bytes([2, 0]) + h for h in hosts}
    frames: list[tuple[float, bytes]] = []
    t = 1_750_000_000.0
    ident = 0
    payload_cache = {n: bytes(rnd.getrandbits(8) for _ in range(n)) for n in (0, 64, 512, 1400)}
    while len(frames) < n_packets:
        kind = rnd.random()
        a, b = rnd.sample(hosts, 2)
        ma, mb = macs[a], macs[b]
        t0 = t + rnd.random() * 5
        t += 0.002
        ident += 1
        if kind < 0.55:                                   # a TCP session
            sp, dp = rnd.randrange(32768, 61000), rnd.choice([22, 80, 443, 502, 8080])
            n_data = rnd.choice([1, 2, 4, 10, 40])
            seq = []
            seq.append((a, b, _tcp(sp, dp, 1, 0, 0x02)))
            seq.append((b, a, _tcp(dp, sp, 1, 2, 0x12)))
            seq.append((a, b, _tcp(sp, dp, 2, 2, 0x10)))
            for k in range(n_data):
                seq.append((a, b, _tcp(sp, dp, 2, 2, 0x18, payload_cache[64])))
                seq.append((b, a, _tcp(dp, sp, 2, 2, 0x18, payload_cache[rnd.choice([512, 1400])])))
                if k % 2:
                    seq.append((a, b, _tcp(sp, dp, 2, 2, 0x10)))
            seq.append((a, b, _tcp(sp, dp, 2, 2, 0x11)))
            seq.append((b, a, _tcp(dp, sp, 2, 3, 0x11)))
            seq.append((a, b, _tcp(sp, dp, 3, 3, 0x10)))
            for k, (s, d_, seg) in enumerate(seq):
                frames.append((t0 + k * 0.0005, _eth(macs[s], macs[d_], 0x0800,
                                                     _ip4(s, d_, 6, seg, ident + k))))
        elif kind < 0.80:                                 # DNS query and answer
            sp = rnd.randrange(32768, 61000)
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04host\x03mil\x00\x00\x01\x00\x01"
            r = q[:2] + b"\x81\x80" + q[4:]
            frames.append((t0, _eth(ma, mb, 0x0800, _ip4(a, b, 17, _udp(sp, 53, q), ident))))
            frames.append((t0 + 0.0003, _eth(mb, ma, 0x0800, _ip4(b, a, 17, _udp(53, sp, r),
                                                                   ident + 1))))
        elif kind < 0.90:                                 # ping
            for k in range(4):
                echo = struct.pack("!BBHHH", 8, 0, 0, 7, k) + payload_cache[64]
                rep = struct.pack("!BBHHH", 0, 0, 0, 7, k) + payload_cache[64]
                frames.append((t0 + k, _eth(ma, mb, 0x0800, _ip4(a, b, 1, echo, ident + k))))
                frames.append((t0 + k + 0.0002, _eth(mb, ma, 0x0800, _ip4(b, a, 1, rep, ident))))
        elif kind < 0.98:                                 # SYN scan probe and RST
            sp, dp = rnd.randrange(32768, 61000), rnd.randrange(1, 1024)
            frames.append((t0, _eth(ma, mb, 0x0800, _ip4(a, b, 6, _tcp(sp, dp, 9, 0, 0x02), ident))))
            frames.append((t0 + 0.0001, _eth(mb, ma, 0x0800,
                                             _ip4(b, a, 6, _tcp(dp, sp, 0, 10, 0x14), ident))))
        else:                                             # VLAN-tagged UDP (the fast path too)
            frames.append((t0, _eth(ma, mb, 0x0800, _ip4(a, b, 17, _udp(5000, 514, b"<13>x" * 20),
                                                         ident), vlan=20)))
    frames = frames[:n_packets]
    frames.sort(key=lambda x: x[0])
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, fr in frames:
            sec = int(ts)
            fh.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(fr), len(fr)))
            fh.write(fr)
    return path


def head_pcap(src: str, dst: str, n: int) -> str:
    """The first n records of a classic pcap."""
    from cyberrange.telemetry.capture import read_capture
    rec = read_capture(src)
    if rec.format != "pcap" or n >= len(rec):
        return src
    end = int(rec.off[n - 1] + rec.caplen[n - 1])
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(fi.read(end))
    return dst


# ---------------------------------------------------------------------------------------------
# the contenders


def run_ours(path: str) -> tuple[int, int]:
    packets, flows, stats = parse_pcap(path, "bench", "bench")
    return stats["frames"], flows.num_rows


def run_nfstream(path: str, **kw) -> tuple[int, int]:
    from nfstream import NFStreamer
    n = pk = 0
    for f in NFStreamer(source=path, **kw):
        n += 1
        pk += f.bidirectional_packets
    return pk, n


def run_scapy(path: str) -> tuple[int, int]:
    from scapy.all import IP, TCP, UDP, rdpcap
    flows: dict = {}
    pkts = rdpcap(path)
    for p in pkts:
        if IP not in p:
            continue
        ip = p[IP]
        l4 = ip.payload
        sport = getattr(l4, "sport", 0) if isinstance(l4, (TCP, UDP)) else 0
        dport = getattr(l4, "dport", 0) if isinstance(l4, (TCP, UDP)) else 0
        a, b = (ip.src, sport), (ip.dst, dport)
        key = (ip.proto,) + ((a + b) if a <= b else (b + a))
        f = flows.get(key)
        if f is None:
            f = flows[key] = [0, 0, float(p.time), float(p.time)]
        f[0] += 1
        f[1] += len(p)
        f[3] = float(p.time)
    return len(pkts), len(flows)


def timed(fn, *args, repeat=3, **kw):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", help="capture to read (default: a generated one)")
    ap.add_argument("--packets", type=int, default=200_000, help="size of the generated capture")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scapy-packets", type=int, default=20_000,
                    help="packets scapy reads (0: the whole file)")
    ap.add_argument("--no-nfstream", action="store_true")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-telemetry-")
    path = args.pcap or make_capture(os.path.join(tmp, "bench.pcap"), args.packets)
    size_mb = os.path.getsize(path) / 1e6
    run_ours(head_pcap(path, os.path.join(tmp, "warm.pcap"), 1000))   # one-time import costs
    best, med, (frames, nflows) = timed(run_ours, path, repeat=args.repeat)
    print(f"input: {path} ({size_mb:.1f} MB, {frames} frames)")
    print(f"{'contender':<34} {'best s':>8} {'median s':>9} {'pkt/s (best)':>13} {'flows':>8}")
    ours_rate = frames / best
    print(f"{'cyberrange parse_pcap':<34} {best:8.3f} {med:9.3f} {ours_rate:13,.0f} {nflows:8}")
    results = {}
    if not args.no_nfstream:
        try:
            import nfstream  # noqa: F401
        except ImportError:
            print("nfstream not installed (pip install -e .[bench]); skipping that baseline")
        else:
            for label, kw in (("NFStream (defaults)", {}),
                              ("NFStream (n_dissections=0)", {"n_dissections": 0})):
                b, m, (pk, nf) = timed(run_nfstream, path, repeat=args.repeat, **kw)
                results[label] = frames / b
                print(f"{label:<34} {b:8.3f} {m:9.3f} {frames / b:13,.0f} {nf:8}")
    spath = path if args.scapy_packets <= 0 else head_pcap(
        path, os.path.join(tmp, "head.pcap"), args.scapy_packets)
    b, m, (spk, snf) = timed(run_scapy, spath, repeat=1)
    scapy_rate = spk / b
    print(f"{'scapy rdpcap + dict (' + str(spk) + ' pkts)':<34} {b:8.3f} {m:9.3f} "
          f"{scapy_rate:13,.0f} {snf:8}")
    print()
    if results:
        label = max(results, key=results.get)
        print(f"ratio vs {label}: {ours_rate / results[label]:.2f}x "
              f"(vs NFStream defaults {ours_rate / results['NFStream (defaults)']:.2f}x)")
    print(f"ratio vs scapy: {ours_rate / scapy_rate:.1f}x  (packets per second)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
