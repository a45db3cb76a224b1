"""``blue watch`` shows the tactical links (issue 19's deferral): crafted run folders, no twin.

A drill's link changes are lines of ``logs/links.jsonl`` (``twin/ddil.py``): a jamming step's
reason names the step and CR-J0001, a schedule's names its event, notes are the emulator's.
The defender's snapshot, frame and JSON hold none of that and show ``jammed`` as
``down (no traffic)``; the instructor's hold it all. The file is read as it grows.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import cli
from rich.console import Console

T0 = 1_800_000_000.0
JAM_REASON = "step zz-jam-sat (CR-J0001 ZZSECRET jam the sat link): jammed"
NOTE = "delay not emulated here (no netem, no relay on this link): only loss and bandwidth changed"
# what only exercise control knows: none of it may reach the defender
SECRETS = ("zz-jam-sat", "CR-J0001", "ZZSECRET", "jammed", "jam ", "link_events",
           "intermittent", "not emulated", "p71", "p72")


def _rec(t: float, zone: str, state: str, reason: str, values=None, notes=()) -> dict:
    return {"t": T0 + t, "zone": zone, "state": state, "values": dict(values or {}),
            "reason": reason, "ports": ["p71", "p72"], "notes": list(notes)}


def _append(d: Path, *recs, tail: str = "") -> None:
    with open(d / "logs" / "links.jsonl", "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs) + tail)


@pytest.fixture
def run(tmp_path):
    """A live drill in its attack phase whose links changed: the sat link jammed by a step,
    bde-los down (a schedule), bde-skywave degraded with a delay the twin could not emulate,
    and bn1-mesh set up (never seen down)."""
    d = tmp_path / "runs" / "20261206-080000-brigade-abcd"
    (d / "logs").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({
        "run_id": d.name, "created": time.time() - 60, "status": "running", "kind": "drill",
        "topology": "brigade", "twin": {"prefix": "c0000"},
        "phase": {"name": "attack", "since": time.time() - 20}}))
    (d / "live-alerts.jsonl").write_text("")
    _append(d, _rec(10, "bde-los", "down", "down"),
            _rec(20, "sat", "jammed", JAM_REASON),
            _rec(25, "bde-skywave", "degraded", "degrade",
                 {"loss": 10, "delay": 800, "bandwidth": 0.0048}, [NOTE]),
            _rec(26, "bn1-mesh", "up", "end of link_events[3]"))
    return d


def _frame(snap: dict, width: int = 160) -> str:
    from cyberrange.report.watch_view import render
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    with console.capture() as cap:
        console.print(render(snap, 40, width))
    return cap.get()


def test_the_defender_sees_links_as_monitoring_would_and_no_reason(run):
    from cyberrange.blue.watch import Watch
    snap = Watch(run).snapshot()
    links = snap["links"]
    assert links["logged"] and links["count"] == 3          # bn1-mesh "up" is no change to see
    rows = {r["link"]: r for r in links["links"]}
    assert set(rows) == {"bde-los", "sat", "bde-skywave"}
    assert rows["sat"]["state"] == "down" and rows["sat"]["label"] == "down (no traffic)"
    assert rows["sat"]["carrier"] is True and rows["sat"]["since"] == T0 + 20
    assert rows["bde-los"]["state"] == "down" and rows["bde-los"]["label"] == "down"
    assert rows["bde-los"]["carrier"] is False
    assert rows["bde-skywave"]["state"] == "degraded"     # the delay it could not emulate: out
    assert rows["bde-skywave"]["values"] == {"loss": 10, "bandwidth": 0.0048}
    assert links["not_up"] == ["bde-los", "bde-skywave", "sat"]
    assert not {"reason", "notes", "ports"} & {k for r in links["links"] + links["recent"]
                                               for k in r}
    text = json.dumps(snap)
    assert not any(s in text for s in SECRETS), [s for s in SECRETS if s in text]
    frame = _frame(snap)
    assert "links: 3 not up" in frame and "down (no traffic)" in frame
    assert "loss 10%, 4.8kbit/s" in frame and "delay" not in frame
    assert not any(s in frame for s in SECRETS), frame


def test_the_instructor_sees_the_records_as_written(run):
    from cyberrange.blue.watch import Watch
    snap = Watch(run, instructor=True).snapshot()
    links = snap["links"]
    rows = {r["link"]: r for r in links["links"]}
    assert links["count"] == 4 and set(rows) == {"bde-los", "sat", "bde-skywave", "bn1-mesh"}
    assert rows["sat"]["state"] == "jammed" and rows["sat"]["reason"] == JAM_REASON
    assert rows["sat"]["defender"] == "down (no traffic)" and rows["sat"]["ports"] == ["p71",
                                                                                      "p72"]
    assert rows["bde-skywave"]["values"]["delay"] == 800 and rows["bde-skywave"]["notes"] == \
        [NOTE]
    assert rows["bn1-mesh"]["state"] == "up"
    frame = _frame(snap)
    assert "jammed" in frame and "CR-J0001" in frame and "zz-jam-sat" in frame
    assert "defender sees: down (no traffic)" in frame and "last changes" in frame


def test_appended_changes_are_read_and_the_defender_sees_only_visible_ones(run):
    from cyberrange.blue.watch import Watch, summary_line
    w, truth = Watch(run), Watch(run, instructor=True)
    assert w.snapshot()["links"]["count"] == 3 and truth.snapshot()["links"]["count"] == 4
    # the schedule jams the jammed link too (invisible), degrades bde-skywave further, and a
    # half-written line waits for its end
    half = json.dumps(_rec(40, "bde-los", "up", "end of link_events[0]"))
    _append(run, _rec(30, "sat", "jammed", "jammed"),
            _rec(35, "bde-skywave", "degraded", "degrade", {"loss": 30}), tail=half[:25])
    snap, inst = w.snapshot(), truth.snapshot()
    rows = {r["link"]: r for r in snap["links"]["links"]}
    assert snap["links"]["count"] == 4 and inst["links"]["count"] == 6
    assert rows["sat"]["since"] == T0 + 20 and rows["sat"]["changes"] == 1
    assert rows["bde-skywave"]["values"] == {"loss": 30}
    assert rows["bde-skywave"]["since"] == T0 + 25           # still degraded: since the first
    assert rows["bde-skywave"]["last_change"] == T0 + 35
    assert rows["bde-los"]["state"] == "down"                # the half line is not read yet
    assert {r["link"]: r for r in inst["links"]["links"]}["sat"]["reason"] == "jammed"
    with open(run / "logs" / "links.jsonl", "a") as f:
        f.write(half[25:] + "\n")
    _append(run, _rec(45, "sat", "up", JAM_REASON.replace("jammed", "jam ended")),
            _rec(46, "bde-skywave", "up", "end of link_events[2]"))
    snap = w.snapshot()
    assert snap["links"]["not_up"] == [] and snap["links"]["count"] == 7
    assert {r["link"]: r["since"] for r in snap["links"]["links"]}["bde-los"] == T0 + 40
    frame = _frame(snap)
    assert "all links up" in frame and "links: all up, 7 change(s)" in frame
    assert not any(s in json.dumps(snap) + frame for s in SECRETS)
    line = summary_line(snap)
    assert line.endswith("; links all up (7 change(s))"), line
    _append(run, _rec(50, "sat", "jammed", JAM_REASON))
    line = summary_line(w.snapshot())
    assert "links not up: sat down (no traffic) (8 change(s))" in line, line
    assert "links not up: sat jammed" in summary_line(truth.snapshot())


def test_no_links_file_no_links_panel_and_bad_lines_are_skipped(run):
    from cyberrange.blue.watch import Watch
    log = run / "logs" / "links.jsonl"
    log.unlink()
    w = Watch(run)
    snap = w.snapshot()
    assert snap["links"]["logged"] is False and snap["links"]["links"] == []
    assert "links" not in _frame(snap).lower()
    # only changes the defender cannot see (a link set up, a degradation the twin could not
    # emulate): the file exists, but their screen shows no links panel
    _append(run, _rec(10, "bn1-mesh", "up", "end of the schedule"),
            _rec(11, "sat", "degraded", "degrade", {"delay": 600}, [NOTE]))
    snap = w.snapshot()
    assert snap["links"]["logged"] is False and snap["links"]["count"] == 0
    assert "links" not in _frame(snap).lower()
    assert Watch(run, instructor=True).snapshot()["links"]["count"] == 2
    # records without a link, with an unknown state or no time are skipped, not fatal
    _append(run, {"t": T0 + 12, "state": "down"}, _rec(13, "sat", "melted", "x"),
            {"zone": "sat", "state": "down"}, _rec(14, "sat", "down", "down"))
    snap = w.snapshot()
    assert snap["links"]["skipped"] == 3 and snap["links"]["not_up"] == ["sat"]
    assert "links: 1 not up" in _frame(snap, width=100)      # narrow: one under the other


def test_json_and_once_include_the_links(run):
    r = cli("blue", "watch", run, "--json")
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert snap["links"]["not_up"] == ["bde-los", "bde-skywave", "sat"]
    assert not any(s in r.stdout for s in SECRETS), r.stdout
    r = cli("blue", "watch", run, "--json", "--instructor")
    assert r.returncode == 0 and json.loads(r.stdout)["links"]["count"] == 4, r.stderr
    assert JAM_REASON in r.stdout
    r = cli("blue", "watch", run, "--once")
    assert r.returncode == 0, r.stderr
    assert "down (no traffic)" in r.stdout and not any(s in r.stdout for s in SECRETS)
