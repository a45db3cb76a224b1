"""Automated response: rules that turn the live alerts of a drill into blue actions (issue 14
item 3, the "rapid countermeasures"; the file format is docs/response-format.md, loaded by
``blue/response_format.py``).

::

    resp = load_response("responses/contain-scanner.yaml", topo, detectors)  # FILE:LINE:COL
    engine = ResponseEngine(resp, twin, topo, on_action=ui.response_action)
    stream.on_alert = engine.chain(stream.on_alert)    # the drill's display still gets them
    engine.start()
    ...
    engine.stop()                                       # -> summary (manifest["response"])

``drill run --respond FILE`` does this through :func:`start_response`.

**What it reads.** The alerts that ``detect.stream.StreamingDetection`` raises and the
topology (to name the node behind an address). Never the ledger: like the detectors, the
response knows only what the defender's sensors show, so a drill scores it fairly.

**How it acts.** ``on_alert`` only queues the alert with the moment it was raised (the ingest
thread that raised it must not wait for the kernel). One worker thread takes the alerts in
order: each rule whose ``when`` matches counts the alert for its key (``once_per`` rendered from
the alert; the rendered action when there is none); once ``count`` alerts arrived within
``window`` seconds, and unless the key's earlier action is still in force or in its
``cooldown``, the action's parameters are rendered from the alert and carried out with
``blue.actions.apply`` (actor ``auto:<name>``; the trigger is the alert's summary with
``alert_time``, the moment it was raised, so ``record["time"] - trigger["alert_time"]`` is the
response time). An action that would cut off a ``never_isolate`` node, that a template cannot
be rendered for, that the planner refuses (a node a defender already isolated by hand) or that
passes ``max_actions`` is logged ``refused`` with its reason (once per rule, key and reason).
Actions with ``for:`` are reverted by the same thread when it elapses. When the drill ends the
response stops, reverts nothing (the teardown removes every rule with the twin) and reports
what was still in force.
"""
from __future__ import annotations

import heapq
import json
import queue
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from cyberrange.blue import actions
from cyberrange.blue.log import UNDO
from cyberrange.blue.response_format import (  # noqa: F401 - the format's API, from here too
    Missing,
    Response,
    Rule,
    alert_fields,
    covered_nodes,
    load_response,
    render,
)
from cyberrange.errors import UserError

_STOP = object()


@dataclass
class _Key:
    """What one rule remembers about one key (``once_per``'s value)."""
    times: deque = field(default_factory=deque)     # when its matching alerts were raised
    in_force: str | None = None                     # the id of its action still in force
    last: float | None = None                       # when the rule last acted for it


class ResponseEngine:
    """Runs one response playbook on a live twin (see the module doc). ``twin``: what
    ``blue.actions`` accepts (the drill's ``Twin``); ``topology``: its model; ``on_action``
    (record): called for every record the response writes, applied, refused or reverted."""

    def __init__(self, response: Response, twin, topology, on_action=None):
        self.response, self.twin, self.topo = response, twin, topology
        self.actor = f"auto:{response.name}"
        self.on_action = on_action
        self.queue: queue.Queue = queue.Queue()
        self.keys: dict[tuple[str, str], _Key] = {}
        self.due: list[tuple[float, str, str, str]] = []  # heap: (when, action id, rule, key)
        self.records: list[dict] = []
        self.counts: Counter = Counter()
        self.refusals: set[tuple] = set()
        self.errors: list[str] = []
        self.taken = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="cyberrange-response",
                                       daemon=True)

    # -- input (any thread) ------------------------------------------------------------------
    def on_alert(self, alert) -> None:
        """Queue one alert, stamped with the moment it was raised."""
        if self.stopped:
            self.counts["after_stop"] += 1
            return
        self.queue.put((alert, time.time()))

    def chain(self, then=None):
        """An ``on_alert`` callback that feeds the engine and then ``then`` (the display)."""
        def on_alert(alert):
            self.on_alert(alert)
            if then is not None:
                then(alert)
        return on_alert

    def start(self) -> "ResponseEngine":
        self.thread.start()
        return self

    def stop(self, timeout: float = 60) -> dict:
        """Handle what is queued, stop, and return the summary. Nothing is reverted: the
        twin's teardown removes every action still in force."""
        if not self.stopped:
            self.stopped = True
            self.queue.put(_STOP)
            if self.thread.is_alive():
                self.thread.join(timeout)
        return self.summary()

    # -- the worker --------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            wait = max(0.0, self.due[0][0] - time.time()) if self.due else 0.5
            try:
                item = self.queue.get(timeout=min(wait, 0.5))
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    self.handle(*item)
                self._revert_due()
            except Exception as e:  # noqa: BLE001 - the response must outlive one bad alert
                self.errors.append(f"{type(e).__name__}: {e}"[:300])

    def handle(self, alert, raised_at: float) -> None:
        """Every rule that matches ``alert`` (raised at ``raised_at``) considers it."""
        self.counts["alerts"] += 1
        fields = None
        for rule in self.response.rules:
            if not rule.when.matches(alert):
                continue
            self.counts["matched"] += 1
            fields = fields or alert_fields(alert, self.topo)
            self._consider(rule, alert, fields, raised_at)

    def _consider(self, rule: Rule, alert, fields: dict, raised_at: float) -> None:
        trigger = self._trigger(rule, alert, raised_at)
        try:
            params = render(rule.params, fields)
            key = render(rule.once_per, fields) if rule.once_per else \
                json.dumps(params, sort_keys=True)
        except Missing as m:
            self._refuse(rule, rule.params, f"cannot fill in {m}", trigger, key="?")
            return
        st = self.keys.setdefault((rule.name, str(key)), _Key())
        st.times.append(raised_at)
        while st.times and st.times[0] < raised_at - rule.when.window_s:
            st.times.popleft()
        if len(st.times) < rule.when.count:
            return
        trigger["alerts"] = len(st.times)
        if st.in_force is not None and st.in_force in self._active_ids():
            self.counts["suppressed"] += 1          # its action is still in force
            return
        st.in_force = None
        if st.last is not None and raised_at - st.last < rule.cooldown_s:
            self.counts["suppressed"] += 1
            return
        st.times.clear()
        st.last = raised_at
        reason = self._refusal(rule, params)
        if reason:
            self._refuse(rule, params, reason, trigger, key=key)
            return
        try:
            rec = actions.apply(self.twin, rule.action, params, actor=self.actor,
                                trigger=trigger)
        except UserError as e:                      # the planner said no: nothing changed
            self._refuse(rule, params, e.message, trigger, key=key)
            return
        self.taken += 1
        if rec["result"] == "applied" and rule.action in UNDO:
            st.in_force = rec["id"]
            if rule.for_s > 0:
                heapq.heappush(self.due, (rec["time"] + rule.for_s, rec["id"], rule.name,
                                          str(key)))
        self._emit(rec)

    def _refusal(self, rule: Rule, params: dict) -> str | None:
        """Why the response must not carry this action out, or None."""
        if self.taken >= self.response.max_actions:
            return (f"the response's limit of {self.response.max_actions} actions is reached "
                    f"(max_actions)")
        hit = sorted(self._targets(rule.action, params) & self.response.protected)
        if hit:
            return (f"{rule.action} would cut off {', '.join(hit)}, which never_isolate "
                    f"protects")
        return None

    def _targets(self, action: str, params: dict) -> set[str]:
        """The nodes an action cuts off: the node it isolates or ends the sessions of, the
        sources it blocks (a block of traffic *to* a node protects that node)."""
        if action in ("isolate", "kill-sessions"):
            return {str(params.get("node"))}
        if action == "block" and params.get("src"):
            return covered_nodes(self.topo, str(params["src"]))
        return set()

    def _refuse(self, rule: Rule, params, reason: str, trigger: dict, key) -> None:
        once = (rule.name, str(key), reason)
        if once in self.refusals:
            self.counts["suppressed"] += 1
            return
        self.refusals.add(once)
        rec = actions.record_refusal(self.twin, rule.action, params if isinstance(params, dict)
                                     else {}, self.actor, reason, trigger=trigger)
        self._emit(rec)

    def _revert_due(self) -> None:
        now = time.time()
        while self.due and self.due[0][0] <= now:
            _when, aid, rule_name, key = heapq.heappop(self.due)
            rule = next(r for r in self.response.rules if r.name == rule_name)
            trigger = {"response": self.response.name, "rule": rule_name,
                       "reason": f"for: {rule.for_s:g} s elapsed", "alert_time": None}
            try:
                rec = actions.revert(self.twin, aid, actor=self.actor, trigger=trigger)
            except UserError as e:                  # undone by hand meanwhile
                self.counts["revert_skipped"] += 1
                self.errors.append(f"revert of {aid}: {e.message}"[:300])
                continue
            st = self.keys.get((rule_name, key))
            if st is not None and st.in_force == aid:
                st.in_force = None
            self._emit(rec)

    # -- helpers -------------------------------------------------------------------------------
    def _trigger(self, rule: Rule, alert, raised_at: float) -> dict:
        """The alert's summary, as the defender's console shows it: no ground truth."""
        ts = getattr(alert, "timestamp", None)
        return {"response": self.response.name, "rule": rule.name,
                "detector": alert.rule_name, "family": alert.rule_category,
                "technique": alert.technique, "alert_id": alert.alert_id,
                "score": alert.score, "source.ip": alert.source_ip,
                "destination.ip": alert.destination_ip,
                "event_time": ts.timestamp() if ts is not None else None,
                "alert_time": round(raised_at, 6), "alerts": 1}

    def _active_ids(self) -> set[str]:
        return {r["id"] for r in actions.active(self.twin)}

    def _emit(self, rec: dict) -> None:
        self.records.append(rec)
        self.counts[rec["result"] if not rec.get("reverts") else "reverted"] += 1
        if self.on_action is not None:
            try:
                self.on_action(rec)
            except Exception:  # noqa: BLE001 - a display problem never stops the response
                pass

    def summary(self) -> dict:
        """What the response did: counts, response times (alert raised -> action applied),
        and the actions still in force (the teardown removes them)."""
        applied = [r for r in self.records if r["result"] == "applied" and not r.get("reverts")]
        times = [r["time"] - r["trigger"]["alert_time"] for r in applied
                 if (r.get("trigger") or {}).get("alert_time")]
        reverted = {r.get("reverts") for r in self.records if r.get("reverts")}
        in_force = [r["id"] for r in applied if r["action"] in UNDO and r["id"] not in reverted]
        return {"name": self.response.name, "file": self.response.file,
                "alerts": self.counts["alerts"], "matched": self.counts["matched"],
                "applied": len(applied), "refused": self.counts["refused"],
                "failed": self.counts["failed"], "reverted": self.counts["reverted"],
                "suppressed": self.counts["suppressed"],
                "after_stop": self.counts["after_stop"], "in_force_at_end": in_force,
                "response_s": _stats(times), "errors": self.errors[:20]}


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return {"n": len(values), "median": round(statistics.median(values), 4),
            "p95": round(p95, 4), "max": round(values[-1], 4)}


def start_response(session, run, twin, response: Response, stream, ui=None) -> ResponseEngine:
    """The drill's automated response: feed it the live alerts (the display keeps getting
    them), stop it in the session's cleanup before the sensors and the twin go; its summary
    goes to ``run.manifest["response"]``."""
    engine = ResponseEngine(response, twin, twin.topo,
                            on_action=getattr(ui, "response_action", None))
    stream.on_alert = engine.chain(stream.on_alert)
    run.manifest["response"] = {"name": response.name, "file": response.file,
                                "rules": [r.name for r in response.rules]}
    run.save()

    def stop():
        summary = engine.stop()
        run.manifest["response"].update(summary)
        if ui is not None and summary["in_force_at_end"]:
            ui.phase("cooldown", f"automated response: {len(summary['in_force_at_end'])} "
                                 f"action(s) still in force, removed with the twin")

    session.on_cleanup("stopping the automated response", stop)
    engine.start()
    if ui is not None:
        ui.phase("twin", f"automated response {response.name}: {len(response.rules)} rules on "
                         f"the live alerts")
    return engine
