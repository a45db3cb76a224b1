"""A red/blue drill, end to end: the data flow of DESIGN.md as one function per arrow.

``run_drill`` validates every input before anything is built, brings the twin up, starts
benign traffic, replays the playbook (ground truth to the ledger), stops the sensors, tears
the twin down, and then ``analyse`` turns the run folder into records, alerts and a score
without the twin (which is why a run can be re-scored later).

Live mode (``DrillOptions.live``): the sensors rotate every ``live_rotate_s`` and a background
thread (``ingest.live.LiveIngest``) appends each closed pcap to the store while the drill runs;
``analyse`` then rebuilds the store from the pcaps, so the final records are exact (live flow
records are provisional: see ``ingest/live.py``). ``analyse`` also reconciles what was sent,
captured and stored (``score/reconcile.py``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cyberrange.run import Run
from cyberrange.ui import NullUI


@dataclass
class DrillOptions:
    detectors_dir: str = "detectors"
    runs_dir: str = "runs"
    benign: bool = True
    warmup_s: float = 10.0           # benign only; also the trainable detectors' baseline
    cooldown_s: float = 2.0
    seed: int | None = None
    intensity: float | None = None          # benign traffic rate multiplier (None: topology's)
    live: bool = False               # records reach the store during the drill
    live_rotate_s: float = 2.0       # live mode: every sensor's pcap rotates at least this often
    store: str | None = None         # es://... : records also go to Elasticsearch (analyse)
    duration_s: float = 60.0         # benign-only drill (no playbook): seconds of traffic
    baseline_s: float | None = None  # trainable detectors learn from the first N s (None: warmup)
    probe_interval_s: float = 2.0    # mission availability probes, on average (0: none)
    respond: str | None = None       # a response playbook run on the live alerts (implies live)
    # called once every input has passed its checks, before the run folder and the twin exist
    # (the CLI offers to remove stale twins there, so a refused drill prints only its error)
    on_inputs_checked: Callable[[], None] | None = None


@dataclass
class Inputs:
    topology: object
    playbook: object
    detectors: list = field(default_factory=list)
    response: object = None


def load_inputs(topology_path, playbook_path, detectors_dir, respond_path=None) -> Inputs:
    """Load and cross-check every input; raises UserError (exit 2) before anything is built."""
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.detect.registry import load_detectors
    from cyberrange.model.loader import load_topology
    topo = load_topology(topology_path)
    pb = load_playbook(playbook_path, topo) if playbook_path is not None else None
    dets = load_detectors(detectors_dir)
    resp = None
    if respond_path is not None:
        from cyberrange.blue.respond import load_response
        resp = load_response(respond_path, topo, dets)
    return Inputs(topo, pb, dets, resp)


class BenignTraffic:
    """The benign generators of one twin: one process per host (inside its namespace), started
    together, stopped together. ``run`` is a Run (or a run folder): the plans go to
    ``logs/benign-plan.json``, each host's requests to ``logs/benign-<host>.jsonl``."""

    def __init__(self, twin, run, seed: int | None, intensity: float | None = None):
        from pathlib import Path

        from cyberrange.traffic.benign import explain_benign
        self.twin, self.run = twin, run
        self.logs = Path(getattr(run, "dir", run)) / "logs"
        explained = explain_benign(twin.topo, seed, intensity)
        self.plans = {h: p for h, p in explained.items() if p["activities"]}
        self.skipped = {h: p["skipped"] for h, p in explained.items() if p["skipped"]}
        self.procs: list[subprocess.Popen] = []
        self.summary: dict = {}

    def start(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.logs / "benign-plan.json").write_text(json.dumps(
            {"plans": self.plans, "skipped": self.skipped}, indent=1))
        for host, plan in self.plans.items():
            plan = dict(plan, log=str(self.logs / f"benign-{host}.jsonl"))
            p = self.twin.popen(host, [sys.executable, "-m", "cyberrange.traffic.benign"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=open(self.logs / f"benign-{host}.err", "w"), text=True)
            p.stdin.write(json.dumps(plan))
            p.stdin.close()
            self.procs.append(p)
        return len(self.procs)

    def stop(self) -> int:
        """Stop every generator; return how many requests they logged (``self.summary`` has
        the totals per kind, packets and bytes, for the reconciliation)."""
        from cyberrange.traffic.benign import read_logs, summarize
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        self.summary = summarize(read_logs(self.logs))
        return self.summary["requests"]


def run_drill(topology_path, playbook_path, opts: DrillOptions, ui=None) -> Run:
    """Run one drill; returns the run (scored). ``ui`` receives progress callbacks.

    Three steps: open the run (every input checked, nothing built yet), exercise the twin
    (build, benign warm-up, playbook or benign-only traffic, cool-down, teardown), score it.
    The manifest always ends final: ``done``; ``failed`` when an attack step ended in error
    or the analysis failed (the caller exits 1); ``interrupted`` on Ctrl-C or SIGTERM (see
    ``session.TwinSession`` for the teardown that a second Ctrl-C cannot break)."""
    ui = ui or NullUI()
    t_start = time.monotonic()
    inputs, es, run = _open_run(topology_path, playbook_path, opts, ui)
    _exercise(run, inputs, opts, ui)
    return _score(run, inputs, es, ui, t_start)


def _open_run(topology_path, playbook_path, opts: DrillOptions, ui):
    """Load and cross-check every input, check Elasticsearch, the machine and the runs
    folder, then make the run folder: ``(inputs, es store or None, run)``."""
    from cyberrange.errors import UserError
    from cyberrange.run import probe_runs_dir
    from cyberrange.twin.build import preflight
    inputs = load_inputs(topology_path, playbook_path, opts.detectors_dir, opts.respond)
    es = None
    if opts.store:                   # URL, credentials, TLS checked before anything is built
        from cyberrange.store.es_store import open_checked
        es = open_checked(opts.store)
    preflight(need_dns=True)
    topo, pb = inputs.topology, inputs.playbook
    if pb is None and not (opts.benign and topo.benign.enabled):
        raise UserError(f"{topology_path}: a benign-only drill needs benign traffic, but it is "
                        "disabled (--no-benign or the topology's benign.enabled: false)")
    probe_runs_dir(opts.runs_dir)
    if opts.on_inputs_checked is not None:
        opts.on_inputs_checked()
    seed = opts.seed if opts.seed is not None else topo.benign.seed
    run = Run.create(opts.runs_dir, f"{topo.name}", {
        "topology": topology_path, "playbook": playbook_path, "respond": opts.respond},
        seed=seed)
    baseline_s = opts.warmup_s if opts.baseline_s is None else opts.baseline_s
    run.manifest.update(topology=topo.name, playbook=pb.name if pb else None,
                        kind="drill" if pb else "benign", baseline_s=baseline_s,
                        detectors=[d.name for d in inputs.detectors])
    run.save()
    ui.run_started(run, topo, pb)
    return inputs, es, run


def _exercise(run: Run, inputs: Inputs, opts: DrillOptions, ui) -> None:
    """The twin's part of the drill, inside a TwinSession: build, (live ingest), benign
    warm-up, the playbook (or benign-only traffic), cool-down; the session tears it down."""
    from cyberrange.attack.runner import run_playbook
    from cyberrange.blue.watch import PhaseInManifest
    from cyberrange.session import TwinSession
    from cyberrange.twin.build import Twin
    ui = PhaseInManifest(ui, run)        # `blue watch` reads the phase from the manifest
    topo, pb = inputs.topology, inputs.playbook
    timings = run.manifest["timings"]
    twin = Twin(topo, run.dir, run.id, log=ui.warn)
    twin.link_seed = run.manifest.get("seed") or 0        # the link relay's drops and delays
    live = opts.live or inputs.response is not None       # a response acts on live alerts
    if live:
        twin.sensor_rotate_s = opts.live_rotate_s
    stop_event = threading.Event()
    with TwinSession(run, twin, ui) as session:
        session.start()
        stream = _start_live(session, run, twin, inputs, ui) if live else None
        if inputs.response is not None:
            from cyberrange.blue.respond import start_response
            start_response(session, run, twin, inputs.response, stream, ui)
        if stream is None:
            session.on_cleanup("stopping the sensors", lambda: run.manifest.update(
                sensors=twin.stop_sensors()))
        session.on_cleanup("stopping the attack", stop_event.set)
        if opts.probe_interval_s > 0:    # mission availability until the cleanup
            from cyberrange.blue.availability import start_probes
            start_probes(session, run, twin, topo, pb, opts.probe_interval_s, ui)
        if opts.benign and topo.benign.enabled:
            benign = BenignTraffic(twin, run, run.manifest.get("seed"), opts.intensity)
            session.on_cleanup("stopping benign traffic", lambda: run.manifest.update(
                benign_requests=benign.stop()))
            n = benign.start()
            # the baseline ends baseline_s after the generators started (the warm-up):
            # trainable detectors learn from the records before it, whenever records begin
            run.manifest["baseline_end"] = time.time() + run.manifest["baseline_s"]
            run.save()
            if stream is not None:
                stream.baseline_until = run.manifest["baseline_end"]
            ui.phase("benign", f"benign traffic from {n} hosts, warming up {opts.warmup_s:g} s")
            stop_event.wait(opts.warmup_s)
        t0 = time.monotonic()
        _show_links(twin, ui)            # every link change (schedule or jamming step), live
        if pb is not None and pb.link_events:
            _start_link_events(session, run, twin, pb, t0, ui)
        if pb is not None:
            ui.phase("attack", f"playbook {pb.name}: {len(pb.steps)} steps")
            # in a worker thread, so that Ctrl-C/SIGTERM stops the agents and waits for the
            # running steps' ledger records before the teardown (see _until_done)
            # --seed is the run's one seed: benign traffic, the playbook's jitter, the links
            _until_done(lambda: run_playbook(pb, topo, twin, run.ledger_path, run.id,
                                             on_event=ui.attack_event, stop_event=stop_event,
                                             seed=opts.seed),
                        stop_event)
            timings["attack_s"] = round(time.monotonic() - t0, 2)
        else:
            run.ledger_path.touch()
            ui.phase("attack", f"benign only: {opts.duration_s:g} s of traffic, no attack")
            stop_event.wait(opts.duration_s)
            timings["benign_only_s"] = round(time.monotonic() - t0, 2)
        ui.phase("cooldown", f"cool-down {opts.cooldown_s:g} s")
        stop_event.wait(opts.cooldown_s)


def _start_link_events(session, run: Run, twin, pb, t0: float, ui) -> None:
    """The playbook's DDIL schedule (``link_events``), applied from the attack phase's start
    in a thread; every change is logged to ``logs/links.jsonl`` and shown; the cleanup stops
    the schedule and sets every changed link back up before the teardown."""
    from cyberrange.twin import ddil
    control = ddil.LinkControl.of(twin)
    stop = threading.Event()
    done: list = []

    def work():
        try:
            done.extend(ddil.run(control, pb.link_events, t0, stop))
        except Exception as exc:  # noqa: BLE001 - a failed change must not kill the drill
            ui.warn(f"link events stopped: {type(exc).__name__}: {exc}")
            run.manifest["link_events_error"] = str(exc)

    th = threading.Thread(target=work, name="link-events", daemon=True)
    th.start()

    def finish():
        stop.set()
        th.join(timeout=10)
        run.manifest["link_events"] = {"planned": len(pb.link_events), "applied": len(done)}
    session.on_cleanup("ending the link events", finish)


def _show_links(twin, ui) -> None:
    """Every change of the twin's link states goes to ``ui.link_change`` (the live drill
    screen), or to a warning line for a UI without it."""
    from cyberrange.twin import ddil

    def show(rec):
        if hasattr(ui, "link_change"):
            ui.link_change(rec)
            return
        vals = ", ".join(f"{k} {v:g}" for k, v in rec["values"].items())
        ui.warn(f"link {rec['zone']}: {rec['state']}" + (f" ({vals})" if vals else "")
                + "".join(f"; {n}" for n in rec["notes"]))
    ddil.LinkControl.of(twin).on_change = show


def _start_live(session, run: Run, twin, inputs: Inputs, ui):
    """Live mode: records reach the store, and alerts the terminal, while the drill runs.
    Registers the cleanup that stops sensors and ingest in the right order; returns the
    streaming detection."""
    from cyberrange.blue.watch import LiveAlertLog
    from cyberrange.detect.stream import StreamingDetection
    from cyberrange.ingest.live import LiveIngest
    on_alert = LiveAlertLog(run.dir, then=getattr(ui, "live_alert", None))  # for `blue watch`
    stream = StreamingDetection(inputs.detectors, baseline_s=run.manifest["baseline_s"],
                                on_alert=on_alert)
    live = LiveIngest(twin.sensors, run.store_path, run.id,
                      on_progress=getattr(ui, "live_progress", None), on_records=stream.feed)

    def stop():
        try:
            run.manifest["sensors"] = twin.stop_sensors()
            live.stop()                   # the thread ends; then the files closed by the stop
            live.poll()
            run.manifest["live"] = dict(live.summary(), detection=stream.summary())
            if hasattr(ui, "live_progress"):
                ui.live_progress(dict(live.progress(), final=True))
        finally:
            live.close()

    session.on_cleanup("stopping the sensors and live ingest", stop)
    live.start()
    if hasattr(ui, "live_started"):
        ui.live_started(live)
    return stream


def _score(run: Run, inputs: Inputs, es, ui, t_start: float) -> Run:
    """Analyse the finished twin's run folder and end the run: ``done``, or ``failed`` when
    the analysis failed or an attack step ended in error."""
    from cyberrange.twin.shield import interruptible
    try:
        with interruptible():
            card = analyse(run, inputs.detectors, ui, es=es)
    except KeyboardInterrupt:
        run.finish("interrupted")
        raise
    except BaseException as e:
        run.finish("failed", error=f"analysis: {type(e).__name__}: {e}"[:2000])
        raise
    timings = run.manifest["timings"]
    timings["total_s"] = round(time.monotonic() - t_start, 2)
    card["run"]["timings"] = timings
    _write_json(run.scorecard_path, card)
    # every execution counts: the scorecard merges a step's repeats and keeps its best outcome,
    # so a step that succeeded once and errored once must still fail the drill
    from cyberrange.attack.ledger import read_ledger
    records = read_ledger(run.ledger_path) if run.ledger_path.exists() else []
    errors = list(dict.fromkeys(r["step_id"] for r in records if r.get("outcome") == "error"))
    if errors:
        n = sum(r.get("outcome") == "error" for r in records)
        run.finish("failed", error=f"{n} of {len(records)} attack step executions ended in "
                                   f"error ({', '.join(errors[:5])}; the reasons are in "
                                   f"ledger.jsonl)")
    else:
        run.finish("done")
    return run


def _write_json(path: Path, data) -> None:
    """Write ``data`` as JSON into ``path`` whole or not at all (a temporary file, renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def analyse(run: Run, detectors, ui=None, es=None) -> dict:
    """pcaps -> store -> detectors -> alerts (+ weak signals -> incidents) -> scorecard.json +
    report. No twin needed.
    The captures are read by ``ingest.load.load_captures`` (each sensor's files as one
    stream; the parser's counts per sensor in ``stats["sensors"]``).
    ``es`` (an ElasticsearchStore): the records, alerts and ledger also go there, and the
    reconciliation gets an ``es`` section (sent, acknowledged, spooled, replayed).

    The run folder is checked before any work (``Run.check_writable``, ``Run.ledger``,
    ``Run.check_captures``: one UserError naming the file), and the new store, scorecard and
    report are built beside the old ones and renamed over them only once all three are complete
    (``Run.staged``): an error or a crash midway leaves the previous result as it was, and the
    manifest is saved with the new counts only then."""
    from cyberrange.blue.run_logs import run_log_tables
    from cyberrange.detect.incidents import run_incidents
    from cyberrange.detect.registry import run_detectors
    from cyberrange.ingest.load import load_captures
    from cyberrange.report.aar import write_report
    from cyberrange.run import ANALYSIS_OUTPUTS
    from cyberrange.score.availability import run_availability
    from cyberrange.score.blue import run_blue
    from cyberrange.score.incidents import score_incidents
    from cyberrange.score.reconcile import reconcile
    from cyberrange.score.score import packet_reconciliation, score_run
    from cyberrange.store import open_store
    from cyberrange.store.runlogs import store_run_logs
    ui = ui or NullUI()
    ledger = run.check_analysable()
    logs = run_log_tables(run.dir, run.id)       # mission probes, link events: into the store
    timings = run.manifest.setdefault("timings", {})
    with run.staged(*ANALYSIS_OUTPUTS,
                    manifest_keys=("timings", "telemetry", "detectors_stats")) as new:
        t0 = time.monotonic()
        ui.phase("telemetry", "parsing captures")
        loaded = load_captures(run.dir / "pcaps", run.id)
        packets, flows, stats = loaded
        with open_store(new[run.store_path.name]) as store:
            loaded.store_into(store)
            store_run_logs(store, logs, run.id)
            timings["telemetry_s"] = round(time.monotonic() - t0, 2)
            run.manifest["telemetry"] = {"packets": packets.num_rows, "flows": flows.num_rows,
                                         "parser": stats}
            t0 = time.monotonic()
            ui.phase("detect", f"running {len(detectors)} detectors")
            det_stats: dict = {}
            alerts = run_detectors(store, run.id, detectors, stats=det_stats,
                                   baseline_s=run.manifest.get("baseline_s"),
                                   baseline_until=run.manifest.get("baseline_end"))
            run.manifest["detectors_stats"] = det_stats
            timings["detect_s"] = round(time.monotonic() - t0, 2)
            incidents = run_incidents(store, run.id)        # alerts + signals -> incidents
            signals = store.read_or_empty("signals", run.id)
            ui.phase("score", "scoring alerts against the ledger")
            flows_t = store.read("flows", run.id)
            packets_t = store.read("packets", run.id)
        card = score_run(ledger, flows_t, alerts)
        card["incidents"] = score_incidents(ledger, flows_t, incidents, alerts, signals)
        avail = run_availability(run.dir, run.manifest)  # the store got them above
        if avail is not None:            # the probes of the drill (availability.jsonl)
            card["availability"] = avail
        card["blue"] = run_blue(run.dir, run.manifest, ledger, flows_t, card)  # None: no blue
        recon = packet_reconciliation(ledger, packets_t)
        per_sensor = reconcile(run.dir, run.manifest, ledger, packets_t, stats)
        mismatched = [r for r in recon if r["ledger_packets"] != r["stored_packets"]]
        zero_loss = per_sensor["zero_loss"] and not mismatched
        verdict = per_sensor["verdict"]
        if mismatched:
            verdict = (f"{len(mismatched)} of {len(recon)} attack 5-tuples differ (ledger vs "
                       "stored)" + ("" if per_sensor["zero_loss"] else "; " + verdict))
        card["reconciliation"] = {
            "zero_loss": zero_loss,
            "verdict": "zero loss" if zero_loss else verdict,
            "ledger_packets": sum(r["ledger_packets"] for r in recon),
            "stored_packets": sum(r["stored_packets"] for r in recon),
            "five_tuples": len(recon),
            "mismatched": mismatched[:50],
            "per_sensor": per_sensor["per_sensor"],
            "sensors": {k: {f: v.get(f) for f in ("kind", "captured", "received_by_filter",
                                                   "dropped_by_kernel", "pcap_frames")}
                        for k, v in (run.manifest.get("sensors") or {}).items()},
            "live": {k: v for k, v in (run.manifest.get("live") or {}).items() if k != "files"},
        }
        if es is not None:
            from cyberrange.store.es_store import mirror_run
            ui.phase("score", f"sending records to {es.config.url}")
            card["reconciliation"]["es"] = mirror_run(es, run, packets, flows, alerts, ledger,
                                                       signals=signals, incidents=incidents,
                                                       **logs)
        card["run"] = {k: run.manifest.get(k) for k in ("run_id", "topology", "playbook",
                                                         "timings", "warnings", "telemetry",
                                                         "benign_requests")}
        new[run.scorecard_path.name].write_text(json.dumps(card, indent=2, default=str))
        write_report(run, card, path=new[run.report_path.name])
    run.save()
    return card


def run_attack(topology_path, playbook_path, runs_dir="runs", ui=None, seed: int | None = None,
               twin: str | None = None):
    """``cyberrange attack run``: build the twin, run the playbook, write the ledger and the
    manifest into a new run folder, tear the twin down. No benign traffic, no detection.
    Returns ``(run, records)``. Every input and every literal target is checked first.
    ``twin`` (prefix, run id or run folder): run in that twin, which is already up, instead
    (``_attack_on_live_twin``)."""
    if twin is not None:
        return _attack_on_live_twin(twin, topology_path, playbook_path, runs_dir, ui, seed)
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.attack.runner import check_static, run_playbook
    from cyberrange.model.loader import load_topology
    from cyberrange.run import probe_runs_dir
    from cyberrange.session import TwinSession
    from cyberrange.twin.build import Twin, preflight
    ui = ui or NullUI()
    topo = load_topology(topology_path)
    pb = load_playbook(playbook_path, topo)
    check_static(pb, topo)
    preflight()
    seed = pb.seed if seed is None else seed
    probe_runs_dir(runs_dir)
    run = Run.create(runs_dir, topo.name, {"topology": topology_path, "playbook": playbook_path},
                     seed=seed)
    run.manifest.update(topology=topo.name, playbook=pb.name, kind="attack",
                        playbook_version=pb.version, max_rate=pb.max_rate)
    run.save()
    ui.run_started(run, topo, pb)
    timings = run.manifest["timings"]
    t_start = time.monotonic()
    twin = Twin(topo, run.dir, run.id, log=ui.warn)
    stop_event = threading.Event()
    with TwinSession(run, twin, ui) as session:
        session.start()
        session.on_cleanup("stopping the sensors",
                           lambda: run.manifest.update(sensors=twin.stop_sensors()))
        session.on_cleanup("stopping the attack", stop_event.set)
        _show_links(twin, ui)
        t0 = time.monotonic()
        ui.phase("attack", f"playbook {pb.name}: {len(pb.steps)} steps")
        run_playbook(pb, topo, twin, run.ledger_path, run.id, on_event=ui.attack_event,
                     stop_event=stop_event, seed=seed)
        timings["attack_s"] = round(time.monotonic() - t0, 2)
    timings["total_s"] = round(time.monotonic() - t_start, 2)
    return run, _finish_attack(run)


def _finish_attack(run: Run) -> list[dict]:
    """The ledger's outcome counts into the manifest; the run ends done, or failed when a
    step ended in error. Returns the ledger records."""
    from cyberrange.attack.ledger import read_ledger
    records = read_ledger(run.ledger_path)
    run.manifest["outcomes"] = {o: sum(1 for r in records if r["outcome"] == o)
                                for o in dict.fromkeys(r["outcome"] for r in records)}
    run.manifest["attack_packets"] = sum(r["packets_sent"] for r in records)
    errors = run.manifest["outcomes"].get("error", 0)
    if errors:
        run.finish("failed", error=f"{errors} of {len(records)} step executions ended in error "
                                   f"(the reasons are in ledger.jsonl)")
    else:
        run.finish("done")
    return records


def _attack_on_live_twin(ref: str, topology_path, playbook_path, runs_dir, ui, seed):
    """``attack run --twin REF``: the playbook runs in a twin another process keeps up
    (``cyberrange up --detach``, a drill), attached by its state file; the model is the
    topology file the twin was built from (found and checked by its sha256, as blue actions
    do; ``topology_path``, when given, must be that same file). The ledger and the agents'
    logs go to a new run folder (kind ``attack``) whose manifest names the twin; the twin's
    own run folder (its captures, its action log) and the twin are left as they are.
    Ctrl-C or SIGTERM stops the running agents (they report what they sent) and ends the run
    ``interrupted``; the twin stays up."""
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.attack.runner import check_static, run_playbook
    from cyberrange.blue.target import live_twin
    from cyberrange.errors import UserError
    from cyberrange.run import probe_runs_dir, sha256
    from cyberrange.session import attach, mark_active
    ui = ui or NullUI()
    attached = attach(ref)
    state = attached.state
    topo = live_twin(state).topo          # refuses a twin that is not up or whose owner died
    built_from = json.loads((Path(state.run_dir) / "manifest.json").read_text())["inputs"][
        "topology"]
    if topology_path is not None and not Path(topology_path).is_file():
        raise UserError(f"{topology_path}: no such file")
    if topology_path is not None and sha256(topology_path) != built_from["sha256"]:
        raise UserError(f"{topology_path}: twin {state.prefix} was built from another topology "
                        f"file ({built_from['path']}); leave --topology out with --twin")
    pb = load_playbook(playbook_path, topo)
    check_static(pb, topo)
    seed = pb.seed if seed is None else seed
    probe_runs_dir(runs_dir)
    run = Run.create(runs_dir, topo.name, {"playbook": playbook_path}, seed=seed)
    run.manifest.update(topology=topo.name, playbook=pb.name, kind="attack",
                        playbook_version=pb.version, max_rate=pb.max_rate,
                        twin={"prefix": state.prefix, "run_id": state.run_id,
                              "run_dir": str(state.run_dir), "attached": True,
                              "topology": built_from})
    run.save()
    mark_active(run)
    ui.run_started(run, topo, pb)
    t0 = time.monotonic()
    ui.phase("attack", f"playbook {pb.name}: {len(pb.steps)} steps in twin {state.prefix}")
    stop = threading.Event()
    try:
        _until_done(lambda: run_playbook(pb, topo, attached, run.ledger_path, run.id,
                                         on_event=ui.attack_event, stop_event=stop, seed=seed),
                    stop)
    except KeyboardInterrupt:
        run.manifest["timings"]["attack_s"] = round(time.monotonic() - t0, 2)
        run.finish("interrupted")
        raise
    except BaseException as e:
        run.finish("failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    run.manifest["timings"]["attack_s"] = round(time.monotonic() - t0, 2)
    run.manifest["timings"]["total_s"] = run.manifest["timings"]["attack_s"]
    return run, _finish_attack(run)


def _until_done(work, stop: threading.Event):
    """Run ``work()`` in a thread until it returns; on Ctrl-C or SIGTERM set ``stop``, wait
    until ``work`` has wound down (the playbook's agents report what they sent), then raise
    KeyboardInterrupt. With no teardown to clean up after it, the work must never be left
    running: the main thread waits on an Event, not in ``Thread.join`` (a join interrupted by
    a signal can mark a live thread as ended, bpo-45274, and the runner's own join would then
    return while its agents still run)."""
    from cyberrange.twin.shield import interruptible
    done, out = threading.Event(), {}

    def run():
        try:
            out["value"] = work()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = e
        finally:
            done.set()
    threading.Thread(target=run, name="attack-run", daemon=True).start()
    try:
        with interruptible():
            while not done.wait(0.2):
                pass
    except KeyboardInterrupt:
        stop.set()
        while not done.wait(0.2):       # further signals are counted now, not raised
            pass
        raise
    if "error" in out:
        raise out["error"]
    return out.get("value")
