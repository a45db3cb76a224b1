"""Benchmark: static analysis of a generated 5,000-node brigade model (no root needed).

Stages, each timed (wall clock, best of ``--repeat``) and measured for peak Python memory
(tracemalloc, in a separate untimed run so tracing does not slow the timing):

  load     load_topology on the generated YAML (schema, addresses, routes)
  lint     every lint finding (cyberrange.model.lint)
  matrix   the full reachability matrix: every source zone x every service of every host + ICMP
  paths    attack graph + the 5 best paths from the entry point to the crown jewels

Baselines, named and run in the same process on the same generated models:

  B1 "naive pair loop": ``reach.allowed`` for every (source host, destination host, service or
     ICMP), the obvious way to build the same matrix. Timed on a random sample of checks of the
     500-node and of the 5,000-node model and extrapolated linearly to all checks (each check is
     timed on the real model, so its per-check cost is real; only the count is extrapolated).
  B2 "router graph APSP": ``networkx.all_pairs_shortest_path_length`` on the router graph of the
     5,000-node model (hop counts only: no hosts, no rules) as a floor for "just routing".

Usage: ``python bench/static_analysis.py [--nodes 5000] [--small 500] [--sample 3000]``.
"""
from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyberrange.model.generate import annotate, generate  # noqa: E402
from cyberrange.model.lint import lint  # noqa: E402
from cyberrange.model.loader import load_topology  # noqa: E402
from cyberrange.model.paths import attack_paths  # noqa: E402
from cyberrange.model.reach import ReachIndex, allowed, reach_matrix  # noqa: E402
from cyberrange.model.routing import router_graph  # noqa: E402


def measure(fn, repeat: int = 1):
    """(best seconds, peak MiB, result) of ``fn()``."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / 2**20, result


def checks_of(topo):
    """All (src, dst, proto, port) of the full host matrix."""
    out = []
    for s in topo.hosts:
        for d in topo.hosts:
            if s is d:
                continue
            out.append((s.name, d.ip, "icmp", None))
            out += [(s.name, d.ip, svc.proto, svc.port) for svc in d.services]
    return out


def count_checks(topo) -> int:
    h = len(topo.hosts)
    svc = sum(1 + len(n.services) for n in topo.hosts)
    return (h - 1) * svc


def naive_rate(topo, sample: int, seed: int = 1) -> float:
    """Seconds per ``reach.allowed`` check, on a random sample of the model's checks."""
    rnd = random.Random(seed)
    hosts = topo.hosts
    picks = []
    while len(picks) < sample:
        s, d = rnd.choice(hosts), rnd.choice(hosts)
        if s is d:
            continue
        opts = [("icmp", None)] + [(x.proto, x.port) for x in d.services]
        proto, port = rnd.choice(opts)
        picks.append((s.name, d.ip, proto, port))
    t0 = time.perf_counter()
    for s, d, proto, port in picks:
        allowed(topo, s, d, proto, port)
    return (time.perf_counter() - t0) / sample


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--small", type=int, default=500, help="size of the baseline's small model")
    ap.add_argument("--sample", type=int, default=3000, help="naive checks timed per model")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="cr-bench-"))
    rows = []

    def stage(name, n, fn):
        secs, mib, result = measure(fn, a.repeat)
        rows.append((name, n, secs, mib))
        return secs, result

    models = {}
    for n in (a.small, a.nodes):
        path = tmp / f"gen{n}.yaml"
        _, text = stage("generate (text)", n, lambda n=n: generate(n, a.seed))
        path.write_text(text)
        _, topo = stage("load", n, lambda p=path: load_topology(p))
        if not topo.entry_points:
            annotate(topo)                 # v1 text: set crown jewels, entry points, missions
        models[n] = topo
        _, findings = stage("lint", n, lambda t=topo: lint(t))
        secs_m, m = stage("matrix", n, lambda t=topo: reach_matrix(t))
        _, paths = stage("paths", n, lambda t=topo: attack_paths(t, k=5, index=ReachIndex(t)))
        kinds = {k: sum(1 for x in topo.nodes.values() if x.kind == k) for k in ("host", "router", "firewall")}
        print(f"model {n}: {kinds['host']} hosts, {kinds['router']} routers, {kinds['firewall']} firewalls, "
              f"{sum(1 for z in topo.zones.values() if not z.p2p)} zones, {len(topo.links)} links; "
              f"lint {len(findings)} findings; matrix {len(m.rows)} x {len(m.columns)} = "
              f"{len(m.rows) * len(m.columns):,} cells; best path {paths[0].text() if paths else '-'}",
              flush=True)

    big, small = models[a.nodes], models[a.small]
    # baselines
    rate_small = naive_rate(small, a.sample, a.seed)
    rate_big = naive_rate(big, max(200, a.sample // 5), a.seed)
    b1_small = rate_small * count_checks(small)
    b1_big = rate_big * count_checks(big)
    g = router_graph(big)
    b2, b2_mib, _ = measure(lambda: dict(nx.all_pairs_shortest_path_length(g)), a.repeat)

    print()
    print(f"{'stage':<18}{'nodes':>7}{'seconds':>11}{'peak MiB':>10}")
    for name, n, secs, mib in rows:
        print(f"{name:<18}{n:>7}{secs:>11.2f}{mib:>10.1f}")
    ours_small = next(s for nm, n, s, _ in rows if nm == "matrix" and n == a.small)
    ours_big = next(s for nm, n, s, _ in rows if nm == "matrix" and n == a.nodes)
    print()
    print("baselines (same run, same models):")
    print(f"  B1 naive pair loop (reach.allowed per host pair and service), {a.small} nodes: "
          f"{count_checks(small):,} checks x {rate_small * 1e6:.0f} us = {b1_small:,.1f} s "
          f"(extrapolated from {a.sample:,} timed checks); ours {ours_small:.2f} s, "
          f"ratio {b1_small / ours_small:,.0f}x")
    print(f"  B1 naive pair loop, {a.nodes} nodes: {count_checks(big):,} checks x "
          f"{rate_big * 1e6:.0f} us = {b1_big:,.0f} s = {b1_big / 3600:,.1f} h (extrapolated from "
          f"{max(200, a.sample // 5):,} timed checks); ours {ours_big:.2f} s, ratio {b1_big / ours_big:,.0f}x")
    print(f"  B2 networkx all_pairs_shortest_path_length on the router graph ({g.number_of_nodes()} routers), "
          f"{a.nodes} nodes: {b2:.3f} s, {b2_mib:.1f} MiB (routing hop counts only: a floor, "
          f"not the same answer); matrix / B2 = {ours_big / max(b2, 1e-9):,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
