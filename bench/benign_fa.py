"""Benchmark: false alerts per 10k benign flows of EVERY detector instance, on a benign corpus
with a tuning split and a separate evaluation split.

    # 1. build the benign-only drills (needs root; one at a time under /tmp/cr-twin.lock, or
    #    under a slot wrapper that the caller holds: --lock '')
    .venv/bin/python bench/benign_fa.py build --split tuning
    .venv/bin/python bench/benign_fa.py build --split eval
    twinslot timeout 900 .venv/bin/python bench/benign_fa.py build --split tuning --only fob --lock ''
    # 2. measure (no twin: re-runs the detectors on the stored records)
    .venv/bin/python bench/benign_fa.py measure --split tuning --json out.json

**Corpus.** Every shipped topology (``topologies/*.yaml``) gets benign-only drills (``drill run
TOPOLOGY --duration S --intensity I --seed N --warmup W``, no playbook) into
``RUNS/<split>/<topology>-s<seed>/`` (default ``RUNS`` = ``/work/runs-benign``, outside the
repository). The two splits use disjoint seeds (``SEEDS``; tuning has two rounds of 100 s
drills, seeds 1000-1005 and 1100-1105, evaluation one round of 200 s, 2000-2005): the benign traffic of the evaluation
drills is drawn independently of the tuning drills'. Tune detector settings on ``tuning`` only;
``eval`` is read once, to report. ``build`` is resumable: a drill whose folder already holds a
finished run (manifest status ``done``) is skipped; an unfinished one is moved aside
(``*.failed``) and built again. Each drill takes the lock on its own (``flock``), so another
user of the twin can take turns between drills.

**Plan.** Long drills at high intensity: a drill costs ~10-15 s of build, capture parsing,
detection and teardown whatever its length, plus its warm-up, and the benign flow rate grows
with ``--intensity`` (measured: fob at intensity 4, 2,570 benign flows in 120 s; at 5, air_base
~16 and brigade ~30 flows/s). ``PLAN`` sizes each split from those rates: eval = 6 x (30 s +
200 s) ~ 25 min of twin time for >= 20,000 benign flows after the warm-ups.

**Measure.** ``cyberrange.score.evaluate`` over the split's runs: the detectors re-run on each
run's stored records, trainable ones learn from the run's own warm-up (its first ``W``
seconds), and the warm-up is left out of the count for every detector. Benign flows are
deduplicated (community id + start second). Prints one row per detector instance: false alerts,
benign flows behind them, false alerts per 10k, the goal (rule and statistical: 0; learned:
their ``false_alert_target``) and whether it is met; ``--json`` also writes per-run rows.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = Path("/work/runs-benign")
LOCK = "/tmp/cr-twin.lock"
WARMUP = 30                       # s: the learned detectors' baseline in every drill
#: first seed of each split; round r of a split gives its i-th topology the seed
#: SEEDS[split] + 100 * r + i (disjoint ranges: tuning 1000-1999, eval 2000-2999, eval2 3000-3999).
#: eval2 is a second, fresh evaluation split (2026-12-06, session 24), built with the default link
#: emulation (real delay): eval had been read after the session-23 detector changes, so a change
#: tuned after that is measured on eval2, which nobody looked at before the change was final.
#: eval3 (seeds 4000-4005, session 26): eval2 had been read three times by then; the beacon
#: change of session 26 is measured on eval3, built before that change was final.
SEEDS = {"tuning": 1000, "eval": 2000, "eval2": 3000, "eval3": 4000}
TOPOLOGIES = ["air_base", "brigade", "coalition_mpe", "fob", "logistics_depot", "naval_vessel"]
#: split -> (duration s, intensity, rounds: drills per topology). eval: >= 20,000 benign flows
#: after the warm-ups over the 6 topologies in ~25 min of twin time; tuning: 2 rounds of 100 s
#: (~12,000 flows a round), so that tuning sees as many benign flows as the evaluation.
PLAN = {"tuning": (100, 5, 2), "eval": (200, 5, 1), "eval2": (200, 5, 1), "eval3": (200, 5, 1)}


def drills(split: str) -> list[dict]:
    duration, intensity, rounds = PLAN[split]
    return [{"topology": topo, "seed": SEEDS[split] + 100 * r + i, "duration": duration,
             "intensity": intensity, "warmup": WARMUP}
            for r in range(rounds) for i, topo in enumerate(TOPOLOGIES)]


def _done(folder: Path) -> Path | None:
    for m in sorted(folder.glob("*/manifest.json")):
        if json.loads(m.read_text()).get("status") == "done":
            return m.parent
    return None


def build(split: str, runs: Path, python: str, only: list[str] | None,
          lock: str = LOCK) -> int:
    failed = 0
    for d in drills(split):
        if only and d["topology"] not in only:
            continue
        folder = runs / split / f"{d['topology']}-s{d['seed']}"
        if _done(folder):
            print(f"{folder.name}: done, skipped", flush=True)
            continue
        if folder.exists():                          # an unfinished attempt: keep it aside
            aside = folder.with_name(f"{folder.name}.failed-{int(time.time())}")
            folder.rename(aside)
        folder.mkdir(parents=True)
        timeout = int(d["warmup"] + d["duration"] + 300)
        # lock "" = the caller already holds a twin slot (e.g. runs this under a slot wrapper)
        cmd = (["flock", lock] if lock else []) + [
               "timeout", str(timeout), python, "-m", "cyberrange.cli.main",
               "drill", "run", str(ROOT / "topologies" / f"{d['topology']}.yaml"),
               "--duration", str(d["duration"]), "--intensity", str(d["intensity"]),
               "--seed", str(d["seed"]), "--warmup", str(d["warmup"]),
               "--runs-dir", str(folder), "--json"]
        t0 = time.time()
        r = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True)
        (folder / "drill.log").write_text(r.stdout + r.stderr)
        took = time.time() - t0
        ok = r.returncode == 0 and _done(folder) is not None
        failed += not ok
        print(f"{folder.name}: {'ok' if ok else f'FAILED rc={r.returncode}'} in {took:.0f} s "
              f"(wall, lock wait included)", flush=True)
    return 1 if failed else 0


def _targets(detectors) -> dict:
    """Goal per instance: 0 for rule and statistical detectors, the target for calibrated
    learned ones, none for the in-sample rule (shown for comparison)."""
    out = {}
    for d in detectors:
        if getattr(d, "kind", "rule") != "learned":
            out[d.name] = 0.0
        else:
            out[d.name] = d.fa_target if d.settings.get("calibration") == "target" else None
    return out


def _before(detectors) -> list:
    """For every calibrated learned detector, a twin instance with the in-sample rule it
    replaced (``<name>@in-sample``): the before/after comparison on the same records."""
    out = []
    for d in detectors:
        legacy = getattr(d, "legacy_calibration", None)
        if legacy and d.settings.get("calibration") == "target":
            out.append(type(d)(f"{d.name}@in-sample", **{**d.settings, "calibration": legacy}))
    return out


def measure(split: str, runs: Path, detectors_dir: str, json_path: str | None,
            before: bool = False) -> int:
    from cyberrange.detect.registry import load_detectors
    from cyberrange.score.evaluate import evaluate
    dirs = [p for p in (_done(f) for f in sorted((runs / split).glob("*-s*"))
                        if f.is_dir() and ".failed" not in f.name) if p]
    if not dirs:
        sys.exit(f"no finished drill under {runs / split}: run `build --split {split}` first")
    detectors = load_detectors(detectors_dir)
    detectors += _before(detectors) if before else []
    targets = _targets(detectors)
    t0 = time.perf_counter()
    ev = evaluate(dirs, detectors)
    took = time.perf_counter() - t0
    benign = ev.totals["benign_flows"]
    rows = []
    for r in ev.detectors:
        goal = targets.get(r["detector"])
        per10k = r["false_per_10k"]
        # the one-sided 95 % upper bound of the rate (Poisson; 0 alerts: 3.0 / flows)
        upper = round(_poisson_upper(r["false"]) / benign * 10_000, 2) if benign else None
        met = None if per10k is None or goal is None else per10k <= goal
        rows.append({"detector": r["detector"], "family": r["family"], "kind": r["kind"],
                     "false_alerts": r["false"], "benign_flows": benign,
                     "false_per_10k": per10k, "upper95_per_10k": upper, "goal_per_10k": goal,
                     "met": met})
    per_run = [{k: x[k] for k in ("run_id", "topology", "benign_flows", "false_alerts")}
               for x in ev.runs]
    for x, d in zip(per_run, ev.runs, strict=True):
        x["dir"] = d["dir"]
    _print(split, rows, per_run, took)
    if json_path:
        Path(json_path).write_text(json.dumps(
            {"split": split, "runs_dir": str(runs / split), "detectors_dir": detectors_dir,
             "benign_flows": benign, "runs": per_run, "detectors": rows,
             "skipped_runs": ev.totals["skipped_runs"], "seconds": round(took, 1)}, indent=1))
    return 0 if all(r["met"] is not False for r in rows) else 1


def _poisson_upper(k: int, conf: float = 0.95) -> float:
    from scipy.stats import chi2
    return float(chi2.ppf(conf, 2 * (k + 1)) / 2)


def _print(split: str, rows: list, per_run: list, took: float) -> None:
    flows = rows[0]["benign_flows"] if rows else 0
    print(f"\nsplit {split}: {len(per_run)} benign drills, {flows:,} benign flows after the "
          f"warm-ups (evaluated in {took:.0f} s)")
    for r in per_run:
        print(f"  {r['topology']:<16} {r['run_id']:<28} {r['benign_flows']:>6} flows "
              f"{r['false_alerts']:>4} false alerts (all detectors)")
    head = f"{'detector':<26} {'family':<11} {'kind':<11} {'false':>5} {'flows':>7} " \
           f"{'per 10k':>8} {'95% ub':>7} {'goal':>6}  met"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        goal = "-" if r["goal_per_10k"] is None else f"{r['goal_per_10k']:g}"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{r['detector']:<26} {r['family']:<11} {r['kind']:<11} {r['false_alerts']:>5} "
              f"{r['benign_flows']:>7,} {_fmt(r['false_per_10k']):>8} "
              f"{_fmt(r['upper95_per_10k']):>7} {goal:>6}  {met}")


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["build", "measure", "plan"])
    ap.add_argument("--split", choices=sorted(SEEDS), required=True)
    ap.add_argument("--runs", type=Path, default=RUNS, help="corpus root (outside the repo)")
    ap.add_argument("--detectors", default=str(ROOT / "detectors"))
    ap.add_argument("--only", nargs="*", help="build: only these topologies")
    ap.add_argument("--json", help="measure: also write the results here")
    ap.add_argument("--before", action="store_true",
                    help="measure: also the learned detectors with their in-sample rule")
    ap.add_argument("--python", default=sys.executable, help="build: interpreter of the drills")
    ap.add_argument("--lock", default=LOCK,
                    help="build: flock file taken per drill; '' when the caller holds a slot")
    a = ap.parse_args()
    if a.action == "plan":
        for d in drills(a.split):
            print(json.dumps(d))
        return 0
    if a.action == "build":
        if a.lock and shutil.which("flock") is None:
            sys.exit("flock not found")
        return build(a.split, a.runs, a.python, a.only, a.lock)
    return measure(a.split, a.runs, a.detectors, a.json, a.before)


if __name__ == "__main__":
    sys.exit(main())
