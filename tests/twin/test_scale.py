"""Scale: a generated 500-node topology boots as a real twin, forwards, and tears down cleanly."""
from __future__ import annotations

import re
import subprocess

from helpers import ROOT, needs_twin
from cyberrange.model.generate import generate
from cyberrange.model.loader import load_topology
from cyberrange.twin.build import Twin
from cyberrange.twin.state import leftovers, nothing_left

pytestmark = needs_twin


def test_500_node_twin_boots_forwards_and_tears_down(tmp_path):
    path = tmp_path / "gen500.yaml"
    path.write_text(generate(500, seed=3))
    topo = load_topology(path)
    assert len(topo.nodes) >= 500
    twin = Twin(topo, tmp_path / "run", "test-scale", log=lambda m: None)
    try:
        twin.start()
        prefix = twin.state.prefix
        hosts = sorted(topo.hosts, key=lambda n: n.name)
        # every node is a namespace with its addresses: ask the kernel of a few
        for h in (hosts[0], hosts[len(hosts) // 2], hosts[-1]):
            out = twin.run(h.name, ["ip", "-4", "-o", "addr", "show"]).stdout
            assert str(h.ip) in out
        # and routed traffic crosses the router tree (same-zone traffic needs no router)
        a, b = hosts[0], next(h for h in hosts if h.interfaces[0].zone != hosts[0].interfaces[0].zone)
        from cyberrange.model import reach
        if reach.allowed(topo, a.name, b.ip, "icmp")[0]:
            assert twin.run(a.name, ["ping", "-c1", "-W2", str(b.ip)]).returncode == 0
        sw = twin.switch_run(["ip", "-o", "link", "show", "type", "bridge"]).stdout
        assert len(re.findall(r"^\d+: br\d+:", sw, flags=re.M)) == len(topo.zones)
        assert len(leftovers(prefix)["namespaces"]) == len(topo.nodes) + 1
    finally:
        twin.stop()
    assert nothing_left(prefix), leftovers(prefix)
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"mininet:{prefix}" not in out


def test_1000_nodes_behind_one_router_with_21_shaped_interfaces(tmp_path):
    """bench/twin_scale.py's 1,000-node topology, which the shell-per-node twin could not build
    (interface names over 15 bytes, a router's configuration over a shell's 4,095-byte line):
    every node up with its address, routed across the core, shaped on every port, gone after."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("twin_scale", ROOT / "bench" / "twin_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    topo = bench.topology(1000)
    core = topo.nodes["core"]
    assert len(topo.nodes) == 1000 and len(core.interfaces) == 21
    twin = Twin(topo, tmp_path, "test-scale-1000", log=lambda m: None)
    try:
        twin.start()
        prefix = twin.state.prefix
        assert len(leftovers(prefix)["namespaces"]) == 1001
        out = twin.run("core", ["ip", "-4", "-o", "addr", "show"]).stdout
        assert all(f"inet {i.ip}/" in out for i in core.interfaces), out
        qdiscs = twin.run("core", ["tc", "qdisc", "show"]).stdout
        assert qdiscs.count("qdisc htb 1: dev eth") == len(core.interfaces), qdiscs
        first, last = topo.hosts[0], topo.hosts[-1]
        assert first.interfaces[0].zone != last.interfaces[0].zone
        r = twin.run(first.name, ["ping", "-c1", "-W2", str(last.ip)])
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        removed = twin.stop()
    assert removed["namespaces"] == 1001 and removed["left"] == 0
    assert nothing_left(prefix), leftovers(prefix)
