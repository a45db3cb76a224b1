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

    def to_json(self) -> dict:
        return {"runs": [{"playbook": p.playbook, "before": p.runs[0], "after": p.runs[1],
                          "seconds": [round(s, 1) for s in p.seconds],
                          "steps": step_table(p)} for p in self.pairs],
                "checks": [c.to_json() for c in self.checks],
                "timings_s": {k: round(v, 1) for k, v in self.timings.items()}}

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


def run_pair(topology_path, patched_path, playbook, opts, detectors_after: str, ui=None
             ) -> PlaybookRuns:
    """The same drill on the baseline and on the patched topology, one after the other."""
    import dataclasses

    from cyberrange.drill import run_drill
    t0 = time.monotonic()
    run_b = run_drill(topology_path, playbook, opts, ui)
    t1 = time.monotonic()
    run_a = run_drill(str(patched_path), playbook,
                      dataclasses.replace(opts, detectors_dir=detectors_after), ui)
    t2 = time.monotonic()
    return PlaybookRuns(Path(playbook).name, run_b.scorecard(), run_a.scorecard(),
                        (run_b.id, run_a.id), (t1 - t0, t2 - t1))


def live_validate(topology_path, cs: ChangeSet, playbooks: list[str], opts, workdir: Path,
                  ui=None) -> LiveResult:
    """Write the patched inputs into ``workdir``, run every playbook on both twins, compare."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    patched = write_patched_topology(topology_path, cs,
                                     workdir / f"{Path(topology_path).stem}.patched.yaml")
    detectors_after = opts.detectors_dir
    if detector_ops(cs):
        detectors_after = str(write_patched_detectors(cs, opts.detectors_dir,
                                                      workdir / "detectors"))
    res = LiveResult([])
    res.timings["prepare"] = time.monotonic() - t0
    for pb in playbooks:
        pair = run_pair(topology_path, patched, pb, opts, detectors_after, ui)
        res.pairs.append(pair)
        res.timings[f"{pair.playbook} baseline"] = pair.seconds[0]
        res.timings[f"{pair.playbook} patched"] = pair.seconds[1]
    t1 = time.monotonic()
    res.checks = compare(res.pairs, cs)
    res.timings["compare"] = time.monotonic() - t1
    return res


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
    for sid in cs.blocked_steps:
        ok = sid in fixed
        out.append(Check(f"expect blocked: {sid}", "expect", "pass" if ok else "fail",
                         "went from succeeded to blocked" if ok else
                         "did not go from succeeded to not succeeded on the patched twin"))
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
            out.append(Check(label, f"live-{kind}", "fail",
                             f"availability {av_b:.0%} -> {av_a:.0%}"))
        else:
            before_txt = f"{av_b:.0%}" if av_b is not None else "-"
            out.append(Check(label, f"live-{kind}", "pass",
                             f"availability {before_txt} -> {av_a:.0%}"))
    return out
