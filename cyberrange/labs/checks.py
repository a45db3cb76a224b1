"""The checks of a lab's tasks (docs/lab-format.md, "Checks"): each returns ``(ok, detail)``.

Live checks run on the lab's twin, inside its nodes: ``reach`` (a one-shot connection probe,
``twin/probe.py``), ``mission`` (the availability probes of ``blue/availability.py``: an
answer as the service should give it), ``rule`` (the firewall's nft ruleset and active blue
actions), ``service`` (a listening socket in the node). Blue-team checks read the twin run's
action log (``blue.actions.history``; staged actions of actor ``lab-stage`` do not count) and
ledger: the ledger is ground truth, read here because a check is scoring, never detection.
Static checks read the trainee's file in ``work/``: ``detector`` (loaded by
``detect.registry``, run over the lab's records, scored against the ledger with
``score.score_run``), ``topology`` (loaded, attack paths of ``model.paths`` and mission threads
with the static reachability of ``model.reach``). ``answer`` checks pass on a right submission.

Nothing here raises for a failing check: a check that cannot run (no twin, a bad trainee file)
fails with the reason as its detail.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from cyberrange.errors import UserError
from cyberrange.labs import progress

PROBE_PY = ("import json,sys\nfrom cyberrange.twin.probe import check\n"
            "print(json.dumps([check(o) for o in json.load(sys.stdin)]))")


class Context:
    """What the checks of one ``lab verify`` share: the lab, its run folder, its twin."""

    def __init__(self, lab, lab_dir: Path, active=None):
        self.lab, self.dir, self.active = lab, Path(lab_dir), active
        self.prog = progress.read(lab_dir)
        twins = self.prog.get("twins") or []
        self.twin_dir = (active.twin_dir if active is not None
                         else Path(twins[-1]["run_dir"]) if twins else None)
        self._twin = None
        self._snap = None

    @property
    def twin(self):
        if self.active is None:
            raise _Fail("the lab's twin is not running (`cyberrange lab restart`)")
        if self._twin is None:
            self._twin = self.active.attached()
        return self._twin

    def ledger(self) -> list[dict]:
        from cyberrange.attack.ledger import read_ledger
        if self.twin_dir is None:
            return []
        return read_ledger(self.twin_dir / "ledger.jsonl")

    def actions(self) -> list[dict]:
        from cyberrange.blue import actions
        if self.twin_dir is None or not (self.twin_dir / "actions.jsonl").exists():
            return []
        return actions.history(self.twin_dir)

    def snapshot(self) -> dict:
        from cyberrange.labs import data
        if self._snap is None:
            if self.twin_dir is None:
                raise _Fail("the lab has no twin run yet")
            self._snap = data.snapshot(self.dir, self.twin_dir)
        return self._snap

    def ip(self, name: str) -> str:
        topo = self.lab.topology
        return str(topo.nodes[name].ip) if name in topo.nodes else name


class _Fail(Exception):
    """A check that cannot run: it fails with this reason."""


def run_check(ctx: Context, task, check) -> tuple[bool, str]:
    try:
        return CHECKS[check.type](ctx, task, check.spec)
    except _Fail as e:
        return False, str(e)
    except UserError as e:
        return False, str(e)


# -- answers --------------------------------------------------------------------------------------
def answer_matches(spec: dict, answer: str) -> bool:
    a = " ".join(str(answer).split())
    if "pattern" in spec:
        return re.search(spec["pattern"], a, re.IGNORECASE) is not None
    expect = spec["expect"] if isinstance(spec["expect"], list) else [spec["expect"]]
    return any(a.casefold() == str(e).strip().casefold() for e in expect)


def _answer(ctx, task, spec):
    ok = progress.answered(ctx.prog, task.id)
    return ok, "answered" if ok else (f"not answered ({progress.tries_used(ctx.prog, task.id)} "
                                      f"wrong of {task.tries} tries)")


# -- live ---------------------------------------------------------------------------------------
def _probe(ctx, node: str, orders: list[dict]) -> list[dict]:
    r = ctx.twin.run(node, [sys.executable, "-c", PROBE_PY], input=json.dumps(orders),
                     timeout=30)
    if r.returncode:
        raise _Fail(f"probe in {node} failed: {(r.stderr or '').strip()[-200:]}")
    return json.loads(r.stdout)


def _reach(ctx, task, spec):
    proto = spec.get("proto", "tcp")
    order = {"proto": proto, "ip": ctx.ip(spec["to"]), "port": spec.get("port"), "timeout": 1.5}
    code = ("import json,sys\nfrom cyberrange.twin.probe import probe\n"
            "print(json.dumps(probe(json.load(sys.stdin))))")
    r = ctx.twin.run(spec["from"], [sys.executable, "-c", code], input=json.dumps(order),
                     timeout=30)
    if r.returncode:
        raise _Fail(f"probe in {spec['from']} failed: {(r.stderr or '').strip()[-200:]}")
    result = json.loads(r.stdout)["result"]
    ok = result == "open" if spec["expect"] == "open" else result in ("closed", "filtered")
    return ok, f"{spec['from']} -> {spec['to']} {proto}/{spec.get('port', '')}: {result}"


def _mission(ctx, task, spec):
    from cyberrange.blue.availability import plan_targets
    targets = [t for t in plan_targets(ctx.lab.topology) if t.kind == "mission"
               and spec.get("thread") in (None, t.thread)]
    by_src: dict[str, list[dict]] = {}
    for t in targets:
        for src, dst, ip in t.pairs:
            by_src.setdefault(src, []).append(
                {"id": f"{t.thread}:{src}->{dst}", "proto": t.proto, "ip": ip, "port": t.port,
                 **(t.checks.get(dst) or {})})
    failed, total = [], 0
    for src, orders in by_src.items():
        for res in _probe(ctx, src, orders):
            total += 1
            if not res["ok"]:
                failed.append(f"{res['id']} ({res['reason']})")
    want_up = spec.get("expect", "up") == "up"
    ok = not failed if want_up else len(failed) == total
    return ok, (f"{total - len(failed)}/{total} mission probes answered"
                + (f"; failed: {', '.join(failed[:4])}" if failed else ""))


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _rule(ctx, task, spec):
    fw = spec["firewall"]
    r = ctx.twin.run(fw, ["nft", "list", "ruleset"], timeout=20)
    if r.returncode:
        raise _Fail(f"nft in {fw} failed: {(r.stderr or '').strip()[:200]}")
    want = _norm(spec["match"])
    found = want in _norm(r.stdout)
    if not found:
        from cyberrange.blue import actions
        for rec in actions.active(ctx.twin_dir):
            p = rec.get("params") or {}
            if rec.get("actor") != "lab-stage" and p.get("firewall") == fw and \
                    want in _norm(f"{json.dumps(p.get('rule'))} {p.get('nft', '')}"):
                found = True
    ok = found if spec.get("expect", "present") == "present" else not found
    return ok, f"'{spec['match']}' {'found' if found else 'not found'} on {fw}"


def _service(ctx, task, spec):
    proto = spec.get("proto", "tcp")
    flag = "-Hltn" if proto == "tcp" else "-Hlun"
    r = ctx.twin.run(spec["node"], ["ss", flag, f"sport = :{spec['port']}"], timeout=20)
    if r.returncode:
        raise _Fail(f"ss in {spec['node']} failed: {(r.stderr or '').strip()[:200]}")
    running = bool(r.stdout.strip())
    ok = running == (spec["expect"] == "running")
    return ok, f"{spec['node']} {proto}/{spec['port']}: {'listening' if running else 'nothing listens'}"


# -- blue team ----------------------------------------------------------------------------------
def _step_start(ctx, step: str) -> float | None:
    starts = [r["start"] for r in ctx.ledger() if r.get("step_id") == step and r.get("start")]
    return min(starts) if starts else None


def _blue(ctx, task, spec):
    from cyberrange.blue.log import UNDO
    recs = [r for r in ctx.actions() if r.get("actor") != "lab-stage"
            and r.get("result") == "applied" and r.get("action") == spec["action"]]
    undone = {r.get("reverts") for r in ctx.actions() if r.get("result") == "applied"}
    if spec["action"] in UNDO:                    # an undone action no longer counts
        recs = [r for r in recs if r["id"] not in undone]
    if spec.get("target"):
        names = {_norm(spec["target"]), _norm(ctx.ip(spec["target"]))}
        recs = [r for r in recs if any(_norm(v) in names or any(n in _norm(v) for n in names)
                                       for v in _values(r.get("params") or {}))]
    if not recs:
        return False, f"no {spec['action']}" + (f" of {spec['target']}" if spec.get("target")
                                                 else "") + " in the action log"
    if spec.get("before_step"):
        start = _step_start(ctx, spec["before_step"])
        if start is None:
            return False, f"step {spec['before_step']} has not run yet"
        early = [r for r in recs if r["time"] < start]
        if not early:
            return False, (f"{recs[0]['id']} came {recs[0]['time'] - start:.1f} s after step "
                           f"{spec['before_step']} started")
        return True, (f"{early[0]['id']} {start - early[0]['time']:.1f} s before step "
                      f"{spec['before_step']}")
    return True, f"{recs[0]['id']} by {recs[0].get('actor')}"


def _values(p: dict) -> list[str]:
    out = []
    for v in p.values():
        out += [str(x) for x in v] if isinstance(v, list) else [str(v)]
    return out


def _step(ctx, task, spec):
    want = spec["outcome"] if isinstance(spec["outcome"], list) else [spec["outcome"]]
    got = [r["outcome"] for r in ctx.ledger() if r.get("step_id") == spec["step"]]
    if not got:
        return False, f"step {spec['step']} has not run yet"
    hits = [o in want for o in got]
    ok = all(hits) if spec.get("match", "all") == "all" else any(hits)
    return ok, f"step {spec['step']}: {', '.join(sorted(set(got)))}"


# -- static: the trainee's files ----------------------------------------------------------------
def _work_file(ctx, name: str) -> Path:
    p = ctx.dir / "work" / name
    if not p.is_file():
        raise _Fail(f"no file {name} in {ctx.dir / 'work'}")
    return p


def _detector(ctx, task, spec):
    from cyberrange.detect.registry import load_detector_file
    from cyberrange.labs import data
    from cyberrange.score.score import score_run
    dets = load_detector_file(_work_file(ctx, spec["file"]))
    ctx.snapshot()
    until = data.baseline_until(_twin_manifest(ctx), ctx.lab)
    alerts = data.alerts(ctx.dir, dets, until)
    run_id, flows = data.records(ctx.dir)
    card = score_run(ctx.ledger(), flows, alerts, run_id=run_id)
    techs = card["techniques"]
    missed = [t for t in spec["fires_on"]
              if not any((k == t or k.startswith(t + ".")) and v["detected"]
                         for k, v in techs.items())]
    false = card["alerts"]["false"]
    ok = not missed and false <= spec.get("max_false_alerts", 0)
    return ok, (f"{card['alerts']['total']} alerts, {false} false"
                + (f"; missed {', '.join(missed)}" if missed else "; fires on "
                   + ", ".join(spec["fires_on"])))


def _twin_manifest(ctx) -> dict:
    try:
        return json.loads((ctx.twin_dir / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}


def _topology(ctx, task, spec):
    from cyberrange.blue.availability import plan_targets
    from cyberrange.model.loader import load_topology
    from cyberrange.model.paths import attack_paths
    topo = load_topology(_work_file(ctx, spec["file"]))
    notes = []
    ok = True
    if spec.get("closes"):
        a, b = spec["closes"]["from"], spec["closes"]["to"]
        paths = attack_paths(topo, [a], [b], k=1)
        if paths:
            ok = False
            notes.append(f"attack path still open: {paths[0].text()}")
        else:
            notes.append(f"no attack path {a} -> {b}")
    if spec.get("keep_missions"):
        lost = [m for m in ctx.lab.topology.missions if m not in topo.missions]
        denied = [f"{t.thread}: {t.static[0]}" for t in plan_targets(topo)
                  if t.kind == "mission" and t.static]
        if lost or denied:
            ok = False
            notes.append("missions broken: " + "; ".join(
                [f"{m} removed" for m in lost] + denied)[:300])
        else:
            notes.append(f"all {len(topo.missions)} mission threads still allowed")
    return ok, "; ".join(notes) or "topology loads"


CHECKS = {"answer": _answer, "reach": _reach, "mission": _mission, "rule": _rule,
          "service": _service, "blue": _blue, "step": _step, "detector": _detector,
          "topology": _topology}


def verify(ctx: Context, tasks) -> list[dict]:
    """Run the checks of ``tasks``; the result records (task, check, ok, detail, time)."""
    import time
    out = []
    for task in tasks:
        for i, c in enumerate(task.checks):
            ok, detail = run_check(ctx, task, c)
            out.append({"task": task.id, "check": i, "type": c.type, "ok": bool(ok),
                        "detail": str(detail)[:500], "time": time.time()})
    return out
