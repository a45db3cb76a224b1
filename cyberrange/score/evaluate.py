"""The evaluation harness: how well does each detector catch each technique, over many runs.

``evaluate(runs, detectors)`` re-runs the detectors on every run's stored records (the detectors
see only the records, as in a drill), then joins their alerts with each run's ledger -- this
module is in ``score/`` because it is one of the two places where ground truth is read.

Definitions (docs/detection-results.md shows them applied to the benchmark corpus):

* **Evaluation window.** Trainable detectors learn from the first ``baseline_s`` seconds of a
  run (a drill's benign warm-up, recorded in its manifest). Those seconds are left out of the
  evaluation for *every* detector: their flows are not counted as benign flows and alerts
  raised in them are not counted, so a detector is never scored on what it trained on.
* **Steps.** A step counts when packets of it were captured: it has attack flows in the store
  (whatever its outcome: an errored or stopped step whose packets were captured is scored), or,
  for steps without IP flows (ARP), when it sent ARP frames or succeeded. A step of which no
  packet was captured (skipped, cut short before it sent anything, or a path no sensor sees) is
  *unseen* (``unobservable``); a counted step that no detector caught is *missed*. Steps a
  firewall stopped (outcome ``blocked``: the attack did not happen beyond its first packets)
  are listed as *blocked* with how many of them were detected anyway; neither is in recall.
* **Runs that cannot be evaluated.** A run whose manifest status is not ``done`` (``failed``:
  e.g. its attack steps ended in error; ``interrupted``; ``running``) is not evaluated: it is
  listed under ``totals.skipped_runs`` with its status and the manifest's error, as *not
  evaluable for recall*. With no evaluable run every goal is *not measured*.
* **Recall** of a technique = steps detected on time / counted steps; a step is detected by a
  detector when one of its alerts holds one of the step's flows (ARP: see ``score_run``) no
  later than ``late_s`` after the step's end. Steps caught only later are counted as
  ``late`` (and listed in ``totals.late_steps``), not as detected.
* **Time to detect** = ``score_run``'s: first alert time (or the time the step's first flow
  joined an episode) minus the step's start; the median over steps detected on time is
  reported (a late detection has no time to detect).
* **Precision** of a technique = true alerts / alerts among the alerts whose
  ``threat.technique.id`` is the technique's ATT&CK id (``T1046-udp`` -> ``T1046``): when a
  detector *says* T, how often is there an attack. An alert is true when it holds an attack
  flow (or matched a flowless step).
* **False alerts per 10k benign flows** = false alerts / deduplicated benign flows x 10,000,
  benign flows summed over every run of the corpus (benign-only runs included).
* **ROC-AUC / PR-AUC** (detectors that score flows): over every flow of the corpus (evaluation
  window, one row per flow and sensor), label = attack flow, score = the detector's flow score.
* **Incidents** (``score.incidents``): the alerts and weak signals of all detectors together,
  evaluation window only, correlated into incidents (``detect.incidents``). *Incident recall*
  of a playbook = runs in which it became an incident / its runs with an observable step;
  *incidents per benign run* = incidents of runs with no observable attack step / such runs
  (goal 0); ``false`` incidents hold no observation tied to a step.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..ecs import technique_id
from ..errors import UserError
from ..telemetry.schema import ALERT_SCHEMA
from .score import LATE_S, label_flows, score_run

__all__ = ["Evaluation", "attack_id", "evaluate", "expand_runs"]

NOT_ATTACK = {"replay"}        # harness capabilities in the technique library, not ATT&CK


def attack_id(technique: str | None) -> str | None:
    """ATT&CK id of a library technique id: ``T1046-udp`` -> ``T1046``; ``replay`` and custom
    ids (``CR-J0001``) -> None."""
    if not technique or technique in NOT_ATTACK:
        return None
    return technique_id(technique)


def expand_runs(refs, runs_dir="runs", *, reason=None, refuse_named=False, note=None) -> list:
    """Runs (``cyberrange.run.Run``, manifests checked) from arguments: a run folder, a run id,
    'latest', or a folder of run folders. A folder that is no drill -- no manifest, or
    ``reason(run)`` says why (default ``Run.not_a_drill``: a `cyberrange up` or `twin verify`
    run) -- is skipped with ``note(text)``; one named on its own is refused instead when
    ``refuse_named`` (``drill score``). A damaged manifest is an error, never a skip."""
    from ..run import SCOREABLE_KINDS, Run
    reason = reason or Run.not_a_drill
    note = note or (lambda text: None)
    out: list = []
    for ref in refs:
        p = Path(ref)
        if p.is_dir() and not _has_manifest(p):
            subs = sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
            if not any(_has_manifest(q) for q in subs):
                raise UserError(f"{ref}: neither a run folder (no manifest.json) nor a folder "
                                "of runs")
            for q in subs:
                if not _has_manifest(q):
                    note(f"skipping {q}: no manifest.json (not a run folder)")
                    continue
                run = Run.open(str(q))
                why = reason(run)
                if why:
                    note(f"skipping {q}: {why}")
                    continue
                out.append(run)
            continue
        run = Run.open(str(ref), runs_dir, kinds=SCOREABLE_KINDS)
        why = reason(run)
        if why and refuse_named:
            raise UserError(f"{run.dir}: {why}")
        if why:
            note(f"skipping {run.dir}: {why}")
            continue
        out.append(run)
    seen, uniq = set(), []
    for run in out:
        if run.dir.resolve() not in seen:
            seen.add(run.dir.resolve())
            uniq.append(run)
    return uniq


def _has_manifest(folder: Path) -> bool:
    m = folder / "manifest.json"
    return m.exists() or m.is_symlink()


@dataclass
class RunData:
    dir: Path
    run_id: str
    topology: str | None
    playbook: str | None
    kind: str
    baseline_s: float
    ledger: list
    flows: pa.Table
    alerts: dict = field(default_factory=dict)        # detector name -> alerts table
    signals: dict = field(default_factory=dict)       # detector name -> weak signals table
    flow_scores: dict = field(default_factory=dict)   # detector name -> np.ndarray
    seconds: dict = field(default_factory=dict)       # detector name -> seconds
    window_start_us: int | None = None                # evaluation starts after the baseline


@dataclass
class Evaluation:
    runs: list
    techniques: list            # rows, one per library technique seen in the ledgers
    detectors: list             # rows, one per detector
    coverage: dict              # technique -> detector -> "d/n"
    totals: dict

    def to_dict(self) -> dict:
        return {"runs": self.runs, "techniques": self.techniques, "detectors": self.detectors,
                "coverage": self.coverage, "totals": self.totals}


def _load_run(run, detectors, train, default_baseline_s) -> RunData:
    from ..detect.registry import baseline_end, baseline_window
    from ..telemetry.schema import RECORD_SCHEMAS
    manifest, run_id = run.manifest, run.id
    ledger = run.ledger()
    need_packets = any(d.needs_packets for d in detectors)
    with run.open_store(read_only=True,
                        need=("flows", "packets") if need_packets else ("flows",)) as store:
        flows = store.read("flows", run_id, columns=list(RECORD_SCHEMAS["flows"].names))
        packets = store.read("packets", run_id, columns=list(RECORD_SCHEMAS["packets"].names)) \
            if need_packets else None
    baseline_s = manifest.get("baseline_s")
    if baseline_s is None:
        baseline_s = default_baseline_s
    until = manifest.get("baseline_end")
    rd = RunData(run.dir, run_id, manifest.get("topology"), manifest.get("playbook"), run.kind,
                 float(baseline_s or 0), ledger, flows)
    end = baseline_end(flows, packets, rd.baseline_s, until)
    rd.window_start_us = None if end is None else int(end.timestamp() * 1_000_000)
    fit_on = train if train is not None else (
        baseline_window(flows, packets, rd.baseline_s, until) if end is not None else None)
    from ..detect.base import alerts_to_table
    from ..detect.registry import collect_signals
    for det in detectors:
        t0 = time.perf_counter()
        if det.trainable and fit_on is not None:
            det.fit(fit_on[0], fit_on[1] if det.needs_packets else None)
        found = det.detect(flows, packets if det.needs_packets else None)
        rd.alerts[det.name] = alerts_to_table(found, run_id)
        rd.signals[det.name] = alerts_to_table(
            collect_signals(det, flows, packets if det.needs_packets else None, found), run_id)
        if det.scores_flows:
            rd.flow_scores[det.name] = np.asarray(
                det.score_flows(flows, packets if det.needs_packets else None), dtype=float)
        rd.seconds[det.name] = time.perf_counter() - t0
    return rd


def _after(table: pa.Table, start_us: int | None) -> pa.Table:
    if start_us is None or table.num_rows == 0:
        return table
    ts = table.column("@timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return table.filter(pc.greater_equal(ts, start_us))


def _auc(labels: np.ndarray, scores: np.ndarray):
    if labels.size == 0 or labels.all() or not labels.any():
        return None, None
    from sklearn.metrics import average_precision_score, roc_auc_score
    scores = np.nan_to_num(scores, nan=0.0, posinf=1e300, neginf=-1e300)
    return (round(float(roc_auc_score(labels, scores)), 4),
            round(float(average_precision_score(labels, scores)), 4))


def _new_technique() -> dict:
    return {"counted": 0, "unobservable": 0, "blocked": 0, "blocked_detected": 0,
            "detected": 0, "late": 0, "ttd": [], "by": defaultdict(int), "runs": set()}


def _median(values: list):
    return round(statistics.median(values), 3) if values else None


class _Corpus:
    """What ``evaluate`` adds up over the runs of a corpus (``add_run``), and the tables it
    makes of the sums (``evaluation``)."""

    def __init__(self, detectors):
        self.names = [d.name for d in detectors]
        self.family = {d.name: d.family for d in detectors}
        self.kind = {d.name: getattr(d, "kind", "rule") for d in detectors}
        self.scoring = {d.name for d in detectors if d.scores_flows}
        self.techniques = defaultdict(_new_technique)    # library technique -> step counts
        self.det = {n: {"alerts": 0, "true": 0, "false": 0, "seconds": 0.0, "flows_in": 0,
                        "steps_detected": 0, "ttd": []} for n in self.names}
        self.claimed = defaultdict(lambda: {"alerts": 0, "true": 0, "false": 0})  # ATT&CK id
        self.labels, self.scores = [], defaultdict(list)  # per run: flow labels, flow scores
        self.benign_flows = self.attack_flows = self.flows_total = 0
        self.runs: list = []
        self.skipped: list = []
        self.late_steps: list = []      # steps detected only after end + late_s
        self.step_rows: list = []       # one per step of every run: counted, detected, late
        self.incidents = _IncidentTally()

    # -- adding a run ----------------------------------------------------------------------
    def add_run(self, rd: RunData) -> None:
        start = rd.window_start_us
        flows = _after(rd.flows, start)
        all_alerts = pa.concat_tables([_after(rd.alerts[n], start) for n in self.names]) \
            if self.names else ALERT_SCHEMA.empty_table()
        card_all = score_run(rd.ledger, flows, all_alerts, run_id=rd.run_id)
        self.benign_flows += card_all["flows"]["benign"]
        self.attack_flows += card_all["flows"]["attack"]
        self.flows_total += card_all["flows"]["total"]
        counted = self._add_steps(rd, card_all)
        for n in self.names:
            self._add_detector(n, rd, flows, counted)
        self._add_flow_scores(rd)
        signals = pa.concat_tables([_after(rd.signals[n], start) for n in self.names]) \
            if self.names else ALERT_SCHEMA.empty_table()
        inc = self.incidents.add(rd, flows, all_alerts, signals)
        self.runs.append(dict(_run_row(rd, card_all, counted), incidents=inc["total"],
                              false_incidents=inc["false"], is_incident=inc["is_incident"]))

    def _add_steps(self, rd: RunData, card_all: dict) -> dict:
        """Tally the run's steps by technique (all detectors' alerts together); returns
        step_id -> whether the step counts in recall."""
        counted = {}
        for s in card_all["steps"]:
            flowless = not any(r.get("flows") for r in rd.ledger if r["step_id"] == s["step_id"])
            # captured: some of its packets are in the store (unseen otherwise)
            observable = s["outcome"] != "skipped" and (
                s["attack_flows"] > 0 or (flowless and s.get("observable", True) and (
                    s.get("arp_frames", 0) > 0 or s["outcome"] == "succeeded")))
            blocked = observable and s["outcome"] == "blocked"
            counted[s["step_id"]] = observable and not blocked
            self.step_rows.append({"run_id": rd.run_id, "step_id": s["step_id"],
                                   "technique": s["technique"], "counted": observable
                                   and not blocked, "blocked": blocked,
                                   "detected": bool(s["detected"]),
                                   "late": bool(s.get("detected_late"))})
            t = self.techniques[s["technique"] or "unknown"]
            t["runs"].add(rd.run_id)
            if blocked:                 # a firewall stopped it: shown, not in recall
                t["blocked"] += 1
                t["blocked_detected"] += bool(s["detected"])
                continue
            if not observable:
                t["unobservable"] += 1
                continue
            t["counted"] += 1
            if s["detected"]:
                t["detected"] += 1
                t["ttd"].append(s["time_to_detect_s"])
            elif s.get("detected_late"):
                t["late"] += 1
                self.late_steps.append({"run_id": rd.run_id, "step_id": s["step_id"],
                                        "technique": s["technique"], "late_by": s["late_by"],
                                        "late_detect_s": s["late_detect_s"]})
        return counted

    def _add_detector(self, n: str, rd: RunData, flows: pa.Table, counted: dict) -> None:
        """Score detector ``n``'s alerts in the run on their own: its alerts, the counted steps
        it detected, and which of its alerts are true by the ATT&CK id they claim."""
        alerts = _after(rd.alerts[n], rd.window_start_us)
        card = score_run(rd.ledger, flows, alerts, run_id=rd.run_id, alert_truth=True)
        d = self.det[n]
        d["alerts"] += card["alerts"]["total"]
        d["true"] += card["alerts"]["true"]
        d["false"] += card["alerts"]["false"]
        d["seconds"] += rd.seconds[n]
        d["flows_in"] += rd.flows.num_rows
        for s in card["steps"]:
            if counted.get(s["step_id"]) and s["detected"]:
                d["steps_detected"] += 1
                self.techniques[s["technique"] or "unknown"]["by"][n] += 1
                d["ttd"].append(s["time_to_detect_s"])
        techs = ([technique_id(t) for t in alerts.column("threat.technique.id").to_pylist()]
                 if alerts.num_rows else [])           # old runs: "unknown" -> None
        for tech, is_true in zip(techs, card["alert_truth"]):
            c = self.claimed[tech or "none"]
            c["alerts"] += 1
            c["true" if is_true else "false"] += 1

    def _add_flow_scores(self, rd: RunData) -> None:
        """The run's flow labels and each scoring detector's flow scores, evaluation window only
        (for ROC-AUC / PR-AUC over the corpus)."""
        if not (self.scoring and rd.flows.num_rows):
            return
        sel = np.ones(rd.flows.num_rows, bool)
        if rd.window_start_us is not None:
            sel = rd.flows.column("@timestamp").cast(pa.int64()).to_numpy() >= rd.window_start_us
        lab = np.array([x is not None for x in label_flows(rd.ledger, rd.flows)])
        self.labels.append(lab[sel])
        for n in self.scoring:
            self.scores[n].append(rd.flow_scores[n][sel])

    # -- the tables ------------------------------------------------------------------------
    def _per10k(self, n: int):
        return round(n / self.benign_flows * 10_000, 2) if self.benign_flows else None

    def _technique_rows(self) -> list[dict]:
        rows = []
        for tech in sorted(self.techniques, key=lambda t: (attack_id(t) is None, t)):
            t = self.techniques[tech]
            aid = attack_id(tech)
            c = self.claimed.get(aid) if aid else None
            rows.append({
                "technique": tech, "attack_id": aid, "runs": len(t["runs"]),
                "steps": t["counted"], "unobservable": t["unobservable"],
                "blocked": t["blocked"], "blocked_detected": t["blocked_detected"],
                "detected": t["detected"], "late": t["late"],
                "recall": round(t["detected"] / t["counted"], 4) if t["counted"] else None,
                "precision": round(c["true"] / c["alerts"], 4) if c and c["alerts"] else None,
                "false_per_10k": self._per10k(c["false"]) if c else 0.0,
                "median_ttd_s": _median(t["ttd"]),
                "detected_by": dict(sorted(t["by"].items(), key=lambda kv: -kv[1])),
            })
        return rows

    def _detector_rows(self, labels: np.ndarray) -> list[dict]:
        rows = []
        for n in self.names:
            d = self.det[n]
            roc = pr = None
            if n in self.scoring and labels.size:
                roc, pr = _auc(labels, np.concatenate(self.scores[n]))
            rows.append({
                "detector": n, "family": self.family[n], "alerts": d["alerts"],
                "true": d["true"], "false": d["false"], "false_per_10k": self._per10k(d["false"]),
                "precision": round(d["true"] / d["alerts"], 4) if d["alerts"] else None,
                "steps_detected": d["steps_detected"], "median_ttd_s": _median(d["ttd"]),
                "roc_auc": roc, "pr_auc": pr,
                "flows_per_s": round(d["flows_in"] / d["seconds"]) if d["seconds"] else None,
                "kind": self.kind[n],
            })
        return rows

    def evaluation(self) -> Evaluation:
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, bool)
        tech_rows = self._technique_rows()
        coverage = {}
        for row in tech_rows:
            t = self.techniques[row["technique"]]
            coverage[row["technique"]] = {n: f"{t['by'].get(n, 0)}/{t['counted']}"
                                          for n in self.names if t["by"].get(n)}
        totals = {"runs": len(self.runs), "flows": self.flows_total,
                  "benign_flows": self.benign_flows, "attack_flows": self.attack_flows,
                  "flow_rows_scored": int(labels.size),
                  "steps": sum(r["steps"] for r in tech_rows),
                  "detected": sum(r["detected"] for r in tech_rows),
                  "late": len(self.late_steps), "late_steps": self.late_steps,
                  "late_s": LATE_S, "skipped_runs": self.skipped,
                  "step_outcomes": self.step_rows,
                  "incidents": self.incidents.totals()}
        return Evaluation(self.runs, tech_rows, self._detector_rows(labels), coverage, totals)


class _IncidentTally:
    """Incident recall per playbook and incidents per benign run, over the corpus."""

    def __init__(self):
        self.playbooks: dict = defaultdict(lambda: {"runs": 0, "incident": 0, "steps": 0,
                                                    "steps_in_incidents": 0, "incidents": 0,
                                                    "false": 0, "one_incident": 0})
        self.benign_runs = self.benign_incidents = 0

    def add(self, rd: RunData, flows: pa.Table, alerts: pa.Table, signals: pa.Table) -> dict:
        from ..detect.incidents import correlate, incidents_to_table, observations
        from .incidents import score_incidents
        table = incidents_to_table(correlate(observations(alerts, signals)), rd.run_id)
        sec = score_incidents(rd.ledger, flows, table, alerts, signals)
        if sec["is_incident"] is None:          # nothing of an attack to find: benign
            self.benign_runs += 1
            self.benign_incidents += sec["total"]
            return sec
        p = self.playbooks[rd.playbook or "unknown"]
        p["runs"] += 1
        p["incident"] += bool(sec["is_incident"])
        p["steps"] += sec["steps_observable"]
        p["steps_in_incidents"] += sec["steps_in_incidents"]
        p["incidents"] += sec["total"]
        p["false"] += sec["false"]
        p["one_incident"] += bool(sec["best"] and sec["best"]["share"] == 1.0)
        return sec

    def totals(self) -> dict:
        rows = [{"playbook": name, **p, "recall": round(p["incident"] / p["runs"], 4)}
                for name, p in sorted(self.playbooks.items())]
        runs = sum(r["runs"] for r in rows)
        return {"per_playbook": rows, "attack_runs": runs,
                "recall": round(sum(r["incident"] for r in rows) / runs, 4) if runs else None,
                "benign_runs": self.benign_runs, "benign_incidents": self.benign_incidents,
                "per_benign_run": round(self.benign_incidents / self.benign_runs, 4)
                if self.benign_runs else None}


def _run_row(rd: RunData, card_all: dict, counted: dict) -> dict:
    return {
        "run_id": rd.run_id, "dir": str(rd.dir), "kind": rd.kind, "topology": rd.topology,
        "playbook": rd.playbook, "baseline_s": rd.baseline_s,
        "flows": card_all["flows"]["total"], "benign_flows": card_all["flows"]["benign"],
        "attack_flows": card_all["flows"]["attack"],
        "steps": sum(1 for v in counted.values() if v),
        "detected": sum(1 for s in card_all["steps"] if counted.get(s["step_id"])
                        and s["detected"]),
        "alerts": card_all["alerts"]["total"], "false_alerts": card_all["alerts"]["false"],
    }


def evaluate(run_dirs, detectors, *, train=None, default_baseline_s: float = 0.0,
             on_run=None) -> Evaluation:
    """Evaluate ``detectors`` on every run in ``run_dirs`` (folders or ``Run``s; see the module
    docstring). ``train``: ``(flows, packets)`` every trainable detector learns from instead of
    each run's own baseline window. ``on_run(i, n, path)`` is called before each run (progress).
    Every run folder is checked as it is read (``Run``: manifest, ledger, store): a damaged one
    is a UserError naming the file; one that is no drill too; unfinished ones are skipped."""
    from ..run import Run
    run_dirs = list(run_dirs)
    corpus = _Corpus(detectors)
    for i, path in enumerate(run_dirs):
        if on_run:
            on_run(i, len(run_dirs), getattr(path, "dir", path))
        run = path if isinstance(path, Run) else Run.open(str(path))
        why = run.not_a_drill()
        if why:
            raise UserError(f"{run.dir}: {why}")
        status = run.manifest.get("status")
        if status != "done":
            corpus.skipped.append({"dir": str(run.dir), "status": status,
                                   "error": run.manifest.get("error")})
            continue
        corpus.add_run(_load_run(run, detectors, train, default_baseline_s))
    return corpus.evaluation()
