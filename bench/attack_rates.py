"""Benchmark: flood and paced sending rates of fastsend against tcpreplay on the SAME packets.

Lab (made here, removed at the end, by the tests' namespace lab engine tests/support/nslab.py):
two namespaces ``crt-<id>-a`` and ``crt-<id>-b`` joined by one veth pair; nothing in the root
namespace. The packets: N distinct 60-byte UDP frames from a to b's MAC (N source ports),
written to one pcap. Both senders run inside ``crt-<id>-a``:

* fastsend: ``cyberrange.attack.techniques.fastsend.FastSender`` (one AF_PACKET socket,
  sendmmsg batches of 64), the frames read from the pcap;
* baseline: ``tcpreplay -i eth0 -K --loop=L`` with ``--topspeed`` or ``--pps=R`` on that pcap.

(a) Flood: ``--flood-count`` frames as fast as possible. Rate = frames / sending time (fastsend:
    measured around its loop; tcpreplay: the "Rated: ... pps" it prints). Delivered = b's
    eth0 rx_packets delta.
(b) Paced accuracy at each rate of ``--rates`` for ``--seconds`` s: achieved rate from the
    receiver's pcap timestamps (tcpdump on b's eth0, large buffer): (n - 1) / (last - first);
    error = achieved / asked - 1. Delivered = packets captured (tcpdump drops are reported).

Each configuration runs ``--repeat`` times (senders interleaved); the table shows the best and
the median. Run as root:  .venv/bin/python bench/attack_rates.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))
from nslab import Lab, LabSpec, Link, Node  # noqa: E402 - the tests' namespace lab engine

PY = sys.executable


# --------------------------------------------------------------------------- pcap helpers
def write_pcap(path: Path, frames: list[bytes]) -> None:
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        fh.writelines(struct.pack("<IIII", 0, 0, len(f), len(f)) + f for f in frames)


def read_pcap(path: Path):
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    off, out = 24, []
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from("<IIII", data, off)
        out.append((sec + frac * scale, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return out


# --------------------------------------------------------------------------- child: fastsend
def child(args) -> None:
    from cyberrange.attack.techniques.fastsend import FastSender
    frames = [f for _t, f in read_pcap(Path(args.pcap))]
    s = FastSender(args.iface, frames, batch=args.batch)
    s.run(args.count, args.rate)
    s.close()
    print(json.dumps({"sent": s.sent, "elapsed": s.elapsed}))


# --------------------------------------------------------------------------- the lab
# b has no address: the frames are counted by the veth and dropped at IP routing (cheap, and no
# ICMP comes back)
LAB = LabSpec("bench", nodes=(Node("a", "10.97.0.1/24"), Node("b")),
              links=(Link("a", "eth0", "b", "eth0"),))


def rx_packets(lab) -> int:
    j = json.loads(lab.ip("b", "-s", "-j", "link", "show", "eth0").stdout)
    return int(j[0]["stats64"]["rx"]["packets"])


def make_frames(lab: Lab, n: int) -> list[bytes]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    return [bytes(Ether(src=lab.mac["a"], dst=lab.mac["b"]) / IP(src="10.97.0.1", dst="10.97.0.2")
                  / UDP(sport=20000 + i, dport=9) / (b"\x00" * 18)) for i in range(n)]


# --------------------------------------------------------------------------- runs
def run_fastsend(lab, pcap, count, rate, batch):
    p = lab.nsx("a", PY, str(Path(__file__).resolve()), "--child",
                "--iface", "eth0", "--pcap", str(pcap), "--count", str(count), "--rate", str(rate),
                "--batch", str(batch), cwd=ROOT)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r["sent"], r["sent"] / r["elapsed"] if r["elapsed"] > 0 else 0.0


def run_tcpreplay(lab, pcap, n_frames, count, rate):
    speed = ["--topspeed"] if rate <= 0 else [f"--pps={rate}"]
    p = lab.nsx("a", "tcpreplay", "-i", "eth0", "-K", f"--loop={count // n_frames}", *speed,
                str(pcap), check=False)
    sent = re.search(r"Successful packets:\s+(\d+)", p.stdout)
    pps = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", p.stdout)
    if not sent:
        raise RuntimeError(f"tcpreplay failed: {p.stdout}{p.stderr}")
    return int(sent.group(1)), float(pps.group(1)) if pps else 0.0


class Receiver:
    """tcpdump on b's eth0 (timestamps of the paced runs)."""

    def __init__(self, lab, name):
        self.cap = lab.capture(name, node="b", iface="eth0", snap=64, buffer_kib=131072,
                               flush=False, bpf=["udp"])

    def stop(self):
        path = self.cap.stop(settle=0.3)
        m = re.search(r"(\d+) packets dropped by kernel", self.cap.stats)
        ts = [t for t, _f in read_pcap(path)]
        rate = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        return len(ts), rate, int(m.group(1)) if m else -1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--iface", help=argparse.SUPPRESS)
    ap.add_argument("--pcap", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help="fastsend frames per sendmmsg")
    ap.add_argument("--frames", type=int, default=200, help="distinct frames (= 5-tuples)")
    ap.add_argument("--flood-count", type=int, default=1_000_000, help="frames per flood run")
    ap.add_argument("--rates", default="1000,10000,20000,50000", help="paced rates, packets/s")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each paced run")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration")
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if os.geteuid() != 0 or not shutil.which("tcpreplay") or not shutil.which("tcpdump"):
        print("needs root, tcpreplay and tcpdump", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="crt-bench-"))
    lab = Lab(LAB, tmp)
    try:
        lab.build()
        frames = make_frames(lab, args.frames)
        pcap = tmp / "frames.pcap"
        write_pcap(pcap, frames)
        count = args.flood_count // args.frames * args.frames
        # (a) flood
        flood = {"fastsend": [], "tcpreplay": []}
        for _ in range(args.repeat):
            for who in ("fastsend", "tcpreplay"):
                before = rx_packets(lab)
                if who == "fastsend":
                    sent, pps = run_fastsend(lab, pcap, count, 0, args.batch)
                else:
                    sent, pps = run_tcpreplay(lab, pcap, args.frames, count, 0)
                time.sleep(0.2)
                got = rx_packets(lab) - before
                flood[who].append((pps, sent, got))
                print(f"  flood {who:9s} {pps:12,.0f} pkt/s  sent {sent:,}  delivered {got:,}",
                      flush=True)
        # (b) paced
        paced: dict[tuple, list] = {}
        for rate in [int(r) for r in args.rates.split(",")]:
            n = max(args.frames, int(rate * args.seconds) // args.frames * args.frames)
            for _ in range(args.repeat):
                for who in ("fastsend", "tcpreplay"):
                    rx = Receiver(lab, f"rx-{who}-{rate}")
                    if who == "fastsend":
                        sent, _ = run_fastsend(lab, pcap, n, rate, args.batch)
                    else:
                        sent, _ = run_tcpreplay(lab, pcap, args.frames, n, rate)
                    got, achieved, dropped = rx.stop()
                    err = (achieved / rate - 1) * 100
                    paced.setdefault((rate, who), []).append((err, achieved, sent, got, dropped))
                    print(f"  paced {rate:6d}/s {who:9s} achieved {achieved:10,.0f}/s "
                          f"({err:+.2f}%)  sent {sent:,} captured {got:,} (tcpdump drops "
                          f"{dropped})", flush=True)
    finally:
        lab.teardown()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n(a) flood, {count:,} frames of 60 bytes, {args.frames} 5-tuples, one actor, "
          f"{args.repeat} runs")
    print(f"{'sender':10s} {'best pkt/s':>12s} {'median pkt/s':>13s} {'delivered':>10s}")
    for who, runs in flood.items():
        best = max(r[0] for r in runs)
        print(f"{who:10s} {best:12,.0f} {statistics.median(r[0] for r in runs):13,.0f} "
              f"{min(r[2] / r[1] for r in runs) * 100:9.1f}%")
    fb, tb = max(r[0] for r in flood["fastsend"]), max(r[0] for r in flood["tcpreplay"])
    print(f"fastsend / tcpreplay (best): {fb / tb:.2f}x")
    print(f"\n(b) paced accuracy, {args.seconds:g} s per run; error = achieved/asked - 1 "
          f"(receiver timestamps)")
    print(f"{'asked/s':>8s} {'sender':10s} {'best err':>9s} {'median err':>11s} "
          f"{'worst err':>10s} {'delivered':>10s}")
    for (rate, who), runs in paced.items():
        errs = [r[0] for r in runs]
        print(f"{rate:8d} {who:10s} {min(errs, key=abs):+8.2f}% "
              f"{statistics.median(errs):+10.2f}% {max(errs, key=abs):+9.2f}% "
              f"{min(r[3] / r[2] for r in runs) * 100:9.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
