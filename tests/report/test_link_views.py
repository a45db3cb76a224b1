"""DDIL link changes where people look at them (issue 19 item 2): the HTML report's "Link
events" section (a table and a timeline bar per link, inline SVG) and the live drill screen
(a line per change, a line with the links not up). Synthetic rows, no twin; one headless
chromium launch checks the section as a browser draws it."""
from __future__ import annotations

import io
import re
import shutil
import subprocess

import pytest
from rich.console import Console

from cyberrange.report import linkview
from cyberrange.report.content import link_events
from cyberrange.report.terminal import link_change_line, links_not_up_line

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REASON = "step jam-sat (CR-J0001 jam the sat link): jammed"


def _content():
    records = [
        {"t": 100.0, "zone": "sat", "state": "jammed", "values": {}, "notes": [],
         "reason": REASON},
        {"t": 101.0, "zone": "radio", "state": "degraded", "values": {"loss": 10.0},
         "notes": ["delay not emulated here"], "reason": "link_events[1]"},
        {"t": 104.0, "zone": "sat", "state": "up", "values": {}, "notes": [],
         "reason": "step jam-sat (CR-J0001 jam the sat link): jam ended"}]
    cop = [[t, not 100 <= t < 104, 10.0] for t in range(96, 112)]
    rows = link_events(records, {"series": {"cop": cop}})
    return {"link_events": rows, "t0": 95.0, "t1": 112.0, "origin": 98.0}


def test_the_html_section_has_a_row_per_change_and_a_bar_per_link():
    page = linkview.html_section(_content())
    assert page.count("<tr>") == 4                            # the head and three changes
    assert "+2.00 s" in page and "4.0 s" in page and "to the end" in page
    assert REASON in page and "loss 10" in page and "delay not emulated here" in page
    assert 'cop <span class="no">0/4</span>' in page           # probes 100..103 all failed
    svg = re.search(r"<svg class=\"cr-links\".*?</svg>", page).group(0)
    assert svg.count(">sat</text>") == 1 and svg.count(">radio</text>") == 1
    jam = re.search(r'<rect class="cr-link-jammed" x="([\d.]+)" y="\d+" width="([\d.]+)"', svg)
    scale = (linkview.WIDTH - linkview.LABEL - 10) / (112.0 - 95.0)
    assert float(jam.group(1)) == pytest.approx(linkview.LABEL + 5 * scale, abs=0.1)
    assert float(jam.group(2)) == pytest.approx(4 * scale, abs=0.1)
    assert 'class="cr-link-degraded"' in svg
    assert "sat: jammed from +2.0 s for 4.0 s" in svg           # the segment's tooltip


def test_no_change_no_bars():
    page = linkview.html_section({"link_events": None, "t0": None, "t1": None})
    assert "No link changed state" in page and "<svg" not in page


def test_markup_in_names_and_reasons_is_escaped():
    c = _content()
    c["link_events"][0]["reason"] = "<script>x</script>"
    assert "<script>" not in linkview.html_section(c)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium to draw the section")
def test_a_browser_draws_the_bars(tmp_path):
    page = tmp_path / "links.html"
    page.write_text("<!DOCTYPE html><html><body>" + linkview.html_section(_content())
                    + "</body></html>", encoding="utf-8")
    r = subprocess.run([CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-1000:]
    assert r.stdout.count('class="cr-link-') == 2 and "cr-links" in r.stdout


def test_the_live_screen_shows_each_change_and_the_links_not_up():
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    rec = {"t": 1700000000.0, "zone": "sat", "state": "jammed", "values": {}, "notes": [],
           "reason": REASON}
    console.print(link_change_line(rec))
    console.print(link_change_line({"t": 1700000001.0, "zone": "radio", "state": "degraded",
                                    "values": {"loss": 10.0}, "notes": ["x [bold]y"],
                                    "reason": ""}))
    text = out.getvalue()
    assert f"22:13:20 link sat: jammed  {REASON}" in text
    assert "link radio: degraded (loss 10)  ; x [bold]y" in text
    states = {"sat": rec, "radio": {"t": 1700000001.0, "state": "up"}}
    assert links_not_up_line(states) == "links not up: sat jammed since 22:13:20"
    assert links_not_up_line({"sat": {"state": "up"}}) == "links: all up"


def test_the_drill_ui_keeps_the_links_line():
    from cyberrange.cli.drill import RichUI
    out = io.StringIO()
    ui = RichUI(Console(file=out, width=200, color_system=None))
    ui.link_change({"t": 1700000000.0, "zone": "sat", "state": "jammed", "values": {},
                    "notes": [], "reason": REASON})
    task = ui.progress.tasks[0]
    assert task.description == "links not up: sat jammed since 22:13:20"
    ui.link_change({"t": 1700000004.0, "zone": "sat", "state": "up", "values": {}, "notes": [],
                    "reason": "jam ended"})
    assert ui.progress.tasks[0].description == "links: all up"
    assert "link sat: jammed" in out.getvalue() and "link sat: up" in out.getvalue()
