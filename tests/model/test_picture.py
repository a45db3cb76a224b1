"""Terminal tree and network picture (cyberrange.report.picture, topo show / graph)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT
from rich.console import Console

from cyberrange.errors import UserError
from cyberrange.model.generate import generate
from cyberrange.model.loader import load_topology
from cyberrange.report.picture import draw, layout, topology_tree

FOB = ROOT / "topologies" / "fob.yaml"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cyberrange.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_tree_marks_everything():
    t = load_topology(FOB)
    con = Console(width=200, record=True, color_system=None)
    con.print(topology_tree(t))
    text = con.export_text()
    for needle in ("cp-lan 10.10.1.0/24 SECRET", "★ crown jewel c2-server", "⚑ entry point ops-maint",
                   "👁 cp-span", "services: http tcp/8080, login tcp/22", "firewall fob-fw, 8 rules",
                   "satcom-uplink comms-rtr ⇄ hq-rtr", "satcom-geo: 4 Mbit/s, 550 ms"):
        assert needle in text, needle


def test_cli_show():
    r = cli("topo", "show", FOB)
    assert r.returncode == 0 and "c2-server" in r.stdout


def test_layout_places_every_node():
    t = load_topology(FOB)
    g, pos = layout(t)
    assert set(g) == set(pos)
    assert {n for n in g if isinstance(n, str)} == set(t.nodes)


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_graph_files(tmp_path, suffix, magic):
    out = tmp_path / f"fob{suffix}"
    r = cli("topo", "graph", FOB, "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:5].startswith(magic)
    if suffix == ".svg":
        svg = out.read_text()
        assert "c2-server" in svg and "satcom-geo" in svg and "SECRET" in svg


def test_big_zones_are_grouped(tmp_path):
    p = tmp_path / "gen.yaml"
    p.write_text(generate(400, seed=1))
    t = load_topology(p)
    g, _ = layout(t)
    assert any(d["kind"] == "hostgroup" for _, d in g.nodes(data=True))
    draw(t, tmp_path / "gen.png")
    assert (tmp_path / "gen.png").stat().st_size > 10_000


def test_bad_suffix(tmp_path):
    with pytest.raises(UserError, match=".svg or .png"):
        draw(load_topology(FOB), tmp_path / "x.jpg")
