"""Benchmark: boot + teardown time and memory of a twin at 200, 500 and 1,000 nodes, against
`mn`, and of every shipped topology (the fixed cost a drill pays).

Baseline (same run, same machine): Mininet's own `mn` command building a tree of the same
number of hosts with Linux bridges and no controller, started and stopped:
    mn --topo tree,depth=2,fanout=F --switch lxbr --controller none --test none
(`mn`'s fastest configuration for this: no controller, kernel bridges, no test traffic).
Ours: a topology of Z zones (one bridge each) of H hosts behind one core router, built by
cyberrange.twin.build.Twin (addresses, routes, HTB shaping on every port, IPv6 off) and torn
down. Memory = the drop in the machine's MemAvailable at the twin's peak (kernel objects and
processes together), sampled every 50 ms; both sides are measured the same way.

Run as root:  .venv/bin/python bench/twin_scale.py [--sizes 200,500,1000] [--ours-only 5000]
Goals (issue 12): ours/mn <= 0.2 at 200, 500 and 1,000 nodes; 1,000 nodes < 5 s; 5,000 nodes
boot; teardown < 0.5 s + 1 ms per node.
Refuses to run `mn` while any other Mininet network is up: if `mn` hits an exception it runs
its global clean-up, which would kill other Mininet networks on the machine.
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cyberrange.model.topology import Interface, LinkProfile, Node, Topology, Zone  # noqa: E402
from cyberrange.twin.build import Twin  # noqa: E402
from cyberrange.twin.state import leftovers  # noqa: E402


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


class MemPeak:
    """Samples MemAvailable while a block runs; .used_mb = baseline - minimum."""

    def __enter__(self):
        self.base = mem_available_kb()
        self.low = self.base
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop.wait(0.05):
            self.low = min(self.low, mem_available_kb())

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        self.used_mb = (self.base - self.low) / 1024


def topology(n_nodes: int) -> Topology:
    per_zone = 49
    zones = max(1, math.ceil((n_nodes - 1) / per_zone))
    t = Topology(name=f"scale{n_nodes}", classification="SECRET")
    lan = LinkProfile("lan", 100)
    core = Node("core", "router", "router")
    made = 0
    for z in range(zones):
        net = ipaddress.ip_network(f"10.{100 + z // 200}.{z % 200}.0/24")
        t.zones[f"z{z}"] = Zone(f"z{z}", net, "SECRET", profile=lan)
        core.interfaces.append(Interface(f"z{z}", net[1], 24, z, lan))
        for h in range(per_zone):
            if made >= n_nodes - 1:
                break
            name = f"h{z}-{h}"
            t.nodes[name] = Node(name, "host", "workstation",
                                 [Interface(f"z{z}", net[10 + h], 24, 0, lan)], gateway=net[1])
            made += 1
    t.nodes["core"] = core
    return t


def run_ours(n: int) -> dict:
    topo = topology(n)
    with tempfile.TemporaryDirectory() as d, MemPeak() as mem:
        twin = Twin(topo, Path(d), f"bench{n}", log=lambda m: None)
        t0 = time.monotonic()
        twin.start()
        up = time.monotonic() - t0
        ok = twin.run(topo.hosts[0].name, ["ping", "-c1", "-W1", str(topo.hosts[-1].ip)]).returncode == 0
        t1 = time.monotonic()
        twin.stop()
        down = time.monotonic() - t1
    assert not any(leftovers(twin.state.prefix).values())
    return {"nodes": len(topo.nodes), "up_s": up, "down_s": down, "total_s": up + down,
            "mem_mb": mem.used_mb, "ping": ok, "stages": twin.timings}


def run_mn(n_hosts: int) -> dict:
    if leftovers()["processes"] or re.search(r"mininet:", subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout):
        return {"skipped": "another Mininet network is up; `mn` could clean it up on error"}
    fanout = math.ceil(math.sqrt(n_hosts))
    cmd = ["mn", "--topo", f"tree,depth=2,fanout={fanout}", "--switch", "lxbr",
           "--controller", "none", "--test", "none"]
    with MemPeak() as mem:
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True)
        total = time.monotonic() - t0
    m = re.search(r"completed in ([\d.]+) seconds", r.stderr + r.stdout)
    return {"hosts": fanout * fanout, "switches": fanout + 1, "total_s": total,
            "mn_reported_s": float(m.group(1)) if m else None, "mem_mb": mem.used_mb,
            "rc": r.returncode, "cmd": " ".join(cmd)}


def run_shipped() -> list[dict]:
    """Boot + teardown of every shipped topology (services and sensors included)."""
    from cyberrange.model.loader import load_topology
    rows = []
    for path in sorted((Path(__file__).resolve().parent.parent / "topologies").glob("*.yaml")):
        topo = load_topology(path)
        with tempfile.TemporaryDirectory() as d:
            twin = Twin(topo, Path(d), f"bench-{topo.name}", log=lambda m: None)
            t0 = time.monotonic()
            twin.start()
            up = time.monotonic() - t0
            t1 = time.monotonic()
            twin.stop()
            down = time.monotonic() - t1
        rows.append({"topology": topo.name, "nodes": len(topo.nodes), "up_s": up, "down_s": down,
                     "stages": twin.timings})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,500,1000", help="sizes measured against mn")
    ap.add_argument("--ours-only", default="", help="sizes measured without mn (e.g. 5000)")
    ap.add_argument("--no-shipped", action="store_true", help="skip the shipped topologies")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/twin_scale.py: run as root")
    rows = []
    sizes = [(int(x), True) for x in args.sizes.split(",") if x] + \
            [(int(x), False) for x in args.ours_only.split(",") if x]
    for n, with_mn in sizes:
        base = run_mn(n) if with_mn else {"skipped": "not run (--ours-only)"}
        ours = run_ours(n)
        rows.append((n, ours, base))
        print(f"n={n}: ours {ours['total_s']:.2f} s ({ours['up_s']:.2f} up + "
              f"{ours['down_s']:.3f} down), {ours['mem_mb']:.0f} MB, stages {ours['stages']}; "
              f"mn {base}", flush=True)
    print()
    print(f"{'nodes':>6} | {'ours up+down':>12} | {'teardown':>8} | {'goal down':>9} | "
          f"{'mn (baseline)':>13} | {'ours/mn':>7} | {'mem ours':>8} | {'mem mn':>7}")
    print("-" * 92)
    for n, ours, base in rows:
        goal = 0.5 + 0.001 * n
        mn = "skipped" if "skipped" in base else f"{base['total_s']:.1f} s"
        ratio = "—" if "skipped" in base else f"{ours['total_s'] / base['total_s']:.3f}"
        mem_mn = "—" if "skipped" in base else f"{base['mem_mb']:.0f} MB"
        print(f"{n:>6} | {ours['total_s']:>10.2f} s | {ours['down_s']:>6.3f} s | {goal:>7.2f} s | "
              f"{mn:>13} | {ratio:>7} | {ours['mem_mb']:>5.0f} MB | {mem_mn:>7}")
    print("\nours: hosts + 1 router, one bridge per 49 hosts, addresses, routes, HTB on every port;"
          "\nmn: tree,depth=2 of the same host count, lxbr, no controller, no addresses beyond mn's.")
    if not args.no_shipped:
        print(f"\n{'shipped topology':>18} | {'nodes':>5} | {'up':>7} | {'down':>7} | stages (s)")
        print("-" * 90)
        for r in run_shipped():
            st = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
            print(f"{r['topology']:>18} | {r['nodes']:>5} | {r['up_s']:>5.2f} s | "
                  f"{r['down_s']:>5.2f} s | {st}")


if __name__ == "__main__":
    main()
