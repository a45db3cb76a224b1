"""Real routing on a live twin (issue 19 item 3): the brigade's routers run FRR OSPF, and when
the primary MAIN-TAC radio link (bde-los, VHF) is lost or jammed, traffic fails over to the HF
backup (bde-skywave) and comes back when the link does. One brigade twin serves the module
(link emulation: the userspace relay, so the radio links have their delay and loss)."""
from __future__ import annotations

import time

import pytest
from helpers import ROOT, can_build_twin

from cyberrange.errors import EnvironmentProblem
from cyberrange.model import ospf
from cyberrange.model.loader import load_topology
from cyberrange.twin import ddil, frr, linkcheck
from cyberrange.twin.build import Twin
from cyberrange.twin.state import nothing_left

BRIGADE = ROOT / "topologies" / "brigade.yaml"
MAIN_C2 = "10.30.1.0/24"
TAC_LAN = "10.30.10.0/24"
needs_twin = pytest.mark.skipif(can_build_twin() is not None, reason=f"twin: {can_build_twin()}")


def test_missing_frr_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(frr, "FRR_BIN", tmp_path)
    assert len(frr.missing()) >= 2
    with pytest.raises(EnvironmentProblem, match=r"apt-get install frr"):
        frr.check_installed()


def test_runtime_folders_of_dead_twins_only_are_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(frr, "STATE_DIR", tmp_path)
    for name in ("cfff0-frr", "cfff1-frr", "other-frr"):
        (tmp_path / name / "r1").mkdir(parents=True)
    (tmp_path / "cfff1.json").write_text("{}")             # a live twin's state file
    assert frr.cleanup_stale() == [tmp_path / "cfff0-frr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfff1-frr", "cfff1.json",
                                                          "other-frr"]


def test_down_removes_the_frr_folder_of_its_own_twin_only(monkeypatch, tmp_path):
    """A twin that crashed leaves its FRR runtime folder; `cyberrange down` (state.teardown)
    removes it, and no other twin's."""
    from cyberrange.twin import state as st
    monkeypatch.setattr(st, "STATE_DIR", tmp_path)
    for name in ("cfff7-frr", "cfff8-frr"):
        (tmp_path / name / "r1").mkdir(parents=True)
    dead = st.TwinState(prefix="cfff7", run_id="r", run_dir="", topology="t", owner_pid=0)
    dead.save()
    removed = st.teardown(dead, grace=0.1)
    assert removed["left"] == 0 and removed.get("files") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfff8-frr"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    if can_build_twin() is not None:
        pytest.skip(f"twin: {can_build_twin()}")
    if frr.missing():
        pytest.skip(f"FRR missing: {frr.missing()}")
    topo = load_topology(BRIGADE)
    tw = Twin(topo, tmp_path_factory.mktemp("frr"), "test-frr", log=lambda m: None)
    tw.link_emulation = "relay"
    tw.start()
    try:
        yield tw
    finally:
        tw.stop()


def _wait_via(tw, router, dst, zone, timeout) -> float | None:
    """Seconds until ``router`` routes ``dst`` via ``zone`` (None: not within ``timeout``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if tw.frr.via_zone(router, dst) == zone:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def _ping(tw, src, dst, count=4, wait=3):
    r = tw.run(src, ["ping", "-n", "-c", str(count), "-i", "0.3", "-W", str(wait), dst],
               timeout=count * 0.3 + wait + 20)
    return linkcheck.parse_ping(r.stdout, count)


@needs_twin
def test_ospf_converges_on_the_primary_link(twin):
    f = twin.frr
    assert f.converged_s is not None and f.converged_s < 30
    for r in f.routers:
        assert ospf.expected_prefixes(twin.topo, r) <= set(f.routes(r)), r
    assert f.via_zone("tac-rtr", MAIN_C2) == "bde-los"
    assert f.via_zone("main-rtr", TAC_LAN) == "bde-los"
    assert f.via_zone("bn1-rtr", MAIN_C2) == "bn1-mesh"
    # the firewall's nftables ruleset filters forwarding only: its OSPF adjacency forms
    assert "Full" in f.vtysh("main-fw", "show ip ospf neighbor")
    assert (twin.run_dir / "config" / "frr-tac-rtr.conf").read_text() == \
        (f.folder("tac-rtr") / "ospfd.conf").read_text()
    assert (twin.run_dir / "logs" / "frr-tac-rtr-ospfd.log").exists()
    rtts, lost = _ping(twin, "tac-ws1", str(twin.topo.nodes["bde-c2"].ip))
    assert rtts and lost < 4


@needs_twin
def test_outage_fails_over_to_hf_and_back(twin):
    ctl = ddil.LinkControl(twin)
    bde_c2 = str(twin.topo.nodes["bde-c2"].ip)
    ctl.set("bde-los", "down", reason="test")
    try:
        moved = _wait_via(twin, "tac-rtr", MAIN_C2, "bde-skywave", 10)
        assert moved is not None and moved < 3.0, moved   # carrier loss: no dead interval
        assert _wait_via(twin, "main-rtr", TAC_LAN, "bde-skywave", 3) is not None
        rtts, _ = _ping(twin, "tac-ws1", bde_c2, count=5, wait=4)
        assert rtts, "no reply over the HF backup"
        assert min(rtts) > 250              # HF: 300 ± 100 ms one way; VHF: 30 ± 10 ms
    finally:
        ctl.set("bde-los", "up", reason="test")
    back = _wait_via(twin, "tac-rtr", MAIN_C2, "bde-los", 20)
    assert back is not None and back < 15, back
    assert _wait_via(twin, "main-rtr", TAC_LAN, "bde-los", 10) is not None
    rtts, _ = _ping(twin, "tac-ws1", bde_c2)
    assert rtts and max(rtts) < 250         # VHF again: 30 ± 10 ms one way


@needs_twin
def test_jamming_fails_over_after_the_dead_interval(twin):
    ctl = ddil.LinkControl(twin)
    dead = twin.topo.routing.dead
    assert _wait_via(twin, "tac-rtr", MAIN_C2, "bde-los", 20) is not None
    ctl.set("bde-los", "jammed", reason="test")
    try:
        moved = _wait_via(twin, "tac-rtr", MAIN_C2, "bde-skywave", dead + 10)
        # carrier stays up: OSPF notices only when hellos stop for 'dead' seconds
        assert moved is not None and dead - 2 < moved < dead + 3, moved
        rtts, _ = _ping(twin, "tac-ws1", str(twin.topo.nodes["bde-c2"].ip), count=5, wait=4)
        assert rtts
    finally:
        ctl.set("bde-los", "up", reason="test")
    assert _wait_via(twin, "tac-rtr", MAIN_C2, "bde-los", 20) is not None


@needs_twin
def test_verify_after_an_outage_compares_routes_and_rerouted_paths(twin):
    """twin verify --outage: the routers' routes equal the model's for the state, and every
    pair the model reroutes onto HF gets through (twin/statecheck.py)."""
    from cyberrange.twin.statecheck import verify_states
    assert _wait_via(twin, "tac-rtr", MAIN_C2, "bde-los", 20) is not None
    row = verify_states(twin, [frozenset({"bde-los"})])[0]
    assert row["routing"] == "ospf" and row["rerouted_pairs"] == 18 and row["lost_pairs"] == 0
    assert row["routes_agree"] and row["converge_s"] < 3, row.get("route_diff")
    assert row["restored"] and row["route_diff"] == []
    assert len(row["probes"]) >= 18 and all(p["change"] == "rerouted" for p in row["probes"])
    assert any(p["predicted"] for p in row["probes"]) and row["agree"], \
        [p for p in row["probes"] if not p["agree"]]
    assert twin.frr.via_zone("tac-rtr", MAIN_C2) == "bde-los"


@needs_twin
def test_stop_ends_every_daemon_and_removes_its_files(twin):
    f = twin.frr
    procs = list(f.procs.items())
    assert len(procs) == 2 * len(twin.topo.routers)
    prefix = twin.state.prefix
    twin.stop()
    assert all(p.poll() is not None for _, p in procs)
    assert not f.runtime.exists()
    assert not any((frr.CRASH_DIR / f"{d}.{p.pid}").exists() for (_, d), p in procs)
    assert nothing_left(prefix)
