"""Benchmark: how low can `udp-flood`'s trained floor (`min_pps`) go? (issue 15 item 2)

Tuning data only: the script refuses a folder of an evaluation split (a path part ``eval*``).

    # benign UDP per receiving host after the warm-up vs its baseline peak (the margin table)
    .venv/bin/python bench/flood_floor.py margin /work/runs-benign/tuning /work/runs-envelope/tuning
    # false alerts (benign drills) and rule recall per rate bin (envelope drills) per floor
    .venv/bin/python bench/flood_floor.py sweep --floors 30,40,50,75,100,150 \\
        --benign /work/runs-benign/tuning /work/runs-benign-emulate/tuning \\
        --envelope /work/runs-envelope/tuning

**margin.** Each finished drill's flows minus its attack flows (the ledger), the detector's own
rates (``FloodDetector._bin_rates``: per destination host, 1 s bins, max over sensors), trained
on the drill's warm-up like ``detect eval``. Per host that receives UDP after the warm-up: its
busiest second, its busiest run of ``sustain`` bins (the largest rate reached by ``sustain`` bins
no more than ``gap`` apart: what an alert needs), its baseline peak, the threshold it gets and
the margin (threshold / busiest ``sustain`` run), the destination ports of its busiest second.

**sweep.** One copy of ``udp-flood`` per floor (named ``udp-flood@F``), evaluated together:
``score.evaluate`` for false alerts over the benign folders, ``envelope_eval.evaluate_split``
over the envelope folder for recall per bin of the drawn rate (``EDGES["udp-flood"]``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_dirs(roots) -> list[Path]:
    """Finished drills under the roots (a drill folder, or one or two levels above them)."""
    out = []
    for root in map(Path, roots):
        if any(p.startswith("eval") for p in root.parts) or "runs-corpus-emulate" in str(root):
            sys.exit(f"{root}: an evaluation split -- tune on tuning data only")
        for m in sorted([root / "manifest.json", *root.glob("*/manifest.json"),
                         *root.glob("*/*/manifest.json")]):
            if m.is_file() and ".failed" not in str(m) and (m.parent / "store.duckdb").exists() \
                    and json.loads(m.read_text()).get("status") == "done":
                out.append(m.parent)
    return out


def shipped(detectors: str = str(ROOT / "detectors")):
    from cyberrange.detect.registry import load_detectors
    (d,) = [d for d in load_detectors(detectors) if d.name == "udp-flood"]
    return d


def sustained(bins: list[tuple[int, float]], k: int, gap: int) -> float:
    """The largest rate x such that >= k bins with rate >= x lie no more than ``gap`` apart."""
    for x in sorted({p for _, p in bins}, reverse=True):
        hot = sorted(b for b, p in bins if p >= x)
        n = 1
        for a, c in itertools.pairwise(hot):
            n = n + 1 if c - a <= gap else 1
            if n >= k:
                return x
        if k == 1:
            return x
    return 0.0


def margin_rows(d: Path, det) -> list[dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from cyberrange.detect.flood import is_group
    from cyberrange.detect.registry import baseline_end
    from cyberrange.run import Run
    from cyberrange.score.score import label_flows
    from cyberrange.telemetry.schema import RECORD_SCHEMAS
    run = Run.open(str(d))
    with run.open_store(read_only=True, need=("flows",)) as st:
        flows = st.read("flows", run.id, columns=list(RECORD_SCHEMAS["flows"].names))
    ledger = run.ledger()
    if ledger:
        flows = flows.filter(pa.array([s is None for s in label_flows(ledger, flows)]))
    end = baseline_end(flows, None, run.manifest.get("baseline_s") or 30,
                       run.manifest.get("baseline_end"))
    end_us = int(end.timestamp() * 1_000_000)
    ts = flows.column("@timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    det.fit(flows.filter(pc.less(ts, end_us)))
    prep = det._prepare(flows)
    if prep is None:
        return []
    sel, start, end_, pkts, byts, target, obs, labels = prep
    tgt, bins, rp, _, _ = det._bin_rates(start, end_, pkts, byts, target, obs)
    W, gap = det.window_us, max(1, -(-det.gap_us // det.window_us))
    ports = sel.column("destination.port").to_numpy(zero_copy_only=False)
    rows = []
    for t in sorted(set(tgt.tolist())):
        ser = [(int(b), float(p)) for tt, b, p in zip(tgt, bins, rp)
               if tt == t and (b + 1) * W > end_us]
        if not ser:
            continue
        b_pk, pk = max(ser, key=lambda s: s[1])
        m = (target == t) & (start < (b_pk + 1) * W) & (end_ >= b_pk * W)
        host = labels[t][0]
        thr = det._thresholds(labels[t])[0]
        run_k = sustained(ser, det.sustain, gap)
        rows.append({"run": run.id, "host": host, "peak": round(pk, 1),
                     "sustained": round(run_k, 1),
                     "baseline_peak": round(det.peaks.get(labels[t], (0.0, 0.0))[0], 1),
                     "threshold": thr, "margin": round(thr / run_k, 1) if run_k else None,
                     "group": is_group(host),
                     "ports": sorted({int(p) for p in ports[m]})})
    return rows


def margin(roots) -> list[dict]:
    rows = []
    for d in run_dirs(roots):
        rows += margin_rows(d, shipped())
    print(f"{'run':40} {'host':16} {'peak/s':>7} {'2 s':>6} {'base':>6} {'thr':>6} "
          f"{'margin':>6}  ports")
    for r in sorted(rows, key=lambda r: -r["peak"]):
        print(f"{r['run']:40} {r['host']:16} {r['peak']:7.1f} {r['sustained']:6.1f} "
              f"{r['baseline_peak']:6.1f} {r['threshold']:6g} {r['margin'] or 0:6.1f}  "
              f"{','.join(map(str, r['ports']))}")
    quiet = sum(r["baseline_peak"] == 0 for r in rows)
    print(f"{len(rows)} receivers in {len({r['run'] for r in rows})} drills; busiest second "
          f"{max((r['peak'] for r in rows), default=0)}/s, busiest sustained "
          f"{max((r['sustained'] for r in rows), default=0)}/s; {quiet} with a quiet baseline")
    return rows


def variants(floors):
    from cyberrange.detect.flood import FloodDetector
    base = shipped()
    return [FloodDetector(f"udp-flood@{f:g}", **{**base.settings, "min_pps": f}) for f in floors]


def sweep(floors, benign, envelope) -> dict:
    from cyberrange.score.envelope_eval import EDGES, evaluate_split
    from cyberrange.score.evaluate import evaluate
    out = {"floors": floors, "false": {}, "recall": {}}
    for root in benign:
        ev = evaluate(run_dirs([root]), variants(floors))
        out["false"][str(root)] = {"benign_flows": ev.totals["benign_flows"],
                                   **{r["detector"]: r["false"] for r in ev.detectors}}
    if envelope:
        dirs = run_dirs(envelope)
        ev = evaluate(dirs, variants(floors))
        out["false"]["envelope"] = {"benign_flows": ev.totals["benign_flows"],
                                    **{r["detector"]: r["false"] for r in ev.detectors}}
        res = evaluate_split(dirs, variants(floors))
        steps = [o for o in res["outcomes"] if o["family"] == "udp-flood" and o["counted"]]
        edges = EDGES["udp-flood"] + [float("inf")]
        for f in floors:
            name, row = f"udp-flood@{f:g}", []
            for lo, hi in itertools.pairwise(edges):
                inb = [o for o in steps if lo <= o["params"]["pps"] < hi]
                row.append({"lo": lo, "hi": hi, "steps": len(inb),
                            "detected": sum(name in o["by"] for o in inb)})
            out["recall"][name] = row
    for where, r in out["false"].items():
        print(f"false alerts, {where} ({r['benign_flows']:,} benign flows): "
              + ", ".join(f"{k}: {v}" for k, v in r.items() if k != "benign_flows"))
    for name, row in out["recall"].items():
        print(f"{name:14} " + "  ".join(f"[{b['lo']:g}, {b['hi']:g}): {b['detected']}/{b['steps']}"
                                        for b in row))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    m = sub.add_parser("margin")
    m.add_argument("roots", nargs="+")
    s = sub.add_parser("sweep")
    s.add_argument("--floors", default="30,40,50,75,100,150")
    s.add_argument("--benign", nargs="*", default=[])
    s.add_argument("--envelope", nargs="*", default=[])
    for p in (m, s):
        p.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)
    if a.action == "margin":
        res = margin(a.roots)
    else:
        res = sweep([float(f) for f in a.floors.split(",")], a.benign, a.envelope)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
