"""Benchmark: what one blue action costs on a 200-node twin (issue 14: "the cost of one
block/isolate on a 200-node twin").

The twin: 4 zones of 50 hosts behind one firewall (``default: allow``, no rules), 201
namespaces, one span sensor per zone, built from a generated topology file in a run folder
(as ``cyberrange up`` does). Measured, each over N actions (default 50), apply and revert
separately, median and p95 of the wall time of the library call made by the twin's owner
(``cyberrange.blue.actions.apply``/``revert`` with the ``Twin``: what the automated response
pays), and of the kernel change alone (the record's ``applied_s``: the one ``nft -f``):

- block at the port: ``--src hZ-K --dst hZ'-0 --proto tcp --port 80 --at port`` (a base chain
  in the switch namespace's ``bridge cyberrange_blue`` table);
- isolate: ``hZ-K --allow hZ'-0`` (six rules at the node's switch port);
- block at the firewall: the same block ``--at firewall`` (``inet cyberrange_blue`` in the
  firewall's namespace).

Baseline, same run, same twin: the block's rule applied the plain way,
``ip netns exec <prefix>sw nft add rule bridge ...`` into a chain made once beforehand, and
removed with ``ip netns exec ... nft delete rule ... handle H`` (no checks, no log, no
atomic chain per action). A second-terminal row times the CLI (``cyberrange blue block`` +
``unblock`` as processes: interpreter start, attaching, loading the model) over fewer runs.

Run as root:  .venv/bin/python bench/blue_actions.py [--actions 50] [--cli 10]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ZONES, HOSTS = 4, 50


def topology_text() -> str:
    lines = ["version: 1", "name: blue-bench-200", "classification: UNCLASSIFIED",
             "zones:"]
    lines += [f"  z{z}: {{subnet: 10.{120 + z}.0.0/24}}" for z in range(ZONES)]
    lines += ["nodes:", "  - name: fw", "    kind: firewall", "    default: allow",
              "    interfaces: [" + ", ".join(f"{{zone: z{z}}}" for z in range(ZONES)) + "]"]
    lines += [f"  - {{name: h{z}-{k}, kind: host, zone: z{z}}}"
              for z in range(ZONES) for k in range(HOSTS)]
    lines += ["benign: {enabled: false}"]
    return "\n".join(lines) + "\n"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def ms(values: list[float]) -> tuple[str, str]:
    return f"{statistics.median(values) * 1000:.1f}", f"{pct(values, 0.95) * 1000:.1f}"


def bench_action(twin, action: str, params_of, n: int) -> dict:
    """``n`` apply + revert pairs of one action kind; wall and kernel times."""
    from cyberrange.blue.actions import apply, revert
    out = {"apply": [], "revert": [], "kernel": [], "kernel_revert": []}
    for i in range(n):
        t0 = time.perf_counter()
        rec = apply(twin, action, params_of(i), actor="bench")
        t1 = time.perf_counter()
        assert rec["result"] == "applied", rec
        undo = revert(twin, rec["id"], actor="bench")
        t2 = time.perf_counter()
        assert undo["result"] == "applied", undo
        out["apply"].append(t1 - t0)
        out["revert"].append(t2 - t1)
        out["kernel"].append(rec["applied_s"])
        out["kernel_revert"].append(undo["applied_s"])
    return out


def bench_baseline(twin, n: int) -> dict:
    """The same drop rule with plain ``ip netns exec NS nft add rule`` / ``delete rule``."""
    ns = twin.sw_ns
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
                   input="add table bridge bench\nadd chain bridge bench c { type filter hook "
                         "forward priority filter; policy accept; }\n")
    out = {"apply": [], "revert": []}
    try:
        for i in range(n):
            src, dst = _pair(i)
            port = twin.port[(src, 0)]
            rule = (f'iifname {{ "{port}" }} ip saddr {_ip(src)} ip daddr {_ip(dst)} '
                    f"tcp dport {{ 80 }} drop")
            t0 = time.perf_counter()
            r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-e", "-a", "add", "rule",
                                "bridge", "bench", "c", *rule.split()],
                               capture_output=True, text=True, check=True)
            t1 = time.perf_counter()
            handle = r.stdout.rsplit("# handle", 1)[1].strip()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "rule", "bridge",
                            "bench", "c", "handle", handle], check=True)
            t2 = time.perf_counter()
            out["apply"].append(t1 - t0)
            out["revert"].append(t2 - t1)
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "bridge", "bench"])
    return out


def bench_cli(twin, n: int) -> dict:
    out = {"apply": [], "revert": []}
    cmd = [sys.executable, "-m", "cyberrange.cli.main", "blue"]
    for i in range(n):
        src, dst = _pair(i)
        t0 = time.perf_counter()
        r = subprocess.run(cmd + ["block", "--src", src, "--dst", dst, "--proto", "tcp",
                                  "--port", "80", "--twin", twin.state.prefix, "--json"],
                           capture_output=True, text=True, cwd=ROOT)
        t1 = time.perf_counter()
        assert r.returncode == 0, r.stderr
        aid = r.stdout.split('"id": "')[1].split('"')[0]
        r = subprocess.run(cmd + ["unblock", aid, "--twin", twin.state.prefix],
                           capture_output=True, text=True, cwd=ROOT)
        t2 = time.perf_counter()
        assert r.returncode == 0, r.stderr
        out["apply"].append(t1 - t0)
        out["revert"].append(t2 - t1)
    return out


def _pair(i: int) -> tuple[str, str]:
    z = i % ZONES
    return f"h{z}-{1 + i % (HOSTS - 1)}", f"h{(z + 1) % ZONES}-0"


_IPS: dict[str, str] = {}


def _ip(node: str) -> str:
    return _IPS[node]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=50, help="apply+revert pairs per action")
    ap.add_argument("--cli", type=int, default=10, help="CLI block+unblock pairs (0: none)")
    args = ap.parse_args()
    from cyberrange.model.loader import load_topology
    from cyberrange.run import Run
    from cyberrange.session import TwinSession
    from cyberrange.twin.build import Twin
    from cyberrange.twin.state import leftovers
    tmp = Path(tempfile.mkdtemp(prefix="blue-bench-"))
    topo_file = tmp / "blue-bench-200.yaml"
    topo_file.write_text(topology_text())
    topo = load_topology(topo_file)
    _IPS.update({n.name: str(n.ip) for n in topo.nodes.values()})
    run = Run.create(tmp / "runs", "blue-bench", {"topology": str(topo_file)})
    run.manifest.update(kind="twin", topology=topo.name)
    run.save()
    twin = Twin(topo, run.dir, run.id, log=lambda m: None)
    n = args.actions
    rows = []
    t_boot = time.perf_counter()
    with TwinSession(run, twin) as session:
        session.start()
        boot = time.perf_counter() - t_boot
        bench_action(twin, "block", lambda i: {"src": _pair(i)[0], "dst": _pair(i)[1]}, 3)
        results = {
            "block --at port": bench_action(twin, "block", lambda i: {
                "src": _pair(i)[0], "dst": _pair(i)[1], "proto": "tcp", "port": 80}, n),
            "isolate": bench_action(twin, "isolate", lambda i: {
                "node": _pair(i)[0], "allow": [_pair(i)[1]]}, n),
            "block --at firewall": bench_action(twin, "block", lambda i: {
                "src": _pair(i)[0], "dst": _pair(i)[1], "proto": "tcp", "port": 80,
                "at": "firewall"}, n),
            "baseline: ip netns exec nft add rule": bench_baseline(twin, n),
        }
        if args.cli:
            results["CLI: cyberrange blue block / unblock"] = bench_cli(twin, args.cli)
    run.finish("done")
    left = leftovers(twin.state.prefix)
    for name, r in results.items():
        count = len(r["apply"])
        kernel = ms(r["kernel"]) if r.get("kernel") else ("-", "-")
        kernel_r = ms(r["kernel_revert"]) if r.get("kernel_revert") else ("-", "-")
        rows.append((name, count, *ms(r["apply"]), *ms(r["revert"]), *kernel, *kernel_r))
    print(f"\nblue actions on a {len(topo.nodes)}-node twin ({ZONES} zones x {HOSTS} hosts "
          f"behind one firewall; boot {boot:.1f} s; {n} actions per row)")
    head = ("action", "n", "apply med ms", "apply p95", "revert med ms", "revert p95",
            "nft apply med", "nft apply p95", "nft revert med", "nft revert p95")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                        for i, (v, w) in enumerate(zip(row, widths))))
    print("leftovers after teardown:", "none" if not any(left.values()) else left)


if __name__ == "__main__":
    main()
