"""Link emulation without netem: does the relay hold what the profiles promise, and at what cost?

    python bench/links.py [--packets 10000] [--json FILE]        (root; builds real twins)

Builds a twin of ``tests/data/good/links.yaml`` with the built-in ``satcom-geo`` profile
(550 ms, ±20 ms, 0.5 % loss, 8 Mbit/s) swapped into its ``sat`` zone, with link emulation
``relay`` (``cyberrange/twin/linkemu.py``), and measures, in the same run:

* RTT through the SATCOM zone against 2 × delay (goal: within 5 %);
* one-way loss over ``--packets`` UDP datagrams sat1 → sat2 against 0.5 % (goal: ±0.2 points
  over ≥ 10k packets);
* goodput of the 4 Mbit/s and 64 kbit/s zones with ``twin verify``'s method (goal: within 5 %),
  and, as the named baseline, the same measurement on the same twin rebuilt with link
  emulation ``shape`` (HTB only: what the twin did before the relay);
* the relay's CPU cost: CPU seconds per 1k packets relayed, and the share of one core it takes
  at 1k packets per second (a 10 s run at 1k pps through the lossy zone).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cyberrange.model.loader import load_topology  # noqa: E402
from cyberrange.model.topology import LinkProfile  # noqa: E402
from cyberrange.twin import linkcheck  # noqa: E402
from cyberrange.twin.build import Twin  # noqa: E402
from cyberrange.twin.verify import measure_bandwidth  # noqa: E402

SENDER = """
import socket, sys, time
ip, n, pps = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for i in range(n):
    s.sendto(i.to_bytes(4, 'big') + b'x' * 60, (ip, 9999))
    wait = t0 + (i + 1) / pps - time.monotonic()
    if wait > 0:
        time.sleep(wait)
print(n)
"""
RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9999)); s.settimeout(float(sys.argv[1]))
seen = set()
try:
    while True:
        seen.add(int.from_bytes(s.recv(2048)[:4], 'big'))
except OSError:
    pass
print(len(seen))
"""


def _topology():
    topo = load_topology(ROOT / "tests" / "data" / "good" / "links.yaml")
    sat = LinkProfile("satcom-geo", 8, 550, 20, 0.5)
    for node in topo.nodes.values():
        for itf in node.interfaces:
            if itf.zone == "sat":
                itf.profile = sat
    return topo, sat


def _one_way_loss(twin, topo, packets: int, pps: float) -> dict:
    dst = str(topo.nodes["sat2"].ip)
    rx = twin.popen("sat2", [sys.executable, "-c", RECEIVER, "3"], stdout=-1, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    tx = twin.run("sat1", [sys.executable, "-c", SENDER, dst, str(packets), str(pps)],
                  timeout=packets / pps + 60)
    sent = int(tx.stdout.strip() or 0)
    got = int(rx.communicate(timeout=packets / pps + 60)[0].strip() or 0)
    lost = sent - got
    lo, hi = linkcheck.wilson(lost, sent, z=1.96)
    return {"packets": sent, "received": got, "loss_pct": round(100 * lost / sent, 3),
            "ci95": [round(lo, 3), round(hi, 3)], "seconds": round(time.monotonic() - t0, 1)}


def _rtt(twin, topo, count: int) -> dict:
    dst = str(topo.nodes["sat2"].ip)
    twin.run("sat1", ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "5", dst], timeout=30)
    r = twin.run("sat1", ["ping", "-n", "-c", str(count), "-i", "0.02", "-W", "5", dst],
                 timeout=count * 0.02 + 30)
    rtts, lost = linkcheck.parse_ping(r.stdout, count)
    return {"probes": count, "rtt_ms": round(statistics.fmean(rtts), 2),
            "rtt_std_ms": round(statistics.pstdev(rtts), 2), "lost": lost}


def _cpu(twin, topo, pps: float, seconds: float) -> dict:
    stats_path = Path(twin.relay_stats)
    before = json.loads(stats_path.read_text())
    dst = str(topo.nodes["lossy2"].ip)
    twin.run("lossy1", [sys.executable, "-c", SENDER, dst, str(int(pps * seconds)), str(pps)],
             timeout=seconds + 30)
    time.sleep(2.5)                                   # the relay writes its stats every 2 s
    after = json.loads(stats_path.read_text())

    def relayed(s):
        return sum(d["received"] for d in s["directions"])
    frames = relayed(after) - relayed(before)
    cpu = after["cpu_s"] - before["cpu_s"]
    return {"pps": pps, "seconds": seconds, "frames": frames, "cpu_s": round(cpu, 3),
            "cpu_ms_per_1k_frames": round(1000 * cpu / max(1, frames) * 1000, 2),
            "core_share_at_1k_pps": round(cpu / max(1, frames) * 1000, 4)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=10_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    topo, sat = _topology()
    out: dict = {"profile": vars(sat)}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("shape", "relay"):
            twin = Twin(topo, Path(tmp) / mode, f"bench-links-{mode}", log=lambda m: None)
            twin.link_emulation = mode
            twin.start()
            try:
                res: dict = {"bandwidth": {r["zone"]: r for r in measure_bandwidth(twin)
                                           if r["zone"] in ("sat", "radio")}}
                if mode == "relay":
                    res["rtt"] = _rtt(twin, topo, 500)
                    res["loss"] = _one_way_loss(twin, topo, args.packets, 1000)
                    res["cpu"] = _cpu(twin, topo, 1000, 10)
                out[mode] = res
            finally:
                twin.stop()
    _print(out, args.packets)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


def _print(out: dict, packets: int) -> None:
    relay, shape = out["relay"], out["shape"]
    rtt = relay["rtt"]
    print(f"SATCOM RTT: {rtt['rtt_ms']} ms for {2 * 550} ms "
          f"({100 * (rtt['rtt_ms'] / 1100 - 1):+.2f} %, goal within 5 %), σ {rtt['rtt_std_ms']} ms "
          f"(expected {20 * math.sqrt(2 / 3):.1f}), {rtt['probes']} echoes")
    lo = relay["loss"]
    print(f"one-way loss: {lo['loss_pct']} % of {lo['packets']} datagrams for 0.5 % "
          f"({lo['loss_pct'] - 0.5:+.3f} points, goal ±0.2; 95 % interval {lo['ci95']})")
    print("| zone | method | expected Mbit/s | relay: measured (ratio) | shape (baseline): "
          "measured (ratio) |")
    print("|---|---|---:|---:|---:|")
    for zone in ("sat", "radio"):
        r, b = relay["bandwidth"].get(zone, {}), shape["bandwidth"].get(zone, {})
        print(f"| {zone} | {r.get('method')} | {r.get('expected_mbit')} | "
              f"{r.get('measured_mbit')} ({r.get('ratio')}) | "
              f"{b.get('measured_mbit')} ({b.get('ratio')}) |")
    c = relay["cpu"]
    print(f"relay CPU: {c['cpu_ms_per_1k_frames']} ms per 1k frames; at 1k pps it takes "
          f"{100 * c['core_share_at_1k_pps']:.1f} % of one core ({c['frames']} frames in "
          f"{c['seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())
