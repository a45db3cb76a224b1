"""The playbook runner: schedule the steps, resolve facts, guard targets, run agents, write the ledger.

Runs in the parent process (root namespace), one thread per step (steps may overlap).

Order. A step waits for every earlier step to end, unless it is ``parallel: true``: then it
starts when the step before it starts. Either way a step first waits for the steps whose facts
it uses (anywhere: targets, params, actor, requires, when). Then it waits ``timing.delay``
(jittered) from that moment, or until ``timing.at`` seconds after the playbook start.
``stop_event`` (or a containment refusal in any step) interrupts every wait and running agent.

Before the first step, every static target (zone, node, CIDR, address) of every step goes
through the containment guard, so an out-of-twin target ends the run before any packet at all.

Per step:

1. preconditions (``requires``, ``when``; :func:`facts.precondition_failure`): if one is
   false, or a fact the step uses is unavailable (its step was skipped or did not produce it),
   or nothing is left to attack, ONE ledger record with outcome ``skipped`` and the reason;
2. the actor: a host name, or ``#{step.fact}`` resolved to node names (ips, ip:port, names or
   credential mappings); with several, run from each (``from: each``, default) or the first;
3. targets (:func:`resolve_targets`): zone -> every usable host address of the zone's subnet
   except the actor's own; node -> its primary IP; CIDR -> its hosts; fact -> its items; a plain
   ip or ip:port stays; duplicates are dropped, order kept;
4. the containment guard on every resolved target (and on actor addresses from facts); a
   refusal raises ContainmentError: the run stops before this step's agent starts;
5. params: facts substituted (type kept for whole values), types checked against the catalog
   (a wrong type gives outcome ``error`` with the reason), the rate checked against the cap;
6. ``timing.repeat`` executions every ``timing.every`` s (jittered, from the playbook seed):
   each starts ``python -m cyberrange.attack.agent`` in the actor's namespace (several actors
   in parallel) and appends ONE ledger record (``repeat`` = k, fsync'ed, thread-safe).

The step's facts (for later steps) are the union of its executions' facts. Outcomes are the
agent's (succeeded | failed | blocked | error | stopped: ``agent.run_technique``); the runner
never upgrades one. Reasons in the ledger are one line: the agent's stderr (a traceback, library
warnings) goes to ``<run>/logs/agent-<step>-<actor>-<repeat>.err`` and an ``error`` names that
file. When the run is stopped, a running agent gets SIGTERM and reports what it sent so far
(outcome ``stopped``), within ``STOP_GRACE_S``.
``on_event(kind, payload)`` gets ``("step_start", {...})`` and ``("step_end", record)``.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from cyberrange.attack import guard
from cyberrange.attack.catalog import TECHNIQUES
from cyberrange.attack.facts import (
    FactUnavailable,
    check_param_types,
    expand_target,
    fact_items,
    precondition_failure,
    substitute,
)
from cyberrange.attack.ledger import (
    AGENT_OUTCOMES,
    append_record,
    make_record,
    normal_mac,
)
from cyberrange.attack.pathtime import stretch_waits
from cyberrange.attack.playbook import DEFAULT_MAX_RATE, FACT_REF, _refs_in
from cyberrange.attack.schedule import schedule
from cyberrange.errors import ContainmentError, UserError

STOP_GRACE_S = 10           # seconds a stopped agent has to report what it sent before SIGKILL


class TargetError(UserError):
    """A target or actor from a fact that names nothing in the topology (outcome error)."""


# --------------------------------------------------------------------------- targets
def _resolve_item(item: str, step_id: str, topology, own: set[str], allowed) -> list[str]:
    if item in topology.zones:
        net = topology.zones[item].subnet
        guard.check_targets([str(net)], allowed, step=step_id)
        return [str(a) for a in net.hosts() if str(a) not in own]
    if item in topology.nodes:
        return [str(topology.nodes[item].ip)]
    if "/" in item:
        guard.check_targets([item], allowed, step=step_id)
        return [str(a) for a in ipaddress.IPv4Network(item, strict=False).hosts()]
    try:
        guard.parse_target(item)
    except ValueError:
        raise TargetError(f"step '{step_id}': target {item!r} is not a zone, a node, an "
                          f"address, a CIDR or a #{{step.fact}} reference") from None
    return [item]


def resolve_targets(step, topology, facts: dict[str, dict], actor: str | None = None,
                    status: dict[str, str] | None = None) -> list[str]:
    """The step's targets as ip / ip:port strings (see the module doc) for ``actor`` (default:
    the step's). CIDRs and zones are guarded BEFORE they are expanded, so a 10.0.0.0/8 is
    refused instead of enumerated. Raises FactUnavailable, TargetError, ContainmentError."""
    actor = actor or step.actor
    node = topology.nodes.get(actor)
    if node is None:
        raise UserError(f"step '{step.id}': actor {actor!r} is not a node of topology "
                        f"{topology.name!r}")
    own = {str(i.ip) for i in node.interfaces}
    allowed = topology.address_space()
    out: list[str] = []
    for entry in step.targets:
        for item in expand_target(entry, facts, status):
            out.extend(_resolve_item(str(item).strip(), step.id, topology, own, allowed))
    return list(dict.fromkeys(out))


def check_static(playbook, topology) -> None:
    """Guard every target written literally in the playbook (no fact) and check every literal
    actor, before anything runs. Raises ContainmentError / UserError."""
    allowed = topology.address_space()
    for step in playbook.steps:
        if not FACT_REF.match(step.actor) and step.actor not in topology.nodes:
            raise UserError(f"step '{step.id}': actor {step.actor!r} is not a node of topology "
                            f"{topology.name!r}")
        for entry in step.targets:
            entry = str(entry).strip()
            if "#{" in entry:
                continue
            if entry in topology.zones:
                guard.check_targets([str(topology.zones[entry].subnet)], allowed, step=step.id)
            elif entry in topology.nodes:
                guard.check_targets([str(topology.nodes[entry].ip)], allowed, step=step.id)
            else:
                try:
                    guard.parse_target(entry)
                except ValueError:
                    raise UserError(f"step '{step.id}': target {entry!r} is not a zone, a node, "
                                    f"an address, a CIDR or a #{{step.fact}} reference") from None
                guard.check_targets([entry], allowed, step=step.id)


def check_playbook(path, topology_path=None) -> tuple:
    """Every check a playbook gets without a twin, for ``attack validate`` and ``playbook check``
    alike: the file itself (schema, catalogue, facts, limits) and, with a topology, its names
    and every literal actor and target (the containment guard), as :meth:`PlaybookRun.run` does
    before its first packet. Returns ``(playbook, topology or None)``; raises UserError."""
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.model.loader import load_topology
    topology = load_topology(topology_path) if topology_path else None
    playbook = load_playbook(path, topology)
    if topology is not None:
        check_static(playbook, topology)
    return playbook, topology


def static_target_count(step, topology) -> int | None:
    """How many addresses the step's literal targets resolve to (None if they all come from
    facts); for ``attack validate``."""
    if FACT_REF.match(step.actor):
        actor = None
    else:
        actor = step.actor
    own = {str(i.ip) for i in topology.nodes[actor].interfaces} if actor in topology.nodes else set()
    allowed = topology.address_space()
    out: list[str] = []
    static = [t for t in step.targets if "#{" not in str(t)]
    if not static:
        return None
    for entry in static:
        out.extend(_resolve_item(str(entry).strip(), step.id, topology, own, allowed))
    return len(dict.fromkeys(out))


def _ips(targets: list[str]) -> list[str]:
    return list(dict.fromkeys(t.rsplit(":", 1)[0] if ":" in t and "/" not in t else t
                              for t in targets))


# --------------------------------------------------------------------------- the agent
def _run_agent(node_runner, actor: str, request: dict, stop_event=None) -> tuple[dict | None, str, int]:
    """Start the agent in the actor's namespace; (result or None, stderr, returncode)."""
    proc = node_runner.popen(actor, [sys.executable, "-m", "cyberrange.attack.agent"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    payload: str | None = json.dumps(request)
    out = err = ""
    while True:
        try:
            o, e = proc.communicate(input=payload, timeout=0.5)
            out, err = out + (o or ""), err + (e or "")
            break
        except subprocess.TimeoutExpired:
            payload = None           # sent on the first call; later calls only wait
            if stop_event is not None and stop_event.is_set():
                proc.terminate()        # the agent unwinds and reports what it sent
                try:
                    o, e = proc.communicate(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    o, e = proc.communicate()
                out, err = out + (o or ""), err + (e or "")
                break
    result = None
    for line in reversed(out.strip().splitlines()):
        try:
            cand = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(cand, dict) and "outcome" in cand:
            result = cand
            break
    return result, err, proc.returncode


def mac_for_ip(links, ip: str) -> str | None:
    """The MAC of the interface that holds ``ip`` in the output of ``ip -j addr show`` (a list
    of links, each with ``address`` and ``addr_info``); None when no interface holds it."""
    for link in links if isinstance(links, list) else []:
        addrs = link.get("addr_info") if isinstance(link, dict) else None
        if any(isinstance(a, dict) and a.get("local") == ip for a in addrs or []):
            return normal_mac(link.get("address"))
    return None


def read_actor_mac(node_runner, actor: str, ip: str) -> str | None:
    """The actor's MAC as its own kernel has it: ``ip -j addr show`` in its namespace (netlink,
    no frame on the wire), whatever built the twin. None when the node runner cannot run a
    command (a test stub) or no interface holds ``ip``: a MAC is evidence for scoring (an ARP
    alert names a MAC), never a reason to fail a step."""
    run = getattr(node_runner, "run", None)
    if run is None:
        return None
    try:
        r = run(actor, ["ip", "-j", "addr", "show"], timeout=10)
        return mac_for_ip(json.loads(r.stdout or "[]"), ip)
    except (OSError, ValueError, KeyError, subprocess.SubprocessError, UserError):
        return None


# --------------------------------------------------------------------------- the run
class _Halt:
    """Stops the run: set by a containment refusal or a crash in any step, or by the caller's
    ``stop_event``. ``is_set`` is what ``_run_agent`` polls."""

    def __init__(self, outer: threading.Event | None):
        self.outer, self.event = outer, threading.Event()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set() or (self.outer is not None and self.outer.is_set())

    def sleep_until(self, deadline: float) -> bool:
        """Wait until ``time.monotonic() >= deadline``; False if halted first."""
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.event.wait(min(left, 0.1))
        return False


def _join(threads) -> None:
    for th in list(threads):
        while th.is_alive():
            th.join(0.2)


def _depends(step) -> list[str]:
    deps = getattr(step, "depends_on", None)
    if deps is None:
        deps = list(dict.fromkeys(s for s, _f in _refs_in(list(step.targets))))
    return deps


def merge_facts(items: list[dict]) -> dict:
    """The facts of several executions: lists are united (order kept), other values: last wins."""
    out: dict = {}
    for facts in items:
        for k, v in (facts or {}).items():
            if isinstance(v, list) and isinstance(out.get(k), list):
                seen = {json.dumps(x, sort_keys=True, default=str) for x in out[k]}
                out[k] = out[k] + [x for x in v
                                   if json.dumps(x, sort_keys=True, default=str) not in seen]
            else:
                out[k] = v
    return out


class PlaybookRun:
    """One run of a playbook against a NodeRunner; ``run()`` returns the ledger records."""

    def __init__(self, playbook, topology, node_runner, ledger_path, run_id: str,
                 on_event=None, stop_event: threading.Event | None = None,
                 seed: int | None = None):
        self.playbook, self.topology, self.node_runner = playbook, topology, node_runner
        self.ledger_path, self.run_id = ledger_path, run_id
        self.emit_cb = on_event or (lambda kind, payload: None)
        self.halt = _Halt(stop_event)
        self.allowed = topology.address_space()
        self.seed = int(seed if seed is not None else getattr(playbook, "seed", 0) or 0)
        self.max_rate = float(getattr(playbook, "max_rate", 0) or DEFAULT_MAX_RATE)
        self.facts: dict[str, dict] = {}
        self.status: dict[str, str] = {}       # step id -> "skipped" | its last outcome
        self.records: list[dict] = []
        self.macs: dict[str, str | None] = {}  # actor -> its MAC (read_actor_mac), once each
        self.lock = threading.Lock()           # facts, status, records, ledger, events
        self.failure: BaseException | None = None
        self.t0 = time.monotonic()

    # -- scheduling ----------------------------------------------------------
    def run(self) -> list[dict]:
        check_static(self.playbook, self.topology)      # before any packet of any step
        self.t0 = time.monotonic()
        threads: dict[str, threading.Thread] = {}
        try:
            for step in self.playbook.steps:
                if self.halt.is_set():
                    break
                if not getattr(step, "parallel", False):
                    _join(threads.values())             # every earlier step has ended
                    if self.halt.is_set():
                        break
                deps = [threads[d] for d in _depends(step) if d in threads]
                th = threading.Thread(target=self._step_thread,
                                      args=(step, deps, time.monotonic()),
                                      name=f"step-{step.id}", daemon=True)
                threads[step.id] = th
                th.start()
            _join(threads.values())
        except BaseException:
            self.halt.set()
            _join(threads.values())
            raise
        if self.failure is not None:
            raise self.failure
        return self.records

    def _step_thread(self, step, deps, launched: float) -> None:
        try:
            self._run_step(step, deps, launched)
        except BaseException as exc:           # noqa: BLE001 - re-raised by run()
            with self.lock:
                if self.failure is None:
                    self.failure = exc
            self.halt.set()

    def _run_step(self, step, deps, launched: float) -> None:
        _join(deps)
        if self.halt.is_set():
            return
        base = max(launched, time.monotonic())
        first_wait, offsets = schedule(step, self.seed)
        timing = getattr(step, "timing", None)
        start = (max(self.t0 + first_wait, base) if timing is not None and timing.at is not None
                 else base + first_wait)
        if not self.halt.sleep_until(start):
            return
        with self.lock:
            facts, status = dict(self.facts), dict(self.status)

        reason = precondition_failure(step, facts, status)
        if reason:
            return self._skip(step, reason)
        try:
            actors = self._actors(step, facts, status)
        except FactUnavailable as e:
            return self._skip(step, f"actor: {e.message}")
        except TargetError as e:
            return self._fail(step, [step.actor], e.message)
        if not actors:
            return self._skip(step, f"no actor: {step.actor} is empty")
        plan: dict[str, list[str]] = {}
        for actor in actors:
            try:
                targets = resolve_targets(step, self.topology, facts, actor, status)
            except FactUnavailable as e:
                return self._skip(step, f"targets: {e.message}")
            except TargetError as e:
                return self._fail(step, actors, e.message)
            guard.check_targets(targets, self.allowed, step=step.id)   # refusal ends the run
            if targets:
                plan[actor] = targets
        if not plan:
            return self._skip(step, "no targets after resolution: "
                              + ", ".join(map(str, step.targets)) + " resolved to nothing")
        try:
            params = substitute(dict(step.params or {}), facts, status)
        except FactUnavailable as e:
            return self._skip(step, f"params: {e.message}")
        problem = check_param_types(step.technique, params)
        rate = params.get("rate")
        if problem is None and isinstance(rate, (int, float)) and not isinstance(rate, bool) \
                and rate > self.max_rate:
            problem = (f"params.rate {rate:g} packets/s (after fact substitution) is above the "
                       f"per-step cap of {self.max_rate:g}")
        if problem:
            return self._fail(step, list(plan), problem)

        first = time.monotonic()
        for k, offset in enumerate(offsets):
            if k and not self.halt.sleep_until(first + offset):
                break
            if self.halt.is_set():
                break
            if len(plan) == 1:
                (actor, targets), = plan.items()
                self._execute(step, actor, targets, params, k)
            else:
                ths = [threading.Thread(target=self._execute_guarded,
                                        args=(step, a, t, params, k), daemon=True)
                       for a, t in plan.items()]
                for th in ths:
                    th.start()
                _join(ths)
        with self.lock:
            mine = [r for r in self.records if r["step_id"] == step.id]
            self.facts[step.id] = merge_facts([r["facts"] for r in mine])
            self.status[step.id] = mine[-1]["outcome"] if mine else "stopped"

    def _actors(self, step, facts, status) -> list[str]:
        if not FACT_REF.match(step.actor):
            return [step.actor]
        names = []
        for item in fact_items(substitute(step.actor, facts, status)):
            node = self.topology.nodes.get(item)
            if node is None:
                ip = item.rsplit(":", 1)[0] if ":" in item else item
                try:
                    guard.parse_target(ip)
                except ValueError:
                    raise TargetError(f"step '{step.id}': actor {item!r} from {step.actor} is "
                                      f"not a node name or an address") from None
                guard.check_targets([ip], self.allowed, step=step.id)    # out of the twin: stop
                node = self.topology.node_by_ip(ip)
                if node is None:
                    raise TargetError(f"step '{step.id}': actor {ip} from {step.actor} is no "
                                      f"node of topology {self.topology.name}")
            if not node.is_host:
                raise TargetError(f"step '{step.id}': actor {node.name} from {step.actor} is a "
                                  f"{node.kind}; steps run on hosts")
            names.append(node.name)
        names = list(dict.fromkeys(names))
        if getattr(step, "actor_from", "each") == "first":
            names = names[:1]
        return names

    # -- records -------------------------------------------------------------
    def _write(self, record: dict) -> None:
        with self.lock:
            append_record(self.ledger_path, record)
            self.records.append(record)
            self.emit_cb("step_end", record)

    def _mac_of(self, actor: str) -> str | None:
        """The actor's MAC for the ledger (``source.mac``), read once per actor."""
        with self.lock:
            if actor in self.macs:
                return self.macs[actor]
        mac = read_actor_mac(self.node_runner, actor, str(self.topology.nodes[actor].ip))
        with self.lock:
            return self.macs.setdefault(actor, mac)

    def _record(self, step, actor, **kw) -> dict:
        node = self.topology.nodes.get(actor) if actor else None
        now = time.time()
        fields = {"run_id": self.run_id, "step_id": step.id, "name": step.name,
                  "technique": step.technique, "actor": actor if node else None,
                  "actor_ip": str(node.ip) if node else None,
                  "actor_mac": self.macs.get(actor) if node else None,   # known ones only
                  "start": now, "end": now}
        fields.update(kw)
        return make_record(**fields)

    def _skip(self, step, reason: str) -> None:
        actor = None if FACT_REF.match(step.actor) else step.actor
        self._write(self._record(step, actor, outcome="skipped", skipped_reason=reason))
        with self.lock:
            self.status[step.id] = "skipped"

    def _fail(self, step, actors: list[str], message: str) -> None:
        for actor in actors:
            self._write(self._record(step, actor, outcome="error", error=message))
        with self.lock:
            self.facts[step.id] = {}
            self.status[step.id] = "error"

    def _execute_guarded(self, *args) -> None:
        try:
            self._execute(*args)
        except BaseException as exc:           # noqa: BLE001 - re-raised by run()
            with self.lock:
                if self.failure is None:
                    self.failure = exc
            self.halt.set()

    def _execute(self, step, actor: str, targets: list[str], params: dict, repeat: int) -> None:
        # answer waits the playbook left at their default follow the path (attack/pathtime.py)
        params, note = stretch_waits(step.technique, params, getattr(step, "given", ()),
                                     self.topology, actor, targets)
        with self.lock:
            self.emit_cb("step_start", {"run_id": self.run_id, "step_id": step.id,
                                        "name": step.name, "technique": step.technique,
                                        "actor": actor, "targets": targets, "repeat": repeat,
                                        "time": time.time(), "note": note})
        request = {"technique": step.technique, "targets": targets, "params": params,
                   "allowed": [str(n) for n in self.allowed], "step": step.id,
                   "max_rate": self.max_rate}
        started = time.time()
        spec = TECHNIQUES.get(step.technique)
        if spec is not None and spec.runs_on == "twin":     # RF jamming: no agent, no packet
            from cyberrange.attack.techniques.rf import run_on_twin
            result, stderr, rc = run_on_twin(spec, self.node_runner, request, self.halt, step), "", 0
        else:
            result, stderr, rc = _run_agent(self.node_runner, actor, request, self.halt)
        where = self._keep_stderr(step.id, actor, repeat,
                                  (f"runner: {note}\n" if note else "") + (stderr or ""))
        if result is None:
            last = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "")
            stopped = self.halt.is_set()
            result = {"outcome": "stopped" if stopped else "error", "start": started,
                      "end": time.time(), "flows": [], "facts": {},
                      "error": None if stopped else
                      f"the agent exited with status {rc} and no result"
                      + (f" ({last.strip()[:200]})" if last else "")
                      + (f"; its stderr is in {where}" if where else "")}
        elif result.get("outcome") == "error" and where:
            result["error"] = f"{result.get('error')} (traceback in {where})"
        if result.get("outcome") == "error" and "agent refused" in str(result.get("error")):
            # the agent's own guard disagreed with ours: treat it like ours did
            raise ContainmentError(f"step '{step.id}': {result['error']}")
        outcome = result.get("outcome")
        if outcome not in AGENT_OUTCOMES:
            result["error"] = (f"the technique reported outcome {outcome!r} (not one of "
                               f"{', '.join(AGENT_OUTCOMES)}); {result.get('error') or ''}")
            outcome = "error"
        record = make_record(
            run_id=self.run_id, step_id=step.id, name=step.name, technique=step.technique,
            actor=actor, actor_ip=str(self.topology.nodes[actor].ip),
            actor_mac=self._mac_of(actor), targets=_ips(targets),
            start=result.get("start", started), end=result.get("end", time.time()),
            outcome=outcome, flows=result.get("flows", []), facts=result.get("facts", {}),
            error=result.get("error") if outcome in ("error", "failed") else None,
            repeat=repeat,
            skipped_reason=None, blocked_reason=result.get("blocked_reason"),
            arp_frames=result.get("arp_frames") or 0)
        self._write(record)

    def _keep_stderr(self, step_id: str, actor: str, repeat: int, stderr: str) -> str | None:
        """Write the agent's stderr (tracebacks, library warnings) to the run's logs folder;
        the ledger's one-line reasons point at it. Returns the path relative to the run
        folder, or None when there was nothing to keep."""
        if not stderr.strip():
            return None
        run_dir = Path(self.ledger_path).parent
        rel = Path("logs") / f"agent-{step_id}-{actor}-{repeat}.err"
        try:
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(stderr, encoding="utf-8", errors="replace")
        except OSError:
            return None
        return str(rel)


def run_playbook(playbook, topology, node_runner, ledger_path, run_id: str,
                 on_event=None, stop_event: threading.Event | None = None,
                 seed: int | None = None) -> list[dict]:
    """Run ``playbook`` against the twin behind ``node_runner``; returns the ledger records
    written, in the order they were written. ``seed`` overrides the playbook's."""
    return PlaybookRun(playbook, topology, node_runner, ledger_path, run_id, on_event,
                       stop_event, seed).run()
