"""Detection envelopes: drawn scenarios, run as real drills, recall against each parameter.

    .venv/bin/python bench/envelope.py generate --split eval --n 8     # playbooks + plans
    .venv/bin/python bench/envelope.py run --split eval [--budget-min 25]   # real drills
    .venv/bin/python bench/envelope.py eval [--markdown docs/detection-envelopes.md]
    .venv/bin/python bench/envelope.py before --rev d8ada6c    # a baseline from an earlier page
    .venv/bin/python bench/envelope.py heldout --out /work/runs-envelope-fresh \
        [--markdown docs/detection-envelopes.md]   # the published envelope on new drills

``generate`` draws ``--n`` scenarios of a split (``cyberrange/score/envelope.py``: the seeds of
the TUNING and EVALUATION splits are disjoint), one per topology in turn, and writes each
playbook (version 2) and its plan (the drawn parameters) into ``OUT/<split>/playbooks/``; every
playbook is checked like ``cyberrange playbook check`` does before it is written.

``run`` runs the playbooks that have no finished run yet (resumable), one at a time, each as
``cyberrange drill run TOPO PLAYBOOK --seed N --warmup 30 --intensity I`` under the machine lock
(``/tmp/cr-twin.lock``, the lock ``flock(1)`` takes), into ``OUT/<split>/``; the plan is copied
into the run folder (``envelope.json``). ``--budget-min`` stops starting drills once that much
twin time (lock held) has been used by this invocation.

``eval`` needs no twin: it re-runs the detectors of ``--detectors`` on the stored records of
every finished run (``detect eval`` does the same), scores each step against its ledger
(on time: up to 10 s after the step), joins the drawn parameters, and writes the tables
(``--markdown``, between ``<!-- envelope:begin/end -->``), one PNG per technique family
(``docs/img/envelope-<family>.png``) and ``OUT/envelope.json``; and the published envelope
as data, ``docs/data/envelopes.json`` (``--data``; ``cyberrange/score/envelope_publish.py``),
which ``bench/corpus.py eval`` places the corpus's steps against. The page's goals: recall
>= 0.9 inside each family's envelope, and every envelope wider than the one in
``docs/data/envelopes-before.json`` (``--before``; *not measured* without that file).

``heldout`` tests the published envelope (``--data``, read, not written) on the finished
drills of ``--out``'s eval split: drills generated after the envelope was published, from
seeds no split had used (``cyberrange/score/envelope_heldout.py``); it writes
``OUT/heldout.json`` and, with ``--markdown``, the page's held-out section.

``before`` writes ``--before`` from the generated summary table of
``docs/detection-envelopes.md`` at the git revision ``--rev`` (for envelopes published before
the data file existed; copy ``envelopes.json`` there to freeze a later baseline).
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "cyberrange.cli.main"]
OUT = Path("/work/runs-envelope")
LOCK = "/tmp/cr-twin.lock"
WARMUP = 30
DATA = ROOT / "docs" / "data" / "envelopes.json"       # the published envelope, as data
BEFORE = ROOT / "docs" / "data" / "envelopes-before.json"   # the baseline "wider" compares to
TOPOLOGIES = ["fob", "air_base", "logistics_depot", "naval_vessel", "coalition_mpe", "brigade"]


def generate(out: Path, split: str, n: int, start: int = 0, focus: str = "all",
             topologies: list[str] | None = None, families: list[str] | None = None) -> int:
    import shutil

    from cyberrange.attack.runner import check_playbook
    from cyberrange.score.envelope import draw_scenario, split_seeds, support_files
    pdir = out / split / "playbooks"
    pdir.mkdir(parents=True, exist_ok=True)
    for rel, src in support_files(ROOT).items():    # what playbooks name relative to themselves
        (pdir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, pdir / rel)
    ran = finished(out / split)
    topologies = topologies or TOPOLOGIES
    for i, seed in enumerate(split_seeds(split, n, start)):
        topo = ROOT / "topologies" / f"{topologies[i % len(topologies)]}.yaml"
        if f"envelope-{split}-{seed}" in ran:       # keep the file that ran (its run has a copy)
            print(f"envelope-{split}-{seed}: has run {ran[f'envelope-{split}-{seed}'].name}")
            continue
        scn = draw_scenario(seed, split, str(topo.relative_to(ROOT)), focus=focus,
                            families=families)
        pb = pdir / f"{scn.playbook['name']}.yaml"
        pb.write_text(scn.playbook_yaml())
        check_playbook(str(pb), str(topo))          # what `playbook check` runs; raises
        (pdir / f"{scn.playbook['name']}.plan.json").write_text(json.dumps(scn.plan, indent=1))
        print(f"{pb.name}: {scn.topology}, {len(scn.plan['steps'])} steps, "
              f"~{scn.plan['expected_s']:.0f} s of attack, intensity {scn.intensity}")
    return 0


def finished(split_dir: Path) -> dict[str, Path]:
    """Scenario name -> its finished run folder: status ``done``, or ``failed`` only because
    some steps ended in error (the drill ran to its end and was scored; the errored steps are
    left out of recall by ``envelope_eval``, the others are data points like any)."""
    found = {}
    for env in sorted(split_dir.glob("*/envelope.json")):
        man = env.parent / "manifest.json"
        if not man.exists():
            continue
        m = json.loads(man.read_text())
        ok = m.get("status") == "done" or (
            m.get("status") == "failed" and "ended in error" in str(m.get("error"))
            and (env.parent / "scorecard.json").exists())
        if ok:
            found[json.loads(env.read_text())["name"]] = env.parent
    return found


def _take_lock():
    """The machine lock, held: an open file of ``LOCK`` with an exclusive flock on it. A lock
    taken on a file that someone removed and created again meanwhile locks nothing: take it
    again on the file that is there now."""
    while True:
        f = open(LOCK, "a")  # noqa: SIM115 - closed by the caller (with)
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.fstat(f.fileno()).st_ino == os.stat(LOCK).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


def _run_one(split_dir: Path, pb: Path, deadline=None) -> tuple:
    """One drill under the machine lock: (exit code, seconds the lock was held, new run dirs,
    the plan). The plan is read once the lock is held, with the hash of the playbook the
    drill is given, so plan and playbook cannot drift apart while the drill waits."""
    import hashlib
    lock = _take_lock()
    with lock:
        if deadline and datetime.datetime.now(datetime.timezone.utc) >= deadline:
            # waited for the lock past the stop time: leave it
            return None, 0.0, [], {}
        t0 = time.monotonic()
        plan = json.loads(pb.with_suffix(".plan.json").read_text())
        raw = pb.read_bytes()
        plan["playbook_sha256"] = hashlib.sha256(raw).hexdigest()
        args = CLI + ["drill", "run", plan["topology_file"], str(pb), "--seed",
                      str(plan["seed"]), "--warmup", str(WARMUP), "--intensity",
                      str(plan["intensity"]), "--runs-dir", str(split_dir), "--json"]
        before = set(split_dir.iterdir())
        try:
            r = subprocess.run(["timeout", "900"] + args, cwd=ROOT, capture_output=True,
                               text=True, check=False)
        finally:
            held = time.monotonic() - t0
            fcntl.flock(lock, fcntl.LOCK_UN)
    new = [p for p in set(split_dir.iterdir()) - before if (p / "manifest.json").exists()]
    if r.returncode != 0:
        print(r.stderr[-1500:], flush=True)
    return r.returncode, held, new, {**plan, "_playbook_bytes": raw}


def _deadline(stop_at: str | None):
    """The next UTC moment at ``stop_at`` (HH:MM) from now; None without one."""
    if not stop_at:
        return None
    now = datetime.datetime.now(datetime.timezone.utc)
    h, m = (int(x) for x in stop_at.split(":"))
    at = now.replace(hour=h, minute=m, second=0, microsecond=0)
    return at if at > now else at + datetime.timedelta(days=1)


def run(out: Path, split: str, budget_min: float | None, only: list[str],
        stop_at: str | None = None) -> int:
    split_dir = out / split
    pdir = split_dir / "playbooks"
    done = finished(split_dir)
    used = 0.0
    deadline = _deadline(stop_at)
    log = split_dir / "twin-time.jsonl"
    order = sorted(pdir.glob("*.yaml"))
    if only:        # in the order given (the scenarios that cover most families first)
        order = [pdir / f"{n}.yaml" for n in only if (pdir / f"{n}.yaml").exists()]
    for pb in order:
        name = pb.stem
        done = finished(split_dir)      # again: another invocation may have run it meanwhile
        if (only and name not in only) or name in done:
            continue
        if budget_min is not None and used >= budget_min * 60:
            print(f"budget of {budget_min} min used: stop before {name}", flush=True)
            break
        code, held, new, plan = _run_one(split_dir, pb, deadline)
        if code is None:
            print(f"past {stop_at} UTC: stop before {name}", flush=True)
            break
        used += held
        raw = plan.pop("_playbook_bytes")
        for d in new:       # the plan and the exact playbook the drill ran, with the run
            (d / "envelope.json").write_text(json.dumps({"name": name, **plan}, indent=1))
            (d / "envelope-playbook.yaml").write_bytes(raw)
        with log.open("a") as f:
            f.write(json.dumps({"name": name, "exit": code, "twin_s": round(held, 1),
                                "runs": [d.name for d in new],
                                "at": datetime.datetime.now(datetime.timezone.utc)
                                .isoformat(timespec="seconds")}) + "\n")
        print(f"{name}: exit {code}, {held:.0f} s under the lock, run {[d.name for d in new]}",
              flush=True)
    print(f"twin time this invocation: {used / 60:.1f} min", flush=True)
    return 0


def twin_minutes(out: Path, split: str) -> float:
    log = out / split / "twin-time.jsonl"
    if not log.exists():
        return 0.0
    return sum(json.loads(x)["twin_s"] for x in log.read_text().splitlines() if x) / 60


def evaluate(out: Path, markdown: Path | None, detectors: str, img: Path,
             no_learned: bool = False, data: Path = DATA, before: Path = BEFORE) -> int:
    from cyberrange.detect.registry import load_detectors
    from cyberrange.score import envelope_eval as ee
    from cyberrange.score import envelope_publish as ep
    from cyberrange.score import envelope_report as er
    from cyberrange.score.envelope_goals import (
        recall_goal,
        recall_lines,
        ttd_goal,
        ttd_lines,
        ttd_markdown,
        wider_goal,
        wider_lines,
    )
    t0 = time.monotonic()
    dets = [d for d in load_detectors(detectors)
            if not (no_learned and getattr(d, "kind", "rule") == "learned")]
    result = {}
    for split in ("tuning", "eval"):
        runs = sorted(finished(out / split).values())
        result[split] = ee.evaluate_split(runs, dets, on_run=lambda i, n, p, sp=split: print(
            f"[{sp} {i + 1}/{n}] {p.name}", flush=True))
        result[split]["twin_minutes"] = round(twin_minutes(out, split), 1)
    today = ee.today_envelopes(Path(detectors))
    goal = ttd_goal(result["eval"]["outcomes"])
    pub = ep.published(result)
    ep.write(data, pub)                 # the published envelope, as data
    old = ep.load(before) if before.exists() else None
    rgoal = recall_goal(result["eval"]["outcomes"])
    wgoal = wider_goal(old, pub, (old or {}).get("source") or
                       (f"{before.name}" if old else None), result["eval"]["outcomes"])
    (out / "envelope.json").write_text(json.dumps({**result, "today": today, "ttd_goal": goal,
                                                   "recall_goal": rgoal, "wider_goal": wgoal},
                                                  indent=1, default=str))
    img.mkdir(parents=True, exist_ok=True)
    pngs = er.plot_curves(result, img)
    text = er.markdown(result, today, pngs, img_rel=os.path.relpath(img, (markdown or ROOT /
                                                                          "docs").parent),
                       after_summary=_goal_section(rgoal, wgoal, data)
                       + ttd_markdown(goal))
    head = (f"Generated by `bench/envelope.py eval` on {datetime.date.today()} "
            f"({platform.node()}, {os.cpu_count()} cores, evaluation took "
            f"{time.monotonic() - t0:.0f} s, detectors from `{detectors}/`).\n\n")
    print(head + text)
    print("\n".join(ttd_lines(goal)))
    print("\n".join(recall_lines(rgoal)[:1] + wider_lines(wgoal)[:1]))
    print(f"wrote {data}")
    if markdown:
        _splice(markdown, head + text)
        print(f"wrote {markdown}")
    return 0


def heldout(out: Path, markdown: Path | None, detectors: str, data: Path) -> int:
    from cyberrange.detect.registry import load_detectors
    from cyberrange.score import envelope_eval as ee
    from cyberrange.score import envelope_heldout as eh
    from cyberrange.score import envelope_publish as ep
    t0 = time.monotonic()
    pub = ep.load(data)
    runs = sorted(finished(out / "eval").values())
    if not runs:
        print(f"envelope.py: no finished drill in {out / 'eval'}", file=sys.stderr)
        return 2
    res = ee.evaluate_split(runs, load_detectors(detectors), on_run=lambda i, n, p: print(
        f"[held-out {i + 1}/{n}] {p.name}", flush=True))
    goal = eh.heldout(res["outcomes"], pub)
    (out / "heldout.json").write_text(json.dumps({**res, "goal": goal}, indent=1, default=str))
    seeds = sorted(json.loads((r / "envelope.json").read_text())["seed"] for r in runs)
    head = (f"Generated by `bench/envelope.py heldout` on {datetime.date.today()} "
            f"({platform.node()}, {os.cpu_count()} cores, {time.monotonic() - t0:.0f} s, "
            f"detectors from `{detectors}/`): {len(runs)} drills of seeds {seeds[0]}-{seeds[-1]}, "
            f"{twin_minutes(out, 'eval'):.1f} min of twin time.\n\n")
    text = head + "\n".join(eh.heldout_lines(goal, pub, res["runs"]))
    print(text)
    if markdown:
        _splice(markdown, text, "heldout")
        print(f"wrote {markdown}")
    return 0


def _goal_section(rgoal: dict, wgoal: dict, data: Path) -> list[str]:
    from cyberrange.score.envelope_goals import recall_lines, wider_lines
    rel = os.path.relpath(data, ROOT)
    return ["### Goals: recall inside the envelope, envelopes wider than before", "",
            (f"The envelopes above, as data: `{rel}` (written by this command; "
             "`cyberrange/score/envelope_publish.py`). A step is inside its family's envelope "
             "when it lies inside every axis that has one. The envelope is drawn from these "
             "very steps (bins of recall >= 0.9), so recall inside it on this split mostly "
             "checks the intersection of the axes: the independent test is the corpus "
             "([detection-results.md](detection-results.md)) and the next fresh evaluation "
             f"split. *Before*: `{os.path.relpath(BEFORE, ROOT)}` (`bench/envelope.py before "
             "--rev REV` writes it from an earlier page's generated table)."), "",
            *recall_lines(rgoal), *wider_lines(wgoal)]


def before_from_git(rev: str, dest: Path) -> int:
    """``dest``: the envelopes of ``docs/detection-envelopes.md`` at git revision ``rev`` (its
    generated summary table), in the published format, with where they came from."""
    from cyberrange.score import envelope_publish as ep
    r = subprocess.run(["git", "show", f"{rev}:docs/detection-envelopes.md"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        print(f"envelope.py: git show {rev}: {r.stderr.strip()}", file=sys.stderr)
        return 2
    when = subprocess.run(["git", "log", "-1", "--format=%h %ad", "--date=short", rev],
                          cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    source = f"docs/detection-envelopes.md at {when}"
    try:
        data = ep.from_markdown(r.stdout, source)
    except ValueError as e:
        print(f"envelope.py: {e}", file=sys.stderr)
        return 2
    data["source"] = source
    ep.write(dest, data)
    print(f"wrote {dest}: {len(data['families'])} families from {source}")
    return 0


def _splice(markdown: Path, body: str, mark: str = "envelope") -> None:
    a, b = f"<!-- {mark}:begin -->", f"<!-- {mark}:end -->"
    text = markdown.read_text() if markdown.exists() else f"# Detection envelopes\n\n{a}\n{b}\n"
    if a not in text or b not in text:
        text += f"\n{a}\n{b}\n"
    pre, rest = text.split(a, 1)
    _, post = rest.split(b, 1)
    markdown.write_text(pre + a + "\n" + body + b + post)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["generate", "run", "eval", "before", "heldout"])
    ap.add_argument("--out", default=OUT, type=Path, help=f"runs folder (default {OUT})")
    ap.add_argument("--split", choices=["tuning", "eval"], default="eval")
    ap.add_argument("--n", type=int, default=8, help="generate: scenarios of the split")
    ap.add_argument("--start", type=int, default=0,
                    help="generate: first seed, counted from the split's base (eval 9000)")
    ap.add_argument("--focus", default="all", help="generate: family subset (all; rare: the "
                    "families with too few steps; ics: rare with the Modbus chain; thin: the "
                    "families of thin envelope cells; cyberrange/score/envelope.py FOCUS)")
    ap.add_argument("--families", default=None, type=lambda v: [f for f in v.split(",") if f],
                    metavar="F1,F2", help="generate: draw only these families (full ranges; "
                    "overrides --focus)")
    ap.add_argument("--topologies", nargs="*", default=None,
                    help=f"generate: topologies in turn (default {' '.join(TOPOLOGIES)})")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="run: stop starting drills after this many minutes of twin time")
    ap.add_argument("--stop-at", default=None, metavar="HH:MM",
                    help="run: start no drill after this UTC time")
    ap.add_argument("--only", nargs="*", default=[], help="run: only these scenario names")
    ap.add_argument("--detectors", default="detectors", help="eval: detector folder")
    ap.add_argument("--markdown", default=None, type=Path, help="eval: page to write into")
    ap.add_argument("--no-learned", action="store_true",
                    help="eval: leave the learned detectors out (faster; 'any' = rules)")
    ap.add_argument("--img", default=ROOT / "docs" / "img", type=Path,
                    help="eval: folder of the PNG curves")
    ap.add_argument("--data", default=DATA, type=Path,
                    help=f"eval: the published envelope file to write (default {DATA.relative_to(ROOT)})")
    ap.add_argument("--before", default=BEFORE, type=Path,
                    help=f"eval: the earlier envelopes 'wider' compares to; before: the file to "
                         f"write (default {BEFORE.relative_to(ROOT)})")
    ap.add_argument("--rev", default=None,
                    help="before: the git revision whose docs/detection-envelopes.md to read")
    a = ap.parse_args()
    os.chdir(ROOT)
    if a.action == "generate":
        try:
            return generate(a.out, a.split, a.n, a.start, a.focus, a.topologies, a.families)
        except ValueError as e:         # an unknown focus or family: bad input
            print(f"envelope.py: {e}", file=sys.stderr)
            return 2
    if a.action == "run":
        return run(a.out, a.split, a.budget_min, a.only, a.stop_at)
    if a.action == "before":
        if not a.rev:
            print("envelope.py: before needs --rev REV", file=sys.stderr)
            return 2
        return before_from_git(a.rev, a.before)
    if a.action == "heldout":
        return heldout(a.out, a.markdown, a.detectors, a.data)
    return evaluate(a.out, a.markdown, a.detectors, a.img, a.no_learned, a.data, a.before)


if __name__ == "__main__":
    sys.exit(main())
