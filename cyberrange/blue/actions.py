"""Blue actions on a running twin: the library API that the CLI (``cyberrange blue``) and the
automated response call.

::

    from cyberrange.blue import actions
    rec = actions.apply(twin, "block", {"src": "ops-ws1", "dst": "c2-server",
                                        "proto": "tcp", "port": 8080}, actor="alice")
    rec["id"], rec["result"]                      # "A1", "applied"
    actions.revert(twin, rec["id"], actor="alice")  # the unblock, logged as A2
    actions.active(run_dir)                       # applied, not undone, oldest first

``twin`` is whatever the caller holds: the owner's ``Twin``, an ``AttachedTwin``, a
``TwinState``, a reference (prefix, run id or run folder) or None (the only twin up); see
``blue/target.py``.

Every call is checked in full before the kernel changes (``blue/plans.py``): a bad node,
zone, rule, option or action id raises ``UserError`` and changes nothing, neither the twin
nor the action log. Then, under the log's lock (``blue/log.py``), the action takes its id,
makes its change (one ``nft -f`` transaction per namespace, ``blue/nft.py``; an action over
several firewalls takes back what it made if a later namespace refuses) and appends its
record, ``applied`` or ``failed`` with the reason. The record is returned either way.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

from cyberrange.blue import log, nft
from cyberrange.blue.plans import Plan, plan_block, plan_isolate, plan_rule_add
from cyberrange.blue.processes import plan_kill_sessions, plan_restart
from cyberrange.blue.target import live_twin
from cyberrange.errors import UserError

PLANNERS = {"block": plan_block, "isolate": plan_isolate, "rule-add": plan_rule_add,
            "kill-sessions": plan_kill_sessions, "restart-service": plan_restart}
#: what each undo verb may undo
UNDOES = {undo: action for action, undo in log.UNDO.items()}


def plan(twin, action: str, params: dict) -> Plan:
    """Check ``action`` with ``params`` against the twin; its plan (nothing changed yet)."""
    if action not in PLANNERS:
        from cyberrange.model.yamlsrc import did_you_mean
        raise UserError(f"unknown action {action!r}{did_you_mean(action, PLANNERS)} "
                        f"(actions: {', '.join(PLANNERS)}; undo with revert)")
    if not isinstance(params, dict):
        raise UserError(f"{action}: params must be a mapping")
    return PLANNERS[action](live_twin(twin), params)


def apply(twin, action: str, params: dict, actor: str = "blue", trigger: dict | None = None
          ) -> dict:
    """Carry out one blue action on a live twin and log it; the log record.

    ``action``: ``block`` (``src``, ``dst``, ``proto``, ``port``, ``at``: ``port`` |
    ``firewall`` | a firewall's name), ``isolate`` (``node``, ``allow``: [nodes]),
    ``rule-add`` (``firewall``, ``rule``: text or mapping, ``position``: ``first`` |
    ``last``), ``kill-sessions`` (``node``, ``peer``), ``restart-service`` (``node``,
    ``service``: type or port). ``actor``: a name, ``auto:<response>`` for the automated
    response. ``trigger``: the alert fields that caused it (logged as given).
    Raises ``UserError`` (nothing changed, nothing logged) on bad input."""
    lt = live_twin(twin)
    _check_actor(actor)
    p = PLANNERS[action](lt, params) if action in PLANNERS else plan(lt, action, params)
    with log.locked(lt.run_dir) as records:
        if p.check is not None:
            p.check(records)
        aid = log.next_id(records)
        with _uninterrupted():          # a Ctrl-C now would leave a change without its record
            t0 = time.monotonic()
            if p.run is not None:
                out = p.run(aid)
                result, objects, reason = ("applied" if out.ok else "failed"), out.objects, \
                    out.reason
            else:
                result, objects, reason = _make(p, aid)
            rec = log.record(aid, p.action, p.params, actor, lt.prefix, result=result,
                             reason=reason, objects=objects, applied_s=time.monotonic() - t0,
                             trigger=trigger)
            return log.append(lt.run_dir, rec)


def revert(twin, action_id: str, actor: str = "blue", trigger: dict | None = None,
           verb: str | None = None) -> dict:
    """Undo the active action ``action_id`` (block, isolate or rule-add) and log the undo
    (``unblock``, ``release``, ``rule-remove``; ``reverts``: the id). ``verb``: insist that
    the action is of the kind that verb undoes (the CLI's ``unblock`` takes only blocks).
    Raises ``UserError`` for an unknown id, an action that is not active or not undoable."""
    lt = live_twin(twin)
    _check_actor(actor)
    action_id = str(action_id or "").strip()
    if not (action_id[:1] == "A" and action_id[1:].isdigit()):
        raise UserError(f"{action_id!r} is not an action id (A1, A2, ...; `blue list` shows "
                        f"the active ones)")
    with log.locked(lt.run_dir) as records:
        target = _undoable(records, action_id, verb, lt.prefix)
        undo = log.UNDO[target["action"]]
        aid = log.next_id(records)
        others = [r for r in log.active_of(records) if r["id"] != action_id]
        with _uninterrupted():
            t0 = time.monotonic()
            result, reason = "applied", None
            for ns, script, (table, chain) in _undo_scripts(target, others):
                try:
                    nft.run(ns, script())
                except nft.NftError as e:
                    if nft.chain_exists(ns, table, chain):
                        result, reason = "failed", str(e)
                        break
                    reason = f"{chain} was already gone from {ns}"   # flushed by hand
            rec = log.record(aid, undo, {"id": action_id, **_summary(target)}, actor,
                             lt.prefix, result=result, reason=reason, reverts=action_id,
                             objects=target.get("objects"), applied_s=time.monotonic() - t0,
                             trigger=trigger)
            return log.append(lt.run_dir, rec)


def active(run_dir_or_twin) -> list[dict]:
    """The active actions of a run (applied, undoable, not undone), oldest first."""
    run_dir = _run_dir(run_dir_or_twin)
    with log.locked(run_dir, exclusive=False) as records:
        return log.active_of(records)


def history(run_dir_or_twin) -> list[dict]:
    """Every record of the action log, in order."""
    return log.read(_run_dir(run_dir_or_twin))


def record_refusal(twin, action: str, params: dict, actor: str, reason: str,
                   trigger: dict | None = None) -> dict:
    """Log an action that was decided but not carried out (the automated response's
    allow-list, a rate limit): result ``refused`` with ``reason``; the kernel is not touched."""
    lt = live_twin(twin)
    if action not in log.ACTIONS:
        raise UserError(f"unknown action {action!r}")
    with log.locked(lt.run_dir) as records:
        rec = log.record(log.next_id(records), action, dict(params or {}), actor, lt.prefix,
                         result="refused", reason=str(reason), trigger=trigger)
        return log.append(lt.run_dir, rec)


def release_target(twin, ref: str) -> str:
    """The id of the active isolation that ``release`` means: an id, or a node's name."""
    lt = live_twin(twin)
    if ref[:1] == "A" and ref[1:].isdigit():
        return ref
    lt.node(ref)
    hits = [r["id"] for r in active(lt.run_dir)
            if r["action"] == "isolate" and r["params"].get("node") == ref]
    if not hits:
        raise UserError(f"{ref} is not isolated (`blue list` shows the active actions)")
    return hits[-1]


# -- helpers ----------------------------------------------------------------------------------
@contextmanager
def _uninterrupted():
    """SIGINT, SIGTERM and SIGHUP held back (in the main thread, where Python takes them)
    from the kernel change to its log record; delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _make(p: Plan, aid: str) -> tuple[str, list[str], str | None]:
    """Run a plan's nftables changes in order; on a refusal take back the ones made."""
    try:
        changes = p.make(aid)
    except nft.NftError as e:
        return "failed", [], str(e)
    done = []
    for ch in changes:
        try:
            nft.run(ch.ns, ch.script)
        except nft.NftError as e:
            for prev in reversed(done):
                try:
                    nft.run(prev.ns, prev.undo)
                except nft.NftError:
                    pass
            return "failed", [], str(e)
        done.append(ch)
    return "applied", [o for ch in done for o in ch.objects], None


def _undoable(records: list[dict], action_id: str, verb: str | None, prefix: str) -> dict:
    by_id = {r.get("id"): r for r in records}
    target = by_id.get(action_id)
    if target is None:
        raise UserError(f"no action {action_id} in this run's log (`blue list` shows the "
                        f"active ones)")
    if target.get("action") not in log.UNDO:
        raise UserError(f"{action_id} is {_a(target.get('action'))}: it happened once and "
                        f"cannot be undone")
    if verb is not None and UNDOES.get(verb) != target["action"]:
        raise UserError(f"{action_id} is {_a(target['action'])}, not {_a(UNDOES.get(verb))}; "
                        f"undo it with `blue {_cli_verb(log.UNDO[target['action']])} "
                        f"{action_id}`")
    if target.get("result") != "applied":
        raise UserError(f"{action_id} was not applied ({target.get('result')}): nothing to undo")
    done = [r["id"] for r in records if r.get("reverts") == action_id
            and r.get("result") == "applied"]
    if done:
        raise UserError(f"{action_id} was already undone by {done[0]}")
    if target.get("twin") != prefix:
        raise UserError(f"{action_id} was applied to twin {target.get('twin')}, not {prefix}")
    return target


def _undo_scripts(target: dict, others: list[dict]) -> list[tuple]:
    """Per namespace, the script that removes the target's objects: its base chains (the
    whole table where no other active action has a chain in it), its rule chain and jump
    (found in the kernel when the script is made). ``(ns, make script, (table, chain))``."""
    in_use = {(o[1], o[2]) for r in others for o in map(nft.parse_object, r.get("objects") or [])
              if o[0] == "chain"}
    out = []
    for obj in map(nft.parse_object, target.get("objects") or []):
        if obj[0] == "chain" and obj[2] == nft.MODEL_TABLE:
            out.append((obj[1], lambda ns=obj[1]: nft.remove_rule_chain(ns, target["id"]),
                        obj[2:]))
        elif obj[0] == "chain":
            script = nft.remove_chain(obj[2], obj[3], last_in_table=(obj[1], obj[2]) not in in_use)
            out.append((obj[1], lambda script=script: script, obj[2:]))
    return out


def _summary(target: dict) -> dict:
    """The undone action's key parameters, repeated in the undo's record."""
    keep = ("src", "dst", "proto", "port", "at", "node", "allow", "firewall", "rule",
            "position")
    return {"undoes": target["action"],
            **{k: target["params"][k] for k in keep if k in (target.get("params") or {})}}


def _a(word) -> str:
    return ("an " if str(word)[:1] in "aeiou" else "a ") + str(word)


def _cli_verb(undo: str) -> str:
    return "rule remove" if undo == "rule-remove" else undo


def _check_actor(actor) -> None:
    import re
    if not isinstance(actor, str) or not re.fullmatch(r"[A-Za-z0-9_.@:+-]{1,64}", actor):
        raise UserError(f"bad actor name {actor!r}: 1-64 letters, digits or _ . @ : + -")


def _run_dir(x):
    from pathlib import Path
    if isinstance(x, (str, Path)) and Path(x).is_dir():
        return Path(x)
    state = getattr(x, "state", None) or x
    run_dir = getattr(state, "run_dir", None)
    if run_dir is None:
        return live_twin(x).run_dir
    return Path(run_dir)
