"""Benchmark: the highest packet rate one span sensor captures with zero loss.

Lab: the reach-test twin (``tests/data/good/reach.yaml``) with one span sensor on the users zone
(built and torn down here; traffic stays inside it). ``user1`` sends paced UDP frames to ``user2``
with the attack library's sender (``cyberrange.attack.techniques.fastsend.FastSender``: one
AF_PACKET socket, sendmmsg batches, absolute schedule) at each rate of ``--rates`` for
``--seconds`` s; each rate uses its own UDP source port. After each rate tcpdump's counters are
sampled (SIGUSR1), and at the end the pcap is walked and the frames of every source port counted.

A rate is **zero loss** when frames in the pcap == frames sent and the kernel dropped nothing
during that rate. The table shows, per rate: sent, achieved send rate, captured, kernel drops,
verdict; the last line the highest zero-loss rate actually achieved by the sender (the target is
20k packets/s sustained). Exit status 0 when that is at least 20k packets/s.

Run as root:  .venv/bin/python bench/sensor_loss.py [--rates 20000,40000,...] [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable

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
s = FastSender(a["iface"], [eth + ip + udp], batch=64)
s.run(a["count"], a["rate"])
print(json.dumps({"sent": s.sent, "elapsed": s.elapsed, "errors": s.errors}))
"""


def count_by_sport(pcap: Path, smac: bytes) -> dict[int, int]:
    """Frames from ``smac`` per UDP source port (a plain walk over the records)."""
    data = pcap.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    rec = struct.Struct(endian + "IIII").unpack_from
    out: dict[int, int] = {}
    off, n = 24, len(data)
    while off + 16 <= n:
        caplen = rec(data, off)[2]
        f = off + 16
        if data[f + 6:f + 12] == smac and data[f + 12:f + 14] == b"\x08\x00" and data[f + 23] == 17:
            sport = int.from_bytes(data[f + 34:f + 36], "big")
            out[sport] = out.get(sport, 0) + 1
        off = f + caplen
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="20000,30000,40000,60000,80000,100000",
                    help="comma-separated packets/s, tried in order")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per rate")
    ap.add_argument("--buffer-kib", type=int, default=None, help="tcpdump -B (default: the sensors')")
    ap.add_argument("--stop-at-loss", action="store_true", help="stop after the first lossy rate")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    from cyberrange.model.loader import load_topology
    from cyberrange.model.topology import Sensor
    from cyberrange.twin import sensors as sensors_mod
    from cyberrange.twin.build import Twin
    if args.buffer_kib:
        sensors_mod.BUFFER_KIB = args.buffer_kib
    topo = load_topology(ROOT / "tests" / "data" / "good" / "reach.yaml")
    topo.sensors = {"users-span": Sensor("users-span", zone="users")}
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="cr-sensor-loss-") as tmp:
        twin = Twin(topo, Path(tmp), "bench-sensor-loss", log=lambda m: None)
        twin.start()
        try:
            src, dst = topo.nodes["user1"].interfaces[0], topo.nodes["user2"].interfaces[0]
            smac = twin.port_key_mac[("user1", twin._key(src))]
            base = {"iface": twin.intf[("user1", twin._key(src))], "src": str(src.ip),
                    "dst": str(dst.ip), "smac": smac,
                    "dmac": twin.port_key_mac[("user2", twin._key(dst))]}
            time.sleep(0.5)
            before = twin.sensors.sample("users-span")
            for k, rate in enumerate(rates):
                count = int(rate * args.seconds)
                a = dict(base, sport=41000 + k, count=count, rate=rate)
                r = twin.run("user1", [PY, "-c", SENDER, json.dumps(a)], timeout=args.seconds * 4 + 30,
                             cwd=str(ROOT))
                if r.returncode:
                    raise SystemExit(f"sender failed: {r.stderr.strip()[-500:]}")
                out = json.loads(r.stdout)
                time.sleep(1.5)                     # the last ring block reaches tcpdump
                after = twin.sensors.sample("users-span")
                drops = (after.get("dropped_by_kernel") or 0) - (before.get("dropped_by_kernel") or 0)
                before = after
                results.append({"rate": rate, "sent": out["sent"],
                                "achieved_pps": round(out["sent"] / out["elapsed"]) if out["elapsed"] else None,
                                "send_errors": out["errors"], "kernel_drops": drops, "sport": a["sport"]})
                print(f"  {rate:>7} pk/s: sent {out['sent']} in {out['elapsed']:.2f} s, "
                      f"kernel drops so far this rate {drops}", file=sys.stderr)
                if args.stop_at_loss and drops:
                    break
            stats = twin.stop_sensors()
        finally:
            twin.stop()
        counts = count_by_sport(Path(tmp) / "pcaps" / "users-span.pcap",
                                bytes.fromhex(smac.replace(":", "")))
    for r in results:
        r["captured"] = counts.get(r.pop("sport"), 0)
        r["zero_loss"] = r["captured"] == r["sent"] and r["kernel_drops"] == 0
    # "sustained" is what the sender achieved, not what was asked (on 2 cores the sender, the
    # softirq and tcpdump share the CPUs, and the sender tops out before the sensor does)
    ok = [r["achieved_pps"] or 0 for r in results if r["zero_loss"]]
    best = max(ok) if ok else None
    summary = {"results": results, "highest_zero_loss_pps": best, "seconds": args.seconds,
               "tcpdump": {k: stats["users-span"].get(k) for k in
                           ("captured", "received_by_filter", "dropped_by_kernel")}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'rate/s':>8} {'sent':>9} {'achieved/s':>11} {'captured':>9} {'drops':>6}  verdict")
        for r in results:
            print(f"{r['rate']:>8} {r['sent']:>9} {r['achieved_pps'] or 0:>11} {r['captured']:>9} "
                  f"{r['kernel_drops']:>6}  {'zero loss' if r['zero_loss'] else 'LOSS'}")
        print(f"highest zero-loss rate (achieved): {best} packets/s for {args.seconds:g} s "
              f"(target 20000); tcpdump totals {summary['tcpdump']}")
    return 0 if best and best >= 20000 else 1


if __name__ == "__main__":
    sys.exit(main())
