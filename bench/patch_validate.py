"""Benchmark: static validation of a change set on a generated 5,000-node topology (no root).

The topology is ``cyberrange.model.generate.generate(N)`` (the brigade-like model of
bench/static_analysis.py, version 2 with crown jewels, entry points and mission threads). The
change set is written for it: a firewall rule on battalion 1's firewall that opens ssh from its
companies to the battalion CP (a new path towards the crown jewels), a rule replaced, a
password rotated, a software upgrade. Stages, each timed (wall clock) and, in a second run,
measured for peak Python memory (tracemalloc):

  load     the topology twice: as written, and with the change applied
  reach    both reachability matrices and their difference
  paths    both attack graphs, best paths, the edges on paths to each crown jewel
  lint     both lint runs
  checks   missions, crown jewels, moved services, behaviours, effect
  total    ``static_validate`` end to end (what ``cyberrange validate --static-only`` runs)

Usage: ``python bench/patch_validate.py [--nodes 5000] [--seed 1]``.
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyberrange.model.generate import generate
from cyberrange.patch.changeset import load_change
from cyberrange.patch.static import static_validate

CHANGE = """\
version: 1
name: bench-change
topology: {name}
description: generated for bench/patch_validate.py
changes:
  - op: add-rule
    firewall: bn1-fw
    position: 1
    rule: {{action: allow, from: [bn1-coy1, bn1-coy2], to: bn1-cp, proto: tcp, port: 22,
           comment: company admins patch the CP}}
  - op: replace-rule
    firewall: bn2-fw
    rule: 3
    with: {{action: allow, from: bn2-coy1, to: bn2-cp-c2, proto: tcp, port: 8080}}
  - {{op: set-software, node: bn1-cp-c2, name: cop-server, version: "3.1"}}
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / f"gen-{a.nodes}.yaml"
        topo.write_text(generate(a.nodes, a.seed))
        change = Path(tmp) / "change.yaml"
        change.write_text(CHANGE.format(name=f"gen-{a.nodes}"))
        cs = load_change(change)
        gc.collect()
        t0 = time.perf_counter()
        res = static_validate(topo, cs)
        total = time.perf_counter() - t0
        gc.collect()
        tracemalloc.start()
        static_validate(topo, cs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"topology: {a.nodes} nodes requested, {len(res.after.nodes)} after the change, "
              f"{len(res.after.hosts)} hosts, {len(res.after.zones)} zones; "
              f"file {topo.stat().st_size / 1e6:.2f} MB")
        print(f"cells compared: {res.cells_total:,}; changed: {len(res.cells):,} "
              f"({sum(c.kind == 'opened' for c in res.cells)} opened)")
        print(f"verdict: {res.verdict}: "
              + "; ".join(f"{c.name}: {c.reason[:90]}" for c in res.checks if c.status == "fail"))
        print("| stage | seconds |")
        print("|---|---|")
        for k, v in res.timings.items():
            print(f"| {k} | {v:.2f} |")
        print(f"| total (static_validate) | {total:.2f} |")
        print(f"peak Python memory (tracemalloc, second run): {peak / 2**20:.0f} MiB; "
              f"max RSS of the process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
