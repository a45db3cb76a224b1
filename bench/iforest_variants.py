"""Benchmark: flow-anomaly (iforest) setting variants on TUNING data only -- false alerts per
10k benign flows on the benign tuning splits and the steps it detects on the envelope and corpus
tuning splits (issue 15 item 7, docs/detectors/learned-calibration.md "Correlated benign
anomalies"). No twin: the detectors re-run on stored records.

    .venv/bin/python bench/iforest_variants.py SPEC.json OUT.json [benign,emul,corpus,env]

SPEC.json: {"name": {setting: value, ...}, ...}, each over flow-anomaly's settings in
detectors/learned.yaml, e.g. {"v0": {"realert": 0, "quiet_min_flows": 5}, "now": {}}. Every
variant runs on the same runs in one pass, so the rows compare (the splits may still grow).
Never point it at an evaluation split: the roots below are the tuning splits.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SPLITS = {"benign": Path("/work/runs-benign/tuning"),
          "emul": Path("/work/runs-benign-emulate/tuning"),
          "corpus": Path("/work/runs-corpus-2026-12-06/tuning"),
          "env": Path("/work/runs-envelope/tuning")}


def _detectors(spec: dict) -> list:
    import yaml

    from cyberrange.detect.iforest import IsolationForestDetector
    base = next(d for d in yaml.safe_load((ROOT / "detectors" / "learned.yaml").read_text())
                ["detectors"] if d["name"] == "flow-anomaly")["settings"]
    return [IsolationForestDetector(name, **{**base, **over}) for name, over in spec.items()]


def benign(root: Path, spec: dict) -> dict:
    """False alerts per variant, per run and per 10k benign flows (finished drills only)."""
    from benign_fa import _done

    from cyberrange.score.evaluate import evaluate
    dirs = [p for p in (_done(f) for f in sorted(root.glob("*-s*"))
                        if f.is_dir() and ".failed" not in f.name) if p]
    res = {n: {"false": 0, "flows": 0, "runs": {}} for n in spec}
    for d in dirs:
        ev = evaluate([d], _detectors(spec))
        flows = ev.totals["benign_flows"]
        for r in ev.detectors:
            x = res[r["detector"]]
            x["false"] += r["false"]
            x["flows"] += flows
            x["runs"][d.parent.name] = r["false"]
    for x in res.values():
        x["per10k"] = round(x["false"] / x["flows"] * 1e4, 2) if x["flows"] else None
    return res


def corpus(root: Path, spec: dict) -> dict:
    from cyberrange.score.evaluate import evaluate
    dirs = sorted(p for p in root.iterdir() if (p / "manifest.json").exists())
    ev = evaluate(dirs, _detectors(spec))
    return {"steps": ev.totals["steps"],
            "by": {r["detector"]: {"steps": r["steps_detected"], "false": r["false"]}
                   for r in ev.detectors}}


def envelope(root: Path, spec: dict) -> dict:
    from cyberrange.score.envelope_eval import evaluate_split
    dirs = sorted(p.parent for p in root.glob("*/envelope.json"))
    counted = [o for o in evaluate_split(dirs, _detectors(spec))["outcomes"] if o["counted"]]
    by = {}
    for n in spec:
        fam: dict = {}
        for o in counted:
            if n in o["by"]:
                fam[o["family"]] = fam.get(o["family"], 0) + 1
        by[n] = {"steps": sum(fam.values()), "by_family": fam}
    return {"runs": len(dirs), "counted": len(counted), "by": by}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    parts = sys.argv[3].split(",") if len(sys.argv) > 3 else list(SPLITS)
    out: dict = {}
    t0 = time.time()
    for part in parts:
        fn = {"benign": benign, "emul": benign, "corpus": corpus, "env": envelope}[part]
        out[part] = fn(SPLITS[part], spec)
    out["seconds"] = round(time.time() - t0)
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
    for n in spec:
        row = [n]
        for part in ("benign", "emul"):
            if part in out:
                row.append(f"{part} {out[part][n]['false']}/{out[part][n]['flows']} = "
                           f"{out[part][n]['per10k']}")
        for part in ("corpus", "env"):
            if part in out:
                row.append(f"{part} {out[part]['by'][n]['steps']}")
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
