"""The red/blue screen's data: what a run folder says while its drill runs, as one snapshot.

``cyberrange blue watch`` (``report/watch_view.py`` draws it) runs in a second terminal, in
any process: everything it shows comes from files in the run folder, read again (only what
was appended since) at every refresh:

- ``manifest.json``: status, start, end, and the drill's phase (``phase``: ``{name, since,
  starts: {name: since}}``, written by :class:`PhaseInManifest` at each phase of the twin's
  part);
- ``live-alerts.jsonl``: every alert the streaming detection raised, as it raised it
  (:class:`LiveAlertLog`, in the drill's live path; one JSON object per line, format below);
- ``availability.jsonl``: the mission-availability probes (``blue/availability.py``);
- ``actions.jsonl``: the blue actions (``blue/log.py``), active ones by ``actions.active``;
- ``logs/links.jsonl``: the tactical links' state changes (DDIL schedules, jamming steps;
  ``twin/ddil.py``), per link its state now and since when (``blue/watch_links.py``).

Two views. The **defender** view holds no ground truth: it never opens the ledger or the
playbook, it shows the phase only as "building the twin" / "exercise" / "tearing down" /
"scoring" (benign warm-up, attack and cool-down look the same, and "exercise for 0:42"
counts from the warm-up's start: the attack's start is ground truth), it does not say whether the drill has a playbook at all (benign-only drills
look like any other), and it leaves out the manifest's playbook, inputs, warnings and error
text (an error names attack steps). Of the links it shows what network monitoring would see:
no reason (it names the schedule or the attack step), no notes, and a ``jammed`` link as
``down (no traffic)`` (``watch_links.py`` says why). The **instructor** (white cell) view adds the real phase,
the playbook's name and its steps: those that ended (``ledger.jsonl``: outcome, packets,
reason) and those still to come (the playbook file the manifest names, when it is found
unchanged), and the links' records as written (real state, reason, notes).

``live-alerts.jsonl``, one object per line::

    {"seen_at": <epoch the drill raised it>, "time": <epoch of the evidence that crossed the
     threshold>, "start", "end", "rule", "category", "technique" (the detector's own ATT&CK
     id), "source", "destination", "score", "message", "id" (the alert_id), "lag_s"}

Streaming alerts are provisional (``detect/stream.py``): the scorecard's alerts come from the
final store after the drill.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import suppress
from pathlib import Path

from cyberrange.blue.watch_links import LINKS, Links, links_summary
from cyberrange.errors import UserError

__all__ = ["LIVE_ALERTS", "LiveAlertLog", "PhaseInManifest", "Tail", "Watch", "find_run",
           "alert_record", "summary_line"]

LIVE_ALERTS = "live-alerts.jsonl"
AVAILABILITY = "availability.jsonl"
ACTIONS = "actions.jsonl"
LEDGER = "ledger.jsonl"
FINAL = ("done", "interrupted", "failed", "killed", "ingested")   # run.FINAL_STATUSES
TWIN_PART = ("twin", "benign", "attack", "cooldown", "teardown")
#: what the defender sees of each phase: warm-up, attack and cool-down are all "exercise"
DEFENDER_PHASE = {"twin": "building the twin", "benign": "exercise", "attack": "exercise",
                  "cooldown": "exercise", "teardown": "tearing down"}
INSTRUCTOR_PHASE = {"twin": "building the twin", "benign": "benign warm-up",
                    "attack": "attack", "cooldown": "cool-down", "teardown": "tearing down"}
RECENT_ALERTS = 50          # alerts kept in a snapshot (the count is of all)
LAST_PROBES = 30            # probes per thread in a snapshot's sparkline
RECENT_ACTIONS = 8


# ------------------------------------------------------------------ written by the drill
def alert_record(alert, seen_at: float | None = None) -> dict:
    """One line of ``live-alerts.jsonl`` from a ``detect.base.Alert``."""
    seen = time.time() if seen_at is None else seen_at
    t = alert.timestamp.timestamp()
    return {"seen_at": round(seen, 3), "time": round(t, 6),
            "start": round(alert.start.timestamp(), 6), "end": round(alert.end.timestamp(), 6),
            "rule": alert.rule_name, "category": alert.rule_category,
            "technique": alert.technique, "source": alert.source_ip,
            "destination": alert.destination_ip, "score": round(float(alert.score), 3),
            "message": alert.message, "id": alert.alert_id, "lag_s": round(seen - t, 2)}


class LiveAlertLog:
    """The live path's ``on_alert``: append each alert to ``<run>/live-alerts.jsonl`` (one
    ``write`` of a whole line, O_APPEND), then pass it on to ``then`` (the terminal's
    ``live_alert``). The file is made at once, empty: its presence says that the drill raises
    alerts live. A failed write (a full disk) never stops the detection: it is counted in
    ``failed``, and the alert still reaches ``then``."""

    def __init__(self, run_dir, then=None):
        self.path = Path(run_dir) / LIVE_ALERTS
        self.then = then
        self.failed = 0
        self.path.touch()

    def __call__(self, alert) -> None:
        try:
            line = json.dumps(alert_record(alert), default=str) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except (OSError, ValueError, AttributeError):
            self.failed += 1
        if self.then is not None:
            self.then(alert)


class PhaseInManifest:
    """A drill's progress UI, passed through, that also writes each phase of the twin's part
    (``TWIN_PART``) into the manifest as ``phase: {name, since, starts}`` when it begins
    (``starts``: when each phase so far began), so that a watcher in another process can
    show it. The analysis' phases are not written: the
    analysis saves the manifest only once its results are complete (``Run.staged``), and a
    watcher tells it from the manifest's ``teardown`` record."""

    def __init__(self, ui, run):
        self._ui, self._run = ui, run

    def __getattr__(self, name):
        return getattr(self._ui, name)

    def phase(self, name, text):
        old = self._run.manifest.get("phase") or {}
        if name in TWIN_PART and old.get("name") != name:
            now = round(time.time(), 3)
            self._run.manifest["phase"] = {"name": name, "since": now,
                                           "starts": {**(old.get("starts") or {}), name: now}}
            with suppress(OSError):
                self._run.save()
        self._ui.phase(name, text)


# ------------------------------------------------------------------ reading, incrementally
class Tail:
    """The JSON-object lines appended to a file since the last ``read``. A last line without
    its newline (being written) waits for the next read; a line that is not a JSON object is
    skipped; a file that got shorter (replaced) is read again from its start."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.skipped = 0

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                self.skipped += 1
                continue
            if isinstance(rec, dict):
                out.append(rec)
            else:
                self.skipped += 1
        return out


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class _Threads:
    """Running availability per thread, fed probe by probe."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def add(self, probes: list[dict]) -> None:
        for p in probes:
            name, ok, t = p.get("thread"), p.get("ok"), _num(p.get("time"))
            if not isinstance(name, str) or not isinstance(ok, bool) or t is None:
                continue
            r = self.rows.setdefault(name, {"name": name, "probes": 0, "ok": 0, "last": [],
                                            "last_time": None, "down_since": None,
                                            "reason": None})
            r["probes"] += 1
            r["ok"] += ok
            r["last"] = (r["last"] + [ok])[-LAST_PROBES:]
            r["last_time"] = t
            if ok:
                r["down_since"], r["reason"] = None, None
            else:
                r["down_since"] = r["down_since"] or t
                r["reason"] = p.get("reason") if isinstance(p.get("reason"), str) else None

    def section(self) -> dict:
        rows = []
        for name in sorted(self.rows, key=lambda n: (n.startswith("service:"), n)):
            r = self.rows[name]
            rows.append(dict(r, up=bool(r["last"] and r["last"][-1]),
                             availability=round(r["ok"] / r["probes"], 4),
                             last=list(r["last"])))
        overall = round(sum(r["availability"] for r in rows) / len(rows), 4) if rows else None
        return {"threads": rows, "overall": overall,
                "down": [r["name"] for r in rows if not r["up"]]}


# ------------------------------------------------------------------ which run
def find_run(ref: str | None, runs_dir="runs") -> Path:
    """The run folder ``blue watch`` means: a run folder, a run id or ``latest`` (in
    ``runs_dir``), a live twin's prefix, or (None) the run of the only twin up. A UserError
    (one line, exit 2) when there is none."""
    from cyberrange.run import Run
    from cyberrange.session import select_twins
    if ref is None:
        states = select_twins(None)             # several up: a UserError that names them
        if not states:
            raise UserError("no twin is up: name a run (folder, id or 'latest') or a twin "
                            "prefix (cyberrange status lists the twins)")
        return Path(states[0].run_dir)
    p = Path(ref)
    if (p / "manifest.json").is_file() or (Path(runs_dir) / ref / "manifest.json").is_file() \
            or ref == "latest":
        return Run.open(ref, runs_dir).dir
    try:
        (state,) = select_twins(ref)[:1]
    except UserError as e:
        raise UserError(f"no run {ref!r} in {runs_dir}/ and {e}") from None
    return Path(state.run_dir)


def _owner_dead(run_id: str) -> bool:
    """True when the process that owns a running run is known to be gone (its marker in
    /run/cyberrange names a dead pid); False when alive or unknown."""
    from cyberrange.twin.state import STATE_DIR
    try:
        m = json.loads((STATE_DIR / f"run-{run_id}.json").read_text())
        pid = int(m["owner_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ------------------------------------------------------------------ the snapshot
class Watch:
    """One run folder, watched: ``snapshot()`` reads what was appended since the last call
    and returns the whole picture as a dict (JSON-ready). ``instructor``: also the ground
    truth (phase, playbook, steps); the defender view never opens the ledger or playbook."""

    def __init__(self, run_dir, instructor: bool = False):
        self.dir = Path(run_dir)
        self.instructor = instructor
        self.alerts: list[dict] = []
        self.n_alerts = 0
        self.rules: dict[str, int] = {}
        self.threads = _Threads()
        self.links = Links(instructor)
        self.tails = {name: Tail(self.dir / name)
                      for name in (LIVE_ALERTS, AVAILABILITY, LINKS)}
        if instructor:
            self.tails[LEDGER] = Tail(self.dir / LEDGER)
            self.steps: list[dict] = []
            self._plan: list[dict] | None = None
        self.manifest = self._manifest()
        self.check()

    # -- what is watched -------------------------------------------------------------------
    def _manifest(self) -> dict:
        from cyberrange.shapes import read_json_object
        try:
            return read_json_object(self.dir / "manifest.json", "manifest")
        except UserError:
            if getattr(self, "manifest", None):
                return self.manifest            # being replaced right now: the last one read
            raise

    @property
    def kind(self) -> str:
        return self.manifest.get("kind") or "drill"

    @property
    def final(self) -> bool:
        return self.manifest.get("status") in FINAL

    @property
    def live(self) -> bool:
        return self.tails[LIVE_ALERTS].exists

    def check(self) -> None:
        """Refuse (one line) a run that has no live alerts and will have none: a drill that
        was not run with --live, an attack run, an ingested capture, a verification."""
        m, where = self.manifest, self.dir
        if self.kind in ("verify", "ingest", "attack"):
            what = {"verify": "a `twin verify` run", "ingest": "an ingested capture",
                    "attack": "an `attack run` (no detection)"}[self.kind]
            raise UserError(f"{where}: {what} has no live alerts to watch (run a drill with "
                            f"`cyberrange drill run ... --live`)")
        if self.kind == "twin" or self.live:
            return
        phase = (m.get("phase") or {}).get("name")
        past_twin = self.final or "teardown" in m or phase in TWIN_PART[1:] or \
            (phase is None and "twin_up_s" in (m.get("timings") or {}))
        if past_twin:
            raise UserError(f"{where}: no live alerts ({LIVE_ALERTS}): the drill was not run "
                            f"with --live (`cyberrange drill run ... --live`)")

    def snapshot(self) -> dict:
        self.manifest = self._manifest()
        if not self.live:               # a watch begun while the twin was being built:
            self.check()                # refused once the drill shows it is not live
        new = self.tails[LIVE_ALERTS].read()
        for a in new:
            self.n_alerts += 1
            rule = str(a.get("rule"))
            self.rules[rule] = self.rules.get(rule, 0) + 1
        self.alerts = (self.alerts + new)[-RECENT_ALERTS:]
        self.threads.add(self.tails[AVAILABILITY].read())
        snap = self._head()
        snap["alerts"] = {"live": self.live, "count": self.n_alerts, "rules": dict(self.rules),
                          "recent": list(self.alerts)}
        snap["availability"] = dict(self.threads.section(),
                                    probing=self.tails[AVAILABILITY].exists,
                                    interval_s=(self.manifest.get("availability") or {})
                                    .get("interval_s"))
        snap["actions"] = self._actions()
        self.links.add(self.tails[LINKS].read())
        snap["links"] = self.links.section(self.tails[LINKS].exists)
        if self.instructor:
            snap.update(self._truth())
        return snap

    def _head(self) -> dict:
        m = self.manifest
        now = time.time()
        created = _num(m.get("created"))
        end = _num(m.get("finished")) if self.final else None
        phase = (m.get("phase") or {}).get("name")
        names = INSTRUCTOR_PHASE if self.instructor else DEFENDER_PHASE
        if self.final:
            shown = "ended"
        elif self.kind == "twin":
            shown = "twin up" if m.get("twin") else "building the twin"
        elif "teardown" in m:
            shown = "scoring"               # the twin is gone; the analysis runs
        else:
            shown = names.get(phase, "starting")
        stale = not self.final and _owner_dead(str(m.get("run_id")))
        return {"view": "instructor" if self.instructor else "defender",
                "run_id": m.get("run_id"), "run_dir": str(self.dir),
                "kind": "twin" if self.kind == "twin" else "drill",
                "topology": m.get("topology"),
                "twin": (m.get("twin") or {}).get("prefix"),
                "status": m.get("status"), "final": self.final, "owner_gone": stale,
                "phase": shown,
                "phase_since": None if self.final or "teardown" in m or phase not in names
                else self._since(m["phase"]),
                "started": created, "finished": end,
                "elapsed_s": round((end or now) - created, 1) if created else None,
                "now": round(now, 3)}

    def _since(self, phase: dict) -> float | None:
        """When the phase shown began: for the defender, "exercise" began with the first of
        warm-up, attack and cool-down (never when the attack began)."""
        if self.instructor or DEFENDER_PHASE.get(phase.get("name")) != "exercise":
            return _num(phase.get("since"))
        starts = phase.get("starts") if isinstance(phase.get("starts"), dict) else {}
        times = [_num(starts.get(n)) for n in TWIN_PART if DEFENDER_PHASE[n] == "exercise"]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def _actions(self) -> dict:
        from cyberrange.blue import log
        if not (self.dir / ACTIONS).is_file():
            return {"active": [], "recent": [], "count": 0}
        try:
            from cyberrange.blue.actions import active
            act = active(self.dir)
            records = log.read(self.dir)
        except OSError:                 # no lock file to be had (a read-only folder)
            records = log.read(self.dir)
            act = log.active_of(records)
        return {"active": act, "recent": records[-RECENT_ACTIONS:], "count": len(records)}

    # -- the instructor's extra: ground truth ----------------------------------------------
    def _truth(self) -> dict:
        m = self.manifest
        from cyberrange.attack.ledger import unchecked_record   # instructor only: the defender
        for r in map(unchecked_record, self.tails[LEDGER].read()):   # view never imports it
            self.steps.append({k: r.get(k) for k in (
                "step_id", "name", "technique", "actor", "repeat", "outcome", "packets_sent",
                "start", "end", "error", "blocked_reason", "skipped_reason")})
        plan = self._playbook_steps()
        ended = {s["step_id"] for s in self.steps}
        pending = [s for s in plan if s["step_id"] not in ended]
        phase = (m.get("phase") or {}).get("name")
        attacking = phase == "attack" and not self.final and "teardown" not in m
        if attacking and pending:       # the runner starts steps in order (or with the one
            running = [pending[0]]      # before, when parallel): from the ledger, inferred
            for s in pending[1:]:
                if not s.get("parallel"):
                    break
                running.append(s)
            for s in running:
                s["state"] = "running"
        return {"phase_detail": None if self.final else "analysis" if "teardown" in m
                else phase,
                "playbook": m.get("playbook"),
                "steps": list(self.steps), "pending": pending,
                "plan_known": bool(plan) or not m.get("playbook"),
                "error": m.get("error"), "warnings": list(m.get("warnings") or [])}

    def _playbook_steps(self) -> list[dict]:
        """The playbook's steps (id, name, technique, actor, parallel), from the file the
        manifest names when it is found with the sha256 recorded; [] when not."""
        if self._plan is not None:
            return [dict(s) for s in self._plan]
        self._plan = []
        given = (self.manifest.get("inputs") or {}).get("playbook") or {}
        path, digest = given.get("path"), given.get("sha256")
        if not isinstance(path, str):
            return []
        from cyberrange.run import sha256
        for base in (Path.cwd(), self.dir.parent.parent):
            p = Path(path) if os.path.isabs(path) else base / path
            try:
                if not p.is_file() or sha256(p) != digest:
                    continue
                import yaml
                doc = yaml.safe_load(p.read_text())
            except (OSError, ValueError, yaml.YAMLError):
                continue
            steps = doc.get("steps") if isinstance(doc, dict) else None
            self._plan = [{"step_id": str(s.get("id")), "name": s.get("name"),
                           "technique": s.get("technique"), "actor": s.get("actor"),
                           "parallel": bool(s.get("parallel")), "state": "pending"}
                          for s in (steps or []) if isinstance(s, dict)]
            break
        return [dict(s) for s in self._plan]


def summary_line(snap: dict) -> str:
    """One line when the watch ends: how the drill ended, what the defender saw and did."""
    el = snap.get("elapsed_s")
    took = f" after {int(el // 60)}m{int(el % 60):02d}s" if isinstance(el, (int, float)) else ""
    what = "twin" if snap.get("kind") == "twin" else "drill"
    status = snap.get("status")
    if snap.get("owner_gone"):
        status = f"{status} (its process died)"
    al = snap.get("alerts") or {}
    parts = [f"{al.get('count', 0)} live alert(s)"
             + (f" from {len(al.get('rules') or {})} rule(s)" if al.get("count") else "")]
    act = snap.get("actions") or {}
    parts.append(f"{act.get('count', 0)} blue action record(s), {len(act.get('active') or [])}"
                 f" active")
    av = snap.get("availability") or {}
    if av.get("overall") is not None:
        worst = min(av["threads"], key=lambda r: r["availability"])
        parts.append(f"availability {av['overall']:.1%}"
                     + (f" (lowest {worst['name']} {worst['availability']:.1%})"
                        if worst["availability"] < 1 else ""))
    links = links_summary(snap.get("links"))
    if links:
        parts.append(links)
    if snap.get("view") == "instructor" and snap.get("steps") is not None:
        outcomes: dict[str, int] = {}
        for s in snap["steps"]:
            outcomes[s.get("outcome")] = outcomes.get(s.get("outcome"), 0) + 1
        parts.append(f"{len(snap['steps'])} step execution(s): "
                     + (", ".join(f"{n} {o}" for o, n in outcomes.items()) or "none"))
    return f"{what} {snap.get('run_id')} {status}{took}: " + "; ".join(parts)
