"""The red/blue screen (issue 14 item 6): ``cyberrange blue watch`` from a run folder.

Crafted run folders (no twin): the snapshot's alerts, availability and actions, files read as
they grow (a half-written last line waits), the defender's phases that do not tell warm-up from
attack, the ground truth only in the instructor's view, and bad inputs (one line, exit 2).

One real ``drill run --live`` in the background (``background.Pool``) with ``blue watch RUN
--json`` sampled while it runs, under a Python audit hook that lists every file the watcher
opens: the defender's snapshots see alerts appear during the drill, the phase and the elapsed
time, and a blue block from a third terminal; they never open the ledger or the playbook and
hold none of their step ids, names or actor; the instructor's hold the steps. A ``blue watch``
started with the drill ends with its summary line once the drill has ended.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from background import Pool
from helpers import PY, ROOT, can_build_twin, cli, needs_twin

# A playbook whose step ids and names appear nowhere else (so their absence means something):
# the README's recon -> scan -> brute force from the FOB's maintenance laptop.
PLAYBOOK = """\
version: 1
name: zz-whitecell-pb
description: Ground truth markers for the red/blue screen test
topology: fob
steps:
  - id: zz-step-one
    name: ZZSECRET find live hosts
    technique: T1018
    actor: ops-maint
    targets: [ops-lan, cp-lan]
    params: {timeout: 1.0}
    timing: {delay: 2}
  - id: zz-step-two
    name: ZZSECRET scan them
    technique: T1046
    actor: ops-maint
    targets: ["#{zz-step-one.hosts}"]
    params: {ports: [21, 22, 23, 80, 443, 2222, 8080], rate: 400, timeout: 1.0}
    timing: {delay: 2}
  - id: zz-step-three
    name: ZZSECRET guess passwords
    technique: T1110.001
    actor: ops-maint
    targets: ["#{zz-step-two.open}"]
    params: {service: login, usernames: [root, admin], pause: 0.05,
             passwords: [password, "123456", admin, toor, changeme, letmein]}
    timing: {delay: 2}
"""
SECRETS = ("zz-step-one", "zz-step-two", "zz-step-three", "ZZSECRET", "zz-whitecell-pb",
           "ops-maint")

# The CLI under an audit hook: every path the process opens is listed on stderr at exit
# (``AUDIT-OPEN <path>``), for the paths that contain one of the words given in WATCHED.
AUDITED = """\
import atexit, os, sys
words = os.environ["WATCHED"].split(",")
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.fsdecode(args[0])
        if any(w in p for w in words):
            opened.append(p)
sys.addaudithook(hook)
atexit.register(lambda: [print("AUDIT-OPEN " + p, file=sys.stderr) for p in opened])
from cyberrange.cli.main import main
main(sys.argv[1:])
"""


def watch(*args, watched=("ledger", "zz-pb")):
    """``cyberrange blue watch ARGS`` as a user runs it, with the audit hook."""
    r = subprocess.run([PY, "-c", AUDITED, "blue", "watch", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "WATCHED": ",".join(watched)})
    r.opened = [line[len("AUDIT-OPEN "):] for line in r.stderr.splitlines()
                if line.startswith("AUDIT-OPEN ")]
    r.errors = [line for line in r.stderr.splitlines() if not line.startswith("AUDIT-OPEN ")]
    return r


# ------------------------------------------------------------------ crafted run folders
T0 = 1_800_000_000.0


def _jsonl(path: Path, records, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _alert(i: int, rule: str, technique: str = "T1046") -> dict:
    return {"seen_at": T0 + 20 + i, "time": T0 + 19 + i, "start": T0 + 18 + i, "end": T0 + 19 + i,
            "rule": rule, "category": "portscan", "technique": technique,
            "source": "10.10.2.66", "destination": "10.10.2.20", "score": 0.9,
            "message": f"10.10.2.66 probed {10 + i} ports", "id": f"a{i}", "lag_s": 1.0}


def _probe(t: float, thread: str, ok: bool) -> dict:
    return {"time": T0 + t, "thread": thread, "src": "ops-ws1", "dst": "c2-server",
            "dst_ip": "10.10.1.10", "proto": "tcp", "port": 8080, "ok": ok,
            "latency_ms": 1.0 if ok else None, "reason": None if ok else "timeout"}


def _action(i: int, action: str, params: dict, reverts: str | None = None) -> dict:
    return {"id": f"A{i}", "time": T0 + 30 + i, "actor": "alice", "action": action,
            "params": params, "result": "applied", "reason": None, "reverts": reverts,
            "twin": "c0000", "objects": [], "applied_s": 0.01, "trigger": None}


def _ledger_record(step: str, outcome: str = "succeeded") -> dict:
    return {"run_id": "r1", "step_id": step, "name": f"ZZSECRET {step}", "technique": "T1110.001",
            "actor": "ops-maint", "actor_ip": "10.10.2.66", "targets": [], "start": T0 + 20,
            "end": T0 + 25, "outcome": outcome, "packets_sent": 12, "bytes_sent": 700,
            "flows": [], "facts": {}, "error": None, "repeat": 0, "skipped_reason": None,
            "blocked_reason": None, "arp_frames": 0}


@pytest.fixture
def crafted(tmp_path):
    """A drill in its attack phase, as a run folder: manifest, two alerts and a half-written
    third, probes (cop went down), a block still active and an isolation released, and a
    ledger with one step."""
    d = tmp_path / "runs" / "20261205-100000-fob-abcd"
    d.mkdir(parents=True)
    manifest = {"run_id": d.name, "created": time.time() - 42, "status": "running",
                "kind": "drill", "topology": "fob", "playbook": "zz-whitecell-pb",
                "inputs": {"playbook": {"path": str(tmp_path / "zz-pb.yaml"), "sha256": "x"}},
                "timings": {"twin_up_s": 3.0}, "warnings": ["zz-step-one was slow"],
                "twin": {"prefix": "c0000"}, "phase": {"name": "attack", "since": time.time()}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    _jsonl(d / "live-alerts.jsonl", [_alert(0, "vertical-portscan"), _alert(1, "slow-sweep")],
           tail=json.dumps(_alert(2, "login-bruteforce", "T1110.001"))[:40])
    _jsonl(d / "availability.jsonl", [_probe(1, "cop", True), _probe(2, "cop", True),
                                      _probe(3, "cop", False), _probe(4, "web-portal", True),
                                      _probe(5, "service:dmz-web:tcp/80", True)])
    _jsonl(d / "actions.jsonl", [
        _action(1, "block", {"src": "10.10.2.66", "dst": "c2-server", "proto": "tcp",
                             "port": 8080}),
        _action(2, "isolate", {"node": "ops-files", "allow": []}),
        _action(3, "release", {"id": "A2"}, reverts="A2")])
    _jsonl(d / "ledger.jsonl", [_ledger_record("zz-step-one")])
    return d, manifest


def test_the_defender_snapshot_has_alerts_availability_actions_and_no_ground_truth(crafted):
    from cyberrange.blue.watch import Watch
    d, manifest = crafted
    w = Watch(d)
    snap = w.snapshot()
    assert snap["view"] == "defender" and snap["phase"] == "exercise"
    assert snap["status"] == "running" and not snap["final"] and 40 <= snap["elapsed_s"] < 100
    assert snap["alerts"]["count"] == 2                      # the half-written line waits
    assert snap["alerts"]["rules"] == {"vertical-portscan": 1, "slow-sweep": 1}
    threads = {r["name"]: r for r in snap["availability"]["threads"]}
    assert threads["cop"]["up"] is False and threads["cop"]["last"] == [True, True, False]
    assert threads["cop"]["availability"] == round(2 / 3, 4)
    assert threads["cop"]["down_since"] == T0 + 3 and threads["cop"]["reason"] == "timeout"
    assert threads["web-portal"]["up"] and snap["availability"]["down"] == ["cop"]
    assert [a["id"] for a in snap["actions"]["active"]] == ["A1"]
    assert snap["actions"]["count"] == 3
    text = json.dumps(snap)
    assert not any(s in text for s in SECRETS), text
    assert not {"steps", "pending", "playbook", "phase_detail", "error", "warnings"} & set(snap)
    # the rest of the line arrives, then a new probe: read from where the last read ended
    with open(d / "live-alerts.jsonl", "a") as f:
        f.write(json.dumps(_alert(2, "login-bruteforce", "T1110.001"))[40:] + "\n")
    with open(d / "availability.jsonl", "a") as f:
        f.write(json.dumps(_probe(6, "cop", True)) + "\n")
    snap = w.snapshot()
    assert snap["alerts"]["count"] == 3 and snap["alerts"]["recent"][-1]["id"] == "a2"
    threads = {r["name"]: r for r in snap["availability"]["threads"]}
    assert threads["cop"]["up"] and threads["cop"]["probes"] == 4
    # the instructor's snapshot adds the ground truth
    truth = Watch(d, instructor=True).snapshot()
    assert truth["phase"] == "attack" and truth["playbook"] == "zz-whitecell-pb"
    assert [s["step_id"] for s in truth["steps"]] == ["zz-step-one"]


def test_the_defender_view_never_opens_the_ledger_and_shows_none_of_it(crafted):
    d, _m = crafted
    r = watch(d, "--once")
    assert r.returncode == 0, r.stderr
    assert r.opened == [], r.opened                  # neither the ledger nor the playbook
    out = r.stdout
    assert "DEFENDER" in out and "vertical-portscan" in out and "slow-sweep" in out
    assert "A1" in out and "block 10.10.2.66 → c2-server tcp/8080" in out
    assert "cop" in out and "DOWN" in out and "exercise" in out
    assert not any(s in out for s in SECRETS), out
    assert "attack" not in out.lower().replace("attack-", "")
    r = watch(d, "--once", "--instructor")
    assert r.returncode == 0, r.stderr
    assert any(p.endswith("ledger.jsonl") for p in r.opened)
    assert "INSTRUCTOR" in r.stdout and "zz-step-one" in r.stdout and "ZZSECRET" in r.stdout
    # without a ledger (absent, or not a file) both views still work
    (d / "ledger.jsonl").unlink()
    r = watch(d, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["alerts"]["count"] == 2, r.stderr
    (d / "ledger.jsonl").mkdir()
    r = watch(d, "--json", "--instructor")
    assert r.returncode == 0 and json.loads(r.stdout)["steps"] == [], r.stderr


def test_the_defender_cannot_tell_warm_up_from_attack(crafted):
    from cyberrange.blue.watch import Watch
    d, manifest = crafted
    seen, since, starts = {}, {}, {}
    for i, phase in enumerate(("twin", "benign", "attack", "cooldown", "teardown")):
        starts[phase] = T0 + 10 * i
        manifest["phase"] = {"name": phase, "since": starts[phase], "starts": dict(starts)}
        (d / "manifest.json").write_text(json.dumps(manifest))
        snap, truth = Watch(d).snapshot(), Watch(d, True).snapshot()
        seen[phase] = (snap["phase"], truth["phase"])
        since[phase] = (snap["phase_since"], truth["phase_since"])
    assert seen["benign"][0] == seen["attack"][0] == seen["cooldown"][0] == "exercise"
    assert len({seen[p][1] for p in ("benign", "attack", "cooldown")}) == 3, seen
    # "exercise for ..." counts from the warm-up: its clock does not restart with the attack
    assert since["benign"][0] == since["attack"][0] == since["cooldown"][0] == T0 + 10
    assert since["attack"][1] == T0 + 20 and since["teardown"] == (T0 + 40, T0 + 40)
    manifest["teardown"] = {"complete": True}               # the twin is gone: the analysis
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert Watch(d).snapshot()["phase"] == "scoring"
    manifest.update(status="failed", finished=manifest["created"] + 50,
                    error="1 of 3 attack steps ended in error (zz-step-two; ...)")
    (d / "manifest.json").write_text(json.dumps(manifest))
    snap = Watch(d).snapshot()
    assert snap["final"] and snap["elapsed_s"] == 50.0 and snap["phase"] == "ended"
    assert "zz-step" not in json.dumps(snap)                # the error names steps: not shown
    from cyberrange.blue.watch import summary_line
    line = summary_line(snap)
    assert line.startswith(f"drill {d.name} failed after 0m50s: 2 live alert(s)"), line


def test_bad_inputs_are_one_line_and_exit_2(crafted, tmp_path):
    d, manifest = crafted
    cases = {"no such run": [tmp_path / "nothing-here"],
             "no such twin": ["c9z9z"]}
    plain = tmp_path / "runs" / "plain"                     # a finished drill without --live
    shutil.copytree(d, plain)
    (plain / "live-alerts.jsonl").unlink()
    m = dict(manifest, run_id="plain", status="done", finished=time.time())
    (plain / "manifest.json").write_text(json.dumps(m))
    cases["not live (finished)"] = [plain]
    running = tmp_path / "runs" / "running-not-live"        # running, past the twin, no file
    shutil.copytree(plain, running)
    (running / "manifest.json").write_text(json.dumps(dict(manifest, run_id="rnl")))
    cases["not live (running)"] = [running]
    attack = tmp_path / "runs" / "attack"
    shutil.copytree(d, attack)
    (attack / "manifest.json").write_text(json.dumps(dict(manifest, kind="attack")))
    cases["attack run"] = [attack]
    broken = tmp_path / "runs" / "broken"
    shutil.copytree(d, broken)
    (broken / "manifest.json").write_text("{not json")
    cases["damaged manifest"] = [broken]
    cases["latest of an empty folder"] = ["latest", "--runs-dir", tmp_path / "empty"]
    (tmp_path / "empty").mkdir()
    for what, args in cases.items():
        r = cli("blue", "watch", *args, "--json")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
            (what, r.returncode, r.stderr)
        # under --json the error is also one JSON object on stdout (docs/cli.md, one grammar)
        assert "Traceback" not in r.stderr, (what, r.stderr)
        err = json.loads(r.stdout)
        assert err["exit_code"] == 2 and err["error"] in lines[0], (what, err)
        if err["file"]:                          # the stderr line names it as FILE:LINE:COL
            assert lines[0].startswith(f"error: {err['file']}:{err['line']}:"), (what, lines)
    # a drill still building its twin is no error: it waits for the live alerts
    early = tmp_path / "runs" / "early"
    shutil.copytree(plain, early)
    m = {k: v for k, v in manifest.items() if k not in ("phase", "timings", "twin")}
    (early / "manifest.json").write_text(json.dumps(dict(m, run_id="early")))
    r = cli("blue", "watch", early, "--once")
    assert r.returncode == 0 and "waiting for the twin" in r.stdout, r.stdout + r.stderr
    from cyberrange.blue.watch import Watch
    from cyberrange.errors import UserError
    w = Watch(early)
    assert w.snapshot()["phase"] == "starting"
    m["phase"] = {"name": "benign", "since": time.time()}      # the twin is up: not live
    (early / "manifest.json").write_text(json.dumps(dict(m, run_id="early")))
    with pytest.raises(UserError, match="not run with --live"):
        w.snapshot()


def test_the_live_alert_log_and_the_phase_in_the_manifest(tmp_path):
    """The drill's side: each alert one whole line, passed on; a failed write never stops
    the detection. Each phase of the twin's part in the manifest once, passed on."""
    from datetime import datetime, timezone

    from cyberrange.blue.watch import LiveAlertLog, PhaseInManifest, Tail
    from cyberrange.detect.base import Alert
    from cyberrange.run import Run
    from cyberrange.ui import NullUI
    now = datetime.now(timezone.utc)
    a = Alert(now, now, now, "vertical-portscan", "portscan", "T1046", "10.0.0.1", None,
              "10.0.0.1 probed 100 ports", 0.8, flow_ids=["f1"])
    passed = []
    log = LiveAlertLog(tmp_path, then=passed.append)
    assert (tmp_path / "live-alerts.jsonl").read_text() == ""     # made at once: "live"
    log(a)
    log(a)
    recs = Tail(tmp_path / "live-alerts.jsonl").read()
    assert len(recs) == 2 and passed == [a, a] and recs[0]["rule"] == "vertical-portscan"
    assert recs[0]["id"] == a.alert_id and recs[0]["technique"] == "T1046"
    (tmp_path / "live-alerts.jsonl").unlink()
    (tmp_path / "live-alerts.jsonl").mkdir()                       # writes now fail
    log(a)
    assert log.failed == 1 and len(passed) == 3

    class Seen(NullUI):
        def __init__(self):
            self.phases = []

        def phase(self, name, text):
            self.phases.append((name, text))

        def live_alert(self, alert):
            pass
    run = Run.create(tmp_path / "runs", "x", {})
    ui = Seen()
    pui = PhaseInManifest(ui, run)
    for name in ("twin", "twin", "benign", "attack", "telemetry"):
        pui.phase(name, f"{name} text")
        on_disk = json.loads(run.manifest_path.read_text()).get("phase")
        if name != "telemetry":
            assert on_disk["name"] == name and on_disk["starts"][name] == on_disk["since"]
    assert on_disk["name"] == "attack"            # the analysis' phases are not written
    assert list(on_disk["starts"]) == ["twin", "benign", "attack"]
    assert [n for n, _t in ui.phases] == ["twin", "twin", "benign", "attack", "telemetry"]
    assert hasattr(pui, "live_alert") and not hasattr(pui, "live_progress")


# ------------------------------------------------------------------ one real live drill
DRILL = [PY, "-m", "cyberrange.cli.main", "drill", "run", "topologies/fob.yaml"]


@needs_twin
def test_blue_watch_during_a_real_live_drill(tmp_path):
    if can_build_twin() is not None:
        pytest.skip(can_build_twin())
    pb = tmp_path / "zz-pb.yaml"
    pb.write_text(PLAYBOOK)
    runs = tmp_path / "runs"
    pool = Pool(1)
    watcher = None
    try:
        pool.submit("drill", DRILL + [pb, "--live", "--warmup", "4", "--cooldown", "3",
                                      "--runs-dir", runs, "--json"], cwd=ROOT)
        run_dir = _wait_for(lambda: next(iter(runs.glob("*/manifest.json")), None)).parent
        watcher = subprocess.Popen([PY, "-m", "cyberrange.cli.main", "blue", "watch", run_dir],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        samples, truths, frames, blocked = [], [], [], None
        while True:
            r = watch(run_dir, "--json")
            assert r.returncode == 0, r.stderr
            assert r.opened == [], r.opened              # never the ledger, never the playbook
            snap = json.loads(r.stdout)
            samples.append(snap)
            if snap["final"]:
                break
            if blocked is None and snap["phase"] == "exercise" and snap["twin"]:
                b = cli("blue", "block", "--src", "hq-portal", "--dst", "c2-server", "--proto",
                        "tcp", "--port", "8080", "--twin", snap["twin"], "--actor",
                        "defender1", "--json", timeout=120)
                assert b.returncode == 0, b.stderr
                blocked = json.loads(b.stdout)
            elif len(samples) % 3 == 0:
                t = watch(run_dir, "--json", "--instructor")
                assert t.returncode == 0, t.stderr
                truths.append(json.loads(t.stdout))
            elif len(samples) % 3 == 1 and not frames:
                f = watch(run_dir, "--once")
                assert f.returncode == 0 and f.opened == [], f.stderr
                frames.append(f.stdout)
            time.sleep(0.5)
        drill = pool.result("drill")
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        pool.close()
    assert drill.returncode == 0, drill.stdout[-2000:] + drill.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    during = [s for s in samples if not s["final"]]
    assert len(during) >= 4, [s["phase"] for s in samples]
    # alerts appear while the drill runs, and only grow; elapsed time only grows
    assert any(s["alerts"]["count"] > 0 and s["phase"] == "exercise" for s in during), \
        [(s["phase"], s["alerts"]["count"]) for s in samples]
    counts = [s["alerts"]["count"] for s in samples]
    elapsed = [s["elapsed_s"] for s in samples]
    assert counts == sorted(counts) and elapsed == sorted(elapsed) and elapsed[-1] > 10
    assert counts[-1] == manifest["live"]["detection"]["alerts"]     # every alert raised
    phases = [s["phase"] for s in samples]
    assert "exercise" in phases and phases[-1] == "ended"
    assert set(phases) <= {"starting", "building the twin", "exercise", "tearing down",
                           "scoring", "ended"}, phases
    assert len({s["phase_since"] for s in samples if s["phase"] == "exercise"}) == 1
    # the block from the third terminal is on the screen, active, with its actor
    assert blocked is not None and blocked["result"] == "applied"
    after = [s for s in during if s["now"] > blocked["time"] + 0.5]
    assert after and all([a["id"] for a in s["actions"]["active"]] == [blocked["id"]]
                         for s in after), [s["actions"] for s in after]
    assert after[-1]["actions"]["active"][0]["actor"] == "defender1"
    # ... and so is what it cost: hq-portal's feed from the COP is down from then on
    probes = [json.loads(line) for line in (run_dir / "availability.jsonl").open()]
    feed = [p for p in probes if p["thread"] == "hq-cop-feed" and p["time"] > blocked["time"] + 1]
    assert feed and not any(p["ok"] for p in feed), feed
    assert samples[-1]["availability"]["down"] == ["hq-cop-feed"]
    assert next(r for r in samples[-1]["availability"]["threads"]
                if r["name"] == "hq-cop-feed")["availability"] < 1
    # nothing of the ground truth in any defender snapshot or frame; every technique id in
    # them is one an alert claimed (a detector's own mapping, not the ledger's)
    claimed = {a["technique"] for s in samples for a in s["alerts"]["recent"]}
    for text in [json.dumps(s) for s in samples] + frames + [out]:
        assert not any(sec in text for sec in SECRETS), text[:3000]
        assert set(re.findall(r"\bT\d{4}(?:\.\d{3})?\b", text)) <= claimed
    assert frames and "DEFENDER" in frames[0]
    # the instructor saw steps end while the drill ran
    from cyberrange.attack.ledger import read_ledger
    ledger = read_ledger(run_dir / "ledger.jsonl")
    assert truths and any(t["steps"] and not t["final"] for t in truths), truths
    assert all(t["playbook"] == "zz-whitecell-pb" for t in truths)
    assert {t["phase_detail"] for t in truths} & {"benign", "attack", "cooldown"}
    last = watch(run_dir, "--json", "--instructor")
    truth = json.loads(last.stdout)
    assert [(s["step_id"], s["outcome"]) for s in truth["steps"]] == \
        [(r["step_id"], r["outcome"]) for r in ledger]
    assert truth["pending"] == []
    # the watcher started with the drill ended with it: the last frame, then the summary
    assert watcher.returncode == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"drill {manifest['run_id']} done after "), out[-2000:]
    assert f"{counts[-1]} live alert(s)" in summary and "1 active" in summary


def _wait_for(fn, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")
