"""The playbook runner: resolve each step's targets, guard them, run the agent, write the ledger.

Runs in the parent process (root namespace). For every step, in order:

1. wait ``step.delay_s`` (``stop_event`` interrupts the wait and ends the run);
2. resolve the targets (:func:`resolve_targets`): zone name -> every usable host address of the
   zone's subnet except the actor's own; node name -> its primary IP; CIDR -> its hosts;
   ``"#{step.fact}"`` -> that earlier step's fact (ips or ip:port strings); a plain ip or ip:port
   stays; duplicates are dropped, order is kept;
3. check them with the containment guard against ``topology.address_space()``; a refusal raises
   ContainmentError and ends the run before this step's agent starts (nothing is sent);
4. start ``python -m cyberrange.attack.agent`` inside the actor's namespace, send the request,
   read the result (the agent checks the targets again before its first packet);
5. append the ledger record (fsync'ed) and report ``step_end``.

``on_event(kind, payload)`` gets ``("step_start", {...})`` and ``("step_end", record)``.
"""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import threading
import time

from cyberrange.attack import guard
from cyberrange.attack.ledger import append_record, make_record
from cyberrange.errors import ContainmentError, UserError

FACT_REF = re.compile(r"^#\{\s*([A-Za-z0-9_.-]+?)\.([A-Za-z0-9_-]+)\s*\}$")
STDERR_TAIL = 4000          # characters of the agent's stderr kept in an error


def _fact_values(value) -> list[str]:
    """A fact as target strings: lists of ips / ip:port, or credential dicts (their target)."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    out = []
    for v in value:
        if isinstance(v, dict):
            v = v.get("target") or v.get("ip")
        if v:
            out.append(str(v))
    return out


def resolve_targets(step, topology, facts: dict[str, dict]) -> list[str]:
    """The step's targets as ip / ip:port strings (see the module doc). CIDRs and zones are
    guarded BEFORE they are expanded, so a 10.0.0.0/8 is refused instead of enumerated."""
    actor = topology.nodes.get(step.actor)
    if actor is None:
        raise UserError(f"step '{step.id}': actor {step.actor!r} is not a node of topology "
                        f"{topology.name!r}")
    own = {str(i.ip) for i in actor.interfaces}
    allowed = topology.address_space()
    out: list[str] = []
    for entry in step.targets:
        entry = str(entry).strip()
        m = FACT_REF.match(entry)
        if m:
            ref_step, fact = m.groups()
            if ref_step not in facts:
                raise UserError(f"step '{step.id}': target {entry} refers to step {ref_step!r}, "
                                f"which has not run before it")
            if fact not in facts[ref_step]:
                raise UserError(f"step '{step.id}': step {ref_step!r} produced no fact {fact!r} "
                                f"(it has: {', '.join(sorted(facts[ref_step])) or 'none'})")
            out.extend(_fact_values(facts[ref_step][fact]))
        elif entry in topology.zones:
            net = topology.zones[entry].subnet
            guard.check_targets([str(net)], allowed, step=step.id)
            out.extend(str(a) for a in net.hosts() if str(a) not in own)
        elif entry in topology.nodes:
            out.append(str(topology.nodes[entry].ip))
        elif "/" in entry:
            guard.check_targets([entry], allowed, step=step.id)
            out.extend(str(a) for a in ipaddress.IPv4Network(entry, strict=False).hosts())
        else:
            try:
                guard.parse_target(entry)
            except ValueError:
                raise UserError(f"step '{step.id}': target {entry!r} is not a zone, a node, an "
                                f"address, a CIDR or a #{{step.fact}} reference") from None
            out.append(entry)
    return list(dict.fromkeys(out))


def _ips(targets: list[str]) -> list[str]:
    return list(dict.fromkeys(t.rsplit(":", 1)[0] if ":" in t else t for t in targets))


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
                proc.terminate()
                try:
                    o, e = proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    o, e = proc.communicate()
                out, err = out + (o or ""), err + (e or "") + "\n[stopped by the operator]"
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


def run_playbook(playbook, topology, node_runner, ledger_path, run_id: str,
                 on_event=None, stop_event: threading.Event | None = None) -> list[dict]:
    """Run every step of ``playbook`` against the twin; returns the ledger records written."""
    emit = on_event or (lambda kind, payload: None)
    allowed = topology.address_space()
    facts: dict[str, dict] = {}
    records: list[dict] = []
    for step in playbook.steps:
        delay = float(getattr(step, "delay_s", 0) or 0)
        if delay > 0:
            if stop_event is not None:
                if stop_event.wait(delay):
                    break
            else:
                time.sleep(delay)
        if stop_event is not None and stop_event.is_set():
            break

        targets = resolve_targets(step, topology, facts)
        # the containment guard: raises (and so ends the run) before the agent starts
        guard.check_targets(targets, allowed, step=step.id)
        actor = topology.nodes[step.actor]
        emit("step_start", {"run_id": run_id, "step_id": step.id, "name": step.name,
                            "technique": step.technique, "actor": step.actor,
                            "targets": targets, "time": time.time()})
        request = {"technique": step.technique, "targets": targets,
                   "params": dict(step.params or {}), "allowed": [str(n) for n in allowed],
                   "step": step.id}
        started = time.time()
        if targets:
            result, stderr, rc = _run_agent(node_runner, step.actor, request, stop_event)
        else:
            result, stderr, rc = ({"outcome": "failed", "start": started, "end": started,
                                   "flows": [], "facts": {}, "error": None,
                                   "log": ["no targets after resolution"]}, "", 0)
        if result is None:
            tail = stderr.strip()[-STDERR_TAIL:]
            result = {"outcome": "error", "start": started, "end": time.time(), "flows": [],
                      "facts": {}, "error": f"agent exited with status {rc} and no result; "
                                            f"stderr: {tail or '(empty)'}"}
        elif result.get("outcome") == "error" and rc != 0 and stderr.strip():
            result["error"] = f"{result.get('error')}; stderr: {stderr.strip()[-STDERR_TAIL:]}"
        if result.get("outcome") == "error" and "agent refused" in str(result.get("error")):
            # the agent's own guard disagreed with ours: treat it like ours did
            raise ContainmentError(f"step '{step.id}': {result['error']}")
        record = make_record(
            run_id=run_id, step_id=step.id, name=step.name, technique=step.technique,
            actor=step.actor, actor_ip=str(actor.ip), targets=_ips(targets),
            start=result.get("start", started), end=result.get("end", time.time()),
            outcome=result.get("outcome", "error"), flows=result.get("flows", []),
            facts=result.get("facts", {}), error=result.get("error"))
        append_record(ledger_path, record)
        records.append(record)
        facts[step.id] = record["facts"]
        emit("step_end", record)
    return records
