"""The after-action report (``drill report --html/--navigator/--json``) on the suite's README
drill, copied to a temporary folder first. One copy gets a crafted blue half (an action log,
availability probes and a blue scorecard section, as the blue contract describes them); the
other has none, and the report must say so and still load.

The HTML is opened in a real headless browser (Debian's chromium): one launch per page prints
the DOM after its script ran, and the browser's log must hold no uncaught script error and no
failed network fetch (the page must be self-contained)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from helpers import cli
from cyberrange.report import navigator as nav

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _craft_blue(run_dir) -> dict:
    """An action log, probes and a blue section around the real ledger's windows."""
    from cyberrange.attack.ledger import read_ledger
    led = read_ledger(run_dir / "ledger.jsonl")
    scan, brute = led[1], led[-1]
    t_iso = scan["end"] + 0.5
    base = {"twin": "x", "objects": [], "applied_s": 0.01, "trigger": None, "reason": None,
            "reverts": None}
    acts = [dict(base, id="A1", time=scan["start"] + 0.4, actor="auto:scan-block",
                 action="block", params={"src": led[0]["actor"], "dst": "any", "proto": "tcp"},
                 result="applied", trigger={"rule.name": "vertical-portscan"}),
            dict(base, id="A2", time=t_iso, actor="alice", action="isolate",
                 params={"node": led[0]["actor"], "allow": "ops-ws1"}, result="applied"),
            dict(base, id="A3", time=t_iso + 0.3, actor="alice", action="isolate",
                 params={"node": "nosuch"}, result="refused", reason="unknown node nosuch"),
            dict(base, id="A4", time=brute["end"] + 1.0, actor="alice", action="release",
                 params={"node": led[0]["actor"]}, result="applied", reverts="A2")]
    (run_dir / "actions.jsonl").write_text("".join(json.dumps(a) + "\n" for a in acts)
                                           + '{"cut short')
    probes, t = [], led[0]["start"] - 5
    while t < brute["end"] + 2:
        for thread, dst in (("cop", "c2-server"), ("web-portal", "dmz-web")):
            ok = not (thread == "web-portal" and scan["start"] < t < scan["end"] + 3)
            probes.append({"time": t, "thread": thread, "src": "ops-ws1", "dst": dst,
                           "dst_ip": "10.0.0.1", "proto": "tcp", "port": 80, "ok": ok,
                           "latency_ms": 1.5 if ok else None, "reason": None if ok else "timeout"})
        t += 1.0
    (run_dir / "availability.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    card = json.loads((run_dir / "scorecard.json").read_text())
    card["blue"] = {"score": 0.82, "steps": [{"step_id": "brute", "contained": True,
                                              "time_to_contain_s": 0.7, "contained_by": "A2"}],
                    "collateral": {"benign_flows_blocked": 0, "actions_on_non_attackers": 0}}
    (run_dir / "scorecard.json").write_text(json.dumps(card))
    return {"actions": acts, "ledger": led, "threads": {"cop", "web-portal"}}


def _drop_availability(run_dir) -> None:
    (run_dir / "availability.jsonl").unlink(missing_ok=True)
    card = json.loads((run_dir / "scorecard.json").read_text())
    card.pop("availability", None)
    card.pop("blue", None)             # a run from before blue scoring has neither section
    (run_dir / "scorecard.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def runs(drill_run, tmp_path_factory):
    run_dir, _ = drill_run
    base = tmp_path_factory.mktemp("aar")
    blue, plain = base / "blue", base / "plain"
    shutil.copytree(run_dir, blue)
    shutil.copytree(run_dir, plain)
    for copy in (blue, plain):         # the drill's own probes and their scorecard section out:
        _drop_availability(copy)       # plain = a run from before probes; blue = crafted below
    return {"blue": blue, "plain": plain, "crafted": _craft_blue(blue), "base": base}


@pytest.fixture(scope="module")
def reports(runs):
    """Each copy's HTML, navigator layer and JSON, written by the real command line."""
    out = {}
    for name in ("blue", "plain"):
        html, layer = runs["base"] / f"{name}.html", runs["base"] / f"{name}.layer.json"
        r = cli("drill", "report", runs[name], "--html", html, "--navigator", layer, "--json")
        assert r.returncode == 0, r.stderr
        assert f"after-action report: {html}" in r.stderr      # with --json, notes go to stderr
        out[name] = {"html": html, "layer": json.loads(layer.read_text()),
                     "json": json.loads(r.stdout)}
    return out


class _Dom(HTMLParser):
    """Elements of the browser's DOM dump: (tag, attributes) in order, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.stack: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.native_tips = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "title" and self.stack and "data-tip" in self.stack[-1][1]:
            self.native_tips += 1
        self.elements.append((tag, a))
        self.stack.append((tag, a))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        self.text.append(data)

    def having(self, cls: str, tag: str | None = None) -> list[dict]:
        return [a for t, a in self.elements
                if cls in a.get("class", "").split() and (tag is None or t == tag)]


def _browse(path) -> tuple[_Dom, str]:
    """The page's DOM after its script ran, and the browser's log; no network."""
    r = subprocess.run([CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox",
                        "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
                        "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return _Dom(r.stdout), r.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian package `chromium`) to open "
                                             "the report in a real browser")
@pytest.mark.parametrize("name", ["blue", "plain"])
def test_html_report_in_a_real_browser(name, runs, reports):
    dom, log = _browse(reports[name]["html"])
    assert "Uncaught" not in log, log
    assert "ERR_NAME_NOT_RESOLVED" not in log and "net::ERR" not in log, log
    body = [a for t, a in dom.elements if t == "body"][0]
    assert body.get("data-ready") == "1"                 # the script ran to its end
    ledger = runs["crafted"]["ledger"]
    # the timeline: one bar per ledger record, one alert mark per alert
    assert len(dom.having("cr-timeline", "svg")) == 1
    bars = dom.having("cr-step")
    assert [b["data-step"] for b in bars] == [r["step_id"] for r in ledger]
    assert [b["data-outcome"] for b in bars] == [r["outcome"] for r in ledger]
    card = json.loads((runs[name] / "scorecard.json").read_text())
    marks = dom.having("cr-alert")
    assert len(marks) == card["alerts"]["total"]
    assert len(dom.having("cr-false")) == card["alerts"]["false"]
    assert len(dom.having("cr-detect")) - 1 == sum(s["detected"] for s in card["steps"])  # +legend
    # the step table: a row per step, linked from the bars
    rows = [a["id"] for t, a in dom.elements if t == "tr" and a.get("id", "").startswith("step-")]
    assert rows == [f"step-{s['step_id']}" for s in card["steps"]]
    # the network picture, the attacker ringed
    assert len(dom.having("cr-netmap", "svg")) == 1
    ids = {a.get("id") for _, a in dom.elements}
    assert f"cr-actor-{ledger[0]['actor']}" in ids
    text = " ".join(dom.text)
    # the detectors' summary: a row per detector that raised an alert
    assert len([1 for t, a in dom.elements if t == "table" and a.get("class") == "detectors"]) == 1
    for det in card["alerts"]["by_detector"]:
        assert det in text
    # the script took the native <title> tooltips off the marks it shows its own for
    assert dom.having("cr-step")[0].get("data-tip") and dom.native_tips == 0
    if name == "blue":
        _blue_parts(dom, ids, text, runs["crafted"])
    else:
        assert not dom.having("cr-action") and not dom.having("cr-avail")
        assert "No action log" in text and "No mission availability probes" in text
        assert "No blue scorecard" in text


def _blue_parts(dom: _Dom, ids: set, text: str, crafted: dict) -> None:
    acts = crafted["actions"]
    marks = dom.having("cr-action")             # lanes by actor, each in time order
    by_lane = sorted(acts, key=lambda a: (a["actor"], a["time"]))
    assert [(m["data-action"], m["data-result"]) for m in marks] == \
        [(a["action"], a["result"]) for a in by_lane]
    actor = crafted["ledger"][0]["actor"]
    assert f"cr-isolated-{actor}" in ids and f"cr-blocked-{actor}" in ids
    assert {m["data-thread"] for m in dom.having("cr-avail")} == crafted["threads"]
    assert [m["data-thread"] for m in dom.having("cr-down")] == ["web-portal"]
    assert dom.having("cr-probe-fail")
    assert "unknown node nosuch" in text                           # a refusal and its reason
    assert "Blue scorecard" in text and "benign flows blocked" in text
    row = [a for t, a in dom.elements if t == "tr" and a.get("id") == "step-brute"]
    assert row and "contained?" in text                           # the blue column is shown


def test_html_is_self_contained(reports):
    page = reports["blue"]["html"].read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(?:https?:)?//", page)
    assert "<metadata>" not in page


def test_navigator_layer(reports, runs):
    layer = reports["plain"]["layer"]
    assert layer["versions"] == {"attack": "14", "navigator": "4.9.1", "layer": "4.5"}
    assert layer["domain"] == "enterprise-attack" and layer["name"]
    card = json.loads((runs["plain"] / "scorecard.json").read_text())
    want = {s["technique"].split("-")[0]: s["detected"] for s in card["steps"]}
    got = {t["techniqueID"]: t for t in layer["techniques"]}
    assert set(got) == set(want)
    for tid, t in got.items():
        assert re.fullmatch(r"T\d{4}(\.\d{3})?", tid)
        assert re.fullmatch(r"#[0-9a-f]{6}", t["color"])
        assert t["color"] == (nav.DETECTED if want[tid] else nav.MISSED)
        assert t["score"] == (100 if want[tid] else 0) and t["comment"]
    assert {i["label"] for i in layer["legendItems"]} >= {"detected", "missed"}


def _step(technique, detected=True, observable=True, step_id="s"):
    return {"step_id": step_id, "technique": technique, "outcome": "succeeded",
            "attack_id": None if technique == "replay" else technique.split("-")[0],
            "detected": detected, "observable": observable, "time_to_detect_s": 0.5,
            "detected_by": ["d"] if detected else []}


def test_navigator_maps_variants_and_splits_domains():
    content = {"run": {"run_id": "r", "topology": "t", "playbook": "p"},
               "steps": [_step("T1046-connect", step_id="a"), _step("T1046", False, step_id="b"),
                         _step("T1018-arp", step_id="c"), _step("replay", step_id="d"),
                         _step("T1110.001", False, False, step_id="e"),
                         _step("T0855", step_id="f")]}
    layers = nav.navigator(content)
    assert isinstance(layers, list)
    assert [x["domain"] for x in layers] == ["enterprise-attack", "ics-attack"]
    ent = {t["techniqueID"]: t for t in layers[0]["techniques"]}
    assert set(ent) == {"T1046", "T1018", "T1110.001"}              # replay is no ATT&CK
    assert ent["T1046"]["color"] == nav.PARTLY and ent["T1046"]["score"] == 50
    assert "T1046-connect" in ent["T1046"]["comment"]
    assert ent["T1018"]["color"] == nav.DETECTED
    assert ent["T1110.001"]["color"] == nav.NOT_OBSERVABLE and "score" not in ent["T1110.001"]
    assert [t["techniqueID"] for t in layers[1]["techniques"]] == ["T0855"]
    one = nav.navigator(dict(content, steps=content["steps"][:1]))
    assert isinstance(one, dict) and one["domain"] == "enterprise-attack"


def test_json_report(reports, runs):
    blue, plain = reports["blue"]["json"], reports["plain"]["json"]
    for doc in (blue, plain):
        assert {"run", "scorecard", "steps", "alerts", "actions", "availability", "blue",
                "notes"} <= set(doc)
        assert doc["alerts"]["total"] == doc["scorecard"]["alerts"]["total"]
        assert len(doc["alerts"]["items"]) == doc["alerts"]["total"]
    assert plain["actions"] is None and plain["availability"] is None and plain["blue"] is None
    assert [a["id"] for a in blue["actions"]] == ["A1", "A2", "A3", "A4"]
    a2 = blue["actions"][1]
    assert a2["until"] == blue["actions"][3]["time"]                 # released by A4
    assert blue["availability"]["threads"]["web-portal"]["availability"] < 1
    assert blue["availability"]["threads"]["cop"]["availability"] == 1
    assert any("actions.jsonl: 1 line" in n for n in blue["notes"])  # the cut-short line
    brute = [s for s in blue["steps"] if s["step_id"] == "brute"][0]
    assert brute["contained"] is True and brute["contained_by"] == "A2"


def test_bad_output_path_is_one_line(runs, tmp_path):
    r = cli("drill", "report", runs["plain"], "--html", tmp_path / "no" / "such" / "r.html")
    assert r.returncode == 2
    assert r.stderr.startswith("error: cannot write") and len(r.stderr.splitlines()) == 1


def test_plain_report_unchanged(runs):
    r = cli("drill", "report", runs["plain"])
    assert r.returncode == 0 and "Scorecard: attack steps" in r.stdout


def test_report_degrades_without_topology_or_store(runs, tmp_path):
    """Run from elsewhere (the topology's relative path is not found) on a copy whose store is
    gone and whose scorecard has an availability section but no probe file: each part that
    lacks its source says so, the rest is there."""
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    (run / "store.duckdb").unlink()
    card = json.loads((run / "scorecard.json").read_text())
    card["availability"] = {"interval_s": 2.0, "overall": 0.5, "threads": {
        "cop": {"kind": "mission", "probes": 4, "ok": 2, "availability": 0.5,
                "first_down": None, "down_s": 4.0, "latency_ms": 2.5}}}
    (run / "scorecard.json").write_text(json.dumps(card))
    out = tmp_path / "r.html"
    r = cli("drill", "report", run, "--html", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert "No network picture" in page and "cr-timeline" in page and "cr-step" in page
    assert "no alert marks on the timeline" in page and "store is missing" in page
    assert "no probe records to draw" in page and "2.5 ms" in page and "50.0%" in page


def test_step_reasons_are_one_line():
    """A blocked or errored step shows its reason, one line (never a traceback)."""
    from cyberrange.report.content import ledger_rows
    rows = ledger_rows([
        {"step_id": "a", "outcome": "blocked", "start": 1.0, "end": 2.0, "packets_sent": 0,
         "blocked_reason": "isolated by A2 (ops-maint)", "error": None},
        {"step_id": "b", "outcome": "error", "start": 2.0, "end": 3.0,
         "error": "connection refused by 10.10.2.20:22\nmore detail"},
        {"step_id": "c", "outcome": "skipped", "start": 3.0, "end": 3.0,
         "skipped_reason": "no target left"}], None)
    assert [r["reason"] for r in rows] == ["isolated by A2 (ops-maint)",
                                           "connection refused by 10.10.2.20:22",
                                           "no target left"]
