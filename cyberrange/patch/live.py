"""Live validation: the baseline twin and the patched twin run the same playbooks, the same
seeded benign traffic and the same mission and service probes, one after the other
(``drill.run_drill`` with the same ``DrillOptions``), and their scorecards are compared.

Per playbook step: succeeded -> blocked/failed is a fix, blocked/failed -> succeeded a
regression; per mission thread and per service health probe: availability must not drop; per
technique: a technique detected before whose step still succeeds after must still be detected.
The change set's ``expect.blocked_steps`` must go from succeeded to not succeeded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cyberrange.patch.changeset import ChangeSet
from cyberrange.patch.files import (
    detector_ops,
    write_patched_detectors,
    write_patched_topology,
)
from cyberrange.patch.static import Check

AVAILABILITY_TOLERANCE = 0.05     # a drop of 5 points of availability is noise on a 2-core box
SIGNIFICANCE = 0.05               # a larger drop fails only if chance explains it this rarely
                                  # or less (3/3 -> 0/3 probes: p = 0.05, fails)
SUCCESS = "succeeded"


@dataclass
class PlaybookRuns:
    playbook: str
    before: dict                  # scorecard of the baseline twin
    after: dict                   # scorecard of the patched twin
    runs: tuple[str, str]         # run ids
    seconds: tuple[float, float]


@dataclass
class LiveResult:
    pairs: list[PlaybookRuns]
    checks: list[Check] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    wall_s: float = 0.0           # every drill of the validation (a shared baseline: all changes)

    def to_json(self) -> dict:
        return {"runs": [{"playbook": p.playbook, "before": p.runs[0], "after": p.runs[1],
                          "seconds": [round(s, 1) for s in p.seconds],
                          "steps": step_table(p)} for p in self.pairs],
                "checks": [c.to_json() for c in self.checks],
                "timings_s": {k: round(v, 1) for k, v in self.timings.items()},
                "wall_s": round(self.wall_s, 1)}

    def markdown_lines(self) -> list[str]:
        out = []
        for p in self.pairs:
            out += [(f"Playbook `{p.playbook}`: baseline run `{p.runs[0]}`, patched run "
                    f"`{p.runs[1]}`"), "", "| step | technique | before | after | change |",
                    "|---|---|---|---|---|"]
            out += [f"| {s['step']} | {s['technique']} | {s['before']} | {s['after']} | "
                    f"{s['change']} |" for s in step_table(p)]
            out.append("")
        return out


def step_table(p: PlaybookRuns) -> list[dict]:
    before = {s["step_id"]: s for s in p.before.get("steps", [])}
    after = {s["step_id"]: s for s in p.after.get("steps", [])}
    rows = []
    for sid in dict.fromkeys([*before, *after]):
        b, a = before.get(sid, {}), after.get(sid, {})
        ob, oa = b.get("outcome", "absent"), a.get("outcome", "absent")
        change = ("fix" if ob == SUCCESS and oa != SUCCESS else
                  "regression" if oa == SUCCESS and ob != SUCCESS else "same")
        rows.append({"step": sid, "technique": a.get("technique") or b.get("technique"),
                     "before": ob, "after": oa, "change": change,
                     "detected_before": bool(b.get("detected")),
                     "detected_after": bool(a.get("detected")),
                     "reason_after": a.get("reason")})
    return rows


@dataclass(frozen=True)
class DrillJob:
    """One drill of a validation: the baseline (``change`` None) or a change's patched twin."""
    change: str | None
    topology: str
    playbook: str
    detectors_dir: str


@dataclass
class DrillDone:
    run_id: str
    scorecard: dict
    seconds: float


def _drill(job: DrillJob, opts, ui) -> DrillDone:
    """Run one drill (in this process or in a worker process): its run id, scorecard, time."""
    import dataclasses

    from cyberrange.drill import run_drill
    t0 = time.monotonic()
    run = run_drill(job.topology, job.playbook,
                    dataclasses.replace(opts, detectors_dir=job.detectors_dir), ui)
    return DrillDone(run.id, run.scorecard(), time.monotonic() - t0)


def run_drills(jobs: list[DrillJob], opts, workers: int = 1, ui=None) -> dict:
    """Every drill of ``jobs``, ``workers`` twins at once; ``{job: DrillDone}``.

    One worker runs them here, one after the other. More run each drill in a worker process
    (spawned: a twin session owns its process's signal handlers, so two twins cannot share a
    process); each twin has its own prefix, run folder and nftables table. A failed drill
    stops the validation (the other running drills finish and tear their twins down)."""
    if workers <= 1 or len(jobs) <= 1:
        return {j: _drill(j, opts, ui) for j in jobs}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cyberrange.twin.shield import interruptible
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = {j: pool.submit(_drill, j, opts, ui) for j in jobs}
        try:
            with interruptible():         # SIGTERM/SIGHUP here unwind like Ctrl-C
                return {j: f.result() for j, f in futures.items()}
        except BaseException:
            for f in futures.values():
                f.cancel()
            # no signal is passed on: Ctrl-C and `timeout` signal the whole process group,
            # so each running drill tears its own twin down; a signal to this process alone
            # lets them finish (the pool waits for them) and cancels the drills not started
            raise


def live_validate_many(topology_path, changes: list[ChangeSet], playbooks: list[str], opts,
                       workdir: Path, workers: int = 1, ui=None) -> list[LiveResult]:
    """Validate several change sets of one topology against **one** baseline: the baseline
    twin runs each playbook once, each change's patched twin runs it once, and every change is
    compared with the same baseline scorecard (``workers`` twins at once)."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [DrillJob(None, str(topology_path), pb, opts.detectors_dir) for pb in playbooks]
    for cs in changes:
        wd = workdir / cs.name if len(changes) > 1 else workdir
        wd.mkdir(parents=True, exist_ok=True)
        patched = write_patched_topology(topology_path, cs,
                                         wd / f"{Path(topology_path).stem}.patched.yaml")
        dets = opts.detectors_dir
        if detector_ops(cs):
            dets = str(write_patched_detectors(cs, opts.detectors_dir, wd / "detectors"))
        jobs += [DrillJob(cs.name, str(patched), pb, dets) for pb in playbooks]
    prepare = time.monotonic() - t0
    done = run_drills(jobs, opts, workers, ui)
    wall = time.monotonic() - t0
    base = {j.playbook: done[j] for j in jobs if j.change is None}
    out = []
    for cs in changes:
        res = LiveResult([])
        res.timings["prepare"] = prepare
        for j in jobs:
            if j.change != cs.name:
                continue
            b, a = base[j.playbook], done[j]
            pair = PlaybookRuns(Path(j.playbook).name, b.scorecard, a.scorecard,
                                (b.run_id, a.run_id), (b.seconds, a.seconds))
            res.pairs.append(pair)
            res.timings[f"{pair.playbook} baseline"] = b.seconds
            res.timings[f"{pair.playbook} patched"] = a.seconds
        t1 = time.monotonic()
        res.checks = compare(res.pairs, cs)
        res.timings["compare"] = time.monotonic() - t1
        res.wall_s = wall
        out.append(res)
    return out


def live_validate(topology_path, cs: ChangeSet, playbooks: list[str], opts, workdir: Path,
                  ui=None, workers: int = 1) -> LiveResult:
    """Write the patched inputs into ``workdir``, run every playbook on both twins, compare."""
    return live_validate_many(topology_path, [cs], playbooks, opts, workdir, workers, ui)[0]


def compare(pairs: list[PlaybookRuns], cs: ChangeSet) -> list[Check]:
    out: list[Check] = []
    fixed: set[str] = set()
    for p in pairs:
        for s in step_table(p):
            name = f"step {p.playbook}:{s['step']} ({s['technique']})"
            if s["change"] == "fix":
                fixed.add(s["step"])
                out.append(Check(name, "live-steps", "pass",
                                 f"fix: {s['before']} -> {s['after']}"
                                 f"{': ' + s['reason_after'] if s['reason_after'] else ''}"))
            elif s["change"] == "regression":
                out.append(Check(name, "live-steps", "fail",
                                 f"regression: {s['before']} -> {s['after']}"))
            else:
                out.append(Check(name, "live-steps", "pass", f"unchanged: {s['after']}"))
            if s["detected_before"] and not s["detected_after"] and s["after"] == SUCCESS:
                out.append(Check(f"detection {p.playbook}:{s['step']} ({s['technique']})",
                                 "live-detection", "fail",
                                 "detected before, not after, and the step still succeeds: "
                                 "a detector stopped firing"))
        out += _availability(p)
    steps = {s["step"]: s for p in pairs for s in step_table(p)}
    for sid in cs.blocked_steps:
        s = steps.get(sid)
        if s is None:       # another playbook: nothing to say about this step
            out.append(Check(f"expect blocked: {sid}", "expect", "warn",
                             "no playbook of this validation has the step"))
        elif s["after"] == SUCCESS:
            out.append(Check(f"expect blocked: {sid}", "expect", "fail",
                             "still succeeds on the patched twin"))
        elif sid in fixed:
            out.append(Check(f"expect blocked: {sid}", "expect", "pass",
                             f"fix: {s['before']} -> {s['after']}"))
        else:           # as the static `expect closed`: already so before is a pass, said so
            out.append(Check(f"expect blocked: {sid}", "expect", "pass",
                             f"{s['after']} (it already was {s['before']} before the change)"))
    return out


def _availability(p: PlaybookRuns) -> list[Check]:
    before = (p.before.get("availability") or {}).get("threads", {})
    after = (p.after.get("availability") or {}).get("threads", {})
    out = []
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        kind = (a or b)["kind"]
        label = f"{'' if name.startswith(kind + ':') else kind + ' '}{name} ({p.playbook})"
        if a is None:
            out.append(Check(label, f"live-{kind}", "warn", "not probed on the patched twin "
                                                           "(the change removed it)"))
            continue
        av_a = a.get("availability")
        av_b = b.get("availability") if b else None
        if av_a is None:
            out.append(Check(label, f"live-{kind}", "warn", "no probe answered or sent"))
        elif av_b is not None and av_a < av_b - AVAILABILITY_TOLERANCE:
            p_value = drop_p_value(b.get("ok"), b.get("probes"), a.get("ok"), a.get("probes"))
            counts = f"availability {av_b:.0%} -> {av_a:.0%} ({_counts(b)} -> {_counts(a)})"
            if p_value <= SIGNIFICANCE:
                out.append(Check(label, f"live-{kind}", "fail", counts))
            else:
                out.append(Check(label, f"live-{kind}", "warn",
                                 f"{counts}: too few probes to call it a drop "
                                 f"(p = {p_value:.2f}); probe longer to decide"))
        else:
            before_txt = f"{av_b:.0%}" if av_b is not None else "-"
            out.append(Check(label, f"live-{kind}", "pass",
                             f"availability {before_txt} -> {av_a:.0%}"))
    return out


def _counts(thread: dict) -> str:
    return f"{thread.get('ok', '?')}/{thread.get('probes', '?')}"


def drop_p_value(ok_b, n_b, ok_a, n_a) -> float:
    """One-sided Fisher exact test: the chance of ``ok_a`` or fewer successes among the
    patched twin's ``n_a`` probes if both twins had the same availability (the ``ok_b + ok_a``
    successes shared at random between the two runs' probes). 0.0 when the counts are
    unknown (a drop is then taken as it is). A short drill has few probes per thread: one
    lost probe of 7 is no evidence that a change broke a mission; 7 of 7 is."""
    if not all(isinstance(v, int) for v in (ok_b, n_b, ok_a, n_a)) or not n_a or not n_b:
        return 0.0
    from math import comb
    k_total, n_total = ok_b + ok_a, n_b + n_a
    den = comb(n_total, n_a)
    return sum(comb(k_total, k) * comb(n_total - k_total, n_a - k)
               for k in range(ok_a + 1)) / den
