"""Fidelity: `twin verify` compares real probes and iperf3 with the static model."""
from __future__ import annotations

import json

from helpers import ROOT, cli, needs_twin
from cyberrange.model.loader import load_topology
from cyberrange.twin.build import Twin
from cyberrange.twin.verify import check_reachability

REACH = ROOT / "tests" / "data" / "good" / "reach.yaml"
pytestmark = needs_twin


def test_verify_agrees_on_reach_topology_and_bandwidth_within_5_percent(tmp_path):
    r = cli("twin", "verify", REACH, "--runs-dir", tmp_path, "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["summary"]["disagree"] == 0 and rep["summary"]["probes"] >= 20
    # both allowed and denied pairs were really tried
    assert {row["predicted"] for row in rep["reachability"]} == {True, False}
    measured = [b for b in rep["bandwidth"] if b["status"] == "measured"]
    assert measured
    for b in measured:
        assert abs(b["measured_mbit"] / b["expected_mbit"] - 1) <= 0.05, b


def test_a_broken_firewall_is_reported_as_explained_disagreements(tmp_path):
    topo = load_topology(REACH)
    twin = Twin(topo, tmp_path, "test-verify-broken", log=lambda m: None).start()
    try:
        # sabotage: the firewall forgets its rules (a patch gone wrong)
        r = twin.run("fw", ["nft", "flush", "ruleset"])
        assert r.returncode == 0, r.stderr
        rows = check_reachability(twin)
    finally:
        twin.stop()
    bad = [r for r in rows if not r["agree"]]
    assert bad, "flushing the firewall must make denied pairs reachable"
    assert all(not r["predicted"] and r["observed"] for r in bad)
    assert all("model denies it" in r["explanation"] and "got through" in r["explanation"]
               for r in bad)
