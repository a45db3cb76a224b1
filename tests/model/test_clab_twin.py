"""Imported containerlab labs built as real twins (root): frr01 (the groups make three FRR routers
in a triangle, a PC behind each) answers every probe as the static model predicts; srlceos01, a
lab of two routers and one link (no zone at all), builds and its routers ping across the link."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, needs_twin

from cyberrange.model.clab import import_clab
from cyberrange.model.loader import load_topology

SHARED = ROOT.parent / "shared" / "interop" / "containerlab"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/interop/containerlab")
pytestmark = [needs_twin, pytest.mark.skipif(not SHARED.is_dir(),
                                             reason=f"the real containerlab labs are not here ({SHARED})")]


def _imported(tmp_path, name):
    out = tmp_path / f"{name}.yaml"
    out.write_text(import_clab(SHARED / f"{name}.clab.yml"))
    return load_topology(out)


def test_frr01_twin_agrees_with_the_model(tmp_path):
    from cyberrange.twin.verify import verify
    topo = _imported(tmp_path, "frr01")
    rep = verify(topo, tmp_path / "run", bandwidth=False, log=lambda m: None)
    rows = rep["reachability"]
    # 3 PCs, each pings the other two across the router triangle
    assert len(rows) == 6 and all(r["predicted"] for r in rows)
    assert rep["summary"]["disagree"] == 0, [r for r in rows if not r["agree"]]


def test_router_only_lab_builds_and_routes_over_its_link(tmp_path):
    from cyberrange.twin.build import Twin
    topo = _imported(tmp_path, "srlceos01")
    assert not [z for z in topo.zones.values() if not z.p2p]
    twin = Twin(topo, tmp_path / "run", "test-clab-routers", log=lambda m: None).start()
    try:
        ceos = next(i.ip for i in topo.nodes["ceos"].interfaces)
        r = twin.run("srl", ["ping", "-c", "1", "-W", "2", str(ceos)])
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        twin.stop()
