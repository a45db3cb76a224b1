"""Benchmark: flood and paced sending rates of fastsend against tcpreplay on the SAME packets.

Lab (made here, removed at the end): two namespaces ``crt-<id>-a`` and ``crt-<id>-b`` joined by
one veth pair; nothing in the root namespace. The packets: N distinct 60-byte UDP frames from a
to b's MAC (N source ports), written to one pcap. Both senders run inside ``crt-<id>-a``:

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
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


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
class Lab:
    def __init__(self):
        self.id = secrets.token_hex(3)
        self.a, self.b = f"crt-{self.id}-a", f"crt-{self.id}-b"

    def build(self):
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", self.a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", self.b)
        sh("ip", "-n", self.a, "addr", "add", "10.97.0.1/24", "dev", "eth0")
        # b has no address: the frames are counted by the veth and dropped at IP routing
        # (cheap, and no ICMP comes back)
        for ns in (self.a, self.b):
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.mac_a = sh("ip", "netns", "exec", self.a, "cat", "/sys/class/net/eth0/address").stdout.strip()
        self.mac_b = sh("ip", "netns", "exec", self.b, "cat", "/sys/class/net/eth0/address").stdout.strip()

    def rx_packets(self) -> int:
        j = json.loads(sh("ip", "-n", self.b, "-s", "-j", "link", "show", "eth0").stdout)
        return int(j[0]["stats64"]["rx"]["packets"])

    def teardown(self):
        for ns in (self.a, self.b):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)


def make_frames(lab: Lab, n: int) -> list[bytes]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    return [bytes(Ether(src=lab.mac_a, dst=lab.mac_b) / IP(src="10.97.0.1", dst="10.97.0.2")
                  / UDP(sport=20000 + i, dport=9) / (b"\x00" * 18)) for i in range(n)]


# --------------------------------------------------------------------------- runs
def run_fastsend(lab, pcap, count, rate, batch):
    p = sh("ip", "netns", "exec", lab.a, PY, str(Path(__file__).resolve()), "--child",
           "--iface", "eth0", "--pcap", str(pcap), "--count", str(count), "--rate", str(rate),
           "--batch", str(batch), cwd=ROOT)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r["sent"], r["sent"] / r["elapsed"] if r["elapsed"] > 0 else 0.0


def run_tcpreplay(lab, pcap, n_frames, count, rate):
    speed = ["--topspeed"] if rate <= 0 else [f"--pps={rate}"]
    p = sh("ip", "netns", "exec", lab.a, "tcpreplay", "-i", "eth0", "-K",
           f"--loop={count // n_frames}", *speed, str(pcap), check=False)
    sent = re.search(r"Successful packets:\s+(\d+)", p.stdout)
    pps = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", p.stdout)
    if not sent:
        raise RuntimeError(f"tcpreplay failed: {p.stdout}{p.stderr}")
    return int(sent.group(1)), float(pps.group(1)) if pps else 0.0


class Receiver:
    """tcpdump on b's eth0 (timestamps of the paced runs)."""

    def __init__(self, lab, path):
        self.path = path
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.b, "tcpdump", "-i", "eth0", "-n",
                                   "-B", "131072", "-s", "64", "--immediate-mode", "-Z", "root",
                                   "-w", str(path),
                                   "udp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        assert "listening" in self.p.stderr.readline()

    def stop(self):
        time.sleep(0.3)
        self.p.send_signal(signal.SIGINT)
        err = self.p.stderr.read()
        self.p.wait(10)
        m = re.search(r"(\d+) packets dropped by kernel", err)
        ts = [t for t, _f in read_pcap(self.path)]
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
    lab = Lab()
    tmp = Path(tempfile.mkdtemp(prefix="crt-bench-"))
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
                before = lab.rx_packets()
                if who == "fastsend":
                    sent, pps = run_fastsend(lab, pcap, count, 0, args.batch)
                else:
                    sent, pps = run_tcpreplay(lab, pcap, args.frames, count, 0)
                time.sleep(0.2)
                got = lab.rx_packets() - before
                flood[who].append((pps, sent, got))
                print(f"  flood {who:9s} {pps:12,.0f} pkt/s  sent {sent:,}  delivered {got:,}",
                      flush=True)
        # (b) paced
        paced: dict[tuple, list] = {}
        for rate in [int(r) for r in args.rates.split(",")]:
            n = max(args.frames, int(rate * args.seconds) // args.frames * args.frames)
            for _ in range(args.repeat):
                for who in ("fastsend", "tcpreplay"):
                    rx = Receiver(lab, tmp / f"rx-{who}-{rate}.pcap")
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
