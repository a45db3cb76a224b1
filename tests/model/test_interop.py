"""containerlab import and GraphML export (cyberrange.model.interop, topo import / export)."""
from __future__ import annotations

import subprocess
import sys

import networkx as nx
import pytest
from helpers import ROOT

from cyberrange.errors import UserError
from cyberrange.model.interop import clab_kind, import_clab, to_graph
from cyberrange.model.loader import load_topology

CLAB = ROOT / "tests" / "data" / "clab"
FOB = ROOT / "topologies" / "fob.yaml"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cyberrange.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def imported(tmp_path, name):
    out = tmp_path / f"{name}.yaml"
    out.write_text(import_clab(CLAB / f"{name}.clab.yml"))
    return out, load_topology(out)


@pytest.mark.parametrize("kind,ours", [
    ("nokia_srlinux", "router"), ("srl", "router"), ("ceos", "router"), ("crpd", "router"),
    ("vr-sros", "router"), ("sonic-vs", "router"), ("fortinet_fortigate", "firewall"),
    ("paloalto_panos", "firewall"), ("juniper_vsrx", "firewall"), ("checkpoint_cloudguard", "firewall"),
    ("linux", "host"), ("bridge", "bridge"), ("ovs-bridge", "bridge"), ("something-new", "host"),
])
def test_kind_map(kind, ours):
    assert clab_kind(kind) == ours


def test_linux_with_frr_image_is_a_router():
    assert clab_kind("linux", {"image": "quay.io/frrouting/frr:10.1.0"}) == "router"
    assert clab_kind("linux", {"labels": {"role": "firewall"}}) == "firewall"


def test_import_bde_wan(tmp_path):
    path, t = imported(tmp_path, "bde-wan")
    text = path.read_text()
    assert text.startswith("# Imported from ") and "bde-wan.clab.yml" in text.splitlines()[0]
    assert {n.name: n.kind for n in t.routers} == {"core1": "router", "core2": "router",
                                                    "dist1": "router"}
    # router-router links become our point-to-point links
    assert {(l.a, l.b) for l in t.links.values()} == {("core1", "core2"), ("core1", "dist1")}
    # the bridge is one zone with the three workstations and dist1
    staff = {n.name for n, _ in t.members("staff-br")}
    assert staff == {"ws1", "ws2", "ws3", "dist1"}
    # a host on a router port gets a zone of its own, addressed from the pool
    assert t.nodes["c2-srv"].interfaces[0].zone == "core2-e1-2"
    assert all(str(z.subnet).startswith("10.200.") for z in t.zones.values() if not z.p2p)
    assert t.nodes["c2-srv"].role == "c2-server" and t.nodes["dns1"].role == "dns-server"
    assert t.nodes["web-portal"].role == "web-server" and t.nodes["ws1"].role == "workstation"


def test_import_fuel_farm_routes_end_to_end(tmp_path):
    from cyberrange.model.reach import allowed
    _, t = imported(tmp_path, "fuel-farm")
    assert t.nodes["fw1"].kind == "firewall" and t.nodes["base-rtr"].kind == "router"
    assert {n.name for n, _ in t.members("scada-sw") if not n.is_router} == {
        "hmi1", "plc1", "plc2", "historian-srv"}
    assert t.nodes["plc1"].role == "plc" and t.nodes["hmi1"].role == "hmi"
    # imported firewalls allow by default (no policy in the clab file): the lab routes through
    assert allowed(t, "base-ws", t.nodes["plc1"].ip, "icmp")[0]


def test_import_errors(tmp_path):
    bad = tmp_path / "bad.clab.yml"
    bad.write_text("name: x\nnodes: {}\n")
    with pytest.raises(UserError, match="not a containerlab file"):
        import_clab(bad)
    bad.write_text("name: x\ntopology:\n  nodes: {a: {kind: linux}}\n  links:\n"
                   "    - endpoints: ['a:eth1', 'zz:eth1']\n")
    with pytest.raises(UserError, match="unknown node 'zz'"):
        import_clab(bad)


def test_cli_import(tmp_path):
    out = tmp_path / "lab.yaml"
    r = cli("topo", "import", CLAB / "bde-wan.clab.yml", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and out.exists()
    assert cli("topo", "check", out).returncode == 0


def test_graphml_round_trip(tmp_path):
    t = load_topology(FOB)
    out = tmp_path / "fob.graphml"
    r = cli("topo", "export", FOB, "--graphml", out)
    assert r.returncode == 0, r.stderr
    g = nx.read_graphml(out)
    assert g.number_of_nodes() == len(t.nodes) + len(t.zones)
    assert g.number_of_edges() == sum(len(n.interfaces) for n in t.nodes.values())
    c2 = g.nodes["c2-server"]
    assert (c2["kind"], c2["role"], c2["zone"], c2["ip"], c2["classification"]) == (
        "host", "c2-server", "cp-lan", "10.10.1.10", "SECRET")
    assert c2["crown_jewel"] is True
    assert g.nodes["zone:dmz"]["classification"] == "UNCLASSIFIED"
    assert g.nodes["zone:satcom-uplink"]["role"] == "link"
    e = g.edges["hq-rtr", "zone:satcom-uplink"]
    assert e["profile"] == "satcom-geo" and e["delay_ms"] == 550.0 and e["bandwidth_mbit"] == 4.0
    assert nx.is_connected(g) and nx.is_connected(to_graph(t))
