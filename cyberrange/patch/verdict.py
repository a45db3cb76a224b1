"""The verdict of a validation in four forms: JSON, terminal tables (rich), Markdown, and JUnit
XML (one test case per check, so a CI pipeline can gate on it)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from rich.console import Console
from rich.table import Table

STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "PASS": "bold green",
         "FAIL": "bold red"}


def to_json(res, live=None) -> dict:
    out = {
        "topology": res.topology, "change": res.change.name, "change_file": res.change.file,
        "operations": res.change.summary(), "verdict": _verdict(res, live),
        "reasons": [c.reason for c in _checks(res, live) if c.status == "fail"],
        "checks": [c.to_json() for c in _checks(res, live)],
        "reachability": {"cells_compared": res.cells_total,
                         "opened": sum(c.kind == "opened" for c in res.cells),
                         "closed": sum(c.kind == "closed" for c in res.cells),
                         "groups": res.groups(), "cells": [c.to_json() for c in res.cells]},
        "attack_paths": {"before": [p.to_json() for p in res.paths_before],
                         "after": [p.to_json() for p in res.paths_after]},
        "lint": {"new": [f.to_json() for f in res.new_findings],
                 "gone": [f.to_json() for f in res.gone_findings]},
        "timings_s": {k: round(v, 4) for k, v in res.timings.items()},
    }
    if live is not None:
        out["live"] = live.to_json()
    return out


def _checks(res, live) -> list:
    return res.checks + (live.checks if live is not None else [])


def _verdict(res, live) -> str:
    return "FAIL" if any(c.status == "fail" for c in _checks(res, live)) else "PASS"


def print_terminal(res, live=None, console: Console | None = None) -> None:
    console = console or Console()
    cs = res.change
    console.print(f"change [bold]{cs.name}[/] ({cs.file}) on topology [bold]{res.topology}[/]: "
                  + "; ".join(cs.summary()))
    if res.cells:
        t = Table(title=f"reachability: {len(res.cells)} of {res.cells_total} cells changed",
                  show_edge=False)
        for col in ("change", "from zone", "to zone", "service", "hosts"):
            t.add_column(col)
        for g in res.groups():
            style = "red" if g["change"] == "opened" else "green"
            nodes = ", ".join(sorted(set(g["nodes"]))[:6])
            t.add_row(f"[{style}]{g['change']}[/]", g["from"], g["to_zone"], g["service"], nodes)
        console.print(t)
    else:
        console.print(f"reachability: no cell of {res.cells_total} changed")
    t = Table(title="attack paths to the crown jewels", show_edge=False)
    for col in ("rank", "before", "after"):
        t.add_column(col)
    for k in range(max(len(res.paths_before), len(res.paths_after))):
        b = res.paths_before[k] if k < len(res.paths_before) else None
        a = res.paths_after[k] if k < len(res.paths_after) else None
        t.add_row(str(k + 1), f"{b.weight}: {b.text()}" if b else "-",
                  f"{a.weight}: {a.text()}" if a else "-")
    if res.paths_before or res.paths_after:
        console.print(t)
    t = Table(title="checks", show_edge=False)
    for col in ("check", "result", "reason"):
        t.add_column(col)
    for c in _checks(res, live):
        t.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.reason)
    console.print(t)
    v = _verdict(res, live)
    console.print(f"verdict: [{STYLE[v]}]{v}[/]")


def markdown(res, live=None) -> str:
    cs = res.change
    v = _verdict(res, live)
    lines = [f"# Patch validation: {cs.name} on {res.topology}: **{v}**", "",
             f"Change set `{cs.file}`: {cs.description or ''}", "",
             "| # | operation |", "|---|---|"]
    lines += [f"| {k + 1} | `{s}` |" for k, s in enumerate(cs.summary())]
    lines += ["", "## Checks", "", "| check | result | reason |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.status.upper()} | {_md(c.reason)} |" for c in _checks(res, live)]
    lines += ["", f"## Reachability ({len(res.cells)} of {res.cells_total} cells changed)", ""]
    if res.groups():
        lines += ["| change | from zone | to zone | service | hosts |", "|---|---|---|---|---|"]
        lines += [f"| {g['change']} | {g['from']} | {g['to_zone']} | {g['service']} | "
                  f"{', '.join(sorted(set(g['nodes'])))} |" for g in res.groups()]
    else:
        lines.append("No cell changed.")
    lines += ["", "## Attack paths to the crown jewels", "", "| rank | before | after |",
              "|---|---|---|"]
    for k in range(max(len(res.paths_before), len(res.paths_after))):
        b = res.paths_before[k] if k < len(res.paths_before) else None
        a = res.paths_after[k] if k < len(res.paths_after) else None
        lines.append(f"| {k + 1} | {_md(f'{b.weight}: {b.text()}') if b else '-'} | "
                     f"{_md(f'{a.weight}: {a.text()}') if a else '-'} |")
    lines += ["", "## New lint findings", ""]
    lines += [f"- `{f.where}` {f.severity} {f.code}: {_md(f.message)}" for f in res.new_findings] \
        or ["None."]
    if live is not None:
        lines += ["", "## Live", "", *live.markdown_lines()]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _live_seconds(live) -> float:
    return sum(live.timings.values()) if live is not None else 0.0


def junit(res, live=None) -> str:
    """JUnit XML: one ``testsuite`` per change, one ``testcase`` per check (a failed check is a
    ``failure``, a warning is a passing case with ``system-out``)."""
    return junit_many([(res, live)])


def junit_many(results) -> str:
    """JUnit XML of several validations (``(static result, live result or None)`` pairs):
    one ``testsuite`` each."""
    root = ET.Element("testsuites", name="cyberrange validate")
    for res, live in results:
        root.append(_suite(res, live))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(res, live) -> ET.Element:
    checks = _checks(res, live)
    suite = ET.Element("testsuite", name=f"patch-validation.{res.change.name}",
                       tests=str(len(checks)),
                       failures=str(sum(c.status == "fail" for c in checks)), errors="0",
                       time=f"{sum(res.timings.values()) + _live_seconds(live):.3f}")
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"{res.topology}.{c.group}",
                             name=c.name)
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.reason, type=c.group).text = c.reason
        else:
            ET.SubElement(case, "system-out").text = f"{c.status}: {c.reason}"
    return suite
