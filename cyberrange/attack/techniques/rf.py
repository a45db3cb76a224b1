"""RF: jamming a tactical link, an adversary action that sends no packet.

ATT&CK has no Enterprise or ICS technique for radio-frequency jamming, so the step has a
documented custom id, ``CR-J0001`` "RF jamming of a tactical link", related to ATT&CK Mobile
``T1464`` (Network Denial of Service) and to the ICS impacts ``T0814`` (Denial of Service) and
``T0815`` (Denial of View). The id is no ATT&CK id: ``threat.technique.id`` stays null, the
Navigator layer leaves it out with a note and the STIX bundle has an attack-pattern with the
custom external id and no MITRE reference (docs/techniques.md).

Where it runs. A jammer is no host on the network: the step runs in the runner's process
against the twin itself (``runs_on="twin"``), not in the actor's namespace. It sets the link's
state with the twin's ``twin.ddil.LinkControl``, which the drill (or ``attack run``) attaches
as ``twin.link_control`` (attack/ sits below twin/ and does not import it): ``jammed`` (every
frame lost, interfaces stay up) or ``degraded`` (the loss and delay given) for ``duration``
seconds, then ``up`` again; both
changes go to ``logs/links.jsonl`` with the step in their reason, as schedule events do.

Containment: the link must be a zone or point-to-point link of the twin's topology and its
subnet inside the twin's address space (``guard.check_targets``), else ContainmentError (the
run stops; nothing was changed).

Observed effect (issue 15: ``succeeded`` only when the effect is seen):

| mode | succeeded when | else |
|---|---|---|
| ``jammed`` | the nftables drop counters of the link's bridge ports count at least one frame dropped while it was jammed | ``failed``: nothing tried to cross the link, the jam denied nothing |
| ``degraded`` | with ``loss``: at least one frame dropped (counters as above; on a link the relay carries, the loss is the relay's own and its drop counter in ``logs/linkemu.json`` counts instead); with ``delay`` only (or the relay's counter unreadable): the values were emulated and frames crossed the link (its bridge ports' receive counters) | ``failed`` with what was not observed or not emulated |

Packet sensors cannot see a jammer (``unobservable``): the scorer leaves the step out of the
detection counts, so it is never a missed detection.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cyberrange.attack.spec import Param, technique
from cyberrange.attack.techniques.common import Result, one_line

JAM_ID = "CR-J0001"
MAX_JAM_S = 600.0             # the longest jam of one step (s)
MODES = ("jammed", "degraded")
UNOBSERVABLE = ("RF jamming sends no packet: not observable by packet sensors (not counted as a "
                "missed detection)")


@dataclass
class TwinSide:
    """What a twin-side technique gets besides its targets and params."""
    twin: object                  # a built Twin (``twin/build.py``)
    step_id: str
    step_name: str
    halt: object                  # ``runner._Halt``: sleep_until(deadline) -> False when halted
    allowed: list                 # the twin's address space
    written: list                 # the step's targets as the playbook writes them


def jam_link(params: dict, written: list, zones) -> str:
    """The link a step jams: ``params.link``, or (left empty) the step's one target as written
    when it is a zone of ``zones``; "" when neither."""
    link = str(params.get("link") or "").strip()
    if link:
        return link
    if len(written) == 1 and str(written[0]).strip() in zones:
        return str(written[0]).strip()
    return ""


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def jam_values(params: dict) -> dict:
    """The LinkControl values of a ``degraded`` jam (loss %, delay ms), those given only."""
    given = {"loss": params.get("loss"), "delay": params.get("delay")}
    return {k: float(v) for k, v in given.items() if _positive(v)}


def param_problem(params: dict) -> tuple[str, str] | None:
    """``(parameter, what is wrong)`` for a jam's parameters alone, or None (the loader's and
    the runtime's one rule)."""
    mode, d = params.get("mode"), params.get("duration")
    if isinstance(mode, str) and "#{" not in mode and mode not in MODES:
        return "mode", f"mode '{mode}' is not one of {', '.join(MODES)}"
    if isinstance(d, (int, float)) and not isinstance(d, bool) and not 0 < d <= MAX_JAM_S:
        return "duration", (f"duration {d:g} s: a jam lasts more than 0 and at most "
                            f"{MAX_JAM_S:g} s per step")
    given = jam_values(params)
    if given.get("loss", 0) > 100:
        return "loss", f"loss {given['loss']:g} %: at most 100"
    if mode == "jammed" and given:
        key = next(iter(given))
        return key, f"{key} applies to mode degraded (a jammed link loses every frame)"
    if mode == "degraded" and not given:
        return "mode", "mode degraded needs loss (%) or delay (ms) greater than 0"
    return None


# --------------------------------------------------------------------------- counters
def drop_counts(control, ports: list[str]) -> dict[str, int]:
    """Frames the DDIL table's drop rules dropped so far, per bridge port (``nft -j``)."""
    r = control.twin.switch_run(["nft", "-j", "list", "table", "netdev", control.table])
    out = {p: 0 for p in ports}
    if r.returncode:
        return out
    try:
        items = json.loads(r.stdout).get("nftables", [])
    except ValueError:
        return out
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or rule.get("chain") not in out:
            continue
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and "counter" in expr:
                out[rule["chain"]] += int(expr["counter"].get("packets", 0))
    return out


def rx_frames(twin, ports: list[str]) -> int:
    """Frames the link's bridge ports received so far (they reach the port before its drops)."""
    r = twin.switch_run(["ip", "-j", "-s", "link", "show"])
    if r.returncode:
        return 0
    try:
        links = json.loads(r.stdout)
    except ValueError:
        return 0
    return sum(int(x.get("stats64", {}).get("rx", {}).get("packets", 0))
               for x in links if x.get("ifname") in ports)


def relay_lost(twin, names: list[str], fresh_after: float | None = None,
               wait_s: float = 3.0) -> int | None:
    """Frames the link relay (``twin/linkemu.py``) dropped so far on the relayed ports
    ``names`` (``node/dev``), from its stats file; with ``fresh_after``, waits (at most
    ``wait_s``) for stats written after that time (the relay writes them every 2 s). None when
    the file cannot be read."""
    path = getattr(twin, "relay_stats", None)
    if path is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            body = None
        fresh = body is not None and (fresh_after is None
                                      or float(body.get("written", 0)) >= fresh_after)
        if fresh or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if body is None:
        return None
    return sum(int(d.get("lost", 0)) for d in body.get("directions", [])
               if d.get("link") in names)


# --------------------------------------------------------------------------- the technique
@technique(
    JAM_ID, "RF jamming of a tactical link", "impact",
    {
        "link": Param(str, "", "the zone or point-to-point link to jam (empty: the step's one "
                               "target, which must be a zone)"),
        "duration": Param((int, float), 10, f"seconds the link stays jammed, then it is set up "
                                            f"again (more than 0, at most {MAX_JAM_S:g})"),
        "mode": Param(str, "jammed", "jammed: every frame lost, interfaces stay up; degraded: "
                                     "the loss and delay below"),
        "loss": Param((int, float), 0, "mode degraded: percent of frames lost (0..100)"),
        "delay": Param((int, float), 0, "mode degraded: one-way delay in ms (emulated where the "
                                        "link relay carries the link)"),
    },
    produces=("link", "dropped"), runs_on="twin",
    unobservable=UNOBSERVABLE, related=("T1464", "T0814", "T0815"))
def jam(targets: list[str], params: dict, side: TwinSide) -> Result:
    from cyberrange.attack import guard
    from cyberrange.errors import ContainmentError
    res = Result(start=time.time())
    topo = side.twin.topo
    link = jam_link(params, side.written, topo.zones)
    if link not in topo.zones:
        raise ContainmentError(f"step '{side.step_id}': link {link!r} is not a link of twin "
                               f"{topo.name}; nothing was changed")
    guard.check_targets([str(topo.zones[link].subnet)], side.allowed, step=side.step_id)
    problem = param_problem(params)
    if problem:
        res.outcome, res.error, res.end = "error", problem[1], time.time()
        return res
    mode, duration = params["mode"], float(params["duration"])
    control = side.twin.link_control
    members = control.ports(link)
    ports = [p[2] for p in members]
    relay_ports = getattr(side.twin, "relay_ports", {})
    relayed_names = [f"{p[0]}/{p[3]}" for p in members if (p[0], p[1]) in relay_ports]
    relayed = bool(relayed_names)
    before, rx0 = drop_counts(control, ports), rx_frames(side.twin, ports)
    values = jam_values(params) if mode == "degraded" else {}
    # a relayed link's degraded loss is the relay's own (no nftables drop): count its drops
    counting_relay = relayed and mode == "degraded" and "loss" in values
    lost0 = relay_lost(side.twin, relayed_names) if counting_relay else None
    who = f"step {side.step_id} ({JAM_ID} {side.step_name})"
    rec = control.set(link, mode, values, reason=f"{who}: {mode}")
    stopped = True
    try:
        stopped = not side.halt.sleep_until(time.monotonic() + duration)
        after, rx1 = drop_counts(control, ports), rx_frames(side.twin, ports)
        jam_end = time.time()
    finally:                            # whatever happens, the jam ends with the step
        control.set(link, "up", reason=f"{who}: " + ("stopped" if stopped else "jam ended"))
    dropped = sum(after.values()) - sum(before.values())
    if lost0 is not None and not stopped:
        lost1 = relay_lost(side.twin, relayed_names, fresh_after=jam_end)
        if lost1 is not None:
            dropped += max(0, lost1 - lost0)
            relayed = False             # its drops are counted: judged as any loss
    crossed = rx1 - rx0
    res.facts = {"link": link, "dropped": dropped, "frames": crossed,
                 "seconds": round(time.time() - res.start, 3)}
    res.log.append(f"{link} {mode} for {res.facts['seconds']} s: {crossed} frames reached its "
                   f"ports, {dropped} dropped")
    res.log += list(rec.get("notes") or [])
    return _outcome(res, mode, values, dropped, crossed, rec, stopped, relayed)


def _outcome(res: Result, mode: str, values: dict, dropped: int, crossed: int, rec: dict,
             stopped: bool, relayed: bool = False) -> Result:
    """The observed-effect rule of the module's docstring (a relayed link's degraded loss is
    the relay's own: no drop counter, so it is judged like a delay)."""
    res.end = time.time()
    if stopped:
        res.outcome = "stopped"
        return res
    if mode == "jammed" or ("loss" in values and not relayed):
        seen = dropped > 0
        why = "no frame tried to cross the link while it was " + mode + " (0 dropped)"
    else:
        seen = crossed > 0 and not rec.get("notes")
        why = (one_line("; ".join(rec["notes"])) if rec.get("notes") else
               "no frame crossed the link while it was degraded")
    res.outcome = "succeeded" if seen else "failed"
    if not seen:
        res.log.append(f"no effect observed: {why}")
        res.facts["why"] = why
    return res


def run_on_twin(spec, twin, request: dict, halt, step) -> dict:
    """Run a twin-side technique (``spec.runs_on == "twin"``) in this process; returns the
    agent's result format. ContainmentError propagates (the run stops); any other exception
    ends the step ``error`` with one line."""
    from cyberrange.errors import ContainmentError
    started = time.time()
    if getattr(twin, "link_control", None) is None:     # set by the drill (LinkControl.of)
        return {"outcome": "error", "start": started, "end": time.time(), "flows": [],
                "facts": {}, "error": f"{spec.id} changes the twin's links: it runs in a drill "
                                      "or `attack run` that builds the twin, not in an attached "
                                      "one (--twin)"}
    side = TwinSide(twin, step.id, step.name, halt, list(request.get("allowed") or []),
                    list(step.targets))
    try:
        res = spec.func(list(request.get("targets") or []),
                        spec.with_defaults(dict(request.get("params") or {})), side)
    except ContainmentError:
        raise
    except Exception as exc:    # noqa: BLE001 - a failed change ends the step, not the run
        return {"outcome": "error", "start": started, "end": time.time(), "flows": [],
                "facts": {}, "error": one_line(f"{type(exc).__name__}: {exc}")}
    return res.to_dict()
